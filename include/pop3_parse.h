/*
 * POP3 command and response lines (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH,
 * RFC 2595 STLS) for the authorization state. Pure: no I/O.
 */
#ifndef MAILSPLICE_POP3_PARSE_H
#define MAILSPLICE_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define POP3_KEYWORD_MAX 4 /* RFC 1939 section 3: keywords are 3 or 4 characters */
#define POP3_ARGS_MAX    2

struct pop3_command {
	char keyword[POP3_KEYWORD_MAX + 1]; /* upper-cased */
	const char *args[POP3_ARGS_MAX];    /* into the caller's line, NUL-terminated */
	size_t n_args;
	const char *rest; /* everything after "KEYWORD " (PASS may contain spaces) */
};

/* Parse one line (CRLF or LF stripped by the caller, NUL-terminated,
 * modified in place). Returns NULL or a static error message. */
const char *pop3_parse_command(char *line, struct pop3_command *cmd);

enum pop3_status {
	POP3_OK,           /* "+OK" */
	POP3_ERR,          /* "-ERR" */
	POP3_CONTINUATION, /* "+ " (SASL) */
	POP3_INVALID,
};

/* Classify a response line; *text points after the status word. */
enum pop3_status pop3_parse_status(const char *line, size_t len, const char **text);

#endif
