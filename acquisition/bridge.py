"""Pump one participant's :class:`~dyadlab.acquisition.sources.EegSource` into LSL.

A :class:`BoardBridge` owns a source's whole life (prepare -> start -> pump -> stop -> release)
and the participant's LSL outlets:

* ``{dyad}-{label}-EEG``: the EEG rows in microvolts plus a last ``Marker`` channel with the
  board's marker codes (none for a source without board markers), float32, each sample stamped with its own ``local_clock()`` time (the
  source converted the device's stamps), see :func:`dyadlab.acquisition.streams.eeg_stream_info`;
* ``{dyad}-{label}-AUX``: the board's extra rows, when it has any.

Faults. A source that delivers nothing for ``stall_timeout`` seconds, or whose ``read()``
raises, is reported (a logged warning and :attr:`BoardBridge.status`) and reconnected with
back-off (stop, release, prepare, start), indefinitely, until it delivers again or the bridge
is stopped. A source that recovers by itself and keeps what arrives meanwhile (an LSL inlet,
see :class:`~dyadlab.acquisition.lsl_source.LslStreamSource`) says so with a class attribute
``reconnect_after_silence_s``: its stall is reported alike, but it is read on, and reconnected
only when ``read()`` raises or after that much silence. The outlets stay open meanwhile, so the recording holds one stream per participant
with a visible gap, and the other participant's bridge, a separate thread, goes on untouched.
The source is always released: on :meth:`BoardBridge.stop`, on errors, on Ctrl-C (through the
context manager) and at interpreter exit for board sources.

A bridge is a :class:`~dyadlab.acquisition.markers.MarkerSink`: ``MarkerHub(outlet, [bridge_a,
bridge_b])`` inserts each event's code into both boards' marker channels.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dyadlab.acquisition.sources import EegSource, SourceChunk, SourceError, carries_board_markers
from dyadlab.acquisition.streams import (
    ParticipantInfo,
    aux_stream_info,
    eeg_stream_info,
)

logger = logging.getLogger(__name__)

#: The packet counter of most boards (OpenBCI, synthetic...) is one byte: it wraps at 256.
PACKAGE_NUM_MODULUS = 256
DEFAULT_BACKOFF: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)


class BridgeState(str, enum.Enum):
    """Where a bridge is in its life."""

    IDLE = "idle"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class BridgeStatus:
    """A snapshot of one bridge, for the live status line and the session log.

    Attributes
    ----------
    stream_name : str
        The EEG stream's LSL name.
    state : BridgeState
        Current state.
    samples : int
        Samples pushed to LSL since start.
    rate : float
        Effective sampling rate over the last ``rate_window`` seconds of sample time, Hz.
    nominal_rate : float
        The source's nominal rate, Hz.
    dropped_packets : int
        Packets missing from the device's packet counter since start.
    last_sample_age : float | None
        Seconds between the newest pushed sample's timestamp and now; ``None`` before the first.
    reconnects : int
        Successful reconnections since start.
    stalls : int
        Times the source was found to have stopped delivering.
    lost_markers : int
        Marker codes that could not be inserted (the source was reconnecting).
    message : str
        The last fault, or empty.
    """

    stream_name: str
    state: BridgeState
    samples: int
    rate: float
    nominal_rate: float
    dropped_packets: int
    last_sample_age: float | None
    reconnects: int
    stalls: int
    lost_markers: int
    message: str = ""


class BoardBridge:
    """One participant's source pumped into LSL by its own thread.

    Parameters
    ----------
    source : EegSource
        The board or simulator source (not yet prepared; the bridge prepares and releases it).
    study, dyad : str
        Study and dyad ids (they form the stream ``source_id``, see :mod:`dyadlab.acquisition.streams`).
    participant : ParticipantInfo
        Who wears the cap.
    poll_interval : float
        Seconds between reads of the source.
    stall_timeout : float
        Seconds without samples after which the source counts as stopped. With the default
        1.5 s plus one poll, a stopped board is detected within 2 s (and reconnected; a source
        with ``reconnect_after_silence_s`` is reconnected only after that much silence).
    reconnect_backoff : sequence of float
        Seconds to wait before each reconnection attempt; the last value repeats.
    rate_window : float
        Seconds of sample time over which :attr:`status` computes the effective rate.

    Attributes
    ----------
    stream_name, source_id : str
        The EEG stream's LSL name and ``source_id`` (known before :meth:`start`).
    aux_source_id : str | None
        The AUX stream's ``source_id`` once started, ``None`` when the source has no aux rows.
    stall_detected_at : list of float
        ``local_clock()`` of every detected stop of the source (for the session log).

    Examples
    --------
    >>> source = BrainFlowSource(BoardSpec(board="synthetic"), participant="A")  # doctest: +SKIP
    >>> with BoardBridge(source, study="pilot", dyad="d01",
    ...                  participant=ParticipantInfo("A", "sub-01")) as bridge:  # doctest: +SKIP
    ...     run_session(); print(bridge.status)
    """

    def __init__(
        self,
        source: EegSource,
        *,
        study: str,
        dyad: str,
        participant: ParticipantInfo,
        poll_interval: float = 0.02,
        stall_timeout: float = 1.5,
        reconnect_backoff: Sequence[float] = DEFAULT_BACKOFF,
        rate_window: float = 5.0,
    ) -> None:
        if poll_interval <= 0 or stall_timeout <= poll_interval:
            raise ValueError("BoardBridge needs 0 < poll_interval < stall_timeout (seconds).")
        if not reconnect_backoff or any(delay < 0 for delay in reconnect_backoff):
            raise ValueError("reconnect_backoff must be a non-empty sequence of delays >= 0 seconds.")
        self.source = source
        self.study = study
        self.dyad = dyad
        self.participant = participant
        self.poll_interval = float(poll_interval)
        self.stall_timeout = float(stall_timeout)
        self.reconnect_backoff = tuple(float(d) for d in reconnect_backoff)
        self.rate_window = float(rate_window)
        # Built now so that a bad study/dyad/label fails before the device is touched.
        self._eeg_info = eeg_stream_info(study, dyad, participant, source)
        self._with_markers = carries_board_markers(source)
        # A board is reconnected as soon as it stalls; a source that resumes by itself later.
        self._reconnect_after = max(self.stall_timeout, float(getattr(source, "reconnect_after_silence_s", 0.0)))
        self.stream_name: str = self._eeg_info.name()
        self.source_id: str = self._eeg_info.source_id()
        self.aux_source_id: str | None = None

        self._eeg_outlet: Any = None
        self._aux_outlet: Any = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._lifecycle_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._state = BridgeState.IDLE
        self._samples = 0
        self._dropped = 0
        self._reconnects = 0
        self._stalls = 0
        self._lost_markers = 0
        self._message = ""
        self._last_package: int | None = None
        self._last_stamp: float | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (newest stamp of a chunk, its samples)
        self._started_at: float | None = None
        self._last_data_at = time.monotonic()
        self.stall_detected_at: list[float] = []  # local_clock() of each stall detection

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Prepare the source, open the outlets, start streaming and the pump thread.

        Raises
        ------
        SourceConfigError
            The source's configuration is wrong; nothing was published.
        """
        import pylsl

        with self._lifecycle_lock:
            if self._thread is not None:
                raise RuntimeError(f"Bridge {self.stream_name} is already running.")
            self._stop_event.clear()
            self.source.prepare()
            try:
                self._eeg_outlet = pylsl.StreamOutlet(self._eeg_info)
                if self.source.aux_channel_names:
                    aux_info = aux_stream_info(self.study, self.dyad, self.participant, self.source)
                    self.aux_source_id = aux_info.source_id()
                    self._aux_outlet = pylsl.StreamOutlet(aux_info)
                self.source.start()
            except BaseException:
                self._close_outlets()
                self.source.release()
                raise
            self._started_at = pylsl.local_clock()
            self._last_data_at = time.monotonic()
            self._set_state(BridgeState.STREAMING)
            self._thread = threading.Thread(target=self._pump, name=f"bridge-{self.stream_name}", daemon=True)
            self._thread.start()
            logger.info("%s: streaming (%s)", self.stream_name, self.source_id)

    def stop(self) -> None:
        """Stop the pump, stop and release the source, close the outlets; idempotent."""
        with self._lifecycle_lock:
            self._stop_event.set()
            thread, self._thread = self._thread, None
            try:
                if thread is not None:
                    thread.join(timeout=10.0)
                    if thread.is_alive():
                        logger.error("%s: the pump thread did not finish within 10 s", self.stream_name)
            finally:
                try:
                    self.source.stop()
                finally:
                    self.source.release()
                    self._close_outlets()
                    if self._state is not BridgeState.IDLE:
                        self._set_state(BridgeState.STOPPED)

    def _close_outlets(self) -> None:
        # Dropping the last reference destroys a pylsl outlet (and unpublishes the stream).
        self._eeg_outlet = None
        self._aux_outlet = None

    def __enter__(self) -> BoardBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the pump thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def have_consumers(self) -> bool:
        """Whether an inlet (a recorder) is connected to the EEG stream."""
        outlet = self._eeg_outlet
        return bool(outlet is not None and outlet.have_consumers())

    # -- markers -----------------------------------------------------------------------------
    def insert_marker(self, code: float) -> None:
        """Insert ``code`` into the source's marker channel (the :class:`MarkerSink` interface).

        While the source is reconnecting the code cannot be inserted; it is counted in
        :attr:`BridgeStatus.lost_markers` and logged (the LSL marker stream still has the event).
        """
        try:
            self.source.insert_marker(code)
        except SourceError as error:
            with self._stats_lock:
                self._lost_markers += 1
            logger.warning("%s: marker %g not inserted into the board: %s", self.stream_name, code, error)

    # -- status ------------------------------------------------------------------------------
    @property
    def status(self) -> BridgeStatus:
        """A consistent snapshot of the counters (cheap; call it for a live display)."""
        import pylsl

        now = pylsl.local_clock()
        with self._stats_lock:
            horizon = now - self.rate_window
            recent = sum(n for stamp, n in self._recent if stamp > horizon)
            span = self.rate_window if self._started_at is None else min(self.rate_window, now - self._started_at)
            return BridgeStatus(
                stream_name=self.stream_name,
                state=self._state,
                samples=self._samples,
                rate=recent / span if span > 0 else 0.0,
                nominal_rate=float(self.source.sampling_rate),
                dropped_packets=self._dropped,
                last_sample_age=None if self._last_stamp is None else now - self._last_stamp,
                reconnects=self._reconnects,
                stalls=self._stalls,
                lost_markers=self._lost_markers,
                message=self._message,
            )

    def _set_state(self, state: BridgeState, message: str | None = None) -> None:
        with self._stats_lock:
            self._state = state
            if message is not None:
                self._message = message

    # -- pump --------------------------------------------------------------------------------
    def _pump(self) -> None:
        try:
            while not self._stop_event.wait(self.poll_interval):
                try:
                    chunk = self.source.read()
                except SourceError as error:
                    self._recover(f"the source failed: {error}")
                    continue
                if chunk.n_samples:
                    self._push(chunk)
                    continue
                silent_for = time.monotonic() - self._last_data_at
                if silent_for > self._reconnect_after:
                    self._recover(f"no samples for {silent_for:.1f} s")
                elif silent_for > self.stall_timeout:
                    self._report_stall(f"no samples for {self.stall_timeout:g} s; waiting for the source to resume")
        except Exception:
            logger.exception("%s: the pump thread failed; the stream stops here", self.stream_name)
            self._set_state(BridgeState.STOPPED, "pump thread failed (see log)")

    def _push(self, chunk: SourceChunk) -> None:
        # One copy each into the (n_samples, n_channels) float32 layout LSL sends as is.
        n_eeg = chunk.eeg.shape[0]
        eeg = np.empty((chunk.n_samples, n_eeg + int(self._with_markers)), dtype=np.float32)
        eeg[:, :n_eeg] = chunk.eeg.T
        if self._with_markers:
            eeg[:, -1] = chunk.markers
        stamps = chunk.timestamps.tolist()
        self._eeg_outlet.push_chunk(eeg, stamps)
        if self._aux_outlet is not None and chunk.aux.shape[0]:
            self._aux_outlet.push_chunk(np.ascontiguousarray(chunk.aux.T, dtype=np.float32), stamps)
        now = time.monotonic()
        if self._state is BridgeState.STALLED:
            silence = now - self._last_data_at
            logger.warning("%s: the source delivers again after %.1f s of silence", self.stream_name, silence)
        self._last_data_at = now
        dropped = self._count_dropped(chunk.package_num)
        with self._stats_lock:
            if self._state is not BridgeState.STREAMING:
                self._state = BridgeState.STREAMING
            self._samples += chunk.n_samples
            self._dropped += dropped
            newest = float(chunk.timestamps[-1])
            if self._last_stamp is not None and float(chunk.timestamps[0]) < self._last_stamp:
                logger.warning(
                    "%s: timestamps went back by %.4f s (source clock problem)",
                    self.stream_name,
                    self._last_stamp - float(chunk.timestamps[0]),
                )
            self._last_stamp = newest
            self._recent.append((newest, chunk.n_samples))
            while self._recent and self._recent[0][0] < newest - self.rate_window:
                self._recent.popleft()
        if dropped:
            logger.warning("%s: %d packet(s) dropped by the device link", self.stream_name, dropped)

    def _count_dropped(self, package_num: np.ndarray | None) -> int:
        """Missing packet numbers in ``package_num`` (a counter mod 256; repeats are not drops)."""
        if package_num is None or package_num.size == 0:
            return 0
        counter = package_num.astype(np.int64)
        if self._last_package is not None:
            counter = np.concatenate(([self._last_package], counter))
        self._last_package = int(counter[-1])
        steps = np.diff(counter) % PACKAGE_NUM_MODULUS
        return int(np.sum(steps[steps > 1] - 1))

    def _report_stall(self, reason: str) -> None:
        """Count and log a source that stopped delivering, once per silence."""
        import pylsl

        with self._stats_lock:
            if self._state is BridgeState.STALLED:
                return
            self._stalls += 1
            self._state = BridgeState.STALLED
            self._message = reason
        self.stall_detected_at.append(pylsl.local_clock())
        logger.warning("%s: %s (the other streams go on)", self.stream_name, reason)

    def _recover(self, reason: str) -> None:
        """Report a stopped source and reconnect it with back-off until it delivers or we stop."""
        self._report_stall(reason)
        logger.warning("%s: %s; reconnecting", self.stream_name, reason)
        for attempt, delay in enumerate(_backoff(self.reconnect_backoff), start=1):
            self._set_state(BridgeState.RECONNECTING)
            if self._stop_event.wait(delay):
                return
            try:
                self.source.stop()
                self.source.release()
                self.source.prepare()
                self.source.start()
            except Exception as error:
                logger.warning("%s: reconnection attempt %d failed: %s", self.stream_name, attempt, error)
                self._set_state(BridgeState.RECONNECTING, f"reconnection attempt {attempt} failed: {error}")
                continue
            with self._stats_lock:
                self._reconnects += 1
                self._last_package = None
            self._last_data_at = time.monotonic()
            self._set_state(BridgeState.STREAMING, f"reconnected after: {reason}")
            logger.warning("%s: reconnected (attempt %d)", self.stream_name, attempt)
            return


def _backoff(delays: Iterable[float]) -> Iterable[float]:
    """The delays, then the last one forever."""
    delays = tuple(delays)
    return itertools.chain(delays, itertools.repeat(delays[-1]))
