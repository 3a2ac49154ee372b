"""Every paradigm runs unattended (autopilot pressing real XTEST keys) under Xvfb.

Checked for each: the markers read back from a real LSL inlet, in order, with their conditions;
the response stream against the behavioural CSV; and screenshots of the main screens, kept in
``test-artifacts/screenshots`` for review and checked to be non-blank.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dyadlab.tasks.paradigms import run_block
from tests.tasks.helpers import drawn_pixels, events, needs_display, read_csv

pytestmark = [needs_display, pytest.mark.display, pytest.mark.integration]

FAST_PRESS = {
    "n_trials": 4,
    "fixation_s": [0.2, 0.3],
    "cue_to_go_s": [0.2, 0.4],
    "feedback_s": 0.25,
    "response_window_s": 1.2,
}
FAST_TAPPING = {"n_pacer_ticks": 6, "period_s": 0.4, "continuation_s": 1.6}


_test_started = [0.0]


@pytest.fixture(autouse=True)
def _note_start() -> None:
    """When the test began: screenshots older than that are an earlier run's (the folder is kept)."""
    _test_started[0] = time.time() - 1.0  # file systems with coarse modification times


def _assert_screens(directory: Path, names: list[str]) -> None:
    for name in names:
        path = directory / f"{name}.png"
        assert path.is_file(), f"screenshot {path} missing"
        assert path.stat().st_mtime >= _test_started[0], f"screenshot {path} was not written by this test"
        assert drawn_pixels(path) >= 20, f"screenshot {path} is blank"


def _assert_screens_differ(directory: Path, first: str, second: str) -> None:
    """Two participants' screenshots show different things (not one screen copied to both)."""
    from PIL import Image

    a, b = (np.asarray(Image.open(directory / f"{name}.png").convert("L"), dtype=float) for name in (first, second))
    assert a.shape == b.shape
    changed = float(np.mean(np.abs(a - b) > 16))
    assert changed > 0.002, f"{first} and {second} are the same picture ({changed:.4%} of pixels differ)"


def _without(markers, *skip):
    return [(m, t) for m, t in markers if m.event not in skip]


def _float(text: str) -> float | None:
    return None if text in ("", "None") else float(text)


def test_rest_variants_mark_their_conditions(make_context, streams, artifacts_dir):
    ctx = make_context(screenshots=True)
    run_block(ctx, "rest", {"variant": "eyes-open", "duration_s": 20}, "rest-open")
    run_block(ctx, "rest", {"variant": "separated", "duration_s": 20}, "rest-apart")
    run_block(ctx, "rest", {"variant": "eyes-closed", "duration_s": 20, "show_instructions": False}, "rest-closed")
    markers = streams.markers()
    assert events(markers) == [
        "instructions",
        "block_start",
        "fixation",  # eyes open: a fixation point on the screen
        "block_end",
        "instructions",
        "block_start",
        "fixation",
        "block_end",
        "block_start",
        "block_end",
    ]
    starts = [m for m, _ in markers if m.event == "block_start"]
    assert [m.condition for m in starts] == ["rest", "rest-separated", "rest-eyes-closed"]
    assert starts[2].value["eyes"] == "closed" and starts[1].value["facing"] is False
    # 20 s at autopilot speed 40 = 0.5 s of rest, measured between the flip-locked markers
    stamps = {m.block: [] for m, _ in markers}
    for marker, stamp in markers:
        stamps[marker.block].append((marker.event, stamp))
    rest_open = dict(stamps["rest-open"])
    assert 0.45 <= rest_open["block_end"] - rest_open["block_start"] <= 1.5
    _assert_screens(
        artifacts_dir / "screenshots", ["rest_instructions", "rest_eyes-open", "rest_separated", "rest_eyes-closed"]
    )


@pytest.mark.parametrize("mode,layout", [("cooperation", "shared"), ("competition", "per-participant")])
def test_joint_press_markers_responses_and_csv(make_context, streams, artifacts_dir, mode, layout):
    # Speed 1: the trial's own timing is checked (a faster pilot compresses it: tests/protocols/test_speed.py).
    ctx = make_context(layout=layout, screenshots=True, speed=1.0)
    run_block(ctx, "joint-press", {"mode": mode, **FAST_PRESS}, f"{mode}-1")
    markers = streams.markers()
    trial_events = ["trial_start", "fixation", "cue", "go", "feedback", "trial_end"]
    assert events(markers) == ["instructions", "block_start"] + trial_events * 4 + ["block_end"]
    assert all(m.condition == mode for m, _ in markers if m.event != "instructions")
    assert [m.trial for m, _ in markers if m.event == "go"] == [0, 1, 2, 3]
    assert [m.value for m, _ in markers if m.event == "cue"] == [mode] * 4
    feedback = [m.value for m, _ in markers if m.event == "feedback"]

    responses = [(m, t) for m, t in streams.response_events() if m.block == f"{mode}-1" and m.trial is not None]
    rows = read_csv(ctx.csv_path)
    assert len(rows) == 4
    go_stamps = [t for m, t in markers if m.event == "go"]
    window = FAST_PRESS["response_window_s"]
    counted = 0
    for trial, row in enumerate(rows):
        assert int(row["trial"]) == trial and row["condition"] == mode and row["outcome"] == feedback[trial]["outcome"]
        for label in ("A", "B"):
            pressed = sorted(
                (t, m)
                for m, t in responses
                if m.trial == trial and m.participant == label and m.value["rt"] is not None and m.value["rt"] >= 0
            )
            # A press within the response window after go is a response: the CSV and the feedback
            # count it whenever the response stream has one (and only then).
            in_window = [(t, m) for t, m in pressed if m.value["rt"] <= window]
            if row[f"rt_{label}"] in ("", "None"):
                assert not in_window, (
                    f"trial {trial}: {label} pressed {in_window[0][1].value['rt']:.3f} s after go, not counted"
                )
                assert feedback[trial]["rt"][label] is None
                continue
            counted += 1
            stamp, first = pressed[0]
            assert first.value["key"] == row[f"key_{label}"] == ctx.key_of(label)
            assert first.value["rt"] == pytest.approx(float(row[f"rt_{label}"]), abs=2e-6)
            assert stamp == pytest.approx(float(row[f"response_lsl_time_{label}"]), abs=2e-6)
            # the RT (PsychoPy clock: key-down minus go flip) agrees with the two LSL stamps
            assert stamp - go_stamps[trial] == pytest.approx(first.value["rt"], abs=2e-3)
            assert feedback[trial]["rt"][label] == pytest.approx(first.value["rt"], abs=2e-6)
        if mode == "cooperation" and row["outcome"] in ("success", "failure"):
            difference = abs(float(row["rt_A"]) - float(row["rt_B"]))
            assert (difference < float(row["threshold_s"])) == (row["outcome"] == "success")
        if mode == "competition" and row["winner"] not in ("", "None"):
            rts = {p: _float(row[f"rt_{p}"]) for p in "AB"}
            assert row["winner"] == min((p for p in rts if rts[p] is not None), key=lambda p: rts[p])
    # The autopilot answers every go (RT about 0.3-0.5 s, window 1.2 s): most responses are counted.
    assert counted >= 6, f"only {counted} of 8 responses counted"
    assert sum(f["outcome"] == "missing" for f in feedback) <= 1
    if mode == "cooperation":
        thresholds = [float(r["threshold_s"]) for r in rows]
        for before, after, row in zip(thresholds, thresholds[1:], rows):
            expected = before * (0.9 if row["outcome"] == "success" else 1.1)
            assert after == pytest.approx(min(max(expected, 0.03), 0.6))
    suffixes = [""] if layout == "shared" else ["_A", "_B"]
    _assert_screens(
        artifacts_dir / "screenshots",
        [f"joint-press_{s}{suffix}" for s in ("instructions", "cue", "go", f"feedback-{mode}") for suffix in suffixes],
    )
    if layout == "per-participant" and feedback[0].get("winner"):
        # "You were faster!" on the winner's screen, "Your partner was faster" on the other one
        _assert_screens_differ(
            artifacts_dir / "screenshots", f"joint-press_feedback-{mode}_A", f"joint-press_feedback-{mode}_B"
        )


@pytest.mark.parametrize("partner", ["human", "computer"])
def test_tapping_pacer_taps_and_csv(make_context, streams, artifacts_dir, partner):
    # Speed 1: the pace itself is checked (a faster pilot compresses it: tests/protocols/test_speed.py).
    ctx = make_context(screenshots=True, speed=1.0)
    run_block(ctx, "tapping", {"partner": partner, **FAST_TAPPING}, f"tap-{partner}")
    markers = streams.markers()
    condition = "tapping" if partner == "human" else "tapping-computer"
    structure = _without(markers, "tap")
    assert events(structure) == ["instructions", "block_start", "cue"] + ["pacer"] * 6 + ["cue", "block_end"]
    assert [m.value for m, _ in structure if m.event == "cue"] == [
        {"phase": "synchronization"},
        {"phase": "continuation"},
    ]
    assert [m.value["tick"] for m, _ in structure if m.event == "pacer"] == list(range(6))
    assert all(m.condition == condition for m, _ in markers if m.event != "instructions")
    ticks = [t for m, t in structure if m.event == "pacer"]
    # each flash is shown at the first frame after its scheduled time: a stalled frame on a loaded
    # machine delays a flash (the next one then follows sooner), but the schedule keeps the period
    intervals = sorted(b - a for a, b in zip(ticks, ticks[1:]))
    assert intervals[len(intervals) // 2] == pytest.approx(0.4, abs=0.03)

    rows = read_csv(ctx.csv_path)
    # presses on the instruction screen carry the block id but no condition: they are not taps
    taps = [(m, t) for m, t in streams.response_events() if m.block == f"tap-{partner}" and m.condition]
    human_rows = [r for r in rows if r["tapper"] in ("A", "B")]
    assert len(taps) >= 2 * 6, "each simulated participant taps at least once per pacer tick"
    assert sorted((m.participant, round(t, 5)) for m, t in taps) == sorted(
        (r["tapper"], round(float(r["tap_lsl_time"]), 5)) for r in human_rows
    )
    tap_markers = [m for m, _ in markers if m.event == "tap"]
    if partner == "human":
        # every participant tap is shown to the partner, with a tap marker on that flip
        assert sorted(m.participant for m in tap_markers) == sorted(m.participant for m, _ in taps)
        sync = [r for r in human_rows if r["phase"] == "synchronization" and r["asynchrony_s"]]
        assert len(sync) >= 2 * 6 - 2
        # Recomputed from the stamps: the pacer schedule starts one period after the synchronisation
        # cue's flip (the onset of the screen), tick k at onset + (k + 1) * period; a tap's asynchrony
        # is its LSL time minus the nearest scheduled tick.
        onset = next(t for m, t in structure if m.event == "cue" and m.value == {"phase": "synchronization"})
        scheduled = onset + 0.4 * (1 + np.arange(6))
        for row in sync:
            tap = float(row["tap_lsl_time"])
            expected = tap - scheduled[np.argmin(np.abs(tap - scheduled))]
            assert float(row["asynchrony_s"]) == pytest.approx(expected, abs=1e-3), row
        # The autopilot taps 30 ms ahead of the tick on average (SD 20 ms), plus the key latency.
        mean = float(np.mean([float(r["asynchrony_s"]) for r in sync]))
        assert -0.08 < mean < 0.04, mean
    else:
        computer_rows = [r for r in rows if r["tapper"] == "computer"]
        assert len(tap_markers) == len(computer_rows) >= 6
        assert all(m.participant is None and m.value == {"by": "computer"} for m in tap_markers)
    _assert_screens(
        artifacts_dir / "screenshots",
        ["tapping_instructions", f"{condition}_synchronization", f"{condition}_continuation"],
    )


def test_structured_conversation_turns(make_context, streams, artifacts_dir):
    ctx = make_context(layout="per-participant", screenshots=True)
    topics = ["Plan a trip.", "Describe a favourite meal."]
    run_block(ctx, "conversation", {"topics": topics, "topic_s": 40, "turn_s": 20, "first_speaker": "B"}, "conv-1")
    markers = streams.markers()
    assert events(markers) == [
        "instructions",
        "block_start",
        "topic",
        "turn",
        "turn",
        "topic",
        "turn",
        "turn",
        "block_end",
    ]
    start = markers[1][0]
    assert start.condition == "conversation" and start.value["roles"] == {"A": "therapist", "B": "patient"}
    assert [m.value["text"] for m, _ in markers if m.event == "topic"] == topics
    turns = [m.value for m, _ in markers if m.event == "turn"]
    assert [t["speaker"] for t in turns] == ["B", "A", "B", "A"]
    assert all(t["listener"] != t["speaker"] for t in turns)
    rows = read_csv(ctx.csv_path)
    turn_stamps = [t for m, t in markers if m.event == "turn"]
    assert [r["speaker"] for r in rows] == ["B", "A", "B", "A"]
    assert [float(r["turn_lsl_time"]) for r in rows] == pytest.approx(turn_stamps, abs=1e-3)
    _assert_screens(artifacts_dir / "screenshots", ["conversation_turn_A", "conversation_turn_B"])
    # B speaks first: B's screen says "Your turn to speak", A's "Please listen"
    _assert_screens_differ(artifacts_dir / "screenshots", "conversation_turn_A", "conversation_turn_B")


def test_free_conversation_with_roles_and_prompt(make_context, streams, artifacts_dir):
    ctx = make_context(screenshots=True)
    params = {"mode": "free", "duration_s": 20, "prompt": "How was your week?", "roles": {"A": "counsellor"}}
    run_block(ctx, "conversation", params, "free-1")
    markers = streams.markers()
    assert events(markers) == ["instructions", "block_start", "topic", "block_end"]
    assert markers[1][0].value["roles"] == {"A": "counsellor", "B": "patient"}
    assert markers[2][1] == pytest.approx(markers[1][1], abs=1e-3), "the prompt appears on the block's first flip"
    _assert_screens(artifacts_dir / "screenshots", ["conversation_free"])


def test_probe_runs_rest_tapping_conversation(make_context, streams, artifacts_dir):
    ctx = make_context(screenshots=True)
    params = {
        "rest": {"duration_s": 20},
        "tapping": {**FAST_TAPPING, "n_pacer_ticks": 3, "show_instructions": False},
        "conversation": {"topics": ["Plan a trip."], "topic_s": 20, "turn_s": 10, "show_instructions": False},
    }
    run_block(ctx, "probe", params, "probe-1")
    markers = streams.markers()
    blocks = [(m.block, m.condition) for m, _ in markers if m.event == "block_start"]
    assert blocks == [
        ("probe-1-rest", "rest"),
        ("probe-1-tapping", "tapping"),
        ("probe-1-conversation", "conversation"),
    ]
    # blocks never nest: each block_end follows its own block_start
    open_block = None
    for marker, _ in markers:
        if marker.event == "block_start":
            assert open_block is None
            open_block = marker.block
        elif marker.event == "block_end":
            assert marker.block == open_block and marker.value == "complete"
            open_block = None
    assert open_block is None
    assert len([m for m, _ in markers if m.event == "turn"]) == 2
    _assert_screens(artifacts_dir / "screenshots", ["conversation_turn"])  # the shared-screen turn cue
