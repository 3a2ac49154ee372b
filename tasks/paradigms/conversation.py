"""Conversation: structured turn-taking on topic prompts, or free conversation with role labels.

Condition ``conversation`` for both modes; ``block_start`` value says
``{"mode", "roles", ...}``.

* ``structured``: for each topic a ``topic`` marker (value ``{"index", "text"}``), then turns of
  ``turn_s`` alternating between the participants, starting with ``first_speaker``; each turn
  starts with a ``turn`` marker (value ``{"speaker", "listener"}``). The shared screen shows the
  topic and who speaks; with one screen each, a participant sees "Your turn to speak" or
  "Please listen".
* ``free``: one screen for ``duration_s`` with an optional opening ``prompt`` (``topic`` marker).

Participants are named by seat (``seat.A`` / ``seat.B`` texts: "Left" / "Right"), never by
internal label; their roles (e.g. therapist / patient) appear on screen only with
``show_roles: true``. Texts: ``conversation.*`` of :mod:`dyadlab.tasks.texts`.

Durations are shortened by the autopilot's speed (piloting).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams

if TYPE_CHECKING:
    from dyadlab.tasks.display import View
    from dyadlab.tasks.kit import TaskContext

DEFAULT_TOPICS = [
    "Plan a day out together that you would both enjoy.",
    "Describe a place where you feel at ease, and why.",
    "Talk about something you learned recently.",
]


class ConversationParams(ParadigmParams):
    """Conversation block.

    Attributes
    ----------
    mode : "structured" | "free"
    topics : list of str
        Topic prompts (structured mode), shown in order.
    topic_s : float
        Time per topic (structured).
    turn_s : float
        Length of a speaking turn (structured).
    first_speaker : str
        Participant label who speaks first (counterbalance it in the protocol).
    duration_s : float
        Length of the free conversation.
    prompt : str or None
        Opening prompt of the free conversation.
    roles : dict or None
        Role per participant for the block marker (and the screen with ``show_roles``);
        defaults to the session's roles.
    show_roles : bool
        Show each seat's role on the participants' screens (off: roles are for the data only).
    """

    mode: Literal["structured", "free"] = "structured"
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)
    topic_s: float = Field(120.0, gt=0, le=3600)
    turn_s: float = Field(30.0, gt=0, le=3600)
    first_speaker: str = "A"
    duration_s: float = Field(300.0, gt=0, le=4 * 3600)
    prompt: str | None = None
    roles: dict[str, str] | None = None
    show_roles: bool = False

    @model_validator(mode="after")
    def _turns_fit(self) -> ConversationParams:
        if self.turn_s > self.topic_s:
            raise ValueError(
                f"turn_s ({self.turn_s}) is longer than topic_s ({self.topic_s}); a topic needs at least one turn."
            )
        return self


class Conversation(Paradigm[ConversationParams]):
    """Structured or free conversation block."""

    name: ClassVar[str] = "conversation"
    Params: ClassVar[type[ConversationParams]] = ConversationParams

    def conditions(self, params: ConversationParams) -> list[str]:
        return ["conversation"]

    def run(self, ctx: TaskContext, params: ConversationParams, block_id: str) -> None:
        if params.first_speaker not in ctx.participants:
            raise ValueError(
                f"first_speaker {params.first_speaker!r} is not a participant of this session ({ctx.participants})."
            )
        roles = dict(ctx.roles)
        roles.update(params.roles or {})
        if params.show_instructions:
            ctx.instructions(
                self.instructions_text(params, ctx.text(f"conversation.instructions.{params.mode}")),
                self.name,
                block_id,
            )
        value: dict[str, Any] = {"mode": params.mode, "roles": roles}
        if params.mode == "structured":
            value.update(
                topics=len(params.topics),
                topic_s=params.topic_s,
                turn_s=params.turn_s,
                first_speaker=params.first_speaker,
            )
        else:
            value.update(duration_s=params.duration_s)
        with ctx.block(self.name, block_id, "conversation", value=value):
            if params.mode == "structured":
                self._structured(ctx, params, roles)
            else:
                self._free(ctx, params, roles)

    @staticmethod
    def _who(ctx: TaskContext, params: ConversationParams, label: str, roles: dict[str, str]) -> str:
        """A participant as the screen names them: their seat, with their role if the protocol asks."""
        role = roles.get(label)
        if params.show_roles and role:
            return ctx.text("conversation.role", seat=ctx.seat(label), role=role)
        return ctx.seat(label)

    def _structured(self, ctx: TaskContext, params: ConversationParams, roles: dict[str, str]) -> None:
        order = [params.first_speaker] + [p for p in ctx.participants if p != params.first_speaker]
        n_turns = max(1, math.floor(params.topic_s / params.turn_s + 1e-9))
        turn = 0
        for index, topic in enumerate(params.topics):
            ctx.mark_on_next_flip(ctx.marker("topic", value={"index": index, "text": topic}))
            for _ in range(n_turns):
                speaker = order[turn % len(order)]
                listener = order[(turn + 1) % len(order)]

                def draw(view: View, speaker: str = speaker, listener: str = listener, topic: str = topic) -> None:
                    view.text("topic", topic, pos=(0, 0.22), color="#dddddd").draw()
                    if len(view.participants) == 1:
                        own = view.participants[0] == speaker
                        text = ctx.text("conversation.turn.own" if own else "conversation.turn.listen")
                        color = "#44dd66" if own else "#88aaff"
                    else:
                        text = ctx.text(
                            "conversation.turn.shared",
                            speaker=self._who(ctx, params, speaker, roles),
                            listener=self._who(ctx, params, listener, roles),
                        )
                        color = "#44dd66"
                    view.text("turn", text, pos=(0, -0.08), height=0.07, color=color).draw()

                onset, _ = ctx.show(
                    draw,
                    duration=ctx.scaled(params.turn_s),
                    marker=ctx.marker("turn", value={"speaker": speaker, "listener": listener}),
                    screenshot="conversation_turn",
                )
                ctx.add_row(
                    topic_index=index,
                    topic=topic,
                    turn=turn,
                    speaker=speaker,
                    listener=listener,
                    turn_lsl_time=ctx.clock.to_lsl(onset) if ctx.clock else None,
                )
                turn += 1

    def _free(self, ctx: TaskContext, params: ConversationParams, roles: dict[str, str]) -> None:
        labels = "     ".join(self._who(ctx, params, label, roles) for label in ctx.participants)

        def draw(view: View) -> None:
            view.text("free", ctx.text("conversation.free"), pos=(0, 0.15), height=0.07).draw()
            if params.prompt:
                view.text("prompt", params.prompt, pos=(0, 0.0), color="#dddddd").draw()
            if params.show_roles:
                view.text("roles", labels, pos=(0, -0.3), height=0.045, color="#aaaaaa").draw()

        if params.prompt:
            ctx.mark_on_next_flip(ctx.marker("topic", value={"index": 0, "text": params.prompt}))
        proceed = ctx.keys.proceed  # the experimenter may end the conversation before duration_s
        onset, _ = ctx.show(
            draw,
            duration=ctx.scaled(params.duration_s),
            screenshot="conversation_free",
            until=lambda frame: proceed in frame.operator_keys,
        )
        ctx.add_row(mode="free", roles=str(roles), duration_s=ctx.now() - onset)
