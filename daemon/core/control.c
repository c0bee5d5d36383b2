/*
 * The control socket and the hand-over channel (see control.h).
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

#define CMSG_FDS_SPACE CMSG_SPACE(sizeof(int) * (HO_FDS_MAX + 2))

static bool make_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		snprintf(err, errlen, "%s: path too long for a Unix socket", path);
		return false;
	}
	str_copy(sa->sun_path, path, sizeof(sa->sun_path));
	return true;
}

int control_listen(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	char dir[sizeof(sa.sun_path)];
	struct stat st;

	if (!make_addr(path, &sa, err, errlen))
		return -1;
	str_copy(dir, path, sizeof(dir));
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = '\0';
	if (stat(dir, &st) != 0 && errno == ENOENT) {
		snprintf(err, errlen, "%s does not exist", dir);
		return -2;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		/* a daemon still answering there owns it; a dead one left it */
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			snprintf(err, errlen,
			         "another mailspliced answers on %s (replace it with "
			         "mailspliced --upgrade, or stop it first)",
			         path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r != 0 || listen(fd, 8) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int control_connect(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;

	if (!make_addr(path, &sa, err, errlen))
		return -1;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		snprintf(err, errlen, "no running mailspliced answers on %s: %s", path,
		         e == ENOENT         ? "no such socket"
		         : e == ECONNREFUSED ? "nothing listens there (stale socket)"
		                             : strerror(e));
		close(fd);
		return -1;
	}
	return fd;
}

bool control_peer_ok(int fd, uid_t also, pid_t *pid, char *err, size_t errlen)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
		snprintf(err, errlen, "SO_PEERCRED: %s", strerror(errno));
		return false;
	}
	if (cr.uid != 0 && cr.uid != geteuid() && cr.uid != also) {
		snprintf(err, errlen, "peer pid %d runs as uid %u: only root or the daemon's user",
		         (int)cr.pid, (unsigned)cr.uid);
		return false;
	}
	*pid = cr.pid;
	return true;
}

/* ---- one datagram with descriptors ---- */

static ssize_t send_fds(int fd, const uint8_t *data, size_t len, const int *fds, unsigned n_fds,
                        int flags)
{
	union {
		char buf[CMSG_FDS_SPACE];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	if (n_fds) {
		memset(&u, 0, sizeof(u));
		msg.msg_control = u.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
	}
	return sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
}

/* Receive one datagram into buf (cap must exceed HO_MSG_MAX so that an
 * oversized one shows as truncated). Returns its length, 0 on end of
 * stream, -1 with errno (EAGAIN included), -2 when it was malformed at
 * the socket level (truncated, too many descriptors): none are left open. */
static ssize_t recv_fds(int fd, uint8_t *buf, size_t cap, int *fds, unsigned *n_fds, int flags)
{
	union {
		char buf[CMSG_FDS_SPACE];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = u.buf,
	                     .msg_controllen = sizeof(u)};
	unsigned got = 0;
	int tmp[HO_FDS_MAX + 2];

	ssize_t n = recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (got < ARRAY_LEN(tmp))
				tmp[got++] = f;
			else
				close(f);
		}
	}
	bool bad =
	        (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || got > HO_FDS_MAX || (size_t)n >= cap;
	if (bad) {
		for (unsigned i = 0; i < got; i++)
			close(tmp[i]);
		return -2;
	}
	memcpy(fds, tmp, sizeof(int) * got);
	*n_fds = got;
	return n;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

bool control_send(int fd, const struct ho_msg *m, const int *fds, char *err, size_t errlen)
{
	uint8_t *buf = malloc(HO_MSG_MAX);
	size_t n = buf ? ho_encode(m, buf, HO_MSG_MAX) : 0;
	bool ok = false;

	if (n == 0)
		snprintf(err, errlen, "cannot encode %s", ho_type_name(m->type));
	else if (send_fds(fd, buf, n, fds, ho_msg_fds(m), 0) != (ssize_t)n)
		snprintf(err, errlen, "sending %s: %s", ho_type_name(m->type), strerror(errno));
	else
		ok = true;
	free(buf);
	return ok;
}

bool control_recv(int fd, struct ho_msg *m, int *fds, unsigned *n_fds, int timeout_ms, char *err,
                  size_t errlen)
{
	static __thread uint8_t buf[HO_MSG_MAX + 1];
	struct pollfd p = {.fd = fd, .events = POLLIN};

	*n_fds = 0;
	int r = poll(&p, 1, timeout_ms);
	if (r == 0) {
		snprintf(err, errlen, "no answer within %d ms", timeout_ms);
		return false;
	}
	if (r < 0) {
		snprintf(err, errlen, "poll: %s", strerror(errno));
		return false;
	}
	ssize_t n = recv_fds(fd, buf, sizeof(buf), fds, n_fds, 0);
	if (n == 0) {
		snprintf(err, errlen, "the other process closed the connection");
		return false;
	}
	if (n < 0) {
		snprintf(err, errlen, "%s", n == -2 ? "a malformed datagram" : strerror(errno));
		return false;
	}
	if (!ho_decode(buf, (size_t)n, *n_fds, m, err, errlen)) {
		close_fds(fds, *n_fds);
		*n_fds = 0;
		return false;
	}
	return true;
}

/* ---- the evented channel ---- */

struct qmsg {
	struct qmsg *next;
	size_t len;
	unsigned n_fds;
	int fds[HO_FDS_MAX];
	uint8_t data[];
};

struct ho_chan {
	struct event_base *base;
	int fd;
	struct event *rev, *wev;
	pthread_mutex_t lock;
	struct qmsg *head, *tail;
	size_t queued;
	bool dead;
	bool in_cb, free_later;
	ho_chan_msg_cb on_msg;
	ho_chan_end_cb on_end;
	void *arg;
	uint8_t rbuf[HO_MSG_MAX + 1];
};

static void chan_dead(struct ho_chan *c, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	event_del(c->rev);
	event_del(c->wev);
	c->in_cb = true;
	c->on_end(c, why, c->arg);
	c->in_cb = false;
	if (c->free_later)
		ho_chan_free(c);
}

static void on_chan_write(evutil_socket_t fd, short what, void *arg)
{
	struct ho_chan *c = arg;

	for (;;) {
		pthread_mutex_lock(&c->lock);
		struct qmsg *q = c->head;
		pthread_mutex_unlock(&c->lock);
		if (!q) {
			event_del(c->wev);
			return;
		}
		ssize_t n = send_fds(c->fd, q->data, q->len, q->fds, q->n_fds, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n != (ssize_t)q->len) {
			char why[128];
			snprintf(why, sizeof(why), "sending: %s",
			         n < 0 ? strerror(errno) : "short");
			chan_dead(c, why);
			return;
		}
		pthread_mutex_lock(&c->lock);
		c->head = q->next;
		if (!c->head)
			c->tail = NULL;
		c->queued--;
		pthread_mutex_unlock(&c->lock);
		close_fds(q->fds, q->n_fds);
		free(q);
	}
}

static void on_chan_read(evutil_socket_t fd, short what, void *arg)
{
	struct ho_chan *c = arg;
	static __thread struct ho_msg m;
	char err[256];

	while (!c->dead) {
		int fds[HO_FDS_MAX];
		unsigned n_fds = 0;
		ssize_t n = recv_fds(c->fd, c->rbuf, sizeof(c->rbuf), fds, &n_fds, MSG_DONTWAIT);
		if (n < 0 && n != -2 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == 0) {
			chan_dead(c, "the other process closed the connection");
			return;
		}
		if (n < 0) {
			chan_dead(c, n == -2 ? "a malformed datagram" : strerror(errno));
			return;
		}
		if (!ho_decode(c->rbuf, (size_t)n, n_fds, &m, err, sizeof(err))) {
			close_fds(fds, n_fds);
			chan_dead(c, err);
			return;
		}
		c->in_cb = true;
		c->on_msg(c, &m, fds, n_fds, c->arg);
		c->in_cb = false;
		if (c->free_later) {
			ho_chan_free(c);
			return;
		}
	}
}

struct ho_chan *ho_chan_new(struct event_base *base, int fd, ho_chan_msg_cb on_msg,
                            ho_chan_end_cb on_end, void *arg)
{
	struct ho_chan *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->base = base;
	c->fd = fd;
	c->on_msg = on_msg;
	c->on_end = on_end;
	c->arg = arg;
	pthread_mutex_init(&c->lock, NULL);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	/* sessions come in bursts of records of up to 64 KiB each */
	int sz = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_chan_read, c);
	c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_chan_write, c);
	if (!c->rev || !c->wev) {
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return NULL;
	}
	event_add(c->rev, NULL);
	return c;
}

bool ho_chan_send(struct ho_chan *c, const struct ho_msg *m, const int *fds)
{
	struct qmsg *q = malloc(sizeof(*q) + HO_MSG_MAX);

	if (!q)
		return false;
	q->next = NULL;
	q->len = ho_encode(m, q->data, HO_MSG_MAX);
	q->n_fds = 0;
	if (q->len == 0) {
		free(q);
		return false;
	}
	/* only the bytes used are kept while queued */
	struct qmsg *small = realloc(q, sizeof(*q) + q->len);
	if (small)
		q = small;
	unsigned want = ho_msg_fds(m);
	for (; q->n_fds < want; q->n_fds++) {
		q->fds[q->n_fds] = fcntl(fds[q->n_fds], F_DUPFD_CLOEXEC, 0);
		if (q->fds[q->n_fds] < 0) {
			close_fds(q->fds, q->n_fds);
			free(q);
			return false;
		}
	}
	pthread_mutex_lock(&c->lock);
	bool dead = c->dead;
	if (!dead) {
		if (c->tail)
			c->tail->next = q;
		else
			c->head = q;
		c->tail = q;
		c->queued++;
	}
	pthread_mutex_unlock(&c->lock);
	if (dead) {
		close_fds(q->fds, q->n_fds);
		free(q);
		return false;
	}
	event_add(c->wev, NULL);
	return true;
}

size_t ho_chan_queued(struct ho_chan *c)
{
	pthread_mutex_lock(&c->lock);
	size_t n = c->queued;
	pthread_mutex_unlock(&c->lock);
	return n;
}

void ho_chan_flush(struct ho_chan *c, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	while (!c->dead && ho_chan_queued(c) > 0 && now_ms() < deadline) {
		struct pollfd p = {.fd = c->fd, .events = POLLOUT};
		if (poll(&p, 1, (int)(deadline - now_ms())) <= 0)
			break;
		on_chan_write(c->fd, EV_WRITE, c);
	}
}

void ho_chan_free(struct ho_chan *c)
{
	if (!c)
		return;
	if (c->in_cb) {
		c->free_later = true;
		return;
	}
	event_free(c->rev);
	event_free(c->wev);
	while (c->head) {
		struct qmsg *q = c->head;
		c->head = q->next;
		close_fds(q->fds, q->n_fds);
		free(q);
	}
	close(c->fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
