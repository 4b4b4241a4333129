"""The pipeline: messages in, state, detectors on a tick, findings to the alert stage.

`Pipeline` is the same object in `carewatch run` (wall clock, MQTT edge) and in
`carewatch replay` (simulated clock, recorded messages): only the driver differs.
Everything here runs on one thread, the pipeline thread.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from carewatch.clock import Clock
from config.models import Config
from detectors.base import Detector, Findings, TickState
from ingest.decode import (
    DecodedVitals,
    Rejection,
    VitalsDecoder,
    original_topic,
    split_topic,
)
from ingest.devices import DeviceTable
from ingest.metrics import IngestMetrics
from ingest.publish import Publisher
from ingest.samples import SampleColumns
from ingest.state import StateStore

log = logging.getLogger(__name__)

Message = tuple[str, bytes, float]


class AlertStage(Protocol):
    """What the pipeline needs of the alert engine."""

    def on_findings(self, findings: list[Findings], now: float) -> None: ...

    def tick(self, now: float) -> None: ...


class HistorySink(Protocol):
    def write(self, cols: Any) -> None: ...


class CommandHandler(Protocol):
    def handle_command(self, topic: str, payload: bytes, now: float) -> None: ...


class Pipeline:
    """Decode → validate → de-duplicate → state (+ history sink); tick → detectors → alerts."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        publisher: Publisher,
        detectors: Sequence[Detector] = (),
        alerts: AlertStage | None = None,
        sink: HistorySink | None = None,
        metrics: IngestMetrics | None = None,
        commands: CommandHandler | None = None,
        devices: DeviceTable | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.publisher = publisher
        self.devices = devices or DeviceTable.from_config(config)
        self.store = StateStore(
            len(self.devices), config.state.raw_ring_samples, config.state.minute_ring_minutes
        )
        p = config.pipeline
        self.decoder = VitalsDecoder(
            self.devices, p.max_message_bytes, p.max_batch_samples, p.future_tolerance_s
        )
        self.detectors = list(detectors)
        # Urgent detectors (`urgent = True`: the fall rule) run first in a tick and, when a
        # device reports a fall, at once on arrival (`fall_lane`); the others only on ticks.
        self._urgent = [d for d in self.detectors if getattr(d, "urgent", False)]
        self._order = self._urgent + [d for d in self.detectors if d not in self._urgent]
        self._lane: list[SampleColumns] = []  # samples the urgent detectors have not seen
        # called on the pipeline thread after each detector of a tick (after the urgent
        # ones): the service lets a fall that arrives during a long tick skip the rest
        self.between_detectors: Callable[[], None] | None = None
        self.alerts = alerts
        self.sink = sink
        self.commands = commands
        self.metrics = metrics or IngestMetrics()
        self.started_at = clock.now()
        self.zone = ZoneInfo(config.timezone)
        self.rejection_listeners: list[Callable[[Rejection], object]] = []
        self.findings_listeners: list[Callable[[list[Findings], float], None]] = []
        self.ticks = 0
        # a device-reported fall waits for no tick: the driver ticks at once when set
        self.urgent = False
        # (lost at, back at) of the broker link, set by the live driver (replay: never lost)
        self.link: tuple[float, float] = (float("nan"), float("nan"))
        self.offline_status_at = -np.inf  # clock time of the last status saying offline

    # ------------------------------------------------------------------ messages
    def handle(self, messages: list[Message]) -> None:
        """Process a batch of received messages (any mix of topics)."""
        if not messages:
            return
        now = self.clock.now()
        self.metrics.count("received", len(messages))
        self.metrics.lag_seconds.set(max(0.0, now - messages[0][2]))
        vitals: list[Message] = []
        rejections: list[Rejection] = []
        for msg in messages:
            if msg[0].endswith("/vitals"):
                vitals.append(msg)
            elif msg[0].endswith("/status"):
                update = self.decoder.decode_status(msg[0], msg[1], msg[2], rejections)
                if update is not None:
                    self.metrics.count("status")
                    if update.battery_fault:
                        self.metrics.count_faults(Counter(battery=1))
                    if not update.online:
                        self.offline_status_at = now
                    self.store.set_status(
                        update.row, update.online, update.battery, update.received_at, update.ts
                    )
            elif self.commands is not None and "/cmd/" in msg[0]:
                self.commands.handle_command(original_topic(msg[0]), msg[1], now)
            else:
                log.debug("ignoring message on %s", msg[0])
        if vitals:
            decoded = self.decoder.decode_vitals(vitals, now)
            rejections.extend(decoded.rejections)
            self.store_vitals(decoded, now)
        for rej in rejections:
            self.metrics.count_rejected(rej.reason)
            self.publisher.publish(rej.reply_topic, orjson.dumps(rej.payload()), qos=1)
            for listener in self.rejection_listeners:
                listener(rej)

    def store_vitals(self, decoded: DecodedVitals, received_at: float | np.ndarray) -> None:
        """Count what the decoder kept of some vitals messages, store its samples (less
        duplicates) as handled at `received_at` (one time, or one per sample of
        `decoded.samples`: replay spans), and pass them to the urgent lane and the sink.
        Rejections are the caller's."""
        m = self.metrics
        m.count_faults(decoded.faults)
        m.count("future", decoded.future_dropped)
        m.count("accepted", decoded.messages_accepted)
        cols = decoded.samples
        if not len(cols):
            return
        dup = self.store.duplicate_mask(cols)
        if dup.any():
            m.count("duplicates", int(dup.sum()))
            cols = cols.take(~dup)
            if isinstance(received_at, np.ndarray):
                received_at = received_at[~dup]
        self.store.append(cols, received_at)
        if self._urgent:
            self._lane.append(cols)
        self.urgent |= bool((cols.fall == 1).any())
        m.count("samples", len(cols))
        if self.sink is not None and len(cols):
            self.sink.write(cols)

    # ------------------------------------------------------------------ ticks
    def utc_offset_s(self, now: float) -> float:
        offset = datetime.fromtimestamp(now, self.zone).utcoffset()
        return offset.total_seconds() if offset else 0.0

    def tick(self, now: float | None = None) -> list[Findings]:
        """Run every detector over all devices, then the alert stage's timers."""
        now = self.clock.now() if now is None else now
        self.urgent = False
        self._lane.clear()  # every pending sample reaches this tick's urgent detectors
        state = self.tick_state(self.store.take_pending(), now)
        findings: list[Findings] = []
        delivered = 0
        for i, detector in enumerate(self._order):
            findings.extend(f for f in detector.update(state, now) if len(f))
            if i + 1 == len(self._urgent) and findings and self.alerts is not None:
                # a fall's alert goes out before the other detectors run, and before any
                # fall handled mid-tick (findings of one device stay in time order)
                self.alerts.on_findings(findings, now)
                delivered = len(findings)
            if self.between_detectors is not None and i + 1 >= len(self._urgent):
                self.between_detectors()
        return self._close_tick(findings, delivered, now)

    def deliver(self, urgent: list[Findings], others: list[Findings], now: float
                ) -> list[Findings]:
        """A tick's findings reach the alert stage as `tick` hands them (the urgent
        detectors' first), then its timers and the listeners run (replay spans,
        `carewatch.span`, judge the findings of several ticks at once)."""
        self.urgent = False
        self._lane.clear()
        if urgent and self.alerts is not None:
            self.alerts.on_findings(urgent, now)
        return self._close_tick(urgent + others, len(urgent), now)

    def _close_tick(self, findings: list[Findings], delivered: int, now: float
                    ) -> list[Findings]:
        self.ticks += 1
        if self.alerts is not None:
            if len(findings) > delivered:
                self.alerts.on_findings(findings[delivered:], now)
            self.alerts.tick(now)
        for listener in self.findings_listeners:
            listener(findings, now)
        return findings

    def fall_lane(self, now: float | None = None) -> list[Findings]:
        """A device reported a fall: run the urgent detectors at once over the samples they
        have not seen, and hand their findings to the alert stage (no timers). The samples
        stay pending for the next tick's other detectors; the urgent ones drop what they
        have already seen (late-sample filter), so nothing is judged twice."""
        now = self.clock.now() if now is None else now
        self.urgent = False
        if not self._lane:
            return []
        parts, self._lane = self._lane, []
        new = parts[0] if len(parts) == 1 else SampleColumns.concat(parts).sorted_by_row_ts()
        state = self.tick_state(new, now)
        findings = [f for d in self._urgent for f in d.update(state, now) if len(f)]
        if findings and self.alerts is not None:
            self.alerts.on_findings(findings, now)
        for listener in self.findings_listeners:
            listener(findings, now)
        return findings

    @property
    def ordered_detectors(self) -> list[tuple[Detector, bool]]:
        """The detectors in the order a tick runs them, each with whether it is urgent."""
        return [(d, d in self._urgent) for d in self._order]

    def tick_state(self, new: SampleColumns, now: float) -> TickState:
        """What a tick at `now` hands the detectors, with `new` samples."""
        return TickState(new=new, store=self.store, devices=self.devices,
                         started_at=self.started_at, utc_offset_s=self.utc_offset_s(now),
                         link_lost_at=self.link[0], link_back_at=self.link[1])

    # ------------------------------------------------------------------ views
    def device_row(self, device_id: str) -> int:
        return self.devices.row_of_device[device_id]

    def town_of(self, topic: str) -> str | None:
        parsed = split_topic(topic)
        return parsed[0] if parsed else None

    def rows_seen(self) -> np.ndarray:
        return np.flatnonzero(self.store.samples_total > 0)
