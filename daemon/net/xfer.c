/*
 * Bounded transfers of n bytes between two legs (see xfer.h).
 *
 * Two engines, chosen once at the start:
 *
 *   splice     src -> pipe -> dst with splice(2), when the source can be
 *              read in the kernel (plain, or kTLS RX) and the destination
 *              written there (plain, or kTLS TX). The pipe is asked for
 *              XFER_PIPE_MAX: on loopback each splice(2) moves at most one
 *              pipe's worth, and the cost is per call (notes: 64 KiB pipes
 *              cost 0.51-0.59 CPU-s/GiB, 1 MiB pipes 0.33-0.40).
 *   userspace  read/SSL_read into a flat buffer of XFER_BUFFER bytes,
 *              write/SSL_write out of it.
 *
 * Ordering: bytes queued for the destination and bytes the caller had
 * already read go out first, from the buffer. In the splice engine the
 * buffer and the pipe are never both non-empty: the source is spliced
 * only while the buffer is empty, and read into the buffer (OpenSSL's
 * already decrypted bytes, a kTLS control record) only while the pipe is
 * empty, so the destination sees the bytes in source order.
 *
 * A splice into a pipe that still holds bytes may fail with EAGAIN because
 * the pipe's slots are full of partial pages (loopback fills a slot with at
 * most 4 KiB), not because the socket is empty: then only the
 * destination's writability is awaited, never the source's readability,
 * which would wake us in a loop.
 */
#include "xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "relay.h" /* datapath_caps */
#include "tls.h"
#include "util.h"

#define POOL_MAX   16
#define SSL_RECORD (16384 + 256)

struct xfer {
	struct event_base *base;
	struct xfer_leg src, dst;
	bool src_ktls_rx, dst_ktls_tx;
	bool kernel;
	const char *path;

	uint64_t n;     /* body bytes wanted, or XFER_UNTIL_EOF */
	uint64_t taken; /* body bytes taken from the source */
	uint64_t moved; /* body bytes written to the destination */
	size_t first;   /* bytes at the front of buf that are not body (dst_first) */

	uint8_t *buf; /* bytes [off, len) wait for the destination */
	size_t cap, off, len;
	bool write_pending; /* an SSL_write must be retried with the same bytes */

	int prd, pwr; /* the pipe, while the splice engine holds one */
	size_t pipe_cap, held;

	bool src_readable, src_eof;
	bool read_wants_w;  /* SSL_read needs the source writable */
	bool write_wants_r; /* SSL_write needs the destination readable */
	bool dst_blocked;   /* the last write or splice-out would block */

	struct event *src_rev, *src_wev, *dst_rev, *dst_wev, *idle, *done_ev;
	uint64_t idle_ms, idle_seen;

	struct xfer_result res;
	bool finished;
	xfer_done_cb done;
	void *arg;
};

const char *xfer_end_name(enum xfer_end e)
{
	static const char *const names[] = {"done",         "source closed",
	                                    "source error", "destination error",
	                                    "idle timeout", "out of memory"};
	return (unsigned)e < ARRAY_LEN(names) ? names[e] : "?";
}

/* ---- pipes: a per-thread pool of empty, already enlarged pipes ---- */

struct pooled_pipe {
	int rd, wr;
	size_t cap;
};

static __thread struct pooled_pipe pool[POOL_MAX];
static __thread int pool_n;

/* F_SETPIPE_SZ fails with EPERM past pipe-user-pages-soft (16,384 pages per
 * user): take what the kernel gives, halving down to the default size. */
static size_t grow_pipe(int fd)
{
	for (int size = XFER_PIPE_MAX; size > 64 * 1024; size /= 2) {
		int got = fcntl(fd, F_SETPIPE_SZ, size);
		if (got > 0)
			return (size_t)got;
		if (errno != EPERM && errno != ENOMEM)
			break;
	}
	int cur = fcntl(fd, F_GETPIPE_SZ);
	return cur > 0 ? (size_t)cur : 64 * 1024;
}

static bool pipe_get(struct xfer *x)
{
	int p[2];

	if (x->prd >= 0)
		return true;
	if (pool_n > 0) {
		pool_n--;
		x->prd = pool[pool_n].rd;
		x->pwr = pool[pool_n].wr;
		x->pipe_cap = pool[pool_n].cap;
		return true;
	}
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
		return false;
	x->prd = p[0];
	x->pwr = p[1];
	x->pipe_cap = grow_pipe(p[1]);
	return true;
}

/* An empty pipe goes back to the pool; one holding bytes is closed (the
 * bytes belonged to this transfer). */
static void pipe_put(struct xfer *x)
{
	if (x->prd < 0)
		return;
	if (x->held == 0 && pool_n < POOL_MAX) {
		pool[pool_n].rd = x->prd;
		pool[pool_n].wr = x->pwr;
		pool[pool_n].cap = x->pipe_cap;
		pool_n++;
	} else {
		close(x->prd);
		close(x->pwr);
	}
	x->prd = x->pwr = -1;
	x->held = 0;
}

/* ---- the end ---- */

static void release(struct xfer *x)
{
	struct event *evs[] = {x->src_rev, x->src_wev, x->dst_rev, x->dst_wev, x->idle, x->done_ev};
	for (size_t i = 0; i < ARRAY_LEN(evs); i++) {
		if (evs[i])
			event_free(evs[i]);
	}
	pipe_put(x);
	if (x->buf)
		OPENSSL_cleanse(x->buf, x->cap); /* request bodies carry credentials */
	free(x->buf);
	free(x);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct xfer *x = arg;
	struct xfer_result res = x->res;
	xfer_done_cb done = x->done;
	void *done_arg = x->arg;

	res.moved = x->moved;
	res.path = x->path;
	release(x);
	done(done_arg, &res);
}

static void finish(struct xfer *x, enum xfer_end end, const char *detail)
{
	if (x->finished)
		return;
	x->finished = true;
	x->res.end = end;
	if (detail)
		str_copy(x->res.detail, detail, sizeof(x->res.detail));
	struct event *evs[] = {x->src_rev, x->src_wev, x->dst_rev, x->dst_wev, x->idle};
	for (size_t i = 0; i < ARRAY_LEN(evs); i++) {
		if (evs[i])
			event_del(evs[i]);
	}
	event_active(x->done_ev, EV_TIMEOUT, 0);
}

static void ssl_failure(struct xfer *x, enum xfer_end end, const char *what, int e)
{
	char detail[128];
	unsigned long code = ERR_peek_last_error();

	if (code) {
		char reason[120];
		ERR_error_string_n(code, reason, sizeof(reason));
		const char *r = strrchr(reason, ':');
		snprintf(detail, sizeof(detail), "%s: %s", what, r ? r + 1 : reason);
	} else {
		snprintf(detail, sizeof(detail), "%s: %s", what,
		         e == SSL_ERROR_SYSCALL && errno ? strerror(errno) : "TLS error");
	}
	ERR_clear_error();
	finish(x, end, detail);
}

static void errno_failure(struct xfer *x, enum xfer_end end, const char *what, int err)
{
	char detail[128];
	snprintf(detail, sizeof(detail), "%s: %s", what, strerror(err));
	finish(x, end, detail);
}

/* ---- moving bytes ---- */

static bool reading_done(const struct xfer *x)
{
	return x->n == XFER_UNTIL_EOF ? x->src_eof : x->taken >= x->n;
}

static size_t want_from_src(const struct xfer *x, size_t room)
{
	if (x->n == XFER_UNTIL_EOF)
		return room;
	uint64_t left = x->n - x->taken;
	return left < room ? (size_t)left : room;
}

static void count_written(struct xfer *x, size_t w)
{
	size_t head = w < x->first ? w : x->first;
	x->first -= head;
	x->moved += w - head;
	x->off += w;
	if (x->off == x->len)
		x->off = x->len = 0;
}

/* buf -> dst. Returns false when the transfer finished (error). */
static bool write_buf(struct xfer *x, bool *progress)
{
	while (x->len > x->off) {
		size_t len = x->len - x->off;
		if (!x->dst.ssl) {
			ssize_t w = send(x->dst.fd, x->buf + x->off, len, MSG_NOSIGNAL);
			if (w > 0) {
				count_written(x, (size_t)w);
				*progress = true;
				continue;
			}
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
				x->dst_blocked = true;
				return true;
			}
			errno_failure(x, XFER_DST_ERROR, "write", w < 0 ? errno : EPIPE);
			return false;
		}
		size_t done = 0;
		ERR_clear_error();
		int r = SSL_write_ex(x->dst.ssl, x->buf + x->off, len, &done);
		if (r == 1) {
			x->write_pending = false;
			x->write_wants_r = false;
			count_written(x, done);
			*progress = true;
			continue;
		}
		int e = SSL_get_error(x->dst.ssl, r);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
			x->write_pending = true;
			x->write_wants_r = e == SSL_ERROR_WANT_READ;
			x->dst_blocked = e == SSL_ERROR_WANT_WRITE;
			return true;
		}
		ssl_failure(x, XFER_DST_ERROR, "TLS write", e);
		return false;
	}
	return true;
}

/* src -> buf, at most `room` body bytes. Returns false when finished. */
static bool read_buf(struct xfer *x, bool *progress)
{
	/* keep the bytes of a pending SSL_write where they are */
	if (x->off > 0 && !x->write_pending && x->cap - x->len < SSL_RECORD) {
		memmove(x->buf, x->buf + x->off, x->len - x->off);
		x->len -= x->off;
		x->off = 0;
	}
	size_t want = want_from_src(x, x->cap - x->len);
	if (want == 0)
		return true;
	if (!x->src.ssl) {
		ssize_t r = recv(x->src.fd, x->buf + x->len, want, 0);
		if (r > 0) {
			x->len += (size_t)r;
			x->taken += (uint64_t)r;
			*progress = true;
			if ((size_t)r < want)
				x->src_readable = false; /* the socket is most likely drained */
			return true;
		}
		if (r == 0) {
			x->src_eof = true;
			*progress = true; /* the loop decides what the end means */
			return true;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			x->src_readable = false;
			return true;
		}
		errno_failure(x, XFER_SRC_ERROR, "read", errno);
		return false;
	}
	size_t got = 0;
	ERR_clear_error();
	int r = SSL_read_ex(x->src.ssl, x->buf + x->len, want, &got);
	if (r == 1) {
		x->len += got;
		x->taken += got;
		x->read_wants_w = false;
		*progress = true;
		return true;
	}
	int e = SSL_get_error(x->src.ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		x->src_readable = false;
		return true;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		x->src_readable = false;
		x->read_wants_w = true;
		return true;
	}
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
		/* close_notify, or a TCP FIN without one: for a body that ends
		 * with the connection both are the end */
		ERR_clear_error();
		x->src_eof = true;
		*progress = true;
		return true;
	}
	ssl_failure(x, XFER_SRC_ERROR, "TLS read", e);
	return false;
}

/* pipe -> dst */
static bool splice_out(struct xfer *x, bool *progress)
{
	while (x->held > 0) {
		ssize_t w = splice(x->prd, NULL, x->dst.fd, NULL, x->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (w > 0) {
			x->held -= (size_t)w;
			x->moved += (uint64_t)w;
			*progress = true;
			continue;
		}
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			x->dst_blocked = true;
			return true;
		}
		errno_failure(x, XFER_DST_ERROR, "splice to destination", w < 0 ? errno : EPIPE);
		return false;
	}
	return true;
}

/* src -> pipe, as far as the pipe has room. */
static bool splice_in(struct xfer *x, bool *progress)
{
	if (!x->src_readable || reading_done(x))
		return true;
	if (!pipe_get(x)) {
		errno_failure(x, XFER_NO_MEMORY, "pipe", errno);
		return false;
	}
	while (x->src_readable && !reading_done(x) && x->held < x->pipe_cap) {
		size_t want = want_from_src(x, x->pipe_cap - x->held);
		ssize_t r = splice(x->src.fd, NULL, x->pwr, NULL, want,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (r > 0) {
			x->held += (size_t)r;
			x->taken += (uint64_t)r;
			*progress = true;
			if ((size_t)r < want && x->held < x->pipe_cap)
				x->src_readable = false;
			continue;
		}
		if (r == 0) {
			x->src_eof = true;
			*progress = true; /* the loop decides what the end means */
			return true;
		}
		int err = errno;
		if (err == EAGAIN || err == EINTR) {
			/* with bytes in the pipe this may be the pipe, not the
			 * socket: the destination's progress brings us back */
			if (x->held == 0)
				x->src_readable = false;
			return true;
		}
		if (x->src_ktls_rx && (err == EINVAL || err == EIO || err == EBADMSG)) {
			/* a record that is not application data (an alert, a
			 * handshake message): OpenSSL reads it, after the pipe
			 * drained */
			if (x->held > 0)
				return true;
			return read_buf(x, progress);
		}
		errno_failure(x, XFER_SRC_ERROR, "splice from source", err);
		return false;
	}
	return true;
}

/* ---- the loop ---- */

static void update_events(struct xfer *x)
{
	bool buffered = x->len > x->off || x->held > 0;
	bool room = x->kernel ? x->len == x->off && (x->prd < 0 || x->held <= x->pipe_cap / 2)
	                      : x->len - x->off < x->cap;
	/* level-triggered: a source with bytes waiting wakes us at once, so
	 * it is watched whenever there is room, except while a splice into a
	 * non-empty pipe would block (then the destination's progress is
	 * what we wait for) */
	bool pipe_stuck = x->kernel && x->held > 0 && x->src_readable;
	bool want_read = !reading_done(x) && room && !x->read_wants_w && !pipe_stuck;

	if (want_read)
		event_add(x->src_rev, NULL);
	else
		event_del(x->src_rev);
	if (x->read_wants_w)
		event_add(x->src_wev, NULL);
	else
		event_del(x->src_wev);
	if (buffered && x->write_wants_r)
		event_add(x->dst_rev, NULL);
	else
		event_del(x->dst_rev);
	if (buffered && !x->write_wants_r)
		event_add(x->dst_wev, NULL);
	else
		event_del(x->dst_wev);
}

static void step(struct xfer *x)
{
	for (int rounds = 0; rounds < 64 && !x->finished; rounds++) {
		bool progress = false;

		/* a destination that said EAGAIN is not asked again before its
		 * write event: each refused splice(2) or write is a wasted call */
		if (!x->dst_blocked && !write_buf(x, &progress))
			return;
		if (x->kernel && x->len == x->off && !x->dst_blocked && !splice_out(x, &progress))
			return;
		if (x->src_eof && !reading_done(x)) {
			finish(x, XFER_SRC_EOF, NULL);
			return;
		}
		if (reading_done(x) && x->len == x->off && x->held == 0) {
			finish(x, XFER_DONE, NULL);
			return;
		}
		if (x->kernel) {
			/* OpenSSL's decrypted bytes come before the kernel's */
			bool ssl_bytes = x->src.ssl && SSL_pending(x->src.ssl) > 0;
			if (ssl_bytes && x->held == 0) {
				x->src_readable = true;
				if (!read_buf(x, &progress))
					return;
			} else if (x->len == x->off && x->held <= x->pipe_cap / 2 &&
			           !splice_in(x, &progress)) {
				/* (the pipe is topped up once half of it went out:
				 * a splice costs the same for 4 KiB as for 512) */
				return;
			}
		} else if (x->src_readable && x->len - x->off < x->cap) {
			if (!read_buf(x, &progress))
				return;
		}
		if (!progress)
			break;
	}
	if (!x->finished)
		update_events(x);
}

static void on_src_read(evutil_socket_t fd, short what, void *arg)
{
	struct xfer *x = arg;
	x->src_readable = true;
	step(x);
}

static void on_src_write(evutil_socket_t fd, short what, void *arg)
{
	struct xfer *x = arg;
	x->read_wants_w = false;
	x->src_readable = true;
	step(x);
}

static void on_dst_io(evutil_socket_t fd, short what, void *arg)
{
	struct xfer *x = arg;
	x->write_wants_r = false;
	x->dst_blocked = false;
	step(x);
}

static void arm_idle(struct xfer *x)
{
	struct timeval tv = {(time_t)(x->idle_ms / 1000), (suseconds_t)(x->idle_ms % 1000) * 1000};
	evtimer_add(x->idle, &tv);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct xfer *x = arg;
	uint64_t now = x->taken + x->moved;

	if (now != x->idle_seen) {
		x->idle_seen = now;
		arm_idle(x);
		return;
	}
	finish(x, XFER_IDLE, NULL);
}

/* ---- start ---- */

struct xfer *xfer_start(struct event_base *base, const struct xfer_leg *src,
                        const struct xfer_leg *dst, struct evbuffer *dst_first,
                        struct evbuffer *src_read, uint64_t n, uint64_t idle_ms, bool kernel,
                        xfer_done_cb done, void *arg)
{
	struct xfer *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->base = base;
	x->src = *src;
	x->dst = *dst;
	x->n = n;
	x->idle_ms = idle_ms;
	x->done = done;
	x->arg = arg;
	x->prd = x->pwr = -1;
	x->src_readable = true; /* bytes may wait in the socket or in OpenSSL */
	if (src->ssl)
		x->src_ktls_rx = tls_ktls_recv(src->ssl);
	if (dst->ssl) {
		x->dst_ktls_tx = tls_ktls_send(dst->ssl);
		SSL_set_mode(dst->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	}
	const struct datapath_caps *caps = datapath_caps();
	x->kernel = kernel && caps->splice && (!src->ssl || x->src_ktls_rx) &&
	            (!dst->ssl || x->dst_ktls_tx);
	x->path = !x->kernel ? "userspace" : src->ssl || dst->ssl ? "ktls-splice" : "splice";

	size_t first = dst_first ? evbuffer_get_length(dst_first) : 0;
	size_t have = src_read ? evbuffer_get_length(src_read) : 0;
	size_t prefix = n == XFER_UNTIL_EOF || have < n ? have : (size_t)n;
	size_t want_cap = x->kernel ? SSL_RECORD : XFER_BUFFER;
	x->cap = first + prefix > want_cap ? first + prefix : want_cap;
	x->buf = malloc(x->cap);
	x->src_rev = event_new(base, src->fd, EV_READ | EV_PERSIST, on_src_read, x);
	x->src_wev = event_new(base, src->fd, EV_WRITE | EV_PERSIST, on_src_write, x);
	x->dst_rev = event_new(base, dst->fd, EV_READ | EV_PERSIST, on_dst_io, x);
	x->dst_wev = event_new(base, dst->fd, EV_WRITE | EV_PERSIST, on_dst_io, x);
	x->idle = evtimer_new(base, on_idle, x);
	x->done_ev = event_new(base, -1, 0, on_done, x);
	if (!x->buf || !x->src_rev || !x->src_wev || !x->dst_rev || !x->dst_wev || !x->idle ||
	    !x->done_ev) {
		if (!x->done_ev) {
			release(x);
			return NULL;
		}
		finish(x, XFER_NO_MEMORY, NULL);
		return x;
	}
	if (first)
		evbuffer_remove(dst_first, x->buf, first);
	if (prefix)
		evbuffer_remove(src_read, x->buf + first, prefix);
	x->len = first + prefix;
	x->first = first;
	x->taken = prefix;
	if (idle_ms)
		arm_idle(x);
	step(x);
	return x;
}

void xfer_cancel(struct xfer *x)
{
	if (!x)
		return;
	release(x);
}

uint64_t xfer_moved(const struct xfer *x)
{
	return x->moved;
}

const char *xfer_path(const struct xfer *x)
{
	return x->path;
}
