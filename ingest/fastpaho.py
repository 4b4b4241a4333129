"""A paho-mqtt client with a cheaper receive path; still paho, same API and protocol code.

Stock paho 2.x reads each packet with a `select()` and up to four small `recv()` calls, and
wakes its own loop through a socket pair for every PUBACK it queues: about 25 µs of CPU a
message, the ceiling of one Python subscriber. Four changes, all local:
- the socket is wrapped in a read buffer, so one `recv(64 KiB)` serves many packets, and
  every packet already buffered is parsed before the loop goes back to `select()`;
- a packet queued *from paho's own loop thread* (the PUBACK of a QoS 1 message) does not
  poke the wake-up socket pair: that loop writes pending packets on its next pass anyway.
- a PUBLISH of QoS 0 or 1 without MQTT 5 properties (what devices send) is decoded
  directly instead of through paho's generic decoder, which builds a fresh `Properties`
  object (two dicts of every MQTT 5 property name) for each message; anything else (QoS 2,
  properties present, a malformed packet) goes through paho's own decoder unchanged;
- with `fast_sink` set, every such PUBLISH already buffered is parsed in one pass and
  handed over as one list (no message object, no callback per message), and their PUBACKs
  leave as one write, after the hand-over.
Everything else (connect, TLS, reconnect, sessions, publishing) is paho's own code.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_READ_SIZE = 65536


class BufferedSocket:
    """Wraps a (TLS or plain) socket; `recv` serves from a userspace buffer."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""  # bytes, as received: slicing it copies once
        self._pos = 0
        self.would_block = False  # the last refill found the socket empty
        self._eof = False

    def recv(self, bufsize: int) -> bytes:
        if self._eof:
            return b""
        if self._pos >= len(self._buf):
            try:
                data = self._sock.recv(_READ_SIZE)
            except BlockingIOError:  # paho handles it; we remember it to stop reading
                self.would_block = True
                raise
            self.would_block = False
            if not data:
                return b""
            self._buf = data
            self._pos = 0
        end = min(len(self._buf), self._pos + bufsize)
        out = self._buf[self._pos : end]
        self._pos = end
        return out

    def fill(self) -> bool:
        """Refill an empty buffer with one `recv`; False if nothing could be read now.

        Errors and end-of-stream are left in place for paho's own read to meet and handle.
        """
        if self._pos < len(self._buf):
            return True
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            self.would_block = True
            return False
        except OSError:
            return False
        if not data:
            self._eof = True
            return False
        self.would_block = False
        self._buf = data
        self._pos = 0
        return True

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def pending(self) -> int:
        """Bytes readable without a syscall (paho skips `select()` while this is > 0)."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return self.buffered() + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_NO_PROPERTIES = Properties(PacketTypes.PUBLISH)  # shared, read-only: carries no property
_SUCCESS = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


class FastClient(mqtt.Client):
    """`paho.mqtt.client.Client` with the buffered receive path described above."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "websockets":
            return sock
        return BufferedSocket(sock)

    # set by the owner to take PUBLISH packets in batches: fn([(topic, payload, mid), ...]),
    # mid 0 for QoS 0. Without manual_ack their PUBACKs are sent once fn has returned.
    fast_sink: Callable[[list[tuple[str, bytes, int]]], None] | None = None

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        current = self._sock
        if not isinstance(current, BufferedSocket):
            return super().loop_read(max_packets)
        sock: BufferedSocket = current
        sock.would_block = False  # select() said readable (or bytes are buffered): try again
        rc = _SUCCESS
        for _ in range(64):  # bounded, so the loop gets back to writing PUBACKs and pings
            if self.fast_sink is not None and self._in_packet["command"] == 0 and sock.fill():
                self._take_publishes(sock)
            if self._sock is not sock:
                return rc
            if not sock.buffered() and sock.would_block:
                return rc
            rc = super().loop_read(1)  # anything else, a partial packet, or a refill
            if rc != _SUCCESS or self._sock is not sock or sock.would_block:
                return rc
        return rc

    def _take_publishes(self, sock: BufferedSocket) -> None:
        """Parse every complete QoS 0/1 PUBLISH without properties at the head of the
        buffer, hand them over in one call, and queue their PUBACKs as one write. Stops at
        the first packet paho should see (another type, QoS 2, properties, malformed)."""
        buf, pos, end = sock._buf, sock._pos, len(sock._buf)
        v5 = 1 if self._protocol == mqtt.MQTTv5 else 0
        auto_ack = not self._manual_ack
        out: list[tuple[str, bytes, int]] = []
        append = out.append
        acks = bytearray()
        while pos + 1 < end:
            head = buf[pos]
            if head & 0xF0 != 0x30 or head & 4:
                break  # not a PUBLISH, or QoS 2 (or the invalid 3): paho's own path
            qos = (head >> 1) & 3
            # remaining length: one or two bytes (packets under 16 KiB) inline, else the loop
            b = buf[pos + 1]
            if b < 128:
                length, i = b, pos + 2
            elif pos + 2 < end and buf[pos + 2] < 128:
                length, i = (b & 127) | (buf[pos + 2] << 7), pos + 3
            else:
                i, length, mult = pos + 1, 0, 1
                while i < end and i - pos <= 4:
                    b = buf[i]
                    length += (b & 127) * mult
                    mult <<= 7
                    i += 1
                    if not b & 128:
                        break
                else:
                    break  # incomplete or over-long length: paho decides
                if b & 128:
                    break
            stop = i + length
            if stop > end or length < 2:
                break
            t0 = i + 2
            t1 = t0 + ((buf[i] << 8) | buf[i + 1])
            p = t1 + (2 if qos else 0)
            if t1 == t0 or p + v5 > stop or (v5 and buf[p] != 0):
                break
            if qos:
                mid = buf[t1] << 8 | buf[t1 + 1]
                if auto_ack:
                    acks += b"\x40\x02" + buf[t1 : t1 + 2]
            else:
                mid = 0
            append((buf[t0:t1].decode("utf-8", "replace"), buf[p + v5 : stop], mid))
            pos = stop
        if not out:
            return
        sock._pos = pos
        self._last_bytes_received = mqtt.time_func()
        assert self.fast_sink is not None
        self.fast_sink(out)  # handed over before the broker is told it was received
        if acks:
            self._packet_queue(PUBACK, bytes(acks), 0, 0)

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> mqtt.MQTTErrorCode:
        if self._thread is not None and self._thread is threading.current_thread():
            self._out_packet.append(
                {
                    "command": command,
                    "mid": mid,
                    "qos": qos,
                    "pos": 0,
                    "to_process": len(packet),
                    "packet": packet,
                    "info": info,
                }
            )
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header: int = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        try:
            slen = (packet[0] << 8) | packet[1]
            if qos == 2 or slen == 0:
                return super()._handle_publish()
            pos = 2 + slen
            topic = bytes(packet[2:pos])
            mid = 0
            if qos:
                mid = (packet[pos] << 8) | packet[pos + 1]
                pos += 2
            props = None
            if self._protocol == mqtt.MQTTv5:
                if packet[pos] != 0:  # properties present: paho's full decoder
                    return super()._handle_publish()
                pos += 1
                props = _NO_PROPERTIES
        except IndexError:
            return super()._handle_publish()  # malformed: paho raises its own error
        message = mqtt.MQTTMessage(mid=mid, topic=topic)
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.properties = props
        message.payload = bytes(packet[pos:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return _SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK QoS 1 messages received with manual_ack, as one write."""
        if mids:
            blob = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
            self._packet_queue(PUBACK, blob, 0, 0)
