"""Any BrainFlow board as an :class:`~dyadlab.acquisition.sources.EegSource`.

A board is chosen by its BrainFlow name (``synthetic``, ``cyton_daisy``, ``unicorn``, ...; the
names of :class:`brainflow.board_shim.BoardIds`, case-insensitive, ``_board`` optional) plus the
connection parameters BrainFlow needs for it (serial port, MAC or IP address, serial number...).

Units
-----
BrainFlow's convention is that its boards' EEG rows are in microvolts (each driver scales the
ADC counts, e.g. Cyton by its gain), so EEG rows are passed through unscaled and the stream
declares ``microvolts``. The convention is the driver's: a board whose values look 1000x off
(reported for a Neurosity Notion in EEG-ExPy pull request 114) needs checking against the
vendor's software before a study. Aux rows keep the board's own units (accelerometer in g,
battery in %, temperature in °C...).

Two boards of one kind in one process
-------------------------------------
BrainFlow keys open boards by ``(board_id, all connection parameters)``: two boards with equal
parameters collide (``ANOTHER_BOARD_IS_CREATED_ERROR``). Real boards differ by their serial port,
MAC address or serial number, which the lab must set. Synthetic boards have no identity, so when
neither ``serial_number`` nor ``other_info`` is set, :class:`BrainFlowSource` sets
``serial_number`` to ``dyadlab-<participant>`` (or a process-unique ``dyadlab-synthetic-<n>``);
the synthetic board ignores the field otherwise.

BrainFlow also serialises every call of every board in a process behind one lock, and opening a
board that does not answer holds it for seconds (about 6 s for a switched-off Cyton). While one
participant's board is being reconnected, the other's data therefore arrives late (none is lost:
BrainFlow keeps acquiring into its ring buffer, stamped at acquisition), and its markers are
queued and inserted, in order, as soon as the lock is free (a warning says how late); the LSL
marker stream keeps the exact times. Labs with unreliable wireless amplifiers can avoid the
coupling altogether by running one ``dyadlab stream --participant X`` process per amplifier.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from brainflow.board_shim import (
    BoardIds,
    BoardShim,
    BrainFlowError,
    BrainFlowInputParams,
    BrainFlowPresets,
    IpProtocolTypes,
)
from brainflow.exit_codes import BrainFlowExitCodes
from pydantic import BaseModel, ConfigDict, field_validator

from dyadlab.acquisition.clock import UnixToLslClock
from dyadlab.acquisition.sources import (
    SourceChunk,
    SourceConfigError,
    SourceDisconnectedError,
    SourceError,
)

logger = logging.getLogger(__name__)


# Board-description keys whose rows go to the AUX stream (everything else but EEG is dropped:
# ECG/EMG/EOG alias the EEG rows, "other" rows are undocumented board internals).
AUX_ROW_KINDS: tuple[str, ...] = (
    "accel",
    "gyro",
    "magnetometer",
    "rotation",
    "battery",
    "temperature",
    "ppg",
    "eda",
    "optical",
    "analog",
    "resistance",
)
_AXES = ("x", "y", "z")
_PRESETS = {"default": "DEFAULT_PRESET", "auxiliary": "AUXILIARY_PRESET", "ancillary": "ANCILLARY_PRESET"}
_IP_PROTOCOLS = {"none": "NO_IP_PROTOCOL", "udp": "UDP", "tcp": "TCP"}
_UNUSABLE_BOARDS = {"NO_BOARD"}

# What each BrainFlow exit code means for the person at the amplifier.
_EXIT_CODE_HINTS: dict[int, str] = {
    BrainFlowExitCodes.PORT_ALREADY_OPEN_ERROR.value: (
        "the serial port is already open: close the OpenBCI GUI or any other program using it"
    ),
    BrainFlowExitCodes.UNABLE_TO_OPEN_PORT_ERROR.value: (
        "the serial port cannot be opened: check serial_port (Linux /dev/ttyUSB0, macOS "
        "/dev/cu.usbserial-*, Windows COM3), that the dongle is plugged in, and that you may use it "
        "(Linux: add yourself to the 'dialout' group)"
    ),
    BrainFlowExitCodes.SER_PORT_ERROR.value: "the serial port could not be configured: check serial_port",
    BrainFlowExitCodes.BOARD_WRITE_ERROR.value: "writing to the board failed: check the connection and power",
    BrainFlowExitCodes.INCOMMING_MSG_ERROR.value: "the board sent unexpected data: power-cycle it and retry",
    BrainFlowExitCodes.INITIAL_MSG_ERROR.value: "the board did not greet as expected: power-cycle it and retry",
    BrainFlowExitCodes.BOARD_NOT_READY_ERROR.value: (
        "the board did not answer: switch it on, check its battery, the dongle's switch, and that "
        "serial_port / mac_address / ip_address point to it"
    ),
    BrainFlowExitCodes.STREAM_ALREADY_RUN_ERROR.value: "the board is already streaming",
    BrainFlowExitCodes.INVALID_BUFFER_SIZE_ERROR.value: "the ring buffer size is invalid",
    BrainFlowExitCodes.STREAM_THREAD_ERROR.value: "BrainFlow's streaming thread failed to start",
    BrainFlowExitCodes.STREAM_THREAD_IS_NOT_RUNNING.value: "the board stopped streaming",
    BrainFlowExitCodes.EMPTY_BUFFER_ERROR.value: "no data arrived from the board",
    BrainFlowExitCodes.INVALID_ARGUMENTS_ERROR.value: (
        "a connection parameter is missing or wrong for this board (see BrainFlow's "
        "SupportedBoards page for which of serial_port, mac_address, ip_address... it needs)"
    ),
    BrainFlowExitCodes.UNSUPPORTED_BOARD_ERROR.value: "this board is not supported on this system",
    BrainFlowExitCodes.BOARD_NOT_CREATED_ERROR.value: "the board session is not open",
    BrainFlowExitCodes.ANOTHER_BOARD_IS_CREATED_ERROR.value: (
        "another board with the same kind and the same connection parameters is already open in "
        "this process: give each board its own serial_port, mac_address or serial_number"
    ),
    BrainFlowExitCodes.GENERAL_ERROR.value: "BrainFlow reported a general error (see its log: above, or in the session log of `dyadlab run`)",
    BrainFlowExitCodes.SYNC_TIMEOUT_ERROR.value: (
        "the board did not answer in time: check that it is on and in range, or raise timeout"
    ),
}


def board_names() -> list[str]:
    """The board names :class:`BoardSpec` accepts, e.g. ``synthetic``, ``cyton_daisy``, ``unicorn``."""
    return sorted(_short_name(member.name) for member in BoardIds if member.name not in _UNUSABLE_BOARDS)


def _short_name(enum_name: str) -> str:
    name = enum_name.lower()
    return name[: -len("_board")] if name.endswith("_board") else name


def _board_id_from_name(name: str) -> int:
    wanted = name.strip().lower().replace("-", "_").replace(" ", "_")
    for member in BoardIds:
        if member.name in _UNUSABLE_BOARDS:
            continue
        if wanted in (member.name.lower(), _short_name(member.name)):
            return int(member.value)
    raise ValueError(f"Unknown BrainFlow board {name!r}. Valid board names: {', '.join(board_names())}.")


def brainflow_version() -> str:
    """The version of BrainFlow's native board controller."""
    return str(BoardShim.get_version())


def explain_brainflow_error(error: Exception) -> str:
    """A sentence saying what a :class:`BrainFlowError` means and how to fix it."""
    code = getattr(error, "exit_code", None)
    if code is None:
        return str(error)
    try:
        code_name = BrainFlowExitCodes(code).name
    except ValueError:
        code_name = f"code {code}"
    hint = _EXIT_CODE_HINTS.get(int(code), "see BrainFlow's log: above, or in the session log of `dyadlab run`")
    return f"BrainFlow error {code_name} ({code}): {hint}"


class BoardSpec(BaseModel):
    """Which BrainFlow board to open and how to reach it.

    Connection fields are BrainFlow's ``BrainFlowInputParams``; leave those the board does not
    use at their defaults. Which board needs which field is listed on BrainFlow's
    SupportedBoards documentation page (e.g. Cyton: ``serial_port``; Unicorn: ``serial_number``
    optional; Muse BLED: ``serial_port`` of the dongle; ANT: ``serial_number``).

    Parameters
    ----------
    board : str
        BrainFlow board name, case-insensitive: ``synthetic`` (default), ``cyton``,
        ``cyton_daisy``, ``unicorn``, ``ganglion``, ``muse_s``... (see :func:`board_names`).
    serial_port, mac_address, ip_address, ip_port, ip_protocol, serial_number, other_info, timeout, file
        BrainFlow connection parameters. ``ip_protocol`` is ``none``, ``udp`` or ``tcp``.
    master_board : str | None
        For ``playback_file`` / ``streaming`` boards: the board that recorded the data.
    preset : str
        Which of the board's data presets to stream: ``default``, ``auxiliary`` or ``ancillary``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    board: str = "synthetic"
    serial_port: str = ""
    mac_address: str = ""
    ip_address: str = ""
    ip_port: int = 0
    ip_protocol: str = "none"
    serial_number: str = ""
    other_info: str = ""
    timeout: int = 0
    file: str = ""
    master_board: str | None = None
    preset: str = "default"

    @field_validator("board", "master_board")
    @classmethod
    def _known_board(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _short_name(BoardIds(_board_id_from_name(value)).name)

    @field_validator("ip_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in _IP_PROTOCOLS:
            raise ValueError(f"ip_protocol {value!r} is invalid: use {', '.join(_IP_PROTOCOLS)}.")
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in _PRESETS:
            raise ValueError(f"preset {value!r} is invalid: use {', '.join(_PRESETS)}.")
        return value

    @property
    def board_id(self) -> int:
        """BrainFlow's numeric board id."""
        return _board_id_from_name(self.board)

    @property
    def descriptor_board_id(self) -> int:
        """The board whose channel layout the data has (the master board for playback/streaming)."""
        return self.board_id if self.master_board is None else _board_id_from_name(self.master_board)

    @property
    def preset_value(self) -> int:
        """BrainFlow's numeric preset."""
        return int(getattr(BrainFlowPresets, _PRESETS[self.preset]).value)

    @classmethod
    def from_cli(cls, board: str | None, params: tuple[str, ...] | list[str] = ()) -> BoardSpec:
        """Build a spec from ``--board NAME`` and ``--board-param key=value`` options."""
        fields: dict[str, str] = {}
        for item in params:
            key, separator, value = item.partition("=")
            if not separator or not key.strip():
                raise ValueError(f"Board parameter {item!r} is not key=value (e.g. serial_port=/dev/ttyUSB0).")
            fields[key.strip()] = value.strip()
        if board is not None:
            fields["board"] = board
        return cls(**fields)

    def input_params(self) -> Any:
        """The spec as BrainFlow's ``BrainFlowInputParams``."""
        params = BrainFlowInputParams()
        params.serial_port = self.serial_port
        params.mac_address = self.mac_address
        params.ip_address = self.ip_address
        params.ip_port = self.ip_port
        params.ip_protocol = int(IpProtocolTypes[_IP_PROTOCOLS[self.ip_protocol]].value)
        params.serial_number = self.serial_number
        params.other_info = self.other_info
        params.timeout = self.timeout
        params.file = self.file
        if self.master_board is not None:
            params.master_board = _board_id_from_name(self.master_board)
        return params


_synthetic_instance_numbers: Iterator[int] = itertools.count(1)
_open_sources: weakref.WeakSet[BrainFlowSource] = weakref.WeakSet()


class _SessionChanges:
    """Counts BrainFlow session changes in flight in this process.

    BrainFlow serialises every call of every board behind one process-wide lock, and opening a
    board that does not answer (switched off, out of range) holds it for seconds (about 6 s for a
    Cyton). Meanwhile ``insert_marker`` on the *other* board would block the task's flip callback.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1

    @property
    def busy(self) -> bool:
        return self._count > 0


class _DeferredMarkers:
    """Inserts, in order and from its own thread, markers that would wait for BrainFlow's lock."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[BrainFlowSource, float, float]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        return self._pending > 0

    def put(self, source: BrainFlowSource, code: float) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="brainflow-deferred-markers", daemon=True)
                self._thread.start()
        self._queue.put((source, code, time.monotonic()))

    def _run(self) -> None:
        while True:
            source, code, queued_at = self._queue.get()
            try:
                source._insert_now(code)
            except SourceError as error:
                logger.warning("Marker %g was not inserted into board %s: %s", code, source.spec.board, error)
            else:
                logger.warning(
                    "Marker %g reached board %s %.3f s late: another board's connection attempt held "
                    "BrainFlow's process-wide lock (the LSL marker stream has the exact time).",
                    code,
                    source.spec.board,
                    time.monotonic() - queued_at,
                )
            finally:
                with self._lock:
                    self._pending -= 1


_session_changes = _SessionChanges()
_deferred_markers = _DeferredMarkers()


@atexit.register
def _release_open_sources() -> None:
    """Release board sessions still open at interpreter exit (BrainFlow's ``__del__`` may fail then)."""
    for source in list(_open_sources):
        source.release()


class BrainFlowSource:
    """One BrainFlow board as an :class:`~dyadlab.acquisition.sources.EegSource`.

    Parameters
    ----------
    spec : BoardSpec
        The board and its connection parameters.
    participant : str | None
        The participant label; gives a synthetic board its identity (see the module docstring).
    buffer_size : int
        BrainFlow's ring buffer, in samples; data older than that is lost if not read.
    clock : UnixToLslClock | None
        The timestamp conversion; a fresh one by default.

    Attributes
    ----------
    sampling_rate : float
        The board's nominal rate, Hz.
    eeg_channel_names : list of str
        EEG channel labels (BrainFlow's ``eeg_names`` or ``EEG1..n`` when the board has none).
    aux_channel_names : list of str
        Labels of the aux rows (``accel_x``, ``battery``, ...); empty if the board has none.
    description : dict
        ``board``, ``board_id``, ``brainflow_version`` (and ``preset``).
    """

    def __init__(
        self,
        spec: BoardSpec | None = None,
        *,
        participant: str | None = None,
        buffer_size: int = 450_000,
        clock: UnixToLslClock | None = None,
    ) -> None:
        spec = spec or BoardSpec()
        if spec.board == "synthetic" and not spec.serial_number and not spec.other_info:
            tag = participant if participant is not None else f"synthetic-{next(_synthetic_instance_numbers)}"
            spec = spec.model_copy(update={"serial_number": f"dyadlab-{tag}"})
        self.spec = spec
        self._buffer_size = buffer_size
        self._clock = clock
        self._lock = threading.RLock()
        self._board: Any = None
        self._streaming = False

        layout = self._board_layout(spec)
        self.sampling_rate = float(layout["sampling_rate"])
        self._eeg_rows: list[int] = list(layout["eeg_channels"])
        names = layout.get("eeg_names")
        self.eeg_channel_names = names.split(",") if names else [f"EEG{i + 1}" for i in range(len(self._eeg_rows))]
        if len(self.eeg_channel_names) != len(self._eeg_rows):
            self.eeg_channel_names = [f"EEG{i + 1}" for i in range(len(self._eeg_rows))]
        self._aux_rows, self.aux_channel_names = self._aux_layout(layout, set(self._eeg_rows))
        self._timestamp_row = int(layout["timestamp_channel"])
        self._marker_row = int(layout["marker_channel"])
        self._package_row: int | None = layout.get("package_num_channel")
        self.description = {
            "board": spec.board,
            "board_id": str(spec.board_id),
            "board_model": str(layout.get("name", spec.board)),
            "preset": spec.preset,
            "brainflow_version": brainflow_version(),
        }

    @staticmethod
    def _board_layout(spec: BoardSpec) -> dict[str, Any]:
        layout_id = spec.descriptor_board_id
        if spec.board in ("playback_file", "streaming") and spec.master_board is None:
            raise SourceConfigError(
                f"Board {spec.board!r} replays another board's data: set master_board to the board "
                "that recorded it (e.g. --board-param master_board=synthetic)."
            )
        try:
            presets = [int(p) for p in BoardShim.get_board_presets(layout_id)]
        except BrainFlowError as error:
            raise SourceConfigError(
                f"Cannot read the layout of board {spec.board!r}: {explain_brainflow_error(error)}."
            ) from error
        if spec.preset_value not in presets:
            names = [name for name, attr in _PRESETS.items() if int(getattr(BrainFlowPresets, attr).value) in presets]
            raise SourceConfigError(f"Board {spec.board!r} has no {spec.preset!r} preset; it has: {', '.join(names)}.")
        layout = dict(BoardShim.get_board_descr(layout_id, spec.preset_value))
        if not layout.get("eeg_channels"):
            raise SourceConfigError(
                f"Board {spec.board!r} (preset {spec.preset!r}) has no EEG channels; dyadlab streams EEG. "
                "Choose an EEG board or its EEG preset (usually 'default')."
            )
        return layout

    @staticmethod
    def _aux_layout(layout: dict[str, Any], eeg_rows: set[int]) -> tuple[list[int], list[str]]:
        rows: list[int] = []
        names: list[str] = []
        for kind in AUX_ROW_KINDS:
            if f"{kind}_channel" in layout:
                kind_rows = [int(layout[f"{kind}_channel"])]
            else:
                kind_rows = [int(r) for r in layout.get(f"{kind}_channels", [])]
            kind_rows = [r for r in kind_rows if r not in eeg_rows and r not in rows]
            if len(kind_rows) == 1:
                labels = [kind]
            elif len(kind_rows) == 3 and kind in ("accel", "gyro", "magnetometer"):
                labels = [f"{kind}_{axis}" for axis in _AXES]
            else:
                labels = [f"{kind}_{i + 1}" for i in range(len(kind_rows))]
            rows += kind_rows
            names += labels
        return rows, names

    @property
    def is_prepared(self) -> bool:
        """Whether a board session is open."""
        return self._board is not None

    def prepare(self) -> None:
        """Open the board session; a wrong configuration raises :class:`SourceConfigError`."""
        with self._lock:
            if self._board is not None:
                return
            board = BoardShim(self.spec.board_id, self.spec.input_params())
            try:
                with _session_changes.running():
                    board.prepare_session()
            except BrainFlowError as error:
                raise SourceConfigError(
                    f"Could not open BrainFlow board {self.spec.board!r} "
                    f"({self._connection_summary()}): {explain_brainflow_error(error)}."
                ) from error
            self._board = board
            _open_sources.add(self)
            logger.info("BrainFlow board %s opened (%s)", self.spec.board, self._connection_summary())

    def _connection_summary(self) -> str:
        fields = self.spec.model_dump(exclude_defaults=True, exclude={"board"})
        return ", ".join(f"{k}={v}" for k, v in fields.items()) or "default parameters"

    def start(self) -> None:
        """Start streaming into BrainFlow's ring buffer."""
        with self._lock:
            if self._board is None:
                raise SourceError(f"Board {self.spec.board!r}: call prepare() before start().")
            if self._streaming:
                return
            if self._clock is None:
                self._clock = UnixToLslClock()
            try:
                with _session_changes.running():
                    self._board.start_stream(self._buffer_size)
            except BrainFlowError as error:
                raise SourceError(
                    f"Board {self.spec.board!r} did not start streaming: {explain_brainflow_error(error)}."
                ) from error
            self._streaming = True

    def read(self) -> SourceChunk:
        """Drain what BrainFlow buffered since the last read, timestamps on ``local_clock()``.

        Raises
        ------
        SourceDisconnectedError
            BrainFlow failed to hand over data (the session broke).
        """
        with self._lock:
            if self._board is None or not self._streaming:
                raise SourceError(f"Board {self.spec.board!r} is not streaming: call prepare() and start().")
            try:
                data = self._board.get_board_data(preset=self.spec.preset_value)
            except BrainFlowError as error:
                raise SourceDisconnectedError(
                    f"Board {self.spec.board!r} stopped delivering: {explain_brainflow_error(error)}."
                ) from error
            clock = self._clock
        # Converted outside the lock, so that insert_marker() from the task never waits for it.
        assert clock is not None
        if data.shape[1] == 0:
            return SourceChunk.empty(len(self._eeg_rows), len(self._aux_rows))
        timestamps = clock.to_lsl(data[self._timestamp_row])
        return SourceChunk(
            eeg=data[self._eeg_rows],
            aux=data[self._aux_rows],
            timestamps=timestamps,
            markers=data[self._marker_row],
            package_num=None if self._package_row is None else data[int(self._package_row)],
        )

    def insert_marker(self, code: float) -> None:
        """Tag the next sample BrainFlow parses with ``code`` (non-zero); never blocks for long.

        While another board of this process is being opened or closed (a reconnection), BrainFlow
        would make this call wait for seconds; the marker is then inserted, in order, by a
        background thread as soon as BrainFlow lets it, and a warning says how late it landed.

        Raises
        ------
        SourceError
            This board is not streaming (e.g. it is itself reconnecting): the marker is lost.
        """
        if code == 0:
            raise ValueError("Marker code 0 means 'no marker' in the board channel; use a non-zero code.")
        if self._board is None or not self._streaming:
            raise SourceError(f"Board {self.spec.board!r} is not streaming; marker {code:g} not inserted.")
        if _session_changes.busy or _deferred_markers.pending:
            _deferred_markers.put(self, float(code))
            return
        self._insert_now(float(code))

    def _insert_now(self, code: float) -> None:
        with self._lock:
            if self._board is None or not self._streaming:
                raise SourceError(f"Board {self.spec.board!r} is not streaming; marker {code:g} not inserted.")
            try:
                self._board.insert_marker(code, self.spec.preset_value)
            except BrainFlowError as error:
                raise SourceError(
                    f"Board {self.spec.board!r} refused marker {code:g}: {explain_brainflow_error(error)}."
                ) from error

    def stop(self) -> None:
        """Stop streaming; idempotent."""
        with self._lock:
            if self._board is None or not self._streaming:
                return
            self._streaming = False
            try:
                with _session_changes.running():
                    self._board.stop_stream()
            except BrainFlowError as error:
                logger.warning("Board %s: stop_stream failed: %s", self.spec.board, explain_brainflow_error(error))

    def release(self) -> None:
        """Stop and close the board session; idempotent, safe after any failure."""
        with self._lock:
            self.stop()
            board, self._board = self._board, None
            _open_sources.discard(self)
            if board is None:
                return
            try:
                with _session_changes.running():
                    board.release_session()
            except BrainFlowError as error:
                logger.warning("Board %s: release_session failed: %s", self.spec.board, explain_brainflow_error(error))
            else:
                logger.info("BrainFlow board %s released", self.spec.board)

    def __enter__(self) -> BrainFlowSource:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"BrainFlowSource({self.spec.board!r}, {self._connection_summary()})"


__all__ = [
    "AUX_ROW_KINDS",
    "BoardSpec",
    "BrainFlowSource",
    "board_names",
    "brainflow_version",
    "explain_brainflow_error",
]
