/*
 * The router: canonical account -> destination, through a TTL cache in front
 * of the mapping store (see mapping.h). Thread-safe: worker threads look
 * up, the admin API edits and reloads.
 *
 * The cache matters little for the file store (the table is in memory) but
 * it is what the admin API reports and invalidates, and it is what keeps a
 * remote store (redis, SQL) off the login path. Its semantics are therefore
 * kept exact: positive and negative TTLs, a bound on entries with the
 * oldest evicted first, and per-account invalidation on every change.
 */
#include "mapping.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "store.h"
#include "util.h"

struct mapping_cache_entry {
	struct mapping_cache_entry *prev, *next;
	uint64_t expires_ms;
	int dest; /* -1: negative entry (no mapping) */
	char account[];
};

static void cache_unlink(struct mapping_cache *c, struct mapping_cache_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
}

static void cache_drop(struct mapping_cache *c, struct mapping_cache_entry *e)
{
	strmap_del(&c->index, e->account);
	cache_unlink(c, e);
	free(e);
}

static struct mapping_cache_entry *cache_find(struct mapping_cache *c, const char *account)
{
	uint64_t v;
	return strmap_get(&c->index, account, &v) ? (struct mapping_cache_entry *)(uintptr_t)v
	                                          : NULL;
}

static void cache_put(struct mapping_cache *c, const char *account, int dest, uint64_t now)
{
	uint64_t ttl = dest >= 0 ? c->positive_ttl_ms : c->negative_ttl_ms;
	struct mapping_cache_entry *e = cache_find(c, account);
	size_t len;

	if (ttl == 0 || c->max_entries == 0)
		return;
	if (e)
		cache_drop(c, e);
	while (strmap_len(&c->index) >= c->max_entries && c->head)
		cache_drop(c, c->head);
	len = strlen(account);
	e = malloc(sizeof(*e) + len + 1);
	if (!e)
		return; /* a cache that cannot grow is still a correct cache */
	memcpy(e->account, account, len + 1);
	e->dest = dest;
	e->expires_ms = now + ttl;
	e->next = NULL;
	e->prev = c->tail;
	if (c->tail)
		c->tail->next = e;
	else
		c->head = e;
	c->tail = e;
	if (!strmap_set(&c->index, account, (uint64_t)(uintptr_t)e)) {
		cache_unlink(c, e);
		free(e);
	}
}

static void cache_clear(struct mapping_cache *c)
{
	while (c->head)
		cache_drop(c, c->head);
}

/* What a router with the mapping file and one with a remote store share:
 * locks, the account rules and destinations, the cache. */
static void init_common(struct router *r, const struct account_rules *rules,
                        const char *const *dest_names, size_t n_dests, int default_dest,
                        uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max)
{
	memset(r, 0, sizeof(*r));
	pthread_rwlock_init(&r->lock, NULL);
	pthread_mutex_init(&r->cache_lock, NULL);
	pthread_mutex_init(&r->write_lock, NULL);
	r->file.rules = rules;
	r->file.dest_names = dest_names;
	r->file.n_dests = n_dests;
	strmap_init(&r->file.table);
	strmap_init(&r->cache.index);
	r->cache.max_entries = cache_max;
	r->cache.positive_ttl_ms = positive_ttl_ms;
	r->cache.negative_ttl_ms = negative_ttl_ms;
	r->default_dest = default_dest;
	r->clock_ms = now_ms;
}

bool router_init(struct router *r, const char *path, const struct account_rules *rules,
                 const char *const *dest_names, size_t n_dests, int default_dest,
                 uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max, char *err,
                 size_t errlen)
{
	init_common(r, rules, dest_names, n_dests, default_dest, positive_ttl_ms, negative_ttl_ms,
	            cache_max);
	r->file.path = xstrdup(path);
	if (!mapping_file_load(&r->file, err, errlen)) {
		router_free(r);
		return false;
	}
	return true;
}

void router_init_remote(struct router *r, struct store *st, const struct account_rules *rules,
                        const char *const *dest_names, size_t n_dests, int default_dest,
                        uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max,
                        uint64_t lookup_timeout_ms)
{
	init_common(r, rules, dest_names, n_dests, default_dest, positive_ttl_ms, negative_ttl_ms,
	            cache_max);
	r->store = st;
	r->lookup_timeout_ms = lookup_timeout_ms;
}

void router_free(struct router *r)
{
	cache_clear(&r->cache);
	strmap_free(&r->cache.index);
	mapping_file_free(&r->file);
	pthread_rwlock_destroy(&r->lock);
	pthread_mutex_destroy(&r->cache_lock);
	pthread_mutex_destroy(&r->write_lock);
}

/* Ask the store; caller holds r->lock (read). */
static enum route_status store_lookup(struct router *r, const char *account, int *dest)
{
	uint64_t v;

	if (strmap_get(&r->file.table, account, &v)) {
		*dest = (int)v;
		return ROUTE_MAPPED;
	}
	*dest = -1;
	return ROUTE_DEFAULT;
}

static void fill_route(struct router *r, int dest, bool cached, struct route *out)
{
	out->routed_to_default = dest < 0;
	out->dest = dest < 0 ? r->default_dest : dest;
	out->cached = cached;
}

enum route_status router_lookup(struct router *r, const char *account, struct route *out)
{
	uint64_t now = r->clock_ms();
	struct mapping_cache_entry *e;
	enum route_status st;
	int dest;

	pthread_mutex_lock(&r->cache_lock);
	e = cache_find(&r->cache, account);
	if (e && e->expires_ms > now) {
		r->cache.hits++;
		dest = e->dest;
		pthread_mutex_unlock(&r->cache_lock);
		fill_route(r, dest, true, out);
		return dest < 0 ? ROUTE_DEFAULT : ROUTE_MAPPED;
	}
	if (e)
		cache_drop(&r->cache, e);
	r->cache.misses++;
	pthread_mutex_unlock(&r->cache_lock);

	pthread_rwlock_rdlock(&r->lock);
	st = store_lookup(r, account, &dest);
	/* filled under the store lock, so a concurrent edit cannot slip
	 * between our read and our cache insert and leave a stale answer
	 * behind (edits invalidate under the write lock) */
	pthread_mutex_lock(&r->cache_lock);
	cache_put(&r->cache, account, dest, now);
	pthread_mutex_unlock(&r->cache_lock);
	pthread_rwlock_unlock(&r->lock);
	fill_route(r, dest, false, out);
	return st;
}

enum route_status router_peek(struct router *r, const char *account, struct route *out,
                              bool *in_cache)
{
	enum route_status st;
	int dest;

	pthread_mutex_lock(&r->cache_lock);
	struct mapping_cache_entry *e = cache_find(&r->cache, account);
	*in_cache = e && e->expires_ms > r->clock_ms();
	pthread_mutex_unlock(&r->cache_lock);
	pthread_rwlock_rdlock(&r->lock);
	st = store_lookup(r, account, &dest);
	pthread_rwlock_unlock(&r->lock);
	fill_route(r, dest, *in_cache, out);
	return st;
}

bool router_set(struct router *r, const char *account, int dest, bool *existed, char *err,
                size_t errlen)
{
	bool ok;

	pthread_mutex_lock(&r->write_lock);
	pthread_rwlock_wrlock(&r->lock);
	/* the write lock is held across the fsync: lookups wait a few
	 * milliseconds, and no lookup can see the old answer after the
	 * admin API has said 200 */
	ok = mapping_file_put(&r->file, account, dest, existed, err, errlen);
	if (ok) {
		pthread_mutex_lock(&r->cache_lock);
		struct mapping_cache_entry *e = cache_find(&r->cache, account);
		if (e)
			cache_drop(&r->cache, e);
		pthread_mutex_unlock(&r->cache_lock);
	}
	pthread_rwlock_unlock(&r->lock);
	pthread_mutex_unlock(&r->write_lock);
	return ok;
}

bool router_reload(struct router *r, size_t *entries, size_t *flushed, char *err, size_t errlen)
{
	struct mapping_cache_entry *e, *next;
	size_t n = 0;
	bool ok;

	if (r->store) {
		/* nothing to re-read: what the store holds is read on demand,
		 * so "reload" means forgetting what was cached */
		n = router_invalidate(r, NULL);
		if (entries)
			*entries = 0;
		if (flushed)
			*flushed = n;
		return true;
	}
	pthread_mutex_lock(&r->write_lock);
	pthread_rwlock_wrlock(&r->lock);
	ok = mapping_file_load(&r->file, err, errlen);
	if (ok) {
		/* drop exactly the entries whose answer the new table changes */
		pthread_mutex_lock(&r->cache_lock);
		for (e = r->cache.head; e; e = next) {
			uint64_t v;
			int now_dest = strmap_get(&r->file.table, e->account, &v) ? (int)v : -1;
			next = e->next;
			if (now_dest != e->dest) {
				cache_drop(&r->cache, e);
				n++;
			}
		}
		pthread_mutex_unlock(&r->cache_lock);
		if (entries)
			*entries = strmap_len(&r->file.table);
	}
	pthread_rwlock_unlock(&r->lock);
	pthread_mutex_unlock(&r->write_lock);
	if (flushed)
		*flushed = n;
	return ok;
}

size_t router_invalidate(struct router *r, const char *account)
{
	size_t n = 0;

	pthread_mutex_lock(&r->cache_lock);
	r->epoch++;
	if (account) {
		struct mapping_cache_entry *e = cache_find(&r->cache, account);
		if (e) {
			cache_drop(&r->cache, e);
			n = 1;
		}
	} else {
		n = strmap_len(&r->cache.index);
		cache_clear(&r->cache);
	}
	pthread_mutex_unlock(&r->cache_lock);
	return n;
}

bool router_cached(struct router *r, const char *account)
{
	pthread_mutex_lock(&r->cache_lock);
	struct mapping_cache_entry *e = cache_find(&r->cache, account);
	bool cached = e && e->expires_ms > r->clock_ms();
	pthread_mutex_unlock(&r->cache_lock);
	return cached;
}

void router_stats(struct router *r, struct router_stats *st)
{
	pthread_mutex_lock(&r->cache_lock);
	st->hits = r->cache.hits;
	st->misses = r->cache.misses;
	st->entries = strmap_len(&r->cache.index);
	pthread_mutex_unlock(&r->cache_lock);
	pthread_rwlock_rdlock(&r->lock);
	st->mappings = strmap_len(&r->file.table);
	pthread_rwlock_unlock(&r->lock);
	st->remote = r->store != NULL;
}

/* ---- asynchronous lookups (remote stores) ---- */

struct route_lookup {
	struct router *r;
	struct store_req *req;
	struct event *timer;
	route_done_fn done;
	void *arg;
	uint64_t epoch;
	unsigned flags;
	char account[];
};

int router_dest_index(const struct router *r, const char *name, size_t len)
{
	for (size_t i = 0; i < r->file.n_dests; i++) {
		if (strlen(r->file.dest_names[i]) == len &&
		    memcmp(r->file.dest_names[i], name, len) == 0)
			return (int)i;
	}
	return -1;
}

static bool log_unknown_now(void)
{
	static _Atomic uint64_t next_ms;
	uint64_t now = now_ms(), next = atomic_load(&next_ms);

	return now >= next && atomic_compare_exchange_strong(&next_ms, &next, now + 1000);
}

static void lookup_free(struct route_lookup *lk)
{
	if (lk->timer)
		event_free(lk->timer);
	free(lk);
}

static void lookup_answer(void *arg, const struct store_result *res)
{
	struct route_lookup *lk = arg;
	struct router *r = lk->r;
	struct route route = {0};
	enum route_status st;
	const char *why = NULL;
	char msg[300];
	int dest = -1;

	lk->req = NULL;
	switch (res->status) {
	case STORE_FOUND:
		dest = router_dest_index(r, res->value, res->value_len);
		if (dest < 0) {
			/* a typo in the store must not send anyone to the
			 * default: say so, naming the account (the log is the
			 * only place an operator will see which row is wrong),
			 * at most once a second (every login of that account
			 * asks again: the failure is not cached) */
			if (log_unknown_now()) {
				struct logbuf lb;
				lb_init(&lb, LOG_WARN, "store-unknown-destination");
				lb_str(&lb, "account", lk->account);
				lb_mem(&lb, "destination", res->value,
				       res->value_len < 128 ? res->value_len : 128);
				lb_emit(&lb);
			}
			store_count_lookup(r->store, STORE_LOOKUP_UNKNOWN_DEST);
			snprintf(msg, sizeof(msg),
			         "mapping store names a destination that is not configured");
			why = msg;
			st = ROUTE_FAILED;
			break;
		}
		store_count_lookup(r->store, STORE_LOOKUP_FOUND);
		st = ROUTE_MAPPED;
		break;
	case STORE_ABSENT:
		store_count_lookup(r->store, STORE_LOOKUP_ABSENT);
		st = ROUTE_DEFAULT;
		break;
	default:
		store_count_lookup(r->store, STORE_LOOKUP_ERROR);
		snprintf(msg, sizeof(msg), "mapping store: %s", res->error ? res->error : "error");
		why = msg;
		st = ROUTE_FAILED;
		break;
	}
	if (st != ROUTE_FAILED) {
		pthread_mutex_lock(&r->cache_lock);
		/* peeks leave the cache alone; and an invalidation that
		 * happened while we waited may have been about this very
		 * answer */
		if (!(lk->flags & ROUTE_PEEK) && r->epoch == lk->epoch)
			cache_put(&r->cache, lk->account, dest, r->clock_ms());
		pthread_mutex_unlock(&r->cache_lock);
		fill_route(r, dest, false, &route);
	}
	route_done_fn done = lk->done;
	void *darg = lk->arg;
	lookup_free(lk);
	done(darg, st, &route, why);
}

static void lookup_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct route_lookup *lk = arg;
	char msg[128];

	store_req_cancel(lk->req);
	lk->req = NULL;
	store_count_lookup(lk->r->store, STORE_LOOKUP_TIMEOUT);
	store_note_timeout(lk->r->store);
	snprintf(msg, sizeof(msg), "mapping store did not answer within %llu ms",
	         (unsigned long long)lk->r->lookup_timeout_ms);
	route_done_fn done = lk->done;
	void *darg = lk->arg;
	lookup_free(lk);
	done(darg, ROUTE_FAILED, NULL, msg);
}

enum route_status router_resolve(struct router *r, struct store_loop *sl, const char *account,
                                 unsigned flags, struct route *out, route_done_fn done, void *arg,
                                 struct route_lookup **pending, const char **why)
{
	*pending = NULL;
	if (!r->store) {
		if (flags & ROUTE_PEEK) {
			bool in_cache;
			return router_peek(r, account, out, &in_cache);
		}
		return router_lookup(r, account, out);
	}
	if (!(flags & ROUTE_PEEK)) {
		uint64_t now = r->clock_ms();
		pthread_mutex_lock(&r->cache_lock);
		struct mapping_cache_entry *e = cache_find(&r->cache, account);
		if (e && e->expires_ms > now) {
			int dest = e->dest;
			r->cache.hits++;
			pthread_mutex_unlock(&r->cache_lock);
			fill_route(r, dest, true, out);
			return dest < 0 ? ROUTE_DEFAULT : ROUTE_MAPPED;
		}
		if (e)
			cache_drop(&r->cache, e);
		r->cache.misses++;
		pthread_mutex_unlock(&r->cache_lock);
	}
	size_t len = strlen(account);
	struct route_lookup *lk = calloc(1, sizeof(*lk) + len + 1);
	if (!lk) {
		*why = "out of memory";
		return ROUTE_FAILED;
	}
	lk->r = r;
	lk->done = done;
	lk->arg = arg;
	lk->flags = flags;
	memcpy(lk->account, account, len + 1);
	pthread_mutex_lock(&r->cache_lock);
	lk->epoch = r->epoch;
	pthread_mutex_unlock(&r->cache_lock);
	lk->timer = evtimer_new(store_loop_base(sl), lookup_timeout, lk);
	if (!lk->timer) {
		free(lk);
		*why = "out of memory";
		return ROUTE_FAILED;
	}
	lk->req = store_get(sl, account, lookup_answer, lk, why);
	if (!lk->req) {
		store_count_lookup(r->store, STORE_LOOKUP_UNAVAILABLE);
		lookup_free(lk);
		return ROUTE_FAILED;
	}
	struct timeval tv = {(time_t)(r->lookup_timeout_ms / 1000),
	                     (suseconds_t)(r->lookup_timeout_ms % 1000) * 1000};
	evtimer_add(lk->timer, &tv);
	*pending = lk;
	return ROUTE_PENDING;
}

void route_lookup_cancel(struct route_lookup *lk)
{
	if (!lk)
		return;
	store_req_cancel(lk->req);
	lookup_free(lk);
}
