"""One pass for the awake-hours rules (inactivity, not worn) over the same devices.

Both walk every sample with the same freshness and, with equal awake-hours parameters, the
same local-time window; their episodes run in one bank over (rule, row) pairs, like the
sustained rules (`detectors.fused`). Findings are the same as each rule running alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.base import Findings, TickState
from detectors.fused import _flat_param
from detectors.runs import Emitter, Episodes, Fresh, MemberBank, rank_groups

if TYPE_CHECKING:
    from detectors.activity import _AwakeRule


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and bool((a == b).all())
    return bool(a == b)


class AwakeGroup(MemberBank):
    """Shared tick work of some awake-hours rules."""

    def __init__(self, members: list[_AwakeRule]) -> None:
        from detectors.activity import awake

        self._awake = awake
        n = members[0].n
        if any(m.n != n for m in members):
            raise ValueError("grouped rules must cover the same devices")
        self.members = members
        self.n = n
        self.fresh = Fresh(n)
        hours = [(m.params["awake_start_h"], m.params["awake_end_h"]) for m in members]
        self.shared_day = all(_same(h[0], hours[0][0]) and _same(h[1], hours[0][1])
                              for h in hours)
        self.bank = Episodes("awake", len(members) * n, (1,), "max")
        self.busy = self.bank.busy.reshape(len(members), n)  # a view, a row per rule
        self.pp = {k: _flat_param(v, n) for k, v in {
            "sev": [float(m.severity) for m in members],
            "dur": [m.params["duration_s"] for m in members],
            "max_gap": [m.params["max_gap_s"] for m in members],
            "clear_s": [m._clear_param() for m in members]}.items()}
        for m in members:
            m._group = self

    def _run(self, state: TickState) -> dict[int, list[Findings]]:
        new = state.new
        if len(new) == 0:
            return {}
        out = Emitter("awake")
        k = len(self.members)
        for idx in rank_groups(new.row):
            whole = len(idx) == len(new)
            r, t = (new.row, new.ts) if whole else (new.row[idx], new.ts[idx])
            ok = self.fresh.step(r, t)
            sel: Any = slice(None) if whole else idx  # a view of every sample: no copies
            if not ok.all():
                if not ok.any():
                    continue
                r, t, sel = r[ok], t[ok], idx[ok]
            dense = len(r) == self.n  # distinct rows, all of them: no gathers
            day: np.ndarray | None = None
            parts = []
            sizes: list[int] = []
            for j, m in enumerate(self.members):
                if day is None or not self.shared_day:
                    p = m.params
                    day = self._awake(t, state.utc_offset_s, p.at("awake_start_h", r),
                                      p.at("awake_end_h", r))
                inc, q, brk, clear, value = m._judge(r, new, sel, day)
                # only included samples of rows with something going on reach the bank
                busy = self.busy[j] if dense else self.busy[j].take(r)
                go = np.flatnonzero(inc & (q | busy))
                if len(go):
                    parts.append((r.take(go) + j * self.n, t.take(go), q.take(go),
                                  brk.take(go), clear.take(go),
                                  value.take(go).astype(np.float64)))
                sizes.append(len(go))
            if not parts:
                continue
            fi, tp, q, brk, clear, value = (parts[0] if len(parts) == 1 else
                                           (np.concatenate(x) for x in zip(*parts, strict=True)))
            # per-pair parameters: a rule's own value repeated over its pairs (pairs are
            # rule-major), or gathered where some vary by row
            pp = {name: np.repeat(v, sizes) if len(v) == k else v.take(fi)
                  for name, v in self.pp.items()}
            self.bank.step(out, fi, tp, [q], [pp["dur"]], clear, pp["clear_s"], pp["max_gap"],
                           value=value, ext_key="ext", breaks=brk,
                           severities=[pp["sev"].astype(np.int8)])
        return self._split(out.build())

    def _split(self, found: list[Findings]) -> dict[int, list[Findings]]:
        if not found:
            return {}
        f = found[0]
        rule, row = np.divmod(f.row.astype(np.int64), self.n)
        out: dict[int, list[Findings]] = {}
        for j in np.unique(rule).tolist():
            m = self.members[j]
            sel = rule == j
            ev = {"duration_s": f.evidence["duration_s"][sel]}
            if m.ext_key is not None:
                ev[m.ext_key] = f.evidence["ext"][sel]
            out[id(m)] = [Findings(m.kinds[0], row[sel].astype(np.int32), f.severity[sel],
                                   f.active[sel], f.onset_ts[sel], ev)]
        return out


def link_awake(detectors: list[Any]) -> None:
    """Put every awake-hours rule in `detectors` into one shared group (before any tick)."""
    from detectors.activity import _AwakeRule

    AwakeGroup.link(detectors, _AwakeRule, "awake-hours rules")
