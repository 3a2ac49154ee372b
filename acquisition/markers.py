"""The session's marker schema, the marker outlet, and the hub that double-logs each event.

Every event is one JSON object pushed to an LSL string stream with a ``local_clock()``
timestamp, and its numeric code is inserted into each participant's board marker channel at the
same moment, so the quick-check can measure marker-to-EEG timing per participant.

Event names and codes
---------------------
The codes are stable: recordings from every dyadlab version decode the same way. New paradigms
add events with :func:`register_event` and codes from 100 upwards.

======================  ====  =====================================================
event                   code  meaning
======================  ====  =====================================================
session_start              1  recording and tasks are running
session_end                2  ``value`` = ``complete`` or ``aborted``
block_start                3  ``condition`` names the analysis condition
block_end                  4  end of the block started with the same ``block``
instructions               5  instruction screen shown
trial_start                6  a trial begins (``trial`` = index)
fixation                   7  fixation cross shown
cue                        8  a cue shown (``value`` describes it)
go                         9  the go signal: respond now
response                  10  a participant responded (``participant``, ``value``)
feedback                  11  feedback shown (``value`` = outcome)
trial_end                 12  a trial ended
pacer                     13  a pacing stimulus (metronome tick) shown
tap                       14  a participant tapped (``participant``)
turn                      15  a speaking turn begins (``value`` = who speaks / listens)
topic                     16  a conversation topic prompt shown
break                     17  a break screen shown
pause                     18  the operator paused the session
resume                    19  the operator resumed the session
abort                     20  the session is being aborted (Escape)
stimulus                  21  any other stimulus onset
======================  ====  =====================================================
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

EVENT_CODES: dict[str, int] = {
    "session_start": 1,
    "session_end": 2,
    "block_start": 3,
    "block_end": 4,
    "instructions": 5,
    "trial_start": 6,
    "fixation": 7,
    "cue": 8,
    "go": 9,
    "response": 10,
    "feedback": 11,
    "trial_end": 12,
    "pacer": 13,
    "tap": 14,
    "turn": 15,
    "topic": 16,
    "break": 17,
    "pause": 18,
    "resume": 19,
    "abort": 20,
    "stimulus": 21,
}
_FIRST_CUSTOM_CODE = 100


def register_event(name: str, code: int) -> None:
    """Add an event for a new paradigm.

    Parameters
    ----------
    name : str
        The event name used in :class:`Marker`.
    code : int
        Its board-channel code: an integer from 100 to 65535 that no other event uses.
    """
    if name in EVENT_CODES:
        if EVENT_CODES[name] == code:
            return
        raise ValueError(f"Event {name!r} already has code {EVENT_CODES[name]}; it cannot become {code}.")
    if not _FIRST_CUSTOM_CODE <= code <= 65535:
        raise ValueError(f"Custom event codes are integers from {_FIRST_CUSTOM_CODE} to 65535, not {code}.")
    if code in EVENT_CODES.values():
        taken = next(k for k, v in EVENT_CODES.items() if v == code)
        raise ValueError(f"Code {code} is already used by event {taken!r}.")
    EVENT_CODES[name] = code


@dataclass(frozen=True)
class Marker:
    """One session event (see the module docstring for the event names).

    Parameters
    ----------
    event : str
        A registered event name.
    task, block, condition : str | None
        The paradigm, the block id and the analysis condition the event belongs to.
    trial : int | None
        Trial index within the block.
    participant : str | None
        ``"A"`` or ``"B"`` for events that belong to one participant.
    value : Any
        Event-specific JSON-serialisable detail (key, reaction time, outcome, text...).
    """

    event: str
    task: str | None = None
    block: str | None = None
    condition: str | None = None
    trial: int | None = None
    participant: str | None = None
    value: Any = None

    def __post_init__(self) -> None:
        if self.event not in EVENT_CODES:
            raise ValueError(
                f"Unknown marker event {self.event!r}. Known events: {', '.join(sorted(EVENT_CODES))}; "
                "a new paradigm registers its own with dyadlab.acquisition.markers.register_event()."
            )

    @property
    def code(self) -> int:
        """The stable numeric code inserted into the boards' marker channels."""
        return EVENT_CODES[self.event]

    def to_json(self) -> str:
        """The marker as the compact JSON string pushed to LSL (``code`` included)."""
        payload = asdict(self)
        payload["code"] = self.code
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Marker:
        """Parse a marker string written by :meth:`to_json`."""
        payload = json.loads(text)
        payload.pop("code", None)
        return cls(**payload)


class MarkerSink(Protocol):
    """Anything that can tag its data with a marker code (a board bridge, the simulator)."""

    def insert_marker(self, code: float) -> None:
        """Tag the next sample with ``code``."""


class MarkerOutlet:
    """An LSL string stream of JSON markers, stamped on ``local_clock()``.

    Create it at session start, before the recorder resolves streams: a recorder only records
    outlets that exist.

    Parameters
    ----------
    info : pylsl.StreamInfo
        From :func:`dyadlab.acquisition.streams.event_stream_info`.
    """

    def __init__(self, info: Any) -> None:
        import pylsl

        self._outlet = pylsl.StreamOutlet(info)
        self.source_id: str = info.source_id()
        self._lock = threading.Lock()

    def push(self, marker: Marker, timestamp: float | None = None) -> float:
        """Push ``marker`` stamped ``timestamp`` (``local_clock()`` now by default); return the stamp."""
        import pylsl

        stamp = pylsl.local_clock() if timestamp is None else float(timestamp)
        with self._lock:
            self._outlet.push_sample([marker.to_json()], stamp)
        return stamp

    def have_consumers(self) -> bool:
        """Whether a recorder (or any inlet) is connected."""
        return bool(self._outlet.have_consumers())

    def close(self) -> None:
        """Destroy the outlet; idempotent."""
        with self._lock:
            outlet, self._outlet = self._outlet, None
        if outlet is not None:
            del outlet

    def __enter__(self) -> MarkerOutlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MarkerHub:
    """The session's one marker stream, double-logged into every participant's board.

    Parameters
    ----------
    outlet : MarkerOutlet
        The session marker stream.
    sinks : sequence of MarkerSink
        The bridges (or simulator sources) whose marker channel receives each event's code.
    """

    def __init__(self, outlet: MarkerOutlet, sinks: Sequence[MarkerSink] = ()) -> None:
        self.outlet = outlet
        self._sinks = list(sinks)
        self._lock = threading.Lock()

    def add_sink(self, sink: MarkerSink) -> None:
        """Also insert future events' codes into ``sink``."""
        with self._lock:
            self._sinks.append(sink)

    def push(self, marker: Marker, timestamp: float | None = None) -> float:
        """Send ``marker`` to LSL and insert its code into every sink; return the LSL stamp.

        Call it from ``win.callOnFlip`` so that the stamp is the moment the screen changed.
        A sink that fails is logged and skipped: a lost board marker must not lose the LSL one.
        """
        with self._lock:
            stamp = self.outlet.push(marker, timestamp)
            for sink in self._sinks:
                try:
                    sink.insert_marker(float(marker.code))
                except Exception:
                    logger.exception("Could not insert marker %r into %r", marker.event, sink)
        return stamp
