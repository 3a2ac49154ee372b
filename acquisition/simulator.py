"""A coupled-dyad EEG simulator: two participants' EEG with known inter-brain phase coupling.

The simulator is a drop-in :class:`~dyadlab.acquisition.sources.EegSource` pair (``simulator.sources``)
for demos, tests and the validation of the synchrony quick-check. Each participant's EEG is the
sum of

* a 1/f (pink) background, spatially smoothed over the scalp,
* band oscillators (theta, alpha, beta), each a narrow-band process at the participant's own
  peak frequency with a slow amplitude modulation, projected onto the channels through a
  band-specific topography (alpha posterior, theta frontal-midline, beta central),
* white sensor noise, optional blinks (frontal) and optional line noise.

Optionally (``timing=TimingSignals(...)``) each participant's source also carries the AUX
channels of a timing check: a photodiode over the screen's marker patch and/or the TTL a
StimTracker-like box derives from it, flashing a known latency (plus jitter) after every screen
change, with B's amplifier recording the same pulse a known lag later that drifts at a known rate
(:func:`simulate_timing_signals` offline; in real time the flashes follow the marker stream).

Inter-brain coupling: for every band a shared narrow-band *driver* is mixed into both
participants' band oscillators. With coupling strength ``c`` (0..1) the analytic band source of
participant ``p`` is ``sqrt(1 - c) * own_p + sqrt(c) * driver * exp(-1j * lag_p)``, so the band
power does not depend on the condition (only the phase relation does) and the coherence of the
two band sources equals ``c``. ``c`` follows the current condition (``coupling[condition][band]``)
and changes with a short linear ramp. The ground truth is documented in ``docs/simulator.md``
and returned by :meth:`CoupledDyadSimulator.ground_truth`.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, TypedDict

import numpy as np
import scipy.signal
from numpy.typing import ArrayLike

from dyadlab.acquisition.markers import Marker
from dyadlab.acquisition.sources import SourceChunk, SourceConfigError, SourceError

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL_NAMES: tuple[str, ...] = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "C3",
    "Cz",
    "C4",
    "P3",
    "Pz",
    "P4",
    "O1",
    "Oz",
    "O2",
)
"""The simulator's default montage: 16 standard 10-20 positions."""

DEFAULT_COUPLING: dict[str, dict[str, float]] = {
    "rest": {},
    "rest-eyes-closed": {},
    "rest-separated": {},
    "cooperation": {"alpha": 0.7},
    "competition": {},
    "tapping": {"theta": 0.8},
    "tapping-computer": {},
    "conversation": {"theta": 0.7},
    "conversation:A-speaks": {"theta": 0.8},
    "conversation:B-speaks": {},
    "conversation:overlap": {},
    "conversation:silence": {},
}
"""Coupling strength per condition and band (0 = independent, 1 = one shared band source).

A 30-40 s block of 2-s epochs in a coupled condition gives a clear PLV excess over an
epoch-shuffle null on the channels where the band dominates (see ``docs/simulator.md``);
The rests, ``competition`` and tapping with a computer partner (the paradigms' control
conditions) are uncoupled. With simulated voices
(:class:`dyadlab.acquisition.simulated_microphones.VoiceRoom`) a conversation block is split into
speaking states: the two brains couple in theta only while A speaks alone (B listens), so that
only the quick-check's speaking-state split can find where the block's coupling comes from.
"""


@dataclass(frozen=True)
class BandModel:
    """One rhythm of the simulated EEG.

    Attributes
    ----------
    range_hz : tuple of float
        The conventional analysis band the rhythm belongs to.
    peak_hz : float
        Mean peak frequency; each participant's own peak is drawn within ``peak_jitter_hz``.
    peak_jitter_hz : float
        Half-width of the uniform range of individual peak frequencies.
    bandwidth_hz : float
        Two-sided bandwidth of the narrow-band process (sets how fast phase and amplitude wander).
    amplitude_uv : float
        RMS amplitude in microvolts at the channel of maximal topography weight.
    center : tuple of float
        Topography centre (x = right, y = front) on the unit-radius scalp projection.
    spread : float
        Gaussian width of the topography on the same scale.
    """

    range_hz: tuple[float, float]
    peak_hz: float
    peak_jitter_hz: float
    bandwidth_hz: float
    amplitude_uv: float
    center: tuple[float, float]
    spread: float


BANDS: dict[str, BandModel] = {
    "theta": BandModel((4.0, 8.0), 6.0, 0.3, 1.5, 8.0, (0.0, 0.35), 0.45),
    "alpha": BandModel((8.0, 13.0), 10.0, 0.5, 2.0, 8.0, (0.0, -0.8), 0.5),
    "beta": BandModel((13.0, 30.0), 20.0, 1.0, 4.0, 2.0, (0.0, 0.0), 0.55),
}
"""The simulated rhythms; ``coupling`` mappings name these bands."""

_TOPOGRAPHY_FLOOR = 0.1  # every channel sees a little of every source (volume conduction)
_BLINK_RATE_HZ = 0.25  # about 15 blinks per minute
_BLINK_AMPLITUDE_UV = (80.0, 160.0)
_BLINK_CENTER = (0.0, 1.15)  # just in front of Fpz
_BLINK_SPREAD = 0.35
_BLINK_TAU_S = 0.05  # gamma-shaped blink: peak after 2 tau, over after ~0.5 s
_MAX_UNREAD_S = 60.0  # a started source keeps at most this much unread signal
_ENVELOPE_CUTOFF_HZ = 0.2  # slow waxing and waning of each rhythm
_ENVELOPE_DEPTH = 0.35  # standard deviation of the log amplitude
_BACKGROUND_SMOOTHING = 0.5  # spatial correlation length of the pink background
# Kellet's filter for 1/f noise (-3 dB/octave within 0.5 % over 9 octaves).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


# --------------------------------------------------------------------------- scalp positions

_ROW_LATITUDE = {
    "FP": 1.0,
    "AF": 0.75,
    "F": 0.5,
    "FT": 0.25,
    "FC": 0.25,
    "T": 0.0,
    "C": 0.0,
    "TP": -0.25,
    "CP": -0.25,
    "P": -0.5,
    "PO": -0.75,
    "O": -1.0,
    "I": -1.2,
}
_ROW_EQUATOR_DEG = {  # angle from the front of the equator point of each row
    "FP": 18.0,
    "AF": 36.0,
    "F": 54.0,
    "FT": 72.0,
    "FC": 72.0,
    "T": 90.0,
    "C": 90.0,
    "TP": 108.0,
    "CP": 108.0,
    "P": 126.0,
    "PO": 144.0,
    "O": 162.0,
    "I": 162.0,
}
_OLD_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
_LABEL = re.compile(r"^(FP|AF|FT|FC|TP|CP|PO|F|T|C|P|O|I)(Z|\d{1,2})$")


def scalp_position(label: str) -> tuple[float, float]:
    """Approximate 2-D scalp position of a 10-20 / 10-10 electrode label.

    Azimuthal projection with Cz at the origin, the nose along +y, the right ear along +x and
    the Fpz-T7-Oz-T8 circle at radius 1. Accurate enough to shape topographies.

    Raises
    ------
    SourceConfigError
        If the label is not a 10-20 / 10-10 name.
    """
    name = _OLD_NAMES.get(label.upper(), label.upper())
    match = _LABEL.match(name)
    if match is None:
        raise SourceConfigError(
            f"Simulator channel {label!r} is not a 10-20/10-10 electrode name (e.g. Fp1, Fz, C3, "
            "PO8, O2): the simulator needs scalp positions to shape its rhythms. Use standard labels."
        )
    row, index = match.groups()
    latitude = _ROW_LATITUDE[row]
    if index == "Z":
        return 0.0, latitude
    number = int(index)
    side = -1.0 if number % 2 else 1.0
    # 10-10 columns 1, 3, 5, 7 are 1/4 .. 4/4 of the way from the midline to the equator
    # (9/10 lie beyond it); Fp1/2 and O1/2 sit on the equator itself.
    fraction = 1.0 if row in ("FP", "O", "I") else ((number + 1) // 2) / 4.0
    angle = math.radians(_ROW_EQUATOR_DEG[row])
    equator = (side * math.sin(angle), math.cos(angle))
    return fraction * equator[0], latitude + fraction * (equator[1] - latitude)


def _gaussian_weights(positions: np.ndarray, center: ArrayLike, spread: float) -> np.ndarray:
    distance2 = np.sum((positions - np.asarray(center)) ** 2, axis=1)
    return np.exp(-distance2 / (2.0 * spread**2))


# --------------------------------------------------------------------------- fixed parameters


@dataclass(frozen=True)
class _DyadParameters:
    """Everything drawn once from the seed: what the ground truth reports."""

    sampling_rate: float
    channel_names: tuple[str, ...]
    positions: np.ndarray  # (C, 2)
    peak_hz: dict[str, tuple[float, float]]  # band -> (A, B)
    driver_hz: dict[str, float]
    topographies: dict[str, np.ndarray]  # band -> (2, C), max 1
    line_gain: np.ndarray  # (2, C)
    line_phase: tuple[float, float]
    background_mixing: np.ndarray  # (C, C)
    noise_seed: int


def _draw_parameters(sampling_rate: float, channel_names: Sequence[str], rng: np.random.Generator) -> _DyadParameters:
    positions = np.array([scalp_position(name) for name in channel_names])
    peak_hz: dict[str, tuple[float, float]] = {}
    driver_hz: dict[str, float] = {}
    topographies: dict[str, np.ndarray] = {}
    for band, model in BANDS.items():
        peak_a, peak_b = (float(model.peak_hz + rng.uniform(-1, 1) * model.peak_jitter_hz) for _ in range(2))
        peak_hz[band] = (peak_a, peak_b)
        driver_hz[band] = float(np.mean(peak_hz[band]))
        rows = []
        for _ in range(2):  # each head's generator sits slightly differently
            center = np.asarray(model.center) + rng.normal(0.0, 0.08, size=2)
            weights = _TOPOGRAPHY_FLOOR + (1 - _TOPOGRAPHY_FLOOR) * _gaussian_weights(positions, center, model.spread)
            rows.append(weights / weights.max())
        topographies[band] = np.vstack(rows)
    distance2 = np.sum((positions[:, None, :] - positions[None, :, :]) ** 2, axis=-1)
    mixing = np.exp(-distance2 / (2 * _BACKGROUND_SMOOTHING**2))
    mixing /= np.sqrt(np.sum(mixing**2, axis=1, keepdims=True))  # unit-variance rows
    return _DyadParameters(
        sampling_rate=float(sampling_rate),
        channel_names=tuple(channel_names),
        positions=positions,
        peak_hz=peak_hz,
        driver_hz=driver_hz,
        topographies=topographies,
        line_gain=rng.uniform(0.5, 1.5, size=(2, len(channel_names))),
        line_phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
        background_mixing=mixing,
        noise_seed=int(rng.integers(2**63 - 1)),
    )


# --------------------------------------------------------------------------- signal generator


def _unit_gain(
    sos: np.ndarray | None, b: np.ndarray | None = None, a: np.ndarray | None = None, *, length: int
) -> float:
    """Standard deviation of a filter's output for unit-variance white input.

    ``length`` samples of impulse response must cover its decay (a minute of signal does).
    """
    impulse = np.zeros(length)
    impulse[0] = 1.0
    if sos is not None:
        response = scipy.signal.sosfilt(sos, impulse)
    elif b is not None and a is not None:
        response = scipy.signal.lfilter(b, a, impulse)
    else:
        raise ValueError("_unit_gain needs second-order sections or both b and a")
    return float(np.sqrt(np.sum(response**2)))


class _ModelOptions(TypedDict):
    """The keyword arguments of :class:`_DyadModel` besides its parameters."""

    phase_lag_rad: float
    blinks: bool
    line_noise_hz: float | None
    line_noise_uv: float
    noise_uv: float
    background_uv: float


class _DyadModel:
    """The stateful generator of both participants' EEG, block after block.

    Consecutive calls to :meth:`generate` produce one continuous signal: every filter carries its
    state, oscillators use the global sample index, and blinks overlap block boundaries.
    """

    def __init__(
        self,
        params: _DyadParameters,
        *,
        phase_lag_rad: float,
        blinks: bool,
        line_noise_hz: float | None,
        line_noise_uv: float,
        noise_uv: float,
        background_uv: float,
    ) -> None:
        self._p = params
        self._rng = np.random.default_rng(params.noise_seed)
        self._fs = params.sampling_rate
        self._lag = phase_lag_rad
        self._blinks = blinks
        self._line_hz = line_noise_hz
        self._line_uv = line_noise_uv
        self._noise_uv = noise_uv
        self._background_uv = background_uv
        n_channels = len(params.channel_names)
        self._index = 0
        # Pink background, one filter state per participant and channel.
        response_length = int(60 * self._fs)
        self._pink_gain = _unit_gain(None, _PINK_B, _PINK_A, length=response_length)
        self._pink_zi = np.zeros((2 * n_channels, len(_PINK_A) - 1))
        # Band oscillators: complex baseband low-pass, three processes per band (A, B, driver).
        self._band_sos: dict[str, np.ndarray] = {}
        self._band_gain: dict[str, float] = {}
        self._band_zi: dict[str, np.ndarray] = {}
        for band, model in BANDS.items():
            sos = scipy.signal.butter(2, model.bandwidth_hz / 2.0, fs=self._fs, output="sos")
            self._band_sos[band] = sos
            self._band_gain[band] = _unit_gain(sos, length=response_length) * math.sqrt(2.0)  # 2 real parts
            self._band_zi[band] = np.zeros((sos.shape[0], 3, 2), dtype=complex)
        # Slow log-amplitude modulation, one per participant and band.
        self._envelope_sos = scipy.signal.butter(2, _ENVELOPE_CUTOFF_HZ, fs=self._fs, output="sos")
        self._envelope_gain = _unit_gain(self._envelope_sos, length=response_length)
        self._envelope_zi = np.zeros((self._envelope_sos.shape[0], 2 * len(BANDS), 2))
        # Start every filter in its stationary regime rather than at zero.
        self._warm_up()
        # Blinks: a gamma-shaped template whose tail carries over into the next block.
        tau = _BLINK_TAU_S * self._fs
        t = np.arange(int(12 * tau))
        template = (t / (2 * tau)) ** 2 * np.exp(2 - t / tau)
        self._blink_template = template / template.max()
        self._blink_topography = np.vstack([_gaussian_weights(params.positions, _BLINK_CENTER, _BLINK_SPREAD)] * 2)
        self._blink_carry = np.zeros((2, n_channels, template.size))

    def _warm_up(self) -> None:
        n = int(20 * self._fs / _ENVELOPE_CUTOFF_HZ)
        noise = self._rng.standard_normal((2 * len(BANDS), n))
        _, self._envelope_zi = scipy.signal.sosfilt(self._envelope_sos, noise, axis=-1, zi=self._envelope_zi)
        n_pink = int(10 * self._fs)
        pink = self._rng.standard_normal((self._pink_zi.shape[0], n_pink))
        _, self._pink_zi = scipy.signal.lfilter(_PINK_B, _PINK_A, pink, axis=-1, zi=self._pink_zi)
        n_band = int(5 * self._fs)
        for band, sos in self._band_sos.items():
            white = self._rng.standard_normal((3, n_band)) + 1j * self._rng.standard_normal((3, n_band))
            _, self._band_zi[band] = scipy.signal.sosfilt(sos, white, axis=-1, zi=self._band_zi[band])

    def generate(self, strengths: Mapping[str, np.ndarray]) -> np.ndarray:
        """The next block of both participants' EEG.

        Parameters
        ----------
        strengths : mapping of band name to np.ndarray, shape (n_samples,)
            Coupling strength (0..1) of each band for each sample of the block.

        Returns
        -------
        np.ndarray, shape (2, n_channels, n_samples)
            Participant A then B, in microvolts.
        """
        n = len(next(iter(strengths.values())))
        n_channels = len(self._p.channel_names)
        index = self._index + np.arange(n)
        seconds = index / self._fs
        rng = self._rng
        # Pink background, spatially smoothed so that neighbours correlate like real EEG.
        white = rng.standard_normal((2 * n_channels, n))
        pink, self._pink_zi = scipy.signal.lfilter(_PINK_B, _PINK_A, white, axis=-1, zi=self._pink_zi)
        pink = pink.reshape(2, n_channels, n) * (self._background_uv / self._pink_gain)
        eeg = np.einsum("ij,pjn->pin", self._p.background_mixing, pink)
        # Slow amplitude envelopes (log-normal, unit median).
        envelope_noise = rng.standard_normal((2 * len(BANDS), n))
        slow, self._envelope_zi = scipy.signal.sosfilt(
            self._envelope_sos, envelope_noise, axis=-1, zi=self._envelope_zi
        )
        envelopes = np.exp(_ENVELOPE_DEPTH * slow / self._envelope_gain).reshape(len(BANDS), 2, n)
        for band_index, (band, model) in enumerate(BANDS.items()):
            complex_white = rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))
            baseband, self._band_zi[band] = scipy.signal.sosfilt(
                self._band_sos[band], complex_white, axis=-1, zi=self._band_zi[band]
            )
            baseband /= self._band_gain[band]  # unit power complex processes
            driver = baseband[2] * np.exp(2j * np.pi * self._p.driver_hz[band] * seconds)
            strength = np.clip(np.asarray(strengths.get(band, np.zeros(n)), dtype=float), 0.0, 1.0)
            for participant in range(2):
                own = baseband[participant] * np.exp(2j * np.pi * self._p.peak_hz[band][participant] * seconds)
                lag = 0.0 if participant == 0 else -self._lag  # B lags A
                analytic = np.sqrt(1 - strength) * own + np.sqrt(strength) * driver * np.exp(1j * lag)
                rhythm = math.sqrt(2.0) * analytic.real * envelopes[band_index, participant] * model.amplitude_uv
                eeg[participant] += self._p.topographies[band][participant][:, None] * rhythm[None, :]
        eeg += rng.normal(0.0, self._noise_uv, size=eeg.shape)
        if self._line_hz is not None:
            for participant in range(2):
                wave = np.sin(2 * np.pi * self._line_hz * seconds + self._p.line_phase[participant])
                eeg[participant] += self._line_uv * self._p.line_gain[participant][:, None] * wave[None, :]
        if self._blinks:
            eeg += self._blink_block(n)
        self._index += n
        return eeg

    def _blink_block(self, n: int) -> np.ndarray:
        length = self._blink_template.size
        block = np.zeros((2, self._blink_carry.shape[1], n + length))
        block[:, :, :length] += self._blink_carry
        for participant in range(2):
            n_blinks = self._rng.poisson(_BLINK_RATE_HZ * n / self._fs)
            for onset in self._rng.integers(0, n, size=n_blinks):
                amplitude = self._rng.uniform(*_BLINK_AMPLITUDE_UV)
                block[participant, :, onset : onset + length] += (
                    amplitude * self._blink_topography[participant][:, None] * self._blink_template[None, :]
                )
        self._blink_carry = block[:, :, n:].copy()
        return block[:, :, :n]


# --------------------------------------------------------------------------- condition timeline


@dataclass(frozen=True)
class ConditionChange:
    """When the simulated coupling switched to a condition.

    Attributes
    ----------
    condition : str
        The condition name (as requested; unknown names couple like the baseline).
    sample_index : int
        First sample of the new condition (the coupling ramps from there over ``transition_s``).
    timestamp : float | None
        That sample's ``local_clock()`` time; ``None`` if set before the sources started.
    requested_at : float | None
        The time asked for (e.g. the marker's timestamp); ``None`` for "now".
    """

    condition: str
    sample_index: int
    timestamp: float | None
    requested_at: float | None


class _CouplingTimeline:
    """Which condition holds at every sample, and the per-band coupling strength it implies."""

    def __init__(
        self,
        coupling: Mapping[str, Mapping[str, float]],
        baseline: str,
        sampling_rate: float,
        transition_s: float,
    ) -> None:
        self._coupling = coupling
        self._baseline = baseline
        self._changes: list[tuple[int, str]] = [(0, baseline)]
        self._ramp = max(1, int(round(transition_s * sampling_rate)))
        self._ramp_history = {band: np.full(self._ramp - 1, self._strength(baseline, band)) for band in BANDS}
        self._warned: set[str] = set()

    def _strength(self, condition: str, band: str) -> float:
        table = self._coupling.get(condition)
        if table is None:
            table = self._coupling.get(self._baseline, {})
        return float(table.get(band, 0.0))

    def known(self, condition: str) -> bool:
        return condition in self._coupling or condition == self._baseline

    def schedule(self, sample_index: int, condition: str) -> None:
        """Make ``condition`` hold from ``sample_index`` on (replaces later scheduled changes)."""
        if not self.known(condition) and condition not in self._warned:
            self._warned.add(condition)
            logger.warning(
                "Simulator: condition %r has no coupling entry; it is simulated like the baseline %r "
                "(uncoupled unless the baseline is coupled). Known conditions: %s.",
                condition,
                self._baseline,
                ", ".join(sorted(self._coupling)),
            )
        self._changes = [change for change in self._changes if change[0] < sample_index]
        self._changes.append((sample_index, condition))

    def labels(self, start: int, n: int) -> np.ndarray:
        """Condition name per sample, shape (n,)."""
        out = np.empty(n, dtype=object)
        for i, (change_at, condition) in enumerate(self._changes):
            until = self._changes[i + 1][0] if i + 1 < len(self._changes) else start + n
            lo, hi = max(change_at, start) - start, min(until, start + n) - start
            if hi > lo:
                out[lo:hi] = condition
        return out

    def strengths(self, start: int, n: int) -> dict[str, np.ndarray]:
        """Ramped coupling strength per band for samples ``start .. start + n - 1``.

        Must be called on consecutive ranges: the ramp (a causal moving average of the
        condition's step function, i.e. a linear ramp over ``transition_s``) carries its state.
        """
        labels = self.labels(start, n)
        out = {}
        for band in BANDS:
            table = {label: self._strength(label, band) for label in set(labels)}
            steps = np.array([table[label] for label in labels], dtype=float)
            history = np.concatenate([self._ramp_history[band], steps])
            cumulative = np.concatenate([[0.0], np.cumsum(history)])
            out[band] = (cumulative[self._ramp :] - cumulative[: -self._ramp]) / self._ramp
            self._ramp_history[band] = history[history.size - (self._ramp - 1) :]
        return out


# --------------------------------------------------------------------------- timing channels


@dataclass(frozen=True)
class TimingSignals:
    """AUX channels for the timing check, with known latency, jitter, lag and drift.

    Every screen change (flip) lights the marker patch for ``pulse_s``; the light reaches the
    sensor ``latency_s`` plus a Gaussian jitter (SD ``jitter_s``, drawn per flash) after the flip.
    One sensor feeds both amplifiers, so A and B see the same flash; B's amplifier records it
    ``lag_b_s + drift_ppm * 1e-6 * (onset - drift_origin)`` later (the two amplifiers' timing
    disagreement that the check measures).

    Attributes
    ----------
    photodiode, ttl : bool
        Which channels to add (``photodiode``: the light integrated over each sample period, as an
        amplifier's anti-alias filter averages it, times ``light_level`` plus white noise of SD
        ``noise``; ``ttl``: ``ttl_value`` while the light is on, sampled at each sample time).
    latency_s, jitter_s, pulse_s, lag_b_s, drift_ppm : float
        See above; ``pulse_s`` defaults to one 60 Hz frame.
    light_level, noise : float
        Photodiode amplitude and noise SD (arbitrary units, µV-like).
    ttl_value : int
        The trigger value while the pulse is on (e.g. 4: bit 2 of a trigger port).
    inverted : bool
        The photodiode reads lower when lit (a sensor wired the other way round).
    seed : int
        Seed of the jitter and noise draws.
    """

    photodiode: bool = True
    ttl: bool = False
    latency_s: float = 0.02
    jitter_s: float = 0.001
    pulse_s: float = 1.0 / 60.0
    lag_b_s: float = 0.0
    drift_ppm: float = 0.0
    light_level: float = 1000.0
    noise: float = 10.0
    ttl_value: int = 1
    inverted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.photodiode or self.ttl):
            raise SourceConfigError("TimingSignals needs photodiode=True, ttl=True or both.")
        for name in ("latency_s", "jitter_s", "noise"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise SourceConfigError(
                    f"TimingSignals.{name} must be a non-negative number, got {getattr(self, name)!r}."
                )
        if not (math.isfinite(self.pulse_s) and self.pulse_s > 0):
            raise SourceConfigError(f"TimingSignals.pulse_s must be positive (a flash lasts), got {self.pulse_s!r}.")
        if not (math.isfinite(self.lag_b_s) and math.isfinite(self.drift_ppm)):
            raise SourceConfigError("TimingSignals.lag_b_s and drift_ppm must be finite numbers.")
        if not (isinstance(self.ttl_value, int) and self.ttl_value > 0):
            raise SourceConfigError(f"TimingSignals.ttl_value must be a positive integer, got {self.ttl_value!r}.")

    @property
    def channel_names(self) -> list[str]:
        """The AUX channel labels, in order."""
        return ["photodiode"] * self.photodiode + ["ttl"] * self.ttl

    def onsets(self, flips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """When each flip's light reaches the sensor (before any amplifier lag), shape (n_flips,)."""
        flips = np.asarray(flips, dtype=np.float64)
        return flips + self.latency_s + rng.normal(0.0, self.jitter_s, size=flips.shape)

    def recorded_onsets(self, onsets: np.ndarray, participant: int, drift_origin: float) -> np.ndarray:
        """The onsets as participant 0 (A) or 1 (B) records them."""
        if participant == 0:
            return onsets
        return onsets + self.lag_b_s + self.drift_ppm * 1e-6 * (onsets - drift_origin)

    def channels(self, times: np.ndarray, period: float, onsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The AUX channels at sample ``times`` (``period`` apart) for recorded flash ``onsets``,
        shape (n_channels, n)."""
        times = np.asarray(times, dtype=np.float64)
        onsets = np.sort(np.asarray(onsets, dtype=np.float64))
        lit = np.zeros(times.size)
        on = np.zeros(times.size, dtype=bool)
        # Only flashes near a sample matter: each sample sees the flashes overlapping (t - period, t].
        first = np.searchsorted(onsets, times - period - self.pulse_s, side="left")
        last = np.searchsorted(onsets, times, side="right")
        for k in np.flatnonzero(last > first):
            for onset in onsets[first[k] : last[k]]:
                overlap = min(times[k], onset + self.pulse_s) - max(times[k] - period, onset)
                lit[k] += max(overlap, 0.0) / period
                on[k] |= onset <= times[k] < onset + self.pulse_s
        rows = []
        if self.photodiode:
            light = np.clip(lit, 0.0, 1.0) * self.light_level
            if self.inverted:
                light = self.light_level - light
            rows.append(light + rng.normal(0.0, self.noise, size=times.size))
        if self.ttl:
            rows.append(np.where(on, float(self.ttl_value), 0.0))
        return np.vstack(rows)


def simulate_timing_signals(
    times_a: np.ndarray,
    times_b: np.ndarray,
    flips: np.ndarray,
    signals: TimingSignals = TimingSignals(),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Offline AUX channels of both participants for screen changes at ``flips``.

    Parameters
    ----------
    times_a, times_b : np.ndarray
        Sample times of A's and B's recordings (the same clock as ``flips``).
    flips : np.ndarray
        Flip times (the markers' stamps).
    signals : TimingSignals

    Returns
    -------
    aux_a, aux_b : np.ndarray, shape (n_channels, n_samples)
        Channels :attr:`TimingSignals.channel_names`.
    truth : dict
        ``onsets`` (light at the sensor), ``recorded_onsets`` per participant (``A``, ``B``),
        ``latencies`` (onset minus flip, per flip), ``drift_origin`` (B's lag is ``lag_b_s`` there).
    """
    rng = np.random.default_rng(signals.seed)
    flips = np.asarray(flips, dtype=np.float64)
    onsets = signals.onsets(flips, rng)
    origin = float(times_a[0])
    recorded = [signals.recorded_onsets(onsets, participant, origin) for participant in (0, 1)]
    aux = [
        signals.channels(times, float(np.median(np.diff(times))), stamps, rng)
        for times, stamps in zip((times_a, times_b), recorded)
    ]
    truth = {
        "onsets": onsets,
        "recorded_onsets": {"A": recorded[0], "B": recorded[1]},
        "latencies": onsets - flips,
        "drift_origin": origin,
    }
    return aux[0], aux[1], truth


# --------------------------------------------------------------------------- public API


class SimulatedDyad(NamedTuple):
    """Both participants' simulated EEG (offline).

    Attributes
    ----------
    a, b : np.ndarray, shape (n_channels, n_samples)
        Participant A's and B's EEG in microvolts.
    times : np.ndarray, shape (n_samples,)
        Seconds from the first sample (``i / sampling_rate``).
    conditions : np.ndarray of str, shape (n_samples,)
        The condition in force at each sample.
    """

    a: np.ndarray
    b: np.ndarray
    times: np.ndarray
    conditions: np.ndarray


def _validate_coupling(coupling: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    checked: dict[str, dict[str, float]] = {}
    for condition, bands in coupling.items():
        checked[str(condition)] = {}
        for band, strength in bands.items():
            if band not in BANDS:
                raise SourceConfigError(
                    f"Simulator coupling for condition {condition!r} names band {band!r}; "
                    f"the simulated bands are {', '.join(BANDS)}."
                )
            value = float(strength)
            if not 0.0 <= value <= 1.0:
                raise SourceConfigError(
                    f"Simulator coupling {condition!r}/{band!r} = {strength!r}: strengths are 0 (independent) "
                    "to 1 (one shared source)."
                )
            checked[str(condition)][band] = value
    return checked


class CoupledDyadSimulator:
    """Two participants' EEG with condition-dependent inter-brain phase coupling.

    Use :attr:`sources` wherever two boards would be used (each is an
    :class:`~dyadlab.acquisition.sources.EegSource` paced in real time on ``local_clock()``), and
    :meth:`set_condition` or :meth:`follow_markers` to make the coupling follow the protocol.
    :meth:`simulate` produces the same model offline.

    Parameters
    ----------
    sampling_rate : float
        Samples per second of both participants.
    channel_names : sequence of str
        10-20 / 10-10 electrode labels (positions shape the rhythms' topographies).
    coupling : mapping
        ``{condition: {band: strength}}`` with bands from :data:`BANDS` and strengths 0..1; a band
        missing from a condition is uncoupled. See :data:`DEFAULT_COUPLING`.
    baseline_condition : str
        The condition before the first change and after each ``block_end``. A condition that
        ``coupling`` does not list is simulated like the baseline (with a warning), so that
        any protocol can drive the simulator; a baseline absent from ``coupling`` is uncoupled.
    seed : int | None
        Seed of every random draw (peak frequencies, topographies, noise); ``None`` draws one,
        reported by :meth:`ground_truth`.
    blinks : bool
        Add eye blinks (about 15/min, 80-160 µV at Fp1/Fp2, falling off towards the back).
    line_noise_hz : float | None
        Add mains interference at this frequency (50 or 60), same phase in both heads.
    line_noise_uv : float
        Line-noise amplitude in µV (times a per-channel gain of 0.5 to 1.5).
    noise_uv : float
        RMS of the white sensor noise in µV.
    background_uv : float
        RMS of the pink background per channel in µV.
    phase_lag_rad : float
        Phase by which B's shared component lags A's (the coupled phase difference).
    transition_s : float
        Duration of the linear coupling ramp at each condition change.
    participants : sequence of two str
        The labels of the two sources.
    timing : TimingSignals or None
        Add photodiode / TTL AUX channels flashing after every screen change (in real time: every
        distinct stamp of the followed marker stream, see :meth:`follow_markers` and
        :meth:`flash`); ``None`` (default): no AUX channel.
    """

    def __init__(
        self,
        *,
        sampling_rate: float = 250.0,
        channel_names: Sequence[str] = DEFAULT_CHANNEL_NAMES,
        coupling: Mapping[str, Mapping[str, float]] = DEFAULT_COUPLING,
        baseline_condition: str = "rest",
        seed: int | None = None,
        blinks: bool = True,
        line_noise_hz: float | None = None,
        line_noise_uv: float = 10.0,
        noise_uv: float = 1.5,
        background_uv: float = 10.0,
        phase_lag_rad: float = math.pi / 4,
        transition_s: float = 0.2,
        participants: Sequence[str] = ("A", "B"),
        timing: TimingSignals | None = None,
    ) -> None:
        if not (math.isfinite(sampling_rate) and 60.0 <= sampling_rate <= 10000.0):
            raise SourceConfigError(
                f"Simulator sampling rate {sampling_rate!r} Hz: use 60 to 10000 Hz (EEG rhythms up to 30 Hz)."
            )
        if line_noise_hz is not None and not 0 < line_noise_hz < sampling_rate / 2:
            raise SourceConfigError(
                f"Line noise at {line_noise_hz} Hz cannot be sampled at {sampling_rate} Hz (Nyquist "
                f"{sampling_rate / 2} Hz): lower it or raise the sampling rate."
            )
        names = [str(name) for name in channel_names]
        if not names or len(set(name.upper() for name in names)) != len(names):
            raise SourceConfigError(f"Simulator channel names must be non-empty and unique, got {names}.")
        if len(participants) != 2 or participants[0] == participants[1]:
            raise SourceConfigError(f"The simulator has two participants with distinct labels, got {participants}.")
        for name, value in (("line_noise_uv", line_noise_uv), ("noise_uv", noise_uv), ("background_uv", background_uv)):
            if not (math.isfinite(value) and value >= 0):
                raise SourceConfigError(f"Simulator {name} must be a non-negative number of µV, got {value!r}.")
        self.coupling = _validate_coupling(coupling)
        self.baseline_condition = baseline_condition
        self.sampling_rate = float(sampling_rate)
        self.channel_names = names
        self.participants: tuple[str, str] = (participants[0], participants[1])
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        self._params = _draw_parameters(self.sampling_rate, names, np.random.default_rng(self.seed))
        self._model_options = _ModelOptions(
            phase_lag_rad=float(phase_lag_rad),
            blinks=bool(blinks),
            line_noise_hz=None if line_noise_hz is None else float(line_noise_hz),
            line_noise_uv=float(line_noise_uv),
            noise_uv=float(noise_uv),
            background_uv=float(background_uv),
        )
        self._transition_s = float(transition_s)
        # Real-time state, guarded by one lock: both sources' reads and condition changes.
        self._lock = threading.RLock()
        self._model = _DyadModel(self._params, **self._model_options)
        self._timeline = self._new_timeline()
        self._changes: list[ConditionChange] = []
        self._current = baseline_condition
        self._t0: float | None = None
        self._n_generated = 0
        self._followers: list[MarkerFollower] = []
        self.closed = False
        self.timing = timing
        self._timing_rng = np.random.default_rng(timing.seed if timing is not None else 0)
        self._onsets: list[float] = []  # light onsets of the flashes so far (local_clock)
        self._last_flip = -math.inf
        self._sources = (
            SimulatedEegSource(self, 0, self.participants[0]),
            SimulatedEegSource(self, 1, self.participants[1]),
        )

    # ------------------------------------------------------------------ configuration

    def _new_timeline(self) -> _CouplingTimeline:
        return _CouplingTimeline(self.coupling, self.baseline_condition, self.sampling_rate, self._transition_s)

    @property
    def sources(self) -> tuple[SimulatedEegSource, SimulatedEegSource]:
        """Participant A's and B's real-time sources."""
        return self._sources

    @property
    def current_condition(self) -> str:
        """The condition most recently set (by :meth:`set_condition` or a followed marker)."""
        with self._lock:
            return self._current

    @property
    def condition_changes(self) -> list[ConditionChange]:
        """Every condition change applied in real time, in order."""
        with self._lock:
            return list(self._changes)

    def set_condition(self, condition: str, at: float | None = None) -> ConditionChange:
        """Switch the coupling to ``condition``; thread-safe.

        Parameters
        ----------
        condition : str
            A condition of ``coupling`` (others are simulated like the baseline, with a warning).
        at : float | None
            ``local_clock()`` time from which the condition holds (default: now). Samples already
            delivered cannot change, so a time in the past takes effect at the next sample not yet
            generated; the returned change says where it landed. A change still scheduled for a
            later sample is superseded (dropped).

        Returns
        -------
        ConditionChange
        """
        import pylsl

        with self._lock:
            if self._t0 is None:
                index, stamp = self._n_generated, None
            else:
                wanted = pylsl.local_clock() if at is None else float(at)
                index = max(self._n_generated, math.ceil((wanted - self._t0) * self.sampling_rate - 1e-9))
                stamp = self._t0 + index / self.sampling_rate
            self._timeline.schedule(index, condition)
            change = ConditionChange(str(condition), int(index), stamp, None if at is None else float(at))
            # A change scheduled for later than this one never happens: it is superseded.
            self._changes = [c for c in self._changes if c.sample_index < index] + [change]
            self._current = str(condition)
        logger.info("Simulator condition -> %s (sample %d)", condition, index)
        return change

    def follow_markers(
        self,
        marker_source_id: str,
        *,
        resolve_timeout_s: float | None = None,
        poll_s: float = 0.02,
        also: Sequence[Callable[[Marker, float], None]] = (),
    ) -> MarkerFollower:
        """Follow the session marker stream: ``block_start`` sets its condition, ``block_end`` the baseline.

        A background thread resolves the stream by ``source_id`` (waiting for it if it does not
        exist yet), then applies each event at its marker timestamp (see :meth:`set_condition`).
        ``session_end`` and ``abort`` also return to the baseline. The follower stops with
        :meth:`close` (use the simulator as a context manager).

        Parameters
        ----------
        marker_source_id : str
            ``dyadlab.acquisition.streams.source_id(study, dyad, "markers")``.
        resolve_timeout_s : float | None
            Give up (log an error) if the stream has not appeared after this long; ``None`` waits.
        poll_s : float
            Longest wait for the next marker; it bounds the stop latency, not the switch latency.
        also : sequence of callables
            Called with each marker and its timestamp after the simulator applied it, in order (e.g.
            :meth:`dyadlab.acquisition.simulated_voices.VoiceRoom.on_marker`, whose speaking states
            then refine the condition the block marker set).

        Returns
        -------
        MarkerFollower
        """
        follower = MarkerFollower(
            marker_source_id,
            [self._on_marker, *also],
            resolve_timeout_s=resolve_timeout_s,
            poll_s=poll_s,
        )
        with self._lock:
            self._followers.append(follower)
        follower.start()
        return follower

    _RETURN_TO_BASELINE = ("block_end", "session_end", "abort")

    def _on_marker(self, marker: Marker, stamp: float) -> None:
        self.flash(stamp)
        if marker.event == "block_start" and marker.condition:
            self.set_condition(marker.condition, at=stamp)
        elif marker.event in self._RETURN_TO_BASELINE:
            self.set_condition(self.baseline_condition, at=stamp)

    def close(self) -> None:
        """Stop marker followers and release both sources for good; idempotent."""
        with self._lock:
            self.closed = True
            followers, self._followers = self._followers, []
        for follower in followers:
            follower.stop()
        for source in self._sources:
            source.release()

    def __enter__(self) -> CoupledDyadSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ground truth and offline

    def ground_truth(self) -> dict[str, Any]:
        """What the simulator puts in the data (JSON-serialisable); see ``docs/simulator.md``.

        Returns
        -------
        dict
            ``seed``, ``sampling_rate``, ``channel_names``, ``participants``, ``baseline_condition``,
            ``coupling`` ({condition: {band: strength}}), ``phase_lag_rad`` (B lags A),
            ``bands`` ({band: range_hz, peak_hz per participant, driver_hz, amplitude_uv,
            topography per participant per channel, coupled_channels}), ``line_noise_hz``,
            ``blinks``, ``condition_changes`` applied in real time so far, and ``timing`` (the
            :class:`TimingSignals` as a dict, ``None`` without timing channels).
        """
        params = self._params
        labels = self.participants
        bands = {}
        for band, model in BANDS.items():
            topographies = params.topographies[band]
            strong = np.min(topographies, axis=0) >= 0.5
            bands[band] = {
                "range_hz": list(model.range_hz),
                "peak_hz": {labels[p]: round(params.peak_hz[band][p], 4) for p in range(2)},
                "driver_hz": round(params.driver_hz[band], 4),
                "amplitude_uv": model.amplitude_uv,
                "topography": {
                    labels[p]: {name: round(float(w), 4) for name, w in zip(params.channel_names, topographies[p])}
                    for p in range(2)
                },
                "coupled_channels": [name for name, keep in zip(params.channel_names, strong) if keep],
            }
        return {
            "model": "dyadlab coupled-dyad simulator",
            "seed": self.seed,
            "sampling_rate": self.sampling_rate,
            "channel_names": list(self.channel_names),
            "participants": list(labels),
            "baseline_condition": self.baseline_condition,
            "coupling": {condition: dict(table) for condition, table in self.coupling.items()},
            "coupling_definition": "coherence of the two participants' band sources; the band power does not "
            "depend on it",
            "phase_lag_rad": self._model_options["phase_lag_rad"],
            "phase_lag_definition": "phase(A) - phase(B) of the shared component (B lags A)",
            "transition_s": self._transition_s,
            "bands": bands,
            "noise_uv": self._model_options["noise_uv"],
            "background_uv": self._model_options["background_uv"],
            "blinks": self._model_options["blinks"],
            "line_noise_hz": self._model_options["line_noise_hz"],
            "line_noise_uv": self._model_options["line_noise_uv"] if self._model_options["line_noise_hz"] else 0.0,
            "condition_changes": [asdict(change) for change in self.condition_changes],
            "timing": asdict(self.timing) if self.timing is not None else None,
        }

    def simulate(self, duration_s: float, schedule: Sequence[tuple[str, float]] | None = None) -> SimulatedDyad:
        """Generate ``duration_s`` seconds offline with the same model and seed.

        Parameters
        ----------
        duration_s : float
            Length of the simulation.
        schedule : sequence of (condition, seconds)
            Consecutive blocks from t = 0; time after the last block is baseline, and blocks
            beyond ``duration_s`` are cut. ``None``: baseline throughout.

        Returns
        -------
        SimulatedDyad
        """
        n_total = int(round(duration_s * self.sampling_rate))
        if n_total <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s!r}.")
        timeline = self._new_timeline()
        position = 0
        for condition, seconds in schedule or ():
            if seconds <= 0:
                raise ValueError(f"Schedule block {condition!r} lasts {seconds!r} s; blocks last > 0 s.")
            timeline.schedule(position, condition)
            position += int(round(seconds * self.sampling_rate))
        timeline.schedule(position, self.baseline_condition)
        model = _DyadModel(self._params, **self._model_options)
        block = int(self.sampling_rate)
        parts = []
        for start in range(0, n_total, block):
            parts.append(model.generate(timeline.strengths(start, min(block, n_total - start))))
        eeg = np.concatenate(parts, axis=-1)
        return SimulatedDyad(
            a=eeg[0],
            b=eeg[1],
            times=np.arange(n_total) / self.sampling_rate,
            conditions=timeline.labels(0, n_total).astype(str),
        )

    # ------------------------------------------------------------------ real-time engine (sources)

    def flash(self, flip_time: float) -> None:
        """A screen change at ``flip_time`` (``local_clock()``): the timing channels flash after it.

        Markers of one flip share its stamp and give one flash. A flash whose light would fall on
        samples already delivered is lost (the follower sees markers within milliseconds; the
        latency is tens of them). Without :class:`TimingSignals` nothing happens.
        """
        if self.timing is None:
            return
        with self._lock:
            if abs(flip_time - self._last_flip) <= 0.001:
                return
            self._last_flip = flip_time
            self._onsets.append(float(self.timing.onsets(np.array([flip_time]), self._timing_rng)[0]))

    def _timing_aux(self, timestamps: np.ndarray) -> list[np.ndarray]:
        """Both participants' timing channels for one block of sample times (empty rows without timing)."""
        if self.timing is None:
            return [np.empty((0, timestamps.size))] * 2
        assert self._t0 is not None
        # Flashes long before this block cannot reach it any more.
        self._onsets = [o for o in self._onsets if o > timestamps[0] - 1.0 - abs(self.timing.lag_b_s)]
        onsets = np.array(self._onsets)
        period = 1.0 / self.sampling_rate
        return [
            self.timing.channels(
                timestamps, period, self.timing.recorded_onsets(onsets, participant, self._t0), self._timing_rng
            )
            for participant in (0, 1)
        ]

    def _next_index_at(self, now: float) -> int:
        """Index of the first sample stamped after ``now``."""
        assert self._t0 is not None
        return math.floor((now - self._t0) * self.sampling_rate + 1e-9) + 1

    def _start_clock(self) -> None:
        import pylsl

        if not any(source.streaming for source in self._sources):
            # (Re)start: sample n_generated is stamped now; indices stay continuous.
            self._t0 = pylsl.local_clock() - self._n_generated / self.sampling_rate

    def _generate_until_now(self) -> None:
        import pylsl

        if self._t0 is None:
            return
        target = self._next_index_at(pylsl.local_clock())
        n = target - self._n_generated
        if n <= 0:
            return
        start = self._n_generated
        eeg = self._model.generate(self._timeline.strengths(start, n))
        timestamps = self._t0 + (start + np.arange(n)) / self.sampling_rate
        aux = self._timing_aux(timestamps)
        for index, source in enumerate(self._sources):
            if source.streaming:
                source._buffer(eeg[index], timestamps, start, aux[index])
        self._n_generated = target


class SimulatedEegSource:
    """One participant of a :class:`CoupledDyadSimulator`, as an :class:`~dyadlab.acquisition.sources.EegSource`.

    ``read()`` returns every sample stamped up to now since the previous read (samples are
    generated lazily for both participants at once), stamped exactly ``t0 + i / sampling_rate``
    on ``local_clock()``.
    """

    def __init__(self, simulator: CoupledDyadSimulator, index: int, label: str) -> None:
        self._sim = simulator
        self._index = index
        self.label = label
        self.sampling_rate: float = simulator.sampling_rate
        self.eeg_channel_names: list[str] = list(simulator.channel_names)
        self.aux_channel_names: list[str] = simulator.timing.channel_names if simulator.timing is not None else []
        self.description: dict[str, str] = {
            "board": "dyadlab-simulator",
            "board_id": "simulator",
            "participant_model": label,
            "seed": str(simulator.seed),
            "numpy_version": np.__version__,
            "scipy_version": scipy.__version__,
        }
        self.prepared = False
        self.streaming = False
        self.released = False
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._dropping = False
        self._pending_markers: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"SimulatedEegSource(participant={self.label!r}, seed={self._sim.seed})"

    def prepare(self) -> None:
        """Nothing to open; also re-opens a released source (as a bridge's reconnection does)."""
        with self._sim._lock:
            if self._sim.closed:
                raise SourceError(
                    f"Simulated source {self.label}: its simulator was closed; create a new CoupledDyadSimulator."
                )
            self.prepared = True
            self.released = False

    def start(self) -> None:
        """Start streaming (the shared simulation clock starts with the first participant)."""
        if not self.prepared:
            raise SourceError(f"Simulated source {self.label}: call prepare() before start().")
        with self._sim._lock:
            if self.streaming:
                return
            self._sim._start_clock()
            self._chunks.clear()
            self.streaming = True

    def read(self) -> SourceChunk:
        """Samples stamped up to now since the previous read; never blocks on I/O."""
        n_channels, n_aux = len(self.eeg_channel_names), len(self.aux_channel_names)
        with self._sim._lock:
            if not self.streaming:
                return SourceChunk.empty(n_channels, n_aux)
            self._sim._generate_until_now()
            chunks, self._chunks = self._chunks, []
            self._dropping = False
        if not chunks:
            return SourceChunk.empty(n_channels, n_aux)
        eeg = np.concatenate([c[0] for c in chunks], axis=1)
        timestamps = np.concatenate([c[1] for c in chunks])
        markers = np.concatenate([c[2] for c in chunks])
        aux = np.concatenate([c[3] for c in chunks], axis=1)
        return SourceChunk(eeg=eeg, aux=aux, timestamps=timestamps, markers=markers)

    def insert_marker(self, code: float) -> None:
        """Tag the next sample (the first stamped after this call) with ``code`` (non-zero)."""
        import pylsl

        value = float(code)
        if value == 0 or not math.isfinite(value):
            raise ValueError(f"Marker codes are finite and non-zero (0 means 'no marker'), got {code!r}.")
        with self._sim._lock:
            if not self.streaming:
                raise SourceError(
                    f"Simulated source {self.label} is not streaming; start() it before inserting markers."
                )
            index = max(self._sim._n_generated, self._sim._next_index_at(pylsl.local_clock()))
            while index in self._pending_markers:  # one marker per sample, like a board: never drop one
                index += 1
            self._pending_markers[index] = value

    def stop(self) -> None:
        """Stop streaming; undelivered samples are dropped, the simulation state is kept."""
        with self._sim._lock:
            self.streaming = False
            self._chunks.clear()
            self._pending_markers.clear()

    def release(self) -> None:
        """Stop and release; idempotent. The simulation goes on for the other participant."""
        self.stop()
        with self._sim._lock:
            self.prepared = False
            self.released = True

    def _buffer(self, eeg: np.ndarray, timestamps: np.ndarray, start: int, aux: np.ndarray) -> None:
        markers = np.zeros(timestamps.size)
        end = start + timestamps.size
        for index in [i for i in self._pending_markers if i < end]:
            markers[max(index, start) - start] = self._pending_markers.pop(index)
        self._chunks.append((eeg, timestamps, markers, aux))
        buffered = sum(chunk[1].size for chunk in self._chunks)
        if buffered > _MAX_UNREAD_S * self.sampling_rate:
            # Nobody reads this participant although it was started: keep memory bounded, like a
            # board's ring buffer, and say so (the dropped samples never reach LSL).
            self._chunks.pop(0)
            if not self._dropping:
                self._dropping = True
                logger.warning(
                    "Simulated source %s: not read for over %.0f s; dropping its oldest unread samples",
                    self.label,
                    _MAX_UNREAD_S,
                )


class MarkerFollower:
    """A thread that hands every marker of the session marker stream to simulated devices.

    Created by :meth:`CoupledDyadSimulator.follow_markers`. ``connected`` is set once the inlet
    is open (markers pushed before that are not seen).

    Parameters
    ----------
    marker_source_id : str
        The session marker stream's ``source_id``.
    handlers : sequence of callables
        Each called in order with every parsed :class:`~dyadlab.acquisition.markers.Marker` and its
        timestamp (``local_clock()``, clock-synchronised); an exception in one is logged and the
        next marker still reaches all of them.
    resolve_timeout_s : float | None
        Give up (log an error) if the stream has not appeared after this long; ``None`` waits.
    poll_s : float
        Longest wait for the next marker (bounds the stop latency).
    """

    def __init__(
        self,
        marker_source_id: str,
        handlers: Sequence[Callable[[Marker, float], None]],
        *,
        resolve_timeout_s: float | None,
        poll_s: float,
    ) -> None:
        self._handlers = list(handlers)
        self.marker_source_id = marker_source_id
        self._resolve_timeout_s = resolve_timeout_s
        self._poll_s = poll_s
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"simulator-markers-{marker_source_id}", daemon=True)
        self.markers_seen = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the inlet; idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _resolve(self) -> Any:
        import pylsl

        # A continuous resolver answers from its background queries at once, so stop() never waits
        # for a blocking resolve (liblsl's resolve_byprop can overrun its timeout by seconds).
        resolver = pylsl.ContinuousResolver(prop="source_id", value=self.marker_source_id)
        started = time.monotonic()
        try:
            while not self._stop.wait(0.1):
                found = resolver.results()
                if found:
                    return found[0]
                waited = time.monotonic() - started
                if self._resolve_timeout_s is not None and waited >= self._resolve_timeout_s:
                    logger.error(
                        "Simulator: marker stream %r not found after %.1f s; the simulation does not follow the "
                        "session. Start the marker outlet (session) first, or check the LSL SessionID.",
                        self.marker_source_id,
                        waited,
                    )
                    return None
            return None
        finally:
            del resolver

    def _run(self) -> None:
        import pylsl
        from pylsl.util import TimeoutError as LslTimeoutError

        info = self._resolve()
        if info is None:
            return
        # Clock-synchronised timestamps: a marker stream on another PC is mapped to our local_clock.
        inlet = pylsl.StreamInlet(info, processing_flags=pylsl.proc_clocksync)
        try:
            inlet.open_stream(timeout=5.0)
            # The first clock-offset measurement blocks (~0.6 s): take it now, not on the first marker.
            try:
                inlet.time_correction(timeout=5.0)
            except LslTimeoutError:
                logger.warning(
                    "Simulator: clock offset to the marker stream not measurable yet (UDP blocked?); "
                    "condition changes may be late"
                )
            self.connected.set()
            logger.info("Simulator follows markers of %s", self.marker_source_id)
            while not self._stop.is_set():
                sample, stamp = inlet.pull_sample(timeout=self._poll_s)
                if sample is not None:
                    self._apply(sample[0], stamp)
        except Exception:
            logger.exception(
                "Simulator marker follower for %s failed; coupling no longer follows markers", self.marker_source_id
            )
        finally:
            inlet.close_stream()

    def _apply(self, text: str, stamp: float) -> None:
        try:
            marker = Marker.from_json(text)
        except (ValueError, TypeError) as error:
            logger.warning("Simulator ignores a marker it cannot parse (%s): %r", error, text[:200])
            return
        self.markers_seen += 1
        for handler in self._handlers:
            try:
                handler(marker, stamp)
            except Exception:
                logger.exception("Simulator: handling the marker %r failed", marker.event)


def simulate_dyad(
    duration_s: float, schedule: Sequence[tuple[str, float]] | None = None, **options: Any
) -> SimulatedDyad:
    """Simulate a dyad offline: ``CoupledDyadSimulator(**options).simulate(duration_s, schedule)``.

    Parameters
    ----------
    duration_s : float
        Length in seconds.
    schedule : sequence of (condition, seconds)
        Consecutive condition blocks from t = 0 (see :meth:`CoupledDyadSimulator.simulate`).
    **options
        Any :class:`CoupledDyadSimulator` keyword (``seed``, ``coupling``, ``channel_names``...).

    Returns
    -------
    SimulatedDyad
        ``a, b, times, conditions = simulate_dyad(...)``.
    """
    return CoupledDyadSimulator(**options).simulate(duration_s, schedule)
