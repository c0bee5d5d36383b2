/* libFuzzer: SMTP client commands before AUTH (daemon/parse/smtp_command.c),
 * one line per input as smtp.c passes it. Invariants: an error is a
 * complete reply with a 5xx code; an accepted EHLO name fits the buffer
 * smtp.c copies it into and holds no blank or control character; an AUTH
 * mechanism is non-empty and the initial response lies inside the line. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "smtp_command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_command c;
	const char *bad = smtp_parse_command(line, size, &c);

	if (bad) {
		assert(strlen(bad) > 4 && bad[0] == '5' && bad[3] == ' ');
		return 0;
	}
	assert(c.arg == line + size - c.arg_len || (c.arg_len == 0 && c.arg[0] == '\0'));
	switch (c.verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
		assert(c.arg_len > 0 && c.arg_len <= SMTP_HELO_MAX);
		for (size_t i = 0; i < c.arg_len; i++)
			assert((unsigned char)c.arg[i] > 0x20 && c.arg[i] != 0x7f);
		break;
	case SMTP_AUTH:
		assert(c.mech[0] && strlen(c.mech) <= SMTP_MECH_MAX);
		if (c.initial)
			assert(c.initial + c.initial_len == line + size);
		break;
	case SMTP_STARTTLS:
		assert(c.arg_len == 0);
		break;
	default:
		break;
	}
	return 0;
}
