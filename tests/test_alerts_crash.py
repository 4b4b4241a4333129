"""Crash safety: SIGKILL the engine's process at random instants, restart, count losses."""

from __future__ import annotations

from pathlib import Path

from alerts.crashcheck import run_crashcheck


def test_no_alert_event_or_ack_lost_across_sigkill_cycles(tmp_path: Path) -> None:
    totals = run_crashcheck(cycles=6, data_dir=tmp_path, seed=3, max_delay_s=1.0)
    assert totals["cycles"] == 6 and totals["killed"] >= 5
    assert totals["reported_events"] > 50  # the child really did work before each kill
    assert totals["lost_alerts"] == 0
    assert totals["lost_events"] == 0
    assert totals["lost_acts"] == 0
    assert totals["missed_escalations"] == 0
