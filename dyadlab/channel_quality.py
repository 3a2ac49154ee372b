"""One definition of a bad EEG channel, shared by preflight, the quick-check and live monitors.

:func:`classify_channels` takes one participant's EEG, ``(n_channels, n_samples)`` in microvolts
(or another declared unit), its sampling rate and the mains frequency (50, 60, or ``None`` to
detect it), and returns per-channel measures and labels (:class:`ChannelQuality`). Preflight
(:mod:`dyadlab.acquisition.preflight`, a few seconds of live data) and the quick-check
(:mod:`dyadlab.synchrony.quality`, a whole recording) both call it with the same
:class:`ChannelThresholds`, so a channel that passes preflight is not called bad in the report
for another reason than what happened after preflight.

Measures
--------
std
    Standard deviation above :data:`HIGHPASS_HZ` (1 Hz), from the channel's Welch spectrum
    (:func:`welch_spectrum`: 2-s Hann windows, a straight line removed from each, so electrode
    offsets and the drifts of DC-coupled amplifiers are not counted as signal). In the data's
    unit; ``std_uv`` in microvolts when the unit is a voltage.
robust z, ratio to median
    Of log(std) and of std, against the participant's *live* channels (neither flat nor
    railed): z = (log std - median) / max(1.4826 MAD, :data:`LOG_STD_MIN_SCALE`).
railed fraction
    Share of the finite samples *at the rail*: beyond 98 % of ``rail_uv`` when the amplifier's
    input range is known; otherwise at the channel's own highest or lowest value held for at
    least :data:`RAIL_MIN_RUN` consecutive samples (a clipped amplifier holds its limit; noise
    touches its extreme once). A channel at one constant value is at the rail when that value
    is at least ``min_rail_uv`` in magnitude (an amplifier stuck at its limit), and otherwise
    not (a dead channel: flat).
repeat fraction
    Share of consecutive pairs of finite samples that hold the same value.
line-noise ratio (dB)
    Mean power within ±1 Hz of the mains frequency over the median power 2-5 Hz away on both
    sides (whatever of them lies below Nyquist), ``10 log10``. Measured whenever the sampling
    rate can represent the mains frequency (mains < rate / 2: a 60 Hz peak at 128 Hz is seen).

Labels (thresholds: :class:`ChannelThresholds`; the ones in µV apply when the unit is a voltage)
---------------------------------------------------------------------------------------------
==========  =====================================================================================
railed      railed fraction >= ``railed_fraction`` (0.01). Takes precedence: a railed channel is
            not also flat, noisy or line-noisy (a clipped amplifier repeats its limit and would
            look flat).
flat        not railed, and no finite sample, or repeat fraction > ``flat_repeat_fraction``
            (0.5, any unit), or std < ``flat_std_uv`` (0.5 µV). A flat channel is not also noisy
            or line-noisy.
noisy       neither railed nor flat, and std > ``noisy_std_uv`` (100 µV), or robust z >
            ``noisy_robust_z`` (3.5) *and* ratio to median >= ``noisy_ratio`` (3.5): the ratio
            keeps a tight montage, whose MAD is tiny, from flagging ordinary differences, and
            eye blinks in a few seconds of data from flagging frontal channels (2 x would flag
            9 % of 2-s windows of the simulator's EEG with blinks, 3.5 x 0.5 %).
line_noise  neither railed nor flat, and line-noise ratio > ``line_noise_db`` (20 dB). With the
            mains frequency not given, 50 and 60 Hz are both measured and the one whose peak
            stands highest on a live channel (more than :data:`LINE_DETECT_DB`, 3 dB) is used.
==========  =====================================================================================

Spectrum of a long recording: at most :data:`SPECTRUM_MAX_WINDOWS` (90) windows of Welch's grid
(2-s windows every second), spread evenly over the recording, make the estimate; windows in which
a channel holds NaN are skipped (see :func:`welch_spectrum`). A caller that already has the
spectrum passes it (``spectrum=``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import signal

#: The standard deviation is measured above this frequency (Hz): slower activity is offsets and
#: drifts. At a sampling rate of 2 Hz or less nothing lies above it and every frequency above
#: 0 Hz counts.
HIGHPASS_HZ = 1.0
#: Length of the Welch windows (s); at least :data:`MIN_WINDOW_SAMPLES` samples, at most the data.
SPECTRUM_WINDOW_S = 2.0
MIN_WINDOW_SAMPLES = 16
#: At most this many Welch windows (180 s of data), spread over the recording, make a spectrum.
SPECTRUM_MAX_WINDOWS = 90
#: A channel holding NaN in more than this fraction of its samples takes its spectrum windows
#: from its own NaN-free stretches and does not choose the other channels'.
MOSTLY_NAN_FRACTION = 0.5
#: Mains frequencies tried when the caller does not give one.
MAINS_HZ = (50.0, 60.0)
#: The mains peak: within this distance (Hz) of the mains frequency.
LINE_PEAK_HALF_WIDTH_HZ = 1.0
#: The neighbouring spectrum the peak is compared with: this far (Hz) from the mains frequency.
LINE_NEIGHBOURS_HZ = (2.0, 5.0)
#: Detecting the mains frequency: its peak must stand this many dB out on some live channel.
LINE_DETECT_DB = 3.0
#: With a known rail, samples beyond this share of ``rail_uv`` are at the rail.
RAIL_MARGIN = 0.98
#: Without a known rail, the channel's extreme value must be held this many samples in a row.
RAIL_MIN_RUN = 3
#: Floor of the robust spread of log(std) (natural log): identical channels give z = 0, not
#: infinity. Below 0.358 (= ln 3.5 / 3.5) a channel at ``noisy_ratio`` x the median still has
#: z > 3.5, so the ratio test stays the binding one in a tight montage.
LOG_STD_MIN_SCALE = 0.1

_UV_PER_UNIT = {
    "microvolts": 1.0,
    "microvolt": 1.0,
    "uv": 1.0,
    "µv": 1.0,  # micro sign
    "μv": 1.0,  # Greek mu
    "millivolts": 1e3,
    "millivolt": 1e3,
    "mv": 1e3,
    "volts": 1e6,
    "volt": 1e6,
    "v": 1e6,
    "nanovolts": 1e-3,
    "nanovolt": 1e-3,
    "nv": 1e-3,
}

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def microvolts_per_unit(unit: str | None) -> float | None:
    """Microvolts in one ``unit`` (``"microvolts"``, ``"uV"``, ``"mV"``, ``"volts"``...), or
    ``None`` when the unit is not a voltage (then no threshold in µV applies)."""
    if unit is None:
        return None
    return _UV_PER_UNIT.get(unit.strip().lower())


@dataclass(frozen=True)
class ChannelThresholds:
    """The limits that make a channel bad; one set for preflight, the quick-check and monitors.

    The µV limits apply to data in a voltage unit (see :func:`microvolts_per_unit`); the others
    to any unit. The definitions are in the module documentation (:mod:`dyadlab.channel_quality`).

    Parameters
    ----------
    flat_std_uv : float
        A channel whose standard deviation above 1 Hz is below this (µV) is flat.
    flat_repeat_fraction : float
        A channel repeating its previous value in more than this fraction of consecutive
        samples is flat (whatever the unit).
    railed_fraction : float
        A channel at the rail in at least this fraction of its samples is railed.
    noisy_robust_z : float
        With ``noisy_ratio``: a channel whose log standard deviation lies more than this many
        robust standard deviations (1.4826 x MAD) above the median of the live channels, *and*
        whose standard deviation is at least ``noisy_ratio`` times theirs, is noisy.
    noisy_ratio : float
        See ``noisy_robust_z``.
    noisy_std_uv : float
        A channel whose standard deviation above 1 Hz exceeds this (µV) is noisy.
    line_noise_db : float
        A channel whose mains peak stands more than this many dB above the neighbouring
        spectrum has line noise.
    rail_uv : float or None
        The amplifier's input range (µV) when known, e.g. 187500 for an OpenBCI Cyton at gain
        24: samples beyond 98 % of it are at the rail. ``None``: a channel's own extreme value,
        held, is taken as its rail.
    min_rail_uv : float
        Without ``rail_uv``: a channel at one constant value is railed (stuck at its limit) when
        that value is at least this large in magnitude (µV), else flat (dead).
    """

    flat_std_uv: float = 0.5
    flat_repeat_fraction: float = 0.5
    railed_fraction: float = 0.01
    noisy_robust_z: float = 3.5
    noisy_ratio: float = 3.5
    noisy_std_uv: float = 100.0
    line_noise_db: float = 20.0
    rail_uv: float | None = None
    min_rail_uv: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("flat_repeat_fraction", "railed_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}.")
        for name in ("flat_std_uv", "noisy_robust_z", "noisy_ratio", "noisy_std_uv", "min_rail_uv"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}.")
        if not math.isfinite(self.line_noise_db):
            raise ValueError(f"line_noise_db must be a finite number of dB, got {self.line_noise_db!r}.")
        if self.rail_uv is not None and not self.rail_uv > 0:
            raise ValueError(f"rail_uv must be > 0 µV or None, got {self.rail_uv!r}.")


@dataclass(frozen=True)
class Spectrum:
    """Welch spectrum of each channel, and how it was estimated.

    Attributes
    ----------
    freqs : np.ndarray, shape (n_freqs,)
    psd : np.ndarray, shape (n_channels, n_freqs)
        Power spectral density (unit² / Hz).
    std : np.ndarray, shape (n_channels,)
        Standard deviation above :data:`HIGHPASS_HZ` it gives (NaN for a channel without data).
    window_s : float
        Window length (s).
    windows, available_windows : int
        Windows used, and windows the data offered (Welch's grid, NaN-free where possible).
    max_windows : int or None
        The budget of windows (``None``: every window).
    """

    freqs: FloatArray
    psd: FloatArray
    std: FloatArray
    window_s: float
    windows: int
    available_windows: int
    max_windows: int | None


@dataclass(frozen=True)
class ChannelQuality:
    """Measures and labels of every channel (arrays in the rows' order).

    Attributes
    ----------
    unit : str
        The data's unit, as declared.
    uv_per_unit : float or None
        Microvolts per unit (``None``: not a voltage, no µV threshold applied).
    std : np.ndarray
        Standard deviation above :data:`HIGHPASS_HZ`, in ``unit``; NaN without data.
    robust_z, ratio_to_median : np.ndarray
        Of log(std) and std against the live channels; NaN when no channel is live (and z NaN
        for a zero or missing std).
    railed_fraction, repeat_fraction : np.ndarray
        Share of finite samples at the rail; share of consecutive finite pairs repeating a value
        (NaN with fewer than two finite samples).
    nan_samples : np.ndarray of int
        Samples holding NaN.
    line_noise_db : np.ndarray
        Mains peak over its neighbours (dB) at ``line_frequency`` (NaN where not measurable).
    line_frequency : float or None
        The mains frequency given, or the one detected (``None``: no peak, or not given and
        detected).
    flat, railed, noisy, line_noise : np.ndarray of bool
        The labels (railed, then flat, exclude the others).
    spectrum : Spectrum
    thresholds : ChannelThresholds
    """

    unit: str
    uv_per_unit: float | None
    std: FloatArray
    robust_z: FloatArray
    ratio_to_median: FloatArray
    railed_fraction: FloatArray
    repeat_fraction: FloatArray
    nan_samples: NDArray[np.int64]
    line_noise_db: FloatArray
    line_frequency: float | None
    flat: BoolArray
    railed: BoolArray
    noisy: BoolArray
    line_noise: BoolArray
    spectrum: Spectrum
    thresholds: ChannelThresholds = field(repr=False)

    @property
    def std_uv(self) -> FloatArray | None:
        """Standard deviation above 1 Hz in µV (``None`` when the unit is not a voltage)."""
        return None if self.uv_per_unit is None else self.std * self.uv_per_unit

    @property
    def live(self) -> BoolArray:
        """Channels neither flat nor railed (the reference of robust z and ratio)."""
        return ~(self.flat | self.railed)

    def flags(self, channel: int) -> list[str]:
        """Labels of one channel: ``railed``, ``flat``, ``noisy``, ``line_noise`` (in that order)."""
        names = ("railed", "flat", "noisy", "line_noise")
        masks = (self.railed, self.flat, self.noisy, self.line_noise)
        return [name for name, mask in zip(names, masks) if mask[channel]]

    def flat_reasons(self, channel: int) -> list[str]:
        """Why a flat channel is flat: ``no_data``, ``repeats``, ``std`` (empty if not flat)."""
        if not self.flat[channel]:
            return []
        if not np.isfinite(self.std[channel]):
            return ["no_data"]
        reasons = []
        repeat = self.repeat_fraction[channel]
        if not np.isfinite(repeat) or repeat > self.thresholds.flat_repeat_fraction:
            reasons.append("repeats")
        std_uv = self.std_uv
        if std_uv is not None and not std_uv[channel] >= self.thresholds.flat_std_uv:
            reasons.append("std")
        return reasons or ["no_data"]


# --------------------------------------------------------------------------- spectrum


def window_samples(n_samples: int, sampling_rate: float) -> int:
    """Welch window length (samples) for ``n_samples`` of data at ``sampling_rate``."""
    return int(min(n_samples, max(round(SPECTRUM_WINDOW_S * sampling_rate), MIN_WINDOW_SAMPLES)))


def _spectrum_windows(clean: BoolArray, nperseg: int, max_windows: int | None) -> tuple[NDArray[np.int64], int]:
    """Start samples of the Welch windows, and how many windows the data offers.

    Welch's own grid (windows of ``nperseg`` samples, half overlapping), keeping the windows in
    which ``clean`` holds throughout (every window when none does), thinned to ``max_windows``
    spread evenly over the kept ones.
    """
    starts = np.arange(0, clean.size - nperseg + 1, nperseg - nperseg // 2, dtype=np.int64)
    dirty_before = np.concatenate(([0], np.cumsum(~clean)))
    whole = dirty_before[starts + nperseg] == dirty_before[starts]
    if whole.any():
        starts = starts[whole]
    available = int(starts.size)
    if max_windows is not None and available > max_windows:
        starts = starts[np.linspace(0, available - 1, max_windows).round().astype(np.int64)]
    return starts, available


def _std_above_highpass(freqs: FloatArray, psd: FloatArray) -> FloatArray:
    band = freqs >= HIGHPASS_HZ
    if not band.any():
        band = freqs > 0  # too slow a rate to see 1 Hz: every frequency but 0 counts
    return np.asarray(np.sqrt(np.sum(psd[:, band], axis=1) * (freqs[1] - freqs[0])), dtype=np.float64)


def _window_spectrum(
    data: NDArray[Any], starts: NDArray[np.int64], nperseg: int, fs: float, fill: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Welch's PSD of each row of ``data`` averaged over the windows of ``nperseg`` samples
    beginning at ``starts`` (NaN replaced by the row's ``fill``): frequencies, PSD
    (n_rows, n_freqs) and the standard deviation above 1 Hz it gives."""
    windows = data[:, starts[:, None] + np.arange(nperseg)].astype(np.float64)  # (rows, windows, nperseg)
    windows = np.where(np.isfinite(windows), windows, fill[:, None, None])
    if nperseg < 2:
        return np.zeros(1), np.zeros((data.shape[0], 1)), np.zeros(data.shape[0])
    # Welch (Hann, one segment per window, density scaling) with a least-squares line off each
    # window: scipy.signal.welch(detrend="linear") to rounding, twice as fast. The line is
    # taken off in the frequency domain, from the transforms of the windowed constant and ramp.
    hann = signal.get_window("hann", nperseg)
    ramp = np.arange(nperseg) - (nperseg - 1) / 2
    offset = windows.mean(axis=-1)
    slope = windows @ ramp / (ramp @ ramp)
    spectra = np.fft.rfft(windows * hann, axis=-1)
    spectra -= offset[..., None] * np.fft.rfft(hann) + slope[..., None] * np.fft.rfft(hann * ramp)
    power = spectra.real**2 + spectra.imag**2
    power *= 2.0 / (fs * np.sum(hann**2))  # one-sided: every bin doubled but 0 Hz and Nyquist
    power[..., 0] /= 2
    if nperseg % 2 == 0:
        power[..., -1] /= 2
    freqs = np.asarray(np.fft.rfftfreq(nperseg, 1.0 / fs), dtype=np.float64)
    psd = np.asarray(power.mean(axis=1), dtype=np.float64)
    return freqs, psd, _std_above_highpass(freqs, psd)


def _estimate_spectrum(
    data: NDArray[Any],
    fs: float,
    *,
    nan_samples: NDArray[np.int64],
    fill: FloatArray,
    clean: BoolArray,
    max_windows: int | None,
) -> Spectrum:
    n_channels, n_samples = data.shape
    nperseg = window_samples(n_samples, fs)
    dead = nan_samples == n_samples
    starts, available = _spectrum_windows(clean, nperseg, max_windows)
    freqs, psd, std = _window_spectrum(data, starts, nperseg, fs, fill)
    for c in np.flatnonzero(~dead & (nan_samples > MOSTLY_NAN_FRACTION * n_samples)):
        own, _ = _spectrum_windows(np.isfinite(data[c]), nperseg, max_windows)
        _, own_psd, own_std = _window_spectrum(data[c : c + 1], own, nperseg, fs, fill[c : c + 1])
        psd[c], std[c] = own_psd[0], own_std[0]
    std[dead] = np.nan
    return Spectrum(
        freqs=freqs,
        psd=psd,
        std=std,
        window_s=nperseg / fs,
        windows=int(starts.size),
        available_windows=available,
        max_windows=max_windows,
    )


def _nan_layout(data: NDArray[Any]) -> tuple[NDArray[np.int64], FloatArray, BoolArray]:
    """NaN count and fill value (median of the finite samples, 0 if none) per channel, and the
    samples without NaN in any channel that is NaN in at most half of its samples."""
    n_channels, n_samples = data.shape
    nan_samples = np.zeros(n_channels, dtype=np.int64)
    fill = np.zeros(n_channels)
    clean = np.ones(n_samples, dtype=bool)
    for c in range(n_channels):
        finite = np.isfinite(data[c])
        nan_samples[c] = n_samples - np.count_nonzero(finite)
        if 0 < nan_samples[c] < n_samples:
            fill[c] = np.median(data[c][finite])
            if nan_samples[c] <= MOSTLY_NAN_FRACTION * n_samples:
                clean &= finite
    return nan_samples, fill, clean


def welch_spectrum(
    data: ArrayLike, sampling_rate: float, *, max_windows: int | None = SPECTRUM_MAX_WINDOWS
) -> Spectrum:
    """Welch spectrum of every channel, from at most ``max_windows`` windows spread over the data.

    Windows of :data:`SPECTRUM_WINDOW_S` (2 s; at least :data:`MIN_WINDOW_SAMPLES` samples, at
    most all of them) on Welch's grid of half-overlapping windows (one every second), Hann, a
    least-squares line removed from each. Windows in which a channel holds NaN are skipped,
    counting only channels with NaN in at most half their samples
    (:data:`MOSTLY_NAN_FRACTION`): a channel mostly NaN (a lead lost for most of the session)
    would leave the others few windows or none. Such a channel's spectrum comes from its own
    NaN-free windows, chosen the same way; a dead channel (all NaN) has none, and where no
    window is free of NaN the channel's median stands in for it. Up to about 91 s of data
    (90 windows) is thus plain Welch over every sample; an hour is estimated from windows
    every ~40 s, which keeps it to a fraction of a second while still seeing a problem that
    lasts a fair part of the recording.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        Any real dtype; float32 rows are read one window at a time (no float64 copy).
    sampling_rate : float
        Hz.
    max_windows : int or None
        Budget of windows (``None``: all of them).

    Returns
    -------
    Spectrum
    """
    array = np.asarray(data)
    _check_shape(array, sampling_rate)
    nan_samples, fill, clean = _nan_layout(array)
    return _estimate_spectrum(
        array, sampling_rate, nan_samples=nan_samples, fill=fill, clean=clean, max_windows=max_windows
    )


# --------------------------------------------------------------------------- sample statistics


def _held_at(row: NDArray[Any], value: Any) -> int:
    """Samples of ``row`` equal to ``value`` in runs of at least :data:`RAIL_MIN_RUN`."""
    at = row == value
    if np.count_nonzero(at) < RAIL_MIN_RUN:  # the usual case (noise touches its extreme once): no search
        return 0
    index = np.flatnonzero(at)
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    bounds = np.concatenate(([0], breaks, [index.size]))
    lengths = np.diff(bounds)
    return int(lengths[lengths >= RAIL_MIN_RUN].sum())


def _sample_statistics(
    data: NDArray[Any], thresholds: ChannelThresholds, uv_per_unit: float | None
) -> tuple[FloatArray, FloatArray, NDArray[np.int64], FloatArray, BoolArray]:
    """Repeat and railed fractions, NaN counts, fill values and the NaN-free samples (for the
    spectrum), in one pass over each row (float32 rows stay float32)."""
    n_channels, n_samples = data.shape
    repeat = np.full(n_channels, np.nan)
    railed = np.zeros(n_channels)
    nan_samples = np.zeros(n_channels, dtype=np.int64)
    fill = np.zeros(n_channels)
    clean = np.ones(n_samples, dtype=bool)
    known_rail = (
        RAIL_MARGIN * thresholds.rail_uv / uv_per_unit
        if thresholds.rail_uv is not None and uv_per_unit is not None
        else None
    )
    for c in range(n_channels):
        row = data[c]
        finite = np.isfinite(row)
        n_finite = int(np.count_nonzero(finite))
        nan_samples[c] = n_samples - n_finite
        if n_finite == 0:
            continue
        if n_finite < n_samples:
            values = row[finite]
            fill[c] = np.median(values)
            if nan_samples[c] <= MOSTLY_NAN_FRACTION * n_samples:
                clean &= finite
            pairs = int(np.count_nonzero(finite[1:] & finite[:-1]))
        else:
            values = row
            pairs = n_samples - 1
        if pairs:
            repeat[c] = np.count_nonzero(row[1:] == row[:-1]) / pairs  # NaN never equals
        high, low = values.max(), values.min()
        if known_rail is not None:
            at_rail = int(np.count_nonzero(np.abs(values) >= known_rail))
        elif high == low:  # one value throughout: stuck at the rail, or dead
            stuck = uv_per_unit is not None and abs(float(high)) * uv_per_unit >= thresholds.min_rail_uv
            at_rail = n_finite if stuck else 0
        else:
            at_rail = _held_at(row, high) + _held_at(row, low)
        railed[c] = at_rail / n_finite
    return repeat, railed, nan_samples, fill, clean


# --------------------------------------------------------------------------- line noise


def line_noise_db(spectrum: Spectrum, sampling_rate: float, mains: float) -> FloatArray | None:
    """Mains peak over its neighbourhood (dB) per channel, ``None`` when the rate cannot see it.

    The mean PSD within ±:data:`LINE_PEAK_HALF_WIDTH_HZ` of ``mains`` over the median PSD
    :data:`LINE_NEIGHBOURS_HZ` (2-5 Hz) away on either side, as far as they lie below Nyquist.
    Measurable when ``mains`` < ``sampling_rate / 2`` and the spectrum has bins in both bands.
    """
    if not 0 < mains < sampling_rate / 2:
        return None
    distance = np.abs(spectrum.freqs - mains)
    peak = distance <= LINE_PEAK_HALF_WIDTH_HZ
    around = (distance >= LINE_NEIGHBOURS_HZ[0]) & (distance <= LINE_NEIGHBOURS_HZ[1])
    if not peak.any() or not around.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = spectrum.psd[:, peak].mean(axis=1) / np.median(spectrum.psd[:, around], axis=1)
        return np.asarray(10 * np.log10(ratio), dtype=np.float64)


def _line_noise(
    spectrum: Spectrum, fs: float, line_freq: float | None, live: BoolArray
) -> tuple[float | None, FloatArray]:
    n_channels = spectrum.psd.shape[0]
    if line_freq is not None:
        measured = line_noise_db(spectrum, fs, line_freq)
        return line_freq, np.full(n_channels, np.nan) if measured is None else measured
    best: tuple[float, float, FloatArray] | None = None
    first: FloatArray | None = None
    for mains in MAINS_HZ:
        measured = line_noise_db(spectrum, fs, mains)
        if measured is None:
            continue
        first = measured if first is None else first
        candidates = measured[live & np.isfinite(measured)]
        strongest = float(candidates.max()) if candidates.size else -math.inf
        if strongest > LINE_DETECT_DB and (best is None or strongest > best[1]):
            best = (mains, strongest, measured)
    if best is not None:
        return best[0], best[2]
    return None, np.full(n_channels, np.nan) if first is None else first


# --------------------------------------------------------------------------- classification


def _check_shape(data: NDArray[Any], sampling_rate: float) -> None:
    if data.ndim != 2 or data.shape[1] == 0:
        raise ValueError(f"EEG must be (n_channels, n_samples > 0), got an array of shape {data.shape}.")
    if not sampling_rate > 0:
        raise ValueError(f"The sampling rate must be > 0 Hz, got {sampling_rate!r}.")


def classify_channels(
    data: ArrayLike,
    sampling_rate: float,
    line_freq: float | None = None,
    *,
    unit: str = "microvolts",
    thresholds: ChannelThresholds | None = None,
    spectrum: Spectrum | None = None,
    max_windows: int | None = SPECTRUM_MAX_WINDOWS,
) -> ChannelQuality:
    """Measure and label every channel of one participant's EEG (definitions: module docstring).

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        EEG in ``unit`` (NaN where samples are missing). Float32 rows are processed one at a
        time, so an hour of 32 channels costs no float64 copy.
    sampling_rate : float
        Hz.
    line_freq : float or None
        Mains frequency (50 or 60 Hz); ``None`` detects it (see :data:`MAINS_HZ`).
    unit : str
        The data's unit; thresholds in µV apply to voltage units only
        (:func:`microvolts_per_unit`).
    thresholds : ChannelThresholds, optional
        Default ``ChannelThresholds()``.
    spectrum : Spectrum, optional
        A spectrum of these rows already estimated (:func:`welch_spectrum`).
    max_windows : int or None
        Budget of Welch windows when the spectrum is estimated here.

    Returns
    -------
    ChannelQuality
    """
    array = np.asarray(data)
    _check_shape(array, sampling_rate)
    if line_freq is not None and not line_freq > 0:
        raise ValueError(f"The mains frequency must be 50 or 60 Hz (or None to detect it), got {line_freq!r}.")
    thresholds = thresholds if thresholds is not None else ChannelThresholds()
    uv_per_unit = microvolts_per_unit(unit)
    repeat, railed_fraction, nan_samples, fill, clean = _sample_statistics(array, thresholds, uv_per_unit)
    if spectrum is None:
        spectrum = _estimate_spectrum(
            array, sampling_rate, nan_samples=nan_samples, fill=fill, clean=clean, max_windows=max_windows
        )
    elif spectrum.psd.shape[0] != array.shape[0]:
        raise ValueError(f"The spectrum has {spectrum.psd.shape[0]} channels, the data {array.shape[0]}.")
    std = np.asarray(spectrum.std, dtype=np.float64)
    std_uv = std * uv_per_unit if uv_per_unit is not None else None

    railed = railed_fraction >= thresholds.railed_fraction
    flat = ~np.isfinite(std) | ~(repeat <= thresholds.flat_repeat_fraction)  # NaN repeat: < 2 samples
    if std_uv is not None:
        flat |= std_uv < thresholds.flat_std_uv
    flat &= ~railed
    live = ~(flat | railed)

    robust_z = np.full(std.size, np.nan)
    ratio = np.full(std.size, np.nan)
    reference = live & np.isfinite(std) & (std > 0)
    if reference.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            log_std = np.log(std)
        center = float(np.median(log_std[reference]))
        scale = max(1.4826 * float(np.median(np.abs(log_std[reference] - center))), LOG_STD_MIN_SCALE)
        robust_z = np.where(std > 0, (log_std - center) / scale, np.nan)  # no log of a zero std
        ratio = std / float(np.median(std[reference]))
    noisy = live & (robust_z > thresholds.noisy_robust_z) & (ratio >= thresholds.noisy_ratio)
    if std_uv is not None:
        noisy |= live & (std_uv > thresholds.noisy_std_uv)

    line_frequency, line_db = _line_noise(spectrum, sampling_rate, line_freq, live)
    line_noise = live & (np.nan_to_num(line_db, nan=-math.inf) > thresholds.line_noise_db)
    return ChannelQuality(
        unit=unit,
        uv_per_unit=uv_per_unit,
        std=std,
        robust_z=robust_z,
        ratio_to_median=ratio,
        railed_fraction=railed_fraction,
        repeat_fraction=repeat,
        nan_samples=nan_samples,
        line_noise_db=line_db,
        line_frequency=line_frequency,
        flat=flat,
        railed=railed,
        noisy=noisy,
        line_noise=line_noise,
        spectrum=spectrum,
        thresholds=thresholds,
    )


#: Length of the short segments in which :func:`noisy_throughout` looks for lasting noise: a blink
#: (about 0.5 s) touches at most two of them. A window shorter than six such segments is cut into
#: six, down to :data:`MIN_PERSISTENCE_SEGMENT_S` each.
PERSISTENCE_SEGMENT_S = 0.5
MIN_PERSISTENCE_SEGMENT_S = 0.1


def noisy_throughout(
    data: ArrayLike, sampling_rate: float, quality: ChannelQuality, *, segment_s: float = PERSISTENCE_SEGMENT_S
) -> BoolArray:
    """Which ``noisy`` channels are noisy in most short segments, not only in a few.

    A few seconds of data (preflight, a live monitor) that hold one eye blink or one movement make
    the frontal or the moved channels ``noisy`` by :func:`classify_channels`' measures, which
    average over the window. Lasting noise (a poor contact, muscle) stands out in every part of
    the window. So the window is cut into segments of ``segment_s`` (a window shorter than six
    segments into six, each at least :data:`MIN_PERSISTENCE_SEGMENT_S`); in each, every channel's
    standard deviation (a straight line removed) is compared with the median of the live channels
    that are not noisy; a noisy channel is *noisy throughout* when the median over segments of
    that ratio still reaches ``noisy_ratio``, or the median of its standard deviation still exceeds
    ``noisy_std_uv``. A transient that touches fewer than half the segments leaves both medians
    as they were without it.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        The rows ``quality`` was computed from, in its unit.
    sampling_rate : float
        Hz.
    quality : ChannelQuality
        :func:`classify_channels` of ``data``.
    segment_s : float
        Segment length (s).

    Returns
    -------
    np.ndarray of bool, shape (n_channels,)
        A subset of ``quality.noisy``. With fewer than three segments (a window shorter than
        0.3 s) the window cannot tell a transient from lasting noise, and every noisy channel is
        returned.
    """
    array = np.asarray(data, dtype=np.float64)
    _check_shape(array, sampling_rate)
    if not segment_s > 0:
        raise ValueError(f"segment_s must be > 0 s, got {segment_s!r}.")
    seconds = max(min(segment_s, array.shape[1] / sampling_rate / 6), MIN_PERSISTENCE_SEGMENT_S)
    length = max(int(seconds * sampling_rate), 2)
    n_segments = array.shape[1] // length
    if n_segments < 3 or not quality.noisy.any():
        return quality.noisy.copy()
    segments = array[:, : n_segments * length].reshape(array.shape[0], n_segments, length)
    segment_std = np.std(signal.detrend(np.nan_to_num(segments), axis=-1), axis=-1)  # (channels, segments)
    reference = quality.live & ~quality.noisy & np.all(segment_std > 0, axis=1)
    if not reference.any():
        return quality.noisy.copy()
    ratio = segment_std / np.median(segment_std[reference], axis=0)
    thresholds = quality.thresholds
    lasting = np.median(ratio, axis=1) >= thresholds.noisy_ratio
    if quality.uv_per_unit is not None:
        lasting |= np.median(segment_std, axis=1) * quality.uv_per_unit > thresholds.noisy_std_uv
    return np.asarray(quality.noisy & lasting, dtype=bool)


__all__ = [
    "HIGHPASS_HZ",
    "MAINS_HZ",
    "PERSISTENCE_SEGMENT_S",
    "SPECTRUM_MAX_WINDOWS",
    "ChannelQuality",
    "ChannelThresholds",
    "Spectrum",
    "classify_channels",
    "line_noise_db",
    "microvolts_per_unit",
    "noisy_throughout",
    "welch_spectrum",
    "window_samples",
]
