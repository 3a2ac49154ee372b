"""Run paradigms without a recording: for a lab's own paradigm tests and for ``dyadlab preview``.

:func:`sandbox_context` opens a real :class:`~dyadlab.tasks.kit.TaskContext` (PsychoPy windows,
flip-locked markers, key input, behavioural CSV) whose marker and response streams are LSL outlets
of their own, not a session's: no EEG device, no recorder, no XDF. :func:`run_paradigm` runs one
block in it with the autopilot and returns what a test asserts on: the markers with their flip
stamps, the CSV rows and the screenshots. The windows need a display (an X server; ``xvfb-run``
on a machine without a screen).
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dyadlab.acquisition.markers import Marker, MarkerHub, MarkerOutlet
from dyadlab.acquisition.streams import event_stream_info
from dyadlab.tasks.autopilot import AutopilotSettings
from dyadlab.tasks.display import DisplaySettings
from dyadlab.tasks.input import KeySettings
from dyadlab.tasks.kit import TaskContext, require_psychopy
from dyadlab.tasks.paradigms import Paradigm, validate_paradigm_params

#: Windows of a sandbox: small, not full screen, no refresh measurement, at most 120 frames/s.
SANDBOX_DISPLAY = DisplaySettings(fullscreen=False, size=(800, 500), check_timing=False, max_frame_rate=120)


@dataclass(frozen=True)
class ParadigmRun:
    """What one sandboxed block produced.

    Attributes
    ----------
    markers : list of (Marker, float)
        Every marker pushed on a flip, with its LSL stamp, in order.
    rows : list of dict
        The behavioural CSV's rows (strings, as a reader of the CSV sees them).
    screenshots : list of Path
        The PNGs written (``<task>_<screen>[_A|_B].png``).
    csv_path : Path
    """

    markers: list[tuple[Marker, float]]
    rows: list[dict[str, str]]
    screenshots: list[Path]
    csv_path: Path

    def events(self) -> list[str]:
        """The marker event names in order."""
        return [marker.event for marker, _ in self.markers]


@contextmanager
def sandbox_context(
    out_dir: Path,
    participants: Mapping[str, str] | None = None,
    display: DisplaySettings = SANDBOX_DISPLAY,
    keys: KeySettings | None = None,
    autopilot: AutopilotSettings | None = None,
    seed: int = 0,
    preview: bool = False,
) -> Iterator[TaskContext]:
    """An open task context on private marker/response outlets; closed (CSV saved) on exit.

    Parameters
    ----------
    out_dir : Path
        The behavioural CSV (``behaviour.csv``) and screenshots (``screenshots/``) go here.
    participants : mapping, optional
        Label -> role; default ``{"A": "participant", "B": "participant"}``.
    display, keys, autopilot, seed, preview
        As for :class:`~dyadlab.tasks.kit.TaskContext`.
    """
    require_psychopy()
    out_dir = Path(out_dir)
    dyad = f"sandbox-{uuid.uuid4().hex[:8]}"  # its own stream names: never mistaken for a session's
    markers = MarkerOutlet(event_stream_info("sandbox", dyad, "markers"))
    responses = MarkerOutlet(event_stream_info("sandbox", dyad, "responses"))
    try:
        context = TaskContext(
            MarkerHub(markers),
            responses,
            participants=participants or {"A": "participant", "B": "participant"},
            data_stem=out_dir / "behaviour",
            display=display,
            keys=keys,
            autopilot=autopilot,
            seed=seed,
            screenshot_dir=out_dir / "screenshots",
            preview=preview,
        )
        with context:
            yield context
    finally:
        markers.close()
        responses.close()


def run_paradigm(
    paradigm: type[Paradigm[Any]],
    params: Mapping[str, Any] | BaseModel | None,
    out_dir: Path,
    *,
    block_id: str = "block-1",
    layout: str = "shared",
    speed: float = 20.0,
    seed: int = 0,
) -> ParadigmRun:
    """Run one block of ``paradigm`` with simulated participants (the autopilot) in a sandbox.

    Parameters
    ----------
    paradigm : Paradigm subclass
    params : mapping or model
        The block's parameters, validated as a protocol's would be.
    out_dir : Path
        Where the CSV and screenshots go.
    block_id : str
    layout : "shared" | "per-participant"
        One window, or one per participant (both on screen 0 here).
    speed : float
        Autopilot speed (shortens rest-like durations and reading time).
    seed : int
        Seed of the autopilot and of the paradigm's randomisation.

    Returns
    -------
    ParadigmRun
    """
    validated = validate_paradigm_params(paradigm, params, block_id)
    display = SANDBOX_DISPLAY.model_copy(update={"layout": layout, "screens": [0] if layout == "shared" else [0, 0]})
    with sandbox_context(
        out_dir, display=display, autopilot=AutopilotSettings(seed=seed, speed=speed), seed=seed
    ) as ctx:
        paradigm().run(ctx, validated, block_id)
        flips = list(ctx.flip_log)
        csv_path = ctx.csv_path
    screenshots = sorted((Path(out_dir) / "screenshots").glob("*.png"))
    rows: list[dict[str, str]] = []
    if csv_path.is_file():
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    markers = [pair for flip in flips for pair in flip.markers]
    return ParadigmRun(markers=markers, rows=rows, screenshots=screenshots, csv_path=csv_path)
