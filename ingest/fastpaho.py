"""A paho-mqtt client with a cheaper receive path; still paho, same API and protocol code.

Stock paho 2.x reads each packet with a `select()` and up to four small `recv()` calls, and
wakes its own loop through a socket pair for every PUBACK it queues: about 25 µs of CPU a
message, the ceiling of one Python subscriber. Three changes, all local:
- the socket is wrapped in a read buffer, so one `recv(64 KiB)` serves many packets, and
  every packet already buffered is parsed before the loop goes back to `select()`;
- a packet queued *from paho's own loop thread* (the PUBACK of a QoS 1 message) does not
  poke the wake-up socket pair: that loop writes pending packets on its next pass anyway.
- a PUBLISH of QoS 0 or 1 without MQTT 5 properties (what devices send) is decoded
  directly instead of through paho's generic decoder, which builds a fresh `Properties`
  object (two dicts of every MQTT 5 property name) for each message; anything else (QoS 2,
  properties present, a malformed packet) goes through paho's own decoder unchanged.
Everything else (connect, TLS, reconnect, sessions, publishing) is paho's own code.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_READ_SIZE = 65536


class BufferedSocket:
    """Wraps a (TLS or plain) socket; `recv` serves from a userspace buffer."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(_READ_SIZE)  # may raise BlockingIOError: paho handles it
            if not data:
                return b""
            self._buf = bytearray(data)
            self._pos = 0
        end = min(len(self._buf), self._pos + bufsize)
        out = bytes(self._buf[self._pos : end])
        self._pos = end
        return out

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

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        sock = self._sock
        while (
            rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            and isinstance(sock, BufferedSocket)
            and sock.buffered()
            and self._sock is sock
        ):
            rc = super().loop_read(1)
        return rc

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
