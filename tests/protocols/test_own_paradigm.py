"""The lab's own paradigms: loaded from a file, a module or an entry point, checked, run end to end.

Real components: `dyadlab new-paradigm` writes the example, its own test runs in a pytest
subprocess, and `dyadlab run --simulate --autopilot` runs it (simulated EEG, PsychoPy windows
under Xvfb, XTEST key presses, recorder, quick-check) from a protocol in another folder than the
paradigm and the working directory. `dyadlab preview` renders every screen for both participants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pyxdf
import yaml
from PIL import Image

from dyadlab.protocols.new_paradigm import scaffold_files
from dyadlab.protocols.schema import ProtocolError, load_protocol, paradigms
from dyadlab.tasks.paradigms import ParadigmLoadError, validate_params
from tests.protocols.test_session_e2e import check_responses_match_csv

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")

_LAB_PARADIGM = """
from typing import ClassVar
from pydantic import Field
from dyadlab.tasks.paradigms import Paradigm, ParadigmParams


class CountParams(ParadigmParams):
    n_items: int = Field(3, ge=1, le=10)


class Count(Paradigm[CountParams]):
    name: ClassVar[str] = "{name}"
    Params: ClassVar[type[ParadigmParams]] = CountParams

    def conditions(self, params):
        return ["{name}"]

    def run(self, ctx, params, block_id):
        raise NotImplementedError


class NotAParadigm:
    pass
"""


def _protocol(tmp_path: Path, blocks: list[dict], folder: str = "protocols", **changes: object) -> Path:
    data = {
        "version": 1,
        "name": "own",
        "study": "lab",
        "dyad": "D01",
        "participants": [
            {"label": "A", "id": "sub-01", "role": "participant", "device": {"board": "simulator"}},
            {"label": "B", "id": "sub-02", "role": "participant", "device": {"board": "simulator"}},
        ],
        "screens": {"layout": "shared", "fullscreen": False, "size": [800, 600], "check_timing": False},
        "blocks": blocks,
        **changes,
    }
    path = tmp_path / folder / "protocol.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _issues(path: Path) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    return [f"{issue.field}: {issue.message}; {issue.fix}" for issue in caught.value.issues]


def test_a_file_beside_the_protocol_is_a_paradigm_with_validated_params(tmp_path: Path) -> None:
    (tmp_path / "protocols" / "lab").mkdir(parents=True)
    (tmp_path / "protocols" / "lab" / "counting.py").write_text(_LAB_PARADIGM.format(name="counting"))
    path = _protocol(tmp_path, [{"task": "lab/counting.py:Count", "params": {"n_items": 5}}])
    loaded = load_protocol(path)  # the working directory is not the protocol's folder
    paradigm = paradigms()["lab/counting.py:Count"]
    assert paradigm.name == "counting"
    assert loaded.protocol.block_ids() == ["counting-1"]  # ids use the paradigm's name, not the reference
    assert validate_params("lab/counting.py:Count", {"n_items": 5}).n_items == 5  # type: ignore[attr-defined]
    # the same parameter validation as a bundled paradigm, with the line of the problem
    bad = _protocol(tmp_path, [{"task": "lab/counting.py:Count", "params": {"n_items": 0}}])
    assert any(issue.startswith("blocks[0].params.n_items") for issue in _issues(bad))


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("lab/missing.py:Count", "no file 'lab/missing.py'"),
        ("lab/counting.py:Counter", "has no 'Counter'"),
        ("lab/counting.py:NotAParadigm", "is not a paradigm class"),
        ("lab/clash.py:Count", "is the name of a bundled paradigm"),
        ("lab/broken.py:Count", "failed while loading (ZeroDivisionError"),
        ("no_such_lab_module:Count", "cannot be imported"),
        ("counting", "unknown task 'counting'"),
    ],
)
def test_a_paradigm_that_cannot_be_used_is_a_protocol_error_saying_why(
    tmp_path: Path, task: str, expected: str
) -> None:
    lab = tmp_path / "protocols" / "lab"
    lab.mkdir(parents=True)
    (lab / "counting.py").write_text(_LAB_PARADIGM.format(name="counting"))
    (lab / "clash.py").write_text(_LAB_PARADIGM.format(name="rest"))
    (lab / "broken.py").write_text("1 / 0\n")
    issues = _issues(_protocol(tmp_path, [{"task": task}]))
    assert len(issues) == 1 and issues[0].startswith("blocks[0].task:"), issues
    assert expected in issues[0], issues


def test_a_module_and_an_installed_entry_point_are_paradigms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path (dist-info with entry_points.txt), as `pip install` leaves it."""
    site = tmp_path / "site"
    (site / "mylab_tasks").mkdir(parents=True)
    (site / "mylab_tasks" / "__init__.py").write_text("")
    (site / "mylab_tasks" / "counting.py").write_text(_LAB_PARADIGM.format(name="lab-count"))
    info = site / "mylab_tasks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab-tasks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dyadlab.paradigms]\nlab-count = mylab_tasks.counting:Count\n")
    monkeypatch.syspath_prepend(str(site))
    registry = paradigms()
    assert "lab-count" in list(registry), "an entry point is listed with the bundled paradigms"
    assert registry["lab-count"] is registry["mylab_tasks.counting:Count"]
    loaded = load_protocol(_protocol(tmp_path, [{"task": "lab-count"}, {"task": "mylab_tasks.counting:Count"}]))
    assert loaded.protocol.block_ids() == ["lab-count-1", "lab-count-2"]
    with pytest.raises(ParadigmLoadError, match="unknown task 'lab-counter'"):
        registry["lab-counter"]


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@needs_display
@pytest.mark.integration
@pytest.mark.slow
def test_new_paradigm_passes_its_own_test_then_runs_as_a_session(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    made = _run([sys.executable, "-m", "dyadlab", "new-paradigm", "mirror-go", "--out", str(lab)], tmp_path)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in lab.iterdir()) == ["mirror_go.py", "mirror_go_pilot.yaml", "test_mirror_go.py"]
    again = _run([sys.executable, "-m", "dyadlab", "new-paradigm", "mirror-go", "--out", str(lab)], tmp_path)
    assert again.returncode != 0 and "not overwriting" in again.stderr + again.stdout

    own_test = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mirror_go.py"], lab)
    assert own_test.returncode == 0, own_test.stdout[-3000:]
    assert "3 passed" in own_test.stdout

    # The pilot protocol, moved to its own folder, names the paradigm file relative to itself.
    pilot = yaml.safe_load((lab / "mirror_go_pilot.yaml").read_text())
    pilot["blocks"][0]["duration"] = 6
    pilot["blocks"][1]["task"] = "../lab/mirror_go.py:MirrorGo"
    pilot["blocks"][1]["params"]["n_trials"] = 4
    pilot["quickcheck"]["surrogates"] = 20
    protocol = tmp_path / "protocols" / "pilot.yaml"
    protocol.parent.mkdir()
    protocol.write_text(yaml.safe_dump(pilot, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    session = _run(
        [
            sys.executable,
            "-m",
            "dyadlab",
            "run",
            str(protocol),
            "--simulate",
            "--autopilot",
            "--speed",
            "5",
            "--out",
            str(out),
        ],
        elsewhere,
    )
    assert session.returncode == 0, session.stdout[-3000:] + session.stderr[-3000:]

    xdf = next(out.rglob("*.xdf"))
    streams, _ = pyxdf.load_xdf(str(xdf))
    by_kind = {s["info"]["desc"][0]["dyadlab"][0]["kind"][0]: s for s in streams if s["info"]["desc"][0]}
    markers = [json.loads(sample[0]) for sample in by_kind["markers"]["time_series"]]
    own = [m for m in markers if m["task"] == "mirror-go"]
    starts = [m for m in own if m["event"] == "block_start"]
    assert [(m["block"], m["condition"]) for m in starts] == [("mirror-go", "mirror-go")]
    assert sum(m["event"] == "go" for m in own) == 4
    assert [m["value"] for m in own if m["event"] == "block_end"] == ["complete"]

    csv = pd.read_csv(next(out.rglob("*_beh.csv")), encoding="utf-8-sig")
    rows = csv[csv["task"] == "mirror-go"]
    assert list(rows["trial"]) == [0, 1, 2, 3]
    responses = {"responses": by_kind["responses"]}
    result = type("Result", (), {"files": {"behaviour": next(out.rglob("*_beh.csv"))}})()
    assert check_responses_match_csv(result, responses) >= 4  # type: ignore[arg-type]
    # every response time in the CSV comes after its trial's go flip, by the RT the CSV states (2 ms)
    go_stamps = np.asarray(
        [
            t
            for m, t in zip(markers, by_kind["markers"]["time_stamps"])
            if m["task"] == "mirror-go" and m["event"] == "go"
        ]
    )
    for label in ("A", "B"):
        answered = rows[f"response_lsl_time_{label}"].notna()
        lag = rows.loc[answered, f"response_lsl_time_{label}"].to_numpy() - go_stamps[answered.to_numpy()]
        assert np.all(np.abs(lag - rows.loc[answered, f"rt_{label}"].to_numpy()) < 0.002)

    record = json.loads(next(out.rglob("*_session.json")).read_text())
    own_block = next(b for b in record["blocks"] if b["id"] == "mirror-go")
    assert own_block["status"] == "completed" and own_block["task"] == "../lab/mirror_go.py:MirrorGo"
    report = json.loads(next(out.rglob("*_quickcheck.json")).read_text())
    assert "mirror-go" in report["conditions"], "the quick-check analyses the lab's condition like a bundled one"
    assert "mirror-go" in next(out.rglob("*_quickcheck.html")).read_text()


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=float)


@needs_display
@pytest.mark.integration
def test_preview_saves_every_screen_for_both_participants(tmp_path: Path) -> None:
    (tmp_path / "protocols").mkdir()
    (tmp_path / "protocols" / "counting_go.py").write_text(scaffold_files("counting-go")["counting_go.py"])
    path = _protocol(
        tmp_path,
        [
            {"id": "rest", "task": "rest", "duration": 60},
            {"id": "coop", "task": "joint-press", "params": {"mode": "cooperation", "n_trials": 20}},
            {"id": "talk", "task": "conversation", "params": {"mode": "structured"}},
            {"id": "go", "task": "counting_go.py:CountingGo", "params": {"n_trials": 30}},
        ],
        screens={"layout": "per-participant", "fullscreen": False, "size": [800, 600], "check_timing": False},
    )
    out = tmp_path / "preview"
    done = _run([sys.executable, "-m", "dyadlab", "preview", str(path), "--out", str(out)], tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["01-rest", "02-coop", "03-talk", "04-go"]
    for folder in out.iterdir():
        a_files = sorted(p.name.removesuffix("_A.png") for p in folder.glob("*_A.png"))
        b_files = sorted(p.name.removesuffix("_B.png") for p in folder.glob("*_B.png"))
        assert a_files and a_files == b_files, f"{folder.name}: every screen for both participants"
        for stem in a_files:
            assert _pixels(folder / f"{stem}_A.png").std() > 2.0, f"{folder.name}/{stem}_A.png is blank"
    screens = {p.relative_to(out).as_posix() for p in out.rglob("*_A.png")}
    # the screens of every trial of a block are shown once (not once per trial), named after the screen or marker
    assert {
        "02-coop/joint-press_go_A.png",
        "02-coop/joint-press_fixation_A.png",
        "04-go/counting-go_go_A.png",
    } <= screens
    # where the two seats see different things, the two files differ (speaker / listener)
    turn_a, turn_b = (
        _pixels(out / "03-talk" / "conversation_turn_A.png"),
        _pixels(out / "03-talk" / "conversation_turn_B.png"),
    )
    assert np.mean(np.abs(turn_a - turn_b) > 30) > 0.002
    assert "screenshots of 4 block(s)" in done.stdout
    # on one shared screen both participants see the same picture: _A and _B are that picture
    shared = _protocol(tmp_path, [{"id": "go", "task": "counting_go.py:CountingGo", "params": {"n_trials": 2}}])
    done = _run([sys.executable, "-m", "dyadlab", "preview", str(shared), "--out", str(tmp_path / "shared")], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    pairs = sorted((tmp_path / "shared" / "01-go").glob("*_A.png"))
    assert [p.name for p in pairs] == [
        "counting-go_feedback_A.png",
        "counting-go_fixation_A.png",
        "counting-go_go_A.png",
        "counting-go_instructions_A.png",
    ]
    for a in pairs:
        assert a.read_bytes() == a.with_name(a.name.replace("_A.png", "_B.png")).read_bytes()
