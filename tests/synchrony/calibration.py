"""Binomial bounds for the calibration tests (false-positive rates under a null).

A calibration test counts rejections among ``n`` independent null data sets; the count is
Binomial(n, rate). Its bounds are the 0.1 % and 99.9 % quantiles of that distribution, so a
correctly calibrated method fails the test with probability at most 0.2 % whatever the seed, and
the test checks its own design: ``n`` must be large enough that a method rejecting ``must_fail``
of the data sets (7 % for a 5 % test) would fail it with probability at least 99 %.

It also makes null dyads from real EEG recorded by others (:func:`lagged_null_pair`,
:func:`write_null_pairing`), for ``tests/synchrony/test_calibration_real.py`` and
``benchmarks/bench_calibration_real.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

ALPHA = 0.001  # each side
POWER = 0.99


def binomial_bounds(n: int, rate: float) -> tuple[int, int]:
    """Counts ``lo..hi`` that hold Binomial(n, rate) with probability >= 1 - 2 * ALPHA."""
    return int(stats.binom.ppf(ALPHA, n, rate)), int(stats.binom.isf(ALPHA, n, rate))


def assert_rejection_rate(count: int, n: int, rate: float, *, must_fail: float = 0.07, label: str = "") -> None:
    """``count`` rejections of ``n`` null data sets agree with the nominal ``rate``.

    Parameters
    ----------
    count, n : int
        Rejections and data sets.
    rate : float
        The rate of a calibrated method (the attainable level of the test, e.g. 4/100 for
        ``p < 0.05`` with 99 surrogates).
    must_fail : float
        A rate the bounds must tell apart from ``rate`` (with probability >= POWER).
    label : str
        Named in the failure message.
    """
    lo, hi = binomial_bounds(n, rate)
    passes = stats.binom.cdf(hi, n, must_fail) if must_fail > rate else stats.binom.sf(lo - 1, n, must_fail)
    assert passes <= 1 - POWER, (
        f"design: {n} data sets cannot tell {rate:.2%} from {must_fail:.2%} "
        f"(a method rejecting {must_fail:.1%} would pass with probability {passes:.1%})"
    )
    assert lo <= count <= hi, (
        f"{label}: {count} of {n} rejected ({count / n:.2%}); a calibrated method rejects {rate:.2%}, "
        f"{lo}-{hi} of {n} (binomial {1 - 2 * ALPHA:.1%} range)"
    )


# --- Null dyads from real EEG recorded by others ------------------------------------------------

EEGLAB_SET = Path(__file__).resolve().parents[1] / "data" / "eeglab" / "eeglab_data.set"
#: Condition definition of the null files (marker strings of :func:`write_null_pairing`).
NULL_CONDITIONS = ("rest=rest_on:rest_off",)
_T0 = 1000.0


@dataclass(frozen=True)
class RealRecording:
    """One real recording, as a participant of null pairings.

    Attributes
    ----------
    data : np.ndarray, shape (n_samples, n_channels), float32, microvolts
    rate : float
    labels : list of str
    """

    data: np.ndarray
    rate: float
    labels: list[str]


@functools.cache
def eeglab_recording() -> RealRecording:
    """The EEGLAB tutorial recording (one person, 32 channels, 128 Hz, 238 s), read once."""
    import mne

    raw = mne.io.read_raw_eeglab(EEGLAB_SET, preload=True, verbose="error")
    data = (raw.get_data().T * 1e6).astype(np.float32)  # volts -> microvolts
    data.flags.writeable = False  # shared by every caller
    return RealRecording(data=data, rate=float(raw.info["sfreq"]), labels=list(raw.ch_names))


def lagged_null_pair(recording: RealRecording, lag_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A null dyad from one person: A is the recording, B the recording ``lag_s`` later
    (circularly, ``B(t) = A((t + lag) mod T)``).

    One brain seconds apart has no moment-to-moment coupling with itself (EEG phase decorrelates
    within a second, envelope drifts within a few seconds), so every inter-brain pair is null,
    while both "participants" keep real EEG's spectra, non-stationarity, blinks and unequal channel
    variances. Lags above half the recording repeat shorter ones with A and B swapped.

    One shared input remains: the recording's visual stimuli ("square" events) come strictly
    every 3.0078 s (385 samples), so A's and B's stimulus-locked responses keep a fixed offset
    (the lag modulo the period). That is coupling through a shared stimulus, which the surrogates
    destroy; it can only add hits, so a count within the nominal range is not flattered by it.
    """
    shift = int(round(lag_s * recording.rate))
    if not 0 < shift < recording.data.shape[0]:
        raise ValueError(f"lag must lie inside the recording's {recording.data.shape[0] / recording.rate:.0f} s")
    return recording.data, np.roll(recording.data, -shift, axis=0)


def write_null_pairing(path: str | Path, a: np.ndarray, b: np.ndarray, rate: float, labels: list[str]) -> Path:
    """An XDF file whose participant A is ``a`` and participant B ``b`` (each (samples, channels),
    microvolts), stamped as if recorded at the same time, with one ``rest`` block
    (``NULL_CONDITIONS``) covering all but the first and last second. Written by
    :mod:`tests.synchrony.independent_xdf`, not dyadlab's writer.
    """
    from tests.synchrony.independent_xdf import Stream, Writer, split

    n = a.shape[0]
    stamps = _T0 + np.arange(n) / rate
    eeg = [
        Stream(
            stream_id=k + 1,
            name=f"Person{k + 1}-EEG",
            type="EEG",
            channel_format="float32",
            nominal_srate=rate,
            values=np.ascontiguousarray(values, dtype=np.float32),
            stamps=stamps,
            chunks=split(n, int(rate) // 4),
            channels=[(label, "EEG", "microvolts") for label in labels],
        )
        for k, values in enumerate((a, b))
    ]
    markers = Stream(
        stream_id=3,
        name="Events",
        type="Markers",
        channel_format="string",
        nominal_srate=0.0,
        values=[["rest_on"], ["rest_off"]],
        stamps=np.array([stamps[0] + 1.0, stamps[-1] - 1.0]),
        chunks=[1, 1],
    )
    return Writer().write(path, [*eeg, markers])
