/* The hand-over channel (daemon/core/control.c): messages and their descriptors cross a
 * SOCK_SEQPACKET pair intact, the sender keeps its own descriptors, and anything
 * malformed ends the conversation with a reason. */
#include "unit.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "control.h"

struct got {
	int n;
	struct ho_msg m;
	int fds[HO_FDS_MAX];
	unsigned n_fds;
	char end[256];
	struct event_base *base;
};

static void on_msg(struct ho_chan *c, const struct ho_msg *m, int *fds, unsigned n_fds, void *arg)
{
	struct got *g = arg;
	g->n++;
	g->m = *m;
	memcpy(g->fds, fds, sizeof(int) * n_fds);
	g->n_fds = n_fds;
	event_base_loopbreak(g->base);
}

static void on_end(struct ho_chan *c, const char *why, void *arg)
{
	struct got *g = arg;
	snprintf(g->end, sizeof(g->end), "%s", why);
	event_base_loopbreak(g->base);
}

static void run(struct event_base *base)
{
	struct timeval tv = {2, 0};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void test_session_with_descriptors_crosses(void **state)
{
	struct event_base *base = event_base_new();
	int sp[2], legs[2], p[2];
	static struct got g;

	memset(&g, 0, sizeof(g));
	g.base = base;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, legs), 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(write(p[1], "in flight", 9), 9);
	struct ho_chan *a = ho_chan_new(base, sp[0], on_msg, on_end, &g);
	struct ho_chan *b = ho_chan_new(base, sp[1], on_msg, on_end, &g);
	assert_non_null(a);
	assert_non_null(b);

	static struct ho_msg m;
	memset(&m, 0, sizeof(m));
	m.type = HO_SESSION;
	struct ho_session *s = &m.u.session;
	strcpy(s->id, "id1");
	strcpy(s->listener, "imap");
	strcpy(s->protocol, "imap");
	strcpy(s->destination, "legacy");
	s->started_ms = 1;
	s->started_us = 2;
	s->dir[0] = (struct ho_dir){
	        .engine = HO_ENGINE_SPLICE, .slot = HO_NO_SLOT, .pipe = true, .held = 9};
	s->dir[1] = (struct ho_dir){.engine = HO_ENGINE_SPLICE, .slot = HO_NO_SLOT};
	int fds[4] = {legs[0], legs[1], p[0], p[1]};
	assert_true(ho_chan_send(a, &m, fds));
	run(base);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.m.type, HO_SESSION);
	assert_string_equal(g.m.u.session.id, "id1");
	assert_int_equal(g.n_fds, 4);
	/* the received pipe is the same pipe: its bytes are there */
	char buf[16] = {0};
	assert_int_equal(read(g.fds[2], buf, sizeof(buf)), 9);
	assert_string_equal(buf, "in flight");
	/* and the received socket is the same connection */
	assert_int_equal(write(g.fds[0], "x", 1), 1);
	assert_int_equal(read(legs[1], buf, 1), 1);
	/* the sender still holds its own descriptors */
	assert_int_equal(fcntl(legs[0], F_GETFD), FD_CLOEXEC);
	assert_int_equal(fcntl(p[1], F_GETFD), FD_CLOEXEC);
	/* received descriptors are close-on-exec too */
	for (unsigned i = 0; i < g.n_fds; i++) {
		assert_int_equal(fcntl(g.fds[i], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
		close(g.fds[i]);
	}
	/* a message that does not encode is not queued (an id is required) */
	memset(&m, 0, sizeof(m));
	m.type = HO_GONE;
	assert_false(ho_chan_send(a, &m, NULL));
	assert_int_equal(ho_chan_queued(a), 0);
	/* the peer going away ends the conversation */
	ho_chan_free(a);
	run(base);
	assert_string_equal(g.end, "the other process closed the connection");
	ho_chan_free(b);
	close(legs[0]);
	close(legs[1]);
	close(p[0]);
	close(p[1]);
	event_base_free(base);
}

static void test_malformed_datagram_ends_the_conversation(void **state)
{
	struct event_base *base = event_base_new();
	int sp[2];
	static struct got g;

	memset(&g, 0, sizeof(g));
	g.base = base;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
	struct ho_chan *b = ho_chan_new(base, sp[1], on_msg, on_end, &g);
	/* a HELLO whose body misses its required fields */
	static const uint8_t bad[] = {'M', 'S', 'H', 'O', 0, 1, 0, 1, 0, 0, 0, 0};
	assert_int_equal(send(sp[0], bad, sizeof(bad), 0), (ssize_t)sizeof(bad));
	run(base);
	assert_int_equal(g.n, 0);
	assert_non_null(strstr(g.end, "HELLO.hello.pid: missing"));
	/* nothing is sent on a dead channel */
	static struct ho_msg m;
	memset(&m, 0, sizeof(m));
	m.type = HO_GONE;
	strcpy(m.u.id.id, "x");
	assert_false(ho_chan_send(b, &m, NULL));
	ho_chan_free(b);
	close(sp[0]);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_session_with_descriptors_crosses),
	        cmocka_unit_test(test_malformed_datagram_ends_the_conversation),
	};
	evthread_use_pthreads();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
