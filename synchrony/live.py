"""Live inter-brain synchrony: a sliding-window estimator fed chunks of two participants' EEG.

What it computes, per window of ``window_s`` seconds, one window every ``step_s`` seconds:

* for every band of :data:`dyadlab.synchrony.segments.DEFAULT_BANDS` (or the bands given), the
  band's analytic signal made by the quick-check's own band filter
  (:func:`dyadlab.synchrony.segments.iter_band_analytic`: the squared magnitude of a 4th-order
  Butterworth band-pass applied in the frequency domain, -6 dB at the band edges, zero phase) and
  kept at the quick-check's analysis rate (:func:`dyadlab.synchrony.segments.analysis_step`);
* PLV and envelope correlation per inter-brain channel pair by the quick-check's metric code
  (:func:`dyadlab.synchrony.metrics.pairing_connectivity`), averaged over the pairs;
* for each of them, ``_chance``: the 95th percentile of the same mean-over-pairs statistic under
  no coupling, for the same window length (see *Chance level* below).

**Filtering live, and how it differs from the quick-check.** The quick-check filters each
condition block whole, with at least 3 s of the recording on both sides of its epochs. A live
estimator cannot see the future, so each window is filtered on a buffer that holds the window,
the bands' filter margin of data before it and ``settle_s`` seconds *after* it: the window's
values are computed ``settle_s`` seconds after its end. The margin, and ``settle_s`` by default,
is :func:`dyadlab.synchrony.segments.filter_margin` of the bands, the time after which the
envelope of the band filters' impulse response stays below 1 % of its peak (1.28 s for theta
4-7 Hz), so that the buffer's ends reach into the window only with the ringing the
quick-check's own epoch rejection tolerates; the values then agree with the quick-check's for
the same window within that residue (``tests/synchrony/test_live.py`` measures it). The filter
is not causal: it is zero-phase on a buffer that ends ``settle_s`` after the window. A smaller
``settle_s`` gives values sooner (a neurofeedback loop) at the price of more edge ringing in the
window's last samples; ``settle_s=0`` filters only the past, the causal limit.

**Chance level.** For the current window, A's band signal is paired with B's band signals of
earlier windows, and B's with A's, at lags of at least one window length (so that the paired
windows do not overlap) and up to ``history_s`` seconds: ``chance_lags`` lags in each direction,
spread evenly over that range. Each pairing gives one mean-over-pairs value of the statistic
without the moment-to-moment coupling but with each participant's spectrum, state, channel
count and the estimator's bias for that window length (PLV of independent 2-s theta windows is
far above 0). The values of the last ``chance_pool`` pairings are pooled, and ``_chance`` is
their 95th percentile (NaN until ``min_chance`` values exist, i.e. for the first
``window_s + step_s`` seconds or so). This is the time-shifted pairing behind the quick-check's
epoch-shuffle null, restricted to the past. It assumes that a coupling does not repeat itself
at lags of seconds (true of EEG rhythms, whose phases decorrelate within a fraction of a second,
and of the coupled-dyad simulator's drivers, 2 Hz wide); a stimulus that drives both brains at
one steady frequency keeps them coupled at any lag, and the chance level then rises with the
value, on the conservative side.

Windows holding a sample that is not finite (a gap in either stream) give NaN values and add
nothing to the chance pool.

The estimator is pure NumPy/SciPy; :class:`StreamAligner` puts two streams' chunks on one time
grid first. LSL reading and publishing are in :mod:`dyadlab.protocols.live_synchrony`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dyadlab.synchrony.metrics import pairing_connectivity
from dyadlab.synchrony.segments import (
    DEFAULT_BANDS,
    SegmentationError,
    analysis_step,
    filter_margin,
    iter_band_analytic,
)

__all__ = [
    "CHANCE_QUANTILE",
    "LIVE_METRICS",
    "AlignedChunk",
    "LiveSettings",
    "LiveWindow",
    "SlidingSynchrony",
    "StreamAligner",
    "channel_labels",
]

logger = logging.getLogger(__name__)

#: The metrics of the live stream: phase (PLV) and amplitude (envelope correlation) coupling.
LIVE_METRICS: tuple[str, ...] = ("plv", "envcorr")
#: The quantile of the no-coupling distribution published as ``_chance``.
CHANCE_QUANTILE = 0.95
#: Suffix of the chance-level channels.
CHANCE_SUFFIX = "_chance"


def channel_labels(bands: Sequence[str], metrics: Sequence[str] = LIVE_METRICS) -> list[str]:
    """The live stream's channel labels, in its order: per metric, per band, the value then its chance level.

    >>> channel_labels(["theta"], ["plv"])
    ['plv_theta', 'plv_theta_chance']
    """
    return [label for m in metrics for b in bands for label in (f"{m}_{b}", f"{m}_{b}{CHANCE_SUFFIX}")]


@dataclass(frozen=True)
class LiveSettings:
    """How the live estimator windows, filters and judges chance.

    Parameters
    ----------
    window_s : float
        Window length (seconds); the quick-check's epoch length for comparable values (2 s).
    step_s : float
        Seconds between two windows' ends (the stream's sampling period).
    bands : mapping of name -> (low, high) Hz
        The bands, :data:`~dyadlab.synchrony.segments.DEFAULT_BANDS` by default.
    settle_s : float or None
        Data after a window's end that its filtering waits for; ``None``: the bands'
        :func:`~dyadlab.synchrony.segments.filter_margin` at the data's rate.
    chance_lags : int
        Earlier windows paired with the current one, in each direction, per window.
    history_s : float
        Longest lag of those pairings (seconds).
    chance_pool : int
        Pairings whose values make the chance level (the most recent ones).
    min_chance : int
        Pairings needed before a chance level is published.
    """

    window_s: float = 2.0
    step_s: float = 0.5
    bands: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    settle_s: float | None = None
    chance_lags: int = 8
    history_s: float = 20.0
    chance_pool: int = 400
    min_chance: int = 20

    def __post_init__(self) -> None:
        for name in ("window_s", "step_s", "history_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"live synchrony: {name} must be a positive number of seconds, got {value!r}")
        if self.settle_s is not None and not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"live synchrony: settle_s must be 0 or more seconds, got {self.settle_s!r}")
        if self.history_s < self.window_s + self.step_s:
            raise ValueError(
                f"live synchrony: history_s ({self.history_s:g} s) must reach at least one window and one step "
                f"back ({self.window_s + self.step_s:g} s) for the chance level"
            )
        if self.chance_lags < 1 or self.min_chance < 1 or self.chance_pool < self.min_chance:
            raise ValueError(
                "live synchrony: need chance_lags >= 1 and 1 <= min_chance <= chance_pool, got "
                f"{self.chance_lags}, {self.min_chance}, {self.chance_pool}"
            )
        if not self.bands:
            raise ValueError("live synchrony: no frequency band given")

    @property
    def labels(self) -> list[str]:
        """:func:`channel_labels` of these bands."""
        return channel_labels(list(self.bands))


@dataclass(frozen=True)
class LiveWindow:
    """One window's values.

    Attributes
    ----------
    end : int
        Index (in the samples pushed so far) one past the window's last sample.
    values : np.ndarray, shape (n_labels,), float32
        In the order of :func:`channel_labels`.
    """

    end: int
    values: np.ndarray


class SlidingSynchrony:
    """Sliding-window PLV and envelope correlation between two participants, with chance levels.

    Feed it simultaneous chunks of A and B (:meth:`push`, same rate, same number of samples:
    :class:`StreamAligner` makes them); it returns the windows that became computable.

    Parameters
    ----------
    rate : float
        Sampling rate (Hz) of both participants' data.
    settings : LiveSettings
    """

    def __init__(self, rate: float, settings: LiveSettings | None = None) -> None:
        self.settings = settings or LiveSettings()
        s = self.settings
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"live synchrony: the sampling rate must be positive, got {rate!r}")
        self.rate = float(rate)
        self.bands = {name: (float(lo), float(hi)) for name, (lo, hi) in s.bands.items()}
        too_high = [name for name, (_, high) in self.bands.items() if high >= 0.45 * rate]
        if too_high:
            raise SegmentationError(
                f"live synchrony: band(s) {', '.join(too_high)} reach 0.45 x the sampling rate ({0.45 * rate:g} Hz); "
                "drop them (bands=...) or record at a higher rate"
            )
        self.n_window = int(round(s.window_s * rate))
        self.n_step = int(round(s.step_s * rate))
        if self.n_window < 4 or self.n_step < 1:
            raise ValueError(
                f"live synchrony: a {s.window_s:g}-s window or {s.step_s:g}-s step is too short at {rate:g} Hz"
            )
        margin = filter_margin(self.bands, rate)
        # Data before the window is there anyway: a full margin of it, whatever settle_s says.
        self.n_before = int(math.ceil(margin * rate))
        self.n_settle = int(math.ceil((margin if s.settle_s is None else s.settle_s) * rate))
        self.steps = {name: analysis_step(rate, high) for name, (_, high) in self.bands.items()}
        self.labels = s.labels
        # Windows of this many steps back (and more) do not overlap the current one.
        self._min_lag = -(-self.n_window // self.n_step)
        self._max_lag = max(self._min_lag, int(s.history_s * rate) // self.n_step)
        # Per band: the last windows' analytic signals, newest last (None: a window with a gap).
        self._history: dict[str, deque[tuple[np.ndarray, np.ndarray] | None]] = {
            band: deque(maxlen=self._max_lag) for band in self.bands
        }
        self._pools: dict[str, deque[float]] = {label: deque(maxlen=s.chance_pool) for label in self.labels}
        self._a: np.ndarray | None = None
        self._b: np.ndarray | None = None
        self._first = 0  # index of the buffers' first sample
        self._pushed = 0
        self._next_end = self.n_before + self.n_window  # a full margin before the first window

    @property
    def window_s(self) -> float:
        """The window's length as sampled (``window_s`` rounded to whole samples)."""
        return self.n_window / self.rate

    @property
    def step_s(self) -> float:
        """Seconds between windows as sampled (``step_s`` rounded to whole samples)."""
        return self.n_step / self.rate

    @property
    def settle_s(self) -> float:
        """How long after a window's end its values are ready (``settle_s`` rounded up to whole samples)."""
        return self.n_settle / self.rate

    def push(self, a: np.ndarray, b: np.ndarray) -> list[LiveWindow]:
        """Add simultaneous samples of both participants; return the windows now computable.

        Parameters
        ----------
        a, b : np.ndarray, shape (n_channels_a, n), (n_channels_b, n)
            The same ``n`` samples in time of A and B (NaN where a participant has none).
        """
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(
                f"live synchrony: push (channels, samples) arrays with the same sample count; got {a.shape} and {b.shape}"
            )
        if self._a is None or self._b is None:
            self._a, self._b = a[:, :0], b[:, :0]
        if a.shape[0] != self._a.shape[0] or b.shape[0] != self._b.shape[0]:
            raise ValueError(
                f"live synchrony: channel counts changed from {self._a.shape[0]}/{self._b.shape[0]} to "
                f"{a.shape[0]}/{b.shape[0]}"
            )
        self._a = np.concatenate((self._a, a), axis=1)
        self._b = np.concatenate((self._b, b), axis=1)
        self._pushed += a.shape[1]
        windows = []
        while self._next_end + self.n_settle <= self._pushed:
            windows.append(LiveWindow(self._next_end, self._window(self._next_end)))
            self._next_end += self.n_step
        keep_from = self._next_end - self.n_window - self.n_before  # the next window's buffer start
        if keep_from > self._first:
            self._a = self._a[:, keep_from - self._first :]
            self._b = self._b[:, keep_from - self._first :]
            self._first = keep_from
        return windows

    def _window(self, end: int) -> np.ndarray:
        """Values of the window ending (exclusive) at sample ``end``."""
        assert self._a is not None and self._b is not None
        lo = end - self.n_window - self.n_before - self._first
        hi = end + self.n_settle - self._first
        buffer_a, buffer_b = self._a[:, lo:hi], self._b[:, lo:hi]
        out = np.full(len(self.labels), np.nan, dtype=np.float32)
        if not (np.all(np.isfinite(buffer_a)) and np.all(np.isfinite(buffer_b))):
            for band in self.bands:
                self._history[band].append(None)
            return out
        start, stop = self.n_before, self.n_before + self.n_window
        analytic_b = dict(iter_band_analytic(buffer_b, self.rate, self.bands, steps=self.steps, start=start, stop=stop))
        for band, za in iter_band_analytic(buffer_a, self.rate, self.bands, steps=self.steps, start=start, stop=stop):
            zb = analytic_b[band]
            history = self._history[band]
            observed, null = self._band_values(za, zb, history)
            history.append((za, zb))
            for metric in LIVE_METRICS:
                label = f"{metric}_{band}"
                pool = self._pools[label]
                pool.extend(null[metric])
                out[self.labels.index(label)] = observed[metric]
                if len(pool) >= self.settings.min_chance:
                    out[self.labels.index(label + CHANCE_SUFFIX)] = np.quantile(
                        np.fromiter(pool, float), CHANCE_QUANTILE
                    )
        return out

    def _band_values(
        self, za: np.ndarray, zb: np.ndarray, history: deque[tuple[np.ndarray, np.ndarray] | None]
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The window's mean-over-pairs values and those of its pairings with earlier windows."""
        available = [
            lag
            for lag in np.unique(
                np.linspace(self._min_lag, self._max_lag, self.settings.chance_lags).round().astype(int)
            )
            if lag <= len(history) and history[-lag] is not None
        ]
        earlier = [history[-lag] for lag in available]
        stack_a = np.stack([za] + [pair[0] for pair in earlier if pair is not None])
        stack_b = np.stack([zb] + [pair[1] for pair in earlier if pair is not None])
        k = np.arange(1, len(earlier) + 1)
        zeros = np.zeros_like(k)
        # Pairing 0 is the real one; then A now with B earlier, and A earlier with B now.
        epochs_a = np.concatenate(([0], zeros, k))
        epochs_b = np.concatenate(([0], k, zeros))
        values = pairing_connectivity(stack_a, stack_b, epochs_a, epochs_b, LIVE_METRICS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a flat channel's pairs are NaN
            means = {m: np.nanmean(v, axis=(1, 2)) for m, v in values.items()}
        observed = {m: float(v[0]) for m, v in means.items()}
        null = {m: v[1:][np.isfinite(v[1:])] for m, v in means.items()}
        return observed, null


@dataclass(frozen=True)
class AlignedChunk:
    """Both participants' samples on one grid: ``a[:, k]`` and ``b[:, k]`` at ``start + k / rate``."""

    start: float
    a: np.ndarray
    b: np.ndarray


class StreamAligner:
    """Put two streams of the same nominal rate on one uniform time grid.

    Each grid time takes, per participant, the sample whose timestamp is nearest, when it lies
    within half a sample period (else NaN: a gap). The grid starts at the later of the two first
    timestamps and advances as far as both streams have data. If one stream stops while the
    other goes on, the grid still advances ``stall_s`` seconds behind the live one, with NaN
    for the stopped one, so that memory stays bounded and the live output shows the gap.

    Parameters
    ----------
    rate : float
        Nominal rate (Hz) of both streams.
    stall_s : float
        How far the grid may fall behind the newer stream before it goes on without the other.
    """

    def __init__(self, rate: float, stall_s: float = 5.0) -> None:
        self.rate = float(rate)
        self.stall_s = float(stall_s)
        self._data: list[np.ndarray | None] = [None, None]
        self._times: list[np.ndarray] = [np.empty(0), np.empty(0)]
        self._next_time: float | None = None

    @property
    def next_time(self) -> float | None:
        """The grid time of the next sample :meth:`push` will return."""
        return self._next_time

    def push(self, participant: int, samples: np.ndarray, timestamps: np.ndarray) -> AlignedChunk | None:
        """Add ``samples`` (channels, n) stamped ``timestamps`` (n,) of participant 0 (A) or 1 (B);
        return the grid samples that became complete, if any."""
        samples = np.asarray(samples, dtype=np.float64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != timestamps.size:
            raise ValueError(f"samples {samples.shape} and timestamps {timestamps.shape} do not match")
        if timestamps.size:
            held = self._data[participant]
            self._data[participant] = samples if held is None else np.concatenate((held, samples), axis=1)
            self._times[participant] = np.concatenate((self._times[participant], timestamps))
        return self._emit()

    def _emit(self) -> AlignedChunk | None:
        data_a, data_b = self._data
        if data_a is None or data_b is None:
            return None
        times_a, times_b = self._times
        if self._next_time is None:
            self._next_time = max(times_a[0], times_b[0])
        newest = max(times_a[-1], times_b[-1])
        limit = max(min(times_a[-1], times_b[-1]), newest - self.stall_s)
        count = int(np.floor((limit - self._next_time) * self.rate)) + 1
        if count <= 0:
            return None
        grid = self._next_time + np.arange(count) / self.rate
        chunk = AlignedChunk(float(grid[0]), self._nearest(data_a, times_a, grid), self._nearest(data_b, times_b, grid))
        self._next_time = float(grid[-1] + 1.0 / self.rate)
        for p in (0, 1):  # keep what the next grid samples can still use
            keep = max(int(np.searchsorted(self._times[p], self._next_time - 1.0 / self.rate)) - 1, 0)
            held = self._data[p]
            assert held is not None
            self._data[p] = held[:, keep:]
            self._times[p] = self._times[p][keep:]
        return chunk

    def _nearest(self, data: np.ndarray, times: np.ndarray, grid: np.ndarray) -> np.ndarray:
        right = np.clip(np.searchsorted(times, grid), 1, times.size - 1) if times.size > 1 else np.zeros(grid.size, int)
        left = np.maximum(right - 1, 0)
        nearest = np.where(np.abs(times[left] - grid) <= np.abs(times[right] - grid), left, right)
        out = data[:, nearest].copy()
        out[:, np.abs(times[nearest] - grid) > 0.5 / self.rate] = np.nan
        return out
