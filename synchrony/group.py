"""Group and longitudinal level of the quick-check: many sessions, pseudo-dyads, trends.

:func:`run_group` takes several session recordings (dyadlab XDF files, or quick-check JSONs
where only per-session summaries are needed) and produces one versioned report
(``docs/group-analysis.md``) with three parts:

1. **Per-session summaries** (:func:`session_summary`): every session is checked with
   :func:`dyadlab.synchrony.check.run_check` (same filtering, epoching, artifact rejection, metrics
   and partner-epoch-shuffle surrogates as ``dyadlab check``); for each condition, band and
   metric the summary keeps the mean over inter-brain pairs, its surrogate z and p and the
   surrogate-corrected mean (mean minus the surrogate mean), with the participants' ids and
   roles and the session number and date from the file header.
2. **Real dyads against pseudo-dyads** (:func:`real_vs_pseudo`): participant A of one
   recording with participant B of another recording in the same condition (epochs paired by
   order, truncated to the common count), on the EEG channels usable in every recording. The
   pseudo-dyads share everything two people doing the same task share -- task-locked
   entrainment, condition-wide rhythmicity -- but not the interaction, so a real-dyad excess
   is interaction-specific. Tested per condition, band and metric with a label permutation
   (:func:`dyadlab.synchrony.stats.group_level`), Benjamini-Hochberg FDR across all of them. The same
   test against the *carry-over* null (A of one session with B of another session of the same
   dyad) separates coupling within a session from each person's signal changing over sessions
   -- the only null when one therapy dyad is followed.
3. **Longitudinal view** (:func:`longitudinal`): per participant id, the session values over
   session numbers, split by partner type (the other participant's role: therapist,
   stranger, significant-other...), with a Theil-Sen trend and its confidence interval --
   the inter-brain plasticity question (does the patient's ability to synchronise rise over
   sessions, first with the therapist, then with others?). One person's sessions are few and
   not independent: trends are descriptive.

A file that cannot be loaded or checked, for whatever reason (an unexpected error is logged as
a bug with its traceback), is skipped with an entry in ``skipped`` and a warning naming it
(``strict=True`` stops instead); channel sets or sampling rates that differ between recordings stop the
pseudo-dyad analysis with an error, because real and pseudo values would not be comparable.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import tempfile
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from dyadlab import DyadlabError
from dyadlab.synchrony import segments as seg
from dyadlab.synchrony import stats
from dyadlab.synchrony.metrics import (
    METRICS,
    inter_brain_connectivity,
    validate_metrics,
)

__all__ = [
    "SCHEMA_VERSION",
    "GroupError",
    "LayoutMismatchError",
    "SessionEpochs",
    "longitudinal",
    "prepare_session_epochs",
    "real_vs_pseudo",
    "render_group_html",
    "run_group",
    "session_summary",
    "trend",
    "write_group_html",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
#: Values the longitudinal view can follow: surrogate-corrected mean (default) or surrogate z.
TREND_VALUES = ("corrected", "z")
#: Fewer sessions than this give no trend line at all.
MIN_TREND_POINTS = 3
#: Below this many sessions a trend is flagged as descriptive only (it always is, for one person).
MIN_INFERENTIAL_POINTS = 8
TREND_CONFIDENCE = 0.95
GROUP_RESAMPLES = 5000
FDR_ALPHA = 0.05
#: Real dyads needed for a p-value (with 2 real and 2 pseudo the smallest attainable p is 1/6).
MIN_TESTED_DYADS = 3
ASSUMPTIONS = (
    "Pseudo-dyads pair participant A of one recording with participant B of another recording in the same "
    "condition; their clean epochs are paired by order and truncated to the smaller count.",
    "For task-locked conditions (trials, stimuli, metronomes) identical task timing across sessions is assumed: "
    "epoch k of both recordings must cover the same part of the task, otherwise task-locked entrainment is "
    "missing from the pseudo-dyads and the real-dyad excess is overstated.",
    "Real and pseudo values are computed on the same channel pairs: EEG channels usable (not flat, railed or noisy) "
    "in every recording, per participant label.",
    "The group test is a label permutation (dyadlab.synchrony.stats.group_level): the real dyads' mean against the means of "
    "equally many values drawn from the pool of real and pseudo-dyads. Pseudo-dyads sharing a person are not "
    "independent; with few recordings read the p-value with care.",
)


class GroupError(DyadlabError, ValueError):
    """The recordings cannot be analysed together as asked (the message says why and what to do)."""


class LayoutMismatchError(GroupError):
    """Two recordings differ in channel set or sampling rate (always stops the analysis)."""


# --------------------------------------------------------------------------------------------
# Per-session summaries
# --------------------------------------------------------------------------------------------


def _session_number(text: str | None) -> int | None:
    """The session number in a header field such as ``3``, ``ses-03`` or ``S3`` (last integer)."""
    if not text:
        return None
    numbers = re.findall(r"\d+", text)
    return int(numbers[-1]) if numbers else None


def session_summary(check: dict[str, Any], *, source: str | Path | None = None) -> dict[str, Any]:
    """Summarise one quick-check result (:func:`dyadlab.synchrony.check.run_check` or its JSON).

    Parameters
    ----------
    check : dict
        A quick-check report (schema ``docs/quickcheck-schema.md``).
    source : str or Path, optional
        The file the summary comes from (default: the recording named in ``check``).

    Returns
    -------
    dict
        ``file``, ``source``, ``study``, ``dyad``, ``session`` (header text),
        ``session_number`` (int or None), ``datetime`` (ISO text from the header or None),
        ``participants`` (``A``/``B``: ``id``, ``role``, ``stream``), ``conditions``
        (``{condition: {"n_epochs": int, band: {metric: {"mean", "z", "p", "null_mean",
        "corrected"}}}}``), ``verdict`` (the one-line summary) and ``n_warnings``.

    Raises
    ------
    GroupError
        When ``check`` is not a quick-check report.
    """
    try:
        header = check["file"].get("header") or {}
        bands = list(check["inputs"]["bands"])
        metrics = list(check["inputs"]["metrics"])
        participants = {}
        for label in ("A", "B"):
            entry = check["participants"][label]
            person = entry.get("participant") or {}
            participants[label] = {
                "id": person.get("id") or None,
                "role": person.get("role") or None,
                "stream": entry.get("stream"),
            }
        conditions: dict[str, Any] = {}
        for condition, entry in check["conditions"].items():
            summary: dict[str, Any] = {"n_epochs": entry["n_epochs"]}
            for band in bands:
                summary[band] = {}
                for metric in metrics:
                    cell = entry[band][metric]
                    mean, null_mean = cell.get("mean"), cell.get("null_mean")
                    summary[band][metric] = {
                        "mean": mean,
                        "z": cell.get("z"),
                        "p": cell.get("p"),
                        "null_mean": null_mean,
                        "corrected": None if mean is None or null_mean is None else mean - null_mean,
                    }
            conditions[condition] = summary
        name = check["file"]["name"]
    except (KeyError, TypeError, AttributeError) as error:
        raise GroupError(
            f"{source or 'input'} is not a quick-check report (missing {error}); pass the JSON written by "
            "`dyadlab check --json` or an XDF recording."
        ) from error
    return {
        "file": name,
        "source": str(source) if source is not None else check["file"].get("path"),
        "schema_version": check.get("schema_version"),
        "study": header.get("study") or None,
        "dyad": header.get("dyad") or None,
        "session": header.get("session") or None,
        "session_number": _session_number(header.get("session")),
        "datetime": header.get("datetime") or None,
        "participants": participants,
        "bands": bands,
        "metrics": metrics,
        "conditions": conditions,
        "verdict": check.get("summary"),
        "n_warnings": len(check.get("warnings", [])),
    }


def _chronological(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sessions by session number, then header date/time, then file name; ``order`` set 1..n."""

    def key(s: dict[str, Any]) -> tuple:
        number = s["session_number"]
        when = s["datetime"]
        try:
            stamp = _dt.datetime.fromisoformat(when).timestamp() if when else math.inf
        except ValueError:
            stamp = math.inf
        return (number if number is not None else math.inf, stamp, s["file"])

    ordered = sorted(summaries, key=key)
    for index, summary in enumerate(ordered, start=1):
        summary["order"] = index
    return ordered


# --------------------------------------------------------------------------------------------
# Per-participant epochs of a recording (for pseudo-dyads)
# --------------------------------------------------------------------------------------------


@dataclass
class SessionEpochs:
    """Band-limited analytic epochs of one recording, per participant, cached as ``.npy`` files.

    The epochs are those of the quick-check (same blocks, same union artifact rejection), for
    *all* EEG channels of each participant; ``usable_a``/``usable_b`` say which channels the
    quick-check used (not flat, railed or noisy).

    Attributes
    ----------
    rate : float
        Rate of the common time grid (Hz).
    labels_a, labels_b : list of str
        EEG channel labels of A and B, in the order of the epoch arrays' channel axis.
    usable_a, usable_b : set of str
    files : dict of (condition, band) -> (Path, Path)
        ``.npy`` files of A's and B's epochs, each of shape (n_epochs, n_channels, n_times),
        complex64 (read with ``mmap_mode="r"``).
    n_epochs : dict of condition -> int
    """

    rate: float
    labels_a: list[str]
    labels_b: list[str]
    usable_a: set[str]
    usable_b: set[str]
    files: dict[tuple[str, str], tuple[Path, Path]] = field(default_factory=dict)
    n_epochs: dict[str, int] = field(default_factory=dict)

    def load(self, condition: str, band: str, side: str, channels: Sequence[str]) -> np.ndarray:
        """Epochs of participant ``side`` (``"a"``/``"b"``) on ``channels`` (in that order).

        Returns
        -------
        np.ndarray, shape (n_epochs, len(channels), n_times), complex64
        """
        path = self.files[(condition, band)][0 if side == "a" else 1]
        labels = self.labels_a if side == "a" else self.labels_b
        index = [labels.index(c) for c in channels]
        return np.asarray(np.load(path, mmap_mode="r")[:, index, :])


def prepare_session_epochs(
    xdf_path: str | Path,
    check: dict[str, Any],
    cache_dir: str | Path,
    *,
    bands: dict[str, tuple[float, float]],
    epoch_length: float,
) -> SessionEpochs:
    """Rebuild the quick-check's epochs of one recording and cache them per participant.

    Uses the quick-check's own building blocks on the result of ``run_check`` for the same
    file and options: its usable channels (``check["quality"]``), :func:`dyadlab.synchrony.io.load_dyad`,
    :func:`dyadlab.synchrony.segments.align_dyad`, the check's condition blocks, union artifact
    rejection with the check's ``reject_z``, and :func:`dyadlab.synchrony.segments.iter_condition_epochs`.

    Parameters
    ----------
    xdf_path : str or Path
    check : dict
        ``run_check(xdf_path, ...)`` with the same ``bands`` and ``epoch_length``.
    cache_dir : str or Path
        Existing directory for the ``.npy`` files.
    bands : dict of name -> (low, high)
    epoch_length : float

    Returns
    -------
    SessionEpochs
    """
    from dyadlab.synchrony.check import (
        conditions_and_blocks,  # the check's own block rules
    )
    from dyadlab.synchrony.io import load_dyad
    from dyadlab.synchrony.quality import QualityThresholds

    cache_dir = Path(cache_dir)
    inputs = check["inputs"]
    recording = load_dyad(xdf_path, eeg=inputs.get("eeg"))
    gap_samples = inputs.get("thresholds", {}).get("gap_samples", QualityThresholds().gap_samples)
    aligned = seg.align_dyad(recording.a, recording.b, gap_samples=gap_samples)
    span = (aligned.start, aligned.start + (aligned.n_samples - 1) / aligned.rate)
    blocks, _, _ = conditions_and_blocks(recording, inputs.get("conditions"), span)
    blocks = [b for b in blocks if not (b.end <= span[0] or b.start >= span[1])]
    usable = {}
    for p in recording.participants:
        channels = check["quality"][p.label]["channels"]
        excluded = set(channels["flat"]) | set(channels["railed"]) | set(channels["noisy"])
        usable[p.label] = np.array([label not in excluded for label in p.channel_labels])
    high = max(high for _, high in bands.values())
    plans, _, keep = seg.select_epochs(
        aligned,
        blocks,
        epoch_length,
        high,
        usable["A"],
        usable["B"],
        inputs.get("reject_z", 5.0),
        bands=bands,
        decimate=inputs.get("decimate", True),
    )
    out = SessionEpochs(
        rate=aligned.rate,
        labels_a=list(recording.a.channel_labels),
        labels_b=list(recording.b.channel_labels),
        usable_a={c for c, u in zip(recording.a.channel_labels, usable["A"]) if u},
        usable_b={c for c, u in zip(recording.b.channel_labels, usable["B"]) if u},
    )
    all_a = np.ones(len(recording.a.channel_labels), dtype=bool)
    all_b = np.ones(len(recording.b.channel_labels), dtype=bool)
    for condition in seg.condition_names(blocks):
        index = [i for i, p in enumerate(plans) if p.block.condition == condition]
        c_keep = [keep[i] for i in index]
        n_used = int(sum(k.sum() for k in c_keep))
        out.n_epochs[condition] = n_used
        if not n_used:
            continue
        for band, band_epochs in seg.iter_condition_epochs(  # one band at a time in memory
            aligned,
            [plans[i] for i in index],
            c_keep,
            epoch_length,
            bands,
            all_a,
            all_b,
            decimate=inputs.get("decimate", True),
        ):
            stem = cache_dir / f"{len(out.files):04d}"
            path_a, path_b = stem.with_suffix(".a.npy"), stem.with_suffix(".b.npy")
            np.save(path_a, band_epochs.za)
            np.save(path_b, band_epochs.zb)
            out.files[(condition, band)] = (path_a, path_b)
            del band_epochs
    return out


# --------------------------------------------------------------------------------------------
# Real dyads against pseudo-dyads
# --------------------------------------------------------------------------------------------


def _dyad_key(summary: dict[str, Any]) -> tuple:
    """Who the dyad is: (study, dyad) from the header, else the two ids, else the file."""
    if summary["dyad"]:
        return ("dyad", summary["study"], summary["dyad"])
    ids = [summary["participants"][label]["id"] for label in ("A", "B")]
    if all(ids):
        return ("people", *sorted(ids))
    return ("file", summary["file"])


def _same_people(a: dict[str, Any], b: dict[str, Any], real_pairs: list[set]) -> bool:
    """Would A of ``a`` with B of ``b`` be a person with themselves, or a pair that really interacted?"""
    id_a, id_b = a["participants"]["A"]["id"], b["participants"]["B"]["id"]
    if id_a is None or id_b is None:
        return False
    return id_a == id_b or {id_a, id_b} in real_pairs


def _assert_same_layout(
    first: str, first_layout: tuple[list[str], list[str], float], other: str, layout: tuple[list[str], list[str], float]
) -> None:
    """Raise :class:`LayoutMismatchError` unless two recordings have the same channel sets and analysis rate.

    A layout is (A's channel labels, B's channel labels, rate of the common grid in Hz).
    """
    for side, wanted, have in (("A", first_layout[0], layout[0]), ("B", first_layout[1], layout[1])):
        if set(have) != set(wanted):
            raise LayoutMismatchError(
                f"Participant {side}'s EEG channels differ between {first} ({len(wanted)} channels) and {other} "
                f"({len(have)} channels): only in the first {sorted(set(wanted) - set(have))}, only in the second "
                f"{sorted(set(have) - set(wanted))}. Pseudo-dyads need the same channel set in every recording; "
                "analyse recordings of one montage together."
            )
    if layout[2] != first_layout[2]:
        raise LayoutMismatchError(
            f"{other} is analysed at {layout[2]:g} Hz but {first} at {first_layout[2]:g} Hz: pseudo-dyad epochs would "
            "differ in length. Analyse recordings made at one sampling rate together."
        )


def _common_channels(summaries: list[dict[str, Any]], epochs: list[SessionEpochs]) -> tuple[list[str], list[str]]:
    """Channel labels of A and B usable in every recording; raises on differing channel sets or rates."""
    reference = epochs[0]
    for summary, e in zip(summaries[1:], epochs[1:]):
        _assert_same_layout(
            summaries[0]["file"],
            (reference.labels_a, reference.labels_b, reference.rate),
            summary["file"],
            (e.labels_a, e.labels_b, e.rate),
        )
    common = []
    for side in ("a", "b"):
        usable = set.intersection(*(getattr(e, f"usable_{side}") for e in epochs))
        labels = [c for c in getattr(reference, f"labels_{side}") if c in usable]
        if not labels:
            raise GroupError(
                f"No EEG channel of participant {side.upper()} is usable in every recording (each recording's "
                "quick-check lists its flat, railed and noisy channels); nothing to compare."
            )
        common.append(labels)
    return common[0], common[1]


def _pair_values(
    a: SessionEpochs,
    b: SessionEpochs,
    condition: str,
    band: str,
    channels: tuple[list[str], list[str]],
    metrics: Sequence[str],
) -> tuple[dict[str, float], int]:
    """Mean over inter-brain channel pairs of each metric, A of ``a`` with B of ``b`` (epochs by order)."""
    za = a.load(condition, band, "a", channels[0])
    zb = b.load(condition, band, "b", channels[1])
    n = min(len(za), len(zb))
    values = inter_brain_connectivity(za[:n], zb[:n], metrics)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore", RuntimeWarning)  # all-NaN (flat) pairs stay NaN
        return {m: float(np.nanmean(v)) for m, v in values.items()}, n


def _pseudo_candidates(
    summaries: list[dict[str, Any]], across_sessions: bool
) -> tuple[list[tuple[int, int]], set[int]]:
    """Pseudo-dyad index pairs and the recordings taking part in that null (see :func:`real_vs_pseudo`)."""
    from dyadlab.synchrony.surrogates import pseudo_dyads

    keys = [_dyad_key(s) for s in summaries]
    if across_sessions:
        sessions = [s["session"] or s["file"] for s in summaries]
        try:
            candidates = list(pseudo_dyads(keys, sessions, across_sessions=True))
        except ValueError as error:
            duplicates = sorted(
                {s["file"] for s, k, n in zip(summaries, keys, sessions) if list(zip(keys, sessions)).count((k, n)) > 1}
            )
            raise GroupError(
                f"Two recordings claim the same dyad and session ({', '.join(duplicates)}): the carry-over control "
                "needs each session of a dyad once. Fix the session field of the file header or leave a copy out."
            ) from error
        if not candidates:
            raise GroupError(
                "No dyad was recorded in two or more sessions: the carry-over control (A of one session "
                "with B of another session of the same dyad) needs repeated sessions."
            )
        return candidates, {i for pair in candidates for i in pair}
    if len(set(keys)) < 2:
        raise GroupError(
            f"Pseudo-dyads need recordings of at least two different dyads; all {len(summaries)} recordings are of "
            f"the same dyad ({', '.join(str(k) for k in keys[0][1:])}) according to their file headers / participant ids. "
            "For one dyad over sessions see the carry-over control."
        )
    real_pairs = [{s["participants"]["A"]["id"], s["participants"]["B"]["id"]} for s in summaries]
    candidates = [(i, j) for i, j in pseudo_dyads(keys) if not _same_people(summaries[i], summaries[j], real_pairs)]
    if not candidates:
        raise GroupError(
            "No pseudo-dyad is possible: every pairing of participant A of one recording with participant B of another "
            "pairs a person with themselves or two people recorded together (e.g. one patient with each partner). "
            "Add recordings of other people doing the same task, or see the carry-over control."
        )
    return candidates, set(range(len(summaries)))


def real_vs_pseudo(
    summaries: list[dict[str, Any]],
    epochs: list[SessionEpochs],
    *,
    bands: Sequence[str],
    metrics: Sequence[str],
    across_sessions: bool = False,
    pseudo_max: int | None = None,
    n_resamples: int = GROUP_RESAMPLES,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Real dyads against pseudo-dyads, per condition, band and metric, FDR across all of them.

    Two nulls (:func:`dyadlab.synchrony.surrogates.pseudo_dyads`):

    - ``across_sessions=False``: the between-dyad null, A of one dyad with B of *another* dyad.
      Pairings of a person with themselves or of two people who were recorded together in any
      of the recordings are left out.
    - ``across_sessions=True``: the carry-over control of longitudinal designs, A of a dyad's
      session k with B of the *same* dyad's session j != k (e.g. the patient of session 3 with
      the therapist of session 1): separates "the dyad synchronises in the session" from "each
      person's signal changed over sessions". Only dyads recorded in two or more sessions take
      part.

    Parameters
    ----------
    summaries : list of dict
        :func:`session_summary` of each recording (same order as ``epochs``).
    epochs : list of SessionEpochs
        :func:`prepare_session_epochs` of each recording.
    bands, metrics : sequence of str
    across_sessions : bool
        Which null (see above).
    pseudo_max : int, optional
        Use at most this many pseudo-dyads per condition (a random subset), never fewer than
        the number of real dyads.
    n_resamples : int
        Resamples of :func:`dyadlab.synchrony.stats.group_level` (which enumerates every split when
        there are no more).
    rng : np.random.Generator

    Returns
    -------
    dict
        ``channels`` (A's and B's labels used), ``assumptions``, ``conditions``
        (``{condition: {"n_real", "n_pseudo", "pseudo_pairs": [...], band: {metric: cell}}}``,
        cell: ``real_mean``, ``pseudo_mean``, ``pseudo_sd``, ``difference``, ``p``, ``p_fdr``,
        ``significant``, ``real``, ``pseudo`` (values)), ``skipped_conditions`` and ``fdr``.

    Raises
    ------
    GroupError
        Fewer than two recordings, no possible pseudo-dyad (one dyad only; or, across sessions,
        no dyad with two sessions).
    LayoutMismatchError
        Differing channel sets or rates.
    """
    if len(summaries) < 2:
        raise GroupError(
            f"Pseudo-dyads need at least 2 recordings (participant A of one with participant B of another); "
            f"got {len(summaries)}."
        )
    candidates, in_null = _pseudo_candidates(summaries, across_sessions)
    channels = _common_channels(summaries, epochs)
    conditions: dict[str, Any] = {}
    skipped: list[str] = []
    notes: list[str] = []
    tested: list[tuple[str, str, str]] = []
    names = list(dict.fromkeys(c for e in epochs for c in e.n_epochs))
    for condition in names:
        present = [i for i, e in enumerate(epochs) if e.n_epochs.get(condition, 0) > 0 and i in in_null]
        pairs = [(i, j) for i, j in candidates if i in present and j in present]
        if len(present) < 2 or len(pairs) < len(present):
            skipped.append(
                f"{condition}: {len(present)} recording(s) with clean epochs and {len(pairs)} pseudo-dyad(s); the test "
                "needs at least 2 recordings and at least as many pseudo-dyads as real dyads."
            )
            continue
        if pseudo_max is not None and len(pairs) > max(pseudo_max, len(present)):
            chosen = np.sort(rng.choice(len(pairs), size=max(pseudo_max, len(present)), replace=False))
            pairs = [pairs[k] for k in chosen]
        entry: dict[str, Any] = {
            "n_real": len(present),
            "n_pseudo": len(pairs),
            "real_dyads": [{"file": summaries[i]["file"], "n_epochs": epochs[i].n_epochs[condition]} for i in present],
            "pseudo_pairs": [],
        }
        for band in bands:
            real = [_pair_values(epochs[i], epochs[i], condition, band, channels, metrics)[0] for i in present]
            pseudo = []
            for i, j in pairs:
                values, n = _pair_values(epochs[i], epochs[j], condition, band, channels, metrics)
                pseudo.append(values)
                if band == bands[0]:
                    entry["pseudo_pairs"].append(
                        {"a_from": summaries[i]["file"], "b_from": summaries[j]["file"], "n_epochs": n}
                    )
            entry[band] = {}
            for metric in metrics:
                real_values = np.array([r[metric] for r in real])
                pseudo_values = np.array([p[metric] for p in pseudo])
                cell = {
                    "real_mean": float(np.nanmean(real_values)),
                    "pseudo_mean": float(np.nanmean(pseudo_values)),
                    "pseudo_sd": float(np.nanstd(pseudo_values, ddof=1)) if len(pseudo_values) > 1 else None,
                    "difference": float(np.nanmean(real_values) - np.nanmean(pseudo_values)),
                    "p": None,
                    "p_fdr": None,
                    "significant": False,
                    "real": real_values.tolist(),
                    "pseudo": pseudo_values.tolist(),
                }
                if len(present) >= MIN_TESTED_DYADS:
                    cell["p"] = float(stats.group_level(real_values, pseudo_values, n_resamples=n_resamples, rng=rng).p)
                    tested.append((condition, band, metric))
                entry[band][metric] = cell
        conditions[condition] = entry
        if len(present) < MIN_TESTED_DYADS:
            notes.append(
                f"{condition}: {len(present)} real dyads, no p-value (differences are descriptive): the smallest "
                "attainable p of the permutation test would be 1/6."
            )
        else:
            n_pool = len(present) + len(pairs)
            smallest = 1.0 / math.comb(n_pool, len(present))
            if smallest > 0.001:
                notes.append(
                    f"{condition}: {len(present)} real dyads and {len(pairs)} pseudo-dyads; the smallest attainable p is "
                    f"about {smallest:.3g} (1 / C({n_pool}, {len(present)}))."
                )
    if tested:
        reject, adjusted = stats.fdr(np.array([conditions[c][b][m]["p"] for c, b, m in tested]), alpha=FDR_ALPHA)
        for (c, b, m), significant, p_fdr in zip(tested, reject, adjusted):
            conditions[c][b][m].update(p_fdr=float(p_fdr), significant=bool(significant))
    return {
        "null": "across-sessions" if across_sessions else "between-dyads",
        "channels": {"A": channels[0], "B": channels[1]},
        "assumptions": list(ASSUMPTIONS),
        "n_resamples": n_resamples,
        "fdr": {
            "method": "Benjamini-Hochberg over all tested condition x band x metric cells",
            "alpha": FDR_ALPHA,
            "n_tests": len(tested),
        },
        "conditions": conditions,
        "skipped_conditions": skipped,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# Longitudinal view
# --------------------------------------------------------------------------------------------


def trend(x: Sequence[float], y: Sequence[float], *, confidence: float = TREND_CONFIDENCE) -> dict[str, Any]:
    """Theil-Sen slope of ``y`` over ``x`` with its confidence interval (``scipy.stats.theilslopes``).

    Parameters
    ----------
    x, y : sequence of float, same length
        Session index and value; pairs with a missing (None/NaN) value are left out.
    confidence : float

    Returns
    -------
    dict
        ``method``, ``n``, ``slope``, ``intercept``, ``ci_low``, ``ci_high``, ``confidence``,
        ``descriptive_only`` and a ``note``; slope and CI are None below
        :data:`MIN_TREND_POINTS` points or without two distinct x.
    """
    xs = np.array([float(a) for a, b in zip(x, y) if b is not None and np.isfinite(b)])
    ys = np.array([float(b) for b in y if b is not None and np.isfinite(b)])
    out: dict[str, Any] = {
        "method": "Theil-Sen (scipy.stats.theilslopes)",
        "n": int(xs.size),
        "slope": None,
        "intercept": None,
        "ci_low": None,
        "ci_high": None,
        "confidence": confidence,
        "descriptive_only": True,
    }
    if xs.size < MIN_TREND_POINTS or np.unique(xs).size < 2:
        out["note"] = (
            f"{xs.size} session value(s): at least {MIN_TREND_POINTS} at distinct sessions are needed for a trend."
        )
        return out
    result = scipy.stats.theilslopes(ys, xs, alpha=confidence)
    out.update(
        slope=float(result.slope),
        intercept=float(result.intercept),
        ci_low=float(result.low_slope),
        ci_high=float(result.high_slope),
        descriptive_only=bool(xs.size < MIN_INFERENTIAL_POINTS),
    )
    out["note"] = (
        f"Descriptive: {xs.size} sessions of one person (fewer than {MIN_INFERENTIAL_POINTS}); the interval assumes "
        "independent sessions."
        if out["descriptive_only"]
        else "The interval assumes independent sessions; sessions of one person are not, read it with care."
    )
    return out


def longitudinal(
    summaries: list[dict[str, Any]],
    *,
    value: str = "corrected",
    bands: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per participant id, session values over sessions, by partner type, with Theil-Sen trends.

    Parameters
    ----------
    summaries : list of dict
        :func:`session_summary` of each session, with ``order`` (chronological rank) set.
    value : {"corrected", "z"}
        ``corrected``: mean over pairs minus the surrogate mean (comparable across sessions of
        different length); ``z``: surrogate z (grows with the number of epochs).
    bands, metrics : sequence of str, optional
        Default: those of the summaries.

    Returns
    -------
    dict
        ``value``, ``participants``: ``{id: {"roles", "n_sessions", "x_axis",
        "by_partner_type": {type: {"sessions": [...], "series": {condition: {band: {metric:
        {"x", "y", "trend"}}}}}}}}`` for every id seen in at least two sessions.
    """
    if value not in TREND_VALUES:
        raise GroupError(f"value must be one of {', '.join(TREND_VALUES)}, got {value!r}.")
    appearances: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for summary in summaries:
        for label in ("A", "B"):
            person = summary["participants"][label]["id"]
            if person:
                appearances.setdefault(person, []).append((summary, label))
    participants: dict[str, Any] = {}
    for person, seen in appearances.items():
        if len(seen) < 2:
            continue
        numbered = all(s["session_number"] is not None for s, _ in seen)
        by_type: dict[str, Any] = {}
        for summary, label in seen:
            partner = summary["participants"]["B" if label == "A" else "A"]
            group = by_type.setdefault(partner["role"] or "unknown", {"sessions": [], "points": []})
            x = summary["session_number"] if numbered else summary["order"]
            group["sessions"].append(
                {
                    "x": x,
                    "file": summary["file"],
                    "session": summary["session"],
                    "label": label,
                    "partner_id": partner["id"],
                }
            )
            group["points"].append((x, summary))
        for group in by_type.values():
            points = sorted(group.pop("points"), key=lambda p: p[0])
            group["sessions"].sort(key=lambda s: s["x"])
            series: dict[str, Any] = {}
            conditions = list(dict.fromkeys(c for _, s in points for c in s["conditions"]))
            for condition in conditions:
                series[condition] = {}
                for band in bands or points[0][1]["bands"]:
                    series[condition][band] = {}
                    for metric in metrics or points[0][1]["metrics"]:
                        xs, ys = [], []
                        for x, s in points:
                            cell = s["conditions"].get(condition, {}).get(band, {}).get(metric)
                            if cell is not None:
                                xs.append(x)
                                ys.append(cell[value])
                        series[condition][band][metric] = {"x": xs, "y": ys, "trend": trend(xs, ys)}
            group["series"] = series
        participants[person] = {
            "roles": sorted({s["participants"][label]["role"] or "unknown" for s, label in seen}),
            "n_sessions": len(seen),
            "x_axis": "session number (file header)" if numbered else "chronological order of the sessions",
            "by_partner_type": by_type,
        }
    return {
        "value": value,
        "value_meaning": (
            "mean over inter-brain pairs minus the mean of its surrogate null"
            if value == "corrected"
            else "surrogate z of the mean over inter-brain pairs"
        ),
        "participants": participants,
    }


# --------------------------------------------------------------------------------------------
# The whole analysis
# --------------------------------------------------------------------------------------------


def _duplicate_sessions(summaries: list[dict[str, Any]]) -> list[str]:
    """Warnings for a dyad's session given more than once (e.g. an XDF and its own quick-check JSON)."""
    files: dict[tuple, list[str]] = {}
    for summary in summaries:
        if summary["dyad"] and summary["session"]:
            files.setdefault((summary["study"], summary["dyad"], summary["session"]), []).append(summary["file"])
    return [
        f"Dyad {dyad} session {session} is given {len(names)} times ({', '.join(names)}); each copy counts as a session "
        "in the longitudinal view. Leave the duplicates out (an XDF file and its own quick-check JSON are the same session)."
        for (_, dyad, session), names in files.items()
        if len(names) > 1
    ]


def _optional_null(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`real_vs_pseudo`, or why it is not available; differing layouts still stop everything."""
    try:
        return {"available": True, **real_vs_pseudo(*args, **kwargs)}
    except LayoutMismatchError:
        raise
    except GroupError as error:
        return {"available": False, "reason": str(error)}


def run_group(
    paths: Sequence[str | Path],
    *,
    bands: dict[str, tuple[float, float]] | Sequence[str] | str | None = None,
    metrics: Sequence[str] | None = None,
    epoch_length: float = 2.0,
    n_surrogates: int = 200,
    pseudo_max: int | None = None,
    n_resamples: int = GROUP_RESAMPLES,
    trend_value: str = "corrected",
    seed: int = 0,
    strict: bool = False,
    json_out: str | Path | None = None,
    html_out: str | Path | None = None,
    sessions_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Group and longitudinal analysis of several sessions (see the module docstring).

    Parameters
    ----------
    paths : sequence of str or Path
        XDF recordings (``.xdf``/``.xdfz``) and/or quick-check JSONs (``.json``; these give
        per-session summaries and trends but no pseudo-dyads). At least two.
    bands, metrics, epoch_length, n_surrogates :
        As :func:`dyadlab.synchrony.check.run_check` (applied to every XDF recording).
    pseudo_max : int, optional
        At most this many pseudo-dyads per condition (random subset).
    n_resamples : int
        Resamples of the real-vs-pseudo test.
    trend_value : {"corrected", "z"}
        Value followed by the longitudinal view.
    seed : int
        Seeds every random draw (surrogates of recording k use ``seed + k``).
    strict : bool
        Stop at the first file that cannot be loaded or checked (default: skip it, warn, go on).
    json_out, html_out : str or Path, optional
        Where to write the JSON report and the self-contained HTML report.
    sessions_dir : str or Path, optional
        Also write each XDF recording's quick-check JSON here (``<file stem>.quickcheck.json``),
        reusable as input later without the signals.
    progress : bool
        Show the quick-check's progress bar for each recording.

    Returns
    -------
    dict
        The report (schema ``docs/group-analysis.md``, version :data:`SCHEMA_VERSION`).

    Raises
    ------
    GroupError
        Fewer than two inputs or usable sessions, a bad input with ``strict``, mismatched channel
        sets or sampling rates between recordings.
    """
    from dyadlab.synchrony.check import QuickCheckError, json_ready, run_check
    from dyadlab.synchrony.io import XdfLoadError

    files = [Path(p) for p in paths]
    if len(files) < 2:
        raise GroupError(
            f"dyadlab group needs at least 2 recordings, got {len(files)}: pseudo-dyads pair participant A of one "
            "recording with participant B of another, and trends need several sessions. For one recording use "
            "`dyadlab check`."
        )
    if trend_value not in TREND_VALUES:
        raise GroupError(f"trend_value must be one of {', '.join(TREND_VALUES)}, got {trend_value!r}.")
    if pseudo_max is not None and pseudo_max < 1:
        raise GroupError(f"pseudo_max must be at least 1, got {pseudo_max}.")
    band_map = seg.parse_bands(bands)
    metric_names = list(validate_metrics(metrics or METRICS))
    if sessions_dir is not None:
        Path(sessions_dir).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    warnings: list[str] = []
    skipped: list[dict[str, str]] = []
    summaries: list[dict[str, Any]] = []
    epochs: dict[int, SessionEpochs] = {}  # index in summaries -> epochs (XDF inputs only)
    first_layout: tuple[str, tuple[list[str], list[str], float]] | None = None

    with tempfile.TemporaryDirectory(prefix="dyadlab-group-") as cache:
        for index, path in enumerate(files):
            logger.info("group: %s (%d/%d)", path, index + 1, len(files))
            try:
                if path.suffix.lower() == ".json":
                    try:
                        check = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                        raise GroupError(f"{path} could not be read as JSON ({error}).") from error
                    summary = session_summary(check, source=path)
                    summary["kind"] = "quickcheck-json"
                    missing = [b for b in band_map if b not in summary["bands"]] + [
                        m for m in metric_names if m not in summary["metrics"]
                    ]
                    if missing:
                        warnings.append(
                            f"{path.name}: the quick-check JSON lacks {', '.join(missing)}; those values are missing "
                            "for this session (re-run `dyadlab check` with the same --bands, or give the XDF file)."
                        )
                    summaries.append(summary)
                    continue
                check = run_check(
                    path,
                    bands=band_map,
                    metrics=metric_names,
                    epoch_length=epoch_length,
                    n_surrogates=n_surrogates,
                    seed=seed + index,
                    progress=progress,
                    json_out=None if sessions_dir is None else Path(sessions_dir) / f"{path.stem}.quickcheck.json",
                )
                summary = session_summary(check, source=path)
                summary["kind"] = "xdf"
                layout = (
                    check["participants"]["A"]["channels"],
                    check["participants"]["B"]["channels"],
                    float(check["alignment"]["rate_hz"]),
                )
                if first_layout is None:
                    first_layout = (path.name, layout)
                else:  # fail before the remaining (long) checks, not after them
                    _assert_same_layout(first_layout[0], first_layout[1], path.name, layout)
                session_dir = Path(cache) / f"s{index:03d}"
                session_dir.mkdir()
                prepared = prepare_session_epochs(path, check, session_dir, bands=band_map, epoch_length=epoch_length)
            except LayoutMismatchError:
                raise  # not one file's fault: the inputs do not belong together
            except (XdfLoadError, QuickCheckError, seg.SegmentationError, GroupError, OSError) as error:
                if strict:
                    raise GroupError(f"{path}: {error}") from error
                skipped.append({"path": str(path), "error": str(error)})
                warnings.append(f"{path.name} was skipped: {error}")
                logger.warning("group: %s skipped: %s", path, error)
                continue
            except Exception as error:  # one file's unexpected failure must not stop the others
                if strict:
                    raise  # --strict: the bug surfaces as such (the CLI logs its traceback)
                from dyadlab.cli_support import report_bug

                log = report_bug(error)
                message = (
                    f"this file could not be analysed ({type(error).__name__}: {error}); this is a dyadlab bug, "
                    f"its traceback is in {log}"
                )
                skipped.append({"path": str(path), "error": message})
                warnings.append(f"{path.name} was skipped: {message}")
                logger.warning("group: %s skipped: %s", path, message)
                continue
            warnings.extend(f"{path.name}: {w}" for w in check.get("warnings", []))
            epochs[len(summaries)] = prepared
            summaries.append(summary)

        if len(summaries) < 2:
            raise GroupError(
                f"Only {len(summaries)} of {len(files)} input(s) could be used (skipped: "
                + "; ".join(f"{Path(s['path']).name}: {s['error']}" for s in skipped)
                + "). At least 2 sessions are needed."
            )
        warnings.extend(_duplicate_sessions(summaries))
        xdf_index = sorted(epochs)
        group: dict[str, Any]
        carry_over: dict[str, Any]
        if len(xdf_index) < 2:
            reason = (
                f"{len(xdf_index)} XDF recording(s) among the inputs: pseudo-dyads need the signals of at least 2 "
                "recordings (quick-check JSONs hold summaries only)."
            )
            group = carry_over = {"available": False, "reason": reason}
        else:
            group, carry_over = (
                _optional_null(
                    [summaries[i] for i in xdf_index],
                    [epochs[i] for i in xdf_index],
                    bands=list(band_map),
                    metrics=metric_names,
                    across_sessions=across,
                    pseudo_max=pseudo_max,
                    n_resamples=n_resamples,
                    rng=rng,
                )
                for across in (False, True)
            )
            for section in (group, carry_over):
                warnings.extend(section.get("skipped_conditions", []))

    ordered = _chronological(summaries)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": {
            "files": [str(p) for p in files],
            "bands": {k: list(v) for k, v in band_map.items()},
            "metrics": metric_names,
            "epoch_length_s": epoch_length,
            "n_surrogates": n_surrogates,
            "pseudo_max": pseudo_max,
            "n_resamples": n_resamples,
            "trend_value": trend_value,
            "seed": seed,
            "strict": strict,
            "sessions_dir": None if sessions_dir is None else str(sessions_dir),
        },
        "sessions": ordered,
        "skipped": skipped,
        "real_vs_pseudo": group,
        "carry_over": carry_over,
        "longitudinal": longitudinal(ordered, value=trend_value, bands=list(band_map), metrics=metric_names),
        "warnings": list(dict.fromkeys(warnings)),
    }
    result = json_ready(result)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    if html_out is not None:
        write_group_html(html_out, result)
    return result


# --------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------

#: Longitudinal figures are drawn for at most this many participant ids (the JSON has all).
MAX_TREND_FIGURES = 8


def _headline_metric(result: dict[str, Any]) -> str:
    metrics = result["inputs"]["metrics"]
    return "plv" if "plv" in metrics else metrics[0]


def _margins(fig: Any, *, bottom: float, top: float) -> None:
    """Subplot margins in inches (fractions would clip labels of small figures); no tight_layout (slow)."""
    width, height = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 0.15 / width, bottom=bottom / height, top=1 - top / height, wspace=0.45, hspace=0.9
    )


def _real_vs_pseudo_figure(result: dict[str, Any], group: dict[str, Any], metric: str) -> str:
    """Per condition (rows) and band (columns): pseudo-dyad values (grey) and real dyads (colour)."""
    from matplotlib.figure import Figure

    from dyadlab.synchrony.htmlpage import html_escape, png_data_uri

    conditions = list(group.get("conditions", {})) if group.get("available") else []
    bands = list(result["inputs"]["bands"])
    if not conditions:
        return ""
    fig = Figure(figsize=(2.4 * len(bands) + 0.9, 2.2 * len(conditions) + 0.6))
    axes = fig.subplots(len(conditions), len(bands), squeeze=False)
    jitter = np.random.default_rng(0)
    for i, condition in enumerate(conditions):
        for j, band in enumerate(bands):
            ax = axes[i, j]
            cell = group["conditions"][condition][band][metric]
            pseudo = np.array([v for v in cell["pseudo"] if v is not None], dtype=float)
            real = np.array([v for v in cell["real"] if v is not None], dtype=float)
            ax.scatter(jitter.uniform(-0.15, 0.15, pseudo.size), pseudo, s=10, color="0.6", label="pseudo")
            ax.scatter(1 + jitter.uniform(-0.15, 0.15, real.size), real, s=18, color="tab:red", label="real")
            for x, values in ((0, pseudo), (1, real)):
                if values.size:
                    ax.hlines(np.mean(values), x - 0.3, x + 0.3, color="k", lw=1.5)
            ax.set_xticks([0, 1], ["pseudo", "real"])
            ax.set_xlim(-0.6, 1.6)
            p_fdr = cell.get("p_fdr")
            ax.set_title(
                f"{condition} / {band}\np_FDR {p_fdr:.3g}" if p_fdr is not None else f"{condition} / {band}", fontsize=8
            )
            ax.tick_params(labelsize=7)
        axes[i, 0].set_ylabel(metric, fontsize=8)
    _margins(fig, bottom=0.4, top=0.55)
    return (
        f"<p class='small'>{html_escape(metric)}: mean over inter-brain pairs per dyad; bars: means.</p>"
        + png_data_uri(fig)
    )


def _longitudinal_figure(result: dict[str, Any], person: str, metric: str) -> str:
    """One participant: value over sessions per condition (rows) and band (columns), one colour per partner type."""
    from matplotlib.figure import Figure

    from dyadlab.synchrony.htmlpage import png_data_uri

    entry = result["longitudinal"]["participants"][person]
    by_type = entry["by_partner_type"]
    conditions = list(dict.fromkeys(c for g in by_type.values() for c in g["series"]))
    bands = list(result["inputs"]["bands"])
    if not conditions:
        return ""
    fig = Figure(figsize=(2.8 * len(bands) + 0.9, 2.2 * len(conditions) + 0.9))
    axes = fig.subplots(len(conditions), len(bands), squeeze=False)
    colours = dict(zip(by_type, ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")))
    for i, condition in enumerate(conditions):
        for j, band in enumerate(bands):
            ax = axes[i, j]
            for partner_type, group in by_type.items():
                series = group["series"].get(condition, {}).get(band, {}).get(metric)
                if not series:
                    continue
                points = [(x, y) for x, y in zip(series["x"], series["y"]) if y is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, "o", color=colours.get(partner_type, "k"), ms=4, label=partner_type)
                fit = series["trend"]
                if fit["slope"] is not None:
                    line_x = np.array([min(series["x"]), max(series["x"])], dtype=float)
                    ax.plot(
                        line_x,
                        fit["intercept"] + fit["slope"] * line_x,
                        "-",
                        color=colours.get(partner_type, "k"),
                        lw=1,
                    )
            ax.axhline(0, color="0.8", lw=0.8)
            ax.set_title(f"{condition} / {band}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel(entry["x_axis"], fontsize=8)
    axes[0, 0].set_ylabel(f"{metric} ({result['longitudinal']['value']})", fontsize=8)
    _margins(fig, bottom=0.55, top=0.4)
    return png_data_uri(fig)


def _null_html(result: dict[str, Any], group: dict[str, Any], metric: str) -> str:
    """Table and figure of one real-vs-pseudo section (between dyads or across sessions)."""
    from dyadlab.synchrony.htmlpage import format_number, html_escape

    if not group.get("available"):
        return f"<p>Not computed: {html_escape(group['reason'])}</p>"
    rows = []
    for condition, entry in group["conditions"].items():
        for band in result["inputs"]["bands"]:
            for m in result["inputs"]["metrics"]:
                cell = entry[band][m]
                css = " class='sig'" if cell.get("significant") else ""
                rows.append(
                    f"<tr{css}><td class='l'>{html_escape(condition)}</td><td class='l'>{html_escape(band)}</td><td class='l'>{html_escape(m)}</td>"
                    f"<td>{entry['n_real']}</td><td>{entry['n_pseudo']}</td><td>{format_number(cell['real_mean'])}</td>"
                    f"<td>{format_number(cell['pseudo_mean'])}</td><td>{format_number(cell['difference'])}</td><td>{format_number(cell['p'])}</td>"
                    f"<td>{format_number(cell.get('p_fdr'))}</td></tr>"
                )
    notes = group.get("notes", []) + group.get("skipped_conditions", [])
    return (
        "<ul class='small'>" + "".join(f"<li>{html_escape(a)}</li>" for a in group["assumptions"] + notes) + "</ul>"
        f"<p class='small'>Channels A: {html_escape(', '.join(group['channels']['A']))}; B: {html_escape(', '.join(group['channels']['B']))}. "
        "Highlighted: significant after FDR (p_FDR &lt; 0.05).</p>"
        "<table><tr><th class='l'>condition</th><th class='l'>band</th><th class='l'>metric</th><th>real</th><th>pseudo</th>"
        "<th>real mean</th><th>pseudo mean</th><th>difference</th><th>p</th><th>p FDR</th></tr>"
        + "".join(rows)
        + "</table>"
        + _real_vs_pseudo_figure(result, group, metric)
    )


def render_group_html(result: dict[str, Any]) -> str:
    """The group report as one self-contained HTML string (PNG figures inlined as base64)."""
    import matplotlib

    from dyadlab.synchrony.htmlpage import format_number, html_escape, page

    matplotlib.use("Agg", force=False)
    metric = _headline_metric(result)
    bands = list(result["inputs"]["bands"])
    sessions_rows = "".join(
        f"<tr><td>{s['order']}</td><td class='l'>{html_escape(s['file'])}</td><td>{format_number(s['session'])}</td><td>{format_number(s['dyad'])}</td>"
        + "".join(
            f"<td class='l'>{format_number(s['participants'][lab]['id'])} ({format_number(s['participants'][lab]['role'])})</td>"
            for lab in ("A", "B")
        )
        + f"<td class='l'>{html_escape(s['kind'])}</td><td class='l'>{format_number(s['verdict'])}</td></tr>"
        for s in result["sessions"]
    )
    group_html = _null_html(result, result["real_vs_pseudo"], metric)
    carry_html = _null_html(result, result["carry_over"], metric)
    people = result["longitudinal"]["participants"]
    trend_parts = []
    for person in list(people)[:MAX_TREND_FIGURES]:
        entry = people[person]
        trend_rows = []
        for partner_type, g in entry["by_partner_type"].items():
            for condition, per_band in g["series"].items():
                for band in bands:
                    fit = per_band.get(band, {}).get(metric, {}).get("trend")
                    if fit is None:
                        continue
                    ci = (
                        f"[{format_number(fit['ci_low'])}, {format_number(fit['ci_high'])}]"
                        if fit["slope"] is not None
                        else "–"
                    )
                    trend_rows.append(
                        f"<tr><td class='l'>{html_escape(partner_type)}</td><td class='l'>{html_escape(condition)}</td><td class='l'>{html_escape(band)}</td>"
                        f"<td>{fit['n']}</td><td>{format_number(fit['slope'])}</td><td>{ci}</td><td class='l small'>{html_escape(fit['note'])}</td></tr>"
                    )
        trend_parts.append(
            f"<h3>{html_escape(person)} ({html_escape(', '.join(entry['roles']))}; {entry['n_sessions']} sessions; x: {html_escape(entry['x_axis'])})</h3>"
            "<table><tr><th class='l'>partner type</th><th class='l'>condition</th><th class='l'>band</th><th>n</th>"
            f"<th>slope ({html_escape(metric)}/session)</th><th>{int(TREND_CONFIDENCE * 100)}% CI</th><th class='l'>note</th></tr>"
            + "".join(trend_rows)
            + "</table>"
            + _longitudinal_figure(result, person, metric)
        )
    if len(people) > MAX_TREND_FIGURES:
        trend_parts.append(f"<p class='small'>{len(people) - MAX_TREND_FIGURES} more participant(s) in the JSON.</p>")
    warnings = "".join(f"<li>{html_escape(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    skipped = "".join(f"<li><b>{html_escape(s['path'])}</b>: {html_escape(s['error'])}</li>" for s in result["skipped"])
    title = f"Group analysis: {len(result['sessions'])} sessions"
    parts = [
        f"<p class='small'>{html_escape(result['generated_utc'])} · schema {html_escape(result['schema_version'])} · "
        f"{result['inputs']['n_surrogates']} surrogates per session · seed {result['inputs']['seed']}</p>",
        ("<div class='verdict check'><p><b>Skipped inputs</b></p><ul>" + skipped + "</ul></div>") if skipped else "",
        "<h2>Sessions</h2><table><tr><th>#</th><th class='l'>file</th><th>session</th><th>dyad</th><th class='l'>A</th>"
        "<th class='l'>B</th><th class='l'>input</th><th class='l'>quick-check</th></tr>" + sessions_rows + "</table>",
        "<h2>Real dyads vs pseudo-dyads (between dyads)</h2>",
        group_html,
        "<h2>Carry-over control (same dyad, across sessions)</h2>"
        "<p class='small'>A of one session with B of another session of the same dyad: a real-dyad excess is coupling "
        "within the session, not a change of each person's signal over sessions.</p>",
        carry_html,
        f"<h2>Longitudinal view ({html_escape(result['longitudinal']['value_meaning'])})</h2>",
        "".join(trend_parts) or "<p>No participant id appears in two or more sessions.</p>",
        "<h2>Warnings</h2><ul class='warn'>" + warnings + "</ul>",
        f"<h2>Inputs</h2><pre>{html_escape(json.dumps(result['inputs'], indent=1))}</pre>",
    ]
    return page(title, parts)


def write_group_html(path: str | Path, result: dict[str, Any]) -> Path:
    """Write :func:`render_group_html` to ``path``."""
    path = Path(path)
    path.write_text(render_group_html(result), encoding="utf-8")
    return path
