"""The persistent MQTT sessions a deployment's pipeline processes use, and the ones a
changed partition leaves behind.

A process owning a set of towns keeps its session under an id made from those towns
(`session_id`), not from its worker number: when `--workers N` or `--machine k/M` changes,
or a town is added, a process never resumes a session queued for towns it no longer owns.
The top process of a data directory (the supervisor, or a lone `carewatch run`) records its
processes' sessions in `sessions.json` there (`take_over`); sessions recorded before that
none of the processes uses any more are *stale*. Once the new processes are subscribed,
`drain_stale` hands each stale session's queued messages to their towns' owners
(`ingest.handoff.drain_session`) and forgets it; one that fails to drain stays recorded and
is tried again at the next start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from config.models import BrokerSettings

log = logging.getLogger(__name__)

LEDGER = "sessions.json"


def session_id(base: str, towns: list[str] | None) -> str:
    """The MQTT client id of a process starting from `base` and owning `towns` (None: every
    town, the base itself)."""
    if towns is None:
        return base
    key = hashlib.sha1(",".join(sorted(towns)).encode()).hexdigest()[:10]
    return f"{base}-t{key}"


@dataclass(frozen=True)
class Session:
    client_id: str
    topics: list[str]  # its subscriptions


def _read(path: Path) -> dict[str, list[Session]]:
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {"sessions": [], "stale": []}
    return {k: [Session(s["client_id"], list(s["topics"])) for s in doc.get(k, [])]
            for k in ("sessions", "stale")}


def _write(path: Path, doc: dict[str, list[Session]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(
        {k: [{"client_id": s.client_id, "topics": s.topics} for s in v] for k, v in doc.items()},
        option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)  # atomic: a crash leaves the old ledger or the new one


def take_over(data_dir: Path, current: list[Session]) -> list[Session]:
    """Record `current` as the sessions in use; return the stale ones (recorded before, or
    left from an earlier start, and not among `current`)."""
    path = data_dir / LEDGER
    before = _read(path)
    ids = {s.client_id for s in current}
    stale: dict[str, Session] = {}
    for s in before["stale"] + before["sessions"]:
        if s.client_id not in ids:
            stale.setdefault(s.client_id, s)
    _write(path, {"sessions": current, "stale": list(stale.values())})
    return list(stale.values())


def _forget(data_dir: Path, client_id: str) -> None:
    path = data_dir / LEDGER
    doc = _read(path)
    doc["stale"] = [s for s in doc["stale"] if s.client_id != client_id]
    _write(path, doc)


def drain_stale(settings: BrokerSettings, data_dir: Path, stale: list[Session],
                ready: Callable[[], bool], stop: threading.Event,
                poll_s: float = 0.5) -> int:
    """Once `ready()` (every process of the new partition subscribed), hand each stale
    session's messages on and forget it. Returns the messages handed on."""
    from ingest.handoff import drain_session

    while not ready():
        if stop.wait(poll_s):
            return 0
    handed = 0
    for s in stale:
        if stop.is_set():
            break
        try:
            n = drain_session(settings.model_copy(update={"client_id": s.client_id}),
                              s.client_id, s.topics)
        except Exception:  # kept in the ledger: the next start tries again
            log.exception("could not hand over the queued messages of session %s", s.client_id)
            continue
        _forget(data_dir, s.client_id)
        handed += n
        log.warning("session %s (left by an earlier partition) handed %d queued messages "
                    "to their towns' owners and ended", s.client_id, n)
    return handed


def hand_over_left_behind(settings: BrokerSettings, data_dir: Path, current: list[Session],
                          ready: Callable[[], bool], stop: threading.Event
                          ) -> threading.Thread | None:
    """`take_over` the ledger for `current`; with stale sessions, drain them on a thread
    (returned: join it after setting `stop`)."""
    stale = take_over(data_dir, current)
    if not stale:
        return None
    thread = threading.Thread(target=drain_stale, args=(settings, data_dir, stale, ready, stop),
                              name="session-handoff", daemon=True)
    thread.start()
    return thread
