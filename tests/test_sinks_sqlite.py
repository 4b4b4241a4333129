"""SQLite history sink: round trip, aggregates, retention, concurrent reads, failing disk."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sinks_helpers import (
    T0,
    columns,
    fleet,
    sink_threads,
    small_config,
    small_devices,
    wait_until,
)

from carewatch.clock import SimClock
from config.models import SqliteSinkSettings
from ingest.samples import SampleColumns
from ingest.sinks import NullSink, build_sink
from ingest.sinks.sqlite import SqliteHistory, SqliteSink

DAY = 86400.0


def settings(path: Path, **kw: object) -> SqliteSinkSettings:
    return SqliteSinkSettings.model_validate({"path": str(path), **kw})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hist" / "history.db"


def test_round_trip_raw_values(db: Path) -> None:
    sink = SqliteSink(db, small_devices(), clock=SimClock(T0), settings=settings(db))
    cols = columns(
        [0, 1, 0, 2], [T0 + 1, T0 + 2, T0 + 3.5, T0 + 4],
        hr=[72, 80, None, 64], spo2=[97, 93.5, 96, None], temp_c=[36.7, None, None, 38.2],
        activity=[0.05, 1.25, None, 0.0], sbp=[None, 141, None, None],
        worn=[1, 0, None, 1], fall=[0, 1, None, 0], battery=[88, None, 87, 15],
    )
    sink.write(cols)
    assert sink.flush(10)
    sink.close()
    assert sink.stats()["written"] == 4
    hist = SqliteHistory(db)
    assert hist.devices() == ["dev-0001", "dev-0002", "dev-0003"]
    s = hist.series("dev-0001", T0, T0 + 60)
    assert s["ts"] == [T0 + 1, T0 + 3.5]
    assert s["hr"] == [72.0, None]
    assert s["spo2"] == [97.0, 96.0]
    assert s["temp_c"] == [36.7, None]
    assert s["worn"] == [True, None]
    assert s["fall"] == [False, None]
    assert s["battery"] == [88, 87]
    s2 = hist.series("dev-0002", T0, T0 + 60)
    assert (s2["spo2"], s2["sbp"], s2["activity"]) == ([93.5], [141.0], [1.25])
    assert (s2["worn"], s2["fall"], s2["battery"]) == ([False], [True], [None])
    # time range is half-open and per device
    assert hist.series("dev-0001", T0 + 2, T0 + 3.5)["ts"] == []
    assert hist.series("dev-9999", T0, T0 + 60)["ts"] == []


def test_minute_aggregates_merge_across_batches(db: Path) -> None:
    sink = SqliteSink(db, small_devices(), clock=SimClock(T0), settings=settings(db))
    cols = fleet(600, devices=3, step=1.0, seed=3)  # 10 minutes, 20 samples/device/minute
    cols.spo2[::7] = np.nan
    cols.worn[::5] = 0
    cols.fall[123] = 1
    # two halves written as separate batches: minute rows are merged by upsert
    half = np.arange(len(cols)) < 301
    sink.write(cols.take(half))
    assert sink.flush(10)
    sink.write(cols.take(~half))
    assert sink.flush(10)
    sink.close()
    m = SqliteHistory(db).series("dev-0002", T0, T0 + 600, resolution="minute")
    assert len(m["ts"]) == 10
    sel = cols.row == 1
    ts, hr, spo2 = cols.ts[sel], cols.hr[sel], cols.spo2[sel]
    for k, start in enumerate(m["ts"]):
        in_min = (ts >= start) & (ts < start + 60)
        assert m["n"][k] == int(in_min.sum())
        assert m["hr"][k] == pytest.approx(float(hr[in_min].mean()))
        assert m["hr_min"][k] == float(hr[in_min].min())
        assert m["hr_max"][k] == float(hr[in_min].max())
        assert m["spo2"][k] == pytest.approx(float(np.nanmean(spo2[in_min])))
        assert m["worn_frac"][k] == pytest.approx(float((cols.worn[sel][in_min] == 1).mean()))
        assert m["temp_c"][k] is None
    fall_minute = int((cols.ts[123] - T0) // 60)
    m0 = SqliteHistory(db).series("dev-0001", T0, T0 + 600, resolution="minute")
    assert m0["fall"][fall_minute] is True
    assert sum(m0["fall"]) == 1


def test_retention_deletes_old_raw_rows_and_keeps_aggregates_longer(db: Path) -> None:
    clock = SimClock(T0)
    sink = SqliteSink(db, small_devices(), clock=clock,
                      settings=settings(db, retention_days=30, aggregate_retention_days=400))
    ages = [500 * DAY, 40 * DAY, 31 * DAY, 29 * DAY, 1 * DAY]
    sink.write(columns([0] * 5, [T0 - a for a in ages], hr=[60, 61, 62, 63, 64]))
    assert sink.flush(10)
    assert sink.apply_retention_now(10)
    hist = SqliteHistory(db)
    raw = hist.series("dev-0001", 0, T0 + 1)
    assert raw["hr"] == [63.0, 64.0]
    minute = hist.series("dev-0001", 0, T0 + 1, resolution="minute")
    assert minute["hr"] == [61.0, 62.0, 63.0, 64.0]  # 500-day-old aggregate is gone
    # time moves on (the clock, not the wall): the 29-day row ages out next time
    clock.advance(2 * DAY)
    assert sink.apply_retention_now(10)
    assert hist.series("dev-0001", 0, T0 + 1)["hr"] == [64.0]
    assert int(sink.stats()["retention_runs"]) >= 2
    sink.close()


def test_concurrent_reader_while_writing(db: Path) -> None:
    sink = SqliteSink(db, small_devices(), clock=SimClock(T0), settings=settings(db, batch_max=500))
    total = 30_000
    cols = fleet(total, devices=3, step=0.5)
    hist = SqliteHistory(db)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(len(hist.series("dev-0001", T0, T0 + total)["ts"]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for lo in range(0, total, 1000):
            sink.write(cols.take(np.arange(lo, lo + 1000)))
        assert sink.flush(30)
    finally:
        done.set()
        thread.join(10)
        sink.close()
    assert not errors
    assert len(seen) > 1
    assert seen == sorted(seen)  # a reader never sees rows vanish or half a batch undone
    assert len(hist.series("dev-0001", T0, T0 + total)["ts"]) == total // 3
    assert sink.stats()["written"] == total


def test_disk_full_does_not_block_and_recovers(db: Path) -> None:
    limit = {"pages": 40}  # SQLITE_FULL once the file would pass 40 pages

    def on_connect(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {limit['pages']}")

    sink = SqliteSink(db, small_devices(), clock=SimClock(T0),
                      settings=settings(db, batch_max=2000), on_connect=on_connect,
                      retry_min_s=0.05, retry_max_s=0.2)
    total = 20_000
    cols = fleet(total, devices=3)
    t = time.perf_counter()
    for lo in range(0, total, 2000):
        sink.write(cols.take(np.arange(lo, lo + 2000)))
    assert time.perf_counter() - t < 2.0  # write() only enqueues, whatever the disk does
    assert wait_until(lambda: int(sink.stats()["failed_batches"]) >= 2)
    st = sink.stats()
    assert "full" in str(st["last_error"])
    assert st["failing"] == 1
    assert int(st["written"]) < total
    limit["pages"] = 1_000_000  # space returns
    assert sink.flush(20)
    sink.close()
    st = sink.stats()
    assert st["written"] == total and st["dropped_failed"] == 0 and st["last_error"] == ""
    assert int(st["retries"]) >= 2
    assert len(SqliteHistory(db).series("dev-0003", 0, T0 + total)["ts"]) == total // 3


def test_a_history_directory_that_cannot_be_made_backs_off_and_recovers(
        tmp_path: Path) -> None:
    """An OSError (no directory, no permission) is a failed batch, backed off and retried
    like a database error: it escaped to the loop's catch-all, which logged a traceback
    five times a second and counted nothing."""
    blocker = tmp_path / "history"
    blocker.write_text("a file where the directory should be")
    db = blocker / "history.db"
    sink = SqliteSink(db, small_devices(), clock=SimClock(T0), settings=settings(db),
                      retry_min_s=0.05, retry_max_s=0.2)
    try:
        sink.write(fleet(30, devices=3))
        assert wait_until(lambda: int(sink.stats()["failed_batches"]) >= 2)
        st = sink.stats()
        assert st["failing"] == 1 and "FileExistsError" in str(st["last_error"])
        blocker.unlink()  # the directory can be made now
        assert sink.flush(20)
    finally:
        sink.close()
    assert sink.stats()["written"] == 30


def test_locked_database_is_retried_and_overflow_is_bounded(db: Path) -> None:
    sink = SqliteSink(db, small_devices(), clock=SimClock(T0),
                      settings=settings(db, queue_max=1000, batch_max=500), busy_timeout_ms=20,
                      retry_min_s=0.05, retry_max_s=0.1, retain_max=1000)
    sink.write(columns([0], [T0 - 10], hr=[60]))
    assert sink.flush(10)  # schema in place
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # someone else holds the write lock
    try:
        cols = fleet(500, devices=3)
        for k in range(4):  # 2000 rows: 1000 retained, 1000 queued
            sink.write(cols.take(np.arange(500)) if k == 0 else
                       _shift(cols, k * 500.0))
            if k == 1:
                assert wait_until(lambda: sink.stats()["retained"] == 1000)
        assert wait_until(lambda: sink.stats()["queued"] == 1000)
        sink.write(_shift(cols, 5000.0))  # no room anywhere: dropped, counted
        st = sink.stats()
        assert st["dropped_overflow"] == 500
        assert "locked" in str(st["last_error"])
    finally:
        other.execute("COMMIT")
        other.close()
    assert sink.flush(20)
    sink.close()
    st = sink.stats()
    assert st["written"] == 2001 and st["dropped_overflow"] == 500


def _shift(cols: SampleColumns, dt: float) -> SampleColumns:
    out = cols.take(np.arange(len(cols)))
    out.ts = out.ts + dt
    return out


def test_build_sink_picks_configured_sink_and_close_joins(tmp_path: Path) -> None:
    devices = small_devices()
    assert isinstance(build_sink(small_config({"storage": {"sink": "none"}}), devices), NullSink)
    cfg = small_config({"storage": {"sink": "sqlite",
                                    "sqlite": {"path": str(tmp_path / "h.db")}}})
    sink = build_sink(cfg, devices, clock=SimClock(T0))
    assert isinstance(sink, SqliteSink)
    assert sink_threads()
    sink.write(columns([1], [T0], hr=[70]))
    assert sink.flush(10)
    sink.close()
    assert not sink_threads()
    assert SqliteHistory(tmp_path / "h.db").series("dev-0002", T0, T0 + 1)["hr"] == [70.0]
    sink.write(columns([1], [T0 + 1], hr=[71]))  # after close: counted, never raises
    assert sink.stats()["dropped_overflow"] == 1
