"""Load and validate a config file; each mistake names the file, key path and expectation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.models import Config

log = logging.getLogger(__name__)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: the plain one keeps
    the last silently (a second `residents:` dropped the first list's residents)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"found the key {key!r} twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class ConfigError(Exception):
    """A config file that cannot be used. `problems` lists 'key.path: what was expected'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        path = _key_path(tuple(err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(f"{path}: unknown key (check its spelling)")
        elif kind == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            problems.append(
                f"{path}: expected {msg}{shown}"
                if kind != "value_error"
                else f"{path}: expected {msg}"
            )
    return problems


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_error(exc)) from None
    config._source = source
    for resident_id, condition in config.unknown_conditions():
        log.warning(
            "%s: resident %s has unknown condition %r (kept)", source, resident_id, condition
        )
    return config


def load_config(path: str | Path) -> Config:
    """Read a YAML config file; raise ConfigError naming the file on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"(file): cannot be read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, [f"(file): expected UTF-8 text, {exc.reason} at byte {exc.start}"]
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(source, [f"{where}: expected valid YAML: {exc}"]) from None
    return parse_config(data, source)
