/*
 * IMAP: the client's login dialogue and the backend's, up to the verdict.
 *
 * Client side (RFC 9051 / 3501 as clients use them before login):
 * CAPABILITY, NOOP, LOGOUT, STARTTLS, ID, LOGIN, AUTHENTICATE. Anything
 * else gets BAD. Backend side: greeting, [CAPABILITY], [STARTTLS],
 * [ID with the real client for Dovecot], the login replayed as
 * AUTHENTICATE PLAIN (with SASL-IR when offered) or LOGIN, and the tagged
 * verdict handed to the client under the client's own tag.
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
#include "util.h"

#define MAX_BAD_COMMANDS 10
#define ID_FIELDS_MAX    30
#define BACKEND_LINE_MAX 65536

enum client_state {
	C_COMMAND,   /* waiting for a command */
	C_AUTH_CONT, /* AUTHENTICATE: waiting for a SASL response line */
	C_WAITING,   /* login handed to the backend */
	C_DONE,      /* STARTTLS / LOGOUT: nothing more is parsed */
};

enum backend_state {
	B_GREETING,
	B_CAPABILITY,
	B_STARTTLS,
	B_ID,
	B_AUTH_IR,   /* AUTHENTICATE sent, waiting for "+" or the verdict */
	B_AUTH_SENT, /* response sent, waiting for the verdict (or "+" error) */
	B_LOGIN_LIT, /* LOGIN with synchronising literals, step by step */
	B_VERDICT,
};

struct imap {
	enum client_state cs;
	enum backend_state bs;
	unsigned bad_commands;
	unsigned literals_answered;
	bool skip_line;             /* discarding the rest of an overlong line */
	char tag[IMAP_TAG_MAX + 1]; /* the client's login command tag */

	/* client's ID fields (name, value pairs; values may be NULL) */
	char *id_fields[2 * ID_FIELDS_MAX];
	size_t n_id_fields;

	/* the credentials, until they are replayed */
	bool via_sasl;
	struct sasl_exchange sasl;
	char *user, *password; /* LOGIN */

	/* backend */
	bool caps_known, has_sasl_ir, has_starttls, has_literal_plus, has_auth_plain;
	bool id_sent;
	unsigned btag;
	char btag_str[16];
	char *pending_response; /* base64 response waiting for "+" */
	char *lit_chunks[3];    /* LOGIN {n} steps */
	size_t lit_next, lit_n;
	bool oauth_error_answered;
};

static struct imap *st(struct session *s)
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

static void wipe_credentials(struct imap *m)
{
	wipe_str(&m->user);
	wipe_str(&m->password);
	if (m->pending_response) {
		sasl_secret_free(m->pending_response);
		m->pending_response = NULL;
	}
	for (size_t i = 0; i < m->lit_n; i++)
		wipe_str(&m->lit_chunks[i]);
	m->lit_n = m->lit_next = 0;
	sasl_exchange_clear(&m->sasl);
	m->via_sasl = false;
}

/* ---- capabilities we offer ---- */

static void write_capabilities(struct session *s, struct evbuffer *out)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_IMAP];
	static const char *const defaults[] = {"IMAP4rev1", "SASL-IR", "LITERAL+", "ID",
	                                       "ENABLE",    "IDLE",    NULL};
	static const char *const default_sasl[] = {"PLAIN", "LOGIN", NULL};
	bool first = true;

	if (caps->has_advertise) {
		for (size_t i = 0; i < caps->n_advertise; i++) {
			const char *c = caps->advertise[i];
			/* these follow the session's state, not the list */
			if (strcasecmp(c, "STARTTLS") == 0 || strcasecmp(c, "LOGINDISABLED") == 0 ||
			    strncasecmp(c, "AUTH=", 5) == 0)
				continue;
			evbuffer_add_printf(out, "%s%s", first ? "" : " ", c);
			first = false;
		}
	} else {
		for (size_t i = 0; defaults[i]; i++) {
			evbuffer_add_printf(out, "%s%s", first ? "" : " ", defaults[i]);
			first = false;
		}
	}
	if (s->ls->tls == TLS_MODE_STARTTLS && !session_client_secure(s))
		evbuffer_add_printf(out, " STARTTLS");
	if (!session_plain_auth_allowed(s)) {
		evbuffer_add_printf(out, " LOGINDISABLED");
		return;
	}
	if (caps->has_sasl) {
		for (size_t i = 0; i < caps->n_sasl; i++)
			evbuffer_add_printf(out, " AUTH=%s", caps->sasl[i]);
	} else {
		for (size_t i = 0; default_sasl[i]; i++)
			evbuffer_add_printf(out, " AUTH=%s", default_sasl[i]);
	}
}

static bool mech_offered(struct session *s, enum sasl_mech mech)
{
	const struct cfg_caps *caps = &s->cfg->caps[PROTO_IMAP];

	if (!caps->has_sasl)
		return mech != SASL_NONE; /* all we can read, whether advertised or not */
	for (size_t i = 0; i < caps->n_sasl; i++) {
		if (sasl_mech_parse(caps->sasl[i], strlen(caps->sasl[i])) == mech)
			return true;
	}
	return false;
}

static void imap_greet(struct session *s)
{
	struct imap *m = calloc(1, sizeof(*m));
	struct evbuffer *caps = evbuffer_new();
	const char *banner = s->cfg->caps[PROTO_IMAP].banner;

	if (!s->proto) {
		if (!m) {
			session_close(s, "out of memory");
			evbuffer_free(caps);
			return;
		}
		s->proto = m;
	} else {
		free(m);
	}
	write_capabilities(s, caps);
	evbuffer_add(caps, "", 1);
	session_reply(s, "* OK [CAPABILITY %s] %s\r\n", (char *)evbuffer_pullup(caps, -1),
	              banner ? banner : "mailsplice ready.");
	evbuffer_free(caps);
}

/* ---- client commands ---- */

static void reply_capability(struct session *s, const char *tag)
{
	struct evbuffer *caps = evbuffer_new();

	write_capabilities(s, caps);
	evbuffer_add(caps, "", 1);
	session_reply(s, "* CAPABILITY %s\r\n%s OK Capability completed.\r\n",
	              (char *)evbuffer_pullup(caps, -1), tag);
	evbuffer_free(caps);
}

static void bad_command(struct session *s, const char *tag, const char *msg)
{
	struct imap *m = st(s);

	if (tag && tag[0])
		session_reply(s, "%s BAD %s\r\n", tag, msg);
	else
		session_reply(s, "* BAD %s\r\n", msg);
	if (++m->bad_commands >= MAX_BAD_COMMANDS) {
		session_reply(s, "* BYE Too many invalid IMAP commands.\r\n");
		m->cs = C_DONE;
		session_close(s, "too many invalid commands");
	}
}

static void cmd_id(struct session *s, const struct imap_command *cmd)
{
	struct imap *m = st(s);

	for (size_t i = 0; i < m->n_id_fields; i++) {
		free(m->id_fields[i]);
		m->id_fields[i] = NULL;
	}
	m->n_id_fields = 0;
	if (cmd->n_args == 1 && cmd->args[0].type == IMAP_ARG_NIL) {
		/* ID NIL: nothing to remember */
	} else if (cmd->n_args >= 2 && cmd->args[0].type == IMAP_ARG_LIST_START &&
	           cmd->args[cmd->n_args - 1].type == IMAP_ARG_LIST_END &&
	           (cmd->n_args - 2) % 2 == 0 && (cmd->n_args - 2) / 2 <= ID_FIELDS_MAX) {
		for (size_t i = 1; i + 1 < cmd->n_args; i++) {
			const struct imap_arg *a = &cmd->args[i];
			bool is_name = (i - 1) % 2 == 0;
			if (a->type == IMAP_ARG_NIL && !is_name) {
				m->id_fields[m->n_id_fields++] = NULL;
				continue;
			}
			if (a->type != IMAP_ARG_STRING || a->len > 1024 ||
			    memchr(a->s, 0, a->len)) {
				bad_command(s, cmd->tag, "Invalid ID parameters.");
				return;
			}
			m->id_fields[m->n_id_fields++] = xstrndup(a->s, a->len);
		}
	} else {
		bad_command(s, cmd->tag, "Invalid ID parameters.");
		return;
	}
	session_reply(s, "* ID (\"name\" \"mailsplice\")\r\n%s OK ID completed.\r\n", cmd->tag);
}

static void start_login(struct session *s, const char *tag, const char *user)
{
	struct imap *m = st(s);

	str_copy(m->tag, tag, sizeof(m->tag));
	m->cs = C_WAITING;
	m->caps_known = m->has_sasl_ir = m->has_starttls = false;
	m->has_literal_plus = m->has_auth_plain = false;
	m->id_sent = false;
	m->oauth_error_answered = false;
	m->bs = B_GREETING;
	session_login(s, user);
}

static bool valid_user_string(const struct imap_arg *a)
{
	return (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_STRING) && a->len > 0 &&
	       !memchr(a->s, '\0', a->len);
}

static void cmd_login(struct session *s, const struct imap_command *cmd)
{
	struct imap *m = st(s);

	if (!session_plain_auth_allowed(s)) {
		session_reply(s,
		              "%s NO [PRIVACYREQUIRED] Plaintext authentication is not allowed "
		              "without TLS; use STARTTLS.\r\n",
		              cmd->tag);
		return;
	}
	if (cmd->n_args != 2 || !valid_user_string(&cmd->args[0]) ||
	    (cmd->args[1].type != IMAP_ARG_ATOM && cmd->args[1].type != IMAP_ARG_STRING) ||
	    memchr(cmd->args[1].s, '\0', cmd->args[1].len)) {
		bad_command(s, cmd->tag, "LOGIN expects a user name and a password.");
		return;
	}
	if (cmd->args[0].len > 255 || cmd->args[1].len > SASL_PASSWORD_MAX) {
		bad_command(s, cmd->tag, "User name or password too long.");
		return;
	}
	wipe_credentials(m);
	m->user = xstrndup(cmd->args[0].s, cmd->args[0].len);
	m->password = xstrndup(cmd->args[1].s, cmd->args[1].len);
	start_login(s, cmd->tag, m->user);
}

static void sasl_result(struct session *s, enum sasl_status r, const char *challenge,
                        const char *error)
{
	struct imap *m = st(s);

	if (r == SASL_CONTINUE) {
		m->cs = C_AUTH_CONT;
		session_reply(s, "+ %s\r\n", challenge);
		return;
	}
	if (r == SASL_FAIL) {
		m->cs = C_COMMAND;
		sasl_exchange_clear(&m->sasl);
		m->via_sasl = false;
		session_reply(s, "%s BAD Invalid authentication data: %s.\r\n", m->tag, error);
		return;
	}
	start_login(s, m->tag, m->sasl.creds.username);
}

static void cmd_authenticate(struct session *s, const struct imap_command *cmd)
{
	struct imap *m = st(s);
	const char *challenge = NULL, *error = NULL;

	if (cmd->n_args < 1 || cmd->n_args > 2 || cmd->args[0].type != IMAP_ARG_ATOM ||
	    (cmd->n_args == 2 && cmd->args[1].type != IMAP_ARG_ATOM)) {
		bad_command(s, cmd->tag, "AUTHENTICATE expects a mechanism name.");
		return;
	}
	enum sasl_mech mech = sasl_mech_parse(cmd->args[0].s, cmd->args[0].len);
	if (mech == SASL_NONE || !mech_offered(s, mech)) {
		session_reply(s, "%s NO Unsupported authentication mechanism.\r\n", cmd->tag);
		return;
	}
	if (!session_plain_auth_allowed(s)) {
		session_reply(s,
		              "%s NO [PRIVACYREQUIRED] Authentication is not allowed without TLS; "
		              "use STARTTLS.\r\n",
		              cmd->tag);
		return;
	}
	wipe_credentials(m);
	str_copy(m->tag, cmd->tag, sizeof(m->tag));
	m->via_sasl = true;
	const char *ir = cmd->n_args == 2 ? cmd->args[1].s : NULL;
	size_t ir_len = cmd->n_args == 2 ? cmd->args[1].len : 0;
	enum sasl_status r = sasl_start(&m->sasl, mech, s->cfg->jwt_username_claim, ir, ir_len,
	                                &challenge, &error);
	sasl_result(s, r, challenge, error);
}

static void auth_continuation(struct session *s, const char *line, size_t len)
{
	struct imap *m = st(s);
	const char *challenge = NULL, *error = NULL;

	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 1 && line[0] == '*') {
		/* RFC 9051 section 6.2.2: the client cancels, we answer BAD */
		sasl_exchange_clear(&m->sasl);
		m->via_sasl = false;
		m->cs = C_COMMAND;
		session_reply(s, "%s BAD Authentication aborted by client.\r\n", m->tag);
		return;
	}
	enum sasl_status r = sasl_step(&m->sasl, line, len, &challenge, &error);
	sasl_result(s, r, challenge, error);
}

static void dispatch(struct session *s, const struct imap_command *cmd)
{
	struct imap *m = st(s);

	if (strcmp(cmd->name, "CAPABILITY") == 0 && cmd->n_args == 0) {
		reply_capability(s, cmd->tag);
	} else if (strcmp(cmd->name, "NOOP") == 0 && cmd->n_args == 0) {
		session_reply(s, "%s OK NOOP completed.\r\n", cmd->tag);
	} else if (strcmp(cmd->name, "LOGOUT") == 0 && cmd->n_args == 0) {
		session_reply(s, "* BYE Logging out\r\n%s OK Logout completed.\r\n", cmd->tag);
		m->cs = C_DONE;
		session_close(s, "logout");
	} else if (strcmp(cmd->name, "STARTTLS") == 0 && cmd->n_args == 0) {
		if (session_client_secure(s)) {
			bad_command(s, cmd->tag, "TLS is already active.");
		} else if (s->ls->tls != TLS_MODE_STARTTLS) {
			bad_command(s, cmd->tag, "STARTTLS is not available on this port.");
		} else {
			session_reply(s, "%s OK Begin TLS negotiation now.\r\n", cmd->tag);
			m->literals_answered = 0;
			session_client_starttls(s);
		}
	} else if (strcmp(cmd->name, "ID") == 0) {
		cmd_id(s, cmd);
	} else if (strcmp(cmd->name, "LOGIN") == 0) {
		cmd_login(s, cmd);
	} else if (strcmp(cmd->name, "AUTHENTICATE") == 0) {
		cmd_authenticate(s, cmd);
	} else {
		bad_command(s, cmd->tag, "Command unknown or not allowed before login.");
	}
}

static void imap_client_input(struct session *s)
{
	struct imap *m = st(s);
	struct evbuffer *in = s->client->in;
	const struct imap_limits lim = {.max_line = s->cfg->max_line_length > SASL_LINE_MAX + 128
	                                                    ? s->cfg->max_line_length
	                                                    : SASL_LINE_MAX + 128,
	                                .max_literal = s->cfg->max_literal_size};

	while (!s->closing && !s->ending && s->phase == PHASE_LOGIN && m->cs != C_WAITING &&
	       m->cs != C_DONE && evbuffer_get_length(in) > 0) {
		if (m->skip_line) {
			/* the rest of a line already answered with BAD */
			struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
			if (lf.pos < 0) {
				evbuffer_drain(in, evbuffer_get_length(in));
				return;
			}
			evbuffer_drain(in, (size_t)lf.pos + 1);
			m->skip_line = false;
			continue;
		}
		if (m->cs == C_AUTH_CONT) {
			long n = conn_line_len(s->client, SASL_LINE_MAX + 3);
			if (n == 0)
				return;
			if (n < 0) {
				m->cs = C_COMMAND;
				sasl_exchange_clear(&m->sasl);
				evbuffer_drain(in, evbuffer_get_length(in));
				bad_command(s, m->tag, "Authentication response too long.");
				continue;
			}
			char *line = (char *)evbuffer_pullup(in, n);
			auth_continuation(s, line, (size_t)n);
			OPENSSL_cleanse(line, (size_t)n);
			evbuffer_drain(in, (size_t)n);
			continue;
		}
		size_t len = evbuffer_get_length(in);
		char *buf = (char *)evbuffer_pullup(in, (ev_ssize_t)len);
		char *scratch = malloc(len + 1);
		struct imap_command *cmd = malloc(sizeof(*cmd));
		size_t used = 0;
		unsigned sync = 0;
		const char *error = NULL;
		if (!scratch || !cmd) {
			free(scratch);
			free(cmd);
			session_close(s, "out of memory");
			return;
		}
		enum imap_parse_status r = imap_parse_command(buf, len, &lim, cmd, scratch, len + 1,
		                                              &used, &sync, &error);
		if (r == IMAP_PARSE_INCOMPLETE) {
			/* RFC 9051 section 4.3: "+" for each synchronising literal */
			while (m->literals_answered < sync) {
				session_reply(s, "+ OK\r\n");
				m->literals_answered++;
			}
			free(scratch);
			free(cmd);
			return;
		}
		m->literals_answered = 0;
		if (r == IMAP_PARSE_ERROR) {
			char tag[IMAP_TAG_MAX + 1];
			str_copy(tag, cmd->tag, sizeof(tag));
			free(scratch);
			free(cmd);
			if (used == 0)
				return; /* wait for the end of the line */
			/* everything dropped and still no line end: the line goes on */
			if (used == len && buf[len - 1] != '\n')
				m->skip_line = true;
			evbuffer_drain(in, used);
			bad_command(s, tag, error);
			continue;
		}
		/* the command's bytes leave the buffer before it runs: LOGIN
		 * keeps whatever follows for the data path */
		dispatch(s, cmd);
		OPENSSL_cleanse(scratch, len + 1);
		free(scratch);
		free(cmd);
		if (m->cs == C_DONE && s->phase == PHASE_CLIENT_TLS)
			return; /* STARTTLS: conn_start_tls drops the rest */
		evbuffer_drain(in, used);
	}
}

/* ---- backend dialogue ---- */

static const char *next_tag(struct imap *m)
{
	snprintf(m->btag_str, sizeof(m->btag_str), "ms%u", ++m->btag);
	return m->btag_str;
}

static void send_capability(struct session *s)
{
	struct imap *m = st(s);
	m->bs = B_CAPABILITY;
	session_backend_printf(s, "%s CAPABILITY\r\n", next_tag(m));
}

static void learn_capabilities(struct imap *m, const char *line, size_t len)
{
	bool had = false;

	imap_line_has_capability(line, len, "IMAP4rev1", &had);
	if (!had)
		return;
	m->caps_known = true;
	m->has_sasl_ir = imap_line_has_capability(line, len, "SASL-IR", NULL);
	m->has_starttls = imap_line_has_capability(line, len, "STARTTLS", NULL);
	m->has_literal_plus = imap_line_has_capability(line, len, "LITERAL+", NULL);
	m->has_auth_plain = imap_line_has_capability(line, len, "AUTH=PLAIN", NULL);
}

static void send_login(struct session *s);

/* After greeting/capabilities: STARTTLS, then the announcement, then the
 * login. */
static void advance(struct session *s)
{
	struct imap *m = st(s);

	if (s->ep->tls == TLS_MODE_STARTTLS && !s->backend_tls) {
		m->bs = B_STARTTLS;
		session_backend_printf(s, "%s STARTTLS\r\n", next_tag(m));
		return;
	}
	if (!m->caps_known) {
		send_capability(s);
		return;
	}
	if (config_forwarding(s->d, PROTO_IMAP) == FORWARD_XCLIENT && !m->id_sent) {
		/* Dovecot honours only the first ID of a session: ours, with
		 * the client's own fields after the x- ones */
		struct announce_info info;
		char buf[8192];
		session_announce_info(s, &info);
		size_t n = imap_id_build(&info, (const char *const *)m->id_fields,
		                         m->n_id_fields / 2, buf, sizeof(buf));
		if (n == 0)
			n = imap_id_build(&info, NULL, 0, buf, sizeof(buf));
		m->id_sent = true;
		m->bs = B_ID;
		session_backend_printf(s, "%s ID %.*s\r\n", next_tag(m), (int)n, buf);
		return;
	}
	send_login(s);
}

static void send_login(struct session *s)
{
	struct imap *m = st(s);
	const char *user = session_replay_user(s);

	if (m->via_sasl) {
		enum sasl_mech mech = sasl_replay_mech(&m->sasl.creds);
		char *resp = sasl_replay_response(&m->sasl.creds, user);
		if (!resp) {
			session_backend_broken(s, "cannot build the login for the backend");
			return;
		}
		const char *tag = next_tag(m);
		if (m->has_sasl_ir) {
			session_backend_printf(s, "%s AUTHENTICATE %s %s\r\n", tag,
			                       sasl_mech_name(mech), resp[0] ? resp : "=");
			sasl_secret_free(resp);
			m->bs = B_AUTH_SENT;
		} else {
			session_backend_printf(s, "%s AUTHENTICATE %s\r\n", tag,
			                       sasl_mech_name(mech));
			m->pending_response = resp;
			m->bs = B_AUTH_IR;
		}
		return;
	}
	/* LOGIN from the client: AUTHENTICATE PLAIN when offered */
	if (m->has_auth_plain || m->has_sasl_ir) {
		struct sasl_creds creds = {
		        .mech = SASL_PLAIN, .username = m->user, .secret = m->password};
		char *resp = sasl_replay_response(&creds, user);
		if (!resp) {
			session_backend_broken(s, "cannot build the login for the backend");
			return;
		}
		const char *tag = next_tag(m);
		if (m->has_sasl_ir) {
			session_backend_printf(s, "%s AUTHENTICATE PLAIN %s\r\n", tag, resp);
			sasl_secret_free(resp);
			m->bs = B_AUTH_SENT;
		} else {
			session_backend_printf(s, "%s AUTHENTICATE PLAIN\r\n", tag);
			m->pending_response = resp;
			m->bs = B_AUTH_IR;
		}
		return;
	}
	/* last resort: LOGIN with literals (never quoted: a password may hold
	 * anything a literal can carry) */
	const char *tag = next_tag(m);
	size_t ul = strlen(user), pl = strlen(m->password);
	if (m->has_literal_plus) {
		struct evbuffer *out = s->backend->out;
		evbuffer_add_printf(out, "%s LOGIN {%zu+}\r\n", tag, ul);
		evbuffer_add(out, user, ul);
		evbuffer_add_printf(out, " {%zu+}\r\n", pl);
		evbuffer_add(out, m->password, pl);
		evbuffer_add(out, "\r\n", 2);
		session_backend_send(s, "", 0);
		m->bs = B_VERDICT;
		return;
	}
	char first[64];
	snprintf(first, sizeof(first), "%s LOGIN {%zu}\r\n", tag, ul);
	m->lit_chunks[0] = xstrdup(first);
	size_t n = ul + 32;
	m->lit_chunks[1] = malloc(n);
	if (!m->lit_chunks[1])
		abort();
	snprintf(m->lit_chunks[1], n, "%s {%zu}\r\n", user, pl);
	n = pl + 3;
	m->lit_chunks[2] = malloc(n);
	if (!m->lit_chunks[2])
		abort();
	snprintf(m->lit_chunks[2], n, "%s\r\n", m->password);
	m->lit_n = 3;
	m->lit_next = 1;
	m->bs = B_LOGIN_LIT;
	session_backend_send(s, m->lit_chunks[0], strlen(m->lit_chunks[0]));
}

/* The tagged verdict of the login: relay it under the client's tag. */
static void verdict(struct session *s, enum imap_status status, const char *rest,
                    const char *line_end)
{
	struct imap *m = st(s);
	size_t rest_len = (size_t)(line_end - rest);

	while (rest_len && (rest[rest_len - 1] == '\r' || rest[rest_len - 1] == '\n'))
		rest_len--;
	if (status == IMAP_STATUS_OK) {
		wipe_credentials(m);
		session_reply(s, "%s OK %.*s\r\n", m->tag, (int)rest_len, rest);
		m->cs = C_DONE;
		session_login_succeeded(s);
		return;
	}
	wipe_credentials(m);
	if (s->d->hide_auth_errors)
		session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", m->tag);
	else
		session_reply(s, "%s %s %.*s\r\n", m->tag, status == IMAP_STATUS_BAD ? "BAD" : "NO",
		              (int)rest_len, rest);
	m->cs = C_COMMAND;
	if (!session_login_failed(s, status == IMAP_STATUS_BAD ? "backend said BAD"
	                                                       : "backend refused the login")) {
		session_reply(s, "* BYE Too many authentication failures.\r\n");
		m->cs = C_DONE;
		session_close(s, "too many authentication failures");
		return;
	}
	/* the client may have pipelined its next command meanwhile */
	if (evbuffer_get_length(s->client->in))
		imap_client_input(s);
}

static void backend_line(struct session *s, const char *line, size_t len)
{
	struct imap *m = st(s);
	char tag[32];
	enum imap_status status;
	const char *rest;
	enum imap_resp_kind kind = imap_parse_response(line, len, tag, sizeof(tag), &status, &rest);

	if (kind == IMAP_RESP_INVALID) {
		session_backend_broken(s, "backend sent an invalid IMAP response");
		return;
	}
	if (kind == IMAP_RESP_UNTAGGED && status == IMAP_STATUS_BYE) {
		session_backend_broken(s, "backend said BYE");
		return;
	}
	switch (m->bs) {
	case B_GREETING:
		if (kind != IMAP_RESP_UNTAGGED || status != IMAP_STATUS_OK) {
			session_backend_broken(s, status == IMAP_STATUS_PREAUTH
			                                  ? "backend greeting is PREAUTH"
			                                  : "unexpected backend greeting");
			return;
		}
		learn_capabilities(m, line, len);
		advance(s);
		return;
	case B_CAPABILITY:
	case B_STARTTLS:
	case B_ID:
		if (kind == IMAP_RESP_UNTAGGED) {
			learn_capabilities(m, line, len);
			return;
		}
		if (kind != IMAP_RESP_TAGGED || strcmp(tag, m->btag_str) != 0) {
			session_backend_broken(s, "unexpected backend response");
			return;
		}
		if (m->bs == B_STARTTLS) {
			if (status != IMAP_STATUS_OK) {
				session_backend_broken(s, "backend refused STARTTLS");
				return;
			}
			m->caps_known = false; /* RFC 9051 6.2.1: forget them */
			session_backend_starttls(s);
			return;
		}
		if (m->bs == B_CAPABILITY) {
			learn_capabilities(m, line, len);
			if (!m->caps_known) {
				session_backend_broken(s, "backend sent no CAPABILITY");
				return;
			}
		}
		/* an ID refused is not fatal: the login still works, only the
		 * backend logs our address */
		if (m->bs == B_ID && status != IMAP_STATUS_OK)
			log_msg(LOG_WARN, "imap-id-refused", "id=%s destination=%s", s->id,
			        s->d->name);
		advance(s);
		return;
	case B_AUTH_IR:
		if (kind == IMAP_RESP_CONTINUATION && m->pending_response) {
			session_backend_printf(s, "%s\r\n", m->pending_response);
			sasl_secret_free(m->pending_response);
			m->pending_response = NULL;
			m->bs = B_AUTH_SENT;
			return;
		}
		/* fall through: an immediate verdict */
		/* FALLTHROUGH */
	case B_AUTH_SENT:
	case B_VERDICT:
		if (kind == IMAP_RESP_CONTINUATION) {
			/* OAuth failure details (RFC 7628 3.2.2): acknowledge
			 * once so the server sends its verdict */
			if (m->oauth_error_answered) {
				session_backend_broken(s, "backend keeps asking for data");
				return;
			}
			m->oauth_error_answered = true;
			bool bearer = m->via_sasl && m->sasl.creds.mech == SASL_OAUTHBEARER;
			session_backend_printf(s, "%s\r\n", bearer ? "AQ==" : "");
			return;
		}
		if (kind == IMAP_RESP_UNTAGGED) {
			/* e.g. "* CAPABILITY ..." after login: the client's */
			session_reply_raw(s, line, len);
			return;
		}
		if (strcmp(tag, m->btag_str) != 0) {
			session_backend_broken(s, "unexpected backend response tag");
			return;
		}
		verdict(s, status, rest, line + len);
		return;
	case B_LOGIN_LIT:
		if (kind == IMAP_RESP_CONTINUATION && m->lit_next < m->lit_n) {
			const char *chunk = m->lit_chunks[m->lit_next++];
			session_backend_send(s, chunk, strlen(chunk));
			if (m->lit_next == m->lit_n)
				m->bs = B_VERDICT;
			return;
		}
		if (kind == IMAP_RESP_TAGGED && strcmp(tag, m->btag_str) == 0) {
			verdict(s, status, rest, line + len);
			return;
		}
		session_backend_broken(s, "unexpected backend response during LOGIN");
		return;
	}
}

static void imap_backend_input(struct session *s)
{
	while (s->phase == PHASE_BACKEND && s->backend_open && !s->closing && !s->ending) {
		long n = conn_line_len(s->backend, BACKEND_LINE_MAX);
		if (n == 0)
			return;
		if (n < 0) {
			session_backend_broken(s, "backend response line too long");
			return;
		}
		char *line = (char *)evbuffer_pullup(s->backend->in, n);
		char *copy = xstrndup(line, (size_t)n);
		evbuffer_drain(s->backend->in, (size_t)n);
		backend_line(s, copy, (size_t)n);
		free(copy);
		/* after the verdict the rest of the buffer belongs to the data path */
	}
}

static void imap_backend_ready(struct session *s)
{
	st(s)->bs = B_GREETING;
}

static void imap_backend_tls_done(struct session *s)
{
	send_capability(s);
}

static void imap_backend_failed(struct session *s, enum backend_failure why)
{
	struct imap *m = st(s);

	wipe_credentials(m);
	m->cs = C_COMMAND;
	if (why == BACKEND_FAIL_BAD_LOGIN) {
		session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", m->tag);
		if (!session_login_failed(s, "invalid login name")) {
			session_reply(s, "* BYE Too many authentication failures.\r\n");
			m->cs = C_DONE;
			session_close(s, "too many authentication failures");
		}
		return;
	}
	session_reply(s, "%s NO [UNAVAILABLE] Backend unavailable, try again later.\r\n", m->tag);
}

static void imap_goodbye(struct session *s, const char *why)
{
	if (strcmp(why, "timeout") == 0)
		session_reply(s, "* BYE Disconnected for inactivity.\r\n");
	else if (strcmp(why, "kicked") == 0)
		session_reply(s, "* BYE Disconnected by the administrator.\r\n");
	else
		session_reply(s, "* BYE Server shutting down.\r\n");
}

static void imap_free(struct session *s)
{
	struct imap *m = st(s);

	if (!m)
		return;
	wipe_credentials(m);
	for (size_t i = 0; i < m->n_id_fields; i++)
		free(m->id_fields[i]);
	free(m);
	s->proto = NULL;
}

const struct proto_ops imap_ops = {
        .name = "imap",
        .greet = imap_greet,
        .client_input = imap_client_input,
        .backend_ready = imap_backend_ready,
        .backend_input = imap_backend_input,
        .backend_tls_done = imap_backend_tls_done,
        .backend_failed = imap_backend_failed,
        .goodbye = imap_goodbye,
        .free = imap_free,
};
