"""The console served by a real Service (uvicorn thread) on a real Mosquitto: live events
over SSE, scope on the stream, state reads through the pipeline thread, clean stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from carewatch.clock import WallClock
from carewatch.service import Service
from config.models import BrokerSettings, Config
from console.testing import console_config, password_of, set_passwords, staff_of_each_tier
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, wait_for


def service_config(tmp: Path, residents: int = 24, towns: int = 3) -> Config:
    config = console_config(residents, towns=towns)
    storage = config.storage.model_copy(update={
        "data_dir": str(tmp),
        "sqlite": config.storage.sqlite.model_copy(update={"path": str(tmp / "history.db")})})
    return config.model_copy(update={"storage": storage})


def start_service(config: Config, broker_url: str, tmp: Path) -> Service:
    service = Service(config, broker=BrokerSettings(url=broker_url, client_id="cw-console"),
                      http=("127.0.0.1", 0), data_dir=tmp)
    service.start()
    assert service.edge.wait_connected(10)
    return service


def carer_console(tmp: Path, broker_url: str, residents: int = 24, towns: int = 3
                  ) -> tuple[Config, str, Service, str]:
    """A started Service with its console, where the first tier-1 carer can sign in:
    (config, carer id, service, base URL)."""
    config = service_config(tmp, residents=residents, towns=towns)
    carer = staff_of_each_tier(config)[1]
    set_passwords(tmp / "users.json", config, [carer])
    service = start_service(config, broker_url, tmp)
    host, port = service.http.address
    return config, carer, service, f"http://{host}:{port}"


def signed_in(base: str, staff_id: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base, timeout=10)
    r = c.post("/api/login", json={"staff_id": staff_id, "password": password_of(staff_id)})
    assert r.status_code == 200, r.text
    return c, str(r.json()["csrf"])


class Stream:
    """Reads /api/stream on a thread, collecting `alert` events and counting `resync`s."""

    def __init__(self, client: httpx.Client) -> None:
        self.events: list[dict[str, Any]] = []
        self.resyncs = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(client,), name="sse-reader")
        self.thread.start()
        assert self.connected.wait(10), "stream did not open"

    def _run(self, client: httpx.Client) -> None:
        with client.stream("GET", "/api/stream", timeout=None) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
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
                        self.events.append(orjson.loads(line[6:]))

    def of(self, resident_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["resident_id"] == resident_id]


def vitals_topic(config: Config, row: int) -> str:
    r = config.residents[row]
    return f"carewatch/v1/{r.town}/{r.device}/vitals"


@pytest.fixture
def running(mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[tuple[Service, Config, str]]:
    config = service_config(tmp_path)
    set_passwords(tmp_path / "users.json", config, list(staff_of_each_tier(config).values()))
    service = start_service(config, mosquitto.url, tmp_path)
    host, port = service.http.address
    try:
        yield service, config, f"http://{host}:{port}"
    finally:
        service.stop()


def test_live_events_respect_scope_and_stop_cleanly(
        running: tuple[Service, Config, str], mosquitto: MosquittoProcess) -> None:
    service, config, base = running
    tiers = staff_of_each_tier(config)
    town0 = config.residents[0].town
    other = next(i for i, r in enumerate(config.residents) if r.town != town0)
    district, _ = signed_in(base, tiers[4])
    town, town_csrf = signed_in(base, tiers[3])
    streams = [Stream(district), Stream(town)]
    dev = Client(mosquitto.port, "dev-test")
    try:
        now = WallClock().now()
        for row in (0, other):
            dev.publish(vitals_topic(config, row), {"ts": now, "fall": True, "worn": True,
                                                   "hr": 80, "spo2": 96}).wait_for_publish(5)
        r0, r_other = config.residents[0].id, config.residents[other].id
        wait_for(lambda: bool(streams[0].of(r0) and streams[0].of(r_other)), what="district events")
        wait_for(lambda: bool(streams[1].of(r0)), what="town office event")
        opened = streams[1].of(r0)[0]
        assert opened["kind"] == "fall" and opened["severity"] == "critical"
        assert opened["event"] == "opened" and opened["deadline"] is not None
        # the town office acts; everyone in scope sees it, the other town's alert never
        r = town.post(f"/api/alerts/{opened['alert_id']}/ack", headers={"X-CSRF-Token": town_csrf})
        assert r.status_code == 200
        wait_for(lambda: any(e["state"] == "acknowledged" for e in streams[0].of(r0)),
                 what="acknowledgement pushed")
        assert not streams[1].of(r_other)
        # reads of state go through the pipeline thread (Service.submit)
        res = district.get("/api/residents?status=alert").json()
        assert {x["resident_id"] for x in res["residents"]} == {r0, r_other}
        assert district.get("/readyz").json()["ready"] is True
        assert district.get("/healthz").status_code == 200
        assert "carewatch" in district.get("/metrics").text
    finally:
        dev.close()
        service.stop()  # ends the streams: their reader threads finish
        for s in streams:
            s.thread.join(10)
            assert not s.thread.is_alive()
        district.close()
        town.close()


def test_submit_runs_on_the_pipeline_thread(running: tuple[Service, Config, str]) -> None:
    service, _, _ = running
    names = service.submit(lambda: threading.current_thread().name).result(5)
    assert names == "pipeline"
    err = service.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        err.result(5)
    service.stop()
    with pytest.raises(RuntimeError):
        service.submit(lambda: 1).result(5)


def test_a_read_the_console_gave_up_on_never_runs_later(
        running: tuple[Service, Config, str], tmp_path: Path) -> None:
    from console.backend import BackendUnavailable, ConsoleBackend

    service, _, _ = running
    backend = ConsoleBackend.from_pipeline(service.pipeline, tmp_path, submit=service.submit)
    backend.timeout_s = 0.2
    release, ran = threading.Event(), threading.Event()
    busy = service.submit(lambda: release.wait(10))  # the pipeline thread is busy
    try:
        with pytest.raises(BackendUnavailable):
            backend.call(ran.set)
    finally:
        release.set()
    assert busy.result(5) is True
    # a call queued after the withdrawn one has run: the withdrawn one would have run first
    assert service.submit(lambda: "after").result(5) == "after"
    assert not ran.is_set()
    # and a call that answers in time still does
    assert backend.call(lambda: "read") == "read"


def test_run_refuses_demo_passwords(tmp_path: Path, mosquitto: MosquittoProcess) -> None:
    import subprocess
    import sys

    import yaml

    from console.testing import console_config as cfg
    from console.users import UserStore, ensure_demo_users

    data = cfg(12, towns=2).model_dump(mode="json", exclude_defaults=True)
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(data, allow_unicode=True))
    ensure_demo_users(UserStore(tmp_path / "users.json", cfg(12, towns=2)))
    proc = subprocess.run(
        [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "run", "--config",
         str(reg), "--broker", mosquitto.url, "--http", "127.0.0.1:0", "--data-dir",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "demo passwords" in proc.stderr
