"""The session console: what the terminal of ``dyadlab run`` and ``dyadlab demo`` shows.

While a session runs, one live status panel (rich ``Live``) says where it is: the running block
(id, task, time elapsed and left, trials done of planned), the session (time elapsed, planned
time left), both EEG streams (rate, samples, age of the newest sample, stalls) and the recorder
(file, size, samples per stream). The runner's status messages print above the panel. Without a
terminal (output to a file or a pipe) the panel is replaced by one plain status line every
:data:`PLAIN_INTERVAL_S` seconds.

Cues for the experimenter: a block may say what the experimenter must be told when it ends
(:meth:`dyadlab.tasks.paradigms.base.Paradigm.cue_at_end`, e.g. eyes-closed rest; a protocol
block's ``cue_at_end`` replaces it). The runner reports it as a ``cue`` status; the console shows
it in the panel and speaks it with ``espeak-ng`` in a background process (:class:`CueSpeaker`),
which never blocks the session. Without ``espeak-ng`` the cue is shown only (logged once).

Library chatter stays out of the terminal (:meth:`SessionConsole.session_log`): for the length of
the run, file descriptor 2 (where liblsl's INFO lines and BrainFlow's board logger write, from C)
goes to ``<stem>_session.log``, PsychoPy's console logger (stdout) is silenced and its warnings go
to that file, and Python's log records of INFO and above are written there as well.

After the run, :func:`print_session_end` prints what was saved (XDF path, size, samples per
stream), what ``session.json`` says (status, stop reason) and the quick-check's verdict with every
warning behind it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from dyadlab.protocols.runner import SessionResult, SessionRunner, SessionSnapshot

logger = logging.getLogger(__name__)

#: Seconds between two plain status lines when the output is not a terminal.
PLAIN_INTERVAL_S = 10.0
#: Panel refreshes per second on a terminal.
REFRESH_PER_SECOND = 4.0
#: Seconds a cue stays in the panel (it also stays in the scrollback above it).
CUE_SHOWN_S = 60.0
#: Bridge states in which a running session's stream delivers nothing (dyadlab.acquisition.bridge.BridgeState);
#: ``stopped`` is only shown plainly: bridges stop when the session ends.
_NOT_DELIVERING = ("stalled", "reconnecting")


def _clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour)."""
    whole = int(round(max(0.0, seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class CueSpeaker:
    """Speak cues with ``espeak-ng`` in a background process.

    Parameters
    ----------
    program : str
        The speech program, looked up on ``PATH`` (``espeak-ng``, Debian package of that name).

    Notes
    -----
    :meth:`speak` starts the program and returns at once; the text goes to its standard input,
    so a cue that begins with ``-`` is never read as an option. The program's own messages go
    to file descriptor 2, which is the session log while a session runs. A missing program is
    logged once; cues are then shown only.
    """

    def __init__(self, program: str = "espeak-ng") -> None:
        self.program = program
        self.executable = shutil.which(program)
        self._missing_logged = False
        self._running: list[tuple[subprocess.Popen[bytes], str]] = []

    def speak(self, text: str) -> bool:
        """Start speaking ``text``; False when it cannot be spoken (the program is missing)."""
        self.reap()
        if self.executable is None:
            if not self._missing_logged:
                logger.warning(
                    "%s is not installed: cues are shown, not spoken (install the Debian package espeak-ng)",
                    self.program,
                )
                self._missing_logged = True
            return False
        try:
            process = subprocess.Popen(
                [self.executable, "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
            )
            assert process.stdin is not None  # stdin=PIPE
            process.stdin.write(text.encode("utf-8"))  # far below a pipe's buffer: never blocks
            process.stdin.close()
        except OSError as error:
            logger.warning("cannot speak the cue with %s (%s); it is shown only", self.executable, error)
            return False
        logger.info("cue spoken with %s: %s", self.executable, text)
        self._running.append((process, text))
        return True

    def reap(self, wait_s: float = 0.0) -> None:
        """Collect finished speech processes (waiting up to ``wait_s`` for each), logging failures."""
        still = []
        for process, text in self._running:
            try:
                code = process.wait(timeout=wait_s) if wait_s > 0 else process.poll()
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                still.append((process, text))
            elif code != 0:
                logger.warning("%s exited with code %d speaking %r (no audio output?)", self.program, code, text)
        self._running = still


class SessionConsole:
    """The live terminal view of one run (see the module docstring).

    Parameters
    ----------
    console : rich.console.Console
        Where to print; a console that is not a terminal gets plain status lines.
    speaker : CueSpeaker | None
        Speaks cues; a new :class:`CueSpeaker` by default.
    plain_interval_s : float
        Seconds between plain status lines without a terminal.
    """

    def __init__(
        self, console: Console, *, speaker: CueSpeaker | None = None, plain_interval_s: float = PLAIN_INTERVAL_S
    ) -> None:
        self.console = console
        self.speaker = speaker if speaker is not None else CueSpeaker()
        self.plain_interval_s = plain_interval_s
        self.log_path: Path | None = None
        self._cue: tuple[str, float] | None = None
        self._last_message = ""

    # -- the runner's callbacks ----------------------------------------------------------------
    def status(self, stage: str, message: str) -> None:
        """The runner's status callback: one line above the panel; cues are also shown and spoken."""
        logger.info("%s: %s", stage, message)
        self._last_message = message
        if stage == "cue":
            self._cue = (message, time.monotonic())
            self.console.print(f"[bold magenta]{'CUE':>10}[/] [bold]{message}[/]")
            self.speaker.speak(message)
        elif stage == "lsl" and message.startswith("local only"):
            self.console.print(f"[bold yellow]{'warning':>10}[/] {message}")
        else:
            if stage == "block":
                self._cue = None  # the next block began: the previous cue was given
            self.console.print(f"[bold blue]{stage:>10}[/] {message}")

    @contextlib.contextmanager
    def session_log(self, path: Path) -> Iterator[None]:
        """Route library output into ``path`` while the run lasts (the runner's ``session_log``).

        File descriptor 2 (liblsl, BrainFlow and every other C library writing to stderr),
        PsychoPy's warnings and Python log records of INFO and above go to the file; what the
        terminal's log handlers showed before, they still show.
        """
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root_level = root.level
        # Handlers without a level of their own followed the root's: keep them at it, so that the
        # terminal shows no INFO record now that the root passes them to the file.
        unlevelled = [h for h in root.handlers if h.level == logging.NOTSET]
        for existing in unlevelled:
            existing.setLevel(root_level)
        root.addHandler(handler)
        if root_level == logging.NOTSET or root_level > logging.INFO:
            root.setLevel(logging.INFO)
        self.log_path = path
        try:
            with _stderr_into(path), _psychopy_warnings_into(path):
                logger.info("session log of %s", path.name)
                yield
        finally:
            self.speaker.reap(wait_s=0.0)
            root.removeHandler(handler)
            handler.close()
            root.setLevel(root_level)
            for existing in unlevelled:
                existing.setLevel(logging.NOTSET)

    # -- the live view ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def live(self, runner: SessionRunner) -> Iterator[None]:
        """Show the panel (a terminal) or plain status lines (no terminal) while the block runs."""
        if self.console.is_terminal and not self.console.is_dumb_terminal:
            live = Live(
                console=self.console,
                get_renderable=lambda: self.render(runner.snapshot()),
                refresh_per_second=REFRESH_PER_SECOND,
                transient=True,  # the end of the run prints what was saved instead
                redirect_stderr=False,  # fd 2 is the session log while a run lasts
            )
            with live:
                yield
            return
        stop = threading.Event()

        def plain_lines() -> None:
            while not stop.wait(self.plain_interval_s):
                snapshot = runner.snapshot()
                if snapshot is not None:
                    self.console.print(f"[bold blue]{'status':>10}[/] {self.plain_line(snapshot)}", highlight=False)

        thread = threading.Thread(target=plain_lines, name="session-console", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=2.0)

    def render(self, snapshot: SessionSnapshot | None) -> RenderableType:
        """The panel for one snapshot."""
        if snapshot is None:
            return Panel(Text("starting..."), title="session", title_align="left")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True, min_width=8)
        grid.add_column(ratio=1)  # takes what the labels leave; its lines are cut short, never folded
        rows = [("block", self._block_text(snapshot)), ("session", self._session_text(snapshot))]
        rows += [(f"EEG {label}", _stream_text(status)) for label, status in snapshot.streams]
        rows.append(("recorder", _recorder_text(snapshot)))
        for label, text in rows:
            text.no_wrap, text.overflow = True, "ellipsis"  # a name is whole or cut short, never split
            grid.add_row(label, text)
        parts: list[RenderableType] = [grid]
        cue = self._current_cue()
        if cue:
            parts.append(Text(f"CUE: {cue}", style="bold magenta"))
        title = f"session · {snapshot.stage}"
        return Panel(Group(*parts), title=title, title_align="left", border_style="magenta" if cue else "blue")

    def plain_line(self, snapshot: SessionSnapshot) -> str:
        """The panel's content on one line (no terminal)."""
        streams = "; ".join(f"EEG {label} {_stream_text(status).plain}" for label, status in snapshot.streams)
        parts = [
            f"block {self._block_text(snapshot).plain}",
            f"session {self._session_text(snapshot).plain}",
            streams,
            f"recorder {_recorder_text(snapshot).plain}",
        ]
        cue = self._current_cue()
        if cue:
            parts.append(f"CUE: {cue}")
        return " | ".join(part for part in parts if part)

    def _current_cue(self) -> str | None:
        if self._cue is None or time.monotonic() - self._cue[1] > CUE_SHOWN_S:
            return None
        return self._cue[0]

    def _block_text(self, snapshot: SessionSnapshot) -> Text:
        block = snapshot.block
        if block is None:
            if snapshot.session_elapsed_s is None:
                return Text(f"none yet ({snapshot.stage}: {self._last_message})", style="dim")
            return Text(f"between blocks ({snapshot.blocks_done} done)", style="dim")
        text = Text(f"{block.position}/{block.total} ")
        text.append(block.id, style="bold cyan")
        text.append(f" ({block.task})")
        if block.elapsed_s is None:
            text.append(" · instructions")
        else:
            text.append(f" · {_clock(block.elapsed_s)} elapsed")
            if block.remaining_s is not None:
                text.append(f" · {_clock(block.remaining_s)} left", style="bold")
        if block.trials_planned is not None or block.trials_done is not None:
            text.append(f" · trials {block.trials_done or 0}/{block.trials_planned or '?'}")
        return text

    def _session_text(self, snapshot: SessionSnapshot) -> Text:
        if snapshot.session_elapsed_s is None:
            return Text("not started", style="dim")
        text = Text(f"{_clock(snapshot.session_elapsed_s)} elapsed · about {_clock(snapshot.planned_left_s)} left")
        if snapshot.unknown_blocks_left:
            many = snapshot.unknown_blocks_left
            text.append(f" + {many} block{'s' if many != 1 else ''} of trials")
        return text


def _stream_text(status: Any) -> Text:
    """One EEG stream's health: rate, samples, newest sample's age, faults."""
    state = status.state.value
    text = Text(f"{status.stream_name} {status.rate:.0f}/{status.nominal_rate:g} Hz · {status.samples:,} samples")
    if status.last_sample_age is not None:
        text.append(f" · last {status.last_sample_age:.1f} s ago")
    if state in _NOT_DELIVERING:
        text.append(f" · {state.upper()}", style="bold red")
    elif state != "streaming":
        text.append(f" · {state}", style="dim")
    faults = []
    if status.dropped_packets:
        faults.append(f"{status.dropped_packets} dropped")
    if status.stalls:
        faults.append(f"{status.stalls} stall{'s' if status.stalls != 1 else ''}")
    if status.reconnects:
        faults.append(f"{status.reconnects} reconnect{'s' if status.reconnects != 1 else ''}")
    if faults:
        text.append(" · " + ", ".join(faults), style="yellow")
    return text


def _recorder_text(snapshot: SessionSnapshot) -> Text:
    summary = snapshot.recording
    if summary is None:
        return Text("not recording yet", style="dim")
    text = Text(f"{Path(summary.path).name} · {summary.file_size / 1e6:.1f} MB · ")
    text.append(", ".join(f"{s.name} {s.sample_count:,}" for s in summary.streams))
    if summary.problems:
        text.append(f" · {len(summary.problems)} problem(s)", style="bold red")
    return text


# -- library output into the session log --------------------------------------------------------


@contextlib.contextmanager
def _stderr_into(path: Path) -> Iterator[None]:
    """File descriptor 2 appends to ``path`` (C libraries write there: liblsl, BrainFlow)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _psychopy_warnings_into(path: Path) -> Iterator[None]:
    """PsychoPy's log (its console target writes warnings to stdout) into ``path`` instead."""
    from psychopy import logging as psychopy_logging

    console = psychopy_logging.console
    console_level = console.level
    target = psychopy_logging.LogFile(str(path), level=psychopy_logging.WARNING, filemode="a")
    console.setLevel(psychopy_logging.CRITICAL)
    try:
        yield
    finally:
        psychopy_logging.flush()
        psychopy_logging.root.removeTarget(target)
        console.setLevel(console_level)


# -- the end of a run -------------------------------------------------------------------------------


def print_session_end(console: Console, result: SessionResult) -> None:
    """What was saved, what ``session.json`` says, the quick-check and every warning."""
    record = _session_json(result) or result.session
    reason = record.get("abort_reason")
    state = (
        "[bold green]complete[/]"
        if result.complete
        else "[bold yellow]INCOMPLETE (aborted" + (f": {reason}" if reason else "") + ")[/]"
    )
    console.print(f"\nSession {state} in {result.duration:.1f} s.")
    recorder = record.get("recorder") or {}
    xdf = result.files.get("xdf")
    if xdf is not None:
        size = recorder.get("file_size") or xdf.stat().st_size
        console.print(f"[bold]saved[/] {xdf} ({size / 1e6:.1f} MB)", highlight=False)
        for stream in recorder.get("streams") or []:
            console.print(f"  {stream['name']:<24} {stream['sample_count']:>10,} samples", highlight=False)
    session_path = result.files.get("session")
    if session_path is not None:
        said = f"status {record.get('status')!r}"
        if reason:
            said += f", stop reason: {reason}"
        console.print(f"[bold]session.json[/] {session_path}: {said}", highlight=False)
    console.print("Files:")
    for kind, path in result.files.items():
        console.print(f"  {kind:<16} {path}", highlight=False)
    if result.quickcheck_summary:
        console.print("quick-check: " + result.quickcheck_summary, highlight=False)
    for line in quickcheck_warnings(result.quickcheck):
        console.print(f"  [yellow]•[/] {line}", highlight=False)
    for problem in result.problems:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)


def quickcheck_warnings(result: dict[str, Any] | None) -> list[str]:
    """Every warning behind the quick-check's verdict: the check's warnings and, when the data
    quality is CHECK, each participant's problems (not only how many there are)."""
    if not result:
        return []
    lines = [str(warning) for warning in result.get("warnings") or []]
    verdict = result.get("verdict") or {}
    if verdict.get("data_quality") == "check":
        for label, quality in sorted((result.get("quality") or {}).items()):
            if isinstance(quality, dict):
                lines += [f"participant {label}: {problem}" for problem in quality.get("problems") or []]
    return list(dict.fromkeys(lines))


def _session_json(result: SessionResult) -> dict[str, Any] | None:
    """The session record as it is on disk (what a later reader sees), if it can be read."""
    path = result.files.get("session")
    if path is None:
        return None
    try:
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        logger.warning("cannot read %s (%s); showing the record in memory", path, error)
        return None
