"""``dyadlab live-speech``: live speech events over real LSL, the protocol option, the session helper.

Two real LSL outlets with the microphone streams' contract (``audio_stream_info``) push a
synthesised conversation (eSpeak NG, ``dyadlab.acquisition.voices``) faster than real time on
loopback; the publisher reads them through its own inlets and publishes its events, which a
third inlet receives. The events are compared with the offline detector on the audio pushed.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dyadlab.acquisition import voices
from dyadlab.acquisition.lslconfig import LslConfig
from dyadlab.acquisition.streams import ParticipantInfo, audio_stream_info, source_id
from dyadlab.protocols.live_speech import STREAM_NAME, STREAM_TYPE, LiveSpeechPublisher
from dyadlab.protocols.live_synchrony import SessionHelpers
from dyadlab.protocols.schema import ProtocolError, validate_protocol_text
from dyadlab.synchrony import speech as speech_mod
from dyadlab.synchrony.io import _stream_kind as xdf_stream_kind
from tests.protocols.test_schema import BASE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not voices.espeak_available(), reason="espeak-ng is not installed (.ci/system-deps.sh)"),
]

#: The audio is pushed this many times faster than real time (the detector runs ~50x real time).
SPEEDUP = 16.0
#: Audio per push: a capture's pump interval (acquisition/audio.py PUMP_INTERVAL_S).
CHUNK_S = 0.05


def _ids() -> tuple[str, str]:
    """A study and dyad of this test alone (parallel workers have their own LSL SessionID too)."""
    return f"ls{uuid.uuid4().hex[:8]}", "D01"


def pyxdf_header(xml: str) -> dict[str, Any]:
    """A stream header as pyxdf reads it from an XDF file."""
    from xml.etree.ElementTree import fromstring

    from pyxdf.pyxdf import _xml2dict

    return _xml2dict(fromstring(xml))


def _resolve(wanted: str, timeout: float = 10.0) -> Any:
    import pylsl

    found = pylsl.resolve_byprop("source_id", wanted, timeout=timeout)
    assert found, f"no stream {wanted} within {timeout} s"
    return found[0]


def test_live_speech_over_lsl_equals_the_offline_detector(lsl_session_id: str) -> None:
    import pylsl

    conversation = voices.simulate_conversation(voices.DEFAULT_SCRIPT[:8])  # 32 s, with a backchannel
    rate = conversation.rate
    study, dyad = _ids()
    outlets = {
        label: pylsl.StreamOutlet(
            audio_stream_info(
                study, dyad, ParticipantInfo(label, f"sub-0{i + 1}"), sample_rate=rate, device={"name": "test"}
            )
        )
        for i, label in enumerate(conversation.labels)
    }
    publisher = LiveSpeechPublisher(study, dyad, conversation.labels, resolve_timeout=10.0)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            publisher.run(stop)
        except BaseException as error:  # handed to the test thread
            failure.append(error)

    worker = threading.Thread(target=run, name="live-speech", daemon=True)
    worker.start()
    try:
        info = _resolve(source_id(study, dyad, "speech"))
        assert (info.name(), info.type(), info.channel_format()) == (STREAM_NAME, STREAM_TYPE, pylsl.cf_string)
        events_inlet = pylsl.StreamInlet(info, processing_flags=pylsl.proc_clocksync)
        events_inlet.open_stream(timeout=5.0)
        # The quick-check reads the stream's header as pyxdf parses it from the XDF: it is not taken for
        # the session's marker stream (whose blocks and events the check analyses).
        header = pyxdf_header(events_inlet.info(timeout=5.0).as_xml())
        assert xdf_stream_kind({"info": header["info"]}) == "speech"
        for outlet in outlets.values():  # the publisher is connected before audio flows
            assert outlet.wait_for_consumers(10.0)
        received: list[tuple[dict[str, Any], float]] = []

        def receive() -> None:
            samples, stamps = events_inlet.pull_chunk(timeout=0.0)
            received.extend((json.loads(sample[0]), stamp) for sample, stamp in zip(samples, stamps))

        # The audio on the LSL clock, pushed in 50-ms chunks SPEEDUP times faster than it was spoken.
        times = pylsl.local_clock() + np.arange(conversation.microphones["A"].size) / rate
        chunk = int(CHUNK_S * rate)
        began = time.monotonic()
        for k, lo in enumerate(range(0, times.size, chunk)):
            for label, outlet in outlets.items():
                samples = conversation.microphones[label][lo : lo + chunk]
                outlet.push_chunk(samples.reshape(-1, 1).tolist(), times[lo : lo + chunk].tolist())
            receive()
            time.sleep(max(0.0, began + (k + 1) * CHUNK_S / SPEEDUP - time.monotonic()))
        # Wait until all the audio is analysed (the grid's last frame ends within a frame of the last
        # sample) and every event published has arrived. The conversation ends in a second of silence:
        # every speech has ended (and been reported bridge_s later) before the audio ends.
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not failure:
            receive()
            if (publisher.analysed_until or 0.0) >= times[-1] - 0.02 and len(received) == publisher.published:
                break
            time.sleep(0.05)
        assert (publisher.analysed_until or 0.0) >= times[-1] - 0.02, (publisher.analysed_until, times[-1])
        assert len(received) == publisher.published > 0
    finally:
        stop.set()
        worker.join(10.0)
    assert not failure, failure

    offline = speech_mod.detect_speech(
        [
            speech_mod.Microphone.from_arrays(label, conversation.microphones[label], times)
            for label in conversation.labels
        ]
    )
    for label in conversation.labels:
        mine = [(payload["event"], stamp) for payload, stamp in received if payload["participant"] == label]
        assert [kind for kind, _ in mine] == ["speech_on", "speech_off"] * (len(mine) // 2), mine
        live = np.array([stamp for _, stamp in mine]).reshape(-1, 2)
        reference = np.array(offline.segments(label))
        assert live.shape == reference.shape, (label, live - times[0], reference - times[0])
        # Stamped on the audio's clock at the offline detector's frames. The publisher's inlet corrects
        # the clock offset it measures on loopback (tens of microseconds, under a sample): that can move
        # a frame's first sample by one sample and a decision by at most one frame.
        assert np.max(np.abs(live - reference)) <= offline.frame_s + 1e-4, np.round((live - reference) * 1e3, 2)
    delays = [payload["delay_s"] for payload, _ in received]
    assert min(delays) >= speech_mod.SpeechSettings().min_speech_s - 1e-3


def _protocol(microphones: dict[str, Any]) -> str:
    data: dict[str, Any] = copy.deepcopy(BASE)
    data["blocks"] = data["blocks"][:1]
    data["microphones"] = {
        "record_audio": True,
        "devices": {"A": {"device": "simulator"}, "B": {"device": "simulator"}},
        **microphones,
    }
    return yaml.safe_dump(data, sort_keys=False)


def test_the_protocol_option_is_off_by_default_and_checked() -> None:
    assert validate_protocol_text(_protocol({})).microphones.live_speech is False  # type: ignore[union-attr]
    assert validate_protocol_text(_protocol({"live_speech": True})).microphones.live_speech  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as refused:
        validate_protocol_text(_protocol({"live_speech": True, "record_audio": False, "sample_rate": 44100}))
    text = str(refused.value)
    assert "record_audio is false" in text and "44100 Hz" in text and "16000" in text, text


def test_a_session_starts_and_stops_the_detector(tmp_path: Path, lsl_session_id: str) -> None:
    """``dyadlab run``'s helpers: the detector runs as ``dyadlab live-speech`` in a process of its own,
    its stream appears at once (before any microphone), and it ends cleanly when the session stops."""
    study, dyad = _ids()
    warnings: list[str] = []
    helpers = SessionHelpers(
        study,
        dyad,
        LslConfig(session_id=lsl_session_id),
        tmp_path / "session",
        status=lambda stage, message: None,
        warn=warnings.append,
    )
    try:
        helpers.start(live_synchrony=None, monitor=None, live_speech=["A", "B"])
        assert not warnings, warnings
        helper = helpers.helpers["live-speech"]
        assert helper.running
        expected = ["live-speech", "--study", study, "--dyad", dyad, "--label-a", "A", "--label-b", "B"]
        assert helper.command[3:] == [*expected, "--until-stdin-closes"]
    finally:
        helpers.stop()
    assert not warnings, warnings
    record = helpers.record()["live-speech"]
    assert record["problem"] is None and record["exit_code"] in (0, -15), record
    assert f"publishing live speech as {source_id(study, dyad, 'speech')}" in Path(record["log"]).read_text()
