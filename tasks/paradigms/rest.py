"""Resting baselines: eyes open facing the partner, eyes closed, and separated.

Conditions: ``rest`` (eyes open, facing the partner: the standard baseline, the name the
simulator and the quick-check treat as baseline), ``rest-eyes-closed`` and ``rest-separated``;
a protocol may name the condition itself with ``condition``. The block's ``block_start`` value
says ``{"variant", "eyes", "facing", "duration_s"}``. In the separated
variant participants face away from each other (a screen or back to back, arranged by the
experimenter) and look at a fixation cross (``fixation`` marker at onset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams

if TYPE_CHECKING:
    from dyadlab.tasks.display import View
    from dyadlab.tasks.kit import TaskContext

_INSTRUCTIONS = {
    "eyes-open": "Resting, eyes open.\n\nSit still, relax, and look at your partner's face.\nPlease do not talk.",
    "eyes-closed": "Resting, eyes closed.\n\nClose your eyes, sit still and relax until the experimenter\n"
    "tells you the rest is over. Please do not talk.",
    "separated": "Resting, apart.\n\nYou are facing away from your partner.\nSit still, relax and look at the cross.",
}
_DEFAULT_CONDITION = {"eyes-open": "rest", "eyes-closed": "rest-eyes-closed", "separated": "rest-separated"}
_SCREEN = {
    "eyes-open": "Rest\n\nlook at your partner",
    "eyes-closed": "Rest\n\neyes closed",
    "separated": "+",
}


class RestParams(ParadigmParams):
    """Resting baseline.

    Attributes
    ----------
    variant : "eyes-open" | "eyes-closed" | "separated"
    duration_s : float
        Rest length (shortened by the autopilot's speed).
    condition : str or None
        Analysis condition; default ``rest``, ``rest-eyes-closed`` or ``rest-separated``.
    """

    variant: Literal["eyes-open", "eyes-closed", "separated"] = "eyes-open"
    duration_s: float = Field(120.0, gt=0, le=3600)
    condition: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


class Rest(Paradigm[RestParams]):
    """A resting baseline block."""

    name: ClassVar[str] = "rest"
    Params: ClassVar[type[RestParams]] = RestParams

    def conditions(self, params: RestParams) -> list[str]:
        if params.condition is not None:
            return [params.condition]
        return [_DEFAULT_CONDITION[params.variant]]

    def run(self, ctx: TaskContext, params: RestParams, block_id: str) -> None:
        if params.show_instructions:
            ctx.instructions(self.instructions_text(params, _INSTRUCTIONS[params.variant]), self.name, block_id)
        text = _SCREEN[params.variant]
        cross = params.variant == "separated"

        def draw(view: View) -> None:
            view.text("rest", text, height=0.12 if cross else 0.06, color="white" if cross else "#aaaaaa").draw()

        value = {
            "variant": params.variant,
            "eyes": "closed" if params.variant == "eyes-closed" else "open",
            "facing": params.variant != "separated",
            "duration_s": params.duration_s,
        }
        condition = self.conditions(params)[0]
        with ctx.block(self.name, block_id, condition, value=value):
            if cross:
                ctx.mark_on_next_flip(ctx.marker("fixation"))
            onset, _ = ctx.show(draw, duration=ctx.scaled(params.duration_s), screenshot=f"rest_{params.variant}")
            ctx.add_row(
                variant=params.variant, duration_s=ctx.now() - onset, planned_duration_s=ctx.scaled(params.duration_s)
            )
