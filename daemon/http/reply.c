/*
 * The proxy's own answers (see http_proxy.h).
 */
#include <stdio.h>

#include "http_proxy.h"

const char *http_reason(unsigned status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Error";
	}
}

unsigned http_failure_status(enum backend_failure why, bool timed_out)
{
	if (why == BACKEND_FAIL_LOOKUP)
		return 503;
	if (timed_out)
		return 504;
	return 502;
}

/* One line each, in general terms: the client learns what kind of
 * problem it met, not how the servers behind us are laid out. */
static const char *body_line(unsigned status)
{
	switch (status) {
	case 400:
		return "mailsplice: malformed request";
	case 404:
		return "mailsplice: no route for this path";
	case 408:
		return "mailsplice: the request took too long to arrive";
	case 414:
		return "mailsplice: request target too long";
	case 431:
		return "mailsplice: request header too large";
	case 501:
		return "mailsplice: transfer coding not supported";
	case 502:
		return "mailsplice: the server for this account is unavailable, try again later";
	case 503:
		return "mailsplice: routing is temporarily unavailable, try again later";
	case 504:
		return "mailsplice: the server for this account did not answer in time";
	case 505:
		return "mailsplice: HTTP version not supported";
	default:
		return "mailsplice: error";
	}
}

size_t http_error_response(unsigned status, bool keep_alive, bool head_request, char *out,
                           size_t outlen)
{
	const char *line = body_line(status);
	size_t body = 0;
	while (line[body])
		body++;
	body++; /* the newline */
	int n = snprintf(out, outlen,
	                 "HTTP/1.1 %u %s\r\n"
	                 "Content-Type: text/plain; charset=utf-8\r\n"
	                 "Content-Length: %zu\r\n"
	                 "Cache-Control: no-store\r\n"
	                 "%s"
	                 "Connection: %s\r\n"
	                 "\r\n"
	                 "%s%s",
	                 status, http_reason(status), body,
	                 status == 503 ? "Retry-After: 5\r\n" : "",
	                 keep_alive ? "keep-alive" : "close", head_request ? "" : line,
	                 head_request ? "" : "\n");
	if (n < 0 || (size_t)n >= outlen)
		return 0;
	return (size_t)n;
}
