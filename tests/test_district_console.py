"""The district console of `carewatch run --workers 2` against real Mosquitto: one sign-in
(the users file the `users` command writes), one board over both workers' towns, an alert
acted on through it lands at its owner, the live stream merges both workers, and a dead
worker is a monitoring problem on every page until it is back."""

from __future__ import annotations

import os
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

from carewatch.clock import WallClock
from carewatch.workers import partition_towns, probe_subscribed, supervisor_argv
from config.generate import write_demo_registry
from config.loader import load_config
from config.models import Config
from console.testing import password_of, staff_of_each_tier
from ingest.broker import MosquittoProcess, free_port_block
from tests.ingest_harness import Client, wait_for


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
        found = District(config, partition_towns(config, 2), http, pids, staff, proc)
    except BaseException:
        District(config, [], http, pids, staff, proc).stop()
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


def test_one_console_for_every_town(district: District, mosquitto: MosquittoProcess) -> None:
    config, parts, http, pids, staff = (district.config, district.parts, district.http,
                                        district.pids, district.staff)
    owner = {t: k for k, p in enumerate(parts) for t in p}
    # one resident in each worker's towns
    res = [next(r for r in config.residents if owner[r.town] == k) for k in range(2)]
    gw, csrf = sign_in(http, staff)
    stream = Stream(gw)
    dev = Client(mosquitto.port, "dev-fleet")
    try:
        me = gw.get("/api/me").json()
        assert me["residents_in_scope"] == len(config.residents) and me["workers"] == 2
        assert {t["id"] for t in me["towns"]} == {r.town for r in config.residents}
        # the gateway's session is good at a worker directly: one users file, one key
        direct = httpx.Client(base_url=f"http://127.0.0.1:{http + 1}", timeout=15,
                              cookies=gw.cookies)
        assert direct.get("/api/me").status_code == 200
        now = WallClock().now()
        for r in res:
            dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        {"ts": now, "fall": True, "worn": True, "hr": 80}).wait_for_publish(5)

        def board() -> dict[str, dict[str, Any]]:
            return {a["resident_id"]: a for a in gw.get("/api/alerts").json()["alerts"]
                    if a["kind"] == "fall"}

        wait_for(lambda: set(board()) == {r.id for r in res}, timeout_s=30,
                 what="both workers' fall alerts on the one board")
        wait_for(lambda: all(stream.of(r.id) for r in res), what="both on the merged stream")
        # act on worker 1's alert through the district console: it lands at worker 1
        alert_id = board()[res[1].id]["alert_id"]
        r = gw.post(f"/api/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        assert r.json()["alert"]["state"] == "acknowledged"
        at_owner = direct.get("/api/alerts").json()["alerts"]  # worker 0: never had it
        assert alert_id not in {a["alert_id"] for a in at_owner}
        w1 = httpx.Client(base_url=f"http://127.0.0.1:{http + 2}", timeout=15, cookies=gw.cookies)
        assert w1.get(f"/api/alerts/{alert_id}").json()["alert"]["state"] == "acknowledged"
        wait_for(lambda: any(e["state"] == "acknowledged" for e in stream.of(res[1].id)),
                 what="the acknowledgement on the merged stream")
        assert gw.post(f"/api/alerts/{alert_id}/ack").status_code == 403  # CSRF, at the gate
        # residents: one list in one console's order, counted over both workers
        page = gw.get("/api/residents", params={"limit": 2}).json()
        assert page["total"] == len(config.residents)
        assert sum(page["counts"].values()) == len(config.residents)
        assert {x["resident_id"] for x in page["residents"]} == {r.id for r in res}
        rec = gw.get(f"/api/residents/{res[1].id}").json()
        assert rec["resident"]["town_id"] == res[1].town and rec["alerts"]
        assert gw.get("/api/residents/nobody").status_code == 404
        assert gw.get("/api/health").json()["workers_answering"] == 2
        # worker 1 dies: the banner says so, and worker 0's towns are still on the board
        os.kill(pids[1], signal.SIGKILL)
        wait_for(lambda: any(p["code"] == "worker_down"
                             for p in gw.get("/api/health").json()["problems"]),
                 what="worker_down on the district console")
        health = gw.get("/api/health").json()
        assert health["state"] in ("degraded", "down") and health["workers_answering"] <= 1
        assert res[0].id in board()
        # it is restarted, resumes, and the stream catches up with a resync
        resyncs = stream.resyncs
        wait_for(lambda: gw.get("/api/health").json()["workers_answering"] == 2, timeout_s=90,
                 what="worker 1 back")
        wait_for(lambda: stream.resyncs > resyncs, timeout_s=30, what="resync after restart")
        assert res[1].id in board()
        # signing out at the district console ends the session everywhere
        assert gw.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        for c in (direct, w1):
            assert c.get("/api/me").status_code == 401
        stale = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=15,
                             cookies=direct.cookies)
        assert stale.get("/api/me").status_code == 401
        assert stale.get("/", follow_redirects=False).status_code == 303
        for c in (direct, w1, stale):
            c.close()
    finally:
        dev.close()
        district.stop()  # ends the merged stream: its reader thread finishes
        stream.thread.join(timeout=30)
        gw.close()
    assert not stream.thread.is_alive()
