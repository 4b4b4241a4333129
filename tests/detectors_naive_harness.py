"""Twin runs for the per-device loop tests: the vectorised detectors (linked, through a real
StateStore, as the pipeline runs them) and `detectors.naive.NaiveLoop`, fed the same
receipts and status messages, findings compared tick by tick."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detectors.base import Findings, TickState
from detectors.baseline import BaselineDeviation
from detectors.naive import LoopFinding, NaiveLoop
from detectors.registry import DETECTORS, link
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import StateStore
from simulators.physiology import Chunk

Key = tuple[str, int, int, bool]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def vector_records(found: list[Findings]) -> list[tuple[Key, float, dict[str, Any]]]:
    out = []
    for f in found:
        for i in range(len(f)):
            ev = {k: _plain(v[i]) for k, v in f.evidence.items()}
            out.append(((f.kind, int(f.row[i]), int(f.severity[i]), bool(f.active[i])),
                        float(f.onset_ts[i]), ev))
    return out


def loop_records(found: list[LoopFinding]) -> list[tuple[Key, float, dict[str, Any]]]:
    return [((k, r, s, a), float(o), {key: _plain(v) for key, v in ev.items()})
            for k, r, s, a, o, ev in found]


def _same(a: Any, b: Any, key: str) -> bool:
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        # device_offline rounds silent_s to 0.1 (NumPy and Python round a half apart)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.11 if key == "silent_s" else 1e-9)
    return bool(a == b)


def assert_same(vec: list[Findings], loop: list[LoopFinding], where: str) -> list[Key]:
    """Both sides found the same (kind, row, severity, active) multiset, with equal onsets
    and evidence; returns the keys."""
    v = sorted(vector_records(vec), key=lambda x: (x[0], x[1]))
    lo = sorted(loop_records(loop), key=lambda x: (x[0], x[1]))
    vk, lk = [x[0] for x in v], [x[0] for x in lo]
    if vk != lk:
        only_v, only_l = Counter(vk) - Counter(lk), Counter(lk) - Counter(vk)
        raise AssertionError(f"{where}: vector only {sorted(only_v)}, loop only {sorted(only_l)}")
    for (key, vo, vev), (_, lo_, lev) in zip(v, lo, strict=True):
        assert (vo != vo and lo_ != lo_) or vo == lo_, (where, key, "onset", vo, lo_)
        assert set(vev) == set(lev), (where, key, sorted(vev), sorted(lev))
        for name in vev:
            assert _same(vev[name], lev[name], name), (where, key, name, vev[name], lev[name])
    return vk


class Twin:
    """Vector detectors and the loop over the same devices, parameters and input."""

    def __init__(self, devices: DeviceTable, started_at: float,
                 params: Mapping[str, Sequence[Any]] | None = None,
                 baseline: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 utc_offset_s: float = 8 * 3600.0) -> None:
        n = len(devices)
        self.devices, self.started_at, self.offset = devices, started_at, utc_offset_s
        self.store = StateStore(n)
        params = params or {}
        self.vector = link([cls(devices, params.get(name)) for name, cls in DETECTORS.items()])
        base = next(d for d in self.vector if isinstance(d, BaselineDeviation))
        if baseline:  # a fitted table (vital -> (median, scale), each (rows, 24))
            for v, (med, scale) in baseline.items():
                base.med[v][:] = med
                base.scale[v][:] = scale
            base.fitted = True
        self.baseline = base
        self.loop = NaiveLoop(devices, params, started_at=started_at, baseline=base)
        self.seen: Counter[Key] = Counter()
        self.ticks = 0

    def receive(self, batch: SampleColumns, at: float) -> None:
        if len(batch):
            batch = batch.sorted_by_row_ts()
            self.store.append(batch, at)
            self.loop.receive(batch, at)

    def status(self, row: int, online: bool, battery: float | None, at: float,
               ts: float | None = None) -> None:
        self.store.set_status(row, online, battery, at, ts)
        self.loop.status(row, online, battery, at, ts)

    def tick(self, now: float) -> None:
        state = TickState(new=self.store.take_pending(), store=self.store,
                          devices=self.devices, started_at=self.started_at,
                          utc_offset_s=self.offset)
        found: list[Findings] = []
        for d in self.vector:
            found += d.update(state, now)
        got = self.loop.tick(now, self.offset)
        self.seen.update(assert_same(found, got, f"tick {self.ticks} at {now}"))
        self.ticks += 1

    def kinds(self, active: bool | None = None) -> set[str]:
        return {k[0] for k in self.seen if active is None or k[3] == active}


def chunk_samples(chunk: Chunk) -> tuple[SampleColumns, np.ndarray]:
    """A simulator chunk's delivered samples and their arrival times (true time + delay)."""
    sent = chunk.sent
    rows = np.nonzero(sent)[0]
    c = SampleColumns.empty(len(rows))
    c.row[:] = rows
    c.ts[:] = chunk.ts[sent]
    c.seq[:] = chunk.seq[sent]
    for v in ("hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity", "battery"):
        getattr(c, v)[:] = getattr(chunk, v)[sent]
    c.fall[:] = chunk.fall[sent]
    c.worn[:] = chunk.worn[sent]
    return c, (chunk.true_t + chunk.delay)[sent]
