"""Screens fit for participants: the protocol's wording, no internal labels or roles, readable text.

The texts checked are those of the PsychoPy text stimuli the windows drew last (real windows
under Xvfb, the autopilot pressing XTEST keys), and the screenshots the grab saved of each
participant's own window.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from dyadlab.protocols.schema import ProtocolError, load_protocol
from dyadlab.tasks.display import TEXT_HEIGHT, DisplaySettings
from dyadlab.tasks.paradigms import run_block
from dyadlab.tasks.texts import DEFAULT_TEXTS
from tests.tasks.helpers import drawn_pixels, events, needs_display

GERMAN = {
    "kit.ready.own": "Drücken Sie {key}, wenn Sie bereit sind",
    "kit.ready.waiting": "Bereit. Bitte warten...",
    "conversation.turn.own": "Sie sprechen",
    "conversation.turn.listen": "Bitte zuhören",
    "seat.A": "Links",
    "seat.B": "Rechts",
    "conversation.turn.shared": "{speaker} spricht\n{listener} hört zu",
}


def _shown_texts(ctx: Any) -> dict[str, list[str]]:
    """The text of every text stimulus each window holds (what it drew last), by window name."""
    from psychopy import visual

    return {
        view.name: [str(stim.text) for stim in view._stims.values() if isinstance(stim, visual.TextStim)]
        for view in ctx.views
    }


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=float)


def test_screen_texts_are_checked_against_the_known_keys_and_placeholders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'kit.redy.own' is not a screen text; known keys of 'kit'"):
        DisplaySettings(texts={"kit.redy.own": "Bereit?"})
    with pytest.raises(ValueError, match=r"uses \{taste\}.*it may use: \{key\}"):
        DisplaySettings(texts={"kit.ready.own": "Drücken Sie {taste}"})
    assert DisplaySettings(texts=GERMAN).text("kit.ready.own", key="A") == "Drücken Sie A, wenn Sie bereit sind"
    assert DisplaySettings().text("seat.B") == DEFAULT_TEXTS["seat.B"]
    # the same check when a protocol file is validated, pointing at the field
    data = yaml.safe_load((Path(__file__).parents[2] / "protocols" / "bundled" / "demo.yaml").read_text())
    data["screens"]["texts"] = {"rest.screen.eyes-shut": "Augen zu"}
    path = tmp_path / "de.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    assert [issue.field for issue in caught.value.issues] == ["screens.texts"]


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_a_protocols_translation_reaches_each_participants_own_screen(make_context, streams, artifacts_dir) -> None:
    ctx = make_context(layout="per-participant", screenshots=True, display_options={"texts": GERMAN})
    folder = artifacts_dir / "screenshots"
    params = {"mode": "structured", "topics": ["Ein Thema"], "topic_s": 20, "turn_s": 10, "first_speaker": "B"}
    run_block(ctx, "conversation", params, "talk-de")
    shown = _shown_texts(ctx)
    # the last turn (of two) is A's: A's screen says "Sie sprechen", B's "Bitte zuhören"
    assert "Sie sprechen" in shown["A"] and "Bitte zuhören" in shown["B"]
    # each own screen's ready line (as last drawn: before or after that participant pressed) names that
    # participant's own key, in the protocol's words
    for label, key in (("A", "A"), ("B", "L")):
        own = {f"Drücken Sie {key}, wenn Sie bereit sind", "Bereit. Bitte warten..."}
        assert len(own & set(shown[label])) == 1, shown[label]
        assert not any(text.startswith(("Drücken Sie", "Press")) and text not in own for text in shown[label])
    assert not any("Your turn" in text or "Please listen" in text for text in shown["A"] + shown["B"])
    # the instruction screens differ by each participant's own key, and the turn screens by speaker/listener
    for screen in ("conversation_instructions", "conversation_turn"):
        a, b = _grey(folder / f"{screen}_A.png"), _grey(folder / f"{screen}_B.png")
        assert np.mean(np.abs(a - b) > 16) > 0.002, f"{screen}: A's and B's screens should differ"


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_shared_screens_name_seats_and_show_roles_only_when_asked(make_context, streams) -> None:
    ctx = make_context()  # participants A (therapist) and B (patient), one shared screen
    internal = re.compile(r"\b(A|B)\b:|\(therapist\)|\(patient\)|counsellor|therapist|patient")
    run_block(ctx, "conversation", {"mode": "structured", "topics": ["Talk."], "topic_s": 10, "turn_s": 10}, "s-1")
    shared = _shown_texts(ctx)["shared"]
    assert "Left speaks\nRight listens" in shared
    run_block(ctx, "conversation", {"mode": "free", "duration_s": 5, "roles": {"A": "counsellor"}}, "f-1")
    shared = _shown_texts(ctx)["shared"]
    assert not [text for text in shared if internal.search(text) and text != "Left speaks\nRight listens"], shared
    assert any(text.startswith("Press your key when you are ready (A / L)") for text in shared)
    markers = streams.markers()
    assert [m.value["roles"] for m, _ in markers if m.event == "block_start"][-1] == {"A": "counsellor", "B": "patient"}
    # with show_roles the protocol asks for them: seat and role, from the protocol's text
    run_block(
        ctx, "conversation", {"mode": "free", "duration_s": 5, "roles": {"A": "counsellor"}, "show_roles": True}, "f-2"
    )
    assert "Left: counsellor     Right: patient" in _shown_texts(ctx)["shared"]


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_eyes_open_rest_shows_a_fixation_point_and_text_is_readable(make_context, streams, artifacts_dir) -> None:
    ctx = make_context(screenshots=True, display_options={"text_scale": 1.5})
    run_block(ctx, "rest", {"variant": "eyes-open", "duration_s": 20}, "rest-open")
    assert events(streams.markers()) == ["instructions", "block_start", "fixation", "block_end"]
    view = ctx.views[0]
    # body text is TEXT_HEIGHT of the screen height, times the protocol's text_scale (1.5 here)
    assert view._stims["_instructions"].height == pytest.approx(TEXT_HEIGHT * 1.5)
    # 0.055 of a 1080-pixel screen is 59 px (about 1.3 cm on a 24" screen): readable from 60-80 cm
    assert TEXT_HEIGHT * 1080 >= 50
    rest_screen = artifacts_dir / "screenshots" / "rest_eyes-open.png"
    drawn = drawn_pixels(rest_screen)
    # a point of radius 0.01 screen heights on a 500-pixel-high window: pi * 5^2 = 79 pixels (antialiased edges)
    assert 20 <= drawn <= 400, f"the eyes-open screen shows only a fixation point, {drawn} pixels drawn"
    assert not [name for name in view._stims if name.startswith("rest") and name != "rest-point"], "no text at rest"
