"""`carewatch replay`: the same pipeline on recorded traffic, deterministic, with person actions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from config.generate import demo_registry

T0 = 1_764_316_800.0


def recording(resident: dict, hypoxemic_from: int = 6) -> list[bytes]:  # type: ignore[type-arg]
    topic = f"carewatch/v1/{resident['town']}/{resident['device']}/vitals"
    lines = []
    for i in range(60):
        t = T0 + i * 5
        spo2 = 83 if i >= hypoxemic_from else 97
        lines.append(
            orjson.dumps(
                {
                    "t": t + 0.2,
                    "topic": topic,
                    "payload": {
                        "ts": t,
                        "seq": i,
                        "spo2": spo2,
                        "hr": 80,
                        "activity": 0.01,
                        "worn": True,
                    },
                }
            )
        )
    lines.append(orjson.dumps({"t": T0 + 301, "topic": topic, "payload_raw": "not json"}))
    lines.append(orjson.dumps({"t": T0 + 400}))
    lines.append(
        orjson.dumps(
            {
                "t": T0 + 401,
                "ack": {"resident_id": resident["id"], "kind": "hypoxemia"},
                "by": "carer-x",
            }
        )
    )
    lines.append(
        orjson.dumps(
            {"t": T0 + 402, "ack": {"resident_id": resident["id"], "kind": "fall"}, "by": "carer-x"}
        )
    )
    lines.append(
        orjson.dumps(
            {
                "t": T0 + 500,
                "resolve": {"resident_id": resident["id"], "kind": "hypoxemia"},
                "by": "carer-x",
                "note": "visited, on O2",
            }
        )
    )
    lines.append(orjson.dumps({"t": T0 + 700}))
    return lines


def run_replay(tmp_path: Path, name: str, *extra: str  # type: ignore[type-arg]
               ) -> tuple[list[dict], list[dict], str]:
    reg = demo_registry(3, seed=2, towns=2)
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(reg, allow_unicode=True), encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(recording(reg["residents"][0])) + b"\n")
    out, rej = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-rej.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "carewatch.cli",
            "--log-level",
            "WARNING",
            "replay",
            str(inp),
            "--config",
            str(tmp_path / "reg.yaml"),
            "--out",
            str(out),
            "--rejected",
            str(rej),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    events = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    rejected = [orjson.loads(x) for x in rej.read_bytes().splitlines()]
    return events, rejected, proc.stderr


def test_replay_escalates_acks_resolves_and_is_deterministic(tmp_path: Path) -> None:
    events, rejected, stderr = run_replay(tmp_path, "a")
    hyp = [e for e in events if e["kind"] == "hypoxemia"]
    states = [(e["state"], e["tier"]) for e in hyp]
    assert states[0] == ("open", 1) and hyp[0]["severity"] == "critical"
    # critical: 2 min per tier, counted from reaching it
    assert ("escalated", 2) in states and ("escalated", 3) in states
    opened = hyp[0]["opened_at"]
    esc2 = next(e for e in hyp if e["state"] == "escalated" and e["tier"] == 2)
    assert esc2["updated_at"] - opened == 120.0
    assert [s for s, _ in states][-2:] == ["acknowledged", "resolved"]
    assert hyp[0]["evidence"]["onset_ts"] == T0 + 30
    assert rejected == [
        {
            "t": T0 + 301,
            "topic": rejected[0]["topic"],
            "reason": "invalid_json",
            "detail": rejected[0]["detail"],
        }
    ]
    assert "fall" in stderr  # the ack of a non-existent alert is warned about
    again, _, _ = run_replay(tmp_path, "b")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert again == events
    assert '"spanned_ticks":0' not in stderr  # ticks were judged in spans...
    _, _, ticked = run_replay(tmp_path, "c", "--tick-by-tick")  # ...and one at a time: the same
    assert '"spanned_ticks":0' in ticked
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()


def _vitals_line(resident: dict, t: float, payload: dict) -> bytes:  # type: ignore[type-arg]
    topic = f"carewatch/v1/{resident['town']}/{resident['device']}/vitals"
    return orjson.dumps({"t": t + 0.2, "topic": topic, "payload": {"ts": t, **payload}})


def _fall_events(tmp_path: Path, still: float) -> list[dict]:  # type: ignore[type-arg]
    from carewatch.replay import replay
    from config.loader import parse_config

    reg = demo_registry(3, seed=2, towns=2)
    r = reg["residents"][0]
    lines = [_vitals_line(r, T0, {"activity": 0.2, "worn": True}),
             _vitals_line(r, T0 + 10, {"activity": 2.5, "worn": True})]
    lines += [_vitals_line(r, T0 + 10 + 10 * k, {"activity": still, "worn": True})
              for k in range(1, 7)]
    lines.append(orjson.dumps({"t": T0 + 90}))
    result = replay(lines, parse_config(reg), data_dir=tmp_path / f"still-{still}")
    return [e for e in result.events if e["kind"] == "fall" and e["state"] == "open"]


def test_replay_impact_of_exactly_2_5_g_then_exactly_0_05_g_for_60_s_is_a_fall(
        tmp_path: Path) -> None:
    # the contract's boundaries: activity >= 2.5 g followed by <= 0.05 g for >= 60 s
    (fall,) = _fall_events(tmp_path, 0.05)
    assert fall["severity"] == "critical"
    assert fall["evidence"]["onset_ts"] == T0 + 10
    assert fall["evidence"]["source"] == "impact_stillness"
    assert _fall_events(tmp_path, 0.06) == []


def test_replay_low_battery_onset_is_the_readings_ts(tmp_path: Path) -> None:
    from carewatch.replay import replay
    from config.loader import parse_config

    reg = demo_registry(3, seed=2, towns=2)
    r0, r1, r2 = reg["residents"]

    def status(r: dict, t: float, payload: dict) -> bytes:  # type: ignore[type-arg]
        topic = f"carewatch/v1/{r['town']}/{r['device']}/status"
        return orjson.dumps({"t": t, "topic": topic, "payload": payload})

    lines = [
        _vitals_line(r0, T0 + 40, {"ts": T0, "battery": 14}),  # received 40 s after its ts
        status(r1, T0 + 50, {"online": True, "battery": 10, "ts": T0 + 3}),
        status(r2, T0 + 60, {"online": True, "battery": 10, "ts": T0 + 9999}),  # implausible
        orjson.dumps({"t": T0 + 90}),
    ]
    result = replay(lines, parse_config(reg), data_dir=tmp_path)
    onsets = {e["resident_id"]: e["evidence"]["onset_ts"] for e in result.events
              if e["kind"] == "low_battery" and e["state"] == "open"}
    assert onsets == {r0["id"]: T0, r1["id"]: T0 + 3, r2["id"]: T0 + 60}


def test_replay_and_evaluate_name_an_unreadable_input_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing recording or truth file, or a truth line that is not JSON, used to end in
    a traceback (replay had already created its --out file)."""
    from carewatch.cli import main

    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(demo_registry(2, seed=1)), encoding="utf-8")
    rec, truth, missing = tmp_path / "rec.jsonl", tmp_path / "truth.jsonl", tmp_path / "nope"
    rec.write_bytes(b'{"t": 1764316800.0}\nnot json\n')
    truth.write_bytes(b'{"resident_id": "r-0001", "kind": "fall", "start": 1, "end": 2}\n[1]\n')
    out = tmp_path / "out.jsonl"
    cases = [
        (["replay", str(missing), "--config", str(reg), "--out", str(out)],
         f"carewatch replay: {missing}: cannot be read: No such file or directory"),
        (["evaluate", str(missing), "--truth", str(truth), "--config", str(reg)],
         f"carewatch evaluate: {missing}: cannot be read: No such file or directory"),
        (["evaluate", str(rec), "--truth", str(missing), "--config", str(reg)],
         f"carewatch evaluate: {missing}: cannot be read: No such file or directory"),
        (["evaluate", str(rec), "--truth", str(truth), "--config", str(reg)],
         f"carewatch evaluate: {truth} line 2: expected a JSON object, got list"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert expected in capsys.readouterr().err
    assert not out.exists()
