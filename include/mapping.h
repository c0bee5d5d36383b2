/*
 * Accounts and where they live.
 *
 *   login identifier --canonicalise--> account --cache--> store --> destination
 *
 * The canonical account is the one key for an account everywhere: the
 * mapping store, the cache, kicks and login delays. "alice" and
 * "Alice@Example.org" are one account when default_domain is example.org
 * and normalisation is lowercase.
 *
 * A store that cannot be read never routes anyone to the default
 * destination: a reload that fails (unreadable file, a syntax error after a
 * hand edit) keeps the previous table in force and reports the error.
 * During a migration the default is usually the old server, and sending a
 * migrated user back there would show them a stale mailbox.
 */
#ifndef MAILSPLICE_MAPPING_H
#define MAILSPLICE_MAPPING_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "strmap.h"

/* local part (64) + '@' + domain (255) */
#define ACCOUNT_MAX 320

enum normalize_mode {
	NORMALIZE_NONE,
	NORMALIZE_LOWERCASE,
};

struct account_rules {
	enum normalize_mode normalize;
	const char *default_domain;    /* NULL: bare local parts stay bare */
	const char *master_separators; /* e.g. "%": "u@d%admin" is u@d */
};

/*
 * Canonicalise a login identifier into out (ACCOUNT_MAX + 1 bytes). Returns
 * NULL on success or a static message: identifiers with control
 * characters, spaces or '"', empty ones and overlong ones are refused.
 */
const char *account_canonical(const struct account_rules *rules, const char *ident, size_t len,
                              char *out, size_t outlen);

/* ---- the file store ----
 * "identifier<whitespace>destination" lines, '#' starts a comment. */

struct mapping_file {
	char *path;
	const struct account_rules *rules;
	const char *const *dest_names; /* destination index -> name */
	size_t n_dests;
	struct strmap table; /* account -> destination index */
	/* identity of the file we last read or wrote: a write re-reads the
	 * file first when someone edited it by hand in between */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	char *content; /* the file as last read or written */
	size_t content_len;
};

/* Load (or reload into *mf). On error nothing changes and err holds
 * "PATH:LINE: what is wrong" (or "PATH: reason" for I/O errors). */
bool mapping_file_load(struct mapping_file *mf, char *err, size_t errlen);
void mapping_file_free(struct mapping_file *mf);

/* Parse content without touching the disk (used by load, tests, fuzzing). */
bool mapping_parse(const char *path, const char *data, size_t len,
                   const struct account_rules *rules, const char *const *dest_names, size_t n_dests,
                   struct strmap *out, char *err, size_t errlen);

/*
 * Durable edits: the new file is written to a temporary file in the same
 * directory, fsynced, renamed over the old one and the directory fsynced.
 * Lines for other accounts, comments and blank lines are kept as they are.
 * dest < 0 removes the account (*existed tells whether it was there).
 */
bool mapping_file_put(struct mapping_file *mf, const char *account, int dest, bool *existed,
                      char *err, size_t errlen);

/* ---- the cache ---- */

struct mapping_cache_entry;

struct mapping_cache {
	struct strmap index;                     /* account -> entry pointer */
	struct mapping_cache_entry *head, *tail; /* insertion order, for eviction */
	size_t max_entries;
	uint64_t positive_ttl_ms, negative_ttl_ms;
	uint64_t hits, misses;
};

/* ---- the router: store + cache + default destination, thread-safe ---- */

enum route_status {
	ROUTE_MAPPED,  /* the store names a destination */
	ROUTE_DEFAULT, /* no entry: the default destination */
	ROUTE_PENDING, /* asked a remote store: the callback will tell */
	ROUTE_FAILED,  /* the store could not answer: a temporary error, never the default */
};

struct route {
	int dest;
	bool routed_to_default;
	bool cached;
};

struct store;
struct store_loop;
struct route_lookup;

struct router {
	pthread_rwlock_t lock; /* store */
	pthread_mutex_t cache_lock;
	pthread_mutex_t write_lock; /* serialises file writes */
	struct mapping_file file;   /* the file store; dest_names also for remote ones */
	struct mapping_cache cache;
	int default_dest;
	uint64_t (*clock_ms)(void); /* now_ms; tests substitute their own */
	/* a remote store (NULL: the file). Every invalidation bumps epoch
	 * (under cache_lock): a lookup that was on the wire meanwhile answers
	 * its login but does not fill the cache with what may be stale. */
	struct store *store;
	uint64_t epoch;
	uint64_t lookup_timeout_ms;
};

bool router_init(struct router *r, const char *path, const struct account_rules *rules,
                 const char *const *dest_names, size_t n_dests, int default_dest,
                 uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max, char *err,
                 size_t errlen);
/* The same in front of a remote store (which the caller owns). */
void router_init_remote(struct router *r, struct store *st, const struct account_rules *rules,
                        const char *const *dest_names, size_t n_dests, int default_dest,
                        uint64_t positive_ttl_ms, uint64_t negative_ttl_ms, size_t cache_max,
                        uint64_t lookup_timeout_ms);
void router_free(struct router *r);

/* File store: answers at once (ROUTE_MAPPED or ROUTE_DEFAULT). */
enum route_status router_lookup(struct router *r, const char *account, struct route *out);
/* Store lookup only, bypassing (and not filling) the cache. */
enum route_status router_peek(struct router *r, const char *account, struct route *out,
                              bool *in_cache);

/*
 * Any store, on the calling thread's loop (sl: that loop's store
 * connections, NULL for the file store). Answered now from the cache or
 * the file: ROUTE_MAPPED/ROUTE_DEFAULT with *out filled. A remote store
 * that cannot be asked: ROUTE_FAILED and *why. Otherwise ROUTE_PENDING,
 * *pending set, and done runs later on this loop, exactly once, within
 * lookup_timeout, unless route_lookup_cancel(*pending) is called first.
 * ROUTE_PEEK: ask the store even when the cache has the answer, and leave
 * the cache alone (GET /mappings).
 */
#define ROUTE_PEEK 1u
typedef void (*route_done_fn)(void *arg, enum route_status st, const struct route *route,
                              const char *why);
enum route_status router_resolve(struct router *r, struct store_loop *sl, const char *account,
                                 unsigned flags, struct route *out, route_done_fn done, void *arg,
                                 struct route_lookup **pending, const char **why);
void route_lookup_cancel(struct route_lookup *lk);
/* Index of a destination name, -1 if the configuration has none such. */
int router_dest_index(const struct router *r, const char *name, size_t len);

/* Persist, then drop the account's cache entry. dest < 0 removes. */
bool router_set(struct router *r, const char *account, int dest, bool *existed, char *err,
                size_t errlen);
/* Re-read the store; flush the cache entries whose answer changed. On a
 * read error the previous table stays in force. *flushed counts the cache
 * entries dropped. A remote store has nothing to re-read: the whole cache
 * is dropped. */
bool router_reload(struct router *r, size_t *entries, size_t *flushed, char *err, size_t errlen);
/* Drop one account's entry (true if there was one) or, with NULL, all. */
size_t router_invalidate(struct router *r, const char *account);
/* Whether the cache holds a live answer for account. */
bool router_cached(struct router *r, const char *account);

struct router_stats {
	uint64_t hits, misses;
	size_t entries, mappings;
	bool remote; /* mappings is unknown: a remote store */
};
void router_stats(struct router *r, struct router_stats *st);

#endif
