/*
 * Server start-up and worker threads (see server.h).
 */
#include "server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "health.h"
#include "http_route.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "store.h"
#include "util.h"

#define LISTEN_BACKLOG 1024

static int bind_listener(const struct cfg_bind *b, char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", b->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* one socket per worker on the same address: the kernel balances */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* "[::]:993" next to "0.0.0.0:993" must not claim the IPv4 port */
	if (b->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&b->addr, b->len) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		snprintf(err, errlen, "%s: %s", b->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
	struct worker *w = arg;
	struct sockaddr_storage peer;
	size_t li = SIZE_MAX;
	int one = 1;

	for (size_t i = 0; i < w->n_listeners; i++) {
		if (w->listeners[i] == l)
			li = w->listener_of[i];
	}
	if (li == SIZE_MAX) {
		close(fd);
		return;
	}
	memset(&peer, 0, sizeof(peer));
	memcpy(&peer, sa, (size_t)len < sizeof(peer) ? (size_t)len : sizeof(peer));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	session_accept(w, li, fd, &peer);
}

static void reenable_listeners(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	for (size_t i = 0; i < w->n_listeners; i++) {
		if (w->listeners[i])
			evconnlistener_enable(w->listeners[i]);
	}
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct worker *w = arg;
	int e = EVUTIL_SOCKET_ERROR();

	/* EMFILE and friends: back off briefly instead of spinning */
	log_msg(LOG_ERROR, "accept", "error=\"%s\"", evutil_socket_error_to_string(e));
	evconnlistener_disable(l);
	struct timeval tv = {0, 200000};
	event_base_once(w->base, -1, EV_TIMEOUT, reenable_listeners, w, &tv);
}

static void close_listeners(struct worker *w)
{
	for (size_t i = 0; i < w->n_listeners; i++) {
		if (w->listeners[i])
			evconnlistener_free(w->listeners[i]);
		w->listeners[i] = NULL;
	}
}

static void on_command(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	int cmd = atomic_exchange(&w->cmd, WORKER_CMD_NONE);

	if (cmd == WORKER_CMD_DRAIN) {
		close_listeners(w);
		/* sessions still logging in are told to come back later; the
		 * ones already relaying get shutdown_grace to finish */
		for (struct session *s = w->sessions, *next; s; s = next) {
			next = s->next;
			if (s->phase != PHASE_RELAY)
				session_abort(s, "shutdown");
		}
	} else if (cmd == WORKER_CMD_STOP) {
		close_listeners(w);
		for (struct session *s = w->sessions, *next; s; s = next) {
			next = s->next;
			session_abort(s, "shutdown");
		}
		/* let the aborts run (deferred frees), then leave */
		struct timeval tv = {0, 100000};
		event_base_loopexit(w->base, &tv);
	}
}

/* ---- a successor took the listening sockets ---- */

struct handover_job {
	struct worker *w;
	bool *taken; /* per listening socket of this worker, in its order */
};

/* On the worker: a socket the successor took is only closed here (its copy
 * keeps it open); one it did not take is accepted from until empty first,
 * so nothing queued on it is reset. */
static void handover_listeners(evutil_socket_t unused, short what, void *arg)
{
	struct handover_job *job = arg;
	struct worker *w = job->w;

	for (size_t i = 0; i < w->n_listeners; i++) {
		struct evconnlistener *l = w->listeners[i];
		if (!l)
			continue;
		if (!job->taken[i]) {
			int fd = evconnlistener_get_fd(l);
			for (;;) {
				struct sockaddr_storage peer;
				socklen_t len = sizeof(peer);
				int c = accept4(fd, (struct sockaddr *)&peer, &len,
				                SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (c < 0)
					break;
				on_accept(l, c, (struct sockaddr *)&peer, (int)len, w);
			}
		}
		evconnlistener_free(l);
		w->listeners[i] = NULL;
	}
	free(job->taken);
	free(job);
}

void server_handover_listeners(struct server *srv, const bool *taken, size_t n)
{
	for (size_t wi = 0; wi < srv->n_workers; wi++) {
		struct worker *w = &srv->workers[wi];
		struct handover_job *job = xcalloc(1, sizeof(*job));
		job->w = w;
		job->taken = xcalloc(w->n_listeners ? w->n_listeners : 1, sizeof(bool));
		/* srv->listen lists each worker's sockets in the worker's order */
		size_t k = 0;
		for (size_t i = 0; i < srv->n_listen; i++)
			if (srv->listen[i].worker == wi)
				job->taken[k++] = i < n && taken[i];
		event_base_once(w->base, -1, EV_TIMEOUT, handover_listeners, job, NULL);
	}
}

void worker_session_added(struct worker *w, struct session *s)
{
	s->prev = NULL;
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->n_sessions++;
	atomic_fetch_add(&w->srv->active, 1);
}

void worker_session_removed(struct worker *w, struct session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->n_sessions--;
	atomic_fetch_sub(&w->srv->active, 1);
}

static bool dest_tls_init(struct server *srv, char *err, size_t errlen)
{
	struct config *cfg = srv->cfg;

	srv->dest_ctx = xcalloc(cfg->n_dests, sizeof(*srv->dest_ctx));
	srv->dest_opts = xcalloc(cfg->n_dests, sizeof(*srv->dest_opts));
	for (size_t i = 0; i < cfg->n_dests; i++) {
		const struct cfg_destination *d = &cfg->dests[i];
		struct tls_client_opts *o = &srv->dest_opts[i];
		bool any_tls = false;
		for (int p = 0; p < PROTO_COUNT; p++)
			any_tls |= d->endpoint[p].present && d->endpoint[p].tls != TLS_MODE_PLAIN;
		if (!any_tls)
			continue;
		o->server_name = d->tls_server_name ? d->tls_server_name : d->host;
		o->allow_invalid = d->tls_allow_invalid_certs;
		o->has_pin = d->has_pin;
		memcpy(o->pin, d->pin, sizeof(o->pin));
		o->client_cert = d->tls_client_cert;
		o->client_key = d->tls_client_key;
		o->min_version = cfg->tls_min_version;
		char e[256];
		srv->dest_ctx[i] = tls_client_ctx_new(o, e, sizeof(e));
		if (!srv->dest_ctx[i]) {
			snprintf(err, errlen, "destination.%s: %s", d->name, e);
			return false;
		}
	}
	return true;
}

static bool server_tls_init(struct server *srv, char *err, size_t errlen)
{
	struct config *cfg = srv->cfg;

	if (cfg->n_certs == 0)
		return true;
	struct tls_cert_spec *specs = xcalloc(cfg->n_certs, sizeof(*specs));
	for (size_t i = 0; i < cfg->n_certs; i++) {
		specs[i].id = cfg->certs[i].id;
		specs[i].cert_file = cfg->certs[i].cert;
		specs[i].key_file = cfg->certs[i].key;
		specs[i].subjects = cfg->certs[i].subjects;
		specs[i].n_subjects = cfg->certs[i].n_subjects;
		specs[i].is_default = cfg->certs[i].is_default;
	}
	struct tls_protocol_opts po = {.min_version = cfg->tls_min_version,
	                               .ignore_client_order = cfg->tls_ignore_client_order,
	                               .disable = cfg->tls_disable_ciphers,
	                               .n_disable = cfg->n_tls_disable_ciphers};
	char e[300];
	srv->tls = tls_server_new(specs, cfg->n_certs, &po, e, sizeof(e));
	free(specs);
	if (!srv->tls) {
		snprintf(err, errlen, "tls.certificate: %s", e);
		return false;
	}
	return true;
}

/* ---- listening sockets: bound here, or adopted from a predecessor ---- */

static struct inherited_listener *inherited;
static size_t n_inherited;

void server_inherit_listeners(struct inherited_listener *l, size_t n)
{
	inherited = l;
	n_inherited = n;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

static size_t inherited_for(const struct cfg_bind *b)
{
	size_t k = 0;
	for (size_t i = 0; i < n_inherited; i++)
		k += same_addr(&inherited[i].addr, &b->addr);
	return k;
}

/* The next inherited socket for b not yet taken, or -1. */
static int take_inherited(const struct cfg_bind *b)
{
	for (size_t i = 0; i < n_inherited; i++) {
		if (!inherited[i].taken && same_addr(&inherited[i].addr, &b->addr)) {
			inherited[i].taken = true;
			return inherited[i].fd;
		}
	}
	return -1;
}

/* One socket per worker and bind, so the kernel balances without a shared
 * accept lock. A bind the predecessor had keeps all of its sockets (a
 * socket closed in a SO_REUSEPORT group drops the connections queued on
 * it), spread over the workers; workers beyond that number get new ones. */
static bool add_listeners(struct server *srv, char *err, size_t errlen)
{
	struct config *cfg = srv->cfg;
	size_t total = 0;
	char e[512];

	for (size_t li = 0; li < cfg->n_listeners; li++)
		for (size_t bi = 0; bi < cfg->listeners[li].n_binds; bi++) {
			size_t k = inherited_for(&cfg->listeners[li].binds[bi]);
			total += k > srv->n_workers ? k : srv->n_workers;
		}
	srv->listen = xcalloc(total ? total : 1, sizeof(*srv->listen));
	for (size_t wi = 0; wi < srv->n_workers; wi++) {
		srv->workers[wi].listeners =
		        xcalloc(total ? total : 1, sizeof(struct evconnlistener *));
		srv->workers[wi].listener_of = xcalloc(total ? total : 1, sizeof(size_t));
	}
	for (size_t li = 0; li < cfg->n_listeners; li++) {
		const struct cfg_listener *ls = &cfg->listeners[li];
		for (size_t bi = 0; bi < ls->n_binds; bi++) {
			size_t k = inherited_for(&ls->binds[bi]);
			size_t n = k > srv->n_workers ? k : srv->n_workers;
			for (size_t j = 0; j < n; j++) {
				struct worker *w = &srv->workers[j % srv->n_workers];
				int fd = take_inherited(&ls->binds[bi]);
				if (fd < 0)
					fd = bind_listener(&ls->binds[bi], e, sizeof(e));
				if (fd < 0) {
					snprintf(err, errlen, "listener.%s: bind %s", ls->name, e);
					return false;
				}
				struct evconnlistener *l = evconnlistener_new(
				        w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE, 0, fd);
				if (!l) {
					close(fd);
					snprintf(err, errlen, "listener.%s: evconnlistener failed",
					         ls->name);
					return false;
				}
				evconnlistener_set_error_cb(l, on_accept_error);
				w->listener_of[w->n_listeners] = li;
				w->listeners[w->n_listeners++] = l;
				srv->listen[srv->n_listen++] = (struct server_listen){
				        .fd = fd, .worker = w->index, .listener = li, .bind = bi};
			}
		}
	}
	return true;
}

bool server_init(struct server *srv, struct config *cfg, char *err, size_t errlen)
{
	char e[512];

	memset(srv, 0, sizeof(*srv));
	srv->cfg = cfg;
	if (evthread_use_pthreads() != 0) {
		snprintf(err, errlen, "libevent: no pthreads support");
		return false;
	}
	srv->n_workers = cfg->threads;
	if (srv->n_workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		srv->n_workers = n > 0 ? (size_t)n : 1;
	}
	if (strcmp(cfg->mapping_source, "file") == 0) {
		if (!router_init(&srv->router, cfg->mapping_file, &cfg->rules, cfg->dest_names,
		                 cfg->n_dests, cfg->default_dest, cfg->positive_ttl_ms,
		                 cfg->negative_ttl_ms, cfg->cache_max_entries, e, sizeof(e))) {
			snprintf(err, errlen, "%s", e);
			return false;
		}
	} else {
		/* pool_size is shared by the workers and the main thread */
		struct store_settings set = {
		        .kind = strcmp(cfg->mapping_source, "redis") == 0 ? STORE_REDIS : STORE_SQL,
		        .url = cfg->store_url,
		        .key_prefix = cfg->redis_key_prefix,
		        .query = cfg->sql_query,
		        .upsert_query = cfg->sql_upsert_query,
		        .delete_query = cfg->sql_delete_query,
		        .channel = cfg->bus_channel,
		        .node_name = cfg->node_name,
		        .pool_size = cfg->store_pool_size,
		        .n_loops = srv->n_workers + 1,
		        .lookup_timeout_ms = cfg->lookup_timeout_ms};
		srv->store = store_new(&set, e, sizeof(e));
		if (!srv->store) {
			snprintf(err, errlen, "%s", e);
			return false;
		}
		router_init_remote(&srv->router, srv->store, &cfg->rules, cfg->dest_names,
		                   cfg->n_dests, cfg->default_dest, cfg->positive_ttl_ms,
		                   cfg->negative_ttl_ms, cfg->cache_max_entries,
		                   cfg->lookup_timeout_ms);
	}
	if (!server_tls_init(srv, err, errlen) || !dest_tls_init(srv, err, errlen))
		return false;
	for (size_t i = 0; i < cfg->n_listeners && !srv->http; i++) {
		if (cfg->listeners[i].protocol != PROTO_HTTP)
			continue;
		srv->http = http_router_build(cfg, e, sizeof(e));
		if (!srv->http) {
			snprintf(err, errlen, "%s", e);
			return false;
		}
	}
	metrics_init(cfg->n_dests);
	health_init(cfg->n_dests, cfg->host_down_threshold, cfg->host_down_cooldown_ms,
	            cfg->host_down_min_clients);
	srv->listener_conns = xcalloc(cfg->n_listeners, sizeof(*srv->listener_conns));
	srv->source_next = xcalloc(cfg->n_dests, sizeof(*srv->source_next));

	srv->workers = xcalloc(srv->n_workers, sizeof(*srv->workers));
	for (size_t wi = 0; wi < srv->n_workers; wi++) {
		struct worker *w = &srv->workers[wi];
		w->srv = srv;
		w->index = wi;
		w->base = event_base_new();
		if (!w->base) {
			snprintf(err, errlen, "event_base_new failed");
			return false;
		}
		w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		                                         EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (!w->dns)
			w->dns = evdns_base_new(w->base, 0); /* no resolv.conf: numeric only */
		w->cmd_ev = event_new(w->base, -1, EV_PERSIST, on_command, w);
		event_add(w->cmd_ev, NULL);
		if (srv->store)
			w->store = store_loop_new(srv->store, w->base, w->dns, false);
	}
	return add_listeners(srv, err, errlen);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

bool server_start_workers(struct server *srv, char *err, size_t errlen)
{
	for (size_t i = 0; i < srv->n_workers; i++) {
		int e = pthread_create(&srv->workers[i].thread, NULL, worker_main,
		                       &srv->workers[i]);
		if (e != 0) {
			snprintf(err, errlen, "pthread_create: %s", strerror(e));
			return false;
		}
	}
	return true;
}

void server_command(struct server *srv, enum worker_cmd cmd)
{
	for (size_t i = 0; i < srv->n_workers; i++) {
		atomic_store(&srv->workers[i].cmd, cmd);
		event_active(srv->workers[i].cmd_ev, EV_TIMEOUT, 0);
	}
}

void server_join(struct server *srv)
{
	for (size_t i = 0; i < srv->n_workers; i++)
		pthread_join(srv->workers[i].thread, NULL);
}

void server_free(struct server *srv)
{
	for (size_t i = 0; i < srv->n_workers; i++) {
		struct worker *w = &srv->workers[i];
		close_listeners(w);
		free(w->listeners);
		free(w->listener_of);
		if (w->cmd_ev)
			event_free(w->cmd_ev);
		store_loop_free(w->store);
		if (w->dns)
			evdns_base_free(w->dns, 0);
		if (w->base)
			event_base_free(w->base);
	}
	free(srv->workers);
	for (size_t i = 0; srv->dest_ctx && i < srv->cfg->n_dests; i++)
		SSL_CTX_free(srv->dest_ctx[i]);
	free(srv->dest_ctx);
	free(srv->dest_opts);
	tls_server_free(srv->tls);
	router_free(&srv->router);
	store_free(srv->store);
	http_router_free(srv->http);
	free(srv->listener_conns);
	free(srv->source_next);
	free(srv->listen);
}
