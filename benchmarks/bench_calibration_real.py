"""Calibration of the quick-check's pair-level family-wise tests on real-data nulls (issue #12).

Null dyads from real EEG recorded by others: the EEGLAB tutorial recording (one person, 32
channels, 128 Hz, 238 s) is participant A, and the same recording ``L`` seconds later
(circularly, ``B(t) = A((t + L) mod T)``) is participant B, for lags ``L`` = 20, 22, ..., 120 s
(51 pairings). No sample of B is simultaneous with the same sample of A, and one brain
``L >= 20 s`` apart has no moment-to-moment coupling with itself (EEG phase decorrelates within a
second, the envelope's slow drifts within a few seconds): every inter-brain pair is null, while
each "participant" keeps real EEG's spectra, non-stationarity, blinks and channel-to-channel
variance differences. Lags above T / 2 would repeat these pairings with A and B swapped (the
transposed matrices). The recording's visual stimuli come strictly every 3.0078 s, so A's and
B's stimulus-locked responses keep a fixed offset: coupling through a shared stimulus, which can
only add hits (``tests.synchrony.calibration.lagged_null_pair``). The pairings share one
recording, so their outcomes are not independent: the expected number of hits is the nominal rate
times the pairings either way, but the count varies more than a binomial one (the binomial range
is a yardstick, not an exact bound).

Each pairing is written to XDF by the tests' independent writer (``tests/synchrony/independent_xdf.py``)
with one ``rest`` block and checked by :func:`dyadlab.synchrony.check.run_check` itself, with the
default bands and all default metrics, once with the default epoch shuffle (200 surrogates) and
once with the circular shift (20 surrogates by default, the fewest for a 5 % test, p = 1/21: it
recomputes every surrogate, about 1 s each here). A pairing is a family-wise hit of a metric when
any pair of any band is significant family-wise (``n_significant_pairs_fwer > 0``; the family is
all pairs x bands of the metric). Per scheme and metric the table gives pairings, hits, rate and the central 95 %
binomial range of a calibrated 5 % test (``scipy.stats.binom``); a metric passes when its hits do
not exceed the range's upper end. Under this complete null any Benjamini-Hochberg rejection
(``n_significant_pairs > 0``) is a family-wise error too: its count is reported beside (BH controls
the family-wise error under a complete null; its p-values here are parametric approximations).

Measured (``benchmarks/results/calibration_real.json``): epoch shuffle 0-4 hits of 51 per metric
(imCoh and wPLI 4, envcorr 2), circular shift 0-3 (envcorr and wPLI 3); range 0-6, every metric
passes with both nulls. The hits are single pairs scattered over the scalp, not a cluster. Any
BH rejection: 1-4 of 51 per metric (epoch shuffle), 1-3 (circular shift). 16 minutes with
``--jobs 2`` on a shared 2-core machine.

Run: ``python -m benchmarks.bench_calibration_real [--quick] [--schemes epoch-shuffle,circular-shift]``;
writes ``benchmarks/results/calibration_real.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

RESULTS = Path(__file__).parent / "results" / "calibration_real.json"
MODULE = "benchmarks.bench_calibration_real"
ALPHA = 0.05
#: Central range of the binomial count of a calibrated test (probability 1 - RANGE_TAIL * 2).
RANGE_TAIL = 0.025
LAGS_S = tuple(float(lag) for lag in range(20, 121, 2))
QUICK_LAGS_S = (20.0, 50.0, 80.0, 110.0)

logger = logging.getLogger(MODULE)


def binomial_range(n: int, rate: float = ALPHA, tail: float = RANGE_TAIL) -> tuple[int, int]:
    """Central ``1 - 2 tail`` range of Binomial(n, rate) counts."""
    return int(stats.binom.ppf(tail, n, rate)), int(stats.binom.isf(tail, n, rate))


def _significant(cell: dict[str, Any], labels_a: list[str], labels_b: list[str]) -> list[tuple[str, str, float]]:
    """(channel A, channel B, family-wise p) of every family-wise significant pair of a cell."""
    p = np.asarray(cell.get("pair_p_fwer") or [], dtype=float)
    if p.size == 0:
        return []
    rows, cols = np.nonzero(np.nan_to_num(p, nan=1.0) <= ALPHA)
    return [(labels_a[r], labels_b[c], float(p[r, c])) for r, c in zip(rows, cols)]


def check_pairing(folder: Path, lag_s: float, scheme: str, n_surrogates: int, seed: int) -> dict[str, Any]:
    """Write the pairing of lag ``lag_s`` to XDF and run the quick-check on it."""
    from dyadlab.synchrony.check import run_check
    from tests.synchrony import calibration as cal

    recording = cal.eeglab_recording()
    a, b = cal.lagged_null_pair(recording, lag_s)
    path = cal.write_null_pairing(folder / f"lag{lag_s:g}.xdf", a, b, recording.rate, recording.labels)
    started = time.perf_counter()
    result = run_check(
        path,
        conditions=list(cal.NULL_CONDITIONS),
        progress=False,
        surrogate=scheme,
        n_surrogates=n_surrogates,
        seed=seed,
    )
    labels_a, labels_b = (result["participants"][k]["channels"] for k in ("A", "B"))
    entry = result["conditions"]["rest"]
    bands = list(result["inputs"]["bands"])
    per_metric = {}
    for metric in result["inputs"]["metrics"]:
        pairs = {band: _significant(entry[band][metric], labels_a, labels_b) for band in bands}
        per_metric[metric] = {
            "hit": any(pairs.values()),
            # Under a complete null any Benjamini-Hochberg rejection is a family-wise error too.
            "hit_fdr": any((entry[band][metric].get("n_significant_pairs") or 0) > 0 for band in bands),
            "significant": {band: found for band, found in pairs.items() if found},
            "mean_z": {band: entry[band][metric]["z"] for band in bands},
        }
    return {
        "lag_s": lag_s,
        "scheme": scheme,
        "n_epochs": entry["n_epochs"],
        "seconds": round(time.perf_counter() - started, 2),
        "metrics": per_metric,
    }


def summarise(pairings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scheme and metric: pairings, hits, rate, binomial range, pass."""
    table: dict[str, dict[str, Any]] = {}
    for scheme in dict.fromkeys(p["scheme"] for p in pairings):
        rows = [p for p in pairings if p["scheme"] == scheme]
        table[scheme] = {}
        for metric in rows[0]["metrics"]:
            hits = sum(p["metrics"][metric]["hit"] for p in rows)
            hits_fdr = sum(p["metrics"][metric]["hit_fdr"] for p in rows)
            lo, hi = binomial_range(len(rows))
            table[scheme][metric] = {
                "pairings": len(rows),
                "hits": hits,
                "rate": hits / len(rows),
                "binomial_range": [lo, hi],
                "passes": hits <= hi,
                "hits_fdr": hits_fdr,
                "passes_fdr": hits_fdr <= hi,
            }
    return table


def main() -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_LAGS_S)} pairings instead of {len(LAGS_S)}")
    parser.add_argument("--schemes", default="epoch-shuffle,circular-shift", help="comma-separated surrogate schemes")
    parser.add_argument("--n-surrogates", type=int, default=200, help="epoch-shuffle surrogates (default 200)")
    parser.add_argument(
        "--circular-surrogates",
        type=int,
        default=20,
        help="circular-shift surrogates (default 20, the fewest for a 5 %% test: each costs about 1 s here)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="pairings checked at once, in separate processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lags = QUICK_LAGS_S if args.quick else LAGS_S
    started = time.perf_counter()
    pairings = []
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for scheme in args.schemes.split(","):
            n_surrogates = args.circular_surrogates if scheme == "circular-shift" else args.n_surrogates
            jobs = [
                pool.submit(check_pairing, Path(folder), lag, scheme, n_surrogates, args.seed + k)
                for k, lag in enumerate(lags)
            ]
            for lag, job in zip(lags, jobs):
                done = job.result()
                done["n_surrogates"] = n_surrogates
                pairings.append(done)
                hits = [m for m, v in done["metrics"].items() if v["hit"]]
                print(
                    f"{scheme:15s} lag {lag:5.0f} s  {done['n_epochs']:3d} epochs  {done['seconds']:6.1f} s  "
                    f"hits: {', '.join(hits) or '-'}",
                    flush=True,
                )
    table = summarise(pairings)
    print(
        f"\nFamily-wise hits on real-data null pairings (nominal {ALPHA:.0%}, central "
        f"{1 - 2 * RANGE_TAIL:.0%} binomial range)"
    )
    print(
        f"{'scheme':15s} {'metric':8s} {'pairings':>8s} {'hits':>5s} {'rate':>6s} {'range':>7s}  result"
        "  (FDR: pairings with any BH rejection)"
    )
    failed = False
    for scheme, rows in table.items():
        for metric, row in rows.items():
            lo, hi = row["binomial_range"]
            failed |= not row["passes"]
            print(
                f"{scheme:15s} {metric:8s} {row['pairings']:8d} {row['hits']:5d} {row['rate']:6.1%} "
                f"{lo:3d}-{hi:<3d}  {'pass' if row['passes'] else 'FAIL'}"
                f"  (FDR: {row['hits_fdr']}, {'pass' if row['passes_fdr'] else 'above the range'})"
            )
    wall = time.perf_counter() - started
    print(f"\n{len(pairings)} checks in {wall / 60:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "calibration_real",
                "quick": args.quick,
                "alpha": ALPHA,
                "range_probability": 1 - 2 * RANGE_TAIL,
                "lags_s": list(lags),
                "wall_s": round(wall, 1),
                "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
                "summary": table,
                "pairings": pairings,
            },
            indent=1,
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
