"""The per-device minute ring: a day of per-minute means in about 12 KiB a device.

`capacity` slots (default 1,440: 24 h) a device, each minute's mean quantised to one byte
per vital (activity as float16), with an epoch tag per slot so a stale slot is never read as
current, and an accumulator for each device's newest, still open minute. Part of
`ingest.state.StateStore`; runs on the pipeline thread, unlocked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.samples import VITALS

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
_N_CODED = len(_CODEC)
assert VITALS[:_N_CODED] == tuple(_CODEC) and VITALS[_N_CODED] == "activity"
_CODEC_OFFSET = np.array([[_CODEC[v][0]] for v in _CODEC])
_CODEC_SCALE = np.array([[_CODEC[v][1]] for v in _CODEC])
_ZERO = np.zeros(1, np.intp)
# flag bits of a raw sample or a minute (written: a minute slot that holds data)
F_WORN, F_NOT_WORN, F_FALL, F_WRITTEN = 1, 2, 4, 128


@dataclass(frozen=True)
class MinuteSeries:
    """Per-minute means for some devices: arrays shaped (devices, minutes)."""

    minute_start: np.ndarray  # float64 epoch seconds of each column
    values: dict[str, np.ndarray]  # vital -> float32, NaN where no data
    worn: np.ndarray  # int8: 1 worn, 0 not worn, -1 unknown
    fall: np.ndarray  # bool


class MinuteRing:
    """Per-minute means of `n` devices over the last `capacity` minutes."""

    def __init__(self, n: int, capacity: int = 1440) -> None:
        nv, m = len(VITALS), capacity
        self.capacity = m
        self._min_codes = np.full((len(_CODEC), n, m), _MISSING, np.uint8)
        self.min_codes = {v: self._min_codes[i] for i, v in enumerate(_CODEC)}
        self.min_activity = np.full((n, m), np.nan, np.float16)
        self.min_flags = np.zeros((n, m), np.uint8)
        self.min_tag = np.zeros((n, m), np.uint8)
        self.acc_minute = np.full(n, -1, np.int64)
        self.acc_sum = np.zeros((nv, n), np.float32)
        self.acc_n = np.zeros((nv, n), np.uint16)
        self.acc_flags = np.zeros(n, np.uint8)

    def add(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        have: np.ndarray,
        flags: np.ndarray,
    ) -> None:
        """Fold a batch's samples (sorted by row, ts; `x` vitals x samples, `have` where
        present) into each device's accumulator and ring."""
        m = self.capacity
        minute = np.floor(ts / 60.0).astype(np.int64)
        # groups of (row, minute); samples are sorted by (row, ts) so groups are contiguous
        n = len(rows)
        starts = _ZERO if n == 1 else np.flatnonzero(run_starts(rows, minute))
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
            newer &= run_ends(g_row)
        if newer.any():
            nr = g_row[newer]
            fl_rows = nr[self.acc_minute[nr] >= 0]
            if len(fl_rows):
                self._write(
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
                    self._write(
                        g_row[mask],
                        g_min[mask],
                        g_sum[:, mask],
                        g_n[:, mask],
                        g_flags[mask],
                        only_empty=only_empty,
                    )

    def _write(
        self,
        rows: np.ndarray,
        minutes: np.ndarray,
        sums: np.ndarray,
        counts: np.ndarray,
        flags: np.ndarray,
        only_empty: bool,
    ) -> None:
        m = self.capacity
        slot = minutes % m
        tag = ((minutes // m) % 256).astype(np.uint8)
        if only_empty:
            free = (self.min_tag[rows, slot] != tag) | (
                (self.min_flags[rows, slot] & F_WRITTEN) == 0
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
        self.min_flags[rows, slot] = flags | F_WRITTEN
        self.min_tag[rows, slot] = tag

    def series(
        self, rows: np.ndarray, now: float, minutes: int | None = None
    ) -> MinuteSeries:
        """Per-minute means for `rows` over the last `minutes` (default: the ring) up to `now`."""
        m = self.capacity
        k = min(minutes or m, m)
        rows = np.asarray(rows, np.int64)
        end = int(np.floor(now / 60.0))
        mins = np.arange(end - k + 1, end + 1, dtype=np.int64)
        slot = mins % m
        tag = ((mins // m) % 256).astype(np.uint8)
        valid = (self.min_tag[rows[:, None], slot[None, :]] == tag[None, :]) & (
            (self.min_flags[rows[:, None], slot[None, :]] & F_WRITTEN) != 0
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
            flags[ir, cols_] = self.acc_flags[rows[ir]] | F_WRITTEN
        worn = np.where(flags & F_WORN, 1, np.where(flags & F_NOT_WORN, 0, -1)).astype(np.int8)
        return MinuteSeries(
            minute_start=mins * 60.0, values=values, worn=worn, fall=(flags & F_FALL) != 0
        )


# np.r_ costs ~80 us a call; these are the two shapes the append path needs, made directly.
def run_ends(a: np.ndarray) -> np.ndarray:
    """True where the next element differs (and at the last element)."""
    out = np.ones(len(a), bool)
    np.not_equal(a[1:], a[:-1], out=out[:-1])
    return out


def run_starts(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """True where the element differs from the previous one in `a` (or `b`), and at 0."""
    out = np.ones(len(a), bool)
    np.not_equal(a[1:], a[:-1], out=out[1:])
    if b is not None:
        out[1:] |= b[1:] != b[:-1]
    return out
