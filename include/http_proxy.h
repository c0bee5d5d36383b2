/*
 * The HTTP routing proxy (daemon/http/): what it answers on its own.
 *
 * Every answer the proxy makes itself is a complete HTTP/1.1 response with
 * a one-line text body naming the problem in general terms (never a
 * backend's name or address, never the client's credentials). The
 * functions here are pure, for the unit tests.
 */
#ifndef MAILSPLICE_HTTP_PROXY_H
#define MAILSPLICE_HTTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "session.h" /* enum backend_failure */

/* The reason phrase of a status the proxy sends ("Bad Gateway"). */
const char *http_reason(unsigned status);

/*
 * What a request that could not reach a backend is answered:
 *   the mapping store could not answer      503 (temporary, never a default route)
 *   backend_timeout passed without an answer 504
 *   anything else (down, refused, TLS, pin,
 *   a broken response)                       502
 */
unsigned http_failure_status(enum backend_failure why, bool timed_out);

/*
 * A complete response: status line, Content-Type text/plain, Content-Length,
 * Cache-Control: no-store, Connection: keep-alive or close, and the one-line
 * body (omitted for a HEAD request, Content-Length still given). Returns
 * the length written, 0 if out is too small.
 */
size_t http_error_response(unsigned status, bool keep_alive, bool head_request, char *out,
                           size_t outlen);

#endif
