"""A throw-away certificate authority for the integration tests.

The backends present certificates signed by this CA so that the proxy under test can
verify them the way it would in production (a CA file through SSL_CERT_FILE or
tls_ca_file, plus a server name), or pin a leaf by its SHA-256 fingerprint.

Everything is done with the openssl(1) command line: the stdlib ssl module can load
certificates but cannot make them, and nothing from PyPI is available.

Keys are the slow part of a PKI, so they are kept in the PKI directory and reused: a
second issue() for the same name and the same SANs returns the files already on disk,
and a changed SAN list re-signs a certificate for the key that is already there.
EC P-256 is the default because it takes milliseconds where RSA-2048 takes tenths of a
second; RSA is still available for tests that need an RSA peer.
"""

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess

OPENSSL = "openssl"

CA_NAME = "mailsplice test CA"
CA_DAYS = 3650
# Below the 825 days that some TLS stacks accept as the longest leaf lifetime.
LEAF_DAYS = 800

# Names become file names in the PKI directory.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# openssl(1) reads the extensions from a config file; writing our own keeps the result
# independent of the host's /etc/ssl/openssl.cnf.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, {key_usage}
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {sans}
"""

# RSA key exchange still encrypts with the server key; ECDSA keys only ever sign.
_KEY_USAGE = {"ec": "digitalSignature", "rsa": "digitalSignature, keyEncipherment"}
_GENPKEY_ARGS = {
    "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
}


class PkiError(RuntimeError):
    pass


def fingerprint_sha256(cert_path, sep=""):
    """SHA-256 over the DER form of the first certificate in a PEM file, as lowercase
    hex. sep=":" gives the "aa:bb:..." form used by tls_pinned_cert_sha256."""
    with open(cert_path, encoding="ascii") as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    if end not in pem:
        raise PkiError(f"{cert_path}: no PEM certificate in this file")
    first = pem[: pem.index(end) + len(end)] + "\n"
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()
    return sep.join(digest[i : i + 2] for i in range(0, len(digest), 2)) if sep else digest


def _san_entries(sans):
    entries = []
    for san in sans:
        try:
            entries.append(f"IP:{ipaddress.ip_address(san)}")
        except ValueError:
            entries.append(f"DNS:{san}")
    return entries


class Pki:
    """One CA in `directory` (created if needed, mode 0755 so that unprivileged daemons
    can read the certificates; keys stay 0600 and are read by the daemons as root)."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        os.chmod(self.directory, 0o755)
        self.ca_file = os.path.join(self.directory, "ca.pem")
        self.ca_key_file = os.path.join(self.directory, "ca.key")
        with self._locked():
            if not (os.path.exists(self.ca_file) and os.path.exists(self.ca_key_file)):
                self._make_ca()

    def issue(self, name, sans, key="ec"):
        """A leaf certificate for `name` signed by this CA -> (cert_path, key_path).

        sans: DNS names and IP addresses (told apart by parsing). The subject CN is
        `name`, for logs only: verifiers look at the SANs.
        """
        if not _SAFE_NAME.match(name):
            raise PkiError(f"certificate name {name!r}: use letters, digits, '.', '_' and '-' only")
        if key not in _GENPKEY_ARGS:
            raise PkiError(f"certificate {name!r}: key must be 'ec' or 'rsa', not {key!r}")
        sans = list(sans)
        if not sans:
            raise PkiError(f"certificate {name!r}: at least one SAN is needed (verifiers ignore the CN)")
        cert_path = os.path.join(self.directory, f"{name}.pem")
        key_path = os.path.join(self.directory, f"{name}.{key}.key")
        spec_path = os.path.join(self.directory, f"{name}.json")
        spec = {"sans": _san_entries(sans), "key": key, "ca": fingerprint_sha256(self.ca_file)}
        with self._locked():
            if os.path.exists(cert_path) and os.path.exists(key_path) and self._read_spec(spec_path) == spec:
                return cert_path, key_path
            if not os.path.exists(key_path):
                self._genkey(key, key_path)
            config = self._write_config(_OPENSSL_CONFIG.format(
                key_usage=_KEY_USAGE[key], sans=", ".join(spec["sans"])))
            # req -CA (OpenSSL >= 3.0) signs in one step, with no CSR file and no serial
            # file to share between concurrent test sessions (the serial is random).
            self._run("req", "-new", "-key", key_path, "-config", config, "-extensions", "leaf_ext",
                      "-subj", f"/CN={name}", "-CA", self.ca_file, "-CAkey", self.ca_key_file,
                      "-days", str(LEAF_DAYS), "-out", cert_path)
            os.chmod(cert_path, 0o644)
            with open(spec_path, "w", encoding="utf-8") as f:
                json.dump(spec, f)
        return cert_path, key_path

    def _make_ca(self):
        self._genkey("ec", self.ca_key_file)
        config = self._write_config(_OPENSSL_CONFIG.format(key_usage="digitalSignature", sans="DNS:unused"))
        self._run("req", "-x509", "-new", "-key", self.ca_key_file, "-config", config,
                  "-extensions", "ca_ext", "-subj", f"/CN={CA_NAME}", "-days", str(CA_DAYS),
                  "-out", self.ca_file)
        os.chmod(self.ca_file, 0o644)

    def _genkey(self, key, path):
        tmp = path + ".tmp"
        # umask-independent 0600 from the first byte: the key is never world-readable.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self._run("genpkey", *_GENPKEY_ARGS[key], "-out", tmp)
        os.replace(tmp, path)

    def _write_config(self, text):
        path = os.path.join(self.directory, "openssl.cnf")
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
        return path

    def _run(self, *args):
        p = subprocess.run([OPENSSL, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if p.returncode != 0:
            raise PkiError(f"openssl {args[0]} failed (exit {p.returncode}) in {self.directory}:\n"
                           f"{p.stderr.strip()}")

    @staticmethod
    def _read_spec(path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _locked(self):
        return _FileLock(os.path.join(self.directory, ".lock"))


class _FileLock:
    """flock(2) on a lock file: serialises issuers across threads (each opens its own
    file description) and across processes sharing one PKI directory."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing drops the lock
        self.fd = None
