"""Many sessions: the quick-check of N sessions in a loop against a local Dask cluster.

N simulated sessions (``tests.synchrony.xdf_fixtures.write_simulated_xdf``: 2 x 32 channels at
500 Hz, 4 conditions, different seeds) are written to XDF (not timed). Then, each in a fresh
process, ``map_sessions`` runs ``run_check`` (default bands and metrics, the given surrogates,
seed 0, no outputs written) on all of them:

1. ``scheduler="serial"``: one process, which already uses every core inside one check (numba's
   parallel loops, two bands at a time in threads);
2. the default local cluster (one single-threaded worker process per CPU, bounded memory), its
   start-up included; the cluster's start alone is timed too.

Reported: wall time of each path, speed-up, the work per session (its own ``timing_s.total`` in
both paths), the machine's load average at the start (the machine may be shared), and whether
both paths gave equal reports up to summation order (``tests/synchrony/report_diff.py``).

Run: ``python -m benchmarks.bench_distributed [--quick] [--sessions N] [--minutes M] [--surrogates S]``
(``--quick``: 4 sessions of 1 minute, 50 surrogates); writes ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_quickcheck import CHANNELS
from benchmarks.measure import run_child

RESULTS = Path(__file__).parent / "results" / "distributed.json"
CONDITIONS = ("rest", "cooperation", "competition", "conversation")
RATE = 500.0


def _child_map(scheduler: str, surrogates: int, paths: list[str]) -> dict:
    from dyadlab.synchrony.check import run_check
    from dyadlab.synchrony.distributed import SessionFailure, map_sessions

    check = functools.partial(run_check, n_surrogates=surrogates, seed=0, progress=False)
    started = time.perf_counter()
    results = map_sessions(check, paths, scheduler=None if scheduler == "local" else scheduler, progress=False)
    wall = time.perf_counter() - started
    failed = [str(r) for r in results if isinstance(r, SessionFailure)]
    reports = [r for r in results if not isinstance(r, SessionFailure)]
    return {
        "wall_s": wall,
        "per_session_s": [r["timing_s"]["total"] for r in reports],
        "failed": failed,
        # What differs between two runs of the same check: when, and how long.
        "reports": [{k: v for k, v in r.items() if k not in ("generated_utc", "timing_s")} for r in reports],
    }


def _child_start() -> dict:
    from distributed import Client, LocalCluster

    from dyadlab.synchrony.distributed import default_memory_limit, default_workers

    started = time.perf_counter()
    workers = default_workers()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            memory_limit=default_memory_limit(workers),
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        ready = time.perf_counter() - started
    return {"start_s": ready, "workers": workers}


def _write_sessions(folder: Path, n: int, minutes: float) -> list[Path]:
    from tests.synchrony.xdf_fixtures import write_simulated_xdf

    block_s = (minutes * 60.0 - 2.0 * (len(CONDITIONS) + 1)) / len(CONDITIONS)
    paths = []
    for seed in range(n):
        path = folder / f"session-{seed}.xdf"
        write_simulated_xdf(path, [(c, block_s) for c in CONDITIONS], rate=RATE, channel_names=CHANNELS, seed=seed)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_distributed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="4 sessions of 1 minute, 50 surrogates")
    parser.add_argument("--sessions", type=int, default=None, help="sessions (default 8, or 4 with --quick)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="minutes per session (default 5, or 1 with --quick)"
    )
    parser.add_argument("--surrogates", type=int, default=None, help="per condition (default 200, or 50 with --quick)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        role, *rest = args.child
        payload = _child_start() if role == "start" else _child_map(role, int(rest[0]), rest[1:])
        print(json.dumps(payload))
        return 0

    n = args.sessions or (4 if args.quick else 8)
    minutes = args.minutes or (1.0 if args.quick else 5.0)
    surrogates = args.surrogates if args.surrogates is not None else (50 if args.quick else 200)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as folder:
        print(f"Writing {n} sessions of {minutes:g} min (2 x {len(CHANNELS)} channels at {RATE:g} Hz) ...", flush=True)
        paths = [str(p) for p in _write_sessions(Path(folder), n, minutes)]
        print("Serial ...", flush=True)
        serial = run_child("benchmarks.bench_distributed", "serial", str(surrogates), *paths)
        print("Local cluster ...", flush=True)
        local = run_child("benchmarks.bench_distributed", "local", str(surrogates), *paths)
        start = run_child("benchmarks.bench_distributed", "start")
    from tests.synchrony.report_diff import differences, largest_difference

    serial_reports, local_reports = serial.pop("reports"), local.pop("reports")
    beyond = [d for a, b in zip(serial_reports, local_reports) for d in differences(a, b)]
    largest = max(largest_difference(a, b) for a, b in zip(serial_reports, local_reports))
    equal = not beyond and len(serial_reports) == len(local_reports)
    speedup = serial["wall_s"] / local["wall_s"]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    print(
        f"\n{n} sessions of {minutes:g} min, {surrogates} surrogates; {os.cpu_count()} CPU(s), "
        f"load average at start {load_before[0]:.1f}; Python {platform.python_version()}"
    )
    print(f"{'path':40s} {'wall s':>8s} {'per session s (mean)':>21s}")
    print(f"{'serial (one process)':40s} {serial['wall_s']:8.1f} {mean(serial['per_session_s']):21.2f}")
    cluster_row = f"local cluster ({start['workers']} workers, start-up incl.)"
    print(f"{cluster_row:40s} {local['wall_s']:8.1f} {mean(local['per_session_s']):21.2f}")
    print(f"{'  of which starting the cluster':40s} {start['start_s']:8.1f}")
    print(
        f"Speed-up {speedup:.2f}x; reports equal up to summation order (tests/synchrony/report_diff.py): {equal} "
        f"(largest difference / max(1, |value|): {largest:.1e}); failures: {serial['failed'] + local['failed'] or 'none'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "distributed",
                "sessions": n,
                "minutes": minutes,
                "channels_per_participant": len(CHANNELS),
                "rate_hz": RATE,
                "surrogates": surrogates,
                "cpu_count": os.cpu_count(),
                "load_average_at_start": load_before,
                "python": platform.python_version(),
                "serial": serial,
                "local_cluster": local,
                "cluster_start": start,
                "speedup": speedup,
                "reports_equal_up_to_summation_order": equal,
                "differences_beyond_tolerance": [list(map(str, d)) for d in beyond[:20]],
                "largest_difference_scaled": largest,
            },
            indent=1,
        )
    )
    print(f"Results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
