"""What the kernel's TLS layer (kTLS) does for us, checked with raw setsockopt calls.

The data path hands TLS legs to kTLS (docs: ../shared/notes/kernel-datapath.md). These
tests pin down the facts that design rests on, on the kernel they run under, with no
TLS library involved: keys are installed by hand as the daemon would after a handshake.

  - TCP_ULP "tls" is accepted on a connected TCP socket, refused before connect
  - TLS_TX / TLS_RX accept struct tls12_crypto_info_aes_gcm_128, for TLS 1.2 and 1.3,
    and getsockopt gives back what was set (only at the exact struct size)
  - a kTLS TX socket writes standard TLS records: a userspace AES-GCM decrypts them
  - kTLS TX on one end and kTLS RX on the other move 1 MiB each way byte-exact
  - kTLS RX refuses records sealed with another key (EBADMSG)

Without kTLS (the build host's kernel has CONFIG_TLS off) every test skips and says
so; run them under a Debian kernel with
    vmtest/run linux-image-amd64 -- /usr/bin/python3 -m pytest -q tests/kernel
Parametrised by TLS version: select one with -k tls12 / -k tls13.
"""

import ctypes
import errno
import os
import random
import socket
import struct
import threading

import pytest

from kernelpath import SOL_TLS, TCP_ULP, tcp_pair

pytestmark = pytest.mark.usefixtures("ktls")

# linux/tls.h
TLS_TX = 1
TLS_RX = 2
TLS_1_2_VERSION = 0x0303
TLS_1_3_VERSION = 0x0304
TLS_CIPHER_AES_GCM_128 = 51
TLS_APPLICATION_DATA = 0x17

MIB = 1 << 20


class TlsCryptoInfoAesGcm128(ctypes.Structure):
    """struct tls12_crypto_info_aes_gcm_128 (also used for TLS 1.3)."""

    _fields_ = [
        ("version", ctypes.c_uint16),
        ("cipher_type", ctypes.c_uint16),
        ("iv", ctypes.c_ubyte * 8),
        ("key", ctypes.c_ubyte * 16),
        ("salt", ctypes.c_ubyte * 4),
        ("rec_seq", ctypes.c_ubyte * 8),
    ]


assert ctypes.sizeof(TlsCryptoInfoAesGcm128) == 40  # the size the kernel insists on

VERSIONS = [pytest.param(TLS_1_2_VERSION, id="tls12"), pytest.param(TLS_1_3_VERSION, id="tls13")]


def crypto_info(version, seed):
    """Key material derived from seed: the same seed on both ends gives matching keys."""
    rnd = random.Random(seed)
    info = TlsCryptoInfoAesGcm128(version=version, cipher_type=TLS_CIPHER_AES_GCM_128)
    info.iv[:] = rnd.randbytes(8)
    info.key[:] = rnd.randbytes(16)
    info.salt[:] = rnd.randbytes(4)
    info.rec_seq[:] = bytes(8)  # records are numbered from 0 after the handshake
    return info


def set_ulp(sock):
    sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")


def set_key(sock, direction, info):
    sock.setsockopt(SOL_TLS, direction, bytes(info))


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 256 * 1024))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def transfer(src, dst, data):
    """Send data on src from a thread while reading as much from dst; return what
    arrived. A sender error is raised here, after the reader is done."""
    errors = []

    def send():
        try:
            src.sendall(data)
        except OSError as e:  # pragma: no cover - only on a kernel bug
            errors.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        got = recv_exact(dst, len(data))
    finally:
        sender.join()
    if errors:
        raise errors[0]
    return got


@pytest.fixture
def pair():
    client, server = tcp_pair()
    yield client, server
    client.close()
    server.close()


def test_tcp_ulp_tls_on_connected_socket(pair):
    client, _ = pair
    set_ulp(client)
    assert client.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).rstrip(b"\0") == b"tls"


def test_tcp_ulp_tls_refused_before_connect():
    # The daemon must install the ULP after connect()/accept(), never on a listener.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(OSError) as e:
            set_ulp(s)
        assert e.value.errno == errno.ENOTCONN


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_tx_rx_accept_aes_gcm_128(pair, version):
    client, server = pair
    for sock in (client, server):
        set_ulp(sock)
    tx, rx = crypto_info(version, 1), crypto_info(version, 2)
    set_key(client, TLS_TX, tx)
    set_key(client, TLS_RX, rx)
    set_key(server, TLS_TX, rx)
    set_key(server, TLS_RX, tx)
    # Before any record, getsockopt returns exactly what was installed...
    assert client.getsockopt(SOL_TLS, TLS_TX, 40) == bytes(tx)
    assert client.getsockopt(SOL_TLS, TLS_RX, 40) == bytes(rx)
    # ...or just {version, cipher_type}; any other length is EINVAL (6.1 and 6.12).
    assert client.getsockopt(SOL_TLS, TLS_TX, 4) == struct.pack("=HH", version, TLS_CIPHER_AES_GCM_128)
    with pytest.raises(OSError) as e:
        client.getsockopt(SOL_TLS, TLS_TX, 24)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("version", VERSIONS)
def test_ktls_tx_writes_standard_tls_records(pair, version):
    """kTLS TX on the client, a plain socket on the server: what arrives is one TLS
    application-data record that a userspace AES-GCM opens (interop, not just a
    kernel talking to itself)."""
    aead = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead",
                               reason="python3-cryptography is needed to open the record")
    client, server = pair
    set_ulp(client)
    info = crypto_info(version, 3)
    set_key(client, TLS_TX, info)
    plaintext = random.Random(4).randbytes(100)
    client.sendall(plaintext)

    header = recv_exact(server, 5)
    rtype, outer_version, length = struct.unpack("!BHH", header)
    assert rtype == TLS_APPLICATION_DATA
    assert outer_version == TLS_1_2_VERSION  # TLS 1.3 records say 1.2 on the wire too
    body = recv_exact(server, length)
    salt, iv, key, seq = bytes(info.salt), bytes(info.iv), bytes(info.key), bytes(info.rec_seq)
    if version == TLS_1_2_VERSION:
        # explicit nonce (8) | ciphertext | tag (16); nonce = salt | explicit part
        assert length == 8 + len(plaintext) + 16
        assert body[:8] == iv  # the first record's explicit nonce is the installed iv
        nonce = salt + body[:8]
        aad = seq + struct.pack("!BHH", TLS_APPLICATION_DATA, TLS_1_2_VERSION, len(plaintext))
        opened = aead.AESGCM(key).decrypt(nonce, body[8:], aad)
        assert opened == plaintext
    else:
        # ciphertext of (plaintext | inner type) | tag (16); nonce = (salt | iv) ^ seq
        assert length == len(plaintext) + 1 + 16
        nonce = bytes(a ^ b for a, b in zip(salt + iv, bytes(4) + seq))
        opened = aead.AESGCM(key).decrypt(nonce, body, header)
        assert opened == plaintext + bytes([TLS_APPLICATION_DATA])


@pytest.mark.parametrize("version", VERSIONS)
def test_ktls_roundtrip_1mib(pair, version):
    """Both ends on kTLS, one key per direction: 1 MiB goes client -> server, the
    server sends what it got back, and the client gets the original byte for byte."""
    client, server = pair
    for sock in (client, server):
        set_ulp(sock)
    up, down = crypto_info(version, 5), crypto_info(version, 6)
    set_key(client, TLS_TX, up)
    set_key(server, TLS_RX, up)
    set_key(server, TLS_TX, down)
    set_key(client, TLS_RX, down)
    data = random.Random(7).randbytes(MIB)

    got = transfer(client, server, data)
    assert len(got) == len(data)
    assert got == data, "client -> server: payload differs"
    back = transfer(server, client, got)
    assert len(back) == len(data)
    assert back == data, "server -> client: payload differs"


@pytest.mark.parametrize("version", VERSIONS)
def test_ktls_rx_rejects_a_record_sealed_with_another_key(pair, version):
    client, server = pair
    for sock in (client, server):
        set_ulp(sock)
    set_key(client, TLS_TX, crypto_info(version, 8))
    set_key(server, TLS_RX, crypto_info(version, 9))
    client.sendall(b"sealed with the wrong key")
    with pytest.raises(OSError) as e:
        server.recv(4096)
    assert e.value.errno == errno.EBADMSG


TLS_SET_RECORD_TYPE = 1  # linux/tls.h: cmsg types
TLS_GET_RECORD_TYPE = 2
# RFC 8446 section 4.6.3: KeyUpdate (24), length 1, update_not_requested
KEY_UPDATE = b"\x18\x00\x00\x01\x00"


def kernel_at_least(major, minor):
    rel = os.uname().release.split("-")[0].split(".")
    return (int(rel[0]), int(rel[1])) >= (major, minor)


def test_tls13_key_update_reaches_user_space_and_rx_cannot_be_rekeyed(pair):
    """What kernel TLS receive does with a TLS 1.3 KeyUpdate (ktls.h relies on it):
    splice(2) refuses the record (EINVAL), recvmsg hands it over with
    TLS_GET_RECORD_TYPE = handshake (22), and new receive keys are refused before
    Linux 6.14 ("tls: implement rekey for TLS1.3" came with 6.14): a second TLS_RX
    answers EBUSY, so a relay cannot follow the peer and must end the session."""
    client, server = pair
    for sock in (client, server):
        set_ulp(sock)
    set_key(client, TLS_TX, crypto_info(TLS_1_3_VERSION, 10))
    set_key(server, TLS_RX, crypto_info(TLS_1_3_VERSION, 10))
    client.sendmsg([KEY_UPDATE], [(SOL_TLS, TLS_SET_RECORD_TYPE, bytes([22]))])
    client.sendall(b"after the update")
    rd, wr = os.pipe()
    try:
        with pytest.raises(OSError) as e:
            os.splice(server.fileno(), wr, 65536)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(rd)
        os.close(wr)
    data, anc, _, _ = server.recvmsg(100, socket.CMSG_SPACE(1))
    assert data == KEY_UPDATE
    assert (SOL_TLS, TLS_GET_RECORD_TYPE, bytes([22])) in [(lv, t, d[:1]) for lv, t, d in anc]
    if kernel_at_least(6, 14):
        set_key(server, TLS_RX, crypto_info(TLS_1_3_VERSION, 11))
    else:
        with pytest.raises(OSError) as e:
            set_key(server, TLS_RX, crypto_info(TLS_1_3_VERSION, 11))
        assert e.value.errno == errno.EBUSY
