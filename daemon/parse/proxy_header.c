/*
 * PROXY protocol v1/v2 parser for listeners behind a trusted load balancer
 * (haproxy's doc/proxy-protocol.txt). Pure and incremental: it is called
 * with whatever has arrived so far, answers "need more" for every proper
 * prefix of a valid header, and rejects as early as the bytes allow so a
 * misconfigured sender is cut off at once instead of at a timeout.
 * Nothing is read at or beyond len; the v2 length field is only trusted
 * after it has been checked against the family and the buffer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "announce.h"

#define NEED_MORE 0
#define INVALID   (-1)

/* ---- v1: "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n" ---- */

struct v1_cursor {
	const uint8_t *buf;
	size_t lim;  /* min(len, PROXY_V1_MAX): bytes we may look at */
	bool capped; /* lim is PROXY_V1_MAX: running out means too long */
	size_t pos;
	const char **error;
};

/* What running out of bytes means: wait, or give up on an overlong line. */
static long v1_end(struct v1_cursor *c)
{
	if (c->capped) {
		*c->error = "PROXY v1: no CRLF within 107 bytes";
		return INVALID;
	}
	return NEED_MORE;
}

static long v1_bad(struct v1_cursor *c, const char *why)
{
	*c->error = why;
	return INVALID;
}

/* Read a token ending at one of the bytes in terms; the terminator is
 * consumed and stored in *term. ok() vets every byte as it arrives. */
static long v1_token(struct v1_cursor *c, char *tok, size_t tokmax, bool (*ok)(uint8_t),
                     const char *terms, char *term, const char *why)
{
	size_t n = 0;

	for (;;) {
		uint8_t ch;

		if (c->pos >= c->lim)
			return v1_end(c);
		ch = c->buf[c->pos];
		if (ch != 0 && strchr(terms, ch) != NULL) {
			if (n == 0)
				return v1_bad(c, why);
			tok[n] = '\0';
			*term = (char)ch;
			c->pos++;
			return 1;
		}
		if (!ok(ch) || n + 1 >= tokmax)
			return v1_bad(c, why);
		tok[n++] = (char)ch;
		c->pos++;
	}
}

static long v1_expect_lf(struct v1_cursor *c)
{
	if (c->pos >= c->lim)
		return v1_end(c);
	if (c->buf[c->pos] != '\n')
		return v1_bad(c, "PROXY v1: CR not followed by LF");
	c->pos++;
	return 1;
}

static bool is_proto_char(uint8_t ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static bool is_v4_char(uint8_t ch)
{
	return (ch >= '0' && ch <= '9') || ch == '.';
}

static bool is_v6_char(uint8_t ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
	       ch == ':' || ch == '.';
}

static bool is_digit(uint8_t ch)
{
	return ch >= '0' && ch <= '9';
}

static bool prefix_of(const char *part, size_t n, const char *word)
{
	return n <= strlen(word) && memcmp(part, word, n) == 0;
}

/* The protocol token, with early rejection of anything that cannot become
 * TCP4, TCP6 or UNKNOWN. */
static long v1_proto(struct v1_cursor *c, char *tok, char *term)
{
	size_t start = c->pos;
	long r = v1_token(c, tok, 8, is_proto_char, " \r", term, "PROXY v1: bad protocol");

	if (r == NEED_MORE) {
		size_t n = c->lim - start;
		const char *part = (const char *)c->buf + start;

		if (!prefix_of(part, n, "TCP4") && !prefix_of(part, n, "TCP6") &&
		    !prefix_of(part, n, "UNKNOWN"))
			return v1_bad(c, "PROXY v1: bad protocol");
		return NEED_MORE;
	}
	if (r < 0)
		return r;
	if (strcmp(tok, "UNKNOWN") == 0)
		return 1;
	if ((strcmp(tok, "TCP4") != 0 && strcmp(tok, "TCP6") != 0) || *term != ' ')
		return v1_bad(c, "PROXY v1: bad protocol");
	return 1;
}

static long v1_addr(struct v1_cursor *c, int family, struct sockaddr_storage *ss, const char *why)
{
	char tok[INET6_ADDRSTRLEN], term;
	long r;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		/* 15 chars at most; inet_pton refuses leading zeros, octets
		 * over 255 and anything but four parts, as the spec does. */
		r = v1_token(c, tok, 16, is_v4_char, " ", &term, why);
		if (r <= 0)
			return r;
		if (inet_pton(AF_INET, tok, &sin->sin_addr) != 1)
			return v1_bad(c, why);
		sin->sin_family = AF_INET;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		r = v1_token(c, tok, sizeof(tok), is_v6_char, " ", &term, why);
		if (r <= 0)
			return r;
		if (inet_pton(AF_INET6, tok, &sin6->sin6_addr) != 1)
			return v1_bad(c, why);
		sin6->sin6_family = AF_INET6;
	}
	return 1;
}

static long v1_port(struct v1_cursor *c, const char *terms, struct sockaddr_storage *ss,
                    const char *why)
{
	char tok[6], term;
	unsigned long v = 0;
	size_t i;
	long r = v1_token(c, tok, sizeof(tok), is_digit, terms, &term, why);

	if (r <= 0)
		return r;
	if (tok[0] == '0' && tok[1] != '\0')
		return v1_bad(c, why); /* no leading zeros, as for addresses */
	for (i = 0; tok[i] != '\0'; i++)
		v = v * 10 + (unsigned long)(tok[i] - '0');
	if (v > 65535)
		return v1_bad(c, why);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)v);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)v);
	return 1;
}

static long parse_v1(const uint8_t *buf, size_t len, struct proxy_header *out, const char **error)
{
	static const char magic[] = "PROXY ";
	struct v1_cursor c = {
	        .buf = buf,
	        .lim = len < PROXY_V1_MAX ? len : PROXY_V1_MAX,
	        .capped = len >= PROXY_V1_MAX,
	        .pos = 0,
	        .error = error,
	};
	char proto[8], term;
	int family;
	long r;

	for (; c.pos < sizeof(magic) - 1; c.pos++) {
		if (c.pos >= c.lim)
			return v1_end(&c);
		if (buf[c.pos] != (uint8_t)magic[c.pos])
			return v1_bad(&c, "not a PROXY protocol header");
	}
	out->version = 1;
	if ((r = v1_proto(&c, proto, &term)) <= 0)
		return r;

	if (strcmp(proto, "UNKNOWN") == 0) {
		/* The receiver must ignore the rest of the line; still, a bare
		 * CR or LF is not a line end. */
		out->local = true;
		if (term == ' ') {
			for (;;) {
				if (c.pos >= c.lim)
					return v1_end(&c);
				if (buf[c.pos] == '\n')
					return v1_bad(&c, "PROXY v1: LF without CR");
				if (buf[c.pos++] == '\r')
					break;
			}
		}
		if ((r = v1_expect_lf(&c)) <= 0)
			return r;
		return (long)c.pos;
	}

	family = strcmp(proto, "TCP4") == 0 ? AF_INET : AF_INET6;
	if ((r = v1_addr(&c, family, &out->src, "PROXY v1: bad source address")) <= 0 ||
	    (r = v1_addr(&c, family, &out->dst, "PROXY v1: bad destination address")) <= 0 ||
	    (r = v1_port(&c, " ", &out->src, "PROXY v1: bad source port")) <= 0 ||
	    (r = v1_port(&c, "\r", &out->dst, "PROXY v1: bad destination port")) <= 0 ||
	    (r = v1_expect_lf(&c)) <= 0)
		return r;
	return (long)c.pos;
}

/* ---- v2: 16-byte header, address block, TLVs ---- */

#define PP2_SIG_LEN        12
#define PP2_HDR_LEN        16
#define PP2_CMD_LOCAL      0x0
#define PP2_CMD_PROXY      0x1
#define PP2_AF_UNSPEC      0x0
#define PP2_AF_INET        0x1
#define PP2_AF_INET6       0x2
#define PP2_AF_UNIX        0x3
#define PP2_TR_UNSPEC      0x0
#define PP2_TR_STREAM      0x1
#define PP2_TR_DGRAM       0x2
#define PP2_ADDR_LEN_INET  12
#define PP2_ADDR_LEN_INET6 36
#define PP2_ADDR_LEN_UNIX  216
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C    0x03
#define PP2_TYPE_UNIQUE_ID 0x05
#define PP2_TYPE_SSL       0x20
#define PP2_SSL_HDR_LEN    5 /* client (1) + verify (4) */
#define PP2_UNIQUE_ID_MAX  128

static const uint8_t pp2_sig[PP2_SIG_LEN] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                             0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static long v2_bad(const char **error, const char *why)
{
	*error = why;
	return INVALID;
}

/* CRC32c (Castagnoli, reflected 0x82F63B78) as RFC 4960 appendix B, over
 * the header with the 4 checksum bytes at skip taken as zero. */
static uint32_t crc32c_header(const uint8_t *buf, size_t len, size_t skip)
{
	uint32_t crc = 0xFFFFFFFFu;
	size_t i;
	int k;

	for (i = 0; i < len; i++) {
		uint8_t byte = (i >= skip && i < skip + 4) ? 0 : buf[i];

		crc ^= byte;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return crc ^ 0xFFFFFFFFu;
}

/* Walk a TLV list in [off, end); calls itself once for the SSL sub-TLVs. */
static long v2_tlvs(const uint8_t *buf, size_t off, size_t end, size_t total, bool top,
                    struct proxy_header *out, const char **error)
{
	bool have_authority = false, have_crc = false;

	while (off < end) {
		uint8_t type;
		size_t tlen;
		const uint8_t *v;
		size_t i;

		if (end - off < 3)
			return v2_bad(error, "PROXY v2: truncated TLV");
		type = buf[off];
		tlen = ((size_t)buf[off + 1] << 8) | buf[off + 2];
		off += 3;
		if (tlen > end - off)
			return v2_bad(error, "PROXY v2: TLV runs past the header");
		v = buf + off;
		if (!top) {
			off += tlen; /* SSL sub-TLVs: only their bounds matter */
			continue;
		}
		switch (type) {
		case PP2_TYPE_AUTHORITY:
			if (have_authority)
				return v2_bad(error, "PROXY v2: duplicate AUTHORITY TLV");
			if (tlen >= sizeof(out->authority))
				return v2_bad(error,
				              "PROXY v2: AUTHORITY TLV longer than 255 bytes");
			for (i = 0; i < tlen; i++) {
				if (v[i] <= 0x20 || v[i] == 0x7f)
					return v2_bad(
					        error,
					        "PROXY v2: control character in AUTHORITY TLV");
			}
			memcpy(out->authority, v, tlen);
			out->authority[tlen] = '\0';
			have_authority = true;
			break;
		case PP2_TYPE_CRC32C: {
			uint32_t want;

			if (tlen != 4 || have_crc)
				return v2_bad(error, "PROXY v2: bad CRC32C TLV");
			want = ((uint32_t)v[0] << 24) | ((uint32_t)v[1] << 16) |
			       ((uint32_t)v[2] << 8) | v[3];
			if (crc32c_header(buf, total, off) != want)
				return v2_bad(error, "PROXY v2: CRC32C mismatch");
			have_crc = true;
			break;
		}
		case PP2_TYPE_UNIQUE_ID:
			if (tlen > PP2_UNIQUE_ID_MAX)
				return v2_bad(error,
				              "PROXY v2: UNIQUE_ID TLV longer than 128 bytes");
			break;
		case PP2_TYPE_SSL: {
			long r;

			if (tlen < PP2_SSL_HDR_LEN)
				return v2_bad(error, "PROXY v2: SSL TLV shorter than 5 bytes");
			r = v2_tlvs(buf, off + PP2_SSL_HDR_LEN, off + tlen, total, false, out,
			            error);
			if (r < 0)
				return r;
			break;
		}
		default:
			break; /* ALPN, NOOP, NETNS, custom: not ours to judge */
		}
		off += tlen;
	}
	return 1;
}

static long parse_v2(const uint8_t *buf, size_t len, struct proxy_header *out, const char **error)
{
	size_t n = len < PP2_SIG_LEN ? len : PP2_SIG_LEN, addr_len, total;
	unsigned cmd, af = 0, tr = 0;
	long r;

	if (memcmp(buf, pp2_sig, n) != 0)
		return v2_bad(error, "not a PROXY protocol header");
	if (len <= PP2_SIG_LEN)
		return NEED_MORE;
	if ((buf[12] >> 4) != 2)
		return v2_bad(error, "PROXY v2: unsupported version");
	cmd = buf[12] & 0x0F;
	if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
		return v2_bad(error, "PROXY v2: unknown command");
	if (len < 14)
		return NEED_MORE;
	/* LOCAL ignores the family altogether (spec 2.2). */
	if (cmd == PP2_CMD_PROXY) {
		af = buf[13] >> 4;
		tr = buf[13] & 0x0F;
		if (af > PP2_AF_UNIX || tr > PP2_TR_DGRAM)
			return v2_bad(error, "PROXY v2: unknown address family or transport");
		/* A datagram flow cannot be what reached a stream listener. */
		if (tr == PP2_TR_DGRAM)
			return v2_bad(error, "PROXY v2: datagram transport on a stream listener");
	}
	if (len < PP2_HDR_LEN)
		return NEED_MORE;
	addr_len = ((size_t)buf[14] << 8) | buf[15];
	total = PP2_HDR_LEN + addr_len;
	if (cmd == PP2_CMD_PROXY && tr == PP2_TR_STREAM) {
		if ((af == PP2_AF_INET && addr_len < PP2_ADDR_LEN_INET) ||
		    (af == PP2_AF_INET6 && addr_len < PP2_ADDR_LEN_INET6) ||
		    (af == PP2_AF_UNIX && addr_len < PP2_ADDR_LEN_UNIX))
			return v2_bad(error, "PROXY v2: length too short for the address family");
	}
	if (len < total)
		return NEED_MORE;

	out->version = 2;
	/* LOCAL (health checks), and UNSPEC/UNIX which give no IP endpoints:
	 * the socket's own addresses stand. */
	if (cmd == PP2_CMD_LOCAL || tr != PP2_TR_STREAM ||
	    (af != PP2_AF_INET && af != PP2_AF_INET6)) {
		out->local = true;
		return (long)total;
	}

	if (af == PP2_AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;

		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, buf + 16, 4);
		memcpy(&d->sin_addr, buf + 20, 4);
		memcpy(&s->sin_port, buf + 24, 2);
		memcpy(&d->sin_port, buf + 26, 2);
		r = v2_tlvs(buf, PP2_HDR_LEN + PP2_ADDR_LEN_INET, total, total, true, out, error);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;

		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, buf + 16, 16);
		memcpy(&d->sin6_addr, buf + 32, 16);
		memcpy(&s->sin6_port, buf + 48, 2);
		memcpy(&d->sin6_port, buf + 50, 2);
		r = v2_tlvs(buf, PP2_HDR_LEN + PP2_ADDR_LEN_INET6, total, total, true, out, error);
	}
	if (r < 0)
		return r;
	return (long)total;
}

long proxy_header_parse(const uint8_t *buf, size_t len, struct proxy_header *out,
                        const char **error)
{
	const char *ignored;
	struct proxy_header scratch;
	long r;

	if (error == NULL)
		error = &ignored;
	if (out == NULL)
		out = &scratch;
	*error = NULL;
	memset(out, 0, sizeof(*out));
	if (len == 0 || buf == NULL)
		return NEED_MORE;
	if (buf[0] == 'P')
		r = parse_v1(buf, len, out, error);
	else if (buf[0] == pp2_sig[0])
		r = parse_v2(buf, len, out, error);
	else
		r = v2_bad(error, "not a PROXY protocol header");
	if (r <= 0) {
		memset(out, 0, sizeof(*out));
		if (r == NEED_MORE)
			*error = NULL;
	}
	return r;
}
