"""Routine tasks on PostgreSQL: one task store shared by workers and console instances.

Same interface and semantics as `SqliteTaskStore` (routines/store.py): task ids are
deterministic per (kind, resident, period) and inserted with ON CONFLICT DO NOTHING; the
log lines of a task that already existed are dropped with it; scheduling watermarks are
written in the transaction of the tasks they produced; `commit` returns the ids actually
inserted. What sharing adds:

- **No lost update.** Each task row has a version; a task object remembers the version it
  was read or written at (`alerts.store_pg_base.VERSION_ATTR`, carried by a deep copy). A
  changed task is written only at that version (`UPDATE ... WHERE version = v`: under READ
  COMMITTED a concurrent writer's row lock makes us wait, then the re-checked WHERE fails);
  otherwise the whole transaction is rolled back and `StaleTaskError` (a `TaskError`) says
  why, in the life cycle's words when the task was closed meanwhile ("task ... is already
  done"). Of two simultaneous completions exactly one is stored.
- **Concurrent ticks.** Two instances issuing the same period insert the same ids; the
  primary key makes the second insert wait for the first and then do nothing, so each task
  and its `created` line exist once. Rows are locked in task-id order in every transaction,
  so two ticks cannot deadlock on each other.
- **Append-only log.** Triggers refuse UPDATE, DELETE and TRUNCATE on the task log.
- **Following the others.** Each row records the transaction id that last wrote it
  (`changed_xid`). `cursor()` is the oldest transaction still running (the xmin of a fresh
  snapshot): every transaction not visible to a read made after it has an id at or above
  it, so `changes_since(cursor)` (an indexed range query returning ids, states and
  versions) never misses a write, whatever order concurrent commits land in; it may
  return a few rows again, which the version tells apart. An instance refreshes its open
  tasks this way on every tick (routines/openview.py).

Tables are prefixed `routine_` so they can live in the alert store's database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from alerts.store_pg_base import (
    APPEND_ONLY_FUNCTION,
    CURRENT_XID,
    SNAPSHOT_XMIN,
    changed_xid_sql,
    set_version,
    version_of,
)
from alerts.store_pg_conn import PgConnection, dsn_from_settings
from config.models import PostgresSettings
from routines.model import FINAL_STATES, Task
from routines.store import StaleTaskError, TaskTxn, prefix_bounds

SCHEMA = """
CREATE TABLE IF NOT EXISTS routine_tasks (
  task_id TEXT PRIMARY KEY, kind TEXT NOT NULL, resident_id TEXT NOT NULL,
  town_id TEXT NOT NULL, state TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL,
  doc JSON NOT NULL, version BIGINT NOT NULL DEFAULT 1,
  changed_xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint));
""" + changed_xid_sql("routine_tasks") + """
CREATE INDEX IF NOT EXISTS routine_tasks_issued ON routine_tasks(issued_at);
CREATE INDEX IF NOT EXISTS routine_tasks_open ON routine_tasks(issued_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS routine_tasks_resident ON routine_tasks(resident_id, issued_at);
CREATE TABLE IF NOT EXISTS routine_task_log (
  seq BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, task_id TEXT NOT NULL,
  actor TEXT NOT NULL, action TEXT NOT NULL, detail JSON NOT NULL);
CREATE INDEX IF NOT EXISTS routine_task_log_task ON routine_task_log(task_id);
CREATE TABLE IF NOT EXISTS routine_meta (key TEXT PRIMARY KEY, value JSON NOT NULL);
""" + APPEND_ONLY_FUNCTION + """
CREATE OR REPLACE TRIGGER routine_task_log_append_only BEFORE UPDATE OR DELETE
  ON routine_task_log FOR EACH ROW EXECUTE FUNCTION carewatch_append_only();
CREATE OR REPLACE TRIGGER routine_task_log_no_truncate BEFORE TRUNCATE ON routine_task_log
  FOR EACH STATEMENT EXECUTE FUNCTION carewatch_append_only();
"""

# Byte order, as SQLite compares text: the same listing whatever the database's locale.
_ORDER = 'ORDER BY issued_at, task_id COLLATE "C"'
_INSERT = ("INSERT INTO routine_tasks(task_id, kind, resident_id, town_id, state, issued_at, "
           "doc) VALUES (%s,%s,%s,%s,%s,%s,%s::json) ON CONFLICT (task_id) DO NOTHING")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _row(t: Task) -> tuple[Any, ...]:
    return (t.task_id, t.kind, t.resident_id, t.town_id, t.state, t.issued_at,
            _dumps(t.to_doc()))


def _task(doc: str, version: int) -> Task:
    task = Task.from_doc(orjson.loads(doc))
    set_version(task, int(version))
    return task


def _stale_message(task_id: str, state: str | None) -> str:
    # The words of routines/lifecycle.py, so the loser of a race reads what a late caller
    # of the same instance would.
    if state == "missed":
        return f"task {task_id} was missed: its period closed"
    if state in FINAL_STATES:
        return f"task {task_id} is already {state}"
    return f"task {task_id} was changed by another instance; reload it and try again"


def open_pg_task_store(settings: PostgresSettings) -> PgTaskStore:
    """The PostgreSQL task store described by `storage.postgresql`."""
    return PgTaskStore(dsn_from_settings(settings))


class PgTaskStore(PgConnection):
    """`TaskStore` (and `SharedTaskStore`) on PostgreSQL, safe to share between processes
    and machines. `readonly`: create nothing (a report); see `exists`."""

    def __init__(self, dsn: str, *, readonly: bool = False) -> None:
        super().__init__(dsn)
        if not readonly:
            self._create_schema(SCHEMA)

    def exists(self) -> bool:
        """Whether the routine tables were created in this database (by a running service)."""
        return bool(self._q("SELECT to_regclass('routine_tasks') IS NOT NULL")[0][0])

    def commit(self, txn: TaskTxn) -> list[str]:
        inserted: set[str] = set()
        written: list[tuple[Task, int]] = []  # versions to remember once committed
        # One step may record a task twice: its last state is stored, at one version bump.
        changed = {t.task_id: t for t in txn.changed}
        with self._lock, self._txn() as cur:
            for t in sorted(txn.new, key=lambda t: t.task_id):
                cur.execute(_INSERT, _row(t))
                if cur.rowcount == 1:
                    inserted.add(t.task_id)
                    written.append((t, 1))
            stale: list[str] = []
            for tid in sorted(changed):
                t = changed[tid]
                seen = version_of(t) or (1 if tid in inserted else None)
                if seen is None:  # never read from this store: only a new row may be written
                    cur.execute(_INSERT, _row(t))
                else:
                    cur.execute("UPDATE routine_tasks SET state = %s, doc = %s::json, "
                                f"version = version + 1, changed_xid = {CURRENT_XID} "
                                "WHERE task_id = %s AND version = %s",
                                (t.state, _dumps(t.to_doc()), tid, seen))
                if cur.rowcount != 1:
                    stale.append(tid)
                written.append((t, (seen or 0) + 1))
            if stale:
                states = dict(cur.execute(
                    "SELECT task_id, state FROM routine_tasks WHERE task_id = ANY(%s)",
                    (stale,)).fetchall())
                # Raised inside the transaction block: psycopg rolls everything back.
                raise StaleTaskError("; ".join(_stale_message(tid, states.get(tid))
                                               for tid in stale), stale)
            # Log lines of a new task that already existed are dropped with it.
            new_ids = {t.task_id for t in txn.new}
            logs = [e for e in txn.log if e[1] not in new_ids or e[1] in inserted]
            if logs:
                cur.executemany(
                    "INSERT INTO routine_task_log(ts, task_id, actor, action, detail) "
                    "VALUES (%s,%s,%s,%s,%s::json)",
                    [(ts, tid, actor, action, _dumps(detail))
                     for ts, tid, actor, action, detail in logs])
            if txn.meta:
                cur.executemany(
                    "INSERT INTO routine_meta(key, value) VALUES (%s, %s::json) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [(k, _dumps(txn.meta[k])) for k in sorted(txn.meta)])
            if txn.unset:
                cur.execute("DELETE FROM routine_meta WHERE key = ANY(%s)", (list(txn.unset),))
        for t, v in written:  # only once the commit succeeded
            set_version(t, v)
        return [t.task_id for t in txn.new if t.task_id in inserted]

    def get(self, task_id: str) -> Task | None:
        rows = self._q("SELECT doc::text, version FROM routine_tasks WHERE task_id = %s",
                       (task_id,))
        return _task(*rows[0]) if rows else None

    def open_tasks(self) -> list[Task]:
        rows = self._q("SELECT doc::text, version FROM routine_tasks WHERE state = 'open' "
                       + _ORDER)
        return [_task(d, v) for d, v in rows]

    # ---- following other instances (SharedTaskStore) -----------------------------------
    def open_tasks_in(self, town_ids: Sequence[str]) -> list[Task]:
        """The open tasks of these towns (an instance's own: workers split the towns)."""
        rows = self._q("SELECT doc::text, version FROM routine_tasks WHERE state = 'open' "
                       "AND town_id = ANY(%s) " + _ORDER, (list(town_ids),))
        return [_task(d, v) for d, v in rows]

    def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        rows = self._q("SELECT doc::text, version FROM routine_tasks WHERE task_id = ANY(%s) "
                       + _ORDER, (list(task_ids),))
        return [_task(d, v) for d, v in rows]

    def cursor(self) -> int:
        rows = self._q(f"SELECT {SNAPSHOT_XMIN}")
        return int(rows[0][0])

    def changes_since(self, cursor: int, town_ids: Sequence[str]
                      ) -> tuple[list[tuple[str, str, int]], int]:
        # The next cursor is taken before the read, so the read's snapshot is at least as
        # new (snapshot xmins only grow): nothing committed after it is missed next time.
        nxt = self.cursor()
        rows = self._q("SELECT task_id, state, version FROM routine_tasks "
                       "WHERE changed_xid >= %s AND town_id = ANY(%s)",
                       (cursor, list(town_ids)))
        return [(tid, state, int(v)) for tid, state, v in rows], nxt

    def version_of(self, task: Task) -> int | None:
        return version_of(task)

    def tasks(self, *, issued_from: float | None = None, issued_to: float | None = None,
              kind: str | None = None, resident_id: str | None = None,
              town_id: str | None = None) -> list[Task]:
        """Tasks issued in [issued_from, issued_to), optionally filtered, oldest first."""
        where, args = [], []
        for sql, value in (("issued_at >= %s", issued_from), ("issued_at < %s", issued_to),
                           ("kind = %s", kind), ("resident_id = %s", resident_id),
                           ("town_id = %s", town_id)):
            if value is not None:
                where.append(sql)
                args.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self._q(f"SELECT doc::text, version FROM routine_tasks{clause} {_ORDER}",
                       tuple(args))
        return [_task(d, v) for d, v in rows]

    def log(self, task_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, task_id, actor, action, detail::text FROM routine_task_log"
        rows = (self._q(sql + " ORDER BY seq") if task_id is None
                else self._q(sql + " WHERE task_id = %s ORDER BY seq", (task_id,)))
        return [{"seq": s, "ts": ts, "task_id": tid, "actor": a, "action": act,
                 "detail": orjson.loads(d)} for s, ts, tid, a, act, d in rows]

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._q("SELECT value::text FROM routine_meta WHERE key = %s", (key,))
        return orjson.loads(rows[0][0]) if rows else default

    def meta_prefix(self, prefix: str) -> dict[str, Any]:
        rows = self._q('SELECT key, value::text FROM routine_meta WHERE key COLLATE "C" >= %s '
                       'AND key COLLATE "C" < %s ORDER BY key COLLATE "C"', prefix_bounds(prefix))
        return {k: orjson.loads(v) for k, v in rows}


__all__ = ["PgTaskStore", "StaleTaskError", "open_pg_task_store"]
