"""Graceful stop on SIGINT (Ctrl+C) and SIGTERM for long-running commands."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class StopOnSignal:
    """While active, SIGINT and SIGTERM set :attr:`event` instead of killing the process.

    The previous handlers are restored on exit. Until :attr:`armed` is set, a signal interrupts
    as usual (``KeyboardInterrupt``), so that a wait before anything needs finishing can be
    abandoned; once armed, a repeated signal only calls ``on_repeat`` and never interrupts the
    finishing work (closing a file, releasing devices).

    Parameters
    ----------
    armed : bool
        Whether signals set the event from the start.
    on_repeat : callable | None
        Called (in the signal handler) for each signal after the first, e.g. to say "please wait".
    """

    def __init__(self, *, armed: bool = True, on_repeat: Callable[[], None] | None = None) -> None:
        self.event = threading.Event()
        self.armed = armed
        self._on_repeat = on_repeat
        self._previous: dict[int, Callable[..., Any] | int | None] = {}

    def __enter__(self) -> StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.armed:
            raise KeyboardInterrupt
        if self.event.is_set() and self._on_repeat is not None:
            self._on_repeat()
        self.event.set()
