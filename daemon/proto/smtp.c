/*
 * SMTP: submission (RFC 6409 with AUTH, RFC 4954) and port-25 pass-through.
 *
 * Submission, client side: greeting, EHLO/HELO, STARTTLS (RFC 3207), AUTH
 * PLAIN/LOGIN/XOAUTH2/OAUTHBEARER with or without an initial response,
 * NOOP/RSET/QUIT; mail commands before AUTH get 530. Backend side:
 * greeting, EHLO, [STARTTLS, EHLO], [XCLIENT, which restarts the session:
 * new greeting, EHLO with the client's name], AUTH with an initial
 * response; the 235 (or the refusal) goes to the client as written.
 *
 * Port 25 has no login. With the PROXY protocol the pair is handed to the
 * data path as soon as the header is sent, and the backend greets the
 * client itself. With XCLIENT we speak first (greeting, EHLO, XCLIENT) and
 * hand over before reading the backend's second greeting, which the client
 * then receives as its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "announce.h"
#include "log.h"
#include "sasl.h"
#include "session.h"
#include "smtp_command.h"
#include "smtp_reply.h"
#include "util.h"

#define MAX_BAD_COMMANDS 10
#define CLIENT_LINE_MAX  (SASL_LINE_MAX + 64) /* RFC 4954 section 4: AUTH lines may be long */

enum client_state {
	C_COMMAND,
	C_AUTH_CONT,
	C_WAITING,
	C_DONE,
};

enum backend_state {
	B_GREETING,
	B_EHLO,
	B_STARTTLS,
	B_XCLIENT,
	B_EHLO_AFTER_XCLIENT,
	B_AUTH,
	B_PASSTHROUGH_XCLIENT, /* port 25: hand over before the new greeting */
};

struct smtp {
	enum client_state cs;
	enum backend_state bs;
	unsigned bad_commands;
	bool skip_line;
	bool ehlo_seen, esmtp;
	char helo[SMTP_HELO_MAX + 1];
	struct sasl_exchange sasl;
	/* backend */
	unsigned xclient_attrs;
	bool error_answered;
	struct smtp_reply parser;
	struct evbuffer *reply; /* the backend's multi-line reply being read */
};

static struct smtp *st(struct session *s)
{
	return s->proto;
}

static struct smtp *state_new(struct session *s)
{
	if (!s->proto) {
		struct smtp *m = calloc(1, sizeof(*m));
		if (m)
			m->reply = evbuffer_new();
		if (!m || !m->reply) {
			free(m);
			session_close(s, "out of memory");
			return NULL;
		}
		s->proto = m;
	}
	return s->proto;
}

/* ---- submission, client side ---- */

static void submission_greet(struct session *s)
{
	const char *banner = s->cfg->caps[PROTO_SUBMISSION].banner;

	if (!state_new(s))
		return;
	session_reply(s, "220 %s %s\r\n", s->cfg->hostname, banner ? banner : "ESMTP mailsplice");
}

static void reply_ehlo(struct session *s)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_SUBMISSION];
	static const char *const defaults[] = {"PIPELINING", "SIZE", "ENHANCEDSTATUSCODES",
	                                       "8BITMIME",   "DSN",  NULL};
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return;
	if (caps->has_advertise) {
		for (size_t i = 0; i < caps->n_advertise; i++) {
			if (strcasecmp(caps->advertise[i], "STARTTLS") &&
			    strncasecmp(caps->advertise[i], "AUTH", 4))
				evbuffer_add_printf(b, "%s\n", caps->advertise[i]);
		}
	} else {
		for (size_t i = 0; defaults[i]; i++)
			evbuffer_add_printf(b, "%s\n", defaults[i]);
	}
	if (s->ls->tls == TLS_MODE_STARTTLS && !session_client_secure(s))
		evbuffer_add_printf(b, "STARTTLS\n");
	if (session_plain_auth_allowed(s)) {
		evbuffer_add_printf(b, "AUTH");
		if (caps->has_sasl) {
			for (size_t i = 0; i < caps->n_sasl; i++)
				evbuffer_add_printf(b, " %s", caps->sasl[i]);
		} else {
			evbuffer_add_printf(b, " PLAIN LOGIN");
		}
		evbuffer_add_printf(b, "\n");
	}
	/* RFC 5321 section 4.1.1.1: first line the domain, "-" on all but
	 * the last */
	evbuffer_add(b, "", 1);
	char *list = (char *)evbuffer_pullup(b, -1);
	session_reply(s, "250%c%s\r\n", *list ? '-' : ' ', s->cfg->hostname);
	for (char *line = list, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		*nl = '\0';
		session_reply(s, "250%c%s\r\n", nl[1] ? '-' : ' ', line);
	}
	evbuffer_free(b);
}

static void bad_command(struct session *s, const char *reply)
{
	struct smtp *m = st(s);

	session_reply(s, "%s\r\n", reply);
	if (++m->bad_commands >= MAX_BAD_COMMANDS) {
		session_reply(s, "421 4.7.0 Too many invalid commands, closing.\r\n");
		m->cs = C_DONE;
		session_close(s, "too many invalid commands");
	}
}

static void sasl_result(struct session *s, enum sasl_status r, const char *challenge,
                        const char *error)
{
	struct smtp *m = st(s);

	if (r == SASL_CONTINUE) {
		m->cs = C_AUTH_CONT;
		session_reply(s, "334 %s\r\n", challenge);
		return;
	}
	if (r == SASL_FAIL) {
		m->cs = C_COMMAND;
		sasl_exchange_clear(&m->sasl);
		/* RFC 4954 section 4: malformed response */
		session_reply(s, "501 5.5.2 Invalid authentication data: %s\r\n", error);
		return;
	}
	m->cs = C_WAITING;
	m->bs = B_GREETING;
	m->error_answered = false;
	session_login(s, m->sasl.creds.username);
}

static void dispatch(struct session *s, const char *line, size_t len)
{
	struct smtp *m = st(s);
	struct smtp_command cmd;
	const char *challenge = NULL, *error = NULL;
	const char *bad = smtp_parse_command(line, len, &cmd);

	if (bad) {
		bad_command(s, bad);
		return;
	}
	switch (cmd.verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
		memcpy(m->helo, cmd.arg, cmd.arg_len);
		m->helo[cmd.arg_len] = '\0';
		m->ehlo_seen = true;
		m->esmtp = cmd.verb == SMTP_EHLO;
		if (m->esmtp)
			reply_ehlo(s);
		else
			session_reply(s, "250 %s\r\n", s->cfg->hostname);
		return;
	case SMTP_STARTTLS:
		if (session_client_secure(s) || s->ls->tls != TLS_MODE_STARTTLS) {
			bad_command(s, "454 4.7.0 TLS not available");
			return;
		}
		session_reply(s, "220 2.0.0 Ready to start TLS\r\n");
		/* RFC 3207 section 4.2: forget everything from before */
		m->ehlo_seen = false;
		m->helo[0] = '\0';
		session_client_starttls(s);
		return;
	case SMTP_AUTH: {
		if (!m->ehlo_seen || !m->esmtp) {
			bad_command(s, "503 5.5.1 EHLO first");
			return;
		}
		if (!session_plain_auth_allowed(s)) {
			session_reply(s,
			              "538 5.7.11 Encryption required for requested authentication "
			              "mechanism\r\n");
			return;
		}
		enum sasl_mech mech = sasl_mech_parse(cmd.mech, strlen(cmd.mech));
		if (mech == SASL_NONE) {
			session_reply(s, "504 5.5.4 Unrecognized authentication type\r\n");
			return;
		}
		sasl_exchange_clear(&m->sasl);
		enum sasl_status r = sasl_start(&m->sasl, mech, s->cfg->jwt_username_claim,
		                                cmd.initial, cmd.initial_len, &challenge, &error);
		sasl_result(s, r, challenge, error);
		return;
	}
	case SMTP_NOOP:
	case SMTP_RSET:
		session_reply(s, "250 2.0.0 OK\r\n");
		return;
	case SMTP_QUIT:
		session_reply(s, "221 2.0.0 Bye\r\n");
		m->cs = C_DONE;
		session_close(s, "quit");
		return;
	case SMTP_MAIL:
	case SMTP_RCPT:
	case SMTP_DATA:
	case SMTP_BDAT:
		bad_command(s, "530 5.7.0 Authentication required");
		return;
	}
}

static void submission_client_input(struct session *s)
{
	struct smtp *m = st(s);
	struct evbuffer *in = s->client->in;

	while (!s->closing && !s->ending && s->phase == PHASE_LOGIN && m->cs != C_WAITING &&
	       m->cs != C_DONE && evbuffer_get_length(in) > 0) {
		long n = conn_line_len(s->client, CLIENT_LINE_MAX);
		if (n == 0)
			return;
		if (n < 0 || m->skip_line) {
			/* an overlong line (RFC 5321 4.2.2 / RFC 2449 4): drop it to
			 * its end, which may not have arrived yet, and answer once */
			struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
			bool answer = !m->skip_line;
			if (lf.pos < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				m->skip_line = true;
			} else {
				evbuffer_drain(in, (size_t)lf.pos + 1);
				m->skip_line = false;
			}
			if (answer) {
				m->cs = C_COMMAND;
				bad_command(s, "500 5.5.6 Line too long");
			}
			continue;
		}
		char *line = malloc((size_t)n + 1);
		if (!line) {
			session_close(s, "out of memory");
			return;
		}
		evbuffer_remove(in, line, (size_t)n);
		size_t len = (size_t)n;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		line[len] = '\0';
		if (m->cs == C_AUTH_CONT && memchr(line, '\0', len)) {
			bad_command(s, "500 5.5.2 NUL in command");
		} else if (m->cs == C_AUTH_CONT) {
			const char *challenge = NULL, *error = NULL;
			if (strcmp(line, "*") == 0) {
				sasl_exchange_clear(&m->sasl);
				m->cs = C_COMMAND;
				session_reply(s, "501 5.7.0 Authentication aborted\r\n");
			} else {
				sasl_result(s, sasl_step(&m->sasl, line, len, &challenge, &error),
				            challenge, error);
			}
		} else {
			dispatch(s, line, len);
		}
		OPENSSL_cleanse(line, (size_t)n);
		free(line);
		if (s->phase != PHASE_LOGIN)
			return;
	}
}

/* ---- backend replies ---- */

/* Collect one complete (possibly multi-line) reply into m->reply. Returns
 * the code (> 0) when complete, 0 if more is needed, -1 on a bad reply
 * (the session is then broken, with what was wrong). */
static int read_reply(struct session *s)
{
	struct smtp *m = st(s);
	const char *error;

	for (;;) {
		long n = conn_line_len(s->backend, SMTP_REPLY_LINE_MAX);
		if (n == 0)
			return 0;
		if (n < 0) {
			session_backend_broken(s, "backend SMTP reply line too long");
			return -1;
		}
		const char *line = (const char *)evbuffer_pullup(s->backend->in, n);
		enum smtp_reply_status r = smtp_reply_line(&m->parser, line, (size_t)n, &error);
		if (r == SMTP_REPLY_ERROR) {
			char why[128];
			snprintf(why, sizeof(why), "backend sent an invalid SMTP reply: %s", error);
			session_backend_broken(s, why);
			return -1;
		}
		evbuffer_remove_buffer(s->backend->in, m->reply, (size_t)n);
		if (r == SMTP_REPLY_DONE)
			return m->parser.code;
	}
}

static void learn_ehlo(struct smtp *m)
{
	size_t len = evbuffer_get_length(m->reply);
	const char *text = (const char *)evbuffer_pullup(m->reply, (ev_ssize_t)len);
	struct smtp_ehlo ehlo;

	/* a reply read_reply accepted as 250 always parses */
	smtp_ehlo_parse(text, len, &ehlo);
	m->xclient_attrs = ehlo.xclient_attrs;
}

static void send_ehlo(struct session *s, const char *name, enum backend_state next)
{
	st(s)->bs = next;
	session_backend_printf(s, "EHLO %s\r\n", name);
}

static void send_auth(struct session *s)
{
	struct smtp *m = st(s);
	char *resp = sasl_replay_response(&m->sasl.creds, session_replay_user(s));

	if (!resp) {
		session_backend_broken(s, "cannot build the login for the backend");
		return;
	}
	/* RFC 4954 section 4: "=" is an empty initial response */
	session_backend_printf(s, "AUTH %s %s\r\n",
	                       sasl_mech_name(sasl_replay_mech(&m->sasl.creds)),
	                       resp[0] ? resp : "=");
	sasl_secret_free(resp);
	m->bs = B_AUTH;
}

static bool send_xclient(struct session *s, bool with_helo)
{
	struct smtp *m = st(s);
	struct announce_info info;
	char buf[600];

	session_announce_info(s, &info);
	info.helo = with_helo && m->helo[0] ? m->helo : NULL;
	info.proto = m->esmtp ? "ESMTP" : "SMTP";
	size_t n = xclient_build(&info, m->xclient_attrs, buf, sizeof(buf));
	if (!n)
		return false;
	session_backend_send(s, buf, n);
	return true;
}

static void relay_reply_to_client(struct session *s)
{
	struct smtp *m = st(s);
	evbuffer_add_buffer(s->client->out, m->reply);
	conn_flush(s->client);
}

static void verdict(struct session *s, int code)
{
	struct smtp *m = st(s);

	sasl_exchange_clear(&m->sasl);
	if (code == 235) {
		relay_reply_to_client(s);
		m->cs = C_DONE;
		session_login_succeeded(s);
		return;
	}
	if (s->d->hide_auth_errors && code >= 500) {
		evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
		session_reply(s, "535 5.7.8 Authentication credentials invalid\r\n");
	} else {
		relay_reply_to_client(s);
	}
	m->cs = C_COMMAND;
	if (!session_login_failed(s, "backend refused the login")) {
		session_reply(s, "421 4.7.0 Too many authentication failures, closing.\r\n");
		m->cs = C_DONE;
		session_close(s, "too many authentication failures");
	}
}

static void submission_step(struct session *s, int code)
{
	struct smtp *m = st(s);

	switch (m->bs) {
	case B_GREETING:
		if (code != 220) {
			session_backend_broken(s, "backend greeting is not 220");
			return;
		}
		send_ehlo(s, s->cfg->hostname, B_EHLO);
		return;
	case B_EHLO:
		if (code != 250) {
			session_backend_broken(s, "backend refused EHLO");
			return;
		}
		learn_ehlo(m);
		if (s->ep->tls == TLS_MODE_STARTTLS && !s->backend_tls) {
			m->bs = B_STARTTLS;
			session_backend_printf(s, "STARTTLS\r\n");
			return;
		}
		if (config_forwarding(s->d, s->ls->protocol) == FORWARD_XCLIENT) {
			if (send_xclient(s, true)) {
				m->bs = B_XCLIENT;
				return;
			}
			/* AUTH still identifies the user; the backend just logs
			 * our address instead of the client's */
			log_msg(LOG_WARN, "xclient-untrusted",
			        "id=%s destination=%s proto=submission detail=\"no XCLIENT in "
			        "EHLO: "
			        "add the proxy to the backend's smtpd_authorized_xclient_hosts\"",
			        s->id, s->d->name);
		}
		send_auth(s);
		return;
	case B_STARTTLS:
		if (code != 220) {
			session_backend_broken(s, "backend refused STARTTLS");
			return;
		}
		session_backend_starttls(s);
		return;
	case B_XCLIENT:
		/* Postfix restarts the session: a new 220, then EHLO again,
		 * now under the client's name */
		if (code != 220) {
			log_msg(LOG_WARN, "smtp-xclient-refused", "id=%s destination=%s code=%d",
			        s->id, s->d->name, code);
			send_auth(s);
			return;
		}
		send_ehlo(s, st(s)->helo[0] ? st(s)->helo : s->cfg->hostname, B_EHLO_AFTER_XCLIENT);
		return;
	case B_EHLO_AFTER_XCLIENT:
		if (code != 250) {
			session_backend_broken(s, "backend refused EHLO after XCLIENT");
			return;
		}
		send_auth(s);
		return;
	case B_AUTH:
		if (code == 334) {
			/* OAuth error details (RFC 7628 3.2.2): acknowledge once */
			if (m->error_answered) {
				session_backend_broken(s, "backend keeps asking for data");
				return;
			}
			m->error_answered = true;
			session_backend_printf(
			        s, "%s\r\n", m->sasl.creds.mech == SASL_OAUTHBEARER ? "AQ==" : "");
			return;
		}
		verdict(s, code);
		return;
	case B_PASSTHROUGH_XCLIENT:
		return;
	}
}

static void smtp_backend_input(struct session *s)
{
	struct smtp *m = st(s);

	while (s->phase == PHASE_BACKEND && s->backend_open && !s->closing && !s->ending) {
		if (m->bs == B_PASSTHROUGH_XCLIENT) {
			/* the XCLIENT reply is the client's greeting: hand over
			 * without reading it */
			evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
			m->cs = C_DONE;
			session_login_succeeded(s);
			return;
		}
		int code = read_reply(s);
		if (code <= 0)
			return;
		submission_step(s, code);
		/* a verdict has moved the reply to the client; anything else
		 * was for us */
		if (s->proto)
			evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
	}
}

static void smtp_backend_ready(struct session *s)
{
	struct smtp *m = st(s);
	m->bs = B_GREETING;
	smtp_reply_init(&m->parser);
	evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
}

static void smtp_backend_tls_done(struct session *s)
{
	/* RFC 3207 section 4.2: EHLO again after TLS */
	send_ehlo(s, s->cfg->hostname, B_EHLO);
}

static void submission_backend_failed(struct session *s, enum backend_failure why)
{
	struct smtp *m = st(s);

	sasl_exchange_clear(&m->sasl);
	m->cs = C_COMMAND;
	if (why == BACKEND_FAIL_BAD_LOGIN) {
		session_reply(s, "535 5.7.8 Authentication credentials invalid\r\n");
		if (!session_login_failed(s, "invalid login name")) {
			m->cs = C_DONE;
			session_close(s, "too many authentication failures");
		}
		return;
	}
	/* RFC 4954 section 6: temporary authentication failure */
	session_reply(s, "454 4.7.0 Temporary authentication failure: backend unavailable, try "
	                 "again later\r\n");
}

static void smtp_goodbye(struct session *s, const char *why)
{
	if (strcmp(why, "timeout") == 0)
		session_reply(s, "421 4.4.2 Timeout, closing connection\r\n");
	else
		session_reply(s, "421 4.3.2 Service shutting down, try again later\r\n");
}

static void smtp_free(struct session *s)
{
	struct smtp *m = st(s);

	if (!m)
		return;
	sasl_exchange_clear(&m->sasl);
	if (m->reply)
		evbuffer_free(m->reply);
	free(m);
	s->proto = NULL;
}

const struct proto_ops submission_ops = {
        .name = "submission",
        .greet = submission_greet,
        .client_input = submission_client_input,
        .backend_ready = smtp_backend_ready,
        .backend_input = smtp_backend_input,
        .backend_tls_done = smtp_backend_tls_done,
        .backend_failed = submission_backend_failed,
        .goodbye = smtp_goodbye,
        .free = smtp_free,
};

/* ---- port 25 ---- */

static void passthrough_greet(struct session *s)
{
	if (!state_new(s))
		return;
	/* no greeting of ours: the backend's reaches the client */
	session_connect_passthrough(s);
}

static void passthrough_client_input(struct session *s)
{
	/* nothing is read from the client before the hand-over */
}

static void passthrough_backend_ready(struct session *s)
{
	struct smtp *m = st(s);

	smtp_reply_init(&m->parser);
	evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
	if (config_forwarding(s->d, PROTO_SMTP) != FORWARD_XCLIENT) {
		/* PROXY header (if any) already sent: hand over at once */
		m->cs = C_DONE;
		session_login_succeeded(s);
		return;
	}
	m->bs = B_GREETING;
}

static void passthrough_backend_input(struct session *s)
{
	struct smtp *m = st(s);

	while (s->phase == PHASE_BACKEND && s->backend_open && !s->closing && !s->ending) {
		int code = read_reply(s);
		if (code <= 0)
			return;
		if (m->bs == B_GREETING && code == 220) {
			send_ehlo(s, s->cfg->hostname, B_EHLO);
		} else if (m->bs == B_EHLO && code == 250) {
			learn_ehlo(m);
			if (!send_xclient(s, false)) {
				/* never bridge port 25 under our own address: a backend
				 * that trusts the proxy would trust every sender */
				log_msg(LOG_WARN, "xclient-untrusted",
				        "id=%s destination=%s proto=smtp detail=\"no XCLIENT in "
				        "EHLO: "
				        "refusing to relay under the proxy's address\"",
				        s->id, s->d->name);
				session_backend_broken(s, "backend does not offer XCLIENT");
				return;
			}
			m->bs = B_PASSTHROUGH_XCLIENT;
			evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
			/* the reply to XCLIENT is the greeting the client gets:
			 * hand over now, before it is read */
			m->cs = C_DONE;
			session_login_succeeded(s);
			return;
		} else {
			session_backend_broken(s, "unexpected backend reply");
			return;
		}
		evbuffer_drain(m->reply, evbuffer_get_length(m->reply));
	}
}

static void passthrough_backend_failed(struct session *s, enum backend_failure why)
{
	session_reply(s, "421 4.3.2 Service not available, try again later\r\n");
	session_close(s, "backend unavailable");
}

const struct proto_ops smtp_passthrough_ops = {
        .name = "smtp",
        .greet = passthrough_greet,
        .client_input = passthrough_client_input,
        .backend_ready = passthrough_backend_ready,
        .backend_input = passthrough_backend_input,
        .backend_tls_done = smtp_backend_tls_done,
        .backend_failed = passthrough_backend_failed,
        .goodbye = smtp_goodbye,
        .free = smtp_free,
        .relays_client_eof = true,
};
