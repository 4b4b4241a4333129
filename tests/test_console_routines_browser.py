"""The 任务 / 报告 pages in real headless Chromium (Debian's /usr/bin/chromium via Playwright),
over a real Service (Mosquitto, pipeline thread, APScheduler-woken routines).

The signed-in carer opens the tasks page from the header, sees their tasks, completes one
with feedback and a hazard (an alert opens), then opens the monthly report inline. The
screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from carewatch.service import Service
from config.models import Config
from console.testing import set_passwords, staff_of_each_tier
from ingest.broker import MosquittoProcess
from tests.browser_harness import ARTIFACTS, needs_chromium
from tests.ingest_harness import wait_for
from tests.test_console_browser import new_page, sign_in
from tests.test_console_server import carer_console, service_config, start_service

pytestmark = needs_chromium


def carer_with_tasks(tmp_path: Path, mosquitto: MosquittoProcess
                     ) -> tuple[Config, str, Service, str, Any]:
    """A carer's console over a started Service: (config, carer, service, base URL,
    routines), once the first start has issued the running week's and month's tasks
    (APScheduler's first wake) and the carer has some."""
    config, carer, service, base = carer_console(tmp_path, mosquitto.url)
    routines = service.routines
    assert routines is not None
    wait_for(lambda: len(routines.my_tasks(carer, routines.clock.now())) > 0,
             what="the carer's routine tasks")
    return config, carer, service, base, routines


def test_tasks_complete_with_hazard_and_monthly_report(
        browser: Any, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    config, carer, service, base, routines = carer_with_tasks(tmp_path, mosquitto)
    page, errors = new_page(browser)
    try:
        sign_in(page, base, carer)
        page.click("header nav a[href='/tasks']")
        page.wait_for_selector("body.page-tasks[data-ready='1']")
        mine = routines.my_tasks(carer, routines.clock.now())
        assert page.locator("li.task").count() == len(mine)
        shown = set(page.eval_on_selector_all("li.task", "els => els.map(e => e.dataset.taskId)"))
        assert shown == {t.task_id for t in mine}
        page.screenshot(path=str(ARTIFACTS / "console-tasks.png"), full_page=True)

        # an inspection, or (a first start on a 1st before 08:00 issues none) another task
        target = next((t for t in mine if t.kind == "monthly_inspection"), mine[0])
        li = page.locator(f"li.task[data-task-id='{target.task_id}']")
        li.locator("button[data-act='complete']").click()
        li.locator("button[type=submit]").click()  # no feedback yet: refused in the page
        assert li.locator(".err").inner_text() != ""
        assert routines.get(target.task_id).state == "open"
        li.locator("textarea[name=notes]").fill("上门排查：厨房燃气软管老化")
        li.locator("textarea[name=hazard]").fill("燃气软管老化，需更换")
        li.locator("select[name=hazard_severity]").select_option("medium")
        li.locator("button[type=submit]").click()
        page.wait_for_selector(f"li.task[data-task-id='{target.task_id}']", state="detached")
        page.wait_for_selector("#notice:not([hidden])")
        done = routines.get(target.task_id)
        assert done.state in ("done", "late") and done.completed_by == carer
        assert done.outcome == "hazard_found" and done.alert_id
        assert page.evaluate("document.body.dataset.lastAlert") == done.alert_id
        alert = service.pipeline.alerts.get_alert(done.alert_id)  # type: ignore[union-attr]
        assert alert.kind == "hazard" and alert.resident_id == target.resident_id

        # the board's card names the kind and says what was found
        page.click("header nav a[href='/']")
        page.wait_for_selector("body.page-board[data-ready='1']")
        card = page.locator(f"li.alert[data-alert-id='{done.alert_id}']")
        assert card.locator(".kind").inner_text() == "安全隐患"
        assert card.locator(".evidence").inner_text() == "发现安全隐患：燃气软管老化，需更换"
        page.goto(base + "/tasks")
        page.wait_for_selector("body.page-tasks[data-ready='1']")

        page.click("#views button[data-view='overdue']")
        page.wait_for_function("() => new URL(location.href).searchParams.get('view') === "
                               "'overdue'")
        overdue = [t for t in routines.open_tasks() if t.overdue(routines.clock.now())
                   and (t.owner == carer or carer in t.on_duty)]
        page.wait_for_function("n => document.querySelectorAll('li.task').length === n",
                               arg=len(overdue))

        page.click("header nav a[href='/reports']")
        page.wait_for_selector("body.page-reports[data-ready='1']")
        month = page.input_value("#month")
        assert page.evaluate("document.body.dataset.report") == month
        frame = page.frame_locator("iframe#report")
        title = frame.locator("h1").inner_text()
        assert title.startswith("月度监管报告 Monthly supervision report")
        assert frame.locator("svg").count() > 0  # the report's charts
        town = config.residents[0].town
        assert page.input_value("#town") == town  # tier 1: its institution's town(s) only
        assert page.get_attribute("#dl-html", "href") == \
            f"/api/routines/reports/{month}/html?town={town}"
        page.screenshot(path=str(ARTIFACTS / "console-report-month.png"), full_page=True)

        # a phone: nothing wider than the screen on the tasks page
        phone, _ = new_page(browser, 390, 800)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(base + "/tasks")
        phone.wait_for_selector("body.page-tasks[data-ready='1']")
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, overflow
        phone.screenshot(path=str(ARTIFACTS / "console-tasks-phone.png"))
        phone.close()
        assert not errors, errors
    finally:
        page.close()
        service.stop()


def test_a_tab_never_shows_an_earlier_tabs_answer(
        browser: Any, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    """Overdue clicked, then back to my tasks before the overdue answer came: when it comes,
    late, the page still lists my tasks (before, the last answer to arrive won)."""
    _config, carer, service, base, routines = carer_with_tasks(tmp_path, mosquitto)
    page, errors = new_page(browser)
    held: list[tuple[Any, Any]] = []

    def hold_overdue(route: Any) -> None:
        if "view=overdue" in route.request.url and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    def shown() -> set[str]:
        return set(page.eval_on_selector_all("li.task", "els => els.map(e => e.dataset.taskId)"))

    try:
        sign_in(page, base, carer)
        page.goto(base + "/tasks")
        page.wait_for_selector("body.page-tasks[data-ready='1']")
        mine = shown()
        assert mine == {t.task_id for t in routines.my_tasks(carer, routines.clock.now())}
        page.route(re.compile(r"/api/routines/tasks\?"), hold_overdue)
        answers = int(page.evaluate("Number(document.body.dataset.loads)"))
        page.click("#views button[data-view='overdue']")
        deadline = time.monotonic() + 10
        while not held:  # Playwright dispatches the route handler while it waits
            assert time.monotonic() < deadline, "the overdue tab never asked"
            page.wait_for_timeout(20)
        page.click("#views button[data-view='mine']")
        page.wait_for_function("n => Number(document.body.dataset.loads) >= n",
                               arg=answers + 1, timeout=10000)
        assert shown() == mine
        route, answer = held[0]
        overdue = {t["task_id"] for t in json.loads(answer.text())["tasks"]}
        assert overdue != mine  # else the late answer could not show anything wrong
        route.fulfill(response=answer)
        page.wait_for_function("n => Number(document.body.dataset.loads) >= n",
                               arg=answers + 2, timeout=10000)
        assert shown() == mine
        assert not errors, errors
    finally:
        page.close()
        service.stop()


def test_district_my_tasks_says_why_it_is_empty(
        browser: Any, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    config = service_config(tmp_path, residents=12, towns=2)
    district = staff_of_each_tier(config)[4]
    set_passwords(tmp_path / "users.json", config, [district])
    service = start_service(config, mosquitto.url, tmp_path)
    host, port = service.http.address
    base = f"http://{host}:{port}"
    routines = service.routines
    assert routines is not None
    wait_for(lambda: len(routines.open_tasks()) > 0, what="the first start's tasks")
    page, errors = new_page(browser)
    try:
        sign_in(page, base, district)
        page.goto(base + "/tasks")
        page.wait_for_selector("body.page-tasks[data-ready='1']")
        # tier 4 is above routines.max_tier (3): no own tasks, by design, and the tab says so
        assert page.locator("li.task").count() == 0
        assert page.is_hidden("#empty") and page.is_visible("#mine-note")
        text = page.locator("#mine-note span").inner_text()
        assert "第 3 级" in text and "镇（街道）民政办" in text and "逾期 0 项" in text
        page.click("#mine-note a")
        page.wait_for_selector("body.page-tasks[data-ready='1']")
        assert page.evaluate("new URL(location.href).searchParams.get('view')") == "overdue"
        assert page.is_hidden("#mine-note")
        assert not errors, errors
    finally:
        page.close()
        service.stop()
