/*
 * POP3 line parsing (see pop3_parse.h).
 */
#include "pop3_parse.h"

#include <ctype.h>
#include <string.h>

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
