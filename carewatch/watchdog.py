"""Telling people when the monitoring itself is down.

Resident alerts need data: while the broker link is down, or no data arrives, the detectors
hear no one and nobody is paged. The console's banner (`Health.monitoring`) shows it to
whoever looks at a screen; this module pages the integration endpoints and the district
centre's staff (tier 4 webhooks), the same receivers alert notices reach:

- `monitoring_down` once monitoring has been down for `alerts.monitoring_notify_after_s`
  (default 60 s: a broker restart takes seconds and pages no one), again every
  `alerts.monitoring_repeat_s` while it stays down;
- `monitoring_recovered` when it is up again after a `monitoring_down`;
- `heartbeat` every `alerts.heartbeat_s` to the integration endpoints, so that a receiver
  can raise its own alarm when heartbeats stop: a dead process or machine can say nothing
  itself (Alertmanager's "Watchdog" alert is the same idea).

The webhook document is the alert notices' (`"carewatch": "v1"`, signed the same way) with
no `notifications` and a `system` object instead.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from alerts.delivery import Sender, post_webhook

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 5  # a down or recovered notice is tried at this many checks before it is dropped


@dataclass
class MonitoringWatch:
    """Which system notices are due, from successive looks at `Health.monitoring()` (no I/O)."""

    notify_after_s: float = 60.0
    repeat_s: float = 900.0
    heartbeat_s: float = 300.0  # 0: none
    instance: str = "carewatch"
    down_since: float | None = None  # the first look that saw it down
    notified_at: float | None = None  # the last monitoring_down notice
    heartbeat_at: float = -math.inf

    def step(self, monitoring: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The notices due at `now`, each a `system` object."""
        out: list[dict[str, Any]] = []
        if monitoring["state"] == "down":
            if self.down_since is None:
                self.down_since = now
            if now - self.down_since >= self.notify_after_s and (
                    self.notified_at is None or now - self.notified_at >= self.repeat_s):
                self.notified_at = now
                out.append(self._notice("monitoring_down", monitoring, now))
        else:
            if self.notified_at is not None:
                out.append(self._notice("monitoring_recovered", monitoring, now))
            self.down_since = self.notified_at = None
        if self.heartbeat_s > 0 and now - self.heartbeat_at >= self.heartbeat_s:
            self.heartbeat_at = now
            out.append(self._notice("heartbeat", monitoring, now))
        return out

    def _notice(self, event: str, monitoring: dict[str, Any], now: float) -> dict[str, Any]:
        return {"event": event, "instance": self.instance, "at": now,
                "state": monitoring["state"], "down_since": self.down_since,
                "problems": monitoring["problems"]}


def system_body(notice: dict[str, Any], recipient: str) -> bytes:
    """The webhook document of one system notice."""
    return orjson.dumps({"carewatch": "v1", "recipient": recipient, "resident_id": None,
                         "notifications": [], "system": notice})


@dataclass
class _Pending:
    url: str
    recipient: str
    notice: dict[str, Any]
    attempts: int = 0


@dataclass
class Watchdog:
    """Looks at the monitoring every `check_s` on its own thread and sends what is due:
    paging notices to `pagers` (URL → recipient id) and heartbeats to `integrations`. A
    paging notice that fails is tried again at the next checks (up to SEND_ATTEMPTS)."""

    watch: MonitoringWatch
    monitoring: Callable[[], dict[str, Any]]
    clock: Any
    integrations: list[str]
    pagers: dict[str, str]  # webhook URL -> recipient id (integrations included)
    secret: bytes | None = None
    timeout_s: float = 5.0
    send: Sender = post_webhook
    check_s: float = 5.0
    sent: int = 0
    failed: int = 0
    _pending: list[_Pending] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 2 + 1)

    def check(self) -> None:
        """One look: queue what is due, then try everything queued."""
        now = float(self.clock.now())
        for notice in self.watch.step(self.monitoring(), now):
            if notice["event"] == "heartbeat":
                targets = {url: "integration" for url in self.integrations}
            else:
                targets = self.pagers
            for url, who in targets.items():
                if notice["event"] == "monitoring_recovered":  # a down still unsent is over
                    self._pending = [p for p in self._pending if not (
                        p.url == url and p.notice["event"] == "monitoring_down")]
                self._pending.append(_Pending(url, who, notice))
        keep: list[_Pending] = []
        held_back: set[str] = set()  # a URL whose earlier notice failed: keep their order
        for p in self._pending:
            if p.url in held_back:
                keep.append(p)
                continue
            body = system_body(p.notice, p.recipient)
            outcome, status, error = self.send(p.url, body, self.secret, f"{now:.3f}",
                                               self.timeout_s)
            p.attempts += 1
            if outcome == "sent":
                self.sent += 1
                continue
            log.warning("system notice %s to %s: %s %s", p.notice["event"], p.recipient,
                        status or "", error)
            if outcome == "retry" and p.notice["event"] != "heartbeat" \
                    and p.attempts < SEND_ATTEMPTS:
                keep.append(p)
                held_back.add(p.url)
            else:
                self.failed += 1
        self._pending = keep

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.check()
            except Exception:  # a watchdog that dies would page no one: log and go on
                log.exception("watchdog check failed")


def for_service(service: Any) -> Watchdog | None:
    """The watchdog of a `Service` from its config (None without any webhook to tell)."""
    return from_config(service.config, service.monitoring, service.clock,
                       instance=service.broker.client_id)


def from_config(config: Any, monitoring: Callable[[], dict[str, Any]], clock: Any,
                instance: str, heartbeats: bool = True) -> Watchdog | None:
    """A watchdog over `monitoring` paging the config's integration webhooks and tier-4
    staff (None without any webhook to tell); `heartbeats=False` for a watcher of other
    processes that send their own."""
    from alerts.delivery import load_secret

    a = config.alerts
    pagers = {url: "integration" for url in a.webhooks}
    for staff in config.staff:
        if staff.tier == 4 and staff.webhook:
            pagers.setdefault(staff.webhook, staff.id)
    if not pagers:
        return None
    watch = MonitoringWatch(a.monitoring_notify_after_s, a.monitoring_repeat_s,
                            a.heartbeat_s if heartbeats else 0.0, instance=instance)
    # looks often enough to page within a quarter of the notify time (and never spin)
    check_s = max(0.05, min(5.0, a.monitoring_notify_after_s / 4))
    return Watchdog(watch, monitoring, clock, list(a.webhooks), pagers,
                    secret=load_secret(a.webhook_secret_file, a.webhook_secret_env,
                                                      "alerts.webhook_secret_file"),
                    timeout_s=a.webhook_timeout_s, check_s=check_s)
