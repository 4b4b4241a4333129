"""Injected events: shaped to meet their rule, complete in the truth file; reproducible runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from carewatch.cli import main
from config.generate import demo_registry
from config.loader import parse_config
from simulators.engine import Simulation
from simulators.events import EVENT_KINDS
from simulators.record import write_recording
from simulators.scenario import Scenario

START = 1764316800.0  # local midnight, Asia/Shanghai
AWAKE_AT = {"inactivity": "09:00", "not_worn": "10:30"}


def _scenario() -> Scenario:
    """One event of every kind, one resident each, at known times."""
    entries = []
    for i, kind in enumerate(sorted(EVENT_KINDS)):
        at = AWAKE_AT.get(kind, f"+{30 + 40 * i}m")
        entries.append({"resident": f"r-{i + 1:04d}", "kind": kind, "at": at})
    entries.append({"resident": "r-0020", "kind": "hypoxemia", "at": "+3h", "severity": "critical"})
    entries.append({"resident": "r-0021", "kind": "fall", "at": "+4h", "flag": False})
    return Scenario.from_dict({"events": entries})


def _sim(seed: int = 1, hours: float = 24, residents: int = 24, rate: float = 0.0) -> Simulation:
    config = parse_config(demo_registry(residents, seed=seed))
    rows = {r.id: i for i, r in enumerate(config.residents)}
    probe = Simulation(config, seed, START, 10.0, hours)
    events = _scenario().events(rows, START, probe.phys.utc_offset_s)
    return Simulation(config, seed, START, 10.0, hours, 1, events, rate)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulation, list[dict], Path]:
    sim = _sim()
    path = tmp_path_factory.mktemp("rec") / "rec.jsonl"
    write_recording(sim, path, faults=True)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return sim, lines, path


def _samples(lines: list[dict], device: str) -> list[dict]:
    out = []
    for d in lines:
        if d.get("topic", "").endswith(f"/{device}/vitals") and "payload" in d:
            p = d["payload"]
            batch = p.get("samples", [p]) if isinstance(p, dict) else []
            out.extend(s for s in batch if "seq" in s)  # the device's own (faults have none)
    return sorted(out, key=lambda s: s["ts"])


def test_every_event_in_truth_with_its_times(recorded: tuple[Simulation, list[dict], Path]) -> None:
    sim, _lines, _ = recorded
    truth = sim.truth()
    primary = [t for t in truth if t["primary"]]
    assert len(primary) == len(sim.events.events)
    pop = sim.phys.pop
    for ev in sim.events.events:
        rid = pop.resident_ids[ev.row]
        kind = EVENT_KINDS[ev.kind][1]
        recs = [t for t in primary if t["resident_id"] == rid and t["kind"] == kind]
        assert len(recs) == 1, (rid, kind)
        rec = recs[0]
        skew = abs(pop.clock_offset_s[ev.row]) + 1.0
        if ev.kind != "deterioration":  # its onset is where NEWS2 first reaches 5
            lag = 70 if ev.kind in ("fever", "hypothermia") else 20  # temperature each minute
            assert ev.start - skew <= rec["start"] <= ev.start + lag + skew, (kind, rec)
        assert abs(rec["end"] - ev.end) <= 10 + skew
        allowed = ("high", "medium") if kind == "news2" else (ev.sev,)
        assert rec["severity"] in allowed


def _window(samples: list[dict], rec: dict) -> list[dict]:
    return [s for s in samples if rec["start"] <= s["ts"] < rec["end"]]


def test_events_meet_their_rules(recorded: tuple[Simulation, list[dict], Path]) -> None:
    sim, lines, _ = recorded
    devices = dict(zip(sim.phys.pop.resident_ids, sim.phys.pop.device_ids, strict=True))
    checked = set()
    for rec in (t for t in sim.truth() if t["primary"]):
        w = _window(_samples(lines, devices[rec["resident_id"]]), rec)
        kind = rec["kind"]
        if kind == "device_offline":
            assert not w
            checked.add(kind)
            continue
        assert w, kind
        assert w[-1]["ts"] - w[0]["ts"] >= 120
        rest = [s for s in w if s.get("worn") and s["activity"] <= 0.1]
        if kind == "hypoxemia":
            limit = 85 if rec["severity"] == "critical" else 90
            assert all(s["spo2"] <= limit for s in rest) and len(rest) >= 6
        elif kind == "tachycardia":
            assert all(s["hr"] >= 130 for s in rest) and len(rest) >= 12
        elif kind == "bradycardia":
            assert all(s["hr"] <= 40 for s in w)
        elif kind == "fall":
            first = w[0]
            assert first["activity"] >= 2.5 or first.get("fall") is True
            assert all(s["activity"] <= 0.05 for s in w[1:7])
        elif kind in ("fever", "hypothermia"):
            temps = [s["temp_c"] for s in w if "temp_c" in s]
            assert len(temps) >= 10
            hot = kind == "fever"
            assert all((t >= 38.0) if hot else (t <= 35.0) for t in temps)
        elif kind in ("hypotension", "hypertensive_crisis"):
            bp = [s["sbp"] for s in w if "sbp" in s]
            assert len(bp) >= 2
            assert all(v <= 90 for v in bp) if kind == "hypotension" else all(v >= 180 for v in bp)
        elif kind == "not_worn":
            assert all(s["worn"] is False for s in w)
        elif kind == "inactivity":
            assert all(s["activity"] <= 0.02 and s["worn"] for s in w)
        elif kind == "low_battery":
            assert all(s["battery"] <= 15 for s in w)
        checked.add(kind)
    assert {"hypoxemia", "fall", "device_offline", "fever", "hypotension", "not_worn"} <= checked


def test_offline_has_last_will_and_faults_are_mixed_in(
        recorded: tuple[Simulation, list[dict], Path]) -> None:
    sim, lines, _ = recorded
    ts = [d["t"] for d in lines]
    assert ts == sorted(ts), "replay lines in t order"
    wills = [d for d in lines if d.get("topic", "").endswith("/status")
             and d.get("payload") == {"online": False}]
    offline = [e for e in sim.events.events if e.kind == "device_offline"]
    assert len(wills) == len(offline) == 1
    assert offline[0].start < wills[0]["t"] < offline[0].start + 120
    raw = [d for d in lines if "payload_raw" in d]
    assert raw, "invalid JSON travels as payload_raw"
    topics = {d.get("topic", "") for d in lines}
    assert any("/ghost-" in t for t in topics), "unknown devices"
    assert "t" in lines[-1] and len(lines[-1]) == 1, "clock lines run timers past the data"
    assert lines[-1]["t"] >= sim.end_t + 1500


def test_same_seed_same_output_different_seed_different(tmp_path: Path) -> None:
    def digest(seed: int) -> tuple[str, str]:
        sim = _sim(seed=seed, hours=3, rate=4.0)
        path = tmp_path / f"r{seed}.jsonl"
        write_recording(sim, path, faults=True)
        truth = orjson.dumps(sim.truth())
        return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(truth).hexdigest()

    a, b, c = digest(7), digest(7), digest(8)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_batches_hold_every_sample(tmp_path: Path) -> None:
    single, batched = _sim(hours=2), _sim(hours=2)
    batched.batch = 1  # same data, different packing
    s1 = write_recording(single, tmp_path / "a.jsonl")
    sim_b = Simulation(batched.config, 1, START, 10.0, 2, 12, batched.scenario_events)
    s2 = write_recording(sim_b, tmp_path / "b.jsonl")
    lines = [orjson.loads(x) for x in (tmp_path / "b.jsonl").read_bytes().splitlines()]
    sizes = [len(d["payload"]["samples"]) for d in lines if "samples" in d.get("payload", {})]
    assert s1["samples"] == s2["samples"] == sum(sizes)
    assert max(sizes) == 12 and s2["messages"] < s1["messages"] / 10


def test_cli_record_writes_registry_truth_and_replay(tmp_path: Path) -> None:
    reg, rec, truth = tmp_path / "reg.yaml", tmp_path / "rec.jsonl", tmp_path / "truth.jsonl"
    argv = ["simulate", "--residents", "30", "--hours", "2", "--seed", "4", "--registry", str(reg),
            "--record", str(rec), "--truth", str(truth), "--random-events", "6", "--batch", "6"]
    assert main(argv) == 0
    assert reg.exists() and len(parse_config_file(reg).residents) == 30
    records = [orjson.loads(x) for x in truth.read_bytes().splitlines()]
    assert records and {"resident_id", "kind", "start", "end", "severity"} <= set(records[0])
    first = rec.read_bytes()
    assert main(argv) == 0, "a second run reads the registry it wrote"
    assert rec.read_bytes() == first
    assert np.all(np.diff([r["start"] for r in records]) >= 0)


def parse_config_file(path: Path):
    from config.loader import load_config

    return load_config(path)


@pytest.mark.parametrize(("option", "expected"), [
    (["--residents", "0"], "--residents must be at least 1, got 0"),
    (["--hours", "nan"], "--hours must be a positive number, got nan"),
    (["--hours", "-1"], "--hours must be a positive number, got -1"),
    (["--interval-s", "nan"], "--interval-s must be a positive number of seconds, got nan"),
    (["--speed", "0"], "--speed must be a positive number, got 0"),
    (["--random-events", "-1"], "--random-events must be 0 or more, got -1"),
    (["--connections", "0"], "--connections must be at least 1, got 0"),
    (["--batch", "601"], "--batch must be 1..600, got 601"),
])
def test_cli_bad_options_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], expected: str
) -> None:
    """Each used to be a traceback (--residents 0, NaN), a ZeroDivisionError in the live
    fleet's thread (--speed 0), silence (--speed -1) or an empty recording with exit 0."""
    reg = tmp_path / "reg.yaml"
    argv = ["simulate", "--residents", "3", "--hours", "0.1", "--registry", str(reg),
            "--record", str(tmp_path / "rec.jsonl"), *option]
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert not reg.exists() and not (tmp_path / "rec.jsonl").exists()


def test_cli_config_names_an_existing_file(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--config` (an existing deployment's config) never generates a registry in place of a
    mistyped path, as `--registry` does for a new one."""
    missing = tmp_path / "typo.yaml"
    argv = ["simulate", "--config", str(missing), "--hours", "0.1", "--record",
            str(tmp_path / "rec.jsonl")]
    assert main(argv) == 2
    assert f"{missing}: (file): cannot be read" in capsys.readouterr().err
    assert not missing.exists()


def test_a_recording_of_600_sample_batches_replays_without_too_large(tmp_path: Path) -> None:
    """`--batch` takes 1..600 (the contract's batch limit), but recordings are fixed-width,
    every absent field a run of blanks: a 600-sample message was 91,813 bytes, over the
    contract's 64 KiB, so replay rejected every vitals message as too_large (live, the same
    messages are compact and accepted). Such lines are now written compact."""
    from carewatch.replay import read_lines, replay

    reg, rec = tmp_path / "reg.yaml", tmp_path / "rec.jsonl"
    assert main(["simulate", "--residents", "3", "--hours", "1", "--interval-s", "1",
                 "--batch", "600", "--registry", str(reg), "--record", str(rec)]) == 0
    lines = [orjson.loads(x) for x in rec.read_bytes().splitlines()]
    payloads = [orjson.dumps(d["payload"]) for d in lines if "samples" in d.get("payload", {})]
    assert max(len(orjson.loads(p)["samples"]) for p in payloads) == 600
    raw = [x for x in rec.read_bytes().splitlines() if b'"samples"' in x]
    assert max(len(x) for x in raw) < 64 * 1024
    rejected: list[dict[str, object]] = []
    result = replay(read_lines(rec), parse_config_file(reg), keep_events=False,
                    on_rejected=rejected.append)
    assert rejected == []
    recorded = sum(len(orjson.loads(p)["samples"]) for p in payloads)
    assert result.ingest["samples"] == recorded > 3 * 3000


def test_cli_live_with_no_broker_listening_says_so(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """It was a ConnectionRefusedError traceback from paho's connect."""
    from ingest.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    argv = ["simulate", "--residents", "3", "--hours", "0.1", "--registry",
            str(tmp_path / "reg.yaml"), "--broker", url]
    assert main(argv) == 1
    assert f"carewatch simulate: cannot connect to the broker {url}: " in capsys.readouterr().err
