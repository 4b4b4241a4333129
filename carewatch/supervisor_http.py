"""What the supervisor of `run --workers N` serves on `--http` (the workers use the ports
after it): the district console over every worker (`console.gateway`), `/healthz`,
`/readyz` (every worker alive and subscribed), `/workers` (each worker's towns, pid,
restarts and its own console/metrics address) and `/metrics` (worker up and restart
counts), so one address serves the on-call room and tells an operator where everything is."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from carewatch.workers import CRASH_LOOP_WINDOW_S, Supervisor, probe_subscribed
from config.models import Config
from console.federation import WorkerDown, WorkerLink, down_problem
from console.server import ConsoleServer
from console.settings import ConsoleSettings


class _WorkerCollector:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("carewatch_worker_up", "1 while the worker process runs",
                               labels=["worker"])
        restarts = CounterMetricFamily("carewatch_worker_restarts",
                                       "times the supervisor restarted the worker",
                                       labels=["worker"])
        for child, alive in zip(self.supervisor.children, self.supervisor.alive(), strict=True):
            up.add_metric([str(child.index)], 1.0 if alive else 0.0)
            restarts.add_metric([str(child.index)], float(child.restarts))
        yield up
        yield restarts


def workers_monitoring(supervisor: Supervisor, host: str, ports: list[int],
                       towns: list[list[str]], town_names: dict[str, str]
                       ) -> Callable[[], dict[str, Any]]:
    """The supervisor's look at its workers for its watchdog: "down" while any worker is
    not running, or runs without answering subscribed (hung, or still starting), with a
    `worker_down` problem naming its towns. A restart that takes seconds pages no one: the
    watchdog waits `alerts.monitoring_notify_after_s` (60 s) before paging."""

    def look() -> dict[str, Any]:
        problems = []
        now = time.monotonic()
        for child, alive in zip(supervisor.children, supervisor.alive(), strict=True):
            looping = child.crash_looping(now)
            if looping:
                reason = (f"crash-looping: exited {looping} times in "
                          f"{CRASH_LOOP_WINDOW_S / 60:.0f} min")
            elif alive and probe_subscribed(ports[child.index], host):
                continue
            else:
                reason = "not answering" if alive else "not running"
            down = WorkerDown(child.index, tuple(towns[child.index]), reason)
            problems.append(down_problem(down, town_names))
        return {"state": "down" if problems else "ok", "problems": problems}

    return look


def supervisor_server(supervisor: Supervisor, host: str, port: int, towns: list[list[str]],
                      config: Config, data_dir: Path, console_dir: Path | None = None
                      ) -> ConsoleServer:
    """The supervisor's HTTP server; worker k is on `port + 1 + k`."""
    from console.gateway import create_gateway

    registry = CollectorRegistry()
    registry.register(_WorkerCollector(supervisor))
    ports = [port + 1 + k for k in range(len(towns))]

    def ready() -> dict[str, object]:
        return {"workers_alive": all(supervisor.alive()),
                "workers_subscribed": all(probe_subscribed(p, host) for p in ports)}

    def workers() -> tuple[int, bytes, str]:
        # alive: the process runs; answering: it also answers, subscribed (not hung)
        doc = [{"worker": c.index, "towns": towns[c.index], "pid": pid, "alive": alive,
                "answering": alive and probe_subscribed(ports[c.index], loopback_for(host)),
                "restarts": c.restarts, "http": f"http://{host}:{ports[c.index]}/"}
               for c, pid, alive in zip(supervisor.children, supervisor.pids(),
                                        supervisor.alive(), strict=True)]
        return 200, orjson.dumps({"workers": doc}), "application/json"

    local = _url_host(loopback_for(host))
    links = [WorkerLink(k, tuple(t), f"http://{local}:{ports[k]}") for k, t in enumerate(towns)]
    shared = console_dir or data_dir
    settings = ConsoleSettings(users_file=shared / "users.json",
                               secret_file=shared / "console.secret")
    app = create_gateway(config, links, data_dir, registry=registry, ready=ready,
                         routes={"/workers": workers}, settings=settings)
    return ConsoleServer(app, host, port, lifespan="on")


def loopback_for(host: str) -> str:
    """Where this machine reaches a server bound to `host` (a wildcard: its loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
