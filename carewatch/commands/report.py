"""`carewatch report`: the daily or monthly supervision report as HTML, JSON, PNG or PDF."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from carewatch.clock import WallClock


def register(subparsers: Any) -> None:
    sub = subparsers.add_parser(
        "report", help="supervision report (daily or monthly) from the configured stores",
        description="Reads the alert and routine stores (read-only): the SQLite files in "
        "--data-dir, or the PostgreSQL database with storage.alerts_backend: postgresql; "
        "writes the report.")
    when = sub.add_mutually_exclusive_group(required=True)
    when.add_argument("--month", help="local month, YYYY-MM")
    when.add_argument("--day", help="local day, YYYY-MM-DD")
    sub.add_argument("--config", required=True, help="registry file")
    sub.add_argument("--data-dir", help="holds the SQLite alert and routine stores, or "
                     "the worker-k directories of `run --workers N` (default: storage.data_dir "
                     "of the config; unused on PostgreSQL)")
    sub.add_argument("--out", help="HTML file to write")
    sub.add_argument("--json", dest="json_out", help="JSON file to write ('-' for stdout)")
    sub.add_argument("--pdf", help="PDF file of the charts (matplotlib)")
    sub.add_argument("--png-dir", help="directory for PNG charts (matplotlib)")
    sub.add_argument("--town", help="one town's part only (HTML)")
    sub.add_argument("--as-of", type=float, help="epoch seconds the figures are taken at "
                     "(default: now); open alerts and tasks are judged at this time")
    sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from config.loader import load_config
    from routines.district import district_history
    from routines.html import render_html
    from routines.reports import build_report

    if args.month and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.month):
        print(f"--month: YYYY-MM, got {args.month!r}", file=sys.stderr)
        return 2
    if args.day and not _is_date(args.day):
        print(f"--day: a date YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
        return 2
    if not (args.out or args.json_out or args.pdf or args.png_dir):
        print("nothing to write: give --out, --json, --pdf or --png-dir", file=sys.stderr)
        return 2
    config = load_config(args.config)
    if args.town is not None and args.town not in {t.id for t in config.towns}:
        print(f"--town: unknown town {args.town!r}", file=sys.stderr)
        return 2
    # the whole district: with `run --workers N`, every worker's stores (DATA_DIR/worker-k)
    stores = district_history(config, Path(args.data_dir or config.storage.data_dir))
    if isinstance(stores, str):
        print(stores, file=sys.stderr)
        return 1
    tasks, alert_data, closer = stores
    try:
        kind, label = ("month", args.month) if args.month else ("day", args.day)
        report = build_report(config, tasks, alert_data, kind, label,
                              args.as_of if args.as_of is not None else WallClock().now())
    finally:
        closer.close()
    if args.json_out:
        doc = orjson.dumps(report, option=orjson.OPT_INDENT_2)
        if args.json_out == "-":
            sys.stdout.write(doc.decode() + "\n")
        else:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_out).write_bytes(doc)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(render_html(report, args.town), encoding="utf-8")
        print(f"wrote {args.out}")
    if args.pdf or args.png_dir:
        from routines.charts import write_pdf, write_pngs

        if args.pdf:
            write_pdf(report, Path(args.pdf))
            print(f"wrote {args.pdf}")
        if args.png_dir:
            for p in write_pngs(report, Path(args.png_dir)):
                print(f"wrote {p}")
    return 0


def _is_date(text: str) -> bool:
    """A real calendar day in YYYY-MM-DD (2026-02-30 is not: it failed later, with a
    traceback)."""
    try:
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)) and bool(
            datetime.strptime(text, "%Y-%m-%d"))
    except ValueError:
        return False
