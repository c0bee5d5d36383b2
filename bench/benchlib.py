"""What the benchmark scripts share (bench/datapath.py, bench/peers.py and
bench/peers_backend.py): paced sending and whole-machine busy CPU."""

import time


def send_paced(send, data, n, rate):
    """Send n bytes cut from data, repeated, through send(memoryview), at most rate
    bytes per second when rate is not 0. Returns the last piece sent."""
    view = memoryview(data)
    t0 = time.monotonic()
    sent = 0
    piece = view[:0]
    while sent < n:
        piece = view[:min(len(view), n - sent)]
        send(piece)
        sent += len(piece)
        if rate:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    return piece


def busy_jiffies():
    """Busy time of the whole machine from /proc/stat: everything but idle, iowait and
    nice. Background jobs on a shared machine (a fuzzer at nice 19, say) stay out of
    the figure; the benchmarks run at nice 0."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[1] - v[3] - v[4]
