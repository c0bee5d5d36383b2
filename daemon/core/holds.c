/*
 * Login holds (see holds.h). Expired entries are dropped when looked up or
 * when the table grows; there are only as many as an operator has asked for.
 */
#include "holds.h"

#include <pthread.h>

#include "strmap.h"

#define HOLDS_MAX 100000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct strmap table;
static bool ready;

static void sweep(uint64_t now)
{
	size_t it = 0;
	const char *key;
	uint64_t until;
	char *dead[64];
	size_t n = 0;

	while (n < 64 && strmap_next(&table, &it, &key, &until)) {
		if (until <= now)
			dead[n++] = (char *)key;
	}
	for (size_t i = 0; i < n; i++)
		strmap_del(&table, dead[i]);
}

bool holds_set(const char *account, uint64_t seconds, uint64_t now_ms)
{
	bool ok = true;

	pthread_mutex_lock(&lock);
	if (!ready) {
		strmap_init(&table);
		ready = true;
	}
	if (seconds == 0) {
		strmap_del(&table, account);
	} else {
		/* saturate: "hold for ever" is a hold, not an overflow into the past */
		uint64_t ms = seconds > UINT64_MAX / 1000 ? UINT64_MAX : seconds * 1000;
		uint64_t until = ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + ms;
		uint64_t old;
		if (!strmap_get(&table, account, &old) && strmap_len(&table) >= HOLDS_MAX)
			sweep(now_ms);
		ok = (strmap_get(&table, account, &old) || strmap_len(&table) < HOLDS_MAX) &&
		     strmap_set(&table, account, until);
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

uint64_t holds_remaining_ms(const char *account, uint64_t now_ms)
{
	uint64_t until = 0, left = 0;

	pthread_mutex_lock(&lock);
	if (ready && strmap_get(&table, account, &until)) {
		if (until > now_ms)
			left = until - now_ms;
		else
			strmap_del(&table, account);
	}
	pthread_mutex_unlock(&lock);
	return left;
}

uint64_t holds_wait_ms(const char *account, uint64_t held_since_ms, uint64_t now_ms)
{
	uint64_t left = holds_remaining_ms(account, now_ms);
	uint64_t cap_at = held_since_ms + (uint64_t)HOLD_MAX_SECONDS * 1000;

	if (now_ms >= cap_at)
		return 0;
	return left < cap_at - now_ms ? left : cap_at - now_ms;
}
