/*
 * SMTP client commands before authentication (RFC 5321 section 4.1.1,
 * RFC 3207 STARTTLS, RFC 4954 AUTH): which verb, and the argument checked
 * against its syntax. Pure: no I/O, no allocation.
 */
#ifndef MAILSPLICE_SMTP_COMMAND_H
#define MAILSPLICE_SMTP_COMMAND_H

#include <stddef.h>

enum smtp_verb {
	SMTP_EHLO,
	SMTP_HELO,
	SMTP_STARTTLS,
	SMTP_AUTH,
	SMTP_NOOP,
	SMTP_RSET,
	SMTP_QUIT,
	SMTP_MAIL, /* MAIL, RCPT, DATA and BDAT: a transaction, refused before AUTH */
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
};

/* RFC 5321 section 4.5.3.1.2: a domain is at most 255 octets */
#define SMTP_HELO_MAX 255
/* RFC 4422 section 3.1: a mechanism name is at most 20 characters */
#define SMTP_MECH_MAX 20

struct smtp_command {
	enum smtp_verb verb;
	const char *arg; /* after "VERB SP", into the line; "" when none */
	size_t arg_len;
	/* AUTH mechanism [SP initial-response] */
	char mech[SMTP_MECH_MAX + 1];
	const char *initial; /* NULL when none was given */
	size_t initial_len;
};

/*
 * Parse one command line of len bytes, its CRLF already stripped. Returns
 * NULL, or the complete reply to send (code, enhanced status code and
 * text, without CRLF) when the line is not a command this state accepts.
 */
const char *smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd);

#endif
