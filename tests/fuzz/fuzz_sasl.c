/* libFuzzer: SASL client exchanges (daemon/proto/sasl.c) and the replay encoder.
 * The first byte picks the mechanism; the rest is split into an initial
 * response and a continuation at the first newline. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sasl_exchange ex;
	const char *challenge = NULL, *error = NULL;

	if (size < 1)
		return 0;
	enum sasl_mech mech = (enum sasl_mech)(1 + data[0] % 4);
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	const char *nl = memchr(in, '\n', n);
	size_t first = nl ? (size_t)(nl - in) : n;
	memset(&ex, 0, sizeof(ex));
	enum sasl_status r =
	        sasl_start(&ex, mech, NULL, first ? in : NULL, first, &challenge, &error);
	if (r == SASL_CONTINUE && nl)
		r = sasl_step(&ex, nl + 1, n - first - 1, &challenge, &error);
	if (r == SASL_DONE) {
		assert(ex.creds.username && ex.creds.username[0]);
		char *resp = sasl_replay_response(&ex.creds, NULL);
		if (resp)
			sasl_secret_free(resp);
	}
	if (r == SASL_FAIL)
		assert(error);
	sasl_exchange_clear(&ex);
	return 0;
}
