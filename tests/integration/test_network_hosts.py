"""A session across three network hosts (issue #17): amplifier PC, stimulus PC, another lab.

The hosts are Linux network namespaces on a private subnet (:mod:`tests.integration.netns`),
each with its own address and hostname; LSL multicast between them is off (``ResolveScope =
machine`` everywhere), so the stimulus PC finds the amplifiers only through the protocol's
``lsl: known_peers``:

* "amp" runs ``dyadlab stream`` with both participants' BrainFlow synthetic boards, and records
  its own streams locally (``dyadlab record``, no network in between): the ground truth of every
  sample it sent, and when;
* "stim" runs ``dyadlab run`` (autopilot, a tapping block between two rests, markers, responses,
  the recorder, the quick-check) whose participants are the amp's LSL streams, plus a
  ``dyadlab record`` of the amp's raw streams as LabRecorder would (its XDF holds the clock
  offsets between the hosts);
* "other-lab" runs the same stream names under another SessionID: ``dyadlab stream`` with the
  amp's source_ids and a whole ``dyadlab run`` session with the stim's study and dyad. The stim's
  ``known_peers`` lists it too, so its LSL queries do reach it: only the SessionID keeps it out.

Clock offsets. All namespaces share one kernel clock, so the true offset between hosts is 0 and
whatever liblsl measures comes from the path. liblsl's estimate is NTP-like (see
:mod:`tests.integration.clock_probe`): with one-way delays ``d_out`` (stim to amp) and ``d_back``
(amp to stim), ``rtt = d_out + d_back`` and ``offset = (d_back - d_out) / 2``. A symmetric delay
``d`` therefore cancels in the offset and doubles in the round trip; a delay ``d`` on the amp's
sending side only shifts the offset by ``+d/2`` (and every sample of the amp, as the stim stamps
it, by the same) and shows once in the round trip. The delays come from the test network's hub
(``tc netem`` is missing on many machines); its own scheduling adds a little delay per frame,
never less, and liblsl keeps the fastest of its probes, so the tolerance below is a few ms.

Fault. During the last rest block the amp's cable is unplugged for 5 s (its switch port set
down). liblsl keeps an inlet subscribed through such a drop and, once the link is back, delivers
what the amp's outlet buffered meanwhile, with the samples' own stamps. So the session's
recording must lose nothing: every sample the amp sent between the session's first and last
recorded one is in the session's XDF once, in order (counted by value against the amp's local
recording), and so is every sample of the LabRecorder-style recording of the raw streams. The
session reports the interruption: each participant's bridge logs the stall and its end.

Preflight. A protocol whose ``known_peers`` names an address no host answers from must stop in
preflight with that address in the message, before any window opens, with nothing recorded.

Figures (offsets against the delays, samples lost) go to ``test-artifacts/network_hosts/`` and the
log. Skipped where network namespaces cannot be built (not root, no ``ip``, no support).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
import pyxdf
import yaml

from tests.integration.netns import REPOSITORY, TestNetwork, namespaces_unavailable

logger = logging.getLogger(__name__)

UNAVAILABLE = namespaces_unavailable()
pytestmark = [
    pytest.mark.network_hosts,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"network namespaces unavailable: {UNAVAILABLE}"),
    pytest.mark.timeout(240),
]

DYADLAB = str(Path(sys.executable).with_name("dyadlab"))
AMP_STUDY, DYAD = "netamp", "D01"
SESSION_STUDY = "netlab"
#: The amp's streams, as the stim session's participants find them.
AMP_EEG = {label: f"dyadlab.{AMP_STUDY}.{DYAD}.{label}.eeg" for label in ("A", "B")}
#: One-way delay on the amp's sending side during the session (ms).
AMP_SEND_DELAY_MS = 40.0
#: Offset tolerance (s): the hub's scheduling adds 0-10 ms to a frame under load; liblsl keeps
#: the fastest probe, so the error of (d_back - d_out) / 2 stays below half of that.
OFFSET_TOLERANCE_S = 0.005
#: Round-trip tolerance (s): the path's own round trip (< 1 ms) plus the hub's extra delay.
RTT_TOLERANCE_S = 0.010
LINK_DOWN_S = 5.0


def _machine_cfg(path: Path) -> Path:
    """A host's own lsl_api.cfg: multicast confined to the host (as on a network that blocks it)."""
    path.write_text("[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\n")
    return path


def _env(cfg: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DISPLAY"))}
    # No DISPLAY: `dyadlab run --autopilot` starts its own Xvfb inside the host's namespace.
    env.update(LSLAPICFG=str(cfg), PYTHONUNBUFFERED="1", COLUMNS="200", PYTHONPATH=str(REPOSITORY))
    return env


def _protocol(
    path: Path, *, session_id: str, peers: list[str], devices: dict[str, dict[str, Any]], blocks: list[dict[str, Any]]
) -> Path:
    data = {
        "version": 1,
        "name": "netlab",
        "study": SESSION_STUDY,
        "dyad": DYAD,
        "session": 1,
        "participants": [
            {"label": label, "id": f"p-{label}", "role": "participant", "device": devices[label]} for label in "AB"
        ],
        "screens": {"layout": "shared", "fullscreen": False, "size": [640, 480], "check_timing": False},
        "blocks": blocks,
        "lsl": {"session_id": session_id, "resolve_scope": "machine", "known_peers": peers},
        # BrainFlow's synthetic boards stream test sines above 100 µV, not EEG: the channel checks
        # would call every channel noisy; presence, rate and clock checks still block.
        "preflight": {"enabled": True, "seconds": 2, "noisy_std_uv": 1e6, "max_bad_channels": 64},
        "quickcheck": {"enabled": True, "surrogates": 20, "epoch_seconds": 2},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _amp_devices() -> dict[str, dict[str, Any]]:
    return {label: {"board": "lsl", "source_id": AMP_EEG[label], "resolve_timeout_s": 10} for label in "AB"}


def _wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear in {log.name} within {timeout:g} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM (each dyadlab command finishes its files on it), then wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts is ended (SIGKILL if still running) when the test ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@pytest.fixture
def figures(artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Numbers a test measured: written to test-artifacts/network_hosts/<test>.json and logged."""
    measured: dict[str, Any] = {}
    yield measured
    folder = artifacts_dir / "network_hosts"
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(measured, indent=2, default=float)
    (folder / f"{request.node.name}.json").write_text(text)
    logger.warning("network hosts figures (%s):\n%s", request.node.name, text)


def _probe(net: TestNetwork, cfg: Path, source_id: str) -> dict[str, float]:
    """liblsl's offset and round trip from stim to the amp stream, as the stim measures them."""
    result = subprocess.run(
        net.command("stim", [sys.executable, "-m", "tests.integration.clock_probe", source_id, "--seconds", "1"]),
        env=_env(cfg),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPOSITORY,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and "offset" in lines[-1], f"clock probe failed: {result.stdout}\n{result.stderr[-2000:]}"
    return {"offset_s": lines[-1]["offset"], "rtt_s": lines[-1]["rtt"]}


def _load(path: Path) -> list[dict[str, Any]]:
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return streams


def _text(info: dict[str, Any], key: str) -> str:
    return str(info[key][0])


def _by_source_id(streams: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_text(s["info"], "source_id"): s for s in streams}


def test_unanswered_peer_stops_in_preflight(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """known_peers names a PC that never answers: the run stops in preflight naming it, and no
    window opens (no participant sees a screen), nothing is recorded."""
    with TestNetwork(["amp", "stim"]) as net:
        amp_cfg, stim_cfg = _machine_cfg(tmp_path / "amp.cfg"), _machine_cfg(tmp_path / "stim.cfg")
        session_id = f"net-{uuid.uuid4().hex[:8]}"
        amp_log = tmp_path / "amp.log"
        amp = net.start(
            "amp",
            [DYADLAB, "stream", "--study", AMP_STUDY, "--dyad", DYAD, "--session-id", session_id, "--duration", "90"],
            env=_env(amp_cfg),
            log=amp_log,
        )
        processes.append(amp)
        _wait_for(amp_log, "Streaming", amp, 30)
        silent = f"{net.subnet}.99"  # on the subnet, but no host has this address
        protocol = _protocol(
            tmp_path / "netlab.yaml",
            session_id=session_id,
            peers=[net.hosts["amp"].address, silent],
            devices=_amp_devices(),
            blocks=[{"id": "rest", "task": "rest", "params": {"duration_s": 5, "show_instructions": False}}],
        )
        out = tmp_path / "out"
        result = subprocess.run(
            net.command("stim", [DYADLAB, "run", str(protocol), "--autopilot", "--out", str(out)]),
            env=_env(stim_cfg),
            capture_output=True,
            text=True,
            timeout=90,
        )
        _stop(amp)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"LSL peer {silent} (lsl: known_peers) did not answer" in output, output
    assert f"LSL peer {net.hosts['amp'].address} " not in output, "the amp answered and is not a problem"
    assert "Session failed during preflight" in output, output
    assert "window(s)" not in output, "a window opened although preflight failed"
    records = list(out.rglob("*_not-recorded_*.json"))
    assert len(records) == 1, list(out.rglob("*"))
    record = json.loads(records[0].read_text())
    assert record["failed_stage"] == "preflight" and record["recorder"] is None
    assert silent in record["error"]
    assert not list(out.rglob("*.xdf")) and not list(out.rglob("*_beh.csv")), "nothing may be recorded"


def test_three_hosts_session_records_its_own_streams(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], figures: dict[str, Any]
) -> None:
    """The stim's session finds the amp through known_peers, records only its own streams while
    the other lab streams the same names, stores the path's clock offsets, survives the amp's
    cable being pulled mid-block, and its quick-check aligns A and B and reports the gap."""
    with TestNetwork(["amp", "stim", "other-lab"]) as net:
        amp_ip, other_ip = net.hosts["amp"].address, net.hosts["other-lab"].address
        cfg = {name: _machine_cfg(tmp_path / f"{name}.cfg") for name in net.hosts}
        session_id, other_id = f"net-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
        figures.update(
            session_id=session_id,
            other_lab_session_id=other_id,
            hosts={name: host.address for name, host in net.hosts.items()},
        )
        logs = {name: tmp_path / f"{name}.log" for name in ("amp", "amp-rec", "other", "other-run", "stim-rec", "stim")}

        def start(host: str, log: str, argv: list[str], config: Path) -> subprocess.Popen[bytes]:
            process = net.start(host, argv, env=_env(config), log=logs[log])
            processes.append(process)
            return process

        stream = [DYADLAB, "stream", "--study", AMP_STUDY, "--dyad", DYAD, "--duration", "600"]
        amp = start("amp", "amp", [*stream, "--session-id", session_id], cfg["amp"])
        other = start("other-lab", "other", [*stream, "--session-id", other_id], cfg["other-lab"])
        _wait_for(logs["amp"], "Streaming", amp, 30)
        _wait_for(logs["other"], "Streaming", other, 30)
        # The other lab's session: the stim session's study, dyad and so stream names, its own SessionID.
        other_protocol = _protocol(
            tmp_path / "other.yaml",
            session_id=other_id,
            peers=[],
            devices={label: {"board": "simulator"} for label in "AB"},
            blocks=[{"id": "other-rest", "task": "rest", "params": {"duration_s": 300, "show_instructions": False}}],
        )
        other_run = start(
            "other-lab",
            "other-run",
            [DYADLAB, "run", str(other_protocol), "--autopilot", "--no-quickcheck", "--out", str(tmp_path / "other")],
            cfg["other-lab"],
        )
        _wait_for(logs["other-run"], "1/1 other-rest (rest)", other_run, 90)  # its streams exist
        # The amp's own recording of what it sent (loopback only: no network between).
        amp_cfg_session = tmp_path / "amp-session.cfg"
        amp_cfg_session.write_text(cfg["amp"].read_text() + f"\n[lab]\nSessionID = {session_id}\n")
        amp_xdf = tmp_path / "amp-local.xdf"
        amp_rec = start(
            "amp",
            "amp-rec",
            [DYADLAB, "record", "--source-id", AMP_EEG["A"], "--source-id", AMP_EEG["B"], "--out", str(amp_xdf)],
            amp_cfg_session,
        )
        # The stim PC's LSL configuration: the session's SessionID and peers (what the protocol sets).
        stim_cfg = tmp_path / "stim-session.cfg"
        stim_cfg.write_text(
            cfg["stim"].read_text() + f"\n[lab]\nSessionID = {session_id}\nKnownPeers = {{{amp_ip}, {other_ip}}}\n"
        )

        # Offsets against delays, measured from the stim before the session.
        delays = {"none": (0.0, 0.0), "amp-send": (AMP_SEND_DELAY_MS, 0.0), "symmetric": (20.0, 20.0)}
        measured = {}
        for name, (send_ms, receive_ms) in delays.items():
            net.delay("amp", send_ms=send_ms, receive_ms=receive_ms)
            measured[name] = _probe(net, stim_cfg, AMP_EEG["A"])
        figures["probe"] = {name: {"delay_ms": delays[name], **measured[name]} for name in delays}
        net.delay("amp", send_ms=AMP_SEND_DELAY_MS)  # for the whole session

        # The LabRecorder-style recording of the amp's raw streams on the stim PC.
        raw_xdf = tmp_path / "stim-raw.xdf"
        stim_rec = start(
            "stim",
            "stim-rec",
            [DYADLAB, "record", "--source-id", AMP_EEG["A"], "--source-id", AMP_EEG["B"], "--out", str(raw_xdf)],
            stim_cfg,
        )
        protocol = _protocol(
            tmp_path / "netlab.yaml",
            session_id=session_id,
            peers=[amp_ip, other_ip],
            devices=_amp_devices(),
            blocks=[
                {"id": "rest-1", "task": "rest", "params": {"duration_s": 6, "show_instructions": False}},
                {"id": "tap", "task": "tapping", "params": {"n_pacer_ticks": 4, "continuation_s": 2.0}},
                {"id": "rest-2", "task": "rest", "params": {"duration_s": 20, "show_instructions": False}},
            ],
        )
        out = tmp_path / "out"
        stim = start("stim", "stim", [DYADLAB, "run", str(protocol), "--autopilot", "--out", str(out)], cfg["stim"])
        _wait_for(logs["stim"], "rest-2 (rest)", stim, 120)
        time.sleep(4.0)
        net.set_link("amp", up=False)
        # Namespaces share the kernel's clock: the amp stamps its samples on this same local_clock().
        down_at = pylsl.local_clock()
        time.sleep(LINK_DOWN_S)
        net.set_link("amp", up=True)
        up_at = pylsl.local_clock()
        figures["link_down_s"] = up_at - down_at
        assert stim.wait(150) == 0, logs["stim"].read_text()[-5000:]
        # The other lab streamed throughout the session (its session and its amplifiers).
        assert other_run.poll() is None and other.poll() is None, logs["other-run"].read_text()[-3000:]
        for process in (stim_rec, amp_rec, other_run, amp, other):
            _stop(process)
    stim_log = logs["stim"].read_text()
    logger.info("stim session output:\n%s", stim_log)
    _check_offsets(measured, figures)
    xdf = next(out.rglob("*.xdf"))
    session = json.loads(next(out.rglob("*_session.json")).read_text())
    streams = _load(xdf)
    _check_own_streams(streams, session, net, session_id)
    amp_streams = _load(amp_xdf)
    _check_raw_recording(_load(raw_xdf), amp_streams, net, figures)
    recorded_stamps = _check_samples_around_drop(streams, amp_streams, (down_at, up_at), figures)
    _check_stall_reported(stim_log, session, (down_at, up_at), figures)
    _check_quickcheck(session, recorded_stamps, figures)


def _check_offsets(measured: dict[str, dict[str, float]], figures: dict[str, Any]) -> None:
    """liblsl's offset and round trip follow the path: offset (d_back - d_out) / 2, rtt d_out + d_back."""
    expected = {
        "none": (0.0, 0.0),
        "amp-send": (AMP_SEND_DELAY_MS / 2e3, AMP_SEND_DELAY_MS / 1e3),
        "symmetric": (0.0, 0.040),
    }
    figures["probe_expected"] = {name: {"offset_s": o, "rtt_s": r} for name, (o, r) in expected.items()}
    for name, (offset, rtt) in expected.items():
        got = measured[name]
        assert abs(got["offset_s"] - offset) < OFFSET_TOLERANCE_S, (name, got, offset)
        assert rtt - 0.001 < got["rtt_s"] < rtt + RTT_TOLERANCE_S, (name, got, rtt)


def _check_own_streams(
    streams: list[dict[str, Any]], session: dict[str, Any], net: TestNetwork, session_id: str
) -> None:
    """Exactly the session's streams, from the stim (republished) and the amp (their device)."""
    by_id = _by_source_id(streams)
    prefix = f"dyadlab.{SESSION_STUDY}.{DYAD}."
    assert len(by_id) == len(streams), "a source_id recorded twice (another lab's stream?)"
    # The amp's EEG streams carry a board-marker channel, which the session files under AUX.
    wanted = {prefix + kind for kind in ("A.eeg", "B.eeg", "A.aux", "B.aux", "markers", "responses")}
    assert set(by_id) == wanted, sorted(by_id)
    assert {_text(s["info"], "hostname") for s in streams} == {net.hostname("stim")}
    assert session["lsl"]["session_id"] == session_id
    other_ip = net.hosts["other-lab"].address
    assert session["lsl"]["known_peers"] == [net.hosts["amp"].address, other_ip]
    # The other lab's PC answered the session's queries, with its own SessionID only.
    assert any(
        p.startswith(f"LSL peer {other_ip} (lsl: known_peers) streams only under other") for p in session["problems"]
    )
    for person in session["participants"]:
        description = person["device"]["description"]
        assert description["lsl_hostname"] == net.hostname("amp"), description
        assert description["lsl_source_id"] == AMP_EEG[person["label"]]
    events = [json.loads(sample[0]) for sample in by_id[prefix + "markers"]["time_series"]]
    assert events[0]["event"] == "session_start" and events[0]["value"]["protocol"] == "netlab"
    assert events[-1] == {**events[-1], "event": "session_end", "value": "complete"}
    assert [e["block"] for e in events if e["event"] == "block_start"] == ["rest-1", "tap", "rest-2"]
    assert sum(e["event"] == "session_start" for e in events) == 1, "another session's markers were recorded"
    assert len(by_id[prefix + "responses"]["time_series"]) > 0, "the autopilot tapped"


def _labels(stream: dict[str, Any]) -> list[str]:
    return [c["label"][0] for c in stream["info"]["desc"][0]["channels"][0]["channel"]]


def _match(recorded: dict[str, Any], truth: dict[str, Any]) -> np.ndarray:
    """For each recorded sample, its index in the amp's own recording ``truth`` (by value: the
    synthetic boards' rows are unique, and float32 values pass the path unchanged)."""
    columns = [_labels(truth).index(name) for name in _labels(recorded)]
    truth_rows = np.ascontiguousarray(np.asarray(truth["time_series"], dtype=np.float32)[:, columns])
    recorded_rows = np.ascontiguousarray(np.asarray(recorded["time_series"], dtype=np.float32))
    where = {row.tobytes(): index for index, row in enumerate(truth_rows)}
    assert len(where) == len(truth_rows), "the amp's samples are not unique: cannot match them"
    matched = np.array([where.get(row.tobytes(), -1) for row in recorded_rows])
    assert (matched >= 0).all(), f"{(matched < 0).sum()} recorded samples the amp never sent"
    assert (np.diff(matched) > 0).all(), "samples recorded twice or out of order"
    return matched


def _lost_runs(matched: np.ndarray) -> list[np.ndarray]:
    """The runs of consecutive amp samples missing between the first and last recorded one."""
    missing = np.setdiff1d(np.arange(matched[0], matched[-1] + 1), matched)
    return np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1) if missing.size else []


def _check_raw_recording(
    raw: list[dict[str, Any]], amp_streams: list[dict[str, Any]], net: TestNetwork, figures: dict[str, Any]
) -> None:
    """The stim's LabRecorder-style recording of the amp's raw streams holds the offsets between
    the hosts (half the path's asymmetry), and loses nothing across the cable drop: liblsl's
    inlet keeps its subscription and the amp's outlet delivers what it buffered meanwhile."""
    expected = AMP_SEND_DELAY_MS / 2e3
    amp_by_id = _by_source_id(amp_streams)
    recorded = {}
    for stream in raw:
        source = _text(stream["info"], "source_id")
        assert _text(stream["info"], "hostname") == net.hostname("amp")
        offsets = np.asarray(stream["clock_values"], dtype=float)
        assert offsets.size >= 3, "the recorder measures an offset at start, every 5 s and at stop"
        matched = _match(stream, amp_by_id[source])
        recorded[source] = {
            "clock_offsets": int(offsets.size),
            "offset_median_s": float(np.median(offsets)),
            "offset_min_s": float(offsets.min()),
            "offset_max_s": float(offsets.max()),
            "samples": int(matched.size),
            "lost": int(sum(run.size for run in _lost_runs(matched))),
        }
        assert abs(np.median(offsets) - expected) < OFFSET_TOLERANCE_S, recorded
        assert recorded[source]["lost"] == 0, recorded
    figures["raw_recording_on_stim"] = {"expected_offset_s": expected, **recorded}


def _check_samples_around_drop(
    session_streams: list[dict[str, Any]],
    amp_streams: list[dict[str, Any]],
    link_down: tuple[float, float],
    figures: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Against the amp's own recording: every sample the amp sent from the session's first
    recorded one to its last, before, during and after the link drop (``link_down``, the amp's
    local_clock() at unplugging and replugging), is in the session once, in order, and the
    stim's stamps are the amp's plus the path's offset. Returns each participant's recorded stamps."""
    session_by_id, amp_by_id = _by_source_id(session_streams), _by_source_id(amp_streams)
    down_at, up_at = link_down
    report = {}
    stamps = {}
    for label in "AB":
        recorded = session_by_id[f"dyadlab.{SESSION_STUDY}.{DYAD}.{label}.eeg"]
        truth = amp_by_id[AMP_EEG[label]]
        rate = float(truth["info"]["nominal_srate"][0])
        matched = _match(recorded, truth)  # each recorded sample once, in the amp's order
        shift = np.asarray(recorded["time_stamps"]) - np.asarray(truth["time_stamps"])[matched]
        runs = _lost_runs(matched)
        sent_at = np.asarray(truth["time_stamps"])[matched]
        report[label] = {
            "rate_hz": rate,
            "recorded": int(matched.size),
            "sent_in_span": int(matched[-1] - matched[0] + 1),
            "lost": int(sum(run.size for run in runs)),
            "lost_runs": len(runs),
            "sent_while_link_down": int(((sent_at >= down_at) & (sent_at <= up_at)).sum()),
            "before_drop": int((sent_at < down_at).sum()),
            "after_drop": int((sent_at > up_at).sum()),
            "stamp_shift_median_s": float(np.median(shift)),
            "stamp_shift_p5_p95_s": [float(np.percentile(shift, 5)), float(np.percentile(shift, 95))],
        }
        assert report[label]["lost"] == 0, f"{label}: samples the amp sent are missing from the session: {report}"
        # The drop happened mid-recording: the recorded span covers it, with data on both sides.
        assert report[label]["before_drop"] > 10 * rate and report[label]["after_drop"] > 5 * rate, report[label]
        # lost == 0 within the span, so the samples sent while the link was down are all there;
        # the amp's stamps step by 1/rate, give or take a chunk's jitter of a busy PC (0.5 s).
        assert report[label]["sent_while_link_down"] > (LINK_DOWN_S - 0.5) * rate, report[label]
        assert abs(np.median(shift) - AMP_SEND_DELAY_MS / 2e3) < OFFSET_TOLERANCE_S, report[label]
        stamps[label] = np.asarray(recorded["time_stamps"])
    figures["samples_around_link_drop"] = report
    return stamps


def _check_stall_reported(
    stim_log: str, session: dict[str, Any], link_down: tuple[float, float], figures: dict[str, Any]
) -> None:
    """The session reports each participant's interruption: its bridge logs the stall and, once
    liblsl delivers again, how long the silence lasted (the drop plus TCP's retransmission back-off;
    below 1.5 s, the stall threshold, nothing is reported); session.json keeps the stall and when
    it was detected (within the link's down time plus the 1.5-s threshold and a busy PC's second)."""
    records = {record["participant"]: record for record in session["eeg_streams"]}
    for label in "AB":
        record = records[label]
        assert record["stalls"] == 1 and record["reconnects"] == 0, record
        (detected,) = record["stalls_detected_local_clock"]
        assert link_down[0] + 1.0 < detected < link_down[1] + 2.5, (record, link_down)
    resumed = {}
    for label in "AB":
        stream = f"{DYAD}-{label}-EEG"
        stalled = re.findall(rf"{re.escape(stream)}: no samples for ([\d.]+) s", stim_log)
        silences = [
            float(s) for s in re.findall(rf"{re.escape(stream)}: the source delivers again after ([\d.]+) s", stim_log)
        ]
        resumed[label] = {"stall_reports": len(stalled), "silences_s": silences}
        assert len(stalled) == 1 and len(silences) == 1, (label, resumed[label])
        assert LINK_DOWN_S - 1.0 < silences[0] < LINK_DOWN_S + 15.0, (label, resumed[label])
        released = re.search(rf"{re.escape(stream)}: .*; reconnecting", stim_log)
        assert released is None, f"{stream}'s inlet was released, its buffered samples lost: {released}"
    figures["stall_reported"] = resumed


def _gaps(stamps: np.ndarray, threshold: float) -> list[tuple[float, float]]:
    """The intervals between consecutive stamps further apart than ``threshold``."""
    steps = np.flatnonzero(np.diff(stamps) > threshold)
    return [(float(stamps[i]), float(stamps[i + 1])) for i in steps]


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _check_quickcheck(session: dict[str, Any], stamps: dict[str, np.ndarray], figures: dict[str, Any]) -> None:
    """The quick-check aligns A and B (both from the amp, shifted alike) and reports exactly the
    gaps in the recorded stamps: none from the link drop (nothing was lost), only steps of the
    amp's own stamps (a busy amplifier PC stamps a late chunk late; no sample is missing there)."""
    info = session["quickcheck"]
    assert info and "error" not in info, info
    result = json.loads(Path(info["json"]).read_text())
    quality = result["quality"]
    figures["quickcheck"] = {
        "overlap": quality["overlap"],
        "alignment_valid_fraction": result["alignment"]["valid_fraction"],
        "alignment_duration_s": result["alignment"]["duration_s"],
        **{label: {key: quality[label][key] for key in ("gaps", "largest_gap_s", "total_gap_s")} for label in "AB"},
    }
    assert {p["source_id"] for p in result["participants"].values()} == {
        f"dyadlab.{SESSION_STUDY}.{DYAD}.{label}.eeg" for label in "AB"
    }
    # A and B cover the same span: the recorder subscribes to them one after the other, so
    # their first samples differ by a few; 0.1 s is the quick-check's own gap threshold.
    assert quality["overlap"]["overlap_fraction"] > 0.99, quality["overlap"]
    assert abs(quality["overlap"]["start_difference_s"]) < 0.1, quality["overlap"]
    invalid = []
    for label in "AB":
        gaps = _gaps(stamps[label], quality[label]["gap_threshold_s"])
        invalid += gaps
        figures["quickcheck"][label]["gaps_in_recorded_stamps_s"] = [end - start for start, end in gaps]
        assert quality[label]["gaps"] == len(gaps), (quality[label], gaps)
        # Nothing was lost across the drop, so its largest gap is one of the amp's own steps.
        largest = max((end - start for start, end in gaps), default=0.0)
        assert abs(quality[label]["largest_gap_s"] - largest) < 0.01, (quality[label], gaps)
    # The aligned span is valid except where either participant has a gap (the drop, seen by
    # both, and the amp's own steps); 0.01 leaves room for the quick-check's one-sample edges.
    expected = 1 - _union_length(invalid) / result["alignment"]["duration_s"]
    figures["quickcheck"]["expected_valid_fraction"] = expected
    assert abs(result["alignment"]["valid_fraction"] - expected) < 0.01, figures["quickcheck"]
