"""End to end over TLS with the generated accounts: gateway → broker → pipeline → alerts."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.clock import WallClock
from carewatch.security.acl import CONSOLE_USER, GATEWAY_PREFIX, PIPELINE_USER
from carewatch.security.provision import GatewaySpec, Provisioned, provision
from carewatch.service import Service
from config.models import BrokerSettings, Config, TlsSettings
from ingest.broker import BrokerTls, MosquittoProcess
from simulators.fleet import make_client
from tests.ingest_harness import small_config, wait_for

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make-test-ca.sh"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(["bash", str(SCRIPT), str(d), "svc.console"], check=True,
                   capture_output=True, timeout=60)
    return d


@dataclass
class TlsBroker:
    config: Config
    prov: Provisioned
    broker: MosquittoProcess
    ca: Path

    def settings(self, user: str, client_id: str, cert: bool = False) -> BrokerSettings:
        tls = TlsSettings(ca_file=str(self.ca / "ca.crt"),
                          cert_file=str(self.ca / f"{user}.crt") if cert else None,
                          key_file=str(self.ca / f"{user}.key") if cert else None)
        return BrokerSettings(url=self.broker.url, username=user, client_id=client_id,
                              password_file=str(self.prov.secret_path(user)), tls=tls)


def start_broker(tmp: Path, ca: Path, require_certificate: bool) -> TlsBroker:
    config = small_config(residents=4, towns=2)
    prov = provision(config, tmp / "creds", gateways=[GatewaySpec("fleet")])
    tls = BrokerTls(ca / "server.crt", ca / "server.key", ca / "ca.crt",
                    require_certificate=require_certificate)
    broker = MosquittoProcess(workdir=tmp / "mosq", auth=prov.auth, tls=tls)
    broker.start()
    return TlsBroker(config, prov, broker, ca)


@pytest.fixture
def tls_broker(tmp_path: Path, ca: Path) -> Iterator[TlsBroker]:
    b = start_broker(tmp_path, ca, require_certificate=False)
    try:
        yield b
    finally:
        b.broker.close()


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, suffix: str) -> list[dict[str, object]]:
        with self.lock:
            return [orjson.loads(p) for t, p in self.messages if t.endswith(suffix)]


def subscribe(client: mqtt.Client, topic: str) -> Collector:
    col = Collector()
    done = threading.Event()
    client.on_message = col
    client.on_subscribe = lambda *_a: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(5)
    return col


def test_pipeline_fleet_and_console_over_mqtts(tls_broker: TlsBroker, tmp_path: Path) -> None:
    b, cfg = tls_broker, tls_broker.config
    assert b.broker.url.startswith("mqtts://")
    service = Service(cfg, broker=b.settings(PIPELINE_USER, "cw-tls"), data_dir=tmp_path / "d")
    service.start()
    gw = make_client(b.settings(GATEWAY_PREFIX + "fleet", "gw-tls"), "gw-tls")
    console = make_client(b.settings(CONSOLE_USER, "console-tls"), "console-tls")
    r1 = cfg.residents[1]
    device = make_client(b.settings(r1.device, "dev-tls"), "dev-tls")
    try:
        alerts = subscribe(console, "carewatch/v1/+/alerts/+")
        rejected = subscribe(device, f"carewatch/v1/{r1.town}/{r1.device}/rejected")
        assert service.edge.wait_connected(10)
        r0 = cfg.residents[0]
        now = WallClock().now()
        gw.publish(f"carewatch/v1/{r0.town}/{r0.device}/vitals",
                   orjson.dumps({"ts": now - 1, "hr": 80, "worn": True, "fall": True}), qos=1)
        device.publish(f"carewatch/v1/{r1.town}/{r1.device}/vitals", b"{not json", qos=1)
        wait_for(lambda: any(a.get("kind") == "fall" for a in alerts.on("")), 30,
                 "a fall alert delivered to the console account over TLS")
        wait_for(lambda: bool(rejected.on("/rejected")), 10, "the rejection on the device topic")
        assert rejected.on("/rejected")[0]["reason"] == "invalid_json"
        assert service.pipeline.metrics.totals["samples"] == 1
    finally:
        for c in (gw, console, device):
            c.disconnect()
            c.loop_stop()
        service.stop()


def _try_connect(port: int, settings: BrokerSettings, ca: Path) -> bool:
    """True if the broker accepts a CONNECT over TLS with these settings."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                    protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=str(ca / "ca.crt"), certfile=settings.tls.cert_file,
              keyfile=settings.tls.key_file, cert_reqs=ssl.CERT_REQUIRED)
    assert settings.password_file is not None
    c.username_pw_set(settings.username, Path(settings.password_file).read_text().strip())
    result: list[int] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc.value)
    try:
        c.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return False
    c.loop_start()
    try:
        wait_for(lambda: bool(result) or (not c.is_connected() and c.socket() is None), 10,
                 "CONNACK or a closed connection")
    finally:
        c.disconnect()
        c.loop_stop()
    return bool(result) and result[0] == 0


def test_client_certificate_required(tmp_path: Path, ca: Path) -> None:
    b = start_broker(tmp_path, ca, require_certificate=True)
    try:
        assert not _try_connect(b.broker.port, b.settings(CONSOLE_USER, "no-cert"), ca)
        assert _try_connect(b.broker.port, b.settings(CONSOLE_USER, "with-cert", True), ca)
    finally:
        b.broker.close()


def test_plain_mqtt_is_refused_on_the_tls_listener(tls_broker: TlsBroker) -> None:
    settings = tls_broker.settings(CONSOLE_USER, "plain")
    assert settings.password_file is not None
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv311)
    c.username_pw_set(CONSOLE_USER, Path(settings.password_file).read_text().strip())
    outcome: list[str] = []
    c.on_connect = lambda *_a: outcome.append("connack")
    c.on_disconnect = lambda *_a: outcome.append("closed")
    c.connect("127.0.0.1", tls_broker.broker.port)
    c.loop_start()
    try:
        wait_for(lambda: bool(outcome), 10, "the broker's answer to a plain CONNECT")
        assert outcome[0] == "closed"
    finally:
        c.disconnect()
        c.loop_stop()
