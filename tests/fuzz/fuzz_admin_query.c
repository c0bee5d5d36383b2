/* libFuzzer: admin API request decoding (daemon/admin/admin_query.c,
 * daemon/admin/admin_route.c). The first byte picks the parameter name and the
 * size of the output buffer; the rest is used three ways: as a raw query
 * string, as a value percent-encoded into a query, and as a request path.
 * Invariants: out is always NUL-terminated inside outlen and is "" unless
 * QUERY_FOUND; a found value is never longer than the query and only comes
 * from a pair whose name is exactly the key; percent-encoding any value
 * (every byte, or only '%' and '&') and decoding it gives it back, unless it
 * holds a NUL or does not fit (QUERY_INVALID), and the first matching pair
 * wins over decoys; admin_route ignores trailing slashes, names only known
 * endpoints, and the Allow header lists whole method names within its
 * buffer. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_query.h"
#include "admin_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {"account", "destination", "seconds", "a"};
static const size_t outlens[] = {1, 2, 4, 16, 64, 321, 1024, 4096};

/* Whether query has a pair "key=..." (the key exactly, at a pair start). */
static bool has_pair(const char *query, size_t len, const char *key)
{
	size_t klen = strlen(key);

	for (size_t start = 0; start <= len;) {
		const char *amp = memchr(query + start, '&', len - start);
		size_t plen = amp ? (size_t)(amp - query - start) : len - start;

		if (plen > klen && memcmp(query + start, key, klen) == 0 &&
		    query[start + klen] == '=')
			return true;
		if (!amp)
			break;
		start += plen + 1;
	}
	return false;
}

static void check_query(const char *query, size_t len, const char *key, size_t outlen)
{
	char *out = malloc(outlen);
	enum query_get r;

	if (!out)
		return;
	r = admin_query_get(query, len, key, out, outlen);
	assert(memchr(out, '\0', outlen));
	if (r == QUERY_FOUND) {
		assert(strlen(out) <= len && has_pair(query, len, key));
	} else {
		assert(out[0] == '\0');
		assert((r == QUERY_ABSENT) == !has_pair(query, len, key));
	}
	free(out);
}

/* Encode value into a query between decoys and after it a second pair with
 * the same name, then check that the first one comes back. */
static void check_round_trip(const char *value, size_t n, const char *key, size_t outlen, bool all,
                             bool upper)
{
	static const char lower_hex[] = "0123456789abcdef", upper_hex[] = "0123456789ABCDEF";
	const char *hex = upper ? upper_hex : lower_hex;
	size_t klen = strlen(key), qlen = 0;
	char *query = malloc(6 * klen + 3 * n + 32), *out = malloc(outlen);
	enum query_get r;

	if (!query || !out)
		goto done;
	qlen += (size_t)sprintf(query, "x%s=1&%sx=2&%s&", key, key, key);
	memcpy(query + qlen, key, klen);
	qlen += klen;
	query[qlen++] = '=';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)value[i];
		if (all || c == '%' || c == '&') {
			query[qlen++] = '%';
			query[qlen++] = hex[c >> 4];
			query[qlen++] = hex[c & 15];
		} else {
			query[qlen++] = (char)c;
		}
	}
	qlen += (size_t)sprintf(query + qlen, "&%s=second", key);
	r = admin_query_get(query, qlen, key, out, outlen);
	if (memchr(value, '\0', n) || n + 1 > outlen) {
		assert(r == QUERY_INVALID && out[0] == '\0');
	} else {
		assert(r == QUERY_FOUND);
		assert(strlen(out) == n && memcmp(out, value, n) == 0);
	}
done:
	free(query);
	free(out);
}

static void check_route(const char *path, size_t small_len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} methods[] = {{ADMIN_GET, "GET"},
	               {ADMIN_POST, "POST"},
	               {ADMIN_PUT, "PUT"},
	               {ADMIN_DELETE, "DELETE"}};
	enum admin_endpoint ep = admin_route(path);
	size_t len = strlen(path);
	char allow[64], small[9];

	assert((int)ep >= 0 && ep <= ADMIN_UNKNOWN);
	assert(admin_needs_token(ep) == (ep != ADMIN_HEALTHZ));
	if (ep == ADMIN_UNKNOWN) {
		assert(admin_endpoint_methods(ep) == 0);
		assert(strcmp(admin_endpoint_name(ep), "other") == 0);
		return;
	}
	while (len > 1 && path[len - 1] == '/')
		len--;
	assert(strlen(admin_endpoint_name(ep)) == len &&
	       memcmp(admin_endpoint_name(ep), path, len) == 0);
	assert(admin_endpoint_methods(ep) != 0);
	admin_allow_header(ep, allow, sizeof(allow));
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		assert(!!strstr(allow, methods[i].name) ==
		       !!(admin_endpoint_methods(ep) & methods[i].bit));
	/* a short buffer: a prefix of whole names, still terminated */
	admin_allow_header(ep, small, small_len);
	assert(strlen(small) < small_len && strncmp(allow, small, strlen(small)) == 0);
	assert(!small[0] || allow[strlen(small)] == '\0' || allow[strlen(small)] == ',');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *key, *in = (const char *)data + 1;
	size_t outlen, n;
	char *copy, *path;

	if (size < 1)
		return 0;
	n = size - 1;
	key = keys[data[0] & 3];
	outlen = outlens[(data[0] >> 2) & 7];

	/* an exact-size copy, not terminated: ASan sees any read past it */
	copy = malloc(n ? n : 1);
	if (!copy)
		return 0;
	memcpy(copy, in, n);
	check_query(copy, n, key, outlen);
	check_round_trip(copy, n, key, outlen, data[0] & 32, data[0] & 64);
	free(copy);

	path = malloc(n + 1);
	if (!path)
		return 0;
	memcpy(path, in, n);
	path[n] = '\0';
	check_route(path, (size_t)(data[0] >> 5) + 1);
	free(path);
	return 0;
}
