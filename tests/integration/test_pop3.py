"""POP3 through mailsplice against real Dovecot (issue 4, POP3 part).

Dovecot's own login line must show rip=127.0.0.5: XCLIENT to the legacy stack (110 with
STLS on both legs), PROXY v2 to the new one (995, implicit TLS both legs).
"""

import base64
import os
import poplib
import ssl
import subprocess

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
POP3 = 16110 + PORT_OFFSET
POP3S = 16995 + PORT_OFFSET


def config(legacy, new, pki):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 2
log_level = "debug"
host_down_threshold = 0
shutdown_grace = "2s"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"

[mapping]
source = "file"
default_domain = "example.org"

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.pop3]
port = {legacy.ports["pop3"]}
tls = "starttls"

[destination.new]
host = "{new.address}"
tls_server_name = "{new.hostname}"
forwarding = "proxy"

[destination.new.protocol.pop3]
port = {new.ports["pop3s"]}
tls = "implicit"

[destination.untrusted]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"
source_ips = ["127.0.0.11"]

[destination.untrusted.protocol.pop3]
port = {legacy.ports["pop3"]}
tls = "starttls"

[destination.dead]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.dead.protocol.pop3]
port = 1
tls = "plain"

[listener.pop3]
protocol = "pop3"
bind = ["{PROXY_ADDR}:{POP3}"]
tls = "starttls"

[listener.pop3s]
protocol = "pop3"
bind = ["{PROXY_ADDR}:{POP3S}"]
tls = "implicit"
"""


@pytest.fixture(scope="module")
def proxy(harness_state, pki, legacy_stack, new_stack):
    p = Proxy(harness_state, "pop3", config(legacy_stack, new_stack, pki),
              env={"SSL_CERT_FILE": pki.ca_file},
              mappings="bob@example.org new\nerin@example.org dead\n"
                       "carol@example.org untrusted\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p
    assert p.stop() == 0


class Pop3From(poplib.POP3):
    def _create_socket(self, timeout):
        return connect(self.port, host=self.host, timeout=timeout or 10)


class Pop3sFrom(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        sock = connect(self.port, host=self.host, timeout=timeout or 10)
        return self.context.wrap_socket(sock, server_hostname="mail.proxy.test")


def ctx(p):
    return ssl.create_default_context(cafile=p.ca_file)


def test_stls_110_legacy_sees_real_client(proxy, legacy_stack):
    mark = legacy_stack.log_mark("dovecot")
    m = Pop3From(PROXY_ADDR, POP3)
    assert "STLS" in [c.decode() if isinstance(c, bytes) else c for c in m.capa()]
    m.stls(ctx(proxy))
    m.user("alice@example.org")
    m.pass_("alice-pw")
    m.stat()
    m.quit()
    line = legacy_stack.wait_log("dovecot", r"pop3-login: .*Login: user=<alice@example\.org>",
                                 since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line


def test_995_new_sees_real_client(proxy, new_stack):
    mark = new_stack.log_mark("dovecot")
    m = Pop3sFrom(PROXY_ADDR, POP3S, context=ctx(proxy))
    m.user("bob@example.org")
    m.pass_("bob-pw")
    m.stat()
    m.quit()
    line = new_stack.wait_log("dovecot", r"pop3-login: .*Login: user=<bob@example\.org>",
                              since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line


def raw(proxy, source=CLIENT_ADDR):
    s = ctx(proxy).wrap_socket(connect(POP3S, source=source), server_hostname="mail.proxy.test")
    f = s.makefile("rwb")
    assert f.readline().startswith(b"+OK")
    return s, f


def say(f, line):
    f.write(line + b"\r\n")
    f.flush()
    return f.readline()


def test_auth_plain_with_and_without_initial_response(proxy):
    resp = base64.b64encode(b"\0alice@example.org\0alice-pw")
    s, f = raw(proxy)
    assert say(f, b"AUTH PLAIN " + resp).startswith(b"+OK")  # RFC 5034 initial response
    s.close()
    s, f = raw(proxy)
    assert say(f, b"AUTH PLAIN").startswith(b"+ ")
    assert say(f, resp).startswith(b"+OK")
    s.close()


def test_wrong_password_and_attempt_limit(proxy):
    s, f = raw(proxy, source="127.0.0.7")
    for _ in range(2):
        assert say(f, b"USER alice@example.org").startswith(b"+OK")
        assert say(f, b"PASS wrong").startswith(b"-ERR")
    assert say(f, b"USER alice@example.org").startswith(b"+OK")
    assert say(f, b"PASS wrong").startswith(b"-ERR")
    assert f.readline().startswith(b"-ERR Too many")
    s.close()


def test_backend_down_sys_temp(proxy):
    s, f = raw(proxy)
    assert say(f, b"USER erin@example.org").startswith(b"+OK")
    assert say(f, b"PASS erin-pw").startswith(b"-ERR [SYS/TEMP]")
    assert say(f, b"CAPA").startswith(b"+OK")  # the session goes on
    s.close()


def test_plaintext_refused_before_stls(proxy):
    s = connect(POP3)
    f = s.makefile("rwb")
    f.readline()
    assert say(f, b"USER alice@example.org").startswith(b"-ERR [AUTH]")
    s.close()


def test_hostile_lines(proxy):
    s, f = raw(proxy)
    assert say(f, b"USER " + b"a" * 20000).startswith(b"-ERR")
    assert say(f, b"XYZZ").startswith(b"-ERR")
    assert say(f, b"CAPA").startswith(b"+OK")
    s.close()


def test_retr_byte_identical(proxy, legacy_stack):
    import smtplib
    subject = "pop3 byte test " + base64.b32encode(os.urandom(5)).decode()
    with smtplib.SMTP(legacy_stack.address, legacy_stack.ports["smtp"], timeout=20) as smtp:
        smtp.sendmail("t@example.org", ["alice@example.org"],
                      f"Subject: {subject}\r\n\r\n.leading dot\r\nbody\r\n")
    legacy_stack.wait_message("alice@example.org", subject)
    m = Pop3sFrom(PROXY_ADDR, POP3S, context=ctx(proxy))
    m.user("alice@example.org")
    m.pass_("alice-pw")
    count, _ = m.stat()
    assert count >= 1
    resp, lines, _ = m.retr(count)
    m.quit()
    fetched = b"\n".join(lines) + b"\n"
    on_disk = []
    for path in legacy_stack.messages("alice@example.org"):
        with open(path, "rb") as fh:
            on_disk.append(fh.read())
    # poplib undoes the dot-stuffing and CRLF; the maildir holds LF line ends
    assert fetched in on_disk


def test_curl_pop3s(proxy):
    out = subprocess.run(["curl", "-sS", "--interface", CLIENT_ADDR, "--cacert", proxy.ca_file,
                          "-u", "alice@example.org:alice-pw",
                          f"pop3s://{PROXY_ADDR}:{POP3S}/"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("\n")[0].split()[0] == "1"


def test_apop_refused(proxy):
    s, f = raw(proxy)
    line = say(f, b"APOP alice@example.org c4c9334bac560ecc979e58001b3e22fb")
    assert line.startswith(b"-ERR APOP is not supported")
    s.close()


def test_untrusted_xclient_is_a_logged_misconfiguration(proxy, legacy_stack):
    """From an address the backend does not trust, Dovecot offers no [XCLIENT]: we do
    not send it, log the misconfiguration, and the login still works (rip = our address)."""
    mark = legacy_stack.log_mark("dovecot")
    pmark = proxy.log_size()
    s, f = raw(proxy)
    assert say(f, b"USER carol").startswith(b"+OK")
    assert say(f, b"PASS carol-pw").startswith(b"+OK")
    s.close()
    line = legacy_stack.wait_log("dovecot", r"pop3-login: .*Login: user=<carol>", since=mark)
    assert "rip=127.0.0.11" in line
    proxy.wait_log(r"event=xclient-untrusted .*destination=untrusted .*login_trusted_networks",
                   since=pmark)
