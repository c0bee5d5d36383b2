/* libFuzzer: what we announce to backends, read back by our own parsers
 * (daemon/proto/announce.c builders against daemon/parse/proxy_header.c,
 * daemon/parse/imap_parse.c and xclient_parse_attrs).
 * Input: 40 bytes of endpoints and options (zero-padded), then '\n'-separated
 * strings: SNI, session id, TLS version, TLS cipher, HELO, PROTO and the
 * client's ID fields as name/value pairs (a lone DEL byte stands for NIL).
 * Invariants: xclient_parse_attrs on the whole input reports only known
 * attributes; for two IP endpoints the PROXY v1 and v2 headers are built,
 * parse back to exactly their length with the same addresses, ports and
 * authority (the SNI when it is a valid one, else none), every shorter
 * prefix needs more bytes, v2 stays within PROXY_V2_SEND_MAX, and an
 * output buffer one byte too small gets nothing; an XCLIENT line is
 * terminated, at most 512 bytes, printable, CRLF only at its end, and names
 * only allowed attributes, each once, never LOGIN; the IMAP ID argument is
 * a command imap_parse_command accepts whole, with at most 30 pairs, our
 * x- fields once each with the real addresses, and every other pair one the
 * client sent, with a name of 1..30 bytes that does not start with "x-". */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "announce.h"
#include "imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR_LEN    40
#define MAX_FIELDS 40 /* pairs */

/* family selector: IPv4, IPv6, IPv4-mapped IPv6, none */
static void make_endpoint(struct sockaddr_storage *ss, unsigned kind, const uint8_t *addr,
                          const uint8_t *port)
{
	memset(ss, 0, sizeof(*ss));
	if (kind == 0) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		memcpy(&sin->sin_port, port, 2);
	} else if (kind == 1 || kind == 2) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		if (kind == 2) {
			memset(&sin6->sin6_addr, 0, 10);
			memset(sin6->sin6_addr.s6_addr + 10, 0xff, 2);
		}
		memcpy(&sin6->sin6_port, port, 2);
	} else {
		ss->ss_family = AF_UNIX;
	}
}

static bool is_ip(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

/* Same address (IPv4-mapped folded) and port. */
static void assert_same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	char x[INET6_ADDRSTRLEN], y[INET6_ADDRSTRLEN];

	announce_addr_str(a, x, sizeof(x));
	announce_addr_str(b, y, sizeof(y));
	assert(x[0] && strcmp(x, y) == 0);
	assert(announce_port(a) == announce_port(b));
}

static bool valid_authority(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

static void check_parsed(const struct announce_info *info, const uint8_t *buf, size_t n,
                         int version, size_t prefix)
{
	struct proxy_header h;
	const char *error;

	assert(proxy_header_parse(buf, n, &h, &error) == (long)n);
	assert(h.version == version && !h.local);
	assert_same_endpoint(&info->client, &h.src);
	assert_same_endpoint(&info->local, &h.dst);
	if (version == 2)
		assert(strcmp(h.authority, valid_authority(info->sni) ? info->sni : "") == 0);
	assert(proxy_header_parse(buf, prefix % n, &h, &error) == 0 && !error);
}

static void check_proxy(const struct announce_info *info, size_t prefix)
{
	char v1[PROXY_V1_MAX + 1];
	uint8_t v2[PROXY_V2_MAX];
	size_t n1 = proxy_v1_build(info, v1, sizeof(v1));
	size_t n2 = proxy_v2_build(info, v2, sizeof(v2));
	bool ip = is_ip(&info->client) && is_ip(&info->local);

	assert(!n1 == !ip && !n2 == !ip);
	if (!ip)
		return;
	assert(strlen(v1) == n1 && n1 <= PROXY_V1_MAX && memcmp(v1 + n1 - 2, "\r\n", 2) == 0);
	check_parsed(info, (const uint8_t *)v1, n1, 1, prefix);
	for (size_t i = 0; i < n1; i++)
		assert(proxy_header_parse((const uint8_t *)v1, i, NULL, NULL) == 0);
	assert(n2 <= PROXY_V2_SEND_MAX);
	check_parsed(info, v2, n2, 2, prefix);

	/* one byte short: refused, and nothing written out of bounds */
	char *s1 = malloc(n1);
	uint8_t *s2 = malloc(n2 - 1);
	if (s1 && s2) {
		assert(proxy_v1_build(info, s1, n1) == 0);
		assert(proxy_v2_build(info, s2, n2 - 1) == 0);
	}
	free(s1);
	free(s2);
}

static void check_xclient(const struct announce_info *info, unsigned allowed)
{
	char *out = malloc(513), *copy, *tok, *save;
	size_t n;
	unsigned seen = 0;

	if (!out)
		return;
	n = xclient_build(info, allowed, out, 513);
	if (n == 0 || !(copy = strdup(out))) {
		free(out);
		return;
	}
	assert(n <= 512 && strlen(out) == n && strncmp(out, "XCLIENT ", 8) == 0);
	assert(memcmp(out + n - 2, "\r\n", 2) == 0);
	for (size_t i = 0; i < n - 2; i++)
		assert(out[i] == ' ' || (out[i] > 0x20 && out[i] < 0x7f));
	copy[n - 2] = '\0';
	strtok_r(copy, " ", &save); /* "XCLIENT" */
	while ((tok = strtok_r(NULL, " ", &save))) {
		char *eq = strchr(tok, '=');
		unsigned bit;

		assert(eq && eq > tok && eq[1]);
		bit = xclient_parse_attrs(tok, (size_t)(eq - tok));
		/* exactly one known attribute, allowed, not LOGIN, not repeated */
		assert(bit && !(bit & (bit - 1)) && (bit & allowed) && bit != XCLIENT_LOGIN);
		assert(!(seen & bit));
		seen |= bit;
	}
	free(copy);
	free(out);
}

static const char *const our_id_fields[] = {"x-originating-ip", "x-originating-port",
                                            "x-connected-ip",   "x-connected-port",
                                            "x-session-id",     "x-proxy-ttl"};

static void check_id(const struct announce_info *info, const char *const *fields, size_t n_fields)
{
	static const struct imap_limits lim = {.max_line = 8192, .max_literal = 0};
	char *out = malloc(4097), *cmd_buf = NULL, *scratch = NULL;
	struct imap_command *cmd = malloc(sizeof(*cmd));
	unsigned ours = 0, sync = 0;
	size_t n, used = 0, len;
	const char *error = NULL;

	if (!out || !cmd)
		goto done;
	n = imap_id_build(info, fields, n_fields, out, 4097);
	assert(n > 0 && strlen(out) == n);
	len = n + 7;
	cmd_buf = malloc(len + 1);
	scratch = malloc(len + 1);
	if (!cmd_buf || !scratch)
		goto done;
	snprintf(cmd_buf, len + 1, "a ID %s\r\n", out);
	assert(imap_parse_command(cmd_buf, len, &lim, cmd, scratch, len + 1, &used, &sync,
	                          &error) == IMAP_PARSE_COMPLETE);
	assert(used == len && strcmp(cmd->name, "ID") == 0 && sync == 0);
	if (cmd->args[0].type == IMAP_ARG_NIL) {
		assert(cmd->n_args == 1 && strcmp(out, "NIL") == 0);
		goto done;
	}
	assert(cmd->n_args >= 4 && cmd->n_args % 2 == 0);
	assert(cmd->args[0].type == IMAP_ARG_LIST_START);
	assert(cmd->args[cmd->n_args - 1].type == IMAP_ARG_LIST_END);
	assert((cmd->n_args - 2) / 2 <= 30);
	for (size_t i = 1; i + 1 < cmd->n_args; i += 2) {
		const struct imap_arg *name = &cmd->args[i], *value = &cmd->args[i + 1];
		size_t k, f;

		assert(name->type == IMAP_ARG_STRING);
		assert(value->type == IMAP_ARG_STRING || value->type == IMAP_ARG_NIL);
		for (k = 0; k < sizeof(our_id_fields) / sizeof(our_id_fields[0]); k++)
			if (strcmp(name->s, our_id_fields[k]) == 0)
				break;
		if (k < sizeof(our_id_fields) / sizeof(our_id_fields[0])) {
			char want[INET6_ADDRSTRLEN];
			assert(!(ours & 1u << k) && value->type == IMAP_ARG_STRING);
			ours |= 1u << k;
			if (k == 0)
				assert(strcmp(value->s, announce_addr_str(&info->client, want,
				                                          sizeof(want))) == 0);
			if (k == 2)
				assert(strcmp(value->s, announce_addr_str(&info->local, want,
				                                          sizeof(want))) == 0);
			continue;
		}
		assert(name->len >= 1 && name->len <= 30 && strncasecmp(name->s, "x-", 2) != 0);
		for (f = 0; f < n_fields; f++) {
			const char *fn = fields[2 * f], *fv = fields[2 * f + 1];
			if (fn && strcmp(fn, name->s) == 0 &&
			    (fv ? value->type == IMAP_ARG_STRING && strcmp(fv, value->s) == 0
			        : value->type == IMAP_ARG_NIL))
				break;
		}
		assert(f < n_fields);
	}
	assert(!!(ours & 1) == is_ip(&info->client));
done:
	free(out);
	free(cmd);
	free(cmd_buf);
	free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t hdr[HDR_LEN] = {0};
	struct announce_info info;
	const char *strings[6 + 2 * MAX_FIELDS] = {NULL};
	size_t n_strings = 0, rest_len = size > HDR_LEN ? size - HDR_LEN : 0;
	char *rest = malloc(rest_len + 1);
	unsigned attrs, allowed;

	if (!rest)
		return 0;
	memcpy(hdr, data, size < HDR_LEN ? size : HDR_LEN);
	if (rest_len)
		memcpy(rest, data + HDR_LEN, rest_len);
	rest[rest_len] = '\0';

	/* the whole input as an EHLO XCLIENT parameter list */
	attrs = xclient_parse_attrs((const char *)data, size);
	assert((attrs & ~0x7ffu) == 0);

	/* hdr: [0] families and flags, [1..16] client address, [17..18] port,
	 * [19..34] local address, [35..36] port, [37] ttl, [38..39] allowed */
	memset(&info, 0, sizeof(info));
	make_endpoint(&info.client, hdr[0] & 3, hdr + 1, hdr + 17);
	make_endpoint(&info.local, (hdr[0] >> 2) & 3, hdr + 19, hdr + 35);
	info.tls = hdr[0] & 16;
	info.ttl = hdr[37];
	allowed = (unsigned)hdr[38] | (unsigned)hdr[39] << 8;
	if (hdr[0] & 32)
		allowed |= XCLIENT_DOVECOT;

	for (char *p = rest; n_strings < sizeof(strings) / sizeof(strings[0]);) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		strings[n_strings++] = strcmp(p, "\x7f") == 0 ? NULL : p;
		if (!nl)
			break;
		p = nl + 1;
	}
	info.sni = strings[0];
	info.session_id = strings[1];
	info.tls_version = strings[2];
	info.tls_cipher = strings[3];
	info.helo = strings[4];
	info.proto = strings[5];

	check_proxy(&info, (size_t)hdr[36] << 8 | hdr[37]);
	check_xclient(&info, allowed);
	check_id(&info, strings + 6, n_strings > 6 ? (n_strings - 6 + 1) / 2 : 0);
	free(rest);
	return 0;
}
