"""`carewatch run`: the pipeline service on the wall clock, fed by the MQTT edge.

One pipeline thread does all the work: it waits for the edge's wake-up or the next tick,
decodes what arrived in one batch, and ticks the detectors and the alert timers.
"""

from __future__ import annotations

import gc
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from carewatch.app import build_pipeline
from carewatch.clock import Clock, WallClock
from carewatch.http import MetricsServer
from carewatch.pipeline import Message, Pipeline
from config.models import BrokerSettings, Config
from ingest.mqtt import MqttEdge
from ingest.side import SidePublisher

log = logging.getLogger(__name__)

PipelineFactory = Callable[..., tuple[Pipeline, Callable[[], None]]]


FULL_COLLECTION_EVERY = 1_000  # young-generation collections between full ones (CPython: 10)


# A broker shutting down sends every connected device's Last Will for a while before our
# own connection drops. A tick that judged the first of them before the drop was known
# would count them as devices going offline (DeviceOffline holds wills sent around an
# outage): after an offline status, the next tick waits this long for more, or the drop.
WILL_SETTLE_S = 0.25
MAX_TICK_DELAY_S = 1.0


def tick_delay(now: float, due: float, offline_status_at: float) -> float:
    """Seconds to hold a tick due at `due`: until WILL_SETTLE_S after the last offline
    status, and never past `due + MAX_TICK_DELAY_S`."""
    wait = offline_status_at + WILL_SETTLE_S - now
    if wait <= 0:
        return 0.0
    return max(0.0, min(wait, due + MAX_TICK_DELAY_S - now))


class _Interpreter:
    """Process-wide settings for a latency-bound service, shared by the services of a
    process (tests start several): the first to start saves the interpreter's values, the
    last to stop puts them back.

    - the switch interval: the edge's thread gets the interpreter soon after a message
      lands, not up to 5 ms into a tick's NumPy work;
    - the objects alive at start-up (registry, parameter tables, engine, console) are
      frozen out of the cyclic collector: a full collection walked them all, stopping every
      thread for 100-400 ms under load (measured: the fall-latency outliers). Refcounting
      still frees them; only reference cycles among them wait for the last stop;
    - full collections after 1,000 young ones instead of 10: a bulk allocation (a routine
      issuing thousands of tasks) no longer triggers one full collection after another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0.0
        self._thresholds = gc.get_threshold()

    def hold(self, switch_interval_s: float) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getswitchinterval()
                self._thresholds = gc.get_threshold()
                gen0, gen1, _ = self._thresholds
                gc.set_threshold(gen0, gen1, FULL_COLLECTION_EVERY)
            self._users += 1
            sys.setswitchinterval(switch_interval_s)
            gc.collect()  # only live objects are frozen
            gc.freeze()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                sys.setswitchinterval(self._saved)
                gc.set_threshold(*self._thresholds)
                gc.unfreeze()


_INTERPRETER = _Interpreter()


class Service:
    """Edge + pipeline thread + HTTP. `start()`, then `stop()` (joins everything)."""

    def __init__(
        self,
        config: Config,
        broker: BrokerSettings | None = None,
        http: tuple[str, int] | None = None,
        clock: Clock | None = None,
        data_dir: Path | None = None,
        build: PipelineFactory = build_pipeline,
        console: Any = None,
        topics: list[str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self.broker = broker or config.broker
        from alerts.commands import COMMAND_SUBSCRIPTION
        from ingest.handoff import handoff_subscriptions
        from ingest.mqtt import STATUS_TOPIC, VITALS_TOPIC

        self.edge = MqttEdge(self.broker, self.clock, inbox_max=config.pipeline.queue_max,
                             manual_ack=config.pipeline.ack_after_handling,
                             enough=config.pipeline.linger_enough_messages,
                             topics=([VITALS_TOPIC, STATUS_TOPIC, COMMAND_SUBSCRIPTION,
                                      *handoff_subscriptions(None)]
                                     if topics is None else topics))
        self.data_dir = data_dir or Path(config.storage.data_dir)
        self.pipeline: Pipeline
        self.pipeline, self._close_pipeline = build(
            config, self.clock, self.edge, data_dir=self.data_dir
        )
        self.pipeline.between_detectors = self._fall_mid_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline")
        # work other threads hand to the pipeline thread (the console's reads of state)
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        # the four routines ("4 ones"): APScheduler wakes them on its thread; only their
        # daily checks (state store, alert engine) run here, a chunk per call
        self.routines: Any = None
        self.task_publisher: SidePublisher | None = None
        if self.pipeline.alerts is not None and config.routines.enabled:
            from routines.service import Routines

            # task events ride their own connection: a bulk issuance never delays an alert
            self.task_publisher = SidePublisher(self.broker, "tasks")
            self.routines = Routines(config, self.pipeline.devices, self.clock, self.data_dir,
                                     alerts=self.pipeline.alerts, state=self.pipeline.store,
                                     publisher=self.task_publisher)
            self.routines.runner = self.submit
        self.http: Any = None  # the console (ConsoleServer), or MetricsServer without alerts
        if http is not None:
            from console.server import for_service

            self.http = for_service(self, http, console) or MetricsServer(
                http[0], http[1], self.pipeline.metrics.registry, self.ready
            )
        self.error: BaseException | None = None
        # monotonic time of the pipeline loop's latest turn (it turns at least once a
        # tick): a thread alive but stuck stops it, which `Health` reports as down
        self.loop_at = time.monotonic()
        self._stopped = False
        self._holds_interpreter = False
        from carewatch.health import Health

        self.health = Health(self)
        self.health.register(self.pipeline.metrics.registry)
        from carewatch.watchdog import for_service as watchdog_for

        self.watchdog = watchdog_for(self)  # pages when the monitoring itself is down

    def ready(self) -> dict[str, object]:
        """/readyz: broker connected and subscribed, pipeline running, store writable, lag
        under its threshold; `status` says "ok" or why the service is degraded."""
        return {**self.health.ready(), "subscribed": self.edge.counters.subscribed}

    def monitoring(self) -> dict[str, Any]:
        """Whether residents are being monitored now (the console's banner): see
        `carewatch.health.Health.monitoring`."""
        return self.health.monitoring()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the pipeline thread (between batches); its result comes as a Future.
        Called from the pipeline thread itself, `fn` runs at once (waiting would deadlock)."""
        fut: Future[Any] = Future()
        if threading.current_thread() is self._thread:
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
            return fut
        if self._stop.is_set():
            fut.set_exception(RuntimeError("the pipeline is stopping"))
            return fut
        self._calls.put((fn, fut))
        self.edge.wakeup.set()
        return fut

    def _run_calls(self, fail: bool = False) -> None:
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            if fail:
                fut.set_exception(RuntimeError("the pipeline stopped"))
                continue
            try:
                fut.set_result(fn())
            except Exception as exc:  # the caller gets it; the pipeline goes on
                fut.set_exception(exc)

    def start(self) -> None:
        # process-wide switch interval and start-up objects frozen (see _Interpreter)
        _INTERPRETER.hold(self.config.pipeline.gil_switch_interval_ms / 1000.0)
        self._holds_interpreter = True
        if self.http is not None:
            self.http.start()
        self.edge.start()
        self._thread.start()
        if self.task_publisher is not None:
            self.task_publisher.start()
        if self.routines is not None:
            self.routines.start()
        if self.watchdog is not None:
            self.watchdog.start()

    def _loop(self) -> None:
        tick_s = self.config.pipeline.tick_s
        batch_max = self.config.pipeline.batch_max
        linger_s = self.config.pipeline.linger_ms / 1000.0
        enough = self.config.pipeline.linger_enough_messages
        edge, pipeline, clock = self.edge, self.pipeline, self.clock
        next_tick = clock.now() + tick_s
        try:
            while not self._stop.is_set():
                self.loop_at = time.monotonic()
                timeout = next_tick - clock.now()
                if timeout > 0 and not edge.inbox:
                    edge.wakeup.wait(timeout)
                if linger_s and 0 < len(edge.inbox) < batch_max:
                    # batch up for a moment, but not a fall, and no longer than it takes a
                    # step's worth to arrive (stop() waits at most a linger)
                    edge.enough.clear()  # then look: what paho set before is seen here
                    if not edge.fall_hint.is_set() and len(edge.inbox) < enough:
                        edge.enough.wait(min(linger_s, max(0.0, next_tick - clock.now())))
                edge.wakeup.clear()
                self._run_calls()
                edge.fall_hint.clear()  # whatever it flagged is drained below
                while edge.inbox:
                    pipeline.handle(self._drain())
                    if pipeline.urgent:  # a fall: acknowledged once its alert is stored
                        break
                    edge.ack_drained()
                    if clock.now() >= next_tick:
                        break
                now = clock.now()
                if pipeline.urgent and now < next_tick:
                    pipeline.fall_lane(now)  # at once; the regular tick keeps its time
                    edge.ack_drained()
                if now >= next_tick and not pipeline.urgent and (
                        hold := tick_delay(now, next_tick, pipeline.offline_status_at)):
                    edge.wakeup.wait(hold)  # a burst of wills may be a broker going down
                    continue  # (never a fall: that tick runs now)
                if now >= next_tick:
                    pipeline.link = (edge.counters.link_lost_at, edge.counters.link_back_at)
                    pipeline.tick(now)
                    edge.ack_drained()
                    m = pipeline.metrics
                    m.tick_seconds.set(clock.now() - now)
                    m.inbox_depth.set(len(edge.inbox))
                    m.inbox_dropped.set(edge.counters.inbox_dropped)
                    m.broker_connected.set(1 if edge.counters.connected else 0)
                    m.broker_dropped.set(edge.counters.broker_dropped)
                    next_tick = max(next_tick + tick_s, now)
        except BaseException as exc:  # surfaced by stop() and the health check
            self.error = exc
            log.exception("pipeline thread failed")
            raise

    def _drain(self) -> list[Message]:
        """One pipeline step of the inbox (`pipeline.batch_max` messages and
        `batch_max_bytes` of payload at most)."""
        settings = self.config.pipeline
        return self.edge.drain(settings.batch_max, settings.batch_max_bytes)

    def _fall_mid_tick(self) -> None:
        """Between two detectors of a tick: a fall that arrived meanwhile is handled now
        (its alert stored, published and its message acknowledged), not after the tick.
        Everything queued with it is decoded too; its samples wait for the next tick."""
        edge, pipeline = self.edge, self.pipeline
        if not edge.fall_hint.is_set():
            return
        edge.fall_hint.clear()  # before draining: a fall queued after this is seen next call
        while edge.inbox and not pipeline.urgent:
            pipeline.handle(self._drain())
        if pipeline.urgent:
            pipeline.fall_lane(self.clock.now())
        edge.ack_drained()

    def stop(self) -> None:
        """Stop everything, in order; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self.watchdog is not None:  # an orderly stop is not an outage to page about
            self.watchdog.stop()
        if self.routines is not None:
            # first: a running tick may be waiting for a check on the pipeline thread
            self.routines.stop()
        self._stop.set()
        self.edge.wakeup.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._run_calls(fail=True)
        # drain what already arrived so an orderly stop loses nothing it had acknowledged
        while self.edge.inbox and self.error is None:
            self.pipeline.handle(self._drain())
        if self.error is None:
            self.pipeline.tick()  # findings of the drained samples reach the alert store
            self.edge.ack_drained()
        self.edge.stop()
        if self.http is not None:
            # before the stores close: a request arriving now is refused, not answered 500
            # "Cannot operate on a closed database" (an acknowledgement then looked failed
            # for a reason staff cannot act on)
            self.http.stop()
        if self.routines is not None:
            self.routines.close()
        if self.task_publisher is not None:
            self.task_publisher.stop()
        self._close_pipeline()
        if self._holds_interpreter:
            self._holds_interpreter = False
            _INTERPRETER.release()
