"""The pipeline lingers for a fuller step, but no longer than it takes one to arrive."""

from __future__ import annotations

import time
from pathlib import Path

from carewatch.clock import WallClock
from carewatch.service import Service
from config.models import BrokerSettings
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, bare_pipeline, small_config, wait_for

LINGER_S = 1.0


def test_enough_messages_end_the_linger(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    config = small_config(residents=2, towns=1, pipeline={
        "linger_ms": LINGER_S * 1000, "linger_enough_messages": 40, "tick_s": 60})
    service = Service(config, broker=BrokerSettings(url=mosquitto.url, client_id="cw-linger"),
                      data_dir=tmp_path / "d", build=bare_pipeline)
    service.start()
    pub = Client(mosquitto.port, "linger-pub")
    r = config.residents[0]
    topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
    totals = service.pipeline.metrics.totals
    try:
        assert service.edge.wait_connected(10)
        wait_for(lambda: bool(service.edge.counters.subscribed), 10, "SUBACK")
        now = WallClock().now()
        started = time.monotonic()
        infos = [pub.publish(topic, {"ts": now - 60 + i, "seq": i, "hr": 70}) for i in range(40)]
        for info in infos:
            info.wait_for_publish(5)
        wait_for(lambda: totals["samples"] == 40, 5, "the 40 samples stored")
        # the first message started a 1 s linger; the 40th ended it
        assert time.monotonic() - started < 0.6 * LINGER_S
    finally:
        pub.close()
        service.stop()
