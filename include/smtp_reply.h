/*
 * SMTP replies from a backend: assembling a multi-line reply (RFC 5321
 * section 4.2) one line at a time, and reading the service extensions a
 * server lists in its reply to EHLO (section 4.1.1.1). Pure: bytes in, a
 * result out; no I/O, no allocation.
 */
#ifndef MAILSPLICE_SMTP_REPLY_H
#define MAILSPLICE_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 section 4.5.3.1.5 asks for 512 octets per reply line; servers
 * send longer text (Postfix's XCLIENT list, long EHLO greetings), so allow
 * more, but bound both the line and the whole reply. */
#define SMTP_REPLY_LINE_MAX  4096
#define SMTP_REPLY_BYTES_MAX (SMTP_REPLY_LINE_MAX * 64)

struct smtp_reply {
	int code;       /* of the reply being read, or of the last complete one */
	unsigned lines; /* read so far in this reply */
	size_t bytes;   /* read so far in this reply */
	bool done;      /* the last line was the final one: the next starts a reply */
};

enum smtp_reply_status {
	SMTP_REPLY_MORE,  /* a continuation line ("250-..."): feed the next line */
	SMTP_REPLY_DONE,  /* the final line ("250 ..." or "250"): r->code is the reply's */
	SMTP_REPLY_ERROR, /* *error says what was wrong; the reply cannot be trusted */
};

/* Zero the state (a zeroed struct is a fresh one too). */
void smtp_reply_init(struct smtp_reply *r);

/*
 * Feed one line of a reply: len bytes, its LF included (the CR before it is
 * optional). Every line of one reply must carry the same code (section
 * 4.2.1: "250-" on all but the last, then "250 " or a bare "250"). After
 * SMTP_REPLY_DONE the next line starts a new reply; after SMTP_REPLY_ERROR
 * the caller must call smtp_reply_init before feeding more.
 */
enum smtp_reply_status smtp_reply_line(struct smtp_reply *r, const char *line, size_t len,
                                       const char **error);

/* What a server offers in its reply to EHLO. */
struct smtp_ehlo {
	bool starttls;          /* RFC 3207 */
	bool pipelining;        /* RFC 2920 */
	bool size;              /* RFC 1870 ... */
	uint64_t size_max;      /* ... and its limit, 0 when none is given */
	unsigned auth_mechs;    /* RFC 4954: bit (1u << enum sasl_mech) per known mechanism */
	bool xclient;           /* Postfix XCLIENT ... */
	unsigned xclient_attrs; /* ... and the attributes it accepts (announce.h XCLIENT_*) */
};

/*
 * Read a complete reply to EHLO (all its lines, CRLF or LF after each).
 * The first line carries the server's name, every further line one
 * keyword with its parameters (RFC 5321 section 4.1.1.1); keywords this
 * proxy does not use are skipped. Returns NULL, or a static message when
 * the text is not a 250 reply (then *out says nothing is offered).
 */
const char *smtp_ehlo_parse(const char *reply, size_t len, struct smtp_ehlo *out);

#endif
