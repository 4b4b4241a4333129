"""`carewatch soak --seconds N`: the pipeline under a simulated fleet, with random broker
restarts and pipeline SIGKILLs, on loopback only; prints what was sent, received, processed,
the fall alerts expected and raised, and what was lost (must be 0; exit status 1 if not).

The broker is a child Mosquitto with generated credentials (anonymous access off). The
pipeline is a child `Service` with manual MQTT acknowledgements: a message is PUBACKed only
after the pipeline handled it (a batch holding a fall only after the tick that raised the
alert), and each handled message is journaled (`device seq`) before its PUBACK, so the
journal is the proof of processing that survives SIGKILL. Broker restarts are orderly
(SIGTERM saves its persistence): a SIGKILLed Mosquitto loses what it received since its
last autosave, which no client can prevent (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

CHILD_ID = "soak-pipeline"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("soak", help="bounded loopback soak: fleet + pipeline under faults")
    p.add_argument("--seconds", type=float, default=60.0, help="publishing time (default 60)")
    p.add_argument("--residents", type=int, default=200)
    p.add_argument("--interval-s", type=float, default=1.0, help="per-device sample interval")
    p.add_argument("--falls", type=int, default=10, help="fall events, distinct residents")
    p.add_argument("--kills", type=int, default=3, help="pipeline SIGKILLs (random times)")
    p.add_argument("--restarts", type=int, default=2, help="broker restarts (random times)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", help="keep the run's files here (default: a temp dir)")
    p.add_argument("--auto-ack", action="store_true",
                   help="paho's automatic PUBACK on receipt (shows what a SIGKILL loses)")
    p.set_defaults(func=main)


# ---------------------------------------------------------------- child: the pipeline
def acking_build(journal: Path) -> Callable[..., Any]:
    """A pipeline factory whose handled messages are journaled, then acknowledged."""
    from carewatch.app import build_pipeline

    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def build(config: Any, clock: Any, publisher: Any, **kw: Any) -> Any:
        pipeline, close = build_pipeline(config, clock, publisher, **kw)
        handle, tick = pipeline.handle, pipeline.tick

        def handled(messages: list[tuple[str, bytes, float]]) -> None:
            handle(messages)
            lines = []
            for topic, payload, _t in messages:
                if topic.endswith("/vitals"):
                    try:
                        seq = orjson.loads(payload).get("seq")
                    except (orjson.JSONDecodeError, AttributeError):
                        continue
                    lines.append(f"{topic.split('/')[3]} {seq}\n")
            if lines:
                os.write(fd, "".join(lines).encode())  # in the kernel before any PUBACK
            if not pipeline.urgent:  # a fall's PUBACK waits for its alert (after the tick)
                publisher.ack_drained()

        def ticked(now: float | None = None) -> Any:
            out = tick(now)
            publisher.ack_drained()
            return out

        pipeline.handle, pipeline.tick = handled, ticked  # type: ignore[method-assign]

        def closing() -> None:
            close()
            os.close(fd)

        return pipeline, closing

    return build


def child(registry: str, data_dir: str, url: str, user: str, pw_file: str, journal: str,
          ack: str = "manual") -> int:
    from carewatch.service import Service
    from config.loader import load_config
    from config.models import BrokerSettings

    config = load_config(registry)
    config = config.model_copy(update={"pipeline": config.pipeline.model_copy(
        update={"ack_after_handling": ack == "manual"})})
    broker = BrokerSettings(url=url, username=user, password_file=pw_file, client_id=CHILD_ID,
                            reconnect_min_s=0.5, reconnect_max_s=2)
    service = Service(config, broker=broker, data_dir=Path(data_dir),
                      build=acking_build(Path(journal)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    print("ready", flush=True)
    while not stop.wait(0.5):
        if service.error is not None:
            return 1
    service.stop()
    return 0


# ---------------------------------------------------------------- parent: fleet and chaos
class Fleet:
    """Gateway connections publishing one sample per device per interval (QoS 1)."""

    def __init__(self, config: Any, url: str, user: str, pw_file: str, interval_s: float,
                 falls: dict[int, float], connections: int = 2) -> None:
        from config.models import BrokerSettings
        from simulators.fleet import make_client

        settings = BrokerSettings(url=url, username=user, password_file=pw_file)
        self.topics = [f"carewatch/v1/{r.town}/{r.device}/vitals" for r in config.residents]
        self.clients = [make_client(settings, f"soak-gw-{i}") for i in range(connections)]
        self.interval_s, self.falls = interval_s, dict(falls)
        self.sent = 0
        self.infos: list[Any] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-fleet")

    def _run(self) -> None:
        from carewatch.clock import WallClock

        clock, seq, started = WallClock(), 0, time.monotonic()
        while not self._stop.is_set():
            now, elapsed = clock.now(), time.monotonic() - started
            for row, topic in enumerate(self.topics):
                doc: dict[str, Any] = {"ts": round(now, 3), "seq": seq, "hr": 72, "spo2": 97,
                                       "worn": True, "activity": 0.3}
                if row in self.falls and elapsed >= self.falls[row]:
                    doc["fall"] = True
                    del self.falls[row]
                c = self.clients[row % len(self.clients)]
                self.infos.append(c.publish(topic, orjson.dumps(doc), qos=1))
                self.sent += 1
            seq += 1
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 60.0) -> int:
        """Stop publishing; wait for every PUBACK. Returns the messages never acknowledged."""
        self._stop.set()
        self.thread.join()
        deadline = time.monotonic() + timeout_s
        # not wait_for_publish: it raises for a message queued while disconnected
        while any(not _acked(i) for i in self.infos) and time.monotonic() < deadline:
            time.sleep(0.1)  # paho resends after reconnecting; bounded by the deadline
        unacked = sum(not _acked(i) for i in self.infos)
        for c in self.clients:
            c.disconnect()
            c.loop_stop()
        return unacked


def _acked(info: Any) -> bool:
    """PUBACK received. is_published() raises for a message queued while disconnected,
    though paho still sends it after reconnecting and marks it published on its PUBACK."""
    return bool(info._published)


def _journal(path: Path) -> tuple[int, set[tuple[str, int]]]:
    lines = path.read_text().split("\n") if path.exists() else []
    seen = {(d, int(s)) for d, _, s in (ln.partition(" ") for ln in lines if ln)
            if s.isdigit()}
    return sum(1 for ln in lines if ln), seen


def _fall_alerts(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(DISTINCT resident_id) FROM alerts "
                               "WHERE kind = 'fall'").fetchone()[0])
    finally:
        con.close()


def main(args: argparse.Namespace) -> int:
    from carewatch.security.acl import GATEWAY_PREFIX, PIPELINE_USER
    from carewatch.security.provision import GatewaySpec, provision
    from config.generate import write_demo_registry
    from config.loader import load_config
    from ingest.broker import MosquittoProcess

    rng = random.Random(args.seed)
    tmp = None if args.data_dir else tempfile.TemporaryDirectory(prefix="carewatch-soak-")
    root = Path(args.data_dir or (tmp.name if tmp else "."))
    root.mkdir(parents=True, exist_ok=True)
    registry = write_demo_registry(root / "registry.yaml", args.residents, seed=args.seed)
    config = load_config(registry)
    creds = provision(config, root / "credentials", gateways=[GatewaySpec("soak")])
    broker = MosquittoProcess(workdir=root / "mosquitto", auth=creds.auth)
    broker.start()
    journal = root / "journal.txt"
    journal.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "carewatch.commands.soak", "child", str(registry),
           str(root / "pipeline"), broker.url, PIPELINE_USER,
           str(creds.secret_path(PIPELINE_USER)), str(journal),
           "auto" if args.auto_ack else "manual"]
    pipe: list[subprocess.Popen[bytes]] = []

    def start_pipeline() -> None:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert p.stdout is not None
        p.stdout.readline()  # "ready": its session exists before the fleet publishes
        pipe.append(p)

    start_pipeline()
    n_falls = min(args.falls, args.residents)
    falls = {r: rng.uniform(0.1, 0.9) * args.seconds
             for r in rng.sample(range(args.residents), n_falls)}
    gw = GATEWAY_PREFIX + "soak"
    fleet = Fleet(config, broker.url, gw, str(creds.secret_path(gw)), args.interval_s, falls)
    chaos = sorted([(rng.uniform(0.05, 0.95) * args.seconds, "kill") for _ in range(args.kills)]
                   + [(rng.uniform(0.05, 0.95) * args.seconds, "broker")
                      for _ in range(args.restarts)])
    started = time.monotonic()
    lost = -1
    try:
        fleet.start()
        for at, what in chaos:
            time.sleep(max(0.0, at - (time.monotonic() - started)))  # pacing the schedule
            if what == "kill":
                pipe[-1].kill()
                pipe[-1].wait()
                time.sleep(rng.uniform(0.2, 2.0))  # down for a while; the broker queues
                start_pipeline()
            else:
                broker.stop()
                time.sleep(rng.uniform(0.2, 2.0))
                broker.start()
        time.sleep(max(0.0, args.seconds - (time.monotonic() - started)))
        unacked = fleet.stop()
        sent = fleet.sent - unacked
        deadline = time.monotonic() + 120
        received, seen = _journal(journal)
        while (len(seen) < sent or _fall_alerts(root / "pipeline" / "alerts.db") < n_falls) \
                and time.monotonic() < deadline:
            time.sleep(0.5)  # waiting for the pipeline to catch up; bounded
            received, seen = _journal(journal)
        raised = _fall_alerts(root / "pipeline" / "alerts.db")
        lost = sent - len(seen)
        print(f"soak: {args.seconds:g} s, {args.residents} devices every {args.interval_s:g} s, "
              f"{args.kills} pipeline SIGKILLs, {args.restarts} broker restarts, "
              f"{'automatic' if args.auto_ack else 'manual'} PUBACK\n"
              f"  messages sent (PUBACKed by the broker) {sent}"
              f"{f' (+{unacked} never acknowledged)' if unacked else ''}\n"
              f"  received by the pipeline (incl. redeliveries) {received}\n"
              f"  processed (distinct device/seq) {len(seen)}\n"
              f"  fall alerts expected {n_falls}, raised {raised}\n"
              f"  lost {lost}", flush=True)
        return 0 if lost == 0 and raised >= n_falls and not unacked else 1
    finally:
        for p in pipe:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        broker.close()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__" and len(sys.argv) == 9 and sys.argv[1] == "child":
    sys.exit(child(*sys.argv[2:]))
