/*
 * HTTP/1.1 framing (daemon/parse/http_parse.c): the request-smuggling
 * vectors a routing proxy must refuse, each with the status it must get
 * and where the rule comes from; the valid messages and what the proxy
 * learns from them; the chunked validator fed whole and byte by byte; the
 * heads sent on, checked line by line. Every parse reads a heap copy of
 * exactly the bytes given, so ASan sees any over-read.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

#define MAX_HEAD 65536

static enum http_parse_status parse_req_n(const char *s, size_t n, size_t max_head,
                                          struct http_head *h, unsigned *status, const char **why)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum http_parse_status r;

	assert_non_null(copy);
	memcpy(copy, s, n);
	r = http_parse_request(copy, n, max_head, h, status, why);
	free(copy);
	return r;
}

/* The head keeps pointers into the buffer: callers that inspect fields use
 * these, which parse the string in place. */
static enum http_parse_status parse_req(const char *s, struct http_head *h, unsigned *status)
{
	const char *why;
	return http_parse_request((const uint8_t *)s, strlen(s), MAX_HEAD, h, status, &why);
}

static enum http_parse_status parse_resp(const char *s, const char *method, struct http_head *h)
{
	const char *why;
	struct http_str m = {method, strlen(method)};
	return http_parse_response((const uint8_t *)s, strlen(s), MAX_HEAD, m, h, &why);
}

static bool str_is(struct http_str s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

#define assert_str(s, want)                                                                        \
	do {                                                                                       \
		if (!str_is((s), (want)))                                                          \
			fail_msg("got \"%.*s\", want \"%s\"", (int)(s).len, (s).p, (want));        \
	} while (0)

/* ---- request smuggling and malformed requests ---- */

struct vector {
	const char *what; /* the attack or rule */
	const char *req;
	size_t len; /* 0: strlen(req) */
	unsigned status;
};

#define H "Host: example.com\r\n"
/* a buffer with a NUL inside needs its length */
#define NUL_IN(s) s, sizeof(s) - 1

static const struct vector vectors[] = {
        /* CL.TE / TE.CL (Watchfire 2005; Kettle, "HTTP Desync Attacks",
         * 2019): RFC 9112 6.1 lets a server reject both together */
        {"CL.TE",
         "POST / HTTP/1.1\r\n" H "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\nG",
         0, 400},
        {"TE.CL",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
         "8\r\nSMUGGLED\r\n0\r\n\r\n",
         0, 400},
        /* TE.TE: obfuscated Transfer-Encoding that one side ignores (RFC
         * 9112 6.3: last coding not chunked -> 400) */
        {"TE.TE xchunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", 0, 400},
        {"TE chunked, identity",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, identity\r\n\r\n", 0, 400},
        {"TE space before colon (RFC 9112 5.1)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n", 0, 400},
        {"TE tab before colon (RFC 9112 5.1)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding\t: chunked\r\n\r\n", 0, 400},
        {"TE.TE two field lines",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n"
         "Transfer-Encoding: identity\r\n\r\n",
         0, 400},
        {"TE.TE two chunked lines",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n",
         0, 400},
        {"TE chunked twice (RFC 9112 7)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n", 0, 400},
        {"TE quoted", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \"chunked\"\r\n\r\n", 0, 400},
        {"TE with a parameter", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n", 0,
         400},
        {"TE gzip alone (RFC 9112 6.3)", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n",
         0, 400},
        {"TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \r\n\r\n", 0, 400},
        {"TE unknown coding before chunked (RFC 9112 6.1: 501)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: foo, chunked\r\n\r\n", 0, 501},
        {"TE in HTTP/1.0 (RFC 9112 6.1: faulty framing)",
         "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400},
        {"TE vertical tab (CTL in value)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\x0b"
         "chunked\r\n\r\n",
         0, 400},
        {"TE obs-fold (RFC 9112 5.2)",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n chunked\r\n\r\n", 0, 400},
        {"TE as Transfer_Encoding (CGI name mapping)",
         "POST / HTTP/1.1\r\n" H "Transfer_Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 0, 400},
        {"CL as content_length", "POST / HTTP/1.1\r\n" H "content_length: 4\r\n\r\n", 0, 400},
        /* Content-Length = 1*DIGIT (RFC 9110 8.6, RFC 9112 6.3) */
        {"duplicate CL, different",
         "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, 400},
        {"duplicate CL, equal",
         "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, 400},
        {"CL list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n", 0, 400},
        {"CL hex 0x10", "POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", 0, 400},
        {"CL +5", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", 0, 400},
        {"CL -1", "POST / HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n", 0, 400},
        {"CL inner space", "POST / HTTP/1.1\r\n" H "Content-Length: 1 0\r\n\r\n", 0, 400},
        {"CL huge (overflow)",
         "POST / HTTP/1.1\r\n" H "Content-Length: 18446744073709551616\r\n\r\n", 0, 400},
        {"CL empty", "POST / HTTP/1.1\r\n" H "Content-Length: \r\n\r\n", 0, 400},
        {"CL space before colon", "POST / HTTP/1.1\r\n" H "Content-Length : 5\r\n\r\n", 0, 400},
        {"CL decimal point", "POST / HTTP/1.1\r\n" H "Content-Length: 5.0\r\n\r\n", 0, 400},
        /* line endings (RFC 9112 2.2: a bare CR is an error; bare LF is
         * refused here, the RFC's MAY) */
        {"bare LF everywhere", "GET / HTTP/1.1\nHost: a\n\n", 0, 400},
        {"bare LF in a field line",
         "GET / HTTP/1.1\r\n" H "X: a\nTransfer-Encoding: chunked\r\n\r\n", 0, 400},
        {"bare LF ending the request line", "GET / HTTP/1.1\n" H "\r\n", 0, 400},
        {"bare CR in a field line",
         "GET / HTTP/1.1\r\n" H "X: a\rTransfer-Encoding: chunked\r\n\r\n", 0, 400},
        {"bare CR before the empty line", "GET / HTTP/1.1\r\n" H "\r\r\n", 0, 400},
        {"obs-fold (RFC 9112 5.2)", "GET / HTTP/1.1\r\n" H "X-A: a\r\n b\r\n\r\n", 0, 400},
        {"whitespace before the first field", "GET / HTTP/1.1\r\n " H "\r\n", 0, 400},
        {"NUL in a field value", NUL_IN("GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n"), 400},
        {"NUL in a field name", NUL_IN("GET / HTTP/1.1\r\n" H "X\0Y: a\r\n\r\n"), 400},
        {"DEL in a field value", "GET / HTTP/1.1\r\n" H "X: a\x7f\r\n\r\n", 0, 400},
        {"invalid UTF-8 in a field value", "GET / HTTP/1.1\r\n" H "X: \xc3\x28\r\n\r\n", 0, 400},
        {"overlong UTF-8 '/'", "GET / HTTP/1.1\r\n" H "X: \xc0\xaf\r\n\r\n", 0, 400},
        {"field name not a token (RFC 9110 5.1)", "GET / HTTP/1.1\r\n" H "X[1]: a\r\n\r\n", 0, 400},
        {"space in field name", "GET / HTTP/1.1\r\n" H "X Y: a\r\n\r\n", 0, 400},
        {"empty field name", "GET / HTTP/1.1\r\n" H ": a\r\n\r\n", 0, 400},
        {"field line without colon", "GET / HTTP/1.1\r\n" H "Foo\r\n\r\n", 0, 400},
        /* the request line (RFC 9112 3) */
        {"HTTP/0.9 request line", "GET /\r\n\r\n", 0, 400},
        {"two spaces after the method", "GET  / HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"two spaces before the version", "GET /  HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"space after the version", "GET / HTTP/1.1 \r\n" H "\r\n", 0, 400},
        {"tab as separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"method not a token", "G(ET / HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"empty method", " / HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"method longer than any", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n" H "\r\n",
         0, 501},
        {"lower-case HTTP-name (RFC 9112 2.3)", "GET / http/1.1\r\n" H "\r\n", 0, 400},
        {"version HTTP/1.10", "GET / HTTP/1.10\r\n" H "\r\n", 0, 400},
        {"version HTTP/1", "GET / HTTP/1\r\n" H "\r\n", 0, 400},
        {"version HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 0, 505},
        {"version HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 0, 505},
        {"HTTP/2 preface (RFC 9113 3.4)", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, 505},
        {"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\n" H "\r\n", 0, 501},
        {"asterisk-form with GET (RFC 9112 3.2.4)", "GET * HTTP/1.1\r\n" H "\r\n", 0, 400},
        /* the target */
        {"fragment in the target", "GET /a#b HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"control in the target", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"raw non-ASCII in the target", "GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"quote in the target", "GET /a\"b HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"bad percent-encoding", "GET /a%zz HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"truncated percent-encoding", "GET /a% HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"backslash in the path", "GET /a\\..\\admin HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"dot-segment in the path", "GET /public/../admin HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"encoded dot-segment", "GET /public/%2e%2E/admin HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"single dot segment", "GET /./admin HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"neither origin nor absolute form", "GET admin HTTP/1.1\r\n" H "\r\n", 0, 400},
        /* absolute-form (RFC 9112 3.2.2): the backend uses its authority */
        {"absolute-form, different Host", "GET http://other.example/ HTTP/1.1\r\n" H "\r\n", 0,
         400},
        {"absolute-form with userinfo (RFC 9110 4.2.4)",
         "GET http://user@example.com/ HTTP/1.1\r\nHost: user@example.com\r\n\r\n", 0, 400},
        {"absolute-form, other scheme", "GET ftp://example.com/ HTTP/1.1\r\n" H "\r\n", 0, 400},
        {"absolute-form without host", "GET http:///a HTTP/1.1\r\n" H "\r\n", 0, 400},
        /* Host (RFC 9112 3.2) */
        {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 0, 400},
        {"two Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400},
        {"two equal Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, 400},
        {"Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 0, 400},
        {"Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, 400},
        {"Host with a bad port", "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 0, 400},
        {"Host space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, 400},
        /* hop-by-hop abuse: Connection naming framing fields */
        {"Connection: Content-Length",
         "POST / HTTP/1.1\r\n" H "Connection: close, Content-Length\r\n"
         "Content-Length: 5\r\n\r\n",
         0, 400},
        {"Connection: Transfer-Encoding",
         "POST / HTTP/1.1\r\n" H "Connection: Transfer-Encoding\r\n\r\n", 0, 400},
        {"Connection: Host", "GET / HTTP/1.1\r\n" H "Connection: host\r\n\r\n", 0, 400},
        {"too many empty lines first",
         "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 0, 400},
};

static void test_smuggling_vectors(void **state)
{
	unsigned failures = 0;

	assert_true(sizeof(vectors) / sizeof(vectors[0]) >= 40);
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const struct vector *v = &vectors[i];
		size_t n = v->len ? v->len : strlen(v->req);
		struct http_head h;
		unsigned status = 0;
		const char *why = NULL;
		enum http_parse_status r = parse_req_n(v->req, n, MAX_HEAD, &h, &status, &why);

		if (r != HTTP_PARSE_ERROR || status != v->status) {
			print_error("vector %zu (%s): got %d/%u (%s), want error %u\n", i, v->what,
			            (int)r, status, why ? why : "-", v->status);
			failures++;
		} else if (!why) {
			print_error("vector %zu (%s): no reason given\n", i, v->what);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

/* Errors visible in the start line are reported before the head is
 * complete: the proxy need not wait for (or buffer) the rest. */
static void test_early_errors(void **state)
{
	static const struct {
		const char *req;
		unsigned status;
	} early[] = {
	        {"GET / HTTP/1.1\nHost", 400},
	        {"GET / HTTP/1.1\r\nHost: a\rX", 400},
	        {"PRI * HTTP/2.0\r\n", 505},
	        {"GET  / HTTP/1.1\r\n", 400},
	        {"GET / HTTP/3.0\r\nHost: a\r\n", 505},
	        {"\n", 400},
	};
	for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
		struct http_head h;
		unsigned status;
		const char *why;
		assert_int_equal(parse_req_n(early[i].req, strlen(early[i].req), MAX_HEAD, &h,
		                             &status, &why),
		                 HTTP_PARSE_ERROR);
		assert_int_equal(status, early[i].status);
	}
}

static void test_limits(void **state)
{
	struct http_head h;
	unsigned status;
	const char *why;
	char *big = malloc(MAX_HEAD * 2);
	size_t n;

	assert_non_null(big);
	/* target longer than HTTP_MAX_TARGET: 414 (RFC 9110 15.5.15) */
	n = (size_t)sprintf(big, "GET /");
	memset(big + n, 'a', HTTP_MAX_TARGET);
	n += HTTP_MAX_TARGET;
	n += (size_t)sprintf(big + n, " HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_int_equal(parse_req_n(big, n, MAX_HEAD, &h, &status, &why), HTTP_PARSE_ERROR);
	assert_int_equal(status, 414);
	/* ... even before the line ends */
	assert_int_equal(parse_req_n(big, HTTP_MAX_TARGET + 100, MAX_HEAD, &h, &status, &why),
	                 HTTP_PARSE_ERROR);
	assert_int_equal(status, 414);
	/* exactly HTTP_MAX_TARGET is fine */
	n = (size_t)sprintf(big, "GET /");
	memset(big + n, 'a', HTTP_MAX_TARGET - 1);
	n += HTTP_MAX_TARGET - 1;
	n += (size_t)sprintf(big + n, " HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_int_equal(parse_req_n(big, n, MAX_HEAD, &h, &status, &why), HTTP_PARSE_OK);
	assert_int_equal(h.target.len, HTTP_MAX_TARGET);

	/* a head that does not end within max_head: 431 (RFC 6585 5) */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\n");
	while (n < 4000)
		n += (size_t)sprintf(big + n,
		                     "X-Pad: 0123456789012345678901234567890123456789\r\n");
	assert_int_equal(parse_req_n(big, n, 2048, &h, &status, &why), HTTP_PARSE_ERROR);
	assert_int_equal(status, 431);
	assert_int_equal(parse_req_n(big, n, MAX_HEAD, &h, &status, &why), HTTP_PARSE_NEED_MORE);
	/* a complete head one byte over the limit */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	assert_int_equal(parse_req_n(big, n, n - 1, &h, &status, &why), HTTP_PARSE_ERROR);
	assert_int_equal(status, 431);
	assert_int_equal(parse_req_n(big, n, n, &h, &status, &why), HTTP_PARSE_OK);

	/* field count: 96 fields (room for the 4 the proxy adds under a
	 * backend's 100), 97 is 431 */
	for (int fields = 96; fields <= 97; fields++) {
		n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\n");
		for (int i = 1; i < fields; i++)
			n += (size_t)sprintf(big + n, "X-%d: v\r\n", i);
		n += (size_t)sprintf(big + n, "\r\n");
		enum http_parse_status r = parse_req_n(big, n, MAX_HEAD, &h, &status, &why);
		if (fields == 96) {
			assert_int_equal(r, HTTP_PARSE_OK);
			assert_int_equal(h.n_fields, 96);
		} else {
			assert_int_equal(r, HTTP_PARSE_ERROR);
			assert_int_equal(status, 431);
		}
	}
	free(big);
}

/* ---- valid requests ---- */

static void test_simple_get(void **state)
{
	const char *req = "GET /foo/bar?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n"
	                  "User-Agent:   curl/8   \r\nAccept:*/*\r\n\r\nNEXT";
	struct http_head h;
	unsigned status;

	assert_int_equal(parse_req(req, &h, &status), HTTP_PARSE_OK);
	assert_false(h.response);
	assert_int_equal(h.version_minor, 1);
	assert_str(h.method, "GET");
	assert_str(h.target, "/foo/bar?x=1&y=%20");
	assert_str(h.path, "/foo/bar");
	assert_str(h.query, "x=1&y=%20");
	assert_int_equal(h.n_fields, 3);
	assert_str(h.fields[1].name, "User-Agent");
	assert_str(h.fields[1].value, "curl/8"); /* OWS trimmed */
	assert_str(h.fields[2].value, "*/*");
	assert_int_equal(h.head_len, strlen(req) - 4);
	assert_int_equal(h.framing, HTTP_BODY_NONE);
	assert_true(h.keep_alive);
	assert_false(h.upgrade_websocket);
	assert_false(h.expect_continue);
	assert_non_null(http_field_get(&h, "USER-agent"));
	assert_null(http_field_get(&h, "Cookie"));
}

/* Every proper prefix of a valid head asks for more; the whole parses. */
static void test_prefixes_need_more(void **state)
{
	static const char *const reqs[] = {
	        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	        "\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
	        "GET / HTTP/1.0\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
		size_t n = strlen(reqs[k]);
		struct http_head h;
		unsigned status;
		const char *why;

		for (size_t i = 0; i < n; i++) {
			enum http_parse_status r =
			        parse_req_n(reqs[k], i, MAX_HEAD, &h, &status, &why);
			if (r != HTTP_PARSE_NEED_MORE)
				fail_msg("req %zu prefix %zu: %d (%s)", k, i, (int)r,
				         why ? why : "");
		}
		assert_int_equal(parse_req_n(reqs[k], n, MAX_HEAD, &h, &status, &why),
		                 HTTP_PARSE_OK);
		assert_int_equal(h.head_len, n);
	}
}

static void test_leading_empty_lines(void **state)
{
	/* RFC 9112 2.2: a server SHOULD ignore at least one empty line */
	const char *req = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
	struct http_head h;
	unsigned status;

	assert_int_equal(parse_req(req, &h, &status), HTTP_PARSE_OK);
	assert_int_equal(h.head_len, strlen(req));
	assert_str(h.method, "GET");
}

static void test_keep_alive_rules(void **state)
{
	static const struct {
		const char *req;
		bool keep_alive;
	} cases[] = {
	        /* RFC 9112 9.3: persistent by default in 1.1 ... */
	        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
	        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
	        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false},
	        /* ... and in 1.0 only with keep-alive */
	        {"GET / HTTP/1.0\r\n\r\n", false},
	        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
	        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
	        {"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_head h;
		unsigned status;
		assert_int_equal(parse_req(cases[i].req, &h, &status), HTTP_PARSE_OK);
		if (h.keep_alive != cases[i].keep_alive)
			fail_msg("case %zu: keep_alive %d", i, h.keep_alive);
	}
}

static void test_request_framing(void **state)
{
	struct http_head h;
	unsigned status;

	assert_int_equal(
	        parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_LENGTH);
	assert_int_equal(h.content_length, 5);
	/* leading zeros are still 1*DIGIT */
	assert_int_equal(
	        parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.content_length, 7);
	assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
	                           "18446744073709551615\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_true(h.content_length == UINT64_MAX);
	assert_int_equal(
	        parse_req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_NONE);
	assert_int_equal(
	        parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", &h,
	                  &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_CHUNKED);
	assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, "
	                           "chunked\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_CHUNKED);
	/* RFC 9110 5.6.1: empty list elements are ignored */
	assert_int_equal(
	        parse_req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked,\r\n\r\n", &h,
	                  &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_CHUNKED);
	/* a GET may carry a body */
	assert_int_equal(
	        parse_req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_LENGTH);
}

static void test_websocket_and_expect(void **state)
{
	struct http_head h;
	unsigned status;

	/* RFC 6455 4.1 */
	assert_int_equal(parse_req("GET /jmap/ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, "
	                           "Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: x\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_true(h.upgrade_websocket);
	/* a list would let the backend pick another protocol (h2c) */
	assert_int_equal(parse_req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
	                           "Upgrade: websocket, h2c\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);
	assert_int_equal(
	        parse_req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);
	assert_int_equal(parse_req("POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
	                           "Upgrade: websocket\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);
	assert_int_equal(parse_req("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: "
	                           "websocket\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);

	/* RFC 9110 10.1.1 */
	assert_int_equal(parse_req("PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nExpect: "
	                           "100-Continue\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_true(h.expect_continue);
	assert_int_equal(
	        parse_req("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_false(h.expect_continue); /* no content */
	assert_int_equal(parse_req("PUT / HTTP/1.0\r\nContent-Length: 9\r\nExpect: "
	                           "100-continue\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_false(h.expect_continue); /* ignored in HTTP/1.0 */
}

static void test_target_forms(void **state)
{
	struct http_head h;
	unsigned status;

	/* absolute-form whose authority is the Host */
	assert_int_equal(parse_req("GET HTTPS://Mail.Example.com/jmap?a=b HTTP/1.1\r\n"
	                           "Host: mail.example.com\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_str(h.path, "/jmap");
	assert_str(h.query, "a=b");
	assert_int_equal(
	        parse_req("GET http://a.example:8080 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", &h,
	                  &status),
	        HTTP_PARSE_OK);
	assert_str(h.path, "/");
	/* HTTP/1.0 needs no Host */
	assert_int_equal(parse_req("GET http://a.example/x HTTP/1.0\r\n\r\n", &h, &status),
	                 HTTP_PARSE_OK);
	assert_str(h.path, "/x");
	/* asterisk-form */
	assert_int_equal(parse_req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &h, &status),
	                 HTTP_PARSE_OK);
	assert_str(h.path, "*");
	/* what browsers send unencoded, and dots that are not segments */
	assert_int_equal(parse_req("GET /a/.well-known/x..y/...?q={1}|[2]^`\\ HTTP/1.1\r\nHost: "
	                           "[2001:db8::1]:443\r\n\r\n",
	                           &h, &status),
	                 HTTP_PARSE_OK);
	assert_str(h.path, "/a/.well-known/x..y/...");
	/* obs-text that is UTF-8 in a value, an empty Host (RFC 9112 3.2) */
	assert_int_equal(
	        parse_req("GET / HTTP/1.1\r\nHost:\r\nX-Name: Ren\xc3\xa9\r\n\r\n", &h, &status),
	        HTTP_PARSE_OK);
	assert_str(h.fields[1].value, "Ren\xc3\xa9");
}

static void test_list_has(void **state)
{
	struct http_str v = {" keep-alive ,, Upgrade,close", 28};

	assert_true(http_list_has(v, "upgrade"));
	assert_true(http_list_has(v, "keep-alive"));
	assert_true(http_list_has(v, "close"));
	assert_false(http_list_has(v, "keep"));
	assert_false(http_list_has((struct http_str){"", 0}, "close"));
}

/* ---- responses ---- */

static void test_responses(void **state)
{
	struct http_head h;
	const char *why;

	assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET", &h),
	                 HTTP_PARSE_OK);
	assert_true(h.response);
	assert_int_equal(h.status, 200);
	assert_str(h.reason, "OK");
	assert_int_equal(h.framing, HTTP_BODY_LENGTH);
	assert_int_equal(h.content_length, 12);
	assert_true(h.keep_alive);

	assert_int_equal(
	        parse_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", &h),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_CHUNKED);

	/* no length: until close, never kept alive (RFC 9112 6.3 item 8) */
	assert_int_equal(
	        parse_resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "GET", &h),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_UNTIL_CLOSE);
	assert_false(h.keep_alive);

	/* HEAD, 204, 304: no body whatever the fields say (RFC 9112 6.3) */
	assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", "HEAD", &h),
	                 HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_NONE);
	assert_true(h.keep_alive);
	assert_int_equal(parse_resp("HTTP/1.1 204 No Content\r\n\r\n", "DELETE", &h),
	                 HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_NONE);
	assert_int_equal(
	        parse_resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "GET", &h),
	        HTTP_PARSE_OK);
	assert_int_equal(h.framing, HTTP_BODY_NONE);

	/* no reason phrase, with or without its space */
	assert_int_equal(parse_resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", &h),
	                 HTTP_PARSE_OK);
	assert_int_equal(h.reason.len, 0);
	assert_int_equal(parse_resp("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET", &h),
	                 HTTP_PARSE_OK);

	/* HTTP/1.0 backend: keep-alive only when it says so */
	assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "GET", &h),
	                 HTTP_PARSE_OK);
	assert_false(h.keep_alive);
	assert_int_equal(parse_resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: "
	                            "keep-alive\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_true(h.keep_alive);

	/* event streams are relayed as they come */
	assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; "
	                            "charset=utf-8\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_true(h.event_stream);
	assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nContent-Type: text/event-streamer\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_false(h.event_stream);

	/* a backend's answer the proxy cannot frame is a 502 */
	static const char *const bad[] = {
	        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
	        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
	        "HTTP/1.1 99 Odd\r\n\r\n",
	        "HTTP/1.1 600 Odd\r\n\r\n",
	        "HTTP/1.1 2000 OK\r\n\r\n",
	        "HTTP/2.0 200 OK\r\n\r\n",
	        "HTTP/1.1  200 OK\r\n\r\n",
	        "http/1.1 200 OK\r\n\r\n",
	        "HTTP/1.1 200 O\x01K\r\n\r\n",
	        "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 1\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct http_str m = {"GET", 3};
		if (http_parse_response((const uint8_t *)bad[i], strlen(bad[i]), MAX_HEAD, m, &h,
		                        &why) != HTTP_PARSE_ERROR)
			fail_msg("bad response %zu accepted", i);
		assert_non_null(why);
	}
	assert_int_equal(parse_resp("HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", &h),
	                 HTTP_PARSE_ERROR);
}

/* 100 Continue and 103 Early Hints come before the answer: each is a
 * complete head, and the next one starts at head_len. */
static void test_interim_responses(void **state)
{
	const char *stream = "HTTP/1.1 100 Continue\r\n\r\n"
	                     "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
	                     "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
	const char *p = stream;
	unsigned seen[3];
	struct http_head h;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(parse_resp(p, "PUT", &h), HTTP_PARSE_OK);
		seen[i] = h.status;
		assert_int_equal(h.framing, HTTP_BODY_NONE);
		p += h.head_len;
	}
	assert_int_equal(seen[0], 100);
	assert_int_equal(seen[1], 103);
	assert_int_equal(seen[2], 201);
	assert_int_equal(*p, '\0');

	/* 101 with Upgrade: websocket ends HTTP on the connection */
	assert_int_equal(parse_resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
	                            "Upgrade: websocket\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_true(h.upgrade_websocket);
	assert_false(h.keep_alive);
	assert_int_equal(parse_resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
	                            "Upgrade: h2c\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);
	/* a 200 is not an upgrade, whatever it says */
	assert_int_equal(parse_resp("HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: "
	                            "websocket\r\nContent-Length: 0\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	assert_false(h.upgrade_websocket);
}

/* ---- chunked ---- */

struct chunk_case {
	const char *what;
	const char *body;
	enum http_chunk_status status; /* after feeding all of body */
	size_t used;                   /* for DONE */
};

static const struct chunk_case chunk_cases[] = {
        {"simple", "5\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_DONE, 15},
        {"upper-case hex, leading zeros", "000A\r\n0123456789\r\n00\r\n\r\n", HTTP_CHUNK_DONE, 24},
        {"pipelined bytes after the end", "1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n", HTTP_CHUNK_DONE,
         11},
        {"extensions (RFC 9112 7.1.1)", "5;a=b;c;d=\"x;\\\"y\"\r\nhello\r\n0;last\r\n\r\n",
         HTTP_CHUNK_DONE, 36},
        {"BWS around ; and = (RFC 9112 7.1.1)", "5 ; a = b\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_DONE,
         23},
        {"trailer fields", "0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53\r\n\r\n",
         HTTP_CHUNK_DONE, 48},
        {"16 hex digits (incomplete)", "FFFFFFFFFFFFFFFF\r\nabc", HTTP_CHUNK_MORE, 0},
        {"incomplete last chunk", "0\r\n", HTTP_CHUNK_MORE, 0},
        {"incomplete trailer", "0\r\nX: a\r\n", HTTP_CHUNK_MORE, 0},
        /* smuggling through the chunked coding */
        {"chunk size 0x5", "0x5\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"chunk size with leading space", " 5\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"chunk size with trailing space, no extension", "5 \r\nhello\r\n0\r\n\r\n",
         HTTP_CHUNK_ERROR, 0},
        {"negative chunk size", "-1\r\n", HTTP_CHUNK_ERROR, 0},
        {"empty chunk size", "\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"chunk size overflow (17 digits)", "10000000000000005\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"chunk size 'g'", "5g\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"missing CRLF after chunk data", "5\r\nhelloX\r\n0\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"chunk data longer than its size (TE.CL)", "3\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"LF-only chunk lines", "5\nhello\n0\n\n", HTTP_CHUNK_ERROR, 0},
        {"LF-only after chunk data", "5\r\nhello\n0\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"bare CR after chunk size", "5\rhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"LF in a chunk extension (funky chunks)", "5;a\nb\r\nhello\r\n0\r\n\r\n", HTTP_CHUNK_ERROR,
         0},
        {"CR in a quoted extension", "5;a=\"x\ry\"\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"extension without a name", "5;=b\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"extension value after a quote", "5;a=\"x\"y\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailing BWS without ';'", "5;a=b \r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"obs-text in an extension", "5;a=\xff\r\nhello\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer Content-Length (RFC 9110 6.5.1)", "0\r\nContent-Length: 5\r\n\r\n",
         HTTP_CHUNK_ERROR, 0},
        {"trailer Transfer-Encoding", "0\r\nTRANSFER-ENCODING: chunked\r\n\r\n", HTTP_CHUNK_ERROR,
         0},
        {"trailer Host", "0\r\nhost: evil\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer Authorization", "0\r\nAuthorization: Basic eDp5\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer space before colon", "0\r\nX : a\r\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer bare LF", "0\r\nX: a\n\r\n", HTTP_CHUNK_ERROR, 0},
        {"trailer NUL", NULL, HTTP_CHUNK_ERROR, 0}, /* filled in below */
        {"LF-only final line", "0\r\n\n", HTTP_CHUNK_ERROR, 0},
};

static enum http_chunk_status feed_all(const uint8_t *b, size_t n, size_t max_trailer, size_t step,
                                       size_t *total, const char **why)
{
	struct http_chunked c;
	enum http_chunk_status st = HTTP_CHUNK_MORE;
	size_t off = 0;

	http_chunked_init(&c, max_trailer);
	*total = 0;
	*why = NULL;
	while (off < n) {
		size_t len = step && n - off > step ? step : n - off, used;
		st = http_chunked_feed(&c, b + off, len, &used, why);
		*total += used;
		if (st != HTTP_CHUNK_MORE)
			return st;
		assert_int_equal(used, len);
		off += len;
	}
	return st;
}

static void test_chunked_cases(void **state)
{
	static const char trailer_nul[] = "0\r\nX: a\0b\r\n\r\n";
	unsigned failures = 0;

	for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
		const struct chunk_case *k = &chunk_cases[i];
		const char *body = k->body ? k->body : trailer_nul;
		size_t n = k->body ? strlen(body) : sizeof(trailer_nul) - 1;
		size_t one_used, step_used;
		const char *why1, *why2;
		enum http_chunk_status one, step;

		/* one feed, then one byte at a time: the same answer */
		one = feed_all((const uint8_t *)body, n, 1024, 0, &one_used, &why1);
		step = feed_all((const uint8_t *)body, n, 1024, 1, &step_used, &why2);
		if (one != k->status || (k->status == HTTP_CHUNK_DONE && one_used != k->used)) {
			print_error("chunk case %zu (%s): got %d used %zu (%s)\n", i, k->what,
			            (int)one, one_used, why1 ? why1 : "-");
			failures++;
		}
		if (one != step || one_used != step_used ||
		    (one == HTTP_CHUNK_ERROR && strcmp(why1, why2) != 0)) {
			print_error(
			        "chunk case %zu (%s): byte at a time differs: %d/%zu vs %d/%zu\n",
			        i, k->what, (int)one, one_used, (int)step, step_used);
			failures++;
		}
		if (one == HTTP_CHUNK_ERROR && !why1)
			failures++;
	}
	assert_int_equal(failures, 0);
}

static void test_chunked_limits(void **state)
{
	char line[HTTP_CHUNK_LINE_MAX + 16];
	size_t used;
	const char *why;

	/* an extension that fills the line limit exactly, then one more */
	memset(line, 0, sizeof(line));
	line[0] = '1';
	line[1] = ';';
	memset(line + 2, 'e', HTTP_CHUNK_LINE_MAX - 2);
	memcpy(line + HTTP_CHUNK_LINE_MAX, "\r\nx\r\n", 5);
	assert_int_equal(feed_all((uint8_t *)line, HTTP_CHUNK_LINE_MAX + 5, 0, 0, &used, &why),
	                 HTTP_CHUNK_MORE);
	line[HTTP_CHUNK_LINE_MAX] = 'e';
	assert_int_equal(feed_all((uint8_t *)line, HTTP_CHUNK_LINE_MAX + 5, 0, 0, &used, &why),
	                 HTTP_CHUNK_ERROR);
	assert_string_equal(why, "chunk line too long");

	/* the trailer section is bounded by max_trailer */
	const char *t = "0\r\nX-A: 123456789\r\n\r\n"; /* 16 bytes of trailer */
	assert_int_equal(feed_all((const uint8_t *)t, strlen(t), 16, 1, &used, &why),
	                 HTTP_CHUNK_DONE);
	assert_int_equal(feed_all((const uint8_t *)t, strlen(t), 15, 1, &used, &why),
	                 HTTP_CHUNK_ERROR);
	assert_string_equal(why, "trailer section too large");
	assert_int_equal(feed_all((const uint8_t *)"0\r\n\r\n", 5, 0, 0, &used, &why),
	                 HTTP_CHUNK_DONE);
}

/* The splice path: data bytes are moved without being looked at. */
static void test_chunked_skip(void **state)
{
	const char *body = "A\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
	struct http_chunked c;
	size_t used;
	const char *why;

	http_chunked_init(&c, 0);
	assert_int_equal(http_chunked_data_left(&c), 0);
	assert_int_equal(http_chunked_feed(&c, (const uint8_t *)body, 3, &used, &why),
	                 HTTP_CHUNK_MORE);
	assert_int_equal(http_chunked_data_left(&c), 10);
	http_chunked_skip(&c, 4);
	assert_int_equal(http_chunked_data_left(&c), 6);
	assert_int_equal(http_chunked_feed(&c, (const uint8_t *)body + 7, 2, &used, &why),
	                 HTTP_CHUNK_MORE);
	http_chunked_skip(&c, 100); /* clamped to the chunk */
	assert_int_equal(http_chunked_data_left(&c), 0);
	assert_int_equal(
	        http_chunked_feed(&c, (const uint8_t *)body + 13, strlen(body) - 13, &used, &why),
	        HTTP_CHUNK_DONE);
	assert_int_equal(used, strlen(body) - 13);
	/* done stays done, consuming nothing */
	assert_int_equal(http_chunked_feed(&c, (const uint8_t *)"x", 1, &used, &why),
	                 HTTP_CHUNK_DONE);
	assert_int_equal(used, 0);
}

/* ---- heads sent on ---- */

static void test_request_head_build(void **state)
{
	const char *req = "POST /jmap/?x=1 HTTP/1.1\r\n"
	                  "Host: mail.example.com\r\n"
	                  "Connection: keep-alive, X-Hop\r\n"
	                  "Keep-Alive: timeout=5\r\n"
	                  "X-Hop: secret\r\n"
	                  "Proxy-Connection: keep-alive\r\n"
	                  "TE: trailers\r\n"
	                  "Trailer: X-Sum\r\n"
	                  "Upgrade: h2c\r\n"
	                  "Proxy-Authorization: Basic eDp5\r\n"
	                  "Authorization: Bearer abc\r\n"
	                  "Forwarded: for=203.0.113.9\r\n"
	                  "X-Forwarded-For: 203.0.113.9\r\n"
	                  "X-Forwarded-Proto: http\r\n"
	                  "X-Forwarded-Host: evil.example\r\n"
	                  "X-Real-IP: 203.0.113.9\r\n"
	                  "Content-Length: 2\r\n"
	                  "Expect: 100-continue\r\n"
	                  "Content-Type: application/json\r\n\r\n";
	struct http_head h;
	unsigned status;
	char out[4096];
	size_t n;
	struct http_forward f = {.trust_client_forwarded = false,
	                         .add_forwarded = true,
	                         .client_ip = "192.0.2.7",
	                         .client_tls = true,
	                         .drop_expect = true};

	assert_int_equal(parse_req(req, &h, &status), HTTP_PARSE_OK);
	n = http_request_head_build(&h, &f, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "POST /jmap/?x=1 HTTP/1.1\r\n"
	                         "Host: mail.example.com\r\n"
	                         "Authorization: Bearer abc\r\n"
	                         "Content-Length: 2\r\n"
	                         "Content-Type: application/json\r\n"
	                         "Forwarded: for=192.0.2.7;proto=https\r\n"
	                         "X-Forwarded-For: 192.0.2.7\r\n"
	                         "Connection: keep-alive\r\n\r\n");

	/* trusted balancer in front: its chain is extended; IPv6 quoted
	 * (RFC 7239 6) */
	f.trust_client_forwarded = true;
	f.client_ip = "2001:db8::7";
	f.client_tls = false;
	f.drop_expect = false;
	n = http_request_head_build(&h, &f, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "POST /jmap/?x=1 HTTP/1.1\r\n"
	                         "Host: mail.example.com\r\n"
	                         "Authorization: Bearer abc\r\n"
	                         "X-Forwarded-Proto: http\r\n"
	                         "X-Forwarded-Host: evil.example\r\n"
	                         "X-Real-IP: 203.0.113.9\r\n"
	                         "Content-Length: 2\r\n"
	                         "Expect: 100-continue\r\n"
	                         "Content-Type: application/json\r\n"
	                         "Forwarded: for=203.0.113.9, for=\"[2001:db8::7]\";proto=http\r\n"
	                         "X-Forwarded-For: 203.0.113.9, 2001:db8::7\r\n"
	                         "Connection: keep-alive\r\n\r\n");

	/* trusted, nothing added: passed on as they came */
	f.add_forwarded = false;
	n = http_request_head_build(&h, &f, out, sizeof(out));
	out[n] = '\0';
	assert_non_null(strstr(out, "\r\nForwarded: for=203.0.113.9\r\n"));
	assert_non_null(strstr(out, "\r\nX-Forwarded-For: 203.0.113.9\r\n"));

	/* not trusted, nothing added: none of the client's claims */
	f.trust_client_forwarded = false;
	n = http_request_head_build(&h, &f, out, sizeof(out));
	out[n] = '\0';
	assert_null(strstr(out, "Forwarded"));
	assert_null(strstr(out, "X-Real-IP"));

	/* too small, or an address that is not one: 0 */
	f.add_forwarded = true;
	f.client_ip = "192.0.2.7";
	assert_int_equal(http_request_head_build(&h, &f, out, n), 0);
	f.client_ip = "192.0.2.7\r\nX-Evil: 1";
	assert_int_equal(http_request_head_build(&h, &f, out, sizeof(out)), 0);
	f.client_ip = NULL;
	assert_int_equal(http_request_head_build(&h, &f, out, sizeof(out)), 0);
}

/* More Connection options than the builder gathers at once: the fields
 * they name are still dropped. */
static void test_request_head_build_many_options(void **state)
{
	char req[2048], out[4096];
	size_t n = 0;
	struct http_head h;
	unsigned status;
	struct http_forward f = {.client_ip = "127.0.0.1"};

	n += (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: a\r\nConnection: ");
	for (int i = 0; i < 70; i++)
		n += (size_t)sprintf(req + n, "o%d, ", i);
	n += (size_t)sprintf(req + n, "X-Drop\r\nX-Drop: 1\r\nO3: 2\r\nX-Keep: 3\r\n\r\n");
	assert_int_equal(parse_req(req, &h, &status), HTTP_PARSE_OK);
	n = http_request_head_build(&h, &f, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "GET / HTTP/1.1\r\nHost: a\r\nX-Keep: 3\r\nConnection: "
	                         "keep-alive\r\n\r\n");
}

static void test_request_head_build_websocket(void **state)
{
	const char *req = "GET /jmap/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
	                  "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                  "Sec-WebSocket-Version: 13\r\n\r\n";
	struct http_head h, again;
	unsigned status;
	char out[1024];
	struct http_forward f = {.add_forwarded = false, .client_ip = "127.0.0.1"};
	size_t n;

	assert_int_equal(parse_req(req, &h, &status), HTTP_PARSE_OK);
	n = http_request_head_build(&h, &f, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "GET /jmap/ws HTTP/1.1\r\nHost: a\r\n"
	                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                         "Sec-WebSocket-Version: 13\r\n"
	                         "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
	assert_int_equal(parse_req(out, &again, &status), HTTP_PARSE_OK);
	assert_true(again.upgrade_websocket);

	/* HTTP/1.0 is passed on as 1.0: the backend then never answers
	 * chunked to a client that cannot read it (RFC 9112 7.1) */
	assert_int_equal(parse_req("GET /x HTTP/1.0\r\n\r\n", &h, &status), HTTP_PARSE_OK);
	n = http_request_head_build(&h, &f, out, sizeof(out));
	out[n] = '\0';
	assert_string_equal(out, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
}

static void test_response_head_build(void **state)
{
	const char *resp = "HTTP/1.0 200 OK\r\nServer: stalwart\r\nConnection: close, X-Hop\r\n"
	                   "X-Hop: 1\r\nKeep-Alive: timeout=3\r\nProxy-Authenticate: Basic\r\n"
	                   "Upgrade: h2c\r\nContent-Length: 3\r\n\r\n";
	struct http_head h;
	char out[1024];
	size_t n;

	assert_int_equal(parse_resp(resp, "GET", &h), HTTP_PARSE_OK);
	n = http_response_head_build(&h, true, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	/* RFC 9110 6.2: an intermediary sends its own version */
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nServer: stalwart\r\nContent-Length: 3\r\n"
	                         "Connection: keep-alive\r\n\r\n");
	n = http_response_head_build(&h, false, out, sizeof(out));
	out[n] = '\0';
	assert_non_null(strstr(out, "\r\nConnection: close\r\n\r\n"));
	assert_int_equal(http_response_head_build(&h, false, out, 20), 0);

	assert_int_equal(parse_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                            "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
	                            "GET", &h),
	                 HTTP_PARSE_OK);
	n = http_response_head_build(&h, true, out, sizeof(out));
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                         "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n");

	assert_int_equal(parse_resp("HTTP/1.1 100 Continue\r\n\r\n", "PUT", &h), HTTP_PARSE_OK);
	n = http_response_head_build(&h, true, out, sizeof(out));
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 100 Continue\r\n\r\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_smuggling_vectors),
	        cmocka_unit_test(test_early_errors),
	        cmocka_unit_test(test_limits),
	        cmocka_unit_test(test_simple_get),
	        cmocka_unit_test(test_prefixes_need_more),
	        cmocka_unit_test(test_leading_empty_lines),
	        cmocka_unit_test(test_keep_alive_rules),
	        cmocka_unit_test(test_request_framing),
	        cmocka_unit_test(test_websocket_and_expect),
	        cmocka_unit_test(test_target_forms),
	        cmocka_unit_test(test_list_has),
	        cmocka_unit_test(test_responses),
	        cmocka_unit_test(test_interim_responses),
	        cmocka_unit_test(test_chunked_cases),
	        cmocka_unit_test(test_chunked_limits),
	        cmocka_unit_test(test_chunked_skip),
	        cmocka_unit_test(test_request_head_build),
	        cmocka_unit_test(test_request_head_build_many_options),
	        cmocka_unit_test(test_request_head_build_websocket),
	        cmocka_unit_test(test_response_head_build),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
