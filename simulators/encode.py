"""Arrays to JSON bytes without a Python object per sample.

Every message of a chunk is rendered into a fixed-width byte matrix (residents, messages,
columns): constant keys from a template row, numbers written digit by digit with NumPy
integer arithmetic, right-aligned. Unused columns (leading digit places, absent fields,
unsent samples) hold a sentinel byte 0, removed at the end by one boolean compaction, so the
output is compact JSON. Rows are reordered by receive time before compaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.physiology import Chunk

SENTINEL = 0
MAX_PAYLOAD = 64 * 1024  # the contract's limit per message

# (field, key, width, decimals, optional): the sample object, in wire order.
SAMPLE_FIELDS: tuple[tuple[str, str, int, int, bool], ...] = (
    ("ts", '{"ts":', 13, 2, False),
    ("seq", ',"seq":', 7, 0, False),  # a device counter wrapping at 10**7
    ("hr", ',"hr":', 3, 0, True),
    ("spo2", ',"spo2":', 3, 0, True),
    ("rr", ',"rr":', 2, 0, True),
    ("temp_c", ',"temp_c":', 4, 1, True),
    ("sbp", ',"sbp":', 3, 0, True),
    ("dbp", ',"dbp":', 3, 0, True),
    ("activity", ',"activity":', 5, 2, False),
    ("fall", ',"fall":', 4, 0, True),  # sent only when the device's detector fired
    ("worn", ',"worn":', 5, 0, False),
    ("battery", ',"battery":', 3, 0, False),
)
# Small values are rendered by table look-up: (max scaled value, decimals).
_SMALL = {"hr": (999, 0), "spo2": (999, 0), "rr": (99, 0), "temp_c": (999, 1), "sbp": (999, 0),
          "dbp": (999, 0), "activity": (1599, 2), "battery": (100, 0)}


def _table(key: str, width: int, top: int, decimals: int, pad: int) -> np.ndarray:
    """Rows `key + right-aligned number` for 0..top, then one all-pad row (absent)."""
    rows = np.full((top + 2, len(key) + width), pad, np.uint8)
    for v in range(top + 1):  # built once per encoder
        text = f"{v / 10 ** decimals:.{decimals}f}" if decimals else str(v)
        cell = (key + text.rjust(width, chr(pad))).encode()
        rows[v] = np.frombuffer(cell, np.uint8)
    return rows


_DIGITS5 = np.frombuffer("".join(f"{v:05d}" for v in range(100_000)).encode(),
                         np.uint8).reshape(100_000, 5)
_DIGITS3 = _DIGITS5[:1000, 2:]
# leading zeros of each 5-digit row (the last digit always shows)
_LEAD_ZERO = np.cumprod(ord("0") == _DIGITS5, axis=1).astype(bool)
_LEAD_ZERO[:, -1] = False
_DIGITS2 = _DIGITS5[:100, 3:]


def _gather(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """table[idx] with whole rows moved as opaque records (much faster than a 2-D take)."""
    w = table.shape[1]
    rec = np.ascontiguousarray(table).view(f"V{w}").ravel()
    return rec[idx.ravel()].view(np.uint8).reshape(*idx.shape, w)


def render_fixed_epoch(v: np.ndarray, decimals: int, key: bytes = b"") -> np.ndarray:
    """Epoch seconds (10 integer digits, 2 or 3 decimals) as fixed-width text, after `key`."""
    scaled = np.round(v * 10 ** decimals).astype(np.int64)
    hi, rest = np.divmod(scaled, 10 ** (5 + decimals))
    mid, frac = np.divmod(rest, 10 ** decimals)
    dec = _DIGITS3 if decimals == 3 else _DIGITS2
    dot = np.full((*v.shape, 1), 46, np.uint8)
    parts = [_gather(_DIGITS5, hi % 100_000), _gather(_DIGITS5, mid), dot, _gather(dec, frac)]
    if key:
        parts.insert(0, np.broadcast_to(np.frombuffer(key, np.uint8), (*v.shape, len(key))))
    return np.ascontiguousarray(np.concatenate(parts, axis=-1))


@dataclass
class Encoded:
    """Messages of one chunk in receive order: message i is buf[off[i]:off[i+1]]."""

    t: np.ndarray  # float64 receive time (record) or send time (live)
    buf: np.ndarray  # uint8
    off: np.ndarray  # int64, len = messages + 1
    row: np.ndarray  # int64 resident row of each message
    samples: np.ndarray  # int64 samples in each message

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def message(self, i: int) -> bytes:
        return self.buf[self.off[i]:self.off[i + 1]].tobytes()

    def messages(self) -> list[bytes]:
        raw = self.buf.tobytes()
        o = self.off.tolist()
        return [raw[o[i]:o[i + 1]] for i in range(len(o) - 1)]


class Layout:
    """Column layout of one message: [wrapper prefix] [batch head] K samples [tails]."""

    def __init__(self, batch: int, record: bool, topic_width: int, pad: int) -> None:
        parts: list[bytes] = []
        self.cols: dict[str, tuple[int, int]] = {}

        def used() -> int:
            return sum(len(p) for p in parts)

        def slot(name: str, width: int) -> None:
            self.cols[name] = (used(), used() + width)
            parts.append(bytes([pad]) * width)

        if record:
            parts.append(b'{"t":')
            slot("t", 14)
            parts.append(b',"topic":')
            slot("topic", topic_width + 2)  # with its quotes, so padding lies outside them
            parts.append(b',"payload":')
        payload_start = used()
        if batch > 1:
            parts.append(b'{"samples":[')
        self.sample_start = used()
        self.field_cols: dict[str, tuple[int, int]] = {}
        pos = 0
        for name, key, width, _dec, _opt in SAMPLE_FIELDS:
            self.field_cols[name] = (pos, pos + len(key) + width)
            pos += len(key) + width
        self.close_col = pos  # "}"
        self.sep_col = pos + 1  # "," between samples, "]" after the last one
        self.sample_width = pos + (2 if batch > 1 else 1)
        names = [f[0] for f in SAMPLE_FIELDS] + ["close"] + (["sep"] if batch > 1 else [])
        widths = [b - a for a, b in self.field_cols.values()] + [1] + ([1] if batch > 1 else [])
        self.sample_dtype = np.dtype({"names": names, "formats": [f"V{w}" for w in widths]})
        sample = bytes([pad]) * pos + (b"}," if batch > 1 else b"}")
        parts.append(sample * batch)
        if batch > 1:
            parts.append(b"}")
        self.payload_width = used() - payload_start  # the message, at its widest
        if record:
            parts.append(b"}\n")
        self.template = np.frombuffer(b"".join(parts), np.uint8).copy()
        self.width = self.template.size


class Encoder:
    """Renders chunks of samples to per-device messages (live) or replay lines (record).

    Live messages are compacted (no padding). Replay lines keep their fixed width, padded
    with JSON whitespace: a compaction pass costs more than the generation itself, and
    every JSON reader skips blanks between tokens. Except for batches whose padded payload
    could exceed the contract's 64 KiB (over ~420 samples): the pipeline counts the blanks,
    so every such message was rejected as too_large on replay; those lines are compacted.
    """

    def __init__(self, topics: list[str], batch: int = 1, record: bool = False) -> None:
        if batch < 1 or batch > 600:
            raise ValueError("batch must be 1..600 (the contract's batch limit)")
        self.batch, self.record = batch, record
        width = max((len(t) for t in topics), default=1)
        self.compact = not record or Layout(batch, record, width, 32).payload_width > MAX_PAYLOAD
        self.pad = SENTINEL if self.compact else 32
        self.layout = Layout(batch, record, width, self.pad)
        tbl = np.full((len(topics), width + 2), self.pad, np.uint8)
        for i, t in enumerate(topics):  # once per run, not per sample
            tbl[i, : len(t) + 2] = np.frombuffer(f'"{t}"'.encode(), np.uint8)
        self.topics = tbl
        pad = self.pad
        self.tables = {name: _table(key, w, _SMALL[name][0], dec, pad)
                       for name, key, w, dec, _o in SAMPLE_FIELDS if name in _SMALL}
        self.tables["worn"] = np.frombuffer(b',"worn":false,"worn":' + bytes([pad]) + b"true",
                                            np.uint8).reshape(2, 13).copy()
        self.tables["fall"] = np.frombuffer(bytes([pad]) * 12 + b',"fall":true', np.uint8
                                            ).reshape(2, 12).copy()
        self.tables_v = {name: t.view(f"V{t.shape[1]}").ravel() for name, t in self.tables.items()}
        self.topics_v = self.topics.view(f"V{self.topics.shape[1]}").ravel()
        sw = self.layout.sample_width
        self.blank = np.frombuffer(bytes([pad]) * sw, np.uint8).view(self.layout.sample_dtype)[0]
        hi_txt = [(',"seq":' + (str(v) if v else "").rjust(2, chr(pad))).encode()
                  for v in range(100)]
        self.seq_hi = np.frombuffer(b"".join(hi_txt), np.uint8).reshape(100, 9).copy()
        stripped = np.where(_LEAD_ZERO, np.uint8(pad), _DIGITS5)
        self.seq_lo = np.concatenate([_DIGITS5, stripped])
        self._buf: np.ndarray | None = None

    def _seq(self, seq: np.ndarray) -> np.ndarray:
        """Key and counter (wrapping at 10**7) from two look-ups, leading zeros stripped."""
        hi, lo = np.divmod(seq.astype(np.int64) % 10**7, 100_000)
        top = _gather(self.seq_hi, hi)
        low = _gather(self.seq_lo, lo + (hi == 0) * 100_000)
        return np.concatenate([top, low], axis=-1)

    def encode(self, c: Chunk) -> Encoded:
        lay, k = self.layout, self.batch
        n, m = c.shape
        if m % k:
            raise ValueError("chunk length must be a multiple of the batch size")
        nm = m // k
        sent = c.sent.reshape(n * nm, k)
        any_sent = sent.any(axis=1)
        last = k - 1 - np.argmax(sent[:, ::-1], axis=1)  # last sample sent in each message
        when = c.true_t + c.delay if self.record else c.true_t  # live: sent when taken
        msg_t = np.take_along_axis(when.reshape(n * nm, k), last[:, None], 1)[:, 0]
        sel = np.flatnonzero(any_sent)
        order = sel[np.argsort(msg_t[sel], kind="stable")]
        total = order.size
        if self._buf is None or self._buf.shape[0] < total:
            self._buf = np.empty((max(total, n * nm), lay.width), np.uint8)
            self._buf[...] = lay.template
        out = self._buf[:total]
        s0 = lay.sample_start
        # one record per sample: whole fields move as opaque values, not byte by byte
        sv = out[:, s0:s0 + k * lay.sample_width].view(lay.sample_dtype)  # (total, k)

        def pick(a: np.ndarray) -> np.ndarray:
            return a.reshape(n * nm, k)[order]

        sv["ts"] = render_fixed_epoch(pick(c.ts), 2, b'{"ts":').view(f"V{6 + 13}")[..., 0]
        sv["seq"] = self._seq(pick(c.seq)).view("V14")[..., 0]
        for name, _key, _w, dec, _optional in SAMPLE_FIELDS[2:]:
            table = self.tables_v[name]
            raw = pick(getattr(c, name))
            if name in ("worn", "fall"):
                idx = raw.astype(np.intp)
            else:
                top = _SMALL[name][0]
                scaled = np.round(raw * np.float32(10**dec))
                idx = np.where(np.isnan(raw), top + 1,
                               np.clip(np.nan_to_num(scaled), 0, top)).astype(np.intp)
            sv[name] = table[idx]
        sv["close"] = b"}"
        unsent = np.nonzero(~sent[order])
        if k > 1:
            sv["sep"] = b","
            sv["sep"][np.arange(total), last[order]] = b"]"  # the last sample ends the array
        if unsent[0].size:
            sv[unsent] = self.blank
        t_sorted = msg_t[order]
        rows = order // nm
        counts = sent[order].sum(axis=1)
        if self.record:
            t0, t1 = lay.cols["t"]
            out[:, t0:t1].view("V14")[:, 0] = render_fixed_epoch(t_sorted, 3).view("V14")[:, 0]
            p0, p1 = lay.cols["topic"]
            out[:, p0:p1].view(f"V{p1 - p0}")[:, 0] = self.topics_v[rows]
        if not self.compact:
            # fixed-width lines padded with JSON blanks: compaction would cost more than
            # generating the data, and every JSON reader skips blanks between tokens
            return Encoded(t=t_sorted, buf=out.reshape(-1),
                           off=np.arange(total + 1, dtype=np.int64) * lay.width, row=rows,
                           samples=counts)
        keep = out != SENTINEL
        off = np.zeros(total + 1, np.int64)
        np.cumsum(np.count_nonzero(keep, axis=1), out=off[1:])
        return Encoded(t=t_sorted, buf=out[keep], off=off, row=rows, samples=counts)
