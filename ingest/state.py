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


class StateStore:
    """Ring buffers and scalars for `n_devices` devices (rows 0..n-1)."""

    def __init__(self, n_devices: int, raw_capacity: int = 64, minute_capacity: int = 1440) -> None:
        n, c, m = n_devices, raw_capacity, minute_capacity
        self.n_devices, self.raw_capacity, self.minute_capacity = n, c, m
        # scalars
        self.last_received = np.full(n, np.nan, np.float64)  # pipeline clock, accepted vitals
        self.last_ts = np.full(n, np.nan, np.float64)  # newest sample ts
        self.latest = {v: np.full(n, np.nan, np.float32) for v in VITALS}
        self.latest_ts = {v: np.full(n, np.nan, np.float64) for v in VITALS}
        self.worn = np.full(n, -1, np.int8)
        self.worn_ts = np.full(n, np.nan, np.float64)
        self.battery = np.full(n, np.nan, np.float32)
        self.online = np.full(n, -1, np.int8)  # from the status topic / Last Will
        self.status_ts = np.full(n, np.nan, np.float64)
        self.samples_total = np.zeros(n, np.int64)
        # raw ring
        self.raw_head = np.zeros(n, np.int64)  # samples ever written; slot = head % c
        self.raw_ts = np.full((n, c), np.nan, np.float64)
        self.raw_seq = np.full((n, c), -1, np.int32)
        self.raw = {v: np.full((n, c), np.nan, np.float16) for v in VITALS}
        self.raw_flags = np.zeros((n, c), np.uint8)
        # minute ring + accumulator for each device's newest minute
        self.min_codes = {v: np.full((n, m), _MISSING, np.uint8) for v in _CODEC}
        self.min_activity = np.full((n, m), np.nan, np.float16)
        self.min_flags = np.zeros((n, m), np.uint8)
        self.min_tag = np.zeros((n, m), np.uint8)
        self.acc_minute = np.full(n, -1, np.int64)
        self.acc_sum = np.zeros((len(VITALS), n), np.float32)
        self.acc_n = np.zeros((len(VITALS), n), np.uint16)
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
        seq32 = cols.seq.astype(np.int32)
        if n > 1:  # repeats inside the batch: adjacent after sorting by (row, ts)
            same = (cols.row[1:] == cols.row[:-1]) & (cols.ts[1:] == cols.ts[:-1])
            same &= seq32[1:] == seq32[:-1]
            dup[1:] = same
        ring_ts = self.raw_ts[cols.row]  # (n, c)
        hit = (ring_ts == cols.ts[:, None]) & (self.raw_seq[cols.row] == seq32[:, None])
        dup |= hit.any(axis=1)
        return dup

    def append(self, cols: SampleColumns, received_at: float) -> None:
        """Add accepted, de-duplicated samples sorted by (row, ts)."""
        n = len(cols)
        if n == 0:
            return
        rows = cols.row
        last_of_row = _ends(rows)
        urows = rows[last_of_row]
        self.last_received[urows] = received_at
        self.last_ts[urows] = np.fmax(self.last_ts[urows], cols.ts[last_of_row])
        for v in VITALS:
            self._latest(v, rows, cols.ts, getattr(cols, v))
        self._latest_flag(rows, cols.ts, cols.worn)
        has_batt = ~np.isnan(cols.battery)
        if has_batt.any():
            self.battery[rows[has_batt]] = cols.battery[has_batt]  # sorted: last one wins
        self._append_raw(cols, last_of_row)
        self._append_minutes(cols)
        self._pending.append(cols)
        # counted last: a reader on another thread that sees the count sees the values
        self.samples_total += np.bincount(rows, minlength=self.n_devices)

    def take_pending(self) -> SampleColumns:
        """Samples appended since the last call, sorted by (row, ts), for the detectors."""
        parts, self._pending = self._pending, []
        return (
            SampleColumns.concat(parts).sorted_by_row_ts()
            if len(parts) > 1
            else (parts[0] if parts else SampleColumns.empty())
        )

    def set_status(self, row: int, online: bool, battery: float | None, at: float) -> None:
        self.online[row] = 1 if online else 0
        self.status_ts[row] = at
        if battery is not None:
            self.battery[row] = battery

    def _latest(self, v: str, rows: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        have = ~np.isnan(values)
        if not have.any():
            return
        r, t, x = rows[have], ts[have], values[have]
        last = _ends(r)
        r, t, x = r[last], t[last], x[last]
        newer = ~(t <= self.latest_ts[v][r])  # NaN (never seen) counts as older
        self.latest[v][r[newer]] = x[newer]
        self.latest_ts[v][r[newer]] = t[newer]

    def _latest_flag(self, rows: np.ndarray, ts: np.ndarray, worn: np.ndarray) -> None:
        have = worn >= 0
        if not have.any():
            return
        r, t, x = rows[have], ts[have], worn[have]
        last = _ends(r)
        r, t, x = r[last], t[last], x[last]
        newer = ~(t <= self.worn_ts[r])
        self.worn[r[newer]] = x[newer]
        self.worn_ts[r[newer]] = t[newer]

    def _append_raw(self, cols: SampleColumns, last_of_row: np.ndarray) -> None:
        rows, c = cols.row, self.raw_capacity
        first_of_row = _starts(rows)
        starts = np.flatnonzero(first_of_row)
        counts = np.diff(np.append(starts, len(rows)))
        rank = np.arange(len(rows)) - np.repeat(starts, counts)
        per_row = np.repeat(counts, counts)
        keep = rank >= per_row - c  # only the newest c of a long batch can survive
        rows_k = rows[keep]
        slot = (self.raw_head[rows_k] + rank[keep]) % c
        self.raw_ts[rows_k, slot] = cols.ts[keep]
        self.raw_seq[rows_k, slot] = cols.seq[keep].astype(np.int32)
        with np.errstate(over="ignore"):  # float16: out-of-range values (never plausible) -> inf
            for v in VITALS:
                self.raw[v][rows_k, slot] = getattr(cols, v)[keep]
        self.raw_flags[rows_k, slot] = _flags(cols.worn[keep], cols.fall[keep])
        self.raw_head[rows[first_of_row]] += counts

    def _append_minutes(self, cols: SampleColumns) -> None:
        rows = cols.row
        minute = np.floor(cols.ts / 60.0).astype(np.int64)
        # groups of (row, minute); cols is sorted by (row, ts) so groups are contiguous
        brk = _starts(rows, minute)
        starts = np.flatnonzero(brk)
        g_row, g_min = rows[starts], minute[starts]
        g_sum = np.empty((len(VITALS), len(starts)), np.float32)
        g_n = np.empty((len(VITALS), len(starts)), np.int64)
        for i, v in enumerate(VITALS):
            x = getattr(cols, v)
            have = ~np.isnan(x)
            g_sum[i] = np.add.reduceat(np.where(have, x, 0.0), starts)
            g_n[i] = np.add.reduceat(have.astype(np.int64), starts)
        g_flags = np.bitwise_or.reduceat(_flags(cols.worn, cols.fall), starts)

        old_acc = self.acc_minute[g_row]
        # 1. groups in the accumulator's minute merge into it
        same = g_min == old_acc
        if same.any():
            r = g_row[same]  # at most one group per (row, minute): no repeated index
            self.acc_sum[:, r] += g_sum[:, same]
            self.acc_n[:, r] += g_n[:, same].astype(np.uint16)
            self.acc_flags[r] |= g_flags[same]
        # 2. rows whose newest group is a newer minute: flush the accumulator, start anew
        last_g = _ends(g_row)
        newer = last_g & (g_min > old_acc)
        fl_rows = g_row[newer]
        fl_rows = fl_rows[self.acc_minute[fl_rows] >= 0]
        if len(fl_rows):
            self._write_minutes(
                fl_rows,
                self.acc_minute[fl_rows],
                self.acc_sum[:, fl_rows],
                self.acc_n[:, fl_rows],
                self.acc_flags[fl_rows],
                only_empty=False,
            )
        nr = g_row[newer]
        self.acc_minute[nr] = g_min[newer]
        self.acc_sum[:, nr] = g_sum[:, newer]
        self.acc_n[:, nr] = g_n[:, newer].astype(np.uint16)
        self.acc_flags[nr] = g_flags[newer]
        # 3. other complete minutes: newer than the old accumulator -> write; older -> fill gaps
        rest = ~same & ~newer
        if rest.any():
            late = rest & (g_min < old_acc)
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
        for i, v in enumerate(VITALS):
            if v == "activity":
                with np.errstate(over="ignore"):
                    self.min_activity[rows, slot] = means[i]
                continue
            offset, scale = _CODEC[v]
            code = np.round((means[i] - offset) * scale)
            code = np.where(np.isnan(code), _MISSING, np.clip(code, 0, 254)).astype(np.uint8)
            self.min_codes[v][rows, slot] = code
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
        """Bytes held by all state arrays."""
        total = 0
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, dict):
                total += sum(a.nbytes for a in value.values() if isinstance(a, np.ndarray))
        return total

    def bytes_per_device_day(self, interval_s: float = 10.0) -> float:
        """State bytes per device for one day of samples at `interval_s` (rings sized to fit)."""
        return self.nbytes() / max(1, self.n_devices) * (1440.0 / self.minute_capacity)


def _flags(worn: np.ndarray, fall: np.ndarray) -> np.ndarray:
    f = np.where(worn == 1, _F_WORN, 0) | np.where(worn == 0, _F_NOT_WORN, 0)
    return (f | np.where(fall == 1, _F_FALL, 0)).astype(np.uint8)


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
