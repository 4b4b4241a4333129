"""Several machines, one district: `carewatch run --workers 2 --machine k/2` twice (two
"machines" on one host, each with its share of the towns) and `carewatch console` over
both supervisors, against one real Mosquitto. One sign-in (the same users file and key on
every machine), one board, and an alert acted on where it lives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from carewatch.clock import WallClock
from carewatch.workers import machine_towns, partition_towns, probe_subscribed, supervisor_argv
from config.generate import write_demo_registry
from config.loader import load_config
from console.testing import password_of, staff_of_each_tier
from ingest.broker import MosquittoProcess, free_port_block
from tests.ingest_harness import Client, wait_for
from tests.process_harness import stop_process


def test_machine_shares_are_a_partition_of_the_towns(tmp_path: Path) -> None:
    config = load_config(write_demo_registry(tmp_path / "reg.yaml", 60, seed=2, towns=7))
    shares = [machine_towns(config, f"{k}/3") for k in range(3)]
    assert sorted(t for s in shares for t in s or []) == sorted(t.id for t in config.towns)
    assert machine_towns(config, None) is None
    # a machine's workers split only its own towns
    parts = partition_towns(config, 2, shares[1])
    assert sorted(t for p in parts for t in p) == sorted(shares[1] or [])
    bad = subprocess.run([sys.executable, "-m", "carewatch.cli", "run", "--config",
                          str(tmp_path / "reg.yaml"), "--machine", "3/3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--machine: expected k/N" in bad.stderr


def test_one_console_over_two_machines(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    reg = write_demo_registry(tmp_path / "reg.yaml", 36, seed=9, towns=6)
    config = load_config(reg)
    shared = tmp_path / "shared"  # the users file and key every machine is given
    staff = staff_of_each_tier(config)[4]
    subprocess.run([sys.executable, "-m", "carewatch.cli", "users", "set-password", "--config",
                    str(reg), "--data-dir", str(shared), "--staff", staff],
                   input=password_of(staff) + "\n", text=True, check=True, capture_output=True)
    ports = free_port_block(7)  # machine 0: 3 ports, machine 1: 3 ports, the console
    procs: list[subprocess.Popen[str]] = []
    dev = Client(mosquitto.port, "dev-fleet")
    try:
        for m in range(2):
            argv = supervisor_argv(reg, 2, mosquitto.url, ports + 3 * m, tmp_path / f"m{m}",
                                   ("--machine", f"{m}/2", "--console-dir", str(shared)))
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, text=True))
        worker_ports = [ports + 3 * m + 1 + k for m in range(2) for k in range(2)]
        wait_for(lambda: all(probe_subscribed(p) for p in worker_ports), timeout_s=120,
                 what="four workers subscribed")
        console = subprocess.Popen(
            [sys.executable, "-m", "carewatch.cli", "console", "--config", str(reg),
             "--supervisor", f"http://127.0.0.1:{ports}", "--supervisor",
             f"http://127.0.0.1:{ports + 3}", "--http", f"127.0.0.1:{ports + 6}",
             "--data-dir", str(tmp_path / "console"), "--console-dir", str(shared)],
            stdout=subprocess.PIPE, text=True)
        procs.append(console)
        line = console.stdout.readline() if console.stdout else ""
        assert re.search(r"district console .* over 4 workers on 2 machines", line), line
        gw = httpx.Client(base_url=f"http://127.0.0.1:{ports + 6}", timeout=15)
        r = gw.post("/api/login", json={"staff_id": staff, "password": password_of(staff)})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        assert gw.get("/api/me").json()["residents_in_scope"] == len(config.residents)
        # one resident on each machine
        mine = [set(machine_towns(config, f"{m}/2") or []) for m in range(2)]
        res = [next(r for r in config.residents if r.town in mine[m]) for m in range(2)]
        now = WallClock().now()
        for r in res:
            dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        {"ts": now, "fall": True, "worn": True, "hr": 80}).wait_for_publish(5)

        m1 = httpx.Client(base_url=f"http://127.0.0.1:{ports + 3}", timeout=15,
                          cookies=gw.cookies)  # machine 1's own console: one sign-in works

        def board(c: httpx.Client) -> dict[str, str]:
            return {a["resident_id"]: a["alert_id"]
                    for a in c.get("/api/alerts").json()["alerts"] if a["kind"] == "fall"}

        wait_for(lambda: res[1].id in board(m1), timeout_s=30, what="machine 1's alert")
        # acted on through the console before it ever listed it: it finds the owner
        alert_id = board(m1)[res[1].id]
        r = gw.post(f"/api/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["alert"]["acked_by"] == staff, r.text
        acked = {a["alert_id"]: a["state"] for a in m1.get("/api/alerts").json()["alerts"]}
        assert acked[alert_id] == "acknowledged"
        wait_for(lambda: set(board(gw)) == {r.id for r in res}, timeout_s=30,
                 what="both machines' alerts on one board")
        assert gw.post("/api/alerts/al-none/ack", headers={"X-CSRF-Token": csrf}
                       ).status_code == 404
        assert gw.get("/api/health").json()["workers_answering"] == 4
        # SQLite stores stay on their machines: the console says so instead of zeros
        day = "2026-11-29"
        rep = gw.get(f"/api/routines/reports/{day}")
        assert rep.status_code == 409 and "no routine store" in rep.json()["detail"]
        m1.close()
        gw.close()
    finally:
        dev.close()
        codes = [stop_process(p) for p in reversed(procs)]
    assert codes == [0] * len(procs)


def test_the_console_joins_the_machines_worker_lists(tmp_path: Path) -> None:
    from carewatch.commands.console import worker_links

    config = load_config(write_demo_registry(tmp_path / "reg.yaml", 20, seed=2, towns=4))
    towns = [t.id for t in config.towns]
    a = [{"worker": 0, "towns": towns[:1], "http": "http://0.0.0.0:8081/"},
         {"worker": 1, "towns": towns[1:2], "http": "http://0.0.0.0:8082/"}]
    b = [{"worker": 0, "towns": towns[2:], "http": "http://10.0.0.7:9081/"}]
    links = worker_links(config, [("http://10.0.0.6:8080", a), ("http://10.0.0.7:9080", b)])
    # one numbering; a supervisor bound to every interface is reached at its own address
    assert [(w.index, w.towns, w.url) for w in links] == [
        (0, tuple(towns[:1]), "http://10.0.0.6:8081"),
        (1, tuple(towns[1:2]), "http://10.0.0.6:8082"),
        (2, tuple(towns[2:]), "http://10.0.0.7:9081")]
    with pytest.raises(ValueError, match="claimed by"):
        worker_links(config, [("http://a", a), ("http://b", a)])
    with pytest.raises(ValueError, match="not in the registry"):
        worker_links(config, [("http://a", [{"worker": 0, "towns": ["nowhere"],
                                              "http": "http://a:1/"}])])
