"""Fixtures for task tests: real LSL marker/response streams with inlets, and task contexts.

Display tests need an X server (``xvfb-run`` with two screens and Xinerama, see the brief); the
autopilot presses real keys through XTEST.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from acquisition.markers import MarkerHub, MarkerOutlet
from acquisition.streams import event_stream_info, source_id
from tests.tasks.helpers import EventStreams


def _open_inlet(source: str, outlet: MarkerOutlet) -> Any:
    import pylsl

    found = []
    for _ in range(3):  # loopback discovery on a loaded 2-core machine occasionally misses a round
        found = pylsl.resolve_byprop("source_id", source, minimum=1, timeout=8.0)
        if found:
            break
    assert found, f"stream {source} not found; outlet info: {outlet._outlet.get_info().as_xml()}"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    inlet.open_stream(timeout=5.0)
    return inlet


@pytest.fixture
def streams(unique_id: str) -> Iterator[EventStreams]:
    """Real LSL marker and response outlets (unique per test) with connected inlets."""
    dyad = f"t{unique_id}"
    outlet = MarkerOutlet(event_stream_info("tasktest", dyad, "markers"))
    responses = MarkerOutlet(event_stream_info("tasktest", dyad, "responses"))
    marker_inlet = _open_inlet(source_id("tasktest", dyad, "markers"), outlet)
    response_inlet = _open_inlet(source_id("tasktest", dyad, "responses"), responses)
    yield EventStreams(MarkerHub(outlet), responses, marker_inlet, response_inlet)
    marker_inlet.close_stream()
    response_inlet.close_stream()
    outlet.close()
    responses.close()


@pytest.fixture
def make_context(streams: EventStreams, tmp_path: Path, artifacts_dir: Path) -> Iterator[Any]:
    """Factory of open task contexts on the test's streams (closed at teardown).

    Windows are 800x500, not full screen, capped at 120 frames/s (Xvfb has no vsync). The
    autopilot presses real keys through XTEST at ``speed`` (rest/conversation/reading shortened).
    """
    from tasks.autopilot import AutopilotSettings
    from tasks.display import DisplaySettings
    from tasks.kit import TaskContext

    opened: list[TaskContext] = []

    def factory(
        layout: str = "shared",
        autopilot: AutopilotSettings | None | str = "default",
        speed: float = 40.0,
        screenshots: bool = False,
        **kwargs: Any,
    ) -> TaskContext:
        if autopilot == "default":
            autopilot = AutopilotSettings(seed=7, speed=speed)
        ctx = TaskContext(
            streams.hub,
            streams.responses,
            participants={"A": "therapist", "B": "patient"},
            data_stem=tmp_path / "beh",
            display=DisplaySettings(layout=layout, fullscreen=False, size=(800, 500), check_timing=False, max_frame_rate=120),
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
