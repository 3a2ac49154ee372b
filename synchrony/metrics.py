"""Inter-brain synchrony metrics on band-limited analytic signals.

Every metric is computed over the time samples of one epoch, for the inter-brain channel
pairs only (participant A's channels by participant B's, never the 2C x 2C matrix), and
then averaged over epochs. The definitions are those of HyPyP 0.6.2
(``hypyp.analyses.compute_sync`` with its default NumPy backend), so that values are
comparable with published HyPyP analyses:

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
only the per-channel sums ``sum_t e^{2ip}``. PLI and wPLI need ``Im(x_a conj(x_b))`` sample
by sample; they are computed in chunks of epoch pairs whose size bounds memory (HyPyP's
NumPy backend materialises the whole ``(E, 2C, 2C, n)`` tensor, about 20 GB for
32 + 32 channels and 60 two-second epochs at 256 Hz).

The same machinery computes any list of *epoch pairings* (epoch i of A with epoch j of B),
which is what the surrogate statistics in :mod:`synchrony.surrogates` need.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

__all__ = [
    "METRICS",
    "SUPPORTED_METRICS",
    "analytic_signal",
    "band_connectivity",
    "inter_brain_connectivity",
    "pairing_connectivity",
]

#: Metrics computed by default (the quick-check's set).
METRICS: tuple[str, ...] = ("plv", "accorr", "ccorr", "coh", "imcoh", "envcorr", "pli", "wpli")
#: Every metric this module can compute (``powcorr`` is available on request).
SUPPORTED_METRICS: tuple[str, ...] = METRICS + ("powcorr",)

# Metrics that need Im(x_a conj(x_b)) sample by sample (not expressible as matrix products).
_LAG_METRICS = frozenset({"pli", "wpli"})
# Upper bound on the number of float64 elements of one (pairs, C_a, C_b, n) chunk used by
# PLI/wPLI (16 MB per temporary array).
_LAG_CHUNK_ELEMENTS = 2_000_000
# Upper bound on epoch pairs per matrix-product batch (bounds the gathered copies).
_PAIR_CHUNK = 256


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
            "analytic_signal expects a real signal; it received a complex array "
            "(is it already an analytic signal?)"
        )
    if data.ndim == 0 or data.shape[-1] < 2:
        raise ValueError(f"analytic_signal needs at least 2 samples on the last axis, got shape {data.shape}")
    return scipy.signal.hilbert(np.asarray(data, dtype=np.float64), axis=-1)


def _validate_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError(f"no metric requested; choose among {', '.join(SUPPORTED_METRICS)}")
    unknown = [m for m in metrics if m not in SUPPORTED_METRICS]
    if unknown:
        raise ValueError(
            f"unknown synchrony metric(s) {', '.join(map(repr, unknown))}; "
            f"supported: {', '.join(SUPPORTED_METRICS)}"
        )
    return tuple(dict.fromkeys(metrics))


def _validate_signal(z: np.ndarray, name: str) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 3:
        raise ValueError(
            f"{name} must have shape (n_epochs, n_channels, n_times), got {z.ndim} dimension(s) "
            f"with shape {z.shape}"
        )
    if not np.iscomplexobj(z):
        raise ValueError(
            f"{name} must be a complex analytic signal (use analytic_signal() on the "
            f"band-filtered continuous data, then epoch); got dtype {z.dtype}"
        )
    if min(z.shape) == 0:
        raise ValueError(f"{name} is empty (shape {z.shape})")
    if not np.all(np.isfinite(z)):
        raise ValueError(
            f"{name} contains NaN or infinite values; reject or repair those epochs/channels first"
        )
    return z.astype(np.complex128, copy=False)


def _validate_pair(za: np.ndarray, zb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    za = _validate_signal(za, "za")
    zb = _validate_signal(zb, "zb")
    if za.shape[2] != zb.shape[2]:
        raise ValueError(
            f"za and zb must have the same epoch length; got {za.shape[2]} and {zb.shape[2]} samples"
        )
    return za, zb


@dataclass
class _Terms:
    """Per-participant, per-epoch quantities the metrics are built from.

    Arrays of shape ``(n_epochs, n_channels, n_times)`` are time series; arrays of shape
    ``(n_epochs, n_channels)`` are sums over time. Only what the requested metrics need is
    filled in.
    """

    n_times: int
    signal: np.ndarray | None = None  # x (complex)
    unit: np.ndarray | None = None  # u = x / |x| (complex)
    power_sum: np.ndarray | None = None  # sum |x|^2
    unit_sq_sum: np.ndarray | None = None  # sum u^2 = sum e^{2ip}
    centred_sin: np.ndarray | None = None  # sin(p - circular mean)
    centred_sin_ss: np.ndarray | None = None  # sum sin^2(p - circular mean)
    envelope: np.ndarray | None = None  # |x| - mean
    envelope_ss: np.ndarray | None = None
    power: np.ndarray | None = None  # |x|^2 - mean
    power_ss: np.ndarray | None = None


def _centred(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centred = values - values.mean(axis=-1, keepdims=True)
    return centred, np.einsum("ect,ect->ec", centred, centred)


def _terms(z: np.ndarray, metrics: Sequence[str]) -> _Terms:
    wanted = set(metrics)
    terms = _Terms(n_times=z.shape[-1])
    amplitude = np.abs(z)
    if wanted & {"coh", "imcoh", "pli", "wpli"}:
        terms.signal = z
    if wanted & {"coh", "imcoh"}:
        terms.power_sum = np.einsum("ect,ect->ec", amplitude, amplitude)
    if wanted & {"plv", "accorr", "ccorr"}:
        with np.errstate(invalid="ignore", divide="ignore"):  # zero amplitude -> NaN, as HyPyP
            unit = z / amplitude
        if wanted & {"plv", "accorr"}:
            terms.unit = unit
        if "accorr" in wanted:
            terms.unit_sq_sum = np.sum(unit * unit, axis=-1)
        if "ccorr" in wanted:
            # sin(p - m) = Im(u e^{-im}), m = atan2(mean sin p, mean cos p) (Fisher 1995)
            mean_direction = np.angle(unit.sum(axis=-1))
            centred = (unit * np.exp(-1j * mean_direction)[..., None]).imag
            terms.centred_sin = centred
            terms.centred_sin_ss = np.einsum("ect,ect->ec", centred, centred)
    if "envcorr" in wanted:
        terms.envelope, terms.envelope_ss = _centred(amplitude)
    if "powcorr" in wanted:
        terms.power, terms.power_ss = _centred(amplitude * amplitude)
    return terms


def _cross(xa: np.ndarray, xb: np.ndarray, *, conjugate: bool) -> np.ndarray:
    """Per-pair sums over time of ``x_a * conj(x_b)`` (or ``x_a * x_b``).

    ``xa``: (n_pairs, C_a, n), ``xb``: (n_pairs, C_b, n) -> (n_pairs, C_a, C_b).
    """
    xb_t = np.swapaxes(xb, -1, -2)
    if conjugate and np.iscomplexobj(xb_t):
        xb_t = xb_t.conj()
    return np.matmul(xa, xb_t)


def _outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_pairs, C_a) and (n_pairs, C_b) -> (n_pairs, C_a, C_b) products."""
    return a[:, :, None] * b[:, None, :]


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _bilinear_metrics(
    ta: _Terms, tb: _Terms, ia: np.ndarray, ib: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Metrics expressible as matrix products, for epoch pairs ``(ia[k], ib[k])``."""
    n = ta.n_times
    out: dict[str, np.ndarray] = {}
    wanted = set(metrics)
    if wanted & {"plv", "accorr"}:
        phase_cross = _cross(ta.unit[ia], tb.unit[ib], conjugate=True)  # sum e^{i(pa-pb)}
        if "plv" in wanted:
            out["plv"] = np.abs(phase_cross) / n
        if "accorr" in wanted:
            phase_sum = _cross(ta.unit[ia], tb.unit[ib], conjugate=False)  # sum e^{i(pa+pb)}
            diff_angle = np.angle(phase_cross)
            sum_angle = np.angle(phase_sum)
            # sum sin^2(p - c) = n/2 - Re(e^{-2ic} sum e^{2ip}) / 2, with 2m = d + s, 2k = s - d
            sin_ss_a = 0.5 * n - 0.5 * np.real(
                np.exp(-1j * (diff_angle + sum_angle)) * ta.unit_sq_sum[ia][:, :, None]
            )
            sin_ss_b = 0.5 * n - 0.5 * np.real(
                np.exp(-1j * (sum_angle - diff_angle)) * tb.unit_sq_sum[ib][:, None, :]
            )
            denominator = 2.0 * np.sqrt(np.clip(sin_ss_a, 0.0, None) * np.clip(sin_ss_b, 0.0, None))
            denominator[denominator == 0] = 1.0  # HyPyP's guard: a zero denominator counts as 1
            out["accorr"] = (np.abs(phase_cross) - np.abs(phase_sum)) / denominator
    if "ccorr" in wanted:
        numerator = _cross(ta.centred_sin[ia], tb.centred_sin[ib], conjugate=False)
        out["ccorr"] = np.abs(
            _safe_ratio(numerator, np.sqrt(_outer(ta.centred_sin_ss[ia], tb.centred_sin_ss[ib])))
        )
    if wanted & {"coh", "imcoh", "wpli"}:
        signal_cross = _cross(ta.signal[ia], tb.signal[ib], conjugate=True)
        if wanted & {"coh", "imcoh"}:
            norm = np.sqrt(_outer(ta.power_sum[ia], tb.power_sum[ib]))
            if "coh" in wanted:
                out["coh"] = _safe_ratio(np.abs(signal_cross), norm)
            if "imcoh" in wanted:
                out["imcoh"] = _safe_ratio(np.abs(signal_cross.imag), norm)
        if "wpli" in wanted:
            # wPLI's numerator is bilinear: sum_t Im(x_a conj x_b) = Im(sum_t x_a conj x_b).
            out["_wpli_numerator"] = np.abs(signal_cross.imag)
    for name, centred, ss in (
        ("envcorr", "envelope", "envelope_ss"),
        ("powcorr", "power", "power_ss"),
    ):
        if name in wanted:
            numerator = _cross(getattr(ta, centred)[ia], getattr(tb, centred)[ib], conjugate=False)
            out[name] = _safe_ratio(numerator, np.sqrt(_outer(getattr(ta, ss)[ia], getattr(tb, ss)[ib])))
    return out


def _lag_sums(ta: _Terms, tb: _Terms, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair ``sum_t sign(Im(x_a conj x_b))`` and ``sum_t |Im(x_a conj x_b)|``.

    ``Im(x_a conj x_b) = Im(x_a) Re(x_b) - Re(x_a) Im(x_b)`` is formed sample by sample in
    chunks of at most ``_LAG_CHUNK_ELEMENTS`` elements (the same float expression as HyPyP,
    so the sign of an exact zero is the same).
    """
    n_pairs = len(ia)
    n_a, n_b, n = ta.signal.shape[1], tb.signal.shape[1], ta.n_times
    sign_sum = np.empty((n_pairs, n_a, n_b))
    abs_sum = np.empty((n_pairs, n_a, n_b))
    chunk = max(1, _LAG_CHUNK_ELEMENTS // (n_a * n_b * n))
    re_a, im_a = ta.signal.real, ta.signal.imag
    re_b, im_b = tb.signal.real, tb.signal.imag
    for start in range(0, n_pairs, chunk):
        sl = slice(start, start + chunk)
        pa, pb = ia[sl], ib[sl]
        lagged = im_a[pa][:, :, None, :] * re_b[pb][:, None, :, :]
        lagged -= re_a[pa][:, :, None, :] * im_b[pb][:, None, :, :]
        sign_sum[sl] = np.count_nonzero(lagged > 0, axis=-1)
        sign_sum[sl] -= np.count_nonzero(lagged < 0, axis=-1)
        np.abs(lagged, out=lagged)
        abs_sum[sl] = lagged.sum(axis=-1)
    return sign_sum, abs_sum


def _pair_chunk_metrics(
    ta: _Terms, tb: _Terms, ia: np.ndarray, ib: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    out = _bilinear_metrics(ta, tb, ia, ib, metrics)
    if _LAG_METRICS & set(metrics):
        sign_sum, abs_sum = _lag_sums(ta, tb, ia, ib)
        if "pli" in metrics:
            out["pli"] = np.abs(sign_sum) / ta.n_times
        if "wpli" in metrics:
            numerator = out.pop("_wpli_numerator")
            # 0/0 -> 0 (HyPyP replaces a zero denominator by 1); the numerator is then 0 up
            # to rounding, so it is zeroed explicitly.
            out["wpli"] = np.where(abs_sum == 0, 0.0, numerator / np.where(abs_sum == 0, 1.0, abs_sum))
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
    metrics = _validate_metrics(metrics)
    za, zb = _validate_pair(za, zb)
    epochs_a = np.asarray(epochs_a, dtype=np.intp).ravel()
    epochs_b = np.asarray(epochs_b, dtype=np.intp).ravel()
    if epochs_a.shape != epochs_b.shape:
        raise ValueError(
            f"epochs_a and epochs_b must have the same length, got {epochs_a.size} and {epochs_b.size}"
        )
    for name, idx, n in (("epochs_a", epochs_a, za.shape[0]), ("epochs_b", epochs_b, zb.shape[0])):
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{name} has an index outside 0..{n - 1}")
    return _pairing_connectivity(_terms(za, metrics), _terms(zb, metrics), epochs_a, epochs_b, metrics)


def _pairing_connectivity(
    ta: _Terms, tb: _Terms, epochs_a: np.ndarray, epochs_b: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """:func:`pairing_connectivity` on precomputed, validated terms."""
    n_a, n_b = _n_channels(ta), _n_channels(tb)
    out = {m: np.empty((epochs_a.size, n_a, n_b)) for m in metrics}
    for start in range(0, epochs_a.size, _PAIR_CHUNK):
        sl = slice(start, start + _PAIR_CHUNK)
        chunk = _pair_chunk_metrics(ta, tb, epochs_a[sl], epochs_b[sl], metrics)
        for m in metrics:
            out[m][sl] = chunk[m]
    return out


def _n_channels(terms: _Terms) -> int:
    for value in (terms.signal, terms.unit, terms.centred_sin, terms.envelope, terms.power):
        if value is not None:
            return value.shape[1]
    raise AssertionError("terms were built for no metric")


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
    metrics = _validate_metrics(metrics)
    za, zb = _validate_pair(za, zb)
    if za.shape[0] != zb.shape[0]:
        raise ValueError(
            f"za and zb must contain the same epochs; got {za.shape[0]} and {zb.shape[0]} epochs "
            "(reject an epoch in both participants, never in one)"
        )
    epochs = np.arange(za.shape[0])
    per_epoch = _pairing_connectivity(_terms(za, metrics), _terms(zb, metrics), epochs, epochs, metrics)
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
        raise ValueError(
            f"participants have different bands: A has {sorted(za_bands)}, B has {sorted(zb_bands)}"
        )
    return {
        band: inter_brain_connectivity(za_bands[band], zb_bands[band], metrics, epochs_average=epochs_average)
        for band in za_bands
    }
