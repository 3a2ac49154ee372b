"""Live speech detection as an LSL marker stream (``dyadlab live-speech``), a helper of ``dyadlab run``.

The publisher reads both participants' microphone streams (``docs/audio.md``, by ``source_id``),
detects each participant's speech while the audio arrives
(:class:`dyadlab.synchrony.live_speech.LiveSpeechDetector`: the offline detector's frame decision
and cross-talk rule) and publishes the speech on- and offsets as one stream (``docs/speech.md``):

* name ``dyadlab-live-speech``, type ``Markers``, one string channel, irregular rate,
  ``source_id`` ``dyadlab.<study>.<dyad>.speech``;
* each sample one JSON object, e.g. ``{"event":"speech_on","participant":"A","delay_s":0.14}``
  (``speech_on`` or ``speech_off``), stamped with the LSL time of the frame where that speech
  began or ended (the microphones' own clock), pushed ``delay_s`` seconds of audio later (plus
  the audio's transport); one participant's events are in time order;
* ``desc/speech``: the detector's settings and the two microphones' ``source_id`` and rate;
  ``desc/dyadlab``: ``kind`` ``speech``, ``study``, ``dyad`` (the quick-check therefore does not
  take it for the session's marker stream).

The outlet exists from the start, before the microphones are found, so that a recorder started
next records it whole. The microphones' inlets correct the clock offset only (no de-jittering):
the captures' stamps are already steady, and the recorder keeps them as they are, so the events
lie on the same clock as the recorded audio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
import numpy as np

from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config, session_id_in_force
from dyadlab.acquisition.streams import AUDIO_STREAM_TYPE, source_id
from dyadlab.protocols.live_synchrony import (
    RESOLVE_TIMEOUT_S,
    HelperStreamError,
    helper_stop_event,
    resolve_source,
)
from dyadlab.synchrony.live_speech import STALL_S, LiveSpeechDetector, SpeechEvent
from dyadlab.synchrony.speech import VAD_RATES, SpeechError, SpeechSettings

if TYPE_CHECKING:
    import pylsl

logger = logging.getLogger(__name__)

STREAM_NAME = "dyadlab-live-speech"
STREAM_TYPE = "Markers"
#: Seconds between two reads of the microphones' inlets (the events' delay grows by up to this).
_POLL_S = 0.05
#: At most this much audio is read from one microphone before the other is read: a backlog (a
#: stalled process catching up) is worked off in step, so that neither microphone seems stalled.
_READ_S = 0.25


class LiveSpeechError(HelperStreamError):
    """The live speech detector cannot run (a microphone stream missing or unfit)."""


@dataclass(frozen=True)
class MicrophoneInput:
    """One participant's microphone inlet and its rate."""

    label: str
    source_id: str
    inlet: pylsl.StreamInlet
    rate: float


def _open_microphone(label: str, wanted: str, stop: threading.Event, timeout: float) -> MicrophoneInput | None:
    """Resolve ``label``'s microphone stream and open an inlet on it (``None`` if ``stop`` is set first)."""
    import pylsl

    found = resolve_source(wanted, "microphone", stop, timeout)
    if found is None:
        return None
    rate = float(found.nominal_srate())
    if found.channel_count() != 1 or round(rate) not in VAD_RATES:
        raise LiveSpeechError(
            f"stream {wanted!r} (type {found.type()!r}) has {found.channel_count()} channels at {rate:g} Hz; live "
            f"speech needs one microphone channel (an {AUDIO_STREAM_TYPE} stream, docs/audio.md) at "
            f"{', '.join(str(r) for r in VAD_RATES)} Hz (microphones: sample_rate: in the protocol)"
        )
    inlet = pylsl.StreamInlet(found, max_buflen=30, processing_flags=pylsl.proc_clocksync, recover=True)
    inlet.open_stream(timeout=5.0)
    return MicrophoneInput(label, wanted, inlet, rate)


def speech_stream_info(
    study: str, dyad: str, labels: Sequence[str], source_ids: Sequence[str], settings: SpeechSettings
) -> pylsl.StreamInfo:
    """LSL info of the live speech stream (the contract of the module docstring)."""
    import pylsl

    info = pylsl.StreamInfo(
        name=STREAM_NAME,
        type=STREAM_TYPE,
        channel_count=1,
        nominal_srate=pylsl.IRREGULAR_RATE,
        channel_format="string",
        source_id=source_id(study, dyad, "speech"),
    )
    desc = info.desc()
    channel = desc.append_child("channels").append_child("channel")
    channel.append_child_value("label", "speech")
    channel.append_child_value("type", STREAM_TYPE)
    about = desc.append_child("speech")
    for key, value in (
        ("detector", "webrtcvad + dyadlab cross-talk rule (dyadlab.synchrony.speech)"),
        ("frame_s", settings.frame_s),
        ("aggressiveness", settings.aggressiveness),
        ("dominance_db", settings.dominance_db),
        ("release_db", settings.release_db),
        ("floor_margin_db", settings.floor_margin_db),
        ("bridge_s", settings.bridge_s),
        ("min_speech_s", settings.min_speech_s),
        ("timestamp", "LSL time of the frame where the speech began (speech_on) or ended (speech_off)"),
        ("session_id", session_id_in_force()),
    ):
        about.append_child_value(key, str(value))
    for label, wanted in zip(labels, source_ids):
        about.append_child(f"participant_{label}").append_child_value("source_id", wanted)
    tags = desc.append_child("dyadlab")
    for key, value in (("kind", "speech"), ("study", study), ("dyad", dyad)):
        tags.append_child_value(key, value)
    return info


class LiveSpeechPublisher:
    """Publish two microphones' speech events as the live speech stream until stopped.

    Parameters
    ----------
    study, dyad : str
        The session's ids (the streams' ``source_id``).
    labels : two str
        The participants' labels (A's and B's microphones).
    source_ids : two str, optional
        Their microphone streams (default ``dyadlab.<study>.<dyad>.<label>.audio``).
    settings : SpeechSettings, optional
    resolve_timeout : float
        How long each microphone stream is looked for.
    stall_s : float
        See :class:`~dyadlab.synchrony.live_speech.LiveSpeechDetector`.
    """

    def __init__(
        self,
        study: str,
        dyad: str,
        labels: Sequence[str] = ("A", "B"),
        source_ids: Sequence[str] | None = None,
        settings: SpeechSettings | None = None,
        *,
        resolve_timeout: float = RESOLVE_TIMEOUT_S,
        stall_s: float = STALL_S,
    ) -> None:
        if len(labels) != 2 or labels[0] == labels[1]:
            raise LiveSpeechError(f"live speech needs two participants' labels, got {list(labels)}")
        self.study, self.dyad = study, dyad
        self.labels = (labels[0], labels[1])
        self.source_ids = tuple(source_ids or [source_id(study, dyad, "audio", label) for label in self.labels])
        self.settings = settings or SpeechSettings()
        self.resolve_timeout = resolve_timeout
        self.stall_s = stall_s
        #: Events published so far.
        self.published = 0
        #: LSL time up to which both microphones' audio has been analysed (None before any).
        self.analysed_until: float | None = None

    @property
    def stream_source_id(self) -> str:
        return source_id(self.study, self.dyad, "speech")

    def run(self, stop: threading.Event, on_ready: Callable[[str], None] | None = None) -> int:
        """Publish until ``stop`` is set (then the audio already received is finished); return the
        events published.

        Raises
        ------
        LiveSpeechError
            A microphone stream is not found, or not one channel at a rate the detector takes.
        """
        import pylsl

        outlet = pylsl.StreamOutlet(
            speech_stream_info(self.study, self.dyad, self.labels, self.source_ids, self.settings)
        )
        if on_ready is not None:
            on_ready(self.stream_source_id)
        microphones = []
        for label, wanted in zip(self.labels, self.source_ids):
            opened = _open_microphone(label, wanted, stop, self.resolve_timeout)
            if opened is None:
                return self.published
            microphones.append(opened)
        try:
            detector = LiveSpeechDetector(
                {mic.label: mic.rate for mic in microphones}, self.settings, stall_s=self.stall_s
            )
        except SpeechError as error:
            raise LiveSpeechError(str(error)) from error
        logger.info(
            "live speech: %s at %g Hz and %s at %g Hz",
            *(value for mic in microphones for value in (mic.source_id, mic.rate)),
        )

        def publish(events: list[SpeechEvent]) -> None:
            for event in events:
                outlet.push_sample([event.to_json()], event.time)
            self.published += len(events)
            self.analysed_until = detector.analysed_until

        while not stop.wait(_POLL_S):
            self._read(microphones, detector, publish)
        self._read(microphones, detector, publish)  # what arrived before the stop
        publish(detector.finish())
        return self.published

    @staticmethod
    def _read(
        microphones: Sequence[MicrophoneInput],
        detector: LiveSpeechDetector,
        publish: Callable[[list[SpeechEvent]], None],
    ) -> None:
        """Feed the detector all the audio waiting, in turns of at most :data:`_READ_S` per microphone."""
        from pylsl.util import LostError
        from pylsl.util import TimeoutError as LslTimeoutError

        waiting = True
        while waiting:
            waiting = False
            for mic in microphones:
                most = int(_READ_S * mic.rate)
                try:
                    samples, stamps = mic.inlet.pull_chunk(timeout=0.0, max_samples=most)
                except (LslTimeoutError, LostError):  # its outlet ended with samples pending (the session ending)
                    continue
                if not stamps:
                    continue
                publish(detector.push(mic.label, np.asarray(samples, np.float32)[:, 0], np.asarray(stamps)))
                waiting = waiting or len(stamps) == most


@click.command("live-speech")
@click.option("--study", required=True, help="Study id of the session (names the stream's source_id).")
@click.option("--dyad", required=True, help="Dyad id of the session.")
@click.option("--label-a", default="A", show_default=True, help="Participant label of the first microphone.")
@click.option("--label-b", default="B", show_default=True, help="Participant label of the second microphone.")
@click.option(
    "--source-id-a", default=None, help="source_id of A's microphone (default dyadlab.<study>.<dyad>.A.audio)."
)
@click.option(
    "--source-id-b", default=None, help="source_id of B's microphone (default dyadlab.<study>.<dyad>.B.audio)."
)
@click.option("--session-id", default=None, help="LSL SessionID of the session (default: this machine's lsl_api.cfg).")
@click.option(
    "--aggressiveness",
    type=click.IntRange(0, 3),
    default=SpeechSettings.aggressiveness,
    show_default=True,
    help="WebRTC detector mode (3 rejects the most non-speech).",
)
@click.option("--until-stdin-closes", is_flag=True, hidden=True, help="Also stop when standard input closes.")
def live_speech(
    study: str,
    dyad: str,
    label_a: str,
    label_b: str,
    source_id_a: str | None,
    source_id_b: str | None,
    session_id: str | None,
    aggressiveness: int,
    until_stdin_closes: bool,
) -> None:
    """Detect both participants' speech live from their microphone streams and publish speech_on /
    speech_off events as an LSL marker stream (docs/speech.md)."""
    try:
        if session_id is not None:
            apply_lsl_config(LslConfig(session_id=session_id))
        publisher = LiveSpeechPublisher(
            study,
            dyad,
            (label_a, label_b),
            (
                source_id_a or source_id(study, dyad, "audio", label_a),
                source_id_b or source_id(study, dyad, "audio", label_b),
            ),
            SpeechSettings(aggressiveness=aggressiveness),
        )
    except (ValueError, LiveSpeechError) as error:
        raise click.BadParameter(str(error)) from error
    stop = helper_stop_event(until_stdin_closes)
    try:
        published = publisher.run(stop, on_ready=lambda sid: click.echo(f"publishing live speech as {sid}"))
    except HelperStreamError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"live speech stopped after {published} events")
