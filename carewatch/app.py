"""Assembly: one place that builds the pipeline with its detectors, alert engine and sink.

`run`, `replay`, `demo` and the tests all build the pipeline here, so they run the same code.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from carewatch.clock import Clock
from carewatch.pipeline import Pipeline
from config.models import Config
from ingest.devices import DeviceTable
from ingest.publish import Publisher

log = logging.getLogger(__name__)


def build_pipeline(
    config: Config,
    clock: Clock,
    publisher: Publisher,
    *,
    data_dir: Path,
    replay: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    with_sink: bool | None = None,
) -> tuple[Pipeline, Callable[[], None]]:
    """The pipeline and a function that closes what it opened (alert store, sink threads).

    `replay=True` gives deterministic alert ids and no history sink unless asked for.
    """
    from alerts.engine import AlertEngine
    from detectors.messages import message
    from detectors.registry import build_detectors

    devices = DeviceTable.from_config(config)
    detectors = build_detectors(config, devices)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = None
    if replay and config.storage.alerts_backend == "sqlite":
        from alerts.store import SqliteAlertStore

        # a replay can be run again from its input: an fsync per alert step (3 ms; a sixth
        # of a 24 h replay's time) protects nothing there
        store = SqliteAlertStore(data_dir / config.alerts.db_file, synchronous="OFF")
    alerts = AlertEngine(
        config, devices, clock, publisher, data_dir, message_for=message,
        deterministic_ids=replay, send_notifications=not replay, store=store,
    )
    if on_event is not None:
        alerts.add_listener(on_event)
    resume_detectors(detectors, alerts)
    sink = None
    if with_sink if with_sink is not None else not replay:
        from ingest.sinks import build_sink

        sink = build_sink(config, devices, clock=clock)
    pipeline = Pipeline(
        config, clock, publisher, detectors=detectors, alerts=alerts, sink=sink, devices=devices,
        commands=_AlertCommands(alerts),
    )

    def close() -> None:
        alerts.close()
        if sink is not None:
            sink.close()

    return pipeline, close


def resume_detectors(detectors: list[Any], alerts: Any) -> None:
    """A restarted pipeline's detectors start with no memory of the conditions behind the
    alerts still open in the store; a detector with `resume(kind, rows, onset, severity)`
    is told which of its kinds' conditions were active, so that it can clear them."""
    for detector in detectors:
        resume = getattr(detector, "resume", None)
        if resume is None:
            continue
        for kind in detector.kinds:
            rows, onset, severity = alerts.active_conditions(kind)
            if len(rows):
                resume(kind, rows, onset, severity)


class _AlertCommands:
    """Routes MQTT alert commands (ack / dispatch / resolve) to the engine."""

    def __init__(self, alerts: Any) -> None:
        self.alerts = alerts

    def handle_command(self, topic: str, payload: bytes, now: float) -> None:
        try:
            self.alerts.handle_command_message(topic, payload, now)
        except (sqlite3.Error, psycopg.Error):
            raise  # the store failed: end as designed; the broker hands the command back
        except Exception:
            # but one bad command must not end the pipeline: unacknowledged, the broker
            # would hand it back after the restart, and the pipeline would die again
            log.exception("alert command on %s failed; dropped", topic)
