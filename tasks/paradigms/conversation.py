"""Conversation: structured turn-taking on topic prompts, or free conversation with role labels.

Condition ``conversation`` for both modes; ``block_start`` value says
``{"mode", "roles", ...}``.

* ``structured``: for each topic a ``topic`` marker (value ``{"index", "text"}``), then turns of
  ``turn_s`` alternating between the participants, starting with ``first_speaker``; each turn
  starts with a ``turn`` marker (value ``{"speaker", "listener"}``). The shared screen shows the
  topic and who speaks; with one screen each, a participant sees "Your turn to speak" or
  "Please listen".
* ``free``: one screen for ``duration_s`` showing the role labels (e.g. therapist / patient),
  with an optional opening ``prompt`` (``topic`` marker).

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
_INSTRUCTIONS = {
    "structured": "Conversation\n\nYou will see a topic. Take turns talking about it:\n"
    "the screen shows who speaks and who listens.\nThe listener please does not interrupt.",
    "free": "Conversation\n\nTalk freely with each other until the experimenter ends the block.",
}


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
        Role labels shown per participant; defaults to the session's roles.
    """

    mode: Literal["structured", "free"] = "structured"
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)
    topic_s: float = Field(120.0, gt=0, le=3600)
    turn_s: float = Field(30.0, gt=0, le=3600)
    first_speaker: str = "A"
    duration_s: float = Field(300.0, gt=0, le=4 * 3600)
    prompt: str | None = None
    roles: dict[str, str] | None = None

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
            ctx.instructions(self.instructions_text(params, _INSTRUCTIONS[params.mode]), self.name, block_id)
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
    def _who(label: str, roles: dict[str, str]) -> str:
        role = roles.get(label)
        return f"{label} ({role})" if role and role != "participant" else label

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
                    view.text("topic", topic, pos=(0, 0.22), height=0.045, color="#dddddd").draw()
                    if len(view.participants) == 1:
                        own = view.participants[0] == speaker
                        text, color = ("Your turn to speak", "#44dd66") if own else ("Please listen", "#88aaff")
                    else:
                        text = f"{self._who(speaker, roles)} speaks\n{self._who(listener, roles)} listens"
                        color = "#44dd66"
                    view.text("turn", text, pos=(0, -0.08), height=0.06, color=color).draw()

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
        labels = "     ".join(self._who(label, roles) for label in ctx.participants)

        def draw(view: View) -> None:
            view.text("free", "Free conversation", pos=(0, 0.15), height=0.06).draw()
            if params.prompt:
                view.text("prompt", params.prompt, pos=(0, 0.0), height=0.04, color="#dddddd").draw()
            view.text("roles", labels, pos=(0, -0.3), height=0.035, color="#aaaaaa").draw()

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
