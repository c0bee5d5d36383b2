/* libFuzzer: the hand-over messages (daemon/parse/handover_codec.c), as a new
 * process reads them from the one it replaces. The first input byte is the
 * number of descriptors that "arrived" with the datagram, the rest is the
 * datagram. Invariants: a refused message always says why; an accepted one
 * encodes again, and its encoding decodes to the same encoding (one canonical
 * form), with the same number of descriptors; strings stay terminated and
 * pending bytes stay inside the input. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "handover.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ho_msg m1, m2;
static uint8_t e1[HO_MSG_MAX], e2[HO_MSG_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];

	if (size < 1)
		return 0;
	unsigned n_fds = data[0] % (HO_FDS_MAX + 2);
	const uint8_t *msg = data + 1;
	size_t len = size - 1;

	err[0] = '\0';
	if (!ho_decode(msg, len, n_fds, &m1, err, sizeof(err))) {
		assert(err[0] != '\0');
		return 0;
	}
	assert(len <= HO_MSG_MAX);
	assert(ho_msg_fds(&m1) == n_fds);
	if (m1.type == HO_SESSION) {
		for (int i = 0; i < 2; i++) {
			const struct ho_dir *d = &m1.u.session.dir[i];
			assert(d->n_pending <= HO_PENDING_MAX);
			if (d->n_pending)
				assert(d->pending >= msg && d->pending + d->n_pending <= msg + len);
		}
		assert(memchr(m1.u.session.id, 0, sizeof(m1.u.session.id)));
		assert(memchr(m1.u.session.account, 0, sizeof(m1.u.session.account)));
	}
	size_t n1 = ho_encode(&m1, e1, sizeof(e1));
	assert(n1 >= HO_HEADER_LEN && n1 <= len);
	assert(ho_decode(e1, n1, n_fds, &m2, err, sizeof(err)));
	size_t n2 = ho_encode(&m2, e2, sizeof(e2));
	assert(n2 == n1 && memcmp(e1, e2, n1) == 0);
	return 0;
}
