/* libFuzzer: strict base64 and unpadded base64url (daemon/parse/base64.c).
 * Invariants: decode(encode(x)) == x in both alphabets, with the encoded
 * length equal to base64_encoded_len (less the padding for base64url), the
 * output NUL-terminated and free of the other alphabet's characters; input
 * the strict decoders accept decodes to exactly 3/4 of its length (less the
 * padding) and re-encodes to itself (one encoding per byte string, RFC 4648
 * section 3.5); nothing is written past the documented output sizes. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	size_t elen = base64_encoded_len(size), pad = (3 - size % 3) % 3, n;
	/* output buffers of exactly the sizes sasl.h asks for, so that ASan
	 * holds the code to them */
	char *enc = malloc(elen + 1);
	unsigned char *dec = malloc(3 * (elen / 4));         /* base64_decode(enc) */
	unsigned char *dec_url = malloc(3 * (elen + 3) / 4); /* base64url_decode(enc) */
	unsigned char *out = malloc(3 * (size / 4));         /* base64_decode(data) */
	unsigned char *out_url = malloc(3 * (size + 3) / 4); /* base64url_decode(data) */
	char *re = malloc(elen + 1);
	long d;

	if (!enc || !dec || !dec_url || !out || !out_url || !re)
		goto done;

	/* bytes -> base64 -> bytes */
	n = base64_encode(data, size, enc);
	assert(n == elen && enc[n] == '\0' && strlen(enc) == n);
	assert(strspn(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
	       n - pad);
	d = base64_decode(enc, n, dec);
	assert(d == (long)size && memcmp(dec, data, size) == 0);

	/* bytes -> base64url -> bytes */
	n = base64url_encode(data, size, enc);
	assert(n == elen - pad && enc[n] == '\0' && strlen(enc) == n);
	assert(strspn(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
	       n);
	d = base64url_decode(enc, n, dec_url);
	assert(d == (long)size && memcmp(dec_url, data, size) == 0);

	/* the input as base64 text: accepted only in canonical form */
	d = base64_decode(text, size, out);
	if (d >= 0) {
		assert(size % 4 == 0);
		size_t p = size && text[size - 1] == '=' ? (text[size - 2] == '=' ? 2 : 1) : 0;
		assert((size_t)d == 3 * (size / 4) - p);
		assert(base64_encode(out, (size_t)d, re) == size && memcmp(re, text, size) == 0);
	}

	/* the input as base64url text */
	d = base64url_decode(text, size, out_url);
	if (d >= 0) {
		assert(size % 4 != 1 && (size_t)d == size * 3 / 4);
		assert(base64url_encode(out_url, (size_t)d, re) == size &&
		       memcmp(re, text, size) == 0);
	}
done:
	free(enc);
	free(dec);
	free(dec_url);
	free(out);
	free(out_url);
	free(re);
	return 0;
}
