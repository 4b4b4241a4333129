"""Noise control: inhibition by an offline device, inactivity after a fall, audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.testing import T0, Harness, finding


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_offline_device_inhibits_physiological_alerts(h: Harness) -> None:
    h.findings(finding("device_offline", [0], 2))
    for _ in range(3):  # repeated stale findings: no alert, audited once
        h.findings(finding("tachycardia", [0], 3), finding("low_battery", [0], 1))
        h.clock.advance(1)
    assert [e["kind"] for e in h.kinds_of("opened")] == ["device_offline", "low_battery"]
    inhibited = [a for a in h.engine.audit() if a["action"] == "inhibited"]
    assert [(a["detail"]["kind"], a["detail"]["by"]) for a in inhibited] == [
        ("tachycardia", "device_offline")]
    h.findings(finding("tachycardia", [1], 3))  # another resident is not affected
    h.findings(finding("device_offline", [0], 2, active=False))  # data flows again
    h.findings(finding("tachycardia", [0], 3))
    assert [e["resident_id"] for e in h.kinds_of("opened") if e["kind"] == "tachycardia"] == [
        "r-0002", "r-0001"]


def test_inactivity_after_fall_raises_the_fall_alert_instead_of_a_new_one(h: Harness) -> None:
    h.findings(finding("fall", [0], 4))
    h.clock.advance(60)
    for _ in range(3):
        h.findings(finding("inactivity", [0], 3, onset=T0 + 5))
        h.clock.advance(1)
    assert [e["kind"] for e in h.kinds_of("opened")] == ["fall"]
    updated = h.kinds_of("updated")
    assert len(updated) == 1 and updated[0]["kind"] == "fall"
    assert updated[0]["evidence"]["inactivity_after"] is True
    assert updated[0]["evidence"]["inactivity_onset_ts"] == T0 + 5
    assert [a["action"] for a in h.engine.audit(updated[0]["alert_id"])] == [
        "opened", "merged", "updated"]
    h.engine.resolve("r-0001", "fall", "carer", h.clock.now(), note="helped up, unhurt")
    h.findings(finding("inactivity", [0], 3))  # no fall open: inactivity is its own alert
    assert h.kinds_of("opened")[-1]["kind"] == "inactivity"


def test_merged_inactivity_does_not_escalate_separately(h: Harness) -> None:
    h.findings(finding("fall", [0], 4))
    h.engine.ack("r-0001", "fall", "carer", T0 + 10)
    h.findings(finding("inactivity", [0], 3))
    h.run_until(T0 + 2000, step=20)
    assert h.kinds_of("escalated") == []


def test_stillness_long_after_an_unresolved_fall_is_its_own_alert(h: Harness) -> None:
    """Merged only when the stillness begins within MERGE_WITHIN_S of the fall: a fall
    alert left unresolved for days must not swallow a new inactivity."""
    from alerts.noise import MERGE_WITHIN_S

    h.findings(finding("fall", [0, 1], 4, onset=T0))
    h.clock.advance(3 * 3600)
    late = T0 + MERGE_WITHIN_S["inactivity"] + 1
    h.findings(finding("inactivity", [0], 3, onset=T0 + MERGE_WITHIN_S["inactivity"]),
               finding("inactivity", [1], 3, onset=late))
    opened = [(e["resident_id"], e["kind"]) for e in h.kinds_of("opened")]
    assert opened == [("r-0001", "fall"), ("r-0002", "fall"), ("r-0002", "inactivity")]
    assert [e["resident_id"] for e in h.kinds_of("updated")] == ["r-0001"]  # merged


def test_a_condition_held_back_by_offline_opens_when_the_backlog_clears_it(
        h: Harness) -> None:
    """A reconnecting device's backlog: in one tick its hypoxemia begins (inhibited: the
    offline alert's condition is still active) and, later in the same tick, the offline
    condition clears. Detectors report a condition once, so the hypoxemia opens then, not
    never (as it did)."""
    h.findings(finding("device_offline", [0], 2))
    h.clock.advance(700)
    h.findings(finding("hypoxemia", [0], 4, onset=T0 + 650),
               finding("device_offline", [0], 2, active=False))
    opened = h.kinds_of("opened")
    assert [(e["kind"], e["severity"]) for e in opened] == [("device_offline", "medium"),
                                                            ("hypoxemia", "critical")]
    assert opened[1]["evidence"]["onset_ts"] == T0 + 650
    # one that clears while still held back opens nothing when the inhibitor ends
    h.findings(finding("device_offline", [1], 2))
    h.findings(finding("fever", [1], 2))
    h.findings(finding("fever", [1], 2, active=False))
    h.findings(finding("device_offline", [1], 2, active=False))
    assert [e["kind"] for e in h.kinds_of("opened")][2:] == ["device_offline"]


def test_several_findings_of_a_row_in_one_tick_are_applied_in_order(h: Harness) -> None:
    """A batch upload can begin and clear a condition in one tick (or clear and begin it
    again): each finding counts, in order (the second used to be judged against the state
    before the tick, and dropped)."""
    h.findings(finding("hypoxemia", [0, 0], [3, 3], active=[True, False]))
    assert [e["event"] for e in h.events] == ["opened", "condition_cleared"]
    h.clock.advance(5)
    h.findings(finding("hypoxemia", [0, 0], [3, 3], active=[True, False]))
    h.clock.advance(5)
    h.findings(finding("hypoxemia", [0, 1, 0], [3, 3, 3], active=[False, True, True]))
    assert [e["event"] for e in h.events] == ["opened", "condition_cleared", "condition_active",
                                              "condition_cleared", "opened", "condition_active"]
    alert = next(a for a in h.engine.open_alerts() if a.resident_id == "r-0001")
    assert alert.condition_active


def test_an_opened_event_keeps_the_evidence_it_was_opened_with(h: Harness) -> None:
    """High, then critical for the same row in one tick: the opened event says high with
    the high finding's evidence (it took the critical one's), and later changes to the
    alert do not reach back into events already handed out."""
    h.findings(finding("hypoxemia", [0, 0], [3, 4], spo2_min=[88.0, 84.0]))
    opened, raised = h.events
    assert (opened["event"], opened["severity"], opened["evidence"]["spo2_min"]) == (
        "opened", "high", 88.0)
    assert (raised["event"], raised["severity"], raised["evidence"]["spo2_min"]) == (
        "severity_raised", "critical", 84.0)
