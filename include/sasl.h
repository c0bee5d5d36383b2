/*
 * SASL for the login dialogues (RFC 4422): PLAIN (RFC 4616), LOGIN
 * (draft-murchison-sasl-login), XOAUTH2 (Google's format) and OAUTHBEARER
 * (RFC 7628), plus strict base64 (RFC 4648) and JWT claim extraction.
 *
 * Pure: no I/O. The protocol modules (imap, pop3, smtp, sieve) carry the
 * base64 lines between client and this state machine; it never sees the
 * protocol framing ("+ ", "334 ", quoted strings, the "*" cancel).
 *
 * Secrets (passwords, bearer tokens, the raw client responses) are wiped
 * with OPENSSL_cleanse before their memory is released.
 */
#ifndef MAILSPLICE_SASL_H
#define MAILSPLICE_SASL_H

#include <stdbool.h>
#include <stddef.h>

/* ---- base64 (RFC 4648 section 4, with padding; no whitespace) ---- */

/* Length of the encoding of n bytes, excluding the terminating NUL. */
size_t base64_encoded_len(size_t n);
/* Encode; writes a NUL-terminated string; out must hold
 * base64_encoded_len(n) + 1 bytes. Returns the length written. */
size_t base64_encode(const void *in, size_t n, char *out);
/* Strict decode: rejects characters outside the alphabet, bad padding,
 * non-zero trailing bits and lengths not a multiple of 4. out must hold at
 * least 3 * (n / 4) bytes. Returns the decoded length, or -1. */
long base64_decode(const char *in, size_t n, unsigned char *out);
/* base64url without padding (RFC 4648 section 5), as in JWTs. Returns the
 * decoded length or -1. out must hold at least 3 * (n + 3) / 4 bytes. */
long base64url_decode(const char *in, size_t n, unsigned char *out);
/* base64url without padding; out must hold base64_encoded_len(n) + 1 bytes.
 * Returns the length written (excluding the terminating NUL). */
size_t base64url_encode(const void *in, size_t n, char *out);

/* ---- mechanisms ---- */

enum sasl_mech {
	SASL_NONE = 0,
	SASL_PLAIN,
	SASL_LOGIN,
	SASL_XOAUTH2,
	SASL_OAUTHBEARER,
};

/* Case-insensitive lookup; SASL_NONE if unknown. */
enum sasl_mech sasl_mech_parse(const char *name, size_t len);
/* Upper-case IANA name: "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"; NULL
 * for SASL_NONE or an out-of-range value. */
const char *sasl_mech_name(enum sasl_mech mech);

/* Bounds on one decoded client response, past which the exchange fails with
 * "response too long": PLAIN and LOGIN (whose fields are at most 255 octets
 * each, RFC 4616 section 2) and the OAuth mechanisms (a bearer token plus a
 * few key=value pairs). A protocol module must accept a base64 line of
 * SASL_LINE_MAX characters (plus its own framing) to let the longest in. */
#define SASL_PASSWORD_MAX 1024
#define SASL_OAUTH_MAX    8192
#define SASL_LINE_MAX     (4 * ((SASL_OAUTH_MAX + 2) / 3))

/* What a finished exchange yields. All strings are NUL-terminated and
 * heap-allocated; sasl_creds_wipe() cleanses and frees them. */
struct sasl_creds {
	enum sasl_mech mech;
	char *authzid;  /* PLAIN authzid or OAUTHBEARER gs2 "a=" (may be NULL) */
	char *username; /* the identifier to route on (see below) */
	char *secret;   /* password (PLAIN, LOGIN) or bearer token (OAuth) */
	/* the decoded client response, kept so an OAuth exchange can be
	 * replayed to the backend exactly as the client sent it (NULL for
	 * PLAIN and LOGIN, which are rebuilt from the fields) */
	unsigned char *raw;
	size_t raw_len;
};

void sasl_creds_wipe(struct sasl_creds *creds);

/*
 * The routing identifier:
 *   PLAIN        authcid (never the authzid)
 *   LOGIN        the user name
 *   XOAUTH2      the "user=" field
 *   OAUTHBEARER  the gs2 "a=" authzid or, when absent, the first of the JWT
 *                claims  [jwt_claim (config), email, preferred_username,
 *                upn, unique_name, sub]  whose value contains '@'
 * A credential from which no identifier can be derived is an error.
 */

enum sasl_status {
	SASL_CONTINUE, /* send *challenge (base64, may be "") and wait */
	SASL_DONE,     /* creds filled in */
	SASL_FAIL,     /* malformed client data; *error says what */
};

struct sasl_exchange {
	enum sasl_mech mech;
	int step;
	const char *jwt_claim; /* [oauth] jwt_username_claim, or NULL */
	struct sasl_creds creds;
	char challenge[64]; /* the pending server challenge, base64 */
};

/*
 * Begin an exchange. initial is the base64 initial response (SASL-IR), or
 * NULL when the client sent none; "=" means an empty initial response.
 * Both sasl_start and sasl_step return SASL_CONTINUE with *challenge
 * pointing at the challenge to send (base64, "" for an empty one),
 * SASL_DONE, or SASL_FAIL with *error set to a short static message
 * suitable for the client ("invalid base64", "missing NUL separator", ...).
 * The caller handles the client's "*" cancellation itself.
 * sasl_start overwrites *ex without releasing anything: clear a previous
 * exchange first. After SASL_FAIL the exchange holds nothing; after
 * SASL_DONE ex->creds is filled in until sasl_exchange_clear().
 */
enum sasl_status sasl_start(struct sasl_exchange *ex, enum sasl_mech mech, const char *jwt_claim,
                            const char *initial, size_t initial_len, const char **challenge,
                            const char **error);
enum sasl_status sasl_step(struct sasl_exchange *ex, const char *response, size_t len,
                           const char **challenge, const char **error);
/* Release everything the exchange holds (wipes secrets). */
void sasl_exchange_clear(struct sasl_exchange *ex);

/*
 * Build the client response to replay to a backend for creds, base64
 * encoded, NUL-terminated, into a heap buffer the caller must wipe and free
 * (sasl_secret_free). For PLAIN and LOGIN (a LOGIN exchange is replayed as
 * PLAIN, see sasl_replay_mech): "\0username\0password" with the username
 * given (which may differ from creds->username when the destination wants
 * the full address; the authzid is dropped); for XOAUTH2/OAUTHBEARER:
 * creds->raw as sent, or rebuilt with the new user name ("user=" / gs2
 * "a=") if it differs. username NULL means creds->username. Returns NULL on
 * allocation failure, or when the creds lack what the mechanism needs or
 * the user name cannot be carried by it (empty, or a ^A in an OAuth one).
 */
char *sasl_replay_response(const struct sasl_creds *creds, const char *username);
/* The mechanism to replay creds with: SASL_PLAIN for LOGIN, else creds->mech. */
enum sasl_mech sasl_replay_mech(const struct sasl_creds *creds);
void sasl_secret_free(char *s);

/*
 * JWT: extract the first claim of the list [preferred (may be NULL), email,
 * preferred_username, upn, unique_name, sub] whose string value contains
 * '@'. The signature is not checked: the backend verifies the token.
 * Returns a heap string or NULL.
 */
char *jwt_username(const char *token, size_t len, const char *preferred);

#endif
