"""A per-sample, plain-Python model of decode + de-duplicate + append, for equivalence tests.

Slow and obvious on purpose: every contract rule for a vital-sign sample is written out
for one message and one sample at a time. State follows StateStore's documented rules:
per row, the batch's last value of a vital replaces the held one only if strictly newer;
the raw ring keeps the last `raw_capacity` samples in append order; the minute ring holds
per-minute means of the samples of each (row, minute) group, with an open accumulator for
the newest minute and late minutes written only into empty slots.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ingest.devices import DeviceTable
from ingest.samples import PLAUSIBLE, VITALS

FLOATS = (*VITALS, "battery")
NUMBERS = ("ts", "seq", *FLOATS)
BOOLS = ("fall", "worn")
CODEC = {
    "hr": (20.0, 1.0),
    "spo2": (50.0, 4.0),
    "rr": (3.0, 4.0),
    "temp_c": (30.0, 16.0),
    "sbp": (50.0, 1.0),
    "dbp": (25.0, 1.0),
}


@dataclass
class Sample:
    row: int
    ts: float
    seq: int  # -1 when absent
    values: dict[str, float]  # float32-rounded plausible values only
    battery: float | None
    fall: int  # -1, 0, 1
    worn: int


@dataclass
class Minute:
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: Counter[str] = field(default_factory=Counter)
    flags: set[str] = field(default_factory=set)

    def add(self, other: Minute) -> None:
        for v, s in other.sums.items():
            self.sums[v] += s
        self.counts.update(other.counts)
        self.flags |= other.flags


def _seq32(seq: int) -> int:
    """The ring keeps sequence numbers as int32 (wrapping)."""
    return int(np.int64(seq).astype(np.int32))


def _typed(obj: Any) -> bool:
    """The strict field types of the contract (ints may be written as floats; bools are bools)."""
    if not isinstance(obj, dict):
        return False
    for name in NUMBERS:
        x = obj.get(name)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
            return False
    for name in BOOLS:
        if obj.get(name) is not None and not isinstance(obj[name], bool):
            return False
    return obj.get("device_id") is None or isinstance(obj["device_id"], str)


class Reference:
    """Decode and state for every device, one message and one sample at a time."""

    def __init__(self, devices: DeviceTable, raw_capacity: int, minute_capacity: int) -> None:
        self.devices, self.c, self.m = devices, raw_capacity, minute_capacity
        self.latest: dict[tuple[int, str], tuple[float, float]] = {}  # (row, vital) -> (x, ts)
        self.battery: dict[int, float] = {}
        self.battery_ts: dict[int, float] = {}
        self.last_ts: dict[int, float] = {}
        self.last_received: dict[int, float] = {}
        self.raw: dict[int, list[Sample]] = defaultdict(list)
        self.acc: dict[int, tuple[int, Minute]] = {}
        self.ring: dict[tuple[int, int], tuple[int, Minute]] = {}  # (row, slot) -> minute
        self.totals: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.reasons: list[tuple[float, str]] = []  # (received_at, reason)

    # -------------------------------------------------------------- decode
    def _decode(self, topic: str, payload: bytes, received_at: float) -> list[Sample] | str:
        parts = topic.split("/")
        device = parts[3] if len(parts) == 5 else "_"
        row = self.devices.row_of_device.get(device)
        if row is None:
            return "unknown_device"
        if len(parts) != 5 or self.devices.town_ids[row] != parts[2]:
            return "wrong_town"
        if len(payload) > 64 * 1024:
            return "too_large"
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return "invalid_json"
        if not _typed(msg):
            return "schema"
        batch = msg.get("samples")
        if batch is not None:
            if not isinstance(batch, list) or not all(_typed(s) for s in batch):
                return "schema"
            if len(batch) > 600:
                return "too_large"
            if not batch:
                return "schema"
            if msg.get("device_id") is not None and msg["device_id"] != device:
                return "device_mismatch"  # the batch's own device_id, as its samples'
        else:
            batch = [msg]
        for s in batch:  # the first problem in sample order names the reason
            if s.get("ts") is None:
                return "schema"
            if s.get("device_id") is not None and s["device_id"] != device:
                return "device_mismatch"
        for s in batch:
            seq, battery = s.get("seq"), s.get("battery")
            if not s["ts"] > 0 or (seq is not None and (seq < 0 or seq != int(seq))):
                return "schema"
            if battery is not None and battery != int(battery):
                return "schema"
        samples = []
        for s in batch:
            values = {}
            for v in FLOATS:
                if s.get(v) is None:
                    continue
                with np.errstate(over="ignore"):
                    x = float(np.float32(s[v]))
                lo, hi = PLAUSIBLE[v]
                if lo <= x <= hi:
                    values[v] = x
                else:
                    self.faults[v] += 1
            if s["ts"] > received_at + 300.0:
                self.totals["future"] += 1
                continue
            seq = s.get("seq")
            samples.append(
                Sample(
                    row,
                    float(s["ts"]),
                    int(seq) if seq is not None and seq <= 2**62 else -1,
                    {v: x for v, x in values.items() if v != "battery"},
                    values.get("battery"),
                    -1 if s.get("fall") is None else int(s["fall"]),
                    -1 if s.get("worn") is None else int(s["worn"]),
                )
            )
        return samples or "future_ts"

    # -------------------------------------------------------------- handle
    def handle(self, messages: list[tuple[str, bytes, float]], now: float) -> None:
        batch: list[Sample] = []
        self.totals["received"] += len(messages)
        for topic, payload, received_at in messages:
            out = self._decode(topic, payload, received_at)
            if isinstance(out, str):
                self.reasons.append((received_at, out))
            else:
                self.totals["accepted"] += 1
                batch.extend(out)
        batch.sort(key=lambda s: (s.row, s.ts))  # stable: arrival order breaks ties
        seen: set[tuple[int, float, int]] = set()
        kept = []
        for s in batch:
            key = (s.row, s.ts, _seq32(s.seq))
            held = {(r.ts, _seq32(r.seq)) for r in self.raw[s.row][-self.c :]}
            if key in seen or key[1:] in held:
                self.totals["duplicates"] += 1
            else:
                kept.append(s)
            seen.add(key)
        self.totals["samples"] += len(kept)
        rows = sorted({s.row for s in kept})
        for row in rows:
            mine = [s for s in kept if s.row == row]
            self._append_row(row, mine, now)

    def _append_row(self, row: int, samples: list[Sample], now: float) -> None:
        self.last_received[row] = now
        self.last_ts[row] = max(self.last_ts.get(row, -np.inf), samples[-1].ts)
        for v in (*VITALS, "worn"):
            have = [s for s in samples if (s.worn >= 0 if v == "worn" else v in s.values)]
            if have:
                s = have[-1]
                x = float(s.worn) if v == "worn" else s.values[v]
                if (row, v) not in self.latest or s.ts > self.latest[row, v][1]:
                    self.latest[row, v] = (x, s.ts)
        for s in samples:  # a reading older than the held one does not replace it
            if s.battery is not None and s.ts >= self.battery_ts.get(row, -np.inf):
                self.battery[row], self.battery_ts[row] = s.battery, s.ts
        self.raw[row].extend(samples)
        groups: dict[int, Minute] = {}
        for s in samples:
            g = groups.setdefault(int(np.floor(s.ts / 60.0)), Minute())
            for v, x in s.values.items():
                g.sums[v] += x
                g.counts[v] += 1
            g.flags |= {"worn"} if s.worn == 1 else {"not_worn"} if s.worn == 0 else set()
            g.flags |= {"fall"} if s.fall == 1 else set()
        old = self.acc.get(row, (-1, Minute()))[0]
        newest = max(groups)
        if newest > old >= 0:  # the open minute is complete: into the ring before anything else
            self._write(row, *self.acc[row], only_empty=False)
        for minute, g in sorted(groups.items()):
            if minute == old:
                self.acc[row][1].add(g)
            elif minute == newest and minute > old:
                self.acc[row] = (minute, g)
            elif minute > old:
                self._write(row, minute, g, only_empty=False)
            elif minute > max(old, newest) - self.m:  # late, but inside the ring
                self._write(row, minute, g, only_empty=True)

    def _write(self, row: int, minute: int, g: Minute, only_empty: bool) -> None:
        key = (row, minute % self.m)
        if only_empty and key in self.ring and self.ring[key][0] == minute:
            return
        self.ring[key] = (minute, g)

    # -------------------------------------------------------------- reads
    def minute_values(self, row: int, minutes: np.ndarray) -> dict[str, list[float]]:
        """Expected minute_series values (quantised as the ring stores them), worn and fall."""
        out: dict[str, list[float]] = {v: [] for v in (*VITALS, "worn", "fall")}
        for minute in minutes.tolist():
            acc = self.acc.get(row)
            slot = self.ring.get((row, minute % self.m))
            g = None
            if acc and acc[0] == minute:
                g = acc[1]
            elif slot and slot[0] == minute:
                g = slot[1]
            flags = g.flags if g is not None else set()
            out["worn"].append(1 if "worn" in flags else 0 if "not_worn" in flags else -1)
            out["fall"].append(float("fall" in flags))
            for v in VITALS:
                if g is None or not g.counts[v]:
                    out[v].append(np.nan)
                    continue
                mean = g.sums[v] / g.counts[v]
                if v == "activity" or (acc and acc[0] == minute):
                    out[v].append(mean)  # the open minute and activity are not coded
                    continue
                offset, scale = CODEC[v]
                code = min(max(round((mean - offset) * scale), 0), 254)
                out[v].append(code / scale + offset)
        return out
