"""Scale-out benchmark: the same traffic through `carewatch run --workers 1` and `--workers 2`.

Two senders (`carewatch.bench.blast`: pre-encoded QoS 1 packets, no per-message Python), one
per worker's towns, send 10-sample messages round-robin over every device of the fleet;
throughput is the samples stored by all workers (read from their /metrics) divided by the
time from the first publish to the last sample stored. A worker that sheds messages (inbox
full) fails the run instead of leaving it waiting for samples that will never come.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from carewatch.bench.blast import write_packets
from carewatch.workers import (
    partition_towns,
    probe_metric,
    probe_samples,
    probe_subscribed,
    supervisor_argv,
)
from config.generate import demo_registry
from config.loader import parse_config
from ingest.broker import MosquittoProcess, free_port


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(workers: int, reg: Path, blasts: list[tuple[Path, int]], total: int,
         tmp: Path) -> tuple[float, float]:
    """Samples/s, and the broker's CPU use over the run in cores."""
    with MosquittoProcess(persistence=False) as broker:
        http = free_port()
        proc = subprocess.Popen(
            supervisor_argv(reg, workers, broker.url, http, tmp / f"data-{workers}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports = [http + 1 + k for k in range(workers)] if workers > 1 else [http]
        senders: list[subprocess.Popen[bytes]] = []
        try:
            deadline = time.monotonic() + 60
            while not all(probe_subscribed(p) for p in ports):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not come up")
                time.sleep(0.2)
            assert broker.proc is not None
            t0, broker_cpu0 = time.perf_counter(), _cpu_s(broker.proc.pid)
            senders = [
                subprocess.Popen([sys.executable, "-m", "carewatch.bench.blast",
                                  str(broker.port), str(path), f"bench-blast-{k}", str(n)])
                for k, (path, n) in enumerate(blasts)
            ]
            while sum(max(0.0, probe_samples(p)) for p in ports) < total:
                if any(probe_metric(p, "carewatch_inbox_shed_total") > 0 for p in ports):
                    raise RuntimeError("a worker shed messages (its inbox was full)")
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("timed out")
                time.sleep(0.05)
            seconds = time.perf_counter() - t0
            broker_cores = (_cpu_s(broker.proc.pid) - broker_cpu0) / seconds
        finally:
            for s in senders:
                try:
                    s.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    s.kill()
                    s.wait()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return total / seconds, broker_cores


def bench_scale(samples_per_device: int = 4_000, batch: int = 10, residents: int = 200
                ) -> dict[str, float]:
    """Samples/s with 1 and 2 workers on the same traffic, and their ratio (target ≥ 1.7).

    Every resident's device sends `samples_per_device` samples (1 s apart, in `batch`-sample
    messages), interleaved across the fleet, from one sender per worker's towns."""
    data = demo_registry(residents, seed=0)
    data["storage"] = {"sink": "none"}
    config = parse_config(data)
    parts = partition_towns(config, 2)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-scale-") as d:
        tmp = Path(d)
        reg = tmp / "reg.yaml"
        reg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        t0 = time.time() - 24 * 3600
        blasts: list[tuple[Path, int]] = []
        for k, part in enumerate(parts):
            devices = [r for r in config.residents if r.town in set(part)]
            path = tmp / f"blast-{k}.bin"
            blasts.append((path, write_packets(path, _messages(devices, samples_per_device,
                                                               batch, t0))))
        total = sum(n for _p, n in blasts) * batch
        # the broker shares the two cores: its CPU use says what is left for the workers
        out["one_worker_samples_per_s"], out["broker_cores_one"] = _run(1, reg, blasts,
                                                                        total, tmp)
        out["two_workers_samples_per_s"], out["broker_cores_two"] = _run(2, reg, blasts,
                                                                         total, tmp)
        out["devices"] = float(len(config.residents))
    out["two_over_one"] = out["two_workers_samples_per_s"] / out["one_worker_samples_per_s"]
    return out


def _messages(devices: list[Any], samples: int, batch: int, t0: float
              ) -> Iterator[tuple[str, bytes]]:
    """Round-robin over the devices: message i of every device, then message i + 1."""
    for i in range(samples // batch):
        for r in devices:
            body = [{"ts": round(t0 + i * batch + k, 3), "seq": i * batch + k, "hr": 70,
                     "spo2": 97, "rr": 14, "activity": 0.2, "worn": True}
                    for k in range(batch)]
            yield f"carewatch/v1/{r.town}/{r.device}/vitals", orjson.dumps({"samples": body})
