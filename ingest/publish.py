"""The outbound side as a protocol: whoever publishes (MQTT client, replay recorder, tests)."""

from __future__ import annotations

from typing import Protocol


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message for delivery; never blocks on the network, never raises on it."""
        ...


class ListPublisher:
    """Collects messages in memory (replay and tests)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.messages.append((topic, payload, qos, retain))
