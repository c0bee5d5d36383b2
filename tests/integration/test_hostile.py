"""Hostile sessions against the running daemon (issue 9).

Hundreds of sessions that misbehave on purpose — overlong lines, literal bombs, NUL
bytes, broken SASL, commands pipelined across STARTTLS, TLS garbage, half-open and
slowloris connections, floods above max_connections, backends that hang, reset or talk
nonsense mid-login. Each one must get the protocol's error or a close; meanwhile a
well-behaved client logs in and out in a loop and must never fail, and the daemon's RSS
must come back to where it was.
"""

import base64
import os
import random
import socket
import ssl
import threading
import time

import pytest

import tests.harness.proxy as harness_proxy
from tests.harness.proxy import PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAP = 12143 + PORT_OFFSET
IMAPS = 12993 + PORT_OFFSET
SLOW = 12144 + PORT_OFFSET     # short preauth_timeout, small max_connections
HANG, RESET, GARBAGE = 12901 + PORT_OFFSET, 12902 + PORT_OFFSET, 12903 + PORT_OFFSET
HOSTILE_SRC = "127.0.0.9"      # keeps Dovecot's failed-login penalty off the good client


def config(legacy, pki):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    fakes = "".join(f"""
[destination.{name}]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.{name}.protocol.imap]
port = {port}
tls = "plain"
""" for name, port in (("hang", HANG), ("reset", RESET), ("garbage", GARBAGE)))
    return f"""
[server]
threads = 2
log_level = "info"
shutdown_grace = "1s"
backend_timeout = "2s"
host_down_threshold = 0
max_line_length = 8192
max_literal_size = 65536

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
{fakes}
[listener.imap]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAP}"]
tls = "starttls"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS}"]
tls = "implicit"

[listener.slow]
protocol = "imap"
bind = ["{PROXY_ADDR}:{SLOW}"]
tls = "starttls"
preauth_timeout = "2s"
max_connections = 20
"""


class FakeBackend(threading.Thread):
    """A backend that misbehaves: "hang" accepts and says nothing, "reset" accepts and
    resets, "garbage" greets and then answers anything with binary noise."""

    def __init__(self, port, mode):
        super().__init__(daemon=True)
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.held = []
        self.stop = False

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.mode == "hang":
                self.held.append(c)
            elif self.mode == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                c.close()
            else:
                try:
                    c.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n")
                    c.settimeout(2)
                    c.recv(4096)
                    c.sendall(bytes(random.getrandbits(8) for _ in range(3000)))
                except OSError:
                    pass
                c.close()

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture(scope="module")
def hostile(harness_state, pki, legacy_stack):
    fakes = [FakeBackend(HANG, "hang"), FakeBackend(RESET, "reset"),
             FakeBackend(GARBAGE, "garbage")]
    for f in fakes:
        f.start()
    p = Proxy(harness_state, "hostile", config(legacy_stack, pki),
              env={"SSL_CERT_FILE": pki.ca_file},
              mappings="dave@example.org hang\nerin@example.org reset\ncarol garbage\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p
    rc = p.stop()
    for f in fakes:
        f.close()
    assert rc == 0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class GoodClient(threading.Thread):
    """LOGIN / NOOP / LOGOUT in a loop over implicit TLS; records every failure."""

    def __init__(self, ca):
        super().__init__(daemon=True)
        self.ctx = ssl.create_default_context(cafile=ca)
        self.rounds = 0
        self.failures = []
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                s = self.ctx.wrap_socket(connect(IMAPS, timeout=15),
                                         server_hostname="mail.proxy.test")
                f = s.makefile("rwb")
                assert f.readline().startswith(b"* OK")
                f.write(b"g1 LOGIN alice@example.org alice-pw\r\n")
                f.flush()
                line = f.readline()
                while line.startswith(b"*"):
                    line = f.readline()
                assert line.startswith(b"g1 OK"), line
                f.write(b"g2 NOOP\r\ng3 LOGOUT\r\n")
                f.flush()
                data = b""
                while b"g3 OK" not in data:
                    chunk = s.recv(4096)
                    assert chunk, data
                    data += chunk
                s.close()
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.failures.append(repr(e))


def plain(port=IMAP):
    s = connect(port, source=HOSTILE_SRC, timeout=15)
    s.recv(4096)
    return s


def tls(port=IMAPS):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(connect(port, source=HOSTILE_SRC, timeout=15))
    s.recv(4096)
    return s


def read_until(s, needle, limit=1 << 20):
    data = b""
    while needle not in data and len(data) < limit:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def closed_or(s, needle):
    """The daemon answered with needle, or closed the connection."""
    data = read_until(s, needle)
    return needle in data or data == b"" or data.endswith(b"\r\n")


# Each case: (name, function(index) -> None), asserting its own outcome.

def case_overlong_line(i):
    s = tls()
    s.sendall(b"x" + str(i).encode() + b" LOGIN " + b"A" * (20000 + 997 * i) + b"\r\n")
    assert b"BAD" in read_until(s, b"BAD")
    s.close()


def case_literal_bomb(i):
    s = tls()
    n = [4294967295, 99999999999999999999, 65537, 10 ** 30][i % 4]
    s.sendall(f"b{i} LOGIN {{{n}}}\r\n".encode())
    assert b"BAD" in read_until(s, b"BAD")
    s.close()


def case_nul_bytes(i):
    s = tls()
    s.sendall(b"n1 LOGIN al\0ice pw\r\nn2 NO\0OP\r\n")
    data = read_until(s, b"n2 BAD")
    assert b"BAD" in data
    s.close()


def case_bad_base64(i):
    s = tls()
    s.sendall(b"a1 AUTHENTICATE PLAIN !!!notbase64\r\n")
    assert b"a1 BAD" in read_until(s, b"a1 BAD")
    s.sendall(b"a2 AUTHENTICATE PLAIN " + base64.b64encode(b"no separators here") + b"\r\n")
    assert b"a2 BAD" in read_until(s, b"a2 BAD")
    s.close()


def case_starttls_pipelined(i):
    s = plain()
    s.sendall(b"t1 STARTTLS\r\nt2 LOGIN alice@example.org alice-pw\r\n")
    data = read_until(s, b"t1 OK")
    assert b"t1 OK" in data and b"t2" not in data
    s.close()


def case_tls_garbage(i):
    s = connect(IMAPS, source=HOSTILE_SRC, timeout=15)
    # content type 0 and a record version whose major byte is not 3: refused at once.
    # (OpenSSL judges the version and length before the content type, so random bytes
    # with 0x03 second would be a record header with a random length, waited for until
    # preauth_timeout; test_slowloris covers that bound. About 1 session in 1,000 did
    # that, timing the client out, before the version byte was kept away from 3.)
    major = random.choice([b for b in range(256) if b != 3])
    s.sendall(b"\x00" + bytes([major]) + bytes(random.getrandbits(8) for _ in range(1998)))
    assert closed_or(s, b"\r\n")
    s.close()


def case_plaintext_on_tls_port(i):
    s = connect(IMAPS, source=HOSTILE_SRC, timeout=15)
    s.sendall(b"a1 LOGIN alice@example.org alice-pw\r\n")
    assert closed_or(s, b"\r\n")
    s.close()


def case_unknown_commands(i):
    s = tls()
    s.sendall(b"".join(f"u{k} SELECT INBOX\r\n".encode() for k in range(12)))
    data = read_until(s, b"* BYE")
    assert b"* BYE" in data  # too many invalid commands: closed
    s.close()


def case_backend_hangs(i):
    s = tls()
    s.sendall(b"h1 LOGIN dave@example.org dave-pw\r\n")
    assert b"h1 NO [UNAVAILABLE]" in read_until(s, b"h1 NO")
    s.close()


def case_backend_resets(i):
    s = tls()
    s.sendall(b"r1 LOGIN erin@example.org erin-pw\r\n")
    assert b"r1 NO [UNAVAILABLE]" in read_until(s, b"r1 NO")
    s.close()


def case_backend_garbage(i):
    s = tls()
    s.sendall(b"g1 LOGIN carol carol-pw\r\n")
    assert b"g1 NO [UNAVAILABLE]" in read_until(s, b"g1 NO")
    s.close()


def case_half_open(i):
    s = connect(IMAPS, source=HOSTILE_SRC, timeout=15)
    s.close()  # never says anything


CASES = [case_overlong_line, case_literal_bomb, case_nul_bytes, case_bad_base64,
         case_starttls_pipelined, case_tls_garbage, case_plaintext_on_tls_port,
         case_unknown_commands, case_backend_hangs, case_backend_resets, case_backend_garbage,
         case_half_open]
ROUNDS = 25  # 12 cases x 25 = 300 hostile sessions


def test_hostile_sessions_keep_daemon_healthy(hostile):
    pid = hostile.proc.pid
    good = GoodClient(hostile.ca_file)
    # warm up (TLS contexts, allocator arenas) before the baseline
    for case in CASES:
        case(0)
    time.sleep(0.5)
    rss0, fds0 = rss_kb(pid), fd_count(pid)
    good.start()
    errors = []
    lock = threading.Lock()

    def worker(cases):
        for case, i in cases:
            try:
                case(i)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"{case.__name__}[{i}]: {e!r}")

    work = [(c, i) for i in range(1, ROUNDS + 1) for c in CASES]
    random.Random(7).shuffle(work)
    threads = [threading.Thread(target=worker, args=(work[k::6],)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    good.stop = True
    good.join(60)
    assert not errors, "\n".join(errors[:20])
    assert good.rounds > 0 and not good.failures, (good.rounds, good.failures[:5])
    time.sleep(2.5)  # backend_timeout: the hung-backend sessions end
    rss1, fds1 = rss_kb(pid), fd_count(pid)
    assert fds1 <= fds0 + 2, f"fd count {fds0} -> {fds1}"
    if "asan" in os.path.basename(os.path.dirname(harness_proxy.DAEMON)):
        # ASan keeps freed memory in quarantine (256 MB): RSS says nothing there
        print(f"RSS check skipped under the ASan build ({rss0} kB -> {rss1} kB)")
    else:
        assert rss1 <= rss0 + 8 * 1024, f"RSS grew {rss0} kB -> {rss1} kB"
    assert hostile.alive()


def test_slowloris_cut_by_preauth_timeout(hostile):
    s = connect(SLOW, source=HOSTILE_SRC, timeout=15)
    s.recv(4096)
    t0 = time.monotonic()
    data = b""
    try:
        for _ in range(100):
            s.sendall(b"a")  # a byte at a time, never a line
            time.sleep(0.1)
            s.setblocking(False)
            try:
                chunk = s.recv(4096)
                if chunk == b"":
                    break
                data += chunk
            except BlockingIOError:
                pass
            s.setblocking(True)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - t0 < 6, "the slow client was not cut off"
    assert b"* BYE" in data or data == b""
    s.close()


def test_connection_flood_above_max_connections(hostile):
    held = []
    for _ in range(20):
        held.append(connect(SLOW, source=HOSTILE_SRC, timeout=15))
    for s in held:
        assert s.recv(4096).startswith(b"* OK")
    extra = connect(SLOW, source=HOSTILE_SRC, timeout=15)
    assert extra.recv(4096) == b""  # refused: closed without a greeting
    extra.close()
    hostile.wait_log(r"event=max-connections listener=slow")
    # the other listeners are not affected
    s = connect(IMAP)
    assert s.recv(4096).startswith(b"* OK")
    s.close()
    for s in held:
        s.close()
