/* The TOML parser: lines, errors, limits, lookups and freeing. */
#include "unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"
#include "util.h"

static struct toml_value *parse(const char *text)
{
	struct toml_error err;
	struct toml_value *root = toml_parse(text, strlen(text), &err);

	if (!root)
		fail_msg("unexpected error on line %u: %s", err.line, err.msg);
	return root;
}

/* Follow a path of keys and array indexes: "a", "b", "#1", "c". */
static const struct toml_value *at(const struct toml_value *v, const char *path)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *part = strtok_r(buf, "/", &save); part && v; part = strtok_r(NULL, "/", &save)) {
		if (part[0] == '#') {
			size_t i = strtoul(part + 1, NULL, 10);

			v = v->type == TOML_ARRAY && i < v->u.array.len ? v->u.array.items[i]
			                                                : NULL;
		} else {
			v = toml_get(v, part);
		}
	}
	if (!v)
		fail_msg("no value at %s", path);
	return v;
}

static void test_lines_of_keys_and_tables(void **state)
{
	struct toml_value *root = parse("# comment\n"              /* 1 */
	                                "title = \"x\"\n"          /* 2 */
	                                "\n"                       /* 3 */
	                                "[server]\n"               /* 4 */
	                                "port = 25\n"              /* 5 */
	                                "name.first = \"a\"\n"     /* 6 */
	                                "\n"                       /* 7 */
	                                "[[listener]]\n"           /* 8 */
	                                "proto = \"imap\"\n"       /* 9 */
	                                "\n"                       /* 10 */
	                                "[[listener]]\n"           /* 11 */
	                                "proto = \"pop3\"\n"       /* 12 */
	                                "[a.b.c]\n"                /* 13 */
	                                "d = [\n"                  /* 14 */
	                                "  1,\n"                   /* 15 */
	                                "  { e = 2 },\n"           /* 16 */
	                                "]\n"                      /* 17 */
	                                "f = { g.h = 1, i = 2 }\n" /* 18 */
	);

	assert_int_equal(root->line, 0);
	assert_int_equal(at(root, "title")->line, 2);
	assert_int_equal(at(root, "server")->line, 4);
	assert_int_equal(at(root, "server/port")->line, 5);
	assert_int_equal(at(root, "server/name")->line, 6); /* implicit, via a dotted key */
	assert_int_equal(at(root, "server/name/first")->line, 6);
	assert_int_equal(at(root, "listener")->line, 8);
	assert_int_equal(at(root, "listener/#0")->line, 8);
	assert_int_equal(at(root, "listener/#1")->line, 11);
	assert_int_equal(at(root, "listener/#0/proto")->line, 9);
	assert_int_equal(at(root, "listener/#1/proto")->line, 12);
	assert_int_equal(at(root, "a")->line, 13); /* implicit parents of [a.b.c] */
	assert_int_equal(at(root, "a/b")->line, 13);
	assert_int_equal(at(root, "a/b/c")->line, 13);
	assert_int_equal(at(root, "a/b/c/d")->line, 14);
	assert_int_equal(at(root, "a/b/c/d/#0")->line, 15);
	assert_int_equal(at(root, "a/b/c/d/#1")->line, 16);
	assert_int_equal(at(root, "a/b/c/d/#1/e")->line, 16);
	assert_int_equal(at(root, "a/b/c/f/g/h")->line, 18);
	toml_free(root);
}

static void test_lines_after_multi_line_values_and_crlf(void **state)
{
	struct toml_value *root = parse("s = \"\"\"\r\n"     /* 1 */
	                                "one\r\n"            /* 2 */
	                                "two \\\r\n"         /* 3 */
	                                "   three\"\"\"\r\n" /* 4 */
	                                "t = '''\n"          /* 5 */
	                                "x'''\n"             /* 6 */
	                                "u = [ # c\n"        /* 7 */
	                                "]\n"                /* 8 */
	                                "[later]\n"          /* 9 */
	);

	assert_int_equal(at(root, "s")->line, 1);
	assert_string_equal(at(root, "s")->u.string.ptr, "one\ntwo three"); /* CR LF is LF */
	assert_int_equal(at(root, "t")->line, 5);
	assert_int_equal(at(root, "u")->line, 7);
	assert_int_equal(at(root, "later")->line, 9);
	toml_free(root);
}

static void test_implicit_table_takes_header_line_once_defined(void **state)
{
	struct toml_value *root = parse("[x.y]\n" /* 1 */
	                                "[z]\n"   /* 2 */
	                                "[x]\n"   /* 3 */
	);

	assert_int_equal(at(root, "x")->line, 3);
	assert_int_equal(at(root, "x/y")->line, 1);
	toml_free(root);
}

static void test_keys_keep_definition_order(void **state)
{
	struct toml_value *root = parse("zeta = 1\nalpha = 2\n[mid]\n[\"\"]\nbeta.x = 3\n");
	const char *want[] = {"zeta", "alpha", "mid", ""};

	assert_int_equal(root->u.table.len, 4);
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(root->u.table.items[i].key, want[i]);
	toml_free(root);
}

struct bad_input {
	const char *text;
	unsigned line;
	const char *msg;
};

static const struct bad_input bad_inputs[] = {
        {"a = 1\na = 2\n", 2, "duplicate key 'a'"},
        {"[server]\nport = 1\nport = 2\n", 3, "duplicate key 'port'"},
        {"\"a b\" = 1\n'a b' = 2\n", 2, "duplicate key '\"a b\"'"},
        {"a.b = 1\na.b = 2\n", 2, "duplicate key 'a.b'"},
        {"a = \"\\q\"\n", 1, "invalid escape '\\q'"},
        {"a = \"\\uD800\"\n", 1, "invalid escape '\\uD800': not a Unicode scalar value"},
        {"a = \"\\U00110000\"\n", 1, "invalid escape '\\U00110000': not a Unicode scalar value"},
        {"a = \"\\u12\"\n", 1, "invalid escape '\\u': expected 4 hex digits"},
        {"[a]\n[a]\n", 2, "table 'a' is already defined"},
        {"a.b = 1\n[a]\n", 2, "table 'a' is already defined"},
        {"[a.b]\n[a]\nb.d = 1\n", 3, "cannot add keys to table 'b' outside its [header]"},
        {"[a.b.c]\n[a]\nb.d = 1\n", 3,
         "cannot add keys to table 'b' created by the [header] on line 1"},
        {"a = {b = 1}\na.c = 2\n", 2, "cannot add keys to inline table 'a'"},
        {"a = {b = 1}\n[a.c]\n", 2, "cannot add to inline table 'a'"},
        {"a = [1]\n[[a]]\n", 2, "key 'a' is already defined as a static array"},
        {"[a]\n[[a]]\n", 2, "key 'a' is already defined as a table"},
        {"[[a]]\n[a]\n", 2, "key 'a' is already defined as an array"},
        {"a = 1\na.b = 2\n", 2, "key 'a' is already defined as a value"},
        {"x = 1\n\n  y = \n", 3, "expected a value, found end of line"},
        {"x = 1 y = 2\n", 1, "expected end of line after a value, found 'y'"},
        {"[t] x = 1\n", 1, "expected end of line after a table header, found 'x'"},
        {"key\n", 1, "expected '=' after a key, found end of line"},
        {"name = alice\n", 1, "invalid value 'alice' (strings need quotes)"},
        {"s = \"\"\"\nabc\n", 1, "unterminated multi-line string"},
        {"s = \"abc\n", 1, "unterminated string"},
        {"a = [1,\n2\n", 1, "unterminated array"},
        {"a = [1 2]\n", 1, "expected ',' or ']' in array, found '2'"},
        {"a = {b = 1,}\n", 1, "trailing comma in inline table"},
        {"a = {b = 1\n}\n", 1, "inline table must close on the line it opens"},
        {"a = 1\nb = \"\xff\"\n", 2, "invalid UTF-8 (byte 0xFF)"},
        {"a = 1\nb = \"\xed\xa0\x80\"\n", 2, "invalid UTF-8 (byte 0xED)"},
        {"a = 1\r\nb = 2\r", 2, "carriage return without a line feed"},
        {"a = 1 # \x7f\n", 1, "control character U+007F is not allowed"},
        {"a = \"\x1b\"\n", 1, "control character U+001B is not allowed"},
        {"n = 9223372036854775808\n", 1, "integer '9223372036854775808' is out of range"},
        {"n = 0x8000000000000000\n", 1, "integer '0x8000000000000000' is out of range"},
        {"n = 012\n", 1, "leading zeros are not allowed in '012'"},
        {"n = 1__2\n", 1, "invalid integer '1__2'"},
        {"f = 1.e5\n", 1, "invalid float '1.e5'"},
        {"f = 1e999\n", 1, "float '1e999' is out of range"},
        {"d = 2023-02-29\n", 1, "day out of range in '2023-02-29'"},
        {"d = 2023-13-01\n", 1, "month out of range in '2023-13-01'"},
        {"t = 24:00:00\n", 1, "hour out of range in '24:00:00'"},
        {"t = 07:32\n", 1, "invalid time in '07:32' (HH:MM:SS expected)"},
        {"d = 1979-05-27T07:32:00+25:00\n", 1,
         "time zone offset out of range in '1979-05-27T07:32:00+25:00'"},
        {"\"\"\"k\"\"\" = 1\n", 1, "a key cannot be a multi-line string"},
        {"[[a]\n", 1, "expected ']]' after the table name, found ']'"},
        {"[a\n", 1, "expected ']' after the table name, found end of line"},
        {"a = [[1, {b = [2, {c = }]}]]\n", 1, "expected a value, found '}'"},
};

static void test_error_lines_and_messages(void **state)
{
	for (size_t i = 0; i < ARRAY_LEN(bad_inputs); i++) {
		const struct bad_input *b = &bad_inputs[i];
		struct toml_error err;

		if (toml_parse(b->text, strlen(b->text), &err))
			fail_msg("accepted: %s", b->text);
		if (err.line != b->line || strcmp(err.msg, b->msg) != 0)
			fail_msg("input %s\n  got  line %u: %s\n  want line %u: %s", b->text,
			         err.line, err.msg, b->line, b->msg);
	}
}

static void test_embedded_nul(void **state)
{
	struct toml_value *root = parse("s = \"x\\u0000y\"\n\"k\\u0000\" = 1\n");
	const struct toml_value *s = at(root, "s");

	assert_int_equal(s->type, TOML_STRING);
	assert_int_equal(s->u.string.len, 3);
	assert_memory_equal(s->u.string.ptr, "x\0y", 4);
	assert_int_equal(root->u.table.items[1].key_len, 2);
	assert_memory_equal(root->u.table.items[1].key, "k\0", 3);
	/* a C string cannot name a key with a NUL in it */
	assert_null(toml_get(root, "k"));
	toml_free(root);
}

static void test_input_is_not_nul_terminated(void **state)
{
	/* exactly sized: any read past the end is a valgrind/ASan error */
	static const char text[] = "a = 12\nb = 1979-05-27\nc = tru";
	size_t len = sizeof(text) - 1;
	char *exact = malloc(len);
	struct toml_error err;
	struct toml_value *root;

	assert_non_null(exact);
	memcpy(exact, text, len);
	assert_null(toml_parse(exact, len, &err)); /* "tru" stops at the end */
	assert_int_equal(err.line, 3);
	root = toml_parse(exact, len - strlen("\nc = tru"), &err); /* ends with the date */
	assert_non_null(root);
	assert_string_equal(at(root, "b")->u.datetime, "1979-05-27");
	toml_free(root);
	free(exact);
}

static void test_empty_input_and_null_error(void **state)
{
	struct toml_value *root = toml_parse(NULL, 0, NULL);

	assert_non_null(root);
	assert_int_equal(root->type, TOML_TABLE);
	assert_int_equal(root->u.table.len, 0);
	toml_free(root);
	assert_null(toml_parse("=", 1, NULL));
	toml_free(NULL);
}

static char *append(char *to, const char *s)
{
	size_t len = strlen(s);

	memcpy(to, s, len);
	return to + len;
}

/* prefix, n copies of open, middle, n copies of close, suffix. */
static char *nested(const char *prefix, const char *open, size_t n, const char *middle,
                    const char *close, const char *suffix)
{
	char *s = malloc(strlen(prefix) + n * (strlen(open) + strlen(close)) + strlen(middle) +
	                 strlen(suffix) + 1);
	char *end;

	assert_non_null(s);
	end = append(s, prefix);
	for (size_t i = 0; i < n; i++)
		end = append(end, open);
	end = append(end, middle);
	for (size_t i = 0; i < n; i++)
		end = append(end, close);
	end = append(end, suffix);
	*end = '\0';
	return s;
}

static void assert_depth_verdict(char *text, bool accepted, const char *msg)
{
	struct toml_error err;
	struct toml_value *root = toml_parse(text, strlen(text), &err);

	if (accepted && !root)
		fail_msg("rejected %.40s...: %s", text, err.msg);
	if (!accepted && root)
		fail_msg("accepted %.40s...", text);
	if (!accepted)
		assert_string_equal(err.msg, msg);
	toml_free(root);
	free(text);
}

static void test_depth_limit(void **state)
{
	const char *too_deep = "nesting deeper than 128 levels";
	const size_t max = TOML_MAX_DEPTH;

	/* the root is level 0, so a value of the root's key is level 1 */
	assert_depth_verdict(nested("a = ", "[", max, "", "]", ""), true, NULL);
	assert_depth_verdict(nested("a = ", "[", max + 1, "", "]", ""), false, too_deep);
	assert_depth_verdict(nested("a = ", "{b=", max, "1", "}", ""), true, NULL);
	assert_depth_verdict(nested("a = ", "{b=", max + 1, "1", "}", ""), false, too_deep);
	/* [[a.a...]]: the tables of the leading parts, then the array and its element */
	assert_depth_verdict(nested("[[a", ".a", max - 2, "]]", "", ""), true, NULL);
	assert_depth_verdict(nested("[[a", ".a", max - 1, "]]", "", ""), false, too_deep);
	assert_depth_verdict(nested("[a", ".a", max - 1, "]", "", ""), true, NULL);
	assert_depth_verdict(nested("[a", ".a", max, "]", "", ""), false,
	                     "key has more than 128 parts");
	/* a dotted key counts from the depth of its section */
	assert_depth_verdict(nested("[a]\nb", ".b", max - 1, " = 1", "", ""), true, NULL);
	assert_depth_verdict(nested("[a.a]\nb", ".b", max - 1, " = 1", "", ""), false, too_deep);
	/* hostile depth fails fast instead of exhausting the stack */
	assert_depth_verdict(nested("a = ", "[", 1000000, "", "", ""), false, too_deep);
	assert_depth_verdict(nested("a = ", "{b=", 1000000, "", "", ""), false, too_deep);
}

static void test_values(void **state)
{
	struct toml_value *root = parse("i = -9223372036854775808\n"
	                                "h = 0xDEAD_beef\n"
	                                "o = 0o755\n"
	                                "b = 0b1010\n"
	                                "f = 6.626e-34\n"
	                                "g = -0.0\n"
	                                "inf = -inf\n"
	                                "nan = +nan\n"
	                                "yes = true\n"
	                                "lit = 'C:\\path'\n"
	                                "esc = \"tab\\there \\u00e9 \\U0001F600\"\n"
	                                "ml = '''\nfirst\n''''\n");

	assert_true(at(root, "i")->u.integer == INT64_MIN);
	assert_int_equal(at(root, "h")->u.integer, 0xdeadbeef);
	assert_int_equal(at(root, "o")->u.integer, 0755);
	assert_int_equal(at(root, "b")->u.integer, 10);
	assert_true(at(root, "f")->u.fp == 6.626e-34);
	assert_true(signbit(at(root, "g")->u.fp));
	assert_true(isinf(at(root, "inf")->u.fp) && at(root, "inf")->u.fp < 0);
	assert_true(isnan(at(root, "nan")->u.fp));
	assert_int_equal(at(root, "yes")->type, TOML_BOOL);
	assert_true(at(root, "yes")->u.boolean);
	assert_string_equal(at(root, "lit")->u.string.ptr, "C:\\path");
	assert_string_equal(at(root, "esc")->u.string.ptr, "tab\there \xc3\xa9 \xf0\x9f\x98\x80");
	assert_string_equal(at(root, "ml")->u.string.ptr, "first\n'");
	toml_free(root);
}

static void test_datetimes_are_normalised(void **state)
{
	struct toml_value *root = parse("odt = 1979-05-27 07:32:00.5z\n"
	                                "ldt = 1979-05-27t07:32:00\n"
	                                "ld = 2000-02-29\n"
	                                "lt = 23:59:60.999\n"
	                                "off = 1979-05-27T00:32:00-07:00\n");

	assert_int_equal(at(root, "odt")->type, TOML_DATETIME);
	assert_string_equal(at(root, "odt")->u.datetime, "1979-05-27T07:32:00.5Z");
	assert_int_equal(at(root, "ldt")->type, TOML_DATETIME_LOCAL);
	assert_string_equal(at(root, "ldt")->u.datetime, "1979-05-27T07:32:00");
	assert_int_equal(at(root, "ld")->type, TOML_DATE_LOCAL);
	assert_string_equal(at(root, "ld")->u.datetime, "2000-02-29");
	assert_int_equal(at(root, "lt")->type, TOML_TIME_LOCAL);
	assert_string_equal(at(root, "lt")->u.datetime, "23:59:60.999");
	assert_string_equal(at(root, "off")->u.datetime, "1979-05-27T00:32:00-07:00");
	toml_free(root);
}

static void test_table_rules_that_hold(void **state)
{
	static const char *const good[] = {
	        "[a.b]\n[a]\n",            /* implicit parent defined later */
	        "[a]\nb.c = 1\n[a.b.d]\n", /* sub-table of a dotted-key table */
	        "[fruit]\napple.color = 1\n[[fruit.apple.seeds]]\n",
	        "[[a]]\n[a.b]\n[[a]]\n[a.b]\n", /* one a.b per element */
	        "a = {b.c = 1, b.d = 2}\n",     /* dotted keys inside an inline table */
	        "a = [{b = 1}, {b = 2},]\n",    /* trailing comma in an array */
	        "\357\273\277a = 1\n",          /* a byte order mark (U+FEFF) at the start */
	};

	for (size_t i = 0; i < ARRAY_LEN(good); i++)
		toml_free(parse(good[i]));
}

/* Tens of thousands of keys in one table and of [[elements]]: every key
 * must be found again with its value and line, in definition order. */
static void test_large_document(void **state)
{
	enum { KEYS = 20000, ELEMENTS = 5000 };
	size_t cap = (size_t)KEYS * 40 + (size_t)ELEMENTS * 40, len = 0;
	char *text = malloc(cap);
	struct toml_value *root;
	const struct toml_value *items;
	char key[32];

	assert_non_null(text);
	for (int i = 0; i < KEYS; i++)
		len += (size_t)snprintf(text + len, cap - len, "key_%d = %d\n", i, i);
	for (int i = 0; i < ELEMENTS; i++)
		len += (size_t)snprintf(text + len, cap - len, "[[item]]\nn = %d\n", i);
	root = parse(text);
	free(text);
	assert_int_equal(root->u.table.len, KEYS + 1);
	for (int i = 0; i < KEYS; i++) {
		const struct toml_value *v;

		snprintf(key, sizeof(key), "key_%d", i);
		v = toml_get(root, key);
		assert_non_null(v);
		assert_int_equal(v->u.integer, i);
		assert_int_equal(v->line, i + 1);
		assert_string_equal(root->u.table.items[i].key, key);
	}
	assert_null(toml_get(root, "key_20000"));
	items = toml_get(root, "item");
	assert_int_equal(items->u.array.len, ELEMENTS);
	for (int i = 0; i < ELEMENTS; i++) {
		assert_int_equal(items->u.array.items[i]->line, KEYS + 1 + 2 * i);
		assert_int_equal(toml_get(items->u.array.items[i], "n")->u.integer, i);
	}
	toml_free(root);
}

static void test_toml_get(void **state)
{
	struct toml_value *root = parse("a = 1\n[t]\nb = 2\n");

	assert_null(toml_get(NULL, "a"));
	assert_null(toml_get(root, "missing"));
	assert_null(toml_get(toml_get(root, "a"), "x")); /* not a table */
	assert_int_equal(toml_get(root, "a")->u.integer, 1);
	assert_int_equal(toml_get(toml_get(root, "t"), "b")->u.integer, 2);
	toml_free(root);
}

static void test_type_names(void **state)
{
	assert_string_equal(toml_type_name(TOML_TABLE), "table");
	assert_string_equal(toml_type_name(TOML_ARRAY), "array");
	assert_string_equal(toml_type_name(TOML_STRING), "string");
	assert_string_equal(toml_type_name(TOML_INTEGER), "integer");
	assert_string_equal(toml_type_name(TOML_FLOAT), "float");
	assert_string_equal(toml_type_name(TOML_BOOL), "boolean");
	assert_string_equal(toml_type_name(TOML_DATETIME), "offset date-time");
	assert_string_equal(toml_type_name(TOML_DATETIME_LOCAL), "local date-time");
	assert_string_equal(toml_type_name(TOML_DATE_LOCAL), "local date");
	assert_string_equal(toml_type_name(TOML_TIME_LOCAL), "local time");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_lines_of_keys_and_tables),
	        cmocka_unit_test(test_lines_after_multi_line_values_and_crlf),
	        cmocka_unit_test(test_implicit_table_takes_header_line_once_defined),
	        cmocka_unit_test(test_keys_keep_definition_order),
	        cmocka_unit_test(test_error_lines_and_messages),
	        cmocka_unit_test(test_embedded_nul),
	        cmocka_unit_test(test_input_is_not_nul_terminated),
	        cmocka_unit_test(test_empty_input_and_null_error),
	        cmocka_unit_test(test_depth_limit),
	        cmocka_unit_test(test_values),
	        cmocka_unit_test(test_datetimes_are_normalised),
	        cmocka_unit_test(test_table_rules_that_hold),
	        cmocka_unit_test(test_large_document),
	        cmocka_unit_test(test_toml_get),
	        cmocka_unit_test(test_type_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
