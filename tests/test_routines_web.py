"""The routines API the console mounts: scoped task lists, completion, reports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from alerts.engine import AlertEngine
from carewatch.clock import SimClock
from routines.service import Routines
from routines.web import router
from tests.routines_helpers import local, make_routines, registry, run_until


@dataclass(frozen=True)
class Who:
    staff_id: str
    tier: int
    town: str | None = None
    institution: str | None = None

    @property
    def actor(self) -> str:
        return self.staff_id


PEOPLE = {"s1": Who("s1", 1), "s3": Who("s3", 1), "d1": Who("d1", 2, institution="inst-a"),
          "t2": Who("t2", 3, town="lishi"), "boss": Who("boss", 4)}


def whoami(request: Request) -> Who:
    return PEOPLE[request.headers["x-who"]]


@dataclass
class Week:
    """Routines (with an alert engine) a week into November, and a client of their API."""

    routines: Routines
    engine: AlertEngine
    client: TestClient


@pytest.fixture
def week(tmp_path: Path) -> Iterator[Week]:
    clock = SimClock(local(2026, 11, 1))
    routines, engine = make_routines(registry(), clock, tmp_path, alerts=True)
    assert engine is not None
    try:
        run_until(routines, clock, local(2026, 11, 7, 10))
        app = FastAPI()
        app.include_router(router(routines, whoami, whoami))
        yield Week(routines, engine, TestClient(app))
    finally:
        routines.close()
        engine.close()


def test_task_views_scope_completion_and_reports(week: Week) -> None:
    client, engine = week.client, week.engine

    def get(who: str, url: str) -> dict:
        r = client.get(url, headers={"x-who": who})
        assert r.status_code == 200, r.text
        return r.json()

    mine = {t["task_id"] for t in get("s1", "/api/routines/tasks")["tasks"]}
    assert "weekly_call:r-1:2026-W45" in mine and "weekly_call:r-3:2026-W45" not in mine
    # W45's calls were due Friday 18:00: now with the institution desk (tier 2); W44's,
    # issued at the first start (Sunday 00:00), were due Thursday 18:00.
    overdue = get("d1", "/api/routines/tasks?view=overdue")["tasks"]
    assert {t["task_id"] for t in overdue if t["kind"] == "weekly_call"} == {
        f"weekly_call:r-{i}:2026-W{w}" for i in (1, 2, 3) for w in (44, 45)}
    assert all(t["overdue"] and t["town_id"] == "gufu" for t in overdue)
    lishi = get("t2", "/api/routines/tasks?view=open")["tasks"]
    assert lishi and {t["town_id"] for t in lishi} == {"lishi"}
    r = client.get("/api/routines/tasks/weekly_call:r-1:2026-W45", headers={"x-who": "s3"})
    assert r.status_code == 404
    r = client.post("/api/routines/tasks/monthly_inspection:r-1:2026-11/complete",
                    headers={"x-who": "s1"},
                    json={"notes": "loose rug", "hazard": "loose rug on the stairs",
                          "hazard_severity": "medium"})
    assert r.status_code == 200, r.text
    task = r.json()["task"]
    assert task["state"] == "done" and task["alert_id"]
    assert engine.get_alert(task["alert_id"]).severity_name == "medium"
    r = client.post("/api/routines/tasks/monthly_inspection:r-1:2026-11/complete",
                    headers={"x-who": "s1"}, json={"notes": "again"})
    assert r.status_code == 409
    full = get("boss", "/api/routines/reports/2026-11")
    assert set(full["towns"]) == {"gufu", "lishi"} and full["district"]["alerts"]["total"] == 1
    town = get("t2", "/api/routines/reports/2026-11")
    assert town["district"] is None and set(town["towns"]) == {"lishi"}
    html = client.get("/api/routines/reports/2026-11-06/html", headers={"x-who": "d1"})
    assert html.status_code == 200 and "<span title='gufu'>gufu</span>" in html.text
    assert "<h2>全区 District" not in html.text and "title='lishi'" not in html.text
    assert client.get("/api/routines/reports/2026-11/html",
                      headers={"x-who": "s1"}).status_code == 403
    assert client.get("/api/routines/reports/bad", headers={"x-who": "boss"}).status_code == 422


def test_completion_input_errors_are_422_with_the_reason_and_conflicts_409(week: Week
                                                                           ) -> None:
    client, routines = week.client, week.routines
    url = "/api/routines/tasks/monthly_inspection:r-1:2026-11/complete"

    def post(body: dict) -> tuple[int, object]:  # type: ignore[type-arg]
        r = client.post(url, headers={"x-who": "s1"}, json=body)
        return r.status_code, r.json().get("detail")

    assert post({"notes": "   "}) == (
        422, "completing a task needs a feedback note (what was found, what was done)")
    code, detail = post({"notes": "seen", "outcome": "fine"})
    assert code == 422 and "outcome must be one of" in str(detail) and "'fine'" in str(detail)
    assert post({"notes": "seen", "outcome": "hazard_found"}) == (
        422, "outcome hazard_found needs a description of the hazard")
    assert post({"notes": "seen", "outcome": "hazard_found", "hazard": "  "}) == (
        422, "outcome hazard_found needs a description of the hazard")
    assert post({"notes": ""})[0] == 422  # the model's own check, as before
    # none of them touched the task
    assert routines.get("monthly_inspection:r-1:2026-11").state == "open"
    assert post({"notes": "seen"})[0] == 200
    # a closed task is a conflict; bad input to it is still bad input
    code, detail = post({"notes": "again"})
    assert code == 409 and "already done" in str(detail)
    assert post({"notes": "again", "outcome": "fine"})[0] == 422
