"""Structured logs: one JSON object per line (`ts`, `level`, `logger`, `msg`, extras).

`use_json_logs()` swaps the root handler's formatter; the CLI calls it for
`--log-format json` or `CAREWATCH_LOG_FORMAT=json`. Messages carry ids and counts only
(docs/security.md), so the JSON adds structure, not data.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def use_json_logs(force: bool = False) -> bool:
    """JSON on every root handler if forced or CAREWATCH_LOG_FORMAT=json; True if applied."""
    if not force and os.environ.get("CAREWATCH_LOG_FORMAT", "").lower() != "json":
        return False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    return True
