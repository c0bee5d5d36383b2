"""A byte pump behind the proxy's port-25 pass-through, for data-path tests.

With `forwarding = "proxy"`, a port-25 session is a PROXY v2 header followed by the
client's bytes, untouched: a pure TCP relay, exactly what the kernel data path moves.
The pump strips the header and then does what the client's first line asks:

    ECHO\n             echo every byte back, in random-sized writes
    SEND <n> <seed>\n  send n pseudo-random bytes (the seed makes them reproducible),
                       then close (FIN), or reset with RESET in place of SEND
    SINK\n             read to the end, reply "<count> <sha256>\n", close

Every connection records what it received and sent (counts, SHA-256) in `self.done`
keyed by the client's source port from the PROXY header, for the test to compare.
"""

import hashlib
import random
import socket
import struct
import threading

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pattern(n, seed):
    """n reproducible pseudo-random bytes."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += rnd.randbytes(min(1 << 20, n - len(out)))
    return bytes(out)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


class Pump:
    def __init__(self, address, port):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(1024)
        self.address, self.port = address, port
        self.done = {}
        self.lock = threading.Lock()
        self.progress = {}  # client port -> bytes sent so far (SEND)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        try:
            socket.create_connection((self.address, self.port), timeout=1).close()
        except OSError:
            pass
        self.thread.join(5)
        self.listener.close()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            if self.stopping:
                s.close()
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            head = recv_exact(s, 16)
            if head[:12] != PROXY_V2_SIG:
                raise ValueError("no PROXY v2 header")
            rest = recv_exact(s, struct.unpack("!H", head[14:16])[0])
            client_port = struct.unpack("!H", rest[8:10])[0] if head[13] == 0x11 else 0
            line = b""
            while not line.endswith(b"\n"):
                line += recv_exact(s, 1)
            words = line.split()
            if words[0] == b"ECHO":
                self._echo(s, client_port)
            elif words[0] in (b"SEND", b"RESET"):
                self._send(s, client_port, int(words[1]), int(words[2]), words[0] == b"RESET")
            elif words[0] == b"SINK":
                self._sink(s, client_port)
        except (OSError, EOFError, ValueError, IndexError):
            pass
        finally:
            s.close()

    def _record(self, port, **kw):
        with self.lock:
            self.done[port] = kw

    def _echo(self, s, port):
        rnd = random.Random(port)
        h = hashlib.sha256()
        n = 0
        while True:
            data = s.recv(rnd.choice((1, 100, 4096, 65536, 1 << 20)))
            if not data:
                break
            h.update(data)
            n += len(data)
            view = memoryview(data)
            while view:
                k = max(1, min(len(view), rnd.choice((1, 7, 1500, 16384, 1 << 20))))
                s.sendall(view[:k])
                view = view[k:]
        # recorded before the FIN: the client asserts on this record as soon as the
        # echo ends, and the FIN is what ends it
        self._record(port, received=n, sha256=h.hexdigest())
        s.shutdown(socket.SHUT_WR)

    def _send(self, s, port, total, seed, reset):
        data = pattern(total, seed)
        view = memoryview(data)
        sent = 0
        while sent < total:
            k = s.send(view[sent:sent + (1 << 20)])
            sent += k
            self.progress[port] = sent
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._record(port, sent=sent, sha256=hashlib.sha256(data).hexdigest())

    def _sink(self, s, port):
        h = hashlib.sha256()
        n = 0
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            h.update(data)
            n += len(data)
        s.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))
        self._record(port, received=n, sha256=h.hexdigest())
