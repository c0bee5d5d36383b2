/*
 * Destination health (see health.h).
 */
#include "health.h"

#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct dest_health {
	unsigned failures;
	uint64_t down_until; /* 0: up */
	/* distinct client addresses of the current streak: IPv4 as the first
	 * 4 bytes, IPv6 all 16 */
	uint8_t clients[HEALTH_DISTINCT_MAX][16];
	unsigned n_clients;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct dest_health *dests;
static size_t n;
static unsigned threshold, min_clients;
static uint64_t cooldown_ms;

void health_init(size_t n_dests, unsigned thr, uint64_t cooldown, unsigned minc)
{
	pthread_mutex_lock(&lock);
	free(dests);
	dests = xcalloc(n_dests ? n_dests : 1, sizeof(*dests));
	n = n_dests;
	threshold = thr;
	cooldown_ms = cooldown;
	min_clients = minc == 0 ? 1 : minc > HEALTH_DISTINCT_MAX ? HEALTH_DISTINCT_MAX : minc;
	pthread_mutex_unlock(&lock);
}

bool health_is_down(size_t dest, uint64_t now_ms)
{
	bool down = false;

	pthread_mutex_lock(&lock);
	if (dest < n && dests[dest].down_until) {
		if (now_ms < dests[dest].down_until) {
			down = true;
		} else {
			/* cooldown over: half-open, the next attempt decides */
			dests[dest].down_until = 0;
			dests[dest].failures = threshold ? threshold - 1 : 0;
		}
	}
	pthread_mutex_unlock(&lock);
	return down;
}

static void client_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

void health_record_failure(size_t dest, const struct sockaddr *client, uint64_t now_ms)
{
	uint8_t key[16];

	client_key(client, key);
	pthread_mutex_lock(&lock);
	if (dest < n && threshold > 0) {
		struct dest_health *h = &dests[dest];
		bool seen = false;
		for (unsigned i = 0; i < h->n_clients && !seen; i++)
			seen = memcmp(h->clients[i], key, 16) == 0;
		if (!seen && h->n_clients < HEALTH_DISTINCT_MAX)
			memcpy(h->clients[h->n_clients++], key, 16);
		if (h->failures < UINT_MAX)
			h->failures++;
		if (h->failures >= threshold && h->n_clients >= min_clients)
			h->down_until = now_ms + cooldown_ms;
	}
	pthread_mutex_unlock(&lock);
}

static void clear(struct dest_health *h)
{
	h->failures = 0;
	h->n_clients = 0;
	h->down_until = 0;
}

void health_record_success(size_t dest)
{
	pthread_mutex_lock(&lock);
	if (dest < n)
		clear(&dests[dest]);
	pthread_mutex_unlock(&lock);
}

bool health_reset(size_t dest)
{
	bool ok;

	pthread_mutex_lock(&lock);
	ok = dest < n;
	if (ok)
		clear(&dests[dest]);
	pthread_mutex_unlock(&lock);
	return ok;
}

bool health_get(size_t dest, uint64_t now_ms, struct health_state *out)
{
	bool ok = false;

	pthread_mutex_lock(&lock);
	if (dest < n) {
		out->consecutive_failures = dests[dest].failures;
		out->down = dests[dest].down_until && now_ms < dests[dest].down_until;
		ok = true;
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

json_t *health_json(const char *const *names, size_t count, uint64_t now_ms)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < count; i++) {
		struct health_state h = {0};
		health_get(i, now_ms, &h);
		json_array_append_new(arr, json_pack("{s:s, s:I, s:b}", "destination", names[i],
		                                     "consecutive_failures",
		                                     (json_int_t)h.consecutive_failures, "down",
		                                     h.down));
	}
	return arr;
}
