"""JSON log lines: parseable, with level, logger, message and extras."""

from __future__ import annotations

import logging

import orjson

from carewatch.logjson import JsonFormatter


def test_json_formatter_emits_one_parseable_object() -> None:
    record = logging.makeLogRecord({"name": "ingest.mqtt", "levelname": "WARNING",
                                    "levelno": 30, "msg": "broker refused: %s",
                                    "args": ("Not authorized",), "device_id": "dev-0001"})
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "ingest.mqtt"
    assert doc["msg"] == "broker refused: Not authorized" and doc["device_id"] == "dev-0001"
    assert "\n" not in JsonFormatter().format(record)
