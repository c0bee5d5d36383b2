/* Announcement builders: PROXY v1/v2, XCLIENT (Postfix and Dovecot), IMAP ID. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "announce.h"

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

static struct announce_info make_info(const char *cip, unsigned cport, const char *lip,
                                      unsigned lport)
{
	struct announce_info info;

	memset(&info, 0, sizeof(info));
	set_addr(&info.client, cip, cport);
	set_addr(&info.local, lip, lport);
	return info;
}

/* Expected byte strings, written independently of the builder. */
struct bytes {
	uint8_t b[1024];
	size_t n;
};

static void hex(struct bytes *e, const char *h)
{
	while (*h != '\0') {
		unsigned v;

		if (*h == ' ') {
			h++;
			continue;
		}
		assert_int_equal(sscanf(h, "%2x", &v), 1);
		assert_true(e->n < sizeof(e->b));
		e->b[e->n++] = (uint8_t)v;
		h += 2;
	}
}

static void raw(struct bytes *e, const char *s)
{
	size_t n = strlen(s);

	assert_true(e->n + n <= sizeof(e->b));
	memcpy(e->b + e->n, s, n);
	e->n += n;
}

static void assert_bytes(const uint8_t *got, size_t got_n, const struct bytes *want)
{
	assert_int_equal(got_n, want->n);
	assert_memory_equal(got, want->b, want->n);
}

#define SIG "0d0a0d0a000d0a515549540a"

/* ---- PROXY v2 ---- */

/* evidence/N-imap-proxy-v2.txt: Dovecot accepted exactly these 28 bytes
 * and logged rip=198.51.100.7, rport=26217, lip=127.0.0.3, lport=143. */
static void test_v2_evidence_tcp4(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 143);
	struct bytes want = {0};
	uint8_t out[64];

	hex(&want, "0d0a0d0a000d0a515549540a2111000cc63364077f0000036669008f");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_tcp6(void **state)
{
	struct announce_info info = make_info("2001:db8::7", 5555, "2001:db8::1", 993);
	struct bytes want = {0};
	uint8_t out[128];

	hex(&want, SIG "21 21 0024");
	hex(&want, "20010db8000000000000000000000007 20010db8000000000000000000000001");
	hex(&want, "15b3 03e1");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_mixed_families(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 5555, "2001:db8::1", 993);
	struct bytes want = {0}, want2 = {0};
	uint8_t out[128];

	hex(&want, SIG "21 21 0024");
	hex(&want, "00000000000000000000ffffc6336407 20010db8000000000000000000000001");
	hex(&want, "15b3 03e1");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);

	/* and the reverse: IPv6 client on an IPv4 listener */
	info = make_info("2001:db8::7", 5555, "203.0.113.10", 143);
	hex(&want2, SIG "21 21 0024");
	hex(&want2, "20010db8000000000000000000000007 00000000000000000000ffffcb00710a");
	hex(&want2, "15b3 008f");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want2);
}

/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
static void test_v2_mapped_is_tcp4(void **state)
{
	struct announce_info info =
	        make_info("::ffff:198.51.100.7", 26217, "::ffff:127.0.0.3", 143);
	struct bytes want = {0};
	uint8_t out[64];

	hex(&want, "0d0a0d0a000d0a515549540a2111000cc63364077f0000036669008f");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);

	/* one side mapped, the other plain AF_INET: still both IPv4 */
	info = make_info("::ffff:198.51.100.7", 26217, "127.0.0.3", 143);
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_authority(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 993);
	struct bytes want = {0};
	uint8_t out[128];

	info.sni = "imap.example.org";
	hex(&want, SIG "21 11 001f c6336407 7f000003 6669 03e1");
	hex(&want, "02 0010");
	raw(&want, "imap.example.org");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_unique_id(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 143);
	struct bytes want = {0};
	uint8_t out[128];

	info.session_id = "Ab3dEf7hIj9lMn0p";
	hex(&want, SIG "21 11 001f c6336407 7f000003 6669 008f");
	hex(&want, "05 0010");
	raw(&want, "Ab3dEf7hIj9lMn0p");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_ssl(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 993);
	struct bytes want = {0};
	uint8_t out[128];

	info.tls = true;
	info.tls_version = "TLSv1.3";
	info.tls_cipher = "TLS_AES_256_GCM_SHA384";
	/* 12 + 3 + (5 + 3+7 + 3+22) = 55 = 0x37 */
	hex(&want, SIG "21 11 0037 c6336407 7f000003 6669 03e1");
	hex(&want, "20 0028 01 00000000");
	hex(&want, "21 0007");
	raw(&want, "TLSv1.3");
	hex(&want, "23 0016");
	raw(&want, "TLS_AES_256_GCM_SHA384");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_ssl_without_strings(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 993);
	struct bytes want = {0};
	uint8_t out[128];

	info.tls = true;
	hex(&want, SIG "21 11 0014 c6336407 7f000003 6669 03e1");
	hex(&want, "20 0005 01 00000000");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);

	/* not TLS: no SSL TLV even if strings are set */
	info.tls = false;
	info.tls_version = "TLSv1.3";
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 28);
}

static void test_v2_all_tlvs_tcp6(void **state)
{
	struct announce_info info = make_info("2001:db8::7", 5555, "2001:db8::1", 993);
	struct bytes want = {0};
	uint8_t out[256];

	info.sni = "mail.example.org";
	info.session_id = "Zx9";
	info.tls = true;
	info.tls_version = "TLSv1.2";
	info.tls_cipher = "ECDHE-RSA-AES128-GCM-SHA256";
	/* 36 + (3+16) + (3+3) + 3 + (5 + 3+7 + 3+27) = 109 = 0x6d */
	hex(&want, SIG "21 21 006d");
	hex(&want, "20010db8000000000000000000000007 20010db8000000000000000000000001 15b3 03e1");
	hex(&want, "02 0010");
	raw(&want, "mail.example.org");
	hex(&want, "05 0003");
	raw(&want, "Zx9");
	hex(&want, "20 002d 01 00000000 21 0007");
	raw(&want, "TLSv1.2");
	hex(&want, "23 001b");
	raw(&want, "ECDHE-RSA-AES128-GCM-SHA256");
	assert_bytes(out, proxy_v2_build(&info, out, sizeof(out)), &want);
}

static void test_v2_bad_strings_omitted(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26217, "127.0.0.3", 143);
	char longname[300], longid[200];
	uint8_t out[600];

	memset(longname, 'a', 256);
	longname[256] = '\0';
	memset(longid, 'b', 129);
	longid[129] = '\0';

	info.sni = longname;      /* 256: not a DNS name */
	info.session_id = longid; /* 129: over the spec's 128 */
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 28);
	info.sni = "bad name"; /* control/space characters */
	info.session_id = "";
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 28);
	info.sni = "";
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 28);

	longname[255] = '\0'; /* 255 is fine */
	info.sni = longname;
	longid[128] = '\0';
	info.session_id = longid;
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 28 + 3 + 255 + 3 + 128);
}

/* Postfix peeks at most 536 bytes: the session id gives way first. */
static void test_v2_postfix_budget(void **state)
{
	struct announce_info info = make_info("2001:db8::7", 5555, "2001:db8::1", 993);
	char sni[256], uid[129], ver[65], ciph[65];
	uint8_t out[1024];
	size_t n;

	memset(sni, 'h', 255);
	sni[255] = '\0';
	memset(uid, 'u', 128);
	uid[128] = '\0';
	memset(ver, 'v', 64);
	ver[64] = '\0';
	memset(ciph, 'c', 64);
	ciph[64] = '\0';
	info.sni = sni;
	info.session_id = uid;
	info.tls = true;
	info.tls_version = ver;
	info.tls_cipher = ciph;
	n = proxy_v2_build(&info, out, sizeof(out));
	assert_int_equal(n, 16 + 36 + 258 + 3 + 5 + 67 + 67);
	assert_true(n <= PROXY_V2_SEND_MAX);
	assert_null(memchr(out, 'u', n));

	/* realistic strings: everything fits, the id stays */
	info.tls_version = "TLSv1.3";
	info.tls_cipher = "TLS_CHACHA20_POLY1305_SHA256";
	n = proxy_v2_build(&info, out, sizeof(out));
	assert_int_equal(n, 16 + 36 + 258 + 131 + 3 + 5 + 10 + 31);
	assert_true(n <= PROXY_V2_SEND_MAX);
	assert_non_null(memchr(out, 'u', n));
}

static void test_v2_small_buffer_and_bad_family(void **state)
{
	struct announce_info info = make_info("2001:db8::7", 5555, "2001:db8::1", 993);
	uint8_t out[256];
	size_t full, i;

	info.sni = "imap.example.org";
	info.tls = true;
	full = proxy_v2_build(&info, out, sizeof(out));
	assert_true(full > 52);
	for (i = 0; i < full; i++)
		assert_int_equal(proxy_v2_build(&info, out, i), 0);
	assert_int_equal(proxy_v2_build(&info, out, full), full);

	info.local.ss_family = AF_UNIX;
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 0);
	info.local.ss_family = AF_UNSPEC;
	assert_int_equal(proxy_v2_build(&info, out, sizeof(out)), 0);
	assert_int_equal(proxy_v2_build(NULL, out, sizeof(out)), 0);
}

/* ---- PROXY v1 ---- */

static void test_v1_strings(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26227, "127.0.0.3", 25);
	char out[PROXY_V1_MAX + 1];

	/* evidence/N-smtp25-proxy-v1-deliver.txt */
	assert_int_equal(proxy_v1_build(&info, out, sizeof(out)), 44);
	assert_string_equal(out, "PROXY TCP4 198.51.100.7 127.0.0.3 26227 25\r\n");

	info = make_info("2001:db8::7", 5555, "2001:db8::1", 993);
	proxy_v1_build(&info, out, sizeof(out));
	assert_string_equal(out, "PROXY TCP6 2001:db8::7 2001:db8::1 5555 993\r\n");

	info = make_info("198.51.100.7", 5555, "2001:db8::1", 993);
	proxy_v1_build(&info, out, sizeof(out));
	assert_string_equal(out, "PROXY TCP6 ::ffff:198.51.100.7 2001:db8::1 5555 993\r\n");

	info = make_info("2001:db8::7", 0, "203.0.113.10", 65535);
	proxy_v1_build(&info, out, sizeof(out));
	assert_string_equal(out, "PROXY TCP6 2001:db8::7 ::ffff:203.0.113.10 0 65535\r\n");

	info = make_info("::ffff:198.51.100.7", 26227, "::ffff:127.0.0.3", 25);
	proxy_v1_build(&info, out, sizeof(out));
	assert_string_equal(out, "PROXY TCP4 198.51.100.7 127.0.0.3 26227 25\r\n");
}

static void test_v1_longest_and_small_buffer(void **state)
{
	struct announce_info info = make_info("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535,
	                                      "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	char out[PROXY_V1_MAX + 1];
	size_t i;

	assert_int_equal(proxy_v1_build(&info, out, sizeof(out)), 104);
	assert_string_equal(out, "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
	                         "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
	for (i = 0; i <= 104; i++)
		assert_int_equal(proxy_v1_build(&info, out, i), 0); /* no room for the NUL */
	assert_int_equal(proxy_v1_build(&info, out, 105), 104);

	info.client.ss_family = AF_UNIX;
	assert_int_equal(proxy_v1_build(&info, out, sizeof(out)), 0);
}

/* ---- XCLIENT ---- */

/* evidence/L-subm-XCLIENT-then-AUTH.txt: Postfix 3.7 on 587 */
#define POSTFIX_ATTRS "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"

static void test_xclient_parse_attrs(void **state)
{
	unsigned all = XCLIENT_NAME | XCLIENT_ADDR | XCLIENT_PROTO | XCLIENT_HELO |
	               XCLIENT_REVERSE_NAME | XCLIENT_PORT | XCLIENT_LOGIN | XCLIENT_DESTADDR |
	               XCLIENT_DESTPORT;
	const char nul[] = "ADDR\0PORT";
	const char *dovecot_smtp = "ADDR FORWARD TIMEOUT CLIENT-TRANSPORT SESSION TTL";

	assert_int_equal(xclient_parse_attrs(POSTFIX_ATTRS, strlen(POSTFIX_ATTRS)), all);
	assert_int_equal(xclient_parse_attrs(" name addr\r\n", 12), XCLIENT_NAME | XCLIENT_ADDR);
	assert_int_equal(xclient_parse_attrs(dovecot_smtp, strlen(dovecot_smtp)),
	                 XCLIENT_ADDR | XCLIENT_SESSION | XCLIENT_TTL);
	/* whole words only, and only within len */
	assert_int_equal(xclient_parse_attrs("ADDRESS NAMES PORT", 18), XCLIENT_PORT);
	assert_int_equal(xclient_parse_attrs("ADDR PORT", 3), 0);
	assert_int_equal(xclient_parse_attrs("ADDR PORT", 4), XCLIENT_ADDR);
	assert_int_equal(xclient_parse_attrs(nul, sizeof(nul) - 1), XCLIENT_ADDR);
	assert_int_equal(xclient_parse_attrs("", 0), 0);
	assert_int_equal(xclient_parse_attrs(NULL, 5), 0);
}

static void test_xclient_postfix_full(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26214, "203.0.113.10", 587);
	unsigned allowed = xclient_parse_attrs(POSTFIX_ATTRS, strlen(POSTFIX_ATTRS));
	char out[512];
	size_t n;

	info.helo = "client.example.org";
	info.proto = "ESMTP";
	info.session_id = "Ab3dEf7hIj9lMn0p";
	info.ttl = 5;
	n = xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=26214 NAME=[UNAVAILABLE] "
	                         "REVERSE_NAME=[UNAVAILABLE] HELO=client.example.org PROTO=ESMTP "
	                         "DESTADDR=203.0.113.10 DESTPORT=587\r\n");
	assert_int_equal(n, strlen(out));
	assert_null(strstr(out, "LOGIN"));
}

static void test_xclient_postfix_reduced(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26214, "203.0.113.10", 25);
	/* XCLIENT_README's example server: no PORT, no DEST*, no LOGIN */
	unsigned allowed = xclient_parse_attrs("NAME ADDR PROTO HELO", 20);
	char out[512];

	info.helo = "spike.porcupine.org";
	info.proto = "smtp";
	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 NAME=[UNAVAILABLE] "
	                         "HELO=spike.porcupine.org PROTO=SMTP\r\n");

	/* no HELO yet, unknown PROTO: those are left out, not sent empty */
	info.helo = NULL;
	info.proto = "LMTP";
	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 NAME=[UNAVAILABLE]\r\n");
	info.helo = "";
	info.proto = NULL;
	xclient_build(&info, XCLIENT_ADDR | XCLIENT_LOGIN, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7\r\n");

	/* LOGIN alone: nothing may be sent */
	assert_int_equal(xclient_build(&info, XCLIENT_LOGIN, out, sizeof(out)), 0);
	assert_int_equal(xclient_build(&info, 0, out, sizeof(out)), 0);
}

static void test_xclient_ipv6(void **state)
{
	struct announce_info info = make_info("2001:db8::7", 40000, "2001:db8::25", 25);
	unsigned allowed = XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_DESTADDR | XCLIENT_DESTPORT;
	char out[512];

	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=IPV6:2001:db8::7 PORT=40000 "
	                         "DESTADDR=IPV6:2001:db8::25 DESTPORT=25\r\n");

	/* dual-stack socket addresses of IPv4 peers are plain IPv4 */
	info = make_info("::ffff:198.51.100.7", 40000, "::ffff:203.0.113.10", 25);
	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=40000 "
	                         "DESTADDR=203.0.113.10 DESTPORT=25\r\n");

	/* port 0 is unknown to us: Postfix has a word for it */
	info = make_info("198.51.100.7", 0, "203.0.113.10", 0);
	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=[UNAVAILABLE] "
	                         "DESTADDR=203.0.113.10 DESTPORT=[UNAVAILABLE]\r\n");

	/* an unknown local address: DEST* left out; unknown client: nothing */
	info.local.ss_family = AF_UNSPEC;
	xclient_build(&info, allowed, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=[UNAVAILABLE]\r\n");
	info.client.ss_family = AF_UNIX;
	assert_int_equal(xclient_build(&info, allowed, out, sizeof(out)), 0);
}

static void test_xclient_xtext(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 1, "203.0.113.10", 25);
	char out[512];

	info.helo = "a+b=c d\x01\x7f~!\xc3\xa9";
	xclient_build(&info, XCLIENT_HELO, out, sizeof(out));
	assert_string_equal(out, "XCLIENT HELO=a+2Bb+3Dc+20d+01+7F~!+C3+A9\r\n");

	/* a hostile HELO cannot inject a second command or attribute */
	info.helo = "x\r\nRCPT TO:<a@b> LOGIN=root";
	xclient_build(&info, XCLIENT_HELO | XCLIENT_ADDR, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 "
	                         "HELO=x+0D+0ARCPT+20TO:<a@b>+20LOGIN+3Droot\r\n");
	assert_int_equal(strchr(out, '\r') - out, (long)strlen(out) - 2);
}

/* Postfix refuses raw values over 255 bytes (501): such a HELO is left
 * out, and the longest line still fits the 512-byte SMTP limit. */
static void test_xclient_limits(void **state)
{
	struct announce_info info = make_info("2001:db8:1234:5678:9abc:def0:1234:5678", 65535,
	                                      "2001:db8:1234:5678:9abc:def0:1234:5679", 65535);
	unsigned allowed = xclient_parse_attrs(POSTFIX_ATTRS, strlen(POSTFIX_ATTRS));
	char helo[300], out[600];
	size_t n, i;

	memset(helo, 'h', 255);
	helo[255] = '\0';
	info.helo = helo;
	info.proto = "ESMTP";
	n = xclient_build(&info, allowed, out, sizeof(out));
	assert_true(n > 255 && n <= 512);
	assert_non_null(strstr(out, " HELO=hhhh"));

	helo[254] = '+'; /* encodes to 257 */
	n = xclient_build(&info, allowed, out, sizeof(out));
	assert_true(n > 0);
	assert_null(strstr(out, "HELO="));

	helo[254] = 'h';
	helo[255] = 'h';
	helo[256] = '\0';
	n = xclient_build(&info, allowed, out, sizeof(out));
	assert_null(strstr(out, "HELO="));

	/* short buffers fail whole, never a truncated line */
	helo[255] = '\0';
	n = xclient_build(&info, allowed, out, sizeof(out));
	for (i = 0; i <= n; i++)
		assert_int_equal(xclient_build(&info, allowed, out, i), 0);
	assert_int_equal(xclient_build(&info, allowed, out, n + 1), n);
}

/* evidence/L-pop3-XCLIENT-trusted.txt, L-sieve-XCLIENT-trusted.txt */
static void test_xclient_dovecot(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26212, "127.0.0.2", 110);
	unsigned implicit = XCLIENT_ADDR | XCLIENT_PORT | XCLIENT_SESSION | XCLIENT_TTL;
	char out[512];

	info.session_id = "rbv17953478385302px";
	info.ttl = 5;
	xclient_build(&info, XCLIENT_DOVECOT_SET, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=26212 "
	                         "SESSION=rbv17953478385302px TTL=5\r\n");
	xclient_build(&info, implicit, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7 PORT=26212 "
	                         "SESSION=rbv17953478385302px TTL=5\r\n");

	/* net_addr2ip() takes a bare IPv6 address and no xtext */
	info = make_info("2001:db8::7", 26212, "2001:db8::2", 4190);
	info.session_id = "a+b/c=";
	xclient_build(&info, XCLIENT_DOVECOT_SET, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=2001:db8::7 PORT=26212 SESSION=a+b/c=\r\n");

	/* PORT=0 would fail the whole command; a session id that is not an
	 * atom or is over 64 bytes is left out; SMTP-only bits are ignored */
	info = make_info("198.51.100.7", 0, "127.0.0.2", 110);
	info.session_id = "has space";
	xclient_build(&info, XCLIENT_DOVECOT_SET | XCLIENT_NAME | XCLIENT_LOGIN, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7\r\n");
	info.session_id = "0123456789012345678901234567890123456789012345678901234567890123X";
	xclient_build(&info, XCLIENT_DOVECOT_SET, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7\r\n");
	info.session_id = "quote\"d";
	xclient_build(&info, XCLIENT_DOVECOT_SET, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=198.51.100.7\r\n");

	/* the same bits with an SMTP-only attribute: SMTP flavour */
	info = make_info("2001:db8::7", 26212, "2001:db8::2", 587);
	info.session_id = "a+b";
	xclient_build(&info, implicit | XCLIENT_HELO, out, sizeof(out));
	assert_string_equal(out, "XCLIENT ADDR=IPV6:2001:db8::7 PORT=26212 SESSION=a+2Bb\r\n");
}

/* ---- IMAP ID ---- */

static void test_imap_id_evidence(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26208, "203.0.113.10", 1143);
	char out[1024];
	size_t n;

	info.session_id = "rbv17953478385302id1";
	info.ttl = 5;
	n = imap_id_build(&info, NULL, 0, out, sizeof(out));
	assert_string_equal(out,
	                    "(\"x-originating-ip\" \"198.51.100.7\" \"x-originating-port\" "
	                    "\"26208\" \"x-connected-ip\" \"203.0.113.10\" \"x-connected-port\" "
	                    "\"1143\" \"x-session-id\" \"rbv17953478385302id1\" \"x-proxy-ttl\" "
	                    "\"5\")");
	assert_int_equal(n, strlen(out));

	info = make_info("2001:db8::7", 5555, "::ffff:203.0.113.10", 143);
	imap_id_build(&info, NULL, 0, out, sizeof(out));
	assert_string_equal(out,
	                    "(\"x-originating-ip\" \"2001:db8::7\" \"x-originating-port\" "
	                    "\"5555\" \"x-connected-ip\" \"203.0.113.10\" \"x-connected-port\" "
	                    "\"143\")");
}

static void test_imap_id_client_fields(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26208, "203.0.113.10", 143);
	char name31[32], value1025[1026], value1024[1025], out[8192];
	const char *fields[] = {
	        "name",
	        "Thunderbird",
	        "x-originating-ip",
	        "1.2.3.4",
	        "X-Originating-IP",
	        "1.2.3.4",
	        "x-multiplex",
	        "0",
	        "X-FORWARD-user",
	        "admin",
	        "vendor",
	        NULL,
	        "os",
	        "Linux \"x\" \\y",
	        "bad\r\nname",
	        "v",
	        "evil",
	        "a\r\nb3 LOGIN root pw",
	        "eight",
	        "caf\xc3\xa9",
	        name31,
	        "v",
	        "big",
	        value1025,
	        NULL,
	        "orphan",
	        "",
	        "empty name",
	        "support-url",
	        "",
	        "huge",
	        value1024,
	};
	const char *prefix = "(\"x-originating-ip\" \"198.51.100.7\" \"x-originating-port\" "
	                     "\"26208\" \"x-connected-ip\" \"203.0.113.10\" \"x-connected-port\" "
	                     "\"143\" \"name\" \"Thunderbird\" \"vendor\" NIL \"os\" "
	                     "\"Linux \\\"x\\\" \\\\y\" \"support-url\" \"\" \"huge\" \"";
	size_t n;

	memset(name31, 'n', 31);
	name31[31] = '\0';
	memset(value1025, 'v', 1025);
	value1025[1025] = '\0';
	memset(value1024, 'w', 1024);
	value1024[1024] = '\0';

	n = imap_id_build(&info, fields, sizeof(fields) / sizeof(fields[0]) / 2, out, sizeof(out));
	assert_true(n > strlen(prefix) + 1024);
	assert_memory_equal(out, prefix, strlen(prefix));
	assert_int_equal(strspn(out + strlen(prefix), "w"), 1024);
	assert_string_equal(out + strlen(prefix) + 1024, "\")");
	assert_null(strstr(out, "1.2.3.4"));
	assert_null(strstr(out, "multiplex"));
	assert_null(strstr(out, "FORWARD"));
	assert_null(strstr(out, "admin"));
	assert_null(strstr(out, "LOGIN"));
	assert_null(strstr(out, "\r"));
	assert_null(strstr(out, "\n"));
	assert_null(strstr(out, "\xc3"));
	assert_null(strstr(out, "nnnnn"));
	assert_null(strstr(out, "vvvvv"));
	assert_null(strstr(out, "orphan"));
	assert_null(strstr(out, "empty name"));
}

/* RFC 2971: at most 30 pairs in all, ours first. */
static void test_imap_id_pair_limit(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26208, "203.0.113.10", 143);
	const char *fields[2 * 40];
	char names[40][8], out[8192];
	size_t i;

	info.session_id = "sid";
	info.ttl = 3;
	for (i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "f%zu", i);
		fields[2 * i] = names[i];
		fields[2 * i + 1] = "v";
	}
	/* 6 of ours + f0..f23 */
	assert_true(imap_id_build(&info, fields, 40, out, sizeof(out)) > 0);
	assert_non_null(strstr(out, "\"x-proxy-ttl\" \"3\" \"f0\" \"v\""));
	assert_non_null(strstr(out, "\"f23\" \"v\")"));
	assert_null(strstr(out, "\"f24\""));
}

static void test_imap_id_small_buffer(void **state)
{
	struct announce_info info = make_info("198.51.100.7", 26208, "203.0.113.10", 143);
	const char *fields[] = {"name", "Thunderbird", "version", "115.3.1"};
	char out[512];
	size_t base, full, i;

	base = imap_id_build(&info, NULL, 0, out, sizeof(out));
	full = imap_id_build(&info, fields, 2, out, sizeof(out));
	assert_true(full > base);
	/* our own fields must fit or the whole thing fails */
	for (i = 0; i <= base; i++)
		assert_int_equal(imap_id_build(&info, fields, 2, out, i), 0);
	/* room for ours and "name" only: "version" is dropped, not truncated */
	i = base + 1 + strlen("\"name\" \"Thunderbird\"") + 1;
	assert_int_equal(imap_id_build(&info, fields, 2, out, i),
	                 base + 1 + strlen("\"name\" \"Thunderbird\""));
	assert_null(strstr(out, "version"));
	assert_int_equal(imap_id_build(&info, fields, 2, out, full + 1), full);
	assert_non_null(strstr(out, "\"version\" \"115.3.1\")"));
}

static void test_imap_id_nil(void **state)
{
	struct announce_info info;
	const char *fields[] = {"x-session-id", "spoof"};
	char out[64];

	memset(&info, 0, sizeof(info));
	assert_int_equal(imap_id_build(&info, fields, 1, out, sizeof(out)), 3);
	assert_string_equal(out, "NIL");
	assert_int_equal(imap_id_build(NULL, NULL, 0, out, sizeof(out)), 0);
}

/* ---- address helpers ---- */

static void test_addr_str(void **state)
{
	struct sockaddr_storage ss;
	char out[INET6_ADDRSTRLEN];

	set_addr(&ss, "192.0.2.1", 25);
	assert_string_equal(announce_addr_str(&ss, out, sizeof(out)), "192.0.2.1");
	assert_int_equal(announce_port(&ss), 25);
	set_addr(&ss, "2001:db8::1", 993);
	assert_string_equal(announce_addr_str(&ss, out, sizeof(out)), "2001:db8::1");
	assert_int_equal(announce_port(&ss), 993);
	set_addr(&ss, "::ffff:192.0.2.1", 143);
	assert_string_equal(announce_addr_str(&ss, out, sizeof(out)), "192.0.2.1");
	assert_int_equal(announce_port(&ss), 143);
	assert_string_equal(announce_addr_str(&ss, out, 4), "");
	assert_string_equal(announce_addr_str(&ss, out, 0), "");
	ss.ss_family = AF_UNIX;
	assert_string_equal(announce_addr_str(&ss, out, sizeof(out)), "");
	assert_string_equal(out, "");
	assert_int_equal(announce_port(&ss), 0);
	assert_string_equal(announce_addr_str(NULL, out, sizeof(out)), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_v2_evidence_tcp4),
	        cmocka_unit_test(test_v2_tcp6),
	        cmocka_unit_test(test_v2_mixed_families),
	        cmocka_unit_test(test_v2_mapped_is_tcp4),
	        cmocka_unit_test(test_v2_authority),
	        cmocka_unit_test(test_v2_unique_id),
	        cmocka_unit_test(test_v2_ssl),
	        cmocka_unit_test(test_v2_ssl_without_strings),
	        cmocka_unit_test(test_v2_all_tlvs_tcp6),
	        cmocka_unit_test(test_v2_bad_strings_omitted),
	        cmocka_unit_test(test_v2_postfix_budget),
	        cmocka_unit_test(test_v2_small_buffer_and_bad_family),
	        cmocka_unit_test(test_v1_strings),
	        cmocka_unit_test(test_v1_longest_and_small_buffer),
	        cmocka_unit_test(test_xclient_parse_attrs),
	        cmocka_unit_test(test_xclient_postfix_full),
	        cmocka_unit_test(test_xclient_postfix_reduced),
	        cmocka_unit_test(test_xclient_ipv6),
	        cmocka_unit_test(test_xclient_xtext),
	        cmocka_unit_test(test_xclient_limits),
	        cmocka_unit_test(test_xclient_dovecot),
	        cmocka_unit_test(test_imap_id_evidence),
	        cmocka_unit_test(test_imap_id_client_fields),
	        cmocka_unit_test(test_imap_id_pair_limit),
	        cmocka_unit_test(test_imap_id_small_buffer),
	        cmocka_unit_test(test_imap_id_nil),
	        cmocka_unit_test(test_addr_str),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
