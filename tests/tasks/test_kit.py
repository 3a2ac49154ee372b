"""The task kit under Xvfb: flip-locked marker timing, response times, Escape, pause, instructions.

Real windows, real LSL streams read back through inlets, and real X key events (XTEST).
"""

from __future__ import annotations

import threading
import time

import pytest

from dyadlab.acquisition.markers import Marker
from dyadlab.tasks.autopilot import Autopilot, AutopilotSettings
from dyadlab.tasks.kit import SessionAborted
from dyadlab.tasks.paradigms import run_block
from tests.tasks.helpers import events, needs_display, read_csv

pytestmark = [needs_display, pytest.mark.display, pytest.mark.integration]

FAST_PRESS = {"fixation_s": [0.2, 0.3], "cue_to_go_s": [0.2, 0.4], "feedback_s": 0.25, "response_window_s": 1.2}


def psychopy_to_lsl_offset() -> tuple[float, float]:
    """``local_clock() - core.getTime()`` measured here, independently of dyadlab.tasks.timing."""
    import pylsl
    from psychopy import core

    best = (0.0, float("inf"))
    for _ in range(50):
        before = pylsl.local_clock()
        now = core.getTime()
        after = pylsl.local_clock()
        if after - before < best[1]:
            best = ((before + after) / 2 - now, after - before)
    return best


def flip_residuals(stamps: list[float], flip_times: list[float]) -> list[float]:
    """LSL stamp minus the PsychoPy flip time converted to local_clock, per marker (seconds)."""
    offset, _ = psychopy_to_lsl_offset()
    return [stamp - (flip + offset) for stamp, flip in zip(stamps, flip_times)]


@pytest.mark.parametrize("layout", ["shared", "per-participant"])
def test_every_marker_is_stamped_at_its_flip_within_1ms(make_context, streams, layout):
    ctx = make_context(layout=layout)
    run_block(ctx, "joint-press", {**FAST_PRESS, "n_trials": 3}, "timing-1")
    received = streams.markers()
    logged = [(marker, stamp, record.flip_time) for record in ctx.flip_log for marker, stamp in record.markers]
    # what arrived through LSL is exactly what was pushed inside the flips, in order
    assert [m for m, _ in received] == [m for m, _, _ in logged]
    assert [s for _, s in received] == [s for _, s, _ in logged]
    residuals = flip_residuals([s for _, s in received], [f for _, _, f in logged])
    assert len(residuals) == len(received) > 20
    assert max(abs(r) for r in residuals) < 1e-3, f"marker-to-flip residuals {residuals}"
    assert min(residuals) > -1e-4, "a marker was stamped before its flip"
    if layout == "per-participant":
        # the second screen is flipped right after the first, never before it
        assert all(record.other_flip_times[0] >= record.flip_time for record in ctx.flip_log)


def test_the_timing_check_catches_a_marker_pushed_off_the_flip(make_context, streams):
    """Negative control: a marker pushed 5 ms before the flip fails the 1 ms criterion."""
    ctx = make_context(autopilot=None)
    ctx.hub.push(Marker(event="stimulus", value="pushed early"))
    time.sleep(0.005)
    flip_time = ctx.flip().flip_time
    ((_, stamp),) = streams.markers()
    (residual,) = flip_residuals([stamp], [flip_time])
    assert residual < -0.004


def test_response_stamps_are_key_down_times_on_the_lsl_clock(make_context, streams):
    """Each response's LSL stamp is the HID key-down time, not the poll time of the frame loop."""
    ctx = make_context()
    run_block(ctx, "joint-press", {**FAST_PRESS, "n_trials": 3, "show_instructions": False}, "rt-1")
    responses = streams.response_events()
    downs = [(key, before, after) for key, down, before, after in ctx.autopilot.sent if down]
    assert responses and len(responses) == len(downs)
    for (marker, stamp), (key, before, after) in zip(responses, downs):
        assert marker.value["key"] == key
        # the X server gets the event between the two reads (the second one can be late under
        # load); PTB stamps it when its HID thread reads it, a few ms later at most
        assert before - 0.001 < stamp < after + 0.02, f"response stamp {stamp - before:+.4f} s after the send began"


def test_escape_mid_block_pushes_abort_and_block_end_and_saves_the_csv(make_context, streams):
    ctx = make_context()
    ctx.autopilot.operator_key("escape", ctx.now() + 3.0)
    with pytest.raises(SessionAborted):
        run_block(ctx, "joint-press", {**FAST_PRESS, "n_trials": 100, "show_instructions": False}, "esc-1")
    markers = streams.markers()
    assert events(markers)[0] == "block_start" and events(markers)[-2:] == ["abort", "block_end"]
    abort, end = markers[-2][0], markers[-1][0]
    assert (end.block, end.condition, end.value) == ("esc-1", "cooperation", "aborted")
    assert abort.block == "esc-1" and markers[-1][1] >= markers[-2][1]
    # the CSV is on disk before the context is closed; the trial cut by Escape may be missing
    rows = read_csv(ctx.csv_path)
    n_feedback = events(markers).count("feedback")
    assert n_feedback >= 1 and len(rows) in (n_feedback - 1, n_feedback)
    # the caller can still close the session on a flip
    ctx.mark_on_next_flip(Marker(event="session_end", value="aborted"))
    ctx.flip(read_keys=False)
    assert [m.event for m, _ in streams.markers()] == ["session_end"]


def test_request_abort_from_another_thread_ends_the_block_like_escape(make_context, streams):
    """What the runner does when the recording fails mid-block: the block ends at the next flip."""
    ctx = make_context(speed=1.0)
    timer = threading.Timer(1.0, ctx.request_abort, args=("the recording failed: disk full",))
    timer.start()
    started = ctx.now()
    try:
        with pytest.raises(SessionAborted, match="disk full"):
            run_block(ctx, "rest", {"duration_s": 30, "show_instructions": False}, "req-1")
    finally:
        timer.cancel()
    assert ctx.now() - started < 5.0
    markers = streams.markers()
    assert events(markers) == ["block_start", "fixation", "abort", "block_end"]  # eyes-open rest: a fixation point
    assert markers[2][0].value == "the recording failed: disk full"
    assert markers[3][0].value == "aborted"
    ctx.mark_on_next_flip(Marker(event="session_end", value="aborted"))
    ctx.flip(read_keys=False)  # an abort already requested must not fire again here
    assert events(streams.markers()) == ["session_end"]


def test_the_experimenter_ends_a_free_conversation_with_the_proceed_key(make_context, streams):
    ctx = make_context(speed=1.0)
    ctx.autopilot.operator_key("space", ctx.now() + 1.0)
    started = ctx.now()
    run_block(ctx, "conversation", {"mode": "free", "duration_s": 60, "show_instructions": False}, "free-1")
    assert 0.9 < ctx.now() - started < 5.0
    markers = streams.markers()
    assert events(markers)[-1] == "block_end" and markers[-1][0].value == "complete"


def test_escape_on_the_instruction_screen_aborts_without_a_block(make_context, streams):
    ctx = make_context(
        autopilot=AutopilotSettings(seed=1, participants={"A": {"reading_time": 30.0}, "B": {"reading_time": 30.0}})
    )
    ctx.autopilot.operator_key("escape", ctx.now() + 0.6)
    with pytest.raises(SessionAborted):
        run_block(ctx, "rest", {"duration_s": 5}, "rest-esc")
    assert events(streams.markers()) == ["instructions", "abort"]


def test_operator_pause_marks_pause_and_resume_and_extends_the_block(make_context, streams):
    ctx = make_context(speed=1.0)
    start = ctx.now()
    ctx.autopilot.operator_key("f9", start + 0.5)
    ctx.autopilot.operator_key("f9", start + 1.5)
    run_block(ctx, "rest", {"duration_s": 1.2, "show_instructions": False}, "pause-1")
    markers = streams.markers()
    assert events(markers) == ["block_start", "fixation", "pause", "resume", "block_end"]
    t = {m.event: stamp for m, stamp in markers}
    paused = t["resume"] - t["pause"]
    assert 0.8 < paused < 1.4
    # the 1.2 s rest runs 1.2 s of unpaused screen time: the pause is added, not eaten into
    # (the upper margin allows for stalled frames on a loaded machine)
    shown = (t["block_end"] - t["block_start"]) - paused
    assert 1.15 < shown < 1.8


def test_instructions_wait_for_both_participants_or_the_operator(make_context, streams):
    ctx = make_context(autopilot=None)
    with Autopilot(AutopilotSettings(seed=2), {"A": "a", "B": "l"}) as operator:
        start = ctx.now()
        operator.press("a", start + 0.3)
        operator.press("space", start + 1.0)
        ctx.instructions("Press your key", task="rest", block_id="instr-1")
        waited = ctx.now() - start
    assert waited > 0.9, "A alone must not end the screen"
    assert events(streams.markers()) == ["instructions"]
    ((response, _),) = streams.response_events()
    assert (response.participant, response.block, response.value["key"]) == ("A", "instr-1", "a")


def test_a_held_key_is_one_response(make_context, streams):
    """Keys held across many frames and beyond the X autorepeat delay (660 ms) count once."""
    ctx = make_context(autopilot=AutopilotSettings(seed=1, key_hold=1.0))
    start = ctx.now()
    ctx.autopilot.press("l", start + 0.1)
    ctx.autopilot.press("a", start + 0.2)
    _, responses = ctx.show(lambda view: view.text("x", "hold").draw(), duration=1.6)
    assert [(r.participant, r.key) for r in responses] == [("B", "l"), ("A", "a")]
    assert [m.participant for m, _ in streams.response_events()] == ["B", "A"]


def test_a_key_released_between_contexts_does_not_come_back_as_a_press(make_context, streams):
    """PsychoPy's keyboard is a process-wide singleton: a key-up lost when one context closes must
    not pair with the next press of that key in the next context (a bogus press with an old time)."""
    first = make_context(autopilot=AutopilotSettings(seed=1, key_hold=1.0))
    first.autopilot.press("a", first.now() + 0.05)
    _, held = first.show(lambda view: view.text("x", "hold").draw(), duration=0.4)
    assert [r.key for r in held] == ["a"]
    first.close()  # the autopilot releases the key as it stops
    second = make_context(autopilot=AutopilotSettings(seed=1))
    pressed_at = second.now() + 0.2
    second.autopilot.press("a", pressed_at)
    _, responses = second.show(lambda view: view.text("x", "again").draw(), duration=0.8)
    assert [r.key for r in responses] == ["a"]
    # the new press, not the first context's (which went down about a second earlier)
    assert pressed_at - 0.01 < responses[0].t_down < pressed_at + 0.3


def test_photodiode_patch_is_white_exactly_on_marker_frames(make_context, streams):
    ctx = make_context(autopilot=None, photodiode_corner="top-left")
    window = ctx.views[0].window

    def corner_brightness(with_marker: bool) -> float:
        import numpy as np

        if with_marker:
            ctx.mark_on_next_flip(Marker(event="stimulus"))
        ctx._flip(grab=True)
        frame = np.asarray(window.movieFrames.pop().convert("L"), dtype=float)
        return float(frame[5:15, 5:15].mean())  # a few pixels inside the top-left corner

    assert corner_brightness(with_marker=True) > 250
    assert corner_brightness(with_marker=False) < 5
    assert events(streams.markers()) == ["stimulus"]


def test_make_response_fallback_reaches_the_task(make_context, streams):
    """The autopilot's no-X-server path (``KeyboardDevice.makeResponse``) also drives a block."""
    # Speed 1: real reaction times are checked (a faster pilot compresses them).
    ctx = make_context(autopilot=AutopilotSettings(seed=3, speed=1, injector="make-response"))
    assert ctx.autopilot.injector_name == "make-response"
    run_block(ctx, "joint-press", {**FAST_PRESS, "n_trials": 2}, "fallback-1")
    rows = read_csv(ctx.csv_path)
    assert len(rows) == 2
    answered = [row[f"rt_{p}"] for row in rows for p in "AB" if row[f"rt_{p}"] not in ("", "None")]
    assert len(answered) >= 3  # 5 % omissions: at most one of four responses missing here
    assert all(0.1 <= float(rt) < 1.2 for rt in answered)


def test_break_screen_is_marked_and_shortened_by_the_autopilot_speed(make_context, streams):
    ctx = make_context(speed=20.0)
    started = ctx.now()
    ctx.show_break(20.0, "Short break")
    assert 0.9 < ctx.now() - started < 2.0
    ((marker, _),) = streams.markers()
    assert (marker.event, marker.value) == ("break", {"seconds": 20.0})
