/*
 * libFuzzer: the chunked coding validator (daemon/parse/http_parse.c).
 *
 * Input: byte 0 picks the split point, byte 1 the trailer limit, the rest
 * is the body. Invariant: where the reads split cannot change the answer.
 * One feed, two feeds split at the chosen point, one byte per feed, and a
 * run that skips chunk data (the splice path) must all agree on the
 * status, on how many bytes belong to the body and on the reason.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
	enum http_chunk_status st;
	size_t used; /* bytes consumed before DONE/ERROR, or all */
	const char *why;
};

/* Feed buf in pieces of at most step bytes (0: one piece); when skip is
 * set, chunk data is passed over with http_chunked_skip. */
static struct outcome run(const uint8_t *buf, size_t n, size_t max_trailer, size_t split,
                          size_t step, bool skip)
{
	struct http_chunked c;
	struct outcome o = {HTTP_CHUNK_MORE, 0, NULL};
	size_t off = 0;

	http_chunked_init(&c, max_trailer);
	while (off < n) {
		size_t len = n - off, used;

		if (skip && http_chunked_data_left(&c) > 0) {
			uint64_t left = http_chunked_data_left(&c);
			size_t k = left < len ? (size_t)left : len;
			http_chunked_skip(&c, k);
			off += k;
			o.used += k;
			continue;
		}
		if (split && off < split && split - off < len)
			len = split - off;
		if (step && step < len)
			len = step;
		o.st = http_chunked_feed(&c, buf + off, len, &used, &o.why);
		assert(used <= len);
		o.used += used;
		if (o.st != HTTP_CHUNK_MORE) {
			if (o.st == HTTP_CHUNK_ERROR)
				assert(o.why);
			return o;
		}
		assert(used == len);
		off += len;
	}
	return o;
}

static void same(struct outcome a, struct outcome b)
{
	assert(a.st == b.st);
	assert(a.used == b.used);
	if (a.st == HTTP_CHUNK_ERROR)
		assert(strcmp(a.why, b.why) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	const uint8_t *body = data + 2;
	size_t n = size - 2, split = n ? data[0] % (n + 1) : 0, max_trailer = data[1] * 4u;
	uint8_t *buf = malloc(n ? n : 1);

	assert(buf);
	memcpy(buf, body, n);
	struct outcome whole = run(buf, n, max_trailer, 0, 0, false);
	same(whole, run(buf, n, max_trailer, split, 0, false));
	same(whole, run(buf, n, max_trailer, 0, 1, false));
	same(whole, run(buf, n, max_trailer, split, 0, true));
	if (whole.st == HTTP_CHUNK_DONE) {
		/* the body ends with the CRLF of the trailer section, and exactly
		 * those bytes are a complete body */
		assert(whole.used >= 5 && buf[whole.used - 2] == '\r' &&
		       buf[whole.used - 1] == '\n');
		struct outcome exact = run(buf, whole.used, max_trailer, 0, 0, false);
		assert(exact.st == HTTP_CHUNK_DONE && exact.used == whole.used);
	}
	free(buf);
	return 0;
}
