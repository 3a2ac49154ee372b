"""Surrogate nulls: equality with brute force, calibration on pure noise, pseudo-dyads."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from dyadlab.synchrony import metrics, surrogates
from dyadlab.synchrony.metrics import SUPPORTED_METRICS, inter_brain_connectivity
from dyadlab.synchrony.stats import group_level, surrogate_z_p
from dyadlab.synchrony.surrogates import (
    circular_shift_surrogates,
    epoch_shuffle_surrogates,
    pseudo_dyads,
    random_permutations,
    shuffle_null,
    shuffle_plan,
)
from tests.synchrony.calibration import assert_rejection_rate


def complex_noise(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def smooth_noise(rng, n_channels, n_samples, width=8):
    """Complex noise with a few samples of autocorrelation (a crude band-limited signal)."""
    kernel = np.hanning(width)
    raw = complex_noise(rng, (n_channels, n_samples + width))
    return np.stack([np.convolve(row, kernel, mode="valid")[:n_samples] for row in raw])


def test_random_permutations_are_uniform_over_all_permutations():
    perms = random_permutations(4, 2400, np.random.default_rng(0))
    assert perms.shape == (2400, 4)
    np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(4), (2400, 1)))
    counts = np.unique(perms, axis=0, return_counts=True)[1]
    assert counts.size == 24  # every permutation of 4 items, the identity included
    assert scipy.stats.chisquare(counts).pvalue > 0.001
    with pytest.raises(ValueError, match="at least 2 epochs"):
        random_permutations(1, 10, np.random.default_rng(0))


@pytest.fixture(params=["one block", "one A epoch per block", "numba PLI/wPLI"])
def computation_path(request, monkeypatch):
    """Every way the pairings are computed: whole blocks, one A epoch at a time, the numba kernel."""
    block_elements, numba_min_elements = {
        "one block": (4_000_000, 10**12),
        "one A epoch per block": (50, 10**12),
        "numba PLI/wPLI": (4_000_000, 0),
    }[request.param]
    if numba_min_elements == 0:
        pytest.importorskip("numba")
    monkeypatch.setattr(surrogates, "_BLOCK_ELEMENTS", block_elements)
    monkeypatch.setattr(metrics, "_NUMBA_MIN_ELEMENTS", numba_min_elements)


@pytest.mark.usefixtures("computation_path")
def test_epoch_shuffle_equals_brute_force_per_permutation():
    rng = np.random.default_rng(1)
    za, zb = complex_noise(rng, (7, 3, 64)), complex_noise(rng, (7, 4, 64))
    zb[:, 0] = 0.7 * za[:, 0] + 0.3 * zb[:, 0]
    za[2, 1] = 0  # a flat channel in one epoch: NaN for that epoch, left out of the mean
    perms = random_permutations(7, 6, rng)
    null = epoch_shuffle_surrogates(za, zb, 6, SUPPORTED_METRICS, rng=rng, permutations=perms)
    for metric in SUPPORTED_METRICS:
        expected = np.stack([inter_brain_connectivity(za, zb[p], [metric])[metric] for p in perms])
        assert null[metric].shape == (6, 3, 4)
        np.testing.assert_allclose(null[metric], expected, rtol=0, atol=1e-12, err_msg=metric)


def test_epoch_shuffle_rejects_invalid_permutations():
    rng = np.random.default_rng(2)
    za, zb = complex_noise(rng, (4, 2, 32)), complex_noise(rng, (4, 2, 32))
    with pytest.raises(ValueError, match="must be a permutation"):
        epoch_shuffle_surrogates(za, zb, 1, ["plv"], rng=rng, permutations=np.array([[1, 0, 1, 3]]))
    with pytest.raises(ValueError, match="shape"):
        epoch_shuffle_surrogates(za, zb, 2, ["plv"], rng=rng, permutations=np.array([[1, 0, 3, 2]]))
    with pytest.raises(ValueError, match="same epochs"):
        epoch_shuffle_surrogates(za, zb[:3], 2, ["plv"], rng=rng)


def test_shuffle_plan_draws_permutations_of_all_epochs_within_random_strata():
    plan = shuffle_plan(100, 50, np.random.default_rng(10))
    sizes = sorted(members.size for members in plan.strata)
    assert sizes == [16, 16, 17, 17, 17, 17]  # 100 // 16 = 6 strata of (nearly) equal size, none below 16
    np.testing.assert_array_equal(np.sort(np.concatenate(plan.strata)), np.arange(100))
    assert not np.array_equal(np.concatenate(plan.strata), np.arange(100))  # a random partition
    perms = plan.permutations
    assert perms.shape == (50, 100)
    np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(100), (50, 1)))
    stratum_of = np.empty(100, dtype=int)
    for k, members in enumerate(plan.strata):
        stratum_of[members] = k
    assert np.all(stratum_of[perms] == stratum_of)  # partners come from the same stratum
    assert len({tuple(p) for p in perms}) == 50
    assert sorted(m.size for m in shuffle_plan(31, 5, np.random.default_rng(11)).strata) == [31]
    assert sorted(m.size for m in shuffle_plan(33, 5, np.random.default_rng(11)).strata) == [16, 17]
    with pytest.raises(ValueError, match="at least 8"):
        shuffle_plan(100, 5, np.random.default_rng(0), stratum_epochs=4)
    with pytest.raises(ValueError, match="at least 2 epochs"):
        shuffle_plan(1, 5, np.random.default_rng(0))


@pytest.mark.usefixtures("computation_path")
def test_shuffle_null_equals_brute_force_and_observed_equals_the_real_pairing():
    rng = np.random.default_rng(12)
    za, zb = complex_noise(rng, (30, 3, 48)), complex_noise(rng, (30, 4, 48))
    zb[:, 0] = 0.7 * za[:, 0] + 0.3 * zb[:, 0]
    za[5, 1] = 0  # flat in one epoch: NaN there, left out of the means
    plan = shuffle_plan(30, 7, rng, stratum_epochs=8)
    assert sorted(m.size for m in plan.strata) == [10, 10, 10]
    result = shuffle_null(za, zb, plan, SUPPORTED_METRICS)
    real = inter_brain_connectivity(za, zb, SUPPORTED_METRICS, epochs_average=False)
    for metric in SUPPORTED_METRICS:
        expected = np.stack([inter_brain_connectivity(za, zb[p], [metric])[metric] for p in plan.permutations])
        np.testing.assert_allclose(result.null[metric], expected, rtol=0, atol=1e-12, err_msg=metric)
        np.testing.assert_allclose(result.observed[metric], real[metric], rtol=0, atol=1e-12, err_msg=metric)
    with pytest.raises(ValueError, match="plan is for 30 epochs"):
        shuffle_null(za[:29], zb[:29], plan, ["plv"])


def test_single_precision_signals_give_the_double_precision_values_to_float32_rounding():
    """The quick-check's epochs are complex64: products, sums and selections run in single
    precision, the PLI/wPLI loop in double."""
    rng = np.random.default_rng(14)
    za, zb = complex_noise(rng, (40, 3, 64)), complex_noise(rng, (40, 4, 64))
    zb[:, 0] = 0.7 * za[:, 0] + 0.3 * zb[:, 0]
    plan = shuffle_plan(40, 20, rng)
    double = shuffle_null(za, zb, plan, SUPPORTED_METRICS)
    single = shuffle_null(za.astype(np.complex64), zb.astype(np.complex64), plan, SUPPORTED_METRICS)
    for metric in SUPPORTED_METRICS:
        np.testing.assert_allclose(single.null[metric], double.null[metric], rtol=0, atol=2e-5, err_msg=metric)
        np.testing.assert_allclose(single.observed[metric], double.observed[metric], rtol=0, atol=5e-5, err_msg=metric)


def stratified_noise_tests(rng, n_dyads):
    """z and rejections (p < 0.05) of PLV and envcorr on the pair mean, per metric, for ``n_dyads``
    independent dyads of 64 epochs in the smallest strata allowed (8 epochs), 99 surrogates."""
    tested = ["plv", "envcorr"]
    z_values = {m: [] for m in tested}
    positives = {m: 0 for m in tested}
    for _ in range(n_dyads):
        xa = smooth_noise(rng, 2, 64 * 32).reshape(2, 64, 32).transpose(1, 0, 2)
        xb = smooth_noise(rng, 2, 64 * 32).reshape(2, 64, 32).transpose(1, 0, 2)
        result = shuffle_null(xa, xb, shuffle_plan(64, 99, rng, stratum_epochs=8), tested)
        for m in tested:
            observed = np.nanmean(result.observed[m], axis=0).mean()
            z, p = surrogate_z_p(observed, result.null[m].mean(axis=(1, 2)))
            z_values[m].append(float(z))
            positives[m] += bool(p < 0.05)
    return z_values, positives


def pure_noise_tests(rng, n_dyads):
    """z and rejections (p < 0.05) of 4 metrics on the pair mean for ``n_dyads`` independent dyads
    of 12 epochs, 99 epoch-shuffle surrogates each."""
    tested = ["plv", "accorr", "envcorr", "wpli"]
    n_epochs, n_surrogates = 12, 99
    z_values = {m: [] for m in tested}
    positives = {m: 0 for m in tested}
    for _ in range(n_dyads):
        xa = smooth_noise(rng, 2, n_epochs * 64).reshape(2, n_epochs, 64).transpose(1, 0, 2)
        xb = smooth_noise(rng, 2, n_epochs * 64).reshape(2, n_epochs, 64).transpose(1, 0, 2)
        observed = inter_brain_connectivity(xa, xb, tested)
        null = epoch_shuffle_surrogates(xa, xb, n_surrogates, tested, rng=rng)
        for m in tested:
            z, p = surrogate_z_p(observed[m].mean(), null[m].mean(axis=(1, 2)))
            z_values[m].append(float(z))
            positives[m] += bool(p < 0.05)
    return z_values, positives


# With 99 surrogates p = (1 + #exceeding) / 100, so p < 0.05 for the 4 most extreme of 100
# exchangeable values: a calibrated surrogate test rejects 4 %, not 5 %.
SURROGATE_LEVEL = 4 / 100


def test_stratified_null_is_calibrated_on_pure_noise():
    """The smallest strata allowed (8 epochs) still give z ~ N(0, 1) and false positives at the
    surrogate test's level (4 %): 2000 independent dyads, binomial bounds that fail a 7 % rate."""
    n_dyads = 2000
    z_values, positives = stratified_noise_tests(np.random.default_rng(13), n_dyads)
    for m in z_values:
        assert abs(np.mean(z_values[m])) < 0.1, (m, np.mean(z_values[m]))
        assert 0.9 < np.std(z_values[m]) < 1.1, (m, np.std(z_values[m]))
        assert_rejection_rate(positives[m], n_dyads, SURROGATE_LEVEL, label=m)


def test_pure_noise_z_near_zero_and_four_percent_false_positives():
    """Independent participants: z ~ 0 and p < 0.05 at the surrogate test's level (4 %, uncorrected).

    2000 independent dyads x 4 metrics (PLV, accorr, envcorr, wPLI) on the pair mean, 99
    surrogates each; binomial bounds per metric that fail a 7 % rate (tests/synchrony/calibration.py).
    """
    n_dyads = 2000
    z_values, positives = pure_noise_tests(np.random.default_rng(3), n_dyads)
    for m in z_values:
        assert abs(np.mean(z_values[m])) < 0.1, (m, np.mean(z_values[m]))
        assert 0.9 < np.std(z_values[m]) < 1.1, (m, np.std(z_values[m]))
        assert_rejection_rate(positives[m], n_dyads, SURROGATE_LEVEL, label=m)


def test_coupled_dyad_is_far_above_its_surrogates():
    rng = np.random.default_rng(4)
    xa = smooth_noise(rng, 3, 30 * 64)
    xb = smooth_noise(rng, 3, 30 * 64)
    xb[0] = 0.5 * xa[0] + 0.5 * xb[0]
    za, zb = (x.reshape(3, 30, 64).transpose(1, 0, 2) for x in (xa, xb))
    observed = inter_brain_connectivity(za, zb, ["plv", "accorr"])
    null = epoch_shuffle_surrogates(za, zb, 200, ["plv", "accorr"], rng=rng)
    for m in ("plv", "accorr"):
        z, p = surrogate_z_p(observed[m], null[m])
        assert z[0, 0] > 10 and p[0, 0] == pytest.approx(1 / 201), m
        assert np.abs(z[1:, 1:]).max() < 4, m


def test_circular_shift_equals_brute_force_with_the_same_lags():
    rng = np.random.default_rng(5)
    sfreq, n_samples = 64.0, 64 * 20
    za_cont, zb_cont = smooth_noise(rng, 2, n_samples), smooth_noise(rng, 3, n_samples)
    starts = np.array([0, 64, 300, 900, 1200])
    null = circular_shift_surrogates(
        za_cont,
        zb_cont,
        4,
        ["plv", "wpli", "envcorr"],
        sfreq=sfreq,
        epoch_starts=starts,
        epoch_samples=64,
        min_shift_s=3.0,
        rng=np.random.default_rng(9),
    )
    lags = np.random.default_rng(9).integers(192, n_samples - 192 + 1, size=4)
    window = starts[:, None] + np.arange(64)
    za = za_cont[:, window].transpose(1, 0, 2)
    for s, lag in enumerate(lags):
        zb = np.roll(zb_cont, lag, axis=1)[:, window].transpose(1, 0, 2)
        expected = inter_brain_connectivity(za, zb, ["plv", "wpli", "envcorr"])
        for m, values in expected.items():
            np.testing.assert_allclose(null[m][s], values, atol=1e-12, err_msg=m)


def test_circular_shift_null_of_a_coupled_block():
    rng = np.random.default_rng(6)
    sfreq, n_samples = 64.0, 64 * 60
    za_cont = smooth_noise(rng, 2, n_samples)
    zb_cont = 0.6 * za_cont + 0.4 * smooth_noise(rng, 2, n_samples)
    starts = np.arange(0, n_samples - 128 + 1, 128)
    null = circular_shift_surrogates(
        za_cont, zb_cont, 100, ["plv"], sfreq=sfreq, epoch_starts=starts, epoch_samples=128, rng=rng
    )
    window = starts[:, None] + np.arange(128)
    observed = inter_brain_connectivity(
        za_cont[:, window].transpose(1, 0, 2), zb_cont[:, window].transpose(1, 0, 2), ["plv"]
    )
    z, _ = surrogate_z_p(observed["plv"], null["plv"])
    assert np.all(np.diag(z) > 10)
    assert null["plv"].mean() < 0.35  # chance level for 128 samples of smooth noise, not the coupling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_shift_s": 10.0}, "too short for circular shifts"),
        ({"lags": [5, 320]}, "lags must be 3 values"),
        ({"lags": [5, 320, 700]}, "lags must be 3 values"),
        ({"epoch_starts": [0, 600]}, "do not fit"),
        ({"epoch_starts": []}, "no epochs"),
        ({"sfreq": 0.0}, "sfreq must be positive"),
    ],
)
def test_circular_shift_bad_input(kwargs, message):
    rng = np.random.default_rng(7)
    args = {"sfreq": 32.0, "epoch_starts": [0, 64], "epoch_samples": 64, "min_shift_s": 2.0, "rng": rng}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        circular_shift_surrogates(complex_noise(rng, (2, 640)), complex_noise(rng, (2, 640)), 3, ["plv"], **args)


def test_pseudo_dyads_between_dyads_and_across_sessions():
    dyads = ["d1", "d1", "d2", "d3"]
    sessions = ["s1", "s2", "s1", "s1"]
    between = list(pseudo_dyads(dyads))
    assert len(between) == 4 * 3 - 2  # every ordered pair but the two of the same dyad
    assert all(dyads[i] != dyads[j] for i, j in between)
    across = list(pseudo_dyads(dyads, sessions, across_sessions=True))
    assert across == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="at least two different dyads"):
        list(pseudo_dyads(["d1", "d1"]))
    with pytest.raises(ValueError, match="session identifier"):
        list(pseudo_dyads(dyads, across_sessions=True))
    with pytest.raises(ValueError, match="same \\(dyad, session\\)"):
        list(pseudo_dyads(["d1", "d1"], ["s1", "s1"], across_sessions=True))


def test_pseudo_dyad_group_null_is_calibrated():
    """Pseudo-dyads of independent recordings are exchangeable with real ones: p < 0.05 in 5 % of groups.

    5000 groups of 6 recorded dyads (30 pseudo-dyads), 300 resamples: a calibrated test rejects
    15/301 of them; the binomial bounds (tests/synchrony/calibration.py) fail a 7 % rate with
    probability >= 99 %. One connectivity call per group: A's and B's channels of the 6 recordings
    side by side give every (A of i, B of j) pairing as a 2 x 2 block.
    """
    rng = np.random.default_rng(8)
    n_groups, n_dyads = 5000, 6
    pairs = list(pseudo_dyads(range(n_dyads)))
    rows, cols = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    rejected = 0
    for _ in range(n_groups):
        a = complex_noise(rng, (10, 2 * n_dyads, 32))
        b = complex_noise(rng, (10, 2 * n_dyads, 32))
        plv = inter_brain_connectivity(a, b, ["plv"])["plv"].reshape(n_dyads, 2, n_dyads, 2).mean(axis=(1, 3))
        rejected += group_level(np.diag(plv).copy(), plv[rows, cols], n_resamples=300, rng=rng).p < 0.05
    assert_rejection_rate(rejected, n_groups, 15 / 301, label="pseudo-dyad group test")


def test_pseudo_dyad_blocks_are_the_pairwise_connectivity():
    """The side-by-side trick of the calibration test above: block (i, j) is A of i with B of j."""
    rng = np.random.default_rng(9)
    a = [complex_noise(rng, (10, 2, 32)) for _ in range(3)]
    b = [complex_noise(rng, (10, 2, 32)) for _ in range(3)]
    blocks = inter_brain_connectivity(np.concatenate(a, axis=1), np.concatenate(b, axis=1), ["plv"])["plv"]
    for i in range(3):
        for j in range(3):
            expected = inter_brain_connectivity(a[i], b[j], ["plv"])["plv"]
            np.testing.assert_allclose(blocks[2 * i : 2 * i + 2, 2 * j : 2 * j + 2], expected, rtol=1e-12)
