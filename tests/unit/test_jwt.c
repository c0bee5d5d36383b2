/* The routing identifier in a JWT bearer token. */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

#define HEADER "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"

/* header.payload.signature with a signature nobody checks here */
static char *make_jwt(const char *payload)
{
	size_t hlen = strlen(HEADER), plen = strlen(payload);
	char *t = malloc(base64_encoded_len(hlen) + base64_encoded_len(plen) + 64);
	size_t o;

	assert_non_null(t);
	o = base64url_encode(HEADER, hlen, t);
	t[o++] = '.';
	o += base64url_encode(payload, plen, t + o);
	strcpy(t + o, ".c2lnbmF0dXJlLW5vdC1jaGVja2Vk");
	return t;
}

static char *user_of(const char *payload, const char *preferred)
{
	char *t = make_jwt(payload), *u = jwt_username(t, strlen(t), preferred);

	free(t);
	return u;
}

static void expect_user(const char *payload, const char *preferred, const char *want)
{
	char *u = user_of(payload, preferred);

	if (want) {
		assert_non_null(u);
		assert_string_equal(u, want);
	} else {
		assert_null(u);
	}
	free(u);
}

/* Entra ID (Outlook) access token: upn, unique_name, no email. */
static void test_entra_token(void **state)
{
	expect_user("{\"aud\":\"https://outlook.office.com\",\"iss\":\"https://sts.windows.net/"
	            "72f988bf/\",\"name\":\"Alice Example\",\"oid\":\"3f0b\",\"scp\":\"IMAP."
	            "AccessAsUser.All SMTP.Send\",\"sub\":\"kD1hZ5\",\"tid\":\"72f988bf\","
	            "\"unique_name\":\"alice@contoso.com\",\"upn\":\"alice@contoso.com\"}",
	            NULL, "alice@contoso.com");
}

/* An OpenID Connect style token (Keycloak, Thunderbird's providers). */
static void test_email_claim(void **state)
{
	expect_user("{\"sub\":\"248289761001\",\"email\":\"bob@example.com\","
	            "\"email_verified\":true,\"preferred_username\":\"bob\"}",
	            NULL, "bob@example.com");
}

static void test_preferred_username_claim(void **state)
{
	expect_user("{\"sub\":\"f4c1\",\"preferred_username\":\"carol@example.org\"}", NULL,
	            "carol@example.org");
}

static void test_claim_order(void **state)
{
	const char *p = "{\"sub\":\"s@sub.example\",\"unique_name\":\"u@un.example\","
	                "\"upn\":\"u@upn.example\",\"preferred_username\":\"p@pu.example\","
	                "\"email\":\"e@email.example\",\"mail\":\"m@mail.example\"}";

	expect_user(p, NULL, "e@email.example");
	expect_user(p, "", "e@email.example");
	expect_user(p, "mail", "m@mail.example");
	expect_user(p, "upn", "u@upn.example");
	expect_user(p, "sub", "s@sub.example");
	expect_user("{\"sub\":\"s@sub.example\",\"unique_name\":\"u@un.example\"}", NULL,
	            "u@un.example");
	expect_user("{\"sub\":\"s@sub.example\"}", NULL, "s@sub.example");
}

/* A claim that is not an address string is passed over, not an error. */
static void test_skips_unusable_claims(void **state)
{
	expect_user("{\"email\":\"not-an-address\",\"upn\":\"dave@example.net\"}", NULL,
	            "dave@example.net");
	expect_user("{\"email\":42,\"preferred_username\":[\"x@y\"],\"upn\":{\"a\":\"b@c\"},"
	            "\"unique_name\":null,\"sub\":\"eve@example.net\"}",
	            NULL, "eve@example.net");
	expect_user("{\"mail\":\"nope\",\"email\":\"frank@example.net\"}", "mail",
	            "frank@example.net");
	expect_user("{\"sub\":\"1234567890\",\"name\":\"No Address\"}", NULL, NULL);
	expect_user("{}", NULL, NULL);
}

static void test_unicode_claim(void **state)
{
	expect_user("{\"email\":\"j\\u00fcrgen@b\\u00fccher.example\"}", NULL,
	            "j\xc3\xbcrgen@b\xc3\xbc"
	            "cher.example");
	/* an escaped NUL would cut the name short: the payload is refused */
	expect_user("{\"email\":\"a@b\\u0000.evil\"}", NULL, NULL);
}

static void test_rejects_bad_payloads(void **state)
{
	expect_user("[\"a@b\"]", NULL, NULL);          /* not an object */
	expect_user("\"a@b\"", NULL, NULL);            /* not an object */
	expect_user("{\"email\":\"a@b\"", NULL, NULL); /* truncated */
	expect_user("email=a@b", NULL, NULL);          /* not JSON */
	/* two values for one claim: we and the backend might read different ones */
	expect_user("{\"email\":\"a@b.example\",\"email\":\"c@d.example\"}", NULL, NULL);
	expect_user("{\"email\":\"a@b.example\"} trailing", NULL, NULL);
}

static void test_rejects_bad_structure(void **state)
{
	char *good = make_jwt("{\"email\":\"a@b.example\"}");
	char *dot1 = strchr(good, '.'), *dot2 = strchr(dot1 + 1, '.');
	char buf[512];
	char *u;

	u = jwt_username(good, strlen(good), NULL);
	assert_string_equal(u, "a@b.example");
	free(u);
	/* the length given is honoured: cut before the signature's dot */
	assert_null(jwt_username(good, (size_t)(dot2 - good), NULL));
	/* signature may be empty (alg "none"); we do not judge it */
	snprintf(buf, sizeof(buf), "%.*s.", (int)(dot2 - good), good);
	u = jwt_username(buf, strlen(buf), NULL);
	assert_string_equal(u, "a@b.example");
	free(u);
	/* header.payload only */
	snprintf(buf, sizeof(buf), "%.*s", (int)(dot2 - good), good);
	assert_null(jwt_username(buf, strlen(buf), NULL));
	/* five parts: an encrypted JWE */
	snprintf(buf, sizeof(buf), "%s.iv.tag", good);
	assert_null(jwt_username(buf, strlen(buf), NULL));
	/* empty payload */
	snprintf(buf, sizeof(buf), "%.*s..sig", (int)(dot1 - good), good);
	assert_null(jwt_username(buf, strlen(buf), NULL));
	/* the same payload correctly padded, or with standard-alphabet characters */
	snprintf(buf, sizeof(buf), "h.%s.s", "eyJlbWFpbCI6ImFAYi5leGFtcGxlIn0");
	u = jwt_username(buf, strlen(buf), NULL);
	assert_string_equal(u, "a@b.example");
	free(u);
	snprintf(buf, sizeof(buf), "h.%s=.s", "eyJlbWFpbCI6ImFAYi5leGFtcGxlIn0");
	assert_null(jwt_username(buf, strlen(buf), NULL));
	assert_null(jwt_username("h.e+/.s", 7, NULL));
	/* not a JWT at all: a Google access token */
	assert_null(jwt_username("ya29.a0AfH6SMBx3mQ", 18, NULL));
	assert_null(jwt_username("", 0, NULL));
	assert_null(jwt_username(NULL, 0, NULL));
	free(good);
}

/* Bounded: a token longer than any OAuth response is not even decoded. */
static void test_rejects_oversized(void **state)
{
	size_t pad = SASL_OAUTH_MAX, n;
	char *payload = malloc(pad + 64), *t;

	assert_non_null(payload);
	n = (size_t)sprintf(payload, "{\"email\":\"a@b.example\",\"x\":\"");
	memset(payload + n, 'x', pad);
	strcpy(payload + n + pad, "\"}");
	t = make_jwt(payload);
	assert_true(strlen(t) > SASL_OAUTH_MAX);
	assert_null(jwt_username(t, strlen(t), NULL));
	free(t);
	free(payload);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_entra_token),
	        cmocka_unit_test(test_email_claim),
	        cmocka_unit_test(test_preferred_username_claim),
	        cmocka_unit_test(test_claim_order),
	        cmocka_unit_test(test_skips_unusable_claims),
	        cmocka_unit_test(test_unicode_claim),
	        cmocka_unit_test(test_rejects_bad_payloads),
	        cmocka_unit_test(test_rejects_bad_structure),
	        cmocka_unit_test(test_rejects_oversized),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
