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

/* Does the text after a status word start with the extended response code
 * [code] (RFC 2449 section 8: "[" resp-code "]" right after the status,
 * hierarchical codes as "[code/...]")? Case-insensitive. */
bool pop3_has_resp_code(const char *text, size_t len, const char *code);

/* What a server lists in its CAPA response (RFC 2449 section 5). */
struct pop3_capa {
	bool user;       /* section 6.8: USER/PASS is allowed */
	bool sasl_plain; /* section 6.3: "SASL" followed by mechanisms, PLAIN among them */
	unsigned lines;  /* capability lines read so far */
};

enum pop3_capa_status {
	POP3_CAPA_MORE, /* a capability line: feed the next */
	POP3_CAPA_END,  /* the terminating "." */
	POP3_CAPA_TOO_MANY,
};

#define POP3_CAPA_LINES_MAX 256

/*
 * Feed one line of the multi-line CAPA response that follows its +OK
 * (len bytes, CRLF or LF included or not). A line starting with "." other
 * than the terminator is dot-stuffed (RFC 1939 section 3) and read without
 * its first dot. Capabilities this proxy does not use are skipped.
 */
enum pop3_capa_status pop3_capa_line(const char *line, size_t len, struct pop3_capa *capa);

#endif
