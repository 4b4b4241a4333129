"""Is the alert store writable, and what do its alert and notification tables say? Asked by
the health checks and /metrics from HTTP threads, so each probe uses its own short
connection, never the pipeline's (on PostgreSQL: a connection per question, a few a second
at most with consoles open and Prometheus scraping).

The SQLite probe takes a real write lock on the file and checks the disk's free space. The
PostgreSQL probe connects and asks whether the server takes writes (not a hot standby, not
read-only); the server's disk is the database's own business and its monitoring's.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any, Protocol

MIN_FREE_BYTES = 64 * 1024 * 1024
_FAILED = "SELECT count(*) FROM deliveries WHERE outcome IN ('retry', 'failed')"
_OUTBOX = "SELECT status, count(*) FROM outbox GROUP BY 1"
_ATTEMPTS = "SELECT outcome, count(*) FROM deliveries GROUP BY 1"
# the health checks' and the metrics' reads, by name: (SQLite, PostgreSQL)
QUERIES: dict[str, tuple[str, str]] = {
    "failed_deliveries": (_FAILED, _FAILED),
    # open alerts by state, tier and severity
    "open_alerts": (
        "SELECT state, json_extract(doc, '$.tier'), json_extract(doc, '$.severity'), count(*) "
        "FROM alerts WHERE state != 'resolved' GROUP BY 1, 2, 3",
        "SELECT state, (doc->>'tier')::int, (doc->>'severity')::int, count(*) "
        "FROM alerts WHERE state <> 'resolved' GROUP BY 1, 2, 3"),
    "outbox_by_status": (_OUTBOX, _OUTBOX),
    "attempts_by_outcome": (_ATTEMPTS, _ATTEMPTS),
}


class StoreProbe(Protocol):
    def writable(self) -> bool:
        """True if an alert could be stored now."""
        ...

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """The rows of one of `QUERIES` (none when the store cannot be read)."""
        ...


def failed_deliveries(probe: StoreProbe) -> float:
    """Notification attempts that failed or wait for a retry, ever (0 when unknown)."""
    found = probe.rows("failed_deliveries")
    return float(found[0][0]) if found else 0.0


class SqliteProbe:
    def __init__(self, db: Path, min_free: int = MIN_FREE_BYTES) -> None:
        self.db = db
        self.min_free = min_free

    def writable(self) -> bool:
        """The file takes a write lock now, and its disk has room."""
        try:
            if shutil.disk_usage(self.db.parent).free < self.min_free:
                return False
            con = sqlite3.connect(str(self.db), timeout=0.5, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
            finally:
                con.close()
            return True
        except (OSError, sqlite3.Error):
            return False

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=0.5)
            try:
                return con.execute(QUERIES[query][0]).fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return []


class PgProbe:
    def __init__(self, dsn: str, timeout_s: int = 2) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s  # libpq's connect_timeout: whole seconds, at least 2

    def _all(self, sql: str) -> list[tuple[Any, ...]] | None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True,
                                 connect_timeout=self.timeout_s) as conn:
                return conn.execute(sql).fetchall()
        except psycopg.Error:
            return None

    def writable(self) -> bool:
        found = self._all("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
        return found is not None and found[0][0] is False and found[0][1] == "off"

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        return self._all(QUERIES[query][1]) or []


def probe_for(config: Any, data_dir: Path) -> StoreProbe:
    """The probe of the alert store `config.storage` names."""
    storage = config.storage
    if storage.alerts_backend == "postgresql":
        from alerts.store_pg_conn import dsn_from_settings

        return PgProbe(dsn_from_settings(storage.postgresql))
    return SqliteProbe(Path(data_dir) / config.alerts.db_file)
