"""A longitudinal hyperscanning study: who is who, which sessions are planned, what is recorded.

A study is a folder::

    STUDY/
      study.yaml        people, dyads, planned sessions, analysis settings
      outcomes.tsv      outcome measures per person and session (a clinician fills it in)
      recordings/       the sessions, as `dyadlab run --study STUDY` writes them
      analysis/         cache of per-session quick-checks, reports (`dyadlab study analyze`)

``study.yaml``::

    name: plasticity
    focal_role: patient            # whose trajectories are followed
    people:
      - {id: pat-01, role: patient}
      - {id: ther-1, role: therapist}
      - {id: str-01-04, role: stranger}
    dyads:
      - {id: D01, A: pat-01, B: ther-1}
      - {id: D01S04, A: pat-01, B: str-01-04}
    sessions:                      # session numbers count the focal person's sessions
      - {dyad: D01, session: 1}
      - {dyad: D01S04, session: 4}

Every dyad holds exactly one person of the focal role; the *partner type* of a session is the
role of the other person (``therapist``, ``stranger``...). :func:`session_status` says for every
planned session whether it is recorded, missing, incomplete (the run stopped, or its files are
gone) or failed its quick-check.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dyadlab import DyadlabError

__all__ = [
    "OUTCOMES_FILE",
    "STUDY_FILE",
    "AnalysisSettings",
    "Dyad",
    "Person",
    "PlannedSession",
    "Recording",
    "SessionStatus",
    "Study",
    "StudyError",
    "find_recordings",
    "load_study",
    "planned_run",
    "read_outcomes",
    "session_status",
    "write_outcomes_template",
    "write_study",
]

logger = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
OUTCOMES_FILE = "outcomes.tsv"
RECORDINGS_DIR = "recordings"
ANALYSIS_DIR = "analysis"
#: Columns of the outcomes TSV before the measures.
OUTCOME_KEYS: tuple[str, str] = ("person", "session")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
#: A study file lists people and sessions: thousands of lines at most.
_MAX_STUDY_BYTES = 5_000_000

StatusWord = Literal["recorded", "missing", "incomplete", "quick-check failed"]


class StudyError(DyadlabError, ValueError):
    """The study folder or one of its files cannot be used; the message says what to fix."""


def _token(what: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Strict):
    """One person of the study: an id (no names) and a role."""

    id: str
    role: str

    @field_validator("id", "role")
    @classmethod
    def _tokens(cls, value: str) -> str:
        return _token("person id/role", value)


class Dyad(_Strict):
    """Two people recorded together, as participants ``A`` and ``B``."""

    id: str
    A: str
    B: str

    @field_validator("id")
    @classmethod
    def _dyad_token(cls, value: str) -> str:
        return _token("dyad id", value)


class PlannedSession(_Strict):
    """One planned session of a dyad; ``session`` counts the focal person's sessions (1, 2...)."""

    dyad: str
    session: int = Field(ge=1, le=999)


class AnalysisSettings(_Strict):
    """What ``dyadlab study analyze`` models (stored in the study file, overridable on the command line).

    Attributes
    ----------
    condition : str
        The condition whose synchrony is followed across sessions (the "synchrony probe").
    band, metric : str
        Frequency band (one of ``bands``) and synchrony metric of the followed value.
    value : {"corrected", "z"}
        Surrogate-corrected mean (metric minus the surrogate mean) or surrogate z.
    bands : str
        Bands given to the quick-check, ``NAME=LOW-HIGH,...``.
    epoch_length : float
        Seconds.
    surrogates : int
        Partner-epoch-shuffle surrogates per session.
    outcome : str or None
        The outcomes TSV column linked to synchrony (default: its first measure).
    reference_partner : str
        Partner type whose slope is the reference of the mixed model (the therapist).
    seed : int
        Seed of the quick-check surrogates (the same for every session: same file, same numbers).
    """

    condition: str = "cooperation"
    band: str = "alpha"
    metric: str = "plv"
    value: Literal["corrected", "z"] = "corrected"
    bands: str = "alpha=8-12"
    epoch_length: float = Field(default=2.0, ge=0.25)
    surrogates: int = Field(default=100, ge=10)
    outcome: str | None = None
    reference_partner: str = "therapist"
    seed: int = 1


class Study(_Strict):
    """The study file's content (see the module docstring)."""

    name: str
    focal_role: str = "patient"
    people: list[Person]
    dyads: list[Dyad]
    sessions: list[PlannedSession]
    analysis: AnalysisSettings = AnalysisSettings()

    @field_validator("name")
    @classmethod
    def _name_token(cls, value: str) -> str:
        return _token("study name", value)

    @model_validator(mode="after")
    def _consistent(self) -> Study:
        people = [p.id for p in self.people]
        _no_duplicates("person id", people)
        _no_duplicates("dyad id", [d.id for d in self.dyads])
        _no_duplicates("planned session", [f"{s.dyad} session {s.session}" for s in self.sessions])
        roles = {p.id: p.role for p in self.people}
        for dyad in self.dyads:
            for label, person in (("A", dyad.A), ("B", dyad.B)):
                if person not in roles:
                    raise ValueError(f"dyad {dyad.id}: {label} = {person!r} is not in people; add it there")
            if dyad.A == dyad.B:
                raise ValueError(f"dyad {dyad.id} pairs {dyad.A} with themselves")
            focal = [p for p in (dyad.A, dyad.B) if roles[p] == self.focal_role]
            if len(focal) != 1:
                raise ValueError(
                    f"dyad {dyad.id} ({dyad.A}: {roles[dyad.A]}, {dyad.B}: {roles[dyad.B]}) must hold exactly one "
                    f"person of the focal role {self.focal_role!r}, whose trajectory the analysis follows"
                )
        dyads = {d.id for d in self.dyads}
        for planned in self.sessions:
            if planned.dyad not in dyads:
                raise ValueError(
                    f"planned session {planned.session} names dyad {planned.dyad!r}, which is not in dyads"
                )
        return self

    # -- look-ups ---------------------------------------------------------------------------
    def dyad(self, dyad_id: str) -> Dyad:
        """The dyad ``dyad_id`` (:class:`StudyError` naming the known ones when absent)."""
        for dyad in self.dyads:
            if dyad.id == dyad_id:
                return dyad
        raise StudyError(
            f"the study {self.name} has no dyad {dyad_id!r} (dyads: {', '.join(d.id for d in self.dyads)})"
        )

    def role(self, person_id: str) -> str:
        """The role of ``person_id``."""
        return next(p.role for p in self.people if p.id == person_id)

    def focal_and_partner(self, dyad_id: str) -> tuple[str, str]:
        """(focal person's id, partner's id) of a dyad."""
        dyad = self.dyad(dyad_id)
        return (dyad.A, dyad.B) if self.role(dyad.A) == self.focal_role else (dyad.B, dyad.A)

    def partner_type(self, dyad_id: str) -> str:
        """The role of the focal person's partner in this dyad (``therapist``, ``stranger``...)."""
        return self.role(self.focal_and_partner(dyad_id)[1])

    def people_of(self, dyad_id: str) -> dict[str, dict[str, str]]:
        """The ``people`` override of a protocol run: ``{"A": {"id", "role"}, "B": {...}}``."""
        dyad = self.dyad(dyad_id)
        return {label: {"id": pid, "role": self.role(pid)} for label, pid in (("A", dyad.A), ("B", dyad.B))}


def _no_duplicates(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


def load_study(folder: str | Path) -> Study:
    """Read and validate ``STUDY/study.yaml``.

    Raises
    ------
    StudyError
        No such file, not YAML, or a field that does not fit (the message names it).
    """
    import yaml

    path = Path(folder) / STUDY_FILE
    try:
        if path.stat().st_size > _MAX_STUDY_BYTES:
            raise StudyError(f"{path} is larger than {_MAX_STUDY_BYTES:,} bytes; is it the right file?")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(
            f"{folder} is not a study folder: it has no {STUDY_FILE} (create one with `dyadlab study simulate` or see "
            "docs/study.md)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"cannot read {path} ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise StudyError(f"{path} is not valid YAML ({error})") from None
    try:
        return Study.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'study'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise StudyError(f"{path} does not describe a study: {problems}") from None


def write_study(folder: str | Path, study: Study) -> Path:
    """Write ``study`` as ``folder/study.yaml`` (creating the folder) and return the path."""
    import yaml

    path = Path(folder) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = study.model_dump(mode="json")
    path.write_text(
        f"# dyadlab study file (docs/study.md)\n{yaml.safe_dump(data, sort_keys=False, width=120)}", encoding="utf-8"
    )
    return path


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


def write_outcomes_template(
    folder: str | Path, study: Study, measures: list[str], values: dict[tuple[str, int], dict[str, float]] | None = None
) -> Path:
    """Write ``outcomes.tsv``: one row per focal person and planned session, one column per measure.

    Parameters
    ----------
    measures : list of str
        Column names of the measures (e.g. ``symptoms``, ``alliance``).
    values : dict of (person, session) -> {measure: value}, optional
        Known values; other cells stay empty for the clinician to fill in.
    """
    rows = sorted({(study.focal_and_partner(s.dyad)[0], s.session) for s in study.sessions})
    path = Path(folder) / OUTCOMES_FILE
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow([*OUTCOME_KEYS, *measures])
        for person, session in rows:
            known = (values or {}).get((person, session), {})
            writer.writerow([person, session, *("" if known.get(m) is None else f"{known[m]:.6g}" for m in measures)])
    return path


def read_outcomes(folder: str | Path, study: Study) -> tuple[list[str], list[dict[str, Any]]]:
    """The outcome measures of ``STUDY/outcomes.tsv``: (measure names, rows).

    Each row is ``{"person": str, "session": int, measure: float or None}``; an empty cell is a
    missing value. No file: no measures.

    Raises
    ------
    StudyError
        A missing key column, an unknown person, a session that is not a positive integer, a
        value that is not a number, or a (person, session) given twice.
    """
    path = Path(folder) / OUTCOMES_FILE
    if not path.exists():
        return [], []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"cannot read {path} ({error}); save it as tab-separated UTF-8 text") from None
    reader = csv.reader(text.splitlines(), delimiter="\t")
    header = [name.strip() for name in next(reader, [])]
    if tuple(header[:2]) != OUTCOME_KEYS:
        raise StudyError(
            f"{path}: the first two columns must be {' and '.join(OUTCOME_KEYS)} (tab-separated), got {header[:2]}"
        )
    measures = header[2:]
    known_people = {p.id for p in study.people}
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        cells = [cell.strip() for cell in cells] + [""] * (len(header) - len(cells))
        person, session_text = cells[0], cells[1]
        if person not in known_people:
            raise StudyError(f"{path}, line {line}: person {person!r} is not in {STUDY_FILE}")
        try:
            session = int(session_text)
            if session < 1:
                raise ValueError
        except ValueError:
            raise StudyError(
                f"{path}, line {line}: session {session_text!r} is not a session number (1, 2...)"
            ) from None
        if (person, session) in seen:
            raise StudyError(f"{path}, line {line}: {person} session {session} is given twice")
        seen.add((person, session))
        row: dict[str, Any] = {"person": person, "session": session}
        for name, cell in zip(measures, cells[2:]):
            try:
                value = float(cell.replace(",", ".")) if cell else None
            except ValueError:
                raise StudyError(
                    f"{path}, line {line}: {name} = {cell!r} is not a number (leave it empty if missing)"
                ) from None
            row[name] = value if value is None or math.isfinite(value) else None
        rows.append(row)
    return measures, rows


# --------------------------------------------------------------------------------------------
# Recordings and status
# --------------------------------------------------------------------------------------------


@dataclass
class Recording:
    """One run found in ``STUDY/recordings``.

    Attributes
    ----------
    dyad : str or None
    session : int or None
    xdf : Path or None
        The XDF file (None when only ``session.json`` is left).
    session_json : dict or None
        The runner's record (``*_session.json``), None for a bare XDF.
    quickcheck_json : Path or None
        The in-session quick-check (``*_quickcheck.json``) when it exists.
    """

    dyad: str | None
    session: int | None
    xdf: Path | None
    session_json: dict[str, Any] | None = None
    quickcheck_json: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """The run finished (a bare XDF, from another recorder, counts as finished)."""
        return self.xdf is not None and (self.session_json is None or bool(self.session_json.get("complete")))

    def quickcheck_problem(self) -> str | None:
        """Why the in-session quick-check failed (error, or data quality to check), None if it did not."""
        info = (self.session_json or {}).get("quickcheck") or {}
        if info.get("error") and not str(info["error"]).startswith("skipped"):
            return f"quick-check error: {info['error']}"
        if self.quickcheck_json is None:
            return None
        try:
            verdict = json.loads(self.quickcheck_json.read_text(encoding="utf-8")).get("verdict") or {}
        except (OSError, ValueError) as error:
            return f"quick-check JSON unreadable ({error})"
        if verdict.get("data_quality") not in (None, "ok"):
            return "quick-check: data quality to check (" + "; ".join(verdict.get("summary", [])[:2]) + ")"
        return None


def _session_number(text: Any) -> int | None:
    numbers = re.findall(r"\d+", str(text)) if text not in (None, "") else []
    return int(numbers[-1]) if numbers else None


def find_recordings(folder: str | Path) -> list[Recording]:
    """Every run under ``STUDY/recordings``: runner records (``*_session.json``) and bare XDF files.

    A bare XDF is identified by its file header's ``dyad`` and ``session`` fields.
    """
    from dyadlab.synchrony.xdfreader import XdfIndexError, index_xdf

    root = Path(folder) / RECORDINGS_DIR
    found: list[Recording] = []
    claimed: set[Path] = set()
    for record_path in sorted(root.rglob("*_session.json")):
        stem = record_path.with_name(record_path.name.removesuffix("_session.json"))
        xdf = stem.with_name(stem.name + ".xdf")
        quickcheck = stem.with_name(stem.name + "_quickcheck.json")
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            found.append(Recording(None, None, xdf if xdf.exists() else None, None, None, [f"{record_path}: {error}"]))
            continue
        claimed.add(xdf)
        found.append(
            Recording(
                dyad=record.get("dyad"),
                session=_session_number(record.get("session")),
                xdf=xdf if xdf.exists() else None,
                session_json=record,
                quickcheck_json=quickcheck if quickcheck.exists() else None,
            )
        )
    for xdf in sorted(root.rglob("*.xdf")):
        if xdf in claimed:
            continue
        try:
            header = (index_xdf(xdf).file_header or {}).get("info", {})
        except (XdfIndexError, OSError) as error:
            found.append(Recording(None, None, xdf, problems=[f"{xdf.name} cannot be indexed ({error})"]))
            continue
        first = {key: value[0] if isinstance(value, list) and value else value for key, value in header.items()}
        found.append(Recording(first.get("dyad"), _session_number(first.get("session")), xdf))
    return found


@dataclass
class SessionStatus:
    """The state of one planned session.

    Attributes
    ----------
    dyad, session, focal, partner, partner_type :
        From the study file.
    status : {"recorded", "missing", "incomplete", "quick-check failed"}
    recording : Recording or None
        The run used (the last complete one), or the last attempt.
    detail : str
        Why the status is what it is.
    n_runs : int
        Runs found for this session (aborted attempts included).
    """

    dyad: str
    session: int
    focal: str
    partner: str
    partner_type: str
    status: StatusWord
    recording: Recording | None
    detail: str
    n_runs: int


def session_status(folder: str | Path, study: Study | None = None) -> tuple[list[SessionStatus], list[Recording]]:
    """The status of every planned session, and the recordings no planned session claims.

    Returns
    -------
    (statuses, unplanned)
        ``statuses`` in study-file order.
    """
    study = study or load_study(folder)
    recordings = find_recordings(folder)
    by_session: dict[tuple[str | None, int | None], list[Recording]] = {}
    for recording in recordings:
        by_session.setdefault((recording.dyad, recording.session), []).append(recording)
    statuses: list[SessionStatus] = []
    for planned in study.sessions:
        focal, partner = study.focal_and_partner(planned.dyad)
        runs = by_session.pop((planned.dyad, planned.session), [])
        complete = [r for r in runs if r.complete]
        status: StatusWord
        if complete:
            chosen: Recording | None = complete[-1]
            assert chosen is not None and chosen.xdf is not None
            problem = chosen.quickcheck_problem()
            status, detail = ("quick-check failed", problem) if problem else ("recorded", chosen.xdf.name)
        elif runs:
            chosen = runs[-1]
            record = chosen.session_json or {}
            if record.get("status") in ("starting", "running"):
                detail = f"the run is still going, or was killed before it finished (session.json: {record['status']})"
            elif chosen.xdf is None:
                detail = "the run's record exists but its XDF file is missing"
            else:
                detail = f"the run ended {record.get('status', 'incomplete')}" + (
                    f": {record['abort_reason'] or record.get('error')}"
                    if record.get("abort_reason") or record.get("error")
                    else ""
                )
            status = "incomplete"
        else:
            chosen, status, detail = None, "missing", "no recording"
        statuses.append(
            SessionStatus(
                dyad=planned.dyad,
                session=planned.session,
                focal=focal,
                partner=partner,
                partner_type=study.partner_type(planned.dyad),
                status=status,
                recording=chosen,
                detail=detail,
                n_runs=len(runs),
            )
        )
    unplanned = [r for runs in by_session.values() for r in runs]
    return statuses, unplanned


def planned_run(
    folder: str | Path, dyad: str | None, session: int | None
) -> tuple[str, dict[str, dict[str, str]], Path]:
    """What ``dyadlab run --study STUDY --dyad D --session K`` takes from the study.

    Returns
    -------
    (study name, people by label ``{"A": {"id", "role"}, ...}``, recordings folder)

    Raises
    ------
    StudyError
        No ``--dyad``/``--session``, or a session the study does not plan.
    """
    study = load_study(folder)
    if dyad is None or session is None:
        raise StudyError("--study needs --dyad and --session: which planned session is this run?")
    planned = [s.session for s in study.sessions if s.dyad == dyad]
    if session not in planned:
        study.dyad(dyad)  # an unknown dyad gets its own message
        raise StudyError(
            f"the study {study.name} plans no session {session} for dyad {dyad} (planned: "
            f"{', '.join(map(str, sorted(planned))) or 'none'}); add it to {Path(folder) / STUDY_FILE} first"
        )
    return study.name, study.people_of(dyad), Path(folder) / RECORDINGS_DIR
