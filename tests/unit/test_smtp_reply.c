/* SMTP backend replies: RFC 5321 section 4.2 (reply lines and multi-line
 * replies), section 4.1.1.1 (EHLO), RFC 3207, RFC 4954, RFC 1870. */
#include "unit.h"

#include <string.h>

#include "announce.h"
#include "sasl.h"
#include "smtp_reply.h"

#define POSTFIX_EHLO                                                                               \
	"250-mail.example.org\r\n"                                                                 \
	"250-PIPELINING\r\n"                                                                       \
	"250-SIZE 10240000\r\n"                                                                    \
	"250-VRFY\r\n"                                                                             \
	"250-ETRN\r\n"                                                                             \
	"250-STARTTLS\r\n"                                                                         \
	"250-AUTH PLAIN LOGIN\r\n"                                                                 \
	"250-AUTH=PLAIN LOGIN\r\n"                                                                 \
	"250-ENHANCEDSTATUSCODES\r\n"                                                              \
	"250-8BITMIME\r\n"                                                                         \
	"250-DSN\r\n"                                                                              \
	"250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n"           \
	"250 CHUNKING\r\n"

#define STALWART_EHLO                                                                              \
	"250-mx.example.org you had me at EHLO\r\n"                                                \
	"250-8BITMIME\r\n"                                                                         \
	"250-AUTH OAUTHBEARER XOAUTH2 PLAIN LOGIN\r\n"                                             \
	"250-BINARYMIME\r\n"                                                                       \
	"250-CHUNKING\r\n"                                                                         \
	"250-ENHANCEDSTATUSCODES\r\n"                                                              \
	"250-PIPELINING\r\n"                                                                       \
	"250-SIZE 104857600\r\n"                                                                   \
	"250 SMTPUTF8\r\n"

static enum smtp_reply_status feed(struct smtp_reply *r, const char *line, const char **error)
{
	return smtp_reply_line(r, line, strlen(line), error);
}

/* RFC 5321 section 4.2: "250 " ends a reply, "250-" announces more */
static void test_rfc5321_4_2_single_and_multi_line(void **state)
{
	struct smtp_reply r;
	const char *e;

	smtp_reply_init(&r);
	assert_int_equal(feed(&r, "220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n", &e),
	                 SMTP_REPLY_DONE);
	assert_int_equal(r.code, 220);
	assert_null(e);
	/* the next line starts a new reply */
	assert_int_equal(feed(&r, "250-mx.example.org\r\n", &e), SMTP_REPLY_MORE);
	assert_int_equal(feed(&r, "250-PIPELINING\r\n", &e), SMTP_REPLY_MORE);
	assert_int_equal(feed(&r, "250 8BITMIME\r\n", &e), SMTP_REPLY_DONE);
	assert_int_equal(r.code, 250);
	assert_int_equal(r.lines, 3);
}

/* RFC 5321 section 4.2: the text is optional ("250" CRLF); bare LF is
 * tolerated as a line end */
static void test_rfc5321_4_2_bare_code_and_lf(void **state)
{
	struct smtp_reply r;
	const char *e;

	smtp_reply_init(&r);
	assert_int_equal(feed(&r, "250\r\n", &e), SMTP_REPLY_DONE);
	assert_int_equal(feed(&r, "354\n", &e), SMTP_REPLY_DONE);
	assert_int_equal(r.code, 354);
	assert_int_equal(feed(&r, "235 2.7.0 Authentication successful\n", &e), SMTP_REPLY_DONE);
	assert_int_equal(r.code, 235);
}

/* RFC 5321 section 4.2.1: every line of a multi-line reply has the same
 * code */
static void test_rfc5321_4_2_1_inconsistent_codes(void **state)
{
	struct smtp_reply r;
	const char *e;

	smtp_reply_init(&r);
	assert_int_equal(feed(&r, "250-mx.example.org\r\n", &e), SMTP_REPLY_MORE);
	assert_int_equal(feed(&r, "235 2.7.0 Authentication successful\r\n", &e), SMTP_REPLY_ERROR);
	assert_non_null(e);
}

/* RFC 5321 section 4.2: reply-code = %x32-35 %x30-35 %x30-39, then SP,
 * "-" or CRLF */
static void test_rfc5321_4_2_bad_codes(void **state)
{
	static const char *const bad[] = {
	        "",          "\r\n",       "25\r\n",     "2500 x\r\n", "abc ok\r\n",
	        "150 x\r\n", "260 x\r\n",  "6xx\n",      "250x\n",     "250\rx\n",
	        "250 ok",    "2 0 ok\r\n", "+OK ok\r\n",
	};
	struct smtp_reply r;
	const char *e;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		smtp_reply_init(&r);
		assert_int_equal(smtp_reply_line(&r, bad[i], strlen(bad[i]), &e), SMTP_REPLY_ERROR);
		assert_non_null(e);
	}
}

/* hostile input: NUL inside a line, overlong lines and endless replies */
static void test_hostile_lines(void **state)
{
	static char big[SMTP_REPLY_LINE_MAX + 2];
	struct smtp_reply r;
	const char *e;

	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, "250 a\0b\r\n", 9, &e), SMTP_REPLY_ERROR);
	memset(big, 'x', sizeof(big));
	memcpy(big, "250 ", 4);
	big[sizeof(big) - 1] = '\n';
	smtp_reply_init(&r);
	assert_int_equal(smtp_reply_line(&r, big, sizeof(big), &e), SMTP_REPLY_ERROR);
	/* a line of exactly the limit is fine */
	smtp_reply_init(&r);
	big[SMTP_REPLY_LINE_MAX - 1] = '\n';
	assert_int_equal(smtp_reply_line(&r, big, SMTP_REPLY_LINE_MAX, &e), SMTP_REPLY_DONE);
	/* continuation lines without end */
	big[3] = '-';
	smtp_reply_init(&r);
	enum smtp_reply_status st = SMTP_REPLY_MORE;
	unsigned n = 0;
	while (st == SMTP_REPLY_MORE && n < 1000) {
		st = smtp_reply_line(&r, big, SMTP_REPLY_LINE_MAX, &e);
		n++;
	}
	assert_int_equal(st, SMTP_REPLY_ERROR);
	assert_int_equal(n, SMTP_REPLY_BYTES_MAX / SMTP_REPLY_LINE_MAX + 1);
}

/* RFC 5321 section 4.1.1.1, RFC 3207, RFC 4954 section 3, RFC 1870, and
 * Postfix's XCLIENT list, as Postfix 3.7 answers EHLO */
static void test_rfc5321_4_1_1_1_postfix_ehlo(void **state)
{
	struct smtp_ehlo e;

	assert_null(smtp_ehlo_parse(POSTFIX_EHLO, strlen(POSTFIX_EHLO), &e));
	assert_true(e.starttls);
	assert_true(e.pipelining);
	assert_true(e.size);
	assert_int_equal(e.size_max, 10240000);
	assert_int_equal(e.auth_mechs, (1u << SASL_PLAIN) | (1u << SASL_LOGIN));
	assert_true(e.xclient);
	assert_true(e.xclient_attrs & XCLIENT_ADDR);
	assert_true(e.xclient_attrs & XCLIENT_HELO);
	assert_true(e.xclient_attrs & XCLIENT_DESTPORT);
	assert_false(e.xclient_attrs & XCLIENT_SESSION);
}

/* RFC 4954 section 3 and RFC 7628: Stalwart offers OAuth mechanisms; no
 * STARTTLS on an implicit-TLS port (RFC 3207 section 4.2) and no XCLIENT */
static void test_rfc4954_3_stalwart_ehlo(void **state)
{
	struct smtp_ehlo e;

	assert_null(smtp_ehlo_parse(STALWART_EHLO, strlen(STALWART_EHLO), &e));
	assert_false(e.starttls);
	assert_false(e.xclient);
	assert_int_equal(e.xclient_attrs, 0);
	assert_int_equal(e.auth_mechs, (1u << SASL_PLAIN) | (1u << SASL_LOGIN) |
	                                       (1u << SASL_XOAUTH2) | (1u << SASL_OAUTHBEARER));
	assert_int_equal(e.size_max, 104857600);
}

/* RFC 5321 section 4.1.1.1: the first line names the server, it is no
 * keyword; keywords are case-insensitive; an unparseable SIZE is no limit */
static void test_rfc5321_4_1_1_1_keywords(void **state)
{
	static const char r1[] = "250-starttls.example.org\r\n250-size\r\n250 auth=login\r\n";
	static const char r2[] = "250-mx\r\n250-SIZE 99999999999999999999999\r\n250 STARTTLSX\r\n";
	static const char r3[] = "250 mx.example.org\r\n";
	struct smtp_ehlo e;

	assert_null(smtp_ehlo_parse(r1, strlen(r1), &e));
	assert_false(e.starttls);
	assert_true(e.size);
	assert_int_equal(e.size_max, 0);
	assert_int_equal(e.auth_mechs, 1u << SASL_LOGIN);
	assert_null(smtp_ehlo_parse(r2, strlen(r2), &e));
	assert_true(e.size);
	assert_int_equal(e.size_max, 0);
	assert_false(e.starttls);
	assert_null(smtp_ehlo_parse(r3, strlen(r3), &e));
	assert_false(e.pipelining);
}

/* a reply to EHLO that is not a complete 250 reply offers nothing */
static void test_ehlo_refused_or_truncated(void **state)
{
	static const char *const bad[] = {
	        "502 5.5.2 Error: command not recognized\r\n",
	        "250-mx\r\n250-STARTTLS\r\n",
	        "250-mx\r\n250-STARTTLS\r\n250 PIPELINING",
	        "250-mx\r\n550 STARTTLS\r\n",
	        "250 mx\r\n250 STARTTLS\r\n",
	        "",
	};
	struct smtp_ehlo e;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_non_null(smtp_ehlo_parse(bad[i], strlen(bad[i]), &e));
		assert_false(e.starttls);
		assert_int_equal(e.xclient_attrs, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc5321_4_2_single_and_multi_line),
	        cmocka_unit_test(test_rfc5321_4_2_bare_code_and_lf),
	        cmocka_unit_test(test_rfc5321_4_2_1_inconsistent_codes),
	        cmocka_unit_test(test_rfc5321_4_2_bad_codes),
	        cmocka_unit_test(test_hostile_lines),
	        cmocka_unit_test(test_rfc5321_4_1_1_1_postfix_ehlo),
	        cmocka_unit_test(test_rfc4954_3_stalwart_ehlo),
	        cmocka_unit_test(test_rfc5321_4_1_1_1_keywords),
	        cmocka_unit_test(test_ehlo_refused_or_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
