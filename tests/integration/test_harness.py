"""Checks that the real-backend harness itself is sound, before any test trusts it.

Each check talks to a backend directly (no mailsplice in between) and passes only on
the backend's own evidence: a Dovecot log line or a file in a maildir. If one of these
fails, every proxy test built on the same backend would prove nothing.
"""

import imaplib
import re
import smtplib
import socket
import struct
import uuid
from email.message import EmailMessage

TRUSTED_SOURCE = "127.0.0.1"    # the default MS_TRUSTED
UNTRUSTED_SOURCE = "127.0.0.9"  # any other 127/8 address works without configuration
CLIENT_IP = "198.51.100.7"      # TEST-NET-2: the "real client" the announcements claim


class IMAPFrom(imaplib.IMAP4):
    """imaplib client that connects from a chosen source address and can send raw bytes
    (a PROXY header) before the server's greeting."""

    def __init__(self, host, port, source, preamble=b""):
        self._source = source
        self._preamble = preamble
        super().__init__(host, port, timeout=5)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        if self._preamble:
            sock.sendall(self._preamble)
        return sock


def proxy_v2_header(src, sport, dst, dport):
    """PROXY protocol v2, PROXY command, TCP over IPv4, no TLVs."""
    addresses = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses))
            + addresses)


def imap_id(client, **fields):
    args = " ".join(f'"{k.replace("_", "-")}" "{v}"' for k, v in fields.items())
    typ, data = client.xatom("ID", f"({args})")
    assert typ == "OK", data


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_imap_id_from_trusted_source_sets_rip(legacy_stack):
    session = unique("msid")
    port = legacy_stack.ports["imap"]
    mark = legacy_stack.log_mark("dovecot")
    client = IMAPFrom(legacy_stack.address, port, TRUSTED_SOURCE)
    try:
        imap_id(client, x_originating_ip=CLIENT_IP, x_originating_port="5555", x_session_id=session)
        client.login("alice@example.org", "alice-pw")
    finally:
        client.logout()
    line = legacy_stack.wait_log("dovecot", rf"imap-login: Info: Login: user=<alice@example\.org>.*"
                                            rf"session=<{session}>", since=mark)
    assert f"rip={CLIENT_IP}, rport=5555, lip={legacy_stack.address}, lport={port}, " \
           f"real_rip={TRUSTED_SOURCE}," in line


def test_smtp_on_port_25_delivers_to_maildir(legacy_stack):
    msgid = f"<{unique('mssmtp')}@rb.test>"
    mark = legacy_stack.log_mark("dovecot")
    msg = EmailMessage()
    msg["From"] = "bob@example.org"
    msg["To"] = "alice@example.org"
    msg["Subject"] = "harness delivery check"
    msg["Message-ID"] = msgid
    msg.set_content("delivered through Postfix and LMTP\n")
    with smtplib.SMTP(legacy_stack.address, legacy_stack.ports["smtp"], timeout=5) as smtp:
        smtp.send_message(msg)
    path = legacy_stack.wait_message("alice@example.org", msgid)
    assert path.startswith(legacy_stack.maildir("alice@example.org") + "/")
    legacy_stack.wait_log("dovecot", rf"lmtp\(alice@example\.org\).*msgid={re.escape(msgid)}: "
                                     r"saved mail to INBOX", since=mark)


def test_proxy_v2_header_sets_rip_on_new_stack(new_stack):
    port = new_stack.ports["imap"]
    mark = new_stack.log_mark("dovecot")
    header = proxy_v2_header(CLIENT_IP, 5556, new_stack.address, port)
    client = IMAPFrom(new_stack.address, port, TRUSTED_SOURCE, preamble=header)
    try:
        client.login("bob@example.org", "bob-pw")
    finally:
        client.logout()
    line = new_stack.wait_log("dovecot", rf"imap-login: Info: Login: user=<bob@example\.org>.*"
                                         rf"rip={re.escape(CLIENT_IP)}, rport=5556,", since=mark)
    assert f"lip={new_stack.address}, lport={port}, real_rip={TRUSTED_SOURCE}," in line


def test_imap_id_from_untrusted_source_is_ignored(legacy_stack):
    session = unique("msuntr")
    mark = legacy_stack.log_mark("dovecot")
    client = IMAPFrom(legacy_stack.address, legacy_stack.ports["imap"], UNTRUSTED_SOURCE)
    try:
        own_port = client.sock.getsockname()[1]
        # Dovecot answers OK and silently drops the values (notes, pitfall 14).
        imap_id(client, x_originating_ip=CLIENT_IP, x_originating_port="5557", x_session_id=session)
        client.login("carol", "carol-pw")
    finally:
        client.logout()
    line = legacy_stack.wait_log("dovecot", rf"imap-login: Info: Login: user=<carol>.*"
                                            rf"rip={UNTRUSTED_SOURCE}, rport={own_port},", since=mark)
    assert f"real_rip={UNTRUSTED_SOURCE}," in line
    assert CLIENT_IP not in line and session not in line


def test_proxy_header_from_untrusted_source_is_refused(new_stack):
    port = new_stack.ports["imap"]
    mark = new_stack.log_mark("dovecot")
    with socket.create_connection((new_stack.address, port), 5, source_address=(UNTRUSTED_SOURCE, 0)) as sock:
        sock.sendall(proxy_v2_header(CLIENT_IP, 5558, new_stack.address, port))
        try:
            greeting = sock.recv(1024)
        except ConnectionResetError:
            greeting = b""
    assert greeting == b"", f"an untrusted PROXY sender got a greeting: {greeting!r}"
    new_stack.wait_log("dovecot", rf"imap-login: Warning: haproxy: Client not trusted "
                                  rf"\(rip={re.escape(UNTRUSTED_SOURCE)}\)", since=mark)
