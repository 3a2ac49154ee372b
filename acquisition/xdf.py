"""Byte-exact XDF 1.0 writer.

The layout follows the reference writer of LabRecorder (``xdfwriter.cpp``) and the readers pyxdf,
libxdf and xdf-Matlab (see ``docs/architecture.md``):

* the file is the magic ``b"XDF:"`` followed by chunks
  ``[NumLengthBytes u8 in {1,4,8}][Length][Tag u16][StreamId u32 for tags 2,3,4,6][content]``,
  where ``Length`` counts the tag, the StreamId (when present) and the content;
* all numbers are little-endian; every sample is written with a full 8-byte timestamp
  (``TimeStampBytes = 8``), so no reader ever has to deduce one;
* a StreamFooter carries the exact ``sample_count`` plus first/last timestamps and clock offsets.

Crash safety: every chunk is assembled in memory and handed to the operating system as a whole
(unbuffered ``os.write`` calls, repeated after a short write) under a single lock, before the call
that wrote it returns; the FileHeader, StreamHeaders, Boundaries and footers are followed by
``fsync``. So a killed process loses nothing a write call acknowledged.

Write failures (full disk ``ENOSPC``, file-size limit ``EFBIG``, ``EIO``...): a write can stop in
the middle of a chunk. The writer then cuts the file back to the last complete chunk on disk
(``ftruncate`` to the largest known chunk end not beyond the file's size, then ``fsync``), so the
file stays valid and holds every chunk written before; it raises :class:`XdfWriteError` and refuses
every later write with the same error.
"""

from __future__ import annotations

import errno as errno_codes
import logging
import math
import os
import re
import struct
import threading
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.xdf_format import (
    BOUNDARY_UUID,
    CHANNEL_FORMATS,
    MAGIC,
    NUMERIC_FORMATS,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
)

__all__ = [
    "parse_stream_info",
    "StreamStats",
    "XdfWriter",
    "XdfWriteError",
    "XdfWriterError",
    "encode_varlen",
    "validate_file_metadata",
]

logger = logging.getLogger(__name__)


_MAX_U32 = 0xFFFFFFFF
#: Most channels an LSL stream can have (liblsl stores the count in a signed 32-bit integer).
MAX_CHANNEL_COUNT = 2**31 - 1
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_RESERVED_HEADER_KEYS = frozenset({"version", "datetime"})
#: Chunk ends remembered between two fsyncs (a recorder fsyncs a Boundary every few seconds).
_MAX_TRACKED_CHUNK_ENDS = 100_000


class XdfWriterError(DyadlabError, RuntimeError):
    """A chunk was requested that would make the file invalid (unknown stream, after footer...)."""


class XdfWriteError(XdfWriterError, OSError):
    """The operating system refused a write, flush or fsync (full disk, size limit, I/O error).

    The file was cut back to its last complete chunk and stays a valid (incomplete) XDF file (the
    message says so when the operating system refused the cut too); the writer accepts no further
    chunk.

    Attributes
    ----------
    errno : int or None
        The operating system's error number (``errno.ENOSPC``, ``errno.EFBIG``...).
    strerror : str
        Its text, e.g. ``"No space left on device"``.
    filename : str
        The XDF file.
    bytes_kept : int
        Size of the valid file left on disk (every chunk up to the failure).
    """

    strerror: str  # always set, unlike OSError's

    def __init__(self, message: str, *, errno: int | None, strerror: str, path: Path, bytes_kept: int) -> None:
        super().__init__(message)
        self.errno = errno
        self.strerror = strerror
        self.filename = str(path)
        self.bytes_kept = bytes_kept
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (the keyword arguments)
        return (_rebuild_write_error, (self.message, self.errno, self.strerror, self.filename, self.bytes_kept))


def _rebuild_write_error(message: str, errno: int | None, strerror: str, path: str, bytes_kept: int) -> XdfWriteError:
    return XdfWriteError(message, errno=errno, strerror=strerror, path=Path(path), bytes_kept=bytes_kept)


def _fix_for(errno: int | None) -> str:
    if errno in (errno_codes.ENOSPC, errno_codes.EDQUOT):
        return "free space on that disk, or record to another disk (check free space before starting)"
    if errno == errno_codes.EFBIG:
        return (
            "the file reached the largest size this file system or process allows (e.g. 4 GiB on "
            "FAT32, or a ulimit -f); record to a disk formatted with exFAT/NTFS/ext4 or lift the limit"
        )
    return "check the disk (cable, health, permissions) or record to another disk"


def encode_varlen(value: int) -> bytes:
    """Encode a non-negative integer as an XDF variable-length integer.

    Parameters
    ----------
    value : int
        The number to encode (0 <= value < 2**64).

    Returns
    -------
    bytes
        ``01 u8`` below 256, ``04 u32`` up to 0xFFFFFFFF, otherwise ``08 u64``.
    """
    if value < 0:
        raise ValueError(f"XDF variable-length integers are unsigned, got {value}")
    if value < 256:
        return struct.pack("<BB", 1, value)
    if value <= _MAX_U32:
        return struct.pack("<BI", 4, value)
    return struct.pack("<BQ", 8, value)


def _chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    """One complete chunk: varlen length, tag, optional StreamId, content."""
    prefix = struct.pack("<H", tag) if stream_id is None else struct.pack("<HI", tag, stream_id)
    return encode_varlen(len(prefix) + len(content)) + prefix + content


@dataclass
class StreamStats:
    """What has been written for one stream so far (used for its footer).

    Attributes
    ----------
    first_timestamp, last_timestamp : float or None
        Timestamps of the first and last sample written; ``None`` while no sample was written.
    sample_count : int
        Exact number of samples written.
    clock_offsets : list of (collection_time, offset_value)
        Every ClockOffset written, in order.
    """

    first_timestamp: float | None = None
    last_timestamp: float | None = None
    sample_count: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)

    @property
    def measured_srate(self) -> float:
        """Samples per second between the first and last sample (0 when undefined)."""
        if self.sample_count < 2 or self.first_timestamp is None or self.last_timestamp is None:
            return 0.0
        span = self.last_timestamp - self.first_timestamp
        return (self.sample_count - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class _StreamSpec:
    stream_id: int
    name: str
    channel_format: str
    channel_count: int
    nominal_srate: float
    sample_dtype: np.dtype | None  # packed record dtype for numeric formats, None for strings


def parse_stream_info(info_xml: str) -> tuple[str, str, int, float]:
    """Read ``name``, ``channel_format``, ``channel_count`` and ``nominal_srate`` of an LSL info XML.

    Raises
    ------
    ValueError
        If the XML does not parse or a field is missing or invalid.
    """
    try:
        root = ET.fromstring(info_xml)
    except (ET.ParseError, LookupError) as exc:  # LookupError: unknown encoding declared
        raise ValueError(f"stream info XML does not parse ({exc}); pass StreamInfo.as_xml()") from exc
    if root.tag != "info":
        raise ValueError(f"stream info XML must have root element <info>, got <{root.tag}>")

    def text(tag: str) -> str:
        element = root.find(tag)
        if element is None or element.text is None or not element.text.strip():
            raise ValueError(f"stream info XML lacks <{tag}>; pass the full StreamInfo.as_xml()")
        return element.text.strip()

    name_element = root.find("name")
    name = (name_element.text or "").strip() if name_element is not None else ""
    channel_format = text("channel_format")
    if channel_format not in CHANNEL_FORMATS:
        raise ValueError(
            f"stream {name!r}: channel_format {channel_format!r} is not an XDF format "
            f"(one of {sorted(CHANNEL_FORMATS)})"
        )
    try:
        channel_count = int(text("channel_count"))
    except ValueError as exc:
        raise ValueError(f"stream {name!r}: channel_count is not an integer") from exc
    if channel_count < 1:
        raise ValueError(f"stream {name!r}: channel_count must be >= 1, got {channel_count}")
    if channel_count > MAX_CHANNEL_COUNT:
        raise ValueError(
            f"stream {name!r}: channel_count {channel_count} is more than LSL allows ({MAX_CHANNEL_COUNT})"
        )
    try:
        nominal_srate = float(text("nominal_srate"))
    except ValueError as exc:
        raise ValueError(f"stream {name!r}: nominal_srate is not a number") from exc
    if not math.isfinite(nominal_srate) or nominal_srate < 0:
        raise ValueError(f"stream {name!r}: nominal_srate must be finite and >= 0, got {nominal_srate}")
    return name, channel_format, channel_count, nominal_srate


def validate_file_metadata(file_metadata: Mapping[str, str]) -> None:
    """Check that every key can be a FileHeader element, before anything is written.

    Raises
    ------
    ValueError
        A key is not an XML element name, starts with ``xml``, or is reserved (``version``,
        ``datetime``: the writer sets them itself).
    """
    for key in file_metadata:
        if not isinstance(key, str) or not _XML_NAME.match(key) or key.lower().startswith("xml"):
            raise ValueError(
                f"file metadata key {key!r} is not a valid XML element name "
                "(use letters, digits, '_', '-', '.'; start with a letter or '_')"
            )
        if key in _RESERVED_HEADER_KEYS:
            raise ValueError(f"file metadata key {key!r} is reserved; the writer sets it itself")


def _file_header_xml(file_metadata: Mapping[str, str]) -> bytes:
    validate_file_metadata(file_metadata)
    lines = [
        '<?xml version="1.0"?>',
        "<info>",
        "  <version>1.0</version>",
        f"  <datetime>{datetime.now().astimezone().isoformat(timespec='seconds')}</datetime>",
    ]
    for key, value in file_metadata.items():
        element = ET.Element(key)
        element.text = str(value)
        lines.append("  " + ET.tostring(element, encoding="unicode"))
    lines.append("</info>")
    return "\n".join(lines).encode("utf-8")


def _format_float(value: float) -> str:
    return repr(float(value))


class XdfWriter:
    """Write one XDF 1.0 file, chunk by chunk, from any number of threads.

    Parameters
    ----------
    path : str or Path
        The file to create. An existing file is never overwritten (``FileExistsError``).
    file_metadata : mapping of str to str, optional
        Extra FileHeader elements (e.g. ``study``, ``dyad``, ``session``, ``recorder``); keys must
        be XML element names, values are escaped.
    flush_interval : float
        Upper bound (seconds) on how long a written chunk may stay in this process before it
        reaches the operating system. Every chunk is handed over before its write call returns,
        so any value >= 0 is met; kept so that callers can state their requirement.

    Attributes
    ----------
    path : Path
        The file being written.
    bytes_written : int
        Bytes written so far (magic included); after a write failure, the bytes kept on disk.

    Raises
    ------
    XdfWriteError
        From any write, flush or close when the operating system refuses the data (full disk...);
        the file is left valid up to its last complete chunk, and every later call raises the
        same error. From the constructor when not even the FileHeader fits (the empty file is
        removed).

    Examples
    --------
    >>> with XdfWriter("rec.xdf", file_metadata={"dyad": "d01"}) as writer:  # doctest: +SKIP
    ...     writer.add_stream(1, info.as_xml())
    ...     writer.write_samples(1, timestamps, values)
    ...     writer.write_footer(1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        file_metadata: Mapping[str, str] | None = None,
        flush_interval: float = 0.5,
    ) -> None:
        self.path = Path(path)
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0 seconds, got {flush_interval}")
        header = MAGIC + _chunk(TAG_FILE_HEADER, _file_header_xml(file_metadata or {}))
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} already exists; XdfWriter never overwrites a recording. "
                "Choose a new file name or move the existing file away."
            ) from None
        self._lock = threading.Lock()
        self.flush_interval = flush_interval
        self._streams: dict[int, _StreamSpec] = {}
        self._stats: dict[int, StreamStats] = {}
        self._footed: set[int] = set()
        self._closed = False
        self._failure: XdfWriteError | None = None
        # Chunk ends written since the last successful fsync, and the fsynced end: the places the
        # file may be cut back to after a failed write. Bounded: older ends lie before the fsync
        # points a long recording writes regularly (Boundaries), and a cut falls back to those.
        self._synced_end = 0
        self._chunk_ends: deque[int] = deque(maxlen=_MAX_TRACKED_CHUNK_ENDS)
        self.bytes_written = 0
        try:
            with self._lock:
                self._write_locked(header, "the FileHeader")
                self._flush_locked(fsync=True, what="the FileHeader")
        except XdfWriteError as exc:
            os.close(self._fd)
            self._closed = True
            self.path.unlink(missing_ok=True)  # holds no stream: nothing recorded is lost
            raise XdfWriteError(
                f"cannot create the recording {self.path}: {exc.strerror}. Nothing was recorded and the "
                f"empty file was removed. Fix: {_fix_for(exc.errno)}.",
                errno=exc.errno,
                strerror=exc.strerror,
                path=self.path,
                bytes_kept=0,
            ) from exc.__cause__
        except BaseException:
            os.close(self._fd)
            self._closed = True
            raise
        logger.debug("opened XDF file %s", self.path)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def failure(self) -> XdfWriteError | None:
        """The write failure that ended this file (None while every write succeeded)."""
        return self._failure

    # -- low level -------------------------------------------------------------------------
    def _write_locked(self, data: bytes, what: str) -> None:
        """Hand one complete chunk to the operating system, or cut the file back and raise."""
        if self._failure is not None:
            raise self._failure
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                count = os.write(self._fd, view[done:])
                if count == 0:  # never seen on a regular file; do not loop forever
                    raise OSError(errno_codes.EIO, "the operating system accepted 0 bytes")
                done += count
        except OSError as exc:
            self._fail_locked(exc, f"writing {what}")
        self.bytes_written += len(data)
        self._chunk_ends.append(self.bytes_written)

    def _flush_locked(self, fsync: bool, what: str = "buffered data") -> None:
        """Every chunk is already with the operating system; ``fsync`` also puts it on the disk."""
        if self._failure is not None:
            raise self._failure
        if not fsync:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail_locked(exc, f"saving {what} to the disk (fsync)")
        self._synced_end = self.bytes_written
        self._chunk_ends.clear()

    def _fail_locked(self, exc: OSError, action: str) -> None:
        """Cut the file back to its last complete chunk, enter the failed state, raise."""
        kept = self._cut_back_locked()
        self.bytes_written = kept
        strerror = exc.strerror or str(exc)
        name = errno_codes.errorcode.get(exc.errno, "?") if exc.errno is not None else "?"
        if kept in (self._synced_end, *self._chunk_ends):
            state = (
                f"The file was cut back to its last complete chunk and stays a valid XDF file: {kept:,} "
                "bytes kept, holding everything written before this moment"
            )
        else:  # the cut itself failed (logged above), or the file shrank behind the writer's back
            state = (
                f"The file could not be cut back to its last complete chunk: {kept:,} bytes kept, the "
                "last chunk incomplete (a reader may drop or misread its samples)"
            )
        self._failure = XdfWriteError(
            f"{action} to {self.path} failed: {strerror} ({name}). {state}; nothing more can be "
            f"recorded into it. Fix: {_fix_for(exc.errno)}.",
            errno=exc.errno,
            strerror=strerror,
            path=self.path,
            bytes_kept=kept,
        )
        raise self._failure from exc

    def _cut_back_locked(self) -> int:
        """Truncate to the largest known chunk end not beyond the file's size; return it."""
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            logger.warning("cannot read the size of %s after a failed write", self.path, exc_info=True)
            size = self.bytes_written
        ends = [end for end in (self._synced_end, *self._chunk_ends) if end <= size]
        keep = max(ends) if ends else 0
        if keep < size:
            try:
                os.ftruncate(self._fd, keep)
            except OSError:
                logger.error(
                    "cannot cut %s back to its last complete chunk (%d bytes); readers stop at the cut chunk",
                    self.path,
                    keep,
                    exc_info=True,
                )
                return size
        try:
            os.fsync(self._fd)
        except OSError:
            logger.warning("fsync of %s after cutting it back failed", self.path, exc_info=True)
        return keep

    def _check_open_locked(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise XdfWriterError(f"{self.path} is already closed; nothing more can be written")

    def _spec_for_chunk_locked(self, stream_id: int, what: str) -> _StreamSpec:
        self._check_open_locked()
        spec = self._streams.get(stream_id)
        if spec is None:
            raise XdfWriterError(
                f"cannot write {what} for stream id {stream_id}: no StreamHeader was written for it "
                f"(known ids: {sorted(self._streams)}); call add_stream() first"
            )
        if stream_id in self._footed:
            raise XdfWriterError(
                f"cannot write {what} for stream id {stream_id} ({spec.name!r}): its StreamFooter was already written"
            )
        return spec

    def _spec(self, stream_id: int, what: str) -> _StreamSpec:
        with self._lock:
            return self._spec_for_chunk_locked(stream_id, what)

    # -- public API ------------------------------------------------------------------------
    def add_stream(self, stream_id: int, info_xml: str) -> None:
        """Write the StreamHeader of a new stream, then flush and fsync.

        Parameters
        ----------
        stream_id : int
            The XDF StreamId (0 <= id <= 0xFFFFFFFF), unique in this file.
        info_xml : str
            The stream's full LSL info XML (``pylsl.StreamInfo.as_xml()``), written verbatim.

        Raises
        ------
        ValueError
            If the id is out of range or the XML lacks a valid ``channel_format``,
            ``channel_count`` or ``nominal_srate``.
        XdfWriterError
            If the id is already used or the writer is closed.
        """
        if not isinstance(stream_id, (int, np.integer)) or not 0 <= int(stream_id) <= _MAX_U32:
            raise ValueError(f"stream_id must be an integer in 0..{_MAX_U32}, got {stream_id!r}")
        stream_id = int(stream_id)
        name, channel_format, channel_count, nominal_srate = parse_stream_info(info_xml)
        sample_dtype = None
        if channel_format != "string":
            sample_dtype = np.dtype(
                [
                    ("timestamp_bytes", "u1"),
                    ("timestamp", "<f8"),
                    ("values", NUMERIC_FORMATS[channel_format], (channel_count,)),
                ]
            )
        spec = _StreamSpec(stream_id, name, channel_format, channel_count, nominal_srate, sample_dtype)
        chunk = _chunk(TAG_STREAM_HEADER, info_xml.encode("utf-8"), stream_id)
        with self._lock:
            self._check_open_locked()
            if stream_id in self._streams:
                raise XdfWriterError(f"stream id {stream_id} is already used by {self._streams[stream_id].name!r}")
            self._write_locked(chunk, f"the StreamHeader of stream {stream_id} ({name!r})")
            self._flush_locked(fsync=True, what=f"the StreamHeader of stream {stream_id}")
            self._streams[stream_id] = spec
            self._stats[stream_id] = StreamStats()
        logger.debug("stream %d (%s, %s x%d) added", stream_id, name, channel_format, channel_count)

    def write_samples(self, stream_id: int, timestamps: np.ndarray, values: Any) -> None:
        """Write one Samples chunk.

        Parameters
        ----------
        stream_id : int
            A stream added with :meth:`add_stream` and not yet closed by a footer.
        timestamps : np.ndarray, shape (n,)
            Sample timestamps (seconds, ``local_clock()`` of the sender), written as float64.
        values : np.ndarray of shape (n, channel_count), or sequence of n sequences of str/bytes
            Numeric values are converted to the stream's exact dtype (integers must fit and be
            integral); for ``string`` streams each value is ``str`` (encoded as UTF-8) or ``bytes``.

        Notes
        -----
        ``n == 0`` writes nothing.
        """
        spec = self._spec(stream_id, "samples")
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if timestamps.ndim != 1:
            raise ValueError(f"stream {spec.name!r}: timestamps must be 1-D, got shape {timestamps.shape}")
        n = timestamps.shape[0]
        if spec.sample_dtype is None:
            body = self._pack_strings(spec, timestamps, values)
        else:
            body = self._pack_numeric(spec, timestamps, values)
        if n == 0:
            return
        chunk = _chunk(TAG_SAMPLES, encode_varlen(n) + body, stream_id)
        with self._lock:
            self._spec_for_chunk_locked(stream_id, "samples")
            self._write_locked(chunk, f"{n} samples of stream {stream_id} ({spec.name!r})")
            stats = self._stats[stream_id]
            if stats.first_timestamp is None:
                stats.first_timestamp = float(timestamps[0])
            stats.last_timestamp = float(timestamps[-1])
            stats.sample_count += n

    @staticmethod
    def _pack_numeric(spec: _StreamSpec, timestamps: np.ndarray, values: Any) -> bytes:
        n = timestamps.shape[0]
        array = np.asarray(values)
        if array.ndim == 1 and spec.channel_count == 1 and array.shape[0] == n:
            array = array.reshape(n, 1)
        if array.shape != (n, spec.channel_count):
            raise ValueError(
                f"stream {spec.name!r}: values must have shape (n_samples, n_channels) = "
                f"({n}, {spec.channel_count}), got {array.shape}"
            )
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"stream {spec.name!r} ({spec.channel_format}): values must be numeric, got dtype {array.dtype}"
            )
        target = NUMERIC_FORMATS[spec.channel_format]
        # NaN, inf or out-of-range floats cast to an integer format warn; they are refused just below.
        with np.errstate(invalid="ignore"):
            converted = array.astype(target, copy=False)
        if target.kind == "i" and not np.can_cast(array.dtype, target, "safe"):
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise ValueError(f"stream {spec.name!r} ({spec.channel_format}): values contain NaN or inf")
            if not np.array_equal(converted, array):
                raise ValueError(
                    f"stream {spec.name!r}: values do not fit {spec.channel_format} exactly "
                    f"(out of range or not integral); convert them before writing"
                )
        records = np.empty(n, dtype=spec.sample_dtype)
        records["timestamp_bytes"] = 8
        records["timestamp"] = timestamps
        records["values"] = converted
        return records.tobytes()

    @staticmethod
    def _pack_strings(spec: _StreamSpec, timestamps: np.ndarray, values: Any) -> bytes:
        n = timestamps.shape[0]
        if isinstance(values, (str, bytes)) or len(values) != n:
            raise ValueError(
                f"stream {spec.name!r} (string): values must be a sequence of {n} samples, "
                f"each a sequence of {spec.channel_count} str/bytes"
            )
        parts: list[bytes] = []
        for index, (timestamp, sample) in enumerate(zip(timestamps, values)):
            if isinstance(sample, (str, bytes)) or not isinstance(sample, (Sequence, np.ndarray)):
                raise ValueError(
                    f"stream {spec.name!r} (string): sample {index} must be a sequence of "
                    f"{spec.channel_count} str/bytes, got {type(sample).__name__}"
                )
            if len(sample) != spec.channel_count:
                raise ValueError(
                    f"stream {spec.name!r} (string): sample {index} has {len(sample)} values, "
                    f"expected {spec.channel_count}"
                )
            parts.append(struct.pack("<Bd", 8, timestamp))
            for value in sample:
                if isinstance(value, str):
                    raw = value.encode("utf-8")
                elif isinstance(value, (bytes, bytearray, np.bytes_)):
                    raw = bytes(value)
                else:
                    raise ValueError(
                        f"stream {spec.name!r} (string): sample {index} holds a "
                        f"{type(value).__name__}, expected str or bytes"
                    )
                parts.append(encode_varlen(len(raw)))
                parts.append(raw)
        return b"".join(parts)

    def write_clock_offset(self, stream_id: int, collection_time: float, offset_value: float) -> None:
        """Write a ClockOffset chunk.

        Parameters
        ----------
        stream_id : int
            The stream the measurement belongs to.
        collection_time : float
            When the offset was measured, on the stream's (sender's) clock.
        offset_value : float
            Seconds to add to the stream's timestamps to map them onto the recorder's clock.
        """
        chunk = _chunk(TAG_CLOCK_OFFSET, struct.pack("<dd", collection_time, offset_value), stream_id)
        with self._lock:
            self._spec_for_chunk_locked(stream_id, "a clock offset")
            self._write_locked(chunk, f"a clock offset of stream {stream_id}")
            self._stats[stream_id].clock_offsets.append((float(collection_time), float(offset_value)))

    def write_boundary(self) -> None:
        """Write a Boundary chunk (a resynchronisation point for readers), then flush and fsync."""
        chunk = _chunk(TAG_BOUNDARY, BOUNDARY_UUID)
        with self._lock:
            self._check_open_locked()
            self._write_locked(chunk, "a Boundary chunk")
            self._flush_locked(fsync=True, what="a Boundary chunk")

    def flush(self, fsync: bool = False) -> None:
        """Check the writer is usable; with ``fsync=True`` put every written chunk on the disk.

        Every chunk already reached the operating system when its write call returned.
        """
        with self._lock:
            self._check_open_locked()
            self._flush_locked(fsync=fsync)

    def stream_stats(self, stream_id: int) -> StreamStats:
        """A copy of what was written so far for ``stream_id``."""
        with self._lock:
            stats = self._stats.get(stream_id)
            if stats is None:
                raise XdfWriterError(f"unknown stream id {stream_id} (known: {sorted(self._stats)})")
            return StreamStats(
                stats.first_timestamp, stats.last_timestamp, stats.sample_count, list(stats.clock_offsets)
            )

    def write_footer(self, stream_id: int) -> None:
        """Write the StreamFooter of ``stream_id``; no further chunk of it is accepted afterwards.

        The footer holds ``first_timestamp``, ``last_timestamp`` (``repr`` precision, 0 for an empty
        stream), the exact ``sample_count``, ``measured_srate`` and every clock offset written.
        """
        with self._lock:
            spec = self._spec_for_chunk_locked(stream_id, "a footer")
            stats = self._stats[stream_id]
            offsets = "".join(
                f"<offset><time>{_format_float(t)}</time><value>{_format_float(v)}</value></offset>"
                for t, v in stats.clock_offsets
            )
            xml = (
                '<?xml version="1.0"?>'
                "<info>"
                f"<first_timestamp>{_format_float(stats.first_timestamp or 0.0)}</first_timestamp>"
                f"<last_timestamp>{_format_float(stats.last_timestamp or 0.0)}</last_timestamp>"
                f"<sample_count>{stats.sample_count}</sample_count>"
                f"<measured_srate>{_format_float(stats.measured_srate)}</measured_srate>"
                f"<clock_offsets>{offsets}</clock_offsets>"
                "</info>"
            )
            self._write_locked(
                _chunk(TAG_STREAM_FOOTER, xml.encode("utf-8"), stream_id),
                f"the StreamFooter of stream {stream_id} ({spec.name!r})",
            )
            self._flush_locked(fsync=True, what=f"the StreamFooter of stream {stream_id}")
            self._footed.add(stream_id)
        logger.debug("footer of stream %d (%s): %d samples", stream_id, spec.name, stats.sample_count)

    def close(self) -> None:
        """Fsync and close the file. Idempotent; footers are the caller's job.

        Raises :class:`XdfWriteError` if the final fsync fails (the file is cut back first), but
        never a second time: after a failure, ``close`` only releases the file.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failure is None:
                    self._flush_locked(fsync=True, what="the end of the file")
            finally:
                try:
                    os.close(self._fd)
                except OSError as exc:  # e.g. a network file system reporting a late write error
                    if self._failure is None:
                        self._failure = XdfWriteError(
                            f"closing {self.path} failed: {exc.strerror or exc}; the last chunks may be "
                            f"missing. Fix: {_fix_for(exc.errno)}.",
                            errno=exc.errno,
                            strerror=exc.strerror or str(exc),
                            path=self.path,
                            bytes_kept=self.bytes_written,
                        )
                        raise self._failure from exc
        missing = sorted(set(self._streams) - self._footed)
        if missing and self._failure is None:
            logger.warning("%s closed without footers for stream ids %s", self.path, missing)
