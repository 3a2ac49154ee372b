"""Simulated microphones: two people talking in one room, captured through the real audio path.

A protocol asks for them with ``device: simulator`` under ``microphones: devices:`` (``dyadlab run
--simulate`` simulates every microphone the protocol names, as it does every EEG device).
The audio counterpart of the coupled-dyad simulator. A :class:`VoiceRoom` holds what the two
simulated participants say and when, on ``local_clock()``: a microphone check that loops
("Microphone check, one, two" / "... three, four", one after the other) until the session's
preflight is over, and the scripted conversation of :mod:`dyadlab.acquisition.voices` from each
conversation block's ``block_start`` marker to its ``block_end``. Every microphone hears its own
participant, the partner attenuated and delayed (cross-talk) and its own room noise.

A :class:`SimulatedInputStream` stands in for the PortAudio input stream of
:class:`~dyadlab.acquisition.audio.MicrophoneCapture` and nothing else: it calls the capture's
callback in real time with 20-ms blocks and their capture times on a clock of its own (offset from
``local_clock()`` and drifting by ``drift_ppm``, as a sound card's clock does), so the capture's
settling, clock fit, LSL outlet and FLAC file are the ones a real session uses.

Speaking roles can drive the EEG simulator: given a ``coupling`` callback (the simulator's
:meth:`~dyadlab.acquisition.simulator.CoupledDyadSimulator.set_condition`), each conversation's
speaking states are scheduled as conditions ``<block condition>:<state>`` (``conversation:A-speaks``,
``...:B-speaks``, ``...:overlap``, ``...:silence``: the names the quick-check's speaking-state split
gives its conditions). :meth:`VoiceRoom.ground_truth` says what was played when, for tests and the
session record.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dyadlab.acquisition.audio import InputDevice, VirtualInput
from dyadlab.acquisition.markers import Marker
from dyadlab.acquisition.voices import (
    DEFAULT_SCRIPT,
    SimulatedConversation,
    SpokenTurn,
    simulate_conversation,
    speaking_state_schedule,
)

logger = logging.getLogger(__name__)

#: What the simulated participants say, one after the other, while the preflight listens.
MICROPHONE_CHECK_SCRIPT: tuple[tuple[str, str, float], ...] = (
    ("A", "Microphone check, one, two.", 0.0),
    ("B", "Microphone check, three, four.", 0.3),
)
#: Tasks whose blocks the simulated participants fill with the scripted conversation.
CONVERSATION_TASKS = ("conversation",)
#: A simulated sound card's clock: offset from local_clock() (so the conversion is exercised) and
#: drift (crystals are off by tens of ppm; the capture's clock fit must follow it).
STREAM_CLOCK_OFFSET_S = 1000.0
DEFAULT_DRIFT_PPM = 20.0
_END_MARKERS = ("block_end", "session_end", "abort")


@dataclass
class _Placement:
    """Clean voices placed on the room's timeline from ``start`` (local_clock) to ``end``."""

    voices: dict[str, np.ndarray]
    start: float
    end: float
    loop: bool = False


class VoiceRoom:
    """What two simulated participants say, and what each one's microphone hears.

    Parameters
    ----------
    rate : float
        The microphones' sampling rate (Hz).
    script : sequence of (speaker, text, seconds)
        The conversation (:data:`dyadlab.acquisition.voices.DEFAULT_SCRIPT`); it starts at each
        conversation block's start and stops at its end.
    crosstalk_db, crosstalk_delay_s, noise_dbfs : float
        The room (see :func:`dyadlab.acquisition.voices.simulate_conversation`).
    coupling : callable or None
        ``coupling(condition, at)`` schedules the EEG simulator's condition ``<block
        condition>:<state>`` at each speaking-state change; ``None`` leaves the EEG alone.
    seed : int
        Seed of the room noise.

    Raises
    ------
    dyadlab.acquisition.voices.VoiceSynthesisError
        eSpeak NG is missing: the message says which package to install.
    """

    def __init__(
        self,
        *,
        rate: float = 16000.0,
        script: Sequence[tuple[str, str, float]] = DEFAULT_SCRIPT,
        crosstalk_db: float = -12.0,
        crosstalk_delay_s: float = 0.002,
        noise_dbfs: float = -55.0,
        coupling: Callable[[str, float], Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.rate = float(rate)
        room = functools.partial(
            simulate_conversation,
            rate=self.rate,
            crosstalk_db=crosstalk_db,
            crosstalk_delay_s=crosstalk_delay_s,
            seed=seed,
        )
        self.conversation: SimulatedConversation = room(script)
        self.labels: tuple[str, str] = self.conversation.labels
        check = room(MICROPHONE_CHECK_SCRIPT, lead_in_s=0.2, tail_s=0.3)
        if set(check.labels) != set(self.labels):
            raise ValueError(f"The script's speakers {self.labels} are not the microphone check's {check.labels}.")
        self._check_voices = check.voices
        self._check_turns = check.turns
        self.crosstalk_db = float(crosstalk_db)
        self._leak = 10 ** (crosstalk_db / 20)
        self._delay = round(crosstalk_delay_s * self.rate)
        self._noise_rms = 10 ** (noise_dbfs / 20)
        self.noise_dbfs = float(noise_dbfs)
        self._noise = {label: np.random.default_rng([seed, i]) for i, label in enumerate(self.labels)}
        self._coupling = coupling
        self._lock = threading.Lock()
        self._check: _Placement | None = None
        self._played: list[tuple[_Placement, Marker]] = []

    # -- what is said when -----------------------------------------------------------------
    def drive_coupling(self, coupling: Callable[[str, float], Any] | None) -> None:
        """From the next conversation on, schedule its speaking states with ``coupling(condition, at)``."""
        self._coupling = coupling

    def start_microphone_check(self, at: float) -> None:
        """Loop the microphone check from ``at`` (local_clock) until :meth:`end_microphone_check`."""
        with self._lock:
            if self._check is None:
                self._check = _Placement(self._check_voices, float(at), math.inf, loop=True)

    def end_microphone_check(self, at: float) -> None:
        """Stop the check at ``at``; a line being spoken then is finished, no other begins."""
        with self._lock:
            check = self._check
            if check is None or check.end < math.inf:
                return
            period = next(iter(check.voices.values())).size / self.rate
            phase = (at - check.start) % period if at >= check.start else -1.0
            speaking = [turn.offset_s for turn in self._check_turns if turn.onset_s <= phase < turn.offset_s]
            check.end = at + (max(speaking) - phase if speaking else 0.0)

    def on_marker(self, marker: Marker, stamp: float) -> None:
        """Follow the session: a conversation block starts the script, its end stops it.

        Any marker also ends the microphone check (the session has begun).
        """
        self.end_microphone_check(stamp)
        with self._lock:
            playing = [placement for placement, _ in self._played if placement.end == math.inf]
            if marker.event in _END_MARKERS or (marker.event == "block_start" and playing):
                for placement in playing:
                    placement.end = max(placement.start, stamp)
            if marker.event != "block_start" or marker.task not in CONVERSATION_TASKS:
                return
            self._played.append((_Placement(self.conversation.voices, float(stamp), math.inf), marker))
        logger.info("Simulated voices: the conversation starts at %.3f (block %s)", stamp, marker.block)
        if self._coupling is not None:
            # In time order: the simulator drops a change scheduled after a newer one.
            at = float(stamp)
            for condition, seconds in speaking_state_schedule(
                self.conversation.turns, self.labels, self.conversation.duration_s, prefix=f"{marker.condition}:"
            ):
                self._coupling(condition, at)
                at += seconds

    # -- what the microphones hear ---------------------------------------------------------
    def microphone(
        self,
        label: str,
        channel: int = 1,
        *,
        drift_ppm: float = DEFAULT_DRIFT_PPM,
        clock_offset_s: float = STREAM_CLOCK_OFFSET_S,
    ) -> VirtualInput:
        """``label``'s microphone, for :func:`dyadlab.acquisition.audio.open_microphones`.

        ``drift_ppm`` and ``clock_offset_s``: the simulated sound card's clock (:class:`SimulatedInputStream`).
        """
        if label not in self.labels:
            raise ValueError(f"No simulated participant {label!r}; the room has {list(self.labels)}.")
        device = InputDevice(
            index=-1,
            name=f"simulated microphone {label}",
            host_api="dyadlab simulator",
            max_input_channels=channel,
            default_sample_rate=self.rate,
        )
        return VirtualInput(
            device,
            functools.partial(SimulatedInputStream, self, label, drift_ppm=drift_ppm, clock_offset_s=clock_offset_s),
        )

    def render(self, label: str, first_time: float, n: int) -> np.ndarray:
        """What ``label``'s microphone hears for ``n`` samples from ``first_time`` (local_clock).

        Returns
        -------
        np.ndarray, shape (n,), float32
            Own voice, the partner's attenuated and delayed, and room noise (full scale ±1).
        """
        partner = self.labels[1] if label == self.labels[0] else self.labels[0]
        out = self._noise[label].normal(0.0, self._noise_rms, n)
        with self._lock:
            placements = ([] if self._check is None else [self._check]) + [p for p, _ in self._played]
            for placement in placements:
                offset = round((first_time - placement.start) * self.rate)
                stop = round((placement.end - placement.start) * self.rate) if placement.end < math.inf else None
                out += _segment(placement, label, offset, n, stop)
                out += self._leak * _segment(placement, partner, offset - self._delay, n, stop)
        return out.astype(np.float32)

    # -- the record ------------------------------------------------------------------------
    def ground_truth(self) -> dict[str, Any]:
        """What was played when (local_clock), for the session record and tests (JSON-serialisable).

        ``conversations``: per conversation block its start, end (``None`` while playing) and the
        script's turns that began before the end, their offsets cut at it.
        """
        with self._lock:
            check = self._check
            played = [(p.start, p.end, m) for p, m in self._played]
        conversations = []
        for start, end, marker in played:
            turns = [_shifted(turn, start, end) for turn in self.conversation.turns]
            conversations.append(
                {
                    "block": marker.block,
                    "condition": marker.condition,
                    "start": start,
                    "end": None if end == math.inf else end,
                    "turns": [t for t in turns if t is not None],
                }
            )
        return {
            "rate": self.rate,
            "crosstalk_db": self.crosstalk_db,
            "crosstalk_delay_s": self._delay / self.rate,
            "noise_dbfs": self.noise_dbfs,
            "microphone_check": None
            if check is None
            else {"start": check.start, "end": None if check.end == math.inf else check.end},
            "conversations": conversations,
            "speaking_state_coupling": self._coupling is not None,
        }


def _segment(placement: _Placement, label: str, offset: int, n: int, stop: int | None) -> np.ndarray:
    """Samples ``offset .. offset + n`` of a placed voice (zero outside it and from ``stop`` on)."""
    voice = placement.voices[label]
    index = np.arange(offset, offset + n)
    valid = index >= 0
    if stop is not None:
        valid &= index < stop
    if placement.loop:
        index = index % voice.size
    else:
        valid &= index < voice.size
    out = np.zeros(n)
    out[valid] = voice[index[valid]]
    return out


def _shifted(turn: SpokenTurn, start: float, end: float) -> dict[str, Any] | None:
    onset, offset = start + turn.onset_s, min(start + turn.offset_s, end)
    if onset >= end:
        return None
    return {"speaker": turn.speaker, "text": turn.text, "onset": onset, "offset": offset}


@dataclass(frozen=True)
class _TimeInfo:
    inputBufferAdcTime: float  # PortAudio's name, as sounddevice passes it


@dataclass(frozen=True)
class _CallbackFlags:
    input_overflow: bool = False


class SimulatedInputStream:
    """A :class:`VoiceRoom` microphone in place of ``sounddevice.InputStream`` (the same members
    :class:`~dyadlab.acquisition.audio.MicrophoneCapture` uses).

    A thread hands ``callback(indata, frames, time_info, status)`` one block of ``blocksize``
    samples as soon as the block's last sample is "captured", with ``inputBufferAdcTime`` on the
    stream's own clock :attr:`time` (``local_clock() + clock_offset_s``); the samples come at
    ``samplerate * (1 + drift_ppm * 1e-6)`` per second of ``local_clock()``. A late thread (a busy
    machine) delivers the blocks it owes in a row, as a sound card's buffer does.

    Parameters
    ----------
    room : VoiceRoom
    label : str
        Whose microphone.
    channels : int
        Columns of ``indata``; the microphone is the last one (the capture opens up to its channel).
    samplerate : float
    blocksize : int
    callback : callable
    drift_ppm, clock_offset_s : float
        The simulated sound card's clock.
    """

    def __init__(
        self,
        room: VoiceRoom,
        label: str,
        *,
        channels: int,
        samplerate: float,
        blocksize: int,
        callback: Callable[[np.ndarray, int, Any, Any], None],
        drift_ppm: float = DEFAULT_DRIFT_PPM,
        clock_offset_s: float = STREAM_CLOCK_OFFSET_S,
    ) -> None:
        self.room = room
        self.label = label
        self.channels = int(channels)
        self.samplerate = float(samplerate)
        self.blocksize = int(blocksize)
        self.latency = self.blocksize / self.samplerate
        self._callback = callback
        self._true_rate = self.samplerate * (1 + drift_ppm * 1e-6)
        self._clock_offset = float(clock_offset_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.first_sample_time: float | None = None  # local_clock of sample 0 (the truth, for tests)

    @property
    def time(self) -> float:
        """The stream clock (as ``sounddevice.InputStream.time``)."""
        from pylsl import local_clock

        return local_clock() + self._clock_offset

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        from pylsl import local_clock

        if self.active:
            return
        self._stop.clear()
        self.first_sample_time = local_clock()
        self._thread = threading.Thread(target=self._run, name=f"simulated-microphone-{self.label}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from pylsl import local_clock

        assert self.first_sample_time is not None
        t0, delivered = self.first_sample_time, 0
        while not self._stop.is_set():
            first = t0 + delivered / self._true_rate
            due = first + self.blocksize / self._true_rate
            wait = due - local_clock()
            if wait > 0 and self._stop.wait(wait):
                return
            samples = self.room.render(self.label, first, self.blocksize)
            indata = np.zeros((self.blocksize, self.channels), dtype=np.float32)
            indata[:, -1] = samples
            try:
                self._callback(indata, self.blocksize, _TimeInfo(first + self._clock_offset), _CallbackFlags())
            except Exception:
                logger.exception("the callback of %s's simulated microphone failed", self.label)
                return
            delivered += self.blocksize

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    abort = stop

    def close(self) -> None:
        self.stop()
