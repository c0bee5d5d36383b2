"""ManageSieve through mailsplice against real Dovecot/Pigeonhole (issue 4, Sieve part).

Dovecot's managesieve-login line must show rip=127.0.0.5: XCLIENT to the legacy stack,
PROXY v2 to the new one; STARTTLS on both legs. A script uploaded through the proxy
lands in the user's sieve directory on the right backend.
"""

import base64
import os
import ssl

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
SIEVE = 17190 + PORT_OFFSET


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

[mapping.file]
path = "@MAPPINGS@"

[destination.legacy]
host = "{legacy.address}"
tls_server_name = "{legacy.hostname}"
forwarding = "xclient"

[destination.legacy.protocol.managesieve]
port = {legacy.ports["sieve"]}
tls = "starttls"

[destination.new]
host = "{new.address}"
tls_server_name = "{new.hostname}"
forwarding = "proxy"

[destination.new.protocol.managesieve]
port = {new.ports["sieve"]}
tls = "starttls"

[destination.dead]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true

[destination.dead.protocol.managesieve]
port = 1
tls = "plain"

[listener.managesieve]
protocol = "managesieve"
bind = ["{PROXY_ADDR}:{SIEVE}"]
tls = "starttls"
"""


@pytest.fixture(scope="module")
def proxy(harness_state, pki, legacy_stack, new_stack):
    p = Proxy(harness_state, "sieve", config(legacy_stack, new_stack, pki),
              env={"SSL_CERT_FILE": pki.ca_file},
              mappings="bob@example.org new\nerin@example.org dead\n")
    p.ca_file = pki.ca_file
    p.start()
    yield p
    assert p.stop() == 0


class Client:
    def __init__(self, proxy, source=CLIENT_ADDR):
        self.s = connect(SIEVE, source=source)
        self.f = self.s.makefile("rwb")
        self.caps = self.until_status()
        assert self.caps[-1].startswith("OK"), self.caps
        assert '"STARTTLS"' in self.caps
        self.send("STARTTLS")
        assert self.f.readline().startswith(b"OK")
        ctx = ssl.create_default_context(cafile=proxy.ca_file)
        self.s = ctx.wrap_socket(self.s, server_hostname="mail.proxy.test")
        self.f = self.s.makefile("rwb")
        # RFC 5804 section 2.2: capabilities again after TLS
        self.caps = self.until_status()
        assert '"SASL" "PLAIN LOGIN"' in self.caps

    def send(self, line):
        self.f.write(line.encode() + b"\r\n")
        self.f.flush()

    def until_status(self):
        lines = []
        while True:
            line = self.f.readline().decode()
            assert line, lines
            lines.append(line.rstrip("\r\n"))
            if line.startswith(("OK", "NO", "BYE")):
                return lines

    def login(self, user, pw, ir=True):
        resp = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        if ir:
            self.send(f'AUTHENTICATE "PLAIN" "{resp}"')
            return self.until_status()[-1]
        self.send('AUTHENTICATE "PLAIN"')
        assert self.f.readline().startswith(b'"')
        self.send(f'"{resp}"')
        return self.until_status()[-1]

    def close(self):
        self.s.close()


def test_legacy_sees_real_client_and_script_lands(proxy, legacy_stack, new_stack):
    mark = legacy_stack.log_mark("dovecot")
    c = Client(proxy)
    assert c.login("alice@example.org", "alice-pw").startswith("OK")
    script = 'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "INBOX"; }\r\n'
    c.send(f'PUTSCRIPT "viaproxy" {{{len(script)}+}}\r\n{script}')
    assert c.until_status()[-1].startswith("OK")
    c.send("LOGOUT")
    c.close()
    line = legacy_stack.wait_log("dovecot", r"managesieve-login: .*Login: user=<alice@example\.org>",
                                 since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line
    assert "viaproxy" in legacy_stack.sieve_scripts("alice@example.org")
    assert "viaproxy" not in new_stack.sieve_scripts("alice@example.org")


def test_new_sees_real_client(proxy, new_stack):
    mark = new_stack.log_mark("dovecot")
    c = Client(proxy)
    assert c.login("bob@example.org", "bob-pw", ir=False).startswith("OK")
    c.send("LOGOUT")
    c.close()
    line = new_stack.wait_log("dovecot", r"managesieve-login: .*Login: user=<bob@example\.org>",
                              since=mark)
    assert f"rip={CLIENT_ADDR}" in line, line


def test_wrong_password_and_backend_down(proxy):
    c = Client(proxy, source="127.0.0.7")
    assert c.login("alice@example.org", "wrong").startswith("NO")
    c.close()
    c = Client(proxy)
    assert c.login("erin@example.org", "erin-pw").startswith("NO (TRYLATER)")
    c.send("NOOP")
    assert c.until_status()[-1].startswith("OK")
    c.close()


def test_plaintext_refused_before_starttls(proxy):
    s = connect(SIEVE)
    f = s.makefile("rwb")
    while not f.readline().startswith(b"OK"):
        pass
    resp = base64.b64encode(b"\0alice@example.org\0alice-pw").decode()
    f.write(f'AUTHENTICATE "PLAIN" "{resp}"\r\n'.encode())
    f.flush()
    assert f.readline().startswith(b"NO (ENCRYPT-NEEDED)")
    s.close()


def test_sync_literal_and_sieve_connect(proxy, legacy_stack, tmp_path):
    """{N} literal arguments (RFC 5804 has no continuation for them), then the
    sieve-connect client uploads and lists a script."""
    import shutil
    import subprocess
    c = Client(proxy)
    resp = base64.b64encode(b"\0alice@example.org\0alice-pw").decode()
    c.send(f'AUTHENTICATE "PLAIN" {{{len(resp)}}}\r\n{resp}')
    assert c.until_status()[-1].startswith("OK")
    c.send("LOGOUT")
    c.close()
    if not shutil.which("sieve-connect"):
        pytest.skip("sieve-connect is not installed (Debian package sieve-connect)")
    script = tmp_path / "fromtool.sieve"
    script.write_text('require "fileinto";\n')
    pwfile = tmp_path / "pw"
    pwfile.write_text("alice-pw\n")
    env = dict(os.environ, SSL_CERT_FILE=proxy.ca_file)
    base = ["sieve-connect", "--server", PROXY_ADDR, "--port", str(SIEVE), "--user",
            "alice@example.org", "--passwordfd", "0", "--notlsverify", "--noclearauth"]
    up = subprocess.run(base + ["--upload", "--localsieve", str(script), "--remotesieve",
                                "fromtool"], input="alice-pw\n", capture_output=True, text=True,
                        env=env, timeout=60)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "fromtool" in legacy_stack.sieve_scripts("alice@example.org")
    ls = subprocess.run(base + ["--list"], input="alice-pw\n", capture_output=True, text=True,
                        env=env, timeout=60)
    assert "fromtool" in ls.stdout, ls.stdout + ls.stderr
