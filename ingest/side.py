"""A publish-only MQTT connection for bulk notices of lower urgency (routine task events).

Paho sends one connection's messages in order, with a bounded number in flight. When the
routines issue a week's calls for ten thousand residents, ten thousand task events would sit
in front of the next alert event on the edge's connection (measured: a fall's alert waited
~3 s behind the start-up issuance of 6,000 tasks). On their own connection they cannot.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from config.models import BrokerSettings
from ingest.mqtt import configure_client, parse_broker_url

log = logging.getLogger(__name__)


class SidePublisher:
    """Publishes on a second connection (`<client_id>-<suffix>`); QoS 1 messages wait in
    memory while it is disconnected and go out when it reconnects."""

    def __init__(self, settings: BrokerSettings, suffix: str = "notices") -> None:
        self.host, self.port, tls = parse_broker_url(settings.url)
        self.settings = settings
        v5 = settings.protocol == "5"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{settings.client_id}-{suffix}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(1000)
        configure_client(self.client, settings, tls)
        self.publish_failures = 0
        self._last: mqtt.MQTTMessageInfo | None = None  # QoS 1 goes out in order: wait on it
        self._started = False

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; never blocks on the network, never raises on it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.publish_failures += 1
        elif qos > 0:
            self._last = info

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        self._started = True

    def stop(self, flush_s: float = 5.0) -> None:
        """Give queued messages up to `flush_s` to go out, disconnect, join paho's thread."""
        if not self._started:
            return
        self._started = False
        try:
            last = self._last
            if self.client.is_connected() and last is not None and not last.is_published():
                last.wait_for_publish(timeout=flush_s)
            self.client.disconnect()
        except (RuntimeError, ValueError) as exc:  # not connected, or the wait timed out
            log.warning("side connection stopped with messages unsent: %s", exc)
        self.client.loop_stop()
