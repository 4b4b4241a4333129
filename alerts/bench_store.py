"""Alert-store benchmark: committed alert steps per second, SQLite and PostgreSQL.

A step is one action of the alert engine, committed before anything is published (its
write transaction, then its events marked published): an alert opened from a finding
(alert row, event, audit entry, an outbox notice for the resident's tier-1 carer: every
staff member is given a webhook, never called), acknowledged, or resolved. Each cycle runs
all three for one resident, so the figure is what the store sustains for whole alert life
cycles, not for single inserts.

- `sqlite_steps_per_s`: the embedded default, one engine (SQLite file, synchronous FULL);
- `pg_steps_per_s`: one engine on PostgreSQL (a local throw-away cluster with PostgreSQL's
  durable defaults, fsync and synchronous commit on, loopback TCP);
- `pg_two_writers_steps_per_s`: two engines in two processes on the same database, each
  with its own residents (as two workers with their own towns), started together;
- `*_storm_alerts_per_s`: every resident's device offline at once (2 x cycles residents),
  opened in one step: what a mass event costs, where steps are batched.

Notices are recorded in the outbox and not sent (no network in the figure). Every run
checks that each cycle's alert ended resolved in the store.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

from alerts.pg_local import PgServer, PgUnavailable, start_server
from alerts.testing import T0, finding

log = logging.getLogger(__name__)


def _config(residents: int) -> Any:
    """The demo registry, every staff member with a webhook: each notice becomes an outbox
    row, as in a deployment that pages people (the benchmark never sends them)."""
    from config.generate import demo_registry
    from config.loader import parse_config

    data = demo_registry(residents, seed=0)
    for person in data["staff"]:
        person["webhook"] = f"http://127.0.0.1:9/{person['id']}"
    return parse_config(data)


def _engine(config: Any, store: Any, data_dir: Path) -> tuple[Any, Any, Any]:
    """(engine, devices, clock): an engine on `store` (None: the engine's own default, the
    configured SQLite file in `data_dir`) at T0, whose notices are recorded in the outbox
    and not sent."""
    from alerts.engine import AlertEngine
    from carewatch.clock import SimClock
    from ingest.devices import DeviceTable
    from ingest.publish import ListPublisher

    devices = DeviceTable.from_config(config)
    clock = SimClock(T0)
    engine = AlertEngine(config, devices, clock, ListPublisher(), data_dir, store=store,
                         send_notifications=False)
    return engine, devices, clock


def _cycles(config: Any, rows: range, store: Any, data_dir: Path) -> tuple[int, float, float]:
    """Open, acknowledge and resolve a fall alert for each row's resident; (steps, start,
    end) on `time.perf_counter`'s clock. Raises if the store does not hold every alert
    resolved afterwards."""
    engine, devices, clock = _engine(config, store, data_dir)
    try:
        start = time.perf_counter()
        for row in rows:
            now = clock.now() + 1.0
            clock.set(now)
            resident = devices.resident_ids[row]
            engine.on_findings([finding("fall", [row], 4, onset=now)], now)
            engine.ack(resident, "fall", "bench", now)
            engine.resolve(resident, "fall", "bench", now, note="bench")
        end = time.perf_counter()
        resolved = sum(1 for row in rows for a in engine.alert_history(devices.resident_ids[row])
                       if a.state == "resolved")
        if resolved != len(rows):
            raise RuntimeError(f"{resolved} of {len(rows)} alerts stored resolved")
    finally:
        engine.close()
    return 3 * len(rows), start, end


def _storm(config: Any, store: Any, data_dir: Path) -> tuple[int, float]:
    """Every resident's device goes offline at once (a town's power cut): one step opens an
    alert for each. (alerts, seconds); raises unless all are stored open."""
    engine, devices, _clock = _engine(config, store, data_dir)
    n = len(devices.resident_ids)
    try:
        start = time.perf_counter()
        engine.on_findings([finding("device_offline", list(range(n)), 2, onset=T0)], T0 + 1.0)
        elapsed = time.perf_counter() - start
        stored = sum(1 for r in devices.resident_ids for a in engine.alert_history(r)
                     if a.state != "resolved")
        if stored != n:
            raise RuntimeError(f"{stored} of {n} storm alerts stored open")
    finally:
        engine.close()
    return n, elapsed


def _pg_writer(dsn: str, residents: int, rows: range, go: Any, out: Any) -> None:
    """One engine of the two-writer run, in its own process: reports ("ready", None), then
    ("done", (steps, start, end)), or ("error", text) at any point."""
    from alerts.store_pg import PgAlertStore

    try:
        config = _config(residents)
        store = PgAlertStore(dsn)
        with tempfile.TemporaryDirectory(prefix="carewatch-bench-") as tmp:
            out.put(("ready", None))
            if not go.wait(120):
                raise RuntimeError("never told to start")
            out.put(("done", _cycles(config, rows, store, Path(tmp))))
    except BaseException as e:  # reported to the parent, which raises it
        out.put(("error", repr(e)))


def _collect(out: Any, procs: list[Any], kind: str, timeout_s: float) -> list[Any]:
    """One `kind` report from each writer. A writer's error, or a writer that died without
    a word (a crash while starting), fails at once, not at the timeout."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            tag, value = out.get(timeout=0.2)
        except queue.Empty:
            crashed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if crashed:
                raise RuntimeError(f"a writer process exited with code {crashed[0]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"writers did not report {kind} in {timeout_s:.0f} s") from None
            continue
        if tag == "error":
            raise RuntimeError(f"writer failed: {value}")
        if tag != kind:
            raise RuntimeError(f"writer reported {tag!r}, expected {kind!r}")
        got.append(value)
    return got


def _two_writers(dsn: str, residents: int, cycles: int) -> float:
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or connections
    go, out = ctx.Event(), ctx.Queue()
    halves = (range(0, cycles), range(cycles, 2 * cycles))
    procs = [ctx.Process(target=_pg_writer, args=(dsn, residents, rows, go, out))
             for rows in halves]
    for p in procs:
        p.start()
    finished = False
    try:
        _collect(out, procs, "ready", 120)
        go.set()
        results = _collect(out, procs, "done", 600)
        finished = True
    finally:
        for p in procs:  # after a failure, nothing is worth waiting for
            p.join(timeout=60 if finished else 0)
            if p.is_alive():
                p.kill()
                p.join()
    steps = sum(r[0] for r in results)
    return steps / (max(r[2] for r in results) - min(r[1] for r in results))


def bench_store(cycles: int = 500, pg_server: PgServer | None = None) -> dict[str, float]:
    """Steps per second on each backend (see the module's docstring). PostgreSQL runs on
    three fresh databases of `pg_server` (left there: the caller owns the server), or of a
    local cluster started and removed for the run, with PostgreSQL's durable defaults
    (`alerts.pg_local`); without PostgreSQL installed only the SQLite figure is given."""
    from alerts.store_pg import PgAlertStore

    config = _config(2 * cycles)
    out: dict[str, float] = {"cycles": float(cycles)}
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-") as tmp:
        # SQLite: the store the engine opens by default, as configured, in its data dir
        steps, start, end = _cycles(config, range(cycles), None, Path(tmp) / "cycles")
        out["sqlite_steps_per_s"] = steps / (end - start)
        alerts, seconds = _storm(config, None, Path(tmp) / "storm")
        out["sqlite_storm_alerts_per_s"] = alerts / seconds
    server = pg_server
    if server is None:
        try:
            server = start_server(durable=True)
        except PgUnavailable as e:
            log.warning("store benchmark: SQLite only: %s", e)
            return out
    try:
        with tempfile.TemporaryDirectory(prefix="carewatch-bench-") as tmp:
            store_pg = PgAlertStore(server.dsn(server.create_database()))
            steps, start, end = _cycles(config, range(cycles), store_pg, Path(tmp))
            out["pg_steps_per_s"] = steps / (end - start)
            storm = PgAlertStore(server.dsn(server.create_database()))
            alerts, seconds = _storm(config, storm, Path(tmp))
            out["pg_storm_alerts_per_s"] = alerts / seconds
        two = _two_writers(server.dsn(server.create_database()), 2 * cycles, cycles)
        out["pg_two_writers_steps_per_s"] = two
    finally:
        if pg_server is None:
            server.remove()
    out["pg_two_over_one"] = out["pg_two_writers_steps_per_s"] / out["pg_steps_per_s"]
    return out
