"""A virtual X display for headless machines (CI, servers, ``make demo`` over SSH).

PsychoPy needs an X display. When ``DISPLAY`` is unset, :func:`ensure_display` starts ``Xvfb``
with two screens joined by Xinerama (so that the one-screen-per-participant layout works too),
lets Xvfb pick a free display number itself (``-displayfd``), points ``DISPLAY`` at it and stops
it again at the end. Timing under Xvfb is meaningless (no vsync): it is for running, testing and
demonstrating, never for measuring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import IO

from dyadlab import DyadlabError

logger = logging.getLogger(__name__)


class DisplayError(DyadlabError, RuntimeError):
    """No display is available and none could be started."""


@contextlib.contextmanager
def ensure_display(
    screen_size: tuple[int, int] = (1280, 800), n_screens: int = 2, timeout: float = 15.0, keep_until_exit: bool = False
) -> Iterator[str | None]:
    """Make sure an X display exists for the duration of the ``with`` block.

    Parameters
    ----------
    screen_size : tuple of int
        Width and height of each virtual screen.
    n_screens : int
        How many virtual screens (joined side by side with Xinerama).
    timeout : float
        Seconds to wait for Xvfb to come up.
    keep_until_exit : bool
        Leave Xvfb running until the process has exited (Linux ``PR_SET_PDEATHSIG``) instead of
        stopping it with the ``with`` block: pyglet keeps its X connection open until the
        interpreter ends, and Xlib kills a process whose server disappears under it.

    Yields
    ------
    str | None
        The virtual display (e.g. ``":99"``) started here, or ``None`` if ``DISPLAY`` was set.
    """
    if os.environ.get("DISPLAY"):
        yield None
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise DisplayError(
            "No display (DISPLAY is unset) and Xvfb is not installed: install it with "
            "`sudo apt-get install xvfb` (or `make system-deps`), or run on a machine with a screen."
        )
    width, height = screen_size
    screens: list[str] = []
    for index in range(n_screens):
        screens += ["-screen", str(index), f"{width}x{height}x24"]
    read_end, write_end = os.pipe()
    command = [xvfb, "-displayfd", str(write_end), *screens, "+xinerama", "-nolisten", "tcp", "-noreset"]
    # Xvfb's messages go to an unlinked temporary file, never to a pipe: a pipe nobody drains
    # during the session would block the X server (and PsychoPy's flips) once it fills.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command,
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
        preexec_fn=_die_with_parent if keep_until_exit else None,
    )
    os.close(write_end)
    try:
        display = _read_display_number(read_end, process, timeout, log)
    except BaseException:
        _stop(process)
        raise
    finally:
        os.close(read_end)
        log.close()  # Xvfb keeps its own descriptor
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    logger.info("Started a virtual display %s (Xvfb, %d screens of %dx%d)", display, n_screens, width, height)
    if keep_until_exit:
        yield display  # Xvfb gets SIGTERM from the kernel when this process has exited
        return
    try:
        yield display
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        _stop(process)


def _read_display_number(fd: int, process: subprocess.Popen, timeout: float, log: IO[bytes]) -> str:
    deadline = time.monotonic() + timeout
    text = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 64)
            text += chunk
            if text.endswith(b"\n") or not chunk:
                break
        if process.poll() is not None:
            break
    number = text.strip()
    if not number.isdigit():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)  # it may be exiting right now: let it finish its message
        log.seek(0)
        error = log.read()
        raise DisplayError(
            "Xvfb did not start a virtual display"
            + (f": {error.decode(errors='replace').strip()[-400:]}" if error else f" within {timeout:.0f} s")
        )
    return f":{number.decode()}"


def _die_with_parent() -> None:
    """In the Xvfb child before exec: receive SIGTERM when the parent process ends (Linux)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
