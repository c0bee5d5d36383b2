"""Shared mapping stores and a fleet that cuts over as one (issue 21).

Every test runs twice: against a real Redis and against a real PostgreSQL (started by
tests/harness/stores.py in the session's state directory), each time with two mailspliced
nodes sharing the store and the real Dovecot/Postfix stacks behind them. Node 2 reaches the
store through a TCP relay that can be told to hold answers back (a slow store, as node 2
sees it); node 1 talks to the store directly.

Evidence comes from the backends' own logs (Dovecot's "Login: user=<...> rip=127.0.0.5",
Postfix's "sasl_username="), from the store itself (redis-cli, psql) and from the nodes'
logs; the admin API is driven with curl, as an operator would.
"""

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect
from tests.harness.stores import (DelayRelay, PostgresServer, RedisServer,
                                  missing_prerequisites)

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BASE = 26000 + PORT_OFFSET
REDIS_PORT, REDIS_RELAY = BASE + 379, BASE + 380
PG_PORT, PG_RELAY = BASE + 432, BASE + 433


def ports(node):
    b = BASE + 100 * (node - 1)
    return {"imap": b + 43, "pop3": b + 10, "submission": b + 87, "sieve": b + 90,
            "admin": b + 44}


USERS = {"alice": "alice-pw", "bob": "bob-pw", "dave": "dave-pw", "erin": "erin-pw"}
UPSERT = ("INSERT INTO routes (identifier, destination) VALUES ($1, $2) "
          "ON CONFLICT (identifier) DO UPDATE SET destination = EXCLUDED.destination")


def node_config(n, kind, store_url, legacy, new, pki, token_file, read_only=False):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    p = ports(n)
    if kind == "redis":
        store = f"""
[mapping.redis]
url = "{store_url}"
key_prefix = "route:"
pool_size = 4
"""
    else:
        store = f"""
[mapping.sql]
url = "{store_url}"
query = "SELECT destination FROM routes WHERE identifier = $1"
pool_size = 4
""" + ("" if read_only else f"""upsert_query = "{UPSERT}"
delete_query = "DELETE FROM routes WHERE identifier = $1"
""")
    listeners = "".join(f"""
[listener.{proto}]
protocol = "{proto if proto != 'sieve' else 'managesieve'}"
bind = ["{PROXY_ADDR}:{p[proto]}"]
tls = "plain"
""" for proto in ("imap", "pop3", "submission", "sieve"))
    return f"""
[server]
threads = 2
log_level = "debug"
host_down_threshold = 0
shutdown_grace = "2s"
node_name = "node{n}"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"

[mapping]
source = "{kind}"
normalize = "lowercase"
default_domain = "example.org"
lookup_timeout = "1s"
positive_ttl = "10m"
negative_ttl = "10m"
{store}
[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.imap]
port = {legacy.ports["imap"]}
tls = "starttls"

[destination.legacy.protocol.pop3]
port = {legacy.ports["pop3"]}
tls = "starttls"

[destination.legacy.protocol.submission]
port = {legacy.ports["submission"]}
tls = "starttls"

[destination.legacy.protocol.managesieve]
port = {legacy.ports["sieve"]}
tls = "starttls"

[destination.new]
host = "{new.address}"
tls_server_name = "{new.hostname}"
forwarding = "proxy"

[destination.new.protocol.imap]
port = {new.ports["imaps"]}
tls = "implicit"

[destination.new.protocol.pop3]
port = {new.ports["pop3s"]}
tls = "implicit"

[destination.new.protocol.submission]
port = {new.ports["submission"]}
tls = "starttls"

[destination.new.protocol.managesieve]
port = {new.ports["sieve"]}
tls = "starttls"
{listeners}
[admin]
bind = "{PROXY_ADDR}:{p["admin"]}"
tls = "implicit"
bearer_token_file = "{token_file}"
"""


class Fleet:
    """The store, its relay, two nodes, and the operator's tools."""

    def __init__(self, kind, store, relay, nodes, token, ca_file):
        self.kind, self.store, self.relay, self.nodes = kind, store, relay, nodes
        self.token, self.ca_file = token, ca_file

    def node(self, n):
        return self.nodes[n - 1]

    # ---- the operator
    def curl(self, n, method, path):
        cmd = ["curl", "-sS", "--interface", CLIENT_ADDR, "--cacert", self.ca_file, "-X", method,
               "-H", f"Authorization: Bearer {self.token}", "-w", "\n%{http_code}",
               f"https://{PROXY_ADDR}:{ports(n)['admin']}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body.strip()

    def bus_received(self):
        """Fleet events each node has received so far (its /metrics)."""
        counts = []
        for n in (1, 2):
            code, body = self.curl(n, "GET", "/metrics")
            assert code == 200, body
            m = re.search(r'^mailsplice_bus_events_total\{direction="received"\} (\d+)$', body,
                          re.M)
            counts.append(int(m.group(1)) if m else 0)
        return counts

    def wait_bus_quiet(self, quiet=0.5, timeout=10):
        """Until no node has received a fleet event for `quiet` seconds: what a test wrote
        (the trigger's NOTIFYs, an invalidation fanned out by node 1) has arrived and
        cannot empty a cache entry the test fills next."""
        deadline = time.monotonic() + timeout
        last, since = self.bus_received(), time.monotonic()
        while time.monotonic() - since < quiet:
            assert time.monotonic() < deadline, "fleet events kept arriving"
            time.sleep(0.1)
            now = self.bus_received()
            if now != last:
                last, since = now, time.monotonic()

    def set_row(self, account, dest):
        """Written straight into the store, as redis-cli or psql would (PostgreSQL's
        trigger then tells every node, which drops its cache entry)."""
        if self.kind == "redis":
            self.store.cli("SET", f"route:{account}", dest)
        else:
            self.store.psql(f"INSERT INTO routes VALUES ('{account}', '{dest}') ON CONFLICT "
                            f"(identifier) DO UPDATE SET destination = EXCLUDED.destination")
            self.wait_bus_quiet()

    def row(self, account):
        if self.kind == "redis":
            return self.store.cli("GET", f"route:{account}") or None
        return self.store.psql(f"SELECT destination FROM routes WHERE identifier = '{account}'") \
            or None

    def clear(self):
        if self.kind == "redis":
            self.store.cli("FLUSHALL")
        else:
            self.store.psql("DELETE FROM routes")
        for u in USERS:
            assert self.curl(1, "POST", f"/connections/delay?identifier={u}&seconds=0")[0] == 200
        assert self.curl(1, "POST", "/cache/invalidate") == (200, "ok")
        self.wait_bus_quiet()

    def fresh_relay(self):
        """A new relay for node 2: the old one's connections (frozen, or holding delayed
        answers) are closed, and node 2 connects again."""
        self.relay.stop()
        self.relay = DelayRelay(self.relay.listen, self.relay.target).start()

    def cache_on(self, n, user):
        """Log user in through node n until its cache holds the answer (a login racing
        an invalidation answers but does not fill the cache)."""
        for _ in range(5):
            assert imap_status(ports(n)["imap"], user).startswith("a1 OK")
            if self.cached(n, f"{user}@example.org"):
                return
            time.sleep(0.2)
        raise AssertionError(f"node{n} does not cache {user}")

    def cached(self, n, account):
        code, body = self.curl(n, "GET", f"/mappings?identifier={account}")
        assert code == 200, body
        return json.loads(body)["cached"]

    def wait_uncached(self, n, account, timeout=5):
        """Until node n has dropped account's cache entry (it heard the event)."""
        deadline = time.monotonic() + timeout
        while self.cached(n, account):
            assert time.monotonic() < deadline, f"node{n} still caches {account}"
            time.sleep(0.05)

    def wait_store_up(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for n in (1, 2):
                code, body = self.curl(n, "GET", "/stats")
                st = json.loads(body) if code == 200 else {}
                ok &= st.get("store", {}).get("state") == "up" and \
                    st.get("store", {}).get("bus_subscribed") is True and \
                    len(st.get("bus", {}).get("nodes", [])) >= 1
            if ok:
                return
            time.sleep(0.2)
        raise AssertionError(f"store not up on both nodes: {self.curl(1, 'GET', '/stats')} "
                             f"{self.curl(2, 'GET', '/stats')}")


@pytest.fixture(scope="module", params=["redis", "sql"])
def fleet(request, harness_state, pki, legacy_stack, new_stack):
    kind = request.param
    problems = missing_prerequisites("redis" if kind == "redis" else "postgres")
    if problems:
        pytest.skip(f"{kind} store unavailable: " + "; ".join(problems))
    if kind == "redis":
        store = RedisServer(harness_state, REDIS_PORT).start()
        relay = DelayRelay(("127.0.0.1", REDIS_RELAY), ("127.0.0.1", REDIS_PORT)).start()
        urls = [store.url, f"redis://127.0.0.1:{REDIS_RELAY}"]
    else:
        store = PostgresServer(harness_state, PG_PORT).start()
        relay = DelayRelay(("127.0.0.1", PG_RELAY), ("127.0.0.1", PG_PORT)).start()
        urls = [store.url, store.url.replace(f":{PG_PORT}/", f":{PG_RELAY}/")]
    token = secrets.token_hex(20)
    token_file = os.path.join(harness_state, f"stores-{kind}.token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (token + "\n").encode())
    os.close(fd)
    nodes = []
    try:
        for n in (1, 2):
            p = Proxy(harness_state, f"{kind}-node{n}",
                      node_config(n, kind, urls[n - 1], legacy_stack, new_stack, pki, token_file),
                      env={"SSL_CERT_FILE": pki.ca_file})
            p.n, p.url = n, urls[n - 1]
            nodes.append(p.start())
        f = Fleet(kind, store, relay, nodes, token, pki.ca_file)
        f.wait_store_up()
        yield f
    finally:
        for p in nodes:
            rc = p.stop()
            assert rc == 0, f"node{p.n} exited with {rc}"
        relay.stop()
        store.stop()


@pytest.fixture
def fl(fleet):
    """The fleet, with an empty store, no holds and empty caches on every node."""
    if not fleet.store.alive():
        fleet.store.start()
    fleet.relay.delay = 0
    fleet.wait_store_up()
    fleet.clear()
    return fleet


# ------------------------------------------------------------------ clients

def imap_login(port, user):
    s = connect(port)
    s.settimeout(15)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    f.write(f"a1 LOGIN {user}@example.org {USERS[user]}\r\n".encode())
    f.flush()
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    return s, f, line.decode().rstrip("\r\n")


def imap_session(port, user):
    s, f, line = imap_login(port, user)
    assert line.startswith("a1 OK"), line
    return s, f


def imap_status(port, user):
    s, f, line = imap_login(port, user)
    s.close()
    return line


def pop3_status(port, user):
    s = connect(port)
    s.settimeout(15)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"+OK")
    f.write(f"USER {user}@example.org\r\n".encode())
    f.flush()
    assert f.readline().startswith(b"+OK")
    f.write(f"PASS {USERS[user]}\r\n".encode())
    f.flush()
    line = f.readline().decode().rstrip("\r\n")
    s.close()
    return line


def submission_status(port, user):
    s = connect(port)
    s.settimeout(15)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"220")
    f.write(b"EHLO client.example\r\n")
    f.flush()
    while True:
        line = f.readline()
        assert line.startswith(b"250"), line
        if line[3:4] == b" ":
            break
    resp = base64.b64encode(f"\0{user}@example.org\0{USERS[user]}".encode()).decode()
    f.write(f"AUTH PLAIN {resp}\r\n".encode())
    f.flush()
    line = f.readline().decode().rstrip("\r\n")
    s.close()
    return line


def sieve_status(port, user):
    s = connect(port)
    s.settimeout(15)
    f = s.makefile("rwb")
    while True:
        line = f.readline()
        assert line, "closed before the greeting ended"
        if line.startswith((b"OK", b"NO", b"BYE")):
            break
    resp = base64.b64encode(f"\0{user}@example.org\0{USERS[user]}".encode()).decode()
    f.write(f'AUTHENTICATE "PLAIN" "{resp}"\r\n'.encode())
    f.flush()
    while True:
        line = f.readline()
        assert line, "closed before the answer"
        if line.startswith((b"OK", b"NO", b"BYE")):
            s.close()
            return line.decode().rstrip("\r\n")


def wait_closed(s, timeout=15):
    """Read until the proxy ends the session; returns what it said last."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, OSError):
        pass
    s.close()
    return data


LOGIN = r"Login: user=<{}@example\.org>.*rip=127\.0\.0\.5"


# ------------------------------------------------------------------ the cutover

def test_put_and_kick_through_node1_close_the_session_on_node2(fl, legacy_stack, new_stack):
    """alice holds an IMAP session on node 2; PUT + kick through node 1 close it (node 2
    answers the kick, so node 1's "kicked 1" is node 2's count), and her next login through
    node 2 is logged by the new Dovecot with her real address."""
    n2 = ports(2)["imap"]
    mark = legacy_stack.log_mark("dovecot")
    s, f = imap_session(n2, "alice")
    legacy_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)

    assert fl.curl(1, "PUT", "/mappings?identifier=alice@example.org&destination=new") == \
        (200, "ok")
    assert fl.row("alice@example.org") == "new"  # in the store before the 200
    assert fl.curl(1, "POST", "/connections/kick?identifier=alice") == (200, "kicked 1")
    wait_closed(s)
    fl.node(2).wait_log(r"event=session .*account=alice@example\.org .*end=kicked")
    fl.node(2).wait_log(r"event=bus-kick origin=node1 account=alice@example\.org kicked=1")

    mark = new_stack.log_mark("dovecot")
    s, f = imap_session(n2, "alice")
    new_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)
    s.close()


def test_move_through_node1_closes_the_session_on_node2(fl, legacy_stack, new_stack):
    """POST /accounts/move: one call; the answer says node 2 closed bob's session."""
    n2 = ports(2)["imap"]
    mark = legacy_stack.log_mark("dovecot")
    s, f = imap_session(n2, "bob")
    legacy_stack.wait_log("dovecot", LOGIN.format("bob"), since=mark)

    code, body = fl.curl(1, "POST", "/accounts/move?identifier=Bob&destination=new")
    assert code == 200, body
    ans = json.loads(body)
    assert ans["normalized"] == "bob@example.org" and ans["destination"] == "new"
    assert ans["nodes"] == {"node1": {"closed": 0}, "node2": {"closed": 1}}
    assert ans["sessions_closed"] == 1 and ans["not_answered"] == []
    assert fl.row("bob@example.org") == "new"
    wait_closed(s)
    fl.node(2).wait_log(r"event=session .*account=bob@example\.org .*end=kicked")

    mark = new_stack.log_mark("dovecot")
    s, f = imap_session(n2, "bob")
    new_stack.wait_log("dovecot", LOGIN.format("bob"), since=mark)
    s.close()


def test_row_written_into_the_store_after_an_invalidate(fl, legacy_stack, new_stack):
    """A row written straight into the store (redis-cli, psql with the trigger off) is not
    seen by node 2 while its cache holds the old answer, and is after an invalidate through
    node 1."""
    n2 = ports(2)["imap"]
    if fl.kind == "sql":
        fl.store.superuser_sql("ALTER TABLE routes DISABLE TRIGGER mailsplice_notify")
    try:
        mark = legacy_stack.log_mark("dovecot")
        fl.cache_on(2, "erin")  # cached: no mapping, legacy
        legacy_stack.wait_log("dovecot", LOGIN.format("erin"), since=mark)
        fl.set_row("erin@example.org", "new")

        mark = legacy_stack.log_mark("dovecot")
        assert imap_status(n2, "erin").startswith("a1 OK")
        legacy_stack.wait_log("dovecot", LOGIN.format("erin"), since=mark)  # still cached

        assert fl.curl(1, "POST", "/cache/invalidate?identifier=erin@example.org") == (200, "ok")
        fl.wait_uncached(2, "erin@example.org")
        mark = new_stack.log_mark("dovecot")
        assert imap_status(n2, "erin").startswith("a1 OK")
        new_stack.wait_log("dovecot", LOGIN.format("erin"), since=mark)
    finally:
        if fl.kind == "sql":
            fl.store.superuser_sql("ALTER TABLE routes ENABLE TRIGGER mailsplice_notify")


def test_postgres_trigger_reaches_node2_without_invalidate(fl, legacy_stack, new_stack):
    """conf/mailsplice-postgres.sql: a row changed by psql NOTIFYs every node."""
    if fl.kind != "sql":
        pytest.skip("the trigger is PostgreSQL's")
    n2 = ports(2)["imap"]
    mark = legacy_stack.log_mark("dovecot")
    fl.cache_on(2, "dave")
    legacy_stack.wait_log("dovecot", LOGIN.format("dave"), since=mark)
    fl.store.psql("INSERT INTO routes VALUES ('dave@example.org', 'new')")
    fl.wait_uncached(2, "dave@example.org")  # the trigger's NOTIFY reached node 2
    mark = new_stack.log_mark("dovecot")
    assert imap_status(n2, "dave").startswith("a1 OK")
    new_stack.wait_log("dovecot", LOGIN.format("dave"), since=mark)


# ------------------------------------------------------------------ the store fails

def test_store_down_temporary_errors_never_the_default(fl, legacy_stack, new_stack):
    """The store killed mid-run: logins of accounts not in the cache get the protocol's
    temporary error on every protocol and every node; none reaches the default destination
    (the legacy Dovecot and Postfix logs say so); an account still in the cache keeps
    working; service comes back with the store."""
    n2 = ports(2)
    fl.set_row("alice@example.org", "new")
    mark = new_stack.log_mark("dovecot")
    assert imap_status(n2["imap"], "alice").startswith("a1 OK")  # node 2 caches alice -> new
    new_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)

    legacy_mark = legacy_stack.log_mark("dovecot")
    postfix_mark = legacy_stack.log_mark("postfix")
    marks = [fl.node(n).log_size() for n in (1, 2)]
    fl.store.kill()
    for n in (1, 2):
        fl.node(n).wait_log(r"event=store source=\S+ state=down reason=", since=marks[n - 1])
    for n in (1, 2):
        p = ports(n)
        assert imap_status(p["imap"], "dave").startswith("a1 NO [UNAVAILABLE]")
        assert pop3_status(p["pop3"], "dave").startswith("-ERR [SYS/TEMP]")
        assert submission_status(p["submission"], "dave").startswith("454 4.7.0")
        assert sieve_status(p["sieve"], "dave").startswith("NO (TRYLATER)")
    # no login reached the default destination
    time.sleep(0.5)
    assert "dave@example.org" not in "\n".join(legacy_stack.log_lines("dovecot", legacy_mark))
    assert "dave" not in "\n".join(legacy_stack.log_lines("postfix", postfix_mark))
    fl.node(1).wait_log(r"event=backend-unavailable .*account=dave@example\.org "
                        r"destination=- error=\"mapping store unavailable", since=marks[0])

    # what node 2 has cached still routes
    mark = new_stack.log_mark("dovecot")
    assert imap_status(n2["imap"], "alice").startswith("a1 OK")
    new_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)

    # the admin API says what the store does; /healthz stays a liveness check
    code, body = fl.curl(1, "GET", "/stats")
    assert json.loads(body)["store"]["state"] == "down"
    code, body = fl.curl(1, "GET", "/metrics")
    src = "redis" if fl.kind == "redis" else "sql"
    assert f'mailsplice_store_up{{source="{src}"}} 0' in body
    assert re.search(r'mailsplice_store_lookups_total\{result="unavailable"\} [1-9]', body)
    assert fl.curl(1, "GET", "/healthz") == (200, "ok")
    code, body = fl.curl(1, "PUT", "/mappings?identifier=dave&destination=new")
    assert code == 503 and body.startswith("upsert failed: mapping store unavailable"), body

    # the store comes back: so does service (Redis here keeps no data: dave is unmapped)
    fl.store.start()
    fl.wait_store_up()
    for n in (1, 2):
        fl.node(n).wait_log(r"event=store source=\S+ state=up", since=marks[n - 1])
    mark = legacy_stack.log_mark("dovecot")
    assert imap_status(n2["imap"], "dave").startswith("a1 OK")
    legacy_stack.wait_log("dovecot", LOGIN.format("dave"), since=mark)


def test_slow_store(fl, legacy_stack, new_stack):
    """Node 2's store answers late (the relay holds answers back): a lookup that does not
    come back within lookup_timeout (1 s) is a temporary error, never the default; an answer
    within it is used; service is back once the store is fast again."""
    n2 = ports(2)["imap"]
    fl.set_row("erin@example.org", "new")
    fl.relay.delay = 0.3
    mark = new_stack.log_mark("dovecot")
    assert imap_status(n2, "erin").startswith("a1 OK")
    new_stack.wait_log("dovecot", LOGIN.format("erin"), since=mark)

    legacy_mark = legacy_stack.log_mark("dovecot")
    fl.relay.delay = 3.0
    assert imap_status(n2, "dave").startswith("a1 NO [UNAVAILABLE]")
    fl.node(2).wait_log(r"event=store-slow source=\S+ lookups_given_up=\d+")
    fl.relay.delay = 0
    deadline = time.monotonic() + 30
    while True:  # reconnects with backoff
        line = imap_status(n2, "dave")
        if line.startswith("a1 OK") or time.monotonic() > deadline:
            break
        assert line.startswith("a1 NO [UNAVAILABLE]"), line
        time.sleep(0.3)
    assert line.startswith("a1 OK"), line
    # the only dave login legacy saw is the one after the store was fast again
    legacy_stack.wait_log("dovecot", LOGIN.format("dave"), since=legacy_mark)
    logins = [l for l in legacy_stack.log_lines("dovecot", legacy_mark)
              if "Login: user=<dave@example.org>" in l]
    assert len(logins) == 1, logins

    if fl.kind == "redis":
        # the store itself busy: DEBUG SLEEP blocks Redis for every client
        sleeper = subprocess.Popen(["redis-cli", "-p", str(REDIS_PORT), "DEBUG", "SLEEP", "2.5"],
                                   stdout=subprocess.DEVNULL)
        time.sleep(0.2)
        assert imap_status(ports(1)["imap"], "bob").startswith("a1 NO [UNAVAILABLE]")
        sleeper.wait()
    # answers still held back by the relay would spill into the next test
    fl.fresh_relay()


def test_dropped_subscription_drops_the_cache(fl, legacy_stack, new_stack):
    """The store drops the nodes' pub/sub connections (CLIENT KILL TYPE pubsub /
    pg_terminate_backend): each node subscribes again and drops its whole cache (it may
    have missed events); changes through node 1 reach node 2 again."""
    n2 = ports(2)["imap"]
    fl.cache_on(2, "bob")  # node 2 caches bob -> legacy
    mark = fl.node(2).log_size()
    if fl.kind == "redis":
        assert int(fl.store.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 2
    else:
        n = fl.store.superuser_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name LIKE 'mailsplice-bus:%'")
        assert int(n) >= 2
    fl.node(2).wait_log(r"event=store-bus source=\S+ state=lost", since=mark)
    line = fl.node(2).wait_log(r"event=bus-subscribed node=node2 cache_dropped=\d+", since=mark)
    assert int(re.search(r"cache_dropped=(\d+)", line).group(1)) >= 1
    fl.wait_store_up()

    fl.cache_on(2, "bob")  # cached again -> legacy
    assert fl.curl(1, "PUT", "/mappings?identifier=bob&destination=new") == (200, "ok")
    fl.wait_uncached(2, "bob@example.org")
    mark = new_stack.log_mark("dovecot")
    assert imap_status(n2, "bob").startswith("a1 OK")
    new_stack.wait_log("dovecot", LOGIN.format("bob"), since=mark)


def test_silently_dead_subscription_is_noticed(fl, legacy_stack, new_stack):
    """Node 2's connections to the store go silent without being closed (the relay stops
    passing anything on them): its own hellos stop coming back on the subscription, so it
    subscribes again (a hello goes out every 10 s and must be back within 5 s: here at most
    about 30 s, as the first hello after the freeze is lost with its connection) and drops
    its cache; changes made
    through node 1 reach it again. The mechanism is the bus's own, whatever the store:
    run against Redis only."""
    if fl.kind != "redis":
        pytest.skip("store-independent; run once")
    n2 = ports(2)["imap"]
    fl.cache_on(2, "bob")  # node 2 caches bob -> legacy
    mark = fl.node(2).log_size()
    fl.relay.freeze()
    try:
        # idle pool connections are pinged (every 5 s) and replaced when silent
        fl.node(2).wait_log(r"event=store-conn .*bus=no state=down reason=\"no answer for",
                            since=mark, timeout=20)
        fl.node(2).wait_log(r"event=bus-echo-missing node=node2", since=mark, timeout=45)
        fl.node(2).wait_log(r"event=bus-subscribed node=node2 cache_dropped=[1-9]", since=mark,
                            timeout=10)
        fl.wait_store_up()
        assert imap_status(n2, "bob").startswith("a1 OK")
        assert fl.curl(1, "PUT", "/mappings?identifier=bob&destination=new") == (200, "ok")
        fl.wait_uncached(2, "bob@example.org")
        mark = new_stack.log_mark("dovecot")
        assert imap_status(n2, "bob").startswith("a1 OK")
        new_stack.wait_log("dovecot", LOGIN.format("bob"), since=mark)
    finally:
        fl.fresh_relay()  # the frozen connections stay frozen


def test_node_restarted_during_a_move(fl, legacy_stack, new_stack):
    """Node 2 stops answering in the middle of a move (SIGSTOP), then is killed and started
    again: the move still ends, says whether node 2 answered (its new life may) or names it,
    and no login through node 2 reaches the old server once the move has answered."""
    n2 = ports(2)["imap"]
    mark = legacy_stack.log_mark("dovecot")
    s, f = imap_session(n2, "alice")
    legacy_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)

    node2 = fl.node(2)
    node2.proc.send_signal(signal.SIGSTOP)
    mover = subprocess.Popen(
        ["curl", "-sS", "--interface", CLIENT_ADDR, "--cacert", fl.ca_file, "-X", "POST",
         "-H", f"Authorization: Bearer {fl.token}", "-w", "\n%{http_code}",
         f"https://{PROXY_ADDR}:{ports(1)['admin']}/accounts/move?identifier=alice&destination=new"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    node2.proc.kill()  # SIGKILL works on a stopped process
    node2.proc.wait()
    node2.proc = None
    wait_closed(s)  # the session died with its node
    node2.start()
    out, err = mover.communicate(timeout=30)
    body, _, code = out.rpartition("\n")
    assert code == "200", (out, err)
    ans = json.loads(body)
    assert ans["nodes"]["node1"] == {"closed": 0}
    assert "node2" in ans["nodes"] or "node2" in ans["not_answered"], ans
    assert fl.row("alice@example.org") == "new"
    fl.wait_store_up()

    mark = new_stack.log_mark("dovecot")
    legacy_mark = legacy_stack.log_mark("dovecot")
    s, f = imap_session(n2, "alice")
    new_stack.wait_log("dovecot", LOGIN.format("alice"), since=mark)
    s.close()
    assert "alice@example.org" not in "\n".join(legacy_stack.log_lines("dovecot", legacy_mark))


# ------------------------------------------------------------------ the rest of the API

def test_admin_endpoints_against_the_store(fl):
    """The reference's endpoints keep their answers with a remote store; writes are in the
    store before the 200; every change is heard by the other node."""
    assert fl.curl(1, "PUT", "/mappings?identifier=Erin&destination=new") == (200, "ok")
    assert fl.row("erin@example.org") == "new"
    code, body = fl.curl(2, "GET", "/mappings?identifier=erin@example.org")
    m = json.loads(body)
    assert code == 200 and m["destination"] == "new" and m["routed_to_default"] is False
    assert fl.curl(1, "PUT", "/mappings?identifier=erin&destination=nowhere") == \
        (400, "unknown destination")
    assert fl.curl(2, "DELETE", "/mappings?identifier=erin") == (200, "removed")
    assert fl.row("erin@example.org") is None
    assert fl.curl(2, "DELETE", "/mappings?identifier=erin") == (200, "absent")
    code, body = fl.curl(1, "GET", "/mappings?identifier=erin")
    assert json.loads(body)["routed_to_default"] is True
    assert fl.curl(1, "POST", "/accounts/move?identifier=erin") == \
        (400, "identifier and destination required")
    assert fl.curl(1, "POST", "/accounts/move?identifier=erin&destination=x") == \
        (400, "unknown destination")
    assert fl.curl(1, "GET", "/accounts/move") == (405, "method not allowed")
    # a delay through node 1 holds logins on node 2
    assert fl.curl(1, "POST", "/connections/delay?identifier=dave&seconds=600") == (200, "ok")
    mark = fl.node(2).log_size()
    s = connect(ports(2)["imap"])
    f = s.makefile("rwb")
    f.readline()
    f.write(b"a1 LOGIN dave@example.org dave-pw\r\n")
    f.flush()
    fl.node(2).wait_log(r"event=login-held", since=mark)
    assert fl.curl(1, "POST", "/connections/delay?identifier=dave&seconds=0") == (200, "ok")
    s.settimeout(15)
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    s.close()
    assert line.startswith(b"a1 OK"), line  # lifted through node 1, released on node 2
    code, body = fl.curl(2, "GET", "/stats")
    st = json.loads(body)
    assert st["store"]["source"] == ("redis" if fl.kind == "redis" else "sql")
    assert st["bus"]["node"] == "node2" and st["bus"]["subscribed"] is True
    assert [x["node"] for x in st["bus"]["nodes"]] == ["node1"]
    assert "mappings" not in st  # a remote store is not counted
    code, body = fl.curl(2, "GET", "/metrics")
    for series in ("mailsplice_store_connections", "mailsplice_store_lookup_seconds_bucket",
                   "mailsplice_store_reconnects_total", "mailsplice_bus_events_total"):
        assert series in body
    assert re.search(r'mailsplice_bus_events_total\{direction="received"\} [1-9]', body)


def test_read_only_sql_store(fl, harness_state, pki, legacy_stack, new_stack):
    """As at the reference: an SQL store without upsert_query/delete_query routes, and
    answers writes with 501."""
    if fl.kind != "sql":
        pytest.skip("only SQL stores can be read-only")
    token_file = os.path.join(harness_state, "stores-sql.token")
    p = Proxy(harness_state, "sql-node3",
              node_config(3, "sql", fl.store.url, legacy_stack, new_stack, pki, token_file,
                          read_only=True), env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    try:
        fl.set_row("erin@example.org", "new")
        code, body = fl.curl(3, "GET", "/mappings?identifier=erin")
        assert code == 200 and json.loads(body)["destination"] == "new"
        assert fl.curl(3, "PUT", "/mappings?identifier=erin&destination=new") == \
            (501, "mapping store is read-only")
        assert fl.curl(3, "DELETE", "/mappings?identifier=erin") == \
            (501, "mapping store is read-only")
        assert fl.curl(3, "POST", "/accounts/move?identifier=erin&destination=legacy") == \
            (501, "mapping store is read-only")
        assert fl.row("erin@example.org") == "new"
        fl.node(1).wait_log(r"event=bus-node node=node3 state=joined")
    finally:
        assert p.stop() == 0
    # a node that stops says so: a move does not wait for it
    fl.node(1).wait_log(r"event=bus-node node=node3 state=left")
