/*
 * The fleet bus: every node sharing a Redis or PostgreSQL mapping store
 * hears every change made through any node's admin API, through the store
 * itself (Redis pub/sub on key_prefix + "events", PostgreSQL LISTEN/NOTIFY
 * on [mapping.sql] channel). No cluster protocol of our own: nodes only
 * publish small JSON events and apply the ones they hear.
 *
 *   {"v":1,"type":"kick","origin":"mx1/127.0.0.1:9443","boot":1735..,"seq":7,
 *    "account":"alice@example.org","except":"new","req":"mx1/..:7"}
 *
 * Every event names its origin node (and the origin's start time, which
 * tells a restarted node from its previous life). Applying an event twice
 * has the effect of applying it once: events set state (drop a cache entry,
 * hold logins until a time, close the sessions that are not on a
 * destination) and never count. A node that lost its subscription drops its
 * whole cache when it has it back: it may have missed events.
 *
 * The PostgreSQL trigger in conf/mailsplice-postgres.sql sends
 * {"type":"mapping","origin":"postgres","account":...} for rows changed by
 * any client, psql included.
 */
#ifndef MAILSPLICE_BUS_H
#define MAILSPLICE_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "mapping.h"
#include "store.h"

#define NODE_NAME_MAX 64
#define BUS_DEST_MAX  128
#define BUS_REQ_MAX   96
/* PostgreSQL refuses NOTIFY payloads of 8000 bytes and more */
#define BUS_EVENT_MAX 4000

enum bus_type {
	BUS_HELLO,      /* a node is alive; join: answer with your own hello;
	                 * leaving: it is stopping, do not wait for it any more */
	BUS_MAPPING,    /* account's mapping changed: drop its cache entry */
	BUS_INVALIDATE, /* drop account's cache entry, or the whole cache */
	BUS_KICK,       /* close account's sessions; answer with "kicked" if req */
	BUS_KICKED,     /* a node's answer to a kick: how many it closed */
	BUS_DELAY,      /* hold account's new logins for seconds (0 lifts) */
	BUS_TYPES,
};

const char *bus_type_name(enum bus_type t);

struct bus_event {
	enum bus_type type;
	char origin[NODE_NAME_MAX + 1];
	uint64_t boot; /* the origin's start, ms since the epoch; 0 unknown */
	uint64_t seq;
	bool join, leaving;                 /* hello */
	char account[ACCOUNT_MAX + 1];      /* "" = none (invalidate: all) */
	char destination[BUS_DEST_MAX + 1]; /* kick: only sessions on it */
	char except[BUS_DEST_MAX + 1];      /* kick: only sessions not on it */
	uint64_t seconds;                   /* delay */
	char req[BUS_REQ_MAX + 1];          /* kick: answer to this; kicked: answering it */
	uint64_t count;                     /* kicked */
};

/* JSON, at most outlen - 1 bytes plus a NUL; returns the length, 0 if it
 * does not fit. */
size_t bus_event_encode(const struct bus_event *ev, char *out, size_t outlen);
/* Strict: a JSON object of at most BUS_EVENT_MAX bytes, a known "type",
 * "v" 1 if present, an "origin" of printable ASCII, strings without NUL
 * within their bounds, counts as non-negative integers; unknown keys are
 * ignored (a newer node may add some). err says what was wrong. */
bool bus_event_decode(const char *data, size_t len, struct bus_event *ev, char *err, size_t errlen);

/* ---- the runtime: the main thread only ---- */

struct bus;
struct store;
struct store_loop;
struct config;

/* st NULL (file store): a fleet of one, every call acts locally. */
struct bus *bus_new(const struct config *cfg, struct router *router, struct store *st,
                    struct store_loop *main_loop, struct event_base *base);
void bus_free(struct bus *b);
const char *bus_node_name(const struct bus *b);
/* Whether there is a bus at all (a shared store). */
bool bus_enabled(const struct bus *b);

/* Send an event to the other nodes (origin, boot and seq are filled in).
 * Only with a bus (bus_enabled). Returns the request (cancel it with
 * store_req_cancel if the caller stops waiting) or NULL and *why; done
 * (as for store_publish) says whether the store took the event. */
struct store_req *bus_send(struct bus *b, struct bus_event *ev, store_done_fn done, void *arg,
                           const char **why);

/* A kick on every node: this node's sessions now, the others' through the
 * bus; done gets each node's count once every node known to be alive has
 * answered, or after wait_ms. dest / except as in struct bus_event. */
struct bus_answer {
	char node[NODE_NAME_MAX + 1];
	uint64_t count;
};
struct bus_gather_result {
	struct bus_answer *answers; /* this node first */
	size_t n_answers;
	char (*missing)[NODE_NAME_MAX + 1]; /* alive nodes that did not answer */
	size_t n_missing;
	const char *error; /* the bus could not be used: only this node acted */
};
typedef void (*bus_gather_fn)(void *arg, const struct bus_gather_result *res);
struct bus_gather;
struct bus_gather *bus_kick(struct bus *b, const char *account, const char *dest,
                            const char *except, uint64_t wait_ms, bus_gather_fn done, void *arg);
/* The caller no longer waits (shutdown): done will not be called. */
void bus_gather_cancel(struct bus_gather *g);

/* This node is stopping: the others stop expecting its answers. */
void bus_leave(struct bus *b);

/* {"node","subscribed","nodes":[{"node","age_s","alive"}]} for /stats */
json_t *bus_status_json(struct bus *b);

#endif
