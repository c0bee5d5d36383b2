/*
 * POP3: the authorization state with the client and with the backend.
 *
 * Client side (RFC 1939, 2449, 2595, 5034): CAPA, STLS, USER/PASS, AUTH
 * (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, with or without an initial
 * response), QUIT. Backend side: greeting, [STLS], CAPA, [XCLIENT for
 * Dovecot], AUTH with an initial response when it offers SASL PLAIN, else
 * USER/PASS; the verdict line goes to the client as the backend wrote it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "announce.h"
#include "log.h"
#include "pop3_parse.h"
#include "sasl.h"
#include "session.h"
#include "util.h"

#define MAX_BAD_COMMANDS 10
#define LINE_MAX_CLIENT  (SASL_LINE_MAX + 64)
#define LINE_MAX_BACKEND 8192

enum client_state {
	C_COMMAND,
	C_AUTH_CONT, /* waiting for a SASL response line */
	C_WAITING,   /* login handed to the backend */
	C_DONE,
};

enum backend_state {
	B_GREETING,
	B_STLS,
	B_CAPA,
	B_CAPA_LINES,
	B_XCLIENT,
	B_AUTH, /* AUTH sent: "+ " or the verdict */
	B_USER, /* USER sent, waiting for +OK */
	B_VERDICT,
};

struct pop3 {
	enum client_state cs;
	enum backend_state bs;
	unsigned bad_commands;
	bool skip_line; /* discarding the rest of an overlong line */
	char *user;     /* from USER, until PASS */
	char *password;
	bool via_sasl;
	struct sasl_exchange sasl;
	/* backend */
	struct pop3_capa capa; /* the backend's CAPA list */
	bool caps_known;
	bool greeting_xclient;  /* Dovecot trusts us: "[XCLIENT]" in its greeting */
	char *pending_response; /* AUTH response waiting for "+ " */
	bool error_answered;
};

static struct pop3 *st(struct session *s)
{
	return s->proto;
}

static void wipe_str(char **p)
{
	if (*p) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

static void wipe_credentials(struct pop3 *m)
{
	wipe_str(&m->password);
	if (m->pending_response) {
		sasl_secret_free(m->pending_response);
		m->pending_response = NULL;
	}
	sasl_exchange_clear(&m->sasl);
	m->via_sasl = false;
}

/* ---- client ---- */

static void pop3_greet(struct session *s)
{
	const char *banner = s->cfg->caps[PROTO_POP3].banner;

	if (!s->proto) {
		s->proto = calloc(1, sizeof(struct pop3));
		if (!s->proto) {
			session_close(s, "out of memory");
			return;
		}
	}
	session_reply(s, "+OK %s\r\n", banner ? banner : "mailsplice ready.");
}

static bool mech_offered(struct session *s, enum sasl_mech mech)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_POP3];

	if (!caps->has_sasl)
		return mech != SASL_NONE;
	for (size_t i = 0; i < caps->n_sasl; i++) {
		if (sasl_mech_parse(caps->sasl[i], strlen(caps->sasl[i])) == mech)
			return true;
	}
	return false;
}

static void reply_capa(struct session *s)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_POP3];

	session_reply(s, "+OK Capability list follows\r\nCAPA\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
	                 "IMPLEMENTATION mailsplice\r\n");
	if (s->ls->tls == TLS_MODE_STARTTLS && !session_client_secure(s))
		session_reply(s, "STLS\r\n");
	if (session_plain_auth_allowed(s)) {
		session_reply(s, "USER\r\nSASL");
		if (caps->has_sasl) {
			for (size_t i = 0; i < caps->n_sasl; i++)
				session_reply(s, " %s", caps->sasl[i]);
		} else {
			session_reply(s, " PLAIN LOGIN");
		}
		session_reply(s, "\r\n");
	}
	session_reply(s, ".\r\n");
}

static void bad_command(struct session *s, const char *msg)
{
	struct pop3 *m = st(s);

	session_reply(s, "-ERR %s\r\n", msg);
	if (++m->bad_commands >= MAX_BAD_COMMANDS) {
		m->cs = C_DONE;
		session_close(s, "too many invalid commands");
	}
}

static bool require_tls(struct session *s)
{
	if (session_plain_auth_allowed(s))
		return true;
	/* RFC 3206 [AUTH]; RFC 2595 section 4: STLS first */
	session_reply(s, "-ERR [AUTH] Plaintext authentication is not allowed without TLS; use "
	                 "STLS.\r\n");
	return false;
}

static void start_login(struct session *s, const char *user)
{
	struct pop3 *m = st(s);

	m->cs = C_WAITING;
	m->bs = B_GREETING;
	m->caps_known = false;
	memset(&m->capa, 0, sizeof(m->capa));
	m->error_answered = false;
	session_login(s, user);
}

static void sasl_result(struct session *s, enum sasl_status r, const char *challenge,
                        const char *error)
{
	struct pop3 *m = st(s);

	if (r == SASL_CONTINUE) {
		m->cs = C_AUTH_CONT;
		session_reply(s, "+ %s\r\n", challenge);
		return;
	}
	if (r == SASL_FAIL) {
		m->cs = C_COMMAND;
		sasl_exchange_clear(&m->sasl);
		m->via_sasl = false;
		session_reply(s, "-ERR Invalid authentication data: %s.\r\n", error);
		return;
	}
	start_login(s, m->sasl.creds.username);
}

static void dispatch(struct session *s, char *line)
{
	struct pop3 *m = st(s);
	struct pop3_command cmd;
	const char *err = pop3_parse_command(line, &cmd);
	const char *challenge = NULL, *error = NULL;

	if (err) {
		bad_command(s, err);
		return;
	}
	if (strcmp(cmd.keyword, "CAPA") == 0) {
		reply_capa(s);
	} else if (strcmp(cmd.keyword, "QUIT") == 0) {
		session_reply(s, "+OK Logging out.\r\n");
		m->cs = C_DONE;
		session_close(s, "quit");
	} else if (strcmp(cmd.keyword, "STLS") == 0) {
		if (session_client_secure(s) || s->ls->tls != TLS_MODE_STARTTLS) {
			bad_command(s, "STLS is not available.");
		} else {
			session_reply(s, "+OK Begin TLS negotiation now.\r\n");
			session_client_starttls(s);
		}
	} else if (strcmp(cmd.keyword, "USER") == 0) {
		if (!require_tls(s))
			return;
		if (cmd.n_args != 1 || strlen(cmd.args[0]) > 255) {
			bad_command(s, "USER expects one user name.");
			return;
		}
		wipe_str(&m->user);
		m->user = xstrdup(cmd.args[0]);
		session_reply(s, "+OK\r\n");
	} else if (strcmp(cmd.keyword, "PASS") == 0) {
		if (!require_tls(s))
			return;
		if (!m->user) {
			bad_command(s, "USER first.");
			return;
		}
		if (strlen(cmd.rest) > SASL_PASSWORD_MAX) {
			bad_command(s, "Password too long.");
			return;
		}
		wipe_credentials(m);
		m->password = xstrdup(cmd.rest);
		start_login(s, m->user);
	} else if (strcmp(cmd.keyword, "APOP") == 0) {
		/* RFC 1939 section 7: APOP needs the server's shared secret,
		 * which only the backend has; a proxy cannot replay it */
		session_reply(s, "-ERR APOP is not supported here; use USER/PASS or AUTH.\r\n");
	} else if (strcmp(cmd.keyword, "AUTH") == 0) {
		if (cmd.n_args == 0) {
			/* RFC 1734 practice: a bare AUTH lists the mechanisms */
			session_reply(s, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
			return;
		}
		if (!require_tls(s))
			return;
		enum sasl_mech mech = sasl_mech_parse(cmd.args[0], strlen(cmd.args[0]));
		if (mech == SASL_NONE || !mech_offered(s, mech)) {
			session_reply(s, "-ERR Unsupported authentication mechanism.\r\n");
			return;
		}
		wipe_credentials(m);
		m->via_sasl = true;
		const char *ir = cmd.n_args == 2 ? cmd.args[1] : NULL;
		enum sasl_status r = sasl_start(&m->sasl, mech, s->cfg->jwt_username_claim, ir,
		                                ir ? strlen(ir) : 0, &challenge, &error);
		sasl_result(s, r, challenge, error);
	} else {
		bad_command(s, "Unknown command or not allowed before login.");
	}
}

static void pop3_client_input(struct session *s)
{
	struct pop3 *m = st(s);
	struct evbuffer *in = s->client->in;

	while (!s->closing && !s->ending && s->phase == PHASE_LOGIN && m->cs != C_WAITING &&
	       m->cs != C_DONE && evbuffer_get_length(in) > 0) {
		long n = conn_line_len(s->client, LINE_MAX_CLIENT);
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
				bad_command(s, "Line too long.");
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
		if (memchr(line, '\0', len)) {
			bad_command(s, "NUL in command.");
		} else if (m->cs == C_AUTH_CONT) {
			const char *challenge = NULL, *error = NULL;
			if (strcmp(line, "*") == 0) {
				sasl_exchange_clear(&m->sasl);
				m->via_sasl = false;
				m->cs = C_COMMAND;
				session_reply(s, "-ERR Authentication aborted.\r\n");
			} else {
				sasl_result(s, sasl_step(&m->sasl, line, len, &challenge, &error),
				            challenge, error);
			}
		} else {
			dispatch(s, line);
		}
		OPENSSL_cleanse(line, (size_t)n);
		free(line);
		if (s->phase != PHASE_LOGIN)
			return; /* STLS: the rest is dropped by the TLS switch */
	}
}

/* ---- backend ---- */

static void send_login(struct session *s);

static void after_capabilities(struct session *s)
{
	struct pop3 *m = st(s);

	if (config_forwarding(s->d, PROTO_POP3) == FORWARD_XCLIENT && !m->greeting_xclient) {
		/* Dovecot only says [XCLIENT] to addresses in
		 * login_trusted_networks: XCLIENT would be ignored */
		log_msg(LOG_WARN, "xclient-untrusted",
		        "id=%s destination=%s proto=pop3 detail=\"no [XCLIENT] in the greeting: "
		        "add the proxy to the backend's login_trusted_networks\"",
		        s->id, s->d->name);
	} else if (config_forwarding(s->d, PROTO_POP3) == FORWARD_XCLIENT) {
		struct announce_info info;
		char buf[600];
		session_announce_info(s, &info);
		size_t n = xclient_build(&info, XCLIENT_DOVECOT_SET, buf, sizeof(buf));
		if (n) {
			m->bs = B_XCLIENT;
			session_backend_send(s, buf, n);
			return;
		}
	}
	send_login(s);
}

static void send_login(struct session *s)
{
	struct pop3 *m = st(s);
	const char *user = session_replay_user(s);

	if (m->via_sasl || m->capa.sasl_plain || !m->capa.user) {
		struct sasl_creds plain = {
		        .mech = SASL_PLAIN, .username = m->user, .secret = m->password};
		const struct sasl_creds *creds = m->via_sasl ? &m->sasl.creds : &plain;
		char *resp = sasl_replay_response(creds, user);
		if (!resp) {
			session_backend_broken(s, "cannot build the login for the backend");
			return;
		}
		/* RFC 5034 section 4: the initial response may go with AUTH */
		session_backend_printf(s, "AUTH %s %s\r\n", sasl_mech_name(sasl_replay_mech(creds)),
		                       resp[0] ? resp : "=");
		sasl_secret_free(resp);
		m->bs = B_AUTH;
		return;
	}
	session_backend_printf(s, "USER %s\r\n", user);
	m->bs = B_USER;
}

static void verdict(struct session *s, enum pop3_status status, const char *line, size_t len)
{
	struct pop3 *m = st(s);

	wipe_credentials(m);
	if (status == POP3_OK) {
		session_reply_raw(s, line, len);
		m->cs = C_DONE;
		session_login_succeeded(s);
		return;
	}
	if (s->d->hide_auth_errors)
		session_reply(s, "-ERR [AUTH] Authentication failed.\r\n");
	else
		session_reply_raw(s, line, len);
	m->cs = C_COMMAND;
	if (!session_login_failed(s, "backend refused the login")) {
		session_reply(s, "-ERR Too many authentication failures.\r\n");
		m->cs = C_DONE;
		session_close(s, "too many authentication failures");
	}
}

static void backend_line(struct session *s, const char *line, size_t len)
{
	struct pop3 *m = st(s);
	const char *text;
	enum pop3_status status;

	if (m->bs == B_CAPA_LINES) {
		switch (pop3_capa_line(line, len, &m->capa)) {
		case POP3_CAPA_MORE:
			return;
		case POP3_CAPA_END:
			m->caps_known = true;
			after_capabilities(s);
			return;
		case POP3_CAPA_TOO_MANY:
			session_backend_broken(s, "backend CAPA list too long");
			return;
		}
		return;
	}
	status = pop3_parse_status(line, len, &text);
	if (status == POP3_INVALID) {
		session_backend_broken(s, "backend sent an invalid POP3 response");
		return;
	}
	switch (m->bs) {
	case B_GREETING:
		if (status != POP3_OK) {
			session_backend_broken(s, "backend greeting is not +OK");
			return;
		}
		m->greeting_xclient =
		        pop3_has_resp_code(text, (size_t)(line + len - text), "XCLIENT");
		if (s->ep->tls == TLS_MODE_STARTTLS && !s->backend_tls) {
			m->bs = B_STLS;
			session_backend_printf(s, "STLS\r\n");
			return;
		}
		m->bs = B_CAPA;
		session_backend_printf(s, "CAPA\r\n");
		return;
	case B_STLS:
		if (status != POP3_OK) {
			session_backend_broken(s, "backend refused STLS");
			return;
		}
		session_backend_starttls(s);
		return;
	case B_CAPA:
		if (status != POP3_OK) {
			/* no CAPA: assume RFC 1939 USER/PASS */
			m->capa.user = true;
			after_capabilities(s);
			return;
		}
		m->bs = B_CAPA_LINES;
		return;
	case B_XCLIENT:
		/* success is "+OK Updated"; an untrusted proxy gets "+OK You
		 * are not from trusted IP - ignoring" */
		if (status != POP3_OK || !strstr(text, "Updated"))
			log_msg(LOG_WARN, "xclient-untrusted",
			        "id=%s destination=%s proto=pop3 detail=\"backend ignored XCLIENT: "
			        "check its login_trusted_networks\"",
			        s->id, s->d->name);
		send_login(s);
		return;
	case B_USER:
		if (status != POP3_OK) {
			verdict(s, status, line, len);
			return;
		}
		session_backend_printf(s, "PASS %s\r\n", m->password ? m->password : "");
		m->bs = B_VERDICT;
		return;
	case B_AUTH:
		if (status == POP3_CONTINUATION) {
			/* OAuth error details (RFC 7628 3.2.2): acknowledge once */
			if (m->error_answered) {
				session_backend_broken(s, "backend keeps asking for data");
				return;
			}
			m->error_answered = true;
			bool bearer = m->via_sasl && m->sasl.creds.mech == SASL_OAUTHBEARER;
			session_backend_printf(s, "%s\r\n", bearer ? "AQ==" : "");
			return;
		}
		verdict(s, status, line, len);
		return;
	case B_VERDICT:
		verdict(s, status, line, len);
		return;
	case B_CAPA_LINES:
		return;
	}
}

static void pop3_backend_input(struct session *s)
{
	while (s->phase == PHASE_BACKEND && s->backend_open && !s->closing && !s->ending) {
		long n = conn_line_len(s->backend, LINE_MAX_BACKEND);
		if (n == 0)
			return;
		if (n < 0) {
			session_backend_broken(s, "backend response line too long");
			return;
		}
		/* a copy: answering may write to the backend buffers */
		char *line = malloc((size_t)n + 1);
		if (!line) {
			session_backend_broken(s, "out of memory");
			return;
		}
		evbuffer_remove(s->backend->in, line, (size_t)n);
		line[n] = '\0';
		backend_line(s, line, (size_t)n);
		free(line);
	}
}

static void pop3_backend_ready(struct session *s)
{
	st(s)->bs = B_GREETING;
}

static void pop3_backend_tls_done(struct session *s)
{
	struct pop3 *m = st(s);
	/* RFC 2595 section 4: forget what was learnt before TLS */
	m->caps_known = false;
	memset(&m->capa, 0, sizeof(m->capa));
	m->bs = B_CAPA;
	session_backend_printf(s, "CAPA\r\n");
}

static void pop3_backend_failed(struct session *s, enum backend_failure why)
{
	struct pop3 *m = st(s);

	wipe_credentials(m);
	m->cs = C_COMMAND;
	if (why == BACKEND_FAIL_BAD_LOGIN) {
		session_reply(s, "-ERR [AUTH] Authentication failed.\r\n");
		if (!session_login_failed(s, "invalid login name")) {
			m->cs = C_DONE;
			session_close(s, "too many authentication failures");
		}
		return;
	}
	/* RFC 3206: [SYS/TEMP], the client should retry later */
	session_reply(s, "-ERR [SYS/TEMP] Backend unavailable, try again later.\r\n");
}

static void pop3_goodbye(struct session *s, const char *why)
{
	if (strcmp(why, "timeout") == 0)
		session_reply(s, "-ERR Disconnected for inactivity.\r\n");
	else if (strcmp(why, "kicked") == 0)
		session_reply(s, "-ERR [SYS/TEMP] Disconnected by the administrator.\r\n");
	else
		session_reply(s, "-ERR [SYS/TEMP] Server shutting down.\r\n");
}

static void pop3_free(struct session *s)
{
	struct pop3 *m = st(s);

	if (!m)
		return;
	wipe_credentials(m);
	wipe_str(&m->user);
	free(m);
	s->proto = NULL;
}

const struct proto_ops pop3_ops = {
        .name = "pop3",
        .greet = pop3_greet,
        .client_input = pop3_client_input,
        .backend_ready = pop3_backend_ready,
        .backend_input = pop3_backend_input,
        .backend_tls_done = pop3_backend_tls_done,
        .backend_failed = pop3_backend_failed,
        .goodbye = pop3_goodbye,
        .free = pop3_free,
};
