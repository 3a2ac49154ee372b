"""The monitor's web server: the page, its static files, and one WebSocket per open page.

Over the WebSocket the server sends

* binary trace frames (:data:`FRAME_HEADER`): for one stream, the minimum and maximum of every
  channel over bins of ``bin_samples`` samples (a display rate of about :data:`DISPLAY_RATE_HZ`),
  after the page's display filter, as float32; the header carries the LSL timestamp of the newest
  sample, so the page can measure the delay from a sample's push to its drawing;
* a JSON ``status`` message every :data:`STATUS_INTERVAL_S` (:meth:`LslWatcher.snapshot`, plus
  the markers and synchrony samples this page has not seen yet);
* JSON ``clock`` replies (the page sends its ``performance.now()``, the server answers with
  ``local_clock()``), from which the page converts its draw times to LSL time.

The page sends ``{"type": "filter", "value": "off" | "highpass" | "bandpass"}`` to change the
display filter and ``{"type": "clock", "page_ms": ...}`` to measure the clock offset.

With a token (a server listening on the network), every request needs ``?token=...`` or the
cookie the page receives with its first response; others get 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import struct
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web
from numpy.typing import NDArray
from scipy import signal

from dyadlab.protocols.monitor.lslwatch import LslWatcher, WatchedStream

logger = logging.getLogger(__name__)

#: Trace samples sent per second and channel (min and max each): 2 x 64 channels at 1000 Hz
#: become 2 x 64 x 250 x 2 float32 = 256 kB/s, and a 10-s window spans 2500 bins, about 2 bins
#: per pixel column of a wide panel.
DISPLAY_RATE_HZ = 250.0
#: Seconds between trace frames: 20 frames per second keep the push-to-draw delay near 50 ms.
FRAME_INTERVAL_S = 0.05
#: Seconds between status messages (quality, counters, block): a channel that goes flat is flat
#: by its definition after 1 s of the 2-s quality window, and the page shows it within this much
#: more (the issue asks for 2 s in all).
STATUS_INTERVAL_S = 0.25
#: kind (1 = traces), stream index, bins, channels, samples per bin, newest sample's LSL time,
#: bins per second (the stream's nominal rate over samples per bin).
FRAME_HEADER = struct.Struct("<B3xIIIIdd")
TRACE_FRAME = 1
#: Display filters the page offers: (low, high) cut-offs in Hz, ``None`` for open.
FILTERS: dict[str, tuple[float, float | None] | None] = {
    "off": None,
    "highpass": (1.0, None),
    "bandpass": (1.0, 40.0),
}
DEFAULT_FILTER = "highpass"
TOKEN_COOKIE = "dyadlab_monitor_token"
STATIC_DIR = Path(str(resources.files("dyadlab.protocols.monitor") / "static"))
_WATCHER: web.AppKey[LslWatcher] = web.AppKey("watcher", LslWatcher)
_STATUS: web.AppKey[dict[str, Any]] = web.AppKey("status", dict)
_SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])


def display_filter(name: str, sampling_rate: float) -> NDArray[np.float64] | None:
    """Second-order sections of display filter ``name`` at ``sampling_rate`` (``None``: no filter).

    Butterworth: 2nd order high-pass at 1 Hz (removes electrode offsets and drifts); band-pass
    1-40 Hz, 4th order per edge, the upper edge kept below 45 % of the sampling rate.
    """
    if name not in FILTERS:
        raise ValueError(f"Unknown display filter {name!r}: choose one of {', '.join(FILTERS)}.")
    edges = FILTERS[name]
    if edges is None or sampling_rate <= 0:
        return None
    low, high = edges
    if high is None or high >= 0.45 * sampling_rate:
        return np.asarray(signal.butter(2, low, "highpass", fs=sampling_rate, output="sos"))
    return np.asarray(signal.butter(4, [low, high], "bandpass", fs=sampling_rate, output="sos"))


class TraceFeed:
    """One page's view of one stream: its cursor, display-filter state and incomplete bin."""

    def __init__(self, stream: WatchedStream, filter_name: str) -> None:
        self.stream = stream
        self.bin_samples = max(1, int(stream.nominal_rate // DISPLAY_RATE_HZ)) if stream.nominal_rate > 0 else 1
        self.cursor = max(stream.written - stream.capacity, 0)
        self._pending = np.zeros((0, len(stream.channels)), dtype=np.float32)
        self.set_filter(filter_name)

    def set_filter(self, name: str) -> None:
        """Filter the EEG channels with ``name`` from the next samples on (state reset)."""
        self._rows = self.stream.eeg_rows
        self._sos = display_filter(name, self.stream.nominal_rate)
        self._zi: NDArray[np.float64] | None = None

    def frame(self) -> bytes | None:
        """The trace frame of the samples that arrived since the last call (``None``: no whole bin)."""
        data, stamps, self.cursor = self.stream.since(self.cursor)
        if stamps.size == 0:
            return None
        newest = float(stamps[-1])
        data = data.copy()
        if self._sos is not None and self._rows.size:
            eeg = data[:, self._rows].astype(np.float64)
            # A NaN (a gap some amplifiers send) would stay in the filter's state for good: it is
            # filtered as 0 and shown as missing.
            missing = ~np.isfinite(eeg)
            eeg[missing] = 0.0
            if self._zi is None:  # start at the first sample's level: no step response
                self._zi = signal.sosfilt_zi(self._sos)[:, :, None] * eeg[0][None, None, :]
            filtered, self._zi = signal.sosfilt(self._sos, eeg, axis=0, zi=self._zi)
            filtered[missing] = np.nan
            data[:, self._rows] = filtered
        data = np.concatenate((self._pending, data))
        n_bins = data.shape[0] // self.bin_samples
        self._pending = data[n_bins * self.bin_samples :]
        if n_bins == 0:
            return None
        binned = data[: n_bins * self.bin_samples].reshape(n_bins, self.bin_samples, -1)
        envelope = np.stack((binned.min(axis=1), binned.max(axis=1)), axis=-1).astype("<f4")
        header = FRAME_HEADER.pack(
            TRACE_FRAME,
            self.stream.index,
            n_bins,
            data.shape[1],
            self.bin_samples,
            newest,
            self.stream.nominal_rate / self.bin_samples,
        )
        return header + envelope.tobytes()


class PageFeed:
    """Everything one open page has been sent: trace feeds, marker and synchrony cursors."""

    def __init__(self, watcher: LslWatcher) -> None:
        self.watcher = watcher
        self.filter_name = DEFAULT_FILTER
        self.traces: dict[int, TraceFeed] = {}
        self.synchrony_cursors: dict[int, int] = {}
        self.marker_cursor = 0

    def set_filter(self, name: str) -> None:
        display_filter(name, 1000.0)  # validates the name
        self.filter_name = name
        for feed in self.traces.values():
            feed.set_filter(name)

    def frames(self) -> list[bytes]:
        """Trace frames of every signal stream (new streams join as they are found)."""
        frames = []
        for stream in list(self.watcher.streams):
            if stream.type == "Synchrony":
                continue
            feed = self.traces.get(stream.index)
            if feed is None:
                feed = self.traces[stream.index] = TraceFeed(stream, self.filter_name)
            frame = feed.frame()
            if frame is not None:
                frames.append(frame)
        return frames

    def status(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """``snapshot`` plus the markers and synchrony samples this page has not been sent."""
        events, self.marker_cursor = self.watcher.markers.since(self.marker_cursor)
        synchrony = {}
        for stream in list(self.watcher.streams):
            if stream.type != "Synchrony":
                continue
            data, stamps, self.synchrony_cursors[stream.index] = stream.since(
                self.synchrony_cursors.get(stream.index, 0)
            )
            synchrony[str(stream.index)] = {
                "labels": [c.label for c in stream.channels],
                "stamps": stamps.tolist(),
                "values": [[v if math.isfinite(v) else None for v in row] for row in data.tolist()],
            }
        return {**snapshot, "new_markers": events, "synchrony": synchrony}


def _json(message: dict[str, Any]) -> str:
    # NaN is not JSON: every measure that can be NaN is sent as None (null) instead.
    return json.dumps(message, allow_nan=False)


async def _receive(ws: web.WebSocketResponse, page: PageFeed) -> None:
    import pylsl

    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            request = json.loads(message.data)
            if request.get("type") == "clock":
                await ws.send_str(_json({"type": "clock", "page_ms": request["page_ms"], "lsl": pylsl.local_clock()}))
            elif request.get("type") == "filter":
                page.set_filter(str(request["value"]))
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("Ignored a malformed message from the page: %s", error)


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=10.0)
    await ws.prepare(request)
    page = PageFeed(request.app[_WATCHER])
    request.app[_SOCKETS].add(ws)
    receiver = asyncio.create_task(_receive(ws, page))
    sent_status: dict[str, Any] | None = None
    try:
        while not ws.closed and not receiver.done():
            for frame in page.frames():
                await ws.send_bytes(frame)
            snapshot = request.app[_STATUS]
            if snapshot and snapshot is not sent_status:
                sent_status = snapshot
                await ws.send_str(_json(page.status(snapshot)))
            await asyncio.sleep(FRAME_INTERVAL_S)
    except ConnectionResetError:
        logger.info("The page went away.")
    finally:
        request.app[_SOCKETS].discard(ws)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
    return ws


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _status(request: web.Request) -> web.Response:
    return web.Response(text=_json(request.app[_STATUS] or {}), content_type="application/json")


async def _measure_status(app: web.Application) -> None:
    """Refresh the shared snapshot (quality included) off the event loop every :data:`STATUS_INTERVAL_S`."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        app[_STATUS] = await loop.run_in_executor(None, app[_WATCHER].snapshot)
        await asyncio.sleep(max(STATUS_INTERVAL_S - (loop.time() - started), 0.0))


def _token_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def require_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise web.HTTPForbidden(text="This monitor needs its token: open the address it printed (…?token=...).")
        response = await handler(request)
        if "token" in request.query and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return require_token


def build_app(watcher: LslWatcher, token: str | None = None) -> web.Application:
    """The monitor's web application over ``watcher``; with ``token``, every request must carry it."""
    app = web.Application(middlewares=[_token_middleware(token)] if token else [])
    app[_WATCHER] = watcher
    app[_STATUS] = {}
    app[_SOCKETS] = set()

    async def close_pages(app: web.Application) -> None:
        # An open page would otherwise hold the shutdown for aiohttp's 60-s grace period.
        open_pages = app[_SOCKETS]
        for ws in list(open_pages):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"monitor stopped")

    async def measure(app: web.Application) -> Any:
        task = asyncio.create_task(_measure_status(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(measure)
    app.on_shutdown.append(close_pages)
    app.router.add_get("/", _index)
    app.router.add_get("/ws", _websocket)
    app.router.add_get("/api/status", _status)
    app.router.add_static("/static", STATIC_DIR)
    return app
