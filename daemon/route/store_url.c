/*
 * Store URLs (see store.h): a bounded parser of our own, pure, with a fuzz
 * target. For Redis it is the whole story (hiredis takes host, port, path);
 * for PostgreSQL libpq reads the URL itself and we only need its host
 * names, to resolve them without blocking the event loop.
 */
#include "store.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

const char *store_kind_name(enum store_kind k)
{
	switch (k) {
	case STORE_FILE:
		return "file";
	case STORE_REDIS:
		return "redis";
	case STORE_SQL:
		return "sql";
	}
	return "?";
}

/* A piece of the URL fit to quote in a message: printable ASCII only. */
static void quotable(const char *src, size_t len, char *out, size_t outlen)
{
	size_t n = len < outlen - 1 ? len : outlen - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (unsigned char)src[i] > ' ' && (unsigned char)src[i] < 0x7f ? src[i] : '?';
	out[n] = '\0';
}

/* Percent-decode src[0..len) into out; false on a bad escape, a NUL byte
 * or when it does not fit. */
static bool pct_decode(const char *src, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)src[i];
		if (c == '%') {
			if (i + 2 >= len)
				return false;
			int hi = hex_digit(src[i + 1]), lo = hex_digit(src[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = hi * 16 + lo;
			i += 2;
		}
		if (c == 0 || o + 1 >= outlen)
			return false;
		out[o++] = (char)c;
	}
	if (outlen == 0)
		return false;
	out[o] = '\0';
	return true;
}

static bool parse_port(const char *s, size_t len, uint16_t *port)
{
	unsigned v = 0;

	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/* "host", "host:port", "[v6]", "[v6]:port" (host may be empty when
 * allow_empty). Host percent-decoded into out. */
static bool parse_hostport(const char *s, size_t len, bool allow_empty, char *host, size_t hostlen,
                           uint16_t *port, const char **why)
{
	size_t hlen = len;
	const char *h = s;

	*port = 0;
	if (len && s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close) {
			*why = "unclosed '[' in the host";
			return false;
		}
		h = s + 1;
		hlen = (size_t)(close - h);
		size_t rest = len - (size_t)(close + 1 - s);
		if (rest && (close[1] != ':' || !parse_port(close + 2, rest - 1, port))) {
			*why = "bad port";
			return false;
		}
		unsigned char buf[16];
		char tmp[64];
		if (hlen == 0 || hlen >= sizeof(tmp)) {
			*why = "bad IPv6 address";
			return false;
		}
		memcpy(tmp, h, hlen);
		tmp[hlen] = '\0';
		if (inet_pton(AF_INET6, tmp, buf) != 1) {
			*why = "bad IPv6 address";
			return false;
		}
		return str_copy(host, tmp, hostlen) < hostlen;
	}
	const char *colon = memchr(s, ':', len);
	if (colon) {
		hlen = (size_t)(colon - s);
		if (!parse_port(colon + 1, len - hlen - 1, port)) {
			*why = "bad port";
			return false;
		}
	}
	if (hlen == 0 && !allow_empty) {
		*why = "no host";
		return false;
	}
	if (!pct_decode(h, hlen, host, hostlen)) {
		*why = "bad host (escape, NUL byte or too long)";
		return false;
	}
	for (const char *p = host; *p; p++) {
		if (*p == '/' && host[0] == '/')
			continue; /* a unix socket directory */
		if ((unsigned char)*p <= ' ' || *p == '@' || *p == '[' || *p == ']' || *p == ',' ||
		    *p == '/' || *p == '?' || *p == '#' || *p == 0x7f) {
			*why = "bad character in the host";
			return false;
		}
	}
	return true;
}

/* The query's value for key (first occurrence), percent-decoded; 0 absent,
 * 1 found, -1 malformed. */
static int query_value(const char *q, size_t qlen, const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key), i = 0;

	while (i < qlen) {
		size_t end = i;
		while (end < qlen && q[end] != '&')
			end++;
		const char *eq = memchr(q + i, '=', end - i);
		if (eq && (size_t)(eq - (q + i)) == klen && memcmp(q + i, key, klen) == 0)
			return pct_decode(eq + 1, (size_t)(q + end - eq - 1), out, outlen) ? 1 : -1;
		i = end + 1;
	}
	return 0;
}

/* Every key of the query is one of known (NULL-terminated). */
static bool query_keys_known(const char *q, size_t qlen, const char *const *known, char *bad,
                             size_t badlen)
{
	size_t i = 0;

	while (i < qlen) {
		size_t end = i;
		while (end < qlen && q[end] != '&')
			end++;
		const char *eq = memchr(q + i, '=', end - i);
		size_t klen = eq ? (size_t)(eq - (q + i)) : end - i;
		bool ok = klen == 0 && end == i; /* "a=1&&b=2" */
		for (size_t k = 0; !ok && known[k]; k++)
			ok = strlen(known[k]) == klen && memcmp(known[k], q + i, klen) == 0;
		if (!ok) {
			quotable(q + i, klen, bad, badlen);
			return false;
		}
		i = end + 1;
	}
	return true;
}

static bool parse_db(const char *s, size_t len, int *db)
{
	long v = 0;

	if (len == 0 || len > 6)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*db = (int)v;
	return true;
}

static bool fail(char *err, size_t errlen, const char *fmt, const char *arg)
{
	snprintf(err, errlen, fmt, arg ? arg : "");
	return false;
}

/* scheme://authority[/path][?query], split. */
struct parts {
	const char *scheme, *auth, *path, *query;
	size_t scheme_len, auth_len, path_len, query_len;
	bool has_query;
};

static bool split(const char *url, struct parts *p, char *err, size_t errlen)
{
	const char *sep = strstr(url, "://");
	size_t len = strlen(url);

	memset(p, 0, sizeof(*p));
	if (!sep || sep == url)
		return false; /* the caller names the expected form */
	if (len > STORE_URL_MAX)
		return fail(err, errlen, "longer than 4096 bytes%s", NULL);
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
			return fail(err, errlen, "space or control character in the URL%s", NULL);
	}
	p->scheme = url;
	p->scheme_len = (size_t)(sep - url);
	const char *a = sep + 3;
	size_t alen = strcspn(a, "/?#");
	p->auth = a;
	p->auth_len = alen;
	const char *r = a + alen;
	if (*r == '/') {
		p->path = r;
		p->path_len = strcspn(r, "?#");
		r += p->path_len;
	}
	if (*r == '?') {
		p->has_query = true;
		p->query = r + 1;
		p->query_len = strcspn(r + 1, "#");
		r += 1 + p->query_len;
	}
	if (*r == '#')
		return fail(err, errlen, "a fragment ('#') has no meaning here%s", NULL);
	return true;
}

static bool scheme_is(const struct parts *p, const char *s)
{
	return p->scheme_len == strlen(s) && strncasecmp(p->scheme, s, p->scheme_len) == 0;
}

/* Split userinfo off the authority: the last '@'. */
static void split_userinfo(const struct parts *p, const char **ui, size_t *uilen, const char **hp,
                           size_t *hplen)
{
	const char *at = NULL;

	for (size_t i = 0; i < p->auth_len; i++)
		if (p->auth[i] == '@')
			at = p->auth + i;
	if (at) {
		*ui = p->auth;
		*uilen = (size_t)(at - p->auth);
		*hp = at + 1;
		*hplen = p->auth_len - *uilen - 1;
	} else {
		*ui = NULL;
		*uilen = 0;
		*hp = p->auth;
		*hplen = p->auth_len;
	}
}

static bool parse_redis(const char *url, struct store_url *u, char *err, size_t errlen)
{
	static const char *const known[] = {"db", "password", "pass", "user", "username", NULL};
	static const char *const form = "use redis://[[user]:password@]host[:port][/db] or "
	                                "unix:///path/to/redis.sock[?db=N]";
	struct parts p;
	const char *ui, *hp, *why = NULL;
	size_t uilen, hplen;
	char bad[32], tmp[16];

	if (!split(url, &p, err, errlen)) {
		if (!*err)
			snprintf(err, errlen, "not a URL: %s", form);
		return false;
	}
	if (scheme_is(&p, "rediss"))
		return fail(err, errlen,
		            "rediss:// (TLS) is not supported: the hiredis of this build has no "
		            "TLS; use redis:// on a private network or through a local TLS "
		            "tunnel%s",
		            NULL);
	if (scheme_is(&p, "unix") || scheme_is(&p, "redis+unix"))
		u->unix_socket = true;
	else if (!scheme_is(&p, "redis")) {
		char s[24];
		quotable(p.scheme, p.scheme_len, s, sizeof(s));
		snprintf(err, errlen, "unsupported scheme \"%s\": %s", s, form);
		return false;
	}
	split_userinfo(&p, &ui, &uilen, &hp, &hplen);
	if (ui) {
		const char *colon = memchr(ui, ':', uilen);
		size_t ulen = colon ? (size_t)(colon - ui) : uilen;
		if (!pct_decode(ui, ulen, u->user, sizeof(u->user)) ||
		    (colon &&
		     !pct_decode(colon + 1, uilen - ulen - 1, u->password, sizeof(u->password))))
			return fail(err, errlen,
			            "bad user or password (escape, NUL byte or too long)%s", NULL);
	}
	if (p.has_query) {
		if (!query_keys_known(p.query, p.query_len, known, bad, sizeof(bad))) {
			snprintf(err, errlen,
			         "unknown parameter \"%s\" (known: db, password, user)", bad);
			return false;
		}
		int r = query_value(p.query, p.query_len, "db", tmp, sizeof(tmp));
		if (r < 0 || (r == 1 && !parse_db(tmp, strlen(tmp), &u->db)))
			return fail(err, errlen, "db must be a database number%s", NULL);
		if (query_value(p.query, p.query_len, "password", u->password,
		                sizeof(u->password)) < 0 ||
		    query_value(p.query, p.query_len, "pass", u->password, sizeof(u->password)) <
		            0 ||
		    query_value(p.query, p.query_len, "user", u->user, sizeof(u->user)) < 0 ||
		    query_value(p.query, p.query_len, "username", u->user, sizeof(u->user)) < 0)
			return fail(err, errlen, "bad password or user parameter%s", NULL);
	}
	if (u->unix_socket) {
		if (hplen && !(hplen == 9 && strncasecmp(hp, "localhost", 9) == 0))
			return fail(err, errlen,
			            "a unix socket URL has no host: unix:///path/to/redis.sock%s",
			            NULL);
		if (!p.path || !pct_decode(p.path, p.path_len, u->path, 108) || u->path[0] != '/' ||
		    strlen(u->path) < 2)
			return fail(err, errlen,
			            "the socket must be an absolute path of at most 107 "
			            "bytes: unix:///path/to/redis.sock%s",
			            NULL);
		return true;
	}
	if (!parse_hostport(hp, hplen, false, u->host[0], sizeof(u->host[0]), &u->port[0], &why))
		return fail(err, errlen, "%s", why);
	if (!u->port[0])
		u->port[0] = 6379;
	u->n_hosts = 1;
	if (p.path && p.path_len > 1 && !parse_db(p.path + 1, p.path_len - 1, &u->db))
		return fail(err, errlen,
		            "the path must be a database number: redis://host:6379/0%s", NULL);
	return true;
}

/* a comma-separated host list (authority or ?host=) */
static bool parse_pg_hosts(const char *s, size_t len, bool decoded, struct store_url *u, char *err,
                           size_t errlen)
{
	size_t i = 0;
	const char *why = NULL;

	u->n_hosts = 0;
	while (i <= len) {
		size_t end = i;
		while (end < len && s[end] != ',')
			end++;
		if (u->n_hosts == STORE_URL_HOSTS)
			return fail(err, errlen, "more than 8 hosts%s", NULL);
		size_t n = u->n_hosts;
		if (decoded) {
			/* ?host=: plain host names or socket directories, no ports */
			if (end - i > STORE_URL_HOST_MAX)
				return fail(err, errlen, "host name too long%s", NULL);
			memcpy(u->host[n], s + i, end - i);
			u->host[n][end - i] = '\0';
		} else if (!parse_hostport(s + i, end - i, true, u->host[n], sizeof(u->host[n]),
		                           &u->port[n], &why)) {
			return fail(err, errlen, "%s", why);
		}
		u->n_hosts++;
		i = end + 1;
	}
	/* "postgresql:///db": no host at all, libpq's default socket */
	if (u->n_hosts == 1 && !u->host[0][0] && !u->port[0])
		u->n_hosts = 0;
	return true;
}

static bool parse_pg(const char *url, struct store_url *u, char *err, size_t errlen)
{
	static const char *const form = "postgres://user:password@host:5432/database";
	struct parts p;
	const char *ui, *hp;
	size_t uilen, hplen;
	char hosts[2048];

	if (!split(url, &p, err, errlen)) {
		if (!*err)
			snprintf(err, errlen,
			         "not a URL: expected %s (key=value connection strings are not "
			         "accepted here)",
			         form);
		return false;
	}
	if (!scheme_is(&p, "postgres") && !scheme_is(&p, "postgresql")) {
		char s[24];
		quotable(p.scheme, p.scheme_len, s, sizeof(s));
		snprintf(err, errlen,
		         "unsupported scheme \"%s\": the supported schemes are postgres:// and "
		         "postgresql:// (this build speaks PostgreSQL only)",
		         s);
		return false;
	}
	split_userinfo(&p, &ui, &uilen, &hp, &hplen);
	if (ui) {
		char tmp[512];
		if (!pct_decode(ui, uilen, tmp, sizeof(tmp)))
			return fail(err, errlen,
			            "bad user or password (escape, NUL byte or too long)%s", NULL);
	}
	if (!parse_pg_hosts(hp, hplen, false, u, err, errlen))
		return false;
	if (p.has_query) {
		int r = query_value(p.query, p.query_len, "hostaddr", hosts, sizeof(hosts));
		if (r != 0) {
			/* libpq connects to those addresses and resolves nothing */
			u->n_hosts = 0;
			return r > 0 ? true : fail(err, errlen, "bad hostaddr parameter%s", NULL);
		}
		r = query_value(p.query, p.query_len, "host", hosts, sizeof(hosts));
		if (r < 0)
			return fail(err, errlen, "bad host parameter%s", NULL);
		if (r > 0) {
			memset(u->port, 0, sizeof(u->port));
			if (!parse_pg_hosts(hosts, strlen(hosts), true, u, err, errlen))
				return false;
		}
	}
	return true;
}

bool store_url_parse(enum store_kind kind, const char *url, struct store_url *out, char *err,
                     size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	if (errlen)
		err[0] = '\0';
	if (!url || !*url)
		return fail(err, errlen, "empty URL%s", NULL);
	if (kind == STORE_REDIS)
		return parse_redis(url, out, err, errlen);
	if (kind == STORE_SQL)
		return parse_pg(url, out, err, errlen);
	return fail(err, errlen, "no URL for this store%s", NULL);
}

bool store_host_is_numeric(const char *host)
{
	unsigned char buf[16];

	if (!host || !*host || host[0] == '/' || host[0] == '@')
		return true; /* default, unix socket directory, abstract socket */
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

bool store_redis_key(const char *prefix, const char *account, char *out, size_t outlen)
{
	size_t p = strlen(prefix), a = strlen(account);

	if (p + a + 1 > outlen)
		return false;
	memcpy(out, prefix, p);
	memcpy(out + p, account, a + 1);
	return true;
}
