/*
 * libFuzzer: HTTP request heads (daemon/parse/http_parse.c).
 *
 * Invariants beyond "no crash":
 *   - a parsed head lies within the input (head_len, every slice);
 *   - every proper prefix of a parsed head asks for more (one prefix per
 *     input, chosen by it): an error never depends on where reads split;
 *   - the head forwarded to a backend parses again to the same method,
 *     target, framing and length, whatever the forwarding options.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HEAD 16384

static bool within(struct http_str s, const uint8_t *buf, size_t len)
{
	return s.len == 0 ||
	       ((const uint8_t *)s.p >= buf && (const uint8_t *)s.p + s.len <= buf + len);
}

static bool same(struct http_str a, struct http_str b)
{
	return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static void check_forwarded(const struct http_head *h, const struct http_forward *f)
{
	size_t cap = 2 * h->head_len + 1024, n;
	char *out = malloc(cap);
	struct http_head h2;
	unsigned status;
	const char *why;

	assert(out);
	n = http_request_head_build(h, f, out, cap);
	assert(n > 0);
	enum http_parse_status r =
	        http_parse_request((const uint8_t *)out, n, 4 * MAX_HEAD, &h2, &status, &why);
	if (r == HTTP_PARSE_ERROR && status == 431) {
		/* the fields the proxy adds may cross the request limit */
		assert(h->n_fields + 4 > 96);
		free(out);
		return;
	}
	assert(r == HTTP_PARSE_OK);
	assert(h2.head_len == n);
	assert(same(h->method, h2.method));
	assert(same(h->target, h2.target));
	assert(same(h->path, h2.path));
	assert(same(h->query, h2.query));
	assert(h->version_minor == h2.version_minor);
	assert(h->framing == h2.framing);
	assert(h->content_length == h2.content_length);
	assert(h->upgrade_websocket == h2.upgrade_websocket);
	/* nothing the client may not say about itself survives */
	if (!f->trust_client_forwarded) {
		size_t forwarded = 0;
		for (size_t i = 0; i < h2.n_fields; i++) {
			struct http_str nm = h2.fields[i].name;
			assert(!(nm.len == 9 && strncasecmp(nm.p, "x-real-ip", 9) == 0));
			if (nm.len == 9 && strncasecmp(nm.p, "forwarded", 9) == 0)
				forwarded++;
		}
		assert(forwarded == (f->add_forwarded ? 1 : 0));
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_head h;
	unsigned status = 0;
	const char *why = NULL;
	uint8_t *buf = malloc(size ? size : 1); /* exact size: ASan sees over-reads */
	enum http_parse_status r;

	assert(buf);
	memcpy(buf, data, size);
	r = http_parse_request(buf, size, MAX_HEAD, &h, &status, &why);
	if (r == HTTP_PARSE_ERROR) {
		assert(why);
		assert(status == 400 || status == 414 || status == 431 || status == 501 ||
		       status == 505);
	} else if (r == HTTP_PARSE_NEED_MORE) {
		assert(size < MAX_HEAD);
	} else {
		assert(h.head_len > 0 && h.head_len <= size && h.head_len <= MAX_HEAD);
		assert(within(h.method, buf, h.head_len));
		assert(within(h.target, buf, h.head_len));
		assert(within(h.query, buf, h.head_len));
		assert(within(h.path, buf, h.head_len) || (h.path.len == 1 && h.path.p[0] == '/'));
		assert(h.n_fields <= 96);
		for (size_t i = 0; i < h.n_fields; i++) {
			assert(h.fields[i].name.len > 0);
			assert(within(h.fields[i].name, buf, h.head_len));
			assert(within(h.fields[i].value, buf, h.head_len));
		}
		assert(h.framing != HTTP_BODY_UNTIL_CLOSE);
		assert((h.framing == HTTP_BODY_LENGTH) == (h.content_length > 0));

		/* a proper prefix: more, never an error */
		struct http_head hp;
		size_t cut = size > 0 ? data[0] % h.head_len : 0;
		assert(http_parse_request(buf, cut, MAX_HEAD, &hp, &status, &why) ==
		       HTTP_PARSE_NEED_MORE);
		assert(http_parse_request(buf, h.head_len - 1, MAX_HEAD, &hp, &status, &why) ==
		       HTTP_PARSE_NEED_MORE);

		uint8_t opts = data[size - 1];
		struct http_forward f = {
		        .trust_client_forwarded = opts & 1,
		        .add_forwarded = opts & 2,
		        .client_ip = (opts & 4) ? "2001:db8::7" : "192.0.2.7",
		        .client_tls = opts & 8,
		        .drop_expect = opts & 16,
		};
		check_forwarded(&h, &f);
	}
	free(buf);
	return 0;
}
