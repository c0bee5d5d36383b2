/* PROXY protocol v1/v2 parser: round trips with the builders, every prefix,
 * and the malformed headers a receiver must refuse. Every parse reads from
 * a heap copy of exactly len bytes so ASan/valgrind see any over-read. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "announce.h"

static long parse_exact(const void *data, size_t len, struct proxy_header *ph, const char **err)
{
	uint8_t *copy = malloc(len > 0 ? len : 1);
	long r;

	assert_non_null(copy);
	if (len > 0)
		memcpy(copy, data, len);
	r = proxy_header_parse(len > 0 ? copy : NULL, len, ph, err);
	free(copy);
	return r;
}

static long parse_str(const char *s, struct proxy_header *ph, const char **err)
{
	return parse_exact(s, strlen(s), ph, err);
}

static void set_addr(struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	}
}

static void assert_endpoint(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];

	assert_string_equal(announce_addr_str(ss, buf, sizeof(buf)), ip);
	assert_int_equal(announce_port(ss), port);
}

/* Every proper prefix must ask for more, the whole must parse to len. */
static void assert_prefixes_need_more(const void *data, size_t len)
{
	struct proxy_header ph;
	const char *err;
	size_t i;

	for (i = 0; i < len; i++) {
		long r = parse_exact(data, i, &ph, &err);

		if (r != 0)
			fail_msg("prefix of %zu/%zu bytes: %ld (%s)", i, len, r, err ? err : "");
		assert_null(err);
	}
	assert_int_equal(parse_exact(data, len, &ph, &err), (long)len);
}

static void hexbytes(uint8_t *out, size_t *n, const char *h)
{
	*n = 0;
	while (*h != '\0') {
		unsigned v;

		if (*h == ' ') {
			h++;
			continue;
		}
		assert_int_equal(sscanf(h, "%2x", &v), 1);
		out[(*n)++] = (uint8_t)v;
		h += 2;
	}
}

#define SIG "0d0a0d0a000d0a515549540a"

/* ---- v2 ---- */

static void test_v2_evidence(void **state)
{
	uint8_t buf[64];
	size_t n;
	struct proxy_header ph;
	const char *err;

	hexbytes(buf, &n, "0d0a0d0a000d0a515549540a2111000cc63364077f0000036669008f");
	assert_int_equal(n, 28);
	assert_int_equal(parse_exact(buf, n, &ph, &err), 28);
	assert_int_equal(ph.version, 2);
	assert_false(ph.local);
	assert_endpoint(&ph.src, "198.51.100.7", 26217);
	assert_endpoint(&ph.dst, "127.0.0.3", 143);
	assert_string_equal(ph.authority, "");
	assert_prefixes_need_more(buf, n);

	/* the client's first bytes behind the header are not consumed */
	memcpy(buf + n, "a1 CAPABILITY\r\n", 15);
	assert_int_equal(parse_exact(buf, n + 15, &ph, &err), 28);
}

struct rt_case {
	const char *cip;
	unsigned cport;
	const char *lip;
	unsigned lport;
	const char *want_src, *want_dst; /* after family unification */
};

static const struct rt_case rt_cases[] = {
        {"198.51.100.7", 26217, "127.0.0.3", 143, "198.51.100.7", "127.0.0.3"},
        {"2001:db8::7", 5555, "2001:db8::1", 993, "2001:db8::7", "2001:db8::1"},
        /* mixed: IPv4 side goes out IPv4-mapped, prints as IPv4 again */
        {"198.51.100.7", 5555, "2001:db8::1", 993, "198.51.100.7", "2001:db8::1"},
        {"2001:db8::7", 1, "203.0.113.10", 65535, "2001:db8::7", "203.0.113.10"},
        {"::ffff:198.51.100.7", 0, "::ffff:127.0.0.3", 110, "198.51.100.7", "127.0.0.3"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535,
         "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
        {"0.0.0.0", 0, "255.255.255.255", 65535, "0.0.0.0", "255.255.255.255"},
};

static void test_round_trip(void **state)
{
	size_t i, variant;

	for (i = 0; i < sizeof(rt_cases) / sizeof(rt_cases[0]); i++) {
		for (variant = 0; variant < 4; variant++) {
			const struct rt_case *c = &rt_cases[i];
			struct announce_info info;
			struct proxy_header ph;
			char line[PROXY_V1_MAX + 1];
			uint8_t bin[PROXY_V2_SEND_MAX];
			const char *err;
			size_t n;

			memset(&info, 0, sizeof(info));
			set_addr(&info.client, c->cip, c->cport);
			set_addr(&info.local, c->lip, c->lport);
			if (variant & 1) {
				info.sni = "imap.example.org";
				info.session_id = "Ab3dEf7hIj9lMn0p";
			}
			if (variant & 2) {
				info.tls = true;
				info.tls_version = "TLSv1.3";
				info.tls_cipher = "TLS_AES_256_GCM_SHA384";
			}

			n = proxy_v1_build(&info, line, sizeof(line));
			assert_true(n > 0 && n <= PROXY_V1_MAX);
			assert_int_equal(parse_exact(line, n, &ph, &err), (long)n);
			assert_int_equal(ph.version, 1);
			assert_false(ph.local);
			assert_endpoint(&ph.src, c->want_src, c->cport);
			assert_endpoint(&ph.dst, c->want_dst, c->lport);
			assert_int_equal(ph.src.ss_family, ph.dst.ss_family);
			assert_prefixes_need_more(line, n);

			n = proxy_v2_build(&info, bin, sizeof(bin));
			assert_true(n >= 28);
			assert_int_equal(parse_exact(bin, n, &ph, &err), (long)n);
			assert_int_equal(ph.version, 2);
			assert_false(ph.local);
			assert_endpoint(&ph.src, c->want_src, c->cport);
			assert_endpoint(&ph.dst, c->want_dst, c->lport);
			assert_string_equal(ph.authority, (variant & 1) ? "imap.example.org" : "");
			assert_prefixes_need_more(bin, n);
		}
	}
}

static void test_v2_largest_build_round_trip(void **state)
{
	struct announce_info info;
	struct proxy_header ph;
	char sni[256], ver[65], ciph[65];
	uint8_t bin[PROXY_V2_SEND_MAX];
	const char *err;
	size_t n;

	memset(&info, 0, sizeof(info));
	set_addr(&info.client, "2001:db8::7", 5555);
	set_addr(&info.local, "2001:db8::1", 993);
	memset(sni, 'h', 255);
	sni[255] = '\0';
	memset(ver, 'v', 64);
	ver[64] = '\0';
	memset(ciph, 'c', 64);
	ciph[64] = '\0';
	info.sni = sni;
	info.session_id = "x";
	info.tls = true;
	info.tls_version = ver;
	info.tls_cipher = ciph;
	n = proxy_v2_build(&info, bin, sizeof(bin));
	assert_true(n > 400);
	assert_int_equal(parse_exact(bin, n, &ph, &err), (long)n);
	assert_string_equal(ph.authority, sni);
	assert_prefixes_need_more(bin, n);
}

static void test_v2_local_and_non_ip(void **state)
{
	uint8_t buf[300];
	size_t n;
	struct proxy_header ph;
	const char *err;

	/* LOCAL (health check): nothing to take, length honoured, family ignored */
	hexbytes(buf, &n, SIG "20 00 0000");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 16);
	assert_true(ph.local);
	assert_int_equal(ph.version, 2);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	hexbytes(buf, &n, SIG "20 ff 0005 0102030405 4142");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 21);
	assert_true(ph.local);
	hexbytes(buf, &n, SIG "20 11 000c c6336407 7f000003 6669 008f");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 28);
	assert_true(ph.local);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	assert_prefixes_need_more(buf, n);

	/* PROXY over UNSPEC: use the socket's addresses */
	hexbytes(buf, &n, SIG "21 00 0000");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 16);
	assert_true(ph.local);
	hexbytes(buf, &n, SIG "21 10 000c c6336407 7f000003 6669 008f");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 28);
	assert_true(ph.local);

	/* AF_UNIX stream: 216 address bytes, local */
	hexbytes(buf, &n, SIG "21 31 00d8");
	memset(buf + n, 0, 216);
	assert_int_equal(parse_exact(buf, n + 216, &ph, &err), 16 + 216);
	assert_true(ph.local);
	assert_prefixes_need_more(buf, n + 216);
}

static void test_v2_rejects(void **state)
{
	static const struct {
		const char *hex;
		size_t reject_at; /* shortest prefix that is already refused */
	} bad[] = {
	        {"0d0a0d0a000d0a515549540b 21 11 000c", 12}, /* signature */
	        {"0d0a0d0a010d0a515549540a 21 11 000c", 5},
	        {"0d0d", 2},
	        {SIG "11 11 000c", 13}, /* version 1 */
	        {SIG "31 11 000c", 13}, /* version 3 */
	        {SIG "22 11 000c", 13}, /* command 2 */
	        {SIG "2f 11 000c", 13},
	        {SIG "21 41 000c", 14}, /* family 4 */
	        {SIG "21 13 000c", 14}, /* transport 3 */
	        {SIG "21 12 000c", 14}, /* UDP4 */
	        {SIG "21 22 0024", 14}, /* UDP6 */
	        {SIG "21 32 00d8", 14}, /* UNIX dgram */
	        {SIG "21 11 000b", 16}, /* TCP4 needs 12 */
	        {SIG "21 11 0000", 16},
	        {SIG "21 21 0023", 16}, /* TCP6 needs 36 */
	        {SIG "21 21 000c", 16},
	        {SIG "21 31 00d7", 16}, /* UNIX needs 216 */
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t buf[64];
		size_t n, k;
		struct proxy_header ph;
		const char *err;

		hexbytes(buf, &n, bad[i].hex);
		for (k = 1; k <= n; k++) {
			long r = parse_exact(buf, k, &ph, &err);

			if (k < bad[i].reject_at) {
				assert_int_equal(r, 0);
			} else {
				if (r != -1)
					fail_msg("case %zu prefix %zu: %ld", i, k, r);
				assert_non_null(err);
			}
		}
	}
}

/* A length beyond what has arrived is "need more", never a read past len,
 * whatever the length says (up to 65535). */
static void test_v2_length_beyond_buffer(void **state)
{
	uint8_t buf[128];
	size_t n;
	struct proxy_header ph;
	const char *err;

	hexbytes(buf, &n, SIG "21 11 ffff c6336407 7f000003 6669 008f 02 0010");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 0);
	hexbytes(buf, &n, SIG "21 21 0100");
	memset(buf + n, 0xAA, 100);
	assert_int_equal(parse_exact(buf, n + 100, &ph, &err), 0);
	hexbytes(buf, &n, SIG "20 00 ffff");
	assert_int_equal(parse_exact(buf, n, &ph, &err), 0);
}

/* TCP4 header with the given TLV bytes appended; returns the length. */
static size_t v2_with_tlvs(uint8_t *buf, const char *tlv_hex)
{
	uint8_t tlv[600];
	size_t n, tn;

	hexbytes(tlv, &tn, tlv_hex);
	hexbytes(buf, &n, SIG "21 11 0000 c6336407 7f000003 6669 008f");
	buf[14] = (uint8_t)((12 + tn) >> 8);
	buf[15] = (uint8_t)(12 + tn);
	memcpy(buf + n, tlv, tn);
	return n + tn;
}

static void test_v2_tlv_bounds(void **state)
{
	static const char *const bad[] = {
	        "02",                                /* 1 byte left: no room for a TLV header */
	        "02 00",                             /* 2 bytes */
	        "04 0000 02 00",                     /* a valid NOOP, then a truncated header */
	        "02 0005 6162",                      /* AUTHORITY claims 5, has 2 */
	        "04 0001",                           /* NOOP claims 1, has 0 */
	        "e0 ffff 00",                        /* custom type, absurd length */
	        "20 0004 01000000",                  /* SSL shorter than client+verify */
	        "20 0007 01 00000000 21 00",         /* SSL sub-TLV header truncated */
	        "20 000a 01 00000000 21 0005 41 42", /* sub-TLV past the SSL TLV */
	        "20 0006 01 00000000 21 0005 4142434445", /* SSL TLV shorter than its subs */
	        "02 0003 610062",                         /* NUL in AUTHORITY */
	        "02 0003 610a62",                         /* LF in AUTHORITY */
	        "02 0003 612062",                         /* space in AUTHORITY */
	        "02 0001 61 02 0001 62",                  /* AUTHORITY twice */
	        "03 0003 000000",                         /* CRC32C must be 4 bytes */
	};
	uint8_t buf[700];
	size_t i, n;
	struct proxy_header ph;
	const char *err;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = v2_with_tlvs(buf, bad[i]);
		if (parse_exact(buf, n, &ph, &err) != -1)
			fail_msg("TLV case %zu accepted", i);
		assert_non_null(err);
		assert_string_equal(ph.authority, "");
		/* a following byte in the buffer must not rescue a TLV */
		buf[n] = 0x00;
		assert_int_equal(parse_exact(buf, n + 1, &ph, &err), -1);
	}

	/* AUTHORITY of 256 bytes, UNIQUE_ID of 129 */
	{
		char h[1200], *p;
		int k;

		p = h + sprintf(h, "02 0100 ");
		for (k = 0; k < 256; k++)
			p += sprintf(p, "61");
		n = v2_with_tlvs(buf, h);
		assert_int_equal(parse_exact(buf, n, &ph, &err), -1);
		p = h + sprintf(h, "05 0081 ");
		for (k = 0; k < 129; k++)
			p += sprintf(p, "75");
		n = v2_with_tlvs(buf, h);
		assert_int_equal(parse_exact(buf, n, &ph, &err), -1);
		p = h + sprintf(h, "05 0080 ");
		for (k = 0; k < 128; k++)
			p += sprintf(p, "75");
		n = v2_with_tlvs(buf, h);
		assert_int_equal(parse_exact(buf, n, &ph, &err), (long)n);
	}
}

static void test_v2_tlvs_accepted(void **state)
{
	uint8_t buf[700];
	size_t n;
	struct proxy_header ph;
	const char *err;

	/* ALPN, NOOP (empty and padded), AUTHORITY, NETNS, SSL with CN
	 * and an unknown sub-type, a custom type */
	n = v2_with_tlvs(buf, "01 0009 0769 6d61 7034 7265 76"
	                      "04 0000 04 0002 0000"
	                      "02 0010 696d61702e6578616d706c652e6f7267"
	                      "30 0002 6e73"
	                      "20 0013 05 00000000 22 0003 636e31 7f 0005 7a7a7a7a7a"
	                      "e0 0001 ff");
	assert_int_equal(parse_exact(buf, n, &ph, &err), (long)n);
	assert_string_equal(ph.authority, "imap.example.org");
	assert_prefixes_need_more(buf, n);

	/* UTF-8 authority and an empty one */
	n = v2_with_tlvs(buf, "02 0006 c3a9c3a92e64");
	assert_int_equal(parse_exact(buf, n, &ph, &err), (long)n);
	assert_string_equal(ph.authority, "\xc3\xa9\xc3\xa9.d");
	n = v2_with_tlvs(buf, "02 0000");
	assert_int_equal(parse_exact(buf, n, &ph, &err), (long)n);
	assert_string_equal(ph.authority, "");
}

/* CRC32c, table-driven here (the parser computes it bitwise). */
static uint32_t crc_table[256];

static void crc_init(void)
{
	uint32_t i, c;
	int k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;

	while (n--)
		c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static void test_v2_crc32c(void **state)
{
	uint8_t buf[128];
	size_t n;
	uint32_t crc;
	struct proxy_header ph;
	const char *err;

	crc_init();
	assert_int_equal(crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);

	n = v2_with_tlvs(buf, "02 0004 686f7374 03 0004 00000000 04 0001 00");
	crc = crc32c(buf, n);
	buf[n - 4 - 4] = (uint8_t)(crc >> 24);
	buf[n - 4 - 3] = (uint8_t)(crc >> 16);
	buf[n - 4 - 2] = (uint8_t)(crc >> 8);
	buf[n - 4 - 1] = (uint8_t)crc;
	assert_int_equal(parse_exact(buf, n, &ph, &err), (long)n);
	assert_string_equal(ph.authority, "host");
	assert_prefixes_need_more(buf, n);

	buf[20] ^= 1; /* a changed address: checksum no longer matches */
	assert_int_equal(parse_exact(buf, n, &ph, &err), -1);
	assert_non_null(err);
	buf[20] ^= 1;
	buf[n - 5] ^= 0x80; /* a changed checksum */
	assert_int_equal(parse_exact(buf, n, &ph, &err), -1);
}

/* ---- v1 ---- */

static void test_v1_accepts(void **state)
{
	struct proxy_header ph;
	const char *err;
	const char *unknown_max = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

	assert_int_equal(parse_str("PROXY TCP4 198.51.100.7 127.0.0.3 26227 25\r\n", &ph, &err),
	                 44);
	assert_int_equal(ph.version, 1);
	assert_false(ph.local);
	assert_endpoint(&ph.src, "198.51.100.7", 26227);
	assert_endpoint(&ph.dst, "127.0.0.3", 25);

	assert_int_equal(parse_str("PROXY TCP6 2001:DB8::7 ::1 0 65535\r\nEHLO x\r\n", &ph, &err),
	                 36);
	assert_endpoint(&ph.src, "2001:db8::7", 0);
	assert_endpoint(&ph.dst, "::1", 65535);
	assert_int_equal(ph.src.ss_family, AF_INET6);

	/* IPv4-mapped stays an AF_INET6 address, printed as IPv4 */
	assert_true(parse_str("PROXY TCP6 ::ffff:1.2.3.4 ::ffff:4.3.2.1 1 2\r\n", &ph, &err) > 0);
	assert_int_equal(ph.src.ss_family, AF_INET6);
	assert_endpoint(&ph.src, "1.2.3.4", 1);

	assert_int_equal(parse_str("PROXY UNKNOWN\r\n", &ph, &err), 15);
	assert_true(ph.local);
	assert_int_equal(ph.src.ss_family, AF_UNSPEC);
	assert_int_equal(parse_str("PROXY UNKNOWN whatever\tis here\r\nX", &ph, &err), 32);
	assert_true(ph.local);
	assert_int_equal(strlen(unknown_max), 107);
	assert_int_equal(parse_str(unknown_max, &ph, &err), 107);
	assert_prefixes_need_more(unknown_max, 107);
	assert_prefixes_need_more("PROXY UNKNOWN\r\n", 15);
}

static void test_v1_rejects(void **state)
{
	static const char *const bad[] = {
	        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1\t2\r\n",
	        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4\r\n",
	        "PROXY TCP4 1.2.3.4\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
	        "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
	        "PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
	        "PROXY TCP6 [::1] ::2 1 2\r\n",
	        "PROXY TCP6 ::1%eth0 ::2 1 2\r\n",
	        "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::2 1 2\r\n",
	        "PROXY TCP6 :::1 ::2 1 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 0123 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
	        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
	        "PROXY UNKNOWN\n",
	        "PROXY UNKNOWN x\ny\r\n",
	        "PROXY UNKNOWN\rx\r\n",
	        "PROXY UNKNOWNX\r\n",
	        "PROXY\r\n",
	        "PROXY \r\n",
	        "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	        "GET / HTTP/1.1\r\n",
	        "a1 LOGIN x y\r\n",
	        "\r\nX",
	        "\r\n\r\n\r",
	        "EHLO x\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct proxy_header ph;
		const char *err = NULL;
		long r = parse_str(bad[i], &ph, &err);

		if (r != -1)
			fail_msg("accepted %zu: \"%s\" -> %ld", i, bad[i], r);
		assert_non_null(err);
		assert_int_equal(ph.version, 0);
	}
}

/* Garbage is refused as soon as it cannot be a header any more. */
static void test_v1_early_reject(void **state)
{
	struct proxy_header ph;
	const char *err;

	assert_int_equal(parse_str("G", &ph, &err), -1);
	assert_int_equal(parse_str("PROXX", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY X", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY TCP5", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY TCP4 1.2.3.4x", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 123456", &ph, &err), -1);
	assert_int_equal(parse_str("PROXY TCP4 1234567890123456", &ph, &err), -1);
	assert_int_equal(
	        parse_str("PROXY TCP6 1:2:3:4:5:6:7:8:9:a:b:c:d:e:f:0:1:2:3:4:5:6:7:8", &ph, &err),
	        -1);
	/* still possible: wait */
	assert_int_equal(parse_str("PROXY UNK", &ph, &err), 0);
	assert_int_equal(parse_str("\r\n", &ph, &err), 0); /* the v2 signature starts so */
	assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", &ph, &err), 0);
}

static void test_v1_overlong(void **state)
{
	struct proxy_header ph;
	const char *err;
	char line[300];

	/* UNKNOWN with 108 bytes up to and including the LF */
	memcpy(line, "PROXY UNKNOWN ", 14);
	memset(line + 14, 'a', 92);
	memcpy(line + 106, "\r\n", 3);
	assert_int_equal(strlen(line), 108);
	assert_int_equal(parse_str(line, &ph, &err), -1);
	assert_non_null(err);
	/* without any CRLF: undecided below 107 bytes, refused at 107 */
	memset(line + 14, 'a', 200);
	line[214] = '\0';
	assert_int_equal(parse_exact(line, 106, &ph, &err), 0);
	assert_int_equal(parse_exact(line, 107, &ph, &err), -1);
	assert_int_equal(parse_exact(line, 214, &ph, &err), -1);
	/* CR as byte 107, LF as byte 108 */
	line[106] = '\r';
	line[107] = '\n';
	assert_int_equal(parse_exact(line, 108, &ph, &err), -1);
	line[105] = '\r';
	line[106] = '\n';
	assert_int_equal(parse_exact(line, 108, &ph, &err), 107);
}

/* ---- random damage: no crash, no over-read, sane results ---- */

static uint32_t rng_state = 0x12345678u;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void test_mutations(void **state)
{
	struct announce_info info;
	uint8_t seeds[3][PROXY_V2_SEND_MAX];
	size_t seed_len[3];
	int iter;

	memset(&info, 0, sizeof(info));
	set_addr(&info.client, "2001:db8::7", 5555);
	set_addr(&info.local, "198.51.100.1", 993);
	info.sni = "imap.example.org";
	info.session_id = "Ab3dEf7hIj9lMn0p";
	info.tls = true;
	info.tls_version = "TLSv1.3";
	info.tls_cipher = "TLS_AES_256_GCM_SHA384";
	seed_len[0] = proxy_v2_build(&info, seeds[0], sizeof(seeds[0]));
	seed_len[1] = proxy_v1_build(&info, (char *)seeds[1], sizeof(seeds[1]));
	set_addr(&info.client, "198.51.100.7", 5555);
	seed_len[2] = proxy_v1_build(&info, (char *)seeds[2], sizeof(seeds[2]));

	for (iter = 0; iter < 20000; iter++) {
		uint8_t buf[PROXY_V2_SEND_MAX];
		size_t s = rng() % 3, len = seed_len[s], flips = 1 + rng() % 4, k;
		struct proxy_header ph;
		const char *err;
		long r;

		memcpy(buf, seeds[s], len);
		for (k = 0; k < flips; k++)
			buf[rng() % len] = (uint8_t)rng();
		len = rng() % (len + 1);
		r = parse_exact(buf, len, &ph, &err);
		assert_true(r >= -1 && r <= (long)len);
		if (r == -1)
			assert_non_null(err);
		else
			assert_null(err);
		if (r > 0 && !ph.local) {
			assert_true(ph.src.ss_family == AF_INET || ph.src.ss_family == AF_INET6);
			assert_int_equal(ph.src.ss_family, ph.dst.ss_family);
		}
		assert_true(memchr(ph.authority, '\0', sizeof(ph.authority)) != NULL);
	}
}

static void test_null_error_pointer(void **state)
{
	struct proxy_header ph;
	const uint8_t junk[] = "junk";

	assert_int_equal(proxy_header_parse(junk, 4, &ph, NULL), -1);
	assert_int_equal(proxy_header_parse(NULL, 0, &ph, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_v2_evidence),
	        cmocka_unit_test(test_round_trip),
	        cmocka_unit_test(test_v2_largest_build_round_trip),
	        cmocka_unit_test(test_v2_local_and_non_ip),
	        cmocka_unit_test(test_v2_rejects),
	        cmocka_unit_test(test_v2_length_beyond_buffer),
	        cmocka_unit_test(test_v2_tlv_bounds),
	        cmocka_unit_test(test_v2_tlvs_accepted),
	        cmocka_unit_test(test_v2_crc32c),
	        cmocka_unit_test(test_v1_accepts),
	        cmocka_unit_test(test_v1_rejects),
	        cmocka_unit_test(test_v1_early_reject),
	        cmocka_unit_test(test_v1_overlong),
	        cmocka_unit_test(test_mutations),
	        cmocka_unit_test(test_null_error_pointer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
