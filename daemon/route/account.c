/*
 * Login identifier -> canonical account (see mapping.h).
 *
 * Order matters: the master-user suffix is cut first ("alice%vmadmin" is
 * alice reading her own mailbox through the copy tool's master login), then
 * the default domain is added to a bare local part, then the case is
 * folded. Only ASCII is folded: domain names in logins are A-labels or
 * already lower case in practice, and folding UTF-8 would need locale data
 * a proxy has no business depending on.
 */
#include "mapping.h"

#include <string.h>

const char *account_canonical(const struct account_rules *rules, const char *ident, size_t len,
                              char *out, size_t outlen)
{
	size_t n = len, dlen = 0;
	bool has_at;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)ident[i];
		if (c < 0x20 || c == 0x7f)
			return "control character in user name";
		if (c == ' ')
			return "space in user name";
		if (c == '"')
			return "quote in user name";
	}
	if (rules->master_separators && *rules->master_separators) {
		for (size_t i = 0; i < len; i++) {
			if (strchr(rules->master_separators, ident[i])) {
				n = i;
				break;
			}
		}
	}
	if (n == 0)
		return "empty user name";
	has_at = memchr(ident, '@', n) != NULL;
	if (has_at && (ident[0] == '@' || ident[n - 1] == '@'))
		return "malformed address";
	if (!has_at && rules->default_domain && *rules->default_domain)
		dlen = 1 + strlen(rules->default_domain);
	if (n + dlen > ACCOUNT_MAX || n + dlen + 1 > outlen)
		return "user name too long";
	memcpy(out, ident, n);
	if (dlen) {
		out[n] = '@';
		memcpy(out + n + 1, rules->default_domain, dlen - 1);
	}
	n += dlen;
	out[n] = '\0';
	if (rules->normalize == NORMALIZE_LOWERCASE) {
		for (size_t i = 0; i < n; i++) {
			if (out[i] >= 'A' && out[i] <= 'Z')
				out[i] = (char)(out[i] - 'A' + 'a');
		}
	}
	return NULL;
}
