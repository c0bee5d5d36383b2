"""The daemon's data path on the kernel it runs under (issue 6, run in vmtest guests).

  - the start-up probe: which paths this kernel gave the daemon (kTLS, sockmap)
  - TLS 1.2 and 1.3 x AES-128-GCM / AES-256-GCM / ChaCha20-Poly1305 on both legs of a
    proxied IMAP session (real OpenSSL at both ends: tests/kernel/tls_peer.py), 4 MiB
    echoed through it, SHA-256 equal at the backend and back at the client; every leg
    must be spliced by kTLS in both directions: TLS 1.2 keyed by OpenSSL, TLS 1.3
    transmit keyed by OpenSSL and receive keyed by the daemon (OpenSSL 3.0 gives no
    kTLS receive for 1.3: daemon/net/ktls13.c, docs/datapath.md)
  - a plain pair through sockmap (data_path = "sockmap"), 32 MiB each way compared byte
    by byte with slow readers (xfail: the opt-in path is not byte-exact on these
    kernels, docs/datapath.md)

Needs root and kTLS (the `ktls` fixture skips, or fails under VMTEST_REQUIRE_KTLS=1).
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from kernelpath import peer_env  # noqa: E402
from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy  # noqa: E402
from tests.harness.proxy import log_field as field  # noqa: E402

pytestmark = pytest.mark.usefixtures("ktls")

BACKEND_ADDR = "127.0.0.7"
OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAPS = 39993 + OFFSET
BACKEND_PORT = 39994 + OFFSET
SMTP = 39025 + OFFSET
PUMP_PORT = 39026 + OFFSET
MIB = 1 << 20
STREAMCHECK = os.path.join(ROOT, "build", "tests", "streamcheck")

CONFIG = """
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"
data_path = "{data_path}"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "tlsb"
smtp_passthrough_destination = "pump"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.tlsb]
host = "{backend}"
tls_server_name = "backend.test"
forwarding = "proxy"

[destination.tlsb.protocol.imap]
port = {backend_port}
tls = "implicit"

[destination.pump]
host = "{backend}"
forwarding = "proxy"

[destination.pump.protocol.smtp]
port = {pump_port}
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
def state():
    if os.geteuid() != 0:
        pytest.skip(f"the data path tests need root (BPF); running as uid {os.geteuid()}")
    d = tempfile.mkdtemp(prefix="ms-kt-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def start(state, pki, name, data_path):
    cfg = CONFIG.format(data_path=data_path, cert=pki.proxy[0], key=pki.proxy[1],
                        backend=BACKEND_ADDR, backend_port=BACKEND_PORT, pump_port=PUMP_PORT,
                        proxy=PROXY_ADDR, imaps=IMAPS, smtp=SMTP)
    p = Proxy(state, name, cfg, env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    return p


@pytest.fixture(scope="module")
def proxy(state, pki):
    p = start(state, pki, "auto", "auto")
    yield p
    assert p.stop() == 0


def test_probe_reports_ktls_and_sockmap_on_this_kernel(proxy):
    line = proxy.wait_log(r"event=data-path ")
    assert field(line, "ktls") == "yes", line
    assert field(line, "tls_legs") == "ktls-splice", line
    assert field(line, "sockmap") == "yes", line
    assert field(line, "plain_pairs") == "splice", line


TLS12 = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
         "ECDHE-ECDSA-CHACHA20-POLY1305"]
TLS13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
CASES = ([pytest.param("1.2", c, id="tls12-" + c) for c in TLS12] +
         [pytest.param("1.3", c, id="tls13-" + c) for c in TLS13])


@pytest.mark.parametrize("version,cipher", CASES)
def test_tls_legs_byte_exact_through_the_proxy(proxy, pki, state, version, cipher):
    env = peer_env(state, version, cipher)
    mark = proxy.log_size()
    total = 4 * MIB
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "kernel", "tls_peer.py"),
         "--proxy", f"{PROXY_ADDR}:{IMAPS}", "--listen", f"{BACKEND_ADDR}:{BACKEND_PORT}",
         "--version", version, "--cipher", cipher, "--bytes", str(total),
         "--client-addr", CLIENT_ADDR, "--cert", pki.backend[0], "--key", pki.backend[1],
         "--ca", pki.ca_file, "--sni", "mail.proxy.test"],
        env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stderr[-3000:] + r.stdout[-2000:] + "\n--- daemon log:\n" +
                               proxy.log_text(mark)[-4000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not out["errors"], out
    # the negotiated suite is the one pinned, on both legs
    assert out["client_cipher"] == cipher and out["backend_cipher"] == cipher, out
    assert out["client_version"] == out["backend_version"] == f"TLSv{version}"
    line = proxy.session_line(out["client_port"], since=mark)
    log = proxy.log_text(mark)[-3000:]
    # byte-exact both ways
    assert out["backend_received"] == total, (out, log)
    assert out["backend_sha256"] == out["sent_sha256"], (out, log)
    assert out["echo_received"] == total, (out, log)
    assert out["echo_sha256"] == out["sent_sha256"], (out, log)
    assert field(line, "path_up") == "ktls-splice", line
    assert field(line, "path_down") == "ktls-splice", line


@pytest.mark.xfail(strict=False, reason="experimental sockmap path (data_path = \"sockmap\", never "
                   "the default): the kernels measured duplicate or lose whole skbs once the "
                   "program has passed bytes up (docs/datapath.md); reported, not gating")
def test_plain_pair_through_sockmap_byte_exact(state, pki):
    """32 MiB each way at once through the opt-in sockmap path, every byte compared
    (streamcheck), with slow readers: the in-kernel queue limit is reached, so the
    program passes bytes up and the daemon takes the direction back and forth."""
    p = start(state, pki, "sockmap", "sockmap")
    try:
        line = p.wait_log(r"event=data-path ")
        assert field(line, "plain_pairs") == "sockmap", line
        mark = p.log_size()
        total = 32 * MIB
        slow = ["--rcvbuf", "65536", "--pause-ms", "20", "--pause-every", str(4 * MIB)]
        srv = subprocess.Popen([STREAMCHECK, "server", "--listen", f"{BACKEND_ADDR}:{PUMP_PORT}",
                                "--proxy-v2", "--timeout", "120"] + slow,
                               stdout=subprocess.PIPE, text=True)
        srv.stdout.readline()
        cl = subprocess.run([STREAMCHECK, "client", "--connect", f"{PROXY_ADDR}:{SMTP}",
                             "--source", CLIENT_ADDR, "--up", str(total), "--down", str(total),
                             "--timeout", "120"] + slow,
                            capture_output=True, text=True, timeout=200)
        out, _ = srv.communicate(timeout=60)
        client = json.loads(cl.stdout.strip().splitlines()[-1])
        server = json.loads(out.strip().splitlines()[-1])
        assert client["exact"] and server["exact"], (client, server)
        line = p.session_line(client["client_port"], since=mark)
        assert field(line, "path_up") == "sockmap" and field(line, "path_down") == "sockmap"
    finally:
        assert p.stop() == 0
