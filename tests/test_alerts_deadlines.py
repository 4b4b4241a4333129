"""The deadline queue: a tick finds every alert past its deadline without scanning the open
alerts, whatever happened to those deadlines in between (raised, acknowledged, resolved,
silenced, moved earlier or later)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.deadlines import Deadlines
from alerts.model import Alert
from alerts.testing import T0, Harness, finding, minimal_config


def _alert(alert_id: str, deadline: float | None, state: str = "open") -> Alert:
    return Alert(alert_id=alert_id, resident_id="r-0001", device_id="dev-0001",
                 town_id="gufu", kind="fall", severity=4, state=state, tier=1, opened_at=T0,
                 updated_at=T0, condition_active=True, evidence={}, message="",
                 deadline=deadline, tier_reached_at=T0)


def test_queue_follows_moved_deadlines_and_drops_stale_entries() -> None:
    q = Deadlines()
    a, b, c = _alert("a", 10.0), _alert("b", 20.0), _alert("c", 30.0)
    held = {x.alert_id: x for x in (a, b, c)}
    for x in held.values():
        q.watch(x)
    b.deadline = 5.0  # moved earlier
    q.watch(b)
    c.deadline = 50.0  # moved later: its entry at 30 is stale
    q.watch(c)
    q.watch(c)  # watching twice queues once
    assert q.earliest(held) == 5.0
    assert [x.alert_id for x in q.pop_due(30.0, held)] == ["b", "a"]  # c's 30 is stale
    assert q.pop_due(30.0, held) == []  # popped ones wait until watched again
    a.state, a.deadline = "acknowledged", None
    q.watch(a)
    q.watch(b)  # still due (e.g. silenced): back on the queue
    assert [x.alert_id for x in q.pop_due(30.0, held)] == ["b"]
    del held["c"]  # resolved: no longer held
    assert q.earliest(held) == math.inf
    assert len(q) == 0


def test_deadline_moved_away_and_back_is_due_once() -> None:
    q = Deadlines()
    a = _alert("a", 10.0)
    q.watch(a)
    a.deadline = 40.0
    q.watch(a)
    a.deadline = 10.0
    q.watch(a)
    assert [x.alert_id for x in q.pop_due(100.0, {"a": a})] == ["a"]


def test_raised_severity_escalates_at_the_earlier_deadline(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    try:
        h.findings(finding("hypoxemia", [0], 2))  # medium: 30 min to acknowledge
        h.run_until(T0 + 60)
        h.findings(finding("hypoxemia", [0], 4))  # critical from T0 + 60: 2 min
        h.run_until(T0 + 60 + 125)
        assert [(e["event"], e["updated_at"] - T0) for e in h.events][-1] == ("escalated",
                                                                              180.0)
    finally:
        h.close()


def test_alert_overdue_under_a_silence_escalates_when_it_ends(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    try:
        h.findings(finding("fall", [0], 4))
        h.engine.silence(by="desk", reason="home visit", until=T0 + 600, now=T0,
                         resident_id="r-0001")
        h.run_until(T0 + 599)
        assert [e["event"] for e in h.events] == ["opened"]
        h.run_until(T0 + 601)
        assert [e["event"] for e in h.events][1:] == ["escalated"] * 3  # tiers 2, 3, 4
    finally:
        h.close()


_OPS = st.lists(
    st.tuples(st.sampled_from(["finding", "ack", "resolve", "silence", "tick"]),
              st.integers(0, 2),  # resident row
              st.sampled_from(["fall", "hypoxemia"]),
              st.integers(1, 4),  # severity
              st.floats(1.0, 900.0)),  # seconds to advance before the operation
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_every_tick_leaves_no_waiting_alert_past_its_deadline(ops: list[tuple]) -> None:
    """After each tick, no open, unsilenced alert is still past its deadline, and the
    engine's next deadline is the earliest among the alerts it holds (checked by a scan)."""
    with tempfile.TemporaryDirectory() as d:
        h = Harness(Path(d), minimal_config(residents=6))
        try:
            for op, row, kind, sev, dt in ops:
                h.clock.advance(dt)
                now = h.clock.now()
                resident = f"r-{row + 1:04d}"
                if op == "finding":
                    h.findings(finding(kind, [row], sev))
                elif op in ("ack", "resolve") and h.engine._open.get((resident, kind)):
                    if op == "ack" and h.engine._open[(resident, kind)].state in (
                            "open", "escalated"):
                        h.engine.ack(resident, kind, "desk", now)
                    elif op == "resolve":
                        h.engine.resolve(resident, kind, "desk", now, "ok")
                elif op == "silence":
                    h.engine.silence(by="desk", reason="visit", until=now + dt,
                                     now=now, resident_id=resident)
                h.engine.tick(now)
                held = list(h.engine._by_id.values())
                waiting = [a for a in held
                           if a.deadline is not None and a.state in ("open", "escalated")]
                late = [a.alert_id for a in waiting if a.deadline <= now  # type: ignore[operator]
                        and h.engine._silenced(a.resident_id, a.device_id, a.kind, now) is None]
                assert late == []
                scan = min((a.deadline for a in waiting), default=None)  # type: ignore[type-var]
                assert h.engine.next_deadline() == scan
        finally:
            h.close()
