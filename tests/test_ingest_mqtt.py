"""Ingest through a real Mosquitto: paho and mosquitto_pub publishers, rejections on the
`rejected` topic, broker restarts and pipeline restarts without losing QoS 1 messages."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from carewatch.clock import WallClock
from carewatch.service import Service
from config.models import Config
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, ingest_service, small_config, wait_for


def vitals_topic(config: Config, i: int) -> str:
    r = config.residents[i]
    return f"carewatch/v1/{r.town}/{r.device}/vitals"


class Rejecting(NamedTuple):
    config: Config
    service: Service
    watcher: Client  # subscribed to every `rejected` topic
    pub: Client


@pytest.fixture
def rejecting(mosquitto: MosquittoProcess, tmp_path: Path) -> Iterator[Rejecting]:
    """An ingest service on the real broker, a watcher of its rejections and a publisher."""
    config = small_config()
    service = ingest_service(config, mosquitto.url, tmp=tmp_path)
    service.start()
    watcher = Client(mosquitto.port, "ops", subscribe=("carewatch/v1/+/+/rejected",))
    pub = Client(mosquitto.port, "dev-pub")
    try:
        assert service.edge.wait_connected(10)
        yield Rejecting(config, service, watcher, pub)
    finally:
        pub.close()
        watcher.close()
        service.stop()


def test_paho_and_mosquitto_pub_samples_arrive(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    config = small_config()
    service = ingest_service(config, mosquitto.url, tmp=tmp_path)
    service.start()
    pub = Client(mosquitto.port, "dev-pub")
    try:
        assert service.edge.wait_connected(10)
        now = WallClock().now()
        pub.publish(
            vitals_topic(config, 0), {"ts": now - 1, "seq": 1, "hr": 72, "spo2": 95}
        ).wait_for_publish(5)
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                vitals_topic(config, 1),
                "-m",
                orjson.dumps({"ts": now - 2, "rr": 17, "temp_c": 37.2, "worn": True}).decode(),
            ],
            check=True,
            timeout=10,
        )
        store = service.pipeline.store
        wait_for(
            lambda: store.samples_total[0] == 1
            and store.samples_total[1] == 1
            and store.latest["spo2"][0] == 95
            and store.worn[1] == 1,
            what="samples",
        )
        assert store.latest["hr"][0] == 72 and store.latest["spo2"][0] == 95
        assert store.latest["rr"][1] == 17 and store.latest["temp_c"][1] == pytest.approx(
            37.2, abs=0.01
        )
        assert store.worn[1] == 1
    finally:
        pub.close()
        service.stop()


def test_bad_input_rejected_on_topic_good_kept(rejecting: Rejecting) -> None:
    config, service, watcher, pub = rejecting
    now = WallClock().now()
    t0 = vitals_topic(config, 0)
    r0 = config.residents[0]
    bad = [
        (t0, b"{oops", "invalid_json"),
        (t0, b'{"ts": "x"}', "schema"),
        (t0, orjson.dumps({"ts": now, "pad": "x" * 70_000}), "too_large"),
        (
            f"carewatch/v1/{r0.town}/dev-ghost/vitals",
            orjson.dumps({"ts": now}),
            "unknown_device",
        ),
        (f"carewatch/v1/nowhere/{r0.device}/vitals", orjson.dumps({"ts": now}), "wrong_town"),
        (t0, orjson.dumps({"ts": now, "device_id": "dev-9999"}), "device_mismatch"),
        (t0, orjson.dumps({"ts": now + 3600}), "future_ts"),
    ]
    good = 0
    for i, (topic, payload, _) in enumerate(bad):
        pub.publish(t0, {"ts": now - 100 + i, "seq": i, "hr": 60 + i})
        pub.publish(topic, payload)
        good += 1
    pub.publish(t0, {"ts": now - 50, "seq": 50, "hr": 99}).wait_for_publish(5)
    good += 1
    wait_for(lambda: len(watcher.received("/rejected")) == len(bad), what="rejections")
    reasons = [body["reason"] for _, body in watcher.received("/rejected")]
    assert reasons == [b[2] for b in bad]
    assert all(
        isinstance(b["detail"], str) and b["detail"] for _, b in watcher.received("/rejected")
    )
    store = service.pipeline.store
    wait_for(lambda: store.samples_total[0] == good, what="good samples")
    assert store.latest["hr"][0] == 99
    assert service.pipeline.metrics.by_reason == {b[2]: 1 for b in bad}


def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    mosquitto: MosquittoProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = small_config()
    service = ingest_service(config, mosquitto.url, tmp=tmp_path)
    service.start()
    pub = Client(mosquitto.port, "dev-pub-persist")
    n_before, n_after = 300, 300
    try:
        assert service.edge.wait_connected(10)
        now = WallClock().now()
        topic = vitals_topic(config, 0)
        infos = [
            pub.publish(topic, {"ts": now - 1000 + i, "seq": i, "hr": 70}) for i in range(n_before)
        ]
        for info in infos:
            info.wait_for_publish(10)
        assert mosquitto.wait_saved(after=WallClock().now()), "broker never saved its sessions"
        mosquitto.stop(kill=True)
        # published while the broker is down: paho keeps them and resends after reconnecting
        for i in range(n_before, n_before + n_after):
            pub.publish(topic, {"ts": now - 1000 + i, "seq": i, "hr": 71})
        mosquitto.start()
        store = service.pipeline.store
        wait_for(
            lambda: store.samples_total[0] == n_before + n_after,
            timeout_s=60,
            what=f"{n_before + n_after} samples after the broker restart",
        )
        assert service.edge.counters.connects >= 2
        # the outage is in the logs, not only in the reconnection's "connected" line
        assert any(r.levelno == logging.WARNING and "lost the broker link" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        seqs = set(store.raw_window(0)["seq"].tolist())
        assert set(range(n_before + n_after - store.raw_capacity, n_before + n_after)) <= seqs
    finally:
        pub.close()
        service.stop()


def test_pipeline_down_while_devices_publish_persistent_session(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    config = small_config()
    first = ingest_service(config, mosquitto.url, client_id="cw-persist", tmp=tmp_path)
    first.start()
    assert first.edge.wait_connected(10)
    first.stop()
    pub = Client(mosquitto.port, "dev-pub-2")
    try:
        now = WallClock().now()
        topic = vitals_topic(config, 2)
        infos = [
            pub.publish(topic, {"ts": now - 500 + i, "seq": i, "spo2": 94}) for i in range(200)
        ]
        for info in infos:
            info.wait_for_publish(10)
        second = ingest_service(config, mosquitto.url, client_id="cw-persist", tmp=tmp_path)
        second.start()
        try:
            store = second.pipeline.store
            wait_for(lambda: store.samples_total[2] == 200, what="messages queued while down")
            assert store.latest["spo2"][2] == 94
        finally:
            second.stop()
    finally:
        pub.close()


def test_mqtt_311_selectable(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    from carewatch.service import Service
    from config.models import BrokerSettings
    from tests.ingest_harness import bare_pipeline

    config = small_config()
    service = Service(
        config,
        broker=BrokerSettings(url=mosquitto.url, protocol="3.1.1", client_id="cw-311"),
        data_dir=tmp_path,
        build=bare_pipeline,
    )
    service.start()
    pub = Client(mosquitto.port, "dev-311")
    try:
        assert service.edge.wait_connected(10)
        pub.publish(vitals_topic(config, 0), {"ts": WallClock().now(), "hr": 55}).wait_for_publish(
            5
        )
        wait_for(lambda: service.pipeline.store.samples_total[0] == 1, what="sample over 3.1.1")
    finally:
        pub.close()
        service.stop()


def test_backlog_drains_in_byte_capped_steps_and_every_message_is_acknowledged(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    # 1 KiB steps: each ~0.9 KiB batch message is a step of its own, so the acknowledgements
    # of many partial drains must line up with the messages they handled
    config = small_config(pipeline={"batch_max_bytes": 1024})
    first = ingest_service(config, mosquitto.url, client_id="cw-steps", tmp=tmp_path)
    first.start()
    assert first.edge.wait_connected(10)
    first.stop()
    pub = Client(mosquitto.port, "dev-steps")
    topic = vitals_topic(config, 1)
    try:
        now = WallClock().now()
        infos = [pub.publish(topic, {"samples": [{"ts": now - 900 + 10 * i + k, "seq": 10 * i + k,
                                                   "hr": 70, "spo2": 97} for k in range(10)]})
                 for i in range(40)]
        for info in infos:
            info.wait_for_publish(10)
        second = ingest_service(config, mosquitto.url, client_id="cw-steps", tmp=tmp_path)
        steps: list[int] = []
        drain = second.edge.drain

        def counted(limit: int, max_bytes: int) -> list[tuple[str, bytes, float]]:
            out = drain(limit, max_bytes)
            steps.append(len(out))
            return out

        second.edge.drain = counted  # type: ignore[method-assign]
        second.start()
        try:
            wait_for(lambda: second.pipeline.store.samples_total[1] == 400, what="the backlog")
        finally:
            second.stop()
        assert max(steps) == 1 and sum(steps) >= 40
        # a new session of the same client: anything left unacknowledged comes again
        third = ingest_service(config, mosquitto.url, client_id="cw-steps", tmp=tmp_path)
        third.start()
        try:
            pub.publish(vitals_topic(config, 2), {"ts": WallClock().now(), "hr": 60})
            wait_for(lambda: third.pipeline.store.samples_total[2] == 1, what="the probe")
            assert third.pipeline.store.samples_total[1] == 0
        finally:
            third.stop()
    finally:
        pub.close()


def test_non_utf8_payloads_are_rejected_and_the_pipeline_goes_on(rejecting: Rejecting) -> None:
    """JSON is UTF-8 text (contract: "A JSON object, UTF-8"). A payload that is not, on a
    vitals or status topic, is rejected as `invalid_json` with the byte it broke at, and the
    rest of the stream goes on. A non-UTF-8 `device_id` used to raise UnicodeDecodeError
    out of the decoder: the pipeline thread died, `carewatch run` exited, and with PUBACK
    after handling the broker redelivered the message to every restart."""
    config, service, watcher, pub = rejecting
    now = WallClock().now()
    t0 = vitals_topic(config, 0)
    r0 = config.residents[0]
    status0 = f"carewatch/v1/{r0.town}/{r0.device}/status"
    bad = [
        (t0, b'{"ts": %.3f, "device_id": "\xff"}' % now),  # a field msgspec keeps
        (t0, b'{"samples": [{"ts": %.3f, "device_id": "d\xc3"}]}' % now),
        (t0, b'{"ts": %.3f, "hr": 70, "fw": "caf\xe9"}' % now),  # an ignored field
        (status0, b'{"online": true, "note": "\xff"}'),
    ]
    for i, (topic, payload) in enumerate(bad):
        pub.publish(t0, {"ts": now - 100 + i, "seq": i, "hr": 60 + i})
        pub.publish(topic, payload)
    pub.publish(t0, {"ts": now - 50, "seq": 50, "hr": 99}).wait_for_publish(5)
    wait_for(lambda: len(watcher.received("/rejected")) == len(bad), what="rejections")
    bodies = [body for _, body in watcher.received("/rejected")]
    assert [b["reason"] for b in bodies] == ["invalid_json"] * len(bad)
    assert all("JSON is malformed: not UTF-8 text (" in b["detail"] for b in bodies)
    store = service.pipeline.store
    wait_for(lambda: store.samples_total[0] == len(bad) + 1, what="the good samples")
    assert store.latest["hr"][0] == 99
    assert service.error is None


def test_a_batch_whose_own_device_id_is_another_device_is_rejected(rejecting: Rejecting) -> None:
    """Contract: "`device_id` comes from the topic; a `device_id` field, if present, must
    match it." A gateway naming the device on the batch (`{"device_id", "samples"}`) and
    publishing on another device's topic had its samples stored on that device's resident;
    only `device_id` inside the samples was checked."""
    config, service, watcher, pub = rejecting
    now = WallClock().now()
    t0, r0, r1 = vitals_topic(config, 0), config.residents[0], config.residents[1]
    samples = [{"ts": now - 30 + i, "seq": i, "hr": 150} for i in range(20)]
    pub.publish(t0, {"device_id": r1.device, "samples": samples})
    pub.publish(t0, {"device_id": r0.device, "samples": [{"ts": now - 5, "hr": 66}]})
    pub.publish(t0, {"samples": [{"ts": now - 4, "hr": 67}]}).wait_for_publish(5)
    wait_for(lambda: len(watcher.received("/rejected")) == 1, what="the rejection")
    topic, body = watcher.received("/rejected")[0]
    assert topic == t0.removesuffix("vitals") + "rejected"
    assert body["reason"] == "device_mismatch"
    assert repr(r1.device) in body["detail"] and repr(r0.device) in body["detail"]
    store = service.pipeline.store
    wait_for(lambda: store.samples_total[0] == 2, what="the matching batches")
    assert store.latest["hr"][0] == 67
    assert service.pipeline.metrics.by_reason == {"device_mismatch": 1}
