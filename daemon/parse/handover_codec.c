/*
 * The hand-over messages (see handover.h): a table of fields per message
 * type drives both the encoder and the strict decoder.
 */
#include "handover.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

enum kind {
	K_U8,
	K_BOOL,
	K_U32,
	K_U64,
	K_STR,     /* size = the char array's size; no NUL or control character */
	K_ADDR,    /* struct sockaddr_storage: family (0, 4, 6), address, port */
	K_LEG,     /* struct ho_leg */
	K_DIR,     /* struct ho_dir, without its pending bytes */
	K_PENDING, /* the pending bytes of the struct ho_dir at offset */
	K_U32LIST, /* commit.taken with commit.n_taken */
};

struct field {
	uint16_t tag;
	enum kind kind;
	bool required;
	size_t offset; /* in struct ho_msg */
	size_t size;   /* K_STR: the array's size */
	const char *name;
};

#define F(tag, kind, req, member)                                                                  \
	{                                                                                          \
		tag, kind, req, offsetof(struct ho_msg, u.member),                                 \
		        sizeof(((struct ho_msg *)0)->u.member), #member                            \
	}

static const struct field f_hello[] = {
        F(1, K_U32, true, hello.pid),
        F(2, K_STR, true, hello.software),
};
static const struct field f_welcome[] = {
        F(1, K_U32, true, welcome.pid),       F(2, K_STR, true, welcome.software),
        F(3, K_U32, true, welcome.workers),   F(4, K_U32, true, welcome.listeners),
        F(5, K_BOOL, false, welcome.sockmap),
};
static const struct field f_listener[] = {
        F(1, K_U32, true, listener.index),  F(2, K_U8, true, listener.kind),
        F(3, K_U32, true, listener.worker), F(4, K_STR, false, listener.name),
        F(5, K_STR, false, listener.bind),
};
static const struct field f_sockmap[] = {
        F(1, K_U32, true, sockmap.dir_size),
        F(2, K_U32, true, sockmap.max_sockets),
};
static const struct field f_text[] = {
        F(1, K_STR, false, text.reason),
};
static const struct field f_commit[] = {
        F(1, K_U32LIST, false, commit.taken),
};
static const struct field f_session[] = {
        F(1, K_STR, true, session.id),
        F(2, K_STR, false, session.account),
        F(3, K_STR, true, session.listener),
        F(4, K_STR, true, session.protocol),
        F(5, K_STR, false, session.client),
        F(6, K_STR, true, session.destination),
        F(7, K_STR, false, session.sni),
        F(8, K_ADDR, true, session.peer),
        F(9, K_ADDR, false, session.local),
        F(10, K_BOOL, false, session.client_tls),
        F(11, K_BOOL, false, session.routed_default),
        F(12, K_U32, false, session.auth_failures),
        F(13, K_U64, true, session.started_ms),
        F(14, K_U64, true, session.started_us),
        F(15, K_U32, false, session.moves),
        F(16, K_U64, false, session.bytes_up),
        F(17, K_U64, false, session.bytes_down),
        F(18, K_LEG, true, session.leg[0]),
        F(19, K_LEG, true, session.leg[1]),
        F(20, K_DIR, true, session.dir[0]),
        F(21, K_DIR, true, session.dir[1]),
        F(22, K_PENDING, false, session.dir[0]),
        F(23, K_PENDING, false, session.dir[1]),
};
static const struct field f_ack[] = {
        F(1, K_STR, true, ack.id),
        F(2, K_BOOL, true, ack.adopted),
        F(3, K_STR, false, ack.reason),
};
static const struct field f_draining[] = {
        F(1, K_STR, true, draining.id),       F(2, K_STR, false, draining.account),
        F(3, K_STR, true, draining.listener), F(4, K_STR, true, draining.protocol),
        F(5, K_STR, false, draining.client),  F(6, K_STR, false, draining.destination),
        F(7, K_STR, true, draining.state),    F(8, K_U64, true, draining.started_ms),
        F(9, K_STR, false, draining.reason),
};
static const struct field f_id[] = {
        F(1, K_STR, true, id.id),
};
static const struct field f_round[] = {
        F(1, K_U32, true, round.moved),
        F(2, K_U32, true, round.draining),
};

struct spec {
	const char *name;
	const struct field *fields;
	size_t n;
};

#define S(name, f)                                                                                 \
	{                                                                                          \
		name, f, sizeof(f) / sizeof(f[0])                                                  \
	}
#define S0(name)                                                                                   \
	{                                                                                          \
		name, NULL, 0                                                                      \
	}

static const struct spec specs[HO_TYPE_MAX + 1] = {
        [HO_HELLO] = S("HELLO", f_hello),
        [HO_WELCOME] = S("WELCOME", f_welcome),
        [HO_LISTENER] = S("LISTENER", f_listener),
        [HO_SOCKMAP] = S("SOCKMAP", f_sockmap),
        [HO_LISTENERS_END] = S0("LISTENERS_END"),
        [HO_ABORT] = S("ABORT", f_text),
        [HO_COMMIT] = S("COMMIT", f_commit),
        [HO_COMMITTED] = S0("COMMITTED"),
        [HO_SESSION] = S("SESSION", f_session),
        [HO_SESSION_ACK] = S("SESSION_ACK", f_ack),
        [HO_DRAINING] = S("DRAINING", f_draining),
        [HO_GONE] = S("GONE", f_id),
        [HO_KICK] = S("KICK", f_id),
        [HO_ROUND_DONE] = S("ROUND_DONE", f_round),
        [HO_BYE] = S("BYE", f_text),
};

const char *ho_type_name(enum ho_type t)
{
	if (t < HO_HELLO || t > HO_TYPE_MAX)
		return "?";
	return specs[t].name;
}

unsigned ho_session_fds(const struct ho_session *s)
{
	return 2 + 2 * (unsigned)s->dir[0].pipe + 2 * (unsigned)s->dir[1].pipe;
}

unsigned ho_msg_fds(const struct ho_msg *m)
{
	switch (m->type) {
	case HO_WELCOME: /* where the old process logs: the new one logs there too */
	case HO_LISTENER:
		return 1;
	case HO_SOCKMAP:
		return 4;
	case HO_SESSION:
		return ho_session_fds(&m->u.session);
	default:
		return 0;
	}
}

/* ---- fixed layouts ---- */

#define LEG_LEN 3  /* u16 tls, u8 flags */
#define DIR_LEN 34 /* u8 engine, u8 flags, u32 held, u32 slot, u64 taken, r0, red0 */

#define LEG_KTLS_RX 0x01
#define LEG_KTLS_TX 0x02
#define LEG_OWN_RX  0x04
#define LEG_EOF     0x08
#define LEG_SHUT    0x10
#define LEG_KNOWN   0x1f

#define DIR_PIPE   0x01
#define DIR_KERNEL 0x02
#define DIR_PINNED 0x04
#define DIR_KNOWN  0x07

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* ---- encoding ---- */

struct writer {
	uint8_t *buf;
	size_t cap, len;
	bool full;
};

static uint8_t *field_open(struct writer *w, uint16_t tag, size_t len)
{
	if (w->full || len > 0xffff || w->cap - w->len < 4 + len) {
		w->full = true;
		return NULL;
	}
	uint8_t *p = w->buf + w->len;
	put16(p, tag);
	put16(p + 2, (uint16_t)len);
	w->len += 4 + len;
	return p + 4;
}

static size_t addr_len(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return 1 + 4 + 2;
	if (ss->ss_family == AF_INET6)
		return 1 + 16 + 2;
	return 1;
}

static void encode_addr(uint8_t *p, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		p[0] = 4;
		memcpy(p + 1, &a->sin_addr, 4);
		memcpy(p + 5, &a->sin_port, 2); /* both in network order already */
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		p[0] = 6;
		memcpy(p + 1, &a->sin6_addr, 16);
		memcpy(p + 17, &a->sin6_port, 2);
	} else {
		p[0] = 0;
	}
}

static void encode_leg(uint8_t *p, const struct ho_leg *l)
{
	put16(p, l->tls);
	p[2] = (uint8_t)((l->ktls_rx ? LEG_KTLS_RX : 0) | (l->ktls_tx ? LEG_KTLS_TX : 0) |
	                 (l->own_rx ? LEG_OWN_RX : 0) | (l->eof ? LEG_EOF : 0) |
	                 (l->shut ? LEG_SHUT : 0));
}

static void encode_dir(uint8_t *p, const struct ho_dir *d)
{
	p[0] = d->engine;
	p[1] = (uint8_t)((d->pipe ? DIR_PIPE : 0) | (d->kernel ? DIR_KERNEL : 0) |
	                 (d->pinned ? DIR_PINNED : 0));
	put32(p + 2, d->held);
	put32(p + 6, d->slot);
	put64(p + 10, d->taken);
	put64(p + 18, d->r0);
	put64(p + 26, d->red0);
}

/* Optional fields at their zero value are left out: the decoder's default. */
static void encode_field(struct writer *w, const struct field *f, const struct ho_msg *m)
{
	const char *base = (const char *)m + f->offset;
	uint8_t *p;

	switch (f->kind) {
	case K_U8:
	case K_BOOL: {
		uint8_t v =
		        f->kind == K_BOOL ? (uint8_t) * (const bool *)base : *(const uint8_t *)base;
		if (!v && !f->required)
			return;
		if ((p = field_open(w, f->tag, 1)))
			p[0] = v;
		return;
	}
	case K_U32: {
		uint32_t v;
		memcpy(&v, base, 4);
		if (!v && !f->required)
			return;
		if ((p = field_open(w, f->tag, 4)))
			put32(p, v);
		return;
	}
	case K_U64: {
		uint64_t v;
		memcpy(&v, base, 8);
		if (!v && !f->required)
			return;
		if ((p = field_open(w, f->tag, 8)))
			put64(p, v);
		return;
	}
	case K_STR: {
		size_t n = strnlen(base, f->size);
		if (n == f->size) {
			w->full = true; /* not terminated: not a valid message */
			return;
		}
		if (!n && !f->required)
			return;
		if ((p = field_open(w, f->tag, n)))
			memcpy(p, base, n);
		return;
	}
	case K_ADDR: {
		const struct sockaddr_storage *ss = (const struct sockaddr_storage *)base;
		if (ss->ss_family == 0 && !f->required)
			return;
		if ((p = field_open(w, f->tag, addr_len(ss))))
			encode_addr(p, ss);
		return;
	}
	case K_LEG:
		if ((p = field_open(w, f->tag, LEG_LEN)))
			encode_leg(p, (const struct ho_leg *)base);
		return;
	case K_DIR:
		if ((p = field_open(w, f->tag, DIR_LEN)))
			encode_dir(p, (const struct ho_dir *)base);
		return;
	case K_PENDING: {
		const struct ho_dir *d = (const struct ho_dir *)base;
		if (!d->n_pending)
			return;
		if ((p = field_open(w, f->tag, d->n_pending)))
			memcpy(p, d->pending, d->n_pending);
		return;
	}
	case K_U32LIST: {
		uint32_t n = m->u.commit.n_taken;
		if (n > HO_LISTENERS_MAX) {
			w->full = true;
			return;
		}
		if (!n)
			return;
		if ((p = field_open(w, f->tag, 4 * (size_t)n)))
			for (uint32_t i = 0; i < n; i++)
				put32(p + 4 * i, m->u.commit.taken[i]);
		return;
	}
	}
}

size_t ho_encode(const struct ho_msg *m, uint8_t *buf, size_t cap)
{
	struct writer w = {.buf = buf, .cap = cap < HO_MSG_MAX ? cap : HO_MSG_MAX};
	char err[8];

	if (m->type < HO_HELLO || m->type > HO_TYPE_MAX || w.cap < HO_HEADER_LEN)
		return 0;
	memcpy(buf, HO_MAGIC, 4);
	put16(buf + 4, HO_VERSION);
	put16(buf + 6, (uint16_t)m->type);
	w.len = HO_HEADER_LEN;
	const struct spec *sp = &specs[m->type];
	for (size_t i = 0; i < sp->n; i++)
		encode_field(&w, &sp->fields[i], m);
	if (w.full)
		return 0;
	put32(buf + 8, (uint32_t)(w.len - HO_HEADER_LEN));
	/* what the peer would refuse is not sent: the same checks, here */
	static __thread struct ho_msg check;
	if (!ho_decode(buf, w.len, ho_msg_fds(m), &check, err, sizeof(err)))
		return 0;
	return w.len;
}

/* ---- decoding ---- */

static bool fail(char *err, size_t errlen, const char *fmt, const char *type, const char *field,
                 unsigned long a)
{
	char what[128];
	snprintf(what, sizeof(what), fmt, a);
	if (field)
		snprintf(err, errlen, "%s.%s: %s", type, field, what);
	else
		snprintf(err, errlen, "%s: %s", type, what);
	return false;
}

static bool decode_str(const uint8_t *v, size_t n, char *out, size_t size)
{
	if (n >= size)
		return false;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x20 || v[i] == 0x7f)
			return false;
	memcpy(out, v, n);
	out[n] = '\0';
	return true;
}

static bool decode_addr(const uint8_t *v, size_t n, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (n == 1 && v[0] == 0)
		return true;
	if (n == 7 && v[0] == 4) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, v + 1, 4);
		memcpy(&a->sin_port, v + 5, 2);
		return true;
	}
	if (n == 19 && v[0] == 6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, v + 1, 16);
		memcpy(&a->sin6_port, v + 17, 2);
		return true;
	}
	return false;
}

static const char *decode_leg(const uint8_t *v, size_t n, struct ho_leg *l, unsigned long *arg)
{
	*arg = n;
	if (n != LEG_LEN)
		return "length %lu is not 3";
	l->tls = get16(v);
	uint8_t fl = v[2];
	*arg = fl;
	if (fl & ~LEG_KNOWN)
		return "unknown flags 0x%02lx";
	l->ktls_rx = fl & LEG_KTLS_RX;
	l->ktls_tx = fl & LEG_KTLS_TX;
	l->own_rx = fl & LEG_OWN_RX;
	l->eof = fl & LEG_EOF;
	l->shut = fl & LEG_SHUT;
	if (l->tls != HO_TLS_NONE && l->tls != HO_TLS_1_2 && l->tls != HO_TLS_1_3) {
		*arg = l->tls;
		return "TLS version 0x%04lx is not 1.2 or 1.3";
	}
	if (l->tls == HO_TLS_NONE && (l->ktls_rx || l->ktls_tx || l->own_rx))
		return "a plain leg has kernel TLS state (flags 0x%02lx)";
	/* a TLS leg moves only when nothing of its record layer is in user space */
	if (l->tls != HO_TLS_NONE && !(l->ktls_rx && l->ktls_tx))
		return "a TLS leg not entirely in kernel TLS (flags 0x%02lx)";
	if (l->own_rx && l->tls != HO_TLS_1_3)
		return "receive keyed by the daemon on a leg that is not TLS 1.3 (flags 0x%02lx)";
	return NULL;
}

static const char *decode_dir(const uint8_t *v, size_t n, struct ho_dir *d, unsigned long *arg)
{
	*arg = n;
	if (n != DIR_LEN)
		return "length %lu is not 34";
	d->engine = v[0];
	uint8_t fl = v[1];
	*arg = fl;
	if (fl & ~DIR_KNOWN)
		return "unknown flags 0x%02lx";
	d->pipe = fl & DIR_PIPE;
	d->kernel = fl & DIR_KERNEL;
	d->pinned = fl & DIR_PINNED;
	d->held = get32(v + 2);
	d->slot = get32(v + 6);
	d->taken = get64(v + 10);
	d->r0 = get64(v + 18);
	d->red0 = get64(v + 26);
	*arg = d->held;
	if (d->held > HO_PIPE_MAX)
		return "%lu bytes held in a pipe: more than any pipe holds";
	if (d->held && !d->pipe)
		return "%lu bytes held but no pipe";
	*arg = d->engine;
	if (d->engine < HO_ENGINE_USER || d->engine > HO_ENGINE_SOCKMAP)
		return "unknown engine %lu";
	/* splice: its pipe; userspace: its buffer, moved into a pipe */
	if (d->engine == HO_ENGINE_SOCKMAP && d->pipe)
		return "a pipe with engine %lu";
	if (d->engine == HO_ENGINE_SOCKMAP) {
		if (d->slot == HO_NO_SLOT)
			return "sockmap without a slot (%lu)";
		/* a direction the daemon holds has state that does not move */
		if (!d->kernel || d->pinned)
			return "sockmap direction not redirected by the kernel (%lu)";
	} else if (d->slot != HO_NO_SLOT || d->kernel || d->pinned || d->taken || d->r0 ||
	           d->red0) {
		return "sockmap state with engine %lu";
	}
	return NULL;
}

/* What the whole session must satisfy once every field is known. */
static const char *check_session(const struct ho_session *s, unsigned long *arg)
{
	for (int i = 0; i < 2; i++) {
		const struct ho_dir *d = &s->dir[i];
		const struct ho_leg *src = &s->leg[i], *dst = &s->leg[1 - i];
		*arg = (unsigned long)i;
		switch (d->engine) {
		case HO_ENGINE_USER:
			if (src->tls || dst->tls)
				return "direction %lu: a userspace copy over a TLS leg cannot move";
			break;
		case HO_ENGINE_SPLICE:
			/* TLS legs are entirely in the kernel (decode_leg) */
			break;
		case HO_ENGINE_SOCKMAP:
			if (src->tls || dst->tls || s->dir[1 - i].engine != HO_ENGINE_SOCKMAP)
				return "direction %lu: sockmap needs two plain legs, both ways";
			if (d->n_pending)
				return "direction %lu: pending bytes on a redirected direction";
			if (s->dir[0].slot == s->dir[1].slot)
				return "direction %lu: both sockets in one slot";
			break;
		}
	}
	return NULL;
}

bool ho_decode(const uint8_t *buf, size_t len, unsigned n_fds, struct ho_msg *out, char *err,
               size_t errlen)
{
	if (len < HO_HEADER_LEN)
		return fail(err, errlen, "%lu bytes: shorter than the header", "message", NULL,
		            len);
	if (len > HO_MSG_MAX)
		return fail(err, errlen, "%lu bytes: longer than any message", "message", NULL,
		            len);
	if (memcmp(buf, HO_MAGIC, 4) != 0)
		return fail(err, errlen, "not a hand-over message (magic)%.0lu", "message", NULL,
		            0);
	if (get16(buf + 4) != HO_VERSION)
		return fail(err, errlen, "protocol version %lu, this build speaks 1", "message",
		            NULL, get16(buf + 4));
	unsigned type = get16(buf + 6);
	if (type < HO_HELLO || type > HO_TYPE_MAX)
		return fail(err, errlen, "unknown message type %lu", "message", NULL, type);
	if (get32(buf + 8) != len - HO_HEADER_LEN)
		return fail(err, errlen, "body length %lu does not match the datagram", "message",
		            NULL, get32(buf + 8));

	const struct spec *sp = &specs[type];
	uint64_t seen = 0; /* bit i: sp->fields[i] */
	memset(out, 0, sizeof(*out));
	out->type = (enum ho_type)type;
	if (type == HO_SESSION) {
		out->u.session.dir[0].slot = out->u.session.dir[1].slot = HO_NO_SLOT;
	}

	for (size_t pos = HO_HEADER_LEN; pos < len;) {
		if (len - pos < 4)
			return fail(err, errlen, "%lu trailing bytes", sp->name, NULL, len - pos);
		uint16_t tag = get16(buf + pos);
		size_t n = get16(buf + pos + 2);
		const uint8_t *v = buf + pos + 4;
		if (n > len - pos - 4)
			return fail(err, errlen, "field %lu runs past the end", sp->name, NULL,
			            tag);
		pos += 4 + n;
		size_t fi = 0;
		while (fi < sp->n && sp->fields[fi].tag != tag)
			fi++;
		if (fi == sp->n)
			return fail(err, errlen, "unknown field %lu", sp->name, NULL, tag);
		const struct field *f = &sp->fields[fi];
		if (seen & (1ull << fi))
			return fail(err, errlen, "appears twice%.0lu", sp->name, f->name, 0);
		seen |= 1ull << fi;
		char *base = (char *)out + f->offset;
		const char *why = NULL;
		unsigned long arg = n;
		switch (f->kind) {
		case K_U8:
		case K_BOOL:
			if (n != 1)
				why = "length %lu is not 1";
			else if (f->kind == K_BOOL && v[0] > 1)
				why = "%lu is not a boolean", arg = v[0];
			else if (f->kind == K_BOOL)
				*(bool *)base = v[0];
			else
				*(uint8_t *)base = v[0];
			break;
		case K_U32:
			if (n != 4) {
				why = "length %lu is not 4";
			} else {
				uint32_t x = get32(v);
				memcpy(base, &x, 4);
			}
			break;
		case K_U64:
			if (n != 8) {
				why = "length %lu is not 8";
			} else {
				uint64_t x = get64(v);
				memcpy(base, &x, 8);
			}
			break;
		case K_STR:
			if (n == 0 && f->required)
				why = "empty%.0lu";
			else if (!decode_str(v, n, base, f->size))
				why = n >= f->size ? "%lu bytes: too long"
				                   : "a control character or NUL (length %lu)";
			break;
		case K_ADDR:
			if (!decode_addr(v, n, (struct sockaddr_storage *)base))
				why = "not an address (length %lu)";
			break;
		case K_LEG:
			why = decode_leg(v, n, (struct ho_leg *)base, &arg);
			break;
		case K_DIR:
			why = decode_dir(v, n, (struct ho_dir *)base, &arg);
			break;
		case K_PENDING: {
			struct ho_dir *d = (struct ho_dir *)base;
			if (n == 0 || n > HO_PENDING_MAX) {
				why = "%lu pending bytes: none, or more than a record carries";
			} else {
				d->pending = v;
				d->n_pending = n;
			}
			break;
		}
		case K_U32LIST:
			if (n == 0 || n % 4 || n / 4 > HO_LISTENERS_MAX) {
				why = "length %lu is not a list of listener indexes";
			} else {
				out->u.commit.n_taken = (uint32_t)(n / 4);
				for (size_t i = 0; i < n / 4; i++) {
					out->u.commit.taken[i] = get32(v + 4 * i);
					if (out->u.commit.taken[i] >= HO_LISTENERS_MAX) {
						why = "index %lu out of range";
						arg = out->u.commit.taken[i];
						break;
					}
				}
			}
			break;
		}
		if (why)
			return fail(err, errlen, why, sp->name, f->name, arg);
	}
	for (size_t i = 0; i < sp->n; i++)
		if (sp->fields[i].required && !(seen & (1ull << i)))
			return fail(err, errlen, "missing%.0lu", sp->name, sp->fields[i].name, 0);

	/* what no single field says */
	unsigned long arg = 0;
	const char *why = NULL;
	if (type == HO_LISTENER) {
		uint8_t k = out->u.listener.kind;
		if (k < HO_LISTEN_MAIL || k > HO_LISTEN_CONTROL)
			why = "unknown listener kind %lu", arg = k;
		else if (k == HO_LISTEN_MAIL && !out->u.listener.name[0])
			why = "a mail listener without a name%.0lu";
		else if (out->u.listener.index >= HO_LISTENERS_MAX)
			why = "index %lu out of range", arg = out->u.listener.index;
	} else if (type == HO_SESSION) {
		why = check_session(&out->u.session, &arg);
	}
	if (why)
		return fail(err, errlen, why, sp->name, NULL, arg);
	unsigned want = ho_msg_fds(out);
	if (n_fds != want) {
		snprintf(err, errlen, "%s: %u descriptors arrived, the fields call for %u",
		         sp->name, n_fds, want);
		return false;
	}
	return true;
}
