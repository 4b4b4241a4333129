"""Alert life cycle: every transition (legal and illegal), one open alert per resident and
kind, durable restart, deterministic ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from alerts.model import (
    STATES,
    TRANSITIONS,
    AlertNotFoundError,
    AlertTransitionError,
    next_state,
)
from alerts.testing import T0, Harness, finding

ACTIONS = ("escalate", "ack", "dispatch", "resolve")
EXPECTED = {  # (state, action) -> next state; anything absent is illegal
    ("open", "escalate"): "escalated", ("open", "ack"): "acknowledged",
    ("open", "dispatch"): "dispatched", ("open", "resolve"): "resolved",
    ("escalated", "escalate"): "escalated", ("escalated", "ack"): "acknowledged",
    ("escalated", "dispatch"): "dispatched", ("escalated", "resolve"): "resolved",
    ("acknowledged", "dispatch"): "dispatched", ("acknowledged", "resolve"): "resolved",
    ("dispatched", "resolve"): "resolved",
}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table(state: str, action: str) -> None:
    expected = EXPECTED.get((state, action))
    if expected is None:
        with pytest.raises(AlertTransitionError) as err:
            next_state(state, action, note="a note")
        assert action in str(err.value) or "already" in str(err.value)
    else:
        assert next_state(state, action, note="a note") == expected
    assert set(TRANSITIONS[state].items()) == {
        (a, s) for (st, a), s in EXPECTED.items() if st == state}


@pytest.mark.parametrize("note", [None, "", "   "])
def test_resolve_needs_a_note(note: str | None) -> None:
    with pytest.raises(AlertTransitionError, match="feedback note"):
        next_state("acknowledged", "resolve", note)


def _walk(h: Harness, path: list[str]) -> None:
    h.findings(finding("fall", [0], 4))
    for i, action in enumerate(path):
        now = T0 + 10 + i
        if action == "ack":
            h.engine.ack("r-0001", "fall", "carer", now)
        elif action == "dispatch":
            h.engine.dispatch("r-0001", "fall", "carer", now)
        else:
            h.engine.resolve("r-0001", "fall", "carer", now, note="found on floor, helped up")


@pytest.mark.parametrize("path", [
    ["ack", "dispatch", "resolve"], ["ack", "resolve"], ["dispatch", "resolve"], ["resolve"],
])
def test_engine_legal_paths_publish_and_audit_each_change(h: Harness, path: list[str]) -> None:
    _walk(h, path)
    names = [e["event"] for e in h.events]
    assert names == ["opened", *[{"ack": "acknowledged", "dispatch": "dispatched",
                                  "resolve": "resolved"}[a] for a in path]]
    final = h.events[-1]
    assert final["state"] == "resolved" and final["note"] == "found on floor, helped up"
    assert final["acked_by"] == "carer"  # resolving or dispatching implies acknowledgement
    actions = [a["action"] for a in h.engine.audit(final["alert_id"])]
    assert actions == names
    assert [orjson.loads(p)["event"] for _t, p, _q, _r in h.publisher.messages] == names
    assert all(q == 1 for _t, _p, q, _r in h.publisher.messages)
    assert h.engine.open_alerts() == []


@pytest.mark.parametrize("path, illegal, message", [
    (["ack"], "ack", "already acknowledged"),
    (["dispatch"], "dispatch", "already dispatched"),
    (["dispatch"], "ack", "cannot ack"),
    (["ack", "resolve"], "ack", "resolved"),
    (["resolve"], "dispatch", "resolved"),
    (["ack"], "resolve-without-note", "feedback note"),
])
def test_engine_refuses_illegal_transitions(h: Harness, path: list[str], illegal: str,
                                           message: str) -> None:
    _walk(h, path)
    alert_id = h.events[0]["alert_id"]
    before = len(h.events)
    with pytest.raises(AlertTransitionError, match=message):
        if illegal == "ack":
            h.engine.ack_alert(alert_id, "x", T0 + 100)
        elif illegal == "dispatch":
            h.engine.dispatch_alert(alert_id, "x", T0 + 100)
        else:
            h.engine.resolve_alert(alert_id, "x", T0 + 100, note="  ")
    assert len(h.events) == before  # nothing published, nothing stored
    assert len(h.engine.events(alert_id)) == before


def test_ack_without_open_alert_is_not_found(h: Harness) -> None:
    with pytest.raises(AlertNotFoundError):
        h.engine.ack("r-0001", "fall", "carer", T0)
    with pytest.raises(AlertNotFoundError):
        h.engine.ack_alert("al-nope", "carer", T0)


def test_one_open_alert_per_resident_and_kind(h: Harness) -> None:
    h.findings(finding("hypoxemia", [0], 3, spo2_min=[89]))
    h.clock.advance(5)
    h.findings(finding("hypoxemia", [0], 3, spo2_min=[87]))  # repeat: evidence only
    assert [e["event"] for e in h.events] == ["opened"]
    (alert,) = h.engine.open_alerts()
    assert alert.evidence["spo2_min"] == 87
    h.findings(finding("hypoxemia", [0], 3, active=False))
    h.findings(finding("hypoxemia", [0], 3))  # back again: same alert, condition active
    assert [e["event"] for e in h.events] == ["opened", "condition_cleared", "condition_active"]
    assert {e["alert_id"] for e in h.events} == {alert.alert_id}
    assert h.events[1]["condition_active"] is False and h.events[2]["condition_active"] is True
    h.engine.resolve("r-0001", "hypoxemia", "carer", T0 + 60, note="oxygen given")
    h.findings(finding("hypoxemia", [0], 3))  # after resolution a new alert opens
    assert h.events[-1]["event"] == "opened" and h.events[-1]["alert_id"] != alert.alert_id


def test_higher_severity_raises_and_restarts_timer(h: Harness) -> None:
    h.findings(finding("hypoxemia", [0], 3))
    h.run_until(T0 + 200)
    h.findings(finding("hypoxemia", [0], 4))
    raised = h.events[-1]
    assert raised["event"] == "severity_raised" and raised["severity"] == "critical"
    (alert,) = h.engine.open_alerts()
    assert alert.deadline == pytest.approx(T0 + 200 + 120)
    h.run_until(T0 + 319)
    assert not h.kinds_of("escalated")
    h.run_until(T0 + 321)
    assert h.kinds_of("escalated")[0]["updated_at"] == pytest.approx(T0 + 320)


def test_restart_restores_open_alerts_and_fires_overdue_escalations(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.findings(finding("fall", [0], 4), finding("fever", [1], 2))
    first.engine.ack("r-0002", "fever", "carer", T0 + 1)
    opened = {a.alert_id: a for a in first.engine.open_alerts()}
    first.close()
    second = Harness(tmp_path, start=T0 + 250)
    try:
        assert {a.alert_id for a in second.engine.open_alerts()} == set(opened)
        second.engine.tick(T0 + 250)  # the first tick after restart fires what is overdue
        esc = second.kinds_of("escalated")
        assert [(e["tier"], e["updated_at"]) for e in esc] == [(2, T0 + 120), (3, T0 + 240)]
        fever = next(a for a in second.engine.open_alerts() if a.kind == "fever")
        assert fever.state == "acknowledged" and fever.deadline is None
    finally:
        second.close()


def test_deterministic_ids_give_identical_streams(tmp_path: Path) -> None:
    streams = []
    for run in ("a", "b"):
        h = Harness(tmp_path / run)
        h.findings(finding("fall", [0, 2], 4), finding("low_battery", [1], 1, battery=[12]))
        h.run_until(T0 + 400, step=7)
        h.engine.ack("r-0001", "fall", "carer", h.clock.now())
        streams.append([orjson.dumps(e) for e in h.events])
        h.close()
    assert streams[0] == streams[1] and len(streams[0]) > 5
