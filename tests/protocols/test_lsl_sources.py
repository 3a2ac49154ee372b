"""Amplifiers that stream LSL themselves as participants' sources (``device: {board: lsl, ...}``).

The amplifiers are stand-ins for a vendor's LSL app: real pylsl outlets on the loopback that send
the EEGLAB tutorial recording (real EEG, 32 channels at 128 Hz, two of them EOG) in real time,
each sample stamped on ``local_clock()`` as such apps do (no BrainFlow, no marker channel). The
rest is real: resolution, the bridges, preflight, the recorder, PsychoPy under Xvfb with the
autopilot, and ``dyadlab check`` on the file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import mne
import numpy as np
import pylsl
import pytest
import pyxdf
import yaml

from dyadlab.acquisition.lsl_source import LslStreamSource, LslStreamSpec
from dyadlab.acquisition.lslconfig import LslConfig
from dyadlab.acquisition.sources import SourceConfigError
from dyadlab.protocols.runner import PreflightFailed, SessionRunner
from dyadlab.protocols.schema import LoadedProtocol, ProtocolError, load_protocol, validate_protocol_text

EEGLAB_SET = Path(__file__).resolve().parents[1] / "data" / "eeglab" / "eeglab_data.set"
display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, list[str], float]:
    """The EEGLAB tutorial recording in microvolts, its channel labels and rate."""
    raw = mne.io.read_raw_eeglab(EEGLAB_SET, preload=True, verbose="error")
    return raw.get_data() * 1e6, list(raw.ch_names), float(raw.info["sfreq"])


class VendorOutlet:
    """A vendor LSL app's stand-in: one amplifier's stream, sent in real time from a thread.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Values in ``unit``; the recording loops.
    stamp_offset : float
        Added to every ``local_clock()`` stamp (``time.time() - local_clock()`` mimics an app
        that stamps with Unix time).
    """

    def __init__(
        self,
        data: np.ndarray,
        labels: list[str],
        rate: float,
        *,
        name: str,
        source_id: str,
        unit: str = "microvolts",
        stamp_offset: float = 0.0,
    ) -> None:
        info = pylsl.StreamInfo(name, "EEG", len(labels), rate, "float32", source_id)
        channels = info.desc().append_child("channels")
        for label in labels:
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", unit)
            channel.append_child_value("type", "EOG" if label.startswith("EOG") else "EEG")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=4)
        self.data = np.ascontiguousarray(data.T, dtype=np.float32)
        self.rate = rate
        self.stamp_offset = stamp_offset
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.start = pylsl.local_clock()  # sample k is stamped start + k / rate (+ stamp_offset)

    def sample_index(self, stamps: np.ndarray) -> np.ndarray:
        """Which samples of ``data`` were sent with these (un-offset) stamps."""
        return np.round((stamps - self.start) * self.rate).astype(int) % len(self.data)

    def _send(self) -> None:
        start = self.start
        sent = 0
        while not self.stop.wait(0.02):
            due = int((pylsl.local_clock() - start) * self.rate)
            if due <= sent:
                continue
            rows = np.arange(sent, due) % len(self.data)
            stamps = start + np.arange(sent, due) / self.rate + self.stamp_offset
            self.outlet.push_chunk(self.data[rows], stamps.tolist())
            sent = due

    def __enter__(self) -> VendorOutlet:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        del self.outlet


def _protocol(tmp_path: Path, devices: list[dict], **changes: object) -> LoadedProtocol:
    data = yaml.safe_load(Path("protocols/bundled/demo.yaml").read_text())
    data["study"] = "lslamp"
    data["participants"] = [
        {"label": "A", "id": "sub-01", "device": devices[0]},
        {"label": "B", "id": "sub-02", "device": devices[1]},
    ]
    data["blocks"] = [
        {"id": "rest", "task": "rest", "params": {"duration_s": 10.0, "show_instructions": False}},
        {"id": "cooperation", "task": "joint-press", "params": {"mode": "cooperation", "n_trials": 4}},
    ]
    data["preflight"] = {"enabled": True, "seconds": 2, "line_frequency": 60}
    data["quickcheck"] = {"enabled": False}
    data.update(changes)
    path = tmp_path / "lsl-amps.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_protocol(path)


def test_protocol_validates_lsl_devices() -> None:
    base = yaml.safe_load(Path("protocols/bundled/demo.yaml").read_text())

    def problems(devices: list[dict]) -> str:
        data = dict(base, participants=[dict(p, device=d) for p, d in zip(base["participants"], devices)])
        try:
            validate_protocol_text(yaml.safe_dump(data))
        except ProtocolError as error:
            return str(error)
        return ""

    assert (
        problems([{"board": "lsl", "source_id": "amp-1"}, {"board": "lsl", "name": "LiveAmp", "hostname": "pc2"}]) == ""
    )
    assert "needs source_id" in problems([{"board": "lsl"}, {"board": "simulator"}])
    assert "same LSL stream" in problems([{"board": "lsl", "source_id": "x"}, {"board": "lsl", "source_id": "x"}])
    assert "unknown unit" in problems([{"board": "lsl", "source_id": "x", "unit": "furlongs"}, {"board": "simulator"}])
    assert "participants[0].device.serial_port" in problems(
        [{"board": "lsl", "source_id": "x", "serial_port": "/dev/ttyUSB0"}, {"board": "simulator"}]
    )


def test_source_resolves_exactly_one_stream_and_converts_units(recording: tuple) -> None:
    """Volts are scaled to microvolts, EOG goes to AUX; a missing or doubled stream is refused."""
    data, labels, rate = recording
    tag = uuid.uuid4().hex[:8]
    with VendorOutlet(data / 1e6, labels, rate, name=f"amp-{tag}", source_id=f"amp-{tag}", unit="volts") as amp:
        source = LslStreamSource(LslStreamSpec(source_id=f"amp-{tag}", resolve_timeout_s=3), participant="A")
        assert source.sampling_rate == rate
        assert source.aux_channel_names == ["EOG1", "EOG2"]
        assert source.eeg_channel_names == [label for label in labels if not label.startswith("EOG")]
        source.prepare()
        source.start()
        chunks = []
        deadline = pylsl.local_clock() + 3.0
        while sum(c.n_samples for c in chunks) < 2 * rate and pylsl.local_clock() < deadline:
            chunks.append(source.read())
            threading.Event().wait(0.05)
        source.stop()
        source.release()
    eeg = np.concatenate([c.eeg for c in chunks], axis=1)
    stamps = np.concatenate([c.timestamps for c in chunks])
    assert eeg.shape[1] >= 2 * rate
    # The vendor's stamps, unchanged (loopback clock offset ~0): consecutive samples 1/rate apart,
    # and each sample read is the one sent with its stamp, in microvolts again (float32 volts:
    # relative error below 1e-6, so 1e-5 of the value).
    np.testing.assert_allclose(np.diff(stamps), 1 / rate, atol=1e-5)
    expected = data[[labels.index(n) for n in source.eeg_channel_names]][:, amp.sample_index(stamps)]
    np.testing.assert_allclose(eeg, expected, rtol=1e-5, atol=1e-3)
    assert abs(stamps[-1] - pylsl.local_clock()) < 1.0

    with pytest.raises(SourceConfigError, match="No participant B's LSL stream"):
        LslStreamSource(LslStreamSpec(source_id=f"absent-{tag}", resolve_timeout_s=0.5), participant="B")
    with (
        VendorOutlet(data, labels, rate, name=f"twin-{tag}", source_id=f"twin-a-{tag}"),
        VendorOutlet(data, labels, rate, name=f"twin-{tag}", source_id=f"twin-b-{tag}"),
    ):
        with pytest.raises(SourceConfigError, match="2 streams match"):
            LslStreamSource(LslStreamSpec(name=f"twin-{tag}", resolve_timeout_s=3), participant="A")


@pytest.mark.integration
@pytest.mark.slow
@display
def test_session_records_two_lsl_amplifiers_and_checks(recording: tuple, tmp_path: Path, artifacts_dir: Path) -> None:
    """Two plain LSL outlets are the participants' EEG: preflight passes, the session records,
    the XDF holds their samples with the vendor's stamps, and ``dyadlab check`` reads it and says
    how timing was verified."""
    data, labels, rate = recording
    tag = uuid.uuid4().hex[:8]
    half = data.shape[1] // 2
    # The tutorial recording has a real 60 Hz peak that preflight flags on many channels in some
    # stretches: tolerated as warnings (max_bad_channels 30).
    loaded = _protocol(
        tmp_path,
        [
            {"board": "lsl", "source_id": f"liveamp-A-{tag}"},
            {"board": "lsl", "name": f"eego-B-{tag}", "hostname": socket.gethostname()},
        ],
        preflight={"enabled": True, "seconds": 2, "line_frequency": 60, "max_bad_channels": 30},
    )
    out = tmp_path / "out"
    with (
        VendorOutlet(data[:, :half], labels, rate, name=f"liveamp-A-{tag}", source_id=f"liveamp-A-{tag}"),
        VendorOutlet(data[:, half:], labels, rate, name=f"eego-B-{tag}", source_id=f"eego-B-{tag}"),
    ):
        result = SessionRunner(loaded, out_dir=out, autopilot=True, lsl_config=LslConfig()).run()
    assert result.complete
    session = result.session
    preflight = session["preflight"]
    assert preflight["ready"] is True
    for label in ("A", "B"):  # the stream checks ran on the republished stream and passed
        assert preflight["participants"][label]["ready"]
        stream = preflight["participants"][label]["eeg"]
        assert stream["found"] == 1 and stream["monotonic"]
        assert stream["effective_rate"] == pytest.approx(rate, rel=0.02)  # preflight's own 2 % rule
        assert abs(stream["stamp_to_local_clock_s"]) < 1.0  # on local_clock(), preflight's ±1 s rule
        assert len(preflight["participants"][label]["channels"]) == 30, "EEG channels only, EOG in AUX"
    # Channels the recording's 60 Hz peak flags (how many depends on which 2 s preflight reads) are
    # warnings here, as max_bad_channels allows.
    assert all(p["severity"] == "warning" for p in preflight["problems"])
    for label, vendor in (("A", f"liveamp-A-{tag}"), ("B", f"eego-B-{tag}")):
        device = next(p["device"] for p in session["participants"] if p["label"] == label)
        assert device["kind"] == "lsl" and device["description"]["lsl_source_id"] == vendor
        assert device["sampling_rate"] == rate and device["aux_channels"] == ["EOG1", "EOG2"]

    streams, _ = pyxdf.load_xdf(str(result.files["xdf"]), dejitter_timestamps=False)
    eeg = {s["info"]["desc"][0]["participant"][0]["label"][0]: s for s in streams if s["info"]["type"][0] == "EEG"}
    assert set(eeg) == {"A", "B"}
    duration = result.duration
    for label, stream in eeg.items():
        channels = [c["label"][0] for c in stream["info"]["desc"][0]["channels"][0]["channel"]]
        assert channels == [n for n in labels if not n.startswith("EOG")], "no Marker channel, no EOG"
        values = np.asarray(stream["time_series"])
        stamps = np.asarray(stream["time_stamps"])
        # Every sample of the session, at the vendor's rate (stamps k/128 s apart, to float precision).
        assert len(stamps) >= duration * rate
        np.testing.assert_allclose(np.median(np.diff(stamps)), 1 / rate, rtol=1e-6)
        # Real EEG, not zeros: the recording's own amplitude (std 20-40 uV per channel).
        assert 10 < float(np.median(values.std(axis=0))) < 60, label

    check_json = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, "-m", "dyadlab", "check", str(result.files["xdf"]), "--json", str(check_json)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    check = json.loads(check_json.read_text())
    assert {check["participants"][k]["participant"]["id"] for k in ("A", "B")} == {"sub-01", "sub-02"}
    assert check["quality"]["A"]["marker_residuals"] is None
    notes = " ".join(check["timing_verification"]["notes"])
    assert "Participant A" in notes and "Participant B" in notes and "LSL timestamps alone" in notes


@pytest.mark.integration
@display
def test_preflight_refuses_an_amplifier_stamped_with_unix_time(recording: tuple, tmp_path: Path) -> None:
    """An app that stamps with Unix time (~1.8e9 s off ``local_clock()``) fails the same preflight
    check as a board would; nothing is recorded."""
    import time

    data, labels, rate = recording
    tag = uuid.uuid4().hex[:8]
    loaded = _protocol(
        tmp_path,
        [{"board": "lsl", "source_id": f"good-{tag}"}, {"board": "lsl", "source_id": f"unix-{tag}"}],
    )
    with (
        VendorOutlet(data, labels, rate, name=f"good-{tag}", source_id=f"good-{tag}"),
        VendorOutlet(
            data,
            labels,
            rate,
            name=f"unix-{tag}",
            source_id=f"unix-{tag}",
            stamp_offset=time.time() - pylsl.local_clock(),
        ),
    ):
        with pytest.raises(PreflightFailed) as caught:
            SessionRunner(loaded, out_dir=tmp_path / "out", autopilot=True, lsl_config=LslConfig()).run()
    assert "local_clock" in str(caught.value) or "Unix" in str(caught.value)
    assert not list((tmp_path / "out").rglob("*.xdf"))
