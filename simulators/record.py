"""`carewatch simulate --record`: a labelled run written straight to the replay format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from simulators.encode import Encoder
from simulators.engine import Simulation
from simulators.faults import make_faults, status_topic, vitals_topic

CLOCK_TAIL_S = 1800.0  # clock lines after the last sample, so timers (escalation) run on
CLOCK_STEP_S = 60.0


def _line(t: float, topic: str | None = None, payload: bytes = b"", raw: bool = False) -> bytes:
    if topic is None:
        return b'{"t":%.3f}\n' % t
    if raw:  # not JSON: carried as text
        text = orjson.dumps(payload.decode("utf-8", "replace"))
        return b'{"t":%.3f,"topic":%s,"payload_raw":%s}\n' % (t, orjson.dumps(topic), text)
    return b'{"t":%.3f,"topic":%s,"payload":%s}\n' % (t, orjson.dumps(topic), payload)


Lines = list[tuple[float, bytes]]


def extra_lines(sim: Simulation, faults: bool, faults_per_hour: float = 30.0) -> Lines:
    """Status, fault and clock lines (few; built one by one), sorted by t."""
    pop, t0 = sim.phys.pop, sim.t0
    end = sim.end_t if sim.end_t is not None else t0
    out: list[tuple[float, bytes]] = []
    batt = pop.battery0
    topics = [status_topic(tw, d) for tw, d in zip(pop.towns, pop.device_ids, strict=True)]
    for r in range(pop.n):  # each device announces itself (retained on a real broker)
        hello = orjson.dumps({"online": True, "battery": int(batt[r]), "ts": round(t0 - 1.0, 2)})
        out.append((t0 - 1.0, _line(t0 - 1.0, topics[r], hello)))
    for t, r, status in sim.status_changes():
        if t < end:
            out.append((t, _line(t, topics[r], orjson.dumps(status))))
    if faults:
        towns = [tw.id for tw in sim.config.towns]
        for f in make_faults(sim.phys, t0 + 60, end, faults_per_hour, sim.seed, towns):
            out.append((f.t, _line(f.t, f.topic, f.payload, raw=not f.is_json)))
    for t in np.arange(end + CLOCK_STEP_S, end + CLOCK_TAIL_S + 1, CLOCK_STEP_S).tolist():
        out.append((t, _line(t)))
    out.sort(key=lambda x: x[0])
    return out


def _write_merged(f: BinaryIO, t: np.ndarray, buf: np.ndarray, off: np.ndarray,
                  small: Lines) -> None:
    """Write main lines (sorted t) with the few `small` lines interleaved in t order."""
    pos = np.searchsorted(t, [x[0] for x in small], side="right").tolist() if small else []
    start = 0
    for (_, line), p in zip(small, pos, strict=True):
        if p > start:
            f.write(buf[off[start]:off[p]].data)
            start = p
        f.write(line)
    if start < t.size:
        f.write(buf[off[start]:off[-1]].data)


def write_recording(sim: Simulation, path: str | Path | None,
                    faults: bool = False) -> dict[str, Any]:
    """Write the run as replay lines (None: generate and encode only, for benchmarks)."""
    pop = sim.phys.pop
    topics = [vitals_topic(tw, d) for tw, d in zip(pop.towns, pop.device_ids, strict=True)]
    enc = Encoder(topics, sim.batch, record=True)
    extras = extra_lines(sim, faults)
    pending: list[tuple[float, bytes]] = []
    started = time.perf_counter()
    cpu0 = time.process_time()
    samples = messages = 0
    sink: BinaryIO
    with (open(path, "wb") if path is not None else open("/dev/null", "wb")) as sink:
        ei = 0
        for chunk in sim.chunks():
            samples += int(chunk.sent.sum())
            e = enc.encode(chunk)
            messages += len(e)
            k1 = chunk.k0 + chunk.shape[1]
            total = sim.total_samples
            cutoff = float("inf") if total is not None and k1 >= total else sim.chunk_bounds_t(k1)
            cut = int(np.searchsorted(e.t, cutoff, side="left"))
            while ei < len(extras) and extras[ei][0] < cutoff:
                pending.append(extras[ei])
                ei += 1
            small = sorted((x for x in pending if x[0] < cutoff), key=lambda x: x[0])
            pending = [x for x in pending if x[0] >= cutoff]
            _write_merged(sink, e.t[:cut], e.buf, e.off[: cut + 1], small)
            for i in range(cut, len(e)):  # the few lines received after the next chunk starts
                pending.append((float(e.t[i]), e.message(i)))
        for _t, line in sorted(pending + extras[ei:], key=lambda x: x[0]):
            sink.write(line)
    wall = time.perf_counter() - started
    return {"samples": samples, "messages": messages, "residents": pop.n, "seconds": wall,
            "cpu_seconds": time.process_time() - cpu0, "samples_per_s": samples / max(wall, 1e-9)}
