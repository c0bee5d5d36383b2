/* Login holds (POST /connections/delay). */
#include "unit.h"

#include <stdint.h>

#include "holds.h"

static void test_hold_and_expiry(void **state)
{
	assert_int_equal(holds_remaining_ms("a@example.org", 0), 0);
	assert_true(holds_set("a@example.org", 10, 1000));
	assert_int_equal(holds_remaining_ms("a@example.org", 1000), 10000);
	assert_int_equal(holds_remaining_ms("a@example.org", 10999), 1);
	assert_int_equal(holds_remaining_ms("a@example.org", 11000), 0);
	/* expired and dropped */
	assert_int_equal(holds_remaining_ms("a@example.org", 5000), 0);
	/* other accounts are not held */
	assert_true(holds_set("b@example.org", 10, 0));
	assert_int_equal(holds_remaining_ms("c@example.org", 0), 0);
}

static void test_zero_lifts(void **state)
{
	assert_true(holds_set("d@example.org", 60, 0));
	assert_true(holds_set("d@example.org", 0, 1000));
	assert_int_equal(holds_remaining_ms("d@example.org", 1000), 0);
	/* lifting a hold that is not there is fine */
	assert_true(holds_set("nobody@example.org", 0, 0));
}

static void test_longer_than_one_login(void **state)
{
	/* the hold may outlast HOLD_MAX_SECONDS; one login never waits longer */
	assert_true(holds_set("e@example.org", 600, 0));
	assert_int_equal(holds_remaining_ms("e@example.org", 0), 600000);
	assert_int_equal(holds_wait_ms("e@example.org", 0, 0), HOLD_MAX_SECONDS * 1000);
	assert_int_equal(holds_wait_ms("e@example.org", 0, 100000), 20000);
	assert_int_equal(holds_wait_ms("e@example.org", 0, HOLD_MAX_SECONDS * 1000), 0);
	/* a login arriving later waits its own HOLD_MAX_SECONDS at most */
	assert_int_equal(holds_wait_ms("e@example.org", 500000, 500000), 100000);
	/* a short hold ends before the cap */
	assert_true(holds_set("f@example.org", 5, 0));
	assert_int_equal(holds_wait_ms("f@example.org", 0, 1000), 4000);
	assert_int_equal(holds_wait_ms("nobody@example.org", 0, 0), 0);
}

static void test_huge_seconds_saturate(void **state)
{
	assert_true(holds_set("g@example.org", UINT64_MAX, 1000));
	assert_true(holds_remaining_ms("g@example.org", UINT64_MAX - 1) > 0);
	assert_true(holds_set("h@example.org", UINT64_MAX / 1000, UINT64_MAX - 5));
	assert_int_equal(holds_remaining_ms("h@example.org", UINT64_MAX - 5), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_hold_and_expiry),
	        cmocka_unit_test(test_zero_lifts),
	        cmocka_unit_test(test_longer_than_one_login),
	        cmocka_unit_test(test_huge_seconds_saturate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
