"""A daemon under test that may be replaced with `mailspliced --upgrade` (docs/upgrade.md).

    p = Upgradable(state_dir, "name", config_text, env={...}).start()
    r = p.upgrade()          # CompletedProcess; on success p.pid is the new daemon's
    p.stop()                 # SIGTERM to every pid it ever had, by pid

The daemons --upgrade starts are not our children: they are stopped by pid, and their
state is read from /proc.
"""

import os
import re
import signal
import subprocess
import time

from .proxy import DAEMON, Proxy


def alive(pid):
    """Whether pid runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running after {timeout}s"
        time.sleep(0.05)


class Upgradable(Proxy):
    """A daemon whose process changes: `pid` is the one serving now, `old` the ones that
    handed over (and may still drain)."""

    def start(self, timeout=10):
        super().start(timeout)
        self.pid = self.proc.pid
        self.old = []
        return self

    def upgrade(self, config_path=None, timeout=120):
        r = subprocess.run([DAEMON, "--upgrade", "-c", config_path or self.config_path],
                           capture_output=True, text=True, timeout=timeout, env=self.env)
        if r.returncode == 0:
            m = re.search(r"pid (\d+) took over from pid (\d+)", r.stdout)
            assert m, r.stdout + r.stderr
            assert int(m.group(2)) == self.pid, (r.stdout, self.pid)
            self.old.append(self.pid)
            self.pid = int(m.group(1))
        return r

    def stop(self, timeout=10):
        pids = [self.pid] + self.old
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for pid in pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        return super().stop(timeout) if self.proc is not None else None
