"""The run/demo/validate commands and the virtual display, without running a full session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dyadlab.protocols.cli import main
from dyadlab.protocols.display import ensure_display


def test_bad_protocol_is_rejected_before_any_device_or_outlet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spies (not mocks: they call through) count LSL outlets and BrainFlow board sessions."""
    import pylsl

    from dyadlab.acquisition.brainflow_source import BrainFlowSource

    created: list[str] = []
    original_outlet = pylsl.StreamOutlet.__init__
    original_prepare = BrainFlowSource.prepare

    def outlet_spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        created.append("outlet")
        return original_outlet(self, *args, **kwargs)

    def prepare_spy(self):  # type: ignore[no-untyped-def]
        created.append("board")
        return original_prepare(self)

    monkeypatch.setattr(pylsl.StreamOutlet, "__init__", outlet_spy)
    monkeypatch.setattr(BrainFlowSource, "prepare", prepare_spy)
    protocol = yaml.safe_load(Path("protocols/bundled/cooperation.yaml").read_text())
    protocol["blocks"][1]["params"]["n_trials"] = "many"
    protocol["participants"][1]["device"] = {"board": "synthtic"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    result = CliRunner().invoke(main, ["run", str(path), "--autopilot", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "blocks[1].params.n_trials" in result.output
    assert "participants[1].device.board" in result.output and "synthetic" in result.output
    assert created == [], "nothing may start for a protocol that does not validate"
    assert not (tmp_path / "out").exists()


def test_speed_requires_autopilot() -> None:
    result = CliRunner().invoke(main, ["run", "demo", "--speed", "4"])
    assert result.exit_code != 0
    assert "--autopilot" in result.output


def test_run_refuses_without_display_unless_autopilot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    result = CliRunner().invoke(main, ["run", "demo", "--simulate", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "No display" in result.output


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed")
def test_virtual_display_has_two_screens_and_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with ensure_display((640, 480)) as display:
        assert display is not None and os.environ["DISPLAY"] == display
        from Xlib import display as xlib_display  # python-xlib, a PsychoPy dependency

        connection = xlib_display.Display(display)
        try:
            assert connection.has_extension("XINERAMA")
            screens = connection.xinerama_query_screens().screens
            assert [(screen.width, screen.height) for screen in screens] == [(640, 480), (640, 480)]
        finally:
            connection.close()
    assert "DISPLAY" not in os.environ
    gone = (
        subprocess.run(["xdotool", "getdisplaygeometry"], capture_output=True, env={**os.environ, "DISPLAY": display})
        if shutil.which("xdotool")
        else None
    )
    if gone is not None:
        assert gone.returncode != 0, "the virtual display was stopped"


def test_existing_display_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":12345")
    with ensure_display() as display:
        assert display is None
    assert os.environ["DISPLAY"] == ":12345"


def test_runner_refuses_speed_without_autopilot(tmp_path: Path) -> None:
    from dyadlab.protocols.runner import SessionRunner
    from dyadlab.protocols.schema import load_protocol

    with pytest.raises(ValueError, match="autopilot"):
        SessionRunner(load_protocol("demo"), out_dir=tmp_path, simulate=True, speed=3.0)
