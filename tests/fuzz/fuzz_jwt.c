/* libFuzzer: JWT claim extraction for OAUTHBEARER routing (daemon/parse/jwt.c).
 * The first byte picks the preferred claim (none, "", "mail", "email") and
 * whether the rest is the whole token or a JSON payload that is wrapped as
 * header.base64url(payload).signature. Invariants: a result is a non-empty
 * string containing '@' no longer than the token; a token without exactly
 * two dots or over SASL_OAUTH_MAX bytes yields nothing; for a wrapped
 * payload the result is exactly the first of [preferred, email,
 * preferred_username, upn, unique_name, sub] whose value is a string with
 * an '@', as jansson reads the payload (duplicate keys refused). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const preferred_claims[] = {NULL, "", "mail", "email"};
static const char *const default_claims[] = {"email", "preferred_username", "upn", "unique_name",
                                             "sub"};

/* What jwt_username must find in payload, or NULL. */
static char *expected_user(const char *payload, size_t len, const char *preferred)
{
	json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL);
	char *user = NULL;

	if (!json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	for (size_t i = 0; !user && i <= sizeof(default_claims) / sizeof(default_claims[0]); i++) {
		const char *name = i == 0 ? preferred : default_claims[i - 1];
		json_t *v;

		if (!name || !*name)
			continue;
		v = json_object_get(root, name);
		if (json_is_string(v) && strchr(json_string_value(v), '@'))
			user = strdup(json_string_value(v));
	}
	json_decref(root);
	return user;
}

static size_t count_dots(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += s[i] == '.';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char header[] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; /* {"alg":"none",...} */
	static const char sig[] = "c2ln";
	const char *in = (const char *)data + 1, *preferred;
	size_t n, token_len;
	char *token, *user, *want = NULL;
	bool wrap;

	if (size < 1)
		return 0;
	n = size - 1;
	preferred = preferred_claims[data[0] & 3];
	wrap = data[0] & 4;
	if (wrap) {
		token = malloc(sizeof(header) + base64_encoded_len(n) + sizeof(sig) + 1);
		if (!token)
			return 0;
		token_len = sizeof(header) - 1;
		memcpy(token, header, token_len);
		token[token_len++] = '.';
		token_len += base64url_encode(in, n, token + token_len);
		token[token_len++] = '.';
		memcpy(token + token_len, sig, sizeof(sig));
		token_len += sizeof(sig) - 1;
	} else {
		/* an exact-size copy: ASan sees any read past the token */
		token = malloc(n ? n : 1);
		if (!token)
			return 0;
		memcpy(token, in, n);
		token_len = n;
	}
	user = jwt_username(token, token_len, preferred);
	if (user) {
		assert(user[0] && strchr(user, '@') && strlen(user) <= token_len);
		assert(count_dots(token, token_len) == 2 && token_len <= SASL_OAUTH_MAX);
	}
	if (wrap) {
		if (token_len <= SASL_OAUTH_MAX && n > 0)
			want = expected_user(in, n, preferred);
		assert(!want == !user);
		assert(!want || strcmp(want, user) == 0);
	}
	free(want);
	free(user);
	free(token);
	return 0;
}
