"""Crash-safe, in-process recorder of selected LSL streams into one XDF file.

How it records (see ``docs/architecture.md`` and the XDF/LSL reference, sections 2 and 6):

* Streams are selected explicitly, by exact ``source_id`` or by an LSL XPath predicate, never
  "everything on the network". A required stream that cannot be found within
  ``wait_for_streams`` seconds raises :class:`MissingStreamError` *before* the file is created.
* Each stream gets one pull thread with its own inlet (``max_buflen=360``, ``recover=True``,
  no postprocessing, i.e. raw sender timestamps). Every 0.2 s the thread drains the inlet
  (``pull_chunk`` until less than a full chunk comes back) straight into numpy memory (all seven
  formats; strings as raw bytes, so NUL bytes and UTF-8 survive) and writes every chunk through
  :class:`dyadlab.acquisition.xdf.XdfWriter`.
* Clock offsets: one as soon as the inlet is open, one every ``offset_interval`` seconds and one
  at stop, so even a 2-second recording holds two per stream. A probe that times out is skipped,
  never written. Each is written as LabRecorder does: ``(local_clock() - offset, offset)``.
* A housekeeping thread hands buffered data to the operating system every ``flush_interval``
  seconds and writes an fsynced Boundary chunk every ``boundary_interval`` seconds, so a
  ``kill -9`` loses at most the last ~0.7 s (pull period + flush period).
* An outlet that restarts with the same ``source_id`` is reconnected by liblsl into the same
  inlet, so its data keeps its XDF stream id. A stream without ``source_id`` that is lost is
  re-resolved by its selector and continues in the same stream id. Optional streams that appear
  after the start are added as new streams while recording.
* Stop takes ``t_stop = local_clock()``; every pull thread keeps draining until it has pulled a
  sample stamped at or after ``t_stop`` (on the recorder's clock) or its stream has been quiet for
  ``stop_grace`` seconds (sparse marker streams), at most ``stop_timeout`` seconds. Then a final
  clock offset, every thread is joined, footers are written, the file is fsynced and closed. A
  thread that cannot be joined gets no footer, is reported loudly, and can no longer write: the
  file is sealed against it before it is closed.
* A write the operating system refuses (full disk, file-size limit, I/O error) fails the whole
  recording once: :class:`dyadlab.acquisition.xdf.XdfWriter` cuts the file back to its last complete chunk
  (valid, every sample written before the failure kept), every thread stops writing, one ERROR is
  logged, :attr:`LslRecorder.failure` and the summary's ``problems`` say what happened and how to
  fix it, and the ``on_failure`` callback lets a session react at once. :meth:`LslRecorder.stop`
  still finalises what it can and does not raise because of it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError as LslLostError
from pylsl.util import TimeoutError as LslTimeoutError

from dyadlab import DyadlabError
from dyadlab.acquisition.lslconfig import session_id_in_force
from dyadlab.acquisition.lslquery import bracketed, check_predicate
from dyadlab.acquisition.storage import (
    DEFAULT_MIN_FREE_BYTES,
    check_free_space,
    estimate_recording_bytes,
)
from dyadlab.acquisition.xdf import (
    XdfWriteError,
    XdfWriter,
    validate_file_metadata,
)
from dyadlab.xdf_format import NUMERIC_FORMATS

__all__ = [
    "AmbiguousStreamError",
    "LslRecorder",
    "MissingStreamError",
    "RecorderError",
    "RecordingSummary",
    "StreamSelector",
    "StreamSummary",
]

logger = logging.getLogger(__name__)

#: Seconds between two drains of an inlet; bounds how late a sample reaches the file. Sleeping
#: between non-blocking drains (instead of blocking pulls, which wake up at every pushed chunk)
#: keeps the recorder's CPU use low at high sampling rates.
_PULL_INTERVAL = 0.2
#: Seconds between drains while waiting for the stop moment to be reached.
_STOP_POLL = 0.02
#: Samples per pull; a full pull means more is buffered, so the thread pulls again at once.
_MAX_CHUNK_SAMPLES = 1024
#: Timeout of one clock-offset probe; the first probe of an inlet takes ~0.65 s on loopback.
_OFFSET_TIMEOUT = 2.0
#: After a probe timed out, try again this soon rather than a whole offset interval later.
_OFFSET_RETRY = 1.0
#: How long opening an inlet (full stream info, subscription) may take.
_OPEN_TIMEOUT = 5.0
#: How often a lost stream without source_id, or a late optional stream, is looked for.
_RESOLVE_POLL = 0.5
#: How long the matches must stay unchanged before start() trusts them: a continuous resolver
#: queries in waves 0.5 s apart, and on one host not every outlet answers every (unicast) wave.
_SETTLE = 1.0
#: How long start() looks for optional streams once every required one is found.
_OPTIONAL_AT_START = 1.5
#: Seconds a stream that vanished stays in a continuous resolver's results.
_FORGET_AFTER = 3.0
#: Extra seconds (beyond the drain bound) allowed for a pull thread to finish at stop.
_JOIN_MARGIN = 2.0 * _OFFSET_TIMEOUT + _OPEN_TIMEOUT
#: How long stop waits for a writing thread to leave the file before sealing it.
_SEAL_TIMEOUT = 5.0
#: A regular stream silent for this long (at least 20 sample periods) when the recording stops
#: has lost its source: the recording of it is incomplete, not "complete".
_DEAD_AFTER = 2.0

_LSL_FORMATS = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}


class RecorderError(DyadlabError, RuntimeError):
    """The recorder cannot do what was asked (see the message for what to change)."""


class MissingStreamError(RecorderError):
    """A required stream was not found on the network within the wait.

    Attributes
    ----------
    missing : list of StreamSelector
        The required selectors that matched no stream.
    session_id : str
        The LSL SessionID this process resolved under.
    """

    def __init__(self, message: str, missing: Sequence[StreamSelector], session_id: str) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.session_id = session_id


class AmbiguousStreamError(RecorderError):
    """A selector matched more than one stream, or two selectors matched the same stream."""


class _FileSealed(Exception):
    """Raised inside a pull thread that tries to write after the file was sealed at stop."""


class _RecordingFailed(Exception):
    """Raised inside a thread that tries to write after the recording failed (e.g. disk full)."""


@dataclass(frozen=True)
class StreamSelector:
    """Which stream to record: an exact ``source_id`` (the normal case) or an LSL predicate.

    Parameters
    ----------
    source_id : str, optional
        The stream's exact LSL ``source_id`` (e.g. ``dyadlab.study.d01.A.eeg``).
    predicate : str, optional
        An LSL XPath 1.0 predicate over the stream info, e.g.
        ``"name='d01-Markers' and hostname='lab-pc-2'"``. Must match exactly one stream. It is
        checked (:func:`dyadlab.acquisition.lslquery.check_predicate`; a
        :class:`~dyadlab.acquisition.lslquery.PredicateError` otherwise) and always bracketed, so
        that it applies within this process's LSL SessionID only.
    required : bool
        A required stream missing at start makes :meth:`LslRecorder.start` fail; an optional
        one is added whenever it appears during the recording.

    Examples
    --------
    >>> StreamSelector(source_id="dyadlab.pilot.d01.A.eeg").query
    "source_id='dyadlab.pilot.d01.A.eeg'"
    """

    source_id: str | None = None
    predicate: str | None = None
    required: bool = True

    def __post_init__(self) -> None:
        if (self.source_id is None) == (self.predicate is None):
            raise ValueError("A StreamSelector needs exactly one of source_id= or predicate=.")
        if self.source_id is not None:
            if not self.source_id.strip():
                raise ValueError("StreamSelector source_id is empty; give the stream's exact source_id.")
            if "'" in self.source_id:
                raise ValueError(
                    f"source_id {self.source_id!r} contains a single quote, which an LSL query cannot "
                    "express; select this stream with predicate= instead."
                )
        if self.predicate is not None:
            if not self.predicate.strip():
                raise ValueError("StreamSelector predicate is empty; give an LSL XPath predicate such as \"name='X'\".")
            check_predicate(self.predicate)

    @property
    def query(self) -> str:
        """The LSL XPath predicate this selector resolves with."""
        if self.source_id is not None:
            return f"source_id='{self.source_id}'"
        assert self.predicate is not None
        # liblsl evaluates "session_id='<id>' and <query>": without brackets, an `or` in the
        # predicate would match streams of every SessionID.
        return bracketed(self.predicate)

    @property
    def expression(self) -> str:
        """The selection as an unbracketed expression (to compare selectors)."""
        if self.source_id is not None:
            return f"source_id='{self.source_id}'"
        assert self.predicate is not None
        return check_predicate(self.predicate)

    @property
    def label(self) -> str:
        """A human-readable description for messages."""
        kind = "" if self.required else "optional "
        if self.source_id is not None:
            return f"{kind}stream with source_id {self.source_id!r}"
        return f"{kind}stream matching {self.predicate!r}"


@dataclass(frozen=True)
class StreamSummary:
    """What was recorded for one stream.

    Attributes
    ----------
    stream_id : int
        The XDF StreamId in the file.
    name, type, source_id, hostname : str
        From the stream's LSL info.
    channel_format : str
        One of the seven XDF formats.
    channel_count : int
    nominal_srate : float
        0 for irregular streams.
    sample_count : int
        Samples written to the file.
    first_timestamp, last_timestamp : float or None
        Raw (sender clock) timestamps of the first and last sample written.
    duration : float
        ``last_timestamp - first_timestamp`` (0 without samples).
    clock_offsets : int
        ClockOffset chunks written.
    footer_written : bool
        Whether the StreamFooter is in the file.
    error : str or None
        What went wrong with this stream, if anything.
    """

    stream_id: int
    name: str
    type: str
    source_id: str
    hostname: str
    channel_format: str
    channel_count: int
    nominal_srate: float
    sample_count: int
    first_timestamp: float | None
    last_timestamp: float | None
    duration: float
    clock_offsets: int
    footer_written: bool
    error: str | None


@dataclass(frozen=True)
class RecordingSummary:
    """What a recording holds so far (while recording) or in the end (after stop).

    Attributes
    ----------
    path : Path
        The XDF file.
    file_size : int
        Its size in bytes.
    started_at : str
        Wall-clock start (ISO 8601), for people; every timestamp in the file is ``local_clock()``.
    duration : float
        Seconds from start to stop request (or to now while recording).
    streams : list of StreamSummary
        One per recorded stream, in stream-id order.
    not_found : list of str
        Optional selectors that never matched a stream.
    closed : bool
        Whether the file was finalized and closed.
    problems : list of str
        Everything that went wrong; empty for a clean recording.
    """

    path: Path
    file_size: int
    started_at: str
    duration: float
    streams: list[StreamSummary]
    not_found: list[str]
    closed: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """A complete recording: closed, every footer written, no problem."""
        return self.closed and not self.problems and all(s.footer_written for s in self.streams)


def _format_name(info: pylsl.StreamInfo) -> str:
    return _LSL_FORMATS[info.channel_format()]


class _StreamRecording:
    """One recorded stream: its inlet, its pull thread and its state.

    The pull thread is the only user of the inlet after :meth:`LslRecorder.start`, so inlet
    calls need no lock; every file write goes through the recorder's write gate.
    """

    def __init__(self, recorder: LslRecorder, stream_id: int, selector: StreamSelector) -> None:
        self.recorder = recorder
        self.stream_id = stream_id
        self.selector = selector
        self.inlet: pylsl.StreamInlet | None = None
        self.info: pylsl.StreamInfo | None = None
        self.channel_format = ""
        self.channel_count = 0
        self.nominal_srate = 0.0
        self.thread: threading.Thread | None = None
        self.offset = 0.0  # latest clock offset (sender -> recorder clock), 0 until measured
        self.error: str | None = None
        self.footer_written = False
        self._buffer: np.ndarray | None = None

    # -- opening -----------------------------------------------------------------------------
    def open(self, resolved: pylsl.StreamInfo) -> pylsl.StreamInfo:
        """Create and subscribe the inlet; return the full stream info (with ``desc``)."""
        inlet = pylsl.StreamInlet(
            resolved, max_buflen=360, max_chunklen=0, recover=True, processing_flags=pylsl.proc_none
        )
        full_info = inlet.info(timeout=_OPEN_TIMEOUT)
        inlet.open_stream(timeout=_OPEN_TIMEOUT)
        self.inlet = inlet
        self.info = full_info
        self.channel_format = _format_name(full_info)
        self.channel_count = full_info.channel_count()
        self.nominal_srate = full_info.nominal_srate()
        if self.channel_format != "string":
            self._buffer = np.empty(
                (_MAX_CHUNK_SAMPLES, self.channel_count), dtype=NUMERIC_FORMATS[self.channel_format]
            )
        if not full_info.source_id():
            logger.warning(
                "stream %r (%s) has no source_id: liblsl cannot reconnect it if its outlet restarts; "
                "the recorder will look for it again by %s",
                full_info.name(),
                full_info.hostname(),
                self.selector.query,
            )
        return full_info

    def start_thread(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"dyadlab-rec-{self.stream_id}-{self.info.name() if self.info else ''}", daemon=True
        )
        self.thread.start()

    # -- the pull thread ---------------------------------------------------------------------
    def _run(self) -> None:
        rec = self.recorder
        try:
            next_offset = self._measure_offset()
            last_data = time.monotonic()
            stopping_since: float | None = None
            while True:
                if stopping_since is None and rec._stop_requested.is_set():
                    stopping_since = time.monotonic()
                try:
                    n_pulled, newest = self._drain()
                except LslLostError:
                    self._reacquire()
                    next_offset = self._measure_offset()
                    continue
                now = time.monotonic()
                if n_pulled:
                    last_data = now
                if stopping_since is None:
                    if now >= next_offset:
                        next_offset = self._measure_offset()
                    rec._stop_requested.wait(_PULL_INTERVAL)
                    continue
                if newest is not None and newest + self.offset >= rec._t_stop:
                    break  # pulled past the stop moment: everything pushed before it is in
                if now - max(last_data, stopping_since) >= rec.stop_grace:
                    break  # quiet since the stop request (sparse markers, or outlet gone)
                if now - stopping_since >= rec.stop_timeout:
                    self._note_error(
                        f"stop: no sample stamped at or after the stop moment within {rec.stop_timeout:g} s "
                        "although data kept arriving; draining was cut off"
                    )
                    break
                time.sleep(_STOP_POLL)
            self._check_alive_at_stop(last_data, stopping_since)
            self._measure_offset()  # the final offset
        except _StreamGone:
            self._note_error("the stream was lost and had not come back when the recording stopped")
        except _FileSealed:
            logger.error("stream %d: the file was sealed while this thread still ran", self.stream_id)
        except _RecordingFailed:
            # Reported once by the recorder, not once per stream. Nothing more can be stored, so
            # unsubscribe now rather than let the inlet buffer minutes of data until stop().
            self.release()
        except Exception as exc:
            logger.exception("stream %d (%s): recording failed", self.stream_id, self.selector.label)
            self._note_error(f"recording failed: {type(exc).__name__}: {exc}")

    def _check_alive_at_stop(self, last_data: float, stopping_since: float) -> None:
        """A regular stream that had gone silent before the stop request lost its source (the
        outlet's program died, the board was unplugged and never came back): say so, so that the
        recording is not reported complete."""
        if self.nominal_srate <= 0:
            return  # irregular streams (markers) may be silent for minutes
        silent = stopping_since - last_data
        if silent > max(_DEAD_AFTER, 20.0 / self.nominal_srate):
            self._note_error(
                f"no data for the last {silent:.1f} s before the recording stopped: its source stopped delivering "
                "(program closed or crashed, amplifier off or disconnected) and did not come back; the file holds "
                "the data up to then"
            )

    def _drain(self) -> tuple[int, float | None]:
        """Pull and write everything the inlet holds, until a pull returns less than a full chunk.

        Returns the number of samples and the newest raw timestamp (None if nothing came).
        """
        total, newest = 0, None
        while True:
            n, chunk_newest = self._pull_chunk()
            total += n
            if chunk_newest is not None:
                newest = chunk_newest if newest is None else max(newest, chunk_newest)
            if n < _MAX_CHUNK_SAMPLES:
                return total, newest

    def _pull_chunk(self) -> tuple[int, float | None]:
        """One non-blocking pull (straight into numpy memory), written as one Samples chunk."""
        assert self.inlet is not None
        if self._buffer is not None:
            values, timestamps = self.inlet.pull_chunk(
                timeout=0.0, max_samples=_MAX_CHUNK_SAMPLES, dest_obj=self._buffer, as_numpy=True
            )
        else:  # strings: raw bytes, NUL-safe, UTF-8 untouched
            values, timestamps = self.inlet.pull_chunk(timeout=0.0, max_samples=_MAX_CHUNK_SAMPLES, as_numpy=True)
        n = len(timestamps)
        if n == 0:
            return 0, None
        self.recorder._write(lambda w: w.write_samples(self.stream_id, timestamps, values))
        return n, float(np.max(timestamps))

    def _measure_offset(self) -> float:
        """Measure and write one clock offset; return when the next one is due (monotonic)."""
        assert self.inlet is not None
        try:
            offset = self.inlet.time_correction(timeout=_OFFSET_TIMEOUT)
        except (LslTimeoutError, LslLostError) as exc:
            # Never write a made-up value; the next pull notices a lost stream and reacquires it.
            logger.warning(
                "stream %d (%s): clock offset probe failed (%s); skipped, not written",
                self.stream_id,
                self.selector.label,
                "timed out" if isinstance(exc, LslTimeoutError) else "stream lost",
            )
            return time.monotonic() + _OFFSET_RETRY
        now = pylsl.local_clock()
        if self.inlet.was_clock_reset():
            logger.warning(
                "stream %d (%s): the sender's clock may have been reset", self.stream_id, self.selector.label
            )
        self.offset = offset
        self.recorder._write(lambda w: w.write_clock_offset(self.stream_id, now - offset, offset))
        return time.monotonic() + self.recorder.offset_interval

    def _reacquire(self) -> None:
        """The stream (without source_id) was lost: find it again by its selector, same stream id."""
        rec = self.recorder
        name = self.info.name() if self.info else "?"
        logger.warning("stream %d (%r) was lost; looking for it again by %s", self.stream_id, name, self.selector.query)
        lost_uid = self.info.uid() if self.info else None
        resolver = _resolver(self.selector)
        while not rec._stop_requested.is_set():
            for candidate in resolver.results():
                if candidate.uid() == lost_uid:
                    continue  # the lost outlet itself, still remembered by the resolver
                if _format_name(candidate) == self.channel_format and candidate.channel_count() == self.channel_count:
                    try:
                        self.open(candidate)
                    except (LslTimeoutError, LslLostError) as exc:
                        logger.warning("stream %d: reopening failed (%s); retrying", self.stream_id, exc)
                        continue
                    logger.warning(
                        "stream %d (%r) is back; recording continues in the same stream id", self.stream_id, name
                    )
                    return
            time.sleep(_RESOLVE_POLL)
        raise _StreamGone

    def release(self) -> None:
        """Close and drop the inlet (after the pull thread ended).

        An inlet left alive after its outlet is gone keeps trying to reconnect in the background
        (``recover=True``), querying the network for as long as it exists.
        """
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:
                logger.debug("closing the inlet of stream %d failed", self.stream_id, exc_info=True)
            del inlet  # liblsl destroys the inlet with the last reference

    def _note_error(self, message: str) -> None:
        self.error = message if self.error is None else f"{self.error}; {message}"

    # -- reporting ---------------------------------------------------------------------------
    def summary(self, writer: XdfWriter) -> StreamSummary:
        stats = writer.stream_stats(self.stream_id)
        first, last = stats.first_timestamp, stats.last_timestamp
        info = self.info
        return StreamSummary(
            stream_id=self.stream_id,
            name=info.name() if info else "",
            type=info.type() if info else "",
            source_id=info.source_id() if info else "",
            hostname=info.hostname() if info else "",
            channel_format=self.channel_format,
            channel_count=self.channel_count,
            nominal_srate=self.nominal_srate,
            sample_count=stats.sample_count,
            first_timestamp=first,
            last_timestamp=last,
            duration=(last - first) if first is not None and last is not None else 0.0,
            clock_offsets=len(stats.clock_offsets),
            footer_written=self.footer_written,
            error=self.error,
        )


class _StreamGone(Exception):
    """A lost stream was not found again before the stop request."""


class LslRecorder:
    """Record selected LSL streams into one crash-safe XDF file.

    Parameters
    ----------
    path : str or Path
        The XDF file to create. An existing file is never overwritten.
    selectors : sequence of StreamSelector
        The streams to record (at least one). Never "everything on the network".
    file_metadata : mapping of str to str, optional
        Extra FileHeader elements (study, dyad, session...); ``recorder`` is added.
    wait_for_streams : float
        Seconds :meth:`start` waits for every required stream to appear.
    boundary_interval : float
        Seconds between Boundary chunks (each fsynced); 0 < value <= 10.
    offset_interval : float
        Seconds between clock-offset measurements of each stream.
    stop_grace : float
        At stop, a stream that has been quiet this long since the stop request is complete
        (sparse marker streams send nothing at or after the stop moment).
    stop_timeout : float
        Upper bound on how long a stream is drained after the stop request.
    flush_interval : float
        Seconds between two checks of the file by the housekeeping thread (every chunk already
        reaches the operating system when it is written).
    planned_duration : float, optional
        Seconds the recording is expected to last. :meth:`start` then refuses (before creating
        the file) when the disk lacks room for it: estimated size x 2 + ``min_free_bytes``.
    min_free_bytes : int
        Free space to leave on the disk beyond the recording (with ``planned_duration``).
    on_failure : callable(message), optional
        Called once, from the recorder thread that hit it, when a write fails (full disk...) and
        the recording ends; must return quickly and must not call :meth:`stop` itself (signal
        the thread that owns the recorder instead).

    Examples
    --------
    >>> selectors = [StreamSelector(source_id="dyadlab.pilot.d01.A.eeg"),
    ...              StreamSelector(source_id="dyadlab.pilot.d01.markers")]
    >>> with LslRecorder("d01.xdf", selectors, file_metadata={"dyad": "d01"}) as rec:  # doctest: +SKIP
    ...     run_the_session()
    >>> rec.summary().ok  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        selectors: Sequence[StreamSelector],
        *,
        file_metadata: Mapping[str, str] | None = None,
        wait_for_streams: float = 10.0,
        boundary_interval: float = 5.0,
        offset_interval: float = 5.0,
        stop_grace: float = 1.0,
        stop_timeout: float = 10.0,
        flush_interval: float = 0.5,
        planned_duration: float | None = None,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.selectors = list(selectors)
        if not self.selectors:
            raise ValueError("LslRecorder needs at least one StreamSelector; it never records 'everything'.")
        for selector in self.selectors:
            if not isinstance(selector, StreamSelector):
                raise TypeError(f"selectors must be StreamSelector objects, got {type(selector).__name__}")
        queries = [s.expression for s in self.selectors]
        duplicates = sorted({q for q in queries if queries.count(q) > 1})
        if duplicates:
            raise ValueError(f"the same stream is selected twice: {duplicates}")
        for name, value in (("wait_for_streams", wait_for_streams), ("stop_grace", stop_grace)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")
        for name, value in (
            ("offset_interval", offset_interval),
            ("stop_timeout", stop_timeout),
            ("flush_interval", flush_interval),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        if not 0 < boundary_interval <= 10:
            raise ValueError(f"boundary_interval must be in (0, 10] seconds, got {boundary_interval}")
        self.file_metadata = dict(file_metadata or {})
        self.file_metadata.setdefault("recorder", _recorder_name())
        # Bad metadata keys must fail now, not after waiting for the streams.
        validate_file_metadata(self.file_metadata)
        self.wait_for_streams = wait_for_streams
        self.boundary_interval = boundary_interval
        self.offset_interval = offset_interval
        self.stop_grace = stop_grace
        self.stop_timeout = stop_timeout
        self.flush_interval = flush_interval
        if planned_duration is not None and planned_duration <= 0:
            raise ValueError(f"planned_duration must be > 0 seconds, got {planned_duration}")
        self.planned_duration = planned_duration
        self.min_free_bytes = min_free_bytes
        self.on_failure = on_failure

        self._writer: XdfWriter | None = None
        self._streams: list[_StreamRecording] = []
        self._streams_lock = threading.Lock()
        self._pending: list[StreamSelector] = []  # optional selectors not found yet
        self._stop_requested = threading.Event()
        self._t_stop = float("inf")
        self._t_start = 0.0
        self._started_at = ""
        self._gate = threading.Lock()  # every write goes through it; sealed at stop
        self._sealed = False
        self._closed = False
        self._stopped = False
        self._problems: list[str] = []
        self._failure: str | None = None  # set once, under the gate
        self._service_threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LslRecorder:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def recording(self) -> bool:
        """Whether the recorder was started, has not failed and was not yet stopped."""
        return self._writer is not None and not self._stopped and self._failure is None

    @property
    def failure(self) -> str | None:
        """Why the recording ended early (a refused write: full disk...), or None."""
        return self._failure

    def start(self) -> None:
        """Find every required stream, create the file, write the headers and start recording.

        When this returns, every selected stream found is subscribed: each sample pushed from
        now on will be in the file.

        Raises
        ------
        FileExistsError
            The file exists (it is never overwritten).
        FileNotFoundError
            The file's folder does not exist.
        MissingStreamError
            A required stream did not appear within ``wait_for_streams``; no file is created.
        AmbiguousStreamError
            A selector matches several streams, or two selectors the same stream; no file.
        dyadlab.acquisition.storage.InsufficientSpaceError
            With ``planned_duration``: the disk cannot hold the recording; no file.
        dyadlab.acquisition.xdf.XdfWriteError
            Not even the file's header could be written (disk full); no file.
        RecorderError
            Already started.
        """
        if self._writer is not None or self._stopped:
            raise RecorderError("this LslRecorder was already started; create a new one for a new recording")
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} already exists; a recording is never overwritten. "
                "Choose a new file name or move the existing file away."
            )
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
        found = self._resolve_at_start()
        if self.planned_duration is not None:
            expected = estimate_recording_bytes([info for _, info in found], self.planned_duration)
            check_free_space(
                self.path.parent,
                expected,
                min_free_bytes=self.min_free_bytes,
                what=f"a {self.planned_duration:g}-second recording of {len(found)} stream(s)",
            )
        self._started_at = datetime.now().astimezone().isoformat(timespec="seconds")
        writer = XdfWriter(self.path, file_metadata=self.file_metadata, flush_interval=self.flush_interval)
        try:
            for selector, resolved in found:
                stream = _StreamRecording(self, len(self._streams) + 1, selector)
                try:
                    full_info = stream.open(resolved)
                except (LslTimeoutError, LslLostError) as exc:
                    raise RecorderError(
                        f"{selector.label} was found but could not be opened within {_OPEN_TIMEOUT:g} s "
                        f"({type(exc).__name__}); is its outlet still running?"
                    ) from exc
                self._streams.append(stream)
                writer.add_stream(stream.stream_id, full_info.as_xml())
        except BaseException:
            # Nothing but headers was written: leave no half-made recording behind.
            try:
                writer.close()
            except OSError:  # the original error is the one to report
                logger.exception("closing %s after a failed start failed", self.path)
            self.path.unlink(missing_ok=True)
            for stream in self._streams:
                stream.release()
            self._streams.clear()
            raise
        self._writer = writer
        self._t_start = pylsl.local_clock()
        for stream in self._streams:
            stream.start_thread()
        self._start_service("dyadlab-rec-housekeeping", self._housekeeping)
        if self._pending:
            self._start_service("dyadlab-rec-late-streams", self._watch_late_streams)
        logger.info(
            "recording %d stream(s) to %s%s",
            len(self._streams),
            self.path,
            f"; waiting for {len(self._pending)} optional stream(s)" if self._pending else "",
        )

    def stop(self) -> RecordingSummary:
        """Drain every stream up to the stop moment, write footers, fsync and close the file.

        Idempotent; returns the final summary. Never raises for a stream's failure: problems are
        logged and listed in :attr:`RecordingSummary.problems`.
        """
        if self._writer is None:
            raise RecorderError("stop() before start(): nothing is being recorded")
        if self._stopped:
            return self.summary()
        self._stopped = True
        self._t_stop = pylsl.local_clock()
        self._stop_requested.set()
        writer = self._writer
        join_bound = self.stop_timeout + _JOIN_MARGIN
        deadline = time.monotonic() + join_bound
        for thread in self._service_threads:  # first: no late stream is added after this
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            assert stream.thread is not None
            stream.thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self._service_threads + [s.thread for s in streams if s.thread is not None]:
            if thread.is_alive():
                message = f"thread {thread.name} did not finish within {join_bound:g} s"
                logger.critical("%s; its stream gets no footer and it can no longer write", message)
                self._problems.append(message)
        if not self._gate.acquire(timeout=_SEAL_TIMEOUT):
            message = (
                f"a thread is stuck inside a file write; {self.path} is left open (valid up to its "
                "last complete chunk) and NOT finalized"
            )
            logger.critical(message)
            self._problems.append(message)
            return self.summary()
        try:
            self._sealed = True
            first_failure = False
            for stream in streams:
                if self._failure is not None:
                    break  # the file takes nothing more: no footers
                if stream.thread is not None and stream.thread.is_alive():
                    continue
                try:
                    writer.write_footer(stream.stream_id)
                    stream.footer_written = True
                except XdfWriteError as exc:
                    first_failure = self._note_failure_locked(exc)
                except Exception as exc:
                    logger.exception("footer of stream %d failed", stream.stream_id)
                    self._problems.append(f"footer of stream {stream.stream_id} failed: {exc}")
            try:
                writer.close()
                self._closed = True
            except XdfWriteError as exc:
                first_failure = self._note_failure_locked(exc) or first_failure
                self._closed = True
            except Exception as exc:
                logger.exception("closing %s failed", self.path)
                self._problems.append(f"closing the file failed: {exc}")
        finally:
            self._gate.release()
        if first_failure:
            self._report_failure()
        for stream in streams:
            if stream.thread is not None and not stream.thread.is_alive():
                stream.release()
        self._problems.extend(
            f"stream {s.stream_id} ({s.info.name() if s.info else s.selector.label}): {s.error}"
            for s in streams
            if s.error
        )
        summary = self.summary()
        logger.info(
            "recording %s stopped: %s",
            self.path,
            ", ".join(f"{s.name} {s.sample_count} samples" for s in summary.streams),
        )
        return summary

    def summary(self) -> RecordingSummary:
        """What the file holds now (live while recording, final after :meth:`stop`)."""
        if self._writer is None:
            raise RecorderError("summary() before start(): nothing is being recorded")
        with self._streams_lock:
            streams = sorted(self._streams, key=lambda s: s.stream_id)
        end = self._t_stop if self._stopped else pylsl.local_clock()
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return RecordingSummary(
            path=self.path,
            file_size=size,
            started_at=self._started_at,
            duration=max(0.0, end - self._t_start),
            streams=[s.summary(self._writer) for s in streams],
            not_found=[s.label for s in self._pending],
            closed=self._closed,
            problems=list(self._problems),
        )

    # -- internals ---------------------------------------------------------------------------
    def _write(self, operation: Callable[[XdfWriter], Any]) -> None:
        """Run one writer call unless the file was sealed at stop or the recording failed."""
        with self._gate:
            if self._sealed:
                raise _FileSealed
            if self._failure is not None:
                raise _RecordingFailed
            assert self._writer is not None
            try:
                operation(self._writer)
                return
            except XdfWriteError as exc:
                first = self._note_failure_locked(exc)
        if first:  # outside the gate: the callback may take its time, and must not block writers
            self._report_failure()
        raise _RecordingFailed

    def _note_failure_locked(self, exc: XdfWriteError) -> bool:
        """Record the first write failure (under the gate); True if this one was the first."""
        if self._failure is not None:
            return False
        self._failure = f"the recording stopped early: {exc}"
        self._problems.append(self._failure)
        return True

    def _report_failure(self) -> None:
        """Log the failure once and tell the owner through ``on_failure``."""
        assert self._failure is not None
        logger.error("%s", self._failure)
        if self.on_failure is not None:
            try:
                self.on_failure(self._failure)
            except Exception:
                logger.exception("the recorder's on_failure callback raised")

    def _start_service(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._service_threads.append(thread)
        thread.start()

    def _housekeeping(self) -> None:
        """Flush every ``flush_interval`` s and write an fsynced Boundary every ``boundary_interval`` s."""
        next_boundary = time.monotonic() + self.boundary_interval
        try:
            while not self._stop_requested.wait(self.flush_interval):
                if time.monotonic() >= next_boundary:
                    self._write(lambda w: w.write_boundary())
                    next_boundary += self.boundary_interval
                else:
                    self._write(lambda w: w.flush())
        except (_FileSealed, _RecordingFailed):
            pass
        except Exception as exc:
            logger.exception("flushing %s failed", self.path)
            self._problems.append(f"flushing the file failed: {type(exc).__name__}: {exc}")

    def _resolve_at_start(self) -> list[tuple[StreamSelector, pylsl.StreamInfo]]:
        """Wait until every required selector matches exactly one stream (or the wait ends)."""
        self._pending = []
        resolvers = {s: _resolver(s) for s in self.selectors}
        began = time.monotonic()
        ready_since: float | None = None
        while True:
            matches = {s: _distinct(resolver.results()) for s, resolver in resolvers.items()}
            now = time.monotonic()
            if not all(len(matches[s]) == 1 for s in self.selectors if s.required):
                ready_since = None
            elif ready_since is None:
                ready_since = now
            if now - began >= self.wait_for_streams:
                break
            # Answers to one query arrive one by one: a second match (ambiguity) may still come.
            if ready_since is not None and now - ready_since >= _SETTLE:
                # Optional streams get a short moment too; the late-stream watcher takes over after it.
                if all(len(m) == 1 for m in matches.values()) or now - began >= _OPTIONAL_AT_START:
                    break
            time.sleep(0.05)
        missing = [s for s in self.selectors if s.required and not matches[s]]
        if missing:
            raise self._missing_error(missing)
        ambiguous = [s for s in self.selectors if s.required and len(matches[s]) > 1]
        if ambiguous:
            lines = [f"{s.label} matches {len(matches[s])} streams: " + _describe(matches[s]) for s in ambiguous]
            raise AmbiguousStreamError(
                "Cannot tell which stream to record:\n  " + "\n  ".join(lines) + "\n"
                "Give every stream a unique source_id, or narrow the predicate (e.g. add hostname='...')."
            )
        found: list[tuple[StreamSelector, pylsl.StreamInfo]] = []
        for selector in self.selectors:
            if len(matches[selector]) == 1:
                found.append((selector, matches[selector][0]))
            else:
                self._pending.append(selector)
        uids: dict[str, StreamSelector] = {}
        for selector, info in found:
            other = uids.setdefault(info.uid(), selector)
            if other is not selector:
                raise AmbiguousStreamError(
                    f"{other.label} and {selector.label} select the same stream "
                    f"({info.name()!r} on {info.hostname()}); select each stream once."
                )
        return found

    def _missing_error(self, missing: Sequence[StreamSelector]) -> MissingStreamError:
        session_id = session_id_in_force()
        visible = pylsl.resolve_streams(wait_time=1.0)
        listing = (
            "\n".join(
                f"    {i.name()!r} type={i.type()!r} source_id={i.source_id()!r} host={i.hostname()}"
                for i in visible[:20]
            )
            if visible
            else "    (none)"
        )
        wanted = "\n".join(f"  - {s.label}" for s in missing)
        message = (
            f"No stream found within {self.wait_for_streams:g} s for:\n{wanted}\n"
            f"LSL SessionID in force here: {session_id!r}. Streams visible under it:\n{listing}\n"
            "Check that: the outlet is running (e.g. `dyadlab stream` or the amplifier app); the "
            "source_id is spelled exactly; both machines use the same LSL SessionID and resolve "
            "scope (lsl_api.cfg / LSLAPICFG); the firewall allows UDP 16571 and TCP/UDP 16572-16604. "
            f"Nothing was recorded and {self.path} was not created."
        )
        return MissingStreamError(message, missing, session_id)

    def _watch_late_streams(self) -> None:
        """Add optional streams that appear after the start, each as a new stream id."""
        resolvers = {s: _resolver(s) for s in self._pending}
        warned_ambiguous: set[StreamSelector] = set()
        while not self._stop_requested.wait(_RESOLVE_POLL) and self._failure is None:
            for selector in list(self._pending):
                try:
                    candidates = _distinct(resolvers[selector].results())
                    if len(candidates) > 1:
                        if selector not in warned_ambiguous:
                            logger.error(
                                "%s matches %d streams; not recording it: %s",
                                selector.label,
                                len(candidates),
                                _describe(candidates),
                            )
                            warned_ambiguous.add(selector)
                    elif len(candidates) == 1:
                        self._add_late_stream(selector, candidates[0])
                except Exception:
                    logger.exception("while looking for %s", selector.label)

    def _add_late_stream(self, selector: StreamSelector, resolved: pylsl.StreamInfo) -> None:
        stream = _StreamRecording(self, 0, selector)
        try:
            full_info = stream.open(resolved)
        except (LslTimeoutError, LslLostError) as exc:
            logger.warning("%s appeared but could not be opened (%s); retrying", selector.label, exc)
            return
        with self._streams_lock:
            stream.stream_id = len(self._streams) + 1
            try:
                self._write(lambda w: w.add_stream(stream.stream_id, full_info.as_xml()))
            except (_FileSealed, _RecordingFailed):
                stream.release()
                return
            self._streams.append(stream)
            self._pending.remove(selector)
        stream.start_thread()
        logger.info("late %s added as stream id %d (%r)", selector.label, stream.stream_id, full_info.name())


def _resolver(selector: StreamSelector) -> pylsl.ContinuousResolver:
    """A continuous resolver for ``selector`` (liblsl refusing the query is a RecorderError)."""
    try:
        return pylsl.ContinuousResolver(pred=selector.query, forget_after=_FORGET_AFTER)
    except RuntimeError as error:
        raise RecorderError(f"liblsl refused the query of the {selector.label} ({selector.query}): {error}") from None


def _recorder_name() -> str:
    try:
        return f"dyadlab {importlib.metadata.version('dyadlab')} (pylsl {pylsl.__version__}, liblsl {pylsl.library_version()})"
    except importlib.metadata.PackageNotFoundError:
        return f"dyadlab (pylsl {pylsl.__version__}, liblsl {pylsl.library_version()})"


def _distinct(infos: Sequence[pylsl.StreamInfo]) -> list[pylsl.StreamInfo]:
    """Stream infos with duplicates of one outlet (same uid) removed."""
    seen: dict[str, pylsl.StreamInfo] = {}
    for info in infos:
        seen.setdefault(info.uid(), info)
    return list(seen.values())


def _describe(infos: Sequence[pylsl.StreamInfo]) -> str:
    return "; ".join(f"{i.name()!r} source_id={i.source_id()!r} host={i.hostname()}" for i in infos)
