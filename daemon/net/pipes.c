/*
 * Pipes for splice(2) (see pipes.h).
 *
 * Two pools per thread: default-size pipes (many: they are cheap, 16
 * pages) and grown pipes (few: each can hold 256 pages). The pages grown
 * pipes hold above the default size are counted across all threads
 * against one budget: half the per-user soft limit, so that the default
 * pipes of busy sessions still fit under it and keep their 16 slots.
 */
#include "pipes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define SMALL_POOL_MAX 64 /* idle default pipes kept per thread */
#define BIG_POOL_MAX   4  /* idle grown pipes kept per thread */
#define PAGE           4096u
/* pipe-user-pages-soft's default; also the budget's base when the limit
 * is off (0) or cannot be read */
#define SOFT_DEFAULT_PAGES 16384

static __thread struct spipe small_pool[SMALL_POOL_MAX];
static __thread int small_n;
static __thread struct spipe big_pool[BIG_POOL_MAX];
static __thread int big_n;
/* after a refusal, do not ask again for a while: every wake-up of every
 * busy direction would otherwise pay for one more failing fcntl */
static __thread unsigned grow_backoff;

static atomic_long grown_pages;       /* pages above SPIPE_DEFAULT, all threads */
static atomic_long budget_pages = -1; /* -1: not read yet */
static atomic_flag refusal_logged = ATOMIC_FLAG_INIT;

static long pages_of(uint32_t cap)
{
	return cap > SPIPE_DEFAULT ? (long)((cap - SPIPE_DEFAULT) / PAGE) : 0;
}

static long budget(void)
{
	long b = atomic_load_explicit(&budget_pages, memory_order_relaxed);

	if (b >= 0)
		return b;
	long soft = SOFT_DEFAULT_PAGES;
	FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "re");
	if (f) {
		long v;
		if (fscanf(f, "%ld", &v) == 1 && v > 0)
			soft = v;
		fclose(f);
	}
	b = soft / 2;
	atomic_store_explicit(&budget_pages, b, memory_order_relaxed);
	return b;
}

size_t spipe_grown_pages(void)
{
	return (size_t)atomic_load_explicit(&grown_pages, memory_order_relaxed);
}

size_t spipe_budget_pages(void)
{
	return (size_t)budget();
}

static void close_pipe(struct spipe *p)
{
	if (p->rd >= 0) {
		close(p->rd);
		close(p->wr);
		atomic_fetch_sub_explicit(&grown_pages, pages_of(p->cap), memory_order_relaxed);
	}
	*p = SPIPE_NONE;
}

bool spipe_get(struct spipe *p, uint32_t want)
{
	if (p->rd >= 0)
		return true;
	if (want > SPIPE_DEFAULT && big_n > 0) {
		*p = big_pool[--big_n];
		return true;
	}
	if (small_n > 0) {
		*p = small_pool[--small_n];
		return true;
	}
	if (big_n > 0) {
		*p = big_pool[--big_n];
		return true;
	}
	int fds[2];
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
		return false;
	/* over the soft limit an unprivileged user's pipe has 2 slots, not 16 */
	int cap = fcntl(fds[0], F_GETPIPE_SZ);
	*p = (struct spipe){.rd = fds[0], .wr = fds[1], .cap = cap > 0 ? (uint32_t)cap : PAGE};
	atomic_fetch_add_explicit(&grown_pages, pages_of(p->cap), memory_order_relaxed);
	return true;
}

static void refused(uint32_t from, uint32_t to, int err)
{
	grow_backoff = 256;
	if (!atomic_flag_test_and_set(&refusal_logged))
		log_msg(LOG_INFO, "splice-pipe",
		        "state=not-grown from=%u to=%u reason=\"%s\" note=\"pipes stay smaller; "
		        "see pipe-user-pages-soft and pipe-max-size in docs/datapath.md\"",
		        from, to, err ? strerror(err) : "pipe page budget spent");
}

bool spipe_grow(struct spipe *p, uint32_t want)
{
	if (p->rd < 0 || want <= p->cap)
		return false;
	if (grow_backoff > 0) {
		grow_backoff--;
		return false;
	}
	long delta = pages_of(want) - pages_of(p->cap);
	long before = atomic_fetch_add_explicit(&grown_pages, delta, memory_order_relaxed);
	if (before + delta > budget()) {
		atomic_fetch_sub_explicit(&grown_pages, delta, memory_order_relaxed);
		refused(p->cap, want, 0);
		return false;
	}
	int got = fcntl(p->rd, F_SETPIPE_SZ, (int)want);
	if (got < 0) {
		int err = errno;
		atomic_fetch_sub_explicit(&grown_pages, delta, memory_order_relaxed);
		refused(p->cap, want, err);
		return false;
	}
	/* the kernel rounds up to a power of two pages */
	atomic_fetch_add_explicit(&grown_pages, pages_of((uint32_t)got) - pages_of(want),
	                          memory_order_relaxed);
	p->cap = (uint32_t)got;
	return true;
}

void spipe_put(struct spipe *p, bool empty)
{
	if (p->rd < 0)
		return;
	if (!empty) {
		close_pipe(p);
		return;
	}
	if (p->cap > SPIPE_DEFAULT) {
		if (big_n < BIG_POOL_MAX) {
			big_pool[big_n++] = *p;
			*p = SPIPE_NONE;
			return;
		}
		/* one more grown pipe than the pool keeps: back to the default
		 * size (an empty pipe always shrinks), so its pages return to
		 * the budget */
		int got = fcntl(p->rd, F_SETPIPE_SZ, SPIPE_DEFAULT);
		if (got <= 0 || (uint32_t)got > SPIPE_DEFAULT) {
			close_pipe(p);
			return;
		}
		atomic_fetch_sub_explicit(&grown_pages, pages_of(p->cap), memory_order_relaxed);
		p->cap = (uint32_t)got;
	}
	/* a pipe made while over the soft limit (2 slots) is not worth keeping */
	if (p->cap < SPIPE_DEFAULT || small_n >= SMALL_POOL_MAX) {
		close_pipe(p);
		return;
	}
	small_pool[small_n++] = *p;
	*p = SPIPE_NONE;
}

bool spipe_adopt(struct spipe *p, int rd, int wr)
{
	int cap = fcntl(rd, F_GETPIPE_SZ);

	if (cap <= 0 || fcntl(wr, F_GETPIPE_SZ) != cap)
		return false;
	*p = (struct spipe){.rd = rd, .wr = wr, .cap = (uint32_t)cap};
	atomic_fetch_add_explicit(&grown_pages, pages_of(p->cap), memory_order_relaxed);
	return true;
}
