"""Loading hyperscanning XDF files: participant identification, channels, and files that do not fit.

Files are real XDF written by ``acquisition.xdf.XdfWriter`` (see ``xdf_fixtures``).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

from acquisition.xdf import XdfWriter
from synchrony import io
from synchrony.io import XdfLoadError, load_dyad
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

SHORT = [("rest", 10.0), ("cooperation", 10.0)]


def test_dyadlab_file_participants_channels_and_markers(tmp_path):
    path = write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT))
    recording = load_dyad(path)
    assert (recording.a.label, recording.b.label) == ("A", "B")
    assert recording.a.source_id == "dyadlab.test.d01.A.eeg"
    assert recording.b.participant == {"label": "B", "id": "sub-B", "role": "partner"}
    # The board marker channel is not EEG: kept aside for the residuals.
    assert recording.a.channel_labels == ["Fz", "Cz", "Pz", "Oz"]
    assert recording.a.excluded_channels == ["Marker"]
    assert recording.a.data.shape == (4, recording.a.n_samples)
    assert set(np.unique(recording.a.board_markers)) >= {0, 1, 3, 4}
    assert recording.a.unit == "microvolts"
    events = [m.event for m in recording.markers]
    assert events[0] == "session_start" and events.count("block_start") == 2
    assert recording.marker_streams == ["d01-Markers"]
    assert recording.a.clock_times.size > 0
    assert recording.warnings == []


def test_file_without_metadata_uses_stream_order_and_says_so(tmp_path):
    path = write_dyad_xdf(tmp_path / "other.xdf", DyadSpec(blocks=SHORT, labels=False))
    recording = load_dyad(path)
    assert recording.a.stream_name == "d01-A-EEG"
    assert any("order in the file" in w and "--eeg" in w for w in recording.warnings)
    # Plain marker strings are kept as text.
    assert "start_cooperation" in [m.text for m in recording.markers]
    assert all(m.fields is None for m in recording.markers)


def test_eeg_override_by_name_or_source_id_sets_the_order(tmp_path):
    path = write_dyad_xdf(tmp_path / "other.xdf", DyadSpec(blocks=SHORT, labels=False))
    recording = load_dyad(path, eeg=("amp-B", "d01-A-EEG"))
    assert recording.a.stream_name == "d01-B-EEG"
    assert recording.b.stream_name == "d01-A-EEG"
    with pytest.raises(XdfLoadError, match="No stream named 'nope'.*Streams found: 'd01-A-EEG'"):
        load_dyad(path, eeg=("nope", "d01-A-EEG"))
    with pytest.raises(XdfLoadError, match="same stream"):
        load_dyad(path, eeg=("amp-A", "d01-A-EEG"))


def test_one_eeg_stream_is_a_clear_error(tmp_path):
    path = write_dyad_xdf(tmp_path / "one.xdf", DyadSpec(blocks=SHORT, eeg_streams=1))
    with pytest.raises(XdfLoadError) as info:
        load_dyad(path)
    message = str(info.value)
    assert "1 EEG stream(s)" in message and "needs two" in message
    assert "'d01-A-EEG'" in message and "d01-Markers" in message and "--eeg" in message


def test_no_eeg_stream_is_a_clear_error(tmp_path):
    path = write_dyad_xdf(tmp_path / "none.xdf", DyadSpec(blocks=SHORT, eeg_streams=0))
    with pytest.raises(XdfLoadError, match="0 EEG stream"):
        load_dyad(path)


def test_three_unlabelled_eeg_streams_need_the_override(tmp_path):
    path = tmp_path / "three.xdf"
    with XdfWriter(path) as writer:
        for stream_id in (1, 2, 3):
            info = pylsl.StreamInfo(f"amp{stream_id}", "EEG", 2, 100.0, "float32", f"amp-{stream_id}")
            writer.add_stream(stream_id, info.as_xml())
            writer.write_samples(stream_id, 100 + np.arange(200) / 100.0, np.zeros((200, 2), np.float32))
            writer.write_clock_offset(stream_id, 100.0, 0.0)
            writer.write_footer(stream_id)
    with pytest.raises(XdfLoadError, match="3 EEG streams.*--eeg"):
        load_dyad(path)
    recording = load_dyad(path, eeg=("amp3", "amp1"))
    assert (recording.a.stream_name, recording.b.stream_name) == ("amp3", "amp1")
    assert recording.other_streams == ["amp2"]
    # No channel metadata: numbered channels, all EEG.
    assert recording.a.channel_labels == ["ch1", "ch2"]


def test_truncated_file_is_loaded_with_the_damage_reported(tmp_path):
    path = write_dyad_xdf(tmp_path / "cut.xdf", DyadSpec(blocks=SHORT, truncate_bytes=3000))
    recording = load_dyad(path)
    assert recording.file_problems, "damage must be reported"
    text = " ".join(recording.file_problems)
    assert "no footer" in text or "corruption" in text
    assert any("dyadlab inspect" in w for w in recording.file_problems) or "not finalised" in text
    assert recording.a.n_samples > 0 and recording.b.n_samples > 0


def test_file_cut_inside_the_header_or_not_xdf_is_a_clear_error(tmp_path):
    path = write_dyad_xdf(tmp_path / "cut.xdf", DyadSpec(blocks=SHORT))
    head = path.read_bytes()[:30]
    cut = tmp_path / "head.xdf"
    cut.write_bytes(head)
    with pytest.raises(XdfLoadError, match="dyadlab inspect"):
        load_dyad(cut)
    text = tmp_path / "notes.xdf"
    text.write_text("not a recording")
    with pytest.raises(XdfLoadError, match="could not be read as XDF"):
        load_dyad(text)
    with pytest.raises(XdfLoadError, match="No such file"):
        load_dyad(tmp_path / "missing.xdf")


@pytest.fixture
def parent_passes(monkeypatch):
    """The stream selections of the pyxdf passes made in this process (not in workers)."""
    selections = []
    read = io._read_streams

    def recorded(path, selection):
        selections.append(selection)
        return read(path, selection)

    monkeypatch.setattr(io, "_read_streams", recorded)
    return selections


def _load_both_ways(monkeypatch, path):
    """load_dyad of a small file as it is (here, stream after stream), then with its EEG streams
    read in worker processes as a large file's are."""
    here = load_dyad(path)
    monkeypatch.setattr(io, "PARALLEL_MIN_BYTES", 0)
    return here, load_dyad(path)


def test_eeg_streams_read_in_worker_processes_give_the_same_recording(tmp_path, monkeypatch, parent_passes):
    path = write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT, nan_b=(2.0, 3.0)))
    here, workers = _load_both_ways(monkeypatch, path)
    assert parent_passes == [[3], [1], [2], [3]]  # the second load read only the markers here
    for mine, theirs in zip(here.participants, workers.participants):
        assert theirs.data.dtype == np.float32 and theirs.data.flags.c_contiguous
        np.testing.assert_array_equal(theirs.data, mine.data)  # NaN where B's are
        np.testing.assert_array_equal(theirs.timestamps, mine.timestamps)
        np.testing.assert_array_equal(theirs.board_markers, mine.board_markers)
        np.testing.assert_array_equal(theirs.clock_values, mine.clock_values)
        assert (theirs.label, theirs.channel_labels, theirs.excluded_channels, theirs.footer_sample_count) == (
            mine.label, mine.channel_labels, mine.excluded_channels, mine.footer_sample_count)
    assert [m.text for m in workers.markers] == [m.text for m in here.markers]
    assert workers.warnings == here.warnings == []


def test_damage_found_by_a_worker_is_reported(tmp_path, monkeypatch):
    # Cut inside B's footer: pyxdf reports it while reading B's stream, in a worker.
    path = write_dyad_xdf(tmp_path / "cut.xdf", DyadSpec(blocks=SHORT, truncate_bytes=3000))
    here, workers = _load_both_ways(monkeypatch, path)
    assert any("corruption" in problem for problem in here.file_problems)
    assert workers.file_problems == here.file_problems


def test_a_workers_load_error_is_the_same_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "silent.xdf"
    with XdfWriter(path) as writer:
        for stream_id, samples in ((1, 200), (2, 0)):
            info = pylsl.StreamInfo(f"amp{stream_id}", "EEG", 2, 100.0, "float32", f"amp-{stream_id}")
            writer.add_stream(stream_id, info.as_xml())
            if samples:
                writer.write_samples(stream_id, 100 + np.arange(samples) / 100.0, np.zeros((samples, 2), np.float32))
            writer.write_clock_offset(stream_id, 100.0, 0.0)
            writer.write_footer(stream_id)
    messages = []
    for minimum in (io.PARALLEL_MIN_BYTES, 0):
        monkeypatch.setattr(io, "PARALLEL_MIN_BYTES", minimum)
        with pytest.raises(XdfLoadError, match="Participant B's EEG stream 'amp2'.*holds no samples") as info:
            load_dyad(path)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_workers_that_cannot_start_leave_the_reading_here(tmp_path, monkeypatch, parent_passes, caplog):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))  # e.g. an embedding application
    monkeypatch.setattr(io, "PARALLEL_MIN_BYTES", 0)
    recording = load_dyad(write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT)))
    assert recording.a.n_samples > 0 and recording.b.data.shape == (4, recording.b.n_samples)
    assert parent_passes == [[3], [1], [2]]
    assert "worker processes failed (FileNotFoundError" in caplog.text


def _stalling_worker(pids: Path, failing: str | None) -> str:
    """A worker program that writes its pid to ``pids/STREAM_ID`` and sleeps; the worker of
    stream ``failing`` instead exits with status 3 once the other worker has written its pid."""
    return textwrap.dedent(f"""
        import os, pathlib, sys, time
        pids, me = pathlib.Path({str(pids)!r}), sys.argv[3]
        (pids / me).write_text(str(os.getpid()))
        if me == {failing!r}:
            while not any(other.name != me and other.read_text() for other in pids.iterdir()):
                time.sleep(0.01)
            sys.exit(3)
        time.sleep(60)
    """)


@pytest.mark.parametrize("failing, message", [(None, "stream 1 had not ended after 2 s"), ("1", "exit status 3")])
def test_stalled_or_failed_workers_are_killed_and_the_reading_done_here(
    tmp_path, monkeypatch, parent_passes, caplog, failing, message
):
    """A worker stalled (pyxdf on a damaged file) past its timeout, or one that fails while the
    other still runs: the workers still running are killed at once, none is left behind, and the
    streams are read here."""
    path = write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT))
    here = load_dyad(path)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setattr(io, "_WORKER_CODE", _stalling_worker(pids, failing))
    monkeypatch.setattr(io, "WORKER_TIMEOUT_S", 2.0)
    monkeypatch.setattr(io, "WORKER_TIMEOUT_S_PER_MB", 0.0)
    monkeypatch.setattr(io, "PARALLEL_MIN_BYTES", 0)
    parent_passes.clear()
    started = time.monotonic()
    recording = load_dyad(path)
    assert time.monotonic() - started < 30  # the workers sleep 60 s
    assert "worker processes failed (" in caplog.text and message in caplog.text
    assert parent_passes == [[3], [1], [2]]
    for mine, theirs in zip(here.participants, recording.participants):
        np.testing.assert_array_equal(theirs.data, mine.data)
        np.testing.assert_array_equal(theirs.timestamps, mine.timestamps)
    assert sorted(pid.name for pid in pids.iterdir()) == ["1", "2"]
    for pid in pids.iterdir():
        with pytest.raises(ProcessLookupError):  # killed and reaped (a zombie still takes signal 0)
            os.kill(int(pid.read_text()), 0)


def _run_check_script(tmp_path: Path, xdf: Path, prelude: str = "", python: str = sys.executable,
                      **run) -> subprocess.CompletedProcess:
    """Run, in a new interpreter, a user's script: ``prelude``, then load_dyad of ``xdf`` with its
    EEG streams read by workers. It prints the stream selections read in the script's own
    process and whether B's samples came back, then the ``synchrony.io`` it imported."""
    script = tmp_path / "check_it.py"
    script.write_text(textwrap.dedent(prelude) + textwrap.dedent(f"""
        import synchrony.io as io
        here = []
        read = io._read_streams
        io._read_streams = lambda path, selection: here.append(selection) or read(path, selection)
        io.PARALLEL_MIN_BYTES = 0
        recording = io.load_dyad({str(xdf)!r})
        print(here, recording.b.data.shape[1] == recording.b.n_samples > 0)
        print(io.__file__)
    """))
    return subprocess.run([python, str(script)], capture_output=True, text=True, timeout=120, **run)


def test_a_script_without_main_guard_runs_once(tmp_path):
    """The quick-check's documented snippet has no ``if __name__ == "__main__":`` guard: the
    reading workers must not run the caller's script again (multiprocessing's spawn and
    forkserver workers do)."""
    path = write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT))
    runs = tmp_path / "runs.txt"
    root = Path(io.__file__).resolve().parent.parent
    done = _run_check_script(tmp_path, path, f"""
        with open({str(runs)!r}, "a") as log:
            log.write("ran\\n")
    """, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "[[3]] True"  # the EEG streams were read elsewhere
    assert runs.read_text() == "ran\n"
    assert "worker processes failed" not in done.stderr


@pytest.fixture
def bare_python(tmp_path):
    """A virtual environment with this one's dependencies but without dyadlab, whose
    site-packages holds an old ``dataclasses`` backport (harmless unless site-packages comes
    before the standard library): its python and its site-packages."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python*/site-packages")).resolve()
    # A path line: the .pth files there (this environment's dyadlab install) are not run.
    (site / "dependencies.pth").write_text(f"{Path(np.__file__).resolve().parent.parent}\n")
    (site / "dataclasses.py").write_text("raise ImportError('an old backport shadows the standard library')\n")
    return venv / "bin" / "python", site


def _copy_synchrony(root: Path) -> Path:
    """A copy of the ``synchrony`` package (what a worker needs of it) in ``root``."""
    (root / "synchrony").mkdir(parents=True)
    for name in ("__init__.py", "io.py"):
        (root / "synchrony" / name).write_bytes((Path(io.__file__).parent / name).read_bytes())
    return root


@pytest.mark.parametrize("installed, checkout", [(True, False), (False, True), (True, True)],
                         ids=["installed", "checkout", "checkout-and-another-installed"])
def test_workers_import_the_callers_synchrony_without_shadowing_the_standard_library(
    tmp_path, bare_python, installed, checkout
):
    """dyadlab installed: site-packages is on the worker's path already and must not be put
    before the standard library. A checkout the caller put on its own sys.path: the worker adds
    it, after the standard library. A checkout while another copy is installed: the worker would
    run the installed one, so it stops and the streams are read in the caller, which says why."""
    python, site = bare_python
    path = write_dyad_xdf(tmp_path / "ours.xdf", DyadSpec(blocks=SHORT))
    if installed:
        _copy_synchrony(site)
    prelude = ""
    if checkout:
        prelude = f"import sys; sys.path.insert(0, {str(_copy_synchrony(tmp_path / 'checkout'))!r})\n"
    callers = tmp_path / "checkout" if checkout else site
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = _run_check_script(tmp_path, path, prelude, python=str(python), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    selections, imported = done.stdout.splitlines()
    assert Path(imported).resolve() == callers / "synchrony" / "io.py"
    if installed and checkout:
        assert selections == "[[3], [1], [2]] True"
        assert f"the worker imports synchrony from {site}, the caller from {callers}" in done.stderr
    else:
        assert selections == "[[3]] True", done.stderr
        assert "worker processes failed" not in done.stderr


LR_RATE = 250.0
LR_CHANNELS = 4


def _eeg_outlet(name: str) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EEG", LR_CHANNELS, LR_RATE, "float32", name)
    channels = info.desc().append_child("channels")
    for index in range(LR_CHANNELS):
        channels.append_child("channel").append_child_value("label", f"E{index + 1}")
    return pylsl.StreamOutlet(info)


@pytest.mark.integration
def test_labrecorder_file_from_another_tool(tmp_path, unique_id):
    """A file recorded by LabRecorder itself (PyPI ``labrecorder``: App-LabRecorder's recording code
    in this process) from plain LSL outlets of another tool: no dyadlab metadata, plain marker
    strings. It loads, participants come from stream order (said so), conditions from specs."""
    labrecorder = pytest.importorskip("labrecorder", reason="the 'labrecorder' test dependency is not installed")
    from synchrony.check import run_check

    names = [f"ampA-{unique_id}", f"ampB-{unique_id}"]
    marker_name = f"events-{unique_id}"
    eeg = [_eeg_outlet(name) for name in names]
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(marker_name, "Markers", 1, 0.0, "string", marker_name))
    infos = [pylsl.resolve_bypred(f"source_id='{name}'", 1, 10.0)[0] for name in names + [marker_name]]
    path = tmp_path / "labrecorder.xdf"
    recording = labrecorder.Recording(str(path), infos)
    time.sleep(1.0)  # LabRecorder opens its inlets in its own threads

    stop = threading.Event()
    rng = np.random.default_rng(0)

    def push() -> None:
        block = 25
        next_time = pylsl.local_clock()
        while not stop.is_set():
            stamps = next_time + np.arange(block) / LR_RATE
            for outlet in eeg:
                outlet.push_chunk((rng.standard_normal((block, LR_CHANNELS)) * 10).astype(np.float32).tolist(), stamps[-1])
            next_time += block / LR_RATE
            time.sleep(max(0.0, next_time - pylsl.local_clock()))

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        for label in ("rest", "coop"):
            time.sleep(0.5)
            markers.push_sample([f"{label}_on"], pylsl.local_clock())
            time.sleep(3.2)
            markers.push_sample([f"{label}_off"], pylsl.local_clock())
        time.sleep(1.0)
    finally:
        stop.set()
        pusher.join(5)
        recording.stop()
        del recording
        gc.collect()

    result = run_check(
        path, conditions=["rest=rest_on:rest_off", "coop=coop_on:coop_off"], epoch_length=1.0,
        bands="alpha=8-12", n_surrogates=0, progress=False,
    )
    assert {result["participants"]["A"]["stream"], result["participants"]["B"]["stream"]} == set(names)
    assert any("order in the file" in w for w in result["warnings"])
    assert result["segmentation"]["source"] == "condition-specs"
    assert result["conditions"]["rest"]["n_epochs"] >= 2 and result["conditions"]["coop"]["n_epochs"] >= 2
    for label in ("A", "B"):
        quality = result["quality"][label]
        assert quality["clock_offsets"] >= 1
        assert quality["effective_rate_hz"] == pytest.approx(LR_RATE, rel=0.05)
        assert quality["channels"]["labels"] == ["E1", "E2", "E3", "E4"]
        assert quality["marker_residuals"] is None  # no board marker channel in these streams
    assert result["file"]["load_problems"] == []
