#!/usr/bin/python3
"""What a hand-over costs (issue 23, docs/upgrade.md): N idle spliced sessions (port-25
pass-through to an echo pump) are moved by `mailspliced --upgrade`; a client connects
every 10 ms throughout. Prints, per N: the command's wall time, the old process's time
from the offer to the last answer (its own log timestamps), CPU time of both processes
over the hand-over (/proc/PID/stat), sessions moved, connections refused, sessions that
echo afterwards. Numbers, never pass/fail; run with the machine's load next to them.

    /usr/bin/python3 bench/upgrade.py [--sessions 1000,4000]   (root: binds 127.0.0.4)
"""

import argparse
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.harness.proxy import PROXY_ADDR, connect  # noqa: E402
from tests.harness.pump import Pump  # noqa: E402
from tests.harness.upgrade import Upgradable, wait_gone  # noqa: E402

OFF = int(os.environ.get("MS_PORT_OFFSET", "0"))
PUMP_ADDR, PUMP_PORT, SMTP = "127.0.0.7", 23026 + OFF, 23025 + OFF

CONFIG = """
[server]
threads = 2
log_level = "info"
shutdown_grace = "30s"
control_socket = "{state}/control.sock"

[routing]
default_destination = "pump"
smtp_passthrough_destination = "pump"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.pump]
host = "{pump}"
forwarding = "proxy"

[destination.pump.protocol.smtp]
port = {pump_port}
tls = "plain"

[listener.smtp]
protocol = "smtp"
bind = ["{proxy}:{smtp}"]
tls = "plain"
max_connections = 100000
"""


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().split(") ")[1].split()
    return (int(v[11]) + int(v[12])) * 1000 // os.sysconf("SC_CLK_TCK")


def stamp(line):
    return datetime.strptime(line.split()[0][3:], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def one(n, state, pump):
    p = Upgradable(state, f"n{n}", CONFIG.format(state=state, pump=PUMP_ADDR,
                                                 pump_port=PUMP_PORT, proxy=PROXY_ADDR,
                                                 smtp=SMTP))
    p.start()
    socks = []
    try:
        for _ in range(n):
            s = connect(SMTP, timeout=30)
            s.sendall(b"ECHO\nx")
            socks.append(s)
        for s in socks:
            assert s.recv(1) == b"x"
        refused = [0, 0]
        stop = []

        def knock():
            while not stop:
                try:
                    connect(SMTP, timeout=5).close()
                    refused[1] += 1
                except OSError:
                    refused[0] += 1
                time.sleep(0.01)

        k = threading.Thread(target=knock)
        k.start()
        old = p.pid
        mark = p.log_size()
        c_old = cpu_ms(old)
        t0 = time.monotonic()
        r = p.upgrade()
        wall = time.monotonic() - t0
        c_new = cpu_ms(p.pid)
        c_old = cpu_ms(old) - c_old if os.path.exists(f"/proc/{old}") else None
        stop.append(1)
        k.join()
        assert r.returncode == 0, r.stderr
        log = p.log_text(mark)
        offer = stamp(re.search(r".*event=upgrade state=offer.*", log).group(0))
        done = stamp(re.search(r".*event=upgrade state=round-done.*", log).group(0))
        moved = int(re.search(r"(\d+) sessions moved", r.stdout).group(1))
        ok = 0
        for s in socks:
            s.sendall(b"y")
            ok += s.recv(1) == b"y"
        wait_gone(old, 60)
        print(f"sessions={n} moved={moved} upgrade_wall_ms={wall * 1000:.0f} "
              f"offer_to_round_done_ms={(done - offer) * 1000:.0f} "
              f"old_cpu_ms={c_old if c_old is not None else '-'} new_cpu_ms={c_new} "
              f"knocks={refused[1]} refused={refused[0]} echo_after={ok}/{n} "
              f"load=\"{os.getloadavg()[0]:.2f}\"", flush=True)
    finally:
        for s in socks:
            s.close()
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="1000,4000")
    a = ap.parse_args()
    lim = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim[1], lim[1]))
    state = tempfile.mkdtemp(prefix="ms-bench-upgrade-", dir="/tmp")
    pump = Pump(PUMP_ADDR, PUMP_PORT)
    try:
        for n in (int(x) for x in a.sessions.split(",")):
            d = os.path.join(state, str(n))
            os.makedirs(d)
            one(n, d, pump)
    finally:
        pump.stop()
        if not os.environ.get("MS_KEEP_STATE"):
            shutil.rmtree(state, ignore_errors=True)
        else:
            print("state kept in", state)


if __name__ == "__main__":
    main()
