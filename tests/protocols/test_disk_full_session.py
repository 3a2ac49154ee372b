"""A session whose disk fills up mid-session: the recording fails, the session ends, nothing is lost.

Real components (simulator sources behind LSL bridges, the recorder, PsychoPy under Xvfb) on a
real tmpfs that another "program" (a filler file written by the test) fills during a block. That
needs mount permission (root). Without it -- or with ``DYADLAB_TEST_NO_TMPFS=1`` -- the same
session runs in a subprocess under ``RLIMIT_FSIZE`` (``SIGXFSZ`` ignored): the kernel refuses to
let the XDF grow past the limit (``EFBIG``) during the second block, and the runner's
:class:`RecordingFailed` path is checked the same way, so it is never skipped. Refusing a session
that cannot fit needs a small disk (free space, not file size); without a mount that check is
covered by ``tests/acquisition/test_disk_full.py``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pylsl
import pytest
import pyxdf

from dyadlab.acquisition.streams import source_id
from dyadlab.protocols.runner import RecordingFailed, SessionError
from tests.acquisition.test_disk_full import REPO, _fill, small_disk  # noqa: F401 - small_disk is a fixture
from tests.protocols.test_session_e2e import run_session, shortened

pytestmark = [
    pytest.mark.integration,
    pytest.mark.display,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)"),
]


BLOCKS = [
    {"id": "rest", "task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}},
    {"id": "filled", "task": "rest", "params": {"duration_s": 60.0, "show_instructions": False}},
    {"id": "never", "task": "tapping", "params": {"n_pacer_ticks": 4}},
]
# The XDF may not grow past this under RLIMIT_FSIZE: two 16-channel streams at 250 Hz write about
# 40 kB/s, so the limit is reached some 6 s into the recording, in the second block (1.3-13 s: the
# autopilot speed of 5 shortens rest blocks fivefold).
FILE_SIZE_LIMIT = 256 * 1024


def _released(protocol: Any) -> bool:
    """The bridges' EEG outlets are gone from the network."""
    return not any(
        pylsl.resolve_byprop(
            "source_id", source_id(protocol.study, protocol.dyad, "eeg", label), minimum=1, timeout=1.0
        )
        for label in "AB"
    )


def session_until_the_file_is_too_large(protocol_path: str, out: str) -> dict[str, Any]:
    """Run in a subprocess under RLIMIT_FSIZE: the session until RecordingFailed, what it logged."""
    from dyadlab.protocols.schema import load_protocol

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    loaded = load_protocol(Path(protocol_path))
    try:
        run_session(loaded, Path(out))
    except RecordingFailed as error:
        return {
            "raised": "RecordingFailed",
            "is_session_error": isinstance(error, SessionError),
            "stage": error.stage,
            "message": str(error),
            "files": {kind: str(path) for kind, path in error.files.items()},
            "errors_logged": [(r.name, r.getMessage()) for r in records],
            "released": _released(loaded.protocol),
        }
    except Exception as error:  # reported to the test, which fails with it
        return {"raised": f"{type(error).__name__}: {error}"}
    return {"raised": None}


UNDER_LIMIT = textwrap.dedent(
    """
    import json, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    from tests.protocols.test_disk_full_session import session_until_the_file_is_too_large
    print("RESULT " + json.dumps(session_until_the_file_is_too_large(sys.argv[1], sys.argv[2])))
    """
)


def test_disk_full_mid_session_ends_it_keeps_the_recording_and_releases_devices(
    small_disk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = small_disk("128m")  # room for the planned session: the space check lets it start
    if disk is None:
        _file_too_large_mid_session(tmp_path)
        return
    loaded = shortened("demo", tmp_path, blocks=BLOCKS, microphones=None)  # the EEG fills the disk
    filled = threading.Event()

    def status(stage: str, message: str) -> None:
        if stage == "block" and "filled" in message:

            def fill() -> None:
                _fill(disk / "other-program.bin")
                filled.set()

            timer = threading.Timer(3.0, fill)  # > 500 samples recorded by then, even on a loaded machine
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
    assert _released(loaded.protocol)


def _file_too_large_mid_session(tmp_path: Path) -> None:
    """The same session without a mount: the XDF reaches RLIMIT_FSIZE during the second block."""
    loaded = shortened("demo", tmp_path, blocks=BLOCKS, microphones=None)  # the EEG fills the disk
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", UNDER_LIMIT, str(loaded.path), str(out), str(FILE_SIZE_LIMIT)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        timeout=240,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and results, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(results[-1].removeprefix("RESULT "))
    assert outcome["raised"] == "RecordingFailed", outcome
    assert outcome["is_session_error"] and outcome["stage"] == "recording"
    assert "File too large" in outcome["message"] and "Fix:" in outcome["message"]

    # The recording: valid, loadable, both EEG streams with data up to the failure; never past the limit.
    xdf = Path(outcome["files"]["xdf"])
    assert xdf.stat().st_size <= FILE_SIZE_LIMIT
    streams, _ = pyxdf.load_xdf(str(xdf))
    eeg = [s for s in streams if s["info"]["type"][0] == "EEG"]
    assert len(eeg) == 2 and all(len(s["time_stamps"]) > 500 for s in eeg)

    # session.json is small enough to be written: complete=false, the recording failed.
    record = json.loads(Path(outcome["files"]["session"]).read_text())
    assert record["complete"] is False and record["status"] == "failed"
    assert record["failed_stage"] == "recording"
    assert "File too large" in record["error"]
    # The block running when the file reached the limit ended at once; the next never started.
    assert [b["status"] for b in record["blocks"]] == ["completed", "aborted", "not-run"]
    assert record["recorder"]["closed"] is True
    assert any("File too large" in p for p in record["problems"])
    # The recorder reported the failure once; the devices were released.
    stopped = [m for name, m in outcome["errors_logged"] if name == "dyadlab.acquisition.recorder"]
    assert sum("the recording stopped early" in m for m in stopped) == 1, outcome["errors_logged"]
    assert outcome["released"]


def test_session_that_cannot_fit_is_refused_before_recording(small_disk, tmp_path: Path) -> None:
    """A 16 MiB disk cannot hold the planned session twice over plus the reserve: refused, no XDF."""
    disk = small_disk("16m")
    if disk is None:
        pytest.skip("mounting a tmpfs is not permitted here (tests/acquisition/test_disk_full.py covers the check)")
    loaded = shortened(
        "demo",
        tmp_path,
        blocks=[{"id": "rest", "task": "rest", "params": {"duration_s": 3.0, "show_instructions": False}}],
        microphones=None,
    )
    with pytest.raises(SessionError, match="not enough free space") as caught:
        run_session(loaded, disk / "out")
    assert caught.value.stage == "recorder"
    assert "Fix:" in str(caught.value)
    assert not list((disk / "out").rglob("*.xdf"))
    # Nothing recorded: the run number stays free and the attempt's record is kept aside.
    assert not list((disk / "out").rglob("*_session.json"))
    session = json.loads(next((disk / "out").rglob("*_not-recorded_*.json")).read_text())
    assert session["complete"] is False and session["failed_stage"] == "recorder"
    assert "InsufficientSpaceError" in session["error"]
