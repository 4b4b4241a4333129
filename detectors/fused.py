"""One 2-D pass for the single-vital sustained rules (rules x devices).

Seven rules each walking a tick's samples cost ~100 small NumPy calls apiece, most of them
on gating that rules on the same vital repeat identically. A `SustainedGroup` does that
work once: rules whose gating agrees (vital, motion and jump/flat-line limits) share one
*stream*, and every stream's freshness and quality state is one row of a 2-D array, stepped
with one call per operation for all streams (motion: one row per distinct rest threshold).
A cheap 2-D test then finds the rules with anything going on (a qualifying sample, a run in
progress, an active condition); only those run their episode logic, on their accepted
samples.

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
from detectors.kernels import blend
from detectors.quality import f32_threshold
from detectors.runs import Emitter, Episodes, MemberBank, rank_groups

if TYPE_CHECKING:
    from detectors.sustained import SustainedThreshold


JUMP_OFF = 1e9  # `max_jump` at or above this is off (the default): no vital moves that far


def _key(value: Any) -> Any:
    return value.tobytes() if isinstance(value, np.ndarray) else value


def param_matrix(values: list[Any], n: int, none: float = np.nan) -> np.ndarray:
    """Rows of per-row parameters: (k, 1) when each is a scalar, else (k, n)."""
    vals = [none if v is None else v for v in values]
    if all(not isinstance(v, np.ndarray) for v in vals):
        return np.array(vals, np.float64).reshape(len(vals), 1)
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in vals])


def _flat_param(values: list[Any], n: int) -> np.ndarray:
    """Per-rule values as a (rules,) vector, or flat (rules x rows) when some vary by row."""
    if all(not isinstance(v, np.ndarray) for v in values):
        return np.array(values, np.float64)
    return np.concatenate([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in values])


def at(matrix: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Columns `r` (distinct, sorted) of a parameter matrix; a (k, 1) matrix broadcasts as it
    is, and all rows need no gather."""
    return matrix if matrix.shape[1] in (1, len(r)) else matrix.take(r, axis=1)


class SustainedGroup(MemberBank):
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
            rest = p["rest_g"]  # None: no rest rule on any row (NaN: not on that row)
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
        # float32 and compared as float32 (`quality.at_rest`): thresholds rounded through
        # float32, shared or per row, make this float64 comparison decide the same.
        rest = param_matrix([f32_threshold(m.params["rest_g"]) for m in first], n, np.inf)
        recovery = param_matrix([m.params["recovery_s"] for m in first], n)
        self.uses_rest = bool(np.isfinite(rest).any())
        # Motion is tracked once per distinct (rest, recovery) pair, not per stream: by
        # default heart rate and SpO2 share one row and the other vitals have none.
        motion_rows: dict[tuple[bytes, bytes], int] = {}
        rest_streams: list[int] = []
        motion_of: list[int] = []
        for i in range(s):
            ri = rest[i] if rest.shape[1] > 1 else rest[i, :1]
            ci = recovery[i] if recovery.shape[1] > 1 else recovery[i, :1]
            if not np.isfinite(ri).any():
                continue
            rest_streams.append(i)
            motion_of.append(motion_rows.setdefault((ri.tobytes(), ci.tobytes()),
                                                    len(motion_rows)))
        first_of = [rest_streams[motion_of.index(u)] for u in range(len(motion_rows))]
        self.rest = rest[first_of] if first_of else rest[:0]
        self.recovery = recovery[first_of] if first_of else recovery[:0]
        self.rest_streams = np.array(rest_streams, np.intp)
        self.motion_of = np.array(motion_of, np.intp)
        self.motion_offsets = (np.arange(len(first_of), dtype=np.intp) * n)[:, None]
        self.max_jump = param_matrix([m.params["max_jump"] for m in first], n)
        self.uses_jump = bool((self.max_jump < JUMP_OFF).any())
        flat = param_matrix([m.params["flat_samples"] for m in first], n)
        self.uses_flat = bool((flat > 0).any())
        # stuck once same + 1 >= flat, i.e. run >= flat - 1 (never where flat is 0: off)
        self.flat_limit = np.where(flat > 0, flat - 1, np.iinfo(np.int32).max).astype(np.int32)
        self.last_ts = np.full((s, n), -np.inf)
        self.last_motion = np.full((len(first_of), n), -np.inf)  # per motion row
        self.prev = np.full((s, n), np.nan)
        self.accepted = np.full((s, n), np.nan)
        self.same = np.zeros((s, n), np.int32)
        self.offsets = (np.arange(s, dtype=np.intp) * n)[:, None]  # flat index of (stream, 0)
        # rule side: one episode bank over flat (rule, row) pairs, index j * n + row, two
        # levels for every rule (a rule without a critical level never meets its second)
        r = len(members)
        # value <= lo or >= hi qualifies: low rules have hi = +inf, high rules lo = -inf
        thr = np.stack([m.thr for m in members])
        if (thr == thr[:, :1]).all():
            thr = thr[:, :1]
        low = np.array([m.low for m in members]).reshape(r, 1)
        lo = np.where(low, thr, -np.inf)
        hi = np.where(low, np.inf, thr)
        # per stream, qualifying for any of its rules (tested first, on streams not rules)
        self.lo_any = np.stack([lo[self.stream_of == k].max(axis=0) for k in range(s)])
        self.hi_any = np.stack([hi[self.stream_of == k].min(axis=0) for k in range(s)])
        self.bank = Episodes("sustained", r * n, (1, 2), "max")
        self.busy = self.bank.busy.reshape(r, n)  # a view: one gather tests all rules
        crit = [m.crit if m.crit is not None else np.nan for m in members]
        pp: dict[str, list[Any]] = {  # per pair: (rule,) vectors or flat (rule x row)
            "sign": [-1.0 if m.low else 1.0 for m in members],
            "thr": [m.thr for m in members], "crit": crit,
            "sev0": [float(m.severity) for m in members],
            "sev1": [4.0 if m.crit is not None else 0.0 for m in members],
            "dur0": [m.params["duration_s"] for m in members],
            "dur1": [m.params["critical_duration_s"] if m.crit is not None else np.inf
                     for m in members],
            "margin": [m.params["clear_margin"] for m in members],
            "clear_s": [m.params["clear_s"] for m in members],
            "max_gap": [m.params["max_gap_s"] for m in members]}
        self.pp = {k: _flat_param(v, n) for k, v in pp.items()}
        for m in members:
            m._group = self
        self._bufs: dict[str, np.ndarray] = {}

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
        out = Emitter("sustained")
        for idx in rank_groups(new.row):
            whole = len(idx) == m
            if whole:
                r, t, x, worn, a = new.row, new.ts, vm, worn_ok, act
            else:
                r, t, x, worn, a = new.row[idx], new.ts[idx], vm[:, idx], worn_ok[idx], act[idx]
            self._step(r, t, x, worn, a, out)
        return self._split(out.build())

    def _split(self, found: list[Findings]) -> dict[int, list[Findings]]:
        """The bank's findings (flat rows) as each rule's own, with its evidence keys."""
        if not found:
            return {}
        f = found[0]
        rule, row = np.divmod(f.row.astype(np.int64), self.n)
        out: dict[int, list[Findings]] = {}
        for j in np.unique(rule).tolist():
            m = self.members[j]
            sel = rule == j
            ext = f.evidence["ext"][sel]
            ev = {"duration_s": f.evidence["duration_s"][sel],
                  f"{m.vital}_{'min' if m.low else 'max'}": -ext if m.low else ext,
                  "threshold": f.evidence["threshold"][sel]}
            out[id(m)] = [Findings(m.kinds[0], row[sel].astype(np.int32), f.severity[sel],
                                   f.active[sel], f.onset_ts[sel], ev)]
        return out

    def _step(self, r: np.ndarray, t: np.ndarray, x: np.ndarray, worn: np.ndarray,
              a: np.ndarray, out: Emitter) -> None:
        """One sample for each of the distinct rows `r`; x is (streams, samples)."""
        # A dense tick (every device has a sample) updates the state arrays in place; else
        # columns are gathered with take (far cheaper than [:, r]) and scattered back by
        # flat index. Masked updates are `blend`s: no branch per element.
        dense = len(r) == self.n
        fi = None if dense else self.offsets + r
        last = self._cols(self.last_ts, r, dense)
        # lateness is judged per vital stream: a sample without the vital is not seen.
        # tx = t where the vital is present, else NaN (vitals are finite), so the freshness
        # test and the update are plain comparisons, not masked copies.
        tx = np.multiply(x, 0.0, out=self._buf(dense, "tx", x.shape, np.float64))
        tx += t
        ok = tx > last  # NaN compares False
        np.fmax(last, tx, out=last)  # fmax skips NaN: a missing vital leaves it
        self._back(self.last_ts, fi, last)
        base = ok & worn
        if self.uses_rest:
            # motion counts from every sample, with or without the vital, fresh or late
            moving = a > at(self.rest, r)
            motion = self._cols(self.last_motion, r, dense)
            if moving.any():
                # the latest moving sample's time: fmax skips the NaN of samples at rest
                np.fmax(motion, np.where(moving, t, np.nan), out=motion)
                self._back(self.last_motion, None if dense else self.motion_offsets + r,
                           motion)
            # a moving sample has t <= motion now, so this excludes it too
            still = (t - motion) > at(self.recovery, r)
            base[self.rest_streams] &= still[self.motion_of]
        if not base.any():
            return
        # quality gate (detectors.quality.Gate, one row per stream). Both filters are
        # opt-in and off on every row by default: then no stream needs its previous or last
        # accepted value, and the gate is `base` (a third of the group's passes saved)
        good = base
        if self.uses_jump or self.uses_flat:
            good = self._gate(r, x, tx, base, dense, fi)
        if not good.any():
            return
        # pairs with something going on: a qualifying sample, a run, an active condition.
        # A sample qualifying for one rule of its stream makes the stream's every rule a
        # candidate; the bank's own test (`Episodes.step`) drops those with nothing going on.
        live = (x <= at(self.lo_any, r)) | (x >= at(self.hi_any, r))
        busy = self._cols(self.busy, r, dense)
        if not self.identity:
            live = live.take(self.stream_of, axis=0)
            good = good.take(self.stream_of, axis=0)
        live = live | busy  # never in place: on dense ticks busy is the bank's own array
        live &= good
        pairs = np.flatnonzero(live)  # rule-major: each rule's rows stay in order
        if len(pairs) == 0:
            return
        j, col = np.divmod(pairs, len(r))
        fi = j * self.n + r[col]
        tp = t[col]
        xp = x.reshape(-1)[self.stream_of[j] * len(r) + col]
        rules = len(self.members)
        p = {k: v.take(j) if len(v) == rules else v.take(fi) for k, v in self.pp.items()}
        sx = p["sign"] * xp  # low rules negated: one comparison direction, one extreme (max)
        q0 = sx >= p["sign"] * p["thr"]
        q1 = sx >= p["sign"] * p["crit"]  # NaN without a critical level: never
        # clears this far back: low x >= thr + margin, high x <= thr - margin
        clear = np.where(p["sign"] < 0, xp >= p["thr"] + p["margin"],
                         xp <= p["thr"] - p["margin"])
        self.bank.step(out, fi, tp, [q0, q1], [p["dur0"], p["dur1"]], clear, p["clear_s"],
                       p["max_gap"], value=sx, ext_key="ext", thresholds=[p["thr"], p["crit"]],
                       severities=[p["sev0"].astype(np.int8), p["sev1"].astype(np.int8)])

    def _gate(self, r: np.ndarray, x: np.ndarray, tx: np.ndarray, base: np.ndarray,
              dense: bool, fi: np.ndarray | None) -> np.ndarray:
        """The jump and flat-line filters over `base` (tx: a scratch array of x's shape)."""
        prev = self._cols(self.prev, r, dense)
        good = base
        if self.uses_jump:
            acc = self._cols(self.accepted, r, dense)
            # a jump from both the previous and the last accepted value (NaN: no jump)
            d = np.subtract(x, prev, out=self._buf(dense, "d", x.shape, np.float64))
            np.abs(d, out=d)
            d2 = np.subtract(x, acc, out=tx)
            np.abs(d2, out=d2)
            np.minimum(d, d2, out=d)  # NaN propagates: compares False below
            good = base & ~(d > at(self.max_jump, r))
        if self.uses_flat:
            same = self._cols(self.same, r, dense)
            run = np.add(same, 1, out=self._buf(dense, "run", same.shape, np.int32))
            run *= x == prev
            good = good & (run < at(self.flat_limit, r))
            run -= same  # same = where(base, run, same), branch-free on integers
            run *= base
            same += run
            self._back(self.same, fi, same)
        blend(prev, x, base)
        self._back(self.prev, fi, prev)
        if self.uses_jump:
            blend(acc, x, good)
            self._back(self.accepted, fi, acc)
        return good

    def _buf(self, dense: bool, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """A reused scratch array for dense ticks (big temporaries cost page faults each
        tick); None (allocate) otherwise."""
        if not dense:
            return None
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape:
            buf = self._bufs[name] = np.empty(shape, dtype)
        return buf

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

    SustainedGroup.link(detectors, SustainedThreshold, "sustained rules")
