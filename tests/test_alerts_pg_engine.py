"""AlertEngine on PostgreSQL: the same behaviour as on SQLite, restart recovery, config
selection, and several engines sharing one database (no lost update, no lost event)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from alerts.model import AlertTransitionError
from alerts.store import AlertStore, SqliteAlertStore
from alerts.store_pg import PgAlertStore
from alerts.testing import T0, Harness, finding, minimal_config

if TYPE_CHECKING:
    from tests.pg_fixture import PgServer

pytest_plugins = ["tests.pg_fixture"]

MakeHarness = Callable[..., Harness]


@pytest.fixture(params=["sqlite", "postgresql"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeHarness]:
    """Harnesses sharing one store location (one SQLite file or one PostgreSQL database)."""
    made: list[Harness] = []
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else ""

    def factory(**kwargs: Any) -> Harness:
        store: AlertStore = PgAlertStore(dsn) if dsn else SqliteAlertStore(tmp_path / "a.db")
        h = Harness(tmp_path, store=store, **kwargs)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def test_life_cycle_and_refusals_match_sqlite(make: MakeHarness) -> None:
    h = make()
    h.findings(finding("fall", [0], 4), finding("hypoxemia", [1], 3, spo2_min=[88]))
    h.run_until(T0 + 130)
    h.engine.ack("r-0001", "fall", "carer", T0 + 131)
    with pytest.raises(AlertTransitionError, match="already acknowledged"):
        h.engine.ack("r-0001", "fall", "other", T0 + 132)
    h.engine.resolve("r-0001", "fall", "carer", T0 + 140, note="helped up")
    names = [(e["kind"], e["event"]) for e in h.events]
    assert names == [("fall", "opened"), ("hypoxemia", "opened"), ("fall", "escalated"),
                     ("fall", "acknowledged"), ("fall", "resolved")]
    assert [e["event"] for e in h.engine.events()] == [n for _k, n in names]
    fall_id = h.events[0]["alert_id"]
    assert [a["action"] for a in h.engine.audit(fall_id)] == [
        "opened", "escalated", "acknowledged", "resolved"]
    assert [a.kind for a in h.engine.open_alerts()] == ["hypoxemia"]


def test_same_stream_on_both_backends(tmp_path: Path, pg_dsn: str) -> None:
    streams = []
    for store in (SqliteAlertStore(tmp_path / "a.db"), PgAlertStore(pg_dsn)):
        h = Harness(tmp_path, store=store)
        h.findings(finding("fall", [0, 2], 4), finding("low_battery", [1], 1, battery=[12]))
        h.run_until(T0 + 400, step=7)
        h.engine.ack("r-0001", "fall", "carer", h.clock.now())
        streams.append([orjson.dumps(e) for e in h.engine.events()])
        h.close()
    assert streams[0] == streams[1] and len(streams[0]) > 5


class _FailingPublisher:
    """Stands for a crash between commit and publish: the first publish raises."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.calls += 1
        raise ConnectionError("broker gone")


def test_restart_recovers_open_alerts_unpublished_events_and_overdue_escalations(
        make: MakeHarness) -> None:
    first = make()
    first.engine.publisher = _FailingPublisher()
    with pytest.raises(ConnectionError):
        first.findings(finding("fall", [0], 4), finding("fever", [1], 2))
    assert len(first.engine.store.unpublished_events()) == 2  # stored, never sent
    first.close()
    second = make(start=T0 + 250)
    assert {a.kind for a in second.engine.open_alerts()} == {"fall", "fever"}
    second.engine.tick(T0 + 250)
    sent = [orjson.loads(p) for _t, p, _q, _r in second.publisher.messages]
    assert [(e["kind"], e["event"]) for e in sent[:2]] == [("fall", "opened"),
                                                           ("fever", "opened")]
    esc = second.kinds_of("escalated")
    assert [(e["tier"], e["updated_at"]) for e in esc] == [(2, T0 + 120), (3, T0 + 240)]
    assert second.engine.store.unpublished_events() == []


def test_backend_chosen_from_config(pg_server: PgServer, pg_dsn: str, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(pg_dsn)
    config = minimal_config(storage={"alerts_backend": "postgresql",
                                     "postgresql": {"dsn_file": str(dsn_file)}})
    h = Harness(tmp_path, config)
    try:
        assert isinstance(h.engine.store, PgAlertStore)
        h.findings(finding("fall", [0], 4))
        assert not (tmp_path / "alerts.db").exists()
    finally:
        h.close()
    check = PgAlertStore(pg_dsn)
    try:
        assert [a.kind for a in check.open_alerts()] == ["fall"]
    finally:
        check.close()


def test_console_ack_is_seen_by_the_worker_before_it_escalates(pg_dsn: str,
                                                               tmp_path: Path) -> None:
    worker = Harness(tmp_path, store=PgAlertStore(pg_dsn))
    console = Harness(tmp_path, store=PgAlertStore(pg_dsn))
    try:
        worker.findings(finding("fall", [0], 4))
        alert_id = worker.events[0]["alert_id"]
        console.engine.ack_alert(alert_id, "carer", T0 + 10)  # not in the console's cache
        worker.run_until(T0 + 300)  # its copy is stale: the store refuses, it reloads
        assert worker.kinds_of("escalated") == []
        assert [e["event"] for e in worker.engine.events(alert_id)] == ["opened", "acknowledged"]
        (alert,) = worker.engine.open_alerts()
        assert alert.state == "acknowledged" and alert.deadline is None
        worker.findings(finding("fall", [0], 4, active=False))  # also applies after reload
        assert worker.engine.events(alert_id)[-1]["event"] == "condition_cleared"
    finally:
        worker.close()
        console.close()


# ---- races ---------------------------------------------------------------------------------
N_ALERTS = 30


def _race_threads(dsn: str, tmp_path: Path, ids: list[str]) -> dict[str, list[str]]:
    """Two engines (own connections), one thread each, both ack then both resolve each alert
    at the same instant (a barrier). Returns each thread's results."""
    config = minimal_config(residents=N_ALERTS)
    engines = [Harness(tmp_path, config, store=PgAlertStore(dsn)) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, list[str]] = {"a": [], "b": []}

    def run(name: str, h: Harness) -> None:
        for i, alert_id in enumerate(ids):
            for action in ("ack", "resolve"):
                barrier.wait()
                try:
                    if action == "ack":
                        h.engine.ack_alert(alert_id, name, T0 + 10 + i)
                    else:
                        h.engine.resolve_alert(alert_id, name, T0 + 11 + i, note=f"by {name}")
                    results[name].append(f"{alert_id} {action} won")
                except AlertTransitionError as exc:
                    results[name].append(f"{alert_id} {action} lost: {exc}")

    threads = [threading.Thread(target=run, args=(n, h)) for n, h in zip("ab", engines,
                                                                          strict=True)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert all(h.engine.open_alerts() == [] for h in engines)
    finally:
        for h in engines:
            h.close()
    return results


def _open_alerts(dsn: str, tmp_path: Path) -> list[str]:
    h = Harness(tmp_path, minimal_config(residents=N_ALERTS), store=PgAlertStore(dsn))
    try:
        h.findings(finding("fall", list(range(N_ALERTS)), 4))
        return [e["alert_id"] for e in h.events]
    finally:
        h.close()


def _assert_each_transition_once(dsn: str, ids: list[str], actions: tuple[str, ...]) -> None:
    store = PgAlertStore(dsn)
    try:
        for alert_id in ids:
            assert [e["event"] for e in store.events(alert_id)] == ["opened", *actions]
            assert [a["action"] for a in store.audit(alert_id)] == ["opened", *actions]
            alert = store.get_alert(alert_id)
            assert alert is not None and alert.state == actions[-1]
        assert store.unpublished_events() == []
    finally:
        store.close()


def test_simultaneous_acks_and_resolves_from_two_engines(pg_dsn: str, tmp_path: Path) -> None:
    ids = _open_alerts(pg_dsn, tmp_path)
    results = _race_threads(pg_dsn, tmp_path, ids)
    for alert_id in ids:
        for action, loss in (("ack", "already acknowledged"), ("resolve", "resolved")):
            outcome = [r for name in "ab" for r in results[name]
                       if r.startswith(f"{alert_id} {action} ")]
            assert sorted(o.split(" ")[2] for o in outcome) == ["lost:", "won"], outcome
            assert loss in next(o for o in outcome if " lost:" in o)
    _assert_each_transition_once(pg_dsn, ids, ("acknowledged", "resolved"))


def _ack_all(dsn: str, data_dir: str, name: str, ids: list[str],
             start: Any, out: Any) -> None:
    """Child process: wait for the start signal, then ack every alert as fast as it can."""
    h = Harness(data_dir, minimal_config(residents=N_ALERTS), store=PgAlertStore(dsn))
    won = 0
    try:
        start.wait(60)
        for alert_id in ids:
            try:
                h.engine.ack_alert(alert_id, name, T0 + 10)
                won += 1
            except AlertTransitionError as exc:
                if "already acknowledged" not in str(exc):
                    raise
    finally:
        h.close()
    out.put((name, won))


def test_two_processes_racing_to_ack_lose_no_update(pg_dsn: str, tmp_path: Path) -> None:
    ids = _open_alerts(pg_dsn, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_ack_all, args=(pg_dsn, str(tmp_path), name, ids, start, out))
             for name in ("p1", "p2")]
    for p in procs:
        p.start()
    try:
        start.set()
        wins = dict(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(wins.values()) == N_ALERTS  # exactly one winner per alert
    _assert_each_transition_once(pg_dsn, ids, ("acknowledged",))
    store = PgAlertStore(pg_dsn)
    try:
        by = {store.audit(a)[-1]["actor"] for a in ids}
        assert by <= {"p1", "p2"}
    finally:
        store.close()
