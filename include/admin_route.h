/*
 * The admin API's routing table: which paths exist, which methods each one
 * accepts, and the Stalwart proxy's path rule (trailing slashes do not
 * count: "/stats/" is "/stats"). Pure, so unit tests drive it directly.
 */
#ifndef MAILSPLICE_ADMIN_ROUTE_H
#define MAILSPLICE_ADMIN_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

enum admin_endpoint {
	ADMIN_HEALTHZ,
	ADMIN_STATS,
	ADMIN_METRICS,
	ADMIN_DESTINATIONS,
	ADMIN_DESTINATIONS_RESET,
	ADMIN_MAPPINGS,
	ADMIN_MAPPINGS_RELOAD,
	ADMIN_CACHE_INVALIDATE,
	ADMIN_SESSIONS,
	ADMIN_CONNECTIONS_KICK,
	ADMIN_CONNECTIONS_DELAY,
	ADMIN_CONFIG_RELOAD,
	ADMIN_ACCOUNTS_MOVE,
	ADMIN_UNKNOWN, /* no such path: 404 once authenticated */
	ADMIN_ENDPOINTS,
};

/* Methods as a bit set, independent of the HTTP library. */
enum admin_method {
	ADMIN_GET = 1u << 0,
	ADMIN_POST = 1u << 1,
	ADMIN_PUT = 1u << 2,
	ADMIN_DELETE = 1u << 3,
	ADMIN_OTHER = 1u << 4, /* HEAD, OPTIONS, PATCH, ...: never allowed */
};

/* path: the request path without the query string (may be NULL). */
enum admin_endpoint admin_route(const char *path);
/* "/stats" etc.; "other" for ADMIN_UNKNOWN (a metrics label). */
const char *admin_endpoint_name(enum admin_endpoint ep);
/* The methods ep accepts (0 for ADMIN_UNKNOWN). */
unsigned admin_endpoint_methods(enum admin_endpoint ep);
/* Whether a request needs the bearer token: everything except the health
 * check (which answers 405 to a wrong method without asking for one). */
bool admin_needs_token(enum admin_endpoint ep);
/* The Allow header value for a 405, e.g. "GET, PUT, DELETE". */
const char *admin_allow_header(enum admin_endpoint ep, char *buf, size_t len);

#endif
