/*
 * IMAP command parsing for the login phase (see imap_parse.h).
 *
 * The parser re-reads the command from its first byte every time more data
 * arrives. Commands before login are short (bounded by max_line and
 * max_literal), so this costs little and keeps the parser free of state
 * that a hostile client could desynchronise.
 */
#include "imap_parse.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* RFC 9051 ATOM-CHAR: any CHAR except atom-specials
 * ( ) { SP CTL % * " \ ] */
static bool atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c);
}

/* ASTRING-CHAR = ATOM-CHAR / resp-specials ("]") */
static bool astring_char(unsigned char c)
{
	return atom_char(c) || c == ']';
}

struct cursor {
	const char *buf;
	size_t len, pos;
	size_t line_start; /* where the current line began, for max_line */
	const struct imap_limits *lim;
	char *scratch;
	size_t scratch_len, scratch_pos;
	unsigned sync_literals;
	const char *error;
};

enum step {
	STEP_OK,
	STEP_MORE,
	STEP_ERROR,
};

static enum step fail(struct cursor *c, const char *msg)
{
	c->error = msg;
	return STEP_ERROR;
}

/* Bytes remaining on the current line, bounded by max_line. */
static enum step need(struct cursor *c, size_t n)
{
	if (c->pos + n > c->len) {
		if (c->len - c->line_start > c->lim->max_line)
			return fail(c, "line too long");
		return STEP_MORE;
	}
	return STEP_OK;
}

static char *scratch_put(struct cursor *c, const char *s, size_t n)
{
	if (c->scratch_pos + n + 1 > c->scratch_len)
		return NULL;
	char *out = c->scratch + c->scratch_pos;
	memcpy(out, s, n);
	out[n] = '\0';
	c->scratch_pos += n + 1;
	return out;
}

static enum step parse_quoted(struct cursor *c, struct imap_arg *a)
{
	size_t start = c->scratch_pos;
	size_t n = 0;

	c->pos++; /* opening quote */
	for (;;) {
		enum step st = need(c, 1);
		if (st != STEP_OK)
			return st;
		unsigned char ch = (unsigned char)c->buf[c->pos];
		if (ch == '"')
			break;
		if (ch == '\r' || ch == '\n' || ch == '\0')
			return fail(c, "unterminated quoted string");
		if (ch == '\\') {
			st = need(c, 2);
			if (st != STEP_OK)
				return st;
			ch = (unsigned char)c->buf[c->pos + 1];
			if (ch != '\\' && ch != '"')
				return fail(c, "invalid escape in quoted string");
			c->pos++;
		}
		if (start + n + 1 >= c->scratch_len)
			return fail(c, "string too long");
		c->scratch[start + n++] = (char)ch;
		c->pos++;
	}
	c->pos++; /* closing quote */
	c->scratch[start + n] = '\0';
	c->scratch_pos = start + n + 1;
	a->type = IMAP_ARG_STRING;
	a->s = c->scratch + start;
	a->len = n;
	a->literal = false;
	return STEP_OK;
}

static enum step parse_literal(struct cursor *c, struct imap_arg *a)
{
	uint64_t n = 0;
	size_t p = c->pos + 1;
	bool digits = false, plus = false;

	for (;; p++) {
		if (p >= c->len)
			return need(c, p - c->pos + 1);
		unsigned char ch = (unsigned char)c->buf[p];
		if (ch >= '0' && ch <= '9') {
			n = n * 10 + (ch - '0');
			if (n > c->lim->max_literal)
				return fail(c, "literal too large");
			digits = true;
			continue;
		}
		if (ch == '+' && digits && !plus) {
			plus = true;
			continue;
		}
		if (ch == '}' && digits)
			break;
		return fail(c, "invalid literal announcement");
	}
	p++; /* '}' */
	/* the announcement ends the line: CRLF must follow */
	if (p + 2 > c->len)
		return need(c, p + 2 - c->pos);
	if (c->buf[p] != '\r' || c->buf[p + 1] != '\n')
		return fail(c, "literal announcement must end the line");
	p += 2;
	if (!plus)
		c->sync_literals++;
	if (p + n > c->len)
		return STEP_MORE;
	char *s = scratch_put(c, c->buf + p, (size_t)n);
	if (!s)
		return fail(c, "literal too large");
	a->type = IMAP_ARG_STRING;
	a->s = s;
	a->len = (size_t)n;
	a->literal = true;
	c->pos = p + (size_t)n;
	c->line_start = c->pos;
	return STEP_OK;
}

static enum step parse_atom(struct cursor *c, struct imap_arg *a)
{
	size_t start = c->pos;

	while (c->pos < c->len && astring_char((unsigned char)c->buf[c->pos]))
		c->pos++;
	if (c->pos == c->len) {
		enum step st = need(c, 1);
		if (st != STEP_OK)
			return st;
	}
	if (c->pos == start)
		return fail(c, "invalid character in argument");
	size_t n = c->pos - start;
	if (n == 3 && strncasecmp(c->buf + start, "NIL", 3) == 0) {
		a->type = IMAP_ARG_NIL;
		a->s = "";
		a->len = 0;
		return STEP_OK;
	}
	char *s = scratch_put(c, c->buf + start, n);
	if (!s)
		return fail(c, "argument too long");
	a->type = IMAP_ARG_ATOM;
	a->s = s;
	a->len = n;
	a->literal = false;
	return STEP_OK;
}

static enum step parse_args(struct cursor *c, struct imap_command *cmd)
{
	int depth = 0;

	for (;;) {
		enum step st = need(c, 1);
		if (st != STEP_OK)
			return st;
		char ch = c->buf[c->pos];
		if (ch == '\r' || ch == '\n') {
			if (depth)
				return fail(c, "unbalanced parentheses");
			return STEP_OK;
		}
		/* arguments are separated by exactly one space, except just
		 * inside parentheses */
		bool after_open =
		        cmd->n_args && cmd->args[cmd->n_args - 1].type == IMAP_ARG_LIST_START;
		if (ch == ')') {
			if (depth == 0)
				return fail(c, "unbalanced parentheses");
		} else if (!after_open) {
			if (ch != ' ')
				return fail(c, "expected a space between arguments");
			c->pos++;
			st = need(c, 1);
			if (st != STEP_OK)
				return st;
			ch = c->buf[c->pos];
		}
		if (cmd->n_args >= IMAP_MAX_ARGS)
			return fail(c, "too many arguments");
		struct imap_arg *a = &cmd->args[cmd->n_args];
		memset(a, 0, sizeof(*a));
		if (ch == '(') {
			if (depth >= 1)
				return fail(c, "nested lists are not accepted before login");
			depth++;
			a->type = IMAP_ARG_LIST_START;
			a->s = "";
			c->pos++;
		} else if (ch == ')') {
			depth--;
			a->type = IMAP_ARG_LIST_END;
			a->s = "";
			c->pos++;
		} else if (ch == '"') {
			st = parse_quoted(c, a);
		} else if (ch == '{') {
			st = parse_literal(c, a);
		} else {
			st = parse_atom(c, a);
		}
		if (st != STEP_OK)
			return st;
		cmd->n_args++;
	}
}

/* Where the line holding pos ends (just after its LF), or 0 if not yet. */
static size_t line_end(const char *buf, size_t len, size_t pos)
{
	const char *lf = memchr(buf + pos, '\n', len - pos);
	return lf ? (size_t)(lf - buf) + 1 : 0;
}

enum imap_parse_status imap_parse_command(const char *buf, size_t len,
                                          const struct imap_limits *lim, struct imap_command *cmd,
                                          char *scratch, size_t scratch_len, size_t *consumed,
                                          unsigned *sync_literals, const char **error)
{
	struct cursor c = {
	        .buf = buf, .len = len, .lim = lim, .scratch = scratch, .scratch_len = scratch_len};
	enum step st;
	size_t start;

	memset(cmd, 0, offsetof(struct imap_command, args));
	cmd->n_args = 0;
	*consumed = 0;
	*sync_literals = 0;
	*error = NULL;

	/* tag */
	while (c.pos < len && astring_char((unsigned char)buf[c.pos]) && buf[c.pos] != '+')
		c.pos++;
	if (c.pos == len) {
		st = need(&c, 1);
		if (st == STEP_MORE)
			return IMAP_PARSE_INCOMPLETE;
		goto error;
	}
	if (c.pos == 0 || c.pos > IMAP_TAG_MAX) {
		c.error = c.pos ? "tag too long" : "missing or invalid tag";
		goto error;
	}
	memcpy(cmd->tag, buf, c.pos);
	cmd->tag[c.pos] = '\0';
	if (buf[c.pos] != ' ') {
		c.error = "missing command";
		goto error;
	}
	c.pos++;

	/* command name: letters only in the commands we know */
	start = c.pos;
	while (c.pos < len && isalpha((unsigned char)buf[c.pos]))
		c.pos++;
	if (c.pos == len) {
		st = need(&c, 1);
		if (st == STEP_MORE)
			return IMAP_PARSE_INCOMPLETE;
		goto error;
	}
	if (c.pos == start || c.pos - start > IMAP_NAME_MAX) {
		c.error = "invalid command name";
		goto error;
	}
	for (size_t i = 0; i < c.pos - start; i++)
		cmd->name[i] = (char)toupper((unsigned char)buf[start + i]);

	st = parse_args(&c, cmd);
	*sync_literals = c.sync_literals;
	if (st == STEP_MORE)
		return IMAP_PARSE_INCOMPLETE;
	if (st == STEP_ERROR)
		goto error;
	/* CRLF (a bare LF is tolerated, as most servers do) */
	if (buf[c.pos] == '\r') {
		if (c.pos + 1 >= len)
			return need(&c, 2) == STEP_MORE ? IMAP_PARSE_INCOMPLETE : IMAP_PARSE_ERROR;
		if (buf[c.pos + 1] != '\n') {
			c.error = "CR without LF";
			goto error;
		}
		c.pos++;
	}
	c.pos++;
	*consumed = c.pos;
	return IMAP_PARSE_COMPLETE;

error:
	*error = c.error ? c.error : "syntax error";
	*sync_literals = c.sync_literals;
	/* drop up to the end of the line the error is on; the rest of a
	 * command whose literal we refused is garbage the client will send
	 * as new lines, each answered with BAD until it gives up */
	*consumed = line_end(buf, len, c.pos < len ? c.pos : len ? len - 1 : 0);
	if (*consumed == 0 && len > lim->max_line)
		*consumed = len; /* no line end in sight: drop what we have */
	return IMAP_PARSE_ERROR;
}

/* ---- responses ---- */

static const struct {
	const char *word;
	enum imap_status st;
} status_words[] = {
        {"OK", IMAP_STATUS_OK},   {"NO", IMAP_STATUS_NO},           {"BAD", IMAP_STATUS_BAD},
        {"BYE", IMAP_STATUS_BYE}, {"PREAUTH", IMAP_STATUS_PREAUTH},
};

enum imap_resp_kind imap_parse_response(const char *line, size_t len, char *tag, size_t tag_len,
                                        enum imap_status *status, const char **rest)
{
	size_t i = 0;

	*status = IMAP_STATUS_NONE;
	*rest = line + len;
	if (tag_len)
		tag[0] = '\0';
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= 1 && line[0] == '+')
		return IMAP_RESP_CONTINUATION;
	while (i < len && line[i] != ' ')
		i++;
	if (i == 0 || i == len)
		return IMAP_RESP_INVALID;
	enum imap_resp_kind kind = IMAP_RESP_TAGGED;
	if (i == 1 && line[0] == '*') {
		kind = IMAP_RESP_UNTAGGED;
	} else {
		if (i >= tag_len)
			return IMAP_RESP_INVALID;
		memcpy(tag, line, i);
		tag[i] = '\0';
	}
	size_t w = ++i;
	while (i < len && line[i] != ' ')
		i++;
	for (size_t k = 0; k < sizeof(status_words) / sizeof(status_words[0]); k++) {
		if (strlen(status_words[k].word) == i - w &&
		    strncasecmp(line + w, status_words[k].word, i - w) == 0) {
			*status = status_words[k].st;
			*rest = line + (i < len ? i + 1 : i);
			break;
		}
	}
	return kind;
}

bool imap_line_has_capability(const char *line, size_t len, const char *cap, bool *had_list)
{
	const char *p = NULL, *end = line + len;
	size_t cl = strlen(cap);

	if (had_list)
		*had_list = false;
	for (const char *q = line; q + 10 <= end; q++) {
		if (strncasecmp(q, "CAPABILITY", 10) == 0 &&
		    (q == line || q[-1] == ' ' || q[-1] == '[')) {
			p = q + 10;
			break;
		}
	}
	if (!p)
		return false;
	if (had_list)
		*had_list = true;
	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		const char *w = p;
		while (p < end && *p != ' ' && *p != ']' && *p != '\r' && *p != '\n')
			p++;
		if ((size_t)(p - w) == cl && strncasecmp(w, cap, cl) == 0)
			return true;
		if (p < end && *p != ' ')
			break; /* end of the list */
	}
	return false;
}

size_t imap_quote(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (outlen < 3)
		return 0;
	out[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\r' || ch == '\n' || ch == '\0' || ch >= 0x80)
			return 0;
		if (ch == '"' || ch == '\\') {
			if (o + 1 >= outlen)
				return 0;
			out[o++] = '\\';
		}
		if (o + 2 >= outlen)
			return 0;
		out[o++] = (char)ch;
	}
	out[o++] = '"';
	out[o] = '\0';
	return o;
}
