"""`carewatch run --workers N`: N pipeline processes, each owning a disjoint set of towns.

Per-device state lives in exactly one process: worker k subscribes only to the topics of its
towns (`carewatch/v1/{town}/+/vitals`, `/status`, `/cmd/alerts`), keeps the state and alert
store of their residents (`DATA_DIR/worker-k`, or the shared PostgreSQL store), and uses its
own persistent MQTT session (named after its towns: `carewatch.sessions`), so a worker that
dies and is restarted picks up what was published meanwhile, and after a change of partition
the sessions left behind are handed over to the towns' new owners. The supervisor restarts
dead workers with backoff; a town is never left unowned for longer than a restart.

The partition is a pure function of the registry and N (towns sorted by resident count,
each given to the least-loaded worker), so every worker computes its own share and a
restart finds the same towns in the same data directory.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from config.models import Config

log = logging.getLogger(__name__)


def probe_subscribed(port: int, host: str = "127.0.0.1") -> bool:
    """True when the service on `port` reports its MQTT subscriptions acknowledged."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as resp:
            return bool(orjson.loads(resp.read()).get("subscribed"))
    except OSError:  # not up yet, or 503 (not ready)
        return False


def probe_samples(port: int, host: str = "127.0.0.1") -> float:
    """Samples the service on `port` has stored (from /metrics); -1 when it cannot be read."""
    return probe_metric(port, "carewatch_samples_accepted_total", host)


def probe_metric(port: int, name: str, host: str = "127.0.0.1") -> float:
    """One unlabelled metric of the service on `port`; -1 when it cannot be read."""
    return probe_metrics(port, (name,), host)[name]


def probe_metrics(port: int, names: tuple[str, ...], host: str = "127.0.0.1"
                  ) -> dict[str, float]:
    """Several unlabelled metrics from one read of /metrics (each read costs the service
    ~5 ms of CPU); -1 for any that cannot be read."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return dict.fromkeys(names, -1.0)
    out = {}
    for name in names:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        out[name] = float(match.group(1)) if match else -1.0
    return out


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on (host, port) now (as uvicorn binds: SO_REUSEADDR,
    so connections of an earlier process in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def partition_towns(config: Config, workers: int, towns: list[str] | None = None,
                    what: str = "workers") -> list[list[str]]:
    """Towns (all of the registry's, or `towns`) per worker, balanced by resident count;
    deterministic. ValueError when some worker would own no town: it would be idle at best
    (and `what` names the parts in the message: workers, machines)."""
    if workers < 1:
        raise ValueError(f"{what} must be >= 1")
    counts = {t.id: 0 for t in config.towns if towns is None or t.id in towns}
    if workers > len(counts):
        raise ValueError(f"{workers} {what} for {len(counts)} towns: one would own no town "
                         f"(use at most {len(counts)})")
    for r in config.residents:
        if r.town in counts:
            counts[r.town] += 1
    load = [0] * workers
    parts: list[list[str]] = [[] for _ in range(workers)]
    for town in sorted(counts, key=lambda t: (-counts[t], t)):
        k = min(range(workers), key=lambda i: (load[i], i))
        parts[k].append(town)
        load[k] += counts[town]
    return [sorted(p) for p in parts]


def parse_share(value: str, what: str) -> tuple[int, int]:
    """"k/N" (0 <= k < N) as (k, N); ValueError naming `what` otherwise."""
    k, sep, n = value.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise ValueError(f"{what}: expected k/N with 0 <= k < N, got {value!r}")
    return int(k), int(n)


def machine_towns(config: Config, machine: str | None) -> list[str] | None:
    """The towns of machine k of M (`--machine k/M`: the registry's towns split over M
    machines like workers over towns, so every machine computes the same split); None
    without `--machine` (this machine runs every town)."""
    if machine is None:
        return None
    k, m = parse_share(machine, "--machine")
    return partition_towns(config, m, what="machines")[k]


def worker_config(config: Config, towns: list[str]) -> Config:
    """The registry restricted to `towns` (their residents); settings unchanged."""
    keep = set(towns)
    return config.model_copy(
        update={
            "residents": [r for r in config.residents if r.town in keep],
        }
    )


def worker_topics(towns: list[str]) -> list[str]:
    """What the owner of `towns` subscribes to: their devices, their alert commands, and
    what left-behind sessions hand over to them (`ingest.handoff`)."""
    from ingest.handoff import handoff_subscriptions

    topics = []
    for town in towns:
        topics += [
            f"carewatch/v1/{town}/+/vitals",
            f"carewatch/v1/{town}/+/status",
            f"carewatch/v1/{town}/cmd/alerts",
        ]
    return topics + handoff_subscriptions(towns)


def foreign_devices(config: Config, towns: list[str]) -> dict[str, str]:
    """Devices registered to other workers' towns -> their town (for `wrong_town`)."""
    keep = set(towns)
    return {r.device: r.town for r in config.residents if r.town not in keep}


# A worker that exits this many times within this window is crash-looping: down for the
# watchdog even while the latest restart runs (each outage alone is shorter than the time
# a page waits for, so looking at one outage at a time never paged)
CRASH_LOOP_EXITS = 3
CRASH_LOOP_WINDOW_S = 600.0


@dataclass
class _Child:
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff_s: float = 1.0
    started_at: float = field(default=0.0)
    spawn_failures: int = 0  # restarts the system refused (see Supervisor._respawn)
    exits: list[float] = field(default_factory=list)  # monotonic times, the latest few

    def crash_looping(self, now: float) -> int:
        """How many times it exited in the last CRASH_LOOP_WINDOW_S, when that makes a
        crash loop (else 0): each restart may be quick, but its towns keep going dark."""
        recent = [t for t in self.exits if now - t < CRASH_LOOP_WINDOW_S]
        return len(recent) if len(recent) >= CRASH_LOOP_EXITS else 0


class Supervisor:
    """Starts N worker processes and keeps them running until `stop()`."""

    def __init__(self, argv_for: list[list[str]]) -> None:
        self.children = [_Child(i, argv) for i, argv in enumerate(argv_for)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor")

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._thread.start()

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.argv)
        child.started_at = time.monotonic()
        print(f"carewatch: worker {child.index} started (pid {child.proc.pid})", flush=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.proc is None:
                    if now >= child.next_start:
                        self._respawn(child, now)
                    continue
                code = child.proc.poll()
                if code is None:
                    if now - child.started_at > 60:
                        child.backoff_s = 1.0  # ran a minute: a later crash starts fresh
                    continue
                child.restarts += 1
                child.exits = [*child.exits[-(CRASH_LOOP_EXITS - 1):], now]
                child.proc = None
                child.next_start = now + child.backoff_s
                log.warning(
                    "worker %d exited with %s; restarting in %.0f s",
                    child.index,
                    code,
                    child.backoff_s,
                )
                child.backoff_s = min(30.0, child.backoff_s * 2)

    def _respawn(self, child: _Child, now: float) -> None:
        """`_spawn`, and if the system refuses (out of processes or memory, the executable
        gone mid-upgrade) try again later: an exception here would end the watch, and with
        it every later restart, leaving the worker's towns unwatched."""
        try:
            self._spawn(child)
        except OSError as exc:
            child.spawn_failures += 1
            child.next_start = now + child.backoff_s
            log.error("worker %d could not be started (%s); trying again in %.0f s",
                      child.index, exc, child.backoff_s)
            child.backoff_s = min(30.0, child.backoff_s * 2)

    def alive(self) -> list[bool]:
        return [c.proc is not None and c.proc.poll() is None for c in self.children]

    def pids(self) -> list[int | None]:
        return [c.proc.pid if c.proc is not None else None for c in self.children]

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)


def supervisor_argv(config_path: Path, workers: int, broker_url: str, http_port: int,
                    data_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """`carewatch run --workers N` on loopback, quiet (benchmarks and tests start it so),
    with `extra` options (e.g. `--machine k/M`)."""
    return [sys.executable, "-m", "carewatch.cli", "--log-level", "WARNING", "run",
            "--config", str(config_path), "--workers", str(workers), "--broker", broker_url,
            "--http", f"127.0.0.1:{http_port}", "--data-dir", str(data_dir), *extra]


def worker_argv(
    config_path: str,
    index: int,
    workers: int,
    data_dir: Path,
    http: tuple[str, int] | None,
    passed_on: list[str],
    console_dir: Path | None = None,
    towns: list[str] | None = None,
) -> list[str]:
    """Worker `index` of `workers`: its data dir under `data_dir`, the console's users file
    and key in `console_dir` (default `data_dir`), `passed_on` (broker, machine), and the
    towns the supervisor gave it (`--towns`): a worker restarted after the registry file
    was edited would otherwise work out a share of its own, and leave a town unowned."""
    argv = [
        sys.executable,
        "-m",
        "carewatch.cli",
        "run",
        "--config",
        config_path,
        "--worker",
        f"{index}/{workers}",
        *(["--towns", ",".join(towns)] if towns is not None else []),
        "--data-dir",
        str(data_dir / f"worker-{index}"),
        "--console-dir",
        str(console_dir or data_dir),
    ]
    if http is not None:
        argv += ["--http", f"{http[0]}:{http[1] + 1 + index}"]
    return argv + passed_on
