/* libFuzzer: the small value parsers behind the configuration
 * (daemon/core/util.c: parse_duration_ms, parse_sockaddr, parse_cidr and
 * cidr_match; daemon/net/tls.c: tls_parse_pin; daemon/core/log.c: log_level_parse;
 * daemon/proto/sasl.c: sasl_mech_parse), each on the input as one string.
 * Invariants: a duration re-parses from "<ms>ms" to the same value; an
 * address formats with sockaddr_str and parses back to the same bytes; a
 * CIDR range contains its own address (also as an IPv4-mapped IPv6 client
 * for an IPv4 range), still does with the bits past the prefix flipped and
 * no longer does with a bit inside the prefix flipped; a pin is 64 hex
 * digits and re-parses from its hex form to the same bytes; a log level or
 * SASL mechanism name maps to a name that maps back to it. */
#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "sasl.h"
#include "tls.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_duration(const char *s)
{
	uint64_t ms, again;
	char buf[32];

	if (!parse_duration_ms(s, &ms))
		return;
	assert(s[0] >= '0' && s[0] <= '9');
	snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
	assert(parse_duration_ms(buf, &again) && again == ms);
}

static void check_sockaddr(const char *s)
{
	struct sockaddr_storage ss, again;
	socklen_t len, len2;
	char buf[INET6_ADDRSTRLEN + 16];

	if (!parse_sockaddr(s, &ss, &len))
		return;
	assert((ss.ss_family == AF_INET && len == sizeof(struct sockaddr_in)) ||
	       (ss.ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6)));
	sockaddr_str(&ss, buf, sizeof(buf));
	assert(parse_sockaddr(buf, &again, &len2) && len2 == len && memcmp(&ss, &again, len) == 0);
}

static void to_sockaddr(int family, const uint8_t *addr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
	}
}

static void check_cidr(const char *s, unsigned pick)
{
	struct cidr c;
	struct sockaddr_storage ss;
	uint8_t addr[16];
	unsigned bits;

	if (!parse_cidr(s, &c))
		return;
	assert(c.family == AF_INET || c.family == AF_INET6);
	bits = c.family == AF_INET ? 32 : 128;
	assert(c.prefix <= bits);
	memcpy(addr, c.addr, 16);
	to_sockaddr(c.family, addr, &ss);
	assert(cidr_match(&c, &ss));
	if (c.family == AF_INET) {
		uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		memcpy(mapped + 12, addr, 4);
		to_sockaddr(AF_INET6, mapped, &ss);
		assert(cidr_match(&c, &ss));
	}
	if (c.prefix < bits) { /* a host bit */
		unsigned b = c.prefix + pick % (bits - c.prefix);
		addr[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
		to_sockaddr(c.family, addr, &ss);
		assert(cidr_match(&c, &ss));
		memcpy(addr, c.addr, 16);
	}
	if (c.prefix > 0) { /* a network bit */
		unsigned b = pick % c.prefix;
		addr[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
		to_sockaddr(c.family, addr, &ss);
		assert(!cidr_match(&c, &ss));
	}
}

static void check_pin(const char *s)
{
	uint8_t pin[32], again[32];
	char hex[65];
	size_t digits = 0;

	if (!tls_parse_pin(s, pin))
		return;
	for (const char *p = s; *p; p++)
		digits += *p != ':';
	assert(digits == 64);
	for (size_t i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02X", pin[i]);
	assert(tls_parse_pin(hex, again) && memcmp(pin, again, 32) == 0);
}

static void check_names(const char *s, size_t len)
{
	enum log_level level, again;
	enum sasl_mech mech;

	if (log_level_parse(s, &level)) {
		assert(strcmp(log_level_name(level), "?") != 0);
		assert(log_level_parse(log_level_name(level), &again) && again == level);
	}
	mech = sasl_mech_parse(s, len);
	if (mech != SASL_NONE) {
		const char *name = sasl_mech_name(mech);
		assert(name && strlen(name) == len && strncasecmp(name, s, len) == 0);
		assert(sasl_mech_parse(name, strlen(name)) == mech);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check_duration(s);
	check_sockaddr(s);
	check_cidr(s, size ? data[size - 1] : 0);
	check_pin(s);
	check_names(s, size);
	free(s);
	return 0;
}
