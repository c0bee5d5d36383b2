/*
 * The store core (see store.h and store_driver.h): per-loop connection
 * pools, the request queue, timeouts, reconnection with backoff, DNS, the
 * store's state as the log, /stats and /metrics report it.
 *
 * State is logged on change only: "up" when the first connection of the
 * daemon answers, "down" (with the reason) when the last one is lost or
 * the first attempt fails. A slow store is summarised (lookups given up)
 * at most once every TIMEOUT_LOG_MS, not once per login.
 */
#include "store_driver.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "log.h"
#include "util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define TICK_MS        250
#define QUEUE_MAX      20000 /* requests waiting for a connection, per loop */
#define TIMEOUT_LOG_MS 10000
#define CONNECT_MIN_MS 1000
#define CONNECT_MAX_MS 10000
#define STALL_MIN_MS   2000
#define IDLE_PING_MS   5000 /* an idle connection is asked whether it is alive */

static const double buckets_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
#define N_BUCKETS (sizeof(buckets_s) / sizeof(buckets_s[0]))

struct store {
	struct store_settings set;
	struct store_url url;
	const struct store_driver *drv;
	unsigned per_loop;
	struct store_bus_hooks hooks;
	struct store_loop *main_loop;

	pthread_mutex_t lock;
	enum store_state state;
	uint64_t up_since_ms; /* when it last came up */
	char reason[256];
	size_t n_up; /* command connections up, every loop */
	bool bus_up;
	uint64_t timeout_next_log_ms;
	uint64_t timeouts_unlogged;

	atomic_uint_fast64_t lookups[STORE_LOOKUP_RESULTS];
	atomic_uint_fast64_t writes_ok, writes_err;
	atomic_uint_fast64_t connect_failures, reconnects, conns_lost;
	atomic_uint_fast64_t bus_events[3];
	atomic_uint_fast64_t hist[N_BUCKETS + 1];
	atomic_uint_fast64_t hist_sum_us, hist_count;
};

struct store_loop {
	struct store *st;
	struct event_base *base;
	struct evdns_base *dns;
	bool own_dns;
	struct store_conn *conns; /* per_loop command connections, then the bus one */
	size_t n_conns;
	struct store_conn *bus_conn;
	size_t rr;
	struct store_req *q_head, *q_tail;
	size_t q_len;
	struct event *tick;
	uint64_t rng;
	bool pumping, closing;
	char why[300]; /* the last refusal, for the caller's log */
};

static void conn_start(struct store_conn *c);
static void pump(struct store_loop *sl);

/* ---- small helpers ---- */

const char *store_state_name(enum store_state s)
{
	switch (s) {
	case STORE_STATE_STARTING:
		return "starting";
	case STORE_STATE_UP:
		return "up";
	case STORE_STATE_DOWN:
		return "down";
	}
	return "?";
}

static uint64_t rnd(struct store_loop *sl)
{
	/* xorshift64: jitter only, no secrets */
	uint64_t x = sl->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	sl->rng = x;
	return x;
}

static void tv_ms(struct timeval *tv, uint64_t ms)
{
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

uint64_t store_conn_timeout_ms(const struct store_conn *c)
{
	uint64_t t = c->sl->st->set.lookup_timeout_ms;
	return t < CONNECT_MIN_MS ? CONNECT_MIN_MS : t > CONNECT_MAX_MS ? CONNECT_MAX_MS : t;
}

static uint64_t stall_ms(const struct store *st)
{
	uint64_t t = st->set.lookup_timeout_ms * 2;
	return t < STALL_MIN_MS ? STALL_MIN_MS : t;
}

const struct store_settings *store_conn_settings(const struct store_conn *c)
{
	return &c->sl->st->set;
}

const struct store_url *store_conn_url(const struct store_conn *c)
{
	return &c->sl->st->url;
}

struct event_base *store_conn_base(const struct store_conn *c)
{
	return c->sl->base;
}

/* ---- the store ---- */

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct store *store_new(const struct store_settings *set, char *err, size_t errlen)
{
	struct store *st = xcalloc(1, sizeof(*st));
	char e[300];

	st->set = *set;
	st->set.url = dup_or_null(set->url);
	st->set.key_prefix = dup_or_null(set->key_prefix ? set->key_prefix : "");
	st->set.query = dup_or_null(set->query);
	st->set.upsert_query = dup_or_null(set->upsert_query);
	st->set.delete_query = dup_or_null(set->delete_query);
	st->set.channel = dup_or_null(set->channel ? set->channel : "mailsplice");
	st->set.node_name = dup_or_null(set->node_name ? set->node_name : "mailsplice");
	pthread_mutex_init(&st->lock, NULL);
	st->state = STORE_STATE_STARTING;
	if (!store_url_parse(set->kind, set->url, &st->url, e, sizeof(e))) {
		snprintf(err, errlen, "mapping.%s.url: %s", store_kind_name(set->kind), e);
		store_free(st);
		return NULL;
	}
	st->drv = set->kind == STORE_REDIS ? &store_redis_driver : &store_pg_driver;
	size_t loops = set->n_loops ? set->n_loops : 1;
	st->per_loop = set->pool_size / loops;
	if (st->per_loop == 0)
		st->per_loop = 1;
	return st;
}

void store_free(struct store *st)
{
	if (!st)
		return;
	free((char *)st->set.url);
	free((char *)st->set.key_prefix);
	free((char *)st->set.query);
	free((char *)st->set.upsert_query);
	free((char *)st->set.delete_query);
	free((char *)st->set.channel);
	free((char *)st->set.node_name);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

enum store_kind store_kind(const struct store *st)
{
	return st->set.kind;
}

bool store_writable(const struct store *st)
{
	return st->set.kind == STORE_REDIS || (st->set.upsert_query && st->set.delete_query);
}

void store_set_bus_hooks(struct store *st, const struct store_bus_hooks *hooks)
{
	st->hooks = *hooks;
}

void store_bus_restart(struct store *st, const char *why)
{
	struct store_loop *sl = st->main_loop;

	if (sl && sl->bus_conn && sl->bus_conn->state == SC_UP)
		store_conn_failed(sl->bus_conn, why);
}

struct event_base *store_loop_base(const struct store_loop *sl)
{
	return sl->base;
}

struct store_loop *store_main_loop(struct store *st)
{
	return st->main_loop;
}

/* ---- state, as the log says it ---- */

static void log_state(struct store *st, const char *why)
{
	struct logbuf lb;

	lb_init(&lb, st->state == STORE_STATE_UP ? LOG_INFO : LOG_ERROR, "store");
	lb_str(&lb, "source", store_kind_name(st->set.kind));
	lb_str(&lb, "state", store_state_name(st->state));
	if (why)
		lb_str(&lb, "reason", why);
	if (st->state == STORE_STATE_DOWN)
		lb_raw(&lb, " effect=\"logins not in the cache get a temporary error\"");
	lb_emit(&lb);
}

static void state_conn_up(struct store *st, bool bus)
{
	pthread_mutex_lock(&st->lock);
	if (bus) {
		st->bus_up = true;
	} else {
		st->n_up++;
		if (st->state != STORE_STATE_UP) {
			st->state = STORE_STATE_UP;
			st->up_since_ms = now_ms();
			st->reason[0] = '\0';
			log_state(st, NULL);
		}
	}
	pthread_mutex_unlock(&st->lock);
}

static void state_conn_down(struct store *st, bool bus, bool was_up, const char *why, bool quiet)
{
	pthread_mutex_lock(&st->lock);
	if (bus) {
		st->bus_up = false;
	} else {
		if (was_up && st->n_up)
			st->n_up--;
		if (st->n_up == 0 && st->state != STORE_STATE_DOWN) {
			st->state = STORE_STATE_DOWN;
			str_copy(st->reason, why, sizeof(st->reason));
			if (!quiet)
				log_state(st, why);
		} else if (st->state == STORE_STATE_DOWN) {
			str_copy(st->reason, why, sizeof(st->reason)); /* the latest */
		}
	}
	pthread_mutex_unlock(&st->lock);
}

enum store_state store_state_get(struct store *st, char *reason, size_t len)
{
	pthread_mutex_lock(&st->lock);
	enum store_state s = st->state;
	if (reason)
		str_copy(reason, st->reason, len);
	pthread_mutex_unlock(&st->lock);
	return s;
}

bool store_bus_subscribed(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	bool b = st->bus_up;
	pthread_mutex_unlock(&st->lock);
	return b;
}

void store_count_lookup(struct store *st, enum store_lookup_result r)
{
	if ((unsigned)r < STORE_LOOKUP_RESULTS)
		atomic_fetch_add_explicit(&st->lookups[r], 1, memory_order_relaxed);
}

void store_count_bus(struct store *st, int direction)
{
	if (direction >= 0 && direction < 3)
		atomic_fetch_add_explicit(&st->bus_events[direction], 1, memory_order_relaxed);
}

void store_note_timeout(struct store *st)
{
	uint64_t now = now_ms();

	pthread_mutex_lock(&st->lock);
	st->timeouts_unlogged++;
	if (now >= st->timeout_next_log_ms) {
		log_msg(LOG_WARN, "store-slow",
		        "source=%s lookups_given_up=%llu lookup_timeout_ms=%llu "
		        "effect=\"temporary errors; further timeouts are summarised every %us\"",
		        store_kind_name(st->set.kind), (unsigned long long)st->timeouts_unlogged,
		        (unsigned long long)st->set.lookup_timeout_ms, TIMEOUT_LOG_MS / 1000);
		st->timeouts_unlogged = 0;
		st->timeout_next_log_ms = now + TIMEOUT_LOG_MS;
	}
	pthread_mutex_unlock(&st->lock);
}

/* ---- requests ---- */

static void req_free(struct store_req *r)
{
	free(r->key);
	free(r->value);
	free(r);
}

static void queue_unlink(struct store_loop *sl, struct store_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		sl->q_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		sl->q_tail = r->prev;
	r->prev = r->next = NULL;
	sl->q_len--;
}

static void count_result(struct store *st, struct store_req *r, const struct store_result *res)
{
	if (r->op == STORE_OP_PUT || r->op == STORE_OP_DEL) {
		if (res->status == STORE_ERROR)
			atomic_fetch_add_explicit(&st->writes_err, 1, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&st->writes_ok, 1, memory_order_relaxed);
	}
	if (r->op == STORE_OP_GET && res->status != STORE_ERROR) {
		size_t b = 0;
		double s = (double)res->latency_us / 1e6;
		while (b < N_BUCKETS && s > buckets_s[b])
			b++;
		atomic_fetch_add_explicit(&st->hist[b], 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&st->hist_sum_us, res->latency_us, memory_order_relaxed);
		atomic_fetch_add_explicit(&st->hist_count, 1, memory_order_relaxed);
	}
}

/* Tell the owner (if any) and forget the request. */
static void finish(struct store_req *r, const struct store_result *res)
{
	store_done_fn done = r->done;
	void *arg = r->arg;

	bool closing = r->sl->closing;

	count_result(r->sl->st, r, res);
	req_free(r);
	/* at shutdown the owners are being torn down as well */
	if (done && !closing)
		done(arg, res);
}

static void fail_req(struct store_req *r, const char *why)
{
	struct store_result res = {.status = STORE_ERROR, .error = why};
	if (r->sent_us)
		res.latency_us = now_us() - r->sent_us;
	finish(r, &res);
}

static void fail_queue(struct store_loop *sl, const char *why)
{
	while (sl->q_head) {
		struct store_req *r = sl->q_head;
		queue_unlink(sl, r);
		fail_req(r, why);
	}
}

static bool loop_has_up(const struct store_loop *sl)
{
	for (size_t i = 0; i < sl->n_conns; i++) {
		if (!sl->conns[i].bus && sl->conns[i].state == SC_UP)
			return true;
	}
	return false;
}

static struct store_req *submit(struct store_loop *sl, enum store_op op, const char *key,
                                const char *value, size_t value_len, store_done_fn done, void *arg,
                                const char **why)
{
	struct store *st = sl->st;
	char reason[256];

	if (sl->closing) {
		*why = "shutting down";
		return NULL;
	}
	if (!loop_has_up(sl) && store_state_get(st, reason, sizeof(reason)) == STORE_STATE_DOWN) {
		/* no point making the client wait: say so now */
		snprintf(sl->why, sizeof(sl->why), "mapping store unavailable: %s",
		         reason[0] ? reason : "no connection");
		*why = sl->why;
		return NULL;
	}
	if (sl->q_len >= QUEUE_MAX) {
		*why = "mapping store overloaded: too many requests waiting";
		return NULL;
	}
	struct store_req *r = calloc(1, sizeof(*r));
	if (!r) {
		*why = "out of memory";
		return NULL;
	}
	r->op = op;
	r->sl = sl;
	r->done = done;
	r->arg = arg;
	r->key = key ? strdup(key) : NULL;
	if (value) {
		r->value = malloc(value_len + 1);
		if (r->value) {
			memcpy(r->value, value, value_len);
			r->value[value_len] = '\0';
		}
		r->value_len = value_len;
	}
	if ((key && !r->key) || (value && !r->value)) {
		req_free(r);
		*why = "out of memory";
		return NULL;
	}
	r->where = REQ_QUEUED;
	r->born_us = now_us();
	r->prev = sl->q_tail;
	if (sl->q_tail)
		sl->q_tail->next = r;
	else
		sl->q_head = r;
	sl->q_tail = r;
	sl->q_len++;
	pump(sl);
	return r;
}

struct store_req *store_get(struct store_loop *sl, const char *account, store_done_fn done,
                            void *arg, const char **why)
{
	return submit(sl, STORE_OP_GET, account, NULL, 0, done, arg, why);
}

struct store_req *store_put(struct store_loop *sl, const char *account, const char *dest,
                            store_done_fn done, void *arg, const char **why)
{
	if (!store_writable(sl->st)) {
		*why = "mapping store is read-only";
		return NULL;
	}
	return submit(sl, dest ? STORE_OP_PUT : STORE_OP_DEL, account, dest,
	              dest ? strlen(dest) : 0, done, arg, why);
}

struct store_req *store_publish(struct store_loop *sl, const char *payload, size_t len,
                                store_done_fn done, void *arg, const char **why)
{
	return submit(sl, STORE_OP_PUBLISH, sl->st->set.channel, payload, len, done, arg, why);
}

void store_req_cancel(struct store_req *r)
{
	if (!r)
		return;
	if (r->where == REQ_QUEUED) {
		queue_unlink(r->sl, r);
		req_free(r);
		return;
	}
	r->done = NULL; /* the answer is dropped when it comes */
}

/* Send what waits, round robin over the connections that can take it. */
static void pump(struct store_loop *sl)
{
	if (sl->pumping)
		return;
	sl->pumping = true;
	while (sl->q_head && !sl->closing) {
		struct store_conn *c = NULL;
		size_t n = sl->st->per_loop;
		for (size_t k = 0; k < n; k++) {
			struct store_conn *cand = &sl->conns[(sl->rr + k) % n];
			if (cand->state == SC_UP && sl->st->drv->can_send(cand)) {
				c = cand;
				sl->rr = (sl->rr + k + 1) % n;
				break;
			}
		}
		if (!c)
			break;
		struct store_req *r = sl->q_head;
		queue_unlink(sl, r);
		r->where = REQ_INFLIGHT;
		r->conn = c;
		r->sent_us = now_us();
		c->active_ms = r->sent_us / 1000;
		r->prev = c->inflight_tail;
		r->next = NULL;
		if (c->inflight_tail)
			c->inflight_tail->next = r;
		else
			c->inflight_head = r;
		c->inflight_tail = r;
		c->n_inflight++;
		if (!sl->st->drv->send(c, r))
			store_conn_failed(c, "sending failed: connection lost");
	}
	sl->pumping = false;
}

/* ---- connections ---- */

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
	struct store_conn *c = arg;

	if (c->state == SC_DOWN) {
		if (c->ever_up)
			atomic_fetch_add_explicit(&c->sl->st->reconnects, 1, memory_order_relaxed);
		conn_start(c);
		return;
	}
	if (c->state == SC_RESOLVING || c->state == SC_CONNECTING) {
		char why[96];
		snprintf(why, sizeof(why), "no connection within %llu ms",
		         (unsigned long long)store_conn_timeout_ms(c));
		store_conn_failed(c, why);
	}
}

static void do_connect(struct store_conn *c)
{
	char err[300] = "";

	c->state = SC_CONNECTING;
	if (!c->sl->st->drv->connect(c, err, sizeof(err)))
		store_conn_failed(c, err[0] ? err : "cannot connect");
}

static void resolve_next(struct store_conn *c);

static void dns_done(int result, struct evutil_addrinfo *res, void *arg)
{
	struct store_conn *c = arg;

	c->dns = NULL;
	if (result == EVUTIL_EAI_CANCEL || c->state != SC_RESOLVING || c->sl->closing) {
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	if (result != 0 || !res) {
		char why[STORE_URL_HOST_MAX + 64];
		snprintf(why, sizeof(why), "resolving %s: %s", c->sl->st->url.host[c->resolving],
		         evutil_gai_strerror(result));
		if (res)
			evutil_freeaddrinfo(res);
		store_conn_failed(c, why);
		return;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, res->ai_addr, res->ai_addrlen < sizeof(ss) ? res->ai_addrlen : sizeof(ss));
	evutil_freeaddrinfo(res);
	const void *a = ss.ss_family == AF_INET6
	                        ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
	                        : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
	if (!evutil_inet_ntop(ss.ss_family, a, c->addrs[c->resolving], sizeof(c->addrs[0]))) {
		store_conn_failed(c, "resolver returned an unusable address");
		return;
	}
	c->resolving++;
	resolve_next(c);
}

static void resolve_next(struct store_conn *c)
{
	struct store_loop *sl = c->sl;
	const struct store_url *u = &sl->st->url;

	while (c->resolving < u->n_hosts && store_host_is_numeric(u->host[c->resolving])) {
		str_copy(c->addrs[c->resolving],
		         u->host[c->resolving][0] == '/' ? "" : u->host[c->resolving],
		         sizeof(c->addrs[0]));
		c->resolving++;
	}
	if (c->resolving >= u->n_hosts) {
		do_connect(c);
		return;
	}
	if (!sl->dns) {
		sl->dns = evdns_base_new(sl->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		                                           EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (!sl->dns)
			sl->dns = evdns_base_new(sl->base, 0);
		sl->own_dns = sl->dns != NULL;
	}
	if (!sl->dns) {
		store_conn_failed(c, "no resolver for the store's host name");
		return;
	}
	struct evutil_addrinfo hints = {
	        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
	c->state = SC_RESOLVING;
	c->dns = evdns_getaddrinfo(sl->dns, u->host[c->resolving], NULL, &hints, dns_done, c);
	/* the callback may already have run */
}

static void conn_start(struct store_conn *c)
{
	struct timeval tv;

	if (c->sl->closing)
		return;
	memset(c->addrs, 0, sizeof(c->addrs));
	c->resolving = 0;
	c->state = SC_RESOLVING;
	tv_ms(&tv, store_conn_timeout_ms(c));
	evtimer_add(c->timer, &tv);
	resolve_next(c);
}

void store_conn_up(struct store_conn *c)
{
	struct store *st = c->sl->st;

	evtimer_del(c->timer);
	c->state = SC_UP;
	c->failures = 0;
	c->ever_up = true;
	c->active_ms = now_ms();
	state_conn_up(st, c->bus);
	if (c->bus) {
		log_msg(LOG_INFO, "store-bus", "source=%s state=subscribed channel=%s",
		        store_kind_name(st->set.kind), st->set.channel);
		if (st->hooks.subscribed)
			st->hooks.subscribed(st->hooks.arg);
		return;
	}
	pump(c->sl);
}

void store_conn_failed(struct store_conn *c, const char *why)
{
	struct store_loop *sl = c->sl;
	struct store *st = sl->st;
	bool was_up = c->state == SC_UP;
	char reason[256];

	if (c->state == SC_DOWN)
		return; /* already handled (a driver reporting twice) */
	str_copy(reason, why, sizeof(reason));
	if (c->dns) {
		struct evdns_getaddrinfo_request *d = c->dns;
		c->dns = NULL;
		c->state = SC_DOWN; /* dns_done (cancelled) must do nothing */
		evdns_getaddrinfo_cancel(d);
	}
	c->state = SC_DOWN;
	c->failed_ms = now_ms();
	st->drv->close(c);
	if (was_up)
		atomic_fetch_add_explicit(&st->conns_lost, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&st->connect_failures, 1, memory_order_relaxed);
	state_conn_down(st, c->bus, was_up, reason, sl->closing);
	if (c->bus && was_up && !sl->closing) {
		log_msg(LOG_WARN, "store-bus",
		        "source=%s state=lost channel=%s "
		        "effect=\"changes made through other nodes are not heard until it is "
		        "back; the cache is dropped then\"",
		        store_kind_name(st->set.kind), st->set.channel);
		if (st->hooks.lost)
			st->hooks.lost(st->hooks.arg, reason);
	}
	if (log_enabled(LOG_DEBUG)) {
		struct logbuf lb;
		lb_init(&lb, LOG_DEBUG, "store-conn");
		lb_str(&lb, "source", store_kind_name(st->set.kind));
		lb_uint(&lb, "conn", c->index);
		lb_str(&lb, "bus", c->bus ? "yes" : "no");
		lb_str(&lb, "state", "down");
		lb_str(&lb, "reason", reason);
		lb_emit(&lb);
	}

	/* the requests on the wire are lost with the connection */
	struct store_req *list = c->inflight_head;
	c->inflight_head = c->inflight_tail = NULL;
	c->n_inflight = 0;
	if (!sl->closing) {
		/* bounded, jittered backoff: a fleet restarting its store does
		 * not reconnect in lockstep */
		unsigned f = c->failures < 16 ? c->failures : 16;
		uint64_t d = (uint64_t)BACKOFF_MIN_MS << f;
		if (d > BACKOFF_MAX_MS)
			d = BACKOFF_MAX_MS;
		d = d / 2 + rnd(sl) % (d / 2 + 1);
		c->failures++;
		struct timeval tv;
		tv_ms(&tv, d);
		evtimer_add(c->timer, &tv);
	}
	while (list) {
		struct store_req *r = list;
		list = r->next;
		fail_req(r, reason);
	}
	if (!loop_has_up(sl) && store_state_get(st, NULL, 0) == STORE_STATE_DOWN)
		fail_queue(sl, reason);
}

void store_conn_complete(struct store_conn *c, const struct store_result *res_in)
{
	struct store_req *r = c->inflight_head;

	if (!r)
		return;
	c->inflight_head = r->next;
	if (!c->inflight_head)
		c->inflight_tail = NULL;
	c->n_inflight--;
	c->active_ms = now_ms();
	struct store_result res = *res_in;
	res.latency_us = now_us() - r->sent_us;
	finish(r, &res);
	pump(c->sl);
}

void store_conn_idle(struct store_conn *c)
{
	pump(c->sl);
}

void store_conn_bus_message(struct store_conn *c, const char *data, size_t len)
{
	struct store *st = c->sl->st;

	if (st->hooks.message)
		st->hooks.message(st->hooks.arg, data, len);
}

void store_conn_bus_subscribed(struct store_conn *c)
{
	store_conn_up(c);
}

/* The store came back (another loop's connection is up): connections that
 * failed before that do not sit out the rest of their backoff. */
static void retry_now(struct store_loop *sl)
{
	struct store *st = sl->st;
	uint64_t up_since;

	pthread_mutex_lock(&st->lock);
	up_since = st->state == STORE_STATE_UP ? st->up_since_ms : 0;
	pthread_mutex_unlock(&st->lock);
	if (!up_since)
		return;
	for (size_t i = 0; i < sl->n_conns; i++) {
		struct store_conn *c = &sl->conns[i];
		if (c->state == SC_DOWN && c->failed_ms < up_since) {
			evtimer_del(c->timer);
			if (c->ever_up)
				atomic_fetch_add_explicit(&st->reconnects, 1, memory_order_relaxed);
			conn_start(c);
		}
	}
}

/* A connection nobody used for a while may have died without a word (a
 * firewall that forgot it): a cheap request finds out before a login
 * does, and the stall check closes it if it does not answer. */
static void ping_idle(struct store_loop *sl, uint64_t now)
{
	for (size_t i = 0; i < sl->st->per_loop; i++) {
		struct store_conn *c = &sl->conns[i];
		if (c->state != SC_UP || c->inflight_head || now - c->active_ms < IDLE_PING_MS ||
		    !sl->st->drv->can_send(c))
			continue;
		struct store_req *r = calloc(1, sizeof(*r));
		if (!r)
			return;
		r->op = STORE_OP_PING;
		r->sl = sl;
		r->where = REQ_INFLIGHT;
		r->conn = c;
		r->born_us = r->sent_us = now_us();
		c->active_ms = now;
		c->inflight_head = c->inflight_tail = r;
		c->n_inflight = 1;
		if (!sl->st->drv->send(c, r))
			store_conn_failed(c, "sending failed: connection lost");
	}
}

/* Requests that have waited too long (the owner's own timer normally
 * fires first), and connections that stopped answering. Owners are told
 * after the walk: their callbacks may send or cancel requests. */
struct expired {
	store_done_fn done;
	void *arg;
	uint64_t latency_us;
};

/* Appends e, growing the array; false (nothing appended) when memory ran out:
 * that request then waits for the next tick. */
static bool expired_add(struct expired **ex, size_t *n, size_t *cap, struct expired e)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct expired *grown = realloc(*ex, ncap * sizeof(*grown));
		if (!grown)
			return false;
		*ex = grown;
		*cap = ncap;
	}
	(*ex)[(*n)++] = e;
	return true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct store_loop *sl = arg;
	struct store *st = sl->st;
	uint64_t now = now_us();
	uint64_t limit_us = (st->set.lookup_timeout_ms + TICK_MS) * 1000;
	struct expired *ex = NULL;
	size_t nex = 0, cap = 0;

	for (size_t i = 0; i < sl->n_conns; i++) {
		for (struct store_req *r = sl->conns[i].inflight_head; r; r = r->next) {
			if (!r->done || now - r->born_us <= limit_us)
				continue;
			if (!expired_add(&ex, &nex, &cap,
			                 (struct expired){r->done, r->arg, now - r->sent_us}))
				break;
			r->done = NULL; /* the reply, if it ever comes, is dropped */
		}
	}
	for (struct store_req *r = sl->q_head, *next; r; r = next) {
		next = r->next;
		if (now - r->born_us <= limit_us)
			continue;
		if (!expired_add(&ex, &nex, &cap, (struct expired){r->done, r->arg, 0}))
			break;
		queue_unlink(sl, r);
		req_free(r);
	}
	for (size_t i = 0; i < nex; i++) {
		struct store_result res = {.status = STORE_ERROR,
		                           .error = "mapping store did not answer in time",
		                           .latency_us = ex[i].latency_us};
		if (ex[i].done)
			ex[i].done(ex[i].arg, &res);
	}
	free(ex);
	for (size_t i = 0; i < sl->n_conns; i++) {
		struct store_conn *c = &sl->conns[i];
		if (c->state == SC_UP && c->inflight_head &&
		    now - c->inflight_head->sent_us > stall_ms(st) * 1000) {
			char why[96];
			snprintf(why, sizeof(why), "no answer for %llu ms",
			         (unsigned long long)stall_ms(st));
			store_conn_failed(c, why);
		}
	}
	ping_idle(sl, now / 1000);
	retry_now(sl);
}

/* ---- loops ---- */

struct store_loop *store_loop_new(struct store *st, struct event_base *base, struct evdns_base *dns,
                                  bool bus)
{
	struct store_loop *sl = xcalloc(1, sizeof(*sl));

	sl->st = st;
	sl->base = base;
	sl->dns = dns;
	sl->rng = now_us() ^ (uint64_t)(uintptr_t)sl ^ 0x9e3779b97f4a7c15ull;
	sl->n_conns = st->per_loop + (bus ? 1 : 0);
	sl->conns = xcalloc(sl->n_conns, sizeof(*sl->conns));
	for (size_t i = 0; i < sl->n_conns; i++) {
		struct store_conn *c = &sl->conns[i];
		c->sl = sl;
		c->index = (unsigned)i;
		c->bus = i >= st->per_loop;
		c->timer = evtimer_new(base, on_conn_timer, c);
		if (!st->drv->init(c)) {
			fprintf(stderr, "mailspliced: store: out of memory\n");
			abort();
		}
	}
	if (bus) {
		sl->bus_conn = &sl->conns[sl->n_conns - 1];
		st->main_loop = sl;
	}
	sl->tick = event_new(base, -1, EV_PERSIST, on_tick, sl);
	struct timeval tv;
	tv_ms(&tv, TICK_MS);
	event_add(sl->tick, &tv);
	for (size_t i = 0; i < sl->n_conns; i++)
		conn_start(&sl->conns[i]);
	return sl;
}

void store_loop_free(struct store_loop *sl)
{
	if (!sl)
		return;
	sl->closing = true;
	for (size_t i = 0; i < sl->n_conns; i++) {
		struct store_conn *c = &sl->conns[i];
		if (c->state != SC_DOWN)
			store_conn_failed(c, "shutting down");
		evtimer_del(c->timer);
	}
	fail_queue(sl, "shutting down");
	for (size_t i = 0; i < sl->n_conns; i++) {
		sl->st->drv->fini(&sl->conns[i]);
		event_free(sl->conns[i].timer);
	}
	if (sl->st->main_loop == sl)
		sl->st->main_loop = NULL;
	event_free(sl->tick);
	if (sl->own_dns)
		evdns_base_free(sl->dns, 1);
	free(sl->conns);
	free(sl);
}

/* ---- /stats and /metrics ---- */

json_t *store_status_json(struct store *st)
{
	char reason[256];
	enum store_state s = store_state_get(st, reason, sizeof(reason));
	size_t up;
	bool bus;

	pthread_mutex_lock(&st->lock);
	up = st->n_up;
	bus = st->bus_up;
	pthread_mutex_unlock(&st->lock);
	json_t *o = json_pack("{s:s, s:s, s:I, s:b}", "source", store_kind_name(st->set.kind),
	                      "state", store_state_name(s), "connections", (json_int_t)up,
	                      "bus_subscribed", bus);
	if (o && reason[0])
		json_object_set_new(o, "reason", json_string(reason));
	return o;
}

static uint64_t get(atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static void header(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void store_metrics_write(struct store *st, struct evbuffer *out)
{
	static const char *const lookup_names[STORE_LOOKUP_RESULTS] = {
	        "found", "absent", "error", "timeout", "unavailable", "unknown_destination"};
	static const char *const bus_names[3] = {"sent", "received", "dropped"};
	const char *src = store_kind_name(st->set.kind);
	size_t up;
	bool bus;
	enum store_state s = store_state_get(st, NULL, 0);

	pthread_mutex_lock(&st->lock);
	up = st->n_up;
	bus = st->bus_up;
	pthread_mutex_unlock(&st->lock);

	header(out, "mailsplice_store_up", "gauge",
	       "1 while the mapping store answers (at least one connection is up).");
	evbuffer_add_printf(out, "mailsplice_store_up{source=\"%s\"} %d\n", src,
	                    s == STORE_STATE_UP);
	header(out, "mailsplice_store_connections", "gauge",
	       "Command connections to the mapping store that are up.");
	evbuffer_add_printf(out, "mailsplice_store_connections{source=\"%s\"} %zu\n", src, up);
	header(out, "mailsplice_store_bus_subscribed", "gauge",
	       "1 while this node hears the fleet's events (Redis SUBSCRIBE, PostgreSQL LISTEN).");
	evbuffer_add_printf(out, "mailsplice_store_bus_subscribed{source=\"%s\"} %d\n", src, bus);
	header(out, "mailsplice_store_lookups_total", "counter",
	       "Mapping lookups sent to the store (cache misses), by result.");
	for (int i = 0; i < STORE_LOOKUP_RESULTS; i++)
		evbuffer_add_printf(out, "mailsplice_store_lookups_total{result=\"%s\"} %llu\n",
		                    lookup_names[i], (unsigned long long)get(&st->lookups[i]));
	header(out, "mailsplice_store_writes_total", "counter",
	       "Mapping writes (admin API) by result.");
	evbuffer_add_printf(out,
	                    "mailsplice_store_writes_total{result=\"ok\"} %llu\n"
	                    "mailsplice_store_writes_total{result=\"error\"} %llu\n",
	                    (unsigned long long)get(&st->writes_ok),
	                    (unsigned long long)get(&st->writes_err));
	header(out, "mailsplice_store_connect_failures_total", "counter",
	       "Connection attempts to the store that failed.");
	evbuffer_add_printf(out, "mailsplice_store_connect_failures_total %llu\n",
	                    (unsigned long long)get(&st->connect_failures));
	header(out, "mailsplice_store_connections_lost_total", "counter",
	       "Established store connections that broke or stopped answering.");
	evbuffer_add_printf(out, "mailsplice_store_connections_lost_total %llu\n",
	                    (unsigned long long)get(&st->conns_lost));
	header(out, "mailsplice_store_reconnects_total", "counter",
	       "Reconnection attempts after a connection had been up.");
	evbuffer_add_printf(out, "mailsplice_store_reconnects_total %llu\n",
	                    (unsigned long long)get(&st->reconnects));
	header(out, "mailsplice_bus_events_total", "counter",
	       "Fleet events sent, received (from other nodes) and dropped (malformed).");
	for (int i = 0; i < 3; i++)
		evbuffer_add_printf(out, "mailsplice_bus_events_total{direction=\"%s\"} %llu\n",
		                    bus_names[i], (unsigned long long)get(&st->bus_events[i]));
	header(out, "mailsplice_store_lookup_seconds", "histogram",
	       "Time from sending a lookup to the store's answer.");
	uint64_t cum = 0;
	for (size_t b = 0; b < N_BUCKETS; b++) {
		cum += get(&st->hist[b]);
		evbuffer_add_printf(out, "mailsplice_store_lookup_seconds_bucket{le=\"%g\"} %llu\n",
		                    buckets_s[b], (unsigned long long)cum);
	}
	cum += get(&st->hist[N_BUCKETS]);
	evbuffer_add_printf(out, "mailsplice_store_lookup_seconds_bucket{le=\"+Inf\"} %llu\n",
	                    (unsigned long long)cum);
	evbuffer_add_printf(out, "mailsplice_store_lookup_seconds_sum %.6f\n",
	                    (double)get(&st->hist_sum_us) / 1e6);
	evbuffer_add_printf(out, "mailsplice_store_lookup_seconds_count %llu\n",
	                    (unsigned long long)get(&st->hist_count));
}
