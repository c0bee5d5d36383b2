/*
 * A kernel TLS leg without OpenSSL (see ktls.h).
 */
#include "ktls.h"

#include <errno.h>
#include <linux/tls.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* handshake message types (RFC 8446 section 4, RFC 5246 section 7.4) */
#define MT_HELLO_REQUEST      0
#define MT_NEW_SESSION_TICKET 4
#define MT_KEY_UPDATE         24

enum ktls_record ktls_judge_record(unsigned type, const uint8_t *rec, size_t n, bool tls13,
                                   char *why, size_t whylen)
{
	switch (type) {
	case KTLS_CT_APPLICATION_DATA:
		return KTLS_DATA;
	case KTLS_CT_ALERT:
		/* struct { AlertLevel level; AlertDescription description; } */
		if (n == 2 && rec[1] == 0)
			return KTLS_CLOSE;
		if (n == 2)
			snprintf(why, whylen, "TLS alert %u (level %u) from the peer", rec[1],
			         rec[0]);
		else
			snprintf(why, whylen, "malformed TLS alert record (%zu bytes)", n);
		return KTLS_FATAL;
	case KTLS_CT_HANDSHAKE:
		if (n == 0) {
			snprintf(why, whylen, "empty TLS handshake record");
			return KTLS_FATAL;
		}
		/* one record may carry several messages: type(1) length(3) body */
		for (size_t off = 0; off < n;) {
			if (n - off < 4) {
				snprintf(why, whylen, "truncated TLS handshake message");
				return KTLS_FATAL;
			}
			size_t ml = (size_t)rec[off + 1] << 16 | (size_t)rec[off + 2] << 8 |
			            rec[off + 3];
			if (ml > n - off - 4) {
				/* the kernel hands over whole records, but a message
				 * may span records: we never buffer one */
				snprintf(why, whylen,
				         "TLS handshake message %u split across records", rec[off]);
				return KTLS_FATAL;
			}
			unsigned mt = rec[off];
			if (tls13 && mt == MT_KEY_UPDATE) {
				snprintf(why, whylen,
				         "the peer sent a TLS 1.3 KeyUpdate; kernel TLS receive "
				         "on this kernel cannot take new keys, so the session "
				         "ends");
				return KTLS_FATAL;
			}
			bool droppable = tls13 ? mt == MT_NEW_SESSION_TICKET
			                       : mt == MT_HELLO_REQUEST && ml == 0;
			if (!droppable) {
				snprintf(why, whylen, "unexpected TLS %s handshake message %u",
				         tls13 ? "1.3" : "1.2", mt);
				return KTLS_FATAL;
			}
			off += 4 + ml;
		}
		return KTLS_IGNORED;
	default:
		snprintf(why, whylen, "unexpected TLS record type %u", type);
		return KTLS_FATAL;
	}
}

enum ktls_record ktls_read_record(int fd, bool tls13, uint8_t *buf, size_t cap, size_t *n,
                                  char *why, size_t whylen)
{
	char cbuf[CMSG_SPACE(sizeof(unsigned char))];
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = cbuf,
	                     .msg_controllen = sizeof(cbuf)};
	ssize_t r = recvmsg(fd, &msg, MSG_DONTWAIT);

	*n = 0;
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return KTLS_AGAIN;
		snprintf(why, whylen, "%s",
		         errno == EBADMSG ? "a TLS record failed to decrypt in the kernel"
		                          : strerror(errno));
		return KTLS_FATAL;
	}
	if (r == 0)
		return KTLS_CLOSE; /* TCP end without close_notify */
	unsigned type = KTLS_CT_APPLICATION_DATA;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			type = *(unsigned char *)CMSG_DATA(cm);
	*n = (size_t)r;
	return ktls_judge_record(type, buf, (size_t)r, tls13, why, whylen);
}

bool ktls_send_close_notify(int fd)
{
	/* RFC 8446 section 6.1: close_notify is a warning-level alert (1, 0) */
	unsigned char alert[2] = {1, 0};
	char cbuf[CMSG_SPACE(sizeof(unsigned char))];
	struct iovec iov = {.iov_base = alert, .iov_len = sizeof(alert)};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = cbuf,
	                     .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	memset(cbuf, 0, sizeof(cbuf));
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(unsigned char));
	*(unsigned char *)CMSG_DATA(cm) = KTLS_CT_ALERT;
	return sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(alert);
}
