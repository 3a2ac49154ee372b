"""Conversion between PsychoPy's clock and the LSL clock (``pylsl.local_clock()``).

PsychoPy's time base depends on whether psychtoolbox imports: with it, on Linux,
``psychopy.core.getTime()`` counts from ``ptb.GetSecs()`` (the epoch wall clock) minus the time
PsychoPy was imported; without it, from ``timeit.default_timer``. Neither may enter an LSL
stream directly. Key-down times and flip times that PsychoPy reports are converted with an offset
measured here, by bracketing one PsychoPy clock read between two ``local_clock()`` reads and
keeping the tightest bracket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClockOffset:
    """``local_clock() - psychopy.core.getTime()`` and the uncertainty of that measurement.

    Attributes
    ----------
    offset : float
        Seconds to add to a PsychoPy time to get the LSL time.
    uncertainty : float
        Half the width of the tightest ``local_clock()`` bracket, in seconds.
    """

    offset: float
    uncertainty: float


def measure_clock_offset(n_reads: int = 9) -> ClockOffset:
    """Measure ``local_clock() - core.getTime()`` with the tightest of ``n_reads`` brackets."""
    import pylsl
    from psychopy import core

    best: ClockOffset | None = None
    for _ in range(n_reads):
        before = pylsl.local_clock()
        psychopy_time = core.getTime()
        after = pylsl.local_clock()
        candidate = ClockOffset(offset=(before + after) / 2.0 - psychopy_time, uncertainty=(after - before) / 2.0)
        if best is None or candidate.uncertainty < best.uncertainty:
            best = candidate
    assert best is not None
    return best


class PsychopyToLslClock:
    """Converts PsychoPy times (flip returns, key-down times) to ``local_clock()`` seconds.

    The offset is re-measured at most every ``refresh_s`` seconds, because with psychtoolbox
    on Linux the PsychoPy base is the wall clock, which NTP can slew or step.

    Parameters
    ----------
    refresh_s : float
        Minimum interval between re-measurements.
    """

    def __init__(self, refresh_s: float = 1.0) -> None:
        import pylsl

        self._local_clock = pylsl.local_clock
        self._refresh_s = refresh_s
        self._current = measure_clock_offset()
        self._measured_at = self._local_clock()

    @property
    def current(self) -> ClockOffset:
        """The most recent measurement."""
        return self._current

    def refresh(self, force: bool = False) -> ClockOffset:
        """Re-measure the offset if ``refresh_s`` has passed (or ``force``); return it."""
        now = self._local_clock()
        if force or now - self._measured_at >= self._refresh_s:
            new = measure_clock_offset()
            jump = new.offset - self._current.offset
            if abs(jump) > 0.002:
                logger.warning("PsychoPy-to-LSL clock offset moved by %.1f ms (wall clock stepped?)", jump * 1e3)
            self._current = new
            self._measured_at = now
        return self._current

    def to_lsl(self, psychopy_time: float) -> float:
        """The LSL time of a PsychoPy time."""
        return psychopy_time + self._current.offset
