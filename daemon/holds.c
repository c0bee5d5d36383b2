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

bool holds_set(const char *account, unsigned seconds, uint64_t now_ms)
{
	bool ok;

	if (seconds == 0 || seconds > HOLD_MAX_SECONDS)
		return false;
	pthread_mutex_lock(&lock);
	if (!ready) {
		strmap_init(&table);
		ready = true;
	}
	if (strmap_len(&table) >= HOLDS_MAX)
		sweep(now_ms);
	ok = strmap_len(&table) < HOLDS_MAX &&
	     strmap_set(&table, account, now_ms + (uint64_t)seconds * 1000);
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
