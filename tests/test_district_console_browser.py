"""The district console in real headless Chromium: one page over both workers' towns.

Signed in once at the supervisor's address, the district centre sees falls from both
workers' residents arrive live, acknowledges one (it lands at its owner), and sees a
red banner name the towns of a worker that stops answering (a hung process: SIGSTOP), its
alerts stay on the board marked stale and its residents are listed as not monitored, until
it answers again.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from carewatch.clock import WallClock
from ingest.broker import MosquittoProcess
from tests.browser_harness import ARTIFACTS, needs_chromium
from tests.district_harness import District
from tests.ingest_harness import Client
from tests.test_console_browser import new_page, sign_in

pytestmark = needs_chromium


def test_one_board_over_two_workers(browser: Any, district: District,
                                    mosquitto: MosquittoProcess) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    owner = {t: k for k, p in enumerate(district.parts) for t in p}
    res = [next(r for r in district.config.residents if owner[r.town] == k) for k in range(2)]
    base = f"http://127.0.0.1:{district.http}"
    dev = Client(mosquitto.port, "dev-browser")
    page, errors = new_page(browser)
    try:
        sign_in(page, base, district.staff)
        page.wait_for_selector("#live[data-state='open']")
        page.evaluate("window.__sameDocument = 1")
        for r in res:
            dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        {"ts": WallClock().now(), "fall": True, "worn": True,
                         "hr": 84}).wait_for_publish(5)
        for r in res:
            page.wait_for_selector(f"li.alert[data-resident-id='{r.id}']", timeout=20000)
        assert page.evaluate("window.__sameDocument") == 1  # pushed, not reloaded
        card = page.locator(f"li.alert[data-resident-id='{res[1].id}']")
        card.locator("button[data-act='ack']").click()
        page.wait_for_selector(f"li.alert[data-resident-id='{res[1].id}']"
                               "[data-state='acknowledged']")
        page.screenshot(path=str(ARTIFACTS / "district-console-board.png"))
        os.kill(district.pids[1], signal.SIGSTOP)
        # red, not the yellow of "degraded": that worker's residents are not monitored
        page.wait_for_selector("body[data-monitoring='down']", timeout=20000)
        banner = page.locator("#cw-health").inner_text()
        assert banner.startswith("监测中断：部分居民当前未被监测"), banner
        assert page.locator("#cw-health").evaluate(
            "el => getComputedStyle(el).backgroundColor") == "rgb(255, 77, 79)"
        town_names = {t.id: t.name or t.id for t in district.config.towns}
        assert all(town_names[t] in banner for t in district.parts[1]), banner
        # a re-read of the board while the worker hangs keeps its alert, marked stale
        page.reload()
        page.wait_for_selector(f"li.alert[data-resident-id='{res[1].id}'][data-stale='1']",
                               timeout=20000)
        assert page.locator(f"li.alert[data-resident-id='{res[0].id}'][data-stale]").count() == 0
        # its timers are not running as they were: no countdown ticks on a stale card
        stale_cd = page.locator(f"li.alert[data-resident-id='{res[1].id}'] .countdown")
        assert stale_cd.get_attribute("data-running") == "0"
        page.screenshot(path=str(ARTIFACTS / "district-console-worker-down.png"))
        # the residents page lists that worker's residents as not monitored
        page.goto(base + "/residents")
        page.wait_for_selector("body.page-residents[data-ready='1']", timeout=20000)
        of_1 = [r for r in district.config.residents if owner[r.town] == 1]
        assert page.locator(".rrow.st-unmonitored").count() == len(of_1)
        assert page.locator("#status button[data-status='unmonitored'] b").inner_text() == \
            str(len(of_1))
        page.screenshot(path=str(ARTIFACTS / "district-console-unmonitored.png"))
        # a resident of that worker still has a page: who they are and who looks after
        # them, under a notice that they are not being monitored
        page.locator(f".rrow.st-unmonitored a[href$='/{of_1[0].id}']").first.click()
        page.wait_for_selector("body.page-resident[data-ready='1']", timeout=20000)
        notice = page.locator("#stale")
        assert notice.is_visible() and notice.get_attribute("data-worker") == "1"
        assert "未被监测" in notice.inner_text() or "not being monitored" in notice.inner_text()
        assert (of_1[0].name or of_1[0].id) in page.locator("#name").inner_text()
        page.screenshot(path=str(ARTIFACTS / "district-console-stale-resident.png"))
        page.goto(base + "/")
        page.wait_for_selector("body.page-board[data-ready='1']")
        os.kill(district.pids[1], signal.SIGCONT)
        page.wait_for_selector("body[data-monitoring='ok']", timeout=30000)
        # the stream's resync re-reads the board: fresh again
        page.wait_for_selector(f"li.alert[data-resident-id='{res[1].id}']:not([data-stale])",
                               timeout=30000)
        assert not errors, errors
    finally:
        os.kill(district.pids[1], signal.SIGCONT)  # (again, if the test failed meanwhile)
        page.close()
        dev.close()
