"""`carewatch run --config FILE`: the pipeline service against the configured broker."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from carewatch.commands._common import add_broker_options, broker_from_args, load
from config.models import Config

log = logging.getLogger(__name__)


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port 0-65535, got {value!r}")
    return host, int(port)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the pipeline service against the configured broker")
    p.add_argument("--config", required=True, help="registry / settings YAML file")
    add_broker_options(p)
    p.add_argument(
        "--http",
        type=parse_hostport,
        default=None,
        help="serve the console and /metrics on HOST:PORT (default: the config's "
        "http settings, 127.0.0.1:8080)",
    )
    p.add_argument("--data-dir", help="alert store and state directory (default: config)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N worker processes, each owning a disjoint set of towns (default 1: one process)",
    )
    p.add_argument(
        "--machine",
        help="k/M: run only machine k's share of the registry's towns (0-based) when M "
        "machines share one registry; devices of other machines' towns are rejected as "
        "wrong_town",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # "k/N": set by the supervisor
    p.add_argument("--towns", help=argparse.SUPPRESS)  # the worker's towns, from its supervisor
    p.add_argument(
        "--console-dir",
        help="where the console's users file and session key live (default: the data dir); "
        "with --workers, every worker uses the supervisor's; give every machine of a "
        "district the same files, and one sign-in is good on all of them",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from carewatch.service import Service

    config = load(args.config)
    broker = broker_from_args(args, config)
    http = args.http or (config.http.host, config.http.port)
    from carewatch.sessions import Session, hand_over_left_behind, session_id
    from carewatch.workers import (
        foreign_devices,
        machine_towns,
        parse_share,
        partition_towns,
        worker_config,
        worker_topics,
    )

    try:
        mine = machine_towns(config, args.machine)
        share = parse_share(args.worker, "--worker") if args.worker else None
        given = _given_towns(args.towns, config) if share is not None else None
        count = share[1] if share is not None else args.workers
        # a worker takes the share its supervisor gave it (`--towns`): the registry file may
        # have changed since, and a share worked out again would leave a town unowned
        parts = partition_towns(config, count, mine) if count > 1 and given is None else None
    except ValueError as exc:
        print(f"carewatch run: {exc}", file=sys.stderr)
        return 2
    if parts is not None and share is None:
        return _supervise(args, config, http, parts)
    topics = None
    foreign: dict[str, str] = {}
    towns = given if given is not None else (
        mine if parts is None or share is None else parts[share[0]])
    if towns is not None:
        foreign = foreign_devices(config, towns)
        config = worker_config(config, towns)
        topics = worker_topics(towns)
    # every process needs its own MQTT session, named after the towns it owns: a shared
    # client id would have the broker hand the session back and forth between them, and one
    # named after a worker number would, after a change of partition, resume a session
    # queued for towns another process owns now (carewatch.sessions)
    client_id = session_id(broker_id(args, config), towns)
    if client_id != broker.client_id:
        broker = broker.model_copy(update={"client_id": client_id})
    from config.secrets import SecretFileError
    from console.app import ConsoleStartError
    from console.settings import ConsoleSettings

    console = None
    if args.console_dir:
        shared = Path(args.console_dir)
        console = ConsoleSettings(users_file=shared / "users.json",
                                  secret_file=shared / "console.secret")
    try:
        data_dir = Path(args.data_dir) if args.data_dir else None
        service = Service(config, broker=broker, http=http, data_dir=data_dir, topics=topics,
                          console=console)
        service.pipeline.decoder.foreign_towns = foreign
    except (ConsoleStartError, SecretFileError) as exc:
        print(f"carewatch: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    handoff = None
    if share is None:  # the top process of its data directory (a worker's is the supervisor)
        handoff = hand_over_left_behind(
            broker, service.data_dir, [Session(client_id, service.edge.topics)],
            lambda: service.edge.counters.subscribed, stop)
    host, port = service.http.address if service.http else ("-", 0)
    print(
        f"carewatch: pipeline running; broker {broker.url}; console http://{host}:{port}/ "
        f"(metrics /metrics)",
        flush=True,
    )
    # a worker outliving its supervisor (killed with -9) would hold its towns' sessions and
    # ports against the workers of the next supervisor: it stops, as on SIGTERM
    parent = os.getppid() if share is not None else None
    try:
        while not stop.wait(1.0):
            if service.error is not None:
                return 1
            if parent is not None and os.getppid() != parent:
                log.warning("worker %s: the supervisor is gone; stopping", args.worker)
                break
    finally:
        stop.set()  # ends a hand-over still waiting
        if handoff is not None:
            handoff.join(timeout=35)
        service.stop()
    return 0


def _given_towns(raw: str | None, config: Config) -> list[str] | None:
    """The towns of `--towns a,b` (ValueError naming any the registry lacks)."""
    if raw is None:
        return None
    given = [t for t in raw.split(",") if t]
    unknown = sorted(set(given) - {t.id for t in config.towns})
    if unknown:
        raise ValueError(f"--towns names towns the registry lacks: {', '.join(unknown)}")
    return given


def _supervise(args: argparse.Namespace, config: Config, http: tuple[str, int],
               parts: list[list[str]]) -> int:
    """The supervisor of `--workers N` (worker k owns the towns `parts[k]`): starts the
    workers, restarts any that die."""
    from pathlib import Path

    from carewatch.sessions import Session, hand_over_left_behind, session_id
    from carewatch.supervisor_http import loopback_for
    from carewatch.workers import (
        Supervisor,
        port_free,
        probe_subscribed,
        worker_argv,
        worker_topics,
    )

    data_dir = Path(args.data_dir or config.storage.data_dir)
    console_dir = Path(args.console_dir) if args.console_dir else data_dir
    passed_on: list[str] = []
    for flag in ("broker", "username", "password_file", "machine"):
        value = getattr(args, flag, None)
        if value:
            passed_on += [f"--{flag.replace('_', '-')}", value]
    argvs = [
        worker_argv(args.config, k, args.workers, data_dir, http, passed_on, console_dir,
                    parts[k])
        for k in range(args.workers)
    ]
    # worker k serves its console on --http's port + 1 + k: a port taken now would have that
    # worker crash-loop (its towns unwatched) behind a start that looked fine
    ports = [http[1] + k for k in range(args.workers + 1)]
    taken = [p for p in ports if not port_free(http[0], p)]
    if taken:
        print(f"carewatch: port {', '.join(map(str, taken))} on {http[0]} is in use; the "
              f"supervisor takes --http's port and worker k port + 1 + k "
              f"({ports[0]}-{ports[-1]} here): choose another --http", file=sys.stderr)
        return 2
    supervisor = Supervisor(argvs)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    supervisor.start()
    base = broker_id(args, config)
    worker_ports = [http[1] + 1 + k for k in range(len(parts))]
    handoff = hand_over_left_behind(
        broker_from_args(args, config), data_dir,
        [Session(session_id(base, towns), worker_topics(towns)) for towns in parts],
        lambda: all(probe_subscribed(p, loopback_for(http[0])) for p in worker_ports), stop)
    from carewatch.supervisor_http import supervisor_server

    server = supervisor_server(supervisor, http[0], http[1], parts, config, data_dir,
                               console_dir)
    server.start()
    from carewatch.clock import WallClock
    from carewatch.supervisor_http import workers_monitoring
    from carewatch.watchdog import from_config

    # a worker that crash-loops or hangs pages the district (it cannot page for itself)
    watchdog = from_config(config, workers_monitoring(
        supervisor, loopback_for(http[0]), [http[1] + 1 + k for k in range(len(parts))], parts,
        config.town_names()), WallClock(), instance=f"{broker_id(args, config)}-supervisor",
        heartbeats=False)
    if watchdog is not None:
        watchdog.start()
    print(f"carewatch: district console http://{http[0]}:{http[1]}/ "
          f"(every town; workers /workers)", flush=True)
    for k, towns in enumerate(parts):
        print(
            f"carewatch: worker {k} owns {len(towns)} towns: {', '.join(towns)}; "
            f"http://{http[0]}:{http[1] + 1 + k}/metrics",
            flush=True,
        )
    try:
        stop.wait()
    finally:
        if handoff is not None:
            handoff.join(timeout=35)
        if watchdog is not None:
            watchdog.stop()
        server.stop()
        supervisor.stop()
    return 0


def broker_id(args: argparse.Namespace, config: Config) -> str:
    """The MQTT client id this machine's processes start from (its `-m{k}` included)."""
    base = broker_from_args(args, config).client_id
    return base + (f"-m{args.machine.split('/')[0]}" if args.machine else "")
