"""HTTP backends for the HTTP routing tests: two nginx servers standing in for the old
and the new Stalwart, a WebSocket echo server, and a scripted backend for the odd
answers nginx does not give.

    old = Nginx("old", state_dir, "127.0.0.21", 18443, tls=(cert, key))
    new = Nginx("new", state_dir, "127.0.0.22", 18080, proxy_protocol=True,
                websocket=("127.0.0.23", 18081))
    old.start(); new.start()
    ...
    new.access_log()          # one dict per request nginx served
    new.stop()                # SIGQUIT to our own nginx master (by pid), then SIGKILL

Every nginx answers GET/POST on any path with a text body echoing what it saw:

    server=new
    proxy_protocol_addr=127.0.0.5      (the PROXY header's source; "" without one)
    forwarded=for=127.0.0.5;proto=https
    x_forwarded_for=127.0.0.5
    request=GET /jmap/session HTTP/1.1
    remote_addr=...

/files/ serves static files from `files_dir` (the 256 MiB download), PUT /dav/<name>
stores the request body under `dav_dir` (WebDAV, nginx's own module: the upload is
checked on the backend's disk), /jmap/ws is proxied to the WebSocket echo server.

Processes are started in their own process group and stopped by their pid, never by
name. Nothing outside the state directory is touched.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time

NGINX = "/usr/sbin/nginx"

# What the HTTP tests send as credentials: test_zz_secrets_never_logged.py searches
# every log of the session for each of them (and the Basic blobs made from them).
BASIC_PASSWORD = "http-basic-pw-7c1e55"
SW1_SECRET = "Zk9t2QmVx4Rr8wPnSecret"          # the opaque middle of a Stalwart token
JWT_SIGNATURE = "c2lnbmF0dXJlLW5vdC1jaGVja2Vk"  # routing reads claims, never verifies
OAUTH_CODE = "oauth-code-3b5e9a"
OAUTH_CLIENT_SECRET = "oauth-client-secret-91d2"


def http_secrets():
    """{description: bytes} for the secrets check."""
    import base64
    found = {"HTTP Basic password": BASIC_PASSWORD.encode(),
             "Stalwart token secret": SW1_SECRET.encode(),
             "JWT signature": JWT_SIGNATURE.encode(),
             "OAuth code": OAUTH_CODE.encode(),
             "OAuth client secret": OAUTH_CLIENT_SECRET.encode()}
    for user in ("alice@example.org", "bob@example.org", "carol@example.org"):
        found[f"HTTP Basic blob of {user}"] = base64.b64encode(
            f"{user}:{BASIC_PASSWORD}".encode())
    return found


def sw1_token(account):
    import base64
    footer = base64.urlsafe_b64encode(account.encode()).rstrip(b"=").decode()
    return f"sw1.{SW1_SECRET}.{footer}"


def jwt_token(claims):
    import base64
    import json

    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{JWT_SIGNATURE}"
PYTHON = "/usr/bin/python3"  # python3-websockets is a Debian package

ECHO_BODY = ("server=$ms_server\\n"
             "proxy_protocol_addr=$proxy_protocol_addr\\n"
             "forwarded=$http_forwarded\\n"
             "x_forwarded_for=$http_x_forwarded_for\\n"
             "request=$request\\n"
             "remote_addr=$remote_addr\\n"
             "host=$http_host\\n")

ACCESS_FORMAT = ('conn=$connection pp="$proxy_protocol_addr" remote="$remote_addr" '
                 'request="$request" '
                 'status=$status fwd="$http_forwarded" xff="$http_x_forwarded_for" '
                 'length=$request_length sent=$body_bytes_sent')


class BackendError(RuntimeError):
    pass


def wait_port(address, port, timeout=10, use_tls=False):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BackendError(f"nothing listens on {address}:{port} after {timeout}s")
            time.sleep(0.05)


def _stop_group(proc, sig, timeout):
    """Signal our own child (and the workers it forked into its process group)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Nginx:
    def __init__(self, name, state_dir, address, port, *, proxy_protocol=False, tls=None,
                 websocket=None, keepalive_timeout="75s"):
        self.name = name
        self.address, self.port = address, port
        self.proxy_protocol = proxy_protocol
        self.tls = tls
        self.websocket = websocket
        self.keepalive_timeout = keepalive_timeout
        self.dir = os.path.join(state_dir, "nginx-" + name)
        self.files_dir = os.path.join(self.dir, "files")
        self.dav_dir = os.path.join(self.dir, "dav")
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.access_path = os.path.join(self.dir, "access.log")
        self.error_path = os.path.join(self.dir, "error.log")
        self.proc = None
        for d in (self.dir, self.files_dir, self.dav_dir, os.path.join(self.dir, "tmp")):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.dav_dir, 0o777)  # the worker (www-data) writes uploads there

    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"

    def _config(self):
        d = self.dir
        listen = f"{self.address}:{self.port}"
        if self.tls:
            listen += " ssl"
        if self.proxy_protocol:
            listen += " proxy_protocol"
        tls = ""
        if self.tls:
            cert, key = self.tls
            tls = f"ssl_certificate {cert};\n        ssl_certificate_key {key};"
        ws = ""
        if self.websocket:
            wa, wp = self.websocket
            ws = f"""
        location /jmap/ws {{
            proxy_pass http://{wa}:{wp};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }}"""
        tmp = os.path.join(d, "tmp")
        return f"""
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_path} info;
events {{ worker_connections 1024; }}
http {{
    log_format ms '{ACCESS_FORMAT}';
    access_log {self.access_path} ms;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout {self.keepalive_timeout};
    keepalive_requests 10000;
    client_max_body_size 0;
    sendfile on;
    server {{
        listen {listen};
        server_name {self.name};
        {tls}
        set $ms_server {self.name};
        location / {{
            default_type text/plain;
            return 200 "{ECHO_BODY}";
        }}
        location /small/ {{
            client_max_body_size 1k;
            default_type text/plain;
            return 200 "{ECHO_BODY}";
        }}
        location /files/ {{
            alias {self.files_dir}/;
        }}
        location /dav/ {{
            alias {self.dav_dir}/;
            dav_methods PUT;
            create_full_put_path on;
            client_body_buffer_size 1m;
        }}{ws}
    }}
}}
"""

    def start(self, timeout=10):
        with open(self.conf, "w") as f:
            f.write(self._config())
        # user www-data needs to read the files and write the uploads
        os.chmod(self.dir, 0o755)
        self.proc = subprocess.Popen([NGINX, "-c", self.conf, "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        try:
            wait_port(self.address, self.port, timeout)
        except BackendError:
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            self.stop()
            raise BackendError(f"nginx {self.name} did not start: {err}{self.error_tail()}")
        return self

    def stop(self, timeout=10):
        _stop_group(self.proc, signal.SIGQUIT, timeout)
        self.proc = None

    def error_tail(self, n=20):
        try:
            with open(self.error_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ evidence

    def access_mark(self):
        try:
            return os.path.getsize(self.access_path)
        except OSError:
            return 0

    def access_log(self, since=0):
        """One dict per request nginx logged since the mark."""
        try:
            with open(self.access_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            out.append({k: q + u for k, q, u in re.findall(r'(\w+)=(?:"([^"]*)"|(\S+))', line)})
        return out

    def wait_access(self, predicate, since=0, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.access_log(since):
                if predicate(e):
                    return e
            if time.monotonic() > deadline:
                raise BackendError(f"nginx {self.name}: no such request logged; log: "
                                   f"{self.access_log(since)[-5:]}")
            time.sleep(0.05)


def parse_echo(body):
    """The echo body of an nginx backend as a dict."""
    out = {}
    for line in body.decode("utf-8", "replace").splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


# ---------------------------------------------------------------------- WebSocket echo

WS_SERVER = r'''
import asyncio, sys, websockets

async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)
        if message == "push":
            # a message the client did not ask for: the server speaks first
            await ws.send("pushed by the server")

async def main(addr, port):
    async with websockets.serve(echo, addr, port):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


class WebSocketEcho:
    """python3-websockets in a process of its own: echoes every message, and answers
    "push" with one more message of its own."""

    def __init__(self, state_dir, address, port):
        self.address, self.port = address, port
        self.script = os.path.join(state_dir, "ws_echo.py")
        self.log_path = os.path.join(state_dir, "ws_echo.log")
        self.proc = None

    def start(self, timeout=10):
        with open(self.script, "w") as f:
            f.write(WS_SERVER)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, self.script, self.address, str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.address, self.port, timeout)
        return self

    def stop(self, timeout=5):
        _stop_group(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        self._log.close()


# ---------------------------------------------------------------------- scripted backend

MIB_BLOCK = 1 << 20


def _read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        if not got:
            return None, buf
        buf += got
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


class Scripted:
    """A raw HTTP backend in a thread, for answers nginx does not give. The path of
    the request line picks the script:

        /sse          text/event-stream, chunked: one event, then waits until
                      `sse_release` is set, then a second event and the end
        /until-close  a body without length, ended by closing the connection
        /garbage      a status line that is not HTTP
        /silent       reads the request and never answers
        /hints        103 Early Hints, then 200
        /big-chunked  8 MiB in 1 MiB chunks (bytes i % 251), chunked
        /close-after  200 with Connection: close, then the connection closes
        /drop-next    200, and the next request on this connection is not
                      answered: the connection closes (a kept connection the
                      server dropped just as the proxy reused it)
        anything else 200 with "scripted" and Content-Length

    `requests` lists (connection number, request line) as received (the test checks
    that nothing reached the backend when it should not have, and which connection
    carried what)."""

    def __init__(self, address, port):
        self.address, self.port = address, port
        self.requests = []
        self.sse_release = threading.Event()
        self.lock = threading.Lock()
        self.stopping = False
        self.conns = []
        self.n_conns = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.sse_release.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(s)
                self.n_conns += 1
                n = self.n_conns
            threading.Thread(target=self._serve, args=(s, n), daemon=True).start()

    def _serve(self, s, n):
        buf = b""
        drop_next = False
        try:
            while True:
                head, buf = _read_head(s, buf)
                if head is None:
                    return
                line = head.split("\r\n", 1)[0]
                with self.lock:
                    self.requests.append((n, line))
                if drop_next:
                    return
                drop_next = "/drop-next" in line
                path = line.split(" ")[1] if " " in line else ""
                # routes pin "/scripted/**" here: the script is what follows
                if path.startswith("/scripted"):
                    path = path[len("/scripted"):]
                if not self._answer(s, path):
                    return
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _answer(self, s, path):
        if path.startswith("/sse"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            ev = b"data: first\n\n"
            s.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.sse_release.wait(30)
            ev = b"data: second\n\n"
            s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
            return True
        if path.startswith("/until-close"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            s.sendall(b"x" * 100000 + b"end\n")
            return False
        if path.startswith("/garbage"):
            s.sendall(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
            return False
        if path.startswith("/silent"):
            while not self.stopping and s.recv(4096):
                pass
            return False
        if path.startswith("/big-chunked"):
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = bytes(i % 251 for i in range(MIB_BLOCK))
            for _ in range(8):
                s.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
            s.sendall(b"0\r\n\r\n")
            return True
        if path.startswith("/close-after"):
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\nclose\n")
            return False
        if path.startswith("/hints"):
            s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints")
            return True
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nscripted\n")
        return True
