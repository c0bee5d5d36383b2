/*
 * ManageSieve backend responses (RFC 5804 section 4): the OK/NO/BYE
 * verdicts and the capability lines a server lists after connecting and
 * after STARTTLS. Pure: no I/O, no allocation.
 */
#ifndef MAILSPLICE_SIEVE_PARSE_H
#define MAILSPLICE_SIEVE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

enum sieve_resp {
	SIEVE_RESP_OK,
	SIEVE_RESP_NO,
	SIEVE_RESP_BYE,
	SIEVE_RESP_OTHER, /* not a verdict: a capability line, a challenge string */
};

/* response-oknobye = ("OK" / "NO" / "BYE") [SP "(" resp-code ")"] [SP string]
 * CRLF; the word is case-insensitive and must end at a space or the line's
 * end (CRLF, LF or none). */
enum sieve_resp sieve_parse_response(const char *line, size_t len);

#define SIEVE_CAPABILITY_NAME_MAX 64

/*
 * A capability line (section 1.7): a quoted capability name, then the end
 * of the line or SP and its value. Copies the unescaped name, NUL-terminated,
 * into name (at most SIEVE_CAPABILITY_NAME_MAX bytes with the NUL) and
 * returns true; false when the line is not one (a verdict, a literal, a bad
 * quote, a name too long).
 */
bool sieve_parse_capability(const char *line, size_t len, char name[SIEVE_CAPABILITY_NAME_MAX]);

#endif
