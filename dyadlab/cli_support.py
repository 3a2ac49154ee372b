"""What every ``dyadlab`` command shares: domain errors as a clear message with exit code 2,
anything else as one bug-report line naming the file that holds the traceback, and the progress
bar of long runs."""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dyadlab import DyadlabError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Exit code of a command that stopped on bad input or a failed device, file or session.
EXIT_USER_ERROR = 2
#: Exit code of a command that stopped on a bug (BSD ``EX_SOFTWARE``).
EXIT_BUG = 70


class UserError(click.ClickException):
    """A :class:`~dyadlab.DyadlabError` on the command line: its message, exit code 2."""

    exit_code = EXIT_USER_ERROR


@contextmanager
def user_errors(*also: type[Exception]) -> Iterator[None]:
    """Turn :class:`~dyadlab.DyadlabError` (and the exception types ``also``) into :class:`UserError`."""
    caught: tuple[type[Exception], ...] = (DyadlabError, *also)
    try:
        yield
    except caught as error:
        raise UserError(str(error)) from error


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (which compare false with any
    bound, so a plain range lets ``nan`` through)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number: float = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def report_bug(error: BaseException) -> Path:
    """Write the traceback of an unexpected error to a log file; its path."""
    folder = Path(tempfile.gettempdir()) / "dyadlab-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(error)))
    return path


class ProgressBar:
    """A rich progress bar on stderr, one stage at a time, when ``enabled``; else nothing.

    Use it as a context manager; :meth:`stage` starts a stage (replacing the previous one) and
    :meth:`advance` counts one step of it. The bar is transient: it leaves no trace in the
    terminal once the ``with`` block ends.

    Parameters
    ----------
    enabled : bool
        Show the bar (a command's ``--no-progress`` turns it off).
    """

    def __init__(self, enabled: bool) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def stage(self, description: str, total: int = 1) -> None:
        """Start the stage ``description`` of ``total`` steps, in place of the previous one."""
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(description, total=total)

    def advance(self) -> None:
        """One step of the current stage done."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)
