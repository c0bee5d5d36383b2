/*
 * SMTP backend replies (see smtp_reply.h).
 */
#include "smtp_reply.h"

#include <string.h>
#include <strings.h>

#include "announce.h"
#include "sasl.h"

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
}

static enum smtp_reply_status fail(const char **error, const char *why)
{
	*error = why;
	return SMTP_REPLY_ERROR;
}

/* RFC 5321 section 4.2: reply-code = %x32-35 %x30-35 %x30-39 */
static int reply_code(const char *p)
{
	if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' || p[2] < '0' || p[2] > '9')
		return -1;
	return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

enum smtp_reply_status smtp_reply_line(struct smtp_reply *r, const char *line, size_t len,
                                       const char **error)
{
	*error = NULL;
	if (r->done) {
		r->lines = 0;
		r->bytes = 0;
		r->done = false;
	}
	if (len == 0 || line[len - 1] != '\n')
		return fail(error, "reply line does not end in CRLF");
	if (len > SMTP_REPLY_LINE_MAX)
		return fail(error, "reply line too long");
	if (r->bytes + len > SMTP_REPLY_BYTES_MAX)
		return fail(error, "multi-line reply too long");
	if (memchr(line, '\0', len))
		return fail(error, "NUL in reply");
	if (len < 4)
		return fail(error, "reply line shorter than a reply code");
	int code = reply_code(line);
	if (code < 0)
		return fail(error, "reply does not start with a three-digit code");
	/* after the code: "-" (more lines follow), " " and text, or the end */
	char sep = line[3];
	if (sep == '\r' && len != 5)
		return fail(error, "CR inside a reply line");
	if (sep != ' ' && sep != '-' && sep != '\r' && sep != '\n')
		return fail(error, "reply code not followed by space, hyphen or CRLF");
	if (r->lines > 0 && code != r->code)
		return fail(error, "multi-line reply changes its code");
	r->code = code;
	r->lines++;
	r->bytes += len;
	if (sep == '-')
		return SMTP_REPLY_MORE;
	r->done = true;
	return SMTP_REPLY_DONE;
}

/* One keyword line's name is [A-Za-z0-9][A-Za-z0-9-]* (section 4.1.1.1);
 * "AUTH=" is the pre-RFC 4954 spelling some servers still add. */
static bool keyword_is(const char *p, size_t n, const char *kw, size_t *params)
{
	size_t kl = strlen(kw);

	if (n < kl || strncasecmp(p, kw, kl) != 0)
		return false;
	if (n == kl) {
		*params = kl;
		return true;
	}
	if (p[kl] != ' ' && !(p[kl] == '=' && strcmp(kw, "AUTH") == 0))
		return false;
	*params = kl + 1;
	return true;
}

static unsigned auth_mechs(const char *p, size_t n)
{
	unsigned bits = 0;

	for (size_t i = 0; i < n;) {
		while (i < n && p[i] == ' ')
			i++;
		size_t start = i;
		while (i < n && p[i] != ' ')
			i++;
		enum sasl_mech m = sasl_mech_parse(p + start, i - start);
		if (m != SASL_NONE)
			bits |= 1u << m;
	}
	return bits;
}

/* RFC 1870 section 4: "SIZE" [SP 1*DIGIT]; a limit that does not fit
 * counts as none given */
static uint64_t size_limit(const char *p, size_t n)
{
	uint64_t v = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	return v;
}

static void learn_keyword(struct smtp_ehlo *out, const char *p, size_t n)
{
	size_t k;

	if (keyword_is(p, n, "STARTTLS", &k)) {
		out->starttls = true;
	} else if (keyword_is(p, n, "PIPELINING", &k)) {
		out->pipelining = true;
	} else if (keyword_is(p, n, "SIZE", &k)) {
		out->size = true;
		out->size_max = size_limit(p + k, n - k);
	} else if (keyword_is(p, n, "AUTH", &k)) {
		out->auth_mechs |= auth_mechs(p + k, n - k);
	} else if (keyword_is(p, n, "XCLIENT", &k)) {
		out->xclient = true;
		out->xclient_attrs = xclient_parse_attrs(p + k, n - k);
	}
}

const char *smtp_ehlo_parse(const char *reply, size_t len, struct smtp_ehlo *out)
{
	struct smtp_reply r;
	struct smtp_ehlo e;
	const char *error = NULL;
	enum smtp_reply_status status = SMTP_REPLY_MORE;

	memset(out, 0, sizeof(*out));
	memset(&e, 0, sizeof(e));
	smtp_reply_init(&r);
	for (size_t pos = 0; pos < len && status == SMTP_REPLY_MORE;) {
		const char *line = reply + pos;
		const char *lf = memchr(line, '\n', len - pos);
		size_t n = lf ? (size_t)(lf - line) + 1 : len - pos;
		status = smtp_reply_line(&r, line, n, &error);
		if (status == SMTP_REPLY_ERROR)
			return error;
		pos += n;
		if (r.lines > 1) {
			size_t text = n - 1;
			if (text > 4 && line[text - 1] == '\r')
				text--;
			learn_keyword(&e, line + 4, text > 4 ? text - 4 : 0);
		}
	}
	if (status != SMTP_REPLY_DONE)
		return "reply to EHLO ends before its last line";
	if (r.bytes != len)
		return "text after the last line of the reply to EHLO";
	if (r.code != 250)
		return "reply to EHLO is not 250";
	*out = e;
	return NULL;
}
