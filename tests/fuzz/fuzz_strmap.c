/* libFuzzer: the string-keyed hash map (daemon/core/strmap.c) against a plain
 * array model. The input is a program: each operation byte is followed by
 * its operands (a key of 0..7 bytes, NULs mapped to 'a' so that small
 * alphabets collide, and a value byte). Invariants, checked after every
 * operation: set/get/del answer as the model does, strmap_len is the
 * model's size, len <= used <= cap; at the end iteration visits every live
 * key exactly once with its value, and strmap_free releases everything. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY_MAX   7
#define MODEL_MAX 4096

struct entry {
	char key[KEY_MAX + 1];
	uint64_t value;
	bool live, seen;
};

struct reader {
	const uint8_t *p;
	size_t left;
};

static uint8_t next_byte(struct reader *r)
{
	if (!r->left)
		return 0;
	r->left--;
	return *r->p++;
}

static void next_key(struct reader *r, char *key)
{
	size_t n = next_byte(r) & KEY_MAX;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = next_byte(r);
		key[i] = c ? (char)c : 'a';
	}
	key[n] = '\0';
}

static struct entry *model_find(struct entry *m, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		if (m[i].live && strcmp(m[i].key, key) == 0)
			return &m[i];
	}
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reader r = {data, size};
	struct entry *model = calloc(MODEL_MAX, sizeof(*model));
	size_t n_model = 0, live = 0, iter = 0;
	struct strmap m;
	const char *k;
	uint64_t v;

	if (!model)
		return 0;
	strmap_init(&m);
	while (r.left && n_model < MODEL_MAX) {
		uint8_t op = next_byte(&r);
		char key[KEY_MAX + 1];
		struct entry *e;

		next_key(&r, key);
		e = model_find(model, n_model, key);
		switch (op % 5) {
		case 0: /* set */
			v = next_byte(&r) | (uint64_t)op << 8;
			assert(strmap_set(&m, key, v));
			if (!e) {
				e = &model[n_model++];
				memcpy(e->key, key, sizeof(key));
				e->live = true;
				live++;
			}
			e->value = v;
			break;
		case 1: /* get */
			v = UINT64_MAX;
			assert(strmap_get(&m, key, &v) == !!e);
			assert(!e || v == e->value);
			assert(strmap_get(&m, key, NULL) == !!e);
			break;
		case 2: /* del */
			assert(strmap_del(&m, key) == !!e);
			if (e) {
				e->live = false;
				live--;
			}
			assert(!strmap_get(&m, key, NULL));
			break;
		case 3: /* reserve */
			assert(strmap_reserve(&m, (size_t)next_byte(&r) * 8));
			break;
		case 4: /* the hash is a function of the bytes */
			assert(strmap_hash(key, strlen(key)) == strmap_hash(key, strlen(key)));
			break;
		}
		assert(strmap_len(&m) == live && m.len <= m.used && m.used <= m.cap);
	}
	while (strmap_next(&m, &iter, &k, &v)) {
		struct entry *e = model_find(model, n_model, k);
		assert(e && !e->seen && e->value == v);
		e->seen = true;
	}
	for (size_t i = 0; i < n_model; i++)
		assert(model[i].seen == model[i].live);
	strmap_free(&m);
	assert(strmap_len(&m) == 0);
	free(model);
	return 0;
}
