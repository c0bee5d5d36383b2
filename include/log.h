/*
 * Logging: one line per event on stderr, as key=value pairs, so that both
 * humans and log shippers can read it:
 *
 *   ts=2026-11-22T12:00:00.123Z level=info event=session id=Ab3x proto=imap ...
 *
 * Values that come from the network (user names, SNI, commands) go through
 * lb_str(), which quotes and escapes them: a client cannot forge a field or
 * a line. Secrets are never passed to the logger at all.
 */
#ifndef MAILSPLICE_LOG_H
#define MAILSPLICE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

/* Parse "error" | "warn" | "info" | "debug" | "trace" (= debug). */
bool log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);
/* Send lines to fd instead of stderr (tests). */
void log_set_fd(int fd);

/* A log line under construction. */
struct logbuf {
	enum log_level level;
	size_t len;
	bool truncated;
	char buf[2048];
};

void lb_init(struct logbuf *lb, enum log_level level, const char *event);
/* key="value" with quoting/escaping as needed; NULL prints key=- */
void lb_str(struct logbuf *lb, const char *key, const char *val);
/* the same for a byte string that may hold anything */
void lb_mem(struct logbuf *lb, const char *key, const void *val, size_t len);
void lb_int(struct logbuf *lb, const char *key, long long val);
void lb_uint(struct logbuf *lb, const char *key, unsigned long long val);
/* raw text appended as-is (trusted, already key=value formatted) */
void lb_raw(struct logbuf *lb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lb_emit(struct logbuf *lb);

/* One-shot: log_msg(LOG_INFO, "startup", "listeners=%d", n). The format must
 * only carry trusted text; network data goes through lb_str(). */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define log_error(ev, ...) log_msg(LOG_ERROR, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_msg(LOG_WARN, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_msg(LOG_INFO, ev, __VA_ARGS__)
#define log_debug(ev, ...) log_msg(LOG_DEBUG, ev, __VA_ARGS__)

#endif
