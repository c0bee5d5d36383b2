/*
 * [[http.route]]: which destination serves an HTTP request (http_route.h).
 *
 * Globs are our own, compiled to a short token list and run as an NFA (a
 * set of live positions advanced one path byte at a time), so a rule like
 * "/" "*a*a*a*a*b" costs path length x rule length, never backtracking.
 * The syntax is deliberately small: '*', '**', '?' and literal bytes.
 * Character classes and {a,b} alternatives, which the Stalwart proxy's
 * globset also knows, are refused at load rather than matched literally:
 * a rule that silently never matches is worse than an error.
 *
 * Semantics against the Stalwart proxy (globset with default options):
 *   - '*' and '?' stop at '/' here (globset lets them cross it): "/a/" "*"
 *     is one level, "/a/" "**" any depth;
 *   - "/a/" "**" also matches "/a" (globset: only "/a/..."), so a prefix
 *     rule covers its own root; "/a/" "**" "/b" also matches "/a/b" (as
 *     there: '**' between two '/' is zero or more segments);
 *   - the trailing-slash retry and first-match-wins are the same.
 *
 * Extraction never fails a request: an identifier that cannot be read
 * (bad base64, a JWT without a usable claim, a duplicated parameter with
 * two values, a control character) routes as "no identifier", i.e. to
 * the fallback, exactly like an absent one.
 */
#include "http_route.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/crypto.h>
#include <pcre2.h>

#include "config.h"
#include "sasl.h"

/* ---- globs ---- */

#define HTTP_GLOB_MAX 256

enum glob_op {
	G_LIT,   /* one byte, arg */
	G_QMARK, /* one byte except '/' */
	G_STAR,  /* any run without '/' */
	G_DSTAR, /* any run */
	G_SKIP,  /* nothing; may also jump over the next arg tokens */
};

struct glob_tok {
	uint8_t op, arg;
};

/* Tokens of glob into t (at least glob length entries). 0 and *why on a
 * glob we refuse. */
static size_t glob_compile(const char *g, size_t n, struct glob_tok *t, const char **why)
{
	size_t m = 0;

	if (n == 0) {
		*why = "empty glob";
		return 0;
	}
	if (n > HTTP_GLOB_MAX) {
		*why = "glob longer than 256 characters";
		return 0;
	}
	if (g[0] != '/' && g[0] != '*') {
		*why = "a path glob starts with '/' (or '*')";
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)g[i];

		if (c == '/' && i + 3 == n && g[i + 1] == '*' && g[i + 2] == '*') {
			/* a final '/' '**': nothing more, or '/' and anything */
			t[m++] = (struct glob_tok){G_SKIP, 2};
			t[m++] = (struct glob_tok){G_LIT, '/'};
			t[m++] = (struct glob_tok){G_DSTAR, 0};
			i += 2;
		} else if (c == '/' && i + 3 < n && g[i + 1] == '*' && g[i + 2] == '*' &&
		           g[i + 3] == '/') {
			/* '/' '**' '/': one '/', or '/' anything '/' */
			t[m++] = (struct glob_tok){G_LIT, '/'};
			t[m++] = (struct glob_tok){G_SKIP, 2};
			t[m++] = (struct glob_tok){G_DSTAR, 0};
			t[m++] = (struct glob_tok){G_LIT, '/'};
			i += 3;
		} else if (c == '*') {
			if (i + 1 < n && g[i + 1] == '*') {
				if (i + 2 < n && g[i + 2] == '*') {
					*why = "three or more '*' in a row";
					return 0;
				}
				t[m++] = (struct glob_tok){G_DSTAR, 0};
				i++;
			} else {
				t[m++] = (struct glob_tok){G_STAR, 0};
			}
		} else if (c == '?') {
			t[m++] = (struct glob_tok){G_QMARK, 0};
		} else if (c == '[' || c == ']' || c == '{' || c == '}' || c == '\\') {
			*why = "character classes, {a,b} and escapes are not supported "
			       "(write one rule per alternative)";
			return 0;
		} else if (c <= 0x20 || c >= 0x7f) {
			*why = "space, control or non-ASCII character in glob";
			return 0;
		} else {
			t[m++] = (struct glob_tok){G_LIT, c};
		}
	}
	return m;
}

/* Add the positions reachable from live ones without consuming a byte;
 * every such edge points forward, so one ascending pass suffices. */
static void glob_closure(const struct glob_tok *t, size_t m, uint8_t *live)
{
	for (size_t p = 0; p < m; p++) {
		if (!live[p])
			continue;
		if (t[p].op == G_STAR || t[p].op == G_DSTAR || t[p].op == G_SKIP)
			live[p + 1] = 1;
		if (t[p].op == G_SKIP && p + 1 + t[p].arg <= m)
			live[p + 1 + t[p].arg] = 1;
	}
}

static bool glob_run(const struct glob_tok *t, size_t m, const char *path, size_t len)
{
	uint8_t a[HTTP_GLOB_MAX + 1], b[HTTP_GLOB_MAX + 1];
	uint8_t *cur = a, *next = b;
	size_t lit = 0;

	/* the literal bytes a rule starts with ("/admin" of "/admin/" "**")
	 * must start the path: most rules are refused here, without the NFA */
	while (lit < m && t[lit].op == G_LIT) {
		if (lit >= len || (uint8_t)path[lit] != t[lit].arg)
			return false;
		lit++;
	}
	if (lit == m)
		return len == m;
	memset(cur, 0, m + 1);
	cur[0] = 1;
	glob_closure(t, m, cur);
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)path[i];
		bool any = false;

		memset(next, 0, m + 1);
		for (size_t p = 0; p < m; p++) {
			if (!cur[p])
				continue;
			switch (t[p].op) {
			case G_LIT:
				if (c == t[p].arg)
					next[p + 1] = any = 1;
				break;
			case G_QMARK:
				if (c != '/')
					next[p + 1] = any = 1;
				break;
			case G_STAR:
				if (c != '/')
					next[p] = any = 1;
				break;
			case G_DSTAR:
				next[p] = any = 1;
				break;
			default:
				break;
			}
		}
		if (!any)
			return false;
		glob_closure(t, m, next);
		uint8_t *tmp = cur;
		cur = next;
		next = tmp;
	}
	return cur[m] != 0;
}

bool http_glob_match(const char *glob, const char *path, size_t len)
{
	struct glob_tok t[HTTP_GLOB_MAX];
	const char *why;
	size_t m = glob ? glob_compile(glob, strlen(glob), t, &why) : 0;

	return m > 0 && glob_run(t, m, path, len);
}

/* ---- the compiled rules ---- */

enum extract_from {
	FROM_NONE,
	FROM_AUTHORIZATION,
	FROM_QUERY,
	FROM_HEADER,
	FROM_BODY,
};

struct http_rule {
	struct glob_tok tok[HTTP_GLOB_MAX];
	size_t ntok;
	int dest;     /* pinned destination, or -1 */
	int fallback; /* fallback destination, or -1 for the default */
	enum extract_from from;
	char *param, *header;
	pcre2_code *re;
};

struct http_router {
	struct http_rule *rules;
	size_t n;
	int default_dest;
	size_t body_cap;
	char *jwt_claim;
	pcre2_match_context *mctx;
};

/*
 * Bounds on one body match. Rules run on untrusted bodies, so a regex that
 * backtracks catastrophically ("(a+)+$") must give up, not spin: PCRE2
 * stops with an error past these and the request goes to the fallback.
 * A plain "key=([^&]+)" over a 16 MiB body stays far below them.
 */
#define REGEX_MATCH_LIMIT 1000000u
#define REGEX_DEPTH_LIMIT 10000u
#define REGEX_HEAP_KIB    (4u * 1024u)

struct build_errors {
	char *buf;
	size_t len, used;
	const char *file;
	bool any;
};

static void rule_error(struct build_errors *e, unsigned line, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void rule_error(struct build_errors *e, unsigned line, const char *key, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	e->any = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (e->used >= e->len)
		return;
	n = snprintf(e->buf + e->used, e->len - e->used, "%s:%u: http.route%s%s: %s\n", e->file,
	             line, *key ? "." : "", key, msg);
	if (n > 0)
		e->used += (size_t)n;
	if (e->used >= e->len)
		e->used = e->len;
}

static bool has_http(const struct config *cfg, int d)
{
	return d >= 0 && cfg->dests[d].endpoint[PROTO_HTTP].present;
}

static void compile_regex(struct http_rule *rule, const struct cfg_http_route *cr,
                          struct build_errors *e)
{
	int code;
	PCRE2_SIZE off;
	uint32_t groups = 0;

	/* UTF with invalid input allowed: a body is bytes, and a stray byte
	 * must neither match a '.' halfway into a character nor be an error */
	rule->re = pcre2_compile((PCRE2_SPTR)cr->extract_regex, PCRE2_ZERO_TERMINATED,
	                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_UCP |
	                                 PCRE2_NEVER_BACKSLASH_C,
	                         &code, &off, NULL);
	if (!rule->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(code, msg, sizeof(msg));
		rule_error(e, cr->line, "extract.regex", "%s at offset %zu", (const char *)msg,
		           (size_t)off);
		return;
	}
	pcre2_pattern_info(rule->re, PCRE2_INFO_CAPTURECOUNT, &groups);
	if (groups < 1)
		rule_error(e, cr->line, "extract.regex",
		           "needs a capture group: group 1 is the account");
}

static bool token_name(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("!#$%&'*+-.^_`|~", c)))
			return false;
	}
	return true;
}

/* One key of extract that only some `from` values use. */
static void extract_key(struct build_errors *e, const struct cfg_http_route *cr, const char *key,
                        const char *value, const char *wanted_from, bool wanted)
{
	if (wanted && !value)
		rule_error(e, cr->line, key, "missing: from = \"%s\" needs it", wanted_from);
	else if (!wanted && value)
		rule_error(e, cr->line, key, "only used with from = \"%s\"", wanted_from);
}

static void compile_rule(const struct config *cfg, struct http_rule *rule,
                         const struct cfg_http_route *cr, struct build_errors *e)
{
	static const char *const from_names[] = {"", "authorization", "query", "header", "body"};
	const char *why;

	rule->dest = rule->fallback = -1;
	if (!cr->match) {
		rule_error(e, cr->line, "match", "missing");
	} else if (!(rule->ntok = glob_compile(cr->match, strlen(cr->match), rule->tok, &why))) {
		rule_error(e, cr->line, "match", "\"%s\": %s", cr->match, why);
	}

	if (cr->destination) {
		rule->dest = config_dest_index(cfg, cr->destination);
		if (rule->dest < 0)
			rule_error(e, cr->line, "destination", "no [destination.%s] is declared",
			           cr->destination);
		else if (!has_http(cfg, rule->dest))
			rule_error(e, cr->line, "destination",
			           "[destination.%s] has no [destination.%s.protocol.http]",
			           cr->destination, cr->destination);
		if (cr->extract_from)
			rule_error(e, cr->line, "extract",
			           "a route with a destination extracts nothing: use one or the "
			           "other");
		if (cr->fallback)
			rule_error(
			        e, cr->line, "fallback",
			        "a route with a destination has no fallback: use one or the other");
		return;
	}
	if (!cr->extract_from) {
		rule_error(e, cr->line, "",
		           "needs destination (pin a backend) or extract (route by account)");
		return;
	}
	for (size_t i = 1; i < sizeof(from_names) / sizeof(from_names[0]); i++) {
		if (strcmp(cr->extract_from, from_names[i]) == 0)
			rule->from = (enum extract_from)i;
	}
	if (rule->from == FROM_NONE)
		rule_error(e, cr->line, "extract.from",
		           "\"%s\" is not one of authorization, query, header, body",
		           cr->extract_from);
	else {
		extract_key(e, cr, "extract.param", cr->extract_param, "query",
		            rule->from == FROM_QUERY);
		extract_key(e, cr, "extract.header", cr->extract_header, "header",
		            rule->from == FROM_HEADER);
		extract_key(e, cr, "extract.regex", cr->extract_regex, "body",
		            rule->from == FROM_BODY);
	}
	if (rule->from == FROM_QUERY && cr->extract_param) {
		if (!*cr->extract_param || strlen(cr->extract_param) > 255)
			rule_error(e, cr->line, "extract.param", "empty or longer than 255 bytes");
		rule->param = strdup(cr->extract_param);
	}
	if (rule->from == FROM_HEADER && cr->extract_header) {
		if (!token_name(cr->extract_header))
			rule_error(e, cr->line, "extract.header", "\"%s\" is not a field name",
			           cr->extract_header);
		rule->header = strdup(cr->extract_header);
	}
	if (rule->from == FROM_BODY && cr->extract_regex)
		compile_regex(rule, cr, e);

	if (cr->fallback && strcmp(cr->fallback, "default") != 0) {
		rule->fallback = config_dest_index(cfg, cr->fallback);
		if (rule->fallback < 0)
			rule_error(e, cr->line, "fallback",
			           "\"%s\" is neither \"default\" nor a declared destination",
			           cr->fallback);
		else if (!has_http(cfg, rule->fallback))
			rule_error(e, cr->line, "fallback",
			           "[destination.%s] has no [destination.%s.protocol.http]",
			           cr->fallback, cr->fallback);
	}
}

void http_router_free(struct http_router *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->rules[i].param);
		free(r->rules[i].header);
		pcre2_code_free(r->rules[i].re);
	}
	free(r->rules);
	free(r->jwt_claim);
	pcre2_match_context_free(r->mctx);
	free(r);
}

struct http_router *http_router_build(const struct config *cfg, char *err, size_t errlen)
{
	struct build_errors e = {err, errlen, 0, cfg->path ? cfg->path : "(config)", false};
	struct http_router *r = calloc(1, sizeof(*r));

	if (errlen)
		err[0] = '\0';
	if (!r ||
	    !(r->rules = calloc(cfg->n_http_routes ? cfg->n_http_routes : 1, sizeof(*r->rules)))) {
		snprintf(err, errlen, "%s: http.route: out of memory\n", e.file);
		http_router_free(r);
		return NULL;
	}
	r->n = cfg->n_http_routes;
	r->body_cap = cfg->http_body_extract_cap;
	r->default_dest =
	        cfg->default_destination ? config_dest_index(cfg, cfg->default_destination) : -1;
	r->jwt_claim = cfg->jwt_username_claim ? strdup(cfg->jwt_username_claim) : NULL;
	r->mctx = pcre2_match_context_create(NULL);
	if (!r->mctx) {
		snprintf(err, errlen, "%s: http.route: out of memory\n", e.file);
		http_router_free(r);
		return NULL;
	}
	pcre2_set_match_limit(r->mctx, REGEX_MATCH_LIMIT);
	pcre2_set_depth_limit(r->mctx, REGEX_DEPTH_LIMIT);
	pcre2_set_heap_limit(r->mctx, REGEX_HEAP_KIB);
	for (size_t i = 0; i < r->n; i++)
		compile_rule(cfg, &r->rules[i], &cfg->http_routes[i], &e);
	if (e.any) {
		http_router_free(r);
		return NULL;
	}
	return r;
}

/* ---- matching ---- */

static int first_match(const struct http_router *r, const char *p, size_t len)
{
	for (size_t i = 0; i < r->n; i++) {
		if (glob_run(r->rules[i].tok, r->rules[i].ntok, p, len))
			return (int)i;
	}
	return -1;
}

int http_route_match(const struct http_router *r, struct http_str path)
{
	size_t trimmed = path.len;
	int a, b;

	while (trimmed > 0 && path.p[trimmed - 1] == '/')
		trimmed--;
	a = first_match(r, path.p, path.len);
	if (trimmed == path.len || trimmed == 0)
		return a;
	/* "/api/" is also "/api"; the earlier rule of the two wins */
	b = first_match(r, path.p, trimmed);
	if (a < 0)
		return b;
	return b >= 0 && b < a ? b : a;
}

bool http_route_needs_body(const struct http_router *r, int idx)
{
	return idx >= 0 && (size_t)idx < r->n && r->rules[idx].from == FROM_BODY;
}

/* ---- extraction ---- */

bool http_form_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (outlen == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;
			if (i + 2 >= len)
				return false;
			hi = hex_digit((unsigned char)in[i + 1]);
			lo = hex_digit((unsigned char)in[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		}
		if (c == '\0' || o + 1 >= outlen)
			return false;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return true;
}

/* The Stalwart proxy's valid_routing_identifier, plus: not empty, fits an
 * account, well-formed UTF-8. */
static bool valid_identifier(const char *s, size_t n)
{
	if (n == 0 || n > ACCOUNT_MAX || !http_utf8_valid((const uint8_t *)s, n))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == ' ' || c == '"')
			return false;
	}
	return true;
}

static bool set_identifier(const char *s, size_t n, char *out, size_t outlen)
{
	if (!valid_identifier(s, n) || n + 1 > outlen)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

bool http_bearer_identifier(const char *token, size_t len, const char *jwt_claim, char *out,
                            size_t outlen)
{
	/* the footer of a Stalwart token is the account, base64url */
	if (len >= 4 && memcmp(token, "sw1.", 4) == 0) {
		const char *dot = memchr(token + 4, '.', len - 4);
		unsigned char buf[ACCOUNT_MAX + 4];
		size_t flen;
		long n;
		bool ok;

		if (!dot)
			return false;
		flen = len - (size_t)(dot + 1 - token);
		if (flen == 0 || flen > 4 * ((ACCOUNT_MAX + 2) / 3))
			return false;
		n = base64url_decode(dot + 1, flen, buf);
		ok = n > 0 && set_identifier((const char *)buf, (size_t)n, out, outlen);
		OPENSSL_cleanse(buf, sizeof(buf));
		return ok;
	}
	char *user = jwt_username(token, len, jwt_claim);
	bool ok = user && set_identifier(user, strlen(user), out, outlen);
	free(user);
	return ok;
}

/* "Scheme SP+ credentials": the credentials if the scheme matches. */
static bool auth_scheme(struct http_str v, const char *scheme, struct http_str *cred)
{
	size_t n = strlen(scheme), i;

	if (v.len <= n || strncasecmp(v.p, scheme, n) != 0 || v.p[n] != ' ')
		return false;
	for (i = n; i < v.len && v.p[i] == ' '; i++)
		;
	*cred = (struct http_str){v.p + i, v.len - i};
	return cred->len > 0;
}

/* The one field named name; none if absent, or present twice with
 * different values (two parsers could read different ones). */
static const struct http_field *single_field(const struct http_head *h, const char *name)
{
	const struct http_field *f = NULL;

	for (size_t i = 0; i < h->n_fields; i++) {
		const struct http_field *g = &h->fields[i];
		if (g->name.len != strlen(name) || strncasecmp(g->name.p, name, g->name.len) != 0)
			continue;
		if (f && (f->value.len != g->value.len ||
		          memcmp(f->value.p, g->value.p, g->value.len) != 0))
			return NULL;
		f = g;
	}
	return f;
}

/* Basic (RFC 7617): the user-id before the first ':'. Lower-cased like
 * the Stalwart proxy does, whitespace around it trimmed. */
static bool basic_user(struct http_str cred, char *out, size_t outlen)
{
	unsigned char buf[3 * (4096 / 4)];
	unsigned char *colon;
	size_t start = 0, end;
	long n;
	bool ok = false;

	if (cred.len > 4096)
		return false;
	n = base64_decode(cred.p, cred.len, buf);
	if (n <= 0)
		return false;
	colon = memchr(buf, ':', (size_t)n);
	if (colon) {
		end = (size_t)(colon - buf);
		while (start < end && (buf[start] == ' ' || buf[start] == '\t'))
			start++;
		while (end > start && (buf[end - 1] == ' ' || buf[end - 1] == '\t'))
			end--;
		for (size_t i = start; i < end; i++) {
			if (buf[i] >= 'A' && buf[i] <= 'Z')
				buf[i] = (unsigned char)(buf[i] - 'A' + 'a');
		}
		ok = set_identifier((const char *)buf + start, end - start, out, outlen);
	}
	OPENSSL_cleanse(buf, (size_t)n); /* the password */
	return ok;
}

static const char *from_authorization(const struct http_router *r, const struct http_head *h,
                                      char *out, size_t outlen)
{
	const struct http_field *f = single_field(h, "authorization");
	struct http_str cred;

	if (!f)
		return NULL;
	if (auth_scheme(f->value, "basic", &cred))
		return basic_user(cred, out, outlen) ? "basic" : NULL;
	if (auth_scheme(f->value, "bearer", &cred) &&
	    http_bearer_identifier(cred.p, cred.len, r->jwt_claim, out, outlen))
		return cred.len >= 4 && memcmp(cred.p, "sw1.", 4) == 0 ? "bearer-sw1" : "jwt";
	return NULL;
}

/* The parameter's form-decoded value; none if it appears twice with
 * different values. */
static bool from_query(struct http_str q, const char *param, char *out, size_t outlen)
{
	char key[256], val[ACCOUNT_MAX + 1];
	bool found = false;

	while (q.len > 0) {
		const char *amp = memchr(q.p, '&', q.len);
		size_t n = amp ? (size_t)(amp - q.p) : q.len;
		const char *eq = memchr(q.p, '=', n);
		size_t klen = eq ? (size_t)(eq - q.p) : n;

		if (http_form_decode(q.p, klen, key, sizeof(key)) && strcmp(key, param) == 0) {
			const char *v = eq ? eq + 1 : q.p + n;
			size_t vlen = eq ? n - klen - 1 : 0;
			if (!http_form_decode(v, vlen, val, sizeof(val)))
				return false;
			if (found && strcmp(val, out) != 0)
				return false;
			if (!found && strlen(val) + 1 > outlen)
				return false;
			if (!found)
				memcpy(out, val, strlen(val) + 1);
			found = true;
		}
		q.p += amp ? n + 1 : n;
		q.len -= amp ? n + 1 : n;
	}
	return found && valid_identifier(out, strlen(out));
}

static bool from_body(const struct http_router *r, const struct http_rule *rule,
                      const uint8_t *body, size_t len, char *out, size_t outlen)
{
	pcre2_match_data *md;
	PCRE2_SIZE *ov;
	bool ok = false;
	int rc;

	if (!body || !rule->re)
		return false;
	if (len > r->body_cap)
		len = r->body_cap;
	md = pcre2_match_data_create_from_pattern(rule->re, NULL);
	if (!md)
		return false;
	rc = pcre2_match(rule->re, body, len, 0, 0, md, r->mctx);
	if (rc >= 2) {
		ov = pcre2_get_ovector_pointer(md);
		if (ov[2] != PCRE2_UNSET && ov[3] >= ov[2])
			ok = http_form_decode((const char *)body + ov[2], ov[3] - ov[2], out,
			                      outlen) &&
			     valid_identifier(out, strlen(out));
	}
	pcre2_match_data_free(md);
	return ok;
}

void http_route_eval(const struct http_router *r, int idx, const struct http_head *h,
                     const uint8_t *body, size_t body_len, struct http_route_result *out)
{
	const struct http_rule *rule;
	const char *source = NULL;
	char *id = out->identifier;
	size_t idlen = sizeof(out->identifier);

	memset(out, 0, sizeof(*out));
	out->dest = r->default_dest;
	out->kind = HTTP_ROUTE_FALLBACK;
	out->source = "none";
	if (idx < 0 || (size_t)idx >= r->n)
		return;
	rule = &r->rules[idx];
	if (rule->dest >= 0) {
		out->kind = HTTP_ROUTE_PINNED;
		out->dest = rule->dest;
		out->source = "pinned";
		return;
	}
	switch (rule->from) {
	case FROM_AUTHORIZATION:
		source = from_authorization(r, h, id, idlen);
		break;
	case FROM_QUERY:
		source = from_query(h->query, rule->param, id, idlen) ? "query" : NULL;
		break;
	case FROM_HEADER: {
		const struct http_field *f = single_field(h, rule->header);
		source = f && set_identifier(f->value.p, f->value.len, id, idlen) ? "header" : NULL;
		break;
	}
	case FROM_BODY:
		source = from_body(r, rule, body, body_len, id, idlen) ? "body" : NULL;
		break;
	default:
		break;
	}
	if (source) {
		out->kind = HTTP_ROUTE_ACCOUNT;
		out->dest = -1;
		out->source = source;
		return;
	}
	memset(out->identifier, 0, sizeof(out->identifier));
	if (rule->fallback >= 0)
		out->dest = rule->fallback;
}
