"""The study analysis (``dyadlab study analyze``): trajectories, generalisation, outcomes, report.

Steps, for a study folder (:mod:`dyadlab.synchrony.study`):

1. **Per-session quick-checks, cached.** Every recorded session's XDF goes through
   :func:`dyadlab.synchrony.check.run_check` with the study's settings (bands, metrics, epoch
   length, surrogates, seed). Results are cached in ``STUDY/analysis/cache`` under the SHA-256 of
   the file's content and of the settings: a re-analysis recomputes only new or changed sessions
   (or all of them when a setting changes). The sessions still to compute run through
   :func:`dyadlab.synchrony.distributed.map_sessions` (a local Dask cluster, a scheduler address,
   or ``"serial"``).
2. **The followed value.** Per session, the focal person's (patient's) synchrony in the probe
   condition, band and metric, surrogate-corrected (mean over inter-brain pairs minus the mean of
   the partner-epoch-shuffle surrogates) or the surrogate z.
3. **Trajectory model** (:func:`trajectory_model`): a linear mixed model (statsmodels
   ``MixedLM``, REML) ``value ~ session * partner_type`` with the reference partner type
   (therapist) as baseline, a random intercept and session slope per person and a variance
   component per dyad; per-partner-type slopes are linear contrasts of the fixed effects, with
   Wald 95 % confidence intervals.
4. **Generalisation** (:func:`generalisation`): does synchrony with the other partner types rise
   (their slope), does it differ from the therapist's (the interaction), and does it follow the
   synchrony the patient reached *earlier* with the therapist (a lagged mixed model: the value
   with a stranger at session k on the mean therapist value of sessions before k, beyond the
   session trend)?
5. **Outcomes** (:func:`outcome_link`): per person, the slope of therapist synchrony over
   sessions against the slope of the outcome measure (Pearson r with its Fisher-z 95 % CI), and a
   mixed model of the outcome on synchrony split into its within-person and between-person parts.
6. **Real against pseudo dyads**: :func:`dyadlab.synchrony.group.real_vs_pseudo` on the
   recorded sessions, as ``dyadlab group`` does.
7. **Report**: JSON and a self-contained HTML page with the trajectories per person and partner
   type, model tables with confidence intervals, and figures also written as PNG (300 dpi) and
   SVG for a paper.

The known-answer test of all of this is :mod:`dyadlab.protocols.study_simulation`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import tempfile
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from dyadlab.synchrony.study import (
    ANALYSIS_DIR,
    AnalysisSettings,
    SessionStatus,
    StudyError,
    load_study,
    read_outcomes,
    session_status,
)

__all__ = [
    "SCHEMA_VERSION",
    "SessionCache",
    "analyze_study",
    "file_sha256",
    "generalisation",
    "outcome_link",
    "render_study_html",
    "settings_sha256",
    "trajectory_model",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
CONFIDENCE = 0.95
_Z = float(scipy.stats.norm.ppf(0.5 + CONFIDENCE / 2))
#: Real-vs-pseudo: at most this many pseudo-dyads per condition (random subset).
PSEUDO_MAX = 200
#: Persons needed for the per-person slope correlation (Fisher-z CI needs n > 3).
MIN_SLOPE_PEOPLE = 4
#: Sessions with a value (and an outcome) a person needs for a per-person slope.
MIN_SLOPE_SESSIONS = 3
_HASH_BLOCK = 1 << 20
#: MixedLM optimisers tried in turn (statsmodels' default first).
_OPTIMIZERS = ("lbfgs", "bfgs", "powell")


# --------------------------------------------------------------------------------------------
# The cache of per-session quick-checks
# --------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_options(settings: AnalysisSettings) -> dict[str, Any]:
    """The quick-check keywords the study's settings give (everything that changes a check's result)."""
    return {
        "bands": settings.bands,
        "metrics": [settings.metric],
        "epoch_length": settings.epoch_length,
        "n_surrogates": settings.surrogates,
        "seed": settings.seed,
    }


def settings_sha256(settings: AnalysisSettings) -> str:
    """SHA-256 of the quick-check options and the quick-check's schema version (hex)."""
    from dyadlab.synchrony.check import SCHEMA_VERSION as CHECK_SCHEMA

    text = json.dumps({"check_schema": CHECK_SCHEMA, **_check_options(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SessionCache:
    """Quick-check results on disk, keyed by file content and settings.

    Attributes
    ----------
    folder : Path
        ``STUDY/analysis/cache``.
    hits, misses : int
        Look-ups answered from the cache, and not.
    """

    folder: Path
    hits: int = 0
    misses: int = 0

    def _path(self, content: str, settings: str) -> Path:
        return self.folder / f"{content[:32]}-{settings[:16]}.json"

    def get(self, content: str, settings: str) -> dict[str, Any] | None:
        """The cached check, or None (counted as a miss; an unreadable entry is a miss too)."""
        path = self._path(content, settings)
        try:
            check = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as error:
            logger.warning("cache entry %s unreadable (%s): recomputing", path.name, error)
            self.misses += 1
            return None
        self.hits += 1
        return check

    def put(self, content: str, settings: str, check: dict[str, Any]) -> None:
        """Store a check (written to a temporary name, then renamed: never a half-written entry)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(content, settings)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(check, allow_nan=False), encoding="utf-8")
        partial.replace(path)


def _check_session(path: str, *, options: dict[str, Any]) -> dict[str, Any]:
    """One session's quick-check as strict JSON (runs on a Dask worker: module-level, picklable)."""
    from dyadlab.synchrony.check import json_ready, run_check

    return json_ready(run_check(path, progress=False, **options))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _effect(name: str, estimate: float, se: float, *, meaning: str) -> dict[str, Any]:
    """A model term or contrast with its Wald CI and two-sided p (normal reference, as MixedLM's own)."""
    ok = math.isfinite(estimate) and math.isfinite(se) and se > 0
    z = estimate / se if ok else math.nan
    return {
        "term": name,
        "meaning": meaning,
        "estimate": estimate,
        "se": se if ok else None,
        "ci_low": estimate - _Z * se if ok else None,
        "ci_high": estimate + _Z * se if ok else None,
        "p": float(2 * scipy.stats.norm.sf(abs(z))) if ok else None,
        "excludes_zero": bool(ok and abs(z) > _Z),
    }


def _fit_mixed(
    formula: str, data: Any, *, re_formulas: Sequence[str], vc: dict[str, str] | None = None
) -> tuple[Any, str, list[str]]:
    """Fit a MixedLM (REML), trying the random-effects structures in order until one converges.

    Returns
    -------
    (fit, re_formula used, notes)
        Notes list statsmodels' warnings and the fallbacks taken.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    notes: list[str] = []
    last_error: Exception | None = None
    for index, re_formula in enumerate(re_formulas):
        with warnings_module.catch_warnings(record=True) as caught:
            warnings_module.simplefilter("always")
            model = smf.mixedlm(formula, data, groups=data["person"], re_formula=re_formula, vc_formula=vc)
            fit = None
            for method in _OPTIMIZERS:  # a random-effect variance at 0 can make one optimiser fail
                try:
                    fit = model.fit(reml=True, method=method)
                    break
                except (np.linalg.LinAlgError, ValueError) as error:
                    last_error = error
            if fit is None:
                notes.append(f"random effects {re_formula}: fit failed ({last_error})")
                continue
        messages = [
            str(w.message) for w in caught if issubclass(w.category, (ConvergenceWarning, RuntimeWarning, UserWarning))
        ]
        converged = bool(getattr(fit, "converged", True)) and np.all(np.isfinite(fit.bse_fe))
        if not converged and index + 1 < len(re_formulas):
            notes.append(f"random effects {re_formula}: did not converge; simpler structure used")
            continue
        notes += [f"statsmodels: {m}" for m in dict.fromkeys(messages)]
        return fit, re_formula, notes
    raise StudyError(f"the mixed model {formula} could not be fitted ({last_error}); are there enough sessions?")


def _fixed_table(fit: Any, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Every fixed effect with its CI, named by ``labels`` (patsy name -> readable meaning)."""
    params, errors = (fit.fe_params, fit.bse_fe) if hasattr(fit, "fe_params") else (fit.params, fit.bse)  # MixedLM, OLS
    return [
        _effect(name, float(params[name]), float(errors[name]), meaning=labels.get(name, name)) for name in params.index
    ]


def _contrast(fit: Any, weights: dict[str, float], name: str, meaning: str) -> dict[str, Any]:
    """A linear combination of fixed effects with its Wald CI."""
    names = list(fit.fe_params.index)
    vector = np.array([weights.get(n, 0.0) for n in names])
    covariance = np.asarray(fit.cov_params().loc[names, names], dtype=float)
    estimate = float(vector @ np.asarray(fit.fe_params, dtype=float))
    return _effect(name, estimate, float(math.sqrt(max(vector @ covariance @ vector, 0.0))), meaning=meaning)


def _variance_table(fit: Any) -> dict[str, Any]:
    """Random-effect and residual variances of a fit."""
    cov_re = np.atleast_2d(np.asarray(fit.cov_re, dtype=float))
    names = list(getattr(fit.cov_re, "index", [f"re{i}" for i in range(cov_re.shape[0])]))
    out = {f"person {n}": float(cov_re[i, i]) for i, n in enumerate(names)}
    for name, value in zip(getattr(fit.model, "exog_vc", None) and fit.model.exog_vc.names or [], fit.vcomp):
        out[f"{name} (variance component)"] = float(value)
    out["residual"] = float(fit.scale)
    return out


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)


def trajectory_model(rows: list[dict[str, Any]], *, reference: str = "therapist") -> dict[str, Any]:
    """``value ~ session * partner_type`` with random person intercept/slope and a dyad variance component.

    Parameters
    ----------
    rows : list of dict
        ``person``, ``dyad``, ``partner_type``, ``session`` (1, 2...), ``value``.
    reference : str
        The partner type whose slope is the model's ``session`` term.

    Returns
    -------
    dict
        ``formula``, ``re_formula``, ``n_obs``, ``n_people``, ``fixed`` (table), ``slopes``
        (per partner type: estimate, CI, p), ``differences`` (each other type's slope minus the
        reference's: the interaction), ``variances``, ``notes``, ``fitted`` (population line per
        partner type over its sessions, with its CI band, for figures).
    """
    frame = _frame(rows)
    frame["session0"] = frame["session"] - 1  # the intercept is session 1
    types = [reference] + sorted(set(frame["partner_type"]) - {reference})
    if reference not in set(frame["partner_type"]):
        raise StudyError(
            f"no session with the reference partner type {reference!r} (partner types: "
            f"{', '.join(sorted(set(frame['partner_type'])))}); set analysis.reference_partner in study.yaml"
        )
    multi = len(types) > 1
    treatment = f"C(partner_type, Treatment(reference={reference!r}))"
    formula = f"value ~ session0 * {treatment}" if multi else "value ~ session0"
    vc = {"dyad": "0 + C(dyad)"} if frame["dyad"].nunique() > frame["person"].nunique() else None
    fit, re_formula, notes = _fit_mixed(formula, frame, re_formulas=("~session0", "1"), vc=vc)
    labels = {"Intercept": f"{reference} at session 1", "session0": f"{reference} slope per session"}
    slopes = {reference: _contrast(fit, {"session0": 1.0}, f"slope[{reference}]", f"{reference}: change per session")}
    differences: dict[str, Any] = {}
    for other in types[1:]:
        offset, interaction = f"{treatment}[T.{other}]", f"session0:{treatment}[T.{other}]"
        labels[offset] = f"{other} minus {reference} at session 1"
        labels[interaction] = f"{other} slope minus {reference} slope"
        slopes[other] = _contrast(
            fit, {"session0": 1.0, interaction: 1.0}, f"slope[{other}]", f"{other}: change per session"
        )
        differences[other] = _contrast(
            fit, {interaction: 1.0}, f"slope[{other}] - slope[{reference}]", f"{other} slope minus {reference} slope"
        )
    fitted = {}
    for kind in types:
        sessions = np.arange(
            int(frame.loc[frame["partner_type"] == kind, "session"].min()),
            int(frame.loc[frame["partner_type"] == kind, "session"].max()) + 1,
        )
        names = list(fit.fe_params.index)
        design = np.zeros((sessions.size, len(names)))
        for i, s in enumerate(sessions):
            weights = {"Intercept": 1.0, "session0": float(s - 1)}
            if kind != reference:
                weights[f"{treatment}[T.{kind}]"] = 1.0
                weights[f"session0:{treatment}[T.{kind}]"] = float(s - 1)
            design[i] = [weights.get(n, 0.0) for n in names]
        covariance = np.asarray(fit.cov_params().loc[names, names], dtype=float)
        mean = design @ np.asarray(fit.fe_params, dtype=float)
        half = _Z * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", design, covariance, design), 0.0))
        fitted[kind] = {
            "session": sessions.tolist(),
            "mean": mean.tolist(),
            "low": (mean - half).tolist(),
            "high": (mean + half).tolist(),
        }
    return {
        "formula": formula,
        "re_formula": re_formula,
        "variance_components": list(vc) if vc else [],
        "n_obs": int(len(frame)),
        "n_people": int(frame["person"].nunique()),
        "fixed": _fixed_table(fit, labels),
        "slopes": slopes,
        "differences": differences,
        "variances": _variance_table(fit),
        "notes": notes,
        "fitted": fitted,
    }


def generalisation(
    rows: list[dict[str, Any]], model: dict[str, Any], *, reference: str = "therapist"
) -> dict[str, Any]:
    """Does synchrony with the other partner types rise, and after the reference partner's?

    Per other partner type: its slope and its difference from the reference slope (from
    :func:`trajectory_model`), and the lagged model ``value ~ session + earlier`` on that type's
    sessions, where ``earlier`` is the person's mean reference-partner value over the sessions
    *before* it (centred): a positive coefficient says synchrony with others follows the synchrony
    reached earlier with the therapist, beyond the common session trend.
    """
    out: dict[str, Any] = {}
    for other, slope in model["slopes"].items():
        if other == reference:
            continue
        entry: dict[str, Any] = {"slope": slope, "difference": model["differences"][other]}
        lagged_rows = []
        for row in rows:
            if row["partner_type"] != other:
                continue
            before = [
                r["value"]
                for r in rows
                if r["person"] == row["person"] and r["partner_type"] == reference and r["session"] < row["session"]
            ]
            if before:
                lagged_rows.append({**row, "earlier": float(np.mean(before))})
        people = {r["person"] for r in lagged_rows}
        if len(lagged_rows) < 4 or len(people) < 3:
            entry["lagged"] = {
                "available": False,
                "reason": f"{len(lagged_rows)} {other} session(s) of {len(people)} person(s) follow a {reference} "
                "session; the lagged model needs at least 4 sessions of 3 people",
            }
        else:
            frame = _frame(lagged_rows)
            frame["session0"] = frame["session"] - 1
            frame["earlier"] -= frame["earlier"].mean()
            formula = "value ~ session0 + earlier" if frame["session"].nunique() > 1 else "value ~ earlier"
            if frame.groupby("person").size().max() > 1:
                fit, _, notes = _fit_mixed(formula, frame, re_formulas=("1",))
                kind = "mixed, random intercept per person"
            else:  # one session per person: a person intercept is not separable from the residual
                import statsmodels.formula.api as smf

                fit, notes = smf.ols(formula, frame).fit(), []
                kind = "ordinary least squares (one session per person)"
            entry["lagged"] = {
                "available": True,
                "formula": formula,
                "model": kind,
                "n_obs": int(len(frame)),
                "n_people": len(people),
                "fixed": _fixed_table(
                    fit,
                    {
                        "Intercept": f"{other} value at session 1 (mean earlier {reference} value)",
                        "session0": f"{other} change per session",
                        "earlier": f"{other} value per unit of earlier {reference} value",
                    },
                ),
                "notes": notes,
            }
            entry["lagged"]["earlier"] = next(t for t in entry["lagged"]["fixed"] if t["term"] == "earlier")
        out[other] = entry
    return out


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])


def outcome_link(
    rows: list[dict[str, Any]], outcomes: list[dict[str, Any]], measure: str, *, reference: str = "therapist"
) -> dict[str, Any]:
    """Synchrony change against outcome change, on the reference partner's sessions.

    Returns
    -------
    dict
        ``slopes``: per person the synchrony and outcome slopes per session, and their Pearson r
        with Fisher-z 95 % CI and p (``correlation``); ``mixed``: ``outcome ~ sync_within +
        sync_between`` with a random intercept per person (within: the session's value minus the
        person's mean; between: the person's mean, centred). Both are ``available: False`` with a
        reason when there are too few people or sessions.
    """
    score = {(o["person"], o["session"]): o.get(measure) for o in outcomes}
    paired = [
        {**r, "outcome": score[(r["person"], r["session"])]}
        for r in rows
        if r["partner_type"] == reference and score.get((r["person"], r["session"])) is not None
    ]
    out: dict[str, Any] = {"measure": measure, "n_pairs": len(paired)}
    people: dict[str, list[dict[str, Any]]] = {}
    for row in paired:
        people.setdefault(row["person"], []).append(row)
    slopes = []
    for person, own in sorted(people.items()):
        if len({r["session"] for r in own}) >= MIN_SLOPE_SESSIONS:
            sessions = [r["session"] for r in own]
            slopes.append(
                {
                    "person": person,
                    "n_sessions": len(own),
                    "synchrony_slope": _slope(sessions, [r["value"] for r in own]),
                    "outcome_slope": _slope(sessions, [r["outcome"] for r in own]),
                }
            )
    if len(slopes) >= MIN_SLOPE_PEOPLE:
        test = scipy.stats.pearsonr([s["synchrony_slope"] for s in slopes], [s["outcome_slope"] for s in slopes])
        ci = test.confidence_interval(CONFIDENCE)
        out["slopes"] = {
            "available": True,
            "per_person": slopes,
            "correlation": {
                "r": float(test.statistic),
                "ci_low": float(ci.low),
                "ci_high": float(ci.high),
                "p": float(test.pvalue),
                "n": len(slopes),
                "excludes_zero": bool(ci.low > 0 or ci.high < 0),
            },
        }
    else:
        out["slopes"] = {
            "available": False,
            "per_person": slopes,
            "reason": f"{len(slopes)} person(s) with {MIN_SLOPE_SESSIONS}+ {reference} sessions with an outcome; "
            f"the correlation needs {MIN_SLOPE_PEOPLE}",
        }
    if len(people) >= 3 and len(paired) >= 2 * len(people):
        frame = _frame(paired)
        person_mean = frame.groupby("person")["value"].transform("mean")
        frame["sync_within"] = frame["value"] - person_mean
        frame["sync_between"] = person_mean - person_mean.mean()
        fit, _, notes = _fit_mixed("outcome ~ sync_within + sync_between", frame, re_formulas=("1",))
        table = _fixed_table(
            fit,
            {
                "Intercept": f"mean {measure}",
                "sync_within": f"{measure} per unit of synchrony above the person's own mean",
                "sync_between": f"{measure} per unit of a person's mean synchrony above the others'",
            },
        )
        out["mixed"] = {
            "available": True,
            "formula": "outcome ~ sync_within + sync_between",
            "n_obs": int(len(frame)),
            "n_people": len(people),
            "fixed": table,
            "within": next(t for t in table if t["term"] == "sync_within"),
            "notes": notes,
        }
    else:
        out["mixed"] = {
            "available": False,
            "reason": f"{len(paired)} {reference} session(s) with an outcome "
            f"from {len(people)} person(s); the model needs 3 people with 2 sessions each",
        }
    return out


# --------------------------------------------------------------------------------------------
# The whole analysis
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    """One recorded session on its way through the analysis."""

    status: SessionStatus
    path: Path
    content: str
    check: dict[str, Any] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _value(check: dict[str, Any], settings: AnalysisSettings) -> tuple[float | None, str | None]:
    """The followed value of one checked session, or None and why not."""
    condition = check.get("conditions", {}).get(settings.condition)
    if condition is None:
        return None, f"no {settings.condition!r} condition (conditions: {', '.join(check.get('conditions', {}))})"
    cell = condition.get(settings.band, {}).get(settings.metric) or {}
    mean, null_mean, z = cell.get("mean"), cell.get("null_mean"), cell.get("z")
    value = (None if mean is None or null_mean is None else mean - null_mean) if settings.value == "corrected" else z
    return (
        (None, f"{settings.condition}/{settings.band}/{settings.metric}: no surrogate statistics (too few epochs?)")
        if value is None
        else (float(value), None)
    )


def analyze_study(
    folder: str | Path,
    *,
    settings: AnalysisSettings | None = None,
    scheduler: str | None = "serial",
    n_workers: int | None = None,
    pseudo: bool = True,
    json_out: str | Path | None = None,
    html_out: str | Path | None = None,
    figures_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analyse a study folder (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        The study folder.
    settings : AnalysisSettings, optional
        Default: the study file's ``analysis`` section.
    scheduler : str or None
        Where the sessions not in the cache are checked (:func:`dyadlab.synchrony.distributed.map_sessions`):
        ``"serial"`` (default), None for a local Dask cluster, or a scheduler address.
    n_workers : int, optional
        Local cluster only.
    pseudo : bool
        Also compare real dyads with pseudo-dyads (reads every recording's signals again).
    json_out, html_out : str or Path, optional
        Where to write the JSON result and the HTML report.
    figures_dir : str or Path, optional
        Also write the report's figures there as PNG (300 dpi) and SVG.
    progress : bool
        Progress bar over the sessions being checked.

    Returns
    -------
    dict
        ``status`` (per planned session), ``sessions`` (the values used), ``cache`` (hits,
        misses), ``trajectory``, ``generalisation``, ``outcomes``, ``real_vs_pseudo``,
        ``effects`` (the headline tests with their CIs), ``warnings``.

    Raises
    ------
    StudyError
        Not a study folder, too few recorded sessions to fit the models.
    """
    from dyadlab.synchrony.check import json_ready
    from dyadlab.synchrony.distributed import SessionFailure, map_sessions

    folder = Path(folder)
    study = load_study(folder)
    settings = settings or study.analysis
    measures, outcomes = read_outcomes(folder, study)
    statuses, unplanned = session_status(folder, study)
    warnings: list[str] = [
        f"recording {r.xdf or '?'} (dyad {r.dyad}, session {r.session}) is not a planned session of the study {study.name}"
        for r in unplanned
    ]
    cache = SessionCache(folder / ANALYSIS_DIR / "cache")
    settings_key = settings_sha256(settings)
    sessions = [
        _Session(s, s.recording.xdf, file_sha256(s.recording.xdf))
        for s in statuses
        if s.recording is not None and s.recording.complete and s.recording.xdf is not None
    ]
    for session in sessions:
        session.check = cache.get(session.content, settings_key)
    todo = [s for s in sessions if s.check is None]
    logger.info(
        "study %s: %d sessions, %d from the cache, %d to check",
        study.name,
        len(sessions),
        len(sessions) - len(todo),
        len(todo),
    )
    if todo:
        worker = functools.partial(_check_session, options=_check_options(settings))
        results = map_sessions(
            worker, [str(s.path) for s in todo], scheduler=scheduler, n_workers=n_workers, progress=progress
        )
        for session, checked in zip(todo, results):
            if isinstance(checked, SessionFailure):
                session.error = f"{checked.error_type}: {checked.message}"
                warnings.append(f"{session.path.name} could not be checked: {session.error}")
            else:
                session.check = checked
                cache.put(session.content, settings_key, checked)

    rows: list[dict[str, Any]] = []
    session_table: list[dict[str, Any]] = []
    for session in sessions:
        s = session.status
        value, why = _value(session.check, settings) if session.check is not None else (None, session.error)
        quality = ((session.check or {}).get("verdict") or {}).get("data_quality")
        if why:
            warnings.append(f"{session.path.name}: not in the models ({why})")
        if quality not in (None, "ok"):
            warnings.append(
                f"{session.path.name}: the quick-check says the data quality needs checking (kept in the models)"
            )
        row = {
            "person": s.focal,
            "partner": s.partner,
            "dyad": s.dyad,
            "partner_type": s.partner_type,
            "session": s.session,
            "value": value,
            "file": session.path.name,
            "data_quality": quality,
        }
        session_table.append(row)
        if value is not None:
            rows.append(row)
    if len({r["person"] for r in rows}) < 2 or len(rows) < 4:
        raise StudyError(
            f"{len(rows)} recorded session(s) of {len({r['person'] for r in rows})} person(s) have a value for "
            f"{settings.condition}/{settings.band}/{settings.metric}; the models need at least 4 sessions of 2 people "
            "(see `dyadlab study status`)"
        )
    reference = settings.reference_partner
    trajectory = trajectory_model(rows, reference=reference)
    general = generalisation(rows, trajectory, reference=reference)
    measure = (settings.outcome or measures[0]) if measures else None
    if not measures:
        warnings.append("no outcome measures (outcomes.tsv is missing or has no measure column): no outcome link")
    elif measure not in measures:
        raise StudyError(
            f"the outcome {measure!r} is not a column of outcomes.tsv (columns: {', '.join(measures) or 'none'})"
        )
    outcome: dict[str, Any] = (
        outcome_link(rows, outcomes, measure, reference=reference)
        if measure
        else {
            "measure": None,
            "slopes": {"available": False, "reason": "no outcomes.tsv, or it has no measure column"},
            "mixed": {"available": False, "reason": "no outcome measure"},
        }
    )
    pseudo_result = (
        _real_vs_pseudo(sessions, settings) if pseudo else {"available": False, "reason": "not asked (--no-pseudo)"}
    )
    effects = {f"slope[{k}]": v for k, v in trajectory["slopes"].items()}
    effects.update({v["term"]: v for v in trajectory["differences"].values()})
    effects.update({f"lagged[{k}]": v["lagged"]["earlier"] for k, v in general.items() if v["lagged"].get("available")})
    if outcome["slopes"].get("available"):
        effects["outcome slope correlation"] = {
            "term": "r(synchrony slope, outcome slope)",
            **outcome["slopes"]["correlation"],
        }
    if outcome["mixed"].get("available"):
        effects["outcome ~ synchrony (within person)"] = outcome["mixed"]["within"]
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "study": study.name,
        "settings": settings.model_dump(mode="json"),
        "value_meaning": f"{settings.metric} in {settings.condition}/{settings.band}, "
        + ("mean over inter-brain pairs minus the surrogate mean" if settings.value == "corrected" else "surrogate z"),
        "status": [
            {
                "dyad": s.dyad,
                "session": s.session,
                "focal": s.focal,
                "partner": s.partner,
                "partner_type": s.partner_type,
                "status": s.status,
                "detail": s.detail,
                "n_runs": s.n_runs,
            }
            for s in statuses
        ],
        "sessions": session_table,
        "cache": {"hits": cache.hits, "misses": cache.misses, "computed": len(todo), "folder": str(cache.folder)},
        "trajectory": trajectory,
        "generalisation": general,
        "outcomes": outcome,
        "real_vs_pseudo": pseudo_result,
        "effects": effects,
        "warnings": list(dict.fromkeys(warnings + trajectory["notes"])),
    }
    result = json_ready(result)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    if html_out is not None or figures_dir is not None:
        page = render_study_html(result, figures_dir=figures_dir)
        if html_out is not None:
            Path(html_out).parent.mkdir(parents=True, exist_ok=True)
            Path(html_out).write_text(page, encoding="utf-8")
    return result


def _real_vs_pseudo(sessions: list[_Session], settings: AnalysisSettings) -> dict[str, Any]:
    """Real dyads against pseudo-dyads between dyads (:func:`dyadlab.synchrony.group.real_vs_pseudo`)."""
    from dyadlab.synchrony import segments as seg
    from dyadlab.synchrony.group import GroupError, prepare_session_epochs, real_vs_pseudo, session_summary

    usable = [s for s in sessions if s.check is not None]
    if len(usable) < 2:
        return {"available": False, "reason": f"{len(usable)} checked session(s); pseudo-dyads need 2"}
    bands = seg.parse_bands(settings.bands)
    with tempfile.TemporaryDirectory(prefix="dyadlab-study-") as cache:
        summaries, epochs = [], []
        for index, session in enumerate(usable):
            assert session.check is not None
            directory = Path(cache) / f"s{index:04d}"
            directory.mkdir()
            summaries.append(session_summary(session.check, source=session.path))
            epochs.append(
                prepare_session_epochs(
                    session.path, session.check, directory, bands=bands, epoch_length=settings.epoch_length
                )
            )
        try:
            compared = real_vs_pseudo(
                summaries,
                epochs,
                bands=list(bands),
                metrics=[settings.metric],
                pseudo_max=PSEUDO_MAX,
                rng=np.random.default_rng(settings.seed),
            )
        except GroupError as error:
            return {"available": False, "reason": str(error)}
    return {"available": True, **compared}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _trajectory_figure(result: dict[str, Any]) -> Any:
    """Value over sessions: one panel per partner type, a thin line per person, the model's line and CI band."""
    from matplotlib.figure import Figure

    fitted = result["trajectory"]["fitted"]
    fig = Figure(figsize=(3.4 * len(fitted) + 0.6, 3.2))
    axes = fig.subplots(1, len(fitted), squeeze=False, sharey=True)[0]
    for ax, (colour, (kind, line)) in zip(axes, zip(_COLOURS, fitted.items())):
        people: dict[str, list[tuple[int, float]]] = {}
        for row in result["sessions"]:
            if row["partner_type"] == kind and row["value"] is not None:
                people.setdefault(row["person"], []).append((row["session"], row["value"]))
        for points in people.values():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, "-o", color=colour, alpha=0.25, lw=0.8, ms=2.5)
        ax.fill_between(line["session"], line["low"], line["high"], color=colour, alpha=0.2, lw=0)
        ax.plot(line["session"], line["mean"], color=colour, lw=2.2)
        slope = result["trajectory"]["slopes"][kind]
        ax.set_title(
            f"{kind}: {slope['estimate']:+.4f}/session [{slope['ci_low']:+.4f}, {slope['ci_high']:+.4f}]", fontsize=8
        )
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xlabel("session", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(result["value_meaning"].split(",")[0], fontsize=8)
    fig.subplots_adjust(
        left=0.6 / fig.get_figwidth(),
        right=1 - 0.15 / fig.get_figwidth(),
        bottom=0.5 / 3.2,
        top=1 - 0.35 / 3.2,
        wspace=0.15,
    )
    return fig


def _effects_figure(result: dict[str, Any]) -> Any:
    """The headline effects with their 95 % CIs (a forest plot; each on its own scale, so one row each)."""
    from matplotlib.figure import Figure

    effects = [(name, e) for name, e in result["effects"].items() if e.get("ci_low") is not None]
    fig = Figure(figsize=(6.5, 0.45 * len(effects) + 0.8))
    axes = fig.subplots(len(effects), 1, squeeze=False)[:, 0]
    for ax, (name, effect) in zip(axes, effects):
        estimate = effect.get("estimate", effect.get("r"))
        ax.errorbar(
            [estimate],
            [0],
            xerr=[[estimate - effect["ci_low"]], [effect["ci_high"] - estimate]],
            fmt="o",
            color="tab:red" if effect["excludes_zero"] else "0.4",
            capsize=3,
        )
        ax.axvline(0, color="0.6", lw=0.8)
        span = max(abs(effect["ci_low"]), abs(effect["ci_high"])) * 1.15 or 1.0
        ax.set_xlim(-span, span)
        ax.set_yticks([0], [name], fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    fig.subplots_adjust(
        left=2.6 / 6.5, right=0.97, bottom=0.35 / fig.get_figheight(), top=1 - 0.1 / fig.get_figheight(), hspace=1.2
    )
    return fig


def _outcome_figure(result: dict[str, Any]) -> Any | None:
    """Per person: synchrony slope against outcome slope, with the correlation."""
    from matplotlib.figure import Figure

    slopes = result["outcomes"]["slopes"]
    if not slopes.get("available"):
        return None
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    xs = [s["synchrony_slope"] for s in slopes["per_person"]]
    ys = [s["outcome_slope"] for s in slopes["per_person"]]
    ax.plot(xs, ys, "o", color="tab:blue")
    c = slopes["correlation"]
    ax.set_title(f"r = {c['r']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}], n = {c['n']}", fontsize=8)
    ax.set_xlabel("synchrony slope per session", fontsize=8)
    ax.set_ylabel(f"{result['outcomes']['measure']} slope per session", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.subplots_adjust(left=0.75 / 3.6, right=0.95, bottom=0.5 / 3.2, top=1 - 0.35 / 3.2)
    return fig


def _effect_rows(effects: Sequence[dict[str, Any]]) -> str:
    from dyadlab.synchrony.htmlpage import format_number, html_escape

    return "".join(
        f"<tr{' class=sig' if e.get('excludes_zero') else ''}><td class='l'>{html_escape(e.get('meaning', e['term']))}</td>"
        f"<td>{format_number(e.get('estimate', e.get('r')), 4)}</td><td>[{format_number(e.get('ci_low'), 4)}, "
        f"{format_number(e.get('ci_high'), 4)}]</td><td>{format_number(e.get('p'))}</td></tr>"
        for e in effects
    )


_EFFECT_HEAD = "<table><tr><th class='l'>term</th><th>estimate</th><th>95% CI</th><th>p</th></tr>"


def render_study_html(result: dict[str, Any], *, figures_dir: str | Path | None = None) -> str:
    """The study report as one self-contained HTML page; figures also saved to ``figures_dir`` (PNG 300 dpi, SVG)."""
    import matplotlib

    from dyadlab.synchrony.htmlpage import format_number, html_escape, page, png_data_uri

    matplotlib.use("Agg", force=False)
    figures = {
        "trajectories": _trajectory_figure(result),
        "effects": _effects_figure(result),
        "outcomes": _outcome_figure(result),
    }
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            if fig is not None:
                fig.savefig(Path(figures_dir) / f"{name}.png", dpi=300)
                fig.savefig(Path(figures_dir) / f"{name}.svg")
    image = {name: png_data_uri(fig) if fig is not None else "" for name, fig in figures.items()}
    counts: dict[str, int] = {}
    for s in result["status"]:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    not_recorded = "".join(
        f"<tr><td class='l'>{html_escape(s['dyad'])}</td><td>{s['session']}</td><td class='l'>{html_escape(s['status'])}</td>"
        f"<td class='l'>{html_escape(s['detail'])}</td></tr>"
        for s in result["status"]
        if s["status"] != "recorded"
    )
    t = result["trajectory"]
    general_parts = []
    for other, entry in result["generalisation"].items():
        lagged = entry["lagged"]
        general_parts.append(
            f"<h3>{html_escape(other)}</h3>{_EFFECT_HEAD}{_effect_rows([entry['slope'], entry['difference']])}</table>"
            + (
                f"<p class='small'>Lagged model <code>{html_escape(lagged['formula'])}</code> ({lagged['n_obs']} sessions, "
                f"{lagged['n_people']} people, {html_escape(lagged['model'])}):</p>{_EFFECT_HEAD}{_effect_rows(lagged['fixed'])}</table>"
                if lagged.get("available")
                else f"<p class='small'>Lagged model not fitted: {html_escape(lagged['reason'])}</p>"
            )
        )
    o = result["outcomes"]
    outcome_html = (
        (
            f"<p>Measure: <b>{html_escape(o['measure'])}</b>. Per-person slopes: "
            + (
                f"r = {o['slopes']['correlation']['r']:.3f} [{o['slopes']['correlation']['ci_low']:.3f}, "
                f"{o['slopes']['correlation']['ci_high']:.3f}], p {format_number(o['slopes']['correlation']['p'])}, "
                f"n = {o['slopes']['correlation']['n']}"
                if o["slopes"].get("available")
                else html_escape(o["slopes"]["reason"])
            )
            + "</p>"
            + image["outcomes"]
            + (
                f"<p class='small'>Mixed model <code>{html_escape(o['mixed']['formula'])}</code> ({o['mixed']['n_obs']} sessions): "
                "sessions and synchrony both change over time, so the within-person term is an association, not a cause.</p>"
                f"{_EFFECT_HEAD}{_effect_rows(o['mixed']['fixed'])}</table>"
                if o["mixed"].get("available")
                else f"<p class='small'>Mixed model not fitted: {html_escape(o['mixed']['reason'])}</p>"
            )
        )
        if o.get("measure")
        else "<p>No outcome measure (outcomes.tsv).</p>"
    )
    pseudo = result["real_vs_pseudo"]
    if pseudo.get("available"):
        rows = []
        for condition, entry in pseudo["conditions"].items():
            for band, per_metric in entry.items():
                if not isinstance(per_metric, dict) or result["settings"]["metric"] not in per_metric:
                    continue
                cell = per_metric[result["settings"]["metric"]]
                rows.append(
                    f"<tr{' class=sig' if cell.get('significant') else ''}><td class='l'>{html_escape(condition)}</td>"
                    f"<td class='l'>{html_escape(band)}</td><td>{entry['n_real']}</td><td>{entry['n_pseudo']}</td>"
                    f"<td>{format_number(cell['real_mean'])}</td><td>{format_number(cell['pseudo_mean'])}</td>"
                    f"<td>{format_number(cell.get('p'))}</td><td>{format_number(cell.get('p_fdr'))}</td></tr>"
                )
        pseudo_html = (
            "<table><tr><th class='l'>condition</th><th class='l'>band</th><th>real</th><th>pseudo</th><th>real mean</th>"
            "<th>pseudo mean</th><th>p</th><th>p FDR</th></tr>" + "".join(rows) + "</table>"
            "<p class='small'>As <code>dyadlab group</code>: participant A of one session with B of another dyad's session.</p>"
        )
    else:
        pseudo_html = f"<p>Not computed: {html_escape(pseudo['reason'])}</p>"
    warnings = "".join(f"<li>{html_escape(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    parts = [
        f"<p class='small'>{html_escape(result['generated_utc'])} · schema {result['schema_version']} · value: "
        f"{html_escape(result['value_meaning'])} · {result['settings']['surrogates']} surrogates per session · "
        f"cache: {result['cache']['hits']} reused, {result['cache']['computed']} computed</p>",
        "<h2>Sessions</h2><p>"
        + ", ".join(f"{n} {html_escape(k)}" for k, n in sorted(counts.items()))
        + "</p>"
        + (
            "<table><tr><th class='l'>dyad</th><th>session</th><th class='l'>status</th><th class='l'>detail</th></tr>"
            + not_recorded
            + "</table>"
            if not_recorded
            else ""
        ),
        "<h2>Trajectories</h2>"
        + image["trajectories"]
        + f"<p class='small'>Thin lines: persons; thick line and band: the mixed model's population line and its 95% CI. "
        f"Model <code>{html_escape(t['formula'])}</code>, random effects <code>{html_escape(t['re_formula'])}</code> per person"
        + (" and a variance component per dyad" if t["variance_components"] else "")
        + f" (REML, {t['n_obs']} sessions, {t['n_people']} people; Wald CIs).</p>"
        + f"{_EFFECT_HEAD}{_effect_rows(t['fixed'])}</table>"
        + "<p class='small'>Variances: "
        + ", ".join(f"{html_escape(k)} {format_number(v)}" for k, v in t["variances"].items())
        + "</p>",
        "<h2>Generalisation</h2>"
        + ("".join(general_parts) or "<p>Only one partner type: nothing to generalise to.</p>"),
        "<h2>Synchrony and outcome</h2>" + outcome_html,
        "<h2>Headline effects</h2>" + image["effects"],
        "<h2>Real dyads vs pseudo-dyads</h2>" + pseudo_html,
        "<h2>Warnings</h2><ul class='warn'>" + warnings + "</ul>",
        f"<h2>Settings</h2><pre>{html_escape(json.dumps(result['settings'], indent=1))}</pre>",
    ]
    return page(f"Study {result['study']}: {len(result['sessions'])} sessions", parts)
