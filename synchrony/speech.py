"""Speech and turns of a two-person conversation from each participant's microphone.

Input: each participant's microphone as samples and their LSL timestamps (the ``Audio`` streams of
``docs/audio.md``, or any two arrays on one clock). Output (:class:`ConversationSpeech`): who
speaks in every 10-ms frame, the speaking state of the conversation (``<label>-speaks``,
``overlap``, ``silence``), and the events conversation analysis counts (Heldner & Edlund 2010,
"Pauses, gaps and overlaps in conversations", J. Phonetics 38:555), as a pandas table
(:meth:`ConversationSpeech.events`, written as TSV by :meth:`ConversationSpeech.write_tsv`).

How each frame is decided, and why:

1. **Voice activity per microphone**: WebRTC's voice activity detector (``webrtcvad-wheels``, a
   small C extension; it runs offline, no model to download) on 10-ms frames at 16 kHz (other
   rates are resampled to it, with :func:`scipy.signal.resample_poly`), at
   :attr:`SpeechSettings.aggressiveness`. The two microphones are first put on one frame grid
   by their timestamps, so that a frame of A and a frame of B are the same 10 ms of LSL time.
2. **Cross-talk**: every microphone also hears the partner, loud enough for a detector to call it
   speech. Each microphone's leak (the partner's voice in it relative to the partner's own
   microphone) is estimated from the recording: in frames where only the partner speaks, the level
   difference between the two microphones is the leak; it is the median of the level differences
   over the frames where the partner's microphone is louder and well above the noise (the mode of
   the cross-talk side of the difference's two-sided distribution). A frame is the wearer's speech
   when the detector says speech, the frame is at least :attr:`SpeechSettings.floor_margin_db`
   above the microphone's noise floor, and its level exceeds what the leak explains (partner's
   level + leak) by :attr:`SpeechSettings.dominance_db`; once in speech, it stays while the
   excess is above :attr:`SpeechSettings.release_db` (hysteresis: a word's quiet end does not
   flicker). With equal voices in overlap each microphone is about ``-leak`` dB above what the
   leak explains, so overlaps are kept.
3. **Segments**: holes shorter than :attr:`SpeechSettings.bridge_s` in one person's speech (the
   detector drops single frames between syllables) are filled, then speech shorter than
   :attr:`SpeechSettings.min_speech_s` (clicks, breaths) is dropped.
4. **Turns**: a participant holds the floor from the onset of the speech that starts their solo
   speech until the offset of the last speech before the partner's solo speech (Heldner &
   Edlund's floor): a partner speaking only in overlap (a backchannel, "mm-hm") takes no turn.
   Floor transfers go through a *gap* (silence between the turns) or an *overlap* (the next
   speaker starts before the previous one stops); silence between two solo stretches of the same
   speaker is a *pause*.
5. **Speaking states** (the quick-check's conditions within a conversation block): ``<X>-speaks``
   when X speaks and the partner does not, or X holds the floor and nobody speaks (a pause inside
   X's turn: the listener still listens); ``overlap`` when both speak; ``silence`` otherwise (gaps
   between turns, lead-in, long silences).

Steps 1-3 are public functions (:func:`frame_starts`, :func:`locate_frames`,
:func:`levels_and_voicing`, :func:`noise_floor`, :func:`estimate_leak_db`,
:func:`crosstalk_tests`, :func:`hysteresis`, :func:`clean_runs`, :func:`mask_runs`): the live
detector (:mod:`dyadlab.synchrony.live_speech`) decides its frames with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage, signal

from dyadlab import DyadlabError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: The speaking states besides ``<label>-speaks``.
OVERLAP = "overlap"
SILENCE = "silence"
#: Columns of the events table (times in the input timestamps' clock, LSL seconds).
EVENT_COLUMNS = ("event", "participant", "onset", "offset", "duration", "detail")
#: Rates the WebRTC detector accepts; others are resampled to :data:`VAD_RATE`.
VAD_RATES = (8000, 16000, 32000, 48000)
VAD_RATE = 16000
#: Seconds of audio framed at once (bounds memory on hour-long recordings: 4 MB per chunk at 16 kHz).
CHUNK_S = 60.0
#: Percentile of a microphone's frame levels taken as its noise floor.
NOISE_FLOOR_PERCENTILE = 5.0


class SpeechError(DyadlabError, ValueError):
    """Speech cannot be detected from the audio given (the message says why and what to do)."""


@dataclass(frozen=True)
class SpeechSettings:
    """How speech, turns and states are decided (module docstring, steps 1-5).

    Attributes
    ----------
    frame_s : float
        Frame length (10, 20 or 30 ms: the WebRTC detector's frames).
    aggressiveness : int
        WebRTC detector mode 0-3 (3 rejects the most non-speech).
    dominance_db, release_db : float
        Excess over the cross-talk the partner's level explains to enter and to stay in speech.
    floor_margin_db : float
        Least level above the microphone's noise floor (its 5th-percentile frame level) for speech.
    bridge_s : float
        Holes in one person's speech shorter than this are filled (180-200 ms is the shortest pause
        conversation studies count).
    min_speech_s : float
        Shorter bursts are not speech.
    """

    frame_s: float = 0.010
    aggressiveness: int = 2
    dominance_db: float = 6.0
    release_db: float = 3.0
    floor_margin_db: float = 10.0
    bridge_s: float = 0.2
    min_speech_s: float = 0.1

    def __post_init__(self) -> None:
        if (
            round(self.frame_s * 1000) not in (10, 20, 30)
            or abs(self.frame_s * 1000 - round(self.frame_s * 1000)) > 1e-6
        ):
            raise SpeechError(
                f"frame_s must be 0.01, 0.02 or 0.03 s (the WebRTC detector's frames), got {self.frame_s}."
            )
        if self.aggressiveness not in (0, 1, 2, 3):
            raise SpeechError(f"aggressiveness must be 0, 1, 2 or 3, got {self.aggressiveness}.")
        if not 0 <= self.release_db <= self.dominance_db:
            raise SpeechError(
                f"release_db ({self.release_db}) must lie between 0 and dominance_db ({self.dominance_db}): "
                "speech is entered above dominance_db and left below release_db."
            )


@dataclass(frozen=True)
class Microphone:
    """One participant's microphone: samples (float, full scale ±1) and each sample's time."""

    label: str
    samples: np.ndarray
    timestamps: np.ndarray
    rate: float

    @classmethod
    def from_arrays(
        cls, label: str, samples: np.ndarray, timestamps: np.ndarray, rate: float | None = None
    ) -> Microphone:
        """Check and wrap arrays; ``rate`` defaults to the timestamps' mean rate rounded to 1 Hz."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if samples.size != timestamps.size:
            raise SpeechError(
                f"Microphone {label}: {samples.size} samples but {timestamps.size} timestamps; give one time per sample."
            )
        if samples.size < 2 or not np.isfinite(timestamps).all():
            raise SpeechError(f"Microphone {label}: fewer than 2 samples or timestamps that are not numbers.")
        span = timestamps[-1] - timestamps[0]
        if rate is None:
            rate = round((samples.size - 1) / span) if span > 0 else math.nan
        if not (math.isfinite(rate) and rate >= 8000):
            raise SpeechError(f"Microphone {label}: sampling rate {rate} Hz; speech needs at least 8000 Hz.")
        return cls(label, samples, timestamps, float(rate))


@dataclass
class ConversationSpeech:
    """Speech per participant on one frame grid, the speaking states and the conversation's events.

    Attributes
    ----------
    labels : tuple of str
        The two participants.
    start : float
        Time of the first frame's start (the timestamps' clock).
    frame_s : float
    speech : dict of str to np.ndarray of bool, shape (n_frames,)
        Each participant's own speech per frame (cross-talk removed).
    states : np.ndarray of str, shape (n_frames,)
        ``<label>-speaks``, ``overlap`` or ``silence`` per frame.
    turns : list of (label, onset, offset)
        Floor turns in time order.
    leak_db : dict of str to float
        Estimated cross-talk in each participant's microphone: the partner's voice there relative
        to the partner's own microphone (NaN when the partner never spoke alone).
    notes : list of str
        What the user should know (a microphone that hears its partner as loudly as its wearer...).
    """

    labels: tuple[str, str]
    start: float
    frame_s: float
    speech: dict[str, np.ndarray]
    states: np.ndarray
    turns: list[tuple[str, float, float]]
    leak_db: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.states.size)

    @property
    def state_names(self) -> list[str]:
        """Every state in the order the quick-check reports them."""
        return [f"{self.labels[0]}-speaks", f"{self.labels[1]}-speaks", OVERLAP, SILENCE]

    def frame_times(self) -> np.ndarray:
        """Start time of every frame."""
        return self.start + self.frame_s * np.arange(self.n_frames)

    def segments(self, label: str) -> list[tuple[float, float]]:
        """``label``'s speech as (onset, offset) times."""
        return [
            (self.start + a * self.frame_s, self.start + b * self.frame_s) for a, b in mask_runs(self.speech[label])
        ]

    def state_fractions(self, starts: np.ndarray, length_s: float) -> dict[str, np.ndarray]:
        """For windows ``[start, start + length_s)``: the fraction of their time in each state
        (time outside the analysed audio counts in none)."""
        starts = np.asarray(starts, dtype=float)
        first = (starts - self.start) / self.frame_s
        last = first + length_s / self.frame_s
        fractions = {}
        for name in self.state_names:
            held = np.concatenate([[0.0], np.cumsum(self.states == name)])
            fractions[name] = (_cumulative_at(held, last) - _cumulative_at(held, first)) / (length_s / self.frame_s)
        return fractions

    def events(self) -> pd.DataFrame:
        """Speech, turns, overlaps, pauses and gaps, one row each in time order (:data:`EVENT_COLUMNS`).

        ``event`` is ``speech`` (one participant's speech segment), ``turn`` (floor turn),
        ``overlap`` (both speak; ``detail`` ``transfer`` when the floor passes across it, else
        ``within``: a backchannel or a failed interruption), ``pause`` (silence between two solo
        stretches of ``participant``) or ``gap`` (silence at a floor transfer; ``participant``
        takes the floor). Times in the timestamps' clock (LSL seconds).
        """
        import pandas as pd

        rows: list[tuple[str, str, float, float, str]] = []
        for label in self.labels:
            rows += [("speech", label, onset, offset, "") for onset, offset in self.segments(label)]
        rows += [("turn", label, onset, offset, "") for label, onset, offset in self.turns]
        codes = _state_codes(self.speech[self.labels[0]], self.speech[self.labels[1]])
        runs = _code_runs(codes)
        solo_before = _neighbour_solo(runs, step=-1)
        solo_after = _neighbour_solo(runs, step=1)
        for k, (code, first, stop) in enumerate(runs):
            onset, offset = self.start + first * self.frame_s, self.start + stop * self.frame_s
            before, after = solo_before[k], solo_after[k]
            if code == 3:
                transfer = before is not None and after is not None and before != after
                rows.append(("overlap", "both", onset, offset, "transfer" if transfer else "within"))
            elif code == 0 and before is not None and after is not None:
                kind = "pause" if before == after else "gap"
                rows.append((kind, self.labels[after - 1], onset, offset, ""))
        table = pd.DataFrame([(e, p, on, off, off - on, d) for e, p, on, off, d in rows], columns=list(EVENT_COLUMNS))
        return table.sort_values(["onset", "event"], kind="stable").reset_index(drop=True)

    def write_tsv(self, path: str | Path) -> Path:
        """The events table as tab-separated values (times in seconds, 3 decimals); returns ``path``."""
        path = Path(path)
        self.events().to_csv(path, sep="\t", index=False, float_format="%.3f")
        return path

    def summary(self, origin: float | None = None) -> dict[str, Any]:
        """JSON-ready summary: per participant speaking time, turns and their median length, counts
        and median durations of overlaps, pauses and gaps, the time in each state, the estimated
        leaks and the notes. With ``origin``, ``turns`` lists every turn in seconds from it."""
        table = self.events()

        def median(event: str, participant: str | None = None) -> float | None:
            rows = table[(table.event == event) & ((table.participant == participant) if participant else True)]
            return round(float(rows.duration.median()), 3) if len(rows) else None

        out: dict[str, Any] = {
            "frame_s": self.frame_s,
            "duration_s": round(self.n_frames * self.frame_s, 3),
            "participants": {
                label: {
                    "speech_s": round(float(self.speech[label].sum() * self.frame_s), 3),
                    "n_turns": int(((table.event == "turn") & (table.participant == label)).sum()),
                    "median_turn_s": median("turn", label),
                    "n_pauses": int(((table.event == "pause") & (table.participant == label)).sum()),
                    "median_pause_s": median("pause", label),
                    "crosstalk_db": None if math.isnan(self.leak_db[label]) else round(self.leak_db[label], 1),
                }
                for label in self.labels
            },
            "n_transfers": max(len(self.turns) - 1, 0),
            "n_gaps": int((table.event == "gap").sum()),
            "median_gap_s": median("gap"),
            "n_overlaps": int((table.event == "overlap").sum()),
            "median_overlap_s": median("overlap"),
            "state_s": {name: round(float((self.states == name).sum() * self.frame_s), 3) for name in self.state_names},
            "notes": list(self.notes),
        }
        if origin is not None:
            out["turns"] = [
                {"participant": label, "start_s": round(onset - origin, 3), "end_s": round(offset - origin, 3)}
                for label, onset, offset in self.turns
            ]
        return out


def detect_speech(microphones: Sequence[Microphone], settings: SpeechSettings | None = None) -> ConversationSpeech:
    """Speech, turns and speaking states of two participants from their microphones.

    Parameters
    ----------
    microphones : two Microphone
        Participant A's and B's (:meth:`Microphone.from_arrays`), on one clock.
    settings : SpeechSettings, optional

    Returns
    -------
    ConversationSpeech
        On the frames where both microphones recorded.

    Raises
    ------
    SpeechError
        Not two microphones, or their recordings do not overlap.
    """
    settings = settings or SpeechSettings()
    if len(microphones) != 2 or microphones[0].label == microphones[1].label:
        raise SpeechError(
            f"Speech detection needs two participants' microphones, got {[m.label for m in microphones]}."
        )
    start = max(float(m.timestamps[0]) for m in microphones)
    stop = min(float(m.timestamps[-1]) for m in microphones)
    n_frames = int(math.floor((stop - start) / settings.frame_s))
    if n_frames < 1:
        raise SpeechError(
            "The two microphones' recordings do not overlap in time "
            + ", ".join(f"{m.label}: {m.timestamps[0]:.3f}-{m.timestamps[-1]:.3f} s" for m in microphones)
            + "; give recordings of the same conversation on one clock."
        )
    levels, voiced, notes = {}, {}, []
    for mic in microphones:
        levels[mic.label], voiced[mic.label], mic_notes = _frame_analysis(mic, start, n_frames, settings)
        notes += mic_notes
    (a, b) = (m.label for m in microphones)
    leak = {a: estimate_leak_db(levels[a], levels[b]), b: estimate_leak_db(levels[b], levels[a])}
    speech = {}
    for own, partner in ((a, b), (b, a)):
        if not math.isnan(leak[own]) and leak[own] > -settings.dominance_db:
            notes.append(
                f"Microphone {own} hears {partner} only {-leak[own]:.1f} dB below {partner}'s own microphone: the two "
                f"voices cannot be told apart reliably (move each microphone closer to its own speaker)."
            )
        candidate, enter, stay = crosstalk_tests(
            levels[own], levels[partner], voiced[own], noise_floor(levels[own]), leak[own], settings
        )
        speech[own] = clean_runs(candidate & hysteresis(enter, stay), settings)
        if not speech[own].any():
            notes.append(
                f"No speech found in microphone {own} ({n_frames * settings.frame_s:.0f} s analysed): check that it was "
                "connected, unmuted and close to its speaker (`dyadlab preflight` tests each microphone)."
            )
    turns_frames = _turns(speech[a], speech[b])
    states = _states(speech[a], speech[b], turns_frames, (a, b), n_frames)
    turns = [
        ((a, b)[who], start + lo * settings.frame_s, start + hi * settings.frame_s) for who, lo, hi in turns_frames
    ]
    return ConversationSpeech((a, b), start, settings.frame_s, speech, states, turns, leak, notes)


def assign_epochs(speech: ConversationSpeech, starts: np.ndarray, length_s: float, min_fraction: float) -> np.ndarray:
    """The speaking state of each epoch ``[start, start + length_s)``: the state that holds for at
    least ``min_fraction`` of it, else ``""`` (mixed, or outside the audio)."""
    fractions = speech.state_fractions(starts, length_s)
    out = np.full(np.asarray(starts).size, "", dtype=object)
    for name, held in fractions.items():
        out[held >= min_fraction - 1e-9] = name
    return out


# --------------------------------------------------------------------------- frame analysis


def _frame_analysis(
    mic: Microphone, start: float, n_frames: int, settings: SpeechSettings
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Level (dB re full scale) and the detector's verdict of every frame on the grid from ``start``."""
    import webrtcvad

    vad = webrtcvad.Vad(settings.aggressiveness)
    samples, timestamps, rate = mic.samples, mic.timestamps, mic.rate
    if int(round(rate)) not in VAD_RATES:
        ratio = Fraction(VAD_RATE, int(round(rate)))
        samples = signal.resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)
        timestamps = np.interp(np.arange(samples.size) * float(1 / ratio), np.arange(timestamps.size), timestamps)
        rate = float(VAD_RATE)
    frame = int(round(settings.frame_s * rate))
    notes = []
    # Timestamps that step back (clock corrections) are held at their last high value, without a
    # copy of an hour's timestamps when they never do.
    monotonic = timestamps if np.all(timestamps[1:] >= timestamps[:-1]) else np.maximum.accumulate(timestamps)
    first, intact = locate_frames(monotonic, frame_starts(start, np.arange(n_frames), settings), rate, settings)
    if not intact.all():
        notes.append(
            f"Microphone {mic.label}: {int((~intact).sum())} frame(s) fall on lost audio (timestamp gaps); they are "
            "taken as silence."
        )
    clipped = float(np.mean(np.abs(samples) >= 0.999))
    if clipped > 1e-4:
        notes.append(f"Microphone {mic.label} is clipped in {100 * clipped:.2f} % of its samples: lower its gain.")
    levels = np.empty(n_frames)
    voiced = np.zeros(n_frames, bool)
    per_chunk = max(1, int(CHUNK_S / settings.frame_s))
    for lo in range(0, n_frames, per_chunk):
        hi = min(lo + per_chunk, n_frames)
        levels[lo:hi], voiced[lo:hi] = levels_and_voicing(samples, first[lo:hi], frame, vad, int(rate))
    return levels, voiced & intact, notes


def frame_starts(start: float, indices: np.ndarray, settings: SpeechSettings) -> np.ndarray:
    """LSL start time of the frames ``indices`` of the grid that begins at ``start``."""
    return start + settings.frame_s * np.asarray(indices, dtype=float)


def locate_frames(
    monotonic: np.ndarray, starts: np.ndarray, rate: float, settings: SpeechSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's first sample and whether the frame is intact.

    The first sample is the first one at or after the frame's start on the LSL clock (half a sample
    early counts), moved back where a whole frame would not fit before the end of ``monotonic``
    (non-decreasing timestamps). A frame whose samples span much more than a frame of time
    straddles lost audio: it is not intact (not speech).
    """
    frame = int(round(settings.frame_s * rate))
    first = np.searchsorted(monotonic, starts - 0.5 / rate)
    first = np.minimum(first, monotonic.size - frame)
    spans = monotonic[first + frame - 1] - monotonic[first]
    return first, spans <= 1.5 * settings.frame_s


def levels_and_voicing(
    samples: np.ndarray, first: np.ndarray, frame: int, vad: Any, rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Level (dB re full scale) and the WebRTC detector's verdict of the frames of ``frame`` samples
    starting at ``first``, fed to ``vad`` in order (the detector adapts to what it heard before)."""
    frames = samples[np.asarray(first)[:, None] + np.arange(frame)]
    levels = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    buffer = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    size = 2 * frame
    voiced = np.array([vad.is_speech(buffer[k * size : (k + 1) * size], rate) for k in range(len(frames))], bool)
    return levels, voiced


def noise_floor(levels: np.ndarray) -> float:
    """A microphone's noise floor: the :data:`NOISE_FLOOR_PERCENTILE` percentile of its frame levels."""
    return float(np.percentile(levels, NOISE_FLOOR_PERCENTILE))


def crosstalk_tests(
    own: np.ndarray,
    partner: np.ndarray,
    voiced: np.ndarray,
    floor_db: float,
    leak_db: float,
    settings: SpeechSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cross-talk rule per frame (module docstring, step 2), before hysteresis and segments.

    Parameters
    ----------
    own, partner : np.ndarray
        Frame levels (dB) of the wearer's and the partner's microphones.
    voiced : np.ndarray of bool
        The detector's verdict on the wearer's frames.
    floor_db : float
        The wearer's microphone noise floor (:func:`noise_floor`).
    leak_db : float
        The partner's voice in the wearer's microphone (:func:`estimate_leak_db`; NaN: the partner's level
        explains nothing).

    Returns
    -------
    candidate, enter, stay : np.ndarray of bool
        Voiced and loud enough; excess over the leak enough to enter speech; enough to stay in it.
        Speech is ``candidate & hysteresis(enter, stay)``, then :func:`clean_runs`.
    """
    excess = own - (partner + (leak_db if not math.isnan(leak_db) else -np.inf))
    candidate = voiced & (own >= floor_db + settings.floor_margin_db)
    return candidate, excess >= settings.dominance_db, excess >= settings.release_db


def estimate_leak_db(own: np.ndarray, partner: np.ndarray) -> float:
    """The partner's voice in ``own``'s microphone relative to the partner's microphone (dB).

    In frames where the partner speaks alone, ``own - partner`` is the leak; those are the frames
    where the partner's microphone is the louder one and well (20 dB) above its noise floor. The
    median over them, NaN with fewer than 50 such frames (half a second of the partner alone).
    """
    difference = own - partner
    speaking = (partner >= noise_floor(partner) + 20.0) & (difference < 0)
    if speaking.sum() < 50:
        return math.nan
    return float(np.median(difference[speaking]))


def hysteresis(enter: np.ndarray, stay: np.ndarray) -> np.ndarray:
    """Runs of ``stay`` that contain at least one ``enter`` frame."""
    labels, n = ndimage.label(stay)
    if n == 0:
        return np.zeros_like(stay)
    entered = np.zeros(n + 1, bool)
    entered[np.unique(labels[enter & stay])] = True
    entered[0] = False
    return entered[labels]


def mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) frame of every run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in edges.reshape(-1, 2)]


def clean_runs(mask: np.ndarray, settings: SpeechSettings) -> np.ndarray:
    """Fill holes shorter than ``bridge_s``, then drop runs shorter than ``min_speech_s``."""
    out = mask.copy()
    bridge = int(round(settings.bridge_s / settings.frame_s))
    for first, stop in mask_runs(~out):
        if stop - first < bridge and first > 0 and stop < out.size:
            out[first:stop] = True
    shortest = int(round(settings.min_speech_s / settings.frame_s))
    for first, stop in mask_runs(out):
        if stop - first < shortest:
            out[first:stop] = False
    return out


def _state_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """0 nobody, 1 A alone, 2 B alone, 3 both."""
    return a.astype(np.int8) + 2 * b.astype(np.int8)


def _code_runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, first, stop) of every run of equal codes."""
    change = np.flatnonzero(np.diff(codes)) + 1
    bounds = np.concatenate([[0], change, [codes.size]])
    return [(int(codes[lo]), int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _neighbour_solo(runs: Sequence[tuple[int, int, int]], step: int) -> list[int | None]:
    """For each run, the code (1 or 2) of the nearest solo run before (``step=-1``) or after it."""
    out: list[int | None] = [None] * len(runs)
    seen: int | None = None
    # One pass away from each run in the asked direction, carrying the last solo code met.
    for k in range(len(runs)) if step == -1 else range(len(runs) - 1, -1, -1):
        out[k] = seen
        if runs[k][0] in (1, 2):
            seen = runs[k][0]
    return out


def _turns(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, int]]:
    """Floor turns (who: 0 or 1, first frame, stop frame), see the module docstring (step 4)."""
    codes = _state_codes(a, b)
    solo = [(code - 1, first, stop) for code, first, stop in _code_runs(codes) if code in (1, 2)]
    speech = (a, b)
    turns: list[tuple[int, int, int]] = []
    for who, first, stop in solo:
        if turns and turns[-1][0] == who:
            turns[-1] = (who, turns[-1][1], stop)
            continue
        turns.append((who, first, stop))
    out = []
    for who, first, stop in turns:
        own = speech[who]
        # Extend to the whole speech segments the turn's first and last solo frames belong to.
        while first > 0 and own[first - 1]:
            first -= 1
        while stop < own.size and own[stop]:
            stop += 1
        out.append((who, first, stop))
    return out


def _states(
    a: np.ndarray, b: np.ndarray, turns: Sequence[tuple[int, int, int]], labels: tuple[str, str], n: int
) -> np.ndarray:
    """The speaking state of every frame (module docstring, step 5)."""
    floor = [np.zeros(n, bool), np.zeros(n, bool)]
    for who, first, stop in turns:
        floor[who][first:stop] = True
    states = np.full(n, SILENCE, dtype=object)
    nobody = ~a & ~b
    states[(a & ~b) | (floor[0] & nobody)] = f"{labels[0]}-speaks"
    states[(b & ~a) | (floor[1] & nobody)] = f"{labels[1]}-speaks"
    states[a & b] = OVERLAP
    return states


def _cumulative_at(cumulative: np.ndarray, position: np.ndarray) -> np.ndarray:
    """A cumulative count (``cumulative[k]`` = frames before frame k) at fractional frame positions."""
    clipped = np.clip(position, 0.0, cumulative.size - 1)
    return np.interp(clipped, np.arange(cumulative.size), cumulative)
