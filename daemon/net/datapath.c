/*
 * Data path selection (see relay.h and docs/datapath.md): what the kernel
 * offers, probed once at start-up, and the sockmap plumbing the relay uses.
 *
 * The sockmap probe is not a guess: it loads bpf/sockmap.bpf.c, has the
 * kernel verify it, attaches it to its sockhash and redirects a few bytes
 * between two loopback connections, exactly as sessions will. kTLS is
 * probed by setting the "tls" ULP on a connected socket.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "log.h"
#include "relay.h"
#include "sockmap.skel.h"
#include "util.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static struct datapath_caps caps;
static struct sockmap_bpf *skel;
static struct ms_dir *dirs; /* the mmapped slot array */
static size_t dirs_len;
static int socks_fd = -1, slot_fd = -1;
static char sockmap_why[200];

/* free slots, a stack; slots are handed out in pairs */
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *free_slots;
static size_t n_free;
static size_t in_use;
/* after a hand-over the map is shared with the other process (docs/upgrade.md) */
static bool frozen;    /* predecessor: no new pair may join */
static uint8_t *owned; /* successor: slots this process holds, one byte each */
static int adopted_fds[4] = {-1, -1, -1, -1};

/* Two connected loopback TCP pairs: out[0]<->out[1], out[2]<->out[3]. */
static bool loopback_pairs(int out[4])
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	bool ok = l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 2) == 0 &&
	          getsockname(l, (struct sockaddr *)&a, &len) == 0;

	for (int i = 0; i < 4; i++)
		out[i] = -1;
	for (int p = 0; ok && p < 2; p++) {
		out[2 * p] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ok = out[2 * p] >= 0 &&
		     connect(out[2 * p], (struct sockaddr *)&a, sizeof(a)) == 0 &&
		     (out[2 * p + 1] = accept4(l, NULL, NULL, SOCK_CLOEXEC)) >= 0;
	}
	if (l >= 0)
		close(l);
	if (!ok)
		for (int i = 0; i < 4; i++)
			if (out[i] >= 0)
				close(out[i]);
	return ok;
}

static void close_all(int fds[4])
{
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* The "tls" ULP can only be set on an established TCP socket. */
static bool probe_ktls(void)
{
	int fds[4];

	if (!loopback_pairs(fds))
		return false;
	bool ok = setsockopt(fds[0], IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	close_all(fds);
	return ok;
}

static uint64_t socket_cookie(int fd)
{
	uint64_t c = 0;
	socklen_t len = sizeof(c);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0)
		return 0;
	return c;
}

static void rescan_slots(void);

static bool slots_take(uint32_t out[2])
{
	pthread_mutex_lock(&slot_lock);
	if (n_free < 2 && owned)
		rescan_slots(); /* the predecessor may have let some go */
	bool ok = n_free >= 2;
	if (ok) {
		out[0] = free_slots[--n_free];
		out[1] = free_slots[--n_free];
		in_use += 2;
		if (owned)
			owned[out[0]] = owned[out[1]] = 1;
	}
	pthread_mutex_unlock(&slot_lock);
	return ok;
}

static void slots_give(const uint32_t s[2])
{
	pthread_mutex_lock(&slot_lock);
	free_slots[n_free++] = s[1];
	free_slots[n_free++] = s[0];
	in_use -= 2;
	if (owned)
		owned[s[0]] = owned[s[1]] = 0;
	pthread_mutex_unlock(&slot_lock);
}

bool sockmap_pair_add(struct sockmap_pair *p, int fd_a, int fd_b, uint32_t limit, char *err,
                      size_t errlen)
{
	int fds[2] = {fd_a, fd_b};

	memset(p, 0, sizeof(*p));
	if (socks_fd < 0 || !dirs) {
		snprintf(err, errlen, "sockmap not loaded");
		return false;
	}
	if (frozen) {
		snprintf(err, errlen, "the sockhash was handed to a successor");
		return false;
	}
	if (!slots_take(p->slot)) {
		snprintf(err, errlen, "all %u sockmap slots in use", MS_MAX_SOCKETS);
		return false;
	}
	for (int i = 0; i < 2; i++) {
		p->cookie[i] = socket_cookie(fds[i]);
		p->dir[i] = &dirs[p->slot[i]];
		memset(p->dir[i], 0, sizeof(*p->dir[i]));
		p->dir[i]->peer = p->slot[1 - i];
		p->dir[i]->rebase = 1;
		p->dir[i]->limit = limit;
	}
	__sync_synchronize();
	int step = 0;
	for (; step < 2; step++)
		if (!p->cookie[step] || bpf_map_update_elem(slot_fd, &p->cookie[step],
		                                            &p->slot[step], BPF_NOEXIST) != 0)
			goto fail;
	for (; step < 4; step++) {
		uint64_t key = p->slot[step - 2];
		uint64_t fd = (uint64_t)fds[step - 2];
		if (bpf_map_update_elem(socks_fd, &key, &fd, BPF_NOEXIST) != 0)
			goto fail;
	}
	p->installed = true;
	/* Bytes that reached a socket before it joined the map sit in its TCP
	 * queue, where a plain recv() would read them behind the program's back
	 * (and a partial read would have the kernel hand the whole skb to the
	 * program later: a duplicate). Setting SO_RCVLOWAT signals data-ready,
	 * which runs them through the program now, in order before anything
	 * that arrives later. */
	for (int i = 0; i < 2; i++) {
		int one = 1;
		setsockopt(fds[i], SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	}
	return true;
fail:
	snprintf(err, errlen, "%s: %s",
	         step < 2 ? "recording the socket" : "inserting into the sockhash",
	         p->cookie[step < 2 ? step : 0] ? strerror(errno) : "no socket cookie");
	p->installed = true;
	sockmap_pair_remove(p);
	return false;
}

void sockmap_pair_remove(struct sockmap_pair *p)
{
	if (!p->installed)
		return;
	for (int i = 0; i < 2; i++) {
		uint64_t key = p->slot[i];
		bpf_map_delete_elem(socks_fd, &key);
	}
	for (int i = 0; i < 2; i++)
		if (p->cookie[i])
			bpf_map_delete_elem(slot_fd, &p->cookie[i]);
	slots_give(p->slot);
	p->installed = false;
	p->dir[0] = p->dir[1] = NULL;
}

size_t sockmap_slots_in_use(void)
{
	pthread_mutex_lock(&slot_lock);
	size_t n = in_use;
	pthread_mutex_unlock(&slot_lock);
	return n;
}

/* Redirect 4 bytes through a real pair: what every session will do. */
static bool probe_redirect(void)
{
	int fds[4];
	struct sockmap_pair p;
	char err[160], buf[8];

	if (!loopback_pairs(fds)) {
		snprintf(sockmap_why, sizeof(sockmap_why), "probe: no loopback pair: %s",
		         strerror(errno));
		return false;
	}
	/* fds[1] and fds[3] play the proxy's two legs */
	if (!sockmap_pair_add(&p, fds[1], fds[3], 1 << 20, err, sizeof(err))) {
		snprintf(sockmap_why, sizeof(sockmap_why), "probe: %s", err);
		close_all(fds);
		return false;
	}
	bool ok = false;
	struct pollfd pfd = {.fd = fds[2], .events = POLLIN};
	if (write(fds[0], "ping", 4) == 4 && poll(&pfd, 1, 2000) == 1 &&
	    recv(fds[2], buf, sizeof(buf), MSG_DONTWAIT) == 4 && memcmp(buf, "ping", 4) == 0 &&
	    p.dir[0]->redirected == 4)
		ok = true;
	else
		snprintf(sockmap_why, sizeof(sockmap_why),
		         "probe: bytes written on one leg did not arrive redirected on the other "
		         "(redirected=%llu passed=%llu)",
		         (unsigned long long)p.dir[0]->redirected,
		         (unsigned long long)p.dir[0]->passed);
	sockmap_pair_remove(&p);
	close_all(fds);
	return ok;
}

static void sockmap_unload(void)
{
	if (dirs)
		munmap(dirs, dirs_len);
	dirs = NULL;
	free(free_slots);
	free_slots = NULL;
	n_free = in_use = 0;
	if (skel)
		sockmap_bpf__destroy(skel);
	skel = NULL;
	socks_fd = slot_fd = -1;
	for (int i = 0; i < 4; i++) {
		if (adopted_fds[i] >= 0)
			close(adopted_fds[i]);
		adopted_fds[i] = -1;
	}
	free(owned);
	owned = NULL;
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
	socks_fd = bpf_map__fd(skel->maps.ms_socks);
	slot_fd = bpf_map__fd(skel->maps.ms_slot);
	if (bpf_prog_attach(prog, socks_fd, BPF_SK_SKB_STREAM_VERDICT, 0) != 0) {
		snprintf(sockmap_why, sizeof(sockmap_why), "attaching to the sockhash: %s",
		         strerror(errno));
		sockmap_unload();
		return false;
	}
	long page = sysconf(_SC_PAGESIZE);
	dirs_len = ((size_t)MS_MAX_SOCKETS * sizeof(struct ms_dir) + (size_t)page - 1) &
	           ~((size_t)page - 1);
	dirs = mmap(NULL, dirs_len, PROT_READ | PROT_WRITE, MAP_SHARED,
	            bpf_map__fd(skel->maps.ms_dirs), 0);
	if (dirs == MAP_FAILED) {
		dirs = NULL;
		snprintf(sockmap_why, sizeof(sockmap_why), "mapping the slot array: %s",
		         strerror(errno));
		sockmap_unload();
		return false;
	}
	free_slots = xcalloc(MS_MAX_SOCKETS, sizeof(*free_slots));
	for (uint32_t i = 0; i < MS_MAX_SOCKETS; i++)
		free_slots[n_free++] = MS_MAX_SOCKETS - 1 - i;
	if (!probe_redirect()) {
		sockmap_unload();
		return false;
	}
	return true;
}

bool datapath_init(enum data_path_mode want, char *err, size_t errlen)
{
	caps.splice = true;
	caps.ktls = probe_ktls();
	caps.sockmap = false;
	if (want == DATA_PATH_AUTO || want == DATA_PATH_SOCKMAP)
		caps.sockmap = probe_sockmap();
	else
		snprintf(sockmap_why, sizeof(sockmap_why), "data_path = \"%s\"",
		         data_path_mode_name(want));
	if (want == DATA_PATH_SOCKMAP && !caps.sockmap) {
		snprintf(err, errlen, "server.data_path = \"sockmap\": %s", sockmap_why);
		return false;
	}
	/* Redirect is byte-exact while it never has to pause; pausing passes
	 * skbs up through the psock backlog, which on the kernels measured
	 * here duplicated or reordered whole skbs under receive-memory
	 * pressure (docs/datapath.md). So "auto" reports sockmap but splices
	 * plain pairs; "sockmap" is an explicit, documented opt-in. */
	bool use_sockmap = caps.sockmap && want == DATA_PATH_SOCKMAP;
	if (caps.sockmap && !use_sockmap)
		sockmap_unload();
	caps.kernel_path = use_sockmap;

	const char *plain = use_sockmap                   ? "sockmap"
	                    : want == DATA_PATH_USERSPACE ? "userspace"
	                                                  : "splice";
	const char *tls = want != DATA_PATH_USERSPACE && caps.ktls ? "ktls-splice" : "userspace";
	struct logbuf lb;
	lb_init(&lb, LOG_INFO, "data-path");
	lb_str(&lb, "mode", data_path_mode_name(want));
	lb_str(&lb, "sockmap", caps.sockmap ? "yes" : "no");
	lb_str(&lb, "sockmap_reason", caps.sockmap ? NULL : sockmap_why);
	lb_str(&lb, "sockmap_use",
	       !caps.sockmap ? NULL
	       : use_sockmap ? "forced (experimental)"
	                     : "opt-in only");
	lb_str(&lb, "ktls", caps.ktls ? "yes" : "no");
	lb_str(&lb, "ktls_reason", caps.ktls ? NULL : "the kernel has no tls ULP (CONFIG_TLS)");
	lb_str(&lb, "plain_pairs", plain);
	lb_str(&lb, "tls_legs", tls);
	lb_emit(&lb);
	return true;
}

const struct datapath_caps *datapath_caps(void)
{
	return &caps;
}

void datapath_shutdown(void)
{
	sockmap_unload();
}

/* ---- hand-over (docs/upgrade.md) ----
 *
 * The sockhash, the slot map and the slot array move to the successor as
 * descriptors: pairs already in the map stay there and keep being
 * redirected while the processes change. From then on both processes use
 * one map: the predecessor adds nothing (frozen), the successor takes only
 * slots that are not in the map and not its own, looking again when it
 * runs out (the predecessor removes its draining pairs as they end). */

bool datapath_sockmap_fds(int out[4])
{
	if (socks_fd < 0 || !dirs)
		return false;
	if (skel) {
		out[0] = bpf_program__fd(skel->progs.ms_verdict);
		out[1] = socks_fd;
		out[2] = slot_fd;
		out[3] = bpf_map__fd(skel->maps.ms_dirs);
	} else {
		for (int i = 0; i < 4; i++)
			out[i] = adopted_fds[i];
	}
	return true;
}

void datapath_sockmap_freeze(void)
{
	pthread_mutex_lock(&slot_lock);
	frozen = true;
	pthread_mutex_unlock(&slot_lock);
}

/* Free slots := neither in the sockhash nor held by this process. Called
 * with slot_lock held. */
static void rescan_slots(void)
{
	uint8_t *present = calloc(MS_MAX_SOCKETS, 1);
	uint64_t key, next;
	bool first = true;

	if (!present)
		return;
	while (bpf_map_get_next_key(socks_fd, first ? NULL : &key, &next) == 0) {
		if (next < MS_MAX_SOCKETS)
			present[next] = 1;
		key = next;
		first = false;
	}
	n_free = 0;
	for (uint32_t i = MS_MAX_SOCKETS; i-- > 0;)
		if (!present[i] && !owned[i])
			free_slots[n_free++] = i;
	free(present);
}

static bool map_matches(int fd, uint32_t type, uint32_t key_size, uint32_t value_size,
                        uint32_t max_entries)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == type &&
	       info.key_size == key_size && info.value_size == value_size &&
	       info.max_entries == max_entries;
}

bool datapath_adopt_sockmap(const int fds[4], uint32_t dir_size, uint32_t max_sockets, char *err,
                            size_t errlen)
{
	if (dir_size != sizeof(struct ms_dir) || max_sockets != MS_MAX_SOCKETS) {
		snprintf(err, errlen,
		         "the running daemon's slot layout (%u bytes x %u) differs from this "
		         "build's (%zu x %u)",
		         dir_size, max_sockets, sizeof(struct ms_dir), MS_MAX_SOCKETS);
		return false;
	}
	if (!map_matches(fds[1], BPF_MAP_TYPE_SOCKHASH, 8, 8, MS_MAX_SOCKETS) ||
	    !map_matches(fds[2], BPF_MAP_TYPE_HASH, 8, 4, MS_MAX_SOCKETS) ||
	    !map_matches(fds[3], BPF_MAP_TYPE_ARRAY, 4, sizeof(struct ms_dir), MS_MAX_SOCKETS)) {
		snprintf(err, errlen,
		         "the passed maps are not this build's sockhash and slot array");
		return false;
	}
	long page = sysconf(_SC_PAGESIZE);
	size_t len = ((size_t)MS_MAX_SOCKETS * sizeof(struct ms_dir) + (size_t)page - 1) &
	             ~((size_t)page - 1);
	struct ms_dir *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[3], 0);
	if (m == MAP_FAILED) {
		snprintf(err, errlen, "mapping the slot array: %s", strerror(errno));
		return false;
	}
	/* our own probe's program and maps are not needed any more */
	sockmap_unload();
	pthread_mutex_lock(&slot_lock);
	for (int i = 0; i < 4; i++)
		adopted_fds[i] = fds[i];
	socks_fd = fds[1];
	slot_fd = fds[2];
	dirs = m;
	dirs_len = len;
	free_slots = xcalloc(MS_MAX_SOCKETS, sizeof(*free_slots));
	owned = xcalloc(MS_MAX_SOCKETS, 1);
	rescan_slots();
	in_use = 0;
	frozen = false;
	pthread_mutex_unlock(&slot_lock);
	log_msg(LOG_INFO, "data-path", "sockmap=adopted free_slots=%zu", n_free);
	return true;
}

bool sockmap_pair_adopt(struct sockmap_pair *p, int fd_a, int fd_b, const uint32_t slots[2],
                        char *err, size_t errlen)
{
	int fds[2] = {fd_a, fd_b};

	memset(p, 0, sizeof(*p));
	if (!owned) {
		snprintf(err, errlen, "the predecessor's sockhash was not adopted");
		return false;
	}
	for (int i = 0; i < 2; i++) {
		uint32_t slot = 0;
		if (slots[i] >= MS_MAX_SOCKETS) {
			snprintf(err, errlen, "slot %u out of range", slots[i]);
			return false;
		}
		p->cookie[i] = socket_cookie(fds[i]);
		/* the socket must be the one the map holds in that slot */
		if (!p->cookie[i] || bpf_map_lookup_elem(slot_fd, &p->cookie[i], &slot) != 0 ||
		    slot != slots[i]) {
			snprintf(err, errlen, "socket %d is not the one in slot %u", i, slots[i]);
			return false;
		}
		p->slot[i] = slots[i];
		p->dir[i] = &dirs[slots[i]];
	}
	pthread_mutex_lock(&slot_lock);
	owned[slots[0]] = owned[slots[1]] = 1;
	in_use += 2;
	pthread_mutex_unlock(&slot_lock);
	p->installed = true;
	return true;
}

void sockmap_pair_forget(struct sockmap_pair *p)
{
	if (!p->installed)
		return;
	pthread_mutex_lock(&slot_lock);
	if (owned)
		owned[p->slot[0]] = owned[p->slot[1]] = 0;
	in_use -= 2;
	pthread_mutex_unlock(&slot_lock);
	p->installed = false;
	p->dir[0] = p->dir[1] = NULL;
}
