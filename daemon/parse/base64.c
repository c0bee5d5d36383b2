/*
 * Strict base64 (RFC 4648 section 4) and unpadded base64url (section 5).
 *
 * What goes through here is mostly passwords and bearer tokens, so the
 * character <-> value mapping is done with arithmetic masks instead of table
 * lookups or branches on the data: neither the cache nor the branch
 * predictor learns anything about the secret. Only the input's length and
 * its validity (a yes/no at the end) leave a trace.
 */
#include "sasl.h"

#include <stdint.h>

#include <openssl/crypto.h>

/* All ones when lo <= x <= hi, zero otherwise; x, lo and hi are below 256,
 * so an out-of-range difference wraps and sets the top bit. */
static uint32_t range_mask(uint32_t x, uint32_t lo, uint32_t hi)
{
	return 0u - ((((x - lo) | (hi - x)) >> 31) ^ 1u);
}

/* The 6-bit value of one character, or -1 when it is not in the alphabet
 * whose last two characters are c62 and c63. */
static int32_t char_value(unsigned char c, unsigned char c62, unsigned char c63)
{
	uint32_t x = c, v = 0, ok = 0, m;

	m = range_mask(x, 'A', 'Z');
	v |= m & (x - 'A');
	ok |= m;
	m = range_mask(x, 'a', 'z');
	v |= m & (x - 'a' + 26);
	ok |= m;
	m = range_mask(x, '0', '9');
	v |= m & (x - '0' + 52);
	ok |= m;
	m = range_mask(x, c62, c62);
	v |= m & 62;
	ok |= m;
	m = range_mask(x, c63, c63);
	v |= m & 63;
	ok |= m;
	return (int32_t)(v & ok) - (int32_t)(~ok & 1u);
}

/* The character for a 6-bit value. */
static char value_char(uint32_t v, unsigned char c62, unsigned char c63)
{
	uint32_t c;

	c = range_mask(v, 0, 25) & (v + 'A');
	c |= range_mask(v, 26, 51) & (v - 26 + 'a');
	c |= range_mask(v, 52, 61) & (v - 52 + '0');
	c |= range_mask(v, 62, 62) & c62;
	c |= range_mask(v, 63, 63) & c63;
	return (char)c;
}

static size_t encode(const unsigned char *in, size_t n, char *out, unsigned char c62,
                     unsigned char c63, int pad)
{
	size_t o = 0, i;

	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = value_char(w >> 18, c62, c63);
		out[o++] = value_char((w >> 12) & 63, c62, c63);
		out[o++] = value_char((w >> 6) & 63, c62, c63);
		out[o++] = value_char(w & 63, c62, c63);
	}
	if (n - i == 1) {
		uint32_t w = (uint32_t)in[i] << 16;

		out[o++] = value_char(w >> 18, c62, c63);
		out[o++] = value_char((w >> 12) & 63, c62, c63);
		if (pad) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (n - i == 2) {
		uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = value_char(w >> 18, c62, c63);
		out[o++] = value_char((w >> 12) & 63, c62, c63);
		out[o++] = value_char((w >> 6) & 63, c62, c63);
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/*
 * Decode m alphabet characters (no padding among them). A tail of 2 or 3
 * characters carries 1 or 2 bytes; its unused low bits must be zero, or
 * two different strings would decode to the same bytes (section 3.5).
 * Invalid characters are noticed at the end, not where they stand.
 */
static long decode(const char *in, size_t m, unsigned char *out, unsigned char c62,
                   unsigned char c63)
{
	const unsigned char *s = (const unsigned char *)in;
	int32_t bad = 0;
	size_t o = 0, i;

	if (m % 4 == 1)
		return -1;
	for (i = 0; i + 4 <= m; i += 4) {
		int32_t a = char_value(s[i], c62, c63), b = char_value(s[i + 1], c62, c63);
		int32_t c = char_value(s[i + 2], c62, c63), d = char_value(s[i + 3], c62, c63);
		uint32_t w = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;

		bad |= a | b | c | d;
		out[o++] = (unsigned char)(w >> 16);
		out[o++] = (unsigned char)(w >> 8);
		out[o++] = (unsigned char)w;
	}
	if (m - i == 2) {
		int32_t a = char_value(s[i], c62, c63), b = char_value(s[i + 1], c62, c63);

		bad |= a | b | -(int32_t)((uint32_t)b & 0x0f);
		out[o++] = (unsigned char)((uint32_t)a << 2 | (uint32_t)b >> 4);
	} else if (m - i == 3) {
		int32_t a = char_value(s[i], c62, c63), b = char_value(s[i + 1], c62, c63);
		int32_t c = char_value(s[i + 2], c62, c63);

		bad |= a | b | c | -(int32_t)((uint32_t)c & 0x03);
		out[o++] = (unsigned char)((uint32_t)a << 2 | (uint32_t)b >> 4);
		out[o++] = (unsigned char)((uint32_t)b << 4 | (uint32_t)c >> 2);
	}
	if (bad < 0) {
		/* what was written may be half a password */
		OPENSSL_cleanse(out, o);
		return -1;
	}
	return (long)o;
}

size_t base64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

size_t base64_encode(const void *in, size_t n, char *out)
{
	return encode(in, n, out, '+', '/', 1);
}

size_t base64url_encode(const void *in, size_t n, char *out)
{
	return encode(in, n, out, '-', '_', 0);
}

long base64_decode(const char *in, size_t n, unsigned char *out)
{
	size_t pad = 0;

	if (n % 4 != 0)
		return -1;
	/* '=' only as the last one or two characters; anywhere else it fails
	 * as a character outside the alphabet */
	if (n > 0 && in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	return decode(in, n - pad, out, '+', '/');
}

long base64url_decode(const char *in, size_t n, unsigned char *out)
{
	return decode(in, n, out, '-', '_');
}
