"""`make demo` (issue 11): start it, run the steps it prints, check the account moved.

The demo uses its own addresses' ports (offset 20000) and /tmp/mailsplice-demo, so it
runs beside the other integration tests' backends.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from tests.harness.backends import missing_prerequisites

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATE = "/tmp/mailsplice-demo"


def steps(out):
    """{step number: [shell command, ...]} from the printed instructions."""
    found, current, pending = {}, None, ""
    for line in out.splitlines():
        m = re.match(r"^(\d)\. ", line)
        if m:
            current = int(m.group(1))
            found[current] = []
            continue
        if current is None or not line.startswith("     "):
            continue
        text = line.strip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        found[current].append(pending + text)
        pending = ""
    return found


def test_make_demo_moves_an_account():
    problems = missing_prerequisites()
    if problems or os.geteuid() != 0:
        pytest.skip("make demo needs root, Dovecot and Postfix: " + "; ".join(problems))
    if os.path.exists(STATE):
        pytest.skip(f"{STATE} exists: a demo is already running on this machine")
    proc = subprocess.Popen(["make", "-s", "demo"], cwd=TOP, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = ""
    try:
        deadline = time.monotonic() + 120
        while "demo: showing the proxy's log" not in out:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"make demo exited:\n{out}"
            out += line
            assert time.monotonic() < deadline, f"make demo did not get ready:\n{out}"
        s = steps(out)
        read = s[1][0]
        r = subprocess.run(read, shell=True, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "Subject: Welcome alice" in r.stdout, r.stderr
        logs = re.findall(r"grep 'Login: user=<alice' (\S+)", out)
        legacy_log, new_log = logs[0], logs[1]
        with open(legacy_log) as f:
            assert re.search(r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5", f.read())
        r = subprocess.run(s[2][0], shell=True, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout[-2000:]
        postfix_log = re.search(r"grep 'client=\.\*127\.0\.0\.5' (\S+)", out).group(1)
        deadline = time.monotonic() + 15
        while not re.search(r"client=\S+\[127\.0\.0\.5\]", open(postfix_log).read()):
            assert time.monotonic() < deadline, "Postfix did not log the real client"
            time.sleep(0.2)
        for cmd in s[3]:
            r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (cmd, r.stderr)
        r = subprocess.run(read, shell=True, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "Subject: Welcome alice" in r.stdout, r.stderr
        with open(new_log) as f:
            assert re.search(r"Login: user=<alice@example\.org>.*rip=127\.0\.0\.5", f.read())
        # the web side: bob's request lands on new's nginx, announced; carol's on legacy
        bob, carol = s[5]
        r = subprocess.run(bob, shell=True, capture_output=True, text=True, timeout=30)
        assert "server=new-web" in r.stdout and "proxy_protocol_addr=127.0.0.5" in r.stdout, \
            r.stdout + r.stderr
        r = subprocess.run(carol, shell=True, capture_output=True, text=True, timeout=30)
        assert "server=legacy-web" in r.stdout and "forwarded=for=127.0.0.5;proto=https" in \
            r.stdout, r.stdout + r.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        out += rest
    assert "demo: stopped, state removed" in out, out[-2000:]
    assert not os.path.exists(STATE)
