"""End to end: a labelled simulated scenario (simulators) replayed through the pipeline
(`carewatch evaluate`) meets the detection quality targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carewatch.cli import main


@pytest.mark.timeout(180)
def test_simulated_scenario_meets_quality_targets(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    reg, rec, truth = tmp_path / "reg.yaml", tmp_path / "rec.jsonl", tmp_path / "truth.jsonl"
    assert main(["simulate", "--residents", "20", "--hours", "2", "--random-events", "30",
                 "--seed", "11", "--registry", str(reg), "--record", str(rec),
                 "--truth", str(truth)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(rec), "--truth", str(truth), "--config", str(reg),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = report["kinds"]
    required = sum(k["truth"] for k in kinds.values())
    assert required >= 15, "the scenario should inject a fair number of events"
    assert report["recall_high_critical"] >= 0.98, report["missed"]
    assert report["ppv"] >= 0.9, report["false"]
    assert report["false_alerts_per_resident_day"] <= 0.1, report["false"]
    for name, k in kinds.items():
        if k["delay_median_s"] is not None:
            assert k["delay_median_s"] <= 30, (name, k)
