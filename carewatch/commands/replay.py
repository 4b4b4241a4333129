"""`carewatch replay IN.jsonl --config FILE --out OUT.jsonl`: offline, deterministic."""

from __future__ import annotations

import argparse
import sys

import orjson

from carewatch.commands._common import load, unreadable


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="run the pipeline on recorded traffic with a simulated clock")
    p.add_argument("input", help="recorded messages, one JSON object a line")
    p.add_argument("--config", required=True, help="registry / settings YAML file")
    p.add_argument("--out", required=True, help="alert events, one JSON object a line")
    p.add_argument("--rejected", help="rejected messages, one JSON object a line")
    p.add_argument("--tick-by-tick", action="store_true",
                   help="never judge several ticks in one pass (the output is the same; "
                   "for checking that, and slower)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from carewatch.replay import SPAN_TICKS, read_lines, replay

    config = load(args.config)
    problem = unreadable(args.input)
    if problem:
        print(f"carewatch replay: {problem}", file=sys.stderr)
        return 2
    rej = open(args.rejected, "wb") if args.rejected else None  # noqa: SIM115
    with open(args.out, "wb") as out:
        result = replay(
            read_lines(args.input),
            config,
            keep_events=False,
            on_event=lambda e: out.write(orjson.dumps(e) + b"\n"),
            on_rejected=(lambda r: rej.write(orjson.dumps(r) + b"\n")) if rej else None,
            span_ticks=1 if args.tick_by_tick else SPAN_TICKS,
        )
    if rej is not None:
        rej.close()
    summary = {
        "messages": result.messages,
        "ticks": result.ticks,
        "spanned_ticks": result.spanned_ticks,
        "bad_lines": result.bad_lines,
        "actions_ignored": result.acks_ignored,
        "ingest": result.ingest,
    }
    print(orjson.dumps(summary).decode(), file=sys.stderr)
    return 0
