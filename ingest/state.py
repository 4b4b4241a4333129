"""Per-device state as struct-of-arrays: one row per device, no Python object per device.

Two rings per device keep memory near 16 KiB per device-day at 10 s sampling:
- a raw ring of the last `raw_capacity` samples at full resolution (float16 vitals,
  float64 timestamps, sequence numbers for de-duplication);
- a minute ring of `minute_capacity` (default 24 h) per-minute means, quantised to one
  byte per vital (activity as float16), with an epoch tag per slot so stale slots are
  never read as current.
Per-device scalars hold what detectors and the console need now: latest value and time
of each vital, last receive time, worn, battery, online status.

Samples are appended in batches; `append` is vectorised over the batch (no Python loop per
sample or per device). Everything runs on the pipeline thread; nothing here is locked.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from ingest.samples import VITALS, SampleColumns

# Minute-ring codecs: code = round((value - offset) * scale), 255 = no data.
_CODEC: dict[str, tuple[float, float]] = {
    "hr": (20.0, 1.0),
    "spo2": (50.0, 4.0),
    "rr": (3.0, 4.0),
    "temp_c": (30.0, 16.0),
    "sbp": (50.0, 1.0),
    "dbp": (25.0, 1.0),
}
_MISSING = 255
_F_WORN, _F_NOT_WORN, _F_FALL, _F_WRITTEN = 1, 2, 4, 128


@dataclass(frozen=True)
class MinuteSeries:
    """Per-minute means for some devices: arrays shaped (devices, minutes)."""

    minute_start: np.ndarray  # float64 epoch seconds of each column
    values: dict[str, np.ndarray]  # vital -> float32, NaN where no data
    worn: np.ndarray  # int8: 1 worn, 0 not worn, -1 unknown
    fall: np.ndarray  # bool


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
        # minute ring + accumulator for each device's newest minute
        self._min_codes = np.full((len(_CODEC), n, m), _MISSING, np.uint8)
        self.min_codes = {v: self._min_codes[i] for i, v in enumerate(_CODEC)}
        self.min_activity = np.full((n, m), np.nan, np.float16)
        self.min_flags = np.zeros((n, m), np.uint8)
        self.min_tag = np.zeros((n, m), np.uint8)
        self.acc_minute = np.full(n, -1, np.int64)
        self.acc_sum = np.zeros((nv, n), np.float32)
        self.acc_n = np.zeros((nv, n), np.uint16)
        self.acc_flags = np.zeros(n, np.uint8)
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
            starts = np.flatnonzero(_starts(rows))
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
            self.battery[rows[has_batt]] = battery[has_batt]  # sorted: last one wins
            self.battery_ts[rows[has_batt]] = ts[has_batt]
        flags = _FLAG_LUT[worn.view(np.uint8), cols.fall.view(np.uint8)]
        self._append_raw(cols, x, flags, starts, counts, urows)
        self._append_minutes(rows, ts, x[:-1], have[:-1], flags)
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
        if battery is not None:
            self.battery[row] = battery
            self.battery_ts[row] = at if ts is None else ts

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

    def _append_minutes(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        have: np.ndarray,
        flags: np.ndarray,
    ) -> None:
        m = self.minute_capacity
        minute = np.floor(ts / 60.0).astype(np.int64)
        # groups of (row, minute); samples are sorted by (row, ts) so groups are contiguous
        n = len(rows)
        starts = _ZERO if n == 1 else np.flatnonzero(_starts(rows, minute))
        g_row, g_min = rows[starts], minute[starts]
        g_sum = np.add.reduceat(np.where(have, x, np.float32(0)), starts, axis=1)
        g_n = np.add.reduceat(have.astype(np.int64), starts, axis=1)
        g_flags = np.bitwise_or.reduceat(flags, starts)

        old_acc = self.acc_minute[g_row]
        # 1. groups in the accumulator's minute merge into it
        same = g_min == old_acc
        if same.any():
            r = g_row[same]  # at most one group per (row, minute): no repeated index
            self.acc_sum[:, r] += g_sum[:, same]
            self.acc_n[:, r] += g_n[:, same].astype(np.uint16)
            self.acc_flags[r] |= g_flags[same]
        # 2. rows whose newest group is a newer minute: flush the accumulator, start anew
        newer = g_min > old_acc
        if len(g_row) > 1:
            newer &= _ends(g_row)
        if newer.any():
            nr = g_row[newer]
            fl_rows = nr[self.acc_minute[nr] >= 0]
            if len(fl_rows):
                self._write_minutes(
                    fl_rows,
                    self.acc_minute[fl_rows],
                    self.acc_sum[:, fl_rows],
                    self.acc_n[:, fl_rows],
                    self.acc_flags[fl_rows],
                    only_empty=False,
                )
            self.acc_minute[nr] = g_min[newer]
            self.acc_sum[:, nr] = g_sum[:, newer]
            self.acc_n[:, nr] = g_n[:, newer]
            self.acc_flags[nr] = g_flags[newer]
        # 3. other complete minutes: newer than the old accumulator -> write; older -> fill gaps
        rest = ~(same | newer)
        if rest.any():
            late = rest & (g_min < old_acc)
            # a late minute a ring length or more before the row's newest (after this batch)
            # shares its slot with a newer minute: it must not overwrite it
            too_old = late & (g_min <= self.acc_minute[g_row] - m)
            if too_old.any():
                rest &= ~too_old
                late &= ~too_old
            for mask, only_empty in ((rest & ~late, False), (late, True)):
                if mask.any():
                    self._write_minutes(
                        g_row[mask],
                        g_min[mask],
                        g_sum[:, mask],
                        g_n[:, mask],
                        g_flags[mask],
                        only_empty=only_empty,
                    )

    def _write_minutes(
        self,
        rows: np.ndarray,
        minutes: np.ndarray,
        sums: np.ndarray,
        counts: np.ndarray,
        flags: np.ndarray,
        only_empty: bool,
    ) -> None:
        m = self.minute_capacity
        slot = minutes % m
        tag = ((minutes // m) % 256).astype(np.uint8)
        if only_empty:
            free = (self.min_tag[rows, slot] != tag) | (
                (self.min_flags[rows, slot] & _F_WRITTEN) == 0
            )
            rows, slot, tag, sums, counts, flags = (
                rows[free],
                slot[free],
                tag[free],
                sums[:, free],
                counts[:, free],
                flags[free],
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        # same dtype as `means`, so the arithmetic is that of a Python scalar operand
        offset, scale = _CODEC_OFFSET.astype(means.dtype), _CODEC_SCALE.astype(means.dtype)
        code = np.round((means[:_N_CODED] - offset) * scale)
        self._min_codes[:, rows, slot] = np.where(
            np.isnan(code), _MISSING, np.clip(code, 0, 254)
        ).astype(np.uint8)
        with np.errstate(over="ignore"):
            self.min_activity[rows, slot] = means[_N_CODED]
        self.min_flags[rows, slot] = flags | _F_WRITTEN
        self.min_tag[rows, slot] = tag

    # ------------------------------------------------------------------ reads
    def minute_series(
        self, rows: np.ndarray, now: float, minutes: int | None = None
    ) -> MinuteSeries:
        """Per-minute means for `rows` over the last `minutes` (default: the ring) up to `now`."""
        m = self.minute_capacity
        k = min(minutes or m, m)
        rows = np.asarray(rows, np.int64)
        end = int(np.floor(now / 60.0))
        mins = np.arange(end - k + 1, end + 1, dtype=np.int64)
        slot = mins % m
        tag = ((mins // m) % 256).astype(np.uint8)
        valid = (self.min_tag[rows[:, None], slot[None, :]] == tag[None, :]) & (
            (self.min_flags[rows[:, None], slot[None, :]] & _F_WRITTEN) != 0
        )
        values: dict[str, np.ndarray] = {}
        for v in VITALS:
            if v == "activity":
                x = self.min_activity[rows[:, None], slot[None, :]].astype(np.float32)
            else:
                offset, scale = _CODEC[v]
                code = self.min_codes[v][rows[:, None], slot[None, :]]
                x = np.where(code == _MISSING, np.nan, code / scale + offset).astype(np.float32)
            values[v] = np.where(valid, x, np.nan).astype(np.float32)
        flags = np.where(valid, self.min_flags[rows[:, None], slot[None, :]], 0)
        # the newest, still-open minute lives in the accumulator
        acc_col = self.acc_minute[rows] - mins[0]
        in_range = (acc_col >= 0) & (acc_col < k)
        ir = np.flatnonzero(in_range)
        if len(ir):
            cols_ = acc_col[ir]
            with np.errstate(invalid="ignore", divide="ignore"):
                means = self.acc_sum[:, rows[ir]] / self.acc_n[:, rows[ir]]
            for i, v in enumerate(VITALS):
                values[v][ir, cols_] = means[i]
            flags[ir, cols_] = self.acc_flags[rows[ir]] | _F_WRITTEN
        worn = np.where(flags & _F_WORN, 1, np.where(flags & _F_NOT_WORN, 0, -1)).astype(np.int8)
        return MinuteSeries(
            minute_start=mins * 60.0, values=values, worn=worn, fall=(flags & _F_FALL) != 0
        )

    def raw_window(self, row: int) -> dict[str, np.ndarray]:
        """The raw ring of one device, oldest first (for the console and tests)."""
        c, head = self.raw_capacity, int(self.raw_head[row])
        n = min(head, c)
        idx = (np.arange(head - n, head)) % c
        out = {"ts": self.raw_ts[row, idx].copy(), "seq": self.raw_seq[row, idx].astype(np.int64)}
        for v in VITALS:
            out[v] = self.raw[v][row, idx].astype(np.float32)
        flags = self.raw_flags[row, idx]
        out["worn"] = np.where(flags & _F_WORN, 1, np.where(flags & _F_NOT_WORN, 0, -1))
        out["fall"] = (flags & _F_FALL) != 0
        return out

    def nbytes(self) -> int:
        """Bytes held by all state arrays (views into another state array count once)."""
        total = 0
        for value in vars(self).values():
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
    f = np.where(worn == 1, _F_WORN, 0) | np.where(worn == 0, _F_NOT_WORN, 0)
    return (f | np.where(fall == 1, _F_FALL, 0)).astype(np.uint8)


_FLAG_LUT = _flag_lut()
_VITALS_GETTER = operator.attrgetter(*VITALS)
_N_CODED = len(_CODEC)
assert VITALS[:_N_CODED] == tuple(_CODEC) and VITALS[_N_CODED] == "activity"
_CODEC_OFFSET = np.array([[_CODEC[v][0]] for v in _CODEC])
_CODEC_SCALE = np.array([[_CODEC[v][1]] for v in _CODEC])
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


# np.r_ costs ~80 us a call; these are the two shapes the append path needs, made directly.
def _ends(a: np.ndarray) -> np.ndarray:
    """True where the next element differs (and at the last element)."""
    out = np.ones(len(a), bool)
    np.not_equal(a[1:], a[:-1], out=out[:-1])
    return out


def _starts(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """True where the element differs from the previous one in `a` (or `b`), and at 0."""
    out = np.ones(len(a), bool)
    np.not_equal(a[1:], a[:-1], out=out[1:])
    if b is not None:
        out[1:] |= b[1:] != b[:-1]
    return out
