/* Shared between bpf/sockmap.bpf.c and the daemon. */
#ifndef MAILSPLICE_RELAY_BPF_H
#define MAILSPLICE_RELAY_BPF_H

/* two sockets per spliced session */
#define MS_MAX_SOCKETS 262144

#endif
