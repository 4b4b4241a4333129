"""Durable routine tasks: `TaskStore` is the interface, `SqliteTaskStore` the default, a
WAL-mode SQLite file beside the alert store (`routines/store_pg.py`: the shared PostgreSQL one).

Task ids are deterministic per (kind, resident, period) and inserted with INSERT OR IGNORE,
and the scheduling watermarks are written in the same transaction as the tasks they
produced: a crash or restart at any instant neither loses nor repeats a task.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from carewatch.files import private_db
from routines.model import Task, TaskError


class StaleTaskError(TaskError):
    """A shared store refused a change made from an out-of-date copy of a task (another
    instance changed it first); nothing of the transaction was written. The message reads
    like the life cycle's own refusal ("task ... is already done") when the task is closed."""

    def __init__(self, message: str, task_ids: list[str]) -> None:
        super().__init__(message)
        self.task_ids = task_ids


@dataclass
class TaskTxn:
    """One scheduler or person step: new tasks, changed tasks, their log lines, meta."""

    new: list[Task] = field(default_factory=list)
    changed: list[Task] = field(default_factory=list)
    log: list[tuple[float, str, str, str, dict[str, Any]]] = field(
        default_factory=list)  # ts, task_id, actor, action, detail
    meta: dict[str, Any] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)  # meta keys to delete

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.log or self.meta or self.unset)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """[low, high) of the keys starting with `prefix` (byte order; prefix not empty)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class TaskStore(Protocol):
    """What the routines service and the reports need from a task store."""

    def commit(self, txn: TaskTxn) -> list[str]:
        """Store atomically; return the ids of the new tasks actually inserted. A shared
        store raises `StaleTaskError` (all or nothing) for a changed task read before
        another instance changed it."""
        ...

    def get(self, task_id: str) -> Task | None: ...
    def open_tasks(self) -> list[Task]: ...
    def tasks(self, *, issued_from: float | None = None, issued_to: float | None = None,
              kind: str | None = None, resident_id: str | None = None,
              town_id: str | None = None) -> list[Task]: ...
    def log(self, task_id: str | None = None) -> list[dict[str, Any]]: ...
    def meta(self, key: str, default: Any = None) -> Any: ...
    def meta_prefix(self, prefix: str) -> dict[str, Any]:
        """Every meta key starting with `prefix`, with its value."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SharedTaskStore(TaskStore, Protocol):
    """A task store several instances write (routines/store_pg.py): what an instance needs
    to follow the others' changes. Task objects carry the row version they were read at."""

    def cursor(self) -> int:
        """A position in the store's history: `changes_since` it misses no later write."""
        ...

    def changes_since(self, cursor: int, town_ids: Sequence[str]
                      ) -> tuple[list[tuple[str, str, int]], int]:
        """(task_id, state, version) of the towns' tasks written since `cursor` (some
        earlier ones too), and the cursor for the next call."""
        ...

    def get_many(self, task_ids: Sequence[str]) -> list[Task]: ...
    def open_tasks_in(self, town_ids: Sequence[str]) -> list[Task]: ...
    def version_of(self, task: Task) -> int | None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, resident_id TEXT NOT NULL,
  town_id TEXT NOT NULL, state TEXT NOT NULL, issued_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_issued ON tasks(issued_at);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(state) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS tasks_resident ON tasks(resident_id, issued_at);
CREATE TABLE IF NOT EXISTS task_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, task_id TEXT NOT NULL,
  actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS task_log_task ON task_log(task_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _row(t: Task) -> tuple[Any, ...]:
    return (t.task_id, t.kind, t.resident_id, t.town_id, t.state, t.issued_at,
            _dumps(t.to_doc()))


class SqliteTaskStore:
    """One SQLite file in WAL mode; thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, synchronous: str = "FULL",
                 readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None)
            return
        private_db(self.path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        self._db.executescript(SCHEMA)

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def commit(self, txn: TaskTxn) -> list[str]:
        inserted: list[str] = []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for t in txn.new:
                    cur.execute("INSERT OR IGNORE INTO tasks(task_id, kind, resident_id, "
                                "town_id, state, issued_at, doc) VALUES (?,?,?,?,?,?,?)", _row(t))
                    if cur.rowcount == 1:
                        inserted.append(t.task_id)
                if txn.changed:
                    cur.executemany(
                        "INSERT INTO tasks(task_id, kind, resident_id, town_id, state, "
                        "issued_at, doc) VALUES (?,?,?,?,?,?,?) ON CONFLICT(task_id) DO UPDATE "
                        "SET state=excluded.state, doc=excluded.doc",
                        [_row(t) for t in txn.changed])
                # Log lines of a new task that already existed are dropped with it.
                new_ids = {t.task_id for t in txn.new}
                done = set(inserted)
                logs = [e for e in txn.log if e[1] not in new_ids or e[1] in done]
                if logs:
                    cur.executemany(
                        "INSERT INTO task_log(ts, task_id, actor, action, detail) "
                        "VALUES (?,?,?,?,?)",
                        [(ts, tid, actor, action, _dumps(detail))
                         for ts, tid, actor, action, detail in logs])
                if txn.meta:
                    cur.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)",
                                    [(k, _dumps(v)) for k, v in txn.meta.items()])
                if txn.unset:
                    cur.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in txn.unset])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return inserted

    def get(self, task_id: str) -> Task | None:
        rows = self._q("SELECT doc FROM tasks WHERE task_id = ?", (task_id,))
        return Task.from_doc(orjson.loads(rows[0][0])) if rows else None

    def open_tasks(self) -> list[Task]:
        rows = self._q("SELECT doc FROM tasks WHERE state = 'open' ORDER BY issued_at, task_id")
        return [Task.from_doc(orjson.loads(d)) for (d,) in rows]

    def tasks(self, *, issued_from: float | None = None, issued_to: float | None = None,
              kind: str | None = None, resident_id: str | None = None,
              town_id: str | None = None) -> list[Task]:
        """Tasks issued in [issued_from, issued_to), optionally filtered, oldest first."""
        where, args = [], []
        for sql, value in (("issued_at >= ?", issued_from), ("issued_at < ?", issued_to),
                           ("kind = ?", kind), ("resident_id = ?", resident_id),
                           ("town_id = ?", town_id)):
            if value is not None:
                where.append(sql)
                args.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self._q(f"SELECT doc FROM tasks{clause} ORDER BY issued_at, task_id", tuple(args))
        return [Task.from_doc(orjson.loads(d)) for (d,) in rows]

    def log(self, task_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, task_id, actor, action, detail FROM task_log"
        rows = (self._q(sql + " ORDER BY seq") if task_id is None
                else self._q(sql + " WHERE task_id = ? ORDER BY seq", (task_id,)))
        return [{"seq": s, "ts": ts, "task_id": tid, "actor": a, "action": act,
                 "detail": orjson.loads(d)} for s, ts, tid, a, act, d in rows]

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return orjson.loads(rows[0][0]) if rows else default

    def meta_prefix(self, prefix: str) -> dict[str, Any]:
        rows = self._q("SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key",
                       prefix_bounds(prefix))
        return {k: orjson.loads(v) for k, v in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
