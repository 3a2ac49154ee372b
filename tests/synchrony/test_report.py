"""The quick-check report tells the session's story, and the same file gives the same numbers.

* The simulated ``demo`` session, run by the real session runner (coupled-dyad simulator,
  autopilot key presses, PsychoPy under Xvfb), is checked in-session; its report is opened in
  headless Chromium and the screenshot is kept under ``test-artifacts/report/``. Every section
  is there with its figure, the behaviour of each paradigm is summarised, and ``dyadlab check``
  on the same file reproduces the in-session numbers (one default seed).
* The behavioural summary against values computed by hand from constructed markers.
* Contrasts between every two task conditions, labelled matrices, topographic maps or the
  sentence that says why not, and the terminal's explanation of a timing CHECK, on XDF files
  written by ``xdf_fixtures``.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from dyadlab.synchrony import figures as figs
from dyadlab.synchrony.behaviour import summarise_behaviour
from dyadlab.synchrony.check import DEFAULT_SEED, run_check
from dyadlab.synchrony.io import EventMarker
from dyadlab.synchrony.report import SECTIONS
from dyadlab.synchrony.results import QuickCheckResult, load_result
from dyadlab.synchrony.verdict import one_line
from tests.synchrony.xdf_fixtures import T0, DyadSpec, write_dyad_xdf

#: Sections that hold a figure in a report made by a check (not read back from JSON).
FIGURE_SECTIONS = ("timeline", "over-time", "matrices", "topographies", "spectra", "traces", "nulls")
THREE_CONDITIONS = DyadSpec(
    blocks=[("rest", 60.0), ("cooperation", 60.0), ("competition", 60.0)],
    coupled={"cooperation": (9.0, 11.0, 5.0)},
    seed=5,
)


def _section(page: str, key: str) -> str:
    """The HTML between section ``key``'s heading and the next heading."""
    start = page.index(f"<h2 id='{key}'>")
    following = page.find("<h2 id=", start + 1)
    return page[start : following if following >= 0 else len(page)]


# --------------------------------------------------------------------------- behaviour


def _marker(time: float, event: str, block: str, **fields: Any) -> EventMarker:
    payload = {"event": event, "block": block, "condition": block, "task": block, **fields}
    return EventMarker(time=time, text=json.dumps(payload), fields=payload, stream="markers")


def test_joint_press_summary_counts_outcomes_and_reaction_times():
    outcomes = [
        {
            "mode": "cooperation",
            "rt": {"A": 0.40, "B": 0.45},
            "threshold": 0.2,
            "difference": 0.05,
            "outcome": "success",
        },
        {
            "mode": "cooperation",
            "rt": {"A": 0.30, "B": 0.60},
            "threshold": 0.18,
            "difference": 0.30,
            "outcome": "failure",
        },
        {
            "mode": "cooperation",
            "rt": {"A": 0.50, "B": None},
            "threshold": 0.198,
            "difference": None,
            "outcome": "missing",
        },
        {
            "mode": "cooperation",
            "rt": {"A": 0.35, "B": 0.37},
            "threshold": 0.2178,
            "difference": 0.02,
            "outcome": "success",
        },
    ]
    markers = [_marker(100.0, "block_start", "coop")]
    markers += [_marker(101.0 + 5 * i, "feedback", "coop", value=o) for i, o in enumerate(outcomes)]
    [summary] = summarise_behaviour(markers, [], origin=90.0)
    m = summary["measures"]
    assert summary["paradigm"] == "joint-press cooperation" and summary["start_s"] == 10.0
    assert (m["trials"], m["successes"], m["missing_responses"]) == (4, 2, 1)
    assert m["success_rate"] == 0.5
    assert m["median_abs_rt_difference_ms"] == pytest.approx(1000 * np.median([0.05, 0.30, 0.02]))
    assert m["median_rt_A_ms"] == pytest.approx(1000 * np.median([0.40, 0.30, 0.50, 0.35]))
    assert m["median_rt_B_ms"] == pytest.approx(1000 * np.median([0.45, 0.60, 0.37]))
    assert m["last_threshold_ms"] == pytest.approx(217.8)

    competition = [{"mode": "competition", "rt": {"A": 0.3, "B": 0.4}, "winner": "A", "outcome": "winner"}] * 3
    competition += [{"mode": "competition", "rt": {"A": 0.5, "B": 0.4}, "winner": "B", "outcome": "winner"}]
    markers = [_marker(200.0 + i, "feedback", "comp", value=o) for i, o in enumerate(competition)]
    [summary] = summarise_behaviour(markers, [], origin=0.0)
    assert summary["paradigm"] == "joint-press competition"
    assert (summary["measures"]["wins_A"], summary["measures"]["wins_B"]) == (3, 1)


def test_tapping_summary_measures_asynchrony_and_continuation_timing():
    """Taps with known offsets from the pacer flashes: the summary returns those offsets."""
    period, ticks = 0.6, 12
    flashes = 10.0 + period * np.arange(ticks)
    switch = flashes[-1] + period
    rng = np.random.default_rng(3)
    offsets = {"A": -0.030 + rng.normal(0, 0.015, ticks), "B": 0.010 + rng.normal(0, 0.015, ticks)}
    continuation = {p: switch + 0.62 * np.arange(1, 11) + rng.normal(0, 0.01, 10) for p in ("A", "B")}
    markers = [_marker(9.0, "block_start", "tap"), _marker(switch, "cue", "tap", value={"phase": "continuation"})]
    markers += [_marker(t, "pacer", "tap", value={"tick": k}) for k, t in enumerate(flashes)]
    markers += [_marker(switch + 8.0, "block_end", "tap")]
    responses = [_marker(8.5, "response", "tap", participant="A")]  # on the instruction screen: ignored
    for p in ("A", "B"):
        responses += [_marker(t, "response", "tap", participant=p) for t in flashes + offsets[p]]
        responses += [_marker(t, "response", "tap", participant=p) for t in continuation[p]]
    responses.sort(key=lambda m: m.time)
    [summary] = summarise_behaviour(sorted(markers, key=lambda m: m.time), responses, origin=0.0)
    m = summary["measures"]
    assert summary["paradigm"] == "tapping"
    assert m["pacer_period_ms"] == pytest.approx(600.0)
    for p in ("A", "B"):
        assert m[f"taps_{p}"] == ticks + 10
        assert m[f"mean_asynchrony_to_pacer_{p}_ms"] == pytest.approx(1000 * offsets[p].mean())
        assert m[f"sd_asynchrony_to_pacer_{p}_ms"] == pytest.approx(1000 * offsets[p].std(ddof=1))
        intervals = np.diff(continuation[p])
        assert m[f"mean_continuation_interval_{p}_ms"] == pytest.approx(1000 * intervals.mean())
        assert m[f"cv_continuation_interval_{p}"] == pytest.approx(intervals.std(ddof=1) / intervals.mean())
    # Each of A's taps to B's nearest one (all A-B pairs are within half a period here).
    a_taps = np.concatenate([flashes + offsets["A"], continuation["A"]])
    b_taps = np.sort(np.concatenate([flashes + offsets["B"], continuation["B"]]))
    nearest = np.array([b_taps[np.argmin(np.abs(b_taps - t))] for t in a_taps])
    assert m["median_abs_asynchrony_A_to_B_ms"] == pytest.approx(1000 * np.median(np.abs(a_taps - nearest)))


# --------------------------------------------------------------------------- contrasts, figures, terminal


@pytest.fixture(scope="module")
def three_conditions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three")
    path = write_dyad_xdf(folder / "session.xdf", THREE_CONDITIONS)
    result = run_check(path, n_surrogates=60, json_out=folder / "qc.json", html_out=folder / "qc.html", progress=False)
    return path, result, folder


def test_every_two_task_conditions_are_contrasted(three_conditions):
    """Coupling in cooperation only: cooperation differs from rest and from competition in alpha,
    competition from rest in nothing; one FDR family over all contrasts of a metric."""
    _, result, _ = three_conditions
    contrasts = result["contrasts"]
    assert contrasts["pairs"] == {
        "cooperation-vs-rest": ["cooperation", "rest"],
        "competition-vs-rest": ["competition", "rest"],
        "cooperation-vs-competition": ["cooperation", "competition"],
    }
    between = contrasts["cooperation-vs-competition"]["alpha"]["plv"]
    # 6 runs of 10 s per condition: the smallest two-sided p is 2 / C(12, 6) = 0.002.
    assert between["difference"] > 0.05 and between["p"] < 0.01 and between["p_fdr"] < 0.05
    assert contrasts["competition-vs-rest"]["alpha"]["plv"]["p_fdr"] > 0.05
    family = [contrasts[name][band]["plv"] for name in contrasts["pairs"] for band in result["inputs"]["bands"]]
    assert all(cell["p"] <= cell["p_fdr"] for cell in family)
    # The difference is first minus second: the two contrasts against rest make up the one between.
    against_rest = {c: contrasts[f"{c}-vs-rest"]["alpha"]["plv"]["difference"] for c in ("cooperation", "competition")}
    assert between["difference"] == pytest.approx(against_rest["cooperation"] - against_rest["competition"], abs=1e-9)
    page = (three_conditions[2] / "qc.html").read_text()
    assert "cooperation − competition" in _section(page, "contrasts")


def test_default_seed_gives_the_same_numbers_on_every_run(three_conditions):
    from dyadlab.synchrony.cli import check

    path, result, folder = three_conditions
    assert result["inputs"]["seed"] == DEFAULT_SEED
    seed_option = next(p for p in check.params if p.name == "seed")
    assert seed_option.default == DEFAULT_SEED, "dyadlab check and run_check must share one default seed"
    again = run_check(path, n_surrogates=60, progress=False)
    assert again["conditions"] == result["conditions"] and again["contrasts"] == result["contrasts"]


def test_report_sections_link_the_json_and_show_no_raw_json(three_conditions):
    _, _, folder = three_conditions
    page = (folder / "qc.html").read_text()
    headings = re.findall(r"<h2 id='([^']+)'>([^<]+)</h2>", page)
    assert headings == [(key, html.escape(name)) for key, name in SECTIONS]
    for key in FIGURE_SECTIONS:
        assert "<img" in _section(page, key), key
    assert "<pre" not in page and '"schema_version"' not in page
    assert "href='qc.json'" in page
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert all(ref.startswith(("data:image/png;base64,", "#")) or ref == "qc.json" for ref in references)


def test_matrices_are_labelled_and_topographies_placed_by_standard_names(three_conditions):
    _, _, folder = three_conditions
    result = load_result(folder / "qc.json")
    labels = result.participants["A"].channels
    figure = figs.matrices_figure(result, "plv")
    panels = [ax for ax in figure.axes if ax.get_images()]
    assert len(panels) == len(result.conditions) * len(result.inputs.bands)
    for ax in panels:
        assert [t.get_text() for t in ax.get_yticklabels()] == labels
        assert [t.get_text() for t in ax.get_xticklabels()] == result.participants["B"].channels
        assert ax.title.get_fontsize() >= 9 and " · " in ax.get_title()
    # Fz, Cz, Pz, Oz, C3, C4, P3, P4 are 10-20 names: a map per condition, band and participant.
    topomap, why = figs.topomap_figure(result, "plv")
    assert topomap is not None and why == ""
    maps = [ax for ax in topomap.axes if ax.images]
    assert len(maps) == len(result.conditions) * len(result.inputs.bands) * 2
    # Labels that are not 10-20 names: no map, and a sentence that says why.
    renamed = result.model_copy(deep=True)
    for label in ("A", "B"):
        renamed.participants[label].channels = [f"E{i + 1}" for i in range(len(labels))]
    topomap, why = figs.topomap_figure(renamed, "plv")
    assert topomap is None and "10-20/10-10 names" in why and "E1" in why


def test_report_from_the_json_alone_says_what_is_missing(three_conditions):
    """``render_html`` on a result read back from JSON (no figure data) still gives every section."""
    from dyadlab.synchrony.report import ReportFigures, render_html

    _, _, folder = three_conditions
    page = render_html(load_result(folder / "qc.json"), ReportFigures())
    assert all(f"<h2 id='{key}'>" in page for key, _ in SECTIONS)
    assert "made from the JSON alone" in _section(page, "timeline")
    assert "<img" in _section(page, "matrices")  # the matrices are in the JSON


def test_timeline_shows_the_gap_and_the_epochs_it_spoiled(tmp_path, monkeypatch):
    """B's first two channels NaN from 30 to 33 s: the timeline's invalid stretch covers it, the
    epochs across it are marked invalid, and no epoch that overlaps it is used."""
    from dyadlab.synchrony import check as check_mod

    captured = {}
    write = check_mod.write_outputs

    def keep_figures(result, figures, json_out, html_out):  # a spy: the real writer runs
        captured["figures"] = figures
        write(result, figures, json_out, html_out)

    monkeypatch.setattr(check_mod, "write_outputs", keep_figures)
    spec = DyadSpec(blocks=[("rest", 30.0), ("cooperation", 30.0)], nan_b=(30.0, 33.0))
    path = write_dyad_xdf(tmp_path / "gap.xdf", spec)
    result = run_check(path, n_surrogates=0, html_out=tmp_path / "qc.html", progress=False)
    events = captured["figures"].timeline
    nan_from = 30.0 - (result["alignment"]["start"] - T0)  # B's NaN stretch in seconds from the grid start
    [(first, last)] = events.invalid_spans
    # One grid sample (4 ms at 250 Hz) either way.
    assert first == pytest.approx(nan_from, abs=0.005) and last == pytest.approx(nan_from + 3.0, abs=0.005)
    epoch = result["inputs"]["epoch_length_s"]
    overlapping = (events.epoch_starts < last) & (events.epoch_starts + epoch > first)
    assert overlapping.any() and set(events.epoch_status[overlapping]) == {"invalid"}
    assert (events.epoch_status == "used").sum() == sum(e["used"] for e in result["segmentation"]["epochs"].values())


def test_timing_check_is_explained_in_the_terminal(tmp_path):
    """Board markers 40 ms after the LSL markers (limit 10 ms): the one-line summary that the
    in-session terminal prints, and `dyadlab check`'s panel, say why timing is CHECK."""
    from dyadlab.synchrony.cli import check

    spec = DyadSpec(blocks=[("rest", 20.0), ("cooperation", 20.0)], board_marker_delay=0.04)
    path = write_dyad_xdf(tmp_path / "late.xdf", spec)
    outcome = CliRunner().invoke(check, [str(path), "--surrogates", "0", "--no-progress"], env={"COLUMNS": "250"})
    assert outcome.exit_code == 0, outcome.output
    assert "timing: CHECK" in outcome.output
    assert re.search(r"Timing CHECK: .*marker.* 4\d\.\d ms", outcome.output), outcome.output
    result = run_check(path, n_surrogates=0, progress=False)
    assert re.search(r"timing CHECK \(.*marker.* 4\d\.\d ms", one_line(result["verdict"]))


# --------------------------------------------------------------------------- real EEG

EEGLAB = Path(__file__).resolve().parents[1] / "data" / "eeglab" / "eeglab_data.set"
#: The EEGLAB recording's channels that are 10-20 names (its EOG channels left out).
EEGLAB_CHANNELS = ["FPz", "F3", "Fz", "F4", "FC1", "FC2", "C3", "Cz", "C4", "CP1", "CP2", "P3", "Pz", "P4", "POz", "Oz"]


def test_real_eeg_report_shows_its_spectra_mains_and_scalp_maps(tmp_path):
    """The EEGLAB tutorial recording's two halves as A and B (128 Hz, a real 60 Hz peak).

    The spectra figure plots what scipy's Welch gives (2-s Hann windows, half overlap, linear
    detrend; the recording is short enough, < 91 s, for every window to be used) to within
    0.05 dB (float32 samples in the file), marks 60 Hz as the mains found in each participant,
    and the scalp maps place the 10-20 labels at MNE's own montage positions.
    """
    mne = pytest.importorskip("mne")
    from scipy import signal

    from tests.synchrony.xdf_fixtures import _session_timeline, write_session_xdf

    raw = mne.io.read_raw_eeglab(EEGLAB, preload=True, verbose="error")
    rate = raw.info["sfreq"]
    duration, events = _session_timeline([("rest", 40.0), ("cooperation", 40.0)])
    n = int(duration * rate)
    data = raw.get_data(picks=EEGLAB_CHANNELS) * 1e6
    a, b = data[:, :n], data[:, n : 2 * n]
    path = write_session_xdf(tmp_path / "real.xdf", a, b, EEGLAB_CHANNELS, events, DyadSpec(rate_a=rate, rate_b=rate))
    result = run_check(
        path, n_surrogates=20, json_out=tmp_path / "qc.json", html_out=tmp_path / "qc.html", progress=False
    )
    typed = QuickCheckResult.model_validate(result)
    assert typed.quality.A.channels.line_frequency_hz == 60.0 and typed.quality.B.channels.line_frequency_hz == 60.0

    from dyadlab.synchrony.check import _spectra
    from dyadlab.synchrony.io import load_dyad

    spectra = _spectra(load_dyad(path))
    figure = figs.spectra_figure(typed, spectra)
    for ax, own in zip(figure.axes, (a, b)):
        mains = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [float(line.get_xdata()[0]) for line in mains] == [60.0]
        median = next(line for line in ax.get_lines() if line.get_label() == "median over channels")
        freqs, psd = signal.welch(
            own.astype(np.float32), fs=rate, window="hann", nperseg=256, noverlap=128, detrend="linear"
        )
        shown = (freqs > 0) & (freqs <= figs.SPECTRUM_MAX_HZ)
        reference = np.median(10 * np.log10(psd[:, shown]), axis=0)
        np.testing.assert_allclose(median.get_xdata(), freqs[shown])
        np.testing.assert_allclose(median.get_ydata(), reference, atol=0.05)

    topomap, why = figs.topomap_figure(typed, "plv")
    assert topomap is not None, why
    index, info = figs._standard_positions(EEGLAB_CHANNELS)
    assert index == list(range(len(EEGLAB_CHANNELS)))
    # Reference: MNE's own case-insensitive matching of the labels as recorded ("FPz" is "Fpz").
    reference = mne.create_info(EEGLAB_CHANNELS, sfreq=rate, ch_types="eeg")
    template = "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"
    reference.set_montage(mne.channels.make_standard_montage(template), match_case=False)
    assert [ch["ch_name"].lower() for ch in info["chs"]] == [name.lower() for name in EEGLAB_CHANNELS]
    for placed, expected in zip(info["chs"], reference["chs"]):
        np.testing.assert_allclose(placed["loc"][:3], expected["loc"][:3], atol=1e-9)
    page = (tmp_path / "qc.html").read_text()
    assert all("<img" in _section(page, key) for key in ("spectra", "topographies", "matrices"))


# --------------------------------------------------------------------------- the demo session


def _short_demo(tmp_path: Path):
    """The bundled demo protocol with shorter blocks (still enough epochs for statistics), without
    its spoken conversation (the report's conversation section: tests/synchrony/test_speech.py)."""
    from dyadlab.protocols.schema import BUNDLED_DIR, load_protocol

    data = copy.deepcopy(yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text()))
    shorter = {
        "rest": {"duration_s": 16.0},
        "joint-press": {"n_trials": 6},
        "tapping": {"n_pacer_ticks": 12, "continuation_s": 6.0},
    }
    data["blocks"] = [block for block in data["blocks"] if block["task"] in shorter]
    data["microphones"] = None
    for block in data["blocks"]:
        block.pop("duration", None)
        block["params"] = {**(block.get("params") or {}), **shorter[block["task"]]}
    data["screens"] = {"layout": "shared", "fullscreen": False, "size": [800, 600], "check_timing": False}
    data["preflight"] = {"enabled": True, "seconds": 2}
    data["quickcheck"] = {"enabled": True, "surrogates": 40, "epoch_seconds": 1.0}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_protocol(path)


def _screenshot(page: Path, png: Path, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # tests may run as root (containers), where the sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1280,{height}",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.integration
@pytest.mark.display
@pytest.mark.slow
@pytest.mark.timeout(900)  # a session of about a minute, its check, `dyadlab check` again and Chromium
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")
@pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason="chromium not installed (.ci/system-deps.sh installs it)",
)
def test_demo_session_report_tells_the_story(tmp_path, artifacts_dir):
    from PIL import Image

    from dyadlab.acquisition.lslconfig import LslConfig
    from dyadlab.protocols.runner import SessionRunner
    from dyadlab.synchrony.cli import check

    session = SessionRunner(
        _short_demo(tmp_path), out_dir=tmp_path / "out", simulate=True, autopilot=True, lsl_config=LslConfig()
    ).run()
    assert session.quickcheck is not None, session.files
    in_session = session.quickcheck
    html_path = session.files["quickcheck_html"]
    page = html_path.read_text()

    # The same file through `dyadlab check` with its defaults: the same numbers.
    assert in_session["inputs"]["seed"] == DEFAULT_SEED
    rerun_json = tmp_path / "rerun.json"
    outcome = CliRunner().invoke(
        check,
        [
            str(session.files["xdf"]),
            "--surrogates",
            "40",
            "--epoch-length",
            "1",
            "--json",
            str(rerun_json),
            "--no-progress",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    rerun = json.loads(rerun_json.read_text())
    assert rerun["conditions"] == in_session["conditions"] and rerun["contrasts"] == in_session["contrasts"]

    # Every section with its figure; the behaviour of both paradigms; the design's contrasts.
    result = QuickCheckResult.model_validate(in_session)
    assert [key for key, _ in SECTIONS if f"<h2 id='{key}'>" in page] == [key for key, _ in SECTIONS]
    for key in FIGURE_SECTIONS:
        assert "<img" in _section(page, key), key
    assert "No topographic maps" not in page  # the simulator's labels are 10-20 names
    behaviour = {b.paradigm: b.measures for b in result.behaviour or []}
    assert set(behaviour) == {"joint-press cooperation", "tapping"}
    assert behaviour["joint-press cooperation"]["trials"] == 6
    assert behaviour["tapping"]["taps_A"] > 0 and behaviour["tapping"]["mean_asynchrony_to_pacer_A_ms"] is not None
    assert "success rate" in _section(page, "behaviour") and "asynchrony" in _section(page, "behaviour")
    assert set(result.contrasts.pairs or {}) == {"cooperation-vs-rest", "tapping-vs-rest", "cooperation-vs-tapping"}
    assert "<pre" not in page and f"href='{session.files['quickcheck_json'].name}'" in page
    matrices = figs.matrices_figure(result, "plv")
    assert [t.get_text() for t in matrices.axes[0].get_yticklabels()] == result.participants["A"].channels

    # Headless Chromium renders it: the screenshot is kept, and it is not blank anywhere.
    shots = artifacts_dir / "report"
    shots.mkdir(exist_ok=True)
    shutil.copy(html_path, shots / "demo-report.html")
    shutil.copy(session.files["quickcheck_json"], shots / session.files["quickcheck_json"].name)
    png = shots / "demo-report.png"
    _screenshot(shots / "demo-report.html", png, height=14000)
    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert image.shape[1] == 1280
    drawn = np.flatnonzero(image.min(axis=1) < 250)  # rows with anything on them
    end = int(drawn[-1])
    assert end < image.shape[0] - 100, "the page is longer than the screenshot: raise its height"
    # Every 1000-px band of the page holds text or figures (none is one colour).
    bands = [image[i : i + 1000] for i in range(0, end - 1000, 1000)]
    assert len(bands) >= 6 and all(band.std() > 10 for band in bands), [round(band.std(), 1) for band in bands]
