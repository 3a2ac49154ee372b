"""Microphones as LSL streams: the clock fit, device lookup, preflight checks, and the real capture
path through a virtual sound device (a private PulseAudio server, tests/acquisition/virtual_audio.py).

The capture tests play known signals into PulseAudio null sinks whose monitors are the
microphones, while :class:`~dyadlab.acquisition.audio.MicrophoneCapture` publishes them and the
real :class:`~dyadlab.acquisition.recorder.LslRecorder` writes the XDF. Nothing is mocked: PortAudio,
ALSA's pulse plugin, PulseAudio, liblsl and libsndfile all run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyxdf
import soundfile
from scipy import signal as sps

from dyadlab.acquisition import audio
from dyadlab.acquisition.audio import (
    AudioDeviceError,
    CaptureClock,
    InputDevice,
    MicrophoneSpec,
    find_input_device,
    microphone_problems,
    open_microphones,
    times_path,
)
from dyadlab.acquisition.streams import ParticipantInfo
from tests.acquisition.virtual_audio import VirtualAudio, VirtualAudioUnavailable, play, talking, virtual_microphones

logger = logging.getLogger(__name__)

RATE = 16000
PEOPLE = (ParticipantInfo("A", "sub-01"), ParticipantInfo("B", "sub-02"))


# -- the clock fit -----------------------------------------------------------------------------


def test_capture_clock_recovers_offset_and_drift_from_jittery_observations() -> None:
    """A sound card 80 ppm fast against LSL, observed every 20 ms with 3 ms jitter and 1 % of the
    estimates half a second off (what PulseAudio's plugin reports right after a start): after
    60 s every stamp sits within 0.6 ms of the truth and the drift within 16 ppm. The bounds are
    4 sigma of the fit: each one-second bin's median of 50 observations is off by
    3 ms * 1.25 / sqrt(50) = 0.53 ms; a line through 60 bins has a slope error of
    0.53 ms / sqrt(60 * 300 s^2) = 4 ppm and, 30 s from its centre, 0.14 ms of stamp error."""
    rng = np.random.default_rng(3)
    rate, drift, offset = 16000.0, 80e-6, 1234.5678
    clock = CaptureClock(rate)
    block = 320
    for first in range(0, int(60 * rate), block):
        truth = offset + (1 + drift) * first / rate
        error = rng.normal(0, 0.003) + (0.5 if rng.random() < 0.01 else 0.0)
        clock.observe(first, truth + error)
    samples = np.arange(0, int(60 * rate), 1000)
    truth = offset + (1 + drift) * samples / rate
    assert np.max(np.abs(clock.stamps(0, int(60 * rate))[samples] - truth)) < 6e-4
    assert clock.to_dict()["drift_ppm"] == pytest.approx(80, abs=16)


def test_capture_clock_restarts_after_lost_samples() -> None:
    """After an overflow the sample count skips: the fit from there must not average across it."""
    rate = 16000.0
    clock = CaptureClock(rate)
    for first in range(0, int(30 * rate), 320):
        clock.observe(first, 10.0 + first / rate)
    lost = 0.25  # seconds the device dropped before sample n
    n = int(30 * rate)
    clock.restart(n)
    for first in range(n, n + int(5 * rate), 320):
        clock.observe(first, 10.0 + lost + first / rate)
    assert clock.stamps(n, 1)[0] == pytest.approx(10.0 + lost + n / rate, abs=1e-6)


def test_capture_clock_follows_a_step_of_the_capture_times() -> None:
    """The first 4 s of capture times 113 ms early (a capture published before its host API
    settled, measured under load), then right: three bins after the step the stamps are right
    to 0.1 ms (observations without jitter here), where a median over all bins would stay off."""
    rate = 16000.0
    clock = CaptureClock(rate)
    for first in range(0, int(10 * rate), 320):
        early = 0.113 if first < 4 * rate else 0.0
        clock.observe(first, 50.0 + first / rate - early)
    assert clock.stamps(int(10 * rate), 1)[0] == pytest.approx(50.0 + 10.0, abs=1e-4)
    assert clock.to_dict()["steps_followed_s"] == [pytest.approx(0.113, abs=1e-3)]


# -- device lookup ------------------------------------------------------------------------------

DEVICES = [
    InputDevice(0, "Built-in Audio Analog Stereo", "ALSA", 2, 48000.0),
    InputDevice(1, "Scarlett 2i2 USB", "ALSA", 2, 48000.0),
    InputDevice(2, "Scarlett 2i2 USB", "JACK Audio Connection Kit", 2, 48000.0),
    InputDevice(3, "USB PnP Sound Device", "ALSA", 1, 44100.0),
]


def test_a_device_is_found_by_part_of_its_name() -> None:
    assert find_input_device(MicrophoneSpec("pnp sound"), DEVICES).index == 3
    assert find_input_device(MicrophoneSpec("Scarlett 2i2 USB, ALSA", channel=2), DEVICES).index == 1


def test_device_errors_say_what_exists_and_what_to_write() -> None:
    with pytest.raises(AudioDeviceError, match=r"no audio input named like 'Rode'.*'USB PnP Sound Device, ALSA'"):
        find_input_device(MicrophoneSpec("Rode"), DEVICES)
    with pytest.raises(AudioDeviceError, match=r"matches 2 audio inputs.*host API too"):
        find_input_device(MicrophoneSpec("scarlett"), DEVICES)
    with pytest.raises(AudioDeviceError, match=r"has 1 input channel\(s\).*channel 2"):
        find_input_device(MicrophoneSpec("PnP", channel=2), DEVICES)


_PROTOCOL = """
version: 1
name: talk
study: audiotest
dyad: D01
participants:
  - {label: A, id: sub-01, device: {board: simulator}}
  - {label: B, id: sub-02, device: {board: simulator}}
blocks:
  - {task: rest, duration: 2}
"""


def test_the_protocol_says_whether_audio_is_recorded_and_whose_microphone_is_which() -> None:
    from dyadlab.protocols.schema import ProtocolError, validate_protocol_text

    assert validate_protocol_text(_PROTOCOL).microphones is None  # no section: no audio, as before
    with pytest.raises(ProtocolError) as implicit:
        validate_protocol_text(_PROTOCOL + "microphones:\n  devices: {A: {device: Scarlett}, B: {device: Zoom}}\n")
    assert [issue.field for issue in implicit.value.issues] == ["microphones.record_audio"]
    with pytest.raises(ProtocolError) as wrong:
        validate_protocol_text(
            _PROTOCOL + "microphones:\n  record_audio: true\n"
            "  devices: {A: {device: Scarlett, channel: 2}, C: {device: scarlett, channel: 2}}\n"
        )
    messages = [issue.message for issue in wrong.value.issues]
    assert "no participant has the label 'C'" in messages
    assert "participant B has no microphone" in messages
    assert "participants A and C are given the same microphone channel" in messages
    off = validate_protocol_text(
        _PROTOCOL + "microphones:\n  record_audio: false\n  devices: {A: {device: X}, B: {device: Y}}\n"
    )
    assert off.microphones is not None and off.microphones.record_audio is False


# -- preflight on known signals ---------------------------------------------------------------


def _speech_like(rng: np.random.Generator, seconds: float, level: float) -> np.ndarray:
    """Noise under a syllable-rate (4 Hz) on/off envelope, like speech's level pattern."""
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = (np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) > 0).astype(float)
    envelope = np.convolve(envelope, np.hanning(320) / np.hanning(320).sum(), mode="same")
    return (level * envelope * rng.standard_normal(t.size)).astype(np.float32)


def test_preflight_names_silent_clipping_and_shared_microphones() -> None:
    rng = np.random.default_rng(5)
    voice_a, voice_b = _speech_like(rng, 3, 0.05), _speech_like(rng, 3, 0.05)
    # Each headset hears its own speaker, the partner 20 dB lower: ready.
    assert microphone_problems({"A": voice_a + 0.1 * voice_b, "B": voice_b + 0.1 * voice_a}, RATE) == []
    problems = microphone_problems({"A": np.zeros(3 * RATE, np.float32), "B": np.clip(voice_b * 40, -1, 1)}, RATE)
    assert [(p.participant, p.severity) for p in problems] == [("A", "error"), ("B", "error")]
    assert "silent" in problems[0].message and "clips" in problems[1].message
    # One room microphone split to both channels: both hear the same sound alike.
    room = voice_a + voice_b
    shared = microphone_problems({"A": room, "B": room * 0.9}, RATE)
    assert [p.severity for p in shared] == ["warning"] and "same sound alike" in shared[0].message
    # Only A speaks during the check: B's headset hears A 20 dB down, which is as it should be.
    assert microphone_problems({"A": voice_a, "B": 0.1 * voice_a}, RATE) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/system-deps.sh)")
def test_preflight_on_synthesised_speech_tells_headsets_from_one_shared_microphone() -> None:
    """Two synthesised speakers taking turns (eSpeak NG, acquisition/voices.py), each headset
    hearing the partner 12 dB down: ready. The same conversation through one microphone split to
    both channels: the warning. Two turns keep it short (~4 s of speech)."""
    from dyadlab.acquisition.voices import simulate_conversation

    script = (
        ("A", "Did you find the lab without any trouble?", 0.0),
        ("B", "Yes, I took the bus and walked across the park.", 0.4),
    )
    conversation = simulate_conversation(script, rate=RATE, lead_in_s=0.3, tail_s=0.3)
    assert microphone_problems(conversation.microphones, RATE) == []
    room = conversation.voices["A"] + conversation.voices["B"]
    shared = microphone_problems({"A": room, "B": room}, RATE)
    assert [p.severity for p in shared] == ["warning"] and "same sound alike" in shared[0].message


# -- the real capture path ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    try:
        with virtual_microphones(tmp_path_factory.mktemp("pulse")) as devices:
            audio.list_input_devices(rescan=True)  # PortAudio may have listed devices before they existed
            yield devices
    except VirtualAudioUnavailable as error:
        pytest.skip(f"no virtual sound device: {error}")


def _onsets(samples: np.ndarray, threshold: float, min_gap: int) -> np.ndarray:
    above = np.flatnonzero(np.abs(samples) > threshold)
    if above.size == 0:
        return above
    return above[np.concatenate([[True], np.diff(above) > min_gap])]


def _wait_for_samples(captures: list[audio.MicrophoneCapture], seconds: float, timeout: float = 15.0) -> None:
    """Until every capture has published ``seconds`` of audio (PortAudio through PulseAudio takes
    ~1-2 s to deliver, then the capture settles, see MicrophoneCapture._settle)."""
    deadline = time.monotonic() + timeout
    while any(c.status.samples < seconds * RATE for c in captures):
        assert time.monotonic() < deadline, f"capture too slow: {[c.status for c in captures]}"
        time.sleep(0.05)


def _best_correlation(recorded: np.ndarray, played: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``played`` within ``recorded`` (any lag)."""
    recorded = recorded.astype(np.float64)
    played = played - played.mean()
    numerator = sps.correlate(recorded, played, mode="valid", method="fft")
    running = np.concatenate([[0.0], np.cumsum(recorded**2)])
    energy = running[played.size :] - running[: -played.size]  # recorded energy under each lag
    floor = played.size * 10 ** (audio.SILENCE_DBFS / 10)  # silence correlates with nothing
    return float(np.max(np.abs(numerator) / np.sqrt(np.maximum(energy, floor) * np.sum(played**2))))


@pytest.mark.integration
def test_played_audio_and_clicks_arrive_in_the_xdf_on_time(
    virtual_audio: VirtualAudio, tmp_path: Path, unique_id: str
) -> None:
    """Known audio played into both virtual microphones comes back in the XDF and the FLAC files:
    each recording matches its own signal (normalised cross-correlation >= 0.9) and not the
    partner's, and each click lands within 5 ms of the marker pushed for it (the issue's bound
    for speech-to-EEG analyses). The marker's time is the moment PortAudio writes the click to
    the device (its DAC time), as a task pushes a marker when it plays a sound."""
    import pylsl

    from dyadlab.acquisition.recorder import LslRecorder, StreamSelector

    study, dyad = "audiotest", f"d{unique_id}"
    specs = {p.label: MicrophoneSpec(virtual_audio.microphone(p.label), sample_rate=RATE) for p in PEOPLE}
    xdf = tmp_path / "session.xdf"
    marker_id = f"dyadlab.{study}.{dyad}.markers"
    markers = pylsl.StreamOutlet(pylsl.StreamInfo("clicks", "Markers", 1, 0, "double64", marker_id))
    with contextlib.ExitStack() as stack:
        captures = open_microphones(specs, PEOPLE, study=study, dyad=dyad, flac_stem=tmp_path / "session")
        for capture in captures:
            stack.callback(capture.release)
            capture.start()
        selectors = [StreamSelector(source_id=c.source_id) for c in captures] + [StreamSelector(source_id=marker_id)]
        recorder = LslRecorder(xdf, selectors, wait_for_streams=10.0)
        recorder.start()
        stack.callback(recorder.stop)
        _wait_for_samples(captures, 0.5)
        time.sleep(0.5)  # the recorder's inlets are subscribed before the first click

        rng = np.random.default_rng(11)
        # Silence first: right after an output stream starts, PulseAudio's ALSA plugin misreports
        # its delay (clicks played then landed 80-160 ms before their DAC times, measured), as it
        # does for a capture stream (see MicrophoneCapture._settle).
        click_at = [int(s * RATE) for s in (2.0, 2.45, 2.9, 3.35)]
        noise_start = int(3.7 * RATE)
        played = {}
        for label in ("A", "B"):
            signal = np.zeros(int(5.2 * RATE), np.float32)
            signal[noise_start:] = sps.lfilter(
                *sps.butter(4, [200, 3000], "bandpass", fs=RATE), rng.normal(0, 0.2, signal.size - noise_start)
            )
            played[label] = signal
        for at in click_at:
            played["A"][at : at + 8] = 0.8
        sounded: dict[str, list[float]] = {}
        player_b = threading.Thread(
            target=lambda: sounded.setdefault("B", play(virtual_audio.speaker("B"), played["B"], RATE))
        )
        player_b.start()
        sounded["A"] = play(virtual_audio.speaker("A"), played["A"], RATE, marks=click_at)
        player_b.join()
        for stamp in sounded["A"]:
            markers.push_sample([stamp], stamp)  # the marker of each click, stamped when it sounded
        time.sleep(0.5)  # the last samples reach the recorder
    streams = {
        s["info"]["name"][0]: s
        for s in pyxdf.load_xdf(str(xdf), synchronize_clocks=False, dejitter_timestamps=False)[0]
    }
    assert {"dyadlab-audio-A", "dyadlab-audio-B", "clicks"} <= set(streams)
    stream_a = streams["dyadlab-audio-A"]
    assert stream_a["info"]["type"] == ["Audio"]
    assert stream_a["info"]["desc"][0]["device"][0]["name"] == [virtual_audio.microphone("A")]
    recorded = {label: streams[f"dyadlab-audio-{label}"]["time_series"][:, 0] for label in ("A", "B")}

    # Clicks against their markers.
    stamps = np.asarray(stream_a["time_stamps"])
    onsets = _onsets(recorded["A"][: np.searchsorted(stamps, sounded["A"][-1] + 0.2)], 0.3, RATE // 10)
    click_stamps = stamps[onsets]
    marker_stamps = np.asarray(streams["clicks"]["time_stamps"])
    assert click_stamps.size == len(click_at), f"clicks found at {click_stamps - marker_stamps[0]}"
    errors_ms = (click_stamps - marker_stamps) * 1e3
    logger.info("click minus marker (ms): %s", np.round(errors_ms, 2))
    assert np.max(np.abs(errors_ms)) <= 5.0, f"clicks off their markers by {errors_ms} ms"

    # The noise each participant's microphone heard is theirs, not the partner's.
    for label, other in (("A", "B"), ("B", "A")):
        noise = played[label][noise_start + RATE // 10 : noise_start + RATE // 10 + RATE]
        own = _best_correlation(recorded[label], noise)
        crossed = _best_correlation(recorded[other], noise)
        assert own >= 0.9, f"microphone {label} matches its signal at {own:.3f}"
        assert crossed < 0.2, f"microphone {other} hears {label}'s signal ({crossed:.3f})"

    # The FLAC file holds the same samples; its times file places them on the XDF's clock.
    for label in ("A", "B"):
        flac = tmp_path / f"session_audio-{label}.flac"
        data, rate = soundfile.read(flac, dtype="float32")
        assert rate == RATE
        table = np.loadtxt(times_path(flac), skiprows=1, ndmin=2)
        xdf_stamps = np.asarray(streams[f"dyadlab-audio-{label}"]["time_stamps"])
        row = table[np.searchsorted(table[:, 1], xdf_stamps[0] + 0.5 / RATE, side="right") - 1]
        first = int(round(row[0] + (xdf_stamps[0] - row[1]) * RATE / (1 + row[2] * 1e-6)))
        in_file = data[first : first + recorded[label].size]
        np.testing.assert_array_equal(in_file, recorded[label].astype(np.float32))


@pytest.mark.integration
def test_a_missing_microphone_is_named_before_any_device_opens(virtual_audio: VirtualAudio) -> None:
    specs = {"A": MicrophoneSpec(virtual_audio.microphone("A")), "B": MicrophoneSpec("Zoom H5 (not plugged in)")}
    with pytest.raises(AudioDeviceError) as raised:
        open_microphones(specs, PEOPLE, study="audiotest", dyad="d1", flac_stem=None)
    message = str(raised.value)
    assert "participant B's microphone" in message and "'Zoom H5 (not plugged in)'" in message
    assert virtual_audio.microphone("A") in message  # what is there, to copy into the protocol
    assert "participant A" not in message
    assert audio._open_streams == 0, "no input stream was opened"


@pytest.mark.integration
def test_a_silent_microphone_fails_preflight_with_a_clear_message(virtual_audio: VirtualAudio, unique_id: str) -> None:
    """Nothing plays into the sink: the microphone delivers digital silence."""
    specs = {"A": MicrophoneSpec(virtual_audio.microphone("A"), sample_rate=RATE)}
    (capture,) = open_microphones(specs, PEOPLE[:1], study="audiotest", dyad=f"d{unique_id}", flac_stem=None)
    try:
        capture.start()
        _wait_for_samples([capture], 1.0)
        problems = microphone_problems({"A": capture.recent_audio(1.0)}, RATE)
    finally:
        capture.release()
    assert len(problems) == 1 and problems[0].severity == "error"
    assert "silent" in problems[0].message and "unmute" in problems[0].fix


@pytest.mark.integration
@pytest.mark.display
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")
def test_a_session_with_microphones_records_both_voices(virtual_audio: VirtualAudio, tmp_path: Path) -> None:
    """`dyadlab run`'s runner with a microphones section on the virtual devices: the XDF holds
    both audio streams beside the EEG, and a FLAC file per participant lies beside it."""
    import json

    import yaml

    from dyadlab.acquisition.lslconfig import LslConfig
    from dyadlab.protocols.runner import SessionRunner
    from dyadlab.protocols.schema import load_protocol

    protocol = {
        "version": 1,
        "name": "audio-pilot",
        "study": "audiotest",
        "dyad": "D01",
        "participants": [
            {"label": "A", "id": "sub-01", "device": {"board": "simulator"}},
            {"label": "B", "id": "sub-02", "device": {"board": "simulator"}},
        ],
        # No instruction screen: no simulated key press is needed. Twice in clean-clone CI runs of
        # the whole suite (never alone or in this file) the autopilot's XTEST connection was closed
        # by the X server before its presses arrived, and the session waited on its first screen.
        "blocks": [{"task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}}],
        "screens": {"layout": "shared", "fullscreen": False, "size": [640, 480], "check_timing": False},
        "preflight": {"enabled": True, "seconds": 1},
        "quickcheck": {"enabled": False},
        "microphones": {
            "record_audio": True,
            "sample_rate": RATE,
            "devices": {label: {"device": virtual_audio.microphone(label)} for label in ("A", "B")},
        },
    }
    path = tmp_path / "audio-pilot.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    runner = SessionRunner(
        # simulate=False: the boards are simulators by the protocol, the microphones real (--simulate
        # would simulate them too).
        load_protocol(path),
        out_dir=tmp_path / "out",
        simulate=False,
        autopilot=True,
        speed=3.0,
        lsl_config=LslConfig(),
    )
    with talking({label: virtual_audio.speaker(label) for label in ("A", "B")}, RATE):
        result = runner.run()
    assert result.complete, result.problems
    streams = pyxdf.load_xdf(str(result.files["xdf"]))[0]
    audio_streams = {s["info"]["name"][0]: s for s in streams if s["info"]["type"][0] == "Audio"}
    assert set(audio_streams) == {"dyadlab-audio-A", "dyadlab-audio-B"}
    session = json.loads(result.files["session"].read_text())
    for label in ("A", "B"):
        recorded = audio_streams[f"dyadlab-audio-{label}"]
        seconds = len(recorded["time_stamps"]) / RATE
        assert seconds >= 3.0 / 3.0, f"{label}: {seconds:.2f} s of audio for a 1 s block"
        flac = result.files[f"audio_{label}"]
        assert flac.name.endswith(f"_audio-{label}.flac") and flac.parent == result.files["xdf"].parent
        assert soundfile.info(flac).frames >= len(recorded["time_stamps"])  # the file also holds the preflight
    captures = session["microphones"]["captures"]
    assert [c["device"] for c in captures] == [f"{virtual_audio.microphone(x)}, ALSA" for x in ("A", "B")]
    assert session["microphones"]["record_audio"] is True
    assert session["preflight"]["microphones"] == []  # both hear their own voice
