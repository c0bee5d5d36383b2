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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_keywords_case_insensitive),
	        cmocka_unit_test(test_pass_keeps_spaces),
	        cmocka_unit_test(test_auth_initial_response),
	        cmocka_unit_test(test_invalid),
	        cmocka_unit_test(test_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
