/*
 * ManageSieve (RFC 5804): the client's login dialogue and the backend's.
 *
 * Client side: CAPABILITY, STARTTLS (capabilities again afterwards, section
 * 2.2), AUTHENTICATE with or without an initial response, NOOP, LOGOUT.
 * Command lines are parsed with the IMAP grammar (same quoted strings and
 * literals), a fixed tag standing in for the one ManageSieve does not have.
 * Backend side: capabilities, [STARTTLS + capabilities], [XCLIENT for
 * Dovecot], AUTHENTICATE with an initial response; the verdict line goes
 * to the client as written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "announce.h"
#include "imap_parse.h"
#include "log.h"
#include "sasl.h"
#include "session.h"
#include "sieve_parse.h"
#include "util.h"

#define MAX_BAD_COMMANDS 10
#define BACKEND_LINE_MAX 8192

enum client_state {
	C_COMMAND,
	C_AUTH_CONT,
	C_WAITING,
	C_DONE,
};

enum backend_state {
	B_CAPS,     /* capability lines until OK */
	B_STARTTLS, /* waiting for OK */
	B_XCLIENT,
	B_AUTH,
};

struct sieve {
	enum client_state cs;
	enum backend_state bs;
	unsigned bad_commands;
	bool skip_line;
	bool backend_xclient; /* "XCLIENT" in the backend's capabilities */
	struct sasl_exchange sasl;
	bool error_answered;
};

static struct sieve *st(struct session *s)
{
	return s->proto;
}

static void send_capabilities(struct session *s)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_MANAGESIEVE];

	session_reply(s, "\"IMPLEMENTATION\" \"%s\"\r\n",
	              caps->implementation ? caps->implementation : "mailsplice");
	/* RFC 5804 section 1.7: SIEVE is mandatory. Before login we cannot
	 * ask the backend; the default is the common Pigeonhole set, and the
	 * backend's own list answers CAPABILITY after login. */
	session_reply(s, "\"SIEVE\" \"");
	if (caps->has_advertise && caps->n_advertise) {
		for (size_t i = 0; i < caps->n_advertise; i++)
			session_reply(s, "%s%s", i ? " " : "", caps->advertise[i]);
	} else {
		session_reply(s, "fileinto reject envelope encoded-character vacation subaddress "
		                 "comparator-i;ascii-numeric relational regex imap4flags copy "
		                 "include variables body environment mailbox date ihave");
	}
	session_reply(s, "\"\r\n");
	if (session_plain_auth_allowed(s)) {
		session_reply(s, "\"SASL\" \"");
		if (caps->has_sasl) {
			for (size_t i = 0; i < caps->n_sasl; i++)
				session_reply(s, "%s%s", i ? " " : "", caps->sasl[i]);
		} else {
			session_reply(s, "PLAIN LOGIN");
		}
		session_reply(s, "\"\r\n");
	} else {
		session_reply(s, "\"SASL\" \"\"\r\n");
	}
	if (s->ls->tls == TLS_MODE_STARTTLS && !session_client_secure(s))
		session_reply(s, "\"STARTTLS\"\r\n");
	session_reply(s, "\"VERSION\" \"1.0\"\r\n");
}

static void sieve_greet(struct session *s)
{
	if (!s->proto) {
		s->proto = calloc(1, sizeof(struct sieve));
		if (!s->proto) {
			session_close(s, "out of memory");
			return;
		}
	}
	send_capabilities(s);
	session_reply(s, "OK \"mailsplice ready.\"\r\n");
}

static void sieve_client_tls_started(struct session *s)
{
	/* RFC 5804 section 2.2: capabilities again, as after a connect */
	send_capabilities(s);
	session_reply(s, "OK \"TLS negotiation successful.\"\r\n");
}

static void bad_command(struct session *s, const char *msg)
{
	struct sieve *m = st(s);

	session_reply(s, "NO \"%s\"\r\n", msg);
	if (++m->bad_commands >= MAX_BAD_COMMANDS) {
		session_reply(s, "BYE \"Too many invalid commands.\"\r\n");
		m->cs = C_DONE;
		session_close(s, "too many invalid commands");
	}
}

static void sasl_result(struct session *s, enum sasl_status r, const char *challenge,
                        const char *error)
{
	struct sieve *m = st(s);

	if (r == SASL_CONTINUE) {
		m->cs = C_AUTH_CONT;
		session_reply(s, "\"%s\"\r\n", challenge);
		return;
	}
	if (r == SASL_FAIL) {
		m->cs = C_COMMAND;
		sasl_exchange_clear(&m->sasl);
		session_reply(s, "NO \"Invalid authentication data: %s.\"\r\n", error);
		return;
	}
	m->cs = C_WAITING;
	m->bs = B_CAPS;
	m->error_answered = false;
	session_login(s, m->sasl.creds.username);
}

static void dispatch(struct session *s, const struct imap_command *cmd)
{
	struct sieve *m = st(s);
	const char *challenge = NULL, *error = NULL;

	if (strcmp(cmd->name, "CAPABILITY") == 0 && cmd->n_args == 0) {
		send_capabilities(s);
		session_reply(s, "OK \"Capability completed.\"\r\n");
	} else if (strcmp(cmd->name, "NOOP") == 0) {
		/* RFC 5804 section 2.11: a tag argument comes back in a TAG
		 * response code (clients resynchronise after STARTTLS with it) */
		char quoted[300];
		if (cmd->n_args == 1 && cmd->args[0].type == IMAP_ARG_STRING &&
		    imap_quote(cmd->args[0].s, cmd->args[0].len, quoted, sizeof(quoted)))
			session_reply(s, "OK (TAG %s) \"Done\"\r\n", quoted);
		else
			session_reply(s, "OK \"NOOP completed.\"\r\n");
	} else if (strcmp(cmd->name, "LOGOUT") == 0) {
		session_reply(s, "OK \"Logout completed.\"\r\n");
		m->cs = C_DONE;
		session_close(s, "logout");
	} else if (strcmp(cmd->name, "STARTTLS") == 0 && cmd->n_args == 0) {
		if (session_client_secure(s) || s->ls->tls != TLS_MODE_STARTTLS) {
			bad_command(s, "STARTTLS is not available.");
		} else {
			session_reply(s, "OK \"Begin TLS negotiation now.\"\r\n");
			session_client_starttls(s);
		}
	} else if (strcmp(cmd->name, "AUTHENTICATE") == 0) {
		if (cmd->n_args < 1 || cmd->n_args > 2 || cmd->args[0].type != IMAP_ARG_STRING ||
		    (cmd->n_args == 2 && cmd->args[1].type != IMAP_ARG_STRING)) {
			bad_command(s, "AUTHENTICATE expects a mechanism name.");
			return;
		}
		if (!session_plain_auth_allowed(s)) {
			session_reply(s, "NO (ENCRYPT-NEEDED) \"Authentication is not allowed "
			                 "without TLS; use STARTTLS.\"\r\n");
			return;
		}
		enum sasl_mech mech = sasl_mech_parse(cmd->args[0].s, cmd->args[0].len);
		if (mech == SASL_NONE) {
			session_reply(s, "NO \"Unsupported authentication mechanism.\"\r\n");
			return;
		}
		sasl_exchange_clear(&m->sasl);
		const char *ir = cmd->n_args == 2 ? cmd->args[1].s : NULL;
		enum sasl_status r = sasl_start(&m->sasl, mech, s->cfg->jwt_username_claim, ir,
		                                ir ? cmd->args[1].len : 0, &challenge, &error);
		sasl_result(s, r, challenge, error);
	} else {
		bad_command(s, "Command unknown or not allowed before authentication.");
	}
}

/* A SASL response: a quoted string or literal (RFC 5804 section 2.1). */
static void auth_response(struct session *s, const struct imap_command *cmd)
{
	struct sieve *m = st(s);
	const char *challenge = NULL, *error = NULL;

	if (cmd->args[0].len == 1 && cmd->args[0].s[0] == '*') {
		/* RFC 5804 section 2.1: "*" cancels the exchange */
		m->cs = C_COMMAND;
		sasl_exchange_clear(&m->sasl);
		session_reply(s, "NO \"Authentication aborted.\"\r\n");
		return;
	}
	sasl_result(s, sasl_step(&m->sasl, cmd->args[0].s, cmd->args[0].len, &challenge, &error),
	            challenge, error);
}

static void sieve_client_input(struct session *s)
{
	struct sieve *m = st(s);
	struct evbuffer *in = s->client->in;
	const struct imap_limits lim = {.max_line = SASL_LINE_MAX + 128,
	                                .max_literal = s->cfg->max_literal_size};

	while (!s->closing && !s->ending && s->phase == PHASE_LOGIN && m->cs != C_WAITING &&
	       m->cs != C_DONE && evbuffer_get_length(in) > 0) {
		if (m->skip_line) {
			struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
			if (lf.pos < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				return;
			}
			evbuffer_drain(in, (size_t)lf.pos + 1);
			m->skip_line = false;
			continue;
		}
		size_t len = evbuffer_get_length(in);
		/* the IMAP grammar with a fixed tag; in the SASL exchange the
		 * line is one string, parsed as the argument of a fixed name */
		const char *prefix = m->cs == C_AUTH_CONT ? "S R " : "S ";
		size_t pl = strlen(prefix);
		char *buf = malloc(len + pl + 1);
		char *scratch = malloc(len + pl + 1);
		struct imap_command *cmd = malloc(sizeof(*cmd));
		if (!buf || !scratch || !cmd) {
			free(buf);
			free(scratch);
			free(cmd);
			session_close(s, "out of memory");
			return;
		}
		memcpy(buf, prefix, pl);
		evbuffer_copyout(in, buf + pl, len);
		size_t used = 0;
		unsigned sync = 0;
		const char *error = NULL;
		enum imap_parse_status r = imap_parse_command(buf, len + pl, &lim, cmd, scratch,
		                                              len + pl + 1, &used, &sync, &error);
		/* {N} and {N+} alike: ManageSieve has no continuation request
		 * for literals, a client sends the octets right away */
		(void)sync;
		if (r == IMAP_PARSE_INCOMPLETE) {
			free(buf);
			free(scratch);
			free(cmd);
			return;
		}
		size_t consumed = used > pl ? used - pl : 0;
		if (r == IMAP_PARSE_ERROR) {
			if (consumed == 0 && len <= lim.max_line) {
				free(buf);
				free(scratch);
				free(cmd);
				return;
			}
			if (consumed == 0)
				consumed = len;
			if (consumed == len && buf[pl + len - 1] != '\n')
				m->skip_line = true;
			evbuffer_drain(in, consumed);
			if (m->cs == C_AUTH_CONT) {
				m->cs = C_COMMAND;
				sasl_exchange_clear(&m->sasl);
			}
			bad_command(s, error ? error : "syntax error");
		} else {
			evbuffer_drain(in, consumed);
			if (m->cs == C_AUTH_CONT) {
				if (cmd->n_args == 1 && cmd->args[0].type == IMAP_ARG_STRING) {
					auth_response(s, cmd);
				} else if (cmd->n_args == 0) {
					/* a bare "*" or garbage: RFC 5804 cancels with "*" */
					m->cs = C_COMMAND;
					sasl_exchange_clear(&m->sasl);
					session_reply(s, "NO \"Authentication aborted.\"\r\n");
				} else {
					m->cs = C_COMMAND;
					sasl_exchange_clear(&m->sasl);
					bad_command(s, "Invalid authentication response.");
				}
			} else {
				dispatch(s, cmd);
			}
		}
		OPENSSL_cleanse(buf, len + pl);
		OPENSSL_cleanse(scratch, len + pl + 1);
		free(buf);
		free(scratch);
		free(cmd);
		if (s->phase != PHASE_LOGIN)
			return;
	}
}

/* ---- backend ---- */

static void send_auth(struct session *s)
{
	struct sieve *m = st(s);
	enum sasl_mech mech = sasl_replay_mech(&m->sasl.creds);
	char *resp = sasl_replay_response(&m->sasl.creds, session_replay_user(s));

	if (!resp) {
		session_backend_broken(s, "cannot build the login for the backend");
		return;
	}
	/* RFC 5804 section 2.1: the initial response is a string argument */
	session_backend_printf(s, "AUTHENTICATE \"%s\" \"%s\"\r\n", sasl_mech_name(mech), resp);
	sasl_secret_free(resp);
	m->bs = B_AUTH;
}

static void after_caps(struct session *s)
{
	struct sieve *m = st(s);

	if (s->ep->tls == TLS_MODE_STARTTLS && !s->backend_tls) {
		m->bs = B_STARTTLS;
		session_backend_printf(s, "STARTTLS\r\n");
		return;
	}
	if (config_forwarding(s->d, PROTO_MANAGESIEVE) == FORWARD_XCLIENT && !m->backend_xclient) {
		log_msg(LOG_WARN, "xclient-untrusted",
		        "id=%s destination=%s proto=managesieve detail=\"no XCLIENT capability: "
		        "add "
		        "the proxy to the backend's login_trusted_networks\"",
		        s->id, s->d->name);
	} else if (config_forwarding(s->d, PROTO_MANAGESIEVE) == FORWARD_XCLIENT) {
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
	send_auth(s);
}

static void verdict(struct session *s, bool ok, const char *line, size_t len)
{
	struct sieve *m = st(s);

	sasl_exchange_clear(&m->sasl);
	if (ok) {
		session_reply_raw(s, line, len);
		m->cs = C_DONE;
		session_login_succeeded(s);
		return;
	}
	if (s->d->hide_auth_errors)
		session_reply(s, "NO \"Authentication failed.\"\r\n");
	else
		session_reply_raw(s, line, len);
	m->cs = C_COMMAND;
	if (!session_login_failed(s, "backend refused the login")) {
		session_reply(s, "BYE \"Too many authentication failures.\"\r\n");
		m->cs = C_DONE;
		session_close(s, "too many authentication failures");
	}
}

static void backend_line(struct session *s, const char *line, size_t len)
{
	struct sieve *m = st(s);
	enum sieve_resp resp = sieve_parse_response(line, len);
	bool ok = resp == SIEVE_RESP_OK, no = resp == SIEVE_RESP_NO, bye = resp == SIEVE_RESP_BYE;
	char capability[SIEVE_CAPABILITY_NAME_MAX];

	switch (m->bs) {
	case B_CAPS:
		if (ok) {
			after_caps(s);
		} else if (no || bye) {
			session_backend_broken(s, "backend refused the connection");
		} else if (sieve_parse_capability(line, len, capability) &&
		           strcasecmp(capability, "XCLIENT") == 0) {
			m->backend_xclient = true;
		}
		return;
	case B_STARTTLS:
		if (!ok) {
			session_backend_broken(s, "backend refused STARTTLS");
			return;
		}
		m->backend_xclient = false; /* capabilities come again after TLS */
		session_backend_starttls(s);
		return;
	case B_XCLIENT:
		if (!ok || !memmem(line, len, "Updated", 7))
			log_msg(LOG_WARN, "xclient-untrusted",
			        "id=%s destination=%s proto=managesieve detail=\"backend ignored "
			        "XCLIENT: check its login_trusted_networks\"",
			        s->id, s->d->name);
		send_auth(s);
		return;
	case B_AUTH:
		if (ok || no || bye) {
			verdict(s, ok, line, len);
			return;
		}
		/* a challenge string (OAuth error details): acknowledge once */
		if (m->error_answered) {
			session_backend_broken(s, "backend keeps asking for data");
			return;
		}
		m->error_answered = true;
		session_backend_printf(s, "\"%s\"\r\n",
		                       m->sasl.creds.mech == SASL_OAUTHBEARER ? "AQ==" : "");
		return;
	}
}

static void sieve_backend_input(struct session *s)
{
	while (s->phase == PHASE_BACKEND && s->backend_open && !s->closing && !s->ending) {
		long n = conn_line_len(s->backend, BACKEND_LINE_MAX);
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

static void sieve_backend_ready(struct session *s)
{
	st(s)->bs = B_CAPS;
}

static void sieve_backend_tls_done(struct session *s)
{
	/* the server repeats its capabilities after TLS (section 2.2) */
	st(s)->bs = B_CAPS;
}

static void sieve_backend_failed(struct session *s, enum backend_failure why)
{
	struct sieve *m = st(s);

	sasl_exchange_clear(&m->sasl);
	m->cs = C_COMMAND;
	if (why == BACKEND_FAIL_BAD_LOGIN) {
		session_reply(s, "NO \"Authentication failed.\"\r\n");
		if (!session_login_failed(s, "invalid login name")) {
			m->cs = C_DONE;
			session_close(s, "too many authentication failures");
		}
		return;
	}
	session_reply(s, "NO (TRYLATER) \"Backend unavailable, try again later.\"\r\n");
}

static void sieve_goodbye(struct session *s, const char *why)
{
	if (strcmp(why, "timeout") == 0)
		session_reply(s, "BYE \"Disconnected for inactivity.\"\r\n");
	else
		session_reply(s, "BYE (TRYLATER) \"Server shutting down.\"\r\n");
}

static void sieve_free(struct session *s)
{
	struct sieve *m = st(s);

	if (!m)
		return;
	sasl_exchange_clear(&m->sasl);
	free(m);
	s->proto = NULL;
}

const struct proto_ops sieve_ops = {
        .name = "managesieve",
        .greet = sieve_greet,
        .client_tls_started = sieve_client_tls_started,
        .client_input = sieve_client_input,
        .backend_ready = sieve_backend_ready,
        .backend_input = sieve_backend_input,
        .backend_tls_done = sieve_backend_tls_done,
        .backend_failed = sieve_backend_failed,
        .goodbye = sieve_goodbye,
        .free = sieve_free,
};
