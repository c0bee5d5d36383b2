/*
 * Admin API lockout: lockout_threshold authentication failures from one
 * client address lock that address out for lockout_duration. As in the
 * Stalwart proxy, failures older than the duration no longer count, a
 * success clears the address, and a locked address is refused before its
 * token is even looked at, so the lock ends lockout_duration after the
 * failure that set it. A threshold of 0 disables the lockout.
 *
 * The table has a fixed number of slots so that a flood of addresses
 * cannot grow memory; a slot whose failures have aged out is reused first.
 * Not thread-safe: the admin API runs on one event loop.
 */
#ifndef MAILSPLICE_ADMIN_LOCKOUT_H
#define MAILSPLICE_ADMIN_LOCKOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct admin_lockout_slot {
	char addr[64]; /* "" = free */
	unsigned failures;
	uint64_t last_failure_ms;
};

struct admin_lockout {
	unsigned threshold;
	uint64_t duration_ms;
	size_t n_slots;
	struct admin_lockout_slot *slots;
};

void admin_lockout_init(struct admin_lockout *l, unsigned threshold, uint64_t duration_ms,
                        size_t n_slots);
void admin_lockout_free(struct admin_lockout *l);

bool admin_lockout_is_locked(const struct admin_lockout *l, const char *addr, uint64_t now_ms);
/* Count a failed authentication; true when this failure locks addr. */
bool admin_lockout_failure(struct admin_lockout *l, const char *addr, uint64_t now_ms);
void admin_lockout_success(struct admin_lockout *l, const char *addr);

#endif
