"""Daemon lifecycle: SIGTERM drain, SIGHUP reload, refusing what it cannot serve (issue 2)."""

import grp
import os
import re
import signal
import ssl
import subprocess
import time

import pytest

from tests.harness.proxy import DAEMON, PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAPS = 13993 + PORT_OFFSET


def config(legacy, pki, extra=""):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 1
shutdown_grace = "3s"
log_level = "info"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.imap]
port = {legacy.ports["imap"]}
tls = "starttls"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS}"]
tls = "implicit"
{extra}"""


def tls_conn(ca):
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(connect(IMAPS), server_hostname="mail.proxy.test")
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    return s, f


def command(f, tag, text):
    f.write(f"{tag} {text}\r\n".encode())
    f.flush()
    while True:
        line = f.readline()
        if not line or line.startswith(tag.encode() + b" "):
            return line


def test_sigterm_drains_then_exits(harness_state, pki, legacy_stack):
    p = Proxy(harness_state, "drain", config(legacy_stack, pki), env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    try:
        s1, f1 = tls_conn(pki.ca_file)
        assert command(f1, "a1", "LOGIN alice@example.org alice-pw").startswith(b"a1 OK")
        s2, f2 = tls_conn(pki.ca_file)  # not logged in
        mark = p.log_size()
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        # the session still logging in is told to go away
        assert f2.readline().startswith(b"* BYE")
        # no new connections
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            connect(IMAPS, timeout=2)
        # the relayed session keeps working during the grace period
        assert command(f1, "a2", "NOOP").startswith(b"a2 OK")
        p.wait_log(r"event=shutdown state=grace-expired sessions=1", timeout=10, since=mark)
        assert 2.5 < time.monotonic() - t0 < 8
        rc = p.proc.wait(10)
        assert rc == 0
        s1.close()
        s2.close()
    finally:
        p.stop()


def test_sigterm_exits_at_once_when_idle(harness_state, pki, legacy_stack):
    p = Proxy(harness_state, "idle", config(legacy_stack, pki), env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.proc.wait(10) == 0
    assert time.monotonic() - t0 < 2
    assert "state=drained" in p.log_text()
    p.stop()


def test_sighup_reload_keeps_previous_table_on_error(harness_state, pki, legacy_stack):
    p = Proxy(harness_state, "hup", config(legacy_stack, pki), env={"SSL_CERT_FILE": pki.ca_file},
              mappings="alice@example.org legacy\n")
    p.start()
    try:
        mark = p.log_size()
        p.set_mappings("alice@example.org nowhere\n")
        p.signal(signal.SIGHUP)
        line = p.wait_log(r"event=mapping-reload", since=mark)
        assert "level=error" in line
        assert "nowhere" in p.log_text(mark) and ":1:" in p.log_text(mark)
        # still serving with the old table
        s, f = tls_conn(pki.ca_file)
        assert command(f, "a1", "LOGIN alice@example.org alice-pw").startswith(b"a1 OK")
        s.close()
        mark = p.log_size()
        p.set_mappings("alice@example.org legacy\nbob@example.org legacy\n")
        p.signal(signal.SIGHUP)
        p.wait_log(r"event=mapping-reload result=ok entries=2", since=mark)
    finally:
        assert p.stop() == 0


def test_http_listener_is_served(harness_state, pki, legacy_stack, tmp_path):
    """HTTP listeners were accepted by --check and refused at start until issue 20; now
    the daemon starts with one (what it serves: test_http.py)."""
    text = config(legacy_stack, pki, extra=f"""
[destination.legacy.protocol.http]
port = 443
tls = "implicit"

[listener.https]
protocol = "http"
bind = ["{PROXY_ADDR}:{IMAPS + 1}"]
tls = "implicit"
""")
    p = Proxy(harness_state, "http-served", text)
    check = subprocess.run([DAEMON, "-c", p.config_path, "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    assert "not served by this build" not in check.stdout
    assert re.search(r"^  https +http +implicit", check.stdout, re.M), check.stdout
    p.start()
    p.wait_log(rf"event=listen listener=https proto=http tls=implicit addr={PROXY_ADDR}:")
    assert p.stop() == 0


class Notifications:
    """The service manager's end of sd_notify(3): a datagram socket named by
    NOTIFY_SOCKET, as systemd creates for Type=notify units."""

    def __init__(self, path):
        import socket as socketmod
        self.sock = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path
        self.seen = []

    def wait(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except OSError:
                break
            self.seen.append(msg)
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching notification within {timeout}s; got {self.seen}")


def test_sd_notify_ready_status_reloading_stopping(harness_state, pki, legacy_stack, tmp_path):
    """Type=notify (conf/mailsplice.service): READY=1 once listening, STATUS= with the live
    session counts (refreshed every 5 s), RELOADING=1 then READY=1 around SIGHUP,
    STOPPING=1 and a draining status at SIGTERM. Read from a real notify socket."""
    n = Notifications(str(tmp_path / "notify"))
    p = Proxy(harness_state, "notify", config(legacy_stack, pki),
              env={"SSL_CERT_FILE": pki.ca_file, "NOTIFY_SOCKET": n.path})
    p.start()
    try:
        n.wait(lambda m: "READY=1" in m)
        n.wait(lambda m: m.startswith("STATUS=0 sessions, 0 relayed"))
        s1, f1 = tls_conn(pki.ca_file)
        assert command(f1, "a1", "LOGIN alice@example.org alice-pw").startswith(b"a1 OK")
        s2, f2 = tls_conn(pki.ca_file)  # logging in
        n.wait(lambda m: m.startswith("STATUS=2 sessions, 1 relayed, 1 logging in"))
        p.signal(signal.SIGHUP)
        n.wait(lambda m: "RELOADING=1" in m)
        n.wait(lambda m: "READY=1" in m)
        p.signal(signal.SIGTERM)
        n.wait(lambda m: "STOPPING=1" in m)
        n.wait(lambda m: m.startswith("STATUS=draining:"))
        s1.close()
        s2.close()
        assert p.proc.wait(10) == 0
    finally:
        p.stop()
        n.sock.close()


def test_privileges_dropped_to_server_user(harness_state, pki, legacy_stack):
    """[server] user/group: bound, keys read and kernel probed as root, then the daemon
    runs as that user with no capability left (splice and kTLS need none), no_new_privs
    set, and still serves logins and reloads its mappings (issue 9)."""
    text = config(legacy_stack, pki).replace("[server]\n", '[server]\nuser = "nobody"\n'
                                             'group = "nogroup"\n', 1)
    p = Proxy(harness_state, "privdrop", text, env={"SSL_CERT_FILE": pki.ca_file},
              mappings="alice@example.org legacy\n")
    p.start()
    try:
        line = p.wait_log(r"event=privileges ")
        assert "user=nobody group=nogroup kept=none" in line, line
        status = dict(line.split(":\t", 1) for line in
                      open(f"/proc/{p.proc.pid}/status").read().splitlines() if ":\t" in line)
        assert status["Uid"].split() == ["65534"] * 4, status["Uid"]
        assert status["Gid"].split()[:3] == [str(grp.getgrnam("nogroup").gr_gid)] * 3
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(status[cap], 16) == 0, (cap, status[cap])
        assert status["NoNewPrivs"] == "1"
        s, f = tls_conn(pki.ca_file)
        assert command(f, "a1", "LOGIN alice@example.org alice-pw").startswith(b"a1 OK")
        s.close()
        mark = p.log_size()
        p.set_mappings("alice@example.org legacy\nbob@example.org legacy\n")
        p.signal(signal.SIGHUP)
        p.wait_log(r"event=mapping-reload result=ok entries=2", since=mark)
    finally:
        assert p.stop() == 0
