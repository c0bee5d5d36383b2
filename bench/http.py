#!/usr/bin/python3
"""bench/http.py: the HTTP routing proxy against nginx and HAProxy (issue 20).

One run, one machine, loopback. Every peer is a Debian package started by this script
with its configuration in a temporary directory and stopped by pid:
  direct     wrk/curl talk to the backend itself: the physical reference
  nginx      nginx reverse proxy at its best: upstream keepalive pool, HTTP/1.1 to the
             backend, X-Forwarded-For, proxy buffers in memory, 2 workers
  haproxy    HAProxy 2.6 mode http: http-reuse always, option forwardfor, option
             splice-auto, tune.pipesize 1 MiB, 2 threads
  haproxy-splice  the same with option splice-response (splicing forced): its best for
             large downloads
  (the tables' "vs best peer" takes the best of nginx and both HAProxy runs per column)
  ms-http    mailsplice, an http listener with the published routes' catch-all rule: every request
             routed by the account in its Authorization header (mapping + cache), the
             backend connection kept, Forwarded/X-Forwarded-For added; 2 threads

The backend is one nginx (worker_processes 1, sendfile) serving every peer: a
JMAP-sized answer (about 1 KB of JSON) to POST /jmap/api, and a 1 GiB file.

Workloads (numbers, never pass/fail; this machine is shared: note the load):
  small-ka   wrk --latency, 2 threads, 32 keep-alive connections, 10 s: a 340-byte JMAP
             POST with Basic credentials. requests/s, p50/p99, and requests per
             CPU-second of the proxy's own processes (/proc/PID/stat) = requests/s a
             core of it would carry
  small-cpr  the same with Connection: close: one TCP connection per request
  download   curl of the 1 GiB file: the proxy's CPU-s per GiB at 400 MB/s offered
             (curl --limit-rate), and MiB/s unpaced

Output: bench/results/http-<time>/results.md (tables with medians, spread min-max and
ratios to the best of nginx/HAProxy) plus gnuplot charts, the machine, the kernel and
`uptime` before and after.

    bench/http.py                      (about 4 minutes on 2 CPUs)
    bench/http.py --quick              (a smoke test)
Ports derive from MS_PORT_OFFSET (default 0) like the tests'.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "bench"))
from peers import Table, med, process_tree, stop_group, tree_cpu_seconds  # noqa: E402
from tests.harness.proxy import CLIENT_ADDR, DAEMON, PROXY_ADDR  # noqa: E402

OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BACKEND_HOST = "127.0.0.7"
BACKEND_PORT = 30100 + OFFSET
PEER_BASE = 30200 + OFFSET  # peer i listens on PEER_BASE + i
MIB = 1 << 20
GIB = 1 << 30
ACCOUNT, PASSWORD = "bench@example.com", "bench-password"
JMAP_BODY = ('{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],'
             '"methodCalls":[["Email/query",{"accountId":"a","filter":{"inMailbox":"inbox"},'
             '"sort":[{"property":"receivedAt","isAscending":false}],"limit":20},"0"],'
             '["Email/get",{"accountId":"a","#ids":{"resultOf":"0","name":"Email/query",'
             '"path":"/ids"},"properties":["subject","from","receivedAt"]},"1"]]}')
JMAP_ANSWER = '{"methodResponses":[' + ",".join(
    f'["Email/get",{{"accountId":"a","state":"{i}","list":[{{"id":"M{i:04}",'
    f'"subject":"Weekly report {i}","from":[{{"email":"x@example.com"}}]}}]}},"1"]'
    for i in range(8)) + '],"sessionState":"s1"}'


def spawn(argv, cwd, log_name, port):
    log = open(os.path.join(cwd, log_name), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited ({proc.returncode}); see {cwd}/{log_name}")
        try:
            socket.create_connection((PROXY_ADDR if port != BACKEND_PORT else BACKEND_HOST,
                                      port), timeout=1).close()
            return proc, log
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} does not listen on {port}")
            time.sleep(0.1)


def stop(proc, log):
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    stop_group(proc.pid)
    if proc.poll() is None:
        proc.wait()
    log.close()


# ---------------------------------------------------------------- the backend

def start_backend(state):
    d = os.path.join(state, "backend")
    os.makedirs(os.path.join(d, "files"), exist_ok=True)
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    big = os.path.join(d, "files", "big.bin")
    with open(big, "wb") as f:
        block = os.urandom(MIB)
        for _ in range(GIB // MIB):
            f.write(block)
    os.chmod(big, 0o644)
    answer = JMAP_ANSWER.replace('"', '\\"')
    conf = f"""
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 1000000;
    sendfile on;
    tcp_nopush on;
    server {{
        listen {BACKEND_HOST}:{BACKEND_PORT} backlog=4096 reuseport;
        location /jmap/ {{
            default_type application/json;
            return 200 "{answer}";
        }}
        location /files/ {{ alias {d}/files/; }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    os.chmod(d, 0o755)
    return spawn(["nginx", "-p", d, "-c", path], d, "output.log", BACKEND_PORT)


# ---------------------------------------------------------------- the peers

class Peer:
    name = "?"
    describe = ""

    def __init__(self, index, state):
        self.port = PEER_BASE + index
        self.dir = os.path.join(state, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = self.log = None

    def target(self):
        return PROXY_ADDR, self.port

    def pids(self):
        return process_tree(self.proc.pid) if self.proc else []

    def stop(self):
        stop(self.proc, self.log)
        self.proc = None


class Direct(Peer):
    name = "direct"
    describe = "the client talks to the backend (physical reference)"

    def start(self):
        pass

    def target(self):
        return BACKEND_HOST, BACKEND_PORT


class Nginx(Peer):
    name = "nginx"

    def start(self):
        d = self.dir
        conf = f"""
daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {BACKEND_HOST}:{BACKEND_PORT};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {PROXY_ADDR}:{self.port} backlog=4096 reuseport;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 256k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        self.describe = (f"{v.split(': ', 1)[-1]}, reverse proxy, 2 workers, upstream "
                         "keepalive 256, proxy buffers 16 x 64k in memory")
        self.proc, self.log = spawn(["nginx", "-p", d, "-c", path], d, "output.log", self.port)


class HAProxy(Peer):
    name = "haproxy"
    SPLICE = "splice-auto"  # as HAProxy ships its examples: splice when it pays

    def start(self):
        d = self.dir
        conf = f"""
global
    nbthread 2
    maxconn 4000
    tune.pipesize 1048576
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    option {self.SPLICE}
    http-reuse always
frontend web
    bind {PROXY_ADDR}:{self.port}
    default_backend be
backend be
    server s1 {BACKEND_HOST}:{BACKEND_PORT}
"""
        path = os.path.join(d, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(conf)
        v = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        self.describe = (f"HAProxy {v.split()[2]}, mode http, 2 threads, http-reuse always, "
                         f"option {self.SPLICE}, tune.pipesize 1 MiB")
        self.proc, self.log = spawn(["haproxy", "-db", "-f", path], d, "output.log", self.port)


class HAProxySplice(HAProxy):
    """Splicing forced for every response body: what HAProxy does best with large
    downloads (measured here: splice-auto did not splice them)."""
    name = "haproxy-splice"
    SPLICE = "splice-response"


class Mailsplice(Peer):
    name = "ms-http"
    CONFIG = """
[server]
threads = 2
hostname = "bench.test"
log_level = "warn"
data_path = "auto"
host_down_threshold = 0

[routing]
default_destination = "bench"

[mapping]
source = "file"

[mapping.file]
path = "{mappings}"

[destination.bench]
host = "{bhost}"
proxy_protocol = false
forwarded = true
allow_plaintext_auth = true

[destination.bench.protocol.http]
port = {bport}
tls = "plain"

[[http.route]]
match = "/**"
extract = {{ from = "authorization" }}
fallback = "default"

[http]
max_keepalive_requests = 0

[listener.web]
protocol = "http"
bind = ["{addr}:{port}"]
tls = "plain"
max_connections = 40000
"""

    def start(self):
        mappings = os.path.join(self.dir, "mappings.tsv")
        with open(mappings, "w") as f:
            f.write(f"{ACCOUNT} bench\n")
        text = self.CONFIG.format(bhost=BACKEND_HOST, bport=BACKEND_PORT, addr=PROXY_ADDR,
                                  port=self.port, mappings=mappings)
        path = os.path.join(self.dir, "mailsplice.toml")
        with open(path, "w") as f:
            f.write(text)
        self.describe = ("mailsplice, http listener, every request routed by its Basic "
                         "account (mapping + cache), 2 threads, log_level warn (no "
                         "per-request line, as nginx with access_log off), splice for plain "
                         "bodies")
        self.proc, self.log = spawn([DAEMON, "-c", path], self.dir, "mailspliced.log",
                                    self.port)


# ---------------------------------------------------------------- workloads

WRK_LUA = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic {auth}"
{extra}
"""


def wrk(peer, state, seconds, close):
    import base64
    auth = base64.b64encode(f"{ACCOUNT}:{PASSWORD}".encode()).decode()
    script = os.path.join(state, f"wrk-{'close' if close else 'ka'}.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA.format(body=JMAP_BODY, auth=auth,
                               extra='wrk.headers["Connection"] = "close"' if close else ""))
    host, port = peer.target()
    pids = peer.pids()
    cpu0 = tree_cpu_seconds(pids)
    r = subprocess.run(["wrk", "-t2", "-c32" if not close else "-c16", f"-d{seconds}s",
                        "--latency", "-s", script, f"http://{host}:{port}/jmap/api"],
                       capture_output=True, text=True, timeout=seconds + 60)
    cpu = tree_cpu_seconds(pids) - cpu0
    out = r.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if not m:
        raise RuntimeError(f"wrk: {out}\n{r.stderr}")
    n, secs = int(m.group(1)), float(m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    return {"rps": n / secs, "p50": lat(50), "p99": lat(99),
            "per_core": n / cpu if cpu > 0 and pids else None,
            "errors": (int(errors.group(1)) if errors else 0),
            "socket_errors": sock_err.group(1) if sock_err else ""}


def download(peer, rate):
    host, port = peer.target()
    pids = peer.pids()
    cpu0 = tree_cpu_seconds(pids)
    t0 = time.monotonic()
    cmd = ["curl", "-sS", "--interface", CLIENT_ADDR, "-o", "/dev/null", "-w", "%{size_download}",
           "-u", f"{ACCOUNT}:{PASSWORD}"]
    if rate:
        cmd += ["--limit-rate", str(rate)]
    r = subprocess.run(cmd + [f"http://{host}:{port}/files/big.bin"], capture_output=True,
                       text=True, timeout=300)
    secs = time.monotonic() - t0
    cpu = tree_cpu_seconds(pids) - cpu0
    size = int(r.stdout or 0)
    if size != GIB:
        raise RuntimeError(f"download: {size} bytes, {r.stderr}")
    return {"cpu_gib": cpu * GIB / size if pids else None, "mibs": size / MIB / secs}


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine(peers, before, after, seconds):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    lines = [f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- kernel: {platform.release()} ({platform.version()})",
             f"- CPU: {cpu}, {os.cpu_count()} CPUs; memory {mem} MiB",
             f"- load before: `{before}`",
             f"- load after: `{after}`",
             f"- everything on loopback: wrk/curl from {CLIENT_ADDR} (curl) and the host "
             f"address (wrk), proxies on {PROXY_ADDR}, backend nginx on {BACKEND_HOST} "
             "(1 worker, sendfile)",
             f"- run time {seconds:.0f} s"]
    for p in peers:
        lines.append(f"- {p.name}: {p.describe}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, one each")
    ap.add_argument("--peers", default="direct,nginx,haproxy,haproxy-splice,ms-http")
    ap.add_argument("--rate", type=int, default=400, help="download pace, MB/s")
    ap.add_argument("--out", default=os.path.join(TOP, "bench", "results"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/http.py: run as root (nginx workers drop to www-data)")
    for tool in ("wrk", "nginx", "haproxy", "curl"):
        if not shutil.which(tool):
            sys.exit(f"bench/http.py: {tool} is missing (tools/deps.sh)")
    seconds, runs, dl_runs = (3, 1, 1) if a.quick else (10, 3, 3)
    rate = a.rate * 1000 * 1000

    before = uptime()
    print(f"bench/http.py: {before}", flush=True)
    state = tempfile.mkdtemp(prefix="ms-http-bench-")
    os.chmod(state, 0o755)
    backend, blog = start_backend(state)
    kinds = {"direct": Direct, "nginx": Nginx, "haproxy": HAProxy, "haproxy-splice": HAProxySplice,
             "ms-http": Mailsplice}
    peers = [kinds[n](i, state) for i, n in enumerate(a.peers.split(","))]

    t_ka = Table("Small JMAP requests, keep-alive (wrk, 2 threads, 32 connections)",
                 f"{seconds} s per run, {runs} runs: a {len(JMAP_BODY)}-byte POST with Basic "
                 f"credentials, a {len(JMAP_ANSWER)}-byte JSON answer. req/s per proxy core = "
                 "requests / CPU-seconds of the proxy's own processes (higher is better). "
                 "Medians; spread = min–max.",
                 [("rps", "req/s", "high", "%.0f"), ("per_core", "req/s per proxy core",
                                                      "high", "%.0f"),
                  ("p50", "p50 ms", "low", "%.3f"), ("p99", "p99 ms", "low", "%.3f")])
    t_cpr = Table("Small JMAP requests, one connection per request (wrk, 16 connections)",
                  "The same requests with Connection: close: every request a new TCP "
                  "connection to the proxy (and, for the proxies, to the backend unless "
                  "they pool: nginx and HAProxy do, mailsplice does not: a backend "
                  "connection serves one client connection).",
                  [("rps", "req/s", "high", "%.0f"), ("per_core", "req/s per proxy core",
                                                       "high", "%.0f"),
                   ("p50", "p50 ms", "low", "%.3f"), ("p99", "p99 ms", "low", "%.3f")])
    t_dl = Table("1 GiB download (curl)",
                 f"proxy CPU-s/GiB at {a.rate} MB/s offered (curl --limit-rate; lower is "
                 f"better), MiB/s unpaced; {dl_runs} runs each.",
                 [("cpu_gib", "proxy CPU-s/GiB", "low", "%.2f"), ("mibs", "MiB/s", "high",
                                                                  "%.0f")])
    t0 = time.monotonic()
    try:
        for peer in peers:
            try:
                peer.start()
            except Exception as e:
                print(f"  {peer.name}: not measured: {e}", flush=True)
                peer.describe = f"not measured: {str(e).splitlines()[0]}"
                peer.stop()
                continue
            print(f"  {peer.name}: {peer.describe}", flush=True)
            try:
                for table, close in ((t_ka, False), (t_cpr, True)):
                    res = [wrk(peer, state, seconds, close) for _ in range(runs)]
                    for k in ("rps", "per_core", "p50", "p99"):
                        table.add(peer.name, k, [r[k] for r in res])
                    bad = [r for r in res if r["errors"] or r["socket_errors"]]
                    print(f"    {'close' if close else 'keep-alive'}: "
                          f"{med([r['rps'] for r in res]):.0f} req/s"
                          + (f" (errors: {bad[0]['errors']} non-2xx, sockets "
                             f"{bad[0]['socket_errors']})" if bad else ""), flush=True)
                res = [download(peer, rate) for _ in range(dl_runs)]
                t_dl.add(peer.name, "cpu_gib", [r["cpu_gib"] for r in res])
                res = [download(peer, 0) for _ in range(dl_runs)]
                t_dl.add(peer.name, "mibs", [r["mibs"] for r in res])
                print(f"    download: {med(t_dl.rows[peer.name]['mibs']):.0f} MiB/s", flush=True)
            except Exception as e:
                print(f"  {peer.name}: stopped by {type(e).__name__}: {e}", flush=True)
            finally:
                peer.stop()
    finally:
        stop(backend, blog)

    after = uptime()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    out = os.path.join(a.out, f"http-{stamp}")
    os.makedirs(out, exist_ok=True)
    parts = [f"# HTTP proxy: mailsplice vs nginx vs HAProxy, {stamp}", "",
             machine(peers, before, after, time.monotonic() - t0), "",
             "Numbers, never pass/fail; the machine is shared: differences below ~20 % need "
             "a second run. \"vs best peer\" = the ratio to the best of nginx and the two "
             "HAProxy runs in that column.", ""]
    for table, png, key, label in ((t_ka, "keepalive.png", "per_core", "req/s per proxy core"),
                                   (t_cpr, "close.png", "per_core", "req/s per proxy core"),
                                   (t_dl, "download.png", "cpu_gib", "proxy CPU-s per GiB")):
        parts.append(table.markdown())
        if table.chart(os.path.join(out, png), key, label):
            parts.append(f"![{label}]({png})\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(parts))
    print("\n".join(parts))
    print(f"bench/http.py: results in {out}")
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
