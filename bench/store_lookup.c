/*
 * Benchmark (not a test): the store path of a cold lookup, without a client
 * or a mail protocol around it: daemon/route/store*.c on one event loop, as
 * a worker runs it (bench/stores.py drives it after loading the stores).
 *
 *   build/bench/store_lookup redis|sql URL [QUERY] -n N -k KEYS -c INFLIGHT
 *
 * On one loop with 5 connections (one worker's share of pool_size 16 with
 * 2 workers): first N lookups one at a time (each the time from store_get()
 * to its callback: what a cold login waits), then N lookups with INFLIGHT
 * of them outstanding (a busy worker). Keys are "user<i>@example.org", i random in
 * [0, KEYS). Prints one JSON line: p50/p90/p99/p99.9 in microseconds, the
 * rate, this process's CPU microseconds per lookup, and how many answers
 * were found / absent / errors.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "store.h"
#include "util.h"

static struct event_base *base;
static struct store_loop *sl;
static unsigned long long keys = 1000000;
static size_t n_total, n_sent, n_done, inflight;
static uint64_t *lat_us;
static unsigned long long found, absent, errors;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

struct pending {
	uint64_t t0;
};

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void send_one(void);

static void answered(void *arg, const struct store_result *res)
{
	struct pending *p = arg;

	lat_us[n_done++] = now_us() - p->t0;
	free(p);
	if (res->status == STORE_FOUND)
		found++;
	else if (res->status == STORE_ABSENT)
		absent++;
	else
		errors++;
	if (n_done == n_total) {
		event_base_loopbreak(base);
		return;
	}
	if (n_sent < n_total)
		send_one();
}

static void send_one(void)
{
	char account[64];
	const char *why;
	struct pending *p = malloc(sizeof(*p));

	snprintf(account, sizeof(account), "user%llu@example.org",
	         (unsigned long long)(next_rand() % keys));
	p->t0 = now_us();
	n_sent++;
	if (!store_get(sl, account, answered, p, &why)) {
		fprintf(stderr, "store_get: %s\n", why);
		exit(1);
	}
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p * (double)n);
	return v[i < n ? i : n - 1];
}

static double cpu_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* n lookups, c at a time; prints one JSON member (no newline) unless name
 * is NULL (the warm-up). */
static void phase(const char *name, size_t n, size_t c)
{
	n_total = n;
	n_sent = n_done = 0;
	inflight = c;
	found = absent = errors = 0;
	double cpu0 = cpu_us();
	uint64_t t0 = now_us();
	for (size_t i = 0; i < c && n_sent < n; i++)
		send_one();
	event_base_dispatch(base);
	uint64_t dt = now_us() - t0;
	double cpu = cpu_us() - cpu0;
	qsort(lat_us, n, sizeof(*lat_us), cmp);
	if (!name)
		return;
	printf("\"%s\": {\"inflight\": %zu, \"n\": %zu, \"p50_us\": %llu, \"p90_us\": %llu, "
	       "\"p99_us\": %llu, \"p999_us\": %llu, \"per_s\": %.0f, \"cpu_us_per_lookup\": %.2f, "
	       "\"found\": %llu, \"absent\": %llu, \"errors\": %llu}",
	       name, c, n, (unsigned long long)pct(lat_us, n, 0.5),
	       (unsigned long long)pct(lat_us, n, 0.9), (unsigned long long)pct(lat_us, n, 0.99),
	       (unsigned long long)pct(lat_us, n, 0.999), (double)n * 1e6 / (double)dt,
	       cpu / (double)n, found, absent, errors);
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	struct store *st = arg;
	if (store_state_get(st, NULL, 0) != STORE_STATE_STARTING)
		event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
	size_t n = 20000, c = 16;
	int opt;

	while ((opt = getopt(argc, argv, "n:k:c:")) != -1) {
		if (opt == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (opt == 'k')
			keys = strtoull(optarg, NULL, 10);
		else if (opt == 'c')
			c = strtoul(optarg, NULL, 10);
	}
	if (argc - optind < 2 || n == 0 || c == 0 || keys == 0) {
		fprintf(stderr, "usage: store_lookup redis|sql URL [QUERY] -n N -k KEYS -c INFLIGHT\n");
		return 2;
	}
	bool redis = strcmp(argv[optind], "redis") == 0;
	struct store_settings set = {
	        .kind = redis ? STORE_REDIS : STORE_SQL,
	        .url = argv[optind + 1],
	        .key_prefix = "route:",
	        .query = optind + 2 < argc ? argv[optind + 2]
	                                   : "SELECT destination FROM routes WHERE identifier = $1",
	        .node_name = "bench",
	        .pool_size = 5, /* one worker's share of the default 16 with 2 workers */
	        .n_loops = 1,
	        .lookup_timeout_ms = 5000};
	char err[512];
	struct store *st = store_new(&set, err, sizeof(err));
	if (!st) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	base = event_base_new();
	sl = store_loop_new(st, base, NULL, false);
	struct event *wait = event_new(base, -1, EV_PERSIST, on_wait, st);
	struct timeval tv = {0, 10000};
	event_add(wait, &tv);
	event_base_dispatch(base);
	event_free(wait);
	if (store_state_get(st, err, sizeof(err)) != STORE_STATE_UP) {
		fprintf(stderr, "store: %s\n", err);
		return 1;
	}
	lat_us = calloc(n, sizeof(*lat_us));
	phase(NULL, n < 1000 ? n : 1000, c);
	printf("{");
	phase("serial", n, 1);
	printf(", ");
	phase("concurrent", n, c);
	printf("}\n");
	store_loop_free(sl);
	store_free(st);
	event_base_free(base);
	free(lat_us);
	return 0;
}
