"""Hostile input to the payload decoder: nothing crashes, every rejection has a reason, the
accounting adds up, kept values are plausible, and memory stays bounded."""

from __future__ import annotations

import json
import math
import string
import tracemalloc
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import REJECTION_REASONS, VitalsDecoder
from ingest.devices import DeviceTable
from ingest.samples import PLAUSIBLE
from tests.ingest_harness import small_config

CONFIG = small_config(residents=6, towns=2)
DEVICES = DeviceTable.from_config(CONFIG)
NOW = 1764316800.0
R0 = CONFIG.residents[0]
GOOD_TOPIC = f"carewatch/v1/{R0.town}/{R0.device}/vitals"
FIELDS = ["ts", "seq", "hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity", "fall", "worn",
          "battery", "device_id", "samples"]

huge_numbers = st.sampled_from(["1e400", "-1e400", "9" * 400, "-0", "1e-400", "NaN", "Infinity",
                                "-Infinity", "0x10", "1_000", ".5", "01", "1e308", "4e38"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20), st.integers(min_value=-(2**80), max_value=2**80))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)


@st.composite
def sample_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A sample with each field either well-typed, plausible or not, or of a wrong type."""
    obj: dict[str, Any] = {}
    if draw(st.booleans()):
        obj["ts"] = draw(st.floats(NOW - 1e6, NOW + 1e4) | scalars)
    for name in ("hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity", "battery", "seq"):
        if draw(st.integers(0, 3)) == 0:
            obj[name] = draw(st.floats(-1e3, 1e3) | st.floats(allow_nan=False) | json_values)
    for name in ("fall", "worn"):
        if draw(st.integers(0, 3)) == 0:
            obj[name] = draw(st.booleans() | json_values)
    if draw(st.integers(0, 9)) == 0:
        obj["device_id"] = draw(st.sampled_from([R0.device, "dév-０１", "a/b", "#", "+"])
                                | st.text(max_size=70))
    return obj


def dumps(obj: object) -> bytes:
    """JSON text of anything hypothesis draws (stdlib json: integers of any size)."""
    return json.dumps(obj).encode()


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        depth = draw(st.sampled_from([1, 10, 500, 2000, 20_000]))
        opener = draw(st.sampled_from(["[", '{"a":', '{"samples":[']))
        return (b'{"ts":1,"x":' if draw(st.booleans()) else b"") + (opener * depth).encode()
    if kind == 2:
        return f'{{"ts": {draw(huge_numbers)}, "hr": {draw(huge_numbers)}}}'.encode()
    if kind == 3:
        n = draw(st.sampled_from([0, 1, 599, 600, 601, 2000]))
        one = dumps(draw(sample_objects()))
        return b'{"samples":[' + b",".join([one] * n) + b"]}"
    if kind == 4:
        return dumps(draw(json_values))
    if kind == 5:
        return dumps({"samples": draw(st.lists(sample_objects(), max_size=20))})
    if kind == 6:
        return b"x" * draw(st.sampled_from([65535, 65536, 65537, 200_000]))
    return dumps(draw(sample_objects()))


id_text = st.text(alphabet=string.ascii_letters + string.digits + "_-#+/ \x00é😀中", max_size=80)


@st.composite
def topics(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 4))
    r = draw(st.sampled_from(CONFIG.residents))
    if kind == 0:
        return f"carewatch/v1/{r.town}/{r.device}/vitals"
    if kind == 1:
        return f"carewatch/v1/{draw(id_text)}/{draw(id_text)}/vitals"
    if kind == 2:
        return f"carewatch/v1/{r.town}/{r.device}/vitals" + "/x" * draw(st.integers(1, 5000))
    if kind == 3:
        return draw(st.text(max_size=300))
    other = next(x for x in CONFIG.residents if x.town != r.town)
    return f"carewatch/v1/{other.town}/{r.device}/vitals"


def check(decoder: VitalsDecoder, messages: list[tuple[str, bytes, float]]) -> None:
    out = decoder.decode_vitals(messages, NOW)
    assert out.messages_accepted + len(out.rejections) == len(messages)
    for rej in out.rejections:
        assert rej.reason in REJECTION_REASONS and rej.detail, rej
        assert len(rej.detail) < 2000
    cols = out.samples
    for name, (lo, hi) in PLAUSIBLE.items():
        if not hasattr(cols, name):
            continue
        v = np.asarray(getattr(cols, name), dtype=np.float64)
        v = v[~np.isnan(v)]
        assert ((v >= lo) & (v <= hi)).all(), name
    ts = np.asarray(cols.ts, dtype=np.float64)
    assert np.isfinite(ts).all() and (ts <= NOW + decoder.future_tolerance_s).all()
    assert len(cols) <= 600 * len(messages)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.lists(st.tuples(topics(), payloads()), min_size=1, max_size=6))
def test_decode_vitals_never_crashes_and_always_says_why(msgs: list[tuple[str, bytes]]) -> None:
    check(VitalsDecoder(DEVICES), [(t, p, NOW) for t, p in msgs])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topics(), payloads() | st.builds(lambda v: dumps({"online": v}), json_values))
def test_decode_status_never_crashes(topic: str, payload: bytes) -> None:
    rejections: list[Any] = []
    update = VitalsDecoder(DEVICES).decode_status(topic.replace("/vitals", "/status"), payload,
                                                  NOW, rejections)
    assert (update is None) == bool(rejections)
    for rej in rejections:
        assert rej.reason in REJECTION_REASONS and rej.detail
    if update is not None:
        assert update.battery is None or 0 <= update.battery <= 100


def test_deep_nesting_is_a_schema_rejection_not_a_crash() -> None:
    decoder = VitalsDecoder(DEVICES)
    for body in (b'{"ts":1,"x":' + b"[" * 30_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000):
        out = decoder.decode_vitals([(GOOD_TOPIC, body, NOW)], NOW)
        assert [r.reason for r in out.rejections] == ["schema"]
        rej: list[Any] = []
        assert decoder.decode_status(GOOD_TOPIC.replace("vitals", "status"), body, NOW,
                                     rej) is None
        assert rej[0].reason == "schema"


def test_topic_injection_cannot_widen_the_reply_topic() -> None:
    decoder = VitalsDecoder(DEVICES)
    for topic in ("carewatch/v1/+/#/vitals", f"carewatch/v1/{R0.town}/{R0.device}/x/vitals",
                  "carewatch/v1/" + "t" * 70_000 + "/d/vitals", "carewatch/v1/é/😀/vitals"):
        out = decoder.decode_vitals([(topic, b'{"ts": 1}', NOW)], NOW)
        (rej,) = out.rejections
        assert rej.reason == "unknown_device"
        assert rej.reply_topic.count("/") == 4 and rej.reply_topic.endswith("/rejected")
    assert decoder._known_topics.keys() <= {GOOD_TOPIC}


def test_memory_stays_bounded_under_a_stream_of_hostile_messages() -> None:
    """Neither caches nor buffers grow with the number of (distinct) hostile messages."""
    decoder = VitalsDecoder(DEVICES)
    rng = np.random.default_rng(3)
    bodies = [b"x" * 70_000, b'{"ts":1,"x":' + b"[" * 30_000, b'{"ts": 1e400}',
              b'{"samples":[' + b",".join([b'{"ts":1764316000}'] * 601) + b"]}"]

    def batch(k: int) -> list[tuple[str, bytes, float]]:
        return [(f"carewatch/v1/t{k}-{i}/d{rng.integers(1_000_000_000)}/vitals", bodies[i % 4], NOW)
                for i in range(200)] + [(GOOD_TOPIC, orjson.dumps({"ts": NOW - k}), NOW)]

    for k in range(5):  # warm up msgspec and NumPy caches
        decoder.decode_vitals(batch(k), NOW)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for k in range(5, 105):
            decoder.decode_vitals(batch(k), NOW)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 256 * 1024, f"grew by {current - base} bytes over 20k messages"
    assert peak - base < 16 * 1024 * 1024
    assert len(decoder._known_topics) <= 1


def test_plausible_ranges_hold_for_extreme_floats() -> None:
    decoder = VitalsDecoder(DEVICES)
    body = orjson.dumps({"ts": NOW - 1, "hr": 1e308, "spo2": -1e308, "rr": 5e-324,
                         "temp_c": 3.4e38, "activity": math.nextafter(16.0, 99)})
    out = decoder.decode_vitals([(GOOD_TOPIC, body, NOW)], NOW)
    assert out.messages_accepted == 1
    assert sum(out.faults.values()) >= 4
