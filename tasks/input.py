"""Participant and operator keys, read from PsychoPy's keyboard.

One keyboard, one key set per participant (defaults: A presses ``a``, B presses ``l``: the two
ends of the home row, far enough apart for two people sharing a keyboard). The operator owns
``escape`` (abort the session), ``f9`` (pause / resume) and ``space`` (skip an instruction
screen). No participant key may equal an operator key.

Every press is reported once, at key-down: the reader takes presses that are still held
(``getKeys(waitRelease=False)``) *and* presses already released between two frames
(``getKeys(waitRelease=True)``), and remembers which press it has already reported, because
PsychoPy's PTB backend hides a released press from the first call and a held one from the second.
``t_down`` is the PsychoPy-clock time the key went down (PTB's HID queue time), not the poll time.

Separate keyboards per participant are not supported in this version: PsychoPy's keyboard is a
process-wide singleton that merges every device's presses without saying which device they came
from (see ``docs/tasks.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

# Reported presses whose release may still come; more than this many keys are never held at once.
_MAX_HELD = 32


class ParticipantKeys(BaseModel):
    """The key a participant responds (and taps, and says "ready") with."""

    model_config = ConfigDict(extra="forbid")

    respond: str = Field(min_length=1)


class KeySettings(BaseModel):
    """Key assignment for the session (PsychoPy key names, lower case)."""

    model_config = ConfigDict(extra="forbid")

    participants: dict[str, ParticipantKeys] = Field(
        default_factory=lambda: {"A": ParticipantKeys(respond="a"), "B": ParticipantKeys(respond="l")}
    )
    abort: str = "escape"
    pause: str = "f9"
    proceed: str = "space"

    @model_validator(mode="after")
    def _keys_are_distinct(self) -> KeySettings:
        owners: dict[str, str] = {}
        for role, key in [
            ("operator abort", self.abort),
            ("operator pause", self.pause),
            ("operator proceed", self.proceed),
        ]:
            if key in owners:
                raise ValueError(f"Key {key!r} is assigned to both {owners[key]} and {role}; give each its own key.")
            owners[key] = role
        for label, keys in self.participants.items():
            key = keys.respond
            if key in owners:
                raise ValueError(
                    f"Participant {label}'s key {key!r} is already the {owners[key]} key; choose another key."
                )
            owners[key] = f"participant {label}"
        return self

    def participant_of(self, key: str) -> str | None:
        """The participant whose key this is, or ``None``."""
        for label, keys in self.participants.items():
            if keys.respond == key:
                return label
        return None


@dataclass(frozen=True)
class KeyPress:
    """One key going down.

    Attributes
    ----------
    key : str
        PsychoPy key name.
    t_down : float
        Key-down time on PsychoPy's clock (same clock as ``win.flip()`` returns).
    participant : str | None
        Owner of the key, ``None`` for operator keys and unassigned keys.
    """

    key: str
    t_down: float
    participant: str | None


class KeyReader:
    """Reports each key press once, as soon as PsychoPy's keyboard has it.

    Parameters
    ----------
    settings : KeySettings
    """

    def __init__(self, settings: KeySettings) -> None:
        from psychopy.hardware import keyboard

        self.settings = settings
        self._keyboard = keyboard.Keyboard()
        self.backend: str = str(keyboard.KeyboardDevice.getBackend())
        if self.backend != "ptb":
            logger.warning(
                "PsychoPy uses the %r keyboard backend, not 'ptb': key-down times are poll times "
                "(frame-accurate only). Install psychtoolbox (and libjack on Linux) for HID key times.",
                self.backend,
            )
        self._held: list[Any] = []  # presses already reported and not yet released
        self._forget_held_keys()

    def _forget_held_keys(self) -> None:
        # PsychoPy's keyboard device (a process-wide singleton) pairs each key-up with the oldest
        # still-down press of that key. clearEvents() discards queued key-ups but not that
        # still-down list, so a press whose key-up was discarded (or came from an earlier
        # context) would later take a new press's key-up and come back as a bogus, old press.
        # Forgetting both lists makes keys held now produce nothing when released.
        self._keyboard.clearEvents()
        still_down = getattr(self._keyboard.device, "_keysStillDown", None)
        if still_down is not None:
            still_down.clear()
        self._held.clear()

    def clear(self) -> None:
        """Forget presses that happened before now; keys held now produce nothing when released."""
        self._forget_held_keys()

    def read(self) -> list[KeyPress]:
        """Presses since the last call, in key-down order."""
        new = []
        for press in self._keyboard.getKeys(waitRelease=False, clear=True):
            if any(press is seen for seen in self._held):
                continue
            self._held.append(press)
            new.append(press)
        del self._held[:-_MAX_HELD]
        for press in self._keyboard.getKeys(waitRelease=True, clear=True):
            reported = next((seen for seen in self._held if seen is press), None)
            if reported is None:
                new.append(press)
            else:
                self._held.remove(reported)
        presses = []
        for press in new:
            name = press.name[0] if isinstance(press.name, (list, tuple)) else press.name
            name = str(name)
            presses.append(
                KeyPress(key=name, t_down=float(press.tDown), participant=self.settings.participant_of(name))
            )
        presses.sort(key=lambda p: p.t_down)
        return presses
