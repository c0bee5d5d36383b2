/*
 * SMTP client commands (see smtp_command.h).
 */
#include "smtp_command.h"

#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
        {"EHLO", SMTP_EHLO}, {"HELO", SMTP_HELO}, {"STARTTLS", SMTP_STARTTLS}, {"AUTH", SMTP_AUTH},
        {"NOOP", SMTP_NOOP}, {"RSET", SMTP_RSET}, {"QUIT", SMTP_QUIT},         {"MAIL", SMTP_MAIL},
        {"RCPT", SMTP_RCPT}, {"DATA", SMTP_DATA}, {"BDAT", SMTP_BDAT},
};

/* A printable character of a domain or address literal, or a byte of
 * UTF-8 (RFC 6531 allows U-labels): anything but controls and blanks. */
static int helo_char(unsigned char c)
{
	return c > 0x20 && c != 0x7f;
}

/* RFC 4422 section 3.1: sasl-mech = 1*20mech-char, mech-char = UPPER-ALPHA
 * / DIGIT / HYPHEN / UNDERSCORE; clients send lower case too */
static int mech_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static const char *parse_helo(struct smtp_command *cmd)
{
	if (cmd->arg_len == 0 || cmd->arg_len > SMTP_HELO_MAX)
		return "501 5.5.4 Syntax: EHLO hostname";
	for (size_t i = 0; i < cmd->arg_len; i++)
		if (!helo_char((unsigned char)cmd->arg[i]))
			return "501 5.5.4 Syntax: EHLO hostname";
	return NULL;
}

/* RFC 4954 section 4: "AUTH" SP sasl-mech [SP initial-response] */
static const char *parse_auth(struct smtp_command *cmd)
{
	size_t i = 0;

	while (i < cmd->arg_len && cmd->arg[i] != ' ') {
		if (i == SMTP_MECH_MAX || !mech_char((unsigned char)cmd->arg[i]))
			return "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
		cmd->mech[i] = cmd->arg[i];
		i++;
	}
	if (i == 0)
		return "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
	cmd->mech[i] = '\0';
	if (i < cmd->arg_len) {
		cmd->initial = cmd->arg + i + 1;
		cmd->initial_len = cmd->arg_len - i - 1;
	}
	return NULL;
}

const char *smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->arg = "";
	if (memchr(line, '\0', len))
		return "500 5.5.2 NUL in command";
	for (size_t v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++) {
		size_t n = strlen(verbs[v].name);
		if (len < n || strncasecmp(line, verbs[v].name, n) != 0 ||
		    (len > n && line[n] != ' '))
			continue;
		cmd->verb = verbs[v].verb;
		if (len > n) {
			cmd->arg = line + n + 1;
			cmd->arg_len = len - n - 1;
		}
		switch (cmd->verb) {
		case SMTP_EHLO:
		case SMTP_HELO:
			return parse_helo(cmd);
		case SMTP_AUTH:
			return parse_auth(cmd);
		case SMTP_STARTTLS:
			/* RFC 3207 section 4: no parameters */
			return cmd->arg_len ? "501 5.5.4 Syntax: STARTTLS" : NULL;
		default:
			return NULL;
		}
	}
	return "502 5.5.2 Error: command not recognized";
}
