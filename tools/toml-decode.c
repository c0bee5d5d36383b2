/*
 * toml-decode: TOML on stdin, toml-test "tagged JSON" on stdout.
 *
 * The decoder half of the toml-test protocol, so the conformance suite
 * (tests/toml/run.py) can drive our parser: tables become objects, arrays
 * arrays, and every scalar {"type": T, "value": "text"}. Exit 0 on success;
 * on a parse error print "toml-decode: line N: message" and exit 1.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

/* All of stdin; NULL on a read or allocation failure. */
static char *read_all(FILE *in, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *data = malloc(cap);

	while (data) {
		size_t got = fread(data + n, 1, cap - n, in);

		n += got;
		if (got == 0)
			break;
		if (n == cap) {
			char *bigger = cap <= SIZE_MAX / 2 ? realloc(data, cap * 2) : NULL;

			if (!bigger) {
				free(data);
				return NULL;
			}
			data = bigger;
			cap *= 2;
		}
	}
	if (data && ferror(in)) {
		free(data);
		return NULL;
	}
	*len = n;
	return data;
}

/* A JSON string: escape quotes, backslashes and every control character;
 * everything else is already valid UTF-8 and goes out as it is. */
static void put_json_string(FILE *out, const char *s, size_t len)
{
	putc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			putc(c, out);
	}
	putc('"', out);
}

/* The shortest text that reads back as the same double. */
static void format_float(double d, char *buf, size_t size)
{
	if (isnan(d)) {
		snprintf(buf, size, "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, size, d < 0 ? "-inf" : "inf");
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

/* The toml-test name of a scalar type. */
static const char *tagged_type(enum toml_type type)
{
	switch (type) {
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOL:
		return "bool";
	case TOML_DATETIME:
		return "datetime";
	case TOML_DATETIME_LOCAL:
		return "datetime-local";
	case TOML_DATE_LOCAL:
		return "date-local";
	case TOML_TIME_LOCAL:
		return "time-local";
	case TOML_TABLE:
	case TOML_ARRAY:
		break;
	}
	return "?";
}

static void put_scalar(FILE *out, const struct toml_value *v)
{
	char num[64];

	fprintf(out, "{\"type\": \"%s\", \"value\": ", tagged_type(v->type));
	switch (v->type) {
	case TOML_STRING:
		put_json_string(out, v->u.string.ptr, v->u.string.len);
		break;
	case TOML_INTEGER:
		fprintf(out, "\"%lld\"", (long long)v->u.integer);
		break;
	case TOML_FLOAT:
		format_float(v->u.fp, num, sizeof(num));
		fprintf(out, "\"%s\"", num);
		break;
	case TOML_BOOL:
		fprintf(out, "\"%s\"", v->u.boolean ? "true" : "false");
		break;
	default: /* the date and time kinds */
		put_json_string(out, v->u.datetime, strlen(v->u.datetime));
		break;
	}
	putc('}', out);
}

/* Recursion is bounded by the parser's TOML_MAX_DEPTH. */
static void put_value(FILE *out, const struct toml_value *v)
{
	if (v->type == TOML_TABLE) {
		putc('{', out);
		for (size_t i = 0; i < v->u.table.len; i++) {
			const struct toml_keyval *kv = &v->u.table.items[i];

			if (i > 0)
				putc(',', out);
			put_json_string(out, kv->key, kv->key_len);
			putc(':', out);
			put_value(out, kv->value);
		}
		putc('}', out);
	} else if (v->type == TOML_ARRAY) {
		putc('[', out);
		for (size_t i = 0; i < v->u.array.len; i++) {
			if (i > 0)
				putc(',', out);
			put_value(out, v->u.array.items[i]);
		}
		putc(']', out);
	} else {
		put_scalar(out, v);
	}
}

int main(void)
{
	struct toml_error err;
	struct toml_value *root;
	size_t len = 0;
	char *data = read_all(stdin, &len);

	if (!data) {
		fprintf(stderr, "toml-decode: cannot read standard input\n");
		return 1;
	}
	root = toml_parse(data, len, &err);
	free(data);
	if (!root) {
		fprintf(stderr, "toml-decode: line %u: %s\n", err.line, err.msg);
		return 1;
	}
	put_value(stdout, root);
	putc('\n', stdout);
	toml_free(root);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "toml-decode: cannot write standard output\n");
		return 1;
	}
	return 0;
}
