/*
 * Per-destination backend health: the circuit breaker of [server]
 * host_down_threshold / host_down_cooldown / host_down_min_clients.
 *
 * A destination is marked down after threshold consecutive failures
 * (connect, TLS, greeting) seen from at least min_clients distinct client
 * addresses, so one client cannot take a backend out for everyone. While
 * down, logins routed to it fail at once with the protocol's temporary
 * error; after the cooldown one attempt is let through again (half-open):
 * its failure trips the breaker again, its success closes it. Thread-safe.
 */
#ifndef MAILSPLICE_HEALTH_H
#define MAILSPLICE_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

/* Distinct client addresses remembered per failure streak; a larger
 * min_clients is treated as this many. */
#define HEALTH_DISTINCT_MAX 64

/* threshold 0 disables the breaker; min_clients 0 counts as 1. Calling it
 * again (tests) starts from a clean state. */
void health_init(size_t n_dests, unsigned threshold, uint64_t cooldown_ms, unsigned min_clients);
bool health_is_down(size_t dest, uint64_t now_ms);
void health_record_failure(size_t dest, const struct sockaddr *client, uint64_t now_ms);
void health_record_success(size_t dest);
/* Clear the failure count and the down state; false for an unknown index. */
bool health_reset(size_t dest);

struct health_state {
	unsigned consecutive_failures;
	bool down;
};
bool health_get(size_t dest, uint64_t now_ms, struct health_state *out);

/* GET /destinations: [{"destination","consecutive_failures","down"}, ...]
 * for names[0..n). Caller decrefs. */
json_t *health_json(const char *const *names, size_t n, uint64_t now_ms);

#endif
