"""The mailsplice daemon under test: config from a template, start, stop by pid, logs.

    proxy = Proxy(state_dir, "name", config_text, env={...})
    proxy.start()              # waits for the "event=started" log line
    proxy.wait_log(r"event=session .* account=alice@example.org")
    proxy.stop()               # SIGTERM to our own pid, then SIGKILL after a timeout

Clients connect from CLIENT_ADDR (127.0.0.5), a loopback address distinct from the
proxy's own source address (127.0.0.1), so a backend log line showing rip=127.0.0.5
proves the announcement worked.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MS_DAEMON: another build of the daemon (make asan runs the suite against build/asan/)
DAEMON = os.environ.get("MS_DAEMON") or os.path.join(REPO_ROOT, "build", "mailspliced")
CLIENT_ADDR = os.environ.get("MS_CLIENT_ADDR", "127.0.0.5")
PROXY_ADDR = os.environ.get("MS_PROXY_ADDR", "127.0.0.4")
# e.g. "valgrind --error-exitcode=99 --leak-check=full": the daemon runs under it
WRAPPER = os.environ.get("MS_DAEMON_WRAPPER", "").split()


class ProxyError(Exception):
    pass


class Proxy:
    def __init__(self, state_dir, name, config_text, env=None, mappings=""):
        self.dir = os.path.join(state_dir, "proxy-" + name)
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "mailsplice.toml")
        self.mapping_path = os.path.join(self.dir, "mappings.tsv")
        self.log_path = os.path.join(self.dir, "mailspliced.log")
        self.env = dict(os.environ)
        self.env.update(env or {})
        with open(self.mapping_path, "w") as f:
            f.write(mappings)
        self.write_config(config_text)
        self.proc = None
        self._log = None

    def write_config(self, text):
        with open(self.config_path, "w") as f:
            f.write(text.replace("@MAPPINGS@", self.mapping_path))

    def set_mappings(self, text):
        with open(self.mapping_path, "w") as f:
            f.write(text)

    def start(self, timeout=30 if WRAPPER else 10):
        self._log = open(self.log_path, "ab")
        self.mark = self.log_size()
        self.proc = subprocess.Popen(WRAPPER + [DAEMON, "-c", self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        try:
            self.wait_log(r"event=started", timeout=timeout, since=self.mark)
        except ProxyError:
            self.stop()
            raise
        return self

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ logs

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self, since=0):
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, regex, timeout=10, since=0):
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text(since)
            for line in text.splitlines():
                if pat.search(line):
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise ProxyError(f"mailspliced exited ({self.proc.returncode}) while waiting "
                                 f"for /{regex}/; log:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise ProxyError(f"no log line /{regex}/ within {timeout}s; log:\n"
                                 f"{text[-3000:]}")
            time.sleep(0.05)

    def session_line(self, port, since=0, timeout=30):
        """The session line of the client connection from CLIENT_ADDR:`port`."""
        return self.wait_log(rf"event=session .*client=\"?{re.escape(CLIENT_ADDR)}:{port}\b",
                             timeout=timeout, since=since)


def log_field(line, key):
    """The value of `key=` in one of the daemon's log lines (quotes removed), or None."""
    m = re.search(rf"\b{key}=(\"[^\"]*\"|\S+)", line)
    return m.group(1).strip('"') if m else None


def imap_login(s):
    """Read the greeting on the connected (plain or TLS) socket `s` and log in as the
    test user alice; returns (s, its file)."""
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    f.write(b"a1 LOGIN alice@example.org alice-pw\r\n")
    f.flush()
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    assert line.startswith(b"a1 OK"), line
    return s, f


def recv_to_eof(s, chunk=65536):
    """Everything the peer sends until it ends the stream."""
    data = b""
    while True:
        got = s.recv(chunk)
        if not got:
            return data
        data += got


def connect(port, host=PROXY_ADDR, source=CLIENT_ADDR, timeout=10):
    """A TCP connection from the test client address."""
    s = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
    return s


def client_tls_context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx
