"""How the login is replayed to backends of different abilities (issue 3, "Replay").

A scripted IMAP backend records exactly what the proxy sends. Its capabilities decide
the replay: AUTHENTICATE PLAIN with an initial response when it offers SASL-IR
(RFC 4959), without one when it only offers AUTH=PLAIN, LOGIN with literals as the last
resort; OAuth tokens go back with the mechanism the client used. Needs no Dovecot.
"""

import base64
import os
import socket
import ssl
import threading
import time

import pytest

from tests.harness.proxy import PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAPS = 14993 + PORT_OFFSET
BACKENDS = {"irplain": 14901, "plainonly": 14902, "loginonly": 14903, "literalplus": 14904}
CAPS = {
    "irplain": "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER",
    "plainonly": "IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2",
    "loginonly": "IMAP4rev1",
    "literalplus": "IMAP4rev1 LITERAL+",
}


class ScriptedBackend(threading.Thread):
    """Greets with its capabilities, answers "+ " to AUTHENTICATE without an initial
    response and to synchronising literals, accepts any login; records the bytes."""

    def __init__(self, name, port):
        super().__init__(daemon=True)
        self.name, self.port = name, port + PORT_OFFSET
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.received = []

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        f = c.makefile("rwb")
        f.write(f"* OK [CAPABILITY {CAPS[self.name]}] scripted\r\n".encode())
        f.flush()
        tag = None
        while True:
            try:
                line = f.readline()
            except OSError:
                break
            if not line:
                break
            self.received.append(line)
            text = line.decode("latin-1").rstrip("\r\n")
            words = text.split(" ")
            if tag is None:  # the first line of a command carries its tag
                tag = words[0]
            if text.endswith("+}"):
                continue  # RFC 7888: the literal follows at once
            if text.endswith("}"):
                f.write(b"+ go ahead\r\n")
                f.flush()
                continue
            if len(words) == 3 and words[1].upper() == "AUTHENTICATE":
                f.write(b"+ \r\n")
                f.flush()
                continue
            f.write(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n".encode())
            f.flush()
            tag = None
        c.close()

    def close(self):
        self.sock.close()


def config(pki):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    dests = "".join(f"""
[destination.{name}]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.{name}.protocol.imap]
port = {port + PORT_OFFSET}
tls = "plain"
""" for name, port in BACKENDS.items())
    return f"""
[server]
threads = 1
log_level = "debug"
host_down_threshold = 2
host_down_min_clients = 1
host_down_cooldown = "2s"
backend_connect_retries = 0

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "irplain"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"
{dests}
[destination.dead]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.dead.protocol.imap]
port = 1
tls = "plain"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS}"]
tls = "implicit"
"""


@pytest.fixture(scope="module")
def replay(harness_state, pki):
    backends = {n: ScriptedBackend(n, p) for n, p in BACKENDS.items()}
    for b in backends.values():
        b.start()
    p = Proxy(harness_state, "replay", config(pki),
              mappings="".join(f"{n}@example.org {n}\n" for n in BACKENDS) +
              "dead@example.org dead\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p, backends
    assert p.stop() == 0
    for b in backends.values():
        b.close()


def login(p, command, continuation=None):
    ctx = ssl.create_default_context(cafile=p.ca_file)
    s = ctx.wrap_socket(connect(IMAPS), server_hostname="mail.proxy.test")
    f = s.makefile("rwb")
    f.readline()
    f.write(command + b"\r\n")
    f.flush()
    line = f.readline()
    if continuation is not None:
        assert line.startswith(b"+")
        f.write(continuation + b"\r\n")
        f.flush()
        line = f.readline()
    s.close()
    return line


def sent(backend):
    return [l.decode("latin-1").rstrip("\r\n") for l in backend.received]


def b64(s):
    return base64.b64encode(s).decode()


def test_plain_with_sasl_ir(replay):
    p, b = replay
    assert login(p, b"a LOGIN irplain@example.org secret").startswith(b"a OK [CAPABILITY")
    assert sent(b["irplain"])[-1].endswith(
        "AUTHENTICATE PLAIN " + b64(b"\0irplain@example.org\0secret"))


def test_plain_without_sasl_ir(replay):
    p, b = replay
    assert login(p, b"a LOGIN plainonly@example.org secret").startswith(b"a OK")
    lines = sent(b["plainonly"])
    assert lines[-2].endswith("AUTHENTICATE PLAIN")
    assert lines[-1] == b64(b"\0plainonly@example.org\0secret")


def test_login_literals_as_last_resort(replay):
    p, b = replay
    assert login(p, b'a LOGIN loginonly@example.org "p\\"w d"').startswith(b"a OK")
    lines = sent(b["loginonly"])
    assert lines[-3].endswith("LOGIN {21}")
    assert lines[-2] == "loginonly@example.org {5}"
    assert lines[-1] == 'p"w d'


def test_literal_plus_in_one_go(replay):
    p, b = replay
    assert login(p, b"a LOGIN literalplus@example.org pw").startswith(b"a OK")
    lines = sent(b["literalplus"])
    assert lines[-3].endswith("LOGIN {23+}")
    assert lines[-2] == "literalplus@example.org {2+}"
    assert lines[-1] == "pw"


def test_xoauth2_replayed_as_sent(replay):
    p, b = replay
    raw = b"user=irplain@example.org\x01auth=Bearer tok3n\x01\x01"
    assert login(p, b"a AUTHENTICATE XOAUTH2 " + base64.b64encode(raw)).startswith(b"a OK")
    assert sent(b["irplain"])[-1].endswith("AUTHENTICATE XOAUTH2 " + b64(raw))


def test_oauthbearer_without_initial_response(replay):
    p, b = replay
    raw = b"n,a=irplain@example.org,\x01auth=Bearer tok3n\x01\x01"
    assert login(p, b"a AUTHENTICATE OAUTHBEARER", base64.b64encode(raw)).startswith(b"a OK")
    assert sent(b["irplain"])[-1].endswith("AUTHENTICATE OAUTHBEARER " + b64(raw))


def test_login_mechanism_replayed_as_plain(replay):
    p, b = replay
    ctx = ssl.create_default_context(cafile=p.ca_file)
    s = ctx.wrap_socket(connect(IMAPS), server_hostname="mail.proxy.test")
    f = s.makefile("rwb")
    f.readline()
    for out in (b"a AUTHENTICATE LOGIN", base64.b64encode(b"irplain@example.org"),
                base64.b64encode(b"pw")):
        f.write(out + b"\r\n")
        f.flush()
        line = f.readline()
    assert line.startswith(b"a OK")
    s.close()
    assert sent(b["irplain"])[-1].endswith("AUTHENTICATE PLAIN " + b64(b"\0irplain@example.org\0pw"))


def test_circuit_breaker_marks_down_and_retries_after_cooldown(replay):
    """host_down_threshold failures -> down: logins fail at once; after the cooldown one
    attempt goes to the backend again."""
    p, _ = replay
    for _ in range(2):
        assert login(p, b"a LOGIN dead@example.org pw").startswith(b"a NO [UNAVAILABLE]")
    mark = p.log_size()
    assert login(p, b"a LOGIN dead@example.org pw").startswith(b"a NO [UNAVAILABLE]")
    p.wait_log(r"event=backend-unavailable .*destination=dead .*marked down", since=mark)
    time.sleep(2.2)
    mark = p.log_size()
    assert login(p, b"a LOGIN dead@example.org pw").startswith(b"a NO [UNAVAILABLE]")
    p.wait_log(r"event=backend-unavailable .*destination=dead .*Connection refused", since=mark)
