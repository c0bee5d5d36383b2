/*
 * The admin API: HTTPS only, bearer token, on the main thread's event loop.
 * Endpoints follow the Stalwart migration proxy's admin API so the same
 * curl runbooks work; see docs/admin-api.md.
 */
#ifndef MAILSPLICE_ADMIN_H
#define MAILSPLICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "bus.h"
#include "config.h"
#include "mapping.h"

/* What main provides; either may be NULL. msg says what happened (on
 * success it becomes the "note" of POST /config/reload). */
struct admin_hooks {
	/* re-read and validate the configuration file; NULL: 503 */
	bool (*reload_config)(char *msg, size_t len);
	/* re-read the mapping file; NULL: router_reload() directly */
	bool (*reload_mappings)(char *msg, size_t len);
	/* the fleet: changes are sent to every node sharing the store */
	struct bus *bus;
};

/* Bind [admin] bind and serve on base (the main thread's loop). tls: the
 * context to present (the default [tls.certificate]); admin.cert/admin.key,
 * when set, take precedence. cfg and router must outlive the API. */
bool admin_start(struct event_base *base, const struct config *cfg, struct router *router,
                 SSL_CTX *tls, const struct admin_hooks *hooks, char *err, size_t errlen);
/* Stop accepting admin requests (shutdown). Safe to call twice. */
void admin_stop(void);

/* Hand-over (docs/upgrade.md): the predecessor's listening socket, used by
 * the next admin_start if it is on [admin] bind (closed otherwise). */
void admin_inherit_listener(int fd);
bool admin_inherited_used(void);
/* The listening socket, -1 when the API is not running. */
int admin_listen_fd(void);

#endif
