"""Find and read the session's LSL streams for the monitor: traces, quality, markers, synchrony.

:class:`LslWatcher` resolves the streams a :class:`StreamSelection` names every few seconds and
reads each one with its own inlet (``recover=True``, clock-synchronised timestamps) on its own
thread into a :class:`WatchedStream` ring buffer. :meth:`LslWatcher.snapshot` gives what the
page shows: per stream its effective rate, dropped samples, latency, whether it is STALLED and,
for EEG, per-channel quality over the last :data:`QUALITY_WINDOW_S` seconds from
:func:`dyadlab.channel_quality.classify_channels` (the definitions and thresholds of preflight and
the quick-check); the marker timeline (:class:`MarkerTimeline`) and the recording file's size.

Only inlets are opened: the outlets serve the recorder's inlets independently of these, so the
monitor stalling, crashing or being killed cannot touch a recording.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dyadlab.acquisition.streams import ChannelInfo, declared_channels
from dyadlab.channel_quality import ChannelThresholds, classify_channels, noisy_throughout

logger = logging.getLogger(__name__)

#: Stream types watched when no source id or name is given.
DEFAULT_TYPES = ("EEG", "AUX", "Markers", "Synchrony")
#: A regular stream that delivered nothing for this long (s) is STALLED: at 2 Hz (the synchrony
#: stream) a sample is due every 0.5 s, at EEG rates every few ms, so one second without any is a
#: fault rather than chunking.
STALL_S = 1.0
#: The synchrony stream (one sample per 0.5 s step) is stalled after this many missed steps.
STALL_STEPS = 3
#: Per-channel quality is measured on the last this many seconds (one Welch window of
#: :mod:`dyadlab.channel_quality`): a channel that goes flat is flagged once more than half of the
#: window repeats one value (the repeat-fraction test), i.e. about 1 s later.
QUALITY_WINDOW_S = 2.0
#: Seconds of data kept per stream (the page's longest time window, and room for the quality
#: window); the synchrony stream keeps :data:`SYNCHRONY_HISTORY_S`.
BUFFER_S = 32.0
SYNCHRONY_HISTORY_S = 600.0
#: Dropped samples: a gap between consecutive timestamps longer than this many sample periods
#: opens a deficit of (gap - 1) samples, and the following steps add their (step - 1). Devices
#: that stamp in bursts (BrainFlow's synthetic board: gaps of up to 7 periods, then samples
#: 0.3 periods apart) make the deficit up within a few samples; samples that never came leave it
#: standing, and it is counted once it has stood :data:`GAP_SETTLE_S` seconds. Only gaps open a
#: deficit, so a device clock slightly off its nominal rate does not add up to "dropped".
GAP_PERIODS = 2.5
GAP_SETTLE_S = 1.0
#: The effective rate is measured over the samples of the last this many seconds.
RATE_WINDOW_S = 2.0
#: Seconds between two looks at the streams the resolver has found.
RESOLVE_INTERVAL_S = 0.5
#: Longest wait for a sample before the reader checks whether it should stop.
PULL_TIMEOUT_S = 0.2


@dataclass(frozen=True)
class StreamSelection:
    """Which LSL streams the monitor watches.

    Parameters
    ----------
    source_ids, names : tuple of str
        Watch exactly the streams with these source ids or names. Both empty: every stream of a
        type in :data:`DEFAULT_TYPES` visible in this machine's LSL SessionID.
    """

    source_ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def matches(self, source_id: str, name: str, stream_type: str) -> bool:
        """Whether a stream with this source id, name and type is watched."""
        if not self.source_ids and not self.names:
            return stream_type in DEFAULT_TYPES
        return source_id in self.source_ids or name in self.names


def _channels(info: Any, count: int, stream_type: str) -> list[ChannelInfo]:
    """The stream's ``count`` channels as declared; ``chN`` and the stream's type where not."""
    found = [
        ChannelInfo(label=channel.label or f"ch{number}", type=channel.type or stream_type, unit=channel.unit)
        for number, channel in enumerate(declared_channels(info)[:count], start=1)
    ]
    found.extend(ChannelInfo(f"ch{i + 1}", stream_type, "") for i in range(len(found), count))
    return found


class WatchedStream:
    """One numeric LSL stream as the monitor sees it: a ring buffer of samples and its counters.

    Parameters
    ----------
    index : int
        The stream's number on the page (its position in the watcher's list).
    info : pylsl.StreamInfo
        The full info (with ``desc``), from the inlet.
    buffer_s : float
        Seconds of samples kept (at least 64 samples for irregular streams).
    """

    def __init__(self, index: int, info: Any, buffer_s: float = BUFFER_S) -> None:
        self.index = index
        self.name: str = info.name()
        self.type: str = info.type()
        self.source_id: str = info.source_id()
        self.nominal_rate = float(info.nominal_srate())
        self.channels = _channels(info, int(info.channel_count()), self.type)
        self.participant: str = info.desc().child("participant").child_value("label")
        desc_tags = info.desc().child("dyadlab")
        self.kind: str = desc_tags.child_value("kind") or self.type.lower()
        # The synchrony stream's window and step (``desc/synchrony``, see
        # dyadlab.protocols.live_synchrony; ``desc`` itself for other publishers).
        about = info.desc().child("synchrony")
        self.metadata = {
            key: value
            for key in ("window_s", "step_s", "session_id")
            if (value := about.child_value(key) or info.desc().child_value(key))
        }
        capacity = max(int(math.ceil(buffer_s * self.nominal_rate)), 64)
        self._data = np.zeros((capacity, len(self.channels)), dtype=np.float32)
        self._stamps = np.zeros(capacity, dtype=np.float64)
        self._lock = threading.Lock()
        self.written = 0  # samples received since the inlet opened
        self.dropped = 0
        self._deficit: float | None = None  # samples missing since an open gap (see GAP_PERIODS)
        self._deficit_since = 0.0
        self.last_arrival: float | None = None  # local_clock() of the newest chunk's arrival

    @property
    def capacity(self) -> int:
        """Samples the ring buffer holds."""
        return int(self._stamps.size)

    @property
    def eeg_rows(self) -> NDArray[np.int64]:
        """Indices of the EEG channels (the ones quality and the display filter apply to)."""
        rows = [i for i, c in enumerate(self.channels) if c.type.upper() == "EEG"]
        if not rows and self.type == "EEG":  # an amplifier's stream that does not type its channels
            rows = [i for i, c in enumerate(self.channels) if c.type.upper() not in ("MARKER", "MARKERS")]
        return np.asarray(rows, dtype=np.int64)

    def append(self, data: NDArray[np.float32], stamps: NDArray[np.float64], arrival: float) -> None:
        """Store a chunk (``(n, n_channels)`` and its ``n`` timestamps) and count gaps."""
        n = stamps.size
        if n == 0:
            return
        with self._lock:
            if self.written and self.nominal_rate > 0:
                previous = self._stamps[(self.written - 1) % self.capacity]
                self._count_dropped(np.concatenate(([previous], stamps)))
            if n > self.capacity:
                data, stamps = data[-self.capacity :], stamps[-self.capacity :]
                self.written += n - self.capacity
                n = self.capacity
            slots = (self.written + np.arange(n)) % self.capacity
            self._data[slots] = data
            self._stamps[slots] = stamps
            self.written += n
            self.last_arrival = arrival

    def _count_dropped(self, stamps: NDArray[np.float64]) -> None:
        # ``stamps``: the previous chunk's last stamp, then this chunk's (see GAP_PERIODS).
        steps = np.diff(stamps) * self.nominal_rate
        i = 0
        while i < steps.size:
            if self._deficit is None:
                gaps = np.flatnonzero(steps[i:] > GAP_PERIODS)
                if gaps.size == 0:
                    break
                i += int(gaps[0])
                self._deficit, self._deficit_since = float(steps[i] - 1.0), float(stamps[i + 1])
                i += 1
                continue
            running = self._deficit + np.cumsum(steps[i:] - 1.0)
            made_up = np.flatnonzero(running < 0.5)
            if made_up.size == 0:
                self._deficit = float(running[-1])
                break
            self._deficit = None
            i += int(made_up[0]) + 1
        if self._deficit is not None and stamps[-1] - self._deficit_since > GAP_SETTLE_S:
            self.dropped += round(self._deficit)
            self._deficit = None

    def since(self, cursor: int) -> tuple[NDArray[np.float32], NDArray[np.float64], int]:
        """Samples written after sample number ``cursor`` (those still in the buffer), and the new cursor."""
        with self._lock:
            start = max(cursor, self.written - self.capacity)
            slots = np.arange(start, self.written) % self.capacity
            return self._data[slots], self._stamps[slots], self.written

    def latest(self, seconds: float) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The samples of the last ``seconds`` (by timestamp) still in the buffer."""
        # Twice the nominal count (bursty stamps) rather than a copy of the whole ring buffer.
        wanted = int(2 * seconds * self.nominal_rate) + 16 if self.nominal_rate > 0 else self.capacity
        data, stamps, _ = self.since(max(self.written - wanted, 0))
        if stamps.size == 0:
            return data, stamps
        keep = stamps > stamps[-1] - seconds
        return data[keep], stamps[keep]

    def status(self, now: float) -> dict[str, Any]:
        """Counters for the page: samples, dropped, effective rate, latency, stalled."""
        _, stamps = self.latest(RATE_WINDOW_S)
        rate = (stamps.size - 1) / (stamps[-1] - stamps[0]) if stamps.size > 2 and stamps[-1] > stamps[0] else None
        stall_after = STALL_S if self.nominal_rate >= 1.0 / STALL_S else STALL_STEPS / self.nominal_rate
        silent = None if self.last_arrival is None else now - self.last_arrival
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "source_id": self.source_id,
            "participant": self.participant,
            "nominal_rate": self.nominal_rate,
            "effective_rate": rate,
            "samples": self.written,
            "dropped": self.dropped,
            # liblsl's time correction is applied to the stamps (proc_clocksync), so this is
            # the age of the newest sample on this machine's clock.
            "latency_s": None if stamps.size == 0 else now - float(stamps[-1]),
            "silent_s": silent,
            "stalled": self.nominal_rate > 0 and (silent is None or silent > stall_after),
            "channels": [{"label": c.label, "type": c.type, "unit": c.unit} for c in self.channels],
            "metadata": self.metadata,
        }

    def quality(self, thresholds: ChannelThresholds, line_freq: float | None) -> dict[str, Any] | None:
        """Per-channel labels of the EEG channels over the last :data:`QUALITY_WINDOW_S` seconds.

        ``None`` before the window is full (a shorter spectrum would not be the quick-check's).
        """
        rows = self.eeg_rows
        if rows.size == 0 or self.nominal_rate <= 0:
            return None
        data, stamps = self.latest(QUALITY_WINDOW_S)
        if stamps.size < int(QUALITY_WINDOW_S * self.nominal_rate * 0.9):
            return None
        unit = self.channels[int(rows[0])].unit or "microvolts"
        eeg = data[:, rows].T.astype(np.float64)
        result = classify_channels(eeg, self.nominal_rate, line_freq, unit=unit, thresholds=thresholds)
        # As in preflight: a blink or a movement makes a channel noisy in a 2-s window but not in
        # most of its segments; such a channel is shown as ``transient``, lasting noise as ``noisy``.
        lasting = noisy_throughout(eeg, self.nominal_rate, result)
        flags: dict[str, list[str]] = {}
        for i, row in enumerate(rows):
            labels = ["transient" if name == "noisy" and not lasting[i] else name for name in result.flags(i)]
            if labels:
                flags[self.channels[int(row)].label] = labels
        std_uv = result.std_uv
        return {
            "window_s": QUALITY_WINDOW_S,
            "flags": flags,
            "std_uv": None
            if std_uv is None
            else {self.channels[int(row)].label: _finite_or_none(std_uv[i]) for i, row in enumerate(rows)},
            "line_frequency": result.line_frequency,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class MarkerEvent:
    """One event of a marker stream as the page shows it."""

    stamp: float
    event: str
    task: str | None = None
    block: str | None = None
    condition: str | None = None
    trial: int | None = None
    planned_s: float | None = None

    @classmethod
    def parse(cls, text: str, stamp: float) -> MarkerEvent:
        """A dyadlab JSON marker (see :mod:`dyadlab.acquisition.markers`), or any other string as the event."""
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or "event" not in payload:
            return cls(stamp=stamp, event=text)
        value = payload.get("value")
        planned = value.get("duration_s") if isinstance(value, dict) else None
        trial = payload.get("trial")
        return cls(
            stamp=stamp,
            event=str(payload["event"]),
            task=payload.get("task"),
            block=payload.get("block"),
            condition=payload.get("condition"),
            trial=trial if isinstance(trial, int) else None,
            planned_s=float(planned) if isinstance(planned, (int, float)) else None,
        )


@dataclass
class MarkerTimeline:
    """Every marker received, and the block running now."""

    events: list[MarkerEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, texts: Sequence[str], stamps: Sequence[float]) -> None:
        """Append the markers of one chunk."""
        with self._lock:
            self.events.extend(MarkerEvent.parse(text, float(stamp)) for text, stamp in zip(texts, stamps))

    def since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        """Events after number ``cursor`` (as dicts), and the new cursor."""
        with self._lock:
            new = self.events[cursor:]
            return [vars(e) for e in new], cursor + len(new)

    def current_block(self, now: float) -> dict[str, Any] | None:
        """The block started and not ended: name, task, condition, elapsed and remaining time, trials."""
        with self._lock:
            events = list(self.events)
        start_index = None
        for i in range(len(events) - 1, -1, -1):
            if events[i].event == "block_end":
                return None
            if events[i].event == "block_start":
                start_index = i
                break
        if start_index is None:
            return None
        start = events[start_index]
        within = events[start_index + 1 :]
        elapsed = now - start.stamp
        return {
            "block": start.block,
            "task": start.task,
            "condition": start.condition,
            "started": start.stamp,
            "elapsed_s": elapsed,
            "planned_s": start.planned_s,
            "remaining_s": None if start.planned_s is None else max(start.planned_s - elapsed, 0.0),
            "trials_started": sum(e.event == "trial_start" for e in within),
            "trials_ended": sum(e.event == "trial_end" for e in within),
            "responses": sum(e.event == "response" for e in within),
        }


def recording_status(path: Path | None) -> dict[str, Any] | None:
    """The recording's file, size and age, and the free space of its disk (``None`` without a path).

    ``path`` is an XDF file or a folder (the session folder: its newest ``.xdf`` is the recording).
    """
    if path is None:
        return None
    xdf = path
    if path.is_dir():
        candidates = sorted(path.rglob("*.xdf"), key=lambda p: p.stat().st_mtime)
        xdf = candidates[-1] if candidates else path
    status: dict[str, Any] = {"path": str(xdf), "exists": xdf.is_file()}
    if xdf.is_file():
        stat = xdf.stat()
        status.update(size_bytes=stat.st_size, modified_age_s=max(time.time() - stat.st_mtime, 0.0))
    try:
        status["free_bytes"] = shutil.disk_usage(xdf if xdf.exists() else xdf.parent).free
    except OSError:
        status["free_bytes"] = None
    return status


class LslWatcher:
    """Resolve the selected streams and read each with its own inlet, on background threads.

    Parameters
    ----------
    selection : StreamSelection
    thresholds : ChannelThresholds
        Channel-quality thresholds (the defaults are preflight's and the quick-check's).
    line_freq : float or None
        Mains frequency (50 or 60); ``None`` detects it, like the quick-check.
    recording : Path or None
        The XDF file or session folder shown in the recorder panel.
    """

    def __init__(
        self,
        selection: StreamSelection,
        thresholds: ChannelThresholds | None = None,
        line_freq: float | None = None,
        recording: Path | None = None,
    ) -> None:
        self.selection = selection
        self.thresholds = thresholds or ChannelThresholds()
        self.line_freq = line_freq
        self.recording = recording
        self.streams: list[WatchedStream] = []
        self.markers = MarkerTimeline()
        self.marker_streams: list[str] = []
        self._known: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start resolving (and reading what is found) in the background."""
        thread = threading.Thread(target=self._resolve_loop, name="monitor-resolve", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop every thread (inlets close with them)."""
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=2.0)

    def __enter__(self) -> LslWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _resolve_loop(self) -> None:
        import pylsl

        # Resolves in liblsl's own thread: stopping never waits for a resolve round.
        resolver = pylsl.ContinuousResolver(forget_after=5.0)
        while not self._stop.is_set():
            for info in resolver.results():
                key = info.source_id() or f"{info.name()}@{info.hostname()}"
                if key in self._known or not self.selection.matches(info.source_id(), info.name(), info.type()):
                    continue
                self._known.add(key)
                thread = threading.Thread(target=self._read, args=(info,), name=f"monitor-{info.name()}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._stop.wait(RESOLVE_INTERVAL_S)

    def _read(self, resolved: Any) -> None:
        import pylsl

        try:
            inlet = pylsl.StreamInlet(resolved, max_buflen=60, recover=True, processing_flags=pylsl.proc_clocksync)
            info = inlet.info(timeout=5.0)
        except Exception as error:  # a stream that vanished between resolving and opening
            logger.warning("Could not open LSL stream %s: %s", resolved.name(), error)
            self._known.discard(resolved.source_id() or f"{resolved.name()}@{resolved.hostname()}")
            return
        is_text = info.channel_format() == pylsl.cf_string
        stream: WatchedStream | None = None
        if is_text:
            self.marker_streams.append(info.name())
        else:
            with self._lock:
                buffer_s = SYNCHRONY_HISTORY_S if info.type() == "Synchrony" else BUFFER_S
                stream = WatchedStream(len(self.streams), info, buffer_s)
                self.streams.append(stream)
        logger.info("Watching %s (%s, %s)", info.name(), info.type(), info.source_id())
        while not self._stop.is_set():
            try:
                # Returns as soon as one sample is there (min_samples=1): no added delay, no busy loop.
                data, stamps = inlet.pull_chunk(
                    timeout=PULL_TIMEOUT_S, max_samples=4096, min_samples=1, as_numpy=not is_text
                )
            except pylsl.LostError:  # not raised with recover=True, unless the stream cannot come back
                self._stop.wait(0.5)
                continue
            stamps_array = np.asarray(stamps, dtype=np.float64)
            if stamps_array.size == 0:
                continue
            if stream is None:
                self.markers.add([row[0] for row in data], stamps_array.tolist())
            else:
                stream.append(np.asarray(data, dtype=np.float32), stamps_array, pylsl.local_clock())
        inlet.close_stream()

    def snapshot(self) -> dict[str, Any]:
        """Everything the page's status panels show, measured now (quality is the costly part)."""
        import pylsl

        now = pylsl.local_clock()
        with self._lock:
            streams = list(self.streams)
        described = []
        for stream in streams:
            status = stream.status(now)
            status["quality"] = stream.quality(self.thresholds, self.line_freq) if stream.type == "EEG" else None
            described.append(status)
        return {
            "type": "status",
            "now": now,
            "streams": described,
            "marker_streams": list(self.marker_streams),
            "block": self.markers.current_block(now),
            "recording": recording_status(self.recording),
        }
