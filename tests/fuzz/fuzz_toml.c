/* libFuzzer: the TOML parser (daemon/parse/toml.c) on arbitrary documents. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

#include "toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_value *root = toml_parse((const char *)data, size, &err);

	if (root)
		toml_free(root);
	else
		assert(err.msg[0]);
	return 0;
}
