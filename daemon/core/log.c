/*
 * key=value logging to stderr (see log.h). Each line is assembled in a
 * stack buffer and written with a single write(2), so lines from several
 * threads never interleave.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

bool log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	if (strcasecmp(s, "trace") == 0) {
		*out = LOG_DEBUG;
		return true;
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_WARN;
		return true;
	}
	return false;
}

const char *log_level_name(enum log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "?";
}

void log_set_level(enum log_level level)
{
	current_level = level;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= current_level;
}

void log_set_fd(int fd)
{
	log_fd = fd;
}

static void lb_putc(struct logbuf *lb, char c)
{
	/* keep room for the trailing newline */
	if (lb->len + 2 > sizeof(lb->buf)) {
		lb->truncated = true;
		return;
	}
	lb->buf[lb->len++] = c;
}

static void lb_puts(struct logbuf *lb, const char *s)
{
	while (*s)
		lb_putc(lb, *s++);
}

void lb_init(struct logbuf *lb, enum log_level level, const char *event)
{
	struct timeval tv;
	struct tm tm;
	char ts[128];

	lb->level = level;
	lb->len = 0;
	lb->truncated = false;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts),
	         "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
	lb_puts(lb, ts);
	lb_puts(lb, log_level_name(level));
	lb_puts(lb, " event=");
	lb_puts(lb, event);
}

static bool needs_quotes(const unsigned char *p, size_t len)
{
	if (len == 0)
		return true;
	for (size_t i = 0; i < len; i++) {
		if (p[i] <= ' ' || p[i] == '"' || p[i] == '=' || p[i] == '\\' || p[i] >= 0x7f)
			return true;
	}
	return false;
}

void lb_mem(struct logbuf *lb, const char *key, const void *val, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = val;

	lb_putc(lb, ' ');
	lb_puts(lb, key);
	lb_putc(lb, '=');
	if (!val) {
		lb_putc(lb, '-');
		return;
	}
	if (!needs_quotes(p, len)) {
		for (size_t i = 0; i < len; i++)
			lb_putc(lb, (char)p[i]);
		return;
	}
	lb_putc(lb, '"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			lb_putc(lb, '\\');
			lb_putc(lb, (char)c);
		} else if (c < 0x20 || c == 0x7f) {
			/* control characters never reach the log raw: a client
			 * must not be able to start a new log line */
			lb_putc(lb, '\\');
			lb_putc(lb, 'x');
			lb_putc(lb, hex[c >> 4]);
			lb_putc(lb, hex[c & 15]);
		} else {
			lb_putc(lb, (char)c);
		}
	}
	lb_putc(lb, '"');
}

void lb_str(struct logbuf *lb, const char *key, const char *val)
{
	lb_mem(lb, key, val, val ? strlen(val) : 0);
}

void lb_int(struct logbuf *lb, const char *key, long long val)
{
	lb_raw(lb, " %s=%lld", key, val);
}

void lb_uint(struct logbuf *lb, const char *key, unsigned long long val)
{
	lb_raw(lb, " %s=%llu", key, val);
}

void lb_raw(struct logbuf *lb, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(tmp))
		lb->truncated = true;
	lb_puts(lb, tmp);
}

void lb_emit(struct logbuf *lb)
{
	int saved = errno;

	if (!log_enabled(lb->level))
		return;
	if (lb->truncated) {
		const char *mark = " truncated=1";
		size_t mlen = strlen(mark);
		if (lb->len + mlen + 1 > sizeof(lb->buf))
			lb->len = sizeof(lb->buf) - mlen - 1;
		memcpy(lb->buf + lb->len, mark, mlen);
		lb->len += mlen;
	}
	lb->buf[lb->len++] = '\n';
	/* one write per line; a short write on a pipe is not worth a retry
	 * loop that could interleave with another thread's line */
	ssize_t r = write(log_fd, lb->buf, lb->len);
	(void)r;
	errno = saved;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct logbuf lb;
	char tmp[1024];
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	lb_init(&lb, level, event);
	if (fmt && *fmt) {
		va_start(ap, fmt);
		n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
		va_end(ap);
		if (n > 0) {
			lb_putc(&lb, ' ');
			lb_puts(&lb, tmp);
			if ((size_t)n >= sizeof(tmp))
				lb.truncated = true;
		}
	}
	lb_emit(&lb);
}
