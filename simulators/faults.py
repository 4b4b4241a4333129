"""The contract's bad inputs, mixed into good traffic with `--faults`.

Each fault is (true time, topic, payload bytes, expected outcome): the outcome is the
contract's rejection reason, or `"dropped_value"` / `"dropped_sample"` for faults that lose
one value or one sample but keep the message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from simulators.physiology import Physiology

FAULT_KINDS = ("invalid_json", "schema", "too_large", "unknown_device", "wrong_town",
               "device_mismatch", "future_ts", "out_of_range")


@dataclass(frozen=True)
class Fault:
    t: float
    topic: str
    payload: bytes
    expect: str  # rejection reason, or dropped_value / dropped_sample

    @property
    def is_json(self) -> bool:
        try:
            orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            return False
        return True


def vitals_topic(town: str, device: str) -> str:
    return f"carewatch/v1/{town}/{device}/vitals"


def status_topic(town: str, device: str) -> str:
    return f"carewatch/v1/{town}/{device}/status"


def make_faults(phys: Physiology, t_start: float, t_end: float, per_hour: float,
                seed: int, towns: list[str]) -> list[Fault]:
    """About `per_hour` faults an hour between t_start and t_end, kinds in turn."""
    rng = np.random.default_rng([seed, 606])
    pop = phys.pop
    count = int(rng.poisson(per_hour * max(0.0, t_end - t_start) / 3600.0))
    count = max(count, len(FAULT_KINDS)) if t_end > t_start else 0
    times = np.sort(rng.uniform(t_start, t_end, count))
    out: list[Fault] = []
    for i, t in enumerate(times.tolist()):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        r = int(rng.integers(pop.n))
        town, dev = pop.towns[r], pop.device_ids[r]
        good = {"ts": round(t, 2), "hr": 72, "spo2": 97, "worn": True}
        topic = vitals_topic(town, dev)
        if kind == "invalid_json":
            out.append(Fault(t, topic, b'{"ts": 17643, "hr": 7', kind))
        elif kind == "schema":
            bad = [{"hr": 70}, {"ts": "yesterday"}, {"ts": t, "worn": "yes"}, [1, 2, 3]]
            out.append(Fault(t, topic, orjson.dumps(bad[i // len(FAULT_KINDS) % len(bad)]), kind))
        elif kind == "too_large":
            big = {"samples": [{**good, "ts": t - j} for j in range(601)]}
            out.append(Fault(t, topic, orjson.dumps(big), kind))
        elif kind == "unknown_device":
            out.append(Fault(t, vitals_topic(town, f"ghost-{i:04d}"), orjson.dumps(good), kind))
        elif kind == "wrong_town":
            other = next((x for x in towns if x != town), None)
            if other is None:
                continue
            out.append(Fault(t, vitals_topic(other, dev), orjson.dumps(good), kind))
        elif kind == "device_mismatch":
            out.append(Fault(t, topic, orjson.dumps({**good, "device_id": dev + "-x"}), kind))
        elif kind == "future_ts":
            out.append(Fault(t, topic, orjson.dumps({**good, "ts": t + 3600.0}), kind))
        else:  # a sensor fault: the value is dropped, the rest kept
            sensor = {"ts": round(t, 2), "hr": 400, "spo2": 130, "rr": 16}
            out.append(Fault(t, topic, orjson.dumps(sensor), "dropped_value"))
    return out
