"""Who takes part: ``--dyad``/``--participant``/``--roster`` reach the streams, the XDF header, the
file names and ``session.json``; a run that recorded nothing leaves its run number free; three
demo dyads make pseudo-dyads for ``dyadlab group``.

Real components: the protocol loader, the CLI, the coupled-dyad simulator behind real LSL
bridges, the in-process recorder, PsychoPy under Xvfb and pyxdf to read the files back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import pyxdf
import yaml
from click.testing import CliRunner

from dyadlab.acquisition.lslconfig import LslConfig
from dyadlab.protocols.cli import main
from dyadlab.protocols.identities import IdentityError, identity_overrides, parse_participant_option
from dyadlab.protocols.runner import PreflightFailed, SessionRunner
from dyadlab.protocols.schema import ProtocolError, load_protocol, resolve_output_stem

display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")


def _roster(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_participant_option_forms() -> None:
    assert parse_participant_option("A=sub-07") == ("A", {"id": "sub-07"})
    assert parse_participant_option("B=ther-01:therapist") == ("B", {"id": "ther-01", "role": "therapist"})
    for bad in ("A", "A=", "=sub-07", "B=ther-01:"):
        with pytest.raises(IdentityError, match="LABEL=ID"):
            parse_participant_option(bad)


def test_roster_rows_of_the_dyad_and_command_line_wins(tmp_path: Path) -> None:
    roster = _roster(
        tmp_path,
        "dyad,label,id,role\nD07,A,sub-07,patient\nD07,B,ther-01,therapist\nD08,A,sub-08,patient\n",
    )
    assert identity_overrides((), roster, "D07") == {
        "A": {"id": "sub-07", "role": "patient"},
        "B": {"id": "ther-01", "role": "therapist"},
    }
    people = identity_overrides(("B=ther-02",), roster, "D07")
    assert people["B"] == {"id": "ther-02", "role": "therapist"}
    with pytest.raises(IdentityError, match="no row for dyad 'D09'.*D07, D08"):
        identity_overrides((), roster, "D09")
    with pytest.raises(IdentityError, match="needs --dyad"):
        identity_overrides((), roster, None)
    with pytest.raises(IdentityError, match="lacks the column"):
        identity_overrides((), _roster(tmp_path, "dyad,person\nD07,sub-07\n"), "D07")
    with pytest.raises(IdentityError, match="twice"):
        identity_overrides(("A=x", "A=y"), None, None)


def test_ids_and_roles_replace_the_protocol_files(tmp_path: Path) -> None:
    loaded = load_protocol(
        "conversation",
        overrides={"dyad": "D07", "people": {"A": {"id": "ther-01"}, "B": {"id": "sub-07", "role": "client"}}},
    )
    people = {p.label: (p.id, p.role) for p in loaded.protocol.participants}
    assert people == {"A": ("ther-01", "therapist"), "B": ("sub-07", "client")}
    with pytest.raises(ProtocolError) as caught:
        load_protocol("demo", overrides={"people": {"C": {"id": "sub-09"}}})
    assert "no participant labelled 'C'" in str(caught.value)
    # Ids are validated like the file's own (they become stream ids and file names).
    with pytest.raises(ProtocolError, match="cannot be used in stream ids"):
        load_protocol("demo", overrides={"people": {"A": {"id": "../etc"}}})
    with pytest.raises(ProtocolError, match="used twice"):
        load_protocol("demo", overrides={"people": {"A": {"id": "sub-07"}, "B": {"id": "sub-07"}}})


def test_output_pattern_may_name_the_participants(tmp_path: Path) -> None:
    data = yaml.safe_load(Path("protocols/bundled/demo.yaml").read_text())
    data["output"] = {"pattern": "{dyad}/{id_A}_{id_B}_run-{run:02d}"}
    path = tmp_path / "named.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_protocol(path, overrides={"dyad": "D07", "people": {"A": {"id": "sub-07"}, "B": {"id": "ther-01"}}})
    assert resolve_output_stem(loaded.protocol, 3) == Path("D07/sub-07_ther-01_run-03")


def test_cli_refuses_a_bad_participant_value_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "out"), "--participant", "A:sub-07"])
    assert result.exit_code == 2, result.output
    assert "LABEL=ID" in result.output
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "out"), "--participant", "Z=sub-07"])
    assert result.exit_code == 2, result.output
    assert "no participant labelled 'Z'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@display
def test_preflight_failure_leaves_the_run_number_free(tmp_path: Path) -> None:
    """A noise limit no simulated channel meets (0.001 µV) fails preflight: nothing is recorded,
    the attempt's record is kept aside, and the next run still gets run-01."""
    data = yaml.safe_load(Path("protocols/bundled/demo.yaml").read_text())
    data["blocks"] = [{"id": "rest", "task": "rest", "params": {"duration_s": 2.0, "show_instructions": False}}]
    data["preflight"] = {"enabled": True, "seconds": 1, "noisy_std_uv": 0.001}
    data["quickcheck"] = {"enabled": False}
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    runner = SessionRunner(load_protocol(path), out_dir=out, simulate=True, autopilot=True, lsl_config=LslConfig())
    with pytest.raises(PreflightFailed, match="nothing was recorded"):
        runner.run()
    folder = out / "sub-D01" / "ses-01"
    assert not list(folder.glob("*.xdf")) and not list(folder.glob("*_session.json"))
    attempts = list(folder.glob("sub-D01_ses-01_task-demo_run-01_not-recorded_*.json"))
    assert len(attempts) == 1
    record = json.loads(attempts[0].read_text())
    assert record["failed_stage"] == "preflight" and record["preflight"]["ready"] is False
    assert runner.output_stem().name == "sub-D01_ses-01_task-demo_run-01"


def _xdf_identities(xdf: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The file header's fields and each EEG stream's (participant id, role) by label, via pyxdf;
    the marker and response streams name the same people (their events say only A or B)."""
    streams, header = pyxdf.load_xdf(str(xdf))
    info = {key: values[0] for key, values in header["info"].items() if values and isinstance(values[0], str)}
    people = {}
    for stream in streams:
        if stream["info"]["type"][0] != "EEG":
            continue
        person = stream["info"]["desc"][0]["participant"][0]
        people[person["label"][0]] = (person["id"][0], person["role"][0])
    for stream in streams:
        if stream["info"]["type"][0] == "Markers" and stream["info"]["name"][0].endswith(("-Markers", "-Responses")):
            listed = stream["info"]["desc"][0]["participants"][0]["participant"]
            named = {p["label"][0]: (p["id"][0], p["role"][0]) for p in listed}
            assert named == people, (stream["info"]["name"][0], named, people)
    return info, people


def _assert_live_speech_matches_offline(xdf: Path, speech_tsv: Path) -> None:
    """The demo's live speech detector (a session helper, its stream recorded) put each
    ``speech_on`` on the frame where the quick-check's offline detection starts that person's
    speech (the same 10-ms frames; a live event may lack its offline twin only at the recording's
    edges, where the two see different audio)."""
    streams, _ = pyxdf.load_xdf(str(xdf), dejitter_timestamps=False)
    live = next(s for s in streams if s["info"]["name"][0] == "dyadlab-live-speech")
    onsets = [
        (event["participant"], float(t))
        for t, (text,) in zip(live["time_stamps"], live["time_series"])
        if (event := json.loads(text))["event"] == "speech_on"
    ]
    offline = pd.read_csv(speech_tsv, sep="\t")
    offline = offline[offline.event == "speech"]
    matched = [any(abs(offline[offline.participant == who].onset - t) <= 0.011) for who, t in onsets]
    assert len(onsets) >= 2 and sum(matched) >= len(onsets) - 1, (onsets, offline)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)  # three demos with their quick-check reports, then the group analysis
@display
def test_three_demo_dyads_make_pseudo_dyads(tmp_path: Path) -> None:
    """Three ``dyadlab demo`` runs with their own dyad and people (speed 10: about a minute each,
    most of it the quick-check) carry their ids into every file, and ``dyadlab group`` pairs A of
    one dyad with B of another."""
    out = tmp_path / "out"
    dyads = {
        "D07": ("sub-07", "ther-01:therapist"),
        "D08": ("sub-08", "ther-02:therapist"),
        "D09": ("sub-09", "ther-01:therapist"),
    }
    xdfs = []
    for dyad, (a, b) in dyads.items():
        command = [sys.executable, "-m", "dyadlab", "demo", "--out", str(out), "--speed", "10", "--dyad", dyad]
        command += ["--participant", f"A={a}", "--participant", f"B={b}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
        stem = out / f"sub-{dyad}" / "ses-01" / f"sub-{dyad}_ses-01_task-demo_run-01"
        xdf = stem.with_name(stem.name + ".xdf")
        header, people = _xdf_identities(xdf)
        b_id, b_role = b.split(":")
        assert people == {"A": (a, "participant"), "B": (b_id, b_role)}
        assert (header["dyad"], header["participant_A"], header["participant_B"], header["role_B"]) == (
            dyad,
            a,
            b_id,
            b_role,
        )
        session = json.loads(stem.with_name(stem.name + "_session.json").read_text())
        assert session["dyad"] == dyad
        assert {p["label"]: (p["id"], p["role"]) for p in session["participants"]} == people
        check = json.loads(stem.with_name(stem.name + "_quickcheck.json").read_text())
        assert {label: check["participants"][label]["participant"]["id"] for label in "AB"} == {"A": a, "B": b_id}
        # The simulated boards have a marker channel: the check measures markers against it and
        # does not fall back to "aligned by LSL timestamps alone" (that note is for LSL amplifiers).
        assert all(check["quality"][label]["marker_residuals"]["matched"] > 0 for label in "AB")
        assert "LSL timestamps alone" not in " ".join(check["timing_verification"]["notes"])
        _assert_live_speech_matches_offline(xdf, stem.with_name(stem.name + "_speech.tsv"))
        xdfs.append(xdf)

    report = tmp_path / "group.json"
    done = subprocess.run(
        [sys.executable, "-m", "dyadlab", "group", *map(str, xdfs), "--json", str(report), "--surrogates", "20"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert not result["skipped"], result["skipped"]
    assert sorted(s["dyad"] for s in result["sessions"]) == sorted(dyads)
    assert {s["participants"]["A"]["id"] for s in result["sessions"]} == {"sub-07", "sub-08", "sub-09"}
    pseudo = result["real_vs_pseudo"]
    assert pseudo["available"], pseudo.get("reason")
    # Three dyads give 3 x 2 = 6 pairings of A of one with B of another per condition. ther-01 sat
    # with sub-07 (D07) and with sub-09 (D09): A of D07 with B of D09, and A of D09 with B of D07,
    # are people who really interacted, which group leaves out -- it can only know that from the
    # ids this run wrote. So 4 pseudo-dyads, each A of D08 or with B of D08.
    assert pseudo["conditions"], "pseudo-dyads in at least one condition"
    files = {s["dyad"]: s["file"] for s in result["sessions"]}
    expected = {(files[a], files[b]) for a, b in (("D07", "D08"), ("D08", "D07"), ("D08", "D09"), ("D09", "D08"))}
    for condition, entry in pseudo["conditions"].items():
        assert entry["n_real"] == 3, condition
        assert {(p["a_from"], p["b_from"]) for p in entry["pseudo_pairs"]} == expected, condition
    # ther-01 sits in two dyads: the longitudinal view follows that id across its sessions.
    assert "ther-01" in result["longitudinal"]["participants"]
