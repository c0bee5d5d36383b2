"""Real Redis and real PostgreSQL for the mapping-store tests, on loopback, in a directory of
their own, started and stopped by pid (never by name), the way the Dovecot and Postfix stacks
are.

    redis = RedisServer(state_dir, port)      # redis-server 7 from Debian
    redis.start(); redis.cli("SET", "route:alice@example.org", "new"); redis.kill(); redis.start()

    pg = PostgresServer(state_dir, port)      # /usr/lib/postgresql/15/bin, as the postgres user
    pg.start(); pg.psql("INSERT INTO routes VALUES ('alice@example.org', 'new')")

    relay = DelayRelay(listen_port, ("127.0.0.1", redis.port)); relay.start()
    relay.delay = 3.0                         # the store now answers 3 s late
    relay.freeze()                            # the open connections go silent

PostgreSQL refuses to run as root: initdb and postgres run as the `postgres` system user
(subprocess's user=/group=, so the pid we hold is the postmaster's own). Both servers keep no
state outside their directory and log to a file in it. missing_prerequisites() says why they
cannot run here (the tests then skip with that reason).
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
PG_BIN = "/usr/lib/postgresql/15/bin"
PSQL = "/usr/bin/psql"
PG_USER = "postgres"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = os.path.join(REPO_ROOT, "conf", "mailsplice-postgres.sql")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class StoreError(RuntimeError):
    pass


def missing_prerequisites(kind):
    """Why `kind` ("redis" or "postgres") cannot run here, as sentences (empty: it can)."""
    problems = []
    if kind == "redis":
        for path in (REDIS_SERVER, REDIS_CLI):
            if not os.path.exists(path):
                problems.append(f"{path} is missing (apt-get install redis-server redis-tools)")
    else:
        if os.geteuid() != 0:
            problems.append("not running as root (PostgreSQL is started as the postgres user)")
        for path in (os.path.join(PG_BIN, "initdb"), os.path.join(PG_BIN, "postgres"), PSQL):
            if not os.path.exists(path):
                problems.append(f"{path} is missing (apt-get install postgresql)")
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            problems.append("system user postgres is missing (created by the postgresql package)")
    return problems


def _wait_port(host, port, proc, timeout, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"exited with {proc.returncode} while starting; log:\n{_tail(log)}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise StoreError(f"port {host}:{port} not listening after {timeout}s; log:\n{_tail(log)}")


def _tail(path, n=30):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except FileNotFoundError:
        return f"({path} does not exist)"


def _stop_pid(proc, sig, timeout):
    """Signal our own child and reap it; SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """redis-server on addr:port, no persistence, DEBUG enabled (for DEBUG SLEEP)."""

    def __init__(self, state_dir, port, addr="127.0.0.1", name="redis"):
        self.addr, self.port = addr, port
        self.dir = os.path.join(state_dir, name)
        self.conf = os.path.join(self.dir, "redis.conf")
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)

    @property
    def url(self):
        return f"redis://{self.addr}:{self.port}"

    def start(self):
        with open(self.conf, "w") as f:
            f.write(f"""bind {self.addr}
port {self.port}
protected-mode no
daemonize no
dir {self.dir}
logfile {self.log}
save ""
appendonly no
enable-debug-command yes
""")
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _wait_port(self.addr, self.port, self.proc, START_TIMEOUT, self.log)
        return self

    def stop(self):
        _stop_pid(self.proc, signal.SIGTERM, STOP_TIMEOUT)
        self.proc = None

    def kill(self):
        """The store dies: no goodbye, connections reset."""
        _stop_pid(self.proc, signal.SIGKILL, STOP_TIMEOUT)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, check=True):
        out = subprocess.run([REDIS_CLI, "-h", self.addr, "-p", str(self.port), *args],
                             capture_output=True, text=True, timeout=30)
        if check and (out.returncode != 0 or out.stdout.startswith("(error)")
                      or out.stdout.startswith("ERR")):
            raise StoreError(f"redis-cli {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout.strip()


class PostgresServer:
    """A PostgreSQL 15 cluster in <state_dir>/<name>: a database `mailsplice` owned by the
    login role `mailsplice` (password auth over TCP), the schema of
    conf/mailsplice-postgres.sql loaded."""

    USER, PASSWORD, DB = "mailsplice", "store-pw:/@x", "mailsplice"

    def __init__(self, state_dir, port, addr="127.0.0.1", name="postgres"):
        self.addr, self.port = addr, port
        self.dir = os.path.join(state_dir, name)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "postgres.log")
        self.proc = None
        self.initialised = False
        pw = pwd.getpwnam(PG_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    @property
    def url(self):
        from urllib.parse import quote
        return (f"postgresql://{self.USER}:{quote(self.PASSWORD, safe='')}@{self.addr}:"
                f"{self.port}/{self.DB}")

    def _as_postgres(self, argv, **kw):
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[],
                              capture_output=True, text=True, timeout=120, cwd="/", **kw)

    def _init(self):
        os.makedirs(self.dir, exist_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)
        for d in (self.dir, self.sock):
            os.makedirs(d, exist_ok=True)
            os.chown(d, self.uid, self.gid)
        os.chmod(self.dir, 0o755)
        out = self._as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                                 "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                                 "-E", "UTF8", "--locale=C"])
        if out.returncode != 0:
            raise StoreError(f"initdb failed:\n{out.stdout}{out.stderr}")
        self.initialised = True

    def start(self):
        if not self.initialised:
            self._init()
        logf = open(self.log, "ab")
        os.chown(self.log, self.uid, self.gid)
        self.proc = subprocess.Popen(
            [os.path.join(PG_BIN, "postgres"), "-D", self.data, "-p", str(self.port),
             "-c", f"listen_addresses={self.addr}", "-c", f"unix_socket_directories={self.sock}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
            user=self.uid, group=self.gid, extra_groups=[], stdin=subprocess.DEVNULL,
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        logf.close()
        _wait_port(self.addr, self.port, self.proc, START_TIMEOUT, self.log)
        # accepting connections (not just listening: recovery after a kill takes a moment)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            out = self._admin_sql("SELECT 1", db="postgres", check=False)
            if out.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise StoreError(f"postgres not ready: {out.stderr}\n{_tail(self.log)}")
            time.sleep(0.1)
        if not getattr(self, "_schema_loaded", False):
            self._admin_sql(f"CREATE ROLE {self.USER} LOGIN PASSWORD '{self.PASSWORD}'",
                            db="postgres")
            self._admin_sql(f"CREATE DATABASE {self.DB} OWNER {self.USER}", db="postgres")
            self.psql_file(SCHEMA)
            self._schema_loaded = True
        return self

    def _admin_sql(self, sql, db=None, check=True):
        out = self._as_postgres([PSQL, "-h", self.sock, "-p", str(self.port), "-U", "postgres",
                                 "-d", db or self.DB, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql])
        if check and out.returncode != 0:
            raise StoreError(f"psql {sql!r}: {out.stdout}{out.stderr}")
        return out

    def psql(self, sql):
        """SQL as the store's own role, over TCP with its password (what an operator's psql
        or the copy tool's script would do); returns the output rows."""
        env = dict(os.environ, PGPASSWORD=self.PASSWORD)
        out = subprocess.run([PSQL, "-h", self.addr, "-p", str(self.port), "-U", self.USER,
                              "-d", self.DB, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
                             capture_output=True, text=True, timeout=60, env=env)
        if out.returncode != 0:
            raise StoreError(f"psql {sql!r}: {out.stdout}{out.stderr}")
        return out.stdout.strip()

    def psql_file(self, path):
        env = dict(os.environ, PGPASSWORD=self.PASSWORD)
        out = subprocess.run([PSQL, "-h", self.addr, "-p", str(self.port), "-U", self.USER,
                              "-d", self.DB, "-v", "ON_ERROR_STOP=1", "-qX", "-f", path],
                             capture_output=True, text=True, timeout=60, env=env)
        if out.returncode != 0:
            raise StoreError(f"psql -f {path}: {out.stdout}{out.stderr}")

    def superuser_sql(self, sql):
        return self._admin_sql(sql).stdout.strip()

    def stop(self):
        # SIGINT: PostgreSQL's "fast" shutdown
        _stop_pid(self.proc, signal.SIGINT, STOP_TIMEOUT)
        self.proc = None

    def kill(self):
        """The store dies: the postmaster is killed (its backends notice and exit)."""
        _stop_pid(self.proc, signal.SIGKILL, STOP_TIMEOUT)
        self.proc = None
        # the backends of a killed postmaster exit on their own; wait for them so that
        # the next start finds the port and the shared memory free
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and _postgres_children(self.data):
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def _postgres_children(data_dir):
    """Pids of processes still running from this cluster (by their working directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == data_dir:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


class DelayRelay:
    """A TCP relay in front of a store that holds every answer back by `delay` seconds (a
    slow store, as the proxy sees it). Threads; stopped by stop()."""

    def __init__(self, listen, target, delay=0.0):
        self.listen, self.target, self.delay = listen, target, delay
        self._generation = 0  # freeze(): connections of older generations stall
        self._srv = None
        self._threads = []
        self._socks = []
        self._stop = threading.Event()

    def start(self):
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(self.listen)
        self._srv.listen(64)
        self._srv.settimeout(0.2)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            s.settimeout(None)  # an idle store connection is not a dead one
            self._socks += [c, s]
            gen = self._generation
            for a, b, slow in ((c, s, False), (s, c, True)):
                t = threading.Thread(target=self._pump, args=(a, b, slow, gen), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src, dst, slow, gen):
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                while gen < self._generation and not self._stop.is_set():
                    time.sleep(0.1)  # frozen: nothing passes, nothing is closed
                if slow and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self):
        """The connections open now go silent, both ways, without being closed (a
        firewall forgetting them); new connections pass."""
        self._generation += 1

    def stop(self):
        self._stop.set()
        for s in self._socks + [self._srv]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        # the port is free once no thread is inside accept() any more
        self._threads[0].join(5)
