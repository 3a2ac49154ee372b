"""Speech of two participants detected live, while their microphones' audio arrives.

:class:`LiveSpeechDetector` takes both microphones' chunks with their LSL timestamps, cuts them
into the offline detector's frames on one grid of LSL time and decides every frame with the
offline detector's own functions (:mod:`dyadlab.synchrony.speech`, steps 1-3 of its module
docstring: WebRTC's detector, the noise floor, the cross-talk rule with its hysteresis, bridged
holes and the shortest speech). It reports each participant's speech on- and offsets
(:class:`SpeechEvent`), stamped with the LSL time of the frame where the speech began (its first
frame's start) or ended (its last frame's end), not the time they were decided. The LSL process
that publishes them is :mod:`dyadlab.protocols.live_speech`.

What differs from the offline detector, and why:

* **Statistics from the past.** Offline, each microphone's noise floor and cross-talk leak are
  estimated over the whole recording. Live, they are estimated once per :data:`STATS_STEP_S` of
  audio from the audio heard before (the last ``stats_window_s`` seconds, leaving out frames a
  microphone has no audio for), and every frame is decided with the estimate made at the start
  of its second; the first second's frames wait for the first second of audio. The events
  therefore do not depend on how the audio is chunked, and on a recording whose levels do not
  change they converge to the offline ones (``tests/synchrony/test_live_speech.py`` compares
  them on a simulated conversation).
* **Leak before it is measured.** A microphone's leak is measured once the partner has spoken
  alone for half a second. Until then it is taken as ``prior_leak_db`` (0 dB): a frame is the
  wearer's speech only where their microphone is ``dominance_db`` louder than the partner's.
  The partner's voice is then not counted, but both speaking at once is missed in that time.
* **Delay.** An event is reported once it is certain: an onset when the speech has lasted
  ``min_speech_s`` and its hysteresis has entered speech (0.1 s after the onset frame with the
  default settings), an offset when ``bridge_s`` of silence followed it (0.2 s), plus the time
  the audio takes to arrive. Each event carries its delay (:attr:`SpeechEvent.delay_s`).
* **A microphone that stops.** When one stream's newest audio lags the other's by more than
  ``stall_s``, the frames it misses are lost: no speech on that microphone, and the other one's
  frames are decided without the cross-talk rule (there is no partner level to compare with).
  Audio that arrives later for frames already decided is not used.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dyadlab.synchrony.speech import (
    VAD_RATES,
    SpeechError,
    SpeechSettings,
    clean_runs,
    crosstalk_tests,
    estimate_leak_db,
    frame_starts,
    hysteresis,
    levels_and_voicing,
    locate_frames,
    mask_runs,
    noise_floor,
)

logger = logging.getLogger(__name__)

SPEECH_ON = "speech_on"
SPEECH_OFF = "speech_off"
#: Seconds of audio between two estimates of the noise floors and leaks.
STATS_STEP_S = 1.0
#: Default span of past audio the noise floors and leaks are estimated from (seconds).
STATS_WINDOW_S = 600.0
#: Default lag after which a microphone's missing audio counts as lost (seconds).
STALL_S = 5.0
#: Default leak assumed before it is measured (dB): the partner's voice as loud as in their own microphone.
PRIOR_LEAK_DB = 0.0


@dataclass(frozen=True)
class SpeechEvent:
    """One participant's speech starting or ending.

    Attributes
    ----------
    event : str
        :data:`SPEECH_ON` or :data:`SPEECH_OFF`.
    participant : str
        The participant's label.
    time : float
        LSL time of the speech's first frame's start (on) or its last frame's end (off).
    decided_at : float
        LSL time of the end of the newest audio analysed when the event was decided (the audio's
        own time, not the moment of the computation).
    """

    event: str
    participant: str
    time: float
    decided_at: float

    @property
    def delay_s(self) -> float:
        """How much later than :attr:`time` the audio that decided the event ends."""
        return self.decided_at - self.time

    def to_json(self) -> str:
        """The event as the live speech stream's JSON string (``docs/speech.md``)."""
        payload = {"event": self.event, "participant": self.participant, "delay_s": round(self.delay_s, 3)}
        return json.dumps(payload, separators=(",", ":"))


class _MicrophoneInput:
    """One microphone's audio not yet framed, its WebRTC detector, and its framing."""

    def __init__(self, label: str, rate: float, settings: SpeechSettings) -> None:
        import webrtcvad

        if round(rate) not in VAD_RATES or abs(rate - round(rate)) > 1e-6:
            raise SpeechError(
                f"Microphone {label} runs at {rate:g} Hz; live speech detection needs one of "
                f"{', '.join(str(r) for r in VAD_RATES)} Hz (set microphones: sample_rate: 16000 in the protocol)."
            )
        self.label = label
        self.rate = float(round(rate))
        self.settings = settings
        self.frame = int(round(settings.frame_s * self.rate))
        self._vad = webrtcvad.Vad(settings.aggressiveness)
        self.samples = np.empty(0, np.float32)
        #: Timestamps held at their running maximum (as the offline framing does).
        self.stamps = np.empty(0, np.float64)
        self.first_time: float | None = None
        #: The newest timestamp received (its samples may be framed and forgotten already).
        self.newest: float | None = None

    def add(self, samples: np.ndarray, timestamps: np.ndarray) -> None:
        """Keep a chunk (timestamps that step back are held at the newest before them)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if samples.size != timestamps.size:
            raise SpeechError(
                f"Microphone {self.label}: {samples.size} samples but {timestamps.size} timestamps in one chunk."
            )
        if not samples.size:
            return
        if self.first_time is None:
            self.first_time = float(timestamps[0])
        before = self.newest if self.newest is not None else -np.inf
        timestamps = np.maximum.accumulate(np.concatenate(([before], timestamps)))[1:]
        self.samples = np.concatenate((self.samples, samples))
        self.stamps = np.concatenate((self.stamps, timestamps))
        self.newest = float(timestamps[-1])

    def ready(self, starts: np.ndarray) -> int:
        """How many of the frames starting at ``starts`` (ascending) have all their samples here:
        a frame's first sample is the first at or after its start (less half a sample), and the
        frame needs that sample and the ``frame - 1`` after it."""
        if self.stamps.size < self.frame:
            return 0
        return int(np.searchsorted(starts - 0.5 / self.rate, self.stamps[self.stamps.size - self.frame], side="right"))

    def analyse(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Levels and the detector's verdicts (False on lost audio) of frames that are :meth:`ready`."""
        first, intact = locate_frames(self.stamps, starts, self.rate, self.settings)
        levels, voiced = levels_and_voicing(self.samples, first, self.frame, self._vad, int(self.rate))
        return levels, voiced & intact

    def drop_before(self, time: float) -> None:
        """Forget the samples no frame starting at ``time`` or later can use."""
        keep = int(np.searchsorted(self.stamps, time - 0.5 / self.rate))
        if keep:
            self.samples, self.stamps = self.samples[keep:], self.stamps[keep:]


class _FrameLog:
    """Per-frame columns from absolute frame index :attr:`base` on; older frames can be dropped."""

    def __init__(self, columns: Mapping[str, type]) -> None:
        self.base = 0
        self.size = 0
        self._data: dict[str, np.ndarray] = {name: np.zeros(1024, dtype) for name, dtype in columns.items()}

    @property
    def stop(self) -> int:
        """One past the newest frame's index."""
        return self.base + self.size

    def extend(self, values: Mapping[str, np.ndarray]) -> None:
        count = len(next(iter(values.values())))
        capacity = len(next(iter(self._data.values())))
        if self.size + count > capacity:
            grown = max(2 * capacity, self.size + count)
            for name, column in self._data.items():
                bigger = np.zeros(grown, column.dtype)
                bigger[: self.size] = column[: self.size]
                self._data[name] = bigger
        for name, column in values.items():
            self._data[name][self.size : self.size + count] = column
        self.size += count

    def window(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Frames ``lo`` to ``hi`` (absolute indices) of a column, as a writable view."""
        if lo < self.base or hi > self.stop:
            raise IndexError(f"frames {lo}-{hi} asked, frames {self.base}-{self.stop} held")
        return self._data[name][lo - self.base : hi - self.base]

    def drop_before(self, index: int) -> None:
        """Forget the frames before ``index`` (once they are at least half of those held)."""
        drop = min(max(index - self.base, 0), self.size)
        if drop and 2 * drop >= self.size:  # amortised: each frame is moved at most once on average
            for column in self._data.values():
                column[: self.size - drop] = column[drop : self.size].copy()
            self.base += drop
            self.size -= drop


class LiveSpeechDetector:
    """Each participant's speech on- and offsets from their microphones' chunks, as they arrive.

    Parameters
    ----------
    rates : mapping of str to float
        The two participants' labels and their microphones' sampling rates (8, 16, 32 or 48 kHz:
        the WebRTC detector's rates; resampling chunk by chunk would shift the frames).
    settings : SpeechSettings, optional
        The offline detector's settings (the same defaults).
    stats_window_s : float
        Seconds of past audio the noise floors and leaks are estimated from.
    stall_s : float
        How far one microphone's newest audio may lag the other's before its missing frames are lost.
    prior_leak_db : float
        Leak assumed before it is measured (module docstring).

    Raises
    ------
    SpeechError
        Not two distinct labels, or a rate the detector cannot use.
    """

    def __init__(
        self,
        rates: Mapping[str, float],
        settings: SpeechSettings | None = None,
        *,
        stats_window_s: float = STATS_WINDOW_S,
        stall_s: float = STALL_S,
        prior_leak_db: float = PRIOR_LEAK_DB,
    ) -> None:
        self.settings = settings or SpeechSettings()
        labels = tuple(rates)
        if len(labels) != 2:
            raise SpeechError(f"Live speech detection needs two participants' microphones, got {list(labels)}.")
        self.labels: tuple[str, str] = (labels[0], labels[1])
        if not stats_window_s >= STATS_STEP_S:
            raise SpeechError(f"stats_window_s must be at least {STATS_STEP_S:g} s, got {stats_window_s}.")
        if not stall_s > 0:
            raise SpeechError(f"stall_s must be positive, got {stall_s}.")
        self.stall_s = float(stall_s)
        self.prior_leak_db = float(prior_leak_db)
        self._inputs = {label: _MicrophoneInput(label, rate, self.settings) for label, rate in rates.items()}
        self._stats_step = int(round(STATS_STEP_S / self.settings.frame_s))
        self._stats_window = int(round(stats_window_s / self.settings.frame_s))
        self._bridge = int(round(self.settings.bridge_s / self.settings.frame_s))
        columns: dict[str, type] = {"lost": bool}
        for label in self.labels:
            columns |= {f"level_{label}": np.float64, f"voiced_{label}": bool}
            columns |= {f"{test}_{label}": bool for test in ("candidate", "enter", "stay", "speech")}
        self._log = _FrameLog(columns)
        #: LSL time of frame 0's start (the later of the two microphones' first samples).
        self.start: float | None = None
        self._decided = 0  # frames run through the cross-talk rule (the rest are only analysed)
        self._stats_block = -1
        #: The latest estimates (dB): each microphone's noise floor and leak (NaN until measured).
        self.floor_db: dict[str, float] = dict.fromkeys(self.labels, math.nan)
        self.leak_db: dict[str, float] = dict.fromkeys(self.labels, math.nan)
        # Per participant: where the next hysteresis window starts (no stay-run crosses it), where the
        # next segment window starts (speech before it is reported and at least bridge_s away), and the
        # onset frame of speech reported on but not yet off.
        self._hysteresis_from = dict.fromkeys(self.labels, 0)
        self._segments_from = dict.fromkeys(self.labels, 0)
        self._open: dict[str, int | None] = dict.fromkeys(self.labels, None)

    @property
    def frames_analysed(self) -> int:
        """Frames on the grid whose audio has been analysed."""
        return self._log.stop

    @property
    def analysed_until(self) -> float | None:
        """LSL time of the end of the newest frame analysed (``None`` before the grid starts)."""
        return None if self.start is None else self._time(self._log.stop)

    def push(self, label: str, samples: np.ndarray, timestamps: np.ndarray) -> list[SpeechEvent]:
        """Add one microphone's chunk (samples, full scale ±1, and their LSL timestamps); return the
        events it completes, in time order."""
        if label not in self._inputs:
            raise SpeechError(f"No microphone {label!r}: this detector listens to {', '.join(self.labels)}.")
        self._inputs[label].add(samples, timestamps)
        return self._advance(final=False)

    def finish(self) -> list[SpeechEvent]:
        """The audio has ended: decide every frame both microphones cover and close open speech."""
        return self._advance(final=True)

    # -- stages --------------------------------------------------------------------------------

    def _advance(self, *, final: bool) -> list[SpeechEvent]:
        if self.start is None and not self._set_start():
            return []
        self._analyse_ready_frames()
        self._decide(final=final)
        events = [event for label in self.labels for event in self._report(label, final=final)]
        self._forget()
        return sorted(events, key=lambda event: event.time)

    def _set_start(self) -> bool:
        """Frame 0 starts at the later first sample; a microphone silent for ``stall_s`` is not waited for."""
        firsts = [mic.first_time for mic in self._inputs.values() if mic.first_time is not None]
        if len(firsts) == 2:
            self.start = max(firsts)
        elif firsts:
            newest = max(mic.newest for mic in self._inputs.values() if mic.newest is not None)
            if newest - firsts[0] > self.stall_s:
                self.start = firsts[0]
        return self.start is not None

    def _analyse_ready_frames(self) -> None:
        """Level and voicing of every frame both microphones' audio covers, or that a stalled microphone missed."""
        assert self.start is not None
        frame_s = self.settings.frame_s
        newest = max(mic.newest for mic in self._inputs.values() if mic.newest is not None)
        first = self._log.stop
        count = int(math.floor((newest - self.start) / frame_s)) + 1 - first
        if count <= 0:
            return
        starts = frame_starts(self.start, np.arange(first, first + count), self.settings)
        ready = {label: mic.ready(starts) for label, mic in self._inputs.items()}
        # Frames that end more than stall_s before the newest audio are decided, with or without audio.
        stalled = int(np.searchsorted(starts + frame_s, newest - self.stall_s, side="right"))
        n_new = max(min(ready.values()), stalled)
        if n_new <= 0:
            return
        values: dict[str, np.ndarray] = {"lost": np.zeros(n_new, bool)}
        for label, mic in self._inputs.items():
            have = min(ready[label], n_new)
            levels = np.full(n_new, -np.inf)
            voiced = np.zeros(n_new, bool)
            if have:
                levels[:have], voiced[:have] = mic.analyse(starts[:have])
            values["lost"][have:] = True
            values[f"level_{label}"], values[f"voiced_{label}"] = levels, voiced
            mic.drop_before(self._time(first + n_new))
        self._log.extend(values)

    def _estimate(self, lo: int, hi: int) -> None:
        """Noise floors and leaks from frames ``lo`` to ``hi`` where both microphones have audio."""
        heard = ~self._log.window("lost", lo, hi)
        levels = {label: self._log.window(f"level_{label}", lo, hi)[heard] for label in self.labels}
        (a, b) = self.labels
        for own, partner in ((a, b), (b, a)):
            self.floor_db[own] = noise_floor(levels[own]) if levels[own].size else math.nan
            self.leak_db[own] = estimate_leak_db(levels[own], levels[partner]) if levels[own].size else math.nan

    def _decide(self, *, final: bool) -> None:
        """The cross-talk rule for analysed frames, each with the estimate of its second's start."""
        step = self._stats_step
        while self._decided < self._log.stop:
            block = self._decided // step
            if block != self._stats_block:
                if block == 0:  # the first second is decided with its own statistics
                    if self._log.stop < step and not final:
                        return
                    self._estimate(0, min(step, self._log.stop))
                else:
                    self._estimate(max(0, block * step - self._stats_window), block * step)
                self._stats_block = block
            lo, hi = self._decided, min(self._log.stop, (block + 1) * step)
            (a, b) = self.labels
            for own, partner in ((a, b), (b, a)):
                leak = self.leak_db[own] if not math.isnan(self.leak_db[own]) else self.prior_leak_db
                with np.errstate(invalid="ignore"):  # both microphones lost: -inf - -inf, no speech
                    tests = crosstalk_tests(
                        self._log.window(f"level_{own}", lo, hi),
                        self._log.window(f"level_{partner}", lo, hi),
                        self._log.window(f"voiced_{own}", lo, hi),
                        self.floor_db[own],
                        leak,
                        self.settings,
                    )
                for name, values in zip(("candidate", "enter", "stay"), tests):
                    self._log.window(f"{name}_{own}", lo, hi)[:] = values
            self._decided = hi

    def _report(self, label: str, *, final: bool) -> list[SpeechEvent]:
        """Settle ``label``'s speech as far as the decided frames allow and report what became certain."""
        assert self.start is not None
        settings, log, stop = self.settings, self._log, self._decided
        # Hysteresis on the frames from the last one outside a stay-run: a trailing stay-run that has not
        # entered speech yet may still do so, so speech is final only up to its start (or all, at the end).
        lo = self._hysteresis_from[label]
        stay = log.window(f"stay_{label}", lo, stop)
        dominant = hysteresis(log.window(f"enter_{label}", lo, stop), stay)
        final_stop = stop
        outside = np.flatnonzero(~stay)
        if not final and stay.size and stay[-1] and not dominant[-1]:
            final_stop = lo + (int(outside[-1]) + 1 if outside.size else 0)
        settled = final_stop - lo
        log.window(f"speech_{label}", lo, final_stop)[:] = (log.window(f"candidate_{label}", lo, stop) & dominant)[
            :settled
        ]
        outside = outside[outside < settled]
        if outside.size:
            self._hysteresis_from[label] = lo + int(outside[-1]) + 1
        # Segments (bridged holes, shortest speech) on the frames from the last point where no speech
        # was within bridge_s before: a segment whose end has bridge_s of settled silence after it is over.
        lo = self._segments_from[label]
        raw = log.window(f"speech_{label}", lo, final_stop)
        segments = mask_runs(clean_runs(raw, settings))
        decided_at = self._time(log.stop)
        events = []
        for first, end in segments:
            if self._open[label] != lo + first:
                events.append(SpeechEvent(SPEECH_ON, label, self._time(lo + first), decided_at))
                self._open[label] = lo + first
            if final or lo + end + self._bridge <= final_stop:
                events.append(SpeechEvent(SPEECH_OFF, label, self._time(lo + end), decided_at))
                self._open[label] = None
        spoken = np.concatenate(([0], np.cumsum(raw)))
        quiet = np.flatnonzero(spoken[self._bridge :] == spoken[: max(spoken.size - self._bridge, 0)])
        if quiet.size:
            self._segments_from[label] = lo + int(quiet[-1]) + self._bridge
        return events

    def _time(self, frame: int) -> float:
        assert self.start is not None
        return float(frame_starts(self.start, np.array([frame]), self.settings)[0])

    def _forget(self) -> None:
        """Drop the frames no later decision needs (statistics, hysteresis and segment windows)."""
        keep = min(
            min(self._hysteresis_from.values()),
            min(self._segments_from.values()),
            self._decided - self._stats_window - self._stats_step,
        )
        self._log.drop_before(keep)
