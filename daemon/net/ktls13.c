/*
 * TLS 1.3 kernel receive keyed by us (see ktls13.h).
 *
 * What the kernel needs for TLS_RX (Documentation/networking/tls.rst):
 * the key and IV of the peer's current traffic secret and the sequence
 * number of the next record. For TLS 1.3 (RFC 8446 section 7.3):
 *   key = HKDF-Expand-Label(secret, "key", "", key_length)
 *   iv  = HKDF-Expand-Label(secret, "iv", "", 12)
 * and the sequence number restarts at 0 with each traffic secret, so it is
 * the number of records received since the peer's Finished (the first
 * record under application_traffic_secret_0), as long as no KeyUpdate came.
 */
#include "ktls13.h"

#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

#include "util.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* RFC 8446 section 4: handshake message and record content types */
#define MT_FINISHED   20
#define MT_KEY_UPDATE 24

struct rx_state {
	uint8_t secret[EVP_MAX_MD_SIZE]; /* the peer's application_traffic_secret_0 */
	size_t secret_len;
	bool peer_finished; /* records from now on are under that secret */
	bool key_update;    /* the peer moved on to a secret we do not have */
	uint64_t records;   /* records received since the peer's Finished */
};

static int state_index = -1;

static void free_state(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	if (ptr)
		OPENSSL_clear_free(ptr, sizeof(struct rx_state));
}

static struct rx_state *state_of(const SSL *ssl, bool create)
{
	struct rx_state *st = SSL_get_ex_data(ssl, state_index);

	if (!st && create) {
		st = OPENSSL_zalloc(sizeof(*st));
		if (st && !SSL_set_ex_data((SSL *)ssl, state_index, st)) {
			OPENSSL_free(st);
			st = NULL;
		}
	}
	return st;
}

/* "LABEL <client_random> <secret>" (NSS key log format). Only the secret the
 * peer sends with is kept: the client's on a server SSL, the server's on a
 * client SSL. */
static void on_keylog(const SSL *ssl, const char *line)
{
	const char *want =
	        SSL_is_server(ssl) ? "CLIENT_TRAFFIC_SECRET_0 " : "SERVER_TRAFFIC_SECRET_0 ";
	size_t wl = strlen(want);

	if (strncmp(line, want, wl) != 0)
		return;
	const char *hex = strchr(line + wl, ' ');
	if (!hex)
		return;
	hex++;
	size_t hl = strlen(hex);
	if (hl % 2 || hl / 2 > EVP_MAX_MD_SIZE)
		return;
	struct rx_state *st = state_of(ssl, true);
	if (!st)
		return;
	for (size_t i = 0; i < hl / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			OPENSSL_cleanse(st->secret, sizeof(st->secret));
			st->secret_len = 0;
			return;
		}
		st->secret[i] = (uint8_t)(hi << 4 | lo);
	}
	st->secret_len = hl / 2;
}

/* Count records received under the application secret. OpenSSL calls this
 * with SSL3_RT_HEADER once per record it reads, and with SSL3_RT_HANDSHAKE
 * for each handshake message it received. */
static void on_message(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg)
{
	/* not filtered on version: record headers carry the legacy 0x0303 */
	if (write_p)
		return;
	if (content_type == SSL3_RT_HEADER) {
		struct rx_state *st = state_of(ssl, false);
		if (st && st->peer_finished)
			st->records++;
		return;
	}
	if (content_type != SSL3_RT_HANDSHAKE || len < 1)
		return;
	uint8_t type = ((const uint8_t *)buf)[0];
	if (type != MT_FINISHED && type != MT_KEY_UPDATE)
		return;
	struct rx_state *st = state_of(ssl, true);
	if (!st)
		return;
	if (type == MT_FINISHED) {
		st->peer_finished = true;
		st->records = 0;
	} else {
		st->key_update = true;
	}
}

void ktls13_watch_ctx(SSL_CTX *ctx)
{
	if (state_index < 0)
		state_index = SSL_get_ex_new_index(0, "ktls13", NULL, NULL, free_state);
	SSL_CTX_set_keylog_callback(ctx, on_keylog);
	SSL_CTX_set_msg_callback(ctx, on_message);
}

bool ktls13_expand_label(const char *digest, const uint8_t *secret, size_t secret_len,
                         const char *label, uint8_t *out, size_t out_len)
{
	/* struct { uint16 length; opaque label<7..255>; opaque context<0..255>; } */
	uint8_t info[2 + 1 + 255 + 1];
	size_t ll = strlen("tls13 ") + strlen(label);

	if (ll > 255 || out_len > 0xffff)
		return false;
	info[0] = (uint8_t)(out_len >> 8);
	info[1] = (uint8_t)out_len;
	info[2] = (uint8_t)ll;
	memcpy(info + 3, "tls13 ", 6);
	memcpy(info + 9, label, strlen(label));
	info[3 + ll] = 0; /* empty context */

	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
	        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
	        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
	        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
	        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 4 + ll),
	        OSSL_PARAM_construct_end(),
	};
	bool ok = kctx && EVP_KDF_derive(kctx, out, out_len, params) > 0;
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ok;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

bool ktls13_install_rx(SSL *ssl, int fd, char *why, size_t whylen)
{
	struct rx_state *st = state_index >= 0 ? state_of(ssl, false) : NULL;
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	union {
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
		struct tls12_crypto_info_chacha20_poly1305 cc;
	} ci;
	uint8_t key[32], iv[12];
	size_t key_len, ci_len;
	const char *digest;
	unsigned cipher_type;
	bool ok = false;

	if (SSL_version(ssl) != TLS1_3_VERSION) {
		snprintf(why, whylen, "not TLS 1.3");
		return false;
	}
	if (!st || !st->secret_len || !st->peer_finished) {
		snprintf(why, whylen, "the peer's traffic secret was not seen");
		return false;
	}
	if (st->key_update) {
		snprintf(why, whylen, "the peer updated its keys (KeyUpdate)");
		return false;
	}
	if (SSL_has_pending(ssl)) {
		snprintf(why, whylen, "OpenSSL holds unread record bytes");
		return false;
	}
	switch (c ? SSL_CIPHER_get_id(c) : 0) {
	case TLS1_3_CK_AES_128_GCM_SHA256:
		key_len = 16, digest = "SHA256", ci_len = sizeof(ci.g128);
		cipher_type = TLS_CIPHER_AES_GCM_128;
		break;
	case TLS1_3_CK_AES_256_GCM_SHA384:
		key_len = 32, digest = "SHA384", ci_len = sizeof(ci.g256);
		cipher_type = TLS_CIPHER_AES_GCM_256;
		break;
	case TLS1_3_CK_CHACHA20_POLY1305_SHA256:
		key_len = 32, digest = "SHA256", ci_len = sizeof(ci.cc);
		cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		break;
	default:
		snprintf(why, whylen, "cipher %s has no kernel TLS",
		         c ? SSL_CIPHER_get_name(c) : "?");
		return false;
	}
	if (!ktls13_expand_label(digest, st->secret, st->secret_len, "key", key, key_len) ||
	    !ktls13_expand_label(digest, st->secret, st->secret_len, "iv", iv, sizeof(iv))) {
		snprintf(why, whylen, "HKDF-Expand-Label failed");
		goto out;
	}
	memset(&ci, 0, sizeof(ci));
	if (cipher_type == TLS_CIPHER_AES_GCM_128) {
		ci.g128.info.version = TLS_1_3_VERSION;
		ci.g128.info.cipher_type = TLS_CIPHER_AES_GCM_128;
		memcpy(ci.g128.salt, iv, 4);
		memcpy(ci.g128.iv, iv + 4, 8);
		memcpy(ci.g128.key, key, 16);
		put_be64(ci.g128.rec_seq, st->records);
	} else if (cipher_type == TLS_CIPHER_AES_GCM_256) {
		ci.g256.info.version = TLS_1_3_VERSION;
		ci.g256.info.cipher_type = TLS_CIPHER_AES_GCM_256;
		memcpy(ci.g256.salt, iv, 4);
		memcpy(ci.g256.iv, iv + 4, 8);
		memcpy(ci.g256.key, key, 32);
		put_be64(ci.g256.rec_seq, st->records);
	} else {
		ci.cc.info.version = TLS_1_3_VERSION;
		ci.cc.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		memcpy(ci.cc.iv, iv, 12);
		memcpy(ci.cc.key, key, 32);
		put_be64(ci.cc.rec_seq, st->records);
	}
	/* OpenSSL set the ULP already when it took transmit over */
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) != 0 && errno != EEXIST) {
		snprintf(why, whylen, "TCP_ULP tls: %s", strerror(errno));
		goto out;
	}
	if (setsockopt(fd, SOL_TLS, TLS_RX, &ci, (socklen_t)ci_len) != 0) {
		snprintf(why, whylen, "TLS_RX: %s", strerror(errno));
		goto out;
	}
	ok = true;
out:
	OPENSSL_cleanse(&ci, sizeof(ci));
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	if (ok) {
		/* the kernel has it now; nothing here needs it again */
		OPENSSL_cleanse(st->secret, sizeof(st->secret));
		st->secret_len = 0;
	}
	return ok;
}
