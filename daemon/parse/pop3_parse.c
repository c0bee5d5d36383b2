/*
 * POP3 line parsing (see pop3_parse.h).
 */
#include "pop3_parse.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

const char *pop3_parse_command(char *line, struct pop3_command *cmd)
{
	size_t i = 0;

	memset(cmd, 0, sizeof(*cmd));
	while (line[i] && line[i] != ' ') {
		if (i >= POP3_KEYWORD_MAX || !isalpha((unsigned char)line[i]))
			return "invalid command";
		cmd->keyword[i] = (char)toupper((unsigned char)line[i]);
		i++;
	}
	if (i < 3)
		return "invalid command";
	if (!line[i]) {
		cmd->rest = line + i;
		return NULL;
	}
	/* RFC 1939 section 3: one space between keyword and arguments */
	i++;
	cmd->rest = line + i;
	for (const char *p = cmd->rest; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "control character in command";
	}
	/* RFC 1939 section 7: a PASS argument may contain spaces */
	if (strcmp(cmd->keyword, "PASS") == 0)
		return *cmd->rest ? NULL : "empty argument";
	char *p = line + i;
	while (*p && cmd->n_args < POP3_ARGS_MAX) {
		cmd->args[cmd->n_args++] = p;
		char *sp = strchr(p, ' ');
		if (!sp)
			break;
		*sp = '\0';
		p = sp + 1;
		if (!*p)
			return "trailing space";
	}
	for (size_t k = 0; k < cmd->n_args; k++) {
		if (!*cmd->args[k])
			return "empty argument";
	}
	return NULL;
}

enum pop3_status pop3_parse_status(const char *line, size_t len, const char **text)
{
	*text = line + len;
	if (len >= 3 && strncmp(line, "+OK", 3) == 0 &&
	    (len == 3 || line[3] == ' ' || line[3] == '\r' || line[3] == '\n')) {
		*text = line + (len > 3 && line[3] == ' ' ? 4 : 3);
		return POP3_OK;
	}
	if (len >= 4 && strncmp(line, "-ERR", 4) == 0 &&
	    (len == 4 || line[4] == ' ' || line[4] == '\r' || line[4] == '\n')) {
		*text = line + (len > 4 && line[4] == ' ' ? 5 : 4);
		return POP3_ERR;
	}
	if (len >= 1 && line[0] == '+' && (len == 1 || line[1] == ' ' || line[1] == '\r')) {
		*text = line + (len > 1 && line[1] == ' ' ? 2 : 1);
		return POP3_CONTINUATION;
	}
	return POP3_INVALID;
}

bool pop3_has_resp_code(const char *text, size_t len, const char *code)
{
	size_t n = strlen(code);

	if (len < n + 2 || text[0] != '[' || strncasecmp(text + 1, code, n) != 0)
		return false;
	return text[n + 1] == ']' || text[n + 1] == '/';
}

static size_t without_eol(const char *line, size_t len)
{
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	return len;
}

/* the capability's keyword, then either the end or a space */
static bool capa_is(const char *p, size_t n, const char *kw, size_t *args)
{
	size_t kl = strlen(kw);

	if (n < kl || strncasecmp(p, kw, kl) != 0 || (n > kl && p[kl] != ' '))
		return false;
	*args = n > kl ? kl + 1 : kl;
	return true;
}

enum pop3_capa_status pop3_capa_line(const char *line, size_t len, struct pop3_capa *capa)
{
	size_t n = without_eol(line, len), args;

	if (n == 1 && line[0] == '.')
		return POP3_CAPA_END;
	if (n && line[0] == '.') {
		line++;
		n--;
	}
	if (++capa->lines > POP3_CAPA_LINES_MAX)
		return POP3_CAPA_TOO_MANY;
	if (capa_is(line, n, "USER", &args)) {
		capa->user = true;
	} else if (capa_is(line, n, "SASL", &args)) {
		for (size_t i = args; i < n;) {
			while (i < n && line[i] == ' ')
				i++;
			size_t w = i;
			while (i < n && line[i] != ' ')
				i++;
			if (i - w == 5 && strncasecmp(line + w, "PLAIN", 5) == 0)
				capa->sasl_plain = true;
		}
	}
	return POP3_CAPA_MORE;
}
