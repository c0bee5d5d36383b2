/*
 * HTTP/1.1 message heads (RFC 9112) parsed strictly; see http_parse.h.
 *
 * The parser only ever says "this is the message" or "this is an error":
 * wherever RFC 9112 lets a recipient choose between rejecting and repairing
 * (obs-fold, whitespace before the colon, duplicate Content-Length, both
 * Content-Length and Transfer-Encoding, a bare CR or LF), it rejects, so
 * the proxy and the backend can never frame the same bytes differently.
 *
 * Decisions beyond the RFC's MUSTs, and why:
 *   - field values must be valid UTF-8 where they are not ASCII: the
 *     Stalwart proxy refuses anything else, and routing on a value
 *     two parsers may read differently is what smuggling needs;
 *   - the request target takes the characters of RFC 3986 plus those that
 *     browsers send unencoded (WHATWG URL: [ ] | ^ everywhere, { } ` \ in
 *     the query); never '#', '"', '<', '>', a space, a control or a raw
 *     non-ASCII byte; a path with "." or ".." segments is refused, because
 *     the route is chosen on the path as sent and the backend would serve
 *     it normalised;
 *   - absolute-form is accepted for http and https, without userinfo, and
 *     only when its authority is the Host field (RFC 9112 3.2.2 makes the
 *     backend use the target's authority: the two must agree);
 *   - a second Content-Length, a second Transfer-Encoding or a second Host
 *     field line is refused even with an equal value (RFC 9112 6.3 permits
 *     rejecting; nothing legitimate sends two);
 *   - a Connection option naming Content-Length, Transfer-Encoding or Host
 *     is refused: dropping it as hop-by-hop would re-frame the message;
 *   - a field name that reads as Content-Length, Transfer-Encoding or Host
 *     once '_' becomes '-' is refused (gateways that map CGI names do this);
 *   - requests carry at most HTTP_MAX_HEADERS - HTTP_ADDED_FIELDS fields,
 *     so the head forwarded with our own Forwarded, X-Forwarded-For and
 *     Connection fields stays within a backend's own 100-field limit.
 */
#include "http_parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Fields http_request_head_build may add: Forwarded, X-Forwarded-For,
 * Upgrade, Connection. */
#define HTTP_ADDED_FIELDS       4
#define HTTP_REQUEST_MAX_FIELDS (HTTP_MAX_HEADERS - HTTP_ADDED_FIELDS)
/* RFC 9112 2.2: at least one empty line before a request line is ignored;
 * a few more are tolerated, an endless stream of them is not. */
#define HTTP_MAX_LEADING_CRLF 8
/* Longer methods are not methods anyone implements (501). */
#define HTTP_MAX_METHOD 32

/* ---- character classes ---- */

/* tchar, RFC 9110 5.6.2 */
static const uint8_t tchar_table[256] = {
        ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
        ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
        ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
        ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
        ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
        ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
        ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
        ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
        ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
        ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static bool is_tchar(uint8_t c)
{
	return tchar_table[c];
}

static bool is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned hex_val(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return (unsigned)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (unsigned)(c - 'a' + 10);
	return (unsigned)(c - 'A' + 10);
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs,
 * no surrogates, nothing past U+10FFFF), 0 if there is none. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	}
	return len;
}

bool http_utf8_valid(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = p[i] < 0x80 ? 1 : utf8_seq(p + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* Case-insensitive equality with a string of known length; the length
 * is compared first, so most mismatches cost one comparison. */
static bool str_ieq_n(struct http_str s, const char *lit, size_t n)
{
	if (s.len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (lower((uint8_t)s.p[i]) != lower((uint8_t)lit[i]))
			return false;
	}
	return true;
}

static bool str_ieq(struct http_str s, const char *lit)
{
	return str_ieq_n(s, lit, strlen(lit));
}

static bool str_eq_n(struct http_str s, const char *lit, size_t n)
{
	return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* for literals: the length is known at compile time */
#define IEQ(s, lit) str_ieq_n((s), (lit), sizeof(lit) - 1)
#define EQ(s, lit)  str_eq_n((s), (lit), sizeof(lit) - 1)

static struct http_str trim_ows(struct http_str s)
{
	while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
		s.p++;
		s.len--;
	}
	while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
		s.len--;
	return s;
}

/* ---- lists (RFC 9110 5.6.1) ---- */

/* Next element of a comma-separated list, OWS trimmed; empty elements are
 * skipped as the RFC asks. False at the end. */
static bool list_next(struct http_str *rest, struct http_str *elem)
{
	while (rest->len > 0) {
		const char *comma = memchr(rest->p, ',', rest->len);
		size_t n = comma ? (size_t)(comma - rest->p) : rest->len;
		struct http_str e = trim_ows((struct http_str){rest->p, n});

		rest->p += comma ? n + 1 : n;
		rest->len -= comma ? n + 1 : n;
		if (e.len > 0) {
			*elem = e;
			return true;
		}
	}
	return false;
}

bool http_list_has(struct http_str value, const char *token)
{
	struct http_str e;

	while (list_next(&value, &e)) {
		if (str_ieq(e, token))
			return true;
	}
	return false;
}

const struct http_field *http_field_get(const struct http_head *h, const char *name)
{
	for (size_t i = 0; i < h->n_fields; i++) {
		if (str_ieq(h->fields[i].name, name))
			return &h->fields[i];
	}
	return NULL;
}

/* ---- the head: lines, fields ---- */

struct parse_err {
	unsigned status;
	const char *why;
};

static bool fail(struct parse_err *e, unsigned status, const char *why)
{
	e->status = status;
	e->why = why;
	return false;
}

/*
 * The bytes before a complete head: anything already certain to be wrong
 * (a bare CR or LF) is refused at once instead of waiting for a head that
 * cannot come. Only memchr-speed scans: a client that trickles its head a
 * byte at a time must not make every call expensive.
 */
static bool precheck_lines(const uint8_t *p, size_t n, struct parse_err *e)
{
	const uint8_t *q = p, *end = p + n;

	while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
		if (q == p || q[-1] != '\r')
			return fail(e, 400, "bare LF in head");
		q++;
	}
	q = p;
	while ((q = memchr(q, '\r', (size_t)(end - q))) != NULL) {
		if (q + 1 < end && q[1] != '\n')
			return fail(e, 400, "bare CR in head");
		q++;
	}
	return true;
}

/* A field value from p up to its CR: VCHAR, SP, HTAB and well-formed
 * UTF-8 (RFC 9110 5.5); anything else, NUL and bare CR/LF included, is an
 * error. *vlen is the length up to the CR (before trimming). */
static bool scan_value(const uint8_t *p, size_t n, size_t *vlen, struct parse_err *e,
                       unsigned status)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		if (c == '\r') {
			if (i + 1 >= n || p[i + 1] != '\n')
				return fail(e, status, "bare CR in head");
			*vlen = i;
			return true;
		}
		if (c == '\t' || (c >= 0x20 && c < 0x7f)) {
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t k = utf8_seq(p + i, n - i);
			if (k == 0)
				return fail(e, status, "field value is not UTF-8");
			i += k;
			continue;
		}
		if (c == '\n')
			return fail(e, status, "bare LF in head");
		if (c == 0)
			return fail(e, status, "NUL in field value");
		return fail(e, status, "control character in field value");
	}
	return fail(e, status, "field line without CRLF");
}

/* Field lines from pos up to the empty line that ends at end. */
static bool parse_fields(const uint8_t *buf, size_t pos, size_t end, size_t max_fields,
                         struct http_head *h, struct parse_err *e, unsigned bad)
{
	while (pos < end) {
		size_t start = pos, vlen;
		struct http_field *f;

		if (buf[pos] == '\r') /* the empty line: memmem found CRLFCRLF */
			return pos + 2 == end ? true : fail(e, bad, "bare CR in head");
		if (buf[pos] == ' ' || buf[pos] == '\t')
			return fail(e, bad, "obs-fold or whitespace before a field line");
		while (pos < end && is_tchar(buf[pos]))
			pos++;
		if (pos == start)
			return fail(e, bad, "invalid field name");
		if (pos >= end || buf[pos] != ':') {
			if (pos < end && (buf[pos] == ' ' || buf[pos] == '\t'))
				return fail(e, bad, "whitespace between field name and colon");
			return fail(e, bad, "invalid field name");
		}
		if (h->n_fields >= max_fields)
			return fail(e, 431, "too many header fields");
		f = &h->fields[h->n_fields++];
		f->name = (struct http_str){(const char *)buf + start, pos - start};
		pos++;
		if (!scan_value(buf + pos, end - pos, &vlen, e, bad))
			return false;
		f->value = trim_ows((struct http_str){(const char *)buf + pos, vlen});
		pos += vlen + 2;
	}
	return fail(e, bad, "head without an empty line");
}

/* ---- what the fields say ---- */

/* Content-Length = 1*DIGIT, RFC 9110 8.6: no sign, no space, no list, no
 * hex, no overflow. */
static bool parse_length(struct http_str v, uint64_t *out)
{
	uint64_t n = 0;

	if (v.len == 0)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		uint8_t c = (uint8_t)v.p[i];
		if (c < '0' || c > '9')
			return false;
		if (n > (UINT64_MAX - (c - '0')) / 10)
			return false;
		n = n * 10 + (c - '0');
	}
	*out = n;
	return true;
}

/*
 * Transfer-Encoding (RFC 9112 6.1, 7): a list of codings whose last one
 * must be chunked, chunked only once, and only codings we know (the body
 * passes through unchanged, but a coding the backend does not know either
 * is a 501 by RFC 9112 6.1). Codings carry no parameters here.
 */
static bool check_codings(struct http_str v, struct parse_err *e, unsigned bad)
{
	static const char *const known[] = {"chunked",  "gzip",       "x-gzip", "deflate",
	                                    "compress", "x-compress", NULL};
	struct http_str c, rest = v;
	bool last_chunked = false, unknown = false;
	int chunked = 0;

	while (list_next(&rest, &c)) {
		bool k = false;
		for (size_t i = 0; known[i]; i++)
			k |= str_ieq(c, known[i]);
		last_chunked = IEQ(c, "chunked");
		chunked += last_chunked;
		unknown |= !k;
	}
	if (!last_chunked)
		return fail(e, bad, "Transfer-Encoding does not end with chunked");
	if (chunked > 1)
		return fail(e, bad, "chunked applied more than once");
	if (unknown)
		return fail(e, bad == 400 ? 501 : bad, "unknown transfer coding");
	return true;
}

/* A name that a CGI-style gateway would read as one of ours once '_' is
 * '-': "Transfer_Encoding", "content_length". */
static bool underscore_alias(struct http_str name, const char *lit)
{
	size_t n = strlen(lit);
	bool underscore = false;

	if (name.len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = lower((uint8_t)name.p[i]);
		if (c == '_') {
			c = '-';
			underscore = true;
		}
		if (c != (uint8_t)lit[i])
			return false;
	}
	return underscore;
}

/* uri-host [ ":" port ], RFC 9110 7.2 / RFC 3986 3.2.2 (empty is allowed). */
static bool valid_host(struct http_str v)
{
	size_t i = 0;

	if (v.len > 0 && v.p[0] == '[') {
		for (i = 1; i < v.len && v.p[i] != ']'; i++) {
			uint8_t c = (uint8_t)v.p[i];
			if (!is_hex(c) && c != ':' && c != '.' && c != 'v' && c != 'V')
				return false;
		}
		if (i >= v.len || i == 1)
			return false;
		i++;
	} else {
		for (; i < v.len && v.p[i] != ':'; i++) {
			uint8_t c = (uint8_t)v.p[i];
			if (c == '%') {
				if (i + 2 >= v.len || !is_hex((uint8_t)v.p[i + 1]) ||
				    !is_hex((uint8_t)v.p[i + 2]))
					return false;
				i += 2;
				continue;
			}
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=", c)))
				return false;
		}
	}
	if (i == v.len)
		return true;
	if (v.p[i] != ':' || v.len - i - 1 > 5)
		return false;
	for (i++; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
	}
	return true;
}

/* Content-Type is text/event-stream (media types are case-insensitive,
 * parameters may follow). */
static bool is_event_stream(struct http_str v)
{
	static const char type[] = "text/event-stream";
	size_t n = sizeof(type) - 1;

	if (v.len < n || !str_ieq((struct http_str){v.p, n}, type))
		return false;
	return v.len == n || v.p[n] == ';' || v.p[n] == ' ' || v.p[n] == '\t';
}

struct field_summary {
	const struct http_field *cl, *te, *host, *upgrade, *expect, *ctype;
	bool conn_close, conn_keep_alive, conn_upgrade;
};

/* One pass over the fields: duplicates of the framing fields, Connection
 * options that would strip them, and everything later steps need. */
static bool summarise(const struct http_head *h, struct field_summary *s, struct parse_err *e,
                      unsigned bad)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < h->n_fields; i++) {
		const struct http_field *f = &h->fields[i];
		struct http_str name = f->name;

		if (IEQ(name, "content-length")) {
			if (s->cl)
				return fail(e, bad, "more than one Content-Length");
			s->cl = f;
		} else if (IEQ(name, "transfer-encoding")) {
			if (s->te)
				return fail(e, bad, "more than one Transfer-Encoding");
			s->te = f;
		} else if (IEQ(name, "host")) {
			if (s->host)
				return fail(e, bad, "more than one Host");
			s->host = f;
		} else if (IEQ(name, "connection")) {
			struct http_str rest = f->value, opt;
			while (list_next(&rest, &opt)) {
				if (IEQ(opt, "content-length") || IEQ(opt, "transfer-encoding") ||
				    IEQ(opt, "host"))
					return fail(e, bad, "Connection names a framing field");
				s->conn_close |= IEQ(opt, "close");
				s->conn_keep_alive |= IEQ(opt, "keep-alive");
				s->conn_upgrade |= IEQ(opt, "upgrade");
			}
		} else if (IEQ(name, "upgrade")) {
			if (!s->upgrade)
				s->upgrade = f;
		} else if (IEQ(name, "expect")) {
			if (!s->expect)
				s->expect = f;
		} else if (IEQ(name, "content-type")) {
			if (!s->ctype)
				s->ctype = f;
		} else if (underscore_alias(name, "content-length") ||
		           underscore_alias(name, "transfer-encoding") ||
		           underscore_alias(name, "host")) {
			return fail(e, bad, "field name aliases a framing field");
		}
	}
	return true;
}

/* ---- the request line ---- */

static struct http_str slice(const uint8_t *p, size_t n)
{
	return (struct http_str){(const char *)p, n};
}

/* "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3, case-sensitive); 1 if it is
 * HTTP/1.0 or HTTP/1.1 (*minor set), 0 another well-formed version (505),
 * -1 not a version at all (400). */
static int parse_version(const uint8_t *p, size_t n, unsigned *minor)
{
	if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
	    p[7] < '0' || p[7] > '9')
		return -1;
	if (p[5] != '1' || p[7] > '1')
		return 0;
	*minor = (unsigned)(p[7] - '0');
	return 1;
}

/* The path and query of an origin-form target (or the tail of an absolute
 * one), see the notes at the top of this file. */
static bool check_path_query(const uint8_t *p, size_t n, struct http_str *path,
                             struct http_str *query, struct parse_err *e)
{
	size_t q = n;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		bool in_query = q < n;

		if (c == '?' && !in_query) {
			q = i;
			continue;
		}
		if (c == '%') {
			if (i + 2 >= n || !is_hex(p[i + 1]) || !is_hex(p[i + 2]))
				return fail(e, 400, "bad percent-encoding in target");
			i += 2;
			continue;
		}
		if (c <= 0x20 || c >= 0x7f || c == '#' || c == '"' || c == '<' || c == '>')
			return fail(e, 400, "invalid character in target");
		if (!in_query && (c == '{' || c == '}' || c == '`' || c == '\\'))
			return fail(e, 400, "invalid character in target path");
	}
	*path = slice(p, q);
	*query = q < n ? slice(p + q + 1, n - q - 1) : slice(p + n, 0);

	/* dot-segments, also as %2e */
	for (size_t i = 0; i < q;) {
		size_t j = i + 1, dots = 0;
		bool other = false;

		while (j < q && p[j] != '/') {
			if (p[j] == '.') {
				dots++;
				j++;
			} else if (p[j] == '%' && j + 2 < q && p[j + 1] == '2' &&
			           lower(p[j + 2]) == 'e') {
				dots++;
				j += 3;
			} else {
				other = true;
				j++;
			}
		}
		if (!other && (dots == 1 || dots == 2))
			return fail(e, 400, "dot-segment in target path");
		i = j;
	}
	return true;
}

static bool parse_target(const uint8_t *p, size_t n, struct http_head *h, struct parse_err *e)
{
	if (n > HTTP_MAX_TARGET)
		return fail(e, 414, "request target too long");
	if (n == 1 && p[0] == '*') { /* asterisk-form, RFC 9112 3.2.4 */
		if (!EQ(h->method, "OPTIONS"))
			return fail(e, 400, "asterisk-form target for a method other than OPTIONS");
		h->path = slice(p, 1);
		h->query = slice(p + 1, 0);
		return true;
	}
	if (p[0] == '/') /* origin-form */
		return check_path_query(p, n, &h->path, &h->query, e);

	/* absolute-form, RFC 9112 3.2.2: http or https only; the authority is
	 * checked against Host once the fields are known */
	size_t s = 0;
	if (n >= 7 && IEQ(slice(p, 7), "http://"))
		s = 7;
	else if (n >= 8 && IEQ(slice(p, 8), "https://"))
		s = 8;
	else
		return fail(e, 400, "request target is neither origin-form nor absolute-form");
	size_t a = s;
	while (a < n && p[a] != '/' && p[a] != '?')
		a++;
	if (a == s)
		return fail(e, 400, "absolute-form target without a host");
	if (memchr(p + s, '@', a - s))
		return fail(e, 400, "userinfo in target"); /* RFC 9110 4.2.4 */
	if (!valid_host(slice(p + s, a - s)))
		return fail(e, 400, "invalid host in target");
	if (!check_path_query(p + a, n - a, &h->path, &h->query, e))
		return false;
	if (h->path.len == 0)
		h->path = (struct http_str){"/", 1};
	return true;
}

/* method SP request-target SP HTTP-version, single spaces (RFC 9112 3). */
static bool parse_request_line(const uint8_t *p, size_t n, struct http_head *h, struct parse_err *e)
{
	const uint8_t *sp1, *sp2;
	size_t m;
	int v;

	for (m = 0; m < n && is_tchar(p[m]); m++)
		;
	if (m == 0 || m == n || p[m] != ' ')
		return fail(e, 400, "invalid method");
	if (m > HTTP_MAX_METHOD)
		return fail(e, 501, "method too long");
	sp1 = p + m;
	sp2 = memchr(sp1 + 1, ' ', n - m - 1);
	if (!sp2) /* "GET /": HTTP/0.9 is not spoken here */
		return fail(e, 400, "request line without a version");
	h->method = slice(p, m);
	if ((size_t)(sp2 - sp1 - 1) == 1 && sp1[1] == '*' && EQ(h->method, "PRI"))
		return fail(e, 505, "HTTP/2 connection preface"); /* RFC 9113 3.4 */
	if (sp2 == sp1 + 1)
		return fail(e, 400, "empty request target");
	if (memchr(sp2 + 1, ' ', n - (size_t)(sp2 + 1 - p)))
		return fail(e, 400, "extra space in request line");
	v = parse_version(sp2 + 1, n - (size_t)(sp2 + 1 - p), &h->version_minor);
	if (v < 0)
		return fail(e, 400, "invalid HTTP version");
	if (v == 0)
		return fail(e, 505, "HTTP version not supported");
	if (IEQ(h->method, "CONNECT"))
		return fail(e, 501, "CONNECT is not supported");
	h->target = slice(sp1 + 1, (size_t)(sp2 - sp1 - 1));
	return parse_target(sp1 + 1, h->target.len, h, e);
}

/* The start line is refused as soon as it is complete, before the rest of
 * the head arrives. */
static bool request_line_end(const uint8_t *p, size_t n, size_t *line)
{
	const uint8_t *lf = memchr(p, '\n', n);
	if (!lf)
		return false;
	*line = (size_t)(lf - p) - 1; /* precheck_lines saw the CR */
	return true;
}

/* Leading empty lines (RFC 9112 2.2). *skip is where the start line begins.
 * False with e set on error, false with e->status 0 when more is needed. */
static bool skip_empty_lines(const uint8_t *buf, size_t len, size_t *skip, struct parse_err *e)
{
	size_t i = 0, count = 0;

	while (i < len && buf[i] == '\r') {
		if (i + 1 == len)
			return fail(e, 0, NULL);
		if (buf[i + 1] != '\n')
			return fail(e, 400, "bare CR in head");
		if (++count > HTTP_MAX_LEADING_CRLF)
			return fail(e, 400, "too many empty lines before the request");
		i += 2;
	}
	if (i < len && buf[i] == '\n')
		return fail(e, 400, "bare LF in head");
	*skip = i;
	return true;
}

/* Where the head ends (after CRLFCRLF), searching only within max_head. */
static size_t find_head_end(const uint8_t *buf, size_t from, size_t len, size_t max_head)
{
	size_t lim = len < max_head ? len : max_head;
	const uint8_t *q;

	if (lim <= from)
		return 0;
	q = memmem(buf + from, lim - from, "\r\n\r\n", 4);
	return q ? (size_t)(q - buf) + 4 : 0;
}

static enum http_parse_status need_more_or_error(const uint8_t *buf, size_t from, size_t len,
                                                 size_t max_head, bool request, struct parse_err *e)
{
	size_t lim = len < max_head ? len : max_head, line;

	if (lim > from && !precheck_lines(buf + from, lim - from, e))
		return HTTP_PARSE_ERROR;
	if (request && lim > from) {
		struct http_head tmp;
		if (request_line_end(buf + from, lim - from, &line)) {
			/* fields[] is not touched by the request line */
			memset(&tmp, 0, offsetof(struct http_head, fields));
			if (!parse_request_line(buf + from, line, &tmp, e))
				return HTTP_PARSE_ERROR;
		} else if (lim - from > HTTP_MAX_TARGET + HTTP_MAX_METHOD + 16) {
			fail(e, 414, "request target too long");
			return HTTP_PARSE_ERROR;
		}
	}
	if (len >= max_head) {
		fail(e, 431, "request head too large");
		return HTTP_PARSE_ERROR;
	}
	return HTTP_PARSE_NEED_MORE;
}

static void reset_head(struct http_head *h)
{
	memset(h, 0, offsetof(struct http_head, fields));
	h->n_fields = 0;
	h->head_len = 0;
	h->framing = HTTP_BODY_NONE;
	h->content_length = 0;
	h->keep_alive = h->upgrade_websocket = h->expect_continue = h->event_stream = false;
}

enum http_parse_status http_parse_request(const uint8_t *buf, size_t len, size_t max_head,
                                          struct http_head *h, unsigned *status, const char **why)
{
	struct parse_err e = {0, NULL};
	struct field_summary s;
	size_t skip, end, line = 0;
	enum http_parse_status r;

	reset_head(h);
	*status = 0;
	*why = NULL;
	if (!skip_empty_lines(buf, len, &skip, &e)) {
		if (e.status == 0) {
			if (len < max_head)
				return HTTP_PARSE_NEED_MORE;
			fail(&e, 431, "request head too large");
		}
		goto error;
	}
	end = find_head_end(buf, skip, len, max_head);
	if (end == 0) {
		r = need_more_or_error(buf, skip, len, max_head, true, &e);
		if (r == HTTP_PARSE_NEED_MORE)
			return r;
		goto error;
	}
	if (!precheck_lines(buf + skip, end - skip, &e))
		goto error;
	request_line_end(buf + skip, end - skip, &line);
	if (!parse_request_line(buf + skip, line, h, &e))
		goto error;
	if (!parse_fields(buf, skip + line + 2, end, HTTP_REQUEST_MAX_FIELDS, h, &e, 400))
		goto error;
	h->head_len = end;
	if (!summarise(h, &s, &e, 400))
		goto error;

	/* Host, RFC 9112 3.2 */
	if (!s.host && h->version_minor == 1) {
		fail(&e, 400, "HTTP/1.1 request without Host");
		goto error;
	}
	if (s.host && !valid_host(s.host->value)) {
		fail(&e, 400, "invalid Host");
		goto error;
	}
	if (h->target.p[0] != '/' && h->target.p[0] != '*') {
		/* absolute-form: its authority and Host must name the same */
		const char *a = memchr(h->target.p, '/', h->target.len) + 2;
		size_t alen = 0;
		while (a + alen < h->target.p + h->target.len && a[alen] != '/' && a[alen] != '?')
			alen++;
		if (s.host &&
		    !(s.host->value.len == alen && strncasecmp(s.host->value.p, a, alen) == 0)) {
			fail(&e, 400, "absolute-form target and Host differ");
			goto error;
		}
	}

	/* framing, RFC 9112 6.1 and 6.3 */
	if (s.te) {
		if (h->version_minor == 0) {
			fail(&e, 400, "Transfer-Encoding in an HTTP/1.0 request");
			goto error;
		}
		if (s.cl) {
			fail(&e, 400, "both Content-Length and Transfer-Encoding");
			goto error;
		}
		if (!check_codings(s.te->value, &e, 400))
			goto error;
		h->framing = HTTP_BODY_CHUNKED;
	} else if (s.cl) {
		if (!parse_length(s.cl->value, &h->content_length)) {
			fail(&e, 400, "invalid Content-Length");
			goto error;
		}
		h->framing = h->content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
	}

	h->keep_alive =
	        h->version_minor == 1 ? !s.conn_close : (s.conn_keep_alive && !s.conn_close);
	/* RFC 6455 4.1: GET, HTTP/1.1, "Upgrade: websocket" exactly (a list
	 * could let the backend pick another protocol, e.g. h2c) */
	h->upgrade_websocket = s.conn_upgrade && s.upgrade && IEQ(s.upgrade->value, "websocket") &&
	                       EQ(h->method, "GET") && h->version_minor == 1 &&
	                       h->framing == HTTP_BODY_NONE;
	/* RFC 9110 10.1.1: ignored in HTTP/1.0 and without content */
	h->expect_continue = s.expect && IEQ(s.expect->value, "100-continue") &&
	                     h->version_minor == 1 && h->framing != HTTP_BODY_NONE;
	return HTTP_PARSE_OK;

error:
	*status = e.status;
	*why = e.why;
	return HTTP_PARSE_ERROR;
}

/* ---- responses ---- */

/* HTTP-version SP status-code [ SP reason-phrase ], RFC 9112 4 (the SP
 * before an empty reason is optional, as every client treats it). */
static bool parse_status_line(const uint8_t *p, size_t n, struct http_head *h, struct parse_err *e)
{
	size_t vlen;

	if (n < 12 || p[8] != ' ')
		return fail(e, 502, "invalid status line");
	if (parse_version(p, 8, &h->version_minor) != 1)
		return fail(e, 502, "unsupported HTTP version in response");
	for (size_t i = 9; i < 12; i++) {
		if (p[i] < '0' || p[i] > '9')
			return fail(e, 502, "invalid status code");
	}
	h->status = (unsigned)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
	if (h->status < 100 || h->status > 599)
		return fail(e, 502, "invalid status code");
	if (n == 12) {
		h->reason = slice(p + 12, 0);
		return true;
	}
	if (p[12] != ' ')
		return fail(e, 502, "invalid status line");
	/* reason-phrase = *( HTAB / SP / VCHAR / obs-text ); scan_value needs
	 * the CRLF that follows the line, which the caller guarantees */
	if (!scan_value(p + 13, n - 13 + 2, &vlen, e, 502) || vlen != n - 13)
		return fail(e, 502, "invalid reason phrase");
	h->reason = slice(p + 13, vlen);
	return true;
}

enum http_parse_status http_parse_response(const uint8_t *buf, size_t len, size_t max_head,
                                           struct http_str request_method, struct http_head *h,
                                           const char **why)
{
	struct parse_err e = {0, NULL};
	struct field_summary s;
	size_t end, line = 0;
	bool no_body;

	reset_head(h);
	h->response = true;
	*why = NULL;
	end = find_head_end(buf, 0, len, max_head);
	if (end == 0) {
		if (need_more_or_error(buf, 0, len, max_head, false, &e) == HTTP_PARSE_NEED_MORE)
			return HTTP_PARSE_NEED_MORE;
		goto error;
	}
	if (!precheck_lines(buf, end, &e))
		goto error;
	request_line_end(buf, end, &line);
	if (!parse_status_line(buf, line, h, &e))
		goto error;
	if (!parse_fields(buf, line + 2, end, HTTP_MAX_HEADERS, h, &e, 502))
		goto error;
	h->head_len = end;
	if (!summarise(h, &s, &e, 502))
		goto error;

	/* RFC 9112 6.3: 1xx, 204, 304 and any answer to HEAD have no body
	 * whatever they say; the fields must still be well-formed. */
	if (s.te) {
		if (h->version_minor == 0) {
			fail(&e, 502, "Transfer-Encoding in an HTTP/1.0 response");
			goto error;
		}
		if (s.cl) {
			fail(&e, 502, "both Content-Length and Transfer-Encoding");
			goto error;
		}
		if (!check_codings(s.te->value, &e, 502))
			goto error;
	} else if (s.cl && !parse_length(s.cl->value, &h->content_length)) {
		fail(&e, 502, "invalid Content-Length");
		goto error;
	}
	if (EQ(request_method, "CONNECT") && h->status / 100 == 2) {
		fail(&e, 502, "2xx to CONNECT");
		goto error;
	}
	no_body = h->status / 100 == 1 || h->status == 204 || h->status == 304 ||
	          EQ(request_method, "HEAD");
	if (no_body)
		h->framing = HTTP_BODY_NONE;
	else if (s.te)
		h->framing = HTTP_BODY_CHUNKED;
	else if (s.cl)
		h->framing = h->content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
	else
		h->framing = HTTP_BODY_UNTIL_CLOSE;
	if (h->framing != HTTP_BODY_LENGTH)
		h->content_length = 0;

	h->keep_alive =
	        (h->version_minor == 1 ? !s.conn_close : (s.conn_keep_alive && !s.conn_close)) &&
	        h->framing != HTTP_BODY_UNTIL_CLOSE && h->status != 101;
	h->upgrade_websocket = h->status == 101 && s.conn_upgrade && s.upgrade &&
	                       IEQ(s.upgrade->value, "websocket");
	h->event_stream = s.ctype && is_event_stream(s.ctype->value);
	return HTTP_PARSE_OK;

error:
	*why = e.why;
	return HTTP_PARSE_ERROR;
}

/* ---- the chunked coding, RFC 9112 7.1 ---- */

enum chunk_state {
	CH_SIZE_FIRST,   /* first hex digit of a chunk-size */
	CH_SIZE,         /* more hex digits, ';', BWS or CR */
	CH_BWS,          /* BWS after the size or a value: more, or ';' */
	CH_EXT_NAME0,    /* after ';': BWS or the first tchar of a name */
	CH_EXT_NAME,     /* tchars, '=', ';', BWS or CR */
	CH_EXT_NAME_BWS, /* BWS after a name: more, '=' or ';' */
	CH_EXT_VAL0,     /* after '=': BWS, a tchar or '"' */
	CH_EXT_TOKEN,    /* tchars, ';', BWS or CR */
	CH_EXT_QUOTED,   /* inside a quoted-string */
	CH_EXT_QESC,     /* after a backslash in a quoted-string */
	CH_EXT_QEND,     /* after the closing quote: ';', BWS or CR */
	CH_SIZE_LF,      /* CR seen at the end of the chunk line */
	CH_DATA,         /* remaining bytes of chunk-data */
	CH_DATA_CR,      /* the CRLF after chunk-data */
	CH_DATA_LF,
	CH_TRAILER0,  /* start of a trailer line, or the final CRLF */
	CH_TNAME,     /* trailer field name */
	CH_TVALUE,    /* trailer field value */
	CH_TVALUE_LF, /* CR seen after a trailer value */
	CH_FINAL_LF,  /* CR seen on the empty line */
	CH_DONE,
	CH_ERROR,
};

/*
 * Trailer fields that must not be sent (RFC 9110 6.5.1): framing, routing,
 * connection control, authentication, content handling. A recipient that
 * merged one into the head would see another message, so the body is
 * refused. Matched as the name streams past: c->trailer_match keeps one
 * bit per name that still agrees with the bytes seen.
 */
static const char *const forbidden_trailers[] = {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "authorization",
        "proxy-authorization",
        "content-encoding",
        "content-type",
        "content-range",
};
#define N_FORBIDDEN (sizeof(forbidden_trailers) / sizeof(forbidden_trailers[0]))

void http_chunked_init(struct http_chunked *c, size_t max_trailer)
{
	memset(c, 0, sizeof(*c));
	c->state = CH_SIZE_FIRST;
	c->max_trailer = max_trailer;
}

uint64_t http_chunked_data_left(const struct http_chunked *c)
{
	return c->state == CH_DATA ? c->remaining : 0;
}

void http_chunked_skip(struct http_chunked *c, uint64_t n)
{
	if (c->state != CH_DATA)
		return;
	if (n > c->remaining)
		n = c->remaining; /* a caller bug: never run past the chunk */
	c->remaining -= n;
	if (c->remaining == 0)
		c->state = CH_DATA_CR;
}

static int chunk_fail(const char **why, const char *msg)
{
	*why = msg;
	return CH_ERROR;
}

/* The next state after byte b of a chunk line (size, extensions: RFC 9112
 * 7.1.1, chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )). */
static int chunk_line_byte(struct http_chunked *c, uint8_t b, const char **why)
{
	bool ws = b == ' ' || b == '\t';

	if (b != '\r' && ++c->line > HTTP_CHUNK_LINE_MAX)
		return chunk_fail(why, "chunk line too long");
	switch (c->state) {
	case CH_SIZE_FIRST:
		if (!is_hex(b))
			return chunk_fail(why, "invalid chunk size");
		c->remaining = hex_val(b);
		return CH_SIZE;
	case CH_SIZE:
		if (is_hex(b)) {
			if (c->line > 16) /* 16 hex digits fill 64 bits */
				return chunk_fail(why, "chunk size too large");
			c->remaining = c->remaining << 4 | hex_val(b);
			return CH_SIZE;
		}
		if (b == ';')
			return CH_EXT_NAME0;
		if (ws)
			return CH_BWS;
		if (b == '\r')
			return CH_SIZE_LF;
		return chunk_fail(why, "invalid chunk size");
	case CH_BWS:
		if (ws)
			return CH_BWS;
		if (b == ';')
			return CH_EXT_NAME0;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_NAME0:
		if (ws)
			return CH_EXT_NAME0;
		if (is_tchar(b))
			return CH_EXT_NAME;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_NAME:
		if (is_tchar(b))
			return CH_EXT_NAME;
		if (b == '=')
			return CH_EXT_VAL0;
		if (b == ';')
			return CH_EXT_NAME0;
		if (ws)
			return CH_EXT_NAME_BWS;
		if (b == '\r')
			return CH_SIZE_LF;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_NAME_BWS:
		if (ws)
			return CH_EXT_NAME_BWS;
		if (b == '=')
			return CH_EXT_VAL0;
		if (b == ';')
			return CH_EXT_NAME0;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_VAL0:
		if (ws)
			return CH_EXT_VAL0;
		if (b == '"')
			return CH_EXT_QUOTED;
		if (is_tchar(b))
			return CH_EXT_TOKEN;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_TOKEN:
		if (is_tchar(b))
			return CH_EXT_TOKEN;
		if (b == ';')
			return CH_EXT_NAME0;
		if (ws)
			return CH_BWS;
		if (b == '\r')
			return CH_SIZE_LF;
		return chunk_fail(why, "invalid chunk extension");
	case CH_EXT_QUOTED:
		/* qdtext, RFC 9110 5.6.4; obs-text is refused in chunk lines */
		if (b == '"')
			return CH_EXT_QEND;
		if (b == '\\')
			return CH_EXT_QESC;
		if (b == '\t' || (b >= 0x20 && b < 0x7f))
			return CH_EXT_QUOTED;
		return chunk_fail(why, "invalid quoted string in chunk extension");
	case CH_EXT_QESC:
		if (b == '\t' || (b >= 0x20 && b < 0x7f))
			return CH_EXT_QUOTED;
		return chunk_fail(why, "invalid quoted string in chunk extension");
	case CH_EXT_QEND:
		if (b == ';')
			return CH_EXT_NAME0;
		if (ws)
			return CH_BWS;
		if (b == '\r')
			return CH_SIZE_LF;
		return chunk_fail(why, "invalid chunk extension");
	default:
		return chunk_fail(why, "invalid chunk line");
	}
}

/* The next state after byte b of the trailer section. */
static int trailer_byte(struct http_chunked *c, uint8_t b, const char **why)
{
	switch (c->state) {
	case CH_TRAILER0:
		if (b == '\r')
			return CH_FINAL_LF;
		if (!is_tchar(b))
			return chunk_fail(why, b == ' ' || b == '\t' ? "obs-fold in trailer"
			                                             : "invalid trailer field");
		c->trailer_match = 0;
		for (size_t j = 0; j < N_FORBIDDEN; j++) {
			if ((uint8_t)forbidden_trailers[j][0] == lower(b))
				c->trailer_match |= 1u << j;
		}
		c->line = 1;
		return CH_TNAME;
	case CH_TNAME:
		if (b == ':') {
			for (size_t j = 0; j < N_FORBIDDEN; j++) {
				if ((c->trailer_match & (1u << j)) &&
				    forbidden_trailers[j][c->line] == '\0')
					return chunk_fail(why, "forbidden field in trailer");
			}
			return CH_TVALUE;
		}
		if (!is_tchar(b))
			return chunk_fail(why, b == ' ' || b == '\t'
			                               ? "whitespace between field name and colon"
			                               : "invalid trailer field");
		for (size_t j = 0; j < N_FORBIDDEN; j++) {
			if ((c->trailer_match & (1u << j)) &&
			    (strlen(forbidden_trailers[j]) <= c->line ||
			     (uint8_t)forbidden_trailers[j][c->line] != lower(b)))
				c->trailer_match &= ~(1u << j);
		}
		c->line++;
		return CH_TNAME;
	case CH_TVALUE:
		if (b == '\r')
			return CH_TVALUE_LF;
		if (b == '\t' || (b >= 0x20 && b < 0x7f))
			return CH_TVALUE;
		return chunk_fail(why, b == '\n' ? "bare LF in trailer"
		                                 : "invalid character in trailer value");
	case CH_TVALUE_LF:
		if (b == '\n')
			return CH_TRAILER0;
		return chunk_fail(why, "bare CR in trailer");
	case CH_FINAL_LF:
		if (b == '\n')
			return CH_DONE;
		return chunk_fail(why, "bare CR after trailer section");
	default:
		return chunk_fail(why, "invalid trailer");
	}
}

enum http_chunk_status http_chunked_feed(struct http_chunked *c, const uint8_t *buf, size_t len,
                                         size_t *used, const char **why)
{
	size_t i = 0;

	*why = NULL;
	if (c->state == CH_DONE) {
		*used = 0;
		return HTTP_CHUNK_DONE;
	}
	if (c->state == CH_ERROR) {
		*used = 0;
		*why = "chunked body already failed";
		return HTTP_CHUNK_ERROR;
	}
	while (i < len) {
		uint8_t b = buf[i];
		int next;

		switch (c->state) {
		case CH_DATA: {
			uint64_t take = len - i < c->remaining ? len - i : c->remaining;
			i += (size_t)take;
			c->remaining -= take;
			if (c->remaining == 0)
				c->state = CH_DATA_CR;
			continue;
		}
		case CH_DATA_CR:
			next = b == '\r' ? CH_DATA_LF
			                 : chunk_fail(why, "chunk data not followed by CRLF");
			break;
		case CH_DATA_LF:
			next = b == '\n' ? CH_SIZE_FIRST
			                 : chunk_fail(why, "chunk data not followed by CRLF");
			c->line = 0;
			break;
		case CH_SIZE_LF:
			if (b != '\n') {
				next = chunk_fail(why, "bare CR in chunk line");
				break;
			}
			c->line = 0;
			next = c->remaining ? CH_DATA : CH_TRAILER0;
			break;
		case CH_TRAILER0:
		case CH_TNAME:
		case CH_TVALUE:
		case CH_TVALUE_LF:
		case CH_FINAL_LF:
			if (!(c->state == CH_TRAILER0 && b == '\r') && c->state != CH_FINAL_LF &&
			    ++c->trailer > c->max_trailer) {
				next = chunk_fail(why, "trailer section too large");
				break;
			}
			next = trailer_byte(c, b, why);
			break;
		default:
			next = chunk_line_byte(c, b, why);
			break;
		}
		c->state = next;
		if (next == CH_ERROR) {
			*used = i;
			return HTTP_CHUNK_ERROR;
		}
		i++;
		if (next == CH_DONE) {
			*used = i;
			return HTTP_CHUNK_DONE;
		}
	}
	*used = len;
	return HTTP_CHUNK_MORE;
}

/* ---- the heads we send ---- */

struct out {
	char *p;
	size_t len, cap;
	bool overflow;
};

static void put(struct out *o, const void *data, size_t n)
{
	if (o->overflow || o->cap - o->len < n) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, data, n);
	o->len += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_field(struct out *o, struct http_str name, struct http_str value)
{
	put(o, name.p, name.len);
	put(o, ": ", 2);
	put(o, value.p, value.len);
	put(o, "\r\n", 2);
}

static bool str_ieq_str(struct http_str a, struct http_str b)
{
	if (a.len != b.len)
		return false;
	for (size_t i = 0; i < a.len; i++) {
		if (lower((uint8_t)a.p[i]) != lower((uint8_t)b.p[i]))
			return false;
	}
	return true;
}

/* The connection options of h (RFC 9110 7.6.1: the fields they name are
 * for this hop only), gathered once per head built. */
#define CONN_OPTS_MAX 64
struct conn_opts {
	struct http_str opt[CONN_OPTS_MAX];
	size_t n;
	bool overflow; /* more than CONN_OPTS_MAX: look them up each time */
};

static void conn_opts_init(const struct http_head *h, struct conn_opts *o)
{
	o->n = 0;
	o->overflow = false;
	for (size_t i = 0; i < h->n_fields; i++) {
		struct http_str rest, opt;

		if (!IEQ(h->fields[i].name, "connection"))
			continue;
		rest = h->fields[i].value;
		while (list_next(&rest, &opt)) {
			if (o->n == CONN_OPTS_MAX)
				o->overflow = true;
			else
				o->opt[o->n++] = opt;
		}
	}
}

static bool named_by_connection(const struct http_head *h, const struct conn_opts *o,
                                struct http_str name)
{
	if (!o->overflow) {
		for (size_t i = 0; i < o->n; i++) {
			if (str_ieq_str(o->opt[i], name))
				return true;
		}
		return false;
	}
	for (size_t i = 0; i < h->n_fields; i++) {
		struct http_str rest, opt;

		if (!IEQ(h->fields[i].name, "connection"))
			continue;
		rest = h->fields[i].value;
		while (list_next(&rest, &opt)) {
			if (str_ieq_str(opt, name))
				return true;
		}
	}
	return false;
}

/* Removed by every hop (RFC 9110 7.6.1), whatever Connection says. */
static bool hop_by_hop(struct http_str n)
{
	return IEQ(n, "connection") || IEQ(n, "keep-alive") || IEQ(n, "proxy-connection") ||
	       IEQ(n, "te") || IEQ(n, "trailer") || IEQ(n, "upgrade");
}

/* Forwarded, X-Forwarded-* and X-Real-IP: what a client may claim about
 * itself and only a trusted balancer may pass on. */
static bool is_forwarding_field(struct http_str name)
{
	static const char xf[] = "x-forwarded-";

	if (IEQ(name, "forwarded") || IEQ(name, "x-real-ip"))
		return true;
	return name.len > sizeof(xf) - 1 && IEQ(((struct http_str){name.p, sizeof(xf) - 1}), xf);
}

/* An address literal as inet_ntop writes it, nothing a header could be
 * smuggled in. */
static bool plain_ip(const char *ip)
{
	size_t n = ip ? strlen(ip) : 0;

	if (n == 0 || n > 45)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_hex((uint8_t)ip[i]) && ip[i] != ':' && ip[i] != '.')
			return false;
	}
	return true;
}

/* The client's own values of a forwarding field we extend, joined. */
static void put_trusted_chain(struct out *o, const struct http_head *h, const struct conn_opts *co,
                              const char *name)
{
	for (size_t i = 0; i < h->n_fields; i++) {
		const struct http_field *f = &h->fields[i];
		if (!str_ieq(f->name, name) || f->value.len == 0 ||
		    named_by_connection(h, co, f->name))
			continue;
		put(o, f->value.p, f->value.len);
		put(o, ", ", 2);
	}
}

size_t http_request_head_build(const struct http_head *h, const struct http_forward *f, char *out,
                               size_t outlen)
{
	struct out o = {out, 0, outlen, false};
	char version[] = "HTTP/1.1";
	struct conn_opts co;

	if (f->add_forwarded && !plain_ip(f->client_ip))
		return 0;
	conn_opts_init(h, &co);
	version[7] = (char)('0' + h->version_minor);
	put(&o, h->method.p, h->method.len);
	put(&o, " ", 1);
	put(&o, h->target.p, h->target.len);
	put(&o, " ", 1);
	put_str(&o, version);
	put(&o, "\r\n", 2);
	for (size_t i = 0; i < h->n_fields; i++) {
		struct http_str name = h->fields[i].name;

		if (hop_by_hop(name) || IEQ(name, "proxy-authorization") ||
		    named_by_connection(h, &co, name))
			continue;
		if (f->drop_expect && IEQ(name, "expect"))
			continue;
		if (is_forwarding_field(name) && !f->trust_client_forwarded)
			continue;
		if (f->add_forwarded && (IEQ(name, "forwarded") || IEQ(name, "x-forwarded-for")))
			continue; /* extended below, as one field each */
		put_field(&o, name, h->fields[i].value);
	}
	if (f->add_forwarded) {
		bool v6 = strchr(f->client_ip, ':') != NULL;

		/* RFC 7239 4 and 6: for=192.0.2.7, for="[2001:db8::7]" */
		put_str(&o, "Forwarded: ");
		if (f->trust_client_forwarded)
			put_trusted_chain(&o, h, &co, "forwarded");
		put_str(&o, v6 ? "for=\"[" : "for=");
		put_str(&o, f->client_ip);
		put_str(&o, v6 ? "]\"" : "");
		put_str(&o, f->client_tls ? ";proto=https\r\n" : ";proto=http\r\n");
		put_str(&o, "X-Forwarded-For: ");
		if (f->trust_client_forwarded)
			put_trusted_chain(&o, h, &co, "x-forwarded-for");
		put_str(&o, f->client_ip);
		put(&o, "\r\n", 2);
	}
	if (h->upgrade_websocket) {
		put_field(&o, (struct http_str){"Upgrade", 7}, http_field_get(h, "upgrade")->value);
		put_str(&o, "Connection: Upgrade\r\n");
	} else {
		put_str(&o, "Connection: keep-alive\r\n");
	}
	put(&o, "\r\n", 2);
	return o.overflow ? 0 : o.len;
}

size_t http_response_head_build(const struct http_head *h, bool keep_alive, char *out,
                                size_t outlen)
{
	struct out o = {out, 0, outlen, false};
	char status[16];
	struct conn_opts co;

	conn_opts_init(h, &co);

	/* our own version (RFC 9110 6.2); the status as the backend said */
	snprintf(status, sizeof(status), "HTTP/1.1 %03u ", h->status % 1000);
	put_str(&o, status);
	put(&o, h->reason.p, h->reason.len);
	put(&o, "\r\n", 2);
	for (size_t i = 0; i < h->n_fields; i++) {
		struct http_str name = h->fields[i].name;
		bool handshake =
		        h->status == 101 && (IEQ(name, "connection") || IEQ(name, "upgrade"));

		if (!handshake && (hop_by_hop(name) || IEQ(name, "proxy-authenticate") ||
		                   named_by_connection(h, &co, name)))
			continue;
		put_field(&o, name, h->fields[i].value);
	}
	/* interim answers (100, 103) say nothing about the connection */
	if (h->status >= 200)
		put_str(&o, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
	put(&o, "\r\n", 2);
	return o.overflow ? 0 : o.len;
}
