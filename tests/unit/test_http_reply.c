/*
 * The HTTP proxy's own answers (http_proxy.h): which status a failure
 * gets, and the shape of the response that carries it.
 */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "http_proxy.h"

/* A store that cannot answer is a temporary error, never a route to the
 * default destination (mapping.h); a backend that does not answer in time
 * is a gateway timeout (RFC 9110 15.6.5), one that is down a bad gateway
 * (15.6.3). */
static void test_failure_status(void **state)
{
	assert_int_equal(http_failure_status(BACKEND_FAIL_LOOKUP, false), 503);
	assert_int_equal(http_failure_status(BACKEND_FAIL_LOOKUP, true), 503);
	assert_int_equal(http_failure_status(BACKEND_FAIL_UNAVAILABLE, true), 504);
	assert_int_equal(http_failure_status(BACKEND_FAIL_UNAVAILABLE, false), 502);
	assert_int_equal(http_failure_status(BACKEND_FAIL_BAD_LOGIN, false), 502);
}

static void test_error_response_shape(void **state)
{
	char out[512];
	size_t n = http_error_response(502, false, false, out, sizeof(out));

	assert_true(n > 0 && n < sizeof(out));
	out[n] = '\0';
	assert_non_null(strstr(out, "HTTP/1.1 502 Bad Gateway\r\n"));
	assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
	assert_non_null(strstr(out, "\r\nCache-Control: no-store\r\n"));
	/* the body is one line, and Content-Length says exactly its size */
	const char *body = strstr(out, "\r\n\r\n") + 4;
	size_t len = strlen(body);
	assert_int_equal(body[len - 1], '\n');
	assert_null(memchr(body, '\n', len - 1));
	char want[64];
	snprintf(want, sizeof(want), "\r\nContent-Length: %zu\r\n", len);
	assert_non_null(strstr(out, want));
}

/* 503 says when to come back (RFC 9110 10.2.3); keep-alive is honoured. */
static void test_503_retry_after_and_keep_alive(void **state)
{
	char out[512];
	size_t n = http_error_response(503, true, false, out, sizeof(out));

	out[n] = '\0';
	assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
	assert_non_null(strstr(out, "\r\nRetry-After: 5\r\n"));
	assert_non_null(strstr(out, "\r\nConnection: keep-alive\r\n"));
}

/* A HEAD request gets the head only, with the length a GET would have had
 * (RFC 9110 9.3.2). */
static void test_head_request_has_no_body(void **state)
{
	char get[512], head[512];
	size_t g = http_error_response(404, true, false, get, sizeof(get));
	size_t h = http_error_response(404, true, true, head, sizeof(head));

	get[g] = head[h] = '\0';
	assert_true(h < g);
	assert_true(strcmp(head + h - 4, "\r\n\r\n") == 0);
	assert_memory_equal(get, head, h);
}

static void test_too_small_buffer(void **state)
{
	char out[40];
	assert_int_equal(http_error_response(400, false, false, out, sizeof(out)), 0);
}

static void test_reasons(void **state)
{
	static const unsigned codes[] = {400, 404, 408, 414, 431, 501, 502, 503, 504, 505};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		assert_string_not_equal(http_reason(codes[i]), "Error");
	assert_string_equal(http_reason(431), "Request Header Fields Too Large");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_failure_status),
	        cmocka_unit_test(test_error_response_shape),
	        cmocka_unit_test(test_503_retry_after_and_keep_alive),
	        cmocka_unit_test(test_head_request_has_no_body),
	        cmocka_unit_test(test_too_small_buffer),
	        cmocka_unit_test(test_reasons),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
