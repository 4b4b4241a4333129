"""`carewatch demo` end to end: child broker, pipeline, simulated fleet, clean shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
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


def _demo_until_fall(data: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """A demo in its own session (as a terminal's foreground job), read until its scripted
    fall alert (6 s in at speed 10): by then broker, pipeline and fleet are all running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "demo",
         "--data-dir", str(data), "--http", "127.0.0.1:0", "--speed", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # reading a pipe blocks: a demo that never gets there is killed, failing the test
    watchdog = threading.Timer(90, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[alert]") and " fall " in line:
                return proc, lines
    finally:
        watchdog.cancel()
        watchdog.join()
    raise AssertionError("the demo ended before its scripted fall: " + "".join(lines))


def _left_running(data: Path) -> str:
    return subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True).stdout


def test_ctrl_c_stops_the_demo_without_false_offline_alerts(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the demo's whole process group. The broker must not go
    down with it before the fleet has disconnected: a broker shutting down publishes the
    Last Will of every device still connected, and the pipeline opened a "device offline"
    alert for each (stored, so the next demo started with dozens of stale alerts)."""
    data = tmp_path / "demo"
    proc, lines = _demo_until_fall(data)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    out = "".join(lines) + out
    assert out.rstrip().endswith("CareWatch demo stopped."), err[-3000:]
    assert "device_offline" not in out, out
    assert _left_running(data) == ""


def test_demo_broker_does_not_outlive_a_killed_demo(tmp_path: Path) -> None:
    """The broker runs in its own process group (out of Ctrl-C's reach), so it must end
    with the demo even when the demo cannot stop it (SIGKILL)."""
    data = tmp_path / "demo"
    proc, _lines = _demo_until_fall(data)
    try:
        proc.kill()  # the demo process only
        proc.wait(timeout=30)  # (its pipes stay open in the orphaned fleet)
        broker = str(data / "mosquitto")
        deadline = time.monotonic() + 30
        while broker in _left_running(data) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for the broker's exit; bounded by the deadline
        assert broker not in _left_running(data)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned fleet
        proc.communicate(timeout=30)
