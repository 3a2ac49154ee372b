"""Every text the bundled paradigms and the task kit show participants, by key, in English.

A protocol replaces any of them under ``screens.texts`` (a translation, the lab's wording)::

    screens:
      texts:
        kit.ready.own: "Drücken Sie {key}, wenn Sie bereit sind"
        seat.A: "Links"

A replacement may use only the ``{placeholders}`` of the text it replaces (checked when the
protocol is validated). A block's ``instructions`` parameter still replaces that block's
instruction text. Screens name participants by seat (``seat.A`` / ``seat.B``: where they sit in
front of a shared screen), never by internal label or role; roles are shown only when a
conversation block sets ``show_roles``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

DEFAULT_TEXTS: dict[str, str] = {
    # task kit
    "kit.pause": "Paused\n\nThe experimenter will continue shortly.",
    "kit.abort": "The session was stopped.",
    "kit.break": "Short break",
    "kit.ready.own": "Press {key} when you are ready",
    "kit.ready.waiting": "Ready. Waiting for your partner...",
    "kit.ready.shared": "Press your key when you are ready ({keys})",
    "kit.ready.count": "{ready} of {total} ready",
    "kit.device.press": "Please press your button once ({key})",
    "kit.device.answered": "Thank you",
    "seat.A": "Left",
    "seat.B": "Right",
    # rest
    "rest.instructions.eyes-open": "Resting, eyes open.\n\nSit still, relax, and look at your partner's face.\n"
    "Please do not talk.",
    "rest.instructions.eyes-closed": "Resting, eyes closed.\n\nClose your eyes, sit still and relax until the "
    "experimenter\ntells you the rest is over. Please do not talk.",
    "rest.instructions.separated": "Resting, apart.\n\nYou are facing away from your partner.\n"
    "Sit still, relax and look at the cross.",
    "rest.screen.eyes-closed": "Please close your eyes",
    # joint press
    "joint-press.instructions.cooperation": "Cooperation\n\nWhen the ring turns green, press your key.\n"
    "Try to press at exactly the same moment as your partner.\nYou will see how close you were.",
    "joint-press.instructions.competition": "Competition\n\nWhen the ring turns green, press your key.\n"
    "Try to press faster than your partner.\nYou will see who was faster.",
    "joint-press.cue.cooperation": "together",
    "joint-press.cue.competition": "faster",
    "joint-press.feedback.together": "Together!\n{ms} ms apart",
    "joint-press.feedback.apart": "Not together\n{ms} ms apart",
    "joint-press.feedback.missing": "A response was missing",
    "joint-press.feedback.none": "No response",
    "joint-press.feedback.you-won": "You were faster!",
    "joint-press.feedback.partner-won": "Your partner was faster",
    "joint-press.feedback.seat-won": "{seat} was faster",
    "joint-press.feedback.time": "{seat}: {ms} ms",
    # tapping
    "tapping.instructions.human": "Tapping together\n\nTap your key in time with the flashing circle.\n"
    "When it stops, keep tapping at the same pace.\nThe small circles flash when your partner taps.",
    "tapping.instructions.computer": "Tapping with the computer\n\nTap your key in time with the flashing circle.\n"
    "When it stops, keep tapping at the same pace.\nThe small circle flashes when the computer taps.",
    "tapping.phase.synchronization": "tap with the flashes",
    "tapping.phase.continuation": "keep tapping at the same pace",
    "tapping.partner": "partner",
    "tapping.computer": "computer",
    # conversation
    "conversation.instructions.structured": "Conversation\n\nYou will see a topic. Take turns talking about it:\n"
    "the screen shows who speaks and who listens.\nThe listener please does not interrupt.",
    "conversation.instructions.free": "Conversation\n\nTalk freely with each other until the experimenter ends "
    "the block.",
    "conversation.turn.own": "Your turn to speak",
    "conversation.turn.listen": "Please listen",
    "conversation.turn.shared": "{speaker} speaks\n{listener} listens",
    "conversation.free": "Free conversation",
    "conversation.role": "{seat}: {role}",
}


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a text uses (``ValueError`` for unbalanced braces)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def check_texts(texts: Mapping[str, str]) -> dict[str, str]:
    """Validate a protocol's ``screens.texts``; returns them, or raises ``ValueError`` saying what to fix."""
    for key, text in texts.items():
        if key not in DEFAULT_TEXTS:
            close = [known for known in DEFAULT_TEXTS if known.split(".")[0] == key.split(".")[0]]
            raise ValueError(
                f"texts: {key!r} is not a screen text; known keys"
                + (f" of {key.split('.')[0]!r}" if close else "")
                + f": {', '.join(close or sorted(DEFAULT_TEXTS))}"
            )
        try:
            used = placeholders(text)
        except ValueError as error:
            raise ValueError(f"texts.{key}: {error}; write a literal brace as '{{{{' or '}}}}'") from None
        allowed = placeholders(DEFAULT_TEXTS[key])
        if used - allowed:
            raise ValueError(
                f"texts.{key} uses {', '.join('{' + name + '}' for name in sorted(used - allowed))}, which this text "
                f"does not have; it may use: {', '.join('{' + name + '}' for name in sorted(allowed)) or 'none'}"
            )
    return dict(texts)
