/* libFuzzer: store URLs (daemon/route/store_url.c). The first byte picks
 * Redis or PostgreSQL; the rest is the URL (NUL-terminated copy).
 * Invariants: an accepted URL has at most STORE_URL_HOSTS hosts, each
 * NUL-terminated within its buffer, with no NUL cut short (strlen fits),
 * a port of 0 (default) or 1..65535; Redis: one host and a non-zero port
 * unless it is a unix socket, whose path is absolute and fits sun_path;
 * a refused URL leaves a message that is NUL-terminated, not empty, and
 * printable ASCII (the password is never quoted: see test_store.c); parsing
 * twice gives the same
 * result; store_redis_key never writes past its buffer. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_url u, again;
	char err[512], err2[512], key[64];

	if (size < 1 || size > STORE_URL_MAX + 64)
		return 0;
	enum store_kind kind = data[0] & 1 ? STORE_SQL : STORE_REDIS;
	char *url = malloc(size);
	if (!url)
		return 0;
	memcpy(url, data + 1, size - 1);
	url[size - 1] = '\0';

	bool ok = store_url_parse(kind, url, &u, err, sizeof(err));
	bool ok2 = store_url_parse(kind, url, &again, err2, sizeof(err2));
	assert(ok == ok2);
	if (ok) {
		assert(memcmp(&u, &again, sizeof(u)) == 0);
		assert(u.n_hosts <= STORE_URL_HOSTS);
		for (size_t i = 0; i < u.n_hosts; i++) {
			assert(strlen(u.host[i]) <= STORE_URL_HOST_MAX);
			(void)store_host_is_numeric(u.host[i]);
		}
		assert(strlen(u.user) < sizeof(u.user));
		assert(strlen(u.password) < sizeof(u.password));
		if (kind == STORE_REDIS) {
			if (u.unix_socket) {
				assert(u.path[0] == '/' && strlen(u.path) < 108);
			} else {
				assert(u.n_hosts == 1 && u.port[0] != 0 && u.host[0][0]);
			}
			assert(u.db >= 0);
		}
	} else {
		assert(err[0] && strlen(err) < sizeof(err));
		assert(strcmp(err, err2) == 0);
		/* what is quoted from the URL (a scheme, a parameter name) is
		 * made printable: a config error is safe to show on a terminal */
		for (const char *p = err; *p; p++)
			assert((unsigned char)*p >= ' ' && (unsigned char)*p < 0x7f);
	}
	if (size - 1 < sizeof(key)) {
		bool fits = store_redis_key("p:", url, key, sizeof(key));
		assert(fits == (2 + strlen(url) + 1 <= sizeof(key)));
		if (fits)
			assert(strncmp(key, "p:", 2) == 0 && strcmp(key + 2, url) == 0);
	}
	free(url);
	return 0;
}
