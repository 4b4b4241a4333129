"""`carewatch` command line. Each subcommand is a module in `carewatch.commands` that defines
`register(subparsers)`; adding a command is adding a file."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from config.loader import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carewatch", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="json: one JSON object a line (also CAREWATCH_LOG_FORMAT=json)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    import carewatch.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"carewatch.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from carewatch.malloc import keep_heap_pages

    keep_heap_pages()  # every process ticks detectors or benchmarks them: see the module
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the routine scheduler's own INFO lines (a job run every 30 s) say nothing staff need;
    # its warnings and errors still show (`--log-level DEBUG` shows everything)
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    from carewatch.logjson import use_json_logs

    use_json_logs(force=args.log_format == "json")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
