"""`carewatch demo` end to end: child broker, pipeline, simulated fleet, clean shutdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_starts_shows_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "demo",
         "--data-dir", str(tmp_path / "demo"), "--residents", "12", "--http", "127.0.0.1:0",
         "--speed", "10", "--duration", "20"],
        capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CareWatch demo is running" in out and "/metrics" in out
    assert "mqtt://127.0.0.1:" in out
    # the demo scenario scripts a fall at +1 simulated minute (6 s at speed 10)
    assert "[alert] open" in out and " fall " in out, out
    assert out.rstrip().endswith("CareWatch demo stopped.")
    assert (tmp_path / "demo" / "registry.yaml").exists()
