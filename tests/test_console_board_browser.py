"""The alert board in headless Chromium over a SimClock console (no broker): what staff are
typing survives pushes and re-sorts, a severity raised to critical beeps, and a tier-4
countdown does not sit at 0:00 after a re-notification (which pushes nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.testing import finding
from console.testing import Harness
from tests.browser_harness import needs_chromium, serving
from tests.test_console_browser import new_page, sign_in

pytestmark = needs_chromium


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Harness, str]]:
    h = Harness(tmp_path)
    try:
        with serving(h.app) as base:
            yield h, base
    finally:
        h.close()


def open_board(page: Any, base: str, h: Harness) -> None:
    """Sign the district in and wait until the live stream's first re-read has answered
    (the initial load and the one on connect), so no re-read is still on its way."""
    sign_in(page, base, h.tiers[4])
    page.wait_for_selector("#live[data-state='open']")
    page.wait_for_function("() => Number(document.body.dataset.loads) >= 2")


def card(page: Any, alert_id: str) -> Any:
    return page.locator(f"li.alert[data-alert-id='{alert_id}']")


def test_notes_being_typed_survive_a_push_and_a_resort(
        browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    h.engine.on_findings([finding("fall", [0, 1])], h.clock.now())
    a, b = sorted(h.engine.open_alerts(), key=lambda x: x.alert_id)  # the board's order
    page, errors = new_page(browser)
    open_board(page, base, h)
    card(page, a.alert_id).locator("button[data-act='resolve']").click()
    card(page, b.alert_id).locator("button[data-act='resolve']").click()
    card(page, b.alert_id).locator("textarea").fill("note for B")
    card(page, a.alert_id).locator("textarea").click()
    page.keyboard.type("Went to ")

    # another resident's alert is pushed while staff type in A (opened later: listed last)
    h.clock.advance(10)
    h.engine.on_findings([finding("hypoxemia", [2])], h.clock.now())
    page.wait_for_function("() => document.querySelectorAll('li.alert').length === 3")
    page.keyboard.type("the flat")  # keystrokes after the push still land in A
    assert card(page, a.alert_id).locator("textarea").input_value() == "Went to the flat"
    assert card(page, b.alert_id).locator("form.resolve-form").is_visible()
    assert card(page, b.alert_id).locator("textarea").input_value() == "note for B"

    # now typing in B with the caret at its start, someone else acknowledges A: A drops
    # to the bottom and B's card moves to the top under the caret
    card(page, b.alert_id).locator("textarea").click()
    page.keyboard.press("Control+Home")
    h.engine.ack_alert(a.alert_id, h.tiers[3], h.clock.now())
    page.wait_for_function("id => document.querySelector('li.alert').dataset.alertId === id",
                           arg=b.alert_id)
    page.keyboard.type("Urgent: ")
    assert card(page, b.alert_id).locator("textarea").input_value() == "Urgent: note for B"
    assert card(page, a.alert_id).get_attribute("data-state") == "acknowledged"
    assert card(page, a.alert_id).locator("textarea").input_value() == "Went to the flat"

    # the open forms follow the language like the rest of the card, keeping their text
    page.click("#cw-lang")
    assert card(page, a.alert_id).locator("textarea").get_attribute("placeholder") \
        == "Feedback (what was found, what was done)"
    assert card(page, a.alert_id).locator("button[type=submit]").inner_text() == "Submit"
    assert card(page, a.alert_id).locator("textarea").input_value() == "Went to the flat"
    assert not errors, errors


def test_a_severity_raised_to_critical_beeps(browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    page, errors = new_page(browser)
    open_board(page, base, h)
    beeps = "() => document.body.dataset.newCritical"
    h.engine.on_findings([finding("hypoxemia", [0], severity=3)], h.clock.now())  # high
    page.wait_for_selector("li.alert[data-severity='high']")
    assert page.evaluate(beeps) is None

    h.clock.advance(30)
    h.engine.on_findings([finding("hypoxemia", [0], severity=4)], h.clock.now())  # critical
    page.wait_for_selector("li.alert[data-severity='critical']")
    assert page.evaluate(beeps) == "1"

    # the same critical alert escalating is not news: no second beep
    (alert,) = h.engine.open_alerts()
    assert alert.deadline is not None
    h.tick(alert.deadline - h.clock.now())
    page.wait_for_selector("li.alert .countdown[data-tier='2']")
    assert page.evaluate(beeps) == "1"

    # an acknowledged alert raised to critical needs no one: no beep
    h.engine.on_findings([finding("hypoxemia", [1], severity=3)], h.clock.now())
    page.wait_for_function("() => document.querySelectorAll('li.alert').length === 2")
    other = next(x for x in h.engine.open_alerts() if x.alert_id != alert.alert_id)
    h.engine.ack_alert(other.alert_id, h.tiers[4], h.clock.now())
    h.clock.advance(30)
    h.engine.on_findings([finding("hypoxemia", [1], severity=4)], h.clock.now())
    page.wait_for_selector(f"li.alert[data-alert-id='{other.alert_id}'][data-severity='critical']")
    assert page.evaluate(beeps) == "1"

    h.engine.on_findings([finding("fall", [2])], h.clock.now())  # a new critical alert
    page.wait_for_function("() => document.querySelectorAll('li.alert').length === 3")
    assert page.evaluate(beeps) == "2"
    assert not errors, errors


def test_tier4_countdown_after_a_renotification(browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    (alert,) = h.engine.open_alerts()
    while alert.tier < 4:  # tiers 2, 3, 4, one acknowledgement time (2 min) each
        assert alert.deadline is not None
        h.tick(alert.deadline - h.clock.now())
        alert = h.engine.get_alert(alert.alert_id)
    deadline = alert.deadline
    assert deadline is not None
    h.tick(deadline - 5 - h.clock.now())  # the board opens 5 s before the re-notification

    page, errors = new_page(browser)
    open_board(page, base, h)
    cd = page.locator("li.alert .countdown")
    assert cd.inner_text().startswith("距再次通知")
    assert float(cd.get_attribute("data-deadline")) == deadline
    loads = int(page.evaluate("document.body.dataset.loads"))

    # the engine re-notifies and moves the deadline on by a period; nothing is pushed
    h.tick(deadline + 1 - h.clock.now())
    moved = h.engine.get_alert(alert.alert_id)
    assert moved.renotified == 1 and moved.deadline == deadline + 120

    # once the board's clock passes the deadline, it says so instead of "0:00" ...
    page.wait_for_function(
        "() => document.querySelector('li.alert .countdown').innerText === '正在再次通知'",
        timeout=15000)
    # ... and soon re-reads the new deadline (well before the 60 s safety re-read)
    page.wait_for_function(
        "d => Number(document.querySelector('li.alert .countdown').dataset.deadline) === d",
        arg=deadline + 120, timeout=15000)
    assert int(page.evaluate("document.body.dataset.loads")) == loads + 1
    page.wait_for_function(
        "() => /^距再次通知 1:[0-5][0-9]$/.test("
        "document.querySelector('li.alert .countdown').innerText)", timeout=5000)
    assert not errors, errors
