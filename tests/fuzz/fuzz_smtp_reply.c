/* libFuzzer: SMTP backend replies (daemon/parse/smtp_reply.c), fed line by line
 * as read_reply in daemon/proto/smtp.c does. Invariants: a complete reply has a
 * valid code (RFC 5321 section 4.2) and stays within the bounds; an error
 * always says why; a parsed EHLO reply was a complete 250 reply. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct smtp_reply r;
	struct smtp_ehlo ehlo;
	const char *error;

	smtp_reply_init(&r);
	for (size_t pos = 0; pos < size;) {
		const char *lf = memchr(text + pos, '\n', size - pos);
		size_t n = lf ? (size_t)(lf - (text + pos)) + 1 : size - pos;
		enum smtp_reply_status st = smtp_reply_line(&r, text + pos, n, &error);
		if (st == SMTP_REPLY_ERROR) {
			assert(error);
			smtp_reply_init(&r);
		} else {
			assert(!error);
			assert(r.code >= 200 && r.code <= 559);
			assert(r.lines >= 1 && r.bytes <= SMTP_REPLY_BYTES_MAX);
			assert(n <= SMTP_REPLY_LINE_MAX && text[pos + n - 1] == '\n');
		}
		pos += n;
	}
	if (!smtp_ehlo_parse(text, size, &ehlo))
		assert(size >= 4 && memcmp(text, "250", 3) == 0 && text[size - 1] == '\n');
	else
		assert(!ehlo.starttls && !ehlo.xclient && !ehlo.auth_mechs);
	return 0;
}
