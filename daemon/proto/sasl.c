/*
 * The server side of SASL as a proxy needs it: decode and check what the
 * client sends, find the identifier to route on, and rebuild a response for
 * the backend. Nothing here verifies a credential; the backend does.
 *
 * Every decoded response lives in a heap buffer that is cleansed before it
 * is freed, whatever the outcome; the OAuth ones are handed over to
 * creds->raw instead, so the token reaches the backend byte for byte.
 */
#include "sasl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

/* RFC 4616 section 2: authzid, authcid and passwd are 1 to 255 octets. LOGIN
 * fields get the same bound, as they are replayed as PLAIN. */
#define FIELD_MAX 255

#define KVSEP 0x01

/* base64 of "Username:" and "Password:" (draft-murchison-sasl-login) */
#define LOGIN_USER_CHALLENGE "VXNlcm5hbWU6"
#define LOGIN_PASS_CHALLENGE "UGFzc3dvcmQ6"

enum {
	STEP_FINISHED = -1, /* DONE or FAIL: no more input taken */
	STEP_FIRST = 0,     /* the one response, or the LOGIN user name */
	STEP_PASSWORD = 1,  /* LOGIN */
};

static const char *const mech_names[] = {
        [SASL_PLAIN] = "PLAIN",
        [SASL_LOGIN] = "LOGIN",
        [SASL_XOAUTH2] = "XOAUTH2",
        [SASL_OAUTHBEARER] = "OAUTHBEARER",
};

#define N_MECHS (sizeof(mech_names) / sizeof(mech_names[0]))

static const char ENOMEM_MSG[] = "out of memory";

enum sasl_mech sasl_mech_parse(const char *name, size_t len)
{
	size_t m;

	for (m = SASL_PLAIN; m < N_MECHS; m++)
		if (strlen(mech_names[m]) == len && strncasecmp(name, mech_names[m], len) == 0)
			return (enum sasl_mech)m;
	return SASL_NONE;
}

const char *sasl_mech_name(enum sasl_mech mech)
{
	if (mech <= SASL_NONE || (size_t)mech >= N_MECHS)
		return NULL;
	return mech_names[mech];
}

static void wipe_free(void *p, size_t n)
{
	if (p) {
		OPENSSL_cleanse(p, n);
		free(p);
	}
}

static void wipe_str(char *s)
{
	if (s)
		wipe_free(s, strlen(s));
}

void sasl_secret_free(char *s)
{
	wipe_str(s);
}

void sasl_creds_wipe(struct sasl_creds *creds)
{
	if (!creds)
		return;
	wipe_str(creds->authzid);
	wipe_str(creds->username);
	wipe_str(creds->secret);
	wipe_free(creds->raw, creds->raw_len);
	memset(creds, 0, sizeof(*creds));
}

void sasl_exchange_clear(struct sasl_exchange *ex)
{
	if (!ex)
		return;
	sasl_creds_wipe(&ex->creds);
	OPENSSL_cleanse(ex->challenge, sizeof(ex->challenge));
	ex->mech = SASL_NONE;
	ex->step = STEP_FINISHED;
	ex->jwt_claim = NULL;
}

static char *dup_bytes(const unsigned char *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* ---- PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd ---- */

static const char *plain_parse(struct sasl_creds *c, const unsigned char *p, size_t n)
{
	const unsigned char *end = p + n, *nul1, *nul2;
	size_t zlen, clen, plen;

	if (n == 0)
		return "empty response";
	nul1 = memchr(p, 0, n);
	if (!nul1)
		return "missing NUL separator";
	nul2 = memchr(nul1 + 1, 0, (size_t)(end - nul1 - 1));
	if (!nul2)
		return "missing NUL separator";
	if (memchr(nul2 + 1, 0, (size_t)(end - nul2 - 1)))
		return "too many NUL separators";
	zlen = (size_t)(nul1 - p);
	clen = (size_t)(nul2 - nul1 - 1);
	plen = (size_t)(end - nul2 - 1);
	if (clen == 0)
		return "empty user name";
	if (plen == 0)
		return "empty password";
	if (zlen > FIELD_MAX)
		return "authorization identity too long";
	if (clen > FIELD_MAX)
		return "user name too long";
	if (plen > FIELD_MAX)
		return "password too long";
	if (zlen > 0 && !(c->authzid = dup_bytes(p, zlen)))
		return ENOMEM_MSG;
	if (!(c->username = dup_bytes(nul1 + 1, clen)) || !(c->secret = dup_bytes(nul2 + 1, plen)))
		return ENOMEM_MSG;
	return NULL;
}

/* ---- LOGIN: the user name, then the password, each a whole response ---- */

static const char *login_field(const unsigned char *p, size_t n, int password, char **out)
{
	if (n == 0)
		return password ? "empty password" : "empty user name";
	if (memchr(p, 0, n))
		return password ? "NUL in password" : "NUL in user name";
	if (n > FIELD_MAX)
		return password ? "password too long" : "user name too long";
	if (!(*out = dup_bytes(p, n)))
		return ENOMEM_MSG;
	return NULL;
}

/* ---- the OAuth mechanisms: key=value pairs separated by ^A ---- */

struct kv_fields {
	int has_user, has_auth;
	size_t user_at, user_len;
	size_t auth_at, auth_len;
};

static int is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* RFC 7628 section 3.1: key = 1*ALPHA, value = *(VCHAR / SP / HTAB / CR / LF) */
static int rfc7628_pair_ok(const unsigned char *key, size_t klen, const unsigned char *val,
                           size_t vlen)
{
	size_t i;

	for (i = 0; i < klen; i++)
		if (!is_alpha(key[i]))
			return 0;
	for (i = 0; i < vlen; i++) {
		unsigned char c = val[i];

		if (!((c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t' || c == '\r' || c == '\n'))
			return 0;
	}
	return 1;
}

/*
 * Scan "key=value^A" pairs from p[at] to the end, which must be the one
 * extra ^A that closes the list. XOAUTH2 has no grammar beyond that;
 * OAUTHBEARER (rfc7628) has. Unknown keys (host, port, ...) are allowed
 * and stay in the raw response.
 */
static const char *scan_pairs(const unsigned char *p, size_t n, size_t at, int rfc7628,
                              struct kv_fields *f)
{
	memset(f, 0, sizeof(*f));
	for (;;) {
		const unsigned char *sep, *eq;
		size_t klen, vat, vlen;

		if (at >= n)
			return "unterminated response";
		if (p[at] == KVSEP)
			return at + 1 == n ? NULL : "data after the end of the response";
		sep = memchr(p + at, KVSEP, n - at);
		if (!sep)
			return "unterminated response";
		eq = memchr(p + at, '=', (size_t)(sep - (p + at)));
		if (!eq || eq == p + at)
			return "malformed key=value pair";
		klen = (size_t)(eq - (p + at));
		vat = (size_t)(eq + 1 - p);
		vlen = (size_t)(sep - eq - 1);
		if (rfc7628 && !rfc7628_pair_ok(p + at, klen, p + vat, vlen))
			return "malformed key=value pair";
		if (klen == 4 && memcmp(p + at, "user", 4) == 0) {
			if (f->has_user)
				return "duplicate user=";
			f->has_user = 1;
			f->user_at = vat;
			f->user_len = vlen;
		} else if (klen == 4 && memcmp(p + at, "auth", 4) == 0) {
			if (f->has_auth)
				return "duplicate auth=";
			f->has_auth = 1;
			f->auth_at = vat;
			f->auth_len = vlen;
		}
		at = (size_t)(sep - p) + 1;
	}
}

/*
 * auth=Bearer <token>: the scheme is case-insensitive (RFC 6750 via RFC
 * 7235). The token is checked only for what no token can contain, so that
 * whatever the identity provider issued reaches the backend untouched.
 */
static const char *bearer_token(const unsigned char *v, size_t n, size_t *tok_at, size_t *tok_len)
{
	size_t i = 6, j;

	if (n < 7 || strncasecmp((const char *)v, "Bearer", 6) != 0 || v[6] != ' ')
		return "auth= is not a Bearer token";
	while (i < n && v[i] == ' ')
		i++;
	if (i == n)
		return "empty bearer token";
	for (j = i; j < n; j++)
		if (v[j] <= 0x20 || v[j] >= 0x7f)
			return "invalid character in bearer token";
	*tok_at = i;
	*tok_len = n - i;
	return NULL;
}

static const char *xoauth2_parse(struct sasl_creds *c, const unsigned char *p, size_t n)
{
	struct kv_fields f;
	size_t tat, tlen;
	const char *err;

	if (n == 0)
		return "empty response";
	if (memchr(p, 0, n))
		return "NUL in response";
	if ((err = scan_pairs(p, n, 0, 0, &f)))
		return err;
	if (!f.has_user)
		return "missing user=";
	if (f.user_len == 0)
		return "empty user name";
	if (f.user_len > FIELD_MAX)
		return "user name too long";
	if (!f.has_auth)
		return "missing auth=";
	if ((err = bearer_token(p + f.auth_at, f.auth_len, &tat, &tlen)))
		return err;
	if (!(c->username = dup_bytes(p + f.user_at, f.user_len)) ||
	    !(c->secret = dup_bytes(p + f.auth_at + tat, tlen)))
		return ENOMEM_MSG;
	return NULL;
}

/* Where the gs2 header (RFC 5801) of an OAUTHBEARER response puts things. */
struct gs2_header {
	int has_authzid;
	size_t authzid_at, authzid_len; /* escaped saslname after "a=" */
	size_t kvsep_at;                /* the ^A that follows the header */
};

/*
 * gs2-header = gs2-cb-flag "," [ "a=" saslname ] ","; RFC 7628 allows no
 * channel binding ("p=") and we take no non-standard "F," prefix either.
 * saslname cannot hold a raw ',' (it is escaped as =2C), so the first ','
 * after "a=" closes it.
 */
static const char *scan_gs2(const unsigned char *p, size_t n, struct gs2_header *g)
{
	size_t i = 2;

	memset(g, 0, sizeof(*g));
	if (n >= 1 && p[0] == 'p')
		return "channel binding not supported";
	if (n < 2 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',')
		return "malformed gs2 header";
	if (n - i >= 2 && p[i] == 'a' && p[i + 1] == '=') {
		i += 2;
		g->authzid_at = i;
		while (i < n && p[i] != ',')
			i++;
		if (i == n)
			return "malformed gs2 header";
		g->authzid_len = i - g->authzid_at;
		if (g->authzid_len == 0)
			return "empty authorization identity";
		g->has_authzid = 1;
	}
	if (i >= n || p[i] != ',')
		return "malformed gs2 header";
	i++;
	if (i >= n || p[i] != KVSEP)
		return "malformed gs2 header";
	g->kvsep_at = i;
	return NULL;
}

/* saslname (RFC 5801): ',' and '=' travel as "=2C" and "=3D". */
static const char *saslname_decode(const unsigned char *p, size_t n, char **out)
{
	size_t i, o = 0;
	char *s;

	if (!(s = malloc(n + 1)))
		return ENOMEM_MSG;
	for (i = 0; i < n; i++) {
		if (p[i] != '=') {
			s[o++] = (char)p[i];
		} else if (n - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C') {
			s[o++] = ',';
			i += 2;
		} else if (n - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D') {
			s[o++] = '=';
			i += 2;
		} else {
			wipe_free(s, n + 1);
			return "invalid escape in authorization identity";
		}
	}
	s[o] = '\0';
	if (o > FIELD_MAX) {
		wipe_free(s, n + 1);
		return "authorization identity too long";
	}
	*out = s;
	return NULL;
}

static const char *oauthbearer_parse(struct sasl_creds *c, const unsigned char *p, size_t n,
                                     const char *jwt_claim)
{
	struct gs2_header g;
	struct kv_fields f;
	size_t tat, tlen;
	const char *err;

	if (n == 0)
		return "empty response";
	if (memchr(p, 0, n))
		return "NUL in response";
	if ((err = scan_gs2(p, n, &g)))
		return err;
	if ((err = scan_pairs(p, n, g.kvsep_at + 1, 1, &f)))
		return err;
	if (!f.has_auth)
		return "missing auth=";
	if ((err = bearer_token(p + f.auth_at, f.auth_len, &tat, &tlen)))
		return err;
	if (g.has_authzid) {
		if ((err = saslname_decode(p + g.authzid_at, g.authzid_len, &c->authzid)))
			return err;
		if (!(c->username =
		              dup_bytes((const unsigned char *)c->authzid, strlen(c->authzid))))
			return ENOMEM_MSG;
	} else {
		c->username = jwt_username((const char *)p + f.auth_at + tat, tlen, jwt_claim);
		if (!c->username)
			return "no user name in OAUTHBEARER token";
	}
	if (!(c->secret = dup_bytes(p + f.auth_at + tat, tlen)))
		return ENOMEM_MSG;
	return NULL;
}

/* ---- the exchange ---- */

static void set_out(const char **dst, const char *v)
{
	if (dst)
		*dst = v;
}

static enum sasl_status cont(struct sasl_exchange *ex, const char *challenge,
                             const char **challenge_out, const char **error)
{
	size_t n = strlen(challenge);

	memcpy(ex->challenge, challenge, n + 1);
	set_out(challenge_out, ex->challenge);
	set_out(error, NULL);
	return SASL_CONTINUE;
}

static enum sasl_status fail(struct sasl_exchange *ex, const char *why, const char **challenge,
                             const char **error)
{
	sasl_creds_wipe(&ex->creds);
	OPENSSL_cleanse(ex->challenge, sizeof(ex->challenge));
	ex->step = STEP_FINISHED;
	set_out(challenge, NULL);
	set_out(error, why);
	return SASL_FAIL;
}

static size_t response_max(enum sasl_mech mech)
{
	return mech == SASL_XOAUTH2 || mech == SASL_OAUTHBEARER ? SASL_OAUTH_MAX
	                                                        : SASL_PASSWORD_MAX;
}

/* Decode and act on one client response (base64, len characters). */
static enum sasl_status respond(struct sasl_exchange *ex, const char *b64, size_t len,
                                const char **challenge, const char **error)
{
	size_t max = response_max(ex->mech), n;
	const char *err = NULL;
	unsigned char *buf;
	int keep = 0;
	long r;

	/* refuse before allocating what a client asks for */
	if (len > base64_encoded_len(max))
		return fail(ex, "response too long", challenge, error);
	if (!(buf = malloc(len / 4 * 3 + 1)))
		return fail(ex, ENOMEM_MSG, challenge, error);
	if ((r = base64_decode(b64, len, buf)) < 0) {
		free(buf); /* base64_decode cleansed what it wrote */
		return fail(ex, "invalid base64", challenge, error);
	}
	n = (size_t)r;
	buf[n] = '\0';
	if (n > max) {
		err = "response too long";
	} else if (ex->mech == SASL_PLAIN) {
		err = plain_parse(&ex->creds, buf, n);
	} else if (ex->mech == SASL_LOGIN && ex->step == STEP_FIRST) {
		err = login_field(buf, n, 0, &ex->creds.username);
		if (!err) {
			wipe_free(buf, n + 1);
			ex->step = STEP_PASSWORD;
			return cont(ex, LOGIN_PASS_CHALLENGE, challenge, error);
		}
	} else if (ex->mech == SASL_LOGIN) {
		err = login_field(buf, n, 1, &ex->creds.secret);
	} else if (ex->mech == SASL_XOAUTH2) {
		err = xoauth2_parse(&ex->creds, buf, n);
		keep = !err;
	} else {
		err = oauthbearer_parse(&ex->creds, buf, n, ex->jwt_claim);
		keep = !err;
	}
	if (keep) {
		ex->creds.raw = buf;
		ex->creds.raw_len = n;
	} else {
		wipe_free(buf, n + 1);
	}
	if (err)
		return fail(ex, err, challenge, error);
	ex->creds.mech = ex->mech;
	ex->step = STEP_FINISHED;
	OPENSSL_cleanse(ex->challenge, sizeof(ex->challenge));
	set_out(challenge, NULL);
	set_out(error, NULL);
	return SASL_DONE;
}

enum sasl_status sasl_start(struct sasl_exchange *ex, enum sasl_mech mech, const char *jwt_claim,
                            const char *initial, size_t initial_len, const char **challenge,
                            const char **error)
{
	memset(ex, 0, sizeof(*ex));
	ex->mech = mech;
	ex->jwt_claim = jwt_claim;
	ex->step = STEP_FIRST;
	if (!sasl_mech_name(mech))
		return fail(ex, "unsupported mechanism", challenge, error);
	if (!initial)
		return cont(ex, mech == SASL_LOGIN ? LOGIN_USER_CHALLENGE : "", challenge, error);
	/* RFC 4959 / RFC 4954: "=" stands for an empty initial response */
	if (initial_len == 1 && initial[0] == '=')
		initial_len = 0;
	return respond(ex, initial, initial_len, challenge, error);
}

enum sasl_status sasl_step(struct sasl_exchange *ex, const char *response, size_t len,
                           const char **challenge, const char **error)
{
	if (ex->step == STEP_FINISHED || !sasl_mech_name(ex->mech))
		return fail(ex, "no authentication in progress", challenge, error);
	return respond(ex, response, len, challenge, error);
}

/* ---- replay ---- */

/* base64 of head + mid + tail, with the assembled plaintext cleansed. */
static char *encode3(const void *head, size_t hlen, const void *mid, size_t mlen, const void *tail,
                     size_t tlen)
{
	size_t n = hlen + mlen + tlen;
	unsigned char *buf;
	char *out;

	if (!(buf = malloc(n ? n : 1)))
		return NULL;
	memcpy(buf, head, hlen);
	memcpy(buf + hlen, mid, mlen);
	memcpy(buf + hlen + mlen, tail, tlen);
	if ((out = malloc(base64_encoded_len(n) + 1)))
		base64_encode(buf, n, out);
	wipe_free(buf, n);
	return out;
}

static char *replay_plain(const struct sasl_creds *creds, const char *user)
{
	size_t ulen = strlen(user);
	char *head, *out;

	if (!creds->secret)
		return NULL;
	/* "\0" user "\0", then the password */
	if (!(head = malloc(ulen + 2)))
		return NULL;
	head[0] = '\0';
	memcpy(head + 1, user, ulen);
	head[ulen + 1] = '\0';
	out = encode3(head, ulen + 2, creds->secret, strlen(creds->secret), "", 0);
	wipe_free(head, ulen + 2);
	return out;
}

/* "a=" + saslname-escaped user, for a gs2 header. */
static char *saslname_encode(const char *user, size_t *len)
{
	size_t i, o = 0, n = strlen(user);
	char *s = malloc(2 + 3 * n + 1);

	if (!s)
		return NULL;
	s[o++] = 'a';
	s[o++] = '=';
	for (i = 0; i < n; i++) {
		if (user[i] == ',') {
			memcpy(s + o, "=2C", 3);
			o += 3;
		} else if (user[i] == '=') {
			memcpy(s + o, "=3D", 3);
			o += 3;
		} else {
			s[o++] = user[i];
		}
	}
	s[o] = '\0';
	*len = o;
	return s;
}

static char *replay_oauth(const struct sasl_creds *creds, const char *user)
{
	const unsigned char *raw = creds->raw;
	size_t n = creds->raw_len;
	struct gs2_header g;
	struct kv_fields f;
	size_t alen;
	char *a, *out;

	if (!raw)
		return NULL;
	if (creds->username && strcmp(user, creds->username) == 0)
		return encode3(raw, n, "", 0, "", 0);
	if (strchr(user, KVSEP))
		return NULL;
	if (creds->mech == SASL_XOAUTH2) {
		if (scan_pairs(raw, n, 0, 0, &f) || !f.has_user)
			return NULL;
		return encode3(raw, f.user_at, user, strlen(user), raw + f.user_at + f.user_len,
		               n - f.user_at - f.user_len);
	}
	if (scan_gs2(raw, n, &g))
		return NULL;
	if (!(a = saslname_encode(user, &alen)))
		return NULL;
	if (g.has_authzid) /* replace "a=..." */
		out = encode3(raw, g.authzid_at - 2, a, alen, raw + g.authzid_at + g.authzid_len,
		              n - g.authzid_at - g.authzid_len);
	else /* "n," + "a=..." + ",^A..." */
		out = encode3(raw, 2, a, alen, raw + 2, n - 2);
	wipe_free(a, alen + 1);
	return out;
}

char *sasl_replay_response(const struct sasl_creds *creds, const char *username)
{
	const char *user;

	if (!creds)
		return NULL;
	user = username ? username : creds->username;
	if (!user || !*user)
		return NULL;
	switch (creds->mech) {
	case SASL_PLAIN:
	case SASL_LOGIN:
		return replay_plain(creds, user);
	case SASL_XOAUTH2:
	case SASL_OAUTHBEARER:
		return replay_oauth(creds, user);
	default:
		return NULL;
	}
}

enum sasl_mech sasl_replay_mech(const struct sasl_creds *creds)
{
	return creds->mech == SASL_LOGIN ? SASL_PLAIN : creds->mech;
}
