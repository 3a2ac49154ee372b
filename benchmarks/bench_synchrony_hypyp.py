"""Synchrony metrics and surrogates: dyadlab against HyPyP 0.6 on the same epochs.

Data (issue #5): 2 participants x 32 channels, 60 epochs of 2 s at 256 Hz, 4 bands (theta
4-7, alpha 8-12, beta 13-30, gamma 30-45 Hz). Independent band-limited noise with a coupled
channel pair, filtered on the continuous signal, Hilbert-transformed, then epoched; the one
complex array is saved once and given to every implementation, so they see identical input
(HyPyP's layout ``(2, n_epochs, n_channels, n_bands, n_times)``; ours takes band slices).

Each measurement runs in a fresh Python process (timing includes everything a fresh
process pays, e.g. numba JIT compilation; peak memory is that process's ``ru_maxrss``):

- per metric: ours (``inter_brain_connectivity``, 4 bands) vs HyPyP's default NumPy backend
  (``compute_sync(..., optimization=None)``) vs HyPyP's numba backend
  (``optimization="numba"``). Numba runs get an empty ``NUMBA_CACHE_DIR`` so they are
  genuinely cold (JIT included), as on a first run; ours is measured the same way (our
  PLI/wPLI kernel uses numba when installed);
- the whole metric set in one call (ours) against the sum of HyPyP's per-metric times;
- 200 epoch-shuffle surrogates for all metrics and 4 bands (ours; HyPyP has none), as the
  quick-check computes them (complex64 epochs, stratified permutations shared by the bands,
  observed values from the same pass) and, for reference, unrestricted in double precision;
- the largest absolute difference between ours and HyPyP on each metric's inter-brain block.

HyPyP's NumPy PLI and wPLI build a ``(E, 2C, 2C, n)`` tensor (about 20 GB and 30-50 s here):
``--quick`` skips them (their values are then compared against HyPyP numba, which equals
HyPyP NumPy); the full run measures them one at a time.

Run: ``python -m benchmarks.bench_synchrony_hypyp [--quick]``; writes
``benchmarks/results/synchrony_hypyp.json``. The machine is shared: load averages before and
after are recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "synchrony_hypyp.json"
SFREQ = 256.0
N_CHANNELS, N_EPOCHS, EPOCH_SAMPLES = 32, 60, 512
BANDS = {"theta": (4.0, 7.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}
METRICS = ("plv", "accorr", "ccorr", "coh", "imcoh", "envcorr", "powcorr", "pli", "wpli")
N_SURROGATES = 200
# Targets from issue #5.
TARGET_SPEEDUP_NUMPY = 10.0
TARGET_SURROGATES_S = 10.0
TARGET_MAX_DIFF = 1e-9
# Peak memory of HyPyP's NumPy PLI/wPLI at this size (measured: 19.8 GB).
HYPYP_NUMPY_LAG_GB = 20.0


def _available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime  # all threads of this process


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_signal(path: Path) -> None:
    """Write the shared analytic signal, shape (2, n_epochs, n_channels, n_bands, n_times)."""
    import scipy.signal

    from dyadlab.synchrony.metrics import analytic_signal

    rng = np.random.default_rng(2026)
    pad = 2 * int(SFREQ)  # filter edge margin, discarded
    n_samples = N_EPOCHS * EPOCH_SAMPLES + 2 * pad
    raw = rng.standard_normal((2, N_CHANNELS, n_samples))
    raw[1, :4] = 0.5 * raw[0, :4] + 0.5 * raw[1, :4]  # some genuine coupling
    out = np.empty((2, N_EPOCHS, N_CHANNELS, len(BANDS), EPOCH_SAMPLES), dtype=np.complex128)
    for f, (low, high) in enumerate(BANDS.values()):
        sos = scipy.signal.butter(4, [low, high], btype="bandpass", fs=SFREQ, output="sos")
        z = analytic_signal(scipy.signal.sosfiltfilt(sos, raw, axis=-1))[..., pad:-pad]
        out[:, :, :, f, :] = z.reshape(2, N_CHANNELS, N_EPOCHS, EPOCH_SAMPLES).transpose(0, 2, 1, 3)
    np.save(path, out)


# ------------------------------------------------------------------------------------------
# workers (each in a fresh process)
# ------------------------------------------------------------------------------------------


def _worker_ours(signal_path: str, metrics: list[str], out_path: str) -> dict:
    rss_before_import = _peak_rss_mb()
    from dyadlab.synchrony.metrics import inter_brain_connectivity

    complex_signal = np.load(signal_path)
    rss_before = _peak_rss_mb()
    cpu_before = _cpu_s()
    started = time.perf_counter()
    values = {
        band: inter_brain_connectivity(complex_signal[0, :, :, f], complex_signal[1, :, :, f], metrics)
        for f, band in enumerate(BANDS)
    }
    wall = time.perf_counter() - started
    np.savez(out_path, **{m: np.stack([values[b][m] for b in BANDS]) for m in metrics})
    return {
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu_before,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": rss_before,
        "rss_interpreter_mb": rss_before_import,
    }


def _worker_hypyp(signal_path: str, metric: str, optimization: str | None, out_path: str) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from hypyp.analyses import compute_sync

    complex_signal = np.load(signal_path)
    rss_before = _peak_rss_mb()
    cpu_before = _cpu_s()
    started = time.perf_counter()
    con = compute_sync(complex_signal, metric, optimization=optimization)
    wall = time.perf_counter() - started
    np.savez(out_path, **{metric: con[:, :N_CHANNELS, N_CHANNELS:]})
    return {"wall_s": wall, "cpu_s": _cpu_s() - cpu_before, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": rss_before}


def _worker_surrogates(signal_path: str, metrics: list[str], n_surrogates: int, mode: str) -> dict:
    """``mode``: ``check`` -- as the quick-check runs it: complex64 epochs, one stratified plan
    for all bands (``shuffle_plan``), observed per-epoch values from the same pass
    (``shuffle_null``); ``unrestricted`` -- complex128, permutations of all 60 epochs."""
    from dyadlab.synchrony.surrogates import epoch_shuffle_surrogates, random_permutations, shuffle_null, shuffle_plan

    complex_signal = np.load(signal_path)
    if mode == "check":
        complex_signal = complex_signal.astype(np.complex64)
    rss_before = _peak_rss_mb()
    rng = np.random.default_rng(0)
    cpu_before = _cpu_s()
    started = time.perf_counter()
    if mode == "check":
        plan = shuffle_plan(N_EPOCHS, n_surrogates, rng)  # one joint null over bands
        null = {
            band: shuffle_null(complex_signal[0, :, :, f], complex_signal[1, :, :, f], plan, metrics).null
            for f, band in enumerate(BANDS)
        }
    else:
        permutations = random_permutations(N_EPOCHS, n_surrogates, rng)  # one joint null over bands
        null = {
            band: epoch_shuffle_surrogates(
                complex_signal[0, :, :, f],
                complex_signal[1, :, :, f],
                n_surrogates,
                metrics,
                rng=rng,
                permutations=permutations,
            )
            for f, band in enumerate(BANDS)
        }
    wall = time.perf_counter() - started
    shapes = {m: list(null["alpha"][m].shape) for m in metrics}
    return {
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu_before,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_mb": rss_before,
        "null_shape": shapes,
    }


def _run_worker(args: list[str], *, cold_numba: bool) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        if cold_numba:
            env["NUMBA_CACHE_DIR"] = cache_dir  # empty: every numba function is compiled afresh
        command = [sys.executable, "-m", "benchmarks.bench_synchrony_hypyp", "--worker", *args]
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, check=False
        )
    if completed.returncode != 0:
        return {"error": (completed.stderr or completed.stdout).strip().splitlines()[-1:]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------


def _max_abs_diff(ours_path: Path, theirs_path: Path, metric: str) -> float:
    with np.load(ours_path) as ours, np.load(theirs_path) as theirs:
        return float(np.nanmax(np.abs(ours[metric] - theirs[metric])))


def _fmt(value, spec=".2f"):
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return ("-".rjust(int(width)) if width else "-") if value is None else format(value, spec)


def run(quick: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    signal_path = work / "signal.npy"
    make_signal(signal_path)
    load_before = os.getloadavg()
    rows = []
    for metric in METRICS:
        row: dict = {"metric": metric}
        ours_out = work / f"ours-{metric}.npz"
        row["ours"] = _run_worker(["ours", str(signal_path), metric, str(ours_out)], cold_numba=True)
        numba_out = work / f"numba-{metric}.npz"
        row["hypyp_numba"] = _run_worker(["hypyp", str(signal_path), metric, "numba", str(numba_out)], cold_numba=True)
        numpy_out = work / f"numpy-{metric}.npz"
        if quick and metric in ("pli", "wpli"):
            row["hypyp_numpy"] = {"skipped": "--quick (about 20 GB and 30-50 s each)"}
        elif metric in ("pli", "wpli") and _available_gb() < HYPYP_NUMPY_LAG_GB + 1:
            # The machine is shared: never push it into swapping or the OOM killer.
            row["hypyp_numpy"] = {
                "skipped": f"only {_available_gb():.1f} GB available, needs about {HYPYP_NUMPY_LAG_GB} GB"
            }
        else:
            row["hypyp_numpy"] = _run_worker(
                ["hypyp", str(signal_path), metric, "none", str(numpy_out)], cold_numba=False
            )
        reference = numpy_out if numpy_out.exists() else numba_out
        row["compared_with"] = "hypyp_numpy" if numpy_out.exists() else "hypyp_numba"
        row["max_abs_diff"] = (
            _max_abs_diff(ours_out, reference, metric) if reference.exists() and ours_out.exists() else None
        )
        row["max_abs_diff_numba_vs_numpy"] = (
            _max_abs_diff(numba_out, numpy_out, metric) if numpy_out.exists() and numba_out.exists() else None
        )
        rows.append(row)
        print(f"  {metric}: done", file=sys.stderr, flush=True)

    metric_set = list(METRICS)
    whole_cold = _run_worker(
        ["ours", str(signal_path), ",".join(metric_set), str(work / "ours-all.npz")], cold_numba=True
    )
    whole_cached = _run_worker(
        ["ours", str(signal_path), ",".join(metric_set), str(work / "ours-all.npz")], cold_numba=False
    )

    def surrogates(metric_names: list[str], mode: str, cold: bool) -> dict:
        return _run_worker(
            ["surrogates", str(signal_path), ",".join(metric_names), str(N_SURROGATES), mode], cold_numba=cold
        )

    surrogates_cold = surrogates(metric_set, "check", True)
    surrogates_cached = surrogates(metric_set, "check", False)
    default_set = [m for m in METRICS if m != "powcorr"]  # the quick-check's default metrics
    surrogates_default = surrogates(default_set, "check", False)
    unrestricted_cold = surrogates(metric_set, "unrestricted", True)

    def total(impl):
        times = [r[impl].get("wall_s") for r in rows]
        return None if any(t is None for t in times) else float(sum(times))

    summary = {
        "ours_sum_of_per_metric_s": total("ours"),
        "ours_metric_set_one_call_cold_s": whole_cold.get("wall_s"),
        "ours_metric_set_one_call_cached_s": whole_cached.get("wall_s"),
        "ours_metric_set_one_call_cpu_s": whole_cold.get("cpu_s"),
        "ours_metric_set_peak_rss_mb": whole_cold.get("peak_rss_mb"),
        "hypyp_numpy_sum_s": total("hypyp_numpy"),
        "hypyp_numba_cold_sum_s": total("hypyp_numba"),
        "surrogates_200_all_metrics_4_bands_cold_s": surrogates_cold.get("wall_s"),
        "surrogates_200_all_metrics_4_bands_cached_s": surrogates_cached.get("wall_s"),
        "surrogates_200_all_metrics_4_bands_cached_cpu_s": surrogates_cached.get("cpu_s"),
        "surrogates_200_default_8_metrics_4_bands_cached_s": surrogates_default.get("wall_s"),
        "surrogates_peak_rss_mb": surrogates_cold.get("peak_rss_mb"),
        "surrogates_200_all_metrics_4_bands_unrestricted_float64_cold_s": unrestricted_cold.get("wall_s"),
        "max_abs_diff_all_metrics": max(
            (r["max_abs_diff"] for r in rows if r["max_abs_diff"] is not None), default=None
        ),
    }
    ours_set = summary["ours_metric_set_one_call_cold_s"]
    if summary["hypyp_numpy_sum_s"] and ours_set:
        summary["speedup_vs_hypyp_numpy"] = summary["hypyp_numpy_sum_s"] / ours_set
    if summary["hypyp_numba_cold_sum_s"] and ours_set:
        summary["speedup_vs_hypyp_numba_cold"] = summary["hypyp_numba_cold_sum_s"] / ours_set
    summary["targets"] = {
        "speedup_vs_hypyp_numpy >= 10": (summary.get("speedup_vs_hypyp_numpy") or 0) >= TARGET_SPEEDUP_NUMPY
        if summary["hypyp_numpy_sum_s"]
        else None,
        "faster_than_hypyp_numba_cold": (summary.get("speedup_vs_hypyp_numba_cold") or 0) > 1.0,
        "identical_to_1e-9": (summary["max_abs_diff_all_metrics"] or 1.0) <= TARGET_MAX_DIFF,
        "200_surrogates_all_metrics_under_10_s": (summary["surrogates_200_all_metrics_4_bands_cold_s"] or 1e9)
        < TARGET_SURROGATES_S,
    }
    return {
        "benchmark": "synchrony_hypyp",
        "quick": quick,
        "data": {
            "participants": 2,
            "channels": N_CHANNELS,
            "epochs": N_EPOCHS,
            "epoch_s": EPOCH_SAMPLES / SFREQ,
            "sfreq": SFREQ,
            "bands": BANDS,
            "surrogates": N_SURROGATES,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "hypyp": _version("hypyp"),
            "numba": _version("numba"),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "per_metric": rows,
        "whole_metric_set": {"cold": whole_cold, "cached": whole_cached},
        "surrogates": {
            "cold": surrogates_cold,
            "cached": surrogates_cached,
            "default_metrics_cached": surrogates_default,
            "unrestricted_float64_cold": unrestricted_cold,
        },
        "summary": summary,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def print_table(result: dict) -> None:
    header = (
        f"{'metric':<8} {'ours s':>8} {'ours MB':>8} {'HyPyP np s':>10} {'np MB':>8} {'numba s':>8} "
        f"{'numba MB':>8} {'x np':>7} {'x numba':>8} {'max |diff|':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in result["per_metric"]:
        ours, numpy_, numba_ = row["ours"], row["hypyp_numpy"], row["hypyp_numba"]
        speed_np = numpy_["wall_s"] / ours["wall_s"] if "wall_s" in numpy_ and "wall_s" in ours else None
        speed_nb = numba_["wall_s"] / ours["wall_s"] if "wall_s" in numba_ and "wall_s" in ours else None
        print(
            f"{row['metric']:<8} {_fmt(ours.get('wall_s'), '8.3f')} {_fmt(ours.get('peak_rss_mb'), '8.0f')} "
            f"{_fmt(numpy_.get('wall_s'), '10.3f')} {_fmt(numpy_.get('peak_rss_mb'), '8.0f')} "
            f"{_fmt(numba_.get('wall_s'), '8.3f')} {_fmt(numba_.get('peak_rss_mb'), '8.0f')} "
            f"{_fmt(speed_np, '7.1f')} {_fmt(speed_nb, '8.1f')} {_fmt(row['max_abs_diff'], '11.1e')}"
        )
    s = result["summary"]
    print()
    print(
        f"metric set, one call (ours): cold {_fmt(s['ours_metric_set_one_call_cold_s'], '.3f')} s, cached "
        f"{_fmt(s['ours_metric_set_one_call_cached_s'], '.3f')} s (CPU {_fmt(s['ours_metric_set_one_call_cpu_s'], '.2f')} s), "
        f"peak {_fmt(s['ours_metric_set_peak_rss_mb'], '.0f')} MB"
    )
    print(
        f"HyPyP sum of per-metric times: numpy {_fmt(s['hypyp_numpy_sum_s'], '.2f')} s, "
        f"numba (cold) {_fmt(s['hypyp_numba_cold_sum_s'], '.2f')} s"
    )
    print(
        f"speed-up of the metric set: x{_fmt(s.get('speedup_vs_hypyp_numpy'), '.1f')} vs HyPyP numpy, "
        f"x{_fmt(s.get('speedup_vs_hypyp_numba_cold'), '.1f')} vs HyPyP numba (cold)"
    )
    print(
        f"{N_SURROGATES} surrogates, all {len(METRICS)} metrics, 4 bands, as the check runs them: cold "
        f"{_fmt(s['surrogates_200_all_metrics_4_bands_cold_s'], '.2f')} s, cached "
        f"{_fmt(s['surrogates_200_all_metrics_4_bands_cached_s'], '.2f')} s (CPU "
        f"{_fmt(s['surrogates_200_all_metrics_4_bands_cached_cpu_s'], '.2f')} s), peak {_fmt(s['surrogates_peak_rss_mb'], '.0f')} MB"
    )
    print(
        f"{N_SURROGATES} surrogates, default {len(METRICS) - 1} metrics (no powcorr), 4 bands, cached: "
        f"{_fmt(s['surrogates_200_default_8_metrics_4_bands_cached_s'], '.2f')} s"
    )
    print(
        f"{N_SURROGATES} surrogates, all metrics, 4 bands, unrestricted permutations in double precision, cold: "
        f"{_fmt(s['surrogates_200_all_metrics_4_bands_unrestricted_float64_cold_s'], '.2f')} s"
    )
    print(f"largest |ours - HyPyP| over all metrics: {_fmt(s['max_abs_diff_all_metrics'], '.1e')}")
    print(f"targets: {s['targets']}")
    print(f"load average before/after: {result['machine']['loadavg_before']} / {result['machine']['loadavg_after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_synchrony_hypyp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="skip HyPyP NumPy PLI/wPLI (about 20 GB each)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "ours":
            result = _worker_ours(rest[0], rest[1].split(","), rest[2])
        elif kind == "hypyp":
            result = _worker_hypyp(rest[0], rest[1], None if rest[2] == "none" else rest[2], rest[3])
        elif kind == "surrogates":
            result = _worker_surrogates(rest[0], rest[1].split(","), int(rest[2]), rest[3])
        else:
            raise SystemExit(f"unknown worker {kind!r}")
        print(json.dumps(result))
        return 0
    result = run(args.quick)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=float))
    print_table(result)
    print(f"\nwritten: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
