"""Command-line mistakes end with one line naming what was expected and exit code 2, not a
traceback (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from config.generate import demo_registry


def carewatch(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carewatch.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    data = demo_registry(3, seed=1, towns=1)
    empty = tmp_path / "command.secret"
    empty.write_text("\n")
    data["alerts"] = {"command_secret_file": str(empty)}
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(data, allow_unicode=True))
    cases = [
        (["bench", "nosuch"], "no section 'nosuch'"),
        (["run", "--config", str(reg), "--http", "127.0.0.1:99999"], "port 0-65535"),
        (["report", "--config", str(reg), "--day", "2026-02-30", "--json", "x.json"],
         "--day: a date YYYY-MM-DD, got '2026-02-30'"),
        # an empty secret file is refused, naming the setting (it was an empty HMAC key)
        (["run", "--config", str(reg), "--data-dir", str(tmp_path / "data"),
          "--http", "127.0.0.1:0"], "alerts.command_secret_file"),
    ]
    for argv, expected in cases:
        got = carewatch(*argv, cwd=tmp_path)
        assert got.returncode == 2, (argv, got.stderr[-2000:])
        assert expected in got.stderr and "Traceback" not in got.stderr, (argv, got.stderr)
