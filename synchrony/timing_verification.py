"""Automatic timing verification: photodiode or TTL edges paired with the session's markers.

When a participant's amplifier records a photodiode taped over the screen's marker patch
(``photodiode_corner``, lit on every frame that carries a marker) on an AUX input, or a TTL pulse
on a trigger input, the quick-check finds the signal's edges, pairs each with the marker stamp of
its screen change, and reports per participant and channel the screen latency (edge minus marker
stamp: input lag, scan-out, sensor) and its jitter; when the same pulse reaches both amplifiers
(edges in A's and in B's channel), the A-to-B lag (B's edge minus A's) and its drift over the
session. All times are LSL times after the loader's clock synchronisation
(:func:`dyadlab.synchrony.io.load_dyad`).

Stages, each a function here:

* :func:`find_timing_channels`: channels whose label contains a photodiode word
  (:data:`PHOTODIODE_WORDS`) or a TTL word (:data:`TTL_WORDS`), or whose declared type says so,
  among the participant's auxiliary channels (:attr:`~dyadlab.synchrony.io.ParticipantEeg.aux`),
  its EEG channels, and, for streams not written by dyadlab, the trigger channel the loader took
  as board marker channel (dyadlab's own marker channel holds software codes, checked by
  :func:`dyadlab.synchrony.quality.marker_residuals`); or the labels given in
  :attr:`TimingOptions.channels`.
* :func:`analog_edges`: a photodiode's low and high levels (two-cluster threshold, medians),
  a hysteresis state machine (on above 65 %, off below 35 % of the contrast), the 50 % crossing
  interpolated between the two samples around it, flicker shorter than
  :attr:`TimingOptions.debounce_s` merged. :func:`ttl_edges`: the samples where the TTL value
  (or its bits in :attr:`TimingOptions.ttl_mask`) turns on; the edge lies between that sample and
  the one before, and is placed midway.
* :func:`pair_with_flips`: the screen changes are the distinct marker stamps (markers of one flip
  share its stamp); each takes the first edge in [stamp + ``min_latency_s``, stamp +
  ``max_latency_s``], an edge claimed by several stamps goes to the one whose delay is closest to
  the median; a stamp without an edge is *merged* when the light was already on (the patch stayed
  lit over consecutive marked frames), else *missed* (a dropped frame, the patch not drawn).
* :func:`amplifier_lag`: A's and B's edges that are each other's nearest (within
  ``max_lag_s``); the lag's median, and its drift: the slope of a least-squares line over the session,
  refitted without outliers.

The edge time is exact to within one sample period for any transition that completes within a
sample (a photodiode's rise takes microseconds; the amplifier's anti-alias filter spreads it over
about a sample); the tests check the reported latency, jitter, lag and drift against simulated
channels with known values at that tolerance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.ndimage
import scipy.stats

from dyadlab import DyadlabError
from dyadlab.synchrony.htmlpage import format_number, html_escape
from dyadlab.synchrony.io import AuxSignals, DyadRecording, EventMarker, ParticipantEeg

if TYPE_CHECKING:
    from dyadlab.synchrony.results import QuickCheckResult

__all__ = [
    "PHOTODIODE_WORDS",
    "TTL_WORDS",
    "Edges",
    "TimingVerificationError",
    "FlipPairing",
    "TimingChannel",
    "TimingOptions",
    "amplifier_lag",
    "analog_edges",
    "find_timing_channels",
    "flip_times",
    "pair_with_flips",
    "summary_lines",
    "timing_section_html",
    "ttl_edges",
    "verify_timing",
]

logger = logging.getLogger(__name__)

#: Label words (lower case) of a photodiode or light-sensor channel.
PHOTODIODE_WORDS = ("photo", "diode", "light")
#: Label words (lower case) of a TTL trigger input.
TTL_WORDS = ("ttl", "trigger", "trig", "stim", "din")
#: Marker stamps closer than this are one screen change (markers of one flip share its stamp).
FLIP_GROUP_S = 0.001
#: Hysteresis of the photodiode state machine, as fractions of the low-to-high contrast.
_ON_LEVEL, _OFF_LEVEL, _EDGE_LEVEL = 0.65, 0.35, 0.5

Kind = Literal["photodiode", "ttl"]
Polarity = Literal["auto", "rising", "falling"]


class TimingVerificationError(DyadlabError, ValueError):
    """An option of the timing verification does not fit (the message says which)."""


@dataclass(frozen=True)
class TimingOptions:
    """How timing channels are found, how edges are detected and paired, and when to warn.

    Attributes
    ----------
    channels : tuple of str
        Labels (case-insensitive, exact) of the channels to use, in the AUX channels, the EEG
        channels or the trigger channel; read as TTL when the label holds a TTL word or
        :attr:`ttl_mask` is given, else as a photodiode. Empty: find them by
        :attr:`photodiode_words`, :attr:`ttl_words` and declared channel types.
    photodiode_words, ttl_words : tuple of str
        Words whose presence in a label marks a photodiode or a TTL channel.
    ttl_mask : int or None
        Only these bits of a TTL channel's integer value are the pulse (e.g. ``4`` for input 3 of
        a trigger port); ``None``: any non-zero value.
    polarity : {"auto", "rising", "falling"}
        Which transition is the flash: ``rising`` (light or TTL on is the higher value),
        ``falling`` (inverted sensor or active-low TTL), ``auto`` (the one that pairs with more
        markers; without markers the rarer state is "on").
    min_latency_s, max_latency_s : float
        An edge pairs with a marker stamp when it follows it by this much (a slightly negative
        minimum allows for the marker being stamped just after the swap).
    debounce_s : float
        An off period shorter than this inside a pulse is flicker (LCD backlight PWM) and ignored.
    max_lag_s : float
        Largest A-to-B lag looked for between the two amplifiers' edges.
    min_contrast : float
        Low-to-high contrast, in units of the noise SD within each level, below which a channel
        is reported as showing no pulses.
    latency_range_warn_ms : float
        A latency range (max - min) above this is flagged (default one frame at 60 Hz: some
        changes reached the screen a frame late).
    missed_warn_fraction : float
        A fraction of screen changes without a flash above this is flagged.
    lag_warn_ms : float
        An A-to-B lag, or a change of it over the session, beyond this is flagged.
    """

    channels: tuple[str, ...] = ()
    photodiode_words: tuple[str, ...] = PHOTODIODE_WORDS
    ttl_words: tuple[str, ...] = TTL_WORDS
    ttl_mask: int | None = None
    polarity: Polarity = "auto"
    min_latency_s: float = -0.005
    max_latency_s: float = 0.25
    debounce_s: float = 0.008
    max_lag_s: float = 0.1
    min_contrast: float = 8.0
    latency_range_warn_ms: float = 1000.0 / 60.0
    missed_warn_fraction: float = 0.01
    lag_warn_ms: float = 20.0

    def __post_init__(self) -> None:
        if self.polarity not in ("auto", "rising", "falling"):
            raise TimingVerificationError(f"polarity must be 'auto', 'rising' or 'falling', got {self.polarity!r}.")
        if self.ttl_mask is not None and not (isinstance(self.ttl_mask, int) and 0 < self.ttl_mask < 2**32):
            raise TimingVerificationError(
                f"ttl_mask must be a positive integer bit mask (e.g. 1, 4, 0x80), got {self.ttl_mask!r}."
            )
        if not self.min_latency_s < self.max_latency_s:
            raise TimingVerificationError(
                f"min_latency_s ({self.min_latency_s}) must be below max_latency_s ({self.max_latency_s})."
            )
        for name in ("debounce_s", "max_lag_s", "min_contrast", "latency_range_warn_ms", "lag_warn_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise TimingVerificationError(f"{name} must be a positive number, got {value!r}.")


@dataclass
class TimingChannel:
    """One channel found to carry a photodiode or TTL signal."""

    participant: str
    stream: str
    label: str
    kind: Kind
    values: np.ndarray
    timestamps: np.ndarray


@dataclass
class Edges:
    """The on-transitions of a channel (and the off-transitions, for photodiodes).

    Attributes
    ----------
    rising : np.ndarray
        Times (LSL seconds) at which the channel turns on, in order.
    falling : np.ndarray
        Times at which it turns off (after the corresponding ``rising``; may be one shorter).
    polarity : {"rising", "falling"}
        Which raw transition was taken as "on".
    problems : list of str
        Why no edges could be found, if so.
    """

    rising: np.ndarray
    falling: np.ndarray
    polarity: str
    problems: list[str] = field(default_factory=list)


@dataclass
class FlipPairing:
    """Screen changes paired with edges.

    Attributes
    ----------
    latencies : np.ndarray
        Edge minus flip stamp (seconds) of each paired flip, in flip order.
    paired_flips : np.ndarray
        The stamps of the paired flips.
    missed, merged : int
        Flips without an edge: the light was off (missed) or already on from the previous flip.
    unmatched_edges : int
        Edges no flip claimed (a flash without a marker, or a spurious edge).
    """

    latencies: np.ndarray
    paired_flips: np.ndarray
    missed: int
    merged: int
    unmatched_edges: int


# --------------------------------------------------------------------------- finding channels


def _kind_of(label: str, channel_type: str, options: TimingOptions) -> Kind | None:
    text, declared = label.lower(), channel_type.lower()
    if any(word in text for word in options.photodiode_words) or declared in ("photodiode", "light"):
        return "photodiode"
    if any(word in text for word in options.ttl_words) or declared in ("ttl", "trigger", "stim", "digital"):
        return "ttl"
    return None


def _wanted_kind(label: str, options: TimingOptions) -> Kind:
    """The kind of a channel named in ``options.channels``: TTL when its label has a TTL word or a
    ``ttl_mask`` is given, else photodiode (an analogue level, which also reads an unmasked TTL)."""
    ttl = options.ttl_mask is not None or any(word in label.lower() for word in options.ttl_words)
    return "ttl" if ttl else "photodiode"


def find_timing_channels(p: ParticipantEeg, options: TimingOptions = TimingOptions()) -> list[TimingChannel]:
    """The participant's photodiode and TTL channels (see the module docstring for where they are looked for).

    Parameters
    ----------
    p : ParticipantEeg
        As loaded by :func:`~dyadlab.synchrony.io.load_dyad` (its ``data`` still present).
    options : TimingOptions

    Returns
    -------
    list of TimingChannel
        In the order found; empty when the participant has none.
    """
    candidates: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []  # stream, label, type, values, stamps
    for aux in p.aux:
        candidates += _aux_candidates(aux)
    wanted = {name.lower() for name in options.channels}
    if wanted:  # a sensor on an input the stream declares as EEG
        candidates += [
            (p.stream_name, label, "", p.data[index], p.timestamps)
            for index, label in enumerate(p.channel_labels)
            if index < p.data.shape[0]
        ]
    if p.board_markers is not None:
        # The loader's marker channel is a TTL input when its label says so ("trigger", "stim"...);
        # dyadlab's "Marker" channel holds software codes, checked by quality.marker_residuals.
        aux_labels = {label for aux in p.aux for label in aux.labels}
        trigger = [label for label in p.excluded_channels if label not in aux_labels]
        named = [lab for lab in trigger if lab.lower() in wanted]
        ttl = (
            named[0]
            if named
            else next((lab for lab in trigger if any(w in lab.lower() for w in options.ttl_words)), None)
        )
        if ttl is not None:
            candidates.append((p.stream_name, ttl, "trigger", p.board_markers, p.timestamps))
    found = []
    for stream, label, channel_type, values, stamps in candidates:
        if wanted:
            kind: Kind | None = _wanted_kind(label, options) if label.lower() in wanted else None
        else:
            kind = _kind_of(label, channel_type, options)
        if kind is not None:
            found.append(TimingChannel(p.label, stream, label, kind, np.asarray(values), stamps))
    return found


def _aux_candidates(aux: AuxSignals) -> list[tuple[str, str, str, np.ndarray, np.ndarray]]:
    return [
        (aux.stream_name, label, channel_type, aux.data[index], aux.timestamps)
        for index, (label, channel_type) in enumerate(zip(aux.labels, aux.types))
    ]


# --------------------------------------------------------------------------- edges


def _finite(values: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values) & np.isfinite(times)
    return np.asarray(values[keep], dtype=np.float64), np.asarray(times[keep], dtype=np.float64)


def _usable(times: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Edges whose two bracketing samples are consecutive on the grid (not across a data gap)."""
    period = float(np.median(np.diff(times))) if times.size > 1 else math.inf
    return (times[second] - times[first]) <= 1.5 * period


def _debounce(rising: np.ndarray, falling: np.ndarray, debounce_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop off periods shorter than ``debounce_s``: a fall followed so soon by a rise is flicker
    (an LCD backlight's PWM), not the end of a flash."""
    following = np.searchsorted(rising, falling, side="right")
    has_next = following < rising.size
    off_for = np.full(falling.size, np.inf)
    off_for[has_next] = rising[following[has_next]] - falling[has_next]
    flicker = off_for < debounce_s
    keep = np.ones(rising.size, dtype=bool)
    keep[following[flicker]] = False
    return rising[keep], falling[~flicker]


def _isodata(ordered: np.ndarray, cumulative: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Low level, high level and noise SD (the larger within-level robust SD) of the two-cluster
    split that the iterated mean-of-means threshold reaches from ``threshold``.

    ``ordered`` is the signal sorted, ``cumulative`` its cumulative sum with a leading 0, so that
    each iteration costs a binary search.
    """
    n = ordered.size
    split = 0
    for _ in range(200):
        split = int(np.searchsorted(ordered, threshold, side="right"))
        if split in (0, n):
            break
        low_mean = cumulative[split] / split
        high_mean = (cumulative[n] - cumulative[split]) / (n - split)
        updated = 0.5 * (low_mean + high_mean)
        if int(np.searchsorted(ordered, updated, side="right")) == split:
            break
        threshold = updated
    if split in (0, n):
        middle = _quantile(ordered, 0.5)
        return middle, middle, 0.0
    low, high = ordered[:split], ordered[split:]
    noise = max(_robust_sd(part) for part in (low, high))
    return _quantile(low, 0.5), _quantile(high, 0.5), noise


def _robust_sd(ordered: np.ndarray) -> float:
    """Median absolute deviation (as a Gaussian SD) of a sorted array, from at most ~100 000 of
    its values taken evenly along the sorted order (the same distribution, a fraction of the cost).
    The MAD, not the interquartile range: a short flash's high level is up to 40 % samples caught
    mid-transition, beyond the IQR's 25 % breakdown."""
    step = max(1, ordered.size // 100_000)
    return float(scipy.stats.median_abs_deviation(ordered[::step], scale="normal"))


def _quantile(ordered: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a sorted array (linear interpolation), in constant time."""
    position = q * (ordered.size - 1)
    below = int(math.floor(position))
    above = min(below + 1, ordered.size - 1)
    return float(ordered[below] + (position - below) * (ordered[above] - ordered[below]))


def _two_levels(values: np.ndarray) -> tuple[float, float, float]:
    """Low level, high level and noise SD of a two-state signal: the clearest of the splits
    reached from three starting thresholds (mid-range of the 0.5-99.5 %, 0.01-99.99 % and 0-100 %
    ranges), so that flashes lit for under 0.5 % of the time are found. The levels are those of
    the signal median-filtered over 3 samples: a flash lasts a frame (2 samples even at 128 Hz), a
    one-sample spike must not decide the levels."""
    ordered = np.sort(scipy.ndimage.median_filter(values, size=3, mode="nearest"))
    cumulative = np.concatenate([[0.0], np.cumsum(ordered)])
    starts = [0.5 * (_quantile(ordered, q) + _quantile(ordered, 1 - q)) for q in (0.005, 0.0001, 0.0)]

    def clarity(levels: tuple[float, float, float]) -> float:
        low, high, noise = levels
        return (high - low) / noise if noise > 0 else (math.inf if high > low else 0.0)

    return max((_isodata(ordered, cumulative, start) for start in starts), key=clarity)


def analog_edges(
    values: np.ndarray, times: np.ndarray, options: TimingOptions = TimingOptions(), *, polarity: str = "rising"
) -> Edges:
    """The flashes of a photodiode channel.

    Parameters
    ----------
    values, times : np.ndarray, shape (n_samples,)
        The channel and its sample times; non-finite samples are skipped.
    options : TimingOptions
        ``debounce_s`` and ``min_contrast`` are used.
    polarity : {"rising", "falling"}
        ``falling``: light on is the lower value (an inverted sensor).

    Returns
    -------
    Edges
        Times of the 50 % crossings, interpolated between the two samples around each.
    """
    x, t = _finite(values, times)
    empty = np.zeros(0)
    if x.size < 3:
        return Edges(empty, empty, polarity, ["fewer than 3 finite samples"])
    low, high, noise = _two_levels(x)
    contrast = high - low
    if contrast <= 0 or contrast < options.min_contrast * noise:
        return Edges(
            empty,
            empty,
            polarity,
            [
                f"no clear light pulses (low-to-high contrast {contrast:.3g} is below {options.min_contrast:g} x the "
                f"noise SD {noise:.3g}): is the sensor over the marker patch and photodiode_corner set?"
            ],
        )
    level = (x - low) / contrast
    if polarity == "falling":
        level = 1.0 - level
    # Hysteresis: the state changes only beyond the on/off levels; in between it holds.
    index = np.arange(level.size)
    decided = np.where(level >= _ON_LEVEL, index, np.where(level <= _OFF_LEVEL, index, -1))
    last_decided = np.maximum.accumulate(decided)
    state = np.where(last_decided >= 0, level[np.maximum(last_decided, 0)] >= _ON_LEVEL, False)
    on = np.flatnonzero(~state[:-1] & state[1:]) + 1
    off = np.flatnonzero(state[:-1] & ~state[1:]) + 1
    below = np.maximum.accumulate(np.where(level < _EDGE_LEVEL, index, -1))
    above = np.maximum.accumulate(np.where(level >= _EDGE_LEVEL, index, -1))
    # A recording that starts inside the hysteresis band has no sample below 50 % before its first rise.
    on, off = on[below[on] >= 0], off[above[off] >= 0]
    rising = _crossings(level, t, below[on])
    falling = _crossings(level, t, above[off])
    keep_on, keep_off = _usable(t, below[on], below[on] + 1), _usable(t, above[off], above[off] + 1)
    rising, falling = rising[keep_on], falling[keep_off]
    rising, falling = _debounce(rising, _falls_after_first_rise(rising, falling), options.debounce_s)
    return Edges(rising, falling, polarity)


def _crossings(level: np.ndarray, t: np.ndarray, before: np.ndarray) -> np.ndarray:
    """The 50 % crossing between sample ``before`` and the next, linearly interpolated."""
    after = before + 1
    fraction = (_EDGE_LEVEL - level[before]) / (level[after] - level[before])
    return t[before] + np.clip(fraction, 0.0, 1.0) * (t[after] - t[before])


def _falls_after_first_rise(rising: np.ndarray, falling: np.ndarray) -> np.ndarray:
    """Falling edges from the first rise on (a recording that starts lit has a fall first)."""
    return falling[falling > rising[0]] if rising.size else falling[:0]


def ttl_edges(
    values: np.ndarray, times: np.ndarray, options: TimingOptions = TimingOptions(), *, polarity: str = "rising"
) -> Edges:
    """The pulses of a TTL channel: where its value (masked by ``options.ttl_mask``) turns on.

    The edge lies between the first "on" sample and the one before; its time is their midpoint
    (at most half a sample from the truth). ``polarity="falling"``: the pulse is the value
    turning off (active-low).
    """
    x, t = _finite(values, times)
    empty = np.zeros(0)
    if x.size < 2:
        return Edges(empty, empty, polarity, ["fewer than 2 finite samples"])
    integers = np.rint(x).astype(np.int64)
    active = (integers & options.ttl_mask) != 0 if options.ttl_mask is not None else integers != 0
    if polarity == "falling":
        active = ~active
    on = np.flatnonzero(~active[:-1] & active[1:]) + 1
    off = np.flatnonzero(active[:-1] & ~active[1:]) + 1
    if on.size == 0:
        mask = f" & 0x{options.ttl_mask:x}" if options.ttl_mask is not None else ""
        return Edges(empty, empty, polarity, [f"no TTL pulse (the value{mask} never turns on)"])
    rising = 0.5 * (t[on - 1] + t[on])[_usable(t, on - 1, on)]
    falling = 0.5 * (t[off - 1] + t[off])[_usable(t, off - 1, off)]
    rising, falling = _debounce(rising, _falls_after_first_rise(rising, falling), options.debounce_s)
    return Edges(rising, falling, polarity)


# --------------------------------------------------------------------------- pairing


def flip_times(markers: Sequence[EventMarker]) -> np.ndarray:
    """The distinct marker stamps (one per screen change), sorted."""
    times = np.sort(np.array([m.time for m in markers], dtype=np.float64))
    times = times[np.isfinite(times)]
    if times.size == 0:
        return times
    return times[np.concatenate([[True], np.diff(times) > FLIP_GROUP_S])]


def pair_with_flips(flips: np.ndarray, edges: Edges, options: TimingOptions = TimingOptions()) -> FlipPairing:
    """Pair each screen change with the edge of its flash (see the module docstring for the rule).

    Parameters
    ----------
    flips : np.ndarray
        Sorted flip stamps (:func:`flip_times`), within the channel's recording.
    edges : Edges
    options : TimingOptions
        ``min_latency_s`` and ``max_latency_s`` bound the search.

    Returns
    -------
    FlipPairing
    """
    rising = edges.rising
    empty = np.zeros(0)
    if flips.size == 0 or rising.size == 0:
        return FlipPairing(empty, empty, int(flips.size), 0, int(rising.size))
    first = np.searchsorted(rising, flips + options.min_latency_s)
    candidate = np.minimum(first, rising.size - 1)
    delay = rising[candidate] - flips
    claims = (first < rising.size) & (delay <= options.max_latency_s)
    if not claims.any():
        return FlipPairing(empty, empty, int(flips.size), 0, int(rising.size))
    typical = float(np.median(delay[claims]))
    # One edge per flip: of the flips claiming an edge, the one whose delay is closest to typical.
    paired = np.zeros(flips.size, dtype=bool)
    claimants = np.flatnonzero(claims)
    order = claimants[np.lexsort((claimants, np.abs(delay[claimants] - typical), candidate[claimants]))]
    _, winners = np.unique(candidate[order], return_index=True)
    paired[order[winners]] = True
    # A flip without an edge: was the light already on when its flash was due?
    unpaired = np.flatnonzero(~paired)
    due = flips[unpaired] + typical
    pulse = np.searchsorted(rising, due, side="right") - 1
    ends = np.full(rising.size, np.inf)
    fall_of = np.searchsorted(edges.falling, rising)  # the first fall after each rise
    has_fall = fall_of < edges.falling.size
    ends[has_fall] = edges.falling[fall_of[has_fall]]
    lit = (pulse >= 0) & (due <= ends[np.maximum(pulse, 0)])
    used_edges = np.unique(candidate[paired])
    return FlipPairing(
        latencies=delay[paired],
        paired_flips=flips[paired],
        missed=int(np.count_nonzero(~lit)),
        merged=int(np.count_nonzero(lit)),
        unmatched_edges=int(rising.size - used_edges.size),
    )


def _choose_polarity(channel: TimingChannel, flips: np.ndarray, options: TimingOptions) -> tuple[Edges, FlipPairing]:
    detect = analog_edges if channel.kind == "photodiode" else ttl_edges
    polarities = ("rising", "falling") if options.polarity == "auto" else (options.polarity,)
    tried = []
    for polarity in polarities:
        edges = detect(channel.values, channel.timestamps, options, polarity=polarity)
        tried.append((edges, pair_with_flips(flips, edges, options)))
    if len(tried) == 1:
        return tried[0]

    def preference(item: tuple[Edges, FlipPairing]) -> tuple[int, float]:
        edges, pairing = item
        on_time = float(np.sum(edges.falling[: edges.rising.size] - edges.rising[: edges.falling.size]))
        return pairing.latencies.size, -on_time  # more paired flips; then the rarer "on" state

    return max(tried, key=preference)


# --------------------------------------------------------------------------- lag between amplifiers


def amplifier_lag(edges_a: np.ndarray, edges_b: np.ndarray, max_lag_s: float = 0.1) -> dict[str, Any] | None:
    """B's edge time minus A's for pulses recorded by both amplifiers, and its drift.

    Parameters
    ----------
    edges_a, edges_b : np.ndarray
        Sorted edge times of the same pulses in A's and B's channel.
    max_lag_s : float
        Edges pair when each is the other's nearest and they are at most this far apart.

    Returns
    -------
    dict or None
        ``pairs``, ``span_s``, ``lag_median_ms``, ``lag_start_ms`` and ``lag_end_ms`` (the fitted
        line at the first and last pair), ``drift_ppm`` (its slope, 1e-6 s per s) with
        ``drift_ppm_ci`` (95 %), ``residual_sd_ms`` (robust SD about the line); ``None`` with
        fewer than 3 pairs.
    """
    if edges_a.size == 0 or edges_b.size == 0:
        return None
    nearest_b = _nearest(edges_b, edges_a)
    nearest_a = _nearest(edges_a, edges_b[nearest_b])
    mutual = (nearest_a == np.arange(edges_a.size)) & (np.abs(edges_b[nearest_b] - edges_a) <= max_lag_s)
    t_a, t_b = edges_a[mutual], edges_b[nearest_b[mutual]]
    if t_a.size < 3:
        return None
    lag = t_b - t_a
    elapsed = t_a - t_a[0]
    slope, intercept, slope_se, residual = _robust_line(elapsed, lag)
    span = float(elapsed[-1])
    return {
        "pairs": int(t_a.size),
        "span_s": round(span, 3),
        "lag_median_ms": round(float(np.median(lag)) * 1e3, 3),
        "lag_start_ms": round(float(intercept) * 1e3, 3),
        "lag_end_ms": round(float(intercept + slope * span) * 1e3, 3),
        "drift_ppm": round(float(slope) * 1e6, 3),
        "drift_ppm_ci": [
            round(float(slope - 1.96 * slope_se) * 1e6, 3),
            round(float(slope + 1.96 * slope_se) * 1e6, 3),
        ],
        "residual_sd_ms": round(float(scipy.stats.median_abs_deviation(residual, scale="normal")) * 1e3, 3),
    }


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Slope, intercept, slope standard error and residuals of a least-squares line refitted
    without the points beyond 4 robust SD of the first fit's residuals.

    Least squares rather than Theil-Sen: edge times of a TTL (and lags between two of them) take
    few distinct values on the sample grid, and the median of pairwise slopes of such data is
    pulled towards zero by the many exactly tied pairs; least squares is unbiased on them. For the
    same reason the robust SD is at least half the plain SD: with most lags on one grid value the
    median absolute deviation is 0, and trimming at it would drop the neighbouring grid values.
    """
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    spread = max(float(scipy.stats.median_abs_deviation(residual, scale="normal")), 0.5 * float(np.std(residual)))
    keep = np.abs(residual) <= 4.0 * max(spread, 1e-12)
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    residual = y - (intercept + slope * x)
    x_kept = x[keep]
    dof = max(int(keep.sum()) - 2, 1)
    slope_se = math.sqrt(
        float(np.sum(residual[keep] ** 2)) / dof / max(float(np.sum((x_kept - x_kept.mean()) ** 2)), 1e-12)
    )
    return float(slope), float(intercept), slope_se, residual


def _nearest(sorted_times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the element of ``sorted_times`` nearest to each ``query``."""
    right = np.clip(np.searchsorted(sorted_times, query), 0, sorted_times.size - 1)
    left = np.clip(right - 1, 0, sorted_times.size - 1)
    return np.where(np.abs(sorted_times[left] - query) <= np.abs(sorted_times[right] - query), left, right)


# --------------------------------------------------------------------------- the check stage


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1e3, 3)


def _channel_report(
    channel: TimingChannel, all_flips: np.ndarray, options: TimingOptions
) -> tuple[dict[str, Any], Edges]:
    stamps = channel.timestamps[np.isfinite(channel.timestamps)]
    period = float(np.median(np.diff(stamps))) if stamps.size > 1 else math.nan
    inside = (
        (all_flips >= stamps[0] - options.min_latency_s) & (all_flips <= stamps[-1] - options.max_latency_s)
        if stamps.size
        else np.zeros(all_flips.size, dtype=bool)
    )
    flips = all_flips[inside]
    edges, pairing = _choose_polarity(channel, flips, options)
    name = f"{channel.kind} {channel.participant} '{channel.label}'"
    entry: dict[str, Any] = {
        "participant": channel.participant,
        "stream": channel.stream,
        "channel": channel.label,
        "kind": channel.kind,
        "polarity": edges.polarity,
        "sample_period_ms": _ms(period) if math.isfinite(period) else None,
        "edges": int(edges.rising.size),
        "flips": int(flips.size),
        "flips_outside_recording": int(all_flips.size - flips.size),
        "paired": int(pairing.latencies.size),
        "missed": pairing.missed,
        "merged": pairing.merged,
        "unmatched_edges": pairing.unmatched_edges,
        "latency_median_ms": None,
        "latency_mean_ms": None,
        "jitter_sd_ms": None,
        "jitter_iqr_ms": None,
        "latency_min_ms": None,
        "latency_max_ms": None,
        "problems": [f"{name}: {problem}." for problem in edges.problems],
    }
    latency = pairing.latencies
    if latency.size:
        q25, q75 = np.percentile(latency, [25, 75])
        entry.update(
            latency_median_ms=_ms(np.median(latency)),
            latency_mean_ms=_ms(np.mean(latency)),
            jitter_sd_ms=_ms(np.std(latency, ddof=1)) if latency.size > 1 else 0.0,
            jitter_iqr_ms=_ms(q75 - q25),
            latency_min_ms=_ms(latency.min()),
            latency_max_ms=_ms(latency.max()),
        )
        spread = entry["latency_max_ms"] - entry["latency_min_ms"]
        if spread > options.latency_range_warn_ms:
            entry["problems"].append(
                f"{name}: the screen latency varies by {spread:.1f} ms (from {entry['latency_min_ms']:.1f} to "
                f"{entry['latency_max_ms']:.1f} ms, more than {options.latency_range_warn_ms:.1f} ms): some screen "
                "changes appeared a frame or more late; check vsync and the machine's load."
            )
    if flips.size and not edges.problems:
        if latency.size == 0:
            entry["problems"].append(
                f"{name}: none of the {flips.size} screen changes is followed by an edge within "
                f"{options.min_latency_s * 1e3:.0f} to {options.max_latency_s * 1e3:.0f} ms; is the sensor over the "
                "marker patch, and is the right channel named?"
            )
        elif pairing.missed > options.missed_warn_fraction * flips.size:
            entry["problems"].append(
                f"{name}: {pairing.missed} of {flips.size} screen changes show no flash (dropped frames, or the "
                "patch was not drawn)."
            )
    return entry, edges


def _lag_pairs(found: list[tuple[dict[str, Any], Edges]]) -> list[tuple[dict[str, Any], Edges, dict[str, Any], Edges]]:
    """A's and B's channels that see the same pulses: same label, else the first of each kind."""
    pairs = []
    for kind in ("photodiode", "ttl"):
        a = [(e, edges) for e, edges in found if e["participant"] == "A" and e["kind"] == kind]
        b = [(e, edges) for e, edges in found if e["participant"] == "B" and e["kind"] == kind]
        if not a or not b:
            continue
        same = [(ea, xa, eb, xb) for ea, xa in a for eb, xb in b if ea["channel"].lower() == eb["channel"].lower()]
        pairs += same or [(a[0][0], a[0][1], b[0][0], b[0][1])]
    return pairs


def verify_timing(recording: DyadRecording, options: TimingOptions = TimingOptions()) -> dict[str, Any]:
    """The quick-check's ``timing_verification`` section (``docs/quickcheck-schema.md``).

    Parameters
    ----------
    recording : DyadRecording
        As loaded (EEG data still present, for a photodiode recorded as an EEG channel).
    options : TimingOptions

    Returns
    -------
    dict
        ``channels`` (one entry per timing channel found), ``lags`` (A-to-B, per pair of channels
        seeing the same pulses), ``notes`` (what was looked for when nothing was found) and
        ``problems`` (sentences for the warnings and the timing verdict).
    """
    flips = flip_times(recording.markers)
    found: list[tuple[dict[str, Any], Edges]] = []
    notes = []
    for participant in recording.participants:
        for channel in find_timing_channels(participant, options):
            entry, edges = _channel_report(channel, flips, options)
            if channel.kind == "ttl" and entry["edges"] == 0 and not options.channels:
                # A trigger input found by its label but never used is not a timing problem.
                notes.extend(entry["problems"])
                continue
            found.append((entry, edges))
    if not found:
        looked_for = (
            "the channel(s) " + ", ".join(repr(c) for c in options.channels)
            if options.channels
            else "a channel whose label holds " + ", ".join(options.photodiode_words + options.ttl_words)
        )
        notes.append(
            f"No photodiode or TTL channel found (looked for {looked_for} in both participants' EEG and AUX "
            "streams); the screen's timing is not verified (README, 'Timing: check it with a photodiode')."
        )
    elif flips.size == 0:
        notes.append("The file holds no markers: edges were found but screen latency cannot be measured.")
    for participant in recording.participants:
        if participant.board_markers is None:  # e.g. an amplifier's own LSL stream
            notes.append(
                f"Participant {participant.label} (stream {participant.stream_name}) has no board marker channel: "
                "its EEG and the markers are aligned by their LSL timestamps alone (the amplifier's stamps, "
                "moved onto the recording computer's clock by LSL's clock offsets); the amplifier's own "
                "latency is not measured"
                + ("." if found else " (a photodiode or TTL on an AUX input would measure it).")
            )
    lags = []
    for entry_a, edges_a, entry_b, edges_b in _lag_pairs(found):
        lag = amplifier_lag(edges_a.rising, edges_b.rising, options.max_lag_s)
        if lag is None:
            notes.append(
                f"A's '{entry_a['channel']}' and B's '{entry_b['channel']}' share fewer than 3 pulses within "
                f"{options.max_lag_s * 1e3:.0f} ms: no A-to-B lag (one sensor per screen, or different signals)."
            )
            continue
        lag.update(kind=entry_a["kind"], channel_A=entry_a["channel"], channel_B=entry_b["channel"], problems=[])
        name = f"A-to-B lag ('{entry_a['channel']}' / '{entry_b['channel']}')"
        change = abs(lag["lag_end_ms"] - lag["lag_start_ms"])
        if abs(lag["lag_median_ms"]) > options.lag_warn_ms:
            lag["problems"].append(
                f"{name}: B records the same pulse {lag['lag_median_ms']:+.1f} ms after A (beyond "
                f"{options.lag_warn_ms:g} ms): the two amplifiers' timestamps disagree; check their LSL clock "
                "offsets and the boards' buffering."
            )
        if change > options.lag_warn_ms:
            lag["problems"].append(
                f"{name}: drifts by {lag['drift_ppm']:+.0f} ppm, {change:.1f} ms over {lag['span_s']:.0f} s (beyond "
                f"{options.lag_warn_ms:g} ms): an amplifier's sampling clock runs off its timestamps."
            )
        lags.append(lag)
    channels = [entry for entry, _ in found]
    problems = [p for entry in channels for p in entry["problems"]] + [p for lag in lags for p in lag["problems"]]
    for problem in problems:
        logger.info("timing verification: %s", problem)
    return {"channels": channels, "lags": lags, "notes": notes, "problems": problems}


# --------------------------------------------------------------------------- summary and report


def summary_lines(verification: dict[str, Any] | None) -> list[str]:
    """One line per timing channel and per A-to-B lag, and the notes (e.g. that no channel was
    found, so the screen's timing is unverified), for the verdict's summary."""
    if not verification:
        return []
    lines = list(verification["notes"])
    for c in verification["channels"]:
        what = f"{'Photodiode' if c['kind'] == 'photodiode' else 'TTL'} {c['participant']} '{c['channel']}'"
        if c["latency_median_ms"] is None:
            lines.append(f"{what}: {c['edges']} edge(s), none paired with the {c['flips']} screen change(s).")
            continue
        lines.append(
            f"{what}: screen latency median {c['latency_median_ms']:+.1f} ms, jitter SD {c['jitter_sd_ms']:.1f} ms "
            f"(range {c['latency_min_ms']:+.1f} to {c['latency_max_ms']:+.1f} ms), {c['paired']}/{c['flips']} "
            f"flashes paired, {c['missed']} missed."
        )
    for lag in verification["lags"]:
        lines.append(
            f"Same pulse in both amplifiers ('{lag['channel_A']}'/'{lag['channel_B']}'): B - A {lag['lag_median_ms']:+.2f} ms, "
            f"drift {lag['drift_ppm']:+.1f} ppm over {lag['span_s']:.0f} s ({lag['pairs']} pulses)."
        )
    return lines


def _table(columns: list[tuple[str, str]], records: list[dict[str, Any]]) -> str:
    """An HTML table of ``records`` with one column per (key, title) of ``columns``."""
    header = "".join(f"<th>{html_escape(title)}</th>" for _, title in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{format_number(record[key])}</td>" for key, _ in columns) + "</tr>" for record in records
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


def timing_section_html(result: QuickCheckResult) -> str:
    """The body of the report's timing-verification section (photodiode / TTL), as an HTML fragment
    (the report writes the heading)."""
    if result.timing_verification is None:
        return "<p class='small'>Not computed (a result written before this check existed).</p>"
    data = result.timing_verification.model_dump()
    parts = [f"<p class='small'>{html_escape(note)}</p>" for note in data["notes"]]
    if data["channels"]:
        columns = [
            ("participant", "participant"),
            ("channel", "channel"),
            ("kind", "kind"),
            ("polarity", "on edge"),
            ("latency_median_ms", "latency median (ms)"),
            ("latency_mean_ms", "mean (ms)"),
            ("jitter_sd_ms", "jitter SD (ms)"),
            ("jitter_iqr_ms", "IQR (ms)"),
            ("latency_min_ms", "min (ms)"),
            ("latency_max_ms", "max (ms)"),
            ("paired", "paired"),
            ("flips", "screen changes"),
            ("missed", "missed"),
            ("merged", "merged"),
            ("unmatched_edges", "edges without marker"),
            ("sample_period_ms", "sample (ms)"),
        ]
        parts.append(
            "<p class='small'>Latency: the flash's edge minus the marker stamp of its screen change (LSL clock). "
            "Merged: the patch was still lit from the previous marked frame.</p>" + _table(columns, data["channels"])
        )
    if data["lags"]:
        columns = [
            ("channel_A", "A channel"),
            ("channel_B", "B channel"),
            ("pairs", "pulses"),
            ("lag_median_ms", "B - A median (ms)"),
            ("lag_start_ms", "at start (ms)"),
            ("lag_end_ms", "at end (ms)"),
            ("drift_ppm", "drift (ppm)"),
            ("residual_sd_ms", "residual SD (ms)"),
            ("span_s", "span (s)"),
        ]
        parts.append(
            "<p class='small'>The same pulse in both amplifiers: B's edge minus A's, and its drift (least-squares line "
            "over the session).</p>" + _table(columns, data["lags"])
        )
    if data["problems"]:
        parts.append("<ul class='warn'>" + "".join(f"<li>{html_escape(p)}</li>" for p in data["problems"]) + "</ul>")
    return "\n".join(parts)
