/*
 * The session core (see session.h): client leg, limits, routing, backend
 * connection, hand-off to the data path, the session log line.
 *
 * A session is freed only from its own deferred "end" event, never from
 * inside a callback: protocol code may call session_close() and keep
 * running until it returns.
 */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <openssl/crypto.h>

#include "health.h"
#include "handover.h"
#include "holds.h"
#include "metrics.h"
#include "log.h"
#include "mapping.h"
#include "relay.h"
#include "sasl.h"
#include "server.h"
#include "upgrade.h"
#include "util.h"

#define CLOSE_FLUSH_MS   5000 /* how long a goodbye may take to drain */
#define CONNECT_RETRY_MS 200
#define HOLD_POLL_MS     100 /* a held login looks at its hold this often */
#define PROXY_PEEK_MAX   (16 + 2048)

static void client_cb(struct conn *c, enum conn_event ev, void *arg);
static void backend_cb(struct conn *c, enum conn_event ev, void *arg);
static void connect_next(struct session *s);
static void start_client(struct session *s);
static void read_proxy_header(evutil_socket_t fd, short what, void *arg);
static void dns_done(int result, struct evutil_addrinfo *res, void *arg);
static void connect_destination(struct session *s, int dest);
static void route_account(struct session *s);
static void on_retry(evutil_socket_t fd, short what, void *arg);

static struct server *srv_of(const struct session *s)
{
	return s->w->srv;
}

/* ---- ending ---- */

static void log_session(struct session *s)
{
	struct logbuf lb;
	uint64_t dur = (now_us() - s->started_us) / 1000;

	lb_init(&lb, LOG_INFO, "session");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "proto", proto_name(s->ls->protocol));
	lb_str(&lb, "listener", s->ls->name);
	lb_str(&lb, "client", s->peer_str);
	lb_str(&lb, "tls", s->client_tls ? "yes" : "no");
	if (s->sni)
		lb_str(&lb, "sni", s->sni);
	lb_str(&lb, "account", s->account[0] ? s->account : NULL);
	lb_str(&lb, "destination", s->d ? s->d->name : NULL);
	if (s->d)
		lb_str(&lb, "routed", s->routed_to_default ? "default" : "mapped");
	lb_str(&lb, "path_up", s->path_up);
	lb_str(&lb, "path_down", s->path_down);
	lb_uint(&lb, "bytes_up", s->bytes_up);
	lb_uint(&lb, "bytes_down", s->bytes_down);
	lb_uint(&lb, "auth_failures", s->auth_attempts);
	lb_uint(&lb, "duration_ms", dur);
	lb_str(&lb, "end", s->end_reason ? s->end_reason : "closed");
	if (s->end_detail)
		lb_str(&lb, "detail", s->end_detail);
	if (s->moves)
		lb_uint(&lb, "moves", s->moves);
	lb_emit(&lb);
}

/* The login name as the client sent it is a credential of sorts: wiped. */
static void drop_login_user(struct session *s)
{
	if (!s->login_user)
		return;
	OPENSSL_cleanse(s->login_user, strlen(s->login_user));
	free(s->login_user);
	s->login_user = NULL;
}

static void set_login_user(struct session *s, const char *user)
{
	drop_login_user(s);
	s->login_user = xstrndup(user, LOGIN_USER_MAX);
}

/* Both legs live in one allocation (session_accept); a relayed session has
 * none: the data path owns the sockets. */
static void free_legs(struct session *s)
{
	free(s->client);
	s->client = s->backend = NULL;
}

/* The events only the login phase uses: the backend timer, the connect
 * retry and the PROXY-header read. */
static void free_login_events(struct session *s)
{
	if (s->btimer)
		event_free(s->btimer);
	if (s->retry)
		event_free(s->retry);
	if (s->pp_ev)
		event_free(s->pp_ev);
	s->btimer = s->retry = s->pp_ev = NULL;
}

/* The data path has both sockets: give back what only the login needed
 * (the protocol's state and its credentials, the legs, the login's timers
 * and strings), so that an idle relayed session costs little more than its
 * relay (docs/datapath.md). Deferred from session_login_succeeded, where
 * the protocol module is still on the stack. */
static void shed_login_state(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->ending)
		return; /* on_end frees it all */
	if (s->ops->free)
		s->ops->free(s);
	s->proto = NULL;
	free_legs(s);
	free(s->backend_err);
	s->backend_err = NULL;
	free(s->addrs);
	s->addrs = NULL;
	s->n_addrs = s->addr_next = 0;
	drop_login_user(s);
	free_login_events(s);
	event_free(s->timer); /* this event: libevent allows it from its callback */
	s->timer = NULL;
}

static void on_end(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	struct server *srv = srv_of(s);

	if (!s->moved_away)
		log_session(s); /* the successor writes it when the session ends */
	if (s->drain_noted)
		upgrade_session_gone(s->id); /* it stayed here during an upgrade */
	metrics_session_end(s->ls->protocol, s->path_down ? s->dest : -1, s->path_down,
	                    s->bytes_up - s->carried_up, s->bytes_down - s->carried_down);
	registry_remove(&s->live);
	route_lookup_cancel(s->lookup);
	if (s->dns_req)
		evdns_getaddrinfo_cancel(s->dns_req); /* calls back with EVUTIL_EAI_CANCEL */
	if (s->client && (s->client->fd >= 0 || s->client->in))
		conn_release(s->client, false);
	if (s->backend_open)
		conn_release(s->backend, false);
	free_legs(s);
	if (s->timer)
		event_free(s->timer);
	free_login_events(s);
	event_free(s->end_ev);
	if (s->ops && s->ops->free)
		s->ops->free(s);
	free(s->addrs);
	free(s->backend_err);
	free(s->sni);
	free(s->end_detail);
	atomic_fetch_sub(&srv->listener_conns[s->listener_index], 1);
	worker_session_removed(s->w, s);
	drop_login_user(s);
	free(s);
}

/* End now (from the next loop iteration); nothing more is sent. */
static void end_session(struct session *s, const char *reason)
{
	if (s->ending)
		return;
	s->ending = true;
	s->phase = PHASE_CLOSING;
	if (!s->end_reason)
		s->end_reason = reason;
	if (s->client && s->client->fd >= 0 && s->client->rev) {
		event_del(s->client->rev);
		event_del(s->client->wev);
	}
	if (s->backend_open) {
		event_del(s->backend->rev);
		event_del(s->backend->wev);
	}
	event_active(s->end_ev, EV_TIMEOUT, 0);
}

void session_close(struct session *s, const char *reason)
{
	if (s->ending || s->closing)
		return;
	s->closing = true;
	s->phase = PHASE_CLOSING;
	if (!s->end_reason)
		s->end_reason = reason;
	if (s->backend_open) {
		conn_release(s->backend, false);
		s->backend_open = false;
	}
	if (!s->client) { /* relayed: nothing of ours to flush */
		end_session(s, reason);
		return;
	}
	conn_read_stop(s->client);
	if (s->client->fd < 0 || s->client->failed || evbuffer_get_length(s->client->out) == 0) {
		end_session(s, reason);
		return;
	}
	/* let the goodbye reach the client, but not for ever */
	s->client->notify_drained = true;
	struct timeval tv = {CLOSE_FLUSH_MS / 1000, 0};
	evtimer_add(s->timer, &tv);
	conn_flush(s->client);
}

void session_abort(struct session *s, const char *reason)
{
	if (s->ending)
		return;
	if (s->moving) {
		/* the successor may own it already: its answer decides */
		s->kick_pending = s->kick_pending || strcmp(reason, "kicked") == 0;
		return;
	}
	if (s->relay) {
		relay_stop(s->relay,
		           strcmp(reason, "kicked") == 0 ? RELAY_END_KICKED : RELAY_END_SHUTDOWN);
		return;
	}
	s->end_reason = reason;
	if (s->phase == PHASE_LOGIN || s->phase == PHASE_BACKEND) {
		if (s->ops->goodbye)
			s->ops->goodbye(s, reason);
		session_close(s, reason);
		return;
	}
	if (s->client)
		conn_set_abortive(s->client);
	end_session(s, reason);
}

static void on_kick(struct live_session *ls)
{
	struct session *s = (struct session *)((char *)ls - offsetof(struct session, live));
	session_abort(s, "kicked");
}

/* ---- timers ---- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->ending)
		return;
	if (s->closing) {
		end_session(s, s->end_reason);
		return;
	}
	/* preauth_timeout: the whole login, backend dialogue included */
	log_msg(LOG_INFO, "preauth-timeout", "id=%s", s->id);
	if (s->ops->goodbye && s->phase >= PHASE_LOGIN)
		s->ops->goodbye(s, "timeout");
	session_close(s, "preauth timeout");
}

static void on_backend_timer(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->ending || s->closing || s->phase != PHASE_BACKEND)
		return;
	s->backend_timed_out = true;
	session_backend_broken(s, "backend timeout");
}

/* ---- accept ---- */

static const struct proto_ops *ops_for(enum proto p)
{
	switch (p) {
	case PROTO_IMAP:
		return &imap_ops;
	/* weak: NULL until the protocol module is linked in */
	case PROTO_POP3:
		return &pop3_ops;
	case PROTO_SUBMISSION:
		return &submission_ops;
	case PROTO_MANAGESIEVE:
		return &sieve_ops;
	case PROTO_SMTP:
	case PROTO_LMTP:
		return &smtp_passthrough_ops;
	case PROTO_HTTP:
		return &http_ops;
	default:
		return NULL;
	}
}

/* A protocol this build does not proxy yet: greet with its own temporary
 * error so clients back off and retry instead of hanging. */
static void refuse_unserved(int fd, enum proto p)
{
	static const char *const msg[PROTO_COUNT] = {
	        [PROTO_POP3] = "-ERR [SYS/TEMP] this protocol is not served yet\r\n",
	        [PROTO_SUBMISSION] = "421 4.3.2 this protocol is not served yet\r\n",
	        [PROTO_SMTP] = "421 4.3.2 this protocol is not served yet\r\n",
	        [PROTO_LMTP] = "421 4.3.2 this protocol is not served yet\r\n",
	        [PROTO_MANAGESIEVE] = "BYE (TRYLATER) \"this protocol is not served yet\"\r\n",
	        [PROTO_HTTP] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
	                       "Connection: close\r\n\r\n",
	};
	if (msg[p] && write(fd, msg[p], strlen(msg[p])) < 0) {
		/* nothing to do: the client is gone */
	}
	close(fd);
}

void session_accept(struct worker *w, size_t li, int fd, const struct sockaddr_storage *peer)
{
	struct server *srv = w->srv;
	const struct cfg_listener *ls = &srv->cfg->listeners[li];
	char addr[64];

	if (atomic_load(&srv->draining)) {
		close(fd);
		return;
	}
	if (atomic_fetch_add(&srv->listener_conns[li], 1) >= ls->max_connections) {
		atomic_fetch_sub(&srv->listener_conns[li], 1);
		log_msg(LOG_WARN, "max-connections", "listener=%s client=%s limit=%u", ls->name,
		        sockaddr_str(peer, addr, sizeof(addr)), ls->max_connections);
		close(fd);
		return;
	}
	const struct proto_ops *ops = ops_for(ls->protocol);
	if (!ops) {
		atomic_fetch_sub(&srv->listener_conns[li], 1);
		refuse_unserved(fd, ls->protocol);
		return;
	}
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		atomic_fetch_sub(&srv->listener_conns[li], 1);
		close(fd);
		return;
	}
	s->w = w;
	s->cfg = srv->cfg;
	s->ls = ls;
	s->listener_index = li;
	s->ops = ops;
	s->dest = -1;
	s->backend_dest = -1;
	s->started_us = now_us();
	s->peer = *peer;
	socklen_t sl = sizeof(s->local);
	getsockname(fd, (struct sockaddr *)&s->local, &sl);
	sockaddr_str(&s->peer, s->peer_str, sizeof(s->peer_str));
	session_id_new(s->id);
	s->end_ev = event_new(w->base, -1, 0, on_end, s);
	s->timer = evtimer_new(w->base, on_timer, s);
	s->btimer = evtimer_new(w->base, on_backend_timer, s);
	s->client = calloc(2, sizeof(*s->client)); /* both legs, freed at the hand-over */
	if (s->client)
		s->backend = s->client + 1;
	if (!s->end_ev || !s->timer || !s->btimer || !s->client ||
	    !conn_init(s->client, w->base, fd, client_cb, s)) {
		/* nothing registered yet: undo by hand */
		if (s->end_ev)
			event_free(s->end_ev);
		if (s->timer)
			event_free(s->timer);
		if (s->btimer)
			event_free(s->btimer);
		if (s->client)
			conn_release(s->client, false);
		else
			close(fd);
		free_legs(s);
		atomic_fetch_sub(&srv->listener_conns[li], 1);
		free(s);
		return;
	}
	s->client->in_max = srv->cfg->max_line_length + srv->cfg->max_literal_size + 1024;
	s->client->out_max = 256 * 1024;

	s->live.id = 0;
	str_copy(s->live.session_id, s->id, sizeof(s->live.session_id));
	s->live.base = w->base;
	s->live.kick = on_kick;
	str_copy(s->live.listener, ls->name, sizeof(s->live.listener));
	s->live.protocol = ls->protocol;
	str_copy(s->live.client, s->peer_str, sizeof(s->live.client));
	s->live.state = "login";
	s->live.data_path = "";
	s->live.started_ms = (uint64_t)time(NULL) * 1000;
	registry_add(&s->live);
	worker_session_added(w, s);
	metrics_session_start(ls->protocol);

	struct timeval tv = {(time_t)(ls->preauth_timeout_ms / 1000),
	                     (suseconds_t)(ls->preauth_timeout_ms % 1000) * 1000};
	evtimer_add(s->timer, &tv);

	bool trusted = false;
	for (size_t i = 0; i < ls->n_proxy_trusted; i++)
		trusted |= cidr_match(&ls->proxy_trusted[i], peer);
	if (ls->proxy_protocol != PROXY_ACCEPT_OFF && trusted) {
		s->phase = PHASE_PROXY_HEADER;
		s->pp_ev = event_new(w->base, fd, EV_READ | EV_PERSIST, read_proxy_header, s);
		event_add(s->pp_ev, NULL);
		return;
	}
	if (ls->proxy_protocol == PROXY_ACCEPT_REQUIRED) {
		log_msg(LOG_WARN, "proxy-header",
		        "listener=%s client=%s error=\"not a trusted "
		        "balancer; a PROXY header is required\"",
		        ls->name, s->peer_str);
		conn_set_abortive(s->client);
		end_session(s, "untrusted balancer");
		return;
	}
	start_client(s);
}

/*
 * A PROXY header from a trusted balancer: peek, parse, then consume exactly
 * the header, so the bytes after it (a TLS ClientHello) stay in the socket
 * for OpenSSL.
 */
static void set_client(struct live_session *ls, void *arg)
{
	str_copy(ls->client, arg, sizeof(ls->client));
}

static void read_proxy_header(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	uint8_t buf[PROXY_PEEK_MAX];
	struct proxy_header h;
	const char *error = NULL;

	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		end_session(s, "client closed");
		return;
	}
	if (n < 0)
		return;
	long used = proxy_header_parse(buf, (size_t)n, &h, &error);
	if (used == 0 && (size_t)n < sizeof(buf))
		return; /* more to come */
	if (used <= 0) {
		if (s->ls->proxy_protocol == PROXY_ACCEPT_OPTIONAL && used < 0 &&
		    memcmp(buf, "PROXY", n < 5 ? (size_t)n : 5) != 0 &&
		    memcmp(buf, "\r\n\r\n\0\r\nQUIT\n", n < 12 ? (size_t)n : 12) != 0) {
			event_free(s->pp_ev);
			s->pp_ev = NULL;
			start_client(s); /* optional and absent */
			return;
		}
		log_msg(LOG_WARN, "proxy-header", "client=%s error=\"%s\"", s->peer_str,
		        error ? error : "header too long");
		end_session(s, "bad proxy header");
		return;
	}
	if (recv(fd, buf, (size_t)used, 0) != used) {
		end_session(s, "client closed");
		return;
	}
	event_free(s->pp_ev);
	s->pp_ev = NULL;
	if (!h.local) {
		s->peer = h.src;
		s->local = h.dst;
		sockaddr_str(&s->peer, s->peer_str, sizeof(s->peer_str));
		registry_update(&s->live, set_client, s->peer_str);
	}
	start_client(s);
}

static void start_client(struct session *s)
{
	struct server *srv = srv_of(s);

	if (s->ls->tls == TLS_MODE_IMPLICIT) {
		s->phase = PHASE_CLIENT_TLS;
		SSL *ssl = tls_server_ssl(srv->tls);
		if (!ssl) {
			end_session(s, "TLS setup failed");
			return;
		}
		conn_start_tls(s->client, ssl, true, NULL);
		return;
	}
	s->phase = PHASE_LOGIN;
	s->ops->greet(s);
	conn_read_start(s->client);
}

/* ---- the client leg ---- */

static void client_tls_done(struct session *s)
{
	const char *sni = SSL_get_servername(s->client->ssl, TLSEXT_NAMETYPE_host_name);

	s->client_tls = true;
	if (sni)
		s->sni = xstrndup(sni, 255); /* a DNS name: at most 255 octets */
	bool implicit = s->ls->tls == TLS_MODE_IMPLICIT;
	s->phase = PHASE_LOGIN;
	if (implicit)
		s->ops->greet(s);
	else if (s->ops->client_tls_started)
		s->ops->client_tls_started(s);
	conn_read_start(s->client);
}

static void client_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct session *s = arg;

	if (s->ending)
		return;
	switch (ev) {
	case CONN_EV_TLS_DONE:
		client_tls_done(s);
		return;
	case CONN_EV_READ:
		if (s->closing) {
			evbuffer_drain(c->in, evbuffer_get_length(c->in));
			return;
		}
		if (s->phase == PHASE_LOGIN)
			s->ops->client_input(s);
		if (!s->ending && !s->closing && c->eof && s->phase != PHASE_RELAY &&
		    !s->ops->relays_client_eof) {
			end_session(s, "client closed");
			return;
		}
		/* the conn stopped reading when its buffer filled up, before
		 * the protocol drained it: look again */
		if (!s->ending && !s->closing && s->phase == PHASE_LOGIN)
			conn_read_start(s->client);
		return;
	case CONN_EV_EOF:
		/* the relay reads the FIN again from the socket */
		if (s->ops->relays_client_eof && s->phase != PHASE_RELAY)
			return;
		end_session(s, "client closed");
		return;
	case CONN_EV_ERROR: {
		struct logbuf lb;
		lb_init(&lb, LOG_INFO, "client-error");
		lb_str(&lb, "id", s->id);
		lb_str(&lb, "error", c->err);
		lb_emit(&lb);
		end_session(s, s->phase == PHASE_CLIENT_TLS ? "client TLS failed" : "client error");
		return;
	}
	case CONN_EV_DRAINED:
		if (s->closing) {
			end_session(s, s->end_reason);
			return;
		}
		if (s->starttls_pending) {
			s->starttls_pending = false;
			c->notify_drained = false;
			SSL *ssl = tls_server_ssl(srv_of(s)->tls);
			if (!ssl) {
				end_session(s, "TLS setup failed");
				return;
			}
			conn_start_tls(c, ssl, true, &s->starttls_discarded);
		}
		return;
	case CONN_EV_CONNECTED:
		return;
	}
}

void session_reply(struct session *s, const char *fmt, ...)
{
	va_list ap;

	if (s->ending || !s->client || s->client->fd < 0)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(s->client->out, fmt, ap);
	va_end(ap);
	conn_flush(s->client);
}

void session_reply_raw(struct session *s, const void *data, size_t len)
{
	if (s->ending || !s->client || s->client->fd < 0)
		return;
	conn_write(s->client, data, len);
	conn_flush(s->client);
}

void session_client_starttls(struct session *s)
{
	if (!srv_of(s)->tls) {
		session_close(s, "no certificate for STARTTLS");
		return;
	}
	conn_read_stop(s->client);
	s->phase = PHASE_CLIENT_TLS; /* handshake: input is not parsed */
	s->starttls_pending = true;
	s->client->notify_drained = true;
	if (evbuffer_get_length(s->client->out) == 0) {
		client_cb(s->client, CONN_EV_DRAINED, s);
		return;
	}
	conn_flush(s->client);
}

bool session_client_secure(const struct session *s)
{
	return s->client_tls;
}

bool session_plain_auth_allowed(const struct session *s)
{
	const struct cfg_caps *caps = &s->cfg->caps[s->ls->protocol];

	if (s->client_tls || caps->allow_plain_auth_without_tls || s->ls->allow_plaintext_login)
		return true;
	/* a plain listener (no TLS offered at all) is the operator's choice,
	 * typically behind a TLS-terminating balancer */
	return s->ls->tls == TLS_MODE_PLAIN;
}

void session_client_pause(struct session *s, bool pause)
{
	if (pause)
		conn_read_stop(s->client);
	else if (!s->ending && !s->closing)
		conn_read_start(s->client);
}

/* ---- routing and the backend connection ---- */

static void fail_login(struct session *s, enum backend_failure why, const char *detail)
{
	struct logbuf lb;

	lb_init(&lb, LOG_WARN, "backend-unavailable");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "account", s->account[0] ? s->account : NULL);
	lb_str(&lb, "destination", s->d ? s->d->name : NULL);
	lb_str(&lb, "error", detail);
	lb_emit(&lb);
	if (why != BACKEND_FAIL_BAD_LOGIN) /* a bad login is counted by session_login_failed */
		metrics_login(s->ls->protocol, LOGIN_TEMPFAIL);
	evtimer_del(s->btimer);
	if (s->backend_open) {
		conn_release(s->backend, false);
		s->backend_open = false;
	}
	s->phase = PHASE_LOGIN;
	s->ops->backend_failed(s, why);
	if (!s->ending && !s->closing)
		session_client_pause(s, false);
}

static void set_account(struct live_session *ls, void *arg)
{
	struct session *s = arg;
	str_copy(ls->account, s->account, sizeof(ls->account));
	str_copy(ls->destination, s->d ? s->d->name : "", sizeof(ls->destination));
	ls->state = s->phase == PHASE_RELAY ? "relay" : "backend";
}

void session_login(struct session *s, const char *login_user)
{
	const struct config *cfg = s->cfg;
	const char *bad;

	/* HTTP reads on (a request body, the client's close) */
	if (!s->ops->keeps_backend)
		session_client_pause(s, true);
	s->phase = PHASE_BACKEND;
	s->hold_since_ms = 0;
	set_login_user(s, login_user);
	bad = account_canonical(&cfg->rules, login_user, strlen(login_user), s->account,
	                        sizeof(s->account));
	if (bad) {
		s->account[0] = '\0';
		fail_login(s, BACKEND_FAIL_BAD_LOGIN, bad);
		return;
	}
	route_account(s);
}

static void on_hold_over(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (!s->ending && !s->closing && s->phase == PHASE_BACKEND)
		route_account(s);
}

/* The mapping store answered (at once or later): connect, or tell the
 * client to come back later. A store that cannot answer never sends
 * anyone to the default destination. */
static void route_done(void *arg, enum route_status st, const struct route *route, const char *why)
{
	struct session *s = arg;

	s->lookup = NULL;
	if (s->ending || s->closing || s->phase != PHASE_BACKEND)
		return;
	if (st == ROUTE_FAILED) {
		fail_login(s, BACKEND_FAIL_LOOKUP, why ? why : "mapping store unavailable");
		return;
	}
	s->routed_to_default = route->routed_to_default;
	connect_destination(s, route->dest);
}

/* A login held by POST /connections/delay waits here (the client sees a
 * slow login, bounded by preauth_timeout), then routes with the mapping
 * in force at that moment: the one the operator has just flipped. */
static void route_account(struct session *s)
{
	struct route route;
	uint64_t now = now_ms();
	const char *why = NULL;

	if (!s->hold_since_ms)
		s->hold_since_ms = now;
	/* registered (no destination yet) before the hold is looked at: a
	 * move on another thread sets the hold, then kicks, so this login is
	 * either held or found by the kick */
	s->d = NULL;
	s->dest = -1;
	registry_update(&s->live, set_account, s);
	/* a hold delays one login by at most HOLD_MAX_SECONDS, as in the
	 * reference proxy, then it routes with the mapping in force */
	uint64_t held = holds_wait_ms(s->account, s->hold_since_ms, now);

	if (held) {
		/* the operator's hold, not the client, is slow: preauth_timeout
		 * counts again from the end of the wait */
		uint64_t limit = held + s->ls->preauth_timeout_ms;
		struct timeval ptv = {(time_t)(limit / 1000), (suseconds_t)(limit % 1000) * 1000};
		evtimer_add(s->timer, &ptv);
		if (now == s->hold_since_ms)
			log_msg(LOG_INFO, "login-held", "id=%s wait_ms=%llu", s->id,
			        (unsigned long long)held);
		if (!s->retry)
			s->retry = evtimer_new(s->w->base, on_hold_over, s);
		else
			event_assign(s->retry, s->w->base, -1, 0, on_hold_over, s);
		/* look again soon: a hold lifted early (the end of a move, or
		 * seconds=0) lets the login go at once */
		if (held > HOLD_POLL_MS)
			held = HOLD_POLL_MS;
		struct timeval tv = {(time_t)(held / 1000), (suseconds_t)(held % 1000) * 1000};
		evtimer_add(s->retry, &tv);
		return;
	}
	enum route_status st = router_resolve(&srv_of(s)->router, s->w->store, s->account, 0,
	                                      &route, route_done, s, &s->lookup, &why);
	if (st != ROUTE_PENDING)
		route_done(s, st, &route, why);
}

void session_connect_passthrough(struct session *s)
{
	session_client_pause(s, true);
	s->phase = PHASE_BACKEND;
	s->routed_to_default = false;
	connect_destination(s, s->cfg->passthrough_dest);
}

static bool backend_reusable(struct session *s);

static void connect_destination(struct session *s, int dest)
{
	const struct config *cfg = s->cfg;
	bool reuse = false;

	/* only an HTTP client's next request finds a leg open (ops->
	 * keeps_backend): reuse it for the same destination, close it for
	 * another one (it was announced with this client, to that backend) */
	if (s->backend_open) {
		reuse = s->ops->keeps_backend && dest == s->backend_dest && backend_reusable(s);
		if (!reuse)
			session_backend_drop(s);
	}
	s->backend_timed_out = false;
	s->dest = dest;
	s->d = &cfg->dests[dest];
	s->ep = &s->d->endpoint[s->ls->protocol];
	if (reuse) {
		/* the registry lock is process-wide: taken again only when
		 * /sessions would show something else */
		if (strcmp(s->live.account, s->account) != 0 ||
		    strcmp(s->live.destination, s->d->name) != 0)
			registry_update(&s->live, set_account, s);
		s->ops->backend_ready(s);
		return;
	}
	registry_update(&s->live, set_account, s);
	s->backend_dest = dest;
	if (!s->ep->present) {
		char why[160];
		snprintf(why, sizeof(why), "destination %s has no protocol.%s", s->d->name,
		         proto_name(s->ls->protocol));
		fail_login(s, BACKEND_FAIL_UNAVAILABLE, why);
		return;
	}
	if (health_is_down((size_t)s->dest, now_ms())) {
		fail_login(s, BACKEND_FAIL_UNAVAILABLE, "destination is marked down");
		return;
	}
	struct timeval tv = {(time_t)(cfg->backend_timeout_ms / 1000),
	                     (suseconds_t)(cfg->backend_timeout_ms % 1000) * 1000};
	evtimer_add(s->btimer, &tv);
	s->connect_round = 0;
	s->addr_next = 0;
	free(s->addrs);
	s->addrs = NULL;
	s->n_addrs = 0;

	/* numeric hosts need no resolver */
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, s->d->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, s->d->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
	} else {
		struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
		                                .ai_socktype = SOCK_STREAM,
		                                .ai_protocol = IPPROTO_TCP};
		s->dns_pending = true;
		s->dns_req = evdns_getaddrinfo(s->w->dns, s->d->host, NULL, &hints, dns_done, s);
		return; /* the callback may already have run */
	}
	s->addrs = xcalloc(1, sizeof(*s->addrs));
	s->addrs[0] = ss;
	s->n_addrs = 1;
	connect_next(s);
}

static void dns_done(int result, struct evutil_addrinfo *res, void *arg)
{
	struct session *s = arg;
	size_t n = 0;

	s->dns_req = NULL;
	s->dns_pending = false;
	if (result == EVUTIL_EAI_CANCEL || s->ending) {
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next)
		n++;
	if (result != 0 || n == 0) {
		char why[300];
		snprintf(why, sizeof(why), "resolving %s: %s", s->d->host,
		         evutil_gai_strerror(result));
		if (res)
			evutil_freeaddrinfo(res);
		health_record_failure((size_t)s->dest, (const struct sockaddr *)&s->peer, now_ms());
		fail_login(s, BACKEND_FAIL_UNAVAILABLE, why);
		return;
	}
	s->addrs = xcalloc(n, sizeof(*s->addrs));
	for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_addrlen <= sizeof(struct sockaddr_storage))
			memcpy(&s->addrs[s->n_addrs++], ai->ai_addr, ai->ai_addrlen);
	}
	evutil_freeaddrinfo(res);
	connect_next(s);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (!s->ending && !s->closing && s->phase == PHASE_BACKEND)
		connect_next(s);
}

static void set_backend_err(struct session *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void set_backend_err(struct session *s, const char *fmt, ...)
{
	char buf[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(s->backend_err);
	s->backend_err = xstrdup(buf);
}

static void connect_failed(struct session *s, const char *err)
{
	if (err != s->backend_err)
		set_backend_err(s, "%s", err);
	if (s->backend_open) {
		conn_release(s->backend, false);
		s->backend_open = false;
	}
	if (s->addr_next < s->n_addrs) {
		connect_next(s);
		return;
	}
	if (s->connect_round < s->cfg->backend_connect_retries) {
		s->connect_round++;
		s->addr_next = 0;
		if (!s->retry)
			s->retry = evtimer_new(s->w->base, on_retry, s);
		else
			event_assign(s->retry, s->w->base, -1, 0, on_retry, s);
		struct timeval tv = {0, CONNECT_RETRY_MS * 1000};
		evtimer_add(s->retry, &tv);
		return;
	}
	health_record_failure((size_t)s->dest, (const struct sockaddr *)&s->peer, now_ms());
	metrics_backend_error(s->dest);
	fail_login(s, BACKEND_FAIL_UNAVAILABLE, s->backend_err);
}

static bool pick_source(struct session *s, int family, struct sockaddr_storage *out, socklen_t *len)
{
	const struct cfg_destination *d = s->d;
	size_t n = 0;

	for (size_t i = 0; i < d->n_source_ips; i++)
		n += d->source_ips[i].ss_family == family;
	if (n == 0)
		return false;
	size_t k = atomic_fetch_add(&srv_of(s)->source_next[s->dest], 1) % n;
	for (size_t i = 0; i < d->n_source_ips; i++) {
		if (d->source_ips[i].ss_family != family)
			continue;
		if (k-- == 0) {
			*out = d->source_ips[i];
			*len = family == AF_INET ? sizeof(struct sockaddr_in)
			                         : sizeof(struct sockaddr_in6);
			return true;
		}
	}
	return false;
}

static void connect_next(struct session *s)
{
	struct sockaddr_storage dst = s->addrs[s->addr_next++], src;
	socklen_t dlen, slen = 0;
	char addr[64];

	if (dst.ss_family == AF_INET) {
		((struct sockaddr_in *)&dst)->sin_port = htons(s->ep->port);
		dlen = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)&dst)->sin6_port = htons(s->ep->port);
		dlen = sizeof(struct sockaddr_in6);
	}
	bool has_src = pick_source(s, dst.ss_family, &src, &slen);
	log_msg(LOG_DEBUG, "backend-connect", "id=%s destination=%s addr=%s", s->id, s->d->name,
	        sockaddr_str(&dst, addr, sizeof(addr)));
	s->backend_tls = false;
	s->backend_connected = false;
	if (!conn_connect(s->backend, s->w->base, has_src ? (struct sockaddr *)&src : NULL, slen,
	                  (struct sockaddr *)&dst, dlen, backend_cb, s)) {
		char why[300];
		snprintf(why, sizeof(why), "%s: %s", addr, s->backend->err);
		connect_failed(s, why);
		return;
	}
	s->backend_open = true;
	s->backend->in_max = s->cfg->max_line_length * 4 + SASL_LINE_MAX;
}

void session_announce_info(const struct session *s, struct announce_info *info)
{
	memset(info, 0, sizeof(*info));
	info->client = s->peer;
	info->local = s->local;
	info->session_id = s->id;
	info->sni = s->sni;
	info->tls = s->client_tls;
	if (s->client_tls && s->client->ssl) {
		info->tls_version = SSL_get_version(s->client->ssl);
		const SSL_CIPHER *c = SSL_get_current_cipher(s->client->ssl);
		info->tls_cipher = c ? SSL_CIPHER_get_name(c) : NULL;
	}
	info->ttl = s->cfg->proxy_ttl > 0 ? s->cfg->proxy_ttl - 1 : 0;
}

/* The PROXY header goes out before anything else on the connection, TLS
 * ClientHello included: written straight to the fresh socket. */
static bool send_proxy_header(struct session *s)
{
	struct announce_info info;
	uint8_t buf[PROXY_V2_SEND_MAX + 128];
	size_t n;

	session_announce_info(s, &info);
	if (s->ls->protocol == PROTO_HTTP) {
		/* addresses only, as the reference proxy sends on HTTP legs:
		 * Forwarded carries proto=https, and an nginx ssl listener
		 * (1.22, Debian 12) refuses a header with our TLVs as "too
		 * large" (measured: tests/integration/test_http.py) */
		info.sni = NULL;
		info.session_id = NULL;
		info.tls = false;
	}
	if (s->d->proxy_protocol_version == 1)
		n = proxy_v1_build(&info, (char *)buf, sizeof(buf));
	else
		n = proxy_v2_build(&info, buf, PROXY_V2_SEND_MAX);
	if (n == 0) {
		set_backend_err(s, "cannot build a PROXY header for this client address");
		return false;
	}
	ssize_t w = send(s->backend->fd, buf, n, MSG_NOSIGNAL);
	if (w != (ssize_t)n) {
		set_backend_err(s, "sending PROXY header: %s",
		                w < 0 ? strerror(errno) : "short write");
		return false;
	}
	return true;
}

static void backend_connected(struct session *s)
{
	struct server *srv = srv_of(s);

	if (config_forwarding(s->d, s->ls->protocol) == FORWARD_PROXY && !send_proxy_header(s)) {
		connect_failed(s, s->backend_err);
		return;
	}
	if (s->ep->tls == TLS_MODE_IMPLICIT) {
		SSL *ssl = tls_client_ssl(srv->dest_ctx[s->dest], &srv->dest_opts[s->dest]);
		if (!ssl) {
			connect_failed(s, "TLS client setup failed");
			return;
		}
		s->backend_implicit_pending = true;
		conn_start_tls(s->backend, ssl, false, NULL);
		return;
	}
	health_record_success((size_t)s->dest);
	conn_read_start(s->backend);
	s->ops->backend_ready(s);
}

static void backend_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct session *s = arg;

	if (s->ending || s->closing)
		return;
	switch (ev) {
	case CONN_EV_CONNECTED:
		s->backend_connected = true;
		backend_connected(s);
		return;
	case CONN_EV_TLS_DONE:
		s->backend_tls = true;
		if (s->backend_implicit_pending) {
			s->backend_implicit_pending = false;
			health_record_success((size_t)s->dest);
			conn_read_start(s->backend);
			s->ops->backend_ready(s);
		} else {
			conn_read_start(s->backend);
			s->ops->backend_tls_done(s);
		}
		return;
	case CONN_EV_READ:
		if (s->phase == PHASE_BACKEND)
			s->ops->backend_input(s);
		if (!s->ending && !s->closing && s->phase == PHASE_BACKEND && s->backend_open &&
		    s->backend->eof) {
			session_backend_broken(s, "backend closed the connection");
			return;
		}
		if (!s->ending && !s->closing && s->phase == PHASE_BACKEND && s->backend_open)
			conn_read_start(s->backend);
		return;
	case CONN_EV_EOF:
		session_backend_broken(s, "backend closed the connection");
		return;
	case CONN_EV_ERROR:
		if (c->handshaking && s->backend_implicit_pending) {
			/* TLS or pin failure: counts like an unreachable host */
			s->backend_implicit_pending = false;
			s->addr_next = s->n_addrs;
			s->connect_round = s->cfg->backend_connect_retries;
			connect_failed(s, c->err);
			return;
		}
		if (!s->backend_connected) {
			connect_failed(s, c->err);
			return;
		}
		session_backend_broken(s, c->err);
		return;
	case CONN_EV_DRAINED:
		return;
	}
}

void session_backend_send(struct session *s, const void *data, size_t len)
{
	if (!s->backend_open)
		return;
	conn_write(s->backend, data, len);
	conn_flush(s->backend);
}

void session_backend_printf(struct session *s, const char *fmt, ...)
{
	va_list ap;

	if (!s->backend_open)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(s->backend->out, fmt, ap);
	va_end(ap);
	conn_flush(s->backend);
}

void session_backend_starttls(struct session *s)
{
	struct server *srv = srv_of(s);
	SSL *ssl = tls_client_ssl(srv->dest_ctx[s->dest], &srv->dest_opts[s->dest]);

	if (!ssl) {
		session_backend_broken(s, "TLS client setup failed");
		return;
	}
	/* anything the backend sent after its STARTTLS reply is dropped by
	 * conn_start_tls: it cannot have come through the TLS session */
	conn_start_tls(s->backend, ssl, false, NULL);
}

void session_backend_broken(struct session *s, const char *why)
{
	health_record_failure((size_t)s->dest, (const struct sockaddr *)&s->peer, now_ms());
	metrics_backend_error(s->dest);
	fail_login(s, BACKEND_FAIL_UNAVAILABLE, why);
}

bool session_login_failed(struct session *s, const char *why)
{
	struct logbuf lb;

	evtimer_del(s->btimer);
	if (s->backend_open) {
		conn_release(s->backend, false);
		s->backend_open = false;
	}
	s->auth_attempts++;
	metrics_login(s->ls->protocol, LOGIN_FAILED);
	lb_init(&lb, LOG_INFO, "login-failed");
	lb_str(&lb, "id", s->id);
	lb_str(&lb, "client", s->peer_str);
	lb_str(&lb, "account", s->account[0] ? s->account : NULL);
	lb_str(&lb, "destination", s->d ? s->d->name : NULL);
	lb_str(&lb, "reason", why);
	lb_uint(&lb, "attempt", s->auth_attempts);
	lb_emit(&lb);
	s->phase = PHASE_LOGIN;
	if (s->auth_attempts >= s->ls->max_auth_attempts)
		return false;
	session_client_pause(s, false);
	return true;
}

const char *session_replay_user(const struct session *s)
{
	if (s->d && s->d->login == LOGIN_FULL_ADDRESS)
		return s->account;
	return s->login_user;
}

/* ---- the data path ---- */

static void relay_done(void *arg, const struct relay_stats *st)
{
	struct session *s = arg;

	s->relay = NULL;
	/* += : an HTTP session counted its requests before a WebSocket
	 * upgrade handed the pair over; a mail session starts from 0 here */
	s->bytes_up += st->client_to_backend;
	s->bytes_down += st->backend_to_client;
	s->path_up = st->path_up;
	s->path_down = st->path_down;
	s->end_reason = relay_end_name(st->end);
	if (st->detail[0])
		s->end_detail = xstrdup(st->detail);
	end_session(s, s->end_reason);
}

static void set_relay_state(struct live_session *ls, void *arg)
{
	const char *path = arg;
	ls->state = "relay";
	ls->data_path = path;
}

void session_login_succeeded(struct session *s)
{
	struct relay_leg client = {.fd = s->client->fd, .ssl = s->client->ssl};
	struct relay_leg backend = {.fd = s->backend->fd, .ssl = s->backend->ssl};
	struct relay_stats st;

	evtimer_del(s->timer);
	evtimer_del(s->btimer);
	s->phase = PHASE_RELAY;
	metrics_login(s->ls->protocol, LOGIN_OK);
	/* bytes still on their way: what we queued for one side goes out
	 * before anything the other side sends from now on */
	client.pending = evbuffer_new();
	backend.pending = evbuffer_new();
	evbuffer_add_buffer(client.pending, s->backend->out);
	evbuffer_add_buffer(client.pending, s->client->in);
	evbuffer_add_buffer(backend.pending, s->client->out);
	evbuffer_add_buffer(backend.pending, s->backend->in);
	s->client->ssl = NULL;
	s->backend->ssl = NULL;
	conn_release(s->client, true);
	conn_release(s->backend, true);
	s->backend_open = false;
	s->client->fd = -1;

	struct relay_opts opts = {.idle_ms = s->cfg->bridge_idle_ms,
	                          .mode = s->cfg->data_path,
	                          .kernel_queue_limit = s->cfg->kernel_queue_limit,
	                          .pipe_max = s->cfg->splice_pipe_max,
	                          .live_up = &s->live.bytes_up,
	                          .live_down = &s->live.bytes_down};
	s->relay = relay_start(s->w->base, &client, &backend, &opts, relay_done, s);
	if (s->relay) {
		relay_peek(s->relay, &st);
		registry_update(&s->live, set_relay_state, (void *)st.path_down);
	}
	event_assign(s->timer, s->w->base, -1, 0, shed_login_state, s);
	event_active(s->timer, EV_TIMEOUT, 0);
}

/* ---- for HTTP: one login per request ---- */

/* A kept backend leg can carry the next request when the backend has not
 * closed it, failed, or sent anything unasked in the meantime (the HTTP
 * module keeps reading an idle backend, and looks at the socket itself
 * before reusing a leg that sat idle for a while). */
static bool backend_reusable(struct session *s)
{
	struct conn *b = s->backend;

	if (b->fd < 0 || b->eof || b->failed || b->connecting || b->handshaking ||
	    evbuffer_get_length(b->in) > 0 || evbuffer_get_length(b->out) > 0)
		return false;
	return !b->ssl || SSL_pending(b->ssl) == 0;
}

void session_connect_dest(struct session *s, int dest, bool routed_to_default)
{
	s->phase = PHASE_BACKEND;
	s->routed_to_default = routed_to_default;
	connect_destination(s, dest);
}

void session_backend_drop(struct session *s)
{
	evtimer_del(s->btimer);
	if (s->retry)
		evtimer_del(s->retry);
	if (s->backend_open) {
		conn_release(s->backend, false);
		s->backend_open = false;
	}
	s->backend_connected = false;
	s->backend_implicit_pending = false;
	s->backend_tls = false;
	s->backend_dest = -1;
}

void session_next_login(struct session *s)
{
	if (s->ending || s->closing)
		return;
	evtimer_del(s->btimer);
	s->phase = PHASE_LOGIN;
	s->hold_since_ms = 0;
	s->backend_timed_out = false;
	session_client_pause(s, false);
}

void session_preauth_done(struct session *s)
{
	/* while closing, s->timer bounds the goodbye's flush */
	if (!s->ending && !s->closing)
		evtimer_del(s->timer);
}

void session_backend_wait(struct session *s, bool waiting)
{
	uint64_t ms = s->cfg->backend_timeout_ms;

	evtimer_del(s->btimer);
	if (!waiting || s->ending || s->closing)
		return;
	s->backend_timed_out = false;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(s->btimer, &tv);
}

struct publish {
	struct session *s;
	const char *state;
};

static void set_published(struct live_session *ls, void *arg)
{
	const struct publish *p = arg;
	str_copy(ls->account, p->s->account, sizeof(ls->account));
	str_copy(ls->destination, p->s->d ? p->s->d->name : "", sizeof(ls->destination));
	ls->state = p->state;
}

void session_publish(struct session *s, const char *state)
{
	struct publish p = {s, state};

	/* only this thread writes these fields: reading them needs no lock,
	 * and the process-wide lock is taken only for a change */
	if (s->live.state != state || strcmp(s->live.account, s->account) != 0 ||
	    strcmp(s->live.destination, s->d ? s->d->name : "") != 0)
		registry_update(&s->live, set_published, &p);
	atomic_store_explicit(&s->live.bytes_up, s->bytes_up, memory_order_relaxed);
	atomic_store_explicit(&s->live.bytes_down, s->bytes_down, memory_order_relaxed);
}

/* ---- hand-over to a successor process (docs/upgrade.md) ---- */

int session_export(struct session *s, struct ho_session *rec, int *fds, char *why, size_t whylen)
{
	struct relay_stats st;

	if (s->ending || s->closing || s->moving) {
		snprintf(why, whylen, "ending");
		return 0;
	}
	if (s->phase != PHASE_RELAY || !s->relay) {
		snprintf(why, whylen, "login in progress");
		return 0;
	}
	memset(rec, 0, sizeof(*rec));
	str_copy(rec->id, s->id, sizeof(rec->id));
	str_copy(rec->account, s->account, sizeof(rec->account));
	str_copy(rec->listener, s->ls->name, sizeof(rec->listener));
	str_copy(rec->protocol, proto_name(s->ls->protocol), sizeof(rec->protocol));
	str_copy(rec->client, s->peer_str, sizeof(rec->client));
	str_copy(rec->destination, s->d ? s->d->name : "", sizeof(rec->destination));
	str_copy(rec->sni, s->sni ? s->sni : "", sizeof(rec->sni));
	rec->peer = s->peer;
	rec->local = s->local;
	rec->client_tls = s->client_tls;
	rec->routed_default = s->routed_to_default;
	rec->auth_failures = s->auth_attempts;
	rec->moves = s->moves;
	rec->started_ms = s->live.started_ms;
	rec->started_us = s->started_us;
	relay_peek(s->relay, &st);
	rec->bytes_up = st.client_to_backend;
	rec->bytes_down = st.backend_to_client;
	int r = relay_export(s->relay, rec, fds, why, whylen);
	if (r == 1)
		s->moving = true;
	return r;
}

void session_export_done(struct session *s, bool adopted, const char *detail)
{
	struct relay_stats st;

	if (!s->moving)
		return;
	s->moving = false;
	if (!adopted) {
		s->move_refused = true;
		log_msg(LOG_INFO, "handover-session", "id=%s result=kept reason=\"%s\"", s->id,
		        detail ? detail : "");
		relay_export_resume(s->relay);
		if (s->kick_pending)
			session_abort(s, "kicked");
		return;
	}
	relay_peek(s->relay, &st);
	s->bytes_up = st.client_to_backend;
	s->bytes_down = st.backend_to_client;
	s->path_up = st.path_up;
	s->path_down = st.path_down;
	relay_export_release(s->relay);
	s->relay = NULL;
	s->moved_away = true;
	log_msg(LOG_INFO, "handover-session",
	        "id=%s result=moved account=%s bytes_up=%llu "
	        "bytes_down=%llu",
	        s->id, s->account[0] ? s->account : "-", (unsigned long long)s->bytes_up,
	        (unsigned long long)s->bytes_down);
	end_session(s, "moved");
}

static void set_adopted(struct live_session *ls, void *arg)
{
	const struct session *s = arg;
	ls->state = "relay";
	ls->data_path = s->path_down;
	ls->moves = s->moves;
}

bool session_adopt(struct worker *w, const struct ho_session *rec, int *fds, pid_t from, char *why,
                   size_t whylen)
{
	struct server *srv = w->srv;
	const struct config *cfg = srv->cfg;
	size_t li = SIZE_MAX;
	int dest = -1;

	for (size_t i = 0; i < cfg->n_listeners && li == SIZE_MAX; i++)
		if (strcmp(cfg->listeners[i].name, rec->listener) == 0)
			li = i;
	if (li == SIZE_MAX) {
		snprintf(why, whylen, "listener %s is not in the new configuration", rec->listener);
		return false;
	}
	const struct cfg_listener *ls = &cfg->listeners[li];
	if (strcmp(proto_name(ls->protocol), rec->protocol) != 0) {
		snprintf(why, whylen, "listener %s now serves %s, not %s", ls->name,
		         proto_name(ls->protocol), rec->protocol);
		return false;
	}
	for (size_t i = 0; i < cfg->n_dests && dest < 0; i++)
		if (strcmp(cfg->dests[i].name, rec->destination) == 0)
			dest = (int)i;
	if (dest < 0) {
		snprintf(why, whylen, "destination %s is not in the new configuration",
		         rec->destination);
		return false;
	}
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	s->w = w;
	s->cfg = cfg;
	s->ls = ls;
	s->listener_index = li;
	s->ops = ops_for(ls->protocol);
	s->phase = PHASE_RELAY;
	s->dest = dest;
	s->d = &cfg->dests[dest];
	s->ep = &s->d->endpoint[ls->protocol];
	s->started_us = rec->started_us;
	s->peer = rec->peer;
	s->local = rec->local;
	str_copy(s->peer_str, rec->client, sizeof(s->peer_str));
	str_copy(s->id, rec->id, sizeof(s->id));
	str_copy(s->account, rec->account, sizeof(s->account));
	s->sni = rec->sni[0] ? xstrdup(rec->sni) : NULL;
	s->client_tls = rec->client_tls;
	s->routed_to_default = rec->routed_default;
	s->auth_attempts = rec->auth_failures;
	s->moves = rec->moves + 1;
	/* the relay counts on from these (relay_done adds its counts to
	 * bytes_up/down, which stay 0 here) */
	s->carried_up = rec->bytes_up;
	s->carried_down = rec->bytes_down;
	s->end_ev = event_new(w->base, -1, 0, on_end, s);
	if (!s->end_ev) {
		free(s);
		snprintf(why, whylen, "out of memory");
		return false;
	}
	s->live.base = w->base;
	s->live.kick = on_kick;
	str_copy(s->live.session_id, s->id, sizeof(s->live.session_id));
	str_copy(s->live.account, s->account, sizeof(s->live.account));
	str_copy(s->live.listener, ls->name, sizeof(s->live.listener));
	str_copy(s->live.destination, s->d->name, sizeof(s->live.destination));
	str_copy(s->live.client, s->peer_str, sizeof(s->live.client));
	s->live.protocol = ls->protocol;
	s->live.started_ms = rec->started_ms;
	atomic_store(&s->live.bytes_up, rec->bytes_up);
	atomic_store(&s->live.bytes_down, rec->bytes_down);

	struct relay_opts opts = {.idle_ms = cfg->bridge_idle_ms,
	                          .mode = cfg->data_path,
	                          .kernel_queue_limit = cfg->kernel_queue_limit,
	                          .pipe_max = cfg->splice_pipe_max,
	                          .live_up = &s->live.bytes_up,
	                          .live_down = &s->live.bytes_down};
	s->relay = relay_adopt(w->base, rec, fds, &opts, relay_done, s, why, whylen);
	if (!s->relay) {
		event_free(s->end_ev);
		free(s);
		return false;
	}
	struct relay_stats st;
	relay_peek(s->relay, &st);
	s->path_up = st.path_up;
	s->path_down = st.path_down;
	s->live.state = "relay";
	s->live.data_path = st.path_down;
	registry_add(&s->live);
	registry_update(&s->live, set_adopted, s);
	atomic_fetch_add(&srv->listener_conns[li], 1);
	worker_session_added(w, s);
	metrics_session_start(ls->protocol);
	log_msg(LOG_INFO, "handover-session",
	        "id=%s result=adopted from_pid=%d account=%s path_up=%s path_down=%s moves=%u",
	        s->id, (int)from, s->account[0] ? s->account : "-", st.path_up, st.path_down,
	        s->moves);
	return true;
}
