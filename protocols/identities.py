"""Who takes part in a session: participant ids and roles from the command line or a roster.

A protocol file names its participants (``label``, ``id``, ``role``), but one file serves every
dyad of a study, so each run says who sits as ``A`` and ``B``:

* ``--participant A=sub-07`` or ``--participant B=ther-01:therapist`` (``LABEL=ID[:ROLE]``,
  repeated once per participant);
* ``--roster roster.csv --dyad D07``: the lab's list of dyads and people, one row per
  participant with the columns ``dyad``, ``label``, ``id`` and optionally ``role``::

      dyad,label,id,role
      D07,A,sub-07,patient
      D07,B,ther-01,therapist

``--participant`` wins over the roster. The result is the ``people`` override of
:func:`dyadlab.protocols.schema.load_protocol`, which validates the ids and roles as it does the
file's own (tokens usable in stream ids and file names, known roles).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from dyadlab import DyadlabError

#: Columns every roster must have; ``role`` is optional.
ROSTER_COLUMNS: tuple[str, ...] = ("dyad", "label", "id")
#: A roster is a short list of people; anything larger is not a roster.
_MAX_ROSTER_BYTES = 1_000_000

PeopleOverrides = dict[str, dict[str, str]]


class IdentityError(DyadlabError, ValueError):
    """A ``--participant`` value or a roster cannot be used; the message says how to fix it."""


def parse_participant_option(value: str) -> tuple[str, dict[str, str]]:
    """Split one ``--participant`` value ``LABEL=ID[:ROLE]``.

    Returns
    -------
    (label, {"id": ..., "role": ...})
        ``role`` only when given.

    Raises
    ------
    IdentityError
        No ``=``, or an empty label, id or role.
    """
    label, sep, rest = value.partition("=")
    person_id, colon, role = rest.partition(":")
    label, person_id, role = label.strip(), person_id.strip(), role.strip()
    if not sep or not label or not person_id or (colon and not role):
        raise IdentityError(
            f"--participant {value!r} is not LABEL=ID or LABEL=ID:ROLE; write e.g. --participant A=sub-07 "
            "or --participant B=ther-01:therapist"
        )
    return label, {"id": person_id, **({"role": role} if role else {})}


def read_roster(path: Path, dyad: str) -> PeopleOverrides:
    """The participants of ``dyad`` in the roster CSV ``path``, by label.

    Raises
    ------
    IdentityError
        The file cannot be read, lacks a column, lists a label twice for the dyad, or does not
        list the dyad.
    """
    try:
        if path.stat().st_size > _MAX_ROSTER_BYTES:
            raise IdentityError(f"the roster {path} is larger than {_MAX_ROSTER_BYTES:,} bytes; is it the right file?")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise IdentityError(f"cannot read the roster {path} ({error.strerror or error}); check the path") from None
    except UnicodeDecodeError:
        raise IdentityError(f"the roster {path} is not UTF-8 text; save it as CSV (UTF-8)") from None
    rows = list(csv.DictReader(text.splitlines()))
    columns = {name.strip().lower() for name in (rows[0].keys() if rows else []) if name}
    missing = [name for name in ROSTER_COLUMNS if name not in columns]
    if missing:
        raise IdentityError(
            f"the roster {path} lacks the column(s) {', '.join(missing)}; its first line must name the columns "
            "dyad,label,id[,role]"
        )
    people: PeopleOverrides = {}
    dyads: set[str] = set()
    for line, row in enumerate(rows, start=2):
        cells = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        dyads.add(cells["dyad"])
        if cells["dyad"] != dyad:
            continue
        label = cells["label"]
        if label in people:
            raise IdentityError(f"the roster {path} lists participant {label} of dyad {dyad} twice (line {line})")
        if not label or not cells["id"]:
            raise IdentityError(f"the roster {path}, line {line}: label and id must not be empty")
        people[label] = {"id": cells["id"], **({"role": cells["role"]} if cells.get("role") else {})}
    if not people:
        listed = ", ".join(sorted(d for d in dyads if d)) or "none"
        raise IdentityError(f"the roster {path} has no row for dyad {dyad!r} (dyads listed: {listed})")
    return people


def identity_overrides(participants: Iterable[str], roster: Path | None, dyad: str | None) -> PeopleOverrides:
    """The ``people`` override for :func:`~dyadlab.protocols.schema.load_protocol`.

    Parameters
    ----------
    participants : iterable of str
        ``--participant`` values, ``LABEL=ID[:ROLE]``.
    roster : Path | None
        The roster CSV; needs ``dyad``.
    dyad : str | None
        The session's dyad id (``--dyad``).

    Raises
    ------
    IdentityError
        A malformed value, a label given twice, or a roster without ``--dyad``.
    """
    people: PeopleOverrides = {}
    if roster is not None:
        if not dyad:
            raise IdentityError("--roster needs --dyad to know which dyad's people take part")
        people = read_roster(roster, dyad)
    given: set[str] = set()
    for value in participants:
        label, person = parse_participant_option(value)
        if label in given:
            raise IdentityError(f"--participant gives participant {label} twice; give each label once")
        given.add(label)
        people[label] = {**people.get(label, {}), **person}
    return people
