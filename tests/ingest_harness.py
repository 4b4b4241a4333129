"""Helpers for ingest tests: a pipeline without detectors, MQTT clients, condition waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.clock import Clock
from carewatch.pipeline import Pipeline
from carewatch.service import Service
from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings, Config
from ingest.publish import Publisher


def small_config(residents: int = 6, towns: int = 3, **extra: Any) -> Config:
    data = demo_registry(residents, seed=1, towns=towns)
    data.update(extra)
    return parse_config(data)


def bare_pipeline(
    config: Config, clock: Clock, publisher: Publisher, **_: Any
) -> tuple[Pipeline, Callable[[], None]]:
    """Ingest only: no detectors, no alert engine, no sink."""
    return Pipeline(config, clock, publisher), lambda: None


def ingest_service(
    config: Config, broker_url: str, client_id: str = "cw-test", tmp: Path | None = None
) -> Service:
    broker = BrokerSettings(url=broker_url, client_id=client_id)
    return Service(config, broker=broker, data_dir=tmp, build=bare_pipeline)


def wait_for(cond: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll `cond` until true; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Client:
    """A small paho client for tests: publish, and collect messages on subscriptions."""

    def __init__(self, port: int, client_id: str, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe([(t, 1) for t in subscribe])
            assert self._subscribed.wait(5), "subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body: Any = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            body = msg.payload
        with self._lock:
            self.messages.append((msg.topic, body))

    def received(self, topic_suffix: str = "") -> list[tuple[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith(topic_suffix)]

    def publish(
        self, topic: str, payload: bytes | dict[str, Any], qos: int = 1
    ) -> mqtt.MQTTMessageInfo:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.client.publish(topic, data, qos=qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
