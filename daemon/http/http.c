/*
 * HTTP/1.1 routing proxy: JMAP, WebDAV, the web admin and OAuth of the
 * servers behind us, on one listener (protocol = "http").
 *
 * A protocol module on the session core, like IMAP, except that a client
 * connection carries many requests and every request is routed on its
 * own, like a login:
 *
 *   R_HEAD      read and parse the request head (strict, http_parse.h)
 *   R_PEEK      the route reads the account from the body: wait for up to
 *               body_extract_cap bytes of it (answering Expect: 100-continue
 *               ourselves first)
 *   R_ROUTING   pinned and fallback routes connect their destination
 *               (session_connect_dest), accounts go through session_login:
 *               canonical form, holds, cache, store
 *   R_FORWARD   the head (hop-by-hop fields removed, Forwarded added) goes
 *               to the backend, then the body as the framing says, while
 *               the response is read, checked and passed on
 *   then R_HEAD again on the same connection, or the end, or after a
 *   101 Switching Protocols the pair goes to the data path (relay.h).
 *
 * Bodies with a Content-Length (and the data inside large chunks, and
 * bodies that end with the connection) move with xfer.h: spliced in the
 * kernel when both legs allow it. Small bodies move through the legs'
 * buffers: a JMAP request is smaller than the syscalls a pipe would cost.
 *
 * The backend leg stays open after a response (ops->keeps_backend): the
 * next request routed to the same destination reuses it; one routed
 * elsewhere closes it. It serves this client connection only: it was
 * announced (PROXY header) with this client's address.
 *
 * The session core delivers the legs' events to its own callbacks; while
 * the client is ours (from the greeting on) and the backend is ours (from
 * backend_ready on), we interpose our callbacks and hand back to the
 * core's what we do not handle (TLS handshakes, the goodbye flush).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "http_parse.h"
#include "http_proxy.h"
#include "http_route.h"
#include "log.h"
#include "mapping.h"
#include "metrics.h"
#include "relay.h"
#include "server.h"
#include "session.h"
#include "util.h"
#include "xfer.h"

/* Below this many body bytes still to come, a body moves through the
 * legs' buffers: a pipe costs a few syscalls of its own. */
#define XFER_MIN (64 * 1024)
/* Head room in the legs' input buffers beyond a head and a peeked body. */
#define IN_SLACK (64 * 1024)
/* Heads up to this size are built on the stack. */
#define HEAD_STACK 8192

enum req_state {
	R_HEAD,
	R_PEEK,
	R_ROUTING,
	R_FORWARD,
	R_UPGRADED,
};

/* One direction of a message body. */
struct body {
	enum http_framing framing;
	uint64_t left; /* HTTP_BODY_LENGTH: bytes still to forward */
	struct http_chunked ch;
	bool done;
	uint64_t moved;   /* body bytes forwarded */
	const char *path; /* the data path that moved the most, for the log */
};

enum timer_kind {
	T_NONE,
	T_KEEPALIVE, /* keepalive_timeout: between requests, and the next head */
	T_BODY,      /* relay_idle: a body that stopped moving */
	T_STREAM,    /* bridge_idle: an event stream or a body until close */
};

struct http {
	struct session *s;
	const struct http_router *router;
	conn_cb core_client_cb, core_backend_cb;
	bool trust_forwarded;
	char client_ip[INET6_ADDRSTRLEN];
	unsigned requests; /* on this connection */

	struct event *timer;
	enum timer_kind timer_kind;
	uint64_t timer_seen;   /* bytes moved at the last tick */
	struct event *next_ev; /* a pipelined request waits in client.in */

	/* the request */
	enum req_state rs;
	bool head_started; /* bytes of a head arrived */
	size_t scanned;    /* client.in bytes already searched for a head's end */
	uint8_t *head_buf; /* our copy: h->req points into it */
	size_t head_cap, head_used;
	struct http_head req;
	int route_idx;
	bool routed; /* route holds this request's evaluation */
	struct http_route_result route;
	char req_account[ACCOUNT_MAX + 1]; /* the account this request was routed by */
	uint64_t peek_want;
	bool peek_chunked; /* R_PEEK: the first line of a chunked body */
	bool answered_continue;
	bool replayable; /* no body: may be sent again on a fresh connection */
	bool retried;
	bool backend_reused;
	uint64_t started_us;
	bool log_pending;         /* a request head was parsed and its line is not out yet */
	const char *dest_name;    /* where this request went, once known */
	uint64_t backend_idle_ms; /* when the kept backend leg went idle */

	struct body up, down;
	bool up_stopped; /* the backend answered before the whole request: no more of it */
	size_t head_up, head_down; /* head bytes forwarded each way */
	struct xfer *xfer;
	bool xfer_up;            /* the running transfer's direction */
	bool xfer_pending_drain; /* waiting for the destination leg to drain first */
	bool xfer_pending_up;

	/* the response */
	struct http_head resp;
	bool resp_started; /* its head went to the client */
	unsigned status;
	bool keep_alive; /* the client connection survives this response */
	bool backend_keep;
	bool event_stream;
	bool client_eof;
};

static void client_readable(struct session *s);
static void pump_up(struct session *s);
static void pump_down(struct session *s);
static void finish_request(struct session *s);
static void try_head(struct session *s);
static void backend_readable(struct session *s);

static struct http *st(struct session *s)
{
	return s->proto;
}

static const struct config *cfg_of(struct session *s)
{
	return s->cfg;
}

/* ---- timers ---- */

static uint64_t progress_of(const struct http *h)
{
	uint64_t n = h->up.moved + h->down.moved + h->head_up + h->head_down;
	if (h->xfer)
		n += xfer_moved(h->xfer);
	if (h->rs == R_PEEK) /* the body we wait for is arriving */
		n += evbuffer_get_length(h->s->client->in);
	return n;
}

static void timer_set(struct http *h, enum timer_kind kind)
{
	const struct config *cfg = h->s->cfg;
	uint64_t ms = kind == T_KEEPALIVE ? cfg->http_keepalive_timeout_ms
	              : kind == T_BODY    ? cfg->http_relay_idle_ms
	                                  : cfg->bridge_idle_ms;

	h->timer_kind = kind;
	if (kind == T_NONE || ms == 0) {
		evtimer_del(h->timer);
		return;
	}
	h->timer_seen = progress_of(h);
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(h->timer, &tv);
}

/* Queue bytes and send what the socket takes now. Not conn_write(): it
 * arms the write event first, which costs two epoll_ctl calls per write
 * when the socket takes everything at once (it nearly always does). */
static void send_to(struct conn *c, const void *data, size_t len)
{
	if (c->fd < 0 || c->failed)
		return;
	evbuffer_add(c->out, data, len);
	conn_flush(c);
}

/* ---- answers of our own ---- */

static bool is_head_request(const struct http *h)
{
	return h->req.method.len == 4 && memcmp(h->req.method.p, "HEAD", 4) == 0;
}

static void log_request(struct session *s, const char *outcome);

/* Answer status ourselves; keep_alive only where the request was read
 * whole and nothing of it is still on its way. */
static void answer(struct session *s, unsigned status, bool keep_alive, const char *why, int dest)
{
	struct http *h = st(s);
	char buf[512];
	size_t n = http_error_response(status, keep_alive, h->rs != R_HEAD && is_head_request(h),
	                               buf, sizeof(buf));

	h->status = status;
	h->resp_started = true;
	h->head_down += n;
	send_to(s->client, buf, n);
	log_request(s, why);
	metrics_http_request(dest, status);
}

/* Every close of ours goes through here: a transfer still running holds
 * events on the legs' sockets, which the close releases. */
static void close_session(struct session *s, const char *why)
{
	struct http *h = st(s);

	if (h->xfer) {
		xfer_cancel(h->xfer);
		h->xfer = NULL;
	}
	session_close(s, why);
}

/* A request the proxy cannot frame or route: answer, then close (the
 * bytes after it cannot be trusted to start a request). */
static void refuse(struct session *s, unsigned status, const char *why)
{
	struct http *h = st(s);

	answer(s, status, false, why, h->dest_name ? s->dest : -1);
	close_session(s, why);
}

/* ---- the log line of one request ---- */

static const char *route_kind_name(const struct http *h)
{
	if (!h->routed)
		return NULL;
	switch (h->route.kind) {
	case HTTP_ROUTE_PINNED:
		return "pinned";
	case HTTP_ROUTE_ACCOUNT:
		return h->req_account[0] ? "account" : "fallback";
	case HTTP_ROUTE_FALLBACK:
		return "fallback";
	}
	return NULL;
}

/* method, path without the query (which may carry tokens), account,
 * destination, status, bytes, duration: never a header value */
static void log_request(struct session *s, const char *outcome)
{
	struct http *h = st(s);
	struct logbuf lb;

	if (!h->log_pending)
		return;
	h->log_pending = false;
	s->bytes_up += h->head_up + h->up.moved;
	s->bytes_down += h->head_down + h->down.moved;
	if (h->up.path)
		s->path_up = h->up.path;
	if (h->down.path)
		s->path_down = h->down.path;
	if (!log_enabled(LOG_INFO))
		return;
	lb_init(&lb, LOG_INFO, "http-request");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "client", s->peer_str);
	lb_mem(&lb, "method", h->req.method.p, h->req.method.len);
	lb_mem(&lb, "path", h->req.path.p, h->req.path.len);
	lb_str(&lb, "account", h->req_account[0] ? h->req_account : NULL);
	lb_str(&lb, "route", route_kind_name(h));
	if (h->routed && h->route.kind == HTTP_ROUTE_ACCOUNT)
		lb_str(&lb, "source", h->route.source);
	lb_str(&lb, "destination", h->dest_name);
	lb_uint(&lb, "status", h->status);
	lb_uint(&lb, "bytes_up", h->head_up + h->up.moved);
	lb_uint(&lb, "bytes_down", h->head_down + h->down.moved);
	if (h->up.path)
		lb_str(&lb, "path_up", h->up.path);
	if (h->down.path)
		lb_str(&lb, "path_down", h->down.path);
	if (h->backend_reused)
		lb_str(&lb, "reused", "yes");
	lb_uint(&lb, "ms", (now_us() - h->started_us) / 1000);
	if (outcome)
		lb_str(&lb, "end", outcome);
	lb_emit(&lb);
}

/* A request refused before (or instead of) its log line. */
static void log_refused(struct session *s, unsigned status, const char *why)
{
	struct logbuf lb;

	lb_init(&lb, LOG_INFO, "http-refused");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "client", s->peer_str);
	lb_uint(&lb, "status", status);
	lb_str(&lb, "why", why ? why : "?");
	lb_emit(&lb);
}

/* ---- interposed leg callbacks ---- */

static void client_drained(struct session *s);
static void backend_drained(struct session *s);
static void backend_gone(struct session *s, const char *why);

static void on_client(struct conn *c, enum conn_event ev, void *arg)
{
	struct session *s = arg;
	struct http *h = st(s);

	if (s->ending)
		return;
	if (s->closing || s->phase == PHASE_RELAY || h->rs == R_UPGRADED) {
		h->core_client_cb(c, ev, arg);
		return;
	}
	switch (ev) {
	case CONN_EV_READ:
		if (c->eof)
			h->client_eof = true;
		client_readable(s);
		return;
	case CONN_EV_EOF:
		h->client_eof = true;
		client_readable(s);
		return;
	case CONN_EV_DRAINED:
		client_drained(s);
		return;
	case CONN_EV_ERROR:
		if (h->xfer) {
			xfer_cancel(h->xfer);
			h->xfer = NULL;
		}
		log_request(s, "client error");
		h->core_client_cb(c, ev, arg);
		return;
	default:
		h->core_client_cb(c, ev, arg);
		return;
	}
}

static void on_backend(struct conn *c, enum conn_event ev, void *arg)
{
	struct session *s = arg;
	struct http *h = st(s);

	if (s->ending || s->closing)
		return;
	switch (ev) {
	case CONN_EV_READ:
		backend_readable(s);
		return;
	case CONN_EV_EOF:
		backend_gone(s, "backend closed the connection");
		return;
	case CONN_EV_ERROR:
		backend_gone(s, c->err);
		return;
	case CONN_EV_DRAINED:
		backend_drained(s);
		return;
	default:
		h->core_backend_cb(c, ev, arg);
		return;
	}
}

/* ---- the greeting: nothing is said, the client speaks first ---- */

static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_next(evutil_socket_t fd, short what, void *arg);

static void http_greet(struct session *s)
{
	struct http *h = calloc(1, sizeof(*h));
	const struct config *cfg = cfg_of(s);

	if (!h) {
		session_close(s, "out of memory");
		return;
	}
	s->proto = h;
	h->s = s;
	h->router = s->w->srv->http;
	h->route_idx = -1;
	h->trust_forwarded = s->ls->forwarded && strcmp(s->ls->forwarded, "trust") == 0;
	h->timer = evtimer_new(s->w->base, on_timer, s);
	h->next_ev = event_new(s->w->base, -1, 0, on_next, s);
	h->core_client_cb = s->client->cb;
	s->client->cb = on_client;
	s->client->in_max = cfg->http_max_head_size + cfg->http_body_extract_cap + IN_SLACK;
	if (s->peer.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&s->peer)->sin6_addr, h->client_ip,
		          sizeof(h->client_ip));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&s->peer)->sin_addr, h->client_ip,
		          sizeof(h->client_ip));
	if (!h->timer || !h->next_ev || !h->router)
		session_close(s, h->router ? "out of memory" : "no HTTP router");
}

/* ---- a new request ---- */

static void reset_request(struct http *h)
{
	if (h->head_buf)
		OPENSSL_cleanse(h->head_buf, h->head_used); /* Authorization */
	h->head_used = 0;
	h->rs = R_HEAD;
	h->head_started = false;
	h->scanned = 0;
	/* req, resp and route are written whole by the parsers before any use
	 * (some 7 KB: not cleared for every request) */
	h->route_idx = -1;
	h->routed = false;
	h->req_account[0] = '\0';
	h->peek_want = 0;
	h->peek_chunked = false;
	h->answered_continue = false;
	h->replayable = false;
	h->retried = false;
	h->backend_reused = false;
	h->log_pending = false;
	h->dest_name = NULL;
	memset(&h->up, 0, sizeof(h->up));
	memset(&h->down, 0, sizeof(h->down));
	h->up_stopped = false;
	h->head_up = h->head_down = 0;
	h->xfer_pending_drain = false;
	h->resp_started = false;
	h->status = 0;
	h->keep_alive = false;
	h->backend_keep = false;
	h->event_stream = false;
}

static void body_init(struct body *b, const struct http_head *head)
{
	memset(b, 0, sizeof(*b));
	b->framing = head->framing;
	if (head->framing == HTTP_BODY_LENGTH)
		b->left = head->content_length;
	if (head->framing == HTTP_BODY_CHUNKED)
		http_chunked_init(&b->ch, 16 * 1024);
	b->done = head->framing == HTTP_BODY_NONE ||
	          (head->framing == HTTP_BODY_LENGTH && head->content_length == 0);
}

static bool idempotent(struct http_str m)
{
	static const char *const methods[] = {"GET", "HEAD",   "OPTIONS", "TRACE",
	                                      "PUT", "DELETE", NULL};
	for (size_t i = 0; methods[i]; i++) {
		if (m.len == strlen(methods[i]) && memcmp(m.p, methods[i], m.len) == 0)
			return true;
	}
	return false;
}

static void route_request(struct session *s);

static void start_request(struct session *s)
{
	struct http *h = st(s);
	const struct config *cfg = cfg_of(s);

	h->requests++;
	h->started_us = now_us();
	h->log_pending = true;
	timer_set(h, T_NONE);
	/* from the first head on, the connection's own timers apply */
	session_preauth_done(s);
	body_init(&h->up, &h->req);
	/* RFC 9110 9.2.2: a proxy MUST NOT retry a non-idempotent request;
	 * and a body we have not kept cannot be sent again */
	h->replayable = h->up.done && h->req.framing == HTTP_BODY_NONE &&
	                !h->req.upgrade_websocket && idempotent(h->req.method);
	h->route_idx = http_route_match(h->router, h->req.path);
	if (h->route_idx < 0) {
		bool ka = h->up.done && h->req.keep_alive && !h->client_eof;
		answer(s, 404, ka, "no route", -1);
		if (!ka) {
			close_session(s, "no route");
			return;
		}
		reset_request(h);
		session_publish(s, "keepalive");
		timer_set(h, T_KEEPALIVE);
		if (evbuffer_get_length(s->client->in))
			event_active(h->next_ev, EV_TIMEOUT, 0);
		return;
	}
	bool peek_body = http_route_needs_body(h->router, h->route_idx) &&
	                 h->req.framing == HTTP_BODY_LENGTH && h->req.content_length > 0;
	if (peek_body || h->req.framing == HTTP_BODY_CHUNKED) {
		h->rs = R_PEEK;
		h->peek_chunked = !peek_body;
		h->peek_want = !peek_body ? 0
		               : h->req.content_length < cfg->http_body_extract_cap
		                       ? h->req.content_length
		                       : cfg->http_body_extract_cap;
		if (h->req.expect_continue && h->req.version_minor >= 1) {
			/* the client waits for this before it sends the body we
			 * must read to route (RFC 9110 10.1.1) */
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			send_to(s->client, cont, sizeof(cont) - 1);
			h->answered_continue = true;
		}
		timer_set(h, T_BODY);
		client_readable(s);
		return;
	}
	route_request(s);
}

/* Where a request whose rule extracts no usable account goes: the rule's
 * fallback, "default" or none meaning the default destination. */
static int fallback_dest(struct session *s, int idx)
{
	const struct cfg_http_route *r = &s->cfg->http_routes[idx];

	if (r->fallback && strcmp(r->fallback, "default") != 0)
		return config_dest_index(s->cfg, r->fallback);
	return s->cfg->default_dest;
}

/* A kept backend leg idle for a while may have been closed by the backend
 * (its keep-alive timeout) with the FIN not read yet when this request's
 * event ran first: ask the socket before reusing it. A leg used moments ago
 * is taken as it is; the retry in backend_gone covers a request that
 * met a close anyway, where retrying is allowed. */
#define BACKEND_PEEK_AFTER_MS 1000

static void check_kept_backend(struct session *s)
{
	struct http *h = st(s);
	char byte;

	if (!s->backend_open || s->backend->fd < 0 ||
	    now_ms() - h->backend_idle_ms < BACKEND_PEEK_AFTER_MS)
		return;
	ssize_t n = recv(s->backend->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	/* closed, reset, or bytes nobody asked for (a close_notify) */
	session_backend_drop(s);
}

static void route_request(struct session *s)
{
	struct http *h = st(s);
	const uint8_t *body = NULL;
	size_t body_len = 0;
	char canon[ACCOUNT_MAX + 1];

	if (h->rs == R_PEEK && !h->peek_chunked) {
		body_len = (size_t)h->peek_want;
		body = evbuffer_pullup(s->client->in, (ev_ssize_t)body_len);
	}
	http_route_eval(h->router, h->route_idx, &h->req, body, body_len, &h->route);
	h->routed = true;
	h->rs = R_ROUTING;
	timer_set(h, T_NONE);
	check_kept_backend(s);
	if (h->route.kind == HTTP_ROUTE_ACCOUNT) {
		/* an identifier that cannot be an account is no account: the
		 * route's fallback, as when none was found */
		const char *id = h->route.identifier;
		if (!account_canonical(&s->cfg->rules, id, strlen(id), canon, sizeof(canon))) {
			str_copy(h->req_account, canon, sizeof(h->req_account));
			session_login(s, id);
			return;
		}
	}
	int dest = h->route.kind == HTTP_ROUTE_ACCOUNT ? fallback_dest(s, h->route_idx)
	                                               : h->route.dest;
	if (dest < 0) {
		refuse(s, 502, "no destination");
		return;
	}
	session_connect_dest(s, dest,
	                     h->route.kind != HTTP_ROUTE_PINNED && dest == s->cfg->default_dest);
}

/* ---- reading the client ---- */

/* Whether the new bytes can hold the end of a head: parse only then, not
 * on every byte a slow client trickles in (a head of max_head_size bytes
 * would otherwise be parsed that many times). */
static bool head_may_be_complete(struct http *h, struct evbuffer *in, size_t len, size_t max)
{
	if (!h->head_started || len > max)
		return true;
	size_t from = h->scanned > 3 ? h->scanned - 3 : 0;
	struct evbuffer_ptr start;
	if (evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) < 0)
		return true;
	/* a head ends in LF [CR] LF; a bare LF is refused by the parser */
	struct evbuffer_ptr p = evbuffer_search(in, "\n\r\n", 3, &start);
	if (p.pos >= 0)
		return true;
	p = evbuffer_search(in, "\n\n", 2, &start);
	return p.pos >= 0;
}

static void try_head(struct session *s)
{
	struct http *h = st(s);
	struct evbuffer *in = s->client->in;
	size_t len = evbuffer_get_length(in);
	size_t max = cfg_of(s)->http_max_head_size;
	unsigned status = 400;
	const char *why = NULL;

	if (len == 0) {
		if (h->client_eof)
			close_session(s, "client closed");
		return;
	}
	if (!head_may_be_complete(h, in, len, max)) {
		h->scanned = len;
		if (h->client_eof)
			close_session(s, "client closed");
		return;
	}
	h->head_started = true;
	/* parse in a buffer of our own: the parsed fields point into it for
	 * the whole request, while the connection's buffer moves on */
	size_t look = len < max + 1 ? len : max + 1;
	if (look > h->head_cap) {
		size_t cap = look < 2048 ? 2048 : look;
		uint8_t *nb = malloc(cap);
		if (!nb) {
			close_session(s, "out of memory");
			return;
		}
		if (h->head_buf) {
			OPENSSL_cleanse(h->head_buf, h->head_cap);
			free(h->head_buf);
		}
		h->head_buf = nb;
		h->head_cap = cap;
	}
	evbuffer_copyout(in, h->head_buf, look);
	if (look > h->head_used)
		h->head_used = look;
	switch (http_parse_request(h->head_buf, look, max, &h->req, &status, &why)) {
	case HTTP_PARSE_NEED_MORE:
		h->scanned = len;
		if (h->client_eof)
			close_session(s, "client closed");
		return;
	case HTTP_PARSE_ERROR:
		log_refused(s, status, why);
		h->status = status;
		{
			char buf[512];
			size_t n = http_error_response(status, false, false, buf, sizeof(buf));
			send_to(s->client, buf, n);
		}
		metrics_http_request(-1, status);
		close_session(s, "malformed request");
		return;
	case HTTP_PARSE_OK:
		break;
	}
	evbuffer_drain(in, h->req.head_len);
	start_request(s);
}

enum precheck { PRECHECK_WAIT, PRECHECK_OK, PRECHECK_BAD };

/* A chunked request body is checked as far as it has arrived, and at least
 * through its first chunk-size line, before anything reaches a backend:
 * a malformed size (the smuggling payload) is answered 400 with no backend
 * involved. Later errors still end the request, after the bytes before
 * them were forwarded: never a byte past the error. */
static enum precheck chunked_precheck(struct http *h, struct evbuffer *in, const char **why)
{
	struct http_chunked tmp = h->up.ch;
	size_t len = evbuffer_get_length(in);
	struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);

	if (lf.pos < 0 && len < HTTP_CHUNK_LINE_MAX + 2)
		return PRECHECK_WAIT;
	struct evbuffer_ptr at;
	evbuffer_ptr_set(in, &at, 0, EVBUFFER_PTR_SET);
	for (;;) {
		struct evbuffer_iovec v[4];
		int nv = evbuffer_peek(in, -1, &at, v, 4);
		if (nv <= 0)
			return PRECHECK_OK;
		size_t fed = 0;
		for (int i = 0; i < nv && i < 4; i++) {
			size_t used = 0;
			switch (http_chunked_feed(&tmp, v[i].iov_base, v[i].iov_len, &used, why)) {
			case HTTP_CHUNK_MORE:
				fed += used;
				break;
			case HTTP_CHUNK_DONE:
				return PRECHECK_OK;
			case HTTP_CHUNK_ERROR:
				return PRECHECK_BAD;
			}
		}
		if (fed == 0 || evbuffer_ptr_set(in, &at, fed, EVBUFFER_PTR_ADD) < 0)
			return PRECHECK_OK;
	}
}

static void client_readable(struct session *s)
{
	struct http *h = st(s);

	switch (h->rs) {
	case R_HEAD:
		try_head(s);
		return;
	case R_PEEK:
		if (h->peek_chunked) {
			const char *why = NULL;
			switch (chunked_precheck(h, s->client->in, &why)) {
			case PRECHECK_WAIT:
				if (h->client_eof)
					close_session(s, "client closed");
				return;
			case PRECHECK_BAD:
				log_refused(s, 400, why ? why : "bad chunked body");
				refuse(s, 400, "bad chunked body");
				return;
			case PRECHECK_OK:
				route_request(s);
				return;
			}
			return;
		}
		if (evbuffer_get_length(s->client->in) >= h->peek_want) {
			route_request(s);
			return;
		}
		if (h->client_eof)
			close_session(s, "client closed");
		return;
	case R_ROUTING:
		/* the bytes wait in client.in (bounded by in_max) */
		return;
	case R_FORWARD:
		if (!h->up.done && !h->up_stopped && !h->xfer)
			pump_up(s);
		return;
	case R_UPGRADED:
		return;
	}
}

static void on_next(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (!s->ending && !s->closing && st(s)->rs == R_HEAD)
		try_head(s);
}

/* ---- bodies ---- */

static void xfer_done(void *arg, const struct xfer_result *r);

/* Start moving n bytes of a body with xfer, once the destination leg has
 * sent everything queued before (an SSL_write the leg must retry with the
 * same bytes cannot be taken over). */
static bool start_xfer(struct session *s, bool up, uint64_t n)
{
	struct http *h = st(s);
	struct conn *src = up ? s->client : s->backend;
	struct conn *dst = up ? s->backend : s->client;
	const struct config *cfg = cfg_of(s);

	if (evbuffer_get_length(dst->out) > 0) {
		h->xfer_pending_drain = true;
		h->xfer_pending_up = up;
		dst->notify_drained = true;
		conn_read_stop(src);
		return true;
	}
	h->xfer_pending_drain = false;
	conn_read_stop(src);
	struct xfer_leg xs = {.fd = src->fd, .ssl = src->ssl};
	struct xfer_leg xd = {.fd = dst->fd, .ssl = dst->ssl};
	uint64_t idle = h->event_stream || (!up && h->down.framing == HTTP_BODY_UNTIL_CLOSE)
	                        ? cfg->bridge_idle_ms
	                        : cfg->http_relay_idle_ms;
	h->xfer_up = up;
	h->xfer = xfer_start(s->w->base, &xs, &xd, NULL, src->in, n, idle,
	                     cfg->data_path != DATA_PATH_USERSPACE, xfer_done, s);
	if (!h->xfer) {
		close_session(s, "out of memory");
		return false;
	}
	struct body *b = up ? &h->up : &h->down;
	b->path = xfer_path(h->xfer);
	timer_set(h, T_NONE);
	return true;
}

/* Move up to `avail` verbatim bytes of a body from src->in to dst->out.
 * Returns how many belong to the body. */
static size_t move_chunked(struct session *s, struct body *b, struct evbuffer *from,
                           struct evbuffer *to, bool *error, const char **why)
{
	size_t total = 0;
	struct evbuffer_iovec v[8];

	*error = false;
	while (!b->done) {
		int nv = evbuffer_peek(from, -1, NULL, v, 8);
		if (nv <= 0)
			break;
		size_t scanned = 0;
		bool stop = false;
		for (int i = 0; i < nv && i < 8 && !stop; i++) {
			size_t used = 0;
			switch (http_chunked_feed(&b->ch, v[i].iov_base, v[i].iov_len, &used,
			                          why)) {
			case HTTP_CHUNK_MORE:
				scanned += used;
				break;
			case HTTP_CHUNK_DONE:
				scanned += used;
				b->done = true;
				stop = true;
				break;
			case HTTP_CHUNK_ERROR:
				*error = true;
				return total;
			}
		}
		if (scanned == 0)
			break;
		evbuffer_remove_buffer(from, to, scanned);
		total += scanned;
		b->moved += scanned;
		/* a big chunk: its data can move in the kernel */
		if (!b->done && http_chunked_data_left(&b->ch) >= XFER_MIN &&
		    evbuffer_get_length(from) < XFER_MIN)
			break;
	}
	return total;
}

/* Request body: client -> backend. */
static void pump_up(struct session *s)
{
	struct http *h = st(s);
	struct evbuffer *in = s->client->in;

	while (!h->up.done && !h->xfer && !h->xfer_pending_drain) {
		size_t avail = evbuffer_get_length(in);
		if (h->up.framing == HTTP_BODY_LENGTH) {
			if (h->up.left > avail && h->up.left - avail >= XFER_MIN) {
				conn_flush(s->backend); /* the head goes first */
				start_xfer(s, true, h->up.left);
				return;
			}
			size_t take = avail < h->up.left ? avail : (size_t)h->up.left;
			if (take == 0)
				break;
			evbuffer_remove_buffer(in, s->backend->out, take);
			h->up.left -= take;
			h->up.moved += take;
			h->up.done = h->up.left == 0;
			if (!h->up.path)
				h->up.path = "userspace";
		} else if (h->up.framing == HTTP_BODY_CHUNKED) {
			bool error;
			const char *why = NULL;
			move_chunked(s, &h->up, in, s->backend->out, &error, &why);
			if (!h->up.path && h->up.moved)
				h->up.path = "userspace";
			if (error) {
				log_refused(s, 400, why ? why : "bad chunk");
				conn_flush(s->backend);
				if (h->resp_started) {
					close_session(s, "bad chunked body");
					return;
				}
				refuse(s, 400, "bad chunked body");
				return;
			}
			uint64_t left = http_chunked_data_left(&h->up.ch);
			if (!h->up.done && left >= XFER_MIN && evbuffer_get_length(in) < XFER_MIN) {
				conn_flush(s->backend);
				start_xfer(s, true, left);
				return;
			}
			if (evbuffer_get_length(in) == 0 || !h->up.done)
				break;
		} else {
			h->up.done = true;
		}
	}
	conn_flush(s->backend);
	if (h->xfer || h->xfer_pending_drain)
		return;
	if (h->up.done) {
		/* the request is out: now the backend owes an answer */
		if (!h->resp_started)
			session_backend_wait(s, true);
		if (h->timer_kind == T_BODY && !h->resp_started)
			timer_set(h, T_NONE);
		return;
	}
	if (h->client_eof) {
		/* the client went away in the middle of its body */
		if (!h->resp_started)
			log_request(s, "client closed mid body");
		close_session(s, "client closed");
		return;
	}
	/* backpressure: a backend that reads slowly slows the client down */
	if (!conn_writable(s->backend)) {
		conn_read_stop(s->client);
		s->backend->notify_drained = true;
	} else {
		conn_read_start(s->client);
	}
	if (h->timer_kind != T_BODY)
		timer_set(h, T_BODY);
}

/* Response body: backend -> client. */
static void pump_down(struct session *s)
{
	struct http *h = st(s);
	struct evbuffer *in = s->backend->in;

	while (!h->down.done && !h->xfer && !h->xfer_pending_drain) {
		size_t avail = evbuffer_get_length(in);
		if (h->down.framing == HTTP_BODY_LENGTH) {
			if (h->down.left > avail && h->down.left - avail >= XFER_MIN) {
				conn_flush(s->client);
				start_xfer(s, false, h->down.left);
				return;
			}
			size_t take = avail < h->down.left ? avail : (size_t)h->down.left;
			if (take == 0)
				break;
			evbuffer_remove_buffer(in, s->client->out, take);
			h->down.left -= take;
			h->down.moved += take;
			h->down.done = h->down.left == 0;
			if (!h->down.path)
				h->down.path = "userspace";
		} else if (h->down.framing == HTTP_BODY_CHUNKED) {
			bool error;
			const char *why = NULL;
			move_chunked(s, &h->down, in, s->client->out, &error, &why);
			if (!h->down.path && h->down.moved)
				h->down.path = "userspace";
			if (error) {
				/* the client has the head already: it sees a
				 * truncated body, never bytes we could not frame */
				struct logbuf lb;
				lb_init(&lb, LOG_WARN, "http-backend-error");
				lb_str(&lb, "id", s->id);
				lb_str(&lb, "destination", s->d ? s->d->name : NULL);
				lb_str(&lb, "error", why ? why : "bad chunk");
				lb_emit(&lb);
				log_request(s, "bad chunked response");
				conn_set_abortive(s->client);
				close_session(s, "bad chunked response");
				return;
			}
			uint64_t left = http_chunked_data_left(&h->down.ch);
			if (!h->down.done && left >= XFER_MIN &&
			    evbuffer_get_length(in) < XFER_MIN) {
				conn_flush(s->client);
				start_xfer(s, false, left);
				return;
			}
			if (evbuffer_get_length(in) == 0 || !h->down.done)
				break;
		} else if (h->down.framing == HTTP_BODY_UNTIL_CLOSE) {
			/* the end is the backend's FIN: hand the rest to xfer */
			conn_flush(s->client);
			start_xfer(s, false, XFER_UNTIL_EOF);
			return;
		} else {
			h->down.done = true;
		}
	}
	conn_flush(s->client);
	if (h->xfer || h->xfer_pending_drain)
		return;
	if (h->down.done) {
		finish_request(s);
		return;
	}
	if (s->backend->eof) {
		backend_gone(s, "backend closed the connection");
		return;
	}
	if (!conn_writable(s->client)) {
		conn_read_stop(s->backend);
		s->client->notify_drained = true;
	} else {
		conn_read_start(s->backend);
	}
	enum timer_kind want = h->event_stream ? T_STREAM : T_BODY;
	if (h->timer_kind != want)
		timer_set(h, want);
}

static void xfer_done(void *arg, const struct xfer_result *r)
{
	struct session *s = arg;
	struct http *h = st(s);
	bool up = h->xfer_up;
	struct body *b = up ? &h->up : &h->down;

	h->xfer = NULL;
	b->moved += r->moved;
	b->path = r->path;
	if (b->framing == HTTP_BODY_LENGTH)
		b->left -= r->moved <= b->left ? r->moved : b->left;
	else if (b->framing == HTTP_BODY_CHUNKED)
		http_chunked_skip(&b->ch, r->moved);
	if (r->end == XFER_DONE) {
		if (b->framing == HTTP_BODY_LENGTH)
			b->done = b->left == 0;
		else if (b->framing == HTTP_BODY_UNTIL_CLOSE)
			b->done = true;
		if (up) {
			conn_read_start(s->client);
			pump_up(s);
		} else {
			if (b->framing == HTTP_BODY_UNTIL_CLOSE) {
				/* the backend closed: so does this connection */
				h->keep_alive = false;
				h->backend_keep = false;
				finish_request(s);
				return;
			}
			conn_read_start(s->backend);
			pump_down(s);
		}
		return;
	}
	/* a transfer that ended early: nothing more can be framed */
	struct logbuf lb;
	lb_init(&lb, LOG_INFO, "http-body-ended");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "direction", up ? "up" : "down");
	lb_str(&lb, "end", xfer_end_name(r->end));
	if (r->detail[0])
		lb_str(&lb, "detail", r->detail);
	lb_uint(&lb, "moved", r->moved);
	lb_emit(&lb);
	if (up && !h->resp_started) {
		if (r->end == XFER_IDLE) {
			refuse(s, 408, "client too slow");
			return;
		}
		if (r->end == XFER_DST_ERROR) {
			session_backend_broken(s, r->detail[0] ? r->detail : "writing the backend");
			return;
		}
	}
	log_request(s, xfer_end_name(r->end));
	close_session(s, up ? "request body ended" : "response body ended");
}

/* ---- the response ---- */

static bool write_response_head(struct session *s, const struct http_head *resp, bool keep_alive)
{
	struct http *h = st(s);
	char small[HEAD_STACK];
	size_t cap = resp->head_len + 256;
	char *out = cap <= sizeof(small) ? small : malloc(cap);

	if (!out)
		return false;
	size_t n = http_response_head_build(resp, keep_alive, out, cap);
	if (n > 0) {
		evbuffer_add(s->client->out, out, n); /* flushed with the body's first bytes */
		h->head_down += n;
	}
	if (out != small)
		free(out);
	return n > 0;
}

static void upgrade(struct session *s);

/* The backend said something we cannot pass on: 502 if the client has
 * seen nothing of the response yet. */
static void backend_garbage(struct session *s, const char *why)
{
	struct http *h = st(s);
	char detail[200];

	snprintf(detail, sizeof(detail), "malformed response: %s", why ? why : "?");
	if (h->xfer) {
		xfer_cancel(h->xfer);
		h->xfer = NULL;
	}
	if (!h->resp_started) {
		h->backend_keep = false;
		session_backend_broken(s, detail);
		return;
	}
	log_request(s, detail);
	close_session(s, "malformed response");
}

static void response_head(struct session *s)
{
	struct http *h = st(s);
	const struct config *cfg = cfg_of(s);
	struct evbuffer *in = s->backend->in;

	while (!h->resp_started) {
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			return;
		size_t max = cfg->http_max_head_size;
		size_t look = len < max + 1 ? len : max + 1;
		const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)look);
		const char *why = NULL;
		switch (http_parse_response(p, look, max, h->req.method, &h->resp, &why)) {
		case HTTP_PARSE_NEED_MORE:
			if (s->backend->eof)
				backend_gone(s, "backend closed the connection");
			return;
		case HTTP_PARSE_ERROR:
			backend_garbage(s, why);
			return;
		case HTTP_PARSE_OK:
			break;
		}
		unsigned status = h->resp.status;
		if (status == 101) {
			if (!h->req.upgrade_websocket || !h->resp.upgrade_websocket ||
			    !h->up.done) {
				backend_garbage(s, "101 without a WebSocket handshake");
				return;
			}
			upgrade(s);
			return;
		}
		if (status >= 100 && status < 200) {
			/* interim: 100 Continue unless we said it ourselves,
			 * 103 Early Hints, ... (RFC 9110 15.2) */
			if (!(status == 100 && h->answered_continue) && h->req.version_minor >= 1 &&
			    !write_response_head(s, &h->resp, true)) {
				close_session(s, "out of memory");
				return;
			}
			evbuffer_drain(in, h->resp.head_len);
			conn_flush(s->client);
			continue;
		}
		/* the final answer */
		session_backend_wait(s, false);
		h->status = status;
		unsigned max_req = cfg->http_max_keepalive_requests;
		h->keep_alive = h->req.keep_alive && !h->client_eof && h->up.done &&
		                (max_req == 0 || h->requests < max_req) &&
		                h->resp.framing != HTTP_BODY_UNTIL_CLOSE;
		h->backend_keep = h->resp.keep_alive && h->up.done &&
		                  h->resp.framing != HTTP_BODY_UNTIL_CLOSE;
		h->event_stream = h->resp.event_stream;
		if (!h->up.done) {
			/* an answer before the whole request (RFC 9112 9.3): the
			 * rest of the body is not forwarded, the connection ends
			 * after the response */
			if (h->xfer && h->xfer_up) {
				h->up.moved += xfer_moved(h->xfer);
				xfer_cancel(h->xfer);
				h->xfer = NULL;
			}
			h->xfer_pending_drain = false;
			h->up_stopped = true;
			conn_read_stop(s->client);
		}
		if (!write_response_head(s, &h->resp, h->keep_alive)) {
			close_session(s, "out of memory");
			return;
		}
		evbuffer_drain(in, h->resp.head_len);
		h->resp_started = true;
		body_init(&h->down, &h->resp);
		metrics_http_request(s->dest, status);
		pump_down(s);
		return;
	}
}

static void backend_readable(struct session *s)
{
	struct http *h = st(s);

	if (h->rs != R_FORWARD) {
		/* an idle backend has nothing to say: a stray answer makes
		 * the leg unusable for the next request */
		if (evbuffer_get_length(s->backend->in) > 0 || s->backend->eof)
			session_backend_drop(s);
		return;
	}
	if (h->xfer && !h->xfer_up)
		return;
	if (!h->resp_started) {
		response_head(s);
		return;
	}
	pump_down(s);
}

/* The backend closed or failed. */
static void backend_gone(struct session *s, const char *why)
{
	struct http *h = st(s);

	if (h->rs != R_FORWARD) {
		session_backend_drop(s); /* idle: the next request connects anew */
		return;
	}
	if (h->resp_started && h->down.framing == HTTP_BODY_UNTIL_CLOSE && !h->xfer) {
		/* the FIN is the end of this body */
		h->down.moved += evbuffer_get_length(s->backend->in);
		evbuffer_add_buffer(s->client->out, s->backend->in);
		conn_flush(s->client);
		h->down.done = true;
		h->keep_alive = false;
		h->backend_keep = false;
		finish_request(s);
		return;
	}
	if (!h->resp_started && h->backend_reused && h->replayable && !h->retried &&
	    evbuffer_get_length(s->backend->in) == 0) {
		/* the backend closed a kept connection as we reused it: the
		 * request had no body, send it again on a fresh one */
		h->retried = true;
		log_msg(LOG_DEBUG, "http-retry", "id=%s reason=\"%s\"", s->id, why);
		session_backend_drop(s);
		h->rs = R_ROUTING;
		session_connect_dest(s, s->dest, s->routed_to_default);
		return;
	}
	if (!h->resp_started) {
		if (h->xfer) {
			xfer_cancel(h->xfer);
			h->xfer = NULL;
		}
		session_backend_broken(s, why);
		return;
	}
	struct logbuf lb;
	lb_init(&lb, LOG_WARN, "http-backend-error");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "destination", s->d ? s->d->name : NULL);
	lb_str(&lb, "error", why);
	lb_emit(&lb);
	if (h->xfer) {
		xfer_cancel(h->xfer);
		h->xfer = NULL;
	}
	log_request(s, "backend closed mid response");
	close_session(s, "backend closed mid response");
}

static void client_drained(struct session *s)
{
	struct http *h = st(s);

	s->client->notify_drained = false;
	if (h->xfer_pending_drain && !h->xfer_pending_up) {
		start_xfer(s, false,
		           h->down.framing == HTTP_BODY_UNTIL_CLOSE ? XFER_UNTIL_EOF
		           : h->down.framing == HTTP_BODY_CHUNKED
		                   ? http_chunked_data_left(&h->down.ch)
		                   : h->down.left);
		return;
	}
	if (h->rs == R_FORWARD && h->resp_started && !h->down.done && !h->xfer) {
		conn_read_start(s->backend);
		pump_down(s);
	}
}

static void backend_drained(struct session *s)
{
	struct http *h = st(s);

	s->backend->notify_drained = false;
	if (h->xfer_pending_drain && h->xfer_pending_up) {
		start_xfer(s, true,
		           h->up.framing == HTTP_BODY_CHUNKED ? http_chunked_data_left(&h->up.ch)
		                                              : h->up.left);
		return;
	}
	if (h->rs == R_FORWARD && !h->up.done && !h->up_stopped && !h->xfer) {
		conn_read_start(s->client);
		pump_up(s);
	}
}

/* ---- the end of one request ---- */

static void finish_request(struct session *s)
{
	struct http *h = st(s);

	timer_set(h, T_NONE);
	log_request(s, NULL);
	if (!h->keep_alive || h->client_eof) {
		close_session(s, h->client_eof ? "client closed" : "connection: close");
		return;
	}
	if (!h->backend_keep || s->backend->eof || evbuffer_get_length(s->backend->in) > 0)
		session_backend_drop(s);
	h->backend_idle_ms = now_ms();
	reset_request(h);
	session_next_login(s);
	session_publish(s, "keepalive");
	timer_set(h, T_KEEPALIVE);
	if (evbuffer_get_length(s->client->in) > 0)
		event_active(h->next_ev, EV_TIMEOUT, 0);
}

/* ---- WebSocket: the pair becomes a byte stream ---- */

static void upgrade(struct session *s)
{
	struct http *h = st(s);

	session_backend_wait(s, false);
	h->status = 101;
	if (!write_response_head(s, &h->resp, true)) {
		close_session(s, "out of memory");
		return;
	}
	evbuffer_drain(s->backend->in, h->resp.head_len);
	h->resp_started = true;
	metrics_http_request(s->dest, 101);
	log_request(s, "upgraded");
	timer_set(h, T_NONE);
	h->rs = R_UPGRADED;
	/* the 101 and any frames already read go out first: the core moves
	 * the legs' buffers into the relay */
	session_login_succeeded(s);
}

/* ---- from the session core ---- */

static void http_backend_ready(struct session *s)
{
	struct http *h = st(s);
	const struct config *cfg = cfg_of(s);

	h->backend_reused = s->backend->cb == on_backend;
	if (!h->backend_reused) {
		h->core_backend_cb = s->backend->cb;
		s->backend->cb = on_backend;
		s->backend->in_max = cfg->http_max_head_size + IN_SLACK;
	}
	session_preauth_done(s);
	/* connected: backend_timeout counts again once the request is out */
	session_backend_wait(s, false);
	h->rs = R_FORWARD;
	h->dest_name = s->d->name;
	char small[HEAD_STACK];
	size_t cap = h->req.head_len + 512;
	char *out = cap <= sizeof(small) ? small : malloc(cap);
	if (!out) {
		close_session(s, "out of memory");
		return;
	}
	struct http_forward fwd = {.trust_client_forwarded = h->trust_forwarded,
	                           .add_forwarded = s->d->forwarded,
	                           .client_ip = h->client_ip,
	                           .client_tls = s->client_tls,
	                           .drop_expect = h->answered_continue};
	size_t n = http_request_head_build(&h->req, &fwd, out, cap);
	if (n == 0) {
		if (out != small)
			free(out);
		refuse(s, 431, "forwarded head too large");
		return;
	}
	/* reading on before the head is queued: with bytes queued, the leg
	 * would also arm its write event, for nothing (pump_up sends now) */
	conn_read_start(s->backend);
	conn_read_start(s->client);
	evbuffer_add(s->backend->out, out, n);
	if (out != small)
		free(out);
	h->head_up = n;
	/* the core published account, destination and state "backend" when
	 * it routed: one registry update per request is enough */
	pump_up(s);
}

static void http_backend_failed(struct session *s, enum backend_failure why)
{
	struct http *h = st(s);

	if (h->xfer) {
		xfer_cancel(h->xfer);
		h->xfer = NULL;
	}
	if (h->resp_started) {
		log_request(s, "backend failed");
		close_session(s, "backend failed");
		return;
	}
	unsigned status = http_failure_status(why, s->backend_timed_out);
	/* a store that could not answer never reached connect_destination:
	 * s->d is the previous request's */
	if (why != BACKEND_FAIL_LOOKUP && s->d)
		h->dest_name = s->d->name;
	answer(s, status, false,
	       status == 503   ? "lookup failed"
	       : status == 504 ? "backend timeout"
	                       : "backend down",
	       h->dest_name ? s->dest : -1);
	close_session(s, status == 504 ? "backend timeout" : "backend unavailable");
}

static void http_goodbye(struct session *s, const char *why)
{
	struct http *h = st(s);

	if (!h)
		return;
	if (h->xfer) {
		xfer_cancel(h->xfer);
		h->xfer = NULL;
	}
	if (h->resp_started || h->rs == R_UPGRADED) {
		log_request(s, why);
		return;
	}
	bool timeout = strcmp(why, "timeout") == 0;
	if (h->rs == R_HEAD) {
		/* an idle connection just closes; half a head is a slow client
		 * (or one the shutdown interrupts) */
		bool kicked = strcmp(why, "kicked") == 0;
		if (!kicked && (h->head_started || evbuffer_get_length(s->client->in) > 0)) {
			char buf[512];
			unsigned status = timeout ? 408 : 503;
			size_t n = http_error_response(status, false, false, buf, sizeof(buf));
			send_to(s->client, buf, n);
			metrics_http_request(-1, status);
		}
		return;
	}
	answer(s, timeout && h->rs == R_PEEK ? 408 : 503, false, why, h->dest_name ? s->dest : -1);
}

static void http_free(struct session *s)
{
	struct http *h = st(s);

	if (!h)
		return;
	if (h->xfer)
		xfer_cancel(h->xfer);
	log_request(s, s->end_reason ? s->end_reason : "closed");
	if (h->timer)
		event_free(h->timer);
	if (h->next_ev)
		event_free(h->next_ev);
	if (h->head_buf) {
		OPENSSL_cleanse(h->head_buf, h->head_cap);
		free(h->head_buf);
	}
	free(h);
	s->proto = NULL;
}

/* Our idle timers: between requests, and bodies that stopped moving. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct http *h = st(s);

	if (s->ending || s->closing || !h)
		return;
	switch (h->timer_kind) {
	case T_NONE:
		return;
	case T_KEEPALIVE:
		if (h->head_started || evbuffer_get_length(s->client->in) > 0) {
			char buf[512];
			size_t n = http_error_response(408, false, false, buf, sizeof(buf));
			send_to(s->client, buf, n);
			metrics_http_request(-1, 408);
			close_session(s, "client too slow");
			return;
		}
		close_session(s, "keepalive timeout");
		return;
	case T_BODY:
	case T_STREAM: {
		uint64_t now = progress_of(h);
		if (now != h->timer_seen) {
			timer_set(h, h->timer_kind);
			return;
		}
		if (!h->resp_started && (h->rs == R_PEEK || !h->up.done)) {
			refuse(s, 408, "client too slow");
			return;
		}
		log_request(s, "idle timeout");
		close_session(s, "idle timeout");
		return;
	}
	}
}

static void http_client_input(struct session *s)
{
	client_readable(s);
}

static void http_backend_input(struct session *s)
{
	backend_readable(s);
}

static void http_backend_tls_done(struct session *s)
{
	/* HTTP has no STARTTLS (config.c refuses it) */
	session_backend_broken(s, "unexpected TLS upgrade");
}

const struct proto_ops http_ops = {
        .name = "http",
        .greet = http_greet,
        .client_input = http_client_input,
        .backend_ready = http_backend_ready,
        .backend_input = http_backend_input,
        .backend_tls_done = http_backend_tls_done,
        .backend_failed = http_backend_failed,
        .goodbye = http_goodbye,
        .free = http_free,
        .keeps_backend = true,
};
