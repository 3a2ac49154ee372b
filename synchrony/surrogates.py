"""Surrogate (null) distributions for inter-brain synchrony.

Raw synchrony values on short epochs are mostly estimator bias (PLV is about 0.25 on pure
noise for 2-s theta epochs), so every value is compared with a null built from the *same*
dyad and condition:

- :func:`shuffle_null` / :func:`epoch_shuffle_surrogates`: pair epoch i of A with epoch
  pi(i) of B, pi a random permutation of the epochs. Keeps each participant's spectrum,
  state and the estimator's bias; destroys the moment-to-moment coupling.
- :func:`circular_shift_surrogates`: for continuous blocks, shift B circularly by a random
  lag longer than ``min_shift_s`` before cutting the epochs.
- :func:`pseudo_dyads`: group level; A of one dyad with B of another dyad that did the same
  task and condition.

**Stratified permutations** (:func:`shuffle_plan`). A surrogate is the mean over epochs of
per-pairing values ``V[i, pi(i)]``. Permutations of all E epochs touch all ``E^2`` pairings,
and an hour-long condition has ~180 two-second epochs: 32,000 pairings per band, each costing
``C_a x C_b x n`` products per metric. The plan instead splits the epochs at random into
strata of :data:`STRATUM_EPOCHS` to twice that and draws each surrogate as an independent
uniform permutation *within every stratum*; the whole null then needs only the ``E x S``
within-stratum pairings (S the stratum size), a tenth of the work for 180 epochs. Every
surrogate still uses each A epoch and each B epoch exactly once, so each participant's
per-epoch offsets cancel as in the unrestricted shuffle.

Why permutations, not derangements (no epoch with itself): the permutations within the
strata form a group that contains the real pairing, and surrogates drawn uniformly from a
group are exchangeable with the real pairing under the null hypothesis (B's epochs
exchangeable with respect to A's), which makes the empirical p-values -- and the
max-statistic over pairs and bands -- exact. Derangements leave the real pairing out of that
group: in simulations of independent dyads (8 x 8 channels, 2 bands, strata of 20 epochs)
the surrogate z then had a standard deviation of 1.07 instead of 1.015, and any pair passed
the family-wise test in 11-16 % of dyads. The price of permutations is small: a surrogate
keeps, on average, one real pairing per stratum, which moves the null towards a real effect
by 1/S of it. Conditions of fewer than twice :data:`STRATUM_EPOCHS` epochs use one stratum,
which is the unrestricted shuffle. With independent epochs, strata of 16 and the unrestricted
shuffle gave the same family-wise error, 4-5 % of 300 dyads (``tests/synchrony/test_stats.py``).

What no epoch shuffle removes: it assumes the epochs exchangeable, and autocorrelation across
epoch boundaries (slow drifts, the band-pass filters' ringing) pairs similar neighbours in the
real data but not in the surrogates, so the null is slightly too narrow -- on noise smoothed
across epoch boundaries, 6-7 % family-wise errors instead of 5 %. The circular-shift null
keeps each participant's autocorrelation. On real EEG the effect is small: per-epoch envelope
correlations of independent real EEG (3 null dyads of ``benchmarks/bench_calibration_real.py``,
theta and alpha) have a median lag-1 autocorrelation over the pairs of -0.02 to 0.05 (95th
percentile 0.13-0.22, against 0.15 for independent values), and on that benchmark's 51 null dyads
of real EEG through the whole quick-check every metric's pair-level family-wise error was within
the binomial range of 5 % with either null (epoch shuffle: 0-4 of 51 per metric; circular shift:
0-3).

How it is fast beyond that: within a stratum the bilinear metrics of every pairing come out
of one matrix product per term (:class:`dyadlab.synchrony.metrics.AllPairs`), PLI/wPLI are computed
only for the pairings some surrogate uses, and each surrogate is then a sparse selection
and a mean. The real pairing (the diagonal) falls out of the same products, so
:func:`shuffle_null` returns the observed per-epoch values too.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from dyadlab.synchrony.metrics import (
    LAG_METRICS,
    METRICS,
    AllPairs,
    EpochTerms,
    PairList,
    bilinear_from_terms,
    connectivity_from_terms,
    lag_metrics_from_sums,
    lag_sums,
    validate_metrics,
    validate_pair,
)

__all__ = [
    "STRATUM_EPOCHS",
    "ShuffleNull",
    "ShufflePlan",
    "circular_shift_surrogates",
    "random_permutations",
    "epoch_shuffle_surrogates",
    "pseudo_dyads",
    "shuffle_null",
    "shuffle_plan",
]

#: Smallest stratum of the partner-epoch shuffle (see the module docstring): each A epoch
#: meets 16 to 31 candidate B epochs over the null; 16! = 2.1e13 permutations per stratum.
STRATUM_EPOCHS = 16
# Elements of one (block, E_b, C_b, C_a) array of per-pairing values (8 MB as float64; the
# Re/Im products of accorr are 4x that). Measured at 2 x 32 channels, 60 epochs: 1e6 uses
# ~40 % less memory than 4e6 for the same time; much smaller blocks make the products slower.
_BLOCK_ELEMENTS = 1_000_000


def random_permutations(n_epochs: int, n_surrogates: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random permutations of ``range(n_epochs)`` (drawn independently, may repeat).

    Parameters
    ----------
    n_epochs : int
        At least 2.
    n_surrogates : int
        At least 1.
    rng : np.random.Generator

    Returns
    -------
    np.ndarray of int, shape (n_surrogates, n_epochs)
        Row s maps A's epoch i to B's epoch ``result[s, i]``.
    """
    if n_epochs < 2:
        raise ValueError(
            f"an epoch shuffle needs at least 2 epochs, got {n_epochs}; use longer recordings or shorter epochs"
        )
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be at least 1, got {n_surrogates}")
    return rng.permuted(np.tile(np.arange(n_epochs), (n_surrogates, 1)), axis=1)


@dataclass(frozen=True)
class ShufflePlan:
    """Which B epoch meets each A epoch in every surrogate, stratum by stratum.

    Attributes
    ----------
    n_epochs : int
    strata : tuple of np.ndarray of int
        A partition of ``range(n_epochs)``; stratum k holds the epochs ``strata[k]``.
    local : tuple of np.ndarray of int, each shape (n_surrogates, len(strata[k]))
        Permutations within each stratum, in positions of ``strata[k]``: in surrogate s,
        A's epoch ``strata[k][i]`` meets B's epoch ``strata[k][local[k][s, i]]``.
    """

    n_epochs: int
    strata: tuple[np.ndarray, ...]
    local: tuple[np.ndarray, ...]

    @property
    def n_surrogates(self) -> int:
        return int(self.local[0].shape[0])

    @property
    def permutations(self) -> np.ndarray:
        """The surrogates as permutations of all epochs, shape (n_surrogates, n_epochs)."""
        out = np.empty((self.n_surrogates, self.n_epochs), dtype=np.intp)
        for members, local in zip(self.strata, self.local):
            out[:, members] = members[local]
        return out

    @classmethod
    def from_permutations(cls, permutations: np.ndarray) -> ShufflePlan:
        """One stratum holding every epoch: the given permutations, unrestricted."""
        permutations = np.asarray(permutations, dtype=np.intp)
        if permutations.ndim != 2 or permutations.shape[1] < 2:
            raise ValueError(f"permutations must have shape (n_surrogates, n_epochs >= 2), got {permutations.shape}")
        n_epochs = permutations.shape[1]
        if np.any(np.sort(permutations, axis=1) != np.arange(n_epochs)):
            raise ValueError("every row of permutations must be a permutation of range(n_epochs)")
        return cls(n_epochs, (np.arange(n_epochs),), (permutations,))


def shuffle_plan(
    n_epochs: int, n_surrogates: int, rng: np.random.Generator, *, stratum_epochs: int = STRATUM_EPOCHS
) -> ShufflePlan:
    """Draw stratified permutations for :func:`shuffle_null` (see the module docstring).

    Parameters
    ----------
    n_epochs : int
        At least 2.
    n_surrogates : int
    rng : np.random.Generator
    stratum_epochs : int, default :data:`STRATUM_EPOCHS`
        Smallest stratum size; at least 8 (8! = 40,320 permutations). The epochs are split
        into ``max(1, n_epochs // stratum_epochs)`` strata of (nearly) equal size, so strata
        hold ``stratum_epochs`` to ``2 stratum_epochs - 1`` epochs (or all of them).

    Returns
    -------
    ShufflePlan
        Draw it once per condition and pass it to every band, so that corrections over
        bands (max statistic) see one joint null.
    """
    if stratum_epochs < 8:
        raise ValueError(f"stratum_epochs must be at least 8, got {stratum_epochs}")
    if n_epochs < 2:
        random_permutations(n_epochs, n_surrogates, rng)  # raises the explanatory error
    n_strata = max(1, n_epochs // stratum_epochs)
    strata = tuple(np.sort(part) for part in np.array_split(rng.permutation(n_epochs), n_strata))
    local = tuple(random_permutations(members.size, n_surrogates, rng) for members in strata)
    return ShufflePlan(n_epochs, strata, local)


class _EpochMean:
    """Running ``nanmean`` over epochs of the surrogates' values, as selection-matrix products.

    Surrogate s averages ``V[i, pi_s(i)]`` over A's epochs i. With a 0/1 matrix ``W`` that
    selects, for each surrogate, the pairings it uses, the sums over epochs of all surrogates
    are one sparse product ``W @ V`` (``W`` has one entry per surrogate and epoch): it reads
    each pairing's values in place instead of copying them for every surrogate.
    NaNs (flat channels) are counted with a second product only when present.
    """

    def __init__(self, shape: tuple[int, ...]):
        self.total = np.zeros(shape)
        self.finite_count = np.zeros(shape)
        self.full_count = 0.0  # epochs whose values were all finite, counted once

    def add(self, selection: scipy.sparse.csr_array, values: np.ndarray, epochs_per_surrogate: int) -> None:
        """``selection``: sparse (n_surrogates, n_rows) 0/1; ``values``: (n_rows, C_a, C_b).

        The product runs in the selection's precision: single precision for single-precision
        signals halves its memory traffic (2.5x faster measured); totals are double.
        """
        flat = values.reshape(values.shape[0], -1).astype(selection.dtype, copy=False)
        finite = np.isfinite(flat)
        if finite.all():
            self.total += (selection @ flat).reshape(self.total.shape)
            self.full_count += epochs_per_surrogate
        else:
            self.total += (selection @ np.where(finite, flat, 0)).reshape(self.total.shape)
            self.finite_count += (selection @ finite.astype(selection.dtype)).reshape(self.total.shape)

    def mean(self) -> np.ndarray:
        count = self.finite_count + self.full_count
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, self.total / np.maximum(count, 1), np.nan)


def _selection(
    n_surrogates: int, per_surrogate: int, columns: np.ndarray, n_columns: int, dtype: type[np.floating] = np.float64
) -> scipy.sparse.csr_array:
    """Sparse 0/1 (n_surrogates, n_columns) with ``per_surrogate`` consecutive ``columns`` per row."""
    indptr = np.arange(0, n_surrogates * per_surrogate + 1, per_surrogate)
    data = np.ones(columns.size, dtype=dtype)
    return scipy.sparse.csr_array((data, columns, indptr), shape=(n_surrogates, n_columns))


@dataclass
class ShuffleNull:
    """Observed values and their partner-epoch-shuffle null for one condition and band.

    Attributes
    ----------
    observed : dict of str to np.ndarray, each shape (n_epochs, n_channels_a, n_channels_b)
        Per-epoch values of the real pairing (epoch i of A with epoch i of B), equal to
        ``inter_brain_connectivity(za, zb, metrics, epochs_average=False)``.
    null : dict of str to np.ndarray, each shape (n_surrogates, n_channels_a, n_channels_b)
        Epoch-averaged (``nanmean``) values of each surrogate pairing.
    """

    observed: dict[str, np.ndarray]
    null: dict[str, np.ndarray]


def shuffle_null(za: np.ndarray, zb: np.ndarray, plan: ShufflePlan, metrics: Sequence[str] = METRICS) -> ShuffleNull:
    """Observed per-epoch metrics and their partner-epoch-shuffle null, in one pass.

    Surrogate s pairs epoch i of A with epoch ``plan.permutations[s, i]`` of B and averages
    the metric over epochs exactly as :func:`dyadlab.synchrony.metrics.inter_brain_connectivity`
    does for the real pairing (``nanmean``), so observed and null values are the same
    estimator on the same number of epochs.

    Parameters
    ----------
    za : np.ndarray, shape (n_epochs, n_channels_a, n_times), complex
        Analytic signal of participant A, one band, one condition.
    zb : np.ndarray, shape (n_epochs, n_channels_b, n_times), complex
        Analytic signal of participant B, same epochs.
    plan : ShufflePlan
        From :func:`shuffle_plan` (or :meth:`ShufflePlan.from_permutations`).
    metrics : sequence of str
        Metric names (see :data:`dyadlab.synchrony.metrics.SUPPORTED_METRICS`).

    Returns
    -------
    ShuffleNull
    """
    metrics = validate_metrics(metrics)
    za, zb = validate_pair(za, zb, same_epochs=True)
    n_epochs = za.shape[0]
    if plan.n_epochs != n_epochs:
        raise ValueError(f"the plan is for {plan.n_epochs} epochs, the signals have {n_epochs}")
    n_a, n_b, n_times, n_surrogates = za.shape[1], zb.shape[1], za.shape[2], plan.n_surrogates
    precision = np.float32 if za.dtype == np.complex64 else np.float64  # of the sums over epochs
    bilinear = [m for m in metrics if m not in LAG_METRICS]
    lagged = [m for m in metrics if m in LAG_METRICS]
    # Accumulated in AllPairs' (B channel, A channel) order, transposed once at the end.
    means = {m: _EpochMean((n_surrogates, n_b, n_a)) for m in metrics}
    observed = {m: np.empty((n_epochs, n_a, n_b)) for m in metrics}
    # Size of the whole PLI/wPLI job, for the kernel choice.
    lag_work = sum(members.size**2 for members in plan.strata) * n_a * n_b * n_times
    for members, local in zip(plan.strata, plan.local):
        size = members.size
        # The terms of one stratum at a time: every pairing lies within a stratum, and the terms
        # of all epochs at once take 4.5 times the signals' memory (double-precision real and
        # imaginary parts, unit vectors, envelopes: 980 MB for 890 gamma epochs of 2 x 32
        # channels). Each epoch's terms depend on that epoch only: the values are the same.
        stratum_a = EpochTerms.from_signal(za[members], metrics)
        stratum_b = EpochTerms.from_signal(zb[members], metrics)
        block = max(1, _BLOCK_ELEMENTS // (size * n_a * n_b))
        for start in range(0, size, block):
            rows = np.arange(start, min(start + block, size))  # A epochs, positions in the stratum
            # Row (A epoch k of the block, B epoch j of the stratum) of the per-pairing values.
            columns = (np.arange(rows.size) * size + local[:, rows]).ravel()
            diagonal = np.arange(rows.size) * size + rows  # the real pairing
            selection = _selection(n_surrogates, rows.size, columns, rows.size * size, precision)
            values = bilinear_from_terms(stratum_a, stratum_b, AllPairs(rows, size), metrics)  # (k, S, C_b, C_a)
            for m in bilinear:
                per_pair = values[m].reshape(-1, n_b, n_a)
                means[m].add(selection, per_pair, rows.size)
                observed[m][members[rows]] = per_pair[diagonal].swapaxes(1, 2)
            if lagged:
                # PLI/wPLI cost one pass over time per pairing: only the pairings in use.
                used = np.union1d(columns, diagonal)
                local_a, epochs_b = np.divmod(used, size)
                sign_sum, abs_sum = lag_sums(stratum_a, stratum_b, rows[local_a], epochs_b, total_work=lag_work)
                numerator = values["wpli_numerator"][local_a, epochs_b] if "wpli" in lagged else None
                lag_values = lag_metrics_from_sums(
                    sign_sum.swapaxes(1, 2), abs_sum.swapaxes(1, 2), numerator, n_times, lagged
                )
                lag_selection = _selection(
                    n_surrogates, rows.size, np.searchsorted(used, columns), used.size, precision
                )
                real = np.searchsorted(used, diagonal)
                for m in lagged:
                    means[m].add(lag_selection, np.ascontiguousarray(lag_values[m]), rows.size)
                    observed[m][members[rows]] = lag_values[m][real].swapaxes(1, 2)
            del values
    null = {m: np.ascontiguousarray(means[m].mean().swapaxes(1, 2)) for m in metrics}
    return ShuffleNull(observed=observed, null=null)


def epoch_shuffle_surrogates(
    za: np.ndarray,
    zb: np.ndarray,
    n_surrogates: int,
    metrics: Sequence[str] = METRICS,
    *,
    rng: np.random.Generator,
    permutations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Null distribution by partner-epoch shuffling within one condition.

    The null of :func:`shuffle_null` alone: with ``permutations``, exactly those
    permutations (unrestricted); otherwise a stratified plan from :func:`shuffle_plan`.
    Calling it once per band draws a new plan each time: to correct over bands with the max
    statistic, draw one plan and pass it to :func:`shuffle_null` for every band.

    Parameters
    ----------
    za : np.ndarray, shape (n_epochs, n_channels_a, n_times), complex
        Analytic signal of participant A, one band, one condition.
    zb : np.ndarray, shape (n_epochs, n_channels_b, n_times), complex
        Analytic signal of participant B, same epochs.
    n_surrogates : int
        Number of surrogates (200-1000 recommended).
    metrics : sequence of str
        Metric names (see :data:`dyadlab.synchrony.metrics.SUPPORTED_METRICS`).
    rng : np.random.Generator
        Source of the plan.
    permutations : np.ndarray of int, shape (n_surrogates, n_epochs), optional
        Use these permutations instead of drawing a plan.

    Returns
    -------
    dict of str to np.ndarray, each shape (n_surrogates, n_channels_a, n_channels_b)
        Epoch-averaged surrogate values per inter-brain channel pair.
    """
    n_epochs = np.shape(za)[0]
    if permutations is None:
        plan = shuffle_plan(n_epochs, n_surrogates, rng)
    else:
        permutations = np.asarray(permutations, dtype=np.intp)
        if permutations.shape != (n_surrogates, n_epochs):
            raise ValueError(
                f"permutations must have shape (n_surrogates, n_epochs) = ({n_surrogates}, {n_epochs}), "
                f"got {permutations.shape}"
            )
        plan = ShufflePlan.from_permutations(permutations)
    return shuffle_null(za, zb, plan, metrics).null


def circular_shift_surrogates(
    za_cont: np.ndarray,
    zb_cont: np.ndarray,
    n_surrogates: int,
    metrics: Sequence[str] = METRICS,
    *,
    sfreq: float,
    epoch_starts: Sequence[int] | np.ndarray,
    epoch_samples: int,
    min_shift_s: float = 2.0,
    rng: np.random.Generator | None = None,
    lags: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Null distribution by circularly time-shifting B within one continuous block.

    For each surrogate B's analytic signal is rolled by a random lag L, uniform over
    ``[min_shift, n - min_shift]`` samples, and both participants are then cut at the same
    ``epoch_starts``. Use for continuous tasks (conversation, free interaction) where an epoch
    shuffle would keep slow shared structure. A shifted B epoch may contain samples that were
    rejected as artifacts in the real pairing; reject sparingly or prefer the epoch shuffle
    when many epochs were dropped.

    Parameters
    ----------
    za_cont : np.ndarray, shape (n_channels_a, n_samples), complex
        Analytic signal of A for one band over the whole block (filtered continuously).
    zb_cont : np.ndarray, shape (n_channels_b, n_samples), complex
        Same for B, simultaneous with ``za_cont``.
    n_surrogates : int
    metrics : sequence of str
    sfreq : float
        Sampling rate in Hz.
    epoch_starts : sequence of int, shape (n_epochs,)
        First sample of each kept epoch inside the block.
    epoch_samples : int
        Epoch length in samples.
    min_shift_s : float, default 2.0
        Smallest lag (and smallest distance to a full turn) in seconds; 2-5 s, longer than the
        signals' autocorrelation and turn-taking time scales.
    rng : np.random.Generator, optional
        Source of the lags (needed unless ``lags`` is given).
    lags : sequence of int, shape (n_surrogates,), optional
        Use these lags (samples, each within ``[min_shift, n_samples - min_shift]``), e.g.
        the same time shifts for every band of a condition.

    Returns
    -------
    dict of str to np.ndarray, each shape (n_surrogates, n_channels_a, n_channels_b)
        Epoch-averaged surrogate values, as :func:`epoch_shuffle_surrogates`.
    """
    metrics = validate_metrics(metrics)
    za_cont = np.asarray(za_cont)
    zb_cont = np.asarray(zb_cont)
    if za_cont.ndim != 2 or zb_cont.ndim != 2:
        raise ValueError(
            f"za_cont and zb_cont must have shape (n_channels, n_samples), got {za_cont.shape} and {zb_cont.shape}"
        )
    n_samples = za_cont.shape[1]
    if zb_cont.shape[1] != n_samples:
        raise ValueError(f"za_cont and zb_cont differ in length: {n_samples} vs {zb_cont.shape[1]} samples")
    if sfreq <= 0:
        raise ValueError(f"sfreq must be positive, got {sfreq}")
    starts = np.asarray(epoch_starts, dtype=np.intp).ravel()
    if starts.size == 0:
        raise ValueError("no epochs given (epoch_starts is empty)")
    if epoch_samples < 2 or starts.min() < 0 or starts.max() + epoch_samples > n_samples:
        raise ValueError(
            f"epochs of {epoch_samples} samples at starts {starts.min()}..{starts.max()} do not fit "
            f"in a block of {n_samples} samples"
        )
    min_shift = int(np.ceil(min_shift_s * sfreq))
    if n_samples - 2 * min_shift < 1:
        raise ValueError(
            f"block of {n_samples / sfreq:.1f} s is too short for circular shifts of at least "
            f"{min_shift_s} s both ways; use a longer block, a smaller min_shift_s, or the epoch shuffle"
        )
    window = starts[:, None] + np.arange(epoch_samples)
    za, zb = validate_pair(
        za_cont[:, window].transpose(1, 0, 2), zb_cont[:, window].transpose(1, 0, 2), same_epochs=True
    )
    ta = EpochTerms.from_signal(za, metrics)
    epochs = np.arange(starts.size)
    pairing = PairList(epochs, epochs)
    if lags is None:
        if rng is None:
            raise ValueError("give rng (to draw the lags) or lags")
        lags = rng.integers(min_shift, n_samples - min_shift + 1, size=n_surrogates)
    else:
        lags = np.asarray(lags, dtype=np.intp).ravel()
        if lags.size != n_surrogates or lags.min() < min_shift or lags.max() > n_samples - min_shift:
            raise ValueError(
                f"lags must be {n_surrogates} values within [{min_shift}, {n_samples - min_shift}] samples, "
                f"got {lags.size} values in [{lags.min()}, {lags.max()}]"
            )
    null = {m: np.empty((n_surrogates, za.shape[1], zb.shape[1])) for m in metrics}
    for s, lag in enumerate(lags):
        shifted = zb_cont[:, (window - lag) % n_samples].transpose(1, 0, 2)
        tb = EpochTerms.from_signal(np.ascontiguousarray(shifted), metrics)
        values = connectivity_from_terms(ta, tb, pairing, metrics)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pair -> NaN
            for m in metrics:
                null[m][s] = np.nanmean(values[m], axis=0)
    return null


def pseudo_dyads(
    dyads: Sequence[Hashable],
    sessions: Sequence[Hashable] | None = None,
    *,
    across_sessions: bool = False,
) -> Iterator[tuple[int, int]]:
    """Index pairs (i, j) meaning "participant A of recording i with participant B of recording j".

    Recordings must be of the same task and condition (and, for event-locked tasks, the
    same timing); the caller selects them.

    Parameters
    ----------
    dyads : sequence of hashable, length n_recordings
        Dyad identifier of each recording (the same two people share one identifier).
    sessions : sequence of hashable, optional
        Session identifier of each recording (needed with ``across_sessions``).
    across_sessions : bool, default False
        False: the standard between-dyad null, every (i, j) whose dyads differ.
        True: the carry-over control of longitudinal designs, every (i, j) of the *same* dyad
        from *different* sessions (patient of session k with therapist of session j), which
        separates "a person's signal changed" from "the dyad's coupling changed".

    Yields
    ------
    tuple of int
        ``(i, j)`` with ``i != j``, in lexicographic order.
    """
    dyads = list(dyads)
    session_ids: list[Hashable] = []
    if across_sessions:
        if sessions is None:
            raise ValueError("across_sessions=True needs the session identifier of every recording")
        session_ids = list(sessions)
        if len(session_ids) != len(dyads):
            raise ValueError(f"got {len(dyads)} dyad ids but {len(session_ids)} session ids")
        if len(set(zip(dyads, session_ids))) != len(dyads):
            raise ValueError("two recordings have the same (dyad, session); each recording must be unique")
    elif len(set(dyads)) < 2:
        raise ValueError("pseudo-dyads need recordings from at least two different dyads")
    for i in range(len(dyads)):
        for j in range(len(dyads)):
            if i == j:
                continue
            if across_sessions:
                if dyads[i] == dyads[j] and session_ids[i] != session_ids[j]:
                    yield i, j
            elif dyads[i] != dyads[j]:
                yield i, j
