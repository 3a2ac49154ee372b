"""Fixtures for task tests: real LSL marker/response streams with inlets, and task contexts.

Display tests need an X server (``xvfb-run`` with two screens and Xinerama, see the brief); the
autopilot presses real keys through XTEST.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dyadlab.acquisition.markers import MarkerHub, MarkerOutlet
from dyadlab.acquisition.streams import event_stream_info, source_id
from tests.tasks.helpers import EventStreams


def _open_inlet(outlet: MarkerOutlet) -> Any:
    """An inlet connected straight to ``outlet``'s TCP data port on 127.0.0.1.

    Why not resolve: on a machine where many LSL processes run at once (parallel test runs),
    liblsl gives an outlet a random service port once its port range is used up, and discovery
    (which scans only that range) then cannot see it. Connecting by the outlet's own info is the
    same LSL data path without the discovery step.
    """
    import ctypes

    import pylsl
    from pylsl.lib import lib

    xml = outlet._outlet.get_info().as_xml().replace("<v4address></v4address>", "<v4address>127.0.0.1</v4address>")
    lib.lsl_streaminfo_from_xml.restype = ctypes.c_void_p
    lib.lsl_streaminfo_from_xml.argtypes = [ctypes.c_char_p]
    info = pylsl.StreamInfo(handle=lib.lsl_streaminfo_from_xml(xml.encode()))
    inlet = pylsl.StreamInlet(info, max_buflen=60, recover=False)
    inlet.open_stream(timeout=10.0)
    return inlet


@pytest.fixture
def streams(unique_id: str) -> Iterator[EventStreams]:
    """Real LSL marker and response outlets (unique per test) with connected inlets."""
    dyad = f"t{unique_id}"
    outlet = MarkerOutlet(event_stream_info("tasktest", dyad, "markers"))
    responses = MarkerOutlet(event_stream_info("tasktest", dyad, "responses"))
    marker_inlet = _open_inlet(outlet)
    response_inlet = _open_inlet(responses)
    assert marker_inlet.info().source_id() == source_id("tasktest", dyad, "markers")
    yield EventStreams(MarkerHub(outlet), responses, marker_inlet, response_inlet)
    marker_inlet.close_stream()
    response_inlet.close_stream()
    outlet.close()
    responses.close()


@pytest.fixture
def make_context(streams: EventStreams, tmp_path: Path, artifacts_dir: Path) -> Iterator[Any]:
    """Factory of open task contexts on the test's streams (closed at teardown).

    Windows are 800x500, not full screen, capped at 120 frames/s (Xvfb has no vsync). The
    autopilot presses real keys through XTEST at ``speed`` (every timed part of a block shortened).
    """
    from dyadlab.tasks.autopilot import AutopilotSettings
    from dyadlab.tasks.display import DisplaySettings
    from dyadlab.tasks.kit import TaskContext

    opened: list[TaskContext] = []

    def factory(
        layout: str = "shared",
        autopilot: AutopilotSettings | None | str = "default",
        speed: float = 40.0,
        screenshots: bool = False,
        photodiode_corner: str | None = None,
        display_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TaskContext:
        if autopilot == "default":
            autopilot = AutopilotSettings(seed=7, speed=speed)
        ctx = TaskContext(
            streams.hub,
            streams.responses,
            participants={"A": "therapist", "B": "patient"},
            data_stem=tmp_path / "beh",
            display=DisplaySettings(
                layout=layout,
                fullscreen=False,
                size=(800, 500),
                check_timing=False,
                max_frame_rate=120,
                photodiode_corner=photodiode_corner,
                **(display_options or {}),
            ),
            autopilot=autopilot,  # type: ignore[arg-type]
            seed=11,
            screenshot_dir=artifacts_dir / "screenshots" if screenshots else None,
            **kwargs,
        )
        opened.append(ctx)
        return ctx.open()

    yield factory
    for ctx in opened:
        ctx.close()
