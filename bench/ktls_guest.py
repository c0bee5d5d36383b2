#!/usr/bin/python3
"""bench/ktls_guest.py: kTLS + splice against HAProxy's userspace TLS, in counts and bytes
(issue 22). Meant for the vmtest guests, whose kernels have kTLS (this project's host
kernel has none); times mean little under emulation, counts and memory do.

TLS on both legs of an IMAP session (TLS 1.3 to the client, TLS 1.3 to the backend,
bench/peers_backend.py behind a PROXY v2 header):
  ms-ktls       mailsplice, data_path = "auto": both legs kernel TLS both ways (TLS 1.3
                receive keyed by the daemon), bytes moved with splice(2); the SSL
                objects are freed at the hand-over
  haproxy-tls   HAProxy 2.6, `bind ... ssl`, `server ... ssl`: OpenSSL in user space
                (HAProxy 2.6 has no kTLS)

Measures, per peer:
  syscalls/GiB, wake-ups/GiB   perf stat on the proxy's threads while FETCHing
                                --fetch bytes (unpaced) through it
  RSS B/session                 growth of the proxy's RSS per idle logged-in session
                                (--idle sessions)
and checks that mailsplice's sessions really were ktls-splice both ways.

    vmtest/run linux-image-amd64 -- /usr/bin/python3 bench/ktls_guest.py
    bench/ktls_guest.py --idle 500 --fetch 134217728      (anywhere, root)

Prints a markdown table; --out DIR also writes it to DIR/ktls-<kernel>.md.
"""

import argparse
import datetime
import multiprocessing
import os
import platform
import re
import resource
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "bench"))
import peers  # noqa: E402
import peers_backend as pb  # noqa: E402
from tests.harness.pki import Pki  # noqa: E402
from tests.harness.proxy import Proxy  # noqa: E402

MIB = 1 << 20


class MailspliceKtls(peers.Mailsplice):
    """mailsplice with TLS on both legs: the backend leg is implicit TLS after a PROXY v2
    header, verified against the bench CA."""

    def __init__(self, index, state, cert, key, ca):
        super().__init__(index, state, cert, key, "auto")
        self.name = "ms-ktls"
        self.ca = ca

    def start(self):
        cfg = self.CONFIG.format(path="auto", cert=self.cert, key=self.key,
                                 bhost=peers.BACKEND_HOST,
                                 bimap=peers.BACKEND_BASE + pb.IMAPS_PROXY,
                                 bsmtp=peers.BACKEND_BASE + pb.SMTP_PROXY,
                                 addr=peers.PROXY_ADDR, p0=self.port, p1=self.port + 1,
                                 p2=self.port + 2, p3=self.port + 3)
        cfg = cfg.replace('[destination.bench.protocol.imap]\nport = %d\ntls = "plain"' %
                          (peers.BACKEND_BASE + pb.IMAPS_PROXY),
                          '[destination.bench.protocol.imap]\nport = %d\ntls = "implicit"' %
                          (peers.BACKEND_BASE + pb.IMAPS_PROXY))
        cfg = cfg.replace('forwarding = "proxy"',
                          'forwarding = "proxy"\ntls_server_name = "bench.test"')
        self.proxy = Proxy(self.dir, self.name, cfg, env={"SSL_CERT_FILE": self.ca})
        self.proxy.start()
        line = self.proxy.wait_log(r"event=data-path ")
        self.describe = "mailsplice " + line.split("event=data-path ", 1)[1].strip()


class HAProxyTls(peers.HAProxy):
    name = "haproxy-tls"
    WHAT = "TCP mode, OpenSSL on both legs (bind ssl, server ssl)"

    def start(self):
        super().start()

    def _spawn(self, argv, ready_port):
        # the backend leg speaks TLS after the PROXY header too
        path = argv[-1]
        cfg = open(path).read().replace(
            "server b %s:%d send-proxy-v2" % (peers.BACKEND_HOST,
                                              peers.BACKEND_BASE + pb.IMAP_PROXY),
            "server b %s:%d send-proxy-v2 ssl verify none" % (
                peers.BACKEND_HOST, peers.BACKEND_BASE + pb.IMAPS_PROXY))
        with open(path, "w") as f:
            f.write(cfg)
        super()._spawn(argv, ready_port)


def ktls_paths(peer, since):
    """(ktls-splice both ways, sessions) among the session lines logged since `since`."""
    text = open(peer.proxy.log_path, errors="replace").read()[since:]
    lines = [ln for ln in text.splitlines() if "event=session " in ln]
    both = sum(1 for ln in lines if "path_up=ktls-splice" in ln and "path_down=ktls-splice" in ln)
    return both, len(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--fetch", type=int, default=256 * MIB)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    state = tempfile.mkdtemp(prefix="ms-ktls-")
    os.chmod(state, 0o755)
    pki = Pki(os.path.join(state, "pki"))
    cert, key = pki.issue("bench.test", ["bench.test", peers.PROXY_ADDR, peers.BACKEND_HOST])
    ctx = multiprocessing.get_context("fork")
    backend, shared = pb.start(ctx, peers.BACKEND_HOST, peers.BACKEND_BASE, cert, key)
    rows = []
    try:
        for peer in (MailspliceKtls(0, state, cert, key, pki.ca_file),
                     HAProxyTls(1, state, cert, key)):
            try:
                peer.start()
            except Exception as e:  # reported
                rows.append((peer.name, f"not measured: {e}", None, None, None, ""))
                continue
            try:
                mark = os.path.getsize(peer.proxy.log_path) if hasattr(peer, "proxy") else 0
                sys_gib, wake_gib = peers.fetch_cpu(peer, shared, True, a.fetch, 0,
                                                    counts=True)
                r = peers.idle_sessions(peer, a.idle)
                check = ""
                if hasattr(peer, "proxy"):
                    time.sleep(2)
                    both, n = ktls_paths(peer, mark)
                    check = f"{both} of {n} sessions ktls-splice both ways"
                rows.append((peer.name, peer.describe, sys_gib, wake_gib, r["rss"], check))
                print(f"  {peer.name}: {sys_gib} syscalls/GiB, {r['rss']:.0f} B/session "
                      f"{check}", flush=True)
            finally:
                peer.stop()
                peers.wait_backend_quiet(shared, peer.name, limit=60)
    finally:
        backend.terminate()
        backend.join(5)
    load = os.getloadavg()
    out = [f"### kTLS + splice against userspace TLS, kernel {platform.release()}", "",
           f"- {datetime.datetime.now().isoformat(timespec='seconds')}, "
           f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
           f"- FETCH of {a.fetch // MIB} MiB unpaced over TLS 1.3 on both legs; "
           f"{a.idle} idle logged-in TLS sessions", ""]
    for name, desc, *_ in rows:
        out.append(f"- {name}: {desc}")
    out += ["", "| peer | syscalls/GiB FETCH | wake-ups/GiB FETCH | RSS B/idle session | path |",
            "|---|---|---|---|---|"]
    for name, desc, s, w, rss, check in rows:
        f = (lambda v, fmt: fmt % v if v is not None else "n/a")
        out.append(f"| {name} | {f(s, '%.0f')} | {f(w, '%.0f')} | {f(rss, '%.0f')} | "
                   f"{check} |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9.+-]", "_", platform.release())
        with open(os.path.join(a.out, f"ktls-{name}.md"), "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
