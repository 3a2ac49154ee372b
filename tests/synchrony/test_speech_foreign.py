"""Speech detection on a real conversation that nobody here recorded or annotated (issue #16).

Data (``tests/data/speech/``, provenance and licence in ``tests/data/README.md``): one minute
(meeting time 750-810 s) of AMI Meeting Corpus meeting ES2004a, the individual headset
microphones of two participants, FEE016 and MEO015, as recorded (16 kHz), and the AMI
annotators' word-level speech segments for that minute (the BUT "only_words" diarization
reference, derived from the AMI manual annotations 1.6.2). Each headset also hears the other
people in the room: real cross-talk, not an attenuated and delayed copy of the partner's voice.

Between 29.5 s and 60 s of the excerpt only these two speak (bar the last 0.29 s of a third
participant's turn and a 0.45-s utterance of a fourth: frames within 0.1 s of those are left out
of every count). FEE016 holds the floor from 29.78 s while MEO015 puts in three short utterances,
MEO015 takes the floor at 44.46 s, and FEE016 speaks again over him at 53.8 s. The detector,
``dyadlab.synchrony.speech.detect_speech`` (what a session's check runs), sees only the two
microphones in that window.

Annotation limits the bounds allow for: word times are at 10 ms and merged word runs can span a
short silence (MEO015 is silent at 53.5-54.4 s in his microphone, inside an annotated segment),
so speech is compared with a 0.1-s tolerance at annotated boundaries and turns are checked only
before 53.4 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webrtcvad

from dyadlab.synchrony import speech as speech_mod

DATA = Path(__file__).resolve().parents[1] / "data" / "speech"
RTTM = DATA / "ami_ES2004a_750-810s.rttm"
#: Meeting time (s) of the excerpt's first sample: the annotation is in meeting time.
EXCERPT_START_S = 750.0
#: The participants whose headsets are shipped (their files end in the speaker ID).
LABELS = ("FEE016", "MEO015")
#: The excerpt's seconds where only the two speak (module docstring).
WINDOW_S = (29.5, 60.0)
#: LSL time of the excerpt's first sample (any clock works; not zero, as in a session).
LSL_ORIGIN = 5000.0
#: Tolerance at annotated boundaries (word times at 10 ms; the detector's 10-ms frames and its
#: 0.2-s bridging make its edges differ from the annotators' by a few frames).
EDGE_S = 0.1
#: Turns are checked up to here: the annotation's last MEO015 segment spans his pause at 53.5-54.4 s.
TURNS_UNTIL_S = 53.4


def _annotation() -> dict[str, list[tuple[float, float]]]:
    """Each AMI speaker's annotated speech segments, (onset, offset) in the excerpt's seconds."""
    segments: dict[str, list[tuple[float, float]]] = {}
    for line in RTTM.read_text().splitlines():
        fields = line.split()
        onset = float(fields[3]) - EXCERPT_START_S
        segments.setdefault(fields[7], []).append((onset, onset + float(fields[4])))
    return segments


ANNOTATION = _annotation()


def _in_segments(times: np.ndarray, segments: list[tuple[float, float]], pad: float = 0.0) -> np.ndarray:
    """Which ``times`` fall in a segment widened by ``pad`` on both sides."""
    inside = np.zeros(times.size, bool)
    for onset, offset in segments:
        inside |= (times >= onset - pad) & (times < offset + pad)
    return inside


def _microphones() -> list[speech_mod.Microphone]:
    """The two headsets over the window, timestamped on an LSL-like clock."""
    microphones = []
    for label in LABELS:
        samples, rate = sf.read(DATA / f"ami_ES2004a_750-810s_{label}.flac", dtype="float32")
        first, stop = (int(round(t * rate)) for t in WINDOW_S)
        timestamps = LSL_ORIGIN + np.arange(first, stop) / rate
        microphones.append(speech_mod.Microphone.from_arrays(label, samples[first:stop], timestamps, rate))
    return microphones


@pytest.fixture(scope="module")
def detected() -> speech_mod.ConversationSpeech:
    return speech_mod.detect_speech(_microphones())


def _frame_centres(found: speech_mod.ConversationSpeech) -> np.ndarray:
    """Each frame's centre in the excerpt's seconds (the annotation's clock)."""
    return found.frame_times() + found.frame_s / 2 - LSL_ORIGIN


def _others_speak(times: np.ndarray) -> np.ndarray:
    """Frames within EDGE_S of speech by anyone but the two (the room's third and fourth people)."""
    others = [segment for speaker, segments in ANNOTATION.items() if speaker not in LABELS for segment in segments]
    return _in_segments(times, others, pad=EDGE_S)


def _utterances(label: str) -> list[tuple[float, float]]:
    """``label``'s annotated segments inside the window, clipped to it."""
    low, high = WINDOW_S
    return [(max(on, low), min(off, high)) for on, off in ANNOTATION[label] if off > low and on < high]


def _webrtc_voiced(microphone: speech_mod.Microphone, n_frames: int) -> np.ndarray:
    """WebRTC's detector alone (the library, not dyadlab's framing) on the detector's frames.

    Both microphones start at the same sample, so frame k is samples 160 k to 160 k + 159 at 16 kHz.
    """
    settings = speech_mod.SpeechSettings()
    vad = webrtcvad.Vad(settings.aggressiveness)
    size = int(round(settings.frame_s * microphone.rate))
    pcm = (np.clip(microphone.samples, -1.0, 1.0) * 32767).astype("<i2")
    return np.array(
        [vad.is_speech(pcm[k * size : (k + 1) * size].tobytes(), int(microphone.rate)) for k in range(n_frames)]
    )


def test_the_excerpt_holds_the_conversation_described() -> None:
    # Guards what the other tests rely on: the utterances the module docstring names, and one
    # minute of 16-kHz audio.
    assert [on for on, _ in _utterances("FEE016")] == pytest.approx([29.78, 53.8])
    assert [on for on, _ in _utterances("MEO015")] == pytest.approx([34.99, 37.08, 42.89, 44.46])
    samples, rate = sf.read(DATA / "ami_ES2004a_750-810s_FEE016.flac", dtype="int16")
    assert rate == 16000 and samples.size == 60 * rate


def test_onsets_match_the_annotators(detected: speech_mod.ConversationSpeech) -> None:
    errors = []
    for label in LABELS:
        onsets = np.array([onset for onset, _ in detected.segments(label)]) - LSL_ORIGIN
        for onset, _ in _utterances(label):
            if onset > WINDOW_S[0] + EDGE_S:
                errors.append(onsets[np.argmin(np.abs(onsets - onset))] - onset)
    errors_s = np.array(errors)
    assert errors_s.size == 6
    # Measured: errors 0.04, 0.01 (FEE016) and 0.01, -0.14, -0.01, -0.01 s (MEO015): median 10 ms.
    # Bound: 50 ms at the median, the simulated conversation's acceptance bound (five frames).
    assert np.median(np.abs(errors_s)) <= 0.050, np.round(errors_s, 3)
    # No onset is taken from other speech: every error is under 0.25 s, less than the shortest
    # annotated utterance (0.29 s) and the shortest annotated silence of a speaker here (1.02 s).
    # A detector that misses an utterance lands on the next or previous one, seconds away.
    assert np.max(np.abs(errors_s)) < 0.25, np.round(errors_s, 3)


def test_every_annotated_utterance_is_found(detected: speech_mod.ConversationSpeech) -> None:
    times = _frame_centres(detected)
    for label in LABELS:
        for onset, offset in _utterances(label):
            inside = (times >= onset) & (times < offset)
            found_s = detected.speech[label][inside].sum() * detected.frame_s
            # Every utterance (the shortest is 0.29 s) has detected speech of at least the
            # detector's shortest speech (0.1 s) inside it. Measured: at least 0.21 s, in
            # MEO015's 0.55-s utterance spoken over FEE016 (the cross-talk rule cuts into
            # speech under a louder partner).
            assert found_s >= 0.1, (label, onset, found_s)
            if offset - onset > 1.0:
                # Longer ones are mostly covered: measured 100 % and 79 % (FEE016), 92 %
                # (MEO015). Bound 60 % as on the simulated conversation (a line's own pauses).
                assert found_s / (offset - onset) >= 0.6, (label, onset, found_s)


def test_partner_speech_is_mostly_not_counted(detected: speech_mod.ConversationSpeech) -> None:
    """In each speaker's annotated pauses (here all while the partner speaks) little is speech.

    Measured: FEE016 is counted in 22.6 % of the frames where only MEO015 speaks, MEO015 in
    4.8 % of FEE016's; WebRTC's detector alone says speech in 69 % and 21 % of those frames
    (FEE016's headset hears MEO015 some 45 dB down but 10-20 dB above its own noise floor).
    The frames FEE016 is counted in are 30-40 dB below her own speech: cross-talk whose level
    relative to MEO015's microphone varies by frame (reverberation) by more than the 6-dB
    dominance margin, which the single leak figure cannot follow (docs/speech.md, "Real
    speech"). Bounds: at most 30 % (the measured 22.6 % with a margin), and at most half of
    what the detector alone counts there: a detector without the cross-talk rule counts all of
    it, and one whose leak estimate were 10 dB too low would count most of it (one 10 dB too
    high passes: it counts less cross-talk, and cuts more of the speech spoken over the partner).
    """
    times = _frame_centres(detected)
    for microphone in _microphones():
        own = microphone.label
        partner = next(label for label in LABELS if label != own)
        partner_alone = (
            _in_segments(times, _utterances(partner))
            & ~_in_segments(times, _utterances(own), pad=EDGE_S)
            & ~_others_speak(times)
        )
        assert partner_alone.sum() > 1000, own  # over 10 s of the partner alone
        counted = detected.speech[own][partner_alone].mean()
        detector_alone = _webrtc_voiced(microphone, detected.n_frames)[partner_alone].mean()
        assert counted <= 0.30, (own, counted, detector_alone)
        assert counted <= 0.5 * detector_alone, (own, counted, detector_alone)


def test_turns_and_backchannels(detected: speech_mod.ConversationSpeech) -> None:
    turns = [(label, onset - LSL_ORIGIN, offset - LSL_ORIGIN) for label, onset, offset in detected.turns]
    early = [(label, onset) for label, onset, _ in turns if onset < TURNS_UNTIL_S]
    # Annotated: FEE016 takes the floor at 29.78 s and hands it to MEO015 at 44.46 s. His three
    # utterances while she speaks (34.99, 37.08, 42.89 s; 0.29-0.66 s long) take no turn.
    assert [label for label, _ in early] == ["FEE016", "MEO015"], turns
    # Measured: 29.82 s and 44.45 s.
    assert early[0][1] == pytest.approx(29.78, abs=EDGE_S)
    assert early[1][1] == pytest.approx(44.46, abs=EDGE_S)
    events = detected.events()
    overlaps = events[events.event == "overlap"]
    for onset, offset in _utterances("MEO015")[:3]:
        start, stop = LSL_ORIGIN + onset, LSL_ORIGIN + offset
        hit = overlaps[(overlaps.onset < stop) & (overlaps.offset > start)]
        # Found as overlap (both speak) that passes no floor: a backchannel.
        assert len(hit) >= 1 and set(hit.detail) == {"within"}, (onset, hit)


def test_live_detection_on_real_speech(detected: speech_mod.ConversationSpeech) -> None:
    """The live detector (:mod:`dyadlab.synchrony.live_speech`) fed the two headsets in random chunks.

    Its noise floor and leak come from the audio heard so far (a 0-dB leak is assumed until one is
    measured), so at first it differs from the offline detection: measured, FEE016's speech under
    MEO015's 34.8-35.3 s overlap is cut, and MEO015's 42.3-s utterance starts 0.46 s off the
    annotation (offline: 0.10 s), and three short bursts the offline detection gives FEE016 at
    45.0-47.5 s (0.1-0.3 s each, inside MEO015's turn: cross-talk, see the partner test above) are
    not in the live events. From 48 s on (18 s heard) every offline segment's onset has a live
    twin within one 10-ms frame (measured: 0 or 1 frame). Against the annotators the
    onsets are as good as offline at the median: errors 0.04, 0.01 / 0.01, -0.14, 0.46, -0.01 s
    (median 25 ms; bound 50 ms, as offline), none over 0.5 s.
    """
    from dyadlab.synchrony.live_speech import LiveSpeechDetector
    from tests.synchrony.test_live_speech import _feed_live, _segments

    microphones = _microphones()
    detector = LiveSpeechDetector({microphone.label: microphone.rate for microphone in microphones})
    audio = {microphone.label: microphone.samples for microphone in microphones}
    events = _feed_live(detector, microphones[0].timestamps, audio, microphones[0].rate)
    errors = []
    for label in LABELS:
        live_onsets = _segments(events, label)[:, 0] - LSL_ORIGIN
        for onset, _ in _utterances(label):
            if onset > WINDOW_S[0] + EDGE_S:
                errors.append(live_onsets[np.argmin(np.abs(live_onsets - onset))] - onset)
        settled = [onset - LSL_ORIGIN for onset, _ in detected.segments(label) if onset - LSL_ORIGIN >= 48.0]
        assert settled and all(np.min(np.abs(live_onsets - onset)) <= 1.5 * detected.frame_s for onset in settled)
    errors_s = np.array(errors)
    assert errors_s.size == 6
    assert np.median(np.abs(errors_s)) <= 0.050 and np.max(np.abs(errors_s)) < 0.5, np.round(errors_s, 3)
