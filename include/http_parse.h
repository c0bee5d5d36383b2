/*
 * HTTP/1.1 message framing (RFC 9110, RFC 9112), parsed strictly.
 *
 * Request smuggling is the classic attack on a routing proxy: two parties
 * that disagree about where one message ends let an attacker slip a second
 * request past the routing decision. Every ambiguity in framing is
 * therefore an error here, never a guess:
 *
 *   Content-Length together with Transfer-Encoding         400 (RFC 9112 6.1)
 *   duplicate Content-Length with different values         400 (RFC 9112 6.3)
 *   Transfer-Encoding whose last coding is not chunked     400 (RFC 9112 6.3)
 *   obs-fold, bare CR or bare LF anywhere in the head      400 (RFC 9112 5.2, 2.2)
 *   whitespace between a field name and the colon          400 (RFC 9112 5.1)
 *   bad chunk sizes, extensions or trailers                400 (RFC 9112 7.1)
 *   head larger than max_head_size / too many fields       431 (RFC 6585 5)
 *   request target longer than HTTP_MAX_TARGET             414 (RFC 9110 15.5.15)
 *   HTTP/2 preface or a version other than 1.0 / 1.1       505
 *
 * Everything is a pure function over bytes the caller holds: no I/O, no
 * allocation, nothing kept between calls except the caller's structs, so
 * the unit tests and the libFuzzer targets (tests/fuzz/fuzz_http_*.c)
 * drive exactly the code the daemon runs.
 */
#ifndef MAILSPLICE_HTTP_PARSE_H
#define MAILSPLICE_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_TARGET  8192

/* A slice of the caller's buffer (not NUL-terminated). */
struct http_str {
	const char *p;
	size_t len;
};

struct http_field {
	struct http_str name, value; /* value without leading/trailing OWS */
};

enum http_framing {
	HTTP_BODY_NONE,        /* no body (GET without length, 204, 304, HEAD...) */
	HTTP_BODY_LENGTH,      /* exactly content_length bytes */
	HTTP_BODY_CHUNKED,     /* chunked coding: see struct http_chunked */
	HTTP_BODY_UNTIL_CLOSE, /* responses only: the body ends with the connection */
};

struct http_head {
	bool response;
	unsigned version_minor; /* HTTP/1.<minor>: 0 or 1 */
	/* requests */
	struct http_str method, target;
	struct http_str path;  /* target up to '?' (origin-form), or the path of
	                          an absolute-form target; "*" for OPTIONS * */
	struct http_str query; /* after '?', without it; len 0 if none */
	/* responses */
	unsigned status;
	struct http_str reason;

	struct http_field fields[HTTP_MAX_HEADERS];
	size_t n_fields;
	size_t head_len; /* bytes from the start line through the empty line */

	enum http_framing framing;
	uint64_t content_length; /* HTTP_BODY_LENGTH */

	/* what the connection handling needs, decided once here */
	bool keep_alive;        /* HTTP/1.1 unless "Connection: close"; HTTP/1.0
	                           only with "Connection: keep-alive" */
	bool upgrade_websocket; /* request: Connection has "upgrade" and Upgrade
	                           is "websocket"; response: 101 with the same */
	bool expect_continue;   /* request: "Expect: 100-continue" */
	bool event_stream;      /* response: Content-Type text/event-stream */
};

enum http_parse_status {
	HTTP_PARSE_OK,        /* *h describes buf[0 .. h->head_len) */
	HTTP_PARSE_NEED_MORE, /* no complete head yet, and within the limits */
	HTTP_PARSE_ERROR,     /* *status and *why say what to answer */
};

/*
 * Parse a request head at the start of buf. Empty lines before the request
 * line are skipped (RFC 9112 2.2 allows at least one) and counted in
 * head_len. On HTTP_PARSE_ERROR, *status is the status to answer (400, 414,
 * 431, 501 for CONNECT or a transfer coding we do not know, 505) and *why a
 * short static text for the log. "Content-Length: 0" is HTTP_BODY_NONE.
 */
enum http_parse_status http_parse_request(const uint8_t *buf, size_t len, size_t max_head,
                                          struct http_head *h, unsigned *status, const char **why);

/*
 * Parse a backend's response head. request_method decides the framing
 * of a body-less answer (HEAD; 2xx to CONNECT is refused); 1xx, 204 and
 * 304 have no body (RFC 9112 6.3). A response the proxy cannot frame
 * without guessing is an error: the caller answers 502.
 *
 * Interim responses: a 1xx other than 101 (100 Continue, 103 Early Hints)
 * parses as a complete head with HTTP_BODY_NONE. The caller forwards it
 * (http_response_head_build adds no Connection field to a 1xx; RFC 9110
 * 15.2: not to an HTTP/1.0 client), drops h->head_len bytes and calls
 * http_parse_response again for the final answer to the same request.
 */
enum http_parse_status http_parse_response(const uint8_t *buf, size_t len, size_t max_head,
                                           struct http_str request_method, struct http_head *h,
                                           const char **why);

/* Whether p[0..n) is well-formed UTF-8 (RFC 3629). */
bool http_utf8_valid(const uint8_t *p, size_t n);

/* The first field with this name (case-insensitive), or NULL. */
const struct http_field *http_field_get(const struct http_head *h, const char *name);
/* Whether a comma-separated field value contains token (case-insensitive). */
bool http_list_has(struct http_str value, const char *token);

/*
 * The chunked transfer coding, validated as it passes (RFC 9112 7.1): the
 * proxy forwards the bytes as they are, but must know exactly where the
 * message ends. Chunk sizes are 1-16 hex digits without overflow,
 * extensions and trailer fields are bounded (HTTP_CHUNK_LINE_MAX,
 * max_trailer), bare CR/LF is an error.
 */
#define HTTP_CHUNK_LINE_MAX 4096

struct http_chunked {
	int state;          /* private */
	uint64_t remaining; /* data bytes left in the current chunk */
	size_t line;        /* bytes of the current size or trailer line */
	size_t trailer;     /* bytes of trailer section so far */
	size_t max_trailer;
	uint32_t trailer_match; /* private: forbidden trailer names still matching */
};

enum http_chunk_status {
	HTTP_CHUNK_MORE,  /* all of the input belongs to the body; feed more */
	HTTP_CHUNK_DONE,  /* the body ended at buf + *used */
	HTTP_CHUNK_ERROR, /* *why says what */
};

void http_chunked_init(struct http_chunked *c, size_t max_trailer);
/* Scan len bytes; *used is how many belong to this body (== len unless
 * DONE or ERROR). */
enum http_chunk_status http_chunked_feed(struct http_chunked *c, const uint8_t *buf, size_t len,
                                         size_t *used, const char **why);
/* Inside chunk data: how many bytes can be moved without looking at them
 * (the splice path moves them in the kernel, then calls http_chunked_skip). */
uint64_t http_chunked_data_left(const struct http_chunked *c);
void http_chunked_skip(struct http_chunked *c, uint64_t n);

/*
 * The head sent to the backend: the request line and fields as received,
 * minus hop-by-hop fields (RFC 9110 7.6.1: Connection and the fields it
 * names, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, Proxy-
 * Authorization), with
 *   - Forwarded / X-Forwarded-For / X-Forwarded-Proto / X-Real-IP removed
 *     unless trust_client_forwarded;
 *   - Forwarded (RFC 7239: for=, proto=; an IPv6 node quoted in brackets)
 *     and X-Forwarded-For appended (to a trusted chain) when add_forwarded;
 *   - "Connection: Upgrade" + the Upgrade field kept for a WebSocket
 *     handshake, else "Connection: keep-alive" (the backend connection is
 *     reused for this client's next request);
 *   - Expect: 100-continue dropped when the proxy answered it itself.
 * Returns the length written, or 0 if out is too small.
 */
struct http_forward {
	bool trust_client_forwarded; /* the listener's forwarded = "trust" */
	bool add_forwarded;          /* the destination's forwarded = true */
	const char *client_ip;       /* "192.0.2.7" or "2001:db8::7" */
	bool client_tls;             /* proto=https */
	bool drop_expect;
};
size_t http_request_head_build(const struct http_head *h, const struct http_forward *f, char *out,
                               size_t outlen);

/* The head sent back to the client: hop-by-hop fields removed, the
 * connection's own Connection field (keep-alive or close) added; a 101
 * keeps Connection/Upgrade as the backend sent them. */
size_t http_response_head_build(const struct http_head *h, bool keep_alive, char *out,
                                size_t outlen);

#endif
