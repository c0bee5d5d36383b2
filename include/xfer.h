/*
 * A bounded transfer of exactly n bytes from one leg to another: an HTTP
 * body with a Content-Length, the data inside a large chunk, or (n =
 * XFER_UNTIL_EOF) a body that ends with the connection.
 *
 *   both legs in the kernel's reach (plain, or kTLS in the needed
 *   direction)  : splice(2) through a pipe sized up to 1 MiB; the bytes
 *                 never enter user space
 *   otherwise    : a bounded userspace copy through OpenSSL
 *
 * Bytes the caller already read from the source (its conn's input buffer)
 * and bytes it queued for the destination (a response head) go out first,
 * in that order after the queued ones, and nothing beyond the n body bytes
 * is taken from the source: a pipelined request behind the body stays in
 * the caller's buffer or in the socket.
 *
 * Backpressure: the source is read only while the pipe (or the userspace
 * buffer, XFER_BUFFER) has room, so a slow reader slows the writer down
 * through TCP flow control. While a transfer runs, the caller keeps its
 * own events off the source (conn_read_stop) and writes nothing to the
 * destination.
 */
#ifndef MAILSPLICE_XFER_H
#define MAILSPLICE_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#define XFER_UNTIL_EOF UINT64_MAX
#define XFER_BUFFER    (256 * 1024) /* userspace bytes in flight, at most */
#define XFER_PIPE_MAX  (1 << 20)    /* the pipe is asked for this size */

struct xfer_leg {
	int fd;   /* connected, non-blocking */
	SSL *ssl; /* NULL: plain; else the handshake is done */
};

enum xfer_end {
	XFER_DONE,      /* n bytes (or everything up to the source's EOF) written */
	XFER_SRC_EOF,   /* the source ended before n bytes */
	XFER_SRC_ERROR, /* reading the source failed (reset, TLS error) */
	XFER_DST_ERROR, /* writing the destination failed */
	XFER_IDLE,      /* idle_ms without a byte moving */
	XFER_NO_MEMORY,
};

struct xfer_result {
	enum xfer_end end;
	uint64_t moved;   /* body bytes written to the destination */
	const char *path; /* "splice", "ktls-splice" or "userspace" */
	char detail[128]; /* the error, if any */
};

typedef void (*xfer_done_cb)(void *arg, const struct xfer_result *r);

struct xfer;

/*
 * Start moving n bytes from src to dst on base (the calling thread's).
 *   dst_first  bytes queued for dst before the body (may be NULL): all of
 *              them go first; the buffer is drained
 *   src_read   bytes already read from src (may be NULL): the first
 *              min(n, length) are the start of the body and are taken out;
 *              the rest stay for the caller
 *   kernel     whether splice(2) may be used (data_path != "userspace")
 * done runs exactly once, from the event loop, never from inside
 * xfer_start; the transfer is freed before it runs (the callback may start
 * the next one on the same fds). The legs stay the caller's.
 */
struct xfer *xfer_start(struct event_base *base, const struct xfer_leg *src,
                        const struct xfer_leg *dst, struct evbuffer *dst_first,
                        struct evbuffer *src_read, uint64_t n, uint64_t idle_ms, bool kernel,
                        xfer_done_cb done, void *arg);

/* Stop now, without the callback (the caller closes the legs). */
void xfer_cancel(struct xfer *x);

/* Body bytes written so far, and the path chosen. */
uint64_t xfer_moved(const struct xfer *x);
const char *xfer_path(const struct xfer *x);

const char *xfer_end_name(enum xfer_end e);

#endif
