/*
 * Query-string parameters (see admin_query.h).
 */
#include "admin_query.h"

#include <string.h>

#include "util.h"

static enum query_get decode(const char *v, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = v[i];
		int hi, lo;
		if (c == '%' && i + 2 < len && (hi = hex_digit(v[i + 1])) >= 0 &&
		    (lo = hex_digit(v[i + 2])) >= 0) {
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		/* a NUL would silently cut the identifier short further on */
		if (c == '\0' || o + 1 >= outlen)
			return QUERY_INVALID;
		out[o++] = c;
	}
	out[o] = '\0';
	return QUERY_FOUND;
}

enum query_get admin_query_get(const char *query, size_t len, const char *key, char *out,
                               size_t outlen)
{
	size_t klen = strlen(key);

	if (outlen == 0)
		return QUERY_INVALID;
	out[0] = '\0';
	if (!query)
		return QUERY_ABSENT;
	for (size_t start = 0; start <= len;) {
		const char *pair = query + start;
		const char *amp = memchr(pair, '&', len - start);
		size_t plen = amp ? (size_t)(amp - pair) : len - start;
		const char *eq = memchr(pair, '=', plen);

		if (eq && (size_t)(eq - pair) == klen && memcmp(pair, key, klen) == 0) {
			enum query_get r = decode(eq + 1, plen - klen - 1, out, outlen);
			if (r != QUERY_FOUND)
				out[0] = '\0';
			return r;
		}
		if (!amp)
			break;
		start += plen + 1;
	}
	return QUERY_ABSENT;
}
