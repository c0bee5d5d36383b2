/* Account canonicalisation, the mapping file store and the router cache. */
#include "unit.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapping.h"
#include "util.h"

static const char *const dests[] = {"legacy", "stalwart"};

static const struct account_rules lower_rules = {
        .normalize = NORMALIZE_LOWERCASE,
        .default_domain = "example.org",
        .master_separators = "%",
};

static const char *canon(const struct account_rules *r, const char *in, char *out)
{
	return account_canonical(r, in, strlen(in), out, ACCOUNT_MAX + 1);
}

static void test_canonical_lowercase_and_default_domain(void **state)
{
	char out[ACCOUNT_MAX + 1];

	assert_null(canon(&lower_rules, "Alice@Example.ORG", out));
	assert_string_equal(out, "alice@example.org");
	/* a bare local part is the account in the default domain */
	assert_null(canon(&lower_rules, "Carol", out));
	assert_string_equal(out, "carol@example.org");
}

static void test_canonical_master_user_suffix_cut(void **state)
{
	char out[ACCOUNT_MAX + 1];

	assert_null(canon(&lower_rules, "alice@example.org%vmadmin", out));
	assert_string_equal(out, "alice@example.org");
	assert_null(canon(&lower_rules, "bob%vmadmin", out));
	assert_string_equal(out, "bob@example.org");
}

static void test_canonical_none_keeps_case(void **state)
{
	const struct account_rules r = {.normalize = NORMALIZE_NONE};
	char out[ACCOUNT_MAX + 1];

	assert_null(canon(&r, "Alice", out));
	assert_string_equal(out, "Alice");
	assert_null(canon(&r, "a%b", out)); /* no separators configured */
	assert_string_equal(out, "a%b");
}

static void test_canonical_rejects_hostile(void **state)
{
	char out[ACCOUNT_MAX + 1];
	char big[400];

	assert_string_equal(canon(&lower_rules, "a b", out), "space in user name");
	assert_string_equal(canon(&lower_rules, "a\"b", out), "quote in user name");
	assert_string_equal(canon(&lower_rules, "a\rb", out), "control character in user name");
	assert_string_equal(account_canonical(&lower_rules, "a\0b", 3, out, sizeof(out)),
	                    "control character in user name");
	assert_string_equal(canon(&lower_rules, "", out), "empty user name");
	assert_string_equal(canon(&lower_rules, "%admin", out), "empty user name");
	assert_string_equal(canon(&lower_rules, "@example.org", out), "malformed address");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_string_equal(canon(&lower_rules, big, out), "user name too long");
}

static void test_parse_ok_with_comments(void **state)
{
	const char *data = "# migrated accounts\n"
	                   "alice@example.org   stalwart\n"
	                   "\n"
	                   "  Bob@Example.org\tlegacy   # not yet\r\n"
	                   "carol stalwart";
	struct strmap m;
	char err[256];
	uint64_t v;

	assert_true(mapping_parse("m.tsv", data, strlen(data), &lower_rules, dests, 2, &m, err,
	                          sizeof(err)));
	assert_int_equal(strmap_len(&m), 3);
	assert_true(strmap_get(&m, "alice@example.org", &v));
	assert_int_equal(v, 1);
	assert_true(strmap_get(&m, "bob@example.org", &v));
	assert_int_equal(v, 0);
	assert_true(strmap_get(&m, "carol@example.org", &v));
	assert_int_equal(v, 1);
	strmap_free(&m);
}

static void expect_parse_error(const char *data, const char *msg)
{
	struct strmap m;
	char err[256];

	assert_false(mapping_parse("m.tsv", data, strlen(data), &lower_rules, dests, 2, &m, err,
	                           sizeof(err)));
	assert_string_equal(err, msg);
}

static void test_parse_errors_name_the_line(void **state)
{
	expect_parse_error("alice stalwart\nbob nowhere\n",
	                   "m.tsv:2: bob: unknown destination 'nowhere'");
	expect_parse_error("\n\nalice\n", "m.tsv:3: missing destination after the identifier");
	expect_parse_error("alice stalwart extra\n",
	                   "m.tsv:1: more than two fields (expected: identifier destination)");
	expect_parse_error("al\"ice stalwart\n", "m.tsv:1: al\"ice: quote in user name");
	/* the same account twice with different answers is ambiguous */
	expect_parse_error("alice stalwart\nALICE@example.org legacy\n",
	                   "m.tsv:2: ALICE@example.org: account alice@example.org is already "
	                   "mapped to 'stalwart' on line 1");
}

static void test_parse_agreeing_duplicates_are_fine(void **state)
{
	const char *data = "alice stalwart\nalice@example.org stalwart\n";
	struct strmap m;
	char err[256];

	assert_true(mapping_parse("m.tsv", data, strlen(data), &lower_rules, dests, 2, &m, err,
	                          sizeof(err)));
	assert_int_equal(strmap_len(&m), 1);
	strmap_free(&m);
}

/* ---- file store and router, on a real file in a temp dir ---- */

struct fixture {
	char dir[64];
	char path[128];
	struct router r;
};

static uint64_t fake_now;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static void write_file(const char *path, const char *data)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(data, f);
	fclose(f);
}

static char *read_file(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	size_t n;
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	char err[256];

	strcpy(fx->dir, "/tmp/ms-mapping-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/mappings.tsv", fx->dir);
	write_file(fx->path, "# header comment\nalice@example.org stalwart\nbob legacy\n");
	assert_true(router_init(&fx->r, fx->path, &lower_rules, dests, 2, 0, 600000, 30000, 100,
	                        err, sizeof(err)));
	fx->r.clock_ms = fake_clock;
	fake_now = 1000000;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	router_free(&fx->r);
	unlink(fx->path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void test_router_default_and_mapped(void **state)
{
	struct fixture *fx = *state;
	struct route rt;

	assert_int_equal(router_lookup(&fx->r, "alice@example.org", &rt), ROUTE_MAPPED);
	assert_int_equal(rt.dest, 1);
	assert_false(rt.routed_to_default);
	assert_false(rt.cached);
	assert_int_equal(router_lookup(&fx->r, "alice@example.org", &rt), ROUTE_MAPPED);
	assert_true(rt.cached);
	assert_int_equal(router_lookup(&fx->r, "zed@example.org", &rt), ROUTE_DEFAULT);
	assert_int_equal(rt.dest, 0);
	assert_true(rt.routed_to_default);
}

static void test_cache_positive_and_negative_ttl(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	struct router_stats st;

	router_lookup(&fx->r, "alice@example.org", &rt); /* miss, cached 10 min */
	router_lookup(&fx->r, "zed@example.org", &rt);   /* miss, cached 30 s */
	fake_now += 29999;
	router_lookup(&fx->r, "zed@example.org", &rt);
	assert_true(rt.cached);
	fake_now += 1; /* negative TTL over */
	router_lookup(&fx->r, "zed@example.org", &rt);
	assert_false(rt.cached);
	router_lookup(&fx->r, "alice@example.org", &rt);
	assert_true(rt.cached);
	fake_now += 600000; /* positive TTL over */
	router_lookup(&fx->r, "alice@example.org", &rt);
	assert_false(rt.cached);
	router_stats(&fx->r, &st);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 4);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.mappings, 2);
}

static void test_cache_bounded_oldest_evicted(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	struct router_stats st;
	char name[64];

	for (int i = 0; i < 150; i++) {
		snprintf(name, sizeof(name), "user%d@example.org", i);
		router_lookup(&fx->r, name, &rt);
	}
	router_stats(&fx->r, &st);
	assert_int_equal(st.entries, 100);
	router_lookup(&fx->r, "user0@example.org", &rt); /* evicted */
	assert_false(rt.cached);
	router_lookup(&fx->r, "user149@example.org", &rt);
	assert_true(rt.cached);
}

static void test_set_persists_and_invalidates(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	bool existed;
	char err[256];

	router_lookup(&fx->r, "bob@example.org", &rt);
	assert_int_equal(rt.dest, 0);
	assert_true(router_set(&fx->r, "bob@example.org", 1, &existed, err, sizeof(err)));
	assert_true(existed);
	router_lookup(&fx->r, "bob@example.org", &rt);
	assert_int_equal(rt.dest, 1);
	assert_false(rt.cached);
	/* the line was replaced in place; comments and other lines kept */
	assert_string_equal(read_file(fx->path), "# header comment\n"
	                                         "alice@example.org stalwart\n"
	                                         "bob@example.org\tstalwart\n");
	assert_true(router_set(&fx->r, "dave@example.org", 1, &existed, err, sizeof(err)));
	assert_false(existed);
	assert_true(router_set(&fx->r, "alice@example.org", -1, &existed, err, sizeof(err)));
	assert_true(existed);
	assert_string_equal(read_file(fx->path), "# header comment\n"
	                                         "bob@example.org\tstalwart\n"
	                                         "dave@example.org\tstalwart\n");
	assert_true(router_set(&fx->r, "nobody@example.org", -1, &existed, err, sizeof(err)));
	assert_false(existed);
}

static void test_set_after_hand_edit_keeps_the_edit(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	bool existed;
	char err[256];

	/* an operator edits the file without reloading; our next write must
	 * start from the file on disk, not from our older copy */
	write_file(fx->path, "alice@example.org stalwart\nbob legacy\nerin stalwart\n");
	assert_true(router_set(&fx->r, "dave@example.org", 1, &existed, err, sizeof(err)));
	assert_string_equal(read_file(fx->path), "alice@example.org stalwart\n"
	                                         "bob legacy\n"
	                                         "erin stalwart\n"
	                                         "dave@example.org\tstalwart\n");
	router_lookup(&fx->r, "erin@example.org", &rt);
	assert_int_equal(rt.dest, 1);
}

static void test_set_refused_when_file_broken(void **state)
{
	struct fixture *fx = *state;
	bool existed;
	char err[256];

	write_file(fx->path, "alice@example.org stalwart\nbob nowhere\n");
	assert_false(router_set(&fx->r, "dave@example.org", 1, &existed, err, sizeof(err)));
	assert_non_null(strstr(err, "mappings.tsv:2: bob: unknown destination 'nowhere'"));
	/* and the broken file was not overwritten */
	assert_string_equal(read_file(fx->path), "alice@example.org stalwart\nbob nowhere\n");
}

static void test_reload_flushes_stale_entries_only(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	size_t entries, flushed;
	char err[256];

	router_lookup(&fx->r, "alice@example.org", &rt); /* stalwart */
	router_lookup(&fx->r, "bob@example.org", &rt);   /* legacy */
	router_lookup(&fx->r, "zed@example.org", &rt);   /* negative */
	write_file(fx->path, "alice@example.org stalwart\nbob stalwart\nzed stalwart\n");
	assert_true(router_reload(&fx->r, &entries, &flushed, err, sizeof(err)));
	assert_int_equal(entries, 3);
	assert_int_equal(flushed, 2);
	router_lookup(&fx->r, "alice@example.org", &rt);
	assert_true(rt.cached);
	router_lookup(&fx->r, "bob@example.org", &rt);
	assert_false(rt.cached);
	assert_int_equal(rt.dest, 1);
	router_lookup(&fx->r, "zed@example.org", &rt);
	assert_int_equal(rt.dest, 1);
}

static void test_reload_error_keeps_previous_table(void **state)
{
	struct fixture *fx = *state;
	struct route rt;
	size_t entries, flushed;
	char err[256];

	/* a broken hand edit must not send migrated users back to the
	 * default destination */
	write_file(fx->path, "alice@example.org\n");
	assert_false(router_reload(&fx->r, &entries, &flushed, err, sizeof(err)));
	assert_non_null(strstr(err, "mappings.tsv:1: missing destination"));
	assert_int_equal(router_lookup(&fx->r, "alice@example.org", &rt), ROUTE_MAPPED);
	assert_int_equal(rt.dest, 1);
	unlink(fx->path);
	assert_false(router_reload(&fx->r, &entries, &flushed, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file or directory"));
	router_invalidate(&fx->r, NULL);
	assert_int_equal(router_lookup(&fx->r, "alice@example.org", &rt), ROUTE_MAPPED);
	assert_int_equal(rt.dest, 1);
}

static void test_invalidate(void **state)
{
	struct fixture *fx = *state;
	struct route rt;

	router_lookup(&fx->r, "alice@example.org", &rt);
	router_lookup(&fx->r, "bob@example.org", &rt);
	assert_int_equal(router_invalidate(&fx->r, "alice@example.org"), 1);
	assert_int_equal(router_invalidate(&fx->r, "alice@example.org"), 0);
	assert_int_equal(router_invalidate(&fx->r, NULL), 1);
}

static void test_write_keeps_file_mode(void **state)
{
	struct fixture *fx = *state;
	struct stat st;
	bool existed;
	char err[256];

	chmod(fx->path, 0640);
	assert_true(router_set(&fx->r, "dave@example.org", 1, &existed, err, sizeof(err)));
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	/* and no temporary file is left behind */
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", fx->path, (int)getpid());
	assert_int_not_equal(access(tmp, F_OK), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_canonical_lowercase_and_default_domain),
	        cmocka_unit_test(test_canonical_master_user_suffix_cut),
	        cmocka_unit_test(test_canonical_none_keeps_case),
	        cmocka_unit_test(test_canonical_rejects_hostile),
	        cmocka_unit_test(test_parse_ok_with_comments),
	        cmocka_unit_test(test_parse_errors_name_the_line),
	        cmocka_unit_test(test_parse_agreeing_duplicates_are_fine),
	        cmocka_unit_test_setup_teardown(test_router_default_and_mapped, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_cache_positive_and_negative_ttl, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_cache_bounded_oldest_evicted, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_set_persists_and_invalidates, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_set_after_hand_edit_keeps_the_edit, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_set_refused_when_file_broken, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_reload_flushes_stale_entries_only, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_reload_error_keeps_previous_table, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_invalidate, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_write_keeps_file_mode, setup, teardown),
	};
	return cmocka_run_group_tests_name("mapping", tests, NULL, NULL);
}
