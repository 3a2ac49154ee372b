"""Conditions from markers, the common timeline, continuous filtering, epochs and union rejection."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from dyadlab.synchrony import segments as seg
from dyadlab.synchrony.io import load_dyad
from dyadlab.synchrony.metrics import inter_brain_connectivity
from tests.synchrony.segment_fixtures import json_marker, participant_eeg, plain_marker
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf


def test_condition_spec_parsing():
    spec = seg.parse_condition_spec("coop=start_coop:end_coop")
    assert (spec.name, spec.start, spec.end) == ("coop", "start_coop", "end_coop")
    spec = seg.parse_condition_spec(r"talk=phase\:talk:phase\:rest")
    assert (spec.start, spec.end) == ("phase:talk", "phase:rest")
    assert spec.matches(r"S\s+1", "S  1") and spec.matches("a.b", "a.b") and not spec.matches("a", "ab")
    for bad in ("coop", "coop=start", "=a:b", "coop=a:b:c"):
        with pytest.raises(seg.SegmentationError, match="NAME=START:END"):
            seg.parse_condition_spec(bad)


def test_blocks_from_dyadlab_markers_close_open_blocks_with_a_warning():
    markers = [
        json_marker(1.0, "block_start", condition="rest", block="rest-1"),
        json_marker(2.0, "trial_start", condition="rest"),
        json_marker(11.0, "block_end", condition="rest", block="rest-1"),
        json_marker(12.0, "block_start", condition="coop", block="coop-1"),
        json_marker(30.0, "session_end", value="aborted"),
    ]
    blocks, warnings = seg.blocks_from_markers(markers, recording_end=40.0)
    assert [(b.condition, b.start, b.end) for b in blocks] == [("rest", 1.0, 11.0), ("coop", 12.0, 30.0)]
    assert len(warnings) == 1 and "coop-1" in warnings[0] and "session_end" in warnings[0]


def test_blocks_from_specs_with_regular_expressions_and_unmatched_names():
    markers = [
        plain_marker(1, "start_coop"),
        plain_marker(5, "end_coop"),
        plain_marker(6, "S 10"),
        plain_marker(9, "S 11"),
        plain_marker(10, "start_coop"),
    ]
    specs = [
        seg.parse_condition_spec("coop=start_coop:end_coop"),
        seg.parse_condition_spec(r"task=S 1\d:S 11"),
        seg.parse_condition_spec("rest=rest_on:rest_off"),
    ]
    blocks, warnings = seg.blocks_from_specs(markers, specs, recording_end=20.0)
    assert [(b.condition, b.start, b.end) for b in blocks] == [("coop", 1, 5), ("task", 6, 9), ("coop", 10, 20.0)]
    assert any("no 'end_coop' after it" in w for w in warnings)
    assert any("no marker matches the start 'rest_on'" in w and "'start_coop'" in w for w in warnings)


def test_bands_parsing():
    assert seg.parse_bands(None) == seg.DEFAULT_BANDS
    assert seg.parse_bands("alpha=8-12, beta=13-30") == {"alpha": (8.0, 12.0), "beta": (13.0, 30.0)}
    assert seg.parse_bands(["mu=8-13"]) == {"mu": (8.0, 13.0)}
    with pytest.raises(seg.SegmentationError, match="NAME=LOW-HIGH"):
        seg.parse_bands("alpha:8-12")
    with pytest.raises(seg.SegmentationError, match="low < high"):
        seg.parse_bands({"x": (12, 8)})


def test_alignment_resamples_the_faster_participant_and_keeps_the_signal(tmp_path):
    rate = 250.0
    t = np.arange(int(20 * rate)) / rate
    tone = np.sin(2 * np.pi * 10 * t)[None, :]
    fast_t = np.arange(int(20 * 500)) / 500.0
    a = participant_eeg("A", tone, rate, t0=100.0)
    b = participant_eeg("B", np.sin(2 * np.pi * 10 * fast_t)[None, :], 500.0, t0=100.0)
    aligned = seg.align_dyad(a, b)
    assert aligned.rate == rate
    assert (
        len(aligned.notes) == 1
        and "B was resampled to 250 Hz" in aligned.notes[0]
        and "resample_poly" in aligned.notes[0]
    )
    inner = slice(100, -100)  # resampling edges
    np.testing.assert_allclose(aligned.b[0, inner], aligned.a[0, inner], atol=0.02)


def test_alignment_corrects_a_start_offset_and_refuses_disjoint_recordings():
    rate = 100.0
    t = np.arange(3000) / rate
    x = np.sin(2 * np.pi * 3 * t)[None, :]
    a = participant_eeg("A", x, rate, t0=10.0)
    # B started 0.255 s later: its sample k is A's sample k + 25.5.
    b = participant_eeg("B", np.sin(2 * np.pi * 3 * (t + 0.255))[None, :], rate, t0=10.255)
    aligned = seg.align_dyad(a, b)
    assert aligned.start == pytest.approx(10.255)
    np.testing.assert_allclose(aligned.a[0, :-2], aligned.b[0, :-2], atol=0.01)
    late = participant_eeg("B", x, rate, t0=100.0)
    with pytest.raises(seg.SegmentationError, match="do not overlap"):
        seg.align_dyad(a, late)


def test_gaps_and_nans_invalidate_only_the_epochs_near_them():
    rate = 100.0
    n = 6000
    rng = np.random.default_rng(1)
    a = participant_eeg("A", rng.standard_normal((2, n)), rate)
    b_data = rng.standard_normal((2, n))
    b_data[1, 1000:1010] = np.nan  # 10.0-10.1 s
    stamps = np.arange(n) / rate
    stamps[3000:] += 1.0  # a 1-s gap at 30 s: B lost 100 samples
    b = participant_eeg("B", b_data, rate, timestamps=stamps)
    aligned = seg.align_dyad(a, b)
    plans = seg.plan_epochs(aligned, [seg.Block("all", 0.0, 60.0, "all")], epoch_length=2.0, margin=0.5)
    invalid_starts = plans[0].starts[~plans[0].valid] / rate
    # NaN at 10.0-10.1 s hits the epoch 10-12 and (with the 0.5-s margin) 8-10; the gap 30-31 s hits 28-30, 30-32;
    # the recording's start and end are within 0.5 s of the first and last epochs.
    assert set(invalid_starts.tolist()) == {0.0, 8.0, 10.0, 28.0, 30.0, 58.0}


def test_filter_margin_follows_the_filters_ringing():
    rate = 500.0
    theta = seg.filter_margin({"theta": (4.0, 7.0)}, rate)
    assert 1.2 < theta < 1.4  # longer than the former fixed 0.5 s
    assert seg.filter_margin({"alpha": (8.0, 12.0)}, rate) < theta < seg.filter_margin({"theta": (5.0, 6.0)}, rate)
    assert seg.filter_margin({"beta": (13.0, 30.0)}, rate) < 0.3
    assert seg.filter_margin(seg.DEFAULT_BANDS, rate) == theta  # the longest ringing decides
    # The margin is where the ringing of an impulse (a discontinuity) has died down to 1 %.
    impulse = np.zeros((1, int(20 * rate)))
    impulse[0, impulse.size // 2] = 1.0
    envelope = np.abs(seg.block_analytic(impulse, rate, {"theta": (4.0, 7.0)})["theta"][0])
    after = envelope[impulse.size // 2 :] / envelope.max()
    assert after[int(theta * rate) :].max() < 0.01 < after[int(0.5 * rate)]


def test_epochs_within_the_theta_filter_margin_of_a_gap_or_the_recording_start_are_rejected():
    rate = 250.0
    n = int(60 * rate)
    rng = np.random.default_rng(8)
    data = rng.standard_normal((2, n))
    data[:, int(20.0 * rate) : int(20.1 * rate)] = np.nan  # NaN in both at 20.0-20.1 s
    a = participant_eeg("A", data, rate)
    b = participant_eeg("B", rng.standard_normal((2, n)), rate)
    aligned = seg.align_dyad(a, b)
    blocks = [
        seg.Block("early", 0.6, 2.6, "early"),  # 0.6 s after the recording start
        seg.Block("gap", 20.7, 22.7, "gap"),  # 0.6 s after the gap
        seg.Block("inside", 40.0, 42.0, "inside"),
        seg.Block("late", 57.4, 59.4, "late"),  # 0.6 s before the end (59.996 s)
    ]
    used = np.ones(2, bool)
    plans, rejection, keep = seg.select_epochs(aligned, blocks, 2.0, 7.0, used, used, bands={"theta": (4.0, 7.0)})
    assert [bool(p.valid[0]) for p in plans] == [False, False, True, False]
    assert rejection.invalid == 3 and [bool(k[0]) for k in keep] == [False, False, True, False]
    # With the short ringing of beta (and the 1-30 Hz screening filter) 0.6 s is far enough.
    plans, _, _ = seg.select_epochs(aligned, blocks, 2.0, 30.0, used, used, bands={"beta": (13.0, 30.0)})
    assert all(p.valid[0] for p in plans)


def test_samples_lost_in_a_short_hole_leave_the_rest_at_their_true_times():
    """10 samples lost mid-recording (below the 25-sample gap limit): the grid samples of the hole
    are invalid and the data on both sides land at their true times."""
    rate = 250.0
    n = int(60 * rate)
    rng = np.random.default_rng(2)
    true_t = 20.0 + np.arange(n) / rate
    tone = lambda t: np.sin(2 * np.pi * 7.0 * t)  # noqa: E731
    a = participant_eeg("A", tone(true_t)[None, :], rate, t0=20.0)
    kept = np.r_[0:7500, 7510:n]  # samples 7500-7509 (50.00-50.04 s) lost
    stamps = true_t[kept] + rng.uniform(-0.1, 0.1, kept.size) / rate  # ordinary jitter
    b = participant_eeg("B", tone(true_t[kept])[None, :], rate, timestamps=stamps)
    aligned = seg.align_dyad(a, b)
    grid_t = aligned.start + np.arange(aligned.n_samples) / rate
    invalid = np.flatnonzero(~aligned.valid)
    assert set(range(7500, 7510)) <= set(invalid.tolist()) and invalid.min() >= 7499 and invalid.max() <= 7510
    for side in (slice(0, 7499), slice(7511, None)):
        np.testing.assert_allclose(aligned.b[0, side], tone(grid_t[side]), atol=0.01)


def test_samples_stamped_in_bursts_are_not_taken_for_lost_ones():
    """A board delivering 4 samples at once, all stamped on arrival (long steps between bursts)."""
    rate = 250.0
    n = int(30 * rate)
    data = np.random.default_rng(6).standard_normal((2, n))
    arrival = (np.arange(n) // 4 + 1) * 4 / rate + np.arange(n) * 1e-6  # 16-ms bursts, increasing
    a = participant_eeg("A", data, rate)
    b = participant_eeg("B", data, rate, timestamps=arrival)
    aligned = seg.align_dyad(a, b)
    assert aligned.valid.all()
    # The same delivery with samples 3000-3009 (12.00-12.04 s) lost: only they are invalid.
    kept = np.r_[0:3000, 3010:n]
    b = participant_eeg("B", data[:, kept], rate, timestamps=arrival[kept])
    invalid = np.flatnonzero(~seg.align_dyad(a, b).valid)
    assert set(range(3001, 3009)) <= set(invalid.tolist()) and invalid.min() >= 2998 and invalid.max() <= 3011


def test_continuous_filtering_gives_no_spurious_envelope_correlation():
    """Independent white noise: per-block filtering keeps theta envcorr near 0 (HyPyP's per-epoch: 0.18)."""
    rate = 256.0
    rng = np.random.default_rng(7)
    n = int(130 * rate)
    a = participant_eeg("A", rng.standard_normal((4, n)), rate)
    b = participant_eeg("B", rng.standard_normal((4, n)), rate)
    aligned = seg.align_dyad(a, b)
    plans = seg.plan_epochs(aligned, [seg.Block("all", 2.0, 122.0, "all")], 2.0)
    used = np.ones(4, bool)
    epochs = seg.condition_epochs(
        aligned, plans, [plans[0].valid], 2.0, {"theta": (4.0, 7.0)}, used, used, decimate=False
    )
    za, zb = epochs["theta"].za, epochs["theta"].zb
    assert za.shape == (60, 4, 512)
    values = inter_brain_connectivity(za, zb, ("envcorr", "plv"))
    assert abs(np.mean(values["envcorr"])) < 0.03
    # PLV chance level for a 3-Hz band and 2-s epochs (reference: 0.25-0.28).
    assert 0.2 < np.mean(values["plv"]) < 0.33


def test_band_filter_passes_the_band_and_rejects_outside():
    rate = 250.0
    t = np.arange(int(30 * rate)) / rate
    x = np.vstack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 20 * t)])
    analytic = seg.block_analytic(x, rate, {"alpha": (8.0, 12.0)})["alpha"]
    middle = slice(1000, -1000)
    np.testing.assert_allclose(np.abs(analytic[0, middle]), 1.0, atol=0.05)  # 10 Hz: passed, envelope 1
    assert np.abs(analytic[1, middle]).max() < 0.01  # 20 Hz: stopped
    # Zero phase: the analytic signal's real part is the input tone itself.
    np.testing.assert_allclose(analytic[0, middle].real, x[0, middle], atol=0.05)


def test_union_rejection_drops_an_epoch_bad_in_either_participant():
    rng = np.random.default_rng(3)
    logvar_a = rng.normal(0, 0.1, (50, 4))
    logvar_b = rng.normal(0, 0.1, (50, 3))
    logvar_a[5, 2] += 3.0  # artifact in A only
    logvar_b[9, 0] += 3.0  # artifact in B only
    logvar_b[20, 1] += 3.0  # artifact on a channel left out of the metrics: ignored
    logvar_a[30] = np.nan  # invalid data
    used_b = np.array([True, False, True])
    rejection = seg.reject_epochs(logvar_a, logvar_b, np.ones(4, bool), used_b, z_threshold=5.0)
    assert np.flatnonzero(~rejection.keep).tolist() == [5, 9, 30]
    assert (rejection.invalid, rejection.artifact_a, rejection.artifact_b) == (1, 1, 1)


def test_rejection_is_relative_to_each_condition():
    """A condition with more power (speaking, a shared rhythm) is not an artifact of the session."""
    rng = np.random.default_rng(4)
    logvar = rng.normal(0, 0.1, (60, 2))
    logvar[50:] += 2.0  # the shorter condition has 7x the variance throughout
    logvar[55, 1] += 3.0  # one real artifact in it
    groups = np.array(["rest"] * 50 + ["talk"] * 10)
    used = np.ones(2, bool)
    quiet = rng.normal(0, 0.1, (60, 2))
    rejection = seg.reject_epochs(logvar, quiet, used, used, groups=groups)
    assert np.flatnonzero(~rejection.keep).tolist() == [55]
    pooled = seg.reject_epochs(logvar, quiet, used, used)  # one session-wide median: all of talk looks bad
    assert (~pooled.keep).sum() == 10


def test_recorded_file_epochs_per_condition(tmp_path):
    path = write_dyad_xdf(tmp_path / "s.xdf", DyadSpec(blocks=[("rest", 20.0), ("cooperation", 21.0)]))
    recording = load_dyad(path)
    aligned = seg.align_dyad(recording.a, recording.b)
    blocks, warnings = seg.blocks_from_markers(recording.markers, aligned.start + aligned.n_samples / aligned.rate)
    assert warnings == []
    plans = seg.plan_epochs(aligned, blocks, 2.0)
    assert [p.starts.size for p in plans] == [10, 10]
    assert all(p.valid.all() for p in plans)
    step = seg.analysis_step(aligned.rate, 12.0)
    assert step == 5  # 250 Hz -> 50 Hz >= 4 x 12 Hz
    used = np.ones(4, bool)
    epochs = seg.condition_epochs(
        aligned, plans[1:], [plans[1].valid], 2.0, {"alpha": (8.0, 12.0)}, used, used, continuous=True
    )
    alpha = epochs["alpha"]
    assert alpha.za.shape == (10, 4, 100) and alpha.za.dtype == np.complex64
    # The block's continuous signal holds the very same epochs.
    block = alpha.blocks[0]
    assert block.rate == 50.0 and block.epoch_samples == 100
    np.testing.assert_array_equal(block.zb[:, block.starts[3] : block.starts[3] + 100], alpha.zb[3])


def test_analysis_rate_keeps_every_metric_within_a_hundredth(tmp_path):
    """Metrics on the analytic signal at >= 4 samples per period of the band's upper edge agree with
    full-rate values (the decimation documented in dyadlab.synchrony.segments)."""
    from tests.synchrony.xdf_fixtures import write_simulated_xdf

    path = write_simulated_xdf(
        tmp_path / "sim.xdf",
        [("cooperation", 40.0)],
        rate=500.0,
        seed=3,
        channel_names=("Fz", "Cz", "Pz", "Oz", "C3", "C4"),
    )
    recording = load_dyad(path)
    aligned = seg.align_dyad(recording.a, recording.b)
    blocks, _ = seg.blocks_from_markers(recording.markers, 1e12)
    plans = seg.plan_epochs(aligned, blocks, 2.0)
    used = np.ones(6, bool)
    full = seg.condition_epochs(
        aligned, plans, [p.valid for p in plans], 2.0, seg.DEFAULT_BANDS, used, used, decimate=False
    )
    fast = seg.condition_epochs(aligned, plans, [p.valid for p in plans], 2.0, seg.DEFAULT_BANDS, used, used)
    for band in seg.DEFAULT_BANDS:
        assert fast[band].za.shape[2] < full[band].za.shape[2]
        exact = inter_brain_connectivity(full[band].za, full[band].zb)
        approx = inter_brain_connectivity(fast[band].za, fast[band].zb)
        for metric in exact:
            assert abs(np.mean(approx[metric]) - np.mean(exact[metric])) < 0.01, (band, metric)


def test_decimated_analytic_signal_equals_every_nth_sample_of_the_full_one():
    rng = np.random.default_rng(5)
    data = rng.standard_normal((3, 20003))  # 40 s; compared far from the ends (FFT lengths differ)
    bands = {"theta": (4.0, 7.0), "beta": (13.0, 30.0)}
    full = seg.block_analytic(data, 500.0, bands)
    steps = {band: seg.analysis_step(500.0, high) for band, (_, high) in bands.items()}
    assert steps == {"theta": 17, "beta": 4}
    for band, z in seg.iter_band_analytic(data, 500.0, bands, steps=steps, start=7000, stop=13000):
        expected = full[band][:, 7000 : 13000 : steps[band]]
        assert z.shape == expected.shape
        np.testing.assert_allclose(z, expected, atol=1e-6 * np.abs(expected).max())


def test_grid_interpolation_matches_numpy_interp_for_a_drifting_clock():
    """The all-channel interpolation onto the grid is np.interp's, also when the recording's clock
    runs 0.3 % fast (source and grid samples slip past each other) and with jitter."""
    rate = 200.0
    n = int(40 * rate)
    rng = np.random.default_rng(9)
    data = rng.standard_normal((3, n)).astype(np.float32)
    data[1, 4000:4003] = np.nan
    stamps = 7.0 + np.arange(n) / (rate * 1.003) + rng.uniform(-0.05, 0.05, n) / rate
    a = participant_eeg("A", data, rate, timestamps=stamps)
    b = participant_eeg("B", np.zeros((1, n + 200)), rate, t0=6.0)
    aligned = seg.align_dyad(a, b)
    numbers = np.arange(n)
    t0, period = seg._regular_times(stamps, numbers)
    grid_t = aligned.start + np.arange(aligned.n_samples) / rate
    inside = (grid_t >= t0 - period / 2) & (grid_t <= t0 + (n - 0.5) * period)
    for c in range(3):
        expected = np.interp(grid_t[inside], t0 + numbers * period, data[c].astype(np.float64))
        np.testing.assert_allclose(aligned.a[c, inside], expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(aligned.a[:, ~inside]).all()


def _count_spectra(monkeypatch) -> list[int]:
    """Count the block spectra computed (calls of segments._spectrum) from now on."""
    calls: list[int] = []
    spectrum = seg._spectrum

    def counted(data, n_fft):
        calls.append(data.shape[0])
        return spectrum(data, n_fft)

    monkeypatch.setattr(seg, "_spectrum", counted)
    return calls


def test_band_epochs_from_the_screening_spectra_equal_fresh_ones(monkeypatch):
    """select_epochs keeps each block's spectrum for condition_epochs: one spectrum per block and
    participant for both, and the same epochs as computed anew."""
    rate = 250.0
    n = int(80 * rate)
    rng = np.random.default_rng(10)
    a = participant_eeg("A", rng.standard_normal((3, n)), rate)
    b = participant_eeg("B", rng.standard_normal((3, n)), rate)
    aligned = seg.align_dyad(a, b)
    blocks = [seg.Block("x", 5.0, 35.0, "x-1"), seg.Block("x", 40.0, 75.0, "x-2")]
    used = np.array([True, False, True])
    spectra = _count_spectra(monkeypatch)
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used)
    assert all(set(p.spectra) == {"a", "b"} for p in plans)
    reused = seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, continuous=True)
    assert len(spectra) == 4  # 2 blocks x 2 participants, by the screening only
    assert all(not p.spectra for p in plans)  # used once, then dropped
    fresh = seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, continuous=True)
    assert len(spectra) == 8  # computed anew (of the used channels only)
    for band in seg.DEFAULT_BANDS:
        scale = np.abs(fresh[band].za).max()
        np.testing.assert_allclose(reused[band].za, fresh[band].za, atol=1e-6 * scale)
        np.testing.assert_allclose(reused[band].zb, fresh[band].zb, atol=1e-6 * scale)
        np.testing.assert_allclose(reused[band].blocks[1].za, fresh[band].blocks[1].za, atol=1e-6 * scale)


def test_condition_bands_are_made_one_at_a_time_as_iterated_and_equal_all_bands_at_once(monkeypatch):
    """iter_condition_epochs makes a band's epochs (of every block) only when the iteration reaches
    it, bit for bit those of condition_epochs; it takes the blocks' spectra from the plans when
    called and releases them with the last band."""
    rate = 250.0
    n = int(80 * rate)
    rng = np.random.default_rng(14)
    aligned = seg.align_dyad(
        participant_eeg("A", rng.standard_normal((3, n)), rate), participant_eeg("B", rng.standard_normal((3, n)), rate)
    )
    blocks = [seg.Block("x", 5.0, 35.0, "x-1"), seg.Block("x", 40.0, 75.0, "x-2")]
    used = np.ones(3, bool)
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used)
    together = seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, continuous=True)
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used)
    spectra = [weakref.ref(p.spectra[side].bins) for p in plans for side in ("a", "b")]
    made = []
    band_signal = seg._band_signal

    def counted(spectrum, shift, n_fft, rate, band, *rest):
        made.append(band)
        return band_signal(spectrum, shift, n_fft, rate, band, *rest)

    monkeypatch.setattr(seg, "_band_signal", counted)
    bands = seg.iter_condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, continuous=True)
    assert not made and not any(p.spectra for p in plans)
    names = list(seg.DEFAULT_BANDS)
    for k, (band, epochs) in enumerate(bands):
        assert band == names[k]
        assert made == [seg.DEFAULT_BANDS[name] for name in names[: k + 1] for _ in range(4)]  # 2 blocks x A, B
        assert all(ref() is None for ref in spectra) == (band == names[-1])
        expected = together[band]
        assert epochs.za.shape == expected.za.shape and epochs.za.tobytes() == expected.za.tobytes()
        assert epochs.zb.tobytes() == expected.zb.tobytes()
        for ours, theirs in zip(epochs.blocks, expected.blocks, strict=True):
            assert ours.za.tobytes() == theirs.za.tobytes() and ours.zb.tobytes() == theirs.zb.tobytes()
            np.testing.assert_array_equal(ours.starts, theirs.starts)


def test_screening_and_band_signals_share_one_padded_range_when_the_screening_filter_rings_longest(monkeypatch):
    """One gamma band and no extra padding: the 1-45 Hz screening filter rings longer (0.33 s) than
    gamma (0.25 s), and both filter the block over the plan's range padded by the longer, so the
    screening's spectrum is still the band signals'."""
    rate = 250.0
    n = int(60 * rate)
    rng = np.random.default_rng(12)
    aligned = seg.align_dyad(
        participant_eeg("A", rng.standard_normal((2, n)), rate), participant_eeg("B", rng.standard_normal((2, n)), rate)
    )
    gamma = {"gamma": (30.0, 45.0)}
    blocks = [seg.Block("x", 10.0, 20.0, "x-1"), seg.Block("x", 30.0, 44.0, "x-2")]
    used = np.ones(2, bool)
    spectra = _count_spectra(monkeypatch)
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used, bands=gamma, pad=0.0)
    screening = int(np.ceil(seg.rejection_margin(rate, 45.0, gamma) * rate))
    assert screening > int(np.ceil(seg.filter_margin(gamma, rate) * rate))
    assert all((p.starts[0] - p.first, p.stop - p.starts[-1] - 500) == (screening, screening) for p in plans)
    reused = seg.condition_epochs(aligned, plans, keep, 2.0, gamma, used, used)
    assert len(spectra) == 4  # 2 blocks x 2 participants: none anew for the band signals
    fresh = seg.condition_epochs(aligned, plans, keep, 2.0, gamma, used, used)
    assert len(spectra) == 8
    scale = np.abs(fresh["gamma"].za).max()
    assert reused["gamma"].za.shape == (12, 2, 500)
    np.testing.assert_allclose(reused["gamma"].za, fresh["gamma"].za, atol=1e-6 * scale)
    np.testing.assert_allclose(reused["gamma"].zb, fresh["gamma"].zb, atol=1e-6 * scale)
    # A block without a kept epoch drops its spectrum too: none outlives its condition.
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used, bands=gamma, pad=0.0)
    seg.condition_epochs(aligned, plans, [np.zeros_like(keep[0]), keep[1]], 2.0, gamma, used, used)
    assert not any(p.spectra for p in plans)
    # Bands ringing longer than the plans' margin would need more padding (and a wider margin).
    with pytest.raises(seg.SegmentationError, match="filter margin shorter"):
        seg.condition_epochs(aligned, plans, keep, 2.0, {"theta": (4.0, 7.0)}, used, used)


def test_kept_spectra_stop_where_single_precision_results_stop_changing(monkeypatch):
    """The spectra kept for the band signals end at 111 Hz for the default bands at 500 Hz (gains
    below GAIN_FLOOR), and the band epochs are those of all bins to float32 rounding, on white
    noise (as much power far from the bands as in them)."""
    rate = 500.0
    n = int(40 * rate)
    rng = np.random.default_rng(13)
    aligned = seg.align_dyad(
        participant_eeg("A", rng.standard_normal((2, n)), rate), participant_eeg("B", rng.standard_normal((2, n)), rate)
    )
    used = np.ones(2, bool)
    plans, _, keep = seg.select_epochs(aligned, [seg.Block("x", 5.0, 35.0, "x")], 2.0, 45.0, used, used)
    kept = plans[0].spectra["a"]
    assert 105.0 < kept.bins.shape[1] * rate / kept.n_fft < 115.0
    floored = seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used)
    monkeypatch.setattr(seg, "GAIN_FLOOR", 0.0)
    seg._band_bins_cached.cache_clear()
    try:
        every_bin = seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used)
    finally:
        seg._band_bins_cached.cache_clear()
    for band in seg.DEFAULT_BANDS:
        for ours, exact in ((floored[band].za, every_bin[band].za), (floored[band].zb, every_bin[band].zb)):
            # Two float32 steps (2 x 1.2e-7) of the largest value; a floor of 1e-6 gives 9e-7.
            np.testing.assert_allclose(ours, exact, rtol=0, atol=2.5e-7 * np.abs(exact).max())


def test_screening_log_variance_at_the_decimated_rate_is_the_all_sample_one_to_sampling_error():
    rate = 500.0
    n = int(60 * rate)
    rng = np.random.default_rng(11)
    pink = np.cumsum(rng.standard_normal((4, n)), axis=1) * 0.05 + rng.standard_normal((4, n))
    a = participant_eeg("A", pink, rate)
    aligned = seg.align_dyad(a, participant_eeg("B", pink[::-1].copy(), rate))
    plans = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 55.0, "x")], 2.0)
    logvar, _ = seg.epoch_log_variance(aligned, plans, 2.0, 45.0)
    # All samples of the same 1-45 Hz signal.
    first = plans[0].starts[0] - int(3 * rate)
    full = seg.block_analytic(
        aligned.a[:, first : plans[0].starts[-1] + 1000 + int(3 * rate)], rate, {"bb": (1.0, 45.0)}
    )
    index = (plans[0].starts - first)[:, None] + np.arange(1000)[None, :]
    expected = np.log(full["bb"].real[:, index].var(axis=2)).T
    assert np.abs(logvar - expected).max() < 0.05 and np.sqrt(np.mean((logvar - expected) ** 2)) < 0.01
