/*
 * TOML -> typed configuration, with validation (see config.h).
 *
 * Every table is checked against the keys it may hold: a typo is an error,
 * never a silently ignored setting. All errors are collected, so one run of
 * --check shows every problem with its line, not just the first.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "bus.h"
#include "http_route.h"
#include "log.h"
#include "store.h"
#include "tls.h"
#include "toml.h"

/* ---- names ---- */

static const char *const proto_names[PROTO_COUNT] = {
        "imap", "pop3", "submission", "managesieve", "smtp", "lmtp", "http",
};

const char *proto_name(enum proto p)
{
	return (unsigned)p < PROTO_COUNT ? proto_names[p] : "?";
}

const char *tls_mode_name(enum tls_mode m)
{
	static const char *const n[] = {"plain", "starttls", "implicit"};
	return (unsigned)m < 3 ? n[m] : "?";
}

const char *forwarding_name(enum forwarding f)
{
	static const char *const n[] = {"none", "proxy", "xclient"};
	return (unsigned)f < 3 ? n[f] : "?";
}

const char *data_path_mode_name(enum data_path_mode m)
{
	static const char *const n[] = {"auto", "sockmap", "splice", "userspace"};
	return (unsigned)m < 4 ? n[m] : "?";
}

/* ---- error collection ---- */

struct loader {
	const char *file;
	struct config *cfg;
	bool check_files;
	char *err;
	size_t errlen, errused;
	unsigned nerrors;
};

static void errorf(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void errorf(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	l->nerrors++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (l->errused >= l->errlen)
		return;
	if (line)
		n = snprintf(l->err + l->errused, l->errlen - l->errused, "%s:%u: %s: %s\n",
		             l->file, line, key, msg);
	else
		n = snprintf(l->err + l->errused, l->errlen - l->errused, "%s: %s: %s\n", l->file,
		             key, msg);
	if (n > 0)
		l->errused += (size_t)n;
	if (l->errused >= l->errlen)
		l->errused = l->errlen;
}

/* ---- typed getters: each checks the type and names the key on error ---- */

/* Full dotted name of a key for messages. */
static const char *kname(char *buf, size_t len, const char *table, const char *key)
{
	if (table && *table)
		snprintf(buf, len, "%s.%s", table, key);
	else
		snprintf(buf, len, "%s", key);
	return buf;
}

static const struct toml_value *get_typed(struct loader *l, const struct toml_value *t,
                                          const char *table, const char *key, enum toml_type type)
{
	const struct toml_value *v = toml_get(t, key);
	char kb[256];

	if (!v)
		return NULL;
	if (v->type != type) {
		errorf(l, v->line, kname(kb, sizeof(kb), table, key), "expected %s, found %s",
		       toml_type_name(type), toml_type_name(v->type));
		return NULL;
	}
	return v;
}

static char *get_str(struct loader *l, const struct toml_value *t, const char *table,
                     const char *key, const char *def)
{
	const struct toml_value *v = get_typed(l, t, table, key, TOML_STRING);
	char kb[256];

	if (v) {
		if (strlen(v->u.string.ptr) != v->u.string.len) {
			errorf(l, v->line, kname(kb, sizeof(kb), table, key), "NUL in string");
			return def ? xstrdup(def) : NULL;
		}
		return xstrdup(v->u.string.ptr);
	}
	return def ? xstrdup(def) : NULL;
}

static bool get_bool(struct loader *l, const struct toml_value *t, const char *table,
                     const char *key, bool def)
{
	const struct toml_value *v = get_typed(l, t, table, key, TOML_BOOL);
	return v ? v->u.boolean : def;
}

static long long get_int(struct loader *l, const struct toml_value *t, const char *table,
                         const char *key, long long def, long long min, long long max)
{
	const struct toml_value *v = get_typed(l, t, table, key, TOML_INTEGER);
	char kb[256];

	if (!v)
		return def;
	if (v->u.integer < min || v->u.integer > max) {
		errorf(l, v->line, kname(kb, sizeof(kb), table, key),
		       "%lld is out of range (%lld to %lld)", (long long)v->u.integer, min, max);
		return def;
	}
	return v->u.integer;
}

/* A duration: "30s", "5m", ... or an integer number of seconds. */
static uint64_t get_duration(struct loader *l, const struct toml_value *t, const char *table,
                             const char *key, uint64_t def_ms)
{
	const struct toml_value *v = toml_get(t, key);
	char kb[256];
	uint64_t ms;

	if (!v)
		return def_ms;
	if (v->type == TOML_INTEGER && v->u.integer >= 0 && v->u.integer < INT32_MAX)
		return (uint64_t)v->u.integer * 1000;
	if (v->type == TOML_STRING && parse_duration_ms(v->u.string.ptr, &ms))
		return ms;
	errorf(l, v->line, kname(kb, sizeof(kb), table, key),
	       "expected a duration such as \"30s\", \"5m\" or \"1h\"");
	return def_ms;
}

/* One of a fixed set of strings; returns its index or def. */
static int get_enum(struct loader *l, const struct toml_value *t, const char *table,
                    const char *key, const char *const *names, int def)
{
	const struct toml_value *v = get_typed(l, t, table, key, TOML_STRING);
	char kb[256], allowed[256] = "";

	if (!v)
		return def;
	for (int i = 0; names[i]; i++) {
		if (strcmp(v->u.string.ptr, names[i]) == 0)
			return i;
		size_t n = strlen(allowed);
		snprintf(allowed + n, sizeof(allowed) - n, "%s\"%s\"", i ? ", " : "", names[i]);
	}
	errorf(l, v->line, kname(kb, sizeof(kb), table, key), "\"%s\" is not one of %s",
	       v->u.string.ptr, allowed);
	return def;
}

/* An array of strings (a single string is accepted as a one-element array). */
static char **get_str_array(struct loader *l, const struct toml_value *t, const char *table,
                            const char *key, size_t *n, unsigned *line)
{
	const struct toml_value *v = toml_get(t, key);
	char kb[256];
	char **out;

	*n = 0;
	if (!v)
		return NULL;
	if (line)
		*line = v->line;
	if (v->type == TOML_STRING) {
		out = xcalloc(1, sizeof(*out));
		out[0] = xstrdup(v->u.string.ptr);
		*n = 1;
		return out;
	}
	if (v->type != TOML_ARRAY) {
		errorf(l, v->line, kname(kb, sizeof(kb), table, key),
		       "expected an array of strings, found %s", toml_type_name(v->type));
		return NULL;
	}
	out = xcalloc(v->u.array.len, sizeof(*out));
	for (size_t i = 0; i < v->u.array.len; i++) {
		const struct toml_value *e = v->u.array.items[i];
		if (e->type != TOML_STRING) {
			errorf(l, e->line, kname(kb, sizeof(kb), table, key),
			       "element %zu: expected string, found %s", i + 1,
			       toml_type_name(e->type));
			continue;
		}
		out[(*n)++] = xstrdup(e->u.string.ptr);
	}
	return out;
}

static void free_str_array(char **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(a[i]);
	free(a);
}

/* Edit distance, for "did you mean" on unknown keys (short strings only). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[64];

	if (la >= 63 || lb >= 63)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Every key of t must be in allowed (NULL-terminated). */
static void check_keys(struct loader *l, const struct toml_value *t, const char *table,
                       const char *const *allowed)
{
	char kb[256];

	if (!t || t->type != TOML_TABLE)
		return;
	for (size_t i = 0; i < t->u.table.len; i++) {
		const char *k = t->u.table.items[i].key;
		bool ok = false;
		for (size_t j = 0; allowed[j]; j++) {
			if (strcmp(k, allowed[j]) == 0) {
				ok = true;
				break;
			}
		}
		if (ok)
			continue;
		const char *near = NULL;
		size_t best = 3; /* a typo, not a different word */
		for (size_t j = 0; allowed[j]; j++) {
			size_t d = edit_distance(k, allowed[j]);
			if (d < best) {
				best = d;
				near = allowed[j];
			}
		}
		if (near)
			errorf(l, t->u.table.items[i].value->line, kname(kb, sizeof(kb), table, k),
			       "unknown key (did you mean \"%s\"?)", near);
		else
			errorf(l, t->u.table.items[i].value->line, kname(kb, sizeof(kb), table, k),
			       "unknown key");
	}
}

/* A sub-table that must be a table if present. */
static const struct toml_value *get_table(struct loader *l, const struct toml_value *t,
                                          const char *table, const char *key)
{
	return get_typed(l, t, table, key, TOML_TABLE);
}

/* A file the daemon will open: must exist and be readable. */
static void check_file(struct loader *l, unsigned line, const char *key, const char *path)
{
	if (!l->check_files || !path)
		return;
	if (access(path, R_OK) != 0)
		errorf(l, line, key, "%s: %s", path, strerror(errno));
}

/* A private key or token: also must not be readable by everyone. A
 * world-readable secret on a mail host is an incident; refusing to start
 * is the cheapest moment to learn about it. */
static void check_secret_file(struct loader *l, unsigned line, const char *key, const char *path)
{
	struct stat st;

	if (!l->check_files || !path)
		return;
	if (access(path, R_OK) != 0) {
		errorf(l, line, key, "%s: %s", path, strerror(errno));
		return;
	}
	if (stat(path, &st) == 0 && (st.st_mode & S_IROTH))
		errorf(l, line, key,
		       "%s is readable by every user (mode %04o); chmod o-r it (e.g. 0640 or 0600)",
		       path, (unsigned)(st.st_mode & 07777));
}

static unsigned line_of(const struct toml_value *t, const char *key)
{
	const struct toml_value *v = toml_get(t, key);
	return v ? v->line : (t ? t->line : 0);
}

/* A table name that becomes a name of ours (destination, listener,
 * certificate): it is written in logs and in the mapping file, and looked
 * up as a C string, so a NUL, a control character, a blank, '"' or '#'
 * in it would make two names compare equal or break a line. */
static bool name_ok(struct loader *l, const struct toml_keyval *kv, const char *table)
{
	bool ok = kv->key_len == strlen(kv->key) && kv->key_len > 0;

	for (size_t i = 0; ok && i < kv->key_len; i++) {
		unsigned char ch = (unsigned char)kv->key[i];
		ok = ch > 0x20 && ch != 0x7f && ch != '"' && ch != '#';
	}
	if (!ok) {
		/* the error names the table without the offending bytes */
		char shown[200];
		size_t n = 0;
		for (const char *p = table; *p && n < sizeof(shown) - 1; p++)
			shown[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
		shown[n] = '\0';
		errorf(l, kv->value->line, shown,
		       "name must not be empty nor contain NUL, control characters, blanks, '\"' "
		       "or '#'");
	}
	return ok;
}

/* ---- [server] ---- */

static void load_server(struct loader *l, const struct toml_value *root)
{
	static const char *const keys[] = {"threads",
	                                   "hostname",
	                                   "shutdown_grace",
	                                   "log_level",
	                                   "data_path",
	                                   "backend_timeout",
	                                   "backend_connect_retries",
	                                   "host_down_threshold",
	                                   "host_down_cooldown",
	                                   "host_down_min_clients",
	                                   "bridge_idle",
	                                   "proxy_ttl",
	                                   "max_line_length",
	                                   "max_literal_size",
	                                   "user",
	                                   "group",
	                                   "kernel_queue_limit",
	                                   "node_name",
	                                   "control_socket",
	                                   "splice_pipe_max",
	                                   NULL};
	static const char *const data_paths[] = {"auto", "sockmap", "splice", "userspace", NULL};
	const struct toml_value *t = get_table(l, root, "", "server");
	struct config *c = l->cfg;
	char host[256];

	check_keys(l, t, "server", keys);
	c->threads = (unsigned)get_int(l, t, "server", "threads", 0, 0, 1024);
	if (gethostname(host, sizeof(host)) != 0)
		str_copy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	c->hostname = get_str(l, t, "server", "hostname", host);
	c->shutdown_grace_ms = get_duration(l, t, "server", "shutdown_grace", 30000);
	char *level = get_str(l, t, "server", "log_level", "info");
	enum log_level lv;
	if (strcmp(level, "off") == 0)
		c->log_level = -1;
	else if (log_level_parse(level, &lv))
		c->log_level = lv;
	else
		errorf(l, line_of(t, "log_level"), "server.log_level",
		       "\"%s\" is not one of \"off\", \"error\", \"warn\", \"info\", \"debug\", "
		       "\"trace\"",
		       level);
	free(level);
	c->data_path = (enum data_path_mode)get_enum(l, t, "server", "data_path", data_paths,
	                                             DATA_PATH_AUTO);
	c->backend_timeout_ms = get_duration(l, t, "server", "backend_timeout", 10000);
	c->backend_connect_retries =
	        (unsigned)get_int(l, t, "server", "backend_connect_retries", 1, 0, 10);
	c->host_down_threshold =
	        (unsigned)get_int(l, t, "server", "host_down_threshold", 5, 0, 1000000);
	c->host_down_cooldown_ms = get_duration(l, t, "server", "host_down_cooldown", 30000);
	c->host_down_min_clients =
	        (unsigned)get_int(l, t, "server", "host_down_min_clients", 2, 1, 1000000);
	c->bridge_idle_ms = get_duration(l, t, "server", "bridge_idle", 1800000);
	c->proxy_ttl = (unsigned)get_int(l, t, "server", "proxy_ttl", 7, 1, 255);
	c->max_line_length =
	        (size_t)get_int(l, t, "server", "max_line_length", 8192, 512, 1024 * 1024);
	c->max_literal_size =
	        (size_t)get_int(l, t, "server", "max_literal_size", 65536, 1024, 16 * 1024 * 1024);
	c->user = get_str(l, t, "server", "user", NULL);
	c->group = get_str(l, t, "server", "group", NULL);
	/* found out by --check, not after the listeners are bound */
	if (c->user && !getpwnam(c->user))
		errorf(l, line_of(t, "user"), "server.user",
		       "no such user \"%s\" (create it: adduser --system --group %s)", c->user,
		       c->user);
	if (c->group && !getgrnam(c->group))
		errorf(l, line_of(t, "group"), "server.group", "no such group \"%s\"", c->group);
	/* sockmap: what one direction may leave queued in the kernel before
	 * the sender is stopped (docs/datapath.md) */
	c->kernel_queue_limit = (uint32_t)get_int(l, t, "server", "kernel_queue_limit", 4 << 20,
	                                          64 * 1024, 256 << 20);
	/* the default (hostname/admin bind) is made in validate(), once
	 * [admin] is read */
	c->node_name = get_str(l, t, "server", "node_name", NULL);
	if (c->node_name) {
		size_t n = strlen(c->node_name);
		bool ok = n > 0 && n <= NODE_NAME_MAX;
		for (size_t i = 0; ok && i < n; i++)
			ok = (unsigned char)c->node_name[i] > ' ' &&
			     (unsigned char)c->node_name[i] < 0x7f;
		if (!ok)
			errorf(l, line_of(t, "node_name"), "server.node_name",
			       "1 to %d printable ASCII characters without spaces", NODE_NAME_MAX);
	}
	/* splice: a busy direction's pipe grows to this (docs/datapath.md);
	 * 64 KiB, the kernel's default pipe, turns growing off */
	c->splice_pipe_max =
	        (uint32_t)get_int(l, t, "server", "splice_pipe_max", 1 << 20, 64 * 1024, 64 << 20);
	/* --upgrade finds the running daemon here (docs/upgrade.md) */
	c->control_socket =
	        get_str(l, t, "server", "control_socket", "/run/mailsplice/control.sock");
	if (c->control_socket[0] &&
	    (c->control_socket[0] != '/' ||
	     strlen(c->control_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)))
		errorf(l, line_of(t, "control_socket"), "server.control_socket",
		       "\"%s\" is not an absolute path of at most %zu bytes (or \"\" for none)",
		       c->control_socket, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
}

/* ---- [tls] ---- */

static void load_tls(struct loader *l, const struct toml_value *root)
{
	static const char *const tls_keys[] = {"certificate", "protocols", NULL};
	static const char *const cert_keys[] = {"cert", "key", "subjects", "default", NULL};
	static const char *const proto_keys[] = {"min_version", "ignore_client_order",
	                                         "disable_cipher_suites", NULL};
	/* TLS 1.0 and 1.1 are not offered at all, as in the reference proxy */
	static const char *const versions[] = {"1.2", "1.3", NULL};
	static const int version_ids[] = {TLS1_2_VERSION, TLS1_3_VERSION};
	const struct toml_value *t = get_table(l, root, "", "tls");
	const struct toml_value *certs = get_table(l, t, "tls", "certificate");
	const struct toml_value *p = get_table(l, t, "tls", "protocols");
	struct config *c = l->cfg;
	char kb[256];
	int defaults = 0;

	check_keys(l, t, "tls", tls_keys);
	if (certs) {
		c->certs = xcalloc(certs->u.table.len, sizeof(*c->certs));
		for (size_t i = 0; i < certs->u.table.len; i++) {
			const struct toml_keyval *kv = &certs->u.table.items[i];
			char table[200];
			snprintf(table, sizeof(table), "tls.certificate.%s", kv->key);
			if (kv->value->type != TOML_TABLE) {
				errorf(l, kv->value->line, table, "expected a table");
				continue;
			}
			if (!name_ok(l, kv, table))
				continue;
			struct cfg_cert *cc = &c->certs[c->n_certs++];
			cc->id = xstrdup(kv->key);
			cc->line = kv->value->line;
			check_keys(l, kv->value, table, cert_keys);
			cc->cert = get_str(l, kv->value, table, "cert", NULL);
			cc->key = get_str(l, kv->value, table, "key", NULL);
			cc->is_default = get_bool(l, kv->value, table, "default", false);
			cc->subjects = get_str_array(l, kv->value, table, "subjects",
			                             &cc->n_subjects, NULL);
			if (!cc->cert)
				errorf(l, cc->line, kname(kb, sizeof(kb), table, "cert"),
				       "missing (path of the PEM certificate chain)");
			if (!cc->key)
				errorf(l, cc->line, kname(kb, sizeof(kb), table, "key"),
				       "missing (path of the PEM private key)");
			check_file(l, line_of(kv->value, "cert"),
			           kname(kb, sizeof(kb), table, "cert"), cc->cert);
			check_secret_file(l, line_of(kv->value, "key"),
			                  kname(kb, sizeof(kb), table, "key"), cc->key);
			defaults += cc->is_default;
		}
		if (defaults > 1)
			errorf(l, certs->line, "tls.certificate",
			       "%d certificates are marked default = true; mark exactly one",
			       defaults);
		if (defaults == 0 && c->n_certs == 1)
			c->certs[0].is_default = true;
		else if (defaults == 0 && c->n_certs > 1)
			errorf(l, certs->line, "tls.certificate",
			       "several certificates and none has default = true");
	}
	check_keys(l, p, "tls.protocols", proto_keys);
	int v = get_enum(l, p, "tls.protocols", "min_version", versions, 0);
	c->tls_min_version = version_ids[v];
	c->tls_ignore_client_order = get_bool(l, p, "tls.protocols", "ignore_client_order", false);
	unsigned dis_line = 0;
	c->tls_disable_ciphers = get_str_array(l, p, "tls.protocols", "disable_cipher_suites",
	                                       &c->n_tls_disable_ciphers, &dis_line);
	for (size_t i = 0; i < c->n_tls_disable_ciphers; i++) {
		if (!tls_cipher_known(c->tls_disable_ciphers[i]))
			errorf(l, dis_line, "tls.protocols.disable_cipher_suites",
			       "\"%s\" is not a cipher suite name this OpenSSL knows (IANA names "
			       "such as \"TLS_AES_128_GCM_SHA256\" or OpenSSL names)",
			       c->tls_disable_ciphers[i]);
	}
}

/* ---- [routing], [mapping] ---- */

static void load_routing(struct loader *l, const struct toml_value *root)
{
	static const char *const keys[] = {"default_destination", "smtp_passthrough_destination",
	                                   "master_user_separators", NULL};
	const struct toml_value *t = get_table(l, root, "", "routing");
	struct config *c = l->cfg;

	check_keys(l, t, "routing", keys);
	c->default_destination = get_str(l, t, "routing", "default_destination", NULL);
	c->smtp_passthrough_destination =
	        get_str(l, t, "routing", "smtp_passthrough_destination", NULL);
	if (!c->default_destination)
		errorf(l, t ? t->line : 0, "routing.default_destination",
		       "missing: where accounts without a mapping go");
	/* "user@domain%admin" logs in as the master user admin on behalf of
	 * user@domain: routing uses the part before the separator */
	if (t && toml_get(t, "master_user_separators")) {
		size_t n = 0;
		unsigned line = 0;
		char **seps = get_str_array(l, t, "routing", "master_user_separators", &n, &line);
		c->master_separators = xcalloc(n + 1, 1);
		for (size_t i = 0; i < n; i++) {
			if (strlen(seps[i]) != 1 || seps[i][0] <= ' ' || seps[i][0] == '@' ||
			    seps[i][0] == 0x7f)
				errorf(l, line, "routing.master_user_separators",
				       "\"%s\" is not a single printable character other than '@'",
				       seps[i]);
			else
				c->master_separators[strlen(c->master_separators)] = seps[i][0];
		}
		free_str_array(seps, n);
	} else {
		c->master_separators = xstrdup("%");
	}
}

/* [mapping.redis] and [mapping.sql] share url and pool_size. */
static void load_store_common(struct loader *l, const struct toml_value *mapping,
                              const struct toml_value *t, const char *table, enum store_kind kind)
{
	struct config *c = l->cfg;
	struct store_url u;
	char kb[64], e[300];

	if (!t) {
		errorf(l, line_of(mapping, "source"), table,
		       "missing: source = \"%s\" needs this table", store_kind_name(kind));
		return;
	}
	c->store_url = get_str(l, t, table, "url", NULL);
	if (!c->store_url)
		errorf(l, t->line, kname(kb, sizeof(kb), table, "url"), "missing");
	else if (!store_url_parse(kind, c->store_url, &u, e, sizeof(e)))
		errorf(l, line_of(t, "url"), kname(kb, sizeof(kb), table, "url"), "%s", e);
	c->store_pool_size = (unsigned)get_int(l, t, table, "pool_size", 16, 1, 1024);
}

static void load_redis(struct loader *l, const struct toml_value *mapping,
                       const struct toml_value *t)
{
	struct config *c = l->cfg;

	load_store_common(l, mapping, t, "mapping.redis", STORE_REDIS);
	c->redis_key_prefix = get_str(l, t, "mapping.redis", "key_prefix", "route:");
	if (strlen(c->redis_key_prefix) > 256) {
		errorf(l, line_of(t, "key_prefix"), "mapping.redis.key_prefix",
		       "longer than 256 bytes");
	}
	/* the fleet's events travel on a channel under the same prefix */
	size_t n = strlen(c->redis_key_prefix) + sizeof("events");
	c->bus_channel = xcalloc(1, n);
	snprintf(c->bus_channel, n, "%sevents", c->redis_key_prefix);
}

/* A query must use its parameters: "$1" (and "$2") as a whole token. */
static bool uses_param(const char *q, const char *p)
{
	size_t n = strlen(p);
	for (const char *s = strstr(q, p); s; s = strstr(s + 1, p)) {
		if (s[n] < '0' || s[n] > '9')
			return true;
	}
	return false;
}

static void load_sql(struct loader *l, const struct toml_value *mapping, const struct toml_value *t)
{
	struct config *c = l->cfg;

	load_store_common(l, mapping, t, "mapping.sql", STORE_SQL);
	if (!t)
		return;
	c->sql_query = get_str(l, t, "mapping.sql", "query", NULL);
	c->sql_upsert_query = get_str(l, t, "mapping.sql", "upsert_query", NULL);
	c->sql_delete_query = get_str(l, t, "mapping.sql", "delete_query", NULL);
	c->bus_channel = get_str(l, t, "mapping.sql", "channel", "mailsplice");
	if (!c->sql_query)
		errorf(l, t->line, "mapping.sql.query",
		       "missing: the lookup, e.g. \"SELECT destination FROM routes WHERE "
		       "identifier = $1\"");
	else if (!uses_param(c->sql_query, "$1"))
		errorf(l, line_of(t, "query"), "mapping.sql.query",
		       "does not use $1 (the account being looked up)");
	if (c->sql_upsert_query &&
	    (!uses_param(c->sql_upsert_query, "$1") || !uses_param(c->sql_upsert_query, "$2")))
		errorf(l, line_of(t, "upsert_query"), "mapping.sql.upsert_query",
		       "must use $1 (the account) and $2 (the destination)");
	if (c->sql_delete_query && !uses_param(c->sql_delete_query, "$1"))
		errorf(l, line_of(t, "delete_query"), "mapping.sql.delete_query",
		       "does not use $1 (the account)");
	/* LISTEN takes an identifier: keep it to one that needs no care */
	bool ok = c->bus_channel[0] && strlen(c->bus_channel) <= 63;
	for (const char *p = c->bus_channel; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
	if (!ok)
		errorf(l, line_of(t, "channel"), "mapping.sql.channel",
		       "\"%s\" is not 1 to 63 of a-z, 0-9 and _", c->bus_channel);
}

static void load_mapping(struct loader *l, const struct toml_value *root)
{
	static const char *const keys[] = {"source",
	                                   "normalize",
	                                   "positive_ttl",
	                                   "negative_ttl",
	                                   "cache_max_entries",
	                                   "lookup_timeout",
	                                   "default_domain",
	                                   "file",
	                                   "redis",
	                                   "sql",
	                                   NULL};
	static const char *const file_keys[] = {"path", NULL};
	static const char *const redis_keys[] = {"url", "key_prefix", "pool_size", NULL};
	static const char *const sql_keys[] = {
	        "url", "query", "pool_size", "upsert_query", "delete_query", "channel", NULL};
	static const char *const sources[] = {"file", "redis", "sql", NULL};
	static const char *const normalize[] = {"none", "lowercase", NULL};
	const struct toml_value *t = get_table(l, root, "", "mapping");
	struct config *c = l->cfg;

	check_keys(l, t, "mapping", keys);
	int src = get_enum(l, t, "mapping", "source", sources, 0);
	c->mapping_source = xstrdup(sources[src]);
	c->mapping_source_line = line_of(t, "source");
	c->rules.normalize =
	        (enum normalize_mode)get_enum(l, t, "mapping", "normalize", normalize, 0);
	c->positive_ttl_ms = get_duration(l, t, "mapping", "positive_ttl", 600000);
	c->negative_ttl_ms = get_duration(l, t, "mapping", "negative_ttl", 30000);
	c->lookup_timeout_ms = get_duration(l, t, "mapping", "lookup_timeout", 5000);
	c->cache_max_entries =
	        (size_t)get_int(l, t, "mapping", "cache_max_entries", 1000000, 0, 100000000);
	c->default_domain = get_str(l, t, "mapping", "default_domain", NULL);
	if (c->default_domain) {
		for (const char *p = c->default_domain; *p; p++) {
			if (*p <= ' ' || *p == '@' || *p == '"' || *p == 0x7f) {
				errorf(l, line_of(t, "default_domain"), "mapping.default_domain",
				       "\"%s\" is not a domain name", c->default_domain);
				break;
			}
		}
	}
	c->rules.default_domain = c->default_domain;
	c->rules.master_separators = c->master_separators;

	const struct toml_value *f = get_table(l, t, "mapping", "file");
	const struct toml_value *r = get_table(l, t, "mapping", "redis");
	const struct toml_value *s = get_table(l, t, "mapping", "sql");
	check_keys(l, f, "mapping.file", file_keys);
	check_keys(l, r, "mapping.redis", redis_keys);
	check_keys(l, s, "mapping.sql", sql_keys);
	if (src == 0) {
		c->mapping_file = get_str(l, f, "mapping.file", "path", NULL);
		if (!c->mapping_file)
			errorf(l, f ? f->line : line_of(t, "source"), "mapping.file.path",
			       "missing: the mapping file (identifier destination per line)");
		else
			check_file(l, line_of(f, "path"), "mapping.file.path", c->mapping_file);
	} else {
		if (c->lookup_timeout_ms == 0)
			errorf(l, line_of(t, "lookup_timeout"), "mapping.lookup_timeout",
			       "must be more than 0 with source = \"%s\"", sources[src]);
		if (src == 1)
			load_redis(l, t, r);
		else
			load_sql(l, t, s);
	}
}

/* ---- [destination.*] ---- */

static bool is_ip_literal(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static const char *const forwarding_names[] = {"none", "proxy", "xclient", NULL};
static const char *const tls_names[] = {"plain", "starttls", "implicit", NULL};

static void load_endpoint(struct loader *l, struct cfg_destination *d, enum proto p,
                          const struct toml_value *t, const char *table)
{
	static const char *const keys[] = {"port", "tls", "forwarding", NULL};
	struct cfg_endpoint *e = &d->endpoint[p];
	char kb[256];

	check_keys(l, t, table, keys);
	e->present = true;
	e->line = t->line;
	if (!toml_get(t, "port"))
		errorf(l, t->line, kname(kb, sizeof(kb), table, "port"), "missing");
	e->port = (uint16_t)get_int(l, t, table, "port", 0, 1, 65535);
	if (!toml_get(t, "tls"))
		errorf(l, t->line, kname(kb, sizeof(kb), table, "tls"),
		       "missing (\"implicit\", \"starttls\" or \"plain\")");
	e->tls = (enum tls_mode)get_enum(l, t, table, "tls", tls_names, TLS_MODE_PLAIN);
	if (p == PROTO_HTTP && e->tls == TLS_MODE_STARTTLS)
		errorf(l, line_of(t, "tls"), kname(kb, sizeof(kb), table, "tls"),
		       "HTTP has no STARTTLS: use \"implicit\" (https) or \"plain\"");
	if (toml_get(t, "forwarding")) {
		e->has_forwarding = true;
		e->forwarding = (enum forwarding)get_enum(l, t, table, "forwarding",
		                                          forwarding_names, FORWARD_NONE);
	}
}

static void load_destination(struct loader *l, struct cfg_destination *d,
                             const struct toml_value *t, const char *table)
{
	static const char *const keys[] = {"host",
	                                   "tls_server_name",
	                                   "forwarding",
	                                   "proxy_protocol",
	                                   "proxy_protocol_version",
	                                   "forwarded",
	                                   "tls_allow_invalid_certs",
	                                   "tls_pinned_cert_sha256",
	                                   "tls_client_cert",
	                                   "tls_client_key",
	                                   "source_ips",
	                                   "hide_auth_errors",
	                                   "allow_plaintext_auth",
	                                   "login",
	                                   "protocol",
	                                   NULL};
	static const char *const logins[] = {"as-sent", "full-address", NULL};
	char kb[256];

	d->line = t->line;
	check_keys(l, t, table, keys);
	d->host = get_str(l, t, table, "host", NULL);
	if (!d->host)
		errorf(l, t->line, kname(kb, sizeof(kb), table, "host"), "missing");
	d->tls_server_name = get_str(l, t, table, "tls_server_name", NULL);
	/* the reference proxy defaults proxy_protocol to true; it only decides
	 * the forwarding when "forwarding" is not set */
	d->proxy_protocol = get_bool(l, t, table, "proxy_protocol", true);
	/* a destination with proxy_protocol = true and no forwarding key is
	 * announced with the PROXY protocol, as in the published sample */
	d->forwarding = (enum forwarding)get_enum(l, t, table, "forwarding", forwarding_names,
	                                          d->proxy_protocol ? FORWARD_PROXY : FORWARD_NONE);
	if (d->forwarding == FORWARD_PROXY && toml_get(t, "proxy_protocol") && !d->proxy_protocol)
		errorf(l, line_of(t, "proxy_protocol"),
		       kname(kb, sizeof(kb), table, "proxy_protocol"),
		       "false contradicts forwarding = \"proxy\"");
	d->proxy_protocol_version =
	        (unsigned)get_int(l, t, table, "proxy_protocol_version", 2, 1, 2);
	d->forwarded = get_bool(l, t, table, "forwarded", false);
	d->tls_allow_invalid_certs = get_bool(l, t, table, "tls_allow_invalid_certs", false);
	char *pin = get_str(l, t, table, "tls_pinned_cert_sha256", NULL);
	if (pin) {
		if (tls_parse_pin(pin, d->pin))
			d->has_pin = true;
		else
			errorf(l, line_of(t, "tls_pinned_cert_sha256"),
			       kname(kb, sizeof(kb), table, "tls_pinned_cert_sha256"),
			       "expected 64 hex digits (colons allowed), the SHA-256 of the "
			       "certificate's DER");
		free(pin);
	}
	d->tls_client_cert = get_str(l, t, table, "tls_client_cert", NULL);
	d->tls_client_key = get_str(l, t, table, "tls_client_key", NULL);
	if (!d->tls_client_cert != !d->tls_client_key)
		errorf(l, t->line, kname(kb, sizeof(kb), table, "tls_client_cert"),
		       "tls_client_cert and tls_client_key go together");
	check_file(l, line_of(t, "tls_client_cert"),
	           kname(kb, sizeof(kb), table, "tls_client_cert"), d->tls_client_cert);
	check_secret_file(l, line_of(t, "tls_client_key"),
	                  kname(kb, sizeof(kb), table, "tls_client_key"), d->tls_client_key);
	size_t n_src = 0;
	unsigned src_line = 0;
	char **src = get_str_array(l, t, table, "source_ips", &n_src, &src_line);
	if (n_src) {
		d->source_ips = xcalloc(n_src, sizeof(*d->source_ips));
		for (size_t i = 0; i < n_src; i++) {
			struct sockaddr_storage *ss = &d->source_ips[d->n_source_ips];
			memset(ss, 0, sizeof(*ss));
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
			if (inet_pton(AF_INET, src[i], &sin->sin_addr) == 1)
				sin->sin_family = AF_INET;
			else if (inet_pton(AF_INET6, src[i], &sin6->sin6_addr) == 1)
				sin6->sin6_family = AF_INET6;
			else {
				errorf(l, src_line, kname(kb, sizeof(kb), table, "source_ips"),
				       "\"%s\" is not an IP address", src[i]);
				continue;
			}
			d->n_source_ips++;
		}
	}
	free_str_array(src, n_src);
	d->hide_auth_errors = get_bool(l, t, table, "hide_auth_errors", false);
	d->allow_plaintext_auth = get_bool(l, t, table, "allow_plaintext_auth", false);
	d->login = (enum login_form)get_enum(l, t, table, "login", logins, LOGIN_AS_SENT);

	const struct toml_value *protos = get_table(l, t, table, "protocol");
	for (size_t i = 0; protos && i < protos->u.table.len; i++) {
		const struct toml_keyval *kv = &protos->u.table.items[i];
		char ptable[256];
		int p = -1;
		snprintf(ptable, sizeof(ptable), "%s.protocol.%s", table, kv->key);
		for (int j = 0; j < PROTO_COUNT; j++) {
			if (strcmp(kv->key, proto_names[j]) == 0)
				p = j;
		}
		if (p < 0) {
			errorf(l, kv->value->line, ptable,
			       "unknown protocol (imap, pop3, submission, managesieve, smtp, lmtp, "
			       "http)");
			continue;
		}
		if (kv->value->type != TOML_TABLE) {
			errorf(l, kv->value->line, ptable, "expected a table");
			continue;
		}
		load_endpoint(l, d, (enum proto)p, kv->value, ptable);
	}

	/* legs that need a name to verify against */
	bool any_tls = false;
	for (int p = 0; p < PROTO_COUNT; p++) {
		struct cfg_endpoint *e = &d->endpoint[p];
		if (!e->present)
			continue;
		if (e->tls != TLS_MODE_PLAIN)
			any_tls = true;
		/* credentials in clear text on the wire between us and the
		 * backend: only where the operator says the network is safe */
		bool carries_credentials = p != PROTO_SMTP && p != PROTO_LMTP;
		if (e->tls == TLS_MODE_PLAIN && carries_credentials && !d->allow_plaintext_auth)
			errorf(l, e->line, kname(kb, sizeof(kb), table, "allow_plaintext_auth"),
			       "protocol.%s uses tls = \"plain\", which would send passwords in "
			       "clear text to %s; use \"starttls\"/\"implicit\" or set "
			       "allow_plaintext_auth = true",
			       proto_names[p], d->host ? d->host : "the backend");
	}
	if (any_tls && d->host && is_ip_literal(d->host) && !d->tls_server_name && !d->has_pin &&
	    !d->tls_allow_invalid_certs)
		errorf(l, line_of(t, "host"), kname(kb, sizeof(kb), table, "tls_server_name"),
		       "missing: host is the IP address %s, so the backend certificate can only "
		       "be verified against tls_server_name (or pin it with "
		       "tls_pinned_cert_sha256)",
		       d->host);
}

static void load_destinations(struct loader *l, const struct toml_value *root)
{
	const struct toml_value *t = get_table(l, root, "", "destination");
	struct config *c = l->cfg;

	if (!t || t->u.table.len == 0) {
		errorf(l, t ? t->line : 0, "destination", "no destinations declared");
		return;
	}
	c->dests = xcalloc(t->u.table.len, sizeof(*c->dests));
	c->dest_names = xcalloc(t->u.table.len + 1, sizeof(*c->dest_names));
	for (size_t i = 0; i < t->u.table.len; i++) {
		const struct toml_keyval *kv = &t->u.table.items[i];
		char table[200];
		snprintf(table, sizeof(table), "destination.%s", kv->key);
		if (kv->value->type != TOML_TABLE) {
			errorf(l, kv->value->line, table, "expected a table");
			continue;
		}
		if (!name_ok(l, kv, table))
			continue;
		struct cfg_destination *d = &c->dests[c->n_dests];
		d->name = xstrdup(kv->key);
		c->dest_names[c->n_dests++] = d->name;
		load_destination(l, d, kv->value, table);
	}
}

/* ---- [listener.*] ---- */

static void load_listener(struct loader *l, struct cfg_listener *ls, const struct toml_value *t,
                          const char *table)
{
	static const char *const keys[] = {"protocol",
	                                   "bind",
	                                   "tls",
	                                   "proxy_protocol",
	                                   "proxy_trusted",
	                                   "max_connections",
	                                   "preauth_timeout",
	                                   "max_auth_attempts",
	                                   "forwarded",
	                                   "allow_plaintext_login",
	                                   NULL};
	static const char *const accepts[] = {"off", "optional", "required", NULL};
	char kb[256];
	unsigned bind_line = 0;

	ls->line = t->line;
	check_keys(l, t, table, keys);
	if (!toml_get(t, "protocol"))
		errorf(l, t->line, kname(kb, sizeof(kb), table, "protocol"), "missing");
	ls->protocol = (enum proto)get_enum(l, t, table, "protocol",
	                                    (const char *const[]){"imap", "pop3", "submission",
	                                                          "managesieve", "smtp", "lmtp",
	                                                          "http", NULL},
	                                    PROTO_IMAP);
	size_t nb = 0;
	char **binds = get_str_array(l, t, table, "bind", &nb, &bind_line);
	if (nb == 0)
		errorf(l, bind_line ? bind_line : t->line, kname(kb, sizeof(kb), table, "bind"),
		       "missing: at least one address:port to listen on");
	ls->binds = xcalloc(nb ? nb : 1, sizeof(*ls->binds));
	for (size_t i = 0; i < nb; i++) {
		struct cfg_bind *b = &ls->binds[ls->n_binds];
		if (!parse_sockaddr(binds[i], &b->addr, &b->len)) {
			errorf(l, bind_line, kname(kb, sizeof(kb), table, "bind"),
			       "\"%s\" is not ADDRESS:PORT (e.g. \"0.0.0.0:993\", \"[::]:993\")",
			       binds[i]);
			continue;
		}
		b->text = xstrdup(binds[i]);
		ls->n_binds++;
	}
	free_str_array(binds, nb);
	if (!toml_get(t, "tls"))
		errorf(l, t->line, kname(kb, sizeof(kb), table, "tls"),
		       "missing (\"implicit\", \"starttls\" or \"plain\")");
	ls->tls = (enum tls_mode)get_enum(l, t, table, "tls", tls_names, TLS_MODE_PLAIN);

	/* proxy_protocol: "off" | "optional" | "required"; true/false too */
	const struct toml_value *pp = toml_get(t, "proxy_protocol");
	if (pp && pp->type == TOML_BOOL)
		ls->proxy_protocol = pp->u.boolean ? PROXY_ACCEPT_REQUIRED : PROXY_ACCEPT_OFF;
	else
		ls->proxy_protocol = (enum proxy_accept)get_enum(l, t, table, "proxy_protocol",
		                                                 accepts, PROXY_ACCEPT_OFF);
	size_t nt = 0;
	unsigned trusted_line = 0;
	char **trusted = get_str_array(l, t, table, "proxy_trusted", &nt, &trusted_line);
	ls->proxy_trusted = xcalloc(nt ? nt : 1, sizeof(*ls->proxy_trusted));
	for (size_t i = 0; i < nt; i++) {
		if (!parse_cidr(trusted[i], &ls->proxy_trusted[ls->n_proxy_trusted]))
			errorf(l, trusted_line, kname(kb, sizeof(kb), table, "proxy_trusted"),
			       "\"%s\" is not an address or CIDR range", trusted[i]);
		else
			ls->n_proxy_trusted++;
	}
	free_str_array(trusted, nt);
	if (ls->proxy_protocol != PROXY_ACCEPT_OFF && ls->n_proxy_trusted == 0)
		errorf(l, pp ? pp->line : t->line, kname(kb, sizeof(kb), table, "proxy_trusted"),
		       "missing: accepting PROXY headers needs the CIDR ranges allowed to send "
		       "them");
	ls->max_connections = (unsigned)get_int(l, t, table, "max_connections", 8192, 1, 10000000);
	ls->preauth_timeout_ms = get_duration(l, t, table, "preauth_timeout", 30000);
	ls->max_auth_attempts = (unsigned)get_int(l, t, table, "max_auth_attempts", 3, 1, 100);
	/* "off": a client's own Forwarded / X-Forwarded-For are removed;
	 * "trust": kept, and ours appended (a balancer in front of us) */
	static const char *const forwarded_modes[] = {"off", "trust", NULL};
	if (toml_get(t, "forwarded")) {
		int fm = get_enum(l, t, table, "forwarded", forwarded_modes, 0);
		ls->forwarded = xstrdup(forwarded_modes[fm]);
		if (ls->protocol != PROTO_HTTP)
			errorf(l, line_of(t, "forwarded"),
			       kname(kb, sizeof(kb), table, "forwarded"),
			       "applies to http listeners only");
	}
	if (ls->protocol == PROTO_HTTP && ls->tls == TLS_MODE_STARTTLS)
		errorf(l, line_of(t, "tls"), kname(kb, sizeof(kb), table, "tls"),
		       "HTTP has no STARTTLS: use \"implicit\" (https) or \"plain\"");
	ls->allow_plaintext_login = get_bool(l, t, table, "allow_plaintext_login", false);
}

static void load_listeners(struct loader *l, const struct toml_value *root)
{
	const struct toml_value *t = get_table(l, root, "", "listener");
	struct config *c = l->cfg;

	if (!t || t->u.table.len == 0) {
		errorf(l, t ? t->line : 0, "listener", "no listeners declared");
		return;
	}
	c->listeners = xcalloc(t->u.table.len, sizeof(*c->listeners));
	for (size_t i = 0; i < t->u.table.len; i++) {
		const struct toml_keyval *kv = &t->u.table.items[i];
		char table[200];
		snprintf(table, sizeof(table), "listener.%s", kv->key);
		if (kv->value->type != TOML_TABLE) {
			errorf(l, kv->value->line, table, "expected a table");
			continue;
		}
		if (!name_ok(l, kv, table))
			continue;
		struct cfg_listener *ls = &c->listeners[c->n_listeners++];
		ls->name = xstrdup(kv->key);
		load_listener(l, ls, kv->value, table);
	}
}

/* ---- [capabilities.*], [oauth], [[http.route]] ---- */

static void load_caps(struct loader *l, struct cfg_caps *cc, enum proto p,
                      const struct toml_value *t, const char *table)
{
	static const char *const imap_keys[] = {"advertise", "sasl", "allow_plain_auth_without_tls",
	                                        "banner", NULL};
	static const char *const pop3_keys[] = {"sasl", "allow_plain_auth_without_tls", "banner",
	                                        NULL};
	static const char *const sub_keys[] = {"ehlo", "sasl", "allow_plain_auth_without_tls",
	                                       "banner", NULL};
	static const char *const sieve_keys[] = {"sieve", "sasl", "allow_plain_auth_without_tls",
	                                         "implementation", NULL};
	static const char *const *const keys_of[PROTO_COUNT] = {
	        [PROTO_IMAP] = imap_keys,
	        [PROTO_POP3] = pop3_keys,
	        [PROTO_SUBMISSION] = sub_keys,
	        [PROTO_MANAGESIEVE] = sieve_keys,
	};
	static const char *const advertise_key[PROTO_COUNT] = {
	        [PROTO_IMAP] = "advertise",
	        [PROTO_SUBMISSION] = "ehlo",
	        [PROTO_MANAGESIEVE] = "sieve",
	};
	static const char *const sasl_names[] = {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", NULL};
	char kb[256];

	check_keys(l, t, table, keys_of[p]);
	if (advertise_key[p] && toml_get(t, advertise_key[p])) {
		cc->has_advertise = true;
		cc->advertise =
		        get_str_array(l, t, table, advertise_key[p], &cc->n_advertise, NULL);
	}
	if (toml_get(t, "sasl")) {
		unsigned line = 0;
		cc->has_sasl = true;
		cc->sasl = get_str_array(l, t, table, "sasl", &cc->n_sasl, &line);
		for (size_t i = 0; i < cc->n_sasl; i++) {
			bool known = false;
			for (size_t j = 0; sasl_names[j]; j++)
				known |= strcasecmp(cc->sasl[i], sasl_names[j]) == 0;
			if (!known)
				errorf(l, line, kname(kb, sizeof(kb), table, "sasl"),
				       "\"%s\" is not a mechanism the proxy can read a login from "
				       "(PLAIN, LOGIN, XOAUTH2, OAUTHBEARER)",
				       cc->sasl[i]);
		}
	}
	cc->allow_plain_auth_without_tls =
	        get_bool(l, t, table, "allow_plain_auth_without_tls", false);
	cc->banner = get_str(l, t, table, "banner", NULL);
	if (cc->banner && strpbrk(cc->banner, "\r\n"))
		errorf(l, line_of(t, "banner"), kname(kb, sizeof(kb), table, "banner"),
		       "must be one line");
	cc->implementation = get_str(l, t, table, "implementation", NULL);
}

static void load_capabilities(struct loader *l, const struct toml_value *root)
{
	const struct toml_value *t = get_table(l, root, "", "capabilities");
	struct config *c = l->cfg;

	for (size_t i = 0; t && i < t->u.table.len; i++) {
		const struct toml_keyval *kv = &t->u.table.items[i];
		char table[200];
		int p = -1;
		snprintf(table, sizeof(table), "capabilities.%s", kv->key);
		for (int j = PROTO_IMAP; j <= PROTO_MANAGESIEVE; j++) {
			if (strcmp(kv->key, proto_names[j]) == 0)
				p = j;
		}
		if (p < 0) {
			errorf(l, kv->value->line, table,
			       "unknown protocol (imap, pop3, submission, managesieve)");
			continue;
		}
		if (kv->value->type != TOML_TABLE) {
			errorf(l, kv->value->line, table, "expected a table");
			continue;
		}
		load_caps(l, &c->caps[p], (enum proto)p, kv->value, table);
	}
}

static void load_oauth(struct loader *l, const struct toml_value *root)
{
	static const char *const keys[] = {"jwt_username_claim", NULL};
	const struct toml_value *t = get_table(l, root, "", "oauth");

	check_keys(l, t, "oauth", keys);
	l->cfg->jwt_username_claim = get_str(l, t, "oauth", "jwt_username_claim", "email");
}

/* Compile [[http.route]] as the proxy will, to report every bad rule with
 * its line; the router itself is built again by whoever serves HTTP. */
static void check_http_routes(struct loader *l)
{
	bool full = l->errused >= l->errlen;
	char none[1], *err = full ? none : l->err + l->errused;
	struct http_router *r = http_router_build(l->cfg, err, full ? 1 : l->errlen - l->errused);
	unsigned lines = 0;

	if (r) {
		http_router_free(r);
		return;
	}
	for (const char *p = err; *p; p++)
		lines += *p == '\n';
	l->nerrors += lines ? lines : 1; /* an error that did not fit still counts */
	if (!full)
		l->errused += strlen(err);
}

static void load_http(struct loader *l, const struct toml_value *root)
{
	static const char *const http_keys[] = {
	        "body_extract_cap",       "max_head_size", "relay_idle", "keepalive_timeout",
	        "max_keepalive_requests", "route",         NULL};
	static const char *const route_keys[] = {"match", "destination", "extract", "fallback",
	                                         NULL};
	static const char *const extract_keys[] = {"from", "regex", "param", "header", NULL};
	const struct toml_value *t = get_table(l, root, "", "http");
	const struct toml_value *routes;
	struct config *c = l->cfg;
	unsigned nerrors;

	check_keys(l, t, "http", http_keys);
	c->http_body_extract_cap =
	        (size_t)get_int(l, t, "http", "body_extract_cap", 65536, 0, 16 * 1024 * 1024);
	c->http_max_head_size =
	        (size_t)get_int(l, t, "http", "max_head_size", 65536, 1024, 16 * 1024 * 1024);
	c->http_relay_idle_ms = get_duration(l, t, "http", "relay_idle", 300000);
	c->http_keepalive_timeout_ms = get_duration(l, t, "http", "keepalive_timeout", 60000);
	c->http_max_keepalive_requests =
	        (unsigned)get_int(l, t, "http", "max_keepalive_requests", 1000, 0, 100000000);
	routes = get_typed(l, t, "http", "route", TOML_ARRAY);
	if (!routes)
		return;
	nerrors = l->nerrors;
	c->http_routes = xcalloc(routes->u.array.len, sizeof(*c->http_routes));
	for (size_t i = 0; i < routes->u.array.len; i++) {
		const struct toml_value *r = routes->u.array.items[i];
		if (r->type != TOML_TABLE) {
			errorf(l, r->line, "http.route", "expected a table ([[http.route]])");
			continue;
		}
		struct cfg_http_route *hr = &c->http_routes[c->n_http_routes++];
		hr->line = r->line;
		check_keys(l, r, "http.route", route_keys);
		hr->match = get_str(l, r, "http.route", "match", NULL);
		hr->destination = get_str(l, r, "http.route", "destination", NULL);
		hr->fallback = get_str(l, r, "http.route", "fallback", NULL);
		const struct toml_value *ex = get_table(l, r, "http.route", "extract");
		check_keys(l, ex, "http.route.extract", extract_keys);
		hr->extract_from = get_str(l, ex, "http.route.extract", "from", NULL);
		hr->extract_regex = get_str(l, ex, "http.route.extract", "regex", NULL);
		hr->extract_param = get_str(l, ex, "http.route.extract", "param", NULL);
		hr->extract_header = get_str(l, ex, "http.route.extract", "header", NULL);
	}
	/* what the rules mean (globs, regexes, destinations) is checked by
	 * compiling them, once the keys themselves were well typed */
	if (l->nerrors == nerrors)
		check_http_routes(l);
}

/* ---- [admin] ---- */

static char *read_token_file(struct loader *l, unsigned line, const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL; /* check_file reports it */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		errorf(l, line, "admin.bearer_token_file", "%s: %s", path, strerror(errno));
		return NULL;
	}
	buf[n] = '\0';
	/* one line; trailing newline and spaces are not part of the token */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
	                 buf[n - 1] == '\t'))
		buf[--n] = '\0';
	char *tok = xstrdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return tok;
}

static void load_admin(struct loader *l, const struct toml_value *root)
{
	static const char *const keys[] = {
	        "bind", "tls",           "bearer_token_file", "bearer_token",     "cert",
	        "key",  "min_token_len", "lockout_threshold", "lockout_duration", NULL};
	const struct toml_value *t = get_table(l, root, "", "admin");
	struct config *c = l->cfg;

	if (!t)
		return;
	c->admin_enabled = true;
	check_keys(l, t, "admin", keys);
	char *bind = get_str(l, t, "admin", "bind", NULL);
	if (!bind)
		errorf(l, t->line, "admin.bind",
		       "missing: the address:port of the admin API (e.g. \"127.0.0.1:9443\")");
	else if (!parse_sockaddr(bind, &c->admin_bind.addr, &c->admin_bind.len))
		errorf(l, line_of(t, "bind"), "admin.bind", "\"%s\" is not ADDRESS:PORT", bind);
	c->admin_bind.text = bind;
	int tls = get_enum(l, t, "admin", "tls", tls_names, TLS_MODE_IMPLICIT);
	if (tls != TLS_MODE_IMPLICIT)
		errorf(l, line_of(t, "tls"), "admin.tls",
		       "must be \"implicit\": the admin API carries the bearer token and "
		       "changes routing, it is never served in clear text");
	c->admin_cert = get_str(l, t, "admin", "cert", NULL);
	c->admin_key = get_str(l, t, "admin", "key", NULL);
	if (!c->admin_cert != !c->admin_key)
		errorf(l, t->line, "admin.cert", "cert and key go together");
	check_file(l, line_of(t, "cert"), "admin.cert", c->admin_cert);
	check_secret_file(l, line_of(t, "key"), "admin.key", c->admin_key);
	c->admin_min_token_len = (unsigned)get_int(l, t, "admin", "min_token_len", 32, 1, 4096);
	c->admin_lockout_threshold =
	        (unsigned)get_int(l, t, "admin", "lockout_threshold", 5, 0, 1000000);
	c->admin_lockout_duration_ms = get_duration(l, t, "admin", "lockout_duration", 300000);

	/* the token: file, inline, or environment (ours, then the reference
	 * proxy's variable name) */
	c->admin_token_file = get_str(l, t, "admin", "bearer_token_file", NULL);
	unsigned token_line = line_of(t, "bearer_token_file");
	const char *token_key = "admin.bearer_token_file";
	/* the environment wins over the file, as in the reference proxy: an
	 * orchestrator can inject a secret without rewriting the config */
	const char *env_token = getenv("MAILSPLICE_ADMIN_TOKEN");
	if (!env_token)
		env_token = getenv("PROXY_ADMIN_TOKEN");
	if (env_token && *env_token) {
		c->admin_token = xstrdup(env_token);
		token_key = getenv("MAILSPLICE_ADMIN_TOKEN") ? "MAILSPLICE_ADMIN_TOKEN"
		                                             : "PROXY_ADMIN_TOKEN";
		token_line = t->line;
	} else if (c->admin_token_file) {
		check_secret_file(l, token_line, token_key, c->admin_token_file);
		c->admin_token = read_token_file(l, token_line, c->admin_token_file);
	} else if (toml_get(t, "bearer_token")) {
		c->admin_token = get_str(l, t, "admin", "bearer_token", NULL);
		token_line = line_of(t, "bearer_token");
		token_key = "admin.bearer_token";
	} else {
		errorf(l, t->line, "admin.bearer_token_file",
		       "missing: set bearer_token_file, bearer_token or the environment "
		       "variable PROXY_ADMIN_TOKEN");
	}
	if (c->admin_token && strlen(c->admin_token) < c->admin_min_token_len)
		errorf(l, token_line, token_key,
		       "the token is %zu characters long, shorter than min_token_len = %u",
		       strlen(c->admin_token), c->admin_min_token_len);
}

/* ---- cross-table rules ---- */

static void validate(struct loader *l, const struct toml_value *root)
{
	struct config *c = l->cfg;
	const struct toml_value *routing = toml_get(root, "routing");
	char kb[256];

	c->default_dest = -1;
	c->passthrough_dest = -1;
	if (c->default_destination) {
		c->default_dest = config_dest_index(c, c->default_destination);
		if (c->default_dest < 0)
			errorf(l, line_of(routing, "default_destination"),
			       "routing.default_destination", "no [destination.%s] is declared",
			       c->default_destination);
	}
	if (c->smtp_passthrough_destination) {
		c->passthrough_dest = config_dest_index(c, c->smtp_passthrough_destination);
		if (c->passthrough_dest < 0)
			errorf(l, line_of(routing, "smtp_passthrough_destination"),
			       "routing.smtp_passthrough_destination",
			       "no [destination.%s] is declared", c->smtp_passthrough_destination);
	}
	if (c->n_certs == 0) {
		for (size_t i = 0; i < c->n_listeners; i++) {
			if (c->listeners[i].tls != TLS_MODE_PLAIN) {
				errorf(l, c->listeners[i].line, "tls.certificate",
				       "listener.%s uses TLS but no [tls.certificate.*] is "
				       "declared",
				       c->listeners[i].name);
				break;
			}
		}
	}
	for (size_t i = 0; i < c->n_listeners; i++) {
		struct cfg_listener *ls = &c->listeners[i];
		snprintf(kb, sizeof(kb), "listener.%s", ls->name);
		if (ls->protocol == PROTO_SMTP || ls->protocol == PROTO_LMTP) {
			/* no login on port 25: everything goes to one place,
			 * and STARTTLS is negotiated end to end with it */
			if (ls->tls == TLS_MODE_STARTTLS)
				errorf(l,
				       line_of(toml_get(toml_get(root, "listener"), ls->name),
				               "tls"),
				       kb,
				       "an smtp pass-through listener cannot be tls = \"starttls\" "
				       "(the client negotiates STARTTLS with the backend itself); "
				       "use \"plain\"");
			if (c->passthrough_dest < 0) {
				if (!c->smtp_passthrough_destination)
					errorf(l, ls->line, "routing.smtp_passthrough_destination",
					       "missing: listener.%s (protocol %s) forwards every "
					       "session to it",
					       ls->name, proto_name(ls->protocol));
			} else if (!c->dests[c->passthrough_dest].endpoint[ls->protocol].present) {
				errorf(l, c->dests[c->passthrough_dest].line,
				       c->dests[c->passthrough_dest].name,
				       "destination.%s has no protocol.%s, which listener.%s needs",
				       c->dests[c->passthrough_dest].name, proto_name(ls->protocol),
				       ls->name);
			}
			continue;
		}
		if (c->default_dest >= 0 &&
		    !c->dests[c->default_dest].endpoint[ls->protocol].present) {
			struct cfg_destination *d = &c->dests[c->default_dest];
			errorf(l, d->line, kname(kb, sizeof(kb), "destination", d->name),
			       "the default destination has no [destination.%s.protocol.%s], "
			       "which listener.%s needs",
			       d->name, proto_name(ls->protocol), ls->name);
		}
	}
	if (c->admin_enabled && !c->admin_cert && c->n_certs == 0)
		errorf(l, 0, "admin",
		       "TLS is mandatory for the admin API: set admin.cert/admin.key or declare "
		       "a [tls.certificate.*]");
	if (!c->node_name) {
		/* unique per host and admin port, stable across restarts */
		char name[NODE_NAME_MAX + 1];
		if (c->admin_enabled && c->admin_bind.text)
			snprintf(name, sizeof(name), "%s/%s", c->hostname, c->admin_bind.text);
		else
			snprintf(name, sizeof(name), "%s", c->hostname);
		for (char *p = name; *p; p++)
			if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
				*p = '_';
		c->node_name = xstrdup(name[0] ? name : "mailsplice");
	}
}

/* ---- entry points ---- */

int config_dest_index(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_dests; i++) {
		if (strcmp(cfg->dests[i].name, name) == 0)
			return (int)i;
	}
	return -1;
}

enum forwarding config_forwarding(const struct cfg_destination *d, enum proto p)
{
	const struct cfg_endpoint *e = &d->endpoint[p];
	return e->has_forwarding ? e->forwarding : d->forwarding;
}

static bool read_config_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f) {
		snprintf(err, errlen, "%s: %s\n", path, strerror(errno));
		return false;
	}
	for (;;) {
		if (n + 4096 > cap) {
			cap = cap ? cap * 2 : 16384;
			if (cap > 16 * 1024 * 1024) {
				snprintf(err, errlen, "%s: larger than 16 MiB\n", path);
				goto fail;
			}
			char *p = realloc(buf, cap);
			if (!p)
				goto fail;
			buf = p;
		}
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s\n", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	*data = buf;
	*len = n;
	return true;
fail:
	free(buf);
	fclose(f);
	return false;
}

struct config *config_load(const char *path, bool check_files, char *err, size_t errlen)
{
	static const char *const top_keys[] = {
	        "server",       "tls",   "routing", "mapping", "destination", "listener",
	        "capabilities", "oauth", "http",    "admin",   NULL};
	struct config *c = xcalloc(1, sizeof(*c));
	struct loader l = {
	        .file = path, .cfg = c, .check_files = check_files, .err = err, .errlen = errlen};
	struct toml_error terr;
	struct toml_value *root;
	char *data;
	size_t len;

	err[0] = '\0';
	c->path = xstrdup(path);
	if (!read_config_file(path, &data, &len, err, errlen)) {
		config_free(c);
		return NULL;
	}
	root = toml_parse(data, len, &terr);
	free(data);
	if (!root) {
		snprintf(err, errlen, "%s:%u: %s\n", path, terr.line, terr.msg);
		config_free(c);
		return NULL;
	}
	check_keys(&l, root, "", top_keys);
	load_server(&l, root);
	load_tls(&l, root);
	load_routing(&l, root);
	load_mapping(&l, root);
	load_destinations(&l, root);
	load_listeners(&l, root);
	load_capabilities(&l, root);
	load_oauth(&l, root);
	load_http(&l, root);
	load_admin(&l, root);
	validate(&l, root);
	toml_free(root);
	if (l.nerrors) {
		config_free(c);
		return NULL;
	}
	return c;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->hostname);
	free(c->user);
	free(c->group);
	free(c->control_socket);
	for (size_t i = 0; i < c->n_certs; i++) {
		free(c->certs[i].id);
		free(c->certs[i].cert);
		free(c->certs[i].key);
		free_str_array(c->certs[i].subjects, c->certs[i].n_subjects);
	}
	free(c->certs);
	free_str_array(c->tls_disable_ciphers, c->n_tls_disable_ciphers);
	free(c->default_destination);
	free(c->smtp_passthrough_destination);
	free(c->mapping_source);
	free(c->default_domain);
	free(c->master_separators);
	free(c->mapping_file);
	if (c->store_url) {
		OPENSSL_cleanse(c->store_url, strlen(c->store_url)); /* may hold a password */
		free(c->store_url);
	}
	free(c->redis_key_prefix);
	free(c->sql_query);
	free(c->sql_upsert_query);
	free(c->sql_delete_query);
	free(c->bus_channel);
	free(c->node_name);
	for (size_t i = 0; i < c->n_dests; i++) {
		struct cfg_destination *d = &c->dests[i];
		free(d->name);
		free(d->host);
		free(d->addrs);
		free(d->tls_server_name);
		free(d->tls_client_cert);
		free(d->tls_client_key);
		free(d->source_ips);
	}
	free(c->dests);
	free(c->dest_names);
	for (size_t i = 0; i < c->n_listeners; i++) {
		struct cfg_listener *ls = &c->listeners[i];
		free(ls->name);
		for (size_t j = 0; j < ls->n_binds; j++)
			free(ls->binds[j].text);
		free(ls->binds);
		free(ls->proxy_trusted);
		free(ls->forwarded);
	}
	free(c->listeners);
	for (int p = 0; p < PROTO_COUNT; p++) {
		free_str_array(c->caps[p].advertise, c->caps[p].n_advertise);
		free_str_array(c->caps[p].sasl, c->caps[p].n_sasl);
		free(c->caps[p].banner);
		free(c->caps[p].implementation);
	}
	free(c->jwt_username_claim);
	for (size_t i = 0; i < c->n_http_routes; i++) {
		free(c->http_routes[i].match);
		free(c->http_routes[i].destination);
		free(c->http_routes[i].extract_from);
		free(c->http_routes[i].extract_regex);
		free(c->http_routes[i].extract_param);
		free(c->http_routes[i].extract_header);
		free(c->http_routes[i].fallback);
	}
	free(c->http_routes);
	free(c->admin_bind.text);
	free(c->admin_cert);
	free(c->admin_key);
	free(c->admin_token_file);
	if (c->admin_token) {
		OPENSSL_cleanse(c->admin_token, strlen(c->admin_token));
		free(c->admin_token);
	}
	free(c);
}
