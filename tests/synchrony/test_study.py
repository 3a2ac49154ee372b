"""The study (``dyadlab study``): study file, status, simulated plasticity study, study analysis.

Real components throughout: studies are written by :mod:`dyadlab.protocols.study_simulation`
(the coupled-dyad simulator's signal model, dyadlab's XDF writer), checked by the quick-check
and modelled with statsmodels' MixedLM.

Sizing of the known-answer study (6 patients x 5 sessions, a therapist every session, a new
stranger at sessions 1, 3, 5; 2 blocks of 20 s at 128 Hz on 4 posterior channels; 50
surrogates). Measured on seeds 0-4 of this design (``benchmarks.bench_study`` with these
sizes repeats the measurement): the therapist slope's 95 % CI lower bound was +0.007 to +0.024
(corrected PLV per session) and the stranger slope's +0.005 to +0.010, the within-person
outcome coefficient's upper bound -34 to -50 (symptom points per unit of corrected PLV); on the null study of the same seeds none of the
three CIs excluded 0. Under the null each CI excludes 0 with probability about 0.05, so a null
analysis passing all three planted checks is a ~1e-4 event, and the fixed seeds make the test
deterministic. The per-person slope correlation (n = 6) is not reliable at this size (3 of 5
seeds): it is asserted by the 12 x 8 benchmark, not here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dyadlab.protocols.cli import main
from dyadlab.protocols.study_simulation import StudyDesign, simulate_study
from dyadlab.synchrony.study import (
    OUTCOMES_FILE,
    STUDY_FILE,
    AnalysisSettings,
    Study,
    StudyError,
    load_study,
    read_outcomes,
    session_status,
    write_study,
)
from dyadlab.synchrony.study_analysis import SessionCache, analyze_study, file_sha256, settings_sha256

SMALL = {
    "n_patients": 6,
    "n_sessions": 5,
    "stranger_sessions": (1, 3, 5),
    "stranger_onset": 2,
    "therapist_rate": 0.1,
    "n_therapists": 2,
}
N_SMALL_SESSIONS = 6 * 5 + 6 * 3
SURROGATES = 50
HELD_BACK = ("D03", 4)  # recorded "later": the re-analysis must compute this session only


def _settings(folder: Path) -> AnalysisSettings:
    return load_study(folder).analysis.model_copy(update={"surrogates": SURROGATES})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted study analysed twice: without one session, then after it was recorded."""
    folder = tmp_path_factory.mktemp("study-planted")
    design = StudyDesign(seed=0, **SMALL)
    plan = simulate_study(folder, design)
    held = folder / "recordings" / f"sub-{HELD_BACK[0]}" / f"ses-{HELD_BACK[1]:02d}"
    shutil.rmtree(held)
    first = analyze_study(folder, settings=_settings(folder), scheduler="serial", pseudo=False)
    truth = simulate_study(folder, design, sessions=[HELD_BACK])  # the same session, deterministic
    assert [p for p in truth["planted"] if p["written"]] == [
        p for p in plan["planted"] if (p["dyad"], p["session"]) == HELD_BACK
    ]
    second = analyze_study(
        folder,
        settings=_settings(folder),
        scheduler="serial",
        pseudo=True,
        json_out=folder / "analysis" / "study.json",
        html_out=folder / "analysis" / "study.html",
        figures_dir=folder / "analysis" / "figures",
    )
    return first, second, folder, truth


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    """The null study of the same design, analysed through the command line."""
    folder = tmp_path_factory.mktemp("study-null")
    runner = CliRunner()
    made = runner.invoke(
        main,
        [
            "study",
            "simulate",
            str(folder),
            "--patients",
            "6",
            "--sessions",
            "5",
            "--stranger-sessions",
            "1,3,5",
            "--therapists",
            "2",
            "--null",
            "--seed",
            "0",
        ],
    )
    assert made.exit_code == 0, made.output
    analysed = runner.invoke(
        main,
        [
            "study",
            "analyze",
            str(folder),
            "--scheduler",
            "serial",
            "--surrogates",
            str(SURROGATES),
            "--no-pseudo",
            "--no-progress",
        ],
    )
    assert analysed.exit_code == 0, analysed.output
    return json.loads((folder / "analysis" / "study.json").read_text()), analysed.output, folder


def _mean_ols_slope(result: dict, partner_type: str) -> float:
    """Two-stage estimate: the mean over persons of each person's least-squares slope."""
    people: dict[str, list[tuple[int, float]]] = {}
    for row in result["sessions"]:
        if row["partner_type"] == partner_type:
            people.setdefault(row["person"], []).append((row["session"], row["value"]))
    return float(np.mean([np.polyfit(*zip(*points), 1)[0] for points in people.values()]))


def test_planted_trajectories_and_outcome_link_are_recovered(planted):
    _, result, _, _ = planted
    effects = result["effects"]
    therapist, stranger = effects["slope[therapist]"], effects["slope[stranger]"]
    outcome = effects["outcome ~ synchrony (within person)"]
    assert therapist["ci_low"] > 0, therapist
    assert stranger["ci_low"] > 0, stranger
    assert outcome["ci_high"] < 0, outcome  # symptoms fall as synchrony with the therapist rises
    # The therapist sessions are balanced (every person, every session): the mixed model's slope
    # must agree with the mean of per-person least-squares slopes within its own CI half-width.
    half = (therapist["ci_high"] - therapist["ci_low"]) / 2
    assert abs(therapist["estimate"] - _mean_ols_slope(result, "therapist")) < half
    assert result["trajectory"]["n_obs"] == N_SMALL_SESSIONS
    assert result["trajectory"]["n_people"] == 6


def test_null_study_flags_no_effect(null):
    result, output, _ = null
    for name in ("slope[therapist]", "slope[stranger]", "outcome ~ synchrony (within person)"):
        assert not result["effects"][name]["excludes_zero"], result["effects"][name]
    assert "Headline effects" in output and "slope[therapist]" in output


def test_reanalysis_after_one_new_session_checks_that_session_only(planted):
    first, second, _, _ = planted
    assert first["cache"] == {**first["cache"], "hits": 0, "misses": N_SMALL_SESSIONS - 1}
    assert second["cache"] == {**second["cache"], "hits": N_SMALL_SESSIONS - 1, "misses": 1, "computed": 1}
    held = [s for s in first["status"] if (s["dyad"], s["session"]) == HELD_BACK]
    assert held[0]["status"] == "missing"
    assert all(s["status"] == "recorded" for s in second["status"])


def test_cache_keys_follow_content_and_settings(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    base = AnalysisSettings()
    assert settings_sha256(base) == settings_sha256(AnalysisSettings())
    assert settings_sha256(base) != settings_sha256(base.model_copy(update={"surrogates": 101}))
    # The followed condition is read from a cached check: changing it must not recompute sessions.
    assert settings_sha256(base) == settings_sha256(base.model_copy(update={"condition": "rest"}))
    cache = SessionCache(tmp_path / "cache")
    assert cache.get("a" * 64, "b" * 64) is None
    cache.put("a" * 64, "b" * 64, {"ok": 1})
    assert cache.get("a" * 64, "b" * 64) == {"ok": 1}
    assert cache.get("c" * 64, "b" * 64) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_report_real_vs_pseudo_and_paper_figures(planted):
    _, result, folder, _ = planted
    page = (folder / "analysis" / "study.html").read_text()
    for part in (
        "Trajectories",
        "Generalisation",
        "Synchrony and outcome",
        "therapist slope per session",
        "data:image/png",
    ):
        assert part in page
    for name in ("trajectories", "effects", "outcomes"):
        assert (folder / "analysis" / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (folder / "analysis" / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert json.loads((folder / "analysis" / "study.json").read_text())["effects"] == result["effects"]
    pseudo = result["real_vs_pseudo"]
    assert pseudo["available"]
    cell = pseudo["conditions"]["cooperation"]["alpha"]["plv"]
    # Most sessions are coupled above baseline in cooperation/alpha; pseudo-dyads never are.
    assert cell["real_mean"] > cell["pseudo_mean"]


def test_truth_file_and_outcomes_describe_the_planted_study(planted):
    _, _, folder, truth = planted
    study = load_study(folder)
    assert len(truth["planted"]) == len(study.sessions) == N_SMALL_SESSIONS
    couplings = {(p["person"], p["partner_type"], p["session"]): p["coupling"] for p in truth["planted"]}
    gain = truth["gains"]["pat-01"]
    assert couplings[("pat-01", "therapist", 5)] == pytest.approx(0.1 + gain * 0.1 * 4)
    assert couplings[("pat-01", "stranger", 1)] == 0.1  # at or before the onset (session 2): baseline
    assert couplings[("pat-01", "stranger", 3)] == pytest.approx(0.1 + gain * 0.12 * 1)
    measures, rows = read_outcomes(folder, study)
    assert measures == ["symptoms"] and len(rows) == 6 * 5


# --------------------------------------------------------------------------------------------
# Study file and status
# --------------------------------------------------------------------------------------------


def _tiny(folder: Path) -> Study:
    simulate_study(folder, StudyDesign(n_patients=2, n_sessions=3, stranger_sessions=(), n_therapists=1, seed=5))
    return load_study(folder)


def _run_files(folder: Path, dyad: str, session: int) -> tuple[Path, Path]:
    stem = (
        folder / "recordings" / f"sub-{dyad}" / f"ses-{session:02d}" / f"sub-{dyad}_ses-{session:02d}_task-probe_run-01"
    )
    return stem.with_name(stem.name + ".xdf"), stem.with_name(stem.name + "_session.json")


def test_status_of_each_planned_session(tmp_path):
    study = _tiny(tmp_path)
    xdf, record = _run_files(tmp_path, "D01", 2)
    xdf.unlink()  # the record is left, its recording is gone
    xdf, record = _run_files(tmp_path, "D01", 3)
    aborted = json.loads(record.read_text())
    record.write_text(json.dumps({**aborted, "complete": False, "status": "aborted", "abort_reason": "Escape pressed"}))
    xdf, record = _run_files(tmp_path, "D02", 1)
    xdf.unlink()
    record.unlink()
    xdf, record = _run_files(tmp_path, "D02", 2)
    record.with_name(record.name.replace("_session", "_quickcheck")).write_text(
        json.dumps({"verdict": {"data_quality": "check", "summary": ["Participant A: 3 problem(s)."]}})
    )
    xdf, record = _run_files(tmp_path, "D02", 3)
    record.unlink()  # a bare XDF (another recorder): identified by its file header
    statuses, unplanned = session_status(tmp_path, study)
    by_session = {(s.dyad, s.session): s for s in statuses}
    assert {key: s.status for key, s in by_session.items()} == {
        ("D01", 1): "recorded",
        ("D01", 2): "incomplete",
        ("D01", 3): "incomplete",
        ("D02", 1): "missing",
        ("D02", 2): "quick-check failed",
        ("D02", 3): "recorded",
    }
    assert "XDF file is missing" in by_session[("D01", 2)].detail
    assert "aborted: Escape pressed" in by_session[("D01", 3)].detail
    assert "3 problem(s)" in by_session[("D02", 2)].detail
    assert unplanned == []
    output = CliRunner().invoke(main, ["study", "status", str(tmp_path)]).output
    assert "6 planned sessions" in output and "1 missing" in output and "2 incomplete" in output


def test_study_file_mistakes_are_named(tmp_path):
    with pytest.raises(StudyError, match="no study.yaml"):
        load_study(tmp_path)
    people = [{"id": "pat-01", "role": "patient"}, {"id": "ther-1", "role": "therapist"}]
    base = {
        "name": "s",
        "people": people,
        "dyads": [{"id": "D01", "A": "pat-01", "B": "ther-1"}],
        "sessions": [{"dyad": "D01", "session": 1}],
    }
    write_study(tmp_path, Study.model_validate(base))
    assert load_study(tmp_path).partner_type("D01") == "therapist"
    for change, message in (
        ({"dyads": [{"id": "D01", "A": "pat-01", "B": "ther-9"}]}, "'ther-9' is not in people"),
        ({"dyads": [{"id": "D01", "A": "ther-1", "B": "ther-1"}]}, "with themselves"),
        ({"sessions": [{"dyad": "D02", "session": 1}]}, "dyad 'D02', which is not in dyads"),
        ({"sessions": [{"dyad": "D01", "session": 1}] * 2}, "listed twice"),
        ({"focal_role": "child"}, "exactly one person of the focal role 'child'"),
    ):
        (tmp_path / STUDY_FILE).write_text(json.dumps({**base, **change}))  # JSON is YAML
        with pytest.raises(StudyError, match=message):
            load_study(tmp_path)
    write_study(tmp_path, Study.model_validate(base))
    for text, message in (
        ("person\tsession\tsymptoms\npat-01\t1\tmany\n", "line 2: symptoms = 'many' is not a number"),
        ("person\tsession\tsymptoms\npat-02\t1\t3\n", "person 'pat-02' is not in"),
        ("id\tsession\n", "first two columns"),
        ("person\tsession\tsymptoms\npat-01\t1\t3\npat-01\t1\t4\n", "given twice"),
    ):
        (tmp_path / OUTCOMES_FILE).write_text(text)
        with pytest.raises(StudyError, match=message):
            read_outcomes(tmp_path, load_study(tmp_path))
    (tmp_path / OUTCOMES_FILE).write_text("person\tsession\tsymptoms\talliance\npat-01\t1\t\t4,5\n")
    assert read_outcomes(tmp_path, load_study(tmp_path)) == (
        ["symptoms", "alliance"],
        [{"person": "pat-01", "session": 1, "symptoms": None, "alliance": 4.5}],
    )


@pytest.mark.integration
@pytest.mark.display
def test_run_records_a_planned_session_with_the_studys_people(tmp_path):
    """`dyadlab run --study` on a real (simulated-board, autopilot) session: the study's ids, roles,
    name, dyad and session reach the XDF, and the session's status turns from missing to recorded."""
    import pyxdf
    import yaml

    _tiny(tmp_path)
    xdf, record = _run_files(tmp_path, "D02", 2)
    shutil.rmtree(xdf.parent)
    assert {(s.dyad, s.session): s.status for s in session_status(tmp_path)[0]}[("D02", 2)] == "missing"
    data = yaml.safe_load(Path("protocols/bundled/demo.yaml").read_text())
    data["blocks"] = [{"id": "rest", "task": "rest", "params": {"duration_s": 2.0, "show_instructions": False}}]
    data["preflight"] = {"enabled": False}
    data["quickcheck"] = {"enabled": False}
    protocol = tmp_path / "probe.yaml"
    protocol.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(protocol),
            "--simulate",
            "--autopilot",
            "--study",
            str(tmp_path),
            "--dyad",
            "D02",
            "--session",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    status = {(s.dyad, s.session): s for s in session_status(tmp_path)[0]}[("D02", 2)]
    assert status.status == "recorded", status.detail
    streams, header = pyxdf.load_xdf(str(status.recording.xdf))
    assert (header["info"]["study"][0], header["info"]["dyad"][0], header["info"]["session"][0]) == (
        "plasticity",
        "D02",
        "2",
    )
    people = {
        s["info"]["desc"][0]["participant"][0]["label"][0]: (
            s["info"]["desc"][0]["participant"][0]["id"][0],
            s["info"]["desc"][0]["participant"][0]["role"][0],
        )
        for s in streams
        if s["info"]["type"][0] == "EEG"
    }
    assert people == {"A": ("pat-02", "patient"), "B": ("ther-1", "therapist")}


def test_run_refuses_a_session_the_study_does_not_plan(tmp_path):
    _tiny(tmp_path)
    result = CliRunner().invoke(main, ["run", "demo", "--study", str(tmp_path), "--dyad", "D01", "--session", "7"])
    assert result.exit_code == 2
    assert "plans no session 7 for dyad D01 (planned: 1, 2, 3)" in result.output
    result = CliRunner().invoke(main, ["run", "demo", "--study", str(tmp_path), "--dyad", "D01"])
    assert result.exit_code == 2 and "--study needs --dyad and --session" in result.output


def test_a_damaged_recording_is_reported_and_left_out(tmp_path):
    _tiny(tmp_path)
    xdf, _ = _run_files(tmp_path, "D02", 3)
    xdf.write_bytes(b"XDF:" + b"\x00" * 64)  # the magic, then nothing an XDF reader can use
    settings = load_study(tmp_path).analysis.model_copy(update={"surrogates": 20})
    result = analyze_study(tmp_path, settings=settings, scheduler="serial", pseudo=False)
    assert [w for w in result["warnings"] if xdf.name in w and "could not be checked" in w]
    assert len([s for s in result["sessions"] if s["value"] is not None]) == 5
    assert result["trajectory"]["n_obs"] == 5
