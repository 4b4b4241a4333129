"""Signal-quality gating, vectorised: which samples may count toward physiological rules.

Excluded: missing values (dropouts), samples taken while not worn, samples during motion
(for vitals that motion corrupts), and, only where a deployment opts in (the sustained
rules' `max_jump` and `flat_samples`, off by default because the contract excludes
neither), implausible jumps (a value far from both the previous reading and the last
accepted one; a confirmed step is accepted from its second sample) and flat-lines (the
very same value too many samples in a row: a stuck sensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Gate:
    """Per-device quality state for one vital (the 1-D form; the sustained rules run it as
    one row per stream of `detectors.fused.SustainedGroup`)."""

    def __init__(self, n: int) -> None:
        self.prev = np.full(n, np.nan, np.float64)  # previous plausible reading
        self.accepted = np.full(n, np.nan, np.float64)  # last accepted reading
        self.same = np.zeros(n, np.int32)  # readings equal to `prev` in a row

    def step(self, r: np.ndarray, x: np.ndarray, base_ok: np.ndarray, max_jump: Any,
             flat_samples: Any) -> np.ndarray:
        """Accept mask for readings `x` of rows `r`; `base_ok` = worn, at rest, not NaN."""
        prev, acc = self.prev[r], self.accepted[r]
        jump = (np.abs(x - prev) > max_jump) & (np.abs(x - acc) > max_jump)
        same = np.where(x == prev, self.same[r] + 1, 0)
        flat = (flat_samples > 0) & (same + 1 >= flat_samples)
        ok = base_ok & ~jump & ~flat
        rb = r[base_ok]
        self.prev[rb] = x[base_ok]
        self.same[rb] = same[base_ok]
        self.accepted[r[ok]] = x[ok]
        return ok


def worn_ok(worn: np.ndarray) -> np.ndarray:
    """Worn or not reported (-1 counts as worn: devices that never report `worn`)."""
    return worn != 0


def at_rest(activity: np.ndarray, rest_g: Any) -> np.ndarray:
    """Activity at or below the rest threshold, or not measured (compared in float32, the
    activity's type, whether the threshold is shared or per row)."""
    if isinstance(rest_g, np.ndarray):
        rest_g = rest_g.astype(np.float32)
    return ~(activity > rest_g)


def f32_threshold(value: Any) -> Any:
    """A threshold for a float32 reading rounded through float32 (a scalar or a per-row
    array; None passes), so that any comparison with it decides as a float32 one does."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value.astype(np.float32).astype(np.float64)
    return float(np.float32(value))
