"""Replay's spans: several ticks judged in one pass, finding exactly what ticking does.

Replaying 200 residents for a day is 86,400 ticks of about 20 samples each, and most of a
tick's cost is per call, not per sample. When a run of ticks holds only vitals messages, at
most one per device, the detectors that judge samples alone (`sample_driven`) can take the
whole run in one call, and those judged against the clock (`quiet_until`) can show that
they find nothing inside it. Then the run is decoded and stored at once (each sample stored
as handled at its own tick), every detector runs once, at the last tick, and each finding
goes to the alert stage at the tick its sample was handled, in the order ticking gives it:
the urgent detectors' findings, the others', then the alert timers, tick after tick.

Whatever the run holds that this cannot show (a rejected message, a duplicate, a fall, a
pending refit, a device about to fall silent...) makes `tick_span` do nothing and return
False: the caller ticks one at a time. `tests/test_replay_span.py` checks that replays with
and without spans give byte-identical output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detectors.base import Findings, take_findings
from ingest.decode import split_topic

if TYPE_CHECKING:
    from carewatch.clock import SimClock
    from carewatch.pipeline import Message, Pipeline

Batch = tuple[float, list["Message"]]  # a tick's time and the messages handled at it


def spannable(pipeline: Pipeline) -> bool:
    """Every detector either sample-driven or able to say how long it stays quiet."""
    return pipeline.between_detectors is None and all(
        getattr(d, "sample_driven", False) or hasattr(d, "quiet_until")
        for d in pipeline.detectors)


def tick_span(pipeline: Pipeline, clock: SimClock, batches: list[Batch],
              topic_rows: dict[str, int] | None = None) -> bool:
    """Handle and tick `batches` (consecutive ticks: vitals messages only, one topic at most
    once) in one pass, setting the pipeline's `clock` to each tick as it delivers; False,
    with nothing done, where that might differ from ticking. `topic_rows` caches the device
    row of each registered device's vitals topic across calls."""
    rows = _rows(pipeline, batches, {} if topic_rows is None else topic_rows)
    if rows is None or pipeline.store.pending:
        return False
    times = np.array([t for t, _ in batches])
    first, last = float(times[0]), float(times[-1])
    if pipeline.utc_offset_s(first) != pipeline.utc_offset_s(last):
        return False
    messages = [m for _, batch in batches for m in batch]
    decoded = pipeline.decoder.decode_vitals(messages, last)
    cols = decoded.samples
    if decoded.rejections or (len(cols) and (
            (cols.fall == 1).any() or pipeline.store.duplicate_mask(cols).any())):
        return False
    before = pipeline.tick_state(cols, last)
    for d in pipeline.detectors:
        quiet_until = getattr(d, "quiet_until", None)
        if quiet_until is not None and not last < quiet_until(before, cols):
            return False
    # from here on, the span is committed
    tick_of_row = np.full(len(pipeline.devices), -1, np.intp)
    for k, r in rows:
        tick_of_row[r] = k
    m = pipeline.metrics
    m.count("received", len(messages))
    k_last = max(k for k, _ in rows) if rows else None
    if k_last is not None:
        m.lag_seconds.set(max(0.0, float(times[k_last]) - batches[k_last][1][0][2]))
    # as `Pipeline.handle` stores them (no duplicates or falls: checked above)
    pipeline.store_vitals(decoded, times[tick_of_row[cols.row]])
    state = pipeline.tick_state(pipeline.store.take_pending(), last)
    per_tick: list[list[list[Findings]]] = [[[], []] for _ in batches]  # [urgent, others]
    for d, urgent in pipeline.ordered_detectors:
        for f in d.update(state, last):
            if not len(f):
                continue
            if not getattr(d, "sample_driven", False):
                raise RuntimeError(f"{type(d).__name__} found {f.kind} inside a span it "
                                   "said was quiet (quiet_until)")
            _split(f, tick_of_row, per_tick, 0 if urgent else 1)
    for k, (t, _) in enumerate(batches):
        clock.set(t)
        pipeline.deliver(per_tick[k][0], per_tick[k][1], t)
    return True


def _rows(pipeline: Pipeline, batches: list[Batch], topic_rows: dict[str, int]
          ) -> list[tuple[int, int]] | None:
    """(tick index, device row) of every message; None unless each is a registered device's
    vitals and no device has two messages in the span."""
    flat = [(k, m[0]) for k, (_, batch) in enumerate(batches) for m in batch]
    out = [(k, topic_rows.get(topic, -1)) for k, topic in flat]
    if any(row < 0 for _, row in out):  # a topic not seen yet (or not a device's vitals)
        for i, (k, topic) in enumerate(flat):
            if out[i][1] < 0:
                found = _vitals_row(pipeline, topic)
                if found is None:
                    return None
                topic_rows[topic] = found  # registered devices' topics only: bounded
                out[i] = (k, found)
    if len({row for _, row in out}) < len(out):
        return None
    return out


def _vitals_row(pipeline: Pipeline, topic: str) -> int | None:
    parsed = split_topic(topic)
    if parsed is None or parsed[2] != "vitals":
        return None
    row = pipeline.devices.row_of_device.get(parsed[1])
    if row is None or pipeline.devices.town_ids[row] != parsed[0]:
        return None
    return row


def _split(f: Findings, tick_of_row: np.ndarray, per_tick: list[list[list[Findings]]],
           slot: int) -> None:
    ticks = tick_of_row[f.row]
    if (ticks < 0).any():
        raise RuntimeError(f"{f.kind}: a sample-driven finding on a device without a sample")
    if (ticks == ticks[0]).all():
        per_tick[int(ticks[0])][slot].append(f)
        return
    order = np.argsort(ticks, kind="stable")  # keeps each tick's own order
    bounds = np.flatnonzero(np.diff(ticks[order])) + 1
    for idx in np.split(order, bounds):
        per_tick[int(ticks[idx[0]])][slot].append(take_findings(f, idx))

