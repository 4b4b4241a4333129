"""The MQTT edge: paho-mqtt 2.x stays in this module.

Paho's network thread only appends `(topic, payload, received_at)` to a bounded inbox and
wakes the pipeline; decoding happens in batches on the pipeline thread. When the inbox is
full the callback waits briefly (TCP back-pressure keeps QoS 1 messages at the broker),
then sheds: a vitals message is dropped and counted (`inbox_dropped`) unless its payload
carries a true `fall`; fall samples, status messages and alert commands are always kept
(counted in `inbox_priority_kept`), so the inbox may pass its bound by those alone.
Nothing is raised on paho's thread.

The session is persistent (MQTT 5 `clean_start=False` with a session expiry, or 3.1.1
`clean_session=False`) so messages published while the pipeline was down are delivered
when it returns. Reconnection uses paho's exponential backoff.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from carewatch.clock import Clock
from config.models import BrokerSettings
from ingest.fastpaho import FastClient

log = logging.getLogger(__name__)

Message = tuple[str, bytes, float]
VITALS_TOPIC = "carewatch/v1/+/+/vitals"
STATUS_TOPIC = "carewatch/v1/+/+/status"
SYS_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


@dataclass
class EdgeCounters:
    """Counters touched by paho's thread (plain ints: single writer)."""

    received: int = 0
    inbox_full_waits: int = 0
    inbox_dropped: int = 0
    inbox_priority_kept: int = 0
    connects: int = 0
    disconnects: int = 0
    publish_failures: int = 0
    broker_dropped: float = 0.0
    connected: bool = False
    subscribed: bool = False  # the broker acknowledged our subscriptions on this connection
    last_disconnect_reason: str = ""
    link_lost_at: float = math.nan  # clock time of the last lost connection (NaN: never)
    link_back_at: float = math.nan  # clock time of the last connection made
    extra: dict[str, int] = field(default_factory=dict)


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host:port or mqtts://host:port."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"broker URL must be mqtt://host:port or mqtts://host:port, got {url!r}")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def read_secret(path: str | None) -> str | None:
    """A secret from a file (first line, stripped); never logged."""
    if not path:
        return None
    return (
        Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
        if Path(path).stat().st_size
        else ""
    )


_FALL_TRUE = re.compile(rb'"fall"\s*:\s*true')


def carries_fall(payload: bytes | bytearray) -> bool:
    """A true `fall` in the raw payload (a cheap substring test first)."""
    return b'"fall"' in payload and _FALL_TRUE.search(payload) is not None


def must_keep(topic: str, payload: bytes | bytearray) -> bool:
    """The shedding policy: only vitals without a true `fall` may be dropped when full."""
    if not topic.endswith("/vitals"):
        return True  # status (offline alerts), alert commands: rare and never shed
    return carries_fall(payload)


def configure_client(client: mqtt.Client, settings: BrokerSettings, tls: bool) -> None:
    """Credentials, TLS, reconnect backoff and an unbounded outgoing queue (messages wait
    while disconnected) from `broker` settings; shared by every connection we open."""
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(
        min_delay=max(1, int(settings.reconnect_min_s)),
        max_delay=max(1, int(settings.reconnect_max_s)),
    )
    if settings.username:
        client.username_pw_set(settings.username, read_secret(settings.password_file))
    if tls:
        t = settings.tls
        client.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
                       cert_reqs=ssl.CERT_REQUIRED)
        if t.insecure:
            client.tls_insecure_set(True)


class Delivery:
    """A message handed to the broker client. `done` once the broker has it: for QoS 1,
    its PUBACK arrived (on this connection, or after paho resent it on a later one)."""

    __slots__ = ("_info",)

    def __init__(self, info: mqtt.MQTTMessageInfo | None) -> None:
        self._info = info  # None: not queued, never delivered by this process

    @property
    def done(self) -> bool:
        if self._info is None:
            return False
        # paho's own flag for this message, set on its PUBACK (after a resend on a new
        # connection too). Read directly: `is_published()` raises for a message queued
        # while the link was down (rc NO_CONN) even once it has been delivered. Per
        # message, so no PUBACK can be credited to another message reusing its mid.
        with self._info._condition:
            return bool(self._info._published)


class MqttEdge:
    """One paho client: subscribes with QoS 1 into a bounded inbox, and publishes."""

    def __init__(
        self,
        settings: BrokerSettings,
        clock: Clock,
        topics: list[str] | None = None,
        inbox_max: int = 100_000,
        inbox_wait_s: float = 2.0,
        status_topic: str | None = None,
        manual_ack: bool = False,
        enough: int = 0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = topics if topics is not None else [VITALS_TOPIC, STATUS_TOPIC]
        self.inbox: deque[Message] = deque()
        # set by paho's thread once a queued vitals message carries a true `fall` (after it
        # is in the inbox); the pipeline thread clears it, cuts its linger short and may
        # handle the fall mid-tick
        self.fall_hint = threading.Event()
        # set by paho's thread on a fall and once `enough` messages wait (0: never): the
        # pipeline thread lingers on it for a fuller step, and stops as soon as one is there
        self.enough = threading.Event()
        self.enough_messages = enough
        self.inbox_max = inbox_max
        self.inbox_wait_s = inbox_wait_s
        self.wakeup = threading.Event()
        self.counters = EdgeCounters()
        self._space = threading.Event()
        self._stopping = False  # stop() disconnects on purpose: no outage to log
        # manual_ack: PUBACK only once the pipeline has handled a message (`ack_drained`), so
        # a crash loses nothing the broker forgot; mids run parallel to the inbox
        self.manual_ack = manual_ack
        self._mids: deque[int] = deque()
        self._to_ack: list[int] = []
        self.host, self.port, tls = parse_broker_url(settings.url)
        v5 = settings.protocol == "5"
        self._v5 = v5
        self.client = FastClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=manual_ack,
        )
        self.client.max_inflight_messages_set(100)
        configure_client(self.client, settings, tls)
        self.status_topic = status_topic or f"carewatch/system/pipeline/{settings.client_id}"
        self.client.will_set(self.status_topic, b'{"online": false}', qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.fast_sink = self._on_batch
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._started = False

    # -- paho thread -------------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: mqtt.ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.counters.last_disconnect_reason = str(reason)
            log.warning("broker refused the connection: %s", reason)
            return
        self.counters.connects += 1
        self.counters.connected = True
        self.counters.link_back_at = self.clock.now()
        subs = [(t, 1) for t in self.topics] + [(SYS_DROPPED_TOPIC, 0)]
        client.subscribe(subs)  # SUBACK (on_subscribe) marks the edge subscribed
        self.publish(self.status_topic, b'{"online": true}', qos=1, retain=True)
        log.info(
            "connected to %s:%d (session present: %s)", self.host, self.port, flags.session_present
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: mqtt.ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.counters.link_lost_at = self.clock.now()
        self.counters.connected = False
        self.counters.subscribed = False
        self.counters.disconnects += 1
        self.counters.last_disconnect_reason = str(reason)
        if not self._stopping:  # not our own stop: an outage the logs must show
            log.warning("lost the broker link to %s:%d (%s); reconnecting, nothing is "
                        "received meanwhile", self.host, self.port, reason)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[mqtt.ReasonCode], properties: Properties | None) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("broker refused subscriptions: %s", ", ".join(failed))
        self.counters.subscribed = not failed

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic == SYS_DROPPED_TOPIC:
            with contextlib.suppress(ValueError):
                self.counters.broker_dropped = float(msg.payload)
            return
        self.counters.received += 1
        if len(self.inbox) >= self.inbox_max:
            self.counters.inbox_full_waits += 1
            self._space.clear()
            self.wakeup.set()
            if not self._space.wait(self.inbox_wait_s) and len(self.inbox) >= self.inbox_max:
                if not must_keep(topic, msg.payload):
                    self.counters.inbox_dropped += 1
                    if self.manual_ack and msg.qos:
                        client.ack(msg.mid, msg.qos)  # shed on purpose: counted above
                    return
                self.counters.inbox_priority_kept += 1
        if self.manual_ack:
            self._mids.append(msg.mid if msg.qos else 0)  # before the inbox: drain pairs them
        payload = bytes(msg.payload)
        self.inbox.append((topic, payload, self.clock.now()))
        self._queued(carries_fall(payload))

    def _on_batch(self, items: list[tuple[str, bytes, int]]) -> None:
        """Paho's thread, fast path: many PUBLISH packets at once (see ingest.fastpaho)."""
        if items[0][0].startswith("$SYS/"):
            for topic, payload, _ in items:
                if topic == SYS_DROPPED_TOPIC:
                    with contextlib.suppress(ValueError):
                        self.counters.broker_dropped = float(payload)
            items = [it for it in items if not it[0].startswith("$SYS/")]
            if not items:
                return
        self.counters.received += len(items)
        if len(self.inbox) + len(items) > self.inbox_max:
            self.counters.inbox_full_waits += 1
            self._space.clear()
            self.wakeup.set()
            if not self._space.wait(self.inbox_wait_s):
                room = max(0, self.inbox_max - len(self.inbox))
                kept = items[:room]
                shed: list[tuple[str, bytes, int]] = []
                for it in items[room:]:
                    (kept if must_keep(it[0], it[1]) else shed).append(it)
                if shed:
                    self.counters.inbox_dropped += len(shed)
                    if self.manual_ack:  # shed on purpose (counted): the broker may forget it
                        self.client.ack_many([m for _, _, m in shed if m])
                self.counters.inbox_priority_kept += len(kept) - min(room, len(kept))
                items = kept
        now = self.clock.now()
        if self.manual_ack:
            self._mids.extend(m for _, _, m in items)  # before the inbox: drain pairs them
        self.inbox.extend((t, p, now) for t, p, _ in items)
        self._queued(any(carries_fall(p) for _, p, _ in items))

    def _queued(self, fall: bool) -> None:
        """After messages joined the inbox: flag a fall, end a linger once enough wait, and
        wake the pipeline thread."""
        if fall:
            self.fall_hint.set()
            self.enough.set()
        elif self.enough_messages and len(self.inbox) >= self.enough_messages:
            self.enough.set()
        if not self.wakeup.is_set():
            self.wakeup.set()

    # -- pipeline thread -----------------------------------------------------------
    def drain(self, limit: int, max_bytes: int) -> list[Message]:
        """Up to `limit` queued messages and `max_bytes` of payload, oldest first (always
        one message, however large)."""
        inbox = self.inbox
        out: list[Message] = []
        size = 0
        for _ in range(min(limit, len(inbox))):
            size += len(inbox[0][1])
            if out and size > max_bytes:
                break
            out.append(inbox.popleft())
        n = len(out)
        if self.manual_ack:
            mids = self._mids
            self._to_ack.extend(m for m in (mids.popleft() for _ in range(n)) if m)
        if len(inbox) < self.inbox_max:
            self._space.set()
        return out

    def ack_drained(self) -> int:
        """With manual_ack: PUBACK every message drained so far (call once handled)."""
        if not self._to_ack:
            return 0
        mids, self._to_ack = self._to_ack, []
        self.client.ack_many(mids)
        return len(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.publish_tracked(topic, payload, qos, retain)

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1,
                        retain: bool = False) -> Delivery:
        """Queue a message (never blocks, never raises on the network); the Delivery says
        when the broker has it. Handed to paho is not delivered: a message queued while the
        link is down lives only in this process until the broker acknowledges it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.counters.publish_failures += 1
            return Delivery(None)
        return Delivery(info)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason: mqtt.ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:  # the broker refused it (MQTT 5): resending will not help
            self.counters.publish_failures += 1

    def start(self) -> None:
        self._stopping = False
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.settings.session_expiry_s
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.client.loop_start()
        self._started = True

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counters.connected:
                return True
            self.wakeup.wait(0.05)
        return self.counters.connected

    def stop(self) -> None:
        """Disconnect cleanly (the retained status says offline) and join paho's thread."""
        if not self._started:
            return
        self._stopping = True
        self._space.set()
        try:
            if self.counters.connected:
                info = self.client.publish(
                    self.status_topic, b'{"online": false}', qos=1, retain=True
                )
                info.wait_for_publish(timeout=2.0)
            self.client.disconnect()
        except (RuntimeError, ValueError):
            pass
        self.client.loop_stop()
        self._started = False
