"""`carewatch bench [SECTION ...] [--quick] [--json]`: the performance benchmark.

Each section measures CareWatch and, in the same run, a baseline (Mosquitto's own C clients,
a naive consumer, a per-device Python loop), because on a shared machine ratios are what
stay comparable from run to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

SECTIONS = (
    "ingest",
    "decode",
    "detect",
    "replay",
    "latency",
    "memory",
    "scale",
    "simulate",
    "alerts",
    "store",
    "sinks",
)


def _ingest(quick: bool) -> dict[str, float]:
    from carewatch.bench.ingest import bench_ingest

    return bench_ingest(quick=quick)


def _decode(quick: bool) -> dict[str, float]:
    from carewatch.bench.decode import bench_decode

    return bench_decode(samples=60_000 if quick else 600_000, reps=2 if quick else 4)


def _detect(quick: bool) -> dict[str, float]:
    from carewatch.malloc import keep_heap_pages
    from detectors.bench import bench_detect

    out = bench_detect(sizes=(1_000, 10_000, 100_000), quick=quick)
    out["heap_pages_kept"] = 1.0 if keep_heap_pages() else 0.0  # as in every carewatch process
    return out


def _replay(quick: bool) -> dict[str, float]:
    from carewatch.bench.replay import bench_replay

    return bench_replay(residents=20 if quick else 200, hours=1 if quick else 24)


def _scale(quick: bool) -> dict[str, float]:
    from carewatch.bench.scale import bench_scale

    return bench_scale(quick=quick, cpu_rounds=1 if quick else 9)


def _latency(quick: bool) -> dict[str, float]:
    from carewatch.bench.latency import bench_latency

    if quick:
        return bench_latency(rates=(10_000.0,), falls=10, sustained=10)
    return bench_latency(rates=(1_000.0, 10_000.0), falls=40, sustained=40)


def _simulate(quick: bool) -> dict[str, float]:
    from simulators.bench import bench_generate

    return bench_generate(residents=50 if quick else 200, hours=24)


def _alerts(quick: bool) -> dict[str, float]:
    from alerts.bench import bench_alerts

    return bench_alerts(open_alerts=200 if quick else 1000)


def _store(quick: bool) -> dict[str, float]:
    from alerts.bench_store import bench_store

    return bench_store(cycles=20 if quick else 500)


def _sinks(quick: bool) -> dict[str, float]:
    from ingest.sinks.bench import bench_sinks

    return {k: float(v) for k, v in bench_sinks(samples=50_000 if quick else 200_000).items()}


def _memory(quick: bool) -> dict[str, float]:
    from carewatch.bench.ingest import bench_memory

    return bench_memory(sizes=(10_000,) if quick else (10_000, 100_000))


RUNNERS: dict[str, Callable[[bool], dict[str, float]]] = {
    "ingest": _ingest,
    "decode": _decode,
    "detect": _detect,
    "replay": _replay,
    "latency": _latency,
    "scale": _scale,
    "simulate": _simulate,
    "alerts": _alerts,
    "store": _store,
    "sinks": _sinks,
    "memory": _memory,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run the performance benchmark")
    p.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of {', '.join(SECTIONS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="a reduced run, under a minute")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    chosen = args.sections or list(SECTIONS)
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        print(f"carewatch bench: no section {', '.join(map(repr, unknown))}; expected any of "
              f"{', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "quick": bool(args.quick),
    }
    failed = False
    for name in chosen:
        t0 = time.perf_counter()
        try:
            section = RUNNERS[name](args.quick)
        except Exception as exc:  # one failing section must not hide the others' figures
            failed = True
            print(f"bench {name}: FAILED: {exc!r}", file=sys.stderr)
            continue
        for key, value in section.items():
            results[f"{name}.{key}"] = value
        if not args.json:
            print(f"== {name} ({time.perf_counter() - t0:.1f} s)")
            for key, value in section.items():
                print(
                    f"  {key:42s} {value:>14,.3f}"
                    if isinstance(value, float)
                    else f"  {key:42s} {value!s:>14}"
                )
            sys.stdout.flush()
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
    return 1 if failed else 0
