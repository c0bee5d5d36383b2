"""Restart without dropping a TLS session (issue 23), run in vmtest guests with kTLS.

An IMAPS session (TLS on both legs, real OpenSSL at both ends: upgrade_peer.py) logs in
and IDLEs; the daemon is replaced with `mailspliced --upgrade`; then, through the new
process with the old one gone, IDLE ends, a 4 MiB FETCH arrives byte-identical and a
NOOP is answered. With TLS 1.2 (keys installed by OpenSSL both ways) and TLS 1.3
(transmit keyed by OpenSSL, receive by the daemon): the kernel holds the keys and the
record sequence numbers, so the session moves with its two sockets.

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
from tests.harness.proxy import CLIENT_ADDR, DAEMON, PROXY_ADDR  # noqa: E402
from tests.harness.proxy import log_field as field  # noqa: E402
from tests.harness.upgrade import Upgradable, alive  # noqa: E402

pytestmark = pytest.mark.usefixtures("ktls")

BACKEND_ADDR = "127.0.0.7"
IMAPS = 39893
BACKEND_PORT = 39894

CONFIG = """
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"
shutdown_grace = "20s"
control_socket = "{state}/control.sock"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "tlsb"

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

[listener.imaps]
protocol = "imap"
bind = ["{proxy}:{imaps}"]
tls = "implicit"
"""


@pytest.fixture(scope="module")
def state():
    if os.geteuid() != 0:
        pytest.skip(f"the data path tests need root; running as uid {os.geteuid()}")
    d = tempfile.mkdtemp(prefix="ms-kt-up-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


CASES = [pytest.param("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", id="tls12-aes128gcm"),
         pytest.param("1.3", "TLS_AES_128_GCM_SHA256", id="tls13-aes128gcm"),
         pytest.param("1.3", "TLS_CHACHA20_POLY1305_SHA256", id="tls13-chacha20")]


@pytest.mark.parametrize("version,cipher", CASES)
def test_idle_imaps_session_survives_an_upgrade(state, pki, version, cipher):
    d = os.path.join(state, f"{version}-{cipher}")
    os.makedirs(d, exist_ok=True)
    cfg = CONFIG.format(state=d, cert=pki.proxy[0], key=pki.proxy[1], backend=BACKEND_ADDR,
                        backend_port=BACKEND_PORT, proxy=PROXY_ADDR, imaps=IMAPS)
    p = Upgradable(d, "up", cfg, env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    try:
        env = peer_env(d, version, cipher, pki.ca_file)
        old = p.pid
        mark = p.log_size()
        r = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tests", "kernel", "upgrade_peer.py"),
             "--proxy", f"{PROXY_ADDR}:{IMAPS}", "--listen", f"{BACKEND_ADDR}:{BACKEND_PORT}",
             "--version", version, "--cipher", cipher, "--client-addr", CLIENT_ADDR,
             "--cert", pki.backend[0], "--key", pki.backend[1], "--ca", pki.ca_file,
             "--sni", "mail.proxy.test", "--daemon", DAEMON, "--config", p.config_path,
             "--old-pid", str(old)],
            env=env, capture_output=True, text=True, timeout=300)
        log = p.log_text(mark)
        assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-2000:] + log[-4000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        if out.get("new_pid"):
            p.old.append(old)
            p.pid = out["new_pid"]
        assert not out["errors"], (out, log[-4000:])
        assert out["client_version"] == out["backend_version"] == f"TLSv{version}", out
        if version == "1.3":
            assert out["client_cipher"] == out["backend_cipher"] == cipher, out
        # the upgrade moved the session, and the old process is gone
        assert out["upgrade_rc"] == 0, out
        assert "1 sessions moved" in out["upgrade_stdout"], (out, log[-4000:])
        assert out["old_gone"], out
        new = out["new_pid"]
        assert new and new != old and alive(new)
        line = p.wait_log(r"event=handover-session .*result=adopted", since=mark)
        assert field(line, "path_up") == "ktls-splice", line
        assert field(line, "path_down") == "ktls-splice", line
        # IDLE ended, the FETCH came through byte-identical, NOOP answered: all served
        # by the new process
        assert out["backend_idle_end"] == "DONE", out
        assert out["fetched"] >= 4 << 20, out
        assert out["fetched_sha256"] == out["sent_sha256"], out
        replies = out["replies"]
        assert any(x.startswith("a3 OK") for x in replies), replies
        assert any(x.startswith("a4 OK") for x in replies), replies
        assert any(x.startswith("a5 OK") for x in replies), replies
        line = p.session_line(out["client_port"], since=mark)
        assert field(line, "moves") == "1", line
        assert field(line, "path_up") == "ktls-splice" and field(line, "path_down") == "ktls-splice"
    finally:
        p.stop()
