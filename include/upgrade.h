/*
 * Restart without dropping a session: the hand-over of listeners and
 * kernel-held sessions to a new process (docs/upgrade.md).
 *
 *   mailspliced --upgrade -c FILE
 *     forks the successor, which starts up completely (configuration, TLS,
 *     data path probe, new binds) as root, connects to the running daemon's
 *     control socket and asks for the hand-over:
 *
 *   successor                      running daemon
 *     HELLO            ------>
 *                      <------     WELCOME (+ its log), LISTENER x N (+ fd),
 *                                  [SOCKMAP (+ 4 fds)], LISTENERS_END
 *     binds what is new, drops privileges, starts its workers (it accepts
 *     on the passed sockets from now on)
 *     COMMIT (taken)   ------>     stops accepting, MAINPID= to systemd
 *                      <------     COMMITTED
 *                      <------     SESSION (+ fds) ...  every session on a
 *     SESSION_ACK      ------>     kernel data path, as soon as it can move
 *                      <------     DRAINING / GONE: the ones that stay
 *                      <------     ROUND_DONE: the --upgrade command returns
 *                      <------     BYE: the old process exits when its last
 *                                  session ended (or shutdown_grace passed)
 *
 *   Anything that fails before COMMIT leaves the running daemon as it was
 *   and makes --upgrade exit non-zero with the reason.
 */
#ifndef MAILSPLICE_UPGRADE_H
#define MAILSPLICE_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "config.h"
#include "server.h"

struct upgrade_hooks {
	/* a successor committed: stop notifying the service manager, drain
	 * what stays, exit when it is gone (main thread) */
	void (*handed_over)(void);
	/* the successor side: the predecessor stopped accepting; this process
	 * is the service now (log the start, READY=1) */
	void (*took_over)(int from_pid);
};

/* ---- the running daemon ---- */

/* Serve hand-over requests on base (main thread): adopt the control socket
 * a predecessor passed, or bind [server] control_socket (as root, before
 * privileges are dropped). No socket configured or its directory missing:
 * upgrades are off (logged), not an error. */
bool upgrade_serve(struct server *srv, struct event_base *base, const struct upgrade_hooks *hooks,
                   char *err, size_t errlen);
/* A successor took over; this process only drains. */
bool upgrade_handed_over(void);
/* Sessions are still being offered or answered: do not exit yet. */
bool upgrade_busy(void);
/* From the drain timer: offer sessions that became movable since. */
void upgrade_tick(void);
/* Before exiting: tell the successor (BYE), close the control socket. */
void upgrade_finish(const char *why);
/* A session reported as staying here ended (session.c). Worker thread. */
void upgrade_session_gone(const char *id);

/* ---- the successor ---- */

/* --upgrade: fork. The parent waits for the child's verdict and returns
 * the exit status for main() to return; the child gets -1 and goes on
 * starting up. */
int upgrade_spawn(void);
bool upgrade_is_successor(void);
/* Connect to the running daemon (cfg->control_socket) and receive its
 * listening sockets; server_init, admin_start and upgrade_serve then adopt
 * what the new configuration still has. */
bool upgrade_connect(const struct config *cfg, char *err, size_t errlen);
/* Workers run: take over (COMMIT) and receive the sessions on base. */
bool upgrade_commit(struct server *srv, struct event_base *base, char *err, size_t errlen);
/* Start-up failed before COMMIT: tell the running daemon and --upgrade. */
void upgrade_abort(const char *reason);

#endif
