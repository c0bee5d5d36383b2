"""Fixtures for the integration tests.

Real backends: one session-wide state directory under /tmp, one test CA (`pki`), and two
mail stacks started once, in parallel, and stopped when the session ends:
  legacy_stack  MS_LEGACY_ADDR (127.0.0.2), mode "xclient": trusts the proxy for
                IMAP ID / XCLIENT
  new_stack     MS_NEW_ADDR (127.0.0.3), mode "proxy": PROXY protocol on the login
                ports and on Postfix 25/587
MS_PORT_OFFSET is added to every port of both (the new stack gets 10000 more when the
two addresses are the same). MS_TRUSTED (space-separated CIDRs, default 127.0.0.1/32)
is where the proxy under test connects from. MS_KEEP_STATE=1 keeps the state directory
(configs, logs, maildirs) after the session; it is always kept when a test failed.

Without root, Dovecot or Postfix these tests are skipped, and the reason is printed in
the summary (also under -q).
"""

import os
import shutil
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    # pytest puts tests/integration on sys.path, not the repository root.
    sys.path.insert(0, REPO_ROOT)

from tests.harness.backends import (MailStack, check_world_traversable,  # noqa: E402
                                    missing_prerequisites, start_stacks, stop_stacks)
from tests.harness.pki import Pki  # noqa: E402

LEGACY_ADDR = os.environ.get("MS_LEGACY_ADDR", "127.0.0.2")
NEW_ADDR = os.environ.get("MS_NEW_ADDR", "127.0.0.3")
PORT_OFFSET = int(os.environ.get("MS_PORT_OFFSET", "0"))
TRUSTED = os.environ.get("MS_TRUSTED", "127.0.0.1/32").split()
KEEP_STATE = os.environ.get("MS_KEEP_STATE", "") not in ("", "0")

# Lines for the end-of-session summary: why the real-backend tests were skipped (a skip
# must never be silent) and where a failed session's state was kept. Fixture output
# itself is captured by pytest and would not be shown.
_summary_lines = []


def pytest_terminal_summary(terminalreporter):
    for line in _summary_lines:
        terminalreporter.write_line(line, yellow=True, bold=True)


def _require_backends():
    problems = missing_prerequisites()
    if problems:
        reason = "real Dovecot/Postfix backends unavailable: " + "; ".join(problems)
        line = f"real-backend tests SKIPPED: {reason}"
        if line not in _summary_lines:
            _summary_lines.append(line)
        pytest.skip(reason)


# ------------------------------------------------------------------ session state

@pytest.fixture(scope="session")
def harness_state(request):
    """The session's state directory. Kept after a failure (its path is printed) or with
    MS_KEEP_STATE=1; removed otherwise."""
    # Short on purpose: Dovecot's unix sockets live below it (108-byte limit).
    path = tempfile.mkdtemp(prefix="ms-it-", dir="/tmp")
    # mkdtemp makes 0700, which dovecot/dovenull/postfix/mail could not traverse.
    os.chmod(path, 0o755)
    check_world_traversable(path)
    yield path
    if KEEP_STATE or request.session.testsfailed:
        _summary_lines.append(f"integration state (configs, logs, maildirs) kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(harness_state):
    """The test CA: pki.ca_file, pki.issue(name, sans, key="ec"|"rsa") -> (cert, key)."""
    return Pki(os.path.join(harness_state, "pki"))


# ------------------------------------------------------------------ real backends

@pytest.fixture(scope="session")
def backend_stacks(harness_state, pki):
    """{"legacy": MailStack, "new": MailStack}, running for the whole session."""
    _require_backends()
    new_offset = PORT_OFFSET + (10000 if LEGACY_ADDR == NEW_ADDR else 0)
    stacks = {}
    for name, addr, mode, offset in (("legacy", LEGACY_ADDR, "xclient", PORT_OFFSET),
                                     ("new", NEW_ADDR, "proxy", new_offset)):
        hostname = f"{name}.rb.test"
        cert, key = pki.issue(hostname, [hostname, addr])
        stacks[name] = MailStack(name, addr, mode, harness_state, trusted=TRUSTED, port_offset=offset,
                                 cert=cert, key=key, ca_file=pki.ca_file, hostname=hostname)
    start_stacks(*stacks.values())
    yield stacks
    stop_stacks(*stacks.values())


@pytest.fixture(scope="session")
def legacy_stack(backend_stacks):
    return backend_stacks["legacy"]


@pytest.fixture(scope="session")
def new_stack(backend_stacks):
    return backend_stacks["new"]


# ------------------------------------------------------------------ the mailsplice daemon
#
# Fixtures that build a config for the daemon under test (pointing its destinations at
# legacy_stack / new_stack, trusting pki.ca_file or pinning stack.cert_sha256(":")),
# start it and stop it belong here. The backends trust TRUSTED as the proxy's source, so
# the daemon must connect to them from there (127.0.0.1 by default).
