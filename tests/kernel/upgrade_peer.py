#!/usr/bin/python3
"""Both TLS ends of one proxied IMAP session that lives through an upgrade, for
test_upgrade_ktls.py (its own process: the TLS 1.3 suite can only be pinned through
OPENSSL_CONF, which OpenSSL reads once per process).

  backend  a TLS IMAP server behind a PROXY v2 header: answers the proxy's login,
           SELECT (one message), IDLE until DONE, FETCH 1 BODY[] (a 4 MiB message of
           pseudo-random printable lines), NOOP, LOGOUT
  client   logs in through the proxy over TLS, SELECTs, starts IDLE; then runs
           `mailspliced --upgrade`, waits until the old daemon is gone, ends IDLE,
           FETCHes the message, sends NOOP and LOGOUT

Prints one JSON line: what each end negotiated, the upgrade's output, the message's
SHA-256 at the backend and at the client, and every reply.
"""

import argparse
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time

from tls_peer import accept_tls, context


def message(size, seed):
    rnd = random.Random(seed)
    lines = [b"Subject: upgrade\r\n\r\n"]
    n = len(lines[0])
    i = 0
    while n < size:
        line = b"%08d %s\r\n" % (i, rnd.randbytes(30).hex().encode())
        lines.append(line)
        n += len(line)
        i += 1
    return b"".join(lines)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def backend(listener, ctx, msg, out):
    s, f = accept_tls(listener, ctx, out)
    s.sendall(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID IDLE] test backend\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        parts = line.split(None, 2)
        tag = parts[0] if parts else b"*"
        cmd = parts[1].upper().rstrip() if len(parts) > 1 else b""
        if cmd == b"CAPABILITY":
            s.sendall(b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID IDLE\r\n%s OK done\r\n" % tag)
        elif cmd == b"ID":
            s.sendall(b"* ID NIL\r\n%s OK done\r\n" % tag)
        elif cmd in (b"LOGIN", b"AUTHENTICATE"):
            if cmd == b"AUTHENTICATE" and len(line.split()) < 4:
                s.sendall(b"+ \r\n")
                f.readline()
            s.sendall(b"%s OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n" % tag)
        elif cmd == b"SELECT":
            s.sendall(b"* 1 EXISTS\r\n* 0 RECENT\r\n%s OK [READ-WRITE] Select completed\r\n" % tag)
        elif cmd == b"IDLE":
            s.sendall(b"+ idling\r\n")
            done = f.readline()
            out["backend_idle_end"] = done.decode(errors="replace").strip()
            s.sendall(b"%s OK Idle completed\r\n" % tag)
        elif cmd == b"FETCH":
            s.sendall(b"* 1 FETCH (BODY[] {%d}\r\n" % len(msg) + msg + b")\r\n%s OK Fetch completed\r\n"
                      % tag)
        elif cmd == b"NOOP":
            s.sendall(b"%s OK NOOP completed\r\n" % tag)
        elif cmd == b"LOGOUT":
            s.sendall(b"* BYE Logging out\r\n%s OK Logout completed\r\n" % tag)
            s.close()
            return
        else:
            s.sendall(b"%s BAD unexpected\r\n" % tag)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)  # host:port
    ap.add_argument("--listen", required=True)  # host:port of the backend
    ap.add_argument("--version", choices=("1.2", "1.3"), required=True)
    ap.add_argument("--cipher", required=True)  # OpenSSL name, TLS 1.2 only
    ap.add_argument("--size", type=int, default=4 << 20)
    ap.add_argument("--client-addr", default="127.0.0.5")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--sni", required=True)
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--old-pid", type=int, required=True)
    a = ap.parse_args()

    msg = message(a.size, a.size)
    host, port = a.listen.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1)
    out = {"sent_sha256": hashlib.sha256(msg).hexdigest(), "replies": []}
    errors = []

    def run_backend():
        try:
            backend(listener, context("server", a.version, a.cipher, a.cert, a.key), msg, out)
        except Exception as e:  # reported in the JSON
            errors.append(f"backend: {e!r}")

    t = threading.Thread(target=run_backend)
    t.start()
    try:
        phost, pport = a.proxy.rsplit(":", 1)
        raw = socket.create_connection((phost, int(pport)), timeout=120,
                                       source_address=(a.client_addr, 0))
        out["client_port"] = raw.getsockname()[1]
        s = context("client", a.version, a.cipher, ca=a.ca).wrap_socket(raw, server_hostname=a.sni)
        out["client_cipher"] = s.cipher()[0]
        out["client_version"] = s.version()
        f = s.makefile("rwb", buffering=0)

        def command(tag, text):
            f.write(b"%s %s\r\n" % (tag, text))
            while True:
                line = f.readline()
                if not line:
                    raise EOFError(f"closed waiting for {tag!r}")
                if line.startswith(tag + b" "):
                    out["replies"].append(line.decode(errors="replace").strip())
                    return line

        f.readline()
        assert command(b"a1", b"LOGIN alice secret").startswith(b"a1 OK")
        assert command(b"a2", b"SELECT INBOX").startswith(b"a2 OK")
        f.write(b"a3 IDLE\r\n")
        line = f.readline()
        assert line.startswith(b"+"), line
        # the session is logged in and idle, both legs in kernel TLS: replace the daemon
        r = subprocess.run([a.daemon, "--upgrade", "-c", a.config], capture_output=True,
                           text=True, timeout=120)
        out["upgrade_rc"] = r.returncode
        out["upgrade_stdout"] = r.stdout
        out["upgrade_stderr"] = r.stderr[-3000:]
        m = re.search(r"pid (\d+) took over", r.stdout)
        out["new_pid"] = int(m.group(1)) if m else None
        deadline = time.monotonic() + 30
        while alive(a.old_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        out["old_gone"] = not alive(a.old_pid)
        f.write(b"DONE\r\n")
        line = f.readline()
        out["replies"].append(line.decode(errors="replace").strip())
        f.write(b"a4 FETCH 1 BODY[]\r\n")
        line = f.readline()
        n = int(re.search(rb"\{(\d+)\}\r\n$", line).group(1))
        data = b""
        while len(data) < n:
            chunk = f.read(n - len(data))
            if not chunk:
                raise EOFError(f"the literal ended after {len(data)} of {n} bytes")
            data += chunk
        out["fetched"] = len(data)
        out["fetched_sha256"] = hashlib.sha256(data).hexdigest()
        assert f.readline() == b")\r\n"
        out["replies"].append(f.readline().decode(errors="replace").strip())
        assert command(b"a5", b"NOOP").startswith(b"a5 OK")
        f.write(b"a6 LOGOUT\r\n")
        out["replies"].append(f.readline().decode(errors="replace").strip())
        out["replies"].append(f.readline().decode(errors="replace").strip())
        f.close()
        s.close()
    except Exception as e:  # reported in the JSON
        errors.append(f"client: {e!r}")
    t.join(60)
    out["errors"] = errors
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
