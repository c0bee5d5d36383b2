/*
 * The admin API (see admin.h): libevent's evhttp over bufferevent_openssl.
 *
 * Every request: lockout check for the client address first (a locked-out
 * address learns nothing, not even whether the daemon is healthy), then the
 * bearer token compared in constant time, then the route. A mapping change
 * is written to the store (temp file, fsync, rename) before the reply says
 * 200, so an acknowledged cutover survives a crash.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>

#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "health.h"
#include "holds.h"
#include "metrics.h"
#include "log.h"
#include "registry.h"
#include "util.h"

#define LOCKOUT_SLOTS     1024 /* client addresses tracked; oldest reused */
#define MAX_HEADERS_SIZE  8192
#define MAX_BODY_SIZE     65536
#define REQUEST_TIMEOUT_S 10

struct lockout_slot {
	char addr[64];
	unsigned failures;
	uint64_t locked_until;
	uint64_t last_seen;
};

static struct {
	const char *endpoint; /* of the request being answered, for metrics */
	struct evhttp *http;
	SSL_CTX *ctx;
	bool own_ctx;
	const struct config *cfg;
	struct router *router;
	struct admin_hooks hooks;
	struct lockout_slot slots[LOCKOUT_SLOTS];
} A;

/* ---- replies ---- */

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *b = evbuffer_new();
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; charset=utf-8");
	evbuffer_add_printf(b, "%s\n", text);
	metrics_admin_request(A.endpoint, code);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void reply_json(struct evhttp_request *req, int code, json_t *j)
{
	struct evbuffer *b = evbuffer_new();
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "application/json");
	evbuffer_add_printf(b, "%s\n", s ? s : "{}");
	metrics_admin_request(A.endpoint, code);
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
	free(s);
	evbuffer_free(b);
	json_decref(j);
}

/* ---- lockout ---- */

static struct lockout_slot *slot_for(const char *addr, uint64_t now)
{
	struct lockout_slot *oldest = &A.slots[0];

	for (size_t i = 0; i < LOCKOUT_SLOTS; i++) {
		if (strcmp(A.slots[i].addr, addr) == 0)
			return &A.slots[i];
		if (A.slots[i].last_seen < oldest->last_seen)
			oldest = &A.slots[i];
	}
	/* a locked slot is only reused once its lock has expired */
	if (oldest->locked_until > now)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	str_copy(oldest->addr, addr, sizeof(oldest->addr));
	return oldest;
}

static bool locked_out(const char *addr, uint64_t now)
{
	for (size_t i = 0; i < LOCKOUT_SLOTS; i++) {
		if (strcmp(A.slots[i].addr, addr) == 0)
			return A.slots[i].locked_until > now;
	}
	return false;
}

static void auth_failed(const char *addr, uint64_t now)
{
	struct lockout_slot *s = slot_for(addr, now);

	if (!s || A.cfg->admin_lockout_threshold == 0)
		return;
	s->last_seen = now;
	if (++s->failures >= A.cfg->admin_lockout_threshold) {
		s->locked_until = now + A.cfg->admin_lockout_duration_ms;
		s->failures = 0;
		log_msg(LOG_WARN, "admin-lockout", "client=%s duration_ms=%llu", addr,
		        (unsigned long long)A.cfg->admin_lockout_duration_ms);
	}
}

static void auth_succeeded(const char *addr)
{
	for (size_t i = 0; i < LOCKOUT_SLOTS; i++) {
		if (strcmp(A.slots[i].addr, addr) == 0)
			A.slots[i].failures = 0;
	}
}

static bool token_ok(struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	const char *tok = A.cfg->admin_token;

	if (!h || !tok || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ')
		h++;
	return const_time_eq(h, strlen(h), tok, strlen(tok));
}

/* ---- parameters: query string, form body or JSON body ---- */

struct params {
	struct evkeyvalq q;
	json_t *body;
};

static void params_load(struct evhttp_request *req, struct params *p)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;

	TAILQ_INIT(&p->q);
	p->body = NULL;
	if (query)
		evhttp_parse_query_str(query, &p->q);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len == 0 || len > MAX_BODY_SIZE)
		return;
	char *text = (char *)evbuffer_pullup(in, (ev_ssize_t)len);
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	if (text[0] == '{' || (ct && strstr(ct, "json"))) {
		p->body = json_loadb(text, len, 0, NULL);
	} else {
		char *copy = xstrndup(text, len);
		struct evkeyvalq form;
		TAILQ_INIT(&form);
		if (evhttp_parse_query_str(copy, &form) == 0) {
			struct evkeyval *kv;
			TAILQ_FOREACH(kv, &form, next)
			{
				if (!evhttp_find_header(&p->q, kv->key))
					evhttp_add_header(&p->q, kv->key, kv->value);
			}
		}
		evhttp_clear_headers(&form);
		free(copy);
	}
}

static const char *param(struct params *p, const char *key)
{
	const char *v = evhttp_find_header(&p->q, key);
	if (!v && p->body && json_is_object(p->body))
		v = json_string_value(json_object_get(p->body, key));
	return v && *v ? v : NULL;
}

static void params_free(struct params *p)
{
	evhttp_clear_headers(&p->q);
	json_decref(p->body);
}

/* ---- the endpoints ---- */

static void log_change(const char *client, const char *action, const char *ident, const char *dest,
                       const char *result)
{
	struct logbuf lb;

	lb_init(&lb, LOG_INFO, "admin");
	lb_str(&lb, "client", client);
	lb_str(&lb, "action", action);
	if (ident)
		lb_str(&lb, "identifier", ident);
	if (dest)
		lb_str(&lb, "destination", dest);
	lb_str(&lb, "result", result);
	lb_emit(&lb);
}

/* identifier -> canonical account, or a 400 already sent */
static bool canonical(struct evhttp_request *req, const char *ident, char *out, size_t len)
{
	const char *bad = account_canonical(&A.cfg->rules, ident, strlen(ident), out, len);
	if (bad) {
		char msg[200];
		snprintf(msg, sizeof(msg), "invalid identifier: %s", bad);
		reply_text(req, 400, "Bad Request", msg);
		return false;
	}
	return true;
}

static void get_stats(struct evhttp_request *req)
{
	struct router_stats rs;
	router_stats(A.router, &rs);
	uint64_t total = rs.hits + rs.misses;
	double rate = total ? 100.0 * (double)rs.hits / (double)total : 0.0;
	reply_json(req, 200,
	           json_pack("{s:I, s:I, s:f, s:I, s:I, s:I}", "cache_hits", (json_int_t)rs.hits,
	                     "cache_misses", (json_int_t)rs.misses, "hit_rate_pct", rate,
	                     "cache_entries", (json_int_t)rs.entries, "active_connections",
	                     (json_int_t)registry_count(), "mappings", (json_int_t)rs.mappings));
}

static void get_destinations(struct evhttp_request *req)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < A.cfg->n_dests; i++) {
		struct health_state h = {0};
		health_get(i, now_ms(), &h);
		json_array_append_new(arr, json_pack("{s:s, s:i, s:b}", "destination",
		                                     A.cfg->dests[i].name, "consecutive_failures",
		                                     (int)h.consecutive_failures, "down", h.down));
	}
	reply_json(req, 200, json_pack("{s:o}", "destinations", arr));
}

static void get_metrics(struct evhttp_request *req)
{
	struct router_stats rs;
	struct evbuffer *b = evbuffer_new();

	router_stats(A.router, &rs);
	evbuffer_add_printf(b,
	                    "# TYPE mailsplice_mapping_cache_hits_total counter\n"
	                    "mailsplice_mapping_cache_hits_total %llu\n"
	                    "# TYPE mailsplice_mapping_cache_misses_total counter\n"
	                    "mailsplice_mapping_cache_misses_total %llu\n"
	                    "# TYPE mailsplice_mapping_cache_entries gauge\n"
	                    "mailsplice_mapping_cache_entries %zu\n"
	                    "# TYPE mailsplice_mappings gauge\n"
	                    "mailsplice_mappings %zu\n"
	                    "# TYPE mailsplice_destination_down gauge\n",
	                    (unsigned long long)rs.hits, (unsigned long long)rs.misses, rs.entries,
	                    rs.mappings);
	for (size_t i = 0; i < A.cfg->n_dests; i++) {
		struct health_state h = {0};
		health_get(i, now_ms(), &h);
		evbuffer_add_printf(b, "mailsplice_destination_down{destination=\"%s\"} %d\n",
		                    A.cfg->dests[i].name, h.down ? 1 : 0);
	}
	evbuffer_add_printf(b, "# TYPE mailsplice_destination_consecutive_failures gauge\n");
	for (size_t i = 0; i < A.cfg->n_dests; i++) {
		struct health_state h = {0};
		health_get(i, now_ms(), &h);
		evbuffer_add_printf(
		        b,
		        "mailsplice_destination_consecutive_failures{destination=\"%s\"} "
		        "%u\n",
		        A.cfg->dests[i].name, h.consecutive_failures);
	}
	metrics_admin_request(A.endpoint, 200);
	metrics_write(b, A.cfg->dest_names, A.cfg->n_dests);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void mappings(struct evhttp_request *req, enum evhttp_cmd_type m, struct params *p,
                     const char *client)
{
	const char *ident = param(p, "identifier");
	char account[ACCOUNT_MAX + 1], err[512];
	bool existed = false;

	if (m == EVHTTP_REQ_GET) {
		if (!ident) {
			reply_text(req, 400, "Bad Request", "identifier required");
			return;
		}
		if (!canonical(req, ident, account, sizeof(account)))
			return;
		struct route route;
		bool cached = false;
		router_peek(A.router, account, &route, &cached);
		reply_json(req, 200,
		           json_pack("{s:s, s:s, s:s, s:b, s:b}", "identifier", ident, "normalized",
		                     account, "destination", A.cfg->dests[route.dest].name,
		                     "routed_to_default", route.routed_to_default, "cached",
		                     cached));
		return;
	}
	if (m == EVHTTP_REQ_PUT || m == EVHTTP_REQ_POST) {
		const char *dest = param(p, "destination");
		if (!ident || !dest) {
			reply_text(req, 400, "Bad Request", "identifier and destination required");
			return;
		}
		int di = config_dest_index(A.cfg, dest);
		if (di < 0) {
			reply_text(req, 400, "Bad Request", "unknown destination");
			return;
		}
		if (!canonical(req, ident, account, sizeof(account)))
			return;
		if (!router_set(A.router, account, di, &existed, err, sizeof(err))) {
			log_change(client, "mapping-put", account, dest, err);
			reply_text(req, 500, "Internal Server Error", "upsert failed");
			return;
		}
		log_change(client, "mapping-put", account, dest, existed ? "updated" : "created");
		reply_text(req, 200, "OK", "ok");
		return;
	}
	/* DELETE */
	if (!ident) {
		reply_text(req, 400, "Bad Request", "identifier required");
		return;
	}
	if (!canonical(req, ident, account, sizeof(account)))
		return;
	if (!router_set(A.router, account, -1, &existed, err, sizeof(err))) {
		log_change(client, "mapping-delete", account, NULL, err);
		reply_text(req, 500, "Internal Server Error", "delete failed");
		return;
	}
	log_change(client, "mapping-delete", account, NULL, existed ? "removed" : "absent");
	reply_text(req, 200, "OK", existed ? "removed" : "absent");
}

static void kick(struct evhttp_request *req, struct params *p, const char *client)
{
	const char *ident = param(p, "identifier");
	const char *dest = param(p, "destination");
	char account[ACCOUNT_MAX + 1], msg[64];

	if (!ident) {
		reply_text(req, 400, "Bad Request", "identifier required");
		return;
	}
	if (!canonical(req, ident, account, sizeof(account)))
		return;
	if (dest && config_dest_index(A.cfg, dest) < 0) {
		reply_text(req, 400, "Bad Request", "unknown destination");
		return;
	}
	/* graceful=1 is accepted: sessions still logging in always get the
	 * protocol's goodbye; relayed ones are closed, because a goodbye
	 * written into a relayed stream could land inside a response */
	size_t n = registry_kick(account, dest);
	snprintf(msg, sizeof(msg), "kicked %zu", n);
	log_change(client, "kick", account, dest, msg);
	reply_text(req, 200, "OK", msg);
}

static void delay(struct evhttp_request *req, struct params *p, const char *client)
{
	const char *ident = param(p, "identifier");
	const char *secs = param(p, "seconds");
	char account[ACCOUNT_MAX + 1], *end = NULL;

	if (!ident || !secs) {
		reply_text(req, 400, "Bad Request", "identifier and seconds required");
		return;
	}
	unsigned long n = strtoul(secs, &end, 10);
	if (!end || *end || n == 0 || n > HOLD_MAX_SECONDS) {
		reply_text(req, 400, "Bad Request", "invalid seconds");
		return;
	}
	if (!canonical(req, ident, account, sizeof(account)))
		return;
	if (!holds_set(account, (unsigned)n, now_ms())) {
		reply_text(req, 500, "Internal Server Error", "too many holds");
		return;
	}
	log_change(client, "delay", account, NULL, secs);
	reply_text(req, 200, "OK", "ok");
}

static void sessions(struct evhttp_request *req, struct params *p)
{
	const char *ident = param(p, "identifier");
	char account[ACCOUNT_MAX + 1];

	if (ident && !canonical(req, ident, account, sizeof(account)))
		return;
	reply_json(req, 200, json_pack("{s:o}", "sessions", registry_list(ident ? account : NULL)));
}

static void handle(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	char *peer = NULL;
	ev_uint16_t port = 0;
	uint64_t now = now_ms();
	char client[64];

	evhttp_connection_get_peer(conn, &peer, &port);
	str_copy(client, peer ? peer : "?", sizeof(client));
	A.endpoint = "other";
	if (path) {
		static const char *const known[] = {"/healthz",
		                                    "/stats",
		                                    "/metrics",
		                                    "/destinations",
		                                    "/destinations/reset",
		                                    "/mappings",
		                                    "/mappings/reload",
		                                    "/cache/invalidate",
		                                    "/sessions",
		                                    "/connections/kick",
		                                    "/connections/delay",
		                                    "/config/reload",
		                                    NULL};
		for (size_t i = 0; known[i]; i++) {
			if (strcmp(path, known[i]) == 0)
				A.endpoint = known[i];
		}
	}
	if (locked_out(client, now)) {
		reply_text(req, 429, "Too Many Requests", "locked out");
		return;
	}
	if (!path)
		path = "/";
	if (strcmp(path, "/healthz") == 0 && m == EVHTTP_REQ_GET) {
		reply_text(req, 200, "OK", "ok");
		return;
	}
	if (!token_ok(req)) {
		auth_failed(client, now);
		log_msg(LOG_WARN, "admin-unauthorized", "client=%s", client);
		reply_text(req, 401, "Unauthorized", "unauthorized");
		return;
	}
	auth_succeeded(client);

	struct params p;
	params_load(req, &p);
	bool get = m == EVHTTP_REQ_GET, post = m == EVHTTP_REQ_POST;
	char msg[1200];
	if (strcmp(path, "/stats") == 0) {
		get ? get_stats(req)
		    : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/metrics") == 0) {
		get ? get_metrics(req)
		    : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/destinations") == 0) {
		get ? get_destinations(req)
		    : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/destinations/reset") == 0) {
		const char *d = param(&p, "destination");
		int di = d ? config_dest_index(A.cfg, d) : -1;
		if (!post)
			reply_text(req, 405, "Method Not Allowed", "method not allowed");
		else if (!d)
			reply_text(req, 400, "Bad Request", "destination required");
		else if (di < 0)
			reply_text(req, 404, "Not Found", "unknown destination");
		else {
			health_reset((size_t)di);
			log_change(client, "destination-reset", NULL, d, "ok");
			reply_text(req, 200, "OK", "ok");
		}
	} else if (strcmp(path, "/mappings") == 0) {
		if (get || post || m == EVHTTP_REQ_PUT || m == EVHTTP_REQ_DELETE)
			mappings(req, m, &p, client);
		else
			reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/mappings/reload") == 0) {
		if (!post) {
			reply_text(req, 405, "Method Not Allowed", "method not allowed");
		} else if (A.hooks.reload_mappings(msg, sizeof(msg))) {
			log_change(client, "mappings-reload", NULL, NULL, msg);
			reply_text(req, 200, "OK", "reloaded");
		} else {
			log_change(client, "mappings-reload", NULL, NULL, msg);
			reply_text(req, 500, "Internal Server Error", "reload failed");
		}
	} else if (strcmp(path, "/cache/invalidate") == 0) {
		const char *ident = param(&p, "identifier");
		char account[ACCOUNT_MAX + 1];
		if (!post) {
			reply_text(req, 405, "Method Not Allowed", "method not allowed");
		} else if (!ident || canonical(req, ident, account, sizeof(account))) {
			router_invalidate(A.router, ident ? account : NULL);
			log_change(client, "cache-invalidate", ident ? account : "*", NULL, "ok");
			reply_text(req, 200, "OK", "ok");
		}
	} else if (strcmp(path, "/sessions") == 0) {
		get ? sessions(req, &p)
		    : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/connections/kick") == 0 || strcmp(path, "/sessions/kick") == 0) {
		post ? kick(req, &p, client)
		     : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/connections/delay") == 0) {
		post ? delay(req, &p, client)
		     : reply_text(req, 405, "Method Not Allowed", "method not allowed");
	} else if (strcmp(path, "/config/reload") == 0) {
		if (!post) {
			reply_text(req, 405, "Method Not Allowed", "method not allowed");
		} else {
			bool ok = A.hooks.reload_config(msg, sizeof(msg));
			log_change(client, "config-reload", NULL, NULL, ok ? "ok" : "failed");
			reply_json(req, ok ? 200 : 400,
			           json_pack("{s:b, s:s}", "reloaded", ok, "note", msg));
		}
	} else {
		reply_text(req, 404, "Not Found", "not found");
	}
	params_free(&p);
}

/* ---- start / stop ---- */

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(A.ctx);
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

bool admin_start(struct event_base *base, const struct config *cfg, struct router *router,
                 SSL_CTX *tls, const struct admin_hooks *hooks, char *err, size_t errlen)
{
	int one = 1;

	memset(&A, 0, sizeof(A));
	A.cfg = cfg;
	A.router = router;
	A.hooks = *hooks;
	if (cfg->admin_cert) {
		A.ctx = SSL_CTX_new(TLS_server_method());
		A.own_ctx = true;
		if (!A.ctx || SSL_CTX_use_certificate_chain_file(A.ctx, cfg->admin_cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(A.ctx, cfg->admin_key, SSL_FILETYPE_PEM) != 1) {
			snprintf(err, errlen, "admin.cert/admin.key: cannot load %s / %s",
			         cfg->admin_cert, cfg->admin_key);
			return false;
		}
		SSL_CTX_set_min_proto_version(A.ctx, TLS1_2_VERSION);
	} else {
		A.ctx = tls;
	}
	if (!A.ctx) {
		snprintf(err, errlen, "no TLS certificate for the admin API");
		return false;
	}
	int fd = socket(cfg->admin_bind.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	                0);
	if (fd < 0) {
		snprintf(err, errlen, "admin.bind: socket: %s", strerror(errno));
		return false;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cfg->admin_bind.addr, cfg->admin_bind.len) < 0 ||
	    listen(fd, 64) < 0) {
		snprintf(err, errlen, "admin.bind %s: %s", cfg->admin_bind.text, strerror(errno));
		close(fd);
		return false;
	}
	A.http = evhttp_new(base);
	if (!A.http || !evhttp_accept_socket_with_handle(A.http, fd)) {
		snprintf(err, errlen, "admin: evhttp setup failed");
		close(fd);
		return false;
	}
	evhttp_set_bevcb(A.http, make_bev, NULL);
	evhttp_set_max_headers_size(A.http, MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(A.http, MAX_BODY_SIZE);
	evhttp_set_timeout(A.http, REQUEST_TIMEOUT_S);
	evhttp_set_allowed_methods(A.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	                                           EVHTTP_REQ_DELETE);
	evhttp_set_gencb(A.http, handle, NULL);
	log_msg(LOG_INFO, "admin-listen", "addr=%s tls=implicit", cfg->admin_bind.text);
	return true;
}

void admin_stop(void)
{
	if (A.http) {
		evhttp_free(A.http);
		A.http = NULL;
	}
	if (A.own_ctx && A.ctx) {
		SSL_CTX_free(A.ctx);
		A.ctx = NULL;
	}
}
