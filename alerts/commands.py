"""Authenticated alert commands over MQTT: topic and payload parsing, pure (no I/O).

Topic `carewatch/v1/{town_id}/cmd/alerts`; payload and signature are specified in
docs/alert-commands.md. The ingest side subscribes and hands (topic, payload) here; the
engine applies a valid `Command` with `AlertEngine.apply_command`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

import orjson

ACTIONS = ("ack", "dispatch", "resolve")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SIG_RE = re.compile(r"[0-9a-f]{64}")
TOPIC_RE = re.compile(r"^carewatch/v1/([A-Za-z0-9_-]{1,64})/cmd/alerts$")
MAX_PAYLOAD = 8 * 1024
MAX_NOTE = 2000


def command_topic(town_id: str) -> str:
    return f"carewatch/v1/{town_id}/cmd/alerts"


def result_topic(town_id: str) -> str:
    return f"carewatch/v1/{town_id}/cmd/alerts/result"


COMMAND_SUBSCRIPTION = "carewatch/v1/+/cmd/alerts"


@dataclass(frozen=True)
class Command:
    town_id: str
    action: str
    by: str
    ts: int
    nonce: str
    alert_id: str | None = None
    resident_id: str | None = None
    kind: str | None = None
    note: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class CommandError:
    """Why a command was refused: `reason` is one of topic, invalid_json, schema, auth, stale."""

    reason: str
    detail: str
    request_id: str | None = None


def signing_text(action: str, alert_id: str, resident_id: str, kind: str, by: str,
                 note: str, ts: int, nonce: str) -> bytes:
    """The exact bytes signed: the fields joined by newlines, absent ones as empty strings."""
    return "\n".join(["carewatch-cmd-v1", action, alert_id, resident_id, kind, by, note,
                      str(ts), nonce]).encode("utf-8")


def sign_command(secret: bytes, action: str, by: str, ts: int, nonce: str, *,
                 alert_id: str = "", resident_id: str = "", kind: str = "", note: str = "") -> str:
    """Hex HMAC-SHA256 of a command (for clients and tests)."""
    text = signing_text(action, alert_id, resident_id, kind, by, note, ts, nonce)
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def _str(doc: dict[str, object], key: str, pattern: re.Pattern[str] | None = None,
         limit: int = 256) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key}: a string of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):  # `$` would pass a final \n
        raise ValueError(f"{key}: an identifier [A-Za-z0-9_-]{{1,64}}")
    return value


def parse_command(topic: str, payload: bytes, secret: bytes | None, now: float | None = None,
                  max_skew_s: float = 300.0) -> Command | CommandError:
    """Validate topic, schema and signature; a Command, or a CommandError saying why not.

    With `secret` None every command is refused (an unauthenticated command interface is
    never enabled by accident). With `now`, a `ts` further than `max_skew_s` away is stale.
    """
    m = TOPIC_RE.match(topic)
    if m is None:
        return CommandError("topic", f"not a command topic: {topic!r}")
    if len(payload) > MAX_PAYLOAD:
        return CommandError("schema", f"payload over {MAX_PAYLOAD} bytes")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return CommandError("invalid_json", str(exc))
    if not isinstance(doc, dict):
        return CommandError("schema", "payload must be a JSON object")
    request_id = doc.get("request_id") if isinstance(doc.get("request_id"), str) else None
    try:
        action = _str(doc, "action")
        if action not in ACTIONS:
            raise ValueError(f"action: one of {ACTIONS}")
        alert_id = _str(doc, "alert_id", ID_RE)
        resident_id = _str(doc, "resident_id", ID_RE)
        kind = _str(doc, "kind", ID_RE)
        by = _str(doc, "by", ID_RE)
        note = _str(doc, "note", limit=MAX_NOTE)
        nonce = _str(doc, "nonce", ID_RE)
        sig = _str(doc, "sig")
        if sig is not None and not SIG_RE.fullmatch(sig):
            raise ValueError("sig: 64 lowercase hex digits (HMAC-SHA256)")
        ts = doc.get("ts")
        if by is None or nonce is None or sig is None:
            raise ValueError("by, nonce and sig are required")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise ValueError("ts: integer Unix seconds")
        if alert_id is None and (resident_id is None or kind is None):
            raise ValueError("alert_id, or resident_id and kind, is required")
        if action == "resolve" and not (note or "").strip():
            raise ValueError("note: resolving needs a feedback note")
    except ValueError as exc:
        return CommandError("schema", str(exc), request_id)
    if secret is None:
        return CommandError("auth", "no command secret configured", request_id)
    expected = sign_command(secret, action, by, ts, nonce, alert_id=alert_id or "",
                            resident_id=resident_id or "", kind=kind or "", note=note or "")
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        return CommandError("auth", "bad signature", request_id)
    if now is not None and abs(now - ts) > max_skew_s:
        return CommandError("stale", f"ts {ts} is more than {max_skew_s:.0f} s from now",
                            request_id)
    return Command(town_id=m.group(1), action=action, by=by, ts=ts, nonce=nonce,
                   alert_id=alert_id, resident_id=resident_id, kind=kind, note=note,
                   request_id=request_id)
