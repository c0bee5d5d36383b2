/*
 * Inside the admin API: admin.c (HTTPS, auth, routing, the endpoints that
 * answer at once) and admin_fleet.c (the endpoints that wait for a remote
 * store or for the other nodes, and answer later: evhttp keeps a request
 * until it is answered, even when its client has gone).
 */
#ifndef MAILSPLICE_ADMIN_INTERNAL_H
#define MAILSPLICE_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>
#include <jansson.h>

#include "admin_route.h"
#include "bus.h"
#include "config.h"
#include "mapping.h"

/* One request being answered. query, form and json are only valid while
 * the request is being dispatched. */
struct admin_request {
	struct evhttp_request *req;
	enum admin_endpoint ep;
	char client[64];
	const char *query; /* after '?', or NULL */
	/* the body, when it carries parameters: a form or a JSON object */
	char *form;
	size_t form_len;
	json_t *json;
};

void admin_reply_text(struct admin_request *r, int code, const char *text);
void admin_reply_json(struct admin_request *r, int code, json_t *j);
void admin_log_change(struct admin_request *r, const char *action, const char *account,
                      const char *dest, const char *result);
/* The value of key, or NULL when absent or empty; 400 and *failed on an
 * unusable one. */
const char *admin_param(struct admin_request *r, const char *key, char *buf, size_t len,
                        bool *failed);
/* identifier -> canonical account, or a 400 already sent */
bool admin_canonical(struct admin_request *r, const char *ident, char *out, size_t len);

/* ---- admin_fleet.c ---- */

void fleet_init(const struct config *cfg, struct router *router, struct bus *bus);
/* Answer every request still waiting with 503 and forget it (shutdown). */
void fleet_stop(void);
/* Whether mapping reads and writes go through fleet_* (a remote store). */
bool fleet_remote(void);

void fleet_get_mapping(struct admin_request *r, const char *ident, const char *account);
/* dest NULL: delete */
void fleet_write_mapping(struct admin_request *r, const char *account, const char *dest);
void fleet_invalidate(struct admin_request *r, const char *account);
void fleet_kick(struct admin_request *r, const char *account, const char *dest);
void fleet_delay(struct admin_request *r, const char *account, uint64_t seconds,
                 const char *seconds_text);
void fleet_move(struct admin_request *r, const char *ident, const char *account, const char *dest);
json_t *fleet_status_json(void);

#endif
