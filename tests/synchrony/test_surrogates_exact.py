"""Surrogate nulls at their edges, value by value: flat channels, the smallest valid inputs,
indices given as floats, and every input error's whole message.

``test_surrogates.py`` checks the nulls on typical inputs against brute force and their
calibration; these tests pin what it leaves open (issue #18, the mutation survivors of
``synchrony/surrogates.py``, see docs/testing.md). The references are independent of the
module: PLV written out from its definition, :func:`inter_brain_connectivity` on explicitly
permuted or ``np.roll``-ed signals (itself checked against HyPyP in ``test_metrics.py``).

Tolerance: a surrogate value is a mean of at most 24 per-epoch values of magnitude <= 1,
computed in double precision by a different order of operations (matrix products, sparse
selection); the rounding is a few 1e-16 per term, so 1e-12 leaves a factor of ~100 and
fails any real difference (one epoch missing or extra moves a mean of noise PLVs by ~1e-3).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from dyadlab.synchrony import surrogates
from dyadlab.synchrony.metrics import inter_brain_connectivity
from dyadlab.synchrony.surrogates import (
    ShufflePlan,
    circular_shift_surrogates,
    epoch_shuffle_surrogates,
    pseudo_dyads,
    random_permutations,
    shuffle_null,
    shuffle_plan,
)
from tests.synchrony.test_surrogates import complex_noise

ATOL = 1e-12


def plv_by_hand(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Per-epoch PLV, shape (n_epochs, C_a, C_b): ``|mean_t exp(i (phi_a - phi_b))|``, NaN where
    either channel is flat (all zero) in that epoch (a flat channel has no phase)."""
    unit_a = np.exp(1j * np.angle(za))
    unit_b = np.exp(1j * np.angle(zb))
    plv = np.abs(np.einsum("eat,ebt->eab", unit_a, unit_b.conj())) / za.shape[-1]
    flat_a = np.all(za == 0, axis=-1)[:, :, None]
    flat_b = np.all(zb == 0, axis=-1)[:, None, :]
    return np.where(flat_a | flat_b, np.nan, plv)


def plv_null_by_hand(za: np.ndarray, zb: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """Surrogate s: the ``nanmean`` over epochs of A's epoch i with B's epoch ``permutations[s, i]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair without any finite epoch: NaN
        return np.stack([np.nanmean(plv_by_hand(za, zb[p]), axis=0) for p in permutations])


def test_flat_channels_in_several_strata_and_blocks_leave_exactly_their_epochs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flat channels in epochs of every stratum and of several blocks within a stratum: each
    pairing's mean counts exactly the epochs where both channels have a phase (the counts of
    finite epochs add up over blocks and strata)."""
    rng = np.random.default_rng(20)
    n_epochs, n_a, n_b = 24, 3, 2
    za, zb = complex_noise(rng, (n_epochs, n_a, 32)), complex_noise(rng, (n_epochs, n_b, 32))
    zb[:, 1] = 0.8 * za[:, 2] + 0.2 * zb[:, 1]  # one coupled pair: values far from the others
    plan = shuffle_plan(n_epochs, 9, rng, stratum_epochs=8)
    assert [members.size for members in plan.strata] == [8, 8, 8]
    for members in plan.strata:  # A's channel 1 flat in two epochs of every stratum
        za[members[[1, 6]], 1] = 0
    zb[plan.strata[1][[0, 3, 4]], 0] = 0  # B's channel 0 flat in three epochs of one stratum
    # Blocks of 3 A epochs: every stratum of 8 is done in 3 blocks (3 + 3 + 2).
    monkeypatch.setattr(surrogates, "_BLOCK_ELEMENTS", 3 * 8 * n_a * n_b)
    tested = ["plv", "envcorr", "wpli"]
    result = shuffle_null(za, zb, plan, tested)
    np.testing.assert_allclose(result.null["plv"], plv_null_by_hand(za, zb, plan.permutations), rtol=0, atol=ATOL)
    np.testing.assert_allclose(result.observed["plv"], plv_by_hand(za, zb), rtol=0, atol=ATOL)
    for metric in tested:
        expected = np.stack([inter_brain_connectivity(za, zb[p], [metric])[metric] for p in plan.permutations])
        np.testing.assert_allclose(result.null[metric], expected, rtol=0, atol=ATOL, err_msg=metric)


def test_a_channel_with_one_usable_epoch_and_a_channel_without_any() -> None:
    """A's channel 0 has a phase in one epoch only: every surrogate's value for it is that one
    pairing's PLV (the mean of one value). A's channel 1 is flat throughout: NaN, observed and
    null, not 0 (for the metrics that are NaN on a flat epoch; PLI and wPLI are 0 there, as in
    HyPyP)."""
    rng = np.random.default_rng(21)
    n_epochs, kept = 16, 11
    za, zb = complex_noise(rng, (n_epochs, 2, 32)), complex_noise(rng, (n_epochs, 3, 32))
    za[np.arange(n_epochs) != kept, 0] = 0
    za[:, 1] = 0
    plan = shuffle_plan(n_epochs, 12, rng, stratum_epochs=8)
    result = shuffle_null(za, zb, plan, ["plv", "envcorr"])
    partner = plan.permutations[:, kept]
    one_pairing = plv_by_hand(za[[kept]], zb[partner])[:, 0]  # (surrogate, C_b)
    np.testing.assert_allclose(result.null["plv"][:, 0], one_pairing, rtol=0, atol=ATOL)
    for metric in ("plv", "envcorr"):
        assert np.isnan(result.null[metric][:, 1]).all(), metric
        assert np.isnan(result.observed[metric][:, 1]).all(), metric
        assert np.isfinite(result.null[metric][:, 0]).all(), metric


@pytest.mark.parametrize("metric", ["pli", "wpli"])
def test_one_lag_metric_alone(metric: str) -> None:
    """PLI without wPLI (and the reverse): the lag path asks for wPLI's numerator only when wPLI is asked."""
    rng = np.random.default_rng(22)
    za, zb = complex_noise(rng, (10, 2, 32)), complex_noise(rng, (10, 2, 32))
    zb[:, 0] = 0.6 * za[:, 0] + 0.4 * zb[:, 0]
    plan = shuffle_plan(10, 5, rng, stratum_epochs=8)
    result = shuffle_null(za, zb, plan, [metric])
    assert list(result.null) == [metric]
    expected = np.stack([inter_brain_connectivity(za, zb[p], [metric])[metric] for p in plan.permutations])
    np.testing.assert_allclose(result.null[metric], expected, rtol=0, atol=ATOL)
    real = inter_brain_connectivity(za, zb, [metric], epochs_average=False)[metric]
    np.testing.assert_allclose(result.observed[metric], real, rtol=0, atol=ATOL)


def test_two_epochs_and_one_surrogate_are_enough() -> None:
    """The smallest shuffle the functions promise: 2 epochs (both of their permutations drawn),
    1 surrogate, and a plan and a null of them equal to brute force."""
    rng = np.random.default_rng(23)
    one = random_permutations(2, 1, rng)
    assert one.shape == (1, 2) and sorted(one[0]) == [0, 1]
    drawn = {tuple(row) for row in random_permutations(2, 64, rng)}
    assert drawn == {(0, 1), (1, 0)}  # each missing from 64 fair draws with probability 2**-64
    za, zb = complex_noise(rng, (2, 2, 16)), complex_noise(rng, (2, 3, 16))
    swapped = np.array([[1, 0]])
    null = epoch_shuffle_surrogates(za, zb, 1, ["plv"], rng=rng, permutations=swapped)["plv"]
    np.testing.assert_allclose(null, plv_null_by_hand(za, zb, swapped), rtol=0, atol=ATOL)
    plan = shuffle_plan(2, 1, rng)
    assert plan.n_surrogates == 1 and [m.tolist() for m in plan.strata] == [[0, 1]]
    result = shuffle_null(za, zb, plan, ["plv"])
    np.testing.assert_allclose(result.null["plv"], plv_null_by_hand(za, zb, plan.permutations), rtol=0, atol=ATOL)
    assert ShufflePlan.from_permutations(np.array([[0, 1], [1, 0]])).n_epochs == 2


def test_pseudo_dyads_of_exactly_two_dyads() -> None:
    assert list(pseudo_dyads(["d1", "d2"])) == [(0, 1), (1, 0)]
    assert list(pseudo_dyads(["d1", "d1", "d2"])) == [(0, 2), (1, 2), (2, 0), (2, 1)]


def test_permutations_lags_and_starts_given_as_float_arrays() -> None:
    """Indices read back with ``np.loadtxt`` (or computed as ``np.round(seconds * sfreq)``) are
    float arrays of whole numbers: they give the same nulls as integers."""
    rng = np.random.default_rng(24)
    za, zb = complex_noise(rng, (6, 2, 16)), complex_noise(rng, (6, 2, 16))
    perms = random_permutations(6, 4, rng)
    as_ints = epoch_shuffle_surrogates(za, zb, 4, ["plv"], rng=rng, permutations=perms)["plv"]
    as_floats = epoch_shuffle_surrogates(za, zb, 4, ["plv"], rng=rng, permutations=perms.astype(float))["plv"]
    np.testing.assert_array_equal(as_floats, as_ints)
    plan = ShufflePlan.from_permutations(perms.astype(float))
    np.testing.assert_array_equal(plan.permutations, perms)
    za_cont, zb_cont = complex_noise(rng, (2, 640)), complex_noise(rng, (3, 640))
    common = {"sfreq": 32.0, "epoch_samples": 64, "min_shift_s": 2.0}
    starts, lags = np.array([0, 64, 300]), np.array([64, 200, 576])
    ints = circular_shift_surrogates(za_cont, zb_cont, 3, ["plv"], epoch_starts=starts, lags=lags, **common)
    floats = circular_shift_surrogates(
        za_cont, zb_cont, 3, ["plv"], epoch_starts=starts.astype(float), lags=lags.astype(float), **common
    )
    np.testing.assert_array_equal(floats["plv"], ints["plv"])


def rolled_null(
    za_cont: np.ndarray,
    zb_cont: np.ndarray,
    lags: Sequence[int] | np.ndarray,
    starts: Sequence[int],
    epoch_samples: int,
    metrics: list[str],
) -> dict[str, np.ndarray]:
    """Brute force: B rolled by each lag (``np.roll``), both cut at ``starts``, then the metrics."""
    window = np.asarray(starts)[:, None] + np.arange(epoch_samples)
    za = za_cont[:, window].transpose(1, 0, 2)
    per_lag = [
        inter_brain_connectivity(za, np.roll(zb_cont, lag, axis=1)[:, window].transpose(1, 0, 2), metrics)
        for lag in lags
    ]
    return {m: np.stack([values[m] for values in per_lag]) for m in metrics}


def test_circular_shift_lags_at_both_ends_with_the_default_minimum() -> None:
    """``min_shift_s`` defaults to 2 s, and both ends of ``[min_shift, n - min_shift]`` are allowed."""
    rng = np.random.default_rng(25)
    sfreq, n_samples = 32.0, 640
    za_cont, zb_cont = complex_noise(rng, (2, n_samples)), complex_noise(rng, (2, n_samples))
    starts, lags = [0, 128, 500], [64, 576]  # 64 samples = 2 s; 576 = 640 - 64
    metrics = ["plv", "envcorr"]
    null = circular_shift_surrogates(
        za_cont, zb_cont, 2, metrics, sfreq=sfreq, epoch_starts=starts, epoch_samples=64, lags=lags
    )
    expected = rolled_null(za_cont, zb_cont, lags, starts, 64, metrics)
    for m in metrics:
        np.testing.assert_allclose(null[m], expected[m], rtol=0, atol=ATOL, err_msg=m)


def test_circular_shift_shortest_block_shortest_epochs_and_a_rate_below_one_hertz() -> None:
    """A block of ``2 min_shift + 1`` samples (two possible lags), epochs of 2 samples, the last
    one ending at the block's last sample, and a sampling rate of 0.5 Hz (the rule is "positive")."""
    rng = np.random.default_rng(26)
    sfreq, min_shift_s = 0.5, 8.0  # min_shift = 4 samples
    n_samples = 2 * 4 + 1
    za_cont, zb_cont = complex_noise(rng, (2, n_samples)), complex_noise(rng, (2, n_samples))
    starts, lags = [0, 3, 7], [4, 5, 4]
    common = {"sfreq": sfreq, "epoch_starts": starts, "epoch_samples": 2, "min_shift_s": min_shift_s}
    null = circular_shift_surrogates(za_cont, zb_cont, 3, ["plv"], lags=lags, **common)
    expected = rolled_null(za_cont, zb_cont, lags, starts, 2, ["plv"])
    np.testing.assert_allclose(null["plv"], expected["plv"], rtol=0, atol=ATOL)
    drawn = circular_shift_surrogates(za_cont, zb_cont, 3, ["plv"], rng=np.random.default_rng(27), **common)
    lags_drawn = np.random.default_rng(27).integers(4, 5 + 1, size=3)
    expected = rolled_null(za_cont, zb_cont, lags_drawn, starts, 2, ["plv"])
    np.testing.assert_allclose(drawn["plv"], expected["plv"], rtol=0, atol=ATOL)


def _noise(*shape: int) -> np.ndarray:
    return complex_noise(np.random.default_rng(28), shape)


def _circular(
    za_shape: tuple[int, ...] = (2, 640), zb_shape: tuple[int, ...] = (2, 640), n_surrogates: int = 3, **kwargs: Any
) -> dict[str, np.ndarray]:
    """circular_shift_surrogates on noise: 640 samples at 32 Hz, epochs of 64 at 0 and 64,
    ``min_shift_s`` 2 s (64 samples: lags within [64, 576]), lags drawn from a generator."""
    args: dict[str, Any] = {"sfreq": 32.0, "epoch_starts": [0, 64], "epoch_samples": 64, "min_shift_s": 2.0}
    args["rng"] = np.random.default_rng(0)
    args.update(kwargs)
    return circular_shift_surrogates(_noise(*za_shape), _noise(*zb_shape), n_surrogates, ["plv"], **args)


def _shuffle_null_with_a_plan_for(n_plan: int, n_signals: int) -> None:
    plan = shuffle_plan(n_plan, 3, np.random.default_rng(0))
    shuffle_null(_noise(n_signals, 2, 16), _noise(n_signals, 2, 16), plan, ["plv"])


INPUT_ERRORS: dict[str, tuple[Callable[[], object], str]] = {
    "one epoch": (
        lambda: random_permutations(1, 10, np.random.default_rng(0)),
        "an epoch shuffle needs at least 2 epochs, got 1; use longer recordings or shorter epochs",
    ),
    "no surrogates": (
        lambda: random_permutations(3, 0, np.random.default_rng(0)),
        "n_surrogates must be at least 1, got 0",
    ),
    "plan for one epoch": (
        lambda: shuffle_plan(1, 5, np.random.default_rng(0)),
        "an epoch shuffle needs at least 2 epochs, got 1; use longer recordings or shorter epochs",
    ),
    "strata too small": (
        lambda: shuffle_plan(100, 5, np.random.default_rng(0), stratum_epochs=7),
        "stratum_epochs must be at least 8, got 7",
    ),
    "permutations 1-D": (
        lambda: ShufflePlan.from_permutations(np.array([0, 2, 1])),
        "permutations must have shape (n_surrogates, n_epochs >= 2), got (3,)",
    ),
    "permutations of one epoch": (
        lambda: ShufflePlan.from_permutations(np.array([[0], [0]])),
        "permutations must have shape (n_surrogates, n_epochs >= 2), got (2, 1)",
    ),
    "not a permutation": (
        lambda: ShufflePlan.from_permutations(np.array([[0, 2, 1], [1, 1, 0]])),
        "every row of permutations must be a permutation of range(n_epochs)",
    ),
    "permutations of the wrong shape": (
        lambda: epoch_shuffle_surrogates(
            _noise(4, 2, 16),
            _noise(4, 2, 16),
            2,
            ["plv"],
            rng=np.random.default_rng(0),
            permutations=np.array([[1, 0, 3, 2]]),
        ),
        "permutations must have shape (n_surrogates, n_epochs) = (2, 4), got (1, 4)",
    ),
    "plan for other epochs": (
        lambda: _shuffle_null_with_a_plan_for(30, 29),
        "the plan is for 30 epochs, the signals have 29",
    ),
    "B not 2-D": (
        lambda: _circular(zb_shape=(1, 2, 640)),
        "za_cont and zb_cont must have shape (n_channels, n_samples), got (2, 640) and (1, 2, 640)",
    ),
    "A not 2-D": (
        lambda: _circular(za_shape=(640,)),
        "za_cont and zb_cont must have shape (n_channels, n_samples), got (640,) and (2, 640)",
    ),
    "lengths differ": (
        lambda: _circular(zb_shape=(2, 600)),
        "za_cont and zb_cont differ in length: 640 vs 600 samples",
    ),
    "sfreq zero": (lambda: _circular(sfreq=0.0), "sfreq must be positive, got 0.0"),
    "no epochs": (lambda: _circular(epoch_starts=[]), "no epochs given (epoch_starts is empty)"),
    "epoch before the block": (
        lambda: _circular(epoch_starts=[-1, 64]),
        "epochs of 64 samples at starts -1..64 do not fit in a block of 640 samples",
    ),
    "epoch of one sample": (
        lambda: _circular(epoch_samples=1),
        "epochs of 1 samples at starts 0..64 do not fit in a block of 640 samples",
    ),
    "epoch past the block": (
        lambda: _circular(epoch_starts=[0, 577]),
        "epochs of 64 samples at starts 0..577 do not fit in a block of 640 samples",
    ),
    "block of exactly twice the minimum": (
        lambda: _circular(min_shift_s=10.0),
        "block of 20.0 s is too short for circular shifts of at least 10.0 s both ways; "
        "use a longer block, a smaller min_shift_s, or the epoch shuffle",
    ),
    "neither rng nor lags": (lambda: _circular(rng=None), "give rng (to draw the lags) or lags"),
    "too few lags": (
        lambda: _circular(lags=[64, 320]),
        "lags must be 3 values within [64, 576] samples, got 2 values in [64, 320]",
    ),
    "a lag below the minimum": (
        lambda: _circular(lags=[63, 320, 576]),
        "lags must be 3 values within [64, 576] samples, got 3 values in [63, 576]",
    ),
    "a lag above the maximum": (
        lambda: _circular(lags=[64, 320, 577]),
        "lags must be 3 values within [64, 576] samples, got 3 values in [64, 577]",
    ),
    "one dyad": (
        lambda: list(pseudo_dyads(["d1", "d1"])),
        "pseudo-dyads need recordings from at least two different dyads",
    ),
    "sessions missing": (
        lambda: list(pseudo_dyads(["d1", "d2"], across_sessions=True)),
        "across_sessions=True needs the session identifier of every recording",
    ),
    "sessions of other recordings": (
        lambda: list(pseudo_dyads(["d1", "d1", "d2"], ["s1", "s2"], across_sessions=True)),
        "got 3 dyad ids but 2 session ids",
    ),
    "a recording twice": (
        lambda: list(pseudo_dyads(["d1", "d1"], ["s1", "s1"], across_sessions=True)),
        "two recordings have the same (dyad, session); each recording must be unique",
    ),
}


@pytest.mark.parametrize("case", list(INPUT_ERRORS))
def test_input_errors_and_their_whole_messages(case: str) -> None:
    call, message = INPUT_ERRORS[case]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
