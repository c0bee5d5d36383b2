/*
 * Pipes for splice(2): a per-thread pool, capacities that grow for busy
 * directions, and the per-user pipe-page budget (docs/datapath.md).
 *
 * Splicing costs per call, not per byte, and one call moves at most what
 * the pipe holds: a default pipe has 16 slots, which loopback fills with
 * 4 KiB each and a real NIC with one packet each. So a direction that keeps
 * filling its pipe gets a bigger one (F_SETPIPE_SZ), up to the configured
 * maximum. The kernel counts every pipe page against the user that owns
 * it (/proc/sys/fs/pipe-user-pages-soft, 16,384 pages by default); past
 * that, an unprivileged user's new pipes get 2 slots and F_SETPIPE_SZ
 * fails with EPERM. So pages above the default size come from one budget
 * shared by all threads, only a few grown pipes stay pooled, and a refusal
 * leaves the pipe as it is: smaller, never broken.
 *
 * Idle sessions hold no pipe: a direction takes one while bytes are in
 * flight and gives it back empty. A pipe with bytes in it is never pooled.
 */
#ifndef MAILSPLICE_PIPES_H
#define MAILSPLICE_PIPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPIPE_DEFAULT (64 * 1024) /* a new pipe: 16 pages */

struct spipe {
	int rd, wr;   /* -1 when none */
	uint32_t cap; /* bytes the pipe holds (F_GETPIPE_SZ) */
};

#define SPIPE_NONE ((struct spipe){.rd = -1, .wr = -1, .cap = 0})

/* Take a pipe from this thread's pool, or make one. want: the capacity the
 * caller would like; a pooled grown pipe is preferred when want is above
 * the default, but the result may be smaller. False: no pipe (EMFILE...),
 * errno says why. */
bool spipe_get(struct spipe *p, uint32_t want);

/* Grow an empty pipe toward want, within the page budget. False when it
 * stays as it is (budget spent, EPERM, or already that big). */
bool spipe_grow(struct spipe *p, uint32_t want);

/* Give the pipe back; empty says whether it holds no bytes (only empty
 * pipes are pooled, the others are closed). p becomes SPIPE_NONE. */
void spipe_put(struct spipe *p, bool empty);

/* A pipe that came from elsewhere (a predecessor's, docs/upgrade.md; or one
 * made to carry a buffer to a successor): count its pages like one of ours
 * and take it. False (nothing taken) if it is not a pipe. */
bool spipe_adopt(struct spipe *p, int rd, int wr);

/* Pipe pages above the default size held by grown pipes (all threads),
 * and the budget for them. For tests and /metrics. */
size_t spipe_grown_pages(void);
size_t spipe_budget_pages(void);

#endif
