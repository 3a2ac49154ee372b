"""Resting baselines: eyes open facing the partner, eyes closed, and separated.

Conditions: ``rest`` (eyes open, facing the partner: the standard baseline, the name the
simulator and the quick-check treat as baseline), ``rest-eyes-closed`` and ``rest-separated``;
a protocol may name the condition itself with ``condition``. The block's ``block_start`` value
says ``{"variant", "eyes", "facing", "duration_s"}``. In the separated
variant participants face away from each other (a screen or back to back, arranged by the
experimenter) and look at a fixation cross; eyes open, the screen shows only a small fixation
point (they look at the partner's face), and eyes closed a short reminder. A ``fixation`` marker
is pushed on the onset of a screen with a fixation point or cross. Texts: ``rest.*`` of
:mod:`dyadlab.tasks.texts` (a protocol may translate them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams

if TYPE_CHECKING:
    from dyadlab.tasks.display import View
    from dyadlab.tasks.kit import TaskContext

_DEFAULT_CONDITION = {"eyes-open": "rest", "eyes-closed": "rest-eyes-closed", "separated": "rest-separated"}


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

    def cue_at_end(self, params: RestParams) -> str | None:
        # Eyes closed, the participants cannot see that the rest is over: the experimenter says so.
        if params.variant == "eyes-closed":
            return "Eyes-closed rest is over: ask both participants to open their eyes."
        return None

    def conditions(self, params: RestParams) -> list[str]:
        if params.condition is not None:
            return [params.condition]
        return [_DEFAULT_CONDITION[params.variant]]

    def run(self, ctx: TaskContext, params: RestParams, block_id: str) -> None:
        if params.show_instructions:
            default = ctx.text(f"rest.instructions.{params.variant}")
            ctx.instructions(self.instructions_text(params, default), self.name, block_id)
        fixation = params.variant != "eyes-closed"

        def draw(view: View) -> None:
            if params.variant == "separated":
                view.text("rest-cross", "+", height=0.12).draw()
            elif params.variant == "eyes-open":  # they look at the partner: only a point to rest the eyes on
                view.circle("rest-point", radius=0.01, fillColor="#bbbbbb").draw()
            else:
                view.text("rest-closed", ctx.text("rest.screen.eyes-closed"), color="#888888").draw()

        value = {
            "variant": params.variant,
            "eyes": "closed" if params.variant == "eyes-closed" else "open",
            "facing": params.variant != "separated",
            "duration_s": params.duration_s,
        }
        condition = self.conditions(params)[0]
        with ctx.block(self.name, block_id, condition, value=value):
            if fixation:
                ctx.mark_on_next_flip(ctx.marker("fixation"))
            onset, _ = ctx.show(draw, duration=ctx.scaled(params.duration_s), screenshot=f"rest_{params.variant}")
            ctx.add_row(
                variant=params.variant, duration_s=ctx.now() - onset, planned_duration_s=ctx.scaled(params.duration_s)
            )
