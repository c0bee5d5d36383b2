// SPDX-License-Identifier: GPL-2.0
/*
 * sk_skb stream verdict for spliced session pairs: every skb that arrives
 * on a socket in ms_socks is redirected to the egress of its peer.
 *
 * Userspace puts both sockets of a pair into ms_socks under keys of its
 * choosing and records, per socket cookie, the key of the peer in ms_peer.
 * A socket without a peer entry is passed up to userspace unchanged.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "relay_bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MS_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} ms_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MS_MAX_SOCKETS);
	__type(key, __u64);   /* socket cookie */
	__type(value, __u64); /* the peer's key in ms_socks */
} ms_peer SEC(".maps");

SEC("sk_skb")
int ms_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *peer = bpf_map_lookup_elem(&ms_peer, &cookie);

	if (!peer)
		return SK_PASS;
	return bpf_sk_redirect_hash(skb, &ms_socks, peer, 0);
}

char LICENSE[] SEC("license") = "GPL";
