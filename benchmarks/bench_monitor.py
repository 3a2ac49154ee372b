"""The live monitor under load: 2 x 64 channels at 1000 Hz with the page open in headless Chromium.

Two real LSL outlets send 64 EEG channels each at 1000 Hz in real time (each sample stamped with
its nominal ``local_clock()`` time); the recorder (:class:`~dyadlab.acquisition.recorder.LslRecorder`)
records both, ``dyadlab monitor`` runs as its own process, and the page is open in Debian's
Chromium driven by Playwright. Measured over the run (after a warm-up):

* the monitor server's CPU time (psutil on its process) and the browser's (every Chromium
  process started for the page), each as a share of one core;
* the delay from a sample's LSL timestamp to the page's drawing of it: the page converts its
  ``performance.now()`` draw times to LSL time with a clock offset measured over the WebSocket at
  connect (the best of five round trips), so the figure includes the outlet's chunking, LSL,
  the server's 50-ms frame cadence and the browser's next animation frame;
* samples the recorder wrote per stream against samples pushed (must be equal: 0 lost).

Targets (issue #14): median delay < 250 ms, server < 30 % of one core.

``python -m benchmarks.bench_monitor [--minutes 10] [--quick]``; figures go to
``benchmarks/results/monitor.json`` and the terminal.

The module also holds what the monitor's tests share with it: :class:`PacedOutlet`,
:func:`replay_device`, :func:`start_monitor` and :func:`launch_chromium`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dyadlab.acquisition.streams import SourceLayout

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
RESULTS = Path(__file__).parent / "results" / "monitor.json"
MEDIAN_DELAY_TARGET_S = 0.25
SERVER_CPU_TARGET = 0.30


def replay_device(rate: float, channel_names: list[str]) -> SourceLayout:
    """The layout of a replayed recording's EEG stream: its channels only (no board marker channel)."""
    return SourceLayout(rate, channel_names, description={"board": "replay"}, has_marker_channel=False)


class PacedOutlet:
    """A real LSL outlet sending the rows of ``data`` in real time (looping) from its own thread.

    Sample ``k`` is stamped ``t0 + k / rate`` on ``local_clock()`` and pushed within
    ``chunk_s`` of that time, as an amplifier's driver does.

    Parameters
    ----------
    info : pylsl.StreamInfo
    data : ndarray, shape (n_samples, n_channels)
    chunk_s : float
        Seconds between pushes.
    """

    def __init__(self, info: Any, data: np.ndarray, chunk_s: float = 0.02) -> None:
        import pylsl

        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
        self.rate = float(info.nominal_srate())
        self.source_id: str = info.source_id()
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.chunk_s = chunk_s
        self.index = 0  # the next sample's number (its stamp is t0 + index / rate)
        self.pushed = 0  # samples sent
        self.paused = threading.Event()
        self.constant: dict[int, float] = {}  # channel -> value it is held at from now on
        self.constant_since: float | None = None  # stamp of the first sample held constant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"paced-{info.name()}", daemon=True)

    def start(self) -> PacedOutlet:
        self._thread.start()
        return self

    def skip(self, n: int) -> None:
        """Lose the next ``n`` samples (a dropped packet): their stamps are never sent."""
        self.index += n

    def hold_constant(self, channel: int, value: float = 0.0) -> None:
        """Make ``channel`` flat (a dead electrode) from the next push on."""
        self.constant[channel] = value

    def stop(self) -> None:
        """Stop sending and close the outlet (the stream disappears from LSL)."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.outlet = None

    def _run(self) -> None:
        import pylsl

        t0 = pylsl.local_clock()
        while not self._stop.wait(self.chunk_s):
            due = int((pylsl.local_clock() - t0) * self.rate) + 1 - self.index
            if due <= 0 or self.paused.is_set():
                if self.paused.is_set():  # a stalled device: its samples never come
                    t0 += self.chunk_s
                continue
            rows = (self.index + np.arange(due)) % self.data.shape[0]
            chunk = self.data[rows]
            if self.constant:
                chunk = chunk.copy()
                for channel, value in self.constant.items():
                    chunk[:, channel] = value
                if self.constant_since is None:
                    self.constant_since = t0 + self.index / self.rate
            stamps = t0 + (self.index + np.arange(due)) / self.rate
            self.outlet.push_chunk(chunk, stamps.tolist())
            self.index += due
            self.pushed += due


def start_monitor(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start ``dyadlab monitor --no-browser --port 0 ARGS``; return the process and the page's URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dyadlab", "monitor", "--no-browser", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("http://"):
            return process, line.strip()
    process.kill()
    _, err = process.communicate(timeout=10)
    raise RuntimeError(f"dyadlab monitor printed no address: {err}")


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright (no download of Playwright's own browsers)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def _chromium_processes() -> list[Any]:
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name().lower():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _cpu_seconds(processes: Sequence[Any]) -> float:
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run(minutes: float, channels: int, rate: float, warmup_s: float = 10.0) -> dict[str, Any]:
    """One benchmark run; returns the figures."""
    from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config

    apply_lsl_config(LslConfig.local_only(f"bench-monitor-{uuid.uuid4().hex[:8]}"))
    import psutil
    from playwright.sync_api import sync_playwright

    from dyadlab.acquisition.recorder import LslRecorder, StreamSelector
    from dyadlab.acquisition.streams import ParticipantInfo, eeg_stream_info

    device = replay_device(rate, [f"E{i + 1}" for i in range(channels)])
    rng = np.random.default_rng(0)
    loop = rng.normal(0.0, 20.0, (int(10 * rate), channels)).astype(np.float32)  # 10 s, 20 µV white
    dyad = f"b{uuid.uuid4().hex[:6]}"
    outlets = [
        PacedOutlet(eeg_stream_info("bench", dyad, ParticipantInfo(label, f"sub-{label}"), device), loop)
        for label in ("A", "B")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        xdf = Path(tmp) / "bench.xdf"
        recorder = LslRecorder(xdf, [StreamSelector(source_id=o.source_id) for o in outlets])
        recorder.start()
        while not all(o.outlet.have_consumers() for o in outlets):
            time.sleep(0.05)
        for outlet in outlets:
            outlet.start()
        server, url = start_monitor(
            [arg for o in outlets for arg in ("--source-id", o.source_id)] + ["--recording", str(xdf)]
        )
        server_process = psutil.Process(server.pid)
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(url)
                page.wait_for_function("Object.keys(window.monitorState.binsReceived).length === 2", timeout=30000)
                time.sleep(warmup_s)
                delays_from = page.evaluate("window.monitorState.drawDelays.length")
                bins_from = page.evaluate("window.monitorState.binsReceived")
                browsers = _chromium_processes()
                server_cpu0, browser_cpu0, wall0 = (
                    _cpu_seconds([server_process]),
                    _cpu_seconds(browsers),
                    time.monotonic(),
                )
                time.sleep(minutes * 60.0)
                server_cpu1, browser_cpu1, wall1 = (
                    _cpu_seconds([server_process]),
                    _cpu_seconds(browsers),
                    time.monotonic(),
                )
                delays = np.asarray(page.evaluate(f"window.monitorState.drawDelays.slice({delays_from})"))
                bins_to = page.evaluate("window.monitorState.binsReceived")
                draws = page.evaluate("window.monitorState.draws")
                page.screenshot(path=str(RESULTS.with_suffix(".png")))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
            for outlet in outlets:
                outlet.stop()
            time.sleep(0.5)
            summary = recorder.stop()
    wall = wall1 - wall0
    recorded = {s.source_id: s.sample_count for s in summary.streams}
    lost = {o.source_id: o.pushed - recorded.get(o.source_id, 0) for o in outlets}
    bin_rate = {k: (bins_to[k] - bins_from[k]) / wall for k in bins_to}
    return {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "streams": f"2 x {channels} ch at {rate:g} Hz",
        "measured_s": wall,
        "server_cpu_share_of_one_core": (server_cpu1 - server_cpu0) / wall,
        "browser_cpu_share_of_one_core": (browser_cpu1 - browser_cpu0) / wall,
        "browser_processes": len(browsers),
        "push_to_draw_delay_s": {
            "count": int(delays.size),
            "median": float(np.median(delays)) if delays.size else math.nan,
            "p95": float(np.percentile(delays, 95)) if delays.size else math.nan,
            "max": float(delays.max()) if delays.size else math.nan,
        },
        "draws": draws,
        "display_bins_per_s": bin_rate,
        "recorder_ok": summary.ok,
        "samples_pushed": {o.source_id: o.pushed for o in outlets},
        "samples_recorded": recorded,
        "samples_lost_by_recorder": lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes (default 10)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--quick", action="store_true", help="half a minute, for a smoke test")
    args = parser.parse_args()
    result = run(0.5 if args.quick else args.minutes, args.channels, args.rate)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    delay = result["push_to_draw_delay_s"]
    print(json.dumps(result, indent=2))
    print(
        f"\nserver {100 * result['server_cpu_share_of_one_core']:.1f} % of a core (target < 30 %), "
        f"browser {100 * result['browser_cpu_share_of_one_core']:.1f} %; push-to-draw median "
        f"{1000 * delay['median']:.0f} ms (target < 250 ms), p95 {1000 * delay['p95']:.0f} ms; "
        f"recorder lost {sum(result['samples_lost_by_recorder'].values())} samples"
    )
    ok = (
        delay["median"] < MEDIAN_DELAY_TARGET_S
        and result["server_cpu_share_of_one_core"] < SERVER_CPU_TARGET
        and not any(result["samples_lost_by_recorder"].values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
