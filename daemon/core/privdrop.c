/*
 * Privilege drop (see privdrop.h). No shell-outs: libc and libcap only.
 */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

bool privdrop(const char *user, const char *group, const cap_value_t *keep, size_t n_keep,
              char *err, size_t errlen)
{
	struct passwd *pw = getpwnam(user);
	gid_t gid;

	if (!pw) {
		snprintf(err, errlen, "server.user: no such user \"%s\"", user);
		return false;
	}
	gid = pw->pw_gid;
	if (group) {
		struct group *gr = getgrnam(group);
		if (!gr) {
			snprintf(err, errlen, "server.group: no such group \"%s\"", group);
			return false;
		}
		gid = gr->gr_gid;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, errlen, "server.user: \"%s\" is root; name an unprivileged user",
		         user);
		return false;
	}
	/* keep the permitted set across the uid change, then trim it */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setgroups(1, &gid) != 0 ||
	    setresgid(gid, gid, gid) != 0 || setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0) {
		snprintf(err, errlen, "switching to %s: %s", user, strerror(errno));
		return false;
	}
	cap_t caps = cap_init();
	if (!caps) {
		snprintf(err, errlen, "cap_init: %s", strerror(errno));
		return false;
	}
	if (n_keep && (cap_set_flag(caps, CAP_PERMITTED, (int)n_keep, keep, CAP_SET) != 0 ||
	               cap_set_flag(caps, CAP_EFFECTIVE, (int)n_keep, keep, CAP_SET) != 0)) {
		snprintf(err, errlen, "cap_set_flag: %s", strerror(errno));
		cap_free(caps);
		return false;
	}
	if (cap_set_proc(caps) != 0) {
		snprintf(err, errlen, "cap_set_proc: %s", strerror(errno));
		cap_free(caps);
		return false;
	}
	cap_free(caps);
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, errlen, "no_new_privs: %s", strerror(errno));
		return false;
	}
	/* the proof: root must be gone for good */
	if (setuid(0) == 0 || seteuid(0) == 0) {
		snprintf(err, errlen, "could regain root after dropping privileges");
		return false;
	}
	return true;
}

void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
