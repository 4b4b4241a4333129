"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from config.loader import load_config
from config.models import BrokerSettings, Config


def add_broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        help="mqtt://host:port or mqtts://host:port "
        "(default: the config's broker, else mqtt://127.0.0.1:1883)",
    )
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", help="file holding the broker password")


def broker_from_args(args: argparse.Namespace, config: Config | None) -> BrokerSettings:
    """The config's broker settings with command-line overrides applied (validated)."""
    base = config.broker if config else BrokerSettings()
    data = base.model_dump()
    if getattr(args, "broker", None):
        data["url"] = args.broker
    if getattr(args, "username", None):
        data["username"] = args.username
    if getattr(args, "password_file", None):
        data["password_file"] = args.password_file
    return BrokerSettings.model_validate(data)


def load(path: str | Path) -> Config:
    return load_config(path)


def unreadable(*paths: str | None) -> str | None:
    """Why one of the input files given cannot be read ("FILE: reason"), else None: said
    before any output is written, instead of a traceback halfway."""
    for path in paths:
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"{path}: cannot be read: {exc.strerror}"
    return None
