"""Contract rules for samples, on the decoder and the pipeline without a broker."""

from __future__ import annotations

import math
import time

import numpy as np
import orjson
import pytest

from carewatch.clock import SimClock
from carewatch.pipeline import Pipeline
from ingest.publish import ListPublisher
from ingest.samples import SampleColumns, row_ts_order
from tests.ingest_harness import small_config

NOW = 1_764_316_800.0


@pytest.fixture
def pipe() -> Pipeline:
    return Pipeline(small_config(), SimClock(NOW), ListPublisher())


def topic(
    p: Pipeline, device: str = "dev-0001", leaf: str = "vitals", town: str | None = None
) -> str:
    town = town or p.devices.town_ids[p.devices.row_of_device[device]]
    return f"carewatch/v1/{town}/{device}/{leaf}"


def rejected(p: Pipeline) -> list[dict[str, object]]:
    pub = p.publisher
    assert isinstance(pub, ListPublisher)
    return [
        orjson.loads(m[1]) | {"topic": m[0]} for m in pub.messages if m[0].endswith("/rejected")
    ]


def test_single_sample_values_land_in_state(pipe: Pipeline) -> None:
    sample = {
        "ts": NOW - 1,
        "seq": 3,
        "hr": 71,
        "spo2": 96.5,
        "rr": 15,
        "temp_c": 36.6,
        "sbp": 128,
        "dbp": 81,
        "activity": 0.04,
        "fall": False,
        "worn": True,
        "battery": 77,
    }
    pipe.handle([(topic(pipe), orjson.dumps(sample), NOW)])
    s = pipe.store
    for field in ("hr", "spo2", "rr", "temp_c", "sbp", "dbp", "activity"):
        assert s.latest[field][0] == pytest.approx(sample[field], rel=1e-3), field
    assert s.worn[0] == 1 and s.battery[0] == 77
    raw = s.raw_window(0)
    assert raw["seq"].tolist() == [3] and raw["ts"][0] == NOW - 1
    assert not rejected(pipe)


def test_batch_in_any_order_is_sorted_and_kept(pipe: Pipeline) -> None:
    ts = [NOW - 30, NOW - 10, NOW - 20]
    batch = {"samples": [{"ts": t, "hr": 60 + i} for i, t in enumerate(ts)]}
    pipe.handle([(topic(pipe), orjson.dumps(batch), NOW)])
    raw = pipe.store.raw_window(0)
    assert raw["ts"].tolist() == sorted(ts)
    assert raw["hr"].tolist() == [60, 62, 61]
    assert pipe.metrics.totals["samples"] == 3


def test_out_of_range_value_dropped_rest_kept(pipe: Pipeline) -> None:
    pipe.handle([(topic(pipe), orjson.dumps({"ts": NOW, "hr": 300, "spo2": 49, "rr": 12}), NOW)])
    s = pipe.store
    assert math.isnan(s.latest["hr"][0]) and math.isnan(s.latest["spo2"][0])
    assert s.latest["rr"][0] == 12
    assert pipe.metrics.by_field == {"hr": 1, "spo2": 1}
    assert not rejected(pipe)


def test_duplicates_ignored_including_redelivered_batch(pipe: Pipeline) -> None:
    msg = orjson.dumps({"samples": [{"ts": NOW - 100 + i, "seq": i, "hr": 70} for i in range(5)]})
    before = time.perf_counter()
    pipe.handle([(topic(pipe), msg, NOW)])
    counted = pipe.metrics.counted_at  # when the counts last changed: benchmarks' end time
    assert before < counted <= time.perf_counter()
    pipe.handle([(topic(pipe), msg, NOW)])
    assert pipe.metrics.counted_at > counted  # the duplicates were counted
    # same ts, different seq: a different sample
    pipe.handle([(topic(pipe), orjson.dumps({"ts": NOW - 100, "seq": 99, "hr": 71}), NOW)])
    assert pipe.metrics.totals["samples"] == 6
    assert pipe.metrics.totals["duplicates"] == 5


@pytest.mark.parametrize(
    ("payload", "reason", "detail_part"),
    [
        (b"{not json", "invalid_json", "malformed"),
        (b"\xff\xfe", "invalid_json", "malformed"),
        (b'{"ts": NaN}', "invalid_json", "malformed"),
        (b"[1, 2]", "schema", "object"),
        (b'{"hr": 70}', "schema", "ts"),
        (b'{"ts": "1764316800"}', "schema", "ts"),
        (b'{"ts": 1764316800, "hr": "70"}', "schema", "hr"),
        (b'{"ts": 1764316800, "worn": 1}', "schema", "worn"),
        (b'{"ts": 1764316800, "seq": 1.5}', "schema", "seq"),
        (b'{"ts": 1764316800, "seq": -1}', "schema", "seq"),
        (b'{"ts": 1764316800, "battery": 50.5}', "schema", "battery"),
        (b'{"samples": []}', "schema", "no samples"),
        (b'{"samples": [{"ts": 1764316800}, {"hr": 1}]}', "schema", "samples[1]"),
        (b'{"ts": 1764316800, "device_id": "dev-0002"}', "device_mismatch", "dev-0002"),
        # the key spelled with an escape: still the field (the plain decoder must not run)
        (b'{"samples": [{"ts": 1764316800, "device\\u005fid": "dev-0002"}]}', "device_mismatch",
         "dev-0002"),
        (b'{"samples": [{"ts": 1764316800}], "device_id": "dev-0002"}', "device_mismatch",
         "batch's device_id"),
        (b'{"samples": [{"hr": 70}]}', "schema", "samples[0]"),
        # an explicit null `ts` (found on the table, named from the full decoder's view)
        (b'{"ts": null, "hr": 70}', "schema", "ts"),
        (b'{"samples": [{"ts": 1764316800}, {"ts": 1764316801}, {"ts": null}]}', "schema",
         "samples[2]"),
        (b'{"ts": 1764399999}', "future_ts", "ahead"),
    ],
)
def test_bad_message_rejected_with_reason(
    pipe: Pipeline, payload: bytes, reason: str, detail_part: str
) -> None:
    good = orjson.dumps({"ts": NOW - 5, "hr": 65})
    pipe.handle(
        [
            (topic(pipe), good, NOW),
            (topic(pipe), payload, NOW),
            (topic(pipe, "dev-0002"), good, NOW),
        ]
    )
    rej = rejected(pipe)
    assert len(rej) == 1, rej
    assert rej[0]["reason"] == reason
    assert detail_part in str(rej[0]["detail"])
    assert rej[0]["topic"] == topic(pipe, leaf="rejected")
    assert rej[0]["received_at"] == NOW
    assert pipe.metrics.by_reason == {reason: 1}
    assert pipe.store.latest["hr"][0] == 65 and pipe.store.latest["hr"][1] == 65


def test_batches_with_and_without_device_id_decode_alike(pipe: Pipeline) -> None:
    """Payloads that name no device_id take the plain decoder and its faster table; with a
    (matching) device_id, explicit nulls or single samples in the same step, the full one:
    the columns must be the same either way."""
    samples = [{"ts": NOW - 30 + i, "seq": i, "hr": 60 + i, "spo2": 95, "rr": 14,
                "temp_c": 36.5, "sbp": 120, "dbp": 80, "activity": 0.25, "worn": i % 2 == 0,
                "fall": False, "battery": 50 + i} for i in range(5)]
    variants = [
        [{"samples": samples}],  # plain
        [{"samples": [{**s, "device_id": "dev-0001"} for s in samples]}],  # full decoder
        [{"samples": [*samples[:2], {**samples[2], "temp_c": None}, *samples[3:]]}],  # null
        [{"samples": samples[:4]}, samples[4]],  # a single sample in the same step
    ]
    got = []
    for bodies in variants:
        p = Pipeline(pipe.config, SimClock(NOW), ListPublisher())
        p.handle([(topic(p), orjson.dumps(b), NOW) for b in bodies])
        assert not rejected(p)
        got.append(p.store.raw_window(0))
    for other in got[1:]:
        for key, want in got[0].items():
            if key == "temp_c":  # the explicit null is absent: only that value differs
                want = want.copy()
                if np.isnan(other[key]).any():
                    want[2] = np.nan
            assert np.array_equal(other[key], want, equal_nan=True), key


def test_limits_too_large(pipe: Pipeline) -> None:
    big = orjson.dumps({"ts": NOW, "pad": "x" * 70_000})
    many = orjson.dumps({"samples": [{"ts": NOW - i} for i in range(601)]})
    pipe.handle([(topic(pipe), big, NOW), (topic(pipe), many, NOW)])
    assert [r["reason"] for r in rejected(pipe)] == ["too_large", "too_large"]


def test_unknown_device_and_wrong_town(pipe: Pipeline) -> None:
    other_town = next(t for t in pipe.devices.towns if t != pipe.devices.town_ids[0])
    msg = orjson.dumps({"ts": NOW})
    pipe.handle(
        [
            ("carewatch/v1/jijiang/dev-nobody/vitals", msg, NOW),
            (topic(pipe, town=other_town), msg, NOW),
        ]
    )
    rej = rejected(pipe)
    assert [r["reason"] for r in rej] == ["unknown_device", "wrong_town"]
    assert rej[0]["topic"] == "carewatch/v1/jijiang/dev-nobody/rejected"


def test_future_sample_in_batch_dropped_rest_kept(pipe: Pipeline) -> None:
    batch = {"samples": [{"ts": NOW + 301, "hr": 80}, {"ts": NOW + 299, "hr": 81}]}
    pipe.handle([(topic(pipe), orjson.dumps(batch), NOW)])
    assert pipe.metrics.totals["future"] == 1 and not rejected(pipe)
    assert pipe.store.latest["hr"][0] == 81


def test_integers_as_floats_and_unknown_fields(pipe: Pipeline) -> None:
    msg = {
        "ts": NOW,
        "seq": 15.0,
        "battery": 40.0,
        "firmware": {"v": [1, 2]},
        "device_id": "dev-0001",
    }
    pipe.handle([(topic(pipe), orjson.dumps(msg), NOW)])
    assert not rejected(pipe)
    assert pipe.store.raw_window(0)["seq"].tolist() == [15]
    assert pipe.store.battery[0] == 40


def test_status_and_last_will(pipe: Pipeline) -> None:
    pipe.handle([(topic(pipe, leaf="status"), b'{"online": true, "battery": 55}', NOW)])
    assert pipe.store.online[0] == 1 and pipe.store.battery[0] == 55
    pipe.handle([(topic(pipe, leaf="status"), b'{"online": false}', NOW + 1)])
    assert pipe.store.online[0] == 0
    pipe.handle([(topic(pipe, leaf="status"), b'{"online": "yes"}', NOW + 2)])
    assert [r["reason"] for r in rejected(pipe)] == ["schema"]


def test_status_battery_out_of_range_is_a_counted_fault_and_a_fraction_breaks_the_schema(
        pipe: Pipeline) -> None:
    # as in a vitals sample: out of 0-100 is a sensor fault (dropped and counted, the rest
    # of the message kept); 50.5 or 1e400 is no integer and rejects the message
    status = topic(pipe, leaf="status")
    pipe.handle([(status, b'{"online": true, "battery": 55}', NOW)])
    pipe.handle([(status, b'{"online": false, "battery": 150}', NOW + 1)])
    assert pipe.store.online[0] == 0 and pipe.store.battery[0] == 55
    assert pipe.metrics.snapshot()["faults"] == {"battery": 1}
    for bad in (b"50.5", b"1e400"):
        pipe.handle([(status, b'{"online": true, "battery": ' + bad + b"}", NOW + 2)])
    got = [(r["reason"], r["detail"]) for r in rejected(pipe)]
    assert got[0] == ("schema", "battery must be an integer")
    assert [reason for reason, _ in got] == ["schema", "schema"]  # 1e400: out of range
    assert pipe.store.online[0] == 0 and pipe.store.battery[0] == 55
    pipe.handle([(status, b'{"online": true, "battery": 15.0}', NOW + 3)])
    assert pipe.store.online[0] == 1 and pipe.store.battery[0] == 15


def test_every_reason_counted_in_prometheus(pipe: Pipeline) -> None:
    from prometheus_client import generate_latest

    pipe.handle(
        [(topic(pipe), b"nope", NOW), (topic(pipe), orjson.dumps({"ts": NOW, "hr": 1}), NOW)]
    )
    text = generate_latest(pipe.metrics.registry).decode()
    assert 'carewatch_messages_rejected_total{reason="invalid_json"} 1.0' in text
    assert 'carewatch_sensor_faults_total{field="hr"} 1.0' in text
    assert 'carewatch_messages_rejected_total{reason="wrong_town"} 0.0' in text


def test_minute_series_means(pipe: Pipeline) -> None:
    base = math.floor(NOW / 60) * 60 - 120  # two whole minutes back
    samples = [{"ts": base + i * 10, "hr": 60 + i, "worn": True} for i in range(12)]
    pipe.handle([(topic(pipe), orjson.dumps({"samples": samples}), NOW)])
    series = pipe.store.minute_series(np.array([0]), NOW, minutes=3)
    assert series.values["hr"][0, 0] == pytest.approx(np.mean([60 + i for i in range(6)]), abs=0.5)
    assert series.values["hr"][0, 1] == pytest.approx(np.mean([66 + i for i in range(6)]), abs=0.5)
    assert math.isnan(series.values["hr"][0, 2])
    assert series.worn[0, :2].tolist() == [1, 1]


@pytest.mark.parametrize("seed", range(8))
def test_row_ts_order_is_lexsorts(seed: int) -> None:
    """The cheaper (row, ts) order equals `np.lexsort` whether or not each row's samples
    arrive in time order, with ties, NaN times and rows beyond the radix sort's range."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    high = 70_000 if seed % 4 == 0 else 50
    row = rng.integers(0, high, n).astype(np.int32)
    ts = np.round(rng.uniform(0, 20, n))  # many ties
    if seed % 2:  # each row's samples in time order: the stable sort is kept
        order = np.lexsort((np.arange(n), ts))
        row, ts = row[order], ts[order]
    if seed % 3 == 0:
        ts[rng.integers(0, n, 3)] = np.nan
    assert np.array_equal(row_ts_order(row, ts), np.lexsort((ts, row)))
    assert np.array_equal(row_ts_order(row[:1], ts[:1]), [0])


def test_sample_columns_take_accepts_every_index_form() -> None:
    """Integer indices go through `take`, masks and anything else through indexing: the
    same samples either way, and an empty list is an empty selection."""
    c = SampleColumns.empty(5)
    c.row[:] = [4, 3, 2, 1, 0]
    c.hr[:] = [40, 30, 20, 10, 0]
    assert c.take(np.array([1, 0])).row.tolist() == [3, 4]
    assert c.take([1, 0]).hr.tolist() == [30, 40]
    assert c.take(np.array([1, 0], np.uint16)).row.tolist() == [3, 4]
    assert c.take(c.row > 2).row.tolist() == [4, 3]
    assert c.take([True, False, True, False, True]).hr.tolist() == [40, 20, 0]
    assert len(c.take([])) == 0
