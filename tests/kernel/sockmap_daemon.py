#!/usr/bin/python3
"""The daemon's opt-in sockmap path, measured byte by byte (issue 22): not a test, a
measurement (the result per kernel goes into docs/datapath.md).

Starts mailspliced with data_path = "sockmap" and a port-25 pass-through to
build/tests/streamcheck, then runs --runs sessions, each moving --bytes each way at
once (both directions busy), cycling through fast readers, slow readers (20 ms pause
every 8 MiB) and 64 KiB receive buffers. Per run one line: exact, or how the stream
went wrong (streamcheck explains: duplicated / lost / foreign bytes), or stalled; and
what the session line says (path, end, detail).

    /usr/bin/python3 tests/kernel/sockmap_daemon.py --runs 20
    vmtest/run-matrix -- /usr/bin/python3 tests/kernel/sockmap_daemon.py --runs 20

Exit 0 when every run was exact, 1 otherwise, 2 when sockmap is unavailable here.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy  # noqa: E402
from tests.harness.proxy import log_field as field  # noqa: E402

STREAMCHECK = os.path.join(ROOT, "build", "tests", "streamcheck")
OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BACKEND = ("127.0.0.7", 39226 + OFFSET)
SMTP = 39225 + OFFSET

CONFIG = f"""
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"
data_path = "sockmap"
shutdown_grace = "1s"

[routing]
default_destination = "b"
smtp_passthrough_destination = "b"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.b]
host = "{BACKEND[0]}"
forwarding = "proxy"

[destination.b.protocol.smtp]
port = {BACKEND[1]}
tls = "plain"

[listener.smtp]
protocol = "smtp"
bind = ["{PROXY_ADDR}:{SMTP}"]
tls = "plain"
"""

VARIANTS = [("fast readers", []),
            ("slow readers", ["--pause-ms", "20", "--pause-every", str(8 << 20)]),
            ("64 KiB receive buffers", ["--rcvbuf", "65536"]),
            ("slow readers, 64 KiB receive buffers",
             ["--rcvbuf", "65536", "--pause-ms", "20", "--pause-every", str(8 << 20)])]


def one_run(proxy, n, total, timeout):
    name, extra = VARIANTS[n % len(VARIANTS)]
    mark = proxy.log_size()
    srv = subprocess.Popen([STREAMCHECK, "server", "--listen", f"{BACKEND[0]}:{BACKEND[1]}",
                            "--proxy-v2", "--count", "1", "--timeout", str(timeout)] + extra,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    srv.stdout.readline()
    cl = subprocess.run([STREAMCHECK, "client", "--connect", f"{PROXY_ADDR}:{SMTP}",
                         "--source", CLIENT_ADDR, "--up", str(total), "--down", str(total),
                         "--seed", str(500 + n), "--timeout", str(timeout)] + extra,
                        capture_output=True, text=True, timeout=timeout + 60)
    try:
        out, _ = srv.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        srv.kill()
        out, _ = srv.communicate()
    c = json.loads(cl.stdout.strip().splitlines()[-1]) if cl.stdout.strip() else {}
    s = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    session = ""
    try:
        line = proxy.session_line(c.get("client_port", 0), since=mark, timeout=15)
        session = (f"path={field(line, 'path_up')}/{field(line, 'path_down')} "
                   f"end={field(line, 'end')!r} detail={field(line, 'detail')!r}")
    except Exception:  # the session never ended: say so
        session = "no session line within 15 s (the pair's end went unnoticed)"

    def verdict(r, what):
        if not r:
            return f"{what}: no result"
        if r.get("exact"):
            return f"{what}: exact"
        return f"{what}: {r.get('explain')} {r.get('error')}".strip()

    ok = bool(c.get("exact") and s.get("exact"))
    print(f"run {n} ({name}): {'exact' if ok else 'NOT EXACT'}; "
          f"{verdict(s, 'up (client->backend)')}; {verdict(c, 'down (backend->client)')}; "
          f"{session}", flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--timeout", type=int, default=120)
    a = ap.parse_args()
    state = tempfile.mkdtemp(prefix="ms-sockmap-")
    print("state", state)
    os.chmod(state, 0o755)
    p = Proxy(state, "sockmap", CONFIG)
    try:
        p.start()
    except Exception as e:
        print(f"kernel {platform.release()}: sockmap unavailable: {e}")
        return 2
    exact = 0
    try:
        print(f"kernel {platform.release()}: {a.runs} runs of {a.bytes} bytes each way through "
              f"mailspliced with data_path = \"sockmap\"", flush=True)
        for n in range(a.runs):
            exact += one_run(p, n, a.bytes, a.timeout)
    finally:
        rc = p.stop()
    print(f"kernel {platform.release()}: {exact} of {a.runs} runs exact (daemon exit {rc})")
    return 0 if exact == a.runs else 1


if __name__ == "__main__":
    sys.exit(main())
