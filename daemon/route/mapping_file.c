/*
 * The file mapping store: "identifier<whitespace>destination" per line,
 * '#' comments, blank lines ignored (see mapping.h).
 *
 * Edits never lose the rest of the file: the new content is built from the
 * current file (re-read if someone edited it since we last looked), written
 * to a temporary file beside it, fsynced, renamed into place, and the
 * directory fsynced so the rename itself survives a crash.
 */
#include "mapping.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A line longer than this is not a mapping, it is a mistake. */
#define MAPPING_LINE_MAX 1024

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Split one line into identifier and destination. Returns 0 for a blank or
 * comment line, 1 for a mapping, -1 with *why on a syntax error. */
static int split_line(const char *line, size_t len, const char **id, size_t *id_len,
                      const char **dest, size_t *dest_len, const char **why)
{
	size_t i = 0;

	while (i < len && is_space(line[i]))
		i++;
	if (i == len || line[i] == '#')
		return 0;
	*id = line + i;
	while (i < len && !is_space(line[i]) && line[i] != '#')
		i++;
	*id_len = (size_t)(line + i - *id);
	while (i < len && is_space(line[i]))
		i++;
	if (i == len || line[i] == '#') {
		*why = "missing destination after the identifier";
		return -1;
	}
	*dest = line + i;
	while (i < len && !is_space(line[i]) && line[i] != '#')
		i++;
	*dest_len = (size_t)(line + i - *dest);
	while (i < len && is_space(line[i]))
		i++;
	if (i < len && line[i] != '#') {
		*why = "more than two fields (expected: identifier destination)";
		return -1;
	}
	return 1;
}

static int find_dest(const char *const *names, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			return (int)i;
	}
	return -1;
}

/* Iterate over lines: returns false at the end. */
static bool next_line(const char *data, size_t len, size_t *pos, const char **line,
                      size_t *line_len)
{
	const char *nl;

	if (*pos >= len)
		return false;
	*line = data + *pos;
	nl = memchr(*line, '\n', len - *pos);
	*line_len = nl ? (size_t)(nl - *line) : len - *pos;
	*pos += *line_len + (nl ? 1 : 0);
	return true;
}

/* The line that first mapped account (only needed for an error message,
 * so a second scan is cheaper than remembering every line number). */
static unsigned first_line_of(const char *data, size_t len, const struct account_rules *rules,
                              const char *account)
{
	const char *line, *id, *dest, *why;
	size_t pos = 0, line_len, id_len, dest_len;
	char canon[ACCOUNT_MAX + 1];

	for (unsigned lineno = 1; next_line(data, len, &pos, &line, &line_len); lineno++) {
		if (split_line(line, line_len, &id, &id_len, &dest, &dest_len, &why) == 1 &&
		    !account_canonical(rules, id, id_len, canon, sizeof(canon)) &&
		    strcmp(canon, account) == 0)
			return lineno;
	}
	return 0;
}

bool mapping_parse(const char *path, const char *data, size_t len,
                   const struct account_rules *rules, const char *const *dest_names, size_t n_dests,
                   struct strmap *out, char *err, size_t errlen)
{
	const char *line, *id, *dest, *why;
	size_t pos = 0, line_len, id_len, dest_len;
	unsigned lineno = 0;
	char account[ACCOUNT_MAX + 1];
	bool ok = false;

	strmap_init(out);
	/* reserving for a typical line length avoids rehashing a
	 * million-entry table several times while loading */
	if (!strmap_reserve(out, len / 24 + 16))
		goto oom;
	while (next_line(data, len, &pos, &line, &line_len)) {
		lineno++;
		if (line_len > MAPPING_LINE_MAX) {
			snprintf(err, errlen, "%s:%u: line longer than %d bytes", path, lineno,
			         MAPPING_LINE_MAX);
			goto fail;
		}
		if (memchr(line, '\0', line_len)) {
			snprintf(err, errlen, "%s:%u: NUL byte in line", path, lineno);
			goto fail;
		}
		int r = split_line(line, line_len, &id, &id_len, &dest, &dest_len, &why);
		if (r == 0)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
			goto fail;
		}
		int d = find_dest(dest_names, n_dests, dest, dest_len);
		if (d < 0) {
			snprintf(err, errlen, "%s:%u: %.*s: unknown destination '%.*s'", path,
			         lineno, (int)id_len, id, (int)dest_len, dest);
			goto fail;
		}
		why = account_canonical(rules, id, id_len, account, sizeof(account));
		if (why) {
			snprintf(err, errlen, "%s:%u: %.*s: %s", path, lineno, (int)id_len, id,
			         why);
			goto fail;
		}
		uint64_t prev;
		if (strmap_get(out, account, &prev)) {
			/* the same account twice is harmless when both lines
			 * agree; when they disagree, routing would depend on
			 * line order, which nobody reading the file expects */
			if ((int)prev != d) {
				snprintf(
				        err, errlen,
				        "%s:%u: %.*s: account %s is already mapped to '%s' on line "
				        "%u",
				        path, lineno, (int)id_len, id, account, dest_names[prev],
				        first_line_of(data, len, rules, account));
				goto fail;
			}
			continue;
		}
		if (!strmap_set(out, account, (uint64_t)d))
			goto oom;
	}
	ok = true;
	goto done;
oom:
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	strmap_free(out);
done:
	return ok;
}

static bool read_whole(const char *path, char **data, size_t *len, struct stat *st, char *err,
                       size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = NULL;
	size_t have = 0;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return false;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return false;
	}
	buf = malloc((size_t)st->st_size + 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return false;
	}
	/* read until EOF rather than trusting st_size: the file may be
	 * growing under a concurrent editor */
	for (;;) {
		if (have == (size_t)st->st_size) {
			char probe;
			ssize_t r = read(fd, &probe, 1);
			if (r == 0)
				break;
			if (r < 0 && errno == EINTR)
				continue;
			snprintf(err, errlen, "%s: changed while reading; try again", path);
			goto fail;
		}
		ssize_t r = read(fd, buf + have, (size_t)st->st_size - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0) {
			snprintf(err, errlen, "%s: changed while reading; try again", path);
			goto fail;
		}
		have += (size_t)r;
	}
	buf[have] = '\0';
	close(fd);
	*data = buf;
	*len = have;
	return true;
fail:
	free(buf);
	close(fd);
	return false;
}

static void remember_identity(struct mapping_file *mf, const struct stat *st)
{
	mf->dev = st->st_dev;
	mf->ino = st->st_ino;
	mf->size = st->st_size;
	mf->mtime = st->st_mtim;
}

static bool same_identity(const struct mapping_file *mf, const struct stat *st)
{
	return mf->dev == st->st_dev && mf->ino == st->st_ino && mf->size == st->st_size &&
	       mf->mtime.tv_sec == st->st_mtim.tv_sec && mf->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

bool mapping_file_load(struct mapping_file *mf, char *err, size_t errlen)
{
	struct strmap table;
	struct stat st;
	char *data;
	size_t len;

	if (!read_whole(mf->path, &data, &len, &st, err, errlen))
		return false;
	if (!mapping_parse(mf->path, data, len, mf->rules, mf->dest_names, mf->n_dests, &table, err,
	                   errlen)) {
		free(data);
		return false;
	}
	strmap_free(&mf->table);
	mf->table = table;
	free(mf->content);
	mf->content = data;
	mf->content_len = len;
	remember_identity(mf, &st);
	return true;
}

void mapping_file_free(struct mapping_file *mf)
{
	strmap_free(&mf->table);
	free(mf->content);
	free(mf->path);
	mf->content = NULL;
	mf->path = NULL;
}

/* Append to a growing buffer. */
struct growbuf {
	char *p;
	size_t len, cap;
};

static bool gb_put(struct growbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return false;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

/* Write data to path durably (temp file + fsync + rename + dir fsync). */
static bool write_durably(const char *path, const char *data, size_t len, mode_t mode, char *err,
                          size_t errlen)
{
	char tmp[4096], dir[4096];
	int fd, dfd;
	size_t off = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return false;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return false;
	}
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			goto fail;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0) {
		snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "%s: rename: %s", path, strerror(errno));
		goto fail;
	}
	str_copy(dir, path, sizeof(dir));
	dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		/* without this the rename may not survive a power cut */
		if (fsync(dfd) < 0) {
			snprintf(err, errlen, "%s: fsync of directory: %s", path, strerror(errno));
			close(dfd);
			return false;
		}
		close(dfd);
	}
	return true;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return false;
}

bool mapping_file_put(struct mapping_file *mf, const char *account, int dest, bool *existed,
                      char *err, size_t errlen)
{
	struct growbuf out = {0};
	struct stat st;
	const char *line, *id, *dname, *why;
	size_t pos = 0, line_len, id_len, dname_len;
	char canon[ACCOUNT_MAX + 1];
	bool replaced = false;
	mode_t mode = 0644;

	*existed = false;
	/* someone edited the file by hand since we read it: start from what
	 * is on disk now, or their edit would be lost (this also applies
	 * their other changes, exactly as a reload would) */
	if (stat(mf->path, &st) == 0) {
		mode = st.st_mode & 07777;
		if (!same_identity(mf, &st) && !mapping_file_load(mf, err, errlen))
			return false;
	}
	for (unsigned lineno = 1; next_line(mf->content, mf->content_len, &pos, &line, &line_len);
	     lineno++) {
		bool nl = pos <= mf->content_len && line + line_len < mf->content + mf->content_len;
		int r = split_line(line, line_len, &id, &id_len, &dname, &dname_len, &why);
		if (r == 1 && !account_canonical(mf->rules, id, id_len, canon, sizeof(canon)) &&
		    strcmp(canon, account) == 0) {
			*existed = true;
			if (dest < 0 || replaced)
				continue; /* drop this line */
			replaced = true;
			if (!gb_put(&out, account, strlen(account)) || !gb_put(&out, "\t", 1) ||
			    !gb_put(&out, mf->dest_names[dest], strlen(mf->dest_names[dest])) ||
			    !gb_put(&out, "\n", 1))
				goto oom;
			continue;
		}
		if (!gb_put(&out, line, line_len) || (nl && !gb_put(&out, "\n", 1)))
			goto oom;
	}
	if (dest >= 0 && !replaced) {
		if (out.len && out.p[out.len - 1] != '\n' && !gb_put(&out, "\n", 1))
			goto oom;
		if (!gb_put(&out, account, strlen(account)) || !gb_put(&out, "\t", 1) ||
		    !gb_put(&out, mf->dest_names[dest], strlen(mf->dest_names[dest])) ||
		    !gb_put(&out, "\n", 1))
			goto oom;
	}
	if (!out.p && !gb_put(&out, "", 0))
		goto oom;
	if (!write_durably(mf->path, out.p, out.len, mode, err, errlen)) {
		free(out.p);
		return false;
	}
	/* the table gets the same edit; the content we just wrote becomes
	 * the reference for the next hand-edit check */
	if (dest >= 0)
		strmap_set(&mf->table, account, (uint64_t)dest);
	else
		strmap_del(&mf->table, account);
	free(mf->content);
	mf->content = out.p;
	mf->content_len = out.len;
	if (stat(mf->path, &st) == 0)
		remember_identity(mf, &st);
	return true;
oom:
	free(out.p);
	snprintf(err, errlen, "%s: out of memory", mf->path);
	return false;
}
