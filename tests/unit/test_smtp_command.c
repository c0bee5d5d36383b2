/* SMTP client commands before AUTH: RFC 5321 section 4.1.1 (command
 * syntax, verbs case-insensitive per section 2.4), RFC 3207 section 4
 * (STARTTLS), RFC 4954 section 4 (AUTH), RFC 4422 section 3.1 (mechanism
 * names). */
#include "unit.h"

#include <string.h>

#include "smtp_command.h"

static const char *parse(const char *line, struct smtp_command *c)
{
	return smtp_parse_command(line, strlen(line), c);
}

/* section 2.4: "Verbs and argument values ... are not case sensitive" */
static void test_rfc5321_2_4_verbs(void **state)
{
	struct smtp_command c;

	assert_null(parse("ehlo client.example.org", &c));
	assert_int_equal(c.verb, SMTP_EHLO);
	assert_int_equal(c.arg_len, strlen("client.example.org"));
	assert_memory_equal(c.arg, "client.example.org", c.arg_len);
	assert_null(parse("HeLo [192.0.2.1]", &c));
	assert_int_equal(c.verb, SMTP_HELO);
	assert_null(parse("NOOP", &c));
	assert_int_equal(c.verb, SMTP_NOOP);
	assert_null(parse("noop anything at all", &c)); /* section 4.1.1.9: a string is allowed */
	assert_null(parse("RSET", &c));
	assert_int_equal(c.verb, SMTP_RSET);
	assert_null(parse("quit", &c));
	assert_int_equal(c.verb, SMTP_QUIT);
	assert_null(parse("MAIL FROM:<a@example.org>", &c));
	assert_int_equal(c.verb, SMTP_MAIL);
	assert_null(parse("RCPT TO:<b@example.org>", &c));
	assert_int_equal(c.verb, SMTP_RCPT);
	assert_null(parse("DATA", &c));
	assert_int_equal(c.verb, SMTP_DATA);
	assert_null(parse("BDAT 100 LAST", &c));
	assert_int_equal(c.verb, SMTP_BDAT);
}

static void test_unknown_and_lookalikes(void **state)
{
	struct smtp_command c;

	assert_string_equal(parse("VRFY root", &c), "502 5.5.2 Error: command not recognized");
	assert_non_null(parse("EHLOX host", &c));
	assert_non_null(parse("MAILFROM:<a@b>", &c));
	assert_non_null(parse(" EHLO host", &c));
	assert_non_null(parse("", &c));
	assert_string_equal(smtp_parse_command("NOOP\0x", 6, &c), "500 5.5.2 NUL in command");
}

/* section 4.1.1.1: ehlo = "EHLO" SP ( Domain / address-literal ) */
static void test_rfc5321_4_1_1_1_ehlo_argument(void **state)
{
	struct smtp_command c;
	char longest[5 + SMTP_HELO_MAX + 2];

	assert_non_null(parse("EHLO", &c));
	assert_non_null(parse("EHLO ", &c));
	assert_non_null(parse("EHLO two words", &c));
	assert_non_null(parse("EHLO tab\there", &c));
	/* a CR inside the line must not reach the backend's EHLO or XCLIENT */
	assert_non_null(parse("EHLO a\rMAIL FROM:<x@y>", &c));
	assert_non_null(parse("EHLO a\x7f", &c));
	assert_null(parse("EHLO [IPv6:2001:db8::1]", &c));
	assert_null(parse("EHLO b\xc3\xbc"
	                  "cher.example",
	                  &c)); /* RFC 6531: UTF-8 */
	/* section 4.5.3.1.2: 255 octets at most */
	memcpy(longest, "EHLO ", 5);
	memset(longest + 5, 'a', SMTP_HELO_MAX);
	longest[5 + SMTP_HELO_MAX] = '\0';
	assert_null(parse(longest, &c));
	assert_int_equal(c.arg_len, SMTP_HELO_MAX);
	longest[5 + SMTP_HELO_MAX] = 'a';
	longest[5 + SMTP_HELO_MAX + 1] = '\0';
	assert_string_equal(parse(longest, &c), "501 5.5.4 Syntax: EHLO hostname");
}

/* RFC 3207 section 4: STARTTLS takes no parameters */
static void test_rfc3207_4_starttls(void **state)
{
	struct smtp_command c;

	assert_null(parse("starttls", &c));
	assert_int_equal(c.verb, SMTP_STARTTLS);
	assert_string_equal(parse("STARTTLS now", &c), "501 5.5.4 Syntax: STARTTLS");
}

/* RFC 4954 section 4: "AUTH" SP sasl-mech [SP initial-response] */
static void test_rfc4954_4_auth(void **state)
{
	struct smtp_command c;

	assert_null(parse("AUTH PLAIN", &c));
	assert_int_equal(c.verb, SMTP_AUTH);
	assert_string_equal(c.mech, "PLAIN");
	assert_null(c.initial);
	assert_null(parse("auth plain AGFsaWNlAHNlY3JldA==", &c));
	assert_string_equal(c.mech, "plain");
	assert_int_equal(c.initial_len, strlen("AGFsaWNlAHNlY3JldA=="));
	assert_memory_equal(c.initial, "AGFsaWNlAHNlY3JldA==", c.initial_len);
	/* section 4: "=" is an empty initial response */
	assert_null(parse("AUTH XOAUTH2 =", &c));
	assert_int_equal(c.initial_len, 1);
	/* RFC 4422 section 3.1: 1 to 20 of A-Z 0-9 - _ */
	assert_null(parse("AUTH SCRAM-SHA-256-PLUS", &c));
	assert_null(parse("AUTH ABCDEFGHIJKLMNOPQRST", &c));
	assert_non_null(parse("AUTH ABCDEFGHIJKLMNOPQRSTU", &c));
	assert_non_null(parse("AUTH", &c));
	assert_non_null(parse("AUTH ", &c));
	assert_non_null(parse("AUTH  PLAIN", &c));
	assert_string_equal(parse("AUTH PL@IN", &c),
	                    "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc5321_2_4_verbs),
	        cmocka_unit_test(test_unknown_and_lookalikes),
	        cmocka_unit_test(test_rfc5321_4_1_1_1_ehlo_argument),
	        cmocka_unit_test(test_rfc3207_4_starttls),
	        cmocka_unit_test(test_rfc4954_4_auth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
