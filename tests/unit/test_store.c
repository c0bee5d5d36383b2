/*
 * The pure parts of the remote stores and the fleet bus: store URLs, Redis
 * keys, bus events (issue 21).
 */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "store.h"

static struct store_url u;
static char err[512];

static bool redis(const char *url)
{
	return store_url_parse(STORE_REDIS, url, &u, err, sizeof(err));
}

static bool pg(const char *url)
{
	return store_url_parse(STORE_SQL, url, &u, err, sizeof(err));
}

/* The forms the reference's redis client accepts: redis://[[user]:pass@]host[:port][/db] */
static void test_redis_urls(void **state)
{
	assert_true(redis("redis://10.0.0.5:6379"));
	assert_int_equal(u.n_hosts, 1);
	assert_string_equal(u.host[0], "10.0.0.5");
	assert_int_equal(u.port[0], 6379);
	assert_int_equal(u.db, 0);
	assert_string_equal(u.password, "");

	assert_true(redis("redis://redis.example.net"));
	assert_string_equal(u.host[0], "redis.example.net");
	assert_int_equal(u.port[0], 6379); /* the default */

	assert_true(redis("redis://:s%40cret@127.0.0.1:7000/3"));
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "s@cret"); /* percent-decoded */
	assert_int_equal(u.port[0], 7000);
	assert_int_equal(u.db, 3);

	assert_true(redis("redis://proxy:pw@[::1]:6380/0"));
	assert_string_equal(u.user, "proxy"); /* Redis 6 ACL user */
	assert_string_equal(u.password, "pw");
	assert_string_equal(u.host[0], "::1");
	assert_int_equal(u.port[0], 6380);

	assert_true(redis("redis://h?db=2&password=x%20y"));
	assert_int_equal(u.db, 2);
	assert_string_equal(u.password, "x y");

	assert_true(redis("unix:///run/redis/redis.sock?db=1"));
	assert_true(u.unix_socket);
	assert_string_equal(u.path, "/run/redis/redis.sock");
	assert_int_equal(u.db, 1);
	assert_true(redis("redis+unix:///tmp/r.sock"));
	assert_true(u.unix_socket);
}

static void test_redis_url_errors(void **state)
{
	assert_false(redis("rediss://h:6379"));
	assert_non_null(strstr(err, "rediss:// (TLS) is not supported"));
	assert_false(redis("http://h"));
	assert_non_null(strstr(err, "unsupported scheme \"http\""));
	assert_non_null(strstr(err, "redis://"));
	assert_false(redis("10.0.0.5:6379"));
	assert_non_null(strstr(err, "not a URL"));
	assert_false(redis("redis://"));
	assert_non_null(strstr(err, "no host"));
	assert_false(redis("redis://h:0"));
	assert_false(redis("redis://h:65536"));
	assert_false(redis("redis://h:12a"));
	assert_false(redis("redis://h/x"));
	assert_false(redis("redis://h/1#frag"));
	assert_false(redis("redis://h?dbx=1"));
	assert_non_null(strstr(err, "unknown parameter \"dbx\""));
	assert_false(redis("redis://:p%zz@h"));
	assert_false(redis("redis://:p%00@h"));
	assert_false(redis("redis://[::1"));
	assert_false(redis("redis://[nothex]:1"));
	assert_false(redis("redis://h st"));
	assert_false(redis("unix://host/tmp/r.sock"));
	assert_false(redis("unix://"));
	assert_false(redis(""));
	/* a password never shows up in the message */
	assert_false(redis("redis://:topsecret@h:99999"));
	assert_null(strstr(err, "topsecret"));
}

static void test_pg_urls(void **state)
{
	assert_true(pg("postgres://user:pw@db.example.net:5433/proxy"));
	assert_int_equal(u.n_hosts, 1);
	assert_string_equal(u.host[0], "db.example.net");
	assert_int_equal(u.port[0], 5433);
	assert_true(pg("postgresql://10.0.0.6/proxy?sslmode=require"));
	assert_string_equal(u.host[0], "10.0.0.6");
	/* libpq's multi-host form */
	assert_true(pg("postgresql://a:5432,[2001:db8::1]:5433,c/proxy"));
	assert_int_equal(u.n_hosts, 3);
	assert_string_equal(u.host[1], "2001:db8::1");
	assert_int_equal(u.port[1], 5433);
	assert_string_equal(u.host[2], "c");
	/* no host: libpq's default socket, nothing to resolve */
	assert_true(pg("postgresql:///proxy"));
	assert_int_equal(u.n_hosts, 0);
	/* a socket directory, escaped in the authority or in ?host= */
	assert_true(pg("postgresql://%2Fvar%2Frun%2Fpostgresql/proxy"));
	assert_string_equal(u.host[0], "/var/run/postgresql");
	assert_true(pg("postgresql:///proxy?host=/tmp,db2"));
	assert_int_equal(u.n_hosts, 2);
	assert_string_equal(u.host[0], "/tmp");
	assert_string_equal(u.host[1], "db2");
	/* hostaddr given: libpq resolves nothing, neither do we */
	assert_true(pg("postgresql://db/proxy?hostaddr=10.1.1.1"));
	assert_int_equal(u.n_hosts, 0);
}

static void test_pg_url_errors(void **state)
{
	assert_false(pg("mysql://u:p@db/proxy"));
	assert_string_equal(err,
	                    "unsupported scheme \"mysql\": the supported schemes are "
	                    "postgres:// and postgresql:// (this build speaks PostgreSQL only)");
	assert_false(pg("sqlite:///var/lib/x.db"));
	assert_non_null(strstr(err, "postgres:// and postgresql://"));
	assert_false(pg("host=db dbname=proxy"));
	assert_non_null(strstr(err, "not a URL"));
	assert_false(pg("postgres://db:port/proxy"));
	assert_false(pg("postgres://a,b,c,d,e,f,g,h,i/proxy"));
	assert_non_null(strstr(err, "more than 8 hosts"));
	assert_false(pg("postgres://db/proxy#x"));
}

static void test_numeric_hosts_and_keys(void **state)
{
	char key[32];

	assert_true(store_host_is_numeric("127.0.0.1"));
	assert_true(store_host_is_numeric("::1"));
	assert_true(store_host_is_numeric("/run/postgresql"));
	assert_true(store_host_is_numeric(""));
	assert_false(store_host_is_numeric("localhost"));
	assert_false(store_host_is_numeric("db.example.net"));

	assert_true(store_redis_key("route:", "alice@example.org", key, sizeof(key)));
	assert_string_equal(key, "route:alice@example.org");
	assert_true(store_redis_key("", "a", key, sizeof(key)));
	assert_string_equal(key, "a");
	assert_false(
	        store_redis_key("route:", "a-very-long-account@example.org", key, sizeof(key)));
}

/* ---- bus events ---- */

static void roundtrip(const struct bus_event *in)
{
	char buf[BUS_EVENT_MAX + 1];
	struct bus_event out;

	size_t n = bus_event_encode(in, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(strlen(buf), n);
	if (!bus_event_decode(buf, n, &out, err, sizeof(err)))
		print_error("%s: %s\n", buf, err);
	assert_int_equal(out.type, in->type);
	assert_string_equal(out.origin, in->origin);
	assert_int_equal(out.boot, in->boot);
	assert_int_equal(out.seq, in->seq);
	assert_int_equal(out.join, in->join);
	assert_int_equal(out.leaving, in->leaving);
	assert_string_equal(out.account, in->account);
	assert_string_equal(out.destination, in->destination);
	assert_string_equal(out.except, in->except);
	assert_int_equal(out.seconds, in->seconds);
	assert_string_equal(out.req, in->req);
	assert_int_equal(out.count, in->count);
}

static void test_bus_roundtrip(void **state)
{
	struct bus_event ev = {.type = BUS_KICK, .boot = 1735689600123ull, .seq = 7};

	strcpy(ev.origin, "mx1/127.0.0.1:9443");
	strcpy(ev.account, "alice@example.org");
	strcpy(ev.except, "new");
	strcpy(ev.req, "mx1/127.0.0.1:9443:1735689600123:7");
	roundtrip(&ev);

	struct bus_event kicked = {.type = BUS_KICKED, .seq = 1, .boot = 2, .count = 3};
	strcpy(kicked.origin, "mx2");
	strcpy(kicked.req, "mx1:1:7");
	roundtrip(&kicked);

	struct bus_event delay = {.type = BUS_DELAY, .seq = 9, .seconds = 0};
	strcpy(delay.origin, "mx2");
	strcpy(delay.account, "bob+tag@example.org");
	roundtrip(&delay);

	struct bus_event hello = {.type = BUS_HELLO, .join = true, .boot = 5};
	strcpy(hello.origin, "n");
	roundtrip(&hello);
	struct bus_event bye = {.type = BUS_HELLO, .leaving = true, .boot = 5, .seq = 8};
	strcpy(bye.origin, "n");
	roundtrip(&bye);

	struct bus_event all = {.type = BUS_INVALIDATE};
	strcpy(all.origin, "n");
	roundtrip(&all);

	/* an account with quotes and backslashes survives JSON */
	struct bus_event odd = {.type = BUS_MAPPING};
	strcpy(odd.origin, "n");
	strcpy(odd.account, "o\\dd\x01@x");
	strcpy(odd.destination, "d\"q");
	roundtrip(&odd);
}

static bool decode(const char *json, struct bus_event *ev)
{
	return bus_event_decode(json, strlen(json), ev, err, sizeof(err));
}

/* What conf/mailsplice-postgres.sql's trigger sends. */
static void test_bus_trigger_payload(void **state)
{
	struct bus_event ev;

	assert_true(decode("{\"v\" : 1, \"type\" : \"mapping\", \"origin\" : \"postgres\", "
	                   "\"account\" : \"alice@example.org\", \"destination\" : \"new\"}",
	                   &ev));
	assert_int_equal(ev.type, BUS_MAPPING);
	assert_string_equal(ev.origin, "postgres");
	assert_int_equal(ev.boot, 0);
	assert_int_equal(ev.seq, 0);
	assert_true(
	        decode("{\"v\" : 1, \"type\" : \"invalidate\", \"origin\" : \"postgres\"}", &ev));
	assert_int_equal(ev.type, BUS_INVALIDATE);
	assert_string_equal(ev.account, "");
	/* a newer node's extra keys are ignored */
	assert_true(decode("{\"type\":\"hello\",\"origin\":\"n\",\"future\":[1,2]}", &ev));
}

static void test_bus_refused(void **state)
{
	struct bus_event ev;
	char big[BUS_EVENT_MAX + 64];

	static const struct {
		const char *json, *why;
	} bad[] = {
	        {"", "empty"},
	        {"not json", "not JSON"},
	        {"[1,2]", "not a JSON object"},
	        {"{\"type\":\"hello\"}", "origin: missing"},
	        {"{\"type\":\"nuke\",\"origin\":\"n\"}", "type: unknown event type"},
	        {"{\"type\":1,\"origin\":\"n\"}", "type: missing or not a string"},
	        {"{\"v\":2,\"type\":\"hello\",\"origin\":\"n\"}", "v: unknown version"},
	        {"{\"type\":\"hello\",\"origin\":\"a b\"}", "origin: not printable ASCII"},
	        {"{\"type\":\"hello\",\"origin\":\"n\",\"join\":1}", "join: not a boolean"},
	        {"{\"type\":\"kick\",\"origin\":\"n\"}", "account: missing"},
	        {"{\"type\":\"mapping\",\"origin\":\"n\",\"account\":7}", "account: not a string"},
	        {"{\"type\":\"kicked\",\"origin\":\"n\",\"count\":1}", "req: missing"},
	        {"{\"type\":\"delay\",\"origin\":\"n\",\"account\":\"a\"}", "seconds: missing"},
	        {"{\"type\":\"delay\",\"origin\":\"n\",\"account\":\"a\",\"seconds\":-1}",
	         "seconds: not a non-negative integer"},
	        {"{\"type\":\"delay\",\"origin\":\"n\",\"account\":\"a\",\"seconds\":1.5}",
	         "seconds: not a non-negative integer"},
	        {"{\"type\":\"hello\",\"origin\":\"n\",\"origin\":\"m\"}", "not JSON"},
	        {"{\"type\":\"mapping\",\"origin\":\"n\",\"account\":\"a\\u0000b\"}", "not JSON"},
	        {"{\"type\":\"hello\",\"origin\":\"n\"} trailing", "not JSON"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool ok = decode(bad[i].json, &ev);
		if (ok || !strstr(err, bad[i].why))
			print_error("%s -> %s (wanted %s)\n", bad[i].json, ok ? "accepted" : err,
			            bad[i].why);
		assert_false(ok);
		assert_non_null(strstr(err, bad[i].why));
		assert_int_equal(ev.type, 0);
		assert_string_equal(ev.account, "");
	}

	/* bounds */
	char acct[ACCOUNT_MAX + 2];
	memset(acct, 'a', sizeof(acct) - 1);
	acct[sizeof(acct) - 1] = '\0';
	snprintf(big, sizeof(big), "{\"type\":\"mapping\",\"origin\":\"n\",\"account\":\"%s\"}",
	         acct);
	assert_false(decode(big, &ev));
	assert_non_null(strstr(err, "account: too long"));
	memset(big, ' ', sizeof(big));
	memcpy(big, "{\"type\":\"hello\",\"origin\":\"n\"}", 29);
	assert_false(bus_event_decode(big, BUS_EVENT_MAX + 1, &ev, err, sizeof(err)));
	assert_true(bus_event_decode(big, BUS_EVENT_MAX, &ev, err, sizeof(err)));

	/* what does not fit is not sent */
	struct bus_event e = {.type = BUS_MAPPING};
	strcpy(e.origin, "n");
	strcpy(e.account, "a");
	assert_int_equal(bus_event_encode(&e, big, 10), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_redis_urls),
	        cmocka_unit_test(test_redis_url_errors),
	        cmocka_unit_test(test_pg_urls),
	        cmocka_unit_test(test_pg_url_errors),
	        cmocka_unit_test(test_numeric_hosts_and_keys),
	        cmocka_unit_test(test_bus_roundtrip),
	        cmocka_unit_test(test_bus_trigger_payload),
	        cmocka_unit_test(test_bus_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
