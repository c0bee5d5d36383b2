/*
 * The data path after the login: move bytes between a client leg and a
 * backend leg until either side is done, best path first.
 *
 *   plain <-> plain : splice(2) through a pooled pipe that grows for busy
 *                     directions (pipes.h); with data_path =
 *                     "sockmap", both sockets in the BPF sockmap and the
 *                     verdict program redirects (bounded, experimental:
 *                     see docs/datapath.md)
 *   a TLS leg       : per direction, splice(2) through a pooled pipe when
 *                     the source can be read in the kernel (plain, or kTLS
 *                     RX) and the destination written there (plain, or
 *                     kTLS TX)
 *   otherwise       : userspace relay (OpenSSL), bounded buffers
 *
 * The session core hands over two established legs (fd, optional SSL after
 * the handshake, bytes already read from each side that the other side has
 * not seen yet) and gets exactly one done callback.
 */
#ifndef MAILSPLICE_RELAY_H
#define MAILSPLICE_RELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include <linux/types.h>

#include "config.h" /* enum data_path_mode */
#include "relay_bpf.h"

/* What the host kernel offers, probed once at start-up (main thread). */
struct datapath_caps {
	bool sockmap;     /* BPF sockmap redirect passed the probe */
	bool ktls;        /* the "tls" ULP can be set on a TCP socket */
	bool splice;      /* splice(2) between sockets and pipes */
	bool kernel_path; /* sessions use sockmap (data_path = "sockmap"): keep CAP_BPF
	                     and CAP_NET_ADMIN */
};

/* Probe, load the BPF objects if sockmap is usable and wanted, log one line
 * ("data_path=sockmap ktls=off ...") saying what will be used and why.
 * Never fails hard: falls back to what works. Returns false only when the
 * operator forced a mode (want != DATA_PATH_AUTO) that cannot work; err
 * says why. */
bool datapath_init(enum data_path_mode want, char *err, size_t errlen);
const struct datapath_caps *datapath_caps(void);
void datapath_shutdown(void);

/* Two sockets of one session in the sockmap (datapath.c). dir[i] is
 * the kernel state of the direction whose source is socket i; it lives in
 * memory shared with the verdict program. Thread-safe. */
struct sockmap_pair {
	uint32_t slot[2];
	uint64_t cookie[2];
	struct ms_dir *dir[2];
	bool installed;
};
/* Put a connected pair into the map. The program redirects from the first
 * byte: the caller has nothing of its own left to write. */
bool sockmap_pair_add(struct sockmap_pair *p, int fd_a, int fd_b, uint32_t limit, char *err,
                      size_t errlen);
void sockmap_pair_remove(struct sockmap_pair *p);
size_t sockmap_slots_in_use(void);

/* Hand-over (docs/upgrade.md). The predecessor: the four descriptors a
 * successor needs to keep using this sockhash (program, sockhash, slot map,
 * slot array), false if none is loaded; after datapath_sockmap_freeze() no
 * new pair joins the map here (logins that finish splice instead). */
bool datapath_sockmap_fds(int out[4]);
void datapath_sockmap_freeze(void);
/* The successor: use the predecessor's maps instead of its own (takes the
 * descriptors on success). */
bool datapath_adopt_sockmap(const int fds[4], uint32_t dir_size, uint32_t max_sockets, char *err,
                            size_t errlen);
/* A pair the predecessor put in the map: fd_a/fd_b must be the sockets in
 * slots[0]/slots[1]. */
bool sockmap_pair_adopt(struct sockmap_pair *p, int fd_a, int fd_b, const uint32_t slots[2],
                        char *err, size_t errlen);
/* Drop the record of a pair without touching the map. */
void sockmap_pair_forget(struct sockmap_pair *p);

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
	enum data_path_mode mode;    /* per-session cap; DATA_PATH_AUTO = best available */
	uint32_t kernel_queue_limit; /* sockmap: most bytes queued in the kernel per direction */
	uint32_t pipe_max;           /* splice: largest pipe one direction grows to (pipes.h) */
	/* optional: bytes relayed so far each way, stored after every step for
	 * readers on other threads (the admin API's /sessions) */
	atomic_uint_fast64_t *live_up, *live_down;
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

/* ---- hand-over to a successor process (docs/upgrade.md) ---- */

struct ho_session;
/* Stop touching the sockets and describe the relay in rec->leg/dir and
 * fds (client, backend, pipes): 1. Not movable now (0) or ever (-1): why
 * says; the relay carries on untouched. Call from base. */
int relay_export(struct relay *r, struct ho_session *rec, int *fds, char *why, size_t whylen);
/* The successor refused it: carry on. */
void relay_export_resume(struct relay *r);
/* The successor has it: free r and drop this process's descriptors without
 * a FIN, a reset or a map update; no done callback. */
void relay_export_release(struct relay *r);
/* Resume a relay a predecessor exported, on the same data path. Takes the
 * descriptors on success only. */
struct relay *relay_adopt(struct event_base *base, const struct ho_session *rec, const int *fds,
                          const struct relay_opts *opts, relay_done_cb done, void *arg, char *why,
                          size_t whylen);

#endif
