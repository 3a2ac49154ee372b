"""Cooperative vs competitive joint button press (after Cui, Bryant & Reiss, 2012).

Each trial: fixation (jittered) → cue (a ring; ``cue`` marker, value = mode) → go (the ring
fills green; ``go`` marker, the RT origin) → both press their key → feedback (``feedback``
marker) → ``trial_end`` on the next screen's flip.

* Cooperation (condition ``cooperation``): success when both pressed and
  ``|RT_A - RT_B| < threshold``. The threshold adapts (a 1-up/1-down staircase on the
  proportion ``threshold_step``): it shrinks after a success and grows after a failure, within
  ``threshold_bounds_s``, so dyads stay near 50 % success.
* Competition (condition ``competition``): the faster participant wins.

Presses before the go signal are kept in the response stream (``rt`` = ``null``) and counted in
the CSV (``early_A`` / ``early_B``); the first press after go within ``response_window_s``
counts.

Piloting with ``--speed``: every time of a trial is divided by the autopilot's speed -- fixation,
cue-to-go, ``response_window_s``, feedback, and the cooperation threshold with its bounds -- and
so are the autopilot's reaction times, so the trial runs as a whole in compressed time (the CSV
and the block marker hold the times that ran).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams, check_range

if TYPE_CHECKING:
    from dyadlab.tasks.display import View
    from dyadlab.tasks.kit import Response, TaskContext


class JointPressParams(ParadigmParams):
    """Joint button press.

    Attributes
    ----------
    mode : "cooperation" | "competition"
    n_trials : int
    fixation_s, cue_to_go_s : (float, float)
        Uniform jitter ranges (seconds) of the fixation and of the cue-to-go delay.
    response_window_s : float
        Presses later than this after go count as missing.
    feedback_s : float
    threshold_s : float
        Initial cooperation threshold on ``|RT_A - RT_B|``.
    threshold_step : float
        Relative staircase step (0.1 = 10 % per trial).
    threshold_bounds_s : (float, float)
    """

    mode: Literal["cooperation", "competition"] = "cooperation"
    n_trials: int = Field(20, ge=1, le=1000)
    fixation_s: tuple[float, float] = (0.8, 1.5)
    cue_to_go_s: tuple[float, float] = (0.6, 1.4)
    response_window_s: float = Field(1.5, gt=0.1, le=10)
    feedback_s: float = Field(1.0, gt=0, le=10)
    threshold_s: float = Field(0.2, gt=0, le=2)
    threshold_step: float = Field(0.1, ge=0, lt=1)
    threshold_bounds_s: tuple[float, float] = (0.03, 0.6)

    @field_validator("fixation_s", "cue_to_go_s", "threshold_bounds_s")
    @classmethod
    def _range(cls, value: tuple[float, float], info: Any) -> tuple[float, float]:
        return check_range(info.field_name, value)

    @model_validator(mode="after")
    def _threshold_inside_bounds(self) -> JointPressParams:
        low, high = self.threshold_bounds_s
        if not low <= self.threshold_s <= high:
            raise ValueError(
                f"threshold_s {self.threshold_s} must lie within threshold_bounds_s {list(self.threshold_bounds_s)}."
            )
        return self


def _first_after_go(responses: list[Response], participant: str, window: float) -> Response | None:
    valid = [r for r in responses if r.participant == participant and r.rt is not None and 0 <= r.rt <= window]
    return min(valid, key=lambda r: r.t_down) if valid else None


class JointPress(Paradigm[JointPressParams]):
    """Cooperative or competitive joint button press."""

    name: ClassVar[str] = "joint-press"
    Params: ClassVar[type[JointPressParams]] = JointPressParams
    trial_marker: ClassVar[str | None] = "trial_start"

    def planned_trials(self, params: JointPressParams) -> int | None:
        return params.n_trials

    def conditions(self, params: JointPressParams) -> list[str]:
        return [params.mode]

    def run(self, ctx: TaskContext, params: JointPressParams, block_id: str) -> None:
        from psychopy import data

        params = _piloted(ctx, params)
        if params.show_instructions:
            ctx.instructions(
                self.instructions_text(params, ctx.text(f"joint-press.instructions.{params.mode}")), self.name, block_id
            )
        trial_list = [
            {
                "fixation_s": float(ctx.rng.uniform(*params.fixation_s)),
                "cue_to_go_s": float(ctx.rng.uniform(*params.cue_to_go_s)),
            }
            for _ in range(params.n_trials)
        ]
        trials = data.TrialHandler(trial_list, nReps=1, method="sequential", name="trials")
        threshold = params.threshold_s
        value = params.model_dump(include={"mode", "n_trials", "threshold_s", "response_window_s", "feedback_s"})
        value["roles"] = ctx.roles
        with ctx.block(self.name, block_id, params.mode, value=value):
            assert ctx.exp is not None
            ctx.exp.addLoop(trials)
            for index, trial in enumerate(trials):
                threshold = self._trial(ctx, params, index, trial, threshold)
            ctx.exp.loopEnded(trials)
            ctx.mark_on_next_flip(ctx.marker("trial_end", trial=params.n_trials - 1))

    def _trial(self, ctx: TaskContext, params: JointPressParams, index: int, trial: dict, threshold: float) -> float:
        mode = params.mode
        if index > 0:
            ctx.mark_on_next_flip(ctx.marker("trial_end", trial=index - 1))
        ctx.trial = index
        ctx.reset_rt_origin()
        paused_before = ctx.paused_total
        responses: list[Response] = []

        def fixation(view: View) -> None:
            view.text("fix", "+", height=0.1).draw()

        ctx.mark_on_next_flip(ctx.marker("trial_start"))
        _, pressed = ctx.show(fixation, duration=trial["fixation_s"], marker=ctx.marker("fixation"))
        responses += pressed

        def cue(view: View) -> None:
            view.circle("ring", radius=0.12, lineWidth=6, lineColor="white", fillColor=None).draw()
            view.text("cue-label", ctx.text(f"joint-press.cue.{mode}"), pos=(0, -0.22)).draw()

        _, pressed = ctx.show(
            cue, duration=trial["cue_to_go_s"], marker=ctx.marker("cue", value=mode), screenshot="joint-press_cue"
        )
        responses += pressed

        answered: set[str] = set()

        def go(view: View) -> None:
            view.circle("go", radius=0.12, lineWidth=6, lineColor="white", fillColor="#22bb44").draw()
            view.text("cue-label", ctx.text(f"joint-press.cue.{mode}"), pos=(0, -0.22)).draw()

        def on_frame(frame: Any) -> None:
            if ctx.autopilot is not None and go_time[0] is None:
                go_time[0] = frame.flip_time
                for label in ctx.participants:
                    ctx.autopilot.respond_to_go(label, frame.flip_time)
            answered.update(r.participant for r in frame.responses if r.rt is not None and r.rt >= 0)

        go_time: list[float | None] = [None]
        go_onset, pressed = ctx.show(
            go,
            duration=params.response_window_s,
            marker=ctx.marker("go"),
            rt_origin=True,
            until=lambda frame: answered >= set(ctx.participants),
            on_frame=on_frame,
            screenshot="joint-press_go",
        )
        responses += pressed
        first = {label: _first_after_go(responses, label, params.response_window_s) for label in ctx.participants}
        rts = {label: (None if r is None else r.rt) for label, r in first.items()}
        outcome: dict[str, Any] = {"mode": mode, "rt": {k: None if v is None else round(v, 6) for k, v in rts.items()}}
        if mode == "cooperation":
            outcome["threshold"] = round(threshold, 6)
            pressed_rts = [rt for rt in rts.values() if rt is not None]  # in participant order
            if len(pressed_rts) == len(rts):
                a, b = pressed_rts[:2]
                difference = abs(a - b)
                success = difference < threshold
                outcome.update(difference=round(difference, 6), outcome="success" if success else "failure")
            else:
                success = False
                outcome.update(difference=None, outcome="missing")
            factor = (1 - params.threshold_step) if success else (1 + params.threshold_step)
            next_threshold = min(max(threshold * factor, params.threshold_bounds_s[0]), params.threshold_bounds_s[1])
        else:
            responders = {k: v for k, v in rts.items() if v is not None}
            winner = min(responders, key=responders.__getitem__) if responders else None
            outcome.update(outcome="winner" if winner else "missing", winner=winner)
            next_threshold = threshold

        ctx.show(
            lambda view: self._draw_feedback(ctx, view, outcome),
            duration=params.feedback_s,
            marker=ctx.marker("feedback", value=outcome),
            screenshot=f"joint-press_feedback-{mode}",
        )
        early = {
            label: sum(1 for r in responses if r.participant == label and r.rt is None) for label in ctx.participants
        }
        row: dict[str, Any] = {
            "trial": index,
            "fixation_s": trial["fixation_s"],
            "cue_to_go_s": trial["cue_to_go_s"],
            "go_lsl_time": ctx.clock.to_lsl(go_onset) if ctx.clock else None,
            "outcome": outcome["outcome"],
            "threshold_s": threshold if mode == "cooperation" else None,
            "difference_s": outcome.get("difference"),
            "winner": outcome.get("winner"),
            "paused": ctx.paused_total > paused_before,
        }
        for label in ctx.participants:
            response = first[label]
            row[f"rt_{label}"] = None if response is None else response.rt
            row[f"key_{label}"] = None if response is None else response.key
            row[f"device_{label}"] = None if response is None else response.device  # None: shared keyboard
            row[f"response_lsl_time_{label}"] = None if response is None else response.lsl_time
            row[f"early_{label}"] = early[label]
        ctx.add_row(**row)
        return next_threshold

    @staticmethod
    def _draw_feedback(ctx: TaskContext, view: View, outcome: dict[str, Any]) -> None:
        if outcome["mode"] == "cooperation":
            if outcome["outcome"] in ("success", "failure"):
                together = outcome["outcome"] == "success"
                ms = f"{outcome['difference'] * 1000:.0f}"
                text = ctx.text("joint-press.feedback.together" if together else "joint-press.feedback.apart", ms=ms)
                color = "#44dd66" if together else "#ee5544"
            else:
                text, color = ctx.text("joint-press.feedback.missing"), "#ee5544"
        else:
            winner = outcome.get("winner")
            if winner is None:
                text, color = ctx.text("joint-press.feedback.none"), "#ee5544"
            elif len(view.participants) == 1:
                own = winner == view.participants[0]
                text, color = (
                    ctx.text("joint-press.feedback.you-won" if own else "joint-press.feedback.partner-won"),
                    ("#44dd66" if own else "#ee9944"),
                )
            else:
                rts = outcome["rt"]
                detail = "   ".join(
                    ctx.text(
                        "joint-press.feedback.time", seat=ctx.seat(label), ms="-" if rt is None else f"{rt * 1000:.0f}"
                    )
                    for label, rt in rts.items()
                )
                text, color = (
                    ctx.text("joint-press.feedback.seat-won", seat=ctx.seat(winner)) + "\n" + detail,
                    "#44dd66",
                )
        view.text("feedback", text, height=0.06, color=color).draw()


def _piloted(ctx: TaskContext, params: JointPressParams) -> JointPressParams:
    """Every time of a trial divided by the autopilot's speed (``--speed``); unchanged at speed 1."""
    if ctx.speed == 1.0:
        return params
    return params.model_copy(
        update={
            "fixation_s": tuple(ctx.scaled(seconds) for seconds in params.fixation_s),
            "cue_to_go_s": tuple(ctx.scaled(seconds) for seconds in params.cue_to_go_s),
            "response_window_s": ctx.scaled(params.response_window_s),
            "feedback_s": ctx.scaled(params.feedback_s),
            "threshold_s": ctx.scaled(params.threshold_s),
            "threshold_bounds_s": tuple(ctx.scaled(seconds) for seconds in params.threshold_bounds_s),
        }
    )
