"""``dyadlab repair``: bring a run's ``session.json`` in line with what its XDF file holds.

A run that was killed outright (``kill -9``, a power cut, a crash of the interpreter) never
finalises its ``session.json``: the record is at most one block behind (the runner rewrites it
after every block) and still says ``"status": "running"``. The XDF file, written chunk by chunk
and flushed every half second, holds the truth: the ``session_start``, ``block_start``,
``block_end`` and ``session_end`` markers that reached it. :func:`repair_session` reads them and
rewrites the record:

- a block whose ``block_start`` and ``block_end`` (``complete``) are in the file is ``completed``;
  one with ``block_end`` ``aborted`` is ``aborted``; one with a ``block_start`` but no
  ``block_end`` is ``interrupted`` (the run ended during it); one with neither is ``not-run``;
  its LSL start and end times and conditions come from the markers;
- the session is ``complete`` / ``aborted`` as its ``session_end`` marker says, or
  ``interrupted`` without one; ``timing`` takes the marker stamps;
- ``repaired`` records when, from which file, and what the record said before. The previous
  record is kept next to it (``*_session.json.before-repair``).

Only the marker stream is read; a file cut inside a chunk (the usual end of a killed run) is read
up to the cut.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dyadlab import DyadlabError

#: Largest session.json read (bytes); a real one is tens of kilobytes.
_MAX_RECORD_BYTES = 16 * 1024 * 1024


class RepairError(DyadlabError, ValueError):
    """The session record or its XDF cannot be read, or do not belong together."""


@dataclass
class RepairReport:
    """What :func:`repair_session` changed.

    Attributes
    ----------
    session_json : Path
    xdf : Path
    status_before, status_after : str
    blocks : list of (block id, status before, status after)
    changed : bool
        Whether the record was rewritten.
    notes : list of str
        Problems met while reading the XDF (a file cut inside a chunk...).
    """

    session_json: Path
    xdf: Path
    status_before: str
    status_after: str
    blocks: list[tuple[str, str, str]] = field(default_factory=list)
    changed: bool = False
    notes: list[str] = field(default_factory=list)


def find_session_records(target: str | os.PathLike[str]) -> list[Path]:
    """The ``*_session.json`` files ``target`` names: the file itself, or those in the folder."""
    path = Path(target)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise RepairError(f"{path}: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        found = sorted(p for p in path.rglob("*_session.json") if p.is_file())
        if not found:
            raise RepairError(f"{path} holds no *_session.json file (give a run's session.json or its folder)")
        return found
    if not stat.S_ISREG(mode):
        raise RepairError(f"{path} is not a regular file (give a run's session.json or its folder)")
    return [path]


def _read_record(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_RECORD_BYTES:
            raise RepairError(f"{path} is larger than {_MAX_RECORD_BYTES:,} bytes: not a dyadlab session record")
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RepairError(f"{path} cannot be read as a session record ({type(error).__name__}: {error})") from None
    if not isinstance(record, dict) or record.get("dyadlab_session_schema") != 1:
        raise RepairError(f"{path} is not a dyadlab session record (no dyadlab_session_schema: 1)")
    for key, kind in (("blocks", list), ("files", dict), ("study", str), ("dyad", str)):
        if not isinstance(record.get(key), kind):
            raise RepairError(f"{path}: the session record has no valid {key!r}")
    if not all(isinstance(b, dict) and isinstance(b.get("id"), str) for b in record["blocks"]):
        raise RepairError(f"{path}: the session record's blocks are damaged")
    return record


def _xdf_path(record: dict[str, Any], json_path: Path) -> Path:
    """The run's XDF: beside the record (the runner writes them together; a copied or moved run
    folder keeps them together), else where the record says it was written."""
    stem = json_path.name.removesuffix("_session.json")
    candidates = [json_path.with_name(stem + ".xdf")]
    named = record["files"].get("xdf")
    if isinstance(named, str) and named and "\x00" not in named:
        candidates += [json_path.parent / Path(named).name, Path(named)]
    for candidate in candidates:
        try:
            if stat.S_ISREG(candidate.stat().st_mode):
                return candidate
        except OSError:
            continue
    raise RepairError(f"the run's XDF file was not found (looked for {', '.join(map(str, candidates))})")


def _read_markers(xdf: Path, marker_source_id: str) -> tuple[list[tuple[float, dict[str, Any]]], list[str]]:
    """The session's JSON markers ``(raw timestamp, fields)`` in file order, and reading notes."""
    from dyadlab.synchrony import xdfreader

    try:
        index = xdfreader.index_xdf(xdf)
    except xdfreader.XdfIndexError as error:
        raise RepairError(f"{xdf} cannot be read ({error}); `dyadlab inspect {xdf}` shows the damage") from None
    except OSError as error:
        raise RepairError(f"{xdf} cannot be read ({error.strerror or error})") from None
    except (RecursionError, MemoryError, ValueError) as error:  # absurdly nested XML, absurd sizes
        raise RepairError(
            f"{xdf} cannot be read ({type(error).__name__}: {error}); `dyadlab inspect {xdf}` shows the damage"
        ) from None
    notes = list(index.problems)
    streams = [s for s in index.streams.values() if s.text("source_id") == marker_source_id]
    if not streams:
        streams = [
            s for s in index.streams.values() if s.channel_format == "string" and s.text("type").lower() == "markers"
        ]
        streams = [s for s in streams if not s.text("source_id").endswith(".responses")]
    if len(streams) != 1:
        raise RepairError(
            f"{xdf} holds {len(streams)} marker streams with source_id {marker_source_id!r}; "
            "it is not this run's recording"
        )
    stream = streams[0]
    try:
        samples, problems = xdfreader.read_streams(index, [stream.stream_id], synchronize_clocks=False)
    except (xdfreader.XdfIndexError, MemoryError, ValueError, OSError) as error:
        raise RepairError(f"the marker stream of {xdf} is damaged ({type(error).__name__}: {error})") from None
    notes += problems
    read = samples[stream.stream_id]
    markers = []
    for stamp, row in zip(read.time_stamps, read.strings or []):
        try:
            fields = json.loads(row[0]) if row else None
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(fields, dict) and isinstance(fields.get("event"), str):
            markers.append((float(stamp), fields))
    return markers, notes


def _block_markers(
    block_id: str, other_ids: set[str], markers: list[tuple[float, dict[str, Any]]]
) -> list[tuple[float, dict[str, Any]]]:
    """The block_start/block_end markers of one runner block (a composite's parts are named
    ``<id>-<part>``)."""
    found = []
    for stamp, fields in markers:
        if fields["event"] not in ("block_start", "block_end"):
            continue
        name = fields.get("block")
        if not isinstance(name, str):
            continue
        if name == block_id or (name.startswith(block_id + "-") and name not in other_ids):
            found.append((stamp, fields))
    return found


def _block_status(block_id: str, found: list[tuple[float, dict[str, Any]]], later_evidence: bool) -> str:
    """A runner block's status from its markers; ``later_evidence``: something after it is in the file."""
    starts = [f for _, f in found if f["event"] == "block_start"]
    ends = [f for _, f in found if f["event"] == "block_end"]
    if not starts:
        return "not-run"
    if len(ends) < len(starts):
        return "interrupted"
    if any(f.get("value") == "aborted" for f in ends):
        return "aborted"
    composite = any(f.get("block") != block_id for f in starts)
    if composite and not later_evidence:
        return "interrupted"  # the last part in the file need not be the composite's last part
    return "completed"


def repair_session(target: str | os.PathLike[str], *, write: bool = True) -> RepairReport:
    """Bring one run's ``session.json`` in line with the markers its XDF holds (see the module doc).

    Parameters
    ----------
    target : path
        The run's ``*_session.json``.
    write : bool
        Rewrite the record (the previous one is kept as ``*.before-repair``); False only reports.

    Raises
    ------
    RepairError
        The record or the XDF cannot be read, or they do not belong together.
    """
    json_path = Path(target)
    record = _read_record(json_path)
    xdf = _xdf_path(record, json_path)
    from dyadlab.acquisition.streams import source_id

    try:
        marker_source = source_id(record["study"], record["dyad"], "markers")
    except ValueError as error:
        raise RepairError(f"{json_path}: {error}") from None
    markers, notes = _read_markers(xdf, marker_source)
    start = next(((t, f) for t, f in markers if f["event"] == "session_start"), None)
    end = next(((t, f) for t, f in reversed(markers) if f["event"] == "session_end"), None)

    report = RepairReport(json_path, xdf, str(record.get("status")), str(record.get("status")), notes=notes)
    ids = {b["id"] for b in record["blocks"]}
    blocks = record["blocks"]
    for position, block in enumerate(blocks):
        found = _block_markers(block["id"], ids - {block["id"]}, markers)
        later = end is not None or any(
            _block_markers(other["id"], ids - {other["id"]}, markers) for other in blocks[position + 1 :]
        )
        status = _block_status(block["id"], found, later)
        before = str(block.get("status"))
        report.blocks.append((block["id"], before, status))
        block["status"] = status
        starts = [t for t, f in found if f["event"] == "block_start"]
        ends = [t for t, f in found if f["event"] == "block_end"]
        block["start_lsl"] = starts[0] if starts else None
        block["end_lsl"] = ends[-1] if ends else None
        conditions = [f.get("condition") for _, f in found if f["event"] == "block_start" and f.get("condition")]
        block["condition"] = "+".join(map(str, conditions)) or block.get("condition")

    if end is not None:
        complete = end[1].get("value") == "complete"
        status = "complete" if complete else "aborted"
    elif record.get("status") in ("running", "starting", None):
        complete, status = False, "interrupted"  # the run never finished its session
    else:  # it ended before the session started (failed at preflight...): the record knows best
        complete, status = bool(record.get("complete")), str(record.get("status"))
    report.status_after = status
    old_timing = record.get("timing")
    timing: dict[str, Any] = dict(old_timing) if isinstance(old_timing, dict) else {}
    if start is not None:
        timing["start_local_clock"] = start[0]
    if end is not None:
        timing["end_local_clock"] = end[0]
    elif markers and start is not None:
        timing["end_local_clock"] = markers[-1][0]  # the last marker that reached the file
    begin, finish = timing.get("start_local_clock"), timing.get("end_local_clock")
    if isinstance(begin, (int, float)) and isinstance(finish, (int, float)):
        timing["duration_s"] = finish - begin
    record["timing"] = timing
    new_fields = {
        "complete": complete,
        "status": status,
        "repaired": {
            "at_wall": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_xdf": str(xdf),
            "status_before": report.status_before,
            "markers_read": len(markers),
            "session_end_in_file": end is not None,
            "notes": notes,
        },
    }
    if status == "interrupted" and not record.get("error"):
        new_fields["error"] = (
            "the run ended without finalising its record (killed, crashed or power loss); "
            "repaired from the markers in the XDF"
        )
    report.changed = (
        any(before != after for _, before, after in report.blocks)
        or record.get("status") != status
        or record.get("complete") != complete
    )
    record.update(new_fields)
    if write and report.changed:
        backup = json_path.with_name(json_path.name + ".before-repair")
        text = json.dumps(record, indent=2, default=str)
        tmp = json_path.with_name(json_path.name + ".tmp")
        try:
            if not backup.exists():
                backup.write_bytes(json_path.read_bytes())
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, json_path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise RepairError(f"cannot rewrite {json_path} ({error.strerror or error})") from None
    return report
