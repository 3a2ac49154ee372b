"""segments.py's exact results, against hand-computed values and independent references (scipy,
MNE, HyPyP): block boundaries and warnings, epoch sample indices, the time grid, the screening's
log-variances and the band signals. Written from the survivors of its mutation run (issue #18,
docs/testing.md "segments.py")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dyadlab.synchrony import segments as seg
from tests.synchrony.segment_fixtures import json_marker, participant_eeg, plain_marker

# --- Conditions -------------------------------------------------------------------------------


def test_condition_spec_strips_the_name_keeps_the_markers_and_explains_each_refusal():
    spec = seg.parse_condition_spec(" coop =a b:c=d")
    assert (spec.name, spec.start, spec.end) == ("coop", "a b", "c=d")  # split at the first '=' only
    with pytest.raises(seg.SegmentationError) as missing:
        seg.parse_condition_spec("coop")
    assert str(missing.value) == (
        "Condition 'coop' has no '=': write NAME=START:END (e.g. --condition cooperation=start_coop:end_coop "
        "or --condition 'rest=rest_on:rest_off')."
    )
    for bad in (" =a:b", "x= :b", "x=a: "):
        with pytest.raises(seg.SegmentationError, match=r"one unescaped ':' between the start and end markers"):
            seg.parse_condition_spec(bad)
    # An invalid regular expression matches only itself, literally.
    spec = seg.parse_condition_spec("x=S(1:S)")
    assert spec.matches("S(1", "S(1") and not spec.matches("S(1", "S 1") and not spec.matches("S)", "S")


def test_dyadlab_blocks_pair_by_block_id_and_condition_and_warn_about_open_ones():
    markers = [
        json_marker(1.0, "block_start", condition="rest"),  # no block id: named after its condition
        json_marker(2.0, "block_end", condition="coop"),  # another condition's end: ignored
        json_marker(3.0, "block_end", block="other"),  # another block's end: ignored
        json_marker(4.0, "block_end", condition="rest"),
        json_marker(5.0, "block_end", condition="rest"),  # nothing open: ignored
        json_marker(6.0, "block_start", condition="coop", block="c1"),
        json_marker(6.0, "block_start", condition="coop", block="c2"),  # c1 is empty: dropped, with a warning
        json_marker(7.5, "block_start", block="x"),  # no condition: skipped
        json_marker(8.0, "block_start", condition="talk", block="t1"),
        plain_marker(9.0, "not ours"),
        json_marker(10.0, "session_end"),
        json_marker(10.5, "block_start", condition="rest", block="r2"),
    ]
    blocks, warnings = seg.blocks_from_markers(markers, recording_end=12.0)
    assert blocks == [
        seg.Block("rest", 1.0, 4.0, "rest"),
        seg.Block("coop", 6.0, 7.5, "c2"),
        seg.Block("talk", 8.0, 10.0, "t1"),
        seg.Block("rest", 10.5, 12.0, "r2"),
    ]
    assert warnings == [
        "Block 'c1' (coop) has no block_end; it is taken to end at the next block_start.",
        "Block 'c2' (coop) has no block_end; it is taken to end at the next block_start.",
        "A block_start at 7.500 carries no condition; the block is skipped.",
        "Block 't1' (talk) has no block_end; it is taken to end at session_end.",
        "Block 'r2' (rest) has no block_end; it is taken to end at the end of the recording.",
    ]


def test_spec_blocks_are_numbered_sorted_by_start_and_list_the_markers_seen():
    texts = ["off", "on", "m1", "off", "m2", "on", "m3", "off", "on", "m4"]  # an end before any start: ignored
    markers = [plain_marker(t, text) for t, text in enumerate(texts)]
    blocks, warnings = seg.blocks_from_specs(
        markers,
        [seg.ConditionSpec("b", "m\\d", "m\\d"), seg.ConditionSpec("a", "on", "off")],
        recording_end=20.0,
    )
    assert blocks == [
        seg.Block("a", 1, 3, "a-1"),
        seg.Block("b", 2, 4, "b-1"),
        seg.Block("a", 5, 7, "a-2"),
        seg.Block("b", 6, 9, "b-2"),
        seg.Block("a", 8, 20.0, "a-3"),
    ]
    assert warnings == [
        "Condition 'a': a block opened by 'on' has no 'off' after it; it is taken to end at the end of the recording."
    ]
    many = [plain_marker(t, f"s{t}") for t in range(9)]
    _, warnings = seg.blocks_from_specs(many, [seg.ConditionSpec("x", "go", "stop")], 10.0)
    shown = ", ".join(f"'s{t}'" for t in range(8))
    assert warnings == [f"Condition 'x': no marker matches the start 'go' (marker strings in the file: {shown}, ...)."]
    _, warnings = seg.blocks_from_specs(many[:8], [seg.ConditionSpec("x", "go", "stop")], 10.0)
    assert warnings[0].endswith(f"(marker strings in the file: {shown}).")
    _, warnings = seg.blocks_from_specs([], [seg.ConditionSpec("x", "go", "stop")], 10.0)
    assert warnings == ["Condition 'x': no marker matches the start 'go' (marker strings in the file: none)."]


def test_band_specifications():
    assert seg.parse_bands(" theta = 4 - 7 ,, low-gamma=30.5-45") == {"theta": (4.0, 7.0), "low-gamma": (30.5, 45.0)}
    assert seg.parse_bands(["a=1-2", "b=3-4,c=5-6"]) == {"a": (1.0, 2.0), "b": (3.0, 4.0), "c": (5.0, 6.0)}
    assert seg.parse_bands({"mu": (8, 13)}) == {"mu": (8.0, 13.0)}
    assert seg.parse_bands("Delta=0.5-4") == {"Delta": (0.5, 4.0)}  # capitals, and a low edge below 1 Hz
    with pytest.raises(seg.SegmentationError, match="need 0 < low < high Hz, got 4-4"):
        seg.parse_bands({"x": (4, 4)})
    with pytest.raises(seg.SegmentationError) as refused:
        seg.parse_bands("x=0-4")
    assert str(refused.value) == "Band x: need 0 < low < high Hz, got 0.0-4.0."
    with pytest.raises(
        seg.SegmentationError, match=r"^Band 'x=4-4 Hz' is not NAME=LOW-HIGH in Hz \(e.g. alpha=8-12\)\.$"
    ):
        seg.parse_bands("x=4-4 Hz")
    for nothing in ("", " , ", [], {}):
        with pytest.raises(seg.SegmentationError, match="^No frequency band given.$"):
            seg.parse_bands(nothing)


def test_condition_names_and_block_descriptions():
    blocks = [
        seg.Block("rest", 10.12345, 20.5, "r1"),
        seg.Block("coop", 21.0, 30.0004, "c1"),
        seg.Block("rest", 31, 40, "r2"),
    ]
    assert seg.condition_names(blocks) == ["rest", "coop"]  # order of first appearance
    assert seg.describe_blocks(blocks, origin=0.0004) == [
        {"condition": "rest", "name": "r1", "start_s": 10.123, "end_s": 20.5},
        {"condition": "coop", "name": "c1", "start_s": 21.0, "end_s": 30.0},
        {"condition": "rest", "name": "r2", "start_s": 31.0, "end_s": 40.0},
    ]


# --- Epochs on the grid -----------------------------------------------------------------------


def _aligned(rate: float, n: int, start: float = 0.0, channels: int = 2, seed: int = 0) -> seg.AlignedDyad:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((channels, n)).astype(np.float32)
    b = rng.standard_normal((channels, n)).astype(np.float32)
    return seg.AlignedDyad(rate, start, a, b, np.ones(n, bool))


def test_epoch_sample_indices_are_the_hand_computed_ones():
    """100 Hz grid starting at LSL time 5 s, 2000 samples, 2-s epochs, margin 0.5 s (50 samples),
    pad 1 s (100 samples); one invalid sample at grid index 773."""
    aligned = _aligned(100.0, 2000, start=5.0)
    aligned.valid[773] = False
    assert (aligned.index(5.0 + 1.234), aligned.index(4.0), aligned.index(30.0)) == (123, -100, 2500)
    blocks = [
        seg.Block("x", 5.0 + 1.234, 5.0 + 9.87, "x"),  # grid 123 to 987: 4 epochs, 123 + 200 k
        seg.Block("y", 5.0 + 0.3, 5.0 + 2.5, "y"),  # its margin reaches before the grid
        seg.Block("z", 4.0, 5.0 + 4.0, "z"),  # starts before the grid: clipped to sample 0
        seg.Block("w", 5.0 + 19.0, 40.0, "w"),  # ends after it: no whole epoch
        seg.Block("v", 5.0 + 17.6, 5.0 + 19.9, "v"),  # its epoch's margin ends 10 samples after the grid
    ]
    plans = seg.plan_epochs(aligned, blocks, epoch_length=2.0, margin=0.5, pad=1.0)
    x, y, z, w, v = plans
    assert x.starts.tolist() == [123, 323, 523, 723] and x.starts.dtype == np.int64
    # Epoch 723's margin (673-972) holds sample 773; epoch 523's (473-772) ends just before it.
    assert x.valid.tolist() == [True, True, True, False]
    assert (x.first, x.stop, x.margin) == (23, 1023, 0.5)
    assert (y.starts.tolist(), y.valid.tolist(), y.first, y.stop) == ([30], [False], 0, 330)
    assert (z.starts.tolist(), z.valid.tolist(), z.first, z.stop) == ([0, 200], [False, True], 0, 500)
    assert (w.starts.tolist(), w.first, w.stop) == ([], 1800, 2000)
    assert (v.starts.tolist(), v.valid.tolist(), v.first, v.stop) == ([1760], [False], 1660, 2000)
    # A margin starting exactly at the grid's first sample is inside it; then that sample decides.
    (first_in,) = seg.plan_epochs(aligned, [seg.Block("u", 5.0 + 0.5, 5.0 + 2.5, "u")], 2.0, 0.5, 1.0)
    assert (first_in.starts.tolist(), first_in.valid.tolist()) == ([50], [True])
    aligned.valid[0] = False
    (first_in,) = seg.plan_epochs(aligned, [seg.Block("u", 5.0 + 0.5, 5.0 + 2.5, "u")], 2.0, 0.5, 1.0)
    assert first_in.valid.tolist() == [False]
    # Exactly at the grid's end: the last epoch whose margin ends on the last sample is valid.
    (edge,) = seg.plan_epochs(aligned, [seg.Block("e", 5.0 + 17.5, 5.0 + 19.5, "e")], 2.0, 0.5, 1.0)
    assert (edge.starts.tolist(), edge.valid.tolist()) == ([1750], [True])
    # The pad is at least the margin.
    (wide,) = seg.plan_epochs(aligned, blocks[:1], 2.0, margin=1.5, pad=0.2)
    assert (wide.first, wide.stop) == (0, 123 + 800 + 150)


def test_epoch_plan_defaults_and_refusal():
    aligned = _aligned(100.0, 3000)
    (plan,) = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 15.0, "x")], 2.0)
    # 100 Hz holds theta, alpha and beta (below 45 Hz), not gamma; the pad defaults to 3 s.
    assert plan.margin == seg.filter_margin({"t": (4.0, 7.0), "a": (8.0, 12.0), "b": (13.0, 30.0)}, 100.0)
    assert (plan.first, plan.stop) == (500 - 300, 1500 + 300)
    assert seg.plan_epochs(aligned, [seg.Block("x", 5.0, 15.0, "x")], 0.04, margin=0.1)[0].starts.size == 250
    with pytest.raises(seg.SegmentationError) as refused:
        seg.plan_epochs(aligned, [], 0.03)
    assert str(refused.value) == "Epochs of 0.03 s hold fewer than 4 samples at 100 Hz."


def test_default_bands_and_designs():
    """The default bands the data can hold: below 0.45 x the rate; Butterworth unless asked."""
    assert list(seg._default_bands(100.0)) == ["theta", "alpha", "beta"]  # gamma's 45 Hz is 0.45 x 100
    assert list(seg._default_bands(100.1)) == ["theta", "alpha", "beta", "gamma"]
    assert list(seg._default_bands(64.0)) == ["theta", "alpha"]
    freqs = np.linspace(0.0, 60.0, 61)
    np.testing.assert_array_equal(
        seg._band_gain(freqs, (8.0, 12.0), 128.0), _design_gain("butterworth", (8.0, 12.0), 128.0, freqs)
    )


def test_analysis_rate_and_fft_lengths():
    assert [seg.analysis_step(500.0, high) for high in (7.0, 12.0, 30.0, 45.0)] == [17, 10, 4, 2]
    assert seg.analysis_step(128.0, 45.0) == 1 and seg.analysis_step(500.0, 7.0, decimate=False) == 1
    # A multiple of every step (lcm 68), 68 x 15 >= 1001 with 15 the smallest 5-smooth number >= 1001 / 68.
    assert seg._fft_length(1001, [17, 4]) == 1020
    assert seg._fft_length(1001, [1]) == 1024


# --- Artifact rejection -----------------------------------------------------------------------


def _robust_z(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Per-channel robust z of the members: scipy's normal-scaled MAD (1.482602...; the module's
    1.4826 differs by 2e-6 relative, far below the margins to the threshold used here)."""
    from scipy.stats import median_abs_deviation

    median = np.median(values[members], axis=0)
    return (values[members] - median) / median_abs_deviation(values[members], axis=0, scale="normal")


def test_rejection_is_per_channel_per_condition_above_the_threshold():
    rng = np.random.default_rng(21)
    # Three channels at different levels and spreads: a pooled median or MAD would misjudge them.
    logvar_a = rng.normal([0.0, 5.0, -3.0], [0.1, 1.0, 0.3], size=(40, 3))
    logvar_b = rng.normal(0.0, 0.1, size=(40, 2))
    groups = np.array(["a"] * 4 + ["b"] * 5 + ["c"] * 31)
    logvar_a[1, 0] += 50.0  # in a condition of 4 epochs: too few for a spread, kept
    logvar_b[2, 1] = np.nan  # invalid (in that condition)
    logvar_a[6, 2] += 50.0  # in a condition of exactly 5: rejected
    # Two epochs of condition c at z = 5.5 and 4.5 on channel 1: above every other epoch, so that
    # the median and MAD are those of the others (placeholders first).
    c = groups == "c"
    logvar_a[[20, 25], 1] = 1e3
    from scipy.stats import median_abs_deviation

    median, mad = np.median(logvar_a[c, 1]), median_abs_deviation(logvar_a[c, 1], scale="normal")
    logvar_a[[20, 25], 1] = median + np.array([5.5, 4.5]) * mad
    z = _robust_z(logvar_a, c)
    assert z[20 - 9, 1] == pytest.approx(5.5, abs=1e-4) and z[25 - 9, 1] == pytest.approx(4.5, abs=1e-4)
    used = np.ones(3, bool), np.ones(2, bool)
    rejection = seg.reject_epochs(logvar_a, logvar_b, *used, groups=groups)  # the default threshold: 5
    assert np.flatnonzero(~rejection.keep).tolist() == [2, 6, 20]
    assert (rejection.invalid, rejection.artifact_a, rejection.artifact_b, rejection.z_threshold) == (1, 2, 0, 5.0)
    rejection = seg.reject_epochs(logvar_a, logvar_b, *used, z_threshold=4.0, groups=groups)
    assert np.flatnonzero(~rejection.keep).tolist() == [2, 6, 20, 25] and rejection.z_threshold == 4.0
    # One channel used: it alone decides.
    only_1 = np.array([False, True, False])
    rejection = seg.reject_epochs(logvar_a, logvar_b, only_1, used[1], groups=groups)
    assert np.flatnonzero(~rejection.keep).tolist() == [2, 20]


def test_an_epoch_exactly_at_the_threshold_is_kept():
    """ "More than z_threshold": median 0 and MAD 1 (robust SD 1.4826) put 7.413 at z = 7.413 / 1.4826."""
    values = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 7.413])[:, None]
    quiet = np.zeros((9, 1))
    used = np.ones(1, bool)
    at = seg.reject_epochs(values, quiet, used, used, z_threshold=7.413 / 1.4826)
    below = seg.reject_epochs(values, quiet, used, used, z_threshold=np.nextafter(7.413 / 1.4826, 0))
    assert at.keep.all() and np.flatnonzero(~below.keep).tolist() == [8]


# --- Screening log-variance -------------------------------------------------------------------


def _reference_log_variance(
    data: np.ndarray, rate: float, high: float, plan: seg.EpochGrid, n_epoch: int, step: int
) -> np.ndarray:
    """The padded block, mean removed, filtered by the squared magnitude of scipy's 4th-order
    Butterworth 1 Hz-``high`` band-pass at every sample (a zero-padded FFT twice as long: no
    circular wrap) and band-limited to half the rate of every ``step``-th sample (what a
    transform at that rate holds), then each epoch's variance over every ``step``-th sample."""
    from scipy import signal

    block = data[:, plan.first : plan.stop].astype(np.float64)
    block = block - block.mean(axis=1, keepdims=True)
    n = 2 * block.shape[1]
    sos = signal.butter(4, [1.0, high], btype="bandpass", fs=rate, output="sos")
    _, response = signal.sosfreqz(sos, worN=np.fft.rfftfreq(n, 1.0 / rate), fs=rate)
    gain = np.abs(response) ** 2 * (np.fft.rfftfreq(n, 1.0 / rate) < rate / (2 * step))
    filtered = np.fft.irfft(np.fft.rfft(block, n) * gain, n)
    index = (plan.starts - plan.first)[:, None] + np.arange(0, n_epoch, step)[None, :]
    return np.log(filtered[:, index].var(axis=2)).T


@pytest.mark.parametrize(
    ("rate", "high", "stated_high", "epoch_length", "step"),
    [
        # 500 Hz: at most 500 / (2.5 x 45) = 4.4 samples apart; 4 divides the epoch (1000) and the
        # FFT length (340 x 45: the default bands' steps 17, 10, 4, 2); 15300 / 4 is odd.
        (500.0, 45.0, 45.0, 2.0, 4),
        # 1002-sample epochs: 4 divides the FFT length (15300) but not them; 3 divides both.
        (500.0, 45.0, 45.0, 2.004, 3),
        # 128 Hz: 128 / 112.5 = 1.1: every sample. A top of 100 Hz is cut to 0.45 x 128 = 57.6 Hz.
        (128.0, 45.0, 45.0, 2.0, 1),
        (128.0, 100.0, 57.6, 2.0, 1),
    ],
)
def test_screening_log_variance_is_scipys_butterworth_at_the_stated_samples(
    rate, high, stated_high, epoch_length, step
):
    """The screening's log-variance against a reference on the samples it says it uses.
    Tolerance: the two FFT lengths put the cut at half the decimated rate (62.5 Hz at 500 Hz,
    where the band-pass's gain is 0.05) between different bins, one bin of about 1400 in the
    band, but a sharp cut whose ringing in 2-s epochs differs (measured: 5e-5 in log-variance);
    2e-4 is below the log-variance change of the next step (sampling error, 3e-3 rms) or of leaving
    out 2.4e-4 of white noise's filtered power above 62.5 Hz."""
    n = int(40 * rate)
    aligned = _aligned(rate, n, seed=int(rate))
    aligned.a[1] = np.cumsum(aligned.a[1]) * 0.1 + aligned.a[1]  # a red spectrum too
    (plan,) = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 29.0, "x")], epoch_length)
    n_epoch = int(round(epoch_length * rate))
    if rate == 500.0:
        assert seg._fft_length(plan.stop - plan.first, [17, 10, 4, 2]) == 15300
        assert step == 3 or 15300 // step % 2 == 1  # an odd inverse transform length (irfft needs it given)
    logvar_a, logvar_b = seg.epoch_log_variance(aligned, [plan], epoch_length, high)
    n_epochs = int(24 * rate) // n_epoch
    assert logvar_a.shape == (n_epochs, 2) and logvar_b.shape == (n_epochs, 2)
    for ours, data in ((logvar_a, aligned.a), (logvar_b, aligned.b)):
        expected = _reference_log_variance(data, rate, stated_high, plan, n_epoch, step)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-4)  # measured 5e-5
    # Invalid epochs are NaN; a plan without epochs adds no row; none at all gives empty arrays.
    plan.valid[3] = False
    empty = seg.plan_epochs(aligned, [seg.Block("y", 38.0, 39.0, "y")], epoch_length)[0]
    logvar_a, _ = seg.epoch_log_variance(aligned, [empty, plan], epoch_length, high)
    assert logvar_a.shape == (n_epochs, 2) and np.isnan(logvar_a[3]).all()
    assert np.isfinite(np.delete(logvar_a, 3, 0)).all()
    none_a, none_b = seg.epoch_log_variance(aligned, [empty], epoch_length, high)
    assert none_a.shape == (0, 2) and none_b.shape == (0, 2)


# --- select_epochs: its parts, composed as documented -----------------------------------------


def _two_condition_dyad(rate: float = 250.0) -> tuple[seg.AlignedDyad, list[seg.Block]]:
    """70 s of noise; "talk" (40-64 s) has 4x the variance of "rest" (4-28 s), B has a burst in
    the epoch at 12 s, and A's unused channel 1 carries a strong 50-Hz line."""
    n = int(70 * rate)
    aligned = _aligned(rate, n, seed=31)
    t = np.arange(n) / rate
    talk = (t >= 40) & (t < 64)
    aligned.a[:, talk] *= 2.0
    aligned.b[:, talk] *= 2.0
    burst = (t >= 12.5) & (t < 13.5)
    aligned.b[0, burst] *= 6.0
    aligned.a[1] += (20 * np.sin(2 * np.pi * 50.0 * t)).astype(np.float32)
    return aligned, [seg.Block("rest", 4.0, 28.0, "rest-1"), seg.Block("talk", 40.0, 64.0, "talk-1")]


def test_select_epochs_is_its_documented_parts_with_the_mains_removed_first():
    from dyadlab.synchrony.mains import MainsRemoval

    aligned, blocks = _two_condition_dyad()
    mains = MainsRemoval((50.0,), aligned.rate, "option")
    used_a, used_b = np.array([True, False]), np.ones(2, bool)
    gamma = {"gamma": (30.0, 45.0)}
    plans, rejection, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used_a, used_b, bands=gamma, mains=mains)

    margin = seg.rejection_margin(aligned.rate, 45.0, gamma, "butterworth", (50.0, 100.0))
    assert margin > seg.rejection_margin(aligned.rate, 45.0, gamma)  # the notch rings too
    # The margin is the longer of the bands' and the 1-45 Hz screening filter's ringing, each with
    # the notch (500 Hz, as documented in filter_margin: a 35-55 Hz band 0.84 s, 0.19 s without).
    wide, notch = {"x": (35.0, 55.0)}, (50.0, 100.0, 150.0, 200.0)
    assert seg.rejection_margin(500.0, 45.0, wide, notch=notch) == seg.filter_margin(wide, 500.0, notch=notch) == 0.844
    assert seg.rejection_margin(500.0, 45.0, gamma, notch=notch) == seg.filter_margin(
        {"s": (1.0, 45.0)}, 500.0, notch=notch
    )
    assert seg.filter_margin({"s": (1.0, 45.0)}, 500.0, notch=notch) == 0.436
    expected_plans = seg.plan_epochs(aligned, blocks, 2.0, margin, pad=3.0)
    logvar_a, logvar_b = seg.epoch_log_variance(
        aligned, expected_plans, 2.0, 45.0, bands=gamma, mains=mains, channels=(used_a, used_b)
    )
    conditions = np.array(["rest"] * 12 + ["talk"] * 12)
    expected = seg.reject_epochs(logvar_a, logvar_b, used_a, used_b, 5.0, groups=conditions)
    for plan, reference in zip(plans, expected_plans, strict=True):
        assert (plan.block, plan.margin, plan.first, plan.stop) == (
            reference.block,
            margin,
            reference.first,
            reference.stop,
        )
        assert plan.starts.tolist() == reference.starts.tolist() and plan.valid.tolist() == reference.valid.tolist()
        assert {side: s.removed for side, s in plan.spectra.items()} == {"a": (50.0, 100.0), "b": (50.0, 100.0)}
        for side in ("a", "b"):
            np.testing.assert_array_equal(plan.line_power[side], reference.line_power[side])
    assert (rejection.invalid, rejection.artifact_a, rejection.artifact_b, rejection.z_threshold) == (0, 0, 1, 5.0)
    np.testing.assert_array_equal(rejection.keep, expected.keep)
    assert np.flatnonzero(~rejection.keep).tolist() == [4]  # the burst at 12.5-13.5 s: epoch 12-14 s
    assert [k.tolist() for k in keep] == [expected.keep[:12].tolist(), expected.keep[12:].tolist()]
    lenient = seg.select_epochs(aligned, blocks, 2.0, 45.0, used_a, used_b, 100.0, bands=gamma, mains=mains)[1]
    assert lenient.keep.all() and lenient.z_threshold == 100.0
    # Per condition: pooled over the session, the spread between the conditions hides the burst.
    assert seg.reject_epochs(logvar_a, logvar_b, used_a, used_b).keep.all()
    # The line power is that of A's used channel (unit-variance noise: 2 Hz of 125 Hz, about 0.02),
    # not of the unused one with its 50-Hz line (power 200).
    assert all(plan.line_power["a"].max() < 0.1 for plan in plans)


def test_the_screening_spectra_serve_the_band_signals_with_each_decimation(monkeypatch):
    """One spectrum per block and participant for the screening and the band signals together,
    with the defaults on both sides and with ``decimate=False`` on both (the FFT lengths differ:
    15300 and 15000 samples for this block); the default pad is 3 s."""
    aligned = _aligned(500.0, 20000, seed=41)
    blocks = [seg.Block("x", 5.0, 29.0, "x")]
    used = np.ones(2, bool)
    calls: list[int] = []
    spectrum = seg._spectrum
    monkeypatch.setattr(seg, "_spectrum", lambda data, n_fft: calls.append(n_fft) or spectrum(data, n_fft))
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used)
    assert plans[0].starts[0] - plans[0].first == 1500 and plans[0].stop - plans[0].starts[-1] == 1000 + 1500
    seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used)
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used, decimate=False)
    seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, decimate=False)
    plans = seg.plan_epochs(aligned, blocks, 2.0)
    seg.epoch_log_variance(aligned, plans, 2.0, 45.0)
    seg.condition_epochs(aligned, plans, [p.valid for p in plans], 2.0, seg.DEFAULT_BANDS, used, used)
    # The "hypyp" FIR keeps every bin below the rate of each band (its side lobes): the kept spectra too.
    plans, _, keep = seg.select_epochs(aligned, blocks, 2.0, 45.0, used, used, band_filter="hypyp")
    seg.condition_epochs(aligned, plans, keep, 2.0, seg.DEFAULT_BANDS, used, used, band_filter="hypyp")
    assert calls == [15300, 15300, 15000, 15000, 15300, 15300, 15300, 15300]


# --- The "hypyp" designs against MNE and HyPyP --------------------------------------------------

mne = pytest.importorskip("mne")
EEGLAB = Path(__file__).resolve().parents[1] / "data" / "eeglab" / "eeglab_data.set"


def _zero_phase_amplitude(taps: np.ndarray, freqs: np.ndarray, rate: float) -> np.ndarray:
    """scipy's frequency response of the causal FIR, its delay of half the length removed: real."""
    from scipy import signal

    _, response = signal.freqz(taps, worN=freqs, fs=rate)
    centred = response * np.exp(2j * np.pi * freqs * (taps.size // 2) / rate)
    assert np.abs(centred.imag).max() < 1e-9  # symmetric taps: zero phase once centred
    return centred.real


def test_hypyp_gain_is_the_signed_zero_phase_response_of_mnes_fir():
    """Signed (the side lobes are negative), on rfft grids at least as long as the FIR, on one
    shorter than it, off any grid, and on more frequencies than one batch of cosines (4096)."""
    rate, band = 128.0, (4.0, 7.0)
    taps = mne.filter.create_filter(None, rate, *band, verbose="error")
    assert taps.size == 213
    for freqs in (
        np.fft.rfftfreq(4096, 1.0 / rate),
        np.fft.rfftfreq(213, 1.0 / rate),
        np.fft.rfftfreq(200, 1.0 / rate),  # shorter than the FIR: the sum
        np.linspace(0.37, 63.9, 9000),  # more than two batches of cosines
        np.linspace(0.0, 63.9, 5000),  # from 0 Hz, but no rfft grid
        np.arange(2000) * (rate / 4096) * (1 + 1e-7),  # 1e-7 off an rfft grid: not one
        np.array([0.0]),
        np.array([0.0, 1.0]),
    ):
        gain = seg._band_gain(freqs, band, rate, "hypyp")
        np.testing.assert_allclose(gain, _zero_phase_amplitude(taps, freqs, rate), rtol=0, atol=1e-12)
    assert seg._band_gain(np.linspace(10, 60, 500), band, rate, "hypyp").min() < -1e-4
    with pytest.raises(seg.SegmentationError) as refused:
        seg._band_gain(np.arange(3.0), (4.0, 64.0), rate)
    assert str(refused.value) == "Band 4-64 Hz reaches the Nyquist frequency (64 Hz) of the data."
    with pytest.raises(seg.SegmentationError) as refused:
        seg._band_gain(np.arange(3.0), band, rate, "fir")
    assert str(refused.value) == "Unknown band filter 'fir': choose one of butterworth, hypyp, hypyp-epochs."


@pytest.mark.parametrize("rate", [250.0, 128.0])
@pytest.mark.parametrize("band_filter", seg.BAND_FILTERS)
def test_band_filter_description_is_measured_from_the_response(band_filter, rate):
    """At 128 Hz the FIR's length (213 / 128 = 1.6640625 s) and the ringing (multiples of 1/128 s)
    have more digits than the description keeps."""
    from scipy import signal

    band = (8.0, 12.0)
    freqs = np.arange(int(round(rate / 0.01)) // 2 + 1) * 0.01
    if band_filter == "butterworth":
        sos = signal.butter(4, band, btype="bandpass", fs=rate, output="sos")
        gain = np.abs(signal.sosfreqz(sos, worN=freqs, fs=rate)[1]) ** 2
    else:
        taps = mne.filter.create_filter(None, rate, *band, verbose="error")
        gain = _zero_phase_amplitude(taps, freqs, rate)

    def span(level: float) -> list[float]:
        above = freqs[gain >= level]
        return [round(float(above[0]), 2), round(float(above[-1]), 2)]

    expected = {"design": band_filter, "edges_hz": [8.0, 12.0]}
    if band_filter == "butterworth":
        expected["edges_meaning"] = (
            "-6 dB points: squared magnitude of an order-4 Butterworth band-pass (forward-backward)"
        )
        expected["order"] = 4
    else:
        expected["edges_meaning"] = (
            "passband edges of MNE's default FIR (firwin, Hamming window), as HyPyP's compute_freq_bands "
            "filters: -6 dB half a transition band outside them"
        )
        if band_filter == "hypyp-epochs":
            expected["edges_meaning"] += "; applied to each epoch separately (MNE pads it), as HyPyP's pipeline"
        expected.update(fir_taps=taps.size, fir_length_s=round(taps.size / rate, 4))
    passband, stopband = span(0.99), span(0.01)
    expected.update(
        passband_hz=passband,
        minus_3db_hz=span(2**-0.5),
        minus_6db_hz=span(0.5),
        transition_hz=[round(passband[0] - stopband[0], 2), round(stopband[1] - passband[1], 2)],
        ringing_s=round(seg.filter_margin({"b": band}, rate, band_filter), 3),
    )
    described = seg.describe_band_filter(band, rate, band_filter)
    assert described == expected
    if band_filter == "butterworth":
        assert seg.describe_band_filter(band, rate) == expected  # the default design
    assert list(described) == list(expected)  # the JSON's key order
    assert all(value > 0 for value in described["transition_hz"])


def test_hypyp_band_signal_is_mne_filter_data_at_every_and_every_nth_sample():
    """The "hypyp" design through block_analytic and iter_band_analytic (decimated): the real part
    is MNE's filter_data of the same continuous data, away from the ends (float64 rounding)."""
    rate, band = 128.0, (8.0, 12.0)
    # 4096 samples: an FFT length that 3 does not divide, with a Nyquist bin the FIR does not zero.
    data = np.random.default_rng(51).standard_normal((3, 4096))
    data -= data.mean(axis=1, keepdims=True)
    expected = mne.filter.filter_data(data, rate, *band, verbose="error")
    middle = slice(213, data.shape[1] - 213)  # beyond the FIR's length (at most 213 taps)
    scale = np.abs(expected).max()
    full = seg.block_analytic(data, rate, {"alpha": band}, band_filter="hypyp")["alpha"]
    np.testing.assert_allclose(full.real[:, middle], expected[:, middle], rtol=0, atol=1e-9 * scale)
    step = seg.analysis_step(rate, band[1])
    ((name, decimated),) = seg.iter_band_analytic(
        data, rate, {"alpha": band}, steps={"alpha": step}, start=1000, stop=3000, band_filter="hypyp"
    )
    assert name == "alpha" and step == 2 and decimated.shape == (3, 1000)
    # The decimated transform leaves out the FIR's side lobes above 32 Hz (gain about 1e-3; measured
    # 2e-6 of the peak), far below a design's difference (the Butterworth's: 0.1).
    np.testing.assert_allclose(decimated.real, expected[:, 1000:3000:step], rtol=0, atol=1e-5 * scale)


def test_hypyp_epochs_are_hypyps_compute_freq_bands_of_the_cleaned_epochs():
    """``"hypyp-epochs"`` on real EEG (EEGLAB tutorial, 128 Hz; A and B are two sets of its
    channels): each kept epoch, cut from its block with the block's channel means removed (and the
    mains removed from the block's spectrum when asked), through HyPyP 0.6's compute_freq_bands.
    Tolerance: dyadlab holds the epochs in float32 (6e-8 relative) and returns complex64."""
    from hypyp.analyses import compute_freq_bands

    from dyadlab.synchrony.mains import MainsRemoval, notch_gain

    raw = mne.io.read_raw_eeglab(EEGLAB, preload=False, verbose="error")
    rate = float(raw.info["sfreq"])
    eeg = raw.get_data(picks=list(range(8)), start=0, stop=int(60 * rate)) * 1e6
    aligned = seg.AlignedDyad(
        rate, 0.0, eeg[:4].astype(np.float32), eeg[4:].astype(np.float32), np.ones(eeg.shape[1], bool)
    )
    bands = {"theta": (4.0, 7.0), "gamma": (30.0, 45.0)}  # gamma's FIR passes half of 50.6 Hz
    margin = seg.filter_margin(bands, rate, "hypyp-epochs")
    plans = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 25.0, "x-1"), seg.Block("x", 30.0, 50.0, "x-2")], 2.0, margin)
    keep = [np.zeros(10, bool), np.arange(10) != 3]  # the first block has no kept epoch
    used = np.ones(4, bool)
    mains = MainsRemoval((50.0,), rate, "option")

    def reference(removal: MainsRemoval | None) -> np.ndarray:
        plan = plans[1]
        blocks = []
        for data in (aligned.a, aligned.b):
            block = data[:, plan.first : plan.stop].astype(np.float64)
            block = block - block.mean(axis=1, keepdims=True)
            if removal is not None:
                n_fft = 2 * block.shape[1]  # the notch's ringing is far shorter than the pad
                gain = notch_gain(np.fft.rfftfreq(n_fft, 1.0 / rate), removal.removed)
                block = np.fft.irfft(np.fft.rfft(block, n_fft) * gain, n_fft)[:, : block.shape[1]]
            index = (plan.starts[keep[1]] - plan.first)[:, None] + np.arange(256)[None, :]
            blocks.append(block[:, index].swapaxes(0, 1).astype(np.float32).astype(np.float64))
        return compute_freq_bands(np.stack(blocks), rate, {name: list(edges) for name, edges in bands.items()})

    references = {removal: reference(removal) for removal in (None, mains)}
    # The mains removal changes gamma by far more than the tolerances below.
    assert (
        np.abs(references[None][..., 1, :] - references[mains][..., 1, :]).max() > 0.01 * np.abs(references[None]).max()
    )
    for removal, expected in references.items():
        full = seg.condition_epochs(
            aligned, plans, keep, 2.0, bands, used, used, decimate=False, mains=removal, band_filter="hypyp-epochs"
        )
        fast = seg.condition_epochs(
            aligned, plans, keep, 2.0, bands, used, used, mains=removal, band_filter="hypyp-epochs"
        )
        for k, band in enumerate(bands):
            scale = np.abs(expected[..., k, :]).max()
            # float32 epochs and complex64 results: measured 4e-8 of the peak. With the notch, its
            # ringing (seconds: it is 1 Hz wide) wraps around the block's FFT (dyadlab's length) or
            # runs into zeros (twice the length here): measured 3e-5 of the peak in gamma.
            tolerance = (1e-6 if removal is None else 1e-4) * scale
            assert full[band].za.shape == (9, 4, 256) and full[band].za.dtype == np.complex64
            np.testing.assert_allclose(full[band].za, expected[0, :, :, k], rtol=0, atol=tolerance)
            np.testing.assert_allclose(full[band].zb, expected[1, :, :, k], rtol=0, atol=tolerance)
            step = seg.analysis_step(rate, bands[band][1])  # theta 128 // 28 = 4, gamma 1
            assert fast[band].za.tobytes() == full[band].za[:, :, ::step].tobytes()
            assert fast[band].zb.tobytes() == full[band].zb[:, :, ::step].tobytes()
    assert all(not p.spectra for p in plans)
    none = seg.condition_epochs(
        aligned, plans, [np.zeros(10, bool)] * 2, 2.0, bands, used, used, band_filter="hypyp-epochs"
    )
    assert none["theta"].za.shape == (0, 4, 64) and none["gamma"].zb.shape == (0, 4, 256)
    with pytest.raises(seg.SegmentationError) as refused:
        seg.condition_epochs(aligned, plans, keep, 2.0, bands, used, used, continuous=True, band_filter="hypyp-epochs")
    assert str(refused.value) == (
        "band_filter='hypyp-epochs' filters each epoch on its own and makes no continuous signal for circular "
        "shifts: use the epoch-shuffle null, or band_filter='hypyp' (the same FIR on the blocks)."
    )


# --- Band epochs against a reference analytic signal ------------------------------------------


def _design_gain(band_filter: str, band: tuple[float, float], rate: float, freqs: np.ndarray) -> np.ndarray:
    """The band's gain from scipy alone: Butterworth's squared magnitude, or MNE's FIR centred."""
    from scipy import signal

    if band_filter == "butterworth":
        sos = signal.butter(4, band, btype="bandpass", fs=rate, output="sos")
        return np.abs(signal.sosfreqz(sos, worN=freqs, fs=rate)[1]) ** 2
    return _zero_phase_amplitude(mne.filter.create_filter(None, rate, *band, verbose="error"), freqs, rate)


def _reference_analytic(
    block: np.ndarray, gain: object, rate: float, step: int, notch: tuple[float, ...] = ()
) -> np.ndarray:
    """Analytic signal of the mean-removed block filtered by ``gain(freqs)`` (and the mains
    ``notch``), with a zero-padded FFT twice as long (no wrap-around), at every sample; its
    frequencies limited to below ``rate / step`` (what a complex signal at that rate holds)."""
    from dyadlab.synchrony.mains import notch_gain

    x = block.astype(np.float64) - block.astype(np.float64).mean(axis=1, keepdims=True)
    n = 2 * x.shape[1]
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    one_sided = np.fft.rfft(x, n) * (gain(freqs) * notch_gain(freqs, notch) * (freqs < rate / step) * 2.0)
    one_sided[:, 0] /= 2.0
    one_sided[:, -1] /= 2.0
    spectrum = np.zeros((x.shape[0], n), dtype=complex)
    spectrum[:, : freqs.size] = one_sided
    return np.fft.ifft(spectrum, axis=1)[:, : x.shape[1]]


@pytest.mark.parametrize("band_filter", ["butterworth", "hypyp"])
def test_band_epochs_and_block_signals_are_the_reference_analytic_signal_at_their_samples(band_filter):
    """Two blocks with epochs dropped, A with 3 channels (2 used) and B with 2, with and without the
    mains removed: every kept epoch and each block's continuous signal is the reference analytic
    signal of the padded block at the epoch's samples: every ``step``-th (theta: 8, beta: 2 at
    250 Hz) from the block's first epoch, each epoch from the one nearest its start (2-s epochs are
    62.5 theta steps long: up to half a step, 16 ms, early or late, as documented).
    Tolerance 1e-4 of the peak: complex64 (6e-8), the gain floor (1e-7), and the cut at
    ``rate / step`` falling between different bins of the two FFT lengths where the FIR's side
    lobes are near 1e-3 (measured: 1.8e-5)."""
    from dyadlab.synchrony.mains import MainsRemoval

    rate = 250.0
    rng = np.random.default_rng(61)
    n = int(60 * rate)
    t = np.arange(n) / rate
    a = rng.standard_normal((3, n)) + 3 * np.sin(2 * np.pi * 50.0 * t)
    b = rng.standard_normal((2, n)) + 3 * np.sin(2 * np.pi * 50.0 * t)
    aligned = seg.AlignedDyad(rate, 0.0, a.astype(np.float32), b.astype(np.float32), np.ones(n, bool))
    bands = {"theta": (4.0, 7.0), "beta": (13.0, 30.0)}
    mains = MainsRemoval((50.0,), rate, "option")
    margin = seg.filter_margin(bands, rate, band_filter, mains.removed)
    # 8 epochs in the first block: the last starts 437.5 theta steps in, rounded up to 438, and
    # its 63 samples would end one past the block's signal: it is moved back to end there.
    plans = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 21.0, "x-1"), seg.Block("x", 32.0, 50.0, "x-2")], 2.0, margin)
    keep = [np.isin(np.arange(8), [0, 4, 5, 7]), np.arange(9) != 0]
    used_a, used_b = np.array([True, False, True]), np.array([False, True])
    for removal in (None, mains):
        notch = () if removal is None else removal.removed
        epochs = seg.condition_epochs(
            aligned, plans, keep, 2.0, bands, used_a, used_b, continuous=True, mains=removal, band_filter=band_filter
        )
        for band, (low, high) in bands.items():
            step = seg.analysis_step(rate, high)
            za, zb = epochs[band].za, epochs[band].zb
            assert za.shape == (12, 2, len(range(0, 500, step))) and zb.shape == (12, 1, za.shape[2])
            row = 0
            for plan, kept, signal_of_block in zip(plans, keep, epochs[band].blocks, strict=True):
                nearest = np.round((plan.starts[kept] - plan.starts[0]) / step).astype(int)
                n_block = len(range(0, plan.starts[-1] + 500 - plan.starts[0], step))
                nearest = np.minimum(nearest, n_block - len(range(0, 500, step)))
                assert signal_of_block.starts.tolist() == nearest.tolist()
                starts = plan.starts[0] + step * nearest
                for ours, block_of, data, used in (
                    (za, signal_of_block.za, a, used_a),
                    (zb, signal_of_block.zb, b, used_b),
                ):
                    reference = _reference_analytic(
                        data[used, plan.first : plan.stop].astype(np.float32),
                        lambda f, band=(low, high): _design_gain(band_filter, band, rate, f),
                        rate,
                        step,
                        notch,
                    )
                    scale = np.abs(reference).max()
                    for k, start in enumerate(starts - plan.first):
                        np.testing.assert_allclose(
                            ours[row + k], reference[:, start : start + 500 : step], rtol=0, atol=1e-4 * scale
                        )
                    whole = reference[:, plan.starts[0] - plan.first : plan.starts[-1] + 500 - plan.first : step]
                    assert block_of.shape == whole.shape
                    np.testing.assert_allclose(block_of, whole, rtol=0, atol=1e-4 * scale)
                row += starts.size


def test_screening_removes_the_mains_and_measures_its_power_per_epoch_on_the_used_channels():
    """A 50-Hz line growing through the recording on A's used channel and B's second channel, a
    strong one on A's unused channel. Line power: the reference is the mean square, over each
    epoch's samples, of the block's content within 1 Hz of 50 Hz (a 2x zero-padded FFT), averaged
    over the channels; the module reads it from every step-th sample of the envelope of a shorter
    transform: within 1 % (the noise within the 1-Hz half-width on two FFT grids, 0.8 % of the
    line's power, measured 0.3 %). The log-variance is the notched signal's."""
    import warnings

    from dyadlab.synchrony.mains import MainsRemoval

    rate = 250.0
    n = int(40 * rate)
    aligned = _aligned(rate, n, seed=71)
    t = np.arange(n) / rate
    line = np.sin(2 * np.pi * 50.0 * t) * (0.5 + 0.1 * t)
    aligned.a[0] += line.astype(np.float32)
    aligned.a[1] += (20 * np.sin(2 * np.pi * 50.0 * t)).astype(np.float32)
    aligned.b[1] += line.astype(np.float32)
    (plan,) = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 29.0, "x")], 2.0)
    mains = MainsRemoval((50.0,), rate, "option")
    used_a, used_b = np.array([True, False]), np.ones(2, bool)
    logvar_a, logvar_b = seg.epoch_log_variance(aligned, [plan], 2.0, 45.0, mains=mains, channels=(used_a, used_b))

    n_fft = 2 * (plan.stop - plan.first)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    index = (plan.starts - plan.first)[:, None] + np.arange(500)[None, :]

    def line_power(data: np.ndarray) -> np.ndarray:
        block = data[:, plan.first : plan.stop].astype(np.float64)
        block = block - block.mean(axis=1, keepdims=True)
        narrow = np.fft.irfft(np.fft.rfft(block, n_fft) * (np.abs(freqs - 50.0) <= 1.0), n_fft)
        return np.mean(narrow[:, index] ** 2, axis=(0, 2))

    np.testing.assert_allclose(plan.line_power["a"], line_power(aligned.a[:1]), rtol=0.01)
    np.testing.assert_allclose(plan.line_power["b"], line_power(aligned.b), rtol=0.01)
    assert plan.line_power["a"][-1] > 1.5 * plan.line_power["a"][0]  # the line grows: the epochs are told apart
    # 250 / (2.5 x 45) = 2.2: every 2nd sample; the notch removes 50 and 100 Hz.
    from dyadlab.synchrony.mains import notch_gain

    for ours, data in ((logvar_a, aligned.a), (logvar_b, aligned.b)):
        notched = np.fft.irfft(
            np.fft.rfft(data[:, plan.first : plan.stop], n_fft) * notch_gain(freqs, (50.0, 100.0)), n_fft
        )[:, : plan.stop - plan.first]
        padded = np.zeros_like(data, dtype=np.float64)
        padded[:, plan.first : plan.stop] = notched
        expected = _reference_log_variance(padded, rate, 45.0, plan, 500, 2)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-4)
    unnotched, _ = seg.epoch_log_variance(aligned, [plan], 2.0, 45.0)
    assert np.abs(unnotched[:, 1] - logvar_a[:, 1]).min() > 1.0  # the 20-amplitude line is gone

    # Without channels, every channel's line power counts; a flat channel's log-variance is -inf,
    # silently (it is excluded from the metrics, and the rejection ignores it).
    (plan,) = seg.plan_epochs(aligned, [seg.Block("x", 5.0, 29.0, "x")], 2.0)
    aligned.b[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, logvar_b = seg.epoch_log_variance(aligned, [plan], 2.0, 45.0, mains=mains)
    np.testing.assert_allclose(plan.line_power["a"], line_power(aligned.a), rtol=0.01)
    assert np.isneginf(logvar_b[:, 0]).all() and np.isfinite(logvar_b[:, 1]).all()


def test_band_epochs_refuse_plans_whose_margin_misses_the_ringing_and_make_no_block_signal_unasked():
    from dyadlab.synchrony.mains import MainsRemoval

    rate = 250.0
    aligned = _aligned(rate, int(60 * rate), seed=81)
    blocks = [seg.Block("x", 5.0, 25.0, "x-1"), seg.Block("x", 30.0, 50.0, "x-2")]
    used = np.ones(2, bool)
    theta, gamma = {"theta": (4.0, 7.0)}, {"gamma": (30.0, 45.0)}
    plans = seg.plan_epochs(aligned, blocks, 2.0, margin=seg.filter_margin(gamma, rate))
    keep = [p.valid for p in plans]
    with pytest.raises(seg.SegmentationError) as refused:
        seg.condition_epochs(aligned, plans, keep, 2.0, theta, used, used)
    assert str(refused.value) == (
        f"Blocks x-1, x-2 were planned with a filter margin shorter than the ringing of the bands "
        f"({seg.filter_margin(theta, rate):.2f} s): plan them with these bands (select_epochs(bands=...) or "
        "plan_epochs(margin=...))."
    )
    # The mains removal rings too: gamma with 50 Hz removed needs more than gamma alone.
    mains = MainsRemoval((50.0,), rate, "option")
    assert seg.filter_margin(gamma, rate, notch=mains.removed) > plans[0].margin
    with pytest.raises(seg.SegmentationError, match="filter margin shorter"):
        seg.condition_epochs(aligned, plans, keep, 2.0, gamma, used, used, mains=mains)
    ((band, epochs),) = seg.iter_condition_epochs(aligned, plans, keep, 2.0, gamma, used, used)
    assert band == "gamma" and epochs.blocks == [] and epochs.za.shape == (20, 2, 500)


# --- The common timeline ----------------------------------------------------------------------


def _tone(t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * 7.0 * t)


def test_a_gap_and_isolated_samples_leave_exactly_the_uncovered_grid_samples_invalid():
    """100 Hz, exact stamps from LSL time 100 s. B loses 1 s (samples 3000-3099: beyond the
    25-sample gap limit), keeps one lone sample (4000) and one lone pair (5000-5001) between gaps.
    Each segment covers the grid from half a sample before its first sample to half a sample
    after its last; a lone sample is dropped (no line through one point), a pair is kept."""
    rate = 100.0
    n = 6000
    t = 100.0 + np.arange(n) / rate
    a = participant_eeg("A", _tone(t)[None, :], rate, timestamps=t)
    kept = np.r_[0:3000, 3100:3960, 4000, 4040:4960, 5000:5002, 5040:n]
    b = participant_eeg("B", _tone(t[kept])[None, :], rate, timestamps=t[kept])
    aligned = seg.align_dyad(a, b)
    invalid = np.flatnonzero(~aligned.valid)
    expected = np.r_[3000:3100, 3960:4040, 4960:5000, 5002:5040]
    assert invalid.tolist() == expected.tolist()
    valid = aligned.valid.copy()
    np.testing.assert_allclose(aligned.b[0, valid], _tone(t[valid]), atol=1e-4)


@pytest.mark.parametrize(
    "lost",
    [[2500], [2500, 2501], [2500, 2502], [4996]],
    ids=["one", "two", "around-a-lone-sample", "before-the-last"],
)
def test_lost_samples_are_counted(lost):
    """Lost samples below the gap limit, with jitter of +-0.1 sample (one; two; two around a lone
    sample; the one before the recording's last): the grid samples in their place are invalid, and
    the data on both sides land at their true times (a sample lost and not counted would shift
    everything after it by a sample: 0.18 in this 7-Hz tone)."""
    rate = 250.0
    n = int(20 * rate) - 2
    true_t = np.arange(n) / rate
    a = participant_eeg("A", _tone(true_t)[None, :], rate)
    kept = np.setdiff1d(np.arange(n), lost)
    stamps = true_t[kept] + np.random.default_rng(len(lost)).uniform(-0.1, 0.1, kept.size) / rate
    b = participant_eeg("B", _tone(true_t[kept])[None, :], rate, timestamps=stamps)
    aligned = seg.align_dyad(a, b)
    invalid = np.flatnonzero(~aligned.valid)
    assert set(lost) <= set(invalid.tolist()) and invalid.min() >= lost[0] - 1 and invalid.max() <= lost[-1] + 1
    grid_t = true_t[: aligned.n_samples]
    np.testing.assert_allclose(aligned.b[0, aligned.valid], _tone(grid_t[aligned.valid]), atol=0.01)


def test_gaps_and_dead_channels_count_as_zeros_around_the_mean_of_the_finite_samples():
    """A channel with a NaN stretch is filtered as its finite samples minus their mean, with zeros
    in the stretch; a dead (all-NaN) channel gives zeros; neither spreads NaN to the others."""
    rate = 128.0
    rng = np.random.default_rng(91)
    data = rng.standard_normal((3, int(30 * rate))) + np.array([[5.0], [-300.0], [0.0]])
    data[1, 1000:1100] = np.nan
    data[2] = np.nan
    analytic = seg.block_analytic(data, rate, {"alpha": (8.0, 12.0)})["alpha"]
    finite = np.isfinite(data)
    cleaned = np.where(finite, data - np.array([[np.mean(data[0])], [np.nanmean(data[1])], [0.0]]), 0.0)
    expected = _reference_analytic(cleaned, lambda f: _design_gain("butterworth", (8.0, 12.0), rate, f), rate, 1)
    # 5 s from the ends: the two FFT lengths differ (dyadlab's wraps around), and the Butterworth's
    # ringing (1 % at 0.9 s) is at 1e-5 at 2 s, far below 1e-6 at 5 s; the gain floor drops bins
    # below 1e-7 (measured: 7e-8 of the peak).
    scale = np.abs(expected).max()
    middle = slice(int(5 * rate), -int(5 * rate))
    np.testing.assert_allclose(analytic[:, middle], expected[:, middle], rtol=0, atol=1e-6 * scale)
    assert np.isfinite(analytic).all() and not analytic[2].any()


@pytest.mark.parametrize("drift", [1.00015, 0.99985])
def test_grid_values_are_numpy_interp_of_each_segment_on_its_fitted_line(drift):
    """A clock 150 ppm fast or slow (1.2 samples of slip over one interpolation chunk of 8192),
    with jitter, and a 0.5-s gap after which the samples fall 0.4 of a sample after the grid's:
    each segment's grid samples are np.interp of its samples at the times of its least-squares
    line (numpy's polyfit), clamped at its ends; outside the segments NaN."""
    rate = 200.0
    n = int(90 * rate)
    rng = np.random.default_rng(101)
    data = rng.standard_normal((2, n)).astype(np.float32)
    stamps = 50.0 + np.arange(n) / (rate * drift) + rng.uniform(-0.05, 0.05, n) / rate
    # A gap (100 samples, beyond the limit of 25), after which the first sample lies 0.4 of a
    # sample after a grid sample (the drift has moved it by 9000 / drift - 9000 samples).
    stamps[9000:] += 0.5 + ((0.4 - 9000 / drift) % 1.0) / rate
    a = participant_eeg("A", data, rate, timestamps=stamps)
    b = participant_eeg("B", np.zeros((1, n + 400)), rate, timestamps=49.0 + np.arange(n + 400) / rate)
    aligned = seg.align_dyad(a, b)
    assert aligned.a.dtype == np.float32 and aligned.b.dtype == np.float32
    grid_t = aligned.start + np.arange(aligned.n_samples) / rate
    covered = np.zeros(aligned.n_samples, bool)
    for first, stop in ((0, 9000), (9000, n)):
        slope, t0 = np.polyfit(np.arange(stop - first), stamps[first:stop], 1)
        inside = (grid_t >= t0 - slope / 2) & (grid_t <= t0 + (stop - first - 0.5) * slope)
        assert inside.sum() > 8192  # more than one chunk
        positions = (grid_t[inside] - t0) / slope
        for c in range(2):
            expected = np.interp(positions, np.arange(stop - first), data[c, first:stop].astype(np.float64))
            np.testing.assert_allclose(aligned.a[c, inside], expected, rtol=0, atol=1e-5)
        covered |= inside
    # The segments' ends fall between grid samples: the first after the gap lies before its first
    # sample (clamped to it), the last before the gap after its last one.
    assert np.isnan(aligned.a[:, ~covered]).all() and not np.isnan(aligned.a[:, covered]).any()


def test_alignment_refuses_touching_recordings_and_ends_with_the_earlier_one():
    rate = 100.0
    a = participant_eeg("A", np.zeros((1, 1001)), rate, timestamps=np.arange(1001) / rate)
    b = participant_eeg("B", np.zeros((1, 500)), rate, timestamps=10.0 + np.arange(500) / rate)
    with pytest.raises(seg.SegmentationError) as refused:
        seg.align_dyad(a, b)  # A ends at 10.000 s, where B starts: no overlap
    assert str(refused.value) == (
        "The two EEG recordings do not overlap in time: A runs 0.000-10.000 s and B 10.000-14.990 s (LSL time, "
        "after clock synchronisation). They were recorded at different times or without clock offsets; check "
        "the file with `dyadlab inspect`."
    )
    b = participant_eeg("B", np.zeros((1, 500)), rate, timestamps=5.0 + np.arange(500) / rate)
    aligned = seg.align_dyad(a, b)  # B: 5.00-9.99 s
    assert (aligned.start, aligned.n_samples, aligned.valid.all()) == (5.0, 500, True)


def test_a_participant_at_a_rate_that_is_not_a_multiple_is_resampled_onto_the_grid():
    """500 Hz onto a 200-Hz grid (2/5): a 7-Hz tone stays itself at the grid's times."""
    t_a, t_b = np.arange(int(20 * 200)) / 200.0, np.arange(int(20 * 500)) / 500.0
    a = participant_eeg("A", _tone(t_a)[None, :], 200.0, timestamps=t_a)
    b = participant_eeg("B", _tone(t_b)[None, :], 500.0, timestamps=t_b)
    aligned = seg.align_dyad(a, b)
    assert aligned.rate == 200.0 and aligned.b.dtype == np.float32
    inner = slice(100, -100)  # resample_poly's edges
    grid_t = np.arange(aligned.n_samples) / 200.0
    # resample_poly's anti-aliasing filter passes 7 Hz at 1.001 (measured error 1.1e-3).
    np.testing.assert_allclose(aligned.b[0, inner], _tone(grid_t[inner]), atol=3e-3)
    # NaN at 10.0-10.1 s (grid 2000-2019): the grid samples the resampling filter spreads it to
    # (more than 1e-3 of it) are invalid, up to 50 ms beyond it; the valid ones stay accurate.
    with_nan = _tone(t_b)
    with_nan[5000:5050] = np.nan
    aligned = seg.align_dyad(a, participant_eeg("B", with_nan[None, :], 500.0, timestamps=t_b))
    invalid = np.flatnonzero(~aligned.valid)
    assert invalid.min() >= 2000 - 10 and invalid.max() <= 2019 + 10 and set(range(2000, 2020)) <= set(invalid)
    kept = (
        aligned.valid & (np.arange(aligned.n_samples) >= 100) & (np.arange(aligned.n_samples) < aligned.n_samples - 100)
    )
    np.testing.assert_allclose(aligned.b[0, kept], _tone(grid_t[kept]), atol=3e-3)
