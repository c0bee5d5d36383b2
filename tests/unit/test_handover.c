/* The hand-over messages (include/handover.h): every type round-trips, and a
 * message the decoder does not fully understand is refused with a reason,
 * never half-read. */
#include "unit.h"

#include <arpa/inet.h>
#include <string.h>

#include "handover.h"

static uint8_t buf[HO_MSG_MAX + 16];
static struct ho_msg m, d;
static char err[256];

static void valid_session(struct ho_msg *x)
{
	memset(x, 0, sizeof(*x));
	x->type = HO_SESSION;
	struct ho_session *s = &x->u.session;
	strcpy(s->id, "AbCdEfGh12345678");
	strcpy(s->account, "alice@example.org");
	strcpy(s->listener, "imap");
	strcpy(s->protocol, "imap");
	strcpy(s->client, "127.0.0.5:40000");
	strcpy(s->destination, "legacy");
	struct sockaddr_in *p = (struct sockaddr_in *)&s->peer;
	p->sin_family = AF_INET;
	p->sin_port = htons(40000);
	inet_pton(AF_INET, "127.0.0.5", &p->sin_addr);
	struct sockaddr_in6 *l = (struct sockaddr_in6 *)&s->local;
	l->sin6_family = AF_INET6;
	l->sin6_port = htons(143);
	inet_pton(AF_INET6, "2001:db8::1", &l->sin6_addr);
	s->started_ms = 1764800000000ull;
	s->started_us = 123456789;
	s->bytes_up = 1234;
	s->bytes_down = 5ull << 30;
	s->moves = 1;
	for (int i = 0; i < 2; i++) {
		s->dir[i].engine = HO_ENGINE_SPLICE;
		s->dir[i].slot = HO_NO_SLOT;
	}
	s->dir[1].pipe = true;
	s->dir[1].held = 65536;
	static const uint8_t pend[] = "a2 FETCH 1 BODY[]\r\n";
	s->dir[0].pending = pend;
	s->dir[0].n_pending = sizeof(pend) - 1;
}

static size_t encode(const struct ho_msg *x)
{
	size_t n = ho_encode(x, buf, sizeof(buf));
	assert_true(n >= HO_HEADER_LEN);
	return n;
}

static void test_session_round_trip(void **state)
{
	valid_session(&m);
	size_t n = encode(&m);
	assert_int_equal(ho_msg_fds(&m), 4); /* two legs, one pipe */
	assert_true(ho_decode(buf, n, 4, &d, err, sizeof(err)));
	const struct ho_session *s = &d.u.session;
	assert_string_equal(s->id, "AbCdEfGh12345678");
	assert_string_equal(s->account, "alice@example.org");
	assert_string_equal(s->destination, "legacy");
	assert_int_equal(s->bytes_down, 5ull << 30);
	assert_int_equal(s->started_us, 123456789);
	assert_int_equal(s->moves, 1);
	assert_int_equal(s->peer.ss_family, AF_INET);
	assert_memory_equal(&s->peer, &m.u.session.peer, sizeof(struct sockaddr_in));
	assert_memory_equal(&s->local, &m.u.session.local, sizeof(struct sockaddr_in6));
	assert_int_equal(s->dir[1].held, 65536);
	assert_true(s->dir[1].pipe);
	assert_int_equal(s->dir[0].n_pending, 19);
	assert_memory_equal(s->dir[0].pending, "a2 FETCH 1 BODY[]\r\n", 19);
	assert_int_equal(s->dir[1].slot, HO_NO_SLOT);
}

static void test_ktls_legs_round_trip(void **state)
{
	valid_session(&m);
	struct ho_session *s = &m.u.session;
	s->leg[0] = (struct ho_leg){
	        .tls = HO_TLS_1_3, .ktls_rx = true, .ktls_tx = true, .own_rx = true};
	s->leg[1] = (struct ho_leg){
	        .tls = HO_TLS_1_2, .ktls_rx = true, .ktls_tx = true, .eof = true, .shut = true};
	s->client_tls = true;
	strcpy(s->sni, "mail.example.org");
	size_t n = encode(&m);
	assert_true(ho_decode(buf, n, 4, &d, err, sizeof(err)));
	assert_int_equal(d.u.session.leg[0].tls, HO_TLS_1_3);
	assert_true(d.u.session.leg[0].own_rx);
	assert_true(d.u.session.leg[1].eof && d.u.session.leg[1].shut);
	assert_false(d.u.session.leg[1].own_rx);
	assert_string_equal(d.u.session.sni, "mail.example.org");
}

static void test_sockmap_round_trip(void **state)
{
	valid_session(&m);
	struct ho_session *s = &m.u.session;
	s->dir[0] = (struct ho_dir){.engine = HO_ENGINE_SOCKMAP,
	                            .slot = 7,
	                            .kernel = true,
	                            .taken = 10,
	                            .r0 = 20,
	                            .red0 = 30};
	s->dir[1] = (struct ho_dir){.engine = HO_ENGINE_SOCKMAP, .slot = 6, .kernel = true};
	size_t n = encode(&m);
	assert_int_equal(ho_msg_fds(&m), 2);
	assert_true(ho_decode(buf, n, 2, &d, err, sizeof(err)));
	assert_int_equal(d.u.session.dir[0].slot, 7);
	assert_int_equal(d.u.session.dir[0].red0, 30);
}

/* a userspace buffer too large for the record travels in a pipe of its own */
static void test_userspace_buffer_in_a_pipe(void **state)
{
	valid_session(&m);
	m.u.session.dir[0] = (struct ho_dir){
	        .engine = HO_ENGINE_USER, .slot = HO_NO_SLOT, .pipe = true, .held = 256 * 1024};
	m.u.session.dir[1] = (struct ho_dir){.engine = HO_ENGINE_USER, .slot = HO_NO_SLOT};
	size_t n = encode(&m);
	assert_int_equal(ho_msg_fds(&m), 4);
	assert_true(ho_decode(buf, n, 4, &d, err, sizeof(err)));
	assert_true(d.u.session.dir[0].pipe);
	assert_int_equal(d.u.session.dir[0].held, 256 * 1024);
}

static void test_every_type_round_trips(void **state)
{
	struct ho_msg x;

	memset(&x, 0, sizeof(x));
	x.type = HO_HELLO;
	x.u.hello.pid = 4242;
	strcpy(x.u.hello.software, "0.1.0");
	assert_true(ho_decode(buf, encode(&x), 0, &d, err, sizeof(err)));
	assert_int_equal(d.u.hello.pid, 4242);

	memset(&x, 0, sizeof(x));
	x.type = HO_LISTENER;
	x.u.listener.index = 3;
	x.u.listener.kind = HO_LISTEN_MAIL;
	x.u.listener.worker = 1;
	strcpy(x.u.listener.name, "imap");
	strcpy(x.u.listener.bind, "127.0.0.4:143");
	assert_true(ho_decode(buf, encode(&x), 1, &d, err, sizeof(err)));
	assert_string_equal(d.u.listener.bind, "127.0.0.4:143");

	memset(&x, 0, sizeof(x));
	x.type = HO_COMMIT;
	x.u.commit.n_taken = 3;
	x.u.commit.taken[0] = 0;
	x.u.commit.taken[1] = 5;
	x.u.commit.taken[2] = 4095;
	assert_true(ho_decode(buf, encode(&x), 0, &d, err, sizeof(err)));
	assert_int_equal(d.u.commit.n_taken, 3);
	assert_int_equal(d.u.commit.taken[2], 4095);

	memset(&x, 0, sizeof(x));
	x.type = HO_SESSION_ACK;
	strcpy(x.u.ack.id, "AbCdEfGh12345678");
	x.u.ack.adopted = false;
	strcpy(x.u.ack.reason, "destination legacy is not in the new configuration");
	assert_true(ho_decode(buf, encode(&x), 0, &d, err, sizeof(err)));
	assert_false(d.u.ack.adopted);
	assert_string_equal(d.u.ack.reason, x.u.ack.reason);

	memset(&x, 0, sizeof(x));
	x.type = HO_SOCKMAP;
	x.u.sockmap.dir_size = 64;
	x.u.sockmap.max_sockets = 131072;
	assert_true(ho_decode(buf, encode(&x), 4, &d, err, sizeof(err)));

	memset(&x, 0, sizeof(x));
	x.type = HO_WELCOME;
	x.u.welcome.pid = 1;
	strcpy(x.u.welcome.software, "0.1.0");
	x.u.welcome.workers = 2;
	size_t wn = encode(&x);
	assert_false(ho_decode(buf, wn, 0, &d, err, sizeof(err))); /* the log fd is missing */
	assert_true(ho_decode(buf, wn, 1, &d, err, sizeof(err)));

	for (int t = HO_HELLO; t <= HO_TYPE_MAX; t++)
		assert_string_not_equal(ho_type_name((enum ho_type)t), "?");
}

/* Each of these must be refused, with a reason naming what. */
static void expect_refused(const uint8_t *b, size_t n, unsigned fds, const char *needle)
{
	err[0] = '\0';
	assert_false(ho_decode(b, n, fds, &d, err, sizeof(err)));
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void set_body_len(uint8_t *b, size_t n)
{
	uint32_t l = htonl((uint32_t)(n - HO_HEADER_LEN));
	memcpy(b + 8, &l, 4);
}

static void test_refuses_what_it_does_not_understand(void **state)
{
	valid_session(&m);
	size_t n = encode(&m);

	expect_refused(buf, 5, 4, "shorter than the header");
	buf[0] = 'X';
	expect_refused(buf, n, 4, "magic");
	buf[0] = 'M';
	put16(buf + 4, 2);
	expect_refused(buf, n, 4, "protocol version 2");
	put16(buf + 4, HO_VERSION);
	put16(buf + 6, 99);
	expect_refused(buf, n, 4, "unknown message type 99");
	put16(buf + 6, HO_SESSION);
	expect_refused(buf, n - 1, 4, "body length");
	/* the descriptors must be exactly those the fields call for */
	expect_refused(buf, n, 2, "call for 4");
	expect_refused(buf, n, 5, "descriptors");

	/* an unknown field: a newer sender's state we would ignore */
	uint8_t extra[] = {0x00, 0x63, 0x00, 0x01, 0x01};
	memcpy(buf + n, extra, sizeof(extra));
	set_body_len(buf, n + sizeof(extra));
	expect_refused(buf, n + sizeof(extra), 4, "unknown field 99");

	/* a duplicate field */
	uint8_t dup[] = {0x00, 0x0f, 0x00, 0x04, 0, 0, 0, 2}; /* moves again */
	memcpy(buf + n, dup, sizeof(dup));
	set_body_len(buf, n + sizeof(dup));
	expect_refused(buf, n + sizeof(dup), 4, "moves: appears twice");

	/* a truncated field */
	set_body_len(buf, n + 2);
	expect_refused(buf, n + 2, 4, "trailing");
}

static void test_refuses_missing_required_field(void **state)
{
	struct ho_msg x;

	memset(&x, 0, sizeof(x));
	x.type = HO_GONE;
	strcpy(x.u.id.id, "x");
	size_t n = encode(&x);
	/* drop the only field */
	set_body_len(buf, HO_HEADER_LEN);
	expect_refused(buf, HO_HEADER_LEN, 0, "GONE.id.id: missing");
	(void)n;
}

static void test_refuses_sessions_that_cannot_move(void **state)
{
	/* a TLS leg whose receive is still in OpenSSL */
	valid_session(&m);
	m.u.session.leg[0] = (struct ho_leg){.tls = HO_TLS_1_3, .ktls_tx = true};
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* receive keyed by the daemon is a TLS 1.3 thing */
	valid_session(&m);
	m.u.session.leg[1] = (struct ho_leg){
	        .tls = HO_TLS_1_2, .ktls_rx = true, .ktls_tx = true, .own_rx = true};
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* a userspace copy over a TLS leg */
	valid_session(&m);
	m.u.session.leg[1] = (struct ho_leg){.tls = HO_TLS_1_2, .ktls_rx = true, .ktls_tx = true};
	m.u.session.dir[1] = (struct ho_dir){.engine = HO_ENGINE_USER, .slot = HO_NO_SLOT};
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* sockmap one way only */
	valid_session(&m);
	m.u.session.dir[0] =
	        (struct ho_dir){.engine = HO_ENGINE_SOCKMAP, .slot = 3, .kernel = true};
	m.u.session.dir[0].n_pending = 0;
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* a sockmap direction the daemon holds */
	valid_session(&m);
	m.u.session.dir[0] = (struct ho_dir){.engine = HO_ENGINE_SOCKMAP, .slot = 3};
	m.u.session.dir[1] =
	        (struct ho_dir){.engine = HO_ENGINE_SOCKMAP, .slot = 4, .kernel = true};
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* bytes held without a pipe to hold them */
	valid_session(&m);
	m.u.session.dir[1].pipe = false;
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* more pending bytes than a record carries */
	static uint8_t big[HO_PENDING_MAX + 1];
	valid_session(&m);
	m.u.session.dir[0].pending = big;
	m.u.session.dir[0].n_pending = sizeof(big);
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* a required string left empty */
	valid_session(&m);
	m.u.session.id[0] = '\0';
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);

	/* a string with a control character (it would go into the log) */
	valid_session(&m);
	strcpy(m.u.session.account, "alice\n@example.org");
	assert_int_equal(ho_encode(&m, buf, sizeof(buf)), 0);
}

static void test_refuses_unknown_leg_flags_on_the_wire(void **state)
{
	valid_session(&m);
	size_t n = encode(&m);
	/* find the client leg field (tag 18) and set an unknown flag */
	for (size_t pos = HO_HEADER_LEN; pos + 4 <= n;) {
		unsigned tag = (unsigned)buf[pos] << 8 | buf[pos + 1];
		unsigned len = (unsigned)buf[pos + 2] << 8 | buf[pos + 3];
		if (tag == 18) {
			buf[pos + 4 + 2] |= 0x80;
			break;
		}
		pos += 4 + len;
	}
	expect_refused(buf, n, 4, "unknown flags 0x80");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_session_round_trip),
	        cmocka_unit_test(test_ktls_legs_round_trip),
	        cmocka_unit_test(test_sockmap_round_trip),
	        cmocka_unit_test(test_userspace_buffer_in_a_pipe),
	        cmocka_unit_test(test_every_type_round_trips),
	        cmocka_unit_test(test_refuses_what_it_does_not_understand),
	        cmocka_unit_test(test_refuses_missing_required_field),
	        cmocka_unit_test(test_refuses_sessions_that_cannot_move),
	        cmocka_unit_test(test_refuses_unknown_leg_flags_on_the_wire),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
