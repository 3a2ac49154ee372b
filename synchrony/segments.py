"""From two recordings to band-limited analytic epochs per condition.

The steps, in order, and why:

1. **Conditions.** dyadlab markers delimit condition blocks with ``block_start``/``block_end``
   events carrying ``condition`` (:func:`blocks_from_markers`); files from other tools use
   ``NAME=START:END`` specifications (:func:`parse_condition_spec`, :func:`blocks_from_specs`).
   Without either, the whole overlap of the two recordings is one condition, ``recording``.
2. **Common timeline** (:func:`align_dyad`). Each participant's timestamps (clock-synchronised by
   pyxdf) are de-jittered by a least-squares line per segment (segments split at gaps longer
   than ``gap_samples`` and at backward jumps). Inside a segment, samples lost in shorter holes
   are counted (:func:`_sample_numbers`: the room in the step, confirmed by a lasting shift of
   the samples' lateness, so that bursty delivery is not mistaken for loss), the line is fitted
   on the true sample numbers and the lost samples are NaN. A participant recorded at a higher
   rate is resampled to the lower rate with :func:`scipy.signal.resample_poly` (anti-aliased),
   and both are linearly interpolated onto one uniform grid spanning their overlap. Grid samples
   outside a participant's segments (gaps) or next to NaN (lost samples included) are marked
   invalid.
3. **Filtering on the continuous signal, then epoching** (:func:`iter_band_analytic`). Each
   condition block, extended by ``pad`` seconds (at least the filter margin, step 4) of real
   data on both sides where the recording has them, is band-passed for every band at once in
   the frequency domain with the squared magnitude response of a 4th-order Butterworth
   band-pass (what forward-backward filtering gives: zero phase, -6 dB at the band edges), and
   turned into the analytic signal (negative frequencies removed). ``band_filter="hypyp"``
   applies instead the amplitude response of the FIR HyPyP's ``compute_freq_bands`` applies
   (``mne.filter.filter_data`` defaults: passband up to the band edges, -6 dB half a transition
   band outside them, e.g. 3-8 Hz for theta 4-7 Hz), so that values are comparable with
   published HyPyP analyses: on the same epochs of real EEG (EEGLAB recording, 128 Hz) mean
   theta PLV is 0.249 with it, 0.245 with HyPyP's default pipeline and 0.311 with the default
   design (``benchmarks/bench_hypyp_pipeline.py``). HyPyP filters each epoch (MNE pads it);
   both designs filter the continuous block, so the two differ by HyPyP's per-epoch edge
   effects (up to 0.035 per pair in PLV, 0.15 in envelope correlation, whose theta mean over
   independent halves rises from 0.015 to 0.064), and agree within the decimation error (step 5)
   with HyPyP's filter run on the continuous signal (at every sample: 3e-4 in PLV, the residual
   of HyPyP's Hilbert transform wrapping around the recording's ends).
   ``band_filter="hypyp-epochs"`` reproduces HyPyP's default pipeline itself, for comparability
   only: the kept epochs are cut from the block (channel means removed; the mains removed only
   when the caller removes it, as HyPyP removes none) and each is filtered by MNE's
   ``filter_data`` with HyPyP's call and made analytic on its own (:func:`_hypyp_analytic`); on
   the same epochs it equals HyPyP's pipeline to float32 rounding at every sample (PLI to 0.003
   per pair: MNE's padding makes each filtered epoch zero at its first and last sample, where the
   sign PLI counts is rounding noise, in HyPyP too), and within the decimation error at the
   analysis rate. It inherits the per-epoch edge effects, and makes no
   continuous signal, so circular-shift nulls are refused.
   :func:`describe_band_filter` states each band's measured response (the report's
   ``band_definitions``). Before any band filter (and the screening filter of step 4), the
   mains frequency and its harmonics below Nyquist are notched out of the block's spectrum and
   each epoch's line-noise power is measured (``mains``: :mod:`dyadlab.synchrony.mains`); the
   notch is a separate gain factor, so it composes with either band design. Epochs of ``epoch_length``
   seconds are then cut inside the block, non-overlapping, from the block start. Filtering
   whole blocks avoids the spurious envelope correlation that per-epoch filtering creates
   (reference: 0.18 in theta between independent signals). Each block's spectrum is computed
   once, by the artifact screening (step 4), and kept for the band signals until they are made.
   The kept spectra cost 8 bytes (single-precision complex) per channel, second of padded block
   and Hz up to where every band's gain is below :data:`GAIN_FLOOR` (111 Hz for the default
   bands at 500 Hz): about 200 MB for a 60-min session of 2 x 32 channels at 500 Hz, all held
   after the screening. A condition's band epochs are made one band at a time, from all its
   blocks (:func:`iter_condition_epochs`), so that only the bands being analysed are held; each
   block's spectrum is released once its last band signal is made, and none outlives its
   condition's :func:`iter_condition_epochs`.
4. **Artifact rejection** (:func:`reject_epochs`), on the broadband (1 Hz to the highest band
   edge) signal of both participants together: an epoch is rejected when an invalid sample (gap,
   NaN, lost sample) or the start or end of the recording lies within the filter margin of it
   (:func:`filter_margin`: the longest time, over the analysis bands and the broadband filter,
   for the envelope of a filter's impulse response to fall below 1 % of its peak, e.g. 1.28 s
   for theta 4-7 Hz; the band signals there would carry the discontinuity's ringing, and the
   FFT filter's circular wrap at the recording's ends), or when, in either participant, any
   channel used for the metrics has an epoch log-variance more than ``z_threshold`` robust
   standard deviations (1.4826 x MAD over the valid epochs of the same condition) above that
   channel's median. Union over participants: bad in either, dropped for both. The variance is
   taken over samples at >= 2.5 per period of the top frequency (:func:`epoch_log_variance`:
   the same to sampling error, about 0.003 rms in log-variance, at a fraction of the cost).
5. **Analysis rate** (:func:`analysis_step`). The analytic signal of a band is kept at every
   ``step``-th sample, with ``step`` the largest integer keeping at least four samples per
   period of the band's upper edge; sums over time of the products the metrics use are then
   the same to within sampling error, at a fraction of the cost. ``decimate=False`` keeps all
   samples. Measured per channel pair on real EEG (the EEGLAB recording's halves at 128 Hz and
   upsampled to 500 Hz, 2-s epochs, every band design; ``benchmarks/bench_hypyp_pipeline.py``):
   every metric within 0.01 of its full-rate value except PLI (up to 0.013: a count of signs
   over fewer samples) and ccorr (up to 0.054), and with ``"hypyp-epochs"`` (whose per-epoch
   edge transients are sampled coarsely too) accorr up to 0.012 and PLI up to 0.015; means over
   pairs within 0.01. ccorr centres each
   phase on its circular mean over the epoch, whose angle is ill-determined for a rotating phase
   (mean resultant length near 0.05): it moves with any change of the samples (with the
   full-rate mean, decimated ccorr moves by 0.006 only), and ccorr of the same EEG moves almost
   as much with the sampling rate alone (up to 0.02 per pair between 128 and 256 Hz), so it is
   no better defined at full rate. ``tests/synchrony/test_band_filters.py`` pins these bounds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage, signal

from dyadlab import DyadlabError
from dyadlab.synchrony.io import EventMarker, ParticipantEeg
from dyadlab.synchrony.mains import MainsRemoval, epoch_line_power, notch_gain

DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "theta": (4.0, 7.0),
    "alpha": (8.0, 12.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
WHOLE_RECORDING = "recording"
FILTER_ORDER = 4
#: Band filter designs (:func:`_band_gain`): ``"butterworth"`` (default) puts -6 dB at the band's
#: edges; ``"hypyp"`` is the FIR that HyPyP's ``compute_freq_bands`` applies (MNE's defaults),
#: passband to the edges and -6 dB half a transition band outside them; ``"hypyp-epochs"`` is HyPyP's
#: default pipeline itself: that FIR applied by MNE to each epoch separately, then the Hilbert
#: transform per epoch (:func:`_hypyp_analytic`), for comparability only.
BAND_FILTERS: tuple[str, ...] = ("butterworth", "hypyp", "hypyp-epochs")
#: The design that filters each epoch on its own instead of the continuous block.
EPOCHWISE_FILTER = "hypyp-epochs"
#: A discontinuity is felt while the filters' impulse response envelope exceeds this fraction of
#: its peak (:func:`filter_margin`).
RINGING_LEVEL = 0.01
#: Span (seconds) on each side of a timestamp step over which lost samples are confirmed.
HOLE_WINDOW_S = 0.1
#: Grid samples interpolated at once (all channels): small enough for the CPU cache.
INTERPOLATION_CHUNK = 8192
#: A band's filter keeps the spectrum bins where its gain is at least this. The spectra kept for the
#: band signals and the band signals themselves are single precision (rounding 2**-24 = 6e-8 of a
#: value): a bin weighted below 1e-7 moves a band sample by about one rounding step at most, unless
#: it is much stronger than the band (EEG's spectrum falls away from the bands). At 500 Hz the
#: default bands keep bins up to 111 Hz (1e-10 kept 170 Hz: 1.5x the memory); on a 60-min session
#: the band epochs moved by up to 2.8e-7 of their largest value, against 1.2e-7 between epochs
#: from a kept and from a fresh double-precision spectrum.
GAIN_FLOOR = 1e-7


class SegmentationError(DyadlabError, ValueError):
    """Conditions or epochs cannot be built from the recording as asked."""


@dataclass(frozen=True)
class Block:
    """One continuous stretch of one condition, in LSL seconds."""

    condition: str
    start: float
    end: float
    name: str


@dataclass(frozen=True)
class ConditionSpec:
    """``NAME=START:END``: blocks of ``name`` open at a marker matching ``start`` and close at the
    next marker matching ``end``. A pattern matches a marker string when it equals it or when it
    is a regular expression that matches the whole string."""

    name: str
    start: str
    end: str

    def matches(self, pattern: str, text: str) -> bool:
        if text == pattern:
            return True
        try:
            return re.fullmatch(pattern, text) is not None
        except re.error:
            return False


def parse_condition_spec(text: str) -> ConditionSpec:
    """Parse ``NAME=START:END``; a literal ``:`` inside START or END is written ``\\:``.

    Raises
    ------
    SegmentationError
        With an example of the expected form.
    """
    example = "e.g. --condition cooperation=start_coop:end_coop or --condition 'rest=rest_on:rest_off'"
    if "=" not in text:
        raise SegmentationError(f"Condition {text!r} has no '=': write NAME=START:END ({example}).")
    name, rule = text.split("=", 1)
    parts = re.split(r"(?<!\\):", rule)
    if not name.strip() or len(parts) != 2 or not all(p.strip() for p in parts):
        raise SegmentationError(
            f"Condition {text!r} is not NAME=START:END with one unescaped ':' between the start and end "
            f"markers (write a literal colon as \\:; {example})."
        )
    start, end = (p.replace("\\:", ":") for p in parts)
    return ConditionSpec(name.strip(), start, end)


def blocks_from_markers(markers: Sequence[EventMarker], recording_end: float) -> tuple[list[Block], list[str]]:
    """Condition blocks from dyadlab ``block_start``/``block_end`` markers.

    A block ends at the ``block_end`` with the same ``block`` id (or, without ids, the same
    condition). A block left open ends at the next ``block_start``, at ``session_end`` or at
    ``recording_end``, with a warning.
    """
    blocks: list[Block] = []
    warnings: list[str] = []
    open_block: tuple[str, str, float] | None = None  # condition, block id, start

    def close(at: float, why: str | None) -> None:
        nonlocal open_block
        if open_block is None:
            return
        condition, name, start = open_block
        if why:
            warnings.append(f"Block {name!r} ({condition}) has no block_end; it is taken to end at {why}.")
        if at > start:
            blocks.append(Block(condition, start, at, name))
        open_block = None

    for marker in markers:
        event = marker.event
        fields = marker.fields or {}
        if event == "block_start":
            close(marker.time, "the next block_start")
            condition = fields.get("condition")
            if not condition:
                warnings.append(f"A block_start at {marker.time:.3f} carries no condition; the block is skipped.")
                continue
            open_block = (str(condition), str(fields.get("block") or condition), marker.time)
        elif event == "block_end" and open_block is not None:
            same = fields.get("block") in (None, open_block[1]) and fields.get("condition") in (None, open_block[0])
            if same:
                close(marker.time, None)
        elif event == "session_end":
            close(marker.time, "session_end")
    close(recording_end, "the end of the recording")
    return blocks, warnings


def blocks_from_specs(
    markers: Sequence[EventMarker], specs: Sequence[ConditionSpec], recording_end: float
) -> tuple[list[Block], list[str]]:
    """Condition blocks from ``NAME=START:END`` specifications (any marker strings)."""
    blocks: list[Block] = []
    warnings: list[str] = []
    seen = list(dict.fromkeys(m.text for m in markers))
    for spec in specs:
        start_time: float | None = None
        found_start = False
        count = 0
        for marker in markers:
            if start_time is None and spec.matches(spec.start, marker.text):
                start_time, found_start = marker.time, True
            elif start_time is not None and spec.matches(spec.end, marker.text):
                count += 1
                blocks.append(Block(spec.name, start_time, marker.time, f"{spec.name}-{count}"))
                start_time = None
        if start_time is not None:
            count += 1
            warnings.append(
                f"Condition {spec.name!r}: a block opened by {spec.start!r} has no {spec.end!r} after it; it is taken "
                "to end at the end of the recording."
            )
            blocks.append(Block(spec.name, start_time, recording_end, f"{spec.name}-{count}"))
        if not found_start:
            shown = ", ".join(repr(s) for s in seen[:8]) or "none"
            warnings.append(
                f"Condition {spec.name!r}: no marker matches the start {spec.start!r} (marker strings in the file: "
                f"{shown}{', ...' if len(seen) > 8 else ''})."
            )
    return sorted(blocks, key=lambda b: b.start), warnings


def parse_bands(text: str | Iterable[str] | dict[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    """Bands from ``{"alpha": (8, 12)}``, or strings ``alpha=8-12`` (comma-separated or a list)."""
    if text is None:
        return dict(DEFAULT_BANDS)
    if isinstance(text, dict):
        items = list(text.items())
    else:
        entries = [e for chunk in ([text] if isinstance(text, str) else text) for e in chunk.split(",") if e.strip()]
        items = []
        for entry in entries:
            match = re.fullmatch(r"\s*([A-Za-z][\w\-]*)\s*=\s*([\d.]+)\s*-\s*([\d.]+)\s*", entry)
            if not match:
                raise SegmentationError(f"Band {entry!r} is not NAME=LOW-HIGH in Hz (e.g. alpha=8-12).")
            items.append((match.group(1), (float(match.group(2)), float(match.group(3)))))
    bands = {}
    for name, (low, high) in items:
        if not 0 < low < high:
            raise SegmentationError(f"Band {name}: need 0 < low < high Hz, got {low}-{high}.")
        bands[str(name)] = (float(low), float(high))
    if not bands:
        raise SegmentationError("No frequency band given.")
    return bands


@dataclass
class AlignedDyad:
    """Both participants on one uniform time grid.

    Attributes
    ----------
    rate : float
        Grid rate (Hz): the lower of the two nominal rates.
    start : float
        LSL time of grid sample 0.
    a, b : np.ndarray, shape (n_channels, n_samples), float32
        Participant A's and B's EEG on the grid (NaN where invalid).
    valid : np.ndarray, shape (n_samples,), bool
        Both participants have real data at this grid sample.
    notes : list of str
        What was done to get here (resampling), for the report.
    """

    rate: float
    start: float
    a: np.ndarray
    b: np.ndarray
    valid: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.valid.size)

    def index(self, t: float) -> int:
        """Grid index of LSL time ``t`` (rounded, not clipped)."""
        return int(round((t - self.start) * self.rate))


def _segments(timestamps: np.ndarray, gap_limit: float) -> list[tuple[int, int]]:
    """[first, stop) sample ranges without gaps or backward jumps."""
    breaks = np.flatnonzero((np.diff(timestamps) > gap_limit) | (np.diff(timestamps) <= 0)) + 1
    bounds = np.concatenate(([0], breaks, [timestamps.size]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2]


def _sample_numbers(timestamps: np.ndarray, period: float, window: int) -> np.ndarray:
    """Sample number of each timestamp of one segment, counting the samples lost in short holes.

    A step of ``dt`` between two timestamps has room for ``round(dt / period) - 1`` lost samples
    (jitter below half a period does not change the count). How many were really lost is read
    from the lateness ``(t - t_first) / period - sample number`` on both sides of the step: its
    lowest value over up to ``window`` samples before and after (not crossing the neighbouring
    steps) rises by the number lost. Samples delivered in bursts (stamped late together, then a
    long step) have the same lowest lateness in every burst and lose nothing; a clock drift is
    negligible over a window.
    """
    n = timestamps.size
    steps = np.flatnonzero(np.diff(timestamps) > 1.5 * period)  # last sample before each step
    numbers = np.arange(n)
    if steps.size == 0:
        return numbers
    lateness = (timestamps - timestamps[0]) / period - numbers
    run = np.zeros(n, dtype=np.int64)  # runs of samples between consecutive steps: 0, 1, ...
    run[steps + 1] = 1
    run = np.cumsum(run)
    # Sliding minima confined to one run: offsetting each run by more than the lateness spreads
    # keeps the neighbouring runs out of a window (earlier ones above for the window ending at the
    # step, later ones above for the window starting after it).
    spread = float(np.ptp(lateness)) + 1.0
    before = ndimage.minimum_filter1d(lateness - run * spread, window, origin=(window - 1) // 2, mode="nearest")
    before = before[steps] + run[steps] * spread
    after = ndimage.minimum_filter1d(lateness + run * spread, window, origin=-(window // 2), mode="nearest")
    after = after[steps + 1] - run[steps + 1] * spread
    room = np.rint(np.diff(timestamps)[steps] / period) - 1
    shift = np.zeros(n, dtype=np.int64)
    shift[steps + 1] = np.clip(np.rint(after - before), 0, room)
    return numbers + np.cumsum(shift)


def _regular_times(timestamps: np.ndarray, numbers: np.ndarray) -> tuple[float, float]:
    """Least-squares ``t = t0 + k * period`` over one segment, ``k`` the sample numbers: (t0, period)."""
    k = numbers - numbers.mean()
    t = timestamps - timestamps[0]
    t_mean = t.mean()
    period = float(np.dot(k, t - t_mean) / np.dot(k, k))
    return float(timestamps[0] + t_mean - period * numbers.mean()), period


def _interpolate_into(out: np.ndarray, first: int, values: np.ndarray, positions: np.ndarray) -> None:
    """``out[:, first + j]`` = ``values`` linearly interpolated at fractional sample ``positions[j]``
    (clamped to the ends, as :func:`numpy.interp`; NaN next to NaN), all channels at once."""
    last = values.shape[1] - 1
    for lo in range(0, positions.size, INTERPOLATION_CHUNK):  # chunks: the gathers stay in cache
        x = positions[lo : lo + INTERPOLATION_CHUNK]
        base = min(max(int(np.floor(x[0])), 0), last - 1)
        w = x - (base + np.arange(x.size))
        if base + x.size <= last and w.min() > -1e-6 and w.max() < 1 + 1e-6:
            # One source sample per grid sample (the usual case): slices instead of gathers.
            left, right = values[:, base : base + x.size], values[:, base + 1 : base + 1 + x.size]
        else:
            k = np.clip(np.floor(x).astype(np.int64), 0, last - 1)
            w = np.clip(x - k, 0.0, 1.0)
            left, right = values[:, k], values[:, k + 1]
        w = w.astype(np.float32)
        target = out[:, first + lo : first + lo + x.size]
        np.subtract(right, left, out=target)
        target *= w
        target += left


def _on_grid(
    p: ParticipantEeg, rate: float, grid_start: float, n_grid: int, gap_samples: float
) -> tuple[np.ndarray, bool]:
    """Participant's EEG interpolated onto the grid, (n_channels, n_grid) float32 with NaN where invalid."""
    out = np.full((p.data.shape[0], n_grid), np.nan, dtype=np.float32)
    ratio = Fraction(rate / p.nominal_rate).limit_denominator(1000)
    resampled = ratio != 1
    window = max(8, int(round(HOLE_WINDOW_S * p.nominal_rate)))
    for first, stop in _segments(p.timestamps, gap_samples / p.nominal_rate):
        stamps = p.timestamps[first:stop]
        numbers = _sample_numbers(stamps, 1.0 / p.nominal_rate, window)
        t0, period = _regular_times(stamps, numbers)
        values = p.data[:, first:stop]
        if numbers[-1] + 1 > numbers.size:  # lost samples: NaN in their places
            values = np.full((values.shape[0], int(numbers[-1]) + 1), np.nan, dtype=values.dtype)
            values[:, numbers] = p.data[:, first:stop]
        if resampled:
            invalid = ~np.isfinite(values)
            values = np.where(invalid, 0.0, values)
            values = signal.resample_poly(values, ratio.numerator, ratio.denominator, axis=1).astype(np.float32)
            bad_rows = invalid.any(axis=0).astype(np.float64)
            spread = signal.resample_poly(bad_rows, ratio.numerator, ratio.denominator)
            values[:, np.abs(spread) > 1e-3] = np.nan
            period *= ratio.denominator / ratio.numerator
        # Grid samples from half a source sample before the first to half one after the last (the
        # fitted line's end points carry rounding error), at fractional source sample positions.
        lo = max(int(np.ceil((t0 - period / 2 - grid_start) * rate)), 0)
        hi = min(int(np.floor((t0 + (values.shape[1] - 0.5) * period - grid_start) * rate)) + 1, n_grid)
        if hi > lo:
            grid_t = grid_start + np.arange(lo, hi) / rate
            _interpolate_into(out, lo, values, (grid_t - t0) / period)
    return out, resampled


def align_dyad(a: ParticipantEeg, b: ParticipantEeg, *, gap_samples: float = 25.0) -> AlignedDyad:
    """Put both participants on one uniform grid over their overlap (see the module docstring).

    Raises
    ------
    SegmentationError
        When the two recordings do not overlap in time.
    """
    start = max(a.timestamps[0], b.timestamps[0])
    end = min(a.timestamps[-1], b.timestamps[-1])
    if end <= start:
        raise SegmentationError(
            f"The two EEG recordings do not overlap in time: A runs {a.timestamps[0]:.3f}-{a.timestamps[-1]:.3f} s and "
            f"B {b.timestamps[0]:.3f}-{b.timestamps[-1]:.3f} s (LSL time, after clock synchronisation). They were "
            "recorded at different times or without clock offsets; check the file with `dyadlab inspect`."
        )
    rate = min(a.nominal_rate, b.nominal_rate)
    n_grid = int(np.floor((end - start) * rate)) + 1
    a_grid, a_resampled = _on_grid(a, rate, start, n_grid, gap_samples)
    b_grid, b_resampled = _on_grid(b, rate, start, n_grid, gap_samples)
    notes = []
    for p, resampled in ((a, a_resampled), (b, b_resampled)):
        if resampled:
            notes.append(
                f"Participant {p.label} was recorded at {p.nominal_rate:g} Hz and the other at {rate:g} Hz: "
                f"{p.label} was resampled to {rate:g} Hz (scipy.signal.resample_poly) for the synchrony analysis."
            )
    # A channel with no data at all (dead, excluded by the quality check) must not void every sample.
    valid = np.ones(n_grid, dtype=bool)
    for grid in (a_grid, b_grid):
        finite = np.isfinite(grid)
        valid &= finite[finite.any(axis=1)].all(axis=0)
    return AlignedDyad(rate=rate, start=float(start), a=a_grid, b=b_grid, valid=valid, notes=notes)


@dataclass(frozen=True)
class BlockSpectrum:
    """The spectrum of one participant's padded block (``EpochGrid.first`` to ``EpochGrid.stop``),
    computed once for the artifact screening (:func:`epoch_log_variance`) and reused for the band
    signals (:func:`condition_epochs`).

    Attributes
    ----------
    n_fft : int
        FFT length.
    bins : np.ndarray, shape (n_channels, n_bins), complex64
        The lowest rfft bins of the mean-removed block, all channels; above them the gain of
        every analysis band is below :data:`GAIN_FLOOR`.
    removed : tuple of float
        Mains frequencies already notched out of ``bins`` (:mod:`dyadlab.synchrony.mains`).
    """

    n_fft: int
    bins: np.ndarray
    removed: tuple[float, ...] = ()


@dataclass
class EpochGrid:
    """Epochs of one block: grid indices of their first samples and whether their data are valid.

    ``margin`` (seconds) is the filter ringing the plan allows for (:func:`plan_epochs`).
    ``first`` to ``stop`` is the grid range every filter of the block runs over, the artifact
    screening's and the band signals' alike: the epochs with ``pad`` seconds, and at least
    ``margin``, of data on both sides (clipped to the grid). ``spectra`` holds the block's
    :class:`BlockSpectrum` of that range per participant (``"a"``, ``"b"``) from
    :func:`select_epochs` until :func:`iter_condition_epochs` takes it. ``line_power`` holds
    each epoch's line-noise power per participant (:func:`dyadlab.synchrony.mains.epoch_line_power`,
    on the used channels before the mains removal) when :func:`select_epochs` was given ``mains``.
    """

    block: Block
    starts: np.ndarray  # (n_epochs,) int
    valid: np.ndarray  # (n_epochs,) bool
    margin: float
    first: int
    stop: int
    spectra: dict[str, BlockSpectrum] = field(default_factory=dict, repr=False, compare=False)
    line_power: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


def plan_epochs(
    aligned: AlignedDyad, blocks: Sequence[Block], epoch_length: float, margin: float | None = None, pad: float = 3.0
) -> list[EpochGrid]:
    """Non-overlapping epochs of ``epoch_length`` seconds inside each block (clipped to the grid).

    An epoch is invalid when any grid sample within ``margin`` seconds of it is invalid (gap,
    NaN, lost sample) or lies beyond the start or end of the grid, because filtering spreads a
    discontinuity over its neighbourhood. ``margin`` defaults to :func:`filter_margin` of
    :data:`DEFAULT_BANDS`. The block is filtered with ``pad`` seconds, at least ``margin``, of
    the recording on both sides of its epochs where it has them (``EpochGrid.first``, ``stop``).
    """
    n_epoch = int(round(epoch_length * aligned.rate))
    if n_epoch < 4:
        raise SegmentationError(f"Epochs of {epoch_length} s hold fewer than 4 samples at {aligned.rate:g} Hz.")
    if margin is None:
        margin = filter_margin(_default_bands(aligned.rate), aligned.rate)
    n_margin = int(np.ceil(margin * aligned.rate))
    n_pad = max(int(round(pad * aligned.rate)), n_margin)
    invalid = np.concatenate(([0], np.cumsum(~aligned.valid)))
    plans = []
    for block in blocks:
        first = max(aligned.index(block.start), 0)
        stop = min(aligned.index(block.end), aligned.n_samples)
        n = max((stop - first) // n_epoch, 0)
        starts = first + n_epoch * np.arange(n)
        lo = starts - n_margin
        hi = starts + n_epoch + n_margin
        inside = (lo >= 0) & (hi <= aligned.n_samples)  # the recording's ends are discontinuities too
        lo, hi = np.clip(lo, 0, aligned.n_samples), np.clip(hi, 0, aligned.n_samples)
        plans.append(
            EpochGrid(
                block,
                starts.astype(np.int64),
                inside & ((invalid[hi] - invalid[lo]) == 0),
                float(margin),
                max(first - n_pad, 0),
                min(first + n * n_epoch + n_pad, aligned.n_samples),
            )
        )
    return plans


def analysis_step(rate: float, high: float, decimate: bool = True) -> int:
    """Keep every ``step``-th sample of a band's analytic signal: >= 4 samples per period of ``high``."""
    return max(1, int(rate // (4.0 * high))) if decimate else 1


def _band_gain(
    freqs: np.ndarray, band: tuple[float, float], rate: float, band_filter: str = "butterworth"
) -> np.ndarray:
    """Zero-phase gain of a band's filter at ``freqs`` (Hz), for a design of :data:`BAND_FILTERS`.

    ``"butterworth"``: the squared magnitude of a 4th-order Butterworth band-pass (forward-backward
    filtering), -6 dB at the band's edges. ``"hypyp"``: the amplitude response of the FIR that
    ``mne.filter.create_filter`` designs for the band with its defaults (firwin, Hamming window,
    automatic transition bands), the filter HyPyP's ``compute_freq_bands`` applies through
    ``mne.filter.filter_data``; real, negative in parts of the stopband (its side lobes).
    ``"hypyp-epochs"`` applies the same FIR (to each epoch: :func:`_hypyp_analytic`), so its
    gain, margins and stated response are those of ``"hypyp"``.

    Raises
    ------
    SegmentationError
        When the band reaches the Nyquist frequency, the design is unknown, or ``"hypyp"`` (or
        ``"hypyp-epochs"``) is asked for without MNE installed.
    """
    low, high = band
    nyquist = rate / 2
    if high >= nyquist:
        raise SegmentationError(f"Band {low:g}-{high:g} Hz reaches the Nyquist frequency ({nyquist:g} Hz) of the data.")
    if band_filter in ("hypyp", EPOCHWISE_FILTER):
        return _fir_amplitude(_hypyp_fir((float(low), float(high)), float(rate)), np.asarray(freqs, float), rate)
    if band_filter != "butterworth":
        raise SegmentationError(f"Unknown band filter {band_filter!r}: choose one of {', '.join(BAND_FILTERS)}.")
    sos = signal.butter(FILTER_ORDER, [low, high], btype="bandpass", fs=rate, output="sos")
    _, response = signal.sosfreqz(sos, worN=freqs, fs=rate)
    return np.abs(response) ** 2


@functools.lru_cache(maxsize=64)
def _hypyp_fir(band: tuple[float, float], rate: float) -> np.ndarray:
    """The taps of the FIR band-pass HyPyP 0.6 applies (``mne.filter.filter_data`` defaults), from
    MNE itself: odd length, symmetric (zero phase once centred), read-only."""
    try:
        import mne
    except ImportError as error:
        raise SegmentationError(
            "band_filter='hypyp' takes HyPyP's band filters from MNE, which is not installed: "
            "`pip install mne` (or use the default band_filter='butterworth')."
        ) from error
    taps = mne.filter.create_filter(None, rate, band[0], band[1], verbose="error")
    taps.flags.writeable = False
    return taps


def _fir_amplitude(taps: np.ndarray, freqs: np.ndarray, rate: float) -> np.ndarray:
    """Amplitude response ``A(f) = h[M] + 2 sum_k h[M + k] cos(2 pi f k / rate)`` of a symmetric FIR
    of ``2M + 1`` taps applied centred (zero phase). On an rfft grid (``freqs[j] = j rate / n`` with
    ``n`` at least the length) it is the real rfft of the centred taps; elsewhere the sum itself,
    a bounded number of frequencies at a time."""
    half = taps.size // 2
    if freqs.size > 1 and freqs[0] == 0.0:
        n = int(round(rate / freqs[1]))
        if n >= taps.size and np.allclose(freqs, np.arange(freqs.size) * (rate / n), rtol=0, atol=1e-9 * rate):
            centred = np.zeros(n)
            centred[: half + 1] = taps[half:]
            centred[n - half :] = taps[:half]
            return scipy.fft.rfft(centred)[: freqs.size].real
    lags = np.arange(1, half + 1)
    amplitude = np.empty(freqs.size)
    for start in range(0, freqs.size, 4096):  # (4096 x half) cosines at a time
        chunk = freqs[start : start + 4096]
        cosines = np.cos(np.outer(chunk, lags) * (2 * np.pi / rate))
        amplitude[start : start + chunk.size] = taps[half] + 2.0 * cosines @ taps[half + 1 :]
    return amplitude


@functools.lru_cache(maxsize=64)
def _ringing(
    band: tuple[float, float], rate: float, band_filter: str = "butterworth", notch: tuple[float, ...] = ()
) -> float:
    """Seconds after which the envelope of the band filter's impulse response (with the mains
    removal's ``notch`` frequencies, :func:`dyadlab.synchrony.mains.notch_gain`) stays below
    :data:`RINGING_LEVEL` of its peak (the response is symmetric: as long before)."""
    low, high = band
    n = 2 * int(np.ceil(max(8.0, 40.0 / (high - low)) * rate))  # decays long before the window ends
    freqs = scipy.fft.rfftfreq(n, 1.0 / rate)
    one_sided = _band_gain(freqs, band, rate, band_filter) * notch_gain(freqs, notch) * 2.0
    one_sided[0] /= 2.0
    envelope = np.abs(scipy.fft.ifft(one_sided, n=n))[: n // 2]
    return float((np.flatnonzero(envelope >= RINGING_LEVEL * envelope.max())[-1] + 1) / rate)


def filter_margin(
    bands: dict[str, tuple[float, float]],
    rate: float,
    band_filter: str = "butterworth",
    notch: tuple[float, ...] = (),
) -> float:
    """How far (seconds) a discontinuity spreads into the band-passed signals.

    The longest time, over ``bands``, for the envelope of the filter's impulse response (the
    ``band_filter`` design of :func:`_band_gain`) to fall for good below :data:`RINGING_LEVEL` of
    its peak. Narrow and low bands ring longest; at 1 % (500 Hz), Butterworth: theta 4-7 Hz
    1.28 s, alpha 8-12 Hz 0.94 s, beta 13-30 Hz 0.24 s, gamma 30-45 Hz 0.25 s. The mains removal
    (``notch``: the frequencies removed) rings too, but inside a band only: 50 Hz removed, gamma
    0.26 s, the 1-45 Hz screening filter 0.44 s (0.32 s without), a 35-55 Hz band 0.84 s (0.19 s).
    """
    return max(
        _ringing((float(low), float(high)), float(rate), band_filter, tuple(notch)) for low, high in bands.values()
    )


def rejection_margin(
    rate: float,
    high: float,
    bands: dict[str, tuple[float, float]] | None = None,
    band_filter: str = "butterworth",
    notch: tuple[float, ...] = (),
) -> float:
    """The margin of :func:`select_epochs` (seconds): :func:`filter_margin` of the analysis
    ``bands`` (default :data:`DEFAULT_BANDS`) in the ``band_filter`` design and of the broadband
    (Butterworth) screening filter up to ``high``, each with the mains ``notch`` removed."""
    analysis = filter_margin(_default_bands(rate) if bands is None else bands, rate, band_filter, notch)
    return max(analysis, filter_margin({"broadband": _broadband(high, rate)}, rate, notch=notch))


def describe_band_filter(band: tuple[float, float], rate: float, band_filter: str = "butterworth") -> dict[str, Any]:
    """What a band's filter does, measured from its response (:func:`_band_gain`) on a 0.01 Hz grid.

    Returns
    -------
    dict
        ``design``; ``edges_hz`` (the band as given) and ``edges_meaning``; ``order`` (Butterworth)
        or ``fir_taps`` and ``fir_length_s`` (FIR); and, measured: ``passband_hz`` (gain at least
        0.99), ``minus_3db_hz`` (gain at least 1/sqrt 2), ``minus_6db_hz`` (gain at least 0.5)
        and ``transition_hz`` (low and high side: the width from gain 0.99 down to 0.01, -40 dB),
        and ``ringing_s`` (:func:`filter_margin`). Gains are what the signal's amplitude is
        multiplied by, once.
    """
    low, high = float(band[0]), float(band[1])
    resolution = 0.01
    freqs = scipy.fft.rfftfreq(int(round(rate / resolution)), 1.0 / rate)
    gain = _band_gain(freqs, (low, high), rate, band_filter)

    def span(level: float) -> list[float]:
        above = freqs[gain >= level]
        return [round(float(above[0]), 2), round(float(above[-1]), 2)]

    passband, stopband = span(0.99), span(0.01)
    description: dict[str, Any] = {"design": band_filter, "edges_hz": [low, high]}
    if band_filter in ("hypyp", EPOCHWISE_FILTER):
        taps = _hypyp_fir((low, high), float(rate)).size
        description["edges_meaning"] = (
            "passband edges of MNE's default FIR (firwin, Hamming window), as HyPyP's compute_freq_bands "
            "filters: -6 dB half a transition band outside them"
        )
        if band_filter == EPOCHWISE_FILTER:
            description["edges_meaning"] += "; applied to each epoch separately (MNE pads it), as HyPyP's pipeline"
        description.update(fir_taps=taps, fir_length_s=round(taps / rate, 4))
    else:
        description["edges_meaning"] = (
            f"-6 dB points: squared magnitude of an order-{FILTER_ORDER} Butterworth band-pass (forward-backward)"
        )
        description["order"] = FILTER_ORDER
    description.update(
        passband_hz=passband,
        minus_3db_hz=span(2**-0.5),
        minus_6db_hz=span(0.5),
        transition_hz=[round(passband[0] - stopband[0], 2), round(stopband[1] - passband[1], 2)],
        ringing_s=round(filter_margin({"band": (low, high)}, rate, band_filter), 3),
    )
    return description


def _default_bands(rate: float) -> dict[str, tuple[float, float]]:
    """:data:`DEFAULT_BANDS` that the data can hold (below 0.45 x the rate)."""
    return {name: band for name, band in DEFAULT_BANDS.items() if band[1] < 0.45 * rate}


def iter_band_analytic(
    data: np.ndarray,
    rate: float,
    bands: dict[str, tuple[float, float]],
    *,
    steps: dict[str, int] | None = None,
    start: int = 0,
    stop: int | None = None,
    band_filter: str = "butterworth",
) -> Iterator[tuple[str, np.ndarray]]:
    """Analytic signal of each band of a continuous stretch, one band at a time (bounded memory).

    Parameters
    ----------
    data : np.ndarray, shape (n_channels, n_samples)
        Continuous data; NaN are set to the channel mean first (epochs near them are rejected).
    rate : float
    bands : dict of name -> (low, high)
    steps : dict of name -> int, optional
        Return every ``step``-th sample of the band (default 1). The decimated signal is made
        directly by a shorter inverse FFT (the band-passed spectrum has no content at or above
        ``rate / step`` when ``step`` comes from :func:`analysis_step`), not by computing every
        sample and dropping most of them.
    start, stop : int
        Return samples ``start, start + step, ...`` below ``stop`` (default: all).
    band_filter : str
        The bands' filter design, one of :data:`BAND_FILTERS` (:func:`_band_gain`).

    Yields
    ------
    name : str
    analytic : np.ndarray, shape (n_channels, len(range(start, stop, step))), complex128
    """
    n = data.shape[1]
    steps = {name: (steps or {}).get(name, 1) for name in bands}
    n_fft = _fft_length(n, steps.values())
    spectrum = _spectrum(data, n_fft)
    yield from _band_signals(spectrum, n_fft, rate, bands, steps, start, n if stop is None else stop, band_filter)


def _fft_length(n: int, steps: Iterable[int]) -> int:
    """A fast FFT length of at least ``n`` that is a multiple of every step."""
    common = int(np.lcm.reduce(list(steps)))
    return common * scipy.fft.next_fast_len(-(-n // common), real=True)  # 5-smooth: faster than 7, 11


def _band_signals(
    spectrum: np.ndarray,
    n_fft: int,
    rate: float,
    bands: dict[str, tuple[float, float]],
    steps: dict[str, int],
    start: int,
    stop: int,
    band_filter: str,
) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_band_analytic` from the rfft of the block (its lowest bins suffice: bins
    beyond ``spectrum``'s are taken as zero)."""
    shift = _shift(0, _bins_needed(bands, rate, n_fft, steps, band_filter), start, n_fft)
    for name, band in bands.items():
        yield name, _band_signal(spectrum, shift, n_fft, rate, band, steps[name], start, stop, band_filter)


def _band_signal(
    spectrum: np.ndarray,
    shift: np.ndarray,
    n_fft: int,
    rate: float,
    band: tuple[float, float],
    step: int,
    start: int,
    stop: int,
    band_filter: str = "butterworth",
) -> np.ndarray:
    """One band of :func:`_band_signals`, with ``shift`` the :func:`_shift` from bin 0 to ``start``
    of at least the band's bins."""
    length = n_fft // step
    # z[start + step k] = ifft_L(Z[m] exp(2 pi i m start / n_fft), m < L)[k] / step, L = n_fft / step.
    lo, gain = _band_bins(band, rate, n_fft, min(length, n_fft // 2 + 1), band_filter)
    hi = lo + gain.size
    weights = gain * (2.0 / step)  # one-sided: the analytic signal
    if lo == 0:
        weights[0] /= 2.0
    if n_fft % 2 == 0 and hi == n_fft // 2 + 1:  # the Nyquist bin
        weights[-1] /= 2.0
    weights = weights * shift[lo:hi]
    folded = np.zeros((spectrum.shape[0], length), dtype=np.complex128)
    np.multiply(spectrum[:, lo:hi], weights, out=folded[:, lo:hi])
    return scipy.fft.ifft(folded, axis=1, workers=-1, overwrite_x=True)[:, : len(range(start, stop, step))]


def _real_band_signal(
    spectrum: np.ndarray, n_fft: int, rate: float, band: tuple[float, float], step: int, start: int, stop: int
) -> np.ndarray:
    """The band-passed (real) signal at samples ``start, start + step, ...`` below ``stop``: an
    inverse real FFT of length ``n_fft / step`` of the bins below that rate's Nyquist frequency
    (``step`` must leave the band's content below it)."""
    length = n_fft // step
    lo, gain = _band_bins(band, rate, n_fft, (length + 1) // 2)
    hi = lo + gain.size
    half = np.zeros((spectrum.shape[0], length // 2 + 1), dtype=np.complex128)
    np.multiply(spectrum[:, lo:hi], gain * _shift(lo, hi, start, n_fft) / step, out=half[:, lo:hi])
    return scipy.fft.irfft(half, n=length, axis=1, workers=-1, overwrite_x=True)[:, : len(range(start, stop, step))]


def _shift(lo: int, hi: int, start: int, n_fft: int) -> np.ndarray:
    """Phases moving an ``n_fft``-point spectrum's bins ``lo`` to ``hi`` to start at sample ``start``."""
    return np.exp(2j * np.pi * np.arange(lo, hi) * (start / n_fft))


def _bins_needed(
    bands: dict[str, tuple[float, float]],
    rate: float,
    n_fft: int,
    steps: dict[str, int],
    band_filter: str = "butterworth",
) -> int:
    """How many of the lowest rfft bins :func:`_band_signals` needs: above them the gain of every
    band is below :data:`GAIN_FLOOR`."""
    needed = 1
    for name, band in bands.items():
        lo, gain = _band_bins(band, rate, n_fft, min(n_fft // steps[name], n_fft // 2 + 1), band_filter)
        needed = max(needed, lo + gain.size)
    return needed


def _spectrum(data: np.ndarray, n_fft: int) -> np.ndarray:
    """rfft (``n_fft`` points, complex128) of ``data`` with each channel's mean removed and zeros
    at non-finite samples (gaps, dead channels: the mean is taken over the finite samples)."""
    n = data.shape[1]
    x = np.zeros((data.shape[0], n_fft))
    mean = np.sum(data, axis=1, dtype=np.float64) / max(n, 1)
    np.subtract(data, mean[:, None], out=x[:, :n])
    for c in np.flatnonzero(~np.isfinite(mean)):
        finite = np.isfinite(data[c])
        mean[c] = np.sum(data[c, finite], dtype=np.float64) / max(int(finite.sum()), 1)
        x[c, :n] = np.where(finite, data[c] - mean[c], 0.0)
    return scipy.fft.rfft(x, axis=1, workers=-1, overwrite_x=True)


def _band_bins(
    band: tuple[float, float], rate: float, n_fft: int, kept: int, band_filter: str = "butterworth"
) -> tuple[int, np.ndarray]:
    """:func:`_band_gain` on the bins ``lo`` to ``hi`` of an ``n_fft``-point rfft (below ``kept``)
    outside which its magnitude stays below :data:`GAIN_FLOOR`: (lo, gain), read-only. The
    ``"hypyp"`` FIR's side lobes stay near 1e-3 up to the Nyquist frequency, so that design keeps
    every bin below ``kept`` (its spectra take up to 2.3 times the memory at 500 Hz)."""
    return _band_bins_cached((float(band[0]), float(band[1])), float(rate), n_fft, kept, band_filter)


@functools.lru_cache(maxsize=32)  # blocks of one length share it
def _band_bins_cached(
    band: tuple[float, float], rate: float, n_fft: int, kept: int, band_filter: str
) -> tuple[int, np.ndarray]:
    gain = _band_gain(scipy.fft.rfftfreq(n_fft, 1.0 / rate)[:kept], band, rate, band_filter)
    above = np.flatnonzero(np.abs(gain) >= GAIN_FLOOR)
    lo, hi = (int(above[0]), int(above[-1]) + 1) if above.size else (0, 0)
    gain = gain[lo:hi]
    gain.flags.writeable = False
    return lo, gain


def block_analytic(
    data: np.ndarray, rate: float, bands: dict[str, tuple[float, float]], band_filter: str = "butterworth"
) -> dict[str, np.ndarray]:
    """All bands of :func:`iter_band_analytic` at once: dict of name -> (n_channels, n_samples) complex."""
    return dict(iter_band_analytic(data, rate, bands, band_filter=band_filter))


def _broadband(high: float, rate: float) -> tuple[float, float]:
    """The band of the artifact screening: 1 Hz to ``high`` (below 0.45 x the rate)."""
    return 1.0, min(high, 0.45 * rate)


def epoch_log_variance(
    aligned: AlignedDyad,
    plans: Sequence[EpochGrid],
    epoch_length: float,
    high: float,
    *,
    bands: dict[str, tuple[float, float]] | None = None,
    decimate: bool = True,
    mains: MainsRemoval | None = None,
    channels: tuple[np.ndarray, np.ndarray] | None = None,
    band_filter: str = "butterworth",
) -> tuple[np.ndarray, np.ndarray]:
    """Log-variance of every planned epoch on broadband (1 Hz - ``high``) data.

    The variance is taken over every ``step``-th sample of the filtered signal, with ``step``
    the largest divisor of the epoch and FFT lengths keeping at least 2.5 samples per period of
    ``high``: the signal is nearly band-limited to ``high`` (its squared-Butterworth gain is 0.12
    at 1.25 x ``high`` and falls 48 dB per octave; the short inverse FFT leaves out the content
    above half the decimated rate, 2.4e-4 of filtered white noise's power for a 45-Hz top at
    500 Hz), so these samples hold its variance to within sampling error (log-variances differ
    from all-sample ones by 0.003 rms on 2-s epochs of EEG at 500 Hz), and the decimated signal
    costs one short inverse FFT.

    Each block is transformed over its padded range (``plan.first`` to ``plan.stop``, which
    :func:`condition_epochs` filters too) at the FFT length of the band analysis that follows
    (``bands``, default :data:`DEFAULT_BANDS`, ``decimate`` and ``band_filter`` as for
    :func:`condition_epochs`), and its spectrum is kept in ``plan.spectra`` for :func:`condition_epochs`
    (not for ``"hypyp-epochs"``, which filters the epochs' samples).

    With ``mains``, each block's line-noise power per epoch (mean over A's and B's ``channels``,
    default all) is measured into ``plan.line_power`` and the mains is then removed from its
    spectrum (:mod:`dyadlab.synchrony.mains`), before the screening filter and the kept spectrum.

    Returns
    -------
    a, b : np.ndarray, shape (n_epochs_total, n_channels)
        In the order of ``plans`` and their epochs; NaN for invalid epochs.
    """
    rate = aligned.rate
    n_epoch = int(round(epoch_length * rate))
    bands = _default_bands(rate) if bands is None else bands
    steps = {band: analysis_step(rate, high_edge, decimate) for band, (_, high_edge) in bands.items()}
    broadband = _broadband(high, rate)
    most = max(int(rate // (2.5 * broadband[1])), 1)
    rows_a: list[np.ndarray] = []
    rows_b: list[np.ndarray] = []
    for plan in plans:
        if plan.starts.size == 0:
            continue
        first, stop = plan.first, plan.stop
        n_fft = _fft_length(stop - first, steps.values())
        needed = _bins_needed(bands, rate, n_fft, steps, band_filter)
        step = max(s for s in range(1, most + 1) if n_epoch % s == 0 and n_fft % s == 0)
        block_first = int(plan.starts[0])
        index = ((plan.starts - block_first) // step)[:, None] + np.arange(n_epoch // step)[None, :]
        for side, source, rows, used in (("a", aligned.a, rows_a, 0), ("b", aligned.b, rows_b, 1)):
            spectrum = _spectrum(source[:, first:stop], n_fft)
            if mains is not None:
                plan.line_power[side] = epoch_line_power(
                    spectrum,
                    n_fft,
                    mains,
                    plan.starts - first,
                    n_epoch,
                    None if channels is None else channels[used],
                    step,
                )
                if mains.removed:
                    spectrum *= mains.rfft_gain(n_fft)
            removed = () if mains is None else mains.removed
            if band_filter != EPOCHWISE_FILTER:  # that design filters the epochs' samples, not the spectrum
                plan.spectra[side] = BlockSpectrum(n_fft, spectrum[:, :needed].astype(np.complex64), removed)
            filtered = _real_band_signal(
                spectrum, n_fft, rate, broadband, step, block_first - first, int(plan.starts[-1]) + n_epoch - first
            )
            del spectrum
            epochs = filtered[:, index]  # (n_channels, n_epochs, n_epoch / step)
            with np.errstate(divide="ignore"):
                logvar = np.log(epochs.var(axis=2)).T
            logvar[~plan.valid] = np.nan
            rows.append(logvar)
    if not rows_a:
        return np.zeros((0, aligned.a.shape[0])), np.zeros((0, aligned.b.shape[0]))
    return np.vstack(rows_a), np.vstack(rows_b)


@dataclass
class Rejection:
    """Which epochs survive, and why the others did not."""

    keep: np.ndarray  # (n_epochs_total,) bool
    invalid: int  # gaps / NaN
    artifact_a: int
    artifact_b: int
    z_threshold: float


def reject_epochs(
    logvar_a: np.ndarray,
    logvar_b: np.ndarray,
    channels_a: np.ndarray,
    channels_b: np.ndarray,
    z_threshold: float = 5.0,
    groups: np.ndarray | None = None,
) -> Rejection:
    """Union artifact rejection over both participants (see the module docstring).

    Parameters
    ----------
    logvar_a, logvar_b : np.ndarray, shape (n_epochs, n_channels)
        From :func:`epoch_log_variance`; NaN marks invalid epochs.
    channels_a, channels_b : np.ndarray of bool, shape (n_channels,)
        Channels used for the metrics (flat/railed/noisy ones excluded).
    z_threshold : float
    groups : np.ndarray, shape (n_epochs,), optional
        Condition of each epoch. Medians and MADs are taken within each condition, so that a
        condition with more power (speaking, movement, a strong shared rhythm) is not rejected
        wholesale as an outlier of the session; without ``groups``, over all epochs.
    """
    # Only the channels the metrics use decide: an excluded flat channel has log-variance -inf.
    invalid = ~np.isfinite(logvar_a[:, channels_a]).all(axis=1) | ~np.isfinite(logvar_b[:, channels_b]).all(axis=1)
    groups = np.zeros(invalid.size, dtype=int) if groups is None else np.asarray(groups)

    def artifacts(logvar: np.ndarray, used: np.ndarray) -> np.ndarray:
        bad = np.zeros(logvar.shape[0], dtype=bool)
        values = logvar[:, used]
        if values.shape[1] == 0:
            return bad
        for group in np.unique(groups):
            members = (groups == group) & ~invalid
            if members.sum() < 5:  # too few epochs for a robust spread: keep them
                continue
            median = np.median(values[members], axis=0)
            mad = 1.4826 * np.median(np.abs(values[members] - median), axis=0)
            z = (values[members] - median) / np.maximum(mad, 1e-6)
            bad[np.flatnonzero(members)] = (z > z_threshold).any(axis=1)
        return bad

    bad_a = artifacts(logvar_a, channels_a)
    bad_b = artifacts(logvar_b, channels_b)
    keep = ~invalid & ~bad_a & ~bad_b
    return Rejection(keep, int(invalid.sum()), int(bad_a.sum()), int(bad_b.sum()), z_threshold)


def select_epochs(
    aligned: AlignedDyad,
    blocks: Sequence[Block],
    epoch_length: float,
    high: float,
    used_a: np.ndarray,
    used_b: np.ndarray,
    reject_z: float = 5.0,
    *,
    bands: dict[str, tuple[float, float]] | None = None,
    decimate: bool = True,
    pad: float = 3.0,
    mains: MainsRemoval | None = None,
    band_filter: str = "butterworth",
) -> tuple[list[EpochGrid], Rejection, list[np.ndarray]]:
    """Plan the epochs of every block and reject artifacts by the union rule within each condition.

    Epochs are invalid within :func:`filter_margin` of invalid samples and of the grid's ends,
    for the analysis ``bands`` (default :data:`DEFAULT_BANDS`) and the broadband rejection filter;
    each block is filtered with ``pad`` seconds, at least that margin, of data on both sides
    (:func:`plan_epochs`), here and in :func:`condition_epochs`; the margin is that of the bands'
    ``band_filter`` design. With the ``bands``, ``decimate`` and ``band_filter`` later given to
    :func:`condition_epochs`, the blocks' spectra computed here are
    reused there (``plan.spectra``); blocks without a kept epoch drop theirs. With ``mains``,
    the mains is removed from the blocks before the screening and the band signals, and each
    epoch's line-noise power on the used channels is kept in ``plan.line_power``
    (:func:`epoch_log_variance`); give the same ``mains`` to :func:`condition_epochs`.

    Returns
    -------
    plans : list of EpochGrid
        From :func:`plan_epochs`.
    rejection : Rejection
        From :func:`reject_epochs` (medians and spreads within each condition).
    keep : list of np.ndarray of bool
        ``rejection.keep`` split per plan.
    """
    margin = rejection_margin(aligned.rate, high, bands, band_filter, () if mains is None else mains.removed)
    plans = plan_epochs(aligned, blocks, epoch_length, margin, pad)
    logvar_a, logvar_b = epoch_log_variance(
        aligned,
        plans,
        epoch_length,
        high,
        bands=bands,
        decimate=decimate,
        mains=mains,
        channels=(used_a, used_b),
        band_filter=band_filter,
    )
    conditions = np.concatenate([[p.block.condition] * p.starts.size for p in plans] or [[]])
    rejection = reject_epochs(logvar_a, logvar_b, used_a, used_b, reject_z, groups=conditions)
    keep = np.split(rejection.keep, np.cumsum([p.starts.size for p in plans])[:-1])
    for plan, kept in zip(plans, keep):
        if not kept.any():
            plan.spectra.clear()
    return plans, rejection, keep


@dataclass
class BlockSignal:
    """One block's band-limited analytic signal at the analysis rate, for circular-shift nulls.

    Attributes
    ----------
    za, zb : np.ndarray, shape (n_channels, n_samples), complex64
        Continuous analytic signal of A and B over the block (padding removed).
    starts : np.ndarray of int, shape (n_kept,)
        First sample of each kept epoch in ``za``/``zb``.
    epoch_samples : int
        Epoch length in samples at the analysis rate.
    rate : float
        Analysis rate (Hz).
    """

    za: np.ndarray
    zb: np.ndarray
    starts: np.ndarray
    epoch_samples: int
    rate: float


@dataclass
class BandEpochs:
    """Analytic epochs of one condition and band: ``za``, ``zb`` of shape (n_kept, n_channels,
    n_times), complex64, and (when asked for) each block's continuous signal."""

    za: np.ndarray
    zb: np.ndarray
    blocks: list[BlockSignal] = field(default_factory=list)


def condition_epochs(
    aligned: AlignedDyad,
    plans: Sequence[EpochGrid],
    keep: Sequence[np.ndarray],
    epoch_length: float,
    bands: dict[str, tuple[float, float]],
    channels_a: np.ndarray,
    channels_b: np.ndarray,
    *,
    decimate: bool = True,
    continuous: bool = False,
    mains: MainsRemoval | None = None,
    band_filter: str = "butterworth",
) -> dict[str, BandEpochs]:
    """Analytic epochs of the kept epochs of one condition's blocks, all bands at once.

    :func:`iter_condition_epochs` (same parameters) gathered in a dict of band -> BandEpochs.
    Every band's epochs are then held together; iterate to hold one band's at a time.
    """
    return dict(
        iter_condition_epochs(
            aligned,
            plans,
            keep,
            epoch_length,
            bands,
            channels_a,
            channels_b,
            decimate=decimate,
            continuous=continuous,
            mains=mains,
            band_filter=band_filter,
        )
    )


def iter_condition_epochs(
    aligned: AlignedDyad,
    plans: Sequence[EpochGrid],
    keep: Sequence[np.ndarray],
    epoch_length: float,
    bands: dict[str, tuple[float, float]],
    channels_a: np.ndarray,
    channels_b: np.ndarray,
    *,
    decimate: bool = True,
    continuous: bool = False,
    mains: MainsRemoval | None = None,
    band_filter: str = "butterworth",
) -> Iterator[tuple[str, BandEpochs]]:
    """Analytic epochs of the kept epochs of one condition's blocks, one band at a time.

    Each block is filtered over its padded range (``plan.first`` to ``plan.stop``), from the
    spectrum the screening kept (``plan.spectra``) when it was made for these ``bands`` and
    ``decimate``, else from one computed here. The spectra are taken from the plans by this
    call and held until the last band's signals are made. A band's epochs are made when the
    iterator reaches it, so that a caller dropping each band's epochs when done with them
    holds one band's at a time instead of all (for a 30-min condition of 2 x 32 channels at
    500 Hz: 230 MB for gamma, 410 MB for the four default bands).

    Parameters
    ----------
    plans, keep : sequences of equal length
        The condition's blocks and, per block, a (n_epochs,) bool mask of epochs to keep. The
        plans' margin must cover the ``bands``' :func:`filter_margin`: it decides which epochs
        are valid and how much data pads each block.
    channels_a, channels_b : np.ndarray of bool
        Channels to return.
    continuous : bool
        Also return each block's continuous analytic signal (:class:`BlockSignal`).
    mains : MainsRemoval, optional
        Mains removed from each block before the band filters (:mod:`dyadlab.synchrony.mains`);
        a kept spectrum is reused only when the screening removed the same frequencies.
    band_filter : str
        The bands' filter design, one of :data:`BAND_FILTERS` (:func:`_band_gain`); the plans'
        margin must cover its ringing. ``"hypyp-epochs"`` reproduces HyPyP's default pipeline
        (:func:`_hypyp_analytic`): each kept epoch is cut from the block (channel means
        removed, ``mains`` removed when given) and filtered on its own, for comparability with
        HyPyP analyses only: per-epoch filtering inflates envelope correlation between independent
        signals (theta, EEGLAB recording's halves: 0.064 against 0.015 with the block filtered).
        It makes no continuous signal (``continuous`` is refused) and needs ``aligned``'s samples.

    Yields
    ------
    band : str
        In the order of ``bands``.
    epochs : BandEpochs
        Epochs have ``epoch samples / step`` time samples (:func:`analysis_step`), taken from the
        block's signal at the analysis rate, so that epochs and blocks agree sample by sample.

    Raises
    ------
    SegmentationError
        On the call, before any band is made: when a plan's margin is shorter than the bands'
        filter ringing, or ``continuous`` is asked of ``"hypyp-epochs"``.
    """
    removed = () if mains is None else mains.removed
    ringing = filter_margin(bands, aligned.rate, band_filter, removed)
    short = [p.block.name for p in plans if p.margin < ringing]
    if short:
        raise SegmentationError(
            f"Blocks {', '.join(short)} were planned with a filter margin shorter than the ringing of the bands "
            f"({ringing:.2f} s): plan them with these bands (select_epochs(bands=...) or plan_epochs(margin=...))."
        )
    n_epoch = int(round(epoch_length * aligned.rate))
    steps = {band: analysis_step(aligned.rate, high, decimate) for band, (_, high) in bands.items()}
    if band_filter == EPOCHWISE_FILTER:
        if continuous:
            raise SegmentationError(
                f"band_filter={EPOCHWISE_FILTER!r} filters each epoch on its own and makes no continuous signal for "
                "circular shifts: use the epoch-shuffle null, or band_filter='hypyp' (the same FIR on the blocks)."
            )
        for plan in plans:
            plan.spectra.clear()
        epochs_a, epochs_b = _cleaned_epochs(aligned, plans, keep, n_epoch, (channels_a, channels_b), mains)
        return (
            (
                band,
                BandEpochs(
                    _hypyp_analytic(epochs_a, aligned.rate, bands[band], steps[band]),
                    _hypyp_analytic(epochs_b, aligned.rate, bands[band], steps[band]),
                ),
            )
            for band in bands
        )
    sources = []
    for plan, mask in zip(plans, keep):
        if not np.any(mask):
            plan.spectra.clear()  # no later use: kept spectra do not outlive their condition
            continue
        n_fft = _fft_length(plan.stop - plan.first, steps.values())
        needed = _bins_needed(bands, aligned.rate, n_fft, steps, band_filter)
        spectra = {}
        for source, used, side in ((aligned.a, channels_a, "a"), (aligned.b, channels_b, "b")):
            cached = plan.spectra.pop(side, None)  # from select_epochs, for this condition only
            if (
                cached is not None
                and cached.n_fft == n_fft
                and cached.bins.shape[1] >= needed
                and cached.removed == removed
            ):
                spectra[side] = cached.bins if used.all() else cached.bins[used]
            else:
                # Only the bins the bands use (the others count as zero) are held over the bands.
                spectrum = _spectrum(source[used, plan.first : plan.stop], n_fft)[:, :needed]
                if mains is not None and removed:
                    spectrum *= mains.rfft_gain(n_fft)[:needed]
                spectra[side] = spectrum.copy()
        # The block's signal, from its first epoch to the end of its last, in the padded range.
        start, stop = int(plan.starts[0]) - plan.first, int(plan.starts[-1]) + n_epoch - plan.first
        sources.append(_BlockSource(plan, mask, n_fft, start, stop, _shift(0, needed, start, n_fft), spectra))
    shapes = (int(channels_a.sum()), int(channels_b.sum()))
    return _iter_band_epochs(sources, aligned.rate, bands, steps, n_epoch, shapes, continuous, band_filter)


def _cleaned_epochs(
    aligned: AlignedDyad,
    plans: Sequence[EpochGrid],
    keep: Sequence[np.ndarray],
    n_epoch: int,
    channels: tuple[np.ndarray, np.ndarray],
    mains: MainsRemoval | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept epochs of A and B, shape (n_kept, n_channels, n_epoch), float32, cut from each
    padded block after the same cleaning as the continuous path: each channel's mean over the
    block removed (a DC offset would leak through the FIR's stopband, about 1e-3 of it, as a
    constant phase) and the mains removed when ``mains`` removes it (the block's spectrum, as
    :func:`epoch_log_variance` removes it)."""
    out = []
    for source, used in zip((aligned.a, aligned.b), channels):
        epochs = []
        for plan, mask in zip(plans, keep):
            if not np.any(mask):
                continue
            n = plan.stop - plan.first
            n_fft = scipy.fft.next_fast_len(n, real=True)
            spectrum = _spectrum(source[used, plan.first : plan.stop], n_fft)  # mean removed, NaN zeroed
            if mains is not None and mains.removed:
                spectrum *= mains.rfft_gain(n_fft)
            block = scipy.fft.irfft(spectrum, n=n_fft, axis=1, workers=-1, overwrite_x=True)[:, :n]
            index = (plan.starts[mask] - plan.first)[:, None] + np.arange(n_epoch)[None, :]
            epochs.append(block[:, index].swapaxes(0, 1).astype(np.float32))
        out.append(np.concatenate(epochs) if epochs else np.zeros((0, int(used.sum()), n_epoch), np.float32))
    return out[0], out[1]


#: Epochs filtered at once by :func:`_hypyp_analytic` (each is filtered on its own: any number
#: gives the same values; a few dozen bound the float64 and complex128 copies).
EPOCH_CHUNK = 64


def _hypyp_analytic(epochs: np.ndarray, rate: float, band: tuple[float, float], step: int) -> np.ndarray:
    """HyPyP 0.6's ``compute_freq_bands`` on ``epochs`` (n_epochs, n_channels, n_times): its call
    ``mne.filter.filter_data(epochs, rate, l_freq=low, h_freq=high, verbose=False)`` (MNE's
    defaults: FIR, each epoch padded on its own) and ``scipy.signal.hilbert`` of each epoch,
    then every ``step``-th sample (:func:`analysis_step`), complex64."""
    import mne  # present: the margin check (filter_margin -> _hypyp_fir) says so clearly otherwise

    out = np.empty((*epochs.shape[:2], len(range(0, epochs.shape[2], step))), dtype=np.complex64)
    for start in range(0, epochs.shape[0], EPOCH_CHUNK):
        chunk = epochs[start : start + EPOCH_CHUNK].astype(np.float64)
        filtered = mne.filter.filter_data(chunk, rate, l_freq=band[0], h_freq=band[1], verbose=False)
        out[start : start + EPOCH_CHUNK] = signal.hilbert(filtered, axis=-1)[..., ::step]
    return out


@dataclass
class _BlockSource:
    """What :func:`iter_condition_epochs` makes a block's band signals from: its plan, kept
    epochs, FFT length, the range of its signal (``start`` to ``stop``, samples from
    ``plan.first``), the phases moving its spectrum to ``start`` (:func:`_shift`), and its
    spectrum per participant (``"a"``, ``"b"``; emptied after the last band)."""

    plan: EpochGrid
    mask: np.ndarray
    n_fft: int
    start: int
    stop: int
    shift: np.ndarray
    spectra: dict[str, np.ndarray]


def _iter_band_epochs(
    sources: list[_BlockSource],
    rate: float,
    bands: dict[str, tuple[float, float]],
    steps: dict[str, int],
    n_epoch: int,
    n_channels: tuple[int, int],
    continuous: bool,
    band_filter: str,
) -> Iterator[tuple[str, BandEpochs]]:
    """The bands of :func:`iter_condition_epochs`, each made when the caller asks for it."""
    last = list(bands)[-1]
    for band in bands:
        # Yielded without a local name: the generator keeps no reference to a band's epochs.
        yield (
            band,
            _band_epochs(
                sources, rate, bands[band], steps[band], n_epoch, n_channels, continuous, band == last, band_filter
            ),
        )


def _band_epochs(
    sources: list[_BlockSource],
    rate: float,
    edges: tuple[float, float],
    step: int,
    n_epoch: int,
    n_channels: tuple[int, int],
    continuous: bool,
    release: bool,
    band_filter: str,
) -> BandEpochs:
    """One band's epochs of all the blocks, written into one array per participant; with
    ``release``, each block's spectra are dropped once used."""
    n_times = len(range(0, n_epoch, step))
    n_kept = sum(int(source.mask.sum()) for source in sources)
    za = np.empty((n_kept, n_channels[0], n_times), dtype=np.complex64)
    zb = np.empty((n_kept, n_channels[1], n_times), dtype=np.complex64)
    blocks = []
    offset = 0
    for source in sources:
        start, stop = source.start, source.stop
        first_samples = np.round((source.plan.starts[source.mask] - source.plan.starts[0]) / step).astype(np.int64)
        starts = np.minimum(first_samples, len(range(start, stop, step)) - n_times)
        kept = slice(offset, offset + starts.size)
        signals = {}
        for side, out in (("a", za), ("b", zb)):
            z = _band_signal(
                source.spectra[side], source.shift, source.n_fft, rate, edges, step, start, stop, band_filter
            )
            _cut_epochs(z, starts, out[kept])
            if continuous:
                signals[side] = z.astype(np.complex64)
        if release:
            source.spectra.clear()
        if continuous:
            blocks.append(BlockSignal(signals["a"], signals["b"], starts, n_times, rate / step))
        offset = kept.stop
    return BandEpochs(za, zb, blocks)


def _cut_epochs(z: np.ndarray, starts: np.ndarray, out: np.ndarray) -> None:
    """Epochs ``z[:, start : start + n_times]`` into ``out``, shape (n_epochs, n_channels, n_times)."""
    n_times = out.shape[2]
    for i, start in enumerate(starts.tolist()):  # block copies: faster than a fancy-index gather
        out[i] = z[:, start : start + n_times]


def condition_names(blocks: Sequence[Block]) -> list[str]:
    """Conditions in order of first appearance."""
    return list(dict.fromkeys(b.condition for b in blocks))


def describe_blocks(blocks: Sequence[Block], origin: float) -> list[dict[str, Any]]:
    """JSON-ready blocks with times relative to ``origin`` (the grid start)."""
    return [
        {
            "condition": b.condition,
            "name": b.name,
            "start_s": round(b.start - origin, 3),
            "end_s": round(b.end - origin, 3),
        }
        for b in blocks
    ]
