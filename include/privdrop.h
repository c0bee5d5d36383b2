/*
 * Dropping root after start-up: listeners are bound and BPF objects loaded
 * as root, then the daemon runs as [server] user/group with only the
 * capabilities the data path still needs.
 */
#ifndef MAILSPLICE_PRIVDROP_H
#define MAILSPLICE_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>

#include <sys/capability.h>

/* Switch to user (and group, or the user's primary group when NULL),
 * keeping exactly the capabilities in keep (effective and permitted),
 * and forbid regaining any other (no_new_privs). Must run before any
 * thread is started: capabilities are per thread. */
bool privdrop(const char *user, const char *group, const cap_value_t *keep, size_t n_keep,
              char *err, size_t errlen);

/* Raise RLIMIT_NOFILE to its hard limit: every session holds two sockets. */
void raise_fd_limit(void);

#endif
