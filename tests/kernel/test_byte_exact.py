"""Byte-exact data paths (issue 22): every path the daemon may choose by default moves
256 MiB each way at once, with a slow reader at both ends, and every byte is compared
with the stream it should be (tests/kernel/stream.h: a deterministic stream whose
words name their own offset, so a duplicate and a loss cannot cancel out, and a
difference is explained, e.g. "65483 bytes duplicated").

  - a plain pair (port-25 pass-through): path splice, on every kernel
  - TLS on both legs (IMAP, implicit TLS to the client and to the backend), TLS 1.2
    and 1.3: path ktls-splice where the kernel has kTLS (the vmtest guests), the
    userspace relay through OpenSSL where it does not (this project's CI host)

The ends are build/tests/streamcheck (C, OpenSSL), one process each. The slow reader
stops reading for 20 ms after every 8 MiB with a 64 KiB receive buffer, so the relay
has to hold back (full pipe, EAGAIN toward the reader) again and again. Runs on the
host (`make test`, suite "kernel") and in each vmtest guest (`make vmtest`).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from kernelpath import probe_ktls  # noqa: E402
from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy  # noqa: E402
from tests.harness.proxy import log_field as field  # noqa: E402

STREAMCHECK = os.path.join(ROOT, "build", "tests", "streamcheck")
OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
BACKEND_ADDR = "127.0.0.7"
SMTP = 39125 + OFFSET
PLAIN_BACKEND = 39126 + OFFSET
IMAPS = 39127 + OFFSET
TLS_BACKEND = 39128 + OFFSET
MIB = 1 << 20
TOTAL = 256 * MIB
SLOW = ["--rcvbuf", "65536", "--pause-ms", "20", "--pause-every", str(8 * MIB)]

CONFIG = """
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "tlsb"
smtp_passthrough_destination = "plainb"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.tlsb]
host = "{backend}"
tls_server_name = "backend.test"
forwarding = "proxy"

[destination.tlsb.protocol.imap]
port = {tls_backend}
tls = "implicit"

[destination.plainb]
host = "{backend}"
forwarding = "proxy"

[destination.plainb.protocol.smtp]
port = {plain_backend}
tls = "plain"

[listener.imaps]
protocol = "imap"
bind = ["{proxy}:{imaps}"]
tls = "implicit"

[listener.smtp]
protocol = "smtp"
bind = ["{proxy}:{smtp}"]
tls = "plain"
"""


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip(f"the data path tests need root; running as uid {os.geteuid()}")
    if not os.access(STREAMCHECK, os.X_OK):
        pytest.fail(f"{STREAMCHECK} is missing: make build/tests/streamcheck")
    d = tmp_path_factory.mktemp("byte-exact")
    os.chmod(d, 0o755)
    return str(d)


@pytest.fixture(scope="module")
def proxy(state, pki):
    cfg = CONFIG.format(cert=pki.proxy[0], key=pki.proxy[1], backend=BACKEND_ADDR,
                        tls_backend=TLS_BACKEND, plain_backend=PLAIN_BACKEND, proxy=PROXY_ADDR,
                        imaps=IMAPS, smtp=SMTP)
    p = Proxy(state, "byte-exact", cfg, env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    yield p
    assert p.stop() == 0


def test_the_checker_finds_and_names_faults():
    """A byte-exact test is only as good as its checker: injected duplicates, losses
    and zero-filled framing must be found and named."""
    r = subprocess.run([STREAMCHECK, "selftest"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "65483 bytes duplicated" in r.stdout


def run_pair(server_args, client_args, timeout=900):
    srv = subprocess.Popen([STREAMCHECK, "server", "--count", "1", "--timeout", str(timeout)] +
                           server_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        first = srv.stdout.readline()
        assert "listening" in first, first + srv.stderr.read()
        cl = subprocess.run([STREAMCHECK, "client", "--source", CLIENT_ADDR, "--up", str(TOTAL),
                             "--down", str(TOTAL), "--seed", "22", "--timeout", str(timeout)] +
                            client_args, capture_output=True, text=True, timeout=timeout + 60)
        out, err = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    client = json.loads(cl.stdout.strip().splitlines()[-1]) if cl.stdout.strip() else {}
    server = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return client, server, cl.stderr + err


def check(proxy, mark, client, server, diag, want_path):
    log = proxy.log_text(mark)[-3000:]
    assert client.get("exact") and server.get("exact"), (client, server, diag, log)
    assert client["received"] == server["received"] == TOTAL
    line = proxy.session_line(client["client_port"], since=mark)
    assert field(line, "path_up") == want_path, line
    assert field(line, "path_down") == want_path, line
    # the STREAM line and the PROXY header are bytes of the relay too; the data is exact
    assert int(field(line, "bytes_down")) >= TOTAL
    return line


def test_plain_pair_spliced_256mib_each_way_slow_readers(proxy):
    mark = proxy.log_size()
    client, server, diag = run_pair(
        ["--listen", f"{BACKEND_ADDR}:{PLAIN_BACKEND}", "--proxy-v2"] + SLOW,
        ["--connect", f"{PROXY_ADDR}:{SMTP}"] + SLOW)
    check(proxy, mark, client, server, diag, "splice")


TLS_CASES = [pytest.param("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", id="tls12-aes128gcm"),
             pytest.param("1.3", "TLS_AES_128_GCM_SHA256", id="tls13-aes128gcm")]


@pytest.mark.parametrize("version,cipher", TLS_CASES)
def test_tls_legs_default_path_256mib_each_way_slow_readers(proxy, pki, version, cipher):
    """The path is the default for this kernel: kTLS + splice both ways where the kernel
    has kTLS (TLS 1.2 keyed by OpenSSL, 1.3 receive keyed by the daemon), else
    OpenSSL in user space."""
    want = "ktls-splice" if probe_ktls() is None else "userspace"
    mark = proxy.log_size()
    tls = ["--tls", "--tls-version", version, "--cipher", cipher]
    client, server, diag = run_pair(
        ["--listen", f"{BACKEND_ADDR}:{TLS_BACKEND}", "--proxy-v2", "--imap", "--cert",
         pki.backend[0], "--key", pki.backend[1]] + tls + SLOW,
        ["--connect", f"{PROXY_ADDR}:{IMAPS}", "--imap-login", "--ca", pki.ca_file, "--sni",
         "mail.proxy.test"] + tls + SLOW)
    check(proxy, mark, client, server, diag, want)


def test_tls13_key_update_from_the_backend(proxy, pki):
    """RFC 8446 section 4.6.3: a peer may update its sending keys at any time. In
    OpenSSL (no kTLS) the relay follows it and the stream stays exact. With kernel TLS
    receive the Debian 6.1 and 6.12 kernels cannot take new keys (a second TLS_RX is
    refused with EBUSY, see test_kernel_features.py): the session must end, with a
    session line that says why, and every byte forwarded before it must be right."""
    kernel = probe_ktls() is None
    mark = proxy.log_size()
    tls = ["--tls", "--tls-version", "1.3", "--cipher", "TLS_AES_128_GCM_SHA256"]
    at = 5 * MIB
    client, server, diag = run_pair(
        ["--listen", f"{BACKEND_ADDR}:{TLS_BACKEND}", "--proxy-v2", "--imap", "--cert",
         pki.backend[0], "--key", pki.backend[1], "--key-update-at", str(at)] + tls,
        ["--connect", f"{PROXY_ADDR}:{IMAPS}", "--imap-login", "--ca", pki.ca_file, "--sni",
         "mail.proxy.test"] + tls, timeout=120)
    assert client and server, diag
    assert not client["corrupt"] and not server["corrupt"], (client, server)
    line = proxy.session_line(client["client_port"], since=mark)
    if not kernel:
        assert client["exact"] and server["exact"], (client, server, diag)
        assert field(line, "path_down") == "userspace", line
        return
    assert field(line, "path_down") == "ktls-splice", line
    assert field(line, "end") == "error", line
    assert "KeyUpdate" in (field(line, "detail") or ""), line
    assert not client["exact"] and client["received"] <= at, client
