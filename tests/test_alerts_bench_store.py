"""The alert-store benchmark: whole alert life cycles committed on SQLite and PostgreSQL,
one and two writers, each run checked against what the store holds afterwards."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from alerts.bench_store import _collect, _config, _cycles, bench_store
from alerts.store import SqliteAlertStore

if TYPE_CHECKING:
    from tests.pg_fixture import PgServer

pytest_plugins = ["tests.pg_fixture"]


def test_bench_store_commits_every_cycle_on_both_backends(pg_server: PgServer) -> None:
    import psycopg

    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    result = bench_store(cycles=20, pg_server=pg_server)
    assert result["cycles"] == 20
    for key in ("sqlite_steps_per_s", "pg_steps_per_s", "pg_two_writers_steps_per_s",
                "sqlite_storm_alerts_per_s", "pg_storm_alerts_per_s"):
        assert result[key] > 0, key
    assert result["pg_two_over_one"] == pytest.approx(
        result["pg_two_writers_steps_per_s"] / result["pg_steps_per_s"])
    # the runs' databases hold what they committed: 20 alerts resolved, 2 x 20 resolved by
    # two writers, and a storm of 40 open; each opening notified its tier-1 carer
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        made = sorted({r[0] for r in conn.execute("SELECT datname FROM pg_database")} - before)
    counts = []
    for name in made:
        with psycopg.connect(pg_server.dsn(name)) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'resolved'), count(*), "
                "(SELECT count(*) FROM outbox) FROM alerts").fetchone()
            assert row is not None
            counts.append(tuple(row))
    for name in made:
        pg_server.drop_database(name)
    assert sorted(counts) == [(0, 40, 40), (20, 20, 20), (40, 40, 40)]  # a notice each


class _ForgetfulStore(SqliteAlertStore):
    """Drops one alert's resolution from its history: the benchmark must notice."""

    def history(self, resident_id: str) -> list[Any]:
        found = super().history(resident_id)
        return [] if resident_id == "r-0002" else found


def test_bench_store_refuses_a_store_that_lost_a_step(tmp_path: Path) -> None:
    config = _config(4)
    with pytest.raises(RuntimeError, match="3 of 4 alerts stored resolved"):
        _cycles(config, range(4), _ForgetfulStore(tmp_path / "a.db"), tmp_path)
    steps, start, end = _cycles(config, range(4), SqliteAlertStore(tmp_path / "b.db"),
                                tmp_path)
    assert steps == 12 and end > start


def test_a_writer_that_dies_without_a_word_fails_the_run_at_once() -> None:
    import multiprocessing
    import os
    import time

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=os._exit, args=(3,))  # as a crash while starting would
    proc.start()
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with code 3"):
            _collect(out, [proc], "ready", timeout_s=60)
        assert time.monotonic() - start < 30
    finally:
        proc.join()
        out.close()
        out.join_thread()


def test_a_writer_error_is_raised_with_its_text() -> None:
    import queue

    out: queue.Queue[tuple[str, Any]] = queue.Queue()
    out.put(("ready", None))
    out.put(("error", "OperationalError('gone')"))
    alive = SimpleNamespace(exitcode=None)
    with pytest.raises(RuntimeError, match=r"writer failed: OperationalError\('gone'\)"):
        _collect(out, [alive, alive], "ready", timeout_s=5)
