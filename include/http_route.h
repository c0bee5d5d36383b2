/*
 * HTTP routing rules ([[http.route]]): which destination serves a request.
 *
 *   match        a glob on the request path: '*' is any run of characters
 *                except '/', '**' any run including '/', '?' one character
 *                except '/'; "/a/" "**" also matches "/a". First rule that
 *                matches wins. A path with trailing slashes is also tried
 *                without them ("/api/" matches a rule "/api"), and the
 *                earlier of the two matches wins; "/" is never trimmed.
 *   destination  the rule pins that destination: no account, no lookup
 *   extract      where the account is: from = "authorization" (Basic: the
 *                user name; Bearer: a Stalwart "sw1." token's footer, or the
 *                first JWT claim of [oauth] jwt_username_claim, email,
 *                preferred_username, upn, unique_name, sub whose value has
 *                an '@'), "query" (param, form-decoded), "header" (header),
 *                or "body" (regex with one capture group, PCRE2, over at
 *                most [http] body_extract_cap bytes, form-decoded)
 *   fallback     where a request goes when no account could be extracted:
 *                "default" (the [routing] default_destination) or a
 *                destination name. Without a fallback such a request also
 *                goes to the default destination.
 *
 * An extracted account is canonicalised, looked up and cached like a mail
 * login (session_login). A request that matches no rule is answered 404.
 *
 * Building compiles the globs and regexes once; a bad one is a
 * configuration error naming FILE:LINE: http.route.<key>. Evaluation is a
 * pure function of the head and body: unit tests and tests/fuzz/
 * fuzz_http_route.c call it directly.
 */
#ifndef MAILSPLICE_HTTP_ROUTE_H
#define MAILSPLICE_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"
#include "mapping.h" /* ACCOUNT_MAX */

struct config;
struct http_router;

/* Compile cfg->http_routes. NULL on error, err holds every problem, one per
 * line, "FILE:LINE: http.route.<key>: what is wrong". The router keeps no
 * pointer into cfg. config_load calls this to validate, so --check reports
 * route errors. */
struct http_router *http_router_build(const struct config *cfg, char *err, size_t errlen);
void http_router_free(struct http_router *r);

/* Whether glob matches the whole of path (exposed for tests and fuzzing). */
bool http_glob_match(const char *glob, const char *path, size_t len);

/* Index of the first rule matching path (with the trailing-slash rule), or
 * -1. */
int http_route_match(const struct http_router *r, struct http_str path);
/* The rule extracts from the body: read up to body_extract_cap bytes of it
 * before routing. */
bool http_route_needs_body(const struct http_router *r, int idx);

enum http_route_kind {
	HTTP_ROUTE_PINNED,   /* dest: the rule's destination */
	HTTP_ROUTE_ACCOUNT,  /* identifier: route it like a login */
	HTTP_ROUTE_FALLBACK, /* no identifier; dest: the fallback (or the
	                        default destination) */
};

struct http_route_result {
	enum http_route_kind kind;
	int dest;                         /* index into cfg->dests; -1 for ACCOUNT, and for FALLBACK
	                                     when no [routing] default_destination is configured */
	char identifier[ACCOUNT_MAX + 1]; /* ACCOUNT only, else "" */
	const char *source;               /* "basic", "bearer-sw1", "jwt", "query", "header",
	                                     "body" (ACCOUNT), "pinned", "none" (FALLBACK):
	                                     for the session log; never NULL */
};

/* Decide for rule idx. body may be NULL when the rule does not need it. */
void http_route_eval(const struct http_router *r, int idx, const struct http_head *h,
                     const uint8_t *body, size_t body_len, struct http_route_result *out);

/* The account a Bearer token names (Stalwart "sw1.<body>.<footer>": the
 * base64url footer; else JWT claims as above), into out. False if none. */
bool http_bearer_identifier(const char *token, size_t len, const char *jwt_claim, char *out,
                            size_t outlen);

/* application/x-www-form-urlencoded decoding ('+' is a space, %XX);
 * false on a bad escape, a NUL or an overlong result. */
bool http_form_decode(const char *in, size_t len, char *out, size_t outlen);

#endif
