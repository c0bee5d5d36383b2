#!/usr/bin/python3
"""bench/stores.py: what a remote mapping store costs a login (issue 21).

One run, one machine, loopback. 1,000,000 mappings in each store:
  file    the mapping file (in memory: the reference point)
  redis   a real Redis 7 (GET key_prefix + account over hiredis, pipelined)
  sql     a real PostgreSQL 15 (prepared SELECT over libpq, the schema of
          conf/mailsplice-postgres.sql)
Each store gets its own mailspliced (2 workers, plain IMAP listener, forwarding none) in
front of bench/peers_backend.py.

Measured, per store:
  latency   one login at a time, connect to the tagged OK of LOGIN: p50/p99 of N logins
            cold (every login a different account, so every lookup misses the cache and
            goes to the store) and cached (one account, already in the cache). The three
            daemons run side by side and take turns, one login each per round in a random
            order, so the machine's noise falls on all alike; the latency a store adds is
            the p50/p99 of (store - file) within each round.
  rate      one daemon at a time (the others idle): logins/s with 2 client processes x 8
            threads for S seconds, cold (random
            accounts of the million) and cached (100 accounts), with the daemon's own
            CPU-ms and read/write syscalls per login (/proc/PID/stat, /proc/PID/io):
            counts, which the other jobs on this shared machine do not bend.
The store daemons' own CPU per login is reported too (a remote store is not free: it
works elsewhere).
  lookup    build/bench/store_lookup: the store path alone (daemon/route/store*.c on one
            event loop with 5 connections, one worker's share), no client or protocol
            around it: N cold lookups one at a time, then N with 16 in flight.
Machine load (uptime) is printed before and after; p99s on a loaded machine measure the
load as much as the code.

    bench/stores.py                  (about 5 minutes: loading 2 x 1M rows is most of it)
    bench/stores.py --quick          (10,000 mappings, short runs: a smoke test)

Results: bench/results/stores-<time>/README.md (tables) and results.json.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "bench"))
import peers_backend as pb  # noqa: E402
from tests.harness.pki import Pki  # noqa: E402
from tests.harness.proxy import PROXY_ADDR, Proxy  # noqa: E402
from tests.harness.stores import PostgresServer, RedisServer, missing_prerequisites  # noqa: E402

OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BASE = 27000 + OFFSET
BACKEND_HOST = "127.0.0.7"
BACKEND_BASE = BASE + 100  # pb's listeners: +0 IMAP, ...
IMAP = {"file": BASE + 143, "redis": BASE + 243, "sql": BASE + 343}
REDIS_PORT, PG_PORT = BASE + 379, BASE + 432
HZ = os.sysconf("SC_CLK_TCK")


def account(i):
    return f"user{i}@example.org"


def dest(i):
    return "new" if i % 2 else "old"


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- loading the stores

def load_file(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"{account(i)} {dest(i)}\n")


def load_redis(redis, n, workdir):
    proto = os.path.join(workdir, "redis.proto")
    with open(proto, "wb") as f:
        for i in range(n):
            k, v = f"route:{account(i)}".encode(), dest(i).encode()
            f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
    with open(proto, "rb") as f:
        out = subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"], stdin=f,
                             capture_output=True, text=True, timeout=600)
    if "errors: 0" not in out.stdout:
        raise RuntimeError(f"redis-cli --pipe: {out.stdout}{out.stderr}")
    os.unlink(proto)


def load_pg(pg, n, workdir):
    data = os.path.join(workdir, "routes.tsv")
    with open(data, "w") as f:
        for i in range(n):
            f.write(f"{account(i)}\t{dest(i)}\n")
    os.chmod(workdir, 0o755)
    os.chmod(data, 0o644)
    # a bulk load would otherwise queue a million NOTIFYs: the nodes would drop a
    # million cache entries one by one. Load with the trigger off, then tell them once
    # (TRUNCATE-style invalidate of everything) if nodes were running.
    pg.superuser_sql("ALTER TABLE routes DISABLE TRIGGER mailsplice_notify")
    pg.superuser_sql(f"COPY routes (identifier, destination) FROM '{data}'")
    pg.superuser_sql("ALTER TABLE routes ENABLE TRIGGER mailsplice_notify")
    pg.superuser_sql("ANALYZE routes")
    os.unlink(data)


# ---------------------------------------------------------------- the daemon

def config(kind, url, mapfile):
    if kind == "file":
        src = f'[mapping.file]\npath = "{mapfile}"\n'
    elif kind == "redis":
        src = f'[mapping.redis]\nurl = "{url}"\n'
    else:
        src = (f'[mapping.sql]\nurl = "{url}"\n'
               'query = "SELECT destination FROM routes WHERE identifier = $1"\n')
    dests = "".join(f"""
[destination.{d}]
host = "{BACKEND_HOST}"
forwarding = "none"
allow_plaintext_auth = true

[destination.{d}.protocol.imap]
port = {BACKEND_BASE + pb.IMAP}
tls = "plain"
""" for d in ("old", "new"))
    return f"""
[server]
threads = 2
log_level = "info"
host_down_threshold = 0
node_name = "bench-{kind}"

[routing]
default_destination = "old"

[mapping]
source = "{kind}"
{src}
{dests}
[listener.imap]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAP[kind]}"]
tls = "plain"
max_connections = 100000
"""


def proc_counts(pid):
    """(CPU seconds, read+write syscalls) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    cpu = (int(v[11]) + int(v[12])) / HZ
    io = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, x = line.partition(":")
            io[k] = int(x)
    return cpu, io["syscr"] + io["syscw"]


def tree_cpu(pids):
    t = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            t += (int(v[11]) + int(v[12])) / HZ
        except OSError:
            pass
    return t


def children_of(pid):
    """pid and every process below it (PostgreSQL's backends)."""
    out, todo = [], [pid]
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


# ---------------------------------------------------------------- clients

def login(port, acct):
    s = socket.create_connection((PROXY_ADDR, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rwb")
    if not f.readline().startswith(b"* OK"):
        raise RuntimeError("no greeting")
    f.write(b"a LOGIN " + acct.encode() + b" pw\r\n")
    f.flush()
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    s.close()
    if not line.startswith(b"a OK"):
        raise RuntimeError(f"login {acct}: {line!r}")


def latency(port, accounts):
    times = []
    for a in accounts:
        t0 = time.perf_counter_ns()
        login(port, a)
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return {"p50_us": times[len(times) // 2], "p99_us": times[int(len(times) * 0.99)],
            "n": len(times)}


def rate_worker(port, pool, seconds, threads, seed, q):
    counts = [0] * threads
    errors = [0] * threads
    end = time.monotonic() + seconds

    def loop(k):
        rnd = random.Random(seed * 1000 + k)
        while time.monotonic() < end:
            try:
                login(port, account(rnd.randrange(pool)))
                counts[k] += 1
            except (OSError, RuntimeError):
                errors[k] += 1

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((sum(counts), sum(errors)))


def rate(port, daemon_pid, store_pids, pool, seconds):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    c0, s0 = proc_counts(daemon_pid)
    st0 = tree_cpu(store_pids)
    t0 = time.monotonic()
    procs = [ctx.Process(target=rate_worker, args=(port, pool, seconds, 8, i, q))
             for i in range(2)]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    dt = time.monotonic() - t0
    c1, s1 = proc_counts(daemon_pid)
    n = sum(r[0] for r in res)
    return {"logins_per_s": n / dt, "errors": sum(r[1] for r in res),
            "cpu_ms_per_login": (c1 - c0) / max(n, 1) * 1000,
            "syscalls_per_login": (s1 - s0) / max(n, 1),
            "store_cpu_ms_per_login": (tree_cpu(store_pids) - st0) / max(n, 1) * 1000,
            "n": n}


# ---------------------------------------------------------------- the run

def store_lookup(kind, url, n, keys):
    exe = os.path.join(TOP, "build", "bench", "store_lookup")
    out = subprocess.run([exe, "-n", str(n), "-k", str(keys), "-c", "16", kind, url],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"store_lookup {kind}: {out.stderr}")
    return json.loads(out.stdout)


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def paired_latency(kinds, accounts_of, rounds):
    """One login per store per round, the stores in a random order each round, one at a
    time: the machine's noise falls on every store alike, and store - file is taken
    within each round (a paired difference), not between two distributions."""
    t = {k: [] for k in kinds}
    rnd = random.Random(1)
    for i in range(rounds):
        order = list(kinds)
        rnd.shuffle(order)
        for k in order:
            t0 = time.perf_counter_ns()
            login(IMAP[k], accounts_of(k, i))
            t[k].append((time.perf_counter_ns() - t0) / 1000)
    out = {}
    for k in kinds:
        out[k] = {"p50_us": percentile(t[k], 0.5), "p99_us": percentile(t[k], 0.99),
                  "n": rounds}
        if k != "file":
            d = [a - b for a, b in zip(t[k], t["file"])]
            out[k]["added_p50_us"] = percentile(d, 0.5)
            out[k]["added_p99_us"] = percentile(d, 0.99)
    return out


def run(kinds, urls, mapfile, state, store_pids, args, n_map):
    procs = {}
    try:
        for k in kinds:
            p = Proxy(state, f"bench-{k}", config(k, urls[k], mapfile))
            t0 = time.monotonic()
            p.start(timeout=120)
            procs[k] = (p, time.monotonic() - t0)
        for k in kinds:  # warm every process and connection up
            for i in range(200):
                login(IMAP[k], account(n_map - 1 - i))
        # cold: every login a different account of the million, in no cache
        pool = random.Random(2).sample(range(100, n_map - 300), args.latency_n * len(kinds))
        cold = {k: pool[j * args.latency_n:(j + 1) * args.latency_n]
                for j, k in enumerate(kinds)}
        lat_cold = paired_latency(kinds, lambda k, i: account(cold[k][i]), args.latency_n)
        hot = account(n_map - 1)
        for k in kinds:
            login(IMAP[k], hot)
        lat_cached = paired_latency(kinds, lambda k, i: hot, args.latency_n)
        results = {}
        for k in kinds:
            p, started = procs[k]
            r = {"start_s": started, "cold": lat_cold[k], "cached": lat_cached[k]}
            r["rate_cold"] = rate(IMAP[k], p.proc.pid, store_pids[k](), n_map, args.seconds)
            # 100 accounts, looked up once each first: every later login hits the cache
            for i in range(100):
                login(IMAP[k], account(i))
            r["rate_cached"] = rate(IMAP[k], p.proc.pid, store_pids[k](), 100, args.seconds)
            results[k] = r
            print(k, json.dumps(r), flush=True)
        return results
    finally:
        for p, _ in procs.values():
            p.stop()


def table(results, kinds):
    lines = []
    lines.append("| store | cold p50 | cold p99 | cached p50 | cached p99 | "
                 "added cold p50 / p99 | added cached p50 / p99 |")
    lines.append("|---|---|---|---|---|---|---|")
    for k in kinds:
        r = results[k]
        add = lambda w: ("-" if k == "file" else  # noqa: E731
                         f"{r[w]['added_p50_us']:+.0f} / {r[w]['added_p99_us']:+.0f}")
        lines.append(f"| {k} | {r['cold']['p50_us']:.0f} | {r['cold']['p99_us']:.0f} | "
                     f"{r['cached']['p50_us']:.0f} | {r['cached']['p99_us']:.0f} | "
                     f"{add('cold')} | {add('cached')} |")
    lines.append("")
    lines.append("| store | workload | logins/s | vs file | mailspliced CPU-ms/login | "
                 "read/write syscalls/login | store CPU-ms/login | errors |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for k in kinds:
        for w in ("rate_cold", "rate_cached"):
            r, base = results[k][w], results["file"][w]
            lines.append(f"| {k} | {w[5:]} | {r['logins_per_s']:.0f} | "
                         f"{r['logins_per_s'] / base['logins_per_s']:.2f} | "
                         f"{r['cpu_ms_per_login']:.3f} | {r['syscalls_per_login']:.1f} | "
                         f"{r['store_cpu_ms_per_login']:.3f} | {r['errors']} |")
    lines.append("")
    lines.append("| store | lookups | in flight | p50 µs | p90 µs | p99 µs | p99.9 µs | "
                 "lookups/s | CPU µs/lookup (ours) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for k in kinds:
        for ph in ("serial", "concurrent"):
            r = results[k].get("lookup", {}).get(ph)
            if r:
                lines.append(f"| {k} | {r['n']} | {r['inflight']} | {r['p50_us']} | "
                             f"{r['p90_us']} | {r['p99_us']} | {r['p999_us']} | "
                             f"{r['per_s']:.0f} | {r['cpu_us_per_lookup']:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mappings", type=int, default=1_000_000)
    ap.add_argument("--latency-n", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--lookup-n", type=int, default=50000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.mappings, args.latency_n, args.seconds, args.lookup_n = 10_000, 200, 2, 2000
    for exe in ("mailspliced", "bench/store_lookup"):
        if not os.path.exists(os.path.join(TOP, "build", exe)):
            raise SystemExit(f"build/{exe} is missing: make bench-stores")
    kinds = ["file"]
    problems = {k: missing_prerequisites(k) for k in ("redis", "postgres")}
    kinds += [k for k, p in (("redis", problems["redis"]), ("sql", problems["postgres"]))
              if not p]
    for k, p in problems.items():
        if p:
            print(f"{k}: skipped: {'; '.join(p)}")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    out_dir = os.path.join(TOP, "bench", "results", f"stores-{stamp}")
    state = tempfile.mkdtemp(prefix="ms-bench-stores-", dir="/tmp")
    os.chmod(state, 0o755)
    load = [uptime()]
    print(load[0], flush=True)
    ctx = multiprocessing.get_context("fork")
    pki = Pki(os.path.join(state, "pki"))
    cert, key = pki.issue("bench.test", ["bench.test", BACKEND_HOST])
    backend, shared = pb.start(ctx, BACKEND_HOST, BACKEND_BASE, cert, key)
    redis = pg = None
    results, timings = {}, {}
    try:
        mapfile = os.path.join(state, "mappings.tsv")
        t0 = time.monotonic()
        load_file(mapfile, args.mappings)
        timings["file_write_s"] = time.monotonic() - t0
        urls = {"file": None}
        if "redis" in kinds:
            redis = RedisServer(state, REDIS_PORT).start()
            t0 = time.monotonic()
            load_redis(redis, args.mappings, state)
            timings["redis_load_s"] = time.monotonic() - t0
            urls["redis"] = redis.url
        if "sql" in kinds:
            pg = PostgresServer(state, PG_PORT).start()
            t0 = time.monotonic()
            load_pg(pg, args.mappings, state)
            timings["pg_load_s"] = time.monotonic() - t0
            urls["sql"] = pg.url
        pids = {"file": lambda: [], "redis": lambda: [redis.proc.pid] if redis else [],
                "sql": lambda: children_of(pg.proc.pid) if pg else []}
        lookups = {}
        for k in kinds[1:]:
            lookups[k] = store_lookup(k, urls[k], args.lookup_n, args.mappings)
            print(k, "lookup", json.dumps(lookups[k]), flush=True)
        results = run(kinds, urls, mapfile, state, pids, args, args.mappings)
        for k in lookups:
            results[k]["lookup"] = lookups[k]
    finally:
        if redis:
            redis.stop()
        if pg:
            pg.stop()
        backend.terminate()
        backend.join()
    load.append(uptime())
    print(load[1], flush=True)

    text = table(results, kinds)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"results": results, "timings": timings, "load": load,
                   "mappings": args.mappings, "args": vars(args)}, f, indent=1)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(f"# Mapping stores: {args.mappings:,} mappings each ({stamp})\n\n")
        f.write(f"- machine: {platform.node()}, {os.cpu_count()} CPUs, "
                f"kernel {platform.release()}; shared with other jobs\n")
        f.write(f"- load before: `{load[0]}`\n- load after: `{load[1]}`\n")
        f.write(f"- loading: {json.dumps(timings)}\n")
        f.write("- mailspliced: 2 workers, plain IMAP, forwarding none, log_level info (one session line per login), "
                "pool_size 16 (5 connections per loop); backend bench/peers_backend.py\n")
        f.write("- latency: microseconds, connect to tagged OK of LOGIN, one login at a "
                f"time, {args.latency_n} rounds of one login per store in a random order "
                "(all three daemons running, idle but for that login); 'added' = p50/p99 "
                "of (store - file) within each round\n")
        f.write(f"- rate: 2 client processes x 8 threads, {args.seconds:g} s; "
                "cold = random accounts of all mappings, cached = 100 accounts\n\n")
        f.write(text + "\n")
    print(text)
    print(f"results in {out_dir}")


if __name__ == "__main__":
    main()
