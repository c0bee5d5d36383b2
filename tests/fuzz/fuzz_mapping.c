/* libFuzzer: the mapping file parser and account canonicalisation
 * (daemon/route/mapping_file.c, daemon/route/account.c), without touching the disk.
 * The first byte picks the account rules (lowercase or not, a default
 * domain or not, master-user separators or not) and the size of the
 * output buffer given to account_canonical; the rest is the file.
 * Invariants: a parsed table holds only canonical accounts (canonicalising
 * a key again gives the key: no control characters, spaces, quotes,
 * separators or, when lowercasing, upper case; at most ACCOUNT_MAX bytes),
 * destination indexes below n_dests, at most one entry per line, and
 * strmap_len agrees with iteration; a refused file leaves an empty table
 * and a "PATH:..." message. account_canonical on the raw bytes stays
 * within outlen, NUL-terminates, and is idempotent. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const dests[] = {"legacy", "new", "archive"};
#define N_DESTS (sizeof(dests) / sizeof(dests[0]))

/* A canonical account under r: what account_canonical leaves unchanged. */
static void check_canonical(const struct account_rules *r, const char *account)
{
	char again[ACCOUNT_MAX + 1];
	size_t len = strlen(account);

	assert(len > 0 && len <= ACCOUNT_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)account[i];
		assert(c >= 0x20 && c != 0x7f && c != ' ' && c != '"');
		assert(!r->master_separators || !strchr(r->master_separators, c));
		assert(r->normalize != NORMALIZE_LOWERCASE || c < 'A' || c > 'Z');
	}
	assert(account[0] != '@' && account[len - 1] != '@');
	assert(!account_canonical(r, account, len, again, sizeof(again)));
	assert(strcmp(again, account) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct account_rules rules;
	struct strmap table;
	char err[512];
	const char *text = (const char *)data + 1;
	size_t n, lines = 1, count = 0, outlen, iter = 0;
	const char *key;
	uint64_t value;

	if (size < 1)
		return 0;
	n = size - 1;
	rules.normalize = data[0] & 1 ? NORMALIZE_LOWERCASE : NORMALIZE_NONE;
	rules.default_domain = data[0] & 2 ? "Example.ORG" : NULL;
	rules.master_separators = data[0] & 4 ? "%*" : NULL;
	outlen = data[0] & 8 ? (size_t)(data[0] >> 4) + 1 : ACCOUNT_MAX + 1;

	/* the file */
	err[0] = '\0';
	for (size_t i = 0; i < n; i++)
		lines += text[i] == '\n';
	if (mapping_parse("map", text, n, &rules, dests, N_DESTS, &table, err, sizeof(err))) {
		while (strmap_next(&table, &iter, &key, &value)) {
			check_canonical(&rules, key);
			assert(value < N_DESTS);
			count++;
		}
		assert(count == strmap_len(&table) && count <= lines);
		strmap_free(&table);
	} else {
		assert(strncmp(err, "map:", 4) == 0 && strlen(err) < sizeof(err));
		assert(strmap_len(&table) == 0 && table.slots == NULL);
	}

	/* the same bytes as one login identifier, into an exact-size buffer */
	char *out = malloc(outlen);
	if (!out)
		return 0;
	if (!account_canonical(&rules, text, n, out, outlen)) {
		assert(strlen(out) < outlen);
		check_canonical(&rules, out);
	}
	free(out);
	return 0;
}
