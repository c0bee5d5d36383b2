/*
 * Shared between bpf/sockmap.bpf.c and the daemon: the per-direction state
 * of a session whose bytes the kernel redirects (docs/datapath.md).
 *
 * Every socket in the sockhash owns one slot; the slot number is also its
 * key in the sockhash. The slot describes the direction whose source is
 * that socket. The daemon maps the slot array (BPF_F_MMAPABLE) and reads
 * the program's counters directly; each field has exactly one writer.
 */
#ifndef MAILSPLICE_RELAY_BPF_H
#define MAILSPLICE_RELAY_BPF_H

/* two sockets per spliced session; a power of two keeps the array map
 * page-aligned for mmap */
#define MS_MAX_SOCKETS 131072

struct ms_dir {
	/* written by the daemon */
	__u64 peer;      /* slot (= sockhash key) of the destination socket */
	__u64 resume_at; /* redirect only while passed == resume_at */
	__u32 hold;      /* nonzero: pass every byte up to the daemon */
	__u32 rebase;    /* nonzero: restart in-flight accounting at the next skb */
	__u32 limit;     /* most bytes redirected but not yet in the peer's send queue */
	__u32 pad0;
	/* written by the verdict program */
	__u64 redirected; /* bytes redirected to the peer, ever */
	__u64 passed;     /* bytes passed up to the daemon, ever */
	__u32 base_seq;   /* peer's write_seq when epoch was 0 */
	__u32 epoch;      /* bytes redirected since base_seq (mod 2^32) */
	__u32 pauses;     /* times the limit turned redirect into pass */
	__u32 pad1;
};

#endif
