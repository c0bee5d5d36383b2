#!/usr/bin/python3
"""Soak: minutes of churn across every protocol, with remaps and kicks, against the
ASan build of the daemon (`make soak SOAK_SECONDS=600`). Not a test: it prints numbers.

Starts the project's real backend stacks (legacy Dovecot + Postfix over XCLIENT, new
stack over PROXY v2, as in `make demo`) and mailspliced in front, then for the duration:

  - churn workers open and finish sessions, round robin: IMAPS (LOGIN, SELECT, NOOP,
    LOGOUT), POP3S (USER/PASS, STAT, QUIT), submission (STARTTLS, AUTH PLAIN, a message),
    ManageSieve (capabilities, LOGOUT), SMTP 25 (EHLO, QUIT), and a hostile line;
  - `--idle` connections sit in the TLS login phase (re-opened when the proxy's
    preauth_timeout closes them) and `--held` IMAP sessions stay logged in;
  - every 3 s alice is remapped between the stacks and her sessions are kicked.

At the end every client is closed, the daemon's fd count and RSS are compared with the
values after the warm-up, the daemon is stopped with SIGTERM, and its log is searched
for sanitizer reports. Exit status 0 only if no unexpected session failed, fds came
back, and the daemon exited 0 with no sanitizer report.
"""

import argparse
import os
import random
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.harness.backends import (MailStack, check_world_traversable,  # noqa: E402
                                    missing_prerequisites, start_stacks, stop_stacks)
from tests.harness.pki import Pki  # noqa: E402

STATE = "/tmp/mailsplice-soak"
OFFSET = 30000
PROXY = "127.0.0.4"
CLIENT = "127.0.0.5"
PORTS = {"imaps": 31993, "pop3s": 31995, "submission": 31587, "sieve": 34190, "smtp": 31025,
         "admin": 39443}
USERS = {"alice@example.org": "alice-pw", "bob@example.org": "bob-pw",
         "dave@example.org": "dave-pw", "erin@example.org": "erin-pw"}


def config(legacy, new, cert, key, token_file, mappings):
    def dest(name, stack, forwarding, imap_tls):
        return f"""
[destination.{name}]
host = "{stack.address}"
tls_server_name = "{stack.hostname}"
forwarding = "{forwarding}"

[destination.{name}.protocol.imap]
port = {stack.ports["imaps"] if imap_tls == "implicit" else stack.ports["imap"]}
tls = "{imap_tls}"
[destination.{name}.protocol.pop3]
port = {stack.ports["pop3s"]}
tls = "implicit"
[destination.{name}.protocol.submission]
port = {stack.ports["submission"]}
tls = "starttls"
[destination.{name}.protocol.managesieve]
port = {stack.ports["sieve"]}
tls = "starttls"
[destination.{name}.protocol.smtp]
port = {stack.ports["smtp"]}
tls = "plain"
"""
    listeners = "".join(f"""
[listener.{n}]
protocol = "{p}"
bind = ["{PROXY}:{PORTS[n]}"]
tls = "{t}"
max_connections = 20000
preauth_timeout = "20s"
""" for n, p, t in (("imaps", "imap", "implicit"), ("pop3s", "pop3", "implicit"),
                    ("submission", "submission", "starttls"), ("sieve", "managesieve", "starttls"),
                    ("smtp", "smtp", "plain")))
    return f"""
[server]
threads = 2
hostname = "mail.soak.test"
log_level = "info"
shutdown_grace = "5s"
host_down_threshold = 0

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"
smtp_passthrough_destination = "legacy"

[mapping]
source = "file"
normalize = "lowercase"

[mapping.file]
path = "{mappings}"
{dest("legacy", legacy, "xclient", "starttls")}{dest("new", new, "proxy", "implicit")}{listeners}
[admin]
bind = "{PROXY}:{PORTS["admin"]}"
tls = "implicit"
bearer_token_file = "{token_file}"
"""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok, self.failed, self.kicked = {}, {}, 0
        self.failures = []

    def add(self, kind, ok, why=None, alice=False):
        with self.lock:
            if ok:
                self.ok[kind] = self.ok.get(kind, 0) + 1
            elif alice:
                self.kicked += 1  # alice's sessions are kicked on purpose
            else:
                self.failed[kind] = self.failed.get(kind, 0) + 1
                if len(self.failures) < 20:
                    self.failures.append(f"{kind}: {why}")


def tcp(port):
    s = socket.create_connection((PROXY, port), timeout=20, source_address=(CLIENT, 0))
    return s


def lines(f, stop):
    while True:
        line = f.readline()
        if not line:
            raise EOFError("closed")
        if stop(line):
            return line


class Client:
    def __init__(self, ca):
        self.ctx = ssl.create_default_context(cafile=ca)

    def tls(self, port):
        return self.ctx.wrap_socket(tcp(port), server_hostname="mail.soak.test")

    def imaps(self, user):
        s = self.tls(PORTS["imaps"])
        f = s.makefile("rwb")
        f.readline()
        for tag, cmd in (("a", f"LOGIN {user} {USERS[user]}"), ("b", "SELECT INBOX"),
                         ("c", "NOOP"), ("d", "LOGOUT")):
            f.write(f"{tag} {cmd}\r\n".encode())
            f.flush()
            line = lines(f, lambda x: x.startswith(tag.encode() + b" "))
            if not line.startswith(tag.encode() + b" OK"):
                raise RuntimeError(line[:80])
        s.close()

    def pop3s(self, user):
        s = self.tls(PORTS["pop3s"])
        f = s.makefile("rwb")
        for cmd in (None, f"USER {user}", f"PASS {USERS[user]}", "STAT", "QUIT"):
            if cmd:
                f.write(cmd.encode() + b"\r\n")
                f.flush()
            line = f.readline()
            if not line.startswith(b"+OK"):
                raise RuntimeError(f"{cmd}: {line[:80]!r}")
        s.close()

    def submission(self, user):
        class Smtp(smtplib.SMTP):
            def _get_socket(self, host, port, timeout):
                return tcp(port)
        with Smtp(PROXY, PORTS["submission"], local_hostname="soak.test", timeout=20) as s:
            s.starttls(context=self.ctx)
            s.login(user, USERS[user])
            s.sendmail(user, ["dave@example.org"],
                       f"From: {user}\r\nSubject: soak\r\n\r\nsoak {time.time()}\r\n")

    def sieve(self, user):
        s = tcp(PORTS["sieve"])
        f = s.makefile("rwb")
        lines(f, lambda x: x.startswith(b"OK"))
        f.write(b"LOGOUT\r\n")
        f.flush()
        lines(f, lambda x: x.startswith(b"OK") or x.startswith(b"BYE"))
        s.close()

    def smtp(self, user):
        s = tcp(PORTS["smtp"])
        f = s.makefile("rwb")
        lines(f, lambda x: x[3:4] == b" ")
        f.write(b"EHLO soak.test\r\n")
        f.flush()
        lines(f, lambda x: x[3:4] == b" ")
        f.write(b"QUIT\r\n")
        f.flush()
        lines(f, lambda x: x[3:4] == b" ")
        s.close()

    def hostile(self, user):
        s = self.tls(PORTS["imaps"])
        f = s.makefile("rwb")
        f.readline()
        f.write(b"x LOGIN {4294967295}\r\n" + b"A" * 9000 + b"\r\n\x00\r\ny LOGOUT\r\n")
        f.flush()
        s.settimeout(20)
        # BAD replies, then BYE and the close (or a close at once): both are right
        while f.readline():
            pass
        s.close()


def admin(token, ca, method, path):
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(f"https://{PROXY}:{PORTS['admin']}{path}", method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
        return r.read().decode()


def proc_numbers(pid):
    """(RSS kB, sockets): pipes are left out, the relay keeps a bounded pool of them."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    socks = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            socks += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return rss, socks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--idle", type=int, default=2000, help="TLS connections idle before login")
    ap.add_argument("--held", type=int, default=15,
                    help="IMAP sessions held logged in (Dovecot allows 10 per user and address)")
    ap.add_argument("--daemon", default=os.environ.get("MS_DAEMON") or
                    os.path.join(TOP, "build", "asan", "mailspliced"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: run as root (real Dovecot and Postfix on loopback)")
        return 1
    problems = missing_prerequisites()
    if problems:
        print("soak: " + "; ".join(problems))
        return 1
    if os.path.exists(STATE):
        print(f"soak: {STATE} exists (another soak running, or a killed one): remove it")
        return 1
    os.makedirs(STATE)
    os.chmod(STATE, 0o755)
    check_world_traversable(STATE)
    stacks, proxy, rc = [], None, 1
    try:
        pki = Pki(os.path.join(STATE, "pki"))
        cert, key = pki.issue("mail.soak.test", ["mail.soak.test", PROXY])
        for name, addr, mode in (("legacy", "127.0.0.2", "xclient"), ("new", "127.0.0.3", "proxy")):
            host = f"{name}.soak.test"
            c, k = pki.issue(host, [host, addr])
            stacks.append(MailStack(name, addr, mode, STATE, port_offset=OFFSET, cert=c, key=k,
                                    ca_file=pki.ca_file, hostname=host))
        print("soak: starting the backend stacks ...", flush=True)
        start_stacks(*stacks)
        token = "soak-" + os.urandom(16).hex()
        token_file = os.path.join(STATE, "admin.token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (token + "\n").encode())
        os.close(fd)
        mappings = os.path.join(STATE, "mappings.tsv")
        open(mappings, "w").write("# soak\n")
        cfg = os.path.join(STATE, "mailsplice.toml")
        open(cfg, "w").write(config(stacks[0], stacks[1], cert, key, token_file, mappings))
        log_path = os.path.join(STATE, "mailspliced.log")
        log = open(log_path, "ab")
        env = dict(os.environ, SSL_CERT_FILE=pki.ca_file,
                   # a small quarantine, so that RSS still says something under ASan
                   ASAN_OPTIONS="detect_leaks=1:exitcode=99:quarantine_size_mb=16",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        proxy = subprocess.Popen([a.daemon, "-c", cfg], stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while b"event=started" not in open(log_path, "rb").read():
            if proxy.poll() is not None or time.monotonic() > deadline:
                print(open(log_path, errors="replace").read()[-3000:])
                print("soak: mailspliced did not start")
                return 1
            time.sleep(0.1)
        print(f"soak: {a.daemon} (pid {proxy.pid}) up; {a.seconds}s, {a.workers} workers, "
              f"{a.idle} idle, {a.held} held", flush=True)

        rss_start, socks_start = proc_numbers(proxy.pid)
        client = Client(pki.ca_file)
        stats = Stats()
        stop = threading.Event()
        kinds = ["imaps", "pop3s", "submission", "sieve", "smtp", "hostile"]

        def churn(seed):
            rnd = random.Random(seed)
            while not stop.is_set():
                kind = rnd.choice(kinds)
                user = rnd.choice(list(USERS))
                try:
                    getattr(client, kind)(user)
                    stats.add(kind, True)
                except Exception as e:  # noqa: BLE001
                    stats.add(kind, False, repr(e)[:160], alice=user.startswith("alice"))

        idle_socks, held = [], []
        idle_lock = threading.Lock()

        def idler():
            # keep `idle` TLS connections in the login phase; the proxy closes them at
            # preauth_timeout and they are opened again
            while not stop.is_set():
                with idle_lock:
                    alive = []
                    for s in idle_socks:
                        try:
                            s.setblocking(False)
                            if s.recv(1, socket.MSG_PEEK) == b"":
                                s.close()
                                continue
                        except (BlockingIOError, ssl.SSLWantReadError):
                            pass
                        except OSError:
                            s.close()
                            continue
                        alive.append(s)
                    idle_socks[:] = alive
                while len(idle_socks) < a.idle and not stop.is_set():
                    try:
                        s = tcp(PORTS["imaps"])
                        idle_socks.append(s)
                    except OSError:
                        break
                stop.wait(1)

        for i in range(a.held):
            s = client.tls(PORTS["imaps"])
            f = s.makefile("rwb")
            f.readline()
            user = ("bob@example.org", "dave@example.org", "erin@example.org")[i % 3]
            f.write(f"h LOGIN {user} {USERS[user]}\r\n".encode())
            f.flush()
            lines(f, lambda x: x.startswith(b"h "))
            held.append(f)  # the file object: closing it (and s) really closes the socket
            held.append(s)
        kicks = remaps = 0
        threads = [threading.Thread(target=churn, args=(i,)) for i in range(a.workers)]
        threads.append(threading.Thread(target=idler))
        for t in threads:
            t.start()
        time.sleep(min(30, a.seconds / 4))
        rss0, fds0 = proc_numbers(proxy.pid)
        print(f"soak: at start RSS {rss_start} kB, {socks_start} sockets; after warm-up "
              f"RSS {rss0} kB, {fds0} sockets", flush=True)
        t0 = time.monotonic()
        peak = rss0
        where = "new"
        while time.monotonic() - t0 < a.seconds and proxy.poll() is None:
            admin(token, pki.ca_file, "PUT",
                  f"/mappings?identifier=alice@example.org&destination={where}")
            remaps += 1
            out = admin(token, pki.ca_file, "POST", "/connections/kick?identifier=alice@example.org")
            kicks += int(out.split()[-1])
            where = "legacy" if where == "new" else "new"
            peak = max(peak, proc_numbers(proxy.pid)[0])
            time.sleep(3)
        stop.set()
        for t in threads:
            t.join(120)
        for s in idle_socks + held:
            s.close()
        time.sleep(25)  # sessions whose client closed end; pre-login ones time out
        rss1, fds1 = proc_numbers(proxy.pid)
        total_ok = sum(stats.ok.values())
        print(f"\nsoak: {a.seconds}s  sessions ok {total_ok}  "
              f"({total_ok / a.seconds:.0f}/s)  remaps {remaps}  kicked {kicks}")
        for k in kinds:
            print(f"  {k:<11} ok {stats.ok.get(k, 0):>7}  failed {stats.failed.get(k, 0)}")
        print(f"  alice's sessions cut by kicks: {stats.kicked}")
        print(f"  RSS kB:  at start {rss_start}, after warm-up {rss0}, peak {peak}, "
              f"after the clients left {rss1}")
        print(f"  sockets: at start {socks_start}, after warm-up {fds0} ({a.idle} idle + "
              f"{a.held} held open), after the clients left {fds1}")
        for f in stats.failures:
            print("  failure: " + f)
        if fds1 > socks_start:
            # which sockets are left, and in what state (the first one only is the admin API's)
            ss = subprocess.run(["ss", "-tanpi"], capture_output=True, text=True).stdout
            for line in ss.splitlines():
                if f"pid={proxy.pid}," in line:
                    print("  left: " + " ".join(line.split()[:6]))
            print(admin(token, pki.ca_file, "GET", "/sessions")[:2000])
        proxy.send_signal(signal.SIGTERM)
        status = proxy.wait(60)
        text = open(log_path, errors="replace").read()
        reports = [w for w in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
                   if w in text]
        print(f"  daemon exit status {status}; sanitizer reports: {reports or 'none'}")
        ok = not stats.failed and status == 0 and not reports and fds1 <= socks_start
        print("soak: " + ("PASS" if ok else "FAIL") + f" (state in {STATE})")
        rc = 0 if ok else 1
        return rc
    finally:
        if proxy is not None and proxy.poll() is None:
            proxy.kill()
            proxy.wait()
        if stacks:
            stop_stacks(*stacks, ignore_errors=True)
        if rc == 0:
            shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
