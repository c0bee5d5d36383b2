"""Fixtures for the kernel-path tests (tests/kernel).

These tests exercise the kernel features the data path relies on (kTLS, sockmap) and
are meant to run inside a vmtest guest (`make vmtest`, or `vmtest/run KERNEL -- ...`),
where a Debian 6.1 / 6.12 kernel provides them. Run on a host kernel that lacks a
feature they skip, and say why in the summary even under -q; a skip is never silent.

VMTEST_REQUIRE_KTLS=1 turns "this kernel has no kTLS" from a skip into a failure:
vmtest/run-matrix sets it, because every kernel in vmtest/kernels is expected to have
kTLS and a matrix that quietly skipped everything would prove nothing.
"""

import os
import sys

import pytest

from kernelpath import probe_ktls

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.harness.pki import Pki  # noqa: E402
from tests.harness.proxy import PROXY_ADDR  # noqa: E402

REQUIRE_KTLS = os.environ.get("VMTEST_REQUIRE_KTLS", "") not in ("", "0")

# Lines for the end-of-session summary (fixture output itself is captured).
_summary_lines = []


def pytest_terminal_summary(terminalreporter):
    for line in _summary_lines:
        terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.fixture(scope="session")
def ktls():
    """Skip (or, with VMTEST_REQUIRE_KTLS=1, fail) when the running kernel has no kTLS."""
    reason = probe_ktls()
    if reason is None:
        return
    if REQUIRE_KTLS:
        pytest.fail(f"{reason}, and VMTEST_REQUIRE_KTLS is set")
    line = f"kTLS tests SKIPPED: {reason}"
    if line not in _summary_lines:
        _summary_lines.append(line)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pki(state):
    """A CA, the proxy's certificate (mail.proxy.test and the proxy address) and the
    backend's (backend.test), under the test module's own `state` directory."""
    p = Pki(os.path.join(state, "pki"))
    p.proxy = p.issue("mail.proxy.test", ["mail.proxy.test", PROXY_ADDR])
    p.backend = p.issue("backend.test", ["backend.test"])
    return p
