/*
 * Process-wide counters for GET /metrics (Prometheus text format).
 * Relaxed atomics: each counter is exact, a scrape is not a snapshot.
 */
#ifndef MAILSPLICE_METRICS_H
#define MAILSPLICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "config.h"

enum login_result {
	LOGIN_OK,
	LOGIN_FAILED,   /* the backend (or we) refused the credentials */
	LOGIN_TEMPFAIL, /* backend unavailable, store error */
	LOGIN_RESULTS,
};

void metrics_init(size_t n_dests);
void metrics_session_start(enum proto p);
void metrics_session_end(enum proto p, int dest, const char *data_path, uint64_t up, uint64_t down);
void metrics_login(enum proto p, enum login_result r);
void metrics_backend_error(int dest);
void metrics_admin_request(const char *endpoint, int status);

/* Append the exposition; names[] are the destination names. */
void metrics_write(struct evbuffer *out, const char *const *dest_names, size_t n_dests);

#endif
