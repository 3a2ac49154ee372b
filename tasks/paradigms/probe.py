"""The synchrony probe for repeated sessions: rest, tapping and conversation, a few minutes.

The same short, standardised sequence runs at every session of a longitudinal study (therapy
sessions and assessments), so that inter-brain synchrony can be compared across sessions with
identical parameters. It runs three ordinary blocks, not a block around them, so conditions
never nest: ``<block_id>-rest`` (``rest``), ``<block_id>-tapping`` (``tapping``) and
``<block_id>-conversation`` (``conversation``). Default total: 2 min rest + about 30 s tapping
+ 3 min structured conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams
from dyadlab.tasks.paradigms.conversation import Conversation, ConversationParams
from dyadlab.tasks.paradigms.rest import Rest, RestParams
from dyadlab.tasks.paradigms.tapping import Tapping, TappingParams

if TYPE_CHECKING:
    from dyadlab.tasks.kit import TaskContext


class ProbeParams(ParadigmParams):
    """Parameters of the three parts (each validated by its own paradigm's model)."""

    rest: RestParams = Field(default_factory=lambda: RestParams(variant="eyes-open", duration_s=120.0))
    tapping: TappingParams = Field(
        default_factory=lambda: TappingParams(partner="human", n_pacer_ticks=20, continuation_s=15.0)
    )
    conversation: ConversationParams = Field(
        default_factory=lambda: ConversationParams(
            mode="structured", topics=["Plan a day out together that you would both enjoy."], topic_s=180.0, turn_s=30.0
        )
    )


class Probe(Paradigm[ProbeParams]):
    """Rest + tapping + conversation, in that order."""

    name: ClassVar[str] = "probe"
    Params: ClassVar[type[ProbeParams]] = ProbeParams

    def conditions(self, params: ProbeParams) -> list[str]:
        return (
            Rest().conditions(params.rest)
            + Tapping().conditions(params.tapping)
            + Conversation().conditions(params.conversation)
        )

    def run(self, ctx: TaskContext, params: ProbeParams, block_id: str) -> None:
        Rest().run(ctx, params.rest, f"{block_id}-rest")
        Tapping().run(ctx, params.tapping, f"{block_id}-tapping")
        Conversation().run(ctx, params.conversation, f"{block_id}-conversation")
