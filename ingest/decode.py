"""Decode and validate vitals and status messages in batches, straight into columns.

Every contract rule for samples lives here: size and batch limits, strict types, the
device and town of the topic, the `device_id` field, plausibility ranges (a bad value is
dropped and counted, the rest of the sample kept), future timestamps. A message that
cannot be used is rejected whole with one of the contract's reasons and a detail that
says what was wrong. De-duplication against state happens in the pipeline.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import numpy as np

from ingest.devices import DeviceTable
from ingest.samples import PLAUSIBLE, VITALS, SampleColumns

TOPIC_ROOT = "carewatch/v1"
REJECTION_REASONS = (
    "invalid_json",
    "schema",
    "too_large",
    "unknown_device",
    "wrong_town",
    "device_mismatch",
    "future_ts",
)


# Absent fields default to NaN (not None) so that most payloads convert to a float table
# without the slow None -> NaN path; an explicit JSON `null` still decodes as None. `ts`
# keeps None: a missing `ts` must be found per message, and `None in` is a C-level scan.
_NAN = float("nan")


class _Sample(msgspec.Struct, forbid_unknown_fields=False):
    ts: float | None = None
    seq: float | None = _NAN
    hr: float | None = _NAN
    spo2: float | None = _NAN
    rr: float | None = _NAN
    temp_c: float | None = _NAN
    sbp: float | None = _NAN
    dbp: float | None = _NAN
    activity: float | None = _NAN
    fall: bool | None = _NAN  # type: ignore[assignment]
    worn: bool | None = _NAN  # type: ignore[assignment]
    battery: float | None = _NAN
    device_id: str | None = None


class _Message(_Sample, forbid_unknown_fields=False):
    samples: list[_Sample] | None = None


class _Status(msgspec.Struct, forbid_unknown_fields=False):
    online: bool
    battery: float | None = None
    ts: float | None = None


DEEP = "JSON nesting too deep"
_DECODE_MESSAGE = msgspec.json.Decoder(_Message)
_DECODE_STATUS = msgspec.json.Decoder(_Status)
_FLOAT_FIELDS = (*VITALS, "battery")
# table columns: ts, seq, the float fields (a float32 block), fall, worn
_NUMERIC_FIELDS = ("ts", "seq", *_FLOAT_FIELDS, "fall", "worn")
_NUMERIC_GETTER = operator.attrgetter(*_NUMERIC_FIELDS)
_N_FIELDS = len(_NUMERIC_FIELDS)
_F0, _F1 = 2, 2 + len(_FLOAT_FIELDS)  # float block within the table
_LO = np.array([PLAUSIBLE[v][0] for v in _FLOAT_FIELDS], np.float32)
_HI = np.array([PLAUSIBLE[v][1] for v in _FLOAT_FIELDS], np.float32)
_TS_GETTER = operator.attrgetter("ts")
_ID_GETTER = operator.attrgetter("device_id")
_SCHEMA_PROBLEMS = (
    "ts must be a positive epoch time in seconds",
    "seq must be an integer >= 0",
    "battery must be an integer",
)


@dataclass(frozen=True)
class Rejection:
    """A message refused whole. Published on the device's `rejected` topic."""

    topic: str
    town: str
    device: str
    reason: str
    detail: str
    received_at: float

    @property
    def reply_topic(self) -> str:
        return f"{TOPIC_ROOT}/{self.town}/{self.device}/rejected"

    def payload(self) -> dict[str, object]:
        return {"reason": self.reason, "detail": self.detail, "received_at": self.received_at}


@dataclass
class DecodedVitals:
    samples: SampleColumns  # sorted by (row, ts), not yet de-duplicated
    rejections: list[Rejection] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)  # field -> values dropped
    future_dropped: int = 0
    messages_accepted: int = 0


@dataclass(frozen=True)
class StatusUpdate:
    row: int
    online: bool
    battery: float | None
    received_at: float


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """(town, device, leaf) of a `carewatch/v1/{town}/{device}/{leaf}` topic, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "carewatch" or parts[1] != "v1":
        return None
    return parts[2], parts[3], parts[4]


class VitalsDecoder:
    """Turns raw `(topic, payload, received_at)` messages into validated columns."""

    def __init__(
        self,
        devices: DeviceTable,
        max_message_bytes: int = 64 * 1024,
        max_batch_samples: int = 600,
        future_tolerance_s: float = 300.0,
    ) -> None:
        self.devices = devices
        self.max_message_bytes = max_message_bytes
        self.max_batch_samples = max_batch_samples
        self.future_tolerance_s = future_tolerance_s
        # topics of registered devices in their own town -> (row, town, device); bounded by
        # the registry, since only valid topics are cached
        # devices of towns another worker owns (`carewatch run --workers`): device -> town
        self.foreign_towns: dict[str, str] = {}
        self._known_topics: dict[str, tuple[int, str, str]] = {}

    def _route(
        self, topic: str, payload: bytes, received_at: float, rejections: list[Rejection]
    ) -> int | None:
        """The device row for a message, or None after recording why it is refused."""
        parsed = split_topic(topic)
        town, device = (parsed[0], parsed[1]) if parsed else ("_", "_")

        def reject(reason: str, detail: str) -> None:
            rejections.append(Rejection(topic, town, device, reason, detail, received_at))

        row = self.devices.row_of_device.get(device)
        if row is None:
            home = self.foreign_towns.get(device)
            if home is not None:  # registered, but owned by another worker's town
                reject("wrong_town", f"device {device!r} is registered to town {home!r}, "
                       f"not {town!r}")
                return None
            reject("unknown_device", f"device {device!r} is not in the registry")
            return None
        if self.devices.town_ids[row] != town:
            reject(
                "wrong_town",
                f"device {device!r} is registered to town "
                f"{self.devices.town_ids[row]!r}, not {town!r}",
            )
            return None
        if len(payload) > self.max_message_bytes:
            reject(
                "too_large", f"{len(payload)} bytes exceeds the limit of {self.max_message_bytes}"
            )
            return None
        return row

    def decode_vitals(self, messages: list[tuple[str, bytes, float]], now: float) -> DecodedVitals:
        out = DecodedVitals(SampleColumns.empty())
        rejections = out.rejections
        samples: list[_Sample] = []
        msg_rows: list[int] = []
        msg_counts: list[int] = []
        msg_meta: list[tuple[str, bytes, float]] = []
        known_topics, max_bytes = self._known_topics, self.max_message_bytes
        for topic, payload, received_at in messages:
            known = known_topics.get(topic)
            if known is not None and len(payload) <= max_bytes:
                row, town, device = known
            else:
                routed = self._route(topic, payload, received_at, rejections)
                if routed is None:
                    continue
                parsed = split_topic(topic)
                assert parsed is not None
                row, (town, device, _) = routed, parsed
                known_topics[topic] = (row, town, device)
            try:
                msg = _DECODE_MESSAGE.decode(payload)
            except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
                rejections.append(Rejection(topic, town, device, "schema", str(exc), received_at))
                continue
            except msgspec.DecodeError as exc:
                rejections.append(
                    Rejection(topic, town, device, "invalid_json", str(exc), received_at)
                )
                continue
            except RecursionError:  # deep nesting fits in 64 KiB; must not kill the thread
                rejections.append(Rejection(topic, town, device, "schema", DEEP, received_at))
                continue
            problem = self._message_problem(msg, device)
            if problem is not None:
                reason, detail = problem
                rejections.append(Rejection(topic, town, device, reason, detail, received_at))
                continue
            batch = msg.samples if msg.samples is not None else [msg]
            samples.extend(batch)
            msg_rows.append(row)
            msg_counts.append(len(batch))
            msg_meta.append((topic, payload, received_at))
        if not samples:
            return out
        cols, msg_index = self._columns(samples, msg_rows, msg_counts)
        keep_msg = np.ones(len(msg_counts), bool)
        # whole-message schema problems that are cheaper to find on columns
        for name, bad in self._column_schema_problems(cols).items():
            for m in np.unique(msg_index[bad]):
                if keep_msg[m]:
                    keep_msg[m] = False
                    topic, _, received_at = msg_meta[m]
                    town, device, _ = split_topic(topic) or ("_", "_", "")
                    rejections.append(Rejection(topic, town, device, "schema", name, received_at))
        # sensor faults: drop the value, keep the sample
        for v in _FLOAT_FIELDS:
            x = getattr(cols, v)
            lo, hi = PLAUSIBLE[v]
            with np.errstate(invalid="ignore"):
                bad = ((x < lo) | (x > hi)) & keep_msg[msg_index]
            if bad.any():
                out.faults[v] += int(bad.sum())
                x[bad] = np.nan
        # measured against each message's receive time, so batching never changes the verdict
        received = np.repeat(np.asarray([m[2] for m in msg_meta]), np.asarray(msg_counts))
        future = cols.ts > received + self.future_tolerance_s
        keep = keep_msg[msg_index] & ~future
        out.future_dropped = int((future & keep_msg[msg_index]).sum())
        if out.future_dropped:
            remaining = np.bincount(msg_index[keep], minlength=len(msg_counts))
            for m in np.flatnonzero(keep_msg & (remaining == 0)):
                keep_msg[m] = False
                topic, _, received_at = msg_meta[m]
                town, device, _ = split_topic(topic) or ("_", "_", "")
                rejections.append(
                    Rejection(
                        topic,
                        town,
                        device,
                        "future_ts",
                        f"every sample is more than {self.future_tolerance_s:g} s ahead of the "
                        f"pipeline clock ({received_at:.3f})",
                        received_at,
                    )
                )
        out.messages_accepted = int(keep_msg.sum())
        out.samples = cols.take(keep).sorted_by_row_ts()
        return out

    def _message_problem(self, msg: _Message, device: str) -> tuple[str, str] | None:
        if msg.samples is not None:
            if len(msg.samples) > self.max_batch_samples:
                return "too_large", (
                    f"batch of {len(msg.samples)} samples exceeds the limit "
                    f"of {self.max_batch_samples}"
                )
            if not msg.samples:
                return "schema", "batch has no samples"
            batch = msg.samples
        else:
            if msg.ts is None:
                return "schema", "Object missing required field `ts`"
            batch = [msg]
        for i, s in enumerate(batch):
            if s.ts is None:
                return "schema", f"Object missing required field `ts` - at `$.samples[{i}]`"
            if s.device_id is not None and s.device_id != device:
                return "device_mismatch", (
                    f"device_id {s.device_id!r} does not match the topic's device {device!r}"
                )
        return None

    @staticmethod
    def _columns(
        samples: list[_Sample], msg_rows: list[int], msg_counts: list[int]
    ) -> tuple[SampleColumns, np.ndarray]:
        n = len(samples)
        counts = np.asarray(msg_counts, np.int64)
        msg_index = np.repeat(np.arange(len(counts)), counts)
        rows = np.repeat(np.asarray(msg_rows, np.int32), counts)
        # one C-level getter call per sample, then one conversion (None -> NaN) for all
        table = np.array(list(map(_NUMERIC_GETTER, samples)), np.float64).reshape(n, -1)
        f64 = {name: table[:, i] for i, name in enumerate(_NUMERIC_FIELDS)}
        seq = f64["seq"]
        cols = SampleColumns(
            row=rows,
            ts=f64["ts"],
            seq=np.where(np.isnan(seq) | (seq < 0) | (seq > 2**62), -1, seq).astype(np.int64),
            fall=np.where(np.isnan(f64["fall"]), -1, f64["fall"]).astype(np.int8),
            worn=np.where(np.isnan(f64["worn"]), -1, f64["worn"]).astype(np.int8),
            **{v: f64[v].astype(np.float32) for v in _FLOAT_FIELDS},
        )
        # keep the float64 originals for the schema checks that need them
        cols._seq_raw = seq  # type: ignore[attr-defined]
        cols._battery_raw = f64["battery"]  # type: ignore[attr-defined]
        assert len(cols) == n
        return cols, msg_index

    @staticmethod
    def _column_schema_problems(cols: SampleColumns) -> dict[str, np.ndarray]:
        seq = cols._seq_raw  # type: ignore[attr-defined]
        battery = cols._battery_raw  # type: ignore[attr-defined]
        with np.errstate(invalid="ignore"):
            return {
                "ts must be a positive epoch time in seconds": ~(cols.ts > 0),
                "seq must be an integer >= 0": ~np.isnan(seq)
                & ((seq < 0) | (seq != np.floor(seq))),
                "battery must be an integer": ~np.isnan(battery) & (battery != np.floor(battery)),
            }

    def decode_status(
        self, topic: str, payload: bytes, received_at: float, rejections: list[Rejection]
    ) -> StatusUpdate | None:
        row = self._route(topic, payload, received_at, rejections)
        if row is None:
            return None
        town, device, _ = split_topic(topic) or ("_", "_", "")
        try:
            status = _DECODE_STATUS.decode(payload)
        except msgspec.ValidationError as exc:
            rejections.append(Rejection(topic, town, device, "schema", str(exc), received_at))
            return None
        except msgspec.DecodeError as exc:
            rejections.append(Rejection(topic, town, device, "invalid_json", str(exc), received_at))
            return None
        except RecursionError:
            rejections.append(Rejection(topic, town, device, "schema", DEEP, received_at))
            return None
        battery = status.battery
        if battery is not None and not (0 <= battery <= 100 and battery == int(battery)):
            battery = None
        return StatusUpdate(row, status.online, battery, received_at)
