/*
 * The hand-over protocol between a running daemon and its successor
 * (docs/upgrade.md): messages on a SOCK_SEQPACKET Unix socket, descriptors
 * alongside with SCM_RIGHTS.
 *
 * Every message is one datagram:
 *
 *   "MSHO" | u16 version | u16 type | u32 body length | body
 *
 * and the body is a sequence of fields, tag (u16), length (u16), value,
 * all integers big-endian. Each message type has a fixed set of fields;
 * a field the decoder does not know, a duplicate, a missing required one,
 * a length that does not fit, a value out of range, or a descriptor count
 * that is not the one the fields call for makes the whole message refused:
 * a process never guesses at a session's state.
 *
 * ho_decode() is pure (bytes in, a struct out, no I/O, no allocation) and
 * bounded by HO_MSG_MAX; tests/fuzz/fuzz_handover.c drives it.
 */
#ifndef MAILSPLICE_HANDOVER_H
#define MAILSPLICE_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define HO_MAGIC         "MSHO"
#define HO_VERSION       1
#define HO_HEADER_LEN    12
#define HO_MSG_MAX       (96 * 1024) /* fits a Unix datagram at the default wmem_max */
#define HO_PENDING_MAX   (32 * 1024) /* bytes read from one side, not yet written */
#define HO_PIPE_MAX      (64u << 20) /* bytes a passed pipe may hold (F_SETPIPE_SZ max) */
#define HO_LISTENERS_MAX 4096        /* listening sockets (binds x workers) */
#define HO_FDS_MAX       6           /* per message: two legs and two pipes */
#define HO_NO_SLOT       0xffffffffu

enum ho_type {
	HO_HELLO = 1,     /* new -> old: who asks */
	HO_WELCOME,       /* old -> new: who answers, what follows */
	HO_LISTENER,      /* old -> new, 1 fd: a listening socket */
	HO_SOCKMAP,       /* old -> new, 4 fds: program, sockhash, slot map, slot array */
	HO_LISTENERS_END, /* old -> new: every listener was sent */
	HO_ABORT,         /* new -> old: the successor gives up; nothing changed */
	HO_COMMIT,        /* new -> old: it serves now; stop accepting */
	HO_COMMITTED,     /* old -> new: stopped accepting; sessions follow */
	HO_SESSION,       /* old -> new, 2-6 fds: one session on a kernel data path */
	HO_SESSION_ACK,   /* new -> old: adopted, or refused (then the old one keeps it) */
	HO_DRAINING,      /* old -> new: a session that stays with the old process */
	HO_GONE,          /* old -> new: a draining session ended */
	HO_KICK,          /* either way: end a session the other process holds */
	HO_ROUND_DONE,    /* old -> new: everything movable now has been offered */
	HO_BYE,           /* old -> new: the old process exits */
	HO_TYPE_MAX = HO_BYE,
};

enum ho_listener_kind {
	HO_LISTEN_MAIL = 1, /* a [listener.NAME] bind, one socket per worker */
	HO_LISTEN_ADMIN,    /* the admin API */
	HO_LISTEN_CONTROL,  /* the control socket itself (a Unix socket) */
};

enum ho_engine {
	HO_ENGINE_USER = 1, /* userspace copy: plain legs only */
	HO_ENGINE_SPLICE,   /* splice(2) through a pipe; TLS legs keyed in the kernel */
	HO_ENGINE_SOCKMAP,  /* the BPF program redirects */
};

#define HO_TLS_NONE 0
#define HO_TLS_1_2  0x0303
#define HO_TLS_1_3  0x0304

/* One leg (socket) of a session. A TLS leg moves only when the kernel holds
 * both directions of its record layer: nothing of it is left in OpenSSL. */
struct ho_leg {
	uint16_t tls;   /* HO_TLS_* */
	bool ktls_rx;   /* the kernel decrypts what arrives */
	bool ktls_tx;   /* the kernel encrypts what is sent */
	bool own_rx;    /* TLS 1.3 receive keyed by the daemon (ktls13.h) */
	bool eof, shut; /* the peer ended its stream / we ended ours */
};

/* One direction (up: client -> backend, down: backend -> client). */
struct ho_dir {
	uint8_t engine; /* enum ho_engine */
	bool pipe;      /* a pipe travels with it (two fds: read end, write end) */
	uint32_t held;  /* bytes in that pipe: what a splice direction had in flight,
	                   or a userspace buffer too large for the record (the pipe's
	                   bytes come first, then the pending ones) */
	/* sockmap: the source socket's slot and the relay's counters */
	uint32_t slot; /* HO_NO_SLOT unless engine == HO_ENGINE_SOCKMAP */
	bool kernel;   /* the program redirects (the only movable sockmap state) */
	bool pinned;
	uint64_t taken, r0, red0;
	/* bytes read from the source and not yet written: they go out before
	 * anything read from now on (a splice direction: before its pipe's) */
	const uint8_t *pending; /* points into the decoded buffer */
	size_t n_pending;
};

struct ho_session {
	char id[40];
	char account[256];
	char listener[64];
	char protocol[16];
	char client[64]; /* "ip:port" of the real client */
	char destination[64];
	char sni[256];
	struct sockaddr_storage peer, local;
	bool client_tls, routed_default;
	uint32_t auth_failures;
	uint32_t moves;      /* hand-overs before this one */
	uint64_t started_ms; /* wall clock, ms since the epoch */
	uint64_t started_us; /* CLOCK_MONOTONIC, the same in both processes */
	uint64_t bytes_up, bytes_down;
	struct ho_leg leg[2]; /* client, backend */
	struct ho_dir dir[2]; /* up, down */
};

/* Descriptors of a HO_SESSION, in this order: client socket, backend
 * socket, then for each direction with a pipe (up first) its read end and
 * its write end. */
unsigned ho_session_fds(const struct ho_session *s);

struct ho_msg {
	enum ho_type type;
	union {
		struct {
			uint32_t pid;
			char software[32];
		} hello;
		struct {
			uint32_t pid;
			char software[32];
			uint32_t workers, listeners;
			bool sockmap;
		} welcome;
		struct {
			uint32_t index;
			uint8_t kind; /* enum ho_listener_kind */
			uint32_t worker;
			char name[64]; /* the [listener.NAME]; "" for admin/control */
			char bind[80]; /* as configured, for the log */
		} listener;
		struct {
			uint32_t dir_size; /* sizeof(struct ms_dir) of the sender */
			uint32_t max_sockets;
		} sockmap;
		struct {
			char reason[256];
		} text; /* HO_ABORT, HO_BYE */
		struct {
			uint32_t n_taken;
			uint32_t taken[HO_LISTENERS_MAX]; /* HO_LISTENER indexes adopted */
		} commit;
		struct ho_session session;
		struct {
			char id[40];
			bool adopted;
			char reason[256];
		} ack;
		struct {
			char id[40];
			char account[256];
			char listener[64];
			char protocol[16];
			char client[64];
			char destination[64];
			char state[16];
			uint64_t started_ms;
			char reason[256];
		} draining;
		struct {
			char id[40];
		} id; /* HO_GONE, HO_KICK */
		struct {
			uint32_t moved, draining;
		} round;
	} u;
};

/* How many descriptors must travel with m. */
unsigned ho_msg_fds(const struct ho_msg *m);

/* Encode m into buf. Returns the length, or 0 if it does not fit (or m is
 * not a valid message: the encoder refuses what the decoder would). */
size_t ho_encode(const struct ho_msg *m, uint8_t *buf, size_t cap);

/* Decode one datagram of len bytes that arrived with n_fds descriptors.
 * On failure err says what was wrong (and where) and *out is undefined.
 * String fields are NUL-terminated; session.dir[i].pending points into buf. */
bool ho_decode(const uint8_t *buf, size_t len, unsigned n_fds, struct ho_msg *out, char *err,
               size_t errlen);

const char *ho_type_name(enum ho_type t);

#endif
