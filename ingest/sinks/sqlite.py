"""The embedded history sink: SQLite (stdlib), WAL mode, batched inserts, retention.

One writer thread owns the connection. Each batch is one transaction: `executemany` into
`raw` plus an upsert of its per-minute aggregates into `minute` (see sqlite_schema).
A batch that fails (disk full, read-only file, database locked by someone else) is kept,
in order, and retried with exponential backoff on a fresh connection; while it fails,
new rows pile up in the bounded queue and beyond that are dropped and counted. Ingest
never waits for the disk. Retention deletes raw rows older than `retention_days` and
aggregates older than `aggregate_retention_days`, per device along the primary key, every
`retention_interval_s` (on the given clock's time, so replay behaves like production).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from carewatch.clock import Clock, WallClock
from carewatch.files import private_db
from config.models import SqliteSinkSettings
from ingest.devices import DeviceTable
from ingest.samples import VITALS, SampleColumns
from ingest.sinks.base import BackgroundSink, StatValue
from ingest.sinks.sqlite_schema import (
    INSERT_RAW,
    SCHEMA,
    SCHEMA_VERSION,
    UPSERT_DEVICE,
    UPSERT_MINUTE,
    minute_rows,
    raw_rows,
)

log = logging.getLogger(__name__)
DAY_S = 86400.0


class SqliteSink(BackgroundSink):
    """Writes samples to a SQLite file from its own thread. Starts on construction."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        devices: DeviceTable,
        *,
        settings: SqliteSinkSettings | None = None,
        clock: Clock | None = None,
        retention_interval_s: float = 600.0,
        busy_timeout_ms: int = 2000,
        retry_min_s: float = 0.2,
        retry_max_s: float = 30.0,
        retain_max: int | None = None,
        on_connect: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        s = settings or SqliteSinkSettings.model_validate({"path": str(path)})
        super().__init__(queue_max=s.queue_max, batch_max=s.batch_max)
        self.path = Path(path)
        self._devices = devices
        self._clock: Clock = clock or WallClock()
        self._raw_keep_s = s.retention_days * DAY_S
        self._agg_keep_s = s.aggregate_retention_days * DAY_S
        self._retention_every = retention_interval_s
        self._busy_timeout_s = busy_timeout_ms / 1000.0
        self._retry_min, self._retry_max = retry_min_s, retry_max_s
        self._retain_max = retain_max if retain_max is not None else s.queue_max
        self._on_connect = on_connect
        # worker-thread state
        self._conn: sqlite3.Connection | None = None
        self._keys: np.ndarray | None = None
        self._retained: deque[SampleColumns] = deque()
        self._retained_rows = 0
        self._failing = False
        self._backoff = retry_min_s
        self._next_try = 0.0
        self._next_retention = 0.0
        self._retention_request = threading.Event()
        self._retention_done = threading.Event()
        self._retention_runs = 0
        self.start()

    # ---- public extras ---------------------------------------------------------------
    def apply_retention_now(self, timeout_s: float = 10.0) -> bool:
        """Run retention on the writer thread now; True once it has run."""
        self._retention_done.clear()
        self._retention_request.set()
        with self._cond:
            self._cond.notify_all()
        return self._retention_done.wait(timeout_s)

    # ---- hooks -----------------------------------------------------------------------
    def _accepting(self) -> bool:
        return self._retained_rows < self._retain_max

    def _extra_stats(self) -> dict[str, StatValue]:
        return {"retained": self._retained_rows, "retention_runs": self._retention_runs,
                "failing": int(self._failing)}

    def _process(self, batch: SampleColumns) -> None:
        self._retained.append(batch)
        self._retained_rows += len(batch)
        self._drain()

    def _maintain(self) -> None:
        self._drain()
        now = time.monotonic()  # operational schedule; the cutoff itself uses the clock
        if self._retention_request.is_set() or (not self._failing and now >= self._next_retention):
            self._next_retention = now + self._retention_every
            self._retention()

    def _finish(self) -> None:
        self._next_try = 0.0  # one last attempt regardless of backoff
        self._drain()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- writing ---------------------------------------------------------------------
    def _drain(self) -> None:
        while self._retained and time.monotonic() >= self._next_try:
            batch = self._retained[0]
            if self._failing:
                self._count("retries")
            try:
                self._store(batch)
            except (sqlite3.Error, OSError) as exc:  # OSError: its directory cannot be made
                self._failed(exc)
                return
            self._retained.popleft()
            self._retained_rows -= len(batch)
            self._release(len(batch), written=True)
            if self._failing:
                log.info("sqlite sink recovered; %d samples still to write", self._retained_rows)
                self._failing = False
                self._backoff = self._retry_min
                self._clear_error()

    def _failed(self, exc: sqlite3.Error | OSError) -> None:
        self._count("failed_batches")
        self._note_error(f"{type(exc).__name__}: {exc}")
        self._failing = True
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._retry_max, self._backoff * 2)
        self._disconnect()  # a fresh connection on retry: the file may have been replaced

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn, self._keys = None, None

    def _connect(self) -> tuple[sqlite3.Connection, np.ndarray]:
        if self._conn is not None and self._keys is not None:
            return self._conn, self._keys
        private_db(self.path)
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a power cut may lose the last commits, never corrupt the file
            conn.execute("PRAGMA synchronous=NORMAL")
            if self._on_connect is not None:
                self._on_connect(conn)
            conn.executescript(SCHEMA)
            d = self._devices
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
            conn.executemany(UPSERT_DEVICE, zip(d.device_ids, d.resident_ids, d.town_ids,
                                                strict=True))
            conn.execute("COMMIT")
            ids = dict(conn.execute("SELECT device, id FROM devices").fetchall())
            keys = np.array([ids[dev] for dev in d.device_ids], np.int64)
        except BaseException:
            conn.close()
            raise
        self._conn, self._keys = conn, keys
        return conn, keys

    def _store(self, batch: SampleColumns) -> None:
        conn, keys = self._connect()
        # (device, ts) order = primary-key order: each leaf page is dirtied once per batch
        batch = batch.sorted_by_row_ts()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(INSERT_RAW, raw_rows(batch, keys))
            conn.executemany(UPSERT_MINUTE, minute_rows(batch, keys))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    def _retention(self) -> None:
        try:
            conn, _ = self._connect()
            now = self._clock.now()
            raw_cut = now - self._raw_keep_s
            agg_cut = math.floor((now - self._agg_keep_s) / 60.0)
            ids = [k for (k,) in conn.execute("SELECT id FROM devices")]
            conn.execute("BEGIN IMMEDIATE")
            try:
                # per device along the primary key: no full scan, no extra ts index to maintain
                conn.executemany("DELETE FROM raw WHERE device = ? AND ts < ?",
                                 [(k, raw_cut) for k in ids])
                conn.executemany("DELETE FROM minute WHERE device = ? AND minute < ?",
                                 [(k, agg_cut) for k in ids])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            self._retention_runs += 1
        except (sqlite3.Error, OSError) as exc:
            self._note_error(f"retention: {type(exc).__name__}: {exc}")
            self._disconnect()
        finally:
            self._retention_request.clear()
            self._retention_done.set()


class SqliteHistory:
    """Read side for the console: per-device series from the history file (read-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=5.0)

    def devices(self) -> list[str]:
        """Device ids that have ever been written."""
        try:
            conn = self._connect()
        except sqlite3.OperationalError:
            return []
        try:
            return [d for (d,) in conn.execute("SELECT device FROM devices ORDER BY device")]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def series(self, device_id: str, since: float, until: float,
               resolution: str = "raw") -> dict[str, list[Any]]:
        """Columns for `since <= ts < until` (minute: the minutes overlapping that span).

        raw: ts, one list per vital, worn, fall (bool or None), battery.
        minute: ts (minute start), n, per vital its mean plus `<v>_min` / `<v>_max`,
        worn_frac, fall, battery (minimum in the minute).
        """
        if resolution == "raw":
            names = ["ts", *VITALS, "worn", "fall", "battery"]
            sql = (f"SELECT r.ts, {', '.join('r.' + v for v in VITALS)}, r.worn, r.fall, r.battery "
                   "FROM raw r JOIN devices d ON d.id = r.device "
                   "WHERE d.device = ? AND r.ts >= ? AND r.ts < ? ORDER BY r.ts")
            args: tuple[Any, ...] = (device_id, float(since), float(until))
        elif resolution == "minute":
            names = ["ts", "n"]
            exprs = ["m.minute * 60.0", "m.n"]
            for v in VITALS:
                names += [v, f"{v}_min", f"{v}_max"]
                exprs += [f"m.{v}_sum / nullif(m.{v}_n, 0)", f"m.{v}_min", f"m.{v}_max"]
            names += ["worn_frac", "fall", "battery"]
            exprs += ["1.0 * m.worn_n / nullif(m.worn_known, 0)", "m.fall", "m.battery_min"]
            sql = (f"SELECT {', '.join(exprs)} FROM minute m JOIN devices d ON d.id = m.device "
                   "WHERE d.device = ? AND m.minute >= ? AND m.minute < ? ORDER BY m.minute")
            args = (device_id, math.floor(since / 60.0), math.ceil(until / 60.0))
        else:
            raise ValueError(f"resolution must be 'raw' or 'minute', got {resolution!r}")
        out: dict[str, list[Any]] = {n: [] for n in names}
        try:
            conn = self._connect()
        except sqlite3.OperationalError:
            return out  # no history written yet
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return out  # the writer has not created the schema yet
            raise
        finally:
            conn.close()
        for i, n in enumerate(names):
            col = [r[i] for r in rows]
            if n in ("worn", "fall"):
                col = [None if x is None else bool(x) for x in col]
            out[n] = col
        return out
