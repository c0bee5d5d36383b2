/*
 * The userspace data path (see relay.h): bytes move through a bounded
 * buffer per direction, with OpenSSL on TLS legs. A direction stops
 * reading its source while its buffer is full, so a slow reader slows the
 * writer down through TCP flow control instead of growing our memory.
 *
 * Half-close is forwarded: when one side ends its stream, the other side
 * gets FIN (and a TLS close_notify) once everything before it was written.
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"
#include "util.h"

#define DIR_BUFFER (256 * 1024) /* per direction: bounds memory per session */
#define READ_CHUNK (16 * 1024)

struct leg {
	struct relay *r;
	int fd;
	SSL *ssl;
	struct event *rev, *wev;
	bool eof;          /* the peer ended its stream */
	bool shut;         /* we ended ours toward this peer */
	bool read_wants_w; /* SSL_read needs writability */
	bool write_wants_r;
};

/* A spliced direction: bytes move socket -> pipe -> socket in the kernel.
 * The pipe is the bound: while it is full the source is not read. */
struct spliced {
	int rd, wr;
	size_t held; /* bytes in the pipe */
};

#define PIPE_CAP (64 * 1024) /* the default pipe size: 16 pages */

struct relay {
	struct event_base *base;
	struct leg c, b;
	bool spliced;
	struct spliced sup, sdown;  /* client->backend, backend->client */
	struct evbuffer *up, *down; /* client->backend, backend->client */
	struct event *idle;
	struct event *done_ev;
	uint64_t idle_ms;
	relay_done_cb done;
	void *arg;
	struct relay_stats st;
	bool finished;
};

static void update(struct relay *r);

const char *relay_end_name(enum relay_end e)
{
	static const char *const n[] = {"client closed", "backend closed", "idle timeout",
	                                "error",         "kicked",         "shutdown"};
	return (unsigned)e < ARRAY_LEN(n) ? n[e] : "?";
}

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

static void finish(struct relay *r, enum relay_end end, const char *detail)
{
	if (r->finished)
		return;
	r->finished = true;
	r->st.end = end;
	if (detail)
		str_copy(r->st.detail, detail, sizeof(r->st.detail));
	bool abortive = end == RELAY_END_KICKED || end == RELAY_END_ERROR ||
	                end == RELAY_END_SHUTDOWN || end == RELAY_END_IDLE;
	free_leg(&r->c, abortive);
	free_leg(&r->b, abortive);
	if (r->spliced) {
		close(r->sup.rd);
		close(r->sup.wr);
		close(r->sdown.rd);
		close(r->sdown.wr);
	}
	evbuffer_free(r->up);
	evbuffer_free(r->down);
	if (r->idle)
		event_free(r->idle);
	r->idle = NULL;
	/* never call back from inside relay_start or relay_stop's caller */
	event_active(r->done_ev, EV_TIMEOUT, 0);
}

/* Read from l into buf (bounded). Returns false if the relay finished. */
static bool pull(struct relay *r, struct leg *l, struct evbuffer *buf, uint64_t *count)
{
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
				if (e == SSL_ERROR_WANT_READ) {
					l->read_wants_w = false;
					return true;
				}
				if (e == SSL_ERROR_WANT_WRITE) {
					l->read_wants_w = true;
					return true;
				}
				if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) {
					/* close_notify, or a plain TCP close */
					ERR_clear_error();
					l->eof = true;
					return true;
				}
				char msg[128];
				ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
				ERR_clear_error();
				finish(r, RELAY_END_ERROR, msg);
				return false;
			}
		} else {
			n = read(l->fd, v.iov_base, v.iov_len);
			if (n < 0) {
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				if (errno == EAGAIN || errno == EINTR)
					return true;
				if (errno == ECONNRESET) {
					l->eof = true;
					return true;
				}
				finish(r, RELAY_END_ERROR, strerror(errno));
				return false;
			}
			if (n == 0) {
				v.iov_len = 0;
				evbuffer_commit_space(buf, &v, 1);
				l->eof = true;
				return true;
			}
		}
		v.iov_len = (size_t)n;
		evbuffer_commit_space(buf, &v, 1);
		*count += (uint64_t)n;
		if (r->idle_ms) {
			struct timeval tv = {(time_t)(r->idle_ms / 1000),
			                     (suseconds_t)(r->idle_ms % 1000) * 1000};
			evtimer_add(r->idle, &tv);
		}
	}
	return true;
}

/* Write buf to l. Returns false if the relay finished. */
static bool push(struct relay *r, struct leg *l, struct evbuffer *buf)
{
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
			finish(r, l == &r->c ? RELAY_END_CLIENT_CLOSED : RELAY_END_BACKEND_CLOSED,
			       NULL);
			return false;
		}
		ssize_t n = send(l->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return true;
			finish(r, l == &r->c ? RELAY_END_CLIENT_CLOSED : RELAY_END_BACKEND_CLOSED,
			       NULL);
			return false;
		}
		evbuffer_drain(buf, (size_t)n);
	}
	return true;
}

static void touch_idle(struct relay *r)
{
	if (r->idle_ms) {
		struct timeval tv = {(time_t)(r->idle_ms / 1000),
		                     (suseconds_t)(r->idle_ms % 1000) * 1000};
		evtimer_add(r->idle, &tv);
	}
}

/* pipe -> dst. Returns false if the relay finished. */
static bool splice_out(struct relay *r, struct spliced *p, struct leg *dst)
{
	while (p->held > 0) {
		ssize_t n = splice(p->rd, NULL, dst->fd, NULL, p->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			p->held -= (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		finish(r, dst == &r->c ? RELAY_END_CLIENT_CLOSED : RELAY_END_BACKEND_CLOSED, NULL);
		return false;
	}
	return true;
}

/* src -> pipe, as far as the pipe has room. */
static bool splice_in(struct relay *r, struct leg *src, struct spliced *p, uint64_t *count)
{
	while (!src->eof && p->held < PIPE_CAP) {
		ssize_t n = splice(src->fd, NULL, p->wr, NULL, PIPE_CAP - p->held,
		                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			p->held += (size_t)n;
			*count += (uint64_t)n;
			touch_idle(r);
			continue;
		}
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			src->eof = true;
			return true;
		}
		if (errno == EAGAIN || errno == EINTR)
			return true;
		finish(r, RELAY_END_ERROR, strerror(errno));
		return false;
	}
	return true;
}

static bool move_spliced(struct relay *r, struct leg *src, struct leg *dst, struct evbuffer *buf,
                         struct spliced *p, uint64_t *count)
{
	/* bytes read before the hand-over go first, then the kernel's */
	if (!push(r, dst, buf))
		return false;
	if (evbuffer_get_length(buf) > 0)
		return true;
	return splice_out(r, p, dst) && splice_in(r, src, p, count) && splice_out(r, p, dst);
}

static void step(struct relay *r)
{
	if (r->spliced) {
		if (!move_spliced(r, &r->c, &r->b, r->up, &r->sup, &r->st.client_to_backend) ||
		    !move_spliced(r, &r->b, &r->c, r->down, &r->sdown, &r->st.backend_to_client))
			return;
	} else if (!pull(r, &r->c, r->up, &r->st.client_to_backend) || !push(r, &r->b, r->up) ||
	           !pull(r, &r->b, r->down, &r->st.backend_to_client) || !push(r, &r->c, r->down)) {
		return;
	}
	/* forward an end of stream once everything before it went out */
	struct leg *pairs[2][2] = {{&r->c, &r->b}, {&r->b, &r->c}};
	struct evbuffer *bufs[2] = {r->up, r->down};
	size_t held[2] = {r->sup.held, r->sdown.held};
	for (int i = 0; i < 2; i++) {
		struct leg *src = pairs[i][0], *dst = pairs[i][1];
		if (src->eof && !dst->shut && evbuffer_get_length(bufs[i]) == 0 && held[i] == 0) {
			dst->shut = true;
			if (dst->ssl)
				SSL_shutdown(dst->ssl);
			shutdown(dst->fd, SHUT_WR);
		}
	}
	if (r->c.eof && r->b.eof && r->c.shut && r->b.shut) {
		finish(r, RELAY_END_CLIENT_CLOSED, NULL);
		return;
	}
	update(r);
}

static void update_leg(struct leg *l, struct evbuffer *from_l, struct evbuffer *to_l)
{
	bool want_r = (!l->eof && evbuffer_get_length(from_l) < DIR_BUFFER) || l->write_wants_r;
	bool want_w = (evbuffer_get_length(to_l) > 0 && !l->write_wants_r) || l->read_wants_w;

	if (want_r)
		event_add(l->rev, NULL);
	else
		event_del(l->rev);
	if (want_w)
		event_add(l->wev, NULL);
	else
		event_del(l->wev);
}

static void update_spliced(struct leg *l, const struct spliced *from_l, const struct spliced *to_l,
                           struct evbuffer *to_buf)
{
	if (!l->eof && from_l->held < PIPE_CAP)
		event_add(l->rev, NULL);
	else
		event_del(l->rev);
	if (to_l->held > 0 || evbuffer_get_length(to_buf) > 0)
		event_add(l->wev, NULL);
	else
		event_del(l->wev);
}

static void update(struct relay *r)
{
	if (r->spliced) {
		update_spliced(&r->c, &r->sup, &r->sdown, r->down);
		update_spliced(&r->b, &r->sdown, &r->sup, r->up);
		return;
	}
	update_leg(&r->c, r->up, r->down);
	update_leg(&r->b, r->down, r->up);
}

/* Both legs plain: move the bytes with splice(2) through two pipes. */
static bool try_splice(struct relay *r, const struct relay_opts *opts)
{
	int a[2], b[2];

	if (r->c.ssl || r->b.ssl || (opts && opts->mode == DATA_PATH_USERSPACE) ||
	    !datapath_caps()->splice)
		return false;
	if (pipe2(a, O_NONBLOCK | O_CLOEXEC) != 0)
		return false;
	if (pipe2(b, O_NONBLOCK | O_CLOEXEC) != 0) {
		close(a[0]);
		close(a[1]);
		return false;
	}
	r->sup = (struct spliced){.rd = a[0], .wr = a[1]};
	r->sdown = (struct spliced){.rd = b[0], .wr = b[1]};
	r->spliced = true;
	r->st.path_up = r->st.path_down = "splice";
	return true;
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct leg *l = arg;
	step(l->r);
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	finish(arg, RELAY_END_IDLE, NULL);
}

static void init_leg(struct relay *r, struct leg *l, const struct relay_leg *in)
{
	l->r = r;
	l->fd = in->fd;
	l->ssl = in->ssl;
	l->rev = event_new(r->base, in->fd, EV_READ | EV_PERSIST, on_io, l);
	l->wev = event_new(r->base, in->fd, EV_WRITE | EV_PERSIST, on_io, l);
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
	r->up = evbuffer_new();
	r->down = evbuffer_new();
	r->done_ev = event_new(base, -1, 0, on_done, r);
	r->idle = evtimer_new(base, on_idle, r);
	init_leg(r, &r->c, client);
	init_leg(r, &r->b, backend);
	r->st.path_up = r->st.path_down = "userspace";
	try_splice(r, opts);
	/* what was read but not yet forwarded goes first */
	if (client->pending) {
		evbuffer_add_buffer(r->up, client->pending);
		evbuffer_free(client->pending);
		client->pending = NULL;
	}
	if (backend->pending) {
		evbuffer_add_buffer(r->down, backend->pending);
		evbuffer_free(backend->pending);
		backend->pending = NULL;
	}
	if (!r->up || !r->down || !r->done_ev || !r->idle || !r->c.rev || !r->c.wev || !r->b.rev ||
	    !r->b.wev) {
		finish(r, RELAY_END_ERROR, "out of memory");
		return r;
	}
	if (r->idle_ms) {
		struct timeval tv = {(time_t)(r->idle_ms / 1000),
		                     (suseconds_t)(r->idle_ms % 1000) * 1000};
		evtimer_add(r->idle, &tv);
	}
	/* OpenSSL may already hold decrypted bytes: look at once */
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
}
