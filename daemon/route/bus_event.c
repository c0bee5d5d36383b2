/*
 * Bus events as JSON (see bus.h): pure encode and decode, fuzzed. Bytes
 * come from the store, which anyone with write access to it (or a broken
 * trigger) can fill: the decoder checks every field's type and bound and
 * answers anything else with a reason, never with a half-filled event.
 */
#include "bus.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

static const char *const type_names[BUS_TYPES] = {
        [BUS_HELLO] = "hello", [BUS_MAPPING] = "mapping", [BUS_INVALIDATE] = "invalidate",
        [BUS_KICK] = "kick",   [BUS_KICKED] = "kicked",   [BUS_DELAY] = "delay",
};

const char *bus_type_name(enum bus_type t)
{
	return (unsigned)t < BUS_TYPES ? type_names[t] : "?";
}

size_t bus_event_encode(const struct bus_event *ev, char *out, size_t outlen)
{
	json_t *o = json_object();
	size_t n = 0;

	if (!o || (unsigned)ev->type >= BUS_TYPES)
		goto done;
	json_object_set_new(o, "v", json_integer(1));
	json_object_set_new(o, "type", json_string(type_names[ev->type]));
	json_object_set_new(o, "origin", json_string(ev->origin));
	json_object_set_new(o, "boot", json_integer((json_int_t)ev->boot));
	json_object_set_new(o, "seq", json_integer((json_int_t)ev->seq));
	if (ev->join)
		json_object_set_new(o, "join", json_true());
	if (ev->leaving)
		json_object_set_new(o, "leaving", json_true());
	if (ev->account[0])
		json_object_set_new(o, "account", json_string(ev->account));
	if (ev->destination[0])
		json_object_set_new(o, "destination", json_string(ev->destination));
	if (ev->except[0])
		json_object_set_new(o, "except", json_string(ev->except));
	if (ev->type == BUS_DELAY)
		json_object_set_new(o, "seconds", json_integer((json_int_t)ev->seconds));
	if (ev->req[0])
		json_object_set_new(o, "req", json_string(ev->req));
	if (ev->type == BUS_KICKED)
		json_object_set_new(o, "count", json_integer((json_int_t)ev->count));
	/* a string that is not UTF-8 makes json_string() return NULL and the
	 * key is silently missing: check the ones that must be there */
	if (!json_object_get(o, "origin") || (ev->account[0] && !json_object_get(o, "account")) ||
	    (ev->destination[0] && !json_object_get(o, "destination")) ||
	    (ev->except[0] && !json_object_get(o, "except")) ||
	    (ev->req[0] && !json_object_get(o, "req")))
		goto done;
	n = json_dumpb(o, out, outlen, JSON_COMPACT);
	if (n == 0 || n >= outlen || n > BUS_EVENT_MAX)
		n = 0;
	else
		out[n] = '\0';
done:
	json_decref(o);
	return n;
}

static bool fail(char *err, size_t errlen, const char *what, const char *key)
{
	snprintf(err, errlen, "%s%s%s", key ? key : "", key ? ": " : "", what);
	return false;
}

/* An optional string field into out (outlen with the NUL). printable:
 * ASCII 0x21..0x7e only (node names, request ids). */
static bool get_string(json_t *o, const char *key, char *out, size_t outlen, bool printable,
                       char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	out[0] = '\0';
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v))
		return fail(err, errlen, "not a string", key);
	size_t len = json_string_length(v);
	const char *s = json_string_value(v);
	if (len >= outlen)
		return fail(err, errlen, "too long", key);
	if (memchr(s, '\0', len))
		return fail(err, errlen, "NUL byte", key);
	for (size_t i = 0; printable && i < len; i++) {
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return fail(err, errlen, "not printable ASCII", key);
	}
	memcpy(out, s, len + 1);
	return true;
}

static bool get_count(json_t *o, const char *key, uint64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	*out = 0;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return fail(err, errlen, "not a non-negative integer", key);
	*out = (uint64_t)json_integer_value(v);
	return true;
}

bool bus_event_decode(const char *data, size_t len, struct bus_event *ev, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = NULL, *v;
	bool ok = false;

	memset(ev, 0, sizeof(*ev));
	if (errlen)
		err[0] = '\0';
	if (len == 0 || len > BUS_EVENT_MAX)
		return fail(err, errlen, "empty or longer than 4000 bytes", NULL);
	o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return fail(err, errlen, "not JSON", NULL);
	if (!json_is_object(o)) {
		fail(err, errlen, "not a JSON object", NULL);
		goto out;
	}
	v = json_object_get(o, "v");
	if (v && !(json_is_integer(v) && json_integer_value(v) == 1)) {
		fail(err, errlen, "unknown version", "v");
		goto out;
	}
	v = json_object_get(o, "type");
	if (!json_is_string(v)) {
		fail(err, errlen, "missing or not a string", "type");
		goto out;
	}
	ev->type = BUS_TYPES;
	for (int t = 0; t < BUS_TYPES; t++) {
		if (strcmp(json_string_value(v), type_names[t]) == 0 &&
		    json_string_length(v) == strlen(type_names[t]))
			ev->type = (enum bus_type)t;
	}
	if (ev->type == BUS_TYPES) {
		fail(err, errlen, "unknown event type", "type");
		goto out;
	}
	v = json_object_get(o, "join");
	if (v && !json_is_boolean(v)) {
		fail(err, errlen, "not a boolean", "join");
		goto out;
	}
	ev->join = v && json_is_true(v);
	v = json_object_get(o, "leaving");
	if (v && !json_is_boolean(v)) {
		fail(err, errlen, "not a boolean", "leaving");
		goto out;
	}
	ev->leaving = v && json_is_true(v);
	if (!get_string(o, "origin", ev->origin, sizeof(ev->origin), true, err, errlen) ||
	    !get_string(o, "account", ev->account, sizeof(ev->account), false, err, errlen) ||
	    !get_string(o, "destination", ev->destination, sizeof(ev->destination), false, err,
	                errlen) ||
	    !get_string(o, "except", ev->except, sizeof(ev->except), false, err, errlen) ||
	    !get_string(o, "req", ev->req, sizeof(ev->req), true, err, errlen) ||
	    !get_count(o, "boot", &ev->boot, err, errlen) ||
	    !get_count(o, "seq", &ev->seq, err, errlen) ||
	    !get_count(o, "seconds", &ev->seconds, err, errlen) ||
	    !get_count(o, "count", &ev->count, err, errlen))
		goto out;
	if (!ev->origin[0]) {
		fail(err, errlen, "missing", "origin");
		goto out;
	}
	/* what each type cannot do without */
	if ((ev->type == BUS_MAPPING || ev->type == BUS_KICK || ev->type == BUS_DELAY) &&
	    !ev->account[0]) {
		fail(err, errlen, "missing", "account");
		goto out;
	}
	if (ev->type == BUS_KICKED && !ev->req[0]) {
		fail(err, errlen, "missing", "req");
		goto out;
	}
	if (ev->type == BUS_DELAY && !json_object_get(o, "seconds")) {
		fail(err, errlen, "missing", "seconds");
		goto out;
	}
	ok = true;
out:
	json_decref(o);
	if (!ok) {
		char keep[sizeof(ev->origin)];
		memcpy(keep, ev->origin, sizeof(keep));
		memset(ev, 0, sizeof(*ev));
		memcpy(ev->origin, keep, sizeof(keep)); /* for the log, if it was read */
	}
	return ok;
}
