"""The vectorised ingest path (decode, de-duplicate, append) against a per-sample reference.

Random mixes of good, faulty, duplicate, late, future and malformed messages go through
`Pipeline.handle` and through `tests.ingest_reference.Reference`; accepted samples, state
scalars, raw rings, minute series, rejections and counters must agree. Vital values lie on
a 1/16 grid, so float32 sums are exact and the order of summation cannot matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carewatch.clock import SimClock
from carewatch.pipeline import Pipeline
from ingest.publish import ListPublisher
from ingest.samples import PLAUSIBLE, VITALS
from tests.ingest_harness import small_config
from tests.ingest_reference import Reference

NOW = 1_764_316_800.0
CONFIG = small_config(
    residents=4, towns=2, state={"raw_ring_samples": 8, "minute_ring_minutes": 90}
)
RES = CONFIG.residents


def grid_value(name: str) -> st.SearchStrategy[float | None]:
    lo, hi = PLAUSIBLE[name]
    step = 1 if name == "battery" else 1 / 16
    inside = st.integers(int(lo / step), int(hi / step)).map(lambda k: k * step)
    outside = st.sampled_from([lo - 1, hi + step, -1e6, 1e39])
    return st.one_of(inside, inside, inside, outside, st.none())


@st.composite
def sample(draw: st.DrawFn, base: float) -> dict[str, Any]:
    kind = draw(st.sampled_from(["now", "now", "now", "late", "old", "future", "bad"]))
    # "old" lands in the slot of a recent minute, one or more ring lengths back
    offset = {
        "now": draw(st.integers(-120, 5)),
        "late": draw(st.integers(-3600, -121)),
        "old": -5400 * draw(st.integers(1, 4)) + draw(st.integers(-120, 0)),
        "bad": 0,
        "future": NOW - base + draw(st.integers(302, 900)),
    }[kind]
    s: dict[str, Any] = {"ts": base + offset + draw(st.sampled_from([0.0, 0.5]))}
    if draw(st.booleans()):
        s["seq"] = draw(st.integers(0, 5))
    for v in (*VITALS, "battery"):
        if draw(st.integers(0, 2)):
            s[v] = draw(grid_value(v))
    for f in ("fall", "worn"):
        if draw(st.booleans()):
            s[f] = draw(st.sampled_from([True, False, None]))
    if kind == "bad":
        what = draw(st.sampled_from(["no_ts", "ts0", "seq", "battery", "type", "device_id"]))
        if what == "no_ts":
            del s["ts"]
        else:
            s.update(
                {
                    "ts0": {"ts": 0},
                    "seq": {"seq": draw(st.sampled_from([-1, 1.5]))},
                    "battery": {"battery": 50.5},
                    "type": {"hr": "70"},
                    "device_id": {"device_id": "dev-9999"},
                }[what]
            )
    return s


@st.composite
def message(draw: st.DrawFn, base: float, sent: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    if sent and draw(st.integers(0, 5)) == 0:  # a redelivery
        return draw(st.sampled_from(sent))
    r = draw(st.sampled_from(RES))
    topic = f"carewatch/v1/{r.town}/{r.device}/vitals"
    kind = draw(st.integers(0, 12))
    if kind == 0:
        topic = f"carewatch/v1/{r.town}/dev-9999/vitals"
    elif kind == 1:
        other = next(x for x in RES if x.town != r.town)
        topic = f"carewatch/v1/{other.town}/{r.device}/vitals"
    if kind == 2:
        payload = draw(st.sampled_from([b"{", b"[1]", b'{"samples": []}', b'{"samples": 3}']))
    elif kind <= 7:
        payload = orjson.dumps(draw(sample(base)))
    else:
        items = draw(st.lists(sample(base), min_size=1, max_size=8))
        if draw(st.integers(0, 2)) == 0:  # a repeat inside the batch, maybe not adjacent
            twin = items[0] | {"seq": 1 + items[0].get("seq", 0)}
            items[1:1] = [twin, items[0]] if draw(st.booleans()) else [items[0]]
        payload = orjson.dumps({"samples": items})
    sent.append((topic, payload))
    return topic, payload


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[float], list[list[tuple[str, bytes]]]]:
    """Batches of messages, each around a base time (returned too) that moves forward."""
    sent: list[tuple[str, bytes]] = []
    out, bases = [], []
    base = NOW - 60_000.0
    for _ in range(draw(st.integers(1, 8))):
        base += draw(st.sampled_from([10, 60, 600, 7200]))
        bases.append(base)
        out.append(draw(st.lists(message(base, sent), min_size=1, max_size=12)))
    return bases, out


def check_state(pipe: Pipeline, ref: Reference) -> None:
    s, n = pipe.store, len(pipe.devices)
    for row in range(n):
        for v in VITALS:
            x, t = ref.latest.get((row, v), (np.nan, np.nan))
            got = [s.latest[v][row], s.latest_ts[v][row]]
            assert np.array_equal(got, [np.float32(x), t], equal_nan=True), (row, v)
        worn, t = ref.latest.get((row, "worn"), (-1, np.nan))
        assert s.worn[row] == worn
        assert np.array_equal(s.worn_ts[row], t, equal_nan=True)
        assert np.array_equal(s.battery[row], ref.battery.get(row, np.nan), equal_nan=True)
        assert np.array_equal(s.last_ts[row], ref.last_ts.get(row, np.nan), equal_nan=True)
        assert np.array_equal(
            s.last_received[row], ref.last_received.get(row, np.nan), equal_nan=True
        )
        raw = s.raw_window(row)
        held = ref.raw[row][-s.raw_capacity :]
        assert raw["ts"].tolist() == [x.ts for x in held]
        assert raw["seq"].tolist() == [np.int64(x.seq).astype(np.int32) for x in held]
        assert raw["worn"].tolist() == [x.worn for x in held]
        assert raw["fall"].tolist() == [x.fall == 1 for x in held]
        for v in VITALS:
            want16 = np.array([x.values.get(v, np.nan) for x in held], np.float16)
            assert np.array_equal(raw[v], want16.astype(np.float32), equal_nan=True), v
        assert s.samples_total[row] == len(ref.raw[row])


def check_minutes(pipe: Pipeline, ref: Reference, now: float) -> None:
    rows = np.arange(len(pipe.devices))
    series = pipe.store.minute_series(rows, now)
    minutes = (series.minute_start // 60).astype(np.int64)
    for row in rows.tolist():
        want = ref.minute_values(row, minutes)
        for v in VITALS:
            np.testing.assert_allclose(
                series.values[v][row],
                want[v],
                rtol=1e-3 if v == "activity" else 1e-6,
                equal_nan=True,
                err_msg=f"row {row} {v}",
            )
        assert series.worn[row].tolist() == want["worn"]
        assert series.fall[row].tolist() == [bool(x) for x in want["fall"]]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches())
def test_pipeline_matches_per_sample_reference(
    case: tuple[list[float], list[list[tuple[str, bytes]]]],
) -> None:
    bases, msgs = case
    clock = SimClock(NOW)
    pipe = Pipeline(CONFIG, clock, ListPublisher())
    ref = Reference(pipe.devices, CONFIG.state.raw_ring_samples, CONFIG.state.minute_ring_minutes)
    seen: list[Any] = []
    pipe.rejection_listeners.append(seen.append)
    received = NOW
    for i, batch in enumerate(msgs):
        # a distinct receive time per message names the message behind each rejection
        timed = []
        for topic, payload in batch:
            received += 0.001
            timed.append((topic, payload, received))
        clock.set(received)
        pipe.handle(timed)
        ref.handle(timed, received)
        check_state(pipe, ref)
        check_minutes(pipe, ref, bases[i] + 60)
    assert sorted((r.received_at, r.reason) for r in seen) == sorted(ref.reasons)
    totals = pipe.metrics.totals
    for name in ("received", "accepted", "samples", "duplicates", "future"):
        assert totals.get(name, 0) == ref.totals[name], name
    assert dict(pipe.metrics.by_field) == dict(+ref.faults)
    new = pipe.store.take_pending()
    assert len(new) == ref.totals["samples"]
