/*
 * One leg of a session: a non-blocking TCP socket, optionally wrapped in
 * OpenSSL, with bounded input and output buffers, driven by libevent.
 *
 * We own the I/O instead of using bufferevents because the kernel data path
 * needs to know exactly which bytes have crossed into user space (our
 * buffers, OpenSSL's record buffer) when it takes the sockets over.
 *
 * The owner gets one callback per wake-up, always as the last thing a conn
 * function does, so the owner may tear the conn down from inside it.
 */
#ifndef MAILSPLICE_CONN_H
#define MAILSPLICE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

enum conn_event {
	CONN_EV_READ,      /* new bytes in c->in */
	CONN_EV_DRAINED,   /* c->out became empty (only if notify_drained) */
	CONN_EV_TLS_DONE,  /* handshake completed */
	CONN_EV_CONNECTED, /* outgoing connect completed */
	CONN_EV_EOF,       /* peer closed (orderly); c->in may still hold data */
	CONN_EV_ERROR,     /* reset, TLS failure, ...; c->err says what */
};

struct conn;
typedef void (*conn_cb)(struct conn *c, enum conn_event ev, void *arg);

struct conn {
	int fd;
	SSL *ssl;
	struct event_base *base;
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	size_t in_max;  /* stop reading from the socket above this */
	size_t out_max; /* conn_writable() is false above this */
	conn_cb cb;
	void *arg;

	bool reading;             /* owner wants input */
	bool connecting;          /* outgoing connect in progress */
	bool handshaking;         /* TLS handshake in progress */
	bool want_write_for_read; /* SSL_read needs the socket writable */
	bool want_read_for_write; /* SSL_write needs the socket readable */
	bool notify_drained;
	bool eof, failed;
	bool shut_wr; /* we sent FIN (after out drained) */
	bool shutdown_after_flush;

	uint64_t bytes_read, bytes_written; /* application bytes */
	char err[160];
};

/* Attach to an fd (already non-blocking). */
bool conn_init(struct conn *c, struct event_base *base, int fd, conn_cb cb, void *arg);
/* Free events, buffers, SSL; closes the fd unless keep_fd. */
void conn_release(struct conn *c, bool keep_fd);

/* Start a non-blocking connect from src (may be NULL) to dst. */
bool conn_connect(struct conn *c, struct event_base *base, const struct sockaddr *src,
                  socklen_t srclen, const struct sockaddr *dst, socklen_t dstlen, conn_cb cb,
                  void *arg);

void conn_read_start(struct conn *c);
void conn_read_stop(struct conn *c);

/* Queue bytes; they are sent as the socket allows. */
bool conn_write(struct conn *c, const void *data, size_t len);
bool conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool conn_writable(const struct conn *c);
/* Try to send now (also called from the event loop). */
void conn_flush(struct conn *c);
/* Send FIN once the output buffer is empty. */
void conn_shutdown_write(struct conn *c);

/* Wrap the socket in TLS and handshake (server or client side). ssl is
 * owned by the conn from here on. Bytes already in c->in are discarded
 * first: whatever was pipelined before the TLS switch must never be read
 * as if it came through TLS (STARTTLS command injection). Returns the
 * number of discarded bytes through *discarded. */
void conn_start_tls(struct conn *c, SSL *ssl, bool server, size_t *discarded);

/* Reset the connection (SO_LINGER 0) on release: used for kicks. */
void conn_set_abortive(struct conn *c);

/* Line helpers on c->in. */
/* Returns the length of the first line including CRLF (or LF), 0 if no
 * complete line, or -1 if more than max bytes arrived without one. */
long conn_line_len(struct conn *c, size_t max);

#endif
