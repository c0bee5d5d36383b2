"""Restart and upgrade without dropping a session (issue 23, docs/upgrade.md).

`mailspliced --upgrade -c FILE` starts a successor that takes the running daemon's
listening sockets and every session on a kernel data path over (SCM_RIGHTS on the
control socket). Checked here against the real legacy Postfix and Dovecot:

  - a port-25 session sending a 256 MiB message and a plain IMAP session fetching a
    256 MiB message, both streaming while the daemon is upgraded twice: the message
    Postfix delivered and the literal Dovecot sent arrive complete, compared byte by
    byte, each session ending normally (no reset) through the last process;
  - a client connecting every 10 ms during the hand-overs: every connection is
    answered (greeted), none refused;
  - a session still logging in stays with the old process, finishes its login there
    and then moves; /sessions in the new process lists it meanwhile (draining, with
    the old pid) and afterwards (moves=1); the old process exits once it is gone;
  - a configuration that does not load, or does not start (a bind the kernel refuses),
    leaves the running daemon serving, and --upgrade exits non-zero saying why.

The daemons started by --upgrade are not our children: tests/harness/upgrade.py stops
them by pid.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from tests.harness.proxy import PROXY_ADDR, Proxy, connect, imap_login, recv_to_eof
from tests.harness.proxy import log_field as field
from tests.harness.upgrade import Upgradable, alive, wait_gone

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
SMTP = 22025 + PORT_OFFSET
IMAP = 22143 + PORT_OFFSET
IMAPS = 22993 + PORT_OFFSET
ADMIN = 22443 + PORT_OFFSET
EXTRA = 22144 + PORT_OFFSET
MIB = 1 << 20
TOKEN = "upgrade-token-0123456789abcdef0123456"


def config(pki, legacy, state, token_file, extra=""):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "info"
host_down_threshold = 0
shutdown_grace = "60s"
control_socket = "{state}/control.sock"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"
smtp_passthrough_destination = "legacy"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
forwarding = "xclient"
allow_plaintext_auth = true

[destination.legacy.protocol.imap]
port = {legacy.ports["imap"]}
tls = "plain"

[destination.legacy.protocol.smtp]
port = {legacy.ports["smtp"]}
tls = "plain"

[listener.smtp]
protocol = "smtp"
bind = ["{PROXY_ADDR}:{SMTP}"]
tls = "plain"

[listener.imap]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAP}"]
tls = "plain"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS}"]
tls = "implicit"

[capabilities.imap]
allow_plain_auth_without_tls = true

[admin]
bind = "{PROXY_ADDR}:{ADMIN}"
tls = "implicit"
bearer_token_file = "{token_file}"
{extra}"""


@pytest.fixture(scope="module")
def token_file(harness_state):
    path = os.path.join(harness_state, "upgrade-admin.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (TOKEN + "\n").encode())
    os.close(fd)
    return path


@pytest.fixture
def proxy(harness_state, pki, legacy_stack, token_file):
    state = os.path.join(harness_state, "upgrade-" + uuid.uuid4().hex[:8])
    os.makedirs(state)
    p = Upgradable(state, "up", config(pki, legacy_stack, state, token_file),
                   env={"SSL_CERT_FILE": pki.ca_file})
    p.ca_file = pki.ca_file
    p.state = state
    p.start()
    yield p
    p.stop()


def admin_get(p, path, method="GET"):
    ctx = ssl.create_default_context(cafile=p.ca_file)
    s = ctx.wrap_socket(connect(ADMIN), server_hostname=PROXY_ADDR)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
              f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    data = recv_to_eof(s)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


# ---------------------------------------------------------------- the bodies

def body_lines(first, count):
    """Lines of a message body nothing else produces: numbered, so a lost, doubled or
    reordered stretch shows at its first byte. No line starts with a dot."""
    return b"".join(b"%010d %s\r\n" % (i, b"%064x" % (i * 0x9E3779B97F4A7C15 % (1 << 256)))
                    for i in range(first, first + count))


def make_body(size):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += body_lines(i, 10000)
        i += 10000
    return bytes(out)


def first_difference(a, b):
    n = min(len(a), len(b))
    lo = 0
    step = 1 << 20
    while lo < n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    for i in range(lo, min(n, lo + step)):
        if a[i] != b[i]:
            return i
    return n


class Progress:
    def __init__(self, total):
        self.total = total
        self.done = 0
        self.error = None


def smtp_stream(p, legacy, body, subject, progress, pace):
    """Port 25 through the proxy to the legacy Postfix, the body sent in 1 MiB writes
    `pace` seconds apart; QUIT at the end. Returns Postfix's replies."""
    s = connect(SMTP, timeout=120)
    f = s.makefile("rwb")

    def reply():
        lines = []
        while True:
            line = f.readline()
            assert line, "the connection ended: " + repr(lines)
            lines.append(line)
            if line[3:4] == b" ":
                return lines

    try:
        assert reply()[-1].startswith(b"220")
        for cmd in (b"EHLO client.test", b"MAIL FROM:<bulk@remote.test>",
                    b"RCPT TO:<dave@example.org>", b"DATA"):
            f.write(cmd + b"\r\n")
            f.flush()
            r = reply()[-1]
            assert r[:1] in (b"2", b"3"), (cmd, r)
        f.write(b"Subject: " + subject.encode() + b"\r\n\r\n")
        for off in range(0, len(body), MIB):
            f.write(body[off:off + MIB])
            f.flush()
            progress.done = off + MIB
            time.sleep(pace)
        f.write(b".\r\n")
        f.flush()
        done = reply()[-1]
        assert done.startswith(b"250"), done
        f.write(b"QUIT\r\n")
        f.flush()
        assert reply()[-1].startswith(b"221")
        assert f.read() == b""  # the end of the stream, not a reset
    except Exception as e:
        progress.error = e
        raise
    finally:
        s.close()


def imap_stream(folder, progress, pace, out):
    """Plain IMAP through the proxy: FETCH the message in `folder`, read in 1 MiB
    chunks `pace` seconds apart; LOGOUT at the end."""
    s, f = imap_login(connect(IMAP, timeout=120))
    try:
        f.write(b'a2 SELECT "%s"\r\n' % folder.encode())
        f.flush()
        line = f.readline()
        while not line.startswith(b"a2 "):
            line = f.readline()
        assert line.startswith(b"a2 OK"), line
        f.write(b"a3 FETCH 1 BODY.PEEK[]\r\n")
        f.flush()
        line = f.readline()
        n = int(re.search(rb"\{(\d+)\}\r\n$", line).group(1))
        progress.total = n
        data = bytearray()
        while len(data) < n:
            chunk = f.read(min(MIB, n - len(data)))
            assert chunk, f"the stream ended after {len(data)} of {n} bytes"
            data += chunk
            progress.done = len(data)
            time.sleep(pace)
        out.append(bytes(data))
        rest = f.readline()
        assert rest.strip() == b")", rest
        assert f.readline().startswith(b"a3 OK")
        f.write(b"a4 LOGOUT\r\n")
        f.flush()
        assert f.readline().startswith(b"* BYE")
        assert f.readline().startswith(b"a4 OK")
    except Exception as e:
        progress.error = e
        raise
    finally:
        s.close()


class Knocker:
    """Connects to the IMAP listener every 10 ms and reads the greeting."""

    def __init__(self):
        self.stop = False
        self.ok = 0
        self.failures = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            t0 = time.monotonic()
            try:
                s = connect(IMAP, timeout=10)
                try:
                    line = s.makefile("rb").readline()
                    if line.startswith(b"* OK"):
                        self.ok += 1
                    else:
                        self.failures.append(f"greeting {line!r}")
                finally:
                    s.close()
            except OSError as e:
                self.failures.append(repr(e))
            time.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))

    def finish(self):
        self.stop = True
        self.thread.join(15)


def put_message(legacy, user, folder, content):
    """A message file in a Maildir++ folder of its own, as Dovecot would have stored it."""
    base = os.path.join(legacy.maildir(user), "." + folder)
    os.makedirs(os.path.join(legacy.maildir(user)), exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    path = os.path.join(base, "new", f"{int(time.time())}.upgrade{uuid.uuid4().hex}.test")
    with open(path, "wb") as f:
        f.write(content)
    subprocess.run(["chown", "-R", "mail:mail", legacy.home(user)], check=True)


# ---------------------------------------------------------------- the tests

def test_256mib_streams_survive_two_upgrades_byte_exact(proxy, legacy_stack):
    size = 256 * MIB
    body = make_body(size)
    subject = "upgrade " + uuid.uuid4().hex
    folder = "upgrade-" + uuid.uuid4().hex[:12]
    fetched_message = b"Subject: " + subject.encode() + b"\n\n" + body.replace(b"\r\n", b"\n")
    put_message(legacy_stack, "alice@example.org", folder, fetched_message)
    mark = proxy.log_size()

    smtp_p, imap_p = Progress(len(body)), Progress(len(fetched_message))
    fetched = []
    # 256 writes or reads of 1 MiB, ~10 ms apart: each stream spans both upgrades
    t_smtp = threading.Thread(target=smtp_stream,
                              args=(proxy, legacy_stack, body, subject, smtp_p, 0.01))
    t_imap = threading.Thread(target=imap_stream, args=(folder, imap_p, 0.01, fetched))
    t_smtp.start()
    t_imap.start()
    knocker = Knocker()
    try:
        for third in (1, 2):
            # both streams past this third of their bytes (counted, never timed)
            deadline = time.monotonic() + 300
            while (smtp_p.done * 3 < third * smtp_p.total or
                   imap_p.done * 3 < third * imap_p.total):
                assert not smtp_p.error and not imap_p.error, (smtp_p.error, imap_p.error)
                assert time.monotonic() < deadline, (smtp_p.done, imap_p.done)
                time.sleep(0.01)
            assert smtp_p.done < smtp_p.total and imap_p.done < imap_p.total, \
                "a stream finished before the upgrade: the test proves nothing"
            r = proxy.upgrade()
            assert r.returncode == 0, r.stdout + r.stderr + proxy.log_text(mark)[-3000:]
            assert "2 sessions moved" in r.stdout, r.stdout + proxy.log_text(mark)[-3000:]
        t_smtp.join(600)
        t_imap.join(600)
    finally:
        knocker.finish()
    assert not smtp_p.error and not imap_p.error, (smtp_p.error, imap_p.error)

    # every connection during the hand-overs was greeted
    assert not knocker.failures, knocker.failures[:10]
    assert knocker.ok > 10

    # IMAP: the literal Dovecot sent, byte for byte (CRLF on the wire)
    assert len(fetched) == 1
    want = fetched_message.replace(b"\n", b"\r\n")
    got = fetched[0]
    assert got == want, f"differs at byte {first_difference(got, want)} of {len(want)}"

    # port 25: the message Postfix delivered, body byte for byte (LF on disk)
    path = legacy_stack.wait_message("dave@example.org", subject, timeout=120)
    with open(path, "rb") as f:
        stored = f.read()
    stored_body = stored.split(b"\n\n", 1)[1]
    want = body.replace(b"\r\n", b"\n")
    assert stored_body == want, \
        f"differs at byte {first_difference(stored_body, want)} of {len(want)}"

    # both sessions moved twice and ended normally in the last process
    for proto in ("smtp", "imap"):
        line = proxy.wait_log(rf"event=session .*proto={proto} .*moves=2", since=mark,
                              timeout=30)
        assert field(line, "end") == "client closed", line
        assert field(line, "path_up") == "splice" and field(line, "path_down") == "splice"
    # the first two processes exited cleanly once their sessions had moved; the last
    # serves (the first one is our child: its status is ours to read)
    for pid in proxy.old:
        wait_gone(pid)
    assert proxy.proc.wait(10) == 0
    assert len(re.findall(r"event=stopped status=0", proxy.log_text(mark))) == 2
    assert alive(proxy.pid)
    s, f = imap_login(connect(IMAP))
    s.close()


def test_login_in_progress_stays_then_moves(proxy):
    s = connect(IMAP)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    mark = proxy.log_size()
    old = proxy.pid
    r = proxy.upgrade()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 stay" in r.stdout, r.stdout
    line = proxy.wait_log(r"event=handover-session .*result=stays", since=mark)
    assert field(line, "reason") == "login in progress"
    # the new process lists it, held by the old one
    code, out = admin_get(proxy, "/sessions")
    assert code == 200, out
    live = json.loads(out)["sessions"]
    draining = [x for x in live if x.get("pid") == old]
    assert len(draining) == 1 and draining[0]["state"] == "draining", live
    # the login finishes in the old process, then the session moves
    f.write(b"a1 LOGIN alice@example.org alice-pw\r\n")
    f.flush()
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    assert line.startswith(b"a1 OK"), line
    proxy.wait_log(r"event=handover-session .*result=adopted .*moves=1", since=mark)
    wait_gone(old)
    assert proxy.proc.wait(10) == 0
    f.write(b"a2 NOOP\r\n")
    f.flush()
    assert f.readline().startswith(b"a2 OK")
    code, out = admin_get(proxy, "/sessions?identifier=alice@example.org")
    live = json.loads(out)["sessions"]
    assert len(live) == 1 and live[0]["moves"] == 1 and "pid" not in live[0], live
    s.close()


def test_upgraded_twice_while_a_login_is_in_progress(proxy):
    """The login finishes in the first process after the second upgrade: the process it
    would move to has handed over itself by then, says so, and the session stays where
    it is, serving, until it ends."""
    s = connect(IMAP)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    mark = proxy.log_size()
    first = proxy.pid
    assert proxy.upgrade().returncode == 0
    second = proxy.pid
    assert proxy.upgrade().returncode == 0
    wait_gone(second)  # nothing of its own to drain
    f.write(b"a1 LOGIN alice@example.org alice-pw\r\n")
    f.flush()
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    assert line.startswith(b"a1 OK"), line
    f.write(b"a2 NOOP\r\n")
    f.flush()
    assert f.readline().startswith(b"a2 OK")
    assert alive(first)
    assert "result=adopted" not in proxy.log_text(mark)
    f.write(b"a3 LOGOUT\r\n")
    f.flush()
    assert f.readline().startswith(b"* BYE")
    f.close()  # the file holds the socket open: both go, the FIN follows
    s.close()
    line = proxy.wait_log(r"event=session .*account=alice@example\.org", since=mark)
    assert field(line, "moves") is None
    wait_gone(first)
    assert proxy.proc.wait(10) == 0


def test_tls_in_openssl_stays_and_is_kicked_through_the_successor(proxy):
    """Without kernel TLS (this host's kernel has none) a TLS session's state is in
    OpenSSL and cannot move: it drains in the old process, keeps working there, shows in
    the successor's /sessions with the old pid, and a kick sent to the successor ends
    it; the old process then exits."""
    ctx = ssl.create_default_context(cafile=proxy.ca_file)
    s = ctx.wrap_socket(connect(IMAPS), server_hostname="mail.proxy.test")
    s, f = imap_login(s)
    mark = proxy.log_size()
    old = proxy.pid
    r = proxy.upgrade()
    assert r.returncode == 0, r.stdout + r.stderr
    if "1 sessions moved" in r.stdout:
        pytest.skip("this kernel has kTLS: the session moved (tests/kernel covers that)")
    line = proxy.wait_log(r"event=handover-session .*result=stays", since=mark)
    assert "OpenSSL" in field(line, "reason"), line
    f.write(b"a2 NOOP\r\n")
    f.flush()
    assert f.readline().startswith(b"a2 OK")
    code, out = admin_get(proxy, "/sessions?identifier=alice@example.org")
    live = json.loads(out)["sessions"]
    assert len(live) == 1 and live[0]["pid"] == old and live[0]["state"] == "draining", live
    code, out = admin_get(proxy, "/connections/kick?identifier=alice@example.org", "POST")
    assert code == 200 and out.strip() == "kicked 1", out
    s.settimeout(10)
    with pytest.raises((ConnectionResetError, ssl.SSLError, BrokenPipeError)):
        while f.readline():
            pass
        raise BrokenPipeError("closed")
    line = proxy.wait_log(r"event=session .*account=alice@example\.org .*end=kicked",
                          since=mark)
    wait_gone(old)
    assert proxy.proc.wait(10) == 0
    code, out = admin_get(proxy, "/sessions?identifier=alice@example.org")
    assert json.loads(out)["sessions"] == []


def test_invalid_configuration_leaves_the_daemon_serving(proxy):
    bad = os.path.join(proxy.state, "bad.toml")
    with open(proxy.config_path) as f:
        text = f.read()
    with open(bad, "w") as f:
        f.write(text.replace("threads = 2", "threads = \"two\""))
    mark = proxy.log_size()
    r = proxy.upgrade(bad)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(r"bad\.toml:\d+: server\.threads", r.stderr), r.stderr
    assert "keeps serving" in r.stderr
    assert alive(proxy.pid) and not proxy.old
    s, f = imap_login(connect(IMAP))
    s.close()
    assert "event=upgrade" not in proxy.log_text(mark)  # it never got as far as asking


def test_configuration_that_cannot_start_leaves_the_daemon_serving(proxy):
    # a new listener on an address someone else holds: the successor cannot bind it
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind((PROXY_ADDR, EXTRA))
    blocker.listen(1)
    extra = f"""
[listener.imap2]
protocol = "imap"
bind = ["{PROXY_ADDR}:{EXTRA}"]
tls = "plain"
"""
    conf = os.path.join(proxy.state, "more.toml")
    with open(proxy.config_path) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text + extra)
    s, f1 = imap_login(connect(IMAP))  # a relayed session: it must not move
    mark = proxy.log_size()
    try:
        r = proxy.upgrade(conf)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "listener.imap2: bind" in r.stderr and "in use" in r.stderr, r.stderr
        line = proxy.wait_log(r"event=upgrade state=refused", since=mark)
        assert "listener.imap2" in line
        assert alive(proxy.pid) and not proxy.old
        assert "result=moved" not in proxy.log_text(mark)
        f1.write(b"a2 NOOP\r\n")
        f1.flush()
        assert f1.readline().startswith(b"a2 OK")
    finally:
        blocker.close()
    # with the address free the same configuration takes over, and serves both
    r = proxy.upgrade(conf)
    assert r.returncode == 0, r.stdout + r.stderr
    f1.write(b"a3 NOOP\r\n")
    f1.flush()
    assert f1.readline().startswith(b"a3 OK")
    s2, _ = imap_login(connect(EXTRA))
    s2.close()
    s.close()


def test_a_second_daemon_on_the_same_control_socket_is_refused(proxy, harness_state, pki,
                                                               legacy_stack, token_file):
    # its own ports, the same control socket: it must not take the running one's place
    text = config(pki, legacy_stack, proxy.state, token_file)
    for a, b in ((SMTP, SMTP + 1000), (IMAP, IMAP + 1000), (ADMIN, ADMIN + 1000)):
        text = text.replace(f":{a}\"", f":{b}\"")
    other = Proxy(proxy.state, "other", text, env={"SSL_CERT_FILE": pki.ca_file})
    with pytest.raises(Exception):
        other.start(timeout=5)
    assert "another mailspliced answers on" in other.log_text()
    s, f = imap_login(connect(IMAP))
    s.close()


class NotifySocket:
    """A stand-in for systemd's notification socket: records (pid, fields) of every
    datagram (the sender's pid from SCM_CREDENTIALS, as systemd reads it) and releases
    sd_notify_barrier() by closing the descriptor that comes with BARRIER=1."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(path)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.s.settimeout(0.2)
        self.messages = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import struct
        while not self.stop:
            try:
                data, anc, _, _ = self.s.recvmsg(4096, socket.CMSG_SPACE(12) +
                                                 socket.CMSG_SPACE(16))
            except socket.timeout:
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for i in range(len(payload) // 4):
                        os.close(struct.unpack("i", payload[4 * i:4 * i + 4])[0])
            fields = dict(line.split("=", 1) for line in data.decode().splitlines()
                          if "=" in line)
            self.messages.append((pid, fields))

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.s.close()

    def from_pid(self, pid):
        return [f for p, f in self.messages if p == pid]


def test_systemd_follows_the_new_process(harness_state, pki, legacy_stack, token_file):
    """What systemd (NotifyAccess=exec) is told: the running daemon names its successor
    with MAINPID= (after a barrier, so systemd has switched before it may exit), and
    says nothing more; the successor says READY=1 only after that."""
    state = os.path.join(harness_state, "upgrade-notify")
    os.makedirs(state, exist_ok=True)
    notify = NotifySocket(os.path.join(state, "notify.sock"))
    env = {"SSL_CERT_FILE": pki.ca_file, "NOTIFY_SOCKET": notify.path}
    p = Upgradable(state, "notify", config(pki, legacy_stack, state, token_file), env=env)
    p.ca_file = pki.ca_file
    p.start()
    try:
        old = p.pid
        deadline = time.monotonic() + 10
        while not any(f.get("READY") == "1" for f in notify.from_pid(old)):
            assert time.monotonic() < deadline, notify.messages
            time.sleep(0.05)
        r = p.upgrade()
        assert r.returncode == 0, r.stdout + r.stderr
        new = p.pid
        deadline = time.monotonic() + 10
        while not any(f.get("READY") == "1" for f in notify.from_pid(new)):
            assert time.monotonic() < deadline, notify.messages
            time.sleep(0.05)
        wait_gone(old)
        seq = [(pid, f) for pid, f in notify.messages if pid in (old, new)]
        i_main = next(i for i, (pid, f) in enumerate(seq) if f.get("MAINPID") == str(new))
        assert seq[i_main][0] == old
        # the barrier follows at once, so systemd switched before anything else
        assert seq[i_main + 1] == (old, {"BARRIER": "1"}), seq
        # nothing from the new process before the switch, nothing from the old after it
        assert all(pid == old for pid, _ in seq[:i_main]), seq
        assert all(pid == new for pid, _ in seq[i_main + 2:]), seq
        assert not any("STOPPING" in f for _, f in seq), seq
    finally:
        p.stop()
        notify.close()


# ---------------------------------------------------------------- every data path

PUMP_ADDR = "127.0.0.7"
PUMP_PORT = 22026 + PORT_OFFSET
SMTP_PUMP = 22027 + PORT_OFFSET
ADMIN_PUMP = 22444 + PORT_OFFSET


def pump_config(pki, state, token_file, data_path):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 2
log_level = "debug"
shutdown_grace = "30s"
data_path = "{data_path}"
control_socket = "{state}/control.sock"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "pump"
smtp_passthrough_destination = "pump"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.pump]
host = "{PUMP_ADDR}"
forwarding = "proxy"

[destination.pump.protocol.smtp]
port = {PUMP_PORT}
tls = "plain"

[listener.smtp]
protocol = "smtp"
bind = ["{PROXY_ADDR}:{SMTP_PUMP}"]
tls = "plain"

[admin]
bind = "{PROXY_ADDR}:{ADMIN_PUMP}"
tls = "implicit"
bearer_token_file = "{token_file}"
"""


@pytest.fixture(scope="module")
def pump():
    from tests.harness.pump import Pump
    p = Pump(PUMP_ADDR, PUMP_PORT)
    yield p
    p.stop()


def start_pump_proxy(harness_state, pki, token_file, data_path):
    state = os.path.join(harness_state, "upgrade-" + data_path + uuid.uuid4().hex[:6])
    os.makedirs(state)
    p = Upgradable(state, data_path, pump_config(pki, state, token_file, data_path),
                   env={"SSL_CERT_FILE": pki.ca_file})
    p.ca_file = pki.ca_file
    try:
        p.start()
    except Exception:
        reason = re.search(r"server\.data_path = \"sockmap\": (.*)", p.log_text(p.mark))
        if reason:
            pytest.skip(f"sockmap unavailable here: {reason.group(1)}")
        raise
    return p


@pytest.mark.parametrize("data_path", ["auto", "userspace"])
def test_echo_both_ways_through_two_upgrades(harness_state, pki, token_file, pump, data_path):
    """Both directions busy at every hand-over (an echo): bytes in a pipe travel with the
    pipe (splice), bytes in a userspace buffer travel in the record or wait until they
    fit (userspace copy of plain legs); the echo comes back byte for byte."""
    from tests.harness.pump import pattern
    p = start_pump_proxy(harness_state, pki, token_file, data_path)
    try:
        mark = p.log_size()
        total = 64 * MIB
        data = pattern(total, 23)
        s = connect(SMTP_PUMP, timeout=60)
        s.sendall(b"ECHO\n")
        got = bytearray()

        def reader():
            while True:
                c = s.recv(MIB)
                if not c:
                    return
                got.extend(c)

        t = threading.Thread(target=reader)
        t.start()
        for third in range(3):
            chunk = data[third * total // 3:(third + 1) * total // 3]
            for off in range(0, len(chunk), 256 * 1024):
                s.sendall(chunk[off:off + 256 * 1024])
            if third < 2:
                r = p.upgrade()
                assert r.returncode == 0, r.stdout + r.stderr + p.log_text(mark)[-3000:]
        s.shutdown(socket.SHUT_WR)
        t.join(120)
        s.close()
        assert len(got) == total and bytes(got) == data, \
            f"{len(got)} bytes back, first difference at {first_difference(bytes(got), data)}"
        line = p.wait_log(r"event=session .*moves=2", since=mark, timeout=30)
        want = "splice" if data_path == "auto" else "userspace"
        assert field(line, "path_up") == want and field(line, "path_down") == want, line
        assert int(field(line, "bytes_up")) == total + 5  # "ECHO\n"
        assert int(field(line, "bytes_down")) == total
    finally:
        p.stop()


def test_sockmap_pair_moves_without_leaving_the_map(root_only, harness_state, pki,
                                                    token_file, pump):
    """data_path = "sockmap": the successor adopts the predecessor's sockhash (passed as
    descriptors with its program and slot maps), the pair stays in it throughout, and
    the echo keeps being redirected by the kernel."""
    from tests.harness.pump import pattern
    p = start_pump_proxy(harness_state, pki, token_file, "sockmap")
    try:
        mark = p.log_size()
        data = pattern(2 * MIB, 29)
        s = connect(SMTP_PUMP, timeout=30)
        f = s.makefile("rb")
        s.sendall(b"ECHO\n")
        s.sendall(data[:MIB])
        assert f.read(MIB) == data[:MIB]
        r = p.upgrade()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 sessions moved" in r.stdout, r.stdout + p.log_text(mark)[-3000:]
        line = p.wait_log(r"event=handover-session .*result=adopted", since=mark)
        assert field(line, "path_up") == "sockmap" and field(line, "path_down") == "sockmap"
        assert "sockmap=adopted" in p.log_text(mark) or "sockmap=adopted" in r.stderr
        code, out = admin_get_port(p, ADMIN_PUMP, "/metrics")
        assert re.search(r"^mailsplice_sockmap_sockets 2$", out, re.M), out
        s.sendall(data[MIB:])
        assert f.read(MIB) == data[MIB:]
        code, out = admin_get_port(p, ADMIN_PUMP, "/sessions")
        live = json.loads(out)["sessions"]
        assert len(live) == 1 and live[0]["moves"] == 1 and live[0]["data_path"] == "sockmap"
        s.close()
    finally:
        p.stop()


@pytest.fixture(scope="module")
def root_only():
    if os.geteuid() != 0:
        pytest.skip(f"sockmap needs root (CAP_BPF); running as uid {os.geteuid()}")


def admin_get_port(p, port, path, method="GET"):
    ctx = ssl.create_default_context(cafile=p.ca_file)
    s = ctx.wrap_socket(connect(port), server_hostname=PROXY_ADDR)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
              f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    data = recv_to_eof(s)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_control_socket_refuses_strangers_and_garbage(proxy):
    """The control socket answers only root or the daemon's user, and a malformed or
    foreign-version message ends that conversation, nothing else."""
    path = os.path.join(proxy.state, "control.sock")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    mark = proxy.log_size()
    # garbage, then a HELLO of a protocol version this build does not speak
    for payload in (b"hello?", b"MSHO\x00\x02\x00\x01\x00\x00\x00\x00"):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.connect(path)
        c.send(payload)
        c.settimeout(5)
        try:
            assert c.recv(4096) == b""  # closed without an answer
        except ConnectionResetError:
            pass
        c.close()
    line = proxy.wait_log(r"event=upgrade state=cancelled .*protocol version 2", since=mark)
    assert "this build speaks 1" in line
    # another user than root or the daemon's
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "/usr/bin/python3", "-c",
                        "import socket,sys; s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET);"
                        f"s.connect({path!r})"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    # still serving, still upgradable
    s, f = imap_login(connect(IMAP))
    s.close()
    assert proxy.upgrade().returncode == 0


def test_a_thousand_sessions_all_move_before_the_command_returns(harness_state, pki,
                                                                  token_file, pump):
    """More sessions than are offered at once (64 per worker): the command returns only
    once every one has moved, and each echoes through the new process afterwards."""
    p = start_pump_proxy(harness_state, pki, token_file, "auto")
    socks = []
    try:
        n = 1000
        for _ in range(n):
            s = connect(SMTP_PUMP, timeout=30)
            s.sendall(b"ECHO\nx")
            socks.append(s)
        for s in socks:
            assert s.recv(1) == b"x"
        old = p.pid
        r = p.upgrade()
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{n} sessions moved, 0 stay" in r.stdout, r.stdout
        wait_gone(old)
        for s in socks:
            s.sendall(b"y")
            assert s.recv(1) == b"y"
    finally:
        for s in socks:
            s.close()
        p.stop()


def test_listeners_and_threads_change_across_upgrades(proxy):
    """A new configuration may drop a listener (closed after what was queued on it is
    served), add one (bound by the successor), and change the number of workers (the
    passed sockets are spread over them; more workers get sockets of their own)."""
    with open(proxy.config_path) as f:
        base = f.read()
    smtp_block = base[base.index("[listener.smtp]"):base.index("[listener.imap]")]
    changed = os.path.join(proxy.state, "changed.toml")
    with open(changed, "w") as f:
        f.write(base.replace(smtp_block, "").replace("threads = 2", "threads = 3") + f"""
[listener.imap2]
protocol = "imap"
bind = ["{PROXY_ADDR}:{EXTRA}"]
tls = "plain"
""")
    s, f1 = imap_login(connect(IMAP))
    mark = proxy.log_size()
    r = proxy.upgrade(changed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 sessions moved" in r.stdout, r.stdout
    # imap kept its two sockets (a third worker got a new one), smtp was not taken
    line = proxy.wait_log(r"event=upgrade state=committed", since=mark)
    assert field(line, "listeners_taken") == "4", line  # imap x2, imaps x2
    with pytest.raises(ConnectionRefusedError):
        connect(SMTP, timeout=5)
    for port in (IMAP, EXTRA, IMAP):
        s2, _ = imap_login(connect(port))
        s2.close()
    f1.write(b"a2 NOOP\r\n")
    f1.flush()
    assert f1.readline().startswith(b"a2 OK")
    # back to one worker and the smtp listener: the three sockets of each go to it
    one = os.path.join(proxy.state, "one.toml")
    with open(one, "w") as f:
        f.write(base.replace("threads = 2", "threads = 1"))
    mark = proxy.log_size()
    r = proxy.upgrade(one)
    assert r.returncode == 0, r.stdout + r.stderr
    line = proxy.wait_log(r"event=upgrade state=committed", since=mark)
    assert field(line, "listeners_taken") == "6", line  # imap x3, imaps x3
    with pytest.raises(ConnectionRefusedError):
        connect(EXTRA, timeout=5)
    f1.write(b"a3 NOOP\r\n")
    f1.flush()
    assert f1.readline().startswith(b"a3 OK")
    for _ in range(6):  # every socket of the group is served by the one worker
        s2, _ = imap_login(connect(IMAP))
        s2.close()
    smtp = connect(SMTP, timeout=10)
    assert smtp.recv(100).startswith(b"220")
    smtp.close()
    f1.close()
    s.close()


def test_unprivileged_daemon_is_upgraded(harness_state, pki, legacy_stack, token_file):
    """With [server] user the running daemon has no privilege left; the successor starts
    as root (as ExecReload= runs it), takes over, and drops to that user too: the
    control socket and the admin API keep working across two hand-overs."""
    state = os.path.join(harness_state, "upgrade-user")
    os.makedirs(state, exist_ok=True)
    os.chmod(state, 0o755)
    text = config(pki, legacy_stack, state, token_file).replace(
        'threads = 2', 'threads = 2\nuser = "nobody"\ngroup = "nogroup"')
    p = Upgradable(state, "user", text, env={"SSL_CERT_FILE": pki.ca_file})
    p.ca_file = pki.ca_file
    p.start()
    try:
        assert "event=privileges user=nobody" in p.log_text()
        s, f = imap_login(connect(IMAP))
        for tag in (b"a2", b"a3"):
            old = p.pid
            r = p.upgrade()
            assert r.returncode == 0, r.stdout + r.stderr + p.log_text()[-3000:]
            assert "1 sessions moved" in r.stdout, r.stdout
            wait_gone(old)
            with open(f"/proc/{p.pid}/status") as st:
                uids = next(line for line in st if line.startswith("Uid:")).split()[1:]
            assert set(uids) == {str(pwd_uid("nobody"))}, uids
            f.write(tag + b" NOOP\r\n")
            f.flush()
            assert f.readline().startswith(tag + b" OK")
        code, out = admin_get(p, "/sessions?identifier=alice@example.org")
        assert code == 200 and json.loads(out)["sessions"][0]["moves"] == 2, out
        f.close()
        s.close()
    finally:
        p.stop()


def pwd_uid(name):
    import pwd
    return pwd.getpwnam(name).pw_uid
