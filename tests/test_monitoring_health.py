"""Whether residents are being monitored at all (`Health.monitoring`, GET /api/health, and
the banner on every console page). Since a broker restart no longer opens a
"device offline" alert for each device, a broker that stays down would leave the board
calm while no one's data arrives; the monitoring state is what tells the on-call room."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from carewatch.clock import WallClock
from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.browser_harness import ARTIFACTS, needs_chromium
from tests.ingest_harness import Client, small_config, wait_for
from tests.test_console_server import carer_console, signed_in, vitals_topic


def _codes(m: dict[str, Any]) -> list[str]:
    return [p["code"] for p in m["problems"]]


def test_monitoring_follows_the_broker_link_and_the_feed(mosquitto: MosquittoProcess,
                                                         tmp_path: Path) -> None:
    config = small_config(residents=2)
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-mon"),
                      data_dir=tmp_path)
    service.health.cache_s = 0.0  # every look is a new one (one answer per 2 s otherwise)
    before = service.monitoring()
    assert before["state"] == "down" and "pipeline_stopped" in _codes(before)
    service.start()
    dev = Client(mosquitto.port, "dev-mon")
    try:
        wait_for(lambda: service.edge.counters.subscribed, 10, "subscribed")
        up = service.monitoring()
        assert (up["state"], up["problems"]) == ("ok", [])

        mosquitto.stop()
        wait_for(lambda: service.monitoring()["state"] == "down", 15, "monitoring down")
        m = service.monitoring()
        assert _codes(m) == ["broker_link_down"], m
        lost = service.edge.counters.link_lost_at
        assert m["problems"][0]["since"] == lost and lost <= m["now"]

        mosquitto.start()
        wait_for(lambda: service.monitoring()["state"] == "ok", 30, "monitoring back")

        # a feed that goes quiet: nothing received for no_data_s is "no data", since the
        # last look that saw the received counter move
        service.health.no_data_s = 0.3
        r = config.residents[0]
        dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                    {"ts": WallClock().now(), "hr": 70, "worn": True}).wait_for_publish(5)
        wait_for(lambda: service.edge.counters.received >= 1, 10, "the sample received")
        seen = service.monitoring()
        assert "no_data" not in _codes(seen)
        wait_for(lambda: "no_data" in _codes(service.monitoring()), 10, "no data")
        quiet = service.monitoring()
        assert quiet["state"] == "down"
        assert quiet["problems"][0]["since"] == seen["now"]  # the look that saw it move
        dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                    {"ts": WallClock().now(), "hr": 71, "worn": True}).wait_for_publish(5)
        wait_for(lambda: service.monitoring()["state"] == "ok", 10, "data again")
    finally:
        dev.close()
        service.stop()


def test_api_health_needs_a_session_and_reports_degradation(mosquitto: MosquittoProcess,
                                                             tmp_path: Path) -> None:
    _, carer, service, base = carer_console(tmp_path, mosquitto.url, residents=6, towns=2)
    client, _ = signed_in(base, carer)
    try:
        assert httpx.get(base + "/api/health").status_code == 401
        wait_for(lambda: client.get("/api/health").json()["state"] == "ok", 10, "ok")
        # one look serves every console for cache_s: asked again at once, the same answer
        assert service.monitoring() is service.monitoring()
        service.edge.counters.inbox_dropped += 5  # the edge shed vitals (as under overload)
        wait_for(lambda: client.get("/api/health").json()["state"] == "degraded", 10,
                 "degraded once the cached answer expires")
        body = client.get("/api/health").json()
        assert body["problems"] == [{"code": "inbox_shedding", "level": "degraded",
                                     "since": None, "detail": "inbox shedding vitals"}]
    finally:
        client.close()
        service.stop()


@needs_chromium
def test_every_page_shows_when_monitoring_is_down(browser: Any, mosquitto: MosquittoProcess,
                                                  tmp_path: Path) -> None:
    from tests.test_console_browser import new_page, sign_in

    config, carer, service, base = carer_console(tmp_path, mosquitto.url, residents=6, towns=2)
    dev = Client(mosquitto.port, "dev-banner")
    page, errors = new_page(browser)
    stopped = False
    try:
        dev.publish(vitals_topic(config, 0),
                    {"ts": WallClock().now(), "hr": 70, "worn": True}).wait_for_publish(5)
        sign_in(page, base, carer)
        page.wait_for_selector("body[data-monitoring='ok']")
        banner = page.locator("#cw-health")
        assert banner.is_hidden()

        mosquitto.stop()
        page.wait_for_selector("body[data-monitoring='down']", timeout=15000)
        assert banner.is_visible()
        text = banner.inner_text()
        assert "监测中断" in text and "与设备消息代理的连接已断开" in text, text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-monitoring-down.png"))
        page.click("header nav a[href='/residents']")  # every page, not just the board
        page.wait_for_selector("body.page-residents[data-monitoring='down']", timeout=15000)
        page.click("#cw-lang")
        assert "link to the device broker is down" in banner.inner_text()
        page.click("#cw-lang")

        mosquitto.start()
        page.wait_for_selector("body[data-monitoring='ok']", timeout=30000)
        assert banner.is_hidden()

        service.stop()  # the console's own server gone: the page must not look current
        stopped = True
        page.wait_for_selector("body[data-monitoring='unreachable']", timeout=15000)
        assert "与监护平台服务器的连接已中断" in banner.inner_text()
        assert not [e for e in errors if "Failed to load resource" not in e
                    and "ERR_CONNECTION_REFUSED" not in e], errors
    finally:
        page.close()
        dev.close()
        if not stopped:
            service.stop()


def test_a_broker_queue_limit_dropping_our_session_shows_as_degraded(tmp_path: Path) -> None:
    # Mosquitto's stock `max_queued_messages` is 1,000 (100 here, to keep it small): a
    # pipeline away for longer than that loses the rest at the broker. It cannot get them
    # back; it can say so, from the broker's own dropped-messages counter.
    broker = MosquittoProcess(workdir=tmp_path / "mosq", extra_conf="max_queued_messages 100")
    broker.start()
    config = small_config(residents=2)
    settings = BrokerSettings(url=broker.url, client_id="cw-limit")
    try:
        first = Service(config, broker=settings, data_dir=tmp_path / "data")
        first.start()
        assert first.edge.wait_connected(10)
        first.stop()
        dev = Client(broker.port, "dev-limit")
        r = config.residents[0]
        now = WallClock().now()
        try:
            infos = [dev.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                                 {"ts": now - 300 + i, "seq": i, "hr": 70, "worn": True})
                     for i in range(250)]
            for info in infos:
                info.wait_for_publish(10)
        finally:
            dev.close()
        second = Service(config, broker=settings, data_dir=tmp_path / "data")
        second.health.cache_s = 0.0
        second.start()
        try:
            wait_for(lambda: second.pipeline.store.samples_total[0] == 100, 15, "the queue")
            wait_for(lambda: "broker_dropping" in _codes(second.monitoring()), 15,
                     "the broker's dropped counter")
            assert second.monitoring()["state"] == "degraded"
            assert second.edge.counters.broker_dropped >= 150
        finally:
            second.stop()
    finally:
        broker.close()


@needs_chromium
def test_a_silent_worker_is_a_red_banner_naming_its_towns(browser: Any, tmp_path: Path) -> None:
    """The district console answers "degraded" while one worker is silent (the other towns
    are watched), but that worker's residents are not monitored at all: the banner is red
    and names its towns (or the worker); other degraded causes stay yellow."""
    import orjson

    from console.federation import WorkerDown, merge_health
    from console.server import ConsoleServer
    from console.testing import Harness
    from tests.test_console_browser import new_page, sign_in

    h = Harness(tmp_path)
    server = ConsoleServer(h.app, "127.0.0.1", 0)
    server.start()
    base = "http://{}:{}".format(*server.address)
    now = h.clock.now()
    names = {t.id: t.name or t.id for t in h.config.towns}
    t1, t2 = list(names)[:2]
    lagging = {"state": "degraded", "problems": [{"code": "ingest_lagging", "level": "degraded",
                                                  "since": None, "detail": "40 s"}]}
    silent = WorkerDown(1, (t1, t2), "ReadTimeout", since=now - 95)
    answer = {"doc": merge_health({0: lagging}, [silent], now, names)}
    assert answer["doc"]["state"] == "degraded"  # the API's merged state is unchanged
    page, errors = new_page(browser)
    page.route("**/api/health", lambda route: route.fulfill(
        status=200, content_type="application/json", body=orjson.dumps(answer["doc"])))
    red, yellow = "rgb(255, 77, 79)", "rgb(255, 209, 102)"
    banner = page.locator("#cw-health")
    try:
        sign_in(page, base, h.tiers[4])
        page.wait_for_selector("body[data-monitoring='down']")
        assert banner.evaluate("el => getComputedStyle(el).backgroundColor") == red
        text = banner.inner_text()
        assert text.startswith("监测中断：部分居民当前未被监测"), text
        towns = f"监测进程无响应，以下镇街未被监测：{names[t1]}、{names[t2]}（自 "
        assert towns in text and "已持续 1:35" in text, text
        assert text.index(towns) < text.index("数据处理积压"), text  # unmonitored first
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-worker-down-banner.png"))
        page.click("#cw-lang")
        assert banner.inner_text().startswith(
            "Monitoring down: some residents are not being monitored"), banner.inner_text()
        assert f"these towns are not monitored: {names[t1]}, {names[t2]}" in banner.inner_text()
        page.click("#cw-lang")

        answer["doc"] = merge_health({0: lagging, 1: lagging}, [], now, names)
        page.wait_for_selector("body[data-monitoring='degraded']", timeout=15000)
        assert banner.evaluate("el => getComputedStyle(el).backgroundColor") == yellow
        assert banner.inner_text().startswith("监测降级"), banner.inner_text()

        # a silent worker whose towns are not known here: named by its number
        answer["doc"] = merge_health({0: {"state": "ok", "problems": []}},
                                     [WorkerDown(1, (), "ReadTimeout", since=now - 5)], now)
        page.wait_for_selector("body[data-monitoring='down']", timeout=15000)
        assert "监测进程无响应，以下镇街未被监测（监测进程 1）" in banner.inner_text()
        assert not errors, errors
    finally:
        page.close()
        server.stop()
        h.close()


def test_a_pipeline_thread_alive_but_stuck_is_down(mosquitto: MosquittoProcess,
                                                   tmp_path: Path) -> None:
    """A hung pipeline thread runs no detector while the feed, counted on paho's thread,
    looks fine: it was only "degraded" (lagging) and paged no one."""
    config = small_config(residents=2)
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-stall"),
                      data_dir=tmp_path)
    service.health.cache_s = 0.0
    service.health.stall_s = 0.5
    release = threading.Event()
    service.start()
    try:
        wait_for(lambda: service.monitoring()["state"] == "ok", 10, "monitoring up")
        service.submit(lambda: release.wait(30))  # a call that never returns, in effect
        wait_for(lambda: "pipeline_stalled" in _codes(service.monitoring()), 10, "stalled")
        m = service.monitoring()
        assert m["state"] == "down" and service._thread.is_alive()
        release.set()
        wait_for(lambda: service.monitoring()["state"] == "ok", 10, "turning again")
    finally:
        release.set()
        service.stop()
