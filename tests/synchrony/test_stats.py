"""Statistics on surrogate nulls: z/p, FDR, max-statistic, condition contrast, group level."""

from __future__ import annotations

import itertools
import re
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from dyadlab.synchrony import stats
from dyadlab.synchrony.stats import (
    calibration_notes,
    condition_contrast,
    fdr,
    group_level,
    max_statistic_threshold,
    pair_tests,
    surrogate_z_p,
)
from tests.synchrony.calibration import assert_rejection_rate


def test_surrogate_z_p_known_values():
    null = np.arange(1.0, 100.0)[:, None] * np.ones((1, 3))  # 1..99 in each of 3 elements
    observed = np.array([100.0, 50.0, np.nan])
    z, p = surrogate_z_p(observed, null)
    assert z[0] == pytest.approx((100 - 50) / np.std(np.arange(1, 100), ddof=1))
    assert z[1] == pytest.approx(0.0)
    assert p[0] == pytest.approx(1 / 100)  # nothing in the null reaches 100
    assert p[1] == pytest.approx((1 + 50) / 100)  # 50..99 are >= 50
    assert np.isnan(p[2]) and np.isnan(z[2])


def test_surrogate_z_p_degenerate_null_and_shape_errors():
    z, p = surrogate_z_p(np.array(1.0), np.zeros(10))
    assert np.isnan(z) and p == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="n_surrogates"):
        surrogate_z_p(np.zeros((2, 2)), np.zeros((10, 3, 2)))
    with pytest.raises(ValueError, match="at least 2 surrogates"):
        surrogate_z_p(np.zeros(2), np.zeros((1, 2)))


def test_fdr_is_benjamini_hochberg():
    p = np.array([[0.001, 0.008, 0.039], [0.041, 0.042, 0.06], [0.074, 0.205, np.nan]])
    reject, adjusted = fdr(p, alpha=0.05)
    finite = p[np.isfinite(p)]
    order = np.argsort(finite)
    ranked = finite[order] * finite.size / np.arange(1, finite.size + 1)
    expected = np.minimum.accumulate(ranked[::-1])[::-1]
    manual = np.empty_like(finite)
    manual[order] = np.minimum(expected, 1)
    np.testing.assert_allclose(adjusted[np.isfinite(p)], manual)
    assert np.isnan(adjusted[2, 2]) and not reject[2, 2]
    np.testing.assert_array_equal(reject[np.isfinite(p)], manual <= 0.05)
    mne_stats = pytest.importorskip("mne.stats")
    mne_reject, mne_adjusted = mne_stats.fdr_correction(finite, alpha=0.05)
    np.testing.assert_allclose(adjusted[np.isfinite(p)], mne_adjusted)
    np.testing.assert_array_equal(reject[np.isfinite(p)], mne_reject)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fdr(np.array([0.5, 1.5]))


def test_max_statistic_controls_the_family_wise_error():
    """Observed drawn from the null distribution: some element 'significant' in ~5 % of families."""
    rng = np.random.default_rng(0)
    n_families, n_surrogates, family = 300, 199, (4, 5)
    false_families = 0
    for _ in range(n_families):
        scale = rng.uniform(0.5, 2.0, family)  # elements of different scale, like bands
        draws = rng.standard_normal((n_surrogates + 1, *family)) * scale
        result = max_statistic_threshold(draws[0], draws[1:], alpha=0.05)
        false_families += bool(result.reject.any())
        _, p_uncorrected = surrogate_z_p(draws[0], draws[1:])
        assert np.all(result.p_corrected >= p_uncorrected - 1e-12)
    # Binomial(300, 0.05): mean 15, sd 3.8.
    assert 4 <= false_families <= 28, false_families


def test_max_statistic_p_is_the_share_of_surrogate_maxima_reaching_each_z():
    rng = np.random.default_rng(5)
    null = rng.standard_normal((99, 3, 4)) * rng.uniform(0.5, 2.0, (3, 4))
    observed = rng.standard_normal((3, 4)) * 2
    observed[0, 0] = np.nan
    result = max_statistic_threshold(observed, null)
    pooled = np.concatenate([observed[None], null])  # standardised together: exchangeable
    pooled_z = (pooled - np.nanmean(pooled, axis=0)) / np.nanstd(pooled, axis=0, ddof=1)
    maxima = np.nanmax(pooled_z[1:].reshape(99, -1), axis=1)
    expected = np.array([(1 + np.sum(maxima >= z)) / 100 for z in pooled_z[0].ravel()]).reshape(3, 4)
    expected[0, 0] = np.nan
    np.testing.assert_allclose(result.p_corrected, expected, rtol=0, atol=1e-15)


def test_pair_tests_on_independent_dyads_reject_anything_in_about_five_percent():
    """The quick-check's pair-level path end to end on pure noise: one stratified plan for two
    bands (as :func:`dyadlab.synchrony.check.run_check` draws it), 4 x 4 channel pairs x 2 bands per dyad.
    The noise is smoothed across epoch boundaries, as real EEG is, which makes any epoch
    shuffle slightly liberal (synchrony/surrogates.py). Measured over seeds 21-23: 13-23 (FDR)
    and 15-20 (FWER) of 300 dyads; with stratified *derangements* 25-35 and 23-27. Bounds:
    about +-3 sd of Binomial(300, 0.05)."""
    from dyadlab.synchrony.surrogates import shuffle_null, shuffle_plan

    rng = np.random.default_rng(21)
    kernel = np.hanning(8)
    n_dyads, n_epochs, n_times = 300, 48, 32
    any_fdr = any_fwer = 0
    for _ in range(n_dyads):
        plan = shuffle_plan(n_epochs, 99, rng)
        values, nulls = [], []
        for _band in range(2):
            signals = []
            for _participant in range(2):
                raw = rng.standard_normal((4, n_epochs * n_times + 8)) + 1j * rng.standard_normal(
                    (4, n_epochs * n_times + 8)
                )
                smooth = np.stack([np.convolve(row, kernel, mode="valid")[: n_epochs * n_times] for row in raw])
                signals.append(smooth.reshape(4, n_epochs, n_times).transpose(1, 0, 2).astype(np.complex64))
            result = shuffle_null(*signals, plan, ["plv"])
            values.append(result.observed["plv"].mean(axis=0))
            nulls.append(result.null["plv"])
        tests = pair_tests(np.stack(values), np.stack(nulls, axis=1))
        any_fdr += bool(tests.reject_fdr.any())
        any_fwer += bool(tests.reject_fwer.any())
    assert 3 <= any_fdr <= 27, any_fdr
    assert 3 <= any_fwer <= 27, any_fwer


def test_pair_tests_find_a_coupled_pair_only():
    rng = np.random.default_rng(22)
    null = rng.standard_normal((200, 2, 5, 5))
    observed = rng.standard_normal((2, 5, 5))
    observed[1, 3, 4] = 9.0
    tests = pair_tests(observed, null)
    assert tests.reject_fdr.sum() == 1 and tests.reject_fdr[1, 3, 4]
    assert tests.reject_fwer.sum() == 1 and tests.reject_fwer[1, 3, 4]
    assert tests.p_fdr[1, 3, 4] < 1 / 201  # parametric: below the empirical floor


def test_max_statistic_detects_a_real_effect():
    rng = np.random.default_rng(1)
    null = rng.standard_normal((500, 3, 3))
    observed = rng.standard_normal((3, 3))
    observed[1, 2] = 8.0
    result = max_statistic_threshold(observed, null)
    assert result.reject[1, 2] and result.reject.sum() == 1
    assert 2.0 < result.threshold < 4.5


def _ar1_blocks(rng, block_sizes, phi, sd):
    """Per-epoch values of one condition: an AR(1) series per block (blocks are apart in time)."""
    values = []
    for n in block_sizes:
        noise = rng.normal(0.0, sd, n)
        noise[0] /= np.sqrt(1 - phi**2)  # start in the stationary distribution
        values.append(scipy.signal.lfilter([1.0], [1.0, -phi], noise))
    return np.concatenate(values), np.repeat(np.arange(len(block_sizes)), block_sizes)


def _contrast_dataset(rng, *, bias_a, effect=0.0, phi=0.3, sd=0.05):
    """Cooperation (2 blocks of 30 two-second epochs) and rest (3 blocks of 15) with their surrogate nulls.

    The real synchrony differs by ``effect``; cooperation's estimator bias (its surrogate mean) is
    ``bias_a`` above rest's. Epoch values are AR(1) with lag-1 correlation ``phi``.
    """
    a, blocks_a = _ar1_blocks(rng, (30, 30), phi, sd)
    b, blocks_b = _ar1_blocks(rng, (15, 15, 15), phi, sd)
    null_a = rng.normal(0.1 + bias_a, 0.005, 100)
    null_b = rng.normal(0.1, 0.005, 100)
    return 0.3 + effect + bias_a + a, 0.3 + b, null_a, null_b, blocks_a, blocks_b


def _rejection_rate(rng, n_sets, **dataset):
    rejected = 0
    for _ in range(n_sets):
        a, b, null_a, null_b, blocks_a, blocks_b = _contrast_dataset(rng, **dataset)
        result = condition_contrast(
            a, b, null_a, null_b, run_length=5, blocks_a=blocks_a, blocks_b=blocks_b, n_permutations=200, rng=rng
        )
        rejected += result.p < 0.05
    return rejected / n_sets


def test_condition_contrast_is_calibrated_for_autocorrelated_epochs_and_different_biases():
    """No real difference, cooperation's surrogate mean 0.03 above rest's, epochs AR(1) with lag-1
    correlation 0.3, 10-s runs (5 epochs of 2 s, as the quick-check uses).

    Measured: 6.4 % rejected at p < 0.05 on 10 000 data sets, 6.3 % and 6.7 % on 20 000 with seeds 5
    and 15 (5.5 % on the first 2000 of seed 5). The old test
    (raw values pooled, single epochs exchanged) rejected 13.7 % of these (14.9 % with equal biases:
    pooling raw values made it conservative when the biases differ, which partly hid the
    autocorrelation); corrected values exchanged epoch by epoch, 14.1 %. Runs are not quite independent
    (neighbouring runs correlate at their edges), hence a little above 5 %; with lag-1 correlation 0.5
    the rate is 8.2 % for 5-epoch runs and 25 % for single epochs (10 000 data sets each).
    """
    n_sets = 5000
    rate = _rejection_rate(np.random.default_rng(5), n_sets, bias_a=0.03)
    # The measured 6.4 % is the nominal rate here: the binomial bounds of 5000 data sets fail 8.5 %.
    assert_rejection_rate(round(rate * n_sets), n_sets, 0.064, must_fail=0.085, label="autocorrelated epochs")


def test_condition_contrast_detects_a_difference_next_to_a_bias_difference():
    """A real difference of 0.06 while cooperation's surrogate mean is 0.2 above rest's.

    Measured on these 300 data sets: 99 % detected at p < 0.05; the old test, which permuted raw
    values (their spread inflated by the bias difference), detected 66 %.
    """
    rate = _rejection_rate(np.random.default_rng(6), 300, bias_a=0.2, effect=0.06)
    assert rate >= 0.93, rate


@pytest.mark.parametrize(
    ("run_length", "level"),
    [
        (1, 10 / 201),  # 200 sampled permutations: p < 0.05 when at most 9 of them reach the observed
        (5, 6 / 126),  # 4 + 5 runs: all C(9, 4) = 126 splits enumerated, p < 0.05 for the 6 most extreme
    ],
)
def test_condition_contrast_is_calibrated_for_independent_epochs(run_length, level):
    """Independent epochs, no difference: p < 0.05 at the test's attainable level (about 5 %);
    5000 data sets, binomial bounds that fail a 7 % rate (tests/synchrony/calibration.py)."""
    rng = np.random.default_rng(3)
    n_sets = 5000
    p = [
        condition_contrast(
            rng.normal(size=(20, 1)), rng.normal(size=(25, 1)), run_length=run_length, n_permutations=200, rng=rng
        ).p[0]
        for _ in range(n_sets)
    ]
    assert_rejection_rate(int(np.sum(np.array(p) < 0.05)), n_sets, level, label=f"runs of {run_length}")


def test_condition_contrast_corrects_bias():
    rng = np.random.default_rng(2)
    coop = rng.normal(0.5, 0.1, (60, 2))
    rest = rng.normal(0.4, 0.1, (60, 2))
    raw = condition_contrast(coop, rest, run_length=1, n_permutations=500, rng=rng)
    np.testing.assert_allclose(raw.difference, coop.mean(0) - rest.mean(0))
    assert np.all(raw.p < 0.01)
    # Same raw difference, but the cooperation condition's estimator bias is 0.1 higher
    # (e.g. stronger rhythmicity): the corrected difference vanishes.
    null_coop = rng.normal(0.35, 0.01, (200, 2))
    null_rest = rng.normal(0.25, 0.01, (200, 2))
    corrected = condition_contrast(coop, rest, null_coop, null_rest, run_length=1, n_permutations=500, rng=rng)
    np.testing.assert_allclose(
        corrected.difference, coop.mean(0) - null_coop.mean(0) - (rest.mean(0) - null_rest.mean(0))
    )
    assert np.all(np.abs(corrected.difference) < 0.05)
    assert np.all(corrected.p > 0.05)
    with pytest.raises(ValueError, match="both conditions or for neither"):
        condition_contrast(coop, rest, null_coop, None, run_length=1, rng=rng)


def test_condition_contrast_runs_end_at_block_boundaries():
    rng = np.random.default_rng(7)
    values = rng.normal(size=(10, 3))
    values[4, 1] = np.nan  # a missing value leaves its run with fewer epochs for that element
    other = rng.normal(size=(7, 3))
    one_block = condition_contrast(values, other, run_length=5, n_permutations=50, rng=rng)
    assert (one_block.n_runs_a, one_block.n_runs_b) == (2, 2)  # 5 + 5, 5 + 2
    # Blocks 7 + 3 epochs: runs 5 + 2 and 3; a label that comes back later starts a new block.
    split = condition_contrast(
        values,
        other,
        run_length=5,
        blocks_a=[0] * 7 + [1] * 3,
        blocks_b=["x"] * 3 + ["y"] * 2 + ["x"] * 2,
        n_permutations=50,
        rng=rng,
    )
    assert (split.n_runs_a, split.n_runs_b) == (3, 3)
    np.testing.assert_allclose(split.difference, np.nanmean(values, axis=0) - other.mean(axis=0))
    with pytest.raises(ValueError, match="one label per epoch"):
        condition_contrast(values, other, run_length=5, blocks_a=[0] * 9, rng=rng)
    with pytest.raises(ValueError, match="positive integer"):
        condition_contrast(values, other, run_length=0, rng=rng)


def test_condition_contrast_with_two_runs_cannot_reject():
    """Two runs of 5 in each condition: 6 distinct splits, all enumerated; however large the effect,
    2 of them (the observed one and its mirror) reach |observed|."""
    rng = np.random.default_rng(8)
    result = condition_contrast(np.full(10, 1.0) + rng.normal(0, 0.01, 10), np.zeros(10), run_length=5, rng=rng)
    assert result.difference == pytest.approx(1.0, abs=0.01)
    assert result.exact and result.p == pytest.approx(2 / 6)
    sampled = condition_contrast(np.full(10, 1.0), np.zeros(10), run_length=5, n_permutations=5, rng=rng)
    assert not sampled.exact  # fewer permutations than splits: drawn at random


def test_group_level_real_versus_pseudo_dyads():
    rng = np.random.default_rng(4)
    pseudo = rng.normal(0.30, 0.02, (30, 2))
    real = rng.normal([0.35, 0.30], 0.02, (6, 2))  # only the first element is interaction-specific
    result = group_level(real, pseudo, n_resamples=2000, rng=rng)
    assert result.p[0] < 0.01 and result.p[1] > 0.01
    assert result.difference[0] == pytest.approx(real[:, 0].mean() - pseudo[:, 0].mean())
    assert (result.n_real, result.n_pseudo, result.exact) == (6, 30, False)  # C(36, 6) splits: sampled
    with pytest.raises(ValueError, match="at least as many pseudo-dyads"):
        group_level(real, pseudo[:3], rng=rng)


@pytest.mark.parametrize(
    ("n_recordings", "level", "old_rate"),
    [
        (3, 4 / 84, 0.20),  # C(9, 3) = 84 splits, all enumerated: p < 0.05 for the 4 most extreme
        (4, 15 / 301, 0.13),  # C(16, 4) = 1820 splits, 300 sampled
    ],
)
def test_group_level_holds_its_level_with_few_recordings(n_recordings, level, old_rate):
    """Null calibration with 3 or 4 recordings (6 or 12 pseudo-dyads) and exchangeable Gaussian values.

    Drawing the reference means from the pseudo-dyads alone (the old group_level) rejected ``old_rate``
    of 1000 such null groups at p < 0.05 (19.6 % and 13.2 %); drawing from real + pseudo rejects the
    attainable level (4.8 % and 5.0 %). 5000 groups: binomial bounds that fail a 7 % rate.
    """
    rng = np.random.default_rng(7)
    n_pseudo = n_recordings * (n_recordings - 1)
    n_groups = 5000
    rejections = 0
    for _ in range(n_groups):
        values = rng.standard_normal(n_recordings + n_pseudo)
        rejections += group_level(values[:n_recordings], values[n_recordings:], n_resamples=300, rng=rng).p < 0.05
    assert_rejection_rate(int(rejections), n_groups, level, label=f"{n_recordings} recordings")
    assert rejections / n_groups < 0.07 < old_rate


def test_group_level_enumerates_small_pools_exactly():
    rng = np.random.default_rng(9)
    pseudo = rng.standard_normal(6)
    strongest = group_level(np.array([3.0, 3.1, 3.2]), pseudo, n_resamples=300, rng=rng)
    assert strongest.exact and strongest.p == pytest.approx(1 / 84)  # the smallest attainable p: 1 / C(9, 3)
    # Real values in the middle of the pool: the p is the share of the 84 splits whose mean reaches theirs.
    real = np.sort(pseudo)[[1, 3, 5]] + 1e-3
    pool = np.concatenate([real, pseudo])
    means = np.array([pool[list(c)].mean() for c in itertools.combinations(range(9), 3)])
    middle = group_level(real, pseudo, n_resamples=300, rng=rng)
    assert middle.p == pytest.approx(np.mean(means >= real.mean() - 1e-12))
    sampled = group_level(real, pseudo, n_resamples=50, rng=rng)  # fewer resamples than splits: sampled
    assert not sampled.exact and abs(sampled.p - middle.p) < 0.2


def _exact_share_reaching(pool: np.ndarray, n_real: int) -> float:
    """Share of the ``C(len(pool), n_real)`` splits whose sum reaches that of the first ``n_real``
    values, in exact rational arithmetic on the values as written (``Fraction(repr(0.1))`` is 1/10):
    decimal ties are ties, whatever the floating-point rounding of their sums."""
    exact = [Fraction(repr(float(value))) for value in pool]
    observed = sum(exact[:n_real])
    splits = list(itertools.combinations(exact, n_real))
    return sum(sum(split) >= observed for split in splits) / len(splits)


def test_group_level_exact_p_counts_the_observed_split_and_every_tie():
    """Enumerated splits: p is the exact share reaching the real mean, the observed split and its
    ties included -- a mean of exactly 0 (integers), and decimal ties such as 0.1 + 0.2 + 0.3 and
    0.0 + 0.1 + 0.5, whose float sums differ by rounding. The smallest sizes the function accepts
    (one real dyad; as many pseudo-dyads as real ones) are valid input."""
    real = np.array([[-1.0, 0.1], [0.0, 0.2], [1.0, 0.3]])
    pseudo = np.array([[-3.0, 0.3], [-2.0, 0.2], [2.0, 0.1], [3.0, 0.05], [0.0, 0.5], [-1.0, 0.0]])
    result = group_level(real, pseudo, n_resamples=300, rng=np.random.default_rng(0))
    assert result.exact
    pool = np.concatenate([real, pseudo])
    expected = [_exact_share_reaching(pool[:, k], 3) for k in range(2)]
    np.testing.assert_allclose(result.p, expected, rtol=0, atol=1e-15)
    assert 1 / 84 < result.p[0] < 1  # an informative split: neither the floor nor everything
    one_real = group_level(np.array([2.0]), np.array([1.0, 3.0, 2.0]), rng=np.random.default_rng(0))
    assert (one_real.exact, one_real.p) == (True, pytest.approx(3 / 4))  # itself, the tied 2.0 and 3.0
    as_many = group_level(np.array([1.0, 4.0]), np.array([2.0, 3.0]), rng=np.random.default_rng(0))
    assert as_many.p == pytest.approx(_exact_share_reaching(np.array([1.0, 4.0, 2.0, 3.0]), 2))  # 4 of 6


def test_group_level_sampled_p_is_never_zero_and_defaults_to_5000_resamples():
    """Sampled splits: ``p = (1 + #reaching) / (1 + n_resamples)`` (Phipson & Smyth 2010). Real
    dyads far above 100 pseudo-dyads: the observed split is 1 of C(103, 3) = 176 851, so no draw
    reaches it (but by a chance of n / 176 851) and p is the floor, 1 / (n_resamples + 1)."""
    rng = np.random.default_rng(11)
    real, pseudo = np.array([3.0, 3.1, 3.2]), rng.standard_normal(100)
    sampled = group_level(real, pseudo, n_resamples=200, rng=rng)
    assert not sampled.exact and sampled.p == pytest.approx(1 / 201)
    default = group_level(real, pseudo, rng=rng)
    assert default.p == pytest.approx(1 / 5001)


def test_splits_in_batches_give_the_values_of_one_batch(monkeypatch):
    """Splits are evaluated in batches that bound memory; counts add up over batches, so tiny
    batches give the p-values of one batch, enumerated or sampled (same generator state), for the
    group test and the condition contrast. As many draws as splits: all are enumerated."""
    rng = np.random.default_rng(12)
    pseudo = rng.standard_normal((12, 2))
    real = pseudo[:3] + 0.5
    epochs_a, epochs_b = rng.normal(0.3, 1.0, (7, 2)), rng.normal(size=(7, 2))
    epochs_a[:, 1] = epochs_b[:, 1] = 0.5  # every split reaches a difference of 0: every draw counts

    def both(n):
        return (
            group_level(real, pseudo, n_resamples=n, rng=np.random.default_rng(1)),
            condition_contrast(epochs_a, epochs_b, run_length=1, n_permutations=n, rng=np.random.default_rng(1)),
        )

    # C(14, 7) = 3432 and C(15, 3) = 455 splits: enumerated at n = 3432 or 455; 101 sampled draws leave a
    # last batch shorter than the others.
    draws = (3432, 455, 101)
    whole = [both(n) for n in draws]
    monkeypatch.setattr(stats, "_BATCH_ELEMENTS", 40)  # a few splits per batch
    batched = [both(n) for n in draws]
    assert [[r.exact for r in results] for results in whole] == [[True, True], [True, False], [False, False]]
    for one, many in zip(whole, batched):
        for r_one, r_many in zip(one, many):
            np.testing.assert_array_equal(r_many.p, r_one.p)


def test_group_level_leaves_out_missing_values_and_reports_nan_without_any_value():
    """A flat channel makes an element NaN for some dyads: means skip it (``nanmean``); an element
    with no real value has no p. Splits drawing only missing values raise no error."""
    real = np.array([[0.5, np.nan], [0.4, np.nan], [np.nan, np.nan]])
    pseudo = np.array([[0.1, np.nan], [0.2, np.nan], [np.nan, 0.3], [0.3, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice" for element 1
        result = group_level(real, pseudo, rng=np.random.default_rng(0))
    assert result.difference[0] == pytest.approx(0.45 - 0.2)
    assert np.isnan(result.difference[1]) and np.isnan(result.p[1])
    pool = np.concatenate([real[:, 0], pseudo[:, 0]])
    means = [np.nanmean(pool[list(split)]) for split in itertools.combinations(range(7), 3)]
    assert result.exact and result.p[0] == pytest.approx(np.mean(np.array(means) >= 0.45 - 1e-12))
    with pytest.raises(ValueError, match=r"differ in shape: \(2,\) vs \(3,\)"):
        group_level(np.zeros((2, 2)), np.zeros((4, 3)), rng=np.random.default_rng(0))


def test_condition_contrast_exact_p_with_two_epochs_each_and_default_permutations():
    """Two epochs per condition is the least the function accepts: 4 single-epoch runs, C(4, 2) = 6
    splits, all enumerated, p the share reaching |observed| (brute force). A large effect with
    sampled splits and the default ``n_permutations`` (1000) gets the floor 1 / 1001."""
    a, b = np.array([1.0, 4.0]), np.array([2.0, 0.5])
    result = condition_contrast(a, b, run_length=1, rng=np.random.default_rng(0))
    pool = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    differences = [pool[list(s)].mean() - np.delete(pool, list(s)).mean() for s in itertools.combinations(range(4), 2)]
    assert result.exact and result.difference == pytest.approx(observed)
    assert result.p == pytest.approx(np.mean(np.abs(differences) >= abs(observed) - 1e-12))
    same_means = condition_contrast(
        np.array([1.0, 2.0]), np.array([2.0, 1.0]), run_length=1, rng=np.random.default_rng(0)
    )
    assert same_means.difference == 0 and same_means.p == 1  # every split reaches a difference of 0
    rng = np.random.default_rng(13)
    strong = condition_contrast(rng.normal(5.0, 0.1, 20), rng.normal(0.0, 0.1, 20), run_length=1, rng=rng)
    assert not strong.exact and strong.p == pytest.approx(1 / 1001)  # C(40, 20) splits: sampled


def test_condition_contrast_null_without_values_gives_nan_for_that_element_only():
    """An all-NaN surrogate null (a flat channel in every surrogate) leaves that element without a
    bias correction: NaN difference and p, the other elements unaffected."""
    rng = np.random.default_rng(14)
    a, b = rng.normal(0.5, 0.1, (10, 2)), rng.normal(0.4, 0.1, (10, 2))
    null_a, null_b = np.full((20, 2), 0.1), np.full((20, 2), 0.1)
    null_a[:, 1] = np.nan
    result = condition_contrast(a, b, null_a, null_b, run_length=1, n_permutations=100, rng=rng)
    assert np.isnan(result.difference[1]) and np.isnan(result.p[1])
    assert result.difference[0] == pytest.approx(a[:, 0].mean() - b[:, 0].mean())


@pytest.mark.parametrize(
    ("epochs_a", "epochs_b", "options", "message"),
    [
        ((4, 2), (4, 3), {}, "conditions must have the same value shape after the epoch axis, got (2,) and (3,)"),
        ((1, 2), (5, 2), {}, "each condition needs at least 2 epochs, got 1 and 5"),
        ((5, 2), (1, 2), {}, "each condition needs at least 2 epochs, got 5 and 1"),
        ((4, 2), (4, 2), {"run_length": 2.5}, "run_length must be a positive integer, got 2.5"),
        ((4, 2), (4, 2), {"run_length": True}, "run_length must be a positive integer, got True"),
        ((4, 2), (4, 2), {"null_a": np.zeros((9, 2))}, "give surrogate nulls for both conditions or for neither"),
        (
            (4, 2),
            (4, 2),
            {"null_a": np.zeros((9, 3)), "null_b": np.zeros((9, 2))},
            "null_a must have shape (n_surrogates, (2,)), got (9, 3)",
        ),
        (
            (4, 2),
            (4, 2),
            {"null_a": np.zeros((9, 2)), "null_b": np.zeros((9, 1))},
            "null_b must have shape (n_surrogates, (2,)), got (9, 1)",
        ),
        ((4, 2), (4, 2), {"blocks_a": [0, 0, 1]}, "blocks_a must have one label per epoch, shape (4,), got (3,)"),
        ((4, 2), (4, 2), {"blocks_b": [0] * 5}, "blocks_b must have one label per epoch, shape (4,), got (5,)"),
    ],
)
def test_condition_contrast_bad_input_says_what_is_wrong(epochs_a, epochs_b, options, message):
    options = {"run_length": 1} | options
    with pytest.raises(ValueError) as error:
        condition_contrast(np.zeros(epochs_a), np.zeros(epochs_b), rng=np.random.default_rng(0), **options)
    assert str(error.value) == message


@pytest.mark.parametrize("surrogate", ["epoch-shuffle", "circular-shift"])
def test_calibration_notes_cite_existing_evidence_and_counts_within_their_binomial_range(surrogate):
    """The report's ``calibration`` names the report fields each test fills, cites files that exist,
    and quotes hit counts of 51 real null dyads inside the central 95 % binomial range it quotes,
    which is scipy's for 51 tests at 5 %. Only the epoch shuffle was calibrated on simulated noise."""
    notes = calibration_notes(surrogate)
    fields = {kind: note["fields"] for kind, note in notes.items()}
    assert fields == {
        "pair_p_fwer": ["pair_p_fwer", "n_significant_pairs_fwer"],
        "pair_p_fdr": ["pair_p_fdr", "n_significant_pairs"],
        "p": ["z", "p"],
    }
    repository = Path(__file__).resolve().parents[2]
    low, high = (int(bound) for bound in scipy.stats.binom.interval(0.95, 51, 0.05))
    shuffle = surrogate == "epoch-shuffle"
    for kind, note in notes.items():
        assert ("partner-epoch shuffle" if shuffle else "circular shift of B") in note["null"], kind
        for cited in note["evidence"]:
            path = Path(cited.split(" (")[0])
            assert path.parts[0] in ("tests", "benchmarks"), (kind, cited)
            # Mutation testing runs the tests in a copy holding tests/ and the package, not benchmarks/.
            assert (repository / path).is_file() or not (repository / path.parts[0]).is_dir(), (kind, cited)
        if note["real_data"] is not None:
            assert note["real_data"].startswith("51 null dyads of real EEG"), kind
            assert f"central 95 % binomial range {low}-{high} of a 5 % test" in note["real_data"], kind
            counts = re.findall(r"(\d+)-(\d+) of 51", note["real_data"])
            assert counts and all(low <= int(a) <= int(b) <= high for a, b in counts), (kind, counts)
    assert (notes["pair_p_fwer"]["simulated"] is not None) is shuffle
    assert (notes["p"]["simulated"] is not None) is shuffle
    assert notes["pair_p_fdr"]["simulated"] is None and notes["p"]["real_data"] is None
    assert notes["p"]["evidence"] == (["tests/synchrony/test_surrogates.py"] if shuffle else [])


@pytest.mark.parametrize("missing_in", ["a", "b"])
def test_condition_contrast_element_without_values_in_a_condition_is_nan_not_infinite(missing_in):
    """A channel flat throughout one condition: that element has no mean there, so no difference and
    no p (NaN), without warnings; the other elements are as computed alone. (The bug this guards:
    that condition's sum, taken as the total minus the other's, was rounding noise, not 0, so its
    "mean" was x/0 = inf and p sat at its floor, 1/1001: a "significant" contrast from no data.)"""
    rng = np.random.default_rng(15)
    present = np.column_stack([rng.normal(size=10), np.full(10, 0.3)])
    absent = np.column_stack([rng.normal(size=5), np.full(5, np.nan)])
    a, b = (present, absent) if missing_in == "b" else (absent, present)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = condition_contrast(a, b, run_length=1, n_permutations=1000, rng=np.random.default_rng(1))
    assert np.isnan(result.difference[1]) and np.isnan(result.p[1])
    alone = condition_contrast(a[:, :1], b[:, :1], run_length=1, n_permutations=1000, rng=np.random.default_rng(1))
    assert result.difference[0] == pytest.approx(alone.difference[0])
    assert result.difference[0] == pytest.approx(a[:, 0].mean() - b[:, 0].mean())
    assert result.p[0] == alone.p[0]


def test_pair_tests_parametric_p_is_students_two_sample_t_test_of_one_value_against_the_surrogates():
    """The FDR path's p per element is the prediction p of a new draw from the surrogates' normal
    distribution: Student's two-sample t-test (pooled variance) of a group of one, the observed
    value, against the n surrogates -- scipy's ``ttest_ind``, independently. Few surrogates (5), so
    that the ``1 + 1/n`` of the prediction variance matters; then Benjamini-Hochberg over the family."""
    rng = np.random.default_rng(16)
    null = rng.standard_normal((5, 3, 4))
    observed = rng.standard_normal((3, 4)) * 2
    tests = pair_tests(observed, null)
    p_t = scipy.stats.ttest_ind(observed[None], null, axis=0, equal_var=True, alternative="greater").pvalue
    np.testing.assert_allclose(tests.p_fdr, scipy.stats.false_discovery_control(p_t.ravel()).reshape(3, 4), atol=1e-12)


def test_pair_tests_apply_alpha_to_both_corrections():
    """``alpha`` sets the level of the FDR and of the family-wise rejections alike."""
    rng = np.random.default_rng(17)
    null = rng.standard_normal((99, 4, 4))
    observed = rng.standard_normal((4, 4))
    observed[0, 0], observed[1, 1], observed[2, 2] = 3.6, 2.9, 2.2
    tests = {alpha: pair_tests(observed, null, alpha=alpha) for alpha in (0.05, 0.2)}
    for alpha, result in tests.items():
        np.testing.assert_array_equal(result.reject_fwer, result.p_fwer <= alpha)
        np.testing.assert_array_equal(result.reject_fdr, result.p_fdr <= alpha)
        np.testing.assert_allclose(result.z, surrogate_z_p(observed, null)[0], rtol=1e-12)
    # Elements between the two levels, so that the level used is visible in both corrections.
    assert np.any((tests[0.2].p_fwer > 0.05) & (tests[0.2].p_fwer <= 0.2))
    assert np.any((tests[0.2].p_fdr > 0.05) & (tests[0.2].p_fdr <= 0.2))


def test_condition_contrast_exact_p_per_element_is_the_brute_force_share():
    """6 + 6 single-epoch runs: C(12, 6) = 924 splits, enumerated; every element's p is its own share
    of splits whose |difference| reaches the observed one (the observed split included), whatever the
    other elements, and values keep their (2, 3) shape."""
    rng = np.random.default_rng(18)
    a = rng.normal(size=(6, 2, 3)) + np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0]).reshape(2, 3)
    b = rng.normal(size=(6, 2, 3))
    result = condition_contrast(a, b, run_length=1, n_permutations=1000, rng=rng)
    assert result.exact and result.difference.shape == result.p.shape == (2, 3)
    pool = np.concatenate([a, b])
    observed = a.mean(axis=0) - b.mean(axis=0)
    reaching = np.zeros((2, 3))
    splits = list(itertools.combinations(range(12), 6))
    for split in splits:
        rest = np.setdiff1d(np.arange(12), split)
        reaching += np.abs(pool[list(split)].mean(axis=0) - pool[rest].mean(axis=0)) >= np.abs(observed) * (1 - 1e-12)
    np.testing.assert_allclose(result.difference, observed, atol=1e-12)
    np.testing.assert_allclose(result.p, reaching / len(splits), rtol=0, atol=1e-15)
    assert len(np.unique(result.p)) > 3  # the elements differ: an informative comparison


def test_fdr_follows_benjamini_hochberg_at_the_boundaries():
    """Benjamini & Hochberg (1995) reject every p(i) up to the largest with p(i) <= (i / m) alpha:
    equality rejects (values exact in binary). p-values of exactly 0 and 1 are valid; ``reject`` is a
    boolean mask; alpha must lie strictly between 0 and 1, here and in the max statistic."""
    reject, adjusted = fdr(np.array([0.125, 0.25]), alpha=0.25)
    assert reject.dtype == bool and reject.tolist() == [True, True]
    np.testing.assert_array_equal(adjusted, [0.25, 0.25])
    reject, adjusted = fdr(np.array([0.0, 1.0, np.nan]))
    assert reject.tolist() == [True, False, False] and adjusted[:2].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError) as error:
        fdr(np.array([0.5, -0.1]))
    assert str(error.value) == "p-values must lie in [0, 1]"
    observed, null = np.zeros(3), np.random.default_rng(19).standard_normal((20, 3))
    for alpha in (0.0, 1.0, 1.5):
        for correction in (fdr, max_statistic_threshold):
            with pytest.raises(ValueError) as error:
                correction(np.array([0.5]), alpha=alpha) if correction is fdr else correction(observed, null, alpha)
            assert str(error.value) == f"alpha must be in (0, 1), got {alpha}"


def test_single_precision_values_are_tested_in_double_precision():
    """float32 values (e.g. synchrony of single-precision epochs) give the results of the same values
    in float64: means over runs, dyads and splits, and the adjusted p-values, are not accumulated in
    single precision (whose rounding, 6e-8, would move ties and last digits)."""
    rng = np.random.default_rng(20)
    a, b = rng.normal(0.3, 0.1, (30, 3)).astype(np.float32), rng.normal(0.3, 0.1, (30, 3)).astype(np.float32)
    null_a, null_b = (
        rng.normal(0.1, 0.01, (50, 3)).astype(np.float32),
        rng.normal(0.1, 0.01, (50, 3)).astype(np.float32),
    )
    single = condition_contrast(a, b, null_a, null_b, run_length=5, rng=np.random.default_rng(1))
    double = condition_contrast(
        *(x.astype(np.float64) for x in (a, b, null_a, null_b)), run_length=5, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(single.difference, double.difference)
    np.testing.assert_array_equal(single.p, double.p)
    raw_single = condition_contrast(a, b, run_length=5, rng=np.random.default_rng(1))
    raw_double = condition_contrast(
        a.astype(np.float64), b.astype(np.float64), run_length=5, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(raw_single.difference, raw_double.difference)
    real, pseudo = a[:4], b[:12]
    np.testing.assert_array_equal(
        group_level(real, pseudo, rng=np.random.default_rng(1)).difference,
        group_level(real.astype(np.float64), pseudo.astype(np.float64), rng=np.random.default_rng(1)).difference,
    )
    p = rng.uniform(0, 0.1, 20).astype(np.float32)
    np.testing.assert_array_equal(fdr(p)[1], fdr(p.astype(np.float64))[1])


def test_surrogate_z_p_edges_two_surrogates_missing_values_and_no_spread():
    """Two surrogates are enough; NaN in a null leaves that surrogate out (mean and sample standard
    deviation, ddof=1, of the rest); a null without spread gives z NaN silently; float32 values are
    computed in double precision; shape errors name both shapes."""
    z, p = surrogate_z_p(np.array([3.0]), np.array([[1.0], [2.0]]))
    assert z[0] == pytest.approx((3.0 - 1.5) / np.std([1.0, 2.0], ddof=1)) and p[0] == pytest.approx(1 / 3)
    null = np.array([[1.0, 1.0], [2.0, np.nan], [4.0, 2.0], [7.0, 4.0]])
    z, p = surrogate_z_p(np.array([5.0, 5.0]), null)
    assert z[1] == pytest.approx((5.0 - 7 / 3) / np.std([1.0, 2.0, 4.0], ddof=1))
    assert z[0] == pytest.approx((5.0 - 3.5) / np.std([1.0, 2.0, 4.0, 7.0], ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 and x/0 stay quiet
        z, p = surrogate_z_p(np.array([0.0, 1.0]), np.zeros((10, 2)))
    assert np.isnan(z).all() and p.tolist() == pytest.approx([11 / 11, 1 / 11])
    rng = np.random.default_rng(21)
    observed, null = rng.normal(size=3).astype(np.float32), rng.normal(size=(50, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        surrogate_z_p(observed, null)[0], surrogate_z_p(observed.astype(float), null.astype(float))[0]
    )
    with pytest.raises(ValueError) as error:
        surrogate_z_p(np.zeros((2, 2)), np.zeros((10, 3, 2)))
    assert str(error.value) == "null must have shape (n_surrogates, *observed.shape) = (n, 2, 2), got (10, 3, 2)"
    with pytest.raises(ValueError) as error:
        surrogate_z_p(np.zeros(2), np.zeros((1, 2)))
    assert str(error.value) == "need at least 2 surrogates, got 1"


def test_max_statistic_rejects_at_p_equal_to_alpha_and_never_an_element_without_a_null():
    """One element with surrogates 1..99 and observed 95.5: 4 surrogates reach it, p = 5/100 = alpha,
    rejected (``p <= alpha``); an element whose null has no spread has no z and no p, never rejected."""
    null = np.column_stack([np.arange(1.0, 100.0), np.zeros(99)])
    result = max_statistic_threshold(np.array([95.5, 1.0]), null, alpha=0.05)
    assert result.p_corrected[0] == 0.05 and result.reject[0]
    assert np.isnan(result.z[1]) and np.isnan(result.p_corrected[1]) and not result.reject[1]
