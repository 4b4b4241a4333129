"""The district console of `carewatch run --workers 2` against real Mosquitto: one sign-in
(the users file the `users` command writes), one board over both workers' towns, an alert
acted on through it lands at its owner, the live stream merges both workers, and a dead
worker is a monitoring problem on every page until it is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from carewatch.clock import WallClock
from ingest.broker import MosquittoProcess
from tests.district_harness import District, sign_in
from tests.ingest_harness import Client, wait_for
from tests.test_console_server import Stream


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
        at_gate = gw.post(f"/api/alerts/{alert_id}/ack")  # CSRF, at the gate
        assert (at_gate.status_code, at_gate.json()["code"]) == (403, "csrf")
        # refusals keep their code (the pages word it): relayed from the owner, or from a list
        again = gw.post(f"/api/alerts/{alert_id}/ack", headers={"X-CSRF-Token": csrf})
        assert (again.status_code, again.json()["code"]) == (409, "alert_changed")
        bad = gw.get("/api/routines/tasks", params={"view": "nope"})
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid")
        # residents: one list in one console's order, counted over both workers
        page = gw.get("/api/residents", params={"limit": 2}).json()
        assert page["total"] == len(config.residents)
        assert sum(page["counts"].values()) == len(config.residents)
        assert {x["resident_id"] for x in page["residents"]} == {r.id for r in res}
        rec = gw.get(f"/api/residents/{res[1].id}").json()
        assert rec["resident"]["town_id"] == res[1].town and rec["alerts"]
        assert "stale" not in rec
        charts = gw.get(f"/api/residents/{res[1].id}/series", params={"hours": 24}).json()
        assert charts["ts"] and "stale" not in charts
        nobody = gw.get("/api/residents/nobody")
        assert (nobody.status_code, nobody.json()["code"]) == (404, "not_found")
        # a silence set through the district console is seen on the record and ended there
        act = {"X-CSRF-Token": csrf}
        body = {"resident_id": res[1].id, "kind": "fall", "minutes": 30, "reason": "in hospital"}
        assert gw.post("/api/silences", json={**body, "kind": "falll"},
                       headers=act).status_code == 422
        silence_id = gw.post("/api/silences", json=body, headers=act).json()["silence"][
            "silence_id"]
        listed = gw.get(f"/api/residents/{res[1].id}").json()["silences"]
        assert [x["silence_id"] for x in listed] == [silence_id]
        assert gw.delete(f"/api/silences/{silence_id}", headers=act).status_code == 200
        assert gw.get(f"/api/residents/{res[1].id}").json()["silences"] == []
        assert gw.delete(f"/api/silences/{silence_id}", headers=act).status_code == 404
        assert gw.delete(f"/api/silences/{silence_id}").status_code == 403  # CSRF
        assert gw.get("/api/health").json()["workers_answering"] == 2
        # today's report covers both workers' stores, here and from `carewatch report`
        day = datetime.fromtimestamp(now, ZoneInfo(config.timezone)).date().isoformat()
        rep = gw.get(f"/api/routines/reports/{day}").json()
        cli = subprocess.run([sys.executable, "-m", "carewatch.cli", "report", "--config",
                              str(district.registry), "--data-dir", str(district.data),
                              "--day", day, "--json", "-"], capture_output=True, text=True,
                             check=True)
        for doc in (rep, orjson.loads(cli.stdout)):
            assert doc["district"]["alerts"]["by_kind"].get("fall") == 2
            for r in res:
                assert doc["towns"][r.town]["alerts"]["by_kind"].get("fall") == 1
        # routine tasks: one list over both workers, one task read at its owner
        tasks = gw.get("/api/routines/tasks", params={"view": "open"}).json()["tasks"]
        owners_seen = {owner[t["town_id"]] for t in tasks}
        assert owners_seen == {0, 1}
        assert [t["due_at"] for t in tasks] == sorted(t["due_at"] for t in tasks)
        one = next(t for t in tasks if owner[t["town_id"]] == 1)
        got = gw.get(f"/api/routines/tasks/{one['task_id']}")
        assert got.status_code == 200 and got.json()["task"]["task_id"] == one["task_id"]
        html = gw.get(f"/api/routines/reports/{day}/html")
        assert html.status_code == 200 and "<html" in html.text.lower()
        # worker 1 hangs: the banner names it, and its open alert stays on the board, stale
        os.kill(pids[1], signal.SIGSTOP)
        try:
            wait_for(lambda: any(p["code"] == "worker_down"
                                 for p in gw.get("/api/health").json()["problems"]),
                     what="worker_down on the district console")
            health = gw.get("/api/health").json()
            assert health["state"] == "degraded" and health["workers_answering"] == 1
            down = next(p for p in health["problems"] if p["code"] == "worker_down")
            assert down["worker"] == 1 and len(down["towns"]) == len(parts[1])
            assert 0 < health["now"] - down["since"] < 60  # the banner says for how long
            listed = httpx.get(f"http://127.0.0.1:{http}/workers", timeout=15).json()["workers"]
            assert [(w["alive"], w["answering"]) for w in listed] == [(True, True),
                                                                       (True, False)]
            now_board = board()
            assert now_board[res[1].id]["stale"] is True and "stale" not in now_board[res[0].id]
            # its residents are listed as not monitored, not left out
            lst = gw.get("/api/residents", params={"limit": 20000}).json()
            of_1 = {r.id for r in config.residents if owner[r.town] == 1}
            assert lst["total"] == len(config.residents)
            assert lst["counts"]["unmonitored"] == len(of_1)
            assert {x["resident_id"] for x in lst["residents"]
                    if x["status"] == "unmonitored"} == of_1
            row_1 = next(x for x in lst["residents"] if x["resident_id"] == res[1].id)
            assert (row_1["open_alerts"], row_1["worst_severity"]) == (1, 4)  # as last seen
            only = gw.get("/api/residents", params={"status": "unmonitored", "limit": 3}).json()
            assert only["total"] == len(of_1) and len(only["residents"]) == 3
            assert {x["status"] for x in only["residents"]} == {"unmonitored"}
            # and their records stay readable, marked stale: the last record and charts this
            # console relayed, or (never looked at) who they are and who looks after them
            got = gw.get(f"/api/residents/{res[1].id}")
            assert got.status_code == 200, got.text
            doc = got.json()
            assert (doc["stale"]["worker"], doc["stale"]["since"]) == (1, down["since"])
            assert doc["stale"]["as_of"] > now and doc["device"] == rec["device"]
            assert [(a["alert_id"], a["state"]) for a in doc["alerts"]] == [
                (alert_id, "acknowledged")]
            other = next(r for r in config.residents if owner[r.town] == 1 and r != res[1])
            bare = gw.get(f"/api/residents/{other.id}").json()
            assert bare["stale"]["as_of"] is None and bare["device"]["online"] == -1
            assert (bare["resident"]["staff"], bare["resident"]["town_id"]) == (other.staff,
                                                                                other.town)
            kept = gw.get(f"/api/residents/{res[1].id}/series", params={"hours": 24}).json()
            assert kept["ts"] == charts["ts"] and kept["stale"]["worker"] == 1
            none = gw.get(f"/api/residents/{other.id}/series", params={"hours": 24}).json()
            assert none["ts"] == [] and none["stale"]["as_of"] is None
            # an action on its alert is reported as not done, and stays undone: the worker
            # finds the request past its deadline when it resumes
            r = gw.post(f"/api/alerts/{alert_id}/resolve", json={"note": "checked by phone"},
                        headers={"X-CSRF-Token": csrf})
            assert r.status_code == 503 and r.json()["code"] == "worker_down", r.text
        finally:
            os.kill(pids[1], signal.SIGCONT)
        wait_for(lambda: gw.get("/api/health").json()["workers_answering"] == 2,
                 what="worker 1 answering again")
        assert w1.get(f"/api/alerts/{alert_id}").json()["alert"]["state"] == "acknowledged"
        # worker 1 dies: it is restarted, resumes, and the stream catches up with a resync
        resyncs = stream.resyncs
        os.kill(pids[1], signal.SIGKILL)
        wait_for(lambda: stream.resyncs > resyncs, timeout_s=90, what="resync after restart")
        wait_for(lambda: gw.get("/api/health").json()["workers_answering"] == 2, timeout_s=90,
                 what="worker 1 back")
        assert "stale" not in board()[res[1].id]
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
