"""The console speaks the UI's language beyond its labels, in real headless Chromium:
server error answers by their code (with the server's words for a code the page does not
know), the header's user, and the charts' time axes and legend (times, series names)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.testing import finding
from console.testing import Harness
from tests.browser_harness import ARTIFACTS, needs_chromium, serving
from tests.test_console_browser import new_page, sign_in
from tests.test_console_errors import server_codes

pytestmark = needs_chromium

ALERT_CHANGED = {
    "zh": "操作未执行：该告警的状态已变化（可能已被他人确认、派单或办结），请查看其当前状态",
    "en": "Nothing was done: this alert changed meanwhile (someone else may have acknowledged, "
          "dispatched or resolved it); see its current state",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def wait_until(page: Any, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait (letting the page's events, e.g. dialogs, be handled) until `done()`."""
    for _ in range(int(timeout_s / 0.05)):
        if done():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Harness, str]]:
    h = Harness(tmp_path)
    try:
        with serving(h.app) as base:
            yield h, base
    finally:
        h.close()


def test_error_answers_in_the_ui_language(browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    h.engine.on_findings([finding("fall", [0])], h.clock.now())
    (a,) = h.engine.open_alerts()
    page, errors = new_page(browser)
    # no live stream: the page keeps showing the alert as it was when someone else acts
    page.route("**/api/stream", lambda route: route.abort())
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    try:
        sign_in(page, base, h.tiers[4])
        card = page.locator(f"li.alert[data-alert-id='{a.alert_id}']")
        assert card.get_attribute("data-state") == "open"
        h.engine.ack_alert(a.alert_id, h.tiers[3], h.clock.now())  # the town office was first
        card.locator("button[data-act='ack']").click()
        page.wait_for_selector(f"li.alert[data-alert-id='{a.alert_id}']"
                               "[data-state='acknowledged']")  # re-read after the refusal
        assert dialogs == [ALERT_CHANGED["zh"]]  # the server said "alert is already acknowledged"

        # a code the page does not know: the server's own words
        page.route("**/api/alerts/*/dispatch", lambda route: route.fulfill(
            status=500, content_type="application/json",
            body='{"detail": "the server\'s own words", "code": "something_new"}'))
        card.locator("button[data-act='dispatch']").click()
        wait_until(page, lambda: len(dialogs) == 2)
        assert dialogs[1:] == ["the server's own words"]
        page.unroute("**/api/alerts/*/dispatch")

        page.click("#cw-lang")  # English, and resolved meanwhile by someone else
        h.engine.resolve_alert(a.alert_id, h.tiers[3], h.clock.now(), "上门查看，已处理")
        card.locator("button[data-act='resolve']").click()
        card.locator("textarea").fill("checked")
        card.locator(".resolve-form button[type=submit]").click()
        err = card.locator(".resolve-form .err")
        page.wait_for_function("el => el.textContent !== ''", arg=err.element_handle())
        assert err.inner_text() == ALERT_CHANGED["en"]

        # every code the server can answer with has words in both languages
        for lang in ("zh", "en"):
            got = page.evaluate("([lang, codes]) => { CW.setLang(lang); return codes.map("
                                "(code) => [code, CW.errorText({code, detail: 'SERVER'})]); }",
                                [lang, sorted(server_codes())])
            missing = [code for code, text in got if text == "SERVER"
                       or (lang == "zh") != bool(CJK.search(text))]
            assert not missing, (lang, missing)
        assert not [e for e in errors if "Failed to load resource" not in e], errors
    finally:
        page.close()


def test_the_header_names_the_user_once(browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    page, errors = new_page(browser)
    try:
        sign_in(page, base, h.tiers[4])  # the district centre: its name is its tier's name
        user = page.locator("#cw-user")
        page.wait_for_function("el => el.textContent !== ''", arg=user.element_handle())
        assert user.inner_text() == "区级救助服务中心"
        page.click("#cw-lang")
        assert user.inner_text() == "区级救助服务中心 · district"
        page.click("#cw-lang")
        carer = next(s for s in h.config.staff if s.id == h.tiers[1])
        page.click("#cw-logout")
        page.wait_for_url("**/login")
        sign_in(page, base, carer.id)
        page.wait_for_function("el => el.textContent !== ''", arg=user.element_handle())
        assert user.inner_text() == f"{carer.name} · 服务人员"
        assert not errors, errors
    finally:
        page.close()


# every text uPlot draws on its canvases (axis labels are not in the DOM)
RECORD_CANVAS_TEXT = """
window.__drawn = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
  window.__drawn.push(String(text));
  return fillText.call(this, text, ...rest);
};
"""


def test_chart_times_in_the_ui_language(browser: Any, served: tuple[Harness, str]) -> None:
    h, base = served
    rid = h.config.residents[0].id
    for k in range(30):  # half an hour of readings from 16:00 on 28 November (Shanghai)
        h.publish(0, hr=70 + k % 5, spo2=97, worn=True)
        h.tick(60)
    page, errors = new_page(browser)
    page.add_init_script(RECORD_CANVAS_TEXT)
    try:
        sign_in(page, base, h.tiers[4])
        page.goto(base + f"/residents/{rid}")
        page.wait_for_selector("body.page-resident[data-ready='1']")
        ARTIFACTS.mkdir(exist_ok=True)
        for lang, day, before, time, hr in (("zh", "11月28日", "11月27日", "时间", "心率"),
                                            ("en", "28 Nov", "27 Nov", "Time", "HR")):
            if lang == "en":
                page.evaluate("window.__drawn = []")
                page.click("#cw-lang")
                page.wait_for_function("() => window.__drawn.length > 0")
            drawn = set(page.evaluate("window.__drawn"))
            labels = {line for text in drawn for line in text.split("\n")}
            # 24 h up to 16:30: the first tick and midnight carry the date, the others a time
            assert {day, before} <= labels, (lang, sorted(labels))
            assert any(re.fullmatch(r"(0\d|1\d|2[0-3]):\d\d", x) for x in labels), labels
            # none of uPlot's own labels ("4pm", "11/28"): English, 12-hour
            assert not [x for x in labels if re.search(r"\d(am|pm)$|^\d+/\d+", x)], labels
            over = page.locator(".chart[data-chart='hr'] .u-over")
            box = over.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
            legend = page.locator(".chart[data-chart='hr'] .u-legend .u-series").first
            value = legend.locator(".u-value").inner_text()
            assert legend.locator(".u-label").inner_text() == time
            assert re.fullmatch(re.escape(day) + r" 16:[0-3]\d", value), value
            # other times with a date read as the charts do ("11月28日 16:29:00", not "11/28")
            body = page.inner_text("body")
            assert re.search(re.escape(day) + r" 16:[0-3]\d:\d\d", body), body
            # the series are named in the UI's language, not by their payload keys
            assert page.locator(".chart[data-chart='hr'] .u-legend .u-series").nth(1) \
                .locator(".u-label").inner_text() == hr
            assert page.locator(".chart[data-chart='bp'] .u-legend .u-series .u-label") \
                .all_inner_texts()[1:] == (["收缩压", "舒张压"] if lang == "zh"
                                           else ["Systolic", "Diastolic"])
            page.screenshot(path=str(ARTIFACTS / f"console-resident-charts-{lang}.png"))
        assert not errors, errors
    finally:
        page.close()
