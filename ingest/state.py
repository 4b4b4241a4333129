"""Per-device state as struct-of-arrays: one row per device, no Python object per device.

Two rings per device keep memory near 16 KiB per device-day at 10 s sampling:
- a raw ring of the last `raw_capacity` samples at full resolution (float16 vitals,
  float64 timestamps, sequence numbers for de-duplication);
- a minute ring of `minute_capacity` (default 24 h) per-minute means, quantised to one
  byte per vital (`ingest.minutes.MinuteRing`).
Per-device scalars hold what detectors and the console need now: latest value and time
of each vital, last receive time, worn, battery, online status.

Samples are appended in batches; `append` is vectorised over the batch (no Python loop per
sample or per device). Everything runs on the pipeline thread; nothing here is locked.
"""

from __future__ import annotations

import operator

import numpy as np

from ingest.minutes import F_FALL, F_NOT_WORN, F_WORN, MinuteRing, MinuteSeries, run_starts
from ingest.samples import VITALS, SampleColumns


def offline_by_status(online: np.ndarray, status_ts: np.ndarray, last_received: np.ndarray
                      ) -> np.ndarray:
    """Rows whose status topic says offline (a Last Will, or the device's own word) and
    from which no data has been received since: data that follows overrides the status."""
    return (online == 0) & ~(last_received > status_ts)  # NaN compares False


class StateStore:
    """Ring buffers and scalars for `n_devices` devices (rows 0..n-1)."""

    def __init__(self, n_devices: int, raw_capacity: int = 64, minute_capacity: int = 1440) -> None:
        n, c, m = n_devices, raw_capacity, minute_capacity
        nv = len(VITALS)
        self.n_devices, self.raw_capacity, self.minute_capacity = n, c, m
        # Per-vital arrays are views into one 2-D (or 3-D) array per kind, so that a batch
        # updates every vital in a few NumPy calls; the dicts keep the per-vital API.
        # scalars
        self.last_received = np.full(n, np.nan, np.float64)  # pipeline clock, accepted vitals
        self.last_ts = np.full(n, np.nan, np.float64)  # newest sample ts
        # row nv of _latest_x / _latest_t is `worn` (as float) and its time
        self._latest_x = np.full((nv + 1, n), np.nan, np.float32)
        self._latest_t = np.full((nv + 1, n), np.nan, np.float64)
        self.latest = {v: self._latest_x[i] for i, v in enumerate(VITALS)}
        self.latest_ts = {v: self._latest_t[i] for i, v in enumerate(VITALS)}
        self.worn = np.full(n, -1, np.int8)
        self.worn_ts = self._latest_t[nv]
        self.battery = np.full(n, np.nan, np.float32)
        self.battery_ts = np.full(n, np.nan, np.float64)  # the held reading's sample/status ts
        self.online = np.full(n, -1, np.int8)  # from the status topic / Last Will
        self.status_ts = np.full(n, np.nan, np.float64)
        self.samples_total = np.zeros(n, np.int64)
        # raw ring
        self.raw_head = np.zeros(n, np.int64)  # samples ever written; slot = head % c
        self.raw_ts = np.full((n, c), np.nan, np.float64)
        self.raw_seq = np.full((n, c), -1, np.int32)
        self._raw = np.full((nv, n, c), np.nan, np.float16)
        self.raw = {v: self._raw[i] for i, v in enumerate(VITALS)}
        self.raw_flags = np.zeros((n, c), np.uint8)
        # a day of per-minute means (and each device's newest, open minute)
        self.minutes = MinuteRing(n, m)
        self._pending: list[SampleColumns] = []

    # ------------------------------------------------------------------ append
    def duplicate_mask(self, cols: SampleColumns) -> np.ndarray:
        """True for samples already held (same device, ts and seq) or repeated in `cols`.

        `cols` must be sorted by (row, ts). Looks back over the raw ring.
        """
        n = len(cols)
        dup = np.zeros(n, bool)
        if n == 0:
            return dup
        rows, ts = cols.row, cols.ts
        seq32 = cols.seq.astype(np.int32)
        if n > 1:
            # repeats inside the batch share (row, ts), so they sit in runs after sorting
            same = (rows[1:] == rows[:-1]) & (ts[1:] == ts[:-1])
            if same.any():
                _mark_repeats(dup, rows, ts, seq32, same)
        # the ring holds no sample newer than last_ts: only older samples need the look-back
        maybe = ts <= self.last_ts[rows]  # NaN (nothing held) compares False
        if maybe.any():
            idx = np.flatnonzero(maybe)
            r = rows[idx]
            hit = (self.raw_ts[r] == ts[idx, None]) & (self.raw_seq[r] == seq32[idx, None])
            dup[idx] |= hit.any(axis=1)
        return dup

    def append(self, cols: SampleColumns, received_at: float | np.ndarray) -> None:
        """Add accepted, de-duplicated samples sorted by (row, ts); `received_at` is when
        they were handled: one time, or one per sample (replay spans)."""
        n = len(cols)
        if n == 0:
            return
        rows, ts = cols.row, cols.ts
        # row groups: starts[j] .. ends[j] hold the samples of row urows[j]
        if n == 1:
            starts, ends, counts = _ZERO, _ZERO, _ONE
        else:
            starts = np.flatnonzero(run_starts(rows))
            ends = np.empty_like(starts)
            ends[:-1] = starts[1:] - 1
            ends[-1] = n - 1
            counts = ends - starts + 1
        urows = rows[starts]
        self.last_received[urows] = (
            received_at[ends] if isinstance(received_at, np.ndarray) else received_at)
        self.last_ts[urows] = np.fmax(self.last_ts[urows], ts[ends])
        # vitals as rows of one matrix, with `worn` as one more row (-1 -> NaN)
        worn = cols.worn
        x = np.array([*_VITALS_GETTER(cols), worn], np.float32)
        x[-1, worn < 0] = np.nan
        have = ~np.isnan(x)
        self._update_latest(x, have, ts, urows, starts)
        battery = cols.battery
        has_batt = ~np.isnan(battery)
        if has_batt.any():
            # only readings not older than the held one (a late sample or backlog must not
            # bring back an earlier charge and clear a low-battery alert); sorted by (row,
            # ts): of a row's newer readings the last one wins
            br, bt = rows[has_batt], ts[has_batt]
            newer = ~(bt < self.battery_ts[br])  # NaN held: none yet
            self.battery[br[newer]] = battery[has_batt][newer]
            self.battery_ts[br[newer]] = bt[newer]
        flags = _FLAG_LUT[worn.view(np.uint8), cols.fall.view(np.uint8)]
        self._append_raw(cols, x, flags, starts, counts, urows)
        self.minutes.add(rows, ts, x[:-1], have[:-1], flags)
        self._pending.append(cols)
        # counted last: a reader on another thread that sees the count sees the values
        self.samples_total[urows] += counts

    @property
    def pending(self) -> bool:
        """Samples appended that no tick has taken yet."""
        return bool(self._pending)

    def take_pending(self) -> SampleColumns:
        """Samples appended since the last call, sorted by (row, ts), for the detectors."""
        parts, self._pending = self._pending, []
        return (
            SampleColumns.concat(parts).sorted_by_row_ts()
            if len(parts) > 1
            else (parts[0] if parts else SampleColumns.empty())
        )

    def set_status(self, row: int, online: bool, battery: float | None, at: float,
                   ts: float | None = None) -> None:
        """A status message received at `at`; `ts` is its own time, if it gave one."""
        self.online[row] = 1 if online else 0
        self.status_ts[row] = at  # receipt: a Last Will is judged against later data
        reading_ts = at if ts is None else ts
        if battery is not None and not reading_ts < self.battery_ts[row]:  # as in `append`
            self.battery[row] = battery
            self.battery_ts[row] = reading_ts

    def _update_latest(
        self,
        x: np.ndarray,
        have: np.ndarray,
        ts: np.ndarray,
        urows: np.ndarray,
        starts: np.ndarray,
    ) -> None:
        """Per row and vital, the batch's last value replaces the held one if it is newer."""
        n = x.shape[1]
        idx = np.where(have, np.arange(n), -1)
        last = np.maximum.reduceat(idx, starts, axis=1)  # (vitals + 1, groups); -1: none
        newer = (last >= 0) & ~(ts[last] <= self._latest_t[:, urows])  # NaN held: older
        if not newer.any():
            return
        vi, gi = np.nonzero(newer)
        li = last[vi, gi]
        r = urows[gi]
        self._latest_x[vi, r] = x[vi, li]
        self._latest_t[vi, r] = ts[li]
        is_worn = vi == len(VITALS)
        if is_worn.any():
            self.worn[r[is_worn]] = x[vi[is_worn], li[is_worn]]

    def _append_raw(
        self,
        cols: SampleColumns,
        x: np.ndarray,
        flags: np.ndarray,
        starts: np.ndarray,
        counts: np.ndarray,
        urows: np.ndarray,
    ) -> None:
        rows, c, n = cols.row, self.raw_capacity, len(cols)
        if len(starts) == n:  # one sample per row
            rank: np.ndarray | int = 0
        elif len(starts) == 1:
            rank = np.arange(n)
        else:
            rank = np.arange(n) - np.repeat(starts, counts)
        ts, seq = cols.ts, cols.seq
        if n > c and int(counts.max()) > c:  # only the newest c of a long batch can survive
            keep = rank >= np.repeat(counts, counts) - c
            rows, ts, seq, x, flags = rows[keep], ts[keep], seq[keep], x[:, keep], flags[keep]
            rank = rank[keep]  # type: ignore[index]
        slot = (self.raw_head[rows] + rank) % c
        self.raw_ts[rows, slot] = ts
        self.raw_seq[rows, slot] = seq  # int32 ring: cast as in duplicate_mask
        with np.errstate(over="ignore"):  # float16: out-of-range values (never plausible) -> inf
            self._raw[:, rows, slot] = x[:-1]
        self.raw_flags[rows, slot] = flags
        self.raw_head[urows] += counts

    # ------------------------------------------------------------------ reads
    def minute_series(
        self, rows: np.ndarray, now: float, minutes: int | None = None
    ) -> MinuteSeries:
        """Per-minute means for `rows` over the last `minutes` (default: the ring) up to `now`."""
        return self.minutes.series(rows, now, minutes)

    def raw_window(self, row: int) -> dict[str, np.ndarray]:
        """The raw ring of one device, oldest first (for the console and tests)."""
        c, head = self.raw_capacity, int(self.raw_head[row])
        n = min(head, c)
        idx = (np.arange(head - n, head)) % c
        out = {"ts": self.raw_ts[row, idx].copy(), "seq": self.raw_seq[row, idx].astype(np.int64)}
        for v in VITALS:
            out[v] = self.raw[v][row, idx].astype(np.float32)
        flags = self.raw_flags[row, idx]
        out["worn"] = np.where(flags & F_WORN, 1, np.where(flags & F_NOT_WORN, 0, -1))
        out["fall"] = (flags & F_FALL) != 0
        return out

    def nbytes(self) -> int:
        """Bytes held by all state arrays, the minute ring's included (views into another
        state array count once)."""
        total = 0
        for value in [*vars(self).values(), *vars(self.minutes).values()]:
            arrays = value.values() if isinstance(value, dict) else (value,)
            total += sum(a.nbytes for a in arrays if isinstance(a, np.ndarray) and a.base is None)
        return total

    def bytes_per_device_day(self, interval_s: float = 10.0) -> float:
        """State bytes per device for one day of samples at `interval_s` (rings sized to fit)."""
        return self.nbytes() / max(1, self.n_devices) * (1440.0 / self.minute_capacity)


def _flag_lut() -> np.ndarray:
    """Raw/minute flags for every (worn, fall) pair of int8 codes, indexed by their bytes."""
    codes = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.int64)
    worn, fall = codes[:, None], codes[None, :]
    f = np.where(worn == 1, F_WORN, 0) | np.where(worn == 0, F_NOT_WORN, 0)
    return (f | np.where(fall == 1, F_FALL, 0)).astype(np.uint8)


_FLAG_LUT = _flag_lut()
_VITALS_GETTER = operator.attrgetter(*VITALS)
_ZERO = np.zeros(1, np.intp)
_ONE = np.ones(1, np.intp)


def _mark_repeats(
    dup: np.ndarray, rows: np.ndarray, ts: np.ndarray, seq32: np.ndarray, same: np.ndarray
) -> None:
    """Mark samples whose (row, ts, seq) came earlier in the batch; `same` flags (row, ts) runs.

    Only samples in a run of equal (row, ts) can repeat one another, and such runs are rare
    (duplicates, or a device sending one time twice), so a short Python pass is fine.
    """
    idx = np.flatnonzero(same) + 1  # samples equal in (row, ts) to the one before
    cand = np.union1d(idx, idx - 1).tolist()
    seen: set[tuple[int, float, int]] = set()
    for i, key in zip(
        cand,
        zip(rows[cand].tolist(), ts[cand].tolist(), seq32[cand].tolist(), strict=True),
        strict=True,
    ):
        if key in seen:
            dup[i] = True
        else:
            seen.add(key)
