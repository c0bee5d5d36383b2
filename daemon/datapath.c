/*
 * Data path selection (see relay.h): what the kernel offers, probed once.
 *
 * This build moves bytes in user space only (daemon/relay.c); the probes
 * still run so the start-up line says what the kernel could do.
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
#include "relay.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static struct datapath_caps caps;

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
	int fd = bpf_map_create(BPF_MAP_TYPE_SOCKHASH, "ms_probe", sizeof(uint64_t), sizeof(int), 1,
	                        NULL);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

bool datapath_init(enum data_path_mode want, char *err, size_t errlen)
{
	caps.ktls = probe_ktls();
	caps.sockmap = probe_sockmap();
	caps.splice = true;
	if (want == DATA_PATH_SOCKMAP || want == DATA_PATH_SPLICE) {
		snprintf(
		        err, errlen,
		        "server.data_path = \"%s\": this build moves bytes in user space only; use "
		        "\"auto\" or \"userspace\"",
		        data_path_mode_name(want));
		return false;
	}
	log_msg(LOG_INFO, "data-path", "sockmap=%s ktls=%s using=userspace",
	        caps.sockmap ? "available" : "no", caps.ktls ? "available" : "no");
	return true;
}

const struct datapath_caps *datapath_caps(void)
{
	return &caps;
}

void datapath_shutdown(void)
{
}
