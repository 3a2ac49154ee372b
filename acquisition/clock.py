"""BrainFlow's Unix timestamps converted to LSL's ``local_clock()``.

BrainFlow stamps every sample on the host with the wall clock (``gettimeofday`` on POSIX,
``GetSystemTimePreciseAsFileTime`` on Windows), in seconds since the Unix epoch. LSL stamps are
``local_clock()``: a monotonic clock (seconds since boot on Linux). Pushing BrainFlow stamps
unchanged breaks XDF synchronization (the muse-lsl / BlueMuse failure), so every chunk is
converted with ``lsl = unix - offset`` where ``offset = time.time() - local_clock()``.

The offset is *measured*, never assumed: each measurement reads the wall clock bracketed by two
``local_clock()`` reads and keeps, of a few tries, the one with the narrowest bracket (its error
is at most half the bracket, typically a few microseconds). It is re-measured at every
conversion and smoothed with a running median, which ignores an odd measurement taken while
the thread was preempted. The wall clock can be *stepped* (NTP, the user changing the time): a
measurement that differs from the running offset by more than ``step_threshold`` is confirmed
by a second one, then adopted at once and logged; samples of the chunk stamped before the step
(recognised by the jump in their raw stamps) keep the old offset.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

ClockFunction = Callable[[], float]


@dataclass(frozen=True)
class OffsetMeasurement:
    """One bracketed reading of ``wall_clock() - lsl_clock()``.

    Attributes
    ----------
    offset : float
        Wall clock minus LSL clock, seconds.
    bracket : float
        Width of the two LSL reads around the wall-clock read, seconds; the offset's error is at
        most half of it.
    lsl_time : float
        LSL time of the measurement (middle of the bracket).
    """

    offset: float
    bracket: float
    lsl_time: float


@dataclass(frozen=True)
class ClockStep:
    """A detected step of the wall clock."""

    lsl_time: float
    old_offset: float
    new_offset: float

    @property
    def size(self) -> float:
        """How far the wall clock jumped, seconds (positive: forward)."""
        return self.new_offset - self.old_offset


class UnixToLslClock:
    """Converts Unix-epoch (wall-clock) timestamps to LSL ``local_clock()`` timestamps.

    Thread-safe; one instance per board (each keeps its own step bookkeeping).

    Parameters
    ----------
    wall_clock : callable
        Returns Unix time in seconds; :func:`time.time` (what BrainFlow uses) by default. Tests
        inject a steppable clock here.
    lsl_clock : callable | None
        Returns LSL time; :func:`pylsl.local_clock` by default.
    tries : int
        Bracketed reads per measurement; the narrowest bracket wins.
    window : int
        Number of recent measurements whose median is the running offset.
    step_threshold : float
        A measurement this far (seconds) from the running offset, confirmed by a second one, is
        a wall-clock step. Slewing (NTP's gradual correction, at most 0.5 ms/s) stays below it
        between two conversions.
    """

    def __init__(
        self,
        *,
        wall_clock: ClockFunction = time.time,
        lsl_clock: ClockFunction | None = None,
        tries: int = 5,
        window: int = 9,
        step_threshold: float = 0.002,
    ) -> None:
        if tries < 1 or window < 1:
            raise ValueError("UnixToLslClock needs tries >= 1 and window >= 1.")
        if step_threshold <= 0:
            raise ValueError("step_threshold must be positive (seconds).")
        self._wall_clock = wall_clock
        if lsl_clock is None:
            import pylsl

            lsl_clock = pylsl.local_clock
        self._lsl_clock = lsl_clock
        self._tries = tries
        self._step_threshold = step_threshold
        self._measurements: deque[OffsetMeasurement] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._last_unix_stamp: float | None = None
        self._last_lsl_stamp: float | None = None
        self.steps: list[ClockStep] = []
        self._measurements.append(self.measure())
        self._offset = self._measurements[0].offset

    def measure(self) -> OffsetMeasurement:
        """Take one bracketed measurement of ``wall_clock() - lsl_clock()`` (not stored)."""
        best: OffsetMeasurement | None = None
        for _ in range(self._tries):
            before = self._lsl_clock()
            wall = self._wall_clock()
            after = self._lsl_clock()
            middle = 0.5 * (before + after)
            candidate = OffsetMeasurement(offset=wall - middle, bracket=after - before, lsl_time=middle)
            if best is None or candidate.bracket < best.bracket:
                best = candidate
        assert best is not None
        return best

    @property
    def offset(self) -> float:
        """The running offset (median of recent measurements), seconds: ``unix = lsl + offset``."""
        with self._lock:
            return self._running_offset()

    def _running_offset(self) -> float:
        return self._offset

    def _remember(self, *measurements: OffsetMeasurement) -> None:
        self._measurements.extend(measurements)
        self._offset = statistics.median(m.offset for m in self._measurements)

    def update(self) -> ClockStep | None:
        """Re-measure the offset; return the step if the wall clock was just found to have jumped."""
        with self._lock:
            return self._update_locked()

    def _update_locked(self) -> ClockStep | None:
        current = self._running_offset()
        measurement = self.measure()
        if abs(measurement.offset - current) <= self._step_threshold:
            self._remember(measurement)
            return None
        confirmation = self.measure()
        if abs(confirmation.offset - measurement.offset) > self._step_threshold:
            logger.debug(
                "Ignoring an inconsistent clock-offset measurement (%.6f s vs running %.6f s)",
                measurement.offset,
                current,
            )
            return None
        step = ClockStep(lsl_time=confirmation.lsl_time, old_offset=current, new_offset=confirmation.offset)
        self._measurements.clear()
        self._remember(measurement, confirmation)
        self.steps.append(step)
        logger.warning(
            "The wall clock stepped by %+.6f s (NTP or a manual change); BrainFlow timestamps are "
            "converted with the new offset from now on, LSL time is unaffected.",
            step.size,
        )
        return step

    def to_lsl(self, unix_timestamps: np.ndarray) -> np.ndarray:
        """Convert one chunk of BrainFlow timestamps to ``local_clock()``.

        Re-measures the offset first. Call it once per chunk, in arrival order.

        Parameters
        ----------
        unix_timestamps : np.ndarray, shape (n_samples,)
            BrainFlow's timestamp row (Unix seconds).

        Returns
        -------
        np.ndarray, shape (n_samples,), float64
            The same instants on LSL's ``local_clock()``.
        """
        stamps = np.asarray(unix_timestamps, dtype=np.float64)
        with self._lock:
            step = self._update_locked()
            offsets = np.full(stamps.shape, self._running_offset())
            if step is not None and stamps.size:
                offsets[: self._samples_before_step(stamps, step)] = step.old_offset
            converted = stamps - offsets
            if stamps.size:
                self._last_unix_stamp = float(stamps[-1])
                self._last_lsl_stamp = float(converted[-1])
        return converted

    def _samples_before_step(self, stamps: np.ndarray, step: ClockStep) -> int:
        """How many leading samples of ``stamps`` were stamped before the wall clock stepped.

        A step of ``size`` seconds shows up as one raw interval ``size`` longer than the others.
        Without such a jump the step fell either before this chunk (all samples are new) or after
        its last sample was stamped (all are old): read with the new offset, old samples would
        land before the previous chunk or in the future.
        """
        previous = self._last_unix_stamp if self._last_unix_stamp is not None else stamps[0]
        intervals = np.diff(np.concatenate(([previous], stamps)))
        typical = float(np.median(intervals[1:])) if intervals.size > 1 else 0.0
        deviation = np.abs(intervals - typical - step.size)
        jump = int(np.argmin(deviation))
        if self._last_unix_stamp is not None and deviation[jump] <= 0.5 * abs(step.size):
            return jump
        first_if_new = stamps[0] - step.new_offset
        last_if_new = stamps[-1] - step.new_offset
        before_previous = self._last_lsl_stamp is not None and first_if_new <= self._last_lsl_stamp
        in_future = last_if_new > self._lsl_clock() + self._step_threshold
        return int(stamps.size) if before_previous or in_future else 0
