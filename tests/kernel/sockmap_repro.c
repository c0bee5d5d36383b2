/*
 * sockmap_repro: the kernel's sockmap redirect on its own, no daemon
 * (docs/datapath.md, issue 22).
 *
 * Two loopback TCP pairs, c0 <-> s0 and c1 <-> s1; s0 and s1 sit in a
 * sockhash with tests/kernel/sockmap_repro.bpf.c, a verdict that only ever
 * redirects (never SK_PASS): bytes arriving on s0 leave on s1 toward c1, and
 * the other way round. c0 sends one deterministic stream (tests/kernel/
 * stream.h), c1 another, both at once; each client checks every byte it
 * receives against the stream the other sent. Options make the readers
 * slow (pauses, small SO_RCVBUF), the way a mail client on a slow link is.
 *
 * Per run it prints one line: exact, or where and how the stream went
 * wrong (duplicated / lost / foreign bytes), or short (no progress for
 * --stall seconds), with the program's own count of the bytes it was
 * handed against TCP's count of the bytes the socket received
 * (tcpi_bytes_received): more handed than received means the kernel gave
 * the program some skb twice. --fin ends each run with a FIN from c0 and
 * reports what the peer socket s1 says then (SO_ERROR), the case the
 * daemon's relay has to survive.
 *
 *   sockmap_repro [--runs N] [--bytes N] [--rcvbuf N] [--pause-ms MS
 *                 --pause-every N] [--one-way] [--fin] [--stall S] [--deadline S]
 *                 [--matrix]
 *
 * --matrix cycles the runs through fast and slow readers, default and 64 KiB
 * receive buffers, one and both directions. A run that has not finished
 * after --deadline seconds (default 300) is reported short, like a stall. Exit 0 when every run was
 * exact, 1 when any was not, 2 when the kernel refused the set-up (no BPF
 * sockmap, no privileges): then the reason is printed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "sockmap_repro.skel.h"
#include "stream.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

struct repro_count {
	uint64_t bytes, skbs, empty;
};

struct variant {
	unsigned long long bytes;
	int rcvbuf;
	int pause_ms;
	unsigned long long pause_every;
	bool one_way;
	bool fin;
	int stall_s;
	int deadline_s;
};

struct side {
	int fd;          /* the client socket: c0 or c1 */
	uint64_t tx_key; /* what it sends */
	uint64_t rx_key; /* what it expects */
	unsigned long long tx_total, rx_total;
	const struct variant *v;
	_Atomic unsigned long long sent, received;
	struct stream_check chk;
	char err[160];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int pair(int out[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) != 0)
		return -1;
	out[0] = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(out[0], (struct sockaddr *)&a, sizeof(a)) != 0)
		return -1;
	out[1] = accept(l, NULL, NULL);
	close(l);
	return out[1] < 0 ? -1 : 0;
}

static void *writer(void *arg)
{
	struct side *s = arg;
	static const size_t sizes[] = {1, 100, 1460, 4096, 16384, 65536, 300000};
	uint8_t *buf = malloc(300000);
	uint64_t rnd = s->tx_key | 1;

	while (s->sent < s->tx_total) {
		rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
		size_t k = sizes[(rnd >> 33) % (sizeof(sizes) / sizeof(sizes[0]))];
		if (k > s->tx_total - s->sent)
			k = (size_t)(s->tx_total - s->sent);
		stream_fill(s->tx_key, s->sent, buf, k);
		size_t off = 0;
		while (off < k) {
			ssize_t n = send(s->fd, buf + off, k - off, MSG_NOSIGNAL);
			if (n <= 0) {
				snprintf(s->err, sizeof(s->err), "send after %llu bytes: %s",
				         (unsigned long long)s->sent,
				         n < 0 ? strerror(errno) : "0");
				free(buf);
				return NULL;
			}
			off += (size_t)n;
			s->sent += (unsigned long long)n;
		}
	}
	free(buf);
	return NULL;
}

static void *reader(void *arg)
{
	struct side *s = arg;
	uint8_t *buf = malloc(1 << 20);
	unsigned long long next_pause = s->v->pause_every ? s->v->pause_every : ~0ULL;

	while (s->received < s->rx_total) {
		ssize_t n = recv(s->fd, buf, 1 << 20, 0);
		if (n < 0 && errno == EAGAIN)
			continue; /* SO_RCVTIMEO: the main thread decides about stalls */
		if (n <= 0) {
			snprintf(s->err, sizeof(s->err), "recv after %llu bytes: %s",
			         (unsigned long long)s->received,
			         n < 0 ? strerror(errno) : "end of stream");
			break;
		}
		stream_check(&s->chk, buf, (size_t)n);
		s->received += (unsigned long long)n;
		if (s->received >= next_pause && s->v->pause_ms > 0) {
			usleep((useconds_t)s->v->pause_ms * 1000);
			next_pause += s->v->pause_every;
		}
	}
	free(buf);
	return NULL;
}

static uint64_t cookie_of(int fd)
{
	uint64_t c = 0;
	socklen_t l = sizeof(c);
	getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l);
	return c;
}

static uint64_t tcp_received(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l);
	return ti.tcpi_bytes_received;
}

/* One run. Returns 0 exact, 1 not, 2 set-up refused. */
static int run(struct sockmap_repro_bpf *skel, const struct variant *v, unsigned seq)
{
	int p0[2], p1[2]; /* [0] client, [1] the socket in the map */
	int socks = bpf_map__fd(skel->maps.repro_socks);
	int peers = bpf_map__fd(skel->maps.repro_peer);
	int counts = bpf_map__fd(skel->maps.repro_counts);

	if (pair(p0) != 0 || pair(p1) != 0) {
		printf("run %u: no loopback pair: %s\n", seq, strerror(errno));
		return 2;
	}
	struct timeval tv = {1, 0};
	for (int i = 0; i < 2; i++) {
		int c = i ? p1[0] : p0[0];
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (v->rcvbuf)
			setsockopt(c, SOL_SOCKET, SO_RCVBUF, &v->rcvbuf, sizeof(v->rcvbuf));
	}
	struct repro_count zero = {0};
	for (uint32_t i = 0; i < 2; i++)
		bpf_map_update_elem(counts, &i, &zero, BPF_ANY);
	uint64_t ck[2] = {cookie_of(p0[1]), cookie_of(p1[1])};
	uint32_t peer_of[2] = {1, 0};
	for (uint32_t i = 0; i < 2; i++) {
		uint64_t fd = (uint64_t)(i ? p1[1] : p0[1]);
		if (bpf_map_update_elem(peers, &ck[i], &peer_of[i], BPF_ANY) != 0 ||
		    bpf_map_update_elem(socks, &i, &fd, BPF_ANY) != 0) {
			printf("run %u: cannot put the sockets into the sockhash: %s\n", seq,
			       strerror(errno));
			return 2;
		}
	}

	uint64_t seed = 1000 + seq;
	struct side side[2] = {
	        {.fd = p0[0], .v = v},
	        {.fd = p1[0], .v = v},
	};
	for (int i = 0; i < 2; i++) {
		side[i].tx_key = stream_key(seed, (unsigned)i);
		side[i].rx_key = stream_key(seed, (unsigned)(1 - i));
		side[i].tx_total = i == 1 && v->one_way ? 0 : v->bytes;
		side[i].rx_total = i == 0 && v->one_way ? 0 : v->bytes;
		stream_check_init(&side[i].chk, side[i].rx_key);
	}
	pthread_t th[4];
	for (int i = 0; i < 2; i++) {
		pthread_create(&th[2 * i], NULL, writer, &side[i]);
		pthread_create(&th[2 * i + 1], NULL, reader, &side[i]);
	}
	/* watch for progress: a hang is a result, not a test that never ends */
	unsigned long long last = ~0ULL;
	double since = now_s(), start = since;
	bool stalled = false;
	for (;;) {
		unsigned long long got =
		        side[0].received + side[1].received + side[0].sent + side[1].sent;
		if (side[0].received >= side[0].rx_total && side[1].received >= side[1].rx_total &&
		    side[0].sent >= side[0].tx_total && side[1].sent >= side[1].tx_total)
			break;
		if (side[0].err[0] || side[1].err[0])
			break;
		if (got != last) {
			last = got;
			since = now_s();
		} else if (now_s() - since > v->stall_s) {
			stalled = true;
			break;
		}
		if (now_s() - start > v->deadline_s) {
			stalled = true;
			break;
		}
		usleep(20000);
	}
	if (stalled || side[0].err[0] || side[1].err[0]) {
		/* unblock the threads: the sockets leave the map and shut down */
		for (int i = 0; i < 2; i++) {
			shutdown(p0[i], SHUT_RDWR);
			shutdown(p1[i], SHUT_RDWR);
		}
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);

	struct repro_count kc[2];
	for (uint32_t i = 0; i < 2; i++)
		bpf_map_lookup_elem(counts, &i, &kc[i]);
	uint64_t tcp[2] = {tcp_received(p0[1]), tcp_received(p1[1])};
	char fin[160] = "";
	if (v->fin && !stalled) {
		/* a FIN alone arrives on s0 as a zero-length skb; the program
		 * redirects it to s1's egress too */
		shutdown(p0[0], SHUT_WR);
		usleep(200000);
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(p1[1], SOL_SOCKET, SO_ERROR, &soerr, &sl);
		struct repro_count k0;
		uint32_t z = 0;
		bpf_map_lookup_elem(counts, &z, &k0);
		snprintf(fin, sizeof(fin), " fin: empty_skbs=%llu s1_so_error=%s",
		         (unsigned long long)(k0.empty - kc[0].empty),
		         soerr ? strerror(soerr) : "0");
	}
	int rc = 0;
	char what[400];
	for (int i = 0; i < 2; i++) {
		struct side *s = &side[i];
		if (s->chk.bad) {
			stream_explain(&s->chk, what, sizeof(what));
			rc = 1;
		} else if (s->received < s->rx_total) {
			snprintf(what, sizeof(what), "%s: %llu of %llu bytes (every byte right)",
			         stalled ? "short, stalled" : "short", s->received, s->rx_total);
			rc = 1;
		} else {
			snprintf(what, sizeof(what), "exact");
		}
		printf("run %u dir c%d->c%d: %s%s%s\n", seq, 1 - i, i, what, s->err[0] ? "; " : "",
		       s->err);
	}
	for (int i = 0; i < 2; i++) {
		long long extra = (long long)kc[i].bytes - (long long)tcp[i];
		printf("run %u s%d: verdict saw %llu bytes in %llu skbs (%llu empty), TCP received "
		       "%llu%s\n",
		       seq, i, (unsigned long long)kc[i].bytes, (unsigned long long)kc[i].skbs,
		       (unsigned long long)kc[i].empty, (unsigned long long)tcp[i],
		       extra > 0 ? ": the program was handed more than TCP received" : "");
		if (extra > 0)
			rc = 1;
	}
	if (fin[0])
		printf("run %u%s\n", seq, fin);
	for (uint32_t i = 0; i < 2; i++) {
		bpf_map_delete_elem(socks, &i);
		bpf_map_delete_elem(peers, &ck[i]);
	}
	for (int i = 0; i < 2; i++) {
		close(p0[i]);
		close(p1[i]);
	}
	fflush(stdout);
	return rc;
}

int main(int argc, char **argv)
{
	struct variant base = {.bytes = 256ULL << 20, .stall_s = 10, .deadline_s = 300};
	unsigned runs = 10;
	bool matrix = false;

	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *val = i + 1 < argc ? argv[i + 1] : "0";
		if (strcmp(k, "--runs") == 0)
			runs = (unsigned)atoi(val), i++;
		else if (strcmp(k, "--bytes") == 0)
			base.bytes = strtoull(val, NULL, 0), i++;
		else if (strcmp(k, "--rcvbuf") == 0)
			base.rcvbuf = atoi(val), i++;
		else if (strcmp(k, "--pause-ms") == 0)
			base.pause_ms = atoi(val), i++;
		else if (strcmp(k, "--pause-every") == 0)
			base.pause_every = strtoull(val, NULL, 0), i++;
		else if (strcmp(k, "--stall") == 0)
			base.stall_s = atoi(val), i++;
		else if (strcmp(k, "--deadline") == 0)
			base.deadline_s = atoi(val), i++;
		else if (strcmp(k, "--one-way") == 0)
			base.one_way = true;
		else if (strcmp(k, "--fin") == 0)
			base.fin = true;
		else if (strcmp(k, "--matrix") == 0)
			matrix = true;
		else {
			fprintf(stderr, "usage: see the top of tests/kernel/sockmap_repro.c\n");
			return 2;
		}
	}
	struct utsname u;
	uname(&u);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	struct sockmap_repro_bpf *skel = sockmap_repro_bpf__open_and_load();
	if (!skel) {
		printf("kernel %s: cannot load the verdict program: %s\n", u.release,
		       strerror(errno));
		return 2;
	}
	int prog = bpf_program__fd(skel->progs.repro_verdict);
	if (bpf_prog_attach(prog, bpf_map__fd(skel->maps.repro_socks), BPF_SK_SKB_STREAM_VERDICT,
	                    0) != 0) {
		printf("kernel %s: cannot attach the verdict program: %s\n", u.release,
		       strerror(errno));
		return 2;
	}
	printf("kernel %s: %u runs of %llu bytes%s\n", u.release, runs, base.bytes,
	       matrix ? ", variants cycled (--matrix)" : "");
	unsigned exact = 0, bad = 0;
	for (unsigned r = 0; r < runs; r++) {
		struct variant v = base;
		if (matrix) {
			/* fast/slow readers x default/16 KiB buffers x both/one way */
			v.pause_ms = r & 1 ? 5 : 0;
			v.pause_every = 4 << 20;
			/* 64 KiB: smaller receive buffers with loopback's 64 KiB MSS
			 * starve TCP itself (window below one segment: persist
			 * probes, a few KB/s), with or without sockmap */
			v.rcvbuf = r & 2 ? 65536 : 0;
			v.one_way = (r & 4) != 0;
			printf("run %u: readers %s, SO_RCVBUF %s, %s\n", r,
			       v.pause_ms ? "slow" : "fast", v.rcvbuf ? "65536" : "default",
			       v.one_way ? "one way" : "both ways");
		}
		int rc = run(skel, &v, r);
		if (rc == 2)
			return 2;
		rc == 0 ? exact++ : bad++;
	}
	printf("kernel %s: %u of %u runs exact\n", u.release, exact, runs);
	sockmap_repro_bpf__destroy(skel);
	return bad ? 1 : 0;
}
