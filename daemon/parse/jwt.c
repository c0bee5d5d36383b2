/*
 * The routing identifier inside an OAuth bearer token that is a JWT (RFC
 * 7519, JWS compact form). Only the payload is read, and only to choose a
 * backend: the signature is not checked here, the backend checks it, so a
 * forged token can at worst reach a backend that then refuses it.
 */
#include "sasl.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

/* A token longer than the largest OAuth response cannot have come from one. */
#define JWT_MAX SASL_OAUTH_MAX

static const char *const default_claims[] = {
        "email", "preferred_username", "upn", "unique_name", "sub",
};

/* The claim's value if it is a string that looks like an address. */
static const char *claim_address(json_t *payload, const char *name)
{
	json_t *v = json_object_get(payload, name);
	const char *s;

	if (!json_is_string(v))
		return NULL;
	s = json_string_value(v);
	/* jansson refuses \u0000 in strings without JSON_ALLOW_NUL, so s is
	 * the whole value */
	return strchr(s, '@') ? s : NULL;
}

char *jwt_username(const char *token, size_t len, const char *preferred)
{
	const char *dot1, *dot2, *found = NULL;
	unsigned char *buf;
	json_t *payload;
	size_t plen, i;
	char *user = NULL;
	long n;

	if (!token || len == 0 || len > JWT_MAX)
		return NULL;
	/* header.payload.signature: exactly three parts (five would be an
	 * encrypted JWE, whose payload we cannot read) */
	if (!(dot1 = memchr(token, '.', len)))
		return NULL;
	if (!(dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))))
		return NULL;
	if (memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
		return NULL;
	plen = (size_t)(dot2 - dot1 - 1);
	if (plen == 0)
		return NULL;
	if (!(buf = malloc(3 * (plen + 3) / 4)))
		return NULL;
	n = base64url_decode(dot1 + 1, plen, buf);
	if (n <= 0) {
		free(buf); /* base64url_decode cleansed what it wrote */
		return NULL;
	}
	/* duplicate claims are refused: a token whose "email" means one thing
	 * to us and another to the backend must not route at all */
	payload = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
	OPENSSL_cleanse(buf, (size_t)n);
	free(buf);
	if (!json_is_object(payload)) {
		json_decref(payload);
		return NULL;
	}
	if (preferred && *preferred)
		found = claim_address(payload, preferred);
	for (i = 0; !found && i < sizeof(default_claims) / sizeof(default_claims[0]); i++)
		found = claim_address(payload, default_claims[i]);
	if (found)
		user = strdup(found);
	json_decref(payload);
	return user;
}
