"""``dyadlab new-paradigm NAME``: a small working paradigm of the lab's own, with its test and a protocol.

Three files are written into a folder of the lab's (never into dyadlab):

* ``<module>.py``: the paradigm (a reaction-time task for both participants: fixation, go signal,
  feedback), every participant-facing text a parameter so that a protocol can translate it;
* ``test_<module>.py``: its pytest test, which runs one block with simulated participants in a
  sandbox (:mod:`dyadlab.tasks.sandbox`) and checks markers, CSV rows and screenshots;
* ``<module>_pilot.yaml``: a protocol that runs it with the simulator, for
  ``dyadlab run <module>_pilot.yaml --simulate --autopilot``.

docs/paradigms.md walks through changing the example into the lab's paradigm.
"""

from __future__ import annotations

import re
from pathlib import Path

from dyadlab import DyadlabError

_NAME = re.compile(r"^[a-z][a-z0-9\-]{1,40}$")

_PARADIGM = '''"""{title}: a paradigm of this lab, run by dyadlab (started with `dyadlab new-paradigm {name}`).

Each trial shows a fixation cross, then a go signal; both participants press their own key as
soon as they see it, then each sees their own reaction time. Markers (pushed on the flip that
shows the screen): ``trial_start``, ``fixation``, ``go`` (the reaction-time origin),
``feedback``. The behavioural CSV has one row per trial with each participant's reaction time
(``rt_A``, ``rt_B``), the LSL time of their press (``response_lsl_time_A``...) and the device
it came from (``device_A``...; empty on the shared keyboard).

Every text the participants read is a parameter, so that a protocol can translate it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from dyadlab.tasks.display import View
from dyadlab.tasks.kit import Frame, Response, TaskContext
from dyadlab.tasks.paradigms import Paradigm, ParadigmParams


class {cls}Params(ParadigmParams):
    """Parameters a protocol block may set (validated before the session starts)."""

    n_trials: int = Field(10, ge=1, le=500)
    fixation_s: float = Field(0.8, gt=0, le=10)
    response_window_s: float = Field(1.5, gt=0, le=10)
    feedback_s: float = Field(1.0, gt=0, le=10)
    instructions_text: str = "Press your key as soon as the circle turns green."
    go_text: str = "Now!"
    feedback_text: str = "{{ms}} ms"
    missed_text: str = "Too slow"


class {cls}(Paradigm[{cls}Params]):
    """Both participants react to one go signal."""

    name: ClassVar[str] = "{name}"
    Params: ClassVar[type[ParadigmParams]] = {cls}Params

    def conditions(self, params: {cls}Params) -> list[str]:
        return ["{name}"]

    def run(self, ctx: TaskContext, params: {cls}Params, block_id: str) -> None:
        if params.show_instructions:
            ctx.instructions(self.instructions_text(params, params.instructions_text), self.name, block_id)
        with ctx.block(self.name, block_id, "{name}", value={{"n_trials": params.n_trials}}):
            for trial in range(params.n_trials):
                ctx.trial = trial
                self._trial(ctx, params)
            ctx.trial = None

    def _trial(self, ctx: TaskContext, params: {cls}Params) -> None:
        ctx.mark_on_next_flip(ctx.marker("trial_start"))
        ctx.show(
            lambda view: view.text("fixation", "+", height=0.1).draw(),
            duration=params.fixation_s,
            marker=ctx.marker("fixation"),
            screenshot=f"{{self.name}}_fixation",
        )
        first: dict[str, Response] = {{}}

        def go(view: View) -> None:
            view.circle("go", radius=0.1, fillColor="#33cc55").draw()
            view.text("go-text", params.go_text, pos=(0, -0.2), height=0.06).draw()

        asked: list[bool] = []

        def on_frame(frame: Frame) -> None:
            if ctx.autopilot is not None and not asked:  # simulated participants answer the go signal
                asked.append(True)
                for label in ctx.participants:
                    ctx.autopilot.respond_to_go(label, frame.flip_time)
            for response in frame.responses:
                if response.rt is not None and response.rt >= 0:
                    first.setdefault(response.participant, response)

        ctx.show(
            go,
            duration=params.response_window_s,
            marker=ctx.marker("go"),
            rt_origin=True,
            until=lambda frame: len(first) == len(ctx.participants),
            on_frame=on_frame,
            screenshot=f"{{self.name}}_go",
        )

        def feedback(view: View) -> None:
            lines = []
            for label in view.participants:
                response = first.get(label)
                lines.append(
                    params.feedback_text.format(ms=round(response.rt * 1000))
                    if response is not None and response.rt is not None
                    else params.missed_text
                )
            view.text("feedback", "\\n".join(lines), height=0.06).draw()

        ctx.show(
            feedback, duration=params.feedback_s, marker=ctx.marker("feedback"), screenshot=f"{{self.name}}_feedback"
        )
        row: dict[str, Any] = {{"trial": ctx.trial}}
        for label in ctx.participants:
            response = first.get(label)
            row[f"rt_{{label}}"] = response.rt if response else None
            row[f"response_lsl_time_{{label}}"] = response.lsl_time if response else None
            row[f"device_{{label}}"] = response.device if response else None  # None: the shared keyboard
        ctx.add_row(**row)
'''

_TEST = '''"""Test of the {name} paradigm: one block with simulated participants, in real PsychoPy windows.

Run it with `xvfb-run -a python -m pytest test_{module}.py` on a machine without a screen.
"""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from dyadlab.tasks.sandbox import run_paradigm
from {module} import {cls}, {cls}Params

needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display: run under xvfb-run -a")


def test_parameters_are_checked() -> None:
    with pytest.raises(ValidationError):
        {cls}Params(n_trials=0)


@needs_display
@pytest.mark.parametrize("layout", ["shared", "per-participant"])
def test_a_block_gives_markers_csv_rows_and_screens(tmp_path, layout) -> None:
    n_trials = 3
    run = run_paradigm({cls}, {{"n_trials": n_trials}}, tmp_path, layout=layout)
    events = [event for event in run.events() if event != "instructions"]
    assert events[0] == "block_start" and events[-1] == "block_end"
    assert events.count("go") == events.count("feedback") == n_trials
    assert len(run.rows) == n_trials
    go_stamps = [stamp for marker, stamp in run.markers if marker.event == "go"]
    answered = 0
    for row, go in zip(run.rows, go_stamps):
        for label in ("A", "B"):
            if row[f"response_lsl_time_{{label}}"] not in ("", "None"):  # "None": no press in time
                answered += 1
                # a press counts from its own trial's go flip on, and its RT is measured from that flip
                # (flip stamp and flip return are read within 2 ms of each other)
                assert float(row[f"response_lsl_time_{{label}}"]) > go
                assert abs(float(row[f"response_lsl_time_{{label}}"]) - go - float(row[f"rt_{{label}}"])) < 0.002
    assert answered >= n_trials, "the simulated participants answered most go signals"
    assert run.screenshots, "the screens were saved"
'''

_PROTOCOL = """# A pilot of the {name} paradigm with simulated people and EEG:
#   dyadlab run {module}_pilot.yaml --simulate --autopilot --speed 5
version: 1
name: {module}-pilot
study: {module}
dyad: D01
participants:
  - {{label: A, id: sub-01, role: participant, device: {{board: simulator}}}}
  - {{label: B, id: sub-02, role: participant, device: {{board: simulator}}}}
screens: {{layout: shared, fullscreen: false, size: [1280, 800], check_timing: false}}
blocks:
  - {{id: rest, task: rest, duration: 30, params: {{variant: eyes-open}}}}
  - id: {name}
    task: {module}.py:{cls}
    params: {{n_trials: 10}}
lsl: {{session_id: auto, local_only: true}}
preflight: {{enabled: true, seconds: 3}}
quickcheck: {{enabled: true, surrogates: 200, epoch_seconds: 2}}
"""


class ScaffoldError(DyadlabError, ValueError):
    """The paradigm name is not usable, or its files exist already."""


def module_name(name: str) -> str:
    """The Python module name of paradigm ``name`` (``mirror-game`` -> ``mirror_game``)."""
    return name.replace("-", "_")


def class_name(name: str) -> str:
    """The class name of paradigm ``name`` (``mirror-game`` -> ``MirrorGame``)."""
    return "".join(part.capitalize() for part in name.split("-") if part)


def scaffold_files(name: str) -> dict[str, str]:
    """The example's files by name: ``<module>.py``, ``test_<module>.py``, ``<module>_pilot.yaml``."""
    module, cls = module_name(name), class_name(name)
    values = {"name": name, "module": module, "cls": cls, "title": name.replace("-", " ").capitalize()}
    return {
        f"{module}.py": _PARADIGM.format(**values),
        f"test_{module}.py": _TEST.format(**values),
        f"{module}_pilot.yaml": _PROTOCOL.format(**values),
    }


def write_paradigm_scaffold(name: str, folder: Path) -> list[Path]:
    """Write the example paradigm ``name``, its test and a pilot protocol into ``folder``.

    Parameters
    ----------
    name : str
        Task name: lower-case letters, digits and ``-``, starting with a letter (2 to 41 characters).
    folder : Path
        Created if missing; no existing file is overwritten.

    Returns
    -------
    list of Path
        The paradigm, the test and the protocol.

    Raises
    ------
    ScaffoldError
        Bad name, a bundled paradigm's name, or a file that exists already.
    """
    from dyadlab.tasks.paradigms import PARADIGMS

    if not _NAME.match(name) or name.endswith("-") or "--" in name:
        raise ScaffoldError(
            f"{name!r} is not a usable paradigm name: use lower-case letters, digits and single '-', "
            "starting with a letter, e.g. mirror-game"
        )
    if name in PARADIGMS:
        raise ScaffoldError(f"{name!r} is already a paradigm of dyadlab; give yours its own name")
    files = {folder / file_name: text for file_name, text in scaffold_files(name).items()}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ScaffoldError(f"not overwriting {', '.join(existing)}: move them away or choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
