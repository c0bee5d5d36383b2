/*
 * The Redis driver (see store_driver.h): hiredis' async API on libevent.
 *
 * GET/SET/DEL of key_prefix + account, as the reference proxy does; an
 * empty value counts as no mapping, as there. Connections pipeline: the
 * core sends every request at once and Redis answers in order.
 *
 * hiredis 0.14 frees a context itself when connecting fails or the
 * connection drops, and runs every pending callback with a NULL reply on
 * the way. A connection therefore remembers which context is its current
 * one; callbacks from any other (an abandoned one being freed) and NULL
 * replies are ignored: the core fails the in-flight requests itself.
 */
#include "store_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "mapping.h"

enum hs_step {
	HS_AUTH = 1,
	HS_SELECT,
	HS_NAME,
	HS_PING,
};

struct redis_conn {
	redisAsyncContext *ac; /* the current context, NULL when down */
	char key[1024];
};

static struct redis_conn *rc_of(struct store_conn *c)
{
	return c->drv;
}

/* The store_conn a callback belongs to, or NULL when ac is not its
 * current context any more. */
static struct store_conn *owner(const redisAsyncContext *ac)
{
	struct store_conn *c = ac->data;
	return c && rc_of(c)->ac == ac ? c : NULL;
}

static bool r_init(struct store_conn *c)
{
	c->drv = calloc(1, sizeof(struct redis_conn));
	return c->drv != NULL;
}

static void r_fini(struct store_conn *c)
{
	free(c->drv);
	c->drv = NULL;
}

static void r_close(struct store_conn *c)
{
	struct redis_conn *rc = rc_of(c);
	redisAsyncContext *ac = rc->ac;

	if (!ac)
		return;
	rc->ac = NULL;
	/* inside one of its callbacks hiredis defers this until the callback
	 * returns; the pending callbacks then run with NULL and are ignored */
	redisAsyncFree(ac);
}

/* Lost the connection: hiredis is freeing ac itself. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct store_conn *c = owner(ac);
	char why[160];

	if (!c)
		return;
	snprintf(why, sizeof(why), "redis: %s",
	         ac->err && ac->errstr[0] ? ac->errstr : "connection closed by the server");
	rc_of(c)->ac = NULL;
	store_conn_failed(c, why);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct store_conn *c = owner(ac);
	char why[160];

	if (!c || status == REDIS_OK)
		return; /* connected: the handshake's replies tell the rest */
	snprintf(why, sizeof(why), "redis: connect: %s", ac->errstr[0] ? ac->errstr : "failed");
	rc_of(c)->ac = NULL;
	store_conn_failed(c, why);
}

static void fail_reply(struct store_conn *c, const char *what, const redisReply *r)
{
	char why[300];

	snprintf(why, sizeof(why), "redis: %s: %.*s", what,
	         r && r->type == REDIS_REPLY_ERROR ? (int)(r->len < 200 ? r->len : 200) : 16,
	         r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	store_conn_failed(c, why);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct store_conn *c = owner(ac);
	redisReply *r = reply;
	enum hs_step step = (enum hs_step)(uintptr_t)privdata;

	if (!c || !r)
		return;
	switch (step) {
	case HS_AUTH:
		if (r->type == REDIS_REPLY_ERROR)
			fail_reply(c, "AUTH", r);
		return;
	case HS_SELECT:
		if (r->type == REDIS_REPLY_ERROR)
			fail_reply(c, "SELECT", r);
		return;
	case HS_NAME:
		return; /* a server without CLIENT SETNAME is still a server */
	case HS_PING:
		if (r->type == REDIS_REPLY_ERROR)
			fail_reply(c, "PING", r);
		else
			store_conn_up(c);
		return;
	}
}

static void on_subscribe(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct store_conn *c = owner(ac);
	redisReply *r = reply;

	if (!c || !r)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		fail_reply(c, "SUBSCRIBE", r);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcasecmp(r->element[0]->str, "subscribe") == 0) {
		store_conn_bus_subscribed(c);
	} else if (strcasecmp(r->element[0]->str, "message") == 0 &&
	           r->element[2]->type == REDIS_REPLY_STRING) {
		store_conn_bus_message(c, r->element[2]->str, r->element[2]->len);
	}
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct store_conn *c = owner(ac);
	redisReply *r = reply;
	struct store_result res = {0};
	char err[300];

	if (!c || !r || !c->inflight_head)
		return;
	enum store_op op = c->inflight_head->op;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(err, sizeof(err), "redis: %.*s", (int)(r->len < 200 ? r->len : 200),
		         r->str);
		res.status = STORE_ERROR;
		res.error = err;
	} else if (op == STORE_OP_GET) {
		if (r->type == REDIS_REPLY_NIL || (r->type == REDIS_REPLY_STRING && r->len == 0)) {
			res.status = STORE_ABSENT;
		} else if (r->type == REDIS_REPLY_STRING) {
			res.status = STORE_FOUND;
			res.value = r->str;
			res.value_len = r->len;
		} else {
			res.status = STORE_ERROR;
			res.error = "redis: GET answered with something else than a string";
		}
	} else if (r->type == REDIS_REPLY_INTEGER) {
		res.status = STORE_DONE;
		res.count = r->integer;
	} else if (r->type == REDIS_REPLY_STATUS) {
		res.status = STORE_DONE;
		res.count = 1;
	} else {
		res.status = STORE_ERROR;
		res.error = "redis: unexpected reply";
	}
	store_conn_complete(c, &res);
}

static bool r_connect(struct store_conn *c, char *err, size_t errlen)
{
	struct redis_conn *rc = rc_of(c);
	const struct store_url *u = store_conn_url(c);
	const struct store_settings *set = store_conn_settings(c);
	redisAsyncContext *ac;

	if (u->unix_socket)
		ac = redisAsyncConnectUnix(u->path);
	else
		ac = redisAsyncConnect(c->addrs[0][0] ? c->addrs[0] : u->host[0], u->port[0]);
	if (!ac) {
		snprintf(err, errlen, "redis: out of memory");
		return false;
	}
	if (ac->err) {
		snprintf(err, errlen, "redis: connect: %s", ac->errstr);
		redisAsyncFree(ac);
		return false;
	}
	ac->data = c;
	rc->ac = ac;
	if (redisLibeventAttach(ac, store_conn_base(c)) != REDIS_OK) {
		rc->ac = NULL;
		redisAsyncFree(ac);
		snprintf(err, errlen, "redis: cannot attach to the event loop");
		return false;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* queued now, written once connected, answered in order */
	if (u->password[0]) {
		if (u->user[0])
			redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_AUTH,
			                  "AUTH %s %s", u->user, u->password);
		else
			redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_AUTH, "AUTH %s",
			                  u->password);
	}
	if (u->db && !c->bus)
		redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_SELECT, "SELECT %d",
		                  u->db);
	/* CLIENT LIST shows who is who; a name has no spaces */
	char name[96];
	snprintf(name, sizeof(name), "mailsplice%s:%s", c->bus ? "-bus" : "", set->node_name);
	for (char *p = name; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			*p = '_';
	redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_NAME, "CLIENT SETNAME %s", name);
	if (c->bus)
		redisAsyncCommand(ac, on_subscribe, NULL, "SUBSCRIBE %s", set->channel);
	else
		redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_PING, "PING");
	return true;
}

static bool r_can_send(struct store_conn *c)
{
	return rc_of(c)->ac != NULL;
}

static bool r_send(struct store_conn *c, struct store_req *req)
{
	struct redis_conn *rc = rc_of(c);
	const struct store_settings *set = store_conn_settings(c);
	int rv = REDIS_ERR;

	if (!rc->ac)
		return false;
	if (req->op != STORE_OP_PUBLISH && req->op != STORE_OP_PING &&
	    !store_redis_key(set->key_prefix, req->key, rc->key, sizeof(rc->key)))
		return false;
	switch (req->op) {
	case STORE_OP_GET:
		rv = redisAsyncCommand(rc->ac, on_reply, NULL, "GET %b", rc->key, strlen(rc->key));
		break;
	case STORE_OP_PUT:
		rv = redisAsyncCommand(rc->ac, on_reply, NULL, "SET %b %b", rc->key,
		                       strlen(rc->key), req->value, req->value_len);
		break;
	case STORE_OP_DEL:
		rv = redisAsyncCommand(rc->ac, on_reply, NULL, "DEL %b", rc->key, strlen(rc->key));
		break;
	case STORE_OP_PUBLISH:
		rv = redisAsyncCommand(rc->ac, on_reply, NULL, "PUBLISH %b %b", req->key,
		                       strlen(req->key), req->value, req->value_len);
		break;
	case STORE_OP_PING:
		rv = redisAsyncCommand(rc->ac, on_reply, NULL, "PING");
		break;
	}
	return rv == REDIS_OK;
}

const struct store_driver store_redis_driver = {
        .name = "redis",
        .init = r_init,
        .fini = r_fini,
        .connect = r_connect,
        .can_send = r_can_send,
        .send = r_send,
        .close = r_close,
};
