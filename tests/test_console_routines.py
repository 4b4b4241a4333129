"""The routines mounted in the console: /api/routines through the console's own sign-in,
CSRF and tier scope (403 outside it), task completion (a hazard opens an alert), reports,
and the 任务 / 报告 pages."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette: "use httpx2"; httpx is what is installed
    from fastapi.testclient import TestClient

from carewatch.clock import SimClock
from config.generate import demo_registry
from config.models import Config
from console.app import create_app
from console.settings import ConsoleSettings
from console.testing import T0, Harness, password_of, set_passwords
from ingest.publish import ListPublisher
from routines.service import Routines

MONTH = "2025-11"  # console.testing.T0 is 2025-11-28 16:00 Asia/Shanghai


class Mounted:
    """A console Harness whose app has the routines mounted (tasks issued at T0)."""

    def __init__(self, tmp: Path) -> None:
        self.h = Harness(tmp, settings=ConsoleSettings(auth_clock=SimClock(0.0)))
        self.routines = Routines(self.h.config, self.h.pipeline.devices, self.h.clock, tmp,
                                 alerts=self.h.engine, state=self.h.pipeline.store)
        self.routines.tick(self.h.clock.now())
        self.app = create_app(self.h.backend, self.h.settings, routines=self.routines)
        self.config: Config = self.h.config
        self.tiers = self.h.tiers

    def close(self) -> None:
        self.routines.close()
        self.h.close()


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Mounted]:
    mounted = Mounted(tmp_path)
    try:
        yield mounted
    finally:
        mounted.close()


@pytest.fixture
def client(m: Mounted) -> Iterator[TestClient]:
    with TestClient(m.app) as c:
        yield c


def login(c: TestClient, staff_id: str) -> str:
    c.cookies.clear()
    r = c.post("/api/login", json={"staff_id": staff_id, "password": password_of(staff_id)})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


def covered(config: Config, staff_id: str) -> set[str]:
    """Residents a staff member covers, straight from the registry (not console.scope)."""
    s = next(x for x in config.staff if x.id == staff_id)
    inst_towns = {i.id: set(i.towns) for i in config.institutions}.get(s.institution or "", set())
    return {r.id for r in config.residents
            if s.tier == 4 or (s.tier == 3 and r.town == s.town)
            or (s.tier == 2 and (r.institution == s.institution
                                 or (r.institution is None and r.town in inst_towns)))
            or (s.tier == 1 and r.staff == s.id)}


def task_ids(c: TestClient, view: str = "open", **params: str) -> list[dict[str, Any]]:
    r = c.get("/api/routines/tasks", params={"view": view, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["tasks"])


def outside_task(m: Mounted, staff_id: str, kind: str = "weekly_call") -> str:
    inside = covered(m.config, staff_id)
    return next(t.task_id for t in m.routines.open_tasks()
                if t.kind == kind and t.resident_id not in inside)


def test_anonymous_is_refused_everywhere(m: Mounted, client: TestClient) -> None:
    tid = m.routines.open_tasks()[0].task_id
    for path in ("/api/routines/tasks", "/api/routines/tasks?view=overdue",
                 f"/api/routines/tasks/{tid}", "/api/routines/scope",
                 f"/api/routines/reports/{MONTH}", f"/api/routines/reports/{MONTH}/html",
                 f"/api/routines/reports/{MONTH}-03"):
        assert client.get(path).status_code == 401, path
    r = client.post(f"/api/routines/tasks/{tid}/complete", json={"notes": "x"})
    assert r.status_code == 401
    for page in ("/tasks", "/reports"):
        r = client.get(page, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert m.routines.get(tid).state == "open"


def test_task_lists_follow_each_tier_scope(m: Mounted, client: TestClient) -> None:
    everyone = {r.id for r in m.config.residents}
    for tier, staff_id in m.tiers.items():
        login(client, staff_id)
        listed = task_ids(client)
        residents = {t["resident_id"] for t in listed}
        assert residents == covered(m.config, staff_id), tier  # every open task has 3 kinds
        assert (residents == everyone) == (tier == 4)
        assert all(t["resident_name"] and t["town_name"] for t in listed)
        # first start (Fri 28 Nov): the running week's and month's tasks are issued now, with
        # their normal lead, so nothing is overdue or escalated yet
        assert task_ids(client, "overdue") == [], tier
        assert all(t["issued_at"] == T0 and t["tier"] == 1 for t in listed)
    carer = m.tiers[1]
    login(client, carer)
    mine = task_ids(client, "mine")
    assert mine and all(t["owner"] == carer or carer in t["on_duty"] for t in mine)
    assert {t["kind"] for t in mine} == {"weekly_call", "monthly_inspection", "monthly_visit"}
    # Wed 3 Dec 20:00: the week's calls (due Tue 2 Dec 18:00) have reached the town office
    m.h.clock.set(T0 + 5 * 86400 + 4 * 3600)
    m.routines.tick(m.h.clock.now())
    for tier, staff_id in m.tiers.items():
        login(client, staff_id)
        listed = task_ids(client)
        overdue = task_ids(client, "overdue")
        assert overdue and all(t["overdue"] for t in overdue), tier
        assert {t["task_id"] for t in overdue} < {t["task_id"] for t in listed}
    # the district (tier 4, above routines.max_tier 3) answers for no task itself: its
    # "my tasks today" is empty by design and says so, pointing at the overdue count
    login(client, m.tiers[4])
    r = client.get("/api/routines/tasks", params={"view": "mine"}).json()
    assert r["tasks"] == []
    assert r["note"] == {"reason": "above_max_tier", "max_tier": 3,
                         "overdue": len(task_ids(client, "overdue"))}
    assert r["note"]["overdue"] > 0
    login(client, m.tiers[3])  # a tier that tasks reach gets its list, no note
    r = client.get("/api/routines/tasks", params={"view": "mine"}).json()
    assert "note" not in r and all(m.tiers[3] in t["on_duty"] for t in r["tasks"])


def test_by_institution_view_and_scope_endpoint(m: Mounted, client: TestClient) -> None:
    desk = m.tiers[2]
    own = next(s.institution for s in m.config.staff if s.id == desk)
    other = next(i.id for i in m.config.institutions if i.id != own)
    login(client, desk)
    listed = task_ids(client, "institution", institution=str(own))
    assert listed and {t["institution_id"] for t in listed} == {own}
    r = client.get("/api/routines/tasks", params={"view": "institution", "institution": other})
    assert r.status_code == 403
    r = client.get("/api/routines/tasks", params={"view": "institution", "institution": "nope"})
    assert r.status_code == 404
    scope = client.get("/api/routines/scope").json()
    assert [i["id"] for i in scope["institutions"]] == [own] and scope["district"] is False
    login(client, m.tiers[4])
    assert {t["institution_id"] for t in task_ids(client, "institution", institution=other)} \
        == {other}
    scope = client.get("/api/routines/scope").json()
    assert scope["district"] is True
    assert [t["id"] for t in scope["towns"]] == [t.id for t in m.config.towns]


def test_out_of_scope_task_is_403_to_read_and_to_complete(m: Mounted, client: TestClient) -> None:
    for tier in (1, 2, 3):
        staff_id = m.tiers[tier]
        csrf = login(client, staff_id)
        tid = outside_task(m, staff_id)
        assert client.get(f"/api/routines/tasks/{tid}").status_code == 403
        r = client.post(f"/api/routines/tasks/{tid}/complete", json={"notes": "not mine"},
                        headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403, (tier, r.text)
        assert m.routines.get(tid).state == "open"
    assert client.get("/api/routines/tasks/weekly_call:nobody:2025-W48").status_code == 404


def test_completion_needs_the_csrf_token_with_a_session(m: Mounted, client: TestClient) -> None:
    carer = m.tiers[1]
    csrf = login(client, carer)
    tid = f"weekly_call:{m.config.residents[0].id}:2025-W48"
    url = f"/api/routines/tasks/{tid}/complete"
    assert client.post(url, json={"notes": "called"}).status_code == 403
    assert client.post(url, json={"notes": "called"},
                       headers={"X-CSRF-Token": csrf + "x"}).status_code == 403
    assert m.routines.get(tid).state == "open"
    # an API token carries no cookie, so it needs no CSRF token (as on every console route)
    client.cookies.clear()
    token = m.h.users.add_token(carer, "care-app")
    r = client.post(url, json={"notes": "called"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["task"]["completed_by"] == f"{carer}/token:care-app"


def test_complete_with_feedback_and_a_hazard_that_opens_an_alert(
        m: Mounted, client: TestClient) -> None:
    carer = m.tiers[1]
    rid = m.config.residents[0].id
    csrf = login(client, carer)
    hdr = {"X-CSRF-Token": csrf}
    calls: list[int] = []

    def recording_submit(fn: Any) -> Future[Any]:  # what the Service's pipeline thread does
        calls.append(1)
        fut: Future[Any] = Future()
        fut.set_result(fn())
        return fut

    m.h.backend._submit = recording_submit
    call = f"weekly_call:{rid}:2025-W48"
    assert client.post(f"/api/routines/tasks/{call}/complete", json={"notes": "  "},
                       headers=hdr).status_code == 422  # a blank note is bad input
    r = client.post(f"/api/routines/tasks/{call}/complete", headers=hdr,
                    json={"outcome": "ok", "notes": "电话联系，老人状态良好"})
    assert r.status_code == 200, r.text
    done = r.json()["task"]
    assert done["state"] == "done" and done["completed_by"] == carer and done["alert_id"] is None
    assert calls, "completion did not go through backend.call (the pipeline thread)"
    assert call not in {t["task_id"] for t in task_ids(client, "mine")}
    log = client.get(f"/api/routines/tasks/{call}").json()["log"]
    assert log[-1]["action"] == "completed" and log[-1]["actor"] == carer

    # issued at the first start (T0, 28 Nov), not back-dated to 1 Nov: due 20 Nov as
    # scheduled would make it late now; with the normal lead from the start it is on time
    inspection = f"monthly_inspection:{rid}:{MONTH}"
    r = client.post(f"/api/routines/tasks/{inspection}/complete", headers=hdr,
                    json={"notes": "排查完成", "hazard": "楼梯扶手松动",
                          "hazard_severity": "medium"})
    assert r.status_code == 200, r.text
    done = r.json()["task"]
    assert done["state"] == "done" and done["outcome"] == "hazard_found" and done["alert_id"]
    alert = m.h.engine.get_alert(done["alert_id"])
    assert (alert.kind, alert.resident_id, alert.severity_name) == ("hazard", rid, "medium")
    board = client.get("/api/alerts").json()["alerts"]
    row = next(a for a in board if a["alert_id"] == done["alert_id"])  # on the board, in scope
    # the card says what was found, in both languages, not just the kind
    assert row["message"] == "Hazard found at the resident's home: 楼梯扶手松动"
    assert row["message_zh"] == "发现安全隐患：楼梯扶手松动"
    # and so does the contract alert event on MQTT
    publisher = m.h.pipeline.publisher
    assert isinstance(publisher, ListPublisher)
    res = m.config.residents[0]
    (event,) = [orjson.loads(p) for t, p, _q, _r in publisher.messages
                if t == f"carewatch/v1/{res.town}/alerts/{rid}"]
    assert event["event"] == "opened" and event["kind"] == "hazard"
    assert event["message"] == "Hazard found at the resident's home: 楼梯扶手松动"
    assert event["evidence"]["note"] == "楼梯扶手松动"
    contract = {"alert_id", "resident_id", "device_id", "town_id", "kind", "severity", "state",
                "tier", "tier_name", "opened_at", "updated_at", "condition_active", "evidence",
                "message"}
    assert contract <= set(event) and (event["state"], event["tier"]) == ("open", 1)
    again = client.post(f"/api/routines/tasks/{inspection}/complete", headers=hdr,
                        json={"notes": "again"})
    assert again.status_code == 409


def test_reports_are_scoped_by_tier(m: Mounted, client: TestClient) -> None:
    towns = [t.id for t in m.config.towns]
    login(client, m.tiers[4])
    full = client.get(f"/api/routines/reports/{MONTH}").json()
    assert full["district"] is not None and set(full["towns"]) == set(towns)
    one = client.get(f"/api/routines/reports/{MONTH}", params={"town": towns[1]}).json()
    assert one["district"] is None and set(one["towns"]) == {towns[1]}
    html = client.get(f"/api/routines/reports/{MONTH}/html")
    assert html.status_code == 200 and "<h2>全区 District" in html.text
    assert html.headers["content-type"].startswith("text/html")
    assert client.get(f"/api/routines/reports/{MONTH}", params={"town": "nope"}).status_code == 404
    assert client.get("/api/routines/reports/2025-13-99").status_code == 422

    town_staff = m.tiers[3]
    own = next(s.town for s in m.config.staff if s.id == town_staff)
    other = next(t for t in towns if t != own)
    login(client, town_staff)
    mine = client.get(f"/api/routines/reports/{MONTH}").json()
    assert mine["district"] is None and set(mine["towns"]) == {own}
    for path in (f"/api/routines/reports/{MONTH}", f"/api/routines/reports/{MONTH}/html",
                 f"/api/routines/reports/{MONTH}-27/html"):
        assert client.get(path, params={"town": other}).status_code == 403, path
    day = client.get(f"/api/routines/reports/{MONTH}-27/html", params={"town": own})
    assert day.status_code == 200 and f"title='{own}'" in day.text
    assert "<h2>全区 District" not in day.text
    assert [t["id"] for t in client.get("/api/routines/scope").json()["towns"]] == [own]


def test_a_town_report_counts_its_own_town_alone(m: Mounted, client: TestClient) -> None:
    """The daily series of a narrowed report (what a town office reads, or the district
    asking for one town) counts that town's alerts, not the district's."""
    town_staff = m.tiers[3]
    own = next(s.town for s in m.config.staff if s.id == town_staff)
    now = m.h.clock.now()
    others = [r for r in m.config.residents if r.town != own][:3]
    mine = next(r for r in m.config.residents if r.town == own)
    for r in [*others, mine]:
        m.h.engine.raise_manual(r.id, by="tester", note="check", now=now)
    day = "2025-11-28"
    login(client, town_staff)
    rep = client.get(f"/api/routines/reports/{day}").json()
    assert set(rep["towns"]) == {own}
    assert sum(d["alerts"] for d in rep["daily"]) == rep["towns"][own]["alerts"]["total"] == 1
    login(client, m.tiers[4])
    whole = client.get(f"/api/routines/reports/{day}").json()
    assert sum(d["alerts"] for d in whole["daily"]) == whole["district"]["alerts"]["total"] == 4
    one = client.get(f"/api/routines/reports/{day}", params={"town": own}).json()
    assert sum(d["alerts"] for d in one["daily"]) == 1


def test_staff_not_yet_linked_to_an_institution_see_no_tasks(tmp_path: Path) -> None:
    """A tier-2 desk registered before its institution is set sees none of the tasks of
    residents without an institution (it has no residents in the console either)."""
    data = demo_registry(30, seed=1, towns=3)
    lone = data["towns"][2]["id"]
    for inst in data["institutions"]:
        inst["towns"] = [t for t in inst["towns"] if t != lone]
    for r in data["residents"]:
        if r["town"] == lone:
            r.pop("institution", None)
    data["staff"].append({"id": "desk-new", "name": "新机构值班台", "tier": 2})
    config = Config.model_validate(data)
    h = Harness(tmp_path, config=config, settings=ConsoleSettings(auth_clock=SimClock(0.0)))
    set_passwords(tmp_path / "users.json", config, ["desk-new"])
    routines = Routines(config, h.pipeline.devices, h.clock, tmp_path, alerts=h.engine,
                        state=h.pipeline.store)
    try:
        routines.tick(h.clock.now())
        unlinked = [t for t in routines.store.tasks() if t.institution_id is None]
        assert unlinked  # the lone town's residents have tasks, with no institution
        with TestClient(create_app(h.backend, h.settings, routines=routines)) as c:
            csrf = login(c, "desk-new")
            assert c.get("/api/me").json()["residents_in_scope"] == 0
            assert c.get("/api/routines/tasks", params={"view": "open"}).json()["tasks"] == []
            done = c.post(f"/api/routines/tasks/{unlinked[0].task_id}/complete",
                          json={"notes": "x"}, headers={"X-CSRF-Token": csrf})
            assert done.status_code == 403
    finally:
        routines.close()
        h.close()


def test_pages_and_nav_flag(m: Mounted, client: TestClient, tmp_path: Path) -> None:
    login(client, m.tiers[1])
    assert client.get("/api/me").json()["features"] == {"routines": True}
    for page, marker in (("/tasks", "page-tasks"), ("/reports", "page-reports")):
        r = client.get(page)
        assert r.status_code == 200 and marker in r.text
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    # without routines the console has neither the API nor the pages, and says so in /me
    with TestClient(create_app(m.h.backend, m.h.settings)) as plain:
        login(plain, m.tiers[1])
        assert plain.get("/api/me").json()["features"] == {"routines": False}
        assert plain.get("/api/routines/tasks").status_code == 404
        assert plain.get("/tasks").status_code == 404


def test_an_action_the_pipeline_comes_to_after_its_deadline_is_not_done(
        m: Mounted, client: TestClient) -> None:
    """The district console sends actions with a deadline, and past it tells staff the
    action was not done. A completion that waited behind a busy tick on the pipeline thread
    is refused there once its deadline has passed (it used to be carried out late)."""
    carer = m.tiers[1]
    rid = m.config.residents[0].id
    hdr = {"X-CSRF-Token": login(client, carer)}
    pipeline = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
    busy = threading.Event()
    pipeline.submit(busy.wait, 30)  # a long tick
    m.h.backend._submit = pipeline.submit
    deadline = time.time() + 0.3
    release = threading.Thread(target=lambda: (_until(lambda: time.time() > deadline),
                                               busy.set()))
    release.start()
    try:
        call = f"weekly_call:{rid}:2025-W48"
        late = client.post(f"/api/routines/tasks/{call}/complete", json={"notes": "ok"},
                           headers={**hdr, "X-CareWatch-Deadline": f"{deadline:.3f}"})
        assert late.status_code == 504 and late.json()["code"] == "past_deadline", late.text
        assert client.get(f"/api/routines/tasks/{call}").json()["task"]["state"] == "open"
        in_time = client.post(f"/api/routines/tasks/{call}/complete", json={"notes": "ok"},
                              headers={**hdr, "X-CareWatch-Deadline": f"{time.time() + 30:.3f}"})
        assert in_time.status_code == 200 and in_time.json()["task"]["state"] == "done"
    finally:
        busy.set()
        release.join(5)
        pipeline.shutdown(wait=True)


def _until(cond: Any, timeout_s: float = 10.0) -> None:
    stop = threading.Event()
    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        stop.wait(0.01)
