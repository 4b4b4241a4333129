"""Overload: a stalled pipeline sheds vitals but never falls, counts it, and says degraded;
and no secret or health value reaches the logs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from carewatch.app import build_pipeline
from carewatch.clock import WallClock
from carewatch.health import Health
from carewatch.http import MetricsServer
from carewatch.security.acl import PIPELINE_USER
from carewatch.security.provision import GatewaySpec, provision
from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from simulators.fleet import make_client
from tests.ingest_harness import Client, small_config, wait_for


def test_stalled_pipeline_sheds_vitals_keeps_falls_and_reports_degraded(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    config = small_config(residents=6, towns=2, pipeline={"queue_max": 100, "linger_ms": 0})
    gate, blocked = threading.Event(), threading.Event()

    def slow_build(cfg: Any, clock: Any, publisher: Any, **kw: Any) -> Any:
        pipeline, close = build_pipeline(cfg, clock, publisher, **kw)
        handle = pipeline.handle

        def stalled(messages: list[tuple[str, bytes, float]]) -> None:
            blocked.set()
            assert gate.wait(60), "the test never released the pipeline"
            handle(messages)

        pipeline.handle = stalled  # type: ignore[method-assign]
        return pipeline, close

    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-over"),
                      data_dir=tmp_path / "d", build=slow_build)
    service.edge.inbox_wait_s = 0.01  # shed at once instead of waiting 2 s per message
    health = Health(service)
    health.register(service.pipeline.metrics.registry)
    http = MetricsServer("127.0.0.1", 0, service.pipeline.metrics.registry, health.ready)
    http.start()
    service.start()
    pub = Client(mosquitto.port, "over-pub")
    topics = [f"carewatch/v1/{r.town}/{r.device}/vitals" for r in config.residents]
    now = WallClock().now()
    try:
        assert service.edge.wait_connected(10)
        wait_for(lambda: bool(service.edge.counters.subscribed), 10, "SUBACK")
        pub.publish(topics[0], {"ts": now - 100, "seq": 0, "hr": 70}).wait_for_publish(5)
        assert blocked.wait(10)
        # 100 fill the inbox; of the rest only vitals without a fall may be shed
        seq = 1
        for i in range(153):
            row = 1 + (i - 130) if 130 <= i < 133 else 0
            doc: dict[str, Any] = {"ts": now - 100 + seq, "seq": seq, "hr": 70, "worn": True}
            if row:
                doc["fall"] = True
            pub.publish(topics[row], doc)
            seq += 1
        c = service.edge.counters
        wait_for(lambda: c.received == 154, 20, "every message at the edge")
        # received is counted before the keep/shed decision: wait for every decision
        # (the stalled pipeline holds exactly message 0: it was drained alone)
        wait_for(lambda: c.received - c.inbox_dropped - len(service.edge.inbox) == 1, 10,
                 "every message kept or shed")
        # how many are shed depends on how paho batches packets; never a fall
        assert c.inbox_dropped >= 1
        falls_waiting = [m for m in service.edge.inbox if b'"fall":true' in m[1]]
        assert len(falls_waiting) == 3
        shed = c.inbox_dropped
        ready = httpx.get(f"http://127.0.0.1:{http.address[1]}/readyz", timeout=5).json()
        assert ready["ready"] is True and "inbox shedding vitals" in ready["status"]
        gate.set()
        alerts: Any = service.pipeline.alerts
        wait_for(lambda: {a.resident_id for a in alerts.open_alerts() if a.kind == "fall"}
                 == {config.residents[r].id for r in (1, 2, 3)}, 20, "three fall alerts")
        metrics = httpx.get(f"http://127.0.0.1:{http.address[1]}/metrics", timeout=5).text
        assert f"carewatch_inbox_shed_total {shed}.0" in metrics
        assert 'carewatch_alerts_open{severity="critical",state="open",tier="1"} 3.0' in metrics
    finally:
        gate.set()
        pub.close()
        service.stop()
        http.stop()


def test_no_secret_or_health_value_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config(residents=3, towns=1)
    creds = provision(config, tmp_path / "creds", gateways=[GatewaySpec("gw")])
    broker = MosquittoProcess(workdir=tmp_path / "mosq", auth=creds.auth)
    broker.start()
    secrets = [creds.secret_path(u).read_text().strip() for u in (PIPELINE_USER, "svc.gateway-gw")]
    monkeypatch.setenv("CAREWATCH_COMMAND_SECRET", "cmd-secret-0f9e8d7c6b5a")
    monkeypatch.setenv("CAREWATCH_WEBHOOK_SECRET", "hook-secret-1a2b3c4d5e6f")
    secrets += ["cmd-secret-0f9e8d7c6b5a", "hook-secret-1a2b3c4d5e6f"]
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("wrong-password-7766554433\n")
    secrets.append("wrong-password-7766554433")
    caplog.set_level(logging.DEBUG)
    try:
        # refused first (a wrong password), then the real service
        bad = Service(config, broker=BrokerSettings(url=broker.url, username=PIPELINE_USER,
                                                    password_file=str(wrong), client_id="cw-bad"),
                      data_dir=tmp_path / "bad")
        bad.start()
        wait_for(lambda: bool(bad.edge.counters.last_disconnect_reason), 10, "a refusal")
        bad.stop()
        svc = Service(config, broker=BrokerSettings(
            url=broker.url, username=PIPELINE_USER, client_id="cw-good",
            password_file=str(creds.secret_path(PIPELINE_USER))), data_dir=tmp_path / "good")
        svc.start()
        wait_for(lambda: bool(svc.edge.counters.subscribed), 10, "the pipeline's subscription")
        gw_pw = str(creds.secret_path("svc.gateway-gw"))
        gw = make_client(BrokerSettings(url=broker.url, username="svc.gateway-gw",
                                        password_file=gw_pw), "gw")
        r = config.residents[0]
        topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
        now = WallClock().now()
        for body in [{"ts": now - 5, "hr": 187.25, "spo2": 61.75, "worn": True, "fall": True},
                     {"ts": "187.25", "hr": 187.25}, {"ts": now + 9999, "hr": 187.25}]:
            gw.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(5)
        gw.publish(topic, b'{"hr": 187.25, "ts": ', qos=1).wait_for_publish(5)
        wait_for(lambda: sum(svc.pipeline.metrics.by_reason.values()) == 3, 15, "rejections")
        engine: Any = svc.pipeline.alerts
        wait_for(lambda: bool(engine.open_alerts()), 15, "the fall alert")
        gw.disconnect()
        gw.loop_stop()
        svc.stop()
    finally:
        broker.close()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "refused" in text or "Not authorized" in text or caplog.records  # logs were made
    for s in secrets:
        assert s not in text, "a secret reached the logs"
    assert "187.25" not in text and "61.75" not in text, "a health value reached the logs"
