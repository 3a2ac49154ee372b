"""Finger-tapping synchronisation–continuation, with the partner or with a computer partner.

Synchronisation phase (``cue`` marker, value ``{"phase": "synchronization"}``): a central
pacer flashes every ``period_s`` (``pacer`` marker per flash, value ``{"tick": k}``) and both
participants tap their key in time with it. Continuation phase (``cue``, value
``{"phase": "continuation"}``): the pacer stops and they keep tapping at the same pace for
``continuation_s``.

Partner feedback: every tap is shown as a flash (``tap`` marker on that flip, ``participant`` =
who tapped, value ``{"by": ...}``). On a shared screen both tappers' flashes are shown (A left,
B right); with one screen each, a participant sees the partner's flash.
With ``partner="computer"`` (condition ``tapping-computer``, the non-interactive control with the
same movements) participants see a computer partner instead, which taps on the pacer with
Gaussian jitter and continues at ``period_s`` with the same jitter; its flashes carry ``tap``
markers with ``participant`` = ``null`` and value ``{"by": "computer"}``.

The CSV has one row per tap (participants and computer): phase, who, LSL time, asynchrony to the
nearest pacer tick (synchronisation phase) and inter-tap interval.

Piloting with ``--speed``: the pacer period (with the flash and the computer's jitter) and
``continuation_s`` are divided by the autopilot's speed, the period no shorter than
:data:`FASTEST_PILOT_PERIOD_S`; the number of pacer ticks stays. The block marker and the CSV hold
the timing that ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import Field

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams

if TYPE_CHECKING:
    from dyadlab.tasks.display import View
    from dyadlab.tasks.kit import Frame, TaskContext

_COMPUTER = "computer"


class TappingParams(ParadigmParams):
    """Synchronisation–continuation tapping.

    Attributes
    ----------
    partner : "human" | "computer"
    period_s : float
        Pacer period.
    n_pacer_ticks : int
        Flashes in the synchronisation phase.
    continuation_s : float
        Length of the continuation phase.
    flash_s : float
        How long a pacer or tap flash stays lit.
    computer_jitter_s : float
        SD of the computer partner's tap timing.
    """

    partner: Literal["human", "computer"] = "human"
    period_s: float = Field(0.6, ge=0.25, le=2.0)
    n_pacer_ticks: int = Field(20, ge=2, le=1000)
    continuation_s: float = Field(20.0, gt=0, le=600)
    flash_s: float = Field(0.08, gt=0, le=0.5)
    computer_jitter_s: float = Field(0.03, ge=0, le=0.2)


#: Shortest pacer period of an accelerated pilot: the autopilot holds a key 0.06 s, and each tap
#: and flash must still fall on its own frames at 60 Hz.
FASTEST_PILOT_PERIOD_S = 0.15


def _piloted(ctx: TaskContext, params: TappingParams) -> TappingParams:
    """Tapping timing divided by the autopilot's speed (``--speed``); unchanged at speed 1."""
    if ctx.speed == 1.0:
        return params
    period = max(ctx.scaled(params.period_s), min(params.period_s, FASTEST_PILOT_PERIOD_S))
    factor = period / params.period_s
    return params.model_copy(
        update={
            "period_s": period,
            "flash_s": params.flash_s * factor,
            "computer_jitter_s": params.computer_jitter_s * factor,
            "continuation_s": ctx.scaled(params.continuation_s),
        }
    )


class Tapping(Paradigm[TappingParams]):
    """Synchronisation–continuation tapping block."""

    name: ClassVar[str] = "tapping"
    Params: ClassVar[type[TappingParams]] = TappingParams

    def conditions(self, params: TappingParams) -> list[str]:
        return ["tapping" if params.partner == "human" else "tapping-computer"]

    def run(self, ctx: TaskContext, params: TappingParams, block_id: str) -> None:
        params = _piloted(ctx, params)
        if params.show_instructions:
            ctx.instructions(
                self.instructions_text(params, ctx.text(f"tapping.instructions.{params.partner}")), self.name, block_id
            )
        value = params.model_dump(include={"partner", "period_s", "n_pacer_ticks", "continuation_s"})
        value["roles"] = ctx.roles
        with ctx.block(self.name, block_id, self.conditions(params)[0], value=value):
            _TappingRun(ctx, params, self.conditions(params)[0]).run()


class _TappingRun:
    """The state of one tapping block."""

    def __init__(self, ctx: TaskContext, params: TappingParams, condition: str) -> None:
        self.ctx = ctx
        self.params = params
        self.condition = condition
        self.shown = [_COMPUTER] if params.partner == "computer" else list(ctx.participants)
        self.lit_until: dict[str, float] = {who: -np.inf for who in self.shown}
        self.pacer_lit_until = -np.inf
        self.ticks: list[float] = []
        self.next_tick = 0
        self.computer_taps: list[float] = []
        self.next_computer = 0
        self.last_tap: dict[str, float] = {}
        self.phase = "synchronization"

    def _tapper_slots(self, view: View) -> list[tuple[str, float]]:
        """Who this view shows flashes of, with horizontal positions."""
        if self.params.partner == "computer":
            return [(_COMPUTER, 0.35)]
        if len(view.participants) == 1:
            partner = next(p for p in self.ctx.participants if p != view.participants[0])
            return [(partner, 0.35)]
        return [(who, x) for who, x in zip(self.ctx.participants, (-0.35, 0.35))]

    def draw(self, view: View) -> None:
        now = self.ctx.now()
        if self.phase == "synchronization":
            lit = now < self.pacer_lit_until
            view.circle(
                "pacer", radius=0.07, pos=(0, 0.05), lineWidth=4, lineColor="white", fillColor="white" if lit else None
            ).draw()
        phase_text = self.ctx.text(f"tapping.phase.{self.phase}")
        view.text("phase", phase_text, pos=(0, -0.3), height=0.045, color="#aaaaaa").draw()
        for who, x in self._tapper_slots(view):
            lit = now < self.lit_until[who]
            # shared screen: the circles' sides say whose taps they are (no internal labels)
            label = self._tapper_label(view, who)
            view.circle(
                f"tap-{who}",
                radius=0.04,
                pos=(x, 0.05),
                lineWidth=3,
                lineColor="#88aaff",
                fillColor="#88aaff" if lit else None,
            ).draw()
            if label:
                view.text(f"tap-label-{who}", label, pos=(x, -0.04), height=0.04, color="#88aaff").draw()

    def _tapper_label(self, view: View, who: str) -> str:
        """Text under a tapper's circle: "computer", "partner" on one's own screen, none on a shared one."""
        if who == _COMPUTER:
            return self.ctx.text("tapping.computer")
        return self.ctx.text("tapping.partner") if len(view.participants) == 1 else ""

    def _tap(self, who: str, t_down: float, lsl_time: float, device: str | None = None) -> None:
        ctx = self.ctx
        nearest = None
        if self.ticks and self.phase == "synchronization":
            nearest_index = int(np.argmin([abs(t_down - tick) for tick in self.ticks]))
            nearest = t_down - self.ticks[nearest_index]
        interval = t_down - self.last_tap[who] if who in self.last_tap else None
        self.last_tap[who] = t_down
        ctx.add_row(
            phase=self.phase,
            tapper=who,
            tap_lsl_time=lsl_time,
            asynchrony_s=nearest,
            interval_s=interval,
            device=device,
        )
        if who in self.lit_until:
            self.lit_until[who] = ctx.now() + self.params.flash_s
            participant = None if who == _COMPUTER else who
            ctx.mark_on_next_flip(ctx.marker("tap", participant=participant, value={"by": who}))

    def on_frame(self, frame: Frame) -> None:
        ctx = self.ctx
        for response in frame.responses:
            self._tap(response.participant, response.t_down, response.lsl_time, response.device)
        now = ctx.now()
        if self.next_tick < len(self.ticks) and now >= self.ticks[self.next_tick]:
            self.pacer_lit_until = now + self.params.flash_s
            ctx.mark_on_next_flip(ctx.marker("pacer", value={"tick": self.next_tick}))
            self.next_tick += 1
        while self.next_computer < len(self.computer_taps) and now >= self.computer_taps[self.next_computer]:
            assert ctx.clock is not None
            self._tap(_COMPUTER, now, ctx.clock.to_lsl(now))
            self.next_computer += 1

    def _plan(self, onset: float) -> float:
        """Pacer and computer schedules from the onset flip; returns the continuation start."""
        params, ctx = self.params, self.ctx
        first = onset + params.period_s  # one silent period to get ready
        self.ticks = [first + k * params.period_s for k in range(params.n_pacer_ticks)]
        continuation_start = self.ticks[-1] + params.period_s
        end = continuation_start + params.continuation_s
        if params.partner == "computer":
            jitter = ctx.rng.normal(0.0, params.computer_jitter_s, size=len(self.ticks))
            taps = list(np.asarray(self.ticks) + jitter)
            t = self.ticks[-1]
            while True:
                t += params.period_s
                if t >= end:
                    break
                taps.append(t + float(ctx.rng.normal(0.0, params.computer_jitter_s)))
            self.computer_taps = sorted(float(x) for x in taps)
        if ctx.autopilot is not None:
            for label in ctx.participants:
                ctx.autopilot.tap_along(label, self.ticks, end, params.period_s)
        return continuation_start

    def run(self) -> None:
        ctx, params = self.ctx, self.params
        boundary: list[float] = []

        def on_frame(frame: Frame) -> None:
            if not boundary:
                boundary.append(self._plan(frame.flip_time))
            self.on_frame(frame)

        def synchronized(frame: Frame) -> bool:
            return bool(boundary) and ctx.now() >= boundary[0]

        ctx.show(
            self.draw,
            marker=ctx.marker("cue", value={"phase": "synchronization"}),
            until=synchronized,
            on_frame=on_frame,
            screenshot=f"{self.condition}_synchronization",
        )
        self.phase = "continuation"
        ctx.show(
            self.draw,
            duration=params.continuation_s,
            marker=ctx.marker("cue", value={"phase": "continuation"}),
            on_frame=self.on_frame,
            screenshot=f"{self.condition}_continuation",
        )
