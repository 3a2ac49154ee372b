"""The live sliding-window estimator: same values as the quick-check's functions on the same
windows, a chance level that holds on independent real EEG, a rise in the simulator's coupled
condition only, and a time grid that pairs simultaneous samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from dyadlab.acquisition.simulator import simulate_dyad
from dyadlab.synchrony.live import LIVE_METRICS, LiveSettings, SlidingSynchrony, StreamAligner, channel_labels
from dyadlab.synchrony.metrics import inter_brain_connectivity
from dyadlab.synchrony.segments import (
    DEFAULT_BANDS,
    AlignedDyad,
    Block,
    filter_margin,
    iter_condition_epochs,
    plan_epochs,
)
from tests.synchrony.calibration import eeglab_recording

#: Live and quick-check values of one window may differ by this much (PLV and envelope correlation).
#: Derivation: the live buffer ends ``settle_s`` = filter_margin after (and begins as long before) the window, where
#: the band filters' impulse-response envelope has fallen below 1 % of its peak; the truncated tail
#: moves each band sample by at most ~1 % of the band's amplitude, which moves a unit phase vector
#: (PLV) or a centred envelope (envelope correlation, a ratio of sums of products of two such
#: samples) by at most ~2 x 1 %. Measured: 0.003 at most.
AGREEMENT_TOLERANCE = 0.02


def offline_window_values(
    aligned: AlignedDyad, ends: Sequence[float], window_s: float, bands: dict[str, tuple[float, float]] | None = None
) -> dict[str, np.ndarray]:
    """Mean-over-pairs PLV and envelope correlation of the windows ``[end - window_s, end)`` (LSL
    times on ``aligned``'s grid), by the quick-check's functions: one block per window, planned
    with the bands' filter margin, filtered with 3 s of the recording around it, epoch values
    from :func:`inter_brain_connectivity`. NaN where the quick-check would not keep the window.
    """
    bands = dict(DEFAULT_BANDS) if bands is None else bands
    half_sample = 0.5 / aligned.rate
    blocks = [Block("live", end - window_s, end + half_sample, f"window-{i}") for i, end in enumerate(ends)]
    plans = plan_epochs(aligned, blocks, window_s, margin=filter_margin(bands, aligned.rate))
    keep = [plan.valid for plan in plans]
    kept = np.array([plan.starts.size == 1 and bool(plan.valid[0]) for plan in plans])
    channels_a = np.ones(aligned.a.shape[0], bool)
    channels_b = np.ones(aligned.b.shape[0], bool)
    out = {}
    for band, epochs in iter_condition_epochs(aligned, plans, keep, window_s, bands, channels_a, channels_b):
        per_epoch = inter_brain_connectivity(epochs.za, epochs.zb, LIVE_METRICS, epochs_average=False)
        for metric, values in per_epoch.items():
            column = np.full(len(ends), np.nan)
            column[kept] = np.nanmean(values, axis=(1, 2))
            out[f"{metric}_{band}"] = column
    return out


def _feed(estimator: SlidingSynchrony, a: np.ndarray, b: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Push the arrays in chunks (as an inlet delivers them); return window ends (samples) and values."""
    windows = []
    for start in range(0, a.shape[1], chunk):
        windows += estimator.push(a[:, start : start + chunk], b[:, start : start + chunk])
    return np.array([w.end for w in windows]), np.array([w.values for w in windows])


@pytest.fixture(scope="module")
def coupled_dyad() -> tuple[np.ndarray, np.ndarray, float]:
    """40 s of the simulator: 20 s rest, then 20 s of cooperation (alpha coupled, c = 0.7)."""
    dyad = simulate_dyad(40.0, [("rest", 20.0), ("cooperation", 20.0)], seed=3)
    return dyad.a, dyad.b, 250.0


def test_live_values_are_the_quickchecks_for_the_same_windows(coupled_dyad) -> None:
    a, b, rate = coupled_dyad
    estimator = SlidingSynchrony(rate)
    ends, values = _feed(estimator, a, b, chunk=37)  # chunks that do not divide the step
    assert estimator.labels == channel_labels(list(DEFAULT_BANDS))
    assert np.all(np.diff(ends) == round(0.5 * rate)), "one window per step"
    aligned = AlignedDyad(rate=rate, start=0.0, a=a, b=b, valid=np.ones(a.shape[1], bool))
    offline = offline_window_values(aligned, ends / rate, 2.0)
    worst = {}
    for label, expected in offline.items():
        live = values[:, estimator.labels.index(label)]
        assert np.all(np.isfinite(live)) and np.all(np.isfinite(expected))
        worst[label] = float(np.max(np.abs(live - expected)))
    assert max(worst.values()) < AGREEMENT_TOLERANCE, worst

    # The tolerance can fail: filtering only the past (settle_s = 0, the causal limit) leaves the
    # filters' ringing in the window's last samples, and the values leave the tolerance.
    causal = SlidingSynchrony(rate, LiveSettings(settle_s=0.0))
    causal_ends, causal_values = _feed(causal, a, b, chunk=37)
    offline = offline_window_values(aligned, causal_ends / rate, 2.0)
    causal_worst = max(
        float(np.nanmax(np.abs(causal_values[:, causal.labels.index(label)] - expected)))
        for label, expected in offline.items()
    )
    assert causal_worst > AGREEMENT_TOLERANCE, causal_worst


def test_live_plv_rises_in_the_coupled_condition_only(coupled_dyad) -> None:
    a, b, rate = coupled_dyad
    estimator = SlidingSynchrony(rate)
    ends, values = _feed(estimator, a, b, chunk=50)
    ends_s = ends / rate
    rest = ends_s <= 20.0
    coupled = ends_s >= 22.2  # windows wholly inside cooperation (20 s + 2-s window + 0.2-s ramp)
    assert rest.sum() >= 20 and coupled.sum() >= 30

    def column(label: str) -> np.ndarray:
        return values[:, estimator.labels.index(label)]

    # Per-window values scatter by ~0.07 (PLV, theta/alpha); ~20 s of non-overlapping 2-s windows per
    # condition make the SE of a condition mean ~0.07 / sqrt(10) = 0.022 and of a difference ~0.03.
    # The coupled band (alpha, c = 0.7) rises by ~0.1 (above 0.05: 1.7 SE below that); the
    # uncoupled bands move by less than 0.06 (2 SE).
    rise = {
        band: np.mean(column(f"plv_{band}")[coupled]) - np.mean(column(f"plv_{band}")[rest]) for band in DEFAULT_BANDS
    }
    assert rise["alpha"] > 0.05, rise
    assert all(abs(rise[band]) < 0.06 for band in ("theta", "beta", "gamma")), rise
    # Against chance: the coupled band passes its 95 % chance level far more often in cooperation
    # than at rest (where it should do so in ~5 % of windows).
    above = column("plv_alpha") > column("plv_alpha_chance")
    has_chance = np.isfinite(column("plv_alpha_chance"))
    at_rest = above[rest & has_chance].mean()
    cooperating = above[coupled].mean()
    assert cooperating > at_rest + 0.15 and at_rest <= 0.2, (at_rest, cooperating)


def test_chance_level_holds_on_independent_real_eeg() -> None:
    """Two halves of one real recording are two independent "brains": each statistic should
    pass its 95 % chance level in ~5 % of windows."""
    recording = eeglab_recording()
    data = recording.data.T[::2].astype(np.float64)  # 16 of the 32 channels, spread over the head: 3x faster
    half = data.shape[1] // 2
    a, b = data[:, :half], data[:, half : 2 * half]
    estimator = SlidingSynchrony(recording.rate)
    _, values = _feed(estimator, a, b, chunk=64)
    exceed = []
    for label in estimator.labels[::2]:
        value, chance = values[:, estimator.labels.index(label)], values[:, estimator.labels.index(label) + 1]
        has = np.isfinite(chance)
        exceed.append(np.mean(value[has] > chance[has]))
    rate = float(np.mean(exceed))
    # Independent evidence: ~119 s / 2-s windows = 59 non-overlapping windows per statistic, 8
    # statistics, counted as 4 independent ones (PLV and envelope correlation of a band move
    # together): n ~ 240, binomial SD sqrt(0.05 x 0.95 / 240) = 0.014; 3 SD either side.
    assert 0.05 - 3 * 0.014 <= rate <= 0.05 + 3 * 0.014, dict(zip(estimator.labels[::2], exceed))


def test_aligner_pairs_simultaneous_samples_and_marks_gaps() -> None:
    rate = 100.0
    rng = np.random.default_rng(1)
    # B starts 0.237 s after A, both jitter by up to 1 ms, and B loses 0.1 s (10 samples).
    times_a = 10.0 + np.arange(500) / rate + rng.uniform(-1e-3, 1e-3, 500)
    times_b = 10.237 + np.arange(500) / rate + rng.uniform(-1e-3, 1e-3, 500)
    lost = (times_b > 12.0) & (times_b < 12.1)
    times_b = times_b[~lost]
    aligner = StreamAligner(rate)
    chunks = []
    for start in range(0, 500, 30):  # interleaved chunks, as two inlets deliver them
        for participant, times in ((0, times_a), (1, times_b)):
            piece = times[start : start + 30]
            chunk = aligner.push(participant, piece[None, :], piece)  # each sample's value: its own time
            if chunk is not None:
                chunks.append(chunk)
    a = np.concatenate([c.a for c in chunks], axis=1)[0]
    b = np.concatenate([c.b for c in chunks], axis=1)[0]
    grid = chunks[0].start + np.arange(a.size) / rate
    assert chunks[0].start == pytest.approx(times_b[0])
    assert np.all(np.diff([c.start for c in chunks]) > 0)
    good = np.isfinite(a) & np.isfinite(b)
    # Nearest samples: within half a period (plus the jitter) of the grid, both participants.
    assert np.max(np.abs(a[good] - grid[good])) <= 0.5 / rate + 1e-3
    assert np.max(np.abs(b[good] - grid[good])) <= 0.5 / rate + 1e-3
    gap = (grid > 12.0 + 0.5 / rate + 1e-3) & (grid < 12.1 - 0.5 / rate - 1e-3)
    assert np.all(np.isnan(b[gap])) and gap.sum() >= 8
    assert np.sum(~good) <= 11  # the gap only


def test_a_window_with_a_gap_is_nan_and_later_windows_recover(coupled_dyad) -> None:
    a, b, rate = coupled_dyad
    a = a[:, : int(12 * rate)].copy()
    b = b[:, : int(12 * rate)].copy()
    b[:, int(6 * rate) : int(6 * rate) + 5] = np.nan
    estimator = SlidingSynchrony(rate)
    ends, values = _feed(estimator, a, b, chunk=25)
    value = values[:, estimator.labels.index("plv_theta")]
    # A window is filtered on [end - window - margin, end + settle): NaN exactly when that holds the gap.
    first, stop = int(6 * rate), int(6 * rate) + 5
    touched = (ends + estimator.n_settle > first) & (ends - estimator.n_window - estimator.n_before < stop)
    assert touched.sum() >= 8 and np.all(np.isnan(value[touched])) and np.all(np.isfinite(value[~touched]))


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="history_s"):
        LiveSettings(window_s=10.0, history_s=5.0)
    with pytest.raises(ValueError, match="step_s"):
        LiveSettings(step_s=0.0)
    with pytest.raises(ValueError, match="0.45 x the sampling rate"):
        SlidingSynchrony(80.0)  # gamma 30-45 Hz does not fit 80 Hz data


def test_aligner_goes_on_without_a_stream_that_stopped() -> None:
    """A stream that stops must not hold the other's samples forever: the grid follows the live
    stream ``stall_s`` behind it, with NaN for the stopped one."""
    rate, stall_s = 100.0, 2.0
    times = 5.0 + np.arange(1000) / rate  # 10 s
    aligner = StreamAligner(rate, stall_s=stall_s)
    emitted = []
    for start in range(0, 1000, 50):
        piece = times[start : start + 50]
        for participant in (0, 1):
            if participant == 1 and piece[0] >= 8.0:
                continue  # B stops at 8 s
            chunk = aligner.push(participant, piece[None, :], piece)
            if chunk is not None:
                emitted.append(chunk)
    b = np.concatenate([c.b for c in emitted], axis=1)[0]
    grid = emitted[0].start + np.arange(b.size) / rate
    assert grid[-1] == pytest.approx(times[-1] - stall_s, abs=1.0 / rate)  # followed A, stall_s behind
    assert np.all(np.isfinite(b[grid < 8.0 - 0.5 / rate])) and np.all(np.isnan(b[grid > 8.0]))
