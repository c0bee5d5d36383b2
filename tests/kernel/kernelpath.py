"""Helpers shared by the kernel-path tests (imported by name: pytest puts this
folder on sys.path)."""

import errno
import os
import socket

# uapi constants (linux/socket.h, linux/tcp.h): Python's socket module has no names
# for them before 3.12.
SOL_TLS = 282
TCP_ULP = 31


def tcp_pair():
    """A connected loopback TCP pair (client, server), blocking, with 60 s timeouts so
    that a kernel bug shows up as a failure rather than as a hung suite."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for s in (client, server):
        s.settimeout(60)
    return client, server


def probe_ktls():
    """None if this kernel accepts the TLS ULP on a connected TCP socket, else why not."""
    client, server = tcp_pair()
    try:
        client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
    except OSError as e:
        # ENOENT: no "tls" ULP registered and no tcp-ulp-tls module to autoload.
        what = "CONFIG_TLS off or the tls module missing" if e.errno == errno.ENOENT else "unexpected"
        return (f"kernel {os.uname().release} has no kTLS: setsockopt(TCP_ULP, \"tls\") -> "
                f"{errno.errorcode.get(e.errno, e.errno)} ({what})")
    finally:
        client.close()
        server.close()
    return None


def peer_env(workdir, version, cipher, ca_file=None):
    """The environment of a Python TLS peer process that must speak exactly `cipher`.
    A TLS 1.3 suite can only be pinned through an OpenSSL configuration file (Python's
    ssl module has no set_ciphersuites), which OpenSSL reads once per process."""
    env = dict(os.environ)
    if ca_file:
        env["SSL_CERT_FILE"] = ca_file
    if version == "1.3":
        conf = os.path.join(workdir, f"openssl-{cipher}.cnf")
        with open(conf, "w") as f:
            f.write("openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n"
                    f"[d]\nCiphersuites = {cipher}\n")
        env["OPENSSL_CONF"] = conf
    return env
