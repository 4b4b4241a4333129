"""Connection handling shared by the PostgreSQL stores (alerts, routine tasks).

`dsn_from_settings` turns `storage.postgresql` into a libpq connection string. `PgConnection`
is one autocommit connection guarded by a lock, opened on first use and replaced when it
broke; multi-statement work runs in explicit transactions (`_txn`), single reads through
`_q`, which retries once on a fresh connection. Schema creation is serialised between
instances starting together by an advisory lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from alerts.store_pg_base import SCHEMA_LOCK_KEY
from config.models import PostgresSettings


def dsn_from_settings(settings: PostgresSettings) -> str:
    """A libpq connection string from `storage.postgresql` (secrets read from their files)."""
    if settings.dsn_file:
        return Path(settings.dsn_file).read_text(encoding="utf-8").strip()
    parts: dict[str, Any] = {"host": settings.host, "port": settings.port,
                             "dbname": settings.dbname, "user": settings.user,
                             "connect_timeout": max(1, round(settings.connect_timeout_s))}
    if settings.password_file:
        parts["password"] = Path(settings.password_file).read_text(encoding="utf-8").strip()
    return conninfo.make_conninfo(**parts)


class PgConnection:
    """One lazily (re)opened connection behind a lock; the base of each PostgreSQL store."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _create_schema(self, schema: str) -> None:
        with self._lock, self._txn() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            cur.execute(schema)

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._conn = psycopg.connect(self.dsn, autocommit=True)
        return conn

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A cursor inside one transaction (caller holds the lock). Beginning it is retried
        once on a fresh connection if the old one had gone (server restart, idle timeout):
        nothing was done yet, and without this the first write after a restart fails."""
        with ExitStack() as stack:
            for attempt in (0, 1):
                conn = self._connection()
                try:
                    stack.enter_context(conn.transaction())
                    break
                except psycopg.OperationalError:
                    if attempt or not conn.broken:
                        raise
            cur = stack.enter_context(conn.cursor())
            yield cur

    def _q(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """One read. Retried once on a fresh connection if the old one had gone (server
        restart, idle timeout): a read has no effect to duplicate."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    with self._connection().cursor() as cur:
                        return cur.execute(sql, args).fetchall()
                except psycopg.OperationalError:
                    if attempt or self._conn is None or not self._conn.broken:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
