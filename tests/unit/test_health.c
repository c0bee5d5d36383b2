/* The per-destination circuit breaker. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"

static struct sockaddr_in v4(const char *ip)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	inet_pton(AF_INET, ip, &sa.sin_addr);
	return sa;
}

static void fail_from(size_t dest, const char *ip, uint64_t now)
{
	struct sockaddr_in sa = v4(ip);
	health_record_failure(dest, (const struct sockaddr *)&sa, now);
}

static void test_down_after_threshold(void **state)
{
	struct health_state h;

	health_init(2, 3, 30000, 1);
	fail_from(0, "10.0.0.1", 100);
	fail_from(0, "10.0.0.1", 101);
	assert_false(health_is_down(0, 102));
	fail_from(0, "10.0.0.1", 102);
	assert_true(health_is_down(0, 103));
	assert_true(health_get(0, 103, &h));
	assert_int_equal(h.consecutive_failures, 3);
	assert_true(h.down);
	/* the other destination is not affected */
	assert_false(health_is_down(1, 103));
	assert_true(health_get(1, 103, &h));
	assert_int_equal(h.consecutive_failures, 0);
	assert_false(h.down);
}

static void test_success_closes(void **state)
{
	health_init(1, 2, 30000, 1);
	fail_from(0, "10.0.0.1", 1);
	health_record_success(0);
	fail_from(0, "10.0.0.1", 2);
	/* the streak was broken: one failure is not two */
	assert_false(health_is_down(0, 3));
	fail_from(0, "10.0.0.1", 3);
	assert_true(health_is_down(0, 4));
	health_record_success(0);
	assert_false(health_is_down(0, 5));
}

static void test_min_clients(void **state)
{
	health_init(1, 2, 30000, 2);
	/* one client alone cannot take a backend out for everyone */
	for (int i = 0; i < 10; i++)
		fail_from(0, "10.0.0.1", (uint64_t)i);
	assert_false(health_is_down(0, 20));
	fail_from(0, "10.0.0.2", 21);
	assert_true(health_is_down(0, 22));
}

static void test_min_clients_ipv6_and_ports(void **state)
{
	struct sockaddr_in6 a, b;

	health_init(1, 2, 30000, 2);
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::1", &a.sin6_addr);
	b = a;
	b.sin6_port = htons(4000); /* another port of the same client */
	health_record_failure(0, (const struct sockaddr *)&a, 1);
	health_record_failure(0, (const struct sockaddr *)&b, 2);
	assert_false(health_is_down(0, 3));
	inet_pton(AF_INET6, "2001:db8::2", &b.sin6_addr);
	health_record_failure(0, (const struct sockaddr *)&b, 3);
	assert_true(health_is_down(0, 4));
}

static void test_min_clients_above_limit(void **state)
{
	char ip[32];

	/* more distinct clients than are remembered still trips the breaker */
	health_init(1, 1, 30000, 100000);
	for (int i = 0; i < HEALTH_DISTINCT_MAX; i++) {
		snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 200, i % 200 + 1);
		fail_from(0, ip, 1);
	}
	assert_true(health_is_down(0, 2));
}

static void test_cooldown_half_open(void **state)
{
	health_init(1, 3, 1000, 1);
	for (int i = 0; i < 3; i++)
		fail_from(0, "10.0.0.1", 10);
	assert_true(health_is_down(0, 1009));
	/* cooldown over: one attempt goes through */
	assert_false(health_is_down(0, 1010));
	/* and its failure trips the breaker again at once */
	fail_from(0, "10.0.0.1", 1011);
	assert_true(health_is_down(0, 1012));
	/* a success after the next cooldown closes it */
	assert_false(health_is_down(0, 2011));
	health_record_success(0);
	fail_from(0, "10.0.0.1", 2012);
	assert_false(health_is_down(0, 2013));
}

static void test_threshold_zero_disables(void **state)
{
	struct health_state h;

	health_init(1, 0, 30000, 1);
	for (int i = 0; i < 1000; i++)
		fail_from(0, "10.0.0.1", (uint64_t)i);
	assert_false(health_is_down(0, 1000));
	assert_true(health_get(0, 1000, &h));
	assert_false(h.down);
}

static void test_reset_and_bounds(void **state)
{
	struct health_state h;

	health_init(2, 1, 30000, 1);
	fail_from(1, "10.0.0.1", 1);
	assert_true(health_is_down(1, 2));
	assert_true(health_reset(1));
	assert_false(health_is_down(1, 3));
	assert_true(health_get(1, 3, &h));
	assert_int_equal(h.consecutive_failures, 0);
	/* unknown indexes are refused, never touched */
	assert_false(health_reset(2));
	assert_false(health_get(2, 3, &h));
	assert_false(health_is_down(99, 3));
	fail_from(99, "10.0.0.1", 3);
	health_record_success(99);
	health_record_failure(0, NULL, 4); /* no client address: counted, not crashed */
	assert_true(health_is_down(0, 5));
}

static void test_json(void **state)
{
	static const char *const names[] = {"legacy", "new"};

	health_init(2, 1, 30000, 1);
	fail_from(1, "10.0.0.1", 1);
	json_t *arr = health_json(names, 2, 2);
	char *s = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(s, "[{\"consecutive_failures\":0,\"destination\":\"legacy\","
	                       "\"down\":false},{\"consecutive_failures\":1,"
	                       "\"destination\":\"new\",\"down\":true}]");
	free(s);
	json_decref(arr);
}

struct hammer {
	size_t dest;
	int n;
};

static void *hammer(void *arg)
{
	struct hammer *h = arg;
	char ip[32];

	for (int i = 0; i < h->n; i++) {
		snprintf(ip, sizeof(ip), "10.1.%d.%d", i % 7, i % 5 + 1);
		fail_from(h->dest, ip, (uint64_t)i);
		health_is_down(h->dest, (uint64_t)i);
	}
	return NULL;
}

static void test_threads_count_every_failure(void **state)
{
	pthread_t t[4];
	struct hammer h = {.dest = 0, .n = 5000};
	struct health_state st;

	/* threshold above the total: nothing trips, so every failure counts */
	health_init(1, 1000000, 30000, 1);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, &h);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(health_get(0, 0, &st));
	assert_int_equal(st.consecutive_failures, 4 * 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_down_after_threshold),
	        cmocka_unit_test(test_success_closes),
	        cmocka_unit_test(test_min_clients),
	        cmocka_unit_test(test_min_clients_ipv6_and_ports),
	        cmocka_unit_test(test_min_clients_above_limit),
	        cmocka_unit_test(test_cooldown_half_open),
	        cmocka_unit_test(test_threshold_zero_disables),
	        cmocka_unit_test(test_reset_and_bounds),
	        cmocka_unit_test(test_json),
	        cmocka_unit_test(test_threads_count_every_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
