"""Table-driven tests of the sustained vital-sign rules: thresholds, durations, gaps,
stray samples, motion and wear gating, hysteresis, copd scale 2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from detectors_harness import Feeder, cols, opened, records, run_one, series, table

from detectors.base import TickState
from detectors.sustained import (
    Bradycardia,
    Bradypnoea,
    Fever,
    Hypothermia,
    Hypoxemia,
    Tachycardia,
    Tachypnoea,
)
from ingest.samples import SampleColumns

T0 = 1_764_316_800.0


def held(value: float, seconds: float, dt: float = 10.0, before: float | None = None,
         after: float | None = None) -> list[float]:
    """`value` for `seconds` (inclusive span), optionally framed by normal values."""
    body = [value] * (round(seconds / dt) + 1)
    return ([before] * 3 if before is not None else []) + body + (
        [after] * 3 if after is not None else [])


# Steps stay within each vital's implausible-jump limit (a larger step loses one sample).
# (detector, vital, normal value, test value, span held in s, expected severity or 0, extra)
CASES: list[tuple[Any, str, float, float, float, int, dict[str, Any]]] = [
    (Hypoxemia, "spo2", 97, 90, 60, 3, {}),  # at threshold, exactly the duration
    (Hypoxemia, "spo2", 97, 90, 50, 0, {}),  # one sample short
    (Hypoxemia, "spo2", 97, 91, 600, 0, {}),  # just above the threshold
    (Hypoxemia, "spo2", 97, 85, 30, 4, {}),  # critical after 30 s
    (Hypoxemia, "spo2", 97, 85, 20, 0, {}),  # one sample short of critical
    (Hypoxemia, "spo2", 97, 86, 120, 3, {}),  # not critical: high only
    (Bradycardia, "hr", 70, 40, 60, 3, {}),
    (Bradycardia, "hr", 70, 41, 300, 0, {}),
    (Bradycardia, "hr", 70, 40, 50, 0, {}),
    (Tachycardia, "hr", 100, 130, 120, 3, {"activity": 0.0}),
    (Tachycardia, "hr", 80, 130, 110, 0, {"activity": 0.0}),
    (Tachycardia, "hr", 80, 129, 600, 0, {"activity": 0.0}),
    (Tachycardia, "hr", 120, 150, 60, 4, {"activity": 0.0}),
    (Tachycardia, "hr", 80, 149, 90, 0, {"activity": 0.0}),
    (Tachycardia, "hr", 80, 160, 600, 0, {"activity": 0.5}),  # exercise: not at rest
    (Bradypnoea, "rr", 16, 8, 60, 3, {}),
    (Bradypnoea, "rr", 16, 9, 300, 0, {}),
    (Tachypnoea, "rr", 16, 25, 120, 3, {}),
    (Tachypnoea, "rr", 16, 24, 600, 0, {}),
    (Tachypnoea, "rr", 16, 25, 110, 0, {}),
    (Fever, "temp_c", 36.6, 38.0, 600, 2, {"dt": 60.0}),
    (Fever, "temp_c", 36.6, 37.9, 1800, 0, {"dt": 60.0}),
    (Fever, "temp_c", 36.6, 38.5, 540, 0, {"dt": 60.0}),
    (Hypothermia, "temp_c", 36.6, 35.0, 600, 2, {"dt": 60.0}),
    (Hypothermia, "temp_c", 36.6, 35.1, 1800, 0, {"dt": 60.0}),
]


@pytest.mark.parametrize(("cls", "vital", "normal", "value", "span", "expect", "extra"), CASES)
def test_threshold_and_duration(cls: Any, vital: str, normal: float, value: float, span: float,
                                expect: int, extra: dict[str, Any]) -> None:
    extra = dict(extra)
    dt = extra.pop("dt", 10.0)
    values = held(value, span, dt, before=normal, after=normal)
    got = opened(run_one(cls(2), series(0, T0, values, dt, vital, **extra)))
    assert [r["severity"] for r in got][-1:] == ([expect] if expect else [])
    if expect:
        assert got[0]["onset"] == T0 + 3 * dt  # where the run began
        assert got[0]["row"] == 0


def test_evidence_and_message_shape() -> None:
    got = opened(run_one(Hypoxemia(1), series(0, T0, held(84, 80, before=97))))
    crit = got[-1]
    assert crit["severity"] == 4
    assert crit["evidence"]["spo2_min"] == 84
    assert crit["evidence"]["threshold"] == 85
    assert crit["evidence"]["duration_s"] >= 30


def test_copd_uses_scale_2() -> None:
    # rows 0 (copd) and 1 (not) both at 86 for 2 min, then both at 84 for 2 min
    values = [97] * 3 + [86] * 13 + [97] * 3
    batch = SampleColumns.concat([series(0, T0, values), series(1, T0, values)])
    got = opened(run_one(Hypoxemia(table(2, copd=(0,))), batch))
    assert {r["row"] for r in got} == {1}
    values = [97] * 3 + [84] * 7
    batch = SampleColumns.concat([series(0, T0, values), series(1, T0, values)])
    got = opened(run_one(Hypoxemia(table(2, copd=(0,))), batch))
    assert {(r["row"], r["severity"]) for r in got} == {(0, 3), (1, 4)}
    values = [92] * 3 + [80] * 4
    got = opened(run_one(Hypoxemia(table(1, copd=(0,))), series(0, T0, values)))
    assert [r["severity"] for r in got] == [4]


def test_missing_sample_does_not_reset_but_long_gap_does() -> None:
    ts = T0 + np.arange(0, 70, 10.0)
    spo2 = np.full(len(ts), 88.0)
    spo2[3] = np.nan  # a dropout: 20 s gap between qualifying samples
    got = opened(run_one(Hypoxemia(1), cols(0, ts, spo2=spo2, worn=1)))
    assert [r["onset"] for r in got] == [T0]
    ts = np.r_[T0 + np.arange(0, 30, 10.0), T0 + 60 + np.arange(0, 50, 10.0)]  # 40 s gap
    got = opened(run_one(Hypoxemia(1), cols(0, ts, spo2=88.0, worn=1)))
    assert got == []
    ts = np.r_[T0 + np.arange(0, 30, 10.0), T0 + 50 + np.arange(0, 70, 10.0)]  # 30 s gap
    got = opened(run_one(Hypoxemia(1), cols(0, ts, spo2=88.0, worn=1)))
    assert [r["onset"] for r in got] == [T0]


def test_isolated_stray_sample_survives_two_in_a_row_break() -> None:
    one = [88.0] * 4 + [96.0] + [88.0] * 3
    assert [r["onset"] for r in opened(run_one(Hypoxemia(1), series(0, T0, one)))] == [T0]
    two = [88.0] * 4 + [96.0, 96.0] + [88.0] * 3
    assert opened(run_one(Hypoxemia(1), series(0, T0, two))) == []


@pytest.mark.parametrize("exclusion", [{"worn": 0}, {"activity": 0.8}])
def test_excluded_samples_neither_extend_nor_break(exclusion: dict[str, Any]) -> None:
    ts = T0 + np.arange(0, 90, 10.0)  # 0..80
    excluded = (ts >= T0 + 20) & (ts <= T0 + 30)
    c = cols(0, ts, spo2=np.where(excluded, 97.0, 88.0), worn=1, activity=0.0)
    for key, value in exclusion.items():
        getattr(c, key)[excluded] = value
    got = opened(run_one(Hypoxemia(1), c))
    assert [r["onset"] for r in got] == [T0]  # excluded normal values did not break it
    # only excluded low values: nothing qualifies
    c = cols(0, ts, spo2=80.0, worn=1, activity=0.0)
    for key, value in exclusion.items():
        getattr(c, key)[:] = value
    assert run_one(Hypoxemia(1), c) == []


def test_tachycardia_recovery_after_exercise_is_not_at_rest() -> None:
    moving = series(0, T0, [140.0] * 30, vital="hr", activity=0.6)
    after = series(0, T0 + 300, [135.0] * 20, vital="hr", activity=0.0)  # 190 s of recovery
    det = Tachycardia(1, Tachycardia.Params(recovery_s=300.0))
    assert run_one(det, SampleColumns.concat([moving, after])) == []
    # with a 60 s recovery the same resting samples count after a minute
    det = Tachycardia(1, Tachycardia.Params(recovery_s=60.0))
    got = opened(run_one(det, SampleColumns.concat([moving, after])))
    assert [r["onset"] for r in got] == [T0 + 290 + 70]  # last motion + 60 s, next sample


def test_hysteresis_clears_only_past_margin_for_clear_time() -> None:
    feeder = Feeder([Hypoxemia(1)], 1)
    got = feeder.tick(series(0, T0, [88.0] * 8), T0 + 70)
    assert [(r["active"], r["severity"]) for r in got] == [(True, 3)]
    # hovering just above the threshold, below threshold + margin: still active
    assert feeder.tick(series(0, T0 + 80, [91.0] * 60), T0 + 700) == []
    # above the margin for 50 s: not yet; for 60 s: cleared
    assert feeder.tick(series(0, T0 + 680, [93.0] * 6), T0 + 740) == []
    got = feeder.tick(series(0, T0 + 740, [93.0]), T0 + 750)
    assert [(r["active"], r["evidence"]["spo2_min"]) for r in got] == [(False, 88.0)]
    # it can fire again afterwards, from a new run
    got = feeder.tick(series(0, T0 + 800, [88.0] * 7), T0 + 870)
    assert [(r["active"], r["onset"]) for r in got] == [(True, T0 + 800)]


def test_severity_rises_while_active() -> None:
    feeder = Feeder([Hypoxemia(1)], 1)
    assert [r["severity"] for r in feeder.tick(series(0, T0, [89.0] * 7), T0 + 60)] == [3]
    got = feeder.tick(series(0, T0 + 70, [84.0] * 4), T0 + 100)
    assert [(r["severity"], r["onset"]) for r in got] == [(4, T0)]


def test_late_samples_are_ignored() -> None:
    det = Hypoxemia(1)
    feeder = Feeder([det], 1)
    feeder.tick(series(0, T0 + 100, [97.0] * 3), T0 + 130)
    # a late batch of low values, older than what was processed: ignored
    assert feeder.tick(series(0, T0, [80.0] * 9), T0 + 140) == []


def test_a_sudden_step_counts_from_its_first_sample_and_a_spike_opens_nothing() -> None:
    # the contract's rules exclude no jumps: a real desaturation can be sudden
    spike = [97.0] * 3 + [60.0] + [97.0] * 3
    assert run_one(Hypoxemia(1), series(0, T0, spike)) == []  # one sample: no 60 s run
    step = [97.0] * 3 + [80.0] * 8
    got = opened(run_one(Hypoxemia(1), series(0, T0, step)))
    assert got and got[0]["onset"] == T0 + 30
    # the jump filter, opted into: a step is accepted from its second sample
    def strict() -> Hypoxemia:
        return Hypoxemia(1, Hypoxemia.Params(max_jump=15.0))

    assert run_one(strict(), series(0, T0, spike)) == []
    got = opened(run_one(strict(), series(0, T0, step)))
    assert got and got[0]["onset"] == T0 + 40


def test_flat_line_is_excluded() -> None:
    stuck = [38.0] * 100  # a stuck HR sensor at exactly the same value
    got = opened(run_one(Bradycardia(1), series(0, T0, stuck, vital="hr")))
    assert [r["severity"] for r in got] == [3]  # fires before the flat-line limit...
    det = Bradycardia(1, Bradycardia.Params(flat_samples=5))
    assert run_one(det, series(0, T0, stuck, vital="hr")) == []  # ...but not once stuck


def test_per_row_parameters() -> None:
    params = [Hypoxemia.Params(threshold=92.0), Hypoxemia.Params()]
    det = Hypoxemia(2, params)
    values = [97.0] * 3 + [91.0] * 8
    batch = SampleColumns.concat([series(0, T0, values), series(1, T0, values)])
    assert {r["row"] for r in opened(run_one(det, batch))} == {0}


def test_empty_tick_returns_nothing() -> None:
    det = Hypoxemia(3)
    state = TickState(new=SampleColumns.empty(), store=None, devices=None,  # type: ignore[arg-type]
                      started_at=0.0)
    assert det.update(state, T0) == []
    assert records([]) == []


@pytest.mark.parametrize(("cls", "vital", "before", "value", "seconds", "dt", "copd", "sev"), [
    (Bradycardia, "hr", 60.0, 38.0, 600, 1.0, False, 3),  # steady at 1 Hz for 10 min
    (Bradycardia, "hr", 60.0, 40.0, 60, 1.0, False, 3),
    (Tachycardia, "hr", 72.0, 130.0, 120, 5.0, False, 3),  # a sudden step, held exactly
    (Tachycardia, "hr", 72.0, 150.0, 60, 5.0, False, 4),
    (Bradypnoea, "rr", 14.0, 8.0, 60, 1.0, False, 3),
    (Tachypnoea, "rr", 14.0, 25.0, 120, 1.0, False, 3),
    (Hypoxemia, "spo2", 97.0, 90.0, 60, 1.0, False, 3),
    (Hypoxemia, "spo2", 97.0, 80.0, 30, 5.0, True, 4),  # copd: <= 80 for 30 s, critical
])
def test_contract_durations_hold_for_steady_values_and_sudden_steps(
        cls: Any, vital: str, before: float, value: float, seconds: int, dt: float, copd: bool,
        sev: int) -> None:
    """The contract's table, at its thresholds and durations: a value that steps there at
    once and stays (the same reading every sample) opens the rule at the duration; one
    sample fewer does not. Only not-worn and moving samples are excluded."""
    lead = [before] * int(30 / dt)
    held = [value] * (int(seconds / dt) + 1)  # first to last sample: exactly `seconds`
    devices = table(1, copd=(0,) if copd else ())
    got = opened(run_one(cls(devices), series(0, T0, lead + held, dt=dt, vital=vital)))
    assert [(r["severity"], r["onset"]) for r in got][:1] == [(sev, T0 + len(lead) * dt)]
    params = cls.Params()
    if seconds == (params.duration_s if sev == 3 else params.critical_duration_s):
        short = opened(run_one(cls(devices), series(0, T0, lead + held[:-1], dt=dt,
                                                     vital=vital)))
        assert [r for r in short if r["severity"] >= sev] == []
