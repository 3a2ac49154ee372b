"""Statistics on synchrony values against surrogate and pseudo-dyad nulls.

All functions work element-wise on arrays of any trailing shape (channel pairs, bands,
metrics), with the surrogate / permutation axis first where there is one. Every test is
one-sided toward *more* synchrony than the null, except :func:`condition_contrast`, which is
two-sided. Empirical p-values use the ``(1 + #(null >= observed)) / (1 + n)`` rule, so they
are never 0 and are valid (Phipson & Smyth 2010).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.stats

__all__ = [
    "ContrastResult",
    "GroupResult",
    "MaxStatResult",
    "condition_contrast",
    "fdr",
    "group_level",
    "max_statistic_threshold",
    "surrogate_z_p",
]


# Elements per vectorised batch of permutations/resamples (bounds memory, ~64 MB).
_BATCH_ELEMENTS = 8_000_000


def _batches(n_total: int, elements_per_item: int):
    """Batch sizes that add up to ``n_total`` with at most ``_BATCH_ELEMENTS`` elements each."""
    size = max(1, _BATCH_ELEMENTS // max(1, elements_per_item))
    for start in range(0, n_total, size):
        yield min(size, n_total - start)


def _null_and_observed(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != observed.ndim + 1 or null.shape[1:] != observed.shape:
        raise ValueError(
            f"null must have shape (n_surrogates, *observed.shape) = (n, {', '.join(map(str, observed.shape))}), "
            f"got {null.shape}"
        )
    if null.shape[0] < 2:
        raise ValueError(f"need at least 2 surrogates, got {null.shape[0]}")
    return observed, null


def _z_against(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    mean = np.nanmean(null, axis=0)
    std = np.nanstd(null, axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (observed - mean) / std, np.nan)


def surrogate_z_p(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-score and one-sided empirical p-value of observed values against a surrogate null.

    Parameters
    ----------
    observed : np.ndarray, shape (...)
        Observed statistic, e.g. a (n_channels_a, n_channels_b) PLV matrix or a scalar mean.
    null : np.ndarray, shape (n_surrogates, ...)
        The same statistic on each surrogate.

    Returns
    -------
    z : np.ndarray, shape (...)
        ``(observed - mean(null)) / std(null)`` (``ddof=1``); NaN where the null has no spread.
    p : np.ndarray, shape (...)
        ``(1 + #(null >= observed)) / (1 + n_surrogates)``, in (0, 1]; NaN where observed is NaN.
    """
    observed, null = _null_and_observed(observed, null)
    z = _z_against(observed, null)
    exceed = np.sum(null >= observed, axis=0)
    p = (1.0 + exceed) / (1.0 + null.shape[0])
    return z, np.where(np.isnan(observed), np.nan, p)


def fdr(pvals: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg false discovery rate over all elements (e.g. pairs x bands).

    Parameters
    ----------
    pvals : np.ndarray, shape (...)
        p-values; NaNs are ignored (not tested, never rejected).
    alpha : float, default 0.05
        FDR level.

    Returns
    -------
    reject : np.ndarray of bool, shape (...)
    p_adjusted : np.ndarray, shape (...)
        BH-adjusted p-values (``scipy.stats.false_discovery_control``), NaN where the input is.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    pvals = np.asarray(pvals, dtype=np.float64)
    finite = np.isfinite(pvals)
    if np.any((pvals[finite] < 0) | (pvals[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = np.full(pvals.shape, np.nan)
    if finite.any():
        adjusted[finite] = scipy.stats.false_discovery_control(pvals[finite], method="bh")
    reject = np.zeros(pvals.shape, dtype=bool)
    reject[finite] = adjusted[finite] <= alpha
    return reject, adjusted


@dataclass(frozen=True)
class MaxStatResult:
    """Family-wise (max-statistic) correction of surrogate z-scores.

    Attributes
    ----------
    z : np.ndarray, shape (...)
        Observed z-scores (as :func:`surrogate_z_p`).
    p_corrected : np.ndarray, shape (...)
        ``(1 + #(max_k z_null[s, k] >= z)) / (1 + n_surrogates)``: family-wise p-values.
    threshold : float
        z above which an element is significant at ``alpha``, family-wise.
    reject : np.ndarray of bool, shape (...)
    """

    z: np.ndarray
    p_corrected: np.ndarray
    threshold: float
    reject: np.ndarray


def max_statistic_threshold(observed: np.ndarray, null: np.ndarray, alpha: float = 0.05) -> MaxStatResult:
    """Max-statistic family-wise correction over all elements (pairs x bands x metrics).

    Each element is standardised against its own null (z-scores), so elements of different
    scale (bands, metrics) form one family; the family-wise null is the maximum z over the
    family in each surrogate. The surrogates of all elements must come from the *same*
    permutations (pass one ``permutations`` array to every band's
    :func:`synchrony.surrogates.epoch_shuffle_surrogates`), or the maximum is not a valid
    joint null.

    Parameters
    ----------
    observed : np.ndarray, shape (...)
    null : np.ndarray, shape (n_surrogates, ...)
    alpha : float, default 0.05

    Returns
    -------
    MaxStatResult
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    observed, null = _null_and_observed(observed, null)
    z = _z_against(observed, null)
    null_z = _z_against(null, null)
    with np.errstate(invalid="ignore"):
        max_null = np.nanmax(null_z.reshape(null.shape[0], -1), axis=1)
    p = (1.0 + np.sum(max_null[:, None] >= z.reshape(1, -1), axis=0)) / (1.0 + null.shape[0])
    p = np.where(np.isnan(z), np.nan, p.reshape(z.shape))
    threshold = float(np.quantile(max_null, 1 - alpha))
    return MaxStatResult(z=z, p_corrected=p, threshold=threshold, reject=np.nan_to_num(p, nan=1.0) <= alpha)


@dataclass(frozen=True)
class ContrastResult:
    """Condition contrast (e.g. cooperation vs rest).

    Attributes
    ----------
    difference : np.ndarray, shape (...)
        Bias-corrected difference ``(mean_a - null_mean_a) - (mean_b - null_mean_b)``, or the
        raw difference of means when no null was given.
    p : np.ndarray, shape (...)
        Two-sided permutation p-value (epoch labels exchanged between the conditions).
    """

    difference: np.ndarray
    p: np.ndarray


def condition_contrast(
    epochs_a: np.ndarray,
    epochs_b: np.ndarray,
    null_a: np.ndarray | None = None,
    null_b: np.ndarray | None = None,
    *,
    n_permutations: int = 1000,
    rng: np.random.Generator,
) -> ContrastResult:
    """Compare synchrony between two conditions of one dyad (e.g. cooperation vs rest).

    The statistic is the difference of epoch means, each corrected by its own condition's
    surrogate mean when nulls are given: conditions differ in rhythmicity and SNR, which
    shifts the estimator's bias (Burgess 2013), so real-minus-surrogate values are compared.
    Its p-value comes from exchanging epoch labels between the conditions (the pooled epochs
    are re-split at random, keeping each condition's epoch count), which gives the sampling
    variability of a difference of epoch means.

    Parameters
    ----------
    epochs_a : np.ndarray, shape (n_epochs_a, ...)
        Per-epoch values in condition A (``inter_brain_connectivity(..., epochs_average=False)``).
    epochs_b : np.ndarray, shape (n_epochs_b, ...)
        Per-epoch values in condition B, same trailing shape.
    null_a, null_b : np.ndarray, shape (n_surrogates, ...), optional
        Surrogate nulls of each condition (both or neither).
    n_permutations : int, default 1000
    rng : np.random.Generator

    Returns
    -------
    ContrastResult
    """
    epochs_a = np.asarray(epochs_a, dtype=np.float64)
    epochs_b = np.asarray(epochs_b, dtype=np.float64)
    if epochs_a.shape[1:] != epochs_b.shape[1:]:
        raise ValueError(
            f"conditions must have the same value shape after the epoch axis, got {epochs_a.shape[1:]} "
            f"and {epochs_b.shape[1:]}"
        )
    if len(epochs_a) < 2 or len(epochs_b) < 2:
        raise ValueError(f"each condition needs at least 2 epochs, got {len(epochs_a)} and {len(epochs_b)}")
    if (null_a is None) != (null_b is None):
        raise ValueError("give surrogate nulls for both conditions or for neither")
    bias = 0.0
    if null_a is not None:
        null_a = np.asarray(null_a, dtype=np.float64)
        null_b = np.asarray(null_b, dtype=np.float64)
        for name, null in (("null_a", null_a), ("null_b", null_b)):
            if null.shape[1:] != epochs_a.shape[1:]:
                raise ValueError(f"{name} must have shape (n_surrogates, {epochs_a.shape[1:]}), got {null.shape}")
        bias = np.nanmean(null_a, axis=0) - np.nanmean(null_b, axis=0)
    observed_raw = np.nanmean(epochs_a, axis=0) - np.nanmean(epochs_b, axis=0)
    difference = observed_raw - bias
    pooled = np.concatenate([epochs_a, epochs_b])
    n_a = len(epochs_a)
    exceed = np.zeros(difference.shape)
    for batch in _batches(n_permutations, len(pooled) * max(1, difference.size)):
        order = rng.permuted(np.tile(np.arange(len(pooled)), (batch, 1)), axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN element stays NaN
            permuted = np.nanmean(pooled[order[:, :n_a]], axis=1) - np.nanmean(pooled[order[:, n_a:]], axis=1)
        exceed += np.sum(np.abs(permuted) >= np.abs(difference), axis=0)
    p = (1.0 + exceed) / (1.0 + n_permutations)
    return ContrastResult(difference=difference, p=np.where(np.isnan(difference), np.nan, p))


@dataclass(frozen=True)
class GroupResult:
    """Real dyads against pseudo-dyads.

    Attributes
    ----------
    difference : np.ndarray, shape (...)
        ``mean(real) - mean(pseudo)``.
    p : np.ndarray, shape (...)
        One-sided p-value: how often the mean of ``n_real`` randomly drawn pseudo-dyads reaches
        the real dyads' mean.
    n_real, n_pseudo : int
    """

    difference: np.ndarray
    p: np.ndarray
    n_real: int
    n_pseudo: int


def group_level(
    real: np.ndarray,
    pseudo: np.ndarray,
    *,
    n_resamples: int = 5000,
    rng: np.random.Generator,
) -> GroupResult:
    """Do real dyads synchronise more than pseudo-dyads doing the same task?

    The pseudo-dyads (A of one dyad with B of another, see
    :func:`synchrony.surrogates.pseudo_dyads`) carry everything shared by any two people in
    the task -- stimulus- and movement-locked entrainment, condition-wide rhythmicity -- so a
    real-dyad excess is interaction-specific. Each resample draws ``n_real`` pseudo-dyads
    without replacement and takes their mean; the p-value is the share of resampled means at
    or above the real mean.

    Parameters
    ----------
    real : np.ndarray, shape (n_real, ...)
        One value per real dyad (or session), e.g. surrogate-corrected PLV or z per pair.
    pseudo : np.ndarray, shape (n_pseudo, ...)
        The same statistic per pseudo-dyad; ``n_pseudo >= n_real``.
    n_resamples : int, default 5000
    rng : np.random.Generator

    Returns
    -------
    GroupResult
    """
    real = np.asarray(real, dtype=np.float64)
    pseudo = np.asarray(pseudo, dtype=np.float64)
    if real.shape[1:] != pseudo.shape[1:]:
        raise ValueError(f"real and pseudo values differ in shape: {real.shape[1:]} vs {pseudo.shape[1:]}")
    n_real, n_pseudo = len(real), len(pseudo)
    if n_real < 1 or n_pseudo < n_real:
        raise ValueError(
            f"need at least one real dyad and at least as many pseudo-dyads ({n_pseudo}) as real ones ({n_real})"
        )
    real_mean = np.nanmean(real, axis=0)
    exceed = np.zeros(real_mean.shape)
    for batch in _batches(n_resamples, n_real * max(1, real_mean.size)):
        draws = np.argsort(rng.random((batch, n_pseudo)), axis=1)[:, :n_real]  # without replacement
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            exceed += np.sum(np.nanmean(pseudo[draws], axis=1) >= real_mean, axis=0)
    p = (1.0 + exceed) / (1.0 + n_resamples)
    return GroupResult(
        difference=real_mean - np.nanmean(pseudo, axis=0),
        p=np.where(np.isnan(real_mean), np.nan, p),
        n_real=n_real,
        n_pseudo=n_pseudo,
    )
