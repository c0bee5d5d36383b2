// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest sk_skb verdict that redirects: every skb arriving on a socket
 * in repro_socks goes to its peer's egress, never up to the socket itself
 * (no SK_PASS anywhere), and the program counts what it was handed. Used by
 * tests/kernel/sockmap_repro.c to show what the kernel does with a pure
 * redirect, with no daemon and none of mailsplice's pausing in the way.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct repro_count {
	__u64 bytes; /* skb->len summed over every call */
	__u64 skbs;  /* calls */
	__u64 empty; /* calls with skb->len == 0 (a FIN alone) */
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2);
	__type(key, __u32); /* slot */
	__type(value, __u64);
} repro_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2);
	__type(key, __u64);   /* socket cookie */
	__type(value, __u32); /* slot of the peer to redirect to */
} repro_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32); /* slot of the receiving socket */
	__type(value, struct repro_count);
} repro_counts SEC(".maps");

SEC("sk_skb")
int repro_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 *peer = bpf_map_lookup_elem(&repro_peer, &cookie);
	__u32 self;
	struct repro_count *c;

	if (!peer)
		return SK_DROP;
	self = *peer ^ 1;
	c = bpf_map_lookup_elem(&repro_counts, &self);
	if (c) {
		__sync_fetch_and_add(&c->bytes, skb->len);
		__sync_fetch_and_add(&c->skbs, 1);
		if (skb->len == 0)
			__sync_fetch_and_add(&c->empty, 1);
	}
	return bpf_sk_redirect_hash(skb, &repro_socks, peer, 0);
}

char LICENSE[] SEC("license") = "GPL";
