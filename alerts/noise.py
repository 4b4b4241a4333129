"""Noise control: silences (maintenance windows) and inhibition rules, as pure functions."""

from __future__ import annotations

from typing import Any

# Kinds that read the body's signals; a device that is offline cannot be trusted for them.
PHYSIOLOGICAL = frozenset({
    "hypoxemia", "bradycardia", "tachycardia", "bradypnoea", "tachypnoea", "fever",
    "hypothermia", "hypotension", "hypertensive_crisis", "news2", "baseline_deviation",
})
# inhibited kind -> kinds that inhibit it while open with the condition active.
INHIBITED_BY: dict[str, tuple[str, ...]] = {k: ("device_offline",) for k in PHYSIOLOGICAL}
# kind -> kind of an open alert it is merged into instead of opening its own (raising the
# open alert's urgency rather than adding a second alert): stillness after a fall.
MERGED_INTO: dict[str, str] = {"inactivity": "fall"}
# ...but only when it begins this soon after the host's onset: stillness from the fall on is
# the fall's "long lie"; stillness that starts days later (a fall alert nobody resolved yet)
# is a concern of its own and opens its own alert
MERGE_WITHIN_S: dict[str, float] = {"inactivity": 3600.0}


def silence_covers(silence: dict[str, Any], resident_id: str, device_id: str,
                   now: float) -> bool:
    """Is this silence active at `now` and about this resident or their device (any kind)?"""
    if not silence.get("active", True):
        return False
    if not silence["starts_at"] <= now < silence["until"]:
        return False
    if silence.get("resident_id") not in (None, resident_id):
        return False
    return silence.get("device_id") in (None, device_id)


def silence_matches(silence: dict[str, Any], resident_id: str, device_id: str, kind: str,
                    now: float) -> bool:
    """Does this active silence cover (resident, device, kind) at `now`?"""
    return (silence_covers(silence, resident_id, device_id, now)
            and silence.get("kind") in (None, kind))


def merges(kind: str, onset_ts: Any, host_onset_ts: Any) -> bool:
    """Is a `kind` condition that began at `onset_ts` part of the open alert it would merge
    into (MERGED_INTO), whose condition began at `host_onset_ts`? (Unknown onsets: yes.)"""
    if not isinstance(onset_ts, float | int) or not isinstance(host_onset_ts, float | int):
        return True
    return onset_ts - host_onset_ts <= MERGE_WITHIN_S.get(kind, float("inf"))


def inhibitor(kind: str, active_kinds: set[str]) -> str | None:
    """The kind whose open, active alert inhibits `kind`, if any."""
    for other in INHIBITED_BY.get(kind, ()):
        if other in active_kinds:
            return other
    return None
