"""Automatic photodiode / TTL timing verification against channels with a known answer.

The channels come from the simulator's :class:`~dyadlab.acquisition.simulator.TimingSignals`,
which draws each flash's latency (fixed latency plus Gaussian jitter), integrates the light over
each sample period (an amplifier's anti-alias averaging) and shifts B's copy by a known lag and
drift; its ground truth is per flash. The acceptance tolerance is one sample period: the edge
of a light step is interpolated between the two samples around it, and a TTL edge is placed
midway between them, so a correct detector is never further off than that, while pairing with the
wrong flash, the wrong polarity or a noise edge is off by tens of milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from dyadlab.acquisition.markers import Marker
from dyadlab.acquisition.simulator import TimingSignals, simulate_timing_signals
from dyadlab.acquisition.streams import (
    ParticipantInfo,
    SourceLayout,
    aux_stream_info,
    eeg_stream_info,
    event_stream_info,
)
from dyadlab.acquisition.xdf import XdfWriter
from dyadlab.synchrony.check import run_check
from dyadlab.synchrony.io import DyadRecording, EventMarker, load_dyad
from dyadlab.synchrony.results import QuickCheckResult
from dyadlab.synchrony.timing_verification import (
    TimingOptions,
    TimingVerificationError,
    amplifier_lag,
    analog_edges,
    flip_times,
    pair_with_flips,
    timing_section_html,
    ttl_edges,
    verify_timing,
)
from tests.synchrony import independent_xdf as ix
from tests.synchrony.xdf_fixtures import FIXTURE_DEVICE

FS = 250.0
PERIOD = 1.0 / FS
T0 = 3000.0


def _flips(n: int, seed: int = 1, start: float = 1.0) -> np.ndarray:
    """Screen changes 0.3 to 1.2 s apart (a task's cue / feedback rhythm)."""
    rng = np.random.default_rng(seed)
    return T0 + start + np.cumsum(rng.uniform(0.3, 1.2, size=n))


def _grid(duration: float) -> np.ndarray:
    return T0 + np.arange(int(duration * FS)) / FS


# --------------------------------------------------------------------------- edges and pairing


def test_photodiode_latency_and_jitter_per_flash_within_one_sample():
    flips = _flips(200)
    times = _grid(flips[-1] - T0 + 2.0)
    signals = TimingSignals(latency_s=0.023, jitter_s=0.002, noise=30.0, seed=3)
    aux_a, _, truth = simulate_timing_signals(times, times, flips, signals)
    edges = analog_edges(aux_a[0], times)
    pairing = pair_with_flips(flips, edges)
    assert pairing.paired_flips.size == flips.size and pairing.missed == 0 and pairing.unmatched_edges == 0
    error = pairing.latencies - truth["latencies"]
    assert np.abs(error).max() < PERIOD, f"worst edge error {np.abs(error).max() * 1e3:.2f} ms"
    # The jitter reported is the true jitter: its SD within a tenth of a sample here (200 flashes).
    assert abs(np.std(pairing.latencies) - np.std(truth["latencies"])) < 0.1 * PERIOD


def test_inverted_photodiode_is_found_by_automatic_polarity():
    flips = _flips(60)
    times = _grid(flips[-1] - T0 + 2.0)
    aux, _, truth = simulate_timing_signals(times, times, flips, TimingSignals(latency_s=0.04, inverted=True))
    recording = _recording(times, {"A": ("photo", aux[0])}, flips)
    channel = verify_timing(recording)["channels"][0]
    assert channel["polarity"] == "falling" and channel["paired"] == 60
    assert abs(channel["latency_median_ms"] - np.median(truth["latencies"]) * 1e3) < PERIOD * 1e3
    # Forced to the wrong polarity, the flashes' ends are taken for their starts: a pulse later.
    wrong = verify_timing(recording, TimingOptions(polarity="rising"))["channels"][0]
    assert wrong["latency_median_ms"] - channel["latency_median_ms"] > 10.0


def test_missed_flashes_are_counted_and_flagged():
    flips = _flips(100)
    dropped = np.arange(5, 100, 20)  # 5 screen changes never lit the patch
    shown = np.delete(flips, dropped)
    times = _grid(flips[-1] - T0 + 2.0)
    aux, _, _ = simulate_timing_signals(times, times, shown, TimingSignals(latency_s=0.03))
    result = verify_timing(_recording(times, {"A": ("photodiode", aux[0])}, flips))
    channel = result["channels"][0]
    assert (channel["paired"], channel["missed"], channel["merged"]) == (95, 5, 0)
    assert any("5 of 100 screen changes show no flash" in p for p in result["problems"])


def test_markers_of_consecutive_frames_share_one_flash_and_are_merged_not_missed():
    flips = _flips(50)
    second = flips[::5] + 1.0 / 60.0  # a marker on the very next frame: the patch stays lit
    all_flips = np.sort(np.concatenate([flips, second]))
    times = _grid(all_flips[-1] - T0 + 2.0)
    # The light: one pulse of two frames per pair of consecutive marked frames.
    signals = TimingSignals(latency_s=0.03, jitter_s=0.0)
    aux, _, _ = simulate_timing_signals(times, times, all_flips, signals)
    pairing = pair_with_flips(all_flips, analog_edges(aux[0], times))
    assert (pairing.latencies.size, pairing.merged, pairing.missed) == (50, 10, 0)


def test_noise_makes_no_spurious_edges_and_a_flat_channel_says_why():
    flips = _flips(100)
    times = _grid(flips[-1] - T0 + 2.0)
    # Noise SD 8 % of the light step: single samples cross the 50 % level only ~1e-9 of the time.
    aux, _, truth = simulate_timing_signals(times, times, flips, TimingSignals(noise=80.0, seed=5))
    edges = analog_edges(aux[0], times)
    assert edges.rising.size == flips.size
    noise_only = np.random.default_rng(0).normal(0.0, 80.0, times.size)
    flat = analog_edges(noise_only, times)
    assert flat.rising.size == 0 and "no clear light pulses" in flat.problems[0]


def test_ttl_bit_mask_selects_the_photodiode_bit():
    flips = _flips(80)
    times = _grid(flips[-1] - T0 + 2.0)
    aux, _, truth = simulate_timing_signals(times, times, flips, TimingSignals(photodiode=False, ttl=True, ttl_value=4))
    # Other inputs of the same port toggle independently (bit 0: a response box, 1 s on / off).
    port = aux[0] + ((times - T0) % 2.0 < 1.0).astype(float)
    masked = ttl_edges(port, times, TimingOptions(ttl_mask=4))
    pairing = pair_with_flips(flips, masked)
    assert pairing.latencies.size == 80 and pairing.unmatched_edges == 0
    assert np.abs(pairing.latencies - truth["latencies"]).max() <= PERIOD / 2 + 1e-9
    # Without the mask, flashes while the response box's bit is on raise no edge and are lost.
    unmasked = pair_with_flips(flips, ttl_edges(port, times))
    assert unmasked.missed + unmasked.merged > 20


def test_amplifier_lag_and_drift_within_one_sample():
    flips = _flips(300)
    times = _grid(flips[-1] - T0 + 2.0)
    signals = TimingSignals(latency_s=0.02, jitter_s=0.003, lag_b_s=0.0068, drift_ppm=150.0, seed=9)
    aux_a, aux_b, truth = simulate_timing_signals(times, times, flips, signals)
    lag = amplifier_lag(analog_edges(aux_a[0], times).rising, analog_edges(aux_b[0], times).rising)
    assert lag is not None and lag["pairs"] == 300
    first, last = truth["onsets"][0], truth["onsets"][-1]
    expected_start = signals.lag_b_s + signals.drift_ppm * 1e-6 * (first - truth["drift_origin"])
    expected_end = signals.lag_b_s + signals.drift_ppm * 1e-6 * (last - truth["drift_origin"])
    assert abs(lag["lag_start_ms"] - expected_start * 1e3) < PERIOD * 1e3
    assert abs(lag["lag_end_ms"] - expected_end * 1e3) < PERIOD * 1e3
    # One sample over the session's span is the drift's tolerance (here 4 ms / ~225 s = 18 ppm).
    assert abs(lag["drift_ppm"] - signals.drift_ppm) < PERIOD / lag["span_s"] * 1e6


def test_options_refuse_nonsense():
    with pytest.raises(TimingVerificationError, match="ttl_mask must be a positive integer"):
        TimingOptions(ttl_mask=0)
    with pytest.raises(TimingVerificationError, match="polarity must be"):
        TimingOptions(polarity="up")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- through the loader and run_check


def _recording(times: np.ndarray, channels: dict[str, tuple[str, np.ndarray]], flips: np.ndarray) -> DyadRecording:
    """A DyadRecording read back from an XDF file (independent writer) holding ``channels``
    (participant -> (label, values)) as AUX-typed channels of each EEG stream."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    path = _write_foreign_xdf(folder / "timing.xdf", times, channels, flips)
    return load_dyad(path)


def _write_foreign_xdf(path, times, channels, flips, sensor_type="AUX"):
    rng = np.random.default_rng(0)
    streams = []
    for stream_id, label in ((1, "A"), (2, "B")):
        eeg = rng.normal(0.0, 10.0, (times.size, 4))
        described = [(name, "EEG", "microvolts") for name in ("Fz", "Cz", "Pz", "Oz")]
        if label in channels:
            name, values = channels[label]
            eeg = np.column_stack([eeg, values])
            described.append((name, sensor_type, ""))
        streams.append(
            ix.Stream(
                stream_id, f"Amp{label}", "EEG", "float32", FS, eeg.astype(np.float32), times,
                ix.split(times.size, 250), described, offsets=[(times[0], 0.0), (times[-1], 0.0)],
            )
        )  # fmt: skip
    texts = [[Marker("stimulus").to_json()] for _ in flips]
    streams.append(ix.Stream(3, "Markers", "Markers", "string", 0.0, texts, flips, [len(flips)]))
    return ix.Writer().write(path, streams)


def test_photodiode_declared_as_eeg_is_left_out_of_the_eeg(tmp_path):
    flips = _flips(20)
    times = _grid(flips[-1] - T0 + 2.0)
    aux, _, _ = simulate_timing_signals(times, times, flips)
    path = _write_foreign_xdf(tmp_path / "f.xdf", times, {"A": ("Photo", aux[0])}, flips, sensor_type="EEG")
    recording = load_dyad(path)
    assert recording.a.channel_labels == ["Fz", "Cz", "Pz", "Oz"]
    assert [a.labels for a in recording.a.aux] == [["Photo"]]
    assert verify_timing(recording)["channels"][0]["paired"] == 20


def test_no_timing_channel_is_a_note_not_a_problem():
    times = _grid(10.0)
    flips = _flips(5)
    result = verify_timing(_recording(times, {}, flips))
    assert result["channels"] == [] and result["problems"] == []
    assert "No photodiode or TTL channel found" in result["notes"][0]


def _write_dyadlab_session(path, times, aux_a, aux_b, flips, names):
    """A dyadlab recording: EEG streams with the board Marker channel, AUX streams, JSON markers."""
    rng = np.random.default_rng(1)
    with XdfWriter(path, file_metadata={"study": "t", "dyad": "d01"}) as writer:
        for offset, (label, aux) in enumerate((("A", aux_a), ("B", aux_b))):
            person = ParticipantInfo(label, f"sub-{label}", "partner")
            source = SourceLayout(FS, ["Fz", "Cz", "Pz", "Oz"], aux_channel_names=names, description=FIXTURE_DEVICE)
            eeg_id, aux_id = 1 + 2 * offset, 2 + 2 * offset
            writer.add_stream(eeg_id, eeg_stream_info("t", "d01", person, source).as_xml())
            writer.add_stream(aux_id, aux_stream_info("t", "d01", person, source).as_xml())
            eeg = np.column_stack([rng.normal(0.0, 10.0, (times.size, 4)), np.zeros(times.size)])
            for first in range(0, times.size, 250):
                block = slice(first, first + 250)
                writer.write_samples(eeg_id, times[block], eeg[block].astype(np.float32))
                writer.write_samples(aux_id, times[block], aux[:, block].T.astype(np.float32))
            for stream_id in (eeg_id, aux_id):
                writer.write_clock_offset(stream_id, times[0], 0.0)
                writer.write_footer(stream_id)
        writer.add_stream(5, event_stream_info("t", "d01", "markers").as_xml())
        events = [Marker("block_start", task="rest", block="rest-1", condition="rest").to_json()]
        events += [Marker("stimulus", condition="rest").to_json() for _ in flips[1:-1]]
        events += [Marker("block_end", task="rest", block="rest-1", condition="rest").to_json()]
        writer.write_samples(5, flips, [[text] for text in events])
        writer.write_clock_offset(5, flips[0], 0.0)
        writer.write_footer(5)
    return path


def test_run_check_reports_latency_jitter_lag_and_drift_of_a_dyadlab_recording(tmp_path):
    flips = _flips(150, start=2.0)
    times = _grid(flips[-1] - T0 + 3.0)
    signals = TimingSignals(
        photodiode=True, ttl=True, latency_s=0.031, jitter_s=0.001, lag_b_s=0.012, drift_ppm=-50.0, seed=4
    )
    aux_a, aux_b, truth = simulate_timing_signals(times, times, flips, signals)
    path = _write_dyadlab_session(tmp_path / "s.xdf", times, aux_a, aux_b, flips, signals.channel_names)
    html = tmp_path / "s.html"
    result = run_check(path, n_surrogates=0, progress=False, bands="alpha=8-12", html_out=html)
    QuickCheckResult.model_validate(result)
    verification = result["timing_verification"]
    by_name = {(c["participant"], c["channel"]): c for c in verification["channels"]}
    assert set(by_name) == {(p, n) for p in "AB" for n in ("photodiode", "ttl")}
    recorded_latency = {p: truth["recorded_onsets"][p] - flips for p in "AB"}
    for (participant, _), channel in by_name.items():
        known = recorded_latency[participant] * 1e3
        assert channel["paired"] == 150 and channel["missed"] == 0
        assert abs(channel["latency_median_ms"] - np.median(known)) < PERIOD * 1e3
        assert abs(channel["latency_mean_ms"] - np.mean(known)) < PERIOD * 1e3
        assert abs(channel["jitter_sd_ms"] - np.std(known, ddof=1)) < PERIOD * 1e3
    lags = {lag["kind"]: lag for lag in verification["lags"]}
    assert set(lags) == {"photodiode", "ttl"}
    for lag in lags.values():
        first = truth["onsets"][0]
        expected_start = signals.lag_b_s + signals.drift_ppm * 1e-6 * (first - truth["drift_origin"])
        assert abs(lag["lag_start_ms"] - expected_start * 1e3) < PERIOD * 1e3
        assert abs(lag["drift_ppm"] - signals.drift_ppm) < PERIOD / lag["span_s"] * 1e6
    # Verified by the photodiode and within limits: lag 12 ms and its change (~6 ms) below 20 ms, B's
    # latency range (jitter plus drift, ~12 ms) below a frame.
    assert result["verdict"]["timing"] == "ok", result["verdict"]["summary"]
    assert any(
        line.startswith("Photodiode A 'photodiode': screen latency median") for line in result["verdict"]["summary"]
    )
    page = html.read_text(encoding="utf-8")
    assert "Timing verification (photodiode / TTL)" in page and "B - A median (ms)" in page


def test_run_check_says_check_and_why_when_the_amplifiers_disagree(tmp_path):
    flips = _flips(60, start=2.0)
    times = _grid(flips[-1] - T0 + 3.0)
    signals = TimingSignals(latency_s=0.02, jitter_s=0.001, lag_b_s=0.035, seed=2)
    aux_a, aux_b, _ = simulate_timing_signals(times, times, flips, signals)
    path = _write_dyadlab_session(tmp_path / "s.xdf", times, aux_a, aux_b, flips, signals.channel_names)
    result = run_check(path, n_surrogates=0, progress=False, bands="alpha=8-12")
    assert result["verdict"]["timing"] == "check"
    reason = next(line for line in result["verdict"]["summary"] if line.startswith("Timing CHECK"))
    assert "B records the same pulse +35" in reason


def test_report_section_of_an_older_result_says_not_computed():
    from types import SimpleNamespace

    assert "Not computed" in timing_section_html(SimpleNamespace(timing_verification=None))  # type: ignore[arg-type]


def test_flip_times_merge_markers_of_one_flip():
    markers = [EventMarker(t, "x", None, "m") for t in (1.0, 1.0, 1.0004, 2.0)]
    assert flip_times(markers).tolist() == [1.0, 2.0]


def test_command_line_names_the_channel_and_explains_a_check(tmp_path):
    from click.testing import CliRunner

    from dyadlab.synchrony.cli import check

    flips = _flips(40, start=2.0)
    times = _grid(flips[-1] - T0 + 3.0)
    # An active-low TTL on a channel whose label says nothing: named on the command line.
    signals = TimingSignals(photodiode=False, ttl=True, ttl_value=8, latency_s=0.015, jitter_s=0.0)
    aux_a, aux_b, _ = simulate_timing_signals(times, times, flips, signals)
    path = _write_dyadlab_session(tmp_path / "s.xdf", times, 8 - aux_a, 8 - aux_b, flips, ["port"])
    arguments = [str(path), "--surrogates", "0", "--bands", "alpha=8-12", "--no-progress"]
    named = CliRunner().invoke(check, [*arguments, "--timing-channel", "port", "--timing-polarity", "falling"])
    assert named.exit_code == 0, named.output
    assert "Photodiode A 'port': screen latency median +15." in " ".join(named.output.split())
    unnamed = CliRunner().invoke(check, arguments)
    assert "No photodiode or TTL channel found" in " ".join(unnamed.output.split())
    refused = CliRunner().invoke(check, [*arguments, "--ttl-mask", "0"])
    assert refused.exit_code != 0 and "--ttl-mask" in refused.output


def test_rare_flashes_and_a_lone_spike_do_not_hide_the_light_levels():
    # Flashes 5-8 s apart, lit 0.25 % of the time: below the 99.5th percentile of the signal.
    flips = T0 + 2.0 + np.cumsum(np.random.default_rng(4).uniform(5.0, 8.0, size=12))
    times = _grid(flips[-1] - T0 + 2.0)
    aux, _, truth = simulate_timing_signals(times, times, flips, TimingSignals(latency_s=0.02, noise=20.0))
    light = aux[0].copy()
    light[times.size // 3] = 5000.0  # an electrostatic spike five times the light step
    pairing = pair_with_flips(flips, analog_edges(light, times))
    assert pairing.latencies.size == 12 and pairing.unmatched_edges == 1
    assert np.abs(pairing.latencies - truth["latencies"]).max() < PERIOD
