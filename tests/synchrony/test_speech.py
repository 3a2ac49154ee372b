"""Speech, turns and synchrony by speaking role, on a simulated conversation with a known script.

The conversation is synthesised with eSpeak NG (``dyadlab.acquisition.voices``): every turn's
true on- and offset is known from the clean voices, and each microphone carries the partner's
voice 12 dB down and 2 ms late (cross-talk) plus room noise. The detector (WebRTC's VAD plus
the cross-talk rule of ``dyadlab.synchrony.speech``) sees only the two microphones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from dyadlab.acquisition import voices
from dyadlab.synchrony import speech as speech_mod
from dyadlab.synchrony.check import MIN_EPOCHS_STATS, run_check
from dyadlab.synchrony.speech_roles import SpeechOptions

pytestmark = pytest.mark.skipif(not voices.espeak_available(), reason="espeak-ng is not installed (.ci/system-deps.sh)")

#: LSL time of the script's time zero.
T0 = 2000.0
#: The microphones' recordings start this many samples (2.3 ms at 16 kHz) after the script's time zero:
#: the script's lines start on a 10-ms grid, so the detector's frames (from the first sample) would
#: otherwise line up with the truth by construction.
SKIP_SAMPLES = 37


@pytest.fixture(scope="module")
def conversation() -> voices.SimulatedConversation:
    return voices.simulate_conversation()


def _microphones(conv: voices.SimulatedConversation, start: float = T0) -> list[speech_mod.Microphone]:
    times = conv.timestamps(start)[SKIP_SAMPLES:]
    return [
        speech_mod.Microphone.from_arrays(label, conv.microphones[label][SKIP_SAMPLES:], times) for label in conv.labels
    ]


@pytest.fixture(scope="module")
def detected(conversation: voices.SimulatedConversation) -> speech_mod.ConversationSpeech:
    return speech_mod.detect_speech(_microphones(conversation))


def _onset_errors(conv: voices.SimulatedConversation, found: speech_mod.ConversationSpeech, start: float) -> np.ndarray:
    """Per scripted line: detected onset of the speaker's nearest speech segment minus the true onset (s)."""
    errors = []
    for turn in conv.turns:
        onsets = np.array([onset for onset, _ in found.segments(turn.speaker)]) - start
        errors.append(onsets[np.argmin(np.abs(onsets - turn.onset_s))] - turn.onset_s)
    return np.array(errors)


def test_speech_onsets_match_the_script(conversation: voices.SimulatedConversation, detected: Any) -> None:
    errors = _onset_errors(conversation, detected, T0)
    # The acceptance bound: 50 ms at the median (frames are 10 ms; speech starting with a weak
    # consonant, e.g. the "h" of "Hi", is found one or a few frames late).
    assert np.median(np.abs(errors)) <= 0.050, np.round(errors, 3)
    # No line is placed on another one: every error is within half the shortest scripted gap (0.3 s).
    assert np.max(np.abs(errors)) < 0.15, np.round(errors, 3)


def test_no_turn_longer_than_a_second_is_missed(conversation: voices.SimulatedConversation, detected: Any) -> None:
    rate = 1 / detected.frame_s
    times = detected.frame_times() - T0
    for turn in conversation.turns:
        if turn.duration_s <= 1.0:
            continue
        inside = (times >= turn.onset_s) & (times < turn.offset_s)
        covered = detected.speech[turn.speaker][inside].mean()
        # Speech covers the line except its short inner pauses (commas, full stops: under 40 % of a line).
        assert covered >= 0.6, (turn.text, covered, rate)


def test_cross_talk_is_not_counted_as_speech(conversation: voices.SimulatedConversation, detected: Any) -> None:
    truth = voices.speaking_states(
        conversation.turns, conversation.labels, 1 / detected.frame_s, detected.n_frames + 400
    )
    # The truth on the detector's frames (frame k starts at T0 + k * frame_s; truth is sampled at 100 Hz from 0).
    truth = truth[np.round((detected.frame_times() - T0) / detected.frame_s).astype(int)]
    for own, partner in (("A", "B"), ("B", "A")):
        partner_alone = truth == f"{partner}-speaks"
        # Leave out the 0.3 s after the wearer's own speech ends (the detector's hangover is not cross-talk).
        own_truth = np.isin(truth, [f"{own}-speaks", "overlap"])
        near_own = np.convolve(own_truth, np.ones(31), mode="full")[: own_truth.size] > 0
        counted = detected.speech[own][partner_alone & ~near_own].mean()
        assert counted <= 0.01, (own, counted)
    # The detector alone does count the cross-talk as speech: the level rule is what removes it.
    mic_b = _microphones(conversation)[1]
    _, voiced_b, _ = speech_mod._frame_analysis(mic_b, T0, detected.n_frames, speech_mod.SpeechSettings())
    a_alone = truth == "A-speaks"
    assert voiced_b[a_alone].mean() > 0.5


def test_overlaps_gaps_and_backchannels(
    conversation: voices.SimulatedConversation, detected: Any, tmp_path: Path
) -> None:
    events = detected.events()
    overlaps = events[events.event == "overlap"]
    # The script's overlaps: "Mm-hm." and "Right." inside the partner's line (backchannels: no floor
    # transfer) and "That sounds like..." starting 0.4 s before B ends (the floor passes to A).
    scripted = {
        "Mm-hm.": "within",
        "Right.": "within",
        "That sounds like a good way to spend a rainy week.": "transfer",
    }
    for text, kind in scripted.items():
        line = next(t for t in conversation.turns if t.text == text)
        hit = overlaps[(overlaps.onset - T0 < line.offset_s) & (overlaps.offset - T0 > line.onset_s)]
        assert len(hit) == 1 and hit.detail.iloc[0] == kind, (text, hit)
    assert len(overlaps) == len(scripted)
    # Backchannels take no turn: no detected turn starts inside one.
    turns = events[events.event == "turn"]
    for text in ("Mm-hm.", "Right."):
        line = next(t for t in conversation.turns if t.text == text)
        inside = turns[(turns.participant == line.speaker) & (turns.onset - T0 > line.onset_s - 0.1)]
        assert (inside.onset - T0 > line.offset_s).all()
    # 21 lines, two of them backchannels and one continuing A's turn after "Right.": 18 floor turns.
    assert len(turns) == 18
    # Gaps: every floor transfer through silence; their median is near the script's median gap (0.6 s).
    gaps = events[events.event == "gap"]
    assert len(gaps) + 1 == len(turns) - 1  # 17 transfers, one of them through an overlap
    assert gaps.duration.median() == pytest.approx(0.6, abs=0.1)
    # The TSV holds the table, times to the millisecond.
    path = detected.write_tsv(tmp_path / "speech.tsv")
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(back.columns) == list(speech_mod.EVENT_COLUMNS)
    np.testing.assert_allclose(back.onset, events.onset, atol=5e-4)


@pytest.mark.parametrize("rate_b", [48000, 44100])
def test_microphones_on_different_rates_and_starts(conversation: voices.SimulatedConversation, rate_b: int) -> None:
    """B's microphone at 48 kHz (a rate the detector takes) or 44.1 kHz (resampled to 16 kHz for it),
    starting 0.5 s later and 0.3 s shorter: frames follow the timestamps."""
    a = speech_mod.Microphone.from_arrays("A", conversation.microphones["A"], conversation.timestamps(T0))
    b_high = signal.resample_poly(conversation.microphones["B"], rate_b // 100, 160).astype(np.float32)
    b_times = T0 + np.arange(b_high.size) / rate_b
    keep = (b_times >= T0 + 0.5) & (b_times <= b_times[-1] - 0.3)
    b = speech_mod.Microphone.from_arrays("B", b_high[keep], b_times[keep])
    assert b.rate == rate_b
    found = speech_mod.detect_speech([a, b])
    assert found.start == pytest.approx(T0 + 0.5, abs=1 / rate_b)
    errors = _onset_errors(conversation, found, T0)
    assert np.median(np.abs(errors)) <= 0.050


def test_equal_levels_are_flagged_and_bad_input_refused(conversation: voices.SimulatedConversation) -> None:
    loud = voices.simulate_conversation(voices.DEFAULT_SCRIPT[:4], crosstalk_db=-2.0)
    found = speech_mod.detect_speech(_microphones(loud))
    assert any("cannot be told apart" in note for note in found.notes)
    silent = _microphones(loud)
    silent[1] = speech_mod.Microphone.from_arrays("B", np.zeros_like(silent[1].samples), silent[1].timestamps)
    found = speech_mod.detect_speech(silent)
    assert not found.speech["B"].any() and any("No speech found in microphone B" in note for note in found.notes)
    with pytest.raises(speech_mod.SpeechError, match="one time per sample"):
        speech_mod.Microphone.from_arrays("A", np.zeros(100), np.arange(99) / 16000)
    late = [_microphones(conversation)[0], _microphones(conversation, start=T0 + 1000)[1]]
    with pytest.raises(speech_mod.SpeechError, match="do not overlap"):
        speech_mod.detect_speech(late)


# --------------------------------------------------------------------------- synchrony by speaking role

EEG_RATE = 128.0
#: The listener's EEG follows the speaker's alpha rhythm this much later while B speaks.
B_LEADS_S = 0.4


@pytest.fixture(scope="module")
def role_check(tmp_path_factory: pytest.TempPathFactory, conversation: voices.SimulatedConversation) -> dict[str, Any]:
    """A session of rest then the conversation (twice over): the simulated EEG is coupled in theta
    (zero lag) only while A speaks alone, and while B speaks alone A's EEG repeats an alpha rhythm
    of B's 0.4 s later. Checked with the speaking-role split and the lag analysis."""
    from dyadlab.acquisition.simulator import DEFAULT_CHANNEL_NAMES, simulate_dyad
    from dyadlab.acquisition.streams import ParticipantInfo, audio_stream_info
    from tests.synchrony.xdf_fixtures import BLOCK_GAP_S, DyadSpec, _session_timeline, write_session_xdf

    conv = conversation.tiled(2)
    blocks = [("rest", 20.0), ("conversation", conv.duration_s)]
    duration, events = _session_timeline(blocks)
    conv_start = BLOCK_GAP_S + 20.0 + BLOCK_GAP_S
    schedule = [("rest", conv_start)] + voices.speaking_state_schedule(
        conv.turns, conv.labels, conv.duration_s, prefix="conversation:"
    )
    dyad = simulate_dyad(
        duration,
        schedule,
        sampling_rate=EEG_RATE,
        seed=3,
        blinks=False,
        coupling={
            "conversation:A-speaks": {"theta": 0.8},
            "conversation:B-speaks": {},
            "conversation:overlap": {},
            "conversation:silence": {},
        },
    )
    n_before = int(round(conv_start * EEG_RATE))
    states = np.concatenate(
        [
            np.full(n_before, "silence", dtype=object),
            voices.speaking_states(conv.turns, conv.labels, EEG_RATE, dyad.a.shape[1] - n_before),
        ]
    )
    speaker, listener = voices.speaker_led_component(
        states, EEG_RATE, speaker_state="B-speaks", listener_lag_s=B_LEADS_S, band_hz=(9.0, 11.0), seed=5
    )
    eeg_b, eeg_a = dyad.b + speaker, dyad.a + listener
    microphones = []
    for label in conv.labels:
        info = audio_stream_info(
            "test",
            "d01",
            ParticipantInfo(label, f"sub-{label}", "partner"),
            sample_rate=conv.rate,
            device={"name": "simulated"},
        )
        microphones.append((info.as_xml(), conv_start + conv.timestamps(), conv.microphones[label][:, None]))
    path = write_session_xdf(
        tmp_path_factory.mktemp("speech") / "conversation.xdf",
        eeg_a,
        eeg_b,
        list(DEFAULT_CHANNEL_NAMES),
        events,
        DyadSpec(rate_a=EEG_RATE, rate_b=EEG_RATE),
        microphones,
    )
    tsv = path.with_name("conversation_speech.tsv")
    result = run_check(
        path,
        bands={"theta": (4.0, 7.0), "alpha": (8.0, 12.0)},
        metrics=["plv", "envcorr"],
        n_surrogates=100,
        progress=False,
        json_out=path.with_suffix(".json"),
        speech=SpeechOptions(lags=True),
        speech_tsv=tsv,
    )
    return {"result": result, "tsv": tsv, "conv": conv, "path": path}


def test_role_coupling_is_found_in_its_speaking_state_only(role_check: dict[str, Any]) -> None:
    conditions = role_check["result"]["conditions"]
    assert {"rest", "conversation:A-speaks", "conversation:B-speaks"} <= set(conditions)
    assert "conversation" not in conditions  # replaced by its speaking states
    z = {
        name: conditions[name]["theta"]["plv"]["z"]
        for name in ("rest", "conversation:A-speaks", "conversation:B-speaks")
    }
    # z >= 3 is the verdict's detection rule; with ~25 epochs of coupling 0.8 the planted effect is far above it.
    assert z["conversation:A-speaks"] >= 3.0, z
    assert abs(z["conversation:B-speaks"]) < 3.0 and abs(z["rest"]) < 3.0, z
    # Each state's duration is its time in the state, close to the script's (detected vs true, within 10 %).
    truth = voices.speaking_states(
        role_check["conv"].turns, ("A", "B"), 100.0, int(role_check["conv"].duration_s * 100)
    )
    assert conditions["conversation:A-speaks"]["duration_s"] == pytest.approx(
        (truth == "A-speaks").sum() / 100, rel=0.1
    )


def test_speaker_to_listener_lag_is_found(role_check: dict[str, Any]) -> None:
    entries = {e["condition"]: e for e in role_check["result"]["speech"]["speaker_listener"]}
    b_leads = entries["conversation:B-speaks"]["bands"]["alpha"]["plv"]
    a_leads = entries["conversation:A-speaks"]["bands"]["alpha"]["plv"]
    lags = entries["conversation:B-speaks"]["lags_s"]
    # The planted lag is the peak, one lag step (0.1 s) either way at most, and clearly above chance there.
    assert b_leads["peak_lag_s"] == pytest.approx(B_LEADS_S, abs=0.1 + 1e-9)
    assert max(b_leads["z"]) >= 3.0
    # At zero lag the rhythm has moved on (its coherence time at 2 Hz bandwidth is ~0.2 s): lower than the peak.
    assert b_leads["z"][lags.index(0.0)] < max(b_leads["z"]) - 2.0
    # While A speaks, no alpha coupling at any lag.
    assert max(a_leads["z"]) < 3.0, a_leads["z"]
    # The zero-lag theta coupling of A-speaks peaks at lag 0.
    assert entries["conversation:A-speaks"]["bands"]["theta"]["plv"]["peak_lag_s"] == 0.0


def test_too_few_epochs_get_a_note(role_check: dict[str, Any]) -> None:
    result = role_check["result"]
    states = {s["state"]: s for s in result["speech"]["states"]}
    assert states["overlap"]["n_epochs"] < MIN_EPOCHS_STATS  # ~6 s of overlap: no 2-s epoch is 75 % overlap
    notes = [w for w in result["warnings"] if w.startswith("Speaking state 'overlap'")]
    assert len(notes) == 1 and f"at least {MIN_EPOCHS_STATS}" in notes[0] and f"{math.factorial(8):,}" in notes[0]
    assert result["speech"]["min_epochs"] == MIN_EPOCHS_STATS


def test_speech_section_and_tsv(role_check: dict[str, Any]) -> None:
    from dyadlab.synchrony.results import QuickCheckResult

    result = role_check["result"]
    QuickCheckResult.model_validate(result)  # the schema holds the new section
    speech = result["speech"]
    assert speech["events_tsv"] == str(role_check["tsv"])
    table = pd.read_csv(role_check["tsv"], sep="\t", keep_default_na=False)
    assert set(table.event) == {"speech", "turn", "overlap", "pause", "gap"}
    assert len(speech["turns"]) == (table.event == "turn").sum() == 36  # 18 per copy of the script
    for label in ("A", "B"):
        assert speech["participants"][label]["crosstalk_db"] == pytest.approx(-12.0, abs=1.0)
    assert result["inputs"]["speech"]["lags"] is True


def test_lags_need_a_continuous_band_signal() -> None:
    from dyadlab.synchrony.check import CheckSettings, QuickCheckError

    with pytest.raises(QuickCheckError, match="--speech-lags"):
        CheckSettings.from_options(band_filter="hypyp-epochs", speech=SpeechOptions(lags=True))
    with pytest.raises(speech_mod.SpeechError, match="most of the epoch"):
        SpeechOptions(min_state_fraction=0.5)


def test_no_speech_option_checks_the_conversation_as_one_condition(role_check: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from dyadlab.synchrony.cli import check

    path = role_check["path"]
    json_path, tsv = path.with_name("no-speech.json"), path.with_name("no-speech.tsv")
    arguments = [str(path), "--bands", "theta=4-7", "--surrogates", "20", "--no-speech", "--speech-tsv", str(tsv)]
    outcome = CliRunner().invoke(check, [*arguments, "--json", str(json_path), "--no-progress"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(json_path.read_text())
    assert set(result["conditions"]) == {"rest", "conversation"}
    assert "speech" not in result and result["inputs"]["speech"] is None and not tsv.exists()
