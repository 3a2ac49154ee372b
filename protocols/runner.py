"""The session runner: one protocol in, one recorded and checked session out.

Order of operations (each later step only once the earlier ones succeeded; everything started is
stopped and released in ``finally`` blocks, in reverse order):

0. check that PsychoPy imports (:func:`dyadlab.tasks.kit.require_psychopy`): a missing or broken
   PsychoPy stops the run before anything is started or written;
1. apply the LSL configuration (before any LSL call of the process);
2. create the marker and response outlets (a recorder only sees outlets that exist);
3. prepare and start the sources (simulator or BrainFlow boards, LSL amplifiers) and their LSL
   bridges, and the microphones;
4. preflight: both EEG streams and the marker stream present, signals plausible, each microphone
   hearing its participant; a failure stops here with the report and nothing recorded is lost,
   because nothing was recorded yet;
5. open the windows and, with response devices, have each participant press once (a missing or
   silent device stops here, nothing recorded);
6. start the session's helper processes and the recorder on exactly this session's streams, push
   ``session_start``, run the blocks in their counterbalanced order;
7. push ``session_end`` (``complete`` or ``aborted``), close the windows, stop the recorder
   (the XDF is finalized), stop and release the bridges;
8. write ``session.json`` and run the quick-check on the XDF.

Escape (``SessionAborted`` from the task kit) ends the session early: the same steps 7-8 run and
``session.json`` says ``"complete": false``. Any other exception runs 7-8 too, then is re-raised
as :class:`SessionError` naming the stage that failed and where the files are.

SIGTERM, SIGINT and SIGHUP end a run as Escape does (:meth:`SessionRunner.run` handles them while
it runs in the main thread): during the blocks the running block ends at its next flip with the
``abort`` marker (its value names the signal) and ``block_end``; before the blocks, the
setup unwinds at once; while the session is being finalised (recorder stop, ``session.json``), a
signal changes nothing; during the quick-check, the check is skipped. ``session.json`` is
rewritten after every block, so a run killed outright (``kill -9``, power cut) leaves a record
at most one block behind, which ``dyadlab repair`` brings in line with the XDF.

Before anything is created, the run checks what ``dyadlab validate`` checks (the output path
with the real values, inside ``--out``; the LSL settings), then claims the first free run
number exclusively (``O_EXCL`` creation of its ``session.json``), so two runs started at once
into one folder never share a run number. A run that ends before its recording started
(preflight failed, a device missing) gives its number back: its ``session.json`` is renamed
``<stem>_not-recorded_<UTC time>.json``, and the next run takes the same number.

Disk space: the recorder refuses to start (step 6, nothing recorded) when the disk cannot hold the
planned session (block durations; 10 minutes for a block whose length is not a duration) twice
over. If the recording fails anyway (disk full, I/O error), the recorder reports it at once; the
running block ends at its next flip (``TaskContext.request_abort``), no further block starts,
steps 7-8 run, and :class:`RecordingFailed` is raised: ``session.json`` says
``"complete": false`` with the reason, and if it cannot be written either (full disk), its content
is logged instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dyadlab import DyadlabError
from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config, discard_lsl_config, local_only_exposure
from dyadlab.acquisition.streams import ParticipantInfo, source_id
from dyadlab.protocols.schema import (
    MAX_RUNS,
    LoadedProtocol,
    Protocol,
    SessionPlan,
    duration_field,
    paradigms,
    plan_session,
    protocol_lsl_config,
    resolve_block_params,
    resolve_output_stem,
)

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str, str], None]


class SessionError(DyadlabError, RuntimeError):
    """The session failed at ``stage``; everything recorded up to then is finalized on disk."""

    def __init__(self, stage: str, message: str, files: dict[str, Path]) -> None:
        self.stage = stage
        self.files = files
        where = ", ".join(f"{kind}: {path}" for kind, path in files.items() if Path(path).exists())
        super().__init__(f"Session failed during {stage}: {message}" + (f" (files kept: {where})" if where else ""))


class PreflightFailed(SessionError):
    """Preflight found a participant not ready; nothing was recorded."""


class RecordingFailed(SessionError):
    """The recording stopped during the session (disk full...); what was recorded is kept."""


class SessionRefused(SessionError):
    """The run cannot start (output folder not writable, every run number taken...); nothing was
    created."""


class _Terminated(BaseException):
    """Raised by the signal handler to unwind a run that has not opened its windows yet (a
    BaseException, so that no ``except Exception`` on the way swallows it)."""


#: Signals that end a run as the abort key does.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


#: Planned seconds for a block whose length is not given as a duration (trials, turns...).
_UNKNOWN_BLOCK_SECONDS = 600.0
#: Instructions, breaks and transitions per block, on top of its duration.
_BLOCK_OVERHEAD_SECONDS = 60.0


@dataclass
class BlockRecord:
    """What happened to one block (stored in ``session.json``)."""

    id: str
    task: str
    position: int
    params: dict[str, Any]
    status: str = "not-run"  # not-run | running | completed | aborted | failed
    start_lsl: float | None = None
    end_lsl: float | None = None
    start_wall: str | None = None
    end_wall: str | None = None
    condition: str | None = None
    cue_at_end: str | None = None  # told to the experimenter when the block ends (console: shown and spoken)


@dataclass(frozen=True)
class BlockProgress:
    """Where the running block is (see :meth:`SessionRunner.snapshot`).

    Attributes
    ----------
    id, task : str
        The block and its paradigm.
    position, total : int
        Its place in the session's order (from 1) and the number of blocks.
    elapsed_s : float | None
        Seconds since its (latest) ``block_start`` marker; ``None`` while its instructions show.
    planned_s : float | None
        Length of its timed part (shortened by ``speed``); ``None`` when trials set its length.
    trials_done, trials_planned : int | None
        Trials begun and planned, for paradigms that count trials
        (:attr:`~dyadlab.tasks.paradigms.base.Paradigm.trial_marker`).
    """

    id: str
    task: str
    position: int
    total: int
    elapsed_s: float | None
    planned_s: float | None
    trials_done: int | None
    trials_planned: int | None

    @property
    def remaining_s(self) -> float | None:
        """Planned seconds left of the timed part (all of it while the instructions show), or
        ``None`` when trials set the block's length."""
        if self.planned_s is None or self.elapsed_s is None:
            return self.planned_s
        return max(0.0, self.planned_s - self.elapsed_s)


@dataclass(frozen=True)
class SessionSnapshot:
    """What a run is doing at one moment, for the session console (plain values, no rich).

    Attributes
    ----------
    stage : str
        The runner's stage (``lsl``, ``sources``, ``preflight``, ``recorder``, ``blocks``...).
    block : BlockProgress | None
        The running block, if one runs.
    blocks_done : int
        Blocks that ended (completed, aborted or failed).
    session_elapsed_s : float | None
        Seconds since ``session_start``; ``None`` before it.
    planned_left_s : float
        Planned seconds of the blocks still to run: the running block's remaining time and the
        durations of the blocks not started (those whose length is known).
    unknown_blocks_left : int
        Blocks still to run whose length follows from trials or turns (not in ``planned_left_s``).
    streams : list of (str, BridgeStatus)
        Each participant's label and EEG bridge status (:class:`dyadlab.acquisition.bridge.BridgeStatus`).
    recording : RecordingSummary | None
        The recorder's live summary (:class:`dyadlab.acquisition.recorder.RecordingSummary`).
    files : dict of str to Path
        The run's files (``xdf``, ``session``, ``log``...), whether they exist yet or not.
    """

    stage: str
    block: BlockProgress | None
    blocks_done: int
    session_elapsed_s: float | None
    planned_left_s: float
    unknown_blocks_left: int
    streams: list[tuple[str, Any]]
    recording: Any
    files: dict[str, Path]


@dataclass(frozen=True)
class _BlockPlan:
    """What the runner knows of a block before it runs: its planned length and trials."""

    planned_s: float | None
    trial_marker: str | None
    planned_trials: int | None


#: The quick-check's ``speech`` fields kept in ``session.json`` (docs/speech.md).
SPEECH_RECORD_KEYS = ("participants", "n_transfers", "n_gaps", "n_overlaps", "state_s", "notes", "events_tsv")


@dataclass
class SessionResult:
    """The outcome of :meth:`SessionRunner.run`.

    Attributes
    ----------
    complete : bool
        Every block ran to its end.
    files : dict of str to Path
        ``xdf``, ``behaviour`` (CSV), ``session`` (session.json), ``quickcheck_json``,
        ``quickcheck_html`` — those that exist.
    duration : float
        Seconds from ``session_start`` to ``session_end`` (0 if the session never started).
    session : dict
        The content of ``session.json``.
    quickcheck : dict | None
        What :func:`dyadlab.synchrony.check.run_check` returned, if it ran.
    problems : list of str
        Warnings the operator should read (recorder problems, quick-check failure...).
    """

    complete: bool
    files: dict[str, Path]
    duration: float
    session: dict[str, Any]
    quickcheck: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def quickcheck_summary(self) -> str:
        """One line about the quick-check for the terminal."""
        info = self.session.get("quickcheck") or {}
        if info.get("error"):
            return f"failed: {info['error']}"
        return info.get("summary", "")


class SessionRunner:
    """Run one dyad session from a validated protocol.

    Parameters
    ----------
    protocol : LoadedProtocol or Protocol
        From :func:`dyadlab.protocols.schema.load_protocol` (a bare ``Protocol`` is accepted for tests).
    out_dir : Path
        Root output folder; files go where ``protocol.output.pattern`` puts them.
    simulate : bool
        Use the coupled-dyad simulator for both participants, whatever the devices say, and the
        simulated voices for every microphone the protocol names (docs/audio.md).
    autopilot : bool
        Simulated participants respond through the task kit's input path.
    speed : float
        Factor by which every timed part of a block (rests, conversation, reading time, trial
        times, tapping pace) and the simulated reaction times run faster in autopilot pilots
        (see each paradigm's docstring).
    quickcheck : bool
        Run the synchrony quick-check at the end (when the protocol enables it).
    lsl_config : LslConfig | None
        LSL settings to apply instead of the protocol's. ``LslConfig()`` (nothing overridden)
        keeps whatever the process already uses (tests).
    lsl_local_only : bool
        Keep every stream on this machine (the demo).
    status : callable(stage, message), optional
        Progress messages for a user interface.
    screenshot_dir : Path | None
        Save each paradigm's main screens there (review, documentation).
    session_log : callable(Path) -> context manager, optional
        Entered with the path of ``<stem>_session.log`` once the run's files are named, left when
        the run ends: the session console routes library output (liblsl, BrainFlow, PsychoPy)
        into that file with it (:func:`dyadlab.protocols.console.SessionConsole.session_log`).
    """

    def __init__(
        self,
        protocol: LoadedProtocol | Protocol,
        *,
        out_dir: str | os.PathLike[str],
        simulate: bool = False,
        autopilot: bool = False,
        speed: float = 1.0,
        quickcheck: bool = True,
        lsl_config: LslConfig | None = None,
        lsl_local_only: bool = False,
        status: StatusCallback | None = None,
        screenshot_dir: str | os.PathLike[str] | None = None,
        session_log: Callable[[Path], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        if isinstance(protocol, LoadedProtocol):
            self.loaded: LoadedProtocol | None = protocol
            self.protocol = protocol.protocol
        else:
            self.loaded = None
            self.protocol = protocol
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if speed != 1.0 and not autopilot:
            raise ValueError("speed shortens durations for autopilot pilots only; real participants run at speed 1")
        self.out_dir = Path(out_dir)
        self.simulate = simulate
        self.autopilot = autopilot
        self.speed = float(speed)
        self.run_quickcheck = quickcheck and self.protocol.quickcheck.enabled
        self.lsl_config = lsl_config
        self.lsl_local_only = lsl_local_only
        self.screenshot_dir = None if screenshot_dir is None else Path(screenshot_dir)
        self._status = status or (lambda stage, message: logger.info("%s: %s", stage, message))
        self._session_log = session_log
        self.plan: SessionPlan = plan_session(self.protocol)
        self.participants = self._participants()
        # What `dyadlab validate` checks, now with --out: fails before anything is created.
        self._lsl_config = self.effective_lsl_config()
        resolve_output_stem(self.protocol, 1, self.out_dir)
        self._state: _SessionState | None = None

    # -- planning ----------------------------------------------------------------------------
    def _participants(self) -> list[ParticipantInfo]:
        """Participants with the labels counterbalancing gave them, ordered A, B."""
        people = [
            ParticipantInfo(label=self.plan.labels[p.id], participant_id=p.id, role=p.role)
            for p in self.protocol.participants
        ]
        return sorted(people, key=lambda person: person.label)

    def planned_recording_seconds(self) -> float:
        """A generous estimate of how long the recording runs (for the disk-space check).

        Each block counts its duration parameter (10 minutes when its length follows from trials
        or turns instead) plus a minute for instructions and breaks, shortened by ``speed``.
        """
        registry = paradigms()
        total = 0.0
        for block in self.protocol.blocks:
            paradigm = registry[block.task]
            field_name = duration_field(paradigm)
            params = paradigm.Params.model_validate(resolve_block_params(block, paradigm))
            seconds = getattr(params, field_name, None) if field_name else None
            total += (float(seconds) if seconds else _UNKNOWN_BLOCK_SECONDS) + _BLOCK_OVERHEAD_SECONDS
        return total / self.speed

    def effective_lsl_config(self) -> LslConfig:
        """The LSL configuration this session applies.

        Raises
        ------
        dyadlab.acquisition.lslconfig.LslConfigError
            A setting liblsl would not accept (checked by ``dyadlab validate`` as well).
        """
        if self.lsl_config is not None:
            return self.lsl_config
        return protocol_lsl_config(self.protocol, local_only=self.lsl_local_only)

    def output_stem(self) -> Path:
        """The path of this run's files without suffix: the first run number not used yet (not
        claimed: :meth:`run` claims one exclusively)."""
        stem = self.out_dir
        for run in range(1, MAX_RUNS + 1):
            stem = resolve_output_stem(self.protocol, run, self.out_dir)
            if not any(path.exists() for path in _run_files(stem)):
                return stem
        raise SessionRefused("setup", f"{MAX_RUNS} runs already exist for {stem}", {})

    def _claim_run(self) -> Path:
        """Claim the first free run number: create its ``session.json`` with ``O_EXCL``, so that
        two runs started at once into one folder never take the same number."""
        stem = self.out_dir
        for run in range(1, MAX_RUNS + 1):
            stem = resolve_output_stem(self.protocol, run, self.out_dir)
            xdf, session, behaviour = _run_files(stem)
            if xdf.exists() or behaviour.exists():
                continue
            try:
                stem.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(session, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue  # taken, possibly by a run started at the same moment
            except OSError as error:
                raise SessionRefused(
                    "setup",
                    f"cannot create the run's files in {stem.parent} ({error.strerror or error}); "
                    "choose an output folder you can write to (--out)",
                    {},
                ) from None
            os.close(descriptor)
            return stem
        raise SessionRefused("setup", f"{MAX_RUNS} runs already exist for {stem}", {})

    # -- running -----------------------------------------------------------------------------
    def run(self) -> SessionResult:
        """Run the whole session; see the module docstring for the order of operations.

        Returns
        -------
        SessionResult
            Also when the session was aborted with Escape (``complete`` is then False).

        Raises
        ------
        dyadlab.tasks.kit.PsychoPyImportError
            PsychoPy is missing or fails to import; nothing was started or written.
        PreflightFailed
            A participant's stream was not ready; nothing was recorded.
        SessionError
            Anything else failed; the recording up to then is finalized and listed.
        """
        from dyadlab.tasks.kit import require_psychopy

        require_psychopy()  # before any device, outlet or file exists
        stem = self._claim_run()
        session = _SessionState(self, stem)
        self._state = session
        if self._session_log is None:
            session.files.pop("log")
            log: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            log = self._session_log(session.files["log"])
        with log, self._stop_on_signals(session):
            return session.execute()

    def snapshot(self) -> SessionSnapshot | None:
        """What the run is doing now, for a live display (any thread); ``None`` before :meth:`run`."""
        state = self._state
        return None if state is None else state.snapshot()

    def request_stop(self, reason: str) -> None:
        """End the run as the abort key does, from any thread (no-op when it is not running).

        During the blocks the running block ends at its next flip; before the windows are open,
        :meth:`run` ends at the next LSL wait or device step; while the session is being
        finalised, nothing changes.
        """
        state = self._state
        if state is not None:
            state.stop_requested(reason, raise_in_setup=False)

    @contextlib.contextmanager
    def _stop_on_signals(self, state: _SessionState) -> Any:
        """While the run lasts, SIGTERM/SIGINT/SIGHUP end it as the abort key does (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            state.stop_requested(f"the run received {name} (stopped by the system or an operator)")

        previous = {}
        try:
            for signum in _STOP_SIGNALS:
                previous[signum] = signal.signal(signum, handle)
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _run_files(stem: Path) -> tuple[Path, Path, Path]:
    """The XDF, session record and behavioural CSV of the run with this stem."""
    return (
        stem.with_name(stem.name + ".xdf"),
        stem.with_name(stem.name + "_session.json"),
        stem.with_name(stem.name + "_beh.csv"),
    )


class _SessionState:
    """Everything one run creates, so that finalisation can release exactly what exists."""

    def __init__(self, runner: SessionRunner, stem: Path) -> None:
        self.runner = runner
        self.protocol = runner.protocol
        self.stem = stem
        self.files: dict[str, Path] = {
            "xdf": stem.with_name(stem.name + ".xdf"),
            "behaviour": stem.with_name(stem.name + "_beh.csv"),
            "session": stem.with_name(stem.name + "_session.json"),
            "log": stem.with_name(stem.name + "_session.log"),
        }
        self.stage = "setup"
        # setup: a stop signal unwinds at once; tasks: the running block ends at its next flip;
        # finishing: nothing changes; quickcheck: the check is skipped.
        self.phase = "setup"
        self.abort_reason: str | None = None
        self.lsl_config_path: Path | None = None
        self.problems: list[str] = []
        self.blocks: list[BlockRecord] = []
        self.complete = False
        self.aborted = False
        self.error: BaseException | None = None
        self.start_lsl: float | None = None
        self.end_lsl: float | None = None
        self.start_wall: str | None = None
        self.end_wall: str | None = None
        self.preflight_report: dict[str, Any] | None = None
        self.recorder_summary: dict[str, Any] | None = None
        self.quickcheck: dict[str, Any] | None = None
        self.quickcheck_info: dict[str, Any] | None = None
        self.lsl_info: dict[str, Any] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.recorder: Any = None
        self.simulator_truth: Callable[[], dict[str, Any]] | None = None
        self.bridges: list[Any] = []
        self.recording_failure: str | None = None  # set from a recorder thread
        self.recording_failed = threading.Event()
        self.context: Any = None  # the TaskContext while the blocks run
        self.simulator_follower: Any = None  # sets the simulated coupling from the block markers
        self.microphones: list[Any] = []  # MicrophoneCapture per participant with a microphone
        self.voice_room: Any = None  # the simulated participants' voices (VoiceRoom), if any microphone is simulated
        self.helpers: Any = None  # live synchrony publisher and monitor processes (SessionHelpers)
        self.block_plans: list[_BlockPlan] = []  # parallel to self.blocks
        self.block_first_flip = 0  # index in context.flip_log where the running block's flips begin

    def status(self, stage: str, message: str) -> None:
        self.runner._status(stage, message)

    def snapshot(self) -> SessionSnapshot:
        """See :meth:`SessionRunner.snapshot` (read from another thread: lists are only appended)."""
        import pylsl

        now = pylsl.local_clock()
        running = next((i for i, record in enumerate(self.blocks) if record.status == "running"), None)
        progress = None
        planned_left = 0.0
        unknown_left = 0
        for index, (record, plan) in enumerate(zip(list(self.blocks), list(self.block_plans))):
            if index == running:
                progress = self._block_progress(record, plan, now)
                if progress.remaining_s is None:
                    unknown_left += 1
                else:
                    planned_left += progress.remaining_s
            elif record.status == "not-run":
                if plan.planned_s is None:
                    unknown_left += 1
                else:
                    planned_left += plan.planned_s
        recording = None
        if self.recorder is not None:
            try:
                recording = self.recorder.summary()
            except Exception:  # a failing recorder says so through its own channel
                logger.debug("no recorder summary for the console", exc_info=True)
        return SessionSnapshot(
            stage=self.stage,
            block=progress,
            blocks_done=sum(record.status in ("completed", "aborted", "failed") for record in self.blocks),
            session_elapsed_s=None if self.start_lsl is None else (self.end_lsl or now) - self.start_lsl,
            planned_left_s=planned_left,
            unknown_blocks_left=unknown_left,
            streams=[(bridge.participant.label, bridge.status) for bridge in self.bridges],
            recording=recording,
            files=dict(self.files),
        )

    def _block_progress(self, record: BlockRecord, plan: _BlockPlan, now: float) -> BlockProgress:
        started = None
        trials = 0
        flips = self.context.flip_log[self.block_first_flip :] if self.context is not None else []
        for flip in flips:
            for marker, stamp in flip.markers:
                if marker.event == "block_start":
                    started = stamp
                elif marker.event == plan.trial_marker:
                    trials += 1
        return BlockProgress(
            id=record.id,
            task=record.task,
            position=record.position,
            total=len(self.blocks),
            elapsed_s=None if started is None else now - started,
            planned_s=plan.planned_s,
            trials_done=trials if plan.trial_marker else None,
            trials_planned=plan.planned_trials,
        )

    def stop_requested(self, reason: str, *, raise_in_setup: bool = True) -> None:
        """A stop signal (or :meth:`SessionRunner.request_stop`): end the run like the abort key."""
        if self.phase == "finishing":
            logger.warning("%s; the session is already being finalised, please wait", reason)
            return
        if self.abort_reason is None:
            self.abort_reason = reason
            logger.warning("%s: ending the session", reason)
        if self.phase == "tasks" and self.context is not None:
            self.context.request_abort(reason)
        elif raise_in_setup and self.phase in ("setup", "quickcheck"):
            raise _Terminated(reason)

    # -- the run -----------------------------------------------------------------------------
    def execute(self) -> SessionResult:
        try:
            self._write_session_json()  # a crash from here on still leaves a record of the attempt
            with contextlib.ExitStack() as resources:
                try:
                    self._run_stages(resources)
                finally:
                    self.phase = "finishing"  # from here on a stop signal changes nothing
        except _Terminated as terminated:
            self.aborted = True
            self.abort_reason = self.abort_reason or str(terminated)
            self.status("aborted", f"{self.abort_reason}: nothing more starts")
        except BaseException as error:
            self.error = error
        finally:
            self.phase = "finishing"
            if self.lsl_config_path is not None:
                discard_lsl_config(self.lsl_config_path)  # liblsl has read it; leave nothing in /tmp
            if self.recording_failure is not None and not isinstance(self.error, RecordingFailed):
                # The lost recording is what the operator must know first, whatever else went wrong.
                later = "" if self.error is None else f" (afterwards: {type(self.error).__name__}: {self.error})"
                self.stage = "recording"
                self.error = self._recording_failed(later)
            if self.recorder is None:
                self._release_run_number()
            self._after_recording()
        return self._result()

    def _release_run_number(self) -> None:
        """Nothing was recorded (preflight failed, a device was missing, a stop before the
        recording): move the claimed ``session.json`` aside so that the next attempt takes this
        run number; the attempt's record stays, under a name no run number reads."""
        claimed = self.files["session"]
        _discard_unrecorded_audio(self)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        attempt = claimed.with_name(f"{self.stem.name}_not-recorded_{stamp}.json")
        try:
            os.replace(claimed, attempt)
        except OSError as error:
            logger.error("cannot free run number of %s (%s); the next run takes the following one", claimed, error)
            return
        self.files["session"] = attempt
        self.status("not recorded", f"run number left free; this attempt's record: {attempt}")

    def _on_recording_failed(self, message: str) -> None:
        """The recorder's on_failure callback (a recorder thread): end the running block at once."""
        self.recording_failure = message
        self.recording_failed.set()
        if self.context is not None:
            self.context.request_abort(f"the recording failed: {message}")

    def _recording_failed(self, detail: str = "") -> RecordingFailed:
        self.stage = "recording"
        return RecordingFailed(
            "recording",
            f"{self.recording_failure}{detail}. The session was ended; its XDF holds everything recorded "
            "up to the failure",
            {kind: path for kind, path in self.files.items() if path.exists()},
        )

    def _run_stages(self, resources: contextlib.ExitStack) -> None:
        runner = self.runner
        protocol = self.protocol

        self.stage = "lsl"
        config = runner._lsl_config
        cfg_path = apply_lsl_config(config)
        self.lsl_config_path = cfg_path
        if config.loopback_only:
            self.status("lsl", local_only_exposure())
        self.lsl_info = {
            "session_id": config.session_id,
            "resolve_scope": config.resolve_scope,
            "known_peers": list(config.known_peers),
            "config_file": str(cfg_path) if cfg_path else os.environ.get("LSLAPICFG"),
        }
        from dyadlab.acquisition.markers import MarkerHub, MarkerOutlet
        from dyadlab.acquisition.streams import event_stream_info

        self.stage = "outlets"
        marker_outlet = resources.enter_context(
            MarkerOutlet(event_stream_info(protocol.study, protocol.dyad, "markers", self.runner.participants))
        )
        response_outlet = resources.enter_context(
            MarkerOutlet(event_stream_info(protocol.study, protocol.dyad, "responses", self.runner.participants))
        )
        hub = MarkerHub(marker_outlet)
        # liblsl has read its configuration (once per process): a kill -9 from here on leaves no
        # dyadlab-lsl-* folder behind.
        discard_lsl_config(self.lsl_config_path)
        self.status("streams", f"marker and response outlets for {protocol.study}/{protocol.dyad}")

        if protocol.preflight.enabled and config.known_peers and not config.loopback_only:
            self.stage = "preflight"  # before the sources: a missing peer is named, not its streams
            _check_known_peers(self, config)

        self.stage = "microphones"  # every device found before any starts
        self.microphones = _open_microphones(self, resources)

        self.stage = "sources"
        bridges = _start_sources(self, resources, hub)
        self.bridges = bridges
        for capture in self.microphones:
            capture.start()
        if self.voice_room is not None:
            from pylsl import local_clock

            self.voice_room.start_microphone_check(local_clock())

        _wait_until_published(
            self,
            [marker_outlet.source_id, response_outlet.source_id]
            + [b.source_id for b in bridges]
            + [capture.source_id for capture in self.microphones],
        )

        self.stage = "preflight"
        if protocol.preflight.enabled:
            _preflight(self, bridges)
            if self.microphones:
                _preflight_microphones(self)
        if self.voice_room is not None:
            from pylsl import local_clock

            self.voice_room.end_microphone_check(local_clock())

        # The windows open and each participant's response device answers before anything is
        # recorded: a dead or swapped button box stops the run without using up its number.
        self.stage = "windows"
        context = _open_windows(self, resources, hub, response_outlet)

        self.stage = "helpers"  # before the recorder, so that it records the live synchrony stream
        from dyadlab.protocols.live_synchrony import start_session_helpers

        self.helpers = start_session_helpers(protocol, config, self.stem, self.status, self._helper_problem, resources)

        self.stage = "recorder"
        self._start_recorder(resources, bridges)

        self.stage = "blocks"
        _run_tasks(self, context, hub)

    def _helper_problem(self, message: str) -> None:
        """A helper process (live synchrony, monitor) failed: a warning, never a failed session."""
        logger.warning("%s", message)
        self.problems.append(message)

    def _start_recorder(self, resources: contextlib.ExitStack, bridges: list[Any]) -> None:
        from dyadlab.acquisition.recorder import LslRecorder, StreamSelector

        protocol = self.protocol
        selectors = [
            StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "eeg", p.label))
            for p in self.runner.participants
        ]
        selectors += [
            StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "markers")),
            StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "responses")),
        ]
        if protocol.microphones is not None and protocol.microphones.live_speech and self.microphones:
            selectors.append(  # optional too: the live speech detector (docs/speech.md)
                StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "speech"), required=False)
            )
        if protocol.live_synchrony.enabled:  # optional: its publisher failing never stops the recording
            selectors.append(
                StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "synchrony"), required=False)
            )
        for bridge, person in zip(bridges, self.runner.participants):
            if _has_aux(bridge):
                selectors.append(
                    StreamSelector(source_id=source_id(protocol.study, protocol.dyad, "aux", person.label))
                )
        selectors += [StreamSelector(source_id=capture.source_id) for capture in self.microphones]
        metadata = {
            "study": protocol.study,
            "dyad": protocol.dyad,
            "session": str(protocol.session),
            "protocol": protocol.name,
            "session_record": self.files["session"].name,
        }
        for person in self.runner.participants:  # who is who, readable without the session record
            metadata[f"participant_{person.label}"] = person.participant_id
            metadata[f"role_{person.label}"] = person.role
        planned = self.runner.planned_recording_seconds()
        recorder = LslRecorder(
            self.files["xdf"],
            selectors,
            file_metadata=metadata,
            planned_duration=planned,
            on_failure=self._on_recording_failed,
        )
        recorder.start()  # refuses (InsufficientSpaceError) when the disk cannot hold the session
        self.recorder = recorder
        # Unwinding order: windows close, then the recorder stops, then the bridges stop.
        resources.callback(self._stop_recorder)
        self.status("recording", str(self.files["xdf"]))

    # -- finalisation ------------------------------------------------------------------------
    def _stop_recorder(self) -> None:
        """Drain and finalize the XDF (before the bridges and outlets go away)."""
        try:
            summary = self.recorder.stop()
        except Exception as error:
            logger.exception("stopping the recorder failed")
            self.problems.append(f"stopping the recorder failed: {error}")
            return
        self.recorder_summary = _jsonable(summary)
        self.problems.extend(summary.problems)
        self.status(
            "saved",
            f"{self.files['xdf']} ({summary.file_size / 1e6:.1f} MB; "
            + ", ".join(f"{s.name}: {s.sample_count}" for s in summary.streams)
            + ")",
        )

    def _after_recording(self) -> None:
        """Write session.json, then run the quick-check on the finalized XDF."""
        self.end_wall = self.end_wall or (now_wall() if self.start_wall else None)
        self._write_session_json()
        if self.recording_failure is not None:
            self.quickcheck_info = {"error": "skipped: the recording failed"}
        elif self.abort_reason is not None and self.error is None and self.start_lsl is None:
            pass  # stopped before the session started: nothing to check
        elif self.recorder is not None and self.runner.run_quickcheck and self.files["xdf"].exists():
            self.phase = "quickcheck"
            try:
                self._quickcheck()
            except _Terminated as terminated:
                self.quickcheck_info = {"error": f"skipped: {terminated}"}
                self.problems.append(f"quick-check skipped: {terminated}")
            finally:
                self.phase = "finishing"
            self._write_session_json()

    def _quickcheck(self) -> None:
        from dyadlab.synchrony.check import DEFAULT_SEED, run_check

        json_out = self.stem.with_name(self.stem.name + "_quickcheck.json")
        html_out = self.stem.with_name(self.stem.name + "_quickcheck.html")
        # Written when the session recorded both microphones (docs/speech.md).
        speech_tsv = self.stem.with_name(self.stem.name + "_speech.tsv")
        self.status("checking", f"synchrony quick-check of {self.files['xdf'].name}")
        settings = self.protocol.quickcheck
        try:
            result = run_check(
                self.files["xdf"],
                json_out=json_out,
                html_out=html_out,
                n_surrogates=settings.surrogates,
                epoch_length=settings.epoch_seconds,
                mains=settings.mains,
                # The seed of `dyadlab check`, not the session's: the same file gives the same numbers.
                seed=DEFAULT_SEED,
                progress=False,
                speech_tsv=speech_tsv,
            )
        except Exception as error:
            logger.exception("quick-check failed")
            self.quickcheck_info = {"error": f"{type(error).__name__}: {error}"}
            self.problems.append(f"quick-check failed: {error}")
            return
        self.quickcheck = result
        for kind, path in (("quickcheck_json", json_out), ("quickcheck_html", html_out), ("speech_tsv", speech_tsv)):
            if path.exists():
                self.files[kind] = path
        speech = result.get("speech") or {}
        self.quickcheck_info = {
            "json": str(json_out),
            "html": str(html_out),
            "summary": _quickcheck_summary(self.quickcheck),
            # Who spoke how much, turns and states; every event is in the TSV.
            "speech": {key: speech[key] for key in SPEECH_RECORD_KEYS if key in speech} or None,
        }

    def _write_session_json(self) -> None:
        """Write session.json atomically; if the disk refuses (full...), log its content instead."""
        path = self.files["session"]
        text = json.dumps(self._session_record(), indent=2, default=str)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            logger.error(
                "cannot write the session record %s (%s); %s. Its content, to save by hand:\n%s",
                path,
                error.strerror or error,
                "the previous version on disk is out of date" if path.exists() else "there is none on disk",
                text,
            )

    def _session_record(self) -> dict[str, Any]:
        protocol = self.protocol
        loaded = self.runner.loaded
        duration = (self.end_lsl - self.start_lsl) if self.start_lsl is not None and self.end_lsl is not None else None
        return {
            "dyadlab_session_schema": 1,
            "complete": self.complete,
            "status": self._status_word(),
            "abort_reason": self.abort_reason if self.aborted else None,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "failed_stage": self.stage if self.error is not None and not self.aborted else None,
            "study": protocol.study,
            "dyad": protocol.dyad,
            "session": protocol.session,
            "protocol": {
                "name": protocol.name,
                "file": str(loaded.path) if loaded else None,
                "sha256": loaded.sha256 if loaded else hashlib.sha256(protocol.model_dump_json().encode()).hexdigest(),
                "resolved": protocol.model_dump(mode="json"),
            },
            "run_options": {
                "simulate": self.runner.simulate,
                "autopilot": self.runner.autopilot,
                "speed": self.runner.speed,
            },
            "counterbalancing": {
                **self.plan_record(),
            },
            "participants": [
                {"label": p.label, "id": p.participant_id, "role": p.role, "device": self.devices.get(p.label)}
                for p in self.runner.participants
            ],
            "lsl": self.lsl_info,
            "timing": {
                "created_wall": self.created,
                "start_local_clock": self.start_lsl,
                "end_local_clock": self.end_lsl,
                "start_wall": self.start_wall,
                "end_wall": self.end_wall,
                "duration_s": duration,
            },
            "blocks": [vars(block) for block in self.blocks],
            "files": {kind: str(path) for kind, path in self.files.items()},
            "preflight": self.preflight_report,
            "recorder": self.recorder_summary,
            "eeg_streams": [_bridge_record(bridge) for bridge in self.bridges],
            "microphones": _microphones_record(self),
            "helpers": None if self.helpers is None else self.helpers.record(),
            "quickcheck": self.quickcheck_info,
            "simulator": _simulation_record(self),
            "problems": self.problems,
            "versions": _versions(),
        }

    def plan_record(self) -> dict[str, Any]:
        plan = self.runner.plan
        ids = self.protocol.block_ids()
        return {
            "rule": plan.rule,
            "block_order": [ids[i] for i in plan.block_order],
            "latin_square_row": plan.latin_square_row,
            "roles_swapped": plan.roles_swapped,
            "labels": plan.labels,
        }

    def _status_word(self) -> str:
        if self.complete:
            return "complete"
        if self.aborted:
            return "aborted"
        if self.error is not None:
            return "failed"
        return "running" if self.start_lsl is not None else "starting"

    def _result(self) -> SessionResult:
        error = self.error
        if error is not None and not self.aborted:
            if isinstance(error, SessionError):
                raise error
            files = {kind: path for kind, path in self.files.items() if path.exists()}
            if isinstance(error, KeyboardInterrupt):
                raise error
            raise SessionError(self.stage, f"{type(error).__name__}: {error}", files) from error
        duration = (self.end_lsl - self.start_lsl) if self.start_lsl is not None and self.end_lsl is not None else 0.0
        return SessionResult(
            complete=self.complete,
            files={kind: path for kind, path in self.files.items() if path.exists()},
            duration=duration,
            session=self._session_record(),
            quickcheck=self.quickcheck,
            problems=list(self.problems),
        )


# --------------------------------------------------------------------------------------------
# Stages that depend on the acquisition, tasks and synchrony layers
# --------------------------------------------------------------------------------------------


def _start_sources(state: _SessionState, resources: contextlib.ExitStack, hub: Any) -> list[Any]:
    """Create each participant's source, start one bridge per participant (A, B order).

    Every bridge started is stopped (and its source released) when ``resources`` closes.
    """
    from dyadlab.acquisition.bridge import BoardBridge

    runner = state.runner
    protocol = state.protocol
    by_label = {runner.plan.labels[p.id]: p for p in protocol.participants}
    simulated = {label for label, p in by_label.items() if runner.simulate or p.uses_simulator}
    simulator_sources: dict[str, Any] = {}
    if simulated:
        from dyadlab.acquisition.simulator import CoupledDyadSimulator

        simulator = CoupledDyadSimulator(participants=tuple(sorted(by_label)), seed=_session_seed(protocol))
        resources.callback(simulator.close)  # after the bridges (LIFO): stops the marker follower
        simulator_sources = dict(zip(simulator.participants, simulator.sources))
        room = state.voice_room
        if room is not None:
            room.drive_coupling(simulator.set_condition)
        state.simulator_follower = simulator.follow_markers(
            source_id(protocol.study, protocol.dyad, "markers"), also=[] if room is None else [room.on_marker]
        )
        state.simulator_truth = simulator.ground_truth
    elif state.voice_room is not None:  # simulated voices with real EEG devices
        from dyadlab.acquisition.simulator import MarkerFollower

        follower = MarkerFollower(
            source_id(protocol.study, protocol.dyad, "markers"),
            [state.voice_room.on_marker],
            resolve_timeout_s=None,
            poll_s=0.02,
        )
        resources.callback(follower.stop)
        follower.start()
    bridges = []
    for person in runner.participants:
        device = by_label[person.label]
        connection: dict[str, Any] | None
        if person.label in simulated:
            source = simulator_sources[person.label]
            kind, connection = "simulator", None
        elif device.uses_lsl_stream:
            from dyadlab.acquisition.lsl_source import LslStreamSource

            spec = device.lsl_spec()
            state.status("device", f"{person.label}: looking for the LSL stream {spec.query}")
            source = LslStreamSource(spec, participant=person.label)
            kind, connection = "lsl", spec.model_dump(mode="json")
        else:
            from dyadlab.acquisition.brainflow_source import BrainFlowSource

            source = BrainFlowSource(device.board_spec(), participant=person.label)
            kind, connection = "brainflow", device.board_spec().model_dump(mode="json")
        bridge = BoardBridge(source, study=protocol.study, dyad=protocol.dyad, participant=person)
        resources.callback(_stop_bridge, bridge)
        bridge.start()
        hub.add_sink(bridge)
        bridges.append(bridge)
        state.devices[person.label] = {
            "kind": kind,
            "description": dict(getattr(source, "description", {})),
            "sampling_rate": float(source.sampling_rate),
            "eeg_channels": list(source.eeg_channel_names),
            "aux_channels": list(source.aux_channel_names),
            "stream": bridge.stream_name,
            "source_id": bridge.source_id,
            "connection": connection,
        }
        state.status(
            "device",
            f"{person.label} ({person.participant_id}, {person.role}): {bridge.stream_name} "
            f"from {state.devices[person.label]['kind']} at {source.sampling_rate:g} Hz",
        )
    return bridges


def _open_microphones(state: _SessionState, resources: contextlib.ExitStack) -> list[Any]:
    """Find every participant's microphone and prepare its capture (none started yet).

    A missing or ambiguous device stops the session here, before any EEG device starts. Each
    capture is released when ``resources`` closes: after the recorder stopped, so the XDF and the
    FLAC files hold the same last samples.
    """
    settings = state.protocol.microphones
    if settings is None:
        return []
    if not settings.record_audio:
        state.status("microphones", "the protocol records no audio (microphones: record_audio: false)")
        return []
    from dyadlab.acquisition.audio import MicrophoneSpec, open_microphones

    runner = state.runner
    protocol = state.protocol
    specs = {
        runner.plan.labels[person.id]: MicrophoneSpec(
            device=settings.devices[person.label].device,
            channel=settings.devices[person.label].channel,
            sample_rate=float(settings.sample_rate),
        )
        for person in protocol.participants
    }
    simulated = [
        runner.plan.labels[person.id]
        for person in protocol.participants
        if runner.simulate or settings.devices[person.label].simulated
    ]
    virtual = {}
    if simulated:
        from dyadlab.acquisition.simulated_microphones import VoiceRoom

        state.status("microphones", "synthesising the simulated participants' voices (eSpeak NG)")
        state.voice_room = VoiceRoom(rate=float(settings.sample_rate), seed=_session_seed(protocol))
        virtual = {label: state.voice_room.microphone(label, specs[label].channel) for label in simulated}
    captures = open_microphones(
        specs, runner.participants, study=protocol.study, dyad=protocol.dyad, flac_stem=state.stem, virtual=virtual
    )
    for capture in captures:
        resources.callback(_release_microphone, capture)
        if capture.flac_path is not None:
            state.files[f"audio_{capture.participant.label}"] = capture.flac_path
        state.status(
            "microphones",
            f"{capture.participant.label}: {capture.status.device}, channel {capture.spec.channel} "
            f"at {capture.spec.sample_rate:g} Hz as {capture.stream_name}",
        )
    return captures


def _simulation_record(state: _SessionState) -> dict[str, Any] | None:
    """What the simulators put in the data: the EEG simulator's truth and the voices played."""
    record = state.simulator_truth() if state.simulator_truth is not None else None
    if state.voice_room is not None:
        record = {**(record or {}), "voices": state.voice_room.ground_truth()}
    return record


def _release_microphone(capture: Any) -> None:
    try:
        capture.release()
    except Exception:
        logger.exception("releasing the microphone of %s failed", capture.participant.label)


def _preflight_microphones(state: _SessionState) -> None:
    """Each microphone hears its participant: level, clipping, silence, and not the same sound as
    the other one; raise :class:`PreflightFailed` on an error (nothing was recorded)."""
    from dataclasses import asdict

    from dyadlab.acquisition.audio import microphone_problems

    seconds = state.protocol.preflight.seconds
    labels = " and ".join(c.participant.label for c in state.microphones)
    state.status("preflight", f"microphones: ask {labels} to say a few words, one after the other, now ({seconds:g} s)")
    # Only audio captured after the prompt counts (a capture starting up publishes after ~1-2 s).
    wanted = {id(c): c.status.samples + seconds * c.spec.sample_rate for c in state.microphones}
    deadline = time.monotonic() + seconds + 10.0
    while time.monotonic() < deadline and any(c.status.samples < wanted[id(c)] for c in state.microphones):
        time.sleep(0.1)
    recordings = {c.participant.label: c.recent_audio(seconds) for c in state.microphones}
    problems = microphone_problems(recordings, state.microphones[0].spec.sample_rate)
    if state.preflight_report is not None:
        state.preflight_report["microphones"] = [asdict(problem) for problem in problems]
    for problem in problems:
        state.status("preflight", str(problem))
    errors = [problem for problem in problems if problem.severity == "error"]
    if errors:
        listed = "\n".join(f"  - {problem}" for problem in errors)
        raise PreflightFailed(
            "preflight",
            f"a microphone is not ready; nothing was recorded. Fix these and start again:\n{listed}",
            {},
        )
    state.status("preflight", "both microphones hear sound")


def _discard_unrecorded_audio(state: _SessionState) -> None:
    """The recording never started: delete the preflight's audio files (personal data nobody
    agreed to keep) so that the next attempt of this run number starts clean."""
    from dyadlab.acquisition.audio import times_path

    for kind in [kind for kind in state.files if kind.startswith("audio_")]:
        path = state.files.pop(kind)
        for file in (path, times_path(path)):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()


def _microphones_record(state: _SessionState) -> dict[str, Any] | None:
    """What session.json says about audio: whether it is recorded, and each capture."""
    settings = state.protocol.microphones
    if settings is None:
        return None
    return {
        "record_audio": settings.record_audio,
        "captures": [
            {**_jsonable(capture.status), "device_detail": capture.device_description()}
            for capture in state.microphones
        ],
    }


def _wait_until_published(state: _SessionState, source_ids: list[str], timeout: float = 10.0) -> None:
    """Wait until LSL discovery answers for every session stream (a fresh outlet on a busy
    machine can miss the first query waves); preflight and the recorder then find them at once."""
    import pylsl

    deadline = time.monotonic() + timeout
    for wanted in source_ids:
        found = pylsl.resolve_byprop("source_id", wanted, minimum=1, timeout=max(0.1, deadline - time.monotonic()))
        if not found:
            logger.warning("stream %s is not visible on LSL after %.0f s", wanted, timeout)
            return


def _stop_bridge(bridge: Any) -> None:
    try:
        bridge.stop()
    except Exception:
        logger.exception("stopping %s failed", bridge.stream_name)


def _check_known_peers(state: _SessionState, config: LslConfig) -> None:
    """Every PC of ``lsl: known_peers`` answers LSL's discovery query; raise
    :class:`PreflightFailed` naming each one that does not (nothing was recorded). A PC that
    answers with streams of other SessionIDs only is a warning (in ``session.json``'s problems)."""
    from dyadlab.acquisition.lslconfig import session_id_in_force
    from dyadlab.acquisition.lslpeers import peer_problems, query_peers

    peers = ", ".join(config.known_peers)
    session_id = config.session_id or session_id_in_force()
    state.status("preflight", f"asking the LSL peers {peers} for their streams")
    errors, warnings = peer_problems(query_peers(config.known_peers, session_id), session_id)
    for warning in warnings:
        state.status("preflight", warning)
    state.problems.extend(warnings)
    if errors:
        listed = "\n".join(f"  - {error}" for error in errors)
        raise PreflightFailed(
            "preflight",
            f"a PC of the session does not answer; nothing was recorded. Fix this and start again:\n{listed}",
            {},  # nothing recorded: the attempt's record is moved aside (see _release_run_number)
        )
    state.status("preflight", f"LSL peers answered: {peers}")


def _preflight(state: _SessionState, bridges: list[Any]) -> None:
    """Check both EEG streams and the marker stream; raise :class:`PreflightFailed` if not ready."""
    from dyadlab.acquisition.preflight import (
        ChannelThresholds,
        PreflightConfig,
        run_preflight,
    )

    protocol = state.protocol
    settings = protocol.preflight
    config = PreflightConfig(
        study=protocol.study,
        dyad=protocol.dyad,
        participants=tuple(p.label for p in state.runner.participants),
        duration_s=settings.seconds,
        line_freq=float(settings.line_frequency),
        max_bad_channels=settings.max_bad_channels,
        thresholds=ChannelThresholds(noisy_std_uv=settings.noisy_std_uv),
    )
    state.status("preflight", f"checking both participants' signals for {settings.seconds:g} s")
    report = run_preflight(config)
    state.preflight_report = report.to_dict()
    for problem in report.problems:
        state.status("preflight", str(problem))
    if not report.ready:
        listed = "\n".join(f"  - {problem}" for problem in report.problems)
        raise PreflightFailed(
            "preflight",
            f"a participant is not ready; nothing was recorded. Fix these and start again:\n{listed}",
            {},  # nothing recorded: the attempt's record is moved aside (see _release_run_number)
        )
    state.status("preflight", "both participants ready")


def _open_windows(state: _SessionState, resources: contextlib.ExitStack, hub: Any, responses: Any) -> Any:
    """Open the participants' windows (a :class:`~dyadlab.tasks.kit.TaskContext`) and, with response
    devices, have each participant press once; raise :class:`PreflightFailed` if a device is silent."""
    from dyadlab.tasks.input import ResponseDeviceError
    from dyadlab.tasks.kit import TaskContext

    runner = state.runner
    protocol = state.protocol
    autopilot = None
    if runner.autopilot:
        autopilot = protocol.autopilot.model_copy(update={"speed": max(1.0, runner.speed)})
    context = TaskContext(
        hub,
        responses,
        participants={p.label: p.role for p in runner.participants},
        data_stem=state.stem.with_name(state.stem.name + "_beh"),
        display=protocol.screens,
        keys=protocol.keys,
        autopilot=autopilot,
        seed=_session_seed(protocol),
        screenshot_dir=runner.screenshot_dir,
        experiment_info={
            "study": protocol.study,
            "dyad": protocol.dyad,
            "session": protocol.session,
            "protocol": protocol.name,
        },
    )
    resources.callback(context.close)
    context.open()
    state.context = context
    state.status(
        "windows",
        f"{protocol.screens.layout} layout, {len(context.views)} window(s)"
        + (f", autopilot at speed {autopilot.speed:g}" if autopilot else ""),
    )
    if protocol.keys.uses_devices and autopilot is None:  # each participant presses once: whose device answers
        try:
            answered = context.check_response_devices()
        except ResponseDeviceError as error:
            raise PreflightFailed(
                "devices", f"{error} Nothing was recorded; fix the device and start again.", {}
            ) from None
        for label, device in answered.items():
            state.status("devices", f"participant {label}'s button answered from {device}")
    return context


def _run_tasks(state: _SessionState, context: Any, hub: Any) -> None:
    """Frame the blocks with session_start / session_end and run them in order."""
    from dyadlab.acquisition.markers import Marker
    from dyadlab.tasks.kit import SessionAborted

    runner = state.runner
    protocol = state.protocol
    state.phase = "tasks"
    if state.abort_reason is not None:  # a stop signal came before the blocks
        context.request_abort(state.abort_reason)
    registry = paradigms()
    ids = protocol.block_ids()
    for position, index in enumerate(runner.plan.block_order, start=1):
        block = protocol.blocks[index]
        paradigm_class = registry[block.task]
        block_params = resolve_block_params(block, paradigm_class)
        paradigm = paradigm_class()
        params = paradigm_class.Params.model_validate(block_params)
        # The protocol's cue replaces the paradigm's own ("" silences it).
        cue = paradigm.cue_at_end(params) if block.cue_at_end is None else (block.cue_at_end or None)
        state.blocks.append(
            BlockRecord(id=ids[index], task=block.task, position=position, params=block_params, cue_at_end=cue)
        )
        field_name = duration_field(paradigm_class)
        seconds = getattr(params, field_name, None) if field_name else None
        state.block_plans.append(
            _BlockPlan(
                planned_s=None if seconds is None else context.scaled(float(seconds)),
                trial_marker=paradigm.trial_marker,
                planned_trials=paradigm.planned_trials(params),
            )
        )
    follower = state.simulator_follower
    if follower is not None and not follower.connected.wait(10.0):
        logger.warning("The simulator is not following the marker stream yet: the first block's coupling may be off")
    outcome = "aborted"
    try:
        context.mark_on_next_flip(Marker(event="session_start", value=_session_marker_value(state)))
        context.flip(read_keys=False)  # an abort requested now still gets a session_start
        state.start_lsl = _last_marker_stamp(context, "session_start")
        state.start_wall = now_wall()
        state._write_session_json()
        for record in state.blocks:
            if state.recording_failed.is_set():
                raise state._recording_failed()  # no block starts without a recording
            paradigm_class = registry[record.task]
            paradigm = paradigm_class()
            params = paradigm_class.Params.model_validate(record.params)
            first_flip = len(context.flip_log)
            state.block_first_flip = first_flip
            record.status = "running"
            record.start_wall = now_wall()
            state.status(
                "block", f"{record.position}/{len(state.blocks)} {record.id} ({record.task}); {_stream_health(state)}"
            )
            state._write_session_json()  # killed during this block: the record says it was running
            try:
                paradigm.run(context, params, record.id)
            except SessionAborted:
                record.status = "aborted"
                raise
            except BaseException:
                record.status = "failed"
                raise
            else:
                record.status = "completed"
                if record.cue_at_end:
                    state.status("cue", record.cue_at_end)
            finally:
                record.end_wall = now_wall()
                _fill_block_times(record, context.flip_log[first_flip:])
                state._write_session_json()  # at most one block behind after a kill -9
        if state.recording_failed.is_set():
            raise state._recording_failed()  # it failed during the last block: not complete
        outcome = "complete"
        state.complete = True
    except SessionAborted as aborted:
        if state.recording_failed.is_set():  # not an operator abort: the session failed (raised later)
            state.status("recording", f"{aborted}: ending the session")
        else:
            state.aborted = True
            state.abort_reason = state.abort_reason or str(aborted)
            state.status("aborted", f"{aborted}: finishing the recording")
    finally:
        end = Marker(event="session_end", value=outcome)
        try:
            context.mark_on_next_flip(end)
            context.flip(read_keys=False)  # a second Escape must not lose session_end
            state.end_lsl = _last_marker_stamp(context, "session_end")
        except Exception:
            logger.exception("session_end could not be pushed on a flip; pushing it directly")
            state.end_lsl = hub.push(end)
        state.end_wall = now_wall()


def _bridge_record(bridge: Any) -> dict[str, Any]:
    """What session.json keeps of one EEG stream's delivery: the stalls (a cable out, a board that
    stopped) are reported here even when no sample was lost (an LSL source resumes by itself)."""
    status = bridge.status
    return {
        "stream": status.stream_name,
        "participant": bridge.participant.label,
        "samples": status.samples,
        "stalls": status.stalls,
        "stalls_detected_local_clock": list(bridge.stall_detected_at),
        "reconnects": status.reconnects,
        "dropped_packets": status.dropped_packets,
        "lost_markers": status.lost_markers,
        "last_state": status.state.value,
        "last_message": status.message,
    }


def _stream_health(state: _SessionState) -> str:
    """One line about both EEG streams for the operator: rate, dropped packets, faults."""
    parts = []
    for bridge in state.bridges:
        status = bridge.status
        text = f"{bridge.participant.label} {status.rate:.0f}/{status.nominal_rate:.0f} Hz"
        if status.dropped_packets or status.reconnects or status.state.value != "streaming":
            text += f" [{status.state.value}, {status.dropped_packets} dropped, {status.reconnects} reconnects]"
        parts.append(text)
    return ", ".join(parts)


def _last_marker_stamp(context: Any, event: str) -> float | None:
    for record in reversed(context.flip_log):
        for marker, stamp in record.markers:
            if marker.event == event:
                return stamp
    return None


def _fill_block_times(record: BlockRecord, flips: list[Any]) -> None:
    """The block's first block_start / last block_end stamps and its condition(s), from its flips.

    A composite paradigm (e.g. the synchrony probe) emits several analysis blocks; their
    conditions are listed in order.
    """
    conditions: list[str] = []
    for flip in flips:
        for marker, stamp in flip.markers:
            if marker.event == "block_start":
                if record.start_lsl is None:
                    record.start_lsl = stamp
                if marker.condition:
                    conditions.append(marker.condition)
            elif marker.event == "block_end":
                record.end_lsl = stamp
    record.condition = "+".join(conditions) or None


def _session_seed(protocol: Protocol) -> int:
    """A seed fixed by study, dyad and session: a rerun of the same session randomises the same."""
    digest = hashlib.sha256(f"{protocol.study}/{protocol.dyad}/{protocol.session}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _session_marker_value(state: _SessionState) -> dict[str, Any]:
    protocol = state.protocol
    return {
        "study": protocol.study,
        "dyad": protocol.dyad,
        "session": protocol.session,
        "protocol": protocol.name,
        "participants": {p.label: {"id": p.participant_id, "role": p.role} for p in state.runner.participants},
    }


def _has_aux(bridge: Any) -> bool:
    source = getattr(bridge, "source", None)
    return bool(getattr(source, "aux_channel_names", None))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Dataclasses, paths and numpy scalars as plain JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("dyadlab", "psychopy", "pylsl", "brainflow", "pyxdf", "numpy", "scipy", "pydantic"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        import pylsl

        versions["liblsl"] = str(pylsl.library_version())
    except Exception:
        versions["liblsl"] = None
    return versions


def _quickcheck_summary(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    return str(result.get("summary", "")) if isinstance(result.get("summary"), str) else "report written"


def now_wall() -> str:
    """Wall-clock time for people (metadata only, never in a stream)."""
    return datetime.now(timezone.utc).isoformat()
