"""Read-only view of the alert store for checks and reports: alerts opened in a window, with
the time each reached each tier (from their `escalated` events).

It reads the alert store's SQLite file over its own read-only connection, so a report can
run beside a live service (WAL readers never block the writer) or offline on a copy.
`PgAlertData` (routines/alertdata_pg.py) reads the PostgreSQL alert store the same way;
`alert_data_for(store)` picks the one matching an alert store.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from alerts.model import Alert


@dataclass
class AlertRecord:
    """An alert and when it reached each tier (tier 1 at opening)."""

    alert: Alert
    tier_reached: dict[int, float] = field(default_factory=dict)

    def tier_at(self, t: float) -> int:
        """The tier the alert was at, at time `t`."""
        return max((k for k, at in self.tier_reached.items() if at <= t), default=1)


class AlertData:
    """Alerts from a SQLite alert store file (see alerts/store.py for the schema)."""

    # The queries, in this backend's dialect (a subclass for another store swaps them).
    OPENED_SQL = ("SELECT doc FROM alerts WHERE opened_at >= ? AND opened_at < ? "
                  "ORDER BY opened_at, alert_id")
    EVENTS_SQL = ("SELECT e.doc FROM events e JOIN alerts a ON a.alert_id = e.alert_id "
                  "WHERE a.opened_at >= ? AND a.opened_at < ? ORDER BY e.seq")
    UNRESOLVED_SQL = ("SELECT doc FROM alerts WHERE opened_at < ? AND "
                      "(state != 'resolved' OR json_extract(doc, '$.resolved_at') > ?)")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def opened_between(self, start: float, end: float) -> list[AlertRecord]:
        """Alerts opened in [start, end), oldest first, with their tier times."""
        rows = self._query(self.OPENED_SQL, (start, end))
        out = {}
        for (doc,) in rows:
            alert = Alert.from_doc(orjson.loads(doc))
            out[alert.alert_id] = AlertRecord(alert, {1: alert.opened_at})
        if not out:
            return []
        events = self._query(self.EVENTS_SQL, (start, end))
        for (doc,) in events:
            ev = orjson.loads(doc)
            rec = out.get(ev.get("alert_id"))
            if rec is not None and ev.get("event") == "escalated":
                rec.tier_reached.setdefault(int(ev["tier"]), float(ev["updated_at"]))
        return list(out.values())

    def unresolved_at(self, t: float) -> list[Alert]:
        """Alerts opened before `t` and not resolved by `t` (as far as the store knows now)."""
        rows = self._query(self.UNRESOLVED_SQL, (t, t))
        return [Alert.from_doc(orjson.loads(d)) for (d,) in rows]


def alert_data_for(store: Any) -> AlertData | None:
    """The alert history reader for an alert store: its SQLite file or its PostgreSQL
    database (None for a store with neither, e.g. an in-memory one)."""
    if hasattr(store, "path"):
        return AlertData(store.path)
    if hasattr(store, "dsn"):
        from routines.alertdata_pg import PgAlertData  # psycopg only when it is used

        return PgAlertData(store.dsn)
    return None
