/*
 * Remote mapping stores: Redis (hiredis' async API) and PostgreSQL
 * (libpq's asynchronous calls), both on libevent.
 *
 *   struct store       one per daemon: settings, state, counters (thread-safe)
 *   struct store_loop  one per event loop (each worker, and the main thread
 *                      for the admin API and the bus): its own connections,
 *                      so a login's lookup never leaves its thread
 *
 * pool_size is the number of command connections of one daemon, spread
 * evenly over its event loops (workers + the main thread), at least one
 * each; the main loop adds one connection for the bus subscription (Redis
 * SUBSCRIBE, PostgreSQL LISTEN). Redis connections pipeline; a PostgreSQL
 * connection runs one statement at a time and requests queue per loop.
 *
 * No call ever blocks the loop: host names are resolved with evdns before
 * a connection is opened (hiredis 0.14 and libpq would call getaddrinfo),
 * connection attempts and requests are bounded by timers, and a connection
 * that stops answering is dropped and reopened with a bounded, jittered
 * backoff. A request either completes once through its callback or is
 * cancelled by its owner, never both.
 */
#ifndef MAILSPLICE_STORE_H
#define MAILSPLICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

enum store_kind {
	STORE_FILE,
	STORE_REDIS,
	STORE_SQL,
};

const char *store_kind_name(enum store_kind k);

/* ---- URLs (pure, bounded: a parser for the fuzzer) ----
 *
 * redis: redis://[[user]:password@]host[:port][/db][?db=N&password=P&user=U]
 *        unix:///path/redis.sock[?db=N&password=P&user=U]  (also redis+unix://)
 * sql:   postgres://... or postgresql://... as libpq reads it (RFC 3986,
 *        several hosts separated by commas, parameters in the query); we
 *        only take the hosts out of it, to resolve names without blocking.
 */
#define STORE_URL_HOSTS    8
#define STORE_URL_HOST_MAX 255
#define STORE_URL_MAX      4096

struct store_url {
	enum store_kind kind;
	size_t n_hosts; /* 0: the library's default (PostgreSQL: its unix socket) */
	char host[STORE_URL_HOSTS][STORE_URL_HOST_MAX + 1]; /* decoded, no brackets */
	uint16_t port[STORE_URL_HOSTS];                     /* 0: default */
	/* redis only */
	bool unix_socket;
	char path[256]; /* the socket */
	char user[128], password[256];
	int db; /* SELECT; 0 = the default database */
};

/* On error returns false and err holds what is wrong, naming the supported
 * schemes when the scheme is the problem. The URL itself is never copied
 * into err (it may carry a password). */
bool store_url_parse(enum store_kind kind, const char *url, struct store_url *out, char *err,
                     size_t errlen);
/* Whether a host is an IP literal or a unix socket path (needs no DNS). */
bool store_host_is_numeric(const char *host);
/* key_prefix + account into out; false if it does not fit. */
bool store_redis_key(const char *prefix, const char *account, char *out, size_t outlen);

/* ---- the runtime ---- */

struct store;
struct store_loop;
struct store_req;
struct evdns_base;

struct store_settings {
	enum store_kind kind; /* STORE_REDIS or STORE_SQL */
	const char *url;
	const char *key_prefix;   /* redis */
	const char *query;        /* sql: $1 = account */
	const char *upsert_query; /* sql: $1 = account, $2 = destination; NULL: read-only */
	const char *delete_query; /* sql: $1 = account; NULL: read-only */
	const char *channel;      /* the bus: Redis channel / PostgreSQL LISTEN channel */
	const char *node_name;    /* client name / application_name */
	unsigned pool_size;
	size_t n_loops; /* event loops sharing pool_size */
	uint64_t lookup_timeout_ms;
};

enum store_status {
	STORE_FOUND,  /* a value (GET) */
	STORE_ABSENT, /* no value: nil, no row, NULL or "" (as the reference) */
	STORE_DONE,   /* a write or publish succeeded; count says how many */
	STORE_ERROR,  /* error says why; the store may be down */
};

struct store_result {
	enum store_status status;
	const char *value; /* STORE_FOUND: NUL-terminated */
	size_t value_len;
	long long count; /* DEL: keys removed; SQL: rows affected; PUBLISH: receivers */
	const char *error;
	uint64_t latency_us; /* from sending to the answer */
};

typedef void (*store_done_fn)(void *arg, const struct store_result *res);

/* What the bus connection reports (main loop only). */
struct store_bus_hooks {
	void (*message)(void *arg, const char *data, size_t len);
	/* subscribed (again): events may have been missed before */
	void (*subscribed)(void *arg);
	void (*lost)(void *arg, const char *why);
	void *arg;
};

struct store *store_new(const struct store_settings *set, char *err, size_t errlen);
void store_free(struct store *st);
enum store_kind store_kind(const struct store *st);
/* sql without upsert_query/delete_query answers writes with 501 */
bool store_writable(const struct store *st);
void store_set_bus_hooks(struct store *st, const struct store_bus_hooks *hooks);
/* Drop the bus subscription and make a new one (main thread). */
void store_bus_restart(struct store *st, const char *why);

/* Open this loop's connections (asynchronously). dns: a resolver on base
 * to use, or NULL to make one if a host name needs it. bus: also hold the
 * bus subscription (the main loop). */
struct store_loop *store_loop_new(struct store *st, struct event_base *base, struct evdns_base *dns,
                                  bool bus);
/* Close everything; pending requests are dropped without a callback (their
 * owners are being torn down as well). */
void store_loop_free(struct store_loop *sl);
struct event_base *store_loop_base(const struct store_loop *sl);
/* The main thread's loop, once store_loop_new(..., bus = true) made it. */
struct store_loop *store_main_loop(struct store *st);

/*
 * Requests, on sl's own thread. Each returns a handle, and done(arg, res)
 * runs later on that thread exactly once, unless store_req_cancel() is
 * called first. When the store cannot take the request at all (down, queue
 * full) it returns NULL, done is never called, and *why says why.
 */
struct store_req *store_get(struct store_loop *sl, const char *account, store_done_fn done,
                            void *arg, const char **why);
/* dest NULL deletes. */
struct store_req *store_put(struct store_loop *sl, const char *account, const char *dest,
                            store_done_fn done, void *arg, const char **why);
struct store_req *store_publish(struct store_loop *sl, const char *payload, size_t len,
                                store_done_fn done, void *arg, const char **why);
void store_req_cancel(struct store_req *req);

/* ---- what the store does: /stats, /metrics ---- */

enum store_state {
	STORE_STATE_STARTING, /* no connection attempt has finished yet */
	STORE_STATE_UP,
	STORE_STATE_DOWN,
};
const char *store_state_name(enum store_state s);
enum store_state store_state_get(struct store *st, char *reason, size_t len);
bool store_bus_subscribed(struct store *st);

/* Lookups as the router saw them (found/absent/...), for the counters. */
enum store_lookup_result {
	STORE_LOOKUP_FOUND,
	STORE_LOOKUP_ABSENT,
	STORE_LOOKUP_ERROR,
	STORE_LOOKUP_TIMEOUT,
	STORE_LOOKUP_UNAVAILABLE, /* refused at once: the store is down */
	STORE_LOOKUP_UNKNOWN_DEST,
	STORE_LOOKUP_RESULTS,
};
void store_count_lookup(struct store *st, enum store_lookup_result r);
/* A lookup gave up waiting: counted, and summarised in the log at most
 * every few seconds rather than once per login. */
void store_note_timeout(struct store *st);
void store_count_bus(struct store *st, int direction /* 0 sent, 1 received, 2 dropped */);

void store_metrics_write(struct store *st, struct evbuffer *out);
/* {"source","state","reason","connections","bus_subscribed"} */
json_t *store_status_json(struct store *st);

#endif
