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

	size_t n_binds = 0;
	for (size_t i = 0; i < cfg->n_listeners; i++)
		n_binds += cfg->listeners[i].n_binds;
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
		w->listeners = xcalloc(n_binds ? n_binds : 1, sizeof(*w->listeners));
		w->listener_of = xcalloc(n_binds ? n_binds : 1, sizeof(*w->listener_of));
		for (size_t li = 0; li < cfg->n_listeners; li++) {
			const struct cfg_listener *ls = &cfg->listeners[li];
			for (size_t bi = 0; bi < ls->n_binds; bi++) {
				int fd = bind_listener(&ls->binds[bi], e, sizeof(e));
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
			}
		}
	}
	return true;
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
}
