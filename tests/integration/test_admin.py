"""The admin API with curl, the operator's tool (issue 5).

Every mapping change is checked on disk after the 200; the cutover is checked in the
backends' own logs: flip an account, kick its live IMAP session, the client reconnects
and the other backend logs the login.
"""

import json
import os
import secrets
import ssl
import subprocess
import time

import pytest

from tests.harness.proxy import CLIENT_ADDR, PROXY_ADDR, Proxy, connect, imap_login

PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
IMAPS = 15993 + PORT_OFFSET
ADMIN = 15443 + PORT_OFFSET


def config(legacy, new, pki, token_file):
    cert, key = pki.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    return f"""
[server]
threads = 2
log_level = "info"

[tls.certificate.default]
cert = "{cert}"
key = "{key}"

[routing]
default_destination = "legacy"

[mapping]
source = "file"
normalize = "lowercase"
default_domain = "example.org"

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
forwarding = "proxy"

[destination.new.protocol.imap]
port = {new.ports["imaps"]}
tls = "implicit"

[listener.imaps]
protocol = "imap"
bind = ["{PROXY_ADDR}:{IMAPS}"]
tls = "implicit"

[admin]
bind = "{PROXY_ADDR}:{ADMIN}"
tls = "implicit"
bearer_token_file = "{token_file}"
lockout_threshold = 3
lockout_duration = "3s"
"""


@pytest.fixture(scope="module")
def admin(harness_state, pki, legacy_stack, new_stack):
    token = secrets.token_hex(20)
    token_file = os.path.join(harness_state, "admin.token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (token + "\n").encode())
    os.close(fd)
    p = Proxy(harness_state, "admin", config(legacy_stack, new_stack, pki, token_file),
              env={"SSL_CERT_FILE": pki.ca_file}, mappings="# hand-written comment\n")
    p.ca_file, p.token = pki.ca_file, token
    p.start()
    yield p
    assert p.stop() == 0


def curl(p, method, path, token=None, source=CLIENT_ADDR, data=None, form=None, extra=()):
    cmd = ["curl", "-sS", "--interface", source, "--cacert", p.ca_file, "-X", method,
           "-w", "\n%{http_code}", f"https://{PROXY_ADDR}:{ADMIN}{path}", *extra]
    if token is not False:
        cmd += ["-H", f"Authorization: Bearer {token or p.token}"]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data", json.dumps(data)]
    if form is not None:
        cmd += ["--data-raw", form]  # curl's default: application/x-www-form-urlencoded
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body.strip()


def mapping_file(p):
    with open(p.mapping_path) as f:
        return f.read()


def test_healthz_and_auth(admin):
    assert curl(admin, "GET", "/healthz", token=False) == (200, "ok")
    assert curl(admin, "GET", "/stats", token=False) == (401, "unauthorized")
    assert curl(admin, "GET", "/stats", token="wrong" * 8) == (401, "unauthorized")
    code, body = curl(admin, "GET", "/stats")
    assert code == 200
    stats = json.loads(body)
    assert set(stats) >= {"cache_hits", "cache_misses", "hit_rate_pct", "cache_entries",
                          "active_connections"}
    assert curl(admin, "GET", "/nope") == (404, "not found")
    assert curl(admin, "GET", "/nope", token=False) == (401, "unauthorized")
    assert curl(admin, "DELETE", "/stats") == (405, "method not allowed")


def test_paths_and_methods_as_the_peer(admin):
    """Trailing slashes do not count; /healthz answers a wrong method with 405 without
    asking for the token; every other wrong method is a 405 once authenticated, including
    methods no endpoint accepts; POST /mappings is not an alias of PUT."""
    assert curl(admin, "GET", "/stats/")[0] == 200
    assert curl(admin, "POST", "/cache/invalidate/") == (200, "ok")
    assert curl(admin, "GET", "/healthz/", token=False) == (200, "ok")
    assert curl(admin, "POST", "/healthz", token=False) == (405, "method not allowed")
    assert curl(admin, "PATCH", "/stats") == (405, "method not allowed")
    assert curl(admin, "OPTIONS", "/mappings") == (405, "method not allowed")
    assert curl(admin, "PATCH", "/stats", token=False) == (401, "unauthorized")
    assert curl(admin, "POST", "/mappings?identifier=x&destination=new") == \
        (405, "method not allowed")
    assert curl(admin, "GET", "/connections/kick?identifier=x") == (405, "method not allowed")
    assert curl(admin, "GET", "/") == (404, "not found")
    assert curl(admin, "GET", "/sessions/kick") == (404, "not found")
    # the 405 says what is allowed
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "--interface", CLIENT_ADDR,
                          "--cacert", admin.ca_file, "-X", "POST", "-H",
                          f"Authorization: Bearer {admin.token}",
                          f"https://{PROXY_ADDR}:{ADMIN}/mappings"],
                         capture_output=True, text=True, timeout=20)
    assert "allow: get, put, delete" in out.stdout.lower()


def test_lockout_after_failures(admin):
    src = "127.0.0.10"
    for _ in range(3):
        assert curl(admin, "GET", "/stats", token="bad", source=src)[0] == 401
    # locked: even the right token and /healthz are refused
    assert curl(admin, "GET", "/stats", source=src) == (429, "locked out")
    assert curl(admin, "GET", "/healthz", token=False, source=src) == (429, "locked out")
    # other addresses are not affected
    assert curl(admin, "GET", "/stats")[0] == 200
    # and the lock expires
    time.sleep(3.2)
    assert curl(admin, "GET", "/stats", source=src)[0] == 200


def test_mapping_put_get_delete_on_disk(admin):
    code, body = curl(admin, "PUT", "/mappings?identifier=Erin@Example.org&destination=new")
    assert (code, body) == (200, "ok")
    text = mapping_file(admin)
    assert "erin@example.org" in text and "new" in text
    assert "# hand-written comment" in text  # the rest of the file is kept
    code, body = curl(admin, "GET", "/mappings?identifier=ERIN@example.org")
    m = json.loads(body)
    assert m["normalized"] == "erin@example.org" and m["destination"] == "new"
    assert m["routed_to_default"] is False
    assert curl(admin, "PUT", "/mappings?identifier=erin@example.org&destination=nowhere") == \
        (400, "unknown destination")
    assert curl(admin, "PUT", "/mappings?identifier=erin@example.org") == \
        (400, "identifier and destination required")
    assert curl(admin, "PUT", "/mappings", data={"identifier": "dave", "destination": "new"}) \
        == (200, "ok")
    assert "dave@example.org" in mapping_file(admin)  # default_domain applied
    assert curl(admin, "DELETE", "/mappings?identifier=erin@example.org") == (200, "removed")
    assert curl(admin, "DELETE", "/mappings?identifier=erin@example.org") == (200, "absent")
    assert "erin@example.org" not in mapping_file(admin)
    assert curl(admin, "GET", "/mappings") == (400, "identifier required")
    code, body = curl(admin, "GET", "/mappings?identifier=a%20b")
    assert code == 400 and "invalid identifier" in body


def test_identifier_encodings(admin):
    """'+' is part of the address (subaddressing), as at the peer; %-escapes decode;
    a form body works like the query string; NUL bytes and non-UTF-8 are refused."""
    assert curl(admin, "PUT", "/mappings?identifier=gina+lists@example.org&destination=new") \
        == (200, "ok")
    assert "gina+lists@example.org\tnew" in mapping_file(admin)
    code, body = curl(admin, "GET", "/mappings?identifier=gina%2Blists%40example.org")
    assert code == 200 and json.loads(body)["normalized"] == "gina+lists@example.org"
    assert json.loads(body)["destination"] == "new"
    assert curl(admin, "DELETE", "/mappings", form="identifier=gina+lists@example.org") == \
        (200, "removed")
    assert "gina+lists" not in mapping_file(admin)
    code, body = curl(admin, "GET", "/mappings?identifier=a%00b@example.org")
    assert (code, body) == (400, "invalid identifier")
    code, body = curl(admin, "GET", "/mappings?identifier=%ff@example.org")
    assert code == 400 and body.startswith("invalid identifier")
    code, body = curl(admin, "GET", "/mappings?identifier=" + "a" * 2000)
    assert (code, body) == (400, "invalid identifier")


def test_reload_after_hand_edit(admin):
    with open(admin.mapping_path, "a") as f:
        f.write("bob@example.org new\n")
    assert curl(admin, "POST", "/mappings/reload") == (200, "reloaded")
    code, body = curl(admin, "GET", "/mappings?identifier=bob@example.org")
    assert json.loads(body)["destination"] == "new"
    with open(admin.mapping_path, "a") as f:
        f.write("broken line with three fields\n")
    assert curl(admin, "POST", "/mappings/reload") == (500, "reload failed")
    code, body = curl(admin, "GET", "/mappings?identifier=bob@example.org")
    assert json.loads(body)["destination"] == "new"  # the previous table stays
    lines = [l for l in mapping_file(admin).splitlines() if not l.startswith("broken")]
    with open(admin.mapping_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    assert curl(admin, "POST", "/mappings/reload") == (200, "reloaded")
    assert curl(admin, "POST", "/cache/invalidate?identifier=bob@example.org") == (200, "ok")
    assert curl(admin, "POST", "/cache/invalidate") == (200, "ok")


def test_destinations_and_reset(admin):
    code, body = curl(admin, "GET", "/destinations")
    names = [d["destination"] for d in json.loads(body)["destinations"]]
    assert names == ["legacy", "new"]
    assert curl(admin, "POST", "/destinations/reset?destination=new") == (200, "ok")
    assert curl(admin, "POST", "/destinations/reset?destination=x") == (404, "unknown destination")
    assert curl(admin, "POST", "/destinations/reset") == (400, "destination required")


def test_config_reload_validates(admin):
    code, body = curl(admin, "POST", "/config/reload")
    assert code == 200 and json.loads(body)["reloaded"] is True
    assert "restart" in json.loads(body)["note"]
    with open(admin.config_path) as f:
        good = f.read()
    try:
        with open(admin.config_path, "a") as f:
            f.write("\n[server]\nthreads = 2\n")  # a table twice: invalid TOML
        code, body = curl(admin, "POST", "/config/reload")
        assert code == 400 and body.startswith("reload failed: "), body
    finally:
        with open(admin.config_path, "w") as f:
            f.write(good)
    assert curl(admin, "POST", "/config/reload")[0] == 200


def imap_session(p):
    ctx = ssl.create_default_context(cafile=p.ca_file)
    return imap_login(ctx.wrap_socket(connect(IMAPS), server_hostname="mail.proxy.test"))


def test_cutover_flip_kick_reconnect(admin, legacy_stack, new_stack):
    """The runbook: alice is on legacy with a live session; flip, kick, reconnect."""
    mark_legacy = legacy_stack.log_mark("dovecot")
    s, f = imap_session(admin)
    legacy_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5",
                          since=mark_legacy)
    code, body = curl(admin, "GET", "/sessions?identifier=alice@example.org")
    live = json.loads(body)["sessions"]
    assert len(live) == 1 and live[0]["destination"] == "legacy" and live[0]["state"] == "relay"

    assert curl(admin, "PUT", "/mappings?identifier=alice@example.org&destination=new") == \
        (200, "ok")
    assert curl(admin, "POST", "/connections/kick?identifier=alice@example.org") == \
        (200, "kicked 1")
    s.settimeout(10)
    rest = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    except (ConnectionResetError, ssl.SSLError, OSError):
        pass  # reset: the expected end
    s.close()
    admin.wait_log(r"event=session .*account=alice@example\.org .*end=kicked")

    mark_new = new_stack.log_mark("dovecot")
    s, f = imap_session(admin)
    new_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5",
                       since=mark_new)
    s.close()
    assert curl(admin, "POST", "/connections/kick?identifier=nobody@example.org") == \
        (200, "kicked 0")
    assert curl(admin, "DELETE", "/mappings?identifier=alice@example.org")[0] == 200


def test_move_with_the_file_store(admin, legacy_stack, new_stack):
    """POST /accounts/move (issue 21) with the file store: a fleet of one. The mapping is
    on disk before the answer, this node's session is closed, the next login lands on the
    new server."""
    mark_legacy = legacy_stack.log_mark("dovecot")
    s, f = imap_session(admin)
    legacy_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5",
                          since=mark_legacy)
    code, body = curl(admin, "POST", "/accounts/move?identifier=Alice@Example.org&destination=new")
    assert code == 200, body
    ans = json.loads(body)
    assert ans["normalized"] == "alice@example.org" and ans["sessions_closed"] == 1
    assert list(ans["nodes"].values()) == [{"closed": 1}] and ans["not_answered"] == []
    assert "alice@example.org\tnew" in mapping_file(admin)
    s.settimeout(10)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError, OSError):
        pass
    s.close()
    mark_new = new_stack.log_mark("dovecot")
    s, f = imap_session(admin)
    new_stack.wait_log("dovecot", r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5",
                       since=mark_new)
    s.close()
    # moving again changes nothing and closes nothing on the destination
    code, body = curl(admin, "POST", "/accounts/move?identifier=alice@example.org&destination=new")
    assert code == 200 and json.loads(body)["sessions_closed"] == 0
    assert curl(admin, "POST", "/accounts/move?identifier=alice") == \
        (400, "identifier and destination required")
    assert curl(admin, "DELETE", "/mappings?identifier=alice@example.org")[0] == 200


def test_delay_holds_login_then_releases(admin, legacy_stack):
    assert curl(admin, "POST", "/connections/delay?identifier=alice@example.org&seconds=2") == \
        (200, "ok")
    t0 = time.monotonic()
    s, f = imap_session(admin)
    held = time.monotonic() - t0
    s.close()
    admin.wait_log(r"event=login-held id=\S+ wait_ms=\d+")
    assert held > 1.0, f"login was not held ({held:.2f}s)"
    for bad in ("abc", "-1", "1.5", "99999999999999999999999"):
        assert curl(admin, "POST",
                    f"/connections/delay?identifier=alice@example.org&seconds={bad}") == \
            (400, "invalid seconds")
    assert curl(admin, "POST", "/connections/delay?identifier=alice@example.org") == \
        (400, "identifier and seconds required")
    assert curl(admin, "POST", "/connections/delay?seconds=5") == \
        (400, "identifier and seconds required")


def test_delay_longer_hold_and_lift(admin, legacy_stack):
    """As at the peer, a hold may be longer than one login waits (each login is held at
    most 120 s), and seconds=0 lifts it: the next login is not held at all."""
    assert curl(admin, "POST", "/connections/delay?identifier=alice&seconds=600") == \
        (200, "ok")
    assert curl(admin, "POST", "/connections/delay?identifier=alice@example.org&seconds=0") \
        == (200, "ok")
    mark = admin.log_size()
    s, f = imap_session(admin)
    s.close()
    admin.wait_log(r"event=admin .*action=\S*delay.*result=\S*lifted", since=0)
    assert "event=login-held" not in admin.log_text(mark)


METRIC_LINE = r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"' \
              r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (?P<value>-?[0-9.eE+]+|NaN|[+-]Inf)$'


def parse_prometheus(text):
    """A strict parser for the Prometheus text format (0.0.4): every line is a
    HELP/TYPE comment or a sample; TYPE precedes its samples and appears once."""
    import re
    types, samples = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            assert re.match(r"^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        if line.startswith("# TYPE "):
            m = re.match(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$", line)
            assert m, line
            assert m.group(1) not in types, f"TYPE twice: {line}"
            types[m.group(1)] = m.group(2)
            continue
        assert not line.startswith("#"), line
        m = re.match(METRIC_LINE, line)
        assert m, f"not a sample: {line!r}"
        name = m.group(1)
        assert name in types, f"sample before its TYPE: {line}"
        key = line.rsplit(" ", 1)[0]
        assert key not in samples, f"duplicate series: {key}"
        samples[key] = float(m.group("value"))
    return types, samples


def test_metrics_format(admin):
    code, body = curl(admin, "GET", "/metrics")
    assert code == 200
    types, samples = parse_prometheus(body)
    assert types["mailsplice_logins_total"] == "counter"
    assert samples['mailsplice_logins_total{protocol="imap",result="ok"}'] >= 1
    assert 'mailsplice_destination_down{destination="legacy"}' in samples
    assert types["mailsplice_kicks_total"] == "counter"
    assert samples["mailsplice_kicks_total"] >= 1  # the cutover test kicked alice
    assert samples['mailsplice_admin_requests_total{endpoint="/mappings",status="200"}'] >= 1
    assert samples['mailsplice_admin_requests_total{endpoint="other",status="404"}'] >= 1
    assert any(k.startswith("mailsplice_admin_requests_total{") for k in samples)


def raw_tls(p, request, source=CLIENT_ADDR):
    ctx = ssl.create_default_context(cafile=p.ca_file)
    s = ctx.wrap_socket(connect(ADMIN, source=source), server_hostname=PROXY_ADDR)
    s.settimeout(15)
    data = b""
    try:
        s.sendall(request)  # the daemon may refuse before reading it all
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
        pass
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, ssl.SSLError, OSError):
        pass
    s.close()
    return data


JUNK_SRC = "127.0.0.11"  # its 401s must not lock out the other tests' address


def test_hostile_requests_never_hurt(admin):
    """Plain HTTP on the TLS port is not served; oversized headers and bodies, broken
    request lines and binary garbage get an error or a close; the API keeps answering."""
    s = connect(ADMIN, source=JUNK_SRC)
    s.settimeout(15)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        plain = s.recv(4096)
    except (ConnectionResetError, OSError):
        plain = b""
    s.close()
    assert b"HTTP/1.1 200" not in plain and b"ok" not in plain

    auth = f"Authorization: Bearer {admin.token}\r\n".encode()
    big_header = b"GET /stats HTTP/1.1\r\nHost: x\r\n" + auth + \
        b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    assert b" 200 " not in raw_tls(admin, big_header, JUNK_SRC).split(b"\r\n")[0]
    big_body = b"PUT /mappings HTTP/1.1\r\nHost: x\r\n" + auth + \
        b"Content-Length: 1000000\r\nConnection: close\r\n\r\n" + b"{" * 100000
    first = raw_tls(admin, big_body, JUNK_SRC).split(b"\r\n")[0]
    assert b" 200 " not in first, first
    for junk in (b"\x00\xff" * 500 + b"\r\n\r\n", b"GET\r\n\r\n",
                 b"GET /stats HTTP/9.9\r\n\r\n", b"FOO /stats HTTP/1.1\r\n\r\n",
                 b"PUT /mappings HTTP/1.1\r\n" + auth +
                 b"Content-Type: application/json\r\nContent-Length: 9\r\n"
                 b"Connection: close\r\n\r\n[1,2,{}]]"):
        assert b" 200 " not in raw_tls(admin, junk, JUNK_SRC).split(b"\r\n")[0]
    # a JSON body that is not an object is no parameter at all
    assert curl(admin, "PUT", "/mappings", data=["identifier", "x"]) == \
        (400, "identifier and destination required")
    assert curl(admin, "GET", "/healthz", token=False) == (200, "ok")
    assert curl(admin, "GET", "/stats")[0] == 200
    assert admin.alive()
