/* The Prometheus exposition: every line a HELP, a TYPE or a sample of a
 * declared family, label values escaped, counters counting. */
#include "unit.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include <event2/buffer.h>

#include "health.h"
#include "metrics.h"

static char *render(const char *const *names, size_t n)
{
	struct router_stats rs = {.hits = 3, .misses = 1, .entries = 2, .mappings = 7};
	struct evbuffer *b = evbuffer_new();

	metrics_write(b, names, n, &rs, 0);
	size_t len = evbuffer_get_length(b);
	char *s = malloc(len + 1);
	evbuffer_copyout(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

static bool metric_name(const char **p)
{
	const char *s = *p;
	if (!(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
		return false;
	while (isalnum((unsigned char)*s) || *s == '_' || *s == ':')
		s++;
	*p = s;
	return true;
}

/* A strict reading of one sample line: name{k="v",...} value */
static bool sample_ok(const char *line, char *name, size_t namelen)
{
	const char *p = line;
	if (!metric_name(&p) || (size_t)(p - line) >= namelen)
		return false;
	memcpy(name, line, (size_t)(p - line));
	name[p - line] = '\0';
	if (*p == '{') {
		p++;
		for (;;) {
			if (!metric_name(&p) || *p++ != '=' || *p++ != '"')
				return false;
			while (*p && *p != '"') {
				if (*p == '\\') {
					p++;
					if (*p != '\\' && *p != '"' && *p != 'n')
						return false;
				}
				if (*p == '\n' || !*p)
					return false;
				p++;
			}
			if (*p++ != '"')
				return false;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p++ != '}')
				return false;
			break;
		}
	}
	if (*p++ != ' ')
		return false;
	char *end;
	strtod(p, &end);
	return end != p && *end == '\0';
}

static void check_format(char *text)
{
	char typed[64][96];
	size_t n_typed = 0;

	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char name[96];
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char type[32];
			assert_int_equal(sscanf(line + 7, "%95s %31s", name, type), 2);
			assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0);
			for (size_t i = 0; i < n_typed; i++)
				assert_string_not_equal(typed[i], name); /* TYPE once */
			assert_true(n_typed < 64);
			strcpy(typed[n_typed++], name);
			continue;
		}
		assert_true(sample_ok(line, name, sizeof(name)));
		bool declared = false;
		for (size_t i = 0; i < n_typed; i++)
			declared |= strcmp(typed[i], name) == 0;
		assert_true(declared);
	}
}

static void test_format_is_strict_text(void **state)
{
	static const char *const names[] = {"legacy", "new"};

	metrics_init(2);
	health_init(2, 1, 30000, 1);
	char *s = render(names, 2);
	check_format(s);
	free(s);
}

static void test_label_values_escaped(void **state)
{
	/* destination names are TOML keys: quoted keys may hold anything */
	static const char *const names[] = {"we\"ird\\name\nx"};

	metrics_init(1);
	health_init(1, 1, 30000, 1);
	char *s = render(names, 1);
	assert_non_null(
	        strstr(s, "mailsplice_destination_down{destination=\"we\\\"ird\\\\name\\nx\"} 0"));
	check_format(s);
	free(s);
}

static void test_counters_count(void **state)
{
	static const char *const names[] = {"legacy", "new"};
	struct sockaddr_in sa = {.sin_family = AF_INET};

	metrics_init(2);
	health_init(2, 1, 30000, 1);
	metrics_session_start(PROTO_IMAP);
	metrics_session_start(PROTO_IMAP);
	metrics_session_end(PROTO_IMAP, 1, "splice", 10, 20);
	metrics_login(PROTO_IMAP, LOGIN_OK);
	metrics_login(PROTO_POP3, LOGIN_TEMPFAIL);
	metrics_backend_error(0);
	metrics_backend_error(7);                        /* unknown destination: ignored */
	metrics_session_end(PROTO_COUNT, 0, NULL, 0, 0); /* out of range: ignored */
	metrics_admin_request(ADMIN_MAPPINGS, 200);
	metrics_admin_request(ADMIN_MAPPINGS, 418); /* collected as status 0 */
	metrics_kicks(2);
	health_record_failure(0, (const struct sockaddr *)&sa, 0);
	char *s = render(names, 2);
	assert_non_null(strstr(s, "mailsplice_sessions_active{protocol=\"imap\"} 1\n"));
	assert_non_null(
	        strstr(s, "mailsplice_logins_total{protocol=\"pop3\",result=\"tempfail\"} 1\n"));
	assert_non_null(strstr(
	        s,
	        "mailsplice_relayed_sessions_total{destination=\"new\",data_path=\"splice\"} 1\n"));
	assert_non_null(strstr(s, "mailsplice_backend_errors_total{destination=\"legacy\"} 1\n"));
	assert_non_null(strstr(s, "mailsplice_bytes_total{direction=\"backend_to_client\"} 20\n"));
	assert_non_null(strstr(s, "mailsplice_kicks_total 2\n"));
	assert_non_null(strstr(s, "mailsplice_mapping_cache_hits_total 3\n"));
	assert_non_null(strstr(s, "mailsplice_destination_down{destination=\"legacy\"} 1\n"));
	assert_non_null(strstr(
	        s, "mailsplice_admin_requests_total{endpoint=\"/mappings\",status=\"200\"} 1\n"));
	assert_non_null(strstr(
	        s, "mailsplice_admin_requests_total{endpoint=\"/mappings\",status=\"0\"} 1\n"));
	check_format(s);
	free(s);
}

/* HTTP requests by destination and status class; the proxy's own answers
 * (no destination reached) under destination="". */
static void test_http_requests(void **state)
{
	static const char *const names[] = {"old", "new"};

	metrics_init(2);
	health_init(2, 1, 30000, 1);
	metrics_http_request(1, 200);
	metrics_http_request(1, 204);
	metrics_http_request(0, 502);
	metrics_http_request(-1, 400);
	metrics_http_request(-1, 404);
	metrics_http_request(1, 99);  /* not a status: ignored */
	metrics_http_request(1, 600); /* likewise */
	metrics_http_request(9, 101); /* unknown destination: the proxy's row */
	char *s = render(names, 2);
	assert_non_null(strstr(
	        s, "mailsplice_http_requests_total{destination=\"new\",status_class=\"2xx\"} 2\n"));
	assert_non_null(strstr(
	        s, "mailsplice_http_requests_total{destination=\"old\",status_class=\"5xx\"} 1\n"));
	assert_non_null(strstr(
	        s, "mailsplice_http_requests_total{destination=\"old\",status_class=\"2xx\"} 0\n"));
	assert_non_null(strstr(
	        s, "mailsplice_http_requests_total{destination=\"\",status_class=\"4xx\"} 2\n"));
	assert_non_null(strstr(
	        s, "mailsplice_http_requests_total{destination=\"\",status_class=\"1xx\"} 1\n"));
	check_format(s);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_format_is_strict_text),
	        cmocka_unit_test(test_label_values_escaped),
	        cmocka_unit_test(test_counters_count),
	        cmocka_unit_test(test_http_requests),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
