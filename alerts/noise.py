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


def silence_matches(silence: dict[str, Any], resident_id: str, device_id: str, kind: str,
                    now: float) -> bool:
    """Does this active silence cover (resident, device, kind) at `now`?"""
    if not silence.get("active", True):
        return False
    if not silence["starts_at"] <= now < silence["until"]:
        return False
    if silence.get("resident_id") not in (None, resident_id):
        return False
    if silence.get("device_id") not in (None, device_id):
        return False
    return silence.get("kind") in (None, kind)


def inhibitor(kind: str, active_kinds: set[str]) -> str | None:
    """The kind whose open, active alert inhibits `kind`, if any."""
    for other in INHIBITED_BY.get(kind, ()):
        if other in active_kinds:
            return other
    return None
