/*
 * xfer: exactly n bytes from one TCP leg to another, through splice(2) or
 * user space, with what was already read or queued going first and
 * nothing after the n bytes taken from the source (a pipelined request
 * stays where it is). Real loopback TCP sockets, one event loop, a sender
 * and a receiver thread standing for the client and the backend.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "relay.h"
#include "xfer.h"

#define MIB (1u << 20)

/* a connected pair of loopback TCP sockets */
static void tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
	fds[1] = accept(l, NULL, NULL);
	assert_true(fds[1] >= 0);
	close(l);
}

static void nonblock(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
}

/* the body's byte number i */
static uint8_t byte_at(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

/* the client: body bytes [from, to), then a tail, then maybe FIN */
struct sender {
	int fd;
	uint64_t from, to;
	const char *tail;
	bool fin;
	uint64_t sent;
};

static void *send_body(void *arg)
{
	struct sender *s = arg;
	uint8_t buf[65536];

	for (uint64_t at = s->from; at < s->to;) {
		size_t k = s->to - at < sizeof(buf) ? (size_t)(s->to - at) : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = byte_at(at + i);
		size_t off = 0;
		while (off < k) {
			ssize_t w = send(s->fd, buf + off, k - off, MSG_NOSIGNAL);
			if (w <= 0)
				return NULL;
			off += (size_t)w;
			__atomic_add_fetch(&s->sent, (uint64_t)w, __ATOMIC_RELAXED);
		}
		at += k;
	}
	if (s->tail && send(s->fd, s->tail, strlen(s->tail), MSG_NOSIGNAL) < 0)
		return NULL;
	if (s->fin)
		shutdown(s->fd, SHUT_WR);
	return NULL;
}

/* the backend: a head of head_want bytes, then the body until EOF or want */
struct receiver {
	int fd;
	size_t head_want;
	uint64_t want;
	char head[64];
	size_t head_len;
	uint64_t got, bad_at; /* bad_at: first wrong byte + 1, 0 if none */
};

static void *receive_body(void *arg)
{
	struct receiver *k = arg;
	uint8_t buf[65536];

	while (k->head_len < k->head_want) {
		ssize_t r = recv(k->fd, k->head + k->head_len, k->head_want - k->head_len, 0);
		if (r <= 0)
			return NULL;
		k->head_len += (size_t)r;
	}
	while (k->got < k->want) {
		ssize_t r = recv(k->fd, buf, sizeof(buf), 0);
		if (r <= 0)
			return NULL;
		for (ssize_t i = 0; i < r; i++) {
			if (!k->bad_at && buf[i] != byte_at(k->got + (uint64_t)i))
				k->bad_at = k->got + (uint64_t)i + 1;
		}
		k->got += (uint64_t)r;
	}
	return NULL;
}

struct outcome {
	struct event_base *base;
	int calls;
	struct xfer_result r;
};

static void done_cb(void *arg, const struct xfer_result *r)
{
	struct outcome *o = arg;
	o->calls++;
	o->r = *r;
	event_base_loopbreak(o->base);
}

struct scenario {
	bool kernel;
	uint64_t n;       /* body length, or XFER_UNTIL_EOF */
	uint64_t total;   /* body bytes the client sends */
	size_t prefix;    /* body bytes the proxy read before the transfer */
	bool pipelined;   /* "NEXT" behind the prefix in the proxy's buffer */
	const char *tail; /* sent after the body on the socket */
	bool fin;         /* the client closes after the tail */
	enum xfer_end want_end;
};

static void run(const struct scenario *sc)
{
	int a[2], b[2]; /* client a[0] -> proxy a[1]; proxy b[0] -> backend b[1] */
	tcp_pair(a);
	tcp_pair(b);
	nonblock(a[1]);
	nonblock(b[0]);

	struct event_base *base = event_base_new();
	struct evbuffer *first = evbuffer_new(), *rd = evbuffer_new();
	evbuffer_add(first, "HEAD\r\n", 6);
	for (size_t i = 0; i < sc->prefix; i++) {
		uint8_t c = byte_at(i);
		evbuffer_add(rd, &c, 1);
	}
	if (sc->pipelined)
		evbuffer_add(rd, "NEXT", 4);

	struct sender snd = {
	        .fd = a[0], .from = sc->prefix, .to = sc->total, .tail = sc->tail, .fin = sc->fin};
	struct receiver rcv = {.fd = b[1], .head_want = 6, .want = sc->total};
	pthread_t ts, tr;
	assert_int_equal(pthread_create(&ts, NULL, send_body, &snd), 0);
	assert_int_equal(pthread_create(&tr, NULL, receive_body, &rcv), 0);

	struct outcome o = {.base = base};
	struct xfer_leg src = {.fd = a[1]}, dst = {.fd = b[0]};
	struct xfer *x =
	        xfer_start(base, &src, &dst, first, rd, sc->n, 20000, sc->kernel, done_cb, &o);
	assert_non_null(x);
	assert_string_equal(xfer_path(x), sc->kernel ? "splice" : "userspace");
	assert_int_equal(o.calls, 0); /* never from inside xfer_start */
	assert_int_equal(evbuffer_get_length(first), 0);
	event_base_dispatch(base);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.r.end, sc->want_end);
	assert_string_equal(o.r.path, sc->kernel ? "splice" : "userspace");

	pthread_join(ts, NULL);
	if (sc->want_end == XFER_DONE) {
		uint64_t body = sc->n == XFER_UNTIL_EOF ? sc->total : sc->n;
		assert_true(o.r.moved == body);
		pthread_join(tr, NULL);
		assert_int_equal(rcv.head_len, 6);
		assert_memory_equal(rcv.head, "HEAD\r\n", 6);
		assert_true(rcv.got == body);
		assert_true(rcv.bad_at == 0);
	} else {
		shutdown(b[0], SHUT_RDWR);
		pthread_join(tr, NULL);
	}
	/* what came after the body stayed with the caller */
	assert_int_equal(evbuffer_get_length(rd), sc->pipelined ? 4 : 0);
	if (sc->tail && sc->want_end == XFER_DONE) {
		char after[16];
		size_t want = strlen(sc->tail), got = 0;
		while (got < want) {
			ssize_t r = recv(a[1], after + got, want - got, 0);
			if (r < 0 && errno == EAGAIN) {
				usleep(1000);
				continue;
			}
			assert_true(r > 0);
			got += (size_t)r;
		}
		assert_memory_equal(after, sc->tail, want);
	}
	evbuffer_free(first);
	evbuffer_free(rd);
	event_base_free(base);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

/* A body spliced in the kernel: the bytes already read go first, the
 * pipelined request behind the body is never taken. */
static void test_splice_exact(void **state)
{
	struct scenario sc = {.kernel = true,
	                      .n = 8 * MIB + 123,
	                      .total = 8 * MIB + 123,
	                      .prefix = 1000,
	                      .tail = "GET /next HTTP/1.1\r\n",
	                      .want_end = XFER_DONE};
	run(&sc);
}

static void test_userspace_exact(void **state)
{
	struct scenario sc = {.kernel = false,
	                      .n = 8 * MIB + 123,
	                      .total = 8 * MIB + 123,
	                      .prefix = 1000,
	                      .tail = "GET /next HTTP/1.1\r\n",
	                      .want_end = XFER_DONE};
	run(&sc);
}

/* The whole body was read with the head: nothing is taken from the
 * socket, the bytes after it stay in the caller's buffer. */
static void test_body_already_read(void **state)
{
	for (int k = 0; k < 2; k++) {
		struct scenario sc = {.kernel = k,
		                      .n = 300,
		                      .total = 300,
		                      .prefix = 300,
		                      .pipelined = true,
		                      .tail = "AFTER",
		                      .want_end = XFER_DONE};
		run(&sc);
	}
}

/* A body that ends with the connection. */
static void test_until_eof(void **state)
{
	for (int k = 0; k < 2; k++) {
		struct scenario sc = {.kernel = k,
		                      .n = XFER_UNTIL_EOF,
		                      .total = 3 * MIB + 7,
		                      .prefix = 10,
		                      .fin = true,
		                      .want_end = XFER_DONE};
		run(&sc);
	}
}

/* The client goes away in the middle of the body. */
static void test_source_ends_early(void **state)
{
	for (int k = 0; k < 2; k++) {
		struct scenario sc = {.kernel = k,
		                      .n = 2 * MIB,
		                      .total = MIB,
		                      .prefix = 0,
		                      .fin = true,
		                      .want_end = XFER_SRC_EOF};
		run(&sc);
	}
}

/* Backpressure: a backend that does not read stops the transfer from
 * taking more than the socket buffers and one pipe (or XFER_BUFFER). */
static void test_bounded_when_destination_stalls(void **state)
{
	for (int k = 0; k < 2; k++) {
		int a[2], b[2];
		tcp_pair(a);
		tcp_pair(b);
		nonblock(a[1]);
		nonblock(b[0]);
		int small = 64 * 1024;
		setsockopt(b[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		setsockopt(b[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		struct event_base *base = event_base_new();
		struct outcome o = {.base = base};
		struct xfer_leg src = {.fd = a[1]}, dst = {.fd = b[0]};
		struct sender snd = {.fd = a[0], .from = 0, .to = 64 * MIB};
		pthread_t ts;
		/* the sender blocks once everything in between is full */
		assert_int_equal(pthread_create(&ts, NULL, send_body, &snd), 0);
		struct xfer *x =
		        xfer_start(base, &src, &dst, NULL, NULL, 64 * MIB, 0, k, done_cb, &o);
		struct timeval tv = {1, 0};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
		assert_int_equal(o.calls, 0);
		uint64_t moved = xfer_moved(x);
		/* what reached the backend's socket is bounded by its buffers,
		 * and the client was slowed down: it could not push 64 MiB
		 * (the loopback socket buffers hold a few MiB, one pipe 1 MiB) */
		assert_true(moved < 8 * MIB);
		assert_true(__atomic_load_n(&snd.sent, __ATOMIC_RELAXED) < 32 * MIB);
		xfer_cancel(x);
		close(a[1]); /* unblocks the sender */
		pthread_join(ts, NULL);
		close(a[0]);
		close(b[0]);
		close(b[1]);
		event_base_free(base);
	}
}

int main(void)
{
	char err[256];
	datapath_init(DATA_PATH_SPLICE, err, sizeof(err));
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_splice_exact),
	        cmocka_unit_test(test_userspace_exact),
	        cmocka_unit_test(test_body_already_read),
	        cmocka_unit_test(test_until_eof),
	        cmocka_unit_test(test_source_ends_early),
	        cmocka_unit_test(test_bounded_when_destination_stalls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
