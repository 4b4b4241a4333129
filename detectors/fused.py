"""One 2-D pass for the single-vital sustained rules (rules x devices).

Seven rules each walking a tick's samples cost ~100 small NumPy calls apiece, most of them
on gating that rules on the same vital repeat identically. A `SustainedGroup` does that
work once: rules whose gating agrees (vital, motion and jump/flat-line limits) share one
*stream*, and every stream's freshness, motion, rest and quality state is one row of a 2-D
array, stepped with one call per operation for all streams. A cheap 2-D test then finds the
rules with anything going on (a qualifying sample, a run in progress, an active condition);
only those run their episode logic (`SustainedThreshold._step`), on their accepted samples.

The result is the same as each rule running alone: a stream's state depends only on its
vital and gating parameters, and the episode step sees the same samples in the same order.

Members keep their public face (one detector per rule and per config name): each member's
`update` asks its group, which computes the whole tick on the first call and hands every
member its own findings. An unlinked rule is a group of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.base import Findings, TickState
from detectors.runs import Emitter, rank_groups

if TYPE_CHECKING:
    from detectors.sustained import SustainedThreshold


def _key(value: Any) -> Any:
    return value.tobytes() if isinstance(value, np.ndarray) else value


def param_matrix(values: list[Any], n: int, none: float = np.nan) -> np.ndarray:
    """Rows of per-row parameters: (k, 1) when each is a scalar, else (k, n)."""
    vals = [none if v is None else v for v in values]
    if all(not isinstance(v, np.ndarray) for v in vals):
        return np.array(vals, np.float64).reshape(len(vals), 1)
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in vals])


def at(matrix: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Columns `r` of a parameter matrix (a (k, 1) matrix broadcasts as it is)."""
    return matrix if matrix.shape[1] == 1 else matrix.take(r, axis=1)


class SustainedGroup:
    """Shared tick work of some sustained rules over the same devices."""

    def __init__(self, members: list[SustainedThreshold]) -> None:
        n = members[0].n
        if any(m.n != n for m in members):
            raise ValueError("grouped rules must cover the same devices")
        self.members = members
        self.n = n
        streams: dict[tuple[Any, ...], int] = {}
        stream_of: list[int] = []
        first: list[SustainedThreshold] = []
        for m in members:
            p = m.params
            rest = p["rest_g"] if p.base.rest_g is not None else None
            key = (m.vital, _key(rest), _key(p["recovery_s"]), _key(p["max_jump"]),
                   _key(p["flat_samples"]))
            if key not in streams:
                streams[key] = len(streams)
                first.append(m)
            stream_of.append(streams[key])
        s = len(first)
        self.vitals = [m.vital for m in first]
        self.stream_of = np.array(stream_of, np.intp)
        self.identity = stream_of == list(range(s))
        # no rest rule: the threshold is +inf, so nothing is ever "moving". Activity is
        # float32: a rule compares it with a scalar threshold in float32 (NumPy's weak
        # Python scalars), with a per-row float64 array in float64; rounding scalars through
        # float32 makes the one float64 comparison here agree with both.
        rests = [m.params["rest_g"] if m.params.base.rest_g is not None else None
                 for m in first]
        self.rest = param_matrix([float(np.float32(v)) if isinstance(v, float | int) else v
                                  for v in rests], n, np.inf)
        self.uses_rest = bool(np.isfinite(self.rest).any())
        self.recovery = param_matrix([m.params["recovery_s"] for m in first], n)
        self.zero_recovery = bool((self.recovery == 0).all())
        self.max_jump = param_matrix([m.params["max_jump"] for m in first], n)
        flat = param_matrix([m.params["flat_samples"] for m in first], n)
        self.flat_on = flat > 0
        self.flat_min = flat - 1  # same + 1 >= flat
        self.uses_flat = bool(self.flat_on.any())
        self.last_ts = np.full((s, n), -np.inf)
        self.last_motion = np.full((s, n), -np.inf)
        self.prev = np.full((s, n), np.nan)
        self.accepted = np.full((s, n), np.nan)
        self.same = np.zeros((s, n), np.int32)
        self.offsets = (np.arange(s, dtype=np.intp) * n)[:, None]  # flat index of (stream, 0)
        # rule side: episode level-0 runs and severities become rows of shared arrays, so one
        # gather tests every rule for activity
        r = len(members)
        # value <= lo or >= hi qualifies: low rules have hi = +inf, high rules lo = -inf
        thr = np.stack([m.thr for m in members])
        if (thr == thr[:, :1]).all():
            thr = thr[:, :1]
        low = np.array([m.low for m in members]).reshape(r, 1)
        self.lo = np.where(low, thr, -np.inf)
        self.hi = np.where(low, np.inf, thr)
        self.start0 = np.full((r, n), np.nan)
        self.sev = np.zeros((r, n), np.int8)
        for j, m in enumerate(members):
            self.start0[j] = m.episodes.runs[0].start
            self.sev[j] = m.episodes.sev
            m.episodes.runs[0].start = self.start0[j]
            m.episodes.sev = self.sev[j]
            m._group = self
        self._new: Any = None
        self._now = np.nan
        self._out: dict[int, list[Findings]] = {}

    def take(self, member: SustainedThreshold, state: TickState, now: float) -> list[Findings]:
        """`member`'s findings for this tick (the first member asking runs the tick)."""
        if state.new is not self._new or now != self._now:
            self._new, self._now = state.new, now
            self._out = self._run(state)
        return self._out.pop(id(member), [])

    def _run(self, state: TickState) -> dict[int, list[Findings]]:
        new = state.new
        m = len(new)
        if m == 0:
            return {}
        vm = np.array([getattr(new, v) for v in self.vitals], np.float64)
        if not self.uses_rest and np.isnan(vm).all():
            return {}  # e.g. no temperature this tick: nothing to do
        worn_ok = new.worn != 0
        act = new.activity
        emitters: dict[int, Emitter] = {}
        for idx in rank_groups(new.row):
            whole = len(idx) == m
            if whole:
                r, t, x, worn, a = new.row, new.ts, vm, worn_ok, act
            else:
                r, t, x, worn, a = new.row[idx], new.ts[idx], vm[:, idx], worn_ok[idx], act[idx]
            self._step(r, t, x, worn, a, emitters)
        return {id(self.members[j]): e.build() for j, e in emitters.items()}

    def _step(self, r: np.ndarray, t: np.ndarray, x: np.ndarray, worn: np.ndarray,
              a: np.ndarray, emitters: dict[int, Emitter]) -> None:
        """One sample for each of the distinct rows `r`; x is (streams, samples)."""
        # A dense tick (every device has a sample) updates the state arrays in place; else
        # columns are gathered with take (far cheaper than [:, r]) and scattered back by
        # flat index. copyto(where=) avoids big temporaries and broadcasting np.where.
        dense = len(r) == self.n
        fi = None if dense else self.offsets + r
        last = self._cols(self.last_ts, r, dense)
        # lateness is judged per vital stream: a sample without the vital is not seen
        ok = (t > last) & (x == x)
        np.copyto(last, t, where=ok)
        self._back(self.last_ts, fi, last)
        base = ok & worn
        if self.uses_rest:
            # motion counts from every sample, with or without the vital, fresh or late
            moving = a > at(self.rest, r)
            motion = self._cols(self.last_motion, r, dense)
            if moving.any():
                np.copyto(motion, t, where=moving & (t > motion))
                self._back(self.last_motion, fi, motion)
            base &= ~moving
            if self.zero_recovery:  # t - motion <= 0 exactly when t <= motion
                base &= ~(t <= motion)
            else:
                base &= ~((t - motion) <= at(self.recovery, r))
        if not base.any():
            return
        # quality gate (detectors.quality.Gate, one row per stream)
        prev = self._cols(self.prev, r, dense)
        acc = self._cols(self.accepted, r, dense)
        mj = at(self.max_jump, r)
        d = np.subtract(x, prev)
        jump = np.abs(d, out=d) > mj
        d = np.subtract(x, acc, out=d)
        jump &= np.abs(d, out=d) > mj
        good = base & ~jump
        if self.uses_flat:
            same = self._cols(self.same, r, dense)
            run = np.where(x == prev, same + 1, 0)
            good &= ~(at(self.flat_on, r) & (run >= at(self.flat_min, r)))
            np.copyto(same, run, where=base)
            self._back(self.same, fi, same)
        np.copyto(prev, x, where=base)
        np.copyto(acc, x, where=good)
        self._back(self.prev, fi, prev)
        self._back(self.accepted, fi, acc)
        if not good.any():
            return
        if not self.identity:
            good, x = good[self.stream_of], x.take(self.stream_of, axis=0)
        # a superset of what each rule's episode step looks at (it filters again)
        live = (x <= at(self.lo, r)) | (x >= at(self.hi, r))
        live |= self._cols(self.start0, r, dense) == self._cols(self.start0, r, dense)
        live |= self._cols(self.sev, r, dense) > 0
        live &= good
        for j in np.flatnonzero(live.any(axis=1)).tolist():
            sel = np.flatnonzero(live[j])
            member = self.members[j]
            out = emitters.get(j)
            if out is None:
                out = emitters[j] = Emitter(member.kinds[0])
            member._step(out, r[sel], t[sel], x[j, sel])

    @staticmethod
    def _cols(state: np.ndarray, r: np.ndarray, dense: bool) -> np.ndarray:
        return state if dense else state.take(r, axis=1)

    @staticmethod
    def _back(state: np.ndarray, fi: np.ndarray | None, values: np.ndarray) -> None:
        if fi is not None:
            state.reshape(-1)[fi] = values

def link_sustained(detectors: list[Any]) -> None:
    """Put every sustained rule in `detectors` into one shared group (before any tick)."""
    from detectors.sustained import SustainedThreshold

    members = [d for d in detectors if isinstance(d, SustainedThreshold)]
    if len(members) < 2:
        return
    if any(m._group._new is not None for m in members):
        raise ValueError("link sustained rules before their first tick")
    SustainedGroup(members)
