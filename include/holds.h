/*
 * Login holds (POST /connections/delay): new logins of an account wait
 * while its hold lasts, e.g. during the final copy of its mailbox. As in
 * the Stalwart proxy the hold itself may be of any length (0 lifts it),
 * but one login is never held longer than HOLD_MAX_SECONDS: a client that
 * waits longer than that gives up, and a login that proceeds routes with
 * the mapping in force by then. Thread-safe.
 */
#ifndef MAILSPLICE_HOLDS_H
#define MAILSPLICE_HOLDS_H

#include <stdbool.h>
#include <stdint.h>

#define HOLD_MAX_SECONDS 120

/* Hold account's logins until now_ms + seconds; 0 lifts the hold. False
 * only when the table is full of live holds. */
bool holds_set(const char *account, uint64_t seconds, uint64_t now_ms);
/* Milliseconds left on account's hold, 0 if none. */
uint64_t holds_remaining_ms(const char *account, uint64_t now_ms);
/* How much longer a login that started waiting at held_since_ms should
 * wait: what is left of the hold, cut at HOLD_MAX_SECONDS after
 * held_since_ms. 0: proceed now. */
uint64_t holds_wait_ms(const char *account, uint64_t held_since_ms, uint64_t now_ms);

#endif
