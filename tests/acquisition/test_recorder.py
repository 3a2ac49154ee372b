"""LslRecorder against real LSL outlets on loopback, checked with pyxdf.

Every test uses real pylsl outlets (in this process, or in subprocesses where a process must be
killed or restarted) and real files; nothing is mocked.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.recorder import (
    AmbiguousStreamError,
    LslRecorder,
    MissingStreamError,
    StreamSelector,
)
from dyadlab.acquisition.xdf import BOUNDARY_UUID
from tests.acquisition.recorder_helpers import NUMPY_DTYPES, NumberedPusher, make_outlet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def load_raw(path: Path) -> dict[str, dict]:
    """pyxdf streams by name, with raw timestamps (no clock sync, no dejitter)."""
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def first_column(stream: dict) -> np.ndarray:
    series = stream["time_series"]
    if isinstance(series, list):
        return np.array([int(sample[0]) for sample in series], dtype=np.int64)
    return np.asarray(series)[:, 0].astype(np.int64)


def wait_for_line(process: subprocess.Popen, prefix: str, timeout: float) -> str:
    """Read the process's stdout until a line starting with ``prefix`` (fail after ``timeout``)."""
    result: list[str] = []

    def reader() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith(prefix):
                result.append(line)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, f"process did not print {prefix!r} within {timeout} s"
    return result[0]


# ------------------------------------------------------------------------------------------
# Round trip of every format
# ------------------------------------------------------------------------------------------


def _numeric_values(fmt: str, n: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    dtype = NUMPY_DTYPES[fmt]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=(n, channels), dtype=dtype, endpoint=True)
        values[0, 0], values[1, 0] = info.min, info.max  # the extremes survive too
        if fmt == "int64":
            values[2, 0] = 2**53 + 1  # not representable as a double: must stay exact
        return values
    return rng.standard_normal((n, channels)).astype(dtype) * 1e3


MARKERS = [
    "",
    "Grüße aus Zürich – ünïcödé ✓ 😀",
    "x" * 300,
    "NUL\x00inside",
    '{"event": "trial_start", "trial": 3}',
    "ö" * 200,
]


def test_round_trip_all_formats_and_markers(tmp_path: Path, unique_id: str) -> None:
    """Values and raw timestamps of all 7 formats (and UTF-8/empty/NUL/>255-byte markers) come back
    identical from pyxdf; >= 2 clock offsets per stream in a 2 s recording; footers match."""
    rng = np.random.default_rng(7)
    n, channels = 60, 3
    pushed: dict[str, tuple[np.ndarray, object]] = {}
    outlets = {}
    for fmt in NUMPY_DTYPES:
        outlets[fmt] = make_outlet(
            f"rt-{fmt}-{unique_id}", f"rt-{fmt}-{unique_id}", channel_format=fmt, channels=channels, rate=100.0
        )
    outlets["string"] = make_outlet(
        f"rt-string-{unique_id}",
        f"rt-string-{unique_id}",
        channel_format="string",
        channels=1,
        rate=0.0,
        stream_type="Markers",
    )
    # A marker stream that never sends anything (LabRecorder once froze on those) is recorded too.
    silent = make_outlet(
        f"rt-silent-{unique_id}", f"rt-silent-{unique_id}", channel_format="string", stream_type="Markers"
    )
    selectors = [StreamSelector(source_id=f"rt-{fmt}-{unique_id}") for fmt in outlets]
    selectors.append(StreamSelector(source_id=f"rt-silent-{unique_id}"))
    path = tmp_path / "roundtrip.xdf"
    recorder = LslRecorder(path, selectors, file_metadata={"study": "roundtrip"})
    recorder.start()
    try:
        base = pylsl.local_clock()
        for fmt, outlet in outlets.items():
            if fmt == "string":
                stamps = base + np.sort(rng.uniform(0, 1.5, len(MARKERS)))
                for value, stamp in zip(MARKERS, stamps):
                    outlet.push_sample([value], float(stamp))
                pushed[fmt] = (stamps, MARKERS)
                continue
            values = _numeric_values(fmt, n, channels, rng)
            # Jittered stamps: raw timestamps must come back bit-identical, not re-derived.
            stamps = base + np.arange(n) / 100.0 + rng.uniform(-1e-3, 1e-3, n)
            for start in range(0, n, 20):
                outlet.push_chunk(values[start : start + 20], stamps[start : start + 20].tolist())
            pushed[fmt] = (stamps, values)
        time.sleep(2.0)
    finally:
        summary = recorder.stop()

    assert summary.ok, summary.problems
    streams = load_raw(path)
    assert len(streams) == len(outlets) + 1
    empty = streams[f"rt-silent-{unique_id}"]
    assert len(empty["time_stamps"]) == 0 and int(empty["footer"]["info"]["sample_count"][0]) == 0
    assert len(empty["clock_times"]) >= 2
    del silent
    for fmt, (stamps, values) in pushed.items():
        stream = streams[f"rt-{fmt}-{unique_id}"]
        assert stream["info"]["channel_format"][0] == fmt
        np.testing.assert_array_equal(stream["time_stamps"], stamps, err_msg=fmt)
        if fmt == "string":
            assert [sample[0] for sample in stream["time_series"]] == MARKERS
        else:
            assert stream["time_series"].dtype == values.dtype, fmt
            np.testing.assert_array_equal(stream["time_series"], values, err_msg=fmt)
        assert len(stream["clock_times"]) >= 2, f"{fmt}: {len(stream['clock_times'])} clock offsets"
        assert abs(np.median(stream["clock_values"])) < 0.01  # same machine: offset ~0
        assert int(stream["footer"]["info"]["sample_count"][0]) == len(stamps)
        # The header is the full info, with its description.
        assert stream["info"]["desc"][0] is not None
        if fmt != "string":
            labels = [c["label"][0] for c in stream["info"]["desc"][0]["channels"][0]["channel"]]
            assert labels == [f"ch{i}" for i in range(channels)]
    by_id = {s.source_id: s for s in summary.streams}
    for fmt, (stamps, _) in pushed.items():
        entry = by_id[f"rt-{fmt}-{unique_id}"]
        assert entry.sample_count == len(stamps) and entry.clock_offsets >= 2 and entry.footer_written
    # The default (synchronizing, dejittering) load works as well.
    synced, header = pyxdf.load_xdf(str(path))
    assert header["info"]["study"] == ["roundtrip"]
    assert len(synced) == len(outlets) + 1


# ------------------------------------------------------------------------------------------
# Nothing lost at stop
# ------------------------------------------------------------------------------------------


def test_nothing_pushed_before_stop_is_lost(tmp_path: Path, unique_id: str) -> None:
    """Samples pushed right up to the stop call (a 1 kHz stream and sparse markers) are all in
    the file, from the first sample pushed after start() returned."""
    eeg = make_outlet(f"stop-eeg-{unique_id}", f"stop-eeg-{unique_id}", channels=4, rate=1000.0)
    markers = make_outlet(
        f"stop-mk-{unique_id}", f"stop-mk-{unique_id}", channel_format="string", stream_type="Markers"
    )
    path = tmp_path / "stop.xdf"
    recorder = LslRecorder(
        path,
        [StreamSelector(source_id=f"stop-eeg-{unique_id}"), StreamSelector(source_id=f"stop-mk-{unique_id}")],
        boundary_interval=0.5,
    )
    recorder.start()
    eeg_pusher = NumberedPusher(eeg, 1000.0, block=10).start()
    marker_pusher = NumberedPusher(markers, 3.0).start()
    time.sleep(2.0)
    markers.push_sample(["last-before-stop"], pylsl.local_clock())
    eeg_before, marker_before = eeg_pusher.count, marker_pusher.count
    try:
        summary = recorder.stop()
    finally:
        eeg_pusher.stop()
        marker_pusher.stop()
    assert summary.ok, summary.problems
    streams = load_raw(path)
    got = first_column(streams[f"stop-eeg-{unique_id}"])
    assert eeg_before > 1500
    np.testing.assert_array_equal(got[:eeg_before], np.arange(eeg_before))
    marker_values = [s[0] for s in streams[f"stop-mk-{unique_id}"]["time_series"]]
    # The pusher thread may push its next marker between "last-before-stop" and the count read.
    numbered = [value for value in marker_values if value != "last-before-stop"]
    assert numbered[:marker_before] == [str(i) for i in range(marker_before)]
    assert "last-before-stop" in marker_values
    assert path.read_bytes().count(BOUNDARY_UUID) >= 3  # one Boundary (fsynced) every 0.5 s


# ------------------------------------------------------------------------------------------
# Errors before recording
# ------------------------------------------------------------------------------------------


def test_missing_required_stream_is_a_clear_error_and_creates_no_file(
    tmp_path: Path, unique_id: str, lsl_session_id: str
) -> None:
    path = tmp_path / "missing.xdf"
    present = make_outlet(f"present-{unique_id}", f"present-{unique_id}")
    recorder = LslRecorder(
        path,
        [StreamSelector(source_id=f"present-{unique_id}"), StreamSelector(source_id=f"absent-{unique_id}")],
        wait_for_streams=0.5,
    )
    with pytest.raises(MissingStreamError) as caught:
        recorder.start()
    message = str(caught.value)
    assert f"absent-{unique_id}" in message
    assert lsl_session_id in message and "SessionID" in message
    assert "firewall" in message and "outlet is running" in message
    assert f"present-{unique_id}" in message  # listed among the visible streams: helps spot typos
    assert caught.value.session_id == lsl_session_id
    assert [s.source_id for s in caught.value.missing] == [f"absent-{unique_id}"]
    assert not path.exists()
    del present


def test_existing_file_is_never_overwritten(tmp_path: Path, unique_id: str) -> None:
    path = tmp_path / "precious.xdf"
    path.write_bytes(b"a previous recording")
    recorder = LslRecorder(path, [StreamSelector(source_id=f"any-{unique_id}")], wait_for_streams=0.1)
    with pytest.raises(FileExistsError, match="never overwritten"):
        recorder.start()
    assert path.read_bytes() == b"a previous recording"


def test_ambiguous_selection_is_refused(tmp_path: Path, unique_id: str) -> None:
    first = make_outlet(f"twin-{unique_id}", f"twin-a-{unique_id}")
    second = make_outlet(f"twin-{unique_id}", f"twin-b-{unique_id}")
    path = tmp_path / "ambiguous.xdf"
    recorder = LslRecorder(path, [StreamSelector(predicate=f"name='twin-{unique_id}'")], wait_for_streams=3.0)
    with pytest.raises(AmbiguousStreamError, match="unique source_id"):
        recorder.start()
    assert not path.exists()
    del first, second


def test_selector_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        StreamSelector()
    with pytest.raises(ValueError, match="exactly one"):
        StreamSelector(source_id="a", predicate="name='a'")
    with pytest.raises(ValueError, match="single quote"):
        StreamSelector(source_id="it's")
    with pytest.raises(ValueError, match="at least one"):
        LslRecorder("x.xdf", [])
    with pytest.raises(ValueError, match="twice"):
        LslRecorder("x.xdf", [StreamSelector(source_id="a"), StreamSelector(predicate="source_id='a'")])


# ------------------------------------------------------------------------------------------
# Streams appearing late, outlets restarting
# ------------------------------------------------------------------------------------------


def test_late_required_and_optional_streams(tmp_path: Path, unique_id: str) -> None:
    """A required stream appearing during the wait and an optional one appearing mid-recording
    are both recorded, each with its own stream id and >= 2 clock offsets."""
    created: dict[str, pylsl.StreamOutlet] = {}
    pushers: list[NumberedPusher] = []

    def create(kind: str) -> None:
        created[kind] = make_outlet(f"late-{kind}-{unique_id}", f"late-{kind}-{unique_id}", channels=2, rate=200.0)
        pushers.append(NumberedPusher(created[kind], 200.0).start())

    threading.Timer(0.8, create, args=("required",)).start()
    path = tmp_path / "late.xdf"
    recorder = LslRecorder(
        path,
        [
            StreamSelector(source_id=f"late-required-{unique_id}"),
            StreamSelector(source_id=f"late-optional-{unique_id}", required=False),
        ],
        wait_for_streams=10.0,
    )
    recorder.start()
    try:
        assert recorder.summary().not_found == [f"optional stream with source_id 'late-optional-{unique_id}'"]
        create("optional")
        deadline = time.monotonic() + 20  # found within ~1-2 s; margin for a busy CI box
        while recorder.summary().not_found and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
    finally:
        summary = recorder.stop()
        for pusher in pushers:
            pusher.stop()
    assert summary.ok, summary.problems
    assert summary.not_found == []
    ids = {s.source_id: s.stream_id for s in summary.streams}
    assert ids == {f"late-required-{unique_id}": 1, f"late-optional-{unique_id}": 2}
    streams = load_raw(path)
    for kind in ("required", "optional"):
        stream = streams[f"late-{kind}-{unique_id}"]
        values = first_column(stream)
        assert len(values) > 200, (kind, len(values))
        np.testing.assert_array_equal(values, np.arange(values[0], values[0] + len(values)))  # no gap
        assert len(stream["clock_times"]) >= 2


@pytest.mark.parametrize("with_source_id", [True, False], ids=["same-source_id", "no-source_id"])
def test_outlet_restart_keeps_the_stream_id(tmp_path: Path, unique_id: str, with_source_id: bool) -> None:
    """kill -9 of the outlet process, then a new process: the data after the restart lands in the
    same XDF stream. With a source_id liblsl reconnects the inlet itself; without one the inlet
    is lost and the recorder finds the stream again by its selector."""
    source_id = f"restart-{unique_id}" if with_source_id else ""
    name = f"restart-{unique_id}"
    command = [
        PYTHON,
        "-m",
        "tests.acquisition.recorder_helpers",
        "--source-id",
        source_id,
        "--name",
        name,
        "--rate",
        "200",
    ]
    selector = StreamSelector(source_id=source_id) if with_source_id else StreamSelector(predicate=f"name='{name}'")
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    second = None
    try:
        wait_for_line(first, "ready", 20)
        path = tmp_path / "restart.xdf"
        recorder = LslRecorder(path, [selector])
        recorder.start()
        try:
            time.sleep(1.0)
            first.kill()
            first.wait()
            time.sleep(0.3)
            second = subprocess.Popen(
                command + ["--start", "1000000"], cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
            )
            wait_for_line(second, "ready", 20)
            restarted_at = pylsl.local_clock()
            deadline = time.monotonic() + 20  # liblsl reconnects within ~1 s; margin for a busy CI box
            while time.monotonic() < deadline:
                time.sleep(0.1)
                last = recorder.summary().streams[0].last_timestamp
                if last is not None and last > restarted_at:
                    break
            time.sleep(1.0)  # record the new process for a while
        finally:
            summary = recorder.stop()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert summary.ok, summary.problems
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    assert len(streams) == 1
    values = first_column(streams[0])
    before, after = values[values < 1_000_000], values[values >= 1_000_000]
    assert len(before) > 100 and len(after) > 100, (len(before), len(after), summary, restarted_at)
    assert np.all(np.diff(before) == 1) and np.all(np.diff(after) == 1)
    assert int(streams[0]["footer"]["info"]["sample_count"][0]) == len(values)
