/*
 * mailspliced: arguments, start-up, signals, shutdown.
 *
 *   mailspliced [-c FILE] [--check | --upgrade]
 *
 * Exit status: 0 clean exit (or --check passed, or --upgrade handed over),
 * 1 start-up failure (bind, TLS, BPF forced but unavailable, no daemon to
 * replace), 2 configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "admin.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "mapping.h"
#include "privdrop.h"
#include "registry.h"
#include "relay.h"
#include "server.h"
#include "store.h"
#include "tls.h"
#include "upgrade.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/mailsplice/mailsplice.toml"
#define DRAIN_POLL_MS  100
#define VERSION        "0.1.0"

static struct server srv;
static struct event_base *main_base;
static struct store_loop *main_store; /* the admin API's and the bus's store connections */
static struct bus *bus;
static struct event *drain_timer;
static uint64_t drain_deadline;
static const char *stop_reason = "stopped"; /* for a successor's log (BYE) */
static bool stopping;
static struct event *status_timer;

/* How often systemd's status line (systemctl status) is refreshed. */
#define STATUS_INTERVAL_S 5

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: mailspliced [-c FILE] [--check | --upgrade]\n"
	        "  -c, --config FILE  configuration (default: $PROXY_CONFIG, then " DEFAULT_CONFIG
	        ")\n"
	        "      --check        validate the configuration, print a summary, exit\n"
	        "      --upgrade      start a new daemon that takes the running one's listeners\n"
	        "                     and kernel-held sessions over (docs/upgrade.md)\n"
	        "  -V, --version      print the version\n");
}

/* ---- --check ---- */

static void print_summary(const struct config *cfg, size_t entries)
{
	printf("configuration %s: OK\n", cfg->path);
	printf("listeners: %zu\n", cfg->n_listeners);
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *ls = &cfg->listeners[i];
		printf("  %-16s %-12s %-9s", ls->name, proto_name(ls->protocol),
		       tls_mode_name(ls->tls));
		for (size_t b = 0; b < ls->n_binds; b++)
			printf(" %s", ls->binds[b].text);
		printf("\n");
	}
	printf("destinations: %zu\n", cfg->n_dests);
	for (size_t i = 0; i < cfg->n_dests; i++) {
		const struct cfg_destination *d = &cfg->dests[i];
		printf("  %-16s %s forwarding=%s%s", d->name, d->host,
		       forwarding_name(d->forwarding),
		       (int)i == cfg->default_dest ? " (default)" : "");
		for (int p = 0; p < PROTO_COUNT; p++) {
			if (d->endpoint[p].present)
				printf(" %s:%u/%s", proto_name((enum proto)p), d->endpoint[p].port,
				       tls_mode_name(d->endpoint[p].tls));
		}
		printf("\n");
	}
	if (strcmp(cfg->mapping_source, "file") == 0)
		printf("mapping: file %s, %zu entries\n", cfg->mapping_file, entries);
	else
		/* the URL is not printed: it may hold a password */
		printf("mapping: %s, pool_size %u, lookup_timeout %llums, bus channel %s, node "
		       "%s\n",
		       cfg->mapping_source, cfg->store_pool_size,
		       (unsigned long long)cfg->lookup_timeout_ms, cfg->bus_channel,
		       cfg->node_name);
	if (cfg->admin_enabled)
		printf("admin: https://%s/\n", cfg->admin_bind.text);
}

static int check(struct config *cfg)
{
	char err[1024];
	size_t entries = 0;

	if (strcmp(cfg->mapping_source, "file") == 0) {
		struct mapping_file mf = {.path = xstrdup(cfg->mapping_file),
		                          .rules = &cfg->rules,
		                          .dest_names = cfg->dest_names,
		                          .n_dests = cfg->n_dests};
		if (!mapping_file_load(&mf, err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			mapping_file_free(&mf);
			return 2;
		}
		entries = strmap_len(&mf.table);
		mapping_file_free(&mf);
	}
	/* the certificates must load and match their keys */
	for (size_t i = 0; i < cfg->n_certs; i++) {
		struct tls_cert_spec spec = {.id = cfg->certs[i].id,
		                             .cert_file = cfg->certs[i].cert,
		                             .key_file = cfg->certs[i].key,
		                             .is_default = true};
		struct tls_server *ts = tls_server_new(&spec, 1, NULL, err, sizeof(err));
		if (!ts) {
			fprintf(stderr, "%s:%u: tls.certificate.%s: %s\n", cfg->path,
			        cfg->certs[i].line, cfg->certs[i].id, err);
			return 2;
		}
		tls_server_free(ts);
	}
	print_summary(cfg, entries);
	return 0;
}

/* ---- signals ---- */

static void finish(void)
{
	stopping = true;
	server_command(&srv, WORKER_CMD_STOP);
	event_base_loopexit(main_base, NULL);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	size_t active = atomic_load(&srv.active);

	/* after an upgrade: offer what became movable (a login that finished) */
	upgrade_tick();
	if (active == 0 && !upgrade_busy()) {
		log_msg(LOG_INFO, "shutdown", "state=drained");
		stop_reason = "drained";
		finish();
		return;
	}
	if (now_ms() >= drain_deadline) {
		log_msg(LOG_INFO, "shutdown", "state=grace-expired sessions=%zu", active);
		stop_reason = "shutdown grace expired";
		finish();
		return;
	}
	struct timeval tv = {0, DRAIN_POLL_MS * 1000};
	evtimer_add(drain_timer, &tv);
}

/* STATUS= for the service manager: live sessions, how many are relayed,
 * the mapping table's size; during a drain, what is left. */
static void notify_status(void)
{
	size_t total, relayed;
	struct router_stats rs;

	if (upgrade_handed_over())
		return; /* the successor is the service now */
	registry_counts(&total, &relayed);
	if (drain_timer) {
		sd_notifyf(0, "STATUS=draining: %zu sessions left, %zu relayed", total, relayed);
		return;
	}
	router_stats(&srv.router, &rs);
	if (srv.store) {
		sd_notifyf(0, "STATUS=%zu sessions, %zu relayed, %zu logging in; mapping store %s",
		           total, relayed, total - relayed,
		           store_state_name(store_state_get(srv.store, NULL, 0)));
		return;
	}
	sd_notifyf(0, "STATUS=%zu sessions, %zu relayed, %zu logging in; %zu mappings", total,
	           relayed, total - relayed, (size_t)rs.mappings);
}

static void on_status_tick(evutil_socket_t fd, short what, void *arg)
{
	notify_status();
}

/* After a crowd of sessions has gone, give the memory they used back to
 * the system: glibc keeps freed chunks in its per-thread arenas, so RSS
 * would stay at the peak. Trimming walks every arena under its lock, so
 * it runs only when the session count has at least halved (and by a few
 * hundred) since the last look, never on a busy steady state. */
#define TRIM_INTERVAL_S 10
#define TRIM_MIN_DROP   256

/* glibc's own trimming gives the top of an arena back as soon as more than
 * 128 KiB of it is free. A userspace relay frees its 256 KiB direction
 * buffer every time the destination catches up, so each refill faulted fresh
 * pages in (sysmalloc, madvise and page faults were 40 % of the daemon's CPU
 * on a bulk FETCH). Memory goes back by on_trim_tick instead. */
#define ARENA_KEEP (64 * 1024 * 1024)
static struct event *trim_timer;
static size_t trim_peak;

static void on_trim_tick(evutil_socket_t fd, short what, void *arg)
{
	size_t active = atomic_load(&srv.active);

	if (active > trim_peak)
		trim_peak = active;
	if (trim_peak - active >= TRIM_MIN_DROP && active <= trim_peak / 2) {
		malloc_trim(0);
		trim_peak = active;
	}
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	if (drain_timer) {
		/* a second signal: do not wait any longer */
		log_msg(LOG_INFO, "shutdown", "state=forced");
		stop_reason = "forced";
		finish();
		return;
	}
	if (!upgrade_handed_over())
		sd_notify(0, "STOPPING=1");
	log_msg(LOG_INFO, "shutdown", "signal=%s grace_ms=%llu sessions=%zu",
	        sig == SIGINT ? "INT" : "TERM", (unsigned long long)srv.cfg->shutdown_grace_ms,
	        atomic_load(&srv.active));
	atomic_store(&srv.draining, true);
	admin_stop();
	bus_leave(bus); /* the other nodes stop waiting for our answers */
	server_command(&srv, WORKER_CMD_DRAIN);
	drain_deadline = now_ms() + srv.cfg->shutdown_grace_ms;
	drain_timer = evtimer_new(main_base, on_drain_tick, NULL);
	if (status_timer)
		notify_status();
	on_drain_tick(-1, 0, NULL);
}

/* A successor took the listeners over (upgrade.h): what could not move
 * stays until it ends or shutdown_grace passes; logins in progress finish
 * here (and move if they can). */
static void on_handed_over(void)
{
	if (status_timer) {
		event_free(status_timer);
		status_timer = NULL;
	}
	if (drain_timer)
		return;
	log_msg(LOG_INFO, "shutdown", "reason=upgrade grace_ms=%llu sessions=%zu",
	        (unsigned long long)srv.cfg->shutdown_grace_ms, atomic_load(&srv.active));
	drain_deadline = now_ms() + srv.cfg->shutdown_grace_ms;
	drain_timer = evtimer_new(main_base, on_drain_tick, NULL);
	struct timeval tv = {0, DRAIN_POLL_MS * 1000};
	evtimer_add(drain_timer, &tv);
}

static void log_startup(const struct config *cfg);

static void on_took_over(int from_pid)
{
	log_startup(srv.cfg);
	log_msg(LOG_INFO, "upgrade", "state=serving predecessor_pid=%d", from_pid);
	sd_notify(0, "READY=1");
	if (getenv("NOTIFY_SOCKET") && !status_timer) {
		status_timer = event_new(main_base, -1, EV_PERSIST, on_status_tick, NULL);
		struct timeval tv = {STATUS_INTERVAL_S, 0};
		event_add(status_timer, &tv);
		notify_status();
	}
}

static bool reload_mappings(char *msg, size_t len)
{
	size_t entries = 0, flushed = 0;
	char err[1024];

	if (!router_reload(&srv.router, &entries, &flushed, err, sizeof(err))) {
		log_msg(LOG_ERROR, "mapping-reload", "result=failed kept=previous");
		struct logbuf lb;
		lb_init(&lb, LOG_ERROR, "mapping-reload");
		lb_str(&lb, "error", err);
		lb_emit(&lb);
		snprintf(msg, len, "%s", err);
		return false;
	}
	log_msg(LOG_INFO, "mapping-reload", "result=ok entries=%zu cache_flushed=%zu", entries,
	        flushed);
	snprintf(msg, len, "%zu entries, %zu cache entries flushed", entries, flushed);
	return true;
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	char msg[1100];

	if (upgrade_handed_over()) {
		reload_mappings(msg, sizeof(msg)); /* not the service any more: no notify */
		return;
	}
	sd_notify(0, "RELOADING=1");
	reload_mappings(msg, sizeof(msg));
	sd_notify(0, "READY=1");
}

/* /config/reload through the admin API: the listeners, destinations and
 * TLS material of a running daemon are not swapped under live sessions;
 * the mapping store is, and a changed file is validated so the operator
 * learns now, not at the next restart, that it would not load. */
static bool admin_reload_config(char *msg, size_t len)
{
	char err[4096];
	struct config *fresh = config_load(srv.cfg->path, true, err, sizeof(err));

	if (!fresh) {
		snprintf(msg, len, "configuration invalid, nothing changed: %s", err);
		return false;
	}
	config_free(fresh);
	char m[1100];
	if (!reload_mappings(m, sizeof(m))) {
		snprintf(msg, len, "mapping reload failed: %s", m);
		return false;
	}
	snprintf(msg, len,
	         "configuration valid; mappings reloaded (%s); listener, destination and TLS "
	         "changes take effect at restart",
	         m);
	return true;
}

/* Everything that needs root is done (listeners bound, BPF loaded, keys
 * read); workers have not started, so the whole process changes at once.
 * What stays, only with data_path = "sockmap": CAP_BPF and CAP_NET_ADMIN to
 * put new sessions' sockets into the sockhash. splice(2), kTLS and kicks
 * (SO_LINGER 0 + close) need no capability. */
static bool drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
	cap_value_t keep[2];
	size_t n = 0;

	if (datapath_caps()->kernel_path) {
		keep[n++] = CAP_NET_ADMIN;
		keep[n++] = CAP_BPF;
	}
	if (!privdrop(cfg->user, cfg->group, keep, n, err, errlen))
		return false;
	log_msg(LOG_INFO, "privileges", "user=%s group=%s kept=%s", cfg->user,
	        cfg->group ? cfg->group : "(primary)", n ? "cap_net_admin,cap_bpf" : "none");
	return true;
}

static void log_startup(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *ls = &cfg->listeners[i];
		for (size_t b = 0; b < ls->n_binds; b++)
			log_msg(LOG_INFO, "listen", "listener=%s proto=%s tls=%s addr=%s", ls->name,
			        proto_name(ls->protocol), tls_mode_name(ls->tls),
			        ls->binds[b].text);
	}
	struct router_stats rs;
	router_stats(&srv.router, &rs);
	if (srv.store)
		log_msg(LOG_INFO, "started", "version=%s workers=%zu mapping=%s node=%s config=%s",
		        VERSION, srv.n_workers, cfg->mapping_source, cfg->node_name, cfg->path);
	else
		log_msg(LOG_INFO, "started", "version=%s workers=%zu mappings=%zu config=%s",
		        VERSION, srv.n_workers, rs.mappings, cfg->path);
}

static int serve(struct config *cfg);

/* The last start-up failure, for --upgrade to report. */
static char startup_error[4096] = "start-up failed";

static int startup_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int startup_failed(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(startup_error, sizeof(startup_error), fmt, ap);
	va_end(ap);
	fprintf(stderr, "mailspliced: %s\n", startup_error);
	return 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'C'},
	        {"upgrade", no_argument, NULL, 'U'},      {"version", no_argument, NULL, 'V'},
	        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
	const char *path = NULL;
	bool check_only = false, upgrade = false;
	int opt;

	mallopt(M_TRIM_THRESHOLD, ARENA_KEEP);

	while ((opt = getopt_long(argc, argv, "c:Vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check_only = true;
			break;
		case 'U':
			upgrade = true;
			break;
		case 'V':
			printf("mailspliced %s\n", VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	/* "mailspliced FILE", as the reference proxy is started */
	if (!path && optind < argc)
		path = argv[optind++];
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (!path)
		path = getenv("PROXY_CONFIG");
	if (!path)
		path = DEFAULT_CONFIG;
	if (upgrade && check_only) {
		usage(stderr);
		return 2;
	}
	/* the parent waits for the new daemon's verdict; the child becomes it */
	if (upgrade) {
		int r = upgrade_spawn();
		if (r >= 0)
			return r;
	}

	signal(SIGPIPE, SIG_IGN);
	static char err[65536];
	struct config *cfg = config_load(path, true, err, sizeof(err));
	if (!cfg) {
		fputs(err, stderr);
		return 2;
	}
	if (check_only) {
		int r = check(cfg);
		config_free(cfg);
		return r;
	}
	int status = serve(cfg);
	config_free(cfg);
	if (status != 0)
		upgrade_abort(startup_error); /* a successor: the running daemon keeps serving */
	if (status == 0)
		log_msg(LOG_INFO, "stopped", "status=0");
	return status;
}

/* Run until stopped: 0 after a clean stop, 1 when start-up fails (the
 * caller frees the configuration either way). */
static int serve(struct config *cfg)
{
	char err[4096];

	if (cfg->log_level < 0)
		log_set_fd(-1);
	else
		log_set_level((enum log_level)cfg->log_level);

	raise_fd_limit();
	if (!datapath_init(cfg->data_path, err, sizeof(err))) {
		log_msg(LOG_ERROR, "startup", "stage=datapath");
		return startup_failed("data path: %s", err);
	}
	/* a successor: the running daemon's listening sockets first, so that
	 * only what is new gets bound */
	if (upgrade_is_successor() && !upgrade_connect(cfg, err, sizeof(err)))
		return startup_failed("%s", err);
	if (!server_init(&srv, cfg, err, sizeof(err)))
		return startup_failed("%s", err);
	main_base = event_base_new();
	if (!main_base)
		return startup_failed("event_base_new failed");
	/* the main thread's own store connections: admin writes, the bus */
	if (srv.store)
		main_store = store_loop_new(srv.store, main_base, NULL, true);
	bus = bus_new(cfg, &srv.router, srv.store, main_store, main_base);
	if (cfg->admin_enabled) {
		struct admin_hooks hooks = {.reload_config = admin_reload_config,
		                            .reload_mappings = reload_mappings,
		                            .bus = bus};
		SSL_CTX *ctx = srv.tls ? tls_server_default_ctx(srv.tls) : NULL;
		if (!admin_start(main_base, cfg, &srv.router, ctx, &hooks, err, sizeof(err)))
			return startup_failed("admin: %s", err);
	}
	struct upgrade_hooks uh = {.handed_over = on_handed_over, .took_over = on_took_over};
	if (!upgrade_serve(&srv, main_base, &uh, err, sizeof(err)))
		return startup_failed("%s", err);
	if (cfg->user && !drop_privileges(cfg, err, sizeof(err)))
		return startup_failed("%s", err);
	struct event *ev_term = evsignal_new(main_base, SIGTERM, on_term, NULL);
	struct event *ev_int = evsignal_new(main_base, SIGINT, on_term, NULL);
	struct event *ev_hup = evsignal_new(main_base, SIGHUP, on_hup, NULL);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	if (!server_start_workers(&srv, err, sizeof(err)))
		return startup_failed("%s", err);
	if (upgrade_is_successor()) {
		/* accepting on the passed sockets already: take over. The
		 * predecessor's COMMITTED makes this the service (on_took_over) */
		if (!upgrade_commit(&srv, main_base, err, sizeof(err)))
			log_msg(LOG_WARN, "upgrade", "state=commit-failed error=\"%s\" serving=yes",
			        err);
	} else {
		log_startup(cfg);
		sd_notify(0, "READY=1");
	}
	trim_timer = event_new(main_base, -1, EV_PERSIST, on_trim_tick, NULL);
	struct timeval trim_tv = {TRIM_INTERVAL_S, 0};
	event_add(trim_timer, &trim_tv);
	if (getenv("NOTIFY_SOCKET") && !upgrade_is_successor()) {
		/* only under a service manager: the status walks the session list */
		status_timer = event_new(main_base, -1, EV_PERSIST, on_status_tick, NULL);
		struct timeval tv = {STATUS_INTERVAL_S, 0};
		event_add(status_timer, &tv);
		notify_status();
	}

	event_base_dispatch(main_base);

	if (!stopping)
		finish();
	server_join(&srv);
	upgrade_finish(stop_reason);
	admin_stop();
	bus_free(bus);
	store_loop_free(main_store);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	if (drain_timer)
		event_free(drain_timer);
	if (status_timer)
		event_free(status_timer);
	event_free(trim_timer);
	server_free(&srv);
	datapath_shutdown();
	event_base_free(main_base);
	return 0;
}
