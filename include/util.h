/* Small helpers shared by every module. */
#ifndef MAILSPLICE_UTIL_H
#define MAILSPLICE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Parse a duration: "500ms", "30s", "5m", "2h", "1d" (a bare number is
 * seconds). Returns false on anything else or on overflow. */
bool parse_duration_ms(const char *s, uint64_t *ms);

/* Monotonic clock in milliseconds / microseconds. */
uint64_t now_ms(void);
uint64_t now_us(void);

/* Allocation that aborts on failure: used only for start-up structures,
 * never for anything a client can make us allocate. */
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* strlcpy semantics: always NUL-terminates, returns strlen(src). */
size_t str_copy(char *dst, const char *src, size_t size);

/* Case-insensitive ASCII prefix test; returns the length of prefix when it
 * matches, 0 otherwise. */
size_t ascii_prefix(const char *s, size_t len, const char *prefix);

/* The value of one hexadecimal digit (either case), or -1. */
int hex_digit(int c);

/* Constant-time comparison of two byte strings (length leaks, content not). */
bool const_time_eq(const void *a, size_t alen, const void *b, size_t blen);

/* Parse "1.2.3.4:25", "[2001:db8::1]:25" or "*:25" / "[::]:25". */
bool parse_sockaddr(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* Parse a CIDR "10.0.0.0/8", "2001:db8::/32" or a bare address. */
struct cidr {
	int family;
	uint8_t addr[16];
	unsigned prefix;
};
bool parse_cidr(const char *s, struct cidr *out);
bool cidr_match(const struct cidr *c, const struct sockaddr_storage *ss);

/* "1.2.3.4:25" / "[2001:db8::1]:25" */
const char *sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len);

/* Random session id: 16 characters of [A-Za-z0-9] from the OS RNG. */
void session_id_new(char out[17]);

#endif
