"""Generated credentials and ACLs against the real Mosquitto: who may connect, publish, read."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.security.acl import CONSOLE_USER, PIPELINE_USER, Account, AclError, acl_text
from carewatch.security.passwd import hash_password, verify_password
from carewatch.security.provision import GatewaySpec, Provisioned, provision
from config.models import Config
from ingest.broker import MosquittoProcess
from tests.ingest_harness import small_config, wait_for


class AuthClient:
    """A paho MQTT 5 client with a user name and password, recording what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None,
                 client_id: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.puback: dict[int, int] = {}
        self.connack: list[int] = []
        self._lock = threading.Lock()
        self._suback = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}",
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(rc.value)
        self.c.on_message = self._msg
        self.c.on_subscribe = lambda *_a: self._suback.set()
        self.c.on_publish = self._pub
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(lambda: bool(self.connack), 10, "CONNACK")

    @property
    def accepted(self) -> bool:
        return self.connack[-1] == 0

    def _msg(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _pub(self, _c: mqtt.Client, _u: object, mid: int, rc: mqtt.ReasonCode, _p: object) -> None:
        self.puback[mid] = rc.value

    def subscribe(self, *topics: str) -> None:
        self._suback.clear()
        self.c.subscribe([(t, 1) for t in topics])
        assert self._suback.wait(5)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; True if the PUBACK accepts it (reason code < 0x80)."""
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.puback, 10, f"PUBACK for {topic}")
        return self.puback[info.mid] < 0x80

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Secured:
    config: Config
    prov: Provisioned
    broker: MosquittoProcess

    def password(self, user: str) -> str:
        return self.prov.secret_path(user).read_text().strip()

    def client(self, user: str | None, as_user: str | None = None) -> AuthClient:
        pw = self.password(as_user or user) if user else None
        return AuthClient(self.broker.port, user, pw)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    config = small_config(residents=6, towns=2)
    towns = sorted({r.town for r in config.residents})
    prov = provision(config, tmp_path / "creds",
                     gateways=[GatewaySpec("all"), GatewaySpec("first", (towns[0],))])
    broker = MosquittoProcess(workdir=tmp_path / "mosq", auth=prov.auth)
    broker.start()
    try:
        yield Secured(config, prov, broker)
    finally:
        broker.close()


def vitals_topic(config: Config, i: int, leaf: str = "vitals") -> str:
    r = config.residents[i]
    return f"carewatch/v1/{r.town}/{r.device}/{leaf}"


SAMPLE = orjson.dumps({"ts": 1.0, "hr": 70})


def test_files_are_private_and_passwords_never_in_the_acl(secured: Secured) -> None:
    out = secured.prov.out
    assert (out / "passwords").stat().st_mode & 0o777 == 0o700
    for f in [*(out / "passwords").glob("*.pw"), secured.prov.password_file]:
        assert f.stat().st_mode & 0o777 == 0o600, f
    acl = secured.prov.acl_file.read_text()
    pw_text = secured.prov.password_file.read_text()
    for acc in secured.prov.accounts:
        pw = secured.password(acc.username)
        assert len(pw) >= 32
        assert pw not in acl and pw not in pw_text
    assert "\npattern " not in acl and "topic write carewatch/v1/+/+/vitals" not in acl
    assert "allow_anonymous false" in secured.prov.conf_file.read_text()


def test_hash_format_matches_mosquitto_passwd(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "alice", "s3cret"], check=True)
    theirs = f.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret", theirs) and not verify_password("s3cret!", theirs)
    ours = hash_password("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3]  # same scheme and iterations
    assert verify_password("s3cret", ours) and not verify_password("other", ours)


def test_anonymous_and_wrong_credentials_are_refused(secured: Secured) -> None:
    c0, c1 = secured.config.residents[0].device, secured.config.residents[1].device
    clients = [secured.client(None), secured.client(c0, as_user=c1),
               AuthClient(secured.broker.port, c0, "not-the-password")]
    try:
        for c in clients:
            assert not c.accepted, "the broker let in a client it should have refused"
        own = secured.client(c0)
        clients.append(own)
        assert own.accepted
    finally:
        for c in clients:
            c.close()


def test_device_publishes_only_its_own_topics(secured: Secured) -> None:
    cfg = secured.config
    pipe = secured.client(PIPELINE_USER)
    pipe.subscribe("carewatch/v1/+/+/vitals", "carewatch/v1/+/+/status")
    dev0 = secured.client(cfg.residents[0].device)
    try:
        other_vitals = vitals_topic(cfg, 1)
        assert not dev0.publish(other_vitals, SAMPLE)  # 0x87 not authorised
        assert not dev0.publish(vitals_topic(cfg, 1, "status"), b'{"online": false}')
        assert not dev0.publish(vitals_topic(cfg, 0, "rejected"), b"{}")
        assert not dev0.publish(f"carewatch/v1/{cfg.residents[0].town}/alerts/x", b"{}")
        assert dev0.publish(vitals_topic(cfg, 0), SAMPLE)
        assert dev0.publish(vitals_topic(cfg, 0, "status"), b'{"online": true}')
        wait_for(lambda: vitals_topic(cfg, 0, "status") in pipe.topics(), 10, "own messages")
        assert other_vitals not in pipe.topics()
        assert vitals_topic(cfg, 1, "status") not in pipe.topics()
    finally:
        for c in (pipe, dev0):
            c.close()


def test_device_reads_only_its_own_rejected_topic(secured: Secured) -> None:
    cfg = secured.config
    dev0 = secured.client(cfg.residents[0].device)
    dev0.subscribe("carewatch/v1/#")
    pipe = secured.client(PIPELINE_USER)
    try:
        assert pipe.publish(vitals_topic(cfg, 1, "rejected"), b'{"reason": "x"}')
        assert pipe.publish(vitals_topic(cfg, 0, "rejected"), b'{"reason": "y"}')
        wait_for(lambda: vitals_topic(cfg, 0, "rejected") in dev0.topics(), 10, "own rejection")
        assert dev0.topics() == [vitals_topic(cfg, 0, "rejected")]
    finally:
        for c in (pipe, dev0):
            c.close()


def test_gateway_publishes_only_for_the_devices_it_carries(secured: Secured) -> None:
    cfg = secured.config
    first = sorted({r.town for r in cfg.residents})[0]
    inside = next(i for i, r in enumerate(cfg.residents) if r.town == first)
    outside = next(i for i, r in enumerate(cfg.residents) if r.town != first)
    gw_all, gw_first = secured.client("svc.gateway-all"), secured.client("svc.gateway-first")
    try:
        assert gw_all.publish(vitals_topic(cfg, outside), SAMPLE)
        assert gw_first.publish(vitals_topic(cfg, inside), SAMPLE)
        assert not gw_first.publish(vitals_topic(cfg, outside), SAMPLE)
        assert not gw_first.publish(vitals_topic(cfg, inside, "rejected"), SAMPLE)
    finally:
        for c in (gw_all, gw_first):
            c.close()


def test_console_reads_alerts_and_sends_commands_only(secured: Secured) -> None:
    town = secured.config.residents[0].town
    console = secured.client(CONSOLE_USER)
    try:
        assert console.publish(f"carewatch/v1/{town}/cmd/alerts", b"{}")
        assert not console.publish(vitals_topic(secured.config, 0), SAMPLE)
        assert not console.publish(f"carewatch/v1/{town}/alerts/r-1", b"{}")
    finally:
        console.close()


def test_ids_that_would_widen_a_topic_are_refused() -> None:
    for town, dev in [("t", "a/b"), ("t", "#"), ("t+", "d"), ("t", "alerts"), ("t", "x" * 65)]:
        with pytest.raises(AclError):
            acl_text([Account(dev, "device", ((town, dev),))])
    with pytest.raises(AclError):
        acl_text([Account("a b", "pipeline")])


def test_anonymous_broker_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    from ingest.broker import broker_config

    with pytest.raises(ValueError):
        broker_config(1883, tmp_path, bind="0.0.0.0")


def test_reprovision_keeps_passwords_and_rotate_changes_them(tmp_path: Path) -> None:
    config = small_config(residents=3, towns=1)
    a = provision(config, tmp_path / "c")
    dev = config.residents[0].device
    before = a.secret_path(dev).read_text()
    provision(config, tmp_path / "c")
    assert a.secret_path(dev).read_text() == before
    start = time.monotonic()
    provision(config, tmp_path / "c", rotate=True)
    assert a.secret_path(dev).read_text() != before
    assert time.monotonic() - start < 5


def test_a_simulated_device_with_a_wrong_password_is_told_it_was_refused(
        secured: Secured, tmp_path: Path) -> None:
    """`carewatch simulate` went ahead and published into nothing when the broker refused
    its credentials (paho retries a refused CONNECT for ever)."""
    from config.models import BrokerSettings
    from simulators.fleet import make_client

    user = secured.prov.accounts[0].username
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-password\n")
    settings = BrokerSettings(url=secured.broker.url, username=user, password_file=str(wrong))
    with pytest.raises(ConnectionError, match="refused the connection"):
        make_client(settings, "sim-wrong-password")
    right = BrokerSettings(url=secured.broker.url, username=user,
                           password_file=str(secured.prov.secret_path(user)))
    client = make_client(right, "sim-right-password")
    client.disconnect()
    client.loop_stop()
