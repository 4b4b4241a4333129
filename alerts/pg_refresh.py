"""Keep an engine's open alerts in step with a shared store (PostgreSQL).

Several engines and consoles write the same alerts. On each tick an engine asks the store
what was written since its last look (`alert_changes`: an indexed range query on the id of
the transaction that last wrote each row, one round trip, ids and versions only) and
replaces its copies of the alerts that changed elsewhere: acknowledged, escalated or
resolved by another instance, or opened by one for this engine's residents. The engine's
own writes come back too, at the version it already holds, and cost nothing more.

SQLite has one writer, so there is nothing to follow: `follower_for` returns None and the
tick does not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from alerts.store import AlertStore
from alerts.store_pg_base import version_of

if TYPE_CHECKING:
    from alerts.engine import AlertEngine


@runtime_checkable
class SharedAlertStore(Protocol):
    """What a shared alert store offers to follow other instances (alerts/store_pg.py)."""

    def alert_changes(self, cursor: int | None) -> tuple[list[tuple[str, str, str, int]], int]:
        """(alert_id, resident_id, state, version) written since `cursor`, next cursor."""
        ...


class AlertFollower:
    """A change cursor into a shared store. Create it before the engine loads its open
    alerts: whatever is written meanwhile then comes with the first refresh."""

    def __init__(self, store: SharedAlertStore) -> None:
        self.store = store
        _rows, self.cursor = store.alert_changes(None)

    def refresh(self, engine: AlertEngine) -> int:
        """Reload the engine's copies of alerts other instances changed; returns how many.
        Call with the engine's lock held."""
        rows, self.cursor = self.store.alert_changes(self.cursor)
        closed: list[str] = []
        changed: list[str] = []
        for alert_id, resident_id, state, version in rows:
            held = engine._by_id.get(alert_id)
            if held is None and (state == "resolved"
                                 or resident_id not in engine.devices.row_of_resident):
                continue  # not ours (another worker's residents) or nothing to drop
            if held is not None and version_of(held) == version:
                continue  # our own write, or already reloaded
            (closed if state == "resolved" else changed).append(alert_id)
        # Drops first: a (resident, kind) resolved elsewhere and opened again must end up
        # holding the new alert, not lose it to the old one's unindexing.
        engine._reload(closed + changed)  # _index queues their deadlines afresh
        return len(closed) + len(changed)


def follower_for(store: AlertStore) -> AlertFollower | None:
    """A follower when `store` is shared by several instances, else None."""
    return AlertFollower(store) if isinstance(store, SharedAlertStore) else None
