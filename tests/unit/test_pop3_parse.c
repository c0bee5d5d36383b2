/* POP3 authorization-state lines: RFC 1939 section 3 and 7, RFC 5034. */
#include "unit.h"

#include <string.h>

#include "pop3_parse.h"

static void test_keywords_case_insensitive(void **state)
{
	char line[] = "user alice@example.org";
	struct pop3_command c;

	assert_null(pop3_parse_command(line, &c));
	assert_string_equal(c.keyword, "USER");
	assert_int_equal(c.n_args, 1);
	assert_string_equal(c.args[0], "alice@example.org");
}

/* RFC 1939 section 7: the PASS argument may contain spaces */
static void test_pass_keeps_spaces(void **state)
{
	char line[] = "PASS my secret  pw";
	struct pop3_command c;

	assert_null(pop3_parse_command(line, &c));
	assert_string_equal(c.rest, "my secret  pw");
}

/* RFC 5034 section 4: AUTH mechanism [initial-response] */
static void test_auth_initial_response(void **state)
{
	char line[] = "AUTH PLAIN AGFsaWNlAHB3";
	struct pop3_command c;

	assert_null(pop3_parse_command(line, &c));
	assert_int_equal(c.n_args, 2);
	assert_string_equal(c.args[0], "PLAIN");
	assert_string_equal(c.args[1], "AGFsaWNlAHB3");
}

static void test_invalid(void **state)
{
	struct pop3_command c;
	char a[] = "US";
	char b[] = "USERX a";
	char d[] = "USER a\x01";
	char e[] = "US3R a";
	char f[] = "USER a ";
	char g[] = "PASS";

	assert_non_null(pop3_parse_command(a, &c));
	assert_non_null(pop3_parse_command(b, &c));
	assert_non_null(pop3_parse_command(d, &c));
	assert_non_null(pop3_parse_command(e, &c));
	assert_non_null(pop3_parse_command(f, &c));
	char h[] = "CAPA";
	assert_null(pop3_parse_command(h, &c));
	assert_int_equal(c.n_args, 0);
	(void)g;
}

static void test_status(void **state)
{
	const char *t;
	assert_int_equal(pop3_parse_status("+OK Logged in.\r\n", 16, &t), POP3_OK);
	assert_true(strncmp(t, "Logged in.", 10) == 0);
	assert_int_equal(pop3_parse_status("-ERR [AUTH] no\r\n", 16, &t), POP3_ERR);
	assert_int_equal(pop3_parse_status("+ \r\n", 4, &t), POP3_CONTINUATION);
	assert_int_equal(pop3_parse_status("+OKAY\r\n", 7, &t), POP3_INVALID);
	assert_int_equal(pop3_parse_status("* OK\r\n", 6, &t), POP3_INVALID);
}

/* RFC 2449 section 8: an extended response code in brackets right after the
 * status word; Dovecot's "[XCLIENT]" greeting says it trusts the proxy */
static void test_rfc2449_8_resp_code(void **state)
{
	const char *g = "+OK [XCLIENT] Dovecot (Debian) ready.\r\n", *text;

	assert_int_equal(pop3_parse_status(g, strlen(g), &text), POP3_OK);
	assert_true(pop3_has_resp_code(text, strlen(text), "XCLIENT"));
	assert_true(pop3_has_resp_code("[xclient]", 9, "XCLIENT"));
	assert_true(pop3_has_resp_code("[SYS/TEMP] busy", 15, "SYS"));
	/* only right after the status word, and the whole code */
	assert_false(pop3_has_resp_code("Dovecot [XCLIENT] ready", 23, "XCLIENT"));
	assert_false(pop3_has_resp_code("[XCLIENTS] ready", 16, "XCLIENT"));
	assert_false(pop3_has_resp_code("[XCLIENT", 8, "XCLIENT"));
	assert_false(pop3_has_resp_code("", 0, "XCLIENT"));
}

static enum pop3_capa_status capa(struct pop3_capa *c, const char *line)
{
	return pop3_capa_line(line, strlen(line), c);
}

/* RFC 2449 section 5: CAPA lists one capability per line, ends with "." */
static void test_rfc2449_5_capa(void **state)
{
	struct pop3_capa c;

	memset(&c, 0, sizeof(c));
	assert_int_equal(capa(&c, "CAPA\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "TOP\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "UIDL\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "RESP-CODES\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "AUTH-RESP-CODE\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "PIPELINING\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "STLS\r\n"), POP3_CAPA_MORE);
	assert_false(c.user || c.sasl_plain);
	/* section 6.3: SASL and its mechanisms; section 6.8: USER */
	assert_int_equal(capa(&c, "SASL XOAUTH2 plain OAUTHBEARER\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "user\n"), POP3_CAPA_MORE);
	assert_true(c.sasl_plain && c.user);
	assert_int_equal(capa(&c, ".\r\n"), POP3_CAPA_END);
	assert_int_equal(c.lines, 9);
}

static void test_rfc2449_5_capa_lookalikes(void **state)
{
	struct pop3_capa c;

	memset(&c, 0, sizeof(c));
	/* a keyword must match whole; PLAIN must be a whole mechanism */
	assert_int_equal(capa(&c, "USERS\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "SASLX PLAIN\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "SASL PLAINX XPLAIN\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "X-SASL PLAIN\r\n"), POP3_CAPA_MORE);
	assert_false(c.user || c.sasl_plain);
	/* RFC 1939 section 3: a dot-stuffed line is not the terminator */
	assert_int_equal(capa(&c, "..\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, ".USER\r\n"), POP3_CAPA_MORE);
	assert_true(c.user);
	assert_int_equal(capa(&c, "."), POP3_CAPA_END);
}

/* a backend that never ends its list cannot hold the login forever */
static void test_capa_bounded(void **state)
{
	struct pop3_capa c;

	memset(&c, 0, sizeof(c));
	for (unsigned i = 0; i < POP3_CAPA_LINES_MAX; i++)
		assert_int_equal(capa(&c, "X-JUNK\r\n"), POP3_CAPA_MORE);
	assert_int_equal(capa(&c, "X-JUNK\r\n"), POP3_CAPA_TOO_MANY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_keywords_case_insensitive),
	        cmocka_unit_test(test_pass_keeps_spaces),
	        cmocka_unit_test(test_auth_initial_response),
	        cmocka_unit_test(test_invalid),
	        cmocka_unit_test(test_status),
	        cmocka_unit_test(test_rfc2449_8_resp_code),
	        cmocka_unit_test(test_rfc2449_5_capa),
	        cmocka_unit_test(test_rfc2449_5_capa_lookalikes),
	        cmocka_unit_test(test_capa_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
