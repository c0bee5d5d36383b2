/*
 * TOML 1.0 parser: a strict, pure (no I/O) parser that builds a document tree.
 *
 * Debian 12 packages no TOML library, so this one is ours. Every value and
 * table remembers the line it was defined on, so the configuration layer can
 * report errors as FILE:LINE: key: what is wrong.
 */
#ifndef MAILSPLICE_TOML_H
#define MAILSPLICE_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type {
	TOML_TABLE,
	TOML_ARRAY,
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL, /* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,     /* 1979-05-27 */
	TOML_TIME_LOCAL,     /* 07:32:00 */
};

struct toml_value;

struct toml_keyval {
	char *key; /* UTF-8, NUL-terminated; key_len counts an embedded NUL */
	size_t key_len;
	struct toml_value *value;
};

struct toml_value {
	enum toml_type type;
	/* 1-based line of the key (for key = value), of the [header] for a
	 * table or an array-of-tables element, or of the value itself for an
	 * array element. Implicitly created tables carry the line that first
	 * created them. */
	unsigned line;
	unsigned flags; /* parser-private bookkeeping */
	union {
		struct {
			struct toml_keyval *items; /* in definition order */
			size_t len, cap;
		} table;
		struct {
			struct toml_value **items;
			size_t len, cap;
		} array;
		struct {
			char *ptr; /* UTF-8, NUL-terminated; len counts embedded NULs */
			size_t len;
		} string;
		int64_t integer;
		double fp;
		bool boolean;
		/* date/time types: the text as written, with the separator
		 * normalised to 'T' and the zone designator to upper case. */
		char *datetime;
	} u;
};

/*
 * Containers (tables, arrays) nest at most this deep, counting every
 * [header] part, dotted-key part, array and inline table from the root;
 * deeper input is an error rather than a risk to the stack.
 */
#define TOML_MAX_DEPTH 128

struct toml_error {
	unsigned line; /* 1-based line of the error */
	char msg[200];
};

/*
 * Parse a whole document. Returns the root table (its line is 0: it has no
 * header), or NULL with *err filled in. The input need not be NUL-terminated.
 * Invalid UTF-8, control characters and every other violation of TOML 1.0
 * are errors.
 */
struct toml_value *toml_parse(const char *data, size_t len, struct toml_error *err);

void toml_free(struct toml_value *v);

/* Look a key up in a table (NULL if absent or if t is not a table). */
const struct toml_value *toml_get(const struct toml_value *t, const char *key);

/* Human-readable type name ("string", "integer", "table", ...). */
const char *toml_type_name(enum toml_type type);

#endif
