"""What every paradigm provides: a parameter model, its conditions, and ``run``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from dyadlab.tasks.kit import TaskContext


class ParadigmParams(BaseModel):
    """Parameters shared by every paradigm.

    Attributes
    ----------
    instructions : str or None
        Replaces the paradigm's default instruction text.
    show_instructions : bool
        Show the instruction screen (and wait for both participants) before the block.
    """

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(None, min_length=1)
    show_instructions: bool = True


def check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    """Validate a ``(min, max)`` pair of seconds."""
    low, high = value
    if low < 0 or high < low:
        raise ValueError(f"{name} must be (min, max) seconds with 0 <= min <= max, got {list(value)}.")
    return value


#: The parameter model of one paradigm.
P = TypeVar("P", bound=ParadigmParams)


class Paradigm(ABC, Generic[P]):
    """A task that runs one block (or, for composites, a fixed sequence of blocks).

    A subclass names its parameter model twice: as the type argument (``Paradigm[RestParams]``,
    for the type checker) and as ``Params`` (for validation at run time).
    """

    name: ClassVar[str]
    Params: ClassVar[type[ParadigmParams]]
    #: The marker event that begins one trial: the session console counts them (``None``: no count).
    trial_marker: ClassVar[str | None] = None

    def planned_trials(self, params: P) -> int | None:
        """How many :attr:`trial_marker` events the block emits (``None`` when not known)."""
        return None

    def cue_at_end(self, params: P) -> str | None:
        """What the experimenter must be told when the block ends, or ``None``.

        The session console of ``dyadlab run`` shows it and speaks it; a protocol block's
        ``cue_at_end`` replaces it.
        """
        return None

    @abstractmethod
    def conditions(self, params: P) -> list[str]:
        """The ``condition`` of each block it emits, in order."""

    @abstractmethod
    def run(self, ctx: TaskContext, params: P, block_id: str) -> None:
        """Run the block(s); may raise :class:`dyadlab.tasks.kit.SessionAborted`."""

    def instructions_text(self, params: P, default: str) -> str:
        """The instruction text: the protocol's override or ``default``."""
        return params.instructions if params.instructions is not None else default
