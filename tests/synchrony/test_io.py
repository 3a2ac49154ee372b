"""Loading hyperscanning XDF files: participant identification, channels, and files that do not fit.

Files are real XDF written by ``dyadlab.acquisition.xdf.XdfWriter`` (see ``xdf_fixtures``).
"""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pylsl
import pytest

from dyadlab.acquisition.xdf import XdfWriter
from dyadlab.synchrony.io import XdfLoadError, load_dyad
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
    from dyadlab.synchrony.check import run_check

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
                outlet.push_chunk(
                    (rng.standard_normal((block, LR_CHANNELS)) * 10).astype(np.float32).tolist(), stamps[-1]
                )
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
        path,
        conditions=["rest=rest_on:rest_off", "coop=coop_on:coop_off"],
        epoch_length=1.0,
        bands="alpha=8-12",
        n_surrogates=0,
        progress=False,
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
