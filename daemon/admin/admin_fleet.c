/*
 * Admin endpoints that wait (see admin_internal.h): mapping reads and
 * writes against a remote store, and every change that the other nodes
 * sharing the store must hear about. A request is answered only once the
 * store has taken the change (written it, and published the event that
 * tells the other nodes): "200" means the whole fleet will act on it.
 *
 * POST /accounts/move is the cutover in one call:
 *   hold    new logins of the account wait, on every node
 *   write   the mapping, in the store
 *   tell    every node drops its cache entry
 *   kick    every node closes the account's sessions that are not on the
 *           destination (those still logging in included) and says how many
 *   release the hold; held logins route with the new mapping
 * A login that started before the hold reached a node is registered
 * before it looks at the hold (session.c), so the kick finds it.
 */
#include "admin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "holds.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define KICK_WAIT_MS      1000 /* the "within a second" */
#define MOVE_WAIT_MS      2000
#define MOVE_HOLD_SECONDS 30 /* outlives the move's own bounded steps */

enum op_kind {
	OP_GET,
	OP_WRITE,
	OP_INVALIDATE,
	OP_KICK,
	OP_DELAY,
	OP_MOVE,
};

enum move_step {
	MV_HOLD,
	MV_WRITE,
	MV_TELL,
	MV_KICK,
	MV_RELEASE,
};

struct op {
	struct admin_request r; /* req, ep, client */
	enum op_kind kind;
	enum move_step step;
	char ident[1024];
	char account[ACCOUNT_MAX + 1];
	char dest[BUS_DEST_MAX + 1];
	bool has_dest;
	bool cached;
	long long count;
	struct store_req *sreq;
	struct route_lookup *lookup;
	struct bus_gather *gather;
	json_t *nodes;   /* move: node -> {"closed": n} */
	json_t *missing; /* move: nodes that did not answer */
	long long closed;
	char error[400];
	struct op *prev, *next;
};

static struct {
	const struct config *cfg;
	struct router *router;
	struct bus *bus;
	struct store *st;
	struct op *ops;
} F;

void fleet_init(const struct config *cfg, struct router *router, struct bus *bus)
{
	F.cfg = cfg;
	F.router = router;
	F.bus = bus;
	F.st = router->store;
}

bool fleet_remote(void)
{
	return F.st != NULL;
}

static struct store_loop *main_loop(void)
{
	return F.st ? store_main_loop(F.st) : NULL;
}

static struct op *op_new(struct admin_request *r, enum op_kind kind, const char *account)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op) {
		admin_reply_text(r, 500, "internal error");
		return NULL;
	}
	op->r.req = r->req;
	op->r.ep = r->ep;
	str_copy(op->r.client, r->client, sizeof(op->r.client));
	op->kind = kind;
	if (account)
		str_copy(op->account, account, sizeof(op->account));
	op->next = F.ops;
	if (F.ops)
		F.ops->prev = op;
	F.ops = op;
	return op;
}

/* Replied (or abandoned): forget it. */
static void op_end(struct op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		F.ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	store_req_cancel(op->sreq);
	route_lookup_cancel(op->lookup);
	bus_gather_cancel(op->gather);
	json_decref(op->nodes);
	json_decref(op->missing);
	free(op);
}

static void op_reply_text(struct op *op, int code, const char *text)
{
	admin_reply_text(&op->r, code, text);
	op_end(op);
}

void fleet_stop(void)
{
	while (F.ops) {
		struct op *op = F.ops;
		/* cancel first: nothing may call back into a freed op */
		store_req_cancel(op->sreq);
		op->sreq = NULL;
		route_lookup_cancel(op->lookup);
		op->lookup = NULL;
		bus_gather_cancel(op->gather);
		op->gather = NULL;
		op_reply_text(op, 503, "shutting down");
	}
}

/* ---- GET /mappings ---- */

static void get_done(void *arg, enum route_status st, const struct route *route, const char *why)
{
	struct op *op = arg;
	char msg[400];

	op->lookup = NULL;
	if (st == ROUTE_FAILED) {
		snprintf(msg, sizeof(msg), "lookup failed: %s", why ? why : "mapping store error");
		op_reply_text(op, 503, msg);
		return;
	}
	admin_reply_json(&op->r, 200,
	                 json_pack("{s:s, s:s, s:s, s:b, s:b}", "identifier", op->ident,
	                           "normalized", op->account, "destination",
	                           F.cfg->dests[route->dest].name, "routed_to_default",
	                           route->routed_to_default, "cached", op->cached));
	op_end(op);
}

void fleet_get_mapping(struct admin_request *r, const char *ident, const char *account)
{
	struct op *op = op_new(r, OP_GET, account);
	struct route route;
	const char *why = NULL;

	if (!op)
		return;
	str_copy(op->ident, ident, sizeof(op->ident));
	op->cached = router_cached(F.router, account);
	/* the store's own answer, as for the file: what logins will get once
	 * the cache entry (if any) expires */
	enum route_status st = router_resolve(F.router, main_loop(), account, ROUTE_PEEK, &route,
	                                      get_done, op, &op->lookup, &why);
	if (st != ROUTE_PENDING)
		get_done(op, st, &route, why);
}

/* ---- telling the other nodes ---- */

/* Send ev; done(op, ok, error) follows. False: not sent, op->error says why. */
static bool tell(struct op *op, struct bus_event *ev, store_done_fn done)
{
	const char *why = NULL;

	op->sreq = bus_send(F.bus, ev, done, op, &why);
	if (!op->sreq) {
		snprintf(op->error, sizeof(op->error), "%s", why ? why : "bus unavailable");
		return false;
	}
	return true;
}

/* ---- PUT / DELETE /mappings ---- */

static void write_told(void *arg, const struct store_result *res)
{
	struct op *op = arg;
	const char *action = op->has_dest ? "mapping-put" : "mapping-delete";
	char msg[500];

	op->sreq = NULL;
	if (res->status == STORE_ERROR) {
		snprintf(msg, sizeof(msg), "mapping written; the other nodes could not be told: %s",
		         res->error ? res->error : "store error");
		admin_log_change(&op->r, action, op->account, op->has_dest ? op->dest : NULL, msg);
		op_reply_text(op, 503, msg);
		return;
	}
	if (op->has_dest) {
		admin_log_change(&op->r, action, op->account, op->dest, "written");
		op_reply_text(op, 200, "ok");
	} else {
		const char *result = op->count > 0 ? "removed" : "absent";
		admin_log_change(&op->r, action, op->account, NULL, result);
		op_reply_text(op, 200, result);
	}
}

static void write_done(void *arg, const struct store_result *res)
{
	struct op *op = arg;
	const char *action = op->has_dest ? "mapping-put" : "mapping-delete";
	char msg[500];

	op->sreq = NULL;
	if (res->status == STORE_ERROR) {
		admin_log_change(&op->r, action, op->account, op->has_dest ? op->dest : NULL,
		                 res->error);
		snprintf(msg, sizeof(msg), "%s failed: %s", op->has_dest ? "upsert" : "remove",
		         res->error ? res->error : "mapping store error");
		op_reply_text(op, 503, msg);
		return;
	}
	op->count = res->count;
	router_invalidate(F.router, op->account);
	struct bus_event ev = {.type = BUS_MAPPING};
	str_copy(ev.account, op->account, sizeof(ev.account));
	str_copy(ev.destination, op->has_dest ? op->dest : "", sizeof(ev.destination));
	if (!tell(op, &ev, write_told)) {
		struct store_result fail = {.status = STORE_ERROR, .error = op->error};
		write_told(op, &fail);
	}
}

void fleet_write_mapping(struct admin_request *r, const char *account, const char *dest)
{
	const char *why = NULL;
	char msg[500];

	if (!store_writable(F.st)) {
		/* as the reference: an SQL store without upsert/delete queries */
		admin_reply_text(r, 501, "mapping store is read-only");
		return;
	}
	struct op *op = op_new(r, OP_WRITE, account);
	if (!op)
		return;
	op->has_dest = dest != NULL;
	str_copy(op->dest, dest ? dest : "", sizeof(op->dest));
	op->sreq = store_put(main_loop(), account, dest, write_done, op, &why);
	if (!op->sreq) {
		admin_log_change(&op->r, dest ? "mapping-put" : "mapping-delete", account, dest,
		                 why);
		snprintf(msg, sizeof(msg), "%s failed: %s", dest ? "upsert" : "remove", why);
		op_reply_text(op, 503, msg);
	}
}

/* ---- /cache/invalidate, /connections/delay ---- */

static void simple_told(void *arg, const struct store_result *res)
{
	struct op *op = arg;
	const char *action = op->kind == OP_INVALIDATE ? "cache-invalidate" : "delay";
	char msg[500];

	op->sreq = NULL;
	if (res->status == STORE_ERROR) {
		snprintf(msg, sizeof(msg),
		         "done on this node only; the other nodes could not be told: %s",
		         res->error ? res->error : "store error");
		admin_log_change(&op->r, action, op->account[0] ? op->account : "*", NULL, msg);
		op_reply_text(op, 503, msg);
		return;
	}
	admin_log_change(&op->r, action, op->account[0] ? op->account : "*", NULL, op->error);
	op_reply_text(op, 200, "ok");
}

static void tell_or_fail(struct op *op, struct bus_event *ev)
{
	char keep[sizeof(op->error)];

	memcpy(keep, op->error, sizeof(keep)); /* the log's result, on success */
	if (!tell(op, ev, simple_told)) {
		struct store_result fail = {.status = STORE_ERROR, .error = op->error};
		char err[sizeof(op->error)];
		memcpy(err, op->error, sizeof(err));
		fail.error = err;
		simple_told(op, &fail);
		return;
	}
	memcpy(op->error, keep, sizeof(keep));
}

void fleet_invalidate(struct admin_request *r, const char *account)
{
	struct op *op = op_new(r, OP_INVALIDATE, account);

	if (!op)
		return;
	size_t n = router_invalidate(F.router, account);
	snprintf(op->error, sizeof(op->error), "ok entries=%zu", n);
	struct bus_event ev = {.type = BUS_INVALIDATE};
	str_copy(ev.account, account ? account : "", sizeof(ev.account));
	tell_or_fail(op, &ev);
}

void fleet_delay(struct admin_request *r, const char *account, uint64_t seconds,
                 const char *seconds_text)
{
	if (!holds_set(account, seconds, now_ms())) {
		admin_log_change(r, "delay", account, NULL, "table full");
		admin_reply_text(r, 500, "too many holds");
		return;
	}
	struct op *op = op_new(r, OP_DELAY, account);
	if (!op)
		return;
	snprintf(op->error, sizeof(op->error), "%s", seconds ? seconds_text : "lifted");
	struct bus_event ev = {.type = BUS_DELAY, .seconds = seconds};
	str_copy(ev.account, account, sizeof(ev.account));
	tell_or_fail(op, &ev);
}

/* ---- /connections/kick ---- */

static long long total(const struct bus_gather_result *res)
{
	long long n = 0;
	for (size_t i = 0; i < res->n_answers; i++)
		n += (long long)res->answers[i].count;
	return n;
}

static void kick_done(void *arg, const struct bus_gather_result *res)
{
	struct op *op = arg;
	char msg[600];

	op->gather = NULL;
	long long n = total(res);
	if (res->error) {
		snprintf(msg, sizeof(msg), "kicked %lld on this node only; %s", n, res->error);
		admin_log_change(&op->r, "kick", op->account, op->has_dest ? op->dest : NULL, msg);
		op_reply_text(op, 503, msg);
		return;
	}
	snprintf(msg, sizeof(msg), "kicked %lld", n);
	char result[200];
	snprintf(result, sizeof(result), "%s nodes=%zu not_answered=%zu", msg, res->n_answers,
	         res->n_missing);
	admin_log_change(&op->r, "kick", op->account, op->has_dest ? op->dest : NULL, result);
	op_reply_text(op, 200, msg);
}

void fleet_kick(struct admin_request *r, const char *account, const char *dest)
{
	struct op *op = op_new(r, OP_KICK, account);

	if (!op)
		return;
	op->has_dest = dest != NULL;
	str_copy(op->dest, dest ? dest : "", sizeof(op->dest));
	op->gather = bus_kick(F.bus, account, dest, NULL, KICK_WAIT_MS, kick_done, op);
	if (!op->gather)
		op_reply_text(op, 500, "internal error");
}

/* ---- POST /accounts/move ---- */

static void move_next(struct op *op);

static void move_reply(struct op *op, int code)
{
	json_t *j =
	        json_pack("{s:s, s:s, s:s, s:I, s:O, s:O}", "identifier", op->ident, "normalized",
	                  op->account, "destination", op->dest, "sessions_closed",
	                  (json_int_t)op->closed, "nodes", op->nodes ? op->nodes : json_object(),
	                  "not_answered", op->missing ? op->missing : json_array());
	if (j && op->error[0])
		json_object_set_new(j, "error", json_string(op->error));
	char result[300];
	snprintf(result, sizeof(result), "%s closed=%lld not_answered=%zu",
	         code == 200 ? "moved" : op->error, op->closed,
	         op->missing ? json_array_size(op->missing) : 0);
	admin_log_change(&op->r, "move", op->account, op->dest, result);
	admin_reply_json(&op->r, code, j);
	op_end(op);
}

/* The move stopped before the mapping was written: lift the hold here and
 * (best effort) everywhere, and say why. */
static void move_abort(struct op *op, const char *what, const char *why)
{
	const char *ignored;

	holds_set(op->account, 0, now_ms());
	if (bus_enabled(F.bus)) {
		struct bus_event ev = {.type = BUS_DELAY, .seconds = 0};
		str_copy(ev.account, op->account, sizeof(ev.account));
		bus_send(F.bus, &ev, NULL, NULL, &ignored);
	}
	snprintf(op->error, sizeof(op->error), "%s: %s", what, why ? why : "mapping store error");
	move_reply(op, 503);
}

static void move_sent(void *arg, const struct store_result *res)
{
	struct op *op = arg;

	op->sreq = NULL;
	if (res->status == STORE_ERROR) {
		switch (op->step) {
		case MV_HOLD:
			move_abort(op, "the other nodes could not be told to hold logins",
			           res->error);
			return;
		case MV_WRITE:
			move_abort(op, "upsert failed", res->error);
			return;
		case MV_TELL:
			snprintf(op->error, sizeof(op->error),
			         "mapping written; the other nodes could not be told: %s",
			         res->error ? res->error : "store error");
			holds_set(op->account, 0, now_ms());
			move_reply(op, 503);
			return;
		default:
			break; /* the release: holds expire on their own */
		}
	}
	op->step++;
	move_next(op);
}

static void move_kicked(void *arg, const struct bus_gather_result *res)
{
	struct op *op = arg;

	op->gather = NULL;
	op->nodes = json_object();
	op->missing = json_array();
	for (size_t i = 0; i < res->n_answers; i++) {
		json_object_set_new(
		        op->nodes, res->answers[i].node,
		        json_pack("{s:I}", "closed", (json_int_t)res->answers[i].count));
	}
	for (size_t i = 0; i < res->n_missing; i++)
		json_array_append_new(op->missing, json_string(res->missing[i]));
	op->closed = total(res);
	if (res->error) {
		snprintf(op->error, sizeof(op->error), "%s", res->error);
		holds_set(op->account, 0, now_ms());
		move_reply(op, 503);
		return;
	}
	op->step = MV_RELEASE;
	move_next(op);
}

static void move_next(struct op *op)
{
	struct bus_event ev = {0};
	const char *why = NULL;
	char err[512];
	bool existed;

	str_copy(ev.account, op->account, sizeof(ev.account));
	switch (op->step) {
	case MV_HOLD:
		if (!holds_set(op->account, MOVE_HOLD_SECONDS, now_ms())) {
			snprintf(op->error, sizeof(op->error), "too many holds");
			move_reply(op, 500);
			return;
		}
		if (!bus_enabled(F.bus))
			break;
		ev.type = BUS_DELAY;
		ev.seconds = MOVE_HOLD_SECONDS;
		if (!tell(op, &ev, move_sent)) {
			char e[sizeof(op->error)];
			memcpy(e, op->error, sizeof(e));
			move_abort(op, "the other nodes could not be told to hold logins", e);
		}
		return;
	case MV_WRITE:
		if (!F.st) {
			int di = config_dest_index(F.cfg, op->dest);
			if (!router_set(F.router, op->account, di, &existed, err, sizeof(err))) {
				move_abort(op, "upsert failed", err);
				return;
			}
			break;
		}
		op->sreq = store_put(main_loop(), op->account, op->dest, move_sent, op, &why);
		if (!op->sreq)
			move_abort(op, "upsert failed", why);
		return;
	case MV_TELL:
		router_invalidate(F.router, op->account);
		if (!bus_enabled(F.bus))
			break;
		ev.type = BUS_MAPPING;
		str_copy(ev.destination, op->dest, sizeof(ev.destination));
		if (!tell(op, &ev, move_sent)) {
			char e[sizeof(op->error)];
			memcpy(e, op->error, sizeof(e));
			snprintf(op->error, sizeof(op->error),
			         "mapping written; the other nodes could not be told: %s", e);
			holds_set(op->account, 0, now_ms());
			move_reply(op, 503);
		}
		return;
	case MV_KICK:
		op->gather =
		        bus_kick(F.bus, op->account, NULL, op->dest, MOVE_WAIT_MS, move_kicked, op);
		if (!op->gather) {
			snprintf(op->error, sizeof(op->error), "out of memory");
			move_reply(op, 500);
		}
		return;
	case MV_RELEASE:
		holds_set(op->account, 0, now_ms());
		if (bus_enabled(F.bus)) {
			ev.type = BUS_DELAY;
			ev.seconds = 0;
			/* not waited for: the holds expire on their own anyway */
			bus_send(F.bus, &ev, NULL, NULL, &why);
		}
		move_reply(op, 200);
		return;
	}
	op->step++;
	move_next(op);
}

void fleet_move(struct admin_request *r, const char *ident, const char *account, const char *dest)
{
	if (F.st && !store_writable(F.st)) {
		admin_reply_text(r, 501, "mapping store is read-only");
		return;
	}
	struct op *op = op_new(r, OP_MOVE, account);
	if (!op)
		return;
	str_copy(op->ident, ident, sizeof(op->ident));
	str_copy(op->dest, dest, sizeof(op->dest));
	op->has_dest = true;
	op->step = MV_HOLD;
	move_next(op);
}

json_t *fleet_status_json(void)
{
	json_t *o = json_object();

	if (F.st)
		json_object_set_new(o, "store", store_status_json(F.st));
	if (F.bus)
		json_object_set_new(o, "bus", bus_status_json(F.bus));
	return o;
}
