"""One definition of a bad channel (``dyadlab.channel_quality``), used by preflight and the quick-check.

The same array goes through both real code paths: preflight's channel check (what
``run_preflight`` does with the samples it read from LSL) and the quick-check's
``participant_quality`` (what ``run_check`` does with a loaded recording). Then precedence
(flat vs railed), line noise at every sampling rate that can represent the mains frequency,
and every threshold from both sides.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest

from dyadlab.acquisition import preflight
from dyadlab.acquisition.preflight import PreflightConfig, StreamResult
from dyadlab.acquisition.simulator import DEFAULT_CHANNEL_NAMES, simulate_dyad
from dyadlab.channel_quality import (
    SPECTRUM_MAX_WINDOWS,
    ChannelThresholds,
    classify_channels,
    microvolts_per_unit,
    noisy_throughout,
    welch_spectrum,
)
from dyadlab.synchrony.io import ParticipantEeg
from dyadlab.synchrony.quality import QualityThresholds, participant_quality, thresholds_dict

FS = 250.0
DATA = Path(__file__).resolve().parent / "data"
CYTON_RAIL_UV = 187500.0
LABEL_KEYS = {"flat": "flat", "railed": "railed", "noisy": "noisy", "line_noise_channels": "line_noise"}


def _white(n_channels: int, seconds: float, rate: float = FS, std: float = 10.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_channels, int(seconds * rate))) * std


def _sine(n_samples: int, rate: float, freq: float, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n_samples) / rate)


def _participant(data: np.ndarray, rate: float, labels: list[str], unit: str = "microvolts") -> ParticipantEeg:
    n = data.shape[1]
    return ParticipantEeg(
        label="A",
        stream_name="d01-A-EEG",
        source_id="dyadlab.cq.d01.A.eeg",
        participant={},
        nominal_rate=rate,
        channel_labels=labels,
        data=data.astype(np.float32),
        timestamps=np.arange(n) / rate + 100.0,
        unit=unit,
        board_markers=None,
        package_numbers=None,
        clock_times=np.zeros(3),
        clock_values=np.zeros(3),
        footer_sample_count=n,
    )


def _preflight_flags(
    data: np.ndarray, rate: float, labels: list[str], line_freq: float, thresholds: ChannelThresholds
) -> tuple[dict[str, set[str]], list[preflight.ChannelResult], list[preflight.Problem]]:
    """Preflight's channel check on ``data`` as if it had been read from LSL (float32 on the wire)."""
    values = data.astype(np.float32).astype(np.float64).T  # (n_samples, n_channels), as pulled
    probe = preflight._Probe(info=None, values=values, stamps=np.arange(values.shape[0]) / rate)
    result = StreamResult(source_id="dyadlab.cq.d01.A.eeg", kind="eeg", nominal_rate=rate, effective_rate=rate)
    config = PreflightConfig(study="cq", dyad="d01", participants=("A",), line_freq=line_freq, thresholds=thresholds)
    named = dict(zip([f"ch{i + 1}" for i in range(len(labels))], labels))  # no LSL description: ch1, ch2...
    channels, problems = preflight._check_channels(probe, result, config, "A")
    return {named[c.label]: set(c.flags) for c in channels}, channels, problems


def _quick_check_flags(
    data: np.ndarray, rate: float, labels: list[str], thresholds: ChannelThresholds, unit: str = "microvolts"
) -> tuple[dict[str, set[str]], dict]:
    quality, _ = participant_quality(
        _participant(data, rate, labels, unit), [], QualityThresholds(**asdict(thresholds))
    )
    flags: dict[str, set[str]] = {label: set() for label in labels}
    for key, flag in LABEL_KEYS.items():
        for label in quality["channels"][key]:
            flags[label].add(flag)
    return flags, quality


def _both(
    data: np.ndarray,
    rate: float = FS,
    line_freq: float = 50.0,
    thresholds: ChannelThresholds | None = None,
    labels: list[str] | None = None,
) -> dict[str, set[str]]:
    """The flags of every channel, asserting preflight and the quick-check agree on them."""
    thresholds = thresholds or ChannelThresholds()
    labels = labels or [f"c{i}" for i in range(data.shape[0])]
    before, channels, _ = _preflight_flags(data, rate, labels, line_freq, thresholds)
    after, quality = _quick_check_flags(data, rate, labels, thresholds)
    assert before == after, (before, after)
    # The same measures, too.
    reported = [np.nan if v is None else v for v in quality["channels"]["std_uv"]]
    assert reported == pytest.approx([c.std_uv for c in channels], abs=2e-4, nan_ok=True)
    for flags in after.values():
        assert not {"flat", "railed"} <= flags
    return after


# --------------------------------------------------------------------------- one classification


@pytest.mark.parametrize("seconds", [3.0, 60.0])
def test_preflight_and_quick_check_classify_the_same_signal_the_same(seconds: float) -> None:
    """Realistic EEG (the simulator) with one defect per channel, as preflight reads it (a few
    seconds) and as the quick-check reads a recording: the same labels, channel by channel."""
    data = simulate_dyad(seconds, seed=21, blinks=False).a.copy()
    n = data.shape[1]
    labels = list(DEFAULT_CHANNEL_NAMES)
    index = {label: i for i, label in enumerate(labels)}
    data[index["Fp1"]] = -20.0  # electrode off, constant offset: flat
    data[index["F3"]] = np.clip(data[index["F3"]] * 20000.0, -CYTON_RAIL_UV, CYTON_RAIL_UV)  # saturating
    data[index["C3"]] = CYTON_RAIL_UV  # stuck at the rail
    data[index["Pz"]] += np.random.default_rng(0).normal(0.0, 60.0, n)  # poor contact
    data[index["Oz"]] += _sine(n, FS, 50.0, 30.0)  # mains
    data[index["O2"]] = 50.0 * np.sign(np.sin(2 * np.pi * np.arange(n) / FS) + 1e-9)  # 1 Hz square wave
    flags = _both(data, labels=labels)
    assert flags["Fp1"] == {"flat"}
    assert flags["F3"] == flags["C3"] == flags["O2"] == {"railed"}
    assert flags["Pz"] == {"noisy"}
    assert flags["Oz"] == {"line_noise"}
    assert all(not flags[label] for label in ("Fp2", "F7", "Fz", "F4", "F8", "Cz", "C4", "P3", "P4", "O1"))


def test_non_default_thresholds_reach_both_paths() -> None:
    data = _white(6, 20.0)
    data[2] *= 1.6
    loose, strict = _both(data), _both(data, thresholds=ChannelThresholds(noisy_ratio=1.5, noisy_robust_z=2.0))
    assert not loose["c2"] and strict["c2"] == {"noisy"}


def test_one_set_of_thresholds() -> None:
    """Preflight's ChannelThresholds is the shared class; the quick-check's extends it without
    changing a channel default, and its JSON keys are the ones reports always had."""
    assert preflight.ChannelThresholds is ChannelThresholds
    quick = QualityThresholds()
    assert isinstance(quick, ChannelThresholds)
    assert {f.name: getattr(quick, f.name) for f in fields(ChannelThresholds)} == asdict(ChannelThresholds())
    assert thresholds_dict(quick) == {
        "gap_samples": 25.0,
        "rate_tolerance": 0.01,
        "flat_std_uv": 0.5,
        "flat_repeat_fraction": 0.5,
        "railed_fraction": 0.01,
        "noisy_robust_z": 3.5,
        "noisy_ratio": 3.5,
        "noisy_std_uv": 100.0,
        "line_noise_db": 20.0,
        "residual_warn_ms": 20.0,
        "overlap_warn_fraction": 0.9,
    }
    assert thresholds_dict(QualityThresholds(rail_uv=CYTON_RAIL_UV, line_noise_db=15.0))["line_noise_db"] == 15.0


@pytest.mark.parametrize(
    "bad",
    [
        {"railed_fraction": 0.0},
        {"flat_repeat_fraction": 1.5},
        {"noisy_std_uv": -1.0},
        {"rail_uv": 0.0},
        {"line_noise_db": float("nan")},
    ],
)
def test_nonsense_thresholds_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ChannelThresholds(**bad)


# --------------------------------------------------------------------------- flat vs railed


@pytest.mark.parametrize("amplitude", [50.0, 1875.0])
def test_a_1_hz_square_wave_is_railed_not_flat(amplitude: float) -> None:
    """A square wave (an amplifier's test signal, or an input toggling between its rails) sits at
    its extremes and repeats its value in 99 % of the samples: railed takes precedence."""
    data = _white(8, 30.0)
    data[0] = amplitude * np.sign(np.sin(2 * np.pi * np.arange(data.shape[1]) / FS) + 1e-9)
    assert _both(data)["c0"] == {"railed"}
    quality = classify_channels(data, FS, 50.0)
    assert quality.repeat_fraction[0] > 0.99 and quality.railed_fraction[0] == 1.0


@pytest.mark.parametrize("seconds", [60, 3600])
def test_a_1_hz_stream_is_neither_flat_nor_railed(seconds: int) -> None:
    """Sampled at 1 Hz, there is nothing above 1 Hz: the std is taken over every frequency above
    0 (it was 0, hence "flat"), and noise touching its extremes once is not a rail (it was
    "railed" with 2 of 60 samples at the channel's min or max)."""
    data = _white(4, seconds, rate=1.0)
    flags = _both(data, rate=1.0)
    assert all(not f for f in flags.values()), flags
    quality = classify_channels(data, 1.0)
    assert quality.std == pytest.approx(10.0, rel=0.35)
    assert np.all(quality.railed_fraction == 0.0)
    data[1] = 7.0  # a dead channel at 1 Hz is flat, not railed
    assert _both(data, rate=1.0)["c1"] == {"flat"}


def test_a_clipped_amplifier_is_railed_not_flat() -> None:
    """Saturating most of the time (the limit repeats in most samples), with a known rail or not."""
    data = simulate_dyad(20.0, seed=4, blinks=False).a[:8].copy()
    data[1] = np.clip(data[1] * 100000.0 + 30000.0, -CYTON_RAIL_UV, CYTON_RAIL_UV)
    for thresholds in (ChannelThresholds(), ChannelThresholds(rail_uv=CYTON_RAIL_UV)):
        quality = classify_channels(data, FS, 50.0, thresholds=thresholds)
        assert quality.repeat_fraction[1] > 0.5 and quality.railed_fraction[1] > 0.5
        assert quality.flags(1) == ["railed"]
        assert _both(data, thresholds=thresholds)["c1"] == {"railed"}


def test_a_constant_channel_is_railed_when_stuck_at_a_rail_else_flat() -> None:
    data = _white(6, 10.0)
    data[1] = CYTON_RAIL_UV  # stuck at the limit
    data[2] = -20.0  # dead electrode with an offset
    data[3] = 0.0  # digital zero
    flags = _both(data)
    assert (flags["c1"], flags["c2"], flags["c3"]) == ({"railed"}, {"flat"}, {"flat"})
    known = _both(data, thresholds=ChannelThresholds(rail_uv=200000.0))  # 187500 is 94 % of it: not at the rail
    assert (known["c1"], known["c2"]) == ({"flat"}, {"flat"})


def test_a_flat_or_railed_channel_is_nothing_else() -> None:
    """Measures beyond the noisy and line-noise limits add no label to a flat or railed channel."""
    data = _white(6, 20.0)
    n = data.shape[1]
    data[1] = np.repeat(data[1, ::3] * 5.0, 3)[:n]  # every value sent three times: flat by repeats
    data[2] = data[2] * 10.0 + _sine(n, FS, 50.0, 300.0)  # crosses 98 % of a 400 µV rail
    thresholds = ChannelThresholds(rail_uv=400.0)
    quality = classify_channels(data, FS, 50.0, thresholds=thresholds)
    assert quality.ratio_to_median[1] > 2.0 and quality.robust_z[1] > 3.5  # noisy, if it were live
    assert quality.std[2] > 100.0 and quality.line_noise_db[2] > 20.0  # noisy and line noise, if live
    assert quality.flags(1) == ["flat"] and quality.flat_reasons(1) == ["repeats"]
    assert quality.flags(2) == ["railed"]
    flags = _both(data, thresholds=thresholds)
    assert flags["c1"] == {"flat"} and flags["c2"] == {"railed"}


# --------------------------------------------------------------------------- line noise


@pytest.mark.parametrize(("rate", "mains"), [(128.0, 60.0), (122.0, 60.0), (250.0, 50.0), (500.0, 50.0), (500.0, 60.0)])
def test_line_noise_at_every_rate_that_can_see_the_mains(rate: float, mains: float) -> None:
    """128 Hz has Nyquist 64 Hz and sees 60 Hz (the quick-check used to skip mains + 5 Hz > Nyquist)."""
    data = _white(6, 30.0, rate=rate)
    data[2] += _sine(data.shape[1], rate, mains, 60.0)
    flags = _both(data, rate=rate, line_freq=mains)
    assert flags["c2"] >= {"line_noise"} and not any(flags[f"c{i}"] for i in (0, 1, 3, 4, 5))
    _, quality = _quick_check_flags(data, rate, [f"c{i}" for i in range(6)], ChannelThresholds())
    assert quality["channels"]["line_frequency_hz"] == mains  # detected, not given
    assert quality["channels"]["line_noise_channels"] == ["c2"]


def test_line_noise_is_not_measured_where_the_rate_cannot_represent_it() -> None:
    data = _white(4, 20.0, rate=100.0)  # Nyquist 50 Hz: neither 50 nor 60 Hz is visible
    quality = classify_channels(data, 100.0)
    assert quality.line_frequency is None and np.isnan(quality.line_noise_db).all()
    given = classify_channels(data, 100.0, 60.0)
    assert given.line_frequency == 60.0 and np.isnan(given.line_noise_db).all() and not given.line_noise.any()


def test_the_detected_mains_is_the_strongest_peak() -> None:
    data = _white(6, 30.0)
    data[1] += _sine(data.shape[1], FS, 60.0, 40.0)
    data[2] += _sine(data.shape[1], FS, 50.0, 8.0)
    quality = classify_channels(data, FS)
    assert quality.line_frequency == 60.0 and quality.line_noise.tolist() == [False, True] + [False] * 4
    assert classify_channels(_white(6, 30.0), FS).line_frequency is None  # no peak anywhere


# --------------------------------------------------------------------------- each limit, both sides


def _just(value: float, side: str) -> float:
    return value * (1.02 if side == "above" else 0.98)


@pytest.mark.parametrize("side", ["above", "below"])
def test_flat_std_limit(side: str) -> None:
    data = _white(6, 10.0, std=0.5)
    measured = float(classify_channels(data, FS).std[0])
    thresholds = ChannelThresholds(flat_std_uv=_just(measured, side))
    assert bool(classify_channels(data, FS, thresholds=thresholds).flat[0]) == (side == "above")
    assert ("flat" in _both(data, thresholds=thresholds)["c0"]) == (side == "above")


@pytest.mark.parametrize("side", ["above", "below", "at"])
def test_flat_repeat_limit(side: str) -> None:
    """Flat when the same value repeats in *more than* the limit's share of consecutive samples."""
    data = _white(6, 20.0)
    hold = np.random.default_rng(3).random(data.shape[1]) < 0.3  # hold the previous value 30 % of the time
    hold[0] = False
    row = data[0].copy()
    for i in np.flatnonzero(hold):
        row[i] = row[i - 1]
    data[0] = row
    measured = float(classify_channels(data, FS).repeat_fraction[0])
    assert measured == pytest.approx(np.mean(row[1:] == row[:-1]))
    limit = measured if side == "at" else _just(measured, side)
    flat = bool(classify_channels(data, FS, thresholds=ChannelThresholds(flat_repeat_fraction=limit)).flat[0])
    assert flat == (side == "below")


@pytest.mark.parametrize("side", ["above", "below", "at"])
def test_railed_fraction_limit(side: str) -> None:
    """Railed when at least the limit's share of samples sits at the rail (held >= 3 samples)."""
    data = _white(6, 20.0)
    n = data.shape[1]
    top = float(data[0].max()) + 5.0
    for start in range(100, n - 10, n // 20):
        data[0, start : start + 4] = top  # 20 stretches of 4 samples at the limit
    measured = float(classify_channels(data, FS).railed_fraction[0])
    assert measured == pytest.approx(np.count_nonzero(data[0] == top) / n)
    limit = measured if side == "at" else _just(measured, side)
    railed = bool(classify_channels(data, FS, thresholds=ChannelThresholds(railed_fraction=limit)).railed[0])
    assert railed == (side != "above")


def test_the_extreme_must_be_held_to_be_a_rail() -> None:
    data = _white(4, 10.0)
    top = float(data[0].max()) + 5.0
    data[0, 100:102] = top  # twice in a row: noise or a short spike, not a rail
    data[0, 500:503] = top  # three in a row: held
    assert classify_channels(data, FS).railed_fraction[0] == pytest.approx(3 / data.shape[1])


@pytest.mark.parametrize("side", ["above", "below"])
def test_known_rail_limit(side: str) -> None:
    data = _white(6, 10.0)
    data[0, ::10] = _just(0.98 * CYTON_RAIL_UV, side) * np.sign(data[0, ::10])  # 10 % of samples
    quality = classify_channels(data, FS, thresholds=ChannelThresholds(rail_uv=CYTON_RAIL_UV))
    assert quality.railed_fraction[0] == pytest.approx(0.1 if side == "above" else 0.0)


@pytest.mark.parametrize("side", ["above", "below"])
def test_min_rail_limit_of_a_stuck_channel(side: str) -> None:
    data = _white(6, 10.0)
    data[0] = _just(1000.0, side)
    assert _both(data)["c0"] == ({"railed"} if side == "above" else {"flat"})


@pytest.mark.parametrize("side", ["above", "below"])
def test_noisy_std_limit(side: str) -> None:
    data = _white(6, 10.0, std=100.0)  # all alike: the relative test does not fire
    measured = float(classify_channels(data, FS).std[0])
    thresholds = ChannelThresholds(noisy_std_uv=_just(measured, side))
    assert ("noisy" in _both(data, thresholds=thresholds)["c0"]) == (side == "below")


@pytest.mark.parametrize(("z_side", "ratio_side"), [("below", "below"), ("above", "below"), ("below", "above")])
def test_noisy_robust_z_and_ratio_limits_together(z_side: str, ratio_side: str) -> None:
    data = _white(8, 10.0) * np.linspace(0.8, 1.2, 8)[:, None]
    data[0] *= 5.5  # 4.4 x the median
    quality = classify_channels(data, FS)
    z, ratio = float(quality.robust_z[0]), float(quality.ratio_to_median[0])
    assert z > 3.5 and ratio > 3.5 and quality.noisy[0]
    thresholds = ChannelThresholds(noisy_robust_z=_just(z, z_side), noisy_ratio=_just(ratio, ratio_side))
    expected = z_side == ratio_side == "below"  # both exceeded
    assert ("noisy" in _both(data, thresholds=thresholds)["c0"]) == expected


def test_a_tight_montage_needs_the_ratio_too() -> None:
    """Identical channels have a tiny MAD: 3 x the median is a huge z, but not noisy."""
    data = _white(8, 30.0)
    data[0] *= 3.0
    quality = classify_channels(data, FS)
    assert quality.robust_z[0] > 3.5 and not quality.noisy[0]
    data[0] *= 1.25
    assert classify_channels(data, FS).noisy[0]


def test_eye_blinks_in_a_few_seconds_are_not_noise() -> None:
    """Frontal channels during blinks reach 2-3 x the others' std in a 2-s window."""
    data = simulate_dyad(20.0, seed=7).a  # with blinks
    flagged = [
        classify_channels(data[:, start : start + 500], FS, 50.0).noisy.any()
        for start in range(0, data.shape[1] - 500, 500)
    ]
    assert not any(flagged)


def _eeglab_tutorial_uv() -> tuple[np.ndarray, float, list[str]]:
    """The EEGLAB tutorial recording (tests/data/eeglab: real EEG with real blinks, 128 Hz)."""
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_eeglab(DATA / "eeglab" / "eeglab_data.set", preload=True, verbose=False)
    return raw.get_data() * 1e6, float(raw.info["sfreq"]), list(raw.ch_names)


def test_real_blinks_in_a_few_seconds_are_transient_and_lasting_noise_is_not() -> None:
    """Real blinks flag FPz noisy in a few 3-s windows of a recording others made; every such flag
    is transient. The same windows with planted poor contact (white noise, 6 x the median std) on
    a posterior channel keep that channel noisy throughout."""
    data, fs, names = _eeglab_tutorial_uv()
    length = int(3 * fs)
    transient_flags = 0
    for start in range(0, data.shape[1] - length + 1, length):
        window = data[:, start : start + length]
        quality = classify_channels(window, fs, 60.0)
        lasting = noisy_throughout(window, fs, quality)
        assert not lasting.any(), f"window at {start / fs:.0f} s: {[names[c] for c in np.flatnonzero(lasting)]}"
        transient_flags += int(quality.noisy.sum())
        bad = window.copy()
        level = 6.0 * float(np.median(quality.std))
        bad[names.index("Pz")] += np.random.default_rng(start).normal(0.0, level, length)
        bad_quality = classify_channels(bad, fs, 60.0)
        assert bad_quality.noisy[names.index("Pz")]
        assert noisy_throughout(bad, fs, bad_quality)[names.index("Pz")]
    assert transient_flags >= 2, "the recording's blinks no longer reach the noisy limit: the test lost its point"


def test_a_transient_in_fewer_than_half_the_segments_is_not_lasting() -> None:
    """A burst covering 2 of 6 half-second segments is transient; 4 of 6 is lasting. A 1-s window
    (a short preflight) is cut into six segments of 1/6 s: a 0.2-s burst is transient there, noise
    throughout is not. A window of fewer than 3 segments (under 0.3 s) cannot tell and keeps the
    flag."""
    data = _white(8, 3.0)
    for segments, expected in ((2, False), (4, True)):
        bursty = data.copy()
        bursty[0, : int(segments * 0.5 * FS)] *= 12.0
        quality = classify_channels(bursty, FS)
        assert quality.noisy[0]
        assert noisy_throughout(bursty, FS, quality)[0] == expected, segments
    one_second = data[:, : int(FS)].copy()
    burst, lasting = one_second.copy(), one_second.copy()
    burst[0, 100:150] *= 12.0  # 0.2 s mid-window: the Hann taper would hide it at an edge
    lasting[0] *= 6.0
    for window, expected in ((burst, False), (lasting, True)):
        quality = classify_channels(window, FS)
        assert quality.noisy[0]
        assert noisy_throughout(window, FS, quality)[0] == expected
    short = data[:, : int(0.25 * FS)].copy()
    short[0, 25:37] *= 30.0
    quality = classify_channels(short, FS)
    assert quality.noisy[0] and noisy_throughout(short, FS, quality)[0]
    with pytest.raises(ValueError, match="segment_s"):
        noisy_throughout(data, FS, quality, segment_s=0.0)


@pytest.mark.parametrize("side", ["above", "below"])
def test_line_noise_limit(side: str) -> None:
    data = _white(6, 20.0)
    data[0] += _sine(data.shape[1], FS, 50.0, 5.0)
    measured = float(classify_channels(data, FS, 50.0).line_noise_db[0])
    thresholds = ChannelThresholds(line_noise_db=measured + (1.0 if side == "above" else -1.0))
    assert ("line_noise" in _both(data, thresholds=thresholds)["c0"]) == (side == "below")


# --------------------------------------------------------------------------- measures


def test_offsets_and_drifts_are_not_signal() -> None:
    """A DC-coupled amplifier's offset and drift (300 µV/s here) leave the std above 1 Hz alone."""
    data = _white(4, 10.0)
    clean = classify_channels(data, FS).std
    data[1] += 30000.0 + 300.0 * np.arange(data.shape[1]) / FS
    assert classify_channels(data, FS).std == pytest.approx(clean, rel=0.01)


def test_units() -> None:
    data = _white(6, 20.0)
    data[1] *= 0.02  # 0.2 µV: flat in a voltage unit only
    data[2] *= 20.0
    microvolts = classify_channels(data, FS, 50.0)
    volts = classify_channels(data * 1e-6, FS, 50.0, unit="V")
    assert volts.std_uv == pytest.approx(microvolts.std_uv)
    assert [volts.flags(i) for i in range(6)] == [microvolts.flags(i) for i in range(6)]
    assert microvolts.flags(1) == ["flat"] and microvolts.flags(2) == ["noisy"]
    counts = classify_channels(data, FS, 50.0, unit="counts")  # no µV limit applies
    assert counts.std_uv is None and counts.flags(1) == [] and counts.flags(2) == ["noisy"]
    assert microvolts_per_unit("µV") == microvolts_per_unit("microvolts") == 1.0
    assert microvolts_per_unit("mV") == 1000.0 and microvolts_per_unit("a.u.") is None


def test_missing_samples_are_not_repeats() -> None:
    """A channel NaN in 60 % of its samples (a lost lead) is not flat for it; a dead one is."""
    data = _white(6, 100.0)
    data[1, int(0.4 * data.shape[1]) :] = np.nan
    data[2] = np.nan
    quality = classify_channels(data, FS)
    assert quality.repeat_fraction[1] == 0.0 and quality.flags(1) == []
    assert quality.std[1] == pytest.approx(10.0, rel=0.05)
    assert quality.flags(2) == ["flat"] and quality.flat_reasons(2) == ["no_data"]
    flags = _both(data)
    assert flags["c1"] == set() and flags["c2"] == {"flat"}


def test_long_recordings_use_at_most_90_windows_and_a_given_spectrum() -> None:
    data = _white(4, 600.0).astype(np.float32)
    spectrum = welch_spectrum(data, FS)
    assert spectrum.windows == SPECTRUM_MAX_WINDOWS and spectrum.available_windows == 599
    assert spectrum.window_s == 2.0
    given = classify_channels(data, FS, 50.0, spectrum=spectrum)
    computed = classify_channels(data, FS, 50.0)
    assert np.array_equal(given.std, computed.std) and np.array_equal(given.line_noise_db, computed.line_noise_db)
    with pytest.raises(ValueError, match="channels"):
        classify_channels(data[:2], FS, spectrum=spectrum)
