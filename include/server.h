/*
 * The running server: configuration, shared state and worker threads.
 *
 * Each worker has its own event loop and its own SO_REUSEPORT listening
 * sockets for every bind address, so the kernel spreads connections over
 * the workers without a shared accept lock. State shared between workers
 * (router, destination health, registry, metrics) is thread-safe.
 */
#ifndef MAILSPLICE_SERVER_H
#define MAILSPLICE_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h"
#include "mapping.h"
#include "tls.h"

struct session;
struct store;
struct store_loop;
struct http_router;

struct worker {
	struct server *srv;
	size_t index;
	pthread_t thread;
	struct event_base *base;
	struct evdns_base *dns;
	struct evconnlistener **listeners; /* one per (listener, bind) */
	size_t *listener_of;               /* its index in cfg->listeners */
	size_t n_listeners;
	struct session *sessions; /* list of live sessions */
	size_t n_sessions;
	struct event *cmd_ev;     /* commands from the main thread */
	atomic_int cmd;           /* enum worker_cmd */
	struct store_loop *store; /* this loop's mapping store connections, NULL: file */
};

enum worker_cmd {
	WORKER_CMD_NONE,
	WORKER_CMD_DRAIN, /* stop accepting, say goodbye to sessions not logged in */
	WORKER_CMD_STOP,  /* end every session now, leave the loop */
};

struct server {
	struct config *cfg;
	struct router router;
	struct store *store;    /* a remote mapping store (Redis, SQL), NULL for the file */
	struct tls_server *tls; /* NULL if no certificates */
	SSL_CTX **dest_ctx;     /* per destination; NULL if no TLS leg */
	struct tls_client_opts *dest_opts;
	atomic_size_t *listener_conns; /* per listener, for max_connections */
	atomic_size_t *source_next;    /* per destination, source_ips round robin */
	struct http_router *http;      /* [[http.route]], when an http listener exists */
	struct worker *workers;
	size_t n_workers;
	atomic_bool draining;
	atomic_size_t active;
	/* every listening socket, in the order a hand-over numbers them */
	struct server_listen *listen;
	size_t n_listen;
};

/* One listening socket of a worker (read-only after server_init). */
struct server_listen {
	int fd;
	size_t worker;
	size_t listener; /* index in cfg->listeners */
	size_t bind;     /* index in its binds */
};

/* A listening socket received from the process this one replaces
 * (docs/upgrade.md): server_init adopts every one whose address a
 * configured bind has, instead of binding that address again, and marks
 * it taken (the fd is then the server's). */
struct inherited_listener {
	int fd;
	uint32_t index; /* the predecessor's number for it */
	struct sockaddr_storage addr;
	bool taken;
};
void server_inherit_listeners(struct inherited_listener *l, size_t n);

/* Build contexts and bind every listener (per worker). err names the
 * listener and address on failure. */
bool server_init(struct server *srv, struct config *cfg, char *err, size_t errlen);
bool server_start_workers(struct server *srv, char *err, size_t errlen);
void server_command(struct server *srv, enum worker_cmd cmd);
void server_join(struct server *srv);
void server_free(struct server *srv);

/* A successor took over: stop accepting. taken[i] (i < n) says whether it
 * adopted listening socket i (srv->listen[i]); a socket it did not take
 * (its bind is gone from the new configuration) is drained first: what is
 * already queued on it is accepted and served here. Main thread. */
void server_handover_listeners(struct server *srv, const bool *taken, size_t n);
/* Called by the session code */
void worker_session_added(struct worker *w, struct session *s);
void worker_session_removed(struct worker *w, struct session *s);

#endif
