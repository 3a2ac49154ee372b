"""Simulated participants that press real keys.

The autopilot sends key events through the X server's XTEST extension (python-xlib, a PsychoPy
dependency), so PsychoPy's keyboard receives them exactly like a person's presses, with HID
key-down times: tasks, the key reader and the response stream are exercised end to end. Where
there is no X server (Windows, macOS), it falls back to ``KeyboardDevice.makeResponse``, which
puts the press directly into PsychoPy's keyboard buffer (the HID queue is then not exercised).

Presses are scheduled on PsychoPy's clock and sent by a background thread, so reaction times do
not depend on the task's frame rate. Everything random is drawn from per-participant generators
seeded from ``AutopilotSettings.seed``: the same seed gives the same decisions.

Reaction times follow an ex-Gaussian distribution (a normal ``mu, sigma`` plus an exponential
``tau``), the usual model of human RT distributions. ``error_rate`` is the probability that a
participant does not respond to a go signal (an omission); omissions are the only error a
one-key task can have.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

_X_KEYSYMS = {"escape": "Escape", "space": "space", "return": "Return", "tab": "Tab"}


class SimulatedParticipant(BaseModel):
    """Behaviour of one simulated participant (times in seconds)."""

    model_config = ConfigDict(extra="forbid")

    rt_mu: float = Field(0.30, gt=0, description="Gaussian mean of the ex-Gaussian reaction time")
    rt_sigma: float = Field(0.04, ge=0, description="Gaussian SD of the ex-Gaussian reaction time")
    rt_tau: float = Field(0.08, ge=0, description="exponential mean of the ex-Gaussian reaction time")
    error_rate: float = Field(0.05, ge=0, le=1, description="probability of not responding to a go signal")
    tap_asynchrony_mean: float = Field(-0.03, description="mean tap time minus pacer tick (negative = ahead)")
    tap_asynchrony_sd: float = Field(0.02, ge=0)
    tap_interval_cv: float = Field(0.04, ge=0, le=0.5, description="continuation inter-tap interval CV")
    reading_time: float = Field(2.0, ge=0, description="time to read an instruction screen before 'ready'")


class AutopilotSettings(BaseModel):
    """The simulated dyad.

    Attributes
    ----------
    seed : int
        Seed of every random decision.
    speed : float
        Acceleration factor of a pilot: every paradigm divides its timed parts by it (rest,
        conversation, reading time, breaks, trial waits, response windows and feedback, tapping
        pace), and the simulated reaction times are divided by it too.
    participants : dict
        Behaviour per participant label.
    key_hold : float
        How long each simulated key stays down.
    injector : "auto" | "xtest" | "make-response"
        How presses reach PsychoPy (``auto``: XTEST when ``DISPLAY`` is set on Linux).
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    speed: float = Field(1.0, ge=1.0, le=1000.0)
    participants: dict[str, SimulatedParticipant] = Field(
        default_factory=lambda: {"A": SimulatedParticipant(), "B": SimulatedParticipant(rt_mu=0.33, rt_tau=0.1)}
    )
    key_hold: float = Field(0.06, gt=0, le=1.0)
    injector: Literal["auto", "xtest", "make-response"] = "auto"


class _XTestInjector:
    """Real X key events through XTEST, on a connection owned by the autopilot thread."""

    def __init__(self) -> None:
        from Xlib import XK, X, display
        from Xlib.ext import xtest

        self._display = display.Display()
        if not self._display.has_extension("XTEST"):
            raise RuntimeError(f"The X server {os.environ.get('DISPLAY')} has no XTEST extension.")
        self._xtest = xtest
        self._XK = XK
        self._press, self._release = X.KeyPress, X.KeyRelease

    def keycode(self, key: str) -> int:
        keysym = self._XK.string_to_keysym(
            _X_KEYSYMS.get(key, key.upper() if key.startswith("f") and key[1:].isdigit() else key)
        )
        code = self._display.keysym_to_keycode(keysym)
        if not code:
            raise ValueError(f"The X server has no key for {key!r}.")
        return code

    def send(self, key: str, down: bool) -> None:
        self._xtest.fake_input(self._display, self._press if down else self._release, self.keycode(key))
        self._display.sync()

    def close(self) -> None:
        self._display.close()


class _MakeResponseInjector:
    """Presses stored straight into PsychoPy's keyboard buffer (no X server)."""

    def __init__(self) -> None:
        from psychopy import core
        from psychopy.hardware import keyboard

        # the keyboard device is a singleton; constructing it again would reset its state
        self._device = keyboard.KeyboardDevice._instance or keyboard.KeyboardDevice()
        self._core = core
        self._down: dict[str, float] = {}

    def send(self, key: str, down: bool) -> None:
        if down:
            self._down[key] = self._core.getTime()
        else:
            t_down = self._down.pop(key, self._core.getTime())
            response = self._device.makeResponse(code=key, tDown=t_down, name=key)
            response.duration = self._core.getTime() - t_down

    def close(self) -> None:
        self._down.clear()


class Autopilot:
    """Simulated participants pressing keys on a schedule.

    Lifecycle: ``start()`` → schedule presses → ``stop()`` (idempotent; also a context manager).

    Parameters
    ----------
    settings : AutopilotSettings
    keys : dict
        Participant label → that participant's respond key.
    """

    def __init__(self, settings: AutopilotSettings, keys: dict[str, str]) -> None:
        missing = set(keys) - set(settings.participants)
        if missing:
            raise ValueError(
                f"The autopilot has no behaviour for participant(s) {sorted(missing)}; add them to 'participants'."
            )
        self.settings = settings
        self._keys = dict(keys)
        labels = sorted(settings.participants)
        self._rngs = {label: np.random.default_rng([settings.seed, i]) for i, label in enumerate(labels)}
        self._queue: list[tuple[float, int, str, bool]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.injector_name = self._choose_injector()
        # (key, down, local_clock() before and after sending): bounds when the event happened
        self.sent: list[tuple[str, bool, float, float]] = []
        import pylsl

        self._local_clock = pylsl.local_clock

    def _choose_injector(self) -> str:
        if self.settings.injector != "auto":
            return self.settings.injector
        if sys.platform.startswith("linux") and os.environ.get("DISPLAY"):
            return "xtest"
        return "make-response"

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread that sends the scheduled presses."""
        if self._running:
            return
        ready = threading.Event()
        self._running = True
        self._thread = threading.Thread(target=self._run, args=(ready,), name="dyadlab-autopilot", daemon=True)
        self._thread.start()
        ready.wait(5.0)
        if self._error is not None:
            raise RuntimeError(f"The autopilot could not start its {self.injector_name} key injector: {self._error}")
        logger.info(
            "Autopilot started (injector %s, seed %d, speed %g)",
            self.injector_name,
            self.settings.seed,
            self.settings.speed,
        )

    def stop(self) -> None:
        """Release held keys and stop the thread; idempotent."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> Autopilot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        from psychopy import core

        try:
            injector = _XTestInjector() if self.injector_name == "xtest" else _MakeResponseInjector()
        except BaseException as error:
            self._error = error
            self._running = False
            ready.set()
            return
        ready.set()
        held: set[str] = set()
        try:
            while True:
                with self._wake:
                    if not self._running:
                        break
                    if not self._queue:
                        self._wake.wait(0.5)
                        continue
                    due = self._queue[0][0]
                    wait = due - core.getTime()
                    if wait > 0.0005:
                        self._wake.wait(min(wait, 0.5))
                        continue
                    _, _, key, down = heapq.heappop(self._queue)
                try:
                    before = self._local_clock()
                    injector.send(key, down)
                    after = self._local_clock()
                    (held.add if down else held.discard)(key)
                    with self._wake:
                        self.sent.append((key, down, before, after))
                except Exception:
                    logger.exception("Autopilot could not send key %r", key)
        finally:
            for key in held:
                try:
                    injector.send(key, False)
                except Exception:
                    logger.exception("Autopilot could not release key %r", key)
            injector.close()

    # ---- scheduling ------------------------------------------------------------------------
    def press(self, key: str, at: float) -> None:
        """Press ``key`` at PsychoPy time ``at`` (hold for ``key_hold``)."""
        with self._wake:
            heapq.heappush(self._queue, (at, next(self._counter), key, True))
            heapq.heappush(self._queue, (at + self.settings.key_hold, next(self._counter), key, False))
            self._wake.notify_all()

    def cancel_pending(self) -> None:
        """Drop every press not sent yet (releases of held keys are kept)."""
        with self._wake:
            self._queue = [item for item in self._queue if not item[3]]
            heapq.heapify(self._queue)

    def sample_rt(self, participant: str) -> float:
        """One ex-Gaussian reaction time of ``participant``, divided by ``speed`` (a pilot runs
        whole trials in compressed time)."""
        behaviour = self.settings.participants[participant]
        rng = self._rngs[participant]
        rt = rng.normal(behaviour.rt_mu, behaviour.rt_sigma) + (
            rng.exponential(behaviour.rt_tau) if behaviour.rt_tau > 0 else 0.0
        )
        return float(max(rt, 0.1)) / self.settings.speed

    def respond_to_go(self, participant: str, go_time: float) -> float | None:
        """Schedule ``participant``'s response to a go signal at PsychoPy time ``go_time``.

        Returns the planned reaction time, or ``None`` for a simulated omission.
        """
        rng = self._rngs[participant]
        if rng.random() < self.settings.participants[participant].error_rate:
            return None
        rt = self.sample_rt(participant)
        self.press(self._keys[participant], go_time + rt)
        return rt

    def acknowledge(self, participant: str, shown_at: float) -> None:
        """Press ``participant``'s key after reading a screen shown at ``shown_at``."""
        reading = self.settings.participants[participant].reading_time / self.settings.speed
        self.press(self._keys[participant], shown_at + reading + self.sample_rt(participant))

    def tap_along(self, participant: str, ticks: list[float], continuation_until: float, period: float) -> list[float]:
        """Schedule taps with a pacer (``ticks``), then self-paced taps until ``continuation_until``.

        Synchronisation taps are the ticks plus a normal asynchrony; continuation taps follow
        at intervals drawn around ``period``. Returns the planned tap times (PsychoPy clock).
        """
        behaviour = self.settings.participants[participant]
        rng = self._rngs[participant]
        hold = self.settings.key_hold
        planned = [t + rng.normal(behaviour.tap_asynchrony_mean, behaviour.tap_asynchrony_sd) for t in ticks]
        t = planned[-1] if planned else ticks[-1]
        while True:
            t += max(rng.normal(period, behaviour.tap_interval_cv * period), 2 * hold + 0.02)
            if t >= continuation_until:
                break
            planned.append(t)
        minimum_gap = 2 * hold + 0.01
        kept: list[float] = []
        for tap in planned:
            if not kept or tap - kept[-1] >= minimum_gap:
                kept.append(tap)
        for tap in kept:
            self.press(self._keys[participant], tap)
        return kept

    def operator_key(self, key: str, at: float) -> None:
        """Press an operator key (abort, pause...) at PsychoPy time ``at``."""
        self.press(key, at)
