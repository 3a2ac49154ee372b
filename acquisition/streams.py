"""Stream identity: names, source ids and LSL metadata shared by every dyadlab stream.

The recorder selects streams by these source ids, preflight checks them, and the quick-check
recognises participants from the ``desc`` written here, so all of them go through this module;
:func:`declared_channels` reads back the channels a stream's ``desc`` declares, dyadlab's or
another tool's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pylsl

    from dyadlab.acquisition.sources import EegSource

_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
MARKER_CHANNEL_LABEL = "Marker"
StreamKind = Literal["eeg", "aux", "audio", "markers", "responses", "synchrony", "speech"]
#: Kinds of stream that belong to one participant (their source_id names the participant).
PARTICIPANT_STREAM_KINDS: tuple[StreamKind, ...] = ("eeg", "aux", "audio")
AUDIO_STREAM_TYPE = "Audio"


def _check_token(what: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(
            f"{what} {value!r} cannot be used in a stream id: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit."
        )
    return value


@dataclass(frozen=True)
class ParticipantInfo:
    """Who a stream belongs to.

    Parameters
    ----------
    label : str
        The participant's label within the session, ``"A"`` or ``"B"``.
    participant_id : str
        The study's id for the person (e.g. ``sub-017``); no names.
    role : str
        The person's role in the dyad (``therapist``, ``patient``, ``stranger``, ``partner``...).
    """

    label: str
    participant_id: str
    role: str = "participant"

    def __post_init__(self) -> None:
        _check_token("Participant label", self.label)
        _check_token("Participant id", self.participant_id)
        _check_token("Participant role", self.role)


def source_id(study: str, dyad: str, kind: StreamKind, participant: str | None = None) -> str:
    """The stable LSL ``source_id`` of one dyadlab stream.

    ``dyadlab.{study}.{dyad}.{participant}.{kind}`` for a participant's stream,
    ``dyadlab.{study}.{dyad}.{kind}`` for session-wide streams (markers, responses, the live
    inter-brain ``synchrony`` of :mod:`dyadlab.protocols.live_synchrony`, the live ``speech`` events
    of :mod:`dyadlab.protocols.live_speech`).
    """
    parts = ["dyadlab", _check_token("Study", study), _check_token("Dyad", dyad)]
    if kind in PARTICIPANT_STREAM_KINDS:
        if participant is None:
            raise ValueError(f"A {kind} stream belongs to a participant: pass participant='A' or 'B'.")
        parts.append(_check_token("Participant label", participant))
    parts.append(kind)
    return ".".join(parts)


@dataclass
class SourceLayout:
    """What the stream descriptions read of an EEG source (rate, channels, device), for streams
    written without a device: simulated studies, replayed recordings, test files.

    :func:`eeg_stream_info` and :func:`aux_stream_info` take one of these where a live source
    (:class:`~dyadlab.acquisition.sources.EegSource`) is not at hand.

    Parameters
    ----------
    sampling_rate : float
        Nominal rate in Hz.
    eeg_channel_names : list of str
    aux_channel_names : list of str
        Extra board rows (accelerometer, photodiode...), written as the AUX stream.
    description : dict of str -> str
        The stream's ``desc/device`` entries, e.g. ``{"board": "replay"}``.
    has_marker_channel : bool
        Whether the EEG stream ends with the board ``Marker`` channel (see
        :func:`~dyadlab.acquisition.sources.carries_board_markers`).
    """

    sampling_rate: float
    eeg_channel_names: list[str]
    aux_channel_names: list[str] = field(default_factory=list)
    description: dict[str, str] = field(default_factory=dict)
    has_marker_channel: bool = True


@dataclass(frozen=True)
class ChannelInfo:
    """One channel's label, type and unit, as a stream's ``desc/channels`` declares them."""

    label: str
    type: str
    unit: str


def declared_channels(info: pylsl.StreamInfo) -> list[ChannelInfo]:
    """Every channel that ``info``'s ``desc/channels`` declares, in order, its values as written
    (empty where not declared).

    The declaration may name fewer or more channels than the stream has, or none (a stream from
    another tool): each reader decides what to make of that.
    """
    found: list[ChannelInfo] = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty():
        found.append(
            ChannelInfo(
                label=channel.child_value("label"), type=channel.child_value("type"), unit=channel.child_value("unit")
            )
        )
        channel = channel.next_sibling("channel")
    return found


def _append_text(element: pylsl.XMLElement, name: str, value: object) -> None:
    element.append_child_value(name, "" if value is None else str(value))


def eeg_stream_info(
    study: str, dyad: str, participant: ParticipantInfo, source: EegSource | SourceLayout
) -> pylsl.StreamInfo:
    """LSL info of a participant's EEG stream: EEG channels in microvolts plus the marker channel.

    The last channel (``Marker``) carries the board marker codes sample-exactly, so the
    quick-check can measure marker-to-EEG timing per participant; a source without board markers
    (an amplifier's own LSL stream) has no such channel.
    """
    import pylsl

    from dyadlab.acquisition.sources import carries_board_markers

    labels = list(source.eeg_channel_names)
    with_markers = carries_board_markers(source)
    info = pylsl.StreamInfo(
        name=f"{dyad}-{participant.label}-EEG",
        type="EEG",
        channel_count=len(labels) + int(with_markers),
        nominal_srate=float(source.sampling_rate),
        channel_format="float32",
        source_id=source_id(study, dyad, "eeg", participant.label),
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label in labels:
        channel = channels.append_child("channel")
        _append_text(channel, "label", label)
        _append_text(channel, "unit", "microvolts")
        _append_text(channel, "type", "EEG")
    if with_markers:
        marker = channels.append_child("channel")
        _append_text(marker, "label", MARKER_CHANNEL_LABEL)
        _append_text(marker, "unit", "code")
        _append_text(marker, "type", "Marker")
    _describe_owner(desc, study, dyad, participant, "eeg")
    device = desc.append_child("device")
    for key, value in source.description.items():
        _append_text(device, key, value)
    return info


def aux_stream_info(
    study: str, dyad: str, participant: ParticipantInfo, source: EegSource | SourceLayout
) -> pylsl.StreamInfo:
    """LSL info of a participant's extra board rows (accelerometer, battery, ...)."""
    import pylsl

    info = pylsl.StreamInfo(
        name=f"{dyad}-{participant.label}-AUX",
        type="AUX",
        channel_count=len(source.aux_channel_names),
        nominal_srate=float(source.sampling_rate),
        channel_format="float32",
        source_id=source_id(study, dyad, "aux", participant.label),
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label in source.aux_channel_names:
        channel = channels.append_child("channel")
        _append_text(channel, "label", label)
        _append_text(channel, "type", "AUX")
    _describe_owner(desc, study, dyad, participant, "aux")
    return info


def audio_stream_name(participant_label: str) -> str:
    """The LSL name of a participant's microphone stream: ``dyadlab-audio-<label>``."""
    return f"dyadlab-audio-{_check_token('Participant label', participant_label)}"


def audio_stream_info(
    study: str,
    dyad: str,
    participant: ParticipantInfo,
    *,
    sample_rate: float,
    device: dict[str, object],
) -> pylsl.StreamInfo:
    """LSL info of a participant's microphone: one float32 channel, full scale ±1.

    ``device`` (name, match, channel, host_api...) goes into ``desc/device``; see ``docs/audio.md``
    for the whole contract.
    """
    import pylsl

    info = pylsl.StreamInfo(
        name=audio_stream_name(participant.label),
        type=AUDIO_STREAM_TYPE,
        channel_count=1,
        nominal_srate=float(sample_rate),
        channel_format="float32",
        source_id=source_id(study, dyad, "audio", participant.label),
    )
    desc = info.desc()
    channel = desc.append_child("channels").append_child("channel")
    _append_text(channel, "label", f"voice-{participant.label}")
    _append_text(channel, "unit", "full-scale")
    _append_text(channel, "type", AUDIO_STREAM_TYPE)
    _describe_owner(desc, study, dyad, participant, "audio")
    element = desc.append_child("device")
    for key, value in device.items():
        _append_text(element, key, value)
    return info


def event_stream_info(
    study: str, dyad: str, kind: Literal["markers", "responses"], participants: Sequence[ParticipantInfo] = ()
) -> pylsl.StreamInfo:
    """LSL info of the session's marker or response stream: one JSON string per event.

    ``participants`` go into ``desc/participants/participant`` (label, id, role), so that a reader
    of the events alone maps their ``participant`` labels to people.
    """
    import pylsl

    info = pylsl.StreamInfo(
        name=f"{dyad}-{kind.capitalize()}",
        type="Markers",
        channel_count=1,
        nominal_srate=pylsl.IRREGULAR_RATE,
        channel_format="string",
        source_id=source_id(study, dyad, kind),
    )
    desc = info.desc()
    channel = desc.append_child("channels").append_child("channel")
    _append_text(channel, "label", kind)
    _append_text(channel, "type", "Marker")
    _append_text(channel, "format", "json")
    tags = desc.append_child("dyadlab")
    _append_text(tags, "kind", kind)
    _append_text(tags, "study", study)
    _append_text(tags, "dyad", dyad)
    people = desc.append_child("participants")
    for participant in participants:
        _append_participant(people, participant)
    return info


def _append_participant(parent: pylsl.XMLElement, participant: ParticipantInfo) -> None:
    person = parent.append_child("participant")
    _append_text(person, "label", participant.label)
    _append_text(person, "id", participant.participant_id)
    _append_text(person, "role", participant.role)


def _describe_owner(
    desc: pylsl.XMLElement, study: str, dyad: str, participant: ParticipantInfo, kind: StreamKind
) -> None:
    _append_participant(desc, participant)
    tags = desc.append_child("dyadlab")
    _append_text(tags, "kind", kind)
    _append_text(tags, "study", study)
    _append_text(tags, "dyad", dyad)
