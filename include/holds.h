/*
 * Login holds (POST /connections/delay): new logins of an account wait
 * until the hold expires, e.g. while its mailbox is copied. Thread-safe.
 */
#ifndef MAILSPLICE_HOLDS_H
#define MAILSPLICE_HOLDS_H

#include <stdbool.h>
#include <stdint.h>

#define HOLD_MAX_SECONDS 120

/* Hold account's logins for seconds (1..HOLD_MAX_SECONDS) from now_ms. */
bool holds_set(const char *account, unsigned seconds, uint64_t now_ms);
/* Milliseconds left on account's hold, 0 if none. */
uint64_t holds_remaining_ms(const char *account, uint64_t now_ms);

#endif
