"""Export out of XDF (dyadlab.synchrony.export): EEG-BIDS through mne-bids, MNE Raw and paired Epochs.

The round trips read the BIDS dataset back with ``mne_bids.read_raw_bids`` and compare with what
pyxdf (an independent XDF reader) reads from the same file. Real EEG recorded by others: HyPyP's
own dyad (``tests/data/hypyp``), written into an XDF by the independent writer and cut back into
paired epochs, which must equal HyPyP's epochs and give HyPyP's synchrony.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import pyxdf
from click.testing import CliRunner
from mne_bids import BIDSPath, read_raw_bids

from dyadlab.protocols.cli import main
from dyadlab.synchrony import export
from dyadlab.synchrony.io import XdfLoadError, load_dyad
from tests.synchrony.foreign_dyad import CONDITIONS, write_foreign_dyad
from tests.synchrony.independent_xdf import Stream, Writer, split
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

DATA = Path(__file__).parents[1] / "data"
#: BrainVision float32 stores each value (µV / 0.1, pybv's resolution) rounded once to float32:
#: relative error at most the unit roundoff 2**-24 (the float64 steps around it add ~1e-16).
FLOAT32_ROUNDOFF = 2.0**-24 * (1 + 1e-9)


def _read_back(path: BIDSPath) -> mne.io.BaseRaw:
    with warnings.catch_warnings():  # mne-bids cannot map participants.tsv's dyad columns to MNE fields: expected
        warnings.simplefilter("ignore", RuntimeWarning)
        return read_raw_bids(path, verbose=False)


def _pyxdf_streams(path: Path) -> dict[str, dict]:
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another lab's file: jittered stamps, B's clock 3.2 s off and 20 ppm fast, plain-string markers."""
    path = tmp_path_factory.mktemp("foreign") / "foreign.xdf"
    return write_foreign_dyad(path, block_seconds=12.0, n_blocks=4, fs=250.0, channels=4, seed=3)


def test_bids_round_trip_gives_the_xdf_samples_and_markers(foreign: Path, tmp_path: Path) -> None:
    """Each participant read back by mne-bids: samples equal to pyxdf's to float32 rounding, every
    marker an event at the sample recorded nearest to it (within one sample period)."""
    root = tmp_path / "bids"
    written = export.write_bids(foreign, root, session="1", subjects={"A": "p01", "B": "t01"})
    streams = _pyxdf_streams(foreign)
    markers = streams["Events"]
    marker_times = np.asarray(markers["time_stamps"])
    marker_texts = [row[0] for row in markers["time_series"]]
    assert [w.subject for w in written] == ["p01", "t01"]
    for recording, name in zip(written, ("Amp1-EEG", "Amp2-EEG")):
        assert recording.path.fpath.suffix == ".vhdr"
        raw = _read_back(recording.path)
        stream = streams[name]
        expected = np.asarray(stream["time_series"], dtype=np.float64).T * 1e-6  # µV -> V
        got = raw.get_data()
        assert got.shape == expected.shape
        assert raw.info["sfreq"] == 250.0
        assert np.all(np.abs(got - expected) <= FLOAT32_ROUNDOFF * np.abs(expected))
        events = [(onset, d) for onset, d in zip(raw.annotations.onset, raw.annotations.description)]
        assert [d for _, d in events] == marker_texts
        samples = np.rint(np.array([onset for onset, _ in events]) * 250.0).astype(int)
        stamps = np.asarray(stream["time_stamps"])
        # The event's sample was recorded within one period of the marker (on the clock pyxdf
        # synchronised: B's stamps are 3.2 s off before synchronisation).
        assert np.abs(stamps[samples] - marker_times).max() <= 1.0 / 250.0
        # ... and it is the nearest one: no other sample is closer.
        nearest = np.abs(stamps[None, :] - marker_times[:, None]).argmin(axis=1)
        np.testing.assert_array_equal(samples, nearest)


def test_bids_tables_say_who_was_recorded_with_whom(tmp_path: Path) -> None:
    """dyadlab's own files: ids and roles from the file, the dyad and partner in participants.tsv
    and scans.tsv. Session 2: A recorded with C (dyad d02), then with B (d01), as a patient with a
    stranger and with the therapist: two recordings told apart by acq-<dyad>."""
    blocks = [("rest", 6.0), ("cooperation", 6.0)]
    path = write_dyad_xdf(tmp_path / "s.xdf", DyadSpec(n_channels=3, blocks=blocks))
    other = write_dyad_xdf(tmp_path / "o.xdf", DyadSpec(n_channels=3, blocks=blocks, dyad="d02"))
    root = tmp_path / "bids"
    first = export.write_bids(path, root)
    assert [(w.subject, w.role, w.dyad, w.partner) for w in first] == [
        ("A", "partner", "d01", "B"),
        ("B", "partner", "d01", "A"),
    ]
    export.write_bids(other, root, session="2", subjects={"B": "C"})
    export.write_bids(path, root, session="2")
    participants = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str).set_index("participant_id")
    assert participants.loc["sub-A", "partner"] == "sub-B,sub-C"
    assert participants.loc["sub-A", "dyad"] == "d01,d02"
    assert participants.loc["sub-C", "partner"] == "sub-A" and participants.loc["sub-C", "dyad"] == "d02"
    scans = pd.read_csv(root / "sub-A" / "ses-2" / "sub-A_ses-2_scans.tsv", sep="\t", dtype=str).set_index("filename")
    assert scans.loc["eeg/sub-A_ses-2_task-hyperscanning_acq-d02_eeg.vhdr", "partner"] == "sub-C"
    assert scans.loc["eeg/sub-A_ses-2_task-hyperscanning_acq-d01_eeg.vhdr", "partner"] == "sub-B"
    assert set(scans["dyad_label"]) == {"A"}
    scans_c = pd.read_csv(root / "sub-C" / "ses-2" / "sub-C_ses-2_scans.tsv", sep="\t", dtype=str)
    assert scans_c.loc[0, "dyad_label"] == "B" and scans_c.loc[0, "partner"] == "sub-A"
    events = pd.read_csv(
        root / "sub-A" / "eeg" / "sub-A_task-hyperscanning_acq-d01_events.tsv", sep="\t", keep_default_na=False
    )
    recording = load_dyad(path)
    assert list(events["trial_type"]) == [export.describe_marker(m) for m in recording.markers]
    assert "block_start/cooperation" in set(events["trial_type"])


def test_export_command_writes_bids_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_dyad_xdf(tmp_path / "s.xdf", DyadSpec(n_channels=2, blocks=[("rest", 4.0)]))
    root = tmp_path / "bids"
    args = ["export", str(path), "--bids-root", str(root), "--session", "01"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "participant A ->" in result.output and "sub-A_ses-01_task-hyperscanning_acq-d01_eeg.vhdr" in result.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0
    assert "already exists" in again.output and "Traceback" not in again.output


def test_export_needs_two_named_participants(foreign: Path, tmp_path: Path) -> None:
    with pytest.raises(export.ExportError, match="--subject-a ID --subject-b ID"):
        export.write_bids(foreign, tmp_path / "bids")
    with pytest.raises(export.ExportError, match="name them apart"):
        export.write_bids(foreign, tmp_path / "bids", subjects={"A": "x", "B": "x"})


def test_labrecorder_file_with_one_eeg_stream_gives_a_clear_error(tmp_path: Path) -> None:
    """LabRecorder's own file holds one EEG stream and markers: not a dyad, so no export, said so."""
    result = CliRunner().invoke(
        main, ["export", str(DATA / "labrecorder_eeg_markers.xdf"), "--bids-root", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert "1 EEG stream" in result.output and "lr-eeg-fixture" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(XdfLoadError, match="needs two"):
        export.to_raw(DATA / "labrecorder_eeg_markers.xdf", "A")


def test_nearest_samples_matches_brute_force_on_unordered_stamps() -> None:
    rng = np.random.default_rng(0)
    stamps = np.concatenate([np.arange(100) / 100.0, 0.5 + np.arange(50) / 100.0])  # a clock reset
    times = rng.uniform(-0.1, 1.1, 200)
    got = export.nearest_samples(stamps, times)
    distance = np.abs(stamps[None, :] - times[:, None])
    np.testing.assert_array_equal(np.abs(stamps[got] - times), distance.min(axis=1))


def test_gap_is_annotated_and_paired_epochs_skip_it(tmp_path: Path) -> None:
    """Samples lost in B's recording: annotated BAD_ACQ_SKIP, and no paired epoch spans them."""
    fs, n = 100.0, 3000
    rng = np.random.default_rng(1)
    stamps = 500.0 + np.arange(n) / fs
    kept = np.r_[0:1000, 1050:n]  # B lost half a second at 10 s
    channels = [("C3", "EEG", "microvolts"), ("C4", "EEG", "microvolts")]

    def eeg(number: int, index: np.ndarray) -> Stream:
        values = rng.standard_normal((index.size, 2)).astype(np.float32)
        return Stream(number, f"EEG{number}", "EEG", "float32", fs, values, stamps[index], split(index.size, 250),
                      channels=channels, offsets=[(500.0, 0.0)])  # fmt: skip

    marks = Stream(3, "M", "Markers", "string", 0.0, [["on"], ["off"]], np.array([501.0, 528.0]), [1, 1])
    path = Writer().write(tmp_path / "gap.xdf", [eeg(1, np.arange(n)), eeg(2, kept), marks])
    raw_b = export.to_raw(path, "B")
    gaps = [o for o, d in zip(raw_b.annotations.onset, raw_b.annotations.description) if d == export.GAP_ANNOTATION]
    assert gaps == [pytest.approx(999 / fs)]
    a, b = export.paired_epochs(path, epoch_length=1.0, conditions=["task=on:off"])
    starts = a.events[:, 0] / fs  # A has no gap: its sample numbers are seconds since 500
    assert len(a) == len(b) == 26  # 27 one-second epochs from 1 s to 28 s, minus the one over 10-10.5 s
    assert not np.any((starts < 10.5) & (starts + 1.0 > 10.0))
    # B's epoch i starts at the sample recorded at A's epoch i start time.
    np.testing.assert_allclose(stamps[kept][b.events[:, 0]], stamps[a.events[:, 0]], atol=0.5 / fs)


@pytest.fixture(scope="module")
def hypyp_dyad_xdf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """HyPyP's real dyad (33 epochs of 501 samples each, 31 channels, 500 Hz) laid end to end in an
    XDF (float32 µV), ``ep_on`` at each epoch's first sample and ``ep_off`` half a sample after its
    500th (before the next ``ep_on``, so that the pairs never swap); B on a clock 7 s off."""
    s1 = mne.read_epochs(DATA / "hypyp" / "preproc_S1.fif", verbose="error")
    s2 = mne.read_epochs(DATA / "hypyp" / "preproc_S2.fif", verbose="error")
    fs, (n_epochs, n_channels, n_times) = s1.info["sfreq"], s1.get_data().shape
    channels = [(name, "EEG", "microvolts") for name in s1.ch_names]
    stamps = 100.0 + np.arange(n_epochs * n_times) / fs
    streams = []
    originals = []
    for number, (epochs, offset) in enumerate(((s1, 0.0), (s2, 7.0)), start=1):
        values = (epochs.get_data() * 1e6).astype(np.float32)  # (epochs, channels, times) µV
        originals.append(values)
        continuous = values.transpose(0, 2, 1).reshape(-1, n_channels)
        streams.append(
            Stream(
                number,
                f"S{number}",
                "EEG",
                "float32",
                fs,
                continuous,
                stamps - offset,
                split(stamps.size, 200),
                channels=channels,
                offsets=[(stamps[0] - offset, offset)],
            )  # fmt: skip
        )
    starts = stamps[0] + np.arange(n_epochs) * n_times / fs
    texts = [[t] for start in range(n_epochs) for t in ("ep_on", "ep_off")]
    times = np.ravel(np.column_stack([starts, starts + 500.5 / fs]))
    streams.append(Stream(3, "Marks", "Markers", "string", 0.0, texts, times, [1] * len(texts)))
    path = Writer().write(tmp_path_factory.mktemp("hypyp") / "hypyp_dyad.xdf", streams)
    return path, originals[0], originals[1]


# HyPyP filters each 1-s epoch with MNE's 825-tap FIR and MNE says so: the same for both sides here.
@pytest.mark.filterwarnings("ignore:filter_length:RuntimeWarning")
def test_paired_epochs_of_real_eeg_equal_hypyps_epochs_and_synchrony(
    hypyp_dyad_xdf: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """paired_epochs (1 s: 500 samples) on HyPyP's dyad recorded as XDF gives back the first 500
    samples of HyPyP's 33 epoch pairs (B's clock offset undone), and HyPyP's own
    compute_freq_bands + compute_sync on them gives the PLV of the original epochs."""
    from hypyp.analyses import compute_freq_bands, compute_sync

    path, original_a, original_b = hypyp_dyad_xdf
    original_a, original_b = original_a[:, :, :500], original_b[:, :, :500]
    a, b = export.paired_epochs(path, epoch_length=1.0, conditions=["epoch=ep_on:ep_off"])
    assert len(a) == len(b) == 33
    np.testing.assert_array_equal(a.events, b.events)  # same samples: both streams start together
    # XDF float32 µV -> volts (float64): the exact float32 values, scaled.
    np.testing.assert_allclose(a.get_data() * 1e6, original_a, rtol=1e-12)
    np.testing.assert_allclose(b.get_data() * 1e6, original_b, rtol=1e-12)

    bands = {"alpha": [8.0, 12.0]}
    ours = compute_sync(compute_freq_bands(np.array([a.get_data(), b.get_data()]), 500.0, bands), "plv")
    reference_data = np.array([original_a, original_b], dtype=np.float64) * 1e-6
    reference = compute_sync(compute_freq_bands(reference_data, 500.0, bands), "plv")
    # The same numbers up to float64 rounding of the 1e-6 scaling (PLV is scale-invariant).
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    assert np.isfinite(ours).all() and ours.shape == (1, 62, 62)


@pytest.mark.filterwarnings("ignore:filter_length:RuntimeWarning")
def test_paired_epochs_of_the_foreign_dyad_show_its_planted_coupling(foreign: Path) -> None:
    """Epochs from the file with B's clock 3.2 s off and drifting: alpha PLV between the brains
    (HyPyP) is higher in cooperation, where both carry the same rhythm 25 ms apart, than at rest,
    and than with B's cooperation epochs paired with A's next epoch (what misaligned pairs give)."""
    from hypyp.analyses import compute_freq_bands, compute_sync

    a, b = export.paired_epochs(foreign, epoch_length=2.0, conditions=CONDITIONS)
    assert list(a.event_id) == ["rest", "coop"] and len(a) == len(b) == 24
    complex_signal = compute_freq_bands(np.array([a.get_data(), b.get_data()]), 250.0, {"alpha": [9.0, 11.0]})

    def inter_brain_plv(signal: np.ndarray) -> float:
        return float(compute_sync(signal, "plv")[0][:4, 4:].mean())

    rest, coop = (complex_signal[:, a.events[:, 2] == a.event_id[name]] for name in ("rest", "coop"))
    misaligned = np.stack([coop[0], np.roll(coop[1], 1, axis=0)])
    # HyPyP's PLV is per epoch (over 2 s), then averaged: two independent 9-11 Hz rhythms keep
    # their phase difference for about a second, so it is about 0.35-0.45 without coupling
    # (measured 0.36 at rest, 0.36 misaligned) and near the coupled signals' share of the
    # variance with it (measured 0.77). A margin of 0.2 is over 4 standard errors of a mean of
    # 12 epochs x 16 channel pairs (per-epoch spread about 0.25).
    assert inter_brain_plv(coop) > inter_brain_plv(rest) + 0.2
    assert inter_brain_plv(coop) > inter_brain_plv(misaligned) + 0.2
