"""Alert events from the store's outbox to the broker, marked published only once delivered.

Every event is committed (unpublished) before it is sent. It is marked published when the
broker has acknowledged it, not when handed to the MQTT client: a message queued while the
broker is down lives only in this process, and marking it earlier lost it for good when the
process then died. What is still unpublished at a start goes out first, oldest first.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from alerts.store import AlertStore


class _Delivery(Protocol):
    @property
    def done(self) -> bool: ...


class EventOutbox:
    """Sends committed events and marks them published as the broker confirms them."""

    def __init__(self, store: AlertStore, publisher: Any) -> None:
        self.store, self.publisher = store, publisher
        self._pending_restart = True  # a crashed run's unpublished events: first, once
        # handed to the publisher, not yet confirmed by the broker (None: nothing to wait for)
        self._unconfirmed: list[tuple[int, _Delivery | None]] = []

    def send(self, seq: int, topic: str, doc: dict[str, Any]) -> None:
        tracked = getattr(self.publisher, "publish_tracked", None)
        if tracked is None:  # replay, tests: handed over is delivered
            self.publisher.publish(topic, orjson.dumps(doc), 1, False)
            self._unconfirmed.append((seq, None))
        else:
            self._unconfirmed.append((seq, tracked(topic, orjson.dumps(doc), 1, False)))

    def resend_unpublished(self) -> None:
        """Once per run, before any new event: what a previous run stored but never had
        confirmed."""
        if not self._pending_restart:
            return
        self._pending_restart = False
        for seq, topic, doc in self.store.unpublished_events():
            self.send(seq, topic, doc)

    def confirm(self) -> None:
        """Mark published the events the broker has acknowledged (the rest wait: a crash
        now sends them again at the next start)."""
        if not self._unconfirmed:
            return
        done = [seq for seq, d in self._unconfirmed if d is None or d.done]
        if done:
            self._unconfirmed = [(seq, d) for seq, d in self._unconfirmed
                                 if not (d is None or d.done)]
            self.store.mark_published(done)
