/*
 * Kernel TLS receive for TLS 1.3, keyed by us.
 *
 * OpenSSL 3.0 hands TLS 1.3 transmit to the kernel but keeps receive in
 * user space. Everything the kernel needs to take receive over is known at
 * the hand-over, though: the peer's application traffic secret (OpenSSL's
 * key-log callback), the record number (records counted since the peer's
 * Finished, from OpenSSL's message callback) and the cipher suite. This
 * module records those per SSL and installs TLS_RX on the socket.
 *
 * After ktls13_install_rx() succeeds OpenSSL must never read from that
 * SSL again: records the kernel does not decrypt as application data
 * (alerts, NewSessionTicket, KeyUpdate) reach the caller as control
 * records, see ktls_read_record() in ktls.h.
 */
#ifndef MAILSPLICE_KTLS13_H
#define MAILSPLICE_KTLS13_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Watch every SSL made from ctx (key log + record count). Idempotent. */
void ktls13_watch_ctx(SSL_CTX *ctx);

/* Install the peer's application traffic key as the socket's TLS_RX.
 * Only for a TLS 1.3 SSL whose decrypted and raw read buffers are empty
 * (drain SSL_pending first). On failure nothing changed and why says so. */
bool ktls13_install_rx(SSL *ssl, int fd, char *why, size_t whylen);

/* HKDF-Expand-Label(secret, label, "", out_len) of RFC 8446 section 7.1,
 * digest "SHA256" or "SHA384". Exposed for the unit test. */
bool ktls13_expand_label(const char *digest, const uint8_t *secret, size_t secret_len,
                         const char *label, uint8_t *out, size_t out_len);

#endif
