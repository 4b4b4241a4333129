"""Hostile replay files: the reader skips and counts what it cannot use and never crashes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carewatch.replay import replay
from tests.ingest_harness import small_config

CONFIG = small_config(residents=4, towns=2)
T0 = 1764316800.0
R = CONFIG.residents
ids = st.sampled_from([r.id for r in R]) | st.text(max_size=70) | st.integers() | st.none()
junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
topic = st.sampled_from([f"carewatch/v1/{r.town}/{r.device}/vitals" for r in R]
                        + [f"carewatch/v1/{r.town}/{r.device}/status" for r in R]
                        + ["carewatch/v1/+/#/vitals", "carewatch/v1/é/😀/vitals",
                           "carewatch/v1/" + "x/" * 300 + "vitals", ""]) | junk


@st.composite
def line(draw: st.DrawFn, t: float) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:
        return json.dumps(draw(junk)).encode()
    if kind == 2:
        payload = {"ts": draw(st.floats(T0 - 600, t + 600) | junk), "hr": draw(st.floats() | junk),
                   "spo2": draw(st.integers(0, 120) | junk), "fall": draw(st.booleans() | junk),
                   "worn": draw(st.booleans() | junk)}
        return json.dumps({"t": t, "topic": draw(topic), "payload": payload}).encode()
    if kind == 3:
        return json.dumps({"t": t, "topic": draw(topic),
                           "payload_raw": draw(st.text(max_size=200))}).encode()
    if kind == 4:
        action = draw(st.sampled_from(["ack", "resolve"]))
        target = draw(st.fixed_dictionaries({"resident_id": ids,
                                             "kind": st.sampled_from(["fall", "x"]) | junk})
                      | junk)
        return json.dumps({"t": t, action: target, "by": draw(junk), "note": draw(junk)}).encode()
    if kind == 5:
        return json.dumps({"t": draw(st.sampled_from(["1", None, [], float("nan"), True,
                                                      float("inf"), -1e308]))}).encode()
    if kind == 6:
        return b'{"t": %f, "payload": ' % t + b"[" * 5000 + b"}"
    return json.dumps({"t": t}).encode()


@st.composite
def files(draw: st.DrawFn) -> list[bytes]:
    n = draw(st.integers(1, 40))
    steps = draw(st.lists(st.floats(-5, 120), min_size=n, max_size=n))
    t, out = T0, []
    for step in steps:
        t += step  # sometimes backwards: such lines must be skipped
        out.append(draw(line(t)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(files())
def test_replay_reader_survives_hostile_lines(tmp_path_factory: pytest.TempPathFactory,
                                              lines: list[bytes]) -> None:
    rejected: list[dict[str, Any]] = []
    result = replay(lines, CONFIG, on_rejected=rejected.append,
                    data_dir=tmp_path_factory.mktemp("r"))
    assert result.bad_lines + result.messages <= len(lines)
    for r in rejected:
        assert r["reason"] and r["detail"]
    if result.ingest:
        ingest: Any = result.ingest
        assert sum(ingest["rejected"].values()) == len(rejected)


def test_bad_lines_are_logged_by_number_without_their_content(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret_payload = b'{"t": 1764316800, "topic": 5, "payload": {"hr": 123.456}}'
    with caplog.at_level(logging.WARNING):
        result = replay([b"\xff not json", secret_payload], CONFIG, data_dir=tmp_path)
    assert result.bad_lines == 2
    assert "line 1" in caplog.text and "line 2" in caplog.text
    assert "123.456" not in caplog.text
