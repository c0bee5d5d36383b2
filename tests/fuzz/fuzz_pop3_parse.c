/* libFuzzer: POP3 command and status lines (daemon/pop3_parse.c). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	struct pop3_command cmd;
	const char *text;

	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (!pop3_parse_command(line, &cmd)) {
		assert(strlen(cmd.keyword) >= 3 && strlen(cmd.keyword) <= 4);
		for (size_t i = 0; i < cmd.n_args; i++)
			assert(cmd.args[i][0]);
	}
	pop3_parse_status((const char *)data, size, &text);
	assert(text >= (const char *)data && text <= (const char *)data + size);
	free(line);
	return 0;
}
