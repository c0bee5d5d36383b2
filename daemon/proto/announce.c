/*
 * Announcing the real client to a backend: PROXY v1/v2 headers, XCLIENT
 * (Postfix and Dovecot flavours) and the IMAP ID argument Dovecot trusts.
 * Builders only: no I/O, no allocation; every write is bounds-checked.
 *
 * Wire facts this file depends on (checked against the sources of the
 * servers we talk to, not only the specs):
 *  - Postfix 3.7 haproxy_srvr.c reads the PROXY header with one
 *    recv(MSG_PEEK) of at most 536 bytes: a longer v2 header fails.
 *  - Postfix XCLIENT: unknown attribute names, empty values and raw values
 *    over 255 bytes all fail the whole command with 501; ADDR/DESTADDR
 *    take "IPV6:" for IPv6; PROTO only SMTP or ESMTP.
 *  - Dovecot POP3/ManageSieve XCLIENT: values are taken verbatim (no xtext),
 *    ADDR goes through net_addr2ip (a bare IPv6 address, "IPV6:" fails),
 *    PORT=0 fails (net_str2port), SESSION over 64 bytes is ignored, and
 *    ManageSieve needs each attribute to be a valid atom.
 *  - Dovecot imap-login: ID field names over 30 bytes make the whole ID
 *    command fail ("Invalid ID parameters"); x-* values are trusted only
 *    in the first ID command of the connection.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "announce.h"

#define PP2_SIG_LEN          12
#define PP2_HDR_LEN          16
#define PP2_VER_PROXY        0x21 /* version 2, PROXY command */
#define PP2_FAM_TCP4         0x11
#define PP2_FAM_TCP6         0x21
#define PP2_TYPE_AUTHORITY   0x02
#define PP2_TYPE_UNIQUE_ID   0x05
#define PP2_TYPE_SSL         0x20
#define PP2_SUBTYPE_SSL_VER  0x21
#define PP2_SUBTYPE_SSL_CIPH 0x23
#define PP2_CLIENT_SSL       0x01
#define PP2_UNIQUE_ID_MAX    128 /* proxy-protocol.txt 2.2.5 */
#define PP2_AUTHORITY_MAX    255 /* a DNS name; haproxy rejects longer */
#define PP2_SSL_STR_MAX      64  /* "TLSv1.3", "TLS_AES_256_GCM_SHA384" */
#define SMTP_LINE_MAX        512 /* RFC 5321 4.5.3.1.4, XCLIENT_README note 1 */
#define XCLIENT_VALUE_MAX    255 /* Postfix smtpd: raw value limit */
#define DOVECOT_SESSION_MAX  64  /* LOGIN_MAX_SESSION_ID_LEN */
#define IMAP_ID_MAX_PAIRS    30  /* RFC 2971 section 3.3 */
#define IMAP_ID_NAME_MAX     30
#define IMAP_ID_VALUE_MAX    1024
/* Ours, not Dovecot's (2.3.19 took a 24 KiB ID: its 8 KiB limit is per
 * argument): bounds what a client's own ID can make us forward. */
#define IMAP_ID_ARG_MAX 4096

static const uint8_t pp2_sig[PP2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                             0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* ---- endpoints ---- */

/* An IP endpoint with IPv4-mapped IPv6 folded into IPv4. */
struct endpoint {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint16_t port; /* host order */
};

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool endpoint_get(const struct sockaddr_storage *ss, struct endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	if (ss == NULL)
		return false;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		ep->family = AF_INET;
		memcpy(ep->addr, &sin->sin_addr, 4);
		ep->port = ntohs(sin->sin_port);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		const uint8_t *a = sin6->sin6_addr.s6_addr;

		ep->port = ntohs(sin6->sin6_port);
		if (memcmp(a, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
			ep->family = AF_INET;
			memcpy(ep->addr, a + 12, 4);
		} else {
			ep->family = AF_INET6;
			memcpy(ep->addr, a, 16);
		}
		return true;
	}
	return false;
}

static void endpoint_to_v6(struct endpoint *ep)
{
	uint8_t v4[4];

	if (ep->family != AF_INET)
		return;
	memcpy(v4, ep->addr, 4);
	memcpy(ep->addr, v4mapped_prefix, sizeof(v4mapped_prefix));
	memcpy(ep->addr + 12, v4, 4);
	ep->family = AF_INET6;
}

/* Both ends of the announced connection, in one family: IPv4 only when both
 * are IPv4 (or IPv4-mapped), otherwise IPv6 with IPv4 sides mapped. */
static bool endpoint_pair(const struct announce_info *info, struct endpoint *src,
                          struct endpoint *dst)
{
	if (info == NULL || !endpoint_get(&info->client, src) || !endpoint_get(&info->local, dst))
		return false;
	if (src->family != dst->family) {
		endpoint_to_v6(src);
		endpoint_to_v6(dst);
	}
	return true;
}

static void endpoint_ntop(const struct endpoint *ep, char out[INET6_ADDRSTRLEN])
{
	if (inet_ntop(ep->family, ep->addr, out, INET6_ADDRSTRLEN) == NULL)
		out[0] = '\0';
}

const char *announce_addr_str(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	struct endpoint ep;

	if (out == NULL || outlen == 0)
		return "";
	out[0] = '\0';
	if (!endpoint_get(ss, &ep) || outlen > (socklen_t)-1 ||
	    inet_ntop(ep.family, ep.addr, out, (socklen_t)outlen) == NULL) {
		out[0] = '\0';
		return "";
	}
	return out;
}

unsigned announce_port(const struct sockaddr_storage *ss)
{
	struct endpoint ep;

	return endpoint_get(ss, &ep) ? ep.port : 0;
}

/* ---- bounded output buffer ---- */

struct obuf {
	char *p;
	size_t cap; /* bytes usable for content (the NUL is extra) */
	size_t len;
	bool overflow;
};

static void ob_init(struct obuf *b, char *out, size_t outlen, size_t limit)
{
	b->p = out;
	b->cap = outlen > 0 ? outlen - 1 : 0;
	if (b->cap > limit)
		b->cap = limit;
	b->len = 0;
	b->overflow = out == NULL || outlen == 0;
}

static void ob_put(struct obuf *b, const char *s, size_t n)
{
	if (b->overflow)
		return;
	if (n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void ob_puts(struct obuf *b, const char *s)
{
	ob_put(b, s, strlen(s));
}

static void ob_putc(struct obuf *b, char c)
{
	ob_put(b, &c, 1);
}

static void ob_putu(struct obuf *b, unsigned v)
{
	char tmp[16];
	int n = snprintf(tmp, sizeof(tmp), "%u", v);

	ob_put(b, tmp, (size_t)n);
}

/* NUL-terminates and returns the length, or 0 after an overflow. */
static size_t ob_finish(struct obuf *b)
{
	if (b->overflow)
		return 0;
	b->p[b->len] = '\0';
	return b->len;
}

/* ---- PROXY v1 ---- */

size_t proxy_v1_build(const struct announce_info *info, char *out, size_t outlen)
{
	struct endpoint src, dst;
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	struct obuf b;

	if (!endpoint_pair(info, &src, &dst))
		return 0;
	endpoint_ntop(&src, s);
	endpoint_ntop(&dst, d);
	if (s[0] == '\0' || d[0] == '\0')
		return 0;
	ob_init(&b, out, outlen, PROXY_V1_MAX);
	ob_puts(&b, src.family == AF_INET ? "PROXY TCP4 " : "PROXY TCP6 ");
	ob_puts(&b, s);
	ob_putc(&b, ' ');
	ob_puts(&b, d);
	ob_putc(&b, ' ');
	ob_putu(&b, src.port);
	ob_putc(&b, ' ');
	ob_putu(&b, dst.port);
	ob_puts(&b, "\r\n");
	return ob_finish(&b);
}

/* ---- PROXY v2 ---- */

/* The TLV string checks mirror what proxy_header_parse accepts. */
static size_t authority_len(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= PP2_AUTHORITY_MAX || c <= 0x20 || c == 0x7f)
			return 0;
	}
	return n;
}

static size_t printable_len(const char *s, size_t max)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		if (n >= max || s[n] < 0x21 || s[n] > 0x7e)
			return 0;
	}
	return n;
}

static size_t bytes_len(const char *s, size_t max)
{
	size_t n = s != NULL ? strnlen(s, max + 1) : 0;

	return n <= max ? n : 0;
}

static uint8_t *put_tlv(uint8_t *p, uint8_t type, const void *value, size_t len)
{
	p[0] = type;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	if (len > 0)
		memcpy(p + 3, value, len);
	return p + 3 + len;
}

size_t proxy_v2_build(const struct announce_info *info, uint8_t *out, size_t outlen)
{
	struct endpoint src, dst;
	size_t alen, auth_len, uid_len, ver_len = 0, ciph_len = 0, ssl_len = 0, total;
	uint8_t *p;

	if (!endpoint_pair(info, &src, &dst) || out == NULL)
		return 0;
	alen = src.family == AF_INET ? 12 : 36;
	auth_len = authority_len(info->sni);
	uid_len = bytes_len(info->session_id, PP2_UNIQUE_ID_MAX);
	if (info->tls) {
		ver_len = printable_len(info->tls_version, PP2_SSL_STR_MAX);
		ciph_len = printable_len(info->tls_cipher, PP2_SSL_STR_MAX);
		ssl_len = 5 + (ver_len ? 3 + ver_len : 0) + (ciph_len ? 3 + ciph_len : 0);
	}
	total = PP2_HDR_LEN + alen + (auth_len ? 3 + auth_len : 0) + (uid_len ? 3 + uid_len : 0) +
	        (info->tls ? 3 + ssl_len : 0);
	/* The SSL TLV decides "secured" in Dovecot and the authority may
	 * route; the session id is only for log correlation. */
	if (total > PROXY_V2_SEND_MAX && uid_len > 0) {
		total -= 3 + uid_len;
		uid_len = 0;
	}
	if (total > outlen)
		return 0;

	p = out;
	memcpy(p, pp2_sig, PP2_SIG_LEN);
	p += PP2_SIG_LEN;
	*p++ = PP2_VER_PROXY;
	*p++ = src.family == AF_INET ? PP2_FAM_TCP4 : PP2_FAM_TCP6;
	*p++ = (uint8_t)((total - PP2_HDR_LEN) >> 8);
	*p++ = (uint8_t)(total - PP2_HDR_LEN);
	if (src.family == AF_INET) {
		memcpy(p, src.addr, 4);
		memcpy(p + 4, dst.addr, 4);
		p += 8;
	} else {
		memcpy(p, src.addr, 16);
		memcpy(p + 16, dst.addr, 16);
		p += 32;
	}
	*p++ = (uint8_t)(src.port >> 8);
	*p++ = (uint8_t)src.port;
	*p++ = (uint8_t)(dst.port >> 8);
	*p++ = (uint8_t)dst.port;

	if (auth_len)
		p = put_tlv(p, PP2_TYPE_AUTHORITY, info->sni, auth_len);
	if (uid_len)
		p = put_tlv(p, PP2_TYPE_UNIQUE_ID, info->session_id, uid_len);
	if (info->tls) {
		/* verify = 0 as haproxy sends it when the client presented no
		 * certificate (the struct is zeroed, SSL_get_verify_result()
		 * is only copied in for a client certificate). */
		static const uint8_t client_verify[5] = {PP2_CLIENT_SSL, 0, 0, 0, 0};

		p[0] = PP2_TYPE_SSL;
		p[1] = (uint8_t)(ssl_len >> 8);
		p[2] = (uint8_t)ssl_len;
		memcpy(p + 3, client_verify, sizeof(client_verify));
		p += 3 + sizeof(client_verify);
		if (ver_len)
			p = put_tlv(p, PP2_SUBTYPE_SSL_VER, info->tls_version, ver_len);
		if (ciph_len)
			p = put_tlv(p, PP2_SUBTYPE_SSL_CIPH, info->tls_cipher, ciph_len);
	}
	return (size_t)(p - out);
}

/* ---- XCLIENT ---- */

static const struct {
	const char *name;
	unsigned bit;
} xclient_names[] = {
        {"NAME", XCLIENT_NAME},
        {"ADDR", XCLIENT_ADDR},
        {"PORT", XCLIENT_PORT},
        {"PROTO", XCLIENT_PROTO},
        {"HELO", XCLIENT_HELO},
        {"LOGIN", XCLIENT_LOGIN},
        {"DESTADDR", XCLIENT_DESTADDR},
        {"DESTPORT", XCLIENT_DESTPORT},
        {"SESSION", XCLIENT_SESSION},
        {"TTL", XCLIENT_TTL},
        {"REVERSE_NAME", XCLIENT_REVERSE_NAME},
};

unsigned xclient_parse_attrs(const char *s, size_t len)
{
	unsigned bits = 0;
	size_t i = 0;

	if (s == NULL)
		return 0;
	while (i < len) {
		size_t start, n, k;

		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
			i++;
		start = i;
		while (i < len && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' &&
		       s[i] != '\0')
			i++;
		n = i - start;
		if (n == 0)
			break; /* end of input or an embedded NUL */
		for (k = 0; k < sizeof(xclient_names) / sizeof(xclient_names[0]); k++) {
			if (strlen(xclient_names[k].name) == n &&
			    strncasecmp(s + start, xclient_names[k].name, n) == 0)
				bits |= xclient_names[k].bit;
		}
	}
	return bits;
}

/* RFC 3461 section 4: xchar is 33..126 except '+' and '='; anything else
 * is "+" and two upper-case hex digits. */
static bool xtext_plain(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '+' && c != '=';
}

static size_t xtext_len(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += xtext_plain((unsigned char)*s) ? 1 : 3;
	return n;
}

static void ob_xtext(struct obuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (xtext_plain(c)) {
			ob_putc(b, (char)c);
		} else {
			char esc[3] = {'+', hex[c >> 4], hex[c & 15]};

			ob_put(b, esc, sizeof(esc));
		}
	}
}

/* A value Dovecot's POP3 splits on spaces and ManageSieve reads as an
 * atom: no SP/CTL/8-bit, none of ( ) { " \ and, to be safe for IMAP-style
 * parsers too, none of % * ]. */
static bool dovecot_atom(const char *s, size_t max)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= max || c <= 0x20 || c >= 0x7f || strchr("(){}\"\\%*]", c) != NULL)
			return false;
	}
	return n > 0;
}

static void xclient_attr(struct obuf *b, const char *name, unsigned *count)
{
	ob_putc(b, ' ');
	ob_puts(b, name);
	ob_putc(b, '=');
	(*count)++;
}

static void xclient_addr(struct obuf *b, const struct endpoint *ep, bool dovecot)
{
	char a[INET6_ADDRSTRLEN];

	endpoint_ntop(ep, a);
	if (ep->family == AF_INET6 && !dovecot)
		ob_puts(b, "IPV6:");
	ob_puts(b, a);
}

static void xclient_port(struct obuf *b, unsigned port)
{
	if (port != 0)
		ob_putu(b, port);
	else
		ob_puts(b, "[UNAVAILABLE]");
}

#define XCLIENT_SMTP_ONLY                                                                          \
	(XCLIENT_NAME | XCLIENT_REVERSE_NAME | XCLIENT_PROTO | XCLIENT_HELO | XCLIENT_LOGIN |      \
	 XCLIENT_DESTADDR | XCLIENT_DESTPORT)

size_t xclient_build(const struct announce_info *info, unsigned allowed, char *out, size_t outlen)
{
	struct endpoint cl, lo;
	bool dovecot, have_lo;
	unsigned count = 0;
	struct obuf b;

	if (info == NULL || !endpoint_get(&info->client, &cl))
		return 0;
	have_lo = endpoint_get(&info->local, &lo);
	dovecot = (allowed & XCLIENT_DOVECOT) != 0 ||
	          ((allowed & (XCLIENT_SESSION | XCLIENT_TTL)) != 0 &&
	           (allowed & XCLIENT_SMTP_ONLY) == 0);
	if (dovecot)
		allowed &= XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_SESSION | XCLIENT_TTL;
	allowed &= ~(unsigned)XCLIENT_LOGIN; /* would authenticate the client as anyone */

	ob_init(&b, out, outlen, SMTP_LINE_MAX - 2);
	ob_puts(&b, "XCLIENT");
	if (allowed & XCLIENT_ADDR) {
		xclient_attr(&b, "ADDR", &count);
		xclient_addr(&b, &cl, dovecot);
	}
	/* Dovecot refuses PORT=0 and has no [UNAVAILABLE]: leave it out. */
	if ((allowed & XCLIENT_PORT) && (cl.port != 0 || !dovecot)) {
		xclient_attr(&b, "PORT", &count);
		xclient_port(&b, cl.port);
	}
	/* We do no DNS lookups. REVERSE_NAME too: NAME=[UNAVAILABLE] alone
	 * leaves Postfix's reverse name of the proxy's own address in place. */
	if (allowed & XCLIENT_NAME) {
		xclient_attr(&b, "NAME", &count);
		ob_puts(&b, "[UNAVAILABLE]");
	}
	if (allowed & XCLIENT_REVERSE_NAME) {
		xclient_attr(&b, "REVERSE_NAME", &count);
		ob_puts(&b, "[UNAVAILABLE]");
	}
	if ((allowed & XCLIENT_HELO) && info->helo != NULL && info->helo[0] != '\0' &&
	    xtext_len(info->helo) <= XCLIENT_VALUE_MAX) {
		xclient_attr(&b, "HELO", &count);
		ob_xtext(&b, info->helo);
	}
	if ((allowed & XCLIENT_PROTO) && info->proto != NULL) {
		if (strcasecmp(info->proto, "SMTP") == 0) {
			xclient_attr(&b, "PROTO", &count);
			ob_puts(&b, "SMTP");
		} else if (strcasecmp(info->proto, "ESMTP") == 0) {
			xclient_attr(&b, "PROTO", &count);
			ob_puts(&b, "ESMTP");
		}
	}
	if ((allowed & XCLIENT_DESTADDR) && have_lo) {
		xclient_attr(&b, "DESTADDR", &count);
		xclient_addr(&b, &lo, false);
	}
	if ((allowed & XCLIENT_DESTPORT) && have_lo) {
		xclient_attr(&b, "DESTPORT", &count);
		xclient_port(&b, lo.port);
	}
	if ((allowed & XCLIENT_SESSION) && info->session_id != NULL &&
	    info->session_id[0] != '\0' && strlen(info->session_id) <= DOVECOT_SESSION_MAX) {
		if (dovecot) {
			if (dovecot_atom(info->session_id, DOVECOT_SESSION_MAX)) {
				xclient_attr(&b, "SESSION", &count);
				ob_puts(&b, info->session_id);
			}
		} else {
			xclient_attr(&b, "SESSION", &count);
			ob_xtext(&b, info->session_id);
		}
	}
	if ((allowed & XCLIENT_TTL) && info->ttl > 0) {
		xclient_attr(&b, "TTL", &count);
		ob_putu(&b, info->ttl);
	}
	if (count == 0)
		return 0; /* a bare "XCLIENT" is a 501 syntax error */
	ob_puts(&b, "\r\n");
	return ob_finish(&b);
}

/* ---- IMAP ID ---- */

/* An RFC 3501 quoted string can carry 7-bit chars except NUL, CR and LF;
 * anything else would need a literal, which we do not send. */
static bool imap_quotable(const char *s, size_t min, size_t max)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= max || c == '\r' || c == '\n' || c >= 0x80)
			return false;
	}
	return n >= min;
}

static size_t imap_quoted_len(const char *s)
{
	size_t n = 2;

	for (; *s != '\0'; s++)
		n += (*s == '"' || *s == '\\') ? 2 : 1;
	return n;
}

static void ob_quoted(struct obuf *b, const char *s)
{
	ob_putc(b, '"');
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			ob_putc(b, '\\');
		ob_putc(b, *s);
	}
	ob_putc(b, '"');
}

static void id_pair(struct obuf *b, const char *name, const char *value, unsigned *pairs)
{
	if (*pairs > 0)
		ob_putc(b, ' ');
	ob_quoted(b, name);
	ob_putc(b, ' ');
	if (value != NULL)
		ob_quoted(b, value);
	else
		ob_puts(b, "NIL");
	(*pairs)++;
}

static void id_pair_addr(struct obuf *b, const char *ipname, const char *portname,
                         const struct endpoint *ep, unsigned *pairs)
{
	char a[INET6_ADDRSTRLEN], port[8];

	endpoint_ntop(ep, a);
	if (a[0] != '\0')
		id_pair(b, ipname, a, pairs);
	/* Dovecot's net_str2port refuses 0; an absent port stays unset. */
	if (ep->port != 0) {
		snprintf(port, sizeof(port), "%u", ep->port);
		id_pair(b, portname, port, pairs);
	}
}

size_t imap_id_build(const struct announce_info *info, const char *const *client_fields,
                     size_t n_fields, char *out, size_t outlen)
{
	struct endpoint ep;
	unsigned pairs = 0;
	struct obuf b;
	size_t i;

	if (info == NULL)
		return 0;
	ob_init(&b, out, outlen, IMAP_ID_ARG_MAX);
	ob_putc(&b, '(');
	if (endpoint_get(&info->client, &ep))
		id_pair_addr(&b, "x-originating-ip", "x-originating-port", &ep, &pairs);
	if (endpoint_get(&info->local, &ep))
		id_pair_addr(&b, "x-connected-ip", "x-connected-port", &ep, &pairs);
	if (info->session_id != NULL && imap_quotable(info->session_id, 1, DOVECOT_SESSION_MAX))
		id_pair(&b, "x-session-id", info->session_id, &pairs);
	if (info->ttl > 0) {
		char ttl[16];

		snprintf(ttl, sizeof(ttl), "%u", info->ttl);
		id_pair(&b, "x-proxy-ttl", ttl, &pairs);
	}
	if (b.overflow)
		return 0;

	/* The client's own fields: dropped, never the whole ID, when one is
	 * unsafe, would break a limit or would not fit. */
	for (i = 0; client_fields != NULL && i < n_fields && pairs < IMAP_ID_MAX_PAIRS; i++) {
		const char *name = client_fields[2 * i], *value = client_fields[2 * i + 1];
		size_t need;

		if (name == NULL || !imap_quotable(name, 1, IMAP_ID_NAME_MAX))
			continue;
		/* x-* is what Dovecot trusts from us (x-originating-ip,
		 * x-forward-*, x-multiplex in later versions...). */
		if (strncasecmp(name, "x-", 2) == 0)
			continue;
		if (value != NULL && !imap_quotable(value, 0, IMAP_ID_VALUE_MAX))
			continue;
		need = 1 + imap_quoted_len(name) + 1 + (value != NULL ? imap_quoted_len(value) : 3);
		if (need + 1 > b.cap - b.len) /* + the closing parenthesis */
			continue;
		id_pair(&b, name, value, &pairs);
	}
	ob_putc(&b, ')');
	if (pairs == 0) {
		/* "()" is not valid RFC 2971 syntax; NIL is. */
		ob_init(&b, out, outlen, IMAP_ID_ARG_MAX);
		ob_puts(&b, "NIL");
	}
	return ob_finish(&b);
}
