"""HyPyP-comparable values: dyadlab's band filters against HyPyP 0.6's whole pipeline (issue #12).

Data: the EEGLAB tutorial recording in ``tests/data/eeglab`` (real EEG, 30 EEG channels after the
two EOG channels are dropped, 128 Hz, 238 s), split into a "dyad" of its two halves (A the first
119 s, B the second: independent, as two people's EEG) and, with ``--rate 500``, the same
upsampled to 500 Hz (``scipy.signal.resample_poly``; the content stays below 64 Hz) so that every
band is decimated as a 500-Hz recording would be. The HyPyP dyad in ``tests/data/hypyp`` cannot
serve: its 33 one-second epochs per participant are not contiguous, and dyadlab filters continuous
blocks.

The same non-overlapping 2-s epochs (those dyadlab keeps: away from the ends by its filter margin)
go through:

- ``hypyp``: HyPyP's default pipeline, ``compute_freq_bands`` (``mne.filter.filter_data`` with its
  defaults on each *epoch*, padded by MNE, then ``scipy.signal.hilbert`` per epoch) and
  ``compute_sync`` (NumPy backend), inter-brain block;
- ``hypyp-continuous``: HyPyP's own functions given the continuous half-recording as one epoch (MNE's
  FIR and the Hilbert transform on the continuous signal), then cut into the same epochs and given
  to ``compute_sync``: HyPyP's filters without per-epoch edge effects;
- dyadlab with ``band_filter="hypyp"``, ``"hypyp-epochs"`` and ``"butterworth"`` (default), each at
  every sample (``decimate=False``) and at the analysis rate (``decimate=True``, the quick-check's
  default).

Every pipeline is given the halves with each channel's mean removed: dyadlab removes each block's
channel means before filtering (a DC offset would leak through the FIR's stopband), so HyPyP is
given the same signal.

Printed and written (``benchmarks/results/hypyp_pipeline.json``), per band and metric: the mean
value of each pipeline over pairs, and the maximum and mean absolute difference per channel pair
between pipelines, with the decimation error (dyadlab decimated against full rate, same design)
for comparison. "Reproduces HyPyP's pipeline" means: the same filter response applied to the
continuous signal, so that ``dyadlab hypyp (full rate)`` equals ``hypyp-continuous`` to rounding
and ``dyadlab hypyp`` equals it within the decimation error; per-epoch filtering (``hypyp``) adds
edge effects, shown separately, which the ``hypyp`` option does not reproduce on purpose (filtering
each epoch creates spurious envelope correlation between independent signals). The
``hypyp-epochs`` option reproduces HyPyP's default pipeline itself (MNE's ``filter_data`` on each
epoch, Hilbert per epoch), for comparability: at every sample it equals ``hypyp`` to float32
rounding (dyadlab holds the grid in float32), and decimated within the decimation error of that
design. PLI is the exception at every sample (up to 0.003 per pair): MNE's padding makes each
per-epoch filtered signal zero at the epoch's first and last sample (1e-15 of its peak), so the
cross term is real there and the sign PLI counts is rounding noise, in HyPyP itself too. Both agreements are printed
per band and metric (max and mean difference per pair next to the decimation error) with a
pass/fail line.

Run: ``python -m benchmarks.bench_hypyp_pipeline [--rate 128|500] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from dyadlab.synchrony import segments as seg
from dyadlab.synchrony.metrics import METRICS, inter_brain_connectivity

LOG = logging.getLogger(__name__)
RESULTS = Path(__file__).parent / "results" / "hypyp_pipeline.json"
RECORDING = Path(__file__).resolve().parents[1] / "tests" / "data" / "eeglab" / "eeglab_data.set"
EPOCH_LENGTH_S = 2.0
BANDS = dict(seg.DEFAULT_BANDS)
# HyPyP's NumPy PLI/wPLI hold (epochs, 2C, 2C, samples) complex values: a few epochs at a time.
HYPYP_EPOCH_CHUNK = 4
DYADLAB = ("butterworth", "hypyp", "hypyp-epochs")
#: Issue #12's acceptance: each HyPyP-compatible option against the HyPyP pipeline it reproduces, with the
#: comparison giving its decimation error and the one giving its full-rate residual.
ACCEPTANCE = {
    "dyadlab hypyp vs hypyp-continuous": (
        "decimation error, hypyp design",
        "dyadlab hypyp (full rate) vs hypyp-continuous",
    ),
    "dyadlab hypyp-epochs vs hypyp (default pipeline)": (
        "decimation error, hypyp-epochs",
        "dyadlab hypyp-epochs (full rate) vs hypyp",
    ),
}


def load_halves(rate: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The EEGLAB recording's EEG channels in microvolts, as A (first half) and B (second half),
    at ``rate`` (128 Hz as recorded, or resampled), each half's channel means removed."""
    import mne
    from scipy import signal

    raw = mne.io.read_raw_eeglab(RECORDING, preload=True, verbose="error")
    raw.pick([name for name in raw.ch_names if not name.upper().startswith("EOG")])
    data = raw.get_data() * 1e6
    recorded = raw.info["sfreq"]
    if rate != recorded:
        up, down = int(rate), int(recorded)
        divisor = np.gcd(up, down)
        data = signal.resample_poly(data, up // divisor, down // divisor, axis=1)
    half = data.shape[1] // 2
    a, b = data[:, :half], data[:, half : 2 * half]
    return a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True), float(rate)


def dyadlab_epochs(
    a: np.ndarray, b: np.ndarray, rate: float, band_filter: str, decimate: bool, margin: float
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """dyadlab's analytic epochs of each band (segments' own code path, no artifact rejection, so
    that every pipeline sees the same epochs), and the epochs' first samples."""
    aligned = seg.AlignedDyad(
        rate=rate, start=0.0, a=a.astype(np.float32), b=b.astype(np.float32), valid=np.ones(a.shape[1], bool)
    )
    block = seg.Block(seg.WHOLE_RECORDING, 0.0, a.shape[1] / rate, seg.WHOLE_RECORDING)
    plans = seg.plan_epochs(aligned, [block], EPOCH_LENGTH_S, margin)
    used_a, used_b = np.ones(a.shape[0], bool), np.ones(b.shape[0], bool)
    epochs = seg.condition_epochs(
        aligned,
        plans,
        [p.valid for p in plans],
        EPOCH_LENGTH_S,
        BANDS,
        used_a,
        used_b,
        decimate=decimate,
        band_filter=band_filter,
    )
    starts = plans[0].starts[plans[0].valid]
    return {band: (e.za, e.zb) for band, e in epochs.items()}, starts


def _hypyp_sync(complex_signal: np.ndarray, metrics: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """``compute_sync`` (NumPy backend) per metric, a few epochs at a time, averaged over epochs
    with ``nanmean`` as HyPyP does; the inter-brain block, band by band."""
    from hypyp.analyses import compute_sync

    n_channels = complex_signal.shape[2]
    per_epoch: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for start in range(0, complex_signal.shape[1], HYPYP_EPOCH_CHUNK):
        chunk = complex_signal[:, start : start + HYPYP_EPOCH_CHUNK]
        for metric in metrics:
            con = compute_sync(chunk, metric, epochs_average=False)  # (bands, epochs, 2C, 2C)
            per_epoch[metric].append(con[:, :, :n_channels, n_channels:])
    out: dict[str, dict[str, np.ndarray]] = {band: {} for band in BANDS}
    for metric, chunks in per_epoch.items():
        values = np.nanmean(np.concatenate(chunks, axis=1), axis=1)
        for index, band in enumerate(BANDS):
            out[band][metric] = values[index]
    return out


def hypyp_default(
    a: np.ndarray, b: np.ndarray, rate: float, starts: np.ndarray, metrics: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    """HyPyP's default pipeline on the epochs starting at ``starts``."""
    from hypyp.analyses import compute_freq_bands

    n_epoch = int(round(EPOCH_LENGTH_S * rate))
    index = starts[:, None] + np.arange(n_epoch)[None, :]
    data = np.stack([a[:, index].transpose(1, 0, 2), b[:, index].transpose(1, 0, 2)])  # (2, E, C, n)
    bands = {band: list(edges) for band, edges in BANDS.items()}
    return _hypyp_sync(compute_freq_bands(data, rate, bands), metrics)


def hypyp_continuous(
    a: np.ndarray, b: np.ndarray, rate: float, starts: np.ndarray, metrics: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    """HyPyP's ``compute_freq_bands`` on the continuous halves (one long epoch), then the same
    epochs cut and given to ``compute_sync``."""
    from hypyp.analyses import compute_freq_bands

    n_epoch = int(round(EPOCH_LENGTH_S * rate))
    bands = {band: list(edges) for band, edges in BANDS.items()}
    continuous = compute_freq_bands(np.stack([a[None], b[None]]), rate, bands)  # (2, 1, C, bands, N)
    index = starts[:, None] + np.arange(n_epoch)[None, :]
    epochs = continuous[:, 0][:, :, :, index]  # (2, C, bands, E, n)
    return _hypyp_sync(np.ascontiguousarray(epochs.transpose(0, 3, 1, 2, 4)), metrics)


def dyadlab_values(
    epochs: dict[str, tuple[np.ndarray, np.ndarray]], metrics: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    return {band: inter_brain_connectivity(za, zb, metrics) for band, (za, zb) in epochs.items()}


def differences(
    first: dict[str, dict[str, np.ndarray]], second: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per band and metric: max and mean absolute difference over channel pairs."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for band in first:
        out[band] = {}
        for metric in first[band]:
            gap = np.abs(np.asarray(first[band][metric], float) - np.asarray(second[band][metric], float))
            out[band][metric] = {"max": float(np.nanmax(gap)), "mean": float(np.nanmean(gap))}
    return out


def rate_dependence(metrics: tuple[str, ...]) -> dict[str, dict[str, dict[str, float]]]:
    """How much each metric of the same EEG moves with the sampling rate alone: dyadlab's ``hypyp``
    design at every sample, the recording at 128 Hz and upsampled to 256 and 512 Hz (same epochs,
    same content): max absolute difference per pair between consecutive rates. A metric whose
    value moves this much with the rate is defined no better than that, at any rate."""
    margin = seg.filter_margin(BANDS, 128.0, "butterworth")  # the longest: the same epochs at every rate
    values = {}
    for rate in (128.0, 256.0, 512.0):
        a, b, rate = load_halves(rate)
        epochs, _ = dyadlab_epochs(a, b, rate, "hypyp", False, margin)
        values[rate] = dyadlab_values(epochs, metrics)
    return {
        f"{low:g} vs {high:g} Hz": {
            band: {m: float(np.nanmax(np.abs(values[low][band][m] - values[high][band][m]))) for m in metrics}
            for band in BANDS
        }
        for low, high in ((128.0, 256.0), (256.0, 512.0))
    }


def run(rate: float, metrics: tuple[str, ...]) -> dict:
    a, b, rate = load_halves(rate)
    margin = max(seg.filter_margin(BANDS, rate, design) for design in DYADLAB)
    timings: dict[str, float] = {}
    values: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    starts = None
    for design in DYADLAB:
        for decimate in (False, True):
            name = f"dyadlab {design}{'' if decimate else ' (full rate)'}"
            began = time.perf_counter()
            epochs, starts = dyadlab_epochs(a, b, rate, design, decimate, margin)
            values[name] = dyadlab_values(epochs, metrics)
            timings[name] = time.perf_counter() - began
    assert starts is not None
    for name, pipeline in (("hypyp", hypyp_default), ("hypyp-continuous", hypyp_continuous)):
        began = time.perf_counter()
        values[name] = pipeline(a, b, rate, starts, metrics)
        timings[name] = time.perf_counter() - began
    comparisons = {
        "decimation error, hypyp design": ("dyadlab hypyp", "dyadlab hypyp (full rate)"),
        "decimation error, butterworth": ("dyadlab butterworth", "dyadlab butterworth (full rate)"),
        "decimation error, hypyp-epochs": ("dyadlab hypyp-epochs", "dyadlab hypyp-epochs (full rate)"),
        "dyadlab hypyp-epochs (full rate) vs hypyp": ("dyadlab hypyp-epochs (full rate)", "hypyp"),
        "dyadlab hypyp-epochs vs hypyp (default pipeline)": ("dyadlab hypyp-epochs", "hypyp"),
        "dyadlab hypyp (full rate) vs hypyp-continuous": ("dyadlab hypyp (full rate)", "hypyp-continuous"),
        "dyadlab hypyp vs hypyp-continuous": ("dyadlab hypyp", "hypyp-continuous"),
        "dyadlab hypyp vs hypyp (per-epoch filtering)": ("dyadlab hypyp", "hypyp"),
        "hypyp-continuous vs hypyp (per-epoch edge effects)": ("hypyp-continuous", "hypyp"),
        "dyadlab butterworth vs hypyp (band definitions)": ("dyadlab butterworth", "hypyp"),
    }
    return {
        "recording": str(RECORDING.relative_to(RECORDING.parents[3])),
        "rate_hz": rate,
        "channels_per_participant": int(a.shape[0]),
        "epochs": int(len(starts)),
        "epoch_length_s": EPOCH_LENGTH_S,
        "margin_s": margin,
        "analysis_step": {band: seg.analysis_step(rate, high) for band, (_, high) in BANDS.items()},
        "band_definitions": {
            design: {band: seg.describe_band_filter(edges, rate, design) for band, edges in BANDS.items()}
            for design in DYADLAB
        },
        "mean_value": {
            name: {band: {m: float(np.nanmean(v)) for m, v in by_metric.items()} for band, by_metric in bands.items()}
            for name, bands in values.items()
        },
        "differences": {label: differences(values[x], values[y]) for label, (x, y) in comparisons.items()},
        "timing_s": {name: round(seconds, 2) for name, seconds in timings.items()},
    }


def acceptance(result: dict) -> dict[str, dict[str, dict[str, dict[str, float | bool]]]]:
    """Issue #12's acceptance, per option (:data:`ACCEPTANCE`), band and metric: the option as the
    quick-check runs it (decimated) against the HyPyP pipeline it reproduces, max per pair within
    the option's decimation error (max per pair, decimated against full rate, same design) plus its
    full-rate residual (``hypyp``: HyPyP's Hilbert transform wrapping around the recording;
    ``hypyp-epochs``: float32 rounding)."""
    table = result["differences"]
    out: dict[str, dict[str, dict[str, dict[str, float | bool]]]] = {}
    for compared, (decimation, residual) in ACCEPTANCE.items():
        out[compared] = {}
        for band, row in table[compared].items():
            out[compared][band] = {}
            for metric, gap in row.items():
                error = table[decimation][band][metric]["max"]
                rest = table[residual][band][metric]["max"]
                out[compared][band][metric] = {
                    "max": gap["max"],
                    "mean": gap["mean"],
                    "decimation_error": error,
                    "full_rate_residual": rest,
                    "agrees": gap["max"] <= error + rest,
                }
    return out


def print_table(result: dict) -> None:
    print(
        f"EEGLAB halves at {result['rate_hz']:g} Hz: {result['channels_per_participant']} channels each, "
        f"{result['epochs']} epochs of {result['epoch_length_s']:g} s; analysis step {result['analysis_step']}"
    )
    for design, bands in result["band_definitions"].items():
        edges = ", ".join(f"{band} {d['minus_6db_hz'][0]:g}-{d['minus_6db_hz'][1]:g}" for band, d in bands.items())
        print(f"  -6 dB points, {design}: {edges} Hz")
    means = result["mean_value"]
    names = list(means)
    print("\nMean over pairs")
    print(f"{'band':6} {'metric':8} " + " ".join(f"{n[:26]:>26}" for n in names))
    for band in BANDS:
        for metric in means[names[0]][band]:
            print(f"{band:6} {metric:8} " + " ".join(f"{means[n][band][metric]:26.4f}" for n in names))
    for compared, bands in result["acceptance"].items():
        print(f"\nAcceptance: {compared}, per pair max (mean) <= decimation error + full-rate residual")
        for band, row in bands.items():
            for metric, c in row.items():
                print(
                    f"  {band:6} {metric:8} {c['max']:.2e} ({c['mean']:.2e}) <= {c['decimation_error']:.2e} + "
                    f"{c['full_rate_residual']:.1e}  {'ok' if c['agrees'] else 'NO'}"
                )
        passed = all(c["agrees"] for row in bands.values() for c in row.values())
        print(f"{'PASS' if passed else 'FAIL'}: {compared} within the decimation error (rate {result['rate_hz']:g} Hz)")
    print("\nAbsolute difference per channel pair: max (mean)")
    labels = list(result["differences"])
    for label in labels:
        print(f"\n{label}")
        table = result["differences"][label]
        metrics = list(table[next(iter(table))])
        print(f"{'band':6} " + " ".join(f"{m:>16}" for m in metrics))
        for band, row in table.items():
            print(f"{band:6} " + " ".join(f"{row[m]['max']:8.4f} ({row[m]['mean']:.4f})" for m in metrics))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=None, help="128 (as recorded) or e.g. 500; default: both")
    parser.add_argument("--quick", action="store_true", help="128 Hz only, plv and ccorr only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rates = [args.rate] if args.rate else ([128.0] if args.quick else [128.0, 500.0])
    metrics = ("plv", "ccorr") if args.quick else METRICS
    results: dict[str, dict] = {}
    for rate in rates:
        results[f"{rate:g}"] = run(rate, metrics)
        results[f"{rate:g}"]["acceptance"] = acceptance(results[f"{rate:g}"])
        print_table(results[f"{rate:g}"])
    if not args.quick:
        results["rate_dependence"] = rate_dependence(metrics)
        print("\nMax absolute difference per pair between sampling rates of the same EEG (hypyp design, every sample)")
        for label, table in results["rate_dependence"].items():
            print(f"\n{label}\n{'band':6} " + " ".join(f"{m:>8}" for m in metrics))
            for band, row in table.items():
                print(f"{band:6} " + " ".join(f"{row[m]:8.4f}" for m in metrics))
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        LOG.info("written: %s", RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
