/*
 * streamcheck: both ends of a byte-exact data path test (tests/kernel/stream.h).
 *
 *   streamcheck server --listen ADDR:PORT [--proxy-v2] [--tls --cert F --key F]
 *                      [--imap] [--count N] [slow reader options]
 *   streamcheck client --connect ADDR:PORT [--source ADDR] [--tls --ca F --sni NAME]
 *                      [--imap-login] --up BYTES --down BYTES [--seed N]
 *                      [slow reader options]
 *   slow reader:       [--rcvbuf BYTES] [--pause-ms MS --pause-every BYTES]
 *   TLS:               [--tls-version 1.2|1.3] [--cipher NAME]
 *                      [--key-update-at BYTES]  (1.3: a KeyUpdate after that many)
 *   streamcheck selftest   the checker finds and names injected faults
 *
 * The client connects (through the proxy under test), optionally logs in as
 * an IMAP client, then sends "STREAM <up> <down> <seed>\n". From then on
 * both ends write and read at once, in one poll loop (OpenSSL must not be
 * driven from two threads): the client sends <up> bytes of the up stream
 * and checks <down> bytes of the down stream, the server the other way
 * round, each in writes of varying size. A slow reader stops reading for
 * --pause-ms after every --pause-every bytes, so that the path in between
 * has to hold back. After its last byte an end sends close_notify (TLS) and
 * FIN, and it expects exactly the other end's bytes and then the end of the
 * stream.
 *
 * The server strips a PROXY v2 header first (what the proxy sends to a
 * destination with forwarding = "proxy") and answers an IMAP login with
 * --imap. Each end prints one JSON line and exits 0 only if both ways were
 * byte-exact; a difference is explained (stream_explain).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "stream.h"

#define BUF (256 * 1024)

struct opts {
	bool server;
	const char *addr;   /* listen or connect */
	const char *source; /* client source address */
	bool proxy_v2, imap, tls;
	const char *cert, *key, *ca, *sni, *tls_version, *cipher;
	unsigned long long up, down, seed;
	int rcvbuf;
	int pause_ms;
	unsigned long long pause_every;
	int count;
	int timeout_s;
	bool no_close_notify;
	unsigned long long key_update_at; /* TLS 1.3: send a KeyUpdate after this many bytes */
};

struct end {
	int fd;
	SSL *ssl;
	uint8_t pending[BUF]; /* bytes read during the login, not yet checked */
	size_t pending_len;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "streamcheck: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void ssl_die(const char *what)
{
	char msg[256];
	ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
	fprintf(stderr, "streamcheck: %s: %s\n", what, msg);
	exit(2);
}

static int parse_addr(const char *s, struct sockaddr_in *a)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

/* ---- blocking helpers for the set-up phase (PROXY header, TLS, login) ---- */

static ssize_t rd(struct end *e, void *buf, size_t n)
{
	if (e->ssl) {
		size_t got = 0;
		return SSL_read_ex(e->ssl, buf, n, &got) == 1 ? (ssize_t)got : -1;
	}
	return recv(e->fd, buf, n, 0);
}

static void wr(struct end *e, const char *s)
{
	size_t n = strlen(s), done = 0;
	if (e->ssl) {
		if (SSL_write_ex(e->ssl, s, n, &done) != 1)
			ssl_die("write");
		return;
	}
	while (done < n) {
		ssize_t k = send(e->fd, s + done, n - done, MSG_NOSIGNAL);
		if (k <= 0)
			die("send");
		done += (size_t)k;
	}
}

/* one line, byte by byte: nothing after it is consumed */
static void line(struct end *e, char *out, size_t cap)
{
	size_t n = 0;
	for (;;) {
		char c;
		if (rd(e, &c, 1) != 1) {
			fprintf(stderr, "streamcheck: the peer closed during the set-up\n");
			exit(2);
		}
		if (n + 1 < cap)
			out[n++] = c;
		if (c == '\n')
			break;
	}
	out[n] = '\0';
}

static void exact(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = recv(fd, (char *)buf + got, n - got, 0);
		if (k <= 0) {
			fprintf(stderr, "streamcheck: closed during the PROXY header\n");
			exit(2);
		}
		got += (size_t)k;
	}
}

static SSL_CTX *tls_ctx(const struct opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		ssl_die("SSL_CTX_new");
	if (o->tls_version) {
		int v = strcmp(o->tls_version, "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
		SSL_CTX_set_min_proto_version(ctx, v);
		SSL_CTX_set_max_proto_version(ctx, v);
		if (o->cipher && v == TLS1_2_VERSION && !SSL_CTX_set_cipher_list(ctx, o->cipher))
			ssl_die("cipher");
		if (o->cipher && v == TLS1_3_VERSION && !SSL_CTX_set_ciphersuites(ctx, o->cipher))
			ssl_die("ciphersuite");
	}
	/* a write refused with WANT_WRITE is retried with the same bytes */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
	if (o->server) {
		if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)
			ssl_die("certificate");
	} else if (o->ca) {
		if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1)
			ssl_die("CA file");
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
}

/* ---- the stream phase ---- */

struct dirstate {
	uint64_t key, total, done;
};

struct result {
	unsigned long long sent, received, expected;
	bool eof, exact, timeout;
	bool corrupt; /* a byte that arrived was wrong (not just missing) */
	char error[200];
	char explain[300];
	double seconds;
};

static bool ssl_retry(SSL *ssl, int ret, short *want)
{
	int e = SSL_get_error(ssl, ret);
	if (e == SSL_ERROR_WANT_READ) {
		*want |= POLLIN;
		return true;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*want |= POLLOUT;
		return true;
	}
	return false;
}

static void run_stream(struct end *e, const struct opts *o, uint64_t up_key, uint64_t down_key,
                       uint64_t send_total, uint64_t recv_total, unsigned long long seed,
                       struct result *res)
{
	static uint8_t out[1 << 20], in[BUF];
	static const size_t sizes[] = {1, 13, 1460, 4096, 16384, 65536, 300000, 1 << 20};
	struct stream_check chk;
	uint64_t sent = 0;
	size_t out_len = 0, out_off = 0;
	bool fin_sent = false, eof = false;
	double t0 = now_s(), pause_until = 0, deadline = t0 + o->timeout_s;
	uint64_t next_pause = o->pause_every ? o->pause_every : UINT64_MAX;
	bool key_updated = false;
	uint64_t rnd = seed * 0x2545f4914f6cdd1dULL + 1;

	(void)up_key;
	stream_check_init(&chk, down_key);
	memset(res, 0, sizeof(*res));
	res->expected = recv_total;
	fcntl(e->fd, F_SETFL, fcntl(e->fd, F_GETFL) | O_NONBLOCK);
	if (e->pending_len) {
		stream_check(&chk, e->pending, e->pending_len);
		e->pending_len = 0;
	}
	while (!(fin_sent && eof)) {
		double t = now_s();
		if (t > deadline) {
			res->timeout = true;
			snprintf(res->error, sizeof(res->error), "timed out after %d s",
			         o->timeout_s);
			break;
		}
		short want = 0;
		bool progress = false;
		/* write */
		if (sent < send_total || out_off < out_len) {
			if (out_off == out_len) {
				if (e->ssl && o->key_update_at && !key_updated &&
				    sent >= o->key_update_at) {
					/* RFC 8446 section 4.6.3; goes out with the next write */
					if (SSL_key_update(e->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) !=
					    1)
						ssl_die("SSL_key_update");
					key_updated = true;
				}
				rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
				size_t k = sizes[(rnd >> 33) % (sizeof(sizes) / sizeof(sizes[0]))];
				if (k > send_total - sent)
					k = (size_t)(send_total - sent);
				if (o->key_update_at && !key_updated && sent < o->key_update_at &&
				    k > o->key_update_at - sent)
					k = (size_t)(o->key_update_at - sent);
				stream_fill(up_key, sent, out, k);
				out_len = k;
				out_off = 0;
			}
			ssize_t n;
			if (e->ssl) {
				size_t w = 0;
				int r = SSL_write_ex(e->ssl, out + out_off, out_len - out_off, &w);
				if (r == 1)
					n = (ssize_t)w;
				else if (ssl_retry(e->ssl, r, &want))
					n = 0;
				else {
					snprintf(res->error, sizeof(res->error),
					         "TLS write failed after %llu bytes",
					         (unsigned long long)sent);
					break;
				}
			} else {
				n = send(e->fd, out + out_off, out_len - out_off, MSG_NOSIGNAL);
				if (n < 0 && errno == EAGAIN) {
					want |= POLLOUT;
					n = 0;
				} else if (n < 0) {
					snprintf(res->error, sizeof(res->error),
					         "send after %llu bytes: %s",
					         (unsigned long long)sent, strerror(errno));
					break;
				}
			}
			if (n > 0) {
				out_off += (size_t)n;
				sent += (uint64_t)n;
				progress = true;
			}
		} else if (!fin_sent) {
			if (e->ssl && !o->no_close_notify)
				SSL_shutdown(e->ssl); /* close_notify */
			shutdown(e->fd, SHUT_WR);
			fin_sent = true;
			progress = true;
		}
		/* read, unless pausing */
		if (!eof && t >= pause_until) {
			ssize_t n;
			if (e->ssl) {
				size_t got = 0;
				int r = SSL_read_ex(e->ssl, in, sizeof(in), &got);
				if (r == 1)
					n = (ssize_t)got;
				else {
					int err = SSL_get_error(e->ssl, r);
					if (err == SSL_ERROR_ZERO_RETURN ||
					    (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
					     errno == 0)) {
						n = 0;
					} else if (ssl_retry(e->ssl, r, &want)) {
						n = -1;
					} else {
						char msg[160];
						ERR_error_string_n(ERR_get_error(), msg,
						                   sizeof(msg));
						snprintf(res->error, sizeof(res->error),
						         "TLS read failed after %llu bytes: %s",
						         (unsigned long long)chk.off, msg);
						break;
					}
				}
				ERR_clear_error();
				errno = 0;
			} else {
				n = recv(e->fd, in, sizeof(in), 0);
				if (n < 0 && errno == EAGAIN) {
					want |= POLLIN;
				} else if (n < 0) {
					snprintf(res->error, sizeof(res->error),
					         "recv after %llu bytes: %s",
					         (unsigned long long)chk.off, strerror(errno));
					break;
				}
			}
			if (n == 0) {
				eof = true;
				progress = true;
			} else if (n > 0) {
				stream_check(&chk, in, (size_t)n);
				progress = true;
				if (chk.off >= next_pause && o->pause_ms > 0) {
					pause_until = now_s() + o->pause_ms / 1000.0;
					next_pause += o->pause_every;
				}
			}
		}
		if (progress)
			continue;
		struct pollfd p = {.fd = e->fd, .events = want ? want : POLLIN};
		int ms = 200;
		if (pause_until > t && (pause_until - t) * 1000 < ms)
			ms = (int)((pause_until - t) * 1000) + 1;
		if (!eof && t < pause_until && !(want & POLLOUT))
			p.events = 0; /* pausing: wait for the clock, not for bytes */
		poll(&p, 1, ms);
	}
	res->seconds = now_s() - t0;
	res->sent = sent;
	res->received = chk.off;
	res->eof = eof;
	res->corrupt = chk.bad;
	stream_explain(&chk, res->explain, sizeof(res->explain));
	res->exact =
	        !res->error[0] && sent == send_total && eof && !chk.bad && chk.off == recv_total;
	if (!res->error[0] && !chk.bad && chk.off != recv_total)
		snprintf(res->explain, sizeof(res->explain),
		         "%llu bytes arrived, %llu expected (every byte that came was right)",
		         (unsigned long long)chk.off, (unsigned long long)recv_total);
}

static void print_result(const char *role, int client_port, const struct result *r)
{
	printf("{\"role\": \"%s\", \"client_port\": %d, \"exact\": %s, \"corrupt\": %s, "
	       "\"sent\": %llu, \"received\": %llu, \"expected\": %llu, \"eof\": %s, "
	       "\"seconds\": %.3f, \"explain\": \"%s\", \"error\": \"%s\"}\n",
	       role, client_port, r->exact ? "true" : "false", r->corrupt ? "true" : "false",
	       r->sent, r->received, r->expected, r->eof ? "true" : "false", r->seconds, r->explain,
	       r->error);
	fflush(stdout);
}

static void slow_socket(int fd, const struct opts *o)
{
	if (o->rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof(o->rcvbuf));
}

/* ---- server ---- */

static int serve_one(int fd, const struct opts *o, SSL_CTX *ctx)
{
	struct end e = {.fd = fd};
	int client_port = 0;
	struct timeval tv = {30, 0};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	slow_socket(fd, o);
	if (o->proxy_v2) {
		uint8_t head[16], rest[512];
		exact(fd, head, 16);
		if (memcmp(head, "\r\n\r\n\0\r\nQUIT\n", 12) != 0) {
			fprintf(stderr, "streamcheck: no PROXY v2 header\n");
			return 2;
		}
		size_t len = (size_t)head[14] << 8 | head[15];
		if (len > sizeof(rest))
			return 2;
		exact(fd, rest, len);
		if (head[13] == 0x11 && len >= 12)
			client_port = rest[8] << 8 | rest[9];
	}
	if (ctx) {
		e.ssl = SSL_new(ctx);
		SSL_set_fd(e.ssl, fd);
		if (SSL_accept(e.ssl) != 1)
			ssl_die("TLS accept");
	}
	char l[1024];
	if (o->imap) {
		wr(&e, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] streamcheck\r\n");
		for (;;) {
			char tag[64] = "", cmd[64] = "";
			line(&e, l, sizeof(l));
			sscanf(l, "%63s %63s", tag, cmd);
			char reply[256];
			if (strcasecmp(cmd, "CAPABILITY") == 0) {
				snprintf(reply, sizeof(reply),
				         "* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID\r\n%s OK "
				         "done\r\n",
				         tag);
			} else if (strcasecmp(cmd, "ID") == 0) {
				snprintf(reply, sizeof(reply), "* ID NIL\r\n%s OK done\r\n", tag);
			} else if (strcasecmp(cmd, "LOGIN") == 0 ||
			           strcasecmp(cmd, "AUTHENTICATE") == 0) {
				char a[64], b[64], c[64];
				if (strcasecmp(cmd, "AUTHENTICATE") == 0 &&
				    sscanf(l, "%63s %63s %63s %63s", a, b, c, c) < 4) {
					wr(&e, "+ \r\n");
					line(&e, l, sizeof(l));
				}
				snprintf(reply, sizeof(reply),
				         "%s OK [CAPABILITY IMAP4rev1] in\r\n", tag);
				wr(&e, reply);
				break;
			} else {
				snprintf(reply, sizeof(reply), "%s BAD unexpected\r\n", tag);
			}
			wr(&e, reply);
		}
	}
	unsigned long long up, down, seed;
	line(&e, l, sizeof(l));
	if (sscanf(l, "STREAM %llu %llu %llu", &up, &down, &seed) != 3) {
		fprintf(stderr, "streamcheck: no STREAM line: %s\n", l);
		return 2;
	}
	struct result r;
	run_stream(&e, o, stream_key(seed, 1), stream_key(seed, 0), down, up, seed + 1, &r);
	print_result("server", client_port, &r);
	if (e.ssl)
		SSL_free(e.ssl);
	close(fd);
	return r.exact ? 0 : 1;
}

static int server(const struct opts *o)
{
	struct sockaddr_in a;
	int one = 1;
	SSL_CTX *ctx = o->tls ? tls_ctx(o) : NULL;

	if (parse_addr(o->addr, &a) != 0) {
		fprintf(stderr, "streamcheck: bad address %s\n", o->addr);
		return 2;
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (o->rcvbuf > 0) /* inherited by accepted sockets: in effect for the handshake */
		setsockopt(l, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof(o->rcvbuf));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 64) != 0)
		die("listen");
	printf("{\"role\": \"server\", \"listening\": \"%s\"}\n", o->addr);
	fflush(stdout);
	int failed = 0;
	for (int i = 0; i < o->count; i++) {
		int fd = accept(l, NULL, NULL);
		if (fd < 0)
			die("accept");
		pid_t pid = fork();
		if (pid == 0) {
			close(l);
			exit(serve_one(fd, o, ctx));
		}
		close(fd);
	}
	for (int i = 0; i < o->count; i++) {
		int st;
		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	return failed ? 1 : 0;
}

/* ---- client ---- */

static int client(const struct opts *o)
{
	struct sockaddr_in a, src;
	SSL_CTX *ctx = o->tls ? tls_ctx(o) : NULL;
	struct end e = {0};

	if (parse_addr(o->addr, &a) != 0) {
		fprintf(stderr, "streamcheck: bad address %s\n", o->addr);
		return 2;
	}
	e.fd = socket(AF_INET, SOCK_STREAM, 0);
	slow_socket(e.fd, o);
	if (o->source) {
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		inet_pton(AF_INET, o->source, &src.sin_addr);
		if (bind(e.fd, (struct sockaddr *)&src, sizeof(src)) != 0)
			die("bind");
	}
	struct timeval tv = {30, 0};
	setsockopt(e.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(e.fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		die("connect");
	struct sockaddr_in me;
	socklen_t ml = sizeof(me);
	getsockname(e.fd, (struct sockaddr *)&me, &ml);
	int port = ntohs(me.sin_port);
	if (ctx) {
		e.ssl = SSL_new(ctx);
		SSL_set_fd(e.ssl, e.fd);
		if (o->sni)
			SSL_set_tlsext_host_name(e.ssl, o->sni);
		if (o->sni && o->ca)
			SSL_set1_host(e.ssl, o->sni);
		if (SSL_connect(e.ssl) != 1)
			ssl_die("TLS connect");
	}
	char l[1024];
	if (o->imap) {
		line(&e, l, sizeof(l));
		wr(&e, "a1 LOGIN alice secret\r\n");
		do
			line(&e, l, sizeof(l));
		while (l[0] == '*');
		if (strncmp(l, "a1 OK", 5) != 0) {
			fprintf(stderr, "streamcheck: login refused: %s", l);
			return 2;
		}
	}
	snprintf(l, sizeof(l), "STREAM %llu %llu %llu\n", o->up, o->down, o->seed);
	wr(&e, l);
	struct result r;
	run_stream(&e, o, stream_key(o->seed, 0), stream_key(o->seed, 1), o->up, o->down, o->seed,
	           &r);
	print_result("client", port, &r);
	return r.exact ? 0 : 1;
}

/* The checker must see what it is there to see: a duplicated skb, a lost one,
 * zero-filled framing. Exit 0 when every injected fault is found and named. */
static int selftest(void)
{
	static uint8_t a[1 << 20], b[(1 << 20) + 65536];
	uint64_t key = stream_key(42, 1);
	struct stream_check c;
	char why[300];
	int bad = 0;

	if (stream_unmix(stream_mix(0x123456789abcdefULL)) != 0x123456789abcdefULL)
		bad++;
	stream_fill(key, 0, a, sizeof(a));
	/* 1: exact, fed in odd pieces */
	stream_check_init(&c, key);
	for (size_t off = 0; off < sizeof(a); off += 977)
		stream_check(&c, a + off, off + 977 < sizeof(a) ? 977 : sizeof(a) - off);
	stream_explain(&c, why, sizeof(why));
	bad += strcmp(why, "exact") != 0;
	/* 2: 65483 bytes ending at 300000 arrive twice (the sockmap duplicate) */
	memcpy(b, a, 300000);
	memcpy(b + 300000, a + 300000 - 65483, 65483);
	memcpy(b + 300000 + 65483, a + 300000, sizeof(a) - 300000);
	stream_check_init(&c, key);
	stream_check(&c, b, sizeof(a) + 65483);
	stream_explain(&c, why, sizeof(why));
	bad += strstr(why, "65483 bytes duplicated") == NULL;
	printf("selftest duplicate: %s\n", why);
	/* 3: 4096 bytes lost at 500001 */
	stream_check_init(&c, key);
	stream_check(&c, a, 500001);
	stream_check(&c, a + 500001 + 4096, 100000);
	stream_explain(&c, why, sizeof(why));
	bad += strstr(why, "4096 bytes lost") == NULL;
	printf("selftest loss: %s\n", why);
	/* 4: zero-filled framing in place of data */
	memcpy(b, a, sizeof(a));
	memset(b + 123456, 0, 29);
	stream_check_init(&c, key);
	stream_check(&c, b, sizeof(a));
	stream_explain(&c, why, sizeof(why));
	bad += strstr(why, "no part of this stream") == NULL || !c.bad;
	printf("selftest garbage: %s\n", why);
	/* 5: the other direction's stream is not this one */
	stream_check_init(&c, stream_key(42, 0));
	stream_check(&c, a, 4096);
	bad += !c.bad;
	printf("selftest: %s\n", bad ? "FAILED" : "ok");
	return bad ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: streamcheck server|client OPTIONS (see the top of "
	                "tests/kernel/streamcheck.c)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = {.count = 1, .timeout_s = 600, .seed = 1};

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "selftest") == 0)
		return selftest();
	if (strcmp(argv[1], "server") == 0)
		o.server = true;
	else if (strcmp(argv[1], "client") != 0)
		usage();
	for (int i = 2; i < argc; i++) {
		const char *k = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(k, name) == 0 && v && (i++, 1))
		if (ARG("--listen") || ARG("--connect"))
			o.addr = v;
		else if (ARG("--source"))
			o.source = v;
		else if (strcmp(k, "--proxy-v2") == 0)
			o.proxy_v2 = true;
		else if (strcmp(k, "--imap") == 0 || strcmp(k, "--imap-login") == 0)
			o.imap = true;
		else if (strcmp(k, "--tls") == 0)
			o.tls = true;
		else if (strcmp(k, "--no-close-notify") == 0)
			o.no_close_notify = true;
		else if (ARG("--cert"))
			o.cert = v;
		else if (ARG("--key"))
			o.key = v;
		else if (ARG("--ca"))
			o.ca = v;
		else if (ARG("--sni"))
			o.sni = v;
		else if (ARG("--tls-version"))
			o.tls_version = v;
		else if (ARG("--cipher"))
			o.cipher = v;
		else if (ARG("--up"))
			o.up = strtoull(v, NULL, 0);
		else if (ARG("--down"))
			o.down = strtoull(v, NULL, 0);
		else if (ARG("--seed"))
			o.seed = strtoull(v, NULL, 0);
		else if (ARG("--rcvbuf"))
			o.rcvbuf = atoi(v);
		else if (ARG("--pause-ms"))
			o.pause_ms = atoi(v);
		else if (ARG("--pause-every"))
			o.pause_every = strtoull(v, NULL, 0);
		else if (ARG("--count"))
			o.count = atoi(v);
		else if (ARG("--timeout"))
			o.timeout_s = atoi(v);
		else if (ARG("--key-update-at"))
			o.key_update_at = strtoull(v, NULL, 0);
		else
			usage();
#undef ARG
	}
	if (!o.addr)
		usage();
	signal(SIGPIPE, SIG_IGN);
	return o.server ? server(&o) : client(&o);
}
