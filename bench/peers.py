#!/usr/bin/python3
"""bench/peers.py: mailsplice against the proxies a mail operator would pick instead (issue 8).

One run, one machine, loopback. Peers, all Debian packages started by this script with
configs in a temporary directory and stopped by pid:
  direct      the client talks to the backend itself: the physical reference
  haproxy-best  HAProxy at its best for bulk TCP: option splice-request and
              splice-response (splice forced both ways), tune.pipesize 1048576;
              send-proxy-v2, TLS terminated for 993 (no login routing: the pure
              forwarding baseline)
  haproxy     the same as shipped in this benchmark before: option splice-auto (which
              made no splice call at all on HAProxy 2.6 here)
  nginx-best  nginx mail proxy (libnginx-mod-mail) with proxy_buffer 64k, auth_http to a
              responder of ours, plaintext backend legs (nginx mail has none other),
              xclient for SMTP
  nginx       the same with the shipped proxy_buffer (one page)
  dovecot     Dovecot 2.3 login processes as a proxy (passdb static proxy=y), IMAP only
              here, in the documented high-performance mode (service_count = 0)
  dovecot-shipped  the same as shipped: a login process per connection (not for idle)
  ms-<path>   mailsplice with data_path = auto (the default) | userspace | splice |
              sockmap (kTLS where the kernel has it; the start-up line says, and the
              table header repeats it)

The backend is bench/peers_backend.py, a minimal protocol-correct IMAP/SMTP responder of
ours, because Dovecot and Postfix themselves would be the bottleneck (an imap process per
session, a queue file per message). The same backend serves every peer.

Workloads (numbers, never pass/fail; this machine is shared and noisy):
  fetch       bulk backend->client: IMAP FETCH BODY[] of 64 MiB messages after a login,
              plain (143) and TLS (993): forwarding CPU-s/GiB at a fixed offered load
              (whole-machine /proc/stat busy time minus the direct run's, 3 runs) and
              single-flow MiB/s (5 runs)
  data        bulk client->backend: SMTP DATA of 64 MiB messages, submission (AUTH PLAIN)
              and port 25 (no auth): same two figures
  noop        IMAP NOOP round trips after login: p50/p99/p99.9 of 5,000, 3 runs
  logins      TLS 1.3 IMAP logins per second (ECDSA P-256 certificate, full handshakes,
              2 client processes, 3 runs of 5 s) and whole-machine CPU-ms per login
  idle        N logged-in idle TLS IMAP sessions: proxy RSS and kernel slab per session,
              proxy CPU while idle (the container's descriptor limit caps N; printed)
  counts      with fetch and data: the proxy's system calls and wake-ups per GiB
              (perf stat on its threads, one more paced run each)

MS_PORT_OFFSET moves every port (backend 29100+, peers 29200+).

Output: one markdown table per workload with medians, the spread (min-max) and the
ratios to the best non-mailsplice peer and to direct; written with the machine and
kernel description to bench/results/peers-<time>/, with a PNG chart per workload
(gnuplot).

    make bench-peers                 (the whole run, about 25 minutes on 2 CPUs)
    bench/peers.py --quick           (a smoke test: small sizes, one run each)
    bench/peers.py --peers direct,haproxy-best,ms-auto --workloads fetch,data
"""

import argparse
import datetime
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "bench"))
import peers_backend as pb  # noqa: E402
from benchlib import busy_jiffies, send_paced  # noqa: E402
from tests.harness.pki import Pki  # noqa: E402
from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy  # noqa: E402

BACKEND_HOST = "127.0.0.7"
# MS_PORT_OFFSET moves every port, so that runs of several engineers on one machine
# do not collide
PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BACKEND_BASE = 29100 + PORT_OFFSET
PEER_BASE = 29200 + PORT_OFFSET  # peer i: PEER_BASE + 10 * i + (0 imap, 1 imaps, 2 sub, 3 smtp)
MIB = 1 << 20
GIB = 1 << 30
USER, PASSWORD = b"bench@example.com", b"bench-password"
SMTP_CHUNK = (b"QmVuY2ggbWVzc2FnZSBib2R5IGxpbmUsIGJhc2U2NC1sb29raW5nIGJ5dGVzIGZvciBzaXpl" +
              b"bW9yZQ\r\n") * (MIB // 80)  # 80-byte lines (RFC 5322 asks for <= 78+CRLF)
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h

CLIENT_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CLIENT_TLS.minimum_version = ssl.TLSVersion.TLSv1_3
CLIENT_TLS.check_hostname = False  # the same for every peer: the client's cost is not
CLIENT_TLS.verify_mode = ssl.CERT_NONE  # what is measured


# ---------------------------------------------------------------- machine readings

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def slab_kib():
    with open("/proc/meminfo") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f}["Slab"]


def group_members(pgid):
    """Processes left in process group pgid (peers run in a session of their own)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def stop_group(pgid, grace=10):
    """SIGTERM whatever is left of the group, SIGKILL after grace seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.1)


def wait_backend_quiet(shared, name, limit=180):
    """Wait until the backend serves no connection left over from the last peer, so the
    next peer starts on an idle backend (a thread per connection: thousands of closing
    sessions would starve the next peer's first login)."""
    t0 = time.monotonic()
    while shared.open.value > 0 and time.monotonic() - t0 < limit:
        time.sleep(0.2)
    left, waited = shared.open.value, time.monotonic() - t0
    if left > 0:
        print(f"  backend: {left} connections still open {waited:.0f} s after {name} "
              "stopped", flush=True)
    elif waited > 1:
        print(f"  backend: quiet {waited:.0f} s after {name} stopped", flush=True)


def process_tree(root):
    """root and every descendant, read from /proc (nginx workers, Dovecot's children)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            t += int(v[11]) + int(v[12])
        except (OSError, IndexError):
            pass
    return t / HZ


def tree_rss_bytes(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                t += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError):
            pass
    return t


class PerfStat:
    """System calls and wake-ups of a peer's processes (every thread) while a workload
    runs: `perf stat` on raw_syscalls:sys_enter, epoll_wait/epoll_pwait entries (one per
    turn of an event loop: a wake-up) and context switches. Counts mean the same on a
    loaded machine and inside an emulated guest, unlike times. None when perf is
    missing or refuses (then the table says n/a)."""

    EVENTS = ["raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_wait",
              "syscalls:sys_enter_epoll_pwait", "context-switches"]

    def __init__(self, pids):
        self.pids = pids
        self.proc = None
        self.out = None

    def __enter__(self):
        if not self.pids or not shutil.which("perf"):
            return self
        fd, self.out = tempfile.mkstemp(prefix="perf-", suffix=".csv")
        os.close(fd)
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", self.out, "-e", ",".join(self.EVENTS),
             "-p", ",".join(str(p) for p in self.pids)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before the first byte
        return self

    def __exit__(self, *exc):
        if not self.proc:
            return False
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.counts = {}
        try:
            with open(self.out) as f:
                for line in f:
                    v = line.strip().split(",")
                    if len(v) >= 3 and v[0].replace(".", "").isdigit():
                        self.counts[v[2]] = float(v[0])
        finally:
            os.unlink(self.out)
        return False

    def per_gib(self, moved):
        c = getattr(self, "counts", None)
        if not c or "raw_syscalls:sys_enter" not in c:
            return None, None
        wakeups = (c.get("syscalls:sys_enter_epoll_wait", 0) +
                   c.get("syscalls:sys_enter_epoll_pwait", 0))
        gib = moved / GIB
        return c["raw_syscalls:sys_enter"] / gib, wakeups / gib


# ---------------------------------------------------------------- clients

def connect(target, tls=False, timeout=60):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((CLIENT_ADDR, 0))
    s.settimeout(timeout)
    s.connect(target)
    return CLIENT_TLS.wrap_socket(s) if tls else s


class Lines(pb.Conn):
    """The backend's line reader, and it can swallow n bytes without keeping them."""

    def __init__(self, s):
        super().__init__(s)
        self.sink = bytearray(MIB)

    def swallow(self, n):
        k = min(n, len(self.buf))
        self.buf = self.buf[k:]
        n -= k
        view = memoryview(self.sink)
        while n:
            got = self.s.recv_into(view, min(len(view), n))
            if not got:
                raise EOFError("connection closed inside a literal")
            n -= got


class Imap(Lines):
    def __init__(self, target, tls=False):
        super().__init__(connect(target, tls))
        self.n = 0
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"IMAP greeting {greeting!r}")

    def cmd(self, text):
        self.n += 1
        tag = b"t%d" % self.n
        self.s.sendall(tag + b" " + text + b"\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:20]!r}: {line!r}")
                return line

    def login(self):
        self.cmd(b'LOGIN "%s" "%s"' % (USER, PASSWORD))

    def fetch(self):
        """FETCH the one message; returns its size. The literal is counted, not kept."""
        self.n += 1
        tag = b"t%d" % self.n
        self.s.sendall(tag + b" FETCH 1 BODY[]\r\n")
        head = self.line()
        if not head.startswith(b"* 1 FETCH") or not head.rstrip().endswith(b"}"):
            raise RuntimeError(f"FETCH answered {head!r}")
        n = int(head.rstrip()[:-1].rsplit(b"{", 1)[1])
        self.swallow(n)
        while not self.line().startswith(tag + b" OK"):
            pass
        return n

    def close(self):
        try:
            self.cmd(b"LOGOUT")
        except (OSError, EOFError, RuntimeError):
            pass
        self.s.close()


class Smtp(Lines):
    def __init__(self, target, auth):
        super().__init__(connect(target))
        self.expect(b"220")
        self.send_expect(b"EHLO client.bench.test", b"250")
        if auth:
            import base64
            ir = base64.b64encode(b"\0" + USER + b"\0" + PASSWORD)
            self.send_expect(b"AUTH PLAIN " + ir, b"235")

    def expect(self, code):
        while True:
            line = self.line()
            if line[3:4] != b"-":
                if not line.startswith(code):
                    raise RuntimeError(f"SMTP: expected {code!r}, got {line!r}")
                return line

    def send_expect(self, line, code):
        self.s.sendall(line + b"\r\n")
        return self.expect(code)

    def message(self, size, rate):
        self.send_expect(b"MAIL FROM:<sender@example.net>", b"250")
        self.send_expect(b"RCPT TO:<%s>" % USER, b"250")
        self.send_expect(b"DATA", b"354")
        last = send_paced(self.s.sendall, SMTP_CHUNK, size, rate)
        # the body ends with CRLF before the terminating dot (RFC 5321 section 4.1.1.4)
        ends_line = bytes(last[-2:]) == b"\r\n"
        self.send_expect(b"." if ends_line else b"\r\n.", b"250")

    def close(self):
        try:
            self.send_expect(b"QUIT", b"221")
        except (OSError, EOFError, RuntimeError):
            pass
        self.s.close()


# ---------------------------------------------------------------- peers

class Peer:
    """A proxy (or none) in front of the backend. Addresses are None where the peer
    cannot carry that protocol."""

    name = "?"
    imap = imaps = submission = smtp25 = None
    describe = ""

    def __init__(self, index, state, cert, key):
        self.port = PEER_BASE + 10 * index
        self.dir = os.path.join(state, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.cert, self.key = cert, key
        self.proc = None
        self.log = None

    def start(self):
        pass

    def pids(self):
        return process_tree(self.proc.pid) if self.proc else []

    def _spawn(self, argv, ready_port):
        self.log = open(os.path.join(self.dir, "output.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see "
                                   f"{self.dir}/output.log")
            try:
                socket.create_connection((PROXY_ADDR, ready_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {ready_port} within 20 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            # the master is gone, its children not always: Dovecot's login processes
            # keep proxying thousands of idle sessions for a while after it
            stop_group(self.proc.pid)
        self.proc = None
        if self.log:
            self.log.close()


class Direct(Peer):
    name = "direct"
    describe = "the client connects to the backend (physical reference)"

    def __init__(self, *a):
        super().__init__(*a)
        self.imap = (BACKEND_HOST, BACKEND_BASE + pb.IMAP)
        self.imaps = (BACKEND_HOST, BACKEND_BASE + pb.IMAPS)
        self.submission = self.smtp25 = (BACKEND_HOST, BACKEND_BASE + pb.SMTP)


class Listening(Peer):
    def __init__(self, *a):
        super().__init__(*a)
        self.imap = (PROXY_ADDR, self.port)
        self.imaps = (PROXY_ADDR, self.port + 1)
        self.submission = (PROXY_ADDR, self.port + 2)
        self.smtp25 = (PROXY_ADDR, self.port + 3)


class HAProxy(Listening):
    """As shipped in this benchmark so far: `option splice-auto`, which on HAProxy 2.6
    made no splice call at all here (16 KiB recvfrom/sendto, issue 22)."""

    name = "haproxy"
    SPLICE = "    option splice-auto\n"
    TUNE = ""
    WHAT = "TCP mode, splice-auto"

    def start(self):
        pem = os.path.join(self.dir, "haproxy.pem")
        with open(pem, "w") as f:
            f.write(open(self.cert).read() + open(self.key).read())
        os.chmod(pem, 0o600)
        b = BACKEND_HOST
        cfg = f"""global
    # each session needs two descriptors, and by default haproxy reserves a
    # splice pipe pair per four sessions on top; idle sessions hold no pipes
    maxconn 9700
    maxpipes 200
    nbthread {os.cpu_count()}
    ssl-default-bind-options ssl-min-ver TLSv1.3
{self.TUNE}defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
{self.SPLICE}frontend imap
    bind {PROXY_ADDR}:{self.port}
    default_backend imap
frontend imaps
    bind {PROXY_ADDR}:{self.port + 1} ssl crt {pem}
    default_backend imap
frontend submission
    bind {PROXY_ADDR}:{self.port + 2}
    default_backend smtp
frontend smtp
    bind {PROXY_ADDR}:{self.port + 3}
    default_backend smtp
backend imap
    server b {b}:{BACKEND_BASE + pb.IMAP_PROXY} send-proxy-v2
backend smtp
    server b {b}:{BACKEND_BASE + pb.SMTP_PROXY} send-proxy-v2
"""
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        version = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        self.describe = version.splitlines()[0].split(" - ")[0] + ", " + self.WHAT
        self._spawn(["haproxy", "-db", "-f", path], self.port)


class HAProxyBest(HAProxy):
    """HAProxy at its best for bulk TCP: splice forced both ways (configuration manual,
    `option splice-request` / `option splice-response`) with 1 MiB pipes
    (`tune.pipesize`); it splices only plain legs, TLS stays in OpenSSL."""

    name = "haproxy-best"
    SPLICE = "    option splice-request\n    option splice-response\n"
    TUNE = "    tune.pipesize 1048576\n"
    WHAT = "TCP mode, splice-request + splice-response, tune.pipesize 1048576"


class Nginx(Listening):
    """nginx mail as shipped: proxy_buffer is one page (4 KiB here), so every 4 KiB
    costs a read and a write."""

    name = "nginx"
    MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
    BUFFER = ""
    WHAT = "mail"

    def start(self):
        d = self.dir
        cfg = f"""load_module {self.MODULE};
daemon off;
master_process on;
worker_processes {os.cpu_count()};
worker_rlimit_nofile 19900;
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{ worker_connections 19000; }}
mail {{
    server_name bench.test;
    auth_http {BACKEND_HOST}:{BACKEND_BASE + pb.AUTH_HTTP}/auth;
    proxy_pass_error_message on;
    ssl_certificate {self.cert};
    ssl_certificate_key {self.key};
    ssl_protocols TLSv1.3;
    imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR;
    imap_auth plain login;
    smtp_capabilities PIPELINING 8BITMIME "SIZE 0";
    xclient on;
{self.BUFFER}    server {{ listen {PROXY_ADDR}:{self.port}; protocol imap; }}
    server {{ listen {PROXY_ADDR}:{self.port + 1} ssl; protocol imap; }}
    server {{ listen {PROXY_ADDR}:{self.port + 2}; protocol smtp; smtp_auth plain login; }}
    server {{ listen {PROXY_ADDR}:{self.port + 3}; protocol smtp; smtp_auth none; }}
}}
"""
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(cfg)
        v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        self.describe = v.split(": ", 1)[-1] + f" {self.WHAT}, {os.cpu_count()} workers"
        self._spawn(["nginx", "-p", d, "-c", path], self.port)


class NginxBest(Nginx):
    """nginx mail with the one documented knob for bulk bytes, ngx_mail_proxy_module's
    `proxy_buffer` (two per session, allocated at the hand-over): 64 KiB, what one
    loopback read delivers at most, instead of one page."""

    name = "nginx-best"
    BUFFER = "    proxy_buffer 64k;\n"
    WHAT = "mail, proxy_buffer 64k"


class Dovecot(Listening):
    """Dovecot's login processes at their documented best for many proxied sessions:
    high-performance mode (service_count = 0, process_min_avail = CPUs)."""

    name = "dovecot"
    SERVICE = f"""  service_count = 0
  process_min_avail = {os.cpu_count()}
  client_limit = 9900
"""
    WHAT = "login proxy, high-performance mode"

    def __init__(self, *a):
        super().__init__(*a)
        self.submission = self.smtp25 = None  # a submission relay, not a login proxy

    def start(self):
        d = self.dir
        os.chmod(d, 0o755)
        for sub in ("run", "state"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        cfg = f"""protocols = imap
listen = {PROXY_ADDR}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
ssl_min_protocol = TLSv1.3
disable_plaintext_auth = no
auth_mechanisms = plain login
default_client_limit = 19900
default_vsz_limit = 1G
passdb {{
  driver = static
  args = proxy=y host={BACKEND_HOST} port={BACKEND_BASE + pb.IMAP} nopassword=y
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.port + 1}
    ssl = yes
  }}
{self.SERVICE}}}
"""
        path = os.path.join(d, "dovecot.conf")
        with open(path, "w") as f:
            f.write(cfg)
        v = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
        self.describe = f"Dovecot {v.split()[0]} {self.WHAT}"
        self._spawn(["dovecot", "-F", "-c", path], self.port)


class DovecotShipped(Dovecot):
    """Dovecot as shipped: high-security mode, one login process per connection
    (service_count = 1). Not run for the idle workload: thousands of processes."""

    name = "dovecot-shipped"
    SERVICE = """  service_count = 1
  process_limit = 1000
"""
    WHAT = "login proxy, as shipped (high-security mode, a process per connection)"
    skip = {"idle": "one login process per idle session"}


class Mailsplice(Listening):
    CONFIG = """
[server]
hostname = "bench.test"
log_level = "info"
data_path = "{path}"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"
default = true

[tls.protocols]
min_version = "1.3"

[routing]
default_destination = "bench"
smtp_passthrough_destination = "bench"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.bench]
host = "{bhost}"
forwarding = "proxy"
allow_plaintext_auth = true

[destination.bench.protocol.imap]
port = {bimap}
tls = "plain"

[destination.bench.protocol.submission]
port = {bsmtp}
tls = "plain"

[destination.bench.protocol.smtp]
port = {bsmtp}
tls = "plain"

[listener.imap]
protocol = "imap"
bind = ["{addr}:{p0}"]
tls = "plain"
allow_plaintext_login = true
max_connections = 40000

[listener.imaps]
protocol = "imap"
bind = ["{addr}:{p1}"]
tls = "implicit"
max_connections = 40000

[listener.submission]
protocol = "submission"
bind = ["{addr}:{p2}"]
tls = "plain"
allow_plaintext_login = true
max_connections = 40000

[listener.smtp]
protocol = "smtp"
bind = ["{addr}:{p3}"]
tls = "plain"
max_connections = 40000
"""

    def __init__(self, index, state, cert, key, path):
        self.name = "ms-" + path
        self.path = path
        super().__init__(index, state, cert, key)
        self.proxy = None

    def start(self):
        cfg = self.CONFIG.format(path=self.path, cert=self.cert, key=self.key,
                                 bhost=BACKEND_HOST, bimap=BACKEND_BASE + pb.IMAP_PROXY,
                                 bsmtp=BACKEND_BASE + pb.SMTP_PROXY, addr=PROXY_ADDR,
                                 p0=self.port, p1=self.port + 1, p2=self.port + 2,
                                 p3=self.port + 3)
        self.proxy = Proxy(self.dir, self.name, cfg)
        self.proxy.start()
        line = self.proxy.wait_log(r"event=data-path ")
        self.describe = "mailsplice " + line.split("event=data-path ", 1)[1].strip()

    def pids(self):
        return [self.proxy.proc.pid] if self.proxy and self.proxy.proc else []

    def stop(self):
        if self.proxy:
            self.proxy.stop()
            self.proxy = None


# ---------------------------------------------------------------- workloads

def fetch_cpu(peer, shared, tls, total, rate, counts=False):
    """Busy CPU-s per GiB moved while FETCHing `total` bytes at `rate` bytes/s, and the
    proxy processes' own CPU-s per GiB; with counts, a separate run under perf stat
    (its tracing would cost CPU): (syscalls per GiB, wake-ups per GiB)."""
    shared.msg_size.value = 64 * MIB
    shared.rate.value = rate
    c = Imap(peer.imaps if tls else peer.imap, tls)
    c.login()
    c.cmd(b"SELECT INBOX")
    pids = peer.pids()
    perf = PerfStat(pids if counts else [])
    with perf:
        j0, p0 = busy_jiffies(), tree_cpu_seconds(pids)
        moved = 0
        while moved < total:
            moved += c.fetch()
        j1, p1 = busy_jiffies(), tree_cpu_seconds(pids)
    c.close()
    shared.rate.value = 0
    if counts:
        return perf.per_gib(moved)
    return (j1 - j0) / HZ / (moved / GIB), (p1 - p0) / (moved / GIB)


def fetch_throughput(peer, shared, tls, size):
    shared.msg_size.value = size
    shared.rate.value = 0
    c = Imap(peer.imaps if tls else peer.imap, tls)
    c.login()
    c.cmd(b"SELECT INBOX")
    t0 = time.monotonic()
    c.fetch()
    dt = time.monotonic() - t0
    c.close()
    return size / dt / MIB


def data_cpu(peer, target, auth, total, rate, counts=False):
    c = Smtp(target, auth)
    pids = peer.pids()
    perf = PerfStat(pids if counts else [])
    with perf:
        j0, p0 = busy_jiffies(), tree_cpu_seconds(pids)
        moved = 0
        while moved < total:
            c.message(64 * MIB, rate)
            moved += 64 * MIB
        j1, p1 = busy_jiffies(), tree_cpu_seconds(pids)
    c.close()
    if counts:
        return perf.per_gib(moved)
    return (j1 - j0) / HZ / (moved / GIB), (p1 - p0) / (moved / GIB)


def data_throughput(target, auth, size):
    c = Smtp(target, auth)
    t0 = time.monotonic()
    c.message(size, 0)
    dt = time.monotonic() - t0
    c.close()
    return size / dt / MIB


def noop_rtt(peer, count):
    c = Imap(peer.imap)
    c.login()
    c.cmd(b"SELECT INBOX")
    times = []
    for i in range(count + 100):
        t0 = time.perf_counter_ns()
        c.cmd(b"NOOP")
        if i >= 100:  # after warm-up
            times.append((time.perf_counter_ns() - t0) / 1000)
    c.close()
    times.sort()
    return tuple(times[min(len(times) - 1, int(p * len(times)))] for p in (0.5, 0.99, 0.999))


def login_worker(target, seconds, threads, out):
    """`threads` login loops in this process: enough logins in flight that the rate
    says what the proxy can do, not one connection's latency (nginx holds its TLS
    greeting for the client's delayed ACK, about 40 ms per login, see the note)."""
    import threading
    counts = [[0, 0] for _ in range(threads)]
    end = time.monotonic() + seconds

    def loop(k):
        while time.monotonic() < end:
            try:
                c = Imap(target, tls=True)
                c.login()
                c.close()
                counts[k][0] += 1
            except (OSError, EOFError, RuntimeError):
                counts[k][1] += 1

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((sum(c[0] for c in counts), sum(c[1] for c in counts)))


def logins(peer, seconds, workers, threads):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    pids = peer.pids()
    p0 = tree_cpu_seconds(pids)
    j0 = busy_jiffies()
    t0 = time.monotonic()
    procs = [ctx.Process(target=login_worker, args=(peer.imaps, seconds, threads, q))
             for _ in range(workers)]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    dt = time.monotonic() - t0
    cpu = (busy_jiffies() - j0) / HZ
    pcpu = tree_cpu_seconds(pids) - p0
    n = sum(r[0] for r in res)
    errors = sum(r[1] for r in res)
    if errors:
        print(f"    {peer.name}: {errors} failed logins", flush=True)
    return n / dt, cpu / max(n, 1) * 1000, pcpu / max(n, 1) * 1000


def login_latency(peer, count):
    """One login at a time: connect to tagged OK of LOGIN, ms (median)."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        c = Imap(peer.imaps, tls=True)
        c.login()
        times.append((time.perf_counter() - t0) * 1000)
        c.close()
    return statistics.median(times)


def idle_sessions(peer, n):
    """Per logged-in idle TLS session: proxy RSS, kernel slab; proxy CPU while idle."""
    time.sleep(1)
    pids0 = peer.pids()
    r0, s0 = tree_rss_bytes(pids0), slab_kib()
    held = []
    t0 = time.monotonic()
    try:
        # 16 logins in flight: nginx's ~40 ms per TLS login alone would take minutes
        from concurrent.futures import ThreadPoolExecutor

        def one(_):
            c = Imap(peer.imaps, tls=True)
            held.append(c)
            c.login()

        with ThreadPoolExecutor(16) as ex:
            list(ex.map(one, range(n)))
        opened = time.monotonic() - t0
        time.sleep(3)
        pids = peer.pids()
        r1, s1 = tree_rss_bytes(pids), slab_kib()
        c0 = tree_cpu_seconds(pids)
        time.sleep(10)
        idle_cpu = (tree_cpu_seconds(pids) - c0) / 10 * 1000  # ms per second
        # every session still there (a proxy that dropped them would look cheap)
        alive = 0
        for c in held[:: max(1, n // 50)]:
            c.cmd(b"NOOP")
            alive += 1
    finally:
        for c in held:
            c.s.close()
    rss = (r1 - r0) / n if pids else None
    return {"rss": rss, "slab": (s1 - s0) * 1024 / n, "idle_cpu": idle_cpu if pids else None,
            "open_s": opened, "checked": alive}


# ---------------------------------------------------------------- tables and charts

def med(xs):
    return statistics.median(xs)


def spread(xs):
    return f"{min(xs):.0f}–{max(xs):.0f}" if len(xs) > 1 else "-"


class Table:
    """Rows of (peer, {column: [values]}); a column is lower- or higher-is-better."""

    def __init__(self, title, unit_note, columns):
        self.title = title
        self.note = unit_note
        self.columns = columns  # [(key, label, "low"|"high", fmt)]
        self.rows = {}

    def add(self, peer, key, values):
        self.rows.setdefault(peer, {})[key] = values if isinstance(values, list) else [values]

    def markdown(self):
        out = [f"### {self.title}", "", self.note, ""]
        head = ["peer"]
        for _, label, _, _ in self.columns:
            head += [label, "spread", "vs best peer", "vs direct"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for peer, cols in self.rows.items():
            cells = [peer]
            for key, _, better, fmt in self.columns:
                vals = cols.get(key)
                if not vals or vals[0] is None:
                    cells += ["n/a", "", "", ""]
                    continue
                m = med(vals)
                best = self.best(key, better)
                direct = self.rows.get("direct", {}).get(key)
                cells += [fmt % m, (fmt + "–" + fmt) % (min(vals), max(vals)) if len(vals) > 1
                          else "-",
                          "%.2f" % (m / best) if best else "-",
                          "%.2f" % (m / med(direct)) if direct and direct[0] and med(direct)
                          else "-"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        return "\n".join(out)

    def best(self, key, better):
        """The best median among the peers that are not mailsplice and not direct."""
        vals = [med(c[key]) for p, c in self.rows.items()
                if not p.startswith("ms-") and p != "direct" and c.get(key) and c[key][0]]
        if not vals:
            return None
        return min(vals) if better == "low" else max(vals)

    def chart(self, path_png, key, label):
        """One bar per peer (median) with the min-max spread as an error bar."""
        rows = [(p, c[key]) for p, c in self.rows.items() if c.get(key) and c[key][0] is not None]
        if not rows or not shutil.which("gnuplot"):
            return False
        dat = path_png[:-4] + ".dat"
        with open(dat, "w") as f:
            for i, (p, vals) in enumerate(rows):
                f.write(f'{i} "{p}" {med(vals)} {min(vals)} {max(vals)}\n')
        gp = f"""set terminal pngcairo size 900,480 font ",10"
set output "{path_png}"
set title "{self.title}: {label}"
set style fill solid 0.6 border -1
set boxwidth 0.6
set yrange [0:*]
set grid ytics
set ylabel "{label}"
set xtics rotate by -30
plot "{dat}" using 1:3:xtic(2) with boxes notitle, \\
     "" using 1:3:4:5 with yerrorbars lc rgb "black" pt 0 notitle
"""
        r = subprocess.run(["gnuplot"], input=gp, text=True, capture_output=True)
        if r.returncode:
            print(f"  chart {path_png}: gnuplot: {r.stderr.strip()}")
        return r.returncode == 0


# ---------------------------------------------------------------- main

def machine_description(peers, load_start):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    lines = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- kernel: {platform.release()} ({platform.version()})",
             f"- CPU: {cpu}, {os.cpu_count()} CPUs; memory {mem} MiB",
             f"- descriptor limit: {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}",
             "- load average (1/5/15 min) at the start: %.2f %.2f %.2f, at the end: %.2f %.2f "
             "%.2f (other engineers' jobs share this machine)" % (load_start + os.getloadavg()),
             "- everything on loopback: client 127.0.0.5, proxies 127.0.0.4, backend 127.0.0.7",
             "- backend: bench/peers_backend.py (ours; Dovecot/Postfix would be the bottleneck)"]
    for p in peers:
        lines.append(f"- {p.name}: {p.describe}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each")
    ap.add_argument("--peers", default="direct,haproxy-best,haproxy,nginx-best,nginx,dovecot,"
                    "dovecot-shipped,ms-auto,ms-userspace,ms-sockmap")
    ap.add_argument("--workloads", default="fetch,data,noop,logins,idle")
    ap.add_argument("--rate", type=int, default=200, help="offered load for CPU runs, MB/s")
    ap.add_argument("--idle", type=int, default=9000, help="idle sessions (capped by fds)")
    ap.add_argument("--out", default=os.path.join(TOP, "bench", "results"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/peers.py: run as root (Dovecot and nginx bind as root; sockmap)")
    q = a.quick
    cpu_total = 256 * MIB if q else GIB
    flow = 64 * MIB if q else 256 * MIB
    runs_thr, runs_cpu = (1, 1) if q else (5, 3)
    pings, runs_rtt = (500, 1) if q else (5000, 3)
    login_s, runs_login = (2, 1) if q else (5, 3)
    rate = a.rate * 1000 * 1000
    workloads = a.workloads.split(",")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle_n = min(500 if q else a.idle, hard - 1000)

    state = tempfile.mkdtemp(prefix="ms-peers-")
    os.chmod(state, 0o755)
    pki = Pki(os.path.join(state, "pki"))
    cert, key = pki.issue("bench.test", ["bench.test", PROXY_ADDR, BACKEND_HOST])
    ctx = multiprocessing.get_context("fork")
    backend, shared = pb.start(ctx, BACKEND_HOST, BACKEND_BASE, cert, key)

    kinds = {"direct": Direct, "haproxy": HAProxy, "haproxy-best": HAProxyBest,
             "nginx": Nginx, "nginx-best": NginxBest, "dovecot": Dovecot,
             "dovecot-shipped": DovecotShipped}
    peers = []
    for i, name in enumerate(a.peers.split(",")):
        if name.startswith("ms-"):
            peers.append(Mailsplice(i, state, cert, key, name[3:]))
        elif name in kinds:
            peers.append(kinds[name](i, state, cert, key))
        else:
            sys.exit(f"unknown peer {name!r}")

    t_fetch = Table("Bulk backend→client: IMAP FETCH of 64 MiB messages",
                    f"Forwarding CPU = whole-machine busy CPU-s per GiB at {a.rate} MB/s offered "
                    "minus the direct run's (lower is better); proxy CPU = the proxy's own "
                    f"processes; MiB/s = one flow of {flow // MIB} MiB unpaced (higher is "
                    "better). Medians; spread = min–max.",
                    [("cpu", "fwd CPU-s/GiB plain", "low", "%.2f"),
                     ("pcpu", "proxy CPU-s/GiB plain", "low", "%.2f"),
                     ("thr", "MiB/s plain", "high", "%.0f"),
                     ("cpu_tls", "fwd CPU-s/GiB TLS", "low", "%.2f"),
                     ("pcpu_tls", "proxy CPU-s/GiB TLS", "low", "%.2f"),
                     ("thr_tls", "MiB/s TLS", "high", "%.0f")])
    t_data = Table("Bulk client→backend: SMTP DATA of 64 MiB messages",
                   "Submission = EHLO + AUTH PLAIN on a plain listener; port 25 = no "
                   "authentication. Same measures as the FETCH table. Dovecot is no SMTP proxy.",
                   [("cpu_sub", "fwd CPU-s/GiB submission", "low", "%.2f"),
                    ("pcpu_sub", "proxy CPU-s/GiB submission", "low", "%.2f"),
                    ("thr_sub", "MiB/s submission", "high", "%.0f"),
                    ("cpu_25", "fwd CPU-s/GiB port 25", "low", "%.2f"),
                    ("pcpu_25", "proxy CPU-s/GiB port 25", "low", "%.2f"),
                    ("thr_25", "MiB/s port 25", "high", "%.0f")])
    t_counts = Table("System calls and wake-ups of the proxy per GiB",
                     f"perf stat on every thread of the proxy's processes during one more "
                     f"paced run of each bulk workload ({a.rate} MB/s, separate from the CPU "
                     "runs: tracing costs CPU). syscalls = raw_syscalls:sys_enter; wake-ups "
                     "= epoll_wait + epoll_pwait entries, one per turn of an event loop. "
                     "Counts, unlike times, do not depend on the machine's load.",
                     [("sys_fetch", "syscalls/GiB FETCH", "low", "%.0f"),
                      ("wake_fetch", "wake-ups/GiB FETCH", "low", "%.0f"),
                      ("sys_fetch_tls", "syscalls/GiB FETCH TLS", "low", "%.0f"),
                      ("wake_fetch_tls", "wake-ups/GiB FETCH TLS", "low", "%.0f"),
                      ("sys_sub", "syscalls/GiB DATA", "low", "%.0f"),
                      ("wake_sub", "wake-ups/GiB DATA", "low", "%.0f"),
                      ("sys_25", "syscalls/GiB port 25", "low", "%.0f"),
                      ("wake_25", "wake-ups/GiB port 25", "low", "%.0f")])
    t_noop = Table("Small messages: IMAP NOOP round trips after login (µs)",
                   f"{pings} NOOPs per run after 100 warm-up; median over runs of each "
                   "percentile (lower is better).",
                   [("p50", "p50", "low", "%.0f"), ("p99", "p99", "low", "%.0f"),
                    ("p999", "p99.9", "low", "%.0f")])
    t_login = Table("TLS 1.3 IMAP logins (ECDSA P-256, full handshakes)",
                    f"2 client processes x 8 threads for {login_s} s per run, connect + "
                    "handshake + greeting + LOGIN + LOGOUT; CPU-ms = whole-machine busy time "
                    "per login, client and backend included (the same for every peer); "
                    "proxy CPU-ms = the proxy's own processes (1000 / it = logins/s per "
                    "core the proxy could take: the Python client saturates first); "
                    "latency = one login alone, connect to the tagged OK (median of 50).",
                    [("rate", "logins/s", "high", "%.0f"), ("cpu", "CPU-ms/login", "low", "%.2f"),
                     ("pcpu", "proxy CPU-ms/login", "low", "%.2f"),
                     ("latency", "login ms", "low", "%.1f")])
    t_idle = Table(f"Idle logged-in TLS IMAP sessions ({idle_n})",
                   "RSS = growth of the proxy's processes' RSS per session; slab = growth of "
                   "kernel slab per session (both ends of both legs, client and backend "
                   "sockets included, the same for every peer); idle CPU = the proxy's CPU "
                   "ms per second while every session is idle. One run.",
                   [("rss", "proxy RSS B/session", "low", "%.0f"),
                    ("slab", "kernel slab B/session", "low", "%.0f"),
                    ("idle_cpu", "proxy idle CPU ms/s", "low", "%.2f")])

    print(f"bench/peers.py: kernel {platform.release()}, {os.cpu_count()} CPUs, "
          f"state in {state}", flush=True)
    t_start = time.monotonic()
    load_start = os.getloadavg()
    try:
        for peer in peers:
            try:
                peer.start()
            except Exception as e:  # reported, the others still run
                print(f"  {peer.name}: not measured: {e}", flush=True)
                peer.describe = f"not measured: {str(e).splitlines()[0]}"
                peer.stop()
                continue
            load = os.getloadavg()
            peer.describe += f" [load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at its start]"
            print(f"  {peer.name}: {peer.describe}", flush=True)
            try:
                run_peer(peer, shared, workloads, t_fetch, t_data, t_noop, t_login, t_idle,
                         t_counts, cpu_total, flow, runs_thr, runs_cpu, pings, runs_rtt,
                         login_s, runs_login, rate, idle_n)
            except Exception as e:
                print(f"  {peer.name}: stopped by {type(e).__name__}: {e}", flush=True)
            finally:
                peer.stop()
                wait_backend_quiet(shared, peer.name)
    finally:
        backend.terminate()
        backend.join(5)

    # forwarding CPU: minus the direct run's busy CPU (client + backend + loopback)
    for table, pairs in ((t_fetch, (("cpu", "cpu"), ("cpu_tls", "cpu_tls"))),
                         (t_data, (("cpu_sub", "cpu_sub"), ("cpu_25", "cpu_25")))):
        d = table.rows.get("direct", {})
        for key, _ in pairs:
            if key not in d:
                continue
            base = med(d[key])
            for peer, cols in table.rows.items():
                if key in cols and cols[key][0] is not None:
                    cols[key] = [v - base for v in cols[key]]

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    outdir = os.path.join(a.out, f"peers-{stamp}{'-quick' if q else ''}")
    os.makedirs(outdir, exist_ok=True)
    desc = machine_description(peers, load_start)
    parts = [f"# mailsplice vs peers, {stamp}", "", desc, "",
             f"Run time {time.monotonic() - t_start:.0f} s. Numbers, never pass/fail; the "
             "machine is shared: differences below ~20 % need a second run.", ""]
    charts = [(t_fetch, "fetch", "thr", "MiB/s plain"),
              (t_fetch, "fetch-cpu", "cpu", "fwd CPU-s/GiB plain"),
              (t_data, "data", "thr_sub", "MiB/s submission"),
              (t_data, "data-cpu", "pcpu_sub", "proxy CPU-s/GiB submission"),
              (t_fetch, "fetch-proxy-cpu", "pcpu", "proxy CPU-s/GiB FETCH plain"),
              (t_counts, "syscalls", "sys_fetch", "syscalls/GiB FETCH plain"),
              (t_noop, "noop", "p50", "p50 µs"),
              (t_login, "logins", "rate", "logins/s"),
              (t_idle, "idle", "rss", "proxy RSS B/session")]
    for t in (t_fetch, t_data, t_counts, t_noop, t_login, t_idle):
        if t.rows:
            parts.append(t.markdown())
    for t, name, key, label in charts:
        if t.rows and t.chart(os.path.join(outdir, name + ".png"), key, label):
            parts.append(f"![{name}]({name}.png)")
    text = "\n".join(parts) + "\n"
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"written to {outdir}")


def run_peer(peer, shared, workloads, t_fetch, t_data, t_noop, t_login, t_idle, t_counts,
             cpu_total, flow, runs_thr, runs_cpu, pings, runs_rtt, login_s, runs_login, rate,
             idle_n):
    name = peer.name
    skip = getattr(peer, "skip", {})
    for w in workloads:
        if w in skip:
            print(f"    {w}: not run for {name}: {skip[w]}", flush=True)
    workloads = [w for w in workloads if w not in skip]
    if "fetch" in workloads:
        for tls, ck, pk, tk, sk in ((False, "cpu", "pcpu", "thr", "fetch"),
                                    (True, "cpu_tls", "pcpu_tls", "thr_tls", "fetch_tls")):
            if (peer.imaps if tls else peer.imap) is None:
                continue
            cpus = [fetch_cpu(peer, shared, tls, cpu_total, rate) for _ in range(runs_cpu)]
            t_fetch.add(name, ck, [c[0] for c in cpus])
            if pk:
                t_fetch.add(name, pk, [c[1] for c in cpus] if peer.pids() else [None])
            sys_gib, wake_gib = fetch_cpu(peer, shared, tls, cpu_total, rate, counts=True)
            t_counts.add(name, "sys_" + sk, [sys_gib])
            t_counts.add(name, "wake_" + sk, [wake_gib])
            t_fetch.add(name, tk, [fetch_throughput(peer, shared, tls, flow)
                                   for _ in range(runs_thr)])
        print("    fetch done", flush=True)
    if "data" in workloads:
        for target, auth, ck, pk, tk, sk in (
                (peer.submission, True, "cpu_sub", "pcpu_sub", "thr_sub", "sub"),
                (peer.smtp25, False, "cpu_25", "pcpu_25", "thr_25", "25")):
            if target is None:
                t_data.add(name, ck, [None])
                continue
            cpus = [data_cpu(peer, target, auth, cpu_total, rate) for _ in range(runs_cpu)]
            t_data.add(name, ck, [c[0] for c in cpus])
            if pk:
                t_data.add(name, pk, [c[1] for c in cpus] if peer.pids() else [None])
            sys_gib, wake_gib = data_cpu(peer, target, auth, cpu_total, rate, counts=True)
            t_counts.add(name, "sys_" + sk, [sys_gib])
            t_counts.add(name, "wake_" + sk, [wake_gib])
            t_data.add(name, tk, [data_throughput(target, auth, flow) for _ in range(runs_thr)])
        print("    data done", flush=True)
    if "noop" in workloads:
        r = [noop_rtt(peer, pings) for _ in range(runs_rtt)]
        for i, k in enumerate(("p50", "p99", "p999")):
            t_noop.add(name, k, [x[i] for x in r])
        print("    noop done", flush=True)
    if "logins" in workloads:
        r = [logins(peer, login_s, 2, 8) for _ in range(runs_login)]
        t_login.add(name, "rate", [x[0] for x in r])
        t_login.add(name, "cpu", [x[1] for x in r])
        t_login.add(name, "pcpu", [x[2] for x in r] if peer.pids() else [None])
        t_login.add(name, "latency", [login_latency(peer, 50) for _ in range(runs_login)])
        print("    logins done", flush=True)
    if "idle" in workloads:
        r = idle_sessions(peer, idle_n)
        for k in ("rss", "slab", "idle_cpu"):
            t_idle.add(name, k, [r[k]])
        print(f"    idle done: {idle_n} sessions opened in {r['open_s']:.0f} s, "
              f"{r['checked']} checked alive", flush=True)


if __name__ == "__main__":
    main()
