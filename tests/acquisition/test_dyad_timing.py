"""Acceptance: two real synthetic boards, the marker hub and the recorder share one clock.

Two BrainFlow synthetic boards run through two :class:`BoardBridge` objects, a
:class:`MarkerHub` pushes events to the LSL marker stream *and* into both boards' marker
channels, and the project recorder writes everything to one XDF file. After pyxdf's clock
synchronization each board-channel marker is compared with its LSL marker (matched by order and
code); the median and maximum residuals are printed.

What "within one sample period" can mean on a shared machine. BrainFlow puts a marker on the
next sample its board thread produces, stamped when that thread produces it; so the residual is
(a) the time from the LSL stamp until ``insert_marker`` has queued the code (the hub, the GIL,
the scheduler),
plus (b) the wait for the board's next sample, at most one sample period, plus (c) how late the
board thread woke up for it (visible in its own stamps as a longer interval before that sample).
(a) and (c) are the operating system's, and on a loaded 2-core CI box they reach several ms. The
test measures (a) with a timing wrapper around each bridge and (c) from the stamps, and asserts
that what remains, the dyadlab clock chain, is within one sample period for every marker; the
raw residuals must never be negative (a marker cannot land on a sample taken before the event).
Raw bounds too, so that a slow hub cannot hide in (a): the median insert delay stays under half
a period and the median raw residual within one period plus 3 ms.
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.brainflow_source import BrainFlowSource
from dyadlab.acquisition.bridge import BoardBridge
from dyadlab.acquisition.markers import Marker, MarkerHub, MarkerOutlet
from dyadlab.acquisition.recorder import LslRecorder, StreamSelector
from dyadlab.acquisition.streams import ParticipantInfo, event_stream_info

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

EVENTS = ("trial_start", "fixation", "cue", "go", "feedback", "trial_end")
N_MARKERS = 20
TOLERANCE = 0.001  # seconds: stamp jitter of the board thread below one period (idle std 0.05-0.12 ms)


class TimedSink:
    """Passes markers to a bridge and notes when ``insert_marker`` returned (instrumentation).

    The marker is in BrainFlow's queue by then at the latest, so the sample that carries it is
    produced at most one sample period (plus the board thread's own lateness) after that.
    """

    def __init__(self, bridge: BoardBridge) -> None:
        self.bridge = bridge
        self.returned_at: list[float] = []

    def insert_marker(self, code: float) -> None:
        self.bridge.insert_marker(code)
        self.returned_at.append(pylsl.local_clock())


def test_board_markers_match_lsl_markers_within_one_sample(tmp_path: Path, unique_id: str) -> None:
    study, dyad = "timing", f"d{unique_id}"
    path = tmp_path / "dyad.xdf"
    rng = random.Random(7)
    with ExitStack() as stack:
        bridges = [
            stack.enter_context(
                BoardBridge(
                    BrainFlowSource(participant=f"{label}-{unique_id}"),
                    study=study,
                    dyad=dyad,
                    participant=ParticipantInfo(label, f"sub-{label}"),
                )
            )
            for label in ("A", "B")
        ]
        sinks = [TimedSink(bridge) for bridge in bridges]
        outlet = stack.enter_context(MarkerOutlet(event_stream_info(study, dyad, "markers")))
        hub = MarkerHub(outlet, sinks)
        selectors = [StreamSelector(source_id=b.source_id) for b in bridges]
        selectors.append(StreamSelector(source_id=outlet.source_id))
        recorder = stack.enter_context(LslRecorder(path, selectors, wait_for_streams=10.0))
        time.sleep(0.5)
        hub.push(Marker("block_start", task="timing", block="b1", condition="rest"))
        for trial in range(N_MARKERS - 2):
            time.sleep(0.08 + 0.07 * rng.random())  # off the sample grid on purpose
            hub.push(Marker(EVENTS[trial % len(EVENTS)], task="timing", block="b1", condition="rest", trial=trial))
        time.sleep(0.1)
        hub.push(Marker("block_end", task="timing", block="b1", condition="rest"))
        time.sleep(0.5)
        summary = recorder.stop()
    assert summary.ok, summary.problems

    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    by_id = {s["info"]["source_id"][0]: s for s in streams}
    marker_stream = by_id[outlet.source_id]
    lsl_times = np.asarray(marker_stream["time_stamps"])
    lsl_codes = np.array([json.loads(v[0])["code"] for v in marker_stream["time_series"]])
    assert len(lsl_codes) == N_MARKERS

    for bridge, sink in zip(bridges, sinks):
        eeg = by_id[bridge.source_id]
        period = 1.0 / float(eeg["info"]["nominal_srate"][0])
        data = np.asarray(eeg["time_series"])
        stamps = np.asarray(eeg["time_stamps"])
        tagged = np.flatnonzero(data[:, -1])
        # Matched by order and code: the same events, in the same order, on every board.
        np.testing.assert_array_equal(data[tagged, -1].astype(int), lsl_codes)
        residuals = stamps[tagged] - lsl_times
        insert_delay = np.asarray(sink.returned_at) - lsl_times
        board_wakeup_delay = np.maximum(0.0, (stamps[tagged] - stamps[tagged - 1]) - period)
        clock_chain = residuals - insert_delay - board_wakeup_delay
        message = (
            f"{bridge.stream_name}: board marker - LSL marker: median {np.median(residuals) * 1e3:+.2f} ms, "
            f"max {np.max(residuals) * 1e3:+.2f} ms, min {np.min(residuals) * 1e3:+.2f} ms "
            f"({np.sum(residuals > period)}/{len(residuals)} beyond one sample period of {period * 1e3:.1f} ms); "
            f"OS share: insert delay max {np.max(insert_delay) * 1e3:.2f} ms, board wake-up delay max "
            f"{np.max(board_wakeup_delay) * 1e3:.2f} ms; clock chain max {np.max(clock_chain) * 1e3:+.2f} ms"
        )
        print(message)
        logger.info(message)
        assert np.min(residuals) >= -TOLERANCE, message
        assert np.median(clock_chain) <= period, message
        assert np.all(clock_chain <= period + TOLERANCE), message
        # Raw bounds, nothing subtracted: the OS allowances above must not hide a late hub (a
        # delay inside MarkerHub.push is part of the measured insert delay). The hub's own share
        # stays under half a period for most markers, and most markers land within one period.
        assert np.median(insert_delay) <= period / 2, message
        assert np.median(residuals) <= period + 3 * TOLERANCE, message

        # The participant's stream covers the whole recording, monotonically.
        assert stamps[0] < lsl_times[0] and stamps[-1] > lsl_times[-1]
        assert np.all(np.diff(stamps) > 0)

    stamps_a = np.asarray(by_id[bridges[0].source_id]["time_stamps"])
    stamps_b = np.asarray(by_id[bridges[1].source_id]["time_stamps"])
    overlap = min(stamps_a[-1], stamps_b[-1]) - max(stamps_a[0], stamps_b[0])
    union = max(stamps_a[-1], stamps_b[-1]) - min(stamps_a[0], stamps_b[0])
    start_skew, end_skew = abs(stamps_a[0] - stamps_b[0]), abs(stamps_a[-1] - stamps_b[-1])
    print(
        f"A/B overlap {overlap:.3f} s of {union:.3f} s; starts differ by {start_skew * 1e3:.1f} ms, "
        f"ends by {end_skew * 1e3:.1f} ms"
    )
    # Both streams already span every marker (above); they start and end together up to the time the
    # recorder takes to open one inlet after the other.
    assert start_skew < 0.5 and end_skew < 0.5
