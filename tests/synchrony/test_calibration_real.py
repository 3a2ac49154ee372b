"""Pair-level family-wise tests of the quick-check on real-data null dyads (issue #12).

The null dyads are those of ``benchmarks/bench_calibration_real.py`` (which runs ``run_check`` on
51 of them for every metric and band, with the epoch shuffle and the circular shift): the EEGLAB
tutorial recording as participant A and the same recording seconds later as participant B
(:func:`tests.synchrony.calibration.lagged_null_pair`). Real EEG, so each "participant" keeps its
blinks, drifts, non-stationary envelopes and channels of very unequal variance (the EOG channels),
which simulated noise does not have; one brain 20 s or more apart has no moment-to-moment
coupling with itself.

This fast version calls the quick-check's own stage functions from the epochs on
(``check._band_synchrony`` with one stratified :func:`~dyadlab.synchrony.surrogates.shuffle_plan`
per pairing shared by the bands, then ``check._pair_statistics``), on two bands, three metrics
(envcorr, whose per-epoch values are the most autocorrelated across epochs; |imCoh|, with the
most family-wise hits in the benchmark; PLV) and 100 surrogates, without the check's artifact
rejection (blinks stay in: a harder null). B's epochs are A's epochs ``m`` epochs later
(circularly), for ``m`` = 10 ... 59 (20 to 118 s): 50 pairings. Measured: family-wise hits
envcorr 5, |imCoh| 2, PLV 1 of 50; mean smallest p 0.51, 0.54, 0.55.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dyadlab.synchrony import check, surrogates
from dyadlab.synchrony import segments as seg
from dyadlab.synchrony.results import QuickCheckResult
from tests.synchrony import calibration as cal

BANDS = {"theta": (4.0, 7.0), "alpha": (8.0, 12.0)}
METRICS = ("envcorr", "imcoh", "plv")
EPOCH_S = 2.0
N_SURROGATES = 100
EPOCH_LAGS = range(10, 60)  # 20 to 118 s: 50 pairings
#: 4 s dropped at each end of the recording: the band-pass filters' ringing (the check's margin
#: is 1.3 s at 128 Hz for these bands).
EDGE_S = 4.0
#: A family-wise test with 100 surrogates rejects at p <= 0.05, i.e. at most 4 of 100 surrogate
#: maxima reach the observed one: rate 5/101 when calibrated.
NOMINAL = 5 / (N_SURROGATES + 1)


def _band_epochs(recording: cal.RealRecording) -> dict[str, np.ndarray]:
    """Each band's analytic epochs of the whole recording, (n_epochs, n_channels, n_times), as the
    check makes them: filtered continuously, decimated to its analysis rate, then cut."""
    edge = int(EDGE_S * recording.rate)
    per_epoch = int(EPOCH_S * recording.rate)
    n_epochs = (recording.data.shape[0] - 2 * edge) // per_epoch
    steps = {band: seg.analysis_step(recording.rate, high) for band, (_, high) in BANDS.items()}
    out = {}
    for band, analytic in seg.iter_band_analytic(
        recording.data.T.astype(np.float64), recording.rate, BANDS, steps=steps
    ):
        step = steps[band]
        starts = (edge + np.arange(n_epochs) * per_epoch) // step
        window = starts[:, None] + np.arange(per_epoch // step)
        out[band] = np.ascontiguousarray(analytic[:, window].transpose(1, 0, 2)).astype(np.complex64)
    return out


def _family_wise_p(za: dict[str, np.ndarray], zb: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Per metric, the smallest family-wise p over all pairs and bands, from the check's stages."""
    n_epochs, n_a = next(iter(za.values())).shape[:2]
    n_b = next(iter(zb.values())).shape[1]
    plan = surrogates.shuffle_plan(n_epochs, N_SURROGATES, np.random.default_rng(seed))
    observed, nulls = {}, {}
    entry: dict[str, dict] = {band: {m: {} for m in METRICS} for band in BANDS}
    for band in BANDS:
        per_epoch, nulls[band] = check._band_synchrony(seg.BandEpochs(za[band], zb[band]), METRICS, plan, None)
        observed[band] = {m: np.nanmean(v, axis=0) for m, v in per_epoch.items()}
    check._pair_statistics(entry, observed, nulls, METRICS, np.ones(n_a, bool), np.ones(n_b, bool))
    return {m: min(float(np.nanmin(entry[band][m]["pair_p_fwer"])) for band in BANDS) for m in METRICS}


@pytest.fixture(scope="module")
def null_min_p() -> dict[str, np.ndarray]:
    """Per metric, the smallest family-wise p of each real null pairing."""
    epochs = _band_epochs(cal.eeglab_recording())
    found = {m: [] for m in METRICS}
    for lag in EPOCH_LAGS:
        partner = {band: np.roll(z, -lag, axis=0) for band, z in epochs.items()}
        for metric, p in _family_wise_p(epochs, partner, seed=lag).items():
            found[metric].append(p)
    return {m: np.array(v) for m, v in found.items()}


@pytest.mark.parametrize("metric", METRICS)
def test_family_wise_error_on_real_null_pairings(null_min_p: dict[str, np.ndarray], metric: str) -> None:
    """At most the binomial count of family-wise hits, and family-wise p spread as a calibrated
    test's: their mean is that of n uniform p-values, within its 99.8 % range.

    The pairings share one recording, so they are not independent: the binomial range is a
    yardstick (the expected count is right either way). The mean of the smallest p per pairing
    uses every pairing, not only the few hits: a null that is too narrow for this data (the
    issue's envelope-correlation failure, 13 % hits) pulls it towards 0.
    """
    min_p = null_min_p[metric]
    hits = int(np.sum(min_p <= 0.05))
    lo, hi = cal.binomial_bounds(min_p.size, NOMINAL)
    assert hits <= hi, f"{metric}: {hits} of {min_p.size} real null pairings had a family-wise hit (at most {hi})"
    # Mean of n p-values uniform on the grid k / 101: mean 0.5 + 1/(2 * 101), sd sqrt((101^2 - 1) / 12) / 101.
    grid = np.arange(1, N_SURROGATES + 2) / (N_SURROGATES + 1)
    spread = grid.std() / np.sqrt(min_p.size)
    low = grid.mean() - stats.norm.isf(cal.ALPHA) * spread
    assert min_p.mean() >= low, (
        f"{metric}: family-wise p of real null pairings average {min_p.mean():.3f}, below the {low:.3f} "
        f"a calibrated test reaches with probability {1 - cal.ALPHA:.1%}"
    )


def test_a_coupled_pairing_is_found() -> None:
    """The same procedure finds real coupling (the counting above is not vacuous): B is A 25 ms later."""
    recording = cal.eeglab_recording()
    epochs = _band_epochs(recording)
    shifted = cal.RealRecording(
        data=np.roll(recording.data, -int(0.025 * recording.rate), axis=0),
        rate=recording.rate,
        labels=recording.labels,
    )
    min_p = _family_wise_p(epochs, _band_epochs(shifted), seed=0)
    assert all(p <= 0.05 for p in min_p.values()), min_p


@pytest.mark.parametrize("surrogate", ["epoch-shuffle", "circular-shift"])
def test_the_report_says_what_its_pair_tests_are_calibrated_on(tmp_path, surrogate: str) -> None:
    """The report's ``calibration`` names, for the null it used, the real-data nulls of its
    family-wise pair test, and it fits the typed schema."""
    recording = cal.eeglab_recording()
    a, b = cal.lagged_null_pair(recording, 30.0)
    path = cal.write_null_pairing(tmp_path / "null.xdf", a, b, recording.rate, recording.labels)
    result = check.run_check(
        path,
        conditions=list(cal.NULL_CONDITIONS),
        bands="alpha=8-12",
        metrics=["envcorr"],
        n_surrogates=20,
        surrogate=surrogate,
        progress=False,
    )
    notes = QuickCheckResult.model_validate(result).calibration
    assert notes is not None
    fwer = notes["pair_p_fwer"]
    assert fwer.fields == ["pair_p_fwer", "n_significant_pairs_fwer"]
    assert ("epoch shuffle" if surrogate == "epoch-shuffle" else "circular shift") in fwer.null
    assert "51 null dyads of real EEG" in (fwer.real_data or "")
    assert "benchmarks/bench_calibration_real.py" in fwer.evidence
