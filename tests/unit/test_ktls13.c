/* HKDF-Expand-Label for TLS 1.3 kernel receive keys (RFC 8446 section 7.1). The
 * vectors are RFC 8448 section 3 (simple 1-RTT handshake): the server handshake
 * traffic secret and the write key and IV derived from it. The record count and the
 * kernel side are proven byte for byte in the vmtest guests
 * (tests/kernel/test_ktls_proxy.py). */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "ktls13.h"

static void unhex(const char *hex, uint8_t *out)
{
	for (size_t i = 0; hex[2 * i]; i++) {
		unsigned v;
		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static void test_rfc8448_server_handshake_key_and_iv(void **state)
{
	uint8_t secret[32], key[16], iv[12], want_key[16], want_iv[12];

	unhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38", secret);
	unhex("3fce516009c21727d0f2e4e86ee403bc", want_key);
	unhex("5d313eb2671276ee13000b30", want_iv);
	assert_true(ktls13_expand_label("SHA256", secret, sizeof(secret), "key", key, sizeof(key)));
	assert_true(ktls13_expand_label("SHA256", secret, sizeof(secret), "iv", iv, sizeof(iv)));
	assert_memory_equal(key, want_key, sizeof(key));
	assert_memory_equal(iv, want_iv, sizeof(iv));
}

static void test_label_too_long_is_refused(void **state)
{
	uint8_t secret[32] = {0}, out[16];
	char label[260];

	memset(label, 'x', sizeof(label) - 1);
	label[sizeof(label) - 1] = '\0';
	assert_false(
	        ktls13_expand_label("SHA256", secret, sizeof(secret), label, out, sizeof(out)));
}

static void test_sha384_lengths(void **state)
{
	/* AES-256-GCM-SHA384: a 48-byte secret gives a 32-byte key; a different label
	 * gives different bytes */
	uint8_t secret[48], key[32], iv[32];

	memset(secret, 0x5a, sizeof(secret));
	assert_true(ktls13_expand_label("SHA384", secret, sizeof(secret), "key", key, sizeof(key)));
	assert_true(ktls13_expand_label("SHA384", secret, sizeof(secret), "iv", iv, sizeof(iv)));
	assert_memory_not_equal(key, iv, sizeof(key));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rfc8448_server_handshake_key_and_iv),
	        cmocka_unit_test(test_label_too_long_is_refused),
	        cmocka_unit_test(test_sha384_lengths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
