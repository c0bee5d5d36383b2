#!/usr/bin/python3
"""`make demo`: the whole migration scenario on loopback, in the foreground.

Starts the project's two real backend stacks (legacy Dovecot + Postfix trusting the
proxy over XCLIENT / IMAP ID on 127.0.0.2; new stack behind the PROXY protocol on
127.0.0.3), a few demo accounts with mail, and mailspliced on conf/demo.toml with the
admin API and a generated token. Prints the commands to try, then shows the proxy's
log until Ctrl-C, which stops everything it started (by pid) and removes its state.

State lives in /tmp/mailsplice-demo (the paths conf/demo.toml names).
"""

import os
import secrets
import shutil
import signal
import smtplib
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.harness.backends import (MailStack, check_world_traversable,  # noqa: E402
                                    missing_prerequisites, start_stacks, stop_stacks)
from tests.harness.http_backends import Nginx  # noqa: E402
from tests.harness.pki import Pki  # noqa: E402

STATE = "/tmp/mailsplice-demo"
CONFIG = os.path.join(TOP, "conf", "demo.toml")
DAEMON = os.path.join(TOP, "build", "mailspliced")
PORT_OFFSET = 20000
CLIENT = "127.0.0.5"  # the demo "client" address, distinct from the proxy's 127.0.0.1
ADMIN = "https://127.0.0.1:19443"

stopping = False


def say(text=""):
    print(text, flush=True)


def on_signal(sig, frame):
    global stopping
    stopping = True


def deliver(stack, rcpt, subject, body):
    msg = (f"From: demo@example.org\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}\r\n")
    with smtplib.SMTP(stack.address, stack.ports["smtp"], timeout=20) as s:
        s.sendmail("demo@example.org", [rcpt], msg)
    stack.wait_message(rcpt, subject, timeout=20)


def main():
    if os.geteuid() != 0:
        say("make demo: run as root (Dovecot and Postfix are started on loopback)")
        return 1
    problems = missing_prerequisites()
    if problems:
        say("make demo: cannot start the backends: " + "; ".join(problems))
        say("           run `make deps` first")
        return 1
    if not os.access(DAEMON, os.X_OK):
        say(f"make demo: {DAEMON} is missing; run `make` first")
        return 1
    if os.path.exists(STATE):
        say(f"make demo: {STATE} exists: another demo is running, or a previous one was "
            f"killed; stop it or remove the directory")
        return 1
    os.makedirs(STATE)
    os.chmod(STATE, 0o755)
    check_world_traversable(STATE)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stacks, webs, proxy = [], [], None
    try:
        pki = Pki(os.path.join(STATE, "pki"))
        pki.issue("mail.demo.test", ["mail.demo.test", "127.0.0.1"])
        for name, addr, mode in (("legacy", "127.0.0.2", "xclient"), ("new", "127.0.0.3", "proxy")):
            host = f"{name}.rb.test"
            cert, key = pki.issue(host, [host, addr])
            stacks.append(MailStack(name, addr, mode, STATE, port_offset=PORT_OFFSET, cert=cert,
                                    key=key, ca_file=pki.ca_file, hostname=host))
        legacy, new = stacks
        say("demo: starting the legacy and new backend stacks ...")
        start_stacks(*stacks)
        # their web sides: plain on legacy, TLS + PROXY protocol on new
        webs.append(Nginx("legacy-web", STATE, legacy.address, 20080).start())
        cert, key = pki.issue("new.rb.test", ["new.rb.test", new.address])
        webs.append(Nginx("new-web", STATE, new.address, 20443, tls=(cert, key),
                          proxy_protocol=True).start())
        for user in ("alice@example.org", "bob@example.org"):
            deliver(legacy, user, f"Welcome {user.split('@')[0]}", "Your mail lives on the "
                    "legacy server for now.")
        # bob has already moved: the demo copies his mailbox and maps him to "new"
        shutil.copytree(legacy.maildir("bob@example.org"), new.maildir("bob@example.org"),
                        dirs_exist_ok=True)
        subprocess.run(["chown", "-R", f"--reference={new.mail_dir}", new.home("bob@example.org")],
                       check=False)
        with open(os.path.join(STATE, "mappings.tsv"), "w") as f:
            f.write("# account                destination\nbob@example.org          new\n")
        token = secrets.token_hex(24)
        fd = os.open(os.path.join(STATE, "admin.token"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (token + "\n").encode())
        os.close(fd)

        log_path = os.path.join(STATE, "mailspliced.log")
        log = open(log_path, "ab")
        env = dict(os.environ, SSL_CERT_FILE=pki.ca_file)
        proxy = subprocess.Popen([DAEMON, "-c", CONFIG], stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        deadline = time.monotonic() + 15
        while b"event=started" not in open(log_path, "rb").read():
            if proxy.poll() is not None or time.monotonic() > deadline:
                say(open(log_path, errors="replace").read())
                say("demo: mailspliced did not start")
                return 1
            time.sleep(0.05)

        ca = pki.ca_file
        curl = f"curl -sS --interface {CLIENT} --cacert {ca}"
        auth = f"-H 'Authorization: Bearer {token}'"
        say(f"""
demo: ready. mailspliced (pid {proxy.pid}) listens on 127.0.0.1: IMAP 10143/10993,
      POP3S 10995, submission 10587, ManageSieve 14190, SMTP 10025, HTTPS 10443,
      admin API 19443.
      Accounts: alice@example.org / alice-pw (legacy), bob@example.org / bob-pw (moved to new).

1. Read alice's mailbox through the proxy (she is on the legacy stack):
     {curl} -u alice@example.org:alice-pw 'imaps://127.0.0.1:10993/INBOX;UID=1'
   Legacy Dovecot saw the real client: grep 'Login: user=<alice' {legacy.dovecot_log}
   (rip={CLIENT}, real_rip=127.0.0.1: the proxy announced the client over IMAP ID)

2. Submit a message through the proxy:
     swaks --server 127.0.0.1:10587 --tls --tls-ca-path {ca} --local-interface {CLIENT} \\
           --auth PLAIN --auth-user alice@example.org --auth-password alice-pw \\
           --from alice@example.org --to bob@example.org
   Postfix logged the real client: grep 'client=.*{CLIENT}' {legacy.postfix_log}

3. Move alice to the new stack: copy her mailbox, flip her mapping, kick her sessions:
     mkdir -p {new.home("alice@example.org")} && \\
       cp -a {legacy.maildir("alice@example.org")} {new.home("alice@example.org")}/ && \\
       chown -R --reference={new.mail_dir} {new.home("alice@example.org")}
     {curl} {auth} -X PUT '{ADMIN}/mappings?identifier=alice@example.org&destination=new'
     {curl} {auth} -X POST '{ADMIN}/connections/kick?identifier=alice@example.org'
     {curl} {auth} '{ADMIN}/mappings?identifier=alice@example.org'

4. Read her mailbox again: same command as in 1. Now the new stack logs the login:
     grep 'Login: user=<alice' {new.dovecot_log}
   (rip={CLIENT} again: this time announced with a PROXY v2 header)

5. The web side (JMAP, WebDAV, web admin) on 443 is routed per request by the account
   in its credentials: bob is on new (and alice too, after step 3), anyone else on legacy:
     {curl} --resolve mail.demo.test:10443:127.0.0.1 -u bob@example.org:bob-pw https://mail.demo.test:10443/jmap/session
     {curl} --resolve mail.demo.test:10443:127.0.0.1 -u carol@example.org:carol-pw https://mail.demo.test:10443/jmap/session
   Each nginx answers with what it saw: server=new-web with proxy_protocol_addr={CLIENT}
   (PROXY v2 header) and forwarded=for={CLIENT};proto=https; the proxy logs one
   event=http-request line per request (account, destination, status, no credentials).

The admin token is in {STATE}/admin.token. Ctrl-C stops everything and removes {STATE}.
demo: showing the proxy's log ({log_path}):
""")
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            while not stopping and proxy.poll() is None:
                line = f.readline()
                if line:
                    sys.stdout.write(line.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.1)
        if proxy.poll() is not None and not stopping:
            say(f"demo: mailspliced exited with status {proxy.returncode}")
            return 1
        return 0
    finally:
        say("\ndemo: stopping ...")
        if proxy is not None and proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(15)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        for web in webs:
            web.stop()
        if stacks:
            stop_stacks(*stacks, ignore_errors=True)
        shutil.rmtree(STATE, ignore_errors=True)
        say("demo: stopped, state removed")


if __name__ == "__main__":
    sys.exit(main())
