"""Handing a left-behind MQTT session's queued messages to their towns' new owners.

A pipeline process keeps a persistent session named after the towns it owns
(`carewatch.sessions.session_id`). When the partition changes (more workers, another
machine, a new town), messages published while the processes were down wait in the *old*
sessions, which no process opens any more. `drain_session` opens such a session, takes its
queued messages, republishes each one on the handoff topic of its town
(`carewatch/system/pipeline/handoff/{town}/...`, in the pipeline's own namespace, which the
broker ACL lets pipelines write), and ends the session. The owner of that town subscribes to
its handoff topics and reads each one as the message it wraps (`ingest.decode.split_topic`,
`original_topic`: no extra work per message on the usual topics); one it has seen
already (it was subscribed to the device topic too) is a duplicate it drops like any other.

A message is acknowledged to the old session only once its handoff copy is with the broker,
so a drain that dies midway loses nothing: the next one takes the rest again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.models import BrokerSettings
from ingest.decode import HANDOFF_ROOT, TOPIC_ROOT
from ingest.mqtt import SYS_DROPPED_TOPIC, configure_client, parse_broker_url

log = logging.getLogger(__name__)

DEVICE_PREFIX = TOPIC_ROOT + "/"
HANDOFF_PREFIX = HANDOFF_ROOT + "/"


def handoff_topic(topic: str) -> str:
    """The handoff topic carrying a message of `carewatch/v1/...` topic `topic` (the
    decoder reads it as the original: `ingest.decode.split_topic`, `original_topic`)."""
    return HANDOFF_PREFIX + topic[len(DEVICE_PREFIX):]


def handoff_subscriptions(towns: list[str] | None) -> list[str]:
    """What the owner of `towns` (None: every town) subscribes to for handed-off messages."""
    if towns is None:
        return [HANDOFF_PREFIX + "#"]
    return [f"{HANDOFF_PREFIX}{town}/#" for town in towns]


class DrainError(RuntimeError):
    """The broker could not be reached, or refused the session."""


def _client(settings: BrokerSettings, client_id: str, keep: bool) -> mqtt.Client:
    v5 = settings.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                         clean_session=None if v5 else not keep, manual_ack=True)
    configure_client(client, settings, parse_broker_url(settings.url)[2])
    return client


def _connect(client: mqtt.Client, settings: BrokerSettings, keep: bool,
             connected: threading.Event, timeout_s: float) -> None:
    host, port, _ = parse_broker_url(settings.url)
    props = None
    clean_start: bool | Literal[3] = mqtt.MQTT_CLEAN_START_FIRST_ONLY  # 3.1.1: clean_session
    if settings.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        # keep: the session as it was; else a clean one that ends with this connection
        props.SessionExpiryInterval = settings.session_expiry_s if keep else 0
        clean_start = not keep
    client.connect(host, port, keepalive=settings.keepalive_s, clean_start=clean_start,
                   properties=props)
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise DrainError(f"no answer from the broker at {settings.url} in {timeout_s:.0f} s")


def drain_session(settings: BrokerSettings, client_id: str, topics: list[str],
                  quiet_s: float = 0.5, timeout_s: float = 30.0) -> int:
    """Hand session `client_id`'s queued messages on (see the module) and end the session.

    `topics`: the session's subscriptions, dropped first so that nothing new joins it.
    Messages arrive in rounds (the broker sends a few unacknowledged ones at a time); the
    queue is taken to be empty after a round of `quiet_s` without one. Returns the number
    of messages handed on.
    """
    got: list[mqtt.MQTTMessage] = []
    lock = threading.Lock()
    connected, unsubscribed = threading.Event(), threading.Event()
    refused: list[str] = []
    arrived = threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode,
                   _p: object) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        else:
            c.unsubscribe([*topics, SYS_DROPPED_TOPIC])
        connected.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(msg)
        arrived.set()

    client = _client(settings, client_id, keep=True)
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_unsubscribe = lambda *_: unsubscribed.set()
    _connect(client, settings, True, connected, timeout_s)
    handed = 0
    try:
        if refused:
            raise DrainError(f"the broker refused session {client_id}: {refused[0]}")
        if not unsubscribed.wait(timeout_s):
            raise DrainError(f"session {client_id}: no UNSUBACK in {timeout_s:.0f} s")
        deadline = time.monotonic() + timeout_s
        while True:
            # a round: take what came until quiet_s passed without a message (the broker
            # sends more once the ones it sent are acknowledged)
            while arrived.wait(quiet_s):
                arrived.clear()
                if time.monotonic() >= deadline:
                    raise DrainError(f"session {client_id}: still draining after "
                                     f"{timeout_s:.0f} s")
            with lock:
                batch, got[:] = list(got), []
            if not batch:
                break
            infos = [client.publish(handoff_topic(m.topic), m.payload, qos=1) for m in batch
                     if m.topic.startswith(DEVICE_PREFIX)]
            for info in infos:
                info.wait_for_publish(timeout_s)
                if not info.is_published():
                    raise DrainError(f"session {client_id}: a handoff was not acknowledged")
            for m in batch:  # only now: the handoff copies are with the broker
                if m.qos:
                    client.ack(m.mid, m.qos)
            handed += len(infos)
    finally:
        client.disconnect()
        client.loop_stop()
    _end_session(settings, client_id, timeout_s)
    return handed


def _end_session(settings: BrokerSettings, client_id: str, timeout_s: float) -> None:
    """A clean connection under `client_id` that expires on disconnect: the broker forgets
    the session; and the retained status the old process left on its status topic goes."""
    connected = threading.Event()
    client = _client(settings, client_id, keep=False)
    client.on_connect = lambda *_: connected.set()
    _connect(client, settings, False, connected, timeout_s)
    try:
        client.publish(f"carewatch/system/pipeline/{client_id}", b"", qos=1,
                       retain=True).wait_for_publish(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
