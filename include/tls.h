/*
 * TLS contexts: the certificates we present to clients (selected by SNI)
 * and the contexts we use towards backends (verified against the system CAs
 * and tls_server_name, or pinned by SHA-256 of the leaf, or not verified).
 * SSL_OP_ENABLE_KTLS is set on every context: where the kernel has kTLS,
 * OpenSSL installs the keys and the data path can splice.
 */
#ifndef MAILSPLICE_TLS_H
#define MAILSPLICE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct tls_protocol_opts {
	int min_version;          /* TLS1_2_VERSION or TLS1_3_VERSION */
	bool ignore_client_order; /* prefer our cipher order */
	char *const *disable;     /* cipher suites not offered (IANA or OpenSSL names) */
	size_t n_disable;
};

struct tls_cert_spec {
	const char *id; /* [tls.certificate.<id>] */
	const char *cert_file, *key_file;
	char *const *subjects; /* SNI names it serves; none: the certificate's names */
	size_t n_subjects;
	bool is_default;
};

/* Whether this OpenSSL knows a cipher suite by its IANA or OpenSSL name. */
bool tls_cipher_known(const char *name);

struct tls_server;

/* Load every certificate; err gets "cert FILE: reason" on failure. */
struct tls_server *tls_server_new(const struct tls_cert_spec *certs, size_t n,
                                  const struct tls_protocol_opts *opts, char *err, size_t errlen);
void tls_server_free(struct tls_server *ts);
/* A new server-side SSL whose certificate follows the client's SNI. */
SSL *tls_server_ssl(struct tls_server *ts);
/* The context (for evhttp/bufferevent_openssl users such as the admin API). */
SSL_CTX *tls_server_default_ctx(struct tls_server *ts);

/* SNI selection, exposed for tests: the index of the certificate for name
 * (exact name, then parent domain, then wildcard, then the default). */
size_t tls_server_select(const struct tls_server *ts, const char *name);
const char *tls_server_cert_id(const struct tls_server *ts, size_t i);

struct tls_client_opts {
	const char *server_name; /* SNI and the name to verify; may be an IP */
	bool allow_invalid;      /* no verification at all */
	bool has_pin;
	uint8_t pin[32]; /* SHA-256 of the leaf certificate's DER */
	const char *client_cert, *client_key;
	int min_version;
};

/* A context for one destination. */
SSL_CTX *tls_client_ctx_new(const struct tls_client_opts *opts, char *err, size_t errlen);
/* A new client-side SSL: SNI set (unless the name is an IP address) and
 * the name or pin checked during the handshake. */
SSL *tls_client_ssl(SSL_CTX *ctx, const struct tls_client_opts *opts);

/* Parse "aa:bb:..." or "aabb..." (64 hex digits) into 32 bytes. */
bool tls_parse_pin(const char *s, uint8_t out[32]);
/* SHA-256 of a certificate's DER. */
bool tls_cert_sha256(X509 *x, uint8_t out[32]);

/* kTLS state of an established SSL (after the handshake). */
bool tls_ktls_send(SSL *ssl);
bool tls_ktls_recv(SSL *ssl);

#endif
