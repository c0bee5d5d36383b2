/*
 * Between the store core (daemon/route/store.c: pools, queues, backoff,
 * DNS, state, counters) and one driver per store (store_redis.c,
 * store_pg.c). Nothing outside daemon/route/store*.c includes this.
 *
 * A connection's life: DOWN -> (RESOLVING) -> CONNECTING -> UP -> DOWN.
 * The core resolves host names, then asks the driver to connect with
 * numeric addresses; the driver reports store_conn_up() once the
 * connection answered a first command (Redis: PING, or the SUBSCRIBE
 * confirmation; PostgreSQL: the prepared statements or LISTEN), or
 * store_conn_failed() at any point. Requests go out in order, and the
 * driver completes them in the same order (both protocols answer in
 * order), which lets the core keep the in-flight list and time it.
 */
#ifndef MAILSPLICE_STORE_DRIVER_H
#define MAILSPLICE_STORE_DRIVER_H

#include "store.h"

enum store_op {
	STORE_OP_GET,
	STORE_OP_PUT,
	STORE_OP_DEL,
	STORE_OP_PUBLISH,
	STORE_OP_PING, /* the core's own: is an idle connection still alive */
};

enum store_req_where {
	REQ_QUEUED,   /* waiting for a connection, in the loop's queue */
	REQ_INFLIGHT, /* sent on a connection */
};

struct store_req {
	enum store_op op;
	enum store_req_where where;
	struct store_loop *sl;
	struct store_conn *conn; /* REQ_INFLIGHT */
	store_done_fn done;      /* NULL: cancelled, nobody waits */
	void *arg;
	uint64_t born_us; /* submitted */
	uint64_t sent_us; /* written to a connection */
	struct store_req *prev, *next;
	char *key;   /* account (or the channel for publish) */
	char *value; /* destination or payload; NULL for GET and DEL */
	size_t value_len;
};

enum store_conn_state {
	SC_DOWN, /* waiting for the backoff timer */
	SC_RESOLVING,
	SC_CONNECTING, /* including the driver's handshake */
	SC_UP,
};

struct store_conn {
	struct store_loop *sl;
	unsigned index;
	bool bus; /* the subscription connection */
	enum store_conn_state state;
	unsigned failures; /* consecutive, for the backoff */
	bool ever_up;
	struct event *timer; /* backoff, or the connect deadline */
	/* resolving host i of the URL */
	struct evdns_getaddrinfo_request *dns;
	size_t resolving;
	char addrs[STORE_URL_HOSTS][64]; /* numeric, "" = use the URL's host */
	struct store_req *inflight_head, *inflight_tail;
	size_t n_inflight;
	uint64_t active_ms; /* last request sent or answered */
	uint64_t failed_ms; /* when it last failed */
	void *drv;          /* the driver's state */
};

struct store_driver {
	const char *name;
	/* per-connection state; false on allocation failure */
	bool (*init)(struct store_conn *c);
	void (*fini)(struct store_conn *c);
	/* start connecting (addrs filled); false: failed at once, err says why */
	bool (*connect)(struct store_conn *c, char *err, size_t errlen);
	/* can this connection take another request now (PostgreSQL: idle) */
	bool (*can_send)(struct store_conn *c);
	/* send; false: the connection broke (the core fails it) */
	bool (*send)(struct store_conn *c, struct store_req *req);
	/* close now, no callback will follow for this connection */
	void (*close)(struct store_conn *c);
};

extern const struct store_driver store_redis_driver;
extern const struct store_driver store_pg_driver;

/* ---- the driver calls these ---- */

void store_conn_up(struct store_conn *c);
/* connecting failed or the connection broke; in-flight requests fail */
void store_conn_failed(struct store_conn *c, const char *why);
/* the head of the in-flight list finished */
void store_conn_complete(struct store_conn *c, const struct store_result *res);
/* PostgreSQL: idle again, the core may send the next queued request */
void store_conn_idle(struct store_conn *c);
void store_conn_bus_message(struct store_conn *c, const char *data, size_t len);
void store_conn_bus_subscribed(struct store_conn *c);

/* ---- and read these ---- */

const struct store_settings *store_conn_settings(const struct store_conn *c);
const struct store_url *store_conn_url(const struct store_conn *c);
struct event_base *store_conn_base(const struct store_conn *c);
uint64_t store_conn_timeout_ms(const struct store_conn *c);

#endif
