/* Judging the records a kernel TLS receive socket will not splice (ktls.h), once
 * the SSL objects are gone. Record and message types: RFC 8446 sections 5.1, 4,
 * 4.6.3 (KeyUpdate), 6 (alerts); RFC 5246 section 7.4.1.1 (HelloRequest "MAY be
 * ignored by the client if it does not wish to renegotiate"). */
#include "unit.h"

#include <string.h>

#include "ktls.h"

static enum ktls_record judge(unsigned type, const char *rec, size_t n, bool tls13)
{
	char why[160] = "";
	enum ktls_record r =
	        ktls_judge_record(type, (const uint8_t *)rec, n, tls13, why, sizeof(why));
	/* a fatal verdict always says why, nothing else needs to */
	if (r == KTLS_FATAL)
		assert_true(why[0] != '\0');
	return r;
}

static void test_application_data_is_forwarded(void **state)
{
	assert_int_equal(judge(KTLS_CT_APPLICATION_DATA, "a1 OK\r\n", 7, true), KTLS_DATA);
	assert_int_equal(judge(KTLS_CT_APPLICATION_DATA, "", 0, false), KTLS_DATA);
}

static void test_close_notify_ends_the_stream(void **state)
{
	/* RFC 8446 section 6.1: close_notify = alert description 0 */
	assert_int_equal(judge(KTLS_CT_ALERT, "\x01\x00", 2, true), KTLS_CLOSE);
	assert_int_equal(judge(KTLS_CT_ALERT, "\x01\x00", 2, false), KTLS_CLOSE);
}

static void test_other_alerts_and_malformed_alerts_are_fatal(void **state)
{
	char why[160];

	/* decrypt_error (51) */
	assert_int_equal(ktls_judge_record(KTLS_CT_ALERT, (const uint8_t *)"\x02\x33", 2, true, why,
	                                   sizeof(why)),
	                 KTLS_FATAL);
	assert_non_null(strstr(why, "51"));
	assert_int_equal(judge(KTLS_CT_ALERT, "\x01", 1, true), KTLS_FATAL);
	assert_int_equal(judge(KTLS_CT_ALERT, "\x01\x00\x00", 3, true), KTLS_FATAL);
}

static void test_tls13_session_tickets_are_dropped(void **state)
{
	/* NewSessionTicket (4), body of 5 bytes; two in one record */
	static const char two[] = "\x04\x00\x00\x05"
	                          "abcde"
	                          "\x04\x00\x00\x01z";
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, two, sizeof(two) - 1, true), KTLS_IGNORED);
	/* not in TLS 1.2, where tickets are part of the handshake */
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, two, sizeof(two) - 1, false), KTLS_FATAL);
}

static void test_key_update_ends_the_session_and_says_so(void **state)
{
	char why[160];
	/* RFC 8446 section 4.6.3: KeyUpdate (24), update_not_requested */
	static const char ku[] = "\x18\x00\x00\x01\x00";
	assert_int_equal(ktls_judge_record(KTLS_CT_HANDSHAKE, (const uint8_t *)ku, 5, true, why,
	                                   sizeof(why)),
	                 KTLS_FATAL);
	assert_non_null(strstr(why, "KeyUpdate"));
	/* after a ticket in the same record, still seen */
	static const char both[] = "\x04\x00\x00\x01z\x18\x00\x00\x01\x01";
	assert_int_equal(ktls_judge_record(KTLS_CT_HANDSHAKE, (const uint8_t *)both, 10, true, why,
	                                   sizeof(why)),
	                 KTLS_FATAL);
	assert_non_null(strstr(why, "KeyUpdate"));
}

static void test_tls12_hello_request_is_ignored_renegotiation_is_not(void **state)
{
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x00\x00\x00\x00", 4, false), KTLS_IGNORED);
	/* a HelloRequest has an empty body */
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x00\x00\x00\x01x", 5, false), KTLS_FATAL);
	/* a ClientHello (1) asking to renegotiate */
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x01\x00\x00\x02xy", 6, false), KTLS_FATAL);
	/* HelloRequest does not exist in TLS 1.3 */
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x00\x00\x00\x00", 4, true), KTLS_FATAL);
}

static void test_truncated_or_split_messages_are_fatal(void **state)
{
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "", 0, true), KTLS_FATAL);
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x04\x00\x00", 3, true), KTLS_FATAL);
	/* the length says more than the record holds */
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x04\x00\x01\x00zz", 6, true), KTLS_FATAL);
	assert_int_equal(judge(KTLS_CT_HANDSHAKE, "\x04\xff\xff\xffzz", 6, true), KTLS_FATAL);
}

static void test_unknown_record_types_are_fatal(void **state)
{
	/* change_cipher_spec (20) is never legal after the handshake; 24 is heartbeat */
	assert_int_equal(judge(20, "\x01", 1, true), KTLS_FATAL);
	assert_int_equal(judge(24, "\x01", 1, false), KTLS_FATAL);
	assert_int_equal(judge(255, "", 0, false), KTLS_FATAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_application_data_is_forwarded),
	        cmocka_unit_test(test_close_notify_ends_the_stream),
	        cmocka_unit_test(test_other_alerts_and_malformed_alerts_are_fatal),
	        cmocka_unit_test(test_tls13_session_tickets_are_dropped),
	        cmocka_unit_test(test_key_update_ends_the_session_and_says_so),
	        cmocka_unit_test(test_tls12_hello_request_is_ignored_renegotiation_is_not),
	        cmocka_unit_test(test_truncated_or_split_messages_are_fatal),
	        cmocka_unit_test(test_unknown_record_types_are_fatal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
