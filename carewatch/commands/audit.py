"""`carewatch audit verify --data-dir DIR`: check the alert store's audit hash chain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser("verify", help="recompute the audit hash chain; name the first bad entry")
    v.add_argument("--data-dir", help="the pipeline's data directory (holds alerts.db)")
    v.add_argument("--db", help="the alert store file itself (instead of --data-dir)")
    v.add_argument("--db-file", default="alerts.db",
                   help="store file name inside --data-dir (default %(default)s)")
    v.set_defaults(func=verify_main)


def verify_main(args: argparse.Namespace) -> int:
    from alerts.store import verify_audit_chain

    if not args.db and not args.data_dir:
        print("give --data-dir DIR or --db FILE", file=sys.stderr)
        return 2
    path = Path(args.db) if args.db else Path(args.data_dir) / args.db_file
    if not path.is_file():
        print(f"no alert store at {path}", file=sys.stderr)
        return 2
    verdict = verify_audit_chain(path)
    if verdict.ok:
        print(f"audit log OK: {verdict.entries} entries, head {verdict.head}")
        return 0
    print(f"audit log BROKEN at entry {verdict.first_bad}: {verdict.reason} "
          f"({verdict.entries} entries)")
    return 1
