"""`carewatch demo`: one command, no hardware. Starts a local Mosquitto, the pipeline, a
simulated fleet (with scripted events in the first minutes) and the HTTP endpoints, prints
where everything is, and shuts it all down on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from carewatch.commands._common import add_broker_options
from carewatch.commands.run import parse_hostport

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "demo.yaml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="local broker + pipeline + simulated fleet + console")
    p.add_argument("--residents", type=int, default=60, help="simulated residents (default 60)")
    p.add_argument("--data-dir", default="var/demo", help="registry, alert store, history")
    p.add_argument(
        "--http",
        type=parse_hostport,
        default=("127.0.0.1", 8080),
        help="HOST:PORT for the console and /metrics (a free port if taken)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="simulated time per real second")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument("--seed", type=int, default=7)
    add_broker_options(p)
    p.set_defaults(func=main)


def _free_http(host: str, port: int) -> tuple[str, int]:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
            return host, port
        except OSError:
            s.bind((host, 0))
            return host, int(s.getsockname()[1])


def main(args: argparse.Namespace) -> int:
    from carewatch.service import Service
    from config.generate import write_demo_registry
    from config.loader import load_config
    from config.models import BrokerSettings
    from ingest.broker import MosquittoProcess

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = data_dir / "registry.yaml"
    if not registry.exists():
        write_demo_registry(registry, args.residents, seed=args.seed)
    config = load_config(registry)
    config = config.model_copy(
        update={
            "storage": config.storage.model_copy(
                update={
                    "data_dir": str(data_dir),
                    "sqlite": config.storage.sqlite.model_copy(
                        update={"path": str(data_dir / "history.db")}
                    ),
                }
            )
        }
    )

    broker: MosquittoProcess | None = None
    # the pipeline's and the fleet's accounts: (username, password file) or None (external)
    pipeline_auth: tuple[str | None, str | None] = (args.username, args.password_file)
    fleet_auth: tuple[str | None, str | None] = (args.username, args.password_file)
    if args.broker:
        broker_url = args.broker
    else:
        # anonymous access off here too: provision the demo's pipeline and fleet gateway
        from carewatch.security.acl import GATEWAY_PREFIX, PIPELINE_USER
        from carewatch.security.provision import GatewaySpec, provision

        creds = provision(config, data_dir / "credentials", gateways=[GatewaySpec("fleet")])
        broker = MosquittoProcess(workdir=data_dir / "mosquitto", auth=creds.auth,
                                  own_process_group=True)
        broker.start()
        broker_url = broker.url
        pipeline_auth = (PIPELINE_USER, str(creds.secret_path(PIPELINE_USER)))
        fleet_user = GATEWAY_PREFIX + "fleet"
        fleet_auth = (fleet_user, str(creds.secret_path(fleet_user)))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    http = _free_http(*args.http)
    from console.settings import ConsoleSettings
    from console.users import UserStore, ensure_demo_users

    logins = ensure_demo_users(UserStore(data_dir / "users.json", config))
    service = Service(
        config,
        broker=BrokerSettings(url=broker_url, client_id="carewatch-demo",
                              username=pipeline_auth[0], password_file=pipeline_auth[1]),
        http=http,
        data_dir=data_dir,
        console=ConsoleSettings(demo=True),
    )
    fleet: subprocess.Popen[bytes] | None = None
    try:
        service.start()
        alerts: Any = service.pipeline.alerts
        alerts.add_listener(_print_event)
        cmd = [
            sys.executable,
            "-m",
            "carewatch.cli",
            "simulate",
            "--registry",
            str(registry),
            "--broker",
            broker_url,
            "--speed",
            str(args.speed),
            "--seed",
            str(args.seed),
            "--interval-s",
            "5",
        ]
        if fleet_auth[0]:
            cmd += ["--username", fleet_auth[0]]
        if fleet_auth[1]:
            cmd += ["--password-file", fleet_auth[1]]
        if DEMO_SCENARIO.exists():
            cmd += ["--scenario", str(DEMO_SCENARIO)]
        fleet = subprocess.Popen(cmd)
        host, port = service.http.address if service.http else http
        sign_ins = "".join(f"               {sid:24s} {pw}\n" for sid, pw in logins)
        print(
            f"""
CareWatch demo is running
  console    http://{host}:{port}/   (demo sign-ins: staff id, password)
{sign_ins}  broker     {broker_url}   (Mosquitto{" child process" if broker else ""})
  metrics    http://{host}:{port}/metrics   (also /healthz, /readyz)
  registry   {registry}  ({len(config.residents)} residents in {len(config.towns)} towns)
  data       {data_dir}
  fleet      carewatch simulate (pid {fleet.pid}), scripted events in the first minutes
  watch alerts: {_watch_hint(broker_url, data_dir if broker else None)}
Press Ctrl-C to stop.
""",
            flush=True,
        )
        deadline = args.duration or None
        waited = 0.0
        while not stop.wait(0.5):
            waited += 0.5
            if deadline is not None and waited >= deadline:
                break
            if service.error is not None or (fleet.poll() not in (None, 0)):
                print("demo: a component stopped unexpectedly; shutting down", file=sys.stderr)
                return 1
    finally:
        if fleet is not None and fleet.poll() is None:
            # SIGTERM, not SIGINT: a shell ignores SIGINT in its background jobs, and a fleet
            # killed after the wait below vanishes at once, so the broker would publish its
            # devices' Last Wills and the pipeline open an offline alert for each
            fleet.send_signal(signal.SIGTERM)
            try:
                fleet.wait(timeout=10)
            except subprocess.TimeoutExpired:
                fleet.kill()
                fleet.wait()
        service.stop()
        if broker is not None:
            broker.stop()
        print("CareWatch demo stopped.", flush=True)
    return 0


def _watch_hint(broker_url: str, data_dir: Path | None) -> str:
    """A mosquitto_sub command for the alert topics (reads the console's password file)."""
    port = broker_url.rsplit(":", 1)[-1]
    auth = ""
    if data_dir is not None:
        pw = data_dir / "credentials" / "passwords" / "svc.console.pw"
        auth = f' -u svc.console -P "$(cat {pw})"'
    return f"mosquitto_sub -p {port}{auth} -t 'carewatch/v1/+/alerts/#' -v"


def _print_event(event: dict[str, Any]) -> None:
    print(
        f"[alert] {event.get('state', '?'):12s} tier {event.get('tier')} "
        f"{event.get('severity', '?'):8s} {event.get('kind', '?'):20s} "
        f"{event.get('resident_id', '?')} ({event.get('town_id', '?')}): "
        f"{event.get('message', '')}",
        flush=True,
    )
