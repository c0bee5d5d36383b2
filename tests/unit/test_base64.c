/* Strict base64 (RFC 4648 section 4) and unpadded base64url (section 5). */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

/* RFC 4648 section 10 */
static const struct {
	const char *plain, *b64, *url;
} vectors[] = {
        {"", "", ""},
        {"f", "Zg==", "Zg"},
        {"fo", "Zm8=", "Zm8"},
        {"foo", "Zm9v", "Zm9v"},
        {"foob", "Zm9vYg==", "Zm9vYg"},
        {"fooba", "Zm9vYmE=", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

#define N_VECTORS (sizeof(vectors) / sizeof(vectors[0]))

static long dec(const char *s, unsigned char *out)
{
	return base64_decode(s, strlen(s), out);
}

static long dec_url(const char *s, unsigned char *out)
{
	return base64url_decode(s, strlen(s), out);
}

static void test_rfc4648_encode(void **state)
{
	char out[16];
	size_t i;

	for (i = 0; i < N_VECTORS; i++) {
		size_t n = strlen(vectors[i].plain);

		assert_int_equal(base64_encoded_len(n), strlen(vectors[i].b64));
		assert_int_equal(base64_encode(vectors[i].plain, n, out), strlen(vectors[i].b64));
		assert_string_equal(out, vectors[i].b64);
		assert_int_equal(base64url_encode(vectors[i].plain, n, out),
		                 strlen(vectors[i].url));
		assert_string_equal(out, vectors[i].url);
	}
}

static void test_rfc4648_decode(void **state)
{
	unsigned char out[16];
	size_t i;

	for (i = 0; i < N_VECTORS; i++) {
		size_t n = strlen(vectors[i].plain);

		assert_int_equal(dec(vectors[i].b64, out), n);
		assert_memory_equal(out, vectors[i].plain, n);
		assert_int_equal(dec_url(vectors[i].url, out), n);
		assert_memory_equal(out, vectors[i].plain, n);
	}
}

/* The two alphabets differ only in values 62 and 63. */
static void test_alphabets(void **state)
{
	static const unsigned char bytes[] = {0xfb, 0xff, 0xbf};
	unsigned char out[8];
	char enc[8];

	base64_encode(bytes, 3, enc);
	assert_string_equal(enc, "+/+/");
	base64url_encode(bytes, 3, enc);
	assert_string_equal(enc, "-_-_");
	assert_int_equal(dec("+/+/", out), 3);
	assert_memory_equal(out, bytes, 3);
	assert_int_equal(dec_url("-_-_", out), 3);
	assert_memory_equal(out, bytes, 3);
	/* neither takes the other's characters */
	assert_int_equal(dec("-_-_", out), -1);
	assert_int_equal(dec_url("+/+/", out), -1);
}

static void test_rejects_whitespace(void **state)
{
	static const char *const bad[] = {
	        "Zm9v YmFy", "Zm9vYmFy\r\n", "Zm9vYmFy\n", " Zm9v", "Zm9v\tYmFy", "Zm9v\r\nYmFy",
	};
	unsigned char out[16];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dec(bad[i], out), -1);
	assert_int_equal(dec_url("Zm9v YmFy", out), -1);
}

static void test_rejects_bad_padding(void **state)
{
	static const char *const bad[] = {
	        "Zg=",      /* short */
	        "Zg",       /* missing padding */
	        "Zm8",      /* missing padding */
	        "Z===",     /* three pads */
	        "====",     /* nothing but pads */
	        "Zg=a",     /* pad before data */
	        "=Zg=",     /* leading pad */
	        "Zm9v====", /* a whole quantum of pads */
	        "Zg==Zg==", /* padding in the middle */
	        "Zm8=Zm9v", /* padding in the middle */
	        "Zg===",    /* wrong length */
	};
	unsigned char out[16];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dec(bad[i], out), -1);
	/* base64url as used in JWTs carries no padding at all */
	assert_int_equal(dec_url("Zg==", out), -1);
	assert_int_equal(dec_url("Zm8=", out), -1);
}

/* Section 3.5: the unused bits of the last quantum must be zero. */
static void test_rejects_noncanonical(void **state)
{
	unsigned char out[16];

	assert_int_equal(dec("Zh==", out), -1); /* 'h' = 33: low 4 bits set */
	assert_int_equal(dec("Zm9=", out), -1); /* '9' = 61: low 2 bits set */
	assert_int_equal(dec("Zg==", out), 1);
	assert_int_equal(dec("Zm8=", out), 2);
	assert_int_equal(dec_url("Zh", out), -1);
	assert_int_equal(dec_url("Zm9", out), -1);
}

static void test_rejects_wrong_length(void **state)
{
	unsigned char out[16];

	assert_int_equal(dec("Z", out), -1);
	assert_int_equal(dec("Zm9", out), -1);
	assert_int_equal(dec("Zm9vY", out), -1);
	assert_int_equal(dec("Zm9vYm", out), -1);
	/* one character past a quantum can carry no byte */
	assert_int_equal(dec_url("Z", out), -1);
	assert_int_equal(dec_url("Zm9vY", out), -1);
}

/* Exactly the 64 alphabet characters are accepted, in every position. */
static void test_every_byte_value(void **state)
{
	unsigned char out[8];
	int c, pos;

	for (pos = 0; pos < 4; pos++) {
		for (c = 0; c < 256; c++) {
			char s[5] = "AAAA";
			int in_alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			                  (c >= '0' && c <= '9') || c == '+' || c == '/';
			int in_url = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			             (c >= '0' && c <= '9') || c == '-' || c == '_';

			/* NUL included: it is data, never a terminator */
			s[pos] = (char)c;
			/* "AAA=" is fine, '=' anywhere else is not */
			if (c == '=' && pos == 3)
				continue;
			assert_int_equal(base64_decode(s, 4, out), in_alphabet ? 3 : -1);
			assert_int_equal(base64url_decode(s, 4, out), in_url ? 3 : -1);
		}
	}
}

/*
 * Every string the decoder accepts is the one the encoder writes for its
 * bytes: no two strings decode to the same bytes. Exhaustive over the two
 * padded tail shapes (64^2 and 64^3 strings).
 */
static void test_canonical_exhaustive(void **state)
{
	static const char alpha[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char out[4];
	char s[5], back[5];
	int a, b, c, ok2 = 0, ok3 = 0;

	for (a = 0; a < 64; a++) {
		for (b = 0; b < 64; b++) {
			long n;

			snprintf(s, sizeof(s), "%c%c==", alpha[a], alpha[b]);
			n = base64_decode(s, 4, out);
			if (n >= 0) {
				assert_int_equal(n, 1);
				base64_encode(out, 1, back);
				assert_string_equal(back, s);
				ok2++;
			}
			for (c = 0; c < 64; c++) {
				snprintf(s, sizeof(s), "%c%c%c=", alpha[a], alpha[b], alpha[c]);
				n = base64_decode(s, 4, out);
				if (n >= 0) {
					assert_int_equal(n, 2);
					base64_encode(out, 2, back);
					assert_string_equal(back, s);
					ok3++;
				}
			}
		}
	}
	assert_int_equal(ok2, 256);
	assert_int_equal(ok3, 65536);
}

/* Round trips of every length up to 300 over all byte values; the
 * decoder writes no more than the header promises. */
static void test_round_trip_and_bounds(void **state)
{
	unsigned char in[300], out[300 + 16];
	char enc[404 + 1];
	size_t n, i;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 167 + 13);
	for (n = 0; n <= sizeof(in); n++) {
		size_t elen = base64_encode(in, n, enc);
		size_t bound;

		assert_int_equal(elen, base64_encoded_len(n));
		assert_int_equal(strlen(enc), elen);
		bound = 3 * (elen / 4);
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(base64_decode(enc, elen, out), n);
		assert_memory_equal(out, in, n);
		for (i = bound; i < sizeof(out); i++)
			assert_int_equal(out[i], 0xa5);

		elen = base64url_encode(in, n, enc);
		assert_null(memchr(enc, '=', elen));
		bound = 3 * (elen + 3) / 4;
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(base64url_decode(enc, elen, out), n);
		assert_memory_equal(out, in, n);
		for (i = bound; i < sizeof(out); i++)
			assert_int_equal(out[i], 0xa5);
	}
}

/* A failed decode leaves nothing of the input behind in out. */
static void test_failure_cleanses_output(void **state)
{
	unsigned char out[16];
	size_t i;

	memset(out, 0xa5, sizeof(out));
	/* "secret" followed by an invalid character */
	assert_int_equal(dec("c2VjcmV0!A==", out), -1);
	for (i = 0; i < 6; i++)
		assert_int_not_equal(out[i], "secret"[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc4648_encode),
	        cmocka_unit_test(test_rfc4648_decode),
	        cmocka_unit_test(test_alphabets),
	        cmocka_unit_test(test_rejects_whitespace),
	        cmocka_unit_test(test_rejects_bad_padding),
	        cmocka_unit_test(test_rejects_noncanonical),
	        cmocka_unit_test(test_rejects_wrong_length),
	        cmocka_unit_test(test_every_byte_value),
	        cmocka_unit_test(test_canonical_exhaustive),
	        cmocka_unit_test(test_round_trip_and_bounds),
	        cmocka_unit_test(test_failure_cleanses_output),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
