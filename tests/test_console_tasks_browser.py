"""The tasks page in headless Chromium over a SimClock console with the routines mounted
(no broker): completion forms being filled in survive the language toggle and another
task's completion (the list used to be rebuilt, closing every form and losing its notes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_harness import needs_chromium, serving
from tests.test_console_browser import new_page, sign_in
from tests.test_console_routines import Mounted

pytestmark = needs_chromium


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Mounted, str]]:
    m = Mounted(tmp_path)
    try:
        with serving(m.app) as base:
            yield m, base
    finally:
        m.close()


def test_open_completion_forms_survive_language_and_another_completion(
        browser: Any, served: tuple[Mounted, str]) -> None:
    m, base = served
    carer = m.tiers[1]
    page, errors = new_page(browser)
    sign_in(page, base, carer)
    page.goto(base + "/tasks")
    page.wait_for_selector("body.page-tasks[data-ready='1']")
    ids = page.eval_on_selector_all("li.task", "els => els.map(e => e.dataset.taskId)")
    assert len(ids) >= 3
    a, b = (page.locator(f"li.task[data-task-id='{t}']") for t in ids[:2])
    a.locator("button[data-act='complete']").click()
    a.locator("textarea[name=notes]").fill("A: all fine")
    b.locator("button[data-act='complete']").click()
    b.locator("select[name=outcome]").select_option("concern")
    b.locator("textarea[name=notes]").fill("B: called, ")

    page.click("#cw-lang")  # to English: every card is redrawn in English
    page.wait_for_function("() => document.querySelector('li.task .actions button')"
                           ".innerText === 'Complete'")
    for li, notes in ((a, "A: all fine"), (b, "B: called, ")):
        assert li.locator("form.complete-form").is_visible()
        assert li.locator("textarea[name=notes]").input_value() == notes
        # the form's own words follow the language too
        assert li.locator("button[type=submit]").inner_text() == "Submit"
        assert li.locator("textarea[name=notes]").get_attribute("placeholder") \
            == "Feedback (what was done, what was found)"
    assert b.locator("select[name=outcome]").input_value() == "concern"
    assert b.locator("select[name=outcome] option:checked").inner_text() == "concern"

    # A is completed; while its answer is on its way, staff go on typing B's notes
    held: list[Any] = []
    page.route("**/api/routines/tasks/*/complete",
               lambda route: route.continue_() if held else held.append(route))
    a.locator("button[type=submit]").click()
    b.locator("textarea[name=notes]").click()
    page.keyboard.press("Control+End")
    page.keyboard.type("will ")
    give_up = time.monotonic() + 10
    while not held:  # Playwright dispatches the route handler while it waits
        assert time.monotonic() < give_up, "A's completion was never sent"
        page.wait_for_timeout(20)
    held[0].continue_()
    page.wait_for_selector(f"li.task[data-task-id='{ids[0]}']", state="detached")
    assert m.routines.get(ids[0]).state == "done"
    page.keyboard.type("visit Friday")  # A's card went, B kept its form and the focus
    assert b.locator("select[name=outcome]").input_value() == "concern"
    b.locator("button[type=submit]").click()
    page.wait_for_selector(f"li.task[data-task-id='{ids[1]}']", state="detached")
    done = m.routines.get(ids[1])
    assert done.state == "done" and done.outcome == "concern"
    assert done.notes == "B: called, will visit Friday"
    assert not errors, errors
