"""Group and longitudinal level (``dyadlab.synchrony.group``, ``dyadlab group``) on real XDF sessions.

Sessions are written with dyadlab's XDF writer through ``xdf_fixtures`` (known coupling: a shared
alpha source in the coupled conditions only). ``xdf_fixtures`` writes fixed participant ids and no
session number, so :func:`_write_session` swaps in the ids, roles and header ``session`` field a
real protocol run writes (same writer, same stream metadata helpers).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from dyadlab.acquisition.streams import ParticipantInfo
from dyadlab.acquisition.xdf import XdfWriter
from dyadlab.synchrony.check import run_check
from dyadlab.synchrony.group import (
    SCHEMA_VERSION,
    GroupError,
    LayoutMismatchError,
    SessionEpochs,
    real_vs_pseudo,
    run_group,
    session_summary,
    trend,
)
from dyadlab.synchrony.group_command import group
from tests.synchrony import xdf_fixtures

BANDS = "theta=4-7,alpha=8-12"
METRICS = ("plv", "wpli")
N_SURROGATES = 30
BLOCKS = [("rest", 12.0), ("cooperation", 20.0)]


def _write_session(path, *, dyad, ids, roles, session, coupling, seed, blocks=BLOCKS, n_channels=2):
    """One session XDF; ``coupling`` is the alpha amplitude (µV) of the shared source in cooperation."""
    spec = xdf_fixtures.DyadSpec(
        blocks=blocks,
        coupled={"cooperation": (9.0, 11.0, coupling)} if coupling else {},
        n_channels=n_channels,
        seed=seed,
        dyad=dyad,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            xdf_fixtures, "ParticipantInfo", lambda label, _id, _role: ParticipantInfo(label, ids[label], roles[label])
        )
        patch.setattr(
            xdf_fixtures,
            "XdfWriter",
            lambda target, file_metadata: XdfWriter(target, file_metadata={**file_metadata, "session": str(session)}),
        )
        return xdf_fixtures.write_dyad_xdf(path, spec)


def _four_dyads(folder, coupling):
    """Four different dyads (patient + therapist each), coupled in cooperation/alpha when ``coupling``.

    Four, because with three (6 pseudo-dyads) the permutation's smallest p, 1 / C(9, 3) = 0.012, cannot
    survive FDR over 8 cells; with four it is 1 / C(16, 4) = 0.0005.
    """
    return [
        _write_session(
            folder / f"dyad{k}.xdf",
            dyad=f"d{k}",
            ids={"A": f"pat-{k}", "B": f"ther-{k}"},
            roles={"A": "patient", "B": "therapist"},
            session=1,
            coupling=coupling,
            seed=20 + k,
        )
        for k in range(4)
    ]


@pytest.fixture(scope="module")
def coupled(tmp_path_factory):
    """The command end to end on three coupled dyads: its JSON, HTML and terminal output."""
    folder = tmp_path_factory.mktemp("group-coupled")
    paths = _four_dyads(folder, coupling=6.0)
    result = CliRunner().invoke(
        group,
        [
            *map(str, paths),
            "--json",
            str(folder / "group.json"),
            "--report",
            str(folder / "group.html"),
            "--bands",
            BANDS,
            "--metrics",
            ",".join(METRICS),
            "--surrogates",
            str(N_SURROGATES),
            "--seed",
            "3",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads((folder / "group.json").read_text()), folder, result.output, paths


def test_real_dyads_beat_pseudo_dyads_only_where_coupled(coupled):
    report, _, _, _ = coupled
    group_result = report["real_vs_pseudo"]
    assert group_result["available"]
    assert group_result["channels"] == {"A": ["Fz", "Cz"], "B": ["Fz", "Cz"]}
    for condition in ("rest", "cooperation"):
        entry = group_result["conditions"][condition]
        assert (entry["n_real"], entry["n_pseudo"]) == (4, 12)
        assert all(pair["a_from"] != pair["b_from"] for pair in entry["pseudo_pairs"])
        for band in ("theta", "alpha"):
            for metric in METRICS:
                cell = entry[band][metric]
                if (condition, band) == ("cooperation", "alpha"):
                    assert cell["significant"] and cell["p_fdr"] < 0.01
                    assert cell["real_mean"] > cell["pseudo_mean"] + 0.1
                    assert min(cell["real"]) > max(cell["pseudo"])
                    # The real dyads top the pool of 4 real + 12 pseudo values: of all C(16, 4) splits
                    # (enumerated, fewer than the 5000 resamples) only their own reaches their mean.
                    assert cell["p"] == pytest.approx(1 / math.comb(16, 4))
                else:
                    assert not cell["significant"] and cell["p_fdr"] > 0.05
    assert group_result["fdr"]["n_tests"] == 8
    assert group_result["notes"] == []  # 4 dyads: enough resolution, nothing to caution about


def test_real_dyad_values_are_the_quick_check_means(coupled):
    """The group's real-dyad values come from the same epochs and channels as each session's quick-check."""
    report, _, _, _ = coupled
    by_file = {s["file"]: s for s in report["sessions"]}
    for condition, entry in report["real_vs_pseudo"]["conditions"].items():
        for k, real in enumerate(entry["real_dyads"]):
            session = by_file[real["file"]]
            assert real["n_epochs"] == session["conditions"][condition]["n_epochs"]
            for band in ("theta", "alpha"):
                for metric in METRICS:
                    quick_check = session["conditions"][condition][band][metric]["mean"]
                    assert entry[band][metric]["real"][k] == pytest.approx(quick_check, rel=1e-6)


def test_session_summaries_carry_identity_and_order(coupled):
    report, _, _, _ = coupled
    assert report["schema_version"] == SCHEMA_VERSION
    sessions = report["sessions"]
    assert [s["order"] for s in sessions] == [1, 2, 3, 4]
    first = sessions[0]
    assert first["participants"]["A"]["role"] == "patient" and first["participants"]["B"]["role"] == "therapist"
    assert first["session_number"] == 1 and first["kind"] == "xdf" and first["datetime"]
    cell = first["conditions"]["cooperation"]["alpha"]["plv"]
    assert cell["corrected"] == pytest.approx(cell["mean"] - cell["null_mean"])
    assert cell["z"] > 3
    assert report["skipped"] == []
    # Every participant appears once: no longitudinal view.
    assert report["longitudinal"]["participants"] == {}


def test_html_is_self_contained_and_terminal_shows_tables(coupled):
    _, folder, output, _ = coupled
    page = (folder / "group.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") >= 1
    assert not re.search(r"""(src|href)=["']?https?://""", page)
    assert "Real dyads vs pseudo-dyads" in page
    assert "Real dyads vs pseudo-dyads" in output and "cooperation" in output


def test_no_coupling_anywhere_is_not_detected(tmp_path):
    paths = _four_dyads(tmp_path, coupling=0.0)
    report = run_group(paths, bands=BANDS, metrics=METRICS, n_surrogates=N_SURROGATES, seed=5)
    cells = [
        entry[band][metric]
        for entry in report["real_vs_pseudo"]["conditions"].values()
        for band in ("theta", "alpha")
        for metric in METRICS
    ]
    assert len(cells) == 8
    assert not any(cell["significant"] for cell in cells)
    assert all(abs(cell["difference"]) < 0.1 for cell in cells)


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """One patient over sessions: therapist coupling rises 0 -> 6 µV over sessions 1-4, strangers never couple.

    The four therapist sessions (one dyad) go through ``run_group`` on their XDFs, which also writes
    each session's quick-check JSON (``sessions_dir``); the stranger sessions through ``run_check``.
    Returns the XDF run's report and the seven quick-check JSONs.
    """
    folder = tmp_path_factory.mktemp("group-patient")
    sessions = folder / "sessions"
    plan = [("pt", "ther-1", "therapist", s, amp) for s, amp in zip((1, 2, 3, 4), (0.0, 2.0, 4.0, 6.0))]
    plan += [(f"ps{s}", f"str-{s}", "stranger", s, 0.0) for s in (1, 2, 3)]
    xdfs = []
    for k, (dyad, partner, role, session, amplitude) in enumerate(plan):
        xdfs.append(
            _write_session(
                folder / f"{dyad}-ses{session}.xdf",
                dyad=dyad,
                ids={"A": "pat-7", "B": partner},
                roles={"A": "patient", "B": role},
                session=session,
                coupling=amplitude,
                seed=40 + k,
                blocks=[("cooperation", 20.0)],
            )
        )
    therapist_report = run_group(
        xdfs[:4], bands="alpha=8-12", metrics=["plv"], n_surrogates=N_SURROGATES, sessions_dir=sessions, seed=2
    )
    for k, xdf in enumerate(xdfs[4:]):
        run_check(
            xdf,
            bands="alpha=8-12",
            metrics=["plv"],
            n_surrogates=N_SURROGATES,
            json_out=sessions / f"{xdf.stem}.quickcheck.json",
            seed=k,
            progress=False,
        )
    return therapist_report, sorted(sessions.glob("*.quickcheck.json"))


def test_carry_over_control_for_one_dyad_over_sessions(patient):
    """One patient-therapist dyad over 4 sessions: no between-dyad pseudo-dyads exist, the carry-over null does."""
    report, _ = patient
    assert not report["real_vs_pseudo"]["available"]
    assert "same dyad" in report["real_vs_pseudo"]["reason"]
    carry = report["carry_over"]
    assert carry["available"] and carry["null"] == "across-sessions"
    entry = carry["conditions"]["cooperation"]
    assert (entry["n_real"], entry["n_pseudo"]) == (4, 12)  # A of session k with B of session j != k
    cell = entry["alpha"]["plv"]
    # Sessions 2-4 are coupled within the session (2, 4, 6 µV); across sessions nothing is.
    assert [d["file"] for d in entry["real_dyads"]] == [f"pt-ses{k}.xdf" for k in (1, 2, 3, 4)]
    assert cell["real_mean"] > cell["pseudo_mean"] + 0.1 and cell["significant"]
    assert min(cell["real"][2:]) > max(cell["pseudo"])


def test_longitudinal_trend_rises_with_the_therapist_only(patient):
    xdf_report, patient_sessions = patient
    assert len(patient_sessions) == 7
    report = run_group(patient_sessions, bands="alpha=8-12", metrics=["plv"], seed=1)
    assert [s["kind"] for s in report["sessions"]] == ["quickcheck-json"] * 7
    assert not report["real_vs_pseudo"]["available"]
    assert "quick-check JSONs hold summaries only" in report["real_vs_pseudo"]["reason"]
    person = report["longitudinal"]["participants"]["pat-7"]
    assert person["n_sessions"] == 7 and person["x_axis"].startswith("session number")
    therapist = person["by_partner_type"]["therapist"]["series"]["cooperation"]["alpha"]["plv"]
    stranger = person["by_partner_type"]["stranger"]["series"]["cooperation"]["alpha"]["plv"]
    assert therapist["x"] == [1, 2, 3, 4] and stranger["x"] == [1, 2, 3]
    assert therapist["trend"]["slope"] > 0.05  # corrected PLV per session
    # Four sessions: the 95 % interval is wide (it may reach below 0), but it brackets the slope.
    assert therapist["trend"]["ci_low"] <= therapist["trend"]["slope"] <= therapist["trend"]["ci_high"]
    assert therapist["trend"]["descriptive_only"]
    assert abs(stranger["trend"]["slope"]) < therapist["trend"]["slope"] / 3
    # The therapist partners are the ones who are followed too (one id, four sessions).
    assert report["longitudinal"]["participants"]["ther-1"]["by_partner_type"]["patient"]["series"]["cooperation"][
        "alpha"
    ]["plv"]["x"] == [1, 2, 3, 4]
    # The same values as the run on the XDF files (the JSONs are what it wrote).
    from_xdf = xdf_report["longitudinal"]["participants"]["pat-7"]["by_partner_type"]["therapist"]["series"][
        "cooperation"
    ]["alpha"]["plv"]
    assert from_xdf["y"] == pytest.approx(therapist["y"])
    z_report = run_group(patient_sessions, bands="alpha=8-12", metrics=["plv"], trend_value="z")
    z_trend = z_report["longitudinal"]["participants"]["pat-7"]["by_partner_type"]["therapist"]["series"][
        "cooperation"
    ]["alpha"]["plv"]["trend"]
    assert z_trend["slope"] > 0


def test_unreadable_input_is_skipped_with_its_name_or_stops_when_strict(patient, tmp_path):
    _, patient_sessions = patient
    broken = tmp_path / "broken.xdf"
    broken.write_bytes(b"this is not an XDF file")
    report = run_group([broken, *patient_sessions[:2]], bands="alpha=8-12", metrics=["plv"])
    assert [s["path"] for s in report["skipped"]] == [str(broken)]
    assert any(w.startswith("broken.xdf was skipped") for w in report["warnings"])
    assert len(report["sessions"]) == 2
    with pytest.raises(GroupError, match="broken.xdf"):
        run_group([broken, *patient_sessions[:2]], bands="alpha=8-12", metrics=["plv"], strict=True)
    twice = run_group([patient_sessions[0], patient_sessions[0]], bands="alpha=8-12", metrics=["plv"])
    assert any("given 2 times" in w for w in twice["warnings"])
    not_a_report = tmp_path / "other.json"
    not_a_report.write_text(json.dumps({"hello": 1}))
    with pytest.raises(GroupError, match="Only 1 of 2 input"):
        run_group([not_a_report, patient_sessions[0]], bands="alpha=8-12", metrics=["plv"])


def test_fewer_than_two_recordings_is_explained(coupled):
    _, _, _, paths = coupled
    with pytest.raises(GroupError, match="at least 2 recordings"):
        run_group(paths[:1])
    result = CliRunner().invoke(group, [str(paths[0])])
    assert result.exit_code == 2 and "pseudo-dyads pair participant A of one" in result.output


def test_mismatched_channel_sets_stop_the_analysis(coupled, tmp_path):
    _, _, _, paths = coupled
    wider = _write_session(
        tmp_path / "wider.xdf",
        dyad="d9",
        ids={"A": "x", "B": "y"},
        roles={"A": "patient", "B": "therapist"},
        session=1,
        coupling=0.0,
        seed=9,
        n_channels=3,
    )
    with pytest.raises(
        LayoutMismatchError, match=r"channels differ between dyad0.xdf .* wider.xdf.*only in the second \['Pz'\]"
    ):
        run_group([paths[0], wider], bands="alpha=8-12", metrics=["plv"], n_surrogates=0)


def test_one_dyad_only_has_no_pseudo_dyads(coupled):
    report, _, _, _ = coupled
    same = [dict(s, dyad="d0") for s in report["sessions"][:2]]
    with pytest.raises(GroupError, match="two different dyads"):
        real_vs_pseudo(same, [None, None], bands=["alpha"], metrics=["plv"], rng=np.random.default_rng(0))


def test_session_summary_rejects_other_json():
    with pytest.raises(GroupError, match="not a quick-check report"):
        session_summary({"file": {"name": "x"}}, source="x.json")


def test_trend_recovers_a_known_slope_and_refuses_too_few_points():
    fit = trend([1, 2, 3, 4, 5, 6], [0.1, 0.3, 0.5, 0.7, 0.9, 1.1])
    assert fit["slope"] == pytest.approx(0.2) and fit["ci_low"] == pytest.approx(0.2) and fit["descriptive_only"]
    short = trend([1, 2], [0.0, 1.0])
    assert short["slope"] is None and "at least 3" in short["note"]
    assert trend([1, 2, 3, 4], [0.0, None, 0.2, float("nan")])["n"] == 2


def _epochs_on_disk(folder, name, n_epochs, seed, unusable_b=()):
    """A SessionEpochs of independent random analytic epochs (2 channels per participant, 40 samples)."""
    rng = np.random.default_rng(seed)
    files = {}
    for side in ("a", "b"):
        path = folder / f"{name}.{side}.npy"
        np.save(
            path,
            (rng.standard_normal((n_epochs, 2, 40)) + 1j * rng.standard_normal((n_epochs, 2, 40))).astype(np.complex64),
        )
        files[side] = path
    return SessionEpochs(
        rate=250.0,
        labels_a=["C3", "C4"],
        labels_b=["C4", "C3"],
        usable_a={"C3", "C4"},
        usable_b={"C3", "C4"} - set(unusable_b),
        files={("task", "alpha"): (files["a"], files["b"])},
        n_epochs={"task": n_epochs},
    )


def test_pseudo_dyad_selection_channels_and_cap(tmp_path):
    """Who is paired with whom, on which channels, how many epochs, and --pseudo-max (synthetic epochs)."""
    ids = [("a0", "b0"), ("a1", "b1"), ("a2", "b2"), ("b0", "a3")]  # b0 is A in the last recording
    summaries = [
        {
            "file": f"r{k}.xdf",
            "study": "s",
            "dyad": f"d{k}",
            "session": "1",
            "participants": {"A": {"id": a}, "B": {"id": b}},
        }
        for k, (a, b) in enumerate(ids)
    ]
    epochs = [
        _epochs_on_disk(tmp_path, f"r{k}", n, seed=k, unusable_b=("C4",) if k == 2 else ())
        for k, n in enumerate((5, 6, 7, 8))
    ]
    full = real_vs_pseudo(summaries, epochs, bands=["alpha"], metrics=["plv"], rng=np.random.default_rng(0))
    entry = full["conditions"]["task"]
    pairs = {(p["a_from"], p["b_from"]): p["n_epochs"] for p in entry["pseudo_pairs"]}
    # 12 ordered pairs minus b0 with b0 (r3's A with r0's B: the same person).
    assert len(pairs) == 11 and ("r3.xdf", "r0.xdf") not in pairs
    assert pairs[("r0.xdf", "r3.xdf")] == 5 and pairs[("r2.xdf", "r3.xdf")] == 7  # truncated to the smaller count
    assert full["channels"] == {"A": ["C3", "C4"], "B": ["C3"]}  # C4 of B unusable in r2: left out everywhere
    assert entry["alpha"]["plv"]["p"] is not None and not entry["alpha"]["plv"]["significant"]
    capped = real_vs_pseudo(
        summaries, epochs, bands=["alpha"], metrics=["plv"], pseudo_max=5, rng=np.random.default_rng(0)
    )
    assert capped["conditions"]["task"]["n_pseudo"] == 5
    assert {(p["a_from"], p["b_from"]) for p in capped["conditions"]["task"]["pseudo_pairs"]} <= set(pairs)
    with pytest.raises(GroupError, match="No dyad was recorded in two or more sessions"):
        real_vs_pseudo(
            summaries, epochs, bands=["alpha"], metrics=["plv"], across_sessions=True, rng=np.random.default_rng(0)
        )
