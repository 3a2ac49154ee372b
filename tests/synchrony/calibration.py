"""Binomial bounds for the calibration tests (false-positive rates under a null).

A calibration test counts rejections among ``n`` independent null data sets; the count is
Binomial(n, rate). Its bounds are the 0.1 % and 99.9 % quantiles of that distribution, so a
correctly calibrated method fails the test with probability at most 0.2 % whatever the seed, and
the test checks its own design: ``n`` must be large enough that a method rejecting ``must_fail``
of the data sets (7 % for a 5 % test) would fail it with probability at least 99 %.
"""

from __future__ import annotations

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
