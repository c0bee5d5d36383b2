/*
 * The control socket and the hand-over channel (docs/upgrade.md).
 *
 * The running daemon listens on [server] control_socket, a SOCK_SEQPACKET
 * Unix socket created as root before privileges are dropped (mode 0600).
 * `mailspliced --upgrade` starts the successor, which connects there and
 * speaks the messages of handover.h; each side checks the other's
 * credentials (root, or the daemon's own user).
 *
 * A channel is one connected socket with a send queue: messages (and the
 * descriptors that travel with them) are queued from any thread and sent
 * by the owning event loop; received messages are decoded (ho_decode) and
 * handed to a callback on that loop, descriptors included.
 */
#ifndef MAILSPLICE_CONTROL_H
#define MAILSPLICE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <event2/event.h>

#include "handover.h"

/* Bind and listen at path. Returns the fd; -1 with err on failure; -2 when
 * the directory does not exist (no control socket: upgrades disabled, not
 * an error). A live daemon already answering at path is a failure: two
 * daemons must not share one control socket. */
int control_listen(const char *path, char *err, size_t errlen);

/* Connect to the daemon at path (blocking, close-on-exec). */
int control_connect(const char *path, char *err, size_t errlen);

/* The peer of a connected control socket: root, our own uid or also (the
 * [server] user, (uid_t)-1 for none) may speak. *pid is its process id. */
bool control_peer_ok(int fd, uid_t also, pid_t *pid, char *err, size_t errlen);

/* Blocking helpers for the successor's start-up, before its loop runs. */
bool control_send(int fd, const struct ho_msg *m, const int *fds, char *err, size_t errlen);
/* Wait up to timeout_ms for one message; fds[] receives its descriptors
 * (HO_FDS_MAX at most; on failure none are left open). */
bool control_recv(int fd, struct ho_msg *m, int *fds, unsigned *n_fds, int timeout_ms, char *err,
                  size_t errlen);

struct ho_chan;
/* A message arrived: fds are the callee's (it closes what it does not keep). */
typedef void (*ho_chan_msg_cb)(struct ho_chan *c, const struct ho_msg *m, int *fds, unsigned n_fds,
                               void *arg);
/* The peer went away or sent what we cannot read: the channel is dead (free
 * it from here or later). */
typedef void (*ho_chan_end_cb)(struct ho_chan *c, const char *why, void *arg);

struct ho_chan *ho_chan_new(struct event_base *base, int fd, ho_chan_msg_cb on_msg,
                            ho_chan_end_cb on_end, void *arg);
/* Queue m; the descriptors are duplicated now (the caller keeps its own).
 * Thread-safe. False if m cannot be encoded or the channel is dead. */
bool ho_chan_send(struct ho_chan *c, const struct ho_msg *m, const int *fds);
/* Bytes and messages still queued. */
size_t ho_chan_queued(struct ho_chan *c);
/* Send what is queued, blocking up to timeout_ms (before exiting). */
void ho_chan_flush(struct ho_chan *c, int timeout_ms);
void ho_chan_free(struct ho_chan *c);

#endif
