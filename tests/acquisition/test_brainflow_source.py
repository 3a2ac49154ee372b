"""BrainFlowSource and BoardSpec with real BrainFlow synthetic boards (and a real Cyton driver
pointed at a serial port that does not exist, which is how a lab's misconfiguration looks)."""

from __future__ import annotations

import time

import numpy as np
import pydantic
import pylsl
import pytest

from dyadlab.acquisition.brainflow_source import BoardSpec, BrainFlowSource, board_names
from dyadlab.acquisition.sources import EegSource, SourceConfigError, SourceError

pytestmark = pytest.mark.integration


def _wait_for_samples(source: BrainFlowSource, n: int, timeout: float = 5.0) -> list:
    chunks = []
    deadline = time.monotonic() + timeout
    total = 0
    while total < n and time.monotonic() < deadline:
        time.sleep(0.05)
        chunk = source.read()
        chunks.append(chunk)
        total += chunk.n_samples
    assert total >= n, f"only {total} samples in {timeout} s"
    return chunks


@pytest.mark.parametrize("name", ["synthetic", "SYNTHETIC", "Synthetic_Board", "cyton-daisy", "UNICORN"])
def test_board_names_are_case_insensitive(name: str) -> None:
    spec = BoardSpec(board=name)
    assert spec.board in board_names()


def test_unknown_board_name_lists_the_valid_ones() -> None:
    with pytest.raises(pydantic.ValidationError) as excinfo:
        BoardSpec(board="cytonn")
    message = str(excinfo.value)
    assert "Unknown BrainFlow board 'cytonn'" in message
    for valid in ("synthetic", "cyton_daisy", "unicorn"):
        assert valid in message


def test_unknown_connection_parameter_is_rejected() -> None:
    with pytest.raises(ValueError, match="serial_prot"):
        BoardSpec.from_cli("cyton", ["serial_prot=/dev/ttyUSB0"])
    with pytest.raises(ValueError, match="key=value"):
        BoardSpec.from_cli("cyton", ["/dev/ttyUSB0"])
    spec = BoardSpec.from_cli("cyton", ["serial_port=/dev/ttyUSB0", "timeout=5"])
    assert (spec.serial_port, spec.timeout) == ("/dev/ttyUSB0", 5)


def test_synthetic_layout_units_and_description() -> None:
    source = BrainFlowSource(participant="layout")
    assert isinstance(source, EegSource)
    assert source.sampling_rate == 250.0
    assert source.eeg_channel_names[:3] == ["Fz", "C3", "Cz"] and len(source.eeg_channel_names) == 16
    assert source.aux_channel_names[:3] == ["accel_x", "accel_y", "accel_z"]
    assert "battery" in source.aux_channel_names
    assert source.description["board"] == "synthetic"
    assert source.description["board_id"] == "-1"
    assert source.description["brainflow_version"].count(".") >= 1


def test_board_without_eeg_rows_is_refused() -> None:
    with pytest.raises(SourceConfigError, match="no EEG channels"):
        BrainFlowSource(BoardSpec(board="synthetic", preset="auxiliary"))


def test_reads_drain_with_local_clock_stamps_markers_and_package_numbers() -> None:
    with BrainFlowSource(participant="read-test") as source:
        source.start()
        time.sleep(0.2)
        source.insert_marker(7)
        chunks = _wait_for_samples(source, 250)
        lsl_now = pylsl.local_clock()
        source.stop()
    stamps = np.concatenate([c.timestamps for c in chunks])
    markers = np.concatenate([c.markers for c in chunks])
    packages = np.concatenate([c.package_num for c in chunks])
    eeg = np.concatenate([c.eeg for c in chunks], axis=1)
    assert eeg.shape[0] == 16 and eeg.shape[1] == stamps.size
    assert np.concatenate([c.aux for c in chunks], axis=1).shape == (13, stamps.size)
    # On local_clock, not Unix time, increasing, and fresh.
    assert abs(stamps[-1] - lsl_now) < 0.5
    assert abs(stamps[-1] - time.time()) > 1e6
    assert np.all(np.diff(stamps) > 0)
    assert list(markers[markers != 0]) == [7.0]
    assert np.all(np.diff(packages) % 256 == 1)
    # The synthetic board's EEG is tens of µV (microvolts, not volts).
    assert 1.0 < float(np.std(eeg)) < 1000.0


def test_two_synthetic_boards_in_one_process() -> None:
    with BrainFlowSource(participant="pair-A") as a, BrainFlowSource(participant="pair-B") as b:
        assert a.spec.serial_number != b.spec.serial_number
        a.start()
        b.start()
        chunks_a = _wait_for_samples(a, 100)
        chunks_b = _wait_for_samples(b, 100)
    assert sum(c.n_samples for c in chunks_a) >= 100 and sum(c.n_samples for c in chunks_b) >= 100


def test_same_synthetic_identity_twice_explains_how_to_fix() -> None:
    spec = BoardSpec(serial_number="same-board")
    with BrainFlowSource(spec):
        second = BrainFlowSource(spec)
        with pytest.raises(SourceConfigError, match="ANOTHER_BOARD_IS_CREATED_ERROR.*serial_number"):
            second.prepare()
        second.release()


def test_bad_serial_port_fails_in_prepare_with_an_actionable_message() -> None:
    source = BrainFlowSource(BoardSpec(board="cyton", serial_port="/dev/ttyDYADLAB-NO-SUCH-PORT"))
    with pytest.raises(SourceConfigError) as excinfo:
        source.prepare()
    message = str(excinfo.value)
    assert "UNABLE_TO_OPEN_PORT_ERROR" in message and "/dev/ttyDYADLAB-NO-SUCH-PORT" in message
    assert "dialout" in message
    assert not source.is_prepared
    source.release()  # idempotent after a failed prepare


def test_missing_serial_port_is_explained() -> None:
    with pytest.raises(SourceConfigError, match="INVALID_ARGUMENTS_ERROR"):
        BrainFlowSource(BoardSpec(board="cyton")).prepare()


def test_lifecycle_errors_and_idempotent_release() -> None:
    source = BrainFlowSource(participant="lifecycle")
    with pytest.raises(SourceError, match="prepare"):
        source.start()
    with pytest.raises(SourceError, match="not streaming"):
        source.read()
    source.prepare()
    source.prepare()  # no second session
    with pytest.raises(SourceError, match="not streaming"):
        source.insert_marker(3)
    with pytest.raises(ValueError, match="non-zero"):
        source.insert_marker(0)
    source.start()
    source.stop()
    source.stop()
    source.release()
    source.release()
    # Released means released: the same identity can be opened again.
    with BrainFlowSource(source.spec) as again:
        again.start()
        _wait_for_samples(again, 10)


def test_release_on_exception_inside_the_context() -> None:
    spec = BoardSpec(serial_number="released-on-error")
    with pytest.raises(RuntimeError, match="boom"):
        with BrainFlowSource(spec) as source:
            source.start()
            raise RuntimeError("boom")
    assert not source.is_prepared
    with BrainFlowSource(spec):  # would be ANOTHER_BOARD_IS_CREATED_ERROR if still open
        pass


def test_playback_board_needs_its_master_board() -> None:
    with pytest.raises(SourceConfigError, match="master_board"):
        BrainFlowSource(BoardSpec(board="playback_file", file="x.csv"))


def test_newest_sample_is_stamped_just_before_it_was_read() -> None:
    """A converted stamp is never in the future and, for a 250 Hz board read every 50 ms, fresh."""
    with BrainFlowSource(participant="fresh") as source:
        source.start()
        ages = []
        for _ in range(10):
            time.sleep(0.05)
            chunk = source.read()
            read_at = pylsl.local_clock()
            if chunk.n_samples:
                ages.append(read_at - chunk.timestamps[-1])
    assert len(ages) >= 5
    assert min(ages) >= -0.001, f"a sample stamped in the future: ages {ages}"
    assert np.median(ages) < 0.1, f"stale stamps: ages {ages}"
