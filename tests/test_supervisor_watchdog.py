"""A worker that hangs or crash-loops cannot page for itself: the supervisor of
`carewatch run --workers 2` pages the integration webhooks (monitoring_down naming the
worker's towns) and says when it is back, against real Mosquitto and real processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from carewatch.workers import partition_towns, probe_subscribed, supervisor_argv
from config.generate import demo_registry
from config.loader import parse_config
from ingest.broker import MosquittoProcess, free_port_block
from tests.ingest_harness import wait_for
from tests.process_harness import start_supervisor, stop_process
from tests.test_alerts_webhook import Hook


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


def _events(hook: Hook, instance: str) -> list[dict[str, Any]]:
    docs = [orjson.loads(body)["system"] for _, body in list(hook.requests)]
    return [d for d in docs if d["instance"] == instance]


def test_a_hung_worker_pages_through_its_supervisor(
        mosquitto: MosquittoProcess, tmp_path: Path, hook: Hook) -> None:
    data = demo_registry(24, seed=3, towns=4)
    # repeated every 2 s while down: a page at start-up (workers not yet subscribed) that the
    # watchdog never saw end must not hide the hang's own page
    data["alerts"] = {"webhooks": [hook.url], "monitoring_notify_after_s": 1.0,
                      "monitoring_repeat_s": 2.0, "heartbeat_s": 3600, "webhook_timeout_s": 2}
    data["broker"] = {"client_id": "cw-sv"}
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = parse_config(data)
    parts = partition_towns(config, 2)
    http = free_port_block(3)
    proc, pids = start_supervisor(
        supervisor_argv(reg, 2, mosquitto.url, http, tmp_path / "data"), 2)
    try:
        wait_for(lambda: all(probe_subscribed(http + 1 + k) for k in range(2)), timeout_s=90,
                 what="both workers subscribed")
        # (a slow start may page and recover: only what follows the hang counts)
        before = len(_events(hook, "cw-sv-supervisor"))
        names = config.town_names()

        def page_for_worker_1() -> int | None:
            for i, e in enumerate(_events(hook, "cw-sv-supervisor")[before:], before):
                if e["event"] == "monitoring_down" and [p.get("worker") for p in
                                                       e["problems"]] == [1]:
                    return i
            return None

        os.kill(pids[1], signal.SIGSTOP)
        try:
            wait_for(lambda: page_for_worker_1() is not None, timeout_s=30,
                     what="the supervisor's monitoring_down for worker 1")
            at = page_for_worker_1()
            assert at is not None
            down = _events(hook, "cw-sv-supervisor")[at]
            [problem] = down["problems"]
            assert problem["code"] == "worker_down" and down["state"] == "down"
            assert problem["towns"] == [names[t] for t in parts[1]]
        finally:
            os.kill(pids[1], signal.SIGCONT)
        wait_for(lambda: any(e["event"] == "monitoring_recovered"
                             for e in _events(hook, "cw-sv-supervisor")[at + 1:]),
                 timeout_s=30, what="monitoring_recovered")
    finally:
        code = stop_process(proc)
    assert code == 0
