"""Real Dovecot + Postfix backends on loopback, started and stopped by the tests.

A MailStack is one Dovecot (IMAP, POP3, ManageSieve, LMTP, and its auth service on TCP for
Postfix) plus one Postfix (port 25 delivering the test domain over LMTP to that Dovecot,
port 587 submission with STARTTLS required and SASL through Dovecot), all bound to one
loopback address. Every file they use (configs, logs, maildirs, queue, pid files) lives
under <state_dir>/<name>/; nothing under /etc, /run or /var is touched, and no systemd.

Two modes stand for the two kinds of backend the proxy talks to:
  "xclient"  the legacy stack. Dovecot trusts `trusted` (login_trusted_networks) for
             IMAP ID and POP3/ManageSieve XCLIENT; Postfix trusts it for XCLIENT.
  "proxy"    the new server. The Dovecot login listeners (imap, imaps, pop3, pop3s,
             sieve) and Postfix 25/587 require a PROXY v1/v2 header; Dovecot accepts it
             only from `trusted`, Postfix from anyone (it has no such list).

Tests assert on the backends' own evidence: log_mark() + wait_log() on dovecot.log /
postfix.log, and messages() / sieve_scripts() on disk.

The recipe (and why each odd setting is here) comes from
../shared/notes/real-backends/README.md; the numbers in the comments ("pitfall 4")
refer to its list of pitfalls.
"""

import grp
import ipaddress
import json
import os
import pty
import pwd
import re
import select
import shutil
import signal
import subprocess
import threading
import time

from .pki import Pki, fingerprint_sha256

DOVECOT_BIN = "/usr/sbin/dovecot"
DOVEADM_BIN = "/usr/bin/doveadm"
POSTFIX_BIN = "/usr/sbin/postfix"
# What /proc/PID/exe of the Postfix master points to (postfix(1) execs it via postfix-script).
POSTFIX_MASTER_BIN = "/usr/lib/postfix/sbin/master"
DOVECOT_DH_PARAMS = "/usr/share/dovecot/dh.pem"
SS_BIN = "ss"

BASE_PORTS = {
    "imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "sieve": 4190,
    "lmtp": 24, "auth": 12345, "smtp": 25, "submission": 587,
}
DOVECOT_SERVICES = ("imap", "imaps", "pop3", "pop3s", "sieve", "lmtp", "auth")
POSTFIX_SERVICES = ("smtp", "submission")
MODES = ("xclient", "proxy")

MAIL_DOMAIN = "example.org"
DEFAULT_USERS = {
    "alice@example.org": "alice-pw",
    "bob@example.org": "bob-pw",
    "carol": "carol-pw",  # a bare localpart: logins work, but it has no mail address
    "dave@example.org": "dave-pw",
    "erin@example.org": "erin-pw",
}
DEFAULT_MASTER_USER = ("vmadmin", "vmadmin-pw")
MASTER_USER_SEPARATOR = "%"
DEFAULT_TRUSTED = ("127.0.0.1/32",)

# Debian's "mail" user (uid 8) owns every maildir, so the tests need no account of their own.
MAIL_OWNER = "mail"
# System accounts the daemons switch to; created by the Debian packages.
REQUIRED_USERS = ("dovecot", "dovenull", "postfix", MAIL_OWNER)
REQUIRED_GROUPS = ("postdrop",)

# Unix socket paths are limited to 108 bytes; Dovecot puts sockets up to about
# 30 bytes deep below base_dir (e.g. "login/imap-urlauth", "token-login/...").
_SOCKET_HEADROOM = 32
_UNIX_PATH_MAX = 107

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# The daemons inherit nothing from the test process but a sane PATH and locale.
_DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}


class BackendError(RuntimeError):
    """A backend could not be started or stopped; the message carries the log tails."""


def missing_prerequisites():
    """Why real backends cannot run here, as a list of sentences (empty when they can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root (the Dovecot and Postfix masters must start as root "
                        "and drop privileges themselves)")
    for path in (DOVECOT_BIN, DOVEADM_BIN, POSTFIX_BIN, POSTFIX_MASTER_BIN, DOVECOT_DH_PARAMS):
        if not os.path.exists(path):
            problems.append(f"{path} is missing (apt-get install dovecot-core dovecot-imapd dovecot-pop3d "
                            "dovecot-managesieved dovecot-sieve dovecot-lmtpd postfix)")
    for tool in (SS_BIN, "openssl"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH (apt-get install iproute2 openssl)")
    for user in REQUIRED_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            problems.append(f"system user {user!r} is missing (it is created by the Debian packages)")
    for group in REQUIRED_GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            problems.append(f"system group {group!r} is missing (it is created by the postfix package)")
    return problems


def check_world_traversable(path):
    """Raise unless every directory above `path` has o+x (pitfall 6): auth runs as
    "dovecot", login processes as "dovenull", mail as "mail" and Postfix as "postfix", and
    all of them must reach their files. mkdtemp() and /root are 0700."""
    p = os.path.dirname(os.path.abspath(path))
    while True:
        mode = os.stat(p).st_mode
        if not mode & 0o001:
            raise BackendError(f"{p} is not world-traversable (mode {mode & 0o7777:04o}); the unprivileged "
                               f"Dovecot and Postfix processes could not reach {path}. Use a state directory "
                               "under /tmp with 0755 parents.")
        if p == "/":
            return
        p = os.path.dirname(p)


def listening_sockets():
    """Every TCP listener on the machine as a set of (address, port), read with ss(8).

    ss rather than connect(): a probe connection would leave "Disconnected: no auth
    attempts" lines in the very logs the tests read (pitfall 14)."""
    out = subprocess.run([SS_BIN, "-Hltn"], capture_output=True, text=True, check=True).stdout
    result = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        addr, _, port = fields[3].rpartition(":")
        addr = addr.strip("[]").split("%")[0]  # "[::1]:25", "0.0.0.0%lo:25"
        if port.isdigit():
            result.add((addr, int(port)))
    return result


def _tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"  ({path} does not exist)"
    body = "\n".join("  " + ln for ln in text.splitlines()[-lines:])
    return body or f"  ({path} is empty)"


def _read_pid(path):
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            digits = "".join(ch for ch in f.read() if ch.isdigit())
    except FileNotFoundError:
        return None
    return int(digits) if digits else None


def _proc_stat(pid):
    """(state, pgid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def _alive(pid):
    # The masters daemonize and are re-parented to pid 1, which may never reap them:
    # a zombie has exited as far as we are concerned.
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _process_group(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def _wait_gone(pids, deadline):
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _run_on_pty(argv, timeout):
    """Run argv with stdout/stderr on a pseudo-terminal -> (exit status, output).

    postfix(1) prints its errors on stderr only when stderr is a terminal; otherwise
    it exits 1 and the reason goes to a log that may not exist yet (pitfall 2)."""
    master_fd, slave_fd = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd,
                                env=_DAEMON_ENV)
    finally:
        os.close(slave_fd)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master_fd], [], [], 0.02)
            if ready:
                try:
                    chunk = os.read(master_fd, 65536)
                except OSError:  # EIO: every slave descriptor is closed
                    chunk = b""
                if chunk:
                    output += chunk
                    continue
                # Nothing more can arrive; don't let select() spin on the dead pty.
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is not None:
                # The command is done. A daemon it started may still hold the slave
                # side open, so stop here instead of waiting for EOF.
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                output += f"\n(killed after {timeout:.0f}s)".encode()
                break
    finally:
        os.close(master_fd)
    return proc.returncode, output.decode("utf-8", "replace").replace("\r\n", "\n")


class MailStack:
    """One Dovecot + one Postfix on `address`, with all state under <state_dir>/<name>/.

    name      "legacy" / "new" (any short word: it names the directory, the Dovecot
              instance and the Postfix syslog_name "postfix-<name>")
    mode      "xclient" or "proxy" (see the module docstring)
    trusted   CIDRs of the proxy under test
    cert/key  the TLS certificate both daemons present; by default one is issued by
              the Pki in <state_dir>/pki for the SANs <name>.rb.test and `address`
    ca_file   the CA that signed `cert`, when known (recorded in describe())
    """

    def __init__(self, name, address, mode, state_dir, *, trusted=DEFAULT_TRUSTED, port_offset=0,
                 users=None, master_user=DEFAULT_MASTER_USER, cert=None, key=None, ca_file=None,
                 hostname=None):
        if mode not in MODES:
            raise ValueError(f"MailStack {name!r}: mode must be one of {MODES}, not {mode!r}")
        if not re.match(r"^[a-z][a-z0-9-]*$", name):
            raise ValueError(f"MailStack name {name!r}: use lowercase letters, digits and '-'")
        if (cert is None) != (key is None):
            raise ValueError(f"MailStack {name!r}: give both cert and key, or neither")
        self.name = name
        self.address = str(ipaddress.ip_address(address))
        self.mode = mode
        self.trusted = [str(ipaddress.ip_network(c, strict=False)) for c in
                        ([trusted] if isinstance(trusted, str) else trusted)]
        self.port_offset = int(port_offset)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.master_user = tuple(master_user)
        self.hostname = hostname or f"{name}.rb.test"
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.state_dir = os.path.abspath(state_dir)
        self.ports = {svc: port + self.port_offset for svc, port in BASE_PORTS.items()}
        self.timings = {}
        # Pids a previous process recorded (describe() -> from_description()): used by
        # stop() when a master's own pid file has gone missing.
        self.recorded_pids = {}

        d = self.dir = os.path.join(self.state_dir, name)
        self.etc_dir = os.path.join(d, "etc")
        self.log_dir = os.path.join(d, "log")
        self.run_dir = os.path.join(d, "run")          # Dovecot base_dir (sockets, master.pid)
        self.dovecot_state_dir = os.path.join(d, "state")
        self.mail_dir = os.path.join(d, "mail")        # one home directory per user
        self.postfix_dir = os.path.join(d, "postfix")
        self.postfix_etc = os.path.join(self.postfix_dir, "etc")
        self.postfix_queue = os.path.join(self.postfix_dir, "spool")
        self.postfix_data = os.path.join(self.postfix_dir, "data")
        self.dovecot_conf = os.path.join(self.etc_dir, "dovecot.conf")
        self.dovecot_log = os.path.join(self.log_dir, "dovecot.log")
        self.postfix_log = os.path.join(self.log_dir, "postfix.log")
        self.dovecot_start_log = os.path.join(self.log_dir, "dovecot-start.log")
        self.postfix_start_log = os.path.join(self.log_dir, "postfix-start.log")
        self.dovecot_pid_file = os.path.join(self.run_dir, "master.pid")
        self.postfix_pid_file = os.path.join(self.postfix_queue, "pid", "master.pid")

    def __repr__(self):
        return f"MailStack({self.name!r}, {self.address!r}, {self.mode!r}, {self.dir!r})"

    # ---------------------------------------------------------------- start / stop

    def start(self):
        """Write the configs, start Dovecot and Postfix, return once every port listens.
        Raises BackendError with the relevant log tails (after stopping whatever did start)."""
        t0 = time.monotonic()
        problems = missing_prerequisites()
        if problems:
            raise BackendError(f"{self.name} stack cannot start:\n  " + "\n  ".join(problems))
        if len(self.run_dir) + _SOCKET_HEADROOM > _UNIX_PATH_MAX:
            raise BackendError(f"{self.name} stack: state directory {self.state_dir} is too long for "
                               f"Dovecot's unix sockets under {self.run_dir}; use a shorter path")
        self._refuse_if_running()
        self._refuse_busy_ports()
        self._prepare_directories()
        self._ensure_cert()
        self._write_passwd_files()
        self._write(self.dovecot_conf, self._dovecot_conf(), 0o644)
        for filename, text in (("main.cf", self._postfix_main_cf()),
                               ("master.cf", self._postfix_master_cf())):
            path = os.path.join(self.postfix_etc, filename)
            self._write(path, text, 0o644)
            # Postfix will not read a file changed in the last second or two: it sleeps in
            # 0.3 s steps until the file "stops changing" (2.5 s per start, measured).
            # These files are complete once written, so date them back.
            past = time.time() - 60
            os.utime(path, (past, past))

        # Postfix needs Dovecot's LMTP and auth only once mail or a login arrives, so the
        # two start side by side. Postfix is the slower one: "postfix start" runs its
        # integrity checks (0.5 s), and creates the queue the first time (1 s more).
        errors = _run_parallel({"dovecot": lambda: self._start_dovecot(t0),
                                "postfix": lambda: self._start_postfix(t0)})
        if errors:
            try:
                self.stop()
            except BackendError as e:
                errors["cleanup"] = e
            raise BackendError(f"{self.name} stack on {self.address} failed to start:\n\n"
                               + "\n\n".join(str(e) for e in errors.values()))
        self.timings["start"] = time.monotonic() - t0
        return self

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop both masters by the pids in their own pid files, after checking that each
        pid is really our master (binary + config path), never by name. Waits until they
        and everything left in their process groups are gone. Safe to call twice."""
        t0 = time.monotonic()
        errors = _run_parallel({daemon: lambda d=daemon: self._stop_master(d, timeout)
                                for daemon in ("dovecot", "postfix")})
        self.timings["stop"] = time.monotonic() - t0
        if errors:
            raise BackendError(f"{self.name} stack: " + "\n".join(str(e) for e in errors.values()))

    def pids(self):
        """{"dovecot": pid or None, "postfix": pid or None}: the masters that run and are ours."""
        return {daemon: self._find_master(daemon)[0] for daemon in ("dovecot", "postfix")}

    def _start_dovecot(self, t0):
        deadline = time.monotonic() + START_TIMEOUT
        with open(self.dovecot_start_log, "ab") as out:
            # The daemonized master keeps the stdio it was given open forever (pitfall 5):
            # never hand it a pipe we would wait on.
            proc = subprocess.run([DOVECOT_BIN, "-c", self.dovecot_conf], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=out, env=_DAEMON_ENV, timeout=START_TIMEOUT)
        if proc.returncode != 0:
            raise BackendError(f"dovecot -c {self.dovecot_conf} exited with status {proc.returncode}\n"
                               f"{self.dovecot_start_log}:\n{_tail(self.dovecot_start_log, 15)}\n"
                               f"{self.dovecot_log}:\n{_tail(self.dovecot_log, 15)}")
        self._wait_started("dovecot", self.dovecot_pid_file, DOVECOT_SERVICES, deadline,
                           [self.dovecot_start_log, self.dovecot_log])
        self.timings["dovecot"] = time.monotonic() - t0

    def _start_postfix(self, t0):
        deadline = time.monotonic() + START_TIMEOUT
        status, output = _run_on_pty([POSTFIX_BIN, "-c", self.postfix_etc, "start"], START_TIMEOUT)
        with open(self.postfix_start_log, "a", encoding="utf-8") as f:
            f.write(output)
        if status != 0:
            raise BackendError(f"postfix -c {self.postfix_etc} start exited with status {status}:\n"
                               + "\n".join("  " + ln for ln in output.splitlines()[-15:])
                               + f"\n{self.postfix_log}:\n{_tail(self.postfix_log, 15)}")
        self._wait_started("postfix", self.postfix_pid_file, POSTFIX_SERVICES, deadline,
                           [self.postfix_start_log, self.postfix_log])
        self.timings["postfix"] = time.monotonic() - t0

    def _wait_started(self, daemon, pid_file, services, deadline, logs):
        wanted = {(self.address, self.ports[s]): s for s in services}
        missing = dict(wanted)
        while True:
            pid = _read_pid(pid_file)
            if pid is not None and missing:
                listening = listening_sockets()
                missing = {k: v for k, v in missing.items() if k not in listening}
            if pid is not None and not missing:
                return
            if pid is not None and not _alive(pid):
                problem = f"{daemon} master (pid {pid}) exited during start-up"
                break
            if time.monotonic() > deadline:
                problem = (f"{daemon} did not write {pid_file}" if pid is None else
                           f"{daemon} is not listening on " +
                           ", ".join(f"{a}:{p} ({s})" for (a, p), s in sorted(missing.items())))
                problem += f" within {START_TIMEOUT:.0f}s"
                break
            time.sleep(0.02)
        raise BackendError(problem + "\n" + "\n".join(f"{log}:\n{_tail(log, 15)}" for log in logs))

    def _master_identity(self, daemon):
        """(pid file, expected /proc/PID/exe, /proc file to look in, entry it must hold).
        Dovecot keeps "-c <conf>" in its command line; the Postfix master's command line
        is just "master -w", but postfix(1) hands it MAIL_CONFIG in the environment."""
        if daemon == "dovecot":
            return self.dovecot_pid_file, DOVECOT_BIN, "cmdline", self.dovecot_conf
        return self.postfix_pid_file, POSTFIX_MASTER_BIN, "environ", f"MAIL_CONFIG={self.postfix_etc}"

    def _find_master(self, daemon):
        """-> (pid of our running master or None, description of a foreign process the
        pid file points to or None). Without a pid file, the pid recorded by
        from_description() is checked the same way."""
        pid_file, exe, proc_file, marker = self._master_identity(daemon)
        pid = _read_pid(pid_file)
        if pid is None:
            pid = self.recorded_pids.get(daemon)
        if pid is None or not _alive(pid):
            return None, None
        try:
            actual_exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/{proc_file}", "rb") as f:
                entries = f.read().decode("utf-8", "replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            return None, None  # exited meanwhile
        if actual_exe == exe and marker in entries:
            return pid, None
        return None, (f"pid {pid} (from {pid_file}) is {actual_exe}, not {exe} with "
                      f"{marker!r} in /proc/{pid}/{proc_file}")

    def _stop_master(self, daemon, timeout):
        pid, foreign = self._find_master(daemon)
        if foreign:
            # The pid was reused by someone else's process: leave it alone.
            raise BackendError(f"{daemon}: {foreign}; not signalling it")
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        os.kill(pid, signal.SIGTERM)
        # Dovecot's master takes about 1.1 s here: it sleeps while its children exit.
        master_gone = _wait_gone([pid], deadline)
        # Both masters call setsid(), so pgid == master pid: whatever is left in that
        # group is a child of ours that outlived its master.
        leftovers = _process_group(pid)
        if leftovers:
            _signal(leftovers, signal.SIGTERM)
            if not _wait_gone(leftovers, time.monotonic() + 1.0):
                _signal(_process_group(pid), signal.SIGKILL)
                _wait_gone(leftovers, time.monotonic() + 1.0)
        if not master_gone:
            raise BackendError(f"{daemon} master pid {pid} did not exit within {timeout:.0f}s of "
                               "SIGTERM; its process group was killed")

    def _refuse_if_running(self):
        for daemon in ("dovecot", "postfix"):
            pid, foreign = self._find_master(daemon)
            if pid is not None:
                raise BackendError(f"{self.name} stack: {daemon} already runs from {self.dir} "
                                   f"(pid {pid}); stop() it first")
            pid_file = self._master_identity(daemon)[0]
            if foreign and os.path.exists(pid_file):
                # Stale, and its pid now names another process: Dovecot would refuse to
                # start because of it ("already running").
                os.unlink(pid_file)

    def _refuse_busy_ports(self):
        listening = listening_sockets()
        wildcard = "::" if ":" in self.address else "0.0.0.0"
        busy = [f"{svc} {self.address}:{port}" for svc, port in self.ports.items()
                if (self.address, port) in listening or (wildcard, port) in listening]
        if busy:
            raise BackendError(f"{self.name} stack: ports already in use: {', '.join(busy)} "
                               "(another stack, or the packaged dovecot/postfix, is running; "
                               "use another address or a port offset)")

    # ---------------------------------------------------------------- files

    def _prepare_directories(self):
        os.makedirs(self.state_dir, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        check_world_traversable(self.state_dir)
        for path in (self.dir, self.etc_dir, self.log_dir, self.run_dir, self.dovecot_state_dir,
                     self.postfix_dir, self.postfix_etc):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
        mail = pwd.getpwnam(MAIL_OWNER)
        os.makedirs(self.mail_dir, exist_ok=True)
        os.chown(self.mail_dir, mail.pw_uid, mail.pw_gid)
        os.chmod(self.mail_dir, 0o750)
        # Pitfall 3: the queue directory must exist and be root's ("postfix start" makes
        # the subdirectories), the data directory must belong to mail_owner.
        os.makedirs(self.postfix_queue, exist_ok=True)
        os.chown(self.postfix_queue, 0, 0)
        os.chmod(self.postfix_queue, 0o755)
        postfix = pwd.getpwnam("postfix")
        os.makedirs(self.postfix_data, exist_ok=True)
        os.chown(self.postfix_data, postfix.pw_uid, postfix.pw_gid)
        os.chmod(self.postfix_data, 0o700)

    def _ensure_cert(self):
        if self.cert is None:
            pki = Pki(os.path.join(self.state_dir, "pki"))
            self.cert, self.key = pki.issue(self.hostname, [self.hostname, self.address])
            self.ca_file = pki.ca_file

    def _write_passwd_files(self):
        # Dovecot's auth process runs as "dovecot" and must read these; nobody else may.
        dovecot_gid = grp.getgrnam("dovecot").gr_gid
        entries = {
            "users": "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()),
            "master-users": "{}:{{PLAIN}}{}::::::\n".format(*self.master_user),
        }
        for filename, text in entries.items():
            path = os.path.join(self.etc_dir, filename)
            self._write(path, text, 0o640)
            os.chown(path, 0, dovecot_gid)

    @staticmethod
    def _write(path, text, mode):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)

    def _dovecot_conf(self):
        mail = pwd.getpwnam(MAIL_OWNER)
        trusted = " ".join(self.trusted)
        if self.mode == "proxy":
            trust = f"haproxy_trusted_networks = {trusted}"
            haproxy = "yes"
        else:
            trust = f"login_trusted_networks = {trusted}"
            haproxy = "no"

        def listener(name, port, ssl=False, proxied=True):
            lines = [f"  inet_listener {name} {{", f"    port = {port}"]
            if ssl:
                lines.append("    ssl = yes")
            if proxied:
                lines.append(f"    haproxy = {haproxy}")
            return "\n".join(lines + ["  }"])

        p = self.ports
        return f"""\
# Generated by tests/harness/backends.py for the {self.name} stack ({self.mode} mode).
# Rewritten at every start: edit the generator, not this file.
instance_name = ms-{self.name}
# Per-instance directories, so nothing lands in /run/dovecot or /var/lib/dovecot (pitfall 7).
base_dir = {self.run_dir}
state_dir = {self.dovecot_state_dir}
log_path = {self.dovecot_log}
info_log_path = {self.dovecot_log}
debug_log_path = {self.dovecot_log}
log_timestamp = "%Y-%m-%d %H:%M:%S "
# Tests assert on where a login came from: rip/rport/lip/lport are what Dovecot believes
# after IMAP ID, XCLIENT or a PROXY header; real_rip is the socket's peer (the proxy).
login_log_format_elements = user=<%u> auth_user=<%{{auth_user}}> method=%m rip=%r rport=%{{rport}} lip=%l lport=%{{lport}} real_rip=%{{real_rip}} mpid=%e %c session=<%{{session}}>
auth_verbose = yes
verbose_proctitle = yes

protocols = imap pop3 sieve lmtp
listen = {self.address}
{trust}

ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
ssl_dh = <{DOVECOT_DH_PARAMS}
ssl_min_protocol = TLSv1.2
# The proxy may speak cleartext to its backend; connections through PROXY are not
# "secured", so with "yes" they could not log in at all (pitfall 12).
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = {MASTER_USER_SEPARATOR}

# Every mailbox belongs to the system user "{MAIL_OWNER}" (uid {mail.pw_uid}), below Dovecot's
# default first_valid_uid of 500 (pitfall 8).
mail_uid = {MAIL_OWNER}
mail_gid = {mail.pw_gid}
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
mail_location = maildir:~/Maildir

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {self.etc_dir}/master-users
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {self.etc_dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {self.etc_dir}/users
  default_fields = uid={MAIL_OWNER} gid={mail.pw_gid} home={self.mail_dir}/%Lu
}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}

protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@{MAIL_DOMAIN}
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}

service imap-login {{
{listener("imap", p["imap"])}
{listener("imaps", p["imaps"], ssl=True)}
}}
service pop3-login {{
{listener("pop3", p["pop3"])}
{listener("pop3s", p["pop3s"], ssl=True)}
}}
service managesieve-login {{
{listener("sieve", p["sieve"])}
}}
# Postfix delivers over LMTP/TCP and asks for SASL over TCP: no unix sockets to share
# across users and directories (pitfall 9). Only Postfix talks to these: never PROXY.
service lmtp {{
{listener("lmtp", p["lmtp"], proxied=False)}
}}
service auth {{
{listener("sasl", p["auth"], proxied=False)}
}}
"""

    def _postfix_main_cf(self):
        ipv6 = ":" in self.address
        trust = (f"smtpd_authorized_xclient_hosts = {' '.join(self.trusted)}" if self.mode == "xclient" else
                 "# proxy mode: the PROXY header is required on 25/587 (master.cf); Postfix\n"
                 "# has no list of trusted senders for it.")
        return f"""\
# Generated by tests/harness/backends.py for the {self.name} stack ({self.mode} mode).
# Rewritten at every start: edit the generator, not this file.
compatibility_level = 3.6
# A second instance next to (or without) /etc/postfix: its own queue and data (pitfall 3).
queue_directory = {self.postfix_queue}
data_directory = {self.postfix_data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-{self.name}
# No syslog here: postlogd writes this file, and only below maillog_file_prefixes (pitfall 4).
maillog_file = {self.postfix_log}
maillog_file_prefixes = {self.log_dir}
myhostname = {self.hostname}
mydomain = {self.hostname.partition(".")[2] or self.hostname}
myorigin = $myhostname
mydestination =
# "inet_interfaces = {self.address}" is refused: only 127.0.0.1 is an interface address,
# the rest of 127/8 is merely routed to lo (pitfall 1). Listen on "all" here and pin
# every TCP service to {self.address} in master.cf.
inet_interfaces = all
inet_protocols = {"ipv6" if ipv6 else "ipv4"}
lmtp_bind_address{"6" if ipv6 else ""} = {self.address}
mynetworks = 127.0.0.0/8{" [::1]/128" if ipv6 else ""}
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
biff = no
append_dot_mydomain = no
readme_directory = no
smtputf8_enable = no
# There is no DNS: clients show as unknown[IP] and nothing is resolved (pitfall 10).
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_host_lookup = native

# The test domain goes to this stack's Dovecot over LMTP.
virtual_mailbox_domains = {MAIL_DOMAIN}
virtual_transport = lmtp:inet:{self._hostport(self.ports["lmtp"])}

smtpd_tls_chain_files = {self.key}, {self.cert}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{self._hostport(self.ports["auth"])}
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# test_upgrade.py streams a 256 MiB message through port 25 (the default limit is 10 MB)
message_size_limit = 0
{trust}
"""

    def _postfix_master_cf(self):
        proxy = " -o smtpd_upstream_proxy_protocol=haproxy" if self.mode == "proxy" else ""
        smtp = self._hostport(self.ports["smtp"])
        submission = self._hostport(self.ports["submission"])
        return f"""\
# Generated by tests/harness/backends.py for the {self.name} stack ({self.mode} mode).
# No service is chrooted: the chroot would need copies of the config and the sockets.
# service type  private unpriv  chroot  wakeup  maxproc command + args
{smtp} inet n - n - - smtpd{proxy}
{submission} inet n - n - - smtpd{proxy}
  -o syslog_name=postfix-{self.name}/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
# maillog_file needs postlogd; "postfix start" refuses to run without it (pitfall 4).
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    def _hostport(self, port):
        # Postfix writes IPv6 endpoints as [addr]:port, in master.cf and in "inet:" alike.
        if ":" in self.address:
            return f"[{self.address}]:{port}"
        return f"{self.address}:{port}"

    # ---------------------------------------------------------------- logs

    def _log_path(self, which):
        if which == "dovecot":
            return self.dovecot_log
        if which == "postfix":
            return self.postfix_log
        raise ValueError(f"log must be 'dovecot' or 'postfix', not {which!r}")

    def log_mark(self, which):
        """The current end of a log ("dovecot" or "postfix"): pass it as `since` so that
        wait_log() only looks at what happened after this point."""
        try:
            return os.path.getsize(self._log_path(which))
        except FileNotFoundError:
            return 0

    def log_lines(self, which, since=0):
        """Complete lines of a log from byte offset `since` (a half-written last line is left out)."""
        try:
            with open(self._log_path(which), "rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        data = data[: data.rfind(b"\n") + 1]
        return data.decode("utf-8", "replace").splitlines()

    def wait_log(self, which, regex, timeout=10, since=0):
        """The first line after offset `since` that matches `regex` (re.search), waiting up
        to `timeout` seconds for it to appear. since=0 searches the whole log: take a
        log_mark() first to see only what your test caused. Raises AssertionError with
        the lines seen since the mark (or the log's tail) on timeout."""
        pattern = re.compile(regex)
        path = self._log_path(which)
        deadline = time.monotonic() + timeout
        offset, pending = since, b""
        while True:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            offset += len(data)
            pending += data
            complete, _, pending = pending.rpartition(b"\n")
            if complete:
                for line in complete.decode("utf-8", "replace").split("\n"):
                    if pattern.search(line):
                        return line
            if time.monotonic() > deadline:
                seen = self.log_lines(which, since)
                shown = "\n".join("  " + ln for ln in seen[-30:]) if seen else "  (nothing new)"
                raise AssertionError(
                    f"{self.name} {which} log: no line matching {regex!r} within {timeout}s "
                    f"(from offset {since} of {path}); lines since then:\n{shown}")
            time.sleep(0.02)

    # ---------------------------------------------------------------- mail on disk

    def home(self, user):
        # The userdb's home is mail/%Lu: Dovecot lowercases the login name.
        return os.path.join(self.mail_dir, user.lower())

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def folder_path(self, user, folder="INBOX"):
        """Maildir++ on disk: INBOX is the Maildir itself, "Trash" is Maildir/.Trash and
        "a/b" (IMAP separator "/") is Maildir/.a.b."""
        if folder.upper() == "INBOX":
            return self.maildir(user)
        return os.path.join(self.maildir(user), "." + folder.replace("/", "."))

    def messages(self, user, folder="INBOX"):
        """Paths of the messages in a folder (new/ and cur/), oldest first."""
        base = self.folder_path(user, folder)
        found = []
        for sub in ("new", "cur"):
            try:
                found += [os.path.join(base, sub, n) for n in os.listdir(os.path.join(base, sub))]
            except FileNotFoundError:
                pass
        # Maildir file names begin with the delivery time in seconds.
        return sorted(found, key=os.path.basename)

    def wait_message(self, user, contains, folder="INBOX", timeout=10):
        """The path of the first message in `folder` whose raw bytes contain `contains`
        (str or bytes), waiting for delivery; AssertionError with the folder listing on timeout."""
        needle = contains.encode() if isinstance(contains, str) else contains
        deadline = time.monotonic() + timeout
        while True:
            for path in self.messages(user, folder):
                try:
                    with open(path, "rb") as f:
                        if needle in f.read():
                            return path
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                    continue
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no message containing {needle!r} in {user}'s {folder} "
                    f"({self.folder_path(user, folder)}) within {timeout}s; it holds "
                    f"{len(self.messages(user, folder))} message(s)\n"
                    f"{self.postfix_log}:\n{_tail(self.postfix_log, 10)}")
            time.sleep(0.02)

    def sieve_scripts(self, user):
        """Names of the user's Sieve scripts on disk (as ManageSieve calls them)."""
        try:
            names = os.listdir(os.path.join(self.home(user), "sieve"))
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".sieve")] for n in names if n.endswith(".sieve"))

    def active_sieve_script(self, user):
        """The name of the active script (the target of ~/.dovecot.sieve), or None."""
        try:
            target = os.readlink(os.path.join(self.home(user), ".dovecot.sieve"))
        except (FileNotFoundError, OSError):
            return None
        name = os.path.basename(target)
        return name[: -len(".sieve")] if name.endswith(".sieve") else name

    # ---------------------------------------------------------------- misc

    def doveadm(self, *args):
        """Run doveadm against this Dovecot (e.g. "user", "alice@example.org") -> stdout."""
        proc = subprocess.run([DOVEADM_BIN, "-c", self.dovecot_conf, *args], capture_output=True,
                              text=True, env=_DAEMON_ENV, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BackendError(f"doveadm {' '.join(args)} on {self.name} exited with status "
                               f"{proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def cert_sha256(self, sep=""):
        """SHA-256 of the DER of the leaf certificate the daemons present (lowercase hex;
        sep=":" for the "aa:bb:..." form)."""
        self._ensure_cert()
        return fingerprint_sha256(self.cert, sep)

    def describe(self):
        """Everything a client of this stack needs to know, JSON-serialisable."""
        return {
            "name": self.name, "mode": self.mode, "address": self.address, "hostname": self.hostname,
            "trusted": self.trusted, "port_offset": self.port_offset, "ports": dict(self.ports),
            "users": dict(self.users),
            "master_user": {"user": self.master_user[0], "password": self.master_user[1],
                            "separator": MASTER_USER_SEPARATOR},
            "state_dir": self.state_dir, "dir": self.dir,
            "logs": {"dovecot": self.dovecot_log, "postfix": self.postfix_log},
            "config": {"dovecot": self.dovecot_conf, "postfix": self.postfix_etc},
            "tls": {"cert": self.cert, "key": self.key, "ca_file": self.ca_file,
                    "cert_sha256": fingerprint_sha256(self.cert) if self.cert else None},
            "pid_files": {"dovecot": self.dovecot_pid_file, "postfix": self.postfix_pid_file},
            "pids": self.pids(),
        }

    @classmethod
    def from_description(cls, desc):
        """The stack that describe() described, e.g. to stop() it from another process."""
        stack = cls(desc["name"], desc["address"], desc["mode"], desc["state_dir"],
                   trusted=desc["trusted"], port_offset=desc["port_offset"], users=desc["users"],
                   master_user=(desc["master_user"]["user"], desc["master_user"]["password"]),
                   cert=desc["tls"]["cert"], key=desc["tls"]["key"], ca_file=desc["tls"]["ca_file"],
                   hostname=desc["hostname"])
        stack.recorded_pids = {k: v for k, v in desc.get("pids", {}).items() if v}
        return stack


def _run_parallel(jobs):
    """Run {label: callable} in threads -> {label: exception} for those that raised."""
    errors = {}

    def run(label, fn):
        try:
            fn()
        except Exception as e:  # reported to the caller, with its label
            errors[label] = e

    threads = [threading.Thread(target=run, args=item, name=f"harness-{item[0]}") for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def start_stacks(*stacks):
    """Start several stacks at once. If any fails, the others are stopped again and a
    BackendError naming every failure is raised."""
    errors = _run_parallel({s.name: s.start for s in stacks})
    if errors:
        stop_stacks(*(s for s in stacks if s.name not in errors), ignore_errors=True)
        raise BackendError("\n\n".join(str(e) for e in errors.values()))
    return stacks


def stop_stacks(*stacks, ignore_errors=False):
    """Stop several stacks at once (a Dovecot master alone takes a while to reap its children)."""
    errors = _run_parallel({s.name: s.stop for s in stacks})
    if errors and not ignore_errors:
        raise BackendError("\n\n".join(str(e) for e in errors.values()))


def write_description(path, stacks, extra=None):
    """Record stacks (describe()) plus `extra` as JSON at `path`; returns the dict."""
    desc = dict(extra or {})
    desc["stacks"] = {s.name: s.describe() for s in stacks}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(desc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return desc
