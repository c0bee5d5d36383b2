/*
 * Live sessions (see registry.h): one list under one mutex. Sessions come
 * and go at login rate, lists and kicks at operator rate; a mutex is enough.
 */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct live_session *head;
static size_t count;
static atomic_uint_fast64_t next_id = 1;

void registry_add(struct live_session *ls)
{
	ls->id = atomic_fetch_add(&next_id, 1);
	pthread_mutex_lock(&lock);
	ls->prev = NULL;
	ls->next = head;
	if (head)
		head->prev = ls;
	head = ls;
	count++;
	pthread_mutex_unlock(&lock);
}

void registry_remove(struct live_session *ls)
{
	pthread_mutex_lock(&lock);
	/* a session that never got registered (or is removed twice) must not
	 * unbalance the count or the list */
	if (!ls->prev && head != ls) {
		pthread_mutex_unlock(&lock);
		return;
	}
	if (ls->prev)
		ls->prev->next = ls->next;
	else
		head = ls->next;
	if (ls->next)
		ls->next->prev = ls->prev;
	ls->prev = ls->next = NULL;
	count--;
	pthread_mutex_unlock(&lock);
}

void registry_update(struct live_session *ls, void (*fn)(struct live_session *, void *), void *arg)
{
	pthread_mutex_lock(&lock);
	fn(ls, arg);
	pthread_mutex_unlock(&lock);
}

struct kick {
	uint64_t id;
};

/* On the session's own thread: find it again (it may have ended since the
 * kick was posted) and only then touch it. */
static void deliver_kick(evutil_socket_t fd, short what, void *arg)
{
	struct kick *k = arg;
	struct live_session *target = NULL;

	pthread_mutex_lock(&lock);
	for (struct live_session *ls = head; ls; ls = ls->next) {
		if (ls->id == k->id) {
			target = ls;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	/* the session is owned by this thread: it cannot end between the
	 * lookup and the call */
	if (target && target->kick)
		target->kick(target);
	free(k);
}

static size_t kick_matching(const char *account, const char *destination, bool except)
{
	size_t n = 0;

	pthread_mutex_lock(&lock);
	for (struct live_session *ls = head; ls; ls = ls->next) {
		if (strcmp(ls->account, account) != 0)
			continue;
		if (destination && (strcmp(ls->destination, destination) == 0) == except)
			continue;
		struct kick *k = malloc(sizeof(*k));
		if (!k)
			continue;
		k->id = ls->id;
		if (event_base_once(ls->base, -1, EV_TIMEOUT, deliver_kick, k, NULL) == 0)
			n++;
		else
			free(k);
	}
	pthread_mutex_unlock(&lock);
	return n;
}

size_t registry_kick(const char *account, const char *destination)
{
	return kick_matching(account, destination, false);
}

size_t registry_kick_except(const char *account, const char *destination)
{
	return kick_matching(account, destination, true);
}

bool registry_kick_id(const char *session_id)
{
	bool found = false;

	pthread_mutex_lock(&lock);
	for (struct live_session *ls = head; ls && !found; ls = ls->next) {
		if (strcmp(ls->session_id, session_id) != 0)
			continue;
		struct kick *k = malloc(sizeof(*k));
		if (!k)
			break;
		k->id = ls->id;
		found = event_base_once(ls->base, -1, EV_TIMEOUT, deliver_kick, k, NULL) == 0;
		if (!found)
			free(k);
	}
	pthread_mutex_unlock(&lock);
	return found;
}

size_t registry_count(void)
{
	pthread_mutex_lock(&lock);
	size_t n = count;
	pthread_mutex_unlock(&lock);
	return n;
}

void registry_counts(size_t *total, size_t *relayed)
{
	size_t r = 0;

	pthread_mutex_lock(&lock);
	for (struct live_session *ls = head; ls; ls = ls->next)
		r += ls->state && strcmp(ls->state, "relay") == 0;
	*total = count;
	pthread_mutex_unlock(&lock);
	*relayed = r;
}

json_t *registry_list(const char *account)
{
	json_t *arr = json_array();
	uint64_t now = now_wall_ms();

	pthread_mutex_lock(&lock);
	for (struct live_session *ls = head; ls; ls = ls->next) {
		if (account && strcmp(ls->account, account) != 0)
			continue;
		json_t *o = json_pack(
		        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id",
		        ls->session_id, "account", ls->account, "listener", ls->listener,
		        "protocol", proto_name(ls->protocol), "client", ls->client, "destination",
		        ls->destination, "state", ls->state ? ls->state : "", "data_path",
		        ls->data_path ? ls->data_path : "", "started_ms",
		        (json_int_t)ls->started_ms, "age_s",
		        (json_int_t)(now > ls->started_ms ? (now - ls->started_ms) / 1000 : 0),
		        "bytes_up",
		        (json_int_t)atomic_load_explicit(&ls->bytes_up, memory_order_relaxed),
		        "bytes_down",
		        (json_int_t)atomic_load_explicit(&ls->bytes_down, memory_order_relaxed));
		/* after an upgrade: how often it moved, and who holds it if not us */
		if (ls->moves)
			json_object_set_new(o, "moves", json_integer(ls->moves));
		if (ls->pid)
			json_object_set_new(o, "pid", json_integer(ls->pid));
		json_array_append_new(arr, o);
	}
	pthread_mutex_unlock(&lock);
	return arr;
}
