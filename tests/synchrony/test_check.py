"""The quick-check end to end: known coupling detected, bad inputs explained, JSON schema, HTML, CLI.

Every test runs on a real XDF file written with dyadlab's writer and stream metadata
(``xdf_fixtures``); the coupled session has a shared alpha source in ``cooperation`` only.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from dyadlab.synchrony.check import SCHEMA_VERSION, QuickCheckError, run_check
from dyadlab.synchrony.io import XdfLoadError
from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf, write_simulated_xdf

BANDS = ("theta", "alpha", "beta", "gamma")
COUPLED = DyadSpec(
    blocks=[("rest", 60.0), ("cooperation", 60.0), ("competition", 60.0)],
    coupled={"cooperation": (9.0, 11.0, 4.0)},
    seed=11,
)
SHORT = [("rest", 20.0), ("cooperation", 20.0)]


@pytest.fixture(scope="module")
def coupled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coupled")
    path = write_dyad_xdf(folder / "session.xdf", COUPLED)
    result = run_check(
        path, n_surrogates=100, json_out=folder / "qc.json", html_out=folder / "qc.html", seed=1, progress=False
    )
    return result, folder


def test_coupled_band_and_condition_are_detected_and_nothing_else(coupled):
    result, _ = coupled
    detected = {(d["condition"], d["band"]) for d in result["verdict"]["synchrony_above_chance"]}
    assert detected == {("cooperation", "alpha")}
    for condition in ("rest", "cooperation", "competition"):
        for band in BANDS:
            cell = result["conditions"][condition][band]["plv"]
            if (condition, band) == ("cooperation", "alpha"):
                assert cell["z"] > 5 and cell["p"] < 0.02
                # Lagged coupling: the lag-based metrics see it too.
                assert result["conditions"][condition][band]["wpli"]["z"] > 3
            else:
                assert cell["z"] < 3
    contrasts = result["contrasts"]
    assert contrasts["baseline"] == "rest"
    assert contrasts["cooperation-vs-rest"]["alpha"]["plv"]["difference"] > 0.1
    assert contrasts["cooperation-vs-rest"]["alpha"]["plv"]["p"] < 0.01
    assert contrasts["cooperation-vs-rest"]["alpha"]["plv"]["bias_corrected"]
    assert contrasts["run_length_epochs"] == 5
    cell = contrasts["cooperation-vs-rest"]["alpha"]["plv"]
    assert cell["n_runs"] == [6, 6] and cell["p"] <= cell["p_fdr"] < 0.05
    assert cell["exact"] is True  # C(12, 6) = 924 splits, at most n_permutations: all enumerated
    assert abs(contrasts["competition-vs-rest"]["alpha"]["plv"]["difference"]) < 0.05
    assert result["diagnostics"]["common_mode"] == []
    assert "synchrony above chance in cooperation/alpha" in result["summary"]


def test_simulator_recording_detects_its_coupled_conditions_only(tmp_path):
    """dyadlab.acquisition.simulator couples alpha in cooperation and theta in tapping (its defaults)."""
    from dyadlab.acquisition.simulator import DEFAULT_COUPLING

    assert DEFAULT_COUPLING["cooperation"] == {"alpha": 0.7} and DEFAULT_COUPLING["tapping"] == {"theta": 0.8}
    blocks = [("rest", 60.0), ("cooperation", 60.0), ("tapping", 60.0), ("competition", 60.0)]
    path = write_simulated_xdf(
        tmp_path / "sim.xdf", blocks, channel_names=("Fz", "Cz", "Pz", "Oz", "C3", "C4", "O1", "O2"), seed=3
    )
    result = run_check(path, n_surrogates=100, progress=False)
    detected = {(d["condition"], d["band"]) for d in result["verdict"]["synchrony_above_chance"]}
    assert detected == {("cooperation", "alpha"), ("tapping", "theta")}
    assert result["verdict"]["data_quality"] == "ok"


def test_json_follows_the_documented_schema(coupled):
    result, folder = coupled
    on_disk = json.loads((folder / "qc.json").read_text())  # strict JSON: no NaN
    assert on_disk == result
    assert result["schema_version"] == SCHEMA_VERSION
    for key in (
        "file",
        "inputs",
        "versions",
        "participants",
        "quality",
        "alignment",
        "segmentation",
        "conditions",
        "contrasts",
        "diagnostics",
        "warnings",
        "verdict",
        "summary",
        "timing_s",
    ):
        assert key in result, key
    for label in ("A", "B"):
        quality = result["quality"][label]
        for key in (
            "samples",
            "duration_s",
            "effective_rate_hz",
            "nominal_rate_hz",
            "gaps",
            "backward_jumps",
            "dropped_packets",
            "clock_offsets",
            "channels",
            "marker_residuals",
            "alpha_peak_hz",
            "verdict",
        ):
            assert key in quality, key
    assert result["quality"]["overlap"]["overlap_fraction"] == pytest.approx(1.0)
    assert result["conditions"]["rest"]["n_epochs"] == 30
    for condition in ("rest", "cooperation", "competition"):
        for band in BANDS:
            for metric in ("plv", "accorr", "ccorr", "coh", "imcoh", "envcorr", "pli", "wpli"):
                cell = result["conditions"][condition][band][metric]
                assert {
                    "mean",
                    "z",
                    "p",
                    "matrix",
                    "pair_p_fdr",
                    "pair_p_fwer",
                    "n_significant_pairs",
                    "n_significant_pairs_fwer",
                    "null_mean",
                    "null_std",
                } <= set(cell)
                matrix = np.array(cell["matrix"], dtype=float)
                assert matrix.shape == (4, 4)
                assert cell["mean"] == pytest.approx(np.nanmean(matrix), abs=1e-4)
    assert result["inputs"]["n_surrogates"] == 100 and result["inputs"]["seed"] == 1
    assert result["versions"]["numpy"] == np.__version__


def test_pair_level_tests_find_the_coupled_pairs_and_no_others(coupled):
    """Every channel carries the shared alpha source in cooperation, so every pair is coupled
    there; the family-wise test finds most of them (it is the stricter one) and rejects none
    anywhere else (rest, competition, other bands)."""
    result, _ = coupled
    coupled_cell = result["conditions"]["cooperation"]["alpha"]["plv"]
    assert coupled_cell["n_significant_pairs"] >= 14
    assert 12 <= coupled_cell["n_significant_pairs_fwer"] <= coupled_cell["n_significant_pairs"]
    fwer = np.array(coupled_cell["pair_p_fwer"], dtype=float)
    assert (fwer <= 0.05).sum() == coupled_cell["n_significant_pairs_fwer"]
    for condition in ("rest", "competition", "cooperation"):
        for band in BANDS:
            if (condition, band) != ("cooperation", "alpha"):
                cell = result["conditions"][condition][band]["plv"]
                assert cell["n_significant_pairs_fwer"] == 0 and cell["n_significant_pairs"] == 0, (condition, band)


def test_circular_shift_null_uses_every_block_of_a_condition(tmp_path):
    """Ten 3-s blocks per condition: each is too short to shift by 2 s both ways on its own, but
    joined into one ring they give a null over all ten epochs (they used to be left out)."""
    blocks = [("rest", 3.0), ("cooperation", 3.0)] * 10
    path = write_dyad_xdf(tmp_path / "short-blocks.xdf", DyadSpec(blocks=blocks, seed=5))
    result = run_check(path, n_surrogates=50, surrogate="circular-shift", bands="alpha=8-12", progress=False, seed=2)
    for condition in ("rest", "cooperation"):
        assert result["conditions"][condition]["n_epochs"] >= 8  # the first may lie within the filters' ringing
        cell = result["conditions"][condition]["alpha"]["plv"]
        assert cell["z"] is not None and cell["p"] is not None, condition
    assert result["conditions"]["cooperation"]["alpha"]["plv"]["z"] > 3
    assert not any("too short for circular shifts" in w for w in result["warnings"])


def test_html_report_is_self_contained_with_the_verdict_first(coupled, artifacts_dir):
    _, folder = coupled
    page = (folder / "qc.html").read_text()
    (artifacts_dir / "synchrony-quickcheck-example.html").write_text(page)  # kept for people to look at
    assert page.startswith("<!DOCTYPE html>")
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    # Figures inline; links only to the page's own sections and to the JSON written beside it.
    assert references and all(ref.startswith(("data:image/png;base64,", "#")) or ref == "qc.json" for ref in references)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert page.index("class='verdict") < page.index(">Data quality per participant</h2>")
    assert "cooperation / alpha" in page


def test_zero_lag_coupling_is_flagged_as_possible_common_mode(tmp_path):
    """A shared signal with no lag (like a common reference) raises PLV but not wPLI."""
    spec = DyadSpec(
        blocks=[("rest", 30.0), ("cooperation", 30.0)], coupling_lag=0.0, coupled={"cooperation": (9.0, 11.0, 6.0)}
    )
    path = write_dyad_xdf(tmp_path / "zerolag.xdf", spec)
    result = run_check(path, n_surrogates=60, bands="alpha=8-12", progress=False)
    flagged = result["diagnostics"]["common_mode"]
    assert [(f["condition"], f["band"]) for f in flagged] == [("cooperation", "alpha")]
    assert any("common-mode" in w and "cooperation/alpha" in w for w in result["warnings"])


def test_same_seed_same_result(tmp_path):
    path = write_dyad_xdf(tmp_path / "s.xdf", DyadSpec(blocks=SHORT))
    first = run_check(path, n_surrogates=20, seed=5, progress=False, bands="alpha=8-12", metrics=("plv",))
    second = run_check(path, n_surrogates=20, seed=5, progress=False, bands="alpha=8-12", metrics=("plv",))
    assert first["conditions"] == second["conditions"]


def test_too_few_epochs_get_means_but_no_surrogate_statistics(tmp_path):
    """An epoch shuffle of a handful of epochs has too few permutations for a calibrated p."""
    path = write_dyad_xdf(tmp_path / "few.xdf", DyadSpec(blocks=[("rest", 12.0), ("cooperation", 40.0)]))
    result = run_check(path, n_surrogates=20, seed=1, progress=False, bands="alpha=8-12", metrics=("plv",))
    few, enough = result["conditions"]["rest"], result["conditions"]["cooperation"]
    assert 0 < few["n_epochs"] < 8 <= enough["n_epochs"]
    assert few["alpha"]["plv"]["mean"] is not None
    assert few["alpha"]["plv"]["z"] is None and few["alpha"]["plv"]["p"] is None
    assert enough["alpha"]["plv"]["z"] is not None
    assert any("'rest': only" in w and "not computed" in w for w in result["warnings"])


def test_dead_channels_are_left_out_without_voiding_every_epoch(tmp_path):
    """One electrode at 0 µV and one with no data at all: excluded, and the others still analysed."""
    spec = DyadSpec(blocks=[("rest", 30.0), ("cooperation", 30.0)], n_channels=4, dead_a={0: 0.0, 1: float("nan")})
    path = write_dyad_xdf(tmp_path / "dead.xdf", spec)
    result = run_check(path, n_surrogates=20, seed=1, progress=False, bands="alpha=8-12", metrics=("plv",))
    for condition in ("rest", "cooperation"):
        assert result["conditions"][condition]["n_epochs"] >= 10
    matrix = np.asarray(result["conditions"]["cooperation"]["alpha"]["plv"]["matrix"], dtype=float)
    assert np.isnan(matrix[:2]).all() and np.isfinite(matrix[2:]).all()


@pytest.mark.parametrize(
    ("residual_ms", "backward_jumps", "clock_offsets", "expected"),
    [(3.0, 0, 2, "ok"), (None, 0, 2, "unverified"), (80.0, 0, 2, "check"), (3.0, 1, 2, "check"), (3.0, 0, 0, "check")],
)
def test_timing_verdict_says_unverified_when_nothing_measured_it(residual_ms, backward_jumps, clock_offsets, expected):
    from dyadlab.synchrony.verdict import timing_verdict

    quality = {label: {"backward_jumps": backward_jumps, "clock_offsets": clock_offsets} for label in "AB"}
    result = {"quality": quality, "inputs": {"thresholds": {"residual_warn_ms": 20.0}}}
    residuals = [] if residual_ms is None else [{"max_abs_ms": residual_ms}]
    assert timing_verdict(result, residuals) == expected


def test_bands_beyond_the_data_rate_are_refused(tmp_path):
    path = write_dyad_xdf(tmp_path / "slow.xdf", DyadSpec(blocks=SHORT, rate_a=100.0, rate_b=100.0))
    with pytest.raises(QuickCheckError, match=r"gamma 30-45 Hz reach the Nyquist frequency .*--bands"):
        run_check(path, n_surrogates=0, progress=False)
    result = run_check(path, n_surrogates=0, progress=False, bands="alpha=8-12")
    assert list(result["conditions"]["rest"]) == ["n_epochs", "n_epochs_planned", "duration_s", "blocks", "alpha"]


def test_one_eeg_stream(tmp_path):
    path = write_dyad_xdf(tmp_path / "one.xdf", DyadSpec(blocks=SHORT, eeg_streams=1))
    with pytest.raises(XdfLoadError, match=r"1 EEG stream\(s\), a dyad check needs two"):
        run_check(path, n_surrogates=0, progress=False)


def test_no_markers_analyses_the_whole_recording_and_says_how_to_define_conditions(tmp_path):
    path = write_dyad_xdf(tmp_path / "nomarkers.xdf", DyadSpec(blocks=SHORT, markers=False))
    result = run_check(path, n_surrogates=0, progress=False)
    assert list(result["conditions"]) == ["recording"]
    assert result["segmentation"]["source"] == "whole-recording"
    message = next(w for w in result["warnings"] if "no marker stream" in w)
    assert "--condition NAME=START:END" in message and "whole overlap" in message


def test_conditions_from_plain_marker_strings(tmp_path):
    path = write_dyad_xdf(
        tmp_path / "other.xdf", DyadSpec(blocks=[("rest", 40.0), ("cooperation", 40.0)], labels=False)
    )
    result = run_check(
        path,
        conditions=["rest=start_rest:end_rest", "coop=start_coop.*:end_coop.*"],
        n_surrogates=60,
        bands="alpha=8-12,beta=13-30",
        progress=False,
    )
    assert result["segmentation"]["source"] == "condition-specs"
    assert result["conditions"]["coop"]["n_epochs"] == 20
    assert {(d["condition"], d["band"]) for d in result["verdict"]["synchrony_above_chance"]} == {("coop", "alpha")}
    with pytest.raises(QuickCheckError, match="matched"):
        run_check(path, conditions=["x=nothing:none"], n_surrogates=0, progress=False)


def test_non_overlapping_streams(tmp_path):
    path = write_dyad_xdf(tmp_path / "apart.xdf", DyadSpec(blocks=SHORT, offset_b=500.0))
    with pytest.raises(QuickCheckError, match="do not overlap in time"):
        run_check(path, n_surrogates=0, progress=False)


def test_different_sampling_rates_are_resampled_and_said_so(tmp_path):
    path = write_dyad_xdf(
        tmp_path / "rates.xdf", DyadSpec(blocks=[("rest", 30.0), ("cooperation", 30.0)], rate_b=500.0)
    )
    result = run_check(path, n_surrogates=60, bands="alpha=8-12", progress=False)
    assert result["alignment"]["rate_hz"] == 250.0
    assert any("B was resampled to 250 Hz" in w for w in result["warnings"])
    assert "resampled" in " ".join(result["alignment"]["notes"])
    assert result["quality"]["B"]["nominal_rate_hz"] == 500.0
    # The coupling survives the resampling.
    assert result["conditions"]["cooperation"]["alpha"]["plv"]["z"] > 3


def test_nans_are_located_and_their_epochs_rejected(tmp_path):
    path = write_dyad_xdf(tmp_path / "nan.xdf", DyadSpec(blocks=SHORT, nan_b=(10.0, 13.0)))
    result = run_check(path, n_surrogates=0, progress=False)
    warning = next(w for w in result["warnings"] if "NaN" in w)
    assert "Participant B" in warning and "Fz, Cz" in warning and "10.0-13.0 s" in warning
    epochs = result["segmentation"]["epochs"]["rest"]
    assert epochs["invalid_data"] >= 2 and epochs["used"] == epochs["planned"] - epochs["invalid_data"]
    assert result["quality"]["B"]["verdict"] == "check"


def test_truncated_file_is_checked_with_the_damage_in_the_verdict(tmp_path):
    path = write_dyad_xdf(tmp_path / "cut.xdf", DyadSpec(blocks=SHORT, truncate_bytes=5000))
    result = run_check(path, n_surrogates=0, progress=False)
    assert result["file"]["load_problems"]
    assert result["verdict"]["data_quality"] == "check"
    assert any("dyadlab inspect" in w or "not finalised" in w for w in result["warnings"])


def test_cli_writes_json_and_html_and_prints_the_summary(tmp_path):
    from dyadlab.synchrony.cli import check

    path = write_dyad_xdf(tmp_path / "s.xdf", DyadSpec(blocks=SHORT))
    json_out, html_out = tmp_path / "out.json", tmp_path / "out.html"
    outcome = CliRunner().invoke(
        check,
        [
            str(path),
            "--json",
            str(json_out),
            "--report",
            str(html_out),
            "--surrogates",
            "30",
            "--bands",
            "alpha=8-12,beta=13-30",
            "--epoch-length",
            "2.5",
            "--surrogate-method",
            "circular-shift",
            "--seed",
            "3",
            "--no-progress",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "Quick-check: s.xdf" in outcome.output and "Synchrony" in outcome.output
    data = json.loads(json_out.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert set(data["conditions"]["cooperation"]) >= {"n_epochs", "alpha", "beta"}
    assert set(data["conditions"]["cooperation"]["alpha"]["plv"]) >= {"mean", "z", "p", "matrix"}
    assert data["inputs"]["seed"] == 3 and data["inputs"]["bands"] == {"alpha": [8.0, 12.0], "beta": [13.0, 30.0]}
    # Every option reaches the check (none of them is its default): the JSON inputs say so, and
    # the 20-s blocks are cut into 2.5-s epochs.
    assert data["inputs"]["epoch_length_s"] == 2.5
    assert data["inputs"]["n_surrogates"] == 30
    assert data["inputs"]["surrogate"] == "circular-shift"
    assert data["conditions"]["cooperation"]["n_epochs"] == 8
    page = html_out.read_text()
    assert "http://" not in page and "https://" not in page and "data:image/png;base64," in page


def test_cli_explains_a_file_that_does_not_fit(tmp_path):
    from dyadlab.synchrony.cli import check

    path = write_dyad_xdf(tmp_path / "one.xdf", DyadSpec(blocks=SHORT, eeg_streams=1))
    outcome = CliRunner().invoke(check, [str(path), "--no-progress"])
    assert outcome.exit_code == 2  # a DyadlabError: bad input, not a bug
    assert "1 EEG stream(s)" in outcome.output and "--eeg" in outcome.output
    outcome = CliRunner().invoke(check, [str(path), "--eeg", "only-one", "--no-progress"])
    assert outcome.exit_code == 2 and "exactly twice" in outcome.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epoch_length": 1e308}, "epoch_length"),
        ({"epoch_length": float("nan")}, "epoch_length"),
        ({"epoch_length": 0.0}, "epoch_length"),
        ({"n_surrogates": -1}, "n_surrogates"),
        ({"surrogate": "phase"}, "surrogate"),
        ({"reject_z": float("inf")}, "reject_z"),
        ({"bands": "blocks=4-7"}, "reserved"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_reading(tmp_path, options, message):
    missing = tmp_path / "not-read.xdf"  # never opened: the options are checked first
    with pytest.raises(QuickCheckError, match=message):
        run_check(missing, progress=False, **options)


def test_an_unwritable_output_is_refused_before_the_analysis(tmp_path):
    missing = tmp_path / "not-read.xdf"
    with pytest.raises(QuickCheckError, match="does not exist"):
        run_check(missing, json_out=tmp_path / "no-such-folder" / "check.json", progress=False)
    with pytest.raises(QuickCheckError, match="is a folder"):
        run_check(missing, html_out=tmp_path, progress=False)
    # A folder that exists but cannot be written (even by root): see the /proc test below.


def _damaged_dyad(path, *, header_rate=250.0, offsets=(0.0, 0.0), stamp_nan=False, rate=250.0, seconds=50.0):
    """A 50-s dyad (2 x 4 EEG + Marker at 250 Hz, rest and cooperation blocks) written by dyadlab's
    writer with one field damaged: the declared rate, the clock offsets or 50 timestamps."""
    import re as re_module

    from dyadlab.acquisition.markers import Marker
    from dyadlab.acquisition.streams import ParticipantInfo, SourceLayout, eeg_stream_info, event_stream_info
    from dyadlab.acquisition.xdf import XdfWriter

    rng = np.random.default_rng(1)
    n, t0 = int(seconds * rate), 1000.0
    with XdfWriter(path, file_metadata={"study": "repro", "dyad": "d01"}) as writer:
        for stream_id, label in ((1, "A"), (2, "B")):
            source = SourceLayout(rate, ["Fz", "Cz", "Pz", "Oz"])
            xml = eeg_stream_info("repro", "d01", ParticipantInfo(label, f"sub-{label}"), source).as_xml()
            xml = re_module.sub(
                r"<nominal_srate>[^<]*</nominal_srate>", f"<nominal_srate>{header_rate!r}</nominal_srate>", xml
            )
            writer.add_stream(stream_id, xml)
        writer.add_stream(3, event_stream_info("repro", "d01", "markers").as_xml())
        stamps = t0 + np.arange(n) / rate
        if stamp_nan:
            stamps[n // 3 : n // 3 + 50] = np.nan
        for stream_id in (1, 2):
            writer.write_clock_offset(stream_id, t0, offsets[0])
            values = np.column_stack([rng.standard_normal((n, 4)) * 10, np.zeros(n)]).astype(np.float32)
            writer.write_samples(stream_id, stamps, values)
            writer.write_clock_offset(stream_id, t0 + seconds, offsets[1])
        events = []
        for i, (condition, start) in enumerate((("rest", 2.0), ("cooperation", 25.0))):
            block = dict(task=condition, block=f"{condition}-{i + 1}", condition=condition)
            events += [
                (start, Marker("block_start", **block).to_json()),
                (start + 20.0, Marker("block_end", **block).to_json()),
            ]
        writer.write_samples(3, t0 + np.array([t for t, _ in events]), [[e] for _, e in events])
        for stream_id in (1, 2, 3):
            writer.write_footer(stream_id)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"header_rate": 0.0}, "declares a sampling rate of 0 Hz"),
        ({"header_rate": 1e12}, "declares a sampling rate of 1e\\+12 Hz"),
        ({"header_rate": 1e308}, "declares a sampling rate"),
        ({"offsets": (float("nan"), float("nan"))}, "clock offsets are not numbers"),
        ({"offsets": (0.0, float("nan"))}, "1 of its 2 clock offsets"),
        ({"stamp_nan": True}, "50 of 12500 timestamps are not finite"),
    ],
)
def test_damaged_rates_and_timing_are_explained_not_crashed_on(tmp_path, damage, message):
    """Found by the hostile-input pass (#11): each used to end in a traceback (or a 728 TiB array)."""
    from dyadlab.synchrony.cli import check

    path = _damaged_dyad(tmp_path / "damaged.xdf", **damage)
    with pytest.raises(QuickCheckError, match=message):
        run_check(path, n_surrogates=10, progress=False)
    outcome = CliRunner().invoke(check, [str(path), "--surrogates", "10", "--no-progress"])
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output


def test_a_report_that_cannot_be_written_is_refused_before_the_analysis_even_as_root(tmp_path):
    path = _damaged_dyad(tmp_path / "good.xdf")
    with pytest.raises(QuickCheckError, match="cannot be written"):
        run_check(path, html_out="/proc/dyadlab-report.html", progress=False)
    result = run_check(path, n_surrogates=10, progress=False, html_out=tmp_path / "report.html")
    assert (tmp_path / "report.html").stat().st_size > 0 and result["verdict"]["data_quality"] in ("ok", "check")
