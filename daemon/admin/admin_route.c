/*
 * Admin API routes (see admin_route.h).
 */
#include "admin_route.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *path;
	unsigned methods;
} routes[ADMIN_ENDPOINTS] = {
        [ADMIN_HEALTHZ] = {"/healthz", ADMIN_GET},
        [ADMIN_STATS] = {"/stats", ADMIN_GET},
        [ADMIN_METRICS] = {"/metrics", ADMIN_GET},
        [ADMIN_DESTINATIONS] = {"/destinations", ADMIN_GET},
        [ADMIN_DESTINATIONS_RESET] = {"/destinations/reset", ADMIN_POST},
        [ADMIN_MAPPINGS] = {"/mappings", ADMIN_GET | ADMIN_PUT | ADMIN_DELETE},
        [ADMIN_MAPPINGS_RELOAD] = {"/mappings/reload", ADMIN_POST},
        [ADMIN_CACHE_INVALIDATE] = {"/cache/invalidate", ADMIN_POST},
        [ADMIN_SESSIONS] = {"/sessions", ADMIN_GET},
        [ADMIN_CONNECTIONS_KICK] = {"/connections/kick", ADMIN_POST},
        [ADMIN_CONNECTIONS_DELAY] = {"/connections/delay", ADMIN_POST},
        [ADMIN_CONFIG_RELOAD] = {"/config/reload", ADMIN_POST},
        [ADMIN_ACCOUNTS_MOVE] = {"/accounts/move", ADMIN_POST},
        [ADMIN_UNKNOWN] = {"other", 0},
};

enum admin_endpoint admin_route(const char *path)
{
	if (!path)
		return ADMIN_UNKNOWN;
	size_t len = strlen(path);
	/* the peer trims every trailing '/', so runbooks written against it
	 * with "/stats/" keep working; "/" itself stays unknown */
	while (len > 1 && path[len - 1] == '/')
		len--;
	for (size_t i = 0; i < ADMIN_UNKNOWN; i++) {
		if (strlen(routes[i].path) == len && memcmp(routes[i].path, path, len) == 0)
			return (enum admin_endpoint)i;
	}
	return ADMIN_UNKNOWN;
}

const char *admin_endpoint_name(enum admin_endpoint ep)
{
	return ep >= 0 && ep < ADMIN_ENDPOINTS ? routes[ep].path : "other";
}

unsigned admin_endpoint_methods(enum admin_endpoint ep)
{
	return ep >= 0 && ep < ADMIN_ENDPOINTS ? routes[ep].methods : 0;
}

bool admin_needs_token(enum admin_endpoint ep)
{
	return ep != ADMIN_HEALTHZ;
}

const char *admin_allow_header(enum admin_endpoint ep, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{ADMIN_GET, "GET"},
	             {ADMIN_POST, "POST"},
	             {ADMIN_PUT, "PUT"},
	             {ADMIN_DELETE, "DELETE"}};
	unsigned methods = admin_endpoint_methods(ep);
	size_t used = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(methods & names[i].bit))
			continue;
		int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i].name);
		if (n < 0 || (size_t)n >= len - used) {
			buf[used] = '\0'; /* whole method names only */
			break;
		}
		used += (size_t)n;
	}
	return buf;
}
