/*
 * libFuzzer: [[http.route]] globs and account extraction
 * (daemon/http/route.c).
 *
 * Byte 0 picks the mode:
 *   0: "glob\0path": http_glob_match must agree with a slow reference
 *      matcher written from the rules in http_route.h (memoised recursion
 *      over the glob text, no tokens, no NFA);
 *   1: an HTTP request (head, then body): the rule chosen must be the
 *      first the reference matches (with the trailing-slash retry), and
 *      whatever the extraction finds must be a usable identifier;
 *   2: a bearer token and a form-encoded string, straight to
 *      http_bearer_identifier and http_form_decode.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the reference glob matcher ---- */

#define REF_GLOB_MAX 64
#define REF_PATH_MAX 256

static const char *rg, *rp;
static size_t rglen, rplen;
static int8_t memo[REF_GLOB_MAX + 1][REF_PATH_MAX + 1];

static bool starts(size_t gi, const char *s)
{
	size_t n = strlen(s);
	return gi + n <= rglen && memcmp(rg + gi, s, n) == 0;
}

static bool ref(size_t gi, size_t pi)
{
	int8_t *m = &memo[gi][pi];
	bool r = false;

	if (*m)
		return *m > 0;
	if (gi == rglen) {
		r = pi == rplen;
	} else if (starts(gi, "/**") && gi + 3 == rglen) {
		r = pi == rplen || rp[pi] == '/'; /* nothing, or '/' and anything */
	} else if (starts(gi, "/**/")) {
		/* "/" or "/" anything "/" */
		for (size_t k = pi; k < rplen && !r && rp[pi] == '/'; k++)
			r = rp[k] == '/' && ref(gi + 4, k + 1);
	} else if (starts(gi, "**")) {
		for (size_t k = pi; k <= rplen && !r; k++)
			r = ref(gi + 2, k);
	} else if (rg[gi] == '*') {
		for (size_t k = pi; k <= rplen && !r; k++) {
			r = ref(gi + 1, k);
			if (k < rplen && rp[k] == '/')
				break;
		}
	} else if (rg[gi] == '?') {
		r = pi < rplen && rp[pi] != '/' && ref(gi + 1, pi + 1);
	} else {
		r = pi < rplen && rp[pi] == rg[gi] && ref(gi + 1, pi + 1);
	}
	*m = r ? 1 : -1;
	return r;
}

static bool ref_valid(const char *g, size_t n)
{
	if (n == 0 || n > 256 || (g[0] != '/' && g[0] != '*') || memmem(g, n, "***", 3))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)g[i];
		if (c <= 0x20 || c >= 0x7f || strchr("[]{}\\", c))
			return false;
	}
	return true;
}

/* -1: too long for the reference */
static int ref_match(const char *glob, const char *path, size_t len)
{
	size_t n = strlen(glob);

	if (!ref_valid(glob, n))
		return 0;
	if (n > REF_GLOB_MAX || len > REF_PATH_MAX)
		return -1;
	rg = glob;
	rglen = n;
	rp = path;
	rplen = len;
	memset(memo, 0, sizeof(memo));
	return ref(0, 0);
}

/* ---- a router over a configuration built in memory ---- */

static const char *const globs[] = {"/pin/**", "/auth/**", "/q/*", "/h", "/b/**", "/**/x?", "**"};
#define N_RULES (sizeof(globs) / sizeof(globs[0]))
enum { D_LEGACY, D_NEW, N_DESTS };

static struct config cfg;
static struct cfg_destination dests[N_DESTS];
static struct cfg_http_route routes[N_RULES];
static struct http_router *router;

static void setup(void)
{
	char err[2048];

	dests[D_LEGACY].name = "legacy";
	dests[D_NEW].name = "new";
	for (int i = 0; i < N_DESTS; i++)
		dests[i].endpoint[PROTO_HTTP].present = true;
	for (size_t i = 0; i < N_RULES; i++) {
		routes[i].line = (unsigned)i + 1;
		routes[i].match = (char *)globs[i];
	}
	routes[0].destination = "new";
	routes[1].extract_from = "authorization";
	routes[1].fallback = "new";
	routes[2].extract_from = "query";
	routes[2].extract_param = "login_hint";
	routes[3].extract_from = "header";
	routes[3].extract_header = "X-User";
	routes[3].fallback = "default";
	routes[4].extract_from = "body";
	routes[4].extract_regex = "user=([^&]*)";
	routes[5].destination = "legacy";
	routes[6].extract_from = "authorization";
	cfg.path = "fuzz.toml";
	cfg.dests = dests;
	cfg.n_dests = N_DESTS;
	cfg.http_routes = routes;
	cfg.n_http_routes = N_RULES;
	cfg.default_destination = "legacy";
	cfg.jwt_username_claim = "email";
	cfg.http_body_extract_cap = 64;
	router = http_router_build(&cfg, err, sizeof(err));
	assert(router);
}

static void check_identifier(const char *id)
{
	size_t n = strlen(id);

	assert(n > 0 && n <= ACCOUNT_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)id[i];
		assert(c >= 0x20 && c != 0x7f && c != ' ' && c != '"');
	}
}

static void check_route(const uint8_t *buf, size_t size)
{
	struct http_head h;
	struct http_route_result res;
	unsigned status;
	const char *why;
	int idx, want = -1;

	if (http_parse_request(buf, size, 8192, &h, &status, &why) != HTTP_PARSE_OK)
		return;
	idx = http_route_match(router, h.path);

	/* the reference: first rule on the path, or on it without trailing
	 * slashes (never down to nothing), whichever rule comes first */
	size_t trimmed = h.path.len;
	while (trimmed > 0 && h.path.p[trimmed - 1] == '/')
		trimmed--;
	bool decided = true;
	for (size_t i = 0; i < N_RULES && want < 0; i++) {
		int a = ref_match(globs[i], h.path.p, h.path.len);
		int b = trimmed && trimmed < h.path.len ? ref_match(globs[i], h.path.p, trimmed)
		                                        : 0;
		if (a < 0 || b < 0) {
			decided = false;
			break;
		}
		if (a || b)
			want = (int)i;
	}
	if (decided)
		assert(idx == want);
	assert(idx >= 0); /* "**" matches everything */

	http_route_eval(router, idx, &h, buf + h.head_len, size - h.head_len, &res);
	assert(res.source);
	switch (res.kind) {
	case HTTP_ROUTE_PINNED:
		assert(routes[idx].destination);
		assert(res.dest == (idx == 0 ? D_NEW : D_LEGACY));
		break;
	case HTTP_ROUTE_ACCOUNT:
		assert(!routes[idx].destination);
		assert(res.dest == -1);
		check_identifier(res.identifier);
		break;
	case HTTP_ROUTE_FALLBACK:
		assert(!routes[idx].destination);
		assert(res.identifier[0] == '\0');
		assert(res.dest == (idx == 1 ? D_NEW : D_LEGACY));
		break;
	default:
		assert(0);
	}
	assert(http_route_needs_body(router, idx) == (idx == 4));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf;

	if (!router)
		setup();
	if (size < 1)
		return 0;
	buf = malloc(size);
	assert(buf);
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0: {
		/* glob NUL path */
		const char *glob = (const char *)buf;
		size_t glen = strlen(glob);
		const char *path = glob + glen + (glen < size - 1);
		size_t plen = size - 1 - (size_t)(path - glob);
		int want = ref_match(glob, path, plen);
		bool got = http_glob_match(glob, path, plen);
		if (want >= 0)
			assert(got == (want == 1));
		break;
	}
	case 1:
		check_route(buf, size - 1);
		break;
	default: {
		char out[ACCOUNT_MAX + 1], dec[64];
		size_t half = (size - 1) / 2;
		if (http_bearer_identifier((const char *)buf, half, "email", out, sizeof(out)))
			check_identifier(out);
		if (http_form_decode((const char *)buf + half, size - 1 - half, dec, sizeof(dec)))
			assert(strlen(dec) < sizeof(dec));
		break;
	}
	}
	free(buf);
	return 0;
}
