"""Error answers carry a `code` beside the English `detail` (`console.errors`), so that the
pages can say what went wrong in the user's language (common.js `e_<code>`; the browser
side is tests/test_console_language_browser.py)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette: "use httpx2"; httpx is what is installed
    from fastapi.testclient import TestClient

from alerts.testing import finding
from carewatch.clock import SimClock
from console.errors import STATUS_CODES
from console.settings import ConsoleSettings
from console.testing import Harness
from tests.test_console_api import login, outside
from tests.test_console_routines import MONTH, Mounted

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, settings=ConsoleSettings(auth_clock=SimClock(0.0)))
    try:
        yield harness
    finally:
        harness.close()


def refusal(r: Any) -> tuple[int, str]:
    body = r.json()
    assert isinstance(body.get("detail"), str | list) and body["detail"], body  # the words
    return r.status_code, body["code"]


def test_console_errors_name_their_reason(h: Harness) -> None:
    with TestClient(h.app) as client:
        console_refusals(h, client)


def console_refusals(h: Harness, client: TestClient) -> None:
    assert refusal(client.get("/api/alerts")) == (401, "unauthorized")
    r = client.post("/api/login", json={"staff_id": h.tiers[4], "password": "wrong-password"})
    assert refusal(r) == (401, "login_failed")
    csrf = login(client, h.tiers[1])
    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    (a,) = h.engine.open_alerts()
    assert refusal(client.post(f"/api/alerts/{a.alert_id}/ack")) == (403, "csrf")
    act = {"X-CSRF-Token": csrf}
    rid = h.config.residents[outside(h, h.tiers[1])].id
    assert refusal(client.get(f"/api/residents/{rid}")) == (403, "forbidden")
    assert refusal(client.get("/api/alerts/no-such-alert")) == (404, "not_found")
    assert client.post(f"/api/alerts/{a.alert_id}/ack", headers=act).status_code == 200
    # someone acted first: the life cycle refuses, and says so (English words stay in detail)
    again = client.post(f"/api/alerts/{a.alert_id}/ack", headers=act)
    assert refusal(again) == (409, "alert_changed")
    assert again.json()["detail"] == "alert is already acknowledged"
    blank = client.post(f"/api/alerts/{a.alert_id}/resolve", json={"note": "  "}, headers=act)
    assert refusal(blank) == (422, "invalid") and isinstance(blank.json()["detail"], list)
    assert refusal(client.get("/api/no-such-route")) == (404, "not_found")


def test_task_refusals_name_their_reason(tmp_path: Path) -> None:
    m = Mounted(tmp_path)
    try:
        with TestClient(m.app) as c:
            task_refusals(m, c)
    finally:
        m.close()


def task_refusals(m: Mounted, c: TestClient) -> None:
    csrf = login(c, m.tiers[1])
    hdr = {"X-CSRF-Token": csrf}
    rid = m.config.residents[0].id
    url = f"/api/routines/tasks/monthly_inspection:{rid}:{MONTH}/complete"
    r = c.post(url, json={"outcome": "hazard_found", "notes": "排查完成"}, headers=hdr)
    assert refusal(r) == (422, "hazard_required")
    assert refusal(c.post(url, json={"notes": "  "}, headers=hdr)) == (422, "notes_required")
    assert refusal(c.post(url, json={"outcome": "nope", "notes": "x"}, headers=hdr)) == (
        422, "invalid")
    assert c.post(url, json={"notes": "排查完成"}, headers=hdr).status_code == 200
    assert refusal(c.post(url, json={"notes": "again"}, headers=hdr)) == (409, "task_closed")


def server_codes() -> set[str]:
    """Every error code the console's server can answer with, found in its source."""
    found = set(STATUS_CODES.values())
    patterns = [r'ApiError\(\s*\d+,\s*"(\w+)"', r'error_response\(\s*\d+,\s*"(\w+)"',
                r'JSONResponse\(\{[^}]*"code":\s*"(\w+)"', r'doc = \{[^}]*"code":\s*"(\w+)"',
                r'Task(?:Input)?Error\([^()]*?(?:\([^()]*\)[^()]*?)*,\s*"(\w+)"\)',
                r'code: str = "(\w+)"']
    for path in [*ROOT.glob("console/*.py"), *ROOT.glob("routines/*.py")]:
        text = path.read_text()
        for p in patterns:
            found |= set(re.findall(p, text, re.S))
    # the scan must see the codes this change added, or it proves nothing
    assert {"alert_changed", "csrf", "worker_down", "past_deadline", "task_closed",
            "task_missed", "task_refused", "hazard_required", "notes_required",
            "unavailable", "no_report", "login_failed"} <= found, found
    return found


def test_the_code_scan_finds_every_code() -> None:
    assert server_codes() >= {"unauthorized", "forbidden", "not_found", "invalid", "conflict"}
