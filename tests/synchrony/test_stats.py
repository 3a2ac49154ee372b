"""Statistics on surrogate nulls: z/p, FDR, max-statistic, condition contrast, group level."""

from __future__ import annotations

import numpy as np
import pytest

from synchrony.stats import (
    condition_contrast,
    fdr,
    group_level,
    max_statistic_threshold,
    surrogate_z_p,
)


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


def test_max_statistic_detects_a_real_effect():
    rng = np.random.default_rng(1)
    null = rng.standard_normal((500, 3, 3))
    observed = rng.standard_normal((3, 3))
    observed[1, 2] = 8.0
    result = max_statistic_threshold(observed, null)
    assert result.reject[1, 2] and result.reject.sum() == 1
    assert 2.0 < result.threshold < 4.5


def test_condition_contrast_detects_a_difference_and_corrects_bias():
    rng = np.random.default_rng(2)
    coop = rng.normal(0.5, 0.1, (60, 2))
    rest = rng.normal(0.4, 0.1, (60, 2))
    raw = condition_contrast(coop, rest, n_permutations=500, rng=rng)
    np.testing.assert_allclose(raw.difference, coop.mean(0) - rest.mean(0))
    assert np.all(raw.p < 0.01)
    # Same raw difference, but the cooperation condition's estimator bias is 0.1 higher
    # (e.g. stronger rhythmicity): the corrected difference vanishes.
    null_coop = rng.normal(0.35, 0.01, (200, 2))
    null_rest = rng.normal(0.25, 0.01, (200, 2))
    corrected = condition_contrast(coop, rest, null_coop, null_rest, n_permutations=500, rng=rng)
    assert np.all(np.abs(corrected.difference) < 0.05)
    assert np.all(corrected.p > 0.05)
    with pytest.raises(ValueError, match="both conditions or for neither"):
        condition_contrast(coop, rest, null_coop, None, rng=rng)


def test_condition_contrast_is_calibrated_without_a_difference():
    rng = np.random.default_rng(3)
    p = [condition_contrast(rng.normal(size=(20, 1)), rng.normal(size=(25, 1)), n_permutations=200, rng=rng).p[0]
         for _ in range(200)]
    assert 3 <= sum(np.array(p) < 0.05) <= 20  # Binomial(200, 0.05): mean 10, sd 3.1


def test_group_level_real_versus_pseudo_dyads():
    rng = np.random.default_rng(4)
    pseudo = rng.normal(0.30, 0.02, (30, 2))
    real = rng.normal([0.35, 0.30], 0.02, (6, 2))  # only the first element is interaction-specific
    result = group_level(real, pseudo, n_resamples=2000, rng=rng)
    assert result.p[0] < 0.01 and result.p[1] > 0.01
    assert result.difference[0] == pytest.approx(real[:, 0].mean() - pseudo[:, 0].mean())
    assert (result.n_real, result.n_pseudo) == (6, 30)
    with pytest.raises(ValueError, match="at least as many pseudo-dyads"):
        group_level(real, pseudo[:3], rng=rng)
