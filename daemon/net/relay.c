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
 *              splice(2) through a pipe taken from a per-thread pool
 *              (pipes.h) only while bytes are in flight, grown for
 *              directions that keep filling it;
 *   userspace  anything else: a bounded buffer, OpenSSL on TLS legs.
 *
 * Every engine stops reading its source while its bound is reached, so a
 * slow reader slows the writer down through TCP flow control instead of
 * growing anybody's memory. An end of stream is forwarded (FIN, and a TLS
 * close_notify) once everything before it was written; a reset is
 * forwarded as a reset.
 *
 * Events: one libevent event per socket, read and write, edge-triggered,
 * registered once for the life of the relay. An edge sets the leg's
 * readable or writable flag, a call that answers EAGAIN clears it. Work
 * that stops for another reason (a full pipe or buffer, the per-wake-up
 * budget) keeps the flag and resumes when that reason is gone: a write edge
 * on the other leg, or a 1 µs timeout on the backend leg's event, which
 * runs after the next epoll_wait so that the worker's other sessions get
 * their turn first. An idle session costs no system call at all; the
 * client leg's event doubles as the idle timer.
 *
 * Memory: the relay, its two events and nothing else while idle. Buffers
 * exist while a direction has bytes in user space, pipes while it has
 * bytes in the kernel; once both legs are kernel TLS both ways the SSL
 * objects are freed (ktls.h says what is left to do without them).
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/tls.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "handover.h"
#include "ktls.h"
#include "ktls13.h"
#include "log.h"
#include "pipes.h"
#include "util.h"

#define USER_BUFFER       (256 * 1024) /* userspace bytes per direction */
#define READ_CHUNK        (16 * 1024)  /* also the largest TLS record plaintext */
#define WAKE_BUDGET       (4u << 20)   /* bytes per direction per wake-up */
#define DRAIN_POLL_MIN_US 500
#define DRAIN_POLL_MAX_US 100000

enum engine { ENGINE_USER, ENGINE_SPLICE, ENGINE_SOCKMAP };

struct leg {
	int fd;
	SSL *ssl;         /* NULL for plain legs, and once both legs are kernel TLS */
	struct event *ev; /* read + write, edge-triggered */
	bool is_backend;
	bool tls, tls13; /* the leg speaks TLS (with or without OpenSSL) */
	bool ktls_rx, ktls_tx;
	bool own_rx;       /* TLS 1.3 receive keyed by us: OpenSSL must not read */
	bool eof;          /* the peer ended its stream */
	bool shut;         /* we ended ours toward this peer */
	bool readable;     /* an edge said so, no EAGAIN since */
	bool writable;     /* likewise for room in the send buffer */
	bool read_wants_w; /* SSL_read needs writability */
	bool write_wants_r;
};

/* sockmap state of one direction (data_path = "sockmap" only) */
struct kdir {
	struct ms_dir *m;
	struct event *drain_ev;
	bool kernel; /* the verdict program redirects (not held) */
	bool pinned; /* taken overtook m->passed: never resume (see try_resume) */
	unsigned drain_us;
	uint64_t r0, red0; /* dst's write count and m->redirected at the last resume */
	uint64_t taken;    /* bytes read from src since the pair joined the map */
	uint64_t rx0;      /* bytes src had delivered to the daemon when the pair joined */
};

struct dir {
	struct leg *src, *dst;
	enum engine engine;
	uint32_t held; /* bytes in the pipe */
	uint32_t want; /* pipe capacity this direction asks for */
	struct spipe pipe;
	struct evbuffer *buf; /* bytes in user space; NULL while there are none */
	uint64_t count;       /* application bytes moved */
	atomic_uint_fast64_t *live;
	struct kdir *k;
};

struct relay {
	struct event_base *base;
	struct leg c, b;
	struct dir up, down; /* client->backend, backend->client */
	struct sockmap_pair *pair;
	uint64_t idle_ms, idle_seen;
	relay_done_cb done;
	void *arg;
	char *detail; /* error text when end == RELAY_END_ERROR */
	uint32_t pipe_max;
	enum relay_end end;
	bool finished;
	bool resume_queued;
	bool exporting; /* offered to a successor: hands off the sockets */
	                /* the two events follow, in the same allocation */
};

static void step(struct relay *r);

const char *relay_end_name(enum relay_end e)
{
	static const char *const n[] = {"client closed", "backend closed", "idle timeout",
	                                "error",         "kicked",         "shutdown"};
	return (unsigned)e < ARRAY_LEN(n) ? n[e] : "?";
}

static struct relay *relay_of(struct leg *l)
{
	size_t off = l->is_backend ? offsetof(struct relay, b) : offsetof(struct relay, c);
	return (struct relay *)((char *)l - off);
}

static size_t buf_len(const struct dir *d)
{
	return d->buf ? evbuffer_get_length(d->buf) : 0;
}

static const char *dir_name(const struct relay *r, const struct dir *d)
{
	return d == &r->up ? "up" : "down";
}

static const char *path_name(const struct dir *d)
{
	switch (d->engine) {
	case ENGINE_SOCKMAP:
		return "sockmap";
	case ENGINE_SPLICE:
		return d->src->tls || d->dst->tls ? "ktls-splice" : "splice";
	case ENGINE_USER:
		break;
	}
	return "userspace";
}

/* The counts so far: what the daemon moved plus what the verdict program
 * redirected (sockmap: as of now). */
static uint64_t dir_count(const struct dir *d)
{
	return d->count + (d->k && d->k->m ? d->k->m->redirected : 0);
}

static void stats_of(const struct relay *r, struct relay_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->client_to_backend = dir_count(&r->up);
	st->backend_to_client = dir_count(&r->down);
	st->path_up = path_name(&r->up);
	st->path_down = path_name(&r->down);
	st->ktls_client = r->c.ktls_rx || r->c.ktls_tx;
	st->ktls_backend = r->b.ktls_rx || r->b.ktls_tx;
	st->end = r->end;
	if (r->detail)
		str_copy(st->detail, r->detail, sizeof(st->detail));
}

/* ---- teardown ---- */

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	struct relay_stats st;

	stats_of(r, &st);
	r->done(r->arg, &st);
	free(r->detail);
	free(r); /* the event running this callback lives in r: nothing touches it after */
}

static void free_leg(struct leg *l, bool abortive)
{
	event_del(l->ev);
	if (abortive) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(l->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (l->ssl)
		SSL_free(l->ssl);
	if (l->fd >= 0)
		close(l->fd);
	l->ssl = NULL;
	l->fd = -1;
}

static void fold_kernel_counts(struct relay *r)
{
	struct dir *ds[2] = {&r->up, &r->down};

	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		if (!d->k || !d->k->m)
			continue;
		log_msg(LOG_DEBUG, "relay-kernel",
		        "dir=%s redirected=%llu passed=%llu pauses=%u user_bytes=%llu",
		        dir_name(r, d), (unsigned long long)d->k->m->redirected,
		        (unsigned long long)d->k->m->passed, d->k->m->pauses,
		        (unsigned long long)d->count);
		d->count += d->k->m->redirected;
		d->k->m = NULL; /* the slot goes back to the pool next */
	}
}

static void free_dir(struct dir *d)
{
	spipe_put(&d->pipe, d->held == 0);
	d->held = 0;
	if (d->buf)
		evbuffer_free(d->buf);
	d->buf = NULL;
	if (d->k) {
		if (d->k->drain_ev)
			event_free(d->k->drain_ev);
		free(d->k);
		d->k = NULL;
	}
}

static void finish_how(struct relay *r, enum relay_end end, const char *detail, bool abortive)
{
	if (r->finished)
		return;
	r->finished = true;
	r->end = end;
	if (detail)
		r->detail = strdup(detail);
	/* out of the map first: the sockets must not be redirected into while
	 * they close */
	fold_kernel_counts(r);
	if (r->pair) {
		sockmap_pair_remove(r->pair);
		free(r->pair);
		r->pair = NULL;
	}
	free_leg(&r->c, abortive);
	free_leg(&r->b, abortive);
	free_dir(&r->up);
	free_dir(&r->down);
	/* never call back from inside relay_start or relay_stop's caller: the
	 * client leg's event, idle now, carries the callback to the next turn
	 * of the loop (no allocation that could fail here) */
	event_assign(r->c.ev, r->base, -1, 0, on_done, r);
	event_active(r->c.ev, EV_TIMEOUT, 1);
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

/* Come back after the next epoll_wait: the worker's other sessions go
 * first (an event_active() would run again before libevent polls). A
 * timeout on the backend leg's event, removed again when it fires: no
 * allocation. Not a zero timeout: libevent takes an expired timeout's event
 * out of epoll and puts a persistent one back only if its timeout is not
 * zero (event_persist_closure), so that costs two epoll_ctl calls per
 * resume, once per WAKE_BUDGET. */
static void resume_later(struct relay *r)
{
	static const struct timeval now = {0, 1};

	if (r->resume_queued || r->finished)
		return;
	r->resume_queued = true;
	event_add(r->b.ev, &now);
}

/* ---- user space: read into d->buf, write it out ---- */

static bool can_read(const struct leg *l)
{
	return !l->eof && (l->readable || (l->read_wants_w && l->writable) ||
	                   (l->ssl && SSL_pending(l->ssl) > 0));
}

static bool can_write(const struct leg *l)
{
	return l->writable || (l->write_wants_r && l->readable);
}

static bool tcp_info_of(int fd, struct tcp_info *ti)
{
	socklen_t len = sizeof(*ti);

	memset(ti, 0, sizeof(*ti));
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) == 0;
}

/* Has the peer's FIN arrived on this socket, by TCP's own state? Once a
 * socket has a psock, recv() answers from the psock's queue, and a FIN the
 * program was handed is not always reported there (seen on 6.1 and 6.18:
 * the pair's end went unnoticed). */
static bool fin_received(const struct tcp_info *ti)
{
	/* include/net/tcp_states.h: the states after a FIN came in */
	enum { TIME_WAIT = 6, CLOSE = 7, CLOSE_WAIT = 8, LAST_ACK = 9, CLOSING = 11 };
	switch (ti->tcpi_state) {
	case CLOSE_WAIT:
	case LAST_ACK:
	case CLOSING:
	case TIME_WAIT:
	case CLOSE:
		return true;
	}
	return false;
}

static void arm_drain_poll(struct dir *d);

/* sockmap, held direction: the end of the source's stream, once every byte
 * TCP received before the FIN went through the program (redirected or
 * passed) and every passed byte was read here. Earlier, bytes still waiting
 * for the program would be cut off by the FIN we forward. Bytes the kernel
 * has not run the program over yet are nudged (SO_RCVLOWAT wakes the psock,
 * as at sockmap_pair_add) and looked at again shortly. */
static bool sockmap_src_ended(struct dir *d)
{
	struct tcp_info ti;
	struct kdir *k = d->k;

	if (!tcp_info_of(d->src->fd, &ti) || !fin_received(&ti))
		return false;
	if (ti.tcpi_bytes_received - k->rx0 == k->m->redirected + k->m->passed &&
	    k->m->passed == k->taken)
		return true;
	log_msg(LOG_DEBUG, "relay-kernel",
	        "dir=%s state=fin-pending received=%llu redirected=%llu passed=%llu taken=%llu",
	        dir_name(relay_of(d->src), d),
	        (unsigned long long)(ti.tcpi_bytes_received - k->rx0),
	        (unsigned long long)k->m->redirected, (unsigned long long)k->m->passed,
	        (unsigned long long)k->taken);
	int one = 1;
	setsockopt(d->src->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	arm_drain_poll(d);
	return false;
}

/* sockmap: a leg whose FIN the program redirected as a zero-length skb to
 * this socket's egress has that socket's redirect sending switched off and
 * SO_ERROR = EPIPE set (6.12, 6.18). The socket itself is fine: the error
 * is the kernel's, not the peer's, and must not end the pair. */
static bool sockmap_epipe(const struct dir *d, const struct leg *l, int err)
{
	return err == EPIPE && d->engine == ENGINE_SOCKMAP;
}

/* Read from d->src into d->buf, up to USER_BUFFER (one: a single read).
 * Returns false if the relay finished. */
static bool pull(struct dir *d, bool one)
{
	struct relay *r = relay_of(d->src);
	struct leg *l = d->src;

	if (!d->buf && !(d->buf = evbuffer_new())) {
		finish(r, RELAY_END_ERROR, "out of memory");
		return false;
	}
	struct evbuffer *buf = d->buf;
	while (!l->eof && evbuffer_get_length(buf) < USER_BUFFER) {
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(buf, READ_CHUNK, &v, 1) < 1) {
			finish(r, RELAY_END_ERROR, "out of memory");
			return false;
		}
		if (v.iov_len > READ_CHUNK)
			v.iov_len = READ_CHUNK;
		ssize_t n;
		if (l->ssl && !l->own_rx) {
			size_t got = 0;
			int ok = SSL_read_ex(l->ssl, v.iov_base, v.iov_len, &got);
			if (ok == 1) {
				n = (ssize_t)got;
				l->read_wants_w = false;
			} else {
				int e = SSL_get_error(l->ssl, ok);
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				if (e == SSL_ERROR_WANT_READ) {
					l->read_wants_w = false;
					l->readable = false;
					return true;
				}
				if (e == SSL_ERROR_WANT_WRITE) {
					l->read_wants_w = true;
					l->writable = false;
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
		} else if (l->ktls_rx) {
			/* the kernel decrypts; a record that is not application
			 * data is judged here (ktls.h) */
			char why[160];
			size_t got = 0;
			enum ktls_record k = ktls_read_record(l->fd, l->tls13, v.iov_base,
			                                      v.iov_len, &got, why, sizeof(why));
			if (k != KTLS_DATA) {
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
			}
			switch (k) {
			case KTLS_DATA:
				break;
			case KTLS_AGAIN:
				l->readable = false;
				return true;
			case KTLS_IGNORED: /* NewSessionTicket, HelloRequest */
				if (one)
					return true;
				continue;
			case KTLS_CLOSE:
				l->eof = true;
				return true;
			case KTLS_FATAL:
				log_msg(LOG_INFO, "relay", "leg=%s tls=%s reason=\"%s\"",
				        l->is_backend ? "backend" : "client",
				        l->tls13 ? "1.3" : "1.2", why);
				finish(r, RELAY_END_ERROR, why);
				return false;
			}
			n = (ssize_t)got;
		} else {
			n = recv(l->fd, v.iov_base, v.iov_len, MSG_DONTWAIT);
			if (n <= 0) {
				int err = errno;
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				if (n == 0) {
					/* sockmap: recv() says "end" as soon as the
					 * psock's queue is empty, even while bytes the
					 * program passed up are still on their way to
					 * it; the end is the end only once all of them
					 * were read (sockmap_src_ended) */
					if (!d->k || !d->k->m || d->k->m->passed == d->k->taken)
						l->eof = true;
					else {
						l->readable = false;
						arm_drain_poll(d);
					}
					return true;
				}
				if (err == EAGAIN) {
					l->readable = false;
					/* sockmap: the FIN may have gone to the program
					 * rather than to recv() */
					if (d->k && d->k->m && sockmap_src_ended(d))
						l->eof = true;
					return true;
				}
				if (err == EINTR || sockmap_epipe(d, l, err))
					continue;
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
		d->count += (uint64_t)n;
		if (d->k)
			d->k->taken += (uint64_t)n;
		if (one)
			break;
	}
	return true;
}

/* Write d->buf to d->dst. Returns false if the relay finished. */
static bool push(struct dir *d)
{
	struct relay *r = relay_of(d->src);
	struct leg *l = d->dst;
	struct evbuffer *buf = d->buf;
	bool retried = false;

	while (buf && evbuffer_get_length(buf) > 0) {
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
				l->writable = false;
				return true;
			}
			if (e == SSL_ERROR_WANT_READ) {
				l->write_wants_r = true;
				l->readable = false;
				return true;
			}
			ERR_clear_error();
			finish(r, closed_by(r, l), NULL);
			return false;
		}
		/* plain, or kernel TLS transmit: the kernel seals the records */
		ssize_t n = send(l->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			int err = errno;
			if (err == EAGAIN) {
				l->writable = false;
				return true;
			}
			if (err == EINTR)
				continue;
			if (!retried && sockmap_epipe(d, l, err)) {
				/* the EPIPE the kernel left after a redirected FIN,
				 * not the peer's: read it off and try once more */
				int soerr = 0;
				socklen_t sl = sizeof(soerr);
				getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
				retried = true;
				continue;
			}
			if (err == ECONNRESET) {
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

/* A direction's user-space buffer exists only while it holds bytes. */
static void drop_empty_buf(struct dir *d)
{
	if (d->buf && evbuffer_get_length(d->buf) == 0) {
		evbuffer_free(d->buf);
		d->buf = NULL;
	}
}

static bool step_user(struct dir *d)
{
	struct relay *r = relay_of(d->src);
	uint64_t start = d->count;

	for (;;) {
		if (buf_len(d) > 0 && can_write(d->dst) && !push(d))
			return false;
		if (buf_len(d) >= USER_BUFFER || !can_read(d->src))
			break;
		if (d->count - start >= WAKE_BUDGET) {
			resume_later(r);
			break;
		}
		uint64_t before = d->count;
		if (!pull(d, false))
			return false;
		if (d->count == before)
			break; /* EAGAIN, the end, or OpenSSL waiting for the other way */
	}
	drop_empty_buf(d);
	return true;
}

/* ---- splice engine ---- */

/* pipe -> dst. Returns false if the relay finished. No SPLICE_F_MORE: it
 * corks the last partial segment until the next write or ACK, which cost
 * 64 % of FETCH and 91 % of DATA throughput here for no CPU saved
 * (docs/datapath.md). */
static bool splice_out(struct dir *d)
{
	struct relay *r = relay_of(d->src);

	while (d->held > 0) {
		ssize_t n = splice(d->pipe.rd, NULL, d->dst->fd, NULL, d->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			d->held -= (uint32_t)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN) {
			d->dst->writable = false;
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ECONNRESET)
			reset_seen(r, d->dst);
		else
			finish(r, closed_by(r, d->dst), NULL);
		return false;
	}
	return true;
}

enum in_result { IN_FINISHED, IN_STOP, IN_MOVED };

/* src -> an empty pipe, as much as the pipe holds. An empty pipe makes
 * EAGAIN unambiguous: the source has nothing (a full pipe answers EAGAIN
 * too). */
static enum in_result splice_in(struct dir *d)
{
	struct relay *r = relay_of(d->src);
	struct leg *src = d->src;

	if (d->pipe.rd < 0 && !spipe_get(&d->pipe, d->want)) {
		char msg[96];
		snprintf(msg, sizeof(msg), "no pipe for splice: %s", strerror(errno));
		finish(r, RELAY_END_ERROR, msg);
		return IN_FINISHED;
	}
	if (d->held == 0 && d->pipe.cap < d->want)
		spipe_grow(&d->pipe, d->want);
	ssize_t n = splice(src->fd, NULL, d->pipe.wr, NULL, d->pipe.cap - d->held,
	                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	if (n > 0) {
		d->held += (uint32_t)n;
		d->count += (uint64_t)n;
		return IN_MOVED;
	}
	int err = errno;
	if (n == 0) {
		src->eof = true;
		return IN_STOP;
	}
	if (err == EAGAIN) {
		if (d->held == 0)
			src->readable = false;
		return IN_STOP;
	}
	if (err == EINTR) {
		resume_later(r);
		return IN_STOP;
	}
	if (err == ECONNRESET) {
		reset_seen(r, src);
		return IN_FINISHED;
	}
	if (src->ktls_rx && (err == EINVAL || err == EIO || err == EBADMSG)) {
		/* a record that is not application data (an alert, a
		 * post-handshake message): read that one record in user space;
		 * data it carried goes out before the next spliced byte */
		if (d->held > 0)
			return IN_STOP; /* write out what came before it first */
		return pull(d, true) ? IN_MOVED : IN_FINISHED;
	}
	finish(r, RELAY_END_ERROR, strerror(err));
	return IN_FINISHED;
}

static bool step_splice(struct dir *d)
{
	struct relay *r = relay_of(d->src);
	struct leg *src = d->src, *dst = d->dst;
	uint64_t start = d->count;
	unsigned pipefuls = 0; /* pipes emptied into dst in this wake-up */
	bool moved = false, drain = false;

	for (;;) {
		/* bytes read in user space go first, then the kernel's */
		if (buf_len(d) > 0) {
			if (!can_write(dst))
				break;
			if (!push(d))
				return false;
			if (buf_len(d) > 0)
				break;
		}
		/* kernel TLS receive splices one record (16 KiB at most) per
		 * call: gather records until the pipe is half full, then write
		 * them out with one call */
		bool gather = !drain && d->held > 0 && src->ktls_rx && src->readable && !src->eof &&
		              d->held <= d->pipe.cap / 2 && d->count - start < WAKE_BUDGET;
		if (d->held > 0 && !gather) {
			if (!dst->writable)
				break;
			if (!splice_out(d))
				return false;
			if (d->held > 0)
				break; /* dst is full: its write edge brings us back */
			pipefuls++;
			drain = false;
		}
		if (!src->readable || src->eof)
			break;
		if (d->count - start >= WAKE_BUDGET) {
			resume_later(r);
			break;
		}
		enum in_result in = splice_in(d);
		if (in == IN_FINISHED)
			return false;
		if (in == IN_STOP) {
			if (d->held == 0 && buf_len(d) == 0)
				break;
			drain = true; /* write out what is there, then look again */
			continue;
		}
		moved = true;
		/* more after a pipeful in one wake-up: the pipe is too small for
		 * what this direction is moving (it grows once empty) */
		if (pipefuls > 0 && d->want < r->pipe_max)
			d->want = d->want * 4 < r->pipe_max ? d->want * 4 : r->pipe_max;
	}
	if (d->held == 0) {
		/* a wake-up that found little to read needs no big pipe next time */
		if (moved && d->count - start < SPIPE_DEFAULT)
			d->want = SPIPE_DEFAULT;
		spipe_put(&d->pipe, true);
	}
	drop_empty_buf(d);
	return true;
}

/* ---- sockmap engine ---- */

/* A TCP byte counter joined with its queue's length: bytes_acked + SIOCOUTQ
 * (sent), or bytes_received - SIOCINQ (received). The counter is read on both
 * sides of the queue length; an ACK or an arrival in between would make the
 * sum wrong, so retry until it did not move. */
static bool tcp_count(int fd, bool sent, uint64_t *out)
{
	for (int tries = 0; tries < 100; tries++) {
		struct tcp_info a, b;
		socklen_t la = sizeof(a), lb = sizeof(b);
		int q = 0;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &a, &la) != 0 ||
		    ioctl(fd, sent ? SIOCOUTQ : SIOCINQ, &q) != 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &b, &lb) != 0)
			return false;
		uint64_t ca = sent ? a.tcpi_bytes_acked : a.tcpi_bytes_received;
		uint64_t cb = sent ? b.tcpi_bytes_acked : b.tcpi_bytes_received;
		if (ca == cb) {
			*out = sent ? ca + (uint64_t)q : ca - (uint64_t)q;
			return true;
		}
	}
	return false;
}

/* Bytes ever written into fd's send queue: acked + still queued. */
static bool write_count(int fd, uint64_t *out)
{
	return tcp_count(fd, true, out);
}

/* Bytes TCP received on fd that left its receive queue (read by the daemon).
 * Only before the socket has a psock: then SIOCINQ reads 0. */
static bool read_count(int fd, uint64_t *out)
{
	return tcp_count(fd, false, out);
}

/* Has everything the program redirected reached dst's send queue? Until it
 * has, a byte written by the daemon would overtake it. */
static bool kernel_drained(struct dir *d)
{
	uint64_t redirected = d->k->m->redirected - d->k->red0;
	uint64_t now;

	if (redirected == 0)
		return true;
	return write_count(d->dst->fd, &now) && now - d->k->r0 >= redirected;
}

static void on_drain_poll(evutil_socket_t fd, short what, void *arg)
{
	struct dir *d = arg;

	if (d->k->drain_us < DRAIN_POLL_MAX_US)
		d->k->drain_us *= 2;
	/* look at the source again too: what the kernel still owed this
	 * direction (passed bytes, the end) may have come without an edge */
	if (!d->k->kernel)
		d->src->readable = true;
	step(relay_of(d->src)); /* both directions: this one, and whatever it unblocks */
}

static void arm_drain_poll(struct dir *d)
{
	struct timeval tv = {0, (suseconds_t)d->k->drain_us};
	evtimer_add(d->k->drain_ev, &tv);
}

static void hold(struct dir *d)
{
	d->k->m->hold = 1;
	__sync_synchronize();
	d->k->kernel = false;
}

/* Give the direction back to the verdict program: only when every byte it
 * passed up was read and written on, and dst's queue holds all it
 * redirected (the caller checked both). "Every byte passed up was read" is a
 * count, not a moment: a passed skb can wait in the kernel's backlog work
 * (the source's receive memory was full) after a recv() here already
 * returned EAGAIN, so the program redirects again only while its passed
 * count equals resume_at, the count read here. Bytes that arrive meanwhile
 * raise passed above it and keep being passed until the next resume. False
 * while passed bytes are still on their way up (their read edge brings us
 * back). */
static bool try_resume(struct dir *d)
{
	struct kdir *k = d->k;
	uint64_t passed = k->m->passed;
	struct tcp_info ti;

	if (tcp_info_of(d->src->fd, &ti) && fin_received(&ti)) {
		/* the source has ended: nothing more for the program to
		 * redirect; wait here for the rest (sockmap_src_ended) */
		arm_drain_poll(d);
		return false;
	}

	if (passed != k->taken) {
		if (passed < k->taken && !k->pinned) {
			/* read a byte the program never saw: counting is off,
			 * so the kernel never gets this direction back */
			k->pinned = true;
			log_msg(LOG_WARN, "relay-kernel",
			        "dir=%s state=pinned taken=%llu passed=%llu reason=\"bytes read "
			        "outside the verdict program\"",
			        dir_name(relay_of(d->src), d), (unsigned long long)k->taken,
			        (unsigned long long)passed);
		}
		return false;
	}
	if (!write_count(d->dst->fd, &k->r0))
		return false;
	k->red0 = k->m->redirected;
	k->m->resume_at = passed;
	k->m->rebase = 1;
	__sync_synchronize();
	k->m->hold = 0;
	__sync_synchronize();
	k->kernel = true;
	k->drain_us = DRAIN_POLL_MIN_US;
	return true;
}

/* In kernel mode a read event means bytes passed up, the end of the stream
 * or a reset, or nothing at all (the kernel wakes readers after redirecting
 * too). 1: the daemon must take the direction; 0: nothing to do; -1: the
 * source was reset (the peek consumed the error, so it is handled here). */
static int needs_daemon(struct dir *d)
{
	char c;

	if (d->k->m->passed != d->k->taken)
		return 1;
	ssize_t n = recv(d->src->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && errno == EPIPE) {
		/* the kernel's note that it could not forward the other leg's
		 * FIN to this socket (sockmap_epipe). The peek read it off;
		 * what it hid (this socket's own end, say) is behind it, and
		 * its edge has passed: look again */
		log_msg(LOG_DEBUG, "relay-kernel",
		        "dir=%s note=\"EPIPE from a redirected end of stream, ignored\"",
		        dir_name(relay_of(d->src), d));
		n = recv(d->src->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	}
	struct tcp_info ti;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return tcp_info_of(d->src->fd, &ti) && fin_received(&ti) ? 1 : 0;
	if (n < 0 && errno == ECONNRESET) {
		reset_seen(relay_of(d->src), d->src);
		return -1;
	}
	return 1;
}

static bool step_sockmap(struct dir *d)
{
	struct leg *src = d->src, *dst = d->dst;
	struct kdir *k = d->k;
	uint64_t start = d->count;

	if (k->kernel) {
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
	 * queue to reach dst, write, and once nothing is left give the
	 * direction back; loop, since no new edge comes for a socket that
	 * still has bytes or room */
	for (;;) {
		if (buf_len(d) < USER_BUFFER && can_read(src) && !pull(d, false))
			return false;
		if (!kernel_drained(d)) {
			arm_drain_poll(d);
			return true;
		}
		k->drain_us = DRAIN_POLL_MIN_US;
		if (buf_len(d) > 0) {
			if (!can_write(dst))
				return true; /* its write edge brings us back */
			if (!push(d))
				return false;
			if (buf_len(d) > 0)
				return true;
			if (d->count - start >= WAKE_BUDGET) {
				resume_later(relay_of(src));
				return true;
			}
			continue; /* more may have been passed up meanwhile */
		}
		drop_empty_buf(d);
		if (src->eof || k->pinned)
			return true; /* the end is forwarded by step() */
		if (can_read(src))
			continue;
		try_resume(d);
		return true;
	}
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
		return step_user(d);
	}
	return true;
}

static bool dir_empty(const struct dir *d)
{
	if (buf_len(d) > 0 || d->held > 0)
		return false;
	return d->engine != ENGINE_SOCKMAP || (!d->k->kernel && kernel_drained((struct dir *)d));
}

static void publish(const struct dir *d)
{
	if (d->live)
		atomic_store_explicit(d->live, dir_count(d), memory_order_relaxed);
}

/* Both legs are kernel TLS both ways (or plain) and OpenSSL holds nothing
 * unread: the SSL objects have no work left (ktls.h). */
static void release_ssl(struct relay *r)
{
	struct leg *ls[2] = {&r->c, &r->b};

	if (r->up.engine != ENGINE_SPLICE || r->down.engine != ENGINE_SPLICE)
		return;
	for (int i = 0; i < 2; i++) {
		SSL *ssl = ls[i]->ssl;
		if (ssl && (!ls[i]->ktls_rx || !ls[i]->ktls_tx || SSL_pending(ssl) > 0 ||
		            SSL_has_pending(ssl)))
			return;
	}
	for (int i = 0; i < 2; i++) {
		if (ls[i]->ssl) {
			SSL_free(ls[i]->ssl);
			ls[i]->ssl = NULL;
		}
	}
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
			else if (d->dst->tls)
				ktls_send_close_notify(d->dst->fd);
			shutdown(d->dst->fd, SHUT_WR);
		}
	}
	if (r->c.eof && r->b.eof && r->c.shut && r->b.shut) {
		finish(r, RELAY_END_CLIENT_CLOSED, NULL);
		return;
	}
	if (r->c.ssl || r->b.ssl)
		release_ssl(r);
}

/* Idle: nothing moved, in user space or in the kernel, for a whole period. */
static uint64_t activity(const struct relay *r)
{
	uint64_t n = r->up.count + r->down.count;
	if (r->up.k && r->up.k->m)
		n += r->up.k->m->redirected + r->up.k->m->passed;
	if (r->down.k && r->down.k->m)
		n += r->down.k->m->redirected + r->down.k->m->passed;
	return n;
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
	struct leg *l = arg;
	struct relay *r = relay_of(l);

	if (what & EV_TIMEOUT) {
		if (l->is_backend) {
			/* resume_later()'s timeout: persist re-armed it */
			event_remove_timer(l->ev);
			r->resume_queued = false;
		} else {
			uint64_t now = activity(r);
			if (now == r->idle_seen) {
				finish(r, RELAY_END_IDLE, NULL);
				return;
			}
			r->idle_seen = now;
		}
	}
	if (what & EV_READ)
		l->readable = true;
	if (what & EV_WRITE)
		l->writable = true;
	step(r);
}

/* ---- start ---- */

static void init_leg(struct relay *r, struct leg *l, const struct relay_leg *in, struct event *ev,
                     bool backend)
{
	l->fd = in->fd;
	l->ssl = in->ssl;
	l->ev = ev;
	l->is_backend = backend;
	/* OpenSSL may already hold decrypted bytes, the sockets may hold
	 * bytes that arrived before the hand-over: look at once */
	l->readable = l->writable = true;
	if (l->ssl) {
		l->tls = true;
		l->tls13 = SSL_version(l->ssl) == TLS1_3_VERSION;
		l->ktls_rx = BIO_get_ktls_recv(SSL_get_rbio(l->ssl)) == 1;
		l->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(l->ssl)) == 1;
	}
}

static void init_dir(struct dir *d, struct leg *src, struct leg *dst,
                     struct relay_leg *pending_from)
{
	d->src = src;
	d->dst = dst;
	d->pipe = SPIPE_NONE;
	d->want = SPIPE_DEFAULT;
	d->engine = ENGINE_USER;
	/* what was read but not yet forwarded goes first */
	if (pending_from->pending && evbuffer_get_length(pending_from->pending) > 0)
		d->buf = pending_from->pending;
	else if (pending_from->pending)
		evbuffer_free(pending_from->pending);
	pending_from->pending = NULL;
}

/* Bytes OpenSSL already decrypted are not in the kernel's queue any more:
 * they go out from the buffer before anything spliced. */
static void take_ssl_pending(struct dir *d)
{
	struct relay *r = relay_of(d->src);

	while (d->src->ssl && SSL_pending(d->src->ssl) > 0 && !r->finished)
		if (!pull(d, false) || buf_len(d) >= USER_BUFFER)
			break;
}

/* TLS 1.3 source leg without kernel receive (OpenSSL 3.0 does not key it):
 * hand OpenSSL's decrypted bytes to the buffer, then key the kernel with
 * the peer's traffic secret at the record count OpenSSL reached. */
static void key_own_rx(struct dir *d)
{
	struct relay *r = relay_of(d->src);
	char why[160];

	if (SSL_version(d->src->ssl) != TLS1_3_VERSION)
		return;
	take_ssl_pending(d);
	if (r->finished || d->src->eof)
		return;
	if (!ktls13_install_rx(d->src->ssl, d->src->fd, why, sizeof(why))) {
		log_msg(LOG_DEBUG, "ktls13", "dir=%s rx=openssl reason=\"%s\"", dir_name(r, d),
		        why);
		return;
	}
	d->src->ktls_rx = d->src->own_rx = true;
}

static bool start_sockmap(struct relay *r, const struct relay_opts *opts)
{
	struct dir *ds[2] = {&r->up, &r->down};
	char err[160] = "TCP_INFO unavailable on a leg";
	uint32_t limit = opts && opts->kernel_queue_limit ? opts->kernel_queue_limit : 4u << 20;
	uint64_t r0[2];

	/* the kernel redirects from the first byte, so what was read before
	 * the hand-over must be in the send queues already: it is small (a
	 * pipelined command), else this pair splices */
	if (!push(&r->up) || !push(&r->down))
		return false;
	drop_empty_buf(&r->up);
	drop_empty_buf(&r->down);
	r->pair = calloc(1, sizeof(*r->pair));
	struct kdir *k[2] = {calloc(1, sizeof(struct kdir)), calloc(1, sizeof(struct kdir))};
	uint64_t rx0[2];
	if (r->pair && k[0] && k[1] && buf_len(&r->up) == 0 && buf_len(&r->down) == 0 &&
	    write_count(r->b.fd, &r0[0]) && write_count(r->c.fd, &r0[1]) &&
	    read_count(r->c.fd, &rx0[0]) && read_count(r->b.fd, &rx0[1]) &&
	    sockmap_pair_add(r->pair, r->c.fd, r->b.fd, limit, err, sizeof(err))) {
		for (int i = 0; i < 2; i++) {
			ds[i]->engine = ENGINE_SOCKMAP;
			ds[i]->k = k[i];
			k[i]->m = r->pair->dir[i];
			k[i]->kernel = true;
			k[i]->r0 = r0[i];
			k[i]->rx0 = rx0[i];
			k[i]->drain_us = DRAIN_POLL_MIN_US;
			k[i]->drain_ev = evtimer_new(r->base, on_drain_poll, ds[i]);
			if (!k[i]->drain_ev) {
				finish(r, RELAY_END_ERROR, "out of memory");
				return false;
			}
		}
		return true;
	}
	free(k[0]);
	free(k[1]);
	free(r->pair);
	r->pair = NULL;
	if (buf_len(&r->up) > 0 || buf_len(&r->down) > 0)
		snprintf(err, sizeof(err), "bytes from before the hand-over still queued");
	log_msg(LOG_WARN, "data-path", "sockmap=refused reason=\"%s\" using=splice", err);
	return true;
}

static void choose_engines(struct relay *r, const struct relay_opts *opts)
{
	const struct datapath_caps *caps = datapath_caps();
	enum data_path_mode mode = opts ? opts->mode : DATA_PATH_AUTO;
	struct dir *ds[2] = {&r->up, &r->down};

	if (mode == DATA_PATH_USERSPACE)
		return;
	if (!r->c.ssl && !r->b.ssl && caps->kernel_path && mode == DATA_PATH_SOCKMAP) {
		if (!start_sockmap(r, opts) || r->up.engine == ENGINE_SOCKMAP)
			return;
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
			take_ssl_pending(d);
		}
	}
}

struct relay *relay_start(struct event_base *base, struct relay_leg *client,
                          struct relay_leg *backend, const struct relay_opts *opts,
                          relay_done_cb done, void *arg)
{
	size_t evsz = event_get_struct_event_size();
	size_t off = (sizeof(struct relay) + 15) & ~(size_t)15;
	struct relay *r = xcalloc(1, off + 2 * evsz);
	struct event *ev_c = (struct event *)((char *)r + off);
	struct event *ev_b = (struct event *)((char *)r + off + evsz);
	short what = EV_READ | EV_WRITE | EV_ET | EV_PERSIST;

	r->base = base;
	r->done = done;
	r->arg = arg;
	r->idle_ms = opts ? opts->idle_ms : 0;
	r->pipe_max = opts && opts->pipe_max >= SPIPE_DEFAULT ? opts->pipe_max : SPIPE_DEFAULT;
	init_leg(r, &r->c, client, ev_c, false);
	init_leg(r, &r->b, backend, ev_b, true);
	init_dir(&r->up, &r->c, &r->b, client);
	init_dir(&r->down, &r->b, &r->c, backend);
	if (opts) {
		r->up.live = opts->live_up;
		r->down.live = opts->live_down;
	}
	if (event_assign(ev_c, base, r->c.fd, what, on_event, &r->c) != 0 ||
	    event_assign(ev_b, base, r->b.fd, what, on_event, &r->b) != 0) {
		finish(r, RELAY_END_ERROR, "cannot set up the relay's events");
		return r;
	}
	choose_engines(r, opts);
	if (r->finished)
		return r;
	struct timeval idle = {(time_t)(r->idle_ms / 1000),
	                       (suseconds_t)(r->idle_ms % 1000) * 1000};
	if (event_add(ev_c, r->idle_ms ? &idle : NULL) != 0 || event_add(ev_b, NULL) != 0) {
		finish(r, RELAY_END_ERROR, "cannot watch the relay's sockets");
		return r;
	}
	step(r);
	return r;
}

void relay_stop(struct relay *r, enum relay_end end)
{
	finish(r, end, NULL);
}

void relay_peek(const struct relay *r, struct relay_stats *st)
{
	stats_of(r, st);
}

/* ---- hand-over to a successor process (docs/upgrade.md) ----
 *
 * A relay moves when nothing of its stream is held where a descriptor
 * cannot carry it: no TLS state in OpenSSL (both legs kernel TLS both ways,
 * their SSL objects freed by release_ssl), sockmap directions redirected by
 * the kernel (not held by the daemon). Bytes in a pipe travel with the
 * pipe; bytes in a buffer travel in the record (up to HO_PENDING_MAX) or in
 * a pipe made for them. The exporting relay stops touching its sockets at
 * once and for good, unless the successor refuses it. */

static void quiesce(struct relay *r)
{
	struct dir *ds[2] = {&r->up, &r->down};

	event_del(r->c.ev);
	event_del(r->b.ev);
	r->resume_queued = false;
	for (int i = 0; i < 2; i++)
		if (ds[i]->k && ds[i]->k->drain_ev)
			event_del(ds[i]->k->drain_ev);
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

/* Move what d->buf holds into a pipe of its own, sized to take it all. The
 * order stays: a splice direction writes its buffer out before anything
 * its pipe would hold, and that pipe is empty while the buffer is not. */
static bool buffer_to_pipe(struct dir *d, char *why, size_t whylen)
{
	size_t len = buf_len(d);
	int p[2];

	if (d->held > 0) {
		snprintf(why, whylen, "bytes both in user space and in a pipe");
		return false;
	}
	spipe_put(&d->pipe, true); /* an empty splice pipe goes back to the pool */
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
		snprintf(why, whylen, "pipe: %s", strerror(errno));
		return false;
	}
	unsigned char *data = evbuffer_pullup(d->buf, -1);
	ssize_t w = -1;
	if (data && fcntl(p[1], F_SETPIPE_SZ, (int)len) >= (int)len)
		w = write(p[1], data, len);
	if (w != (ssize_t)len || !spipe_adopt(&d->pipe, p[0], p[1])) {
		snprintf(why, whylen, "%zu bytes read and not yet written, and no pipe takes them",
		         len);
		close(p[0]);
		close(p[1]);
		return false;
	}
	evbuffer_drain(d->buf, len);
	drop_empty_buf(d);
	d->held = (uint32_t)len;
	return true;
}

/* A userspace direction's bytes that came (or went) as a pipe: read them
 * into the front of its buffer. */
static bool pipe_to_buffer(struct dir *d)
{
	struct evbuffer *tmp = evbuffer_new();
	bool ok = tmp != NULL;

	while (ok && d->held > 0) {
		int n = evbuffer_read(tmp, d->pipe.rd, (int)d->held);
		if (n <= 0)
			ok = false;
		else
			d->held -= (uint32_t)n;
	}
	if (ok && !d->buf && !(d->buf = evbuffer_new()))
		ok = false;
	if (ok)
		evbuffer_prepend_buffer(d->buf, tmp);
	if (tmp)
		evbuffer_free(tmp);
	spipe_put(&d->pipe, ok);
	d->held = 0;
	return ok;
}

static struct ho_leg ho_leg_of(const struct leg *l)
{
	return (struct ho_leg){.tls = !l->tls    ? HO_TLS_NONE
	                              : l->tls13 ? HO_TLS_1_3
	                                         : HO_TLS_1_2,
	                       .ktls_rx = l->ktls_rx,
	                       .ktls_tx = l->ktls_tx,
	                       .own_rx = l->own_rx,
	                       .eof = l->eof,
	                       .shut = l->shut};
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
	/* an idle session may not have stepped since its legs went kernel TLS */
	if (r->c.ssl || r->b.ssl)
		release_ssl(r);
	for (int i = 0; i < 2; i++) {
		struct leg *l = legs[i];
		if (l->tls && (!l->ktls_rx || !l->ktls_tx)) {
			snprintf(why, whylen, "TLS on the %s leg is in OpenSSL (no kernel TLS %s)",
			         leg_name[i], l->ktls_tx ? "receive" : "transmit");
			return -1;
		}
		if (l->ssl) {
			/* released at the next step once OpenSSL holds nothing */
			snprintf(why, whylen, "TLS on the %s leg is still in OpenSSL", leg_name[i]);
			return 0;
		}
	}
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		if (d->engine == ENGINE_SOCKMAP &&
		    (!d->k->kernel || d->k->pinned || buf_len(d) > 0)) {
			snprintf(why, whylen, "sockmap direction %s is held by the daemon",
			         dir_name(r, d));
			return 0;
		}
		if (d->pipe.rd >= 0 && d->held > 0) {
			int queued = 0;
			if (ioctl(d->pipe.rd, FIONREAD, &queued) != 0 ||
			    (uint32_t)queued != d->held) {
				snprintf(why, whylen,
				         "pipe %s holds %d bytes, the relay counted %u",
				         dir_name(r, d), queued, d->held);
				return -1;
			}
		}
	}
	/* the rest of a large buffer travels in a pipe of its own */
	for (int i = 0; i < 2; i++)
		if (buf_len(ds[i]) > HO_PENDING_MAX && !buffer_to_pipe(ds[i], why, whylen))
			return 0;
	quiesce(r);
	r->exporting = true;
	unsigned n = 0;
	fds[n++] = r->c.fd;
	fds[n++] = r->b.fd;
	for (int i = 0; i < 2; i++)
		rec->leg[i] = ho_leg_of(legs[i]);
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		struct ho_dir *h = &rec->dir[i];
		*h = (struct ho_dir){.engine = ho_engine_of(d), .slot = HO_NO_SLOT};
		if (d->pipe.rd >= 0 && d->held > 0) {
			/* splice: its pipe; userspace: its buffer, moved into one */
			h->pipe = true;
			h->held = d->held;
			fds[n++] = d->pipe.rd;
			fds[n++] = d->pipe.wr;
		}
		if (d->engine == ENGINE_SOCKMAP) {
			h->slot = r->pair->slot[i];
			h->kernel = d->k->kernel;
			h->taken = d->k->taken;
			h->r0 = d->k->r0;
			h->red0 = d->k->red0;
		}
		h->n_pending = buf_len(d);
		h->pending = h->n_pending ? evbuffer_pullup(d->buf, -1) : NULL;
	}
	return 1;
}

void relay_export_resume(struct relay *r)
{
	struct dir *ds[2] = {&r->up, &r->down};

	if (!r->exporting)
		return;
	r->exporting = false;
	for (int i = 0; i < 2; i++) {
		if (ds[i]->engine == ENGINE_USER && ds[i]->held > 0 && !pipe_to_buffer(ds[i])) {
			finish(r, RELAY_END_ERROR, "bytes lost taking a buffer back from a pipe");
			return;
		}
	}
	struct timeval idle = {(time_t)(r->idle_ms / 1000),
	                       (suseconds_t)(r->idle_ms % 1000) * 1000};
	if (event_add(r->c.ev, r->idle_ms ? &idle : NULL) != 0 || event_add(r->b.ev, NULL) != 0) {
		finish(r, RELAY_END_ERROR, "cannot watch the relay's sockets");
		return;
	}
	r->c.readable = r->c.writable = r->b.readable = r->b.writable = true;
	step(r);
}

void relay_export_release(struct relay *r)
{
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};

	/* the successor holds the connections (and the sockmap entries): only
	 * this process's references go, no FIN, no reset, no map update */
	quiesce(r);
	for (int i = 0; i < 2; i++)
		free_leg(legs[i], false);
	for (int i = 0; i < 2; i++)
		free_dir(ds[i]);
	free(r->pair);
	free(r->detail);
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

/* What the record says of a TLS leg, against what the kernel says: the
 * socket has the tls ULP and its transmit side speaks that version (asked
 * with the header's length only, so no key material is copied out). */
static bool adopt_check_tls(int fd, const struct ho_leg *l, char *why, size_t whylen)
{
	char ulp[16] = "";
	socklen_t len = sizeof(ulp);
	struct tls_crypto_info ci;
	socklen_t cl = sizeof(ci);

	if (getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &len) != 0 || strcmp(ulp, "tls") != 0) {
		snprintf(why, whylen, "a TLS leg without kernel TLS on its socket");
		return false;
	}
	memset(&ci, 0, sizeof(ci));
	if (getsockopt(fd, SOL_TLS, TLS_TX, &ci, &cl) != 0 ||
	    ci.version != (l->tls == HO_TLS_1_3 ? TLS_1_3_VERSION : TLS_1_2_VERSION)) {
		snprintf(why, whylen, "the socket's kernel TLS is not the version the record says");
		return false;
	}
	return true;
}

struct relay *relay_adopt(struct event_base *base, const struct ho_session *rec, const int *fds,
                          const struct relay_opts *opts, relay_done_cb done, void *arg, char *why,
                          size_t whylen)
{
	int pipe_fd[2][2] = {{-1, -1}, {-1, -1}};
	unsigned n = 2;

	for (int i = 0; i < 2; i++) {
		if (!adopt_check_fd(fds[i], false, why, whylen))
			return NULL;
		if (rec->leg[i].tls != HO_TLS_NONE &&
		    !adopt_check_tls(fds[i], &rec->leg[i], why, whylen))
			return NULL;
	}
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
	struct sockmap_pair *pair = NULL;
	struct kdir *k[2] = {NULL, NULL};
	if (sockmap) {
		uint32_t slots[2] = {rec->dir[0].slot, rec->dir[1].slot};
		char e[160];
		pair = calloc(1, sizeof(*pair));
		k[0] = calloc(1, sizeof(*k[0]));
		k[1] = calloc(1, sizeof(*k[1]));
		if (!pair || !k[0] || !k[1] ||
		    !sockmap_pair_adopt(pair, fds[0], fds[1], slots, e, sizeof(e))) {
			snprintf(why, whylen, "sockmap: %s",
			         pair && k[0] && k[1] ? e : "out of memory");
			free(pair);
			free(k[0]);
			free(k[1]);
			return NULL;
		}
	}

	size_t evsz = event_get_struct_event_size();
	size_t off = (sizeof(struct relay) + 15) & ~(size_t)15;
	struct relay *r = xcalloc(1, off + 2 * evsz);
	struct event *ev_c = (struct event *)((char *)r + off);
	struct event *ev_b = (struct event *)((char *)r + off + evsz);
	short what = EV_READ | EV_WRITE | EV_ET | EV_PERSIST;
	struct leg *legs[2] = {&r->c, &r->b};
	struct dir *ds[2] = {&r->up, &r->down};
	struct relay_leg none = {.fd = -1};
	bool lost = false;

	r->base = base;
	r->done = done;
	r->arg = arg;
	r->idle_ms = opts ? opts->idle_ms : 0;
	r->pipe_max = opts && opts->pipe_max >= SPIPE_DEFAULT ? opts->pipe_max : SPIPE_DEFAULT;
	for (int i = 0; i < 2; i++) {
		struct relay_leg in = {.fd = fds[i]};
		const struct ho_leg *h = &rec->leg[i];
		init_leg(r, legs[i], &in, i ? ev_b : ev_c, i == 1);
		legs[i]->tls = h->tls != HO_TLS_NONE;
		legs[i]->tls13 = h->tls == HO_TLS_1_3;
		legs[i]->ktls_rx = h->ktls_rx;
		legs[i]->ktls_tx = h->ktls_tx;
		legs[i]->own_rx = h->own_rx;
		legs[i]->eof = h->eof;
		legs[i]->shut = h->shut;
	}
	for (int i = 0; i < 2; i++) {
		struct dir *d = ds[i];
		const struct ho_dir *h = &rec->dir[i];
		init_dir(d, legs[i], legs[1 - i], &none);
		d->count = i ? rec->bytes_down : rec->bytes_up;
		if (h->pipe) {
			/* it owns the descriptors only once counted as ours */
			if (!spipe_adopt(&d->pipe, pipe_fd[i][0], pipe_fd[i][1])) {
				close(pipe_fd[i][0]);
				close(pipe_fd[i][1]);
				lost = true;
			}
			d->held = h->held;
		}
		/* userspace: the buffer that came as a pipe, then the record's bytes */
		if (h->engine == HO_ENGINE_USER && d->held > 0 && !pipe_to_buffer(d))
			lost = true;
		if (h->n_pending) {
			if (!d->buf && !(d->buf = evbuffer_new()))
				lost = true;
			else
				evbuffer_add(d->buf, h->pending, h->n_pending);
		}
		switch (h->engine) {
		case HO_ENGINE_SPLICE:
			d->engine = ENGINE_SPLICE;
			break;
		case HO_ENGINE_SOCKMAP:
			d->engine = ENGINE_SOCKMAP;
			d->k = k[i];
			d->k->m = pair->dir[i];
			d->k->kernel = h->kernel;
			d->k->taken = h->taken;
			d->k->r0 = h->r0;
			d->k->red0 = h->red0;
			d->k->drain_us = DRAIN_POLL_MIN_US;
			d->k->drain_ev = evtimer_new(base, on_drain_poll, d);
			if (!d->k->drain_ev)
				lost = true;
			/* the predecessor's count included what the program
			 * redirected, and so will ours */
			d->count -= d->k->m->redirected < d->count ? d->k->m->redirected : d->count;
			break;
		default:
			d->engine = ENGINE_USER;
			break;
		}
		if (opts)
			d->live = i ? opts->live_down : opts->live_up;
	}
	r->pair = pair;
	if (event_assign(ev_c, base, r->c.fd, what, on_event, &r->c) != 0 ||
	    event_assign(ev_b, base, r->b.fd, what, on_event, &r->b) != 0) {
		finish(r, RELAY_END_ERROR, "cannot set up the relay's events");
		return r;
	}
	if (lost) {
		/* a pipe did not give back what the record says, or memory ran
		 * out: the stream is broken, and it is this process's now */
		finish(r, RELAY_END_ERROR, "the session's bytes could not be taken over");
		return r;
	}
	struct timeval idle = {(time_t)(r->idle_ms / 1000),
	                       (suseconds_t)(r->idle_ms % 1000) * 1000};
	if (event_add(ev_c, r->idle_ms ? &idle : NULL) != 0 || event_add(ev_b, NULL) != 0) {
		finish(r, RELAY_END_ERROR, "cannot watch the relay's sockets");
		return r;
	}
	step(r);
	return r;
}
