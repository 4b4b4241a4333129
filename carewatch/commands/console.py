"""`carewatch console --supervisor URL ...`: one district console over several machines.

Each machine runs `carewatch run --workers N --machine k/M` (its share of the towns) and
serves a console over its own workers. This process asks every machine's supervisor for its
workers (`/workers`: towns and addresses) and serves the same district console over all of
them. Sign-in needs the same users file and session key everywhere (`--console-dir` on every
machine and here). Reports need the shared PostgreSQL store
(`storage.alerts_backend: postgresql`): SQLite stores stay on their machines.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from carewatch.commands._common import load
from carewatch.commands.run import parse_hostport

if TYPE_CHECKING:
    from config.models import Config
    from console.federation import WorkerLink


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", help="one district console over several machines' workers")
    p.add_argument("--config", required=True, help="registry / settings YAML file")
    p.add_argument("--supervisor", action="append", required=True, metavar="URL",
                   help="a machine's supervisor (its `run --workers N` --http address); "
                   "repeat for each machine")
    p.add_argument("--http", type=parse_hostport, default=None,
                   help="serve the console on HOST:PORT (default: the config's http settings)")
    p.add_argument("--data-dir", help="where reports are read from on SQLite (default: config)")
    p.add_argument("--console-dir", help="users file and session key, the same files as every "
                   "machine's (default: the data dir)")
    p.add_argument("--wait-s", type=float, default=60.0,
                   help="how long to wait for every supervisor to answer at start")
    p.set_defaults(func=main)


def fetch_workers(url: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """A supervisor's workers (`/workers`); OSError or ValueError when it cannot tell."""
    with urllib.request.urlopen(url.rstrip("/") + "/workers", timeout=timeout_s) as resp:
        doc = orjson.loads(resp.read())
    return list(doc["workers"])


def worker_links(config: Config, listed: list[tuple[str, list[dict[str, Any]]]]
                 ) -> list[WorkerLink]:
    """Every machine's workers as one list of `WorkerLink`s. ValueError when two workers
    claim one town or a town is not in the registry."""
    from console.federation import WorkerLink

    known = {t.id for t in config.towns}
    owner: dict[str, str] = {}
    links: list[WorkerLink] = []
    for url, workers in listed:
        for w in workers:
            where = f"{url} worker {w['worker']}"
            for town in w["towns"]:
                if town not in known:
                    raise ValueError(f"{where}: town {town!r} is not in the registry")
                if town in owner:
                    raise ValueError(f"town {town!r} is claimed by {owner[town]} and {where}")
                owner[town] = where
            links.append(WorkerLink(len(links), tuple(w["towns"]), _reachable(w["http"], url)))
    return links


def _reachable(worker_url: str, supervisor_url: str) -> str:
    """A worker's address as this process reaches it: a supervisor bound to every interface
    lists its workers at 0.0.0.0 (or ::), which is that machine, the one in its URL."""
    worker, machine = urlsplit(str(worker_url)), urlsplit(supervisor_url)
    if worker.hostname in ("0.0.0.0", "::") and machine.hostname:
        host = f"[{machine.hostname}]" if ":" in machine.hostname else machine.hostname
        return f"{worker.scheme}://{host}:{worker.port}"
    return str(worker_url).rstrip("/")


def main(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from console.gateway import create_gateway
    from console.server import ConsoleServer
    from console.settings import ConsoleSettings

    config = load(args.config)
    http = args.http or (config.http.host, config.http.port)
    listed: list[tuple[str, list[dict[str, Any]]]] = []
    deadline = time.monotonic() + args.wait_s
    pause = threading.Event()
    for url in args.supervisor:
        while True:
            try:
                listed.append((url, fetch_workers(url)))
                break
            except (OSError, ValueError, KeyError) as exc:
                if time.monotonic() > deadline:
                    print(f"carewatch console: {url} did not list its workers: {exc}",
                          file=sys.stderr)
                    return 1
                pause.wait(0.5)  # the machine may still be starting
    try:
        links = worker_links(config, listed)
    except ValueError as exc:
        print(f"carewatch console: {exc}", file=sys.stderr)
        return 2
    missing = sorted({t.id for t in config.towns} - {t for w in links for t in w.towns})
    if missing:
        print(f"carewatch console: no machine serves towns {', '.join(missing)}",
              file=sys.stderr)
    data_dir = Path(args.data_dir or config.storage.data_dir)
    shared = Path(args.console_dir) if args.console_dir else data_dir
    settings = ConsoleSettings(users_file=shared / "users.json",
                               secret_file=shared / "console.secret")
    workers_doc = orjson.dumps({"workers": [
        {"worker": w.index, "towns": list(w.towns), "http": w.url + "/"} for w in links]})
    app = create_gateway(config, links, data_dir, registry=CollectorRegistry(),
                         ready=lambda: {"machines": len(listed)},
                         routes={"/workers": lambda: (200, workers_doc, "application/json")},
                         settings=settings)
    server = ConsoleServer(app, http[0], http[1], lifespan="on")
    server.start()
    host, port = server.address
    print(f"carewatch: district console http://{host}:{port}/ over {len(links)} workers "
          f"on {len(listed)} machines", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    return 0
