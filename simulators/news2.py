"""NEWS2 scoring (Royal College of Physicians, 2017) for the simulator's ground truth.

Consciousness is scored as alert and breathing as on air, as the contract says; `copd`
residents use SpO2 scale 2 (on air).
"""

from __future__ import annotations


def _band(value: float, bands: list[tuple[float, int]], top: int) -> int:
    for upper, score in bands:
        if value <= upper:
            return score
    return top


def news2_parts(hr: float, spo2: float, rr: float, temp_c: float, sbp: float,
                copd: bool = False) -> dict[str, int]:
    """Score of each parameter."""
    if copd:
        s_spo2 = _band(spo2, [(83, 3), (85, 2), (87, 1)], 0)
    else:
        s_spo2 = _band(spo2, [(91, 3), (93, 2), (95, 1)], 0)
    return {
        "rr": _band(rr, [(8, 3), (11, 1), (20, 0), (24, 2)], 3),
        "spo2": s_spo2,
        "sbp": _band(sbp, [(90, 3), (100, 2), (110, 1), (219, 0)], 3),
        "hr": _band(hr, [(40, 3), (50, 1), (90, 0), (110, 1), (130, 2)], 3),
        "temp_c": _band(temp_c, [(35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1)], 2),
    }


def news2_severity(parts: dict[str, int]) -> str | None:
    """The contract's news2 rule: >= 7 high; 5-6 or any single 3 medium; else None."""
    total = sum(parts.values())
    if total >= 7:
        return "high"
    if total >= 5 or max(parts.values()) >= 3:
        return "medium"
    return None
