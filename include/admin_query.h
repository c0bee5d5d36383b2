/*
 * Query-string parameters of admin requests, read the way the Stalwart
 * proxy reads them: the first "key=value" pair whose name is exactly key,
 * the value percent-decoded, '+' kept as '+' (so "bob+tag@example.org"
 * is that address, not "bob tag@..."), malformed escapes kept literally,
 * pairs without '=' skipped. The same rule applies to form bodies.
 */
#ifndef MAILSPLICE_ADMIN_QUERY_H
#define MAILSPLICE_ADMIN_QUERY_H

#include <stddef.h>

enum query_get {
	QUERY_ABSENT,
	QUERY_FOUND,
	QUERY_INVALID, /* decodes to a NUL byte, or longer than out can hold */
};

/* query: the part after '?' (no '?'), len bytes, need not be terminated.
 * out always receives a terminated string ("" unless QUERY_FOUND). */
enum query_get admin_query_get(const char *query, size_t len, const char *key, char *out,
                               size_t outlen);

#endif
