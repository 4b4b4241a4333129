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
