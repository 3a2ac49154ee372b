"""``dyadlab run`` with live synchrony: the stream is recorded, agrees with the quick-check, and its
publisher can die without touching the recording.

Real components: the coupled-dyad simulator behind real LSL bridges, the publisher as a real
``python -m dyadlab live-synchrony`` process, the in-process recorder, PsychoPy windows under Xvfb
(one short rest block: the cheapest session that runs every stage).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyxdf
import yaml

from dyadlab.acquisition.lslconfig import LslConfig, session_id_in_force
from dyadlab.protocols.runner import SessionRunner
from dyadlab.protocols.schema import BUNDLED_DIR, load_protocol
from dyadlab.synchrony.io import load_dyad
from dyadlab.synchrony.live import channel_labels
from dyadlab.synchrony.segments import DEFAULT_BANDS, align_dyad, filter_margin
from tests.synchrony.test_live import AGREEMENT_TOLERANCE, offline_window_values

pytestmark = pytest.mark.integration

REST_S = 14.0
#: Seconds of recording before the publisher is killed.
KILL_AFTER_S = 10.0


def _protocol(tmp_path: Path, rest_s: float = REST_S) -> Any:
    data = yaml.safe_load((BUNDLED_DIR / "demo.yaml").read_text())
    data["blocks"] = [{"id": "rest", "task": "rest", "duration": rest_s, "params": {"variant": "eyes-open"}}]
    data["screens"] = {"layout": "shared", "fullscreen": False, "size": [640, 480], "check_timing": False}
    data["preflight"] = {"enabled": True, "seconds": 1}
    data["quickcheck"] = {"enabled": False}
    data["live_synchrony"] = {"enabled": True}
    data["monitor"] = {"enabled": True, "port": 0, "browser": False}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_protocol(path)


def _synchrony_stream(xdf: Path) -> dict[str, Any]:
    streams, _ = pyxdf.load_xdf(str(xdf))
    found = [s for s in streams if s["info"]["type"][0] == "Synchrony"]
    assert len(found) == 1, [s["info"]["name"][0] for s in streams]
    return found[0]


@pytest.mark.display
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")
def test_live_synchrony_is_recorded_agrees_with_the_quickcheck_and_may_die(tmp_path: Path) -> None:
    """One session (the budget allows one): the publisher and the monitor run for ~10 s of recording,
    then both are killed with SIGKILL; the session must end complete with every EEG sample, and the
    windows recorded before the kill must agree with the quick-check's functions on the XDF's EEG."""
    killed: dict[str, int] = {}
    statuses: list[tuple[str, str]] = []

    def status(stage: str, message: str) -> None:
        statuses.append((stage, message))
        if stage == "recording":  # the recorder runs (and records the synchrony stream)
            threading.Timer(KILL_AFTER_S, kill).start()

    def kill() -> None:
        for name, helper in runner._state.helpers.helpers.items():  # type: ignore[union-attr]
            killed[name] = helper.process.pid
            os.kill(helper.process.pid, signal.SIGKILL)

    runner = SessionRunner(
        _protocol(tmp_path),
        out_dir=tmp_path / "out",
        simulate=True,
        autopilot=True,
        lsl_config=LslConfig(),
        status=status,
    )
    result = runner.run()
    record = json.loads(result.files["session"].read_text())

    # The kill is a warning in session.json, never a failed session.
    assert set(killed) == {"live-synchrony", "monitor"}, "both helpers were killed during the session"
    assert record["complete"] and record["status"] == "complete", record
    for name, pid in killed.items():
        helper = record["helpers"][name]
        assert helper["pid"] == pid and helper["ended_during_session"] and helper["exit_code"] == -9, helper
        assert any(f"{name} ended during the session" in p for p in record["problems"]), record["problems"]
    # The monitor's address reached the run's status output and session.json.
    url = record["helpers"]["monitor"]["url"]
    assert url.startswith("http://") and ("monitor", url) in statuses, (url, statuses)

    # Every EEG sample is in the file: as many as the recorder counted, as many as the nominal rate
    # gives over the recorded span to within 2 samples (one at each end) plus 1 % (the simulator
    # paces itself on local_clock, not on a crystal), and no hole longer than 5 sample periods.
    streams, _ = pyxdf.load_xdf(str(result.files["xdf"]), dejitter_timestamps=False)
    summary = {s["name"]: s for s in record["recorder"]["streams"]}
    eeg = [s for s in streams if s["info"]["type"][0] == "EEG"]
    assert len(eeg) == 2
    for stream in eeg:
        name = stream["info"]["name"][0]
        stamps = np.asarray(stream["time_stamps"])
        rate = float(stream["info"]["nominal_srate"][0])
        assert len(stamps) == summary[name]["sample_count"], name
        expected = (stamps[-1] - stamps[0]) * rate + 1
        assert abs(len(stamps) - expected) <= 2 + 0.01 * expected, (name, len(stamps), expected)
        assert np.max(np.diff(stamps)) < 5.0 / rate, f"{name}: a hole in the EEG"
        assert summary[name]["footer_written"] and summary[name]["error"] is None, summary[name]

    # The stream and its contract (docs/live-synchrony.md).
    stream = _synchrony_stream(result.files["xdf"])
    info = stream["info"]
    assert info["name"][0] == "dyadlab-live-synchrony"
    assert info["source_id"][0] == f"dyadlab.{record['study']}.{record['dyad']}.synchrony"
    assert float(info["nominal_srate"][0]) == 2.0 and info["channel_format"][0] == "float32"
    labels = [c["label"][0] for c in info["desc"][0]["channels"][0]["channel"]]
    assert labels == channel_labels(list(DEFAULT_BANDS))
    about = info["desc"][0]["synchrony"][0]
    assert about["source_id_a"][0] == f"dyadlab.{record['study']}.{record['dyad']}.A.eeg"
    assert about["source_id_b"][0] == f"dyadlab.{record['study']}.{record['dyad']}.B.eeg"
    assert about["session_id"][0] == session_id_in_force()
    window_s, settle_s = float(about["window_s"][0]), float(about["settle_s"][0])
    ends = np.asarray(stream["time_stamps"])
    values = np.asarray(stream["time_series"], dtype=float)
    assert np.allclose(np.diff(ends), 0.5, atol=0.01), np.diff(ends)
    # Published until the kill: from window + settling after the EEG began to the kill (~10 s).
    assert len(ends) >= 2 * (KILL_AFTER_S - window_s - settle_s), len(ends)

    # Offline, with the quick-check's own reader, grid and epoch functions, over the same windows:
    # every window whose filter span lies inside the recorded EEG is compared.
    recording = load_dyad(result.files["xdf"])
    aligned = align_dyad(recording.a, recording.b)
    offline = offline_window_values(aligned, ends, window_s=window_s)
    margin = filter_margin(dict(DEFAULT_BANDS), aligned.rate)
    grid_end = aligned.start + aligned.n_samples / aligned.rate
    inside = (ends - window_s - margin >= aligned.start) & (ends + margin <= grid_end)
    assert inside.sum() >= 8, (ends, aligned.start, grid_end)
    for index, label in enumerate(labels):
        if label.endswith("_chance"):
            continue
        live, expected = values[inside, index], offline[label][inside]
        assert np.all(np.isfinite(live)) and np.all(np.isfinite(expected)), label
        np.testing.assert_allclose(live, expected, rtol=0, atol=AGREEMENT_TOLERANCE, err_msg=label)


def test_a_publisher_started_by_a_run_ends_with_it(lsl_session_id: str) -> None:
    """``dyadlab run`` holds the publisher's standard input: if the run is killed outright (no
    chance to stop its helpers), the pipe closes and the publisher ends instead of living on."""
    publisher = subprocess.Popen(
        [sys.executable, "-m", "dyadlab", "live-synchrony", "--study", "orphan", "--dyad", "D01"]
        + ["--session-id", lsl_session_id, "--until-stdin-closes"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(3.0)  # imported and looking for EEG streams (there are none: it would wait 30 s)
        assert publisher.poll() is None, publisher.communicate()[0]
        assert publisher.stdin is not None
        publisher.stdin.close()
        publisher.wait(timeout=10.0)
        assert publisher.stdout is not None
        output = publisher.stdout.read()
        assert publisher.returncode == 0, output
        assert "stopped after 0 windows" in output, output
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
