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
    validate_pair,
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
    # Blocks of 2 A channels (2 x 3 B channels x 200 samples), the last one ragged (5 = 2 + 2 + 1).
    monkeypatch.setattr(metrics, "_LAG_BLOCK_ELEMENTS", 2 * 3 * 200)
    za, zb = band_limited_pair(np.random.default_rng(9), n_channels_a=5)
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
    per_epoch = band_connectivity({"alpha": za}, {"alpha": zb}, ["plv"], epochs_average=False)
    np.testing.assert_array_equal(
        per_epoch["alpha"]["plv"], inter_brain_connectivity(za, zb, ["plv"], epochs_average=False)["plv"]
    )
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


def test_pairing_connectivity_pairs_epochs_of_participants_with_different_epoch_counts():
    """Surrogate pairings need not be simultaneous: A's 5 epochs with B's 7, any pairs (repeats
    included), each equal to the loop reference of that pair."""
    rng = np.random.default_rng(13)
    za = band_limited_pair(rng, n_epochs=5)[0]
    zb = band_limited_pair(rng, n_epochs=7)[1]
    epochs_a, epochs_b = np.array([0, 4, 4, 2]), np.array([6, 0, 6, 3])
    values = pairing_connectivity(za, zb, epochs_a, epochs_b, SUPPORTED_METRICS)
    for metric in SUPPORTED_METRICS:
        expected = reference_connectivity(metric, za[epochs_a], zb[epochs_b])
        np.testing.assert_allclose(values[metric], expected, rtol=0, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize(
    ("epochs_a", "epochs_b", "error", "message"),
    [
        ([0, 1], [0], ValueError, "epochs_a and epochs_b must have the same length, got 2 and 1"),
        ([0, -1], [0, 1], IndexError, "epochs_a has an index outside 0..4"),
        ([0, 5], [0, 1], IndexError, "epochs_a has an index outside 0..4"),
        ([0, 1], [-1, 1], IndexError, "epochs_b has an index outside 0..6"),
        ([0, 1], [0, 7], IndexError, "epochs_b has an index outside 0..6"),
    ],
)
def test_pairing_connectivity_rejects_pairs_outside_the_epochs(epochs_a, epochs_b, error, message):
    """Indices one past either end (never wrapped around as NumPy's -1 would be) are refused by name."""
    rng = np.random.default_rng(14)
    za = (rng.standard_normal((5, 2, 16)) + 1j).astype(np.complex128)
    zb = (rng.standard_normal((7, 2, 16)) + 1j).astype(np.complex128)
    with pytest.raises(error) as raised:
        pairing_connectivity(za, zb, epochs_a, epochs_b, ["plv"])
    assert str(raised.value) == message


@pytest.mark.parametrize("pairing_kind", ["PairList", "AllPairs"])
@pytest.mark.parametrize("conjugate", [False, True])
def test_pairings_products_are_sums_over_time_of_the_products(pairing_kind, conjugate):
    """``products`` is ``sum_t xa[i, a, t] * xb[j, b, t]`` (``conj(xb)`` when asked) on complex
    input, against einsum, in each pairing's documented layout."""
    rng = np.random.default_rng(15)
    xa = rng.standard_normal((4, 3, 10)) + 1j * rng.standard_normal((4, 3, 10))
    xb = rng.standard_normal((5, 2, 10)) + 1j * rng.standard_normal((5, 2, 10))
    xb_used = np.conj(xb) if conjugate else xb
    if pairing_kind == "PairList":
        pairs = PairList(np.array([3, 0, 3]), np.array([1, 4, 0]))
        expected = np.einsum("pat,pbt->pab", xa[pairs.epochs_a], xb_used[pairs.epochs_b])
    else:
        pairs = AllPairs(np.array([2, 0]), 5)
        expected = np.einsum("kat,jbt->kjba", xa[[2, 0]], xb_used)
    np.testing.assert_allclose(pairs.products(xa, xb, conjugate=conjugate), expected, rtol=1e-12, atol=1e-12)
    if not conjugate:
        np.testing.assert_allclose(pairs.products(xa, xb), expected, rtol=1e-12, atol=1e-12)  # the default


def test_accorr_takes_direction_zero_for_a_sum_that_vanishes_exactly():
    """accorr's centring uses the angles ``d`` of ``sum e^{i(p_a - p_b)}`` and ``s`` of
    ``sum e^{i(p_a + p_b)}``; a sum that is exactly 0 has angle 0 (``np.angle(0)``, as in HyPyP).

    Unit vectors in quarter turns make the sums exact: ``u_a = (1, 1, 1, i)``,
    ``u_b = (1, -1, i, -1)`` give ``sum u_a u_b = 0`` and ``sum u_a conj(u_b) = -2i``. So
    ``d = -pi/2``, ``s = 0``, ``m = (d + s) / 2 = -pi/4``, ``k = (s - d) / 2 = pi/4``; both
    ``sum sin^2(p - centre)`` are 4 x 1/2 = 2 and accorr = (2 - 0) / (2 sqrt(2 x 2)) = 1/2. With
    ``conj(u_b)`` the two sums swap: ``m = k = -pi/4``, accorr = (0 - 2) / 4 = -1/2. (Any other
    direction for the zero sum gives other values: ``s = pi/2`` gives 2 / (2 sqrt(1 x 3)).)"""
    u_a = np.array([1, 1, 1, 1j])
    u_b = np.array([1, -1, 1j, -1])
    za = 3.0 * u_a.reshape(1, 1, 4)  # the amplitude plays no part
    zb = np.stack([u_b, np.conj(u_b)]).reshape(1, 2, 4)
    assert np.sum(u_a * u_b) == 0 and np.sum(u_a * u_b.conj()) == -2j  # exact, as claimed
    accorr = inter_brain_connectivity(za, zb, ["accorr"])["accorr"]
    np.testing.assert_allclose(accorr, [[0.5, -0.5]], rtol=0, atol=1e-12)


def test_accorr_takes_direction_zero_for_a_vanishing_cross_sum_and_keeps_the_other_sum_s_length():
    """The other vanishing sum: ``u_a = (1, 1, 1, i)``, ``u_b = (1, -1, -1, i)`` give
    ``sum u_a conj(u_b) = 0`` exactly and ``sum u_a u_b = -2``. So ``d = 0``, ``s = pi``,
    ``m = k = pi/2``; ``sum sin^2(p_a - pi/2) = 3`` (three phases 0, one pi/2) and
    ``sum sin^2(p_b - pi/2) = 3`` (0, pi, pi, pi/2): accorr = (0 - 2) / (2 sqrt(3 x 3)) = -1/3.
    The centring terms here are not zero (``sum u_a^2 = 2``), so the scale of the sum that does not
    vanish shows: taking ``1 / |sum u_a u_b|`` for it gives another value. (The float reference
    of this module cannot check this case: ``e^{i pi}`` is not exactly -1, so its sum is 1e-16
    with an arbitrary angle.)"""
    u_a = np.array([1, 1, 1, 1j])
    u_b = np.array([1, -1, -1, 1j])
    assert np.sum(u_a * u_b.conj()) == 0 and np.sum(u_a * u_b) == -2 and np.sum(u_a**2) == 2  # exact
    accorr = inter_brain_connectivity(u_a.reshape(1, 1, 4), u_b.reshape(1, 1, 4), ["accorr"])["accorr"]
    np.testing.assert_allclose(accorr, [[-1 / 3]], rtol=0, atol=1e-12)


# The per-channel terms each metric's formula reads (EpochTerms fields), as the module documents them.
_TERMS_READ = {
    "plv": ["unit"],
    "accorr": ["unit_stack", "unit_sq_sum"],
    "ccorr": ["unit_stack", "mean_cos", "mean_sin", "centred_sin_ss"],
    "coh": ["signal", "power_sum"],
    "imcoh": ["signal", "power_sum"],
    "pli": ["signal_re", "signal_im"],
    "wpli": ["signal", "signal_re", "signal_im"],
}


@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize(("metric", "term"), [(m, t) for m, terms in _TERMS_READ.items() for t in terms])
def test_terms_built_for_other_metrics_are_named_in_the_error(metric, term, side):
    """Each metric computes from the terms built for it alone; a term missing on either side (terms
    built for other metrics) is refused with its name, not a TypeError deep in NumPy."""
    za, zb = band_limited_pair(np.random.default_rng(16), n_epochs=2)
    ta, tb = EpochTerms.from_signal(za, [metric]), EpochTerms.from_signal(zb, [metric])
    pairs = PairList(np.arange(2), np.arange(2))
    alone = connectivity_from_terms(ta, tb, pairs, [metric])[metric]
    np.testing.assert_allclose(alone, reference_connectivity(metric, za, zb), atol=1e-12)
    setattr(ta if side == "a" else tb, term, None)
    with pytest.raises(ValueError) as error:
        connectivity_from_terms(ta, tb, pairs, [metric])
    assert str(error.value) == (f"EpochTerms without {term!r}: build the terms for (at least) the requested metrics")


def test_pair_lists_are_computed_in_chunks_that_cover_every_pair(monkeypatch):
    """Pair lists longer than a chunk of products: the chunks partition the list in order, and the
    values are those of one chunk."""
    pairs = PairList(np.arange(12) % 5, np.arange(12)[::-1] % 4)
    chunks = list(pairs.chunks(5))
    assert [sl for sl, _ in chunks] == [slice(0, 5), slice(5, 10), slice(10, 15)]
    np.testing.assert_array_equal(np.concatenate([chunk.epochs_a for _, chunk in chunks]), pairs.epochs_a)
    np.testing.assert_array_equal(np.concatenate([chunk.epochs_b for _, chunk in chunks]), pairs.epochs_b)
    za, zb = band_limited_pair(np.random.default_rng(17), n_epochs=5)
    whole = pairing_connectivity(za, zb, pairs.epochs_a, pairs.epochs_b, SUPPORTED_METRICS)
    monkeypatch.setattr(metrics, "_PAIR_CHUNK", 5)
    chunked = pairing_connectivity(za, zb, pairs.epochs_a, pairs.epochs_b, SUPPORTED_METRICS)
    for m in SUPPORTED_METRICS:
        np.testing.assert_allclose(chunked[m], whole[m], rtol=0, atol=1e-12, err_msg=m)


def test_analytic_signal_shapes_precision_and_errors():
    """Any leading shape, at least 2 samples (2 is enough), complex128 even for float32 input."""
    rng = np.random.default_rng(18)
    single = rng.standard_normal(64).astype(np.float32)
    z = analytic_signal(single)
    assert z.dtype == np.complex128
    np.testing.assert_allclose(z, scipy.signal.hilbert(single.astype(np.float64)), rtol=1e-12, atol=1e-12)
    assert analytic_signal(np.array([[1.0, -1.0]] * 3)).shape == (3, 2)
    for data in (np.zeros((3, 1)), np.zeros(1), np.float64(1.0)):
        with pytest.raises(ValueError) as error:
            analytic_signal(data)
        assert str(error.value) == f"analytic_signal needs at least 2 samples on the last axis, got shape {data.shape}"
    with pytest.raises(ValueError) as error:
        analytic_signal(single + 0j)
    assert str(error.value) == (
        "analytic_signal expects a real signal; it received a complex array (is it already an analytic signal?)"
    )


def test_validate_pair_keeps_single_precision_and_names_the_bad_input():
    """complex64 stays complex64 (the quick-check's epochs); other precisions, or a mix, become
    complex128. Messages name the participant and the numbers at fault."""
    z64 = np.ones((2, 3, 8), dtype=np.complex64)
    assert [z.dtype for z in validate_pair(z64, z64, same_epochs=True)] == [np.complex64, np.complex64]
    mixed = validate_pair(z64, z64.astype(np.complex128), same_epochs=True)
    assert [z.dtype for z in mixed] == [np.complex128, np.complex128]
    long = validate_pair(z64.astype(np.clongdouble), z64.astype(np.clongdouble), same_epochs=True)
    assert [z.dtype for z in long] == [np.complex128, np.complex128]
    cases = [
        ((2, 3, 8), (0, 3, 8), False, "zb is empty (shape (0, 3, 8))"),
        ((2, 0, 8), (2, 3, 8), False, "za is empty (shape (2, 0, 8))"),
        (
            (3, 2, 8),
            (2, 4, 8),
            True,
            "za and zb must contain the same epochs; got 3 and 2 epochs "
            "(reject an epoch in both participants, never in one)",
        ),
    ]
    for shape_a, shape_b, same, message in cases:
        with pytest.raises(ValueError) as error:
            validate_pair(np.ones(shape_a, complex), np.ones(shape_b, complex), same_epochs=same)
        assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        validate_pair(np.ones((2, 3, 8)), z64, same_epochs=False)
    assert str(error.value).startswith("za must be a complex analytic signal")


def test_metric_names_and_chunk_sizes_are_checked_with_the_choices_listed():
    za, zb = band_limited_pair(np.random.default_rng(19), n_epochs=3)
    supported = "plv, accorr, ccorr, coh, imcoh, envcorr, pli, wpli, powcorr"
    with pytest.raises(ValueError) as error:
        inter_brain_connectivity(za, zb, ["plv", "granger", "dtf"])
    assert str(error.value) == f"unknown synchrony metric(s) 'granger', 'dtf'; supported: {supported}"
    with pytest.raises(ValueError) as error:
        inter_brain_connectivity(za, zb, [])
    assert str(error.value) == f"no metric requested; choose among {supported}"
    assert inter_brain_connectivity(za, zb, "plv").keys() == {"plv"}  # one name, not its letters
    one_at_a_time = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False, chunk_epochs=1)
    for m in SUPPORTED_METRICS:
        np.testing.assert_allclose(one_at_a_time[m], reference_connectivity(m, za, zb), atol=1e-12, err_msg=m)


def test_accorr_of_concentrated_phases_in_short_epochs():
    """Phases within a few degrees of their mean over 8 samples: each ``sum sin^2`` of the
    denominator is about 8 / 50, far below 1, and accorr still equals the loop reference."""
    rng = np.random.default_rng(20)
    phase = rng.vonmises(0.0, 50.0, (4, 2, 8))
    za = np.exp(1j * phase)
    zb = np.exp(1j * (phase[:, ::-1] + rng.vonmises(0.0, 50.0, (4, 2, 8))))
    values = inter_brain_connectivity(za, zb, ["accorr"], epochs_average=False)["accorr"]
    np.testing.assert_allclose(values, reference_connectivity("accorr", za, zb), rtol=0, atol=1e-12)


def test_accorr_of_a_channel_with_two_opposite_phases_is_zero_not_nan():
    """A channel whose phase takes only two opposite values (a real signal: sign flips) has
    ``sum sin^2(p - m) = 0`` at its centring, a zero denominator, and an exactly zero numerator
    (``|sum e^{i(p_a - p_b)}| = |sum e^{i(p_a + p_b)}|`` for real ``u_a``): HyPyP's guard makes the
    value 0, not NaN."""
    rng = np.random.default_rng(21)
    za = (rng.choice([-1.0, 1.0], (3, 1, 64)) * rng.uniform(0.5, 2.0, (3, 1, 64))).astype(complex)
    zb = rng.standard_normal((3, 2, 64)) + 1j * rng.standard_normal((3, 2, 64))
    values = inter_brain_connectivity(za, zb, ["accorr"], epochs_average=False)["accorr"]
    np.testing.assert_array_equal(values, 0.0)
