/* SASL mechanisms: parsing, the exchange state machine and the replay. */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- helpers ---- */

static char *b64(const void *p, size_t n)
{
	char *s = malloc(base64_encoded_len(n) + 1);

	assert_non_null(s);
	base64_encode(p, n, s);
	return s;
}

static unsigned char *unb64(const char *s, size_t *n)
{
	unsigned char *p = malloc(strlen(s) / 4 * 3 + 1);
	long r;

	assert_non_null(p);
	r = base64_decode(s, strlen(s), p);
	assert_true(r >= 0);
	*n = (size_t)r;
	return p;
}

/* Start mech with raw (encoded here) as the initial response. */
static enum sasl_status start_ir(struct sasl_exchange *ex, enum sasl_mech mech, const char *claim,
                                 const void *raw, size_t n, const char **error)
{
	const char *challenge = "unset";
	char *enc = b64(raw, n);
	enum sasl_status st;

	st = sasl_start(ex, mech, claim, enc, strlen(enc), &challenge, error);
	if (st != SASL_CONTINUE)
		assert_null(challenge);
	free(enc);
	return st;
}

static enum sasl_status step_raw(struct sasl_exchange *ex, const void *raw, size_t n,
                                 const char **challenge, const char **error)
{
	char *enc = b64(raw, n);
	enum sasl_status st = sasl_step(ex, enc, strlen(enc), challenge, error);

	free(enc);
	return st;
}

/* A response that must fail with exactly this message, started both as an
 * initial response and as the answer to the empty challenge. */
static void expect_fail(enum sasl_mech mech, const void *raw, size_t n, const char *why)
{
	struct sasl_exchange ex;
	const char *err = NULL, *ch;

	assert_int_equal(start_ir(&ex, mech, NULL, raw, n, &err), SASL_FAIL);
	assert_non_null(err);
	assert_string_equal(err, why);
	assert_null(ex.creds.username);
	assert_null(ex.creds.secret);
	assert_null(ex.creds.raw);
	sasl_exchange_clear(&ex);

	if (mech == SASL_LOGIN)
		return;
	assert_int_equal(sasl_start(&ex, mech, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_string_equal(ch, "");
	assert_int_equal(step_raw(&ex, raw, n, &ch, &err), SASL_FAIL);
	assert_string_equal(err, why);
	assert_null(ex.creds.username);
	sasl_exchange_clear(&ex);
}

static void expect_done(struct sasl_exchange *ex, enum sasl_mech mech, const char *claim,
                        const void *raw, size_t n)
{
	const char *err = "unset";

	assert_int_equal(start_ir(ex, mech, claim, raw, n, &err), SASL_DONE);
	assert_null(err);
	assert_int_equal(ex->creds.mech, mech);
	assert_non_null(ex->creds.username);
	assert_non_null(ex->creds.secret);
}

#define JWT_HEADER "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"

static char *make_jwt(const char *payload)
{
	size_t hlen = strlen(JWT_HEADER), plen = strlen(payload), o;
	char *t = malloc(base64_encoded_len(hlen) + base64_encoded_len(plen) + 64);

	assert_non_null(t);
	o = base64url_encode(JWT_HEADER, hlen, t);
	t[o++] = '.';
	o += base64url_encode(payload, plen, t + o);
	strcpy(t + o, ".U2lnbmF0dXJlQnl0ZXM");
	return t;
}

/* OAUTHBEARER as the mail clients send it; gs2 is "n,," or "n,a=...,". */
static char *oauthbearer_resp(const char *gs2, const char *host, const char *token, size_t *n)
{
	char *r = malloc(strlen(gs2) + (host ? strlen(host) : 0) + strlen(token) + 64);
	int len;

	assert_non_null(r);
	if (host)
		len = sprintf(r,
		              "%s\x01host=%s\x01port=993\x01"
		              "auth=Bearer %s\x01\x01",
		              gs2, host, token);
	else
		len = sprintf(r,
		              "%s\x01"
		              "auth=Bearer %s\x01\x01",
		              gs2, token);
	*n = (size_t)len;
	return r;
}

/* The replay, decoded. */
static unsigned char *replayed(const struct sasl_creds *c, const char *user, size_t *n)
{
	char *r = sasl_replay_response(c, user);
	unsigned char *p;

	assert_non_null(r);
	p = unb64(r, n);
	sasl_secret_free(r);
	return p;
}

/* ---- mechanism names ---- */

static void test_mech_names(void **state)
{
	assert_int_equal(sasl_mech_parse(S("PLAIN")), SASL_PLAIN);
	assert_int_equal(sasl_mech_parse(S("plain")), SASL_PLAIN);
	assert_int_equal(sasl_mech_parse(S("Login")), SASL_LOGIN);
	assert_int_equal(sasl_mech_parse(S("xoauth2")), SASL_XOAUTH2);
	assert_int_equal(sasl_mech_parse(S("OAuthBearer")), SASL_OAUTHBEARER);
	assert_int_equal(sasl_mech_parse(S("CRAM-MD5")), SASL_NONE);
	assert_int_equal(sasl_mech_parse(S("PLAINX")), SASL_NONE);
	assert_int_equal(sasl_mech_parse(S("PLAI")), SASL_NONE);
	assert_int_equal(sasl_mech_parse(S("PLAIN\0")), SASL_NONE);
	assert_int_equal(sasl_mech_parse(S("")), SASL_NONE);
	/* only len bytes count */
	assert_int_equal(sasl_mech_parse("LOGINX", 5), SASL_LOGIN);

	assert_string_equal(sasl_mech_name(SASL_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(SASL_LOGIN), "LOGIN");
	assert_string_equal(sasl_mech_name(SASL_XOAUTH2), "XOAUTH2");
	assert_string_equal(sasl_mech_name(SASL_OAUTHBEARER), "OAUTHBEARER");
	assert_null(sasl_mech_name(SASL_NONE));
	assert_null(sasl_mech_name((enum sasl_mech)99));
}

/* ---- PLAIN ---- */

/* RFC 4616 section 4, both examples. */
static void test_plain_rfc4616(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;

	expect_done(&ex, SASL_PLAIN, NULL, S("\0tim\0tanstaaftanstaaf"));
	assert_null(ex.creds.authzid);
	assert_string_equal(ex.creds.username, "tim");
	assert_string_equal(ex.creds.secret, "tanstaaftanstaaf");
	assert_null(ex.creds.raw);
	sasl_exchange_clear(&ex);

	/* the authzid is kept but never routed on */
	expect_done(&ex, SASL_PLAIN, NULL, S("Ursel\0Kurt\0xipj3plmq"));
	assert_string_equal(ex.creds.authzid, "Ursel");
	assert_string_equal(ex.creds.username, "Kurt");
	assert_string_equal(ex.creds.secret, "xipj3plmq");
	sasl_exchange_clear(&ex);

	/* without an initial response: empty challenge, then the response */
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_string_equal(ch, "");
	assert_null(err);
	assert_int_equal(sasl_step(&ex, S("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"), &ch, &err), SASL_DONE);
	assert_null(ch);
	assert_null(err);
	assert_string_equal(ex.creds.username, "tim");
	assert_string_equal(ex.creds.secret, "tanstaaftanstaaf");
	sasl_exchange_clear(&ex);
}

static void test_plain_malformed(void **state)
{
	expect_fail(SASL_PLAIN, S("timtanstaaf"), "missing NUL separator");
	expect_fail(SASL_PLAIN, S("\0timtanstaaf"), "missing NUL separator");
	expect_fail(SASL_PLAIN, S("tim\0tanstaaf"), "missing NUL separator");
	expect_fail(SASL_PLAIN, S("a\0tim\0pass\0"), "too many NUL separators");
	expect_fail(SASL_PLAIN, S("\0tim\0pa\0ss"), "too many NUL separators");
	expect_fail(SASL_PLAIN, S("\0\0\0\0"), "too many NUL separators");
	expect_fail(SASL_PLAIN, S("\0\0tanstaaf"), "empty user name");
	expect_fail(SASL_PLAIN, S("Ursel\0\0tanstaaf"), "empty user name");
	expect_fail(SASL_PLAIN, S("\0tim\0"), "empty password");
	expect_fail(SASL_PLAIN, S("\0\0"), "empty user name");
	expect_fail(SASL_PLAIN, S(""), "empty response");
}

/* RFC 4616 section 2: each field at most 255 octets. */
static void test_plain_field_bounds(void **state)
{
	char long_[257], resp[800];
	struct sasl_exchange ex;
	size_t n;

	memset(long_, 'x', 256);
	long_[256] = '\0';

	/* 255 each is fine */
	n = (size_t)sprintf(resp, "%.255s", long_);
	resp[n++] = '\0';
	n += (size_t)sprintf(resp + n, "%.255s", long_);
	resp[n++] = '\0';
	n += (size_t)sprintf(resp + n, "%.255s", long_);
	expect_done(&ex, SASL_PLAIN, NULL, resp, n);
	assert_int_equal(strlen(ex.creds.authzid), 255);
	assert_int_equal(strlen(ex.creds.username), 255);
	assert_int_equal(strlen(ex.creds.secret), 255);
	sasl_exchange_clear(&ex);

	n = (size_t)sprintf(resp, "%c%s%cpw", 0, long_, 0);
	expect_fail(SASL_PLAIN, resp, n, "user name too long");
	n = (size_t)sprintf(resp, "%ctim%c%s", 0, 0, long_);
	expect_fail(SASL_PLAIN, resp, n, "password too long");
	n = (size_t)sprintf(resp, "%s%ctim%cpw", long_, 0, 0);
	expect_fail(SASL_PLAIN, resp, n, "authorization identity too long");
}

static void test_plain_encoding_errors(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;
	char *big;

	/* "=" is the empty initial response, "" too */
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, S("="), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "empty response");
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, S(""), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "empty response");

	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, S("AHRpbQB0YW5zdGFhZg="), &ch, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "invalid base64");
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, S("AHRpbQB0YW5z dGFhZg=="), &ch, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "invalid base64");
	assert_int_equal(
	        sasl_start(&ex, SASL_PLAIN, NULL, S("AHRpbQB0YW5zdGFhZg==\r\n"), &ch, &err),
	        SASL_FAIL);
	assert_string_equal(err, "invalid base64");
	/* a literal "\0" is not base64 at all */
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, S("\\0tim\\0tanstaaf"), &ch, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "invalid base64");
	/* in a continuation, "=" is no shorthand */
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(sasl_step(&ex, S("="), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "invalid base64");

	/* refused on the length alone, valid base64 or not */
	big = malloc(1 << 20);
	assert_non_null(big);
	memset(big, 'A', 1 << 20);
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, big, 1 << 20, &ch, &err), SASL_FAIL);
	assert_string_equal(err, "response too long");
	memset(big, '!', 1 << 20);
	assert_int_equal(sasl_start(&ex, SASL_PLAIN, NULL, big, 1 << 20, &ch, &err), SASL_FAIL);
	assert_string_equal(err, "response too long");
	free(big);
}

/* Decoded length bounds: 1 KiB for PLAIN and LOGIN, 8 KiB for OAuth. */
static void test_response_bounds(void **state)
{
	unsigned char *buf = malloc(SASL_OAUTH_MAX + 2);
	struct sasl_exchange ex;
	const char *err;

	assert_non_null(buf);
	memset(buf, 'x', SASL_OAUTH_MAX + 2);
	/* 1024 octets pass the decode bound and stop at the field bound */
	buf[0] = 0;
	buf[2] = 0;
	assert_int_equal(start_ir(&ex, SASL_PLAIN, NULL, buf, SASL_PASSWORD_MAX, &err), SASL_FAIL);
	assert_string_equal(err, "password too long");
	/* 1025, 1026 and 1027 octets are too long, whichever base64 length */
	assert_int_equal(start_ir(&ex, SASL_PLAIN, NULL, buf, SASL_PASSWORD_MAX + 1, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "response too long");
	assert_int_equal(start_ir(&ex, SASL_PLAIN, NULL, buf, SASL_PASSWORD_MAX + 2, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "response too long");
	assert_int_equal(start_ir(&ex, SASL_LOGIN, NULL, buf, SASL_PASSWORD_MAX + 3, &err),
	                 SASL_FAIL);
	assert_string_equal(err, "response too long");

	/* an OAuth response of exactly SASL_OAUTH_MAX octets is parsed ... */
	memset(buf, 'x', SASL_OAUTH_MAX + 2);
	memcpy(buf,
	       "user=a@b.example\x01"
	       "auth=Bearer ",
	       29);
	buf[SASL_OAUTH_MAX - 2] = 0x01;
	buf[SASL_OAUTH_MAX - 1] = 0x01;
	expect_done(&ex, SASL_XOAUTH2, NULL, buf, SASL_OAUTH_MAX);
	assert_int_equal(strlen(ex.creds.secret), SASL_OAUTH_MAX - 29 - 2);
	assert_int_equal(ex.creds.raw_len, SASL_OAUTH_MAX);
	sasl_exchange_clear(&ex);
	/* ... one more is not */
	buf[SASL_OAUTH_MAX - 2] = 'x';
	buf[SASL_OAUTH_MAX] = 0x01;
	buf[SASL_OAUTH_MAX - 1] = 0x01;
	expect_fail(SASL_XOAUTH2, buf, SASL_OAUTH_MAX + 1, "response too long");
	expect_fail(SASL_OAUTHBEARER, buf, SASL_OAUTH_MAX + 1, "response too long");
	free(buf);

	/* the bound a protocol module must leave room for */
	assert_int_equal(SASL_LINE_MAX, base64_encoded_len(SASL_OAUTH_MAX));
}

/* ---- LOGIN ---- */

static void test_login_without_initial_response(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;
	unsigned char *p;
	size_t n;

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_string_equal(ch, "VXNlcm5hbWU6");
	p = unb64(ch, &n);
	assert_int_equal(n, 9);
	assert_memory_equal(p, "Username:", 9);
	free(p);

	assert_int_equal(step_raw(&ex, S("alice@example.org"), &ch, &err), SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	p = unb64(ch, &n);
	assert_int_equal(n, 9);
	assert_memory_equal(p, "Password:", 9);
	free(p);
	assert_string_equal(ex.creds.username, "alice@example.org");

	assert_int_equal(step_raw(&ex, S("s3cr3t pass"), &ch, &err), SASL_DONE);
	assert_null(ch);
	assert_null(err);
	assert_int_equal(ex.creds.mech, SASL_LOGIN);
	assert_string_equal(ex.creds.username, "alice@example.org");
	assert_string_equal(ex.creds.secret, "s3cr3t pass");
	assert_null(ex.creds.authzid);
	assert_null(ex.creds.raw);
	sasl_exchange_clear(&ex);
}

/* Some clients (Outlook among them) send the user name with AUTH LOGIN. */
static void test_login_with_initial_response(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, S("Ym9iQGV4YW1wbGUub3Jn"), &ch, &err),
	                 SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	assert_int_equal(sasl_step(&ex, S("aHVudGVyMg=="), &ch, &err), SASL_DONE);
	assert_string_equal(ex.creds.username, "bob@example.org");
	assert_string_equal(ex.creds.secret, "hunter2");
	sasl_exchange_clear(&ex);
}

static void test_login_malformed(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;
	char long_[300];

	memset(long_, 'y', sizeof(long_));

	/* an empty initial response is an empty user name */
	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, S("="), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "empty user name");

	expect_fail(SASL_LOGIN, S("al\0ice"), "NUL in user name");
	expect_fail(SASL_LOGIN, long_, 256, "user name too long");

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(sasl_step(&ex, S(""), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "empty user name");

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(step_raw(&ex, S("alice"), &ch, &err), SASL_CONTINUE);
	assert_int_equal(sasl_step(&ex, S(""), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "empty password");
	/* the user name from the first step is gone with the failure */
	assert_null(ex.creds.username);

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(step_raw(&ex, S("alice"), &ch, &err), SASL_CONTINUE);
	assert_int_equal(step_raw(&ex, S("pa\0ss"), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "NUL in password");

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(step_raw(&ex, S("alice"), &ch, &err), SASL_CONTINUE);
	assert_int_equal(step_raw(&ex, long_, 256, &ch, &err), SASL_FAIL);
	assert_string_equal(err, "password too long");

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_int_equal(sasl_step(&ex, S("YWxpY2U"), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "invalid base64");
}

/* ---- XOAUTH2 ---- */

/* As Thunderbird and Outlook send it (Google's format). */
static void test_xoauth2(void **state)
{
	static const char resp[] =
	        "user=someuser@example.com\x01"
	        "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
	struct sasl_exchange ex;
	const char *ch, *err;

	expect_done(&ex, SASL_XOAUTH2, NULL, S(resp));
	assert_string_equal(ex.creds.username, "someuser@example.com");
	assert_string_equal(ex.creds.secret, "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
	assert_null(ex.creds.authzid);
	assert_int_equal(ex.creds.raw_len, sizeof(resp) - 1);
	assert_memory_equal(ex.creds.raw, resp, sizeof(resp) - 1);
	sasl_exchange_clear(&ex);

	/* the example from Google's documentation, in two steps */
	assert_int_equal(sasl_start(&ex, SASL_XOAUTH2, NULL, NULL, 0, &ch, &err), SASL_CONTINUE);
	assert_string_equal(ch, "");
	assert_int_equal(sasl_step(&ex,
	                           S("dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5Ln"
	                             "ZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="),
	                           &ch, &err),
	                 SASL_DONE);
	assert_string_equal(ex.creds.username, "someuser@example.com");
	assert_string_equal(ex.creds.secret, "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
	sasl_exchange_clear(&ex);

	/* the scheme is case-insensitive; field order is not fixed */
	expect_done(&ex, SASL_XOAUTH2, NULL, S("auth=bearer  tok\x01user=u@example.com\x01\x01"));
	assert_string_equal(ex.creds.username, "u@example.com");
	assert_string_equal(ex.creds.secret, "tok");
	sasl_exchange_clear(&ex);
}

static void test_xoauth2_malformed(void **state)
{
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer tok\x01"),
	            "unterminated response");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer tok"),
	            "unterminated response");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer tok\x01\x01x"),
	            "data after the end of the response");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer tok\x01\x01\x01"),
	            "data after the end of the response");
	expect_fail(SASL_XOAUTH2, S("auth=Bearer tok\x01\x01"), "missing user=");
	expect_fail(SASL_XOAUTH2,
	            S("user=\x01"
	              "auth=Bearer tok\x01\x01"),
	            "empty user name");
	expect_fail(SASL_XOAUTH2, S("user=u@example.com\x01\x01"), "missing auth=");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Basic dTpw\x01\x01"),
	            "auth= is not a Bearer token");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearertok\x01\x01"),
	            "auth= is not a Bearer token");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer \x01\x01"),
	            "empty bearer token");
	expect_fail(SASL_XOAUTH2,
	            S("user=u@example.com\x01"
	              "auth=Bearer tok en\x01\x01"),
	            "invalid character in bearer token");
	expect_fail(SASL_XOAUTH2,
	            S("user=a@example.com\x01user=b@example.com\x01"
	              "auth=Bearer tok\x01\x01"),
	            "duplicate user=");
	expect_fail(SASL_XOAUTH2,
	            S("user=a@example.com\x01"
	              "auth=Bearer t1\x01"
	              "auth=Bearer t2\x01\x01"),
	            "duplicate auth=");
	expect_fail(SASL_XOAUTH2,
	            S("user=a@example.com\x01"
	              "Bearer tok\x01\x01"),
	            "malformed key=value pair");
	expect_fail(SASL_XOAUTH2,
	            S("user=a@exa\0mple.com\x01"
	              "auth=Bearer tok\x01\x01"),
	            "NUL in response");
	expect_fail(SASL_XOAUTH2, S("\x01"), "missing user=");
	expect_fail(SASL_XOAUTH2, S(""), "empty response");
}

/* ---- OAUTHBEARER ---- */

/* RFC 7628 section 4.1, with its example token. */
static void test_oauthbearer_rfc7628(void **state)
{
	static const char resp[] =
	        "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
	        "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
	struct sasl_exchange ex;

	expect_done(&ex, SASL_OAUTHBEARER, NULL, S(resp));
	assert_string_equal(ex.creds.authzid, "user@example.com");
	assert_string_equal(ex.creds.username, "user@example.com");
	assert_string_equal(ex.creds.secret, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
	assert_int_equal(ex.creds.raw_len, sizeof(resp) - 1);
	assert_memory_equal(ex.creds.raw, resp, sizeof(resp) - 1);
	sasl_exchange_clear(&ex);
}

/* Thunderbird: a= present, a JWT whose claims say something else. */
static void test_oauthbearer_authzid_wins(void **state)
{
	char *jwt = make_jwt("{\"email\":\"other@example.com\",\"sub\":\"1\"}");
	struct sasl_exchange ex;
	char *resp;
	size_t n;

	resp = oauthbearer_resp("n,a=user@example.com,", "imap.example.com", jwt, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_string_equal(ex.creds.username, "user@example.com");
	assert_string_equal(ex.creds.secret, jwt);
	sasl_exchange_clear(&ex);
	free(resp);

	/* no host and port at all */
	resp = oauthbearer_resp("n,a=user@example.com,", NULL, jwt, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_string_equal(ex.creds.username, "user@example.com");
	sasl_exchange_clear(&ex);
	free(resp);
	free(jwt);
}

/* Without a=: the identifier comes out of the JWT. */
static void test_oauthbearer_from_jwt(void **state)
{
	char *email = make_jwt("{\"iss\":\"https://accounts.example.com\",\"sub\":\"10769150\","
	                       "\"email\":\"bob@example.com\",\"email_verified\":true}");
	/* Entra ID / Outlook: no email claim */
	char *entra = make_jwt("{\"aud\":\"https://outlook.office.com\",\"name\":\"Carol\","
	                       "\"preferred_username\":\"carol@contoso.com\",\"sub\":\"Xy1\","
	                       "\"upn\":\"carol.upn@contoso.com\"}");
	struct sasl_exchange ex;
	char *resp;
	size_t n;

	resp = oauthbearer_resp("n,,", "imap.example.com", email, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_null(ex.creds.authzid);
	assert_string_equal(ex.creds.username, "bob@example.com");
	assert_string_equal(ex.creds.secret, email);
	sasl_exchange_clear(&ex);
	free(resp);

	resp = oauthbearer_resp("n,,", "outlook.office365.com", entra, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_string_equal(ex.creds.username, "carol@contoso.com");
	sasl_exchange_clear(&ex);
	/* [oauth] jwt_username_claim picks another claim first */
	expect_done(&ex, SASL_OAUTHBEARER, "upn", resp, n);
	assert_string_equal(ex.creds.username, "carol.upn@contoso.com");
	sasl_exchange_clear(&ex);
	/* "y" (client could do channel binding) is as good as "n" */
	resp[0] = 'y';
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_string_equal(ex.creds.username, "carol@contoso.com");
	sasl_exchange_clear(&ex);
	free(resp);
	free(email);
	free(entra);
}

static void test_oauthbearer_no_identifier(void **state)
{
	char *jwt = make_jwt("{\"sub\":\"10769150\",\"name\":\"No Address\"}");
	char *resp;
	size_t n;

	resp = oauthbearer_resp("n,,", "imap.example.com", jwt, &n);
	expect_fail(SASL_OAUTHBEARER, resp, n, "no user name in OAUTHBEARER token");
	free(resp);
	/* an opaque (non-JWT) token and no a= */
	resp = oauthbearer_resp("n,,", NULL, "ya29.opaque-token", &n);
	expect_fail(SASL_OAUTHBEARER, resp, n, "no user name in OAUTHBEARER token");
	free(resp);
	free(jwt);
}

/* RFC 5801 saslname escapes. */
static void test_oauthbearer_authzid_escapes(void **state)
{
	struct sasl_exchange ex;

	expect_done(&ex, SASL_OAUTHBEARER, NULL,
	            S("n,a=a=2Cb=3Dc@example.com,\x01"
	              "auth=Bearer t\x01\x01"));
	assert_string_equal(ex.creds.authzid, "a,b=c@example.com");
	assert_string_equal(ex.creds.username, "a,b=c@example.com");
	sasl_exchange_clear(&ex);

	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=a=2cb@example.com,\x01"
	              "auth=Bearer t\x01\x01"),
	            "invalid escape in authorization identity");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=ab@example.com=,\x01"
	              "auth=Bearer t\x01\x01"),
	            "invalid escape in authorization identity");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=ab=2,\x01"
	              "auth=Bearer t\x01\x01"),
	            "invalid escape in authorization identity");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=,\x01"
	              "auth=Bearer t\x01\x01"),
	            "empty authorization identity");
}

/* The bound applies to the decoded name: 255 commas travel as 765 octets. */
static void test_oauthbearer_authzid_bound(void **state)
{
	struct sasl_exchange ex;
	char resp[1200];
	size_t n, i;
	int count;

	for (count = 255; count <= 256; count++) {
		n = (size_t)sprintf(resp, "n,a=");
		for (i = 0; i < (size_t)count; i++)
			n += (size_t)sprintf(resp + n, "=2C");
		n += (size_t)sprintf(resp + n, ",\x01"
		                               "auth=Bearer t\x01\x01");
		if (count == 255) {
			expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
			assert_int_equal(strlen(ex.creds.username), 255);
			assert_null(strchr(ex.creds.username, '='));
			sasl_exchange_clear(&ex);
		} else {
			expect_fail(SASL_OAUTHBEARER, resp, n, "authorization identity too long");
		}
	}
}

static void test_oauthbearer_malformed(void **state)
{
	expect_fail(SASL_OAUTHBEARER,
	            S("p=tls-unique,a=u@example.com,\x01"
	              "auth=Bearer t\x01\x01"),
	            "channel binding not supported");
	expect_fail(SASL_OAUTHBEARER,
	            S("F,n,a=u@example.com,\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,"
	              "auth=Bearer t\x01\x01"),
	            "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,b=u@example.com,\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER, S("n,a=u@example.com"), "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER, S("n"), "malformed gs2 header");
	/* the client's answer to an error challenge is no first response */
	expect_fail(SASL_OAUTHBEARER, S("\x01"), "malformed gs2 header");
	expect_fail(SASL_OAUTHBEARER, S("n,a=u@example.com,\x01\x01"), "missing auth=");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01host=h\x01"
	              "auth=Bearer t\x01"),
	            "unterminated response");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01"
	              "auth=Bearer t\x01\x01\x01"),
	            "data after the end of the response");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01h0st=h\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed key=value pair");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01host=h\x7f\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed key=value pair");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01=h\x01"
	              "auth=Bearer t\x01\x01"),
	            "malformed key=value pair");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01"
	              "auth=Basic dTpw\x01\x01"),
	            "auth= is not a Bearer token");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@example.com,\x01"
	              "auth=Bearer t\x01"
	              "auth=Bearer t\x01\x01"),
	            "duplicate auth=");
	expect_fail(SASL_OAUTHBEARER,
	            S("n,a=u@exa\0mple.com,\x01"
	              "auth=Bearer t\x01\x01"),
	            "NUL in response");
	expect_fail(SASL_OAUTHBEARER, S(""), "empty response");
}

/* No strict prefix of a valid OAuth response is accepted. */
static void test_oauth_prefixes_rejected(void **state)
{
	char *jwt = make_jwt("{\"email\":\"bob@example.com\"}");
	static const char xo[] = "user=u@example.com\x01"
	                         "auth=Bearer tok\x01\x01";
	struct sasl_exchange ex;
	const char *err;
	char *resp;
	size_t n, i;

	resp = oauthbearer_resp("n,,", "imap.example.com", jwt, &n);
	for (i = 0; i < n; i++) {
		assert_int_equal(start_ir(&ex, SASL_OAUTHBEARER, NULL, resp, i, &err), SASL_FAIL);
		assert_null(ex.creds.raw);
	}
	for (i = 0; i < sizeof(xo) - 1; i++)
		assert_int_equal(start_ir(&ex, SASL_XOAUTH2, NULL, xo, i, &err), SASL_FAIL);
	free(resp);
	free(jwt);
}

/* ---- replay ---- */

static void test_replay_plain(void **state)
{
	struct sasl_exchange ex;
	unsigned char *p;
	char *r;
	size_t n;

	expect_done(&ex, SASL_PLAIN, NULL, S("Ursel\0Kurt\0xipj3plmq"));
	assert_int_equal(sasl_replay_mech(&ex.creds), SASL_PLAIN);
	/* the authzid is dropped: we log in as the user */
	p = replayed(&ex.creds, NULL, &n);
	assert_int_equal(n, 15);
	assert_memory_equal(p, "\0Kurt\0xipj3plmq", 15);
	free(p);
	r = sasl_replay_response(&ex.creds, "Kurt");
	assert_string_equal(r, "AEt1cnQAeGlwajNwbG1x");
	sasl_secret_free(r);
	/* the full address when the destination wants it */
	p = replayed(&ex.creds, "kurt@example.org", &n);
	assert_int_equal(n, 27);
	assert_memory_equal(p, "\0kurt@example.org\0xipj3plmq", 27);
	free(p);
	sasl_exchange_clear(&ex);
}

/* LOGIN goes to the backend as PLAIN, and parses back to the same creds. */
static void test_replay_login_as_plain(void **state)
{
	struct sasl_exchange ex, back;
	const char *ch, *err;
	char *r;

	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, S("Ym9iQGV4YW1wbGUub3Jn"), &ch, &err),
	                 SASL_CONTINUE);
	assert_int_equal(sasl_step(&ex, S("aHVudGVyMg=="), &ch, &err), SASL_DONE);
	assert_int_equal(sasl_replay_mech(&ex.creds), SASL_PLAIN);
	r = sasl_replay_response(&ex.creds, NULL);
	assert_non_null(r);
	assert_int_equal(sasl_start(&back, SASL_PLAIN, NULL, r, strlen(r), &ch, &err), SASL_DONE);
	assert_null(back.creds.authzid);
	assert_string_equal(back.creds.username, "bob@example.org");
	assert_string_equal(back.creds.secret, "hunter2");
	sasl_secret_free(r);
	sasl_exchange_clear(&back);
	sasl_exchange_clear(&ex);
}

static void test_replay_xoauth2(void **state)
{
	static const char resp[] =
	        "user=someuser@example.com\x01"
	        "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
	static const char want[] =
	        "user=someuser@new.example.com\x01"
	        "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
	struct sasl_exchange ex, back;
	const char *ch, *err;
	unsigned char *p;
	char *r;
	size_t n;

	expect_done(&ex, SASL_XOAUTH2, NULL, S(resp));
	assert_int_equal(sasl_replay_mech(&ex.creds), SASL_XOAUTH2);
	/* as sent, byte for byte */
	p = replayed(&ex.creds, NULL, &n);
	assert_int_equal(n, sizeof(resp) - 1);
	assert_memory_equal(p, resp, n);
	free(p);
	p = replayed(&ex.creds, "someuser@example.com", &n);
	assert_memory_equal(p, resp, n);
	free(p);
	/* rebuilt for another name, token untouched */
	p = replayed(&ex.creds, "someuser@new.example.com", &n);
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(p, want, n);
	free(p);
	r = sasl_replay_response(&ex.creds, "someuser@new.example.com");
	assert_int_equal(sasl_start(&back, SASL_XOAUTH2, NULL, r, strlen(r), &ch, &err), SASL_DONE);
	assert_string_equal(back.creds.username, "someuser@new.example.com");
	assert_string_equal(back.creds.secret, ex.creds.secret);
	sasl_secret_free(r);
	sasl_exchange_clear(&back);
	/* a name that would break the framing is refused */
	assert_null(sasl_replay_response(&ex.creds, "evil\x01"
	                                            "auth=Bearer x"));
	assert_null(sasl_replay_response(&ex.creds, ""));
	sasl_exchange_clear(&ex);
}

static void test_replay_oauthbearer(void **state)
{
	char *jwt = make_jwt("{\"email\":\"bob@example.com\"}");
	struct sasl_exchange ex, back;
	const char *ch, *err;
	char *resp, *want, *r;
	unsigned char *p;
	size_t n, wn;

	/* with a=: as sent, or with a= replaced (and escaped) */
	resp = oauthbearer_resp("n,a=user@example.com,", "imap.example.com", jwt, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	p = replayed(&ex.creds, NULL, &wn);
	assert_int_equal(wn, n);
	assert_memory_equal(p, resp, n);
	free(p);
	p = replayed(&ex.creds, "user@example.com", &wn);
	assert_memory_equal(p, resp, n);
	free(p);
	want = oauthbearer_resp("n,a=us=2Cer=3D@new.example.com,", "imap.example.com", jwt, &n);
	p = replayed(&ex.creds, "us,er=@new.example.com", &wn);
	assert_int_equal(wn, n);
	assert_memory_equal(p, want, n);
	free(p);
	free(want);
	r = sasl_replay_response(&ex.creds, "us,er=@new.example.com");
	assert_int_equal(sasl_start(&back, SASL_OAUTHBEARER, NULL, r, strlen(r), &ch, &err),
	                 SASL_DONE);
	assert_string_equal(back.creds.username, "us,er=@new.example.com");
	assert_string_equal(back.creds.secret, jwt);
	sasl_secret_free(r);
	sasl_exchange_clear(&back);
	sasl_exchange_clear(&ex);
	free(resp);

	/* without a=: as sent when the name is the token's, else a= added */
	resp = oauthbearer_resp("n,,", "imap.example.com", jwt, &n);
	expect_done(&ex, SASL_OAUTHBEARER, NULL, resp, n);
	assert_string_equal(ex.creds.username, "bob@example.com");
	p = replayed(&ex.creds, "bob@example.com", &wn);
	assert_int_equal(wn, n);
	assert_memory_equal(p, resp, n);
	free(p);
	want = oauthbearer_resp("n,a=bob@new.example.com,", "imap.example.com", jwt, &n);
	p = replayed(&ex.creds, "bob@new.example.com", &wn);
	assert_int_equal(wn, n);
	assert_memory_equal(p, want, n);
	free(p);
	free(want);
	assert_null(sasl_replay_response(&ex.creds, "a\x01"));
	sasl_exchange_clear(&ex);
	free(resp);
	free(jwt);
}

static void test_replay_refuses(void **state)
{
	struct sasl_creds c;

	memset(&c, 0, sizeof(c));
	assert_null(sasl_replay_response(NULL, "u"));
	assert_null(sasl_replay_response(&c, "u")); /* SASL_NONE */
	c.mech = SASL_PLAIN;
	assert_null(sasl_replay_response(&c, "u")); /* no password */
	assert_null(sasl_replay_response(&c, NULL));
	c.mech = SASL_XOAUTH2;
	assert_null(sasl_replay_response(&c, "u")); /* no raw response */
	c.mech = SASL_OAUTHBEARER;
	assert_null(sasl_replay_response(&c, "u"));
}

/* ---- the exchange itself ---- */

static void test_exchange_misuse(void **state)
{
	struct sasl_exchange ex;
	const char *ch, *err;

	assert_int_equal(sasl_start(&ex, SASL_NONE, NULL, NULL, 0, &ch, &err), SASL_FAIL);
	assert_string_equal(err, "unsupported mechanism");
	assert_int_equal(sasl_start(&ex, (enum sasl_mech)42, NULL, S("="), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "unsupported mechanism");

	/* nothing more is taken after DONE or FAIL */
	expect_done(&ex, SASL_PLAIN, NULL, S("\0tim\0tanstaaftanstaaf"));
	assert_int_equal(sasl_step(&ex, S("AHRpbQB0YW5zdGFhZg=="), &ch, &err), SASL_FAIL);
	assert_string_equal(err, "no authentication in progress");
	assert_null(ex.creds.username);
	assert_int_equal(sasl_step(&ex, S("AHRpbQB0YW5zdGFhZg=="), &ch, &err), SASL_FAIL);
	sasl_exchange_clear(&ex);
	sasl_exchange_clear(&ex);
	assert_int_equal(sasl_step(&ex, S("AHRpbQB0YW5zdGFhZg=="), &ch, &err), SASL_FAIL);
	sasl_exchange_clear(NULL);
	sasl_creds_wipe(NULL);
	sasl_secret_free(NULL);

	/* the out-pointers are optional */
	assert_int_equal(sasl_start(&ex, SASL_LOGIN, NULL, NULL, 0, NULL, NULL), SASL_CONTINUE);
	assert_string_equal(ex.challenge, "VXNlcm5hbWU6");
	assert_int_equal(sasl_step(&ex, S("!"), NULL, NULL), SASL_FAIL);
	sasl_exchange_clear(&ex);
}

/*
 * Deterministic random and mutated responses through every mechanism:
 * nothing may crash or leak (run under valgrind / ASan), and a DONE must
 * always carry a non-empty identifier and secret.
 */
static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* A byte that means something to one of the parsers. */
static unsigned char fuzz_byte(void)
{
	static const char alphabet[] = "\x01\x00,=@aAnyuserth Bearer.";

	return (unsigned char)alphabet[rng() % (sizeof(alphabet) - 1)];
}

static void test_random_inputs(void **state)
{
	char *jwt = make_jwt("{\"email\":\"fuzz@example.com\"}");
	unsigned char seed[512], buf[600];
	struct sasl_exchange ex;
	const char *err;
	size_t sn, i;
	int iter, m;

	sn = (size_t)sprintf((char *)seed,
	                     "n,a=u=2C@example.com,\x01host=h\x01port=1\x01"
	                     "auth=Bearer %s\x01\x01",
	                     jwt);
	for (iter = 0; iter < 20000; iter++) {
		size_t n = rng() % 2 ? sn : rng() % 64;
		enum sasl_status st;

		if (n == sn) {
			memcpy(buf, seed, sn);
			for (i = rng() % 4; i > 0; i--)
				buf[rng() % sn] = fuzz_byte();
			n = rng() % 8 ? sn : rng() % sn;
		} else {
			for (i = 0; i < n; i++)
				buf[i] = rng() % 3 ? fuzz_byte() : (unsigned char)rng();
		}
		for (m = SASL_PLAIN; m <= SASL_OAUTHBEARER; m++) {
			st = start_ir(&ex, (enum sasl_mech)m, NULL, buf, n, &err);
			if (st == SASL_CONTINUE)
				st = step_raw(&ex, buf, n, NULL, &err);
			if (st == SASL_DONE) {
				char *r = sasl_replay_response(&ex.creds, "x@y");

				assert_true(ex.creds.username[0] != '\0');
				assert_true(ex.creds.secret[0] != '\0');
				assert_non_null(r);
				sasl_secret_free(r);
			} else if (st == SASL_FAIL) {
				assert_non_null(err);
				assert_null(ex.creds.username);
			}
			sasl_exchange_clear(&ex);
		}
	}
	free(jwt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_mech_names),
	        cmocka_unit_test(test_plain_rfc4616),
	        cmocka_unit_test(test_plain_malformed),
	        cmocka_unit_test(test_plain_field_bounds),
	        cmocka_unit_test(test_plain_encoding_errors),
	        cmocka_unit_test(test_response_bounds),
	        cmocka_unit_test(test_login_without_initial_response),
	        cmocka_unit_test(test_login_with_initial_response),
	        cmocka_unit_test(test_login_malformed),
	        cmocka_unit_test(test_xoauth2),
	        cmocka_unit_test(test_xoauth2_malformed),
	        cmocka_unit_test(test_oauthbearer_rfc7628),
	        cmocka_unit_test(test_oauthbearer_authzid_wins),
	        cmocka_unit_test(test_oauthbearer_from_jwt),
	        cmocka_unit_test(test_oauthbearer_no_identifier),
	        cmocka_unit_test(test_oauthbearer_authzid_escapes),
	        cmocka_unit_test(test_oauthbearer_authzid_bound),
	        cmocka_unit_test(test_oauthbearer_malformed),
	        cmocka_unit_test(test_oauth_prefixes_rejected),
	        cmocka_unit_test(test_replay_plain),
	        cmocka_unit_test(test_replay_login_as_plain),
	        cmocka_unit_test(test_replay_xoauth2),
	        cmocka_unit_test(test_replay_oauthbearer),
	        cmocka_unit_test(test_replay_refuses),
	        cmocka_unit_test(test_exchange_misuse),
	        cmocka_unit_test(test_random_inputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
