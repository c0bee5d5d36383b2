/* The live-session registry: kicks travel to the owning thread's event
 * base and find the session again there. Two worker threads, each with
 * its own base, as in the daemon. */
#include "unit.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "registry.h"
#include "util.h"

struct worker {
	pthread_t thread;
	struct event_base *base;
};

struct test_session {
	struct live_session live; /* first: the kick callback casts back */
	struct worker *owner;
	atomic_int kicked;
	atomic_bool on_owner_thread;
};

static sem_t kicked_sem;

static void *run(void *arg)
{
	struct worker *w = arg;
	event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void worker_start(struct worker *w)
{
	w->base = event_base_new();
	assert_non_null(w->base);
	assert_int_equal(pthread_create(&w->thread, NULL, run, w), 0);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static void worker_stop(struct worker *w)
{
	event_base_once(w->base, -1, EV_TIMEOUT, stop_cb, w->base, NULL);
	pthread_join(w->thread, NULL);
	event_base_free(w->base);
}

/* what a session does when kicked: close, i.e. leave the registry */
static void on_kick(struct live_session *ls)
{
	struct test_session *s = (struct test_session *)ls;

	atomic_store(&s->on_owner_thread, pthread_equal(pthread_self(), s->owner->thread) != 0);
	atomic_fetch_add(&s->kicked, 1);
	registry_remove(ls);
	sem_post(&kicked_sem);
}

static void session_init(struct test_session *s, struct worker *w, const char *account,
                         const char *dest)
{
	memset(s, 0, sizeof(*s));
	s->owner = w;
	s->live.base = w->base;
	s->live.kick = on_kick;
	s->live.protocol = PROTO_IMAP;
	str_copy(s->live.session_id, "sid", sizeof(s->live.session_id));
	str_copy(s->live.account, account, sizeof(s->live.account));
	str_copy(s->live.destination, dest, sizeof(s->live.destination));
	str_copy(s->live.client, "127.0.0.5:4000", sizeof(s->live.client));
	s->live.state = "relay";
	s->live.data_path = "userspace";
	registry_add(&s->live);
}

static int setup(void **state)
{
	evthread_use_pthreads();
	sem_init(&kicked_sem, 0, 0);
	return 0;
}

static void test_kick_reaches_owner_threads(void **state)
{
	struct worker a, b;
	struct test_session s[4];

	worker_start(&a);
	worker_start(&b);
	session_init(&s[0], &a, "alice@example.org", "legacy");
	session_init(&s[1], &b, "alice@example.org", "legacy");
	session_init(&s[2], &b, "alice@example.org", "new");
	session_init(&s[3], &a, "bob@example.org", "legacy");
	assert_int_equal(registry_count(), 4);

	/* the destination filter */
	assert_int_equal(registry_kick("alice@example.org", "new"), 1);
	sem_wait(&kicked_sem);
	assert_int_equal(atomic_load(&s[2].kicked), 1);
	assert_true(atomic_load(&s[2].on_owner_thread));
	assert_int_equal(registry_count(), 3);

	/* every session of the account, on both threads */
	assert_int_equal(registry_kick("alice@example.org", NULL), 2);
	sem_wait(&kicked_sem);
	sem_wait(&kicked_sem);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(atomic_load(&s[i].kicked), 1);
		assert_true(atomic_load(&s[i].on_owner_thread));
	}
	assert_int_equal(atomic_load(&s[3].kicked), 0);
	assert_int_equal(registry_count(), 1);

	/* nothing left to kick */
	assert_int_equal(registry_kick("alice@example.org", NULL), 0);
	assert_int_equal(registry_kick("nobody@example.org", NULL), 0);
	/* exact account match, not a prefix */
	assert_int_equal(registry_kick("bob@example.or", NULL), 0);

	registry_remove(&s[3].live);
	assert_int_equal(registry_count(), 0);
	worker_stop(&a);
	worker_stop(&b);
}

/* The session ends on its own thread after the kick was posted and
 * before it arrives: the kick finds nothing and touches nothing. */
static sem_t go, fence;
static struct test_session *ending;

static void end_session_cb(evutil_socket_t fd, short what, void *arg)
{
	sem_wait(&go);
	registry_remove(&ending->live);
}

static void fence_cb(evutil_socket_t fd, short what, void *arg)
{
	sem_post(&fence);
}

static void test_kick_after_session_ended(void **state)
{
	struct worker a;
	struct test_session s;

	sem_init(&go, 0, 0);
	sem_init(&fence, 0, 0);
	worker_start(&a);
	session_init(&s, &a, "carol@example.org", "legacy");
	ending = &s;
	/* the worker is busy ending the session when the kick is posted */
	event_base_once(a.base, -1, EV_TIMEOUT, end_session_cb, NULL, NULL);
	assert_int_equal(registry_kick("carol@example.org", NULL), 1);
	sem_post(&go);
	event_base_once(a.base, -1, EV_TIMEOUT, fence_cb, NULL, NULL);
	sem_wait(&fence);
	assert_int_equal(atomic_load(&s.kicked), 0);
	assert_int_equal(registry_count(), 0);
	worker_stop(&a);
}

static void test_list_and_filter(void **state)
{
	struct worker a;
	struct test_session s[2];

	worker_start(&a);
	session_init(&s[0], &a, "dave@example.org", "legacy");
	session_init(&s[1], &a, "erin@example.org", "new");
	s[1].live.started_ms = UINT64_MAX / 2; /* in the future: age 0, not negative */

	json_t *all = registry_list(NULL);
	assert_int_equal(json_array_size(all), 2);
	json_decref(all);

	json_t *one = registry_list("erin@example.org");
	assert_int_equal(json_array_size(one), 1);
	json_t *o = json_array_get(one, 0);
	assert_string_equal(json_string_value(json_object_get(o, "account")), "erin@example.org");
	assert_string_equal(json_string_value(json_object_get(o, "destination")), "new");
	assert_string_equal(json_string_value(json_object_get(o, "protocol")), "imap");
	assert_string_equal(json_string_value(json_object_get(o, "data_path")), "userspace");
	assert_int_equal(json_integer_value(json_object_get(o, "age_s")), 0);
	json_decref(one);

	/* ids are unique */
	assert_true(s[0].live.id != s[1].live.id);
	registry_remove(&s[0].live);
	registry_remove(&s[1].live);
	worker_stop(&a);
}

static void test_remove_twice_and_unregistered(void **state)
{
	struct live_session never, twice;

	memset(&never, 0, sizeof(never));
	memset(&twice, 0, sizeof(twice));
	registry_add(&twice);
	assert_int_equal(registry_count(), 1);
	registry_remove(&twice);
	registry_remove(&twice);
	registry_remove(&never);
	assert_int_equal(registry_count(), 0);
}

static void set_dest(struct live_session *ls, void *arg)
{
	str_copy(ls->destination, arg, sizeof(ls->destination));
}

static void test_update_under_lock(void **state)
{
	struct worker a;
	struct test_session s;

	worker_start(&a);
	session_init(&s, &a, "frank@example.org", "");
	registry_update(&s.live, set_dest, "new");
	assert_int_equal(registry_kick("frank@example.org", "legacy"), 0);
	assert_int_equal(registry_kick("frank@example.org", "new"), 1);
	sem_wait(&kicked_sem);
	assert_int_equal(atomic_load(&s.kicked), 1);
	worker_stop(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_kick_reaches_owner_threads),
	        cmocka_unit_test(test_kick_after_session_ended),
	        cmocka_unit_test(test_list_and_filter),
	        cmocka_unit_test(test_remove_twice_and_unregistered),
	        cmocka_unit_test(test_update_under_lock),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
