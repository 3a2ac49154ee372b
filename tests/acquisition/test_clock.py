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


# -- deterministic clocks: exact offsets, steps at chosen samples (found by mutation testing) --------
class FakeClocks:
    """An LSL clock standing still at ``now`` and a wall clock ``now + offset``.

    ``glitch(value, reads)`` makes the next ``reads`` wall-clock reads use another offset (one
    measurement takes ``tries`` reads). Values are binary fractions where it matters, so offsets
    come out exact.
    """

    def __init__(self, now: float = 100.0, offset: float = 1000.0) -> None:
        self.now = now
        self.offset = offset
        self._queued: list[float] = []

    def lsl(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + (self._queued.pop(0) if self._queued else self.offset)

    def glitch(self, offset: float, reads: int = 5) -> None:
        self._queued += [offset] * reads

    def clock(self, **options: float) -> UnixToLslClock:
        return UnixToLslClock(wall_clock=self.wall, lsl_clock=self.lsl, **options)  # type: ignore[arg-type]


DT = 0.00390625  # 256 Hz: sample times stay exact binary fractions


def test_bad_parameters_are_refused_with_their_rule() -> None:
    clocks = FakeClocks()
    for options in ({"tries": 0}, {"window": 0}, {"tries": 0, "window": 0}):
        with pytest.raises(ValueError, match=r"^UnixToLslClock needs tries >= 1 and window >= 1\.$"):
            clocks.clock(**options)
    for threshold in (0.0, -0.001):
        with pytest.raises(ValueError, match=r"^step_threshold must be positive \(seconds\)\.$"):
            clocks.clock(step_threshold=threshold)
    smallest = clocks.clock(tries=1, window=1, step_threshold=1e-9)
    assert smallest.to_lsl(np.array([1100.0])) == pytest.approx([100.0], abs=1e-12)


def test_measurement_is_stamped_in_the_middle_of_its_bracket() -> None:
    reads = iter([10.0, 10.5, 20.0, 20.25])  # two tries: brackets 0.5 and 0.25

    def lsl() -> float:
        return next(reads)

    clock = UnixToLslClock(wall_clock=lambda: 1000.0, lsl_clock=lsl, tries=2)
    first = clock._measurements[0]
    assert (first.bracket, first.lsl_time, first.offset) == (0.25, 20.125, 1000.0 - 20.125)
    real = UnixToLslClock()
    before = pylsl.local_clock()
    measurement = real.measure()
    assert before <= measurement.lsl_time <= pylsl.local_clock()


def test_a_step_is_stamped_and_its_two_measurements_become_the_offset(caplog: pytest.LogCaptureFixture) -> None:
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.glitch(1000.5)  # the measurement that finds the step...
    clocks.offset = 1000.5009765625  # ...and its confirmation, 0.98 ms further: consistent (threshold 2 ms)
    with caplog.at_level(logging.WARNING, logger="dyadlab.acquisition.clock"):
        step = clock.update()
    assert step is not None and clock.steps == [step]
    assert (step.lsl_time, step.old_offset, step.new_offset) == (100.0, 1000.0, 1000.5009765625)
    assert clock.offset == (1000.5 + 1000.5009765625) / 2  # the median of both, not one of them
    assert [r.getMessage() for r in caplog.records] == [
        "The wall clock stepped by +0.500977 s (NTP or a manual change); BrainFlow timestamps are "
        "converted with the new offset from now on, LSL time is unaffected."
    ]


def test_an_inconsistent_measurement_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.glitch(1001.0)  # one preempted measurement; the confirmation agrees with the old offset
    with caplog.at_level(logging.DEBUG, logger="dyadlab.acquisition.clock"):
        assert clock.update() is None
    assert clock.steps == [] and clock.offset == 1000.0
    assert [r.getMessage() for r in caplog.records] == [
        "Ignoring an inconsistent clock-offset measurement (1001.000000 s vs running 1000.000000 s)"
    ]
    assert clock.to_lsl(np.array([1100.0])) == pytest.approx([100.0], abs=1e-12)


@pytest.mark.parametrize("n_samples", [1, 3])
def test_a_step_before_the_first_chunk_converts_it_with_the_new_offset(n_samples: int) -> None:
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.offset = 1010.0  # the wall clock steps before any chunk was converted
    true_lsl = clocks.now - DT * np.arange(n_samples)[::-1]
    converted = clock.to_lsl(true_lsl + 1010.0)
    np.testing.assert_allclose(converted, true_lsl, rtol=0, atol=1e-9)
    assert len(clock.steps) == 1


@pytest.mark.parametrize("n_samples", [1, 3])
def test_chunk_read_just_before_a_forward_step_stays_in_the_old_frame(n_samples: int) -> None:
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.now += 1.0
    clock.to_lsl(clocks.now - DT * np.arange(4)[::-1] + 1000.0)
    clocks.now += 0.25
    true_lsl = clocks.now - DT * np.arange(n_samples)[::-1]
    chunk = true_lsl + 1000.0  # read from the board in the old frame, then the clock steps +10 s
    clocks.offset = 1010.0
    np.testing.assert_allclose(clock.to_lsl(chunk), true_lsl, rtol=0, atol=1e-9)
    later = clock.to_lsl(np.array([clocks.now + 1010.0]))  # the next chunk is in the new frame
    assert later == pytest.approx([clocks.now], abs=1e-9)


@pytest.mark.parametrize(
    ("step", "jitter"),
    [
        (0.003, 0.0),  # just above the 2-ms threshold, smaller than a sample interval
        (1000.0, 0.001),  # a large step between jittered stamps (1 ms either way)
    ],
)
def test_chunk_straddling_a_step_is_split_at_the_jump(step: float, jitter: float) -> None:
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.now += 1.0
    clock.to_lsl(clocks.now - DT * np.arange(5)[::-1] + 1000.0)
    true_lsl = clocks.now + DT * np.arange(1, 11) + jitter * (-1.0) ** np.arange(10)
    clocks.now = float(true_lsl[-1])
    raw = true_lsl + 1000.0
    raw[6:] += step  # six samples stamped before the step, four after
    clocks.offset = 1000.0 + step
    np.testing.assert_allclose(clock.to_lsl(raw), true_lsl, rtol=0, atol=1e-9)


def test_a_measurement_exactly_at_the_threshold_is_not_a_step() -> None:
    """'More than step_threshold' (the module docstring): a difference of exactly the threshold is slew."""
    threshold = 2.0**-9  # 1.95 ms, exact in binary
    clocks = FakeClocks()
    clock = clocks.clock(step_threshold=threshold)
    clocks.glitch(1000.0 + threshold)
    assert clock.update() is None and clock.steps == []
    assert clock.offset == 1000.0 + threshold / 2  # remembered: the median of the two measurements
    # A confirmation exactly the threshold away from the measurement agrees with it: a step.
    clocks.glitch(1000.0 + 3 * threshold)
    clocks.offset = 1000.0 + 2 * threshold
    step = clock.update()
    assert step is not None and step.new_offset == 1000.0 + 2 * threshold
