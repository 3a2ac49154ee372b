"""A small XDF 1.0 writer that shares no code with dyadlab's (``dyadlab.acquisition.xdf``), for tests
that compare dyadlab's reader with pyxdf on files dyadlab did not write.

It writes what other writers write and dyadlab's writer never does: EEG-only streams, every
value format, LabRecorder's timestamp compression (a timestamp is left out when it equals the
previous one plus the sampling period), 8-byte length fields, chunks of any size, streams whose
header comes in the middle of the file, clock offsets of a sender clock that is off and drifts,
clock resets, and files cut anywhere. Layout from the XDF 1.0 specification (sccn/xdf wiki,
"Specifications"): ``[width][length][tag][content]``, little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
NUMERIC = {"int8": "<i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4", "double64": "<f8"}


def _varlen(value: int, wide: bool = False) -> bytes:
    if wide:
        return b"\x08" + struct.pack("<Q", value)
    if value < 256:
        return bytes([1, value])
    if value <= 0xFFFFFFFF:
        return b"\x04" + struct.pack("<I", value)
    return b"\x08" + struct.pack("<Q", value)


@dataclass
class Stream:
    """One stream to write.

    ``values``: (n_samples, n_channels) array of the format's dtype, or a list of lists of str.
    ``stamps``: the raw timestamps (the sender's clock). ``chunks``: sizes of consecutive
    Samples chunks (they must add up to the sample count). ``compress``: leave out timestamps as
    LabRecorder does. ``offsets``: (collection time, offset value) ClockOffset pairs.
    ``channels``: (label, type, unit) per channel for ``desc/channels``.
    """

    stream_id: int
    name: str
    type: str
    channel_format: str
    nominal_srate: float
    values: np.ndarray | list
    stamps: np.ndarray
    chunks: list[int]
    channels: list[tuple[str, str, str]] = field(default_factory=list)
    source_id: str = ""
    compress: bool = False
    offsets: list[tuple[float, float]] = field(default_factory=list)
    footer: bool = True

    @property
    def n_channels(self) -> int:
        return len(self.values[0]) if isinstance(self.values, list) else int(self.values.shape[1])

    def header_xml(self) -> bytes:
        channels = "".join(
            f"<channel><label>{label}</label><type>{kind}</type><unit>{unit}</unit></channel>"
            for label, kind, unit in self.channels
        )
        desc = f"<desc><channels>{channels}</channels></desc>" if channels else "<desc/>"
        return (
            f'<?xml version="1.0"?><info><name>{self.name}</name><type>{self.type}</type>'
            f"<channel_count>{self.n_channels}</channel_count><nominal_srate>{self.nominal_srate!r}</nominal_srate>"
            f"<channel_format>{self.channel_format}</channel_format><source_id>{self.source_id or self.name}</source_id>"
            f"<version>1.1</version><created_at>0</created_at>{desc}</info>"
        ).encode()

    def footer_xml(self) -> bytes:
        offsets = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>" for t, v in self.offsets)
        return (
            f'<?xml version="1.0"?><info><first_timestamp>{self.stamps[0]!r}</first_timestamp>'
            f"<last_timestamp>{self.stamps[-1]!r}</last_timestamp><sample_count>{len(self.stamps)}</sample_count>"
            f"<clock_offsets>{offsets}</clock_offsets></info>"
        ).encode()

    def _deduced(self) -> np.ndarray:
        """Which samples are stored without a timestamp (LabRecorder's rule: exactly the previous
        timestamp plus the sampling period; never the first sample)."""
        deduced = np.zeros(len(self.stamps), dtype=bool)
        if self.compress and self.nominal_srate > 0:
            stamps = np.asarray(self.stamps, dtype=np.float64)
            deduced[1:] = stamps[:-1] + 1.0 / self.nominal_srate == stamps[1:]
        return deduced

    def _numeric_records(self, first: int, size: int, deduced: np.ndarray) -> bytes:
        """One chunk's samples: each [8][timestamp][values] or [0][values]."""
        values = np.ascontiguousarray(self.values[first : first + size], dtype=NUMERIC[self.channel_format])
        value_bytes = values.shape[1] * values.dtype.itemsize
        records = np.zeros((size, 9 + value_bytes), dtype=np.uint8)
        records[:, 0] = 8
        records[:, 1:9] = np.asarray(self.stamps[first : first + size], dtype="<f8").view(np.uint8).reshape(size, 8)
        records[:, 9:] = values.view(np.uint8).reshape(size, value_bytes)
        skip = deduced[first : first + size]
        records[skip, 0] = 0
        keep = np.ones(records.shape, dtype=bool)
        keep[skip, 1:9] = False
        return records[keep].tobytes()

    def _string_records(self, first: int, size: int, deduced: np.ndarray) -> bytes:
        parts = []
        for k in range(first, first + size):
            parts.append(b"\x00" if deduced[k] else b"\x08" + struct.pack("<d", float(self.stamps[k])))
            for text in self.values[k]:
                raw = text.encode("utf-8") if isinstance(text, str) else text
                parts.append(_varlen(len(raw)) + raw)
        return b"".join(parts)

    def sample_chunks(self) -> Iterable[tuple[float, bytes]]:
        """(first timestamp, Samples content without stream id) of each chunk, in order."""
        deduced = self._deduced()
        records = self._string_records if isinstance(self.values, list) else self._numeric_records
        first = 0
        for size in self.chunks:
            yield float(self.stamps[first]) if size else float("inf"), _varlen(size) + records(first, size, deduced)
            first += size
        assert first == len(self.stamps), "chunk sizes must add up to the sample count"


@dataclass
class _Chunk:
    order: float
    tag: int
    stream_id: int | None
    content: bytes


class Writer:
    """Writes streams to one file, chunks of all streams interleaved by time.

    ``wide_lengths``: every chunk length as an 8-byte field. ``boundary_every``: a Boundary chunk
    after this many Samples chunks. ``late``: stream ids whose header is written just before their
    first samples (mid-file) rather than at the start.
    """

    def __init__(self, wide_lengths: bool = False, boundary_every: int = 20, late: Iterable[int] = ()):
        self.wide = wide_lengths
        self.boundary_every = boundary_every
        self.late = set(late)
        self.offsets: list[tuple[int, int]] = []  # (byte offset, tag) of every chunk written

    def _chunk(self, handle: BinaryIO, tag: int, content: bytes, stream_id: int | None = None) -> None:
        body = struct.pack("<H", tag) + (struct.pack("<I", stream_id) if stream_id is not None else b"") + content
        self.offsets.append((handle.tell(), tag))
        handle.write(_varlen(len(body), wide=self.wide) + body)

    def write(self, path: str | Path, streams: list[Stream], header_fields: dict[str, str] | None = None) -> Path:
        path = Path(path)
        timeline: list[_Chunk] = []
        for stream in streams:
            for t, content in stream.sample_chunks():
                timeline.append(_Chunk(t, 3, stream.stream_id, content))
            for t, value in stream.offsets:
                timeline.append(_Chunk(t, 4, stream.stream_id, struct.pack("<dd", t, value)))
        timeline.sort(key=lambda c: c.order)  # stable: a stream's own chunks keep their order
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in (header_fields or {}).items())
        with open(path, "wb") as handle:
            handle.write(b"XDF:")
            self._chunk(handle, 1, f'<?xml version="1.0"?><info><version>1.0</version>{fields}</info>'.encode())
            pending = {s.stream_id: s for s in streams if s.stream_id in self.late}
            for stream in streams:
                if stream.stream_id not in pending:
                    self._chunk(handle, 2, stream.header_xml(), stream.stream_id)
            written = 0
            for chunk in timeline:
                if chunk.stream_id in pending:
                    self._chunk(handle, 2, pending.pop(chunk.stream_id).header_xml(), chunk.stream_id)
                self._chunk(handle, chunk.tag, chunk.content, chunk.stream_id)
                written += chunk.tag == 3
                if chunk.tag == 3 and written % self.boundary_every == 0:
                    self._chunk(handle, 5, BOUNDARY)
            for stream in streams:
                if stream.footer:
                    self._chunk(handle, 6, stream.footer_xml(), stream.stream_id)
        return path


def split(n: int, sizes: int | Iterable[int]) -> list[int]:
    """Chunk sizes adding up to ``n``: ``sizes`` repeated (an int, or a cycle of ints)."""
    cycle = [sizes] if isinstance(sizes, int) else list(sizes)
    out, total, i = [], 0, 0
    while total < n:
        size = min(cycle[i % len(cycle)], n - total)
        out.append(size)
        total += size
        i += 1
    return out
