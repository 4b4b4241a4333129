"""InfluxDB sink end to end against tests/influx_server.py (InfluxDB 2's /api/v2/write contract).

InfluxDB 2 itself cannot be installed here; the fake server implements the documented
wire protocol (auth, org, bucket, precision, gzip, strict line protocol, error answers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from influx_server import FakeInflux, parse_line_protocol
from sinks_helpers import T0, columns, fleet, sink_threads, small_config, small_devices, wait_until

from config.models import InfluxSinkSettings
from ingest.sinks import build_sink
from ingest.sinks.influx import InfluxSink

TOKEN = "s3cret-token"


@pytest.fixture
def server() -> Iterator[FakeInflux]:
    with FakeInflux(token=TOKEN) as srv:
        yield srv


def make_sink(server: FakeInflux, tmp_path: Path, token: str = TOKEN, **kw: Any) -> InfluxSink:
    token_file = tmp_path / "influx.token"
    token_file.write_text(token + "\n")
    opts: dict[str, Any] = {"url": server.url, "org": "carewatch", "bucket": "vitals",
                            "token_file": str(token_file), "flush_interval_ms": 50,
                            "max_retries": 3, "batch_size": 1000, "queue_max": 10_000}
    opts.update(kw.pop("settings", {}))
    kw.setdefault("retry_interval_ms", 50)
    kw.setdefault("max_retry_delay_ms", 200)
    kw.setdefault("resubmit_min_s", 0.05)
    kw.setdefault("resubmit_max_s", 0.2)
    return InfluxSink(InfluxSinkSettings.model_validate(opts), small_devices(), **kw)


def test_exact_points_tags_and_gzip(server: FakeInflux, tmp_path: Path) -> None:
    sink = make_sink(server, tmp_path)
    try:
        sink.write(columns(
            [0, 1, 2, 0], [T0 + 0.25, T0 + 1, T0 + 2, T0 + 3],
            hr=[72, None, 64, None], spo2=[97.5, 93, None, None], temp_c=[36.7, None, None, None],
            activity=[0.0, 1.25, None, None], worn=[1, 0, None, None], fall=[0, 1, None, None],
            battery=[88, None, 15, None],
        ))
        assert sink.flush(10)
    finally:
        sink.close()
    assert not sink_threads()
    pts = sorted(server.points, key=lambda p: p.time_ns or 0)
    assert len(pts) == 3  # the last sample has no field at all: nothing to write
    assert {p.measurement for p in pts} == {"vitals"}
    assert pts[0].tags == {"town": "gufu", "resident": "r-0001", "device": "dev-0001"}
    assert pts[1].tags == {"town": "jijiang", "resident": "r-0002", "device": "dev-0002"}
    assert pts[0].fields == {"hr": 72.0, "spo2": 97.5, "temp_c": 36.7, "activity": 0.0,
                             "worn": True, "fall": False, "battery": 88}
    assert isinstance(pts[0].fields["battery"], int) and isinstance(pts[0].fields["hr"], float)
    assert pts[1].fields == {"spo2": 93.0, "activity": 1.25, "worn": False, "fall": True}
    assert pts[2].fields == {"hr": 64.0, "battery": 15}
    assert [p.time_ns for p in pts] == [round((T0 + d) * 1000) * 10**6 for d in (0.25, 1, 2)]
    assert all(r.gzip and r.query["precision"] == "ms" for r in server.requests)
    assert all(r.headers["authorization"] == f"Token {TOKEN}" for r in server.requests)
    st = sink.stats()
    assert st["written"] == 3 and st["skipped_empty"] == 1 and st["failed_batches"] == 0
    assert st["dropped_failed"] == 0  # a sample with nothing to store is not a loss


def test_second_precision_and_batching(server: FakeInflux, tmp_path: Path) -> None:
    sink = make_sink(server, tmp_path, precision="s", settings={"batch_size": 400, "gzip": False})
    cols = fleet(1000, devices=3, step=1.0)
    try:
        sink.write(cols)
        assert sink.flush(10)
    finally:
        sink.close()
    assert len(server.points) == 1000
    assert {r.query["precision"] for r in server.requests} == {"s"}
    assert not any(r.gzip for r in server.requests)
    assert len(server.requests) >= 3  # 1000 lines in bodies of at most 400
    got = {(p.tags["device"], p.time_ns): p.fields["hr"] for p in server.points}
    want = {(f"dev-000{r + 1}", int(t) * 10**9): float(h)
            for r, t, h in zip(cols.row, cols.ts, cols.hr, strict=True)}
    assert got == want


def test_wrong_token_is_reported_not_retried(server: FakeInflux, tmp_path: Path) -> None:
    sink = make_sink(server, tmp_path, token="wrong")
    try:
        sink.write(fleet(10))
        assert sink.flush(10)
        st = sink.stats()
    finally:
        sink.close()
    assert server.statuses() == [401]
    assert st["failed_batches"] == 1 and st["dropped_failed"] == 10 and st["written"] == 0
    assert "401" in str(st["last_error"])
    assert server.points == []


def test_server_errors_are_retried_and_nothing_is_lost(server: FakeInflux, tmp_path: Path) -> None:
    server.script(503, times=2)
    server.script(500, times=1)
    sink = make_sink(server, tmp_path)
    try:
        sink.write(fleet(300))
        assert sink.flush(15)
        st = sink.stats()
    finally:
        sink.close()
    assert server.statuses() == [503, 503, 500, 204]
    assert len(server.points) == 300
    assert len({(p.tags["device"], p.time_ns) for p in server.points}) == 300  # no duplicates
    assert st["retries"] == 3 and st["written"] == 300 and st["dropped_failed"] == 0


def test_outage_longer_than_client_retries_is_resubmitted(server: FakeInflux,
                                                         tmp_path: Path) -> None:
    server.script(502, times=6)  # the client gives up after 1 retry; the sink resubmits
    sink = make_sink(server, tmp_path, settings={"max_retries": 1})
    try:
        sink.write(fleet(50))
        assert sink.flush(15)
        st = sink.stats()
    finally:
        sink.close()
    assert server.statuses()[-1] == 204 and server.statuses().count(502) == 6
    assert len(server.points) == 50
    assert int(st["failed_batches"]) >= 2 and st["written"] == 50


def test_429_honours_retry_after(server: FakeInflux, tmp_path: Path) -> None:
    server.script(429, retry_after=1)
    sink = make_sink(server, tmp_path)  # its own backoff would be 50 ms
    try:
        sink.write(fleet(20))
        assert sink.flush(15)
    finally:
        sink.close()
    assert server.statuses() == [429, 204]
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 0.95
    assert len(server.points) == 20


def test_bad_data_is_permanent(server: FakeInflux, tmp_path: Path) -> None:
    server.script(400, body={"code": "invalid", "message": "unable to parse 'x': bad"})
    sink = make_sink(server, tmp_path)
    try:
        sink.write(fleet(30))
        assert sink.flush(10)
        sink.write(fleet(30, start=T0 + 100))
        assert sink.flush(10)
        st = sink.stats()
    finally:
        sink.close()
    assert server.statuses() == [400, 204]  # the rejected body was not sent again
    assert st["failed_batches"] == 1 and st["dropped_failed"] == 30 and st["written"] == 30
    assert len(server.points) == 30


def test_request_too_large_is_split(server: FakeInflux, tmp_path: Path) -> None:
    server.script(413, body={"code": "request too large", "message": "too large"})
    sink = make_sink(server, tmp_path)
    try:
        sink.write(fleet(101))
        assert sink.flush(10)
    finally:
        sink.close()
    assert server.statuses() == [413, 204, 204]
    assert len(server.points) == 101


def test_overflow_is_counted_with_a_tiny_queue(server: FakeInflux, tmp_path: Path) -> None:
    server.script(503, times=10_000)  # the server stays down
    sink = make_sink(server, tmp_path, settings={"queue_max": 1000, "max_retries": 0},
                     resubmit_min_s=30.0, resubmit_max_s=30.0)
    try:
        sink.write(fleet(1500))  # bigger than the whole queue: dropped at once
        assert sink.stats()["dropped_overflow"] == 1500
        sink.write(fleet(1000))
        assert wait_until(lambda: sink.stats()["retry_waiting"] == 1000)
        sink.write(fleet(1000, start=T0 + 5000))  # held in the queue: nothing is accepted
        assert wait_until(lambda: sink.stats()["queued"] == 1000)
        sink.write(fleet(10, start=T0 + 9000))
        st = sink.stats()
        assert st["dropped_overflow"] == 1510
        assert st["queued"] == 1000 and st["retry_waiting"] == 1000
    finally:
        sink.close()
    assert not sink_threads()
    assert sink.stats()["dropped_failed"] == 2000  # given up at close, counted


def test_server_validates_the_wire_contract(server: FakeInflux) -> None:
    import gzip

    import httpx

    url = f"{server.url}/api/v2/write"
    auth = {"Authorization": f"Token {TOKEN}"}
    q = {"org": "carewatch", "bucket": "vitals", "precision": "s"}
    good = b'vitals,device=d\\ 1,town=a\\,b hr=70,ok=true,n=3i,u=4u,s="say \\"hi\\"" 1700000000'
    with httpx.Client() as http:
        assert http.post(url, params=q, content=good).status_code == 401
        assert http.post(url, params={**q, "bucket": "nope"}, headers=auth,
                         content=good).status_code == 404
        assert http.post(url, params={**q, "precision": "m"}, headers=auth,
                         content=good).status_code == 400
        bad = http.post(url, params=q, headers=auth, content=good + b"\nvitals hr=7x 1")
        assert bad.status_code == 400 and bad.json()["line"] == 2
        assert bad.json()["code"] == "invalid"
        assert server.points == []  # the whole batch is rejected
        zipped = http.post(url, params=q, headers={**auth, "Content-Encoding": "gzip"},
                           content=gzip.compress(good))
        assert zipped.status_code == 204
        conflict = http.post(url, params=q, headers=auth, content=b"vitals,device=d n=1.5 1")
        assert conflict.status_code == 422
    (p,) = server.points
    assert p.tags == {"device": "d 1", "town": "a,b"}
    assert p.fields == {"hr": 70.0, "ok": True, "n": 3, "u": 4, "s": 'say "hi"'}
    assert p.time_ns == 1_700_000_000 * 10**9
    for line in ["vitals", "vitals hr=", "vitals,t= hr=1", "vitals hr=1 12x", "vitals hr=tru",
                 'vitals s="open', "vitals hr=1,", ",t=1 hr=1"]:
        with pytest.raises(ValueError):
            parse_line_protocol(line)


def test_build_sink_influxdb(server: FakeInflux, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    cfg = small_config({"storage": {"sink": "influxdb", "influxdb": {
        "url": server.url, "token_file": str(token_file), "flush_interval_ms": 20}}})
    sink = build_sink(cfg, small_devices())
    try:
        assert isinstance(sink, InfluxSink)
        sink.write(fleet(7))
        assert sink.flush(10)
    finally:
        sink.close()
    assert len(server.points) == 7
    assert np.all([p.measurement == "vitals" for p in server.points])


def test_server_down_then_back_loses_nothing(tmp_path: Path) -> None:
    first = FakeInflux(token=TOKEN).start()
    port = first.port
    first.stop()  # nothing listens: connection refused
    sink = make_sink(first, tmp_path, settings={"max_retries": 1})
    try:
        sink.write(fleet(120))
        assert wait_until(lambda: int(sink.stats()["failed_batches"]) >= 1)
        assert "Connection refused" in str(sink.stats()["last_error"]) or \
            "NewConnectionError" in str(sink.stats()["last_error"])
        with FakeInflux(token=TOKEN, port=port) as second:
            assert sink.flush(15)
            assert len(second.points) == 120
            assert len({(p.tags["device"], p.time_ns) for p in second.points}) == 120
    finally:
        sink.close()
    assert sink.stats()["written"] == 120 and sink.stats()["dropped_failed"] == 0


def test_close_is_bounded_while_the_server_is_down(tmp_path: Path) -> None:
    gone = FakeInflux(token=TOKEN).start()
    gone.stop()
    sink = make_sink(gone, tmp_path, close_wait_s=1.0, settings={"max_retries": 2})
    sink.write(fleet(40))
    assert not sink.flush(0.3)
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 4.0
    st = sink.stats()
    assert st["written"] == 0 and st["dropped_failed"] == 40  # counted, not silently lost
