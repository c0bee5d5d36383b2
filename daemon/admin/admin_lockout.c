/*
 * Admin API lockout (see admin_lockout.h). A linear scan: the table is
 * small and admin requests come at operator rate.
 */
#include "admin_lockout.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void admin_lockout_init(struct admin_lockout *l, unsigned threshold, uint64_t duration_ms,
                        size_t n_slots)
{
	l->threshold = threshold;
	l->duration_ms = duration_ms;
	l->n_slots = n_slots ? n_slots : 1;
	l->slots = xcalloc(l->n_slots, sizeof(*l->slots));
}

void admin_lockout_free(struct admin_lockout *l)
{
	free(l->slots);
	l->slots = NULL;
	l->n_slots = 0;
}

static bool aged_out(const struct admin_lockout *l, const struct admin_lockout_slot *s,
                     uint64_t now)
{
	return s->addr[0] == '\0' || now - s->last_failure_ms >= l->duration_ms;
}

static bool slot_locked(const struct admin_lockout *l, const struct admin_lockout_slot *s,
                        uint64_t now)
{
	return l->threshold > 0 && s->failures >= l->threshold && !aged_out(l, s, now);
}

static struct admin_lockout_slot *find(const struct admin_lockout *l, const char *addr)
{
	for (size_t i = 0; i < l->n_slots; i++) {
		if (l->slots[i].addr[0] && strcmp(l->slots[i].addr, addr) == 0)
			return &l->slots[i];
	}
	return NULL;
}

bool admin_lockout_is_locked(const struct admin_lockout *l, const char *addr, uint64_t now_ms)
{
	const struct admin_lockout_slot *s = find(l, addr);
	return s && slot_locked(l, s, now_ms);
}

/* A slot for a new address: a free or aged-out one (it holds nothing that
 * still counts), else the unlocked one whose last failure is oldest. With
 * every slot locked the address goes untracked rather than freeing a
 * locked one, which would hand that address a fresh set of attempts. */
static struct admin_lockout_slot *claim(struct admin_lockout *l, const char *addr, uint64_t now)
{
	struct admin_lockout_slot *victim = NULL;

	for (size_t i = 0; i < l->n_slots; i++) {
		struct admin_lockout_slot *s = &l->slots[i];
		if (aged_out(l, s, now)) {
			victim = s;
			break;
		}
		if (!slot_locked(l, s, now) &&
		    (!victim || s->last_failure_ms < victim->last_failure_ms))
			victim = s;
	}
	if (!victim)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	str_copy(victim->addr, addr, sizeof(victim->addr));
	return victim;
}

bool admin_lockout_failure(struct admin_lockout *l, const char *addr, uint64_t now_ms)
{
	if (l->threshold == 0)
		return false;
	struct admin_lockout_slot *s = find(l, addr);
	if (s && aged_out(l, s, now_ms))
		s->failures = 0;
	if (!s)
		s = claim(l, addr, now_ms);
	if (!s)
		return false;
	s->failures++;
	s->last_failure_ms = now_ms;
	return s->failures == l->threshold;
}

void admin_lockout_success(struct admin_lockout *l, const char *addr)
{
	struct admin_lockout_slot *s = find(l, addr);
	if (s)
		memset(s, 0, sizeof(*s));
}
