"""Loader benchmark: dyadlab's XDF reading against ``pyxdf.load_xdf`` on the same foreign file.

The file is the issue's case, written by the tests' independent writer (not dyadlab's; not
timed): a 60-minute dyad, 2 x 32 EEG-only float32 channels at 500 Hz, 5 rest and 5 cooperation
blocks with alpha coupling planted in cooperation, B's clock 3.2 s off and drifting, LabRecorder
chunks and timestamp compression (about 500 MB). Each step runs in a fresh process:

1. ``pyxdf.load_xdf`` (clock synchronisation on, de-jittering off): wall time, peak RSS;
2. ``dyadlab.synchrony.io.load_dyad``: wall time, peak RSS, and its growth over the process's memory
   before the call, against the EEG samples' size as float32 (the returned arrays); measured
   after a first call on a small file (numba kernels and pyxdf loaded), and also including it;
3. the whole quick-check (``run_check``, 200 surrogates, JSON and HTML): wall time, peak RSS,
   whether it finds the planted coupling and nothing else;
4. (not timed) ``load_dyad``'s samples and timestamps compared with pyxdf's, bit for bit.

Targets (issue #9): the loader >= 5x faster than pyxdf with peak memory <= 1.3x the EEG samples
as float32; the whole check < 1.5 GB and <= 6x pyxdf's load time.

Run: ``python -m benchmarks.bench_loader [--quick] [--minutes M]``; writes
``benchmarks/results/loader.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import peak_rss_mb, rss_mb, run_child

RESULTS = Path(__file__).parent / "results" / "loader.json"
CHANNELS = 32
RATE = 500.0
BLOCKS = 10
MODULE = "benchmarks.bench_loader"


def _child_pyxdf(path: str) -> dict:
    import pyxdf

    started = time.perf_counter()
    pyxdf.load_xdf(path, synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False)
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def _child_loader(path: str) -> dict:
    from dyadlab.synchrony.io import load_dyad
    from tests.synchrony.foreign_dyad import write_foreign_dyad

    cold_before = rss_mb()
    with tempfile.TemporaryDirectory() as folder:  # first use: numba kernels and pyxdf loaded
        load_dyad(write_foreign_dyad(Path(folder) / "small.xdf", block_seconds=5.0, n_blocks=2))
    warm_before = rss_mb()
    started = time.perf_counter()
    recording = load_dyad(path)
    wall = time.perf_counter() - started
    eeg_mb = sum(p.data.size for p in recording.participants) * 4 / 2**20
    peak = peak_rss_mb()
    return {
        "wall_s": wall,
        "peak_rss_mb": peak,
        "rss_before_mb": warm_before,
        "growth_mb": peak - warm_before,
        "growth_with_first_use_mb": peak - cold_before,
        "eeg_float32_mb": eeg_mb,
    }


def _child_check(path: str, out_dir: str) -> dict:
    from dyadlab.synchrony.check import run_check
    from tests.synchrony.foreign_dyad import CONDITIONS

    started = time.perf_counter()
    result = run_check(
        path,
        conditions=CONDITIONS,
        n_surrogates=200,
        progress=False,
        seed=0,
        json_out=Path(out_dir) / "check.json",
        html_out=Path(out_dir) / "check.html",
    )
    cells = {
        f"{c}/{b}": (
            round(result["conditions"][c][b]["plv"]["mean"], 3),
            round(result["conditions"][c][b]["plv"]["z"], 1),
        )
        for c in ("rest", "coop")
        for b in ("theta", "alpha", "beta", "gamma")
    }
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "stages_s": result["timing_s"],
        "detected": sorted(f"{d['condition']}/{d['band']}" for d in result["verdict"]["synchrony_above_chance"]),
        "plv_mean_z": cells,
    }


def _child_compare(path: str) -> dict:
    import numpy as np
    import pyxdf

    from dyadlab.synchrony.io import load_dyad

    recording = load_dyad(path)
    streams, _ = pyxdf.load_xdf(path, synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    equal = {}
    for participant in recording.participants:
        ref = by_name[participant.stream_name]
        equal[participant.label] = bool(
            participant.data.tobytes() == np.ascontiguousarray(ref["time_series"].T, dtype=np.float32).tobytes()
            and participant.timestamps.tobytes() == ref["time_stamps"].tobytes()
        )
    return {"bit_equal": equal}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5-minute file instead of 60 minutes")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, *rest = args.child
        children = {"pyxdf": _child_pyxdf, "loader": _child_loader, "check": _child_check, "compare": _child_compare}
        print(json.dumps(children[role](*rest)))
        return 0

    from tests.synchrony.foreign_dyad import write_foreign_dyad

    minutes = args.minutes or (5.0 if args.quick else 60.0)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as folder:
        path = Path(folder) / "foreign.xdf"
        print(f"Writing a {minutes:g}-minute foreign dyad (2 x {CHANNELS} channels at {RATE:g} Hz) ...", flush=True)
        started = time.perf_counter()
        write_foreign_dyad(
            path, block_seconds=minutes * 60.0 / BLOCKS - 2.0, n_blocks=BLOCKS, fs=RATE, channels=CHANNELS
        )
        file_mb = path.stat().st_size / 1e6
        print(f"  {file_mb:.0f} MB in {time.perf_counter() - started:.1f} s", flush=True)
        loader = run_child(MODULE, "loader", str(path))  # first: compiles the kernels if no cache
        loader_cached = run_child(MODULE, "loader", str(path))
        reference = run_child(MODULE, "pyxdf", str(path))
        check = run_child(MODULE, "check", str(path), folder)
        compared = run_child(MODULE, "compare", str(path))

    speedup = reference["wall_s"] / loader_cached["wall_s"]
    memory_ratio = loader_cached["growth_mb"] / loader_cached["eeg_float32_mb"]
    check_ratio = check["wall_s"] / reference["wall_s"]
    rows = [
        ("pyxdf.load_xdf", reference["wall_s"], reference["peak_rss_mb"]),
        ("load_dyad, first run (kernels compiled if uncached)", loader["wall_s"], loader["peak_rss_mb"]),
        ("load_dyad", loader_cached["wall_s"], loader_cached["peak_rss_mb"]),
        ("  its memory growth during the call", None, loader_cached["growth_mb"]),
        ("  the same, with first use (kernels, pyxdf loaded)", None, loader_cached["growth_with_first_use_mb"]),
        ("  EEG samples as float32", None, loader_cached["eeg_float32_mb"]),
        ("whole quick-check (run_check, 200 surrogates)", check["wall_s"], check["peak_rss_mb"]),
    ]
    print(
        f"\nLoading a {minutes:g}-minute foreign dyad ({file_mb:.0f} MB), {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}"
    )
    print(f"{'step':52s} {'seconds':>9s} {'MB':>9s}")
    for name, seconds, mb in rows:
        print(f"{name:52s} {'' if seconds is None else f'{seconds:9.2f}':>9s} {'' if mb is None else f'{mb:9.0f}':>9s}")
    targets = {
        "loader_speedup_vs_pyxdf": (round(speedup, 1), ">= 5", speedup >= 5),
        "loader_memory_over_eeg_float32": (round(memory_ratio, 2), "<= 1.3", memory_ratio <= 1.3),
        "check_peak_rss_mb": (round(check["peak_rss_mb"]), "< 1536", check["peak_rss_mb"] < 1536),
        "check_time_over_pyxdf_load": (round(check_ratio, 2), "<= 6", check_ratio <= 6),
    }
    for name, (value, target, met) in targets.items():
        print(f"{name:40s} {value!s:>8s}  target {target:8s} {'met' if met else 'NOT met'}")
    print(f"Samples and timestamps bit-equal to pyxdf's: {compared['bit_equal']}")
    print(f"Detected (condition/band): {check['detected']}; PLV (mean, z): {check['plv_mean_z']}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "loader",
                "minutes": minutes,
                "file_mb": file_mb,
                "channels_per_participant": CHANNELS,
                "rate_hz": RATE,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "pyxdf": reference,
                "loader_first_run": loader,
                "loader": loader_cached,
                "check": check,
                "compare": compared,
                "targets": {k: {"value": v, "target": t, "met": m} for k, (v, t, m) in targets.items()},
            },
            indent=1,
        )
    )
    print(f"Results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
