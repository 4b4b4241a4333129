"""Every registered detector's rules, one device and one sample at a time in plain Python.

The benchmark's baseline (`detectors.bench`) and a reference for the vectorised detectors:
`tests/test_detectors_naive.py` checks that both find the same findings on the same input,
tick by tick. Per device it keeps plain floats, lists and tuples, and per sample it runs,
in time order, what the vectorised rules run:

- the sustained single-vital rules (hypoxemia, brady/tachycardia, brady/tachypnoea, fever,
  hypothermia): per-vital freshness, worn, motion and recovery gating, implausible jumps and
  flat-lines (`detectors.quality`), then runs with gap and stray tolerance, two severity
  levels, hysteresis and clear time (`detectors.runs.Episodes`), copd thresholds;
- blood pressure (two readings in a row), NEWS2 (latest values no older than max_age_s,
  motion-gated HR and SpO2, copd scale 2), baseline deviation (robust z against the
  resident's hour-of-day baseline), fall (device flag, impact then stillness, clearing and
  lapse), inactivity and not worn (awake hours, breaks);
- each tick, device offline (silence since pipeline start or last receipt, Last Will) and
  low battery (hysteresis; onset at the first of the tick's trailing low readings), only for
  devices whose inputs changed or whose silence came due.

Parameters are each row's own (`detectors.naive_plan`, from the same models as the
vectorised detectors). Findings carry kind, row, severity, active, onset and the same
evidence. The baseline table itself is fitted hourly by `BaselineDeviation` (not tick work);
the loop reads a plain copy of it, refreshed when that detector refits, and scores every
sample itself.

Input mirrors the pipeline: `receive` for accepted samples (what `StateStore.append` sees),
`status` for status / Last Will messages (`StateStore.set_status`), `tick` for the detector
pass.

Nothing is left out but the device-offline rule's handling of the pipeline's own broker
outages (`TickState.link_*`): the loop is compared and benchmarked on a steady link, where
that part never applies. (The low-battery rule judges a device when its reading changes in
the vectorised rule, when one arrives in the loop; with a threshold at or below
`clear_above`, as every default and sensible override has, a repeated reading changes
nothing, so the two decide the same.)
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

from detectors.naive_plan import NAN, build_plans, f32
from detectors.naive_rules import Device, sample_rules
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns

# kind, row, severity, active, onset, evidence
LoopFinding = tuple[str, int, int, bool, float, dict[str, Any]]
_COLS = ("row", "ts", "hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity", "fall", "worn")


class BaselineSource(Protocol):
    """What the loop reads of `detectors.baseline.BaselineDeviation`: its fitted table."""

    med_all: Any  # (vital, hour, row) float32
    scale_all: Any
    fits: int
    fit_rows: Any


class NaiveLoop:
    """The registered detectors' rules as a per-device Python loop (see the module doc)."""

    def __init__(self, devices: DeviceTable, params: Mapping[str, Sequence[Any]] | None = None,
                 *, started_at: float, baseline: BaselineSource | None = None) -> None:
        self.n = len(devices)
        self.started_at = started_at
        self.devices = [Device(plan) for plan in build_plans(devices, params)]
        self._pending: list[SampleColumns] = []
        self._offline_dirty: set[int] = set()
        self._battery_dirty: set[int] = set()
        self._due: list[tuple[float, int]] = []  # (when silence reaches offline_s, row)
        self._started = False
        self.baseline = baseline
        self._fits = -1
        self.med: list[list[float]] = [[] for _ in range(self.n)]  # row -> vital * 24 + hour
        self.scale: list[list[float]] = [[] for _ in range(self.n)]
        if baseline is not None:
            self.sync_baseline()

    # ---------------------------------------------------------------- inputs
    def receive(self, batch: SampleColumns, received_at: float) -> None:
        """Accepted samples sorted by (row, ts), received at `received_at` (pipeline clock)."""
        if not len(batch):
            return
        self._pending.append(batch)
        devs, off_dirty, bat_dirty = self.devices, self._offline_dirty, self._battery_dirty
        for row, t, b in zip(batch.row.tolist(), batch.ts.tolist(), batch.battery.tolist(),
                             strict=True):
            d = devs[row]
            d.rx = received_at
            if d.off_active or d.online == 0:
                off_dirty.add(row)
            if b == b:
                if not t < d.bat_ts:  # an older reading than the held one does not replace it
                    d.battery, d.bat_ts = b, t
                d.bat_tick.append((t, b))
                bat_dirty.add(row)

    def status(self, row: int, online: bool, battery: float | None, at: float,
               ts: float | None = None) -> None:
        """A status message (or the broker's Last Will) for `row`, received at `at`, with
        its own `ts` if it gave one."""
        d = self.devices[row]
        d.online = 1 if online else 0
        d.status_ts = at
        self._offline_dirty.add(row)
        reading_ts = at if ts is None else ts
        if battery is not None and not reading_ts < d.bat_ts:  # as in `receive`
            d.battery = f32(battery)  # the store holds battery as float32
            d.bat_ts = reading_ts
            self._battery_dirty.add(row)

    def sync_baseline(self) -> None:
        """Copy the baseline table: the rows of its latest refit, or all of it."""
        src = self.baseline
        if src is None:
            return
        if src.fits == self._fits + 1 and self._fits >= 0:
            for r in src.fit_rows.tolist():
                self.med[r] = src.med_all[:, :, r].ravel().tolist()
                self.scale[r] = src.scale_all[:, :, r].ravel().tolist()
        else:  # row -> [vital * 24 + hour]
            self.med = src.med_all.transpose(2, 0, 1).reshape(self.n, -1).tolist()
            self.scale = src.scale_all.transpose(2, 0, 1).reshape(self.n, -1).tolist()
        self._fits = src.fits

    # ---------------------------------------------------------------- the tick
    def tick(self, now: float, utc_offset_s: float = 8 * 3600.0) -> list[LoopFinding]:
        """Run every rule over the samples received since the last tick, then the clocked
        device rules; findings in no particular order."""
        out: list[LoopFinding] = []
        if self.baseline is not None and self.baseline.fits != self._fits:
            self.sync_baseline()
        parts, self._pending = self._pending, []
        if parts:
            cols = [getattr(parts[0], c).tolist() if len(parts) == 1 else
                    list(chain.from_iterable(getattr(p, c).tolist() for p in parts))
                    for c in _COLS]
            order: Any = range(len(cols[0]))
            if len(parts) > 1:  # as the store hands them over: by (row, ts), stable
                row_, ts_ = cols[0], cols[1]
                order = sorted(order, key=lambda i: (row_[i], ts_[i]))
            sample_rules(self, cols, order, utc_offset_s, out)
        self._clocked(now, out)
        return out

    def _clocked(self, now: float, out: list[LoopFinding]) -> None:
        devs = self.devices
        due = self._due
        if not self._started:  # every device is due offline_s after the pipeline started
            self._started = True
            for row, d in enumerate(devs):
                d.off_due = self.started_at + d.plan.offline[0]
                due.append((d.off_due, row))
            heapq.heapify(due)
        check = self._offline_dirty
        self._offline_dirty = set()
        # a millisecond early: float rounding of now - ref never skips the crossing tick
        while due and due[0][0] - 1e-3 <= now:
            when, row = heapq.heappop(due)
            if when == devs[row].off_due:  # else superseded by a later entry
                devs[row].off_due = NAN
                check.add(row)
        for row in check:
            self._offline(row, devs[row], now, out)
        if self._battery_dirty:
            for row in self._battery_dirty:
                self._battery(row, devs[row], now, out)
            self._battery_dirty = set()

    def _offline(self, row: int, d: Device, now: float, out: list[LoopFinding]) -> None:
        off_s, use_will = d.plan.offline
        ref = self.started_at if d.rx != d.rx else d.rx
        silent = now - ref
        late = silent >= off_s
        will = use_will and d.online == 0 and not d.rx > d.status_ts
        cond = late or will
        if not cond:  # wake up when the silence reaches offline_s
            when = ref + off_s
            if when != d.off_due:
                d.off_due = when
                heapq.heappush(self._due, (when, row))
        if cond == d.off_active:
            return
        if cond:
            d.off_onset = d.status_ts if will and not late else ref
        onset = d.off_onset
        d.off_active = cond
        if not cond:
            d.off_onset = NAN
        out.append(("device_offline", row, 2, cond, onset,
                    {"silent_s": round(silent, 1), "last_will": will}))

    def _battery(self, row: int, d: Device, now: float, out: list[LoopFinding]) -> None:
        thr, clear = d.plan.battery
        b = d.battery
        readings, d.bat_tick = d.bat_tick, []
        if not d.bat_active and b <= thr:
            onset = d.bat_ts
            # the held reading is the last of this tick's samples: back to the first of
            # their trailing run of low readings
            readings.sort(key=lambda x: x[0])  # stable, as the store sorts them by ts
            if readings and readings[-1] == (d.bat_ts, b):
                for t, level in reversed(readings):
                    if not level <= thr:
                        break
                    onset = t
            d.bat_active, d.bat_onset = True, onset
        elif d.bat_active and b > clear:
            d.bat_active = False
        else:
            return
        out.append(("low_battery", row, 1, d.bat_active, d.bat_onset, {"battery": b}))


__all__ = ["BaselineSource", "LoopFinding", "NaiveLoop"]
