"""Webhook notifications against a real local HTTP server that fails, times out and recovers;
grouping; HMAC signatures; backoff; a failing channel never blocks the others."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.delivery import SIGNATURE_HEADER, TIMESTAMP_HEADER, backoff, classify
from alerts.testing import T0, Harness, finding, minimal_config

SECRET = b"test-secret"


class Hook:
    """A local webhook receiver; `script` is consumed one entry per request:
    an HTTP status to answer, or "hang" (answer nothing until the test ends)."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.arrived:
                    hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    hook.arrived.notify_all()
                action = hook.script.pop(0) if hook.script else 200
                if action == "hang":
                    hook.release.wait(10)
                    return
                self.send_response(int(action))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="hook-server")
        self.thread.start()

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= n, timeout)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def harness(tmp_path: Path, hook: Hook, group_wait: float = 0.0, **staff: Any) -> Harness:
    extra: dict[str, Any] = {"alerts": {
        "group_wait_s": group_wait, "webhook_timeout_s": 0.3, "retry_base_s": 1.0,
        "retry_cap_s": 4.0, "retry_max_attempts": 4}}
    if staff:
        extra["staff"] = [{"id": "carer-1", "tier": 1, "town": "gufu", "webhook": hook.url}]
    else:
        extra["alerts"]["webhooks"] = [hook.url]
    return Harness(tmp_path, minimal_config(**extra), webhook_secret=SECRET)


def drive(h: Harness, done: Callable[[], bool], rounds: int = 20, step: float = 5.0) -> None:
    """Tick (moving the simulated clock) until `done()`; each round waits for the senders."""
    for _ in range(rounds):
        h.engine.tick(h.clock.now())
        assert h.engine.dispatcher.wait_idle(5.0)
        if done():
            return
        h.clock.advance(step)
    raise AssertionError("condition not reached")


def outcomes(h: Harness) -> list[str]:
    return [d["outcome"] for d in h.engine.store.deliveries() if d["outcome"] != "started"]


def test_fails_then_recovers_with_signed_body(tmp_path: Path, hook: Hook) -> None:
    hook.script = [500, 503, 200]
    h = harness(tmp_path, hook)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: "sent" in outcomes(h))
        assert outcomes(h) == ["retry", "retry", "sent"]
        assert [d["status_code"] for d in h.engine.store.deliveries()
                if d["outcome"] != "started"] == [500, 503, 200]
        (row,) = h.engine.store.outbox()
        assert row["status"] == "sent" and row["attempts"] == 3
        headers, body = hook.requests[-1]
        expected = hmac.new(SECRET, headers[TIMESTAMP_HEADER.lower()].encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER.lower()] == "sha256=" + expected
        doc = orjson.loads(body)
        assert doc["notifications"][0]["alert"]["kind"] == "fall"
        assert doc["notifications"][0]["reason"] == "opened"
    finally:
        h.close()


def test_timeout_is_retried_and_never_blocks_mqtt(tmp_path: Path, hook: Hook) -> None:
    hook.script = ["hang", 200]
    h = harness(tmp_path, hook)
    try:
        h.findings(finding("fall", [0], 4))
        h.engine.tick(h.clock.now())  # hands the notice to a worker; the request hangs
        assert hook.wait_requests(1)
        started = time.monotonic()
        h.findings(finding("hypoxemia", [1], 4))  # the pipeline keeps going meanwhile
        assert time.monotonic() - started < 0.25
        assert [e["kind"] for e in h.kinds_of("opened")] == ["fall", "hypoxemia"]
        assert len(h.publisher.messages) == 2
        drive(h, lambda: outcomes(h).count("sent") == 2)
        fall_attempts = [d for d in h.engine.store.deliveries(1) if d["outcome"] != "started"]
        assert fall_attempts[0]["outcome"] == "retry"
        assert "timed out" in fall_attempts[0]["error"].lower()
    finally:
        h.close()


def test_permanent_4xx_is_not_retried(tmp_path: Path, hook: Hook) -> None:
    hook.script = [400]
    h = harness(tmp_path, hook)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: bool(outcomes(h)))
        for _ in range(5):
            drive(h, lambda: True)
        assert outcomes(h) == ["failed"] and len(hook.requests) == 1
    finally:
        h.close()


def test_gives_up_after_max_attempts(tmp_path: Path, hook: Hook) -> None:
    hook.script = [500] * 10
    h = harness(tmp_path, hook)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: "failed" in outcomes(h))
        assert outcomes(h) == ["retry", "retry", "retry", "failed"]
    finally:
        h.close()


def test_grouping_sends_one_notification_per_resident(tmp_path: Path, hook: Hook) -> None:
    h = harness(tmp_path, hook, group_wait=30.0, staff=True)
    try:
        h.findings(finding("fall", [0], 4))
        h.clock.advance(10)
        h.findings(finding("hypoxemia", [0], 3), finding("fever", [2], 2))
        drive(h, lambda: len(hook.requests) >= 2, step=5.0)
        bodies = sorted((orjson.loads(b) for _h, b in hook.requests),
                        key=lambda d: d["resident_id"])
        assert [(d["resident_id"], [n["alert"]["kind"] for n in d["notifications"]])
                for d in bodies] == [("r-0001", ["fall", "hypoxemia"]), ("r-0003", ["fever"])]
        assert all(d["recipient"] == "carer-1" for d in bodies)
        sent_at = [d["ts"] for d in h.engine.store.deliveries() if d["outcome"] == "sent"]
        assert min(sent_at) >= T0 + 30  # the group waited for its window
    finally:
        h.close()


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [backoff(attempt, 2.0, 60.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize("status, outcome", [
    (200, "sent"), (204, "sent"), (400, "failed"), (401, "failed"), (404, "failed"),
    (408, "retry"), (429, "retry"), (500, "retry"), (503, "retry"), (None, "retry"),
])
def test_classify(status: int | None, outcome: str) -> None:
    assert classify(status) == outcome
