/* libFuzzer: fleet bus events (daemon/route/bus_event.c), the bytes any
 * client of the shared store can publish. The input is one event.
 * Invariants: a decoded event has a known type, a non-empty printable
 * origin, every string NUL-terminated within its bound, the fields its
 * type needs (account for mapping/kick/delay, req for kicked); encoding it
 * and decoding the result gives the same event (the encoder's output is
 * always accepted by the decoder); a refused input leaves an event with no
 * type-specific fields and a message. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "bus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap)
{
	assert(strlen(s) < cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bus_event ev, back;
	char err[256], buf[BUS_EVENT_MAX + 1];

	if (!bus_event_decode((const char *)data, size, &ev, err, sizeof(err))) {
		assert(err[0] && strlen(err) < sizeof(err));
		assert(ev.account[0] == '\0' && ev.req[0] == '\0' && ev.seconds == 0);
		return 0;
	}
	assert((unsigned)ev.type < BUS_TYPES);
	assert(ev.origin[0]);
	check_str(ev.origin, sizeof(ev.origin));
	for (const char *p = ev.origin; *p; p++)
		assert((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f);
	check_str(ev.account, sizeof(ev.account));
	check_str(ev.destination, sizeof(ev.destination));
	check_str(ev.except, sizeof(ev.except));
	check_str(ev.req, sizeof(ev.req));
	if (ev.type == BUS_MAPPING || ev.type == BUS_KICK || ev.type == BUS_DELAY)
		assert(ev.account[0]);
	if (ev.type == BUS_KICKED)
		assert(ev.req[0]);

	/* what we decode we can send on, unchanged (strings that are not
	 * UTF-8 cannot come out of a JSON decoder) */
	size_t n = bus_event_encode(&ev, buf, sizeof(buf));
	if (n == 0)
		return 0; /* does not fit in BUS_EVENT_MAX once re-encoded */
	assert(bus_event_decode(buf, n, &back, err, sizeof(err)));
	assert(back.type == ev.type && back.boot == ev.boot && back.seq == ev.seq);
	assert(back.join == ev.join && back.leaving == ev.leaving &&
	       back.seconds == (ev.type == BUS_DELAY ? ev.seconds : 0));
	assert(strcmp(back.origin, ev.origin) == 0 && strcmp(back.account, ev.account) == 0);
	assert(strcmp(back.destination, ev.destination) == 0);
	assert(strcmp(back.except, ev.except) == 0 && strcmp(back.req, ev.req) == 0);
	assert(back.count == (ev.type == BUS_KICKED ? ev.count : 0));
	return 0;
}
