/*
 * The few kernel types bpf/sockmap.bpf.c needs, for build hosts without
 * /sys/kernel/btf/vmlinux (the Makefile says when it falls back to this).
 * Values are the kernel UAPI's (include/uapi/linux/bpf.h), stable ABI.
 */
#ifndef MAILSPLICE_VMLINUX_MIN_H
#define MAILSPLICE_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_SOCKHASH = 18,
};

enum {
	BPF_F_MMAPABLE = 1024,
};

enum sk_action {
	SK_DROP = 0,
	SK_PASS = 1,
};

/* UAPI: len is the first member; the verifier rewrites context accesses */
struct __sk_buff {
	__u32 len;
};

struct bpf_sock;

/* CO-RE: only the field read is named; libbpf relocates its offset */
struct tcp_sock {
	__u32 write_seq;
} __attribute__((preserve_access_index));

#endif
