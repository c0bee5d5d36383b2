/*
 * The hand-over of listeners and sessions to a new process (see upgrade.h,
 * docs/upgrade.md). The old side runs on the running daemon's main thread
 * and its workers; the new side on the successor's.
 */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "admin.h"
#include "control.h"
#include "handover.h"
#include "log.h"
#include "registry.h"
#include "relay.h"
#include "session.h"
#include "util.h"

#define SOFTWARE          "0.1.0"
#define HELLO_TIMEOUT_MS  10000
#define FLIGHT_MAX        64    /* sessions per worker offered and not yet answered */
#define ROUND_TIMEOUT_MS  60000 /* --upgrade returns by then whatever is still moving */
#define NOTIFY_BARRIER_US 5000000

static struct event_base *main_base;
static struct upgrade_hooks hooks;

static uid_t daemon_uid(const struct config *cfg)
{
	struct passwd *pw = cfg->user ? getpwnam(cfg->user) : NULL;
	return pw ? pw->pw_uid : (uid_t)-1;
}

/* ==== the running daemon: a successor asks ==== */

enum old_state { OLD_IDLE, OLD_HELLO, OLD_OFFERED, OLD_COMMITTED };

struct pending {
	char id[40];
	size_t worker;
};

static struct {
	struct server *srv;
	int listen_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct event *accept_ev;
	enum old_state state;
	pthread_mutex_t lock; /* chan, pending: workers send and record */
	struct ho_chan *chan;
	pid_t peer;
	struct event *hello_timer;
	bool handed_over;
	/* sessions offered and not yet answered */
	struct pending *pending;
	size_t n_pending, cap_pending;
	atomic_uint *flight;     /* per worker */
	atomic_bool *round_open; /* per worker: its first full pass is still to come */
	/* the first round: every session movable at COMMIT offered and answered */
	size_t passes_left;
	unsigned moved, kept, draining;
	bool round_done;
} O = {.listen_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static void old_end(struct ho_chan *c, const char *why, void *arg);

static void old_reset(const char *why)
{
	pthread_mutex_lock(&O.lock);
	struct ho_chan *c = O.chan;
	O.chan = NULL;
	pthread_mutex_unlock(&O.lock);
	if (c)
		ho_chan_free(c);
	if (O.hello_timer)
		evtimer_del(O.hello_timer);
	if (O.state != OLD_COMMITTED)
		O.state = OLD_IDLE;
	if (why)
		log_msg(LOG_WARN, "upgrade", "state=%s successor_pid=%d reason=\"%s\"",
		        O.handed_over ? "successor-lost" : "cancelled", (int)O.peer, why);
}

static bool old_send(const struct ho_msg *m, const int *fds)
{
	pthread_mutex_lock(&O.lock);
	bool ok = O.chan && ho_chan_send(O.chan, m, fds);
	pthread_mutex_unlock(&O.lock);
	return ok;
}

static void send_text(enum ho_type type, const char *reason)
{
	static struct ho_msg m;
	memset(&m, 0, sizeof(m));
	m.type = type;
	str_copy(m.u.text.reason, reason, sizeof(m.u.text.reason));
	old_send(&m, NULL);
}

/* ---- the listeners ---- */

static bool offer_listeners(char *err, size_t errlen)
{
	static struct ho_msg m;
	struct server *srv = O.srv;
	const struct config *cfg = srv->cfg;
	int sockmap[4];
	bool has_sockmap = datapath_sockmap_fds(sockmap);
	int admin_fd = admin_listen_fd();
	uint32_t n = (uint32_t)srv->n_listen + (admin_fd >= 0) + (O.listen_fd >= 0);
	int log_fd = 2;

	memset(&m, 0, sizeof(m));
	m.type = HO_WELCOME;
	m.u.welcome.pid = (uint32_t)getpid();
	str_copy(m.u.welcome.software, SOFTWARE, sizeof(m.u.welcome.software));
	m.u.welcome.workers = (uint32_t)srv->n_workers;
	m.u.welcome.listeners = n;
	m.u.welcome.sockmap = has_sockmap;
	if (!old_send(&m, &log_fd))
		goto fail;
	for (size_t i = 0; i < srv->n_listen; i++) {
		const struct server_listen *sl = &srv->listen[i];
		const struct cfg_listener *ls = &cfg->listeners[sl->listener];
		memset(&m, 0, sizeof(m));
		m.type = HO_LISTENER;
		m.u.listener.index = (uint32_t)i;
		m.u.listener.kind = HO_LISTEN_MAIL;
		m.u.listener.worker = (uint32_t)sl->worker;
		str_copy(m.u.listener.name, ls->name, sizeof(m.u.listener.name));
		str_copy(m.u.listener.bind, ls->binds[sl->bind].text, sizeof(m.u.listener.bind));
		if (!old_send(&m, &sl->fd))
			goto fail;
	}
	uint32_t next = (uint32_t)srv->n_listen;
	if (admin_fd >= 0) {
		memset(&m, 0, sizeof(m));
		m.type = HO_LISTENER;
		m.u.listener.index = next++;
		m.u.listener.kind = HO_LISTEN_ADMIN;
		str_copy(m.u.listener.bind, cfg->admin_bind.text, sizeof(m.u.listener.bind));
		if (!old_send(&m, &admin_fd))
			goto fail;
	}
	if (O.listen_fd >= 0) {
		memset(&m, 0, sizeof(m));
		m.type = HO_LISTENER;
		m.u.listener.index = next++;
		m.u.listener.kind = HO_LISTEN_CONTROL;
		str_copy(m.u.listener.bind, O.path, sizeof(m.u.listener.bind));
		if (!old_send(&m, &O.listen_fd))
			goto fail;
	}
	if (has_sockmap) {
		memset(&m, 0, sizeof(m));
		m.type = HO_SOCKMAP;
		m.u.sockmap.dir_size = sizeof(struct ms_dir);
		m.u.sockmap.max_sockets = MS_MAX_SOCKETS;
		if (!old_send(&m, sockmap))
			goto fail;
	}
	memset(&m, 0, sizeof(m));
	m.type = HO_LISTENERS_END;
	if (!old_send(&m, NULL))
		goto fail;
	return true;
fail:
	snprintf(err, errlen, "the connection to the successor failed while offering listeners");
	return false;
}

/* ---- the sessions, on each worker ---- */

struct ack_job {
	struct worker *w;
	char id[40];
	bool adopted;
	char reason[256];
};

static struct session *find_session(struct worker *w, const char *id)
{
	for (struct session *s = w->sessions; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static void pending_add(const char *id, size_t worker)
{
	pthread_mutex_lock(&O.lock);
	if (O.n_pending == O.cap_pending) {
		size_t cap = O.cap_pending ? 2 * O.cap_pending : 64;
		struct pending *p = realloc(O.pending, cap * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&O.lock);
			return; /* its answer will find no worker: it stays quiesced, see
			           old_ack (it cannot happen short of OOM) */
		}
		O.pending = p;
		O.cap_pending = cap;
	}
	str_copy(O.pending[O.n_pending].id, id, sizeof(O.pending[0].id));
	O.pending[O.n_pending++].worker = worker;
	pthread_mutex_unlock(&O.lock);
}

/* Remove id; its worker, or SIZE_MAX if it was not pending. */
static size_t pending_take(const char *id)
{
	size_t w = SIZE_MAX;

	pthread_mutex_lock(&O.lock);
	for (size_t i = 0; i < O.n_pending; i++) {
		if (strcmp(O.pending[i].id, id) == 0) {
			w = O.pending[i].worker;
			O.pending[i] = O.pending[--O.n_pending];
			break;
		}
	}
	pthread_mutex_unlock(&O.lock);
	return w;
}

static void on_ack(evutil_socket_t unused, short what, void *arg)
{
	struct ack_job *j = arg;
	struct session *s = find_session(j->w, j->id);

	atomic_fetch_sub(&O.flight[j->w->index], 1);
	if (s)
		session_export_done(s, j->adopted, j->reason);
	free(j);
}

static void report_draining(struct session *s, const char *why)
{
	static __thread struct ho_msg m;

	log_msg(LOG_INFO, "handover-session", "id=%s result=stays reason=\"%s\"", s->id, why);
	memset(&m, 0, sizeof(m));
	m.type = HO_DRAINING;
	str_copy(m.u.draining.id, s->id, sizeof(m.u.draining.id));
	str_copy(m.u.draining.account, s->account, sizeof(m.u.draining.account));
	str_copy(m.u.draining.listener, s->ls->name, sizeof(m.u.draining.listener));
	str_copy(m.u.draining.protocol, proto_name(s->ls->protocol), sizeof(m.u.draining.protocol));
	str_copy(m.u.draining.client, s->peer_str, sizeof(m.u.draining.client));
	str_copy(m.u.draining.destination, s->d ? s->d->name : "",
	         sizeof(m.u.draining.destination));
	str_copy(m.u.draining.state, s->phase == PHASE_RELAY ? "relay" : "login",
	         sizeof(m.u.draining.state));
	m.u.draining.started_ms = s->live.started_ms;
	str_copy(m.u.draining.reason, why, sizeof(m.u.draining.reason));
	old_send(&m, NULL);
}

static void on_pass_done(evutil_socket_t unused, short what, void *arg);

/* Offer every session of this worker that can move now; returns how many
 * stay (for now). *limited: it stopped at FLIGHT_MAX, more may follow. */
static unsigned export_sessions(struct worker *w, bool *limited)
{
	static __thread struct ho_msg m;
	unsigned draining = 0;

	*limited = false;
	for (struct session *s = w->sessions; s; s = s->next) {
		if (s->moving || s->ending || s->closing || s->moved_away || s->move_refused)
			continue;
		if (atomic_load(&O.flight[w->index]) >= FLIGHT_MAX) {
			*limited = true; /* the next pass (an answer, the tick) goes on */
			break;
		}
		int fds[HO_FDS_MAX];
		char why[160];
		memset(&m, 0, sizeof(m));
		m.type = HO_SESSION;
		int r = session_export(s, &m.u.session, fds, why, sizeof(why));
		if (r == 1) {
			atomic_fetch_add(&O.flight[w->index], 1);
			pending_add(s->id, w->index);
			if (!old_send(&m, fds)) {
				pending_take(s->id);
				atomic_fetch_sub(&O.flight[w->index], 1);
				session_export_done(s, false, "the successor is gone");
			}
			continue;
		}
		draining++;
		if (!s->drain_noted) {
			s->drain_noted = true;
			report_draining(s, why);
		}
	}
	return draining;
}

/* A pass over a worker's sessions: at COMMIT, after each answer (room for
 * more), and every drain tick (logins that finished). The first pass that
 * gets through all of them ends this worker's share of the first round: the
 * main thread counts what stays. */
static void export_pass(evutil_socket_t unused, short what, void *arg)
{
	struct worker *w = arg;
	bool limited;
	unsigned n = export_sessions(w, &limited);

	if (limited || !atomic_exchange(&O.round_open[w->index], false))
		return;
	unsigned *count = malloc(sizeof(*count));
	if (count) {
		*count = n;
		event_base_once(main_base, -1, EV_TIMEOUT, on_pass_done, count, NULL);
	}
}

/* The round ends when every worker passed once and every offer was answered:
 * what is left stays (DRAINING was sent for it). */
static void check_round(void)
{
	if (O.round_done || O.passes_left > 0 || O.state != OLD_COMMITTED)
		return;
	pthread_mutex_lock(&O.lock);
	size_t left = O.n_pending;
	pthread_mutex_unlock(&O.lock);
	if (left > 0)
		return;
	static struct ho_msg m;
	memset(&m, 0, sizeof(m));
	m.type = HO_ROUND_DONE;
	m.u.round.moved = O.moved;
	m.u.round.draining = O.draining + O.kept;
	old_send(&m, NULL);
	O.round_done = true;
	log_msg(LOG_INFO, "upgrade", "state=round-done successor_pid=%d moved=%u staying=%u",
	        (int)O.peer, O.moved, O.draining + O.kept);
}

static void on_pass_done(evutil_socket_t unused, short what, void *arg)
{
	unsigned *count = arg;

	if (O.passes_left > 0) {
		O.draining += *count;
		O.passes_left--;
	}
	free(count);
	check_round();
}

static void start_round(void)
{
	struct server *srv = O.srv;

	O.passes_left = srv->n_workers;
	for (size_t i = 0; i < srv->n_workers; i++) {
		atomic_store(&O.round_open[i], true);
		event_base_once(srv->workers[i].base, -1, EV_TIMEOUT, export_pass, &srv->workers[i],
		                NULL);
	}
}

/* ---- the conversation ---- */

static void commit(const struct ho_msg *m)
{
	struct server *srv = O.srv;
	bool *taken = xcalloc(srv->n_listen + 2, sizeof(bool));
	bool admin_taken = false, control_taken = false;
	size_t n_taken = 0;
	uint32_t admin_index = (uint32_t)srv->n_listen;
	uint32_t control_index = admin_index + (admin_listen_fd() >= 0);

	for (uint32_t i = 0; i < m->u.commit.n_taken; i++) {
		uint32_t t = m->u.commit.taken[i];
		if (t < srv->n_listen)
			taken[t] = true, n_taken++;
		else if (admin_listen_fd() >= 0 && t == admin_index)
			admin_taken = true;
		else if (O.listen_fd >= 0 && t == control_index)
			control_taken = true;
	}
	O.state = OLD_COMMITTED;
	O.handed_over = true;
	/* new connections go to the successor from here; what is queued on a
	 * socket it did not take is served here first */
	server_handover_listeners(srv, taken, srv->n_listen);
	free(taken);
	admin_stop();
	if (O.accept_ev)
		event_del(O.accept_ev);
	if (O.listen_fd >= 0) {
		close(O.listen_fd);
		if (!control_taken)
			unlink(O.path); /* the successor listens elsewhere */
		O.listen_fd = -1;
	}
	datapath_sockmap_freeze();
	/* the service manager follows the successor from now on; the barrier
	 * makes sure it did before this process could exit */
	if (getenv("NOTIFY_SOCKET")) {
		sd_notifyf(0, "MAINPID=%d", (int)O.peer);
		sd_notify_barrier(0, NOTIFY_BARRIER_US);
	}
	if (hooks.handed_over)
		hooks.handed_over();
	static struct ho_msg c;
	memset(&c, 0, sizeof(c));
	c.type = HO_COMMITTED;
	old_send(&c, NULL);
	log_msg(LOG_INFO, "upgrade",
	        "state=committed successor_pid=%d listeners_taken=%zu admin=%s control=%s",
	        (int)O.peer, n_taken, admin_taken ? "taken" : "closed",
	        control_taken ? "taken" : "closed");
	start_round();
}

static void old_ack(const struct ho_msg *m)
{
	size_t wi = pending_take(m->u.ack.id);

	if (wi == SIZE_MAX) {
		log_msg(LOG_WARN, "upgrade", "state=stray-ack id=%s", m->u.ack.id);
		return;
	}
	if (m->u.ack.adopted) {
		O.moved++;
	} else {
		O.kept++;
		log_msg(LOG_WARN, "handover-session", "id=%s result=refused reason=\"%s\"",
		        m->u.ack.id, m->u.ack.reason);
	}
	struct worker *w = &O.srv->workers[wi];
	struct ack_job *j = xcalloc(1, sizeof(*j));
	j->w = w;
	str_copy(j->id, m->u.ack.id, sizeof(j->id));
	j->adopted = m->u.ack.adopted;
	str_copy(j->reason, m->u.ack.reason, sizeof(j->reason));
	/* j belongs to the worker once posted (it may be freed already below) */
	event_base_once(w->base, -1, EV_TIMEOUT, on_ack, j, NULL);
	/* room for more on that worker */
	event_base_once(w->base, -1, EV_TIMEOUT, export_pass, w, NULL);
	check_round();
}

static void old_msg(struct ho_chan *c, const struct ho_msg *m, int *fds, unsigned n_fds, void *arg)
{
	char err[256];

	for (unsigned i = 0; i < n_fds; i++)
		close(fds[i]); /* nothing a successor sends carries descriptors */
	switch (m->type) {
	case HO_HELLO:
		if (O.state != OLD_HELLO)
			break;
		evtimer_del(O.hello_timer);
		if (atomic_load(&O.srv->draining)) {
			send_text(HO_ABORT, "the running daemon is shutting down");
			old_reset("the daemon is shutting down");
			return;
		}
		log_msg(LOG_INFO, "upgrade", "state=offer successor_pid=%d software=%s",
		        (int)O.peer, m->u.hello.software);
		if (!offer_listeners(err, sizeof(err))) {
			old_reset(err);
			return;
		}
		O.state = OLD_OFFERED;
		return;
	case HO_ABORT:
		if (O.state != OLD_OFFERED)
			break;
		log_msg(LOG_WARN, "upgrade",
		        "state=refused successor_pid=%d reason=\"%s\" kept=all", (int)O.peer,
		        m->u.text.reason);
		old_reset(NULL);
		return;
	case HO_COMMIT:
		if (O.state != OLD_OFFERED)
			break;
		commit(m);
		return;
	case HO_SESSION_ACK:
		if (O.state != OLD_COMMITTED)
			break;
		old_ack(m);
		return;
	case HO_KICK:
		if (O.state != OLD_COMMITTED)
			break;
		registry_kick_id(m->u.id.id);
		return;
	default:
		break;
	}
	snprintf(err, sizeof(err), "unexpected %s", ho_type_name(m->type));
	old_end(c, err, arg);
}

/* Sessions offered and never answered stay here: resume them. */
static void resume_pending(void)
{
	pthread_mutex_lock(&O.lock);
	struct pending *p = O.pending;
	size_t n = O.n_pending;
	O.pending = NULL;
	O.n_pending = O.cap_pending = 0;
	pthread_mutex_unlock(&O.lock);
	for (size_t i = 0; i < n; i++) {
		struct ack_job *j = xcalloc(1, sizeof(*j));
		j->w = &O.srv->workers[p[i].worker];
		str_copy(j->id, p[i].id, sizeof(j->id));
		str_copy(j->reason, "the successor went away before answering", sizeof(j->reason));
		event_base_once(j->w->base, -1, EV_TIMEOUT, on_ack, j, NULL);
	}
	free(p);
}

static void old_end(struct ho_chan *c, const char *why, void *arg)
{
	if (O.state == OLD_COMMITTED)
		resume_pending();
	old_reset(why);
}

static void on_hello_timeout(evutil_socket_t fd, short what, void *arg)
{
	old_reset("no HELLO within 10 s");
}

static void on_control_accept(evutil_socket_t lfd, short what, void *arg)
{
	char err[256];
	pid_t pid = 0;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		if (!control_peer_ok(fd, daemon_uid(O.srv->cfg), &pid, err, sizeof(err))) {
			log_msg(LOG_WARN, "upgrade", "state=refused reason=\"%s\"", err);
			close(fd);
			continue;
		}
		if (O.state != OLD_IDLE) {
			static struct ho_msg m;
			memset(&m, 0, sizeof(m));
			m.type = HO_ABORT;
			str_copy(m.u.text.reason,
			         O.handed_over ? "this daemon has already handed over"
			                       : "another hand-over is under way",
			         sizeof(m.u.text.reason));
			control_send(fd, &m, NULL, err, sizeof(err));
			close(fd);
			continue;
		}
		struct ho_chan *c = ho_chan_new(main_base, fd, old_msg, old_end, NULL);
		if (!c) {
			close(fd);
			continue;
		}
		pthread_mutex_lock(&O.lock);
		O.chan = c;
		pthread_mutex_unlock(&O.lock);
		O.peer = pid;
		O.state = OLD_HELLO;
		struct timeval tv = {HELLO_TIMEOUT_MS / 1000, 0};
		evtimer_add(O.hello_timer, &tv);
	}
}

/* ==== the successor ==== */

static struct {
	bool successor;
	int status_fd; /* to the --upgrade command; -1 once answered */
	int fd;        /* to the predecessor, until upgrade_commit */
	pid_t pred;
	int log_fd;
	/* what the predecessor passed */
	struct inherited_listener *mail;
	size_t n_mail;
	uint32_t admin_index, control_index;
	int admin_fd, control_fd;
	bool admin_passed, control_passed;
	/* after COMMIT */
	struct server *srv;
	pthread_mutex_t lock;
	struct ho_chan *chan;
	size_t next_worker;
	bool committed;
	struct event *round_timer;
	struct remote *remotes; /* sessions draining in the predecessor */
} N = {.status_fd = -1,
       .fd = -1,
       .log_fd = -1,
       .admin_fd = -1,
       .control_fd = -1,
       .lock = PTHREAD_MUTEX_INITIALIZER};

bool upgrade_is_successor(void)
{
	return N.successor;
}

/* One line to the --upgrade command, then it exits (0 for "OK"). */
static void report(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(bool ok, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (N.status_fd < 0)
		return;
	int n = snprintf(line, sizeof(line), "%s ", ok ? "OK" : "ERR");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(N.status_fd, line, (size_t)n) < 0) {
		/* the command is gone: nobody to tell */
	}
	close(N.status_fd);
	N.status_fd = -1;
}

int upgrade_spawn(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) != 0) {
		fprintf(stderr, "mailspliced: pipe: %s\n", strerror(errno));
		return 1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "mailspliced: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		close(p[0]);
		setsid(); /* not in the caller's process group: its signals are not ours */
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null >= 0) {
			dup2(null, 0);
			close(null);
		}
		N.successor = true;
		N.status_fd = p[1];
		return -1;
	}
	close(p[1]);
	char buf[1100];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(p[0], buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break;
	}
	close(p[0]);
	buf[len] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	if (strncmp(buf, "OK ", 3) == 0) {
		printf("mailspliced: %s\n", buf + 3);
		return 0;
	}
	if (strncmp(buf, "ERR ", 4) == 0) {
		fprintf(stderr,
		        "mailspliced: upgrade failed, the running daemon keeps serving: %s\n",
		        buf + 4);
		return 1;
	}
	/* it said nothing: it exited during start-up, its error is above */
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	fprintf(stderr,
	        "mailspliced: upgrade failed (the new process exited with status %d during "
	        "start-up), the running daemon keeps serving\n",
	        WIFEXITED(st) ? code : 128 + WTERMSIG(st));
	return code ? code : 1;
}

static bool recv_expect(struct ho_msg *m, int *fds, unsigned *n, char *err, size_t errlen)
{
	char e[256];
	if (!control_recv(N.fd, m, fds, n, HELLO_TIMEOUT_MS, e, sizeof(e))) {
		snprintf(err, errlen, "hand-over: %s", e);
		return false;
	}
	if (m->type == HO_ABORT) {
		snprintf(err, errlen, "the running daemon refused: %s", m->u.text.reason);
		return false;
	}
	return true;
}

static void close_passed(void)
{
	for (size_t i = 0; i < N.n_mail; i++)
		if (!N.mail[i].taken && N.mail[i].fd >= 0)
			close(N.mail[i].fd);
	free(N.mail);
	N.mail = NULL;
	N.n_mail = 0;
	server_inherit_listeners(NULL, 0);
}

bool upgrade_connect(const struct config *cfg, char *err, size_t errlen)
{
	static struct ho_msg m;
	int fds[HO_FDS_MAX];
	unsigned n = 0;
	char e[512];

	if (!cfg->control_socket[0]) {
		snprintf(err, errlen,
		         "server.control_socket is \"\": no running daemon to replace");
		return false;
	}
	N.fd = control_connect(cfg->control_socket, e, sizeof(e));
	if (N.fd < 0) {
		snprintf(err, errlen, "%s", e);
		return false;
	}
	if (!control_peer_ok(N.fd, daemon_uid(cfg), &N.pred, e, sizeof(e))) {
		snprintf(err, errlen, "%s: %s", cfg->control_socket, e);
		return false;
	}
	memset(&m, 0, sizeof(m));
	m.type = HO_HELLO;
	m.u.hello.pid = (uint32_t)getpid();
	str_copy(m.u.hello.software, SOFTWARE, sizeof(m.u.hello.software));
	if (!control_send(N.fd, &m, NULL, e, sizeof(e))) {
		snprintf(err, errlen, "hand-over: %s", e);
		return false;
	}
	if (!recv_expect(&m, fds, &n, err, errlen))
		return false;
	if (m.type != HO_WELCOME) {
		snprintf(err, errlen, "hand-over: expected WELCOME, got %s", ho_type_name(m.type));
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		return false;
	}
	N.log_fd = fds[0];
	/* SO_PEERCRED names whoever created the listening socket, which a
	 * daemon passes on: its own word says which process it is */
	N.pred = (pid_t)m.u.welcome.pid;
	uint32_t expected = m.u.welcome.listeners;
	N.mail = xcalloc(expected ? expected : 1, sizeof(*N.mail));
	log_msg(LOG_INFO, "upgrade", "state=connected predecessor_pid=%d listeners=%u sockmap=%s",
	        (int)N.pred, expected, m.u.welcome.sockmap ? "yes" : "no");
	for (;;) {
		if (!recv_expect(&m, fds, &n, err, errlen))
			return false;
		if (m.type == HO_LISTENERS_END)
			break;
		if (m.type == HO_SOCKMAP) {
			if (datapath_caps()->kernel_path &&
			    datapath_adopt_sockmap(fds, m.u.sockmap.dir_size,
			                           m.u.sockmap.max_sockets, e, sizeof(e))) {
				continue;
			}
			if (datapath_caps()->kernel_path)
				log_msg(LOG_WARN, "upgrade",
				        "sockmap=not-adopted reason=\"%s\" (its sessions stay with "
				        "the running daemon)",
				        e);
			for (unsigned i = 0; i < n; i++)
				close(fds[i]);
			continue;
		}
		if (m.type != HO_LISTENER) {
			snprintf(err, errlen, "hand-over: unexpected %s", ho_type_name(m.type));
			for (unsigned i = 0; i < n; i++)
				close(fds[i]);
			return false;
		}
		int fd = fds[0];
		switch (m.u.listener.kind) {
		case HO_LISTEN_MAIL: {
			struct inherited_listener *il;
			int on = 0;
			socklen_t ol = sizeof(on), al = sizeof(struct sockaddr_storage);
			if (N.n_mail == expected ||
			    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &ol) != 0 || !on) {
				close(fd);
				snprintf(err, errlen,
				         "hand-over: listener %u is not a listening socket",
				         m.u.listener.index);
				return false;
			}
			il = &N.mail[N.n_mail++];
			il->fd = fd;
			il->index = m.u.listener.index;
			if (getsockname(fd, (struct sockaddr *)&il->addr, &al) != 0)
				il->addr.ss_family = 0;
			break;
		}
		case HO_LISTEN_ADMIN:
			N.admin_fd = fd;
			N.admin_index = m.u.listener.index;
			N.admin_passed = true;
			admin_inherit_listener(fd);
			break;
		case HO_LISTEN_CONTROL:
			N.control_fd = fd;
			N.control_index = m.u.listener.index;
			N.control_passed = true;
			break;
		}
	}
	server_inherit_listeners(N.mail, N.n_mail);
	return true;
}

void upgrade_abort(const char *reason)
{
	static struct ho_msg m;
	char e[64];

	if (!N.successor)
		return;
	if (N.fd >= 0) {
		memset(&m, 0, sizeof(m));
		m.type = HO_ABORT;
		str_copy(m.u.text.reason, reason, sizeof(m.u.text.reason));
		control_send(N.fd, &m, NULL, e, sizeof(e));
		close(N.fd);
		N.fd = -1;
	}
	report(false, "%s", reason);
}

/* ---- sessions still in the predecessor, listed in /sessions ---- */

struct remote {
	struct live_session live;
	struct remote *next;
};

static void remote_kick(struct live_session *ls)
{
	static struct ho_msg m;

	memset(&m, 0, sizeof(m));
	m.type = HO_KICK;
	str_copy(m.u.id.id, ls->session_id, sizeof(m.u.id.id));
	pthread_mutex_lock(&N.lock);
	if (N.chan)
		ho_chan_send(N.chan, &m, NULL);
	pthread_mutex_unlock(&N.lock);
}

static void remote_add(const struct ho_msg *m)
{
	struct remote *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	str_copy(r->live.session_id, m->u.draining.id, sizeof(r->live.session_id));
	str_copy(r->live.account, m->u.draining.account, sizeof(r->live.account));
	str_copy(r->live.listener, m->u.draining.listener, sizeof(r->live.listener));
	str_copy(r->live.client, m->u.draining.client, sizeof(r->live.client));
	str_copy(r->live.destination, m->u.draining.destination, sizeof(r->live.destination));
	r->live.protocol = PROTO_COUNT;
	for (int p = 0; p < PROTO_COUNT; p++)
		if (strcmp(proto_name((enum proto)p), m->u.draining.protocol) == 0)
			r->live.protocol = (enum proto)p;
	if (r->live.protocol == PROTO_COUNT)
		r->live.protocol = PROTO_IMAP; /* a name this build lacks: shown as imap */
	r->live.state = "draining";
	r->live.data_path = "";
	r->live.started_ms = m->u.draining.started_ms;
	r->live.pid = (int)N.pred;
	r->live.base = main_base;
	r->live.kick = remote_kick;
	registry_add(&r->live);
	r->next = N.remotes;
	N.remotes = r;
}

static void remote_remove(const char *id)
{
	for (struct remote **pp = &N.remotes; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->live.session_id, id) == 0) {
			struct remote *r = *pp;
			*pp = r->next;
			registry_remove(&r->live);
			free(r);
			return;
		}
	}
}

static void remotes_clear(void)
{
	while (N.remotes)
		remote_remove(N.remotes->live.session_id);
}

/* ---- adopting sessions ---- */

struct adopt_job {
	struct worker *w;
	struct ho_session rec;
	int fds[HO_FDS_MAX];
	unsigned n_fds;
	uint8_t pending[2][HO_PENDING_MAX];
};

static void send_ack(const char *id, bool adopted, const char *reason)
{
	static __thread struct ho_msg m;

	memset(&m, 0, sizeof(m));
	m.type = HO_SESSION_ACK;
	str_copy(m.u.ack.id, id, sizeof(m.u.ack.id));
	m.u.ack.adopted = adopted;
	str_copy(m.u.ack.reason, reason ? reason : "", sizeof(m.u.ack.reason));
	pthread_mutex_lock(&N.lock);
	if (N.chan)
		ho_chan_send(N.chan, &m, NULL);
	pthread_mutex_unlock(&N.lock);
}

static void on_adopt(evutil_socket_t unused, short what, void *arg)
{
	struct adopt_job *j = arg;
	char why[256];

	if (session_adopt(j->w, &j->rec, j->fds, N.pred, why, sizeof(why))) {
		send_ack(j->rec.id, true, NULL);
	} else {
		for (unsigned i = 0; i < j->n_fds; i++)
			close(j->fds[i]);
		log_msg(LOG_WARN, "handover-session", "id=%s result=refused reason=\"%s\"",
		        j->rec.id, why);
		send_ack(j->rec.id, false, why);
	}
	free(j);
}

static void adopt(const struct ho_msg *m, int *fds, unsigned n_fds)
{
	struct adopt_job *j = malloc(sizeof(*j));

	if (!j) {
		for (unsigned i = 0; i < n_fds; i++)
			close(fds[i]);
		send_ack(m->u.session.id, false, "out of memory");
		return;
	}
	j->rec = m->u.session;
	memcpy(j->fds, fds, sizeof(int) * n_fds);
	j->n_fds = n_fds;
	/* the pending bytes point into the channel's buffer: copy them */
	for (int i = 0; i < 2; i++) {
		if (j->rec.dir[i].n_pending) {
			memcpy(j->pending[i], j->rec.dir[i].pending, j->rec.dir[i].n_pending);
			j->rec.dir[i].pending = j->pending[i];
		}
	}
	j->w = &N.srv->workers[N.next_worker++ % N.srv->n_workers];
	event_base_once(j->w->base, -1, EV_TIMEOUT, on_adopt, j, NULL);
}

static void round_over(const char *how, unsigned moved, unsigned staying)
{
	if (N.round_timer)
		evtimer_del(N.round_timer);
	log_msg(LOG_INFO, "upgraded", "from_pid=%d moved=%u staying=%u%s", (int)N.pred, moved,
	        staying, how);
	report(true,
	       "pid %d took over from pid %d: %u sessions moved, %u stay with it until they end",
	       (int)getpid(), (int)N.pred, moved, staying);
}

static void on_round_timeout(evutil_socket_t fd, short what, void *arg)
{
	report(true, "pid %d took over from pid %d (sessions still moving after %d s)",
	       (int)getpid(), (int)N.pred, ROUND_TIMEOUT_MS / 1000);
}

static void new_end(struct ho_chan *c, const char *why, void *arg)
{
	pthread_mutex_lock(&N.lock);
	N.chan = NULL;
	pthread_mutex_unlock(&N.lock);
	remotes_clear();
	if (!N.committed)
		log_msg(LOG_WARN, "upgrade", "state=predecessor-lost reason=\"%s\"", why);
	else
		log_msg(LOG_INFO, "upgrade", "state=predecessor-gone pid=%d", (int)N.pred);
	report(true, "pid %d took over from pid %d (which then went away: %s)", (int)getpid(),
	       (int)N.pred, why);
	ho_chan_free(c);
}

static void new_msg(struct ho_chan *c, const struct ho_msg *m, int *fds, unsigned n_fds, void *arg)
{
	switch (m->type) {
	case HO_COMMITTED:
		N.committed = true;
		/* the daemon's log from here on: where the predecessor wrote */
		if (N.log_fd >= 0) {
			dup2(N.log_fd, 1);
			dup2(N.log_fd, 2);
			close(N.log_fd);
			N.log_fd = -1;
		}
		if (hooks.took_over)
			hooks.took_over((int)N.pred);
		return;
	case HO_SESSION:
		if (O.handed_over) {
			/* this process has a successor of its own by now: the
			 * session stays where it is until it ends */
			char why[128];
			for (unsigned i = 0; i < n_fds; i++)
				close(fds[i]);
			snprintf(why, sizeof(why), "pid %d has handed over to a successor since",
			         (int)getpid());
			send_ack(m->u.session.id, false, why);
			return;
		}
		adopt(m, fds, n_fds);
		return;
	case HO_DRAINING:
		remote_add(m);
		return;
	case HO_GONE:
		remote_remove(m->u.id.id);
		return;
	case HO_ROUND_DONE:
		round_over("", m->u.round.moved, m->u.round.draining);
		return;
	case HO_BYE:
		log_msg(LOG_INFO, "upgrade", "state=predecessor-exited pid=%d reason=\"%s\"",
		        (int)N.pred, m->u.text.reason);
		return; /* the end of the stream follows */
	default:
		for (unsigned i = 0; i < n_fds; i++)
			close(fds[i]);
		log_msg(LOG_WARN, "upgrade", "state=unexpected message=%s", ho_type_name(m->type));
		return;
	}
}

bool upgrade_commit(struct server *srv, struct event_base *base, char *err, size_t errlen)
{
	static struct ho_msg m;
	char e[256];

	N.srv = srv;
	main_base = base;
	memset(&m, 0, sizeof(m));
	m.type = HO_COMMIT;
	for (size_t i = 0; i < N.n_mail; i++)
		if (N.mail[i].taken)
			m.u.commit.taken[m.u.commit.n_taken++] = N.mail[i].index;
	if (N.admin_passed && admin_inherited_used())
		m.u.commit.taken[m.u.commit.n_taken++] = N.admin_index;
	if (N.control_passed && N.control_fd < 0) /* upgrade_serve took it */
		m.u.commit.taken[m.u.commit.n_taken++] = N.control_index;
	close_passed();
	if (N.control_fd >= 0) {
		close(N.control_fd);
		N.control_fd = -1;
	}
	if (!control_send(N.fd, &m, NULL, e, sizeof(e))) {
		snprintf(err, errlen, "hand-over: %s", e);
		return false;
	}
	struct ho_chan *c = ho_chan_new(base, N.fd, new_msg, new_end, NULL);
	if (!c) {
		snprintf(err, errlen, "hand-over: out of memory");
		return false;
	}
	N.fd = -1;
	pthread_mutex_lock(&N.lock);
	N.chan = c;
	pthread_mutex_unlock(&N.lock);
	N.round_timer = evtimer_new(base, on_round_timeout, NULL);
	struct timeval tv = {ROUND_TIMEOUT_MS / 1000, 0};
	evtimer_add(N.round_timer, &tv);
	return true;
}

/* ==== both: the control socket ==== */

bool upgrade_serve(struct server *srv, struct event_base *base, const struct upgrade_hooks *h,
                   char *err, size_t errlen)
{
	const char *path = srv->cfg->control_socket;
	char e[512];

	O.srv = srv;
	main_base = base;
	if (h)
		hooks = *h;
	O.flight = xcalloc(srv->n_workers, sizeof(*O.flight));
	O.round_open = xcalloc(srv->n_workers, sizeof(*O.round_open));
	O.hello_timer = evtimer_new(base, on_hello_timeout, NULL);
	if (!path[0]) {
		log_msg(LOG_INFO, "control", "socket=none upgrade=off");
		return true;
	}
	str_copy(O.path, path, sizeof(O.path));
	/* the predecessor's socket, if it is still the one configured */
	if (N.control_fd >= 0) {
		struct sockaddr_un sa;
		socklen_t len = sizeof(sa);
		memset(&sa, 0, sizeof(sa));
		if (getsockname(N.control_fd, (struct sockaddr *)&sa, &len) == 0 &&
		    sa.sun_family == AF_UNIX && strcmp(sa.sun_path, path) == 0) {
			O.listen_fd = N.control_fd;
			N.control_fd = -1;
			fcntl(O.listen_fd, F_SETFL, fcntl(O.listen_fd, F_GETFL) | O_NONBLOCK);
		}
	}
	if (O.listen_fd < 0) {
		int fd = control_listen(path, e, sizeof(e));
		if (fd == -2) {
			log_msg(LOG_INFO, "control", "socket=none upgrade=off reason=\"%s\"", e);
			return true;
		}
		if (fd < 0) {
			snprintf(err, errlen, "server.control_socket: %s", e);
			return false;
		}
		O.listen_fd = fd;
	}
	O.accept_ev = event_new(base, O.listen_fd, EV_READ | EV_PERSIST, on_control_accept, NULL);
	if (!O.accept_ev) {
		snprintf(err, errlen, "server.control_socket: out of memory");
		return false;
	}
	event_add(O.accept_ev, NULL);
	log_msg(LOG_INFO, "control", "socket=%s upgrade=on", path);
	return true;
}

bool upgrade_handed_over(void)
{
	return O.handed_over;
}

bool upgrade_busy(void)
{
	if (O.state != OLD_COMMITTED || !O.chan)
		return false;
	pthread_mutex_lock(&O.lock);
	bool busy = !O.round_done || O.n_pending > 0;
	pthread_mutex_unlock(&O.lock);
	return busy;
}

void upgrade_tick(void)
{
	if (O.state != OLD_COMMITTED || !O.chan)
		return;
	for (size_t i = 0; i < O.srv->n_workers; i++)
		event_base_once(O.srv->workers[i].base, -1, EV_TIMEOUT, export_pass,
		                &O.srv->workers[i], NULL);
}

void upgrade_session_gone(const char *id)
{
	static __thread struct ho_msg m;

	if (O.state != OLD_COMMITTED)
		return;
	memset(&m, 0, sizeof(m));
	m.type = HO_GONE;
	str_copy(m.u.id.id, id, sizeof(m.u.id.id));
	old_send(&m, NULL);
}

void upgrade_finish(const char *why)
{
	if (O.state == OLD_COMMITTED && O.chan) {
		send_text(HO_BYE, why);
		pthread_mutex_lock(&O.lock);
		struct ho_chan *c = O.chan;
		pthread_mutex_unlock(&O.lock);
		ho_chan_flush(c, 2000);
	}
	old_reset(NULL);
	if (O.accept_ev) {
		event_free(O.accept_ev);
		O.accept_ev = NULL;
	}
	if (O.hello_timer) {
		event_free(O.hello_timer);
		O.hello_timer = NULL;
	}
	if (O.listen_fd >= 0) {
		close(O.listen_fd);
		unlink(O.path);
		O.listen_fd = -1;
	}
	free(O.flight);
	O.flight = NULL;
	free(O.round_open);
	O.round_open = NULL;
	free(O.pending);
	O.pending = NULL;
	O.n_pending = O.cap_pending = 0;
	pthread_mutex_lock(&N.lock);
	struct ho_chan *c = N.chan;
	N.chan = NULL;
	pthread_mutex_unlock(&N.lock);
	if (c)
		ho_chan_free(c);
	remotes_clear();
	if (N.round_timer) {
		event_free(N.round_timer);
		N.round_timer = NULL;
	}
}
