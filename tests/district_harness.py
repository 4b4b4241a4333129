"""A supervisor with two workers (`carewatch run --workers 2`) on real Mosquitto, for the
district console's tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from carewatch.workers import partition_towns, probe_subscribed, supervisor_argv
from config.generate import write_demo_registry
from config.loader import load_config
from config.models import Config
from console.testing import password_of, staff_of_each_tier
from ingest.broker import MosquittoProcess, free_port_block
from tests.ingest_harness import wait_for
from tests.process_harness import start_supervisor, stop_process


@dataclass
class District:
    config: Config
    parts: list[list[str]]
    http: int  # the supervisor's port; worker k is on http + 1 + k
    pids: dict[int, int]
    staff: str  # the district centre (tier 4)
    proc: subprocess.Popen[str]
    registry: Path
    data: Path  # the supervisor's data dir (worker k's is data/worker-k)

    def stop(self) -> None:
        """Stop the supervisor (SIGTERM) and wait for it; it must exit cleanly."""
        assert stop_process(self.proc) == 0


@pytest.fixture
def district(mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[District]:
    """A supervisor with two workers; the district centre's password set with the
    `carewatch users` command in the supervisor's data dir."""
    reg = write_demo_registry(tmp_path / "reg.yaml", 40, seed=7, towns=6)
    config = load_config(reg)
    data = tmp_path / "data"
    staff = staff_of_each_tier(config)[4]
    subprocess.run([sys.executable, "-m", "carewatch.cli", "users", "set-password", "--config",
                    str(reg), "--data-dir", str(data), "--staff", staff],
                   input=password_of(staff) + "\n", text=True, check=True, capture_output=True)
    http = free_port_block(3)
    proc, pids = start_supervisor(supervisor_argv(reg, 2, mosquitto.url, http, data), 2)
    try:
        wait_for(lambda: all(probe_subscribed(http + 1 + k) for k in range(2)), timeout_s=90,
                 what="both workers subscribed")
        found = District(config, partition_towns(config, 2), http, pids, staff, proc, reg, data)
    except BaseException:
        District(config, [], http, pids, staff, proc, reg, data).stop()
        raise
    try:
        yield found
    finally:
        found.stop()


def sign_in(port: int, staff: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15)
    r = c.post("/api/login", json={"staff_id": staff, "password": password_of(staff)})
    assert r.status_code == 200, r.text
    return c, str(r.json()["csrf"])
