/*
 * One leg of a session (see conn.h): non-blocking socket I/O with optional
 * OpenSSL, bounded buffers, libevent read/write events.
 *
 * Every path that ends in a callback returns right after it: the owner may
 * release the conn (and the memory it lives in) from inside the callback.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>

#define READ_CHUNK 16384

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

static void set_err(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

/* The most useful OpenSSL reason for a failure, without the noise. */
static void set_ssl_err(struct conn *c, const char *what, int ssl_err)
{
	unsigned long e = ERR_peek_last_error();
	char reason[120];

	if (e) {
		ERR_error_string_n(e, reason, sizeof(reason));
		const char *short_reason = strrchr(reason, ':');
		set_err(c, "%s: %s", what, short_reason ? short_reason + 1 : reason);
	} else if (ssl_err == SSL_ERROR_SYSCALL) {
		set_err(c, "%s: %s", what, errno ? strerror(errno) : "unexpected EOF");
	} else {
		set_err(c, "%s: TLS error %d", what, ssl_err);
	}
	if (c->ssl) {
		long vr = SSL_get_verify_result(c->ssl);
		if (vr != X509_V_OK && strstr(c->err, "certificate verify failed")) {
			size_t n = strlen(c->err);
			snprintf(c->err + n, sizeof(c->err) - n, " (%s)",
			         X509_verify_cert_error_string(vr));
		}
	}
	ERR_clear_error();
}

static bool make_events(struct conn *c)
{
	c->rev = event_new(c->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(c->base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	return c->rev && c->wev && c->in && c->out;
}

bool conn_init(struct conn *c, struct event_base *base, int fd, conn_cb cb, void *arg)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->base = base;
	c->cb = cb;
	c->arg = arg;
	c->in_max = 64 * 1024;
	c->out_max = 256 * 1024;
	return make_events(c);
}

void conn_release(struct conn *c, bool keep_fd)
{
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->in)
		evbuffer_free(c->in);
	if (c->out)
		evbuffer_free(c->out);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0 && !keep_fd)
		close(c->fd);
	c->rev = c->wev = NULL;
	c->in = c->out = NULL;
	c->ssl = NULL;
	c->fd = -1;
}

bool conn_connect(struct conn *c, struct event_base *base, const struct sockaddr *src,
                  socklen_t srclen, const struct sockaddr *dst, socklen_t dstlen, conn_cb cb,
                  void *arg)
{
	int one = 1;
	int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (fd < 0) {
		set_err(c, "socket: %s", strerror(errno));
		return false;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src) {
		/* several source addresses, one port range each: let the
		 * kernel pick the port at connect() time */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, src, srclen) < 0) {
			set_err(c, "bind source address: %s", strerror(errno));
			close(fd);
			return false;
		}
	}
	if (!conn_init(c, base, fd, cb, arg)) {
		set_err(c, "out of memory");
		conn_release(c, false);
		return false;
	}
	if (connect(fd, dst, dstlen) < 0 && errno != EINPROGRESS) {
		set_err(c, "connect: %s", strerror(errno));
		conn_release(c, false);
		return false;
	}
	c->connecting = true;
	event_add(c->wev, NULL);
	return true;
}

static void update_events(struct conn *c)
{
	bool want_r, want_w;

	if (c->fd < 0 || c->failed)
		return;
	want_r = (c->reading && !c->eof && evbuffer_get_length(c->in) < c->in_max) ||
	         c->want_read_for_write || (c->handshaking && !c->connecting);
	want_w = c->connecting || (evbuffer_get_length(c->out) > 0 && !c->want_read_for_write) ||
	         c->want_write_for_read;
	if (c->handshaking) {
		/* the handshake sets exactly one of the two wants */
		want_r = !c->want_write_for_read;
		want_w = c->want_write_for_read;
	}
	if (want_r)
		event_add(c->rev, NULL);
	else
		event_del(c->rev);
	if (want_w)
		event_add(c->wev, NULL);
	else
		event_del(c->wev);
}

static void fail(struct conn *c)
{
	c->failed = true;
	event_del(c->rev);
	event_del(c->wev);
	c->cb(c, CONN_EV_ERROR, c->arg);
}

/* ---- TLS handshake ---- */

static void do_handshake(struct conn *c)
{
	int r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		c->handshaking = false;
		c->want_write_for_read = false;
		update_events(c);
		c->cb(c, CONN_EV_TLS_DONE, c->arg);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->want_write_for_read = e == SSL_ERROR_WANT_WRITE;
		update_events(c);
		return;
	}
	set_ssl_err(c, "TLS handshake", e);
	fail(c);
}

void conn_start_tls(struct conn *c, SSL *ssl, bool server, size_t *discarded)
{
	size_t n = evbuffer_get_length(c->in);

	if (discarded)
		*discarded = n;
	evbuffer_drain(c->in, n);
	c->ssl = ssl;
	SSL_set_fd(ssl, c->fd);
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	c->handshaking = true;
	c->want_write_for_read = !server; /* a client speaks first */
	do_handshake(c);
}

/* ---- reading ---- */

/* Returns >0 bytes read, 0 on EOF, -1 would block, -2 error. */
static long read_some(struct conn *c, size_t max)
{
	if (!c->ssl) {
		/* readv into reserved space: evbuffer_read() would first ask
		 * the kernel how much is waiting (an ioctl per read) */
		struct evbuffer_iovec v[2];
		int nv = evbuffer_reserve_space(c->in, (ev_ssize_t)max, v, 2);
		if (nv < 1) {
			set_err(c, "out of memory");
			return -2;
		}
		size_t left = max;
		for (int i = 0; i < nv; i++) {
			if (v[i].iov_len > left)
				v[i].iov_len = left;
			left -= v[i].iov_len;
		}
		ssize_t n = readv(c->fd, (struct iovec *)v, nv);
		int err = errno;
		size_t got = n > 0 ? (size_t)n : 0;
		for (int i = 0; i < nv; i++) {
			size_t take = got < v[i].iov_len ? got : v[i].iov_len;
			v[i].iov_len = take;
			got -= take;
		}
		evbuffer_commit_space(c->in, v, nv);
		if (n > 0)
			return (long)n;
		if (n == 0)
			return 0;
		if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
			return -1;
		set_err(c, "read: %s", strerror(err));
		return -2;
	}

	struct evbuffer_iovec v;
	if (evbuffer_reserve_space(c->in, (ev_ssize_t)max, &v, 1) < 1) {
		set_err(c, "out of memory");
		return -2;
	}
	size_t got = 0;
	int r = SSL_read_ex(c->ssl, v.iov_base, v.iov_len < max ? v.iov_len : max, &got);
	if (r == 1) {
		v.iov_len = got;
		evbuffer_commit_space(c->in, &v, 1);
		c->want_write_for_read = false;
		return (long)got;
	}
	v.iov_len = 0;
	evbuffer_commit_space(c->in, &v, 1);
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		c->want_write_for_read = false;
		return -1;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		c->want_write_for_read = true;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	set_ssl_err(c, "TLS read", e);
	return -2;
}

static void do_read(struct conn *c)
{
	size_t before = evbuffer_get_length(c->in);
	bool got_eof = false;

	while (c->reading && evbuffer_get_length(c->in) < c->in_max) {
		size_t room = c->in_max - evbuffer_get_length(c->in);
		size_t want = room < READ_CHUNK ? room : READ_CHUNK;
		long n = read_some(c, want);
		if (n > 0) {
			c->bytes_read += (uint64_t)n;
			/* a plain socket that gave less than asked is drained:
			 * another read would only say EAGAIN (a FIN behind the
			 * data makes the socket readable again) */
			if (!c->ssl && (size_t)n < want)
				break;
			continue;
		}
		if (n == 0) {
			got_eof = true;
			break;
		}
		if (n == -2) {
			fail(c);
			return;
		}
		break; /* would block */
	}
	if (got_eof)
		c->eof = true;
	update_events(c);
	if (evbuffer_get_length(c->in) > before)
		c->cb(c, CONN_EV_READ, c->arg); /* the owner sees c->eof too */
	else if (got_eof)
		c->cb(c, CONN_EV_EOF, c->arg);
}

/* ---- writing ---- */

static void do_write(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		if (!c->ssl) {
			int n = evbuffer_write(c->out, c->fd);
			if (n > 0) {
				c->bytes_written += (uint64_t)n;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				break;
			set_err(c, "write: %s", n < 0 ? strerror(errno) : "closed");
			fail(c);
			return;
		}
		size_t len = evbuffer_get_contiguous_space(c->out), done = 0;
		unsigned char *p = evbuffer_pullup(c->out, (ev_ssize_t)len);
		int r = SSL_write_ex(c->ssl, p, len, &done);
		if (r == 1) {
			evbuffer_drain(c->out, done);
			c->bytes_written += done;
			c->want_read_for_write = false;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_WRITE) {
			c->want_read_for_write = false;
			break;
		}
		if (e == SSL_ERROR_WANT_READ) {
			c->want_read_for_write = true;
			break;
		}
		set_ssl_err(c, "TLS write", e);
		fail(c);
		return;
	}
	if (evbuffer_get_length(c->out) == 0) {
		if (c->shutdown_after_flush && !c->shut_wr) {
			c->shut_wr = true;
			if (c->ssl)
				SSL_shutdown(c->ssl);
			shutdown(c->fd, SHUT_WR);
		}
		update_events(c);
		if (c->notify_drained)
			c->cb(c, CONN_EV_DRAINED, c->arg);
		return;
	}
	update_events(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			set_err(c, "connect: %s", strerror(err));
			fail(c);
			return;
		}
		c->connecting = false;
		update_events(c);
		c->cb(c, CONN_EV_CONNECTED, c->arg);
		return;
	}
	if (c->handshaking) {
		do_handshake(c);
		return;
	}
	if (c->want_write_for_read) {
		c->want_write_for_read = false;
		do_read(c);
		return;
	}
	do_write(c);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->handshaking) {
		do_handshake(c);
		return;
	}
	if (c->want_read_for_write) {
		c->want_read_for_write = false;
		do_write(c);
		return;
	}
	do_read(c);
}

void conn_read_start(struct conn *c)
{
	c->reading = true;
	if (c->fd < 0 || c->failed || c->handshaking || c->connecting)
		return;
	/* OpenSSL may hold decrypted bytes that will never make the socket
	 * readable again: look now rather than wait for an event */
	if (c->ssl && SSL_pending(c->ssl) > 0) {
		event_active(c->rev, EV_READ, 0);
		return;
	}
	update_events(c);
}

void conn_read_stop(struct conn *c)
{
	c->reading = false;
	update_events(c);
}

bool conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->failed || c->fd < 0)
		return false;
	if (evbuffer_add(c->out, data, len) < 0)
		return false;
	update_events(c);
	return true;
}

bool conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (c->failed || c->fd < 0)
		return false;
	va_start(ap, fmt);
	r = evbuffer_add_vprintf(c->out, fmt, ap);
	va_end(ap);
	update_events(c);
	return r >= 0;
}

bool conn_writable(const struct conn *c)
{
	return evbuffer_get_length(c->out) < c->out_max;
}

void conn_flush(struct conn *c)
{
	if (c->fd < 0 || c->failed || c->handshaking || c->connecting)
		return;
	do_write(c);
}

void conn_shutdown_write(struct conn *c)
{
	c->shutdown_after_flush = true;
	conn_flush(c);
}

void conn_set_abortive(struct conn *c)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	if (c->fd >= 0)
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

long conn_line_len(struct conn *c, size_t max)
{
	size_t avail = evbuffer_get_length(c->in);
	struct evbuffer_ptr end, p;

	if (avail == 0)
		return 0;
	/* only look at the first max bytes: a client must not make us scan
	 * a huge buffer for every byte it trickles in */
	evbuffer_ptr_set(c->in, &end, avail < max ? avail : max, EVBUFFER_PTR_SET);
	p = evbuffer_search_range(c->in, "\n", 1, NULL, &end);
	if (p.pos >= 0)
		return p.pos + 1;
	return avail >= max ? -1 : 0;
}
