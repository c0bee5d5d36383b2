/* Small helpers shared by every module (see util.h). */
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

bool parse_duration_ms(const char *s, uint64_t *ms)
{
	const char *p = s;
	uint64_t n = 0, mult;

	if (!s || !*s)
		return false;
	while (*p >= '0' && *p <= '9') {
		if (n > UINT64_MAX / 10 - 10)
			return false;
		n = n * 10 + (uint64_t)(*p - '0');
		p++;
	}
	if (p == s)
		return false;
	if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (*p == '\0' || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(p, "d") == 0)
		mult = 86400ull * 1000;
	else
		return false;
	if (n > UINT64_MAX / mult)
		return false;
	*ms = n * mult;
	return true;
}

uint64_t now_ms(void)
{
	return now_us() / 1000;
}

uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fputs("mailspliced: out of memory\n", stderr);
		abort();
	}
	return p;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xcalloc(1, n + 1);
	memcpy(p, s, n);
	return p;
}

size_t str_copy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);
	if (size) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t ascii_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	if (len < n)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char a = s[i], b = prefix[i];
		if (a >= 'A' && a <= 'Z')
			a = (char)(a - 'A' + 'a');
		if (b >= 'A' && b <= 'Z')
			b = (char)(b - 'A' + 'a');
		if (a != b)
			return 0;
	}
	return n;
}

bool const_time_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char diff = alen != blen;
	size_t n = alen < blen ? alen : blen;

	for (size_t i = 0; i < n; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

/* Decimal digits only, at most max: strtoul would also take leading
 * blanks and a sign (" 25", "+25", "-0"), which no operator means. */
static bool parse_decimal(const char *s, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			return false;
	}
	*out = v;
	return true;
}

/* Port 0 would bind an ephemeral port or connect nowhere: never meant. */
static bool parse_port(const char *s, uint16_t *port)
{
	unsigned long v;

	if (!parse_decimal(s, 65535, &v) || v == 0)
		return false;
	*port = (uint16_t)v;
	return true;
}

bool parse_sockaddr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	uint16_t port;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
			return false;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		if (!parse_port(close + 2, &port))
			return false;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return false;
		*len = sizeof(*sin6);
		return true;
	}
	colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return false;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!parse_port(colon + 1, &port))
		return false;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	if (strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return false;
	*len = sizeof(*sin);
	return true;
}

bool parse_cidr(const char *s, struct cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash;
	unsigned long prefix;

	if (str_copy(buf, s, sizeof(buf)) >= sizeof(buf))
		return false;
	memset(out, 0, sizeof(*out));
	slash = strchr(buf, '/');
	if (slash)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		prefix = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		prefix = 128;
	} else {
		return false;
	}
	if (slash) {
		if (!parse_decimal(slash, prefix, &prefix))
			return false;
	}
	out->prefix = (unsigned)prefix;
	return true;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;
	if (memcmp(a, b, bytes) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		return (a[bytes] & mask) == (b[bytes] & mask);
	}
	return true;
}

bool cidr_match(const struct cidr *c, const struct sockaddr_storage *ss)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		if (c->family != AF_INET)
			return false;
		return prefix_match(c->addr, (const uint8_t *)&sin->sin_addr, c->prefix);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		const uint8_t *a = sin6->sin6_addr.s6_addr;
		/* an IPv4 client on a dual-stack socket matches IPv4 ranges */
		if (c->family == AF_INET)
			return memcmp(a, v4mapped, 12) == 0 &&
			       prefix_match(c->addr, a + 12, c->prefix);
		return prefix_match(c->addr, a, c->prefix);
	}
	return false;
}

const char *sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "unknown");
	}
	return buf;
}

void session_id_new(char out[17])
{
	static const char alphabet[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[16];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		/* getrandom on Linux >= 3.17 does not fail for 16 bytes once
		 * the pool is initialised; fall back to the clock anyway */
		uint64_t t = now_us();
		memcpy(rnd, &t, sizeof(t));
		memcpy(rnd + 8, &t, sizeof(t));
	}
	for (int i = 0; i < 16; i++)
		out[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	out[16] = '\0';
}
