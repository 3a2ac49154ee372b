"""Load a hyperscanning XDF file: the two participants' EEG streams and the session's markers.

Any XDF with two EEG streams and (optionally) a marker stream fits: dyadlab's own recordings
are recognised from their stream metadata (see ``docs/architecture.md``, "Stream identity"),
files from LabRecorder or other tools by stream type, with ``eeg=(..., ...)`` to pick the two
participants' streams by name or ``source_id`` when that is ambiguous.

Timestamps are loaded with pyxdf's clock synchronisation (clock offsets applied, clock resets
handled) but *without* its de-jittering, so that the quality check sees the timestamps as
recorded; :mod:`synchrony.segments` builds the analysis timeline.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Channel labels (lower case) recognised as a board's marker channel when no channel type says so.
MARKER_CHANNEL_LABELS = ("marker", "markers", "trigger", "triggers", "stim")
#: Channel labels (lower case) recognised as a packet counter (BrainFlow ``package_num``).
PACKAGE_CHANNEL_LABELS = ("package_num", "package", "packet", "packet_num", "counter", "sample_counter")
#: Files from this size on have their EEG streams read by worker processes, in parallel (below it,
#: starting the workers costs more than it saves).
PARALLEL_MIN_BYTES = 64 * 1024 * 1024


class XdfLoadError(ValueError):
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

    @property
    def n_samples(self) -> int:
        return int(self.timestamps.shape[0])

    def describe(self) -> str:
        """A short human-readable identity: ``A (sub-01, therapist; stream d01-A-EEG)``."""
        who = ", ".join(v for v in (self.participant.get("id"), self.participant.get("role")) if v)
        return f"{self.label} ({who + '; ' if who else ''}stream {self.stream_name})"


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
        Wall time spent in pyxdf.
    file_problems : list of str
        Damage or loss in the file itself (corruption reported by pyxdf, missing footers, sample
        counts that disagree with the footer).
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

    @property
    def participants(self) -> tuple[ParticipantEeg, ParticipantEeg]:
        return (self.a, self.b)


class _PyxdfProblems(logging.Handler):
    """Collects pyxdf's warnings and errors (it logs corruption and carries on)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
    described = [{k: _text(entry, k) for k in ("label", "type", "unit")} for entry in entries if isinstance(entry, dict)]
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


def _identity(stream: dict) -> str:
    info = stream["info"]
    return f"'{_text(info, 'name')}' (type {_text(info, 'type') or '?'}, source_id '{_text(info, 'source_id')}')"


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
            matches = [
                s for s in all_streams if wanted in (_text(s["info"], "name"), _text(s["info"], "source_id"))
            ]
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
        label = _text(_first(_desc(stream["info"]), "participant", {}), "label")
        if not label:
            source_id = _text(stream["info"], "source_id")
            parts = source_id.split(".")
            if source_id.startswith("dyadlab.") and len(parts) >= 5 and parts[-1] == "eeg":
                label = parts[-2]
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


def _participant(label: str, stream: dict, samples_file: Path | None = None) -> ParticipantEeg:
    """The participant's EEG from a pyxdf stream. With ``samples_file``, the EEG samples are
    written there as ``.npy`` (float32, channels x samples) instead, ``data`` left empty."""
    info = stream["info"]
    name = _text(info, "name")
    values = np.asarray(stream["time_series"])
    timestamps = np.asarray(stream["time_stamps"], dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise XdfLoadError(
            f"Participant {label}'s EEG stream {_identity(stream)} holds no samples. The amplifier or its "
            "LSL outlet did not deliver data while recording (check `dyadlab inspect FILE.xdf`)."
        )
    if not np.issubdtype(values.dtype, np.number):
        raise XdfLoadError(f"Participant {label}'s EEG stream {_identity(stream)} is not numeric ({values.dtype}).")
    channels = _channels(info, values.shape[1])
    types = [c["type"].lower() for c in channels]
    labels_lower = [c["label"].lower() for c in channels]
    marker_index = next(
        (i for i, (t, lab) in enumerate(zip(types, labels_lower)) if t in ("marker", "markers", "stim", "trigger")
         or (not t and lab in MARKER_CHANNEL_LABELS)),
        None,
    )
    package_index = next((i for i, lab in enumerate(labels_lower) if lab in PACKAGE_CHANNEL_LABELS), None)
    eeg_index = [i for i, t in enumerate(types) if t == "eeg"]
    if not eeg_index:
        # No channel typed EEG (untyped, or e.g. "ExG"): every channel but marker and counter.
        eeg_index = [i for i in range(values.shape[1]) if i not in (marker_index, package_index)]
    if not eeg_index:
        raise XdfLoadError(f"Participant {label}'s stream {_identity(stream)} holds no EEG channel (only marker/counter channels).")
    excluded = [channels[i]["label"] for i in range(values.shape[1]) if i not in eeg_index]
    consecutive = eeg_index == list(range(eeg_index[0], eeg_index[-1] + 1))
    samples = values.T[eeg_index[0]:eeg_index[-1] + 1] if consecutive else values.T[eeg_index]  # a view if consecutive
    if samples_file is None:
        data = np.ascontiguousarray(samples, dtype=np.float32)
    else:
        _save_rows(samples_file, samples.astype(np.float32, copy=False))
        data = np.zeros((len(eeg_index), 0), dtype=np.float32)
    units = {channels[i]["unit"] for i in eeg_index} - {""}
    footer = stream.get("footer", {}).get("info") if isinstance(stream.get("footer"), dict) else None
    footer_count = _text(footer, "sample_count") if footer is not None else ""
    return ParticipantEeg(
        label=label,
        stream_name=name,
        source_id=_text(info, "source_id"),
        participant=_subsection(_desc(info), "participant"),
        nominal_rate=float(_text(info, "nominal_srate") or 0.0),
        channel_labels=[channels[i]["label"] for i in eeg_index],
        data=data,
        timestamps=timestamps,
        unit=units.pop() if len(units) == 1 else ("mixed" if units else "unknown"),
        board_markers=None if marker_index is None else np.asarray(values[:, marker_index], dtype=np.float64),
        package_numbers=None if package_index is None else np.asarray(values[:, package_index], dtype=np.float64),
        clock_times=np.asarray(stream.get("clock_times", []), dtype=np.float64),
        clock_values=np.asarray(stream.get("clock_values", []), dtype=np.float64),
        footer_sample_count=int(float(footer_count)) if footer_count else None,
        excluded_channels=excluded,
    )


def _save_rows(path: Path, samples: np.ndarray, rows: int = 4) -> None:
    """``np.save`` of a strided (channels, samples) view of pyxdf's (samples, channels) array,
    ``rows`` channels at a time: ``np.save`` itself writes such a view value by value (slow) and
    a contiguous copy of it all would hold the samples twice."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(samples))
        for first in range(0, samples.shape[0], rows):
            np.ascontiguousarray(samples[first:first + rows]).tofile(handle)


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


def _read_streams(path: Path, selection: list[int] | None) -> tuple[list[dict], Any, list[str]]:
    """pyxdf.load_xdf with clock synchronisation, without de-jittering (the quality check must
    see the recorded timestamps; synchrony.segments builds the analysis timeline); also returns
    the problems pyxdf logged (it reports corruption and carries on)."""
    import pyxdf

    problems = _PyxdfProblems()
    pyxdf_logger = logging.getLogger("pyxdf")
    pyxdf_logger.addHandler(problems)
    try:
        streams, header = pyxdf.load_xdf(
            str(path), select_streams=selection, synchronize_clocks=True, handle_clock_resets=True,
            dejitter_timestamps=False,
        )
    except Exception as error:  # pyxdf raises bare Exception/IOError/struct.error on bad files
        raise XdfLoadError(
            f"{path} could not be read as XDF ({type(error).__name__}: {error}). The file may be truncated "
            f"or not an XDF recording; `dyadlab inspect {path}` shows which chunk is damaged."
        ) from error
    finally:
        pyxdf_logger.removeHandler(problems)
    return streams, header, problems.messages


def _read_eeg_stream(path: Path, stream_id: int, spill: Path | None = None) -> tuple[list[dict], Any, list[str]]:
    """One EEG stream read in its own pyxdf pass and converted at once (see :func:`_convert`):
    what it returns holds the stream's :class:`ParticipantEeg`, never pyxdf's chunks.

    A worker process (:func:`_worker_main`) passes the folder ``spill``: the EEG samples go back
    through an ``.npy`` file there (``stream["samples_file"]``) rather than in the pickled result,
    which would hold them twice more in the worker and once more in the parent.
    """
    streams, header, problems = _read_streams(path, [stream_id])
    for stream in streams:
        _convert(stream, None if spill is None else spill / f"stream-{stream_id}.npy")
    return streams, header, problems


class _WorkerFailed(Exception):
    """A reading worker could not be started, failed, or did not end in time."""


#: A reading worker that has not ended this many seconds after its start, plus
#: :data:`WORKER_TIMEOUT_S_PER_MB` per MB of the file, is taken to have stalled (pyxdf on a
#: damaged file) and is killed; the streams are then read in the caller. Generous: pyxdf reads
#: about 70 MB/s, 14 times faster than the allowance.
WORKER_TIMEOUT_S = 60.0
WORKER_TIMEOUT_S_PER_MB = 0.2
#: How often the caller looks at its running workers (seconds).
_WORKER_POLL_S = 0.05

#: The folder holding the ``synchrony`` package the caller imported.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: A worker's program (``python -c``): arguments ``PACKAGE_ROOT PATH STREAM_ID FOLDER``.
#: It must run the caller's ``synchrony``. PACKAGE_ROOT goes on ``sys.path`` only when the worker
#: finds no ``synchrony`` by itself (the caller reached a source tree through its own
#: ``sys.path``: script folder, ``sys.path`` edits), and then last: for an installed dyadlab it
#: is site-packages, which put before the standard library would let old backports there
#: (``typing``, ``dataclasses``...) shadow it. A worker that finds another copy of ``synchrony``
#: first (a caller running a checkout while dyadlab is also installed) exits rather than run
#: other code, and the caller reads the streams itself, with a warning saying why; putting
#: PACKAGE_ROOT first instead would shadow the standard library again whenever it is
#: site-packages (e.g. a ``synchrony`` folder in the working directory found first).
_WORKER_CODE = """\
import importlib.util, pathlib, sys
root = pathlib.Path(sys.argv[1])
if importlib.util.find_spec("synchrony") is None:
    sys.path.append(str(root))
import synchrony
found = pathlib.Path(synchrony.__file__).resolve().parent.parent
if found != root:
    sys.exit(f"the worker imports synchrony from {found}, the caller from {root}")
from synchrony.io import _worker_main
_worker_main(sys.argv[2:])
"""


def _worker_main(argv: list[str]) -> None:
    """A reading worker's program: ``PATH STREAM_ID FOLDER``; :func:`_read_eeg_stream`'s result,
    or its :class:`XdfLoadError`, is pickled to ``FOLDER/stream-STREAM_ID.pickle``."""
    path, stream_id, folder = Path(argv[0]), int(argv[1]), Path(argv[2])
    try:
        outcome: Any = _read_eeg_stream(path, stream_id, folder)
    except XdfLoadError as error:
        outcome = error
    with open(folder / f"stream-{stream_id}.pickle", "wb") as handle:
        pickle.dump(outcome, handle, protocol=pickle.HIGHEST_PROTOCOL)


def _start_worker(path: Path, stream_id: int, folder: Path) -> subprocess.Popen:
    """A new Python process running :func:`_worker_main` for one stream; its standard error goes
    to ``FOLDER/stream-STREAM_ID.stderr`` (a file: a pipe nobody reads while the caller waits
    for another worker could fill up and stall the worker)."""
    command = [sys.executable, "-c", _WORKER_CODE, str(_PACKAGE_ROOT), str(path), str(stream_id), str(folder)]
    try:
        with open(folder / f"stream-{stream_id}.stderr", "wb") as stderr:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    except OSError as error:  # no interpreter to run, no process to be had
        raise _WorkerFailed(f"{type(error).__name__}: {error}") from error


def _worker_result(stream_id: int, folder: Path, returncode: int) -> tuple[list[dict], Any, list[str]]:
    """What the ended worker for ``stream_id`` read: its samples loaded from the ``.npy`` files."""
    result_file = folder / f"stream-{stream_id}.pickle"
    if returncode != 0 or not result_file.is_file():
        stderr = (folder / f"stream-{stream_id}.stderr").read_text(errors="replace")
        raise _WorkerFailed(f"exit status {returncode}: {stderr.strip()[-1000:]}")
    with open(result_file, "rb") as handle:
        outcome = pickle.load(handle)
    if isinstance(outcome, XdfLoadError):
        raise outcome
    streams, header, problems = outcome
    for stream in streams:
        if "samples_file" in stream:
            stream["participant"].data = np.load(stream["samples_file"])
            stream.pop("samples_file").unlink()  # frees a memory-backed temporary folder at once
    return streams, header, problems


def _read_in_workers(
    path: Path, stream_ids: list[int], folder: Path, workers: int
) -> list[tuple[list[dict], Any, list[str]]]:
    """:func:`_read_eeg_stream` for each stream, in new Python processes (:func:`_worker_main`),
    ``workers`` at a time.

    :class:`_WorkerFailed` when a worker cannot start, fails, or has not ended
    :data:`WORKER_TIMEOUT_S` (+ :data:`WORKER_TIMEOUT_S_PER_MB` per MB) after its start; a
    worker's :class:`XdfLoadError` is raised. Either way the workers still running are killed
    and reaped: none outlives the call.

    Fresh interpreters, started by :mod:`subprocess`, rather than :mod:`multiprocessing`
    workers: forking would copy the locks of the threads the session runner has running
    (recorder, LSL), and the ``spawn``/``forkserver`` workers import the caller's main script
    again, running whatever it does at top level (the quick-check's documented snippet has no
    ``if __name__ == "__main__":`` guard).
    """
    timeout = WORKER_TIMEOUT_S + WORKER_TIMEOUT_S_PER_MB * path.stat().st_size / 1e6
    pending = list(stream_ids)
    running: dict[int, tuple[subprocess.Popen, float]] = {}  # stream id: (process, start time)
    results = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                stream_id = pending.pop(0)
                running[stream_id] = (_start_worker(path, stream_id, folder), time.monotonic())
            for stream_id, (process, started) in list(running.items()):
                if process.poll() is not None:
                    del running[stream_id]
                    results[stream_id] = _worker_result(stream_id, folder, process.returncode)
                elif time.monotonic() - started > timeout:
                    raise _WorkerFailed(f"the worker reading stream {stream_id} had not ended after {timeout:.3g} s")
            if running:
                time.sleep(_WORKER_POLL_S)
    finally:
        for process, _ in running.values():
            process.kill()
            process.wait()
    return [results[stream_id] for stream_id in stream_ids]


def _read_eeg_streams(path: Path, stream_ids: list[int]) -> list[tuple[list[dict], Any, list[str]]]:
    """:func:`_read_eeg_stream` for each stream: in parallel worker processes for a large file
    (pyxdf parses samples in Python, one core per stream; :func:`_read_in_workers`), else, or
    when a worker fails to start or to finish in time, one after the other here. A worker's
    :class:`XdfLoadError` is raised."""
    workers = min(len(stream_ids), os.cpu_count() or 1)
    if workers > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES and sys.executable:
        try:
            with tempfile.TemporaryDirectory(prefix="dyadlab-xdf-") as folder:
                return _read_in_workers(path, stream_ids, Path(folder), workers)
        except (_WorkerFailed, OSError) as error:  # OSError: no temporary folder, or a result file went missing
            logger.warning("reading the EEG streams in worker processes failed (%s); reading them here, "
                           "one after the other", error)
    return [_read_eeg_stream(path, stream_id) for stream_id in stream_ids]


def _read_selected(path: Path, eeg: Sequence[str] | None) -> tuple[list[dict], Any, list[str]]:
    """The streams the check needs, each EEG stream read in its own pass, and pyxdf's problems.

    pyxdf holds every chunk of every stream it reads at once (about 4 x the file for a
    60-minute dyad), so each EEG stream is read in its own pass, in a worker process for a large
    file (:func:`_read_eeg_streams`), and converted to :class:`ParticipantEeg` straight away
    (``stream["participant"]``, ``time_series`` dropped); string streams are read together;
    other streams (AUX...) are only listed. A file whose structure pyxdf cannot index is read in
    one pass, which scans past damaged chunks.
    """
    import pyxdf

    try:
        index = pyxdf.resolve_streams(str(path))
    except Exception:  # noqa: BLE001 - damaged structure: fall back to one full pass
        index = None
    if index is None:
        streams, header, problems = _read_streams(path, None)
        for stream in streams:
            if _stream_kind(stream) == "eeg" or _named(stream["info"], eeg):
                _convert(stream)
        return streams, header, problems
    wanted_eeg, wanted_events, listed = [], [], []
    for info in index:
        flat = {key: [str(value) if value is not None else ""] for key, value in info.items()}
        stream_type = str(info.get("type") or "").lower()
        if stream_type == "eeg" or _named(flat, eeg):
            wanted_eeg.append(info["stream_id"])
        elif info.get("channel_format") == "string" or stream_type in ("markers", "marker", "events"):
            wanted_events.append(info["stream_id"])
        else:
            listed.append({"info": flat, "time_series": np.zeros((0, 0)), "time_stamps": np.zeros(0), "footer": {}})
    streams: list[dict] = []
    header: Any = {}
    problems: list[str] = []
    if wanted_events:
        streams, header, problems = _read_streams(path, wanted_events)
    for loaded, header, pass_problems in _read_eeg_streams(path, wanted_eeg):
        streams += loaded
        problems += pass_problems
    if not index and not streams:
        streams, header, problems = _read_streams(path, None)
    order = {info["stream_id"]: position for position, info in enumerate(index)}
    streams.sort(key=lambda s: order.get(s["info"].get("stream_id"), len(order)))
    return streams + listed, header, problems


def _named(info: dict, eeg: Sequence[str] | None) -> bool:
    return bool(eeg) and (_text(info, "name") in eeg or _text(info, "source_id") in eeg)


def _convert(stream: dict, samples_file: Path | None = None) -> None:
    """Replace a pyxdf EEG stream's samples by its :class:`ParticipantEeg` (label set later);
    with ``samples_file``, its EEG samples are written there (``stream["samples_file"]``)."""
    try:
        stream["participant"] = _participant("?", stream, samples_file)
        if samples_file is not None:
            stream["samples_file"] = samples_file
    except XdfLoadError as error:
        stream["participant"] = error  # raised only if this stream is picked
    stream["time_series"] = None


def _participant_of(label: str, stream: dict) -> ParticipantEeg:
    participant = stream.get("participant")
    if isinstance(participant, Exception):
        raise XdfLoadError(str(participant).replace("Participant ?'s", f"Participant {label}'s")) from participant
    if participant is None:
        participant = _participant(label, stream)
    participant.label = label
    return participant


def load_dyad(path: str | Path, *, eeg: Sequence[str] | None = None) -> DyadRecording:
    """Read a hyperscanning XDF file.

    Parameters
    ----------
    path : str or Path
        The XDF file (``.xdf`` or ``.xdfz``).
    eeg : pair of str, optional
        Participant A's and B's EEG streams, each by stream name or ``source_id``. Needed when the
        file's metadata does not identify them (more than two EEG streams, or EEG streams of
        another type).

    Returns
    -------
    DyadRecording

    Raises
    ------
    XdfLoadError
        The file is missing, not XDF, unreadable, or does not hold two EEG streams with samples.

    Notes
    -----
    The EEG streams of a file of :data:`PARALLEL_MIN_BYTES` or more are read in parallel, each
    by pyxdf in a new Python process (``sys.executable``, which imports only this module); they
    are read here, one after the other, when such a process cannot be started, fails, or has
    not ended after :data:`WORKER_TIMEOUT_S` + :data:`WORKER_TIMEOUT_S_PER_MB` per MB.
    """

    path = Path(path)
    if not path.is_file():
        raise XdfLoadError(f"No such file: {path}")
    started = time.perf_counter()
    streams, header, problems = _read_selected(path, eeg)
    load_seconds = time.perf_counter() - started
    logger.debug("read %s in %.2f s", path, load_seconds)

    warnings: list[str] = []
    file_problems: list[str] = []  # damage or loss in the file itself (also listed in warnings)
    if problems:
        unique = list(dict.fromkeys(problems))
        file_problems.append(
            f"pyxdf reported {len(problems)} problem(s) reading the file, data may be missing: "
            + "; ".join(m.rstrip(". ") for m in unique[:5])
            + f". Run `dyadlab inspect {path.name}` for a chunk-by-chunk check."
        )
    if not streams:
        raise XdfLoadError(
            f"{path} holds no streams. The recording may have failed before any stream was added "
            f"(`dyadlab inspect {path}` shows the chunks present)."
        )
    kinds = [_stream_kind(s) for s in streams]
    eeg_streams = [s for s, k in zip(streams, kinds) if k == "eeg"]
    picked = _pick_eeg_streams(eeg_streams, streams, eeg, warnings)
    a, b = (_participant_of(label, stream) for label, stream in picked)

    for participant, (_, stream) in zip((a, b), picked):
        if participant.footer_sample_count is not None and participant.footer_sample_count != participant.n_samples:
            file_problems.append(
                f"Participant {participant.label}'s stream '{participant.stream_name}': the footer counts "
                f"{participant.footer_sample_count} samples but {participant.n_samples} were read; part of "
                "the file is damaged or missing."
            )

    marker_sources = [s for s, k in zip(streams, kinds) if k == "markers" and s not in (picked[0][1], picked[1][1])]
    markers = sorted((m for s in marker_sources for m in _events(s)), key=lambda m: m.time)
    responses = sorted(
        (m for s, k in zip(streams, kinds) if k == "responses" for m in _events(s)), key=lambda m: m.time
    )
    for stream in eeg_streams:
        stream.pop("participant", None)  # unpicked streams' samples are released with the dict
    used = {id(picked[0][1]), id(picked[1][1])} | {id(s) for s in marker_sources}
    used |= {id(s) for s, k in zip(streams, kinds) if k == "responses"}
    for stream in streams:
        if id(stream) in used and "footer" not in stream:
            file_problems.append(
                f"Stream '{_text(stream['info'], 'name')}' has no footer: the recording was not finalised (crash or "
                "truncated file); the data present are analysed."
            )
    for stream in marker_sources:
        if len(stream["time_stamps"]) == 0:
            warnings.append(f"The marker stream '{_text(stream['info'], 'name')}' holds no markers.")
    header_info = header.get("info", {}) if isinstance(header, dict) else {}
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
    )
