/*
 * Configuration loading and validation: one test per rule, each checking
 * the "FILE:LINE: key: message" the operator sees.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static char dir[] = "/tmp/ms-test-config-XXXXXX";
static char cfg_path[256], cert_path[256], key_path[256], map_path[256], token_path[256];
static char err[16384];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(cfg_path, sizeof(cfg_path), "%s/c.toml", dir);
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
	snprintf(map_path, sizeof(map_path), "%s/map.tsv", dir);
	snprintf(token_path, sizeof(token_path), "%s/token", dir);
	/* contents do not matter to the loader: it checks readability */
	write_file(cert_path, "cert\n");
	write_file(key_path, "key\n");
	write_file(map_path, "alice@example.org new\n");
	write_file(token_path, "0123456789abcdef0123456789abcdef\n");
	chmod(key_path, 0600);
	chmod(token_path, 0600);
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A valid base; each test appends or substitutes one part. Line numbers
 * below count from the first line of the file. */
#define TLS_PART                                                                                   \
	"[tls.certificate.default]\n" /* 1 */                                                      \
	"cert = \"@CERT@\"\n"         /* 2 */                                                      \
	"key = \"@KEY@\"\n"           /* 3 */                                                      \
	"default = true\n"            /* 4 */
#define ROUTING_PART                                                                               \
	"[routing]\n"                        /* 5 */                                               \
	"default_destination = \"legacy\"\n" /* 6 */                                               \
	"[mapping]\n"                        /* 7 */                                               \
	"source = \"file\"\n"                /* 8 */                                               \
	"[mapping.file]\n"                   /* 9 */                                               \
	"path = \"@MAP@\"\n"                 /* 10 */
#define DEST_PART                                                                                  \
	"[destination.legacy]\n"               /* 11 */                                            \
	"host = \"legacy.example.net\"\n"      /* 12 */                                            \
	"forwarding = \"xclient\"\n"           /* 13 */                                            \
	"[destination.legacy.protocol.imap]\n" /* 14 */                                            \
	"port = 143\n"                         /* 15 */                                            \
	"tls = \"starttls\"\n"                 /* 16 */                                            \
	"[destination.new]\n"                  /* 17 */                                            \
	"host = \"new.example.net\"\n"         /* 18 */                                            \
	"[destination.new.protocol.imap]\n"    /* 19 */                                            \
	"port = 993\n"                         /* 20 */                                            \
	"tls = \"implicit\"\n"                 /* 21 */
#define LISTENER_PART                                                                              \
	"[listener.imap]\n"             /* 22 */                                                   \
	"protocol = \"imap\"\n"         /* 23 */                                                   \
	"bind = [\"127.0.0.1:1143\"]\n" /* 24 */                                                   \
	"tls = \"starttls\"\n"          /* 25 */
#define BASE TLS_PART ROUTING_PART DEST_PART LISTENER_PART

/* Substitute the @FILE@ placeholders and load. */
static struct config *load(const char *text, bool check_files)
{
	char buf[8192];
	size_t o = 0;

	for (const char *p = text; *p && o < sizeof(buf) - 300;) {
		const char *rep = NULL;
		size_t skip = 0;
		if (strncmp(p, "@CERT@", 6) == 0)
			rep = cert_path, skip = 6;
		else if (strncmp(p, "@KEY@", 5) == 0)
			rep = key_path, skip = 5;
		else if (strncmp(p, "@MAP@", 5) == 0)
			rep = map_path, skip = 5;
		else if (strncmp(p, "@TOKEN@", 7) == 0)
			rep = token_path, skip = 7;
		if (rep) {
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s", rep);
			p += skip;
		} else {
			buf[o++] = *p++;
		}
	}
	buf[o] = '\0';
	write_file(cfg_path, buf);
	return config_load(cfg_path, check_files, err, sizeof(err));
}

/* err must contain "PATH:LINE: KEY: " followed (somewhere) by fragment */
static void expect_error(unsigned line, const char *key, const char *fragment)
{
	char want[512];

	if (line)
		snprintf(want, sizeof(want), "%s:%u: %s: ", cfg_path, line, key);
	else
		snprintf(want, sizeof(want), "%s: %s: ", cfg_path, key);
	const char *at = strstr(err, want);
	if (!at || !strstr(at, fragment)) {
		print_error("expected \"%s...%s\" in:\n%s\n", want, fragment, err);
		fail();
	}
}

/* BASE with the first occurrence of from replaced by to. */
static const char *replaced(const char *from, const char *to)
{
	static char buf[8192];
	const char *base = BASE;
	const char *p = strstr(base, from);

	assert_non_null(p);
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
	return buf;
}

static void test_base_is_valid(void **state)
{
	struct config *c = load(BASE, true);
	if (!c)
		print_error("%s", err);
	assert_non_null(c);
	assert_int_equal(c->n_listeners, 1);
	assert_int_equal(c->n_dests, 2);
	assert_int_equal(c->default_dest, 0);
	config_free(c);
}

/* Defaults documented by the reference proxy. */
static void test_reference_defaults(void **state)
{
	struct config *c = load(BASE, true);
	assert_non_null(c);
	assert_int_equal(c->shutdown_grace_ms, 30000);
	assert_int_equal(c->backend_timeout_ms, 10000);
	assert_int_equal(c->host_down_threshold, 5);
	assert_int_equal(c->host_down_cooldown_ms, 30000);
	assert_int_equal(c->proxy_ttl, 7);
	assert_int_equal(c->positive_ttl_ms, 600000);
	assert_int_equal(c->negative_ttl_ms, 30000);
	assert_int_equal(c->cache_max_entries, 1000000);
	assert_int_equal(c->rules.normalize, NORMALIZE_NONE);
	assert_string_equal(c->master_separators, "%");
	assert_string_equal(c->jwt_username_claim, "email");
	assert_int_equal(c->listeners[0].max_connections, 8192);
	assert_int_equal(c->listeners[0].preauth_timeout_ms, 30000);
	assert_int_equal(c->listeners[0].max_auth_attempts, 3);
	/* proxy_protocol defaults to true: without "forwarding" that means
	 * the PROXY protocol */
	assert_int_equal(c->dests[1].forwarding, FORWARD_PROXY);
	assert_int_equal(c->dests[0].forwarding, FORWARD_XCLIENT);
	config_free(c);
}

static void test_durations(void **state)
{
	struct config *c = load(BASE "[server]\nshutdown_grace = \"5m\"\nbackend_timeout = "
	                             "\"10m\"\nbridge_idle = 90\n",
	                        true);
	assert_non_null(c);
	assert_int_equal(c->shutdown_grace_ms, 300000);
	assert_int_equal(c->backend_timeout_ms, 600000);
	assert_int_equal(c->bridge_idle_ms, 90000);
	config_free(c);
	assert_null(load(BASE "[server]\nshutdown_grace = \"30 seconds\"\n", true));
	expect_error(27, "server.shutdown_grace", "expected a duration");
}

/* Rule: unknown keys (typos) are errors, with a suggestion. */
static void test_unknown_key(void **state)
{
	assert_null(load(BASE "[server]\nshutdown_grase = \"30s\"\n", true));
	expect_error(27, "server.shutdown_grase", "unknown key (did you mean \"shutdown_grace\"?)");
	assert_null(load(BASE "[bogus]\nx = 1\n", true));
	expect_error(26, "bogus", "unknown key");
}

/* Names become C strings, log fields and mapping-file tokens: a NUL would make
 * "legacy\0x" a second "legacy" (found by fuzz_config), a blank or '"' would break
 * the mapping file and the log line. */
static void test_names_without_nul_or_blanks(void **state)
{
	assert_null(load(BASE "[destination.\"legacy\\u0000x\"]\nhost = \"a.example\"\n", true));
	expect_error(26, "destination.legacy", "must not be empty nor contain NUL");
	assert_null(load(BASE "[destination.\"new one\"]\nhost = \"a.example\"\n", true));
	expect_error(26, "destination.new one", "blanks");
	assert_null(load(BASE "[listener.\"a\\u0007\"]\nprotocol = \"imap\"\n", true));
	expect_error(26, "listener.a?", "control characters");
}

/* Rule: default_destination names a declared destination. */
static void test_default_destination_declared(void **state)
{
	assert_null(load(
	        replaced("default_destination = \"legacy\"", "default_destination = \"lagacy\""),
	        true));
	expect_error(6, "routing.default_destination", "no [destination.lagacy] is declared");
}

/* Rule: the default destination serves every listener protocol. */
static void test_default_destination_protocols(void **state)
{
	assert_null(load(BASE "[listener.pop3]\nprotocol = \"pop3\"\nbind = [\"127.0.0.1:1110\"]\n"
	                      "tls = \"starttls\"\n",
	                 true));
	expect_error(11, "destination.legacy", "has no [destination.legacy.protocol.pop3]");
}

/* Rule: an smtp listener needs smtp_passthrough_destination. */
static void test_smtp_needs_passthrough(void **state)
{
	assert_null(load(BASE "[listener.smtp]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:2525\"]\n"
	                      "tls = \"plain\"\n",
	                 true));
	expect_error(26, "routing.smtp_passthrough_destination", "missing");
}

/* Rule: an smtp listener cannot be starttls. */
static void test_smtp_not_starttls(void **state)
{
	assert_null(load(BASE "[listener.smtp]\nprotocol = \"smtp\"\nbind = [\"127.0.0.1:2525\"]\n"
	                      "tls = \"starttls\"\n",
	                 true));
	expect_error(29, "listener.smtp", "cannot be tls = \"starttls\"");
}

/* Rule: a listen port is 1 to 65535 in plain decimal digits; the error
 * names the file, the line and the key. */
static void test_bind_port_strict(void **state)
{
	static const char *const bad[] = {"127.0.0.1:0",  "127.0.0.1: 993",  "127.0.0.1:+993",
	                                  "127.0.0.1:-1", "127.0.0.1:65536", "127.0.0.1:993x",
	                                  "127.0.0.1:",   "[::1]:99999",     "[::1]:0x3e1"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char from[64], to[64];
		snprintf(from, sizeof(from), "bind = [\"127.0.0.1:1143\"]");
		snprintf(to, sizeof(to), "bind = [\"%s\"]", bad[i]);
		assert_null(load(replaced(from, to), true));
		expect_error(24, "listener.imap.bind", "is not ADDRESS:PORT");
	}
	struct config *c = load(replaced("127.0.0.1:1143", "[::1]:65535"), true);
	assert_non_null(c);
	config_free(c);
}

/* Rule: a TLS leg to an IP address needs tls_server_name. */
static void test_ip_needs_server_name(void **state)
{
	assert_null(load(replaced("host = \"new.example.net\"", "host = \"10.0.0.20\""), true));
	expect_error(18, "destination.new.tls_server_name", "host is the IP address 10.0.0.20");
}

/* Rule: a plaintext leg that carries credentials needs allow_plaintext_auth. */
static void test_plaintext_needs_allow(void **state)
{
	assert_null(load(replaced("tls = \"starttls\"\n[destination.new]",
	                          "tls = \"plain\"\n[destination.new]"),
	                 true));
	expect_error(14, "destination.legacy.allow_plaintext_auth", "clear text");
	/* allowed explicitly: loads */
	struct config *c = load(replaced("forwarding = \"xclient\"\n",
	                                 "forwarding = \"xclient\"\nallow_plaintext_auth = true\n"),
	                        true);
	assert_non_null(c);
	assert_true(c->dests[0].allow_plaintext_auth);
	config_free(c);
	/* 1 is not a boolean: the type is named */
	c = load(replaced("forwarding = \"xclient\"\n",
	                  "forwarding = \"xclient\"\nallow_plaintext_auth = 1\n"),
	         true);
	expect_error(14, "destination.legacy.allow_plaintext_auth",
	             "expected boolean, found integer");
	assert_null(c);
}

/* Rule: [admin] tls must be implicit. */
static void test_admin_tls_implicit(void **state)
{
	assert_null(load(BASE "[admin]\nbind = \"127.0.0.1:9443\"\ntls = \"plain\"\n"
	                      "bearer_token_file = \"@TOKEN@\"\n",
	                 true));
	expect_error(28, "admin.tls", "must be \"implicit\"");
}

/* Rule: referenced files exist and are readable. */
static void test_missing_files(void **state)
{
	char text[4096];
	snprintf(text, sizeof(text), "%s",
	         replaced("cert = \"@CERT@\"", "cert = \"/nonexistent/c.pem\""));
	assert_null(load(text, true));
	expect_error(2, "tls.certificate.default.cert", "/nonexistent/c.pem");
	expect_error(2, "tls.certificate.default.cert", "No such file");
	/* without file checks (--check on another host) the same text loads */
	struct config *c = load(text, false);
	assert_non_null(c);
	config_free(c);
	assert_null(load(BASE "[admin]\nbind = \"127.0.0.1:9443\"\n"
	                      "bearer_token_file = \"/nonexistent/token\"\n",
	                 true));
	expect_error(28, "admin.bearer_token_file", "/nonexistent/token");
}

/* Rule: the admin token is at least min_token_len long. */
static void test_short_token(void **state)
{
	write_file(token_path, "short\n");
	assert_null(load(BASE
	                 "[admin]\nbind = \"127.0.0.1:9443\"\nbearer_token_file = \"@TOKEN@\"\n",
	                 true));
	expect_error(28, "admin.bearer_token_file",
	             "5 characters long, shorter than min_token_len");
	write_file(token_path, "0123456789abcdef0123456789abcdef\n");
	struct config *c = load(
	        BASE "[admin]\nbind = \"127.0.0.1:9443\"\nbearer_token_file = \"@TOKEN@\"\n", true);
	assert_non_null(c);
	assert_string_equal(c->admin_token, "0123456789abcdef0123456789abcdef");
	config_free(c);
}

/* Rule: private keys and tokens are not world-readable. */
static void test_world_readable_secrets(void **state)
{
	chmod(key_path, 0644);
	assert_null(load(BASE, true));
	expect_error(3, "tls.certificate.default.key", "readable by every user (mode 0644)");
	chmod(key_path, 0600);
	chmod(token_path, 0604);
	assert_null(load(BASE
	                 "[admin]\nbind = \"127.0.0.1:9443\"\nbearer_token_file = \"@TOKEN@\"\n",
	                 true));
	expect_error(28, "admin.bearer_token_file", "readable by every user");
	chmod(token_path, 0600);
}

/* Extension: default_domain and login form. */
static void test_extensions(void **state)
{
	struct config *c = load(replaced("source = \"file\"", "default_domain = \"x.org\""), true);
	if (!c)
		print_error("%s", err);
	assert_non_null(c);
	assert_string_equal(c->rules.default_domain, "x.org");
	config_free(c);
	assert_null(load(replaced("forwarding = \"xclient\"", "login = \"full-adress\""), true));
	expect_error(13, "destination.legacy.login", "is not one of \"as-sent\", \"full-address\"");
}

/* A source's table is needed only when that source is in use. */
static void test_store_tables(void **state)
{
	struct config *c = load(replaced("source = \"file\"", "source = \"sql\""), true);
	/* [mapping.sql] is missing */
	assert_null(c);
	expect_error(8, "mapping.sql", "source = \"sql\" needs this table");
	c = load(BASE "[mapping.sql]\nurl = \"postgres://db/proxy\"\n", true);
	assert_non_null(c); /* the file source is still the one in use */
	assert_string_equal(c->mapping_source, "file");
	config_free(c);
}

/* [mapping.redis] / [mapping.sql]: the reference's keys, served (issue 21). */
static const char *with_store(const char *source, const char *table)
{
	static char buf[8192];
	char src[64];

	snprintf(src, sizeof(src), "source = \"%s\"", source);
	snprintf(buf, sizeof(buf), "%s%s", replaced("source = \"file\"", src), table);
	return buf;
}

static void test_stores(void **state)
{
	struct config *c = load(with_store("redis", "[mapping.redis]\n" /* 26 */
	                                            "url = \"redis://10.0.0.5\"\n" /* 27 */),
	                        true);
	if (!c)
		print_error("%s", err);
	assert_non_null(c);
	assert_string_equal(c->redis_key_prefix, "route:"); /* the reference's default */
	assert_string_equal(c->bus_channel, "route:events");
	assert_int_equal(c->store_pool_size, 16);
	assert_non_null(c->node_name);
	config_free(c);

	assert_null(
	        load(with_store("redis", "[mapping.redis]\nurl = \"rediss://10.0.0.5\"\n"), true));
	expect_error(27, "mapping.redis.url", "rediss:// (TLS) is not supported");
	assert_null(load(with_store("redis", "[mapping.redis]\nkey_prefix = \"r:\"\n"), true));
	expect_error(26, "mapping.redis.url", "missing");

	c = load(with_store("sql", "[mapping.sql]\n"                                   /* 26 */
	                           "url = \"postgresql://u:p@db.example.net/proxy\"\n" /* 27 */
	                           "query = \"SELECT d FROM r WHERE i = $1\"\n" /* 28 */),
	         true);
	if (!c)
		print_error("%s", err);
	assert_non_null(c);
	assert_string_equal(c->bus_channel, "mailsplice");
	assert_null(c->sql_upsert_query); /* read-only, as at the reference */
	config_free(c);

	/* another database: a start-up error naming what is supported */
	assert_null(load(with_store("sql", "[mapping.sql]\n"
	                                   "url = \"mysql://u:p@db/proxy\"\n"
	                                   "query = \"SELECT d FROM r WHERE i = $1\"\n"),
	                 true));
	expect_error(27, "mapping.sql.url",
	             "unsupported scheme \"mysql\": the supported schemes are postgres:// and "
	             "postgresql://");
	assert_null(strstr(err, "u:p@")); /* the URL (and its password) is not echoed */

	assert_null(
	        load(with_store("sql", "[mapping.sql]\nurl = \"postgres://db/proxy\"\n"), true));
	expect_error(26, "mapping.sql.query", "missing");
	assert_null(load(with_store("sql", "[mapping.sql]\n"
	                                   "url = \"postgres://db/proxy\"\n"
	                                   "query = \"SELECT d FROM r WHERE i = $10\"\n"
	                                   "upsert_query = \"INSERT INTO r VALUES ($1)\"\n"
	                                   "channel = \"Bad-Channel\"\n"),
	                 true));
	expect_error(28, "mapping.sql.query", "does not use $1");
	expect_error(29, "mapping.sql.upsert_query", "must use $1 (the account) and $2");
	expect_error(30, "mapping.sql.channel", "is not 1 to 63 of a-z, 0-9 and _");

	assert_null(load(with_store("redis\"\nlookup_timeout = \"0s",
	                            "[mapping.redis]\nurl = \"redis://h\"\n"),
	                 true));
	expect_error(9, "mapping.lookup_timeout", "must be more than 0");

	assert_null(load(BASE "[server]\nnode_name = \"mx 1\"\n", true));
	expect_error(27, "server.node_name", "printable ASCII characters without spaces");
	c = load(BASE "[server]\nnode_name = \"mx1\"\n", true);
	assert_non_null(c);
	assert_string_equal(c->node_name, "mx1");
	config_free(c);
}

/* HTTP listeners: forwarded is "off" or "trust" (http listeners only), and
 * HTTP has no STARTTLS, on either leg. */
#define HTTP_PART                                                                                  \
	"[destination.legacy.protocol.http]\n" /* 26 */                                            \
	"port = 443\n"                         /* 27 */                                            \
	"tls = \"implicit\"\n"                 /* 28 */                                            \
	"[listener.web]\n"                     /* 29 */                                            \
	"protocol = \"http\"\n"                /* 30 */                                            \
	"bind = [\"127.0.0.1:8443\"]\n"        /* 31 */                                            \
	"tls = \"implicit\"\n"                 /* 32 */                                            \
	"forwarded = \"trust\"\n"              /* 33 */

static const char *http_replaced(const char *from, const char *to)
{
	static char buf[8192];
	const char *base = BASE HTTP_PART;
	const char *p = strstr(base, from);

	assert_non_null(p);
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
	return buf;
}

static void test_http_listener(void **state)
{
	struct config *c = load(BASE HTTP_PART, true);
	if (!c)
		print_error("%s", err);
	assert_non_null(c);
	assert_int_equal(c->n_listeners, 2);
	assert_int_equal(c->listeners[1].protocol, PROTO_HTTP);
	assert_string_equal(c->listeners[1].forwarded, "trust");
	config_free(c);

	assert_null(load(http_replaced("forwarded = \"trust\"", "forwarded = \"yes\""), true));
	expect_error(33, "listener.web.forwarded", "\"yes\" is not one of \"off\", \"trust\"");
	assert_null(load(
	        http_replaced("tls = \"implicit\"\nforwarded", "tls = \"starttls\"\nforwarded"),
	        true));
	expect_error(32, "listener.web.tls", "HTTP has no STARTTLS");
	assert_null(load(
	        http_replaced("port = 443\ntls = \"implicit\"", "port = 443\ntls = \"starttls\""),
	        true));
	expect_error(28, "destination.legacy.protocol.http.tls", "HTTP has no STARTTLS");
	assert_null(load(BASE "forwarded = \"off\"\n", true));
	expect_error(26, "listener.imap.forwarded", "applies to http listeners only");
}

/* Every error is reported, not just the first. */
static void test_all_errors_reported(void **state)
{
	assert_null(load(BASE "[server]\nthreds = 1\nlog_level = \"loud\"\n", true));
	expect_error(27, "server.threds", "unknown key");
	expect_error(28, "server.log_level", "\"loud\" is not one of");
}

/* master_user_separators live in [routing], as in the reference proxy. */
static void test_master_separators(void **state)
{
	struct config *c = load(
	        replaced("[mapping]\n", "master_user_separators = [\"*\", \"%\"]\n[mapping]\n"),
	        true);
	assert_non_null(c);
	assert_string_equal(c->master_separators, "*%");
	config_free(c);
	assert_null(load(replaced("[mapping]\n", "master_user_separators = [\"**\"]\n[mapping]\n"),
	                 true));
	expect_error(7, "routing.master_user_separators", "not a single printable character");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_base_is_valid),
	        cmocka_unit_test(test_reference_defaults),
	        cmocka_unit_test(test_durations),
	        cmocka_unit_test(test_unknown_key),
	        cmocka_unit_test(test_names_without_nul_or_blanks),
	        cmocka_unit_test(test_default_destination_declared),
	        cmocka_unit_test(test_default_destination_protocols),
	        cmocka_unit_test(test_smtp_needs_passthrough),
	        cmocka_unit_test(test_smtp_not_starttls),
	        cmocka_unit_test(test_bind_port_strict),
	        cmocka_unit_test(test_ip_needs_server_name),
	        cmocka_unit_test(test_plaintext_needs_allow),
	        cmocka_unit_test(test_admin_tls_implicit),
	        cmocka_unit_test(test_missing_files),
	        cmocka_unit_test(test_short_token),
	        cmocka_unit_test(test_world_readable_secrets),
	        cmocka_unit_test(test_extensions),
	        cmocka_unit_test(test_store_tables),
	        cmocka_unit_test(test_stores),
	        cmocka_unit_test(test_http_listener),
	        cmocka_unit_test(test_all_errors_reported),
	        cmocka_unit_test(test_master_separators),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
