"""`carewatch replay`: the live pipeline on recorded traffic, with a simulated clock.

Input lines (contract "Replay input"): a recorded message `{"t", "topic", "payload" |
"payload_raw"}`, a clock line `{"t"}`, an `ack` or a `resolve` line. Ticks fire at every
multiple of the tick period, exactly as `run` ticks on the wall clock; messages received
between two ticks are decoded together before the later tick. Output is every alert event,
one JSON object a line, and is byte-identical across runs of the same input.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

from carewatch.clock import SimClock
from carewatch.pipeline import Message, Pipeline
from carewatch.span import Batch, spannable, tick_span
from config.models import Config
from ingest.decode import Rejection

log = logging.getLogger(__name__)


MAX_T = 253402300799.0  # 9999-12-31T23:59:59Z
SPAN_TICKS = 32  # at most this many ticks judged in one pass (carewatch.span)


class ReplayInputError(ValueError):
    pass


@dataclass
class ReplayResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0
    bad_lines: int = 0
    acks_ignored: int = 0
    ticks: int = 0
    spanned_ticks: int = 0  # of which judged in spans (carewatch.span)
    first_t: float | None = None
    last_t: float | None = None
    ingest: dict[str, object] = field(default_factory=dict)


def read_lines(path: str | Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from fh


def replay(
    lines: Iterable[bytes | str],
    config: Config,
    *,
    on_event: Callable[[dict[str, Any]], object] | None = None,
    on_rejected: Callable[[dict[str, Any]], object] | None = None,
    data_dir: Path | None = None,
    keep_events: bool = True,
    span_ticks: int = SPAN_TICKS,
) -> ReplayResult:
    """Run the pipeline over recorded lines; returns the events (and counts).

    Up to `span_ticks` consecutive ticks may be judged in one pass (`carewatch.span`) where
    that provably gives what ticking one at a time gives; 1 ticks one at a time always."""
    from carewatch.app import build_pipeline  # late: keeps this module light to import

    result = ReplayResult()
    clock = SimClock(0.0)
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="carewatch-replay-")
        data_dir = Path(tmp.name)
    pipeline: Pipeline | None = None
    closer: Callable[[], None] = _nothing
    tick_s = config.pipeline.tick_s
    pending: list[Message] = []
    next_tick = math.inf
    last_t = -math.inf
    batches: list[Batch] = []  # ticks waiting to be run as one span
    topics: set[str] = set()  # their messages' topics
    topic_rows: dict[str, int] = {}  # vitals topic -> device row (carewatch.span)
    spans = False  # set once the pipeline exists
    dirty = False  # samples were handled outside a tick (a fall, a person): tick alone

    def emit(event: dict[str, Any]) -> None:
        if keep_events:
            result.events.append(event)
        if on_event is not None:
            on_event(event)

    def flush() -> None:
        if pending and pipeline is not None:
            pipeline.handle(pending)
            pending.clear()

    def run_batches() -> None:
        if not batches:
            return
        assert pipeline is not None
        if len(batches) > 1 and tick_span(pipeline, clock, batches, topic_rows):
            result.spanned_ticks += len(batches)
        else:
            for at, msgs in batches:
                clock.set(at)
                if msgs:
                    pipeline.handle(msgs)
                pipeline.tick(at)
        result.ticks += len(batches)
        batches.clear()
        topics.clear()

    def one_tick(at: float) -> None:
        """The tick at `at`, spanned with its neighbours where it can be."""
        nonlocal dirty
        assert pipeline is not None
        mine = {m[0] for m in pending}
        if not spans or dirty or len(mine) < len(pending) or (
                not mine <= topic_rows.keys()  # known vitals topics pass at C speed
                and any(not topic.endswith("/vitals") for topic in mine)):
            run_batches()
            clock.set(at)
            flush()
            pipeline.tick(at)
            result.ticks += 1
            dirty = False
            return
        if not topics.isdisjoint(mine):
            run_batches()
        batches.append((at, pending[:]))
        topics.update(mine)
        pending.clear()
        if len(batches) >= span_ticks:
            run_batches()

    try:
        for lineno, raw in enumerate(lines, 1):
            if isinstance(raw, str):
                raw = raw.encode()
            try:
                line = _DECODE_LINE.decode(raw)
                t = line.t
                if type(t) is not float and (type(t) is not int or isinstance(t, bool)):
                    if t is msgspec.UNSET:
                        raise ReplayInputError("a line needs t")
                    raise ReplayInputError("t must be a finite number")
                if not 0 <= t <= MAX_T:  # local-time rules need a representable date
                    if not math.isfinite(t):
                        raise ReplayInputError("t must be a finite number")
                    raise ReplayInputError("t must be epoch seconds between 1970 and 9999")
            except (msgspec.DecodeError, RecursionError, ReplayInputError) as exc:
                if not raw.strip():
                    continue
                result.bad_lines += 1
                log.warning("replay line %d ignored: %s", lineno, exc)
                continue
            t = float(t)
            if pipeline is None:
                clock.set(t)
                pipeline, closer = build_pipeline(
                    config,
                    clock,
                    publisher=_Discard(),
                    data_dir=data_dir,
                    replay=True,
                    on_event=emit,
                )
                if on_rejected is not None:
                    pipeline.rejection_listeners.append(
                        lambda rej: on_rejected(_rejected_line(rej))
                    )
                next_tick = (math.floor(t / tick_s) + 1) * tick_s
                result.first_t = t
                spans = span_ticks > 1 and spannable(pipeline)
            elif t < last_t:
                result.bad_lines += 1
                log.warning("replay line %d ignored: t %.3f goes back in time", lineno, t)
                continue
            while next_tick <= t:
                one_tick(next_tick)
                next_tick += tick_s
            # the clock is set to t only where something reads it (falls, people, the end):
            # nothing between two ticks does, and a locked set per line cost a tenth of replay
            last_t = t
            if line.topic is not msgspec.UNSET:
                payload = _payload_of(line)
                if payload is None or not isinstance(line.topic, str):
                    result.bad_lines += 1
                    log.warning("replay line %d ignored: needs topic and payload", lineno)
                    continue
                pending.append((line.topic, payload, t))
                result.messages += 1
                if b"fall" in payload:
                    # as live: a device-reported fall is judged on arrival (the fall lane)
                    run_batches()
                    dirty = True
                    clock.set(t)
                    flush()
                    if pipeline.urgent:
                        pipeline.fall_lane(t)
            elif line.ack is not msgspec.UNSET or line.resolve is not msgspec.UNSET:
                run_batches()
                dirty = True
                clock.set(t)
                flush()
                if not _person_action(pipeline, _person_line(line), t):
                    result.acks_ignored += 1
        result.last_t = None if pipeline is None else last_t
        if pipeline is not None:
            run_batches()
            clock.set(last_t)
            flush()
            result.ingest = pipeline.metrics.snapshot()
    finally:
        closer()
        if tmp is not None:
            tmp.cleanup()
    return result


def _nothing() -> None:
    return None


class _Line(msgspec.Struct):
    """One replay input line; the payload stays raw bytes (decoded once, by the pipeline)."""

    t: Any = msgspec.UNSET
    topic: Any = msgspec.UNSET
    payload: msgspec.Raw = msgspec.UNSET  # type: ignore[assignment]
    payload_raw: Any = msgspec.UNSET
    ack: Any = msgspec.UNSET
    resolve: Any = msgspec.UNSET
    by: Any = None
    note: Any = None


_DECODE_LINE = msgspec.json.Decoder(_Line)


def _payload_of(line: _Line) -> bytes | None:
    if line.payload_raw is not msgspec.UNSET:
        raw = line.payload_raw
        return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else None
    if line.payload is not msgspec.UNSET:
        return bytes(line.payload)
    return None


def _person_line(line: _Line) -> dict[str, Any]:
    out: dict[str, Any] = {"by": line.by, "note": line.note}
    if line.ack is not msgspec.UNSET:
        out["ack"] = line.ack
    else:
        out["resolve"] = line.resolve
    return out


def _person_action(pipeline: Pipeline, line: dict[str, Any], t: float) -> bool:
    """Apply an `ack` / `resolve` line as a person at the console would; False if ignored."""
    action = "ack" if "ack" in line else "resolve"
    target = line[action]
    alerts = pipeline.alerts
    if not isinstance(target, dict) or alerts is None:
        log.warning("replay %s line at t=%.3f ignored: malformed", action, t)
        return False
    resident, kind = target.get("resident_id"), target.get("kind")
    note = line.get("note")
    if not (isinstance(resident, str) and isinstance(kind, str)) or (
        note is not None and not isinstance(note, str)
    ):
        log.warning("replay %s line at t=%.3f ignored: resident_id, kind and note must be "
                    "strings", action, t)
        return False
    by = str(line.get("by") or "replay")
    try:
        if action == "ack":
            alerts.ack(resident, kind, by=by, now=t)  # type: ignore[attr-defined]
        else:
            alerts.resolve(resident, kind, by=by, note=note, now=t)  # type: ignore[attr-defined]
    except (KeyError, LookupError, ValueError) as exc:
        log.warning("replay %s of %s/%s at t=%.3f ignored: %s", action, resident, kind, t, exc)
        return False
    return True


def _rejected_line(rej: Rejection) -> dict[str, Any]:
    return {"t": rej.received_at, "topic": rej.topic, "reason": rej.reason, "detail": rej.detail}


class _Discard:
    """Replay publishes nothing over MQTT; events reach the output through listeners."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        return None


def replay_file(
    in_path: str | Path,
    config: Config,
    out_path: str | Path | None = None,
    rejected_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Replay a file; write events (and rejections) as JSON lines; return the events."""
    out_fh: IO[bytes] | None = open(out_path, "wb") if out_path else None  # noqa: SIM115
    rej_fh: IO[bytes] | None = open(rejected_path, "wb") if rejected_path else None  # noqa: SIM115
    try:
        result = replay(
            read_lines(in_path),
            config,
            on_event=(lambda e: out_fh.write(orjson.dumps(e) + b"\n")) if out_fh else None,
            on_rejected=(lambda r: rej_fh.write(orjson.dumps(r) + b"\n")) if rej_fh else None,
        )
    finally:
        for fh in (out_fh, rej_fh):
            if fh is not None:
                fh.close()
    return result.events
