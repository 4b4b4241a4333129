"""A supervisor with two workers (`carewatch run --workers 2`) on real Mosquitto, for the
district console's tests; and a reader of a console's live stream."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from carewatch.workers import partition_towns, probe_subscribed, supervisor_argv
from config.generate import write_demo_registry
from config.loader import load_config
from config.models import Config
from console.testing import password_of, staff_of_each_tier
from ingest.broker import MosquittoProcess, free_port_block
from tests.ingest_harness import wait_for


class Stream:
    """Reads a console's /api/stream on a thread: `alert` rows and the `resync` count."""

    def __init__(self, client: httpx.Client) -> None:
        self.rows: list[dict[str, Any]] = []
        self.resyncs = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(client,), name="sse-reader")
        self.thread.start()
        assert self.connected.wait(10), "stream did not open"

    def _run(self, client: httpx.Client) -> None:
        with client.stream("GET", "/api/stream", timeout=None) as r:
            event = ""
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event: "):
                    event = line[7:]
                    if event == "resync":
                        with self._lock:
                            self.resyncs += 1
                elif line.startswith("data: ") and event == "alert":
                    with self._lock:
                        self.rows.append(orjson.loads(line[6:]))

    def of(self, resident_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.rows if e["resident_id"] == resident_id]


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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
        assert self.proc.returncode == 0


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
    proc = subprocess.Popen(supervisor_argv(reg, 2, mosquitto.url, http, data),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: dict[int, int] = {}
    try:
        while len(pids) < 2:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line, "supervisor exited early"
            m = re.match(r"carewatch: worker (\d) started \(pid (\d+)\)", line)
            if m:
                pids[int(m.group(1))] = int(m.group(2))
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
