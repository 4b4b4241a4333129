"""Device rules evaluated against the pipeline clock each tick: device offline, low battery."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from detectors.base import Findings, TickState
from detectors.params import DetectorParams, ParamTable, n_rows
from detectors.quality import f32_threshold
from detectors.runs import rank_groups
from ingest.devices import DeviceTable
from ingest.samples import SampleColumns
from ingest.state import offline_by_status


class DeviceOfflineParams(DetectorParams):
    offline_s: float = Field(600.0, gt=0, description="no accepted vitals message this long")
    use_last_will: bool = True
    outage_grace_s: float = Field(
        120.0, ge=0, description="after the pipeline's own broker link comes back, a Last "
        "Will published around the outage waits this long for its device to return")


# A broker going down publishes the will of every device connected to it, a moment before
# the pipeline's own connection drops: wills this close before the drop belong to it.
OUTAGE_WILL_WINDOW_S = 10.0


class DeviceOffline:
    """No accepted vitals for 10 min (never-heard devices count from pipeline start), or the
    Last Will says offline and no data came after it. Clears when data flows again.

    The pipeline's own broker outages are not the devices': time it could not hear anyone
    is not counted as a device's silence, and a will published around an outage (a broker
    restart publishes every connected device's will, and our session replays them) waits
    `outage_grace_s` after the link is back for the device to return before it counts."""

    name: ClassVar[str] = "device_offline"
    kinds: ClassVar[tuple[str, ...]] = ("device_offline",)
    Params: ClassVar[type[DeviceOfflineParams]] = DeviceOfflineParams

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        self.active = np.zeros(n, bool)
        self.onset = np.full(n, np.nan)
        # rows resumed from an open alert after a restart (`resume`), not heard since
        self._resumed = np.zeros(n, bool)
        # A tick without samples or status changes cannot change anything before `due`, the
        # earliest time a quiet device reaches offline_s: such ticks compare snapshots only.
        self._seen: tuple[Any, ...] | None = None
        self._due = -np.inf

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: these rows had an open alert whose condition was active. They
        stay offline until the device is heard again, and then clear as usual. Without
        this the restarted detector never saw them go offline, never sent the clearing
        finding, and the alert's active condition went on inhibiting the resident's
        physiological alerts after the device was back."""
        if kind not in self.kinds or not len(rows):
            return
        self.active[rows] = True
        self.onset[rows] = onset
        self._resumed[rows] = True
        self._seen = None

    def _unchanged(self, state: TickState, now: float) -> bool:
        seen = self._seen
        if seen is None or now >= self._due or len(state.new):
            return False
        store = state.store
        return (seen[0] is store and seen[1] == state.started_at
                and seen[5] == (state.link_lost_at, state.link_back_at)
                and np.array_equal(seen[2], store.last_received.view(np.int64))
                and np.array_equal(seen[3], store.status_ts.view(np.int64))
                and np.array_equal(seen[4], store.online))

    def quiet_until(self, state: TickState, new: SampleColumns) -> float:
        """Replay spans: nothing changes before the first quiet device reaches offline_s,
        unless an offline device sends data (its alert clears) or a will is pending."""
        if state.link_lost_at == state.link_lost_at or self.active[new.row].any():
            return -np.inf
        store = state.store
        use_will = self.params["use_last_will"]
        if (isinstance(use_will, np.ndarray) or use_will) and (
                offline_by_status(store.online, store.status_ts, store.last_received)
                & ~self.active).any():
            return -np.inf
        last = store.last_received
        due = (np.where(np.isnan(last), state.started_at, last)
               + self.params["offline_s"])[~self.active]
        # a millisecond early, as `_due`: float rounding never moves a crossing into a span
        return float(due.min()) - 1e-3 if len(due) else np.inf

    def update(self, state: TickState, now: float) -> list[Findings]:
        if self._unchanged(state, now):
            return []
        store = state.store
        last = store.last_received
        # never heard: silent since the pipeline started (rare after the first minutes:
        # then no copy at all)
        ref = heard = last
        never = np.isnan(last)
        if never.any():
            ref = heard = np.where(never, state.started_at, last)
        lost = state.link_lost_at
        if lost == lost:  # the link was lost at least once
            back = state.link_back_at
            end = back if back >= lost else now  # still down: the outage lasts until now
            ref = np.where(heard < lost, heard + (end - lost), heard)
            hold_until = end + self.params["outage_grace_s"]
        silent_s = now - ref
        off_s = self.params["offline_s"]
        cond = silent_s >= off_s
        will = np.zeros(len(last), bool)
        held = will
        use_will = self.params["use_last_will"]  # one flag, or one per row
        if isinstance(use_will, np.ndarray) or use_will:
            will = offline_by_status(store.online, store.status_ts, last)
            if isinstance(use_will, np.ndarray):
                will &= use_will
            if lost == lost:
                held = will & (store.status_ts >= lost - OUTAGE_WILL_WINDOW_S) & (
                    now < hold_until)
                will &= ~held
            cond = cond | will
        if self._resumed.any():  # offline before the restart and not heard since
            self._resumed &= np.isnan(last)
            cond = cond | self._resumed
        self._seen = None
        if len(state.new) == 0:
            self._seen = (store, state.started_at, last.view(np.int64).copy(),
                          store.status_ts.view(np.int64).copy(), store.online.copy(),
                          (lost, state.link_back_at))
            waiting = (ref + off_s)[~cond]
            if held.any():  # a held will counts once the grace is over
                waiting = np.concatenate([waiting, np.broadcast_to(hold_until, held.shape)[held]])
            # a millisecond early: float rounding of now - ref never skips the crossing tick
            self._due = float(waiting.min()) - 1e-3 if len(waiting) else np.inf
        change = cond != self.active
        if not change.any():
            return []
        rows = np.flatnonzero(change).astype(np.int32)
        rising = cond[rows]
        onset = np.where(will[rows] & ~(silent_s[rows] >= self.params.at("offline_s", rows)),
                         store.status_ts[rows], heard[rows])
        onset = np.where(rising, onset, self.onset[rows])
        self.onset[rows] = np.where(rising, onset, np.nan)
        self.active[rows] = rising
        ev = {"silent_s": np.round(silent_s[rows], 1), "last_will": will[rows].copy()}
        return [Findings("device_offline", rows, np.full(len(rows), 2, np.int8), rising.copy(),
                         onset.astype(np.float64), ev)]


class LowBatteryParams(DetectorParams):
    threshold: float = Field(15.0, ge=0, le=100)
    clear_above: float = Field(20.0, ge=0, le=100, description="hysteresis: clears above this")


class LowBattery:
    """Battery <= 15 % (low); clears above 20 %. Judged each tick on the latest reading;
    the onset is the `ts` of the first of the run of low readings that ends in it (a
    status message's reading is dated by its own `ts`, else by its receipt)."""

    name: ClassVar[str] = "low_battery"
    kinds: ClassVar[tuple[str, ...]] = ("low_battery",)
    Params: ClassVar[type[LowBatteryParams]] = LowBatteryParams

    def __init__(self, devices: DeviceTable | int, params: Any = None) -> None:
        n = n_rows(devices)
        self.params: ParamTable[Any] = ParamTable(self.Params, params, n)
        # battery is float32: compared as float32 with shared and per-row thresholds alike
        self.threshold = f32_threshold(self.params["threshold"])
        self.clear_above = f32_threshold(self.params["clear_above"])
        self.active = np.zeros(n, bool)
        self.onset = np.full(n, np.nan)
        self._seen: np.ndarray | None = None

    def resume(self, kind: str, rows: np.ndarray, onset: np.ndarray,
               severity: np.ndarray | None = None) -> None:
        """After a restart: these rows stay low until a reading above `clear_above` (the
        first tick judges every device's held reading)."""
        if kind not in self.kinds or not len(rows):
            return
        self.active[rows] = True
        self.onset[rows] = onset
        self._seen = None

    def quiet_until(self, state: TickState, new: SampleColumns) -> float:
        """Replay spans: the span's battery readings (one device each) must change no
        device's low-battery state (ticks judge the latest reading each: a span would judge
        only its last one)."""
        b = state.store.battery.copy()
        has = new.battery == new.battery
        b[new.row[has]] = new.battery[has]  # sorted by (row, ts): the last one wins
        if (~self.active & (b <= self.threshold)).any() or \
                (self.active & (b > self.clear_above)).any():
            return -np.inf
        return np.inf

    def update(self, state: TickState, now: float) -> list[Findings]:
        b = state.store.battery
        bits = b.view(np.int32)
        # only a device whose reading changed (bit for bit) can change state: the first tick
        # judges every device, later ticks the changed ones
        changed: Any = True
        if self._seen is not None:
            changed = bits != self._seen
            if not changed.any():
                return []
        self._seen = bits.copy()
        rise = ~self.active & (b <= self.threshold)
        rise &= changed
        clear = self.active & (b > self.clear_above)
        clear &= changed
        change = rise | clear
        if not change.any():
            return []
        rows = np.flatnonzero(change)
        on = rise.take(rows)
        if on.any():
            up = rows[on]
            self.onset[up] = self._run_onset(state, up)
        onset = self.onset.take(rows)
        self.active[rows] = on
        return [Findings("low_battery", rows.astype(np.int32), np.ones(len(rows), np.int8), on,
                         onset, {"battery": b.take(rows).astype(np.float64)})]

    def _run_onset(self, state: TickState, rows: np.ndarray) -> np.ndarray:
        """Onset of `rows` found low: the held reading's `ts`, or, when that reading is the
        last of this tick's samples, the first of their trailing run of low readings (a
        batch upload spans minutes; the condition began at its first low reading)."""
        store = state.store
        onset = store.battery_ts.take(rows)
        new = state.new  # sorted by (row, ts)
        if len(rank_groups(new.row)) <= 1:
            return onset  # one sample per device: a held reading is its own run
        has = new.battery == new.battery
        if not has.any():
            return onset
        r, t, b = new.row[has], new.ts[has], new.battery[has]
        n = len(r)
        low = b <= (self.threshold[r] if isinstance(self.threshold, np.ndarray)
                    else self.threshold)
        idx = np.arange(n)
        first = np.ones(n, bool)
        first[1:] = r[1:] != r[:-1]
        last = np.ones(n, bool)
        last[:-1] = first[1:]
        # per row, the run starts after its latest reading that is not low (or at its first)
        start = np.maximum.accumulate(np.where(low, np.where(first, idx, -1), idx + 1))
        ends = np.flatnonzero(last)
        er = r[ends]
        pos = np.minimum(np.searchsorted(er, rows), len(ends) - 1)
        e = ends[pos]
        held = ((er[pos] == rows) & low[e] & (t[e] == onset)
                & (b[e].view(np.int32) == store.battery[rows].view(np.int32)))
        return np.where(held, t[np.minimum(start[e], n - 1)], onset)
