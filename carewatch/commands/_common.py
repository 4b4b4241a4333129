"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from config.loader import ConfigError, format_validation_error, load_config
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
    """The config's broker settings with command-line overrides applied (validated); a
    mistake is a ConfigError naming the option or the config file's key."""
    base = config.broker if config else BrokerSettings()
    data = base.model_dump()
    flags = {"url": "--broker", "username": "--username", "password_file": "--password-file"}
    given = set()
    for key, flag in flags.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value:
            data[key] = value
            given.add(key)
    source = config.source if config else "<defaults>"
    try:
        settings = BrokerSettings.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc)
        if any(p.split(":")[0] in given for p in problems):
            raise ConfigError("command line", [
                f"{flags[p.split(':')[0]]}{p[len(p.split(':')[0]):]}" for p in problems
            ]) from None
        raise ConfigError(source, [f"broker.{p}" for p in problems]) from None
    failed = _open_error(settings.password_file) if settings.password_file else None
    if failed is not None:
        where, key = (("command line", "--password-file") if "password_file" in given
                      else (source, "broker.password_file"))
        raise ConfigError(where, [
            f"{key}: expected a readable file, {settings.password_file!r}: {failed.strerror}"
        ])
    return settings


def load(path: str | Path) -> Config:
    return load_config(path)


def unreadable(*paths: str | None) -> str | None:
    """Why one of the input files given cannot be read ("FILE: reason"), else None: said
    before any output is written, instead of a traceback halfway."""
    for path in paths:
        failed = None if path is None else _open_error(path)
        if failed is not None:
            return f"{path}: cannot be read: {failed.strerror}"
    return None


def _open_error(path: str | Path) -> OSError | None:
    """Why `path` cannot be opened for reading, else None."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc
