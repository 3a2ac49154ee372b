"""Out of XDF: MNE objects (Raw with the markers as annotations, paired Epochs for HyPyP) and EEG-BIDS.

MNE has no XDF reader and HyPyP works on MNE objects; labs share data as EEG-BIDS. This module
turns a hyperscanning XDF into:

- :func:`to_raw`: one participant's EEG as an :class:`mne.io.RawArray` (volts), with every marker
  as an annotation at the participant's sample nearest to it;
- :func:`paired_epochs`: both participants' :class:`mne.Epochs` cut at the same moments (the same
  events, in the same order), ready for HyPyP's ``pair_data``;
- :func:`write_bids`: one EEG-BIDS recording per participant (mne-bids ``write_raw_bids``,
  BrainVision files), the markers in ``events.tsv``, and the dyad in ``participants.tsv`` and
  ``scans.tsv`` (see ``docs/export.md`` for the hyperscanning naming).

Times: the XDF is read by :func:`dyadlab.synchrony.io.load_dyad`, the quick-check's loader, so
samples and markers carry the same clock-synchronised LSL timestamps the quick-check uses. A
Raw holds the recorded samples as they are (no resampling, no de-jittering): sample ``k`` is at
``k / sfreq`` seconds in the Raw. A marker is placed at the sample whose recorded timestamp is
nearest to it (within half a sample period of the marker unless the stream lost samples there),
so that an event points at the data recorded when it happened, across jitter, drift and gaps.
Samples lost in a gap are not invented: the gap is annotated ``BAD_ACQ_SKIP``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.synchrony.check import conditions_and_blocks
from dyadlab.synchrony.io import DyadRecording, EventMarker, ParticipantEeg, load_dyad

if TYPE_CHECKING:
    import mne
    from mne_bids import BIDSPath

logger = logging.getLogger(__name__)

#: The BIDS EEG format written: BrainVision stores IEEE float32 samples (pybv ``binary_float32``),
#: so an XDF's float32 microvolts come back to float32 rounding; EDF stores 16-bit integers scaled
#: per channel, which would quantise them (resolution: the channel's range / 65535).
BIDS_FORMAT = "BrainVision"
#: Volts per unit of the XDF channel ``unit`` (lower case); XDF's recommended EEG unit is microvolts.
VOLTS_PER_UNIT = {
    "microvolts": 1e-6,
    "microvolt": 1e-6,
    "µv": 1e-6,
    "uv": 1e-6,
    "millivolts": 1e-3,
    "millivolt": 1e-3,
    "mv": 1e-3,
    "volts": 1.0,
    "volt": 1.0,
    "v": 1.0,
}
#: A step between recorded timestamps longer than this many sample periods is a gap (lost samples).
GAP_PERIODS = 1.5
#: Annotation of a gap in the recorded samples (MNE's name for an acquisition skip).
GAP_ANNOTATION = "BAD_ACQ_SKIP"
#: Task label when neither the caller nor the file names the protocol.
DEFAULT_TASK = "hyperscanning"
#: Columns dyadlab adds to ``participants.tsv`` and to each recording's row in ``scans.tsv``.
DYAD_COLUMNS = {
    "role": "The person's role in the dyad (therapist, patient, stranger, partner...).",
    "dyad": "The dyad id(s) the person was recorded in (comma-separated when several).",
    "partner": "The participant_id of the person recorded with them in the same session (comma-separated "
    "in participants.tsv when several).",
    "dyad_label": "The person's label in the hyperscanning session (A or B; scans.tsv only).",
}


class ExportError(DyadlabError, ValueError):
    """The recording cannot be exported as asked (the message says why and what to do)."""


def _recording(source: str | Path | DyadRecording, eeg: Sequence[str] | None) -> DyadRecording:
    return source if isinstance(source, DyadRecording) else load_dyad(source, eeg=eeg)


def _participant(recording: DyadRecording, participant: str) -> ParticipantEeg:
    """Participant ``"A"``/``"B"``, or the one whose id is ``participant``."""
    for p in recording.participants:
        if participant in (p.label, p.participant.get("id")):
            return p
    known = ", ".join(f"{p.label} (id {p.participant.get('id') or 'none'})" for p in recording.participants)
    raise ExportError(f"No participant {participant!r} in {recording.path.name}; it holds {known}.")


def _volts_per_unit(p: ParticipantEeg) -> float:
    if p.unit in ("unknown", ""):
        logger.warning(
            "Participant %s's EEG channels declare no unit; taken as microvolts (XDF's recommendation).", p.label
        )
        return 1e-6
    scale = VOLTS_PER_UNIT.get(p.unit.strip().lower())
    if scale is None:
        raise ExportError(
            f"Participant {p.label}'s EEG channels are in {p.unit!r}, which is not a voltage unit dyadlab knows "
            f"({', '.join(sorted(VOLTS_PER_UNIT))}); a stream with channels in several units cannot be one Raw."
        )
    return scale


def nearest_samples(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the recorded sample whose timestamp is nearest to each of ``times``.

    Timestamps need not increase (a clock reset leaves them out of order): they are searched in
    sorted order and the index in the recording is returned.
    """
    order = np.argsort(timestamps, kind="stable")
    ordered = timestamps[order]
    right = np.clip(np.searchsorted(ordered, times), 1, ordered.size - 1)
    left = right - 1
    nearer_left = np.abs(times - ordered[left]) <= np.abs(ordered[right] - times)
    return order[np.where(nearer_left, left, right)]


def _inside(p: ParticipantEeg, times: np.ndarray) -> np.ndarray:
    """Which ``times`` lie within the participant's recording (half a sample beyond its ends)."""
    half = 0.5 / p.nominal_rate
    return (times >= p.timestamps.min() - half) & (times <= p.timestamps.max() + half)


def describe_marker(marker: EventMarker) -> str:
    """The annotation (and BIDS ``trial_type``) of a marker.

    A dyadlab marker gives ``EVENT/CONDITION`` (``block_start/cooperation``, ``trial_start/rest``;
    MNE selects tagged events by either part) or its event alone; another tool's marker string is
    kept as it is.
    """
    if marker.fields is None:
        return marker.text
    condition = marker.fields.get("condition")
    return f"{marker.event}/{condition}" if condition else str(marker.event)


def _gaps(p: ParticipantEeg) -> np.ndarray:
    """Indices of the last sample before each gap in the recorded timestamps."""
    return np.flatnonzero(np.diff(p.timestamps) > GAP_PERIODS / p.nominal_rate)


def _meas_date(recording: DyadRecording) -> _dt.datetime | None:
    """The recording's start from the XDF header (``datetime``), in UTC; ``None`` if absent."""
    text = recording.file_header.get("datetime", "")
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(_dt.timezone.utc) if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def to_raw(
    source: str | Path | DyadRecording, participant: str, *, eeg: Sequence[str] | None = None
) -> mne.io.RawArray:
    """One participant's EEG as an MNE Raw, with the session's markers as annotations.

    Parameters
    ----------
    source : str, Path or DyadRecording
        The XDF file, or a recording already read by :func:`~dyadlab.synchrony.io.load_dyad`.
    participant : str
        ``"A"`` or ``"B"``, or the participant's id in the file.
    eeg : pair of str, optional
        As for :func:`~dyadlab.synchrony.io.load_dyad`: the two EEG streams, when the file's
        metadata does not say which they are.

    Returns
    -------
    mne.io.RawArray
        EEG channels only (type ``eeg``), in volts, at the stream's nominal rate, without
        electrode positions (an XDF holds none; ``raw.set_montage(...)`` adds a template's, which
        EEG-BIDS would then list as if measured). Annotations: every marker within the
        recording (:func:`describe_marker`; duration 0) at the sample recorded nearest to it, and
        ``BAD_ACQ_SKIP`` at each gap in the samples. Markers outside the recording are left out
        (logged).

    Raises
    ------
    ExportError
        The participant is not in the file, or the channels' unit is not a voltage.
    dyadlab.synchrony.io.XdfLoadError
        The file cannot be read.
    """
    import mne

    recording = _recording(source, eeg)
    p = _participant(recording, participant)
    rate = p.nominal_rate
    if rate <= 0:
        raise ExportError(
            f"Participant {p.label}'s stream '{p.stream_name}' declares no sampling rate (irregular stream); "
            "an MNE Raw needs a regular rate."
        )
    info = mne.create_info(list(p.channel_labels), rate, ch_types="eeg")
    raw = mne.io.RawArray(p.data.astype(np.float64) * _volts_per_unit(p), info, verbose=False)
    raw.set_meas_date(_meas_date(recording))

    times = np.array([m.time for m in recording.markers], dtype=np.float64)
    inside = _inside(p, times)
    if not inside.all():
        logger.warning(
            "%d of %d markers lie outside participant %s's recording and are not annotated.",
            int((~inside).sum()),
            times.size,
            p.label,
        )
    kept = [m for m, keep in zip(recording.markers, inside) if keep]
    onsets = nearest_samples(p.timestamps, times[inside]) / rate
    descriptions = [describe_marker(m) for m in kept]
    gaps = _gaps(p)
    if gaps.size:
        logger.warning(
            "Participant %s's stream has %d gap(s) in its samples (lost samples): annotated %s; the Raw's time "
            "runs on the recorded samples, so after a gap it is behind the session's clock by the gap.",
            p.label,
            gaps.size,
            GAP_ANNOTATION,
        )
    annotations = mne.Annotations(
        onset=np.concatenate([onsets, gaps / rate]),
        duration=np.concatenate([np.zeros(onsets.size), np.full(gaps.size, 1.0 / rate)]),
        description=descriptions + [GAP_ANNOTATION] * int(gaps.size),
        orig_time=raw.info["meas_date"],
    )
    raw.set_annotations(annotations)
    return raw


def paired_epochs(
    source: str | Path | DyadRecording,
    *,
    epoch_length: float = 1.0,
    conditions: Sequence[str] | None = None,
    eeg: Sequence[str] | None = None,
) -> tuple[mne.Epochs, mne.Epochs]:
    """Both participants' epochs at the same moments, for HyPyP (``np.array([a.get_data(), b.get_data()])``).

    Epochs of ``epoch_length`` seconds tile each condition block (as the quick-check finds them:
    dyadlab ``block_start``/``block_end`` markers, ``conditions`` specifications, or the whole
    overlap of the two recordings), within the time both participants recorded. Each epoch starts
    at the sample of A and the sample of B recorded nearest to the same LSL time, so epoch ``i``
    of A and epoch ``i`` of B cover the same moment. An epoch across a gap of either recording or
    holding a non-finite value in either is dropped from both.

    Parameters
    ----------
    source : str, Path or DyadRecording
        The XDF file or a recording read by :func:`~dyadlab.synchrony.io.load_dyad`.
    epoch_length : float
        Seconds.
    conditions : sequence of str, optional
        ``NAME=START:END`` specifications for files without dyadlab block markers (as
        ``dyadlab check --condition``).
    eeg : pair of str, optional
        As for :func:`to_raw`.

    Returns
    -------
    (mne.Epochs, mne.Epochs)
        Participant A's and B's epochs, preloaded, no baseline correction, with the same events
        (the event id of each condition, in the order of first appearance) and the same count.

    Raises
    ------
    ExportError
        The participants were recorded at different rates (HyPyP needs one), or no epoch fits.
    """
    import mne

    recording = _recording(source, eeg)
    a, b = recording.a, recording.b
    if a.nominal_rate != b.nominal_rate:
        raise ExportError(
            f"Participant A was recorded at {a.nominal_rate:g} Hz and B at {b.nominal_rate:g} Hz; paired epochs need "
            "one rate. Resample the Raws of to_raw() to a common rate (raw.resample) and epoch them yourself."
        )
    rate = a.nominal_rate
    n_times = int(round(epoch_length * rate))
    if n_times < 2:
        raise ExportError(f"An epoch of {epoch_length} s at {rate:g} Hz holds fewer than 2 samples.")
    # Both recorded until one period after their last samples (an epoch may end with them).
    span = (max(a.timestamps.min(), b.timestamps.min()), min(a.timestamps.max(), b.timestamps.max()) + 1.0 / rate)
    blocks, _, notes = conditions_and_blocks(recording, conditions, span)
    for note in notes:
        logger.warning("%s", note)
    names = list(dict.fromkeys(block.condition for block in blocks))
    starts: list[float] = []
    codes: list[int] = []
    for block in blocks:
        first, last = max(block.start, span[0]), min(block.end, span[1])
        count = int(np.floor((last - first) * rate / n_times + 1e-9))
        starts.extend(first + np.arange(count) * n_times / rate)
        codes.extend([names.index(block.condition) + 1] * count)
    times = np.asarray(starts, dtype=np.float64)
    samples = [nearest_samples(p.timestamps, times) for p in (a, b)]
    usable = np.ones(times.size, dtype=bool)
    for p, first in zip((a, b), samples):
        usable &= first + n_times <= p.n_samples
        for gap in _gaps(p):  # the epoch holds the samples on both sides of a gap
            usable &= ~((first <= gap) & (gap < first + n_times - 1))
        finite = np.isfinite(p.data).all(axis=0)
        bad = np.concatenate(([0], np.cumsum(~finite)))
        clipped = np.minimum(first, p.n_samples - n_times).clip(0)
        usable &= bad[clipped + n_times] - bad[clipped] == 0
    if not usable.any():
        raise ExportError(
            f"No {epoch_length}-s epoch fits in the condition blocks of {recording.path.name} where both "
            "participants recorded valid samples."
        )
    dropped = int((~usable).sum())
    if dropped:
        logger.warning("%d of %d paired epochs dropped (gap, NaN or the recording's end).", dropped, usable.size)
    kept_codes = np.asarray(codes, dtype=int)[usable]
    event_id = {name: code for code, name in enumerate(names, start=1) if code in kept_codes}
    paired = []
    for p, first in zip((a, b), samples):
        events = np.column_stack([first[usable], np.zeros(kept_codes.size, dtype=int), kept_codes])
        paired.append(
            mne.Epochs(
                to_raw(recording, p.label),
                events,
                event_id=event_id,
                tmin=0.0,
                tmax=(n_times - 1) / rate,
                baseline=None,
                preload=True,
                reject_by_annotation=False,  # pairs are dropped together above, never one side alone
                event_repeated="error",
                verbose=False,
            )
        )
    return paired[0], paired[1]


@dataclass(frozen=True)
class BidsRecording:
    """One participant's recording written by :func:`write_bids`.

    Attributes
    ----------
    label : str
        ``"A"`` or ``"B"`` in the session.
    subject, partner : str
        BIDS subject labels (without ``sub-``) of the participant and of their partner.
    role, dyad : str
        From the file (``n/a`` when it does not say).
    path : BIDSPath
        The recording's BIDS path (``bids_path.fpath`` is the ``.vhdr`` file).
    n_events : int
        Markers written to ``events.tsv``.
    """

    label: str
    subject: str
    partner: str
    role: str
    dyad: str
    path: BIDSPath
    n_events: int


def bids_label(text: str, what: str) -> str:
    """``text`` as a BIDS label (letters and digits only; a leading ``sub-``/``ses-``/``task-`` dropped).

    Raises
    ------
    ExportError
        Nothing is left.
    """
    label = re.sub(r"[^A-Za-z0-9]", "", re.sub(r"^(sub|ses|task)-", "", text.strip()))
    if not label:
        raise ExportError(f"The {what} {text!r} has no letter or digit; BIDS labels are alphanumeric. Pass one.")
    return label


def _who(recording: DyadRecording, p: ParticipantEeg, subjects: Mapping[str, str]) -> tuple[str, str]:
    """The participant's BIDS subject label and role."""
    header = recording.file_header
    given = (
        subjects.get(p.label)
        or p.participant.get("id")
        or header.get(f"participant_{p.label}")
        or (f"{header['dyad']}{p.label}" if header.get("dyad") else "")
    )
    if not given:
        raise ExportError(
            f"{recording.path.name} does not say who participant {p.label} is (no participant id in the stream or "
            f"the file header). Name both: --subject-a ID --subject-b ID (subjects={{'A': ..., 'B': ...}})."
        )
    role = p.participant.get("role") or header.get(f"role_{p.label}") or "n/a"
    return bids_label(given, f"participant {p.label}'s id"), role


def _merge_cell(old: Any, new: str) -> str:
    """A comma-separated set of values in a TSV cell, with ``new`` added."""
    values = [v for v in str(old).split(",") if v and v != "n/a"]
    if new != "n/a":
        values.append(new)
    return ",".join(dict.fromkeys(values)) or "n/a"


def _add_dyad_columns(table_path: Path, key_column: str, key: str, values: Mapping[str, str], merge: bool) -> None:
    """Set ``values`` in the row of ``table_path`` (a BIDS TSV) whose ``key_column`` is ``key``;
    ``merge``: add to a comma-separated set instead of replacing. Describes the columns in the
    TSV's JSON sidecar."""
    import pandas as pd

    table = pd.read_csv(table_path, sep="\t", dtype=str, keep_default_na=False)
    row = table[key_column] == key
    for column, value in values.items():
        if column not in table:
            table[column] = "n/a"
        table.loc[row, column] = [_merge_cell(old, value) if merge else value for old in table.loc[row, column]]
    table.to_csv(table_path, sep="\t", index=False, na_rep="n/a")
    sidecar = table_path.with_suffix(".json")
    described = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    for column in values:
        described.setdefault(column, {"Description": DYAD_COLUMNS[column]})
    sidecar.write_text(json.dumps(described, indent=4) + "\n", encoding="utf-8")


def write_bids(
    source: str | Path | DyadRecording,
    bids_root: str | Path,
    *,
    session: str | None = None,
    task: str | None = None,
    subjects: Mapping[str, str] | None = None,
    eeg: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[BidsRecording]:
    """Write a hyperscanning XDF as EEG-BIDS: one recording per participant, the dyad in the tables.

    Parameters
    ----------
    source : str, Path or DyadRecording
        The XDF file, or a recording read by :func:`~dyadlab.synchrony.io.load_dyad`.
    bids_root : str or Path
        The BIDS dataset's root folder (created if needed; other sessions may be in it already).
    session : str, optional
        Session label (``ses-``); default the file header's ``session``, else none.
    task : str, optional
        Task label (``task-``); default the file header's ``protocol``, else ``hyperscanning``.
    subjects : mapping, optional
        ``{"A": id, "B": id}``: subject labels when the file does not hold participant ids (or to
        override them). Default: the streams' participant ids, the header's ``participant_A/B``,
        else the header's dyad id followed by the label (``d01A``).
    eeg : pair of str, optional
        As for :func:`to_raw`.
    overwrite : bool
        Replace recordings already in ``bids_root`` with the same entities.

    Returns
    -------
    list of BidsRecording
        A's and B's recordings.

    Raises
    ------
    ExportError
        Participants cannot be named, both have the same subject label, or a channel unit is not
        a voltage.
    FileExistsError
        A recording exists and ``overwrite`` is false (mne-bids' message names it).

    Notes
    -----
    Each participant is a BIDS subject with their own
    ``sub-<id>[_ses-<n>]_task-<task>[_acq-<dyad>]_eeg.vhdr`` (BrainVision, float32 samples in µV:
    see :data:`BIDS_FORMAT`; ``acq-`` is the file's dyad id, so that a person recorded with two
    partners in one session has two recordings), ``_events.tsv`` (every marker: onset, sample,
    ``trial_type`` from :func:`describe_marker`) and ``_channels.tsv``. The two recordings of one
    session share session, task and acquisition labels and the same ``acq_time``; their
    pairing is in ``participants.tsv`` (``role``, ``dyad``, ``partner``: comma-separated sets
    across sessions) and, per recording, in ``scans.tsv`` (``dyad``, ``partner``, ``role``,
    ``dyad_label``), following the BIDS starter kit's advice for hyperscanning (one recording per
    participant, the dyad in the tabular files).
    """
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    recording = _recording(source, eeg)
    header = recording.file_header
    subjects = subjects or {}
    who = {p.label: _who(recording, p, subjects) for p in recording.participants}
    if who["A"][0] == who["B"][0]:
        raise ExportError(
            f"Both participants would be subject {who['A'][0]!r}; name them apart with --subject-a and --subject-b."
        )
    session_label = session or header.get("session") or None
    session_label = bids_label(session_label, "session") if session_label else None
    task_label = bids_label(task or header.get("protocol") or DEFAULT_TASK, "task")
    dyad = header.get("dyad") or "n/a"
    # acq-<dyad>: a person recorded twice in one session and task, with two partners (a patient
    # with the therapist, then with a stranger), has two recordings that BIDS must tell apart.
    acquisition = bids_label(dyad, "dyad id") if dyad != "n/a" else None
    written = []
    for p in recording.participants:
        subject, role = who[p.label]
        partner = who["B" if p.label == "A" else "A"][0]
        raw = to_raw(recording, p.label)
        path = BIDSPath(
            subject=subject,
            session=session_label,
            task=task_label,
            acquisition=acquisition,
            datatype="eeg",
            root=bids_root,
        )
        with mne.utils.use_log_level("error"):
            write_raw_bids(raw, path, format=BIDS_FORMAT, allow_preload=True, overwrite=overwrite, verbose=False)
        root = Path(bids_root)
        _add_dyad_columns(
            root / "participants.tsv",
            "participant_id",
            f"sub-{subject}",
            {"role": role, "dyad": dyad, "partner": f"sub-{partner}"},
            merge=True,
        )
        scans = path.copy().update(suffix="scans", extension=".tsv", task=None, acquisition=None, datatype=None)
        _add_dyad_columns(
            scans.fpath,
            "filename",
            f"eeg/{path.copy().update(suffix='eeg', extension='.vhdr').basename}",
            {"dyad": dyad, "partner": f"sub-{partner}", "role": role, "dyad_label": p.label},
            merge=False,
        )
        n_events = sum(not d.startswith("BAD_") for d in raw.annotations.description)
        logger.info("Participant %s -> %s (%d events)", p.label, path.fpath, n_events)
        written.append(BidsRecording(p.label, subject, partner, role, dyad, path, n_events))
    return written
