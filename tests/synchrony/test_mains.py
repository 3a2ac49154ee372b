"""Mains-proof synchrony (issue #12): shared intermittent mains is not reported as synchrony.

The dyads are made from real EEG recorded by others: the EEGLAB tutorial recording (one person,
128 Hz, 238 s, its own real 60 Hz peak; tests/data/README.md for its licence), cut into two
non-overlapping halves that play participants A and B, resampled with scipy to the rate under
test and written to XDF by the independent writer (:mod:`tests.synchrony.independent_xdf`). The
two halves are independent brains: the only coupling is what the test plants.

Planted mains, as a lab's shared supply gives it: both participants pick it up at the same
times (on/off bursts of 4-12 s), 50 uV at the fundamental (plus 10 and 5 uV at the 2nd and 3rd
harmonic where the rate holds them), each electrode with its own phase within +-60 deg. Planted
coupling: a 9-11 Hz rhythm shared by A and B (B's 25 ms later), as in
:mod:`tests.synchrony.foreign_dyad`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from dyadlab.channel_quality import classify_channels
from dyadlab.synchrony import mains as mains_mod
from dyadlab.synchrony.check import QuickCheckError, run_check
from dyadlab.synchrony.results import QuickCheckResult
from tests.synchrony.independent_xdf import Stream, Writer, split

EEGLAB = Path(__file__).parents[1] / "data" / "eeglab" / "eeglab_data.set"
T0 = 1000.0
#: EEG channels of the EEGLAB recording used (its two EOG channels and the rest left out to keep
#: the tests fast); 12 x 12 pairs are enough for the family-wise pair counts to mean something.
CHANNELS = ["F3", "Fz", "F4", "FC1", "FC2", "C3", "Cz", "C4", "CP1", "CP2", "P3", "Pz"]
SURROGATES = 100
COUPLING_LAG_S = 0.025


@functools.lru_cache(maxsize=1)
def _halves() -> tuple[np.ndarray, np.ndarray]:
    """The EEGLAB recording's two halves (channels, samples) in microvolts at 128 Hz."""
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_eeglab(EEGLAB, preload=True, verbose=False)
    data = raw.get_data(picks=CHANNELS) * 1e6
    half = data.shape[1] // 2
    return data[:, :half], data[:, half : 2 * half]


def _resampled(data: np.ndarray, rate: int) -> np.ndarray:
    """``data`` (128 Hz) at ``rate`` with scipy's polyphase resampler (anti-aliased)."""
    if rate == 128:
        return data.copy()
    g = np.gcd(rate, 128)
    return signal.resample_poly(data, rate // g, 128 // g, axis=1)


def _bursts(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """On/off pattern (0 or 1 per sample): alternating 4-12 s stretches, starting off or on."""
    on = np.zeros(n)
    t, state = 0, bool(rng.integers(2))
    while t < n:
        length = int(rng.uniform(4.0, 12.0) * rate)
        on[t : t + length] = state
        t, state = t + length, not state
    return on


def _mains(rng: np.random.Generator, on: np.ndarray, rate: float, fundamental: float, channels: int) -> np.ndarray:
    """Mains pick-up (channels, samples) in microvolts, switched by ``on``."""
    t = np.arange(on.size) / rate
    out = np.zeros((channels, on.size))
    for harmonic, amplitude in ((1, 50.0), (2, 10.0), (3, 5.0)):
        if harmonic * fundamental >= rate / 2:  # the amplifier's anti-alias filter removes it
            continue
        phase = np.deg2rad(rng.uniform(-60.0, 60.0, channels))[:, None]
        out += amplitude * np.cos(2 * np.pi * harmonic * fundamental * t[None, :] + harmonic * phase)
    return out * on[None, :]


def _shared_alpha(rng: np.random.Generator, n: int, rate: float, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A 9-11 Hz rhythm that A and B share (B's 25 ms later), 10 uV rms on each channel times a
    mixing weight of 0.6-1."""
    lag = int(round(COUPLING_LAG_S * rate))
    sos = signal.butter(4, (9.0, 11.0), btype="bandpass", fs=rate, output="sos")
    rhythm = signal.sosfiltfilt(sos, rng.standard_normal(n + lag + int(rate)))[: n + lag]
    rhythm /= rhythm.std()
    mixing = rng.uniform(0.6, 1.0, (2, channels, 1)) * 10.0
    return mixing[0] * rhythm[None, lag:], mixing[1] * rhythm[None, :n]


def write_dyad(path: Path, rate: int, *, mains: float | None = None, coupled: bool = False, seed: int = 0) -> Path:
    """The two halves of the EEGLAB recording as A and B at ``rate``, with planted shared
    intermittent ``mains`` (Hz) and/or a planted shared alpha rhythm."""
    rng = np.random.default_rng(seed)
    a, b = (_resampled(half, rate) for half in _halves())
    n, channels = a.shape[1], a.shape[0]
    if mains is not None:
        on = _bursts(rng, n, rate)
        a = a + _mains(rng, on, rate, mains, channels)
        b = b + _mains(rng, on, rate, mains, channels)
    if coupled:
        alpha_a, alpha_b = _shared_alpha(rng, n, rate, channels)
        a, b = a + alpha_a, b + alpha_b
    stamps = T0 + np.arange(n) / rate
    offsets = [(float(t), 0.0) for t in np.arange(T0, stamps[-1], 5.0)]
    streams = [
        Stream(
            stream_id=number,
            name=f"Amp{number}-EEG",
            type="EEG",
            channel_format="float32",
            nominal_srate=float(rate),
            values=values.T.astype(np.float32),
            stamps=stamps,
            chunks=split(n, max(rate // 4, 1)),
            channels=[(label, "EEG", "microvolts") for label in CHANNELS],
            source_id=f"amp-{number}",
            offsets=offsets,
        )
        for number, values in ((1, a), (2, b))
    ]
    return Writer().write(path, streams)


def _check(path: Path, **options: object) -> dict:
    """The quick-check with the verdict's metric (PLV) and wPLI (the common-mode diagnostic) only:
    the other metrics do not change the verdict and would triple the run time."""
    return run_check(path, n_surrogates=SURROGATES, progress=False, metrics=["plv", "wpli"], **options)


def _synchronous(result: dict) -> list[str]:
    """``condition/band`` the verdict calls synchronous."""
    return [f"{d['condition']}/{d['band']}" for d in result["verdict"]["synchrony_above_chance"]]


def _max_z(result: dict, metric: str = "plv") -> float:
    return max(
        cell[metric]["z"]
        for entry in result["conditions"].values()
        for band, cell in entry.items()
        if isinstance(cell, dict) and metric in cell
    )


def _fwer_pairs(result: dict, metric: str = "plv") -> int:
    return sum(
        cell[metric]["n_significant_pairs_fwer"]
        for entry in result["conditions"].values()
        for band, cell in entry.items()
        if isinstance(cell, dict) and metric in cell
    )


# ---------------------------------------------------------------------------------- unit level


def test_harmonics_stop_below_nyquist() -> None:
    assert mains_mod.harmonics(50.0, 500.0) == (50.0, 100.0, 150.0, 200.0)
    assert mains_mod.harmonics(60.0, 250.0) == (60.0, 120.0)
    assert mains_mod.harmonics(60.0, 128.0) == (60.0,)
    assert mains_mod.harmonics(50.0, 100.0) == ()  # at Nyquist: the data cannot hold it


def test_notch_gain_removes_mains_and_keeps_the_bands() -> None:
    """Zero within 1 Hz of every harmonic, full gain 2 Hz away and in the default bands."""
    freqs = np.arange(0.0, 250.0, 0.05)
    gain = mains_mod.notch_gain(freqs, mains_mod.harmonics(50.0, 500.0))
    for h in (50.0, 100.0, 150.0, 200.0):
        assert gain[np.abs(freqs - h) <= 1.0].max() == 0.0
    assert gain[freqs <= 48.0].min() == 1.0  # theta to gamma (30-45 Hz) untouched
    assert gain[(np.abs(freqs - 75.0) <= 20.0)].min() == 1.0


def test_choose_removal_from_option_detection_and_rate() -> None:
    off = mains_mod.choose_removal("off", [50.0, 50.0], 500.0)
    assert off.fundamentals == (50.0,) and off.removed == () and off.rfft_gain(1000).min() == 1.0
    assert mains_mod.choose_removal(60.0, [50.0, None], 500.0).fundamentals == (60.0,)
    detected = mains_mod.choose_removal(None, [None, 60.0], 128.0)
    assert (detected.fundamentals, detected.source, detected.frequencies) == ((60.0,), "detected", (60.0,))
    assumed = mains_mod.choose_removal(None, [None, None], 250.0)
    assert assumed.source == "assumed" and assumed.frequencies == (50.0, 60.0, 100.0, 120.0)
    low = mains_mod.choose_removal(60.0, [None, None], 100.0)
    assert low.frequencies == () and "Nyquist" in low.notes[0]


def test_parse_mains_names_the_choices() -> None:
    assert mains_mod.parse_mains("50") == 50.0 and mains_mod.parse_mains("auto") is None
    assert mains_mod.parse_mains("off") == "off"
    with pytest.raises(ValueError, match="50 or 60"):
        mains_mod.parse_mains(55)


def _bursty(rng: np.random.Generator, n: int) -> np.ndarray:
    """On/off line noise over ``n`` epochs: runs of 2-6 epochs (4-12 s of 2-s epochs), plus noise."""
    runs = np.repeat(np.arange(n) % 2, rng.integers(2, 7, n))[:n].astype(float)
    return runs + 0.2 * rng.standard_normal(n)


def test_relation_detects_a_following_series_and_not_an_independent_one() -> None:
    """Synchrony that rises with shared line noise: rho > 0, p < 0.05; an independent series: not.

    Consecutive epochs are autocorrelated (line-noise bursts last several epochs), which makes a
    naive p too small; the effective-n correction must keep the rate of false "follows" near 5 %.
    Over 400 independent pairs of bursty line noise and mildly autocorrelated synchrony (AR(1),
    0.2: real per-epoch gamma PLV has lag-1 autocorrelation -0.15 to 0.21), at most 33 may be
    called related (5 % is 20 expected, 33 is 3 binomial standard deviations, 4.4, above). With
    both series strongly autocorrelated (AR(1), 0.8) the correction is slightly liberal (6.8 %
    measured on 2000 pairs): at most 40 of 400 (10 %).
    """
    rng = np.random.default_rng(3)
    line = _bursty(rng, 60)
    following = mains_mod.line_noise_relation(line, 0.3 + 0.05 * line + 0.02 * rng.standard_normal(60))
    assert following.follows and following.rho > 0.5

    def ar(coefficient: float) -> np.ndarray:
        return signal.lfilter([1.0], [1.0, -coefficient], rng.standard_normal(160))[100:]

    realistic = sum(mains_mod.line_noise_relation(_bursty(rng, 60), ar(0.2)).follows for _ in range(400))
    assert realistic <= 33
    both_smooth = sum(mains_mod.line_noise_relation(ar(0.8), ar(0.8)).follows for _ in range(400))
    assert both_smooth <= 40
    assert mains_mod.line_noise_relation(line[:10], line[:10]).p is None  # too few epochs


def test_line_noise_detected_in_a_128_hz_recording() -> None:
    """The EEGLAB recording's real 60 Hz peak (4 Hz below Nyquist) is found at its 128 Hz."""
    a, _ = _halves()
    quality = classify_channels(a.astype(np.float32), 128.0, None, unit="microvolts")
    assert quality.line_frequency == 60.0
    assert np.nanmax(quality.line_noise_db) > 10.0


# ---------------------------------------------------------------------------- whole quick-check


@pytest.mark.parametrize(("rate", "mains"), [(128, 60.0), (250, 50.0), (256, 60.0), (500, 50.0), (1000, 60.0)])
def test_shared_intermittent_mains_is_not_synchrony(tmp_path: Path, rate: int, mains: float) -> None:
    """No band is called synchronous, no band's PLV z reaches the verdict's 3, and hardly any pair
    is significant family-wise (the max-statistic FWER allows 5 % of files one or more). Without
    the removal, files made the same way (9 burst patterns) give gamma PLV z 3.6-7.4 with 50 Hz at
    250 and 500 Hz; 60 Hz at 128 and 256 Hz hardly reaches gamma (z < 1 either way). wPLI is not asserted: the bursts here switch from
    one sample to the next, and the click at each switch, which no notch removes, gives gamma
    wPLI z up to 3.9 (:mod:`dyadlab.synchrony.mains`)."""
    result = _check(write_dyad(tmp_path / "mains.xdf", rate, mains=mains, seed=rate))
    assert _synchronous(result) == []
    assert _max_z(result) < 3.0
    assert _fwer_pairs(result) <= 2
    assert mains in result["mains"]["fundamental_hz"]
    assert result["mains"]["removed_hz"][0] == mains
    QuickCheckResult.model_validate(result)


def test_without_removal_the_mains_is_withheld_by_its_relation(tmp_path: Path) -> None:
    """With the removal off (``dyadlab check --mains off``), shared mains makes gamma far above
    chance (as in the issue); the relation of per-epoch synchrony to shared line noise keeps it
    out of the verdict, in plain words, in the JSON and on the terminal."""
    from click.testing import CliRunner

    from dyadlab.synchrony.cli import check

    path = write_dyad(tmp_path / "mains.xdf", 500, mains=50.0, seed=500)
    json_out = tmp_path / "out.json"
    outcome = CliRunner().invoke(
        check, [str(path), "--mains", "off", "--surrogates", str(SURROGATES), "--json", str(json_out), "--no-progress"]
    )
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(json_out.read_text())
    assert result["inputs"]["mains"] == "off" and result["mains"]["removed_hz"] == []
    gamma = result["conditions"]["recording"]["gamma"]["plv"]
    assert gamma["z"] >= 3.0  # the unprotected pipeline of the issue
    assert _synchronous(result) == []
    withheld = result["verdict"]["withheld"]
    assert [(d["condition"], d["band"]) for d in withheld] == [("recording", "gamma")]
    assert any("line noise" in line and "recording/gamma" in line for line in result["verdict"]["summary"])
    assert "withheld as shared line noise" in result["summary"]
    # The terminal panel wraps lines between box borders: look for the words.
    assert all(word in outcome.output for word in ("Not counted", "electrical", "interference"))
    QuickCheckResult.model_validate(result)


def test_planted_coupling_is_still_found(tmp_path: Path) -> None:
    """A shared alpha rhythm is found in alpha with the mains removed (auto), with and without
    planted mains; the mains never makes gamma synchronous."""
    for mains in (None, 50.0):
        result = _check(write_dyad(tmp_path / f"coupled-{mains}.xdf", 500, mains=mains, coupled=True, seed=7))
        assert "recording/alpha" in _synchronous(result), result["verdict"]["summary"]
        assert "recording/gamma" not in _synchronous(result)
        assert not result["verdict"]["withheld"]


def test_mains_option_is_checked() -> None:
    with pytest.raises(QuickCheckError, match="50 or 60"):
        run_check(EEGLAB, mains=55, progress=False)


@pytest.mark.parametrize("step", [1, 4])
def test_epoch_line_power_measures_the_mains_in_each_epoch(step: int) -> None:
    """A 50 uV, 50 Hz sinusoid on in epochs 2-5 of ten 2-s epochs at 500 Hz, over white noise of
    1 uV: power 50^2 / 2 = 1250 uV^2 in the epochs inside the burst (within 1 %: the noise's power
    within 1 Hz is 1 x 2 / 250 = 0.008 uV^2); the first and last epoch of the burst lose the part
    of the switching edges outside the 2-Hz band (measured 3.6 %; allowed 6 %); epochs at least
    one epoch away from the burst hold below 1 % of it."""
    rate, n_epoch = 500.0, 1000
    rng = np.random.default_rng(0)
    t = np.arange(10 * n_epoch) / rate
    on = (t >= 4.0) & (t < 12.0)
    data = rng.standard_normal((3, t.size)) + 50.0 * np.cos(2 * np.pi * 50.0 * t + 0.4) * on
    n_fft = data.shape[1]
    removal = mains_mod.choose_removal(50.0, [None, None], rate)
    power = mains_mod.epoch_line_power(
        np.fft.rfft(data, axis=1), n_fft, removal, np.arange(10) * n_epoch, n_epoch, step=step
    )
    np.testing.assert_allclose(power[3:5], 1250.0, rtol=0.01)
    np.testing.assert_allclose(power[[2, 5]], 1250.0, rtol=0.06)
    assert power[[0, 7, 8, 9]].max() < 0.01 * 1250.0


def _aligned_with_mains(rate: float, seconds: float, mains_uv: float) -> tuple[object, list]:
    from dyadlab.synchrony import segments as seg

    rng = np.random.default_rng(5)
    a, b = (_resampled(half[:4, : int(seconds * 128)], int(rate)) for half in _halves())
    t = np.arange(a.shape[1]) / rate
    hum = mains_uv * np.cos(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi, (4, 1)))
    aligned = seg.AlignedDyad(
        rate, 0.0, (a + hum).astype(np.float32), (b + hum).astype(np.float32), np.ones(a.shape[1], dtype=bool)
    )
    return aligned, [seg.Block("c", 5.0, seconds - 5.0, "c-1")]


def test_removal_composes_with_the_band_filters_on_both_paths() -> None:
    """Gamma epochs of real EEG + 50 uV of 50 Hz with the mains removed equal those of the EEG alone
    with the mains removed within 1e-4 of their rms (measured 2e-5: the mains is gone), and those of
    the EEG without any removal within 2 % (measured 1.1 %: the EEG's own 48-52 Hz, which gamma's
    filter passes at -31 dB and below). Without the removal the mains raises gamma's rms by more
    than 5 % (and has an epoch rejected). The band signals made from the screening's kept spectra
    and from fresh ones agree to single precision."""
    from dyadlab.synchrony import segments as seg

    rate, bands = 500.0, {"alpha": (8.0, 12.0), "gamma": (30.0, 45.0)}
    used = np.ones(4, dtype=bool)
    removal = mains_mod.choose_removal(50.0, [None, None], rate)

    def gamma(mains_uv: float, mains: mains_mod.MainsRemoval | None, fresh: bool = False) -> np.ndarray:
        aligned, blocks = _aligned_with_mains(rate, 60.0, mains_uv)
        plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used, bands=bands, mains=mains)
        if fresh:
            for plan in plans:
                plan.spectra.clear()
        return seg.condition_epochs(aligned, plans, keep, 2.0, bands, used, used, mains=mains)["gamma"].za

    def rms(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.abs(values) ** 2)))

    clean = gamma(0.0, None)
    removed = gamma(50.0, removal)
    assert rms(removed - gamma(0.0, removal)) < 1e-4 * rms(clean)
    assert rms(removed - clean) < 0.02 * rms(clean)
    assert rms(gamma(50.0, None)) > 1.05 * rms(clean)
    np.testing.assert_allclose(gamma(50.0, removal, fresh=True), removed, atol=1e-5 * rms(clean))


def test_filter_margins_include_the_notch_ringing() -> None:
    """The notch rings where a band passes the mains, and the margins say so (the numbers in
    :func:`dyadlab.synchrony.segments.filter_margin`'s docstring, at 500 Hz with 50 Hz removed):
    a 35-55 Hz band rings 0.84 s instead of 0.19 s; the default bands' margin stays theta's."""
    from dyadlab.synchrony import segments as seg

    notch = mains_mod.harmonics(50.0, 500.0)
    straddling = {"hi": (35.0, 55.0)}
    assert seg.filter_margin(straddling, 500.0) == pytest.approx(0.19, abs=0.01)
    assert seg.filter_margin(straddling, 500.0, notch=notch) == pytest.approx(0.84, abs=0.01)
    assert seg.rejection_margin(500.0, 45.0, {"gamma": (30.0, 45.0)}, notch=notch) == pytest.approx(0.44, abs=0.01)
    assert seg.rejection_margin(500.0, 45.0, notch=notch) == seg.rejection_margin(500.0, 45.0)
