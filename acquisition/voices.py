"""Simulated voices: a scripted two-person conversation with known turns, as two microphones hear it.

Each line of a script is spoken by one participant. Speech is synthesised with eSpeak NG (the
Debian package ``espeak-ng``, run as a subprocess that writes a WAV file; no model download),
resampled to the microphones' rate and placed on a timeline. Every microphone records its own
participant's voice, the partner's voice attenuated and delayed (cross-talk: both people sit in one
room, each with a microphone close to their own mouth) and room noise. The script's ground truth,
each utterance's speech on- and offset, comes from the clean synthesised signal, so a voice
activity detector (:mod:`dyadlab.synchrony.speech`) can be scored against it.

:func:`speaking_state_schedule` turns the ground truth into a condition schedule for the
coupled-dyad simulator (:meth:`dyadlab.acquisition.simulator.CoupledDyadSimulator.simulate`), so
that simulated EEG coupling can follow who speaks; :func:`speaker_led_component` adds a rhythm the
listener's EEG follows a known time after the speaker's, for the speaker-to-listener lag analysis.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

from dyadlab import DyadlabError

logger = logging.getLogger(__name__)

#: The two participants' eSpeak NG voices (language + variant) and pitch (0-99): distinct speakers.
DEFAULT_VOICES: dict[str, tuple[str, int]] = {"A": ("en-us+m3", 40), "B": ("en-gb+f3", 65)}
#: Words per minute of the synthesised speech (eSpeak NG's default is 175).
SPEECH_RATE_WPM = 165
#: A 10-ms frame of the clean voice is speech when its RMS is within this many dB of the utterance's
#: loudest frame: eSpeak NG's stop closures and the tails of its words lie 40-80 dB below the peak.
TRUTH_FLOOR_DB = -35.0
TRUTH_FRAME_S = 0.010

#: An 80-second scripted conversation: (speaker, text, seconds from the end of the speech so far to
#: the start of this line; negative: it starts before that speech ends, an overlap). ``Mm-hm.`` and
#: ``Right.`` are backchannels spoken inside the partner's line.
DEFAULT_SCRIPT: tuple[tuple[str, str, float], ...] = (
    ("A", "Hi, thanks for coming in today. Did you find the lab without any trouble?", 0.0),
    ("B", "Yes, it was easy. I took the bus and then walked across the park.", 0.6),
    ("A", "Good. The park is lovely this time of year, with all the leaves turning.", 0.4),
    ("B", "It really is. I stopped for a minute to watch the ducks on the pond.", 0.8),
    ("A", "Mm-hm.", -0.9),
    ("A", "So, shall we talk about the last holiday you took?", 1.2),
    ("B", "Sure. Last summer we went to the coast for a week, and it rained almost every day.", 0.3),
    ("A", "Oh no, that sounds disappointing.", 0.5),
    ("B", "Not really. We played cards, read books, and cooked long dinners together.", 0.2),
    ("A", "That sounds like a good way to spend a rainy week.", -0.4),
    ("B", "It was. What about you, where did you go?", 1.0),
    ("A", "I stayed at home and painted the kitchen. It took far longer than I expected.", 0.7),
    ("B", "Right.", -1.1),
    ("A", "First the wall needed filling, then two coats of primer, then the colour itself.", 0.9),
    ("B", "What colour did you choose in the end?", 0.5),
    ("A", "A pale green. My partner wanted yellow, so we argued about it for a week.", 0.6),
    ("B", "Green is calming, I think you made the right choice.", 1.5),
    ("A", "Thank you. Now tell me, do you cook often at home?", 0.4),
    ("B", "Almost every evening. I like trying recipes from different countries.", 0.6),
    ("A", "What was the last thing you made?", 0.3),
    ("B", "A lentil soup with cumin and lemon. It was simple but very good.", 0.8),
)


class VoiceSynthesisError(DyadlabError, RuntimeError):
    """Speech cannot be synthesised (eSpeak NG missing or failing); the message says what to install."""


@dataclass(frozen=True)
class SpokenTurn:
    """One scripted utterance as it lies on the conversation's timeline (the ground truth).

    Attributes
    ----------
    speaker : str
        The participant label who speaks it.
    text : str
        What is said.
    onset_s, offset_s : float
        First and last moment of speech, seconds from the recording's first sample (the clean voice's
        10-ms frames within :data:`TRUTH_FLOOR_DB` of the utterance's loudest frame).
    """

    speaker: str
    text: str
    onset_s: float
    offset_s: float

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


@dataclass
class SimulatedConversation:
    """Two microphones' recordings of a scripted conversation and what was said when.

    Attributes
    ----------
    rate : float
        Sampling rate of every signal (Hz).
    microphones : dict of str to np.ndarray, shape (n_samples,), float32
        What each participant's microphone records: own voice, the partner's voice attenuated by
        ``crosstalk_db`` and delayed by ``crosstalk_delay_s``, and room noise; full scale ±1.
    voices : dict of str to np.ndarray, shape (n_samples,), float32
        Each participant's clean voice at their own microphone (no cross-talk, no noise).
    turns : list of SpokenTurn
        The script's utterances in order of onset.
    crosstalk_db, crosstalk_delay_s, noise_dbfs : float
        The room: partner's voice level in a microphone relative to the partner's own microphone,
        its delay, and the room noise's RMS level (dB re full scale).
    """

    rate: float
    microphones: dict[str, np.ndarray]
    voices: dict[str, np.ndarray]
    turns: list[SpokenTurn]
    crosstalk_db: float
    crosstalk_delay_s: float
    noise_dbfs: float

    @property
    def duration_s(self) -> float:
        return next(iter(self.microphones.values())).size / self.rate

    @property
    def labels(self) -> tuple[str, str]:
        first, second = self.microphones
        return first, second

    def timestamps(self, start: float = 0.0) -> np.ndarray:
        """Every sample's time in seconds, ``start`` for the first sample (e.g. its LSL time)."""
        return start + np.arange(next(iter(self.microphones.values())).size) / self.rate

    def tiled(self, repeats: int) -> SimulatedConversation:
        """The conversation ``repeats`` times in a row (for long-recording benchmarks)."""
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}.")
        length = self.duration_s
        return SimulatedConversation(
            rate=self.rate,
            microphones={label: np.tile(x, repeats) for label, x in self.microphones.items()},
            voices={label: np.tile(x, repeats) for label, x in self.voices.items()},
            turns=[
                SpokenTurn(t.speaker, t.text, t.onset_s + k * length, t.offset_s + k * length)
                for k in range(repeats)
                for t in self.turns
            ],
            crosstalk_db=self.crosstalk_db,
            crosstalk_delay_s=self.crosstalk_delay_s,
            noise_dbfs=self.noise_dbfs,
        )


def espeak_available() -> bool:
    """Whether eSpeak NG can be run (``espeak-ng`` on the PATH)."""
    return shutil.which("espeak-ng") is not None


def synthesise(text: str, voice: str = "en-us", *, pitch: int = 50, rate: float = 16000.0) -> np.ndarray:
    """Speak ``text`` with eSpeak NG and return it at ``rate`` Hz, float32, peak 1.

    Raises
    ------
    VoiceSynthesisError
        eSpeak NG is not installed (``apt-get install espeak-ng``) or fails on the text.
    """
    import soundfile

    executable = shutil.which("espeak-ng")
    if executable is None:
        raise VoiceSynthesisError(
            "Simulated voices need eSpeak NG: install the Debian package espeak-ng "
            "(sudo apt-get install espeak-ng; `make demo` and .ci/system-deps.sh install it)."
        )
    with tempfile.TemporaryDirectory(prefix="dyadlab-voice-") as folder:
        wav = Path(folder) / "speech.wav"
        command = [executable, "-w", str(wav), "-v", voice, "-p", str(int(pitch)), "-s", str(SPEECH_RATE_WPM), text]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or not wav.is_file():
            raise VoiceSynthesisError(
                f"espeak-ng failed (exit {done.returncode}) on voice {voice!r}: {done.stderr.strip()[:300]}. "
                "List the installed voices with `espeak-ng --voices=en`."
            )
        speech, native_rate = soundfile.read(wav, dtype="float64", always_2d=False)
    ratio = Fraction(int(round(rate)), int(native_rate))
    resampled = scipy.signal.resample_poly(speech, ratio.numerator, ratio.denominator)
    peak = float(np.max(np.abs(resampled))) or 1.0
    return (resampled / peak).astype(np.float32)


def speech_extent(speech: np.ndarray, rate: float, floor_db: float = TRUTH_FLOOR_DB) -> tuple[int, int]:
    """First and one-past-last sample of the 10-ms frames within ``floor_db`` of the loudest frame."""
    frame = max(1, int(round(TRUTH_FRAME_S * rate)))
    n_frames = speech.size // frame
    rms = np.sqrt(np.mean(speech[: n_frames * frame].astype(np.float64).reshape(n_frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def simulate_conversation(
    script: Sequence[tuple[str, str, float]] = DEFAULT_SCRIPT,
    *,
    rate: float = 16000.0,
    voices: dict[str, tuple[str, int]] | None = None,
    crosstalk_db: float = -12.0,
    crosstalk_delay_s: float = 0.002,
    noise_dbfs: float = -55.0,
    speech_dbfs: float = -12.0,
    lead_in_s: float = 1.0,
    tail_s: float = 1.0,
    seed: int = 0,
) -> SimulatedConversation:
    """Synthesise ``script`` and record it with two simulated microphones.

    Parameters
    ----------
    script : sequence of (speaker, text, seconds)
        Lines in order; ``seconds`` from the end of the previous line's speech to the start of this
        line's (negative: overlap). Speakers are the two participant labels (e.g. ``"A"``, ``"B"``).
    rate : float
        Microphone sampling rate (Hz); the dyadlab audio streams use 16000.
    voices : dict, optional
        ``{label: (espeak voice, pitch)}``; default :data:`DEFAULT_VOICES`.
    crosstalk_db : float
        Level of the partner's voice in a microphone relative to the partner's own microphone
        (negative). -12 dB is two people about a metre apart with close microphones.
    crosstalk_delay_s : float
        Extra travel time of the partner's voice to a microphone (1-3 ms for 0.3-1 m).
    noise_dbfs : float
        RMS of the room noise (white, independent per microphone), dB re full scale.
    speech_dbfs : float
        Peak level of each voice at its own microphone, dB re full scale.
    lead_in_s, tail_s : float
        Silence before the first and after the last line.
    seed : int
        Seed of the room noise.

    Returns
    -------
    SimulatedConversation

    Raises
    ------
    ValueError
        The script is empty or names more than two speakers.
    VoiceSynthesisError
        eSpeak NG is missing or fails.
    """
    voices = dict(DEFAULT_VOICES if voices is None else voices)
    labels = list(dict.fromkeys(speaker for speaker, _, _ in script))
    if not script or len(labels) > 2:
        raise ValueError(f"A conversation script has lines of one or two speakers, got speakers {labels or 'none'}.")
    if len(labels) == 1:
        labels.append(next(label for label in voices if label != labels[0]))
    missing = [label for label in labels if label not in voices]
    if missing:
        raise ValueError(f"No voice for speaker(s) {missing}: give voices={{label: (espeak voice, pitch)}}.")
    placed: list[tuple[str, str, int, np.ndarray]] = []  # speaker, text, first sample, trimmed speech
    cursor = int(round(lead_in_s * rate))
    for speaker, text, after_previous in script:
        voice, pitch = voices[speaker]
        speech = synthesise(text, voice, pitch=pitch, rate=rate)
        first, stop = speech_extent(speech, rate)
        start = max(0, cursor + int(round(after_previous * rate))) if placed else cursor
        placed.append((speaker, text, start, speech[first:stop]))
        cursor = max(cursor, start + (stop - first))  # a line overlapped inside another ends nothing
    n_samples = max(start + speech.size for _, _, start, speech in placed) + int(round(tail_s * rate))
    gain = 10 ** (speech_dbfs / 20)
    clean = {label: np.zeros(n_samples, np.float64) for label in labels}
    turns = []
    for speaker, text, start, speech in placed:
        clean[speaker][start : start + speech.size] += gain * speech
        turns.append(SpokenTurn(speaker, text, start / rate, (start + speech.size) / rate))
    delay = int(round(crosstalk_delay_s * rate))
    leak = 10 ** (crosstalk_db / 20)
    rng = np.random.default_rng(seed)
    noise_rms = 10 ** (noise_dbfs / 20)
    microphones = {}
    for own, partner in (labels, labels[::-1]):
        heard = np.concatenate([np.zeros(delay), clean[partner][: n_samples - delay]])
        microphones[own] = (clean[own] + leak * heard + rng.normal(0.0, noise_rms, n_samples)).astype(np.float32)
    logger.info("Simulated conversation: %d lines, %.1f s at %g Hz", len(turns), n_samples / rate, rate)
    return SimulatedConversation(
        rate=float(rate),
        microphones=microphones,
        voices={label: x.astype(np.float32) for label, x in clean.items()},
        turns=sorted(turns, key=lambda t: t.onset_s),
        crosstalk_db=float(crosstalk_db),
        crosstalk_delay_s=delay / rate,
        noise_dbfs=float(noise_dbfs),
    )


def speaking_states(turns: Sequence[SpokenTurn], labels: tuple[str, str], rate: float, n_samples: int) -> np.ndarray:
    """The speaking state at every sample from the ground truth: ``"<label>-speaks"`` (that
    participant alone), ``"overlap"`` or ``"silence"`` (the state names of
    :mod:`dyadlab.synchrony.speech`)."""
    active = {label: np.zeros(n_samples, bool) for label in labels}
    for turn in turns:
        first = max(0, int(round(turn.onset_s * rate)))
        active[turn.speaker][first : max(first, int(round(turn.offset_s * rate)))] = True
    a, b = active[labels[0]], active[labels[1]]
    states = np.full(n_samples, "silence", dtype=object)
    states[a & ~b] = f"{labels[0]}-speaks"
    states[b & ~a] = f"{labels[1]}-speaks"
    states[a & b] = "overlap"
    return states


def speaking_state_schedule(
    turns: Sequence[SpokenTurn], labels: tuple[str, str], duration_s: float, *, prefix: str = "", rate: float = 100.0
) -> list[tuple[str, float]]:
    """The ground-truth speaking states as a condition schedule for the coupled-dyad simulator.

    ``CoupledDyadSimulator(coupling={"conversation:A-speaks": {"theta": 0.8}}).simulate(duration,
    speaking_state_schedule(turns, ("A", "B"), duration, prefix="conversation:"))`` couples the
    two EEGs in theta only while A speaks alone. States are resolved on a ``rate`` Hz grid.

    Returns
    -------
    list of (condition, seconds)
        Consecutive states from t = 0, each named ``prefix + state``.
    """
    n = int(round(duration_s * rate))
    states = speaking_states(turns, labels, rate, n)
    change = np.flatnonzero(states[1:] != states[:-1]) + 1
    bounds = np.concatenate([[0], change, [n]])
    return [(prefix + str(states[lo]), (hi - lo) / rate) for lo, hi in zip(bounds[:-1], bounds[1:])]


def speaker_led_component(
    states: np.ndarray,
    rate: float,
    *,
    speaker_state: str,
    listener_lag_s: float,
    band_hz: tuple[float, float] = (4.0, 7.0),
    amplitude_uv: float = 6.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A band-limited rhythm in the speaker's EEG that the listener's EEG repeats ``listener_lag_s`` later.

    The same narrow-band process (Butterworth band-pass of white noise, forward-backward) is
    present in the speaker's signal while ``states == speaker_state`` and in the listener's signal
    ``listener_lag_s`` later (the listener's brain following the speaker's, as speaker-listener
    studies report at lags up to about 1 s). Add the two outputs to every channel of the speaker's
    and the listener's simulated EEG.

    Parameters
    ----------
    states : np.ndarray of str, shape (n_samples,)
        The speaking state per EEG sample (e.g. :func:`speaking_states` at the EEG rate).
    rate : float
        EEG sampling rate (Hz).
    speaker_state : str
        The state in which the speaker's rhythm is on (e.g. ``"A-speaks"``).
    listener_lag_s : float
        How much later the listener's EEG carries it (>= 0).
    band_hz : tuple of float
        The rhythm's band.
    amplitude_uv : float
        RMS of the rhythm while on.
    seed : int

    Returns
    -------
    speaker, listener : np.ndarray, shape (n_samples,)
    """
    if listener_lag_s < 0 or not math.isfinite(listener_lag_s):
        raise ValueError(f"listener_lag_s must be >= 0 seconds, got {listener_lag_s!r}.")
    n = states.size
    lag = int(round(listener_lag_s * rate))
    rng = np.random.default_rng(seed)
    sos = scipy.signal.butter(4, band_hz, btype="bandpass", fs=rate, output="sos")
    rhythm = scipy.signal.sosfiltfilt(sos, rng.standard_normal(n))
    rhythm *= amplitude_uv / np.std(rhythm)
    on = (states == speaker_state).astype(float)
    # A 50-ms ramp at each switch: a step would put broadband edges into every band.
    ramp = np.hanning(max(3, int(0.1 * rate)))
    on = np.clip(np.convolve(on, ramp / ramp.sum(), mode="same"), 0.0, 1.0)
    speaker = rhythm * on
    listener = np.concatenate([np.zeros(lag), speaker[: n - lag]])
    return speaker, listener
