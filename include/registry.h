/*
 * Live sessions, process-wide: what the admin API lists and kicks.
 *
 * Each session embeds a struct live_session and registers it on its worker
 * thread. Kicks are posted to the session's own event base and looked up
 * again by id there, so a session that ended in the meantime is simply not
 * found; nothing is ever touched from the wrong thread.
 */
#ifndef MAILSPLICE_REGISTRY_H
#define MAILSPLICE_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "config.h"

struct live_session {
	uint64_t id;
	char session_id[40]; /* the id in logs and in the announcement */
	struct event_base *base;
	/* called on base's thread when a kick for this session arrives */
	void (*kick)(struct live_session *ls);

	/* written by the owning thread under the registry lock (registry_update) */
	char account[256]; /* canonical account, "" before the login */
	char listener[64];
	enum proto protocol;
	char client[64];      /* "ip:port" of the real client */
	char destination[64]; /* "" before routing */
	const char *state;    /* "login", "backend", "relay" */
	const char *data_path;
	uint64_t started_ms; /* wall clock, ms since epoch */
	/* bytes relayed each way, published by the relay (no lock needed) */
	atomic_uint_fast64_t bytes_up, bytes_down;
	uint32_t moves; /* times handed over to a new process */
	int pid;        /* the process holding it if not this one (draining after an
	                   upgrade, docs/upgrade.md), else 0 */

	struct live_session *prev, *next;
};

void registry_add(struct live_session *ls);
void registry_remove(struct live_session *ls);
/* Run fn(ls, arg) under the registry lock, for the owner to change fields. */
void registry_update(struct live_session *ls, void (*fn)(struct live_session *, void *), void *arg);

/* Post a kick to every live session of account (canonical form); NULL
 * destination = any. Returns how many were asked to close. */
size_t registry_kick(const char *account, const char *destination);
/* The same for the sessions that are not on destination (a move): those
 * still logging in, whose destination is not known yet, included. */
size_t registry_kick_except(const char *account, const char *destination);
/* Post a kick to the session with this id (logs and announcements). */
bool registry_kick_id(const char *session_id);
size_t registry_count(void);
/* Live sessions, and how many of them are relayed (for the service
 * manager's status line: one walk of the list under the lock). */
void registry_counts(size_t *total, size_t *relayed);
/* JSON array of live sessions (all, or one account's). Caller decrefs. */
json_t *registry_list(const char *account);

#endif
