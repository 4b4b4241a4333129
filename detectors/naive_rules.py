"""The per-sample rules of the per-device loop (`detectors.naive`): plain Python per device.

`episode` is `detectors.runs.Episodes.step` for one device: runs of qualifying samples
(gap tolerance `max_gap + EPS`, one stray sample tolerated), severity by level, onset at the
earliest run start, extreme value, clearing with hysteresis after `clear_s`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.naive_plan import EPS, INF, NAN, NEWS_TOP, Plan

if TYPE_CHECKING:
    from detectors.naive import NaiveLoop

_PARAMS = ("rr", "spo2", "sbp", "hr", "temp_c")  # NEWS2 order (detectors.news2.PARAMS)
_BASE_VITALS = ("hr", "spo2", "rr", "temp_c")  # detectors.baseline.BASE_VITALS


def new_episode() -> list[Any]:
    """[severity, onset, extreme, clear start, level 0 run start, last, strays, level 1 ...]"""
    return [0, NAN, NAN, NAN, NAN, NAN, 0, NAN, NAN, 0]


class Device:
    """One device's detector state."""

    __slots__ = ("awake", "bat_active", "bat_onset", "bat_tick", "bat_ts", "battery", "bp",
                 "bp_last", "fall",
                 "last_ts", "news", "news_ts", "news_val", "off_active", "off_due",
                 "off_onset", "online", "plan", "rules", "rx", "status_ts", "streams", "zep")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.last_ts = -INF  # newest sample seen (fall, NEWS2, baseline, awake hours)
        # per sustained stream: [newest ts with the vital, last motion, previous plausible
        # reading, last accepted reading, same readings in a row]
        self.streams = [[-INF, -INF, NAN, NAN, 0] for _ in plan.streams]
        self.rules = [new_episode() for _ in plan.rules]
        self.bp_last = -INF  # newest blood-pressure reading
        self.bp = [[0, NAN, NAN, False, NAN], [0, NAN, NAN, False, NAN]]  # count, streak
        # start, last reading, active, onset
        self.news_val = [NAN] * 5
        self.news_ts = [NAN] * 5
        self.news = new_episode()
        self.zep = new_episode()  # baseline deviation
        # impact ts, peak, last activity ts, when the stillness since the impact began, active,
        # onset, movement start, newest judged fall flag ts
        self.fall: list[Any] = [NAN, NAN, NAN, NAN, False, NAN, NAN, -INF]
        self.awake = [new_episode(), new_episode()]  # inactivity, not worn
        self.rx = NAN  # pipeline time of the last accepted sample
        self.online = -1
        self.status_ts = NAN
        self.off_active = False
        self.off_onset = NAN
        self.off_due = NAN
        self.battery = NAN
        self.bat_ts = NAN  # the held reading's sample or status ts
        self.bat_tick: list[tuple[float, float]] = []  # (ts, battery) of this tick's samples
        self.bat_active = False
        self.bat_onset = NAN


def episode(ep: list[Any], t: float, q0: bool, q1: bool, dur0: float, dur1: float, sev0: int,
            sev1: int, clear: bool, clear_s: float, max_gap: float, value: float, brk: bool
            ) -> tuple[bool, int, float, float] | None:
    """One included sample; (active, severity, onset, extreme) when a finding is due."""
    sev, s, last, miss = ep[0], ep[4], ep[5], ep[6]
    gapped = t - last > max_gap + EPS
    if q0:
        if gapped or s != s:
            s = t
        last, miss = t, 0
    else:
        miss += 1
        if gapped or miss > 1:
            s = NAN
    s1 = ep[7]
    step1 = q1 or s1 == s1  # an idle higher level (nothing qualifying, no run) is skipped
    if step1:
        last1, miss1 = ep[8], ep[9]
        gapped = t - last1 > max_gap + EPS
        if q1:
            if gapped or s1 != s1:
                s1 = t
            last1, miss1 = t, 0
        else:
            miss1 += 1
            if gapped or miss1 > 1:
                s1 = NAN
        ep[8] = last1
        ep[9] = miss1
    if brk:
        s = s1 = NAN
        miss = 0
        ep[9] = 0
    ep[4], ep[5], ep[6], ep[7] = s, last, miss, s1
    cand = sev0 if last - s >= dur0 - EPS else 0
    first = s
    if step1:
        if ep[8] - s1 >= dur1 - EPS:
            cand = sev1
        if s1 == s1 and (first != first or s1 < first):
            first = s1
    rise = cand > sev
    if q0 or sev > 0:
        ext = NAN if sev == 0 and s == t else ep[2]
        if ext != ext or value > ext:
            ext = value
        ep[2] = ext
    if rise:
        if sev == 0:
            ep[1] = first
        sev = ep[0] = cand
    if sev == 0:
        return None
    cs = ep[3]
    if clear:
        if cs != cs:
            cs = ep[3] = t
    else:
        cs = ep[3] = NAN
    if rise:
        return True, sev, ep[1], ep[2]
    if t - cs >= clear_s - EPS:
        done = (False, sev, ep[1], ep[2])
        ep[0], ep[1], ep[2], ep[3] = 0, NAN, NAN, NAN
        ep[4] = ep[7] = NAN
        ep[6] = ep[9] = 0
        return done
    return None


def sample_rules(loop: NaiveLoop, cols: list[list[Any]], order: Any, utc_offset_s: float,
                 out: list[Any]) -> None:
    """Every per-sample rule over one tick's samples (`cols` in `naive._COLS` order)."""
    rows, tss, hrs, spo2s, rrs, temps, sbps, dbps, acts, falls, worns = cols
    devs = loop.devices
    med_all, scale_all = loop.med, loop.scale
    for i in order:
        row = rows[i]
        d = devs[row]
        plan = d.plan
        t = tss[i]
        a = acts[i]
        w = worns[i]
        xs = (hrs[i], spo2s[i], rrs[i], temps[i])
        # ---- sustained single-vital rules, one gated stream per vital and gating
        for st, (vi, rest, recovery, mj, flat, rules) in zip(d.streams, plan.streams,
                                                            strict=True):
            moving = False
            if rest is not None:
                moving = a > rest  # motion counts from every sample
                if moving and t > st[1]:
                    st[1] = t
            x = xs[vi]
            if x != x or not t > st[0]:
                continue
            st[0] = t
            if w == 0 or moving or (rest is not None and t - st[1] <= recovery):
                continue
            prev = st[2]
            same = st[4] + 1 if x == prev else 0
            st[4] = same
            st[2] = x
            if abs(x - prev) > mj and abs(x - st[3]) > mj:
                continue  # implausible jump
            if flat > 0 and same + 1 >= flat:
                continue  # flat-line
            st[3] = x
            eps = d.rules
            for (j, kind, low, thr, crit, sev0, sev1, dur0, dur1, clear_at, clear_s, max_gap,
                 evkey) in rules:
                ep = eps[j]
                q0 = x <= thr if low else x >= thr
                if not (q0 or ep[4] == ep[4] or ep[0] > 0):
                    continue
                res = episode(ep, t, q0, x <= crit if low else x >= crit, dur0, dur1, sev0,
                              sev1, x >= clear_at if low else x <= clear_at, clear_s, max_gap,
                              -x if low else x, False)
                if res is not None:
                    active, sev, onset, ext = res
                    level = crit if sev == sev1 else (thr if sev == sev0 else NAN)
                    out.append((kind, row, sev, active, onset,
                                {"duration_s": t - onset, evkey: -ext if low else ext,
                                 "threshold": level}))
        # ---- blood pressure: readings only, fresh among readings
        sbp, dbp = sbps[i], dbps[i]
        if (sbp == sbp or dbp == dbp) and t > d.bp_last:
            d.bp_last = t
            if w != 0:
                _bp(d, row, t, sbp, dbp, out)
        if not t > d.last_ts:
            _late_fall(d, row, t, a, w, falls[i], out)
            continue  # late: the remaining rules skip it
        d.last_ts = t
        if w != 0:
            _news2(d, row, t, xs, sbp, a, out)
            med = med_all[row]
            if med:
                _baseline(d, row, t, xs, a, med, scale_all[row], utc_offset_s, out)
        _fall(d, row, t, a, w, falls[i], out)
        _awake(d, row, t, a, w, utc_offset_s, out)


def _bp(d: Device, row: int, t: float, sbp: float, dbp: float, out: list[Any]) -> None:
    hypo, crisis = d.plan.bp
    for k, kind in enumerate(("hypotension", "hypertensive_crisis")):
        if k == 0:
            readings, interval, thr, clear_at = hypo
            q, clear = sbp <= thr, sbp >= clear_at
        else:
            readings, interval, s_min, d_min, s_clear, d_clear = crisis
            q = sbp >= s_min or dbp >= d_min
            clear = not sbp > s_clear and not dbp > d_clear
        st = d.bp[k]
        count, start, last, active = st[0], st[1], st[2], st[3]
        if q:
            count = count + 1 if t - last <= interval + EPS else 1
            if count == 1 or start != start:
                start = t
        else:
            count, start = 0, NAN
        st[0], st[1], st[2] = count, start, t
        if not active and count >= readings:
            st[3], st[4] = True, start
        elif active and clear:
            st[3] = False
        else:
            continue
        onset = st[4]
        out.append((kind, row, 3, st[3], onset, {"sbp": sbp, "dbp": dbp,
                                                 "readings": float(count),
                                                 "duration_s": t - onset}))


def _news2(d: Device, row: int, t: float, xs: tuple[float, ...], sbp: float, a: float,
           out: list[Any]) -> None:
    luts, high_s, medium_s, three, dur, max_age, max_gap, clear_s, rest = d.plan.news
    at_rest = not a > rest
    vals, vts = d.news_val, d.news_ts
    total = 0
    any3 = False
    cur = [NAN] * 5
    for k, x in enumerate((xs[2], xs[1], sbp, xs[0], xs[3])):  # rr, spo2, sbp, hr, temp_c
        if x == x and (at_rest or k == 0 or k == 2 or k == 4):  # HR, SpO2: at rest only
            vals[k], vts[k] = x, t
        if t - vts[k] <= max_age:
            c = vals[k]
            cur[k] = c
            lut, scale, lo = luts[k]
            y = c * scale
            code = (round(y) - lo if -1e15 < y < 1e15 else (0 if y < 0 else NEWS_TOP))
            score = lut[0 if code < 0 else (NEWS_TOP if code > NEWS_TOP else code)]
            total += score
            if score == 3:
                any3 = True
    high = total >= high_s
    medium = high or total >= medium_s or (three and any3)
    ep = d.news
    if not (medium or ep[4] == ep[4] or ep[0] > 0):
        return
    score_f = float(total)
    res = episode(ep, t, medium, high, dur, dur, 2, 3, not medium, clear_s, max_gap,
                  score_f, False)
    if res is not None:
        active, sev, onset, ext = res
        ev = {"duration_s": t - onset, "score_max": ext, "score": score_f}
        ev.update(zip(_PARAMS, cur, strict=True))
        out.append(("news2", row, sev, active, onset, ev))


def _baseline(d: Device, row: int, t: float, xs: tuple[float, ...], a: float,
              med: list[float], scale: list[float], utc_offset_s: float,
              out: list[Any]) -> None:
    k_dev, clear_k, min_abs, dur, max_gap, clear_s, rest = d.plan.rest_base
    h = int(((t + utc_offset_s) % 86400.0) / 3600.0)
    at_rest = not a > rest
    zmax, best, dev = -1.0, -1, False
    for v in range(4):
        x = xs[v]
        if x != x or (v < 2 and not at_rest):  # HR and SpO2 count at rest only
            continue
        m = med[v * 24 + h]
        diff = abs(x - m)
        z = diff / scale[v * 24 + h]
        if z != z:
            continue
        if z > zmax:
            zmax, best = z, v
        if z >= k_dev and diff >= min_abs[v]:
            dev = True
    if best < 0:
        return
    ep = d.zep
    if not (dev or ep[4] == ep[4] or ep[0] > 0):
        return
    res = episode(ep, t, dev, False, dur, INF, 1, 0, zmax < clear_k, clear_s, max_gap, zmax,
                  False)
    if res is not None:
        active, sev, onset, ext = res
        out.append(("baseline_deviation", row, sev, active, onset,
                    {"duration_s": t - onset, "z_max": ext, "vital": _BASE_VITALS[best],
                     "value": xs[best], "baseline": med[best * 24 + h], "z": zmax}))


def _fall(d: Device, row: int, t: float, a: float, w: int, flag_in: int,
          out: list[Any]) -> None:
    (use_flag, impact_g, still_g, still_s, settle_s, max_gap, clear_g, clear_s,
     hold_s) = d.plan.fall
    f = d.fall
    flag = flag_in == 1 and w != 0 and use_flag
    if flag:
        f[7] = t
    imp = f[0]
    was = f[4]
    if not (a >= impact_g or flag or imp == imp or was):
        return  # nothing going on
    off = w == 0
    have = a == a
    hit = have and a >= impact_g and not off
    still = have and a <= still_g
    pending = imp == imp
    settled = t - imp > settle_s
    cancel = pending and (off or t - f[2] > max_gap or (have and not still and settled))
    if cancel:
        imp = NAN
    if hit:
        imp = t
    peak = a if hit else (NAN if cancel else f[1])
    # the stillness lasts still_s itself: from the impact or the latest settling movement
    sf = t if hit or (pending and have and not still) else f[3]
    if cancel and not hit:
        sf = NAN
    if have or hit:
        f[2] = t
    signature = imp == imp and sf == sf and t - sf >= still_s - EPS
    fire = not was and (flag or signature)
    if fire:
        f[5] = imp if signature and not flag else t
        imp = NAN  # a fired signature is consumed
    f[0], f[1], f[3] = imp, peak, sf
    # clearing: sustained movement without a new fall flag, or the condition lapses
    moving = have and a >= clear_g and not flag and not off
    ms = (f[6] if f[6] == f[6] else t) if was and moving else NAN
    f[6] = ms
    onset = f[5]
    cleared = was and (t - ms >= clear_s or t - onset >= hold_s)
    if not (fire or cleared):
        return
    ev = {"source": "device" if flag else "impact_stillness",
          "impact_g": a if flag else peak, "duration_s": t - onset}
    if fire:
        f[4] = True
        out.append(("fall", row, 4, True, onset, ev))
    else:
        f[4] = False
        f[6] = NAN
        out.append(("fall", row, 4, False, onset, ev))


def _late_fall(d: Device, row: int, t: float, a: float, w: int, flag_in: int,
               out: list[Any]) -> None:
    """A late sample: its fall flag fires unless a fall is active or a flag at least as new
    was judged."""
    f = d.fall
    if not (flag_in == 1 and w != 0 and d.plan.fall[0]):
        return
    fire = not f[4] and t > f[7]
    f[7] = max(f[7], t)
    if fire:
        f[4], f[5] = True, t
        out.append(("fall", row, 4, True, t, {"source": "device", "impact_g": a,
                                              "duration_s": 0.0}))


def _awake(d: Device, row: int, t: float, a: float, w: int, utc_offset_s: float,
           out: list[Any]) -> None:
    (i_start, i_end, still_g, clear_g, i_dur, i_gap, i_sev), (
        n_start, n_end, n_dur, n_gap, n_clear_s, n_sev) = d.plan.awake
    sod = (t + utc_offset_s) % 86400.0
    off = w == 0
    if a == a or off:  # inactivity: activity samples and off-wrist ones
        day = i_start <= sod < i_end
        q = a <= still_g and day and not off
        ep = d.awake[0]
        if q or ep[4] == ep[4] or ep[0] > 0:
            res = episode(ep, t, q, False, i_dur, INF, i_sev, 0, a >= clear_g and not off, 0.0,
                          i_gap, NAN if off else a, not day or off)
            if res is not None:
                active, sev, onset, ext = res
                out.append(("inactivity", row, sev, active, onset,
                            {"duration_s": t - onset, "activity_max": ext}))
    if w >= 0:  # not worn: samples that report wear
        day = n_start <= sod < n_end
        q = off and day
        ep = d.awake[1]
        if q or ep[4] == ep[4] or ep[0] > 0:
            res = episode(ep, t, q, False, n_dur, INF, n_sev, 0, w == 1, n_clear_s, n_gap,
                          float(w), not day)
            if res is not None:
                active, sev, onset, _ext = res
                out.append(("not_worn", row, sev, active, onset, {"duration_s": t - onset}))
