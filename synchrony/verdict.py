"""The quick-check's verdict: the detection rule, the common-mode and alpha-peak diagnostics and
the one-minute summary at the top of the report. Shared by the check, its report and the
command line, so that all three apply one rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dyadlab.synchrony.timing_verification import summary_lines as timing_summary_lines

__all__ = [
    "detects",
    "P_DETECT",
    "VERDICT_METRIC",
    "Z_CHANCE",
    "Z_DETECT",
    "above_chance",
    "build_verdict",
    "diagnostics",
    "one_line",
    "timing_problems",
    "timing_verdict",
]

#: Metric used for the verdict ("synchrony above chance").
VERDICT_METRIC = "plv"
#: A condition x band is "above chance" when the surrogate z of the mean over pairs reaches this
#: and its empirical p is below :data:`P_DETECT`. z >= 3 is one-sided p ~ 0.0013 for a Gaussian
#: null, about a Bonferroni 0.05 over 40 cells (10 conditions x 4 bands); the empirical p alone
#: cannot go below 1 / (n_surrogates + 1).
Z_DETECT = 3.0
P_DETECT = 0.05
#: The summary line that says why the timing verdict is CHECK begins with this.
TIMING_CHECK_PREFIX = "Timing CHECK: "
#: wPLI at chance (z below this) while PLV is above chance suggests zero-lag common-mode signal.
Z_CHANCE = 2.0


def diagnostics(
    conditions: dict[str, Any], quality: dict[str, Any], bands: dict[str, Any], metrics: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    warnings = []
    common_mode = []
    if "plv" in metrics and "wpli" in metrics:
        for condition, entry in conditions.items():
            for band in bands:
                plv, wpli = entry[band]["plv"], entry[band]["wpli"]
                if plv["z"] is not None and wpli["z"] is not None and plv["z"] >= Z_DETECT and wpli["z"] < Z_CHANCE:
                    common_mode.append({"condition": condition, "band": band, "plv_z": plv["z"], "wpli_z": wpli["z"]})
                    warnings.append(
                        f"{condition}/{band}: PLV is far above chance (z {plv['z']:.1f}) but wPLI is not (z {wpli['z']:.1f}): "
                        "zero-lag coupling suggests a common-mode signal (shared reference, line noise, movement) "
                        "rather than brain-to-brain synchrony."
                    )
    iaf_a, iaf_b = quality["A"]["alpha_peak_hz"], quality["B"]["alpha_peak_hz"]
    diff = None if iaf_a is None or iaf_b is None else round(iaf_b - iaf_a, 2)
    if diff is not None and abs(diff) >= 1.0:
        warnings.append(
            f"The partners' individual alpha peaks differ by {abs(diff):.1f} Hz (A {iaf_a:g} Hz, B {iaf_b:g} Hz): alpha-band "
            "phase synchrony between them is limited by the frequency mismatch."
        )
    return {
        "alpha_peak_hz": {"A": iaf_a, "B": iaf_b, "difference_B_minus_A": diff},
        "common_mode": common_mode,
    }, warnings


def detects(z: float | None, p: float | None) -> bool:
    """The verdict's rule: surrogate z at least :data:`Z_DETECT` and empirical p below :data:`P_DETECT`."""
    return z is not None and z >= Z_DETECT and p is not None and p < P_DETECT


def above_chance(cell: dict[str, Any]) -> bool:
    """The verdict's rule for one ``conditions.<condition>.<band>.<metric>`` entry of the JSON."""
    return detects(cell.get("z"), cell.get("p"))


def one_line(verdict: dict[str, Any]) -> str:
    """The verdict in one line (session logs, ``session.json``)."""
    found = verdict["synchrony_above_chance"]
    synchrony = (
        "synchrony above chance in " + ", ".join(f"{d['condition']}/{d['band']} (z {d['z']:.1f})" for d in found)
        if found
        else "no synchrony above chance"
    )
    withheld = verdict.get("withheld") or []
    if withheld:
        synchrony += (
            " (withheld as shared line noise: " + ", ".join(f"{d['condition']}/{d['band']}" for d in withheld) + ")"
        )
    timing = verdict["timing"].upper()
    if verdict["timing"] == "check":  # say why: the in-session terminal shows this line alone
        why = next(
            (
                line.removeprefix(TIMING_CHECK_PREFIX)
                for line in verdict["summary"]
                if line.startswith(TIMING_CHECK_PREFIX)
            ),
            "see the report's data quality table",
        )
        timing += f" ({why.rstrip('.')})"
    return f"data quality {verdict['data_quality'].upper()}, timing {timing}, {synchrony}; {verdict['n_warnings']} warning(s)"


def timing_problems(result: dict[str, Any], residuals: list[dict[str, Any]]) -> list[str]:
    """Why the timing verdict is ``check``: timestamps going back, no clock offsets, marker
    residuals beyond ``residual_warn_ms``, and the photodiode / TTL check's problems
    (:mod:`dyadlab.synchrony.timing_verification`); empty when none."""
    quality = result["quality"]
    limit = result["inputs"]["thresholds"]["residual_warn_ms"]
    reasons = []
    for label in ("A", "B"):
        if quality[label]["backward_jumps"]:
            reasons.append(f"participant {label}'s timestamps go back {quality[label]['backward_jumps']} time(s)")
        if not quality[label]["clock_offsets"]:
            reasons.append(f"participant {label}'s stream has no clock offsets (its clock was never synchronised)")
    for r in residuals:
        if (r.get("max_abs_ms") or 0) > limit:
            reasons.append(f"a board marker lies {r['max_abs_ms']:.1f} ms from its LSL marker (limit {limit:g} ms)")
    verification = result.get("timing_verification")
    if verification:
        reasons += verification["problems"]
    return reasons


def timing_verdict(result: dict[str, Any], residuals: list[dict[str, Any]]) -> str:
    """``check`` when :func:`timing_problems` finds any; ``ok`` when board-marker residuals or a
    photodiode / TTL channel paired with the markers verified the timing; ``unverified`` when
    nothing could verify it."""
    if timing_problems(result, residuals):
        return "check"
    verification = result.get("timing_verification")
    measured = verification is not None and any(c["paired"] for c in verification["channels"])
    return "ok" if residuals or measured else "unverified"


def build_verdict(result: dict[str, Any], bands: dict[str, Any]) -> dict[str, Any]:
    """The one-minute summary at the top of the report."""
    quality = result["quality"]
    lines = []
    data_ok = all(quality[label]["verdict"] == "ok" for label in ("A", "B")) and not result["file"]["load_problems"]
    for label in ("A", "B"):
        q = quality[label]
        lines.append(
            f"Participant {label} ({q['stream']}): {q['duration_s']:.0f} s at {q['effective_rate_hz']:.1f} Hz (nominal {q['nominal_rate_hz']:g}), "
            f"{len(q['problems'])} problem(s)."
        )
    if result["file"]["load_problems"]:
        lines.append(f"The file has {len(result['file']['load_problems'])} loading problem(s) (see warnings).")
    overlap = quality["overlap"]
    lines.append(f"Recordings overlap {overlap['overlap_s']:.0f} s ({100 * overlap['overlap_fraction']:.0f}%).")
    residuals = [quality[label]["marker_residuals"] for label in ("A", "B") if quality[label]["marker_residuals"]]
    for label in ("A", "B"):
        r = quality[label]["marker_residuals"]
        if r and r.get("median_ms") is not None:
            lines.append(f"Markers vs EEG ({label}): median {r['median_ms']:+.1f} ms, max |{r['max_abs_ms']:.1f}| ms.")
    lines += timing_summary_lines(result.get("timing_verification"))
    reasons = timing_problems(result, residuals)
    if reasons:
        lines.append(TIMING_CHECK_PREFIX + "; ".join(reason.rstrip(".") for reason in reasons) + ".")
    detected = []
    withheld = []
    for condition, entry in result["conditions"].items():
        for band in bands:
            cell = entry[band].get(VERDICT_METRIC) if isinstance(entry.get(band), dict) else None
            if cell and above_chance(cell):
                found = {
                    "condition": condition,
                    "band": band,
                    "metric": VERDICT_METRIC,
                    "z": cell["z"],
                    "p": cell["p"],
                    "mean": cell["mean"],
                }
                relation = _line_noise_relation(result, condition, band)
                if relation is not None and relation.get("follows_line_noise"):
                    withheld.append(
                        {
                            **found,
                            "reason": f"its per-epoch synchrony rises with the line noise both participants carry "
                            f"(rank correlation {relation['rho']:.2f}, p {relation['p']:.3f})",
                        }
                    )
                else:
                    detected.append(found)
    if withheld:
        lines.append(
            "Not counted as inter-brain synchrony: "
            + ", ".join(f"{d['condition']}/{d['band']} (z {d['z']:.1f})" for d in withheld)
            + ". It is above chance, but it comes and goes with the mains line noise that both participants pick "
            "up at the same times, so it is most likely electrical interference, not the brains. Check the "
            "electrodes, cables and grounding, and keep mains-powered devices away from both participants."
        )
    if detected:
        lines.append(
            "Inter-brain synchrony above chance (PLV, surrogate z >= 3): "
            + ", ".join(f"{d['condition']}/{d['band']} (z {d['z']:.1f})" for d in detected)
            + ". The null shuffles "
            "this dyad's own epochs, so synchrony from shared stimulation or movement is not ruled out: compare "
            "pseudo-dyads across sessions (dyadlab group)."
        )
    elif any(
        entry[b][VERDICT_METRIC].get("z") is not None
        for entry in result["conditions"].values()
        for b in bands
        if VERDICT_METRIC in entry[b]
    ):
        lines.append(
            ("No other" if withheld else "No")
            + " condition and band shows inter-brain synchrony above chance (PLV, surrogate z >= 3)."
        )
    else:
        lines.append("Synchrony statistics were not computed (no surrogates or too few epochs).")
    return {
        "data_quality": "ok" if data_ok else "check",
        "timing": timing_verdict(result, residuals),
        "synchrony_above_chance": detected,
        "rule": f"{VERDICT_METRIC} mean over pairs: surrogate z >= {Z_DETECT:g} and empirical p < {P_DETECT:g}",
        "summary": lines,
        "n_warnings": len(result["warnings"]),
        "withheld": withheld,
    }


def _line_noise_relation(result: dict[str, Any], condition: str, band: str) -> dict[str, Any] | None:
    """The verdict metric's relation to shared line noise (``mains.relation``), if measured."""
    relation = (result.get("mains") or {}).get("relation") or {}
    cell = relation.get(condition, {}).get(band, {}).get(VERDICT_METRIC)
    return cell if isinstance(cell, dict) and cell.get("rho") is not None else None
