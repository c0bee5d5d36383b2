/* String-keyed open-addressing hash map (see strmap.h). */
#include "strmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static char tombstone;
#define STRMAP_TOMBSTONE (&tombstone)

static uint64_t sip_key[2];
static pthread_once_t sip_once = PTHREAD_ONCE_INIT;

static void sip_init(void)
{
	if (getrandom(sip_key, sizeof(sip_key), 0) != (ssize_t)sizeof(sip_key)) {
		/* no entropy this early is not a reason to refuse to run;
		 * the address of a stack variable still varies under ASLR */
		uintptr_t p = (uintptr_t)&p;
		sip_key[0] = (uint64_t)p * 0x9e3779b97f4a7c15ull;
		sip_key[1] = sip_key[0] ^ 0xbf58476d1ce4e5b9ull;
	}
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = ROTL(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = ROTL(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = ROTL(v2, 32);                                                                 \
	} while (0)

uint64_t strmap_hash(const void *data, size_t len)
{
	const uint8_t *in = data;
	uint64_t v0, v1, v2, v3, m, b = (uint64_t)len << 56;
	size_t i, tail = len & 7;

	pthread_once(&sip_once, sip_init);
	v0 = 0x736f6d6570736575ull ^ sip_key[0];
	v1 = 0x646f72616e646f6dull ^ sip_key[1];
	v2 = 0x6c7967656e657261ull ^ sip_key[0];
	v3 = 0x7465646279746573ull ^ sip_key[1];
	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&m, in + i, 8);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; j < tail; j++)
		b |= (uint64_t)in[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

void strmap_init(struct strmap *m)
{
	memset(m, 0, sizeof(*m));
}

void strmap_free(struct strmap *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key && m->slots[i].key != STRMAP_TOMBSTONE)
			free(m->slots[i].key);
	}
	free(m->slots);
	strmap_init(m);
}

static bool live(const struct strmap_slot *s)
{
	return s->key && s->key != STRMAP_TOMBSTONE;
}

/* Find the slot holding key, or NULL. */
static struct strmap_slot *find(const struct strmap *m, const char *key, uint64_t h)
{
	if (!m->cap)
		return NULL;
	for (size_t i = h & (m->cap - 1), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
		struct strmap_slot *s = &m->slots[i];
		if (!s->key)
			return NULL;
		if (s->key != STRMAP_TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0)
			return s;
	}
	return NULL;
}

static bool resize(struct strmap *m, size_t cap)
{
	struct strmap_slot *old = m->slots;
	size_t old_cap = m->cap;
	struct strmap_slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return false;
	for (size_t i = 0; i < old_cap; i++) {
		if (!live(&old[i]))
			continue;
		size_t j = old[i].hash & (cap - 1);
		while (slots[j].key)
			j = (j + 1) & (cap - 1);
		slots[j] = old[i];
	}
	free(old);
	m->slots = slots;
	m->cap = cap;
	m->used = m->len;
	return true;
}

bool strmap_reserve(struct strmap *m, size_t n)
{
	size_t cap = m->cap ? m->cap : 16;
	/* keep the load factor (tombstones included) under 3/4 */
	while (cap / 4 * 3 <= n)
		cap *= 2;
	return cap == m->cap || resize(m, cap);
}

bool strmap_set(struct strmap *m, const char *key, uint64_t value)
{
	uint64_t h = strmap_hash(key, strlen(key));
	struct strmap_slot *s = find(m, key, h);
	char *copy;

	if (s) {
		s->value = value;
		return true;
	}
	if ((m->used + 1) * 4 >= m->cap * 3) {
		/* grow only when live entries need it; else just drop tombstones */
		size_t cap = m->cap ? m->cap : 16;
		while ((m->len + 1) * 4 >= cap * 3 / 2)
			cap *= 2;
		if (!resize(m, cap))
			return false;
	}
	copy = strdup(key);
	if (!copy)
		return false;
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		s = &m->slots[i];
		if (!live(s)) {
			if (!s->key)
				m->used++;
			s->key = copy;
			s->hash = h;
			s->value = value;
			m->len++;
			return true;
		}
	}
}

bool strmap_get(const struct strmap *m, const char *key, uint64_t *value)
{
	struct strmap_slot *s = find(m, key, strmap_hash(key, strlen(key)));
	if (!s)
		return false;
	if (value)
		*value = s->value;
	return true;
}

bool strmap_del(struct strmap *m, const char *key)
{
	struct strmap_slot *s = find(m, key, strmap_hash(key, strlen(key)));
	if (!s)
		return false;
	free(s->key);
	s->key = STRMAP_TOMBSTONE;
	m->len--;
	return true;
}

size_t strmap_len(const struct strmap *m)
{
	return m->len;
}

bool strmap_next(const struct strmap *m, size_t *iter, const char **key, uint64_t *value)
{
	while (*iter < m->cap) {
		const struct strmap_slot *s = &m->slots[(*iter)++];
		if (live(s)) {
			*key = s->key;
			*value = s->value;
			return true;
		}
	}
	return false;
}
