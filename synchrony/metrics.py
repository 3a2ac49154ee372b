"""Inter-brain synchrony metrics on band-limited analytic signals.

Every metric is computed over the time samples of one epoch, for the inter-brain channel
pairs only (participant A's channels by participant B's, never the 2C x 2C matrix), and
then averaged over epochs. The definitions are those of HyPyP 0.6.2
(``hypyp.analyses.compute_sync`` with its default NumPy backend): on the same analytic signals
the values are HyPyP's. The analytic signals depend on the band filters too: the quick-check's
default band edges are -6 dB points, while HyPyP's (MNE's default FIR) pass the band up to its
edges and reach -6 dB half a transition band outside them, which changes the values (mean theta
PLV 0.311 against 0.246 on the same real EEG); ``band_filter="hypyp"``
(:mod:`dyadlab.synchrony.segments`) applies HyPyP's filters for values comparable with
published HyPyP analyses:

========  ==========================================================================
metric    value for channel a of A and channel b of B in one epoch (sums over time t)
========  ==========================================================================
plv       ``|sum u_a conj(u_b)| / n``, with ``u = x / |x|``
ccorr     ``|sum sin(p_a - m_a) sin(p_b - m_b)| / sqrt(sum sin^2(p_a - m_a) sum sin^2(p_b - m_b))``
          with ``p`` the phase and ``m`` its circular mean in the epoch (absolute value)
accorr    ``(|sum e^{i(p_a - p_b)}| - |sum e^{i(p_a + p_b)}|) / (2 sqrt(sum sin^2(p_a - m)
          sum sin^2(p_b - k)))`` with the pair's own centring ``m = (d + s) / 2`` and
          ``k = (s - d) / 2``, ``d`` and ``s`` the angles of the two sums in the numerator
          (Zimmermann et al. 2024, as HyPyP implements it; signed; a zero denominator gives
          the bare numerator)
coh       ``|sum x_a conj(x_b)| / sqrt(sum |x_a|^2 sum |x_b|^2)``: the *magnitude of
          coherency*, not its square (HyPyP's docstring says squared, its code is not)
imcoh     ``|Im sum x_a conj(x_b)| / sqrt(sum |x_a|^2 sum |x_b|^2)`` (absolute value)
envcorr   Pearson correlation of the envelopes ``|x_a|`` and ``|x_b|`` (signed)
powcorr   Pearson correlation of the powers ``|x_a|^2`` and ``|x_b|^2`` (signed)
pli       ``|mean sign(Im(x_a conj(x_b)))|``
wpli      ``|mean Im(x_a conj(x_b))| / mean |Im(x_a conj(x_b))|``, 0 when both are 0
========  ==========================================================================

Epochs are averaged with ``nanmean``, as in HyPyP: an epoch in which a channel has zero
amplitude or zero variance (a flat channel) gives NaN for that channel's pairs and is left
out of the mean instead of poisoning it.

Why it is fast: all metrics but PLI and wPLI are bilinear in per-channel time series once
per-channel terms are known, so one epoch costs a few ``(C_a x n) @ (n x C_b)`` matrix
products. accorr's pair-dependent centring is expanded with
``sum_t sin^2(p - m) = n/2 - Re(e^{-2im} sum_t e^{2ip}) / 2``, so its denominator needs
only the per-channel sums ``sum_t e^{2ip}``. wPLI's numerator is bilinear too
(``sum_t Im(x_a conj x_b) = Im sum_t x_a conj x_b``). PLI's sign sum and wPLI's denominator
need ``Im(x_a conj(x_b))`` sample by sample: NumPy forms it a few channels at a time in
small reused buffers, and large jobs (surrogates) use a fused numba loop when numba is
installed. Memory stays bounded either way (HyPyP's NumPy backend materialises the whole
``(E, 2C, 2C, n)`` tensor, about 20 GB for 32 + 32 channels and 60 two-second epochs at
256 Hz).

The same machinery computes any list of *epoch pairings* (epoch i of A with epoch j of B),
which is what the surrogate statistics in :mod:`dyadlab.synchrony.surrogates` need.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.signal

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

__all__ = [
    "EPOCH_CHUNK",
    "METRICS",
    "SUPPORTED_METRICS",
    "AllPairs",
    "EpochTerms",
    "LAG_METRICS",
    "PairList",
    "analytic_signal",
    "band_connectivity",
    "connectivity_from_terms",
    "inter_brain_connectivity",
    "pairing_connectivity",
    "validate_metrics",
    "validate_pair",
]

#: Metrics computed by default (the quick-check's set).
METRICS: tuple[str, ...] = ("plv", "accorr", "ccorr", "coh", "imcoh", "envcorr", "pli", "wpli")
#: Every metric this module can compute (``powcorr`` is available on request).
SUPPORTED_METRICS: tuple[str, ...] = METRICS + ("powcorr",)

#: Metrics that need ``Im(x_a conj(x_b))`` sample by sample (not expressible as matrix products).
LAG_METRICS = frozenset({"pli", "wpli"})
# Elements of the reused (A channels, C_b, n) buffers of the NumPy PLI/wPLI path (1 MB).
_LAG_BLOCK_ELEMENTS = 131_072
# PLI/wPLI jobs of at least this many (pair, C_a, C_b, n) elements use numba when installed.
# Measured on 5e7 elements (2 cores): NumPy 0.18 s, the numba kernel 0.015 s. Its compilation
# (~2 s) happens once per machine (numba caches it on disk; the inputs are always float64).
_NUMBA_MIN_ELEMENTS = 50_000_000
# Upper bound on epoch pairs per batch of matrix products (bounds the gathered copies).
_PAIR_CHUNK = 128
#: Epochs whose per-channel terms :func:`inter_brain_connectivity` makes at once by default: one
#: batch of products, so that the products run on the same batches as for all epochs at once
#: (the batches' shapes can move single-precision values by a rounding step).
EPOCH_CHUNK = _PAIR_CHUNK


def analytic_signal(data: np.ndarray) -> np.ndarray:
    """Analytic signal (Hilbert transform) along the last axis.

    Filtering belongs before this step and on *continuous* data: filter each band on the
    continuous recording, take the analytic signal, then cut epochs (per-epoch filtering
    creates spurious envelope correlation between independent signals).

    Parameters
    ----------
    data : np.ndarray, shape (..., n_times)
        Real, band-limited signal.

    Returns
    -------
    np.ndarray, shape (..., n_times), complex128
        ``data + 1j * hilbert_transform(data)``.
    """
    data = np.asarray(data)
    if np.iscomplexobj(data):
        raise ValueError(
            "analytic_signal expects a real signal; it received a complex array (is it already an analytic signal?)"
        )
    if data.ndim == 0 or data.shape[-1] < 2:
        raise ValueError(f"analytic_signal needs at least 2 samples on the last axis, got shape {data.shape}")
    return scipy.signal.hilbert(np.asarray(data, dtype=np.float64), axis=-1)


def validate_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """Check metric names; return them as a tuple without duplicates (order kept).

    Raises
    ------
    ValueError
        If the sequence is empty or names a metric not in :data:`SUPPORTED_METRICS`.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError(f"no metric requested; choose among {', '.join(SUPPORTED_METRICS)}")
    unknown = [m for m in metrics if m not in SUPPORTED_METRICS]
    if unknown:
        raise ValueError(
            f"unknown synchrony metric(s) {', '.join(map(repr, unknown))}; supported: {', '.join(SUPPORTED_METRICS)}"
        )
    return tuple(dict.fromkeys(metrics))


def _validate_signal(z: np.ndarray, name: str) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 3:
        raise ValueError(
            f"{name} must have shape (n_epochs, n_channels, n_times), got {z.ndim} dimension(s) with shape {z.shape}"
        )
    if not np.iscomplexobj(z):
        raise ValueError(
            f"{name} must be a complex analytic signal (use analytic_signal() on the "
            f"band-filtered continuous data, then epoch); got dtype {z.dtype}"
        )
    if min(z.shape) == 0:
        raise ValueError(f"{name} is empty (shape {z.shape})")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name} contains NaN or infinite values; reject or repair those epochs/channels first")
    # Single precision stays single (the quick-check's epochs are complex64: its sums over a
    # few hundred samples keep ~6 significant digits, and the products run twice as fast).
    return z if z.dtype == np.complex64 else z.astype(np.complex128, copy=False)


def validate_pair(za: np.ndarray, zb: np.ndarray, *, same_epochs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check two participants' analytic signals; return them as complex128 (or both as complex64).

    Parameters
    ----------
    za, zb : np.ndarray, shape (n_epochs, n_channels, n_times), complex
    same_epochs : bool
        Also require the same number of epochs (simultaneous epochs).

    Raises
    ------
    ValueError
        On non-3-D or real input, NaN/inf samples, or mismatched epoch lengths/counts.
    """
    za = _validate_signal(za, "za")
    zb = _validate_signal(zb, "zb")
    if za.dtype != zb.dtype:
        za, zb = za.astype(np.complex128, copy=False), zb.astype(np.complex128, copy=False)
    if za.shape[2] != zb.shape[2]:
        raise ValueError(f"za and zb must have the same epoch length; got {za.shape[2]} and {zb.shape[2]} samples")
    if same_epochs and za.shape[0] != zb.shape[0]:
        raise ValueError(
            f"za and zb must contain the same epochs; got {za.shape[0]} and {zb.shape[0]} epochs "
            "(reject an epoch in both participants, never in one)"
        )
    return za, zb


def _centred(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = values - values.mean(axis=-1, keepdims=True)
    return centred, np.einsum("ect,ect->ec", centred, centred)


@dataclass
class EpochTerms:
    """Per-participant, per-epoch quantities the metrics are built from (one band).

    Build with :meth:`from_signal`. Arrays of shape ``(n_epochs, n_channels, n_times)`` are
    time series; ``(n_epochs, n_channels)`` arrays are sums over time. Only what the requested
    metrics need is filled in. Computing them once lets surrogates reuse them for every
    epoch pairing.
    """

    n_epochs: int
    n_channels: int
    n_times: int
    signal: np.ndarray | None = None  # x (complex)
    signal_re: np.ndarray | None = None  # Re x, contiguous float64 (PLI/wPLI kernels)
    signal_im: np.ndarray | None = None  # Im x, contiguous float64
    unit: np.ndarray | None = None  # u = x / |x| (complex)
    unit_stack: np.ndarray | None = None  # (E, 2C, n): Re u over Im u (accorr, ccorr)
    power_sum: np.ndarray | None = None  # sum |x|^2
    unit_sq_sum: np.ndarray | None = None  # sum u^2 = sum e^{2ip} (complex)
    mean_cos: np.ndarray | None = None  # cos and sin of the circular mean direction m
    mean_sin: np.ndarray | None = None
    centred_sin_ss: np.ndarray | None = None  # sum sin^2(p - m)
    envelope: np.ndarray | None = None  # |x| - mean
    envelope_ss: np.ndarray | None = None
    power: np.ndarray | None = None  # |x|^2 - mean
    power_ss: np.ndarray | None = None

    @classmethod
    def from_signal(cls, z: np.ndarray, metrics: Sequence[str]) -> EpochTerms:
        """Terms of analytic signal ``z`` (n_epochs, n_channels, n_times) for ``metrics``."""
        wanted = set(metrics)
        n_epochs, n_channels, n_times = z.shape
        terms = cls(n_epochs=n_epochs, n_channels=n_channels, n_times=n_times)
        amplitude = np.abs(z)
        if wanted & {"coh", "imcoh", "wpli"}:
            terms.signal = np.ascontiguousarray(z)
        if wanted & {"pli", "wpli"}:
            # Double precision even for complex64 input: the numba kernel runs 2.5x faster on
            # float64 (measured: 6.4 vs 2.5 G elements/s; its int32 sign counts vectorise with it).
            terms.signal_re = np.ascontiguousarray(z.real, dtype=np.float64)
            terms.signal_im = np.ascontiguousarray(z.imag, dtype=np.float64)
        if wanted & {"coh", "imcoh"}:
            terms.power_sum = np.einsum("ect,ect->ec", amplitude, amplitude)
        if wanted & {"plv", "accorr", "ccorr"}:
            with np.errstate(invalid="ignore", divide="ignore"):  # zero amplitude -> NaN, as HyPyP
                unit = z / amplitude
            if wanted & {"plv", "accorr"}:
                terms.unit = unit
            if wanted & {"accorr", "ccorr"}:
                terms.unit_stack = np.ascontiguousarray(np.concatenate((unit.real, unit.imag), axis=1))
            if "accorr" in wanted:
                terms.unit_sq_sum = np.sum(unit * unit, axis=-1)
            if "ccorr" in wanted:
                # sin(p - m) = Im(u e^{-im}) = cos(m) Im u - sin(m) Re u, with the circular mean
                # m = atan2(mean sin p, mean cos p) (Fisher 1995): a per-channel linear
                # combination of Re u and Im u, so ccorr's numerator comes from the same
                # products as accorr's.
                mean_direction = np.angle(unit.sum(axis=-1))
                terms.mean_cos, terms.mean_sin = np.cos(mean_direction), np.sin(mean_direction)
                centred = (unit * np.exp(-1j * mean_direction)[..., None]).imag
                terms.centred_sin_ss = np.einsum("ect,ect->ec", centred, centred)
        if "envcorr" in wanted:
            terms.envelope, terms.envelope_ss = _centred(amplitude)
        if "powcorr" in wanted:
            terms.power, terms.power_ss = _centred(amplitude * amplitude)
        return terms


def _term(values: np.ndarray | None, name: str) -> np.ndarray:
    """A term the requested metrics need; :meth:`EpochTerms.from_signal` fills it for them."""
    if values is None:
        raise ValueError(f"EpochTerms without {name!r}: build the terms for (at least) the requested metrics")
    return values


class PairList:
    """Explicit epoch pairs: epoch ``epochs_a[k]`` of A with epoch ``epochs_b[k]`` of B.

    Values come out with shape ``(n_pairs, n_channels_a, n_channels_b)``.
    """

    def __init__(self, epochs_a: np.ndarray, epochs_b: np.ndarray):
        self.epochs_a = np.asarray(epochs_a, dtype=np.intp)
        self.epochs_b = np.asarray(epochs_b, dtype=np.intp)

    def __len__(self) -> int:
        return self.epochs_a.size

    def chunks(self, size: int) -> Iterator[tuple[slice, PairList]]:
        """Consecutive sub-lists of at most ``size`` pairs, with their slice."""
        for start in range(0, len(self), size):
            sl = slice(start, start + size)
            yield sl, PairList(self.epochs_a[sl], self.epochs_b[sl])

    def products(self, xa: np.ndarray, xb: np.ndarray, *, conjugate: bool = False) -> np.ndarray:
        """``sum_t xa[i, a, t] * xb[j, b, t]`` (``conj(xb)`` if asked) per pair: (n_pairs, C_a, C_b)."""
        xb_t = np.swapaxes(xb[self.epochs_b], 1, 2)
        return np.matmul(xa[self.epochs_a], xb_t.conj() if conjugate else xb_t)

    def a_term(self, values: np.ndarray) -> np.ndarray:
        """Per-epoch, per-channel A values (E_a, C_a) broadcast to the output shape."""
        return values[self.epochs_a][:, :, None]

    def b_term(self, values: np.ndarray) -> np.ndarray:
        """Per-epoch, per-channel B values (E_b, C_b) broadcast to the output shape."""
        return values[self.epochs_b][:, None, :]


class AllPairs:
    """Every pairing of the A epochs ``epochs_a`` with every one of the ``n_epochs_b`` B epochs.

    Values come out with shape ``(len(epochs_a), n_epochs_b, n_channels_b, n_channels_a)``
    -- note B's channel axis *before* A's: element ``[k, j, b, a]`` pairs channel a of epoch
    ``epochs_a[k]`` of A with channel b of epoch ``j`` of B. That layout comes from one
    large product ``B_all @ A_block^T`` with a cheap reordering of whole channel runs, and it
    is what the surrogate statistics consume. The pairs, in order, are
    ``(self.epochs_a, self.epochs_b)``.
    """

    def __init__(self, epochs_a: np.ndarray, n_epochs_b: int):
        self.block_a = np.asarray(epochs_a, dtype=np.intp)
        self.n_epochs_b = int(n_epochs_b)
        self.epochs_a = np.repeat(self.block_a, self.n_epochs_b)
        self.epochs_b = np.tile(np.arange(self.n_epochs_b), self.block_a.size)

    def __len__(self) -> int:
        return self.epochs_a.size

    def products(self, xa: np.ndarray, xb: np.ndarray, *, conjugate: bool = False) -> np.ndarray:
        """``sum_t xa[i, a, t] * xb[j, b, t]`` (``conj(xb)`` if asked): (k, E_b, C_b, C_a)."""
        n_b, c_b, n_times = xb.shape
        n_block, n_a = self.block_a.size, xa.shape[1]
        lhs = (xb.conj() if conjugate else xb).reshape(n_b * c_b, n_times)
        # One large product (efficient on every BLAS thread) gives (E_b, C_b, k, C_a); moving
        # k to the front copies runs of C_a contiguous values.
        block = lhs @ xa[self.block_a].reshape(n_block * n_a, n_times).T
        return np.ascontiguousarray(block.reshape(n_b, c_b, n_block, n_a).transpose(2, 0, 1, 3))

    def a_term(self, values: np.ndarray) -> np.ndarray:
        """Per-epoch, per-channel A values (E_a, C_a) broadcast to the output shape."""
        return values[self.block_a][:, None, None, :]

    def b_term(self, values: np.ndarray) -> np.ndarray:
        """Per-epoch, per-channel B values (E_b, C_b) broadcast to the output shape."""
        return values[None, :, :, None]


Pairing = PairList | AllPairs


def _real_blocks(
    pairing: Pairing, stack_a: np.ndarray, stack_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sums over time of Re.Re, Re.Im, Im.Re and Im.Im per pair from (E, 2C, n) Re-over-Im stacks.

    One real matrix product gives all four, hence both complex products ``sum x_a conj(x_b)``
    and ``sum x_a x_b`` (and ccorr's numerator) for the price of one complex product.
    """
    n_a, n_b = stack_a.shape[1] // 2, stack_b.shape[1] // 2
    g = pairing.products(stack_a, stack_b)
    if isinstance(pairing, AllPairs):  # (..., 2C_b, 2C_a): B's channels first
        return g[..., :n_b, :n_a], g[..., n_b:, :n_a], g[..., :n_b, n_a:], g[..., n_b:, n_a:]
    return g[..., :n_a, :n_b], g[..., :n_a, n_b:], g[..., n_a:, :n_b], g[..., n_a:, n_b:]


def _complex(real: np.ndarray, imag: np.ndarray) -> np.ndarray:
    out = np.empty(real.shape, dtype=np.result_type(real.dtype, np.complex64))
    out.real = real
    out.imag = imag
    return out


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _accorr_denominator(
    phase_cross: np.ndarray,
    phase_sum: np.ndarray,
    abs_cross: np.ndarray,
    abs_sum: np.ndarray,
    sq_sum_a: np.ndarray,
    sq_sum_b: np.ndarray,
    n: int,
) -> np.ndarray:
    """accorr's denominator ``2 sqrt(sum sin^2(p_a - m) sum sin^2(p_b - k))`` per pair.

    The pair centring is ``m = (d + s) / 2`` for A and ``k = (s - d) / 2`` for B, with ``d``
    and ``s`` the angles of ``phase_cross = sum e^{i(p_a - p_b)}`` and ``phase_sum =
    sum e^{i(p_a + p_b)}`` (``abs_*`` their magnitudes). With
    ``sum_t sin^2(p - c) = n/2 - Re(e^{-2ic} sum_t e^{2ip}) / 2`` and
    ``e^{-i(d + s)} = conj(cross * sum) / (|cross| |sum|)`` no angle is ever taken.
    ``sq_sum_*`` are ``sum_t e^{2ip}`` broadcast to the pair shape.
    """
    scale = abs_cross * abs_sum
    if np.any(scale == 0):  # np.angle(0) == 0: a vanishing sum has direction 1, as in HyPyP
        phase_cross = np.where(abs_cross == 0, 1.0, phase_cross)
        phase_sum = np.where(abs_sum == 0, 1.0, phase_sum)
        scale = np.abs(phase_cross) * np.abs(phase_sum)
    both = phase_cross * phase_sum  # |both| e^{i(d + s)}
    ss_a = both.real * sq_sum_a.real
    ss_a += both.imag * sq_sum_a.imag
    del both
    mixed = phase_cross * np.conj(phase_sum)  # |mixed| e^{i(d - s)}
    ss_b = mixed.real * sq_sum_b.real
    ss_b -= mixed.imag * sq_sum_b.imag
    del mixed
    for ss in (ss_a, ss_b):  # n/2 - Re(...)/(2 |cross| |sum|), clipped at 0 against rounding
        ss /= scale
        ss *= -0.5
        ss += 0.5 * n
        np.maximum(ss, 0.0, out=ss)
    ss_a *= ss_b
    denominator = np.sqrt(ss_a, out=ss_a)
    denominator *= 2.0
    denominator[denominator == 0] = 1.0  # HyPyP's guard: a zero denominator counts as 1
    return denominator


def bilinear_from_terms(
    ta: EpochTerms, tb: EpochTerms, pairing: Pairing, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Metrics expressible as matrix products, per pair (shapes as in :func:`connectivity_from_terms`).

    Computes every requested metric but PLI and wPLI; when ``"wpli"`` is requested, also
    returns wPLI's numerator ``|Im sum_t x_a conj(x_b)|`` under the key ``"wpli_numerator"``
    (see :func:`lag_metrics_from_sums`).
    """
    n = ta.n_times
    out: dict[str, np.ndarray] = {}
    wanted = set(metrics)
    blocks = (
        _real_blocks(pairing, _term(ta.unit_stack, "unit_stack"), _term(tb.unit_stack, "unit_stack"))
        if wanted & {"accorr", "ccorr"}
        else None
    )
    if wanted & {"plv", "accorr"}:
        if blocks is not None:
            rr, ri, ir, ii = blocks
            phase_cross = _complex(rr + ii, ir - ri)  # sum e^{i(pa - pb)}
        else:
            phase_cross = pairing.products(_term(ta.unit, "unit"), _term(tb.unit, "unit"), conjugate=True)
        abs_cross = np.abs(phase_cross)
        if "plv" in wanted:
            out["plv"] = abs_cross / n
        if "accorr" in wanted:
            assert blocks is not None  # made above for accorr
            rr, ri, ir, ii = blocks
            phase_sum = _complex(rr - ii, ir + ri)  # sum e^{i(pa + pb)}
            abs_sum = np.abs(phase_sum)
            denominator = _accorr_denominator(
                phase_cross,
                phase_sum,
                abs_cross,
                abs_sum,
                pairing.a_term(_term(ta.unit_sq_sum, "unit_sq_sum")),
                pairing.b_term(_term(tb.unit_sq_sum, "unit_sq_sum")),
                n,
            )
            accorr = abs_cross - abs_sum
            accorr /= denominator
            out["accorr"] = accorr
    if "ccorr" in wanted:
        assert blocks is not None  # made above for ccorr
        rr, ri, ir, ii = blocks
        cos_a = pairing.a_term(_term(ta.mean_cos, "mean_cos"))
        sin_a = pairing.a_term(_term(ta.mean_sin, "mean_sin"))
        cos_b = pairing.b_term(_term(tb.mean_cos, "mean_cos"))
        sin_b = pairing.b_term(_term(tb.mean_sin, "mean_sin"))
        # sum (cos_a Im u_a - sin_a Re u_a)(cos_b Im u_b - sin_b Re u_b)
        numerator = cos_a * cos_b * ii
        numerator -= cos_a * sin_b * ir
        numerator -= sin_a * cos_b * ri
        numerator += sin_a * sin_b * rr
        norm = np.sqrt(
            pairing.a_term(_term(ta.centred_sin_ss, "centred_sin_ss"))
            * pairing.b_term(_term(tb.centred_sin_ss, "centred_sin_ss"))
        )
        out["ccorr"] = np.abs(_safe_ratio(numerator, norm))
    if wanted & {"coh", "imcoh", "wpli"}:
        signal_cross = pairing.products(_term(ta.signal, "signal"), _term(tb.signal, "signal"), conjugate=True)
        if wanted & {"coh", "imcoh"}:
            norm = np.sqrt(
                pairing.a_term(_term(ta.power_sum, "power_sum")) * pairing.b_term(_term(tb.power_sum, "power_sum"))
            )
            if "coh" in wanted:
                out["coh"] = _safe_ratio(np.abs(signal_cross), norm)
            if "imcoh" in wanted:
                out["imcoh"] = _safe_ratio(np.abs(signal_cross.imag), norm)
        if "wpli" in wanted:
            # wPLI's numerator is bilinear: sum_t Im(x_a conj x_b) = Im(sum_t x_a conj x_b).
            out["wpli_numerator"] = np.abs(signal_cross.imag)
    for name, series, ss in (
        ("envcorr", "envelope", "envelope_ss"),
        ("powcorr", "power", "power_ss"),
    ):
        if name in wanted:
            numerator = pairing.products(getattr(ta, series), getattr(tb, series))
            norm = np.sqrt(pairing.a_term(getattr(ta, ss)) * pairing.b_term(getattr(tb, ss)))
            out[name] = _safe_ratio(numerator, norm)
    return out


def _lag_sums_numpy(
    re_a: np.ndarray, im_a: np.ndarray, re_b: np.ndarray, im_b: np.ndarray, epochs_a: np.ndarray, epochs_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair ``sum_t sign(Im(x_a conj x_b))`` and ``sum_t |Im(x_a conj x_b)|`` (NumPy).

    ``re_*``/``im_*`` are the real and imaginary parts (E, C, n) of the analytic signals.
    ``Im(x_a conj x_b) = Im x_a Re x_b - Re x_a Im x_b`` is formed sample by sample for a few
    A channels at a time into reused buffers of about ``_LAG_BLOCK_ELEMENTS`` elements
    (cache-sized: twice as fast as whole-epoch temporaries). It is the same float expression
    as HyPyP's, so an exact zero (identical phases) has the same sign, 0.

    Returns two arrays of shape (n_pairs, C_a, C_b).
    """
    n_a, n_b, n = re_a.shape[1], re_b.shape[1], re_a.shape[2]
    sign_sum = np.empty((epochs_a.size, n_a, n_b))
    abs_sum = np.empty((epochs_a.size, n_a, n_b))
    block = max(1, min(n_a, _LAG_BLOCK_ELEMENTS // (n_b * n)))
    lagged_buffer = np.empty((block, n_b, n))
    product_buffer = np.empty((block, n_b, n))
    mask_buffer = np.empty((block, n_b, n), dtype=bool)
    for p, (i, j) in enumerate(zip(epochs_a, epochs_b)):
        for a0 in range(0, n_a, block):
            a1 = min(a0 + block, n_a)
            lagged, product, mask = lagged_buffer[: a1 - a0], product_buffer[: a1 - a0], mask_buffer[: a1 - a0]
            np.multiply(im_a[i, a0:a1, None, :], re_b[j, None, :, :], out=lagged)
            np.multiply(re_a[i, a0:a1, None, :], im_b[j, None, :, :], out=product)
            lagged -= product
            positive = np.count_nonzero(np.greater(lagged, 0, out=mask), axis=-1)
            negative = np.count_nonzero(np.less(lagged, 0, out=mask), axis=-1)
            sign_sum[p, a0:a1] = positive - negative
            abs_sum[p, a0:a1] = np.abs(lagged, out=lagged).sum(axis=-1)
    return sign_sum, abs_sum


_numba_lag_kernel: Callable[..., None] | None = None
_NUMBA_KERNEL_LOCK = threading.Lock()


def _compiled_lag_kernel() -> Callable[..., None]:
    """The numba PLI/wPLI kernel, compiled on first use (and cached on disk by numba).

    Real and imaginary parts come as separate contiguous arrays so the time loop vectorises.
    ``fastmath`` is limited to re-association of the ``|Im|`` sum; fused multiply-add
    contraction stays off so ``Im`` is rounded exactly as in NumPy and HyPyP.
    """
    global _numba_lag_kernel
    if _numba_lag_kernel is None:
        import numba

        @numba.njit(parallel=True, cache=True, fastmath={"reassoc"})
        def kernel(re_a, im_a, re_b, im_b, epochs_a, epochs_b, sign_sum, abs_sum):  # pragma: no cover - JIT
            n_a = re_a.shape[1]
            n_b = re_b.shape[1]
            n = re_a.shape[2]
            for p in numba.prange(epochs_a.size):
                i = epochs_a[p]
                j = epochs_b[p]
                for a in range(n_a):
                    ra = re_a[i, a]
                    ia = im_a[i, a]
                    for b in range(n_b):
                        rb = re_b[j, b]
                        ib = im_b[j, b]
                        signs = np.int32(0)  # int32 sign counts vectorise best (measured)
                        total = 0.0
                        for t in range(n):
                            value = ia[t] * rb[t] - ra[t] * ib[t]
                            signs += np.int32(value > 0.0) - np.int32(value < 0.0)
                            total += abs(value)
                        sign_sum[p, a, b] = signs
                        abs_sum[p, a, b] = total

        _numba_lag_kernel = kernel
    return _numba_lag_kernel


def _lag_sums_numba(
    re_a: np.ndarray, im_a: np.ndarray, re_b: np.ndarray, im_b: np.ndarray, epochs_a: np.ndarray, epochs_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Same as :func:`_lag_sums_numpy`, as one fused, parallel numba loop (no temporaries)."""
    sign_sum = np.empty((epochs_a.size, re_a.shape[1], re_b.shape[1]))
    abs_sum = np.empty_like(sign_sum)
    # numba's default threading layer may not run parallel kernels from two threads at once
    # (the quick-check computes two bands in threads): one kernel at a time, on every core; the
    # lock also makes the one-off compilation happen once.
    with _NUMBA_KERNEL_LOCK:
        _compiled_lag_kernel()(
            re_a, im_a, re_b, im_b, np.ascontiguousarray(epochs_a), np.ascontiguousarray(epochs_b), sign_sum, abs_sum
        )
    return sign_sum, abs_sum


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def lag_sums(
    ta: EpochTerms,
    tb: EpochTerms,
    epochs_a: np.ndarray,
    epochs_b: np.ndarray,
    *,
    total_work: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PLI/wPLI sums ``sum_t sign(Im(x_a conj x_b))`` and ``sum_t |Im(x_a conj x_b)|`` per pair.

    Returns two arrays of shape (n_pairs, C_a, C_b). Large jobs (surrogates: thousands of
    epoch pairings) use the numba kernel when numba is installed -- several times faster,
    after a one-off compilation of a few seconds that numba caches on disk; small jobs (the
    observed values of one condition) use NumPy, which is then faster than compiling.
    ``total_work`` is the size of the whole job (pairs x C_a x C_b x n) when a caller splits
    it into several calls; by default, this call's own size.
    """
    if total_work is None:
        total_work = epochs_a.size * ta.n_channels * tb.n_channels * ta.n_times
    use_numba = total_work >= _NUMBA_MIN_ELEMENTS and _numba_available()
    kernel = _lag_sums_numba if use_numba else _lag_sums_numpy
    return kernel(
        _term(ta.signal_re, "signal_re"),
        _term(ta.signal_im, "signal_im"),
        _term(tb.signal_re, "signal_re"),
        _term(tb.signal_im, "signal_im"),
        epochs_a,
        epochs_b,
    )


# The threadpoolctl controller, made on first use; False without threadpoolctl.
_blas_controller: ThreadpoolController | Literal[False] | None = None


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while many small products run.

    The per-epoch products are small (C x n by n x C); a multi-threaded BLAS spends more time
    waking and synchronising threads than computing, badly so on a busy machine (measured:
    10 ms single-threaded vs 65-500 ms with 2 OpenBLAS threads for 60 epochs of 32 x 512).
    Large block products (:class:`AllPairs`) keep every thread. The threadpoolctl
    controller is created once: scanning the loaded libraries costs milliseconds per call.
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: without it the products are merely slower
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    if _blas_controller is False:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1, user_api="blas")


def lag_metrics_from_sums(
    sign_sum: np.ndarray,
    abs_sum: np.ndarray,
    wpli_numerator: np.ndarray | None,
    n_times: int,
    metrics: Sequence[str],
) -> dict[str, np.ndarray]:
    """PLI and/or wPLI from :func:`lag_sums` and wPLI's bilinear numerator (same shapes)."""
    out = {}
    if "pli" in metrics:
        out["pli"] = np.abs(sign_sum) / n_times
    if "wpli" in metrics:
        # 0/0 -> 0 (HyPyP replaces a zero denominator by 1); the numerator is then 0 up to
        # rounding, so it is zeroed explicitly.
        zero = abs_sum == 0
        out["wpli"] = np.where(zero, 0.0, wpli_numerator / np.where(zero, 1.0, abs_sum))
    return out


def connectivity_from_terms(
    ta: EpochTerms, tb: EpochTerms, pairing: Pairing, metrics: Sequence[str], *, total_work: int | None = None
) -> dict[str, np.ndarray]:
    """Per-pair metric values from precomputed terms.

    ``metrics`` must be validated and ``ta``/``tb`` built for (at least) these metrics.
    Shapes: (n_pairs, C_a, C_b) for a :class:`PairList`, (k, E_b, C_b, C_a) for
    :class:`AllPairs` (see there). ``total_work``: as for :func:`lag_sums`.
    """
    if isinstance(pairing, PairList):
        keys = [m for m in metrics if m not in LAG_METRICS] + (["wpli_numerator"] if "wpli" in metrics else [])
        out = {k: np.empty((len(pairing), ta.n_channels, tb.n_channels)) for k in keys}
        with _single_threaded_blas():
            for sl, chunk in pairing.chunks(_PAIR_CHUNK):
                for key, values in bilinear_from_terms(ta, tb, chunk, metrics).items():
                    out[key][sl] = values
    else:
        out = bilinear_from_terms(ta, tb, pairing, metrics)
    if LAG_METRICS & set(metrics):
        sign_sum, abs_sum = lag_sums(ta, tb, pairing.epochs_a, pairing.epochs_b, total_work=total_work)
        if isinstance(pairing, AllPairs):  # (k * E_b, C_a, C_b) -> (k, E_b, C_b, C_a)
            layout = (pairing.block_a.size, pairing.n_epochs_b, ta.n_channels, tb.n_channels)
            sign_sum = sign_sum.reshape(layout).swapaxes(2, 3)
            abs_sum = abs_sum.reshape(layout).swapaxes(2, 3)
        out.update(lag_metrics_from_sums(sign_sum, abs_sum, out.pop("wpli_numerator", None), ta.n_times, metrics))
    return out


def pairing_connectivity(
    za: np.ndarray,
    zb: np.ndarray,
    epochs_a: np.ndarray,
    epochs_b: np.ndarray,
    metrics: Sequence[str] = METRICS,
) -> dict[str, np.ndarray]:
    """Metrics for arbitrary epoch pairings (epoch ``epochs_a[k]`` of A with ``epochs_b[k]`` of B).

    This is the building block of surrogate statistics (pair epoch i of A with another epoch
    of B) and of :func:`inter_brain_connectivity` (pair epoch i with epoch i).

    Parameters
    ----------
    za : np.ndarray, shape (n_epochs_a, n_channels_a, n_times), complex
        Analytic signal of participant A for one band.
    zb : np.ndarray, shape (n_epochs_b, n_channels_b, n_times), complex
        Analytic signal of participant B for the same band.
    epochs_a, epochs_b : np.ndarray of int, shape (n_pairs,)
        Epoch indices into ``za`` and ``zb``.
    metrics : sequence of str
        Names from :data:`SUPPORTED_METRICS`.

    Returns
    -------
    dict of str to np.ndarray, each of shape (n_pairs, n_channels_a, n_channels_b)
        One value per epoch pairing and inter-brain channel pair (NaN where a channel is
        flat in that epoch).
    """
    metrics = validate_metrics(metrics)
    za, zb = validate_pair(za, zb, same_epochs=False)
    epochs_a = np.asarray(epochs_a, dtype=np.intp).ravel()
    epochs_b = np.asarray(epochs_b, dtype=np.intp).ravel()
    if epochs_a.shape != epochs_b.shape:
        raise ValueError(f"epochs_a and epochs_b must have the same length, got {epochs_a.size} and {epochs_b.size}")
    for name, idx, n in (("epochs_a", epochs_a, za.shape[0]), ("epochs_b", epochs_b, zb.shape[0])):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{name} has an index outside 0..{n - 1}")
    return connectivity_from_terms(
        EpochTerms.from_signal(za, metrics),
        EpochTerms.from_signal(zb, metrics),
        PairList(epochs_a, epochs_b),
        metrics,
    )


def _epoch_mean(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pair -> NaN, silently
        return np.nanmean(values, axis=0)


def inter_brain_connectivity(
    za: np.ndarray,
    zb: np.ndarray,
    metrics: Sequence[str] = METRICS,
    *,
    epochs_average: bool = True,
    chunk_epochs: int = EPOCH_CHUNK,
) -> dict[str, np.ndarray]:
    """Inter-brain synchrony between two participants for one frequency band.

    Parameters
    ----------
    za : np.ndarray, shape (n_epochs, n_channels_a, n_times), complex
        Analytic signal of participant A (band-filtered on continuous data, then epoched).
    zb : np.ndarray, shape (n_epochs, n_channels_b, n_times), complex
        Analytic signal of participant B, same epochs (epoch i of A is simultaneous with
        epoch i of B).
    metrics : sequence of str, default :data:`METRICS`
        Names from :data:`SUPPORTED_METRICS`; see the module docstring for definitions.
    epochs_average : bool, default True
        Average over epochs (``nanmean``) or return per-epoch values.
    chunk_epochs : int, default :data:`EPOCH_CHUNK`
        Epochs whose per-channel terms (:class:`EpochTerms`) are made and used at once: the
        terms of all epochs would take 4.5 times the signals' memory (980 MB for 890 gamma
        epochs of 500 samples and 2 x 32 channels). Each epoch's terms are its own, so the
        values are the same as in one chunk: bit for bit with multiples of
        :data:`EPOCH_CHUNK`, else to single-precision rounding (different batches of products).

    Returns
    -------
    dict of str to np.ndarray
        For each metric, shape (n_channels_a, n_channels_b) if ``epochs_average`` else
        (n_epochs, n_channels_a, n_channels_b). Element ``[a, b]`` couples channel a of A with
        channel b of B. Equal to HyPyP's ``compute_sync(...)[:, :C, C:]`` inter-brain block.

    Raises
    ------
    ValueError
        On unknown metrics, non-complex or non-3-D input, NaN/inf samples, or mismatched
        epoch counts or lengths.
    """
    metrics = validate_metrics(metrics)
    za, zb = validate_pair(za, zb, same_epochs=True)
    if chunk_epochs < 1:
        raise ValueError(f"chunk_epochs must be at least 1, got {chunk_epochs}")
    n_epochs = za.shape[0]
    work = n_epochs * za.shape[1] * zb.shape[1] * za.shape[2]  # the PLI/wPLI kernel suits the whole job
    per_epoch: dict[str, np.ndarray] = {}
    for start in range(0, n_epochs, chunk_epochs):
        chunk = slice(start, min(start + chunk_epochs, n_epochs))
        epochs = np.arange(chunk.stop - start)
        values = connectivity_from_terms(
            EpochTerms.from_signal(za[chunk], metrics),
            EpochTerms.from_signal(zb[chunk], metrics),
            PairList(epochs, epochs),
            metrics,
            total_work=work,
        )
        for m, v in values.items():
            if m not in per_epoch:
                per_epoch[m] = np.empty((n_epochs, *v.shape[1:]), dtype=v.dtype)
            per_epoch[m][chunk] = v
    if not epochs_average:
        return per_epoch
    return {m: _epoch_mean(v) for m, v in per_epoch.items()}


def band_connectivity(
    za_bands: Mapping[str, np.ndarray],
    zb_bands: Mapping[str, np.ndarray],
    metrics: Sequence[str] = METRICS,
    *,
    epochs_average: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`inter_brain_connectivity` for every band of a mapping.

    Parameters
    ----------
    za_bands, zb_bands : mapping of str to np.ndarray, each (n_epochs, n_channels, n_times)
        Analytic signals per band name (same band names in both).
    metrics, epochs_average
        As in :func:`inter_brain_connectivity`.

    Returns
    -------
    dict of str to dict of str to np.ndarray
        ``result[band][metric]``, shapes as in :func:`inter_brain_connectivity`.
    """
    if set(za_bands) != set(zb_bands):
        raise ValueError(f"participants have different bands: A has {sorted(za_bands)}, B has {sorted(zb_bands)}")
    return {
        band: inter_brain_connectivity(za_bands[band], zb_bands[band], metrics, epochs_average=epochs_average)
        for band in za_bands
    }
