"""Decode and validate vitals and status messages in batches, straight into columns.

Every contract rule for samples lives here: size and batch limits, strict types, the
device and town of the topic, the `device_id` field, plausibility ranges (a bad value is
dropped and counted, the rest of the sample kept), future timestamps. A message that
cannot be used is rejected whole with one of the contract's reasons and a detail that
says what was wrong. De-duplication against state happens in the pipeline.
"""

from __future__ import annotations

import logging
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from ingest.devices import DeviceTable
from ingest.samples import PLAUSIBLE, SampleColumns, row_ts_order
from ingest.wire import (
    DECODE_MESSAGE,
    DECODE_PLAIN,
    DECODE_STATUS,
    FLOAT_FIELDS,
    Message,
    PlainMessage,
    is_plain,
    to_table,
)

TOPIC_ROOT = "carewatch/v1"
HANDOFF_ROOT = "carewatch/system/pipeline/handoff"  # see ingest.handoff
REJECTION_REASONS = (
    "invalid_json",
    "schema",
    "too_large",
    "unknown_device",
    "wrong_town",
    "device_mismatch",
    "future_ts",
)

log = logging.getLogger(__name__)


DEEP = "JSON nesting too deep"


def not_utf8(payload: bytes) -> str | None:
    """Why a payload is not UTF-8 text (JSON must be), else None. msgspec checks only the
    strings it keeps, and raises UnicodeDecodeError (not a DecodeError) for those: a
    non-UTF-8 `device_id` must be a rejection, never an exception out of the decoder."""
    if payload.isascii():  # the common case, checked in C without decoding
        return None
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"JSON is malformed: not UTF-8 text ({exc.reason} at byte {exc.start})"
    return None


_F0, _F1 = 2, 2 + len(FLOAT_FIELDS)  # float block within the table
_LO = np.array([PLAUSIBLE[v][0] for v in FLOAT_FIELDS], np.float32)
_HI = np.array([PLAUSIBLE[v][1] for v in FLOAT_FIELDS], np.float32)
_ID_GETTER = operator.attrgetter("device_id")
BATTERY_NOT_INTEGER = "battery must be an integer"
_SCHEMA_PROBLEMS = (
    "ts must be a positive epoch time in seconds",
    "seq must be an integer >= 0",
    BATTERY_NOT_INTEGER,
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
    ts: float | None = None  # the message's own `ts`, when given and plausible
    battery_fault: bool = False  # a battery outside 0-100 was dropped (a sensor fault)


def split_topic(topic: str) -> tuple[str, str, str] | None:
    """(town, device, leaf) of a `carewatch/v1/{town}/{device}/{leaf}` topic, or of the same
    handed over from a left-behind session (`HANDOFF_ROOT/{town}/{device}/{leaf}`,
    `ingest.handoff`), else None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "carewatch" and parts[1] == "v1":
        return parts[2], parts[3], parts[4]
    if len(parts) == 7 and topic.startswith(HANDOFF_ROOT + "/"):
        return parts[4], parts[5], parts[6]
    return None


def original_topic(topic: str) -> str:
    """The `carewatch/v1/...` topic a message was first published on (handed over or not)."""
    if topic.startswith(HANDOFF_ROOT + "/"):
        return TOPIC_ROOT + topic[len(HANDOFF_ROOT):]
    return topic


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
        self.not_owned = 0  # valid messages of another worker's towns, dropped
        self._warned_towns: set[str] = set()
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
            if home == town:  # not the device's fault: a subscription this process should
                # not have (tell the operator, not the device, whose message was valid)
                self.not_owned += 1
                if town not in self._warned_towns:
                    self._warned_towns.add(town)
                    log.warning("messages of town %s reach this worker, which does not own "
                                "it: dropped here (its owner has them)", town)
                return None
            if home is not None:  # registered, but owned by another worker's town
                reject(
                    "wrong_town", f"device {device!r} is registered to town {home!r}, not {town!r}"
                )
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
        rejections: list[Rejection] = []
        samples: list[Any] = []
        plain_batches = True  # every sample so far from a plain decoder's batch
        msg_rows: list[int] = []
        msg_counts: list[int] = []
        msg_meta: list[tuple[str, bytes, float]] = []
        known_topics, max_bytes = self._known_topics, self.max_message_bytes
        # text and plainness checked once over the step's payloads (a join and three scans,
        # under half the per-message cost); per message only when the whole says "maybe"
        joined = b"".join([m[1] for m in messages])
        all_ascii, all_plain = joined.isascii(), is_plain(joined)
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
            if not all_ascii and (bad_text := not_utf8(payload)) is not None:
                rejections.append(
                    Rejection(topic, town, device, "invalid_json", bad_text, received_at)
                )
                continue
            try:
                msg: Message | PlainMessage = (
                    DECODE_PLAIN if all_plain or is_plain(payload) else DECODE_MESSAGE
                ).decode(payload)
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
            # a missing `ts` is found on the table (NaN), and named there
            batch: list[Any] | None = msg.samples
            if batch is None:
                plain_batches = False
                if isinstance(msg, Message) and msg.device_id not in (None, device):
                    batch = None  # the exact problem is named below
                else:
                    batch = [msg]
            elif 0 < len(batch) <= self.max_batch_samples:
                if isinstance(msg, Message):
                    plain_batches = False
                    ids = set(map(_ID_GETTER, batch))
                    ids.add(msg.device_id)  # the batch's own `device_id` must match too
                    if ids - {None, device}:
                        batch = None
            else:
                batch = None
            if batch is None:  # named from the full decoder's view (a rare, slow path)
                full = msg if isinstance(msg, Message) else DECODE_MESSAGE.decode(payload)
                problem = self._message_problem(full, device)
                assert problem is not None
                reason, detail = problem
                rejections.append(Rejection(topic, town, device, reason, detail, received_at))
                continue
            samples.extend(batch)
            msg_rows.append(row)
            msg_counts.append(len(batch))
            msg_meta.append((topic, payload, received_at))
        if not samples:
            return DecodedVitals(SampleColumns.empty(), rejections)
        out = DecodedVitals(_PLACEHOLDER, rejections)
        self._to_columns(out, to_table(samples, plain_batches), msg_rows, msg_counts, msg_meta)
        return out

    def _to_columns(
        self,
        out: DecodedVitals,
        table: np.ndarray,
        msg_rows: list[int],
        msg_counts: list[int],
        msg_meta: list[tuple[str, bytes, float]],
    ) -> None:
        """Validate the kept messages' samples (`table`, one row each) and fill `out`."""
        n, n_msg = len(table), len(msg_counts)
        if n == n_msg:  # one sample a message: the common live case
            msg_index = np.arange(n)
            rows = np.array(msg_rows, np.int32)
        else:
            counts = np.array(msg_counts, np.int64)
            msg_index = np.repeat(np.arange(n_msg), counts)
            rows = np.repeat(np.array(msg_rows, np.int32), counts)
        ts, seq, battery = table[:, 0], table[:, 1], table[:, _F1 - 1]
        keep_msg: np.ndarray | None = None  # None: every message kept
        # whole-message schema problems that are cheaper to find on columns
        # floor(x) < x is x != floor(x) for numbers, and False for NaN (absent)
        bad_ts = ~(ts > 0)
        bad_seq = (seq < 0) | (np.floor(seq) < seq)
        bad_battery = np.floor(battery) < battery
        if (bad_ts | bad_seq | bad_battery).any():
            keep_msg = np.ones(n_msg, bool)
            for m in np.unique(msg_index[np.isnan(ts)]).tolist():  # missing or null: named
                keep_msg[m] = False
                topic, payload, _ = msg_meta[m]
                device = (split_topic(topic) or ("_", "_", ""))[1]
                problem = self._message_problem(DECODE_MESSAGE.decode(payload), device)
                assert problem is not None
                self._reject_meta(out, msg_meta[m], *problem)
            for name, bad_s in zip(_SCHEMA_PROBLEMS, (bad_ts, bad_seq, bad_battery), strict=True):
                for m in np.unique(msg_index[bad_s]).tolist():
                    if keep_msg[m]:
                        keep_msg[m] = False
                        self._reject_meta(out, msg_meta[m], "schema", name)
        keep_s = None if keep_msg is None else keep_msg[msg_index]
        # sensor faults: drop the value, keep the sample (checked on the float32 values kept)
        with np.errstate(over="ignore"):  # 1e308 becomes inf: out of range, a fault anyway
            block = table[:, _F0:_F1].astype(np.float32)
        fault = (block < _LO) | (block > _HI)
        if fault.any():
            if keep_s is not None:
                fault &= keep_s[:, None]
            per_field = fault.sum(axis=0).tolist()
            for name, k in zip(FLOAT_FIELDS, per_field, strict=True):
                if k:
                    out.faults[name] += k
            block[fault] = np.nan
        # measured against each message's receive time, so batching never changes the verdict
        received = [m[2] for m in msg_meta]
        if min(received) == max(received):
            limit: float | np.ndarray = received[0] + self.future_tolerance_s
        else:
            limit = (np.array(received) + self.future_tolerance_s)[msg_index]
        future = ts > limit
        if future.any():
            if keep_s is not None:
                future &= keep_s
            out.future_dropped = int(future.sum())
        if out.future_dropped:
            keep_s = ~future if keep_s is None else keep_s & ~future
            if keep_msg is None:
                keep_msg = np.ones(n_msg, bool)
            remaining = np.bincount(msg_index[keep_s], minlength=n_msg)
            for m in np.flatnonzero(keep_msg & (remaining == 0)).tolist():
                keep_msg[m] = False
                received_at = msg_meta[m][2]
                self._reject_meta(
                    out,
                    msg_meta[m],
                    "future_ts",
                    f"every sample is more than {self.future_tolerance_s:g} s ahead of the "
                    f"pipeline clock ({received_at:.3f})",
                )
        out.messages_accepted = n_msg if keep_msg is None else int(keep_msg.sum())
        # one index: the kept samples, sorted by (row, ts) (stable, so arrival order breaks ties)
        sel: np.ndarray | None = None if keep_s is None else np.flatnonzero(keep_s)
        if sel is not None and len(sel) == 0:
            out.samples = SampleColumns.empty()
            return
        k = n if sel is None else len(sel)
        if k > 1:
            sel = row_ts_order(rows, ts) if sel is None else sel[row_ts_order(rows[sel], ts[sel])]
        out.samples = _columns_at(table, block, rows, sel)

    def _reject_meta(
        self, out: DecodedVitals, meta: tuple[str, bytes, float], reason: str, detail: str
    ) -> None:
        topic, _, received_at = meta
        town, device, _ = split_topic(topic) or ("_", "_", "")
        out.rejections.append(Rejection(topic, town, device, reason, detail, received_at))

    def _message_problem(self, msg: Message, device: str) -> tuple[str, str] | None:
        if msg.samples is not None:
            if len(msg.samples) > self.max_batch_samples:
                return "too_large", (
                    f"batch of {len(msg.samples)} samples exceeds the limit "
                    f"of {self.max_batch_samples}"
                )
            if not msg.samples:
                return "schema", "batch has no samples"
            if msg.device_id is not None and msg.device_id != device:
                return "device_mismatch", (
                    f"the batch's device_id {msg.device_id!r} does not match the topic's "
                    f"device {device!r}"
                )
            batch = msg.samples
        else:
            if _missing(msg.ts):
                return "schema", "Object missing required field `ts`"
            batch = [msg]
        for i, s in enumerate(batch):
            if _missing(s.ts):
                return "schema", f"Object missing required field `ts` - at `$.samples[{i}]`"
            if s.device_id is not None and s.device_id != device:
                return "device_mismatch", (
                    f"device_id {s.device_id!r} does not match the topic's device {device!r}"
                )
        return None

    def decode_status(
        self, topic: str, payload: bytes, received_at: float, rejections: list[Rejection]
    ) -> StatusUpdate | None:
        row = self._route(topic, payload, received_at, rejections)
        if row is None:
            return None
        town, device, _ = split_topic(topic) or ("_", "_", "")
        bad_text = not_utf8(payload)
        if bad_text is not None:
            rejections.append(Rejection(topic, town, device, "invalid_json", bad_text, received_at))
            return None
        try:
            status = DECODE_STATUS.decode(payload)
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
        if battery is not None and (not math.isfinite(battery) or battery != int(battery)):
            # as in a vitals sample: an integer (15 or 15.0), else the message breaks the schema
            rejections.append(Rejection(topic, town, device, "schema", BATTERY_NOT_INTEGER,
                                        received_at))
            return None
        fault = battery is not None and not 0 <= battery <= 100  # dropped and counted
        if fault:
            battery = None
        # the optional `ts` dates the battery reading (low battery's onset); one that is not
        # a positive time or lies too far ahead is not trusted, the receipt stands in
        ts = status.ts
        if ts is not None and not (0 < ts <= received_at + self.future_tolerance_s):
            ts = None
        return StatusUpdate(row, status.online, battery, received_at, ts, fault)


def _missing(ts: float | None) -> bool:
    """Absent (NaN, the default) or null."""
    return ts is None or ts != ts


_PLACEHOLDER = SampleColumns.empty()  # replaced before a DecodedVitals leaves the decoder


def _columns_at(
    table: np.ndarray, block: np.ndarray, rows: np.ndarray, sel: np.ndarray | None
) -> SampleColumns:
    """Columns of the samples at `sel` (all when None): float columns are views of one take."""
    if sel is not None:  # take: a 2-D row gather costs a third to a tenth of indexing
        table, block, rows = table.take(sel, axis=0), block.take(sel, axis=0), rows.take(sel)
    seq = table[:, 1]
    # absent (NaN) and out-of-range sequence numbers are -1; negatives were rejected
    seq_i = np.where(seq <= 2**62, seq, -1).astype(np.int64)
    flags = table[:, _F1:]
    flags_i = np.where(np.isnan(flags), -1, flags).astype(np.int8)
    return SampleColumns(
        row=rows,
        ts=table[:, 0],
        seq=seq_i,
        fall=flags_i[:, 0],
        worn=flags_i[:, 1],
        **{v: block[:, i] for i, v in enumerate(FLOAT_FIELDS)},
    )
