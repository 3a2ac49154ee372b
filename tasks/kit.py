"""The task kit: what every paradigm runs on.

A :class:`TaskContext` owns, for one session, the task window(s), the flip-locked marker path,
per-participant key input (with the operator's abort and pause keys), the response stream, the
behavioural data file (PsychoPy ``ExperimentHandler``) and, when piloting, the autopilot.

Markers
-------
``ctx.mark_on_next_flip(marker)`` queues a marker; the next ``ctx.flip()`` registers
``hub.push(marker)`` with ``win.callOnFlip`` on the primary window, so the LSL stamp is a
``local_clock()`` read inside PsychoPy's flip, right after the buffer swap. PsychoPy's own times
(flip returns, key-down times) never enter LSL unconverted: key-down times are converted with a
measured offset (:mod:`dyadlab.tasks.timing`) for the response stream.

Operator keys
-------------
``escape`` (or :meth:`TaskContext.request_abort` from any thread) aborts: an ``abort`` marker, then ``block_end`` (``value="aborted"``) for the running
block, the behavioural CSV is saved, and :class:`SessionAborted` propagates to the caller.
``f9`` pauses: a ``pause`` marker on the pause screen's flip, ``resume`` on the first task flip
after ``f9`` is pressed again; timed screens are extended by the pause.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dyadlab import DyadlabError
from dyadlab.acquisition.markers import Marker, MarkerHub, MarkerOutlet
from dyadlab.tasks.autopilot import Autopilot, AutopilotSettings
from dyadlab.tasks.display import DisplaySettings, SessionDisplay, View
from dyadlab.tasks.input import KeyPress, KeyReader, KeySettings, open_key_reader
from dyadlab.tasks.texts import DEFAULT_TEXTS
from dyadlab.tasks.timing import PsychopyToLslClock

if TYPE_CHECKING:
    from psychopy import data as psychopy_data

logger = logging.getLogger(__name__)

_CORNER_POS = {
    "top-left": (-1, 1),
    "top-right": (1, 1),
    "bottom-left": (-1, -1),
    "bottom-right": (1, -1),
}
_PATCH_SIZE = 0.06
_SWITCH_INTERVAL_S = 0.0005
_OPERATOR_ABORT = "operator pressed the abort key"


class PsychoPyImportError(DyadlabError, ImportError):
    """PsychoPy is not installed, or is installed but fails to import (the message names why)."""


def require_psychopy() -> None:
    """Import the PsychoPy modules the task kit uses, or raise :class:`PsychoPyImportError`.

    A session calls it before any device or file exists: a PsychoPy that is missing, or that
    fails to import (typically a system library that pyglet or PsychoPy loads is missing), is
    reported with the underlying error instead of failing once the recording runs.
    """
    try:
        import psychopy.core
        import psychopy.data
        import psychopy.hardware.keyboard
        import psychopy.visual  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name == "psychopy":
            raise PsychoPyImportError(
                "PsychoPy is not installed, and the task windows need it: pip install 'dyadlab[tasks]'"
            ) from error
        raise PsychoPyImportError(_broken_psychopy(error)) from error
    except (ImportError, OSError) as error:  # OSError: a shared library that ctypes could not load
        raise PsychoPyImportError(_broken_psychopy(error)) from error


def _broken_psychopy(error: BaseException) -> str:
    return (
        f"PsychoPy is installed but cannot be imported: {type(error).__name__}: {error}. A system library it "
        "loads may be missing (Debian/Ubuntu: libgl1, libglu1-mesa, libegl1, libgtk-3-0...; `make system-deps` in "
        "the dyadlab repository installs them); `python -c 'import psychopy.visual'` shows the whole traceback."
    )


class SessionAborted(Exception):
    """The session was aborted: the operator pressed Escape, or :meth:`TaskContext.request_abort`.

    When this reaches the caller, the ``abort`` marker and the running block's ``block_end``
    (``value="aborted"``) have been pushed and the behavioural CSV has been saved; the caller
    still stops the recording, pushes ``session_end`` (``value="aborted"``) and closes the context.
    """


@dataclass(frozen=True)
class Response:
    """A participant's key press as the task sees it.

    Attributes
    ----------
    participant : str
    key : str
    t_down : float
        Key-down time, PsychoPy clock.
    lsl_time : float
        Key-down time on ``local_clock()`` (the response stream's stamp).
    rt : float | None
        Seconds from the current RT origin (the last flip marked ``rt_origin=True``) to key-down;
        negative for a press before it, ``None`` when the block has no origin yet.
    device : str | None
        The participant's own device that sent it (``None``: the shared keyboard).
    """

    participant: str
    key: str
    t_down: float
    lsl_time: float
    rt: float | None
    device: str | None = None


@dataclass(frozen=True)
class Frame:
    """One flip: its time and the presses read after it.

    Attributes
    ----------
    flip_time : float
        PsychoPy-clock time of the primary window's flip.
    responses : list of Response
        Participant presses.
    operator_keys : list of str
        Other keys pressed (e.g. the operator's proceed key); abort and pause never appear.
    """

    flip_time: float
    responses: list[Response]
    operator_keys: list[str] = field(default_factory=list)


@dataclass
class MarkedFlip:
    """A flip that carried markers (kept in ``TaskContext.flip_log`` for timing checks).

    Attributes
    ----------
    flip_time : float
        PsychoPy-clock time ``win.flip()`` returned for the primary window.
    other_flip_times : list of float
        The other windows' flip times (per-participant layout).
    markers : list of (Marker, float)
        Each marker with the LSL stamp ``hub.push`` gave it inside the flip.
    """

    flip_time: float
    other_flip_times: list[float]
    markers: list[tuple[Marker, float]] = field(default_factory=list)


@dataclass
class _Block:
    task: str
    block: str
    condition: str | None


class TaskContext:
    """Everything a paradigm needs for one session; create it once, run blocks, close it.

    Lifecycle: ``open()`` (windows, keyboard, autopilot, data file) → run blocks →
    ``close()`` (saves the CSV, stops the autopilot, closes the windows); or ``with``.

    Parameters
    ----------
    hub : MarkerHub
        The session marker stream (and board marker channels).
    responses : MarkerOutlet
        The session response stream.
    participants : mapping
        Participant label → role, in screen order, e.g. ``{"A": "therapist", "B": "patient"}``.
    data_stem : Path
        Behavioural data path without extension; the CSV is ``<data_stem>.csv``.
    display : DisplaySettings
    keys : KeySettings
        Must assign a key to every participant.
    autopilot : AutopilotSettings or None
        Simulated participants; ``None`` for real ones.
    seed : int or None
        Seed of the task's own randomisation (ITI jitter, computer partner).
    screenshot_dir : Path or None
        If set, each paradigm's main screens are saved there once as ``<task>_<screen>.png``
        (``_A`` / ``_B`` suffixes with one window per participant), written at each block end.
    experiment_info : mapping
        Extra columns for every CSV row (study, dyad, session...).
    preview : bool
        Review mode (``dyadlab preview``): every screen is shown for one frame and saved to
        ``screenshot_dir`` (unnamed screens are named after their marker), with ``_A`` / ``_B``
        files for a shared screen too, so the paradigm walks through all its screens in seconds
        without anyone pressing keys.
    """

    def __init__(
        self,
        hub: MarkerHub,
        responses: MarkerOutlet,
        participants: Mapping[str, str],
        data_stem: Path,
        display: DisplaySettings | None = None,
        keys: KeySettings | None = None,
        autopilot: AutopilotSettings | None = None,
        seed: int | None = None,
        screenshot_dir: Path | None = None,
        experiment_info: Mapping[str, Any] | None = None,
        preview: bool = False,
    ) -> None:
        self.keys = keys or KeySettings()
        missing = [label for label in participants if label not in self.keys.participants]
        if missing:
            raise ValueError(f"No response key for participant(s) {missing}: add them to the key settings.")
        self.hub = hub
        self.responses = responses
        self.roles: dict[str, str] = dict(participants)
        self.participants: list[str] = list(participants)
        self.data_stem = Path(data_stem)
        self.display = SessionDisplay(display or DisplaySettings(), self.participants)
        self.autopilot_settings = autopilot
        self.autopilot: Autopilot | None = None
        self.rng = np.random.default_rng(seed)
        self.screenshot_dir = screenshot_dir
        self.preview = preview
        self.experiment_info = dict(experiment_info or {})
        self.flip_log: list[MarkedFlip] = []
        self.paused_total = 0.0
        self.trial: int | None = None
        self.exp: psychopy_data.ExperimentHandler | None = None
        self.clock: PsychopyToLslClock | None = None
        self._reader: KeyReader | None = None
        self._pending: list[Marker] = []
        self._abort_requested = threading.Event()
        self._abort_reason = _OPERATOR_ABORT
        self._pending_rt_origin = False
        self._rt_origin: float | None = None
        self._block: _Block | None = None
        self._announced: _Block | None = None  # the block whose instructions are on screen
        self._captured: set[str] = set()
        self._screenshots: list[tuple[Path, Any]] = []
        self._switch_interval: float | None = None
        import pylsl

        self._local_clock = pylsl.local_clock

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> TaskContext:
        """Open the windows, the keyboard, the data file and the autopilot."""
        from psychopy import data

        self.data_stem.parent.mkdir(parents=True, exist_ok=True)
        # Another Python thread (autopilot, board bridges, LSL pumps in this process) can hold the
        # GIL for up to the switch interval (5 ms by default) when the flip's marker callback
        # needs it, delaying the stamp; while tasks run, threads switch every 0.5 ms.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, _SWITCH_INTERVAL_S))
        try:
            self.display.open()
            self.clock = PsychopyToLslClock()
            reading = self.keys
            if self.autopilot_settings is not None and reading.uses_devices:
                # the autopilot types on one keyboard: a pilot runs in shared-keyboard mode
                logger.warning("Autopilot: the participants' own response devices are not used; one shared keyboard")
                reading = reading.shared_keyboard()
            self._reader = open_key_reader(reading)
            self.exp = data.ExperimentHandler(
                name="dyadlab",
                extraInfo=self.experiment_info,
                dataFileName=str(self.data_stem),
                savePickle=False,
                saveWideText=False,
            )
            # built now, so that pausing or aborting shows its screen without a font-loading delay
            self._message_stims("_pause", self.text("kit.pause"))
            self._message_stims("_abort", self.text("kit.abort"))
            if self.autopilot_settings is not None:
                keys = {label: self.keys.participants[label].respond for label in self.participants}
                self.autopilot = Autopilot(self.autopilot_settings, keys)
                self.autopilot.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Save the CSV, stop the autopilot, close the windows; idempotent.

        Every step runs even if an earlier one fails; the last error propagates, with the earlier
        ones chained as its context.
        """
        try:
            if self.autopilot is not None:
                self.autopilot.stop()
                self.autopilot = None
        finally:
            try:
                if self.exp is not None:
                    try:
                        self.save_data()
                    finally:
                        self.exp.abort()  # our own save is done; stop PsychoPy's atexit save
                        self.exp = None
                self.save_screenshots()
            finally:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
                self.display.close()
                if self._switch_interval is not None:
                    sys.setswitchinterval(self._switch_interval)
                    self._switch_interval = None

    def __enter__(self) -> TaskContext:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- facts -----------------------------------------------------------------------------
    @property
    def views(self) -> list[View]:
        """The windows and who sees them."""
        return self.display.views

    @property
    def csv_path(self) -> Path:
        """The behavioural CSV."""
        return self.data_stem.with_name(self.data_stem.name + ".csv")

    @property
    def speed(self) -> float:
        """Acceleration of shortenable durations (1 without autopilot)."""
        return self.autopilot_settings.speed if self.autopilot_settings is not None else 1.0

    def scaled(self, seconds: float) -> float:
        """A shortenable duration (rest, conversation, reading) under the autopilot's speed."""
        return seconds / self.speed

    def now(self) -> float:
        """PsychoPy-clock time now."""
        from psychopy import core

        return core.getTime()

    def text(self, key: str, /, **fields: Any) -> str:
        """Screen text ``key`` as the protocol words it (``screens.texts``), fields filled in."""
        return self.display.settings.text(key, **fields)

    def seat(self, participant: str) -> str:
        """How the screens name ``participant``: their seat (``seat.A`` / ``seat.B``), not a label or role."""
        return self.text(f"seat.{participant}") if f"seat.{participant}" in DEFAULT_TEXTS else participant

    def key_of(self, participant: str) -> str:
        """The participant's respond key."""
        return self.keys.participants[participant].respond

    @property
    def current_block(self) -> _Block | None:
        """Task, block id and condition of the running block."""
        return self._block

    # ---- markers and flips -----------------------------------------------------------------
    def marker(self, event: str, **fields: Any) -> Marker:
        """A marker filled with the running block's task, block id, condition and trial."""
        block = self._block or self._announced
        defaults: dict[str, Any] = {
            "task": block.task if block else None,
            "block": block.block if block else None,
            "condition": block.condition if block else None,
            "trial": self.trial,
        }
        defaults.update(fields)
        return Marker(event=event, **defaults)

    def mark_on_next_flip(self, marker: Marker, rt_origin: bool = False) -> None:
        """Push ``marker`` at the next flip; ``rt_origin`` makes that flip the RT origin."""
        self._pending.append(marker)
        self._pending_rt_origin = self._pending_rt_origin or rt_origin

    def _push_on_flip(self, record: MarkedFlip, markers: list[Marker]) -> None:
        # Runs inside win.flip(), right after the swap: one local_clock() read is the onset of
        # every marker of this frame.
        stamp = self._local_clock()
        for marker in markers:
            record.markers.append((marker, self.hub.push(marker, stamp)))

    def _draw_photodiode_patch(self, lit: bool) -> None:
        corner = self.display.settings.photodiode_corner
        if corner is None:
            return
        for view in self.views:
            half_width = view.window.size[0] / view.window.size[1] / 2.0
            sx, sy = _CORNER_POS[corner]
            pos = (sx * (half_width - _PATCH_SIZE / 2), sy * (0.5 - _PATCH_SIZE / 2))
            color = "white" if lit else "black"
            view.rect("photodiode", width=_PATCH_SIZE, height=_PATCH_SIZE, pos=pos, fillColor=color).draw()

    def _flip(self, grab: bool = False) -> float:
        """Flip with the queued markers (``grab``: keep the frame for a screenshot); no key handling."""
        if self.clock is None:
            raise RuntimeError("The task context is not open: use 'with TaskContext(...) as ctx'.")
        markers, self._pending = self._pending, []
        self._draw_photodiode_patch(lit=bool(markers))
        if grab:
            self.display.grab()
        record = MarkedFlip(flip_time=float("nan"), other_flip_times=[])
        if markers:
            self.display.primary.callOnFlip(self._push_on_flip, record, markers)
        flip_time, others = self.display.flip()
        if markers:
            record.flip_time = flip_time
            record.other_flip_times = others
            self.flip_log.append(record)
        if self._pending_rt_origin:
            self._rt_origin = flip_time
            self._pending_rt_origin = False
        self.clock.refresh()
        return flip_time

    def flip(self, grab: bool = False, *, read_keys: bool = True) -> Frame:
        """Flip every window (pushing queued markers), then read keys.

        Participant presses are pushed to the response stream and returned. Operator keys are
        handled here: abort (or a :meth:`request_abort`) raises :class:`SessionAborted`; pause
        blocks on a pause screen. ``grab`` keeps the frame for :meth:`capture`. With
        ``read_keys=False`` the flip only pushes its markers (e.g. ``session_end`` after an abort,
        which a second Escape must not lose).
        """
        flip_time = self._flip(grab)
        if not read_keys:
            return Frame(flip_time=flip_time, responses=[], operator_keys=[])
        if self._abort_requested.is_set():
            self._abort(self._abort_reason)
        responses = []
        operator_keys = []
        for press in self._read_keys():
            if press.key == self.keys.abort:
                self._abort()
            elif press.key == self.keys.pause:
                self._pause()
            elif press.participant is not None:
                responses.append(self._record_response(press))
            else:
                operator_keys.append(press.key)
        return Frame(flip_time=flip_time, responses=responses, operator_keys=operator_keys)

    def request_abort(self, reason: str) -> None:
        """End the running block at its next flip, as the abort key does, giving ``reason``.

        Thread-safe: for a session that cannot go on (the recording failed, a device is lost).
        The ``abort`` marker carries ``reason`` and :class:`SessionAborted` propagates.
        """
        self._abort_reason = reason
        self._abort_requested.set()

    def _read_keys(self) -> list[KeyPress]:
        assert self._reader is not None
        return self._reader.read()

    def _record_response(self, press: KeyPress) -> Response:
        assert self.clock is not None and press.participant is not None
        rt = None if self._rt_origin is None else press.t_down - self._rt_origin
        response = Response(
            participant=press.participant,
            key=press.key,
            t_down=press.t_down,
            lsl_time=self.clock.to_lsl(press.t_down),
            rt=rt,
            device=press.device,
        )
        value: dict[str, Any] = {"key": press.key, "rt": None if rt is None else round(rt, 6)}
        if press.device is not None:
            value["device"] = press.device
        self.responses.push(self.marker("response", participant=press.participant, value=value), response.lsl_time)
        return response

    def reset_rt_origin(self) -> None:
        """Report RTs as ``None`` until the next ``rt_origin`` flip (e.g. at a trial start)."""
        self._rt_origin = None

    def clear_keys(self) -> None:
        """Forget presses made before now (e.g. before an instruction screen)."""
        assert self._reader is not None
        self._reader.clear()

    # ---- operator keys ---------------------------------------------------------------------
    def _message_stims(self, key: str, text: str) -> list[Any]:
        return [view.text(key, text, color="white") for view in self.views]

    def _draw_message(self, key: str, text: str) -> None:
        for stim in self._message_stims(key, text):
            stim.draw()

    def _pause(self) -> None:
        self.mark_on_next_flip(self.marker("pause"))
        logger.info("Session paused by the operator")
        started: float | None = None  # the pause screen's first flip
        while True:
            self._draw_message("_pause", self.text("kit.pause"))
            flip_time = self._flip()
            started = flip_time if started is None else started
            presses = self._read_keys()
            for press in presses:
                if press.participant is not None:
                    self._record_response(press)  # kept in the response stream, not used by the task
            keys = [press.key for press in presses]
            if self._abort_requested.is_set():
                self.paused_total += self.now() - started
                self._abort(self._abort_reason)
            if self.keys.abort in keys:
                self.paused_total += self.now() - started
                self._abort()
            if self.keys.pause in keys:
                break
        self.paused_total += self.now() - started
        self.mark_on_next_flip(self.marker("resume"))
        logger.info("Session resumed after %.1f s", self.now() - started)

    def _abort(self, reason: str = _OPERATOR_ABORT) -> None:
        if self.autopilot is not None:
            self.autopilot.cancel_pending()
        self.mark_on_next_flip(self.marker("abort", value=reason))
        self._draw_message("_abort", self.text("kit.abort"))
        self._flip()
        logger.warning("Session aborted during block %s: %s", self._block.block if self._block else None, reason)
        raise SessionAborted(reason)

    # ---- blocks, screens, data -------------------------------------------------------------
    @contextmanager
    def block(self, task: str, block_id: str, condition: str, value: Any = None) -> Iterator[None]:
        """Delimit an analysis block: ``block_start`` on the next flip, ``block_end`` on exit.

        ``block_end`` carries ``value="complete"`` or ``"aborted"`` (when :class:`SessionAborted`
        or any error leaves the block); the CSV is saved either way.
        """
        if self._block is not None:
            raise RuntimeError(f"Block {block_id!r} cannot start inside block {self._block.block!r}.")
        self._block = _Block(task=task, block=block_id, condition=condition)
        self._rt_origin = None
        self.trial = None
        self.mark_on_next_flip(self.marker("block_start", value=value))
        outcome = "aborted"
        try:
            yield
            outcome = "complete"
        finally:
            self.trial = None
            try:
                self.mark_on_next_flip(self.marker("block_end", value=outcome))
                if outcome == "aborted":
                    self._pending = [m for m in self._pending if m.event == "block_end"]
                    self._draw_message("_abort", self.text("kit.abort"))
                self._flip()
            finally:
                self._block = None
                self._rt_origin = None
                self.save_data()
                self.save_screenshots()

    def show(
        self,
        draw: Callable[[View], None],
        duration: float | None = None,
        marker: Marker | None = None,
        rt_origin: bool = False,
        until: Callable[[Frame], bool] | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        screenshot: str | None = None,
    ) -> tuple[float, list[Response]]:
        """Show a screen until ``duration`` passed (pauses excluded) or ``until(frame)`` is true.

        Parameters
        ----------
        draw : callable
            Called with each view before every flip.
        duration : float or None
            Seconds from onset; ``None`` waits for ``until``.
        marker : Marker or None
            Pushed on the onset flip.
        rt_origin : bool
            Make the onset flip the RT origin.
        until : callable or None
            Ends the screen when it returns true for a frame.
        on_frame : callable or None
            Called after every flip (e.g. to schedule autopilot presses at onset).
        screenshot : str or None
            Screen name for :meth:`capture` (saved at onset).

        Returns
        -------
        onset : float
            PsychoPy-clock time of the onset flip.
        responses : list of Response
            Every participant press during the screen.
        """
        if duration is None and until is None:
            raise ValueError("show() needs a duration or an until() condition.")
        if self.preview and screenshot is None:
            task = (self._block or self._announced or _Block("session", "", None)).task
            screenshot = f"{task}_{marker.event if marker is not None else 'screen'}"
        if marker is not None:
            self.mark_on_next_flip(marker, rt_origin=rt_origin)
        elif rt_origin:
            self._pending_rt_origin = True
        collected: list[Response] = []
        onset: float | None = None
        paused_at_onset = self.paused_total
        while True:
            for view in self.views:
                draw(view)
            frame = self.flip(grab=onset is None and self._wants_capture(screenshot))
            collected.extend(frame.responses)
            first = onset is None
            if onset is None:
                onset = frame.flip_time
            if on_frame is not None:
                on_frame(frame)  # first: it may schedule autopilot presses relative to the onset
            if first and screenshot is not None:
                self.capture(screenshot)
            if self.preview or (until is not None and until(frame)):
                break
            if duration is not None:
                elapsed = self.now() - onset - (self.paused_total - paused_at_onset)
                if elapsed >= duration:
                    break
        return onset, collected

    def instructions(self, text: str, task: str, block_id: str, screenshot: str | None = "instructions") -> None:
        """Show instructions until every participant pressed their key (or the operator ``space``).

        Pushes an ``instructions`` marker (outside any block). The autopilot acknowledges after
        its reading time.
        """
        ready: set[str] = set()
        self.clear_keys()

        def draw(view: View) -> None:
            view.text("_instructions", text, pos=(0, 0.08)).draw()
            view.text("_ready", self._ready_status(view, ready), pos=(0, -0.38), height=0.045, color="#99ccee").draw()

        onset: list[float] = []

        def on_frame(frame: Frame) -> None:
            if not onset:
                onset.append(frame.flip_time)
                if self.autopilot is not None:
                    for label in self.participants:
                        self.autopilot.acknowledge(label, frame.flip_time)
            ready.update(response.participant for response in frame.responses)
            if self.keys.proceed in frame.operator_keys:
                ready.update(self.participants)

        def until(frame: Frame) -> bool:
            return ready >= set(self.participants)

        self._announced = _Block(task=task, block=block_id, condition=None)
        try:
            self.show(
                draw,
                marker=self.marker("instructions"),
                until=until,
                on_frame=on_frame,
                screenshot=f"{task}_{screenshot}" if screenshot else None,
            )
        finally:
            self._announced = None
        self.clear_keys()

    def check_response_devices(self, timeout_s: float = 120.0) -> dict[str, str]:
        """Ask every participant to press their button once; return whose device answered.

        Each participant's screen asks for one press (a shared screen lists the seats) and says
        when theirs arrived; the operator sees the answers in the log. A press counts for the
        participant whose device sent it, so a swapped or dead device shows here, before the
        recording's blocks.

        Returns
        -------
        dict
            Participant label -> the device that answered (``"shared keyboard"`` without one).

        Raises
        ------
        ResponseDeviceError
            A participant's device sent nothing within ``timeout_s``.
        """
        answered: dict[str, str] = {}
        self.clear_keys()

        def line(label: str, own: bool) -> str:
            if label in answered:
                return (
                    self.text("kit.device.answered")
                    if own
                    else f"{self.seat(label)}: {self.text('kit.device.answered')}"
                )
            prompt = self.text("kit.device.press", key=self.key_of(label).upper())
            return prompt if own else f"{self.seat(label)}: {prompt}"

        def draw(view: View) -> None:
            own = len(view.participants) == 1
            view.text("_device_check", "\n\n".join(line(label, own) for label in view.participants)).draw()

        asked: list[bool] = []

        def on_frame(frame: Frame) -> None:
            if self.autopilot is not None and not asked:  # simulated participants press once
                asked.append(True)
                for label in self.participants:
                    self.autopilot.acknowledge(label, frame.flip_time)
            for response in frame.responses:
                if response.participant not in answered:
                    answered[response.participant] = response.device or "shared keyboard"
                    logger.info(
                        "Participant %s's device answered: %s", response.participant, answered[response.participant]
                    )

        self.show(
            draw,
            duration=timeout_s,
            until=lambda frame: set(answered) >= set(self.participants),
            on_frame=on_frame,
            screenshot="device-check",
        )
        self.clear_keys()
        missing = [label for label in self.participants if label not in answered]
        if missing:
            from dyadlab.tasks.input import ResponseDeviceError

            raise ResponseDeviceError(
                f"No press from participant(s) {', '.join(missing)} within {timeout_s:.0f} s: check that their "
                "device is plugged in and is the one the protocol names (keys.participants.<label>.device)."
            )
        return answered

    def _ready_status(self, view: View, ready: set[str]) -> str:
        """The line under instructions: one's own key on one's own screen, both keys on a shared one."""
        if len(view.participants) == 1:
            label = view.participants[0]
            return (
                self.text("kit.ready.waiting")
                if label in ready
                else self.text("kit.ready.own", key=self.key_of(label).upper())
            )
        keys = " / ".join(self.key_of(label).upper() for label in view.participants)
        line = self.text("kit.ready.shared", keys=keys)
        if ready:
            line += "\n" + self.text("kit.ready.count", ready=len(ready), total=len(view.participants))
        return line

    def show_break(self, seconds: float, text: str | None = None) -> None:
        """A break screen for ``seconds`` (shortened by the autopilot speed), with a ``break`` marker.

        ``text`` defaults to the protocol's ``kit.break`` text.
        """
        remaining = self.scaled(seconds)
        shown = text if text is not None else self.text("kit.break")

        def draw(view: View) -> None:
            view.text("_break", shown).draw()

        self.show(draw, duration=remaining, marker=self.marker("break", value={"seconds": seconds}))

    def _wants_capture(self, name: str | None) -> bool:
        return self.screenshot_dir is not None and name is not None and name not in self._captured

    def capture(self, name: str) -> None:
        """Keep the last grabbed frame(s) as ``<screenshot_dir>/<name>.png``, once per name.

        A frame is grabbed by ``flip(grab=True)`` (``show(screenshot=...)`` does it at onset). The
        files are written when the block ends (and at close), not during timed screens.
        """
        if self.screenshot_dir is None or not self._wants_capture(name):
            return
        self._captured.add(name)
        grabbed = self.display.take_grabbed(Path(self.screenshot_dir) / name)
        if self.preview and len(self.views) == 1:  # a shared screen: what each participant sees
            grabbed = [
                (path.with_name(f"{path.stem}_{label}.png"), image)
                for path, image in grabbed
                for label in self.participants
            ]
        self._screenshots.extend(grabbed)

    def screenshots_into(self, folder: Path) -> None:
        """Save the following screens into ``folder``, each screen name once more (e.g. one folder per block)."""
        self.save_screenshots()
        self.screenshot_dir = Path(folder)
        self._captured.clear()

    def save_screenshots(self) -> list[Path]:
        """Write the screenshots kept so far; returns their paths."""
        pending, self._screenshots = self._screenshots, []
        for path, image in pending:
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
        return [path for path, _ in pending]

    def add_row(self, **values: Any) -> None:
        """One row of the behavioural CSV, with the block's task, block id and condition."""
        if self.exp is None:
            raise RuntimeError("The task context is not open.")
        block = self._block
        row = {
            "task": block.task if block else None,
            "block": block.block if block else None,
            "condition": block.condition if block else None,
        }
        row.update(values)
        for name, value in row.items():
            self.exp.addData(name, value)
        self.exp.nextEntry()

    def save_data(self) -> None:
        """Write the behavioural CSV now (overwriting the previous save)."""
        if self.exp is None or not self.exp.entries:
            return
        self.exp.saveAsWideText(str(self.csv_path), fileCollisionMethod="overwrite")
