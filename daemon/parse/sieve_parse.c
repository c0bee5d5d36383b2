/*
 * ManageSieve backend responses (see sieve_parse.h).
 */
#include "sieve_parse.h"

#include <string.h>
#include <strings.h>

/* the end of a line: nothing more, or CRLF, or a bare LF */
static bool at_eol(const char *p, size_t n)
{
	return n == 0 || (n == 1 && p[0] == '\n') || (n == 2 && p[0] == '\r' && p[1] == '\n');
}

static bool word_is(const char *line, size_t len, const char *word)
{
	size_t n = strlen(word);

	if (len < n || strncasecmp(line, word, n) != 0)
		return false;
	return at_eol(line + n, len - n) || line[n] == ' ';
}

enum sieve_resp sieve_parse_response(const char *line, size_t len)
{
	if (word_is(line, len, "OK"))
		return SIEVE_RESP_OK;
	if (word_is(line, len, "NO"))
		return SIEVE_RESP_NO;
	if (word_is(line, len, "BYE"))
		return SIEVE_RESP_BYE;
	return SIEVE_RESP_OTHER;
}

bool sieve_parse_capability(const char *line, size_t len, char name[SIEVE_CAPABILITY_NAME_MAX])
{
	size_t i = 1, o = 0;

	name[0] = '\0';
	if (len < 2 || line[0] != '"')
		return false;
	/* quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR is any UTF-8
	 * character but CR, LF, DQUOTE and backslash, or a backslash before
	 * DQUOTE or backslash */
	for (; i < len && line[i] != '"'; i++) {
		char c = line[i];
		if (c == '\\') {
			if (++i == len || (line[i] != '"' && line[i] != '\\'))
				return false;
			c = line[i];
		} else if (c == '\r' || c == '\n' || c == '\0') {
			return false;
		}
		if (o + 1 >= SIEVE_CAPABILITY_NAME_MAX)
			return false;
		name[o++] = c;
	}
	if (i == len || o == 0)
		return false;
	i++; /* the closing quote */
	if (i < len && line[i] != ' ' && !at_eol(line + i, len - i))
		return false;
	name[o] = '\0';
	return true;
}
