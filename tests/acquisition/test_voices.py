"""Simulated voices: eSpeak NG speech on a timeline, as two microphones in one room hear it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from dyadlab.acquisition import voices

pytestmark = pytest.mark.skipif(not voices.espeak_available(), reason="espeak-ng is not installed (.ci/system-deps.sh)")

SCRIPT = (
    ("A", "Good morning, how was the trip?", 0.0),
    ("B", "Long, but the train was on time.", 0.5),
    ("A", "Yes.", -0.6),
    ("A", "Shall we begin then?", 0.8),
)


@pytest.fixture(scope="module")
def conversation() -> voices.SimulatedConversation:
    return voices.simulate_conversation(SCRIPT, crosstalk_db=-12.0, crosstalk_delay_s=0.002, noise_dbfs=-60.0)


def test_script_lands_on_the_timeline_as_written(conversation: voices.SimulatedConversation) -> None:
    turns = conversation.turns
    assert [t.speaker for t in turns] == ["A", "B", "A", "A"]
    assert turns[0].onset_s == pytest.approx(1.0)  # lead-in
    # B starts 0.5 s after A's speech ends; A's "Yes." 0.6 s before B's ends (an overlap inside B's line);
    # the last line 0.8 s after the latest speech so far (B's), not after the overlapped "Yes.".
    assert turns[1].onset_s - turns[0].offset_s == pytest.approx(0.5, abs=1 / conversation.rate)
    assert turns[1].offset_s - turns[2].onset_s == pytest.approx(0.6, abs=1 / conversation.rate)
    assert turns[3].onset_s - turns[1].offset_s == pytest.approx(0.8, abs=1 / conversation.rate)
    # The clean voice is silent outside the speaker's own lines and loud within them.
    a = conversation.voices["A"]
    rate = conversation.rate
    assert np.all(a[: int(turns[0].onset_s * rate)] == 0)
    first = a[int(turns[0].onset_s * rate) : int(turns[0].offset_s * rate)]
    assert np.max(np.abs(first)) == pytest.approx(10 ** (-12 / 20), rel=1e-3)  # speech_dbfs peak


def test_each_microphone_hears_the_partner_attenuated_and_delayed(conversation: voices.SimulatedConversation) -> None:
    rate = conversation.rate
    b_line = conversation.turns[1]
    lo, hi = int(b_line.onset_s * rate), int(b_line.offset_s * rate)
    clean_b = conversation.voices["B"][lo - 200 : hi].astype(float)
    mic_a = conversation.microphones["A"][lo - 200 : hi].astype(float)
    # Delay: the peak of the cross-correlation of A's microphone with B's clean voice (one sample = 62.5 µs).
    xcorr = signal.correlate(mic_a, clean_b, mode="full", method="fft")
    lag = int(np.argmax(xcorr)) - (clean_b.size - 1)
    assert lag == round(0.002 * rate)
    # Level: least-squares gain of the delayed clean voice in A's microphone, within 0.2 dB of -12 dB (A is
    # silent during most of B's line and the noise is 50 dB below the speech).
    b_only = slice(0, int((conversation.turns[2].onset_s - b_line.onset_s) * rate))
    shifted = np.concatenate([np.zeros(lag), clean_b[:-lag]])[b_only]
    gain = np.dot(mic_a[b_only], shifted) / np.dot(shifted, shifted)
    assert 20 * np.log10(gain) == pytest.approx(-12.0, abs=0.2)


def test_speaking_states_and_simulator_schedule(conversation: voices.SimulatedConversation) -> None:
    schedule = voices.speaking_state_schedule(conversation.turns, ("A", "B"), conversation.duration_s, prefix="talk:")
    assert sum(seconds for _, seconds in schedule) == pytest.approx(conversation.duration_s, abs=0.01)
    names = [name for name, _ in schedule]
    assert names[:4] == ["talk:silence", "talk:A-speaks", "talk:silence", "talk:B-speaks"]
    assert "talk:overlap" in names  # A's "Yes." inside B's line
    overlap = dict((n, s) for n, s in schedule if n == "talk:overlap")["talk:overlap"]
    assert overlap == pytest.approx(conversation.turns[2].duration_s, abs=0.02)


def test_speaker_led_component_is_the_speakers_rhythm_later() -> None:
    rate, lag = 250.0, 0.3
    states = np.array(["silence"] * 500 + ["A-speaks"] * 5000 + ["silence"] * 500, dtype=object)
    speaker, listener = voices.speaker_led_component(states, rate, speaker_state="A-speaks", listener_lag_s=lag)
    shift = int(lag * rate)
    np.testing.assert_array_equal(listener[shift:], speaker[:-shift])
    assert np.all(speaker[:400] == 0) and np.std(speaker[1000:5000]) == pytest.approx(6.0, rel=0.2)


def test_tiling_repeats_audio_and_truth(conversation: voices.SimulatedConversation) -> None:
    tiled = conversation.tiled(3)
    assert tiled.duration_s == pytest.approx(3 * conversation.duration_s)
    assert len(tiled.turns) == 3 * len(conversation.turns)
    assert tiled.turns[-1].onset_s == pytest.approx(conversation.turns[-1].onset_s + 2 * conversation.duration_s)


def test_missing_espeak_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(voices.VoiceSynthesisError, match="apt-get install espeak-ng"):
        voices.synthesise("hello")
