"""Submission and port 25 through mailsplice against real Postfix (issue 4, SMTP part).

Postfix's own log must show client=...[127.0.0.5]: XCLIENT to the legacy stack, PROXY
v2 to the new one; the message must arrive in the recipient's maildir.
"""

import base64
import os
import smtplib
import socket
import ssl
import subprocess
import uuid

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect, recv_to_eof

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
SUBMISSION = 18587 + PORT_OFFSET
SUBMISSIONS = 18465 + PORT_OFFSET
SMTP_LEGACY = 18025 + PORT_OFFSET
SMTP_NEW = 18026 + PORT_OFFSET


def config(legacy, new, pki, passthrough, smtp_port):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 2
hostname = "mail.proxy.test"
log_level = "debug"
host_down_threshold = 0
shutdown_grace = "2s"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"
smtp_passthrough_destination = "{passthrough}"

[mapping]
source = "file"

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.submission]
port = {legacy.ports["submission"]}
tls = "starttls"

[destination.legacy.protocol.smtp]
port = {legacy.ports["smtp"]}
tls = "plain"

[destination.new]
host = "{new.address}"
tls_server_name = "{new.hostname}"
forwarding = "proxy"

[destination.new.protocol.submission]
port = {new.ports["submission"]}
tls = "starttls"

[destination.new.protocol.smtp]
port = {new.ports["smtp"]}
tls = "plain"

[destination.dead]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.dead.protocol.submission]
port = 1
tls = "plain"

[listener.submission]
protocol = "submission"
bind = ["{PROXY_ADDR}:{SUBMISSION}"]
tls = "starttls"

[listener.submissions]
protocol = "submission"
bind = ["{PROXY_ADDR}:{SUBMISSIONS}"]
tls = "implicit"

[listener.smtp]
protocol = "smtp"
bind = ["{PROXY_ADDR}:{smtp_port}"]
tls = "plain"
"""


@pytest.fixture(scope="module")
def proxy(harness_state, pki, legacy_stack, new_stack):
    p = Proxy(harness_state, "submission",
              config(legacy_stack, new_stack, pki, "legacy", SMTP_LEGACY),
              env={"SSL_CERT_FILE": pki.ca_file},
              mappings="bob@example.org new\nerin@example.org dead\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p
    assert p.stop() == 0


class SmtpFrom(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return connect(port, host=host, timeout=timeout)


class SmtpsFrom(smtplib.SMTP_SSL):
    """SMTPS from the test client address, or from source_address when given (tests
    that fail logins use an address of their own: Dovecot delays failures per address)."""

    def _get_socket(self, host, port, timeout):
        source = self.source_address[0] if self.source_address else CLIENT_ADDR
        sock = connect(port, host=host, source=source, timeout=timeout)
        return self.context.wrap_socket(sock, server_hostname="mail.proxy.test")


def message(subject, to="dave@example.org"):
    return f"From: alice@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n..dot\r\n"


def ctx(p):
    return ssl.create_default_context(cafile=p.ca_file)


def test_587_starttls_legacy_sees_real_client(proxy, legacy_stack):
    subject = "subm " + uuid.uuid4().hex
    mark = legacy_stack.log_mark("postfix")
    s = SmtpFrom(PROXY_ADDR, SUBMISSION, local_hostname="client.test")
    s.starttls(context=ctx(proxy))
    s.login("alice@example.org", "alice-pw")
    s.sendmail("alice@example.org", ["dave@example.org"], message(subject))
    s.quit()
    line = legacy_stack.wait_log("postfix", r"client=\S+\[127\.0\.0\.5\].*sasl_username=alice",
                                 since=mark)
    assert "127.0.0.5" in line
    path = legacy_stack.wait_message("dave@example.org", subject)
    with open(path, "rb") as f:
        # smtplib stuffed "..dot" to "...dot"; Postfix unstuffed it: the body is intact
        assert b"\nhello\n..dot\n" in f.read()


def test_465_new_sees_real_client(proxy, new_stack):
    subject = "subms " + uuid.uuid4().hex
    mark = new_stack.log_mark("postfix")
    s = SmtpsFrom(PROXY_ADDR, SUBMISSIONS, context=ctx(proxy), local_hostname="client.test")
    s.login("bob@example.org", "bob-pw")
    s.sendmail("bob@example.org", ["dave@example.org"], message(subject))
    s.quit()
    new_stack.wait_log("postfix", r"client=\S+\[127\.0\.0\.5\].*sasl_username=bob", since=mark)
    new_stack.wait_message("dave@example.org", subject)


def test_auth_forms_and_failures(proxy):
    s = SmtpsFrom(PROXY_ADDR, SUBMISSIONS, context=ctx(proxy), local_hostname="client.test")
    s.ehlo()
    resp = base64.b64encode(b"\0alice@example.org\0alice-pw").decode()
    code, _ = s.docmd("AUTH", "PLAIN")  # RFC 4954: no initial response -> 334
    assert code == 334
    code, _ = s.docmd(resp)
    assert code == 235
    s.close()
    s = SmtpsFrom(PROXY_ADDR, SUBMISSIONS, context=ctx(proxy), local_hostname="client.test",
                  source_address=("127.0.0.8", 0))
    s.ehlo()
    code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@example.org\0no").decode())
    assert code == 535
    code, _ = s.docmd("MAIL", "FROM:<a@example.org>")
    assert code == 530
    s.close()
    s = SmtpsFrom(PROXY_ADDR, SUBMISSIONS, context=ctx(proxy), local_hostname="client.test")
    s.ehlo()
    code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0erin@example.org\0x").decode())
    assert code == 454
    s.close()


def test_auth_failures_beyond_max_auth_attempts_close(proxy):
    """RFC 4954 section 4 leaves a limit on failed AUTH to the server: after
    max_auth_attempts (3 by default) refusals from the backend the proxy answers 421 and
    closes (RFC 5321 section 3.8). From an address of its own: Dovecot's auth delays
    failures per client address, and the other tests' address must not be slowed."""
    s = SmtpsFrom(PROXY_ADDR, SUBMISSIONS, context=ctx(proxy), local_hostname="client.test",
                  source_address=("127.0.0.13", 0))
    s.ehlo()
    bad = "PLAIN " + base64.b64encode(b"\0alice@example.org\0wrong").decode()
    for _ in range(3):
        code, _ = s.docmd("AUTH", bad)
        assert code == 535
    code, text = s.getreply()
    assert code == 421, text
    s.close()
    proxy.wait_log(r"event=session .*proto=submission.*auth_failures=3 .*end=\"?too many")


def test_starttls_required_and_injection(proxy):
    s = connect(SUBMISSION)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"220")
    f.write(b"EHLO x\r\n")
    f.flush()
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if line[3:4] == b" ":
            break
    assert not any(b"AUTH" in l for l in lines)
    s.sendall(b"STARTTLS\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlLXB3\r\n")
    assert f.readline().startswith(b"220")
    t = ctx(proxy).wrap_socket(s, server_hostname="mail.proxy.test")
    t.sendall(b"NOOP\r\n")
    assert t.recv(4096).startswith(b"250")  # not a 235 from the injected AUTH
    t.close()


def test_overlong_line(proxy):
    s = connect(SUBMISSION)
    f = s.makefile("rwb")
    f.readline()
    f.write(b"EHLO " + b"x" * 30000 + b"\r\nNOOP\r\n")
    f.flush()
    assert f.readline().startswith(b"500 5.5.6")
    assert f.readline().startswith(b"250")
    s.close()


def test_port25_legacy_xclient(proxy, legacy_stack):
    subject = "mx " + uuid.uuid4().hex
    mark = legacy_stack.log_mark("postfix")
    s = SmtpFrom(PROXY_ADDR, SMTP_LEGACY, local_hostname="client.test")
    s.sendmail("someone@remote.test", ["dave@example.org"], message(subject))
    s.quit()
    legacy_stack.wait_log("postfix", r"client=\S+\[127\.0\.0\.5\]", since=mark)
    legacy_stack.wait_message("dave@example.org", subject)


def test_port25_new_proxy_protocol(harness_state, pki, legacy_stack, new_stack):
    p = Proxy(harness_state, "smtp25new",
              config(legacy_stack, new_stack, pki, "new", SMTP_NEW),
              env={"SSL_CERT_FILE": pki.ca_file})
    p.start()
    try:
        subject = "mx-new " + uuid.uuid4().hex
        mark = new_stack.log_mark("postfix")
        s = SmtpFrom(PROXY_ADDR, SMTP_NEW, local_hostname="client.test")
        s.sendmail("someone@remote.test", ["dave@example.org"], message(subject))
        s.quit()
        new_stack.wait_log("postfix", r"client=\S+\[127\.0\.0\.5\]", since=mark)
        new_stack.wait_message("dave@example.org", subject)
    finally:
        assert p.stop() == 0


def test_swaks_submission(proxy, legacy_stack):
    subject = "swaks " + uuid.uuid4().hex
    out = subprocess.run(["swaks", "--server", f"{PROXY_ADDR}:{SUBMISSION}", "--tls",
                          "--tls-ca-path", proxy.ca_file, "--local-interface", CLIENT_ADDR,
                          "--auth", "PLAIN", "--auth-user", "alice@example.org",
                          "--auth-password", "alice-pw", "--from", "alice@example.org",
                          "--to", "dave@example.org", "--header", f"Subject: {subject}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:]
    legacy_stack.wait_message("dave@example.org", subject)


def test_swaks_auth_login_and_curl_smtp(proxy, legacy_stack):
    """AUTH LOGIN (Outlook and older clients) and curl smtp:// with STARTTLS."""
    subject = "login " + uuid.uuid4().hex
    out = subprocess.run(["swaks", "--server", f"{PROXY_ADDR}:{SUBMISSION}", "--tls",
                          "--tls-ca-path", proxy.ca_file, "--local-interface", CLIENT_ADDR,
                          "--auth", "LOGIN", "--auth-user", "alice@example.org",
                          "--auth-password", "alice-pw", "--from", "alice@example.org",
                          "--to", "dave@example.org", "--header", f"Subject: {subject}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:]
    legacy_stack.wait_message("dave@example.org", subject)
    subject = "curl " + uuid.uuid4().hex
    mail = f"From: alice@example.org\r\nSubject: {subject}\r\n\r\nvia curl\r\n"
    out = subprocess.run(["curl", "-sS", "--interface", CLIENT_ADDR, "--cacert", proxy.ca_file,
                          "--ssl-reqd", f"smtp://{PROXY_ADDR}:{SUBMISSION}", "-u",
                          "alice@example.org:alice-pw", "--mail-from", "alice@example.org",
                          "--mail-rcpt", "dave@example.org", "-T", "-"], input=mail,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    legacy_stack.wait_message("dave@example.org", subject)


def test_port25_swaks_delivery(proxy, legacy_stack):
    subject = "swaks25 " + uuid.uuid4().hex
    mark = legacy_stack.log_mark("postfix")
    out = subprocess.run(["swaks", "--server", f"{PROXY_ADDR}:{SMTP_LEGACY}",
                          "--local-interface", CLIENT_ADDR, "--from", "x@remote.test",
                          "--to", "dave@example.org", "--header", f"Subject: {subject}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:]
    legacy_stack.wait_log("postfix", r"client=\S+\[127\.0\.0\.5\]", since=mark)
    path = legacy_stack.wait_message("dave@example.org", subject)
    with open(path, "rb") as f:
        assert b"[127.0.0.5]" in f.read()  # Received: from ... ([127.0.0.5])


def test_port25_bulk_through_the_kernel(proxy, legacy_stack):
    """A plain pair is relayed in the kernel (sockmap, else splice(2)): 4 MB of body arrive intact and the session
    line names the data path."""
    import hashlib
    subject = "bulk " + uuid.uuid4().hex
    body = "".join(f"{i:08d} {hashlib.sha256(str(i).encode()).hexdigest()}\r\n"
                   for i in range(55000))
    mark = proxy.log_size()
    s = SmtpFrom(PROXY_ADDR, SMTP_LEGACY, local_hostname="client.test")
    s.sendmail("bulk@remote.test", ["dave@example.org"],
               f"Subject: {subject}\r\n\r\n{body}")
    s.quit()
    path = legacy_stack.wait_message("dave@example.org", subject, timeout=30)
    with open(path, "rb") as f:
        assert body.replace("\r\n", "\n").encode() in f.read()
    line = proxy.wait_log(r"event=session .*proto=smtp .*path_up=(sockmap|splice)", since=mark)
    assert int(line.split("bytes_up=")[1].split()[0]) > 4_000_000


def test_port25_client_half_close_before_handover_is_relayed(proxy, legacy_stack):
    """Port 25 bridges bytes, it does not speak for the client: a client that writes its
    whole dialogue and half-closes (shutdown(SHUT_WR), `nc -N`) before the backend has
    even greeted must still have every byte delivered and get every reply. (Found by the
    10,000-session churn test: under load the FIN overtook the backend's greeting and the
    session ended as "client closed" with the client's bytes dropped.)"""
    mark = legacy_stack.log_mark("postfix")
    s = connect(SMTP_LEGACY)
    s.sendall(b"EHLO halfclose.test\r\nNOOP\r\nQUIT\r\n")
    s.shutdown(socket.SHUT_WR)
    s.settimeout(30)
    data = recv_to_eof(s)
    s.close()
    codes = [line[:3] for line in data.split(b"\r\n") if line[3:4] == b" "]
    # the XCLIENT reply is the client's greeting, then EHLO, NOOP, QUIT
    assert codes == [b"220", b"250", b"250", b"221"], data
    # Postfix notes the client spoke before its greeting ("improper command pipelining
    # after XCLIENT"), and still answers every command of the real client's address
    legacy_stack.wait_log("postfix", r"disconnect from \S+\[127\.0\.0\.5\] .*noop=1 quit=1",
                          since=mark)
