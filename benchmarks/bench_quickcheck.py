"""Quick-check benchmark: a whole session checked end to end, surrogates included.

A session of the coupled-dyad simulator (``dyadlab.acquisition.simulator``: 2 x 32 channels at 500 Hz,
10 conditions of equal length, dyadlab markers and board marker channels) is written to XDF with
dyadlab's writer (not timed). Then, each in a fresh process:

1. ``run_check`` on the file (default bands and metrics, 200 epoch-shuffle surrogates, JSON and
   HTML written): wall time, peak memory of the process, and the check's own stage timings;
2. ``pyxdf.load_xdf`` alone: wall time and peak RSS, for comparison with the check's reading.

Targets (issue #5): a 60-minute session in under 60 s with peak memory under 2 GB.

Run: ``python -m benchmarks.bench_quickcheck [--quick] [--minutes M] [--surrogates N]``
(``--quick``: 5 minutes); writes ``benchmarks/results/quickcheck.json``.
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

from benchmarks.measure import peak_rss_mb, run_child

RESULTS = Path(__file__).parent / "results" / "quickcheck.json"
CHANNELS = (
    "Fp1",
    "Fp2",
    "AF3",
    "AF4",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "FC5",
    "FC1",
    "FC2",
    "FC6",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "CP5",
    "CP1",
    "CP2",
    "CP6",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "PO3",
    "PO4",
    "O1",
    "Oz",
    "O2",
)
CONDITIONS = (
    "rest",
    "cooperation",
    "competition",
    "tapping",
    "conversation",
    "imitation",
    "music",
    "touch",
    "joint-attention",
    "rest-separated",
)
RATE = 500.0
TARGET_S = 60.0
TARGET_RSS_MB = 2048.0


def _child_check(path: str, n_surrogates: int, out_dir: str) -> dict:
    from dyadlab.synchrony.check import run_check

    started = time.perf_counter()
    result = run_check(
        path,
        n_surrogates=n_surrogates,
        json_out=Path(out_dir) / "quickcheck.json",
        html_out=Path(out_dir) / "quickcheck.html",
        progress=False,
        seed=0,
    )
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),  # the check runs in this one process (no helper processes)
        "stages_s": result["timing_s"],
        "summary": result["summary"],
        "epochs": {c: e["used"] for c, e in result["segmentation"]["epochs"].items()},
        "detected": [(d["condition"], d["band"]) for d in result["verdict"]["synchrony_above_chance"]],
        "json_mb": (Path(out_dir) / "quickcheck.json").stat().st_size / 1e6,
        "html_mb": (Path(out_dir) / "quickcheck.html").stat().st_size / 1e6,
    }


def _child_load(path: str) -> dict:
    import pyxdf

    started = time.perf_counter()
    streams, _ = pyxdf.load_xdf(path, synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False)
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "streams": len(streams)}


def _write_session(path: Path, minutes: float) -> dict:
    from tests.synchrony.xdf_fixtures import write_simulated_xdf

    block_s = (minutes * 60.0 - 2.0 * (len(CONDITIONS) + 1)) / len(CONDITIONS)
    started = time.perf_counter()
    write_simulated_xdf(path, [(c, block_s) for c in CONDITIONS], rate=RATE, channel_names=CHANNELS, seed=0)
    return {"seconds": time.perf_counter() - started, "block_s": block_s, "file_mb": path.stat().st_size / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_quickcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5-minute session instead of 60 minutes")
    parser.add_argument("--minutes", type=float, default=None, help="session length (default 60, or 5 with --quick)")
    parser.add_argument("--surrogates", type=int, default=200)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, *rest = args.child
        payload = _child_check(rest[0], int(rest[1]), rest[2]) if role == "check" else _child_load(rest[0])
        print(json.dumps(payload))
        return 0

    minutes = args.minutes or (5.0 if args.quick else 60.0)
    with tempfile.TemporaryDirectory(prefix="bench-quickcheck-") as folder:
        path = Path(folder) / "session.xdf"
        print(
            f"Writing a {minutes:g}-minute session (2 x {len(CHANNELS)} channels at {RATE:g} Hz, "
            f"{len(CONDITIONS)} conditions) ...",
            flush=True,
        )
        written = _write_session(path, minutes)
        print(f"  {written['file_mb']:.0f} MB in {written['seconds']:.1f} s; running the check ...", flush=True)
        check = run_child("benchmarks.bench_quickcheck", "check", str(path), str(args.surrogates), folder)
        load = run_child("benchmarks.bench_quickcheck", "load", str(path))

    stages = check["stages_s"]
    rows = [
        ("whole check (run_check, fresh process)", check["wall_s"], check["peak_rss_mb"]),
        ("  of which reading the file", stages.get("xdf_read"), None),
        ("  quality", stages.get("quality"), None),
        ("  align + epochs + rejection", (stages.get("align") or 0) + (stages.get("epochs") or 0), None),
        ("  band filtering + epoching", stages.get("filter_epochs"), None),
        ("  metrics and surrogate nulls", stages.get("synchrony"), None),
        ("  pair-level FDR and max-statistic", stages.get("pair_statistics"), None),
        ("  contrasts", stages.get("contrasts"), None),
        ("  JSON + HTML (rest of wall time)", check["wall_s"] - (stages.get("total") or 0), None),
        ("pyxdf.load_xdf alone (fresh process)", load["wall_s"], load["peak_rss_mb"]),
    ]
    print(
        f"\nQuick-check of a {minutes:g}-minute session, {args.surrogates} surrogates, "
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}"
    )
    print(f"{'step':44s} {'seconds':>9s} {'peak RSS MB':>12s}")
    for name, seconds, rss in rows:
        print(
            f"{name:44s} {'' if seconds is None else f'{seconds:9.2f}':>9s} {'' if rss is None else f'{rss:12.0f}':>12s}"
        )
    print(f"\nEpochs used per condition: {check['epochs']}")
    print(f"Detected (condition, band): {check['detected']}")
    print(f"JSON {check['json_mb']:.1f} MB, HTML {check['html_mb']:.1f} MB")
    meets = minutes < 60 or (check["wall_s"] < TARGET_S and check["peak_rss_mb"] < TARGET_RSS_MB)
    if minutes >= 60:
        print(f"Target (< {TARGET_S:g} s, < {TARGET_RSS_MB:g} MB): {'met' if meets else 'NOT met'}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "quickcheck",
                "minutes": minutes,
                "channels_per_participant": len(CHANNELS),
                "rate_hz": RATE,
                "conditions": len(CONDITIONS),
                "surrogates": args.surrogates,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "session_written": written,
                "check": check,
                "pyxdf_load": load,
                "target": {"seconds": TARGET_S, "peak_rss_mb": TARGET_RSS_MB, "applies": minutes >= 60, "met": meets},
            },
            indent=1,
        )
    )
    print(f"Results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
