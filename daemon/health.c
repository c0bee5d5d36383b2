/*
 * Destination health (see health.h).
 */
#include "health.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define DISTINCT_MAX 8 /* client addresses remembered per failure streak */

struct dest_health {
	unsigned failures;
	uint64_t down_until; /* 0: up */
	uint8_t clients[DISTINCT_MAX][16];
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
	min_clients = minc ? minc : 1;
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
	if (sa->sa_family == AF_INET)
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

void health_record_failure(size_t dest, const struct sockaddr *client, uint64_t now_ms)
{
	uint8_t key[16];

	if (threshold == 0)
		return;
	client_key(client, key);
	pthread_mutex_lock(&lock);
	if (dest < n) {
		struct dest_health *h = &dests[dest];
		bool seen = false;
		for (unsigned i = 0; i < h->n_clients; i++)
			seen |= memcmp(h->clients[i], key, 16) == 0;
		if (!seen && h->n_clients < DISTINCT_MAX)
			memcpy(h->clients[h->n_clients++], key, 16);
		h->failures++;
		if (h->failures >= threshold && h->n_clients >= min_clients)
			h->down_until = now_ms + cooldown_ms;
	}
	pthread_mutex_unlock(&lock);
}

void health_record_success(size_t dest)
{
	pthread_mutex_lock(&lock);
	if (dest < n) {
		dests[dest].failures = 0;
		dests[dest].n_clients = 0;
		dests[dest].down_until = 0;
	}
	pthread_mutex_unlock(&lock);
}

bool health_reset(size_t dest)
{
	if (dest >= n)
		return false;
	health_record_success(dest);
	return true;
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
