"""BoardBridge: real BrainFlow synthetic boards pumped into real LSL outlets, read by real inlets."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import ExitStack

import numpy as np
import pylsl
import pytest

from dyadlab.acquisition.brainflow_source import BoardSpec, BrainFlowSource
from dyadlab.acquisition.bridge import BoardBridge, BridgeState
from dyadlab.acquisition.sources import SourceChunk, SourceConfigError
from dyadlab.acquisition.streams import ParticipantInfo
from tests.acquisition.lsl_helpers import open_inlet, pull_for

pytestmark = pytest.mark.integration


def _bridge(source, unique_id: str, label: str = "A", **kwargs) -> BoardBridge:
    return BoardBridge(
        source,
        study="bridgetest",
        dyad=f"d{unique_id}",
        participant=ParticipantInfo(label, f"sub-{label}", role="partner"),
        **kwargs,
    )


def test_stream_timestamps_are_local_clock_and_monotonic(unique_id: str) -> None:
    with _bridge(BrainFlowSource(participant=f"clk-{unique_id}"), unique_id) as bridge:
        inlet = open_inlet(bridge.source_id)
        data, stamps = pull_for(inlet, 1.5)
        lsl_now = pylsl.local_clock()
        unix_now = time.time()
    assert data.shape[1] == 17  # 16 EEG + Marker
    assert np.all(np.diff(stamps) > 0), "timestamps must increase"
    # Samples were stamped moments ago on local_clock ...
    assert -0.05 < lsl_now - stamps[-1] < 1.0
    # ... and are nowhere near Unix (wall-clock) time, which BrainFlow hands out.
    assert abs(unix_now - stamps[-1]) > 1e6
    # Spacing follows the board's 250 Hz (the stamps are per sample, not per chunk).
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 250, rel=0.05)


def test_stream_metadata_and_aux_stream(unique_id: str) -> None:
    with _bridge(BrainFlowSource(participant=f"meta-{unique_id}"), unique_id, label="B") as bridge:
        assert bridge.source_id == f"dyadlab.bridgetest.d{unique_id}.B.eeg"
        assert bridge.aux_source_id == f"dyadlab.bridgetest.d{unique_id}.B.aux"
        eeg_inlet = open_inlet(bridge.source_id)
        info = eeg_inlet.info(timeout=5.0)
        aux_inlet = open_inlet(bridge.aux_source_id)
        aux_data, _ = pull_for(aux_inlet, 0.5)
    assert info.name() == f"d{unique_id}-B-EEG"
    assert info.channel_format() == pylsl.cf_float32
    assert info.nominal_srate() == 250.0
    channel = info.desc().child("channels").child("channel")
    labels, units = [], []
    while not channel.empty():
        labels.append(channel.child_value("label"))
        units.append(channel.child_value("unit"))
        channel = channel.next_sibling()
    assert labels[:2] == ["Fz", "C3"] and labels[-1] == "Marker"
    assert set(units[:-1]) == {"microvolts"}
    assert info.desc().child("participant").child_value("id") == "sub-B"
    assert info.desc().child("participant").child_value("role") == "partner"
    device = info.desc().child("device")
    assert device.child_value("board") == "synthetic"
    assert device.child_value("board_id") == "-1"
    assert device.child_value("brainflow_version")
    assert aux_data.shape[1] == 13


def test_markers_reach_the_marker_channel(unique_id: str) -> None:
    with _bridge(BrainFlowSource(participant=f"mk-{unique_id}"), unique_id) as bridge:
        inlet = open_inlet(bridge.source_id)
        time.sleep(0.3)
        for code in (3, 6, 12):
            bridge.insert_marker(code)
            time.sleep(0.1)
        data, _ = pull_for(inlet, 1.0)
    assert list(data[:, -1][data[:, -1] != 0]) == [3, 6, 12]


def test_status_reports_rate_samples_and_age(unique_id: str) -> None:
    with _bridge(BrainFlowSource(participant=f"st-{unique_id}"), unique_id, rate_window=1.0) as bridge:
        time.sleep(2.0)
        status = bridge.status
    assert status.state is BridgeState.STREAMING
    assert status.samples > 250
    assert 150 < status.rate < 350
    assert status.last_sample_age is not None and status.last_sample_age < 1.0
    assert status.dropped_packets == 0 and status.stalls == 0
    assert bridge.status.state is BridgeState.STOPPED


class DroppingSource:
    """A real synthetic board whose link loses given packets (fault injection: a synthetic board
    never loses packets, and a radio link cannot be made to lose them on purpose)."""

    def __init__(self, inner: BrainFlowSource, lose: set[int]) -> None:
        self.inner = inner
        self.lose = lose
        self.seen = 0
        self.sampling_rate = inner.sampling_rate
        self.eeg_channel_names = inner.eeg_channel_names
        self.aux_channel_names = inner.aux_channel_names
        self.description = inner.description

    def read(self) -> SourceChunk:
        chunk = self.inner.read()
        index = self.seen + np.arange(chunk.n_samples)
        self.seen += chunk.n_samples
        keep = ~np.isin(index, list(self.lose))
        return SourceChunk(
            eeg=chunk.eeg[:, keep],
            aux=chunk.aux[:, keep],
            timestamps=chunk.timestamps[keep],
            markers=chunk.markers[keep],
            package_num=None if chunk.package_num is None else chunk.package_num[keep],
        )

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_dropped_packets_are_counted_across_chunks_and_wraps(unique_id: str) -> None:
    lost = {100, 101, 102, 300, 600}  # the counter wraps at 256 between them
    source = DroppingSource(BrainFlowSource(participant=f"drop-{unique_id}"), lost)
    with _bridge(source, unique_id) as bridge:
        deadline = time.monotonic() + 10
        while source.seen < 700 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = bridge.status
    assert source.seen >= 700
    assert status.dropped_packets == len(lost)


def test_bad_configuration_fails_before_any_outlet_exists(unique_id: str) -> None:
    bridge = _bridge(BrainFlowSource(BoardSpec(board="cyton", serial_port="/dev/ttyDYADLAB-NONE")), unique_id)
    with pytest.raises(SourceConfigError, match="UNABLE_TO_OPEN_PORT_ERROR"):
        bridge.start()
    assert pylsl.resolve_byprop("source_id", bridge.source_id, timeout=1.0) == []
    assert not bridge.running
    bridge.stop()  # harmless after a failed start


def test_two_synthetic_bridges_and_release_on_error(unique_id: str) -> None:
    spec_a = BoardSpec(serial_number=f"err-A-{unique_id}")
    spec_b = BoardSpec(serial_number=f"err-B-{unique_id}")
    with pytest.raises(RuntimeError, match="task crashed"):
        with ExitStack() as stack:
            a = stack.enter_context(_bridge(BrainFlowSource(spec_a), unique_id, "A"))
            b = stack.enter_context(_bridge(BrainFlowSource(spec_b), unique_id, "B"))
            time.sleep(0.5)
            assert a.status.samples > 0 and b.status.samples > 0
            raise RuntimeError("task crashed")
    assert a.status.state is b.status.state is BridgeState.STOPPED
    # Both sessions were released: the same identities open again.
    with BrainFlowSource(spec_a), BrainFlowSource(spec_b):
        pass


def test_invalid_bridge_settings_are_rejected(unique_id: str) -> None:
    source = BrainFlowSource(participant=f"bad-{unique_id}")
    with pytest.raises(ValueError, match="poll_interval"):
        _bridge(source, unique_id, poll_interval=0.5, stall_timeout=0.2)
    with pytest.raises(ValueError, match="reconnect_backoff"):
        _bridge(source, unique_id, reconnect_backoff=())
    with pytest.raises(ValueError, match="Dyad 'bad dyad'"):
        BoardBridge(source, study="s", dyad="bad dyad", participant=ParticipantInfo("A", "x"))


# -- dyadlab stream (subprocess, real boards, real LSL; LSLAPICFG is inherited from conftest) --


def _dyadlab(*args: str) -> list[str]:
    return [sys.executable, "-c", "from dyadlab.protocols.cli import main; main()", "stream", *args]


def test_stream_command_streams_two_synthetic_boards_and_stops_on_ctrl_c(unique_id: str) -> None:
    dyad = f"c{unique_id}"
    process = subprocess.Popen(
        _dyadlab("--study", "clitest", "--dyad", dyad),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        inlets = [open_inlet(f"dyadlab.clitest.{dyad}.{label}.eeg") for label in ("A", "B")]
        for inlet in inlets:
            data, _ = pull_for(inlet, 0.5)
            assert data.shape[1] == 17
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"{dyad}-A-EEG:" in out and f"{dyad}-B-EEG:" in out
    assert out.count("board released") == 2
    assert "streaming" in err  # the live status table


def test_stream_command_rejects_a_bad_board_before_publishing(unique_id: str) -> None:
    dyad = f"c{unique_id}"
    result = subprocess.run(
        _dyadlab(
            "--dyad",
            dyad,
            "--board",
            "cyton",
            "--board-param",
            "B:serial_port=/dev/ttyDYADLAB-NONE",
            "--participant",
            "B",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "UNABLE_TO_OPEN_PORT_ERROR" in result.stderr and "/dev/ttyDYADLAB-NONE" in result.stderr
    unknown = subprocess.run(
        _dyadlab("--board", "cytonn", "--duration", "1"), capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "Valid board names" in unknown.stderr and "cyton_daisy" in unknown.stderr


def test_board_params_are_sorted_by_participant() -> None:
    from dyadlab.acquisition.cli.stream_command import split_board_params

    params = split_board_params(["timeout=5", "A:serial_port=/dev/ttyUSB0", "b:serial_port=/dev/ttyUSB1"], ["A", "B"])
    assert params == {"A": ["timeout=5", "serial_port=/dev/ttyUSB0"], "B": ["timeout=5", "serial_port=/dev/ttyUSB1"]}


def test_stream_command_simulate_streams_the_coupled_dyad(unique_id: str) -> None:
    dyad = f"s{unique_id}"
    result = subprocess.run(
        _dyadlab("--simulate", "--seed", "1", "--dyad", dyad, "--duration", "1.5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for label in ("A", "B"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{dyad}-{label}-EEG:"))
        samples = int(line.split(":")[1].split()[0])
        assert samples > 200, line
    assert "dyadlab-simulator" in result.stderr
