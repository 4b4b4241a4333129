"""InfluxDB line protocol for sample columns: measurement `vitals`, tags town/resident/device."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.devices import DeviceTable
from ingest.samples import VITALS, SampleColumns

MEASUREMENT = "vitals"
PRECISION_SCALE = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def escape_tag(text: str) -> str:
    """Escape a tag key or value (commas, equals signs, spaces, backslashes)."""
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ "))


def tag_prefixes(devices: DeviceTable, measurement: str = MEASUREMENT) -> list[str]:
    """Per state row: `vitals,town=..,resident=..,device=.. ` (tags sorted by key, as
    InfluxDB recommends for write performance)."""
    m = measurement.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")
    return [
        f"{m},device={escape_tag(d)},resident={escape_tag(r)},town={escape_tag(t)} "
        for d, r, t in zip(devices.device_ids, devices.resident_ids, devices.town_ids, strict=True)
    ]


def encode_lines(cols: SampleColumns, prefixes: list[str], precision: str = "ms") -> list[bytes]:
    """One line per sample that has at least one field; samples with none are left out.

    Vitals are floats rounded to 4 decimals (float32 noise), `battery` an integer (`i`),
    `worn`/`fall` booleans. Runs on the sink thread, never on the pipeline thread.
    """
    n = len(cols)
    if n == 0:
        return []
    stamps = np.rint(cols.ts * PRECISION_SCALE[precision]).astype(np.int64).tolist()
    columns: list[tuple[str, list[Any]]] = []
    for v in VITALS:
        x = getattr(cols, v)
        if np.isnan(x).all():
            continue
        columns.append((v + "=", np.round(x.astype(np.float64), 4).tolist()))
    # booleans and integers become preformatted text (None when absent)
    for name in ("worn", "fall"):
        flag = getattr(cols, name)
        if (flag >= 0).any():
            text = np.where(flag == 1, f"{name}=true", f"{name}=false").astype(object)
            text[flag < 0] = None
            columns.append(("", text.tolist()))
    if not np.isnan(cols.battery).all():
        bat = cols.battery.astype(object)
        have = ~np.isnan(cols.battery)
        bat[have] = [f"battery={b}i" for b in np.rint(cols.battery[have]).astype(np.int64)]
        bat[~have] = None
        columns.append(("", bat.tolist()))
    rows = cols.row.tolist()
    out: list[bytes] = []
    for i in range(n):
        parts = []
        for key, values in columns:
            val = values[i]
            if val is None or val != val:  # None or NaN: not measured
                continue
            parts.append(f"{key}{val!r}" if key else val)
        if parts:
            out.append(f"{prefixes[rows[i]]}{','.join(parts)} {stamps[i]}".encode())
    return out
