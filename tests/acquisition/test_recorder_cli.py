"""``dyadlab record`` end to end: real outlets, the command in-process and as a process that is
stopped by SIGTERM or killed with SIGKILL (crash safety)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf
from click.testing import CliRunner

from dyadlab.acquisition.cli.record_command import EXIT_BAD_INPUT, EXIT_MISSING_STREAM, record
from tests.acquisition.recorder_helpers import NumberedPusher, make_outlet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECORD = [sys.executable, "-c", "from dyadlab.acquisition.cli.record_command import record; record()"]


def _start_recording_process(args: list[str]) -> tuple[subprocess.Popen, float]:
    """Start ``record`` as a process; return it once it says it records, with that moment."""
    process = subprocess.Popen(RECORD + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[float] = []
    lines: list[str] = []

    def reader() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("Recording"):
                seen.append(pylsl.local_clock())
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(30)
    if not seen:
        process.kill()
        raise AssertionError(f"record did not start: {''.join(lines)}")
    return process, seen[0]


def _values(stream: dict) -> np.ndarray:
    series = stream["time_series"]
    if isinstance(series, list):
        return np.array([int(s[0]) for s in series])
    return np.asarray(series)[:, 0].astype(np.int64)


def test_record_for_a_duration_prints_what_it_wrote(tmp_path: Path, unique_id: str) -> None:
    outlet = make_outlet(f"cli-{unique_id}", f"cli-{unique_id}", channels=2, rate=250.0)
    _markers_outlet = make_outlet(  # kept open while recording
        f"cli-markers-{unique_id}", f"cli-mk-{unique_id}", channel_format="string", stream_type="Markers"
    )
    pusher = NumberedPusher(outlet, 250.0).start()
    path = tmp_path / "cli.xdf"
    try:
        result = CliRunner().invoke(
            record,
            [
                "--source-id",
                f"cli-{unique_id}",
                "--predicate",
                f"name='cli-markers-{unique_id}' and type='Markers'",
                "--out",
                str(path),
                "--duration",
                "1.5",
                "--meta",
                "study=pilot",
                "--meta",
                "dyad=d01",
            ],
        )
    finally:
        pusher.stop()
    assert result.exit_code == 0, result.output
    assert f"cli-{unique_id}" in result.output and "footer written" in result.output
    assert f"cli-markers-{unique_id}" in result.output and "0 samples" in result.output
    loaded, header = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    assert header["info"]["study"] == ["pilot"] and header["info"]["dyad"] == ["d01"]
    streams = [s for s in loaded if s["info"]["name"][0] == f"cli-{unique_id}"]
    assert len(loaded) == 2 and len(streams) == 1
    samples = len(streams[0]["time_stamps"])
    assert 250 < samples < 1000
    offsets = len(streams[0]["clock_times"])
    assert offsets >= 2
    assert f"{samples:,} samples" in result.output and f"{offsets} clock offsets" in result.output


def test_record_refuses_to_overwrite(tmp_path: Path, unique_id: str) -> None:
    path = tmp_path / "exists.xdf"
    path.write_bytes(b"keep me")
    result = CliRunner().invoke(record, ["--source-id", f"x-{unique_id}", "--out", str(path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "already exists" in result.output and "never overwritten" in result.output
    assert path.read_bytes() == b"keep me"


def test_record_missing_stream(tmp_path: Path, unique_id: str, lsl_session_id: str) -> None:
    path = tmp_path / "missing.xdf"
    result = CliRunner().invoke(record, ["--source-id", f"absent-{unique_id}", "--out", str(path), "--wait", "0.3"])
    assert result.exit_code == EXIT_MISSING_STREAM
    assert f"absent-{unique_id}" in result.output and lsl_session_id in result.output
    assert not path.exists()


def test_record_needs_a_selection(tmp_path: Path) -> None:
    result = CliRunner().invoke(record, ["--out", str(tmp_path / "x.xdf")])
    assert result.exit_code == 2 and "--source-id" in result.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_and_loses_nothing(tmp_path: Path, unique_id: str, signum: int) -> None:
    outlet = make_outlet(f"term-{unique_id}", f"term-{unique_id}", channels=2, rate=500.0)
    pusher = NumberedPusher(outlet, 500.0, block=5).start()
    path = tmp_path / "term.xdf"
    try:
        process, _ = _start_recording_process(["--source-id", f"term-{unique_id}", "--out", str(path)])
        time.sleep(1.5)
        pushed_before = pusher.count
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        pusher.stop()
    assert process.returncode == 0, stderr
    assert f"term-{unique_id}" in stdout
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    values = _values(streams[0])
    assert "footer" in streams[0]
    assert int(streams[0]["footer"]["info"]["sample_count"][0]) == len(values)
    assert values[-1] >= pushed_before - 1  # everything pushed before SIGTERM is in the file
    assert np.all(np.diff(values) == 1)


def test_kill_9_leaves_a_readable_file_with_all_but_the_last_second(tmp_path: Path, unique_id: str) -> None:
    """SIGKILL of the recording process: pyxdf opens the file, and every sample pushed from the
    start of recording up to 1 s before the kill is in it (an EEG-like stream and markers)."""
    eeg = make_outlet(f"kill-eeg-{unique_id}", f"kill-eeg-{unique_id}", channels=8, rate=500.0)
    markers = make_outlet(
        f"kill-mk-{unique_id}", f"kill-mk-{unique_id}", channel_format="string", stream_type="Markers"
    )
    eeg_pusher = NumberedPusher(eeg, 500.0, block=5).start()
    marker_pusher = NumberedPusher(markers, 5.0).start()
    path = tmp_path / "killed.xdf"
    try:
        process, recording_since = _start_recording_process(
            ["--source-id", f"kill-eeg-{unique_id}", "--source-id", f"kill-mk-{unique_id}", "--out", str(path)]
        )
        time.sleep(3.0)
        killed_at = pylsl.local_clock()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        eeg_pusher.stop()
        marker_pusher.stop()
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    for name, rate in ((f"kill-eeg-{unique_id}", 500.0), (f"kill-mk-{unique_id}", 5.0)):
        stream = by_name[name]
        values, stamps = _values(stream), np.asarray(stream["time_stamps"])
        assert "footer" not in stream  # really killed before finalizing
        # Recorded from the start: the first sample pushed after "Recording" was printed is in.
        assert stamps[0] <= recording_since + 2.0 / rate, name
        assert np.all(np.diff(values) == 1), name  # no gap
        # Every sample pushed up to 1 s before the kill is in the file.
        assert stamps[-1] >= killed_at - 1.0, f"{name}: last sample {killed_at - stamps[-1]:.2f} s before the kill"
        assert len(stream["clock_times"]) >= 1


def test_record_rejects_bad_metadata_before_waiting(tmp_path: Path) -> None:
    path = tmp_path / "meta.xdf"
    result = CliRunner().invoke(record, ["--source-id", "x", "--out", str(path), "--meta", "bad key=1"])
    assert result.exit_code == 2 and "not a valid XML element name" in result.output
    result = CliRunner().invoke(record, ["--source-id", "x", "--out", str(path), "--meta", "novalue"])
    assert result.exit_code == 2 and "key=value" in result.output
    assert not path.exists()
