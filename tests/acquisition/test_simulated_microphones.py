"""The simulated participants' voice room: what each microphone hears, and when the voices play.

Offline (no LSL, no audio device): :meth:`VoiceRoom.render` is compared with the clean voices of
the same script (:func:`dyadlab.acquisition.voices.simulate_conversation`, same synthesiser), and
the markers are handed to :meth:`VoiceRoom.on_marker` directly. The real-time path (capture, LSL,
XDF) is tested in ``tests/protocols/test_simulated_voices.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from dyadlab.acquisition.markers import Marker
from dyadlab.acquisition.simulated_microphones import MICROPHONE_CHECK_SCRIPT, VoiceRoom
from dyadlab.acquisition.voices import espeak_available, simulate_conversation

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng (.ci/system-deps.sh)")

RATE = 16000.0
SCRIPT = (("A", "Hello there, how are you?", 0.0), ("B", "Fine, thank you.", 0.5))


@pytest.fixture(scope="module")
def room_and_truth() -> tuple[VoiceRoom, object]:
    return VoiceRoom(rate=RATE, script=SCRIPT, noise_dbfs=-120.0), simulate_conversation(SCRIPT, rate=RATE)


def _heard(voices: dict[str, np.ndarray], own: str, partner: str) -> np.ndarray:
    """Own voice plus the partner's 12 dB down and 2 ms late (the room's cross-talk)."""
    delay = round(0.002 * RATE)
    expected = voices[own].astype(float)
    expected[delay:] += 10 ** (-12 / 20) * voices[partner][:-delay]
    return expected


def _start(block: str, task: str = "conversation") -> Marker:
    return Marker(event="block_start", task=task, block=block, condition=task)


def test_each_microphone_hears_its_speaker_and_the_partner_12_db_down_2_ms_late(room_and_truth) -> None:
    room, truth = room_and_truth
    t0 = 500.0
    room.on_marker(_start("talk"), t0)
    n = truth.voices["A"].size
    heard = {label: room.render(label, t0, n).astype(float) for label in "AB"}
    room.on_marker(Marker(event="block_end", task="conversation", block="talk", condition="conversation"), t0 + 60)
    for own, partner in (("A", "B"), ("B", "A")):
        np.testing.assert_allclose(heard[own], _heard(truth.voices, own, partner), atol=1e-5)


def test_the_conversation_starts_at_its_block_and_is_cut_at_its_end(room_and_truth) -> None:
    room, truth = room_and_truth
    start, end = 1000.0, 1000.0 + truth.turns[1].onset_s + 0.3  # cut 0.3 s into B's line
    room.on_marker(_start("rest", task="rest"), start - 5)  # not a conversation: nothing plays
    assert not np.any(np.abs(room.render("A", start - 5, 16000)) > 1e-4)
    room.on_marker(_start("talk2"), start)
    room.on_marker(Marker(event="block_end", task="conversation", block="talk2", condition="conversation"), end)
    b_line = truth.turns[1]
    before_end = room.render("B", start + b_line.onset_s, int(0.25 * RATE))
    after_end = room.render("B", end + 0.01, int(0.5 * RATE))
    assert np.sqrt(np.mean(before_end.astype(float) ** 2)) > 0.01
    assert np.max(np.abs(after_end)) < 1e-4
    (played,) = [c for c in room.ground_truth()["conversations"] if c["block"] == "talk2"]
    assert played["start"] == start and played["end"] == end
    assert [t["speaker"] for t in played["turns"]] == ["A", "B"]
    assert played["turns"][1]["offset"] == end  # B's line cut at the block's end
    assert played["turns"][0]["onset"] == pytest.approx(start + truth.turns[0].onset_s)


def test_the_microphone_check_loops_until_ended_and_finishes_the_line_being_spoken() -> None:
    room = VoiceRoom(rate=RATE, script=SCRIPT, noise_dbfs=-120.0)
    check = simulate_conversation(MICROPHONE_CHECK_SCRIPT, rate=RATE, lead_in_s=0.2, tail_s=0.3)
    period = check.duration_s
    room.start_microphone_check(10.0)
    second_round = room.render("A", 10.0 + period, check.voices["A"].size)
    np.testing.assert_allclose(second_round, _heard(check.voices, "A", "B"), atol=1e-5)
    b_line = next(turn for turn in check.turns if turn.speaker == "B")
    in_b_line = 10.0 + 2 * period + (b_line.onset_s + b_line.offset_s) / 2
    room.end_microphone_check(in_b_line)  # B's line in the third round is finished, then silence
    end = 10.0 + 2 * period + b_line.offset_s
    assert room.ground_truth()["microphone_check"]["end"] == pytest.approx(end)
    assert np.sqrt(np.mean(room.render("B", end - 0.3, int(0.2 * RATE)).astype(float) ** 2)) > 0.01
    assert np.max(np.abs(room.render("B", end, int(period * RATE)))) < 1e-4
    room2 = VoiceRoom(rate=RATE, script=SCRIPT, noise_dbfs=-120.0)
    room2.start_microphone_check(10.0)
    room2.end_microphone_check(10.0 + 0.05)  # in the lead-in silence: ends at once
    assert room2.ground_truth()["microphone_check"]["end"] == pytest.approx(10.05)
