/*
 * [[http.route]] (daemon/http/route.c): glob matching, first match wins,
 * the trailing-slash retry, each way of finding the account, the fallback,
 * and the configuration errors an operator sees. The Stalwart proxy's own
 * router and token tests (src/http/router.rs, src/token.rs) are restated
 * here against this implementation, followed by the edges they leave out.
 * Configurations go through config_load, as the daemon loads them.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http_route.h"
#include "sasl.h"

static char dir[] = "/tmp/ms-test-http-route-XXXXXX";
static char cfg_path[256];
static char err[16384];

/* Lines 1-37; routes start at line 38. */
#define BASE                                                                                       \
	"[routing]\n"                                                                              \
	"default_destination = \"legacy\"\n"                                                       \
	"[mapping]\n"                                                                              \
	"source = \"file\"\n"                                                                      \
	"[mapping.file]\n"                                                                         \
	"path = \"/nonexistent/map.tsv\"\n"                                                        \
	"[destination.legacy]\n"                                                                   \
	"host = \"127.0.0.1\"\n"                                                                   \
	"allow_plaintext_auth = true\n"                                                            \
	"[destination.legacy.protocol.http]\n"                                                     \
	"port = 8080\n"                                                                            \
	"tls = \"plain\"\n"                                                                        \
	"[destination.legacy.protocol.imap]\n"                                                     \
	"port = 143\n"                                                                             \
	"tls = \"plain\"\n"                                                                        \
	"[destination.new]\n"                                                                      \
	"host = \"127.0.0.1\"\n"                                                                   \
	"allow_plaintext_auth = true\n"                                                            \
	"[destination.new.protocol.http]\n"                                                        \
	"port = 8081\n"                                                                            \
	"tls = \"plain\"\n"                                                                        \
	"[destination.mailonly]\n"                                                                 \
	"host = \"127.0.0.1\"\n"                                                                   \
	"allow_plaintext_auth = true\n"                                                            \
	"[destination.mailonly.protocol.imap]\n"                                                   \
	"port = 143\n"                                                                             \
	"tls = \"plain\"\n"                                                                        \
	"[listener.imap]\n"                                                                        \
	"protocol = \"imap\"\n"                                                                    \
	"bind = [\"127.0.0.1:1143\"]\n"                                                            \
	"tls = \"plain\"\n"                                                                        \
	"[oauth]\n"                                                                                \
	"jwt_username_claim = \"login_email\"\n"                                                   \
	"[http]\n"                                                                                 \
	"body_extract_cap = 128\n"                                                                 \
	"\n"                                                                                       \
	"\n"
#define FIRST_ROUTE_LINE 38

enum { LEGACY = 0, NEW = 1 };

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(cfg_path, sizeof(cfg_path), "%s/c.toml", dir);
	return 0;
}

static int teardown(void **state)
{
	unlink(cfg_path);
	return rmdir(dir);
}

static struct config *load(const char *routes)
{
	FILE *f = fopen(cfg_path, "w");

	assert_non_null(f);
	fputs(BASE, f);
	fputs(routes, f);
	fclose(f);
	return config_load(cfg_path, false, err, sizeof(err));
}

struct fixture {
	struct config *cfg;
	struct http_router *r;
};

static struct fixture router(const char *routes)
{
	struct fixture fx;

	fx.cfg = load(routes);
	if (!fx.cfg)
		fail_msg("config: %s", err);
	fx.r = http_router_build(fx.cfg, err, sizeof(err));
	if (!fx.r)
		fail_msg("router: %s", err);
	return fx;
}

static void release(struct fixture *fx)
{
	http_router_free(fx->r);
	config_free(fx->cfg);
}

static struct http_str str(const char *s)
{
	return (struct http_str){s, strlen(s)};
}

/* Parse req (which must stay alive) and route it; -1 kind if no rule. */
static int route(const struct fixture *fx, const char *req, const char *body,
                 struct http_route_result *out)
{
	static struct http_head h;
	unsigned status;
	const char *why;
	int idx;

	if (http_parse_request((const uint8_t *)req, strlen(req), 65536, &h, &status, &why) !=
	    HTTP_PARSE_OK)
		fail_msg("request does not parse: %s (%u)", why, status);
	idx = http_route_match(fx->r, h.path);
	if (idx < 0)
		return -1;
	http_route_eval(fx->r, idx, &h, (const uint8_t *)body, body ? strlen(body) : 0, out);
	return idx;
}

static void expect_account(const struct fixture *fx, const char *req, const char *body,
                           const char *account, const char *source)
{
	struct http_route_result res;

	if (route(fx, req, body, &res) < 0)
		fail_msg("no rule matched %s", req);
	if (res.kind != HTTP_ROUTE_ACCOUNT || strcmp(res.identifier, account) != 0 ||
	    strcmp(res.source, source) != 0)
		fail_msg("kind %d identifier \"%s\" source %s; want account \"%s\" from %s",
		         (int)res.kind, res.identifier, res.source, account, source);
	assert_int_equal(res.dest, -1);
}

static void expect_fallback(const struct fixture *fx, const char *req, const char *body, int dest)
{
	struct http_route_result res;

	if (route(fx, req, body, &res) < 0)
		fail_msg("no rule matched %s", req);
	if (res.kind != HTTP_ROUTE_FALLBACK || res.dest != dest || res.identifier[0] != '\0')
		fail_msg("kind %d dest %d identifier \"%s\"; want fallback to %d", (int)res.kind,
		         res.dest, res.identifier, dest);
	assert_string_equal(res.source, "none");
}

static void expect_pinned(const struct fixture *fx, const char *req, int dest)
{
	struct http_route_result res;

	if (route(fx, req, NULL, &res) < 0)
		fail_msg("no rule matched %s", req);
	if (res.kind != HTTP_ROUTE_PINNED || res.dest != dest)
		fail_msg("kind %d dest %d; want pinned to %d", (int)res.kind, res.dest, dest);
	assert_string_equal(res.source, "pinned");
}

/* "hdr.<claims>.sig" with claims base64url-encoded. */
static char *jwt(const char *claims)
{
	static char tok[1024];
	char enc[700];

	base64url_encode(claims, strlen(claims), enc);
	snprintf(tok, sizeof(tok), "eyJhbGciOiJub25lIn0.%s.c2ln", enc);
	return tok;
}

static char *request_with(const char *target, const char *field)
{
	static char buf[4096];
	snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\nHost: mail.example.com\r\n%s\r\n", target,
	         field);
	return buf;
}

static char *basic(const char *userpass)
{
	static char field[1024];
	char enc[700];

	base64_encode(userpass, strlen(userpass), enc);
	snprintf(field, sizeof(field), "Authorization: Basic %s\r\n", enc);
	return field;
}

/* ---- the Stalwart proxy's router tests, restated ---- */

static void test_peer_glob_first_match_wins(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/.well-known/**\"\n"
	                           "destination = \"legacy\"\n"
	                           "[[http.route]]\nmatch = \"/**\"\ndestination = \"new\"\n");

	expect_pinned(&fx, request_with("/.well-known/jmap", ""), LEGACY);
	expect_pinned(&fx, request_with("/other/path", ""), NEW);
	release(&fx);
}

static void test_peer_trailing_slash(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/api\"\ndestination = \"legacy\"\n"
	                           "[[http.route]]\nmatch = \"/**\"\ndestination = \"new\"\n");

	/* "/api/" is also tried as "/api"; rule 0 is earlier than rule 1 */
	expect_pinned(&fx, request_with("/api/", ""), LEGACY);
	expect_pinned(&fx, request_with("/api//", ""), LEGACY);
	expect_pinned(&fx, request_with("/api/x", ""), NEW);
	release(&fx);
}

static void test_peer_root_not_trimmed(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/\"\ndestination = \"legacy\"\n");

	expect_pinned(&fx, request_with("/", ""), LEGACY);
	/* "///" trims to "", which is never tried */
	assert_int_equal(http_route_match(fx.r, str("///")), -1);
	assert_int_equal(http_route_match(fx.r, str("/x")), -1);
	release(&fx);
}

static void test_peer_static_pin_vs_identifier(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/static\"\ndestination = \"legacy\"\n"
	                           "[[http.route]]\nmatch = \"/**\"\n"
	                           "extract = { from = \"authorization\" }\n"
	                           "fallback = \"default\"\n");

	expect_pinned(&fx, request_with("/static", ""), LEGACY);
	expect_fallback(&fx, request_with("/dyn", ""), NULL, LEGACY);
	assert_false(http_route_needs_body(fx.r, 1));
	release(&fx);
}

static void test_peer_basic_lowercased(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/**\"\n"
	                           "extract = { from = \"authorization\" }\n");

	expect_account(&fx, request_with("/", basic("Alice@Example.COM:secret")), NULL,
	               "alice@example.com", "basic");
	release(&fx);
}

static void test_peer_bearer_jwt(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/**\"\n"
	                           "extract = { from = \"authorization\" }\n");
	char field[1200];

	snprintf(field, sizeof(field), "Authorization: Bearer %s\r\n",
	         jwt("{\"email\":\"bob@example.com\"}"));
	expect_account(&fx, request_with("/", field), NULL, "bob@example.com", "jwt");
	release(&fx);
}

static void test_peer_query_param(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/oauth/**\"\n"
	                           "extract = { from = \"query\", param = \"login_hint\" }\n");

	expect_account(&fx, request_with("/oauth/authorize?login_hint=user%40example.com&x=1", ""),
	               NULL, "user@example.com", "query");
	release(&fx);
}

static void test_peer_body_regex(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/auth/token\"\n"
	                           "extract = { from = \"body\", regex = \"username=([^&]+)\" }\n");

	assert_int_equal(http_route_match(fx.r, str("/auth/token")), 0);
	assert_true(http_route_needs_body(fx.r, 0));
	expect_account(&fx, "POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n",
	               "grant=x&username=joe%40corp.com", "joe@corp.com", "body");
	release(&fx);
}

static void test_peer_header(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/**\"\n"
	                           "extract = { from = \"header\", header = \"X-User\" }\n");

	expect_account(&fx, request_with("/", "x-user: someone\r\n"), NULL, "someone", "header");
	release(&fx);
}

/* src/token.rs */
static void test_peer_bearer_identifier(void **state)
{
	char out[ACCOUNT_MAX + 1], tok[1024], enc[200];

	base64url_encode("user@example.com", 16, enc);
	snprintf(tok, sizeof(tok), "sw1.bodyblob.%s", enc);
	assert_true(http_bearer_identifier(tok, strlen(tok), "email", out, sizeof(out)));
	assert_string_equal(out, "user@example.com");
	assert_false(http_bearer_identifier("sw1.bodyonly", 12, "email", out, sizeof(out)));
	assert_false(
	        http_bearer_identifier("sw1.body.!!!notbase64!!!", 24, "email", out, sizeof(out)));

	const char *t = jwt("{\"email\":\"alice@example.com\",\"sub\":\"x\"}");
	assert_true(http_bearer_identifier(t, strlen(t), "email", out, sizeof(out)));
	assert_string_equal(out, "alice@example.com");
	t = jwt("{\"login_email\":\"bob@corp.com\",\"sub\":\"nope\"}");
	assert_true(http_bearer_identifier(t, strlen(t), "login_email", out, sizeof(out)));
	assert_string_equal(out, "bob@corp.com");
	t = jwt("{\"sub\":\"not-an-email\"}");
	assert_false(http_bearer_identifier(t, strlen(t), "email", out, sizeof(out)));
	assert_false(http_bearer_identifier("not-a-jwt", 9, "email", out, sizeof(out)));
	t = jwt("{\"upn\":\"carol@corp.com\",\"sub\":\"x\"}");
	assert_true(http_bearer_identifier(t, strlen(t), "email", out, sizeof(out)));
	assert_string_equal(out, "carol@corp.com");
	t = jwt("{\"login\":\"noat\",\"email\":\"dan@corp.com\"}");
	assert_true(http_bearer_identifier(t, strlen(t), "login", out, sizeof(out)));
	assert_string_equal(out, "dan@corp.com");

	/* beyond: a footer that is not a usable identifier, an empty one,
	 * and an output buffer too small */
	base64url_encode("a\"b@example.com", 15, enc);
	snprintf(tok, sizeof(tok), "sw1.x.%s", enc);
	assert_false(http_bearer_identifier(tok, strlen(tok), NULL, out, sizeof(out)));
	assert_false(http_bearer_identifier("sw1.x.", 6, NULL, out, sizeof(out)));
	base64url_encode("user@example.com", 16, enc);
	snprintf(tok, sizeof(tok), "sw1.x.%s", enc);
	assert_false(http_bearer_identifier(tok, strlen(tok), NULL, out, 16));
	assert_true(http_bearer_identifier(tok, strlen(tok), NULL, out, 17));
}

/* ---- globs ---- */

static void test_glob_table(void **state)
{
	static const struct {
		const char *glob, *path;
		bool match;
	} cases[] = {
	        /* '**' after a final '/' also matches the prefix itself */
	        {"/a/**", "/a", true},
	        {"/a/**", "/a/", true},
	        {"/a/**", "/a/b/c", true},
	        {"/a/**", "/ab", false},
	        {"/a/**", "/", false},
	        /* '*' and '?' stay within one segment */
	        {"/a/*", "/a/b", true},
	        {"/a/*", "/a/", true},
	        {"/a/*", "/a/b/c", false},
	        {"/a/*", "/a", false},
	        {"/a/?", "/a/b", true},
	        {"/a/?", "/a/bc", false},
	        {"/a/?", "/a//", false},
	        {"/*.css", "/x.css", true},
	        {"/*.css", "/d/x.css", false},
	        {"/**/*.css", "/x.css", true},
	        {"/**/*.css", "/d/e/x.css", true},
	        /* '**' between two '/' is zero or more segments */
	        {"/a/**/b", "/a/b", true},
	        {"/a/**/b", "/a/x/b", true},
	        {"/a/**/b", "/a/x/y/b", true},
	        {"/a/**/b", "/a/xb", false},
	        {"/a/**/b", "/ab", false},
	        {"/a**", "/a/b/c", true},
	        {"/**", "/", true},
	        {"/**", "/anything/at/all", true},
	        {"**", "/x", true},
	        {"*", "/x", false},
	        {"/api", "/api", true},
	        {"/api", "/api/", false},
	        {"/api", "/apix", false},
	        {"/API", "/api", false},
	        {"/a/**/**", "/a", false},
	        {"/a/**/**", "/a/", true},
	        {"/v?/x", "/v1/x", true},
	        /* many stars cost rule x path, not an exponential search */
	        {"/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
	         "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac",
	         false},
	        /* refused globs never match */
	        {"", "", false},
	        {"a", "a", false},
	        {"/a/[b]", "/a/b", false},
	        {"/{a,b}", "/a", false},
	        {"/a\\b", "/ab", false},
	        {"/***", "/x", false},
	        {"/a b", "/a b", false},
	};
	unsigned failures = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool m = http_glob_match(cases[i].glob, cases[i].path, strlen(cases[i].path));
		if (m != cases[i].match) {
			print_error("glob \"%s\" on \"%s\": %d\n", cases[i].glob, cases[i].path, m);
			failures++;
		}
	}
	assert_int_equal(failures, 0);

	char long_glob[300];
	memset(long_glob, 'a', sizeof(long_glob));
	long_glob[0] = '/';
	long_glob[257] = '\0';
	assert_false(http_glob_match(long_glob, long_glob, 257));
	long_glob[256] = '\0';
	assert_true(http_glob_match(long_glob, long_glob, 256));
}

static void test_match_order(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/**\"\ndestination = \"new\"\n"
	                           "[[http.route]]\nmatch = \"/api\"\ndestination = \"legacy\"\n"
	                           "[[http.route]]\nmatch = \"/api/\"\ndestination = \"legacy\"\n");

	/* first match wins, also over the trimmed path */
	assert_int_equal(http_route_match(fx.r, str("/api/")), 0);
	assert_int_equal(http_route_match(fx.r, str("/api")), 0);
	release(&fx);

	fx = router("[[http.route]]\nmatch = \"/api/\"\ndestination = \"new\"\n"
	            "[[http.route]]\nmatch = \"/api\"\ndestination = \"legacy\"\n");
	assert_int_equal(http_route_match(fx.r, str("/api/")), 0);
	assert_int_equal(http_route_match(fx.r, str("/api")), 1);
	assert_int_equal(http_route_match(fx.r, str("/other")), -1); /* the proxy answers 404 */
	release(&fx);
}

/* ---- extraction edges ---- */

static void test_authorization_edges(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/**\"\n"
	                           "extract = { from = \"authorization\" }\nfallback = \"new\"\n");
	char field[1200], big[400];

	expect_account(&fx, request_with("/", "authorization: basic YWxpY2U6cHc=\r\n"), NULL,
	               "alice", "basic");
	expect_account(&fx, request_with("/", "Authorization: Basic   YWxpY2U6cHc=\r\n"), NULL,
	               "alice", "basic");
	expect_account(&fx, request_with("/", basic(" Bob@X.org :p:w")), NULL, "bob@x.org",
	               "basic");
	/* bad base64, no colon, empty user, a space or control in it */
	expect_fallback(&fx, request_with("/", "Authorization: Basic !!!!\r\n"), NULL, NEW);
	expect_fallback(&fx, request_with("/", "Authorization: Basic YWxpY2U6cHc\r\n"), NULL, NEW);
	expect_fallback(&fx, request_with("/", basic("alice")), NULL, NEW);
	expect_fallback(&fx, request_with("/", basic(":pw")), NULL, NEW);
	expect_fallback(&fx, request_with("/", basic("a b:pw")), NULL, NEW);
	expect_fallback(&fx, request_with("/", basic("a\x01:pw")), NULL, NEW);
	expect_fallback(&fx, request_with("/", basic("a\"b:pw")), NULL, NEW);
	memset(big, 'u', ACCOUNT_MAX + 1);
	strcpy(big + ACCOUNT_MAX + 1, ":pw");
	expect_fallback(&fx, request_with("/", basic(big)), NULL, NEW);
	strcpy(big + ACCOUNT_MAX, ":pw");
	char longest[ACCOUNT_MAX + 1];
	memcpy(longest, big, ACCOUNT_MAX);
	longest[ACCOUNT_MAX] = '\0';
	expect_account(&fx, request_with("/", basic(big)), NULL, longest, "basic");
	/* other schemes, no credentials, two different Authorization fields */
	expect_fallback(&fx, request_with("/", "Authorization: Digest username=\"a\"\r\n"), NULL,
	                NEW);
	expect_fallback(&fx, request_with("/", "Authorization: Basic\r\n"), NULL, NEW);
	expect_fallback(&fx, request_with("/", "Authorization: BasicYWxpY2U6cHc=\r\n"), NULL, NEW);
	snprintf(field, sizeof(field), "%sAuthorization: Basic Ym9iOnB3\r\n", basic("alice:pw"));
	expect_fallback(&fx, request_with("/", field), NULL, NEW);
	snprintf(field, sizeof(field), "%s%s", basic("alice:pw"), basic("alice:pw"));
	expect_account(&fx, request_with("/", field), NULL, "alice", "basic");

	/* Bearer: Stalwart token, JWT with the configured claim first */
	char enc[100];
	base64url_encode("carol@example.org", 17, enc);
	snprintf(field, sizeof(field), "Authorization: Bearer sw1.AAAA.%s\r\n", enc);
	expect_account(&fx, request_with("/", field), NULL, "carol@example.org", "bearer-sw1");
	snprintf(field, sizeof(field), "Authorization: bearer %s\r\n",
	         jwt("{\"email\":\"e@x.org\",\"login_email\":\"le@x.org\"}"));
	expect_account(&fx, request_with("/", field), NULL, "le@x.org", "jwt");
	snprintf(field, sizeof(field), "Authorization: Bearer %s\r\n",
	         jwt("{\"sub\":\"1234567890\"}"));
	expect_fallback(&fx, request_with("/", field), NULL, NEW);
	expect_fallback(&fx, request_with("/", "Authorization: Bearer sw1.nofooter\r\n"), NULL,
	                NEW);
	release(&fx);
}

static void test_query_and_header_edges(void **state)
{
	struct fixture fx = router("[[http.route]]\nmatch = \"/q\"\n"
	                           "extract = { from = \"query\", param = \"login_hint\" }\n"
	                           "[[http.route]]\nmatch = \"/h\"\n"
	                           "extract = { from = \"header\", header = \"X-Account\" }\n"
	                           "fallback = \"default\"\n");

	expect_account(&fx, request_with("/q?a=1&login%5Fhint=u%40d.org", ""), NULL, "u@d.org",
	               "query");
	expect_account(&fx, request_with("/q?login_hint=u@d.org&login_hint=u%40d.org", ""), NULL,
	               "u@d.org", "query");
	/* two different values: which one would the backend use? none */
	expect_fallback(&fx, request_with("/q?login_hint=a@d.org&login_hint=b@d.org", ""), NULL,
	                LEGACY);
	expect_fallback(&fx, request_with("/q?other=a@d.org", ""), NULL, LEGACY);
	expect_fallback(&fx, request_with("/q", ""), NULL, LEGACY);
	expect_fallback(&fx, request_with("/q?login_hint", ""), NULL, LEGACY);
	expect_fallback(&fx, request_with("/q?login_hint=", ""), NULL, LEGACY);
	/* (a bad %-escape in a target never gets here: the parser refuses it) */
	expect_fallback(&fx, request_with("/q?login_hint=a+b", ""), NULL, LEGACY); /* a space */
	expect_fallback(&fx, request_with("/q?login_hint=a%00b", ""), NULL, LEGACY);
	expect_fallback(&fx, request_with("/q?login_hint=a%0d%0aX:1", ""), NULL, LEGACY);

	expect_account(&fx, request_with("/h", "X-Account: joe@d.org\r\n"), NULL, "joe@d.org",
	               "header");
	expect_fallback(&fx, request_with("/h", "X-Other: joe@d.org\r\n"), NULL, LEGACY);
	expect_fallback(&fx, request_with("/h", "X-Account: joe@d.org\r\nX-Account: ann@d.org\r\n"),
	                NULL, LEGACY);
	expect_fallback(&fx, request_with("/h", "X-Account: joe doe\r\n"), NULL, LEGACY);
	expect_fallback(&fx, request_with("/h", "X-Account:\r\n"), NULL, LEGACY);
	release(&fx);
}

static void test_body_edges(void **state)
{
	/* body_extract_cap = 128 in BASE */
	struct fixture fx = router("[[http.route]]\nmatch = \"/t\"\n"
	                           "extract = { from = \"body\", regex = \"client_id=([^&]+)\" }\n"
	                           "fallback = \"new\"\n"
	                           "[[http.route]]\nmatch = \"/o\"\n"
	                           "extract = { from = \"body\", regex = \"(x)?user=([a-z]+)\" }\n"
	                           "[[http.route]]\nmatch = \"/slow\"\n"
	                           "extract = { from = \"body\", regex = \"^(a+)+$\" }\n");
	const char *post = "POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n";
	char body[400];

	expect_account(&fx, post, "grant_type=code&client_id=webadmin&code=x", "webadmin", "body");
	/* stray bytes that are not UTF-8 do not stop the match */
	expect_account(&fx, post, "\xff\xfe&client_id=stalwart-webui", "stalwart-webui", "body");
	expect_fallback(&fx, post, "grant_type=code", NEW);
	expect_fallback(&fx, post, NULL, NEW);
	expect_fallback(&fx, post, "client_id=a%2", NEW);
	/* the match must lie within body_extract_cap bytes */
	memset(body, 'p', sizeof(body));
	strcpy(body + 100, "&client_id=abcdefghijklmnopqrstuvwxyz");
	expect_account(&fx, post, body, "abcdefghijklmnopq", "body"); /* bytes 111-127 */
	memset(body, 'p', sizeof(body));
	strcpy(body + 120, "&client_id=late"); /* the value starts at byte 131 */
	expect_fallback(&fx, post, body, NEW);
	/* group 1 did not take part */
	expect_fallback(&fx, "POST /o HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", "user=bob",
	                LEGACY);
	/* catastrophic backtracking stops at the match limit: no identifier
	 * (without the limit this test would not finish) */
	memset(body, 'a', 100);
	strcpy(body + 100, "b");
	expect_fallback(&fx, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", body,
	                LEGACY);
	release(&fx);
}

static void test_large_body_capture(void **state)
{
	/* a plain capture over a body of many KiB stays within the limits */
	FILE *f;
	struct config *cfg;
	struct http_router *r;
	struct http_head h;
	struct http_route_result res;
	const char *req = "POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n";
	unsigned status;
	const char *why;
	size_t n = 1 << 20;
	char *body = malloc(n + 1);

	f = fopen(cfg_path, "w");
	fputs(BASE, f);
	fputs("[[http.route]]\nmatch = \"/t\"\n"
	      "extract = { from = \"body\", regex = \"client_id=([a-z]{1,64})(?:&|$)\" }\n",
	      f);
	fclose(f);
	cfg = config_load(cfg_path, false, err, sizeof(err));
	assert_non_null(cfg);
	cfg->http_body_extract_cap = n;
	r = http_router_build(cfg, err, sizeof(err));
	assert_non_null(r);
	memset(body, 'k', n);
	memcpy(body + n - 20, "&client_id=tail", 15);
	body[n - 5] = '\0';
	assert_int_equal(
	        http_parse_request((const uint8_t *)req, strlen(req), 65536, &h, &status, &why),
	        HTTP_PARSE_OK);
	http_route_eval(r, 0, &h, (const uint8_t *)body, n - 5, &res);
	assert_int_equal(res.kind, HTTP_ROUTE_ACCOUNT);
	assert_string_equal(res.identifier, "tail");
	free(body);
	http_router_free(r);
	config_free(cfg);
}

static void test_form_decode(void **state)
{
	char out[8];

	assert_true(http_form_decode("a+b%40C", 7, out, sizeof(out)));
	assert_string_equal(out, "a b@C");
	assert_true(http_form_decode("", 0, out, sizeof(out)));
	assert_string_equal(out, "");
	assert_true(http_form_decode("1234567", 7, out, sizeof(out)));
	assert_false(http_form_decode("12345678", 8, out, sizeof(out)));
	assert_false(http_form_decode("%4", 2, out, sizeof(out)));
	assert_false(http_form_decode("%g0", 3, out, sizeof(out)));
	assert_false(http_form_decode("a%00", 4, out, sizeof(out)));
	assert_false(http_form_decode("a", 1, out, 0));
}

/* ---- configuration ---- */

static void expect_error(unsigned route_line, const char *key, const char *fragment)
{
	char want[512];
	const char *at;

	snprintf(want, sizeof(want), "%s:%u: %s: ", cfg_path, route_line, key);
	at = strstr(err, want);
	if (!at || !strstr(at, fragment))
		fail_msg("expected \"%s...%s\" in:\n%s", want, fragment, err);
}

static void test_config_errors(void **state)
{
	const unsigned L = FIRST_ROUTE_LINE;
	struct config *cfg =
	        load("[[http.route]]\nmatch = \"/a/[bc]\"\ndestination = \"legacy\"\n"
	             "[[http.route]]\nmatch = \"/x\"\ndestination = \"nope\"\n"
	             "[[http.route]]\nmatch = \"/y\"\ndestination = \"mailonly\"\n"
	             "[[http.route]]\nmatch = \"/z\"\n"
	             "extract = { from = \"body\", regex = \"user=(\" }\n"
	             "[[http.route]]\nmatch = \"/z2\"\n"
	             "extract = { from = \"body\", regex = \"user=[a-z]+\" }\n"
	             "fallback = \"nope\"\n"
	             "[[http.route]]\nmatch = \"/q\"\nextract = { from = \"query\" }\n"
	             "[[http.route]]\nmatch = \"/q2\"\n"
	             "extract = { from = \"cookie\" }\n"
	             "[[http.route]]\nmatch = \"/q3\"\n"
	             "extract = { from = \"header\", header = \"X User\", "
	             "regex = \"a(b)\" }\n"
	             "[[http.route]]\nmatch = \"q4\"\n"
	             "[[http.route]]\ndestination = \"new\"\n"
	             "extract = { from = \"authorization\" }\nfallback = \"new\"\n"
	             "[[http.route]]\nmatch = \"/f\"\n"
	             "extract = { from = \"authorization\" }\n"
	             "fallback = \"mailonly\"\n"
	             "[[http.route]]\nmatch = \"/h\"\nextract = { from = \"header\" }\n"
	             "[[http.route]]\nmatch = \"/b\"\nextract = { from = \"body\" }\n"
	             "[[http.route]]\nmatch = \"/p\"\n"
	             "extract = { from = \"authorization\", param = \"x\" }\n");

	assert_null(cfg);
	expect_error(L, "http.route.match", "\"/a/[bc]\": character classes");
	expect_error(L + 3, "http.route.destination", "no [destination.nope] is declared");
	expect_error(L + 6, "http.route.destination",
	             "[destination.mailonly] has no [destination.mailonly.protocol.http]");
	expect_error(L + 9, "http.route.extract.regex", "missing closing parenthesis at offset 6");
	expect_error(L + 12, "http.route.extract.regex", "needs a capture group");
	expect_error(L + 12, "http.route.fallback",
	             "\"nope\" is neither \"default\" nor a declared destination");
	expect_error(L + 16, "http.route.extract.param", "missing: from = \"query\" needs it");
	expect_error(L + 19, "http.route.extract.from",
	             "\"cookie\" is not one of authorization, query, header, body");
	expect_error(L + 22, "http.route.extract.header", "\"X User\" is not a field name");
	expect_error(L + 22, "http.route.extract.regex", "only used with from = \"body\"");
	expect_error(L + 25, "http.route.match", "a path glob starts with '/'");
	expect_error(L + 25, "http.route", "needs destination (pin a backend) or extract");
	expect_error(L + 27, "http.route.match", "missing");
	expect_error(L + 27, "http.route.extract", "a route with a destination extracts nothing");
	expect_error(L + 27, "http.route.fallback", "a route with a destination has no fallback");
	expect_error(L + 31, "http.route.fallback",
	             "[destination.mailonly] has no [destination.mailonly.protocol.http]");
	expect_error(L + 35, "http.route.extract.header", "missing: from = \"header\" needs it");
	expect_error(L + 38, "http.route.extract.regex", "missing: from = \"body\" needs it");
	expect_error(L + 41, "http.route.extract.param", "only used with from = \"query\"");

	/* a type error is reported once, not again as a missing key */
	cfg = load("[[http.route]]\nmatch = 5\ndestination = \"legacy\"\n");
	assert_null(cfg);
	assert_null(strstr(err, "missing"));
}

/* The published configurations' routes load and route as their comments
 * say. */
static void test_reference_configs(void **state)
{
	struct fixture fx;
	char field[200];
	int old, new_;

	fx.cfg = config_load("tests/data/reference/config.sample.toml", false, err, sizeof(err));
	if (!fx.cfg)
		fail_msg("%s", err);
	fx.r = http_router_build(fx.cfg, err, sizeof(err));
	assert_non_null(fx.r);
	expect_pinned(&fx, request_with("/.well-known/jmap", ""),
	              config_dest_index(fx.cfg, "legacy"));
	expect_account(&fx, request_with("/jmap/", basic("user@example.com:pw")), NULL,
	               "user@example.com", "basic");
	expect_fallback(&fx, request_with("/jmap/", ""), NULL, fx.cfg->default_dest);
	release(&fx);

	fx.cfg = config_load("tests/data/reference/config.stalwart-upgrade.toml", false, err,
	                     sizeof(err));
	if (!fx.cfg)
		fail_msg("%s", err);
	fx.r = http_router_build(fx.cfg, err, sizeof(err));
	assert_non_null(fx.r);
	old = config_dest_index(fx.cfg, "old");
	new_ = config_dest_index(fx.cfg, "new");
	expect_pinned(&fx, request_with("/api/oauth", ""), old);
	expect_pinned(&fx, request_with("/authorize/", ""), old);
	expect_pinned(&fx, request_with("/authorize/code?x=1", ""), old);
	expect_pinned(&fx, request_with("/admin/dashboard", ""), new_);
	expect_pinned(&fx, request_with("/login", ""), new_);
	const char *post = "POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n";
	assert_true(http_route_needs_body(fx.r, http_route_match(fx.r, str("/auth/token"))));
	expect_account(&fx, post, "grant_type=authorization_code&client_id=webadmin", "webadmin",
	               "body");
	expect_fallback(&fx, post, "grant_type=refresh_token", old);
	snprintf(field, sizeof(field), "Authorization: Bearer %s\r\n",
	         jwt("{\"email\":\"u@example.com\"}"));
	expect_account(&fx, request_with("/jmap/session", field), NULL, "u@example.com", "jwt");
	release(&fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_peer_glob_first_match_wins),
	        cmocka_unit_test(test_peer_trailing_slash),
	        cmocka_unit_test(test_peer_root_not_trimmed),
	        cmocka_unit_test(test_peer_static_pin_vs_identifier),
	        cmocka_unit_test(test_peer_basic_lowercased),
	        cmocka_unit_test(test_peer_bearer_jwt),
	        cmocka_unit_test(test_peer_query_param),
	        cmocka_unit_test(test_peer_body_regex),
	        cmocka_unit_test(test_peer_header),
	        cmocka_unit_test(test_peer_bearer_identifier),
	        cmocka_unit_test(test_glob_table),
	        cmocka_unit_test(test_match_order),
	        cmocka_unit_test(test_authorization_edges),
	        cmocka_unit_test(test_query_and_header_edges),
	        cmocka_unit_test(test_body_edges),
	        cmocka_unit_test(test_large_body_capture),
	        cmocka_unit_test(test_form_decode),
	        cmocka_unit_test(test_config_errors),
	        cmocka_unit_test(test_reference_configs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
