/* ManageSieve backend responses: RFC 5804 section 4 (formal syntax),
 * section 1.7 (capabilities), section 1.3 (OK/NO/BYE). */
#include "unit.h"

#include <string.h>

#include "sieve_parse.h"

static enum sieve_resp resp(const char *line)
{
	return sieve_parse_response(line, strlen(line));
}

/* section 4: response-oknobye = ("OK" / "NO" / "BYE") [SP "(" resp-code ")"]
 * [SP string] CRLF */
static void test_rfc5804_4_verdicts(void **state)
{
	assert_int_equal(resp("OK \"Logged in.\"\r\n"), SIEVE_RESP_OK);
	assert_int_equal(resp("OK\r\n"), SIEVE_RESP_OK);
	assert_int_equal(resp("ok\n"), SIEVE_RESP_OK);
	assert_int_equal(resp("NO (AUTH-TOO-WEAK) \"Mechanism too weak\"\r\n"), SIEVE_RESP_NO);
	assert_int_equal(resp("NO \"Authentication failed.\"\r\n"), SIEVE_RESP_NO);
	assert_int_equal(resp("BYE (TRYLATER) \"Server shutting down.\"\r\n"), SIEVE_RESP_BYE);
	assert_int_equal(resp("BYE"), SIEVE_RESP_BYE);
}

/* anything else is not a verdict: a capability line or a challenge */
static void test_rfc5804_4_not_verdicts(void **state)
{
	assert_int_equal(resp("\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp("\"eyJzdGF0dXMiOiI0MDEifQ==\"\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp("OKAY\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp("NOPE \"x\"\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp("BYEBYE\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp("OK\rX\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp(" OK\r\n"), SIEVE_RESP_OTHER);
	assert_int_equal(resp(""), SIEVE_RESP_OTHER);
	assert_int_equal(sieve_parse_response("NO", 1), SIEVE_RESP_OTHER);
}

static bool cap(const char *line, char name[SIEVE_CAPABILITY_NAME_MAX])
{
	return sieve_parse_capability(line, strlen(line), name);
}

/* section 1.7: each capability is a quoted name, then SP and a value or
 * nothing; Dovecot lists "XCLIENT" to a trusted proxy */
static void test_rfc5804_1_7_capabilities(void **state)
{
	char name[SIEVE_CAPABILITY_NAME_MAX];

	assert_true(cap("\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n", name));
	assert_string_equal(name, "IMPLEMENTATION");
	assert_true(cap("\"SASL\" \"PLAIN LOGIN OAUTHBEARER\"\r\n", name));
	assert_string_equal(name, "SASL");
	assert_true(cap("\"XCLIENT\"\r\n", name));
	assert_string_equal(name, "XCLIENT");
	assert_true(cap("\"STARTTLS\"", name));
	assert_string_equal(name, "STARTTLS");
	/* section 4: QUOTED-SPECIALS are escaped with a backslash */
	assert_true(cap("\"a\\\"b\\\\c\"\n", name));
	assert_string_equal(name, "a\"b\\c");
}

static void test_rfc5804_1_7_not_capabilities(void **state)
{
	char name[SIEVE_CAPABILITY_NAME_MAX];
	char longname[SIEVE_CAPABILITY_NAME_MAX + 8];

	assert_false(cap("OK \"Dovecot ready.\"\r\n", name));
	assert_false(cap("{7}\r\n", name));          /* a literal: not a name we use */
	assert_false(cap("\"XCLIENT\r\n", name));    /* unterminated */
	assert_false(cap("\"XCLIENT\"X\r\n", name)); /* junk after the quote */
	assert_false(cap("\"\"\r\n", name));         /* empty */
	assert_false(cap("\"a\\b\"\r\n", name));     /* backslash before an ordinary char */
	assert_false(cap("\"a\rb\"\r\n", name));
	assert_false(sieve_parse_capability("\"XCLIENT\"", 8, name));
	assert_false(sieve_parse_capability("\"ab\0c\"", 6, name));
	memset(longname, 'A', sizeof(longname));
	longname[0] = '"';
	longname[sizeof(longname) - 2] = '"';
	longname[sizeof(longname) - 1] = '\0';
	assert_false(cap(longname, name));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc5804_4_verdicts),
	        cmocka_unit_test(test_rfc5804_4_not_verdicts),
	        cmocka_unit_test(test_rfc5804_1_7_capabilities),
	        cmocka_unit_test(test_rfc5804_1_7_not_capabilities),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
