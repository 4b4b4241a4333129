"""The district console after its supervisor restarts while a worker does not come back
(it hangs from its start): that worker's open alerts, read from its store, stay on the
board (stale) and its residents keep their open alerts, instead of vanishing with the
gateway's memory."""

from __future__ import annotations

import os
import signal

from carewatch.clock import WallClock
from carewatch.workers import probe_subscribed, supervisor_argv
from ingest.broker import MosquittoProcess
from tests.district_harness import District, sign_in
from tests.ingest_harness import Client, wait_for
from tests.process_harness import start_supervisor, stop_process


def test_a_silent_workers_alerts_survive_a_supervisor_restart(
        district: District, mosquitto: MosquittoProcess) -> None:
    config, parts, http = district.config, district.parts, district.http
    owner = {t: k for k, p in enumerate(parts) for t in p}
    res = [next(r for r in config.residents if owner[r.town] == k) for k in range(2)]
    dev = Client(mosquitto.port, "dev-fleet")
    try:
        for r in res:
            dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        {"ts": WallClock().now(), "fall": True, "worn": True}
                        ).wait_for_publish(5)
        gw, _ = sign_in(http, district.staff)
        wait_for(lambda: {a["resident_id"] for a in gw.get("/api/alerts").json()["alerts"]}
                 == {r.id for r in res}, timeout_s=30, what="both falls on the board")
        gw.close()
    finally:
        dev.close()
    district.stop()
    argv = supervisor_argv(district.registry, 2, mosquitto.url, http, district.data)
    proc, pids = start_supervisor(argv, 2)
    district.proc = proc  # the fixture stops this one
    # worker 1 hangs as soon as it starts: the new gateway never hears from it
    os.kill(pids[1], signal.SIGSTOP)
    try:
        wait_for(lambda: probe_subscribed(http + 1), timeout_s=90, what="worker 0 back")
        gw, _ = sign_in(http, district.staff)
        board = gw.get("/api/alerts").json()
        assert board["workers_down"] == [1]
        rows = {a["resident_id"]: a for a in board["alerts"]}
        assert set(rows) == {r.id for r in res}
        assert rows[res[1].id]["stale"] is True and rows[res[1].id]["kind"] == "fall"
        assert "stale" not in rows[res[0].id]
        listed = gw.get("/api/residents", params={"status": "unmonitored",
                                                  "limit": 20000}).json()["residents"]
        row = next(x for x in listed if x["resident_id"] == res[1].id)
        assert (row["open_alerts"], row["worst_severity"]) == (1, 4)
        record = gw.get(f"/api/residents/{res[1].id}").json()
        assert [a["kind"] for a in record["alerts"]] == ["fall"]
        assert record["stale"]["worker"] == 1
        gw.close()
    finally:
        os.kill(pids[1], signal.SIGCONT)
        stop_process(proc)
