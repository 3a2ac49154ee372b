"""UnixToLslClock: BrainFlow's wall-clock stamps land on LSL's local_clock and follow clock steps.

The steppable wall clock below is a test seam (the conversion takes its time source as a
parameter), not a stand-in for hardware: the real LSL clock is used throughout.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pylsl
import pytest

from dyadlab.acquisition.clock import UnixToLslClock


class SteppableWallClock:
    """The real ``time.time()`` plus an offset the test can step, like NTP stepping the clock."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def test_offset_matches_wall_minus_lsl_clock() -> None:
    clock = UnixToLslClock()
    before, wall, after = pylsl.local_clock(), time.time(), pylsl.local_clock()
    assert wall - after - 0.001 <= clock.offset <= wall - before + 0.001
    measurement = clock.measure()
    assert measurement.bracket >= 0
    assert measurement.bracket < 0.05


def test_unix_stamps_taken_now_convert_to_local_clock_now() -> None:
    clock = UnixToLslClock()
    lsl_before = pylsl.local_clock()
    unix_now = np.array([time.time() - 0.004 * k for k in range(5, -1, -1)])
    converted = clock.to_lsl(unix_now)
    lsl_after = pylsl.local_clock()
    assert converted.shape == unix_now.shape
    # The newest sample was stamped "now": between the local_clock reads around it (± 1 ms).
    assert lsl_before - 0.001 <= converted[-1] <= lsl_after + 0.001
    assert np.all(np.diff(converted) > 0)
    # Nowhere near Unix time: that would be the muse-lsl failure.
    assert abs(converted[-1] - unix_now[-1]) > 1e6


def test_offset_is_remeasured_at_every_conversion() -> None:
    wall = SteppableWallClock()
    clock = UnixToLslClock(wall_clock=wall, window=3)
    # A slow drift (slew) below the step threshold is followed by the running median.
    for _ in range(6):
        wall.shift += 0.0005
        clock.to_lsl(np.array([wall()]))
    before, now, after = pylsl.local_clock(), wall(), pylsl.local_clock()
    # The median of the last 3 measurements lags the newest by one 0.5 ms step.
    assert now - after - 0.0012 <= clock.offset <= now - before + 0.0002
    assert clock.steps == []


@pytest.mark.parametrize("step", [+30.0, -30.0, +0.25])
def test_wall_clock_step_is_followed_and_logged(step: float, caplog: pytest.LogCaptureFixture) -> None:
    wall = SteppableWallClock()
    clock = UnixToLslClock(wall_clock=wall)
    before = clock.to_lsl(np.array([wall() - 0.004, wall()]))
    time.sleep(0.01)
    wall.shift += step
    with caplog.at_level(logging.WARNING, logger="dyadlab.acquisition.clock"):
        lsl_before = pylsl.local_clock()
        after = clock.to_lsl(np.array([wall() - 0.004, wall()]))
        lsl_after = pylsl.local_clock()
    assert lsl_before - 0.001 <= after[-1] <= lsl_after + 0.001
    assert after[0] > before[-1]
    assert len(clock.steps) == 1 and clock.steps[0].size == pytest.approx(step, abs=0.001)
    assert "stepped" in caplog.text


def test_chunk_straddling_a_step_keeps_old_offset_for_samples_before_it() -> None:
    wall = SteppableWallClock()
    clock = UnixToLslClock(wall_clock=wall)
    dt = 0.004
    first = clock.to_lsl(np.array([wall() - dt, wall()]))
    # Ten samples: five stamped before the step, five after (in the new wall-clock frame).
    lsl_start = pylsl.local_clock()
    true_lsl = lsl_start + dt * np.arange(1, 11)
    old_offset = time.time() - pylsl.local_clock()
    raw = true_lsl + old_offset
    raw[5:] += 10.0
    wall.shift += 10.0
    converted = clock.to_lsl(raw)
    np.testing.assert_allclose(converted, true_lsl, atol=0.002)
    assert converted[0] > first[-1]


def test_chunk_read_just_before_a_step_stays_in_the_old_frame() -> None:
    wall = SteppableWallClock()
    clock = UnixToLslClock(wall_clock=wall)
    clock.to_lsl(np.array([wall() - 0.004, wall()]))
    chunk = np.array([wall() - 0.004, wall()])  # read from the board, then the clock steps
    expected = chunk - (time.time() - pylsl.local_clock())
    wall.shift -= 5.0
    converted = clock.to_lsl(chunk)
    np.testing.assert_allclose(converted, expected, atol=0.002)
    # The next chunk is entirely in the new frame.
    lsl_before = pylsl.local_clock()
    later = clock.to_lsl(np.array([wall()]))
    assert lsl_before - 0.001 <= later[0] <= pylsl.local_clock() + 0.001


def test_empty_chunk_converts_to_empty() -> None:
    clock = UnixToLslClock()
    assert clock.to_lsl(np.empty(0)).shape == (0,)
