"""The authenticated MQTT command interface: parsing, signatures, and applying commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.commands import Command, CommandError, command_topic, parse_command, sign_command
from alerts.delivery import load_secret
from alerts.model import AlertNotFoundError, AlertTransitionError
from alerts.testing import T0, Harness, finding
from config.secrets import SecretFileError

SECRET = b"s3cret"
TS = int(T0) + 60


def payload(secret: bytes = SECRET, **fields: Any) -> bytes:
    doc: dict[str, Any] = {"action": "ack", "resident_id": "r-0001", "kind": "fall",
                           "by": "carer-1", "ts": TS, "nonce": "n-1"}
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    doc.setdefault("sig", sign_command(
        secret, doc["action"], doc.get("by", ""), doc["ts"], doc["nonce"],
        alert_id=doc.get("alert_id", ""), resident_id=doc.get("resident_id", ""),
        kind=doc.get("kind", ""), note=doc.get("note", "")))
    return orjson.dumps(doc)


def test_valid_command() -> None:
    cmd = parse_command(command_topic("gufu"), payload(request_id="q1"), SECRET, now=TS)
    assert cmd == Command(town_id="gufu", action="ack", by="carer-1", ts=TS, nonce="n-1",
                          resident_id="r-0001", kind="fall", request_id="q1")


@pytest.mark.parametrize("topic, body, reason", [
    ("carewatch/v1/gufu/alerts/r-0001", payload(), "topic"),
    (command_topic("gufu"), b"{not json", "invalid_json"),
    (command_topic("gufu"), b"[1]", "schema"),
    (command_topic("gufu"), payload(action="delete"), "schema"),
    (command_topic("gufu"), payload(by=None), "schema"),
    (command_topic("gufu"), payload(resident_id=None), "schema"),
    (command_topic("gufu"), payload(ts=1.5), "schema"),
    (command_topic("gufu"), payload(action="resolve"), "schema"),  # no note
    (command_topic("gufu"), payload(by="bad id!"), "schema"),
    (command_topic("gufu"), payload(secret=b"wrong"), "auth"),
    (command_topic("gufu"), payload(sig="00" * 32), "auth"),
    (command_topic("gufu"), payload(ts=TS - 3600), "stale"),
])
def test_refused_commands(topic: str, body: bytes, reason: str) -> None:
    result = parse_command(topic, body, SECRET, now=TS)
    assert isinstance(result, CommandError) and result.reason == reason, result


def test_tampered_fields_break_the_signature() -> None:
    doc = orjson.loads(payload())
    doc["kind"] = "hypoxemia"
    result = parse_command(command_topic("gufu"), orjson.dumps(doc), SECRET, now=TS)
    assert isinstance(result, CommandError) and result.reason == "auth"


def test_no_secret_refuses_everything() -> None:
    result = parse_command(command_topic("gufu"), payload(), None, now=TS)
    assert isinstance(result, CommandError) and result.reason == "auth"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _cmd(body: bytes, town: str = "gufu") -> Command:
    cmd = parse_command(command_topic(town), body, SECRET, now=TS)
    assert isinstance(cmd, Command), cmd
    return cmd


def test_apply_ack_dispatch_resolve(h: Harness) -> None:
    h.findings(finding("fall", [0], 4))
    alert_id = h.events[0]["alert_id"]
    h.engine.apply_command(_cmd(payload()), TS)
    h.engine.apply_command(_cmd(payload(action="dispatch", nonce="n-2", alert_id=alert_id,
                                        resident_id=None, kind=None)), TS + 1)
    done = h.engine.apply_command(_cmd(payload(action="resolve", nonce="n-3",
                                               note="bruise, no fracture")), TS + 2)
    assert done.state == "resolved" and done.note == "bruise, no fracture"
    assert [(e["event"], e.get("acked_by")) for e in h.events] == [
        ("opened", None), ("acknowledged", "carer-1"), ("dispatched", "carer-1"),
        ("resolved", "carer-1")]


def test_replayed_nonce_and_wrong_town_are_refused(h: Harness) -> None:
    h.findings(finding("fall", [0], 4))
    with pytest.raises(AlertNotFoundError, match="not in town"):
        h.engine.apply_command(_cmd(payload(), town="lishi"), TS)
    h.engine.apply_command(_cmd(payload()), TS)
    with pytest.raises(AlertTransitionError, match="nonce"):
        h.engine.apply_command(_cmd(payload()), TS)
    assert [e["event"] for e in h.events] == ["opened", "acknowledged"]


def test_handle_command_message_publishes_results(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREWATCH_COMMAND_SECRET", SECRET.decode())
    h = Harness(tmp_path)
    try:
        h.findings(finding("fall", [0], 4))
        ok = h.engine.handle_command_message(command_topic("gufu"), payload(request_id="a"), TS)
        bad = h.engine.handle_command_message(command_topic("gufu"),
                                              payload(nonce="n-9", sig="ff" * 32), TS)
        gone = h.engine.handle_command_message(command_topic("gufu"), payload(nonce="n-8"), TS)
        assert ok["ok"] and ok["state"] == "acknowledged" and ok["request_id"] == "a"
        assert (bad["ok"], bad["reason"]) == (False, "auth")
        assert (gone["ok"], gone["reason"]) == (False, "transition")
        results = [orjson.loads(p) for t, p, _q, _r in h.publisher.messages
                   if t == "carewatch/v1/gufu/cmd/alerts/result"]
        assert [r["ok"] for r in results] == [True, False, False]
    finally:
        h.close()


@pytest.mark.parametrize("fields", [
    {"sig": "é"},  # compare_digest raised on a non-ASCII str: it ended the pipeline
    {"sig": "ab" * 31},  # not an HMAC-SHA256 in hex
    {"sig": "AB" * 32},
    {"nonce": "n-1\n"},  # `$` lets a final newline through a match
])
def test_malformed_signature_fields_are_schema_errors(fields: dict[str, str]) -> None:
    got = parse_command(command_topic("gufu"), payload(**fields), SECRET, now=TS)
    assert isinstance(got, CommandError) and got.reason == "schema", got


def test_an_empty_secret_file_is_refused_not_an_empty_key(tmp_path: Path) -> None:
    """HMAC with an empty key lets anyone sign commands (and webhooks)."""
    empty = tmp_path / "command.secret"
    empty.write_text("  \n")
    with pytest.raises(SecretFileError, match=r"alerts\.command_secret_file: .* is empty"):
        load_secret(str(empty), None, "alerts.command_secret_file")
    with pytest.raises(SecretFileError, match="cannot read"):
        load_secret(str(tmp_path / "missing"), None, "alerts.command_secret_file")
    (tmp_path / "good").write_text("s3cret\n")
    assert load_secret(str(tmp_path / "good"), None) == b"s3cret"
