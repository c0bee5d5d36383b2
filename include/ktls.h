/*
 * A kernel TLS leg without OpenSSL.
 *
 * Once both legs of a session are in kernel TLS (receive and transmit), the
 * relay frees their SSL objects (~14 KB each): the kernel encrypts, decrypts
 * and frames application data. What is left for user space is small:
 *
 *   - a record the kernel will not splice (anything but application data)
 *     is read with recvmsg(2) and its TLS_GET_RECORD_TYPE, and judged here:
 *     close_notify ends the stream, a TLS 1.3 NewSessionTicket and a TLS 1.2
 *     HelloRequest are dropped (we resume and renegotiate nothing), a
 *     KeyUpdate ends the session (the kernels we run on cannot take new
 *     receive keys: Debian 6.1 and 6.12 answer a second TLS_RX with EBUSY,
 *     and every record after the KeyUpdate fails to decrypt), anything else
 *     ends it too, saying what it was;
 *   - close_notify toward a peer is one alert record, sent through the
 *     kernel with TLS_SET_RECORD_TYPE.
 */
#ifndef MAILSPLICE_KTLS_H
#define MAILSPLICE_KTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ktls_record {
	KTLS_AGAIN,   /* nothing to read yet */
	KTLS_DATA,    /* application data: forward the bytes */
	KTLS_IGNORED, /* a post-handshake message that may be dropped */
	KTLS_CLOSE,   /* close_notify, or the TCP stream ended */
	KTLS_FATAL,   /* an alert, a KeyUpdate, a reset: why says which */
};

/* TLS record content types (RFC 8446 section 5.1, RFC 5246 section 6.2.1) */
#define KTLS_CT_ALERT            21
#define KTLS_CT_HANDSHAKE        22
#define KTLS_CT_APPLICATION_DATA 23

/* Judge one decrypted record of content type `type` (pure: no I/O).
 * tls13 selects which post-handshake messages are legal. */
enum ktls_record ktls_judge_record(unsigned type, const uint8_t *rec, size_t n, bool tls13,
                                   char *why, size_t whylen);

/* Read one record from a kernel TLS receive socket with recvmsg(2) and
 * judge it; application data lands in buf (*n bytes). */
enum ktls_record ktls_read_record(int fd, bool tls13, uint8_t *buf, size_t cap, size_t *n,
                                  char *why, size_t whylen);

/* Send a close_notify alert through the socket's kernel TLS transmit side.
 * False (errno set) if the kernel did not take it; the caller still ends
 * the TCP stream. */
bool ktls_send_close_notify(int fd);

#endif
