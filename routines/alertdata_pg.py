"""`AlertData` over the PostgreSQL alert store (alerts/store_pg.py, `alerts_backend:
postgresql`): the same alert history for the daily checks and the reports.

Each read opens its own short read-only connection, as the SQLite reader opens the file per
call: nothing to close, and a long report never holds up the engine's connection.
"""

from __future__ import annotations

from typing import Any

import psycopg

from routines.alertdata import AlertData


class PgAlertData(AlertData):
    """Alerts from the PostgreSQL alert store at `dsn` (see alerts/store_pg_base.py)."""

    # Byte-order ids (as SQLite sorts them) whatever the database's locale.
    OPENED_SQL = ("SELECT doc::text FROM alerts WHERE opened_at >= %s AND opened_at < %s "
                  'ORDER BY opened_at, alert_id COLLATE "C"')
    EVENTS_SQL = ("SELECT e.doc::text FROM events e JOIN alerts a ON a.alert_id = e.alert_id "
                  "WHERE a.opened_at >= %s AND a.opened_at < %s ORDER BY e.seq")
    UNRESOLVED_SQL = ("SELECT doc::text FROM alerts WHERE opened_at < %s AND "
                      "(state <> 'resolved' OR (doc->>'resolved_at')::float8 > %s) "
                      'ORDER BY opened_at, alert_id COLLATE "C"')

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            conn.read_only = True
            try:
                return conn.execute(sql, args).fetchall()
            except psycopg.errors.UndefinedTable:  # no alert store created yet: no alerts
                return []
