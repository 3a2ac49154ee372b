"""End to end: every bundled protocol runs with the coupled-dyad simulator and the autopilot.

Real components throughout: the simulator's sources behind real LSL bridges, the in-process
recorder, PsychoPy windows under Xvfb, the autopilot's XTEST key presses, the behavioural CSV.
Durations are shortened (trial counts, rest lengths) and the autopilot speed shortens reading
and rest times, so the whole file stays within a few minutes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pyxdf
import yaml

from dyadlab.acquisition.lslconfig import LslConfig
from dyadlab.protocols.runner import SessionResult, SessionRunner
from dyadlab.protocols.schema import (
    BUNDLED_DIR,
    LoadedProtocol,
    bundled_protocols,
    load_protocol,
    paradigms,
    plan_session,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.display,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)"),
]

SPEED = 5.0


def _shorten_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    params = dict(params)
    if task == "rest":
        params["duration_s"] = 5.0
    elif task == "joint-press":
        params.update(n_trials=3, feedback_s=0.3, fixation_s=[0.3, 0.5], cue_to_go_s=[0.3, 0.5])
    elif task == "tapping":
        params.update(n_pacer_ticks=4, continuation_s=2.0)
    elif task == "conversation":
        params.update(topics=(params.get("topics") or ["Talk."])[:1], topic_s=10.0, turn_s=5.0, duration_s=5.0)
    elif task == "probe":
        params = {part: _shorten_params(part, params.get(part, {})) for part in ("rest", "tapping", "conversation")}
    return params


def shortened(name: str, tmp_path: Path, **changes: Any) -> LoadedProtocol:
    """The bundled protocol ``name`` with short blocks, simulated devices and a quick check."""
    data = yaml.safe_load((BUNDLED_DIR / f"{name}.yaml").read_text())
    data = copy.deepcopy(data)
    for block in data["blocks"]:
        params = dict(block.get("params") or {})
        if block.pop("duration", None) is not None and block["task"] == "rest":
            params["duration_s"] = 5.0
        block["params"] = _shorten_params(block["task"], params)
    data["screens"] = {
        "layout": data.get("screens", {}).get("layout", "shared"),
        "fullscreen": False,
        "size": [800, 600],
        "check_timing": False,
    }
    data["preflight"] = {"enabled": True, "seconds": 2}
    data["quickcheck"] = {"enabled": False}
    data.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_protocol(path)


def run_session(loaded: LoadedProtocol, out: Path, **options: Any) -> SessionResult:
    runner = SessionRunner(
        loaded, out_dir=out, simulate=True, autopilot=True, speed=SPEED, lsl_config=LslConfig(), **options
    )
    return runner.run()


def _streams(xdf: Path) -> dict[str, dict[str, Any]]:
    streams, _ = pyxdf.load_xdf(str(xdf))
    return {s["info"]["desc"][0]["dyadlab"][0]["kind"][0]: s for s in streams if s["info"]["desc"][0]}


def _events(stream: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(sample[0]) for sample in stream["time_series"]]


def check_markers(loaded: LoadedProtocol, result: SessionResult, complete: bool = True) -> tuple[dict, list[dict]]:
    """The XDF holds every expected marker, in order; returns the streams and the markers."""
    protocol = loaded.protocol
    streams = _streams(result.files["xdf"])
    assert {"eeg", "markers", "responses"} <= set(streams)
    eeg = [s for s in pyxdf.load_xdf(str(result.files["xdf"]))[0] if s["info"]["type"][0] == "EEG"]
    assert len(eeg) == 2 and all(len(s["time_stamps"]) > 250 for s in eeg), "two EEG streams with data"
    markers = streams["markers"]
    events = _events(markers)
    stamps = np.asarray(markers["time_stamps"])
    assert np.all(np.diff(stamps) >= 0), "markers in time order"
    assert events[0]["event"] == "session_start"
    assert events[-1]["event"] == "session_end"
    assert events[-1]["value"] == ("complete" if complete else "aborted")
    # Block pairs: start/end alternate, never nest, and follow the counterbalanced order.
    open_block = None
    started: list[str] = []
    for event in events:
        if event["event"] == "block_start":
            assert open_block is None, f"block {event['block']} starts inside {open_block}"
            open_block = event["block"]
            started.append(event["block"])
        elif event["event"] == "block_end":
            assert event["block"] == open_block
            open_block = None
    assert open_block is None, "every block_start has its block_end"
    if not complete:
        return streams, events
    registry = paradigms()
    ids = protocol.block_ids()
    expected_blocks: list[str] = []
    expected_conditions: list[str] = []
    for index in plan_session(protocol).block_order:
        block = protocol.blocks[index]
        paradigm = registry[block.task]()
        params = paradigm.Params.model_validate(block.params)
        conditions = paradigm.conditions(params)
        expected_conditions += conditions
        if block.task == "probe":
            expected_blocks += [f"{ids[index]}-{part}" for part in ("rest", "tapping", "conversation")]
        else:
            expected_blocks.append(ids[index])
        in_block = [e for e in events if e["block"] == ids[index] or str(e["block"]).startswith(ids[index] + "-")]
        counts = {name: sum(e["event"] == name for e in in_block) for name in ("go", "pacer", "topic", "trial_start")}
        if block.task == "joint-press":
            assert counts["go"] == counts["trial_start"] == params.n_trials
        if block.task == "tapping":
            assert counts["pacer"] == params.n_pacer_ticks
        if block.task == "conversation" and params.mode == "structured":
            assert counts["topic"] == len(params.topics)
    assert started == expected_blocks
    assert [e["condition"] for e in events if e["event"] == "block_start"] == expected_conditions
    ends = [e["value"] for e in events if e["event"] == "block_end"]
    assert set(ends) == {"complete"}
    return streams, events


def check_responses_match_csv(result: SessionResult, streams: dict[str, Any]) -> int:
    """Every response in the behavioural CSV is in the XDF response stream: same person, block and
    time (within 2 ms). The stream may hold more presses than the CSV counts (e.g. presses
    during instruction screens, which the CSV does not list)."""
    responses = streams["responses"]
    recorded = [(e["participant"], e["block"], float(t)) for e, t in zip(_events(responses), responses["time_stamps"])]
    csv = pd.read_csv(result.files["behaviour"], encoding="utf-8-sig")
    expected: list[tuple[str, str, float]] = []
    for row in csv.itertuples():
        for label in ("A", "B"):
            column = f"response_lsl_time_{label}"
            if column in csv.columns and pd.notna(getattr(row, column)):
                expected.append((label, row.block, float(getattr(row, column))))
        if "tapper" in csv.columns and getattr(row, "tapper", None) in ("A", "B"):
            expected.append((row.tapper, row.block, float(row.tap_lsl_time)))
    for participant, block, stamp in expected:
        assert any(p == participant and b == block and abs(t - stamp) < 0.002 for p, b, t in recorded), (
            f"CSV response of {participant} in {block} at {stamp:.4f} is not in the response stream"
        )
    return len(expected)


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` (recursively), by path relative to it."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", bundled_protocols())
def test_bundled_protocol_end_to_end(name: str, tmp_path: Path, artifacts_dir: Path) -> None:
    loaded = shortened(name, tmp_path)
    result = run_session(loaded, tmp_path / "out", screenshot_dir=artifacts_dir / "protocols" / name)
    assert result.complete
    session = json.loads(result.files["session"].read_text())
    assert session["complete"] is True and session["status"] == "complete"
    assert {b["status"] for b in session["blocks"]} == {"completed"}
    assert session["protocol"]["sha256"] == loaded.sha256
    assert session["versions"]["pylsl"] and session["versions"]["psychopy"]
    assert [p["label"] for p in session["participants"]] == ["A", "B"]
    assert session["timing"]["end_local_clock"] > session["timing"]["start_local_clock"]
    assert session["recorder"]["closed"] is True
    streams, _ = check_markers(loaded, result)
    n_responses = check_responses_match_csv(result, streams)
    if any(b.task in ("joint-press", "tapping", "probe") for b in loaded.protocol.blocks):
        assert n_responses > 0, "the autopilot responded"
    # The stream metadata carries each participant's role (partner type of longitudinal designs).
    roles = {p["label"]: p["role"] for p in session["participants"]}
    eeg = [s for s in pyxdf.load_xdf(str(result.files["xdf"]))[0] if s["info"]["type"][0] == "EEG"]
    for stream in eeg:
        person = stream["info"]["desc"][0]["participant"][0]
        assert roles[person["label"][0]] == person["role"][0]
    assert_two_heads(eeg)


def assert_two_heads(eeg: list[dict[str, Any]]) -> None:
    """At the same instants, B's EEG is not A's (one head streamed twice would give PLV 1).

    The simulator stamps both participants on one sample grid: samples of A and B less than a
    quarter period apart were taken at the same instant. The board-marker channel may agree.
    """
    a, b = eeg
    rate = float(a["info"]["nominal_srate"][0])
    stamps_a, stamps_b = np.asarray(a["time_stamps"]), np.asarray(b["time_stamps"])
    nearest = np.clip(np.searchsorted(stamps_b, stamps_a), 1, stamps_b.size - 1)
    nearest -= np.abs(stamps_b[nearest - 1] - stamps_a) < np.abs(stamps_b[nearest] - stamps_a)
    same_instant = np.abs(stamps_b[nearest] - stamps_a) < 0.25 / rate
    assert same_instant.sum() > rate, "A and B share less than a second of sample instants"
    values_a = np.asarray(a["time_series"])[same_instant]
    values_b = np.asarray(b["time_series"])[nearest[same_instant]]
    identical = [np.allclose(values_a[:, c], values_b[:, c]) for c in range(values_a.shape[1])]
    assert sum(identical) <= 1, f"{sum(identical)} of {len(identical)} channels of B repeat A's"


def test_files_follow_the_output_pattern_and_never_overwrite(tmp_path: Path) -> None:
    loaded = shortened("demo", tmp_path, blocks=[{"id": "rest", "task": "rest", "params": {"duration_s": 2.0}}])
    first = run_session(loaded, tmp_path / "out")
    folder = tmp_path / "out" / "sub-D01" / "ses-01"
    before = _hashes(folder)
    assert {"xdf", "behaviour", "session"} <= set(first.files)
    assert all(path.name in before for path in first.files.values())
    second = run_session(loaded, tmp_path / "out")
    assert first.files["xdf"] == folder / "sub-D01_ses-01_task-demo_run-01.xdf"
    assert second.files["xdf"] == folder / "sub-D01_ses-01_task-demo_run-02.xdf"
    assert first.files["xdf"].stat().st_size > 0 and second.files["xdf"].stat().st_size > 0
    # Run 01's files are byte for byte what they were (names alone would not show an overwrite).
    after = _hashes(folder)
    assert {name: after.get(name) for name in before} == before
    assert all(path.name not in before for path in second.files.values()), "run 02 reused a run-01 name"


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool not installed")
def test_escape_mid_block_leaves_complete_xdf_and_incomplete_session(tmp_path: Path) -> None:
    """The operator presses Escape (a real XTEST key press via xdotool) during the second block."""
    loaded = shortened(
        "demo",
        tmp_path,
        blocks=[
            {"id": "rest", "task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}},
            {"id": "long-rest", "task": "rest", "params": {"duration_s": 300.0, "show_instructions": False}},
            {"id": "never", "task": "tapping", "params": {"n_pacer_ticks": 4}},
        ],
        quickcheck={"enabled": True, "surrogates": 10, "epoch_seconds": 1.5, "mains": 60},
    )
    pressed = threading.Event()

    def status(stage: str, message: str) -> None:
        if stage == "block" and "long-rest" in message:
            timer = threading.Timer(
                2.0, lambda: (subprocess.run(["xdotool", "key", "Escape"], check=True), pressed.set())
            )
            timer.daemon = True
            timer.start()

    result = run_session(loaded, tmp_path / "out", status=status)
    assert pressed.is_set()
    assert result.complete is False
    session = json.loads(result.files["session"].read_text())
    assert session["complete"] is False and session["status"] == "aborted"
    assert [b["status"] for b in session["blocks"]] == ["completed", "aborted", "not-run"]
    assert session["recorder"]["closed"] is True
    # The quick-check ran on what exists, without error, with the protocol's settings.
    info = session["quickcheck"]
    assert info is not None and "error" not in info, info
    assert not any("quick-check" in problem for problem in session["problems"]), session["problems"]
    assert result.quickcheck is not None and Path(info["json"]).is_file() and Path(info["html"]).is_file()
    inputs = json.loads(Path(info["json"]).read_text())["inputs"]
    assert (inputs["n_surrogates"], inputs["epoch_length_s"], inputs["mains"]) == (10, 1.5, 60.0)
    streams, events = check_markers(loaded, result, complete=False)
    names = [e["event"] for e in events]
    assert "abort" in names
    aborted_end = [e for e in events if e["event"] == "block_end" and e["block"] == "long-rest"]
    assert aborted_end and aborted_end[0]["value"] == "aborted"
    assert not any(e["block"] == "never" for e in events)
    eeg = [s for s in pyxdf.load_xdf(str(result.files["xdf"]))[0] if s["info"]["type"][0] == "EEG"]
    session_end = streams["markers"]["time_stamps"][-1]
    for stream in eeg:  # the EEG was recorded up to the end of the aborted session
        assert stream["time_stamps"][-1] >= session_end - 0.5


def test_crash_in_a_block_finalizes_then_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the tapping paradigm raises on entry (standing in for a bug in a task).

    The recording must still be finalized and loadable, session.json must say what failed, and
    the error must reach the caller as a SessionError naming the stage.
    """
    from dyadlab.protocols.runner import SessionError
    from dyadlab.tasks.paradigms.tapping import Tapping

    def broken_run(self, ctx, params, block_id):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated bug in the tapping paradigm")

    monkeypatch.setattr(Tapping, "run", broken_run)
    loaded = shortened(
        "demo",
        tmp_path,
        blocks=[
            {"id": "rest", "task": "rest", "params": {"duration_s": 2.0, "show_instructions": False}},
            {"id": "tap", "task": "tapping", "params": {"n_pacer_ticks": 4}},
        ],
    )
    with pytest.raises(SessionError, match="blocks.*simulated bug") as caught:
        run_session(loaded, tmp_path / "out")
    files = caught.value.files
    session = json.loads(files["session"].read_text())
    assert session["complete"] is False and session["status"] == "failed"
    assert session["failed_stage"] == "blocks"
    assert [b["status"] for b in session["blocks"]] == ["completed", "failed"]
    assert session["recorder"]["closed"] is True
    streams = _streams(files["xdf"])
    events = _events(streams["markers"])
    assert events[0]["event"] == "session_start"
    assert events[-1]["event"] == "session_end" and events[-1]["value"] == "aborted"
