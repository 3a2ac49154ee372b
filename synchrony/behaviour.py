"""The behavioural summary of each block, read from the recording's marker and response streams.

The paradigms (``dyadlab.tasks.paradigms``) write what participants did into the session's LSL
streams, so the XDF alone tells it; this module reads those streams (it does not import the task
layer, which sits above the synchrony layer):

* joint press (``feedback`` markers, value = the trial's outcome): in ``cooperation``, the
  success rate (both pressed within the adaptive threshold of each other), the median absolute
  difference of the two reaction times and the last threshold; in ``competition``, each
  participant's wins. Both: trials without a response of both, median reaction times.
* tapping (``response`` events of the response stream inside the block, the key-down times;
  ``tap`` markers when a file has no response stream; ``pacer`` markers; the ``cue`` that starts
  the continuation phase): per participant the mean and standard deviation of the asynchrony to
  the nearest pacer flash within half a period (synchronisation phase), the inter-partner
  asynchrony (each of A's taps to B's nearest tap, or the computer's in ``tapping-computer``),
  and in the continuation phase the mean inter-tap interval and its coefficient of variation.
  The asynchrony is to the flash as shown (the ``pacer`` marker's flip time), which is what the
  participants tapped to; the paradigm's CSV measures it to the scheduled tick (up to a frame
  earlier) and without the half-period limit, so the two differ by a few milliseconds.
* conversation: topics and speaking turns.

Blocks are found by the ``block`` id every dyadlab marker carries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from dyadlab.synchrony.io import EventMarker

__all__ = ["summarise_behaviour"]

logger = logging.getLogger(__name__)

PARTICIPANTS = ("A", "B")


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _value(marker: EventMarker) -> Any:
    return (marker.fields or {}).get("value")


def _joint_press(feedback: list[EventMarker]) -> tuple[str, dict[str, float | None]]:
    """Outcomes of the joint-press trials of one block (one ``feedback`` marker per trial)."""
    outcomes = [v for v in (_value(m) for m in feedback) if isinstance(v, dict)]
    mode = str(outcomes[0].get("mode", "")) if outcomes else ""
    rts = {p: [float(o["rt"][p]) for o in outcomes if (o.get("rt") or {}).get(p) is not None] for p in PARTICIPANTS}
    missing = sum(1 for o in outcomes if o.get("outcome") == "missing")
    measures: dict[str, float | None] = {"trials": float(len(outcomes)), "missing_responses": float(missing)}
    if mode == "cooperation":
        successes = sum(1 for o in outcomes if o.get("outcome") == "success")
        differences = [float(o["difference"]) for o in outcomes if o.get("difference") is not None]
        thresholds = [float(o["threshold"]) for o in outcomes if o.get("threshold") is not None]
        measures.update(
            successes=float(successes),
            success_rate=successes / len(outcomes) if outcomes else None,
            median_abs_rt_difference_ms=None if not differences else 1000 * float(np.median(differences)),
            last_threshold_ms=1000 * thresholds[-1] if thresholds else None,
        )
    else:
        for p in PARTICIPANTS:
            measures[f"wins_{p}"] = float(sum(1 for o in outcomes if o.get("winner") == p))
    for p in PARTICIPANTS:
        median = _median(rts[p])
        measures[f"median_rt_{p}_ms"] = None if median is None else 1000 * median
    return f"joint-press {mode}".strip(), measures


def _nearest_differences(times: np.ndarray, references: np.ndarray, limit: float) -> np.ndarray:
    """``times`` minus the nearest of the sorted ``references``, kept where within ``limit`` seconds."""
    if times.size == 0 or references.size == 0:
        return np.empty(0)
    index = np.clip(np.searchsorted(references, times), 1, max(references.size - 1, 1))
    before = references[index - 1]
    after = references[np.minimum(index, references.size - 1)]
    nearest = np.where(np.abs(times - before) <= np.abs(times - after), before, after)
    differences = times - nearest
    return differences[np.abs(differences) <= limit]


def _tapping(events: list[EventMarker], responses: list[EventMarker]) -> tuple[str, dict[str, float | None]]:
    """Tap timing of one tapping block (see the module docstring)."""
    pacer = np.array(sorted(m.time for m in events if m.event == "pacer"))
    continuation = [m.time for m in events if m.event == "cue" and (_value(m) or {}).get("phase") == "continuation"]
    switch = continuation[0] if continuation else np.inf
    # Key-down times from the response stream; the flash markers (a frame later) when it is absent.
    sources = responses or [m for m in events if m.event == "tap"]
    taps = {
        p: np.array(sorted(m.time for m in sources if (m.fields or {}).get("participant") == p)) for p in PARTICIPANTS
    }
    computer = np.array(
        sorted(m.time for m in events if m.event == "tap" and (_value(m) or {}).get("by") == "computer")
    )
    period = float(np.median(np.diff(pacer))) if pacer.size >= 2 else None
    half = period / 2 if period else np.inf
    measures: dict[str, float | None] = {"pacer_period_ms": None if period is None else 1000 * period}
    for p in PARTICIPANTS:
        synchronised, continued = taps[p][taps[p] < switch], taps[p][taps[p] >= switch]
        measures[f"taps_{p}"] = float(taps[p].size)
        asynchrony = _nearest_differences(synchronised, pacer, half)
        measures[f"mean_asynchrony_to_pacer_{p}_ms"] = 1000 * float(asynchrony.mean()) if asynchrony.size else None
        measures[f"sd_asynchrony_to_pacer_{p}_ms"] = (
            1000 * float(asynchrony.std(ddof=1)) if asynchrony.size > 1 else None
        )
        intervals = np.diff(continued)
        measures[f"mean_continuation_interval_{p}_ms"] = 1000 * float(intervals.mean()) if intervals.size else None
        measures[f"cv_continuation_interval_{p}"] = (
            float(intervals.std(ddof=1) / intervals.mean()) if intervals.size > 1 else None
        )
    partner = computer if computer.size else taps["B"]
    between = _nearest_differences(taps["A"], partner, half)
    who = "computer" if computer.size else "B"
    measures[f"median_abs_asynchrony_A_to_{who}_ms"] = (
        1000 * float(np.median(np.abs(between))) if between.size else None
    )
    return "tapping", measures


def _conversation(events: list[EventMarker]) -> tuple[str, dict[str, float | None]]:
    return "conversation", {
        "topics": float(sum(1 for m in events if m.event == "topic")),
        "turns": float(sum(1 for m in events if m.event == "turn")),
    }


def summarise_behaviour(
    markers: Sequence[EventMarker], responses: Sequence[EventMarker], origin: float
) -> list[dict[str, Any]]:
    """One summary per block whose paradigm records behaviour, in the order the blocks ran.

    Parameters
    ----------
    markers : sequence of EventMarker
        The session's markers (dyadlab JSON markers; other strings are ignored).
    responses : sequence of EventMarker
        The response stream's events (key presses with ``participant``).
    origin : float
        LSL time that ``start_s`` is measured from (the analysis grid's start).

    Returns
    -------
    list of dict
        ``block``, ``condition``, ``task``, ``paradigm`` (``joint-press cooperation``,
        ``joint-press competition``, ``tapping``, ``conversation``), ``start_s`` and ``measures``
        (name -> number or ``None``; ``_ms`` names in milliseconds).
    """
    by_block: dict[str, list[EventMarker]] = {}
    starts: dict[str, EventMarker] = {}
    for marker in markers:
        block = (marker.fields or {}).get("block")
        if not block:
            continue
        by_block.setdefault(str(block), []).append(marker)
        if marker.event == "block_start":
            starts.setdefault(str(block), marker)
    summaries = []
    for block, events in by_block.items():
        events_present = {m.event for m in events}
        if "feedback" in events_present and any(isinstance(_value(m), dict) for m in events if m.event == "feedback"):
            paradigm, measures = _joint_press([m for m in events if m.event == "feedback"])
        elif "pacer" in events_present or "tap" in events_present:
            # Presses on the instruction screen carry the block id too: only those inside the block count.
            began = min((m.time for m in events if m.event == "block_start"), default=-np.inf)
            ended = max((m.time for m in events if m.event == "block_end"), default=np.inf)
            block_responses = [
                m for m in responses if (m.fields or {}).get("block") == block and began <= m.time <= ended
            ]
            paradigm, measures = _tapping(events, block_responses)
        elif "turn" in events_present or "topic" in events_present:
            paradigm, measures = _conversation(events)
        else:
            continue
        first = starts.get(block, events[0])
        fields = first.fields or {}
        summaries.append(
            {
                "block": block,
                "condition": fields.get("condition"),
                "task": fields.get("task"),
                "paradigm": paradigm,
                "start_s": round(first.time - origin, 3),
                "measures": measures,
            }
        )
    logger.debug("behavioural summary of %d block(s)", len(summaries))
    return summaries
