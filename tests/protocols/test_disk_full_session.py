"""A session whose disk fills up mid-session: the recording fails, the session ends, nothing is lost.

Real components (simulator sources behind LSL bridges, the recorder, PsychoPy under Xvfb) on a
real tmpfs that another "program" (a filler file written by the test) fills during a block. Needs
mount permission (root); without it this test is skipped -- the same failure path is covered
without a mount by ``tests/acquisition/test_disk_full.py`` (file-size limit in a subprocess).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.streams import source_id
from dyadlab.protocols.runner import RecordingFailed, SessionError
from tests.acquisition.test_disk_full import _fill, small_disk  # noqa: F401 - small_disk is a fixture
from tests.protocols.test_session_e2e import run_session, shortened

pytestmark = [
    pytest.mark.integration,
    pytest.mark.display,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)"),
]


def test_disk_full_mid_session_ends_it_keeps_the_recording_and_releases_devices(
    small_disk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = small_disk("128m")  # room for the planned session: the space check lets it start
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (the recorder-level tests cover the failure path)")
    loaded = shortened(
        "demo",
        tmp_path,
        blocks=[
            {"id": "rest", "task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}},
            {"id": "filled", "task": "rest", "params": {"duration_s": 15.0, "show_instructions": False}},
            {"id": "never", "task": "tapping", "params": {"n_pacer_ticks": 4}},
        ],
    )
    filled = threading.Event()

    def status(stage: str, message: str) -> None:
        if stage == "block" and "filled" in message:

            def fill() -> None:
                _fill(disk / "other-program.bin")
                filled.set()

            timer = threading.Timer(1.0, fill)
            timer.daemon = True
            timer.start()

    caplog.set_level(logging.ERROR)
    with pytest.raises(RecordingFailed) as caught:
        run_session(loaded, disk / "out", status=status)
    assert filled.is_set()
    error = caught.value
    assert isinstance(error, SessionError) and error.stage == "recording"
    assert "No space left on device" in str(error) and "Fix:" in str(error)

    # The recording: valid, loadable, both EEG streams with data up to the failure.
    xdf = error.files["xdf"]
    streams, _ = pyxdf.load_xdf(str(xdf))
    eeg = [s for s in streams if s["info"]["type"][0] == "EEG"]
    assert len(eeg) == 2 and all(len(s["time_stamps"]) > 500 for s in eeg)

    # session.json could not be written on the full disk: its content went to the log, complete=false.
    logged = [r.getMessage() for r in caplog.records if "cannot write the session record" in r.getMessage()]
    assert logged, "the session record must reach the log when the disk refuses it"
    record = json.loads(logged[-1].split("Its content, to save by hand:\n", 1)[1])
    assert record["complete"] is False and record["status"] == "failed"
    assert record["failed_stage"] == "recording"
    assert "No space left on device" in record["error"]
    # The block running when the disk filled ended at once; the next never started.
    assert [b["status"] for b in record["blocks"]][1:] == ["aborted", "not-run"]
    assert record["recorder"]["closed"] is True
    assert any("No space left on device" in p for p in record["problems"])
    # The recorder reported the failure once.
    assert (
        sum(
            "the recording stopped early" in r.getMessage()
            for r in caplog.records
            if r.name == "dyadlab.acquisition.recorder"
        )
        == 1
    )

    # Devices released: the bridges' EEG outlets are gone from the network.
    protocol = loaded.protocol
    for label in "AB":
        assert not pylsl.resolve_byprop(
            "source_id", source_id(protocol.study, protocol.dyad, "eeg", label), minimum=1, timeout=1.0
        )


def test_session_that_cannot_fit_is_refused_before_recording(small_disk, tmp_path: Path) -> None:
    """A 16 MiB disk cannot hold the planned session twice over plus the reserve: refused, no XDF."""
    disk = small_disk("16m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (tests/acquisition/test_disk_full.py covers the check)")
    loaded = shortened(
        "demo",
        tmp_path,
        blocks=[{"id": "rest", "task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}}],
    )
    with pytest.raises(SessionError, match="not enough free space") as caught:
        run_session(loaded, disk / "out")
    assert caught.value.stage == "recorder"
    assert "Fix:" in str(caught.value)
    assert not list((disk / "out").rglob("*.xdf"))
    session = json.loads(next((disk / "out").rglob("*_session.json")).read_text())
    assert session["complete"] is False and session["failed_stage"] == "recorder"
    assert "InsufficientSpaceError" in session["error"]
