"""FastClient receives exactly what stock paho receives: every QoS, properties, retain, sizes."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.broker import MosquittoProcess
from ingest.fastpaho import FastClient
from tests.ingest_harness import wait_for


def collect(
    port: int, protocol: mqtt.MQTTProtocolVersion, topic: str, batch: bool = False
) -> tuple[mqtt.Client, list]:  # type: ignore[type-arg]
    got: list[tuple[str, bytes, int, bool, object]] = []
    subscribed = threading.Event()
    client = FastClient(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="fast-sub", protocol=protocol
    )
    client.on_message = lambda c, u, m: got.append(
        (m.topic, m.payload, m.qos, m.retain, m.properties)
    )
    client.on_subscribe = lambda *a: subscribed.set()
    if batch:  # the batch path: (topic, payload, mid); qos/retain/properties not carried
        client.fast_sink = lambda items: got.extend((t, p, -1, None, None) for t, p, _ in items)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=2)
    assert subscribed.wait(5)
    return client, got


@pytest.mark.parametrize("batch", [False, True], ids=["per-message", "batch-sink"])
@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_fast_client_receives_every_shape(
    mosquitto: MosquittoProcess, protocol: mqtt.MQTTProtocolVersion, batch: bool
) -> None:
    pub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5
    )
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("t/retained", b"kept", qos=1, retain=True).wait_for_publish(5)
    sub, got = collect(mosquitto.port, protocol, "t/#", batch)
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("k", "v")
        props.MessageExpiryInterval = 60
        big = bytes(range(256)) * 600  # 150 KiB: spans several 64 KiB reads
        sent = [
            ("t/q0", b"zero", 0, None),
            ("t/q1", b"one", 1, None),
            ("t/q2", b"two", 2, None),
            ("t/props", b"with-props", 1, props),
            ("t/big", big, 1, None),
        ]
        sent += [(f"t/many/{i}", str(i).encode(), 1, None) for i in range(500)]
        for topic, payload, qos, p in sent:
            pub.publish(topic, payload, qos=qos, properties=p)
        wait_for(lambda: len(got) == len(sent) + 1, what="all messages")
        by_topic = {t: (payload, qos, retain, pr) for t, payload, qos, retain, pr in got}
        assert len(by_topic) == len(got), "a message arrived twice"
        assert by_topic["t/retained"][0] == b"kept"
        for topic, payload, _qos, _ in sent:
            assert by_topic[topic][0] == payload, topic
        # QoS 2 and messages with properties always take paho's own (per-message) path
        assert by_topic["t/q2"][1] == 2
        if not batch:
            assert by_topic["t/retained"][2] is True
            for topic, _, qos, _ in sent:
                assert by_topic[topic][1] == qos, topic
        if protocol == mqtt.MQTTv5:
            received_props = by_topic["t/props"][3]
            assert received_props.UserProperty == [("k", "v")]
            assert 0 < received_props.MessageExpiryInterval <= 60
    finally:
        sub.disconnect()
        sub.loop_stop()
        pub.disconnect()
        pub.loop_stop()
