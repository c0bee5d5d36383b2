/*
 * The data path after the login (see relay.h, docs/datapath.md).
 *
 * A relay is two legs and two directions. Each direction picks its own
 * engine when the relay starts:
 *
 *   sockmap    both legs plain and data_path = "sockmap": the kernel
 *              redirects from the first byte; the daemon takes the
 *              direction back ("held") when the program passes bytes up
 *              (its in-kernel queue limit was reached) and at the end of
 *              the stream;
 *   splice     the source can be read in the kernel (plain, or kTLS RX)
 *              and the destination written there (plain, or kTLS TX):
 *              splice(2) through a pipe taken from a per-thread pool only
 *              while bytes are in flight;
 *   userspace  anything else: a bounded buffer, OpenSSL on TLS legs.
 *
 * Every engine stops reading its source while its bound is reached, so a
 * slow reader slows the writer down through TCP flow control instead of
 * growing anybody's memory. An end of stream is forwarded (FIN, and a TLS
 * close_notify) once everything before it was written; a reset is
 * forwarded as a reset.
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "handover.h"
#include "ktls13.h"
#include "log.h"
#include "util.h"

#define DIR_BUFFER        (256 * 1024) /* userspace bytes per direction */
#define READ_CHUNK        (16 * 1024)
#define PIPE_CAP          (64 * 1024) /* the default pipe size: 16 pages */
#define POOL_MAX          64          /* idle pipes kept per thread */
#define DRAIN_POLL_MIN_US 500
#define DRAIN_POLL_MAX_US 100000

enum engine { ENGINE_USER, ENGINE_SPLICE, ENGINE_SOCKMAP };

struct leg {
	struct relay *r;
	int fd;
	SSL *ssl;
	struct event *rev, *wev;
	bool ktls_rx, ktls_tx;
	bool own_rx;       /* TLS 1.3 receive keyed by us: OpenSSL must not read */
	bool eof;          /* the peer ended its stream */
	bool shut;         /* we ended ours toward this peer */
	bool readable;     /* a read event arrived and was not yet consumed */
	bool read_wants_w; /* SSL_read needs writability */
	bool write_wants_r;
};

struct dir {
	struct relay *r;
	struct leg *src, *dst;
	enum engine engine;
	const char *path; /* the name in logs and metrics */
	struct evbuffer *buf;
	uint64_t *count;
	atomic_uint_fast64_t *live; /* where *count is published, or NULL */
	/* splice: a pipe while bytes are in it */
	int prd, pwr;
	size_t held;
	/* sockmap */
	struct ms_dir *k;
	bool kernel;       /* the verdict program redirects (not held) */
	uint64_t r0, red0; /* dst's write count and k->redirected at the last resume */
	uint64_t taken;    /* bytes read from src since the pair joined the map */
	bool pinned;       /* taken overtook k->passed: never resume (see try_resume) */
	struct event *drain_ev;
	unsigned drain_us;
};

struct relay {
	struct event_base *base;
	struct leg c, b;
	struct dir up, down; /* client->backend, backend->client */
	struct sockmap_pair pair;
	struct event *idle;
	struct event *done_ev;
	uint64_t idle_ms, idle_seen;
	relay_done_cb done;
	void *arg;
	struct relay_stats st;
	bool finished;
	bool exporting; /* offered to a successor: hands off the sockets */
};

static void update(struct relay *r);
static void step(struct relay *r);

const char *relay_end_name(enum relay_end e)
{
	static const char *const n[] = {"client closed", "backend closed", "idle timeout",
	                                "error",         "kicked",         "shutdown"};
	return (unsigned)e < ARRAY_LEN(n) ? n[e] : "?";
}

/* ---- pipe pool: idle sessions hold no pipe ---- */

static __thread int pool[POOL_MAX][2];
static __thread int pool_n;

static bool pipe_get(struct dir *d)
{
	int p[2];

	if (d->prd >= 0)
		return true;
	if (pool_n > 0) {
		pool_n--;
		p[0] = pool[pool_n][0];
		p[1] = pool[pool_n][1];
	} else if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
		return false;
	}
	d->prd = p[0];
	d->pwr = p[1];
	d->held = 0;
	return true;
}

/* Give the pipe back once it is empty (a pipe with bytes in it is closed,
 * never pooled: the bytes belong to this session). */
static void pipe_put(struct dir *d)
{
	if (d->prd < 0)
		return;
	if (d->held == 0 && pool_n < POOL_MAX) {
		pool[pool_n][0] = d->prd;
		pool[pool_n][1] = d->pwr;
		pool_n++;
	} else {
		close(d->prd);
		close(d->pwr);
	}
	d->prd = d->pwr = -1;
	d->held = 0;
}

/* ---- teardown ---- */

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;

	r->done(r->arg, &r->st);
	event_free(r->done_ev);
	free(r);
}

static void free_leg(struct leg *l, bool abortive)
{
	if (l->rev)
		event_free(l->rev);
	if (l->wev)
		event_free(l->wev);
	if (abortive) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(l->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (l->ssl)
		SSL_free(l->ssl);
	if (l->fd >= 0)
		close(l->fd);
	l->rev = l->wev = NULL;
	l->ssl = NULL;
	l->fd = -1;
}

static void fold_kernel_counts(struct relay *r)
{
	struct dir *ds[2] = {&r->up, &r->down};

	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		if (!d->k)
			continue;
		log_msg(LOG_DEBUG, "relay-kernel",
		        "dir=%s redirected=%llu passed=%llu pauses=%u user_bytes=%llu",
		        i ? "down" : "up", (unsigned long long)d->k->redirected,
		        (unsigned long long)d->k->passed, d->k->pauses,
		        (unsigned long long)*d->count);
		*d->count += d->k->redirected;
		d->k = NULL; /* the slot goes back to the pool next */
	}
}

static void free_dir(struct dir *d)
{
	if (d->prd >= 0) {
		close(d->prd);
		close(d->pwr);
	}
	d->prd = d->pwr = -1;
	if (d->buf)
		evbuffer_free(d->buf);
	d->buf = NULL;
	if (d->drain_ev)
		event_free(d->drain_ev);
	d->drain_ev = NULL;
}

static void finish_how(struct relay *r, enum relay_end end, const char *detail, bool abortive)
{
	if (r->finished)
		return;
	r->finished = true;
	r->st.end = end;
	if (detail)
		str_copy(r->st.detail, detail, sizeof(r->st.detail));
	/* out of the map first: the sockets must not be redirected into while
	 * they close */
	fold_kernel_counts(r);
	sockmap_pair_remove(&r->pair);
	free_leg(&r->c, abortive);
	free_leg(&r->b, abortive);
	free_dir(&r->up);
	free_dir(&r->down);
	if (r->idle)
		event_free(r->idle);
	r->idle = NULL;
	/* never call back from inside relay_start or relay_stop's caller */
	event_active(r->done_ev, EV_TIMEOUT, 0);
}

static void finish(struct relay *r, enum relay_end end, const char *detail)
{
	finish_how(r, end, detail,
	           end == RELAY_END_KICKED || end == RELAY_END_ERROR || end == RELAY_END_SHUTDOWN ||
	                   end == RELAY_END_IDLE);
}

static enum relay_end closed_by(const struct relay *r, const struct leg *l)
{
	return l == &r->c ? RELAY_END_CLIENT_CLOSED : RELAY_END_BACKEND_CLOSED;
}

/* A reset on one leg becomes a reset on the other. */
static void reset_seen(struct relay *r, struct leg *l)
{
	finish_how(r, closed_by(r, l), "connection reset", true);
}

/* ---- userspace engine ---- */

/* A read that found nothing still leaves the chunk reserved for it in the
 * buffer (libevent keeps empty chains, even across evbuffer_drain), 32 KiB
 * of address space per direction for as long as the session is idle: most of
 * the memory of 10,000 idle sessions. An empty buffer is cheap to replace. */
static void shed_empty_chain(struct dir *d)
{
	if (evbuffer_get_length(d->buf) > 0)
		return;
	struct evbuffer *fresh = evbuffer_new();
	if (!fresh)
		return; /* keep the old one: it still works */
	evbuffer_free(d->buf);
	d->buf = fresh;
}

/* Read from d->src into d->buf (bounded). Returns false if the relay finished. */
static bool pull(struct dir *d)
{
	struct relay *r = d->r;
	struct leg *l = d->src;
	struct evbuffer *buf = d->buf;

	while (!l->eof && evbuffer_get_length(buf) < DIR_BUFFER) {
		struct evbuffer_iovec v;
		size_t room = DIR_BUFFER - evbuffer_get_length(buf);
		size_t want = room < READ_CHUNK ? room : READ_CHUNK;
		if (evbuffer_reserve_space(buf, (ev_ssize_t)want, &v, 1) < 1) {
			finish(r, RELAY_END_ERROR, "out of memory");
			return false;
		}
		if (v.iov_len > want)
			v.iov_len = want;
		ssize_t n;
		if (l->ssl) {
			size_t got = 0;
			int ok = SSL_read_ex(l->ssl, v.iov_base, v.iov_len, &got);
			if (ok == 1) {
				n = (ssize_t)got;
				l->read_wants_w = false;
			} else {
				int e = SSL_get_error(l->ssl, ok);
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				shed_empty_chain(d);
				l->readable = false;
				if (e == SSL_ERROR_WANT_READ) {
					l->read_wants_w = false;
					return true;
				}
				if (e == SSL_ERROR_WANT_WRITE) {
					l->read_wants_w = true;
					return true;
				}
				if (e == SSL_ERROR_ZERO_RETURN ||
				    (e == SSL_ERROR_SYSCALL && errno != ECONNRESET)) {
					/* close_notify, or a plain TCP close */
					ERR_clear_error();
					l->eof = true;
					return true;
				}
				if (e == SSL_ERROR_SYSCALL) {
					ERR_clear_error();
					reset_seen(r, l);
					return false;
				}
				char msg[128];
				ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
				ERR_clear_error();
				finish(r, RELAY_END_ERROR, msg);
				return false;
			}
		} else {
			n = recv(l->fd, v.iov_base, v.iov_len, MSG_DONTWAIT);
			if (n <= 0) {
				int err = errno;
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				shed_empty_chain(d);
				l->readable = false;
				if (n == 0) {
					l->eof = true;
					return true;
				}
				if (err == EAGAIN || err == EINTR)
					return true;
				if (err == ECONNRESET) {
					reset_seen(r, l);
					return false;
				}
				finish(r, RELAY_END_ERROR, strerror(err));
				return false;
			}
		}
		v.iov_len = (size_t)n;
		evbuffer_commit_space(buf, &v, 1);
		*d->count += (uint64_t)n;
		d->taken += (uint64_t)n;
	}
	return true;
}

/* Write d->buf to d->dst. Returns false if the relay finished. */
static bool push(struct dir *d)
{
	struct relay *r = d->r;
	struct leg *l = d->dst;
	struct evbuffer *buf = d->buf;

	while (evbuffer_get_length(buf) > 0) {
		size_t len = evbuffer_get_contiguous_space(buf);
		unsigned char *p = evbuffer_pullup(buf, (ev_ssize_t)len);
		if (l->ssl) {
			size_t done = 0;
			int ok = SSL_write_ex(l->ssl, p, len, &done);
			if (ok == 1) {
				evbuffer_drain(buf, done);
				l->write_wants_r = false;
				continue;
			}
			int e = SSL_get_error(l->ssl, ok);
			if (e == SSL_ERROR_WANT_WRITE) {
				l->write_wants_r = false;
				return true;
			}
			if (e == SSL_ERROR_WANT_READ) {
				l->write_wants_r = true;
				return true;
			}
			ERR_clear_error();
			finish(r, closed_by(r, l), NULL);
			return false;
		}
		ssize_t n = send(l->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return true;
			if (errno == ECONNRESET) {
				reset_seen(r, l);
				return false;
			}
			finish(r, closed_by(r, l), NULL);
			return false;
		}
		evbuffer_drain(buf, (size_t)n);
	}
	return true;
}

/* ---- splice engine ---- */

/* pipe -> dst. Returns false if the relay finished. */
static bool splice_out(struct dir *d)
{
	while (d->held > 0) {
		ssize_t n = splice(d->prd, NULL, d->dst->fd, NULL, d->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			d->held -= (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (n < 0 && errno == ECONNRESET)
			reset_seen(d->r, d->dst);
		else
			finish(d->r, closed_by(d->r, d->dst), NULL);
		return false;
	}
	return true;
}

/* A kTLS RX socket refuses to splice a record that is not application
 * data (an alert such as close_notify, a handshake message): OpenSSL reads
 * it through recvmsg and says what it was. */
/* The same for a TLS 1.3 leg whose receive we keyed (ktls13.h): OpenSSL
 * cannot read it, so the record is read and judged here. */
static bool own_rx_control_record(struct dir *d)
{
	uint8_t rec[16384 + 256];
	size_t n;
	char why[160];

	switch (ktls13_control_record(d->src->fd, rec, sizeof(rec), &n, why, sizeof(why))) {
	case KTLS13_AGAIN:
	case KTLS13_IGNORED: /* NewSessionTicket: we resume nothing with it */
		return true;
	case KTLS13_DATA:
		evbuffer_add(d->buf, rec, n);
		*d->count += n;
		return true;
	case KTLS13_CLOSE:
		d->src->eof = true;
		return true;
	case KTLS13_FATAL:
		break;
	}
	finish(d->r, RELAY_END_ERROR, why);
	return false;
}

static bool ktls_control_record(struct dir *d)
{
	/* pull() sets eof on close_notify; application data it reads goes
	 * out from buf before the next spliced byte */
	return pull(d);
}

/* src -> pipe, as far as the pipe has room. */
static bool splice_in(struct dir *d)
{
	struct leg *src = d->src;

	while (!src->eof && d->held < PIPE_CAP) {
		if (!pipe_get(d)) {
			finish(d->r, RELAY_END_ERROR, "no pipe for splice");
			return false;
		}
		ssize_t n = splice(src->fd, NULL, d->pwr, NULL, PIPE_CAP - d->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			d->held += (size_t)n;
			*d->count += (uint64_t)n;
			continue;
		}
		int err = errno;
		src->readable = false;
		if (n == 0) {
			src->eof = true;
			return true;
		}
		if (err == EAGAIN || err == EINTR)
			return true;
		if (err == ECONNRESET) {
			reset_seen(d->r, src);
			return false;
		}
		if (src->ktls_rx && (err == EINVAL || err == EIO || err == EBADMSG)) {
			if (d->held > 0)
				return true; /* write out what came before it first */
			return src->own_rx ? own_rx_control_record(d) : ktls_control_record(d);
		}
		finish(d->r, RELAY_END_ERROR, strerror(err));
		return false;
	}
	return true;
}

static bool step_splice(struct dir *d)
{
	/* bytes read in user space go first, then the kernel's */
	if (!push(d))
		return false;
	if (evbuffer_get_length(d->buf) > 0)
		return true;
	if (!splice_out(d) || !splice_in(d) || !splice_out(d))
		return false;
	if (d->held == 0)
		pipe_put(d);
	return true;
}

/* ---- sockmap engine ---- */

/* Bytes ever written into fd's send queue: acked + still queued. Read the
 * acked count on both sides of the queue length; an ACK in between would
 * make the sum wrong, so retry until it did not move. */
static bool write_count(int fd, uint64_t *out)
{
	for (int tries = 0; tries < 100; tries++) {
		struct tcp_info a, b;
		socklen_t la = sizeof(a), lb = sizeof(b);
		int outq = 0;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &a, &la) != 0 ||
		    ioctl(fd, SIOCOUTQ, &outq) != 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &b, &lb) != 0)
			return false;
		if (a.tcpi_bytes_acked == b.tcpi_bytes_acked) {
			*out = a.tcpi_bytes_acked + (uint64_t)outq;
			return true;
		}
	}
	return false;
}

/* Has everything the program redirected reached dst's send queue? Until it
 * has, a byte written by the daemon would overtake it. */
static bool kernel_drained(struct dir *d)
{
	uint64_t redirected = d->k->redirected - d->red0;
	uint64_t now;

	if (redirected == 0)
		return true;
	return write_count(d->dst->fd, &now) && now - d->r0 >= redirected;
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
	struct dir *d = arg;
	struct relay *r = d->r;

	if (d->drain_us < DRAIN_POLL_MAX_US)
		d->drain_us *= 2;
	step(r); /* both directions: this one, and whatever it unblocks */
}

static void hold(struct dir *d)
{
	d->k->hold = 1;
	__sync_synchronize();
	d->kernel = false;
}

/* Give the direction back to the verdict program: only when every byte it
 * passed up was read and written on, and dst's queue holds all it
 * redirected. "Every byte passed up was read" is a count, not a moment:
 * a passed skb can wait in the kernel's backlog work (the source's receive
 * memory was full) after a recv() here already returned EAGAIN, so the
 * program redirects again only while its passed count equals resume_at, the
 * count read here. Bytes that arrive meanwhile raise passed above it and
 * keep being passed until the next resume. */
static bool try_resume(struct dir *d)
{
	if (!pull(d))
		return false;
	if (evbuffer_get_length(d->buf) > 0 || d->src->eof)
		return true; /* more to write first */
	uint64_t passed = d->k->passed;
	if (passed != d->taken) {
		if (passed < d->taken && !d->pinned) {
			/* read a byte the program never saw: counting is off,
			 * so the kernel never gets this direction back */
			d->pinned = true;
			log_msg(LOG_WARN, "relay-kernel",
			        "dir=%s state=pinned taken=%llu passed=%llu reason=\"bytes read "
			        "outside the verdict program\"",
			        d == &d->r->up ? "up" : "down", (unsigned long long)d->taken,
			        (unsigned long long)passed);
		}
		return true; /* the rest is on its way up: wait for it */
	}
	if (!write_count(d->dst->fd, &d->r0))
		return true;
	d->red0 = d->k->redirected;
	d->k->resume_at = passed;
	d->k->rebase = 1;
	__sync_synchronize();
	d->k->hold = 0;
	__sync_synchronize();
	d->kernel = true;
	d->drain_us = DRAIN_POLL_MIN_US;
	return true;
}

/* In kernel mode a read event means bytes passed up, the end of the stream
 * or a reset, or nothing at all (the kernel wakes readers after redirecting
 * too). 1: the daemon must take the direction; 0: nothing to do; -1: the
 * source was reset (the peek consumed the error, so it is handled here). */
static int needs_daemon(struct dir *d)
{
	char c;

	if (d->k->passed != d->taken)
		return 1;
	ssize_t n = recv(d->src->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n < 0 && errno == ECONNRESET) {
		reset_seen(d->r, d->src);
		return -1;
	}
	return 1;
}

static bool step_sockmap(struct dir *d)
{
	struct leg *src = d->src;

	if (d->kernel) {
		if (!src->readable)
			return true;
		int need = needs_daemon(d);
		if (need < 0)
			return false;
		if (need == 0) {
			src->readable = false;
			return true;
		}
		hold(d);
	}
	/* held: read what was passed up (bounded), wait for the kernel's
	 * queue to reach dst, write, then resume */
	if (!pull(d))
		return false;
	if (!kernel_drained(d)) {
		struct timeval tv = {0, (suseconds_t)d->drain_us};
		evtimer_add(d->drain_ev, &tv);
		return true;
	}
	d->drain_us = DRAIN_POLL_MIN_US;
	if (!push(d))
		return false;
	if (evbuffer_get_length(d->buf) > 0)
		return true;
	if (src->eof || d->pinned)
		return true; /* the end is forwarded by step() */
	return try_resume(d);
}

/* ---- both directions ---- */

static bool step_dir(struct dir *d)
{
	switch (d->engine) {
	case ENGINE_SOCKMAP:
		return step_sockmap(d);
	case ENGINE_SPLICE:
		return step_splice(d);
	case ENGINE_USER:
		return pull(d) && push(d);
	}
	return true;
}

static bool dir_empty(const struct dir *d)
{
	if (evbuffer_get_length(d->buf) > 0 || d->held > 0)
		return false;
	return d->engine != ENGINE_SOCKMAP || (!d->kernel && kernel_drained((struct dir *)d));
}

/* The counts so far, for /sessions: what the daemon moved plus what the
 * verdict program redirected (sockmap: as of this step). */
static void publish(const struct dir *d)
{
	if (d->live)
		atomic_store_explicit(d->live, *d->count + (d->k ? d->k->redirected : 0),
		                      memory_order_relaxed);
}

static void step(struct relay *r)
{
	bool running = step_dir(&r->up) && step_dir(&r->down);

	publish(&r->up);
	publish(&r->down);
	if (!running)
		return;
	/* forward an end of stream once everything before it went out */
	struct dir *ds[2] = {&r->up, &r->down};
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		if (d->src->eof && !d->dst->shut && dir_empty(d)) {
			d->dst->shut = true;
			if (d->dst->ssl)
				SSL_shutdown(d->dst->ssl);
			shutdown(d->dst->fd, SHUT_WR);
		}
	}
	if (r->c.eof && r->b.eof && r->c.shut && r->b.shut) {
		finish(r, RELAY_END_CLIENT_CLOSED, NULL);
		return;
	}
	update(r);
}

/* What a direction wants from its source (read) and its destination
 * (write) right now. */
static bool wants_read(const struct dir *d)
{
	if (d->src->eof)
		return false;
	switch (d->engine) {
	case ENGINE_SOCKMAP:
		return d->kernel || evbuffer_get_length(d->buf) < DIR_BUFFER;
	case ENGINE_SPLICE:
		return evbuffer_get_length(d->buf) == 0 && d->held < PIPE_CAP;
	case ENGINE_USER:
		return evbuffer_get_length(d->buf) < DIR_BUFFER;
	}
	return false;
}

static bool wants_write(const struct dir *d)
{
	if (d->engine == ENGINE_SOCKMAP && !d->kernel && evbuffer_get_length(d->buf) > 0 &&
	    evtimer_pending(d->drain_ev, NULL))
		return false; /* waiting for the kernel's queue, not for room */
	return d->held > 0 || (evbuffer_get_length(d->buf) > 0 && !d->dst->write_wants_r);
}

static void update_leg(struct leg *l, const struct dir *out, const struct dir *in)
{
	bool want_r = wants_read(out) || l->write_wants_r;
	bool want_w = wants_write(in) || l->read_wants_w;

	if (want_r)
		event_add(l->rev, NULL);
	else
		event_del(l->rev);
	if (want_w)
		event_add(l->wev, NULL);
	else
		event_del(l->wev);
}

static void update(struct relay *r)
{
	update_leg(&r->c, &r->up, &r->down);
	update_leg(&r->b, &r->down, &r->up);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct leg *l = arg;
	l->readable = true;
	step(l->r);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct leg *l = arg;
	step(l->r);
}

/* Idle: nothing moved, in user space or in the kernel, for a whole period. */
static uint64_t activity(const struct relay *r)
{
	uint64_t n = r->st.client_to_backend + r->st.backend_to_client;
	if (r->up.k)
		n += r->up.k->redirected + r->up.k->passed;
	if (r->down.k)
		n += r->down.k->redirected + r->down.k->passed;
	return n;
}

static void arm_idle(struct relay *r)
{
	struct timeval tv = {(time_t)(r->idle_ms / 1000), (suseconds_t)(r->idle_ms % 1000) * 1000};
	evtimer_add(r->idle, &tv);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	uint64_t now = activity(r);

	if (now != r->idle_seen) {
		r->idle_seen = now;
		arm_idle(r);
		return;
	}
	finish(r, RELAY_END_IDLE, NULL);
}

/* ---- start ---- */

static void init_leg(struct relay *r, struct leg *l, const struct relay_leg *in)
{
	l->r = r;
	l->fd = in->fd;
	l->ssl = in->ssl;
	l->rev = event_new(r->base, in->fd, EV_READ | EV_PERSIST, on_read, l);
	l->wev = event_new(r->base, in->fd, EV_WRITE | EV_PERSIST, on_write, l);
	if (l->ssl) {
		l->ktls_rx = BIO_get_ktls_recv(SSL_get_rbio(l->ssl)) == 1;
		l->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(l->ssl)) == 1;
	}
}

static void init_dir(struct relay *r, struct dir *d, struct leg *src, struct leg *dst,
                     uint64_t *count, struct relay_leg *pending_from)
{
	d->r = r;
	d->src = src;
	d->dst = dst;
	d->count = count;
	d->prd = d->pwr = -1;
	d->buf = evbuffer_new();
	d->engine = ENGINE_USER;
	d->path = "userspace";
	d->drain_us = DRAIN_POLL_MIN_US;
	/* what was read but not yet forwarded goes first */
	if (d->buf && pending_from->pending)
		evbuffer_add_buffer(d->buf, pending_from->pending);
	if (pending_from->pending)
		evbuffer_free(pending_from->pending);
	pending_from->pending = NULL;
}

/* Bytes OpenSSL already decrypted are not in the kernel's queue any more:
 * they go out from the buffer before anything spliced. */
static void take_ssl_pending(struct dir *d)
{
	while (d->src->ssl && SSL_pending(d->src->ssl) > 0 && !d->r->finished)
		if (!pull(d) || evbuffer_get_length(d->buf) >= DIR_BUFFER)
			break;
}

/* TLS 1.3 source leg without kernel receive (OpenSSL 3.0 does not key it):
 * hand OpenSSL's decrypted bytes to the buffer, then key the kernel with
 * the peer's traffic secret at the record count OpenSSL reached. */
static void key_own_rx(struct dir *d)
{
	char why[160];

	if (SSL_version(d->src->ssl) != TLS1_3_VERSION)
		return;
	take_ssl_pending(d);
	if (d->r->finished || d->src->eof)
		return;
	if (!ktls13_install_rx(d->src->ssl, d->src->fd, why, sizeof(why))) {
		log_msg(LOG_DEBUG, "ktls13", "dir=%s rx=openssl reason=\"%s\"",
		        d == &d->r->up ? "up" : "down", why);
		return;
	}
	d->src->ktls_rx = d->src->own_rx = true;
}

static void choose_engines(struct relay *r, const struct relay_opts *opts)
{
	const struct datapath_caps *caps = datapath_caps();
	enum data_path_mode mode = opts ? opts->mode : DATA_PATH_AUTO;
	struct dir *ds[2] = {&r->up, &r->down};

	if (mode == DATA_PATH_USERSPACE)
		return;
	if (!r->c.ssl && !r->b.ssl && caps->kernel_path && mode == DATA_PATH_SOCKMAP) {
		char err[160] = "TCP_INFO unavailable on a leg";
		uint32_t limit =
		        opts && opts->kernel_queue_limit ? opts->kernel_queue_limit : 4u << 20;
		/* the kernel redirects from the first byte, so what was read
		 * before the hand-over must be in the send queues already: it
		 * is small (a pipelined command), else this pair splices */
		if (!push(&r->up) || !push(&r->down))
			return;
		uint64_t r0[2];
		if (evbuffer_get_length(r->up.buf) == 0 && evbuffer_get_length(r->down.buf) == 0 &&
		    write_count(r->b.fd, &r0[0]) && write_count(r->c.fd, &r0[1]) &&
		    sockmap_pair_add(&r->pair, r->c.fd, r->b.fd, limit, err, sizeof(err))) {
			r->up.k = r->pair.dir[0];
			r->down.k = r->pair.dir[1];
			for (int i = 0; i < 2; i++) {
				ds[i]->engine = ENGINE_SOCKMAP;
				ds[i]->path = "sockmap";
				ds[i]->kernel = true;
				ds[i]->r0 = r0[i];
				ds[i]->drain_ev = evtimer_new(r->base, on_drain_poll, ds[i]);
			}
			return;
		}
		if (evbuffer_get_length(r->up.buf) > 0 || evbuffer_get_length(r->down.buf) > 0)
			snprintf(err, sizeof(err), "bytes from before the hand-over still queued");
		log_msg(LOG_WARN, "data-path", "sockmap=refused reason=\"%s\" using=splice", err);
	}
	if (!caps->splice)
		return;
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		bool dst_kernel = !d->dst->ssl || d->dst->ktls_tx;
		if (d->src->ssl && !d->src->ktls_rx && dst_kernel && caps->ktls)
			key_own_rx(d);
		bool src_kernel = !d->src->ssl || d->src->ktls_rx;
		if (src_kernel && dst_kernel) {
			d->engine = ENGINE_SPLICE;
			d->path = d->src->ssl || d->dst->ssl ? "ktls-splice" : "splice";
			take_ssl_pending(d);
		}
	}
}

struct relay *relay_start(struct event_base *base, struct relay_leg *client,
                          struct relay_leg *backend, const struct relay_opts *opts,
                          relay_done_cb done, void *arg)
{
	struct relay *r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->done = done;
	r->arg = arg;
	r->idle_ms = opts ? opts->idle_ms : 0;
	r->done_ev = event_new(base, -1, 0, on_done, r);
	r->idle = evtimer_new(base, on_idle, r);
	init_leg(r, &r->c, client);
	init_leg(r, &r->b, backend);
	init_dir(r, &r->up, &r->c, &r->b, &r->st.client_to_backend, client);
	init_dir(r, &r->down, &r->b, &r->c, &r->st.backend_to_client, backend);
	if (opts) {
		r->up.live = opts->live_up;
		r->down.live = opts->live_down;
	}
	if (!r->up.buf || !r->down.buf || !r->done_ev || !r->idle || !r->c.rev || !r->c.wev ||
	    !r->b.rev || !r->b.wev) {
		finish(r, RELAY_END_ERROR, "out of memory");
		return r;
	}
	choose_engines(r, opts);
	r->st.path_up = r->up.path;
	r->st.path_down = r->down.path;
	r->st.ktls_client = r->c.ktls_rx || r->c.ktls_tx;
	r->st.ktls_backend = r->b.ktls_rx || r->b.ktls_tx;
	if (r->finished)
		return r;
	if (r->idle_ms)
		arm_idle(r);
	/* OpenSSL may already hold decrypted bytes, the sockets may hold
	 * bytes that arrived before the hand-over: look at once */
	r->c.readable = r->b.readable = true;
	step(r);
	return r;
}

void relay_stop(struct relay *r, enum relay_end end)
{
	finish(r, end, NULL);
}

void relay_peek(const struct relay *r, struct relay_stats *st)
{
	*st = r->st;
	if (r->up.k)
		st->client_to_backend += r->up.k->redirected;
	if (r->down.k)
		st->backend_to_client += r->down.k->redirected;
}

/* ---- hand-over to a successor process (docs/upgrade.md) ----
 *
 * A relay moves when nothing of its stream is held where a descriptor
 * cannot carry it: no TLS state in OpenSSL, sockmap directions redirected
 * by the kernel (not held by the daemon), and at most HO_PENDING_MAX bytes
 * read but not yet written per direction (they travel inline). Bytes in a
 * pipe travel with the pipe. The exporting relay stops touching its
 * sockets at once and for good unless the successor refuses it. */

static void quiesce(struct relay *r)
{
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};

	for (int i = 0; i < 2; i++) {
		event_del(legs[i]->rev);
		event_del(legs[i]->wev);
		if (ds[i]->drain_ev)
			event_del(ds[i]->drain_ev);
	}
	if (r->idle)
		event_del(r->idle);
}

static uint8_t ho_engine_of(const struct dir *d)
{
	switch (d->engine) {
	case ENGINE_SPLICE:
		return HO_ENGINE_SPLICE;
	case ENGINE_SOCKMAP:
		return HO_ENGINE_SOCKMAP;
	case ENGINE_USER:
		break;
	}
	return HO_ENGINE_USER;
}

/* Move what d->buf holds into a pipe of its own, sized to take it all: the
 * bytes stay in order (buf is written out before anything the pipe of a
 * splice direction would hold, and that pipe is empty while buf is not). */
static bool buffer_to_pipe(struct dir *d, char *why, size_t whylen)
{
	size_t len = evbuffer_get_length(d->buf);
	int p[2];

	if (d->prd >= 0 && d->held > 0) {
		snprintf(why, whylen, "bytes both in user space and in a pipe");
		return false;
	}
	if (d->prd >= 0)
		pipe_put(d); /* the empty splice pipe goes back to the pool */
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
		snprintf(why, whylen, "pipe: %s", strerror(errno));
		return false;
	}
	unsigned char *data = evbuffer_pullup(d->buf, -1);
	ssize_t w = -1;
	if (data && fcntl(p[1], F_SETPIPE_SZ, (int)len) >= (int)len)
		w = write(p[1], data, len);
	if (w != (ssize_t)len) {
		snprintf(why, whylen, "%zu bytes read and not yet written, and no pipe takes them",
		         len);
		close(p[0]);
		close(p[1]);
		return false;
	}
	evbuffer_drain(d->buf, len);
	d->prd = p[0];
	d->pwr = p[1];
	d->held = len;
	return true;
}

/* Read a pipe's bytes into the front of d->buf (a userspace direction that
 * got or gave its buffer as a pipe). */
static bool pipe_to_buffer(struct dir *d)
{
	struct evbuffer *tmp = evbuffer_new();
	bool ok = tmp != NULL;

	while (ok && d->held > 0) {
		int n = evbuffer_read(tmp, d->prd, (int)d->held);
		if (n <= 0)
			ok = false;
		else
			d->held -= (size_t)n;
	}
	if (ok)
		evbuffer_prepend_buffer(d->buf, tmp);
	if (tmp)
		evbuffer_free(tmp);
	close(d->prd);
	close(d->pwr);
	d->prd = d->pwr = -1;
	d->held = 0;
	return ok;
}

int relay_export(struct relay *r, struct ho_session *rec, int *fds, char *why, size_t whylen)
{
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};
	static const char *const leg_name[2] = {"client", "backend"};

	if (r->finished || r->exporting) {
		snprintf(why, whylen, "ending");
		return 0;
	}
	for (int i = 0; i < 2; i++) {
		if (legs[i]->ssl) {
			snprintf(why, whylen, "TLS on the %s leg is still in OpenSSL", leg_name[i]);
			return -1;
		}
	}
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		if (d->engine == ENGINE_SOCKMAP &&
		    (!d->kernel || d->pinned || evbuffer_get_length(d->buf) > 0)) {
			snprintf(why, whylen, "sockmap direction %s is held by the daemon",
			         i ? "down" : "up");
			return 0;
		}
		/* more read than a record carries: write some out first */
		if (evbuffer_get_length(d->buf) > HO_PENDING_MAX && !push(d))
			return 0; /* the relay ended; its callback follows */
		if (d->prd >= 0 && d->engine == ENGINE_SPLICE) {
			int queued = 0;
			if (ioctl(d->prd, FIONREAD, &queued) != 0 || (size_t)queued != d->held) {
				snprintf(why, whylen,
				         "pipe %s holds %d bytes, the relay counted %zu",
				         i ? "down" : "up", queued, d->held);
				return -1;
			}
		}
	}
	/* the rest of a large buffer travels in a pipe of its own */
	for (int i = 0; i < 2; i++) {
		if (evbuffer_get_length(ds[i]->buf) > HO_PENDING_MAX &&
		    !buffer_to_pipe(ds[i], why, whylen))
			return 0;
	}
	quiesce(r);
	r->exporting = true;
	unsigned n = 0;
	fds[n++] = r->c.fd;
	fds[n++] = r->b.fd;
	for (int i = 0; i < 2; i++) {
		struct leg *l = legs[i];
		rec->leg[i] = (struct ho_leg){.tls = HO_TLS_NONE, .eof = l->eof, .shut = l->shut};
	}
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		struct ho_dir *h = &rec->dir[i];
		*h = (struct ho_dir){.engine = ho_engine_of(d), .slot = HO_NO_SLOT};
		if (d->prd >= 0 && d->held > 0) {
			/* splice: its pipe; userspace: its buffer, moved into one */
			h->pipe = true;
			h->held = (uint32_t)d->held;
			fds[n++] = d->prd;
			fds[n++] = d->pwr;
		}
		if (d->engine == ENGINE_SOCKMAP) {
			h->slot = r->pair.slot[i];
			h->kernel = d->kernel;
			h->taken = d->taken;
			h->r0 = d->r0;
			h->red0 = d->red0;
		}
		h->n_pending = evbuffer_get_length(d->buf);
		h->pending = h->n_pending ? evbuffer_pullup(d->buf, -1) : NULL;
	}
	return 1;
}

void relay_export_resume(struct relay *r)
{
	if (!r->exporting)
		return;
	r->exporting = false;
	struct dir *ds[2] = {&r->up, &r->down};
	for (int i = 0; i < 2; i++) {
		if (ds[i]->engine == ENGINE_USER && ds[i]->prd >= 0 && !pipe_to_buffer(ds[i])) {
			finish(r, RELAY_END_ERROR, "bytes lost taking a buffer back from a pipe");
			return;
		}
	}
	if (r->idle_ms)
		arm_idle(r);
	r->c.readable = r->b.readable = true;
	step(r);
}

void relay_export_release(struct relay *r)
{
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};

	/* the successor holds the connections (and the sockmap entries): only
	 * this process's references go, no FIN, no reset, no map update */
	for (int i = 0; i < 2; i++) {
		free_leg(legs[i], false);
		free_dir(ds[i]);
	}
	if (r->idle)
		event_free(r->idle);
	event_free(r->done_ev);
	free(r);
}

static bool adopt_check_fd(int fd, bool pipe_end, char *why, size_t whylen)
{
	struct stat st;

	if (fstat(fd, &st) != 0) {
		snprintf(why, whylen, "descriptor: %s", strerror(errno));
		return false;
	}
	if (pipe_end ? !S_ISFIFO(st.st_mode) : !S_ISSOCK(st.st_mode)) {
		snprintf(why, whylen, "a descriptor is not the %s the record says",
		         pipe_end ? "pipe" : "socket");
		return false;
	}
	if (!pipe_end) {
		int type = 0;
		socklen_t len = sizeof(type);
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM ||
		    getpeername(fd, (struct sockaddr *)&ss, &sl) != 0 ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
			snprintf(why, whylen, "a leg is not a connected TCP socket");
			return false;
		}
	}
	return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0;
}

struct relay *relay_adopt(struct event_base *base, const struct ho_session *rec, const int *fds,
                          const struct relay_opts *opts, relay_done_cb done, void *arg, char *why,
                          size_t whylen)
{
	unsigned n = 0;
	int pipe_fd[2][2] = {{-1, -1}, {-1, -1}};

	for (int i = 0; i < 2; i++) {
		if (rec->leg[i].tls != HO_TLS_NONE) {
			snprintf(why, whylen, "this build does not adopt TLS legs");
			return NULL;
		}
		if (!adopt_check_fd(fds[i], false, why, whylen))
			return NULL;
	}
	n = 2;
	for (int i = 0; i < 2; i++) {
		if (!rec->dir[i].pipe)
			continue;
		pipe_fd[i][0] = fds[n++];
		pipe_fd[i][1] = fds[n++];
		int queued = 0;
		if (!adopt_check_fd(pipe_fd[i][0], true, why, whylen) ||
		    !adopt_check_fd(pipe_fd[i][1], true, why, whylen))
			return NULL;
		if (ioctl(pipe_fd[i][0], FIONREAD, &queued) != 0 ||
		    (uint32_t)queued != rec->dir[i].held) {
			snprintf(why, whylen, "the pipe holds %d bytes, the record says %u", queued,
			         rec->dir[i].held);
			return NULL;
		}
	}
	bool sockmap = rec->dir[0].engine == HO_ENGINE_SOCKMAP;
	struct sockmap_pair pair;
	if (sockmap) {
		uint32_t slots[2] = {rec->dir[0].slot, rec->dir[1].slot};
		char e[160];
		if (!sockmap_pair_adopt(&pair, fds[0], fds[1], slots, e, sizeof(e))) {
			snprintf(why, whylen, "sockmap: %s", e);
			return NULL;
		}
	}

	struct relay *r = xcalloc(1, sizeof(*r));
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};
	uint64_t *counts[2] = {&r->st.client_to_backend, &r->st.backend_to_client};
	bool adopt_lost = false;

	r->base = base;
	r->done = done;
	r->arg = arg;
	r->idle_ms = opts ? opts->idle_ms : 0;
	r->done_ev = event_new(base, -1, 0, on_done, r);
	r->idle = evtimer_new(base, on_idle, r);
	for (int i = 0; i < 2; i++) {
		struct relay_leg in = {.fd = fds[i]};
		init_leg(r, legs[i], &in);
		legs[i]->eof = rec->leg[i].eof;
		legs[i]->shut = rec->leg[i].shut;
	}
	for (int i = 0; i < 2; i++) {
		struct relay_leg none = {.fd = -1};
		struct dir *d = ds[i];
		const struct ho_dir *h = &rec->dir[i];
		init_dir(r, d, legs[i], legs[1 - i], counts[i], &none);
		*counts[i] = i ? rec->bytes_down : rec->bytes_up;
		if (h->engine == HO_ENGINE_USER && h->pipe) {
			/* the predecessor's buffer, too large for the record */
			d->prd = pipe_fd[i][0];
			d->pwr = pipe_fd[i][1];
			d->held = h->held;
			pipe_fd[i][0] = pipe_fd[i][1] = -1;
			if (!d->buf || !pipe_to_buffer(d))
				adopt_lost = true;
		}
		if (d->buf && h->n_pending)
			evbuffer_add(d->buf, h->pending, h->n_pending);
		switch (h->engine) {
		case HO_ENGINE_SPLICE:
			d->engine = ENGINE_SPLICE;
			d->path = "splice";
			d->prd = pipe_fd[i][0];
			d->pwr = pipe_fd[i][1];
			d->held = h->held;
			break;
		case HO_ENGINE_SOCKMAP:
			d->engine = ENGINE_SOCKMAP;
			d->path = "sockmap";
			d->kernel = h->kernel;
			d->taken = h->taken;
			d->r0 = h->r0;
			d->red0 = h->red0;
			d->drain_ev = evtimer_new(base, on_drain_poll, d);
			break;
		default:
			break;
		}
		if (opts)
			d->live = i ? opts->live_down : opts->live_up;
	}
	if (sockmap) {
		r->pair = pair;
		r->up.k = pair.dir[0];
		r->down.k = pair.dir[1];
		/* the relay's counts add what the program redirected: the
		 * predecessor's total already did */
		for (int i = 0; i < 2; i++)
			*counts[i] -= ds[i]->k->redirected < *counts[i] ? ds[i]->k->redirected
			                                                : *counts[i];
	}
	r->st.path_up = r->up.path;
	r->st.path_down = r->down.path;
	if (adopt_lost) {
		/* a pipe did not give back what the record says: the stream is
		 * broken, and this process owns it now */
		if (sockmap)
			r->pair.installed = false;
		finish(r, RELAY_END_ERROR, "bytes lost taking a buffer from a pipe");
		return r;
	}
	if (!r->up.buf || !r->down.buf || !r->done_ev || !r->idle || !r->c.rev || !r->c.wev ||
	    !r->b.rev || !r->b.wev || (sockmap && (!r->up.drain_ev || !r->down.drain_ev))) {
		/* nothing happened on the sockets yet: give them back */
		for (int i = 0; i < 2; i++) {
			legs[i]->fd = -1;
			ds[i]->prd = ds[i]->pwr = -1;
			free_leg(legs[i], false);
			free_dir(ds[i]);
		}
		if (sockmap)
			sockmap_pair_forget(&r->pair);
		if (r->idle)
			event_free(r->idle);
		if (r->done_ev)
			event_free(r->done_ev);
		free(r);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	if (r->idle_ms)
		arm_idle(r);
	r->c.readable = r->b.readable = true;
	step(r);
	return r;
}
