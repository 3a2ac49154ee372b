"""Will the recording fit? Estimate an XDF file's size and check the disk before recording.

A full disk in the middle of a session ends the recording early (the writer keeps a valid file
up to the failure, see :mod:`dyadlab.acquisition.xdf`), so the recorder refuses to start when the planned
recording does not fit with a safety margin.

Size of an XDF recording (every sample carries its own 8-byte timestamp, as our writer writes it):

* numeric sample: ``1`` (timestamp length) ``+ 8`` (timestamp) ``+ channel_count * bytes per value``;
* string sample: ``1 + 8`` plus, per channel, a 1-5 byte length and the text (estimated);
* per Samples chunk (about five per second per stream) ~16 bytes of framing, a ClockOffset chunk
  every few seconds, and the stream's header and footer XML (a few kB with channel descriptions).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dyadlab import DyadlabError

__all__ = [
    "InsufficientSpaceError",
    "StreamShape",
    "check_free_space",
    "estimate_recording_bytes",
    "format_bytes",
]

logger = logging.getLogger(__name__)

_VALUE_BYTES = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "double64": 8}
_LSL_FORMAT_CODES = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
#: Framing and clock offsets per stream and second (5 Samples chunks of ~16 bytes, offsets, boundaries).
_OVERHEAD_PER_STREAM_SECOND = 128
#: StreamHeader + StreamFooter per stream (channel descriptions make headers a few kB).
_HEADER_BYTES_PER_STREAM = 64 * 1024
#: Room left for everything else that shares the disk (session.json, behaviour CSV, reports, the OS).
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StreamShape:
    """What decides a stream's data rate.

    Attributes
    ----------
    channel_format : str
        One of the seven XDF formats (``float32``, ``string``...).
    channel_count : int
    nominal_srate : float
        Samples per second; 0 for irregular streams (markers).
    """

    channel_format: str
    channel_count: int
    nominal_srate: float


class InsufficientSpaceError(DyadlabError, RuntimeError):
    """The disk has less free space than the planned recording needs (nothing was written).

    Attributes
    ----------
    folder : Path
        Where the recording would go.
    free_bytes, required_bytes, expected_bytes : int
        Free space now, what is required (estimate x margin + reserve), the estimate itself.
    """

    def __init__(
        self, message: str, *, folder: Path, free_bytes: int, required_bytes: int, expected_bytes: int
    ) -> None:
        super().__init__(message)
        self.folder = folder
        self.free_bytes = free_bytes
        self.required_bytes = required_bytes
        self.expected_bytes = expected_bytes


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes for people."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _shape(stream: Any) -> StreamShape:
    """A StreamShape from a StreamShape, a ``(format, count, srate)`` tuple or a pylsl StreamInfo."""
    if isinstance(stream, StreamShape):
        return stream
    if isinstance(stream, tuple):
        return StreamShape(str(stream[0]), int(stream[1]), float(stream[2]))
    channel_format = stream.channel_format()
    if isinstance(channel_format, int):
        channel_format = _LSL_FORMAT_CODES[channel_format]
    return StreamShape(channel_format, int(stream.channel_count()), float(stream.nominal_srate()))


def estimate_recording_bytes(
    streams: Sequence[Any],
    duration_s: float,
    *,
    irregular_rate: float = 10.0,
    string_value_bytes: int = 256,
) -> int:
    """Estimate the XDF file size of recording ``streams`` for ``duration_s`` seconds.

    Parameters
    ----------
    streams : sequence of pylsl.StreamInfo, StreamShape or (channel_format, channel_count, nominal_srate)
        The streams to record.
    duration_s : float
        Planned recording length in seconds.
    irregular_rate : float
        Samples per second assumed for irregular streams (``nominal_srate == 0``, e.g. markers).
    string_value_bytes : int
        Bytes assumed per string value (a JSON marker is typically 100-200 bytes).

    Returns
    -------
    int
        Estimated bytes, headers and framing included (an upper-side estimate for regular
        streams; irregular streams depend on how often they send).
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    total: float = 4 + 1024  # magic + FileHeader
    for stream in streams:
        shape = _shape(stream)
        rate = shape.nominal_srate if shape.nominal_srate > 0 else irregular_rate
        if shape.channel_format == "string":
            values = shape.channel_count * (5 + string_value_bytes)
        elif shape.channel_format in _VALUE_BYTES:
            values = shape.channel_count * _VALUE_BYTES[shape.channel_format]
        else:
            raise ValueError(f"unknown channel_format {shape.channel_format!r}")
        per_second = rate * (1 + 8 + values) + _OVERHEAD_PER_STREAM_SECOND
        total += _HEADER_BYTES_PER_STREAM + per_second * duration_s
    return int(total)


def _existing_folder(folder: Path) -> Path:
    """The folder itself or its nearest existing parent (the recording's folder may not exist yet)."""
    candidate = folder.resolve()
    while not candidate.exists() and candidate.parent != candidate:
        candidate = candidate.parent
    return candidate


def check_free_space(
    folder: str | os.PathLike[str],
    expected_bytes: int,
    *,
    margin: float = 2.0,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    what: str = "the recording",
) -> int:
    """Refuse to start when ``folder``'s disk cannot hold ``expected_bytes`` with room to spare.

    Parameters
    ----------
    folder : path
        Where the file will be written (need not exist yet: its nearest existing parent is checked).
    expected_bytes : int
        From :func:`estimate_recording_bytes`.
    margin : float
        Required free space is ``expected_bytes * margin + min_free_bytes`` (sessions overrun,
        estimates err).
    min_free_bytes : int
        Reserve left for the other files of the session and the system.
    what : str
        How messages name the recording (e.g. ``"a 60-minute session"``).

    Returns
    -------
    int
        Free bytes on that disk now.

    Raises
    ------
    InsufficientSpaceError
        With the numbers and how to fix it.
    """
    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin}")
    where = Path(folder)
    usage = shutil.disk_usage(_existing_folder(where))
    required = int(expected_bytes * margin) + int(min_free_bytes)
    if usage.free < required:
        raise InsufficientSpaceError(
            f"not enough free space for {what} in {where}: {format_bytes(usage.free)} free of "
            f"{format_bytes(usage.total)}, {format_bytes(required)} needed ({format_bytes(expected_bytes)} "
            f"estimated x {margin:g} margin + {format_bytes(min_free_bytes)} reserve). Nothing was recorded. "
            "Fix: free space on that disk, record to another disk, or plan a shorter recording.",
            folder=where,
            free_bytes=usage.free,
            required_bytes=required,
            expected_bytes=int(expected_bytes),
        )
    logger.debug("%s: %s free, %s needed for %s", where, format_bytes(usage.free), format_bytes(required), what)
    return usage.free
