/*
 * The data path after the login: move bytes between a client leg and a
 * backend leg until either side is done, best path first.
 *
 *   plain <-> plain : both sockets in the BPF sockmap, verdict program
 *                     redirects (bounded: see docs/datapath.md)
 *   a TLS leg       : kTLS on that leg when the kernel has it, splice(2)
 *                     through a pooled pipe
 *   otherwise       : userspace relay (OpenSSL), same limits
 *
 * The session core hands over two established legs (fd, optional SSL after
 * the handshake, bytes already read from each side that the other side has
 * not seen yet) and gets exactly one done callback.
 */
#ifndef MAILSPLICE_RELAY_H
#define MAILSPLICE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "config.h" /* enum data_path_mode */

/* What the host kernel offers, probed once at start-up (main thread). */
struct datapath_caps {
	bool sockmap;     /* BPF sockmap redirect usable */
	bool ktls;        /* the "tls" ULP can be set on a TCP socket */
	bool splice;      /* splice(2) between sockets and pipes */
	bool kernel_path; /* sessions use sockmap/kTLS: needs CAP_BPF and CAP_NET_ADMIN */
};

/* Probe, load the BPF objects if sockmap is usable and wanted, log one line
 * ("data_path=sockmap ktls=off ...") saying what will be used and why.
 * Never fails hard: falls back to what works. Returns false only when the
 * operator forced a mode (want != DATA_PATH_AUTO) that cannot work; err
 * says why. */
bool datapath_init(enum data_path_mode want, char *err, size_t errlen);
const struct datapath_caps *datapath_caps(void);
void datapath_shutdown(void);

struct relay_leg {
	int fd;                   /* connected TCP socket, non-blocking; relay owns it */
	SSL *ssl;                 /* NULL for plain; handshake done; relay owns it */
	struct evbuffer *pending; /* read from this leg, not yet sent to the other
	                             (may be NULL); relay drains and frees it */
};

enum relay_end {
	RELAY_END_CLIENT_CLOSED,
	RELAY_END_BACKEND_CLOSED,
	RELAY_END_IDLE,
	RELAY_END_ERROR,
	RELAY_END_KICKED,
	RELAY_END_SHUTDOWN,
};

const char *relay_end_name(enum relay_end e);

struct relay_stats {
	uint64_t client_to_backend, backend_to_client; /* application bytes */
	const char *path_up, *path_down; /* "sockmap", "ktls-splice", "splice", "userspace" */
	bool ktls_client, ktls_backend;
	enum relay_end end;
	char detail[128]; /* error text when end == RELAY_END_ERROR */
};

typedef void (*relay_done_cb)(void *arg, const struct relay_stats *st);

struct relay_opts {
	uint64_t idle_ms; /* tear down after this long without bytes either way; 0 = never */
	enum data_path_mode mode; /* per-session cap; DATA_PATH_AUTO = best available */
};

struct relay;

/* Start relaying on base (the calling thread's). Takes ownership of both
 * legs, whatever happens. done is called exactly once, from base, after
 * both fds are closed; never from inside relay_start. */
struct relay *relay_start(struct event_base *base, struct relay_leg *client,
                          struct relay_leg *backend, const struct relay_opts *opts,
                          relay_done_cb done, void *arg);

/* Tear down now (RST both sides); done follows with end. Call from base. */
void relay_stop(struct relay *r, enum relay_end end);

/* Live counters (may lag for kernel paths). */
void relay_peek(const struct relay *r, struct relay_stats *st);

#endif
