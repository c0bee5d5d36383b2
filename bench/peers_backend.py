"""bench/peers_backend.py: the minimal, protocol-correct mail backend the peer benchmark
forwards to (issue 8), and the auth_http responder nginx asks where that backend is.

Dovecot and Postfix would be the bottleneck of a proxy benchmark (one imap process per
session, a queue file per message), so the bench talks to this instead; bench/peers.py
says so in its output. It runs in a process of its own (its own descriptor limit, its
own interpreter lock) with one thread per connection, blocking sockets:

  IMAP   greeting with CAPABILITY (IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN IDLE);
         CAPABILITY, ID, LOGIN (atoms, quoted strings, literals with and without '+'),
         AUTHENTICATE PLAIN (with and without an initial response), SELECT/EXAMINE,
         FETCH n BODY[] / BODY.PEEK[] (one message of `msg_size` bytes), NOOP, IDLE/DONE,
         LOGOUT. Unknown commands get BAD, as RFC 9051 section 7.1 says.
  SMTP   220, EHLO/HELO, XCLIENT (answered with a new 220, as Postfix does), AUTH PLAIN,
         MAIL, RCPT, DATA (read to <CRLF>.<CRLF>, counted), RSET, NOOP, QUIT.
  HTTP   nginx's auth_http protocol: Auth-Status OK and Auth-Server/Auth-Port of the
         plain backend port for the protocol asked.

Every listener exists twice: plain, and expecting a PROXY protocol v2 header first (what
mailsplice and HAProxy send). Two more IMAP listeners speak implicit TLS: one for the
direct TLS reference, one after a PROXY v2 header (a proxy's TLS backend leg, as in the
kTLS measurements of bench/ktls_guest.py). FETCH is paced to `rate` bytes/s when rate > 0 (the fixed offered load).
"""

import base64
import socket
import ssl
import struct
import threading
import time

from benchlib import send_paced

CHUNK = bytes(range(256)) * 4096  # 1 MiB of a pattern without CRLF-dot sequences
LINE_MAX = 8192
PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"

# port offsets from the base port
IMAP, IMAP_PROXY, IMAPS, SMTP, SMTP_PROXY, AUTH_HTTP, IMAPS_PROXY = range(7)


class Shared:
    """Settings the benchmark changes between runs, shared with the backend process."""

    def __init__(self, ctx):
        self.rate = ctx.Value("q", 0)  # bytes/s for FETCH; 0 = as fast as possible
        self.msg_size = ctx.Value("q", 32 << 20)
        self.received = ctx.Value("q", 0)  # DATA bytes received since start
        self.open = ctx.Value("q", 0)  # connections being served now


class Conn:
    """A bounded line reader over a socket (the backend's, and the benchmark client's)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out, self.buf = self.buf[: i + 1], self.buf[i + 1:]
                return out
            if len(self.buf) > LINE_MAX:
                raise ValueError("line too long")
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed; had " + repr(self.buf[-200:]))
            self.buf += d

    def exact(self, n):
        while len(self.buf) < n:
            d = self.s.recv(max(65536, n - len(self.buf)))
            if not d:
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.s.sendall(data)


def read_proxy_v2(c):
    head = c.exact(16)
    if head[:12] != PROXY_V2_SIG:
        raise ValueError("no PROXY v2 header")
    c.exact(struct.unpack("!H", head[14:16])[0])


# ---------------------------------------------------------------- IMAP

def imap_command(c, send):
    """One command with its literals inlined: (tag, NAME, [args as bytes])."""
    words = []
    while True:
        line = c.line().rstrip(b"\r\n")
        lit = None
        if line.endswith(b"}"):
            j = line.rfind(b"{")
            spec = line[j + 1: -1]
            plus = spec.endswith(b"+")
            if j >= 0 and spec.rstrip(b"+").isdigit():
                lit = int(spec.rstrip(b"+"))
                line = line[:j]
                if not plus:
                    send(b"+ go ahead\r\n")
        words.extend(split_atoms(line))
        if lit is None:
            break
        words.append(c.exact(lit))
    if len(words) < 2:
        return (words[0] if words else b"*"), b"", []
    return words[0], words[1].upper(), words[2:]


def split_atoms(line):
    out, i, n = [], 0, len(line)
    while i < n:
        if line[i:i + 1] == b" ":
            i += 1
        elif line[i:i + 1] == b'"':
            j, v = i + 1, b""
            while j < n and line[j:j + 1] != b'"':
                if line[j:j + 1] == b"\\":
                    j += 1
                v += line[j:j + 1]
                j += 1
            out.append(v)
            i = j + 1
        else:
            j = line.find(b" ", i)
            j = n if j < 0 else j
            out.append(line[i:j])
            i = j
    return out


def serve_imap(c, shared):
    send = c.send
    send(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN] bench ready\r\n")
    authed = False
    while True:
        tag, cmd, args = imap_command(c, send)
        if cmd == b"CAPABILITY":
            send(b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN\r\n"
                 + tag + b" OK done\r\n")
        elif cmd == b"ID":
            send(b'* ID ("name" "bench")\r\n' + tag + b" OK done\r\n")
        elif cmd == b"NOOP":
            send(tag + b" OK NOOP done\r\n")
        elif cmd == b"LOGIN" and len(args) == 2:
            authed = True
            send(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
        elif cmd == b"AUTHENTICATE" and args and args[0].upper() == b"PLAIN":
            resp = args[1] if len(args) > 1 else None
            if resp is None:
                send(b"+ \r\n")
                resp = c.line().strip()
            try:
                parts = base64.b64decode(resp, validate=True).split(b"\0")
            except ValueError:
                parts = []
            if len(parts) == 3:
                authed = True
                send(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
            else:
                send(tag + b" BAD invalid PLAIN response\r\n")
        elif cmd in (b"SELECT", b"EXAMINE") and authed:
            send(b"* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] ok\r\n"
                 b"* FLAGS (\\Seen)\r\n" + tag + b" OK [READ-WRITE] selected\r\n")
        elif cmd == b"FETCH" and authed:
            n = shared.msg_size.value
            send(b"* 1 FETCH (BODY[] {%d}\r\n" % n)
            send_paced(send, CHUNK, n, shared.rate.value)
            send(b")\r\n" + tag + b" OK FETCH done\r\n")
        elif cmd == b"IDLE" and authed:
            send(b"+ idling\r\n")
            c.line()
            send(tag + b" OK IDLE done\r\n")
        elif cmd == b"LOGOUT":
            send(b"* BYE bye\r\n" + tag + b" OK LOGOUT done\r\n")
            return
        else:
            send(tag + b" BAD unknown command\r\n")


# ---------------------------------------------------------------- SMTP

EHLO_REPLY = (b"250-bench.test\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n"
              b"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n"
              b"250-AUTH PLAIN\r\n250 SMTPUTF8\r\n")


def read_data(c, shared):
    """Bytes up to <CRLF>.<CRLF> (RFC 5321 section 4.1.1.4); counted, not kept."""
    total = len(c.buf)
    tail = b"\r\n" + c.buf
    while True:
        i = tail.find(b"\r\n.\r\n")
        if i >= 0:
            # whatever follows the terminator is the next command (pipelining)
            c.buf = tail[i + 5:]
            total -= len(c.buf)
            break
        d = c.s.recv(1 << 20)
        if not d:
            raise EOFError
        total += len(d)
        tail = tail[-4:] + d
    with shared.received.get_lock():
        shared.received.value += total


def serve_smtp(c, shared):
    send = c.send
    send(b"220 bench.test ESMTP ready\r\n")
    while True:
        line = c.line().rstrip(b"\r\n")
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            send(EHLO_REPLY)
        elif verb == b"HELO":
            send(b"250 bench.test\r\n")
        elif verb == b"XCLIENT":
            send(b"220 bench.test ESMTP ready\r\n")
        elif verb == b"AUTH":
            w = line.split()
            if len(w) < 3:
                send(b"334 \r\n")
                c.line()
            send(b"235 2.7.0 Authentication successful\r\n")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            send(b"250 2.0.0 Ok\r\n")
        elif verb == b"DATA":
            send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            read_data(c, shared)
            send(b"250 2.0.0 Ok: queued\r\n")
        elif verb == b"QUIT":
            send(b"221 2.0.0 Bye\r\n")
            return
        else:
            send(b"502 5.5.2 Error: command not recognized\r\n")


# ---------------------------------------------------------------- auth_http

def serve_auth_http(c, host, base):
    """nginx mail auth_http: one request per connection, headers only."""
    proto = b"imap"
    while True:
        line = c.line()
        if line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"auth-protocol:"):
            proto = line.split(b":", 1)[1].strip().lower()
    port = base + (SMTP if proto == b"smtp" else IMAP)
    c.send(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: %s\r\nAuth-Port: %d\r\n\r\n"
           % (host.encode(), port))


# ---------------------------------------------------------------- listeners

def serve(shared, host, base, cert, key, ready):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    threading.stack_size(256 * 1024)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.load_cert_chain(cert, key)

    def handle(sock, off):
        # replies are whole lines written at once: Nagle would only hold a TLS 1.3
        # session ticket or a second reply line for the client's delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(sock)
        with shared.open.get_lock():
            shared.open.value += 1
        try:
            if off == IMAPS:
                c.s = tls.wrap_socket(sock, server_side=True)
            if off in (IMAP_PROXY, SMTP_PROXY):
                read_proxy_v2(c)
            if off == IMAPS_PROXY:
                # the PROXY header comes in the clear, then TLS (what a proxy with
                # a TLS backend leg sends): read exactly the header, not into the
                # ClientHello
                head = sock.recv(16, socket.MSG_WAITALL)
                if head[:12] != PROXY_V2_SIG:
                    raise ValueError("no PROXY v2 header")
                sock.recv(struct.unpack("!H", head[14:16])[0], socket.MSG_WAITALL)
                c = Conn(tls.wrap_socket(sock, server_side=True))
            if off in (IMAP, IMAP_PROXY, IMAPS, IMAPS_PROXY):
                serve_imap(c, shared)
            elif off in (SMTP, SMTP_PROXY):
                serve_smtp(c, shared)
            else:
                serve_auth_http(c, host, base)
        except (OSError, EOFError, ValueError):
            pass
        finally:
            with shared.open.get_lock():
                shared.open.value -= 1
            try:
                c.s.close()
            except OSError:
                pass

    def accept(ls, off):
        while True:
            s, _ = ls.accept()
            threading.Thread(target=handle, args=(s, off), daemon=True).start()

    for off in range(IMAPS_PROXY + 1):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, base + off))
        ls.listen(4096)
        threading.Thread(target=accept, args=(ls, off), daemon=True).start()
    ready.set()
    while True:
        time.sleep(3600)


def start(ctx, host, base, cert, key):
    """The backend in a child process; returns (process, Shared)."""
    shared = Shared(ctx)
    ready = ctx.Event()
    p = ctx.Process(target=serve, args=(shared, host, base, cert, key, ready), daemon=True)
    p.start()
    if not ready.wait(10):
        raise RuntimeError("bench backend did not start")
    return p, shared


if __name__ == "__main__":
    raise SystemExit("bench/peers_backend.py is started by bench/peers.py")
