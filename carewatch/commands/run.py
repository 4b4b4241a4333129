"""`carewatch run --config FILE`: the pipeline service against the configured broker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from carewatch.commands._common import add_broker_options, broker_from_args, load
from config.models import Config

log = logging.getLogger(__name__)


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
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
    p.add_argument("--worker", help=argparse.SUPPRESS)  # "k/N": set by the supervisor
    # the supervisor's data dir: its users file and session key are every worker's too
    p.add_argument("--console-dir", help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from carewatch.service import Service

    config = load(args.config)
    broker = broker_from_args(args, config)
    http = args.http or (config.http.host, config.http.port)
    if args.workers > 1 and not args.worker:
        return _supervise(args, config, http)
    topics = None
    foreign: dict[str, str] = {}
    if args.worker:
        from carewatch.workers import foreign_devices, partition_towns, worker_config, worker_topics

        index, _, total = args.worker.partition("/")
        towns = partition_towns(config, int(total))[int(index)]
        foreign = foreign_devices(config, towns)
        config = worker_config(config, towns)
        topics = worker_topics(towns)
        broker = broker.model_copy(update={"client_id": f"{broker.client_id}-w{index}"})
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
    except ConsoleStartError as exc:
        print(f"carewatch: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    host, port = service.http.address if service.http else ("-", 0)
    print(
        f"carewatch: pipeline running; broker {broker.url}; console http://{host}:{port}/ "
        f"(metrics /metrics)",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            if service.error is not None:
                return 1
    finally:
        service.stop()
    return 0


def _supervise(args: argparse.Namespace, config: Config, http: tuple[str, int]) -> int:
    """The supervisor of `--workers N`: starts the workers, restarts any that die."""
    from pathlib import Path

    from carewatch.workers import Supervisor, partition_towns, worker_argv

    parts = partition_towns(config, args.workers)
    data_dir = Path(args.data_dir or config.storage.data_dir)
    broker_args: list[str] = []
    for flag in ("broker", "username", "password_file"):
        value = getattr(args, flag, None)
        if value:
            broker_args += [f"--{flag.replace('_', '-')}", value]
    argvs = [
        worker_argv(args.config, k, args.workers, data_dir, http, broker_args)
        for k in range(args.workers)
    ]
    supervisor = Supervisor(argvs)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    supervisor.start()
    from carewatch.supervisor_http import supervisor_server

    server = supervisor_server(supervisor, http[0], http[1], parts, config, data_dir)
    server.start()
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
        server.stop()
        supervisor.stop()
    return 0
