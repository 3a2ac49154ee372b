"""Load a hyperscanning XDF file: the two participants' EEG streams and the session's markers.

Any XDF with two EEG streams and (optionally) a marker stream fits: dyadlab's own recordings
are recognised from their stream metadata (see ``docs/architecture.md``, "Stream identity"),
files from LabRecorder or other tools by stream type, with ``eeg=(..., ...)`` to pick the two
participants' streams by name or ``source_id`` when that is ambiguous.

Samples and timestamps are exactly those of ``pyxdf.load_xdf`` with clock synchronisation (clock
offsets applied, clock resets handled) but *without* de-jittering, so that the quality check
sees the timestamps as recorded (:mod:`dyadlab.synchrony.segments` builds the analysis timeline). They
are read by :mod:`dyadlab.synchrony.xdfreader`, only for the streams the check uses, with memory close to
the samples' own size; a file whose chunk structure is damaged is read by pyxdf itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.synchrony import xdfreader

logger = logging.getLogger(__name__)

#: Channel labels (lower case) recognised as a board's marker channel when no channel type says so.
MARKER_CHANNEL_LABELS = ("marker", "markers", "trigger", "triggers", "stim")
#: Channel labels (lower case) recognised as a packet counter (BrainFlow ``package_num``).
PACKAGE_CHANNEL_LABELS = ("package_num", "package", "packet", "packet_num", "counter", "sample_counter")
#: Words that mark a timing sensor in a channel label (lower case: photodiode, light sensor, TTL
#: input). Such a channel is never EEG, whatever type the stream declares for it; it is kept in
#: :attr:`ParticipantEeg.aux` for :mod:`dyadlab.synchrony.timing_verification`.
TIMING_CHANNEL_WORDS = ("photo", "diode", "light", "ttl")


class XdfLoadError(DyadlabError, ValueError):
    """The file cannot be read, or does not hold what a dyad quick-check needs."""


@dataclass
class EventMarker:
    """One marker string with its time.

    Attributes
    ----------
    time : float
        LSL time of the marker (seconds, after clock synchronisation).
    text : str
        The marker string as recorded.
    fields : dict or None
        The parsed JSON object for dyadlab markers, ``None`` for other strings.
    stream : str
        Name of the stream the marker came from.
    """

    time: float
    text: str
    fields: dict[str, Any] | None
    stream: str

    @property
    def event(self) -> str | None:
        """The dyadlab ``event`` name, if the marker is one of ours."""
        return None if self.fields is None else self.fields.get("event")


@dataclass
class AuxSignals:
    """Non-EEG channels recorded with a participant's EEG (AUX, trigger or sensor inputs).

    Attributes
    ----------
    stream_name : str
        The stream they came from (the EEG stream itself, or the participant's dyadlab AUX stream).
    labels, types : list of str
        Channel labels and declared types (``""`` when the stream does not say).
    data : np.ndarray, shape (n_channels, n_samples), float32
        The values as recorded.
    timestamps : np.ndarray, shape (n_samples,), float64
        Sample times (LSL seconds, clock-synchronised, not de-jittered).
    """

    stream_name: str
    labels: list[str]
    types: list[str]
    data: np.ndarray
    timestamps: np.ndarray


@dataclass
class ParticipantEeg:
    """One participant's EEG stream.

    Attributes
    ----------
    label : str
        ``"A"`` or ``"B"``: the participant's label in the session (from metadata or the order of
        the ``eeg`` override).
    stream_name, source_id : str
        LSL identity of the stream.
    participant : dict of str to str
        ``desc/participant`` fields (``label``, ``id``, ``role``) when present.
    nominal_rate : float
        Declared sampling rate (Hz).
    channel_labels : list of str
        Labels of the EEG channels, in the order of ``data``'s rows.
    data : np.ndarray, shape (n_eeg_channels, n_samples), float32
        EEG values (``unit``), NaN where the recording holds NaN.
    timestamps : np.ndarray, shape (n_samples,), float64
        Sample times (LSL seconds, clock-synchronised, not de-jittered).
    unit : str
        Unit of ``data`` as declared (``microvolts`` for dyadlab streams).
    board_markers : np.ndarray or None, shape (n_samples,)
        The board's marker channel (0 = no marker, else the event code), if the stream has one.
    package_numbers : np.ndarray or None, shape (n_samples,)
        A packet-counter channel, if the stream has one.
    clock_times, clock_values : np.ndarray, shape (n_offsets,)
        The clock-offset measurements recorded for the stream.
    footer_sample_count : int or None
        Sample count written in the stream footer (``None``: no footer, the file was not
        finalised).
    excluded_channels : list of str
        Non-EEG channels of the stream (marker, counter, auxiliary), left out of the analysis.
    aux : list of AuxSignals
        The stream's auxiliary channels (neither EEG, marker nor counter) and the channels of the
        participant's dyadlab AUX stream, if the file holds one.
    """

    label: str
    stream_name: str
    source_id: str
    participant: dict[str, str]
    nominal_rate: float
    channel_labels: list[str]
    data: np.ndarray
    timestamps: np.ndarray
    unit: str
    board_markers: np.ndarray | None
    package_numbers: np.ndarray | None
    clock_times: np.ndarray
    clock_values: np.ndarray
    footer_sample_count: int | None
    excluded_channels: list[str] = field(default_factory=list)
    aux: list[AuxSignals] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.timestamps.shape[0])

    def describe(self) -> str:
        """A short human-readable identity: ``A (sub-01, therapist; stream d01-A-EEG)``."""
        who = ", ".join(v for v in (self.participant.get("id"), self.participant.get("role")) if v)
        return f"{self.label} ({who + '; ' if who else ''}stream {self.stream_name})"


@dataclass
class AudioTrack:
    """One participant's microphone stream (``docs/audio.md``): mono samples on the LSL clock.

    Attributes
    ----------
    label : str
        The participant (``"A"`` or ``"B"``).
    stream_name : str
    nominal_rate : float
        Declared sampling rate (Hz).
    samples : np.ndarray, shape (n_samples,), float32
        Full scale ±1.
    timestamps : np.ndarray, shape (n_samples,), float64
        Sample times (LSL seconds, clock-synchronised).
    """

    label: str
    stream_name: str
    nominal_rate: float
    samples: np.ndarray
    timestamps: np.ndarray


@dataclass
class DyadRecording:
    """What :func:`load_dyad` returns: both participants' EEG, the markers and load notes.

    Attributes
    ----------
    path : Path
    a, b : ParticipantEeg
    markers : list of EventMarker
        Session markers sorted by time (dyadlab ``kind=markers`` streams, or every string marker
        stream of a file from another tool).
    responses : list of EventMarker
        dyadlab response events (``kind=responses``), sorted by time.
    marker_streams : list of str
        Names of the streams the markers came from (empty: the file has no marker stream).
    file_header : dict of str to str
        Simple FileHeader fields (``datetime``, ``study``, ``dyad``...).
    other_streams : list of str
        Streams in the file that were not used.
    warnings : list of str
        Everything worth telling found while loading (``file_problems`` included, identification
        by stream order, empty marker stream...).
    load_seconds : float
        Wall time spent reading the file.
    audio : dict of str to AudioTrack
        Each participant's microphone stream (type ``Audio``), when the file holds them.
    file_problems : list of str
        Damage or loss in the file itself (a file cut inside a chunk, damaged chunks, corruption
        reported by pyxdf, missing footers, sample counts that disagree with the footer).
    """

    path: Path
    a: ParticipantEeg
    b: ParticipantEeg
    markers: list[EventMarker]
    responses: list[EventMarker]
    marker_streams: list[str]
    file_header: dict[str, str]
    other_streams: list[str]
    warnings: list[str]
    load_seconds: float
    file_problems: list[str] = field(default_factory=list)
    audio: dict[str, AudioTrack] = field(default_factory=dict)

    @property
    def participants(self) -> tuple[ParticipantEeg, ParticipantEeg]:
        return (self.a, self.b)


class _PyxdfProblems(logging.Handler):
    """Collects pyxdf's warnings and errors (it logs corruption and carries on); only their
    messages: pyxdf logs some with a traceback (``logger.exception``), which must not reach the
    console."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message}: {type(error).__name__}: {error}"
        self.messages.append(message)


def _first(mapping: Any, key: str, default: Any = None) -> Any:
    """pyxdf stores every XML element as a list; return the first item of ``mapping[key]``."""
    if not isinstance(mapping, dict):
        return default
    value = mapping.get(key)
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def _text(mapping: Any, key: str) -> str:
    value = _first(mapping, key, "")
    return value.strip() if isinstance(value, str) else ""


def _desc(info: dict) -> dict:
    desc = _first(info, "desc")
    return desc if isinstance(desc, dict) else {}


def _subsection(desc: dict, name: str) -> dict[str, str]:
    section = _first(desc, name)
    if not isinstance(section, dict):
        return {}
    return {key: _text(section, key) for key in section}


def _channels(info: dict, n_channels: int) -> list[dict[str, str]]:
    channels = _first(_desc(info), "channels")
    entries = channels.get("channel", []) if isinstance(channels, dict) else []
    described = [
        {k: _text(entry, k) for k in ("label", "type", "unit")} for entry in entries if isinstance(entry, dict)
    ]
    if len(described) != n_channels:
        # Missing or inconsistent channel metadata: fall back to numbered channels of unknown type.
        return [{"label": f"ch{i + 1}", "type": "", "unit": ""} for i in range(n_channels)]
    return described


def _stream_kind(stream: dict) -> str:
    """``eeg``, ``markers``, ``responses``, ``aux`` or ``other`` for one pyxdf stream."""
    info = stream["info"]
    tagged = _text(_first(_desc(info), "dyadlab", {}), "kind").lower()
    if tagged:
        return tagged
    stream_type = _text(info, "type").lower()
    if stream_type == "eeg":
        return "eeg"
    if _text(info, "channel_format") == "string" or stream_type in ("markers", "marker", "events"):
        return "markers"
    return "other"


def _audio_label(stream: dict, kind: str) -> str:
    """The participant whose microphone ``stream`` is (``docs/audio.md``: dyadlab ``kind=audio``, or
    LSL type ``Audio`` with one channel named ``dyadlab-audio-<label>``), else ``""``."""
    info = stream["info"]
    if kind == "audio":
        return _participant_label(stream, "audio")
    name = _text(info, "name")
    if kind == "other" and _text(info, "type").lower() == "audio" and _text(info, "channel_count") == "1":
        return _participant_label(stream, "audio") or name.removeprefix("dyadlab-audio-")
    return ""


def _identity(stream: dict) -> str:
    info = stream["info"]
    return f"'{_text(info, 'name')}' (type {_text(info, 'type') or '?'}, source_id '{_text(info, 'source_id')}')"


def _participant_label(stream: dict, kind: str) -> str:
    """The participant label of a dyadlab participant stream of ``kind`` (``eeg``, ``aux``): from
    ``desc/participant/label``, else from its ``source_id`` (``dyadlab.STUDY.DYAD.LABEL.KIND``)."""
    label = _text(_first(_desc(stream["info"]), "participant", {}), "label")
    if not label:
        source_id = _text(stream["info"], "source_id")
        parts = source_id.split(".")
        if source_id.startswith("dyadlab.") and len(parts) >= 5 and parts[-1] == kind:
            label = parts[-2]
    return label


def _pick_eeg_streams(
    eeg_streams: list[dict], all_streams: list[dict], eeg: Sequence[str] | None, warnings: list[str]
) -> list[tuple[str, dict]]:
    """The (label, stream) of participants A and B."""
    listing = "; ".join(_identity(s) for s in all_streams) or "none"
    if eeg is not None:
        if len(eeg) != 2:
            raise XdfLoadError(f"Pass exactly two EEG streams (participant A, then B), got {len(eeg)}: {list(eeg)}.")
        picked = []
        for label, wanted in zip("AB", eeg):
            matches = [s for s in all_streams if wanted in (_text(s["info"], "name"), _text(s["info"], "source_id"))]
            if not matches:
                raise XdfLoadError(
                    f"No stream named {wanted!r} (by name or source_id) in the file. Streams found: {listing}."
                )
            if len(matches) > 1:
                raise XdfLoadError(
                    f"{len(matches)} streams match {wanted!r}: {'; '.join(map(_identity, matches))}. "
                    "Pass the source_id instead, which is unique per device."
                )
            picked.append((label, matches[0]))
        if picked[0][1] is picked[1][1]:
            raise XdfLoadError(f"Both --eeg options name the same stream {_identity(picked[0][1])}.")
        return picked

    if len(eeg_streams) < 2:
        raise XdfLoadError(
            f"The file holds {len(eeg_streams)} EEG stream(s), a dyad check needs two (one per participant). "
            f"Streams found: {listing}. If a participant's EEG is stored with another stream type, "
            "name both streams with --eeg NAME --eeg NAME (eeg=(..., ...) in Python)."
        )
    labelled: dict[str, dict] = {}
    for stream in eeg_streams:
        label = _participant_label(stream, "eeg")
        if label in ("A", "B") and label not in labelled:
            labelled[label] = stream
    if len(labelled) == 2 and len(eeg_streams) == 2:
        return [("A", labelled["A"]), ("B", labelled["B"])]
    if len(labelled) == 2 and len(eeg_streams) > 2:
        warnings.append(
            f"{len(eeg_streams)} EEG streams in the file; using the two labelled participants A and B "
            f"({_identity(labelled['A'])}, {_identity(labelled['B'])}). Pass --eeg twice to choose others."
        )
        return [("A", labelled["A"]), ("B", labelled["B"])]
    if len(eeg_streams) > 2:
        raise XdfLoadError(
            f"The file holds {len(eeg_streams)} EEG streams and their metadata does not say which two are "
            f"participants A and B: {'; '.join(map(_identity, eeg_streams))}. "
            "Pick them with --eeg NAME_OR_SOURCE_ID --eeg NAME_OR_SOURCE_ID (A first)."
        )
    warnings.append(
        "The EEG streams carry no participant labels; participant A is "
        f"{_identity(eeg_streams[0])} and B is {_identity(eeg_streams[1])} (order in the file). "
        "Use --eeg A_STREAM --eeg B_STREAM to set the order."
    )
    return [("A", eeg_streams[0]), ("B", eeg_streams[1])]


@dataclass
class _ChannelLayout:
    """Which channels of an EEG stream are EEG, the board's marker channel and a packet counter."""

    channels: list[dict[str, str]]
    eeg: list[int]
    marker: int | None
    package: int | None

    @property
    def excluded(self) -> list[str]:
        return [c["label"] for i, c in enumerate(self.channels) if i not in self.eeg]

    @property
    def aux(self) -> list[int]:
        """The channels that are neither EEG, the marker channel nor the counter."""
        return [i for i in range(len(self.channels)) if i not in self.eeg and i not in (self.marker, self.package)]


def _channel_layout(label: str, stream: dict, n_channels: int) -> _ChannelLayout:
    channels = _channels(stream["info"], n_channels)
    types = [c["type"].lower() for c in channels]
    labels_lower = [c["label"].lower() for c in channels]
    marker_index = next(
        (
            i
            for i, (t, lab) in enumerate(zip(types, labels_lower))
            if t in ("marker", "markers", "stim", "trigger") or (not t and lab in MARKER_CHANNEL_LABELS)
        ),
        None,
    )
    package_index = next((i for i, lab in enumerate(labels_lower) if lab in PACKAGE_CHANNEL_LABELS), None)
    # A photodiode on an amplifier input is often declared EEG like its neighbours: its label says.
    sensors = {i for i, lab in enumerate(labels_lower) if any(word in lab for word in TIMING_CHANNEL_WORDS)}
    eeg_index = [i for i, t in enumerate(types) if t == "eeg" and i not in sensors]
    if not eeg_index:
        # No channel typed EEG (untyped, or e.g. "ExG"): every channel but marker, counter and sensors.
        eeg_index = [i for i in range(n_channels) if i not in (marker_index, package_index) and i not in sensors]
    if not eeg_index:
        raise XdfLoadError(
            f"Participant {label}'s stream {_identity(stream)} holds no EEG channel (only marker/counter channels)."
        )
    return _ChannelLayout(channels, eeg_index, marker_index, package_index)


def _truncation(problems: Sequence[str]) -> str | None:
    """The index's note that the file ends inside a chunk (a crash or a copy cut short), if any."""
    return next((p for p in problems if p.startswith("the file ends inside")), None)


def _check_eeg_stream(label: str, stream: dict, n_samples: int, problems: Sequence[str] = ()) -> None:
    if n_samples == 0:
        cut = _truncation(problems)
        if cut is not None:
            raise XdfLoadError(
                f"Participant {label}'s EEG stream {_identity(stream)} holds no complete samples because the file "
                f"is truncated: {cut}. The recording stopped (crash, power loss, disk full) or the file was not "
                "copied completely; `dyadlab inspect FILE.xdf` shows where it ends."
            )
        raise XdfLoadError(
            f"Participant {label}'s EEG stream {_identity(stream)} holds no samples. The amplifier or its "
            "LSL outlet did not deliver data while recording (check `dyadlab inspect FILE.xdf`)."
        )
    if _text(stream["info"], "channel_format") == "string":
        raise XdfLoadError(f"Participant {label}'s EEG stream {_identity(stream)} is not numeric (strings).")


def _aux_signals(stream: dict, channels: list[dict[str, str]], data: np.ndarray) -> AuxSignals:
    """``data`` (channels x samples) of ``stream`` (pyxdf's layout, samples read) as :class:`AuxSignals`."""
    return AuxSignals(
        stream_name=_text(stream["info"], "name"),
        labels=[c["label"] for c in channels],
        types=[c["type"] for c in channels],
        data=np.asarray(data, dtype=np.float32),
        timestamps=np.asarray(stream["time_stamps"], dtype=np.float64),
    )


def _participant(
    label: str,
    stream: dict,
    layout: _ChannelLayout,
    data: np.ndarray,
    board_markers: np.ndarray | None,
    package_numbers: np.ndarray | None,
    aux_data: np.ndarray | None = None,
) -> ParticipantEeg:
    """The participant's EEG: ``data`` (EEG channels x samples, float32) and the stream's timestamps,
    clock offsets and footer in ``stream`` (pyxdf's layout); ``aux_data`` holds the
    :attr:`_ChannelLayout.aux` channels."""
    info = stream["info"]
    units = {layout.channels[i]["unit"] for i in layout.eeg} - {""}
    footer = stream.get("footer", {}).get("info") if isinstance(stream.get("footer"), dict) else None
    footer_count = _text(footer, "sample_count") if footer is not None else ""
    return ParticipantEeg(
        label=label,
        stream_name=_text(info, "name"),
        source_id=_text(info, "source_id"),
        participant=_subsection(_desc(info), "participant"),
        nominal_rate=float(_text(info, "nominal_srate") or 0.0),
        channel_labels=[layout.channels[i]["label"] for i in layout.eeg],
        data=data,
        timestamps=np.asarray(stream["time_stamps"], dtype=np.float64),
        unit=units.pop() if len(units) == 1 else ("mixed" if units else "unknown"),
        board_markers=board_markers,
        package_numbers=package_numbers,
        clock_times=np.asarray(stream.get("clock_times", []), dtype=np.float64),
        clock_values=np.asarray(stream.get("clock_values", []), dtype=np.float64),
        footer_sample_count=int(float(footer_count)) if footer_count else None,
        excluded_channels=layout.excluded,
        aux=[_aux_signals(stream, [layout.channels[i] for i in layout.aux], aux_data)] if aux_data is not None else [],
    )


def _participant_from_pyxdf(label: str, stream: dict) -> ParticipantEeg:
    """:func:`_participant` from a stream pyxdf read whole (samples x channels)."""
    values = stream["time_series"]
    _check_eeg_stream(label, stream, len(stream["time_stamps"]))
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number):
        raise XdfLoadError(f"Participant {label}'s EEG stream {_identity(stream)} is not numeric ({values.dtype}).")
    layout = _channel_layout(label, stream, values.shape[1])
    extra = {
        index: None if index is None else np.asarray(values[:, index], dtype=np.float64)
        for index in (layout.marker, layout.package)
    }
    data = np.ascontiguousarray(values[:, layout.eeg].T, dtype=np.float32)
    aux_data = np.asarray(values[:, layout.aux].T, dtype=np.float32) if layout.aux else None
    return _participant(label, stream, layout, data, extra[layout.marker], extra[layout.package], aux_data)


def _events(stream: dict) -> list[EventMarker]:
    name = _text(stream["info"], "name")
    events = []
    for row, t in zip(stream["time_series"], stream["time_stamps"]):
        text = row[0] if isinstance(row, (list, tuple)) and row else str(row)
        fields = None
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "event" in parsed:
                fields = parsed
        events.append(EventMarker(time=float(t), text=text, fields=fields, stream=name))
    return events


def _read_with_pyxdf(path: Path) -> tuple[list[dict], Any, list[str]]:
    """pyxdf.load_xdf with clock synchronisation, without de-jittering (the quality check must
    see the recorded timestamps; dyadlab.synchrony.segments builds the analysis timeline); also returns
    the problems pyxdf logged (it reports corruption and carries on)."""
    import pyxdf

    problems = _PyxdfProblems()
    pyxdf_logger = logging.getLogger("pyxdf")
    pyxdf_logger.addHandler(problems)
    propagate = pyxdf_logger.propagate
    pyxdf_logger.propagate = False  # its messages are listed in file_problems, not printed
    try:
        streams, header = pyxdf.load_xdf(
            str(path),
            synchronize_clocks=True,
            handle_clock_resets=True,
            dejitter_timestamps=False,
        )
    except Exception as error:  # pyxdf raises bare Exception/IOError/struct.error on bad files
        raise XdfLoadError(
            f"{path} could not be read as XDF ({type(error).__name__}: {error}). The file may be truncated "
            f"or not an XDF recording; `dyadlab inspect {path}` shows which chunk is damaged."
        ) from error
    finally:
        pyxdf_logger.removeHandler(problems)
        pyxdf_logger.propagate = propagate
    return streams, header, problems.messages


@dataclass
class _Streams:
    """The file's streams in pyxdf's layout (``info``, ``footer``; samples once read), its header,
    the damage found, and the index the samples are read through (None: pyxdf read it whole)."""

    streams: list[dict]
    header: Any
    problems: list[str]
    index: xdfreader.XdfIndex | None


def _open_streams(path: Path) -> _Streams:
    """Index the file; a file that cannot be indexed (damaged, compressed) is read whole by pyxdf,
    which scans forward past damage."""
    if path.suffix != ".xdfz" and path.suffixes[-2:] != [".xdf", ".gz"]:
        try:
            index = xdfreader.index_xdf(path)
        except xdfreader.XdfIndexError as error:
            logger.info("%s cannot be indexed (%s); reading it with pyxdf", path, error)
            streams, header, problems = _read_with_pyxdf(path)
            return _Streams(streams, header, [f"the file's chunk structure is damaged ({error})"] + problems, None)
        except OSError as error:
            raise XdfLoadError(f"{path} cannot be read ({error}).") from error
        except RecursionError as error:  # XML nested thousands of levels deep: not a recording
            raise XdfLoadError(
                f"{path} holds XML nested too deeply to read; it is damaged or not a recording "
                f"(`dyadlab inspect {path}` shows where)."
            ) from error
        streams = []
        for entry in index.streams.values():
            stream = {"info": entry.info}
            if entry.footer is not None:
                stream["footer"] = entry.footer
            streams.append(stream)
        return _Streams(streams, index.file_header, list(index.problems), index)
    return _Streams(*_read_with_pyxdf(path), None)


def _read_samples(
    source: _Streams, picked: list[tuple[str, dict]], event_streams: list[dict], block_bytes: int
) -> tuple[ParticipantEeg, ParticipantEeg]:
    """Participants A and B, and the samples of ``event_streams`` put in their dicts."""
    if source.index is None:
        return tuple(_participant_from_pyxdf(label, stream) for label, stream in picked)  # type: ignore[return-value]
    index = source.index
    layouts, groups = [], {}
    for label, stream in picked:
        entry = index.streams[stream["info"]["stream_id"]]
        _check_eeg_stream(label, stream, entry.n_samples, index.problems)
        layout = _channel_layout(label, stream, entry.n_channels)
        layouts.append(layout)
        groups[entry.stream_id] = (
            [xdfreader.ChannelGroup(layout.eeg, np.float32)]
            + [
                xdfreader.ChannelGroup([channel], np.float64)
                for channel in (layout.marker, layout.package)
                if channel is not None
            ]
            + ([xdfreader.ChannelGroup(layout.aux, np.float32)] if layout.aux else [])
        )
    wanted = list(groups) + [s["info"]["stream_id"] for s in event_streams]
    try:
        samples, problems = xdfreader.read_streams(index, wanted, groups=groups, block_bytes=block_bytes)
    except xdfreader.XdfIndexError as error:
        logger.info("%s: %s; reading it with pyxdf", index.path, error)
        whole = _read_with_pyxdf(index.path)
        by_id = {s["info"]["stream_id"]: s for s in whole[0]}
        for stream in [s for _, s in picked] + event_streams:
            stream.update(by_id[stream["info"]["stream_id"]])
        source.problems[:] = [f"a Samples chunk is damaged ({error})"] + whole[2]
        return tuple(_participant_from_pyxdf(label, stream) for label, stream in picked)  # type: ignore[return-value]
    source.problems += problems
    for stream in event_streams:
        read = samples[stream["info"]["stream_id"]]
        stream["time_stamps"] = read.time_stamps
        stream["time_series"] = read.strings if read.strings is not None else read.groups[0].T
    participants = []
    for (label, stream), layout in zip(picked, layouts):
        read = samples.pop(stream["info"]["stream_id"])
        stream.update(time_stamps=read.time_stamps, clock_times=read.clock_times, clock_values=read.clock_values)
        extra = iter(read.groups[1:])
        board_markers = next(extra)[0] if layout.marker is not None else None
        package_numbers = next(extra)[0] if layout.package is not None else None
        aux_data = next(extra) if layout.aux else None
        participants.append(
            _participant(label, stream, layout, read.groups[0], board_markers, package_numbers, aux_data)
        )
    return participants[0], participants[1]


def load_dyad(path: str | Path, *, eeg: Sequence[str] | None = None, block_bytes: int | None = None) -> DyadRecording:
    """Read a hyperscanning XDF file.

    Parameters
    ----------
    path : str or Path
        The XDF file (``.xdf``, or ``.xdfz``, which pyxdf reads).
    eeg : pair of str, optional
        Participant A's and B's EEG streams, each by stream name or ``source_id``. Needed when the
        file's metadata does not identify them (more than two EEG streams, or EEG streams of
        another type).
    block_bytes : int, optional
        Bytes of file unpacked at once (default :data:`dyadlab.synchrony.xdfreader.BLOCK_BYTES`); any
        value gives the same result.

    Returns
    -------
    DyadRecording

    Raises
    ------
    XdfLoadError
        The file is missing, not XDF, unreadable, or does not hold two EEG streams with samples.

    Notes
    -----
    Samples and clock-synchronised timestamps are those of ``pyxdf.load_xdf(path,
    dejitter_timestamps=False)``, read by :mod:`dyadlab.synchrony.xdfreader` (only the streams the check
    uses); a file whose structure cannot be indexed is read by pyxdf itself.
    """
    path = Path(path)
    if not path.is_file():
        raise XdfLoadError(f"No such file: {path}")
    started = time.perf_counter()
    source = _open_streams(path)
    streams = source.streams
    if not streams:
        raise XdfLoadError(
            f"{path} holds no streams. The recording may have failed before any stream was added "
            f"(`dyadlab inspect {path}` shows the chunks present)."
        )
    warnings: list[str] = []
    kinds = [_stream_kind(s) for s in streams]
    eeg_streams = [s for s, k in zip(streams, kinds) if k == "eeg"]
    picked = _pick_eeg_streams(eeg_streams, streams, eeg, warnings)
    picked_ids = {id(picked[0][1]), id(picked[1][1])}
    marker_sources = [s for s, k in zip(streams, kinds) if k == "markers" and id(s) not in picked_ids]
    response_sources = [s for s, k in zip(streams, kinds) if k == "responses"]
    # The participants' dyadlab AUX streams (BrainFlow's extra rows: sensors, analogue inputs).
    aux_sources = {
        label: stream
        for label, _ in picked
        for stream, kind in zip(streams, kinds)
        if kind == "aux" and _participant_label(stream, "aux") == label
    }
    # Each participant's microphone (docs/audio.md), for the speech analysis.
    audio_sources = {
        label: stream
        for label, _ in picked
        for stream, kind in zip(streams, kinds)
        if _audio_label(stream, kind) == label
    }
    a, b = _read_samples(
        source,
        picked,
        marker_sources + response_sources + list(aux_sources.values()) + list(audio_sources.values()),
        block_bytes or xdfreader.BLOCK_BYTES,
    )
    audio = {
        label: AudioTrack(
            label,
            _text(stream["info"], "name"),
            float(_text(stream["info"], "nominal_srate") or "nan"),
            np.asarray(stream["time_series"], dtype=np.float32)[:, 0],
            np.asarray(stream["time_stamps"], dtype=np.float64),
        )
        for label, stream in audio_sources.items()
        if len(stream["time_stamps"])
    }
    for participant in (a, b):
        stream = aux_sources.get(participant.label)
        if stream is not None and len(stream["time_stamps"]):
            values = np.asarray(stream["time_series"], dtype=np.float32)
            participant.aux.append(_aux_signals(stream, _channels(stream["info"], values.shape[1]), values.T))
    load_seconds = time.perf_counter() - started
    logger.debug("read %s in %.2f s", path, load_seconds)

    file_problems: list[str] = []  # damage or loss in the file itself (also listed in warnings)
    if source.problems:
        unique = list(dict.fromkeys(source.problems))
        file_problems.append(
            f"{len(source.problems)} problem(s) reading the file, data may be missing: "
            + "; ".join(m.rstrip(". ") for m in unique[:5])
            + f". Run `dyadlab inspect {path.name}` for a chunk-by-chunk check."
        )
    for participant in (a, b):
        if participant.footer_sample_count is not None and participant.footer_sample_count != participant.n_samples:
            file_problems.append(
                f"Participant {participant.label}'s stream '{participant.stream_name}': the footer counts "
                f"{participant.footer_sample_count} samples but {participant.n_samples} were read; part of "
                "the file is damaged or missing."
            )

    markers = sorted((m for s in marker_sources for m in _events(s)), key=lambda m: m.time)
    responses = sorted((m for s in response_sources for m in _events(s)), key=lambda m: m.time)
    used = picked_ids | {
        id(s) for s in marker_sources + response_sources + list(aux_sources.values()) + list(audio_sources.values())
    }
    for stream in streams:
        if id(stream) in used and "footer" not in stream:
            file_problems.append(
                f"Stream '{_text(stream['info'], 'name')}' has no footer: the recording was not finalised (crash or "
                "truncated file); the data present are analysed."
            )
    for stream in marker_sources:
        if len(stream["time_stamps"]) == 0:
            warnings.append(f"The marker stream '{_text(stream['info'], 'name')}' holds no markers.")
    header_info = source.header.get("info", {}) if isinstance(source.header, dict) else {}
    return DyadRecording(
        path=path,
        a=a,
        b=b,
        markers=markers,
        responses=responses,
        marker_streams=[_text(s["info"], "name") for s in marker_sources],
        file_header={k: _text(header_info, k) for k in header_info if isinstance(_first(header_info, k), str)},
        other_streams=[_text(s["info"], "name") for s in streams if id(s) not in used],
        warnings=file_problems + warnings,
        file_problems=file_problems,
        load_seconds=load_seconds,
        audio=audio,
    )
