/*
 * The admin API (see admin.h): libevent's evhttp over bufferevent_openssl.
 *
 * Every request: the lockout check for the client address first (a
 * locked-out address learns nothing, not even whether the daemon is
 * healthy), then the bearer token compared in constant time, then the
 * route. Paths, parameters, bodies and status codes follow the Stalwart
 * proxy's admin API. A mapping change is written to the store (temp file,
 * fsync, rename) before the reply says 200, so an acknowledged cutover
 * survives a crash.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/err.h>

#include "admin_internal.h"
#include "admin_lockout.h"
#include "admin_query.h"
#include "admin_route.h"
#include "health.h"
#include "holds.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"
#include "util.h"

#define LOCKOUT_SLOTS     4096 /* client addresses tracked at once */
#define MAX_HEADERS_SIZE  8192
#define MAX_BODY_SIZE     65536
#define REQUEST_TIMEOUT_S 10 /* idle read/write, TLS handshake included */
#define PARAM_MAX         1024

static struct {
	struct evhttp *http;
	SSL_CTX *ctx;
	bool own_ctx;
	const struct config *cfg;
	struct router *router;
	struct admin_hooks hooks;
	struct admin_lockout lockout;
	struct evhttp_bound_socket *listener;
} A;
static bool A_inherited_used; /* the predecessor's socket is in use (upgrade) */

/* ---- replies ---- */

static const char *reason(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

static void send_body(struct admin_request *r, int code, const char *type, struct evbuffer *b)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type", type);
	metrics_admin_request(r->ep, code);
	evhttp_send_reply(r->req, code, reason(code), b);
}

/* text/plain replies end with a newline, as the peer's do, so that curl
 * output stays on its own line */
void admin_reply_text(struct admin_request *r, int code, const char *text)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(r->req, 500, NULL);
		return;
	}
	evbuffer_add_printf(b, "%s\n", text);
	send_body(r, code, "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

void admin_reply_json(struct admin_request *r, int code, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	struct evbuffer *b = evbuffer_new();

	json_decref(j);
	if (!s || !b) {
		free(s);
		if (b)
			evbuffer_free(b);
		admin_reply_text(r, 500, "internal error");
		return;
	}
	evbuffer_add_printf(b, "%s\n", s);
	send_body(r, code, "application/json", b);
	free(s);
	evbuffer_free(b);
}

static void method_not_allowed(struct admin_request *r)
{
	char allow[64];

	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Allow",
	                  admin_allow_header(r->ep, allow, sizeof(allow)));
	admin_reply_text(r, 405, "method not allowed");
}

/* ---- auth ---- */

static bool token_ok(struct evhttp_request *req)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	const char *tok = A.cfg->admin_token;

	if (!h || !tok || !*tok || strncasecmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	while (*h == ' ' || *h == '\t')
		h++;
	size_t len = strlen(h);
	while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
		len--;
	return const_time_eq(h, len, tok, strlen(tok));
}

/* ---- parameters: query string first, then a form or JSON body ---- */

static void body_load(struct admin_request *r)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
	size_t len = evbuffer_get_length(in);

	if (len == 0 || len > MAX_BODY_SIZE)
		return;
	const char *text = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
	if (!text)
		return;
	const char *ct =
	        evhttp_find_header(evhttp_request_get_input_headers(r->req), "Content-Type");
	size_t skip = 0;
	while (skip < len && (text[skip] == ' ' || text[skip] == '\n' || text[skip] == '\r' ||
	                      text[skip] == '\t'))
		skip++;
	if ((ct && strcasestr(ct, "json")) || (skip < len && text[skip] == '{')) {
		r->json = json_loadb(text, len, 0, NULL);
		if (r->json && !json_is_object(r->json)) {
			json_decref(r->json);
			r->json = NULL;
		}
	} else {
		r->form = malloc(len);
		if (r->form) {
			memcpy(r->form, text, len);
			r->form_len = len;
		}
	}
}

/*
 * The value of key, or NULL when absent or empty. A value that cannot be
 * used (a NUL byte, longer than PARAM_MAX) answers 400 and sets *failed.
 */
const char *admin_param(struct admin_request *r, const char *key, char *buf, size_t len,
                        bool *failed)
{
	enum query_get q = QUERY_ABSENT;

	if (r->query)
		q = admin_query_get(r->query, strlen(r->query), key, buf, len);
	if (q == QUERY_ABSENT && r->form)
		q = admin_query_get(r->form, r->form_len, key, buf, len);
	if (q == QUERY_ABSENT && r->json) {
		const char *v = json_string_value(json_object_get(r->json, key));
		if (v) {
			q = strlen(v) < len ? QUERY_FOUND : QUERY_INVALID;
			str_copy(buf, q == QUERY_FOUND ? v : "", len);
		}
	}
	if (q == QUERY_INVALID) {
		char msg[128];
		snprintf(msg, sizeof(msg), "invalid %s", key);
		admin_reply_text(r, 400, msg);
		*failed = true;
		return NULL;
	}
	return q == QUERY_FOUND && buf[0] ? buf : NULL;
}

/* ---- the endpoints ---- */

void admin_log_change(struct admin_request *r, const char *action, const char *account,
                      const char *dest, const char *result)
{
	struct logbuf lb;

	lb_init(&lb, LOG_INFO, "admin");
	lb_str(&lb, "client", r->client);
	lb_str(&lb, "action", action);
	if (account)
		lb_str(&lb, "identifier", account);
	if (dest)
		lb_str(&lb, "destination", dest);
	lb_str(&lb, "result", result);
	lb_emit(&lb);
}

/* identifier -> canonical account, or a 400 already sent. Identifiers are
 * echoed in JSON, so they must be UTF-8. */
bool admin_canonical(struct admin_request *r, const char *ident, char *out, size_t len)
{
	json_t *probe = json_string(ident);
	const char *bad = probe ? account_canonical(&A.cfg->rules, ident, strlen(ident), out, len)
	                        : "not UTF-8";
	char msg[200];

	json_decref(probe);
	if (!bad)
		return true;
	snprintf(msg, sizeof(msg), "invalid identifier: %s", bad);
	admin_reply_text(r, 400, msg);
	return false;
}

static void get_stats(struct admin_request *r)
{
	struct router_stats rs;

	router_stats(A.router, &rs);
	uint64_t total = rs.hits + rs.misses;
	double rate = total ? 100.0 * (double)rs.hits / (double)total : 0.0;
	json_t *j = json_pack("{s:I, s:I, s:f, s:I, s:I}", "cache_hits", (json_int_t)rs.hits,
	                      "cache_misses", (json_int_t)rs.misses, "hit_rate_pct", rate,
	                      "cache_entries", (json_int_t)rs.entries, "active_connections",
	                      (json_int_t)registry_count());
	if (j && !rs.remote)
		json_object_set_new(j, "mappings", json_integer((json_int_t)rs.mappings));
	if (j && fleet_remote()) {
		json_t *f = fleet_status_json();
		json_object_update(j, f);
		json_decref(f);
	}
	admin_reply_json(r, 200, j);
}

static void get_metrics(struct admin_request *r)
{
	struct router_stats rs;
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		admin_reply_text(r, 500, "internal error");
		return;
	}
	router_stats(A.router, &rs);
	/* count this scrape before writing, so it sees itself */
	metrics_admin_request(r->ep, 200);
	metrics_write(b, A.cfg->dest_names, A.cfg->n_dests, &rs, now_ms());
	if (A.router->store)
		store_metrics_write(A.router->store, b);
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(r->req, 200, "OK", b);
	evbuffer_free(b);
}

static void reset_destination(struct admin_request *r)
{
	char dbuf[PARAM_MAX];
	bool failed = false;
	const char *d = admin_param(r, "destination", dbuf, sizeof(dbuf), &failed);
	int di;

	if (failed)
		return;
	if (!d) {
		admin_reply_text(r, 400, "destination required");
	} else if ((di = config_dest_index(A.cfg, d)) < 0) {
		admin_reply_text(r, 404, "unknown destination");
	} else {
		health_reset((size_t)di);
		admin_log_change(r, "destination-reset", NULL, d, "ok");
		admin_reply_text(r, 200, "ok");
	}
}

static void get_mapping(struct admin_request *r, const char *ident)
{
	char account[ACCOUNT_MAX + 1];
	struct route route;
	bool cached = false;

	if (!ident) {
		admin_reply_text(r, 400, "identifier required");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	router_peek(A.router, account, &route, &cached);
	admin_reply_json(r, 200,
	                 json_pack("{s:s, s:s, s:s, s:b, s:b}", "identifier", ident, "normalized",
	                           account, "destination", A.cfg->dests[route.dest].name,
	                           "routed_to_default", route.routed_to_default, "cached", cached));
}

static void put_mapping(struct admin_request *r, const char *ident, const char *dest)
{
	char account[ACCOUNT_MAX + 1], err[512];
	bool existed = false;

	if (!ident || !dest) {
		admin_reply_text(r, 400, "identifier and destination required");
		return;
	}
	int di = config_dest_index(A.cfg, dest);
	if (di < 0) {
		admin_reply_text(r, 400, "unknown destination");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	if (!router_set(A.router, account, di, &existed, err, sizeof(err))) {
		admin_log_change(r, "mapping-put", account, dest, err);
		admin_reply_text(r, 500, "upsert failed");
		return;
	}
	admin_log_change(r, "mapping-put", account, dest, existed ? "updated" : "created");
	admin_reply_text(r, 200, "ok");
}

static void delete_mapping(struct admin_request *r, const char *ident)
{
	char account[ACCOUNT_MAX + 1], err[512];
	bool existed = false;

	if (!ident) {
		admin_reply_text(r, 400, "identifier required");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	if (!router_set(A.router, account, -1, &existed, err, sizeof(err))) {
		admin_log_change(r, "mapping-delete", account, NULL, err);
		admin_reply_text(r, 500, "remove failed");
		return;
	}
	admin_log_change(r, "mapping-delete", account, NULL, existed ? "removed" : "absent");
	admin_reply_text(r, 200, existed ? "removed" : "absent");
}

/* The same requests as below, against a remote store: answered once the
 * store (and, for writes, the fleet) has them. */
static void remote_mappings(struct admin_request *r, unsigned method, const char *ident, char *dbuf,
                            size_t dlen)
{
	char account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *dest = NULL;

	if (method == ADMIN_PUT) {
		dest = admin_param(r, "destination", dbuf, dlen, &failed);
		if (failed)
			return;
		if (!ident || !dest) {
			admin_reply_text(r, 400, "identifier and destination required");
			return;
		}
		if (config_dest_index(A.cfg, dest) < 0) {
			admin_reply_text(r, 400, "unknown destination");
			return;
		}
	} else if (!ident) {
		admin_reply_text(r, 400, "identifier required");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	if (method == ADMIN_GET)
		fleet_get_mapping(r, ident, account);
	else
		fleet_write_mapping(r, account, method == ADMIN_PUT ? dest : NULL);
}

static void mappings(struct admin_request *r, unsigned method)
{
	char ibuf[PARAM_MAX], dbuf[PARAM_MAX];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);

	if (failed)
		return;
	if (fleet_remote()) {
		remote_mappings(r, method, ident, dbuf, sizeof(dbuf));
		return;
	}
	if (method == ADMIN_GET) {
		get_mapping(r, ident);
	} else if (method == ADMIN_PUT) {
		const char *dest = admin_param(r, "destination", dbuf, sizeof(dbuf), &failed);
		if (!failed)
			put_mapping(r, ident, dest);
	} else {
		delete_mapping(r, ident);
	}
}

static void reload_mappings(struct admin_request *r)
{
	char msg[1200];
	bool ok;

	if (A.hooks.reload_mappings) {
		ok = A.hooks.reload_mappings(msg, sizeof(msg));
	} else {
		size_t entries = 0, flushed = 0;
		ok = router_reload(A.router, &entries, &flushed, msg, sizeof(msg));
		if (ok)
			snprintf(msg, sizeof(msg), "%zu entries, %zu cache entries flushed",
			         entries, flushed);
	}
	admin_log_change(r, "mappings-reload", NULL, NULL, msg);
	if (ok)
		admin_reply_text(r, 200, "reloaded");
	else
		admin_reply_text(r, 500, "reload failed");
}

static void invalidate(struct admin_request *r)
{
	char ibuf[PARAM_MAX], account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);

	if (failed || (ident && !admin_canonical(r, ident, account, sizeof(account))))
		return;
	if (bus_enabled(A.hooks.bus)) {
		fleet_invalidate(r, ident ? account : NULL);
		return;
	}
	size_t n = router_invalidate(A.router, ident ? account : NULL);
	char result[64];
	snprintf(result, sizeof(result), "ok entries=%zu", n);
	admin_log_change(r, "cache-invalidate", ident ? account : "*", NULL, result);
	admin_reply_text(r, 200, "ok");
}

static void sessions(struct admin_request *r)
{
	char ibuf[PARAM_MAX], account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);

	if (failed || (ident && !admin_canonical(r, ident, account, sizeof(account))))
		return;
	admin_reply_json(r, 200,
	                 json_pack("{s:o}", "sessions", registry_list(ident ? account : NULL)));
}

static void kick(struct admin_request *r)
{
	char ibuf[PARAM_MAX], dbuf[PARAM_MAX], account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);
	const char *dest =
	        failed ? NULL : admin_param(r, "destination", dbuf, sizeof(dbuf), &failed);

	if (failed)
		return;
	if (!ident) {
		admin_reply_text(r, 400, "identifier required");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	if (dest && config_dest_index(A.cfg, dest) < 0) {
		admin_reply_text(r, 400, "unknown destination");
		return;
	}
	/* graceful=1 is accepted and changes nothing: sessions still logging
	 * in always get the protocol's goodbye, relayed ones are closed
	 * without one, because a goodbye written into a relayed stream could
	 * land inside a response. With a shared store every node kicks, and
	 * the count is the fleet's. */
	fleet_kick(r, account, dest);
}

/* seconds as the peer reads them: a non-negative decimal integer */
static bool parse_seconds(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static void delay(struct admin_request *r)
{
	char ibuf[PARAM_MAX], sbuf[PARAM_MAX], account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);
	const char *secs = failed ? NULL : admin_param(r, "seconds", sbuf, sizeof(sbuf), &failed);
	uint64_t seconds;

	if (failed)
		return;
	if (!ident || !secs) {
		admin_reply_text(r, 400, "identifier and seconds required");
		return;
	}
	if (!parse_seconds(secs, &seconds)) {
		admin_reply_text(r, 400, "invalid seconds");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	if (bus_enabled(A.hooks.bus)) {
		fleet_delay(r, account, seconds, secs);
		return;
	}
	if (!holds_set(account, seconds, now_ms())) {
		admin_log_change(r, "delay", account, NULL, "table full");
		admin_reply_text(r, 500, "too many holds");
		return;
	}
	admin_log_change(r, "delay", account, NULL, seconds ? secs : "lifted");
	admin_reply_text(r, 200, "ok");
}

static void move(struct admin_request *r)
{
	char ibuf[PARAM_MAX], dbuf[PARAM_MAX], account[ACCOUNT_MAX + 1];
	bool failed = false;
	const char *ident = admin_param(r, "identifier", ibuf, sizeof(ibuf), &failed);
	const char *dest =
	        failed ? NULL : admin_param(r, "destination", dbuf, sizeof(dbuf), &failed);

	if (failed)
		return;
	if (!ident || !dest) {
		admin_reply_text(r, 400, "identifier and destination required");
		return;
	}
	if (config_dest_index(A.cfg, dest) < 0) {
		admin_reply_text(r, 400, "unknown destination");
		return;
	}
	if (!admin_canonical(r, ident, account, sizeof(account)))
		return;
	fleet_move(r, ident, account, dest);
}

static void reload_config(struct admin_request *r)
{
	char msg[1200], text[1300];

	if (!A.hooks.reload_config) {
		admin_reply_text(r, 503, "config reload not available");
		return;
	}
	bool ok = A.hooks.reload_config(msg, sizeof(msg));
	admin_log_change(r, "config-reload", NULL, NULL, ok ? "ok" : msg);
	if (ok) {
		admin_reply_json(r, 200, json_pack("{s:b, s:s}", "reloaded", 1, "note", msg));
	} else {
		snprintf(text, sizeof(text), "reload failed: %s", msg);
		admin_reply_text(r, 400, text);
	}
}

static void dispatch(struct admin_request *r, unsigned method)
{
	switch (r->ep) {
	case ADMIN_STATS:
		get_stats(r);
		break;
	case ADMIN_METRICS:
		get_metrics(r);
		break;
	case ADMIN_DESTINATIONS:
		admin_reply_json(
		        r, 200,
		        json_pack("{s:o}", "destinations",
		                  health_json(A.cfg->dest_names, A.cfg->n_dests, now_ms())));
		break;
	case ADMIN_DESTINATIONS_RESET:
		reset_destination(r);
		break;
	case ADMIN_MAPPINGS:
		mappings(r, method);
		break;
	case ADMIN_MAPPINGS_RELOAD:
		reload_mappings(r);
		break;
	case ADMIN_CACHE_INVALIDATE:
		invalidate(r);
		break;
	case ADMIN_SESSIONS:
		sessions(r);
		break;
	case ADMIN_CONNECTIONS_KICK:
		kick(r);
		break;
	case ADMIN_CONNECTIONS_DELAY:
		delay(r);
		break;
	case ADMIN_CONFIG_RELOAD:
		reload_config(r);
		break;
	case ADMIN_ACCOUNTS_MOVE:
		move(r);
		break;
	case ADMIN_HEALTHZ:
	case ADMIN_UNKNOWN:
	case ADMIN_ENDPOINTS:
		admin_reply_text(r, 404, "not found");
		break;
	}
}

static unsigned method_bit(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET:
		return ADMIN_GET;
	case EVHTTP_REQ_POST:
		return ADMIN_POST;
	case EVHTTP_REQ_PUT:
		return ADMIN_PUT;
	case EVHTTP_REQ_DELETE:
		return ADMIN_DELETE;
	default:
		return ADMIN_OTHER;
	}
}

static void handle(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	unsigned method = method_bit(evhttp_request_get_command(req));
	uint64_t now = now_ms();
	char *peer = NULL;
	ev_uint16_t port = 0;
	struct admin_request r = {.req = req};

	/* evhttp falls back to a plain socket when the TLS bufferevent could
	 * not be made (out of memory): never serve the API in the clear */
	if (!conn || !bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(conn))) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		evhttp_send_error(req, 400, "TLS required");
		return;
	}
	evhttp_connection_get_peer(conn, &peer, &port);
	str_copy(r.client, peer ? peer : "?", sizeof(r.client));
	r.ep = admin_route(uri ? evhttp_uri_get_path(uri) : NULL);
	r.query = uri ? evhttp_uri_get_query(uri) : NULL;

	if (admin_lockout_is_locked(&A.lockout, r.client, now)) {
		admin_reply_text(&r, 429, "locked out");
		return;
	}
	if (!admin_needs_token(r.ep)) {
		if (method & admin_endpoint_methods(r.ep))
			admin_reply_text(&r, 200, "ok");
		else
			method_not_allowed(&r);
		return;
	}
	if (!token_ok(req)) {
		if (admin_lockout_failure(&A.lockout, r.client, now))
			log_msg(LOG_WARN, "admin-lockout", "client=%s duration_ms=%llu", r.client,
			        (unsigned long long)A.cfg->admin_lockout_duration_ms);
		log_msg(LOG_WARN, "admin-unauthorized", "client=%s endpoint=%s", r.client,
		        admin_endpoint_name(r.ep));
		admin_reply_text(&r, 401, "unauthorized");
		return;
	}
	admin_lockout_success(&A.lockout, r.client);

	if (r.ep == ADMIN_UNKNOWN) {
		admin_reply_text(&r, 404, "not found");
		return;
	}
	if (!(method & admin_endpoint_methods(r.ep))) {
		method_not_allowed(&r);
		return;
	}
	body_load(&r);
	dispatch(&r, method);
	free(r.form);
	json_decref(r.json);
}

/* ---- start / stop ---- */

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(A.ctx);

	if (!ssl)
		return NULL; /* refused in handle(): see the TLS check there */
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		SSL_free(ssl);
	return bev;
}

static bool load_own_ctx(const struct config *cfg, char *err, size_t errlen)
{
	A.ctx = SSL_CTX_new(TLS_server_method());
	A.own_ctx = true;
	if (A.ctx && SSL_CTX_use_certificate_chain_file(A.ctx, cfg->admin_cert) == 1 &&
	    SSL_CTX_use_PrivateKey_file(A.ctx, cfg->admin_key, SSL_FILETYPE_PEM) == 1 &&
	    SSL_CTX_check_private_key(A.ctx) == 1) {
		SSL_CTX_set_min_proto_version(A.ctx, TLS1_2_VERSION);
		return true;
	}
	char ssl_err[256] = "";
	ERR_error_string_n(ERR_get_error(), ssl_err, sizeof(ssl_err));
	snprintf(err, errlen, "admin.cert/admin.key: cannot use %s / %s: %s", cfg->admin_cert,
	         cfg->admin_key, ssl_err);
	ERR_clear_error();
	return false;
}

/* ---- hand-over (docs/upgrade.md) ---- */

static int inherited_fd = -1;

void admin_inherit_listener(int fd)
{
	if (inherited_fd >= 0)
		close(inherited_fd);
	inherited_fd = fd;
}

/* The inherited socket if it listens on addr (it is ours from here), else
 * -1 (and it is closed: the configuration moved the API elsewhere). */
static int take_inherited(const struct sockaddr_storage *addr)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd = inherited_fd;

	inherited_fd = -1;
	if (fd < 0)
		return -1;
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == addr->ss_family &&
	    ((ss.ss_family == AF_INET &&
	      memcmp(&((struct sockaddr_in *)&ss)->sin_addr,
	             &((const struct sockaddr_in *)addr)->sin_addr, 4) == 0 &&
	      ((struct sockaddr_in *)&ss)->sin_port ==
	              ((const struct sockaddr_in *)addr)->sin_port) ||
	     (ss.ss_family == AF_INET6 &&
	      memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr,
	             &((const struct sockaddr_in6 *)addr)->sin6_addr, 16) == 0 &&
	      ((struct sockaddr_in6 *)&ss)->sin6_port ==
	              ((const struct sockaddr_in6 *)addr)->sin6_port))) {
		A_inherited_used = true;
		return fd;
	}
	close(fd);
	return -1;
}

bool admin_inherited_used(void)
{
	return A_inherited_used;
}

int admin_listen_fd(void)
{
	return A.listener ? evhttp_bound_socket_get_fd(A.listener) : -1;
}

bool admin_start(struct event_base *base, const struct config *cfg, struct router *router,
                 SSL_CTX *tls, const struct admin_hooks *hooks, char *err, size_t errlen)
{
	int one = 1;

	admin_stop();
	memset(&A, 0, sizeof(A));
	A.cfg = cfg;
	A.router = router;
	if (hooks)
		A.hooks = *hooks;
	if (!cfg->admin_token || strlen(cfg->admin_token) < cfg->admin_min_token_len) {
		snprintf(err, errlen, "admin: no bearer token of at least %u characters",
		         cfg->admin_min_token_len);
		return false;
	}
	if (cfg->admin_cert) {
		if (!load_own_ctx(cfg, err, errlen)) {
			admin_stop();
			return false;
		}
	} else {
		A.ctx = tls;
	}
	if (!A.ctx) {
		snprintf(err, errlen, "no TLS certificate for the admin API");
		return false;
	}
	/* after an upgrade, the predecessor's socket if it is on the same address */
	int fd = take_inherited(&cfg->admin_bind.addr);
	if (fd >= 0)
		goto listening;
	fd = socket(cfg->admin_bind.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "admin.bind: socket: %s", strerror(errno));
		admin_stop();
		return false;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cfg->admin_bind.addr, cfg->admin_bind.len) < 0 ||
	    listen(fd, 64) < 0) {
		snprintf(err, errlen, "admin.bind %s: %s", cfg->admin_bind.text, strerror(errno));
		close(fd);
		admin_stop();
		return false;
	}
listening:
	A.http = evhttp_new(base);
	if (!A.http || !(A.listener = evhttp_accept_socket_with_handle(A.http, fd))) {
		snprintf(err, errlen, "admin: evhttp setup failed");
		close(fd);
		admin_stop();
		return false;
	}
	admin_lockout_init(&A.lockout, cfg->admin_lockout_threshold, cfg->admin_lockout_duration_ms,
	                   LOCKOUT_SLOTS);
	fleet_init(cfg, router, A.hooks.bus);
	evhttp_set_bevcb(A.http, make_bev, NULL);
	evhttp_set_max_headers_size(A.http, MAX_HEADERS_SIZE);
	evhttp_set_max_body_size(A.http, MAX_BODY_SIZE);
	evhttp_set_timeout(A.http, REQUEST_TIMEOUT_S);
	/* every method evhttp can parse reaches handle(), which answers a
	 * wrong one with 401/405 like the peer, not evhttp's 501 */
	evhttp_set_allowed_methods(A.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                           EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                           EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(A.http, handle, NULL);
	log_msg(LOG_INFO, "admin-listen", "addr=%s tls=implicit", cfg->admin_bind.text);
	return true;
}

void admin_stop(void)
{
	fleet_stop();
	if (A.http) {
		evhttp_free(A.http);
		A.http = NULL;
	}
	A.listener = NULL;
	if (A.own_ctx && A.ctx) {
		SSL_CTX_free(A.ctx);
		A.ctx = NULL;
		A.own_ctx = false;
	}
	admin_lockout_free(&A.lockout);
}
