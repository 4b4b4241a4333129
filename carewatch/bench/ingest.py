"""Ingest benchmark: Mosquitto's C clients (the ceiling), the CareWatch pipeline, and a naive
consumer, all fed by the same `mosquitto_pub -l` publisher processes in one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from carewatch.service import Service
from config.generate import demo_registry
from config.loader import parse_config
from config.models import BrokerSettings, Config
from ingest.broker import MosquittoProcess

PUBLISHERS = 2


def _payload_files(
    tmp: Path, config: Config, n_msgs: int, batch: int, tag: str = ""
) -> list[tuple[str, Path]]:
    """One (topic, file of payload lines) per publisher process; distinct ts/seq per sample."""
    out = []
    t0 = time.time() - 24 * 3600
    per = n_msgs // PUBLISHERS
    for p in range(PUBLISHERS):
        r = config.residents[p]
        topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
        path = tmp / f"pub{tag}-{p}-{batch}.txt"
        with open(path, "wb") as fh:
            for i in range(per):
                samples = [
                    {
                        "ts": round(t0 + (i * batch + k) * 0.01, 3),
                        "seq": i * batch + k,
                        "hr": 70 + k % 5,
                        "spo2": 97,
                        "rr": 14,
                        "activity": 0.05,
                        "worn": True,
                    }
                    for k in range(batch)
                ]
                body = samples[0] if batch == 1 else {"samples": samples}
                fh.write(orjson.dumps(body) + b"\n")
        out.append((topic, path))
    return out


class LinePublishers:
    """`mosquitto_pub -l` processes, one per (topic, file of payload lines).

    Their stdin is a pipe kept open until `finish()`: Mosquitto 2.0.11's `mosquitto_pub -l`
    disconnects at end of input even while messages are still queued (seen here: 37,862 of
    300,000 delivered), so end of input must come only once the consumer has everything.
    """

    def __init__(self, port: int, files: list[tuple[str, Path]], qos: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.writers: list[threading.Thread] = []
        for topic, path in files:
            proc = subprocess.Popen(
                ["mosquitto_pub", "-p", str(port), "-q", str(qos), "-t", topic, "-l"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            writer = threading.Thread(target=self._feed, args=(proc, path), daemon=True)
            writer.start()
            self.procs.append(proc)
            self.writers.append(writer)

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], path: Path) -> None:
        assert proc.stdin is not None
        with open(path, "rb") as fh, contextlib.suppress(BrokenPipeError, ValueError):
            shutil.copyfileobj(fh, proc.stdin, 1 << 20)
            proc.stdin.flush()

    def finish(self) -> None:
        """End the input (everything was received) and reap the processes."""
        for writer in self.writers:
            writer.join(timeout=60)
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _publish(broker: MosquittoProcess, files: list[tuple[str, Path]], qos: int) -> LinePublishers:
    return LinePublishers(broker.port, files, qos)


def c_subscriber(port: int, filters: list[str], count: int, probe: str,
                 qos: int = 1) -> subprocess.Popen[bytes]:
    """A `mosquitto_sub` on `filters` (one of which must match `probe`) that exits after
    `count` messages of traffic, returned once its subscription is live: a retained probe
    reaches it the moment it is, and is cleared before returning."""
    def retain(*body: str) -> None:
        subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-r", "-t", probe, *body],
                       check=True, timeout=10)

    retain("-m", "probe")
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-q", str(qos),
         *(a for f in filters for a in ("-t", f)),
         "-C", str(count + 2)],  # the probe, the empty message that clears it, the traffic
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sub.stdout is not None
        sub.stdout.readline()  # the retained probe: subscribed
        retain("-n")  # clear it
    except BaseException:
        sub.kill()
        sub.wait()
        raise
    return sub


def _ceiling(broker: MosquittoProcess, files: list[tuple[str, Path]], n: int, qos: int) -> float:
    """Mosquitto's C clients end to end: `mosquitto_pub -l` processes → `mosquitto_sub`."""
    sub = c_subscriber(broker.port, ["carewatch/v1/+/+/vitals"], n,
                       "carewatch/v1/bench/probe/vitals", qos)
    assert sub.stdout is not None
    t0 = time.perf_counter()
    pubs = _publish(broker, files, qos)
    sub.stdout.read()  # drain in large reads until it exits, so it never blocks on the pipe
    sub.wait(timeout=600)
    dt = time.perf_counter() - t0
    pubs.finish()
    return n / dt


def _wait(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


def measure_pipeline(
    broker: MosquittoProcess,
    config: Config,
    files: list[tuple[str, Path]],
    n_samples: int,
    qos: int,
    tmp: Path,
    client_id: str,
) -> float:
    """Samples per second through the real pipeline (ingest only: decode, validate, state)."""
    from carewatch.pipeline import Pipeline

    def ingest_only(cfg: Config, clock: Any, publisher: Any, **_: Any) -> Any:
        return Pipeline(cfg, clock, publisher), lambda: None

    service = Service(
        config,
        broker=BrokerSettings(url=broker.url, client_id=client_id),
        data_dir=tmp,
        build=ingest_only,
    )
    service.start()
    try:
        if not service.edge.wait_connected(10):
            raise RuntimeError("pipeline could not connect to the benchmark broker")
        if not _wait(lambda: service.edge.counters.subscribed, 10):
            raise RuntimeError("pipeline subscription not acknowledged")
        metrics = service.pipeline.metrics
        totals = metrics.totals
        t0 = time.perf_counter()
        pubs = _publish(broker, files, qos)
        try:
            got, t_last = 0, t0
            while got < n_samples:
                # Polling a counter, slowly: this thread shares the pipeline's process and
                # GIL, and waking every 5 ms cost the pipeline 13-26 % of its rate (paired
                # runs). The end time is the pipeline's own (`counted_at`), not the poll's.
                time.sleep(0.1)
                now_count = totals["samples"] + totals["duplicates"]
                now = time.perf_counter()
                if now_count != got:
                    got, t_last = now_count, metrics.counted_at
                elif qos == 0 and now - t_last > 5:
                    break  # QoS 0 may lose messages under overload: rate of what arrived
                if now - t0 > 900:
                    raise RuntimeError(f"pipeline got {got} of {n_samples} samples")
        finally:
            pubs.finish()
    finally:
        service.stop()
    return got / (t_last - t0)


def measure_naive(
    broker: MosquittoProcess, files: list[tuple[str, Path]], n_msgs: int, qos: int
) -> float:
    """Messages per second for the naive consumer: json.loads per message, a dict per sample,
    Python lists, all in paho's callback."""
    import json

    columns: dict[str, list[Any]] = {k: [] for k in ("device", "ts", "hr", "spo2", "rr")}
    count = [0]
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        samples = body.get("samples", [body])
        device = msg.topic.split("/")[3]
        for s in samples:
            row = {
                "device": device,
                "ts": float(s["ts"]),
                "hr": s.get("hr"),
                "spo2": s.get("spo2"),
                "rr": s.get("rr"),
            }
            for k, v in row.items():
                columns[k].append(v)
        count[0] += 1
        if count[0] >= n_msgs:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="naive-bench",
        protocol=mqtt.MQTTv5,
    )
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("carewatch/v1/+/+/vitals", qos=qos)
    subscribed.wait(10)
    t0 = time.perf_counter()
    pubs = _publish(broker, files, qos)
    done.wait(900)
    dt = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    pubs.finish()
    return count[0] / dt


def bench_ingest(quick: bool = False, seconds: float = 60.0) -> dict[str, float]:
    """Run every ingest measurement; keys follow `carewatch bench --json`."""
    config = parse_config(demo_registry(max(PUBLISHERS, 21), seed=0))
    single_n = 20_000 if quick else int(22_000 * seconds)
    batch_n = 4_000 if quick else int(20_000 * seconds)
    out: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="carewatch-bench-") as d,
        MosquittoProcess(persistence=False) as broker,
    ):
        tmp = Path(d)
        single = _payload_files(tmp, config, single_n, 1)
        batch = _payload_files(tmp, config, batch_n, 10)
        single_n = (single_n // PUBLISHERS) * PUBLISHERS
        batch_n = (batch_n // PUBLISHERS) * PUBLISHERS
        out["broker_ceiling_single_msgs_per_s"] = _ceiling(broker, single, single_n, 1)
        out["broker_ceiling_batch_samples_per_s"] = _ceiling(broker, batch, batch_n, 1) * 10
        out["single_msgs_per_s"] = measure_pipeline(broker, config, single, single_n, 1, tmp, "b1")
        out["batch_samples_per_s"] = measure_pipeline(
            broker, config, batch, batch_n * 10, 1, tmp, "b2"
        )
        out["batch_msgs_per_s"] = out["batch_samples_per_s"] / 10
        out["qos0_single_msgs_per_s"] = measure_pipeline(
            broker, config, single, single_n, 0, tmp, "b3"
        )
        # the naive consumer is slow: its rate is measured on at most 100k / 20k messages
        naive_single_n = min(single_n, 100_000)
        naive_batch_n = min(batch_n, 20_000)
        naive_single = _payload_files(tmp, config, naive_single_n, 1, tag="naive")
        naive_batch = _payload_files(tmp, config, naive_batch_n, 10, tag="naive")
        out["baseline_single_msgs_per_s"] = measure_naive(broker, naive_single, naive_single_n, 1)
        out["baseline_batch_samples_per_s"] = (
            measure_naive(broker, naive_batch, naive_batch_n, 1) * 10
        )
    out["single_vs_ceiling"] = out["single_msgs_per_s"] / out["broker_ceiling_single_msgs_per_s"]
    out["batch_vs_ceiling"] = out["batch_samples_per_s"] / out["broker_ceiling_batch_samples_per_s"]
    out["single_vs_baseline"] = out["single_msgs_per_s"] / out["baseline_single_msgs_per_s"]
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(sizes: tuple[int, ...] = (10_000, 100_000)) -> dict[str, float]:
    """State bytes per device-day (rings sized for 24 h at 10 s sampling), and the resident
    set size of a whole pipeline (state, detectors, alert engine) at each size, each built
    in a fresh process (in one that already ran other sections, freed pages are reused and
    the growth of RSS says little)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from ingest.state import StateStore

    per_day = StateStore(1_000).bytes_per_device_day()
    out = {"bytes_per_device_day": per_day, "mib_per_1000_device_days": per_day * 1000 / 2**20}
    for n in sizes:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            grown = pool.submit(_pipeline_rss_growth, n).result()
        label = f"{n // 1000}k"
        out[f"pipeline_rss_mib_{label}"] = grown / 2**20
        out[f"pipeline_bytes_per_device_{label}"] = grown / n
    return out


def _pipeline_rss_growth(n: int) -> int:
    """RSS growth from building an n-device pipeline and running one tick, with the heap
    kept as every carewatch process keeps it (`carewatch.malloc`)."""
    import gc

    from carewatch.malloc import keep_heap_pages

    keep_heap_pages()
    from carewatch.app import build_pipeline
    from carewatch.clock import SimClock
    from ingest.publish import ListPublisher

    config = parse_config(demo_registry(n, seed=0))
    config = config.model_copy(
        update={"storage": config.storage.model_copy(update={"sink": "none"})}
    )
    gc.collect()
    before = _rss_bytes()
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-mem-") as d:
        pipeline, close = build_pipeline(
            config, SimClock(1764316800.0), ListPublisher(), data_dir=Path(d), replay=True
        )
        pipeline.tick()
        after = _rss_bytes()
        close()
    return after - before
