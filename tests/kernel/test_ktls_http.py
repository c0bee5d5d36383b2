"""HTTP bodies on the kernel data path (issue 20, run in vmtest guests).

An https listener (TLS 1.2 and 1.3 with the client) in front of a plain HTTP backend:
a Content-Length download and upload of 16 MiB each must come through byte for byte,
and the request's log line must say which path moved them. With TLS 1.2 OpenSSL keys
kTLS both ways, so both bodies are spliced (ktls-splice). With TLS 1.3 OpenSSL 3.0 keys
the transmit direction only: the download is spliced, the upload goes through OpenSSL
(the HTTP module does not key the receive direction itself, as the relay does for a
whole mail session: it still has request heads to read through OpenSSL).

Needs root and kTLS (the `ktls` fixture skips, or fails under VMTEST_REQUIRE_KTLS=1).
"""

import hashlib
import os
import re
import socket
import ssl
import sys
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.harness.pki import Pki  # noqa: E402
from tests.harness.proxy import PROXY_ADDR, Proxy, connect  # noqa: E402
from tests.harness.proxy import log_field as field  # noqa: E402
from tests.harness.pump import pattern  # noqa: E402

pytestmark = pytest.mark.usefixtures("ktls")

BACKEND_ADDR = "127.0.0.7"
HTTPS = 39443
BACKEND_PORT = 39480
MIB = 1 << 20
SIZE = 16 * MIB
BODY = pattern(SIZE, 20)

CONFIG = """
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "web"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.web]
host = "{backend}"
proxy_protocol = false
allow_plaintext_auth = true

[destination.web.protocol.http]
port = {backend_port}
tls = "plain"

[[http.route]]
match = "/**"
destination = "web"

[listener.https]
protocol = "http"
bind = ["{proxy}:{https}"]
tls = "implicit"
"""


class Backend(threading.Thread):
    """GET answers the 16 MiB pattern with a Content-Length; PUT reads its body and
    answers its SHA-256."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((BACKEND_ADDR, BACKEND_PORT))
        self.sock.listen(16)

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    got = c.recv(65536)
                    if not got:
                        return
                    buf += got
                head, _, buf = buf.partition(b"\r\n\r\n")
                if head.startswith(b"GET"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + BODY)
                    continue
                n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                h = hashlib.sha256()
                while n:
                    if not buf:
                        buf = c.recv(1 << 20)
                        if not buf:
                            return
                    take, buf = buf[:n], buf[n:]
                    h.update(take)
                    n -= len(take)
                answer = h.hexdigest().encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) +
                          answer)
        except OSError:
            return
        finally:
            c.close()


@pytest.fixture(scope="module")
def proxy():
    if os.geteuid() != 0:
        pytest.skip(f"the data path tests need root; running as uid {os.geteuid()}")
    state = tempfile.mkdtemp(prefix="ms-kh-", dir="/tmp")
    os.chmod(state, 0o755)
    pki = Pki(os.path.join(state, "pki"))
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    Backend().start()
    p = Proxy(state, "http", CONFIG.format(cert=cert, key=key, backend=BACKEND_ADDR,
                                           backend_port=BACKEND_PORT, proxy=PROXY_ADDR,
                                           https=HTTPS))
    p.ca_file = pki.ca_file
    p.start()
    yield p
    assert p.stop() == 0


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        assert got, buf
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n:
        got = s.recv(1 << 20)
        assert got
        body += got
    return head, body


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_bodies_byte_exact_and_spliced(proxy, version):
    ctx = ssl.create_default_context(cafile=proxy.ca_file)
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    if version == "1.2":
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    mark = proxy.log_size()
    s = ctx.wrap_socket(connect(HTTPS), server_hostname="mail.proxy.test")
    s.settimeout(120)
    s.sendall(b"GET /down HTTP/1.1\r\nHost: mail.proxy.test\r\n\r\n")
    head, body = read_response(s)
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
    s.sendall(b"PUT /up HTTP/1.1\r\nHost: mail.proxy.test\r\nContent-Length: %d\r\n\r\n" % SIZE
              + BODY)
    head, body = read_response(s)
    assert body.decode() == hashlib.sha256(BODY).hexdigest()
    s.close()
    down = proxy.wait_log(r"event=http-request .*method=GET path=/down ", since=mark)
    up = proxy.wait_log(r"event=http-request .*method=PUT path=/up ", since=mark)
    assert field(down, "path_down") == "ktls-splice", down
    assert field(up, "path_up") == ("ktls-splice" if version == "1.2" else "userspace"), up
