"""Escalation on the simulated clock: tiers 1→4 at the contract's times, re-notification at
tier 4, acknowledgement stops it, silences never notify, rosters and empty tiers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.model import DEFAULT_ACK_TIMEOUT_S, SEVERITY_CODES
from alerts.routing import Router, shift_covers
from alerts.testing import T0, Harness, finding, minimal_config
from config.models import Shift


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


@pytest.mark.parametrize("severity", ["critical", "high", "medium", "low"])
def test_unacknowledged_alert_walks_tiers_at_contract_times(h: Harness, severity: str) -> None:
    period = DEFAULT_ACK_TIMEOUT_S[severity]
    h.findings(finding("fall", [0], SEVERITY_CODES[severity]))
    h.run_until(T0 + 5.5 * period, step=period / 40)
    walk = [(e["tier"], e["tier_name"], e["state"], e["updated_at"] - T0) for e in h.events]
    assert walk == [(1, "service_staff", "open", 0.0),
                    (2, "institution", "escalated", period),
                    (3, "town", "escalated", 2 * period),
                    (4, "district", "escalated", 3 * period)]
    # Tier 4: re-notified every tier time, a notice (audited), not a new event.
    renotified = [a for a in h.engine.audit() if a["action"] == "renotified"]
    assert [a["ts"] - T0 for a in renotified] == pytest.approx([4 * period, 5 * period],
                                                                abs=period / 40)
    assert len(h.publisher.messages) == 4


def test_escalation_same_on_coarse_ticks(h: Harness) -> None:
    """Deadlines are data: one late tick gives the same events as ticking every second."""
    h.findings(finding("fall", [0], 4))
    h.engine.tick(T0 + 1000)
    assert [(e["tier"], e["updated_at"] - T0) for e in h.kinds_of("escalated")] == [
        (2, 120.0), (3, 240.0), (4, 360.0)]
    assert sum(a["action"] == "renotified" for a in h.engine.audit()) == 1  # collapsed


def test_acknowledged_alert_stops_escalating(h: Harness) -> None:
    h.findings(finding("fall", [0], 4))
    h.run_until(T0 + 150)
    h.engine.ack("r-0001", "fall", "desk-1", h.clock.now())
    h.run_until(T0 + 2000, step=10)
    assert [e["event"] for e in h.events] == ["opened", "escalated", "acknowledged"]
    assert h.events[-1]["tier"] == 2
    assert not any(a["action"] == "renotified" for a in h.engine.audit())


def test_silenced_resident_never_notifies(h: Harness) -> None:
    s = h.engine.silence(by="admin", reason="device maintenance", until=T0 + 3600, now=T0,
                         resident_id="r-0001")
    h.findings(finding("fall", [0], 4))
    h.run_until(T0 + 1800, step=10)
    assert h.events == [] and h.publisher.messages == []
    assert h.engine.open_alerts() == []
    actions = [(a["action"], a["actor"]) for a in h.engine.audit()]
    assert actions == [("silenced", "admin"), ("silenced", "system")]  # created; finding muted
    assert h.engine.silences()[0]["silence_id"] == s["silence_id"]
    # expiry is audited, and the fall, never cleared, opens its alert then: detectors
    # report a condition once, so a silence that dropped it lost it for good
    h.run_until(T0 + 3601, step=10)
    assert [a["action"] for a in h.engine.audit()][-2:] == ["silence_expired", "opened"]
    assert [(e["event"], e["opened_at"]) for e in h.events] == [("opened", T0 + 3600)]
    h.findings(finding("fall", [0], 4))  # the same condition: no second alert
    assert [e["event"] for e in h.events] == ["opened"]


def test_a_condition_that_cleared_under_a_silence_opens_nothing_after(h: Harness) -> None:
    h.engine.silence(by="admin", reason="visit", until=T0 + 600, now=T0, resident_id="r-0001")
    h.findings(finding("hypoxemia", [0], 3))
    h.run_until(T0 + 300, step=10)
    h.findings(finding("hypoxemia", [0], 3, active=False))
    h.run_until(T0 + 1200, step=10)
    assert h.events == [] and h.engine.open_alerts() == []


def test_silence_pauses_escalation_of_an_open_alert(h: Harness) -> None:
    h.findings(finding("fever", [0], 2))
    h.engine.silence(by="admin", reason="visit", until=T0 + 2000, now=T0 + 1,
                     device_id="dev-0001", kind="fever")
    h.run_until(T0 + 1990, step=10)
    assert [e["event"] for e in h.events] == ["opened"]
    h.run_until(T0 + 2010, step=10)  # silence over: the overdue escalations fire
    assert [e["tier"] for e in h.kinds_of("escalated")] == [2, 3]


def test_silence_requires_reason_and_future_end(h: Harness) -> None:
    from alerts.model import AlertTransitionError
    with pytest.raises(AlertTransitionError, match="reason"):
        h.engine.silence(by="a", reason=" ", until=T0 + 10, now=T0, resident_id="r-0001")
    with pytest.raises(AlertTransitionError, match="future"):
        h.engine.silence(by="a", reason="x", until=T0, now=T0, resident_id="r-0001")


def test_town_and_deployment_ack_times(tmp_path: Path) -> None:
    config = minimal_config(
        towns=[{"id": "gufu", "ack_timeout_s": {"critical": 30}}, {"id": "lishi"}],
        ack_timeout_s={"critical": 60})
    h = Harness(tmp_path, config)
    try:
        h.findings(finding("fall", [0, 1], 4))  # r-0001 in gufu, r-0002 in lishi
        h.run_until(T0 + 61)
        first = {e["resident_id"]: e["updated_at"] - T0 for e in h.kinds_of("escalated")
                 if e["tier"] == 2}
        assert first == {"r-0001": 30.0, "r-0002": 60.0}
    finally:
        h.close()


def _staffed(**extra: Any) -> dict[str, Any]:
    return dict(
        institutions=[{"id": "inst-a", "towns": ["gufu"]}],
        staff=[{"id": "carer-1", "tier": 1, "town": "gufu", "webhook": "http://127.0.0.1:9/x"},
               {"id": "desk-a", "tier": 2, "institution": "inst-a"},
               {"id": "town-gufu", "tier": 3, "town": "gufu"},
               {"id": "night-town", "tier": 3, "town": "gufu"},
               {"id": "district", "tier": 4}],
        **extra)


def test_tier_with_nobody_on_duty_escalates_at_once_and_says_so(tmp_path: Path) -> None:
    # Town office staffed 08:00-18:00 local only; T0 is 16:00 local, T0+3h is 19:00.
    config = minimal_config(**_staffed(rosters=[
        {"tier": 3, "town": "gufu", "shifts": [{"staff": ["town-gufu"], "start": "08:00",
                                                "end": "18:00"}]}]))
    h = Harness(tmp_path, config, start=T0 + 3 * 3600)
    try:
        h.findings(finding("fall", [0], 4))
        h.run_until(T0 + 3 * 3600 + 241)
        esc = h.kinds_of("escalated")
        assert [(e["tier"], e["escalation_reason"], e.get("no_one_on_duty", False))
                for e in esc] == [(2, "ack_timeout", False), (3, "ack_timeout", True),
                                  (4, "no_one_on_duty", False)]
        assert esc[1]["updated_at"] == esc[2]["updated_at"]  # at once
        empty = [a for a in h.engine.audit() if a["action"] == "no_one_on_duty"]
        assert [a["detail"]["tier"] for a in empty] == [3]
    finally:
        h.close()


def test_router_rosters_registry_and_console_only_tiers() -> None:
    config = minimal_config(**_staffed(rosters=[
        {"tier": 3, "town": "gufu", "shifts": [
            {"staff": ["town-gufu"], "start": "08:00", "end": "18:00", "days": [1, 2, 3, 4, 5]},
            {"staff": ["night-town"], "start": "18:00", "end": "08:00"}]}]))
    router = Router(config)
    assert router.on_duty("r-0001", 1, T0).staff == ("carer-1",)
    assert router.on_duty("r-0001", 2, T0).staff == ("desk-a",)
    assert router.on_duty("r-0001", 3, T0).staff == ("town-gufu",)  # Friday 16:00
    assert router.on_duty("r-0001", 3, T0 + 3 * 3600).staff == ("night-town",)
    assert router.on_duty("r-0001", 4, T0).staff == ("district",)
    lishi = router.on_duty("r-0002", 1, T0)  # lishi has no carer: a configured, empty tier
    assert lishi.configured and lishi.empty
    bare = Router(minimal_config())  # contract minimum: console-only tiers, never "empty"
    assert not bare.on_duty("r-0001", 1, T0).empty
    assert router.webhooks(("carer-1", "desk-a")) == [("carer-1", "http://127.0.0.1:9/x")]


@pytest.mark.parametrize("start, end, days, weekday, minute, covered", [
    ("08:00", "18:00", [], 3, 8 * 60, True),
    ("08:00", "18:00", [], 3, 18 * 60, False),
    ("08:00", "18:00", [1], 2, 9 * 60, False),
    ("22:00", "06:00", [5], 5, 23 * 60, True),
    ("22:00", "06:00", [5], 6, 5 * 60, True),  # Saturday early morning: Friday's night shift
    ("22:00", "06:00", [5], 5, 5 * 60, False),
    ("22:00", "06:00", [7], 1, 60, True),  # Monday 01:00 belongs to Sunday's shift
    ("00:00", "24:00", [], 7, 1439, True),
])
def test_shift_covers(start: str, end: str, days: list[int], weekday: int, minute: int,
                      covered: bool) -> None:
    shift = Shift(staff=["x"], start=start, end=end, days=days)
    assert shift_covers(shift, weekday, minute) is covered


def test_live_silence_ids_do_not_repeat_across_engines(tmp_path: Path) -> None:
    """Two live engines (two workers, or two instances on one shared store) each start their
    counter at 0: their silence ids must still differ (the district console lists both)."""
    from alerts.engine import AlertEngine
    from carewatch.clock import SimClock
    from ingest.devices import DeviceTable
    from ingest.publish import ListPublisher

    config = minimal_config()
    ids = []
    for k in range(2):
        engine = AlertEngine(config, DeviceTable.from_config(config), SimClock(T0),
                             ListPublisher(), tmp_path / f"w{k}")
        try:
            s = engine.silence(by="admin", reason="visit", until=T0 + 60, now=T0,
                               resident_id="r-0001")
            ids.append(s["silence_id"])
            assert engine.silences()[0]["silence_id"] == s["silence_id"]
        finally:
            engine.close()
    assert ids[0] != ids[1]
    assert all(re.fullmatch(r"si-[0-9a-f]{16}", i) for i in ids)
