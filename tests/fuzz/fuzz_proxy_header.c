/* libFuzzer: PROXY v1/v2 headers from a balancer (daemon/parse/proxy_header.c). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

#include "announce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header h;
	const char *error = NULL;
	long n = proxy_header_parse(data, size, &h, &error);

	assert(n <= (long)size);
	if (n < 0)
		assert(error);
	return 0;
}
