"""Scale-out benchmark: the same traffic through `carewatch run --workers 1` and `--workers 2`.

Publishers (`mosquitto_pub -l`, one per topic) send to devices spread over the towns of
both workers; throughput is the samples stored by all workers (read from their /metrics)
divided by the time from the first publish to the last sample stored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

from carewatch.bench.ingest import LinePublishers
from carewatch.workers import partition_towns, probe_samples, probe_subscribed
from config.generate import demo_registry
from config.loader import parse_config
from ingest.broker import MosquittoProcess, free_port

PUBLISHERS_PER_WORKER = 2


def _run(workers: int, reg: Path, files: list[tuple[str, Path]], total: int, tmp: Path) -> float:
    with MosquittoProcess(persistence=False) as broker:
        http = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carewatch.cli",
                "--log-level",
                "WARNING",
                "run",
                "--config",
                str(reg),
                "--workers",
                str(workers),
                "--broker",
                broker.url,
                "--http",
                f"127.0.0.1:{http}",
                "--data-dir",
                str(tmp / f"data-{workers}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports = [http + 1 + k for k in range(workers)] if workers > 1 else [http]
        try:
            deadline = time.monotonic() + 60
            while not all(probe_subscribed(p) for p in ports):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not come up")
                time.sleep(0.2)
            t0 = time.perf_counter()
            pubs = LinePublishers(broker.port, files, 1)
            while sum(max(0.0, probe_samples(p)) for p in ports) < total:
                if time.perf_counter() - t0 > 900:
                    raise RuntimeError("timed out")
                time.sleep(0.05)
            seconds = time.perf_counter() - t0
            pubs.finish()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return total / seconds


def bench_scale(msgs_per_publisher: int = 20_000, batch: int = 10) -> dict[str, float]:
    """Samples/s with 1 and 2 workers on the same traffic, and their ratio (target ≥ 1.7)."""
    data = demo_registry(200, seed=0)
    data["storage"] = {"sink": "none"}
    config = parse_config(data)
    parts = partition_towns(config, 2)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="carewatch-bench-scale-") as d:
        tmp = Path(d)
        reg = tmp / "reg.yaml"
        reg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        files: list[tuple[str, Path]] = []
        t0 = time.time() - 24 * 3600
        for part in parts:
            chosen = [r for r in config.residents if r.town in set(part)][:PUBLISHERS_PER_WORKER]
            for r in chosen:
                path = tmp / f"{r.device}.txt"
                with open(path, "wb") as fh:
                    for i in range(msgs_per_publisher):
                        samples = [
                            {
                                "ts": round(t0 + (i * batch + k) * 0.01, 3),
                                "seq": i * batch + k,
                                "hr": 70,
                                "spo2": 97,
                                "rr": 14,
                                "activity": 0.2,
                                "worn": True,
                            }
                            for k in range(batch)
                        ]
                        fh.write(orjson.dumps({"samples": samples}) + b"\n")
                files.append((f"carewatch/v1/{r.town}/{r.device}/vitals", path))
        total = len(files) * msgs_per_publisher * batch
        out["one_worker_samples_per_s"] = _run(1, reg, files, total, tmp)
        out["two_workers_samples_per_s"] = _run(2, reg, files, total, tmp)
    out["two_over_one"] = out["two_workers_samples_per_s"] / out["one_worker_samples_per_s"]
    return out
