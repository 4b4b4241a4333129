"""`carewatch run --config FILE`: the pipeline service against the configured broker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from carewatch.commands._common import add_broker_options, broker_from_args, load

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
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from carewatch.service import Service

    config = load(args.config)
    broker = broker_from_args(args, config)
    http = args.http or (config.http.host, config.http.port)
    from console.app import ConsoleStartError

    try:
        data_dir = Path(args.data_dir) if args.data_dir else None
        service = Service(config, broker=broker, http=http, data_dir=data_dir)
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
