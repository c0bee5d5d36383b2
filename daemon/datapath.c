/*
 * Data path selection (see relay.h): what the kernel offers, probed once.
 *
 * Pairs of plain sockets move their bytes with splice(2) through a pipe per
 * direction (daemon/relay.c; the pipe bounds what a session can pin, and a
 * full pipe stops the reads, so backpressure reaches the sender); a pair
 * with a TLS leg moves them in user space through OpenSSL. The sockmap and
 * kTLS paths are the kernel relay still to come (issue 6). The sockmap probe is not a guess:
 * it loads bpf/sockmap.bpf.c, has the kernel verify it and attaches it to
 * its sockhash, exactly as the kernel path will.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "log.h"
#include "sockmap.skel.h"
#include "relay.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static struct datapath_caps caps;
static struct sockmap_bpf *skel;
static char sockmap_why[160];

/* The "tls" ULP can only be set on an established TCP socket. */
static bool probe_ktls(void)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	bool ok = false;

	if (l >= 0 && c >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    listen(l, 1) == 0 && getsockname(l, (struct sockaddr *)&a, &len) == 0 &&
	    connect(c, (struct sockaddr *)&a, sizeof(a)) == 0)
		ok = setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	if (l >= 0)
		close(l);
	if (c >= 0)
		close(c);
	return ok;
}

static bool probe_sockmap(void)
{
	skel = sockmap_bpf__open_and_load();
	if (!skel) {
		snprintf(sockmap_why, sizeof(sockmap_why), "loading the verdict program: %s",
		         strerror(errno));
		return false;
	}
	int prog = bpf_program__fd(skel->progs.ms_verdict);
	int map = bpf_map__fd(skel->maps.ms_socks);
	if (bpf_prog_attach(prog, map, BPF_SK_SKB_STREAM_VERDICT, 0) != 0) {
		snprintf(sockmap_why, sizeof(sockmap_why), "attaching to the sockhash: %s",
		         strerror(errno));
		sockmap_bpf__destroy(skel);
		skel = NULL;
		return false;
	}
	return true;
}

bool datapath_init(enum data_path_mode want, char *err, size_t errlen)
{
	caps.ktls = probe_ktls();
	caps.sockmap = probe_sockmap();
	caps.splice = true;
	if (want == DATA_PATH_SOCKMAP) {
		snprintf(err, errlen,
		         "server.data_path = \"sockmap\": this build relays with splice(2) and in "
		         "user space; use \"auto\", \"splice\" or \"userspace\"");
		return false;
	}
	const char *using = want == DATA_PATH_USERSPACE ? "userspace"
	                                                : "splice(plain pairs)+userspace(TLS legs)";
	if (caps.sockmap)
		log_msg(LOG_INFO, "data-path",
		        "sockmap=available ktls=%s using=%s reason=\"sockmap/kTLS relay not in "
		        "this build\"",
		        caps.ktls ? "available" : "no", using);
	else
		log_msg(LOG_INFO, "data-path", "sockmap=no sockmap_error=\"%s\" ktls=%s using=%s",
		        sockmap_why, caps.ktls ? "available" : "no", using);
	return true;
}

const struct datapath_caps *datapath_caps(void)
{
	return &caps;
}

void datapath_shutdown(void)
{
	if (skel)
		sockmap_bpf__destroy(skel);
	skel = NULL;
}
