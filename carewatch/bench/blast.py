"""A publisher for benchmarks that spreads traffic over many topics at C-client cost.

`mosquitto_pub -l` publishes every line to one topic, i.e. one device; a benchmark of the whole
pipeline needs traffic spread over a fleet (a device's samples are processed in order, so a
handful of devices each sending thousands of samples a second measures a pathological
backlog, not a fleet). This process sends pre-encoded MQTT 3.1.1 QoS 1 PUBLISH packets from a
file in large writes and counts the PUBACKs; Python does no per-message work.

Run: `python -m carewatch.bench.blast PORT FILE CLIENT_ID`; exits 0 once every message is
acknowledged by the broker.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

PUBACK_LEN = 4  # fixed header (2) + packet id (2) in MQTT 3.1.1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """One QoS 1 PUBLISH (MQTT 3.1.1); packet ids must be 1..65535."""
    t = topic.encode()
    var = len(t).to_bytes(2, "big") + t + packet_id.to_bytes(2, "big")
    return b"\x32" + _varint(len(var) + len(payload)) + var + payload


def write_packets(path: Path, messages: Iterable[tuple[str, bytes]]) -> int:
    """Encode (topic, payload) pairs into `path`; returns how many."""
    n = 0
    with open(path, "wb") as fh:
        for topic, payload in messages:
            fh.write(publish_packet(topic, payload, n % 65535 + 1))
            n += 1
    return n


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x00"  # 3.1.1, clean session, keep-alive off
    body = var + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + _varint(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def blast(port: int, path: Path, client_id: str, expected: int) -> None:
    """Send the packets in `path` and wait for `expected` PUBACKs."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(_connect_packet(client_id))
        connack = _recv_exact(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        acked = [0]

        def read_acks() -> None:
            pending = 0
            while acked[0] < expected:
                data = sock.recv(1 << 16)
                if not data:
                    return
                pending += len(data)
                acked[0] += pending // PUBACK_LEN
                pending %= PUBACK_LEN

        reader = threading.Thread(target=read_acks, name="blast-acks")
        reader.start()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 18):
                sock.sendall(chunk)
        reader.join()
        if acked[0] < expected:
            raise ConnectionError(f"only {acked[0]} of {expected} messages acknowledged")
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    finally:
        sock.close()


if __name__ == "__main__":
    port_arg, file_arg, cid_arg, n_arg = sys.argv[1:5]
    blast(int(port_arg), Path(file_arg), cid_arg, int(n_arg))
