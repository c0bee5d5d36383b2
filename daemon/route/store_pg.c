/*
 * The PostgreSQL driver (see store_driver.h): libpq's asynchronous calls
 * (PQconnectStartParams/PQconnectPoll, PQsendQueryPrepared, PQsocket) on
 * libevent.
 *
 * After connecting, a connection sets statement_timeout (the server itself
 * stops a statement the proxy has given up on), prepares the configured
 * queries once ($1 = account, $2 = destination) and, for the bus, LISTENs.
 * A bad query therefore shows at connection time, with the server's
 * message, as the store's "down" reason. One statement runs at a time per
 * connection; the core queues the rest.
 *
 * Lookups take the first column of the first row; no row, NULL or "" is
 * "no mapping", as at the reference proxy.
 */
#include "store_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "util.h"

#define STMT_GET "mailsplice_get"
#define STMT_PUT "mailsplice_put"
#define STMT_DEL "mailsplice_del"

enum pg_phase {
	PG_CLOSED,
	PG_POLLING,   /* PQconnectPoll */
	PG_HANDSHAKE, /* SET, PREPARE, LISTEN */
	PG_READY,
};

enum hs_step {
	HS_TIMEOUT,
	HS_GET,
	HS_PUT,
	HS_DEL,
	HS_LISTEN,
	HS_DONE,
};

struct pg_conn {
	PGconn *pg;
	enum pg_phase phase;
	enum hs_step step;
	int fd;
	struct event *pev;       /* polling: one shot, read or write */
	struct event *rev, *wev; /* ready: persistent read, write while flushing */
	bool busy;               /* a statement is in flight */
	PGresult *res;           /* its first result */
	char err[300];
};

static struct pg_conn *pc_of(struct store_conn *c)
{
	return c->drv;
}

/* libpq messages end with a newline and may run over lines: the first. */
static const char *first_line(const char *msg, char *out, size_t len)
{
	size_t n = strcspn(msg ? msg : "", "\r\n");
	if (n >= len)
		n = len - 1;
	memcpy(out, msg ? msg : "", n);
	out[n] = '\0';
	return out;
}

static void pg_fail(struct store_conn *c, const char *what, const char *msg)
{
	struct pg_conn *pc = pc_of(c);
	char line[240];

	snprintf(pc->err, sizeof(pc->err), "postgresql: %s%s%s", what, *what ? ": " : "",
	         first_line(msg, line, sizeof(line)));
	char why[sizeof(pc->err)];
	memcpy(why, pc->err, sizeof(why));
	store_conn_failed(c, why);
}

static bool p_init(struct store_conn *c)
{
	c->drv = calloc(1, sizeof(struct pg_conn));
	return c->drv != NULL;
}

static void drop_events(struct pg_conn *pc)
{
	if (pc->pev)
		event_free(pc->pev);
	if (pc->rev)
		event_free(pc->rev);
	if (pc->wev)
		event_free(pc->wev);
	pc->pev = pc->rev = pc->wev = NULL;
}

static void p_close(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);

	drop_events(pc);
	if (pc->res)
		PQclear(pc->res);
	pc->res = NULL;
	if (pc->pg)
		PQfinish(pc->pg);
	pc->pg = NULL;
	pc->phase = PG_CLOSED;
	pc->busy = false;
}

static void p_fini(struct store_conn *c)
{
	if (c->drv)
		p_close(c);
	free(c->drv);
	c->drv = NULL;
}

static void flush(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);
	int r = PQflush(pc->pg);

	if (r < 0)
		pg_fail(c, "sending", PQerrorMessage(pc->pg));
	else if (r > 0)
		event_add(pc->wev, NULL);
}

/* ---- after connecting: SET, PREPARE, LISTEN ---- */

static void handshake_next(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);
	const struct store_settings *set = store_conn_settings(c);
	char sql[128];
	int ok = 1;

	while (pc->step < HS_DONE) {
		enum hs_step s = pc->step++;
		switch (s) {
		case HS_TIMEOUT:
			if (c->bus)
				continue;
			snprintf(sql, sizeof(sql), "SET statement_timeout = %llu",
			         (unsigned long long)store_conn_timeout_ms(c));
			ok = PQsendQuery(pc->pg, sql);
			break;
		case HS_GET:
			if (c->bus)
				continue;
			ok = PQsendPrepare(pc->pg, STMT_GET, set->query, 1, NULL);
			break;
		case HS_PUT:
			if (c->bus || !set->upsert_query)
				continue;
			ok = PQsendPrepare(pc->pg, STMT_PUT, set->upsert_query, 2, NULL);
			break;
		case HS_DEL:
			if (c->bus || !set->delete_query)
				continue;
			ok = PQsendPrepare(pc->pg, STMT_DEL, set->delete_query, 1, NULL);
			break;
		case HS_LISTEN: {
			if (!c->bus)
				continue;
			char *id = PQescapeIdentifier(pc->pg, set->channel, strlen(set->channel));
			if (!id) {
				pg_fail(c, "LISTEN", PQerrorMessage(pc->pg));
				return;
			}
			char *q = malloc(strlen(id) + 8);
			if (!q) {
				PQfreemem(id);
				pg_fail(c, "LISTEN", "out of memory");
				return;
			}
			sprintf(q, "LISTEN %s", id);
			PQfreemem(id);
			ok = PQsendQuery(pc->pg, q);
			free(q);
			break;
		}
		case HS_DONE:
			break;
		}
		if (!ok) {
			pg_fail(c, "sending", PQerrorMessage(pc->pg));
			return;
		}
		pc->busy = true;
		flush(c);
		return;
	}
	pc->phase = PG_READY;
	if (c->bus)
		store_conn_bus_subscribed(c);
	else
		store_conn_up(c);
}

static const char *const step_names[] = {"SET statement_timeout", "preparing query",
                                         "preparing upsert_query", "preparing delete_query",
                                         "LISTEN"};

/* A statement finished: its first result is pc->res (may be NULL). */
static void statement_done(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);
	PGresult *r = pc->res;
	ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;

	pc->res = NULL;
	pc->busy = false;
	if (pc->phase == PG_HANDSHAKE) {
		if (!ok) {
			char msg[256];
			first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(pc->pg), msg,
			           sizeof(msg));
			if (r)
				PQclear(r);
			pg_fail(c, step_names[pc->step - 1], msg);
			return;
		}
		PQclear(r);
		handshake_next(c);
		return;
	}

	struct store_result res = {0};
	char line[240];
	enum store_op op = c->inflight_head ? c->inflight_head->op : STORE_OP_GET;
	if (!ok) {
		snprintf(pc->err, sizeof(pc->err), "postgresql: %s",
		         first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(pc->pg), line,
		                    sizeof(line)));
		res.status = STORE_ERROR;
		res.error = pc->err;
	} else if (op == STORE_OP_GET) {
		if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0 &&
		    !PQgetisnull(r, 0, 0) && PQgetlength(r, 0, 0) > 0) {
			res.status = STORE_FOUND;
			res.value = PQgetvalue(r, 0, 0);
			res.value_len = (size_t)PQgetlength(r, 0, 0);
		} else if (st == PGRES_TUPLES_OK) {
			res.status = STORE_ABSENT;
		} else {
			res.status = STORE_ERROR;
			res.error = "postgresql: query returned no rows (is it a SELECT?)";
		}
	} else {
		res.status = STORE_DONE;
		res.count = st == PGRES_TUPLES_OK ? PQntuples(r) : atoll(PQcmdTuples(r));
	}
	store_conn_complete(c, &res);
	if (r)
		PQclear(r);
}

/* Read what arrived: notifications, then results. */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct store_conn *c = arg;
	struct pg_conn *pc = pc_of(c);
	PGnotify *n;

	if (!PQconsumeInput(pc->pg)) {
		pg_fail(c, "", PQerrorMessage(pc->pg));
		return;
	}
	while (pc->pg && (n = PQnotifies(pc->pg)) != NULL) {
		store_conn_bus_message(c, n->extra, strlen(n->extra));
		PQfreemem(n);
	}
	while (pc->pg && pc->busy && !PQisBusy(pc->pg)) {
		PGresult *r = PQgetResult(pc->pg);
		if (r) {
			if (!pc->res)
				pc->res = r;
			else
				PQclear(r); /* only the first result of a statement counts */
			continue;
		}
		statement_done(c);
	}
	if (pc->pg && PQstatus(pc->pg) == CONNECTION_BAD)
		pg_fail(c, "", PQerrorMessage(pc->pg));
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	flush(arg);
}

static bool make_ready_events(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);
	struct event_base *base = store_conn_base(c);

	drop_events(pc);
	pc->fd = PQsocket(pc->pg);
	pc->rev = event_new(base, pc->fd, EV_READ | EV_PERSIST, on_read, c);
	pc->wev = event_new(base, pc->fd, EV_WRITE, on_write, c);
	if (!pc->rev || !pc->wev)
		return false;
	event_add(pc->rev, NULL);
	return true;
}

static void on_poll(evutil_socket_t fd, short what, void *arg);

static void poll_wait(struct store_conn *c, short ev)
{
	struct pg_conn *pc = pc_of(c);
	int sock = PQsocket(pc->pg);

	if (sock < 0) {
		pg_fail(c, "connect", "no socket");
		return;
	}
	/* libpq may open a new socket for the next host or SSL fallback */
	if (!pc->pev || sock != pc->fd) {
		if (pc->pev)
			event_free(pc->pev);
		pc->fd = sock;
		pc->pev = event_new(store_conn_base(c), sock, ev, on_poll, c);
	} else {
		event_assign(pc->pev, store_conn_base(c), sock, ev, on_poll, c);
	}
	if (!pc->pev) {
		pg_fail(c, "connect", "out of memory");
		return;
	}
	event_add(pc->pev, NULL);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct store_conn *c = arg;
	struct pg_conn *pc = pc_of(c);

	switch (PQconnectPoll(pc->pg)) {
	case PGRES_POLLING_READING:
		poll_wait(c, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		poll_wait(c, EV_WRITE);
		return;
	case PGRES_POLLING_FAILED:
		pg_fail(c, "connect", PQerrorMessage(pc->pg));
		return;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(pc->pg, 1) != 0 || !make_ready_events(c)) {
			pg_fail(c, "connect", PQerrorMessage(pc->pg));
			return;
		}
		pc->phase = PG_HANDSHAKE;
		pc->step = HS_TIMEOUT;
		handshake_next(c);
		return;
	default:
		return;
	}
}

/* The server's notices and the messages libpq gets while idle (e.g.
 * "terminating connection due to administrator command") would go to
 * stderr: put them in the log, one line each. */
static void on_notice(void *arg, const char *message)
{
	struct logbuf lb;
	char line[240];

	lb_init(&lb, LOG_DEBUG, "store-notice");
	lb_str(&lb, "source", "sql");
	lb_str(&lb, "message", first_line(message, line, sizeof(line)));
	lb_emit(&lb);
}

static bool p_connect(struct store_conn *c, char *err, size_t errlen)
{
	struct pg_conn *pc = pc_of(c);
	const struct store_url *u = store_conn_url(c);
	const struct store_settings *set = store_conn_settings(c);
	const char *kw[6], *val[6];
	char hostaddr[STORE_URL_HOSTS * 65] = "", app[64];
	bool resolved = false;
	size_t n = 0;

	/* a host name was resolved by the core: give libpq the addresses so
	 * it does not call the blocking resolver itself */
	for (size_t i = 0; i < u->n_hosts; i++)
		resolved |= !store_host_is_numeric(u->host[i]);
	if (resolved) {
		for (size_t i = 0; i < u->n_hosts; i++) {
			size_t l = strlen(hostaddr);
			snprintf(hostaddr + l, sizeof(hostaddr) - l, "%s%s", i ? "," : "",
			         c->addrs[i]);
		}
	}
	snprintf(app, sizeof(app), "mailsplice%s:%s", c->bus ? "-bus" : "", set->node_name);
	kw[n] = "dbname"; /* expanded: the URL */
	val[n++] = set->url;
	if (resolved) {
		kw[n] = "hostaddr";
		val[n++] = hostaddr;
	}
	kw[n] = "application_name";
	val[n++] = app;
	kw[n] = "client_encoding";
	val[n++] = "UTF8";
	kw[n] = NULL;
	val[n] = NULL;

	pc->pg = PQconnectStartParams(kw, val, 1);
	if (!pc->pg) {
		snprintf(err, errlen, "postgresql: out of memory");
		return false;
	}
	if (PQstatus(pc->pg) == CONNECTION_BAD) {
		char line[240];
		snprintf(err, errlen, "postgresql: %s",
		         first_line(PQerrorMessage(pc->pg), line, sizeof(line)));
		PQfinish(pc->pg);
		pc->pg = NULL;
		return false;
	}
	PQsetNoticeProcessor(pc->pg, on_notice, c);
	pc->phase = PG_POLLING;
	pc->fd = -1;
	/* "as if PQconnectPoll had last returned PGRES_POLLING_WRITING" */
	poll_wait(c, EV_WRITE);
	return true; /* a failure inside poll_wait was reported already */
}

static bool p_can_send(struct store_conn *c)
{
	struct pg_conn *pc = pc_of(c);
	return pc->pg && pc->phase == PG_READY && !pc->busy;
}

static bool p_send(struct store_conn *c, struct store_req *req)
{
	struct pg_conn *pc = pc_of(c);
	const char *v[2] = {req->key, req->value};
	int ok = 0;

	if (!pc->pg)
		return false;
	switch (req->op) {
	case STORE_OP_GET:
		ok = PQsendQueryPrepared(pc->pg, STMT_GET, 1, v, NULL, NULL, 0);
		break;
	case STORE_OP_PUT:
		ok = PQsendQueryPrepared(pc->pg, STMT_PUT, 2, v, NULL, NULL, 0);
		break;
	case STORE_OP_DEL:
		ok = PQsendQueryPrepared(pc->pg, STMT_DEL, 1, v, NULL, NULL, 0);
		break;
	case STORE_OP_PUBLISH:
		ok = PQsendQueryParams(pc->pg, "SELECT pg_notify($1, $2)", 2, NULL, v, NULL, NULL,
		                       0);
		break;
	case STORE_OP_PING:
		ok = PQsendQuery(pc->pg, ""); /* the cheapest round trip there is */
		break;
	}
	if (!ok)
		return false;
	pc->busy = true;
	flush(c);
	return true;
}

const struct store_driver store_pg_driver = {
        .name = "postgresql",
        .init = p_init,
        .fini = p_fini,
        .connect = p_connect,
        .can_send = p_can_send,
        .send = p_send,
        .close = p_close,
};
