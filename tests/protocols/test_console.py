"""The session console of ``dyadlab run``: live panel, cues, quiet terminal, Ctrl-C, CHECK warnings.

The end-to-end tests run ``dyadlab run`` in a subprocess, as an experimenter does, with real
components: participant A on the coupled-dyad simulator, participant B on BrainFlow's synthetic
board (so that BrainFlow's board logger talks), liblsl, PsychoPy under the test's X display and
the autopilot, at ``--speed 2``. One run has a pseudo-terminal (the live panel), one a pipe
(plain status lines, Ctrl-C). The quick-check is off in both: its printing is tested on a real
check result of a damaged recording instead.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from dyadlab.acquisition.bridge import BridgeState, BridgeStatus
from dyadlab.protocols.console import CueSpeaker, SessionConsole, print_session_end, quickcheck_warnings
from dyadlab.protocols.runner import BlockProgress, SessionResult, SessionSnapshot

REPO = Path(__file__).resolve().parents[2]
DYADLAB = [sys.executable, "-m", "dyadlab"]
SPEED = 2.0
EYES_CLOSED_CUE = "Eyes-closed rest is over: ask both participants to open their eyes."
#: What liblsl, BrainFlow and PsychoPy print when nobody routes it elsewhere (seen on a terminal
#: before the console existed): liblsl's "api_config.cpp:124 INFO| Configuration loaded",
#: BrainFlow's "[board_logger] [info] incoming json", PsychoPy's "Data file ... will be overwritten".
CHATTER = ("INFO|", "board_logger", "incoming json", "will be overwritten", "Monitor specification", "ALSA lib")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")


def _protocol(tmp_path: Path, session_id: str, blocks: list[dict[str, Any]]) -> Path:
    """A protocol with A simulated and B on BrainFlow's synthetic board, in this test's LSL session."""
    data = {
        "version": 1,
        "name": "console",
        "study": "console",
        "dyad": "D01",
        "session": 1,
        "participants": [
            {"label": "A", "id": "sim-01", "role": "participant", "device": {"board": "simulator"}},
            {"label": "B", "id": "sim-02", "role": "participant", "device": {"board": "synthetic"}},
        ],
        "screens": {"layout": "shared", "fullscreen": False, "size": [800, 600], "check_timing": False},
        "blocks": blocks,
        "lsl": {"session_id": session_id, "local_only": True},
        "preflight": {"enabled": False},
        "quickcheck": {"enabled": False},
    }
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run_args(protocol: Path, out: Path) -> list[str]:
    return [*DYADLAB, "run", str(protocol), "--autopilot", "--speed", str(SPEED), "--out", str(out)]


def _env(**changes: str) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100", LINES="40", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    env.update(changes)
    return env


def _session_files(out: Path) -> tuple[Path, Path]:
    """The run's session record and session log."""
    [record] = out.rglob("*_session.json")
    return record, record.with_name(record.name.replace("_session.json", "_session.log"))


@pytest.mark.integration
@pytest.mark.display
@needs_display
def test_terminal_shows_block_countdown_and_cue_without_library_chatter(tmp_path: Path, lsl_session_id: str) -> None:
    """On a terminal: the panel names the running block and counts its time down, the end of
    eyes-closed rest is cued (shown, and spoken by espeak-ng), and the libraries' chatter is in
    the session log, not on the terminal."""
    rest_s = 8.0  # 4 s at speed 2: 16 panel refreshes at 4 per second, 4 whole seconds counted down
    protocol = _protocol(
        tmp_path,
        lsl_session_id,
        [
            {"id": "closed", "task": "rest", "params": {"variant": "eyes-closed", "duration_s": rest_s}},
            {"id": "press", "task": "joint-press", "params": {"mode": "cooperation", "n_trials": 1}},
        ],
    )
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # rows, columns
    process = subprocess.Popen(
        _run_args(protocol, tmp_path / "out"), cwd=REPO, env=_env(), stdin=child, stdout=child, stderr=child
    )
    os.close(child)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
        os.close(main)
    output = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    assert code == 0, output[-3000:]

    # The panel while the eyes-closed rest runs: its id, elapsed and remaining time. Rounded to
    # whole seconds, elapsed + left is the planned 4 s within the two roundings (+-1 s), and the
    # time left goes down from frame to frame until the cue.
    cue_at = output.index(f"CUE {EYES_CLOSED_CUE}")
    frames = re.findall(r"1/2 closed \(rest\) · (\d+):(\d\d) elapsed · (\d+):(\d\d) left", output[:cue_at])
    assert len(frames) >= 3, output[:cue_at][-3000:]
    elapsed = [60 * int(m) + int(s) for m, s, _, _ in frames]
    left = [60 * int(m) + int(s) for _, _, m, s in frames]
    planned = rest_s / SPEED
    assert all(abs(e + r - planned) <= 1 for e, r in zip(elapsed, left)), list(zip(elapsed, left))
    assert left[0] > left[-1] and left == sorted(left, reverse=True), left
    assert re.search(r"EEG A\s+D01-A-EEG \d+/250 Hz · [\d,]+ samples", output[:cue_at])
    assert re.search(r"EEG B\s+D01-B-EEG \d+/250 Hz · [\d,]+ samples", output[:cue_at])
    assert re.search(r"recorder\s+\S+_run-01\.xdf · \d+\.\d MB", output[:cue_at])
    # The joint-press block counts its trials.
    assert re.search(r"2/2 press \(joint-press\).* trials [01]/1", output)

    record, log = _session_files(tmp_path / "out")
    log_text = log.read_text(encoding="utf-8", errors="replace")
    for chatter in CHATTER[:4]:  # ALSA and the monitor warning depend on the machine
        assert chatter in log_text, f"{chatter!r} is not in the session log"
    leaked = [line for line in output.splitlines() if any(chatter in line for chatter in CHATTER)]
    assert not leaked, leaked
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        assert f"cue spoken with {espeak}: {EYES_CLOSED_CUE}" in log_text
    else:
        assert "espeak-ng is not installed" in log_text
    assert json.loads(record.read_text())["status"] == "complete"


def _path_without(program: str, folder: Path) -> str:
    """A PATH with every program of this one except ``program`` (symbolic links in ``folder``)."""
    folder.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith(program) or not os.access(entry.path, os.X_OK):
                continue
            link = folder / entry.name
            link.unlink(missing_ok=True)
            link.symlink_to(entry.path)
    return str(folder)


@pytest.mark.integration
@pytest.mark.display
@needs_display
def test_ctrl_c_prints_what_was_saved_and_session_json_without_espeak(tmp_path: Path, lsl_session_id: str) -> None:
    """Without a terminal: plain status lines name the block; a protocol's own cue is shown even
    though espeak-ng is missing (logged once); SIGINT mid-block prints the XDF, its size and each
    stream's samples as recorded, and session.json's status and stop reason."""
    protocol = _protocol(
        tmp_path,
        lsl_session_id,
        [
            {
                "id": "closed",
                "task": "rest",
                "params": {"variant": "eyes-closed", "duration_s": 2.0, "show_instructions": False},
                "cue_at_end": "Lights on, please.",
            },
            {"id": "long", "task": "rest", "params": {"duration_s": 600.0, "show_instructions": False}},
        ],
    )
    env = _env(PATH=_path_without("espeak", tmp_path / "bin"))
    process = subprocess.Popen(
        _run_args(protocol, tmp_path / "out"),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    long_block_shown = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if re.search(r"status block 2/2 long \(rest\) · \d+:\d\d elapsed · \d+:\d\d left", line):
                long_block_shown.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Plain status lines come every 10 s: the first one in the long block within two of them.
        assert long_block_shown.wait(timeout=120), "".join(lines)[-3000:]
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
    stderr = process.stderr.read() if process.stderr else ""
    output = "".join(lines)
    assert code == 3, output[-3000:] + stderr  # incomplete, finalised

    assert "CUE Lights on, please." in output and EYES_CLOSED_CUE not in output
    record_path, log = _session_files(tmp_path / "out")
    assert log.read_text().count("espeak-ng is not installed") == 1
    record = json.loads(record_path.read_text())
    assert record["status"] == "aborted" and "SIGINT" in record["abort_reason"]
    xdf = Path(record["files"]["xdf"])
    size_mb = record["recorder"]["file_size"] / 1e6
    assert f"saved {xdf} ({size_mb:.1f} MB)" in output, output[-2000:]
    for stream in record["recorder"]["streams"]:  # every stream, with the count session.json keeps
        assert re.search(rf"{re.escape(stream['name'])}\s+{stream['sample_count']:,} samples", output), stream
    assert f"session.json {record_path}: status 'aborted', stop reason: {record['abort_reason']}" in output
    assert not any(chatter in output + stderr for chatter in CHATTER), stderr


# -- without a session ------------------------------------------------------------------------------


def test_check_verdict_lists_its_warnings(tmp_path: Path) -> None:
    """A recording with 3 s of NaN in B: the quick-check says data quality CHECK; the end of the
    run lists each warning behind it in full, each on one line (a path in it is never split)."""
    from dyadlab.synchrony.check import run_check
    from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

    path = write_dyad_xdf(
        tmp_path / "gap.xdf", DyadSpec(blocks=[("rest", 20.0), ("cooperation", 20.0)], nan_b=(10.0, 13.0))
    )
    result = run_check(path, n_surrogates=0, progress=False)
    assert result["verdict"]["data_quality"] == "check"
    # What the check found, read from its result (not from the console's own list).
    expected = list(result["warnings"]) + [
        f"participant {label}: {problem}" for label in ("A", "B") for problem in result["quality"][label]["problems"]
    ]
    assert any("NaN" in warning for warning in result["warnings"]) and result["quality"]["B"]["problems"]
    assert set(quickcheck_warnings(result)) == set(expected)
    session = tmp_path / "run_session.json"
    session.write_text(json.dumps({"status": "complete", "recorder": None}))
    outcome = SessionResult(
        complete=True,
        files={"xdf": path, "session": session},
        duration=40.0,
        session={"quickcheck": {"summary": result["summary"]}},
        quickcheck=result,
    )
    stream = io.StringIO()
    print_session_end(Console(file=stream, width=80, soft_wrap=True, color_system=None), outcome)
    printed = stream.getvalue().splitlines()
    assert any(line.startswith("quick-check: data quality CHECK") for line in printed)
    for warning in expected:
        assert any(line.endswith(warning) for line in printed), warning
    assert f"saved {path} " in stream.getvalue()


def _status(name: str, state: BridgeState, age: float, stalls: int = 0) -> BridgeStatus:
    return BridgeStatus(
        stream_name=name,
        state=state,
        samples=2500,
        rate=0.0 if state is BridgeState.STALLED else 250.0,
        nominal_rate=250.0,
        dropped_packets=0,
        last_sample_age=age,
        reconnects=0,
        stalls=stalls,
        lost_markers=0,
    )


def _render(view: SessionConsole, snapshot: SessionSnapshot, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(view.render(snapshot))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_panel_marks_a_stalled_stream_and_cuts_lines_without_splitting_names() -> None:
    """A stalled bridge is shown as STALLED with its newest sample's age; a narrow terminal cuts
    a line short (ellipsis) but never folds it, so a name is never split over two lines."""
    block = BlockProgress(
        id="eyes-closed-baseline",
        task="rest",
        position=1,
        total=3,
        elapsed_s=61.0,
        planned_s=120.0,
        trials_done=None,
        trials_planned=None,
    )
    snapshot = SessionSnapshot(
        stage="blocks",
        block=block,
        blocks_done=0,
        session_elapsed_s=65.0,
        planned_left_s=59.0 + 300.0,
        unknown_blocks_left=1,
        streams=[
            ("A", _status("D01-A-EEG", BridgeState.STREAMING, 0.02)),
            ("B", _status("D01-B-EEG", BridgeState.STALLED, 3.4, stalls=1)),
        ],
        recording=None,
        files={},
    )
    view = SessionConsole(Console(file=io.StringIO()), speaker=CueSpeaker("no-such-speech-program"))
    view.status("cue", "Open your eyes.")  # shown in the panel although it cannot be spoken
    wide = _render(view, snapshot, 160)
    assert any("block     1/3 eyes-closed-baseline (rest) · 1:01 elapsed · 0:59 left" in line for line in wide)
    assert any("session   1:05 elapsed · about 5:59 left + 1 block of trials" in line for line in wide)
    [line_a] = [line for line in wide if "EEG A" in line]
    [line_b] = [line for line in wide if "EEG B" in line]
    assert "D01-A-EEG 250/250 Hz · 2,500 samples · last 0.0 s ago" in line_a and "STALLED" not in line_a
    assert "D01-B-EEG 0/250 Hz · 2,500 samples · last 3.4 s ago · STALLED · 1 stall" in line_b
    assert any("CUE: Open your eyes." in line for line in wide)
    narrow = _render(view, snapshot, 40)
    assert len(narrow) == len(wide), "a row was folded onto a second line"
    [block_line] = [line for line in narrow if line.startswith("│ block ")]
    assert "eyes-closed-bas" in block_line and block_line.rstrip(" │").endswith("…")
    assert view.speaker.speak("again") is False
