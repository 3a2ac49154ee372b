"""The session's window(s): one shared screen, or one screen per participant.

A *view* is one window plus the participants who look at it. With ``layout="shared"`` there is
one view seen by everyone; with ``layout="per-participant"`` each participant has a window on
their own screen (PsychoPy ``Window(screen=n)``; two X screens need Xinerama). Paradigms draw per
view, so the same code serves both layouts.

Flip order and marker time: every frame flips the views in participant order. Only the first
window waits for the vertical blank (``waitBlanking=True``); the others are created with
``waitBlanking=False`` so that two blocking flips in series do not halve the frame rate. Markers
are stamped in the first window's ``callOnFlip``, i.e. at the moment the first participant's
screen changed; how late the other screens follow must be measured with a photodiode on each
screen (see ``docs/tasks.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dyadlab.tasks.texts import DEFAULT_TEXTS, check_texts

if TYPE_CHECKING:
    from psychopy import visual

logger = logging.getLogger(__name__)

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]

#: Largest window side accepted (pixels): an 8K screen is 7680 x 4320.
MAX_WINDOW_SIDE = 8192
#: Highest screen index accepted (X screens / monitors are numbered from 0).
MAX_SCREEN_INDEX = 15

#: Height of body text as a fraction of the screen height (at ``text_scale`` 1).
TEXT_HEIGHT = 0.055

#: One side of a window, in pixels.
WindowSide = Annotated[int, Field(ge=1, le=MAX_WINDOW_SIDE)]


class DisplaySettings(BaseModel):
    """How the task windows are laid out.

    Attributes
    ----------
    layout : "shared" | "per-participant"
        One screen both participants look at, or one screen each.
    screens : list of int
        Screen index per window: one entry for ``shared`` (default ``[0]``), one per participant
        in participant order for ``per-participant`` (default ``[0, 1]``).
    fullscreen : bool
        Full-screen windows (the lab setting); ``False`` opens ``size`` windows (piloting, tests).
    size : (int, int)
        Window size in pixels when not full screen: width and height, each 1 to
        :data:`MAX_WINDOW_SIDE` (a window of size 0 or less never opens).
    background : str
        Window colour (any PsychoPy colour name or hex).
    photodiode_corner : corner or None
        Draw a square in this corner that is white on every frame that carries a marker and
        black otherwise, for the photodiode timing check.
    check_timing : bool
        Let PsychoPy measure the refresh rate when a window opens (about a second per window).
    max_frame_rate : float or None
        Sleep before a flip so frames are at least ``1 / max_frame_rate`` apart. Only for
        displays without vsync (Xvfb, where flips return at once and a frame loop would busy a
        CPU core); leave ``None`` on lab screens, where vsync paces the flips.
    text_scale : float
        Every text's height times this (0.5 to 3): larger for a screen far from the participant.
        At 1, body text is :data:`TEXT_HEIGHT` of the screen height (about 1.2 cm on a 24" screen).
    texts : dict
        The lab's wording or translation of the screens' texts, by key (see
        :mod:`dyadlab.tasks.texts`); keys not given keep the English default.
    """

    model_config = ConfigDict(extra="forbid")

    layout: Literal["shared", "per-participant"] = "shared"
    screens: list[Annotated[int, Field(ge=0, le=MAX_SCREEN_INDEX)]] | None = None
    fullscreen: bool = True
    size: tuple[WindowSide, WindowSide] = (1280, 800)
    background: str = "#101010"
    photodiode_corner: Corner | None = None
    check_timing: bool = True
    max_frame_rate: float | None = Field(None, gt=0, le=1000)
    text_scale: float = Field(1.0, ge=0.5, le=3.0)
    texts: dict[str, str] = Field(default_factory=dict)

    @field_validator("texts")
    @classmethod
    def _known_texts(cls, value: dict[str, str]) -> dict[str, str]:
        return check_texts(value)

    def text(self, key: str, /, **fields: object) -> str:
        """The screen text ``key`` (the protocol's, else the default) with ``fields`` filled in."""
        return self.texts.get(key, DEFAULT_TEXTS[key]).format(**fields)

    @model_validator(mode="after")
    def _screens_match_layout(self) -> DisplaySettings:
        if self.screens is not None:
            expected = 1 if self.layout == "shared" else 2
            if len(self.screens) != expected:
                raise ValueError(
                    f"layout {self.layout!r} needs {expected} screen index(es) in 'screens', got {self.screens}; "
                    "use e.g. screens: [0] for a shared screen or screens: [0, 1] for one screen per participant."
                )
        return self

    def screen_indices(self) -> list[int]:
        """The screen index of each window."""
        if self.screens is not None:
            return list(self.screens)
        return [0] if self.layout == "shared" else [0, 1]


@dataclass
class View:
    """One window and the participants who look at it.

    Attributes
    ----------
    window : psychopy.visual.Window
    participants : list of str
        Labels of the participants who see this window.
    name : str
        ``"shared"`` or the participant label; used in screenshot file names.
    """

    window: visual.Window
    participants: list[str]
    name: str
    text_scale: float = 1.0
    _stims: dict[str, Any] = field(default_factory=dict, repr=False)
    _applied: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def text(self, key: str, text: str, **kwargs: Any) -> Any:
        """A cached ``TextStim`` named ``key`` on this window, with ``text`` and ``kwargs`` applied.

        ``height`` (default :data:`TEXT_HEIGHT`) is multiplied by the display's ``text_scale``.
        """
        from psychopy import visual

        kwargs["height"] = kwargs.get("height", TEXT_HEIGHT) * self.text_scale
        width = self.window.size[0] / self.window.size[1]  # screen width in "height" units
        defaults: dict[str, Any] = {"wrapWidth": 0.92 * width, "color": "white", "font": "Arial"}
        return self._cached(
            key, lambda: visual.TextStim(self.window, **{**defaults, **kwargs, "text": text}), {**kwargs, "text": text}
        )

    def circle(self, key: str, **kwargs: Any) -> Any:
        """A cached ``Circle`` named ``key``; ``kwargs`` are applied on every call."""
        from psychopy import visual

        return self._cached(
            key, lambda: visual.Circle(self.window, **{"radius": 0.08, "edges": 64, "lineWidth": 0, **kwargs}), kwargs
        )

    def rect(self, key: str, **kwargs: Any) -> Any:
        """A cached ``Rect`` named ``key``; ``kwargs`` are applied on every call."""
        from psychopy import visual

        return self._cached(key, lambda: visual.Rect(self.window, **{"lineWidth": 0, **kwargs}), kwargs)

    def _cached(self, key: str, make: Callable[[], Any], attributes: dict[str, Any]) -> Any:
        """The stimulus ``key`` (made on first use) with ``attributes`` set.

        Only attributes whose value changed are set again: PsychoPy rebuilds a text's glyphs (and
        reloads its font) on every ``height``/``text`` assignment, which costs frames on timed screens.
        """
        stim = self._stims.get(key)
        if stim is None:
            stim = self._stims[key] = make()
            self._applied[key] = dict(attributes)
            return stim
        applied = self._applied[key]
        for name, value in attributes.items():
            if name not in applied or not _same(applied[name], value):
                setattr(stim, name, value)
                applied[name] = value
        return stim


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):  # arrays: compare as changed
        return False


class SessionDisplay:
    """Opens, flips and closes the session's windows.

    Parameters
    ----------
    settings : DisplaySettings
    participants : list of str
        Participant labels in order (``["A", "B"]``); with ``per-participant`` the i-th
        participant gets the i-th screen.
    """

    def __init__(self, settings: DisplaySettings, participants: list[str]) -> None:
        if settings.layout == "per-participant" and len(participants) != 2:
            raise ValueError(f"A per-participant layout needs two participants, got {participants}.")
        self.settings = settings
        self.participants = list(participants)
        self.views: list[View] = []
        self._last_flip: float | None = None

    def open(self) -> None:
        """Open the windows; raises ``RuntimeError`` naming the screen that could not open."""
        from psychopy import visual

        screens = self.settings.screen_indices()
        names = ["shared"] if self.settings.layout == "shared" else self.participants
        seers = [self.participants] if self.settings.layout == "shared" else [[p] for p in self.participants]
        screen: int | None = None  # the screen being opened, for the error message
        try:
            for index, (screen, name, who) in enumerate(zip(screens, names, seers)):
                window = visual.Window(
                    size=self.settings.size,
                    screen=screen,
                    fullscr=self.settings.fullscreen,
                    units="height",
                    color=self.settings.background,
                    allowGUI=False,
                    winType="pyglet",
                    waitBlanking=index == 0,
                    checkTiming=self.settings.check_timing,
                )
                window.mouseVisible = False
                self.views.append(View(window=window, participants=who, name=name, text_scale=self.settings.text_scale))
        except Exception as error:
            self.close()
            raise RuntimeError(
                f"Could not open the task window on screen {screen} ({error}). Check that the screen exists "
                "(a second X screen needs Xinerama: Xvfb '-screen 0 ... -screen 1 ... +xinerama'), or use "
                "layout 'shared'."
            ) from error
        logger.info("Opened %d task window(s) on screen(s) %s", len(self.views), screens)

    @property
    def primary(self) -> visual.Window:
        """The window whose flip stamps the markers."""
        if not self.views:
            raise RuntimeError("The display is not open: call SessionDisplay.open() first.")
        return self.views[0].window

    def view_of(self, participant: str) -> View:
        """The view a participant looks at."""
        for view in self.views:
            if participant in view.participants:
                return view
        raise KeyError(f"No window shows participant {participant!r}; participants are {self.participants}.")

    def flip(self) -> tuple[float, list[float]]:
        """Flip every window; return the primary flip time and the others' (PsychoPy clock)."""
        from psychopy import core

        if self.settings.max_frame_rate is not None and self._last_flip is not None:
            wait = self._last_flip + 1.0 / self.settings.max_frame_rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        self._last_flip = time.perf_counter()
        primary_time = float(self.views[0].window.flip())
        others = []
        for view in self.views[1:]:
            # a window that does not wait for the blank returns no time: use when the call returned
            returned = view.window.flip()
            others.append(float(returned) if returned is not None else core.getTime())
        return primary_time, others

    def grab(self) -> None:
        """Keep a copy of what was drawn for the coming flip (back buffer) of every window.

        The front buffer cannot be read back reliably (it is black under Xvfb/Mesa), so a
        screen is grabbed after drawing and before its flip; :meth:`take_grabbed` hands it over.
        """
        for view in self.views:
            # getMovieFrame reads whichever OpenGL context is current (the last window drawn or
            # flipped), so without this every view's grab was the same window's screen. PsychoPy has
            # no public call for it; its own flip() makes the window current this way.
            view.window._setCurrent()
            view.window.getMovieFrame(buffer="back")

    def take_grabbed(self, stem: Path) -> list[tuple[Path, Any]]:
        """The grabbed frames as ``(path, PIL image)``, for ``<stem>.png`` or ``<stem>_<view>.png``.

        Writing PNGs takes hundreds of milliseconds, so the caller saves them outside timed screens.
        """
        taken = []
        for view in self.views:
            if not view.window.movieFrames:
                continue
            name = f"{stem.name}.png" if len(self.views) == 1 else f"{stem.name}_{view.name}.png"
            taken.append((stem.with_name(name), view.window.movieFrames[-1]))
            view.window.movieFrames = []
        return taken

    def close(self) -> None:
        """Close every window; idempotent."""
        views, self.views = self.views, []
        for view in views:
            try:
                view.window.close()
            except Exception:
                logger.exception("Could not close the window %s", view.name)
