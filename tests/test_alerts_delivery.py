"""Delivery outcomes that used to escape the retry policy: replies that are not HTTP, bad
URLs, unexpected errors, and notices grouped with an older, nearly exhausted one."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from alerts.delivery import post_webhook
from alerts.testing import T0, Harness, finding, minimal_config
from config.models import Config
from tests.test_alerts_webhook import SECRET, Hook, drive, outcomes

RETRY = {"group_wait_s": 0.0, "webhook_timeout_s": 0.5, "retry_base_s": 1.0,
         "retry_cap_s": 4.0, "retry_max_attempts": 3}


class NotHttp:
    """An endpoint that reads a request and answers with something that is not HTTP (a TLS
    or SSH port given as http://, a broken proxy)."""

    def __init__(self) -> None:
        self.hits = 0  # counted before answering: a sender sees its reply only after
        endpoint = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)
                endpoint.hits += 1
                self.request.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

        self.server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="not-http")
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def not_http() -> Iterator[NotHttp]:
    server = NotHttp()
    yield server
    server.close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def unchecked_webhook(url: str) -> Config:
    """A config whose integration URL skipped validation (as if built in code)."""
    cfg = minimal_config(alerts=RETRY)
    return cfg.model_copy(update={"alerts": cfg.alerts.model_copy(update={"webhooks": [url]})})


def test_non_http_reply_is_retried_with_backoff_then_given_up(
        tmp_path: Path, not_http: NotHttp) -> None:
    """It escaped as an HTTPException: no outcome recorded, sent again every tick for ever."""
    h = Harness(tmp_path, minimal_config(alerts={**RETRY, "webhooks": [not_http.url]}),
                webhook_secret=SECRET)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: "failed" in outcomes(h), step=1.0)
        assert outcomes(h) == ["retry", "retry", "failed"]
        retries = [d for d in h.engine.store.deliveries() if d["outcome"] == "retry"]
        assert all("BadStatusLine" in d["error"] for d in retries), retries
        for _ in range(10):  # given up: no more requests, however many ticks
            drive(h, lambda: True, step=1.0)
        assert not_http.hits == 3
        (row,) = h.engine.store.outbox()
        assert row["status"] == "failed" and row["attempts"] == 3
    finally:
        h.close()


def test_non_http_reply_is_classified_retry(not_http: NotHttp) -> None:
    """Classified by the sender itself, not left to the dispatcher's last-resort handler."""
    outcome, status, error = post_webhook(not_http.url, b"{}", SECRET, "1", 0.5)
    assert (outcome, status) == ("retry", None)
    assert error.startswith("BadStatusLine: "), error


def test_retry_of_non_http_reply_waits_for_its_backoff(
        tmp_path: Path, not_http: NotHttp) -> None:
    h = Harness(tmp_path, minimal_config(alerts={**RETRY, "retry_base_s": 30.0,
                                                 "retry_cap_s": 60.0,
                                                 "webhooks": [not_http.url]}),
                webhook_secret=SECRET)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: bool(outcomes(h)), step=1.0)
        (row,) = h.engine.store.outbox()
        assert row["status"] == "pending" and row["attempts"] == 1
        assert row["due_at"] >= h.clock.now() + 15.0  # base 30 s, jittered to 50-100 %
        for _ in range(10):
            drive(h, lambda: True, step=1.0)
        assert not_http.hits == 1
    finally:
        h.close()


@pytest.mark.parametrize("url", ["hooks.example.org/carewatch", "http://hooks.example.org:x/",
                                 "ftp://hooks.example.org/carewatch"])
def test_bad_url_fails_at_once_without_raising(url: str) -> None:
    outcome, status, error = post_webhook(url, b"{}", SECRET, "1", 0.5)
    assert (outcome, status) == ("failed", None)
    assert error.startswith(f"bad webhook URL {url!r}: expected an http:// or https:// URL")


def test_bad_url_is_failed_once_with_its_reason(tmp_path: Path) -> None:
    """It raised ValueError out of the sender: retried every tick, no attempt counted."""
    h = Harness(tmp_path, unchecked_webhook("hooks.example.org/carewatch"),
                webhook_secret=SECRET)
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: bool(outcomes(h)), step=1.0)
        for _ in range(5):
            drive(h, lambda: True, step=1.0)
        assert outcomes(h) == ["failed"]
        (row,) = h.engine.store.outbox()
        assert row["status"] == "failed" and row["attempts"] == 1
        (failed,) = [d for d in h.engine.store.deliveries() if d["outcome"] == "failed"]
        assert "bad webhook URL 'hooks.example.org/carewatch'" in failed["error"]
    finally:
        h.close()


def test_unexpected_error_counts_as_a_retry(tmp_path: Path) -> None:
    """Whatever escapes a sender (a bug) still counts an attempt, backs off, gives up."""
    h = Harness(tmp_path, minimal_config(alerts={**RETRY, "webhooks": ["http://127.0.0.1:9/h"]}),
                webhook_secret=SECRET)
    calls: list[float] = []

    def broken(url: str, body: bytes, secret: bytes | None, stamp: str,
               timeout: float) -> tuple[str, int | None, str]:
        calls.append(h.clock.now())
        raise RuntimeError("sender bug")

    h.engine.dispatcher.sender = broken
    try:
        h.findings(finding("fall", [0], 4))
        drive(h, lambda: "failed" in outcomes(h), step=1.0)
        assert outcomes(h) == ["retry", "retry", "failed"]
        errors = [d["error"] for d in h.engine.store.deliveries() if d["outcome"] != "started"]
        assert errors[0] == "RuntimeError: sender bug"
        assert errors[-1] == "RuntimeError: sender bug (gave up after 3 attempts)"
        for _ in range(5):
            drive(h, lambda: True, step=1.0)
        assert len(calls) == 3
    finally:
        h.close()


def test_notice_grouped_with_an_exhausted_one_keeps_its_own_attempts(
        tmp_path: Path, hook: Hook) -> None:
    """The batch's attempt was the max over its rows: a fresh escalation that joined a notice
    on its last attempt was given up after one try and never delivered."""
    hook.script = [503, 503, 503, 503]  # then 200
    cfg = minimal_config(ack_timeout_s={"critical": 35},
                         alerts={**RETRY, "retry_max_attempts": 4, "webhooks": [hook.url]})
    h = Harness(tmp_path, cfg, webhook_secret=SECRET)
    try:
        h.findings(finding("fall", [0], 4))
        for t in (0, 10, 20, 36):  # 'opened' fails 3 times; at +35 the alert escalates
            h.clock.set(T0 + t)
            h.engine.tick(h.clock.now())
            assert h.engine.dispatcher.wait_idle(5.0)
        assert len(hook.requests) == 4
        joint = orjson.loads(hook.requests[3][1])["notifications"]
        assert [(n["reason"], n["alert"]["tier"]) for n in joint] == [("opened", 1),
                                                                      ("escalated", 2)]
        rows = {(r["payload"]["reason"], r["payload"]["alert"]["tier"]): r
                for r in h.engine.store.outbox()}
        assert (rows["opened", 1]["status"], rows["opened", 1]["attempts"]) == ("failed", 4)
        assert (rows["escalated", 2]["status"], rows["escalated", 2]["attempts"]) == ("pending", 1)
        drive(h, lambda: any(d["outcome"] == "sent" for d in h.engine.store.deliveries()),
              step=1.0)
        rows = {(r["payload"]["reason"], r["payload"]["alert"]["tier"]): r
                for r in h.engine.store.outbox()}
        assert (rows["escalated", 2]["status"], rows["escalated", 2]["attempts"]) == ("sent", 2)
        delivered = orjson.loads(hook.requests[-1][1])["notifications"]
        assert ("escalated", 2) in [(n["reason"], n["alert"]["tier"]) for n in delivered]
    finally:
        h.close()


def test_a_notice_backing_off_is_not_sent_early_with_a_fresh_one(
        tmp_path: Path, hook: Hook) -> None:
    """A fresh notice sends its group at once (group wait 0); a member of that group still
    waiting out its retry backoff stays behind (it was sent along, using up its attempts
    faster than the backoff means to)."""
    hook.script = [503]  # then 200
    cfg = minimal_config(ack_timeout_s={"critical": 5},
                         alerts={**RETRY, "retry_base_s": 60.0, "retry_cap_s": 120.0,
                                 "webhooks": [hook.url]})
    h = Harness(tmp_path, cfg, webhook_secret=SECRET)
    try:
        h.findings(finding("fall", [0], 4))
        for t in (0, 6):  # 'opened' fails at once; at +5 the alert escalates
            h.clock.set(T0 + t)
            h.engine.tick(h.clock.now())
            assert h.engine.dispatcher.wait_idle(5.0)
        assert len(hook.requests) == 2
        second = orjson.loads(hook.requests[1][1])["notifications"]
        assert [(n["reason"], n["alert"]["tier"]) for n in second] == [("escalated", 2)]
        rows = {r["payload"]["reason"]: r for r in h.engine.store.outbox()}
        assert (rows["opened"]["status"], rows["opened"]["attempts"]) == ("pending", 1)
    finally:
        h.close()
