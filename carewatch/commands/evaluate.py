"""`carewatch evaluate IN.jsonl --truth TRUTH.jsonl --config FILE`: replay a labelled recording
and print per-kind recall, PPV, detection delay and false alerts per resident-day."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from carewatch.commands._common import load, unreadable


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("evaluate", help="score detection on a labelled recording")
    p.add_argument("input", help="recorded messages (replay format), one JSON object a line")
    p.add_argument("--truth", required=True, help="truth events, one JSON object a line")
    p.add_argument("--config", required=True, help="registry / settings YAML file")
    p.add_argument("--events", help="score these alert events instead of replaying the input")
    p.add_argument("--out", help="also write the replay's alert events here")
    p.add_argument(
        "--grace",
        type=float,
        default=600.0,
        help="an alert may open this long after a truth event ends (s)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=main)


class BadLine(ValueError):
    pass


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BadLine(f"{path} line {lineno}: expected a JSON object: {exc}") from None
                if not isinstance(rec, dict):
                    raise BadLine(f"{path} line {lineno}: expected a JSON object, "
                                  f"got {type(rec).__name__}")
                out.append(rec)
    return out


def data_span(path: str | Path) -> tuple[float, float]:
    """(first, last) receive time `t` of a message line (not a clock-only line)."""
    first = last = None
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:  # a bad line is replay's to warn about and skip, as here
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            t = rec.get("t")
            if isinstance(t, int | float) and "topic" in rec:
                first = t if first is None else first
                last = t
    return (0.0, 0.0) if first is None or last is None else (first, last)


def main(args: argparse.Namespace) -> int:
    from carewatch.replay import replay_file
    from detectors.evaluate import score

    config = load(args.config)
    problem = unreadable(args.input, args.truth, args.events)
    if problem:
        print(f"carewatch evaluate: {problem}", file=sys.stderr)
        return 2
    try:
        truth = read_jsonl(args.truth)
        events = read_jsonl(args.events) if args.events else None
    except BadLine as exc:
        print(f"carewatch evaluate: {exc}", file=sys.stderr)
        return 2
    if events is None:
        events = replay_file(args.input, config, out_path=args.out)
    first, last = data_span(args.input)
    resident_days = len(config.residents) * (last - first) / 86400.0
    report = score(events, truth, resident_days, grace_s=args.grace, until=last)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.table())
    return 0
