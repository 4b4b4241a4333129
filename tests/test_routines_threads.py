"""Routines beside a busy pipeline: issuing tasks never holds the pipeline thread; only the
daily checks run there (they read the state store), one bounded chunk per call; and a tick
waiting for a check cannot deadlock with a completion the pipeline thread is running."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import routines.service as routines_service
from carewatch.clock import SimClock, WallClock
from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from ingest.devices import DeviceTable
from ingest.state import StateStore
from routines.service import Routines
from tests.ingest_harness import Client, wait_for
from tests.routines_helpers import first_start_kinds, local, registry
from tests.test_console_server import service_config


class PipelineThread:
    """A stand-in for Service.submit: one worker thread owns the state store; a call from
    that thread runs at once (as Service.submit does)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        self.owner = self.pool.submit(threading.current_thread).result()
        self.calls: list[str] = []  # the name of the thread each call came from

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        self.calls.append(threading.current_thread().name)
        if threading.current_thread() is self.owner:
            fut: Future[Any] = Future()
            fut.set_result(fn())
            return fut
        return self.pool.submit(fn)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@pytest.fixture
def pipeline() -> Iterator[PipelineThread]:
    p = PipelineThread()
    yield p
    p.close()


def _routines(tmp_path: Path, pipeline: PipelineThread, t0: float) -> Routines:
    config = registry()
    devices = DeviceTable.from_config(config)
    r = Routines(config, devices, SimClock(t0), tmp_path, state=StateStore(len(devices)))
    r.runner = pipeline.submit
    return r


def test_only_daily_checks_run_on_the_pipeline_thread_a_chunk_per_call(
        tmp_path: Path, pipeline: PipelineThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routines_service, "CHECK_CHUNK", 2)
    t0 = local(2026, 11, 1, 8)
    routines = _routines(tmp_path, pipeline, t0)
    try:
        # Start-up: the week's and month's tasks (12) are issued without the pipeline.
        created = [d for d in routines.tick(t0) if d["event"] == "created"]
        assert len(created) == 12
        assert pipeline.calls == []
        # The next morning's daily checks: 4 residents in 2 towns -> per town one call for
        # the open alerts, then ceil(residents / 2) check chunks: gufu 1 + 2, lishi 1 + 1.
        docs = routines.tick(local(2026, 11, 2, 8))
        assert sum(d["kind"] == "daily_check" for d in docs) == 4
        assert len(pipeline.calls) == 5
        checks = routines.tasks(kind="daily_check")
        assert len(checks) == 4 and all(t.check is not None for t in checks)
    finally:
        routines.close()


@pytest.fixture
def started(tmp_path: Path, pipeline: PipelineThread) -> Iterator[Routines]:
    """Routines on a pipeline thread, after the first tick (Sunday 1 November, 08:00)."""
    t0 = local(2026, 11, 1, 8)
    routines = _routines(tmp_path, pipeline, t0)
    try:
        routines.tick(t0)
        yield routines
    finally:
        routines.close()


def test_a_tick_waiting_for_a_check_lets_the_pipeline_complete_a_task(
        started: Routines, pipeline: PipelineThread) -> None:
    routines = started
    call = next(t for t in routines.open_tasks() if t.kind == "weekly_call")
    inner = pipeline.submit
    done: list[Future[Any]] = []

    def racing_submit(fn: Callable[[], Any]) -> Future[Any]:
        # The scheduler's tick asks for a check while a person's completion is queued
        # ahead of it on the pipeline thread; the completion needs the routines lock.
        if not done:
            done.append(inner(lambda: routines.complete(
                call.task_id, by="s1", now=local(2026, 11, 2, 8, 1), notes="电话联系")))
        return inner(fn)

    routines.runner = racing_submit
    tick = ThreadPoolExecutor(1, thread_name_prefix="scheduler")
    try:
        issued = tick.submit(routines.tick, local(2026, 11, 2, 8)).result(timeout=30)
    finally:
        tick.shutdown(wait=True)
    assert sum(d["kind"] == "daily_check" for d in issued) == 4
    completed = done[0].result(timeout=30)
    assert completed.state in ("done", "late") and completed.completed_by == "s1"
    actions = [e["action"] for e in routines.log(call.task_id)]
    assert actions[0] == "created" and actions[-1] == "completed"
    assert actions.count("completed") == 1


def test_a_failed_check_issues_nothing_and_the_next_tick_retries(
        started: Routines, pipeline: PipelineThread) -> None:
    routines = started

    def stopping(fn: Callable[[], Any]) -> Future[Any]:  # as Service.submit when stopping
        fut: Future[Any] = Future()
        fut.set_exception(RuntimeError("the pipeline is stopping"))
        return fut

    routines.runner = stopping
    with pytest.raises(RuntimeError, match="stopping"):
        routines.tick(local(2026, 11, 2, 8))
    assert routines.tasks(kind="daily_check") == []
    routines.runner = pipeline.submit
    docs = routines.tick(local(2026, 11, 2, 8) + 1.0)
    assert sum(d["event"] == "created" and d["kind"] == "daily_check" for d in docs) == 4
    assert all(t.check is not None for t in routines.tasks(kind="daily_check"))


def test_task_events_ride_their_own_connection(mosquitto: MosquittoProcess,
                                               tmp_path: Path) -> None:
    """Task events queued behind a stalled notices connection never hold back an alert."""
    config = service_config(tmp_path)
    r = config.residents[0]
    now = WallClock().now()
    kinds = first_start_kinds(config, r.town, now)  # what a first start issues today
    if not kinds:  # a 1st of the month that is a Monday, before 08:00 local time
        pytest.skip("a first start now issues no routine task to send")
    expected = sum(len(first_start_kinds(config, x.town, now)) for x in config.residents)
    watch = Client(mosquitto.port, "watch", subscribe=("carewatch/v1/+/tasks/#",
                                                       "carewatch/v1/+/alerts/#"))
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-tasks"),
                      data_dir=tmp_path)
    side = service.task_publisher
    assert side is not None and side.client is not service.edge.client
    start_side, side.start = side.start, lambda: None  # type: ignore[method-assign]
    dev = Client(mosquitto.port, "dev")
    try:
        service.start()
        assert service.edge.wait_connected(10)
        wait_for(lambda: len(service.routines.open_tasks()) == expected,
                 what="the running week's and month's tasks")
        dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                    {"ts": WallClock().now(), "fall": True, "worn": True}).wait_for_publish(5)
        wait_for(lambda: bool(watch.received(f"/alerts/{r.id}")), what="the fall's alert event")
        assert watch.received(f"/tasks/{r.id}") == []  # still queued on the side connection
        start_side()

        def created() -> set[str]:  # escalations may follow, depending on the wall clock
            return {b["kind"] for _t, b in watch.received(f"/tasks/{r.id}")
                    if b["event"] == "created"}

        wait_for(lambda: len(created()) == len(kinds), what="the task events")
        assert created() == kinds
    finally:
        dev.close()
        service.stop()
        watch.close()
