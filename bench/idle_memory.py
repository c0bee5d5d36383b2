#!/usr/bin/python3
"""bench/idle_memory.py: what one idle logged-in session costs the daemon, in bytes the
allocator hands out, not only in RSS (issue 22).

RSS per session (what bench/peers.py reports) depends on what the allocator had lying
around; malloc's own count of bytes in use does not. This starts mailspliced against
bench/peers_backend.py, opens --sessions idle logged-in IMAP sessions of each kind, and
asks the daemon's glibc through gdb (`call malloc_stats()`, printed on the daemon's
stderr) before and after:

  plain       plain client leg, plain backend leg (path splice)
  tls         TLS 1.3 client leg, plain backend leg (OpenSSL in user space without kTLS;
              on a kTLS kernel the client leg goes to the kernel, receive keyed by the
              daemon, and the SSL object is freed at the hand-over)
  tls-both    TLS 1.3 on both legs (kTLS both ways on a kTLS kernel: the SSL objects
              are freed at the hand-over)

    bench/idle_memory.py [--sessions 2000]        (root; gdb from the gdb package)
    vmtest/run linux-image-amd64 -- /usr/bin/python3 bench/idle_memory.py

Prints one line per kind: malloc bytes in use per session, RSS per session, and the
session's path.
"""

import argparse
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "bench"))
import peers  # noqa: E402
import peers_backend as pb  # noqa: E402
from ktls_guest import MailspliceKtls  # noqa: E402
from tests.harness.pki import Pki  # noqa: E402


def in_use(proxy):
    """glibc's bytes in use, all arenas, read from the daemon's own malloc_stats()."""
    before = os.path.getsize(proxy.log_path)
    subprocess.run(["gdb", "-p", str(proxy.proc.pid), "-batch", "-ex",
                    "call (void)malloc_stats()"], capture_output=True, text=True, timeout=60)
    for _ in range(50):
        text = open(proxy.log_path, errors="replace").read()[before:]
        m = re.search(r"Total \(incl. mmap\):\s*system bytes\s*=\s*(\d+)\s*in use bytes\s*=\s*(\d+)",
                      text)
        if m:
            return int(m.group(2))
        time.sleep(0.1)
    raise RuntimeError("no malloc_stats output from the daemon")


def measure(peer, target, tls, n):
    proxy = peer.proxy
    time.sleep(1)
    mark = os.path.getsize(proxy.log_path)
    u0, r0 = in_use(proxy), peers.tree_rss_bytes([proxy.proc.pid])
    held = []

    def one(_):
        c = peers.Imap(target, tls=tls)
        held.append(c)
        c.login()

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, range(n)))
    time.sleep(2)
    u1, r1 = in_use(proxy), peers.tree_rss_bytes([proxy.proc.pid])
    for c in held:
        c.s.close()
    time.sleep(3)
    text = open(proxy.log_path, errors="replace").read()[mark:]
    paths = re.findall(r"event=session .*?path_up=(\S+) path_down=(\S+)", text)
    common = max(set(paths), key=paths.count) if paths else ("?", "?")
    return (u1 - u0) / n, (r1 - r0) / n, f"{common[0]}/{common[1]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=2000)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    state = tempfile.mkdtemp(prefix="ms-idle-")
    os.chmod(state, 0o755)
    pki = Pki(os.path.join(state, "pki"))
    cert, key = pki.issue("bench.test", ["bench.test", peers.PROXY_ADDR, peers.BACKEND_HOST])
    backend, shared = pb.start(multiprocessing.get_context("fork"), peers.BACKEND_HOST,
                               peers.BACKEND_BASE, cert, key)
    try:
        plain = peers.Mailsplice(0, state, cert, key, "auto")
        plain.start()
        try:
            for kind, target, tls in (("plain", plain.imap, False), ("tls", plain.imaps, True)):
                u, r, path = measure(plain, target, tls, a.sessions)
                print(f"{kind:9} malloc in use {u:6.0f} B/session   RSS {r:6.0f} B/session   "
                      f"path {path}", flush=True)
        finally:
            plain.stop()
        both = MailspliceKtls(1, state, cert, key, pki.ca_file)
        both.start()
        try:
            u, r, path = measure(both, both.imaps, True, a.sessions)
            print(f"{'tls-both':9} malloc in use {u:6.0f} B/session   RSS {r:6.0f} B/session   "
                  f"path {path}", flush=True)
        finally:
            both.stop()
    finally:
        backend.terminate()
        backend.join(5)


if __name__ == "__main__":
    main()
