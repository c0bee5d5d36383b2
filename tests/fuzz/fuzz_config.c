/* libFuzzer: the configuration loader on top of the TOML parser
 * (daemon/core/config.c, config_load with check_files = false). config_load
 * takes a path, so each input is written to one memfd and loaded through
 * /proc/self/fd/N; nothing else touches the disk except the user/group
 * look-ups of [server]. Inputs that set [admin] bearer_token_file are
 * skipped: the loader reads that file whatever check_files says, and a
 * path such as /dev/stdin would block the fuzzer. The admin token
 * variables are unset so the environment plays no part.
 * Invariants: a refused file has a terminated "PATH..." message; a loaded
 * one has destinations with unique names that config_dest_index finds at
 * their own index, a NULL-terminated dest_names, valid default and
 * pass-through indexes, listeners with at least one bind and, when they
 * accept PROXY headers, at least one trusted range, ports 1..65535 on
 * every declared endpoint, proxy_protocol_version 1 or 2, and mapping
 * rules that point into the configuration itself. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "toml.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
	if (memfd < 0) {
		perror("memfd_create");
		abort();
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	unsetenv("MAILSPLICE_ADMIN_TOKEN");
	unsetenv("PROXY_ADMIN_TOKEN");
	return 0;
}

/* Whether loading data would open [admin] bearer_token_file. */
static bool reads_token_file(const uint8_t *data, size_t size)
{
	struct toml_error terr;
	struct toml_value *root = toml_parse((const char *)data, size, &terr);
	bool reads;

	if (!root)
		return false; /* config_load stops at the same error */
	reads = toml_get(toml_get(root, "admin"), "bearer_token_file") != NULL;
	toml_free(root);
	return reads;
}

static void check_config(const struct config *c)
{
	assert(c->n_dests > 0 && c->n_listeners > 0);
	assert(c->dest_names[c->n_dests] == NULL);
	for (size_t i = 0; i < c->n_dests; i++) {
		const struct cfg_destination *d = &c->dests[i];
		assert(c->dest_names[i] == d->name);
		assert(config_dest_index(c, d->name) == (int)i);
		assert(d->host &&
		       (d->proxy_protocol_version == 1 || d->proxy_protocol_version == 2));
		for (int p = 0; p < PROTO_COUNT; p++) {
			assert(!d->endpoint[p].present || d->endpoint[p].port >= 1);
			assert((unsigned)config_forwarding(d, (enum proto)p) <= FORWARD_XCLIENT);
		}
	}
	assert(c->default_dest >= 0 && (size_t)c->default_dest < c->n_dests);
	assert(c->passthrough_dest == -1 ||
	       (c->passthrough_dest >= 0 && (size_t)c->passthrough_dest < c->n_dests));
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct cfg_listener *ls = &c->listeners[i];
		assert(ls->name && ls->n_binds >= 1);
		for (size_t j = 0; j < ls->n_binds; j++)
			assert(ls->binds[j].text && (ls->binds[j].addr.ss_family == AF_INET ||
			                             ls->binds[j].addr.ss_family == AF_INET6));
		assert(ls->proxy_protocol == PROXY_ACCEPT_OFF || ls->n_proxy_trusted >= 1);
	}
	assert(c->rules.default_domain == c->default_domain);
	assert(c->rules.master_separators == c->master_separators);
	assert(!c->master_separators || !strchr(c->master_separators, '@'));
	assert(c->n_unserved <= sizeof(c->unserved) / sizeof(c->unserved[0]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char err[16384];
	struct config *c;

	if (reads_token_file(data, size))
		return 0;
	if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
		abort();
	c = config_load(path, false, err, sizeof(err));
	assert(memchr(err, '\0', sizeof(err)));
	if (!c) {
		assert(strncmp(err, path, strlen(path)) == 0);
		return 0;
	}
	check_config(c);
	config_free(c);
	return 0;
}
