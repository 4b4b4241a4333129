"""The alert benchmark runs and meets its latency target at a small scale."""

from __future__ import annotations

from alerts.bench import bench_alerts


def test_bench_alerts_reports_latency() -> None:
    result = bench_alerts(open_alerts=200, samples=40)
    assert result["open_alerts"] == 200
    assert 0 < result["finding_to_notification_p50_ms"] <= result[
        "finding_to_notification_p99_ms"]
    assert result["finding_to_notification_p99_ms"] < 200.0
