/*
 * Counters (see metrics.h).
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "relay.h"
#include "util.h"

#define PATHS          5 /* userspace, sockmap, ktls-splice, splice, none */
#define ADMIN_STATUSES 10
#define HTTP_CLASSES   5 /* 1xx .. 5xx */

static const char *const path_names[PATHS] = {"userspace", "sockmap", "ktls-splice", "splice",
                                              "none"};
static const char *const result_names[LOGIN_RESULTS] = {"ok", "failed", "tempfail"};
/* the statuses the admin API sends; 0 collects anything else */
static const int statuses[ADMIN_STATUSES] = {200, 400, 401, 404, 405, 429, 500, 501, 503, 0};

static atomic_uint_fast64_t sessions_total[PROTO_COUNT];
static atomic_int_fast64_t sessions_active[PROTO_COUNT];
static atomic_uint_fast64_t logins[PROTO_COUNT][LOGIN_RESULTS];
static atomic_uint_fast64_t bytes_up, bytes_down, kicks;
static atomic_uint_fast64_t admin[ADMIN_ENDPOINTS][ADMIN_STATUSES];
/* per destination and data path: ended sessions */
static atomic_uint_fast64_t *dest_sessions; /* [dest * PATHS + path] */
static atomic_uint_fast64_t *dest_errors;
/* HTTP requests: [(dest + 1) * HTTP_CLASSES + class], row 0 = the proxy's own */
static atomic_uint_fast64_t *http_requests;
static size_t n_dest;

void metrics_init(size_t n_dests)
{
	free(dest_sessions);
	free(dest_errors);
	free(http_requests);
	n_dest = n_dests;
	http_requests = xcalloc((n_dests + 1) * HTTP_CLASSES, sizeof(*http_requests));
	dest_sessions = xcalloc(n_dests * PATHS + 1, sizeof(*dest_sessions));
	dest_errors = xcalloc(n_dests + 1, sizeof(*dest_errors));
}

static void add(atomic_uint_fast64_t *v, uint64_t n)
{
	atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

void metrics_session_start(enum proto p)
{
	if ((unsigned)p >= PROTO_COUNT)
		return;
	add(&sessions_total[p], 1);
	atomic_fetch_add_explicit(&sessions_active[p], 1, memory_order_relaxed);
}

void metrics_session_end(enum proto p, int dest, const char *data_path, uint64_t up, uint64_t down)
{
	if ((unsigned)p >= PROTO_COUNT)
		return;
	atomic_fetch_sub_explicit(&sessions_active[p], 1, memory_order_relaxed);
	add(&bytes_up, up);
	add(&bytes_down, down);
	if (dest < 0 || (size_t)dest >= n_dest)
		return;
	size_t path = PATHS - 1;
	for (size_t i = 0; data_path && i < PATHS - 1; i++) {
		if (strcmp(data_path, path_names[i]) == 0)
			path = i;
	}
	add(&dest_sessions[(size_t)dest * PATHS + path], 1);
}

void metrics_login(enum proto p, enum login_result r)
{
	if ((unsigned)p < PROTO_COUNT && (unsigned)r < LOGIN_RESULTS)
		add(&logins[p][r], 1);
}

void metrics_backend_error(int dest)
{
	if (dest >= 0 && (size_t)dest < n_dest)
		add(&dest_errors[dest], 1);
}

void metrics_admin_request(enum admin_endpoint ep, int status)
{
	size_t s = ADMIN_STATUSES - 1;

	if ((unsigned)ep >= ADMIN_ENDPOINTS)
		ep = ADMIN_UNKNOWN;
	for (size_t i = 0; i < ADMIN_STATUSES - 1; i++) {
		if (statuses[i] == status)
			s = i;
	}
	add(&admin[ep][s], 1);
}

void metrics_kicks(size_t n)
{
	add(&kicks, n);
}

void metrics_http_request(int dest, unsigned status)
{
	if (!http_requests || status < 100 || status > 599)
		return;
	size_t row = dest < 0 || (size_t)dest >= n_dest ? 0 : (size_t)dest + 1;
	add(&http_requests[row * HTTP_CLASSES + status / 100 - 1], 1);
}

/* A label value as the text format wants it: backslash, double quote and
 * newline escaped. Destination names are TOML keys and may hold anything. */
static void label(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			evbuffer_add(out, "\\\\", 2);
		else if (*v == '"')
			evbuffer_add(out, "\\\"", 2);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

static void header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{key="value"} v, for the per-destination series */
static void dest_sample(struct evbuffer *out, const char *name, const char *dest,
                        const char *extra_key, const char *extra_val, unsigned long long v)
{
	evbuffer_add_printf(out, "%s{destination=\"", name);
	label(out, dest);
	if (extra_key)
		evbuffer_add_printf(out, "\",%s=\"%s", extra_key, extra_val);
	evbuffer_add_printf(out, "\"} %llu\n", v);
}

void metrics_write(struct evbuffer *out, const char *const *names, size_t n,
                   const struct router_stats *rs, uint64_t now_ms)
{
	if (n > n_dest)
		n = n_dest;

	header(out, "mailsplice_sessions_total", "counter", "Client sessions accepted.");
	for (int p = 0; p < PROTO_COUNT; p++)
		evbuffer_add_printf(out, "mailsplice_sessions_total{protocol=\"%s\"} %llu\n",
		                    proto_name((enum proto)p),
		                    (unsigned long long)get(&sessions_total[p]));
	header(out, "mailsplice_sessions_active", "gauge", "Client sessions open now.");
	for (int p = 0; p < PROTO_COUNT; p++)
		evbuffer_add_printf(out, "mailsplice_sessions_active{protocol=\"%s\"} %lld\n",
		                    proto_name((enum proto)p),
		                    (long long)atomic_load(&sessions_active[p]));
	header(out, "mailsplice_sockmap_sockets", "gauge",
	       "Sockets of relayed sessions in the BPF sockmap now (two per session).");
	evbuffer_add_printf(out, "mailsplice_sockmap_sockets %zu\n", sockmap_slots_in_use());
	header(out, "mailsplice_logins_total", "counter", "Login attempts by result.");
	for (int p = 0; p < PROTO_COUNT; p++)
		for (int r = 0; r < LOGIN_RESULTS; r++)
			evbuffer_add_printf(
			        out,
			        "mailsplice_logins_total{protocol=\"%s\",result=\"%s\"} %llu\n",
			        proto_name((enum proto)p), result_names[r],
			        (unsigned long long)get(&logins[p][r]));
	header(out, "mailsplice_relayed_sessions_total", "counter",
	       "Sessions ended after the login, by destination and data path.");
	for (size_t d = 0; d < n; d++)
		for (size_t k = 0; k < PATHS; k++)
			dest_sample(out, "mailsplice_relayed_sessions_total", names[d], "data_path",
			            path_names[k], get(&dest_sessions[d * PATHS + k]));
	header(out, "mailsplice_backend_errors_total", "counter",
	       "Failed backend connections, TLS handshakes and dialogues.");
	for (size_t d = 0; d < n; d++)
		dest_sample(out, "mailsplice_backend_errors_total", names[d], NULL, NULL,
		            get(&dest_errors[d]));
	header(out, "mailsplice_bytes_total", "counter", "Bytes relayed after the login.");
	evbuffer_add_printf(out,
	                    "mailsplice_bytes_total{direction=\"client_to_backend\"} %llu\n"
	                    "mailsplice_bytes_total{direction=\"backend_to_client\"} %llu\n",
	                    (unsigned long long)get(&bytes_up),
	                    (unsigned long long)get(&bytes_down));
	header(out, "mailsplice_http_requests_total", "counter",
	       "HTTP requests by destination and status class (destination \"\": answered by the "
	       "proxy itself).");
	for (size_t d = 0; http_requests && d <= n; d++)
		for (size_t k = 0; k < HTTP_CLASSES; k++) {
			char cls[4] = {(char)('1' + k), 'x', 'x', '\0'};
			dest_sample(out, "mailsplice_http_requests_total", d ? names[d - 1] : "",
			            "status_class", cls, get(&http_requests[d * HTTP_CLASSES + k]));
		}
	header(out, "mailsplice_kicks_total", "counter",
	       "Sessions asked to close through the admin API.");
	evbuffer_add_printf(out, "mailsplice_kicks_total %llu\n", (unsigned long long)get(&kicks));

	if (rs) {
		header(out, "mailsplice_mapping_cache_hits_total", "counter",
		       "Mapping lookups answered from the cache.");
		evbuffer_add_printf(out, "mailsplice_mapping_cache_hits_total %llu\n",
		                    (unsigned long long)rs->hits);
		header(out, "mailsplice_mapping_cache_misses_total", "counter",
		       "Mapping lookups that went to the store.");
		evbuffer_add_printf(out, "mailsplice_mapping_cache_misses_total %llu\n",
		                    (unsigned long long)rs->misses);
		header(out, "mailsplice_mapping_cache_entries", "gauge", "Mapping cache entries.");
		evbuffer_add_printf(out, "mailsplice_mapping_cache_entries %zu\n", rs->entries);
		if (!rs->remote) { /* a remote store is not counted: see mailsplice_store_* */
			header(out, "mailsplice_mappings", "gauge",
			       "Accounts in the mapping file.");
			evbuffer_add_printf(out, "mailsplice_mappings %zu\n", rs->mappings);
		}
	}

	header(out, "mailsplice_destination_down", "gauge",
	       "1 while the destination's circuit breaker is open.");
	for (size_t d = 0; d < n; d++) {
		struct health_state h = {0};
		health_get(d, now_ms, &h);
		dest_sample(out, "mailsplice_destination_down", names[d], NULL, NULL, h.down);
	}
	header(out, "mailsplice_destination_consecutive_failures", "gauge",
	       "Consecutive backend failures counted by the circuit breaker.");
	for (size_t d = 0; d < n; d++) {
		struct health_state h = {0};
		health_get(d, now_ms, &h);
		dest_sample(out, "mailsplice_destination_consecutive_failures", names[d], NULL,
		            NULL, h.consecutive_failures);
	}

	header(out, "mailsplice_admin_requests_total", "counter",
	       "Admin API requests by endpoint and status (0: any other status).");
	for (size_t e = 0; e < ADMIN_ENDPOINTS; e++)
		for (size_t s = 0; s < ADMIN_STATUSES; s++) {
			uint64_t v = get(&admin[e][s]);
			if (v)
				evbuffer_add_printf(
				        out,
				        "mailsplice_admin_requests_total{endpoint=\"%s\","
				        "status=\"%d\"} %llu\n",
				        admin_endpoint_name((enum admin_endpoint)e), statuses[s],
				        (unsigned long long)v);
		}
}
