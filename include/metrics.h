/*
 * Process-wide counters for GET /metrics (Prometheus text format 0.0.4).
 * Relaxed atomics: each counter is exact, a scrape is not a snapshot.
 */
#ifndef MAILSPLICE_METRICS_H
#define MAILSPLICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "admin_route.h"
#include "config.h"
#include "mapping.h"

enum login_result {
	LOGIN_OK,
	LOGIN_FAILED,   /* the backend (or we) refused the credentials */
	LOGIN_TEMPFAIL, /* backend unavailable, store error */
	LOGIN_RESULTS,
};

/* Once, before any session starts. */
void metrics_init(size_t n_dests);
void metrics_session_start(enum proto p);
/* dest < 0: the session ended before reaching a backend. data_path names
 * the relay ("userspace", "sockmap", "ktls-splice", "splice"). */
void metrics_session_end(enum proto p, int dest, const char *data_path, uint64_t up, uint64_t down);
void metrics_login(enum proto p, enum login_result r);
void metrics_backend_error(int dest);
void metrics_admin_request(enum admin_endpoint ep, int status);
/* Sessions asked to close by POST /connections/kick. */
void metrics_kicks(size_t n);
/* One HTTP request answered with status; dest < 0 when the proxy answered
 * it itself (a malformed request, no route, no backend reached). */
void metrics_http_request(int dest, unsigned status);

/* Append the whole exposition: the counters above, the mapping cache
 * (rs) and every destination's circuit breaker. names[] are the
 * destination names. */
void metrics_write(struct evbuffer *out, const char *const *names, size_t n_dests,
                   const struct router_stats *rs, uint64_t now_ms);

#endif
