/*
 * TLS contexts (see tls.h).
 *
 * Server side: one SSL_CTX per [tls.certificate.*]; the servername callback
 * swaps the context on the SSL to the certificate matching the client's
 * SNI. Names come from the certificates themselves (DNS SANs, or the CN
 * when there are none), so the configuration cannot disagree with them.
 *
 * Client side: one SSL_CTX per destination. A pinned certificate is checked
 * in the verify callback at depth 0, so a wrong pin fails the handshake
 * itself and no byte of the login is ever sent to an impostor.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "ktls13.h"
#include "relay.h"
#include "util.h"

struct tls_server_cert {
	char *id;
	SSL_CTX *ctx;
	char **names; /* lower-case DNS names, "*.example.org" for wildcards */
	size_t n_names;
};

struct tls_server {
	struct tls_server_cert *certs;
	size_t n;
	size_t default_index;
};

static void openssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[160];

	if (e) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err, errlen, "%s: %s", what, buf);
	} else {
		snprintf(err, errlen, "%s", what);
	}
	ERR_clear_error();
}

static bool cipher_named(const SSL_CIPHER *c, const char *name)
{
	const char *std = SSL_CIPHER_standard_name(c);
	return strcasecmp(SSL_CIPHER_get_name(c), name) == 0 || (std && strcasecmp(std, name) == 0);
}

bool tls_cipher_known(const char *name)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	bool found = false;

	if (ssl) {
		STACK_OF(SSL_CIPHER) *all = SSL_get_ciphers(ssl);
		for (int i = 0; i < sk_SSL_CIPHER_num(all) && !found; i++)
			found = cipher_named(sk_SSL_CIPHER_value(all, i), name);
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return found;
}

/* Rebuild the TLS 1.2 cipher list and the TLS 1.3 suites from OpenSSL's
 * defaults minus the disabled ones, so an operator only names what to drop. */
static bool apply_disabled(SSL_CTX *ctx, char *const *disable, size_t n, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ctx);
	char tls12[4096] = "", tls13[1024] = "";
	bool ok = true;

	if (!ssl) {
		openssl_err(err, errlen, "disable_cipher_suites");
		return false;
	}
	STACK_OF(SSL_CIPHER) *all = SSL_get_ciphers(ssl);
	for (int i = 0; i < sk_SSL_CIPHER_num(all); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(all, i);
		bool drop = false;
		for (size_t j = 0; j < n && !drop; j++)
			drop = cipher_named(c, disable[j]);
		if (drop)
			continue;
		bool v13 = strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") == 0;
		char *buf = v13 ? tls13 : tls12;
		size_t cap = v13 ? sizeof(tls13) : sizeof(tls12);
		size_t len = strlen(buf);
		snprintf(buf + len, cap - len, "%s%s", len ? ":" : "", SSL_CIPHER_get_name(c));
	}
	SSL_free(ssl);
	/* an empty TLS 1.2 list is refused by OpenSSL; "!ALL" says none */
	if (SSL_CTX_set_cipher_list(ctx, tls12[0] ? tls12 : "!ALL") != 1 && tls12[0])
		ok = false;
	if (SSL_CTX_set_ciphersuites(ctx, tls13) != 1)
		ok = false;
	if (!ok)
		openssl_err(err, errlen, "disable_cipher_suites");
	ERR_clear_error();
	return ok;
}

static bool apply_protocol_opts(SSL_CTX *ctx, const struct tls_protocol_opts *o, char *err,
                                size_t errlen)
{
	/* IGNORE_UNEXPECTED_EOF: most mail clients close the socket without
	 * a close_notify; that is an end of stream, not an attack to log and
	 * answer with a reset toward the backend (no truncation risk: every
	 * mail protocol frames its own data) */
	SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS | SSL_OP_NO_COMPRESSION |
	                                 SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* an idle session (a client in the login phase, a spliced pair)
	 * keeps no 16 KiB read and write buffers */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* TLS 1.3 receive in the kernel needs the traffic secret and the
	 * record count, which only callbacks see (ktls13.h) */
	if (datapath_caps()->ktls)
		ktls13_watch_ctx(ctx);
	if (!SSL_CTX_set_min_proto_version(ctx,
	                                   o && o->min_version ? o->min_version : TLS1_2_VERSION)) {
		openssl_err(err, errlen, "min_version");
		return false;
	}
	if (o) {
		if (o->n_disable && !apply_disabled(ctx, o->disable, o->n_disable, err, errlen))
			return false;
		if (o->ignore_client_order)
			SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	}
	return true;
}

static void add_name(struct tls_server_cert *c, const char *name, size_t len)
{
	char *n = xstrndup(name, len);
	for (char *p = n; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	c->names = realloc(c->names, (c->n_names + 1) * sizeof(*c->names));
	if (!c->names)
		abort();
	c->names[c->n_names++] = n;
}

static void collect_names(struct tls_server_cert *c, X509 *x)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int dns = 0;

	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
		         (size_t)ASN1_STRING_length(g->d.dNSName));
		dns++;
	}
	GENERAL_NAMES_free(sans);
	if (dns == 0) {
		/* RFC 6125: the CN counts only when there are no DNS SANs */
		char cn[256];
		int len = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
		                                    sizeof(cn));
		if (len > 0)
			add_name(c, cn, (size_t)len);
	}
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *ts = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (!name)
		return SSL_TLSEXT_ERR_NOACK;
	size_t i = tls_server_select(ts, name);
	if (SSL_get_SSL_CTX(ssl) != ts->certs[i].ctx)
		SSL_set_SSL_CTX(ssl, ts->certs[i].ctx);
	return SSL_TLSEXT_ERR_OK;
}

struct tls_server *tls_server_new(const struct tls_cert_spec *certs, size_t n,
                                  const struct tls_protocol_opts *opts, char *err, size_t errlen)
{
	struct tls_server *ts = xcalloc(1, sizeof(*ts));
	char what[512];

	ts->certs = xcalloc(n, sizeof(*ts->certs));
	for (size_t i = 0; i < n; i++) {
		struct tls_server_cert *c = &ts->certs[i];
		c->id = xstrdup(certs[i].id);
		c->ctx = SSL_CTX_new(TLS_server_method());
		ts->n++;
		if (!c->ctx || !apply_protocol_opts(c->ctx, opts, err, errlen))
			goto fail;
		snprintf(what, sizeof(what), "certificate %s", certs[i].cert_file);
		if (SSL_CTX_use_certificate_chain_file(c->ctx, certs[i].cert_file) != 1) {
			openssl_err(err, errlen, what);
			goto fail;
		}
		snprintf(what, sizeof(what), "private key %s", certs[i].key_file);
		if (SSL_CTX_use_PrivateKey_file(c->ctx, certs[i].key_file, SSL_FILETYPE_PEM) != 1) {
			openssl_err(err, errlen, what);
			goto fail;
		}
		if (SSL_CTX_check_private_key(c->ctx) != 1) {
			snprintf(err, errlen, "%s does not match certificate %s", certs[i].key_file,
			         certs[i].cert_file);
			goto fail;
		}
		SSL_CTX_set_tlsext_servername_callback(c->ctx, servername_cb);
		SSL_CTX_set_tlsext_servername_arg(c->ctx, ts);
		/* sessions are resumed with tickets; no server-side cache to
		 * share between worker threads */
		SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
		if (certs[i].n_subjects) {
			for (size_t j = 0; j < certs[i].n_subjects; j++)
				add_name(c, certs[i].subjects[j], strlen(certs[i].subjects[j]));
		} else {
			collect_names(c, SSL_CTX_get0_certificate(c->ctx));
		}
		if (certs[i].is_default)
			ts->default_index = i;
	}
	return ts;
fail:
	tls_server_free(ts);
	return NULL;
}

void tls_server_free(struct tls_server *ts)
{
	if (!ts)
		return;
	for (size_t i = 0; i < ts->n; i++) {
		SSL_CTX_free(ts->certs[i].ctx);
		for (size_t j = 0; j < ts->certs[i].n_names; j++)
			free(ts->certs[i].names[j]);
		free(ts->certs[i].names);
		free(ts->certs[i].id);
	}
	free(ts->certs);
	free(ts);
}

SSL *tls_server_ssl(struct tls_server *ts)
{
	return SSL_new(ts->certs[ts->default_index].ctx);
}

SSL_CTX *tls_server_default_ctx(struct tls_server *ts)
{
	return ts->certs[ts->default_index].ctx;
}

const char *tls_server_cert_id(const struct tls_server *ts, size_t i)
{
	return i < ts->n ? ts->certs[i].id : NULL;
}

static bool find_exact(const struct tls_server *ts, const char *name, size_t *out)
{
	for (size_t i = 0; i < ts->n; i++) {
		for (size_t j = 0; j < ts->certs[i].n_names; j++) {
			if (strcasecmp(ts->certs[i].names[j], name) == 0) {
				*out = i;
				return true;
			}
		}
	}
	return false;
}

size_t tls_server_select(const struct tls_server *ts, const char *name)
{
	const char *parent = strchr(name, '.');
	char wildcard[300];
	size_t i;

	if (find_exact(ts, name, &i))
		return i;
	if (parent && parent[1]) {
		/* a certificate for example.org serves mail.example.org when
		 * nothing more specific exists */
		if (find_exact(ts, parent + 1, &i))
			return i;
		snprintf(wildcard, sizeof(wildcard), "*%s", parent);
		if (find_exact(ts, wildcard, &i))
			return i;
	}
	return ts->default_index;
}

/* ---- client side ---- */

static int pin_index = -1;

struct pin_check {
	uint8_t pin[32];
};

static int verify_pin_cb(int preverify, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct pin_check *pc = SSL_get_ex_data(ssl, pin_index);
	uint8_t digest[32];

	if (!pc)
		return preverify;
	/* with a pin the chain does not matter, only the leaf does */
	if (X509_STORE_CTX_get_error_depth(store) != 0)
		return 1;
	if (!tls_cert_sha256(X509_STORE_CTX_get_current_cert(store), digest) ||
	    !const_time_eq(digest, 32, pc->pin, 32)) {
		X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	return 1;
}

static void free_pin(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	free(ptr);
}

SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *o, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct tls_protocol_opts p = {.min_version = o->min_version};

	if (pin_index < 0)
		pin_index = SSL_get_ex_new_index(0, "pin", NULL, NULL, free_pin);
	if (!ctx || !apply_protocol_opts(ctx, &p, err, errlen))
		goto fail;
	if (o->has_pin) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_pin_cb);
	} else if (o->allow_invalid) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		/* honours SSL_CERT_FILE / SSL_CERT_DIR, like every OpenSSL
		 * client on the host */
		if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			openssl_err(err, errlen, "system CA store");
			goto fail;
		}
	}
	if (o->client_cert) {
		if (SSL_CTX_use_certificate_chain_file(ctx, o->client_cert) != 1) {
			openssl_err(err, errlen, "tls_client_cert");
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, o->client_key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			openssl_err(err, errlen, "tls_client_key");
			goto fail;
		}
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static bool is_ip(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

SSL *tls_client_ssl(SSL_CTX *ctx, const struct tls_client_opts *o)
{
	SSL *ssl = SSL_new(ctx);

	if (!ssl)
		return NULL;
	if (o->server_name && *o->server_name) {
		if (is_ip(o->server_name)) {
			/* RFC 6066: no IP literals in SNI */
			if (!o->allow_invalid && !o->has_pin)
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), o->server_name);
		} else {
			SSL_set_tlsext_host_name(ssl, o->server_name);
			if (!o->allow_invalid && !o->has_pin)
				SSL_set1_host(ssl, o->server_name);
		}
	}
	if (o->has_pin) {
		struct pin_check *pc = malloc(sizeof(*pc));
		if (!pc) {
			SSL_free(ssl);
			return NULL;
		}
		memcpy(pc->pin, o->pin, 32);
		SSL_set_ex_data(ssl, pin_index, pc);
	}
	return ssl;
}

bool tls_parse_pin(const char *s, uint8_t out[32])
{
	size_t n = 0;
	int half = -1;

	for (; *s; s++) {
		if (*s == ':' && half < 0)
			continue;
		int v = hex_digit((unsigned char)*s);
		if (v < 0)
			return false;
		if (half < 0) {
			half = v;
		} else {
			if (n == 32)
				return false;
			out[n++] = (uint8_t)(half << 4 | v);
			half = -1;
		}
	}
	return n == 32 && half < 0;
}

bool tls_cert_sha256(X509 *x, uint8_t out[32])
{
	unsigned int len = 0;
	return x && X509_digest(x, EVP_sha256(), out, &len) == 1 && len == 32;
}

bool tls_ktls_send(SSL *ssl)
{
	return BIO_get_ktls_send(SSL_get_wbio(ssl)) != 0;
}

bool tls_ktls_recv(SSL *ssl)
{
	return BIO_get_ktls_recv(SSL_get_rbio(ssl)) != 0;
}
