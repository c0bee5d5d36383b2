/*
 * The fleet bus at run time (see bus.h), on the main thread's loop.
 *
 * Nodes learn about each other from "hello" events: one when a node
 * (re)subscribes (join: everybody answers with their own hello) and one
 * every HELLO_INTERVAL_MS. A node heard from within ALIVE_MS is expected
 * to answer a kick; one that does not within the caller's wait is named in
 * the answer, never waited for longer. A node that says hello with a new
 * start time (it restarted) while a kick waits for answers gets that kick
 * again: it may have missed it.
 *
 * A node also hears its own hellos back, and that is how it knows its
 * subscription works: one the store took that does not come back within
 * ECHO_WAIT_MS means a subscription that died silently, and it is made
 * again (and the cache dropped, as after any lost subscription).
 */
#include "bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "holds.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"
#include "util.h"

#define HELLO_INTERVAL_MS 10000
#define ALIVE_MS          (3 * HELLO_INTERVAL_MS)
#define RECENT            256
#define NODES_MAX         1024
#define DROP_LOG_MS       1000
#define ECHO_WAIT_MS      5000 /* our own hello must be back within this */

struct node {
	char name[NODE_NAME_MAX + 1];
	uint64_t boot;
	uint64_t last_ms;
	struct node *next;
};

struct bus_gather {
	struct bus *b;
	struct bus_event ev; /* the kick, as sent */
	bus_gather_fn done;
	void *arg;
	struct bus_answer *answers;
	size_t n_answers, cap;
	char (*expect)[NODE_NAME_MAX + 1];
	size_t n_expect;
	struct event *timer;
	struct store_req *sending;
	char error[256];
	bool finishing;
	struct bus_gather *prev, *next;
};

struct bus {
	const struct config *cfg;
	struct router *router;
	struct store *st;
	struct store_loop *sl;
	struct event_base *base;
	char node[NODE_NAME_MAX + 1];
	uint64_t boot;
	uint64_t seq;
	struct node *nodes;
	size_t n_nodes;
	struct bus_gather *gathers;
	struct event *hello_timer;
	struct store_req *hello_req;
	/* a subscription can die silently (a firewall dropping an idle
	 * connection): our own hello must come back to us through it */
	uint64_t hello_sent_ms; /* the last hello the store took, when sent */
	uint64_t echo_ms;       /* when we last heard one of our own events */
	uint64_t pending_hello_ms;
	struct event *echo_timer;
	struct {
		char origin[NODE_NAME_MAX + 1];
		uint64_t boot, seq;
	} recent[RECENT];
	size_t recent_next;
	uint64_t drop_log_ms;
};

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *bus_node_name(const struct bus *b)
{
	return b->node;
}

bool bus_enabled(const struct bus *b)
{
	return b && b->st != NULL;
}

/* ---- sending ---- */

struct store_req *bus_send(struct bus *b, struct bus_event *ev, store_done_fn done, void *arg,
                           const char **why)
{
	char buf[BUS_EVENT_MAX + 1];

	if (!bus_enabled(b)) {
		*why = "no bus: the mapping store is a file";
		return NULL;
	}
	str_copy(ev->origin, b->node, sizeof(ev->origin));
	ev->boot = b->boot;
	ev->seq = ++b->seq;
	size_t n = bus_event_encode(ev, buf, sizeof(buf));
	if (n == 0) {
		*why = "event does not fit";
		return NULL;
	}
	struct store_req *r = store_publish(b->sl, buf, n, done, arg, why);
	if (r)
		store_count_bus(b->st, 0);
	return r;
}

static void hello_sent(void *arg, const struct store_result *res)
{
	struct bus *b = arg;

	b->hello_req = NULL;
	if (res->status == STORE_ERROR)
		return;
	/* the store has it: it is on its way to every subscriber, us included */
	b->hello_sent_ms = b->pending_hello_ms;
	struct timeval tv = {ECHO_WAIT_MS / 1000, (ECHO_WAIT_MS % 1000) * 1000};
	evtimer_add(b->echo_timer, &tv);
}

/* Our own hello did not come back: the subscription is dead without
 * knowing it (a firewall that forgot an idle connection). */
static void on_echo_timer(evutil_socket_t fd, short what, void *arg)
{
	struct bus *b = arg;

	if (!b->hello_sent_ms || b->echo_ms >= b->hello_sent_ms || !store_bus_subscribed(b->st))
		return;
	log_msg(LOG_WARN, "bus-echo-missing", "node=%s waited_ms=%llu", b->node,
	        (unsigned long long)(now_ms() - b->hello_sent_ms));
	b->hello_sent_ms = 0;
	store_bus_restart(b->st, "our own events do not come back on the subscription");
}

static void answer_sent(void *arg, const struct store_result *res)
{
}

/* The periodic hello and the one sent on (re)subscribing are tracked, so
 * a slow store does not pile them up; answers to a newcomer's hello are
 * not: it must learn about every node at once. */
static void send_hello(struct bus *b, bool join)
{
	struct bus_event ev = {.type = BUS_HELLO, .join = join};
	const char *why;

	if (b->hello_req && !join)
		return; /* one is on its way */
	store_req_cancel(b->hello_req);
	b->pending_hello_ms = now_ms();
	b->hello_req = bus_send(b, &ev, hello_sent, b, &why);
}

static void answer_hello(struct bus *b)
{
	struct bus_event ev = {.type = BUS_HELLO};
	const char *why;

	bus_send(b, &ev, answer_sent, NULL, &why);
}

static void on_hello_timer(evutil_socket_t fd, short what, void *arg)
{
	send_hello(arg, false);
}

/* ---- who is there ---- */

static struct node *node_find(struct bus *b, const char *name)
{
	for (struct node *n = b->nodes; n; n = n->next) {
		if (strcmp(n->name, name) == 0)
			return n;
	}
	return NULL;
}

/* Note a node; returns true when it is new or restarted. */
static bool node_seen(struct bus *b, const char *name, uint64_t boot)
{
	uint64_t now = now_ms();
	struct node *n = node_find(b, name);

	if (!n) {
		if (b->n_nodes >= NODES_MAX) {
			/* forget the longest silent one */
			struct node **oldest = &b->nodes;
			for (struct node **p = &b->nodes; *p; p = &(*p)->next)
				if ((*p)->last_ms < (*oldest)->last_ms)
					oldest = p;
			struct node *dead = *oldest;
			*oldest = dead->next;
			free(dead);
			b->n_nodes--;
		}
		n = calloc(1, sizeof(*n));
		if (!n)
			return false;
		str_copy(n->name, name, sizeof(n->name));
		n->boot = boot;
		n->last_ms = now;
		n->next = b->nodes;
		b->nodes = n;
		b->n_nodes++;
		log_msg(LOG_INFO, "bus-node", "node=%s state=joined", name);
		return true;
	}
	n->last_ms = now;
	if (boot && boot != n->boot) {
		bool restarted = n->boot != 0;
		n->boot = boot;
		if (restarted)
			log_msg(LOG_INFO, "bus-node", "node=%s state=restarted", name);
		return restarted;
	}
	return false;
}

static void node_forget(struct bus *b, const char *name)
{
	for (struct node **p = &b->nodes; *p; p = &(*p)->next) {
		if (strcmp((*p)->name, name) == 0) {
			struct node *n = *p;
			*p = n->next;
			free(n);
			b->n_nodes--;
			log_msg(LOG_INFO, "bus-node", "node=%s state=left", name);
			return;
		}
	}
}

void bus_leave(struct bus *b)
{
	struct bus_event ev = {.type = BUS_HELLO, .leaving = true};
	const char *why;

	if (bus_enabled(b))
		bus_send(b, &ev, answer_sent, NULL, &why);
}

/* ---- kicks that wait for answers ---- */

static void gather_free(struct bus_gather *g)
{
	struct bus *b = g->b;

	if (g->prev)
		g->prev->next = g->next;
	else if (b->gathers == g)
		b->gathers = g->next;
	if (g->next)
		g->next->prev = g->prev;
	if (g->timer)
		event_free(g->timer);
	store_req_cancel(g->sending);
	free(g->answers);
	free(g->expect);
	free(g);
}

static bool answered(const struct bus_gather *g, const char *node)
{
	for (size_t i = 0; i < g->n_answers; i++) {
		if (strcmp(g->answers[i].node, node) == 0)
			return true;
	}
	return false;
}

static void gather_finish(struct bus_gather *g)
{
	struct bus_gather_result res = {0};
	char(*missing)[NODE_NAME_MAX + 1] = calloc(g->n_expect + 1, sizeof(*missing));

	g->finishing = true;
	for (size_t i = 0; missing && i < g->n_expect; i++) {
		if (!answered(g, g->expect[i]))
			memcpy(missing[res.n_missing++], g->expect[i], sizeof(missing[0]));
	}
	res.answers = g->answers;
	res.n_answers = g->n_answers;
	res.missing = missing;
	res.error = g->error[0] ? g->error : NULL;
	g->done(g->arg, &res);
	free(missing);
	gather_free(g);
}

static void add_answer(struct bus_gather *g, const char *node, uint64_t count)
{
	if (answered(g, node))
		return; /* a second answer (after a re-send) changes nothing */
	if (g->n_answers == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		struct bus_answer *a = realloc(g->answers, cap * sizeof(*a));
		if (!a)
			return;
		g->answers = a;
		g->cap = cap;
	}
	str_copy(g->answers[g->n_answers].node, node, sizeof(g->answers[0].node));
	g->answers[g->n_answers].count = count;
	g->n_answers++;
}

static bool all_answered(const struct bus_gather *g)
{
	for (size_t i = 0; i < g->n_expect; i++) {
		if (!answered(g, g->expect[i]))
			return false;
	}
	return true;
}

static void on_gather_timer(evutil_socket_t fd, short what, void *arg)
{
	gather_finish(arg);
}

static void gather_sent(void *arg, const struct store_result *res)
{
	struct bus_gather *g = arg;

	g->sending = NULL;
	if (res->status == STORE_ERROR) {
		snprintf(g->error, sizeof(g->error), "the other nodes could not be told: %s",
		         res->error ? res->error : "store error");
		event_active(g->timer, EV_TIMEOUT, 0);
		return;
	}
	if (all_answered(g))
		event_active(g->timer, EV_TIMEOUT, 0);
}

/* A kick sent again to a node that came back: the first one reached the
 * others, so a failure here is not the gather's error. */
static void gather_resent(void *arg, const struct store_result *res)
{
	struct bus_gather *g = arg;

	g->sending = NULL;
	if (all_answered(g))
		event_active(g->timer, EV_TIMEOUT, 0);
}

static size_t local_kick(const char *account, const char *dest, const char *except)
{
	size_t n = except && *except ? registry_kick_except(account, except)
	                             : registry_kick(account, dest && *dest ? dest : NULL);
	metrics_kicks(n);
	return n;
}

struct bus_gather *bus_kick(struct bus *b, const char *account, const char *dest,
                            const char *except, uint64_t wait_ms, bus_gather_fn done, void *arg)
{
	struct bus_gather *g = calloc(1, sizeof(*g));
	const char *why;

	if (!g)
		return NULL;
	g->b = b;
	g->done = done;
	g->arg = arg;
	g->timer = evtimer_new(b->base, on_gather_timer, g);
	if (!g->timer) {
		free(g);
		return NULL;
	}
	g->next = b->gathers;
	if (b->gathers)
		b->gathers->prev = g;
	b->gathers = g;

	add_answer(g, b->node, local_kick(account, dest, except));
	struct timeval tv = {0, 0};
	if (!bus_enabled(b)) {
		event_add(g->timer, &tv);
		return g;
	}
	uint64_t now = now_ms();
	g->expect = calloc(b->n_nodes + 1, sizeof(*g->expect));
	for (struct node *n = b->nodes; g->expect && n; n = n->next) {
		if (now - n->last_ms <= ALIVE_MS && strcmp(n->name, b->node) != 0)
			memcpy(g->expect[g->n_expect++], n->name, sizeof(g->expect[0]));
	}
	g->ev.type = BUS_KICK;
	str_copy(g->ev.account, account, sizeof(g->ev.account));
	str_copy(g->ev.destination, dest ? dest : "", sizeof(g->ev.destination));
	str_copy(g->ev.except, except ? except : "", sizeof(g->ev.except));
	snprintf(g->ev.req, sizeof(g->ev.req), "%.64s:%llu:%llu", b->node,
	         (unsigned long long)b->boot, (unsigned long long)(b->seq + 1));
	g->sending = bus_send(b, &g->ev, gather_sent, g, &why);
	if (!g->sending) {
		snprintf(g->error, sizeof(g->error), "the other nodes could not be told: %s", why);
		event_add(g->timer, &tv);
		return g;
	}
	tv.tv_sec = (time_t)(wait_ms / 1000);
	tv.tv_usec = (suseconds_t)(wait_ms % 1000) * 1000;
	event_add(g->timer, &tv);
	return g;
}

void bus_gather_cancel(struct bus_gather *g)
{
	if (g && !g->finishing)
		gather_free(g);
}

/* A node came (back) while kicks wait: it may not have heard them. */
static void resend_kicks(struct bus *b, const char *node)
{
	const char *why;

	for (struct bus_gather *g = b->gathers; g; g = g->next) {
		if (g->ev.type != BUS_KICK || g->sending || answered(g, node))
			continue;
		struct bus_event ev = g->ev;
		struct store_req *r = bus_send(b, &ev, gather_resent, g, &why);
		if (r)
			g->sending = r;
		bool expected = false;
		for (size_t i = 0; i < g->n_expect; i++)
			expected |= strcmp(g->expect[i], node) == 0;
		if (!expected) {
			void *e = realloc(g->expect, (g->n_expect + 1) * sizeof(*g->expect));
			if (e) {
				g->expect = e;
				str_copy(g->expect[g->n_expect++], node, sizeof(g->expect[0]));
			}
		}
	}
}

/* ---- receiving ---- */

static bool seen_before(struct bus *b, const struct bus_event *ev)
{
	if (!ev->seq)
		return false; /* a trigger's event: no identity, and harmless twice */
	for (size_t i = 0; i < RECENT; i++) {
		if (b->recent[i].seq == ev->seq && b->recent[i].boot == ev->boot &&
		    strcmp(b->recent[i].origin, ev->origin) == 0)
			return true;
	}
	size_t k = b->recent_next++ % RECENT;
	str_copy(b->recent[k].origin, ev->origin, sizeof(b->recent[k].origin));
	b->recent[k].boot = ev->boot;
	b->recent[k].seq = ev->seq;
	return false;
}

static void drop(struct bus *b, const char *why, const struct bus_event *ev)
{
	uint64_t now = now_ms();

	store_count_bus(b->st, 2);
	if (now < b->drop_log_ms)
		return; /* counted; logged at most once a second */
	b->drop_log_ms = now + DROP_LOG_MS;
	struct logbuf lb;
	lb_init(&lb, LOG_WARN, "bus-event-dropped");
	lb_str(&lb, "origin", ev && ev->origin[0] ? ev->origin : NULL);
	lb_str(&lb, "reason", why);
	lb_emit(&lb);
}

static void apply(struct bus *b, const struct bus_event *ev, const char *account)
{
	const char *why;

	switch (ev->type) {
	case BUS_HELLO:
		if (ev->leaving) {
			node_forget(b, ev->origin);
			return;
		}
		if (ev->join)
			answer_hello(b);
		return;
	case BUS_MAPPING:
	case BUS_INVALIDATE:
		router_invalidate(b->router, account[0] ? account : NULL);
		return;
	case BUS_DELAY:
		if (!holds_set(account, ev->seconds, now_ms()))
			log_msg(LOG_WARN, "bus-delay", "result=\"hold table full\"");
		return;
	case BUS_KICK: {
		size_t n = local_kick(account, ev->destination, ev->except);
		if (n) {
			struct logbuf lb;
			lb_init(&lb, LOG_INFO, "bus-kick");
			lb_str(&lb, "origin", ev->origin);
			lb_str(&lb, "account", account);
			lb_uint(&lb, "kicked", n);
			lb_emit(&lb);
		}
		if (ev->req[0]) {
			struct bus_event ans = {.type = BUS_KICKED, .count = n};
			str_copy(ans.req, ev->req, sizeof(ans.req));
			bus_send(b, &ans, answer_sent, NULL, &why);
		}
		return;
	}
	case BUS_KICKED:
		for (struct bus_gather *g = b->gathers; g; g = g->next) {
			if (strcmp(g->ev.req, ev->req) == 0) {
				add_answer(g, ev->origin, ev->count);
				if (!g->sending && all_answered(g))
					event_active(g->timer, EV_TIMEOUT, 0);
				break;
			}
		}
		return;
	case BUS_TYPES:
		return;
	}
}

static void on_message(void *arg, const char *data, size_t len)
{
	struct bus *b = arg;
	struct bus_event ev;
	char err[160], account[ACCOUNT_MAX + 1] = "";

	if (!bus_event_decode(data, len, &ev, err, sizeof(err))) {
		drop(b, err, &ev);
		return;
	}
	if (strcmp(ev.origin, b->node) == 0 && ev.boot == b->boot) {
		b->echo_ms = now_ms(); /* the subscription works */
		return;                /* our own, applied when sent */
	}
	if (seen_before(b, &ev))
		return;
	store_count_bus(b->st, 1);
	if (ev.boot && !ev.leaving && node_seen(b, ev.origin, ev.boot))
		resend_kicks(b, ev.origin);
	if (ev.account[0]) {
		/* a row written by hand may not be canonical: route as a login would */
		const char *bad = account_canonical(&b->cfg->rules, ev.account, strlen(ev.account),
		                                    account, sizeof(account));
		if (bad) {
			drop(b, bad, &ev);
			return;
		}
	}
	apply(b, &ev, account);
}

static void on_subscribed(void *arg)
{
	struct bus *b = arg;

	/* events may have gone by while we were not listening */
	size_t n = router_invalidate(b->router, NULL);
	log_msg(LOG_INFO, "bus-subscribed", "node=%s cache_dropped=%zu", b->node, n);
	b->echo_ms = now_ms();
	b->hello_sent_ms = 0;
	send_hello(b, true);
}

static void on_lost(void *arg, const char *why)
{
}

/* ---- life ---- */

struct bus *bus_new(const struct config *cfg, struct router *router, struct store *st,
                    struct store_loop *main_loop, struct event_base *base)
{
	struct bus *b = xcalloc(1, sizeof(*b));

	b->cfg = cfg;
	b->router = router;
	b->st = st;
	b->sl = main_loop;
	b->base = base;
	b->boot = wall_ms();
	str_copy(b->node, cfg->node_name ? cfg->node_name : "mailsplice", sizeof(b->node));
	if (st) {
		struct store_bus_hooks h = {.message = on_message,
		                            .subscribed = on_subscribed,
		                            .lost = on_lost,
		                            .arg = b};
		store_set_bus_hooks(st, &h);
		b->hello_timer = event_new(base, -1, EV_PERSIST, on_hello_timer, b);
		b->echo_timer = evtimer_new(base, on_echo_timer, b);
		struct timeval tv = {HELLO_INTERVAL_MS / 1000, 0};
		event_add(b->hello_timer, &tv);
	}
	return b;
}

void bus_free(struct bus *b)
{
	if (!b)
		return;
	while (b->gathers)
		gather_free(b->gathers);
	store_req_cancel(b->hello_req);
	if (b->hello_timer)
		event_free(b->hello_timer);
	if (b->echo_timer)
		event_free(b->echo_timer);
	if (b->st) {
		struct store_bus_hooks none = {0};
		store_set_bus_hooks(b->st, &none);
	}
	while (b->nodes) {
		struct node *n = b->nodes;
		b->nodes = n->next;
		free(n);
	}
	free(b);
}

json_t *bus_status_json(struct bus *b)
{
	json_t *nodes = json_array();
	uint64_t now = now_ms();

	for (struct node *n = b->nodes; nodes && n; n = n->next) {
		json_array_append_new(nodes, json_pack("{s:s, s:I, s:b}", "node", n->name, "age_s",
		                                       (json_int_t)((now - n->last_ms) / 1000),
		                                       "alive", now - n->last_ms <= ALIVE_MS));
	}
	return json_pack("{s:s, s:b, s:o}", "node", b->node, "subscribed",
	                 b->st ? store_bus_subscribed(b->st) : false, "nodes", nodes);
}
