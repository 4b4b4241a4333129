"""The simulated fleet live over MQTT (paho-mqtt 2.x).

Thousands of devices share a few client connections (device row r uses connection
r % connections); messages are generated and encoded a chunk at a time with NumPy and only
the `publish` call is made per message. A shared connection cannot carry a Last Will per
device, so `lwt_devices` devices (plus every device with a scripted `device_offline`) get a
connection of their own with a retained `{"online": false}` will on their status topic;
going offline closes that socket abruptly, and the broker itself announces the device dark.
Like device firmware, such a device says `{"online": true}` (retained) on every connection,
so a will the broker published while restarting does not outlive the restart.
Each such device costs a TCP connection and a paho network thread, hence a subset.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.clock import Clock, WallClock
from config.models import BrokerSettings, Config
from simulators.encode import Encoder
from simulators.engine import Simulation
from simulators.faults import make_faults, status_topic, vitals_topic
from simulators.scenario import Scenario

log = logging.getLogger(__name__)


def make_client(broker: BrokerSettings, client_id: str,
                will: tuple[str, bytes] | None = None,
                birth: Callable[[], bytes] | None = None) -> mqtt.Client:
    """A connected, looping MQTT 3.1.1 client (devices speak the simplest protocol).

    With `birth`, every successful (re)connection publishes `birth()` retained on the will's
    topic: paho reconnects by itself, and the retained will stays until replaced."""
    url = broker.url.rstrip("/")
    scheme, rest = url.split("://", 1)
    host, _, port = rest.partition(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv311, clean_session=True)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    if broker.username:
        pw = Path(broker.password_file).read_text().strip() if broker.password_file else None
        c.username_pw_set(broker.username, pw)
    if scheme == "mqtts":
        c.tls_set(ca_certs=broker.tls.ca_file, certfile=broker.tls.cert_file,
                  keyfile=broker.tls.key_file, cert_reqs=ssl.CERT_REQUIRED)
        c.tls_insecure_set(broker.tls.insecure)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                   _props: Any = None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        elif will and birth is not None:
            client.publish(will[0], birth(), qos=1, retain=True)
        connected.set()

    c.on_connect = on_connect
    c.connect(host, int(port or (8883 if scheme == "mqtts" else 1883)), keepalive=60)
    c.loop_start()
    if not connected.wait(10) or refused:
        c.disconnect()
        c.loop_stop()
        if refused:  # e.g. a wrong password: publishing on would only fill paho's memory
            raise ConnectionError(f"{broker.url} refused the connection: {refused[0]}")
        raise ConnectionError(f"no CONNACK from {broker.url} within 10 s")
    return c


class LiveFleet:
    """Publishes a simulated fleet in real time (`speed` 1) or accelerated."""

    def __init__(self, config: Config, broker: BrokerSettings, speed: float = 1.0,
                 interval_s: float = 10.0, batch: int = 1, qos: int = 1,
                 scenario: Scenario | None = None, seed: int = 0, start: float | None = None,
                 hours: float | None = None, random_rate: float = 0.0, faults: bool = False,
                 connections: int = 2, lwt_devices: int = 0, clock: Clock | None = None,
                 client_prefix: str = "carewatch-sim") -> None:
        self.clock = clock or WallClock()
        self.broker, self.speed, self.qos = broker, float(speed), int(qos)
        now = self.clock.now()
        # An accelerated run of no fixed length cannot end at "now": its clock may run ahead
        # of the real one by half the pipeline's future tolerance (within which the pipeline
        # accepts samples), then goes on in real time. Uncapped, every sample more than the
        # tolerance ahead (5 min: 33 s into `carewatch demo --speed 10`) was rejected as
        # future_ts, and every device later went device_offline.
        self.lead_s: float | None = None
        if start is None and not hours and self.speed > 1:
            self.lead_s = config.pipeline.future_tolerance_s / 2
        if start is None:  # accelerated: end at "now", so no ts lies in the pipeline's future
            start = now - (hours * 3600 * (1 - 1 / self.speed) if hours and self.speed > 1 else 0.0)
        rows = {r.id: i for i, r in enumerate(config.residents)}
        sim0 = Simulation(config, seed, start, interval_s, hours, batch)
        events = scenario.events(rows, start, sim0.phys.utc_offset_s) if scenario else []
        self.sim = Simulation(config, seed, start, interval_s, hours, batch, events, random_rate,
                              chunk_s=max(60.0, batch * interval_s))
        pop = self.sim.phys.pop
        self.topics = [vitals_topic(t, d) for t, d in zip(pop.towns, pop.device_ids, strict=True)]
        self.status_topics = [status_topic(t, d)
                              for t, d in zip(pop.towns, pop.device_ids, strict=True)]
        offline_rows = {e.row for e in self.sim.events.events if e.kind == "device_offline"}
        self.lwt_rows = sorted(offline_rows | set(range(min(lwt_devices, pop.n))))
        self.connections, self.faults, self.prefix = max(1, connections), faults, client_prefix
        self.published = 0
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._shared: list[mqtt.Client] = []
        self._own: dict[int, mqtt.Client] = {}
        self._lock = threading.Lock()
        self._t_wall0: float | None = None  # set once the fleet starts publishing

    # -- lifecycle
    def start(self) -> LiveFleet:
        pop = self.sim.phys.pop
        self._shared = [make_client(self.broker, f"{self.prefix}-{i}")
                        for i in range(self.connections)]
        for r in self.lwt_rows:  # each announces itself online as it connects
            self._connect_own(r)
        for r in range(pop.n):  # retained: a subscriber arriving later still sees it
            if r not in self._own:
                self._client(r).publish(self.status_topics[r], self._online(r, self.sim.t0),
                                        1, True)
        self._t_wall0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sim-fleet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            clients = self._shared + list(self._own.values())
            self._shared, self._own = [], {}
        for c in clients:
            c.disconnect()
            c.loop_stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Until a finite run has published everything; True if it did."""
        return self._done.wait(timeout)

    def truth(self) -> list[dict[str, Any]]:
        return self.sim.truth()

    # -- internals
    def _online(self, r: int, t: float) -> bytes:
        pop = self.sim.phys.pop
        return orjson.dumps({"online": True, "battery": int(pop.battery0[r]), "ts": round(t, 2)})

    def _client(self, r: int) -> mqtt.Client:
        return self._own.get(r) or self._shared[r % len(self._shared)]

    def _connect_own(self, r: int) -> None:
        dev = self.sim.phys.pop.device_ids[r]
        c = make_client(self.broker, f"{self.prefix}-{dev}",
                        will=(self.status_topics[r], b'{"online":false}'),
                        birth=lambda: self._online(r, self.sim_now()))
        with self._lock:
            self._own[r] = c

    def _go_dark(self, r: int) -> None:
        """Vanish without DISCONNECT, as a device whose battery or radio dies."""
        with self._lock:
            c = self._own.pop(r, None)
        if c is None:
            return
        c.loop_stop()
        sock = c.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def sim_now(self) -> float:
        if self._t_wall0 is None:  # not started: the simulation's first instant
            return self.sim.t0
        t = self.sim.t0 + (time.monotonic() - self._t_wall0) * self.speed
        if self.lead_s is not None:
            t = min(t, self.clock.now() + self.lead_s)
        return t

    def _sleep_until(self, t_sim: float) -> bool:
        """Wait for simulated time t_sim; True if stopped."""
        now = self.sim_now()
        capped = self.lead_s is not None and now >= self.clock.now() + self.lead_s - 1e-3
        delay = (t_sim - now) / (1.0 if capped else self.speed)
        return self._stop.wait(min(max(0.0, delay), 0.5)) if delay > 0 else self._stop.is_set()

    def _side_events(self) -> list[tuple[float, int, str, Any]]:
        """(t, order, action, arg) for status changes, abrupt disconnects and faults."""
        out: list[tuple[float, int, str, Any]] = []
        own = set(self.lwt_rows)
        for ev in self.sim.events.events:
            if ev.kind == "device_offline" and ev.row in own:
                out.append((ev.start, len(out), "dark", ev.row))
                out.append((ev.end, len(out), "back", ev.row))
        for t, r, payload in self.sim.status_changes():
            if r not in own:  # a gateway reporting for a shared-connection device
                out.append((t, len(out), "status", (r, orjson.dumps(payload))))
        if self.faults:
            end = self.sim.end_t or self.sim.t0 + 86400
            towns = [t.id for t in self.sim.config.towns]
            for f in make_faults(self.sim.phys, self.sim.t0 + 5, end, 120.0, self.sim.seed, towns):
                out.append((f.t, len(out), "fault", f))
        heapq.heapify(out)
        return out

    def _side(self, action: str, arg: Any) -> None:
        if action == "dark":
            self._go_dark(arg)
        elif action == "back":
            self._connect_own(arg)  # which says online as it connects
        elif action == "status":
            r, payload = arg
            self._client(r).publish(self.status_topics[r], payload, 1, True)
        elif action == "fault":
            self._shared[0].publish(arg.topic, arg.payload, self.qos)

    def _run(self) -> None:
        try:
            self._publish_all()
        except Exception as exc:  # the fleet thread must not die silently
            log.exception("simulated fleet stopped")
            self.errors.append(repr(exc))
        finally:
            self._done.set()

    def _publish_all(self) -> None:
        enc = Encoder(self.topics, self.sim.batch, record=False)
        side = self._side_events()
        qos, topics = self.qos, self.topics
        for chunk in self.sim.chunks():
            e = enc.encode(chunk)
            msgs, rows, t = e.messages(), e.row.tolist(), e.t
            i = 0
            while i < len(msgs):
                if self._stop.is_set():
                    return
                now = self.sim_now()
                while side and side[0][0] <= now:
                    _t, _o, action, arg = heapq.heappop(side)
                    self._side(action, arg)
                j = int(np.searchsorted(t, now, side="right"))
                if j <= i:
                    nxt = float(t[i]) if not side else min(float(t[i]), side[0][0])
                    if self._sleep_until(nxt):
                        return
                    continue
                with self._lock:
                    for idx in range(i, j):  # one publish per message is paho's API
                        r = rows[idx]
                        (self._own.get(r) or self._shared[r % len(self._shared)]).publish(
                            topics[r], msgs[idx], qos)
                self.published += j - i
                self.samples += int(e.samples[i:j].sum())
                i = j
