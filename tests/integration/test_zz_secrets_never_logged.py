"""Passwords and tokens never reach a log (issue 9). Runs last (the file name sorts
last): every log the suite wrote under the session's state directory — each daemon's
log and the Dovecot/Postfix logs — is searched for every password the suite used (the
test accounts, the master user, the OAuth token) in clear and as the SASL PLAIN blob a
client sends, and for every admin token the suite wrote into a token file; the HTTP
tests' Basic credentials, bearer tokens and OAuth secrets too (the proxy reads the account
out of them and must log only the account)."""

import base64
import os

import pytest

from tests.harness.backends import DEFAULT_MASTER_USER, DEFAULT_USERS
from tests.harness.http_backends import http_secrets

# OAuth bearer token used by the IMAP replay tests (test_imap_replay.py)
OTHER_SECRETS = [b"tok3n"]


def files_under(root, suffix):
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(suffix):
                yield os.path.join(d, n)


def secrets_used(state):
    found = {}
    master, master_pw = DEFAULT_MASTER_USER
    for user, pw in list(DEFAULT_USERS.items()) + [(master, master_pw)]:
        found[f"password of {user}"] = pw.encode()
        blob = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode())
        found[f"SASL PLAIN blob of {user}"] = blob
    for s in OTHER_SECRETS:
        found[f"token {s!r}"] = s
    # HTTP: Basic passwords, Stalwart and JWT bearer tokens, OAuth bodies (test_http.py)
    found.update(http_secrets())
    for path in files_under(state, ".token"):
        with open(path, "rb") as f:
            tok = f.read().strip()
        if tok:
            found[f"admin token from {os.path.relpath(path, state)}"] = tok
    return found


def test_no_password_or_token_in_any_log(harness_state):
    secrets = secrets_used(harness_state)
    logs = list(files_under(harness_state, ".log"))
    if not any(p.endswith("mailspliced.log") for p in logs):
        pytest.skip("no daemon ran in this pytest session: run it with the whole suite")
    leaks = []
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        for what, secret in secrets.items():
            if secret in text:
                line = text[:text.index(secret)].count(b"\n") + 1
                leaks.append(f"{os.path.relpath(path, harness_state)}:{line}: {what}")
    assert not leaks, leaks
