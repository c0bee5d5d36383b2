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

#include <stdlib.h>
#include <string.h>

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

bool router_init(struct router *r, const char *path, const struct account_rules *rules,
                 const char *const *dest_names, size_t n_dests, int default_dest,
                 uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max, char *err,
                 size_t errlen)
{
	memset(r, 0, sizeof(*r));
	pthread_rwlock_init(&r->lock, NULL);
	pthread_mutex_init(&r->cache_lock, NULL);
	pthread_mutex_init(&r->write_lock, NULL);
	r->file.path = xstrdup(path);
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
	if (!mapping_file_load(&r->file, err, errlen)) {
		router_free(r);
		return false;
	}
	return true;
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
}
