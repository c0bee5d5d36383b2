// SPDX-License-Identifier: GPL-2.0
/*
 * sk_skb stream verdict for spliced session pairs (docs/datapath.md).
 *
 * Every skb arriving on a socket in ms_socks is redirected to the egress of
 * its peer, unless that would leave more than dir->limit bytes queued in
 * the kernel between the two sockets: redirect has no backpressure of its
 * own (the source's receive window never closes), so the program measures
 * what it has redirected against what reached the peer's send queue (the
 * peer's tcp write_seq) and, over the limit, passes the skb up instead. A
 * passed skb sits in the source's own receive queue, charged to that socket,
 * so TCP flow control stops the sender while the daemon waits for the
 * peer's queue to drain.
 *
 * Order is kept by one rule: once anything was passed, everything is
 * passed until the daemon has written all of it on and says so by setting
 * resume_at to the passed count it has consumed. The daemon also sets
 * hold to take a direction back (end of stream, kicks).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "relay_bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MS_MAX_SOCKETS);
	__type(key, __u64); /* slot */
	__type(value, __u64);
} ms_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MS_MAX_SOCKETS);
	__type(key, __u64);   /* socket cookie */
	__type(value, __u32); /* slot */
} ms_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MS_MAX_SOCKETS);
	__type(key, __u32);
	__type(value, struct ms_dir);
} ms_dirs SEC(".maps");

static __always_inline int pass(struct ms_dir *d, __u32 len)
{
	__sync_fetch_and_add(&d->passed, len);
	return SK_PASS;
}

SEC("sk_skb")
int ms_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 *slot = bpf_map_lookup_elem(&ms_slot, &cookie);
	struct ms_dir *d;
	__u32 len = skb->len;

	if (!slot)
		return SK_PASS;
	d = bpf_map_lookup_elem(&ms_dirs, slot);
	if (!d)
		return SK_PASS;
	if (d->hold || d->passed != d->resume_at)
		return pass(d, len);

	__u64 peer = d->peer;
	struct bpf_sock *sk = bpf_map_lookup_elem(&ms_socks, &peer);
	if (!sk)
		return pass(d, len);
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 seq = tp ? BPF_CORE_READ(tp, write_seq) : 0;
	bpf_sk_release(sk);
	if (!tp)
		return pass(d, len);

	if (d->rebase) {
		d->base_seq = seq;
		d->epoch = 0;
		d->rebase = 0;
	}
	/* bytes redirected that the peer's send queue has not taken yet */
	__u32 queued = d->epoch - (seq - d->base_seq);
	if (queued + len > d->limit) {
		d->pauses++;
		return pass(d, len);
	}
	int verdict = bpf_sk_redirect_hash(skb, &ms_socks, &peer, 0);
	if (verdict == SK_PASS) {
		d->epoch += len;
		__sync_fetch_and_add(&d->redirected, len);
	}
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
