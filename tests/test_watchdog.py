"""Paging when the monitoring itself is down (`carewatch.watchdog`): the decision table
alone, retries with a scripted sender, and a real Service whose broker goes away, paging a
real HTTP receiver (integration webhook and the district centre's)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import orjson

from alerts.delivery import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from carewatch.service import Service
from carewatch.watchdog import SEND_ATTEMPTS, MonitoringWatch, Watchdog
from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.ingest_harness import wait_for
from tests.test_alerts_webhook import Hook, hook  # noqa: F401 (the fixture)

DOWN = {"state": "down", "problems": [{"code": "broker_link_down", "level": "down",
                                       "since": 100.0, "detail": ""}]}
OK: dict[str, Any] = {"state": "ok", "problems": []}
DEGRADED = {"state": "degraded", "problems": [{"code": "inbox_filling", "level": "degraded",
                                               "since": None, "detail": ""}]}


def events(watch: MonitoringWatch, looks: list[tuple[float, dict[str, Any]]]) -> list[tuple]:
    return [(now, n["event"]) for now, m in looks for n in watch.step(m, now)]


def test_pages_after_notify_time_repeats_and_recovers() -> None:
    watch = MonitoringWatch(notify_after_s=60, repeat_s=900, heartbeat_s=0)
    assert events(watch, [(0, OK), (10, DOWN), (69.9, DOWN)]) == []  # not yet 60 s down
    assert events(watch, [(70, DOWN), (100, DOWN), (969.9, DOWN)]) == [(70, "monitoring_down")]
    assert events(watch, [(970, DOWN), (1000, DEGRADED), (1001, OK)]) == [
        (970, "monitoring_down"), (1000, "monitoring_recovered")]  # degraded is monitoring
    # a short outage (a broker restart) pages no one, and neither does its end
    assert events(watch, [(2000, DOWN), (2059, DOWN), (2060, OK), (2061, DOWN),
                          (2120, DOWN)]) == []
    assert events(watch, [(2121, DOWN)]) == [(2121, "monitoring_down")]


def test_down_notice_says_since_when_and_why() -> None:
    watch = MonitoringWatch(notify_after_s=0, heartbeat_s=0, instance="cw-a")
    (notice,) = watch.step(DOWN, 5.0)
    assert notice == {"event": "monitoring_down", "instance": "cw-a", "at": 5.0,
                      "state": "down", "down_since": 5.0, "problems": DOWN["problems"]}


def test_heartbeats_come_at_their_period_whatever_the_state() -> None:
    watch = MonitoringWatch(notify_after_s=1e9, heartbeat_s=300)
    looks = [(float(t), OK if t < 500 else DOWN) for t in range(0, 1000, 50)]
    assert [t for t, e in events(watch, looks)] == [0, 300, 600, 900]


class Scripted:
    """A sender answering from a script of outcomes (then "sent"); records each call."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, body: bytes, secret: bytes | None, stamp: str,
                 timeout: float) -> tuple[str, int | None, str]:
        self.calls.append((url, orjson.loads(body)))
        outcome = self.script.pop(0) if self.script else "sent"
        return outcome, 200 if outcome == "sent" else 503, ""


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def watchdog(sender: Scripted, state: dict[str, Any], **watch: Any) -> tuple[Watchdog, Clock]:
    clock = Clock()
    dog = Watchdog(MonitoringWatch(**{"notify_after_s": 0, "heartbeat_s": 0, **watch}),
                   lambda: state, clock, ["http://i/hook"],
                   {"http://i/hook": "integration", "http://d/hook": "district-centre"},
                   send=sender)
    return dog, clock


def test_a_failed_page_is_retried_at_the_next_checks_then_dropped() -> None:
    sender = Scripted("retry", "sent", "retry", "retry")  # integration, district, ...
    dog, clock = watchdog(sender, DOWN)
    dog.check()
    assert [(u, b["recipient"], b["system"]["event"]) for u, b in sender.calls] == [
        ("http://i/hook", "integration", "monitoring_down"),
        ("http://d/hook", "district-centre", "monitoring_down")]
    assert sender.calls[0][1]["notifications"] == [] and sender.calls[0][1]["resident_id"] is None
    clock.t = 1.0
    dog.check()  # no new notice (repeat_s not reached): the integration's is tried again
    assert [u for u, _ in sender.calls[2:]] == ["http://i/hook"]
    sender.script = ["retry"] * 10
    for k in range(SEND_ATTEMPTS + 2):
        clock.t = 2.0 + k
        dog.check()
    assert len(sender.calls) == 2 + SEND_ATTEMPTS - 1  # gave up after SEND_ATTEMPTS tries
    assert (dog.sent, dog.failed) == (1, 1)


def test_heartbeats_go_to_integrations_only_and_are_not_retried() -> None:
    sender = Scripted("retry")
    dog, clock = watchdog(sender, OK, heartbeat_s=10)
    dog.check()
    clock.t = 5.0
    dog.check()
    assert [(u, b["system"]["event"]) for u, b in sender.calls] == [("http://i/hook", "heartbeat")]
    assert dog.failed == 1


def test_a_permanent_refusal_is_not_retried() -> None:
    sender = Scripted("failed", "failed")
    dog, clock = watchdog(sender, DOWN)
    dog.check()
    clock.t = 1.0
    dog.check()
    assert len(sender.calls) == 2 and dog.failed == 2


def test_a_broker_outage_pages_the_webhooks_and_its_end_too(
        mosquitto: MosquittoProcess, tmp_path: Path, hook: Hook) -> None:  # noqa: F811
    district = Hook()
    data = demo_registry(2, seed=1, towns=1)
    for staff in data["staff"]:
        if staff["tier"] == 4:
            staff["webhook"] = district.url
    data["alerts"] = {"webhooks": [hook.url], "monitoring_notify_after_s": 0.4,
                      "heartbeat_s": 3600, "webhook_timeout_s": 2,
                      "webhook_secret_file": str(tmp_path / "secret")}
    (tmp_path / "secret").write_text("s3cret\n")
    service = Service(parse_config(data), data_dir=tmp_path,
                      broker=BrokerSettings(url=mosquitto.url, client_id="cw-watch"))
    service.start()
    try:
        assert hook.wait_requests(1, 10)  # the first heartbeat: this instance is up
        first = orjson.loads(hook.requests[0][1])["system"]
        assert (first["event"], first["instance"]) == ("heartbeat", "cw-watch")
        wait_for(lambda: service.edge.counters.subscribed, 10, "subscribed")
        assert not district.requests  # up and running: nobody paged

        mosquitto.stop()
        assert district.wait_requests(1, 15) and hook.wait_requests(2, 15)
        headers, body = district.requests[0]
        doc = orjson.loads(body)
        assert doc["recipient"] == "district-centre"
        assert doc["system"]["event"] == "monitoring_down"
        assert [p["code"] for p in doc["system"]["problems"]] == ["broker_link_down"]
        expected = sign(b"s3cret", headers[TIMESTAMP_HEADER.lower()], body)
        assert hmac.compare_digest(headers[SIGNATURE_HEADER.lower()], expected)
        assert orjson.loads(hook.requests[1][1])["system"]["event"] == "monitoring_down"

        mosquitto.start()
        assert district.wait_requests(2, 30)
        assert orjson.loads(district.requests[1][1])["system"]["event"] == \
            "monitoring_recovered"
        assert service.watchdog is not None and service.watchdog.failed == 0
    finally:
        service.stop()
        district.close()


def test_a_receiver_never_hears_down_after_recovered() -> None:
    """A down page still being retried when monitoring recovers is dropped (recovered says
    the rest), and a URL's notices go in order: a failed one holds back the later ones.
    Before, the down retried after the recovered left the receiver believing it down."""
    state = dict(DOWN)
    sender = Scripted("retry", "sent")  # the integration's down fails; the district's goes
    dog, clock = watchdog(sender, state)
    dog.check()
    state.update(OK)
    clock.t = 5.0
    sender.script = ["retry"]  # the integration still failing at the recovery
    dog.check()
    clock.t = 10.0
    dog.check()
    heard = [(u, b["system"]["event"]) for u, b in sender.calls]
    assert heard == [("http://i/hook", "monitoring_down"), ("http://d/hook", "monitoring_down"),
                     ("http://i/hook", "monitoring_recovered"),
                     ("http://d/hook", "monitoring_recovered"),
                     ("http://i/hook", "monitoring_recovered")]
    assert dog._pending == []
