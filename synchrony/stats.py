"""Statistics on synchrony values against surrogate and pseudo-dyad nulls.

All functions work element-wise on arrays of any trailing shape (channel pairs, bands,
metrics), with the surrogate / permutation axis first where there is one. Every test is
one-sided toward *more* synchrony than the null, except :func:`condition_contrast`, which is
two-sided. Empirical p-values use the ``(1 + #(null >= observed)) / (1 + n)`` rule, so they
are never 0 and are valid (Phipson & Smyth 2010).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

__all__ = [
    "ContrastResult",
    "GroupResult",
    "MaxStatResult",
    "PairTests",
    "calibration_notes",
    "condition_contrast",
    "fdr",
    "group_level",
    "max_statistic_threshold",
    "pair_tests",
    "surrogate_z_p",
]


# Elements per vectorised batch of permutations/resamples (bounds memory, ~64 MB).
_BATCH_ELEMENTS = 8_000_000


def _batches(n_total: int, elements_per_item: int) -> Iterator[int]:
    """Batch sizes that add up to ``n_total`` with at most ``_BATCH_ELEMENTS`` elements each."""
    size = max(1, _BATCH_ELEMENTS // max(1, elements_per_item))
    for start in range(0, n_total, size):
        yield min(size, n_total - start)


def _splits(
    n_pool: int, n_first: int, n_draws: int, elements_per_item: int, rng: np.random.Generator
) -> tuple[bool, int, Iterator[np.ndarray]]:
    """The splits of a permutation test: which ``n_first`` members of a pool form the first group.

    Every split when there are at most ``n_draws`` (an exact test; the observed split is among
    them), else ``n_draws`` drawn at random.

    Returns
    -------
    exact : bool
    n_splits : int
    batches : iterator of np.ndarray of int, shape (batch, n_first)
        Pool indices of the first group, batched to bound memory.
    """
    exact = math.comb(n_pool, n_first) <= n_draws
    every = np.array(list(itertools.combinations(range(n_pool), n_first))) if exact else None
    n_splits = n_draws if every is None else len(every)

    def batches() -> Iterator[np.ndarray]:
        done = 0
        for batch in _batches(n_splits, n_pool + elements_per_item):
            if every is not None:  # exact
                yield every[done : done + batch]
            else:
                yield np.argsort(rng.random((batch, n_pool)), axis=1)[:, :n_first]  # without replacement
            done += batch

    return exact, n_splits, batches()


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
    if np.isnan(null).any():  # flat channels: NaN-aware, several times slower
        mean = np.nanmean(null, axis=0)
        std = np.nanstd(null, axis=0, ddof=1)
    else:
        mean = null.mean(axis=0)
        std = null.std(axis=0, ddof=1)
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
        ``(1 + #(max_k z_null[s, k] >= z)) / (1 + n_surrogates)``: family-wise p-values, with
        the observed and surrogate values of each element standardised together (see
        :func:`max_statistic_threshold`).
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
    permutations (one :func:`dyadlab.synchrony.surrogates.shuffle_plan` passed to every band's
    :func:`dyadlab.synchrony.surrogates.shuffle_null`), or the maximum is not a valid joint null.

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
    # The family-wise test standardises the observed values and the surrogates alike, by the
    # mean and spread of all n + 1 of them: exchangeable under the null, so the test is exact.
    # (Standardising by the surrogates alone shrinks their own z relative to the observed one:
    # 7-10 % family-wise errors instead of 5 % in simulations with 99 surrogates.)
    pooled = np.concatenate([observed[None], null])
    pooled_z = _z_against(pooled, pooled)
    with np.errstate(invalid="ignore"):
        max_null = np.nanmax(pooled_z[1:].reshape(null.shape[0], -1), axis=1)
    # #(max_null >= z) for every element at once: count from the sorted maxima.
    ordered = np.sort(max_null[~np.isnan(max_null)])
    observed_z = pooled_z[0].reshape(-1)
    exceed = ordered.size - np.searchsorted(ordered, np.nan_to_num(observed_z, nan=np.inf), side="left")
    p = (1.0 + exceed) / (1.0 + null.shape[0])
    p = np.where(np.isnan(z), np.nan, p.reshape(z.shape))
    threshold = float(np.quantile(max_null, 1 - alpha))
    return MaxStatResult(z=z, p_corrected=p, threshold=threshold, reject=np.nan_to_num(p, nan=1.0) <= alpha)


@dataclass(frozen=True)
class PairTests:
    """Every element (e.g. channel pair x band) against one joint surrogate null.

    Attributes
    ----------
    z : np.ndarray, shape (...)
        Surrogate z-scores (as :func:`surrogate_z_p`).
    p_fdr : np.ndarray, shape (...)
        Benjamini-Hochberg adjusted p-values of each element's parametric p (see
        :func:`pair_tests`).
    reject_fdr : np.ndarray of bool, shape (...)
    p_fwer : np.ndarray, shape (...)
        Max-statistic family-wise p-values (:func:`max_statistic_threshold`).
    reject_fwer : np.ndarray of bool, shape (...)
    """

    z: np.ndarray
    p_fdr: np.ndarray
    reject_fdr: np.ndarray
    p_fwer: np.ndarray
    reject_fwer: np.ndarray


def pair_tests(observed: np.ndarray, null: np.ndarray, alpha: float = 0.05) -> PairTests:
    """False discovery rate and family-wise tests over many elements sharing one null.

    - FDR: Benjamini-Hochberg over the one-sided p of each element's z under a normal null
      whose mean and spread are estimated from the n surrogates -- Student's t with n - 1
      degrees of freedom of ``z / sqrt(1 + 1/n)`` (the prediction distribution of a new
      draw). The empirical p cannot go below ``1 / (n + 1)``, which BH over thousands of
      channel pairs can almost never reject; a surrogate value of a pair is a mean over
      epochs, close to normal.
    - FWER: the max statistic (:func:`max_statistic_threshold`), valid when all elements'
      surrogates come from the same permutations.

    Parameters
    ----------
    observed : np.ndarray, shape (...)
    null : np.ndarray, shape (n_surrogates, ...)
    alpha : float, default 0.05

    Returns
    -------
    PairTests
    """
    family = max_statistic_threshold(observed, null, alpha=alpha)
    n = null.shape[0]
    with np.errstate(invalid="ignore"):
        p_parametric = scipy.stats.t.sf(family.z / np.sqrt(1.0 + 1.0 / n), df=n - 1)
    reject, p_fdr = fdr(p_parametric, alpha=alpha)
    return PairTests(z=family.z, p_fdr=p_fdr, reject_fdr=reject, p_fwer=family.p_corrected, reject_fwer=family.reject)


_REAL_NULL = (
    "51 null dyads of real EEG: the EEGLAB tutorial recording (one person, 32 channels, 128 Hz, "
    "238 s, with its blinks and unequal channel variances) as A and the same recording 20-120 s later "
    "as B, each dyad through the whole quick-check, every default metric and band"
)


def calibration_notes(surrogate: str) -> dict[str, dict[str, Any]]:
    """What each test of the quick-check report was calibrated on (the report's ``calibration``).

    Parameters
    ----------
    surrogate : {"epoch-shuffle", "circular-shift"}
        The report's null.

    Returns
    -------
    dict of str to dict
        Per kind of test: the report ``fields`` it fills, its ``null``, the ``simulated`` and
        ``real_data`` null data sets on which its false-positive rate was measured (``None``:
        not measured), and the ``evidence`` (tests and benchmarks that measure it).
    """
    shuffle = surrogate == "epoch-shuffle"
    null = (
        "partner-epoch shuffle, uniform permutations within strata of 16-31 epochs"
        if shuffle
        else "circular shift of B by at least 2 s, the same shifts in every band"
    )
    real_fwer = (
        "family-wise hits in 0-4 of 51 per metric (envcorr 2, imCoh and wPLI 4), within the central 95 % "
        "binomial range 0-6 of a 5 % test"
        if shuffle
        else "family-wise hits in 0-3 of 51 per metric (envcorr and wPLI 3) with 20 surrogates per dyad, within "
        "the central 95 % binomial range 0-6 of a 5 % test"
    )
    return {
        "pair_p_fwer": {
            "fields": ["pair_p_fwer", "n_significant_pairs_fwer"],
            "null": f"{null}; max statistic over all pairs and bands of a metric, observed and surrogates "
            "standardised together",
            "simulated": "independent noise (tests/synchrony/test_stats.py): the max statistic on 300 families "
            "of unequal scale, and the stratified shuffle end to end on 300 noise dyads smoothed across epochs"
            if shuffle
            else None,
            "real_data": f"{_REAL_NULL}: {real_fwer}",
            "evidence": [
                "benchmarks/bench_calibration_real.py",
                "tests/synchrony/test_calibration_real.py (epoch shuffle, 50 dyads, envcorr, imCoh, PLV)",
                "tests/synchrony/test_stats.py",
            ],
        },
        "pair_p_fdr": {
            "fields": ["pair_p_fdr", "n_significant_pairs"],
            "null": f"{null}; Benjamini-Hochberg on a parametric (Student t) p per pair: approximate",
            "simulated": None,
            "real_data": f"{_REAL_NULL}: any rejection (a family-wise error under this complete null) in "
            + ("1-4 of 51 per metric" if shuffle else "1-3 of 51 per metric")
            + ", within the central 95 % binomial range 0-6 of a 5 % test",
            "evidence": ["benchmarks/bench_calibration_real.py"],
        },
        "p": {
            "fields": ["z", "p"],
            "null": f"{null}; empirical p of the mean over pairs",
            "simulated": "independent noise, 2000 dyads per metric at the surrogate test's level "
            "(tests/synchrony/test_surrogates.py)"
            if shuffle
            else None,
            "real_data": None,
            "evidence": ["tests/synchrony/test_surrogates.py"] if shuffle else [],
        },
    }


@dataclass(frozen=True)
class ContrastResult:
    """Condition contrast (e.g. cooperation vs rest).

    Attributes
    ----------
    difference : np.ndarray, shape (...)
        Bias-corrected difference ``(mean_a - null_mean_a) - (mean_b - null_mean_b)``, or the
        raw difference of means when no null was given.
    p : np.ndarray, shape (...)
        Two-sided permutation p-value (runs of consecutive epochs exchanged between the
        conditions).
    n_runs_a, n_runs_b : int
        Exchangeable runs per condition. The two-sided p cannot go below
        ``1 / C(n_runs_a + n_runs_b, n_runs_a)`` (twice that when the counts are equal).
    exact : bool
        Every split of the runs was enumerated (``p`` is the exact permutation p-value), rather
        than ``n_permutations`` random ones.
    """

    difference: np.ndarray
    p: np.ndarray
    n_runs_a: int
    n_runs_b: int
    exact: bool


def _run_starts(n_epochs: int, run_length: int, blocks: np.ndarray | None, name: str) -> np.ndarray:
    """Index of the first epoch of each run: ``run_length`` epochs from each block's start.

    A block is a stretch of consecutive equal labels; its last run is shorter when the block
    does not divide evenly.
    """
    if blocks is None:
        position = np.arange(n_epochs)
    else:
        blocks = np.asarray(blocks)
        if blocks.shape != (n_epochs,):
            raise ValueError(f"{name} must have one label per epoch, shape ({n_epochs},), got {blocks.shape}")
        new_block = np.r_[True, blocks[1:] != blocks[:-1]]
        block_first = np.maximum.accumulate(np.where(new_block, np.arange(n_epochs), 0))
        position = np.arange(n_epochs) - block_first
    return np.flatnonzero(position % run_length == 0)


def condition_contrast(
    epochs_a: np.ndarray,
    epochs_b: np.ndarray,
    null_a: np.ndarray | None = None,
    null_b: np.ndarray | None = None,
    *,
    run_length: int,
    blocks_a: np.ndarray | None = None,
    blocks_b: np.ndarray | None = None,
    n_permutations: int = 1000,
    rng: np.random.Generator,
) -> ContrastResult:
    """Compare synchrony between two conditions of one dyad (e.g. cooperation vs rest).

    The statistic is the difference of epoch means, each corrected by its own condition's
    surrogate mean when nulls are given: conditions differ in rhythmicity and SNR, which
    shifts the estimator's bias (Burgess 2013), so real-minus-surrogate values are compared.
    The correction is applied to every epoch *before* the permutation, so the permuted
    differences are centred where the observed one is under the null (permuting raw values
    would mix the two conditions' biases into the null's spread).

    The p-value comes from exchanging **runs** of consecutive epochs between the conditions.
    Consecutive epochs of one recording are autocorrelated (slow drifts of state, arousal,
    electrode contact), so exchanging single epochs treats dependent values as independent and
    gives too small p-values. The rule:

    - each condition's epochs (in time order) are cut into runs of ``run_length`` epochs,
      counted from the start of each block; a run never crosses a block boundary (a change of
      the label in ``blocks_a`` / ``blocks_b``), so a block's last run may be shorter;
    - the runs of both conditions are pooled and re-split at random, each condition keeping its
      number of runs, and the statistic is recomputed as the difference of the epoch means of
      the two sets (epochs are weighted equally, runs by their length);
    - ``p = (1 + #(|permuted| >= |observed|)) / (1 + n_permutations)``; when there are at most
      ``n_permutations`` distinct splits, all are enumerated instead and ``p`` is the exact share
      of them (the observed one included) reaching ``|observed|``.

    The test is exact when runs are exchangeable. Runs should be several times longer than the
    autocorrelation of the epoch values: neighbouring runs still correlate at their edges. On
    simulated AR(1) epoch values in blocks of 15 and 30 epochs, 5-epoch runs rejected 5.0 %,
    6.4 % and 8.2 % of null data sets at p < 0.05 for a lag-1 correlation of 0, 0.3 and 0.5;
    single epochs 5.1 %, 14.5 % and 25 % (``tests/synchrony/test_stats.py``). Longer runs
    cost units: the smallest attainable p is ``1 / C(n_runs_a + n_runs_b, n_runs_a)`` (twice
    that for equal run counts). Drifts slower than a block (minutes) are confounded with the
    block order and no permutation within a session can remove them.

    Parameters
    ----------
    epochs_a : np.ndarray, shape (n_epochs_a, ...)
        Per-epoch values in condition A, in time order
        (``inter_brain_connectivity(..., epochs_average=False)``).
    epochs_b : np.ndarray, shape (n_epochs_b, ...)
        Per-epoch values in condition B, same trailing shape, in time order.
    null_a, null_b : np.ndarray, shape (n_surrogates, ...), optional
        Surrogate nulls of each condition (both or neither).
    run_length : int
        Epochs per exchanged run (>= 1; 1 exchanges single epochs, valid only for independent
        epochs).
    blocks_a, blocks_b : np.ndarray, shape (n_epochs_a,) / (n_epochs_b,), optional
        Block label of each epoch; runs end where the label changes. Without labels a
        condition is one block.
    n_permutations : int, default 1000
    rng : np.random.Generator
        Used only when the splits are sampled.

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
    if isinstance(run_length, bool) or int(run_length) != run_length or run_length < 1:
        raise ValueError(f"run_length must be a positive integer, got {run_length!r}")
    if (null_a is None) != (null_b is None):
        raise ValueError("give surrogate nulls for both conditions or for neither")
    if null_a is not None:
        null_a = np.asarray(null_a, dtype=np.float64)
        null_b = np.asarray(null_b, dtype=np.float64)
        for name, null in (("null_a", null_a), ("null_b", null_b)):
            if null.shape[1:] != epochs_a.shape[1:]:
                raise ValueError(f"{name} must have shape (n_surrogates, {epochs_a.shape[1:]}), got {null.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN null makes its element NaN
            epochs_a = epochs_a - np.nanmean(null_a, axis=0)
            epochs_b = epochs_b - np.nanmean(null_b, axis=0)
    shape = epochs_a.shape[1:]
    starts_a = _run_starts(len(epochs_a), int(run_length), blocks_a, "blocks_a")
    starts_b = _run_starts(len(epochs_b), int(run_length), blocks_b, "blocks_b")
    # Per-run sums and counts of finite values: every split is then a selection of runs, and its
    # means are one matrix product away.
    sums, counts = [], []
    for values, starts in ((epochs_a, starts_a), (epochs_b, starts_b)):
        flat = values.reshape(len(values), -1)
        finite = np.isfinite(flat)
        sums.append(np.add.reduceat(np.where(finite, flat, 0.0), starts, axis=0))
        counts.append(np.add.reduceat(finite.astype(np.float64), starts, axis=0))
    run_sums, run_counts = np.concatenate(sums), np.concatenate(counts)
    total_sum, total_count = run_sums.sum(axis=0), run_counts.sum(axis=0)
    n_runs_a, n_runs = len(starts_a), len(run_sums)

    def split_difference(in_a: np.ndarray) -> np.ndarray:
        sum_a, count_a = in_a @ run_sums, in_a @ run_counts
        count_b = total_count - count_a
        with np.errstate(invalid="ignore", divide="ignore"):
            difference = sum_a / count_a - (total_sum - sum_a) / count_b
        # A side without finite values has no mean: NaN. Not left to 0/0, because B's sum, taken as
        # the total minus A's, is rounding noise rather than 0 (x/0 = inf, and p at its floor).
        return np.where((count_a > 0) & (count_b > 0), difference, np.nan)

    observed = split_difference((np.arange(n_runs) < n_runs_a).astype(np.float64)[None, :])[0]
    # Splits that tie with the observed one (itself, its mirror when the run counts are equal) come
    # out of other sums and round differently; the relative tolerance counts them as ties.
    threshold = np.abs(observed) * (1 - 1e-12)
    exact, n_splits, batches = _splits(n_runs, n_runs_a, n_permutations, 2 * observed.size, rng)
    exceed = np.zeros(observed.shape)
    for chosen in batches:
        in_a = np.zeros((len(chosen), n_runs))
        np.put_along_axis(in_a, chosen, 1.0, axis=1)
        exceed += np.sum(np.abs(split_difference(in_a)) >= threshold, axis=0)
    p = exceed / n_splits if exact else (1.0 + exceed) / (1.0 + n_permutations)
    return ContrastResult(
        difference=observed.reshape(shape),
        p=np.where(np.isnan(observed), np.nan, p).reshape(shape),
        n_runs_a=n_runs_a,
        n_runs_b=n_runs - n_runs_a,
        exact=exact,
    )


@dataclass(frozen=True)
class GroupResult:
    """Real dyads against pseudo-dyads.

    Attributes
    ----------
    difference : np.ndarray, shape (...)
        ``mean(real) - mean(pseudo)``.
    p : np.ndarray, shape (...)
        One-sided permutation p-value: how often the mean of ``n_real`` values drawn from the
        pool of real and pseudo-dyads reaches the real dyads' mean.
    n_real, n_pseudo : int
    exact : bool
        Every split of the pool was enumerated (``p`` is the exact permutation p-value), rather
        than ``n_resamples`` random ones.
    """

    difference: np.ndarray
    p: np.ndarray
    n_real: int
    n_pseudo: int
    exact: bool


def group_level(
    real: np.ndarray,
    pseudo: np.ndarray,
    *,
    n_resamples: int = 5000,
    rng: np.random.Generator,
) -> GroupResult:
    """Do real dyads synchronise more than pseudo-dyads doing the same task?

    The pseudo-dyads (A of one dyad with B of another, see
    :func:`dyadlab.synchrony.surrogates.pseudo_dyads`) carry everything shared by any two people in
    the task -- stimulus- and movement-locked entrainment, condition-wide rhythmicity -- so a
    real-dyad excess is interaction-specific.

    The test is a label permutation: under the null (no interaction effect) the real and
    pseudo values are exchangeable, so the real dyads' mean is compared with the means of
    ``n_real`` values drawn without replacement from the **pool of real and pseudo values**.
    Drawing from the pseudo-dyads alone is not a valid null: it treats their finite sample as
    the population, and with few recordings it is far too narrow -- on exchangeable Gaussian
    values it rejected 20 % (3 recordings, 6 pseudo-dyads), 13 % (4) and 10 % (5) of null
    cases at p < 0.05 (``tests/synchrony/test_stats.py``). When the pool has at most
    ``n_resamples`` distinct splits, all of them are enumerated and ``p`` is exact; otherwise
    ``p = (1 + #(resampled mean >= real mean)) / (1 + n_resamples)``. Either way it cannot go
    below ``1 / C(n_real + n_pseudo, n_real)`` (1/84 for 3 real and 6 pseudo-dyads).

    Exchangeability is an assumption: pseudo-dyads sharing a person are not independent of
    each other or of that person's real dyad.

    Parameters
    ----------
    real : np.ndarray, shape (n_real, ...)
        One value per real dyad (or session), e.g. surrogate-corrected PLV or z per pair.
    pseudo : np.ndarray, shape (n_pseudo, ...)
        The same statistic per pseudo-dyad; ``n_pseudo >= n_real``.
    n_resamples : int, default 5000
    rng : np.random.Generator
        Used only when the splits are sampled.

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
    pool = np.concatenate([real, pseudo])
    real_mean = np.nanmean(real, axis=0)
    exact, n_splits, batches = _splits(len(pool), n_real, n_resamples, n_real * max(1, real_mean.size), rng)
    exceed = np.zeros(real_mean.shape)
    for draws in batches:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(pool[draws], axis=1)
        # The observed split, among the enumerated ones, must count as reaching itself.
        exceed += np.sum(means >= real_mean - 1e-12 * np.abs(real_mean), axis=0)
    p = exceed / n_splits if exact else (1.0 + exceed) / (1.0 + n_resamples)
    return GroupResult(
        difference=real_mean - np.nanmean(pseudo, axis=0),
        p=np.where(np.isnan(real_mean), np.nan, p),
        n_real=n_real,
        n_pseudo=n_pseudo,
        exact=exact,
    )
