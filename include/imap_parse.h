/*
 * IMAP command and response parsing for the login phase (RFC 9051 / 3501
 * section 9 grammar, the parts a client uses before it is authenticated).
 * Pure: bytes in, a parsed command out; no I/O, no allocation.
 */
#ifndef MAILSPLICE_IMAP_PARSE_H
#define MAILSPLICE_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define IMAP_TAG_MAX  64
#define IMAP_NAME_MAX 32
#define IMAP_MAX_ARGS 72 /* ID: up to 30 field/value pairs, plus parentheses */

enum imap_arg_type {
	IMAP_ARG_ATOM,
	IMAP_ARG_STRING, /* quoted string or literal, decoded */
	IMAP_ARG_NIL,
	IMAP_ARG_LIST_START,
	IMAP_ARG_LIST_END,
};

struct imap_arg {
	enum imap_arg_type type;
	const char *s; /* NUL-terminated, in the caller's scratch buffer */
	size_t len;
	bool literal;
};

struct imap_command {
	char tag[IMAP_TAG_MAX + 1];
	char name[IMAP_NAME_MAX + 1]; /* upper-cased */
	struct imap_arg args[IMAP_MAX_ARGS];
	size_t n_args;
};

struct imap_limits {
	size_t max_line;    /* one line (between literals), CRLF included */
	size_t max_literal; /* one literal */
};

enum imap_parse_status {
	IMAP_PARSE_INCOMPLETE, /* more bytes needed; see *sync_literals */
	IMAP_PARSE_COMPLETE,   /* *consumed bytes form the command */
	IMAP_PARSE_ERROR,      /* *error says what; *consumed bytes to drop (0: wait for a CRLF) */
};

/*
 * Parse one command at the start of buf. scratch (at least len + 1 bytes,
 * more is fine) receives the decoded strings. *sync_literals is the number
 * of synchronising literal announcements ("{N}" CRLF) complete in buf: the
 * caller answers each new one with a continuation request ("+ ..."), since
 * the client sends the literal's bytes only after that (RFC 9051 section
 * 4.3). Non-synchronising literals ("{N+}", RFC 7888) need no answer.
 * On error, cmd->tag holds the tag if one was read ("" otherwise), so the
 * reply can be tagged.
 */
enum imap_parse_status imap_parse_command(const char *buf, size_t len,
                                          const struct imap_limits *lim, struct imap_command *cmd,
                                          char *scratch, size_t scratch_len, size_t *consumed,
                                          unsigned *sync_literals, const char **error);

/* ---- backend responses ---- */

enum imap_status {
	IMAP_STATUS_NONE, /* not a status response */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
};

enum imap_resp_kind {
	IMAP_RESP_UNTAGGED,     /* "* ..." */
	IMAP_RESP_CONTINUATION, /* "+ ..." */
	IMAP_RESP_TAGGED,       /* "tag ..." */
	IMAP_RESP_INVALID,
};

/* Classify one response line (CRLF optional). For tagged and untagged
 * lines, *status is the status word if there is one and *rest points after
 * it (the optional "[CODE]" and the text). */
enum imap_resp_kind imap_parse_response(const char *line, size_t len, char *tag, size_t tag_len,
                                        enum imap_status *status, const char **rest);

/* Whether a CAPABILITY list in line ("* CAPABILITY ..." or a
 * "[CAPABILITY ...]" response code) contains cap (case-insensitive).
 * Sets *had_list when line carries a capability list at all. */
bool imap_line_has_capability(const char *line, size_t len, const char *cap, bool *had_list);

/* Write s as an IMAP quoted string into out if it can be one (no CR, LF,
 * NUL or 8-bit bytes); returns the length or 0 (then use a literal). */
size_t imap_quote(const char *s, size_t len, char *out, size_t outlen);

#endif
