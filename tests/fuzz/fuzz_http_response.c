/*
 * libFuzzer: backend response heads (daemon/parse/http_parse.c).
 *
 * The first byte picks the request method the response answers (GET,
 * HEAD, PUT, CONNECT) and whether the client connection is kept; the rest
 * is the response. Invariants: a parsed head lies within the input; the
 * framing follows RFC 9112 6.3 (no body for HEAD, 1xx, 204, 304; until
 * close is never kept alive); the head sent to the client parses again to
 * the same status, framing and length.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEAD 16384

static bool within(struct http_str s, const uint8_t *buf, size_t len)
{
	return s.len == 0 ||
	       ((const uint8_t *)s.p >= buf && (const uint8_t *)s.p + s.len <= buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = {"GET", "HEAD", "PUT", "CONNECT"};
	struct http_head h, h2;
	const char *why = NULL, *method;
	struct http_str m;
	uint8_t *buf;
	enum http_parse_status r;
	bool keep;

	if (size < 1)
		return 0;
	method = methods[data[0] & 3];
	keep = data[0] & 4;
	m = (struct http_str){method, strlen(method)};
	buf = malloc(size - 1 ? size - 1 : 1);
	assert(buf);
	memcpy(buf, data + 1, size - 1);
	r = http_parse_response(buf, size - 1, MAX_HEAD, m, &h, &why);
	if (r == HTTP_PARSE_ERROR) {
		assert(why);
	} else if (r == HTTP_PARSE_NEED_MORE) {
		assert(size - 1 < MAX_HEAD);
	} else {
		assert(h.response);
		assert(h.head_len > 0 && h.head_len <= size - 1 && h.head_len <= MAX_HEAD);
		assert(h.status >= 100 && h.status <= 599);
		assert(within(h.reason, buf, h.head_len));
		assert(h.n_fields <= HTTP_MAX_HEADERS);
		for (size_t i = 0; i < h.n_fields; i++) {
			assert(within(h.fields[i].name, buf, h.head_len));
			assert(within(h.fields[i].value, buf, h.head_len));
		}
		if (h.status < 200 || h.status == 204 || h.status == 304 ||
		    strcmp(method, "HEAD") == 0)
			assert(h.framing == HTTP_BODY_NONE);
		if (h.framing == HTTP_BODY_UNTIL_CLOSE)
			assert(!h.keep_alive);
		assert((h.framing == HTTP_BODY_LENGTH) == (h.content_length > 0));
		assert(!h.upgrade_websocket || h.status == 101);

		size_t cap = 2 * h.head_len + 256, n;
		char *out = malloc(cap);
		assert(out);
		n = http_response_head_build(&h, keep, out, cap);
		assert(n > 0);
		r = http_parse_response((const uint8_t *)out, n, 4 * MAX_HEAD, m, &h2, &why);
		if (r == HTTP_PARSE_ERROR && h.n_fields == HTTP_MAX_HEADERS) {
			/* our Connection field can be the 101st */
			free(out);
			free(buf);
			return 0;
		}
		assert(r == HTTP_PARSE_OK);
		assert(h2.head_len == n);
		assert(h2.status == h.status);
		assert(h2.framing == h.framing);
		assert(h2.content_length == h.content_length);
		assert(h2.upgrade_websocket == h.upgrade_websocket);
		assert(h2.event_stream == h.event_stream);
		if (h.status >= 200 && h.status != 101 && h.framing != HTTP_BODY_UNTIL_CLOSE)
			assert(h2.keep_alive == keep);
		free(out);
	}
	free(buf);
	return 0;
}
