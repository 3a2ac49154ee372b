"""Live speech detection against the offline detector and the script, on a simulated conversation.

The conversation is synthesised with eSpeak NG (``dyadlab.acquisition.voices``, as in
``test_speech.py``): every line's true on- and offset is known, and each microphone carries the
partner's voice 12 dB down and 2 ms late plus room noise. The live detector gets the two
microphones in chunks of varying size, interleaved as two capture processes deliver them; the
offline detector gets the whole recording.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dyadlab.acquisition import voices
from dyadlab.synchrony import speech as speech_mod
from dyadlab.synchrony.live_speech import SPEECH_OFF, SPEECH_ON, LiveSpeechDetector, SpeechEvent

pytestmark = pytest.mark.skipif(not voices.espeak_available(), reason="espeak-ng is not installed (.ci/system-deps.sh)")

#: LSL time of the script's time zero.
T0 = 5000.0
#: The recordings start 37 samples (2.3 ms) after the script's time zero, so that the frames do not
#: line up with the script's 10-ms grid by construction (as in test_speech.py).
SKIP_SAMPLES = 37
#: Chunks of 20-100 ms: a capture's pump delivers 50 ms (acquisition/audio.py PUMP_INTERVAL_S), and
#: an inlet read returns whatever arrived.
CHUNK_S = (0.02, 0.10)


@pytest.fixture(scope="module")
def conversation() -> voices.SimulatedConversation:
    return voices.simulate_conversation()


def _recordings(conv: voices.SimulatedConversation) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return conv.timestamps(T0)[SKIP_SAMPLES:], {label: conv.microphones[label][SKIP_SAMPLES:] for label in conv.labels}


def _feed_live(
    detector: LiveSpeechDetector,
    times: np.ndarray,
    audio: dict[str, np.ndarray],
    rate: float,
    *,
    stop_at: dict[str, float] | None = None,
    seed: int = 0,
) -> list[SpeechEvent]:
    """Push both microphones in random chunks, neither more than 0.5 s ahead of the other (two live
    captures), each until ``stop_at`` its time (default: to the end); then finish."""
    rng = np.random.default_rng(seed)
    ends = {label: int(np.searchsorted(times, (stop_at or {}).get(label, np.inf))) for label in audio}
    position = dict.fromkeys(audio, 0)
    events: list[SpeechEvent] = []
    while any(position[label] < ends[label] for label in audio):
        label = str(rng.choice([label for label in audio if position[label] < ends[label]]))
        others = [position[other] for other in audio if other != label and position[other] < ends[other]]
        if others and position[label] - min(others) > 0.5 * rate:
            continue
        size = int(rng.uniform(*CHUNK_S) * rate)
        lo, hi = position[label], min(position[label] + size, ends[label])
        events += detector.push(label, audio[label][lo:hi], times[lo:hi])
        position[label] = hi
    return events + detector.finish()


def _segments(events: list[SpeechEvent], label: str) -> np.ndarray:
    """(onset, offset) rows of ``label``'s speech from its events, which must alternate on/off."""
    mine = [event for event in events if event.participant == label]
    kinds = [event.event for event in mine]
    assert kinds == [SPEECH_ON, SPEECH_OFF] * (len(mine) // 2), kinds
    return np.array([event.time for event in mine]).reshape(-1, 2)


@pytest.fixture(scope="module")
def live_and_offline(
    conversation: voices.SimulatedConversation,
) -> tuple[list[SpeechEvent], speech_mod.ConversationSpeech]:
    times, audio = _recordings(conversation)
    offline = speech_mod.detect_speech(
        [speech_mod.Microphone.from_arrays(label, audio[label], times) for label in conversation.labels]
    )
    detector = LiveSpeechDetector(dict.fromkeys(conversation.labels, conversation.rate))
    return _feed_live(detector, times, audio, conversation.rate), offline


def _scripted_floor(conv: voices.SimulatedConversation) -> list[str]:
    """Who holds the floor, turn by turn, by the script: lines said wholly inside a partner's line
    (backchannels) take no turn, and consecutive lines of one speaker are one turn."""
    floor: list[str] = []
    for line in conv.turns:
        inside = any(
            other.speaker != line.speaker and other.onset_s <= line.onset_s and line.offset_s <= other.offset_s
            for other in conv.turns
        )
        if not inside and (not floor or floor[-1] != line.speaker):
            floor.append(line.speaker)
    return floor


def test_live_speech_equals_the_offline_detector(
    conversation: voices.SimulatedConversation, live_and_offline: tuple
) -> None:
    events, offline = live_and_offline
    frame_s = offline.frame_s
    for label in offline.labels:
        live = _segments(events, label)
        reference = np.array(offline.segments(label))
        # Same frame decision and cross-talk rule on the same frames; the statistics (noise floor, leak)
        # come from the past instead of the whole recording, which on this steady recording changes no
        # segment: every on- and offset falls on the offline detector's frame (half a frame: rounding only).
        assert live.shape == reference.shape, (label, np.round(live[:, 0] - T0, 2), np.round(reference[:, 0] - T0, 2))
        assert np.max(np.abs(live - reference)) < 0.5 * frame_s, np.round((live - reference) / frame_s, 1)
    # The turns (who holds the floor) built from the live speech are the offline turns.
    masks = {}
    for label in offline.labels:
        mask = np.zeros(offline.n_frames, bool)
        for onset, offset in _segments(events, label):
            mask[round((onset - offline.start) / frame_s) : round((offset - offline.start) / frame_s)] = True
        masks[label] = mask
    turns = [
        (offline.labels[who], offline.start + first * frame_s, offline.start + stop * frame_s)
        for who, first, stop in speech_mod._turns(masks[offline.labels[0]], masks[offline.labels[1]])
    ]
    assert len(turns) == len(offline.turns)
    assert np.allclose([t[1:] for t in turns], [t[1:] for t in offline.turns], atol=0.5 * frame_s)
    assert [who for who, _, _ in turns] == [who for who, _, _ in offline.turns] == _scripted_floor(conversation)


def test_live_speech_onsets_match_the_script(
    conversation: voices.SimulatedConversation, live_and_offline: tuple
) -> None:
    events, _ = live_and_offline
    errors = []
    for turn in conversation.turns:
        onsets = _segments(events, turn.speaker)[:, 0] - T0
        errors.append(onsets[np.argmin(np.abs(onsets - turn.onset_s))] - turn.onset_s)
    errors = np.array(errors)
    # The offline detector's acceptance bounds (test_speech.py): 50 ms at the median, and no line placed
    # on another one (within half the shortest scripted gap, 0.3 s).
    assert np.median(np.abs(errors)) <= 0.050, np.round(errors, 3)
    assert np.max(np.abs(errors)) < 0.15, np.round(errors, 3)


def test_live_speech_is_reported_once_certain_and_soon(live_and_offline: tuple) -> None:
    events, offline = live_and_offline
    settings = speech_mod.SpeechSettings()
    delays = {kind: np.array([e.delay_s for e in events if e.event == kind]) for kind in (SPEECH_ON, SPEECH_OFF)}
    # Never before it is certain: an onset needs min_speech_s of speech, an offset bridge_s of silence after it.
    assert delays[SPEECH_ON].min() >= settings.min_speech_s - 1e-9
    assert delays[SPEECH_OFF].min() >= settings.bridge_s - 1e-9
    # Soon: at the median within one chunk (at most 0.1 s here) of being certain; none later than half
    # a second (the hysteresis may hold a quiet start back until the voice grows louder).
    assert np.median(delays[SPEECH_ON]) <= settings.min_speech_s + CHUNK_S[1], np.round(delays[SPEECH_ON], 3)
    assert np.median(delays[SPEECH_OFF]) <= settings.bridge_s + CHUNK_S[1], np.round(delays[SPEECH_OFF], 3)
    assert max(delays[SPEECH_ON].max(), delays[SPEECH_OFF].max()) <= 0.5
    # Every event's stamp lies on the microphones' clock and the detector's frame grid.
    grid = (np.array([e.time for e in events]) - offline.start) / offline.frame_s
    assert np.allclose(grid, np.round(grid), atol=1e-6)


def test_a_microphone_that_stops_does_not_stop_the_other(conversation: voices.SimulatedConversation) -> None:
    times, audio = _recordings(conversation)
    rate = conversation.rate
    detector = LiveSpeechDetector(dict.fromkeys(conversation.labels, rate), stall_s=2.0)
    cut = T0 + 20.0  # B's stream ends here; A's goes on to the end
    events = _feed_live(detector, times, audio, rate, stop_at={"B": cut})
    # The grid went on without B (frames whose end is stall_s before A's newest audio are decided).
    assert (detector.analysed_until or 0.0) >= times[-1] - detector.stall_s - 0.02
    assert not [e for e in events if e.participant == "B" and e.time > cut]
    # A's own lines after the cut are still found: speech covers each of them but its inner pauses (as
    # offline, test_speech.py). Without the cross-talk rule B's voice in A's microphone adds speech,
    # so where A's speech begins is not asserted.
    segments = _segments(events, "A") - T0
    later = [turn for turn in conversation.turns if turn.speaker == "A" and turn.onset_s > cut - T0 + 1.0]
    assert len(later) >= 5
    for turn in later:
        covered = np.clip(np.minimum(segments[:, 1], turn.offset_s) - np.maximum(segments[:, 0], turn.onset_s), 0, None)
        assert covered.sum() >= 0.6 * turn.duration_s, (turn.text, covered.sum(), turn.duration_s)


def test_speech_going_on_when_the_audio_ends_is_closed_there(
    conversation: voices.SimulatedConversation, live_and_offline: tuple
) -> None:
    """:meth:`LiveSpeechDetector.finish` ends open speech where the audio ends, as the offline detector
    does with speech running to the end of a recording."""
    times, audio = _recordings(conversation)
    line = conversation.turns[0]
    # The audio ends in the middle of the first long stretch of A's speech.
    onset, offset = next((a, b) for a, b in live_and_offline[1].segments(line.speaker) if b - a > 1.0)
    cut = int(np.searchsorted(times, 0.5 * (onset + offset)))
    times, audio = times[:cut], {label: x[:cut] for label, x in audio.items()}
    detector = LiveSpeechDetector(dict.fromkeys(conversation.labels, conversation.rate))
    events = _feed_live(detector, times, audio, conversation.rate)
    offline = speech_mod.detect_speech(
        [speech_mod.Microphone.from_arrays(label, audio[label], times) for label in conversation.labels]
    )
    live, reference = _segments(events, line.speaker), np.array(offline.segments(line.speaker))
    assert live.shape == reference.shape
    # The same frames, except that the offline grid ends a frame earlier (it needs a sample at its last
    # frame's end; the live one analyses every frame whose samples have all arrived).
    assert np.max(np.abs(live - reference).ravel()[:-1]) < 0.5 * offline.frame_s
    assert 0 <= live[-1, 1] - reference[-1, 1] < 1.5 * offline.frame_s
    assert live[-1, 1] >= times[-1] - offline.frame_s  # open to the last whole frame, then closed


@pytest.mark.parametrize("rate", [44100.0, 16000.5])
def test_rates_the_detector_cannot_take_are_refused(rate: float) -> None:
    with pytest.raises(speech_mod.SpeechError, match="16000"):
        LiveSpeechDetector({"A": 16000.0, "B": rate})


def test_the_events_do_not_depend_on_how_the_audio_is_chunked() -> None:
    """Frame by frame (one 10-ms chunk per push: every decision ends at a chunk's end), 0.2 s or a
    second at a time, the events are the same: each frame is decided once, and speech is reported only once no
    later audio can change it.

    A's voice alone; B's microphone hears it 10 dB down for the first 0.05 s of A's speech, then only
    4.5 dB down (a partner leaning in). B never speaks, so A's leak stays unmeasured and the prior
    (0 dB) holds: A's excess is 10 dB (enters speech, over dominance_db = 6) then 4.5 dB (only stays in
    speech, over release_db = 3), so A's speech past 0.05 s rests on the hysteresis carrying its
    entry across many pushes.
    """
    rate = 16000.0
    voice = voices.synthesise("Well, I suppose we could start with the garden.", "en-us+m3", pitch=40, rate=rate)
    lead = int(1.5 * rate)  # after the first second, which is decided at once (its own statistics)
    clean = np.concatenate([np.zeros(lead), 0.25 * voice, np.zeros(lead)])
    first, _ = voices.speech_extent(voice, rate)
    gain = np.full(clean.size, 10 ** (-4.5 / 20))
    gain[: lead + first + int(0.05 * rate)] = 10 ** (-10 / 20)
    noise = np.random.default_rng(3).normal(0.0, 10 ** (-60 / 20), (2, clean.size))
    audio = {"A": (clean + noise[0]).astype(np.float32), "B": (gain * clean + noise[1]).astype(np.float32)}
    times = T0 + np.arange(clean.size) / rate
    found = []
    for chunk_s in (0.01, 0.2, 1.0):  # 0.2 s: pushes end inside A's speech, after its entry
        detector = LiveSpeechDetector({"A": rate, "B": rate})
        chunk = int(chunk_s * rate)
        events = []
        for lo in range(0, times.size, chunk):
            for label in ("A", "B"):
                events += detector.push(label, audio[label][lo : lo + chunk], times[lo : lo + chunk])
        events += detector.finish()
        assert math.isnan(detector.leak_db["A"])
        found.append([(event.event, event.participant, round(event.time - T0, 6)) for event in events])
    assert found[0] == found[1] == found[2]
    # A's first stretch of speech runs well past the 0.05 s at 10 dB: the hysteresis carried it.
    segments = _segments([SpeechEvent(kind, who, T0 + time, 0.0) for kind, who, time in found[0]], "A")
    assert segments[0, 1] - segments[0, 0] > 0.3, segments - T0
