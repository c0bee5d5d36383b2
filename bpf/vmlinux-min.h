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
	BPF_MAP_TYPE_SOCKHASH = 18,
};

enum sk_action {
	SK_DROP = 0,
	SK_PASS = 1,
};

struct __sk_buff;

#endif
