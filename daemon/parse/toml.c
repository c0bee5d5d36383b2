/*
 * Strict TOML 1.0.0 parser (see toml.h).
 *
 * Two passes. check_encoding() first proves the whole input is UTF-8 without
 * control characters (tab, LF and CR+LF aside), so the grammar never has to
 * think about bytes it cannot meet. Then a recursive-descent pass builds the
 * tree; recursion is bounded by TOML_MAX_DEPTH so hostile input cannot
 * exhaust the stack, and every step is linear in the input so big documents
 * stay cheap (tables past a few keys get a hash index).
 *
 * TOML forbids defining a table twice in its several disguises. Each table
 * and array remembers how it came to be (the TF_* flags) and the rules below
 * only ever ask "how was this made?":
 *   - a [header] may pass through any table or through the last element of
 *     an array of tables, but not through an inline table or a static array;
 *   - it may name a table only if that table was, until now, an implicit
 *     parent of an earlier header;
 *   - a dotted key may pass only through tables made by dotted keys, which
 *     can only be those of the current section or inline table.
 */
#include "toml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* How a table or array came to be (struct toml_value.flags). */
enum {
	TF_NODE = 1u << 0,     /* table allocated as a struct table_node */
	TF_EXPLICIT = 1u << 1, /* table named by a [header] or [[header]] */
	TF_DOTTED = 1u << 2,   /* table created by a dotted key */
	TF_INLINE = 1u << 3,   /* inline table: closed once written */
	TF_AOT = 1u << 4,      /* array created by [[header]] */
};

#define NOT_FOUND SIZE_MAX

/* ------------------------------------------------------------------ */
/* tables with a key index                                            */
/* ------------------------------------------------------------------ */

/* Below this many keys a linear scan beats hashing; above it, a table
 * gets an open-addressing index so 10k-key tables stay O(1) per key. */
#define INDEX_MIN_KEYS 16

struct table_node {
	struct toml_value value; /* first, so a table's toml_value is its node */
	size_t *slots;           /* item index + 1; 0 marks a free slot */
	size_t nslots;           /* 0 (no index yet) or a power of two */
};

static const struct table_node *node_of(const struct toml_value *t)
{
	return (const struct table_node *)t;
}

/*
 * FNV-1a with a final avalanche so the low bits used for the slot depend
 * on every byte. Not keyed: the keys come from the operator's own
 * configuration, and the parser keeps no process-wide state to hold a key.
 */
static uint64_t key_hash(const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static bool key_equals(const struct toml_keyval *kv, const char *key, size_t len)
{
	return kv->key_len == len && memcmp(kv->key, key, len) == 0;
}

static size_t table_find(const struct toml_value *t, const char *key, size_t len)
{
	const struct toml_keyval *items = t->u.table.items;
	const struct table_node *node = node_of(t);

	if ((t->flags & TF_NODE) && node->nslots) {
		size_t mask = node->nslots - 1;

		for (size_t i = key_hash(key, len) & mask; node->slots[i]; i = (i + 1) & mask) {
			if (key_equals(&items[node->slots[i] - 1], key, len))
				return node->slots[i] - 1;
		}
		return NOT_FOUND;
	}
	for (size_t i = 0; i < t->u.table.len; i++) {
		if (key_equals(&items[i], key, len))
			return i;
	}
	return NOT_FOUND;
}

static void index_put(struct table_node *node, size_t item)
{
	const struct toml_keyval *kv = &node->value.u.table.items[item];
	size_t mask = node->nslots - 1;
	size_t i = key_hash(kv->key, kv->key_len) & mask;

	while (node->slots[i])
		i = (i + 1) & mask;
	node->slots[i] = item + 1;
}

/* Keep the index at most half full; build it when the table outgrows a
 * linear scan. Called after the new item is in place. */
static bool index_added(struct table_node *node)
{
	size_t len = node->value.u.table.len;
	size_t want = node->nslots ? node->nslots : 64;

	if (!node->nslots && len < INDEX_MIN_KEYS)
		return true;
	if (node->nslots && len * 2 <= node->nslots) {
		index_put(node, len - 1);
		return true;
	}
	while (want < len * 2) {
		if (want > SIZE_MAX / 2 / sizeof(size_t))
			return false;
		want *= 2;
	}
	size_t *slots = calloc(want, sizeof(*slots));
	if (!slots)
		return false;
	free(node->slots);
	node->slots = slots;
	node->nslots = want;
	for (size_t i = 0; i < len; i++)
		index_put(node, i);
	return true;
}

/* Room for `need` items of `size` bytes: returns the (possibly moved)
 * array, or NULL with the old one untouched. */
static void *grow(void *items, size_t *cap, size_t need, size_t size)
{
	size_t n = *cap ? *cap : 4;
	void *moved;

	if (need <= *cap)
		return items;
	while (n < need) {
		if (n > SIZE_MAX / 2 / size)
			return NULL;
		n *= 2;
	}
	moved = realloc(items, n * size);
	if (moved)
		*cap = n;
	return moved;
}

void toml_free(struct toml_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.table.len; i++) {
			free(v->u.table.items[i].key);
			toml_free(v->u.table.items[i].value);
		}
		free(v->u.table.items);
		if (v->flags & TF_NODE)
			free(((struct table_node *)v)->slots);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.array.len; i++)
			toml_free(v->u.array.items[i]);
		free(v->u.array.items);
		break;
	case TOML_STRING:
		free(v->u.string.ptr);
		break;
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		free(v->u.datetime);
		break;
	case TOML_INTEGER:
	case TOML_FLOAT:
	case TOML_BOOL:
		break;
	}
	free(v);
}

const struct toml_value *toml_get(const struct toml_value *t, const char *key)
{
	size_t i;

	if (!t || t->type != TOML_TABLE || !key)
		return NULL;
	i = table_find(t, key, strlen(key));
	return i == NOT_FOUND ? NULL : t->u.table.items[i].value;
}

const char *toml_type_name(enum toml_type type)
{
	switch (type) {
	case TOML_TABLE:
		return "table";
	case TOML_ARRAY:
		return "array";
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOL:
		return "boolean";
	case TOML_DATETIME:
		return "offset date-time";
	case TOML_DATETIME_LOCAL:
		return "local date-time";
	case TOML_DATE_LOCAL:
		return "local date";
	case TOML_TIME_LOCAL:
		return "local time";
	}
	return "?";
}

/* ------------------------------------------------------------------ */
/* parser state and errors                                            */
/* ------------------------------------------------------------------ */

struct buf {
	char *p; /* NUL-terminated once anything was added */
	size_t len, cap;
};

/* A dotted key as parsed, its parts' text kept in one buffer. */
struct key_path {
	struct {
		size_t off, len;
	} part[TOML_MAX_DEPTH];
	size_t n;
	struct buf text;
};

struct parser {
	const char *cur, *end;
	unsigned line;
	struct toml_value *root;
	struct toml_value *section; /* where key = value lines go */
	unsigned section_depth;
	struct key_path key; /* the key being parsed, reused for every key */
	struct buf scratch;  /* float digits without underscores */
	char what[16];       /* describe_next() */
	char name[120];      /* key_name() */
	bool failed;
	struct toml_error *err;
};

static bool fail_at(struct parser *p, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static bool fail_at(struct parser *p, unsigned line, const char *fmt, ...)
{
	va_list ap;

	if (p->failed) /* keep the first, most precise error */
		return false;
	p->failed = true;
	p->err->line = line;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
	return false;
}

#define fail(p, ...) fail_at((p), (p)->line, __VA_ARGS__)

static bool out_of_memory(struct parser *p)
{
	return fail(p, "out of memory");
}

static bool buf_add(struct parser *p, struct buf *b, const char *s, size_t n)
{
	char *moved;

	if (n >= SIZE_MAX - b->len)
		return out_of_memory(p);
	moved = grow(b->p, &b->cap, b->len + n + 1, 1);
	if (!moved)
		return out_of_memory(p);
	b->p = moved;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

/* Hand the buffer's text over as a NUL-terminated string ("" if empty). */
static bool buf_take(struct parser *p, struct buf *b, char **text, size_t *len)
{
	if (!b->p && !buf_add(p, b, "", 0))
		return false;
	*text = b->p;
	*len = b->len;
	*b = (struct buf){0};
	return true;
}

static char *copy_text(struct parser *p, const char *s, size_t n)
{
	char *t = malloc(n + 1);

	if (!t) {
		out_of_memory(p);
		return NULL;
	}
	memcpy(t, s, n);
	t[n] = '\0';
	return t;
}

/* ------------------------------------------------------------------ */
/* cursor                                                             */
/* ------------------------------------------------------------------ */

static bool at_end(const struct parser *p)
{
	return p->cur >= p->end;
}

/* The byte k places ahead, or -1 past the end. */
static int peek_at(const struct parser *p, size_t k)
{
	return (size_t)(p->end - p->cur) > k ? (unsigned char)p->cur[k] : -1;
}

static int peek(const struct parser *p)
{
	return peek_at(p, 0);
}

/* check_encoding() guarantees a CR is always followed by LF. */
static bool at_newline(const struct parser *p)
{
	return peek(p) == '\n' || peek(p) == '\r';
}

static void count_line(struct parser *p)
{
	if (p->line < UINT_MAX)
		p->line++;
}

static void skip_newline(struct parser *p)
{
	if (peek(p) == '\r')
		p->cur++;
	p->cur++;
	count_line(p);
}

static void skip_spaces(struct parser *p)
{
	while (peek(p) == ' ' || peek(p) == '\t')
		p->cur++;
}

static void skip_comment(struct parser *p)
{
	if (peek(p) != '#')
		return;
	while (!at_end(p) && !at_newline(p))
		p->cur++;
}

/* The next character as an error message shows it. */
static const char *describe_next(struct parser *p)
{
	int c = peek(p);
	size_t n = 1;

	if (c < 0)
		return "end of input";
	if (c == '\n' || c == '\r')
		return "end of line";
	if (c == '\t')
		return "a tab";
	while (c >= 0x80 && n < 4 && (peek_at(p, n) & 0xc0) == 0x80)
		n++; /* a whole UTF-8 sequence; the input is known to be valid */
	snprintf(p->what, sizeof(p->what), "'%.*s'", (int)n, p->cur);
	return p->what;
}

static bool expect(struct parser *p, char c, const char *where)
{
	if (peek(p) != c)
		return fail(p, "expected '%c' %s, found %s", c, where, describe_next(p));
	p->cur++;
	return true;
}

/* After a key = value or a header only a comment may follow on the line. */
static bool expect_line_end(struct parser *p, const char *after)
{
	skip_spaces(p);
	skip_comment(p);
	if (at_end(p))
		return true;
	if (!at_newline(p))
		return fail(p, "expected end of line after %s, found %s", after, describe_next(p));
	skip_newline(p);
	return true;
}

/* ------------------------------------------------------------------ */
/* encoding                                                           */
/* ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0.
 * Rejects overlong forms, surrogates and code points past U+10FFFF. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* past U+10FFFF */
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}
	return len;
}

/* TOML allows no raw control character anywhere but tab and newlines. */
static bool check_encoding(struct parser *p, const unsigned char *s, size_t n)
{
	unsigned line = 1;
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];

		if (c == '\n') {
			if (line < UINT_MAX)
				line++;
			i++;
		} else if (c == '\r') {
			if (i + 1 == n || s[i + 1] != '\n')
				return fail_at(p, line, "carriage return without a line feed");
			i++;
		} else if (c < 0x20 && c != '\t') {
			return fail_at(p, line, "control character U+%04X is not allowed", c);
		} else if (c == 0x7f) {
			return fail_at(p, line, "control character U+007F is not allowed");
		} else if (c < 0x80) {
			i++;
		} else {
			size_t len = utf8_length(s + i, n - i);

			if (!len)
				return fail_at(p, line, "invalid UTF-8 (byte 0x%02X)", c);
			i += len;
		}
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* values                                                             */
/* ------------------------------------------------------------------ */

static struct toml_value *new_value(struct parser *p, enum toml_type type, unsigned line)
{
	struct toml_value *v = calloc(1, sizeof(*v));

	if (!v) {
		out_of_memory(p);
		return NULL;
	}
	v->type = type;
	v->line = line;
	return v;
}

static struct toml_value *new_table(struct parser *p, unsigned line, unsigned flags)
{
	struct table_node *node = calloc(1, sizeof(*node));

	if (!node) {
		out_of_memory(p);
		return NULL;
	}
	node->value.type = TOML_TABLE;
	node->value.line = line;
	node->value.flags = TF_NODE | flags;
	return &node->value;
}

static bool check_depth(struct parser *p, unsigned depth)
{
	if (depth > TOML_MAX_DEPTH)
		return fail(p, "nesting deeper than %d levels", TOML_MAX_DEPTH);
	return true;
}

/* Takes ownership of key and v, freeing both on failure. */
static bool table_add(struct parser *p, struct toml_value *t, char *key, size_t key_len,
                      struct toml_value *v)
{
	struct toml_keyval *items;

	items = grow(t->u.table.items, &t->u.table.cap, t->u.table.len + 1, sizeof(*items));
	if (!items)
		goto oom;
	t->u.table.items = items;
	items[t->u.table.len++] = (struct toml_keyval){key, key_len, v};
	if (!index_added((struct table_node *)t)) {
		t->u.table.len--;
		goto oom;
	}
	return true;
oom:
	free(key);
	toml_free(v);
	return out_of_memory(p);
}

/* Takes ownership of v, freeing it on failure. */
static bool array_add(struct parser *p, struct toml_value *a, struct toml_value *v)
{
	struct toml_value **items;

	items = grow(a->u.array.items, &a->u.array.cap, a->u.array.len + 1, sizeof(*items));
	if (!items) {
		toml_free(v);
		return out_of_memory(p);
	}
	a->u.array.items = items;
	items[a->u.array.len++] = v;
	return true;
}

/* ---- strings ---- */

static size_t utf8_encode(uint32_t cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* \uXXXX or \UXXXXXXXX, the cursor on the 'u' / 'U'. */
static bool parse_unicode_escape(struct parser *p, struct buf *out)
{
	size_t digits = *p->cur == 'u' ? 4 : 8;
	uint32_t cp = 0;
	char utf8[4];

	for (size_t i = 1; i <= digits; i++) {
		int d = hex_digit(peek_at(p, i));

		if (d < 0)
			return fail(p, "invalid escape '\\%c': expected %zu hex digits", *p->cur,
			            digits);
		cp = cp << 4 | (uint32_t)d;
	}
	if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return fail(p, "invalid escape '\\%.*s': not a Unicode scalar value",
		            (int)digits + 1, p->cur);
	p->cur += 1 + digits;
	return buf_add(p, out, utf8, utf8_encode(cp, utf8));
}

/* One escape sequence in a basic string, the cursor on the backslash. */
static bool parse_escape(struct parser *p, struct buf *out)
{
	static const char from[] = "btnfr\"\\";
	static const char to[] = "\b\t\n\f\r\"\\";
	const char *hit;
	int c;

	p->cur++;
	c = peek(p);
	if (c == 'u' || c == 'U')
		return parse_unicode_escape(p, out);
	hit = c > 0 ? strchr(from, c) : NULL;
	if (!hit) {
		if (c < 0 || at_newline(p))
			return fail(p, "invalid escape: backslash at end of line");
		if (c == '\t')
			return fail(p, "invalid escape: backslash before a tab");
		return fail(p, "invalid escape '\\%s", describe_next(p) + 1);
	}
	p->cur++;
	return buf_add(p, out, &to[hit - from], 1);
}

/* Copy bytes up to the next one in `stops` (or a newline), in one go. */
static bool copy_plain_run(struct parser *p, struct buf *out, const char *stops)
{
	const char *start = p->cur;

	while (!at_end(p) && !strchr(stops, *p->cur) && *p->cur != '\n' && *p->cur != '\r')
		p->cur++;
	return buf_add(p, out, start, (size_t)(p->cur - start));
}

/* "basic" or 'literal', on one line. */
static bool parse_single_line_string(struct parser *p, struct buf *out)
{
	char quote = *p->cur++;
	const char *stops = quote == '"' ? "\"\\" : "'";

	for (;;) {
		if (at_end(p) || at_newline(p))
			return fail(p, "unterminated string");
		if (*p->cur == quote) {
			p->cur++;
			return true;
		}
		if (*p->cur == '\\' && quote == '"') {
			if (!parse_escape(p, out))
				return false;
		} else if (!copy_plain_run(p, out, stops)) {
			return false;
		}
	}
}

/* A backslash, optional spaces, then a newline: the line break and all
 * white space after it are dropped. Returns false if this is not one. */
static bool skip_line_ending_backslash(struct parser *p)
{
	size_t k = 1;

	while (peek_at(p, k) == ' ' || peek_at(p, k) == '\t')
		k++;
	if (peek_at(p, k) != '\n' && peek_at(p, k) != '\r')
		return false;
	p->cur += k;
	while (at_newline(p) || peek(p) == ' ' || peek(p) == '\t') {
		if (at_newline(p))
			skip_newline(p);
		else
			p->cur++;
	}
	return true;
}

/* A run of quotes inside a multi-line string: fewer than three are
 * content; three close it, and up to two more before them are content. */
static bool take_quotes(struct parser *p, struct buf *out, bool *closed)
{
	char quote = *p->cur;
	size_t n = 0;

	while (peek_at(p, n) == quote)
		n++;
	*closed = n >= 3;
	if (n > 5)
		return fail(p, "too many quotes at the end of a multi-line string");
	p->cur += n;
	return buf_add(p, out, p->cur - n, *closed ? n - 3 : n);
}

/* """basic""" or '''literal''', the cursor on the first quote. */
static bool parse_multi_line_string(struct parser *p, struct buf *out)
{
	char quote = *p->cur;
	const char *stops = quote == '"' ? "\"\\" : "'";
	unsigned start_line = p->line;
	bool closed = false;

	p->cur += 3;
	if (at_newline(p)) /* a newline right after the opening is trimmed */
		skip_newline(p);
	while (!closed) {
		bool ok;

		if (at_end(p))
			return fail_at(p, start_line, "unterminated multi-line string");
		if (*p->cur == quote) {
			ok = take_quotes(p, out, &closed);
		} else if (at_newline(p)) {
			/* CR LF becomes LF: a file edited on Windows means the same */
			ok = buf_add(p, out, "\n", 1);
			skip_newline(p);
		} else if (*p->cur == '\\' && quote == '"') {
			ok = skip_line_ending_backslash(p) || parse_escape(p, out);
		} else {
			ok = copy_plain_run(p, out, stops);
		}
		if (!ok)
			return false;
	}
	return true;
}

static bool at_triple_quote(const struct parser *p)
{
	return peek_at(p, 1) == peek(p) && peek_at(p, 2) == peek(p);
}

static bool parse_string_value(struct parser *p, unsigned line, struct toml_value **out)
{
	struct buf b = {0};
	struct toml_value *v;
	bool ok = at_triple_quote(p) ? parse_multi_line_string(p, &b)
	                             : parse_single_line_string(p, &b);

	if (!ok || !(v = new_value(p, TOML_STRING, line))) {
		free(b.p);
		return false;
	}
	if (!buf_take(p, &b, &v->u.string.ptr, &v->u.string.len)) {
		free(v);
		return false;
	}
	*out = v;
	return true;
}

/* ---- numbers ---- */

/* How much of a bad token an error message quotes. */
static int shown(size_t n)
{
	return n > 60 ? 60 : (int)n;
}

static int digit_value(int c, unsigned base)
{
	int d = hex_digit(c);

	return d >= 0 && (unsigned)d < base ? d : -1;
}

/* An underscore must sit between two digits: 1_000, not _1, 1_, 1__0, 1_.0 */
static bool underscores_ok(const char *s, size_t n, unsigned base)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '_')
			continue;
		if (i == 0 || i + 1 == n || digit_value(s[i - 1], base) < 0 ||
		    digit_value(s[i + 1], base) < 0)
			return false;
	}
	return true;
}

static size_t skip_decimal_digits(const char *s, size_t n, size_t i)
{
	while (i < n && (digit_value(s[i], 10) >= 0 || s[i] == '_'))
		i++;
	return i;
}

/* 0x, 0o, 0b: the base a prefix letter selects, or 0. */
static unsigned prefix_base(char letter)
{
	switch (letter) {
	case 'x':
		return 16;
	case 'o':
		return 8;
	case 'b':
		return 2;
	default:
		return 0;
	}
}

static bool parse_integer(struct parser *p, const char *s, size_t n, int64_t *out)
{
	unsigned base = n > 2 && s[0] == '0' ? prefix_base(s[1]) : 0;
	bool negative = s[0] == '-';
	size_t i = base ? 2 : (s[0] == '+' || s[0] == '-');
	uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	uint64_t mag = 0;

	if (!base)
		base = 10; /* decimal: the only form that may carry a sign */
	if (i == n || !underscores_ok(s + i, n - i, base))
		return fail(p, "invalid integer '%.*s'", shown(n), s);
	for (size_t j = i; j < n; j++) {
		if (s[j] != '_' && digit_value(s[j], base) < 0)
			return fail(p, "invalid integer '%.*s'", shown(n), s);
	}
	if (base == 10 && s[i] == '0' && n - i > 1)
		return fail(p, "leading zeros are not allowed in '%.*s'", shown(n), s);
	for (size_t j = i; j < n; j++) {
		unsigned d = s[j] == '_' ? 0 : (unsigned)digit_value(s[j], base);

		if (s[j] == '_')
			continue;
		if (mag > (limit - d) / base)
			return fail(p, "integer '%.*s' is out of range", shown(n), s);
		mag = mag * base + d;
	}
	*out = !negative ? (int64_t)mag : mag > INT64_MAX ? INT64_MIN : -(int64_t)mag;
	return true;
}

/* [sign] int [. digits] [e [sign] digits], checked before strtod() sees it
 * (strtod would accept far more: hex floats, "1.", ".5", ...). */
static bool float_syntax_ok(const char *s, size_t n)
{
	size_t i = s[0] == '+' || s[0] == '-';
	size_t int_start = i, j;

	if (!underscores_ok(s, n, 10))
		return false;
	i = skip_decimal_digits(s, n, i);
	if (i == int_start || (s[int_start] == '0' && i - int_start > 1))
		return false;
	if (i < n && s[i] == '.') {
		j = skip_decimal_digits(s, n, i + 1);
		if (j == i + 1)
			return false;
		i = j;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		j = skip_decimal_digits(s, n, i);
		if (j == i)
			return false;
		i = j;
	}
	return i == n;
}

static bool parse_float(struct parser *p, const char *s, size_t n, double *out)
{
	char *end;

	if (!float_syntax_ok(s, n))
		return fail(p, "invalid float '%.*s'", shown(n), s);
	p->scratch.len = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '_' && !buf_add(p, &p->scratch, &s[i], 1))
			return false;
	}
	/* the daemon never calls setlocale(), so strtod() reads '.' */
	errno = 0;
	*out = strtod(p->scratch.p, &end);
	if (*end != '\0')
		return fail(p, "invalid float '%.*s'", shown(n), s);
	if (errno == ERANGE && isinf(*out))
		return fail(p, "float '%.*s' is out of range", shown(n), s);
	return true;
}

static bool token_is(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(s, word, n) == 0;
}

/* inf, nan, +inf, -nan, ... */
static bool parse_special_float(const char *s, size_t n, double *out)
{
	bool negative = n > 0 && s[0] == '-';
	size_t sign = n > 0 && (s[0] == '+' || s[0] == '-');

	if (token_is(s + sign, n - sign, "inf"))
		*out = negative ? -INFINITY : INFINITY;
	else if (token_is(s + sign, n - sign, "nan"))
		*out = negative ? -NAN : NAN;
	else
		return false;
	return true;
}

static bool looks_like_float(const char *s, size_t n)
{
	if (n > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b'))
		return false;
	return memchr(s, '.', n) || memchr(s, 'e', n) || memchr(s, 'E', n);
}

/* ---- dates and times ---- */

/* s[i..] starts with `pattern`, where 'd' stands for any decimal digit. */
static bool matches(const char *s, size_t n, size_t i, const char *pattern)
{
	size_t len = strlen(pattern);

	if (n < i || n - i < len)
		return false;
	for (size_t k = 0; k < len; k++) {
		char c = s[i + k];

		if (pattern[k] == 'd' ? c < '0' || c > '9' : c != pattern[k])
			return false;
	}
	return true;
}

static unsigned number_at(const char *s, size_t i, size_t count)
{
	unsigned v = 0;

	for (size_t k = i; k < i + count; k++)
		v = v * 10 + (unsigned)(s[k] - '0');
	return v;
}

static bool looks_like_date(const char *s, size_t n)
{
	return matches(s, n, 0, "dddd-");
}

static bool looks_like_time(const char *s, size_t n)
{
	return matches(s, n, 0, "dd:");
}

static unsigned days_in_month(unsigned year, unsigned month)
{
	static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

/* YYYY-MM-DD at s[*i]. */
static bool parse_date_part(struct parser *p, const char *s, size_t n, size_t *i)
{
	const char *text = s + *i;
	unsigned month, day;

	if (!matches(s, n, *i, "dddd-dd-dd"))
		return fail(p, "invalid date '%.*s'", shown(n), s);
	month = number_at(text, 5, 2);
	day = number_at(text, 8, 2);
	if (month < 1 || month > 12)
		return fail(p, "month out of range in '%.*s'", shown(n), s);
	if (day < 1 || day > days_in_month(number_at(text, 0, 4), month))
		return fail(p, "day out of range in '%.*s'", shown(n), s);
	*i += 10;
	return true;
}

/* HH:MM:SS[.fraction] at s[*i]; TOML 1.0 requires the seconds. */
static bool parse_time_part(struct parser *p, const char *s, size_t n, size_t *i)
{
	if (!matches(s, n, *i, "dd:dd:dd"))
		return fail(p, "invalid time in '%.*s' (HH:MM:SS expected)", shown(n), s);
	if (number_at(s, *i, 2) > 23)
		return fail(p, "hour out of range in '%.*s'", shown(n), s);
	if (number_at(s, *i + 3, 2) > 59)
		return fail(p, "minute out of range in '%.*s'", shown(n), s);
	if (number_at(s, *i + 6, 2) > 60) /* 60: a leap second */
		return fail(p, "second out of range in '%.*s'", shown(n), s);
	*i += 8;
	if (*i < n && s[*i] == '.') {
		if (!matches(s, n, *i + 1, "d"))
			return fail(p, "invalid fraction of a second in '%.*s'", shown(n), s);
		for (++*i; *i < n && s[*i] >= '0' && s[*i] <= '9'; ++*i)
			;
	}
	return true;
}

/* Z or +HH:MM / -HH:MM at s[*i]. */
static bool parse_offset_part(struct parser *p, const char *s, size_t n, size_t *i)
{
	if (s[*i] == 'Z' || s[*i] == 'z') {
		++*i;
		return true;
	}
	if ((s[*i] != '+' && s[*i] != '-') || !matches(s, n, *i + 1, "dd:dd"))
		return fail(p, "invalid time zone offset in '%.*s'", shown(n), s);
	if (number_at(s, *i + 1, 2) > 23 || number_at(s, *i + 4, 2) > 59)
		return fail(p, "time zone offset out of range in '%.*s'", shown(n), s);
	*i += 6;
	return true;
}

/* Which of the four date/time kinds s is, validating every field. */
static bool classify_datetime(struct parser *p, const char *s, size_t n, enum toml_type *type)
{
	size_t i = 0;

	if (!looks_like_date(s, n)) {
		*type = TOML_TIME_LOCAL;
		if (!parse_time_part(p, s, n, &i))
			return false;
	} else if (!parse_date_part(p, s, n, &i)) {
		return false;
	} else if (i == n) {
		*type = TOML_DATE_LOCAL;
	} else {
		if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
			return fail(p, "invalid date-time '%.*s'", shown(n), s);
		i++;
		if (!parse_time_part(p, s, n, &i))
			return false;
		*type = TOML_DATETIME_LOCAL;
		if (i < n) {
			*type = TOML_DATETIME;
			if (!parse_offset_part(p, s, n, &i))
				return false;
		}
	}
	if (i != n)
		return fail(p, "invalid date-time '%.*s'", shown(n), s);
	return true;
}

static bool parse_datetime(struct parser *p, const char *s, size_t n, struct toml_value *v)
{
	char *text;

	if (!classify_datetime(p, s, n, &v->type))
		return false;
	text = copy_text(p, s, n);
	if (!text)
		return false;
	if (v->type != TOML_DATE_LOCAL && v->type != TOML_TIME_LOCAL)
		text[10] = 'T';
	if (text[n - 1] == 'z')
		text[n - 1] = 'Z';
	v->u.datetime = text;
	return true;
}

/* ---- bare values: booleans, numbers, dates ---- */

static bool is_bare_value_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '+' || c == '-' || c == '.' || c == ':';
}

/* The extent of a bare value at the cursor. A date-time may use a space
 * between date and time, so "1979-05-27 07:32:00" is one token. */
static size_t bare_token_length(const struct parser *p)
{
	size_t n = 0;

	while (is_bare_value_char(peek_at(p, n)))
		n++;
	if (n == 10 && matches(p->cur, (size_t)(p->end - p->cur), 0, "dddd-dd-dd dd:")) {
		n = 11;
		while (is_bare_value_char(peek_at(p, n)))
			n++;
	}
	return n;
}

static bool parse_bare_value(struct parser *p, unsigned line, struct toml_value **out)
{
	const char *s = p->cur;
	size_t n = bare_token_length(p);
	struct toml_value *v = new_value(p, TOML_BOOL, line);
	bool ok = true;

	if (!v)
		return false;
	if (n == 0) {
		ok = fail(p, "expected a value, found %s", describe_next(p));
	} else if (token_is(s, n, "true") || token_is(s, n, "false")) {
		v->u.boolean = s[0] == 't';
	} else if (parse_special_float(s, n, &v->u.fp)) {
		v->type = TOML_FLOAT;
	} else if (looks_like_date(s, n) || looks_like_time(s, n)) {
		ok = parse_datetime(p, s, n, v);
	} else if (!(s[0] >= '0' && s[0] <= '9') && s[0] != '+' && s[0] != '-') {
		ok = fail(p, "invalid value '%.*s' (strings need quotes)", shown(n), s);
	} else if (looks_like_float(s, n)) {
		v->type = TOML_FLOAT;
		ok = parse_float(p, s, n, &v->u.fp);
	} else {
		v->type = TOML_INTEGER;
		ok = parse_integer(p, s, n, &v->u.integer);
	}
	if (!ok) {
		free(v); /* nothing was allocated inside it */
		return false;
	}
	p->cur += n;
	*out = v;
	return true;
}

/* ------------------------------------------------------------------ */
/* keys                                                               */
/* ------------------------------------------------------------------ */

static bool is_bare_key_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static bool parse_simple_key(struct parser *p, struct buf *out)
{
	const char *start = p->cur;
	int c = peek(p);

	if (c == '"' || c == '\'') {
		if (at_triple_quote(p))
			return fail(p, "a key cannot be a multi-line string");
		return parse_single_line_string(p, out);
	}
	while (is_bare_key_char(peek(p)))
		p->cur++;
	if (p->cur == start)
		return fail(p, "expected a key, found %s", describe_next(p));
	return buf_add(p, out, start, (size_t)(p->cur - start));
}

/* a, "a b", a.b.'c', with optional spaces around the dots, into p->key. */
static bool parse_key(struct parser *p)
{
	struct key_path *k = &p->key;

	k->n = 0;
	k->text.len = 0;
	for (;;) {
		size_t off = k->text.len;

		if (k->n == TOML_MAX_DEPTH)
			return fail(p, "key has more than %d parts", TOML_MAX_DEPTH);
		if (!parse_simple_key(p, &k->text))
			return false;
		k->part[k->n].off = off;
		k->part[k->n].len = k->text.len - off;
		k->n++;
		skip_spaces(p);
		if (peek(p) != '.')
			return true;
		p->cur++;
		skip_spaces(p);
	}
}

static const char *key_part(const struct parser *p, size_t i, size_t *len)
{
	*len = p->key.part[i].len;
	return p->key.text.p ? p->key.text.p + p->key.part[i].off : "";
}

/* Append one key part to the message buffer as TOML would write it. */
static size_t name_part(char *out, size_t size, const char *s, size_t len)
{
	size_t used = 0;
	bool bare = len > 0;

	for (size_t i = 0; i < len; i++)
		bare = bare && is_bare_key_char((unsigned char)s[i]);
	if (bare)
		return (size_t)snprintf(out, size, "%.*s", shown(len), s);
	used += (size_t)snprintf(out, size, "\"");
	for (size_t i = 0; i < len && used < size; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			used += (size_t)snprintf(out + used, size - used, "\\u%04X", c);
		else if (c == '"' || c == '\\')
			used += (size_t)snprintf(out + used, size - used, "\\%c", c);
		else
			used += (size_t)snprintf(out + used, size - used, "%c", c);
	}
	if (used < size)
		used += (size_t)snprintf(out + used, size - used, "\"");
	return used;
}

/* The first n parts of the current key, for messages: a.b."c d" */
static const char *key_name(struct parser *p, size_t n)
{
	size_t used = 0, size = sizeof(p->name);

	p->name[0] = '\0';
	for (size_t i = 0; i < n && used < size; i++) {
		size_t len;
		const char *s = key_part(p, i, &len);

		if (i > 0)
			used += (size_t)snprintf(p->name + used, size - used, ".");
		if (used < size)
			used += name_part(p->name + used, size - used, s, len);
	}
	if (used >= size) /* truncated: say so rather than cut a name silently */
		memcpy(p->name + size - 4, "...", 4);
	return p->name;
}

static char *key_copy(struct parser *p, size_t i, size_t *len)
{
	const char *s = key_part(p, i, len);

	return copy_text(p, s, *len);
}

/* The child of t named by key part i, or NULL. */
static struct toml_value *child(const struct parser *p, const struct toml_value *t, size_t i)
{
	size_t len, at;
	const char *s = key_part(p, i, &len);

	at = table_find(t, s, len);
	return at == NOT_FOUND ? NULL : t->u.table.items[at].value;
}

/* Create the table named by key part i inside t. */
static struct toml_value *add_table(struct parser *p, struct toml_value *t, size_t i, unsigned line,
                                    unsigned flags)
{
	struct toml_value *sub = new_table(p, line, flags);
	size_t len;
	char *key;

	if (!sub)
		return NULL;
	key = key_copy(p, i, &len);
	if (!key) {
		toml_free(sub);
		return NULL;
	}
	return table_add(p, t, key, len, sub) ? sub : NULL;
}

/* ------------------------------------------------------------------ */
/* key = value                                                        */
/* ------------------------------------------------------------------ */

static bool parse_value(struct parser *p, unsigned depth, struct toml_value **out);

/*
 * May a dotted key pass through sub (named by key part i)? Only if sub, too,
 * was made by a dotted key: that keeps [headers] and inline tables closed
 * (toml-lang/toml issue 846: a table's keys all sit in one place).
 */
static bool dotted_key_may_enter(struct parser *p, const struct toml_value *sub, size_t i)
{
	if (sub->type != TOML_TABLE)
		return fail(p, "key '%s' is already defined as %s", key_name(p, i + 1),
		            sub->type == TOML_ARRAY ? "an array" : "a value");
	if (sub->flags & TF_INLINE)
		return fail(p, "cannot add keys to inline table '%s'", key_name(p, i + 1));
	if (sub->flags & TF_EXPLICIT)
		return fail(p, "cannot add keys to table '%s' outside its [header]",
		            key_name(p, i + 1));
	if (!(sub->flags & TF_DOTTED))
		return fail(p, "cannot add keys to table '%s' created by the [header] on line %u",
		            key_name(p, i + 1), sub->line);
	return true;
}

/* Walk the dotted key's leading parts from t (at `depth`), creating tables
 * as needed; returns the table the last part goes into. */
static struct toml_value *dotted_parent(struct parser *p, struct toml_value *t, unsigned depth,
                                        unsigned line)
{
	for (size_t i = 0; i + 1 < p->key.n; i++) {
		struct toml_value *sub = child(p, t, i);

		if (!check_depth(p, depth + (unsigned)i + 1))
			return NULL;
		if (!sub)
			sub = add_table(p, t, i, line, TF_DOTTED);
		else if (!dotted_key_may_enter(p, sub, i))
			return NULL;
		if (!sub)
			return NULL;
		t = sub;
	}
	return t;
}

/* key = value into table t, which sits at `depth` (the root at 0). */
static bool parse_keyval(struct parser *p, struct toml_value *t, unsigned depth)
{
	unsigned line = p->line;
	struct toml_value *parent, *v;
	size_t nparts, key_len;
	char *key;

	if (!parse_key(p))
		return false;
	nparts = p->key.n;
	parent = dotted_parent(p, t, depth, line);
	if (!parent)
		return false;
	if (child(p, parent, nparts - 1))
		return fail(p, "duplicate key '%s'", key_name(p, nparts));
	/* copy the key now: keys inside the value reuse p->key */
	key = key_copy(p, nparts - 1, &key_len);
	if (!key)
		return false;
	skip_spaces(p);
	if (!expect(p, '=', "after a key")) {
		free(key);
		return false;
	}
	skip_spaces(p);
	if (!parse_value(p, depth + (unsigned)nparts, &v)) {
		free(key);
		return false;
	}
	v->line = line;
	return table_add(p, parent, key, key_len, v);
}

/* ---- arrays ---- */

/* Inside [ ]: spaces, newlines and comments may go anywhere. */
static void skip_array_space(struct parser *p)
{
	for (;;) {
		skip_spaces(p);
		skip_comment(p);
		if (!at_newline(p))
			return;
		skip_newline(p);
	}
}

static bool parse_array(struct parser *p, unsigned depth, struct toml_value **out)
{
	unsigned line = p->line;
	struct toml_value *a, *elem;

	if (!check_depth(p, depth) || !(a = new_value(p, TOML_ARRAY, line)))
		return false;
	p->cur++;
	skip_array_space(p);
	while (peek(p) != ']') {
		if (at_end(p)) {
			fail_at(p, line, "unterminated array");
			goto error;
		}
		if (!parse_value(p, depth + 1, &elem) || !array_add(p, a, elem))
			goto error;
		skip_array_space(p);
		if (peek(p) == ',') {
			p->cur++;
			skip_array_space(p);
		} else if (peek(p) != ']' && !at_end(p)) {
			fail(p, "expected ',' or ']' in array, found %s", describe_next(p));
			goto error;
		}
	}
	p->cur++;
	*out = a;
	return true;
error:
	toml_free(a);
	return false;
}

/* ---- inline tables ---- */

static bool parse_inline_table(struct parser *p, unsigned depth, struct toml_value **out)
{
	unsigned line = p->line;
	struct toml_value *t;

	if (!check_depth(p, depth) || !(t = new_table(p, line, 0)))
		return false;
	p->cur++;
	skip_spaces(p);
	while (peek(p) != '}') {
		if (t->u.table.len > 0 && !expect(p, ',', "between the keys of an inline table"))
			goto error;
		skip_spaces(p);
		if (at_newline(p) || at_end(p)) {
			fail(p, "inline table must close on the line it opens");
			goto error;
		}
		if (peek(p) == '}') {
			fail(p, "trailing comma in inline table");
			goto error;
		}
		if (!parse_keyval(p, t, depth))
			goto error;
		skip_spaces(p);
		if (at_newline(p) || at_end(p)) {
			fail(p, "inline table must close on the line it opens");
			goto error;
		}
	}
	p->cur++;
	t->flags |= TF_INLINE;
	*out = t;
	return true;
error:
	toml_free(t);
	return false;
}

/* Any value at the cursor; containers it opens sit at `depth`. */
static bool parse_value(struct parser *p, unsigned depth, struct toml_value **out)
{
	switch (peek(p)) {
	case '"':
	case '\'':
		return parse_string_value(p, p->line, out);
	case '[':
		return parse_array(p, depth, out);
	case '{':
		return parse_inline_table(p, depth, out);
	default:
		return parse_bare_value(p, p->line, out);
	}
}

/* ------------------------------------------------------------------ */
/* [table] and [[array of tables]]                                    */
/* ------------------------------------------------------------------ */

/* Step from t into the table named by key part i on the way to a header. */
static struct toml_value *header_step(struct parser *p, struct toml_value *t, size_t i,
                                      unsigned *depth, unsigned line)
{
	struct toml_value *sub = child(p, t, i);

	if (!check_depth(p, ++*depth))
		return NULL;
	if (!sub)
		return add_table(p, t, i, line, 0);
	if (sub->type == TOML_TABLE) {
		if (sub->flags & TF_INLINE) {
			fail(p, "cannot add to inline table '%s'", key_name(p, i + 1));
			return NULL;
		}
		return sub;
	}
	if (sub->type == TOML_ARRAY && (sub->flags & TF_AOT)) {
		/* into the last [[element]] written so far */
		if (!check_depth(p, ++*depth))
			return NULL;
		return sub->u.array.items[sub->u.array.len - 1];
	}
	fail(p, "key '%s' is already defined as %s", key_name(p, i + 1),
	     sub->type == TOML_ARRAY ? "an array" : "a value");
	return NULL;
}

/* [a.b.c]: the table must be new, or until now only an implicit parent. */
static struct toml_value *define_table(struct parser *p, struct toml_value *t, unsigned depth,
                                       unsigned line)
{
	size_t last = p->key.n - 1;
	struct toml_value *sub = child(p, t, last);

	if (!check_depth(p, depth + 1))
		return NULL;
	if (!sub)
		return add_table(p, t, last, line, TF_EXPLICIT);
	if (sub->type != TOML_TABLE) {
		fail(p, "key '%s' is already defined as %s", key_name(p, p->key.n),
		     sub->type == TOML_ARRAY ? "an array" : "a value");
		return NULL;
	}
	if (sub->flags & (TF_EXPLICIT | TF_DOTTED | TF_INLINE)) {
		fail(p, "table '%s' is already defined", key_name(p, p->key.n));
		return NULL;
	}
	sub->flags |= TF_EXPLICIT;
	sub->line = line; /* from now on it is known by its [header] */
	return sub;
}

/* [[a.b.c]]: append a table to an array of tables, making it if new. */
static struct toml_value *append_table(struct parser *p, struct toml_value *t, unsigned depth,
                                       unsigned line)
{
	size_t last = p->key.n - 1;
	struct toml_value *arr = child(p, t, last), *elem;
	size_t len;
	char *key;

	if (!check_depth(p, depth + 2))
		return NULL;
	if (arr && !(arr->type == TOML_ARRAY && (arr->flags & TF_AOT))) {
		fail(p, "key '%s' is already defined as %s", key_name(p, p->key.n),
		     arr->type == TOML_TABLE   ? "a table"
		     : arr->type == TOML_ARRAY ? "a static array"
		                               : "a value");
		return NULL;
	}
	if (!arr) {
		if (!(arr = new_value(p, TOML_ARRAY, line)))
			return NULL;
		arr->flags = TF_AOT;
		if (!(key = key_copy(p, last, &len))) {
			toml_free(arr);
			return NULL;
		}
		if (!table_add(p, t, key, len, arr))
			return NULL;
	}
	elem = new_table(p, line, TF_EXPLICIT);
	if (!elem || !array_add(p, arr, elem))
		return NULL;
	return elem;
}

static bool parse_header(struct parser *p)
{
	unsigned line = p->line, depth = 0;
	bool array = peek_at(p, 1) == '[';
	struct toml_value *t = p->root;

	p->cur += array ? 2 : 1;
	skip_spaces(p);
	if (!parse_key(p))
		return false;
	if (peek(p) != ']' || (array && peek_at(p, 1) != ']'))
		return fail(p, "expected '%s' after the table name, found %s", array ? "]]" : "]",
		            describe_next(p));
	p->cur += array ? 2 : 1;
	for (size_t i = 0; i + 1 < p->key.n; i++) {
		if (!(t = header_step(p, t, i, &depth, line)))
			return false;
	}
	t = array ? append_table(p, t, depth, line) : define_table(p, t, depth, line);
	if (!t)
		return false;
	p->section = t;
	p->section_depth = depth + (array ? 2 : 1);
	return true;
}

/* ------------------------------------------------------------------ */
/* document                                                           */
/* ------------------------------------------------------------------ */

static bool parse_document(struct parser *p)
{
	/* a UTF-8 byte order mark is tolerated at the very start only */
	if (p->end - p->cur >= 3 && memcmp(p->cur, "\xef\xbb\xbf", 3) == 0)
		p->cur += 3;
	while (!at_end(p)) {
		skip_spaces(p);
		skip_comment(p);
		if (at_end(p))
			break;
		if (at_newline(p)) {
			skip_newline(p);
		} else if (peek(p) == '[') {
			if (!parse_header(p) || !expect_line_end(p, "a table header"))
				return false;
		} else if (!parse_keyval(p, p->section, p->section_depth) ||
		           !expect_line_end(p, "a value")) {
			return false;
		}
	}
	return true;
}

struct toml_value *toml_parse(const char *data, size_t len, struct toml_error *err)
{
	struct toml_error ignored;
	struct parser p = {
	        .cur = data ? data : "",
	        .end = data ? data + len : "",
	        .line = 1,
	        .err = err ? err : &ignored,
	};
	bool ok;

	p.err->line = 0;
	p.err->msg[0] = '\0';
	if (!check_encoding(&p, (const unsigned char *)p.cur, (size_t)(p.end - p.cur)))
		return NULL;
	p.root = p.section = new_table(&p, 0, 0);
	ok = p.root && parse_document(&p);
	free(p.key.text.p);
	free(p.scratch.p);
	if (!ok) {
		toml_free(p.root);
		return NULL;
	}
	return p.root;
}
