"""Per-participant data quality: timing, channels, line noise, alpha peak, marker residuals, overlap.

Recordings with known defects are built directly as ``ParticipantEeg`` (what the loader returns),
plus one real XDF file for the board-marker residuals.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from dyadlab.synchrony.io import load_dyad
from dyadlab.synchrony.quality import QualityThresholds, marker_residuals, participant_quality, recording_overlap
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

RATE = 250.0


def _participant(data, timestamps=None, package_numbers=None, clock_times=(0.0, 0.0, 0.0), labels=None, label="A"):
    from dyadlab.synchrony.io import ParticipantEeg

    n = data.shape[1]
    return ParticipantEeg(
        label=label,
        stream_name=f"s{label}",
        source_id=f"s{label}",
        participant={},
        nominal_rate=RATE,
        channel_labels=labels or [f"c{i}" for i in range(data.shape[0])],
        data=data.astype(np.float32),
        timestamps=np.arange(n) / RATE + 50.0 if timestamps is None else timestamps,
        unit="microvolts",
        board_markers=None,
        package_numbers=package_numbers,
        clock_times=np.asarray(clock_times, dtype=float),
        clock_values=np.zeros(len(clock_times)),
        footer_sample_count=n,
    )


def _eeg(n_channels: int = 8, seconds: float = 60.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_channels, int(seconds * RATE))) * 10.0


def test_clean_recording_has_no_problem():
    quality, problems = participant_quality(_participant(_eeg()), [])
    assert problems == [] and quality["verdict"] == "ok"
    assert quality["samples"] == 15000 and quality["effective_rate_hz"] == pytest.approx(RATE)
    assert quality["gaps"] == 0 and quality["backward_jumps"] == 0 and quality["missing_samples"] == 0
    assert quality["channels"]["flat"] == quality["channels"]["railed"] == quality["channels"]["noisy"] == []
    assert quality["channels"]["line_frequency_hz"] is None


def test_gaps_backward_jumps_and_rate_are_reported():
    data = _eeg()
    stamps = np.arange(data.shape[1]) / RATE
    stamps[5000:] += 2.0  # 2 s lost
    stamps[9000:] -= 0.5  # clock jumps back
    quality, problems = participant_quality(_participant(data, timestamps=stamps), [])
    assert quality["gaps"] == 1 and quality["largest_gap_s"] == pytest.approx(2.004)
    assert quality["backward_jumps"] == 1 and quality["largest_backward_jump_s"] == pytest.approx(0.496)
    assert quality["missing_samples"] == pytest.approx(375, abs=1)  # 1.5 s net at 250 Hz
    text = " ".join(problems)
    assert "1 timestamp gap(s)" in text and "backwards 1 time(s)" in text and "effective rate" in text


def test_dropped_packets_from_a_wrapping_counter():
    data = _eeg(seconds=10)
    counter = np.arange(data.shape[1]) % 256
    keep = np.ones(data.shape[1], bool)
    keep[[100, 101, 102, 1000]] = False  # 4 packets lost, one across nothing special
    participant = _participant(
        data[:, keep], package_numbers=counter[keep].astype(float), timestamps=(np.arange(data.shape[1]) / RATE)[keep]
    )
    quality, problems = participant_quality(participant, [])
    assert quality["dropped_packets"] == 4
    assert any("4 packet(s) dropped" in p for p in problems)


def test_flat_railed_noisy_and_line_noise_channels():
    data = _eeg()
    t = np.arange(data.shape[1]) / RATE
    data[1] = 3.0  # flat (constant offset)
    data[2] = np.clip(data[2] * 30, -200, 200)  # railed: clipped at +-200
    data[3] *= 20  # noisy
    data[4] += 60 * np.sin(2 * np.pi * 50 * t)  # mains
    quality, problems = participant_quality(_participant(data), [], QualityThresholds())
    channels = quality["channels"]
    assert channels["flat"] == ["c1"]
    assert "c2" in channels["railed"]
    assert "c3" in channels["noisy"]
    assert channels["line_noise_channels"] == ["c4"] and channels["line_frequency_hz"] == 50.0
    assert quality["verdict"] == "check"
    assert any("flat channel(s) c1" in p for p in problems)


def test_no_clock_offsets_and_nan_spans_are_reported():
    data = _eeg()
    data[0, 2500:2750] = np.nan  # 10-11 s
    quality, problems = participant_quality(_participant(data, clock_times=np.zeros(0)), [])
    assert quality["nan_samples"] == 250 and quality["nan_spans_s"] == [[10.0, 10.996]]
    text = " ".join(problems)
    assert "no clock-offset measurements" in text
    assert "250 sample(s) hold NaN on channel(s) c0 at 10.0-11.0 s" in text


def test_alpha_peak_frequency():
    rng = np.random.default_rng(2)
    n = int(60 * RATE)
    t = np.arange(n) / RATE
    data = np.cumsum(rng.standard_normal((4, n)), axis=1) * 0.5 + rng.standard_normal((4, n))
    data += 5 * np.sin(2 * np.pi * 9.5 * t + rng.uniform(0, 6, (4, 1)))
    quality, _ = participant_quality(_participant(data, labels=["Fz", "O1", "O2", "Pz"]), [])
    assert quality["alpha_peak_hz"] == pytest.approx(9.5, abs=0.5)
    flat_spectrum, _ = participant_quality(_participant(_eeg(4)), [])
    assert flat_spectrum["alpha_peak_hz"] is None


def test_board_marker_residuals_from_a_recording(tmp_path):
    spec = DyadSpec(blocks=[("rest", 10.0)], board_marker_delay=0.010)
    recording = load_dyad(write_dyad_xdf(tmp_path / "m.xdf", spec))
    residuals = marker_residuals(recording.a, recording.markers)
    assert residuals["lsl_markers"] == residuals["matched"] == len(recording.markers)
    # Board sample = first sample at or after marker time + 10 ms: 10-14 ms at 250 Hz.
    assert 10.0 <= residuals["median_ms"] <= 14.0 and residuals["max_abs_ms"] <= 14.0
    quality, problems = participant_quality(recording.a, recording.markers, QualityThresholds(residual_warn_ms=5.0))
    assert any("board vs LSL marker times differ" in p for p in problems)


def test_overlap_of_the_two_recordings():
    a = _participant(_eeg(seconds=100))
    b = _participant(_eeg(seconds=100), timestamps=np.arange(25000) / RATE + 80.0, label="B")
    overlap, problems = recording_overlap(a, b)
    assert overlap["start_difference_s"] == pytest.approx(30.0)
    assert overlap["overlap_s"] == pytest.approx(70.0, abs=0.01)
    assert overlap["overlap_fraction"] == pytest.approx(70 / 130, abs=0.01)
    assert problems and "overlap for only 70.0 s" in problems[0]


def test_short_recording_spectrum_is_welch_over_every_sample():
    """Welch with a line removed from each window (dyadlab.channel_quality, shared with preflight)."""
    data = _eeg(seconds=60)
    quality, _ = participant_quality(_participant(data), [])
    freqs, psd = signal.welch(data.astype(np.float32).astype(np.float64), fs=RATE, nperseg=500, detrend="linear")
    expected = np.sqrt(psd[:, freqs >= 1.0].sum(axis=1) * (freqs[1] - freqs[0]))
    assert quality["channels"]["std_uv"] == pytest.approx(expected, abs=1e-4)
    assert quality["channels"]["spectrum"]["windows"] == quality["channels"]["spectrum"]["available_windows"] == 59


def test_every_welch_window_is_used_up_to_91_seconds():
    """Welch's grid steps by 1 s: 90 two-second windows cover 91 s, not 3 minutes."""
    spectra = [participant_quality(_participant(_eeg(2, seconds=s)), [])[0]["channels"]["spectrum"] for s in (91, 92)]
    assert [(spectrum["windows"], spectrum["available_windows"]) for spectrum in spectra] == [(90, 90), (90, 91)]


def test_long_recording_spectrum_from_windows_spread_over_all_of_it():
    """30 minutes: the spectrum comes from 90 windows spread over the recording, so mains noise in
    only the last third, a channel noisy in only the first third and the alpha rhythm are found,
    and a NaN stretch is skipped rather than counted as a constant."""
    minutes, n_channels = 30, 8
    n = int(minutes * 60 * RATE)
    rng = np.random.default_rng(5)
    data = rng.standard_normal((n_channels, n)) * 10.0
    t = np.arange(n) / RATE
    data[4:] += 8 * np.sin(2 * np.pi * 9.5 * t)  # posterior alpha
    third = n // 3
    data[1, 2 * third :] += 100 * np.sin(2 * np.pi * 50 * t[2 * third :])  # mains, last third only
    data[2, :third] *= 20  # noisy, first third only
    data[3, n // 2 : n // 2 + int(12 * 60 * RATE)] = np.nan  # 12 minutes lost
    labels = ["Fz", "Cz", "C3", "C4", "Pz", "O1", "O2", "Oz"]
    quality, _ = participant_quality(_participant(data, labels=labels), [])
    channels = quality["channels"]
    assert channels["spectrum"]["windows"] == channels["spectrum"]["max_windows"] == 90
    assert channels["spectrum"]["available_windows"] == pytest.approx((minutes - 12) * 60, abs=2)
    assert channels["line_noise_channels"] == ["Cz"] and channels["line_frequency_hz"] == 50.0
    assert "C3" in channels["noisy"]
    assert quality["alpha_peak_hz"] == pytest.approx(9.5, abs=0.5)
    # Filling the lost 40 % with a constant would report about 10 * sqrt(0.6) = 7.7.
    assert channels["std_uv"][3] == pytest.approx(10.0, rel=0.05)
    assert channels["nan_samples"][3] == int(12 * 60 * RATE)


def test_a_mostly_nan_channel_leaves_the_others_spectrum_alone():
    """A channel NaN in 90 % of its samples (a lead lost early on) does not choose the spectrum
    windows: the other channels keep the full budget and the same results as without it; its
    own spectrum comes from its own NaN-free seconds."""
    data = _eeg(seconds=100)
    data[2] += 60 * np.sin(2 * np.pi * 50 * np.arange(data.shape[1]) / RATE)  # mains
    lost = data.copy()
    lost[0, int(10 * RATE) :] = np.nan
    whole, _ = participant_quality(_participant(data), [])
    quality, _ = participant_quality(_participant(lost), [])
    channels, expected = quality["channels"], whole["channels"]
    assert channels["spectrum"] == expected["spectrum"]
    assert (channels["spectrum"]["windows"], channels["spectrum"]["available_windows"]) == (90, 99)
    assert channels["std_uv"][1:] == pytest.approx(expected["std_uv"][1:], rel=1e-6)
    assert channels["line_noise_db"][1:] == pytest.approx(expected["line_noise_db"][1:], abs=0.01)
    assert channels["line_noise_channels"] == expected["line_noise_channels"] == ["c2"]
    assert channels["noisy"] == expected["noisy"] == ["c2"]
    # Filled with its median over the other channels' windows, it would report about 10 * sqrt(0.1) = 3.2.
    assert channels["std_uv"][0] == pytest.approx(10.0, rel=0.1)
