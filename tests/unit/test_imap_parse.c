/* IMAP login-phase parsing, against RFC 9051 (and 3501) section 9 grammar. */
#include "unit.h"

#include <string.h>

#include "imap_parse.h"

static const struct imap_limits lim = {.max_line = 200, .max_literal = 100};
static char scratch[4096];

static enum imap_parse_status parse(const char *s, struct imap_command *cmd, size_t *consumed,
                                    unsigned *sync, const char **err)
{
	return imap_parse_command(s, strlen(s), &lim, cmd, scratch, sizeof(scratch), consumed, sync,
	                          err);
}

/* RFC 9051 section 6.2.3: LOGIN userid password, both astrings */
static void test_login_atoms(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;
	const char *in = "a1 login alice@example.org secret\r\nNEXT";

	assert_int_equal(parse(in, &cmd, &used, &sync, &err), IMAP_PARSE_COMPLETE);
	assert_int_equal(used, strlen(in) - 4);
	assert_string_equal(cmd.tag, "a1");
	assert_string_equal(cmd.name, "LOGIN");
	assert_int_equal(cmd.n_args, 2);
	assert_string_equal(cmd.args[0].s, "alice@example.org");
	assert_string_equal(cmd.args[1].s, "secret");
}

/* RFC 9051 section 4.3: quoted strings escape only " and \ */
static void test_login_quoted_escapes(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("t LOGIN \"bob\" \"p\\\"w\\\\d\"\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_string_equal(cmd.args[1].s, "p\"w\\d");
	assert_int_equal(parse("t LOGIN \"bob\" \"a\\nb\"\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_ERROR);
	assert_string_equal(cmd.tag, "t");
}

/* RFC 9051 section 4.3: a synchronising literal is sent only after the
 * server's continuation request; we report each announcement. */
static void test_sync_literal_steps(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("x LOGIN {5}\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_INCOMPLETE);
	assert_int_equal(sync, 1);
	assert_int_equal(parse("x LOGIN {5}\r\nalice {3}\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_INCOMPLETE);
	assert_int_equal(sync, 2);
	assert_int_equal(parse("x LOGIN {5}\r\nalice {3}\r\np w\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_string_equal(cmd.args[0].s, "alice");
	assert_string_equal(cmd.args[1].s, "p w");
	assert_true(cmd.args[1].literal);
}

/* RFC 7888: {N+} needs no continuation */
static void test_nonsync_literal(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("x LOGIN {5+}\r\nalice pw\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_int_equal(sync, 0);
	assert_string_equal(cmd.args[0].s, "alice");
}

static void test_literal_too_large(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("x LOGIN {101}\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_string_equal(err, "literal too large");
	assert_int_equal(used, strlen("x LOGIN {101}\r\n"));
	assert_int_equal(parse("x LOGIN {99999999999999999999}\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_ERROR);
}

static void test_line_too_long(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;
	char big[400];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "t LOGIN ", 8);
	assert_int_equal(parse(big, &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_string_equal(err, "line too long");
	assert_int_equal(used, strlen(big)); /* no CRLF: everything dropped */
}

/* RFC 2971: ID ( "name" "value" ... ) or NIL */
static void test_id_list(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("i ID (\"name\" \"Thunderbird\" \"version\" NIL)\r\n", &cmd, &used,
	                       &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_int_equal(cmd.n_args, 6);
	assert_int_equal(cmd.args[0].type, IMAP_ARG_LIST_START);
	assert_string_equal(cmd.args[2].s, "Thunderbird");
	assert_int_equal(cmd.args[4].type, IMAP_ARG_NIL);
	assert_int_equal(cmd.args[5].type, IMAP_ARG_LIST_END);
	assert_int_equal(parse("i ID NIL\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_COMPLETE);
	assert_int_equal(cmd.args[0].type, IMAP_ARG_NIL);
	assert_int_equal(parse("i ID ((\"a\"))\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_int_equal(parse("i ID (\"a\"\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
}

/* RFC 9051 section 9: tag = 1*<any ASTRING-CHAR except "+"> */
static void test_bad_tags(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("+ LOGIN a b\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_string_equal(cmd.tag, "");
	assert_int_equal(parse("\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_int_equal(used, 2);
	assert_int_equal(parse("abc\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
	assert_string_equal(cmd.tag, "abc");
	assert_int_equal(parse("a1 CAPA", &cmd, &used, &sync, &err), IMAP_PARSE_INCOMPLETE);
	assert_int_equal(parse("a1 CAPABILITY\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_COMPLETE);
	assert_int_equal(cmd.n_args, 0);
	assert_int_equal(parse("a1 LOGIN  a b\r\n", &cmd, &used, &sync, &err), IMAP_PARSE_ERROR);
}

static void test_authenticate_ir(void **state)
{
	struct imap_command cmd;
	size_t used;
	unsigned sync;
	const char *err;

	assert_int_equal(parse("a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_string_equal(cmd.args[0].s, "PLAIN");
	assert_string_equal(cmd.args[1].s, "AGFsaWNlAHB3");
	/* "=" is an empty initial response (RFC 4959) */
	assert_int_equal(parse("a AUTHENTICATE PLAIN =\r\n", &cmd, &used, &sync, &err),
	                 IMAP_PARSE_COMPLETE);
	assert_string_equal(cmd.args[1].s, "=");
}

static void test_responses(void **state)
{
	char tag[16];
	enum imap_status st;
	const char *rest;
	const char *l1 = "M1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n";

	assert_int_equal(imap_parse_response(l1, strlen(l1), tag, sizeof(tag), &st, &rest),
	                 IMAP_RESP_TAGGED);
	assert_string_equal(tag, "M1");
	assert_int_equal(st, IMAP_STATUS_OK);
	assert_true(strncmp(rest, "[CAPABILITY", 11) == 0);
	bool had;
	assert_true(imap_line_has_capability(l1, strlen(l1), "idle", &had));
	assert_true(had);
	assert_false(imap_line_has_capability(l1, strlen(l1), "SASL-IR", &had));
	const char *l2 = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.\r\n";
	assert_int_equal(imap_parse_response(l2, strlen(l2), tag, sizeof(tag), &st, &rest),
	                 IMAP_RESP_UNTAGGED);
	assert_true(imap_line_has_capability(l2, strlen(l2), "SASL-IR", NULL));
	assert_false(imap_line_has_capability(l2, strlen(l2), "Dovecot", NULL));
	assert_int_equal(imap_parse_response("+ \r\n", 4, tag, sizeof(tag), &st, &rest),
	                 IMAP_RESP_CONTINUATION);
}

static void test_quote(void **state)
{
	char out[32];

	assert_int_equal(imap_quote("a\"b\\", 4, out, sizeof(out)), 8);
	assert_string_equal(out, "\"a\\\"b\\\\\"");
	assert_int_equal(imap_quote("a\r", 2, out, sizeof(out)), 0);
	assert_int_equal(imap_quote("\xc3\xa9", 2, out, sizeof(out)), 0);
	assert_int_equal(imap_quote("abcdefghijklmnopqrstuvwxyz01234", 31, out, sizeof(out)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_login_atoms),
	        cmocka_unit_test(test_login_quoted_escapes),
	        cmocka_unit_test(test_sync_literal_steps),
	        cmocka_unit_test(test_nonsync_literal),
	        cmocka_unit_test(test_literal_too_large),
	        cmocka_unit_test(test_line_too_long),
	        cmocka_unit_test(test_id_list),
	        cmocka_unit_test(test_bad_tags),
	        cmocka_unit_test(test_authenticate_ir),
	        cmocka_unit_test(test_responses),
	        cmocka_unit_test(test_quote),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
