/* The admin API's pure pieces: routes, query parameters, lockout. */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "admin_lockout.h"
#include "admin_query.h"
#include "admin_route.h"

/* ---- routes ---- */

static void test_route_known_paths(void **state)
{
	assert_int_equal(admin_route("/healthz"), ADMIN_HEALTHZ);
	assert_int_equal(admin_route("/mappings"), ADMIN_MAPPINGS);
	assert_int_equal(admin_route("/mappings/reload"), ADMIN_MAPPINGS_RELOAD);
	assert_int_equal(admin_route("/connections/kick"), ADMIN_CONNECTIONS_KICK);
	assert_int_equal(admin_route("/config/reload"), ADMIN_CONFIG_RELOAD);
	for (int ep = 0; ep < ADMIN_UNKNOWN; ep++)
		assert_int_equal(admin_route(admin_endpoint_name((enum admin_endpoint)ep)), ep);
}

static void test_route_trailing_slashes_ignored(void **state)
{
	/* the peer trims them: runbooks with "/stats/" must keep working */
	assert_int_equal(admin_route("/stats/"), ADMIN_STATS);
	assert_int_equal(admin_route("/cache/invalidate//"), ADMIN_CACHE_INVALIDATE);
	assert_int_equal(admin_route("/"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("//"), ADMIN_UNKNOWN);
}

static void test_route_unknown_paths(void **state)
{
	assert_int_equal(admin_route(NULL), ADMIN_UNKNOWN);
	assert_int_equal(admin_route(""), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("/stat"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("/statsx"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("/STATS"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("//stats"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("/mappings/"), ADMIN_MAPPINGS);
	assert_int_equal(admin_route("/mappings/x"), ADMIN_UNKNOWN);
	assert_int_equal(admin_route("/st%61ts"), ADMIN_UNKNOWN); /* no decoding, as the peer */
	assert_int_equal(admin_route("/sessions/kick"), ADMIN_UNKNOWN);
	assert_string_equal(admin_endpoint_name(ADMIN_UNKNOWN), "other");
}

static void test_route_methods(void **state)
{
	char buf[64];

	assert_int_equal(admin_endpoint_methods(ADMIN_MAPPINGS),
	                 ADMIN_GET | ADMIN_PUT | ADMIN_DELETE);
	assert_int_equal(admin_endpoint_methods(ADMIN_STATS), ADMIN_GET);
	assert_int_equal(admin_endpoint_methods(ADMIN_CONNECTIONS_KICK), ADMIN_POST);
	assert_int_equal(admin_endpoint_methods(ADMIN_UNKNOWN), 0);
	/* POST /mappings is a 405 at the peer, not an alias of PUT */
	assert_false(admin_endpoint_methods(ADMIN_MAPPINGS) & ADMIN_POST);
	/* nothing accepts HEAD, OPTIONS, PATCH... */
	for (int ep = 0; ep < ADMIN_ENDPOINTS; ep++)
		assert_false(admin_endpoint_methods((enum admin_endpoint)ep) & ADMIN_OTHER);
	assert_string_equal(admin_allow_header(ADMIN_MAPPINGS, buf, sizeof(buf)),
	                    "GET, PUT, DELETE");
	assert_string_equal(admin_allow_header(ADMIN_CONFIG_RELOAD, buf, sizeof(buf)), "POST");
	assert_string_equal(admin_allow_header(ADMIN_MAPPINGS, buf, 6), "GET");
	assert_string_equal(admin_allow_header(ADMIN_UNKNOWN, buf, sizeof(buf)), "");
}

static void test_route_only_healthz_is_open(void **state)
{
	for (int ep = 0; ep < ADMIN_ENDPOINTS; ep++)
		assert_int_equal(admin_needs_token((enum admin_endpoint)ep), ep != ADMIN_HEALTHZ);
}

/* ---- query parameters ---- */

static enum query_get q(const char *query, const char *key, char *out, size_t len)
{
	return admin_query_get(query, strlen(query), key, out, len);
}

static void test_query_first_exact_match(void **state)
{
	char out[64];

	assert_int_equal(q("identifier=a&destination=new", "destination", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "new");
	assert_int_equal(q("identifier=a&identifier=b", "identifier", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "a");
	/* names are matched exactly, not as prefixes or suffixes */
	assert_int_equal(q("xidentifier=a&identifierx=b", "identifier", out, sizeof(out)),
	                 QUERY_ABSENT);
	assert_string_equal(out, "");
	assert_int_equal(q("", "identifier", out, sizeof(out)), QUERY_ABSENT);
	assert_int_equal(admin_query_get(NULL, 0, "identifier", out, sizeof(out)), QUERY_ABSENT);
}

static void test_query_plus_is_literal(void **state)
{
	char out[64];

	/* subaddresses: libevent's parser would turn '+' into a space */
	assert_int_equal(q("identifier=bob+tag@example.org", "identifier", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "bob+tag@example.org");
	assert_int_equal(q("identifier=bob%2Btag%40example.org", "identifier", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "bob+tag@example.org");
}

static void test_query_percent_decoding(void **state)
{
	char out[64];

	assert_int_equal(q("identifier=Al%69ce%40Example.org", "identifier", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "Alice@Example.org");
	/* malformed escapes stay as written */
	assert_int_equal(q("identifier=%zz%4", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "%zz%4");
	assert_int_equal(q("identifier=%", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "%");
	/* an encoded '&' or '=' is part of the value */
	assert_int_equal(q("identifier=a%26b%3Dc&x=1", "identifier", out, sizeof(out)),
	                 QUERY_FOUND);
	assert_string_equal(out, "a&b=c");
	/* the value is everything after the first '=' */
	assert_int_equal(q("identifier=a=b", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "a=b");
}

static void test_query_pairs_without_value(void **state)
{
	char out[64];

	/* one malformed pair does not hide the others (libevent drops all) */
	assert_int_equal(q("foo&identifier=x", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "x");
	assert_int_equal(q("identifier", "identifier", out, sizeof(out)), QUERY_ABSENT);
	assert_int_equal(q("&&identifier=&", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "");
}

static void test_query_rejects_nul_and_overlong(void **state)
{
	char out[8];

	assert_int_equal(q("identifier=a%00b", "identifier", out, sizeof(out)), QUERY_INVALID);
	assert_string_equal(out, "");
	assert_int_equal(q("identifier=1234567", "identifier", out, sizeof(out)), QUERY_FOUND);
	assert_int_equal(q("identifier=12345678", "identifier", out, sizeof(out)), QUERY_INVALID);
	assert_string_equal(out, "");
	assert_int_equal(q("identifier=a", "identifier", out, 0), QUERY_INVALID);
}

static void test_query_not_terminated(void **state)
{
	/* a form body is a byte range, not a C string */
	const char body[] = {'i', 'd', '=', 'a', 'b', 'X'};
	char out[16];

	assert_int_equal(admin_query_get(body, 5, "id", out, sizeof(out)), QUERY_FOUND);
	assert_string_equal(out, "ab");
}

/* ---- lockout ---- */

static void test_lockout_after_threshold(void **state)
{
	struct admin_lockout l;

	admin_lockout_init(&l, 3, 60000, 16);
	assert_false(admin_lockout_is_locked(&l, "10.0.0.1", 1000));
	assert_false(admin_lockout_failure(&l, "10.0.0.1", 1000));
	assert_false(admin_lockout_failure(&l, "10.0.0.1", 1001));
	assert_false(admin_lockout_is_locked(&l, "10.0.0.1", 1002));
	assert_true(admin_lockout_failure(&l, "10.0.0.1", 1002));
	assert_true(admin_lockout_is_locked(&l, "10.0.0.1", 1003));
	/* per address */
	assert_false(admin_lockout_is_locked(&l, "10.0.0.2", 1003));
	/* the lock lasts lockout_duration from the failure that set it */
	assert_true(admin_lockout_is_locked(&l, "10.0.0.1", 61001));
	assert_false(admin_lockout_is_locked(&l, "10.0.0.1", 61002));
	admin_lockout_free(&l);
}

static void test_lockout_success_clears(void **state)
{
	struct admin_lockout l;

	admin_lockout_init(&l, 2, 60000, 16);
	admin_lockout_failure(&l, "a", 10);
	admin_lockout_success(&l, "a");
	assert_false(admin_lockout_failure(&l, "a", 11));
	assert_false(admin_lockout_is_locked(&l, "a", 12));
	admin_lockout_free(&l);
}

static void test_lockout_old_failures_age_out(void **state)
{
	struct admin_lockout l;

	admin_lockout_init(&l, 2, 1000, 16);
	admin_lockout_failure(&l, "a", 0);
	/* a failure after the duration starts a new count */
	assert_false(admin_lockout_failure(&l, "a", 1000));
	assert_false(admin_lockout_is_locked(&l, "a", 1001));
	assert_true(admin_lockout_failure(&l, "a", 1500));
	assert_true(admin_lockout_is_locked(&l, "a", 1501));
	/* after the lock expires the next failure counts from one again */
	assert_false(admin_lockout_failure(&l, "a", 2500));
	assert_false(admin_lockout_is_locked(&l, "a", 2501));
	admin_lockout_free(&l);
}

static void test_lockout_threshold_zero_disables(void **state)
{
	struct admin_lockout l;

	admin_lockout_init(&l, 0, 60000, 4);
	for (int i = 0; i < 100; i++)
		assert_false(admin_lockout_failure(&l, "a", (uint64_t)i));
	assert_false(admin_lockout_is_locked(&l, "a", 100));
	admin_lockout_free(&l);
}

static void test_lockout_table_full(void **state)
{
	struct admin_lockout l;
	char addr[32];

	admin_lockout_init(&l, 2, 60000, 4);
	/* four locked addresses fill the table */
	for (int i = 0; i < 4; i++) {
		snprintf(addr, sizeof(addr), "10.0.0.%d", i);
		admin_lockout_failure(&l, addr, 100);
		assert_true(admin_lockout_failure(&l, addr, 100));
	}
	/* a fifth address is not tracked, and no locked one is freed */
	assert_false(admin_lockout_failure(&l, "10.0.1.1", 200));
	assert_false(admin_lockout_failure(&l, "10.0.1.1", 200));
	for (int i = 0; i < 4; i++) {
		snprintf(addr, sizeof(addr), "10.0.0.%d", i);
		assert_true(admin_lockout_is_locked(&l, addr, 300));
	}
	/* once their failures have aged out the slots are reused */
	admin_lockout_failure(&l, "10.0.1.1", 60100);
	assert_true(admin_lockout_failure(&l, "10.0.1.1", 60100));
	assert_true(admin_lockout_is_locked(&l, "10.0.1.1", 60101));
	admin_lockout_free(&l);
}

static void test_lockout_evicts_oldest_unlocked(void **state)
{
	struct admin_lockout l;

	admin_lockout_init(&l, 3, 60000, 2);
	admin_lockout_failure(&l, "old", 10);
	admin_lockout_failure(&l, "new", 20);
	admin_lockout_failure(&l, "third", 30); /* takes "old"'s slot */
	assert_false(admin_lockout_failure(&l, "new", 40));
	assert_true(admin_lockout_failure(&l, "new", 50)); /* "new" kept its count */
	admin_lockout_free(&l);
}

static void test_lockout_long_addresses(void **state)
{
	struct admin_lockout l;
	char addr[200];

	memset(addr, 'f', sizeof(addr) - 1);
	addr[sizeof(addr) - 1] = '\0';
	admin_lockout_init(&l, 1, 60000, 4);
	/* truncated to the slot size: the address is never found again, but
	 * nothing overflows */
	admin_lockout_failure(&l, addr, 1);
	admin_lockout_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_route_known_paths),
	        cmocka_unit_test(test_route_trailing_slashes_ignored),
	        cmocka_unit_test(test_route_unknown_paths),
	        cmocka_unit_test(test_route_methods),
	        cmocka_unit_test(test_route_only_healthz_is_open),
	        cmocka_unit_test(test_query_first_exact_match),
	        cmocka_unit_test(test_query_plus_is_literal),
	        cmocka_unit_test(test_query_percent_decoding),
	        cmocka_unit_test(test_query_pairs_without_value),
	        cmocka_unit_test(test_query_rejects_nul_and_overlong),
	        cmocka_unit_test(test_query_not_terminated),
	        cmocka_unit_test(test_lockout_after_threshold),
	        cmocka_unit_test(test_lockout_success_clears),
	        cmocka_unit_test(test_lockout_old_failures_age_out),
	        cmocka_unit_test(test_lockout_threshold_zero_disables),
	        cmocka_unit_test(test_lockout_table_full),
	        cmocka_unit_test(test_lockout_evicts_oldest_unlocked),
	        cmocka_unit_test(test_lockout_long_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
