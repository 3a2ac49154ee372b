"""Read XDF files fast, exactly as pyxdf reads them, with memory close to the samples' own size.

pyxdf parses every sample in Python and holds every chunk of every stream at once (a 60-minute
dyad: about 3.4 GB). This reader does the same job in three steps:

1. :func:`index_xdf` walks the chunk headers (a few bytes each, one seek per chunk) and parses
   the XML headers, footers and clock offsets. Damage it cannot get past (a length field of a
   width other than 1, 4 or 8, samples of an undeclared stream, a second header for a stream,
   a clock offset of the wrong size) raises :class:`XdfIndexError`; the caller then reads the
   file with pyxdf, which scans forward past damage. A file that ends inside a chunk (a crash or
   a pulled cable) is indexed up to its last complete chunk, and the loss is reported in
   :attr:`XdfIndex.problems`.
2. :func:`read_streams` reads the chunks in blocks of at most ``block_bytes`` (a larger chunk is
   read on its own) and unpacks each block's samples with a compiled loop that copies their
   bytes; channels go straight into channels-first arrays of the dtype each *channel group*
   asks for (EEG as float32, a marker channel as float64...), so no copy of the whole stream
   is ever held in another layout. Timestamps left out of the file are deduced as pyxdf deduces
   them (previous timestamp + 1 / nominal rate, in the same double-precision order).
3. Clock offsets are applied by pyxdf's own clock synchronisation (``_truncate_corrupted_offsets``
   and ``_clock_sync``, with ``load_xdf``'s defaults, clock resets handled), so synchronised
   timestamps are those of ``pyxdf.load_xdf(..., dejitter_timestamps=False)`` to the last bit.
   Those two functions are private to pyxdf: the tests compare the result with
   ``pyxdf.load_xdf`` on every path, so a pyxdf release that changes them fails loudly there.

Samples are copied byte for byte, so values are pyxdf's bit for bit (NaN payloads included)
before any dtype conversion the caller asks for. Strings are decoded as pyxdf decodes them
(UTF-8, invalid bytes replaced).
"""

from __future__ import annotations

import logging
import struct
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.xdf_format import (
    MAGIC,
    NUMERIC_FORMATS,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_NAMES,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
    TAGS_WITH_STREAM_ID,
)

__all__ = [
    "ChannelGroup",
    "StreamSamples",
    "XdfIndex",
    "XdfIndexError",
    "XdfStreamIndex",
    "index_xdf",
    "load_xdf",
    "read_streams",
]

logger = logging.getLogger(__name__)

#: Bytes of file read at once when unpacking samples (a larger chunk is read on its own). It
#: bounds the reader's working memory: the block plus the unpacked values of one block.
BLOCK_BYTES = 8 * 1024 * 1024

#: pyxdf.load_xdf's clock-synchronisation defaults (the arguments of its ``_clock_sync`` call).
_CLOCK_SYNC_DEFAULTS = {
    "handle_clock_resets": True,
    "reset_threshold_stds": 5,
    "reset_threshold_seconds": 5,
    "reset_threshold_offset_stds": 10,
    "reset_threshold_offset_seconds": 1,
    "winsor_threshold": 0.0001,
}
# Longest chunk lead: width byte, 8-byte length, tag, stream id, NumSamples width byte and value.
_LEAD_BYTES = 1 + 8 + 2 + 4 + 1 + 8


class XdfIndexError(DyadlabError, ValueError):
    """The file's chunk structure cannot be indexed (damaged, compressed or not XDF)."""


@dataclass
class XdfStreamIndex:
    """What the index knows of one stream before any sample is read.

    Attributes
    ----------
    stream_id : int
    info : dict
        The StreamHeader as pyxdf shapes it (every element a list: ``info["name"][0]``), with
        ``stream_id`` added.
    footer : dict or None
        The StreamFooter as pyxdf shapes it (``{"info": {...}}``), None when the file has none.
    channel_format : str
    n_channels : int
    nominal_srate : float
    clock_times, clock_values : list of float
        The ClockOffset chunks in file order.
    chunk_starts, chunk_ends : list of int
        Byte offsets of each Samples chunk's first sample and of the chunk's end.
    chunk_counts : list of int
        Samples in each chunk.
    """

    stream_id: int
    info: dict
    footer: dict | None
    channel_format: str
    n_channels: int
    nominal_srate: float
    clock_times: list[float] = field(default_factory=list)
    clock_values: list[float] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)
    chunk_ends: list[int] = field(default_factory=list)
    chunk_counts: list[int] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return sum(self.chunk_counts)

    def text(self, key: str) -> str:
        """A top-level header field as a stripped string (``""`` when absent)."""
        value = self.info.get(key)
        value = value[0] if isinstance(value, list) and value else value
        return value.strip() if isinstance(value, str) else ""


@dataclass
class XdfIndex:
    """The chunk index of one file (:func:`index_xdf`).

    Attributes
    ----------
    path : Path
    file_header : dict or None
        The FileHeader as pyxdf shapes it (``{"info": {...}}``); None when the file has none, as
        pyxdf returns it.
    streams : dict of int to XdfStreamIndex
        In order of their headers in the file.
    problems : list of str
        Damage found while indexing and read past (a file that ends inside a chunk, a footer
        that does not parse).
    """

    path: Path
    file_header: dict | None
    streams: dict[int, XdfStreamIndex]
    problems: list[str]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels of a numeric stream to return together, channels first, in one dtype.

    Attributes
    ----------
    channels : sequence of int
        Indices of the stream's channels, in the order wanted.
    dtype : numpy dtype
        The returned array's dtype; values are converted by NumPy's ``astype`` rules from the
        stream's own format.
    """

    channels: Sequence[int]
    dtype: Any


@dataclass
class StreamSamples:
    """One stream's samples as :func:`read_streams` returns them.

    Attributes
    ----------
    index : XdfStreamIndex
    time_stamps : np.ndarray, shape (n_samples,), float64
        Clock-synchronised when asked (not de-jittered).
    groups : list of np.ndarray, each shape (n_group_channels, n_samples)
        One array per :class:`ChannelGroup` asked for (numeric streams).
    strings : list of list of str or None
        A string stream's samples, ``strings[sample][channel]``.
    clock_times, clock_values : list of float
        The clock offsets used (pyxdf drops a corrupted last one, see pylsl#67).
    """

    index: XdfStreamIndex
    time_stamps: np.ndarray
    groups: list[np.ndarray]
    strings: list[list[str]] | None
    clock_times: list[float]
    clock_values: list[float]


def _xml_dict(element: ET.Element) -> dict:
    """An attribute-less XML element as pyxdf's ``_xml2dict`` shapes it: ``{tag: {child: [..]}}``
    or ``{tag: text}`` for a leaf."""
    children: defaultdict[str, list] = defaultdict(list)
    for child in element:
        for key, value in _xml_dict(child).items():
            children[key].append(value)
    return {element.tag: children or element.text}


def _parse_xml(content: bytes, what: str) -> dict:
    try:
        return _xml_dict(ET.fromstring(content.decode("utf-8", "replace")))
    except ET.ParseError as error:
        raise XdfIndexError(f"the {what} XML does not parse ({error})") from error


def index_xdf(path: str | Path) -> XdfIndex:
    """Index an XDF file's chunks: headers, footers, clock offsets and where the samples are.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    XdfIndex

    Raises
    ------
    XdfIndexError
        The file is not plain XDF or its structure is damaged before its end (see the module
        docstring); pyxdf may still read it.
    OSError
        The file cannot be opened or read.
    """
    path = Path(path)
    streams: dict[int, XdfStreamIndex] = {}
    file_header: dict | None = None
    problems: list[str] = []
    with open(path, "rb", buffering=0) as handle:
        size = handle.seek(0, 2)
        handle.seek(0)
        if handle.read(4) != MAGIC:
            raise XdfIndexError("the file does not start with 'XDF:' (not XDF, or compressed)")
        position = 4
        chunk_number = 0
        while position < size:
            handle.seek(position)
            lead = handle.read(_LEAD_BYTES)
            width = lead[0]
            if width not in (1, 4, 8):
                raise XdfIndexError(f"chunk #{chunk_number} at byte {position}: length field of width {width}")
            if len(lead) < 1 + width + 2:
                problems.append(f"the file ends inside the header of chunk #{chunk_number} (byte {position})")
                break
            length = int.from_bytes(lead[1 : 1 + width], "little")
            tag = int.from_bytes(lead[1 + width : 3 + width], "little")
            content = position + 1 + width + 2
            end = position + 1 + width + length
            name = TAG_NAMES.get(tag, f"tag-{tag}")
            if end > size:
                problems.append(
                    f"the file ends inside chunk #{chunk_number} ({name}, byte {position}): {end - size} of its "
                    f"{length} bytes are missing; the data before it are read"
                )
                break
            has_stream_id = tag in TAGS_WITH_STREAM_ID
            if length < (6 if has_stream_id else 2):
                raise XdfIndexError(f"chunk #{chunk_number} ({name}) at byte {position} is {length} bytes long")
            if tag == TAG_FILE_HEADER:
                handle.seek(content)
                file_header = _parse_xml(handle.read(end - content), "FileHeader")
            elif has_stream_id:
                stream_id = int.from_bytes(lead[3 + width : 7 + width], "little")
                if tag != TAG_STREAM_HEADER and stream_id not in streams:
                    raise XdfIndexError(f"chunk #{chunk_number} ({name}) of stream {stream_id} precedes its header")
                if tag == TAG_SAMPLES:
                    count_at = 7 + width
                    count_width = lead[count_at] if len(lead) > count_at else 0
                    if count_width not in (1, 4, 8) or content + 4 + 1 + count_width > end:
                        raise XdfIndexError(f"chunk #{chunk_number} (Samples) at byte {position}: bad sample count")
                    stream = streams[stream_id]
                    stream.chunk_counts.append(
                        int.from_bytes(lead[count_at + 1 : count_at + 1 + count_width], "little")
                    )
                    stream.chunk_starts.append(content + 4 + 1 + count_width)
                    stream.chunk_ends.append(end)
                elif tag == TAG_CLOCK_OFFSET:
                    if length != 22:
                        raise XdfIndexError(
                            f"chunk #{chunk_number} (ClockOffset) at byte {position} is {length} bytes long"
                        )
                    handle.seek(content + 4)
                    collection_time, offset = struct.unpack("<dd", handle.read(16))
                    streams[stream_id].clock_times.append(collection_time)
                    streams[stream_id].clock_values.append(offset)
                elif tag in (TAG_STREAM_HEADER, TAG_STREAM_FOOTER):  # XML after the stream id
                    handle.seek(content + 4)
                    xml = handle.read(end - content - 4)
                    if tag == TAG_STREAM_HEADER:
                        if stream_id in streams:
                            raise XdfIndexError(f"chunk #{chunk_number}: a second StreamHeader for stream {stream_id}")
                        streams[stream_id] = _stream_index(stream_id, _parse_xml(xml, f"stream {stream_id}'s header"))
                    else:
                        try:
                            streams[stream_id].footer = _parse_xml(xml, "footer")
                        except XdfIndexError as error:  # pyxdf, too, ignores a footer that does not parse
                            problems.append(f"stream {stream_id}: {error}; the footer is ignored")
            # Boundaries (and tags XDF 1.0 does not define) are skipped, as pyxdf skips them.
            position = end
            chunk_number += 1
    return XdfIndex(path=path, file_header=file_header, streams=streams, problems=problems)


def _stream_index(stream_id: int, header: dict) -> XdfStreamIndex:
    info = header.get("info")
    if not isinstance(info, dict):
        raise XdfIndexError(f"stream {stream_id}'s header has no <info> element")
    try:
        channel_format = info["channel_format"][0].strip()
        n_channels = int(info["channel_count"][0])
        nominal_srate = float(info["nominal_srate"][0])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise XdfIndexError(
            f"stream {stream_id}'s header lacks a valid channel_format, channel_count or nominal_srate ({error!r})"
        ) from error
    if channel_format not in NUMERIC_FORMATS and channel_format != "string":
        raise XdfIndexError(f"stream {stream_id} has the unknown channel_format {channel_format!r}")
    info["stream_id"] = stream_id
    return XdfStreamIndex(
        stream_id=stream_id,
        info=info,
        footer=None,
        channel_format=channel_format,
        n_channels=n_channels,
        nominal_srate=nominal_srate,
    )


_kernels: Any = None


def _compiled_kernels() -> Any:
    """The two compiled loops (numba, cached on disk after the first compilation)."""
    global _kernels
    if _kernels is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def unpack_records(
            block, starts, counts, ends, n_channels, stamps_out, stamped_out, values_out
        ):  # pragma: no cover - compiled
            """Copy each sample's timestamp bytes (if stored) and values out of ``block``, values
            channels first: ``values_out`` (channels, samples) is an unsigned integer view of the
            stream's format, each value composed from its little-endian bytes (a typed store per
            value runs about twice as fast as storing bytes).

            Returns -1 on success, else the index of the first chunk whose samples do not fill
            it exactly (pyxdf would then misread the rest of the file)."""
            itemsize = values_out.itemsize
            value_bytes = n_channels * itemsize
            out = 0
            for chunk in range(starts.shape[0]):
                at = starts[chunk]
                for _ in range(counts[chunk]):
                    if at + 1 + value_bytes > ends[chunk]:
                        return chunk
                    stamped = block[at] != 0
                    at += 1
                    stamped_out[out] = stamped
                    if stamped:
                        if at + 8 + value_bytes > ends[chunk]:
                            return chunk
                        for byte in range(8):
                            stamps_out[out, byte] = block[at + byte]
                        at += 8
                    for channel in range(n_channels):
                        if itemsize == 4:
                            values_out[channel, out] = (
                                np.uint32(block[at])
                                | (np.uint32(block[at + 1]) << 8)
                                | (np.uint32(block[at + 2]) << 16)
                                | (np.uint32(block[at + 3]) << 24)
                            )
                        elif itemsize == 2:
                            values_out[channel, out] = np.uint16(block[at]) | (np.uint16(block[at + 1]) << 8)
                        elif itemsize == 8:
                            low = (
                                np.uint64(block[at])
                                | (np.uint64(block[at + 1]) << 8)
                                | (np.uint64(block[at + 2]) << 16)
                                | (np.uint64(block[at + 3]) << 24)
                            )
                            high = (
                                np.uint64(block[at + 4])
                                | (np.uint64(block[at + 5]) << 8)
                                | (np.uint64(block[at + 6]) << 16)
                                | (np.uint64(block[at + 7]) << 24)
                            )
                            values_out[channel, out] = low | (high << 32)
                        else:
                            values_out[channel, out] = block[at]
                        at += itemsize
                    out += 1
                if at != ends[chunk]:
                    return chunk
            return -1

        @numba.njit(cache=True, nogil=True)
        def deduce_stamps(stamps, stamped, last, step):  # pragma: no cover - compiled
            """Timestamps left out of the file: previous + step, in pyxdf's order; returns the last."""
            for i in range(stamps.shape[0]):
                if not stamped[i]:
                    stamps[i] = last + step
                last = stamps[i]
            return last

        _kernels = SimpleNamespace(unpack_records=unpack_records, deduce_stamps=deduce_stamps)
    return _kernels


class _Scratch:
    """Working arrays reused from block to block (fresh ones would be paged in every time)."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, nbytes: int) -> np.ndarray:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < nbytes:
            buffer = self._buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes]


@dataclass
class _Reading:
    """One stream's outputs while its blocks are unpacked."""

    index: XdfStreamIndex
    groups: list[ChannelGroup]
    time_stamps: np.ndarray
    outputs: list[np.ndarray]
    strings: list[list[str]] | None
    filled: int = 0
    last_stamp: float = 0.0
    clock_times: list[float] = field(default_factory=list)
    clock_values: list[float] = field(default_factory=list)


def read_streams(
    index: XdfIndex,
    stream_ids: Sequence[int],
    *,
    groups: dict[int, list[ChannelGroup]] | None = None,
    synchronize_clocks: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> tuple[dict[int, StreamSamples], list[str]]:
    """Read the samples of some streams of an indexed file.

    Parameters
    ----------
    index : XdfIndex
        From :func:`index_xdf`.
    stream_ids : sequence of int
        The streams to read.
    groups : dict of int to list of ChannelGroup, optional
        Per numeric stream, the channel groups to return; default: all channels in the stream's
        own dtype, as one group.
    synchronize_clocks : bool
        Apply the clock offsets (pyxdf's synchronisation, clock resets handled).
    block_bytes : int
        Bytes of file read and unpacked at once (see :data:`BLOCK_BYTES`).

    Returns
    -------
    samples : dict of int to StreamSamples
    problems : list of str
        What pyxdf's synchronisation warned about (unusable or truncated clock offsets).

    Raises
    ------
    XdfIndexError
        A chunk's samples do not fill it exactly (pyxdf would misread the file from there).
    """
    kernels = _compiled_kernels()
    readings: dict[int, _Reading] = {}
    for stream_id in stream_ids:
        stream = index.streams[stream_id]
        n = stream.n_samples
        if stream.channel_format == "string":
            readings[stream_id] = _Reading(
                stream,
                [],
                np.zeros(n),
                [],
                [],
                clock_times=list(stream.clock_times),
                clock_values=list(stream.clock_values),
            )
            continue
        wanted = (groups or {}).get(stream_id) or [
            ChannelGroup(range(stream.n_channels), NUMERIC_FORMATS[stream.channel_format])
        ]
        for group in wanted:
            if any(not 0 <= c < stream.n_channels for c in group.channels):
                raise ValueError(
                    f"stream {stream_id} has {stream.n_channels} channels, asked for {list(group.channels)}"
                )
        outputs = [np.empty((len(group.channels), n), dtype=group.dtype) for group in wanted]
        readings[stream_id] = _Reading(
            stream,
            wanted,
            np.zeros(n),
            outputs,
            None,
            clock_times=list(stream.clock_times),
            clock_values=list(stream.clock_values),
        )

    chunks = sorted(
        (start, end, count, stream_id)
        for stream_id in readings
        for start, end, count in zip(
            index.streams[stream_id].chunk_starts,
            index.streams[stream_id].chunk_ends,
            index.streams[stream_id].chunk_counts,
        )
    )
    scratch = _Scratch()
    with open(index.path, "rb", buffering=0) as handle:
        first = 0
        while first < len(chunks):
            last = first + 1
            while last < len(chunks) and chunks[last][1] - chunks[first][0] <= block_bytes:
                last += 1
            block_start = chunks[first][0]
            block = scratch.get("block", chunks[last - 1][1] - block_start)
            handle.seek(block_start)
            if handle.readinto(block.data) != block.size:
                raise OSError(f"{index.path} is shorter than when it was indexed")
            by_stream: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
            for start, end, count, stream_id in chunks[first:last]:
                by_stream[stream_id].append((start - block_start, end - block_start, count))
            for stream_id, in_block in by_stream.items():
                reading = readings[stream_id]
                if reading.strings is not None:
                    _unpack_strings(block, in_block, reading)
                else:
                    _unpack_numeric(kernels, block, in_block, reading, scratch)
            first = last

    problems: list[str] = []
    if synchronize_clocks:
        problems = _synchronize(readings)
    result = {
        stream_id: StreamSamples(
            reading.index,
            reading.time_stamps,
            reading.outputs,
            reading.strings,
            reading.clock_times,
            reading.clock_values,
        )
        for stream_id, reading in readings.items()
    }
    return result, problems


def _unpack_numeric(
    kernels: Any, block: np.ndarray, chunks: list[tuple[int, int, int]], reading: _Reading, scratch: _Scratch
) -> None:
    stream = reading.index
    dtype = NUMERIC_FORMATS[stream.channel_format]
    starts, ends, counts = (np.array(column, dtype=np.int64) for column in zip(*chunks))
    m = int(counts.sum())
    stamps = scratch.get("stamps", m * 8).reshape(m, 8)
    stamped = scratch.get("stamped", m).view(np.bool_)
    here = slice(reading.filled, reading.filled + m)
    groups = reading.groups
    # One group of every channel in the stream's own dtype (an EEG-only stream): unpacked in place.
    direct = (
        len(groups) == 1
        and list(groups[0].channels) == list(range(stream.n_channels))
        and np.dtype(groups[0].dtype) == dtype.newbyteorder("=")
    )
    if direct:
        values = reading.outputs[0][:, here].view(f"u{dtype.itemsize}")
    else:
        values = scratch.get("values", stream.n_channels * m * dtype.itemsize).view(f"<u{dtype.itemsize}")
        values = values.reshape(stream.n_channels, m)
    bad = kernels.unpack_records(block, starts, counts, ends, stream.n_channels, stamps, stamped, values)
    if bad >= 0:
        raise XdfIndexError(
            f"a Samples chunk of stream {stream.stream_id} is not filled exactly by its "
            f"{counts[bad]} samples of {stream.n_channels} x {stream.channel_format}"
        )
    times = stamps.view("<f8").reshape(m)
    reading.last_stamp = kernels.deduce_stamps(
        times, stamped, reading.last_stamp, 1.0 / stream.nominal_srate if stream.nominal_srate > 0 else 0.0
    )
    reading.time_stamps[here] = times
    reading.filled += m
    if direct:
        return
    native = values.view(dtype)  # (channels, m)
    for group, output in zip(groups, reading.outputs):
        rows = list(group.channels)
        consecutive = rows == list(range(rows[0], rows[0] + len(rows))) if rows else True
        output[:, here] = native[rows[0] : rows[0] + len(rows)] if consecutive and rows else native[rows]


def _unpack_strings(block: np.ndarray, chunks: list[tuple[int, int, int]], reading: _Reading) -> None:
    """String samples, decoded as pyxdf decodes them (few per session: plain Python)."""
    data = block.tobytes()
    stream = reading.index
    step = 1.0 / stream.nominal_srate if stream.nominal_srate > 0 else 0.0
    assert reading.strings is not None
    try:
        for start, end, count in chunks:
            at = start
            for _ in range(count):
                if data[at] != 0:
                    reading.last_stamp = struct.unpack_from("<d", data, at + 1)[0]
                    at += 9
                else:
                    reading.last_stamp = reading.last_stamp + step
                    at += 1
                reading.time_stamps[reading.filled] = reading.last_stamp
                sample = []
                for _ in range(stream.n_channels):
                    width = data[at]
                    if width not in (1, 4, 8):
                        raise XdfIndexError(f"a string of stream {stream.stream_id} has a length of width {width}")
                    length = int.from_bytes(data[at + 1 : at + 1 + width], "little")
                    at += 1 + width
                    sample.append(data[at : at + length].decode("utf-8", "replace"))
                    at += length
                reading.strings.append(sample)
                reading.filled += 1
            if at != end:
                raise XdfIndexError(
                    f"a Samples chunk of stream {stream.stream_id} is not filled exactly by its strings"
                )
    except (IndexError, struct.error) as error:  # a byte, or a timestamp's 8, read past the data
        raise XdfIndexError(f"a Samples chunk of stream {stream.stream_id} ends inside a sample") from error


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _synchronize(readings: dict[int, _Reading]) -> list[str]:
    """pyxdf's own clock synchronisation, applied in place to the timestamps; its warnings."""
    from pyxdf import pyxdf as reference

    temp = {
        stream_id: SimpleNamespace(
            time_stamps=reading.time_stamps,
            # Only its length matters: pyxdf cuts it to the footer's sample count (pylsl#67).
            time_series=np.broadcast_to(np.int8(0), reading.time_stamps.shape),
            clock_times=reading.clock_times,
            clock_values=reading.clock_values,
            clock_segments=[],
        )
        for stream_id, reading in readings.items()
    }
    headers = {stream_id: ({"footer": r.index.footer} if r.index.footer else {}) for stream_id, r in readings.items()}
    collected = _Collect()
    pyxdf_logger = logging.getLogger("pyxdf")
    pyxdf_logger.addHandler(collected)
    try:
        temp = reference._truncate_corrupted_offsets(temp, headers)
        temp = reference._clock_sync(temp, **_CLOCK_SYNC_DEFAULTS)
    finally:
        pyxdf_logger.removeHandler(collected)
    for stream_id, reading in readings.items():
        kept = temp[stream_id].time_series.shape[0]
        reading.time_stamps = temp[stream_id].time_stamps
        reading.clock_times, reading.clock_values = temp[stream_id].clock_times, temp[stream_id].clock_values
        if kept < reading.filled:  # pyxdf dropped samples after the footer's count (pylsl#67)
            reading.outputs = [output[:, :kept] for output in reading.outputs]
            if reading.strings is not None:
                del reading.strings[kept:]
            reading.filled = kept
    return collected.messages


def load_xdf(
    path: str | Path,
    select_streams: Sequence[int] | None = None,
    *,
    synchronize_clocks: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> tuple[list[dict], dict | None]:
    """pyxdf.load_xdf's result (without de-jittering), read by this module.

    Parameters
    ----------
    path : str or Path
    select_streams : sequence of int, optional
        Stream ids to read (default: all).
    synchronize_clocks : bool
    block_bytes : int

    Returns
    -------
    streams : list of dict
        ``info``, ``footer`` (when present), ``time_series`` (numeric: shape (n_samples,
        n_channels) in the stream's dtype, a transposed view; strings: list of lists),
        ``time_stamps``, ``clock_times``, ``clock_values``, in header order.
    file_header : dict or None
        None when the file has no FileHeader (as pyxdf).
    """
    index = index_xdf(path)
    ids = list(index.streams) if select_streams is None else [i for i in index.streams if i in select_streams]
    samples, _ = read_streams(index, ids, synchronize_clocks=synchronize_clocks, block_bytes=block_bytes)
    streams = []
    for stream_id in ids:
        stream = samples[stream_id]
        entry: dict[str, Any] = {
            "info": stream.index.info,
            "time_series": stream.strings if stream.strings is not None else stream.groups[0].T,
            "time_stamps": stream.time_stamps,
            "clock_times": stream.clock_times,
            "clock_values": stream.clock_values,
        }
        if stream.index.footer is not None:
            entry["footer"] = stream.index.footer
        streams.append(entry)
    return streams, index.file_header
