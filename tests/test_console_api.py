"""Console JSON API: sign-in, sessions, CSRF, tokens, scope by tier, actions, bad input."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette: "use httpx2"; httpx is what is installed
    from fastapi.testclient import TestClient

from alerts.testing import finding
from carewatch.clock import SimClock
from console.app import ConsoleStartError, create_app
from console.federation import DEADLINE_HEADER
from console.settings import ConsoleSettings
from console.testing import Harness, password_of
from console.users import UsersError


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, settings=ConsoleSettings(auth_clock=SimClock(0.0)))
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def client(h: Harness) -> Iterator[TestClient]:
    with TestClient(h.app) as c:
        yield c


def login(c: TestClient, staff_id: str) -> str:
    r = c.post("/api/login", json={"staff_id": staff_id, "password": password_of(staff_id)})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


def rows_of(h: Harness, staff_id: str) -> set[int]:
    """Rows the registry says a staff member covers (independent of console.scope)."""
    s = next(x for x in h.config.staff if x.id == staff_id)
    towns = {i.id: set(i.towns) for i in h.config.institutions}.get(s.institution or "", set())
    out = set()
    for i, r in enumerate(h.config.residents):
        if (s.tier == 4 or (s.tier == 3 and r.town == s.town)
                or (s.tier == 2 and r.institution == s.institution)
                or (s.tier == 2 and r.institution is None and r.town in towns)
                or (s.tier == 1 and r.staff == s.id)):
            out.add(i)
    return out


def outside(h: Harness, staff_id: str) -> int:
    covered = rows_of(h, staff_id)
    return next(i for i in range(len(h.config.residents)) if i not in covered)


def open_alerts(h: Harness, rows: list[int], severity: int = 4, kind: str = "fall") -> list[str]:
    h.engine.on_findings([finding(kind, rows, severity=severity)], h.clock.now())
    byres = {a.resident_id: a.alert_id for a in h.engine.open_alerts() if a.kind == kind}
    return [byres[h.config.residents[r].id] for r in rows]


def test_an_action_past_its_deadline_is_refused_and_not_done(h: Harness,
                                                             client: TestClient) -> None:
    """The district console sends its actions with a deadline; a worker that reaches one
    only after it (it was hung, and the console has told staff nothing was done) must not
    carry it out."""
    csrf = login(client, h.tiers[4])
    (aid,) = open_alerts(h, [0])
    late = {"X-CSRF-Token": csrf, DEADLINE_HEADER: f"{time.time() - 1.0:.3f}"}
    r = client.post(f"/api/alerts/{aid}/ack", headers=late)
    assert r.status_code == 504 and r.json()["code"] == "past_deadline"
    assert h.engine.get_alert(aid).state == "open"
    assert [e["action"] for e in h.engine.audit(aid)] == ["opened"]
    for value in (f"{time.time() + 30.0:.3f}", "soon", "nan"):  # in time, or not a time
        assert client.get("/api/me", headers={DEADLINE_HEADER: value}).status_code == 200
    on_time = {"X-CSRF-Token": csrf, DEADLINE_HEADER: f"{time.time() + 30.0:.3f}"}
    r = client.post(f"/api/alerts/{aid}/ack", headers=on_time)
    assert r.status_code == 200 and r.json()["alert"]["state"] == "acknowledged"


# ---- sign-in and sessions -------------------------------------------------------------
def test_login_me_logout(h: Harness, client: TestClient) -> None:
    district = h.tiers[4]
    csrf = login(client, district)
    me = client.get("/api/me").json()
    assert me["user"]["staff_id"] == district and me["user"]["tier"] == 4
    assert me["csrf"] == csrf and me["timezone"] == h.config.timezone
    assert me["residents_in_scope"] == len(h.config.residents)
    assert client.post("/api/logout").status_code == 403  # CSRF needed
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401
    actions = [e["action"] for e in h.engine.audit() if e["actor"] == district]
    assert actions[:2] == ["console_login", "console_logout"]


def test_old_cookie_is_revoked_after_logout(h: Harness, client: TestClient) -> None:
    csrf = login(client, h.tiers[3])
    cookie = client.cookies.get("cw_session")
    client.post("/api/logout", headers={"X-CSRF-Token": csrf})
    client.cookies.set("cw_session", str(cookie))
    assert client.get("/api/me").status_code == 401


def test_bad_sign_ins(h: Harness, client: TestClient) -> None:
    assert client.post("/api/login", json={"staff_id": h.tiers[4], "password": "nope"}
                       ).status_code == 401
    assert client.post("/api/login", json={"staff_id": "nobody", "password": "x"}
                       ).status_code == 401
    assert client.post("/api/login", json={"staff_id": "bad id!", "password": "x"}
                       ).status_code == 422
    assert client.post("/api/login", json={"staff_id": h.tiers[4]}).status_code == 422
    assert client.post("/api/login", content=b"not json",
                       headers={"Content-Type": "application/json"}).status_code == 422
    # staff with no password set cannot sign in, whatever they send
    no_pw = next(s.id for s in h.config.staff if s.id not in h.tiers.values())
    assert client.post("/api/login", json={"staff_id": no_pw, "password": ""}).status_code == 422
    assert client.post("/api/login", json={"staff_id": no_pw, "password": "x" * 12}
                       ).status_code == 401
    assert any(e["action"] == "console_login_failed" for e in h.engine.audit())


def test_lockout_after_repeated_failures(h: Harness, client: TestClient) -> None:
    sid = h.tiers[2]
    for _ in range(h.settings.login_max_failures):
        assert client.post("/api/login", json={"staff_id": sid, "password": "wrong"}
                           ).status_code == 401
    r = client.post("/api/login", json={"staff_id": sid, "password": password_of(sid)})
    assert r.status_code == 429
    clock = h.settings.auth_clock
    assert isinstance(clock, SimClock)
    clock.advance(h.settings.login_lockout_s + 1)
    login(client, sid)


def test_a_burst_of_concurrent_sign_ins_gets_no_more_tries(h: Harness,
                                                          client: TestClient) -> None:
    """Counted before the slow password check: a burst of concurrent guesses gets the
    same few tries as guesses one after another (all of it passed the limit check while
    the first were still being verified)."""
    sid = h.tiers[2]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post(
            "/api/login", json={"staff_id": sid, "password": "wrong"}).status_code, range(24)))
    assert codes.count(401) == h.settings.login_max_failures
    assert codes.count(429) == 24 - h.settings.login_max_failures
    r = client.post("/api/login", json={"staff_id": sid, "password": password_of(sid)})
    assert r.status_code == 429


def test_session_expires_and_tampered_cookie_is_refused(h: Harness, client: TestClient) -> None:
    login(client, h.tiers[4])
    assert client.get("/api/me").status_code == 200
    cookie = str(client.cookies.get("cw_session"))
    client.cookies.set("cw_session", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))
    assert client.get("/api/me").status_code == 401
    client.cookies.set("cw_session", cookie)
    clock = h.settings.auth_clock
    assert isinstance(clock, SimClock)
    clock.advance(h.settings.session_ttl_s + 1)
    assert client.get("/api/me").status_code == 401


ENDPOINTS = [
    ("GET", "/api/me"), ("GET", "/api/alerts"), ("GET", "/api/alerts/abc"),
    ("POST", "/api/alerts/abc/ack"), ("POST", "/api/alerts/abc/dispatch"),
    ("POST", "/api/alerts/abc/resolve"), ("GET", "/api/residents"),
    ("GET", "/api/residents/r-0001"), ("GET", "/api/residents/r-0001/series"),
    ("GET", "/api/silences"), ("POST", "/api/silences"), ("DELETE", "/api/silences/si-x"),
    ("GET", "/api/stream"), ("POST", "/api/logout"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_needs_sign_in(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, json={"note": "x"} if method == "POST" else None)
    assert r.status_code == 401, (path, r.text)
    r = client.request(method, path, headers={"Authorization": "Bearer cw_nope.nope"})
    assert r.status_code == 401
    r = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401


def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for _, path in ENDPOINTS:
        templ = (path.replace("/abc", "/{alert_id}").replace("/r-0001", "/{resident_id}")
                 .replace("/si-x", "/{silence_id}"))
        assert templ in paths, templ
    assert "/api/login" in paths


# ---- CSRF and tokens ------------------------------------------------------------------
def test_actions_need_the_csrf_token(h: Harness, client: TestClient) -> None:
    csrf = login(client, h.tiers[4])
    (aid,) = open_alerts(h, [0])
    assert client.post(f"/api/alerts/{aid}/ack").status_code == 403
    assert client.post(f"/api/alerts/{aid}/ack", headers={"X-CSRF-Token": "forged"}
                       ).status_code == 403
    # not ASCII: refused as any wrong token (str comparison raised: a 500)
    assert client.post(f"/api/alerts/{aid}/ack", headers={"X-CSRF-Token": "é".encode()}
                       ).status_code == 403
    assert h.engine.get_alert(aid).state == "open"
    r = client.post(f"/api/alerts/{aid}/ack", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["alert"]["state"] == "acknowledged"


def test_api_token_acts_with_its_staff_scope(h: Harness, client: TestClient) -> None:
    town = h.tiers[3]
    token = h.users.add_token(town, "his-bridge")
    auth = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/me", headers=auth).json()
    assert me["user"]["staff_id"] == town and me["user"]["via"] == "token" and me["csrf"] is None
    in_row, out_row = 0, outside(h, town)
    aid_in, aid_out = open_alerts(h, [in_row, out_row])
    r = client.post(f"/api/alerts/{aid_in}/ack", headers=auth)  # no CSRF for bearer tokens
    assert r.status_code == 200
    assert h.engine.get_alert(aid_in).acked_by == f"{town}/token:his-bridge"
    assert client.post(f"/api/alerts/{aid_out}/ack", headers=auth).status_code == 403
    tid = h.users.tokens()[0]["id"]
    assert h.users.revoke_token(tid)
    assert client.get("/api/me", headers=auth).status_code == 401


# ---- scope ----------------------------------------------------------------------------
@pytest.mark.parametrize("tier", [1, 2, 3, 4])
def test_residents_list_is_the_tier_scope(h: Harness, client: TestClient, tier: int) -> None:
    sid = h.tiers[tier]
    login(client, sid)
    got = client.get("/api/residents").json()
    expect = {h.config.residents[i].id for i in rows_of(h, sid)}
    assert {r["resident_id"] for r in got["residents"]} == expect
    assert got["total"] == len(expect) and sum(got["counts"].values()) == len(expect)
    if tier < 4:
        assert len(expect) < len(h.config.residents)


@pytest.mark.parametrize("tier", [1, 2, 3])
def test_out_of_scope_is_403_everywhere(h: Harness, client: TestClient, tier: int) -> None:
    sid = h.tiers[tier]
    csrf = login(client, sid)
    hdr = {"X-CSRF-Token": csrf}
    out = outside(h, sid)
    rid = h.config.residents[out].id
    (aid,) = open_alerts(h, [out])
    assert client.get(f"/api/residents/{rid}").status_code == 403
    assert client.get(f"/api/residents/{rid}/series").status_code == 403
    assert client.get(f"/residents/{rid}").status_code == 403
    assert client.get(f"/api/alerts/{aid}").status_code == 403
    for action in ("ack", "dispatch"):
        assert client.post(f"/api/alerts/{aid}/{action}", headers=hdr).status_code == 403
    assert client.post(f"/api/alerts/{aid}/resolve", headers=hdr, json={"note": "x"}
                       ).status_code == 403
    assert client.post("/api/silences", headers=hdr, json={
        "resident_id": rid, "minutes": 10, "reason": "visit"}).status_code == 403
    # a silence someone in scope set: this user may not end it
    s = h.engine.silence(by="district-centre", reason="in hospital", now=h.clock.now(),
                         until=h.clock.now() + 600, resident_id=rid)
    assert client.delete(f"/api/silences/{s['silence_id']}", headers=hdr).status_code == 403
    assert [x["silence_id"] for x in h.engine.silences()] == [s["silence_id"]]
    assert aid not in {a["alert_id"] for a in client.get("/api/alerts").json()["alerts"]}
    assert h.engine.get_alert(aid).state == "open"
    assert not [e for e in h.engine.audit() if e["actor"] == sid and e["resident_id"] == rid]


def test_unknown_ids_and_bad_input(h: Harness, client: TestClient) -> None:
    csrf = login(client, h.tiers[4])
    hdr = {"X-CSRF-Token": csrf}
    assert client.get("/api/residents/r-9999").status_code == 404
    assert client.get("/api/residents/bad%20id").status_code == 422
    assert client.get("/api/alerts/nope").status_code == 404
    assert client.post("/api/alerts/nope/ack", headers=hdr).status_code == 404
    assert client.get("/api/residents?status=sleepy").status_code == 422
    assert client.get("/api/residents?limit=0").status_code == 422
    assert client.get("/api/residents?offset=-1").status_code == 422
    assert client.get("/api/residents?town=bad town").status_code == 422
    assert client.get("/api/residents/r-0001/series?hours=0").status_code == 422
    assert client.get("/api/residents/r-0001/series?hours=25").status_code == 422
    (aid,) = open_alerts(h, [0])
    for body in ({}, {"note": ""}, {"note": "   "}, {"note": "x" * 5000}, {"note": 5}):
        assert client.post(f"/api/alerts/{aid}/resolve", headers=hdr, json=body
                           ).status_code == 422, body
    for body in ({"resident_id": "r-0001", "minutes": 0, "reason": "x"},
                 {"resident_id": "r-0001", "minutes": 10, "reason": ""},
                 {"resident_id": "r-0001", "minutes": 10, "reason": "x", "kind": "Bad Kind"},
                 {"resident_id": "r-0001", "minutes": 10, "reason": "x", "kind": "falll"},
                 {"resident_id": "r 1", "minutes": 10, "reason": "x"}):
        assert client.post("/api/silences", headers=hdr, json=body).status_code == 422, body
    assert not h.engine.silences()
    assert client.delete("/api/silences/si-nope", headers=hdr).status_code == 404
    assert client.delete("/api/silences/bad%20id", headers=hdr).status_code == 422
    assert h.engine.get_alert(aid).state == "open"


# ---- alerts ---------------------------------------------------------------------------
def test_board_order_and_life_cycle(h: Harness, client: TestClient) -> None:
    sid = h.tiers[4]
    hdr = {"X-CSRF-Token": login(client, sid)}
    (low,) = open_alerts(h, [3], severity=1, kind="low_battery")
    h.tick(5)
    (crit_old,) = open_alerts(h, [1])
    h.tick(5)
    (crit_new,) = open_alerts(h, [2])
    (high,) = open_alerts(h, [4], severity=3, kind="hypoxemia")
    board = client.get("/api/alerts").json()["alerts"]
    assert [a["alert_id"] for a in board] == [crit_old, crit_new, high, low]
    first = board[0]
    assert first["deadline"] == pytest.approx(first["opened_at"] + 120)
    assert first["resident_name"] == h.config.residents[1].name and first["message_zh"]
    r = client.post(f"/api/alerts/{crit_old}/ack", headers=hdr).json()["alert"]
    assert r["state"] == "acknowledged" and r["deadline"] is None and r["acked_by"] == sid
    assert client.post(f"/api/alerts/{crit_old}/ack", headers=hdr).status_code == 409
    # acknowledged alerts sink below the unacknowledged ones
    board = client.get("/api/alerts").json()["alerts"]
    assert [a["alert_id"] for a in board] == [crit_new, high, low, crit_old]
    unacked = client.get("/api/alerts?include_acknowledged=false").json()["alerts"]
    assert crit_old not in {a["alert_id"] for a in unacked}
    assert client.post(f"/api/alerts/{crit_old}/dispatch", headers=hdr
                       ).json()["alert"]["state"] == "dispatched"
    r = client.post(f"/api/alerts/{crit_old}/resolve", headers=hdr,
                    json={"note": "  found on the floor, helped up, GP called  "})
    assert r.status_code == 200 and r.json()["alert"]["state"] == "resolved"
    assert crit_old not in {a["alert_id"] for a in client.get("/api/alerts").json()["alerts"]}
    stored = h.engine.get_alert(crit_old)
    assert stored.resolved_by == sid and stored.note == "found on the floor, helped up, GP called"
    detail = client.get(f"/api/alerts/{crit_old}").json()
    assert [e["action"] for e in detail["audit"] if e["actor"] == sid][:3] == [
        "acknowledged", "dispatched", "resolved"]
    assert client.post(f"/api/alerts/{crit_old}/ack", headers=hdr).status_code == 409


def test_escalated_alert_shows_new_tier_and_deadline(h: Harness, client: TestClient) -> None:
    login(client, h.tiers[4])
    (aid,) = open_alerts(h, [0])
    for _ in range(121):
        h.tick(1)
    row = next(a for a in client.get("/api/alerts").json()["alerts"] if a["alert_id"] == aid)
    assert row["state"] == "escalated" and row["tier"] == 2
    assert row["deadline"] == pytest.approx(row["tier_reached_at"] + 120)


# ---- residents ------------------------------------------------------------------------
def test_residents_status_filters_and_search(h: Harness, client: TestClient) -> None:
    login(client, h.tiers[4])
    h.publish(0, hr=70, spo2=97, worn=True, battery=80)
    h.publish(1, hr=70, worn=False, battery=80)
    h.publish(2, hr=70, worn=True, battery=9)
    open_alerts(h, [3])
    h.tick(1)
    got = {r["resident_id"]: r for r in client.get("/api/residents").json()["residents"]}
    ids = [r.id for r in h.config.residents]
    assert got[ids[0]]["status"] == "normal" and got[ids[0]]["hr"] == 70
    assert got[ids[1]]["status"] == "not_worn"
    assert got[ids[2]]["status"] == "low_battery"
    assert got[ids[3]]["status"] == "alert" and got[ids[3]]["open_alerts"] == 1
    alerting = client.get("/api/residents?status=alert").json()
    assert [r["resident_id"] for r in alerting["residents"]] == [ids[3]]
    assert alerting["counts"]["alert"] == 1
    town = h.config.residents[5].town
    in_town = client.get(f"/api/residents?town={town}").json()["residents"]
    assert {r["resident_id"] for r in in_town} == {r.id for r in h.config.residents
                                                    if r.town == town}
    name = h.config.residents[7].name
    assert [r["resident_id"] for r in client.get(f"/api/residents?q={name}").json()["residents"]
            ] == [ids[7]]
    page = client.get("/api/residents?limit=5&offset=5").json()
    assert len(page["residents"]) == 5 and page["total"] == len(ids)
    listed = [e for e in h.engine.audit() if e["action"] == "console_list"]
    assert listed[-1]["actor"] == h.tiers[4] and listed[-1]["detail"]["returned"] == 5
    # ten minutes of silence: everyone not heard from is offline
    h.tick(601)
    offline = client.get("/api/residents?status=offline").json()
    assert offline["total"] >= len(ids) - 1


def test_data_after_an_offline_status_shows_the_device_online(
        h: Harness, client: TestClient) -> None:
    """A retained `{"online": false}` outlives the outage it reported: once vitals arrive
    after it, the list and the record say online (as the device_offline detector does),
    and a low battery is no longer hidden behind "offline"."""
    login(client, h.tiers[4])
    res = h.config.residents[0]
    status = f"carewatch/v1/{res.town}/{res.device}/status"

    def listed() -> dict[str, Any]:
        rows = client.get(f"/api/residents?q={res.id}").json()["residents"]
        return next(r for r in rows if r["resident_id"] == res.id)

    h.publish(0, hr=70, worn=True, battery=80)
    h.tick(1)
    h.pipeline.handle([(status, b'{"online": false}', h.clock.now())])
    h.tick(1)
    assert (listed()["status"], listed()["online"]) == ("offline", 0)
    (off,) = [a for a in h.engine.open_alerts() if a.kind == "device_offline"]
    assert off.resident_id == res.id and off.condition_active
    h.tick(5)
    h.publish(0, hr=71, worn=True, battery=9)
    h.tick(1)
    assert not h.engine.get_alert(off.alert_id).condition_active  # the detector cleared
    row = listed()
    assert (row["status"], row["online"], row["battery"]) == ("low_battery", 1, 9)
    rec = client.get(f"/api/residents/{res.id}").json()
    assert rec["device"]["online"] == 1 and rec["device"]["battery"] == 9
    # a newer offline status (no data since) is offline again
    h.tick(1)
    h.pipeline.handle([(status, b'{"online": false}', h.clock.now())])
    h.tick(1)
    assert (listed()["status"], listed()["online"]) == ("offline", 0)
    assert client.get(f"/api/residents/{res.id}").json()["device"]["online"] == 0


def test_resident_record_is_audited(h: Harness, client: TestClient) -> None:
    sid = h.tiers[1]
    login(client, sid)
    rid = h.config.residents[0].id
    h.publish(0, hr=72, spo2=95, rr=16, temp_c=36.6, sbp=130, dbp=80, worn=True, battery=55)
    (aid,) = open_alerts(h, [0])
    h.tick(1)
    rec = client.get(f"/api/residents/{rid}").json()
    assert rec["resident"]["conditions"] == ["copd"]
    assert rec["device"]["battery"] == 55 and rec["device"]["latest"]["sbp"]["value"] == 130
    assert rec["thresholds"]["hypoxemia"] and rec["thresholds"]["fall"]
    assert [a["alert_id"] for a in rec["alerts"]] == [aid]
    assert rec["alerts"][0]["audit"][0]["action"] == "opened"
    views = [e for e in h.engine.audit() if e["action"] == "console_view"]
    assert views and views[-1]["actor"] == sid and views[-1]["resident_id"] == rid


def test_series_has_minutes_and_alert_markers(h: Harness, client: TestClient) -> None:
    login(client, h.tiers[4])
    for k in range(5):
        h.publish(0, hr=60 + k, spo2=96, worn=True)
        h.tick(60)
    (aid,) = open_alerts(h, [0])
    s = client.get(f"/api/residents/{h.config.residents[0].id}/series?hours=1").json()
    assert len(s["ts"]) == 60 and len(s["hr"]) == 60
    values = [v for v in s["hr"] if v is not None]
    assert values == [60, 61, 62, 63, 64]
    assert [m["alert_id"] for m in s["alerts"]] == [aid]
    assert any(e["detail"].get("what") == "series" for e in h.engine.audit()
               if e["action"] == "console_view")


def test_series_fills_from_history_after_a_restart(tmp_path: Path) -> None:
    from console.testing import console_config

    config = console_config()
    storage = config.storage.model_copy(update={"sqlite": config.storage.sqlite.model_copy(
        update={"path": str(tmp_path / "history.db")})})
    config = config.model_copy(update={"storage": storage})
    first = Harness(tmp_path / "a", config=config, with_sink=True)
    try:
        for k in range(3):
            first.publish(0, hr=80 + k, worn=True)
            first.tick(60)
        assert first.pipeline.sink is not None
        first.pipeline.sink.flush()  # type: ignore[attr-defined]
    finally:
        first.close()
    # a new pipeline (empty in-memory ring), same history file, same time
    second = Harness(tmp_path / "b", config=config, clock=SimClock(first.clock.now()))
    try:
        with TestClient(second.app) as c:
            login(c, second.tiers[4])
            s = c.get(f"/api/residents/{config.residents[0].id}/series?hours=1").json()
            assert [v for v in s["hr"] if v is not None] == [80, 81, 82]
    finally:
        second.close()


def test_silences(h: Harness, client: TestClient) -> None:
    hdr = {"X-CSRF-Token": login(client, h.tiers[3])}
    rid = h.config.residents[0].id
    r = client.post("/api/silences", headers=hdr,
                    json={"resident_id": rid, "minutes": 30, "reason": "in hospital"})
    assert r.status_code == 200 and r.json()["silence"]["until"] == h.clock.now() + 1800
    assert [s["resident_id"] for s in client.get("/api/silences").json()["silences"]] == [rid]
    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    assert not h.engine.open_alerts()  # silenced: no alert opens


def test_silence_kind_must_be_an_alert_kind(h: Harness, client: TestClient) -> None:
    hdr = {"X-CSRF-Token": login(client, h.tiers[3])}
    body = {"resident_id": h.config.residents[0].id, "minutes": 30, "reason": "visit"}
    r = client.post("/api/silences", headers=hdr, json={**body, "kind": "falll"})
    assert r.status_code == 422
    msg = str(r.json()["detail"])
    assert "falll" in msg and "fall" in msg.replace("falll", "") and "low_battery" in msg
    assert not h.engine.silences()  # nothing muted while the user believes falls are
    for kind in ("fall", "news2", "hazard", None):  # detector kinds, a reported kind, all
        assert client.post("/api/silences", headers=hdr, json={**body, "kind": kind}
                           ).status_code == 200, kind
    assert sorted(str(s["kind"]) for s in h.engine.silences()) == [
        "None", "fall", "hazard", "news2"]


def test_resident_record_shows_silences_and_delete_ends_one(h: Harness,
                                                            client: TestClient) -> None:
    town = h.tiers[3]  # the town office: other residents in scope
    hdr = {"X-CSRF-Token": login(client, town)}
    rid, dev = h.config.residents[0].id, h.config.residents[0].device
    now = h.clock.now()
    r = client.post("/api/silences", headers=hdr, json={
        "resident_id": rid, "kind": "fall", "minutes": 30, "reason": "in hospital"})
    sid = r.json()["silence"]["silence_id"]
    # the device's silence (Python API) mutes this resident too
    dev_sid = h.engine.silence(by="ops", reason="firmware update", now=now, until=now + 600,
                               device_id=dev)["silence_id"]
    rec = client.get(f"/api/residents/{rid}").json()
    assert rec["silences"] == [
        {"silence_id": dev_sid, "kind": None, "device_id": dev, "by": "ops",
         "reason": "firmware update", "starts_at": now, "until": now + 600},
        {"silence_id": sid, "kind": "fall", "device_id": None, "by": town,
         "reason": "in hospital", "starts_at": now, "until": now + 1800}]
    other = min(rows_of(h, town) - {0})  # a resident in the same scope, not muted
    assert client.get(f"/api/residents/{h.config.residents[other].id}"
                      ).json()["silences"] == []
    listed = {r["resident_id"]: r["muted"] for r in client.get("/api/residents").json()[
        "residents"]}
    assert listed[rid] and not listed[h.config.residents[other].id]

    # no CSRF token: refused, still muted
    assert client.delete(f"/api/silences/{sid}").status_code == 403
    assert client.delete(f"/api/silences/{sid}", headers={"X-CSRF-Token": "forged"}
                         ).status_code == 403
    assert {s["silence_id"] for s in h.engine.silences()} == {sid, dev_sid}

    assert client.delete(f"/api/silences/{dev_sid}", headers=hdr).status_code == 200
    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    assert not h.engine.open_alerts()  # the resident's own fall silence still holds
    r = client.delete(f"/api/silences/{sid}", headers=hdr)
    assert r.status_code == 200
    assert r.json()["silence"]["ended_by"] == town and not r.json()["silence"]["active"]
    assert client.get(f"/api/residents/{rid}").json()["silences"] == []
    assert not h.engine.silences()
    assert not any(r["muted"] for r in client.get("/api/residents").json()["residents"])
    ended = [e for e in h.engine.audit() if e["action"] == "unsilenced"]
    assert [(e["actor"], e["resident_id"], e["detail"]["silence_id"]) for e in ended] == [
        (town, None, dev_sid), (town, rid, sid)]
    assert client.delete(f"/api/silences/{sid}", headers=hdr).status_code == 404  # ended

    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    assert [(a.resident_id, a.kind) for a in h.engine.open_alerts()] == [(rid, "fall")]


# ---- pages, operations, start-up ------------------------------------------------------
def test_pages_redirect_until_signed_in(h: Harness, client: TestClient) -> None:
    for path in ("/", "/residents", "/residents/r-0001"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "<form" in client.get("/login").text
    login(client, h.tiers[4])
    r = client.get("/")
    assert r.status_code == 200 and "board.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/residents/r-0001").status_code == 200
    assert client.get("/residents/r-9999").status_code == 404
    js = client.get("/static/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and "uPlot" in js.text


def test_metrics_health_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    m = client.get("/metrics")
    assert m.status_code == 200 and "carewatch" in m.text


def test_pipeline_unavailable_is_503(h: Harness) -> None:
    from concurrent.futures import Future

    def refuse(fn: Any) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_exception(RuntimeError("the pipeline is stopping"))
        return f

    h.backend._submit = refuse
    with TestClient(h.app) as c:
        login(c, h.tiers[4])
        r = c.get("/api/residents")
        assert r.status_code == 503
        assert r.json()["code"] == "unavailable"  # the UI words it (console/errors.py)


def test_demo_passwords_refused_outside_demo_mode(h: Harness, tmp_path: Path) -> None:
    from console.users import ensure_demo_users

    logins = ensure_demo_users(h.users)
    assert logins and all(pw.startswith("demo-") for _, pw in logins)
    with pytest.raises(ConsoleStartError, match="demo passwords"):
        create_app(h.backend, ConsoleSettings())
    create_app(h.backend, ConsoleSettings(demo=True))  # fine in demo mode


def test_weak_passwords_refused(h: Harness) -> None:
    sid = h.tiers[4]
    for pw in ("short", "carewatch", "administrator", sid, "demo-something-long"):
        with pytest.raises(UsersError):
            h.users.set_password(sid, pw)
    with pytest.raises(UsersError):
        h.users.set_password("nobody", "a perfectly long password")
    stored = (h.tmp / "users.json").read_text()
    assert password_of(sid) not in stored and "$argon2" in stored


def test_offline_by_last_will_reads_neutrally_in_chinese() -> None:
    # MQTT's Last Will is not 遗嘱 (a deceased person's will) beside a resident's name
    from console.words import evidence_zh

    line = evidence_zh("device_offline", {"last_will": True, "silent_s": 12.0})
    assert line == "设备离线（连接异常断开）" and "遗嘱" not in line
    assert evidence_zh("device_offline", {"last_will": False, "silent_s": 720.0}) == (
        "12 分钟无数据")
