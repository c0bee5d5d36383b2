#!/usr/bin/python3
"""Both TLS ends of one proxied IMAP session, for test_ktls_proxy.py.

Runs as its own process because the TLS 1.3 cipher suite can only be pinned through
OPENSSL_CONF (Python's ssl module has no set_ciphersuites), and OpenSSL reads that file
once per process.

  backend  a TLS IMAP server: reads the PROXY v2 header in the clear, then TLS; answers
           the proxy's login (CAPABILITY, ID, AUTHENTICATE PLAIN, LOGIN) with OK; then
           echoes every byte until the end of the stream
  client   connects to the proxy with TLS, logs in, sends `--bytes` pseudo-random bytes
           in random-sized writes while reading the echo

Prints one JSON line: what each end negotiated and the SHA-256 of every stream.
"""

import argparse
import hashlib
import json
import os
import random
import select
import socket
import ssl
import struct
import sys
import threading
import time


def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed during the PROXY header")
        b += c
    return b


def context(side, version, cipher, cert=None, key=None, ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if side == "server" else ssl.PROTOCOL_TLS_CLIENT)
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    if version == "1.2":
        ctx.set_ciphers(cipher)
    if side == "server":
        ctx.load_cert_chain(cert, key)
    else:
        ctx.load_verify_locations(ca)
    return ctx


def accept_tls(listener, ctx, out):
    """The backend end of a proxied session: accept, read the PROXY v2 header in the
    clear, then TLS; records what was negotiated in out. Returns the socket and an
    unbuffered file on it."""
    raw, _ = listener.accept()
    raw.settimeout(120)
    head = exact(raw, 16)
    exact(raw, struct.unpack("!H", head[14:16])[0])
    s = ctx.wrap_socket(raw, server_side=True)
    out["backend_cipher"] = s.cipher()[0]
    out["backend_version"] = s.version()
    return s, s.makefile("rwb", buffering=0)


def backend(listener, ctx, out):
    s, f = accept_tls(listener, ctx, out)
    s.sendall(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] test backend\r\n")
    while True:
        line = f.readline()
        if not line:
            raise EOFError("closed during the login")
        tag, cmd = (line.split(None, 2) + [b"", b""])[:2]
        cmd = cmd.upper().rstrip()
        if cmd == b"CAPABILITY":
            s.sendall(b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID\r\n%s OK done\r\n" % tag)
        elif cmd == b"ID":
            s.sendall(b"* ID NIL\r\n%s OK done\r\n" % tag)
        elif cmd in (b"LOGIN", b"AUTHENTICATE"):
            if cmd == b"AUTHENTICATE" and len(line.split()) < 4:
                s.sendall(b"+ \r\n")
                f.readline()
            s.sendall(b"%s OK [CAPABILITY IMAP4rev1] Logged in\r\n" % tag)
            break
        else:
            s.sendall(b"%s BAD unexpected\r\n" % tag)
    h, n = hashlib.sha256(), 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
        s.sendall(d)
    out["backend_received"] = n
    out["backend_sha256"] = h.hexdigest()
    s.shutdown(socket.SHUT_WR)
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)  # host:port
    ap.add_argument("--listen", required=True)  # host:port of the backend
    ap.add_argument("--version", choices=("1.2", "1.3"), required=True)
    ap.add_argument("--cipher", required=True)  # OpenSSL name, TLS 1.2 only
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--client-addr", default="127.0.0.5")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--sni", required=True)
    ap.add_argument("--ready", action="store_true", help="print READY once listening")
    a = ap.parse_args()

    host, port = a.listen.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1)
    out = {}
    errors = []

    def run_backend():
        try:
            backend(listener, context("server", a.version, a.cipher, a.cert, a.key), out)
        except Exception as e:  # reported in the JSON
            errors.append(f"backend: {e!r}")

    t = threading.Thread(target=run_backend)
    t.start()

    phost, pport = a.proxy.rsplit(":", 1)
    raw = socket.create_connection((phost, int(pport)), timeout=120,
                                   source_address=(a.client_addr, 0))
    out["client_port"] = raw.getsockname()[1]
    s = context("client", a.version, a.cipher, ca=a.ca).wrap_socket(raw, server_hostname=a.sni)
    out["client_cipher"] = s.cipher()[0]
    out["client_version"] = s.version()
    f = s.makefile("rwb", buffering=0)
    f.readline()
    s.sendall(b"a1 LOGIN alice secret\r\n")
    line = f.readline()
    while line.startswith(b"*"):
        line = f.readline()
    out["login"] = line.decode(errors="replace").strip()
    if not line.startswith(b"a1 OK"):
        print(json.dumps(out))
        return 1

    # one thread drives the client's TLS object: OpenSSL must not read and write one
    # SSL from two threads at once
    rnd = random.Random(a.bytes)
    data = rnd.randbytes(a.bytes)
    h, n = hashlib.sha256(), 0
    view = memoryview(data)
    ended = False
    k = 0
    s.setblocking(False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not view and not ended:
            # a plain FIN under TLS (the SSL socket owns the fd: shut a duplicate); the
            # proxy forwards the end of the stream
            end = socket.socket(fileno=os.dup(s.fileno()))
            end.shutdown(socket.SHUT_WR)
            end.close()
            ended = True
        progressed = False
        if view:
            # OpenSSL wants a write it refused retried with the same length
            if not k:
                k = min(len(view), rnd.choice((1, 13, 1460, 4096, 16384, 65536, 1 << 20)))
            try:
                sent = s.send(view[:k])
                view = view[sent:]
                k = 0
                progressed = True
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
        try:
            d = s.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
            progressed = True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        except Exception as e:  # reported in the JSON
            errors.append(f"client read after {n} bytes: {e!r}")
            break
        if not progressed:
            select.select([s], [s] if view else [], [], 1.0)
    t.join(180)
    out["sent_sha256"] = hashlib.sha256(data).hexdigest()
    out["echo_received"] = n
    out["echo_sha256"] = h.hexdigest()
    out["errors"] = errors
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
