"""Strict, streaming structural validation of any XDF 1.0 file (``dyadlab inspect``).

The file is read chunk by chunk (never loaded whole) and checked against the byte layout the
reference writer (LabRecorder) and the readers pyxdf, libxdf and xdf-Matlab agree on. Reading
stops at the **first defect**, reported with its byte offset and chunk index; everything read
before it is summarised per stream.

What is a defect and what is a warning
--------------------------------------
*Defects* (``valid`` is False) make the file unreadable, or readable only with data loss, by at
least one of the readers: bad magic; a missing, late or duplicate FileHeader; a length-field width
other than 1, 4 or 8; a chunk too short for its tag; an unknown tag; a chunk that runs past the end
of the file (truncation: the chunk type and the number of missing bytes are named); XML that does
not parse; a StreamHeader without valid ``channel_format``/``channel_count``/``nominal_srate``; a
duplicate StreamHeader; any chunk for a stream id without a StreamHeader; Samples that cannot be
decoded (timestamp byte other than 0/8, a deduced timestamp where nothing can be deduced from,
values running past the chunk, bytes left over); a ClockOffset whose content is not 16 bytes; a
Boundary whose content is not the Boundary UUID; a second footer for a stream; samples after a
stream's footer; a footer ``sample_count`` that differs from the samples counted.

*Warnings* (``valid`` stays True) flag what every reader handles but a user should know:
timestamps going backwards, streams without footer (the file ends cleanly at a chunk boundary
after chunk N, e.g. a recording that crashed or is still being written), streams with fewer
than two clock offsets (pyxdf cannot synchronise them), non-finite clock offsets, clock offsets
after a footer, footer timestamps that differ from the data, invalid UTF-8 in strings, streams
without ``source_id``, a FileHeader version other than 1.0. A file cut exactly at a chunk boundary
is therefore *valid but incomplete* (:attr:`XdfInspection.complete` is False); a file cut inside a
chunk is a truncation defect.

Chunks are numbered from 0 (the FileHeader) in file order; byte offsets count from the start of
the file (the magic is at offset 0).
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dyadlab.acquisition.xdf import parse_stream_info
from dyadlab.xdf_format import (
    BOUNDARY_UUID,
    MAGIC,
    NUMERIC_FORMATS,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_NAMES,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
    TAGS_WITH_STREAM_ID,
)

__all__ = ["Defect", "StreamSummary", "XdfInspection", "inspect_xdf"]

_VARLEN_FORMATS = {1: "<B", 4: "<I", 8: "<Q"}
_DOUBLE = struct.Struct("<d")
_READ_BUFFER = 1 << 20
#: Shortest gap reported for regular streams, whatever their rate (seconds).
MIN_GAP_SECONDS = 0.05
#: A regular stream has a gap where consecutive samples are this many sample periods apart.
GAP_PERIODS = 2.5


@dataclass(frozen=True)
class Defect:
    """The first structural defect of a file.

    Attributes
    ----------
    message : str
        What is wrong, where, and what it means for the data.
    byte_offset : int
        Offset (from the start of the file) of the chunk or field that is wrong.
    chunk_index : int or None
        Index of the chunk (0 = FileHeader), or None for a defect before the first chunk (magic).
    """

    message: str
    byte_offset: int
    chunk_index: int | None

    def __str__(self) -> str:
        where = f"byte {self.byte_offset}"
        if self.chunk_index is not None:
            where += f", chunk #{self.chunk_index}"
        return f"{self.message} ({where})"


@dataclass
class StreamSummary:
    """What one stream holds, as far as the file could be read.

    Timestamps are the raw ones in the file (no clock synchronisation, no dejittering).
    ``duration`` is ``last - first``; ``effective_srate`` is ``(samples - 1) / duration``.
    Gaps are only measured for regular streams (``nominal_srate > 0``): intervals longer than
    ``max(2.5 / nominal_srate, 0.05 s)``. ``deduced_timestamp_count`` counts samples stored
    without a timestamp (LabRecorder's compression; readers add ``1 / nominal_srate``).
    """

    stream_id: int
    name: str
    type: str
    source_id: str
    channel_format: str
    channel_count: int
    nominal_srate: float
    sample_count: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    duration: float | None = None
    effective_srate: float | None = None
    clock_offset_count: int = 0
    clock_offset_min: float | None = None
    clock_offset_max: float | None = None
    gap_count: int = 0
    largest_gap: float | None = None
    non_monotonic_count: int = 0
    deduced_timestamp_count: int = 0
    has_footer: bool = False
    footer_sample_count: int | None = None
    header_byte_offset: int = 0


@dataclass
class XdfInspection:
    """Result of :func:`inspect_xdf`.

    Attributes
    ----------
    path : str
        The file inspected (``"<stream>"`` for a file object).
    file_size : int
        Size of the file in bytes.
    defect : Defect or None
        The first defect; reading stopped there.
    warnings : list of str
        Everything suspicious that does not make the file invalid.
    streams : list of StreamSummary
        One per StreamHeader, in file order.
    file_header : dict of str to str
        The FileHeader's elements (``version``, ``datetime``, custom metadata...).
    chunk_count : int
        Complete chunks read.
    chunk_counts : dict of str to int
        Complete chunks read per chunk type.
    """

    path: str
    file_size: int
    defect: Defect | None = None
    warnings: list[str] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    file_header: dict[str, str] = field(default_factory=dict)
    chunk_count: int = 0
    chunk_counts: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """True when no defect was found."""
        return self.defect is None

    @property
    def complete(self) -> bool:
        """True when the file is valid, holds streams, and each has its footer (a finalized recording)."""
        return self.valid and bool(self.streams) and all(stream.has_footer for stream in self.streams)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite floats become None)."""
        return _json_safe(
            {
                "path": self.path,
                "file_size": self.file_size,
                "valid": self.valid,
                "complete": self.complete,
                "defect": asdict(self.defect) if self.defect else None,
                "warnings": list(self.warnings),
                "file_header": dict(self.file_header),
                "chunk_count": self.chunk_count,
                "chunk_counts": dict(self.chunk_counts),
                "streams": [asdict(stream) for stream in self.streams],
            }
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _DefectFound(Exception):
    """Internal: stops the chunk loop at the first defect."""

    def __init__(self, message: str, byte_offset: int, chunk_index: int | None) -> None:
        super().__init__(message)
        self.defect = Defect(message, byte_offset, chunk_index)


@dataclass
class _StreamState:
    summary: StreamSummary
    value_dtype: np.dtype | None  # None for strings
    record_dtype: np.dtype | None  # timestamp byte + 8-byte timestamp + values
    gap_threshold: float | None
    last_timestamp: float | None = None
    first_non_monotonic: float | None = None
    invalid_utf8: int = 0
    footer_first: float | None = None
    footer_last: float | None = None


def inspect_xdf(source: str | os.PathLike[str] | BinaryIO) -> XdfInspection:
    """Validate an XDF file chunk by chunk and summarise its streams.

    Parameters
    ----------
    source : path or binary file object
        The file to inspect. A file object must be seekable; it is read from its start.

    Returns
    -------
    XdfInspection
        Never raises on a malformed file: defects are reported in ``.defect``.

    Raises
    ------
    OSError
        If the path cannot be opened (missing, no permission) or is not a regular file
        (:class:`NotARegularFileError`: a folder, a FIFO, a device; never waited on).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        # O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a file is refused.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            mode = os.fstat(descriptor).st_mode
            if not stat.S_ISREG(mode):
                kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"
                raise NotARegularFileError(errno.EINVAL, f"{path} is {kind}; give an .xdf file")
            handle = os.fdopen(descriptor, "rb", buffering=_READ_BUFFER)
        except BaseException:
            os.close(descriptor)
            raise
        with handle:
            return _Inspector(handle, str(path)).run()
    return _Inspector(source, "<stream>").run()


class NotARegularFileError(OSError):
    """The path names a folder, pipe, device or socket rather than a file."""


class _Inspector:
    def __init__(self, handle: BinaryIO, name: str) -> None:
        self.handle = handle
        handle.seek(0, io.SEEK_END)
        self.size = handle.tell()
        handle.seek(0)
        self.result = XdfInspection(path=name, file_size=self.size)
        self.streams: dict[int, _StreamState] = {}
        self.position = 0
        self.chunk_index = 0

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> XdfInspection:
        try:
            self._check_magic()
            while self.position < self.size:
                self._read_chunk()
            if self.chunk_index == 0:
                raise _DefectFound(
                    "file ends right after the magic: the FileHeader chunk is missing (truncated file)",
                    self.position,
                    0,
                )
        except _DefectFound as found:
            self.result.defect = found.defect
        self._finish()
        return self.result

    def _read(self, count: int) -> bytes:
        data = self.handle.read(count)
        self.position += len(data)
        return data

    def _check_magic(self) -> None:
        magic = self._read(4)
        if magic != MAGIC:
            if len(magic) < 4 and MAGIC.startswith(magic):
                raise _DefectFound(
                    f"file is {self.size} bytes long and ends inside the 4-byte magic 'XDF:' (truncated or empty file)",
                    0,
                    None,
                )
            hint = ""
            if magic[:2] == b"\x1f\x8b":
                hint = " (it is gzip-compressed: decompress it, e.g. with gunzip, and inspect again)"
            raise _DefectFound(f"not an XDF file: starts with {magic!r} instead of the magic b'XDF:'{hint}", 0, None)

    # -- chunks ----------------------------------------------------------------------------
    def _read_chunk(self) -> None:
        start = self.position
        index = self.chunk_index
        width_byte = self._read(1)
        width = width_byte[0]
        if width not in _VARLEN_FORMATS:
            raise _DefectFound(
                f"invalid length-field width {width} (must be 1, 4 or 8): corrupted data or not a chunk start",
                start,
                index,
            )
        raw_length = self._read(width)
        if len(raw_length) < width:
            raise _DefectFound(
                f"truncated chunk: the file ends inside the {width}-byte length field "
                f"({width - len(raw_length)} bytes missing)",
                start,
                index,
            )
        (length,) = struct.unpack(_VARLEN_FORMATS[width], raw_length)
        if length < 2:
            raise _DefectFound(f"chunk length {length} is too small to hold even the 2-byte tag", start, index)
        chunk_end = self.position + length
        raw_tag = self._read(2)
        if len(raw_tag) < 2:
            raise _DefectFound(
                f"truncated chunk of unknown type: the file ends inside its tag "
                f"({chunk_end - self.size} bytes missing)",
                start,
                index,
            )
        (tag,) = struct.unpack("<H", raw_tag)
        kind = TAG_NAMES.get(tag)
        if kind is None:
            raise _DefectFound(f"unknown chunk tag {tag} (valid tags are 1-6): corrupted data", start, index)
        if chunk_end > self.size:
            raise _DefectFound(
                f"truncated {kind} chunk: it needs {length + 1 + width} bytes but the file ends "
                f"after {self.size - start} ({chunk_end - self.size} bytes missing)",
                start,
                index,
            )
        stream_id = None
        if tag in TAGS_WITH_STREAM_ID:
            if length < 6:
                raise _DefectFound(
                    f"{kind} chunk length {length} is too small for tag + 4-byte stream id",
                    start,
                    index,
                )
            (stream_id,) = struct.unpack("<I", self._read(4))
        if index == 0 and tag != TAG_FILE_HEADER:
            raise _DefectFound(
                f"the first chunk is a {kind}, but an XDF file must start with its FileHeader",
                start,
                index,
            )
        if index > 0 and tag == TAG_FILE_HEADER:
            raise _DefectFound("a second FileHeader: an XDF file has exactly one", start, index)
        content = self._read(chunk_end - self.position)
        if stream_id is None:
            file_handler = {TAG_FILE_HEADER: self._file_header, TAG_BOUNDARY: self._boundary}[tag]
            file_handler(content, start, index)
        else:
            stream_handler = {
                TAG_STREAM_HEADER: self._stream_header,
                TAG_SAMPLES: self._samples,
                TAG_CLOCK_OFFSET: self._clock_offset,
                TAG_STREAM_FOOTER: self._stream_footer,
            }[tag]
            stream_handler(stream_id, content, start, index)
        self.chunk_index += 1
        self.result.chunk_count += 1
        self.result.chunk_counts[kind] = self.result.chunk_counts.get(kind, 0) + 1

    def _parse_xml(self, content: bytes, kind: str, start: int, index: int) -> ET.Element:
        try:
            root = ET.fromstring(content)
        except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: unknown encoding
            raise _DefectFound(f"{kind} XML does not parse ({exc})", start, index) from None
        if root.tag != "info":
            raise _DefectFound(f"{kind} XML root is <{root.tag}>, expected <info>", start, index)
        return root

    def _known_stream(self, stream_id: int, kind: str, start: int, index: int) -> _StreamState:
        state = self.streams.get(stream_id)
        if state is None:
            raise _DefectFound(
                f"{kind} chunk for stream id {stream_id}, which has no StreamHeader before it "
                f"(known ids: {sorted(self.streams)})",
                start,
                index,
            )
        return state

    def _file_header(self, content: bytes, start: int, index: int) -> None:
        root = self._parse_xml(content, "FileHeader", start, index)
        self.result.file_header = {child.tag: "".join(child.itertext()).strip() for child in root}
        version = self.result.file_header.get("version")
        if version != "1.0":
            self.result.warnings.append(f"FileHeader version is {version!r}, expected '1.0'")

    def _stream_header(self, stream_id: int, content: bytes, start: int, index: int) -> None:
        if stream_id in self.streams:
            raise _DefectFound(
                f"second StreamHeader for stream id {stream_id} ({self.streams[stream_id].summary.name!r})",
                start,
                index,
            )
        root = self._parse_xml(content, "StreamHeader", start, index)
        try:
            name, channel_format, channel_count, nominal_srate = parse_stream_info(
                content.decode("utf-8", errors="replace")
            )
        except ValueError as exc:
            raise _DefectFound(f"StreamHeader of stream id {stream_id}: {exc}", start, index) from None
        source_id = (root.findtext("source_id") or "").strip()
        summary = StreamSummary(
            stream_id=stream_id,
            name=name,
            type=(root.findtext("type") or "").strip(),
            source_id=source_id,
            channel_format=channel_format,
            channel_count=channel_count,
            nominal_srate=nominal_srate,
            header_byte_offset=start,
        )
        value_dtype = record_dtype = None
        if channel_format != "string":
            value_dtype = NUMERIC_FORMATS[channel_format]
            try:
                record_dtype = np.dtype(
                    [("timestamp_bytes", "u1"), ("timestamp", "<f8"), ("values", value_dtype, (channel_count,))]
                )
            except (ValueError, OverflowError, MemoryError):
                raise _DefectFound(
                    f"StreamHeader of stream id {stream_id}: {channel_count} channels of {channel_format} make "
                    "one sample too large to read",
                    start,
                    index,
                ) from None
        gap_threshold = max(GAP_PERIODS / nominal_srate, MIN_GAP_SECONDS) if nominal_srate > 0 else None
        self.streams[stream_id] = _StreamState(summary, value_dtype, record_dtype, gap_threshold)
        self.result.streams.append(summary)
        if not source_id:
            self.result.warnings.append(
                f"stream {stream_id} ({name!r}) has no source_id: LSL cannot recover it after a source restart"
            )

    # -- samples ---------------------------------------------------------------------------
    def _samples(self, stream_id: int, content: bytes, start: int, index: int) -> None:
        state = self._known_stream(stream_id, "Samples", start, index)
        summary = state.summary
        if summary.has_footer:
            raise _DefectFound(
                f"Samples for stream {stream_id} ({summary.name!r}) after its StreamFooter", start, index
            )
        label = f"Samples chunk of stream {stream_id} ({summary.name!r})"
        if not content or content[0] not in _VARLEN_FORMATS:
            width = content[0] if content else None
            raise _DefectFound(f"{label}: invalid sample-count width {width} (must be 1, 4 or 8)", start, index)
        width = content[0]
        if len(content) < 1 + width:
            raise _DefectFound(f"{label}: the chunk ends inside its sample count", start, index)
        (count,) = struct.unpack(_VARLEN_FORMATS[width], content[1 : 1 + width])
        body = memoryview(content)[1 + width :]
        value_bytes = state.value_dtype.itemsize if state.value_dtype is not None else 2  # >= varlen
        smallest_sample = 1 + value_bytes * summary.channel_count
        if count * smallest_sample > len(body):
            raise _DefectFound(
                f"{label} cannot be decoded: it announces {count} samples, but {len(body)} bytes "
                f"cannot hold more than {len(body) // smallest_sample}",
                start,
                index,
            )
        try:
            if state.record_dtype is not None:
                timestamps, deduced = self._numeric_timestamps(state, body, count)
            else:
                timestamps, deduced = self._string_timestamps(state, body, count)
        except ValueError as exc:
            raise _DefectFound(f"{label} cannot be decoded: {exc}", start, index) from None
        summary.deduced_timestamp_count += deduced
        self._account(state, timestamps)

    def _numeric_timestamps(self, state: _StreamState, body: memoryview, count: int) -> tuple[np.ndarray, int]:
        """Timestamps of one numeric Samples chunk body, and how many were deduced."""
        record = state.record_dtype
        assert record is not None and state.value_dtype is not None
        if len(body) == count * record.itemsize:
            records = np.frombuffer(body, dtype=record, count=count)
            if count == 0 or np.all(records["timestamp_bytes"] == 8):
                return records["timestamp"].astype(np.float64), 0
        # deduced (0-byte) timestamps: sample sizes differ, walk sample by sample
        value_bytes = state.value_dtype.itemsize * state.summary.channel_count
        timestamps = np.empty(count, dtype=np.float64)
        deduced = 0
        position = 0
        last = state.last_timestamp
        step = 1.0 / state.summary.nominal_srate if state.summary.nominal_srate > 0 else None
        total = len(body)
        for sample in range(count):
            last, position, was_deduced = self._timestamp(body, position, total, last, step, sample, count)
            deduced += was_deduced
            timestamps[sample] = last
            position += value_bytes
            if position > total:
                raise ValueError(f"the values of sample {sample} run past the end of the chunk")
        if position != total:
            raise ValueError(f"{total - position} bytes left over after the {count} announced samples")
        return timestamps, deduced

    @classmethod
    def _timestamp(
        cls, body: Any, position: int, total: int, last: float | None, step: float | None, sample: int, count: int
    ) -> tuple[float, int, bool]:
        """One sample's timestamp field at ``position``: (timestamp, position after it, deduced?)."""
        if position >= total:
            raise ValueError(f"it announces {count} samples but ends after {sample}")
        stamp_bytes = body[position]
        position += 1
        if stamp_bytes == 8:
            if position + 8 > total:
                raise ValueError(f"sample {sample} ends inside its timestamp")
            return _DOUBLE.unpack_from(body, position)[0], position + 8, False
        if stamp_bytes == 0:
            return cls._deduce(last, step, sample), position, True
        raise ValueError(f"sample {sample} has timestamp byte {stamp_bytes} (must be 0 or 8)")

    @staticmethod
    def _deduce(last: float | None, step: float | None, sample: int) -> float:
        if last is None:
            raise ValueError(
                f"sample {sample} is the stream's first and has no timestamp (readers would deduce it from 0.0)"
            )
        if step is None:
            raise ValueError(f"sample {sample} has no timestamp, but the stream is irregular (rate 0)")
        return last + step

    def _string_timestamps(self, state: _StreamState, body: memoryview, count: int) -> tuple[np.ndarray, int]:
        """Timestamps of one string Samples chunk body (every string checked), and how many were deduced."""
        timestamps = np.empty(count, dtype=np.float64)
        deduced = 0
        channels = state.summary.channel_count
        step = 1.0 / state.summary.nominal_srate if state.summary.nominal_srate > 0 else None
        last = state.last_timestamp
        position = 0
        total = len(body)
        data = body.tobytes()
        for sample in range(count):
            last, position, was_deduced = self._timestamp(data, position, total, last, step, sample, count)
            deduced += was_deduced
            timestamps[sample] = last
            for channel in range(channels):
                if position >= total:
                    raise ValueError(f"sample {sample} ends before channel {channel}")
                width = data[position]
                if width not in _VARLEN_FORMATS:
                    raise ValueError(f"sample {sample}, channel {channel}: invalid string-length width {width}")
                if position + 1 + width > total:
                    raise ValueError(f"sample {sample}, channel {channel}: ends inside a string length")
                (length,) = struct.unpack_from(_VARLEN_FORMATS[width], data, position + 1)
                position += 1 + width
                if position + length > total:
                    raise ValueError(
                        f"sample {sample}, channel {channel}: string of {length} bytes runs past the chunk"
                    )
                try:
                    data[position : position + length].decode("utf-8")
                except UnicodeDecodeError:
                    state.invalid_utf8 += 1
                position += length
        if position != total:
            raise ValueError(f"{total - position} bytes left over after the {count} announced samples")
        return timestamps, deduced

    def _account(self, state: _StreamState, timestamps: np.ndarray) -> None:
        count = timestamps.shape[0]
        if count == 0:
            return
        summary = state.summary
        previous = state.last_timestamp
        chained = timestamps if previous is None else np.concatenate(([previous], timestamps))
        steps = np.diff(chained)
        backwards = steps < 0
        if backwards.any():
            summary.non_monotonic_count += int(backwards.sum())
            if state.first_non_monotonic is None:
                state.first_non_monotonic = float(chained[1:][backwards][0])
        if state.gap_threshold is not None and steps.size:
            gaps = steps[steps > state.gap_threshold]
            if gaps.size:
                summary.gap_count += int(gaps.size)
                largest = float(gaps.max())
                previous_largest = summary.largest_gap
                summary.largest_gap = largest if previous_largest is None else max(previous_largest, largest)
        if summary.first_timestamp is None:
            summary.first_timestamp = float(timestamps[0])
        summary.last_timestamp = float(timestamps[-1])
        summary.sample_count += count
        state.last_timestamp = float(timestamps[-1])

    # -- other chunks ----------------------------------------------------------------------
    def _clock_offset(self, stream_id: int, content: bytes, start: int, index: int) -> None:
        state = self._known_stream(stream_id, "ClockOffset", start, index)
        summary = state.summary
        if len(content) != 16:
            raise _DefectFound(
                f"ClockOffset of stream {stream_id} ({summary.name!r}) has {len(content)} content "
                "bytes instead of 16 (collection time + offset, chunk length 22)",
                start,
                index,
            )
        collection_time, offset = struct.unpack("<dd", content)
        if summary.has_footer:
            self.result.warnings.append(
                f"ClockOffset for stream {stream_id} ({summary.name!r}) after its StreamFooter "
                f"(chunk #{index}, byte {start})"
            )
        if not (math.isfinite(collection_time) and math.isfinite(offset)):
            self.result.warnings.append(
                f"non-finite ClockOffset ({collection_time}, {offset}) for stream {stream_id} "
                f"({summary.name!r}) at chunk #{index}: clock synchronisation may fail"
            )
            return
        summary.clock_offset_count += 1
        low, high = summary.clock_offset_min, summary.clock_offset_max
        summary.clock_offset_min = offset if low is None else min(low, offset)
        summary.clock_offset_max = offset if high is None else max(high, offset)

    def _boundary(self, content: bytes, start: int, index: int) -> None:
        if content != BOUNDARY_UUID:
            raise _DefectFound(
                f"Boundary chunk does not hold the Boundary UUID (got {content[:16].hex()}, {len(content)} bytes)",
                start,
                index,
            )

    def _stream_footer(self, stream_id: int, content: bytes, start: int, index: int) -> None:
        state = self._known_stream(stream_id, "StreamFooter", start, index)
        summary = state.summary
        if summary.has_footer:
            raise _DefectFound(f"second StreamFooter for stream {stream_id} ({summary.name!r})", start, index)
        root = self._parse_xml(content, f"StreamFooter of stream {stream_id}", start, index)
        summary.has_footer = True
        count_text = (root.findtext("sample_count") or "").strip()
        if count_text:
            try:
                footer_count = int(count_text)
            except ValueError:
                raise _DefectFound(
                    f"StreamFooter of stream {stream_id}: sample_count {count_text!r} is not an integer",
                    start,
                    index,
                ) from None
            summary.footer_sample_count = footer_count
            if footer_count != summary.sample_count:
                hint = ""
                if abs(footer_count - summary.sample_count) == 1:
                    hint = " (an off-by-one like LabRecorder's before its January 2025 fix)"
                raise _DefectFound(
                    f"StreamFooter of stream {stream_id} ({summary.name!r}) says sample_count "
                    f"{footer_count}, but {summary.sample_count} samples were read{hint}",
                    start,
                    index,
                )
        else:
            self.result.warnings.append(f"StreamFooter of stream {stream_id} ({summary.name!r}) has no sample_count")
        for tag, observed in (
            ("first_timestamp", summary.first_timestamp),
            ("last_timestamp", summary.last_timestamp),
        ):
            text = (root.findtext(tag) or "").strip()
            if not text or observed is None:
                continue
            try:
                declared = float(text)
            except ValueError:
                self.result.warnings.append(f"StreamFooter of stream {stream_id}: {tag} {text!r} is not a number")
                continue
            # LabRecorder's timestamp compression can leave its footer one sample period off
            tolerance = 1e-6 + (1.0 / summary.nominal_srate if summary.nominal_srate > 0 else 0.0)
            if not math.isclose(declared, observed, rel_tol=0, abs_tol=tolerance):
                self.result.warnings.append(
                    f"StreamFooter of stream {stream_id} ({summary.name!r}): {tag} {declared!r} "
                    f"differs from the data ({observed!r})"
                )

    # -- summary ---------------------------------------------------------------------------
    def _finish(self) -> None:
        warnings = self.result.warnings
        for state in self.streams.values():
            summary = state.summary
            if summary.first_timestamp is not None and summary.last_timestamp is not None:
                summary.duration = summary.last_timestamp - summary.first_timestamp
                if summary.sample_count > 1 and summary.duration > 0:
                    summary.effective_srate = (summary.sample_count - 1) / summary.duration
            label = f"stream {summary.stream_id} ({summary.name!r})"
            if summary.non_monotonic_count:
                warnings.append(
                    f"{label}: timestamps go backwards {summary.non_monotonic_count} time(s), first at "
                    f"t={state.first_non_monotonic!r}"
                )
            if state.invalid_utf8:
                warnings.append(f"{label}: {state.invalid_utf8} string value(s) are not valid UTF-8")
            if self.result.defect is None:
                if summary.clock_offset_count == 0:
                    warnings.append(
                        f"{label}: no clock offsets; readers cannot map its timestamps onto the "
                        "recorder's clock (pyxdf leaves it unsynchronised)"
                    )
                elif summary.clock_offset_count == 1:
                    warnings.append(f"{label}: only 1 clock offset; readers cannot estimate clock drift")
                if summary.sample_count == 0:
                    warnings.append(f"{label}: no samples")
        if self.result.defect is None and not self.result.streams:
            warnings.append("the file holds no streams (no StreamHeader)")
        without_footer = [s.stream_id for s in self.result.streams if not s.has_footer]
        if self.result.defect is None and without_footer:
            warnings.append(
                f"file ends cleanly after chunk #{self.chunk_index - 1} (byte {self.position}) without "
                f"a StreamFooter for stream id(s) {without_footer}: the recording was not finalized "
                "(crash, or still being written); all chunks present are intact"
            )
