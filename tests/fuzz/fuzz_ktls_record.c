/* libFuzzer: judging the records kernel TLS receive will not splice
 * (daemon/net/ktls.c). The first byte picks the record type, the second the
 * TLS version; the rest is the record. Invariants: application data is always
 * forwarded; a fatal verdict always says why; a record whose handshake messages
 * do not add up exactly is never accepted. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "ktls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned type = data[0];
	bool tls13 = data[1] & 1;
	const uint8_t *rec = data + 2;
	size_t n = size - 2;
	char why[160] = "";

	enum ktls_record r = ktls_judge_record(type, rec, n, tls13, why, sizeof(why));
	if (type == KTLS_CT_APPLICATION_DATA)
		assert(r == KTLS_DATA);
	if (r == KTLS_FATAL)
		assert(why[0] != '\0' && strlen(why) < sizeof(why));
	if (r == KTLS_IGNORED) {
		assert(type == KTLS_CT_HANDSHAKE);
		size_t off = 0;
		while (off < n) {
			assert(n - off >= 4);
			off += 4 + ((size_t)rec[off + 1] << 16 | (size_t)rec[off + 2] << 8 |
			            rec[off + 3]);
		}
		assert(off == n);
	}
	if (r == KTLS_CLOSE)
		assert(type == KTLS_CT_ALERT && n == 2 && rec[1] == 0);
	return 0;
}
