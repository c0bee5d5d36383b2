/* libFuzzer: POP3 command and status lines, extended response codes and
 * CAPA lists (daemon/parse/pop3_parse.c). The input is read as one command line,
 * one status line, and a CAPA list split at LF. */
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
	size_t tl = (size_t)((const char *)data + size - text);
	if (pop3_has_resp_code(text, tl, "XCLIENT"))
		assert(tl >= 9 && text[0] == '[');

	struct pop3_capa capa;
	memset(&capa, 0, sizeof(capa));
	for (size_t pos = 0; pos < size;) {
		const char *l = (const char *)data + pos;
		const char *lf = memchr(l, '\n', size - pos);
		size_t n = lf ? (size_t)(lf - l) + 1 : size - pos;
		enum pop3_capa_status st = pop3_capa_line(l, n, &capa);
		if (st == POP3_CAPA_END) {
			assert(l[0] == '.');
			break;
		}
		if (st == POP3_CAPA_TOO_MANY)
			break;
		assert(capa.lines <= POP3_CAPA_LINES_MAX);
		pos += n;
	}
	free(line);
	return 0;
}
