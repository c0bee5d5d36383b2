"""IMAP end to end through mailsplice, against real Dovecot (issue 3).

Clients connect from 127.0.0.5 to the proxy on 127.0.0.4; the proxy connects to the
backends from 127.0.0.1. A test passes when the backend's own log shows the effect:
Dovecot's login line with rip=127.0.0.5 proves the real client was announced (IMAP ID to
the legacy stack, PROXY v2 to the new one).
"""

import imaplib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAP_PORT = 11143 + PORT_OFFSET
IMAPS_PORT = 11993 + PORT_OFFSET
DEAD_PORT = 1  # nothing listens on tcpmux


def config(legacy, new, pki):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    ocert, okey = pki.issue("other.proxy.test", ["other.proxy.test"])
    return f"""
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"
shutdown_grace = "2s"
backend_timeout = "10s"
host_down_threshold = 0

[tls.certificate.default]
cert = "{cert}"
key = "{key}"
default = true

[tls.certificate.other]
cert = "{ocert}"
key = "{okey}"

[routing]
default_destination = "legacy"

[mapping]
source = "file"
normalize = "lowercase"
default_domain = "example.org"
positive_ttl = "10m"

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.imap]
port = {legacy.ports["imap"]}
tls = "starttls"

[destination.new]
host = "{new.address}"
tls_server_name = "{new.hostname}"
proxy_protocol = true
login = "full-address"

[destination.new.protocol.imap]
port = {new.ports["imaps"]}
tls = "implicit"

[destination.pinned]
host = "{new.address}"
tls_pinned_cert_sha256 = "{new.cert_sha256(":")}"
forwarding = "proxy"

[destination.pinned.protocol.imap]
port = {new.ports["imaps"]}
tls = "implicit"

[destination.badpin]
host = "{new.address}"
tls_pinned_cert_sha256 = "{"00:" * 31}00"
forwarding = "proxy"

[destination.badpin.protocol.imap]
port = {new.ports["imaps"]}
tls = "implicit"

[destination.dead]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.dead.protocol.imap]
port = {DEAD_PORT}
tls = "starttls"

[listener.imap]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAP_PORT}"]
tls = "starttls"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS_PORT}"]
tls = "implicit"
"""


@pytest.fixture(scope="module")
def proxy(harness_state, pki, legacy_stack, new_stack):
    p = Proxy(harness_state, "imap", config(legacy_stack, new_stack, pki),
              env={"SSL_CERT_FILE": pki.ca_file},
              mappings="bob@example.org new\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p
    rc = p.stop()
    assert rc == 0, f"mailspliced exited with {rc}"


def route(proxy, mappings):
    """Rewrite the mapping file and reload it with SIGHUP."""
    mark = proxy.log_size()
    proxy.set_mappings(mappings)
    proxy.signal(signal.SIGHUP)
    proxy.wait_log(r"event=mapping-reload result=ok", since=mark)


class ImapFrom(imaplib.IMAP4):
    """imaplib from the test client address."""

    def _create_socket(self, timeout):
        return connect(self.port, host=self.host, timeout=timeout or 10)


class ImapsFrom(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = connect(self.port, host=self.host, timeout=timeout or 10)
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.proxy.test")


def tls_ctx(proxy):
    return ssl.create_default_context(cafile=proxy.ca_file)


def imaps(proxy):
    return ImapsFrom(PROXY_ADDR, IMAPS_PORT, ssl_context=tls_ctx(proxy))


def imap_starttls(proxy):
    m = ImapFrom(PROXY_ADDR, IMAP_PORT)
    m.starttls(tls_ctx(proxy))
    return m


class Raw:
    """A line-level IMAP client on a TLS socket, for what imaplib cannot send."""

    def __init__(self, proxy, sni="mail.proxy.test", source=CLIENT_ADDR):
        sock = connect(IMAPS_PORT, source=source)
        self.s = tls_ctx(proxy).wrap_socket(sock, server_hostname=sni)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def until_tagged(self, tag):
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + " "):
                return lines

    def close(self):
        self.s.close()


# ------------------------------------------------------------------ announcement

def test_starttls_143_legacy_sees_real_client(proxy, legacy_stack):
    """143 + STARTTLS to the legacy stack: Dovecot honours our ID (x-originating-ip)."""
    route(proxy, "bob@example.org new\n")
    mark = legacy_stack.log_mark("dovecot")
    m = imap_starttls(proxy)
    m.login("alice@example.org", "alice-pw")
    typ, _ = m.select("INBOX")
    assert typ == "OK"
    m.logout()
    line = legacy_stack.wait_log("dovecot", r"imap-login: .*Login: user=<alice@example\.org>",
                                 since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line
    proxy.wait_log(r"event=session .*account=alice@example\.org destination=legacy")


def test_implicit_993_new_sees_real_client(proxy, new_stack):
    """993 to the new stack (implicit TLS both legs): PROXY v2 before the ClientHello."""
    mark = new_stack.log_mark("dovecot")
    m = imaps(proxy)
    m.login("bob@example.org", "bob-pw")
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    line = new_stack.wait_log("dovecot", r"imap-login: .*Login: user=<bob@example\.org>",
                              since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line


def test_mapping_flip_routes_to_other_backend(proxy, legacy_stack, new_stack):
    route(proxy, "bob@example.org new\nalice@example.org new\n")
    try:
        mark = new_stack.log_mark("dovecot")
        m = imaps(proxy)
        m.login("alice@example.org", "alice-pw")
        m.logout()
        line = new_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>", since=mark)
        assert f"rip={CLIENT_ADDR}" in line
    finally:
        route(proxy, "bob@example.org new\n")
    mark = legacy_stack.log_mark("dovecot")
    m = imaps(proxy)
    m.login("ALICE@example.org", "alice-pw")  # normalize = lowercase
    m.logout()
    legacy_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>", since=mark)


def test_bare_localpart_with_default_domain(proxy, new_stack):
    """"dave" is dave@example.org for routing; the new stack gets the full address."""
    route(proxy, "bob@example.org new\ndave@example.org new\n")
    mark = new_stack.log_mark("dovecot")
    m = imaps(proxy)
    m.login("dave", "dave-pw")
    m.logout()
    line = new_stack.wait_log("dovecot", r"Login: user=<dave@example\.org>", since=mark)
    assert f"rip={CLIENT_ADDR}" in line
    proxy.wait_log(r"event=session .*account=dave@example\.org destination=new")


# ------------------------------------------------------------------ login forms

def test_login_with_synchronising_literals(proxy, legacy_stack):
    """RFC 9051 section 4.3: {N} literals are answered with "+" before the data."""
    r = Raw(proxy)
    r.send(b"a1 LOGIN {17}\r\n")
    assert r.line().startswith("+")
    r.send(b"alice@example.org {8}\r\n")
    assert r.line().startswith("+")
    r.send(b"alice-pw\r\n")
    lines = r.until_tagged("a1")
    assert lines[-1].startswith("a1 OK"), lines
    r.send(b"a2 LOGOUT\r\n")
    assert r.until_tagged("a2")[-1].startswith("a2 OK")
    r.close()


def test_login_with_nonsync_literal_and_pipelining(proxy):
    """RFC 7888 {N+}; a command pipelined after LOGIN reaches the backend."""
    r = Raw(proxy)
    r.send(b"a1 LOGIN {17+}\r\nalice@example.org \"alice-pw\"\r\na2 SELECT INBOX\r\n")
    assert r.until_tagged("a1")[-1].startswith("a1 OK")
    assert r.until_tagged("a2")[-1].startswith("a2 OK")
    r.close()


def test_authenticate_plain_with_and_without_sasl_ir(proxy, legacy_stack):
    import base64
    resp = base64.b64encode(b"\0alice@example.org\0alice-pw").decode()
    r = Raw(proxy)
    r.send(f"a1 AUTHENTICATE PLAIN {resp}\r\n".encode())  # RFC 4959 SASL-IR
    assert r.until_tagged("a1")[-1].startswith("a1 OK")
    r.close()
    r = Raw(proxy)
    r.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith("+")
    r.send(resp.encode() + b"\r\n")
    assert r.until_tagged("a1")[-1].startswith("a1 OK")
    r.close()
    # RFC 9051 section 6.2.2: "*" cancels, answered with BAD
    r = Raw(proxy)
    r.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith("+")
    r.send(b"*\r\n")
    assert r.until_tagged("a1")[-1].startswith("a1 BAD")
    r.close()


def test_authenticate_login_mechanism(proxy):
    import base64
    r = Raw(proxy)
    r.send(b"a1 AUTHENTICATE LOGIN\r\n")
    assert r.line().startswith("+")
    r.send(base64.b64encode(b"alice@example.org") + b"\r\n")
    assert r.line().startswith("+")
    r.send(base64.b64encode(b"alice-pw") + b"\r\n")
    assert r.until_tagged("a1")[-1].startswith("a1 OK")
    r.close()


def test_wrong_password_relayed_and_attempts_limited(proxy, legacy_stack):
    # Dovecot delays answers to an address after failed logins (2 s, 4 s, ...): fail
    # from an address of our own so the other tests' client is not slowed down
    r = Raw(proxy, source="127.0.0.6")
    for i in range(1, 3):
        r.send(f"a{i} LOGIN alice@example.org wrong\r\n".encode())
        last = r.until_tagged(f"a{i}")[-1]
        assert last.startswith(f"a{i} NO [AUTHENTICATIONFAILED]"), last
    r.send(b"a3 LOGIN alice@example.org wrong\r\n")
    lines = r.until_tagged("a3")
    assert lines[-1].startswith("a3 NO")
    assert r.line().startswith("* BYE")
    r.close()
    proxy.wait_log(r"event=session .*auth_failures=3 .*end=\"?too many")


def test_credentials_never_logged(proxy):
    text = proxy.log_text()
    for secret in ("alice-pw", "bob-pw", "dave-pw", "YWxpY2U"):
        assert secret not in text


# ------------------------------------------------------------------ failures

def test_backend_down_gives_unavailable(proxy):
    route(proxy, "bob@example.org new\nerin@example.org dead\n")
    r = Raw(proxy)
    r.send(b"a1 LOGIN erin@example.org erin-pw\r\n")
    last = r.until_tagged("a1")[-1]
    assert last.startswith("a1 NO [UNAVAILABLE]"), last
    # the session goes on: the client may try again
    r.send(b"a2 NOOP\r\n")
    assert r.until_tagged("a2")[-1].startswith("a2 OK")
    r.close()
    proxy.wait_log(r"event=backend-unavailable .*destination=dead .*Connection refused")


def test_pinned_certificate_right_and_wrong(proxy, new_stack):
    route(proxy, "bob@example.org new\nerin@example.org pinned\ncarol@example.org badpin\n")
    mark = new_stack.log_mark("dovecot")
    m = imaps(proxy)
    m.login("erin@example.org", "erin-pw")
    m.logout()
    new_stack.wait_log("dovecot", r"Login: user=<erin@example\.org>", since=mark)
    r = Raw(proxy)
    r.send(b"a1 LOGIN carol carol-pw\r\n")
    assert r.until_tagged("a1")[-1].startswith("a1 NO [UNAVAILABLE]")
    r.close()
    proxy.wait_log(r"event=backend-unavailable .*destination=badpin .*certificate")


def test_starttls_required_before_login(proxy):
    """LOGINDISABLED before STARTTLS on 143 (RFC 9051 section 6.2.3)."""
    s = connect(IMAP_PORT)
    f = s.makefile("rwb")
    greeting = f.readline().decode()
    assert "STARTTLS" in greeting and "LOGINDISABLED" in greeting
    assert "AUTH=PLAIN" not in greeting
    f.write(b"a1 LOGIN alice@example.org alice-pw\r\n")
    f.flush()
    assert f.readline().decode().startswith("a1 NO [PRIVACYREQUIRED]")
    s.close()


def test_starttls_injection_is_discarded(proxy):
    """Bytes pipelined after STARTTLS must not be executed after TLS (CVE-2011-0411 class)."""
    s = connect(IMAP_PORT)
    s.recv(4096)
    s.sendall(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")
    buf = b""
    while b"\r\n" not in buf:
        buf += s.recv(4096)
    assert buf.startswith(b"a1 OK")
    assert b"a2" not in buf
    t = tls_ctx(proxy).wrap_socket(s, server_hostname="mail.proxy.test")
    t.sendall(b"a3 NOOP\r\n")
    reply = b""
    while b"a3 " not in reply:
        reply += t.recv(4096)
    assert b"a2 " not in reply
    t.close()


def test_sni_selects_certificate(proxy):
    for name in ("other.proxy.test", "mail.proxy.test"):
        r = Raw(proxy, sni=name)
        cert = r.s.getpeercert()
        sans = [v for k, v in cert["subjectAltName"] if k == "DNS"]
        assert name in sans
        r.close()


def test_hostile_input_answered_and_others_unaffected(proxy):
    r = Raw(proxy)
    r.send(b"a1 " + b"X" * 100000 + b"\r\n")
    line = r.line()
    assert "BAD" in line
    r.send(b"a2 LOGIN {999999999}\r\n")
    assert "BAD" in r.line()
    # another client logs in meanwhile
    m = imaps(proxy)
    m.login("alice@example.org", "alice-pw")
    m.logout()
    r.close()


# ------------------------------------------------------------------ the data path

def test_message_byte_identical(proxy, legacy_stack):
    """APPEND through the proxy, the maildir file matches; FETCH gives the same bytes."""
    route(proxy, "bob@example.org new\n")
    body = (b"From: alice@example.org\r\nSubject: byte test " + secrets.token_hex(8).encode()
            + b"\r\n\r\n" + secrets.token_hex(20000).encode() + b"\r\n.\r\nend\r\n")
    m = imaps(proxy)
    m.login("alice@example.org", "alice-pw")
    typ, _ = m.append("INBOX", None, None, body)
    assert typ == "OK"
    m.select("INBOX")
    typ, data = m.search(None, "ALL")
    last = data[0].split()[-1]
    typ, fetched = m.fetch(last, "(BODY.PEEK[])")
    m.logout()
    assert fetched[0][1] == body
    on_disk = []
    for path in legacy_stack.messages("alice@example.org"):
        with open(path, "rb") as f:
            on_disk.append(f.read())
    # Dovecot's maildir files hold LF line ends; IMAP carries CRLF (RFC 9051 section 2.3.1)
    mine = [m for m in on_disk if b"byte test " + body.split(b"byte test ")[1][:16] in m]
    assert len(mine) == 1, "the appended message is not in the legacy maildir"
    assert mine[0].replace(b"\n", b"\r\n") == fetched[0][1] == body


def test_curl_imaps_and_imap_starttls(proxy):
    for url, extra in ((f"imaps://{PROXY_ADDR}:{IMAPS_PORT}/INBOX", []),
                       (f"imap://{PROXY_ADDR}:{IMAP_PORT}/INBOX", ["--ssl-reqd"])):
        out = subprocess.run(["curl", "-sS", "--interface", CLIENT_ADDR, "--cacert",
                              proxy.ca_file, "-u", "alice@example.org:alice-pw", url,
                              "-X", "EXAMINE INBOX"] + extra,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "EXISTS" in out.stdout, out.stdout


def test_overlong_line_answered_once(proxy):
    """One BAD for one overlong line, however many reads it takes to arrive."""
    r = Raw(proxy)
    for _ in range(20):
        r.send(b"Y" * 9000)
    r.send(b"\r\na2 NOOP\r\n")
    first = r.line()
    assert "BAD" in first
    assert r.line().startswith("a2 OK")
    r.close()
