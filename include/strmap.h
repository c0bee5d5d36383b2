/*
 * String-keyed hash map with open addressing (linear probing, tombstones)
 * and a keyed hash (SipHash-1-3 with a per-process random key): identifiers
 * in the mapping cache are chosen by clients, so a predictable hash would
 * let them degrade lookups to linear scans.
 */
#ifndef MAILSPLICE_STRMAP_H
#define MAILSPLICE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
	char *key; /* NULL = empty; STRMAP_TOMBSTONE = deleted */
	uint64_t hash;
	uint64_t value;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;  /* power of two */
	size_t len;  /* live entries */
	size_t used; /* live + tombstones */
};

void strmap_init(struct strmap *m);
void strmap_free(struct strmap *m);
/* Reserve room for n entries (avoids rehashing while loading). */
bool strmap_reserve(struct strmap *m, size_t n);
/* Insert or replace; the key is copied. Returns false on allocation failure. */
bool strmap_set(struct strmap *m, const char *key, uint64_t value);
bool strmap_get(const struct strmap *m, const char *key, uint64_t *value);
bool strmap_del(struct strmap *m, const char *key);
size_t strmap_len(const struct strmap *m);

/* Iterate: for (size_t i = 0; strmap_next(m, &i, &k, &v);) ... */
bool strmap_next(const struct strmap *m, size_t *iter, const char **key, uint64_t *value);

/* SipHash-1-3 of a byte string under the process key. */
uint64_t strmap_hash(const void *data, size_t len);

#endif
