"""The paradigms, by the task name (or ``file.py:Class`` reference) used in protocol files.

``PARADIGMS[task]`` (a :class:`~dyadlab.tasks.paradigms.registry.ParadigmRegistry`: bundled
paradigms, installed packages' entry points, the lab's own files; see that module) is a :class:`~dyadlab.tasks.paradigms.base.Paradigm` subclass with ``.Params`` (a
pydantic model that validates the block's parameters) and ``run(ctx, params, block_id)``.
:func:`run_block` validates a protocol's parameter mapping and runs the block.
Importing this package imports no PsychoPy and opens no window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from dyadlab import DyadlabError
from dyadlab.tasks.paradigms.base import Paradigm, ParadigmParams
from dyadlab.tasks.paradigms.conversation import Conversation, ConversationParams
from dyadlab.tasks.paradigms.joint_press import JointPress, JointPressParams
from dyadlab.tasks.paradigms.probe import Probe, ProbeParams
from dyadlab.tasks.paradigms.registry import ENTRY_POINT_GROUP, ParadigmLoadError, ParadigmRegistry
from dyadlab.tasks.paradigms.rest import Rest, RestParams
from dyadlab.tasks.paradigms.tapping import Tapping, TappingParams

if TYPE_CHECKING:
    from dyadlab.tasks.kit import TaskContext

# Each paradigm takes its own parameter model: the registry's callers validate with ``.Params``.
PARADIGMS = ParadigmRegistry((Rest, JointPress, Tapping, Conversation, Probe))


class ParadigmParamsError(DyadlabError, ValueError):
    """A block's parameters do not fit its paradigm (the message names block, field and fix)."""


def get_paradigm(task: str) -> Paradigm[Any]:
    """The paradigm ``task`` names; :class:`ParadigmLoadError` (a ``KeyError``) says why there is none."""
    return PARADIGMS[task]()


def validate_params(task: str, params: Mapping[str, Any] | BaseModel | None, block_id: str = "?") -> ParadigmParams:
    """Validate a block's parameters against the model of the paradigm ``task`` names.

    Raises
    ------
    KeyError
        Unknown task name.
    ParadigmParamsError
        With one line per problem: block, field, message.
    """
    return validate_paradigm_params(PARADIGMS[task], params, block_id, task)


def validate_paradigm_params(
    paradigm: type[Paradigm[Any]],
    params: Mapping[str, Any] | BaseModel | None,
    block_id: str = "?",
    task: str | None = None,
) -> ParadigmParams:
    """Validate a block's parameters against ``paradigm.Params`` (a class, registered or not).

    Raises
    ------
    ParadigmParamsError
        With one line per problem: block, field, message.
    """
    if isinstance(params, paradigm.Params):
        return params
    raw = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
    try:
        return paradigm.Params.model_validate(raw)
    except ValidationError as error:
        label = task or paradigm.name
        lines = [
            f"block {block_id!r} (task {label!r}), field {'.'.join(str(p) for p in problem['loc']) or '<params>'}: {problem['msg']}"
            for problem in error.errors()
        ]
        raise ParadigmParamsError("Invalid task parameters:\n  " + "\n  ".join(lines)) from error


def run_block(ctx: TaskContext, task: str, params: Mapping[str, Any] | BaseModel | None, block_id: str) -> None:
    """Validate ``params`` and run the ``task`` block(s) ``block_id`` in ``ctx``.

    Raises
    ------
    dyadlab.tasks.kit.SessionAborted
        The operator aborted (markers pushed, CSV saved).
    KeyError, ParadigmParamsError
        Before anything is shown.
    """
    validated = validate_params(task, params, block_id)
    get_paradigm(task).run(ctx, validated, block_id)


__all__ = [
    "ENTRY_POINT_GROUP",
    "PARADIGMS",
    "ParadigmLoadError",
    "Paradigm",
    "ParadigmParams",
    "ParadigmParamsError",
    "RestParams",
    "JointPressParams",
    "TappingParams",
    "ConversationParams",
    "ProbeParams",
    "get_paradigm",
    "validate_params",
    "validate_paradigm_params",
    "run_block",
]
