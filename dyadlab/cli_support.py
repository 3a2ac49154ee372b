"""What every ``dyadlab`` command shares: domain errors as a clear message with exit code 2, and
anything else as one bug-report line naming the file that holds the traceback."""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from dyadlab import DyadlabError

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
