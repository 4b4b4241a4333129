"""`carewatch simulate`: a simulated device fleet, live over MQTT or recorded to a replay file."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from carewatch.commands._common import add_broker_options, broker_from_args
from config.generate import write_demo_registry
from config.loader import load_config
from config.models import Config
from simulators.engine import Simulation
from simulators.scenario import Scenario, ScenarioError

log = logging.getLogger(__name__)
RECORD_START = 1764316800.0  # 2025-11-28 16:00 UTC (midnight in Asia/Shanghai): reproducible


def register(sub: Any) -> None:
    p = sub.add_parser("simulate", help="a simulated device fleet (live MQTT or --record FILE)",
                       description=__doc__)
    p.add_argument("--residents", type=int, help="fleet size when the registry is generated "
                   "(default 200, or the scenario's)")
    p.add_argument("--hours", type=float, help="simulated hours (default 24 recorded; live: until "
                   "stopped)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--interval-s", type=float, help="sampling interval, s (default 10)")
    p.add_argument("--batch", type=int, help="samples per message, 1..600 (default 1)")
    p.add_argument("--registry", default="var/sim-registry.yaml",
                   help="registry file: read if it exists, else written (default %(default)s)")
    p.add_argument("--config", help="alias of --registry for an existing deployment config")
    p.add_argument("--truth", help="write the injected events (JSON lines) here")
    p.add_argument("--record", help="write a replay file instead of publishing")
    p.add_argument("--speed", type=float, default=1.0, help="time acceleration (60 = an hour a "
                   "minute)")
    p.add_argument("--random-events", type=float, help="random events per resident-day")
    p.add_argument("--scenario", help="scenario YAML (events and defaults)")
    p.add_argument("--faults", action="store_true", help="mix in the contract's bad inputs")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--start", type=float, help="start, epoch s (default: now live; "
                   f"{RECORD_START:.0f} recorded)")
    p.add_argument("--connections", type=int, default=2, help="shared MQTT connections")
    p.add_argument("--lwt-devices", type=int, default=0,
                   help="devices with a connection (and Last Will) of their own")
    add_broker_options(p)
    p.set_defaults(func=run)


def _opt(args: argparse.Namespace, scen: Scenario | None, name: str, default: Any) -> Any:
    value = getattr(args, name)
    if value is not None:
        return value
    if scen is not None and name in scen.run:
        return scen.run[name]
    return default


def _registry(args: argparse.Namespace, residents: int, seed: int) -> Config:
    if args.config:  # an existing deployment's config: a missing file is a mistake
        return load_config(args.config)
    path = Path(args.registry)
    if not path.exists():
        write_demo_registry(path, residents, seed=seed)
        log.info("wrote a registry of %d residents to %s", residents, path)
    return load_config(path)


def run(args: argparse.Namespace) -> int:
    try:
        scen = Scenario.load(args.scenario) if args.scenario else None
    except ScenarioError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    seed = int(_opt(args, scen, "seed", 0))
    residents = int(_opt(args, scen, "residents", 200))
    interval = float(_opt(args, scen, "interval_s", 10.0))
    batch = int(_opt(args, scen, "batch", 1))
    rate = float(_opt(args, scen, "random_events", 0.0))
    hours = _opt(args, scen, "hours", 24.0 if args.record else None)
    problem = _option_problem(args, residents, interval, batch, rate, hours)
    if problem:
        print(f"carewatch simulate: {problem}", file=sys.stderr)
        return 2
    config = _registry(args, residents, seed)
    try:
        if args.record:
            return _record(args, config, scen, seed, interval, batch, rate, float(hours))
        return _live(args, config, scen, seed, interval, batch, rate, hours)
    except ScenarioError as exc:
        print(str(exc), file=sys.stderr)
        return 2


def _option_problem(args: argparse.Namespace, residents: int, interval: float, batch: int,
                    rate: float, hours: Any) -> str | None:
    """What is wrong with the options (given or from the scenario), else None."""
    checks = [
        (residents >= 1, "--residents must be at least 1", residents),
        (1 <= batch <= 600, "--batch must be 1..600", batch),
        (math.isfinite(interval) and interval > 0, "--interval-s must be a positive number of "
         "seconds", interval),
        (hours is None or (math.isfinite(float(hours)) and float(hours) > 0),
         "--hours must be a positive number", hours),
        (math.isfinite(rate) and rate >= 0, "--random-events must be 0 or more", rate),
        (math.isfinite(args.speed) and args.speed > 0, "--speed must be a positive number",
         args.speed),
        (args.connections >= 1, "--connections must be at least 1", args.connections),
        (args.lwt_devices >= 0, "--lwt-devices must be 0 or more", args.lwt_devices),
    ]
    for ok, expected, got in checks:
        if not ok:
            shown = f"{got:g}" if isinstance(got, float) else str(got)
            return f"{expected}, got {shown}"
    return None


def _record(args: argparse.Namespace, config: Config, scen: Scenario | None, seed: int,
            interval: float, batch: int, rate: float, hours: float) -> int:
    from simulators.record import write_recording
    from simulators.truth import write_truth

    start = args.start if args.start is not None else RECORD_START
    probe = Simulation(config, seed, start, interval, hours, batch)
    rows = {r.id: i for i, r in enumerate(config.residents)}
    events = scen.events(rows, start, probe.phys.utc_offset_s) if scen else []
    sim = Simulation(config, seed, start, interval, hours, batch, events, rate)
    stats = write_recording(sim, args.record, faults=args.faults)
    if args.truth:
        write_truth(args.truth, sim.truth())
    print(f"recorded {stats['samples']} samples ({stats['messages']} messages) of "
          f"{stats['residents']} residents to {args.record} in {stats['seconds']:.2f} s "
          f"({stats['samples_per_s']:,.0f} samples/s); {len(sim.events.events)} events")
    return 0


def _live(args: argparse.Namespace, config: Config, scen: Scenario | None, seed: int,
          interval: float, batch: int, rate: float, hours: float | None) -> int:
    from simulators.fleet import LiveFleet
    from simulators.truth import write_truth

    broker = broker_from_args(args, config)
    fleet = LiveFleet(config, broker, speed=args.speed, interval_s=interval, batch=batch,
                      qos=args.qos, scenario=scen, seed=seed, start=args.start,
                      hours=float(hours) if hours is not None else None, random_rate=rate,
                      faults=args.faults, connections=args.connections,
                      lwt_devices=args.lwt_devices)
    if args.truth:
        write_truth(args.truth, fleet.truth())
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM and Ctrl-C only ask to stop, however often they come: a KeyboardInterrupt
        # raised inside fleet.stop() would cut the clean disconnects short, and the broker
        # would publish every own-connection device's Last Will. An ignored SIGINT (a
        # background job of a script) stays ignored.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        fleet.start()
    except OSError as exc:  # ConnectionError included: refused, unreachable, no CONNACK
        fleet.stop()
        print(f"carewatch simulate: cannot connect to the broker {broker.url}: {exc}",
              file=sys.stderr)
        return 1
    print(f"simulating {len(config.residents)} devices on {broker.url} "
          f"(speed {args.speed:g}, batch {batch}, QoS {args.qos}); Ctrl-C stops", flush=True)
    started = time.monotonic()
    try:
        while not stop.is_set() and not fleet.wait(1.0):
            pass
    finally:
        fleet.stop()
    took = time.monotonic() - started
    print(f"published {fleet.published} messages ({fleet.samples} samples) in {took:.1f} s")
    return 1 if fleet.errors else 0
