"""Known-answer and reference tests of the inter-brain synchrony metrics.

Three independent checks of every metric: (1) a straightforward loop implementation of the
published formulas written here, (2) HyPyP 0.6.2's ``compute_sync`` itself (the inter-brain
block of its 2C x 2C output) to 1e-9, (3) analytic and simulated known answers (von Mises
phase differences, a lag sweep, a noisy Kuramoto pair).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import scipy.special

from dyadlab.synchrony import metrics
from dyadlab.synchrony.metrics import (
    METRICS,
    SUPPORTED_METRICS,
    AllPairs,
    EpochTerms,
    PairList,
    analytic_signal,
    band_connectivity,
    connectivity_from_terms,
    inter_brain_connectivity,
    pairing_connectivity,
)

SFREQ = 256.0


def band_limited_pair(rng, n_epochs=6, n_channels_a=4, n_channels_b=3, n_times=200, coupling=0.6):
    """Analytic signals of two participants; the first two channels of B share A's signal."""
    n_total = n_epochs * n_times + 400
    b, a = scipy.signal.butter(4, [8, 12], btype="bandpass", fs=SFREQ)
    xa = scipy.signal.filtfilt(b, a, rng.standard_normal((n_channels_a, n_total)))
    xb = scipy.signal.filtfilt(b, a, rng.standard_normal((n_channels_b, n_total)))
    xb[:2] = coupling * np.roll(xa[:2], 3, axis=-1) + (1 - coupling) * xb[:2]
    za, zb = analytic_signal(xa)[:, 200:-200], analytic_signal(xb)[:, 200:-200]

    def epochs(z):
        return z.reshape(z.shape[0], n_epochs, n_times).transpose(1, 0, 2)

    return epochs(za), epochs(zb)


# --------------------------------------------------------------------------------------
# (1) loop reference: the formulas, one channel pair and one epoch at a time
# --------------------------------------------------------------------------------------


def _pearson(x, y):
    x = x - x.mean()
    y = y - y.mean()
    return np.sum(x * y) / np.sqrt(np.sum(x**2) * np.sum(y**2))


def reference_value(metric: str, x: np.ndarray, y: np.ndarray) -> float:
    """One epoch, one channel pair, straight from the definitions (HyPyP 0.6.2 semantics)."""
    n = x.size
    px, py = np.angle(x), np.angle(y)
    if metric == "plv":
        return abs(np.sum(np.exp(1j * (px - py)))) / n
    if metric == "ccorr":
        mx = np.arctan2(np.mean(np.sin(px)), np.mean(np.cos(px)))
        my = np.arctan2(np.mean(np.sin(py)), np.mean(np.cos(py)))
        sx, sy = np.sin(px - mx), np.sin(py - my)
        return abs(np.sum(sx * sy)) / np.sqrt(np.sum(sx**2) * np.sum(sy**2))
    if metric == "accorr":
        r_minus = np.sum(np.exp(1j * (px - py)))
        r_plus = np.sum(np.exp(1j * (px + py)))
        d, s = np.angle(r_minus), np.angle(r_plus)
        k = -(d - s) / 2
        m = d + k
        den = 2 * np.sqrt(np.sum(np.sin(px - m) ** 2) * np.sum(np.sin(py - k) ** 2))
        return (abs(r_minus) - abs(r_plus)) / (den if den != 0 else 1.0)
    if metric in ("coh", "imcoh"):
        cross = np.sum(x * np.conj(y))
        norm = np.sqrt(np.sum(abs(x) ** 2) * np.sum(abs(y) ** 2))
        return (abs(cross) if metric == "coh" else abs(cross.imag)) / norm
    if metric == "envcorr":
        return _pearson(abs(x), abs(y))
    if metric == "powcorr":
        return _pearson(abs(x) ** 2, abs(y) ** 2)
    im = np.imag(x * np.conj(y))
    if metric == "pli":
        return abs(np.mean(np.sign(im)))
    if metric == "wpli":
        den = np.mean(abs(im))
        return abs(np.mean(im)) / den if den != 0 else 0.0
    raise AssertionError(metric)


def reference_connectivity(metric, za, zb):
    out = np.empty((za.shape[0], za.shape[1], zb.shape[1]))
    for e in range(za.shape[0]):
        for a in range(za.shape[1]):
            for b in range(zb.shape[1]):
                out[e, a, b] = reference_value(metric, za[e, a], zb[e, b])
    return out


def test_every_metric_equals_the_loop_reference_per_epoch_and_averaged():
    za, zb = band_limited_pair(np.random.default_rng(1))
    per_epoch = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False)
    averaged = inter_brain_connectivity(za, zb, SUPPORTED_METRICS)
    for metric in SUPPORTED_METRICS:
        expected = reference_connectivity(metric, za, zb)
        assert per_epoch[metric].shape == (6, 4, 3), metric
        np.testing.assert_allclose(per_epoch[metric], expected, rtol=0, atol=1e-12, err_msg=metric)
        np.testing.assert_allclose(averaged[metric], expected.mean(axis=0), rtol=0, atol=1e-12, err_msg=metric)
    # The coupled channels are visibly coupled, the others are not: the data is informative.
    assert averaged["plv"][:2, :2].diagonal().min() > 0.8
    assert averaged["plv"][2:, 2:].max() < 0.6


def test_default_metric_set():
    assert METRICS == ("plv", "accorr", "ccorr", "coh", "imcoh", "envcorr", "pli", "wpli")
    assert set(inter_brain_connectivity(*band_limited_pair(np.random.default_rng(2)))) == set(METRICS)


# --------------------------------------------------------------------------------------
# (2) HyPyP itself
# --------------------------------------------------------------------------------------


def test_identical_to_hypyp_compute_sync_inter_brain_block():
    analyses = pytest.importorskip("hypyp.analyses")
    za, zb = band_limited_pair(np.random.default_rng(3), n_channels_a=4, n_channels_b=4)
    n_channels = za.shape[1]
    # HyPyP: (2, n_epochs, n_channels, n_freq, n_times) -> (n_freq, 2C, 2C)
    complex_signal = np.stack([za, zb])[:, :, :, None, :]
    ours = inter_brain_connectivity(za, zb, SUPPORTED_METRICS)
    ours_epochs = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False)
    for metric in SUPPORTED_METRICS:
        hypyp_con = analyses.compute_sync(complex_signal, metric)
        assert hypyp_con.shape == (1, 2 * n_channels, 2 * n_channels), metric
        np.testing.assert_allclose(
            ours[metric], hypyp_con[0, :n_channels, n_channels:], rtol=0, atol=1e-9, err_msg=metric
        )
        hypyp_epochs = analyses.compute_sync(complex_signal, metric, epochs_average=False)
        np.testing.assert_allclose(
            ours_epochs[metric], hypyp_epochs[0, :, :n_channels, n_channels:], rtol=0, atol=1e-9, err_msg=metric
        )


# --------------------------------------------------------------------------------------
# (3) known answers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_von_mises_phase_differences_give_the_analytic_plv_and_imcoh(kappa):
    """Delta-phi ~ vonMises(mu, kappa): PLV -> I1/I0(kappa), |imCoh| -> |sin mu| I1/I0(kappa)."""
    rng = np.random.default_rng(int(kappa * 10))
    mu, n_epochs, n_times = np.pi / 3, 60, 512
    phase_a = rng.uniform(-np.pi, np.pi, (n_epochs, 1, n_times))
    phase_b = phase_a - rng.vonmises(mu, kappa, (n_epochs, 1, n_times))
    values = inter_brain_connectivity(np.exp(1j * phase_a), np.exp(1j * phase_b), ["plv", "imcoh"])
    resultant = scipy.special.i1(kappa) / scipy.special.i0(kappa)
    # Per-epoch |mean| over 512 samples is biased up by about (1 - A^2) / (2 n A) (<0.004 here).
    assert values["plv"][0, 0] == pytest.approx(resultant, abs=0.012)
    assert values["imcoh"][0, 0] == pytest.approx(abs(np.sin(mu)) * resultant, abs=0.012)


def test_uniform_phase_differences_give_the_chance_level():
    rng = np.random.default_rng(7)
    n_times = 512
    za = np.exp(1j * rng.uniform(-np.pi, np.pi, (60, 3, n_times)))
    zb = np.exp(1j * rng.uniform(-np.pi, np.pi, (60, 3, n_times)))
    plv = inter_brain_connectivity(za, zb, ["plv"])["plv"]
    assert plv.mean() == pytest.approx(np.sqrt(np.pi / (4 * n_times)), rel=0.1)


def locked_pair(lag, n_epochs=20, n_times=512):
    """Perfectly locked 10-Hz oscillations, B delayed by ``lag`` radians (Zimmermann et al. 2024).

    Each 2-s epoch holds a whole number of cycles, so each signal's circular mean direction
    within an epoch is ill-defined -- exactly the situation in which classic ccorr's
    centring fluctuates.
    """
    t = np.arange(n_epochs * n_times) / SFREQ
    za, zb = analytic_signal(np.stack([np.cos(2 * np.pi * 10 * t), np.cos(2 * np.pi * 10 * t - lag)]))
    return za.reshape(n_epochs, 1, n_times), zb.reshape(n_epochs, 1, n_times)


def test_lag_sweep_plv_and_accorr_are_flat_ccorr_depends_on_the_lag():
    lags = np.linspace(0, np.pi / 2, 5)
    values = {m: [] for m in ("plv", "accorr", "ccorr", "wpli", "imcoh")}
    for lag in lags:
        za, zb = locked_pair(lag)
        result = inter_brain_connectivity(za, zb, list(values))
        for m, series in values.items():
            series.append(result[m][0, 0])
    values = {m: np.array(v) for m, v in values.items()}
    assert values["plv"].min() > 0.95 and np.ptp(values["plv"]) < 0.03
    assert values["accorr"].min() > 0.95 and np.ptp(values["accorr"]) < 0.03
    assert values["ccorr"][0] > 0.95 and values["ccorr"].min() < 0.75, values["ccorr"]
    # Zero lag is invisible to the lag-based metrics; a quarter cycle is fully visible.
    assert values["imcoh"][0] < 0.05 and values["imcoh"][-1] > 0.95
    assert values["wpli"][-1] > 0.95


def kuramoto_pair(coupling, rng, n_epochs=30, n_times=512, noise=2.0):
    """Two noisy phase oscillators (9.75 and 10.25 Hz) coupled with strength ``coupling``."""
    dt = 1 / SFREQ
    n = n_epochs * n_times
    omega = 2 * np.pi * np.array([9.75, 10.25])
    kicks = rng.normal(0, noise * np.sqrt(dt), (n, 2))
    theta = np.empty((n, 2))
    theta[0] = rng.uniform(-np.pi, np.pi, 2)
    for k in range(1, n):
        d = theta[k - 1, 1] - theta[k - 1, 0]
        pull = coupling * np.sin(np.array([d, -d]))
        theta[k] = theta[k - 1] + (omega + pull) * dt + kicks[k]
    z = np.exp(1j * theta.T).reshape(2, n_epochs, 1, n_times)
    return z[0], z[1]


def test_noisy_kuramoto_synchrony_rises_monotonically_with_coupling():
    couplings = [0.0, 2.0, 5.0, 10.0, 20.0]
    plv, accorr = [], []
    for coupling in couplings:
        za, zb = kuramoto_pair(coupling, np.random.default_rng(5))
        result = inter_brain_connectivity(za, zb, ["plv", "accorr"])
        plv.append(result["plv"][0, 0])
        accorr.append(result["accorr"][0, 0])
    assert np.all(np.diff(plv) > 0), plv
    assert np.all(np.diff(accorr) > 0), accorr
    assert plv[-1] > 0.9 and plv[0] < 0.5


# --------------------------------------------------------------------------------------
# edge cases, internals, errors
# --------------------------------------------------------------------------------------


def test_identical_signals_plv_one_and_lag_metrics_zero():
    za, _ = band_limited_pair(np.random.default_rng(4))
    result = inter_brain_connectivity(za, za.copy(), SUPPORTED_METRICS)
    for m in ("plv", "coh", "accorr", "ccorr", "envcorr", "powcorr"):
        np.testing.assert_allclose(np.diag(result[m]), 1.0, atol=1e-9, err_msg=m)
    # Im(x conj x) is exactly 0 at every sample: PLI 0 and wPLI 0/0 -> 0 (as HyPyP).
    np.testing.assert_array_equal(np.diag(result["pli"]), 0.0)
    np.testing.assert_array_equal(np.diag(result["wpli"]), 0.0)


def test_flat_channel_gives_nan_for_its_pairs_only():
    za, zb = band_limited_pair(np.random.default_rng(6))
    za = za.copy()
    za[:, 1] = 0
    with np.errstate(all="raise"):  # no floating-point warnings leak out
        result = inter_brain_connectivity(za, zb, ["plv", "coh", "envcorr", "ccorr", "accorr"])
    for m in ("plv", "coh", "envcorr", "ccorr"):
        assert np.all(np.isnan(result[m][1])), m
        assert np.all(np.isfinite(result[m][[0, 2, 3]])), m


def test_numba_and_numpy_lag_kernels_agree():
    pytest.importorskip("numba")
    za, zb = band_limited_pair(np.random.default_rng(8))
    ta, tb = EpochTerms.from_signal(za, ["pli"]), EpochTerms.from_signal(zb, ["pli"])
    ea, eb = np.array([0, 1, 5, 5]), np.array([0, 3, 2, 5])
    args = (ta.signal_re, ta.signal_im, tb.signal_re, tb.signal_im, ea, eb)
    sign_np, abs_np = metrics._lag_sums_numpy(*args)
    sign_nb, abs_nb = metrics._lag_sums_numba(*args)
    np.testing.assert_array_equal(sign_np, sign_nb)
    np.testing.assert_allclose(abs_np, abs_nb, rtol=1e-12)


def test_numpy_fallback_path_equals_reference(monkeypatch):
    monkeypatch.setattr(metrics, "_numba_available", lambda: False)
    monkeypatch.setattr(metrics, "_LAG_BLOCK_ELEMENTS", 500)  # blocks of 2 A channels, one ragged
    za, zb = band_limited_pair(np.random.default_rng(9))
    result = inter_brain_connectivity(za, zb, ["pli", "wpli"], epochs_average=False)
    for m in ("pli", "wpli"):
        np.testing.assert_allclose(result[m], reference_connectivity(m, za, zb), atol=1e-12, err_msg=m)


def test_epoch_chunks_give_the_values_of_all_epochs_at_once(monkeypatch):
    """inter_brain_connectivity makes the per-channel terms chunk_epochs epochs at a time (bounded
    memory): chunks of EPOCH_CHUNK give the values of one chunk bit for bit, other chunks the same
    to single-precision rounding, and the PLI/wPLI kernel is the one the whole job calls for."""
    rng = np.random.default_rng(12)
    n_epochs = 2 * metrics.EPOCH_CHUNK + 13
    za = (rng.standard_normal((n_epochs, 3, 40)) + 1j * rng.standard_normal((n_epochs, 3, 40))).astype(np.complex64)
    zb = (rng.standard_normal((n_epochs, 2, 40)) + 1j * rng.standard_normal((n_epochs, 2, 40))).astype(np.complex64)
    za[5, 1] = 0  # a flat channel in one epoch: NaN for its pairs
    monkeypatch.setattr(metrics, "_NUMBA_MIN_ELEMENTS", n_epochs * 3 * 2 * 40)  # the whole job, not a chunk
    whole = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False, chunk_epochs=n_epochs)
    chunked = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False)
    ragged = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False, chunk_epochs=7)
    for m in SUPPORTED_METRICS:
        assert chunked[m].shape == (n_epochs, 3, 2) and chunked[m].tobytes() == whole[m].tobytes(), m
        np.testing.assert_allclose(ragged[m], whole[m], rtol=0, atol=1e-6, err_msg=m)
    with pytest.raises(ValueError, match="chunk_epochs"):
        inter_brain_connectivity(za, zb, chunk_epochs=0)


def test_all_pairs_block_matches_explicit_pairs():
    za, zb = band_limited_pair(np.random.default_rng(10))
    block = np.array([1, 4])
    ta, tb = EpochTerms.from_signal(za, SUPPORTED_METRICS), EpochTerms.from_signal(zb, SUPPORTED_METRICS)
    values = connectivity_from_terms(ta, tb, AllPairs(block, zb.shape[0]), SUPPORTED_METRICS)
    ea, eb = np.repeat(block, zb.shape[0]), np.tile(np.arange(zb.shape[0]), block.size)
    explicit = pairing_connectivity(za, zb, ea, eb, SUPPORTED_METRICS)
    for m in SUPPORTED_METRICS:
        assert values[m].shape == (2, 6, 3, 4)  # (A epoch in block, B epoch, B channel, A channel)
        np.testing.assert_allclose(values[m].swapaxes(2, 3).reshape(-1, 4, 3), explicit[m], atol=1e-12, err_msg=m)
    # Pair list mode with a chunk boundary inside the list.
    chunked = connectivity_from_terms(ta, tb, PairList(ea, eb), SUPPORTED_METRICS)
    for m in SUPPORTED_METRICS:
        np.testing.assert_allclose(chunked[m], explicit[m], atol=0, err_msg=m)


def test_analytic_signal_is_scipy_hilbert():
    x = np.random.default_rng(0).standard_normal((2, 3, 100))
    np.testing.assert_allclose(analytic_signal(x), scipy.signal.hilbert(x, axis=-1))
    with pytest.raises(ValueError, match="real signal"):
        analytic_signal(x + 0j)


def test_band_connectivity_runs_every_band():
    za, zb = band_limited_pair(np.random.default_rng(12))
    result = band_connectivity({"alpha": za, "beta": za}, {"alpha": zb, "beta": zb}, ["plv"])
    assert set(result) == {"alpha", "beta"}
    np.testing.assert_array_equal(result["alpha"]["plv"], inter_brain_connectivity(za, zb, ["plv"])["plv"])
    with pytest.raises(ValueError, match="different bands"):
        band_connectivity({"alpha": za}, {"beta": zb})


@pytest.mark.parametrize(
    ("za", "zb", "metrics_", "message"),
    [
        (np.ones((2, 3, 10)), np.ones((2, 3, 10)) + 0j, METRICS, "complex analytic signal"),
        (np.ones((3, 10)) + 0j, np.ones((2, 3, 10)) + 0j, METRICS, "n_epochs, n_channels, n_times"),
        (np.ones((2, 3, 10)) + 0j, np.ones((3, 3, 10)) + 0j, METRICS, "same epochs"),
        (np.ones((2, 3, 10)) + 0j, np.ones((2, 3, 12)) + 0j, METRICS, "same epoch length"),
        (np.full((2, 3, 10), np.nan + 0j), np.ones((2, 3, 10)) + 0j, METRICS, "NaN"),
        (np.ones((2, 3, 10)) + 0j, np.ones((2, 3, 10)) + 0j, ["plv", "granger"], "unknown synchrony metric"),
        (np.ones((2, 3, 10)) + 0j, np.ones((2, 3, 10)) + 0j, [], "no metric requested"),
    ],
)
def test_bad_input_has_a_clear_error(za, zb, metrics_, message):
    with pytest.raises(ValueError, match=message):
        inter_brain_connectivity(za, zb, metrics_)
