"""The event outbox alone: an event counts as published only once its delivery is
confirmed, and what a previous run left unconfirmed goes out first, once, oldest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alerts.outbox import EventOutbox
from alerts.store import SqliteAlertStore, Txn


class Held:
    """A delivery the test confirms by hand (the broker's PUBACK)."""

    def __init__(self) -> None:
        self.done = False


class Publisher:
    """Records what was handed over; each message's delivery is confirmed by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Held]] = []

    def publish_tracked(self, topic: str, payload: bytes, qos: int, retain: bool) -> Held:
        held = Held()
        self.sent.append((topic, held))
        return held


def _commit(store: SqliteAlertStore, *names: str) -> list[int]:
    return store.commit(Txn(events=[(n, f"t/{n}", {"event": n}) for n in names]))


def test_published_only_once_confirmed_and_a_previous_runs_events_first(
        tmp_path: Path) -> None:
    store = SqliteAlertStore(tmp_path / "alerts.db")
    try:
        left = _commit(store, "old-1", "old-2")  # a crashed run stored, never confirmed
        pub = Publisher()
        outbox = EventOutbox(store, pub)
        outbox.resend_unpublished()
        outbox.resend_unpublished()  # once per run
        (new,) = _commit(store, "new")
        outbox.send(new, "t/new", {"event": "new"})
        assert [t for t, _ in pub.sent] == ["t/old-1", "t/old-2", "t/new"]
        outbox.confirm()
        assert [s for s, _t, _d in store.unpublished_events()] == [*left, new]
        pub.sent[1][1].done = True  # the broker acknowledged old-2 only
        outbox.confirm()
        assert [s for s, _t, _d in store.unpublished_events()] == [left[0], new]
        for _t, held in pub.sent:
            held.done = True
        outbox.confirm()
        assert store.unpublished_events() == []
    finally:
        store.close()


def test_a_publisher_without_tracking_counts_as_delivered(tmp_path: Path) -> None:
    store = SqliteAlertStore(tmp_path / "alerts.db")
    sent: list[Any] = []

    class Plain:  # replay's and the tests' in-memory publishers
        def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
            sent.append(topic)

    try:
        (seq,) = _commit(store, "e")
        outbox = EventOutbox(store, Plain())
        outbox.send(seq, "t/e", {"event": "e"})
        outbox.confirm()
        assert sent == ["t/e"] and store.unpublished_events() == []
    finally:
        store.close()
