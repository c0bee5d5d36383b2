/*
 * Counters (see metrics.h).
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define PATHS           5 /* userspace, sockmap, ktls-splice, splice, none */
#define ADMIN_ENDPOINTS 16
#define ADMIN_STATUSES  8

static const char *const path_names[PATHS] = {"userspace", "sockmap", "ktls-splice", "splice",
                                              "none"};
static const char *const result_names[LOGIN_RESULTS] = {"ok", "failed", "tempfail"};
static const int statuses[ADMIN_STATUSES] = {200, 400, 401, 404, 405, 429, 500, 0};
static const char *const endpoints[ADMIN_ENDPOINTS] = {"/healthz",
                                                       "/stats",
                                                       "/metrics",
                                                       "/destinations",
                                                       "/destinations/reset",
                                                       "/mappings",
                                                       "/mappings/reload",
                                                       "/cache/invalidate",
                                                       "/sessions",
                                                       "/connections/kick",
                                                       "/connections/delay",
                                                       "/config/reload",
                                                       "other",
                                                       NULL,
                                                       NULL,
                                                       NULL};

static atomic_uint_fast64_t sessions_total[PROTO_COUNT];
static atomic_int_fast64_t sessions_active[PROTO_COUNT];
static atomic_uint_fast64_t logins[PROTO_COUNT][LOGIN_RESULTS];
static atomic_uint_fast64_t bytes_up, bytes_down;
static atomic_uint_fast64_t admin[ADMIN_ENDPOINTS][ADMIN_STATUSES];
/* per destination and data path: ended sessions */
static atomic_uint_fast64_t *dest_sessions; /* [dest * PATHS + path] */
static atomic_uint_fast64_t *dest_errors;
static size_t n_dest;

void metrics_init(size_t n_dests)
{
	n_dest = n_dests;
	dest_sessions = xcalloc(n_dests * PATHS + 1, sizeof(*dest_sessions));
	dest_errors = xcalloc(n_dests + 1, sizeof(*dest_errors));
}

void metrics_session_start(enum proto p)
{
	atomic_fetch_add_explicit(&sessions_total[p], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sessions_active[p], 1, memory_order_relaxed);
}

void metrics_session_end(enum proto p, int dest, const char *data_path, uint64_t up, uint64_t down)
{
	atomic_fetch_sub_explicit(&sessions_active[p], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&bytes_up, up, memory_order_relaxed);
	atomic_fetch_add_explicit(&bytes_down, down, memory_order_relaxed);
	if (dest < 0 || (size_t)dest >= n_dest)
		return;
	size_t path = PATHS - 1;
	for (size_t i = 0; data_path && i < PATHS - 1; i++) {
		if (strcmp(data_path, path_names[i]) == 0)
			path = i;
	}
	atomic_fetch_add_explicit(&dest_sessions[(size_t)dest * PATHS + path], 1,
	                          memory_order_relaxed);
}

void metrics_login(enum proto p, enum login_result r)
{
	atomic_fetch_add_explicit(&logins[p][r], 1, memory_order_relaxed);
}

void metrics_backend_error(int dest)
{
	if (dest >= 0 && (size_t)dest < n_dest)
		atomic_fetch_add_explicit(&dest_errors[dest], 1, memory_order_relaxed);
}

void metrics_admin_request(const char *endpoint, int status)
{
	size_t e = 12, s = ADMIN_STATUSES - 1;
	for (size_t i = 0; endpoints[i]; i++) {
		if (strcmp(endpoints[i], endpoint) == 0)
			e = i;
	}
	for (size_t i = 0; i < ADMIN_STATUSES - 1; i++) {
		if (statuses[i] == status)
			s = i;
	}
	atomic_fetch_add_explicit(&admin[e][s], 1, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

void metrics_write(struct evbuffer *out, const char *const *names, size_t n)
{
	evbuffer_add_printf(out, "# HELP mailsplice_sessions_total Client sessions accepted.\n"
	                         "# TYPE mailsplice_sessions_total counter\n");
	for (int p = 0; p < PROTO_COUNT; p++)
		evbuffer_add_printf(out, "mailsplice_sessions_total{protocol=\"%s\"} %llu\n",
		                    proto_name((enum proto)p),
		                    (unsigned long long)get(&sessions_total[p]));
	evbuffer_add_printf(out, "# HELP mailsplice_sessions_active Client sessions open now.\n"
	                         "# TYPE mailsplice_sessions_active gauge\n");
	for (int p = 0; p < PROTO_COUNT; p++)
		evbuffer_add_printf(out, "mailsplice_sessions_active{protocol=\"%s\"} %lld\n",
		                    proto_name((enum proto)p),
		                    (long long)atomic_load(&sessions_active[p]));
	evbuffer_add_printf(out, "# HELP mailsplice_logins_total Login attempts by result.\n"
	                         "# TYPE mailsplice_logins_total counter\n");
	for (int p = 0; p < PROTO_COUNT; p++)
		for (int r = 0; r < LOGIN_RESULTS; r++)
			evbuffer_add_printf(
			        out,
			        "mailsplice_logins_total{protocol=\"%s\",result=\"%s\"} %llu\n",
			        proto_name((enum proto)p), result_names[r],
			        (unsigned long long)get(&logins[p][r]));
	evbuffer_add_printf(out, "# HELP mailsplice_relayed_sessions_total Sessions ended after "
	                         "the login, by destination and data path.\n"
	                         "# TYPE mailsplice_relayed_sessions_total counter\n");
	for (size_t d = 0; d < n && d < n_dest; d++)
		for (size_t k = 0; k < PATHS; k++)
			evbuffer_add_printf(out,
			                    "mailsplice_relayed_sessions_total{destination=\"%s\","
			                    "data_path=\"%s\"} "
			                    "%llu\n",
			                    names[d], path_names[k],
			                    (unsigned long long)get(&dest_sessions[d * PATHS + k]));
	evbuffer_add_printf(out, "# HELP mailsplice_backend_errors_total Failed backend "
	                         "connections, TLS handshakes and dialogues.\n"
	                         "# TYPE mailsplice_backend_errors_total counter\n");
	for (size_t d = 0; d < n && d < n_dest; d++)
		evbuffer_add_printf(out,
		                    "mailsplice_backend_errors_total{destination=\"%s\"} %llu\n",
		                    names[d], (unsigned long long)get(&dest_errors[d]));
	evbuffer_add_printf(out,
	                    "# HELP mailsplice_bytes_total Bytes relayed after the login.\n"
	                    "# TYPE mailsplice_bytes_total counter\n"
	                    "mailsplice_bytes_total{direction=\"client_to_backend\"} %llu\n"
	                    "mailsplice_bytes_total{direction=\"backend_to_client\"} %llu\n",
	                    (unsigned long long)get(&bytes_up),
	                    (unsigned long long)get(&bytes_down));
	evbuffer_add_printf(out, "# HELP mailsplice_admin_requests_total Admin API requests.\n"
	                         "# TYPE mailsplice_admin_requests_total counter\n");
	for (size_t e = 0; endpoints[e]; e++)
		for (size_t s = 0; s < ADMIN_STATUSES; s++) {
			uint64_t v = get(&admin[e][s]);
			if (v)
				evbuffer_add_printf(
				        out,
				        "mailsplice_admin_requests_total{endpoint=\"%s\","
				        "status=\"%d\"} %llu\n",
				        endpoints[e], statuses[s], (unsigned long long)v);
		}
}
