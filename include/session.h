/*
 * One client session, shared by every protocol.
 *
 *   accept -> [PROXY header from a trusted balancer] -> [implicit TLS]
 *     -> protocol login dialogue (proto_ops)           client leg only
 *     -> session_login(): canonical account, route, connect, backend TLS,
 *        PROXY header                                  core
 *     -> protocol backend dialogue: greeting, STARTTLS, announcement,
 *        login replay, verdict to the client            proto_ops
 *     -> session_login_succeeded(): hand both legs to the data path
 *
 * Everything happens on the worker thread that accepted the connection.
 * Protocol modules never touch sockets: they read s->client.in /
 * s->backend.in and write through the helpers below.
 */
#ifndef MAILSPLICE_SESSION_H
#define MAILSPLICE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "announce.h"
#include "config.h"
#include "conn.h"
#include "registry.h"

struct session;
struct worker;
struct relay;

/* Why a login could not reach a backend. */
enum backend_failure {
	BACKEND_FAIL_UNAVAILABLE, /* down, unreachable, refused, TLS/pin failure, timeout */
	BACKEND_FAIL_LOOKUP,      /* the mapping store could not answer */
	BACKEND_FAIL_BAD_LOGIN,   /* the identifier cannot be an account */
};

#define LOGIN_USER_MAX 255

struct proto_ops {
	const char *name;
	/* send the greeting (client leg ready, TLS done if implicit) */
	void (*greet)(struct session *s);
	/* STARTTLS with the client completed (optional: ManageSieve repeats
	 * its capabilities, RFC 5804 section 2.2) */
	void (*client_tls_started)(struct session *s);
	/* bytes arrived in s->client.in before the login completed */
	void (*client_input)(struct session *s);
	/* backend leg connected (implicit TLS done, PROXY header sent) */
	void (*backend_ready)(struct session *s);
	/* bytes arrived in s->backend.in */
	void (*backend_input)(struct session *s);
	/* the backend STARTTLS handshake completed */
	void (*backend_tls_done)(struct session *s);
	/* session_login could not get a backend: tell the client */
	void (*backend_failed)(struct session *s, enum backend_failure why);
	/* preauth_timeout expired / server shutting down: say goodbye */
	void (*goodbye)(struct session *s, const char *why);
	/* release the protocol state (wipe secrets) */
	void (*free)(struct session *s);
	/* the client's FIN before the hand-over is not the end of the session
	 * but part of the byte stream the relay carries on (port 25 bridges
	 * bytes and never answers for the client) */
	bool relays_client_eof;
	/* HTTP: the backend leg outlives one request; the next login routed to
	 * the same destination reuses it while it is alive (see
	 * session_connect_dest) */
	bool keeps_backend;
};

extern const struct proto_ops imap_ops;
/* Weak references: a protocol whose module is not linked in is refused
 * politely with its own temporary error. */
extern const struct proto_ops pop3_ops __attribute__((weak));
extern const struct proto_ops submission_ops __attribute__((weak));
extern const struct proto_ops sieve_ops __attribute__((weak));
extern const struct proto_ops smtp_passthrough_ops __attribute__((weak));
extern const struct proto_ops http_ops __attribute__((weak));

enum session_phase {
	PHASE_PROXY_HEADER, /* waiting for a balancer's PROXY header */
	PHASE_CLIENT_TLS,   /* implicit TLS handshake */
	PHASE_LOGIN,        /* protocol dialogue with the client */
	PHASE_BACKEND,      /* connecting / talking to the backend */
	PHASE_RELAY,        /* data path */
	PHASE_CLOSING,
};

struct session {
	struct worker *w;
	const struct config *cfg;
	const struct cfg_listener *ls;
	size_t listener_index;
	const struct proto_ops *ops;
	void *proto; /* the protocol's state */
	enum session_phase phase;

	struct live_session live; /* registry entry: id, account, state */
	char id[17];
	uint64_t started_us;

	struct conn *client; /* the legs: NULL once the data path has the sockets */
	struct conn *backend;
	bool backend_open;
	int backend_dest; /* the destination the open backend leg goes to, or -1 */

	struct sockaddr_storage peer;  /* real client (after a PROXY header) */
	struct sockaddr_storage local; /* address the client connected to */
	char peer_str[64];

	/* client TLS */
	bool client_tls;
	char *sni; /* NULL: none */
	size_t starttls_discarded;

	/* login */
	unsigned auth_attempts;
	char *login_user;  /* as sent by the client (at most LOGIN_USER_MAX); wiped at the hand-over
	                    */
	char account[256]; /* canonical */
	int dest;          /* destination index, -1 before routing */
	const struct cfg_destination *d;
	const struct cfg_endpoint *ep;
	bool routed_to_default;
	uint64_t hold_since_ms;      /* when a /connections/delay hold first held this login */
	struct route_lookup *lookup; /* a remote mapping store's answer being awaited */

	/* backend connect */
	struct sockaddr_storage *addrs;
	size_t n_addrs, addr_next;
	unsigned connect_round;
	struct evdns_getaddrinfo_request *dns_req;
	char *backend_err; /* the last connect failure */
	bool backend_tls;

	struct event *timer;  /* preauth_timeout (whole login), then close flush */
	struct event *btimer; /* backend_timeout */
	struct event *retry;  /* backend_connect_retries spacing */
	struct event *pp_ev;  /* reading a balancer's PROXY header */
	struct event *end_ev; /* deferred end: frees the session */
	bool ending, closing;
	bool starttls_pending;
	bool dns_pending;
	bool backend_connected;        /* TCP connect completed */
	bool backend_implicit_pending; /* implicit TLS handshake under way */
	bool backend_timed_out;        /* backend_timeout expired (HTTP answers 504) */

	struct relay *relay;
	const char *end_reason;
	char *end_detail; /* the relay's error text, if any (session line "detail=") */
	uint64_t bytes_up, bytes_down;
	const char *path_up, *path_down;

	/* hand-over to a successor process (docs/upgrade.md) */
	uint32_t moves;                    /* times this session changed process */
	uint64_t carried_up, carried_down; /* bytes counted by the processes before */
	bool moving;                       /* offered to the successor, answer pending */
	bool moved_away;                   /* the successor has it: end here silently */
	bool kick_pending;                 /* a kick that arrived while moving */
	bool move_refused;                 /* the successor said no: not offered again */
	bool drain_noted;                  /* logged once as staying here */

	struct session *prev, *next; /* the worker's list */
};

/* Accept: create a session for fd on worker w. Takes ownership of fd. */
void session_accept(struct worker *w, size_t listener_index, int fd,
                    const struct sockaddr_storage *peer);

/* ---- for protocol modules: the client leg ---- */

void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_reply_raw(struct session *s, const void *data, size_t len);
/* Flush what was queued, then close; reason goes to the session log line. */
void session_close(struct session *s, const char *reason);
/* Switch the client leg to TLS after the "go ahead" reply was queued. */
void session_client_starttls(struct session *s);
bool session_client_secure(const struct session *s);
/* Whether a plaintext login may be accepted on this leg now. */
bool session_plain_auth_allowed(const struct session *s);
/* Stop/resume reading the client while the backend works. */
void session_client_pause(struct session *s, bool pause);

/* ---- the login ---- */

/* Route login_user (as the client sent it) and connect the backend.
 * Ends in ops->backend_ready or ops->backend_failed. */
void session_login(struct session *s, const char *login_user);
/* No login (SMTP on port 25): connect smtp_passthrough_destination now.
 * Ends in ops->backend_ready or ops->backend_failed, like session_login. */
void session_connect_passthrough(struct session *s);
/* The user name to replay, per the destination's login form. */
const char *session_replay_user(const struct session *s);
/* Announcement data for this session. */
void session_announce_info(const struct session *s, struct announce_info *info);

/* ---- for protocol modules: the backend leg ---- */

void session_backend_send(struct session *s, const void *data, size_t len);
void session_backend_printf(struct session *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
void session_backend_starttls(struct session *s);
/* The backend refused the login (or misbehaved): drop the backend leg and
 * count an attempt. Returns false when max_auth_attempts is reached (the
 * protocol then says goodbye and closes). */
bool session_login_failed(struct session *s, const char *why);
/* The backend dialogue broke (bad greeting, STARTTLS refused, ...):
 * counts toward the circuit breaker, calls ops->backend_failed. */
void session_backend_broken(struct session *s, const char *why);
/* The backend accepted the login and its reply was queued to the client:
 * hand both legs to the data path. */
void session_login_succeeded(struct session *s);

/* Kick / shutdown (worker thread). */
void session_abort(struct session *s, const char *reason);

/* ---- for HTTP: one login per request on a kept-alive connection ----
 *
 * Every request is routed on its own: an account goes through
 * session_login() (canonical form, holds, mapping, cache), a pinned or
 * fallback route through session_connect_dest(). With ops->keeps_backend
 * the backend leg stays open between requests: a login routed to the
 * destination it is connected to reuses it while it is alive (ops->
 * backend_ready comes at once, without a new announcement); a login routed
 * elsewhere closes it and connects anew. */

/* Connect destination dest (an index into cfg->dests) without a lookup.
 * Ends in ops->backend_ready or ops->backend_failed, like session_login;
 * both may be called before this returns. The client leg keeps reading
 * (so does session_login's for a keeps_backend protocol). */
void session_connect_dest(struct session *s, int dest, bool routed_to_default);
/* Close the backend leg now (the next request connects anew). */
void session_backend_drop(struct session *s);
/* The request is answered: back to PHASE_LOGIN, client reads on, and the
 * next login may be held again by /connections/delay. */
void session_next_login(struct session *s);
/* The first request reached a backend: preauth_timeout no longer applies. */
void session_preauth_done(struct session *s);
/* Arm (waiting) or stop backend_timeout while the backend owes an answer;
 * on expiry ops->backend_failed(BACKEND_FAIL_UNAVAILABLE) is called with
 * s->backend_timed_out set. */
void session_backend_wait(struct session *s, bool waiting);
/* Show account, destination and state (e.g. "request", "keepalive") in
 * GET /sessions; bytes_up/bytes_down are published as the live counters. */
void session_publish(struct session *s, const char *state);
/* ---- hand-over to a successor process (docs/upgrade.md), worker thread ---- */

struct ho_session;
/* Offer s: 1 = quiesced and described in rec and fds (client, backend,
 * pipes; the session keeps its own copies), answer with
 * session_export_done; 0 = not now (why says: a login in progress, bytes
 * that cannot be flushed yet); -1 = never (TLS in OpenSSL). */
int session_export(struct session *s, struct ho_session *rec, int *fds, char *why, size_t whylen);
/* The successor adopted s (it ends here without a word to either peer) or
 * refused it (it carries on here). */
void session_export_done(struct session *s, bool adopted, const char *detail);
/* Resume a session a predecessor passed on, on the same data path; takes
 * fds on success only. */
bool session_adopt(struct worker *w, const struct ho_session *rec, int *fds, pid_t from, char *why,
                   size_t whylen);

#endif
