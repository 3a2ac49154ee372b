"""Study benchmark: the known-answer run and the null rate of ``dyadlab study analyze``.

1. **Known answer**: simulated plasticity studies (default 12 patients x 8 sessions, a therapist
   every session, a new stranger at sessions 1, 4 and 8; :mod:`dyadlab.protocols.study_simulation`)
   are written and analysed (:func:`dyadlab.synchrony.study_analysis.analyze_study`, serial, no
   pseudo-dyads). Reported per seed: each headline effect with its 95 % CI, whether the CI
   excludes 0, and the seconds per session to simulate and to analyse.
2. **Null rate**: the null version of the same design over several seeds; per headline effect,
   the fraction of seeds whose 95 % CI excludes 0 (nominal 0.05), with its Clopper-Pearson 95 % CI.

Run: ``python -m benchmarks.bench_study [--quick] [--known-seeds K] [--null-seeds N] [--patients P]
[--sessions S] [--strangers 1,4,8] [--therapists T] [--therapist-rate R] [--stranger-onset K]``
(``--quick``: 4 patients x 4 sessions, 1 + 2 seeds); writes ``benchmarks/results/study.json``.
The unit test's design: ``--patients 6 --sessions 5 --strangers 1,3,5 --therapists 2
--therapist-rate 0.1 --stranger-onset 2 --surrogates 50``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import scipy.stats

RESULTS = Path(__file__).parent / "results" / "study.json"
#: The headline effects whose CI should exclude 0 in a planted study and not in a null one.
HEADLINE = (
    "slope[therapist]",
    "slope[stranger]",
    "slope[stranger] - slope[therapist]",
    "lagged[stranger]",
    "outcome slope correlation",
    "outcome ~ synchrony (within person)",
)


def one_study(design: Any, surrogates: int) -> dict[str, Any]:
    """Simulate and analyse one study in a temporary folder; its effects and timings."""
    from dyadlab.protocols.study_simulation import simulate_study
    from dyadlab.synchrony.study import load_study
    from dyadlab.synchrony.study_analysis import analyze_study

    folder = Path(tempfile.mkdtemp(prefix="dyadlab-bench-study-"))
    try:
        start = time.perf_counter()
        truth = simulate_study(folder, design)
        simulated = time.perf_counter()
        settings = load_study(folder).analysis.model_copy(update={"surrogates": surrogates})
        result = analyze_study(folder, settings=settings, scheduler="serial", pseudo=False)
        analysed = time.perf_counter()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(truth["planted"])
    effects = {
        name: {
            key: result["effects"][name].get(key)
            for key in ("estimate", "r", "ci_low", "ci_high", "p", "excludes_zero")
            if result["effects"][name].get(key) is not None
        }
        for name in HEADLINE
        if name in result["effects"]
    }
    return {
        "seed": design.seed,
        "n_sessions": n,
        "simulate_s_per_session": (simulated - start) / n,
        "analyse_s_per_session": (analysed - simulated) / n,
        "effects": effects,
        "model": result["trajectory"]["re_formula"],
    }


def _rate(flags: list[bool]) -> dict[str, Any]:
    k, n = sum(flags), len(flags)
    ci = scipy.stats.binomtest(k, n).proportion_ci(0.95) if n else None
    return {"flagged": k, "seeds": n, "rate": k / n if n else None, "ci95": [ci.low, ci.high] if ci else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 patients x 4 sessions, 1 known + 2 null seeds")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--strangers", default="1,4,8", help="stranger sessions")
    parser.add_argument("--therapists", type=int, default=3)
    parser.add_argument("--therapist-rate", type=float, default=0.06, help="planted coupling rise per session")
    parser.add_argument("--stranger-onset", type=int, default=4, help="last session of flat stranger coupling")
    parser.add_argument("--known-seeds", type=int, default=3)
    parser.add_argument("--null-seeds", type=int, default=20)
    parser.add_argument("--surrogates", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")  # statsmodels' convergence notes are in each result
    from dyadlab.protocols.study_simulation import StudyDesign

    if args.quick:
        args.patients, args.sessions, args.strangers, args.known_seeds, args.null_seeds = 4, 4, "1,4", 1, 2
    shape = {
        "n_patients": args.patients,
        "n_sessions": args.sessions,
        "stranger_sessions": tuple(int(k) for k in args.strangers.split(",") if k),
        "n_therapists": args.therapists,
        "therapist_rate": args.therapist_rate,
        "stranger_onset": args.stranger_onset,
    }
    known, null = [], []
    for seed in range(args.known_seeds):
        known.append(one_study(StudyDesign(seed=seed, **shape), args.surrogates))
        print("known", json.dumps(known[-1]), flush=True)
    for seed in range(args.null_seeds):
        null.append(one_study(StudyDesign(seed=1000 + seed, null=True, **shape), args.surrogates))
        print("null", json.dumps(null[-1]), flush=True)
    report = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "design": {**shape, "surrogates": args.surrogates},
        "known_answer": known,
        "known_found": {
            name: _rate([k["effects"].get(name, {}).get("excludes_zero", False) for k in known]) for name in HEADLINE
        },
        "null_rate": {
            name: _rate([k["effects"].get(name, {}).get("excludes_zero", False) for k in null]) for name in HEADLINE
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\n{'effect':40s} {'found (planted)':>16s} {'null rate [95% CI]':>26s}")
    for name in HEADLINE:
        found, rate = report["known_found"][name], report["null_rate"][name]
        interval = f"[{rate['ci95'][0]:.2f}, {rate['ci95'][1]:.2f}]" if rate["ci95"] else ""
        print(
            f"{name:40s} {found['flagged']:>7d}/{found['seeds']:<8d} {rate['flagged']:>5d}/{rate['seeds']:<3d} {interval:>14s}"
        )
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
