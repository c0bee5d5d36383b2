/*
 * The typed configuration.
 *
 * The TOML schema is the one the Stalwart migration proxy publishes (same
 * tables, keys, meanings and defaults), so its sample files load unchanged,
 * plus a few extensions of ours, documented in docs/configuration.md.
 *
 * Every error a user can cause is reported as "FILE:LINE: key: what is
 * wrong" and makes config_load() fail; main() exits with status 2.
 */
#ifndef MAILSPLICE_CONFIG_H
#define MAILSPLICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mapping.h"
#include "util.h"

enum proto {
	PROTO_IMAP,
	PROTO_POP3,
	PROTO_SUBMISSION,
	PROTO_MANAGESIEVE,
	PROTO_SMTP,
	PROTO_LMTP,
	PROTO_HTTP,
	PROTO_COUNT,
};

const char *proto_name(enum proto p);

enum tls_mode {
	TLS_MODE_PLAIN,
	TLS_MODE_STARTTLS,
	TLS_MODE_IMPLICIT,
};

const char *tls_mode_name(enum tls_mode m);

/* How a destination learns the real client address. */
enum forwarding {
	FORWARD_NONE,    /* not at all */
	FORWARD_PROXY,   /* PROXY protocol header */
	FORWARD_XCLIENT, /* XCLIENT (SMTP, POP3, ManageSieve) and IMAP ID */
};

const char *forwarding_name(enum forwarding f);

/* Whether a listener accepts a PROXY header from a load balancer. */
enum proxy_accept {
	PROXY_ACCEPT_OFF,
	PROXY_ACCEPT_OPTIONAL,
	PROXY_ACCEPT_REQUIRED,
};

enum data_path_mode {
	DATA_PATH_AUTO,
	DATA_PATH_SOCKMAP,
	DATA_PATH_SPLICE,
	DATA_PATH_USERSPACE,
};

const char *data_path_mode_name(enum data_path_mode m);

/* What user name is replayed to a destination. */
enum login_form {
	LOGIN_AS_SENT,      /* exactly what the client sent */
	LOGIN_FULL_ADDRESS, /* the canonical account (local@default_domain) */
};

struct cfg_bind {
	struct sockaddr_storage addr;
	socklen_t len;
	char *text;
};

struct cfg_listener {
	char *name;
	unsigned line;
	enum proto protocol;
	struct cfg_bind *binds;
	size_t n_binds;
	enum tls_mode tls;
	enum proxy_accept proxy_protocol;
	struct cidr *proxy_trusted;
	size_t n_proxy_trusted;
	unsigned max_connections;
	uint64_t preauth_timeout_ms;
	unsigned max_auth_attempts;
	char *forwarded;            /* http listeners only */
	bool allow_plaintext_login; /* LOGIN/AUTH before STARTTLS */
};

struct cfg_endpoint {
	bool present;
	unsigned line;
	uint16_t port;
	enum tls_mode tls;
	bool has_forwarding; /* per-protocol override of the destination's */
	enum forwarding forwarding;
};

struct cfg_destination {
	char *name;
	unsigned line;
	char *host;
	struct sockaddr_storage *addrs; /* resolved at load */
	size_t n_addrs;
	char *tls_server_name;
	enum forwarding forwarding;
	bool proxy_protocol;
	unsigned proxy_protocol_version; /* 1 or 2 */
	bool forwarded;
	bool tls_allow_invalid_certs;
	bool has_pin;
	uint8_t pin[32];
	char *tls_client_cert, *tls_client_key;
	struct sockaddr_storage *source_ips;
	size_t n_source_ips;
	bool hide_auth_errors;
	bool allow_plaintext_auth;
	enum login_form login;
	struct cfg_endpoint endpoint[PROTO_COUNT];
};

struct cfg_cert {
	char *id;
	unsigned line;
	char *cert, *key;
	char **subjects; /* SNI names; empty: taken from the certificate */
	size_t n_subjects;
	bool is_default;
};

/* [capabilities.<protocol>] */
struct cfg_caps {
	char **advertise; /* IMAP capabilities / SMTP EHLO keywords / Sieve SIEVE */
	size_t n_advertise;
	bool has_advertise;
	char **sasl; /* mechanisms offered to clients */
	size_t n_sasl;
	bool has_sasl;
	bool allow_plain_auth_without_tls;
	char *banner;
	char *implementation; /* ManageSieve IMPLEMENTATION */
};

struct cfg_http_route {
	unsigned line;
	char *match;
	char *destination; /* pinned destination, or NULL */
	char *extract_from;
	char *extract_regex;
	char *extract_param, *extract_header;
	char *fallback;
};

struct config {
	char *path; /* the file we loaded */

	/* [server] */
	unsigned threads;
	char *hostname;
	uint64_t shutdown_grace_ms;
	int log_level; /* enum log_level */
	enum data_path_mode data_path;
	uint64_t backend_timeout_ms;
	unsigned backend_connect_retries;
	unsigned host_down_threshold; /* consecutive failures; 0 disables */
	uint64_t host_down_cooldown_ms;
	unsigned host_down_min_clients; /* distinct clients that must fail */
	uint64_t bridge_idle_ms;        /* idle limit after login */
	unsigned proxy_ttl;             /* hop limit announced to backends */
	size_t max_line_length;
	size_t max_literal_size;
	uint32_t kernel_queue_limit; /* bytes per direction (sockmap) */
	uint32_t splice_pipe_max;    /* bytes: the largest pipe a direction grows to */
	char *user, *group;
	/* Unix socket a successor connects to for the hand-over (--upgrade);
	 * "" = none (docs/upgrade.md) */
	char *control_socket;

	/* [tls.*] */
	struct cfg_cert *certs;
	size_t n_certs;
	int tls_min_version;
	bool tls_ignore_client_order;
	char **tls_disable_ciphers;
	size_t n_tls_disable_ciphers;

	/* [routing] */
	char *default_destination;
	char *smtp_passthrough_destination;
	int default_dest, passthrough_dest; /* indexes, -1 if none */

	/* [mapping] */
	char *mapping_source; /* "file" | "redis" | "sql" */
	unsigned mapping_source_line;
	struct account_rules rules;
	char *default_domain;
	char *master_separators; /* [routing] master_user_separators, one char each */
	uint64_t positive_ttl_ms, negative_ttl_ms, lookup_timeout_ms;
	size_t cache_max_entries;
	char *mapping_file;
	/* [mapping.redis] / [mapping.sql]: the remote store of source */
	char *store_url;
	char *redis_key_prefix;
	char *sql_query, *sql_upsert_query, *sql_delete_query;
	char *bus_channel; /* Redis: key_prefix + "events"; sql: [mapping.sql] channel */
	unsigned store_pool_size;
	/* [server] node_name: this node on the fleet bus */
	char *node_name;

	/* [destination.*], [listener.*] */
	struct cfg_destination *dests;
	size_t n_dests;
	const char **dest_names;
	struct cfg_listener *listeners;
	size_t n_listeners;

	/* [capabilities.*] */
	struct cfg_caps caps[PROTO_COUNT];

	/* [oauth] */
	char *jwt_username_claim;

	/* [http] */
	size_t http_body_extract_cap, http_max_head_size;
	uint64_t http_relay_idle_ms, http_keepalive_timeout_ms;
	unsigned http_max_keepalive_requests;
	struct cfg_http_route *http_routes;
	size_t n_http_routes;

	/* [admin] */
	bool admin_enabled;
	struct cfg_bind admin_bind;
	char *admin_cert, *admin_key;
	char *admin_token_file;
	char *admin_token; /* the token itself, loaded */
	unsigned admin_min_token_len;
	unsigned admin_lockout_threshold;
	uint64_t admin_lockout_duration_ms;
};

/* Load and validate. On failure returns NULL and writes every error (one per
 * line, "FILE:LINE: key: message") to err. check_files: also verify that
 * referenced files exist and are readable. */
struct config *config_load(const char *path, bool check_files, char *err, size_t errlen);
void config_free(struct config *cfg);

/* Index of a destination by name, or -1. */
int config_dest_index(const struct config *cfg, const char *name);

/* The forwarding in force for one destination and protocol. */
enum forwarding config_forwarding(const struct cfg_destination *d, enum proto p);

#endif
