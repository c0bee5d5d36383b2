/*
 * Announcing the real client to a backend, and reading such announcements
 * from a trusted load balancer in front of us. Pure: builders write into
 * caller buffers, the parser reads from one; no I/O.
 *
 *   PROXY protocol v1 (text) and v2 (binary, with TLVs) -- haproxy's
 *     proxy-protocol.txt, as Dovecot (haproxy = yes) and Postfix
 *     (smtpd_upstream_proxy_protocol = haproxy) read it.
 *   XCLIENT -- Postfix's SMTP extension (XCLIENT_README) and Dovecot's
 *     POP3/ManageSieve variant (ADDR PORT SESSION TTL).
 *   IMAP ID (RFC 2971) with Dovecot's x-originating-ip & co.
 */
#ifndef MAILSPLICE_ANNOUNCE_H
#define MAILSPLICE_ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct announce_info {
	struct sockaddr_storage client; /* the real client (source) */
	struct sockaddr_storage local;  /* the address the client connected to */
	const char *session_id;         /* our session id (UNIQUE_ID, SESSION=) */
	const char *sni;                /* client's SNI, or NULL (v2 AUTHORITY TLV) */
	bool tls;                       /* client leg is TLS (v2 SSL TLV) */
	const char *tls_version;        /* e.g. "TLSv1.3", or NULL */
	const char *tls_cipher;         /* e.g. "TLS_AES_256_GCM_SHA384", or NULL */
	const char *helo;               /* client's HELO/EHLO name (SMTP), or NULL */
	const char *proto;              /* "SMTP" or "ESMTP" (SMTP XCLIENT PROTO=) */
	unsigned ttl;                   /* proxy hop budget (x-proxy-ttl, TTL=) */
};

/* ---- PROXY protocol builders ----
 * Mixed families (IPv4 client, IPv6 local or the reverse) are sent as
 * TCP6 with the IPv4 side written as an IPv4-mapped IPv6 address; never
 * "UNKNOWN", which Postfix rejects. Both return the header length, or 0
 * if out is too small or an address is neither AF_INET nor AF_INET6.
 * The v1 line is NUL-terminated (out needs PROXY_V1_MAX + 1 bytes). */
size_t proxy_v1_build(const struct announce_info *info, char *out, size_t outlen);
size_t proxy_v2_build(const struct announce_info *info, uint8_t *out, size_t outlen);

/* Postfix (haproxy_srvr.c) peeks at most 536 bytes for the whole header;
 * proxy_v2_build drops the UNIQUE_ID TLV rather than exceed this. */
#define PROXY_V2_SEND_MAX 536

/* ---- PROXY protocol parser (a listener with proxy_protocol = true) ---- */

#define PROXY_V1_MAX 107 /* whole v1 line including CRLF */
#define PROXY_V2_MAX (16 + 65535)

struct proxy_header {
	int version; /* 1 or 2 */
	bool local;  /* v2 LOCAL, v2 UNSPEC/UNIX, v1 UNKNOWN: keep the socket's addresses */
	struct sockaddr_storage src, dst;
	char authority[256]; /* v2 PP2_TYPE_AUTHORITY, "" if absent */
};

/*
 * Parse a PROXY v1 or v2 header at the start of buf. Returns the number of
 * bytes the header occupies (> 0), 0 if more bytes are needed, or -1 if the
 * data is not a valid header (*error says why). Never reads past len.
 */
long proxy_header_parse(const uint8_t *buf, size_t len, struct proxy_header *out,
                        const char **error);

/* ---- XCLIENT ---- */

/* XCLIENT attributes, as a bit set: what the backend advertised. */
enum xclient_attr {
	XCLIENT_NAME = 1 << 0,
	XCLIENT_ADDR = 1 << 1,
	XCLIENT_PORT = 1 << 2,
	XCLIENT_PROTO = 1 << 3,
	XCLIENT_HELO = 1 << 4,
	XCLIENT_LOGIN = 1 << 5, /* never sent by us: it would pre-authenticate */
	XCLIENT_DESTADDR = 1 << 6,
	XCLIENT_DESTPORT = 1 << 7,
	XCLIENT_SESSION = 1 << 8,
	XCLIENT_TTL = 1 << 9,
	XCLIENT_REVERSE_NAME = 1 << 10,
	/* Not an attribute: Dovecot's POP3/ManageSieve XCLIENT, whose values
	 * are plain atoms (no xtext) and whose ADDR is a bare IPv6 address
	 * (net_addr2ip rejects "IPV6:"). */
	XCLIENT_DOVECOT = 1 << 15,
};
#define XCLIENT_DOVECOT_SET                                                                        \
	(XCLIENT_DOVECOT | XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_SESSION | XCLIENT_TTL)

/* Parse the attribute list of an EHLO "250-XCLIENT NAME ADDR ..." line
 * (the part after "XCLIENT"). Unknown attributes are ignored. */
unsigned xclient_parse_attrs(const char *s, size_t len);

/*
 * Build an "XCLIENT k=v ...\r\n" command with only the attributes in
 * allowed (LOGIN is never sent, whatever allowed says). SMTP flavour
 * (Postfix): ADDR (IPv6 as "IPV6:addr"), PORT, NAME=[UNAVAILABLE],
 * REVERSE_NAME=[UNAVAILABLE] (NAME=[UNAVAILABLE] alone leaves Postfix's
 * reverse name of our own address in place), HELO, PROTO, DESTADDR,
 * DESTPORT; values xtext-encoded (RFC 3461 section 4).
 * Dovecot flavour (POP3, ManageSieve): ADDR PORT SESSION TTL, which
 * Dovecot accepts whether advertised or not; pass XCLIENT_DOVECOT_SET
 * (ADDR | PORT | SESSION | TTL without any SMTP-only attribute also selects
 * it). Returns the length (the line is NUL-terminated), or 0 if out is too
 * small, the line would exceed 512 bytes, the client is not AF_INET/AF_INET6
 * or no attribute is left to send.
 */
size_t xclient_build(const struct announce_info *info, unsigned allowed, char *out, size_t outlen);

/*
 * Build the argument of an IMAP ID command (RFC 2971) for Dovecot:
 *   ("x-originating-ip" "..." "x-originating-port" "..." "x-connected-ip"
 *    "..." "x-connected-port" "..." "x-session-id" "..." "x-proxy-ttl" "N" ...)
 * followed by the client's own ID fields (n_fields name/value pairs,
 * unquoted, as parsed from the client's ID command; NULL values allowed),
 * quoted with RFC 3501 escapes. Client fields whose name starts with "x-"
 * (case-insensitive) are dropped: Dovecot trusts those from us, so a client
 * must not be able to smuggle them through. Never "x-multiplex". Returns
 * the length (without NUL) or 0 if out is too small.
 */
size_t imap_id_build(const struct announce_info *info, const char *const *client_fields,
                     size_t n_fields, char *out, size_t outlen);

/* Format an address / port pair without brackets ("192.0.2.1", "2001:db8::1")
 * into out (at least INET6_ADDRSTRLEN bytes). Returns out, or "" on error. */
const char *announce_addr_str(const struct sockaddr_storage *ss, char *out, size_t outlen);
unsigned announce_port(const struct sockaddr_storage *ss);

#endif
