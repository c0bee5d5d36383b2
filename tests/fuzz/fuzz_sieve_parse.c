/* libFuzzer: ManageSieve backend responses (daemon/parse/sieve_parse.c), the
 * input split at LF as sieve.c reads lines. Invariants: a verdict starts
 * with its word; a capability name is non-empty, NUL-terminated within its
 * bound and came from a line starting with a quote. */
#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "sieve_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	char name[SIEVE_CAPABILITY_NAME_MAX];

	for (size_t pos = 0; pos < size;) {
		const char *line = text + pos;
		const char *lf = memchr(line, '\n', size - pos);
		size_t n = lf ? (size_t)(lf - line) + 1 : size - pos;
		switch (sieve_parse_response(line, n)) {
		case SIEVE_RESP_OK:
			assert(n >= 2 && strncasecmp(line, "OK", 2) == 0);
			break;
		case SIEVE_RESP_NO:
			assert(n >= 2 && strncasecmp(line, "NO", 2) == 0);
			break;
		case SIEVE_RESP_BYE:
			assert(n >= 3 && strncasecmp(line, "BYE", 3) == 0);
			break;
		case SIEVE_RESP_OTHER:
			break;
		}
		if (sieve_parse_capability(line, n, name)) {
			size_t l = strnlen(name, sizeof(name));
			assert(line[0] == '"' && l > 0 && l < sizeof(name) && l + 2 <= n);
		}
		pos += n;
	}
	return 0;
}
