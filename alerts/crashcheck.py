"""Crash check: SIGKILL an alert engine at random instants, restart, count what was lost.

`python -m alerts.crashcheck --cycles 100` runs a child process that drives an engine
(random findings, acknowledgements, resolutions, escalation ticks on a fast simulated
clock) and reports on stdout everything the engine has confirmed: each event a listener
received (listeners run only after the store commit), each acknowledgement the API
returned. The parent kills the child with SIGKILL after a random delay, then checks the
store: every reported alert, event and acknowledgement must be there, and a restarted
engine's first tick must fire every overdue escalation at its stored deadline. It prints a
JSON summary; the exit status is 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

KINDS = [("fall", 4), ("hypoxemia", 3), ("hypoxemia", 4), ("tachycardia", 3), ("fever", 2),
         ("low_battery", 1), ("not_worn", 2)]
RESIDENTS = 40


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def child(data_dir: Path, start: float, seed: int, steps: int) -> int:
    """Drive an engine until killed (or `steps` steps), reporting confirmed changes."""
    from alerts.model import AlertNotFoundError, AlertTransitionError
    from alerts.testing import Harness, finding, minimal_config

    rng = random.Random(seed)
    h = Harness(data_dir, minimal_config(RESIDENTS), start=start)
    h.engine.add_listener(lambda e: _emit({"t": "ev", "alert_id": e["alert_id"],
                                           "event": e["event"], "updated_at": e["updated_at"],
                                           "tier": e["tier"]}))
    _emit({"t": "ready"})
    for _ in range(steps):
        h.clock.advance(rng.uniform(1.0, 40.0))
        now = h.clock.now()
        _emit({"t": "now", "now": now})
        fs = []
        for _k in range(rng.randint(0, 4)):
            kind, sev = rng.choice(KINDS)
            fs.append(finding(kind, [rng.randrange(RESIDENTS)], sev,
                              active=rng.random() < 0.85, spo2_min=[rng.randint(80, 90)]))
        h.engine.on_findings(fs, now)
        opened = h.engine.open_alerts()
        if opened and rng.random() < 0.3:
            alert = rng.choice(opened)
            try:
                if rng.random() < 0.5:
                    done = h.engine.ack_alert(alert.alert_id, "crash-tester", now)
                else:
                    done = h.engine.resolve_alert(alert.alert_id, "crash-tester", now,
                                                  note="checked during crash test")
                _emit({"t": "acted", "alert_id": done.alert_id, "state": done.state})
            except (AlertTransitionError, AlertNotFoundError):
                pass
        h.engine.tick(now)
    h.close()
    return 0


def verify(data_dir: Path, lines: list[dict[str, Any]], check_at: float) -> dict[str, int]:
    """Compare what the child reported with the store; restart and tick once at `check_at`."""
    from alerts.testing import Harness, minimal_config

    h = Harness(data_dir, minimal_config(RESIDENTS), start=check_at)
    try:
        store = h.engine.store
        stored_events = {(e["alert_id"], e["event"], e["updated_at"], e["tier"])
                         for e in store.events()}
        counts = {"reported_events": 0, "lost_events": 0, "lost_alerts": 0, "lost_acts": 0,
                  "missed_escalations": 0, "republished": 0}
        for line in lines:
            if line["t"] == "ev":
                counts["reported_events"] += 1
                key = (line["alert_id"], line["event"], line["updated_at"], line["tier"])
                if key not in stored_events:
                    counts["lost_events"] += 1
                if line["event"] == "opened" and store.get_alert(line["alert_id"]) is None:
                    counts["lost_alerts"] += 1
            elif line["t"] == "acted":
                alert = store.get_alert(line["alert_id"])
                if alert is None or alert.acked_by is None or (
                        line["state"] == "resolved" and alert.state != "resolved"):
                    counts["lost_acts"] += 1
        pending = len(store.unpublished_events())
        due = {a.alert_id: (a.tier, a.deadline) for a in h.engine.open_alerts()
               if a.state in ("open", "escalated") and a.deadline is not None
               and a.deadline <= check_at}
        h.engine.tick(check_at)
        counts["republished"] = pending
        if len(h.publisher.messages) < pending:
            counts["lost_events"] += pending - len(h.publisher.messages)
        after = {a.alert_id: a for a in h.engine.open_alerts()}
        for alert_id, (tier, deadline) in due.items():
            a = after[alert_id]
            first = next((e for e in h.events if e["alert_id"] == alert_id), None)
            escalated_on_time = (tier == 4 or (first is not None and first["tier"] == tier + 1
                                               and first["updated_at"] == deadline))
            if not escalated_on_time or a.deadline is None or a.deadline <= check_at:
                counts["missed_escalations"] += 1
        return counts
    finally:
        h.close()


def run_crashcheck(cycles: int = 100, data_dir: Path | None = None, seed: int = 0,
                   max_delay_s: float = 1.5) -> dict[str, Any]:
    """Kill/restart `cycles` times; return totals (lost_* and missed_escalations must be 0)."""
    rng = random.Random(seed)
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="carewatch-crash-")
        data_dir = Path(tmp.name)
    from alerts.testing import T0

    now = T0
    totals: dict[str, Any] = {"cycles": 0, "killed": 0}
    try:
        for cycle in range(cycles):
            proc = subprocess.Popen(
                [sys.executable, "-m", "alerts.crashcheck", "--child", str(data_dir),
                 "--start", repr(now), "--seed", str(seed * 100_003 + cycle)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            lines: list[dict[str, Any]] = []
            ready = threading.Event()

            def read(p: subprocess.Popen[bytes] = proc, out: list[dict[str, Any]] = lines,
                     ev: threading.Event = ready) -> None:
                assert p.stdout is not None
                for raw in p.stdout:
                    if not raw.endswith(b"\n"):
                        break  # torn by the kill: the engine had not confirmed it
                    out.append(orjson.loads(raw))
                    ev.set()
            reader = threading.Thread(target=read, name="crashcheck-reader")
            reader.start()
            ready.wait(60)
            # A random instant: the store may be mid-transaction, mid-publish, mid-send.
            threading.Event().wait(rng.uniform(0.0, max_delay_s))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                totals["killed"] += 1
            proc.wait(30)
            reader.join(30)
            last = max((x["now"] for x in lines if x["t"] == "now"), default=now)
            check_at = last + 400.0
            for key, value in verify(data_dir, lines, check_at).items():
                totals[key] = totals.get(key, 0) + value
            totals["cycles"] += 1
            now = check_at + 1.0
    finally:
        if tmp is not None:
            tmp.cleanup()
    totals["lost"] = totals.get("lost_events", 0) + totals.get("lost_alerts", 0) + totals.get(
        "lost_acts", 0)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerts.crashcheck", description=__doc__)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.start, args.seed, args.steps)
    totals = run_crashcheck(args.cycles, args.data_dir, args.seed)
    print(orjson.dumps(totals).decode())
    return 1 if totals["lost"] or totals.get("missed_escalations", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
