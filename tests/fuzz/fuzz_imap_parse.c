/* libFuzzer: IMAP command parsing before login (daemon/parse/imap_parse.c).
 * Invariants: consumed never exceeds the input; a complete command has a
 * tag and a name; every decoded argument lies in the scratch buffer. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct imap_limits lim = {.max_line = 1024, .max_literal = 4096};
	struct imap_command cmd;
	char *scratch = malloc(size + 1);
	size_t used = 0;
	unsigned sync = 0;
	const char *error = NULL;

	if (!scratch)
		return 0;
	enum imap_parse_status r = imap_parse_command((const char *)data, size, &lim, &cmd, scratch,
	                                              size + 1, &used, &sync, &error);
	assert(used <= size);
	if (r == IMAP_PARSE_COMPLETE) {
		assert(cmd.tag[0] && cmd.name[0]);
		for (size_t i = 0; i < cmd.n_args; i++) {
			const struct imap_arg *a = &cmd.args[i];
			if (a->type == IMAP_ARG_STRING || a->type == IMAP_ARG_ATOM) {
				assert(a->s >= scratch && a->s + a->len <= scratch + size + 1);
				assert(a->s[a->len] == '\0');
			}
		}
	}
	if (r == IMAP_PARSE_ERROR)
		assert(error);
	char tag[32];
	enum imap_status st;
	const char *rest;
	imap_parse_response((const char *)data, size, tag, sizeof(tag), &st, &rest);
	assert(rest >= (const char *)data && rest <= (const char *)data + size);
	bool had;
	imap_line_has_capability((const char *)data, size, "IMAP4rev1", &had);
	char q[64];
	size_t n = imap_quote((const char *)data, size, q, sizeof(q));
	assert(n < sizeof(q));
	free(scratch);
	return 0;
}
