"""A dyad recording as another lab's tools write it, with a planted known answer.

Written by :mod:`tests.synchrony.independent_xdf` (not dyadlab's writer): two EEG-only streams
(no marker or counter channel, float32, as most LSL amplifier apps write them), LabRecorder-like
chunks of irregular size with compressed timestamps, participant B's clock 3.2 s behind and 20
ppm fast (clock offsets every 5 s), and a plain-string marker stream ``rest_on``/``rest_off``,
``coop_on``/``coop_off``. Blocks alternate rest and cooperation.

Each channel is its own pink-ish noise plus an alpha rhythm (9-11 Hz, drifting phase). At rest
each person has their own rhythm; in cooperation both carry the same rhythm, B's 25 ms later, so
phase locking in alpha is high in cooperation only. Written block by block with bounded memory,
so that a 60-minute 2 x 32-channel file at 500 Hz (about 500 MB) can be made for the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal

from tests.synchrony.independent_xdf import Stream, Writer

T0 = 2000.0
B_OFFSET_S = 3.2
B_DRIFT = 20e-6
COUPLING_LAG_S = 0.025


def _alpha(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    # 9-11 Hz: well inside the alpha band, so that hardly any of the shared rhythm leaks into
    # theta or beta (with 8-12 Hz, 890 epochs found the leak at 13 Hz: beta z 6.9).
    sos = signal.butter(4, (9.0, 11.0), btype="bandpass", fs=fs, output="sos")
    rhythm = signal.sosfiltfilt(sos, rng.standard_normal(n + int(fs)))[:n]
    return rhythm / rhythm.std()


def _noise(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    return signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal((channels, n)), axis=1) * 0.45


def dyad_signals(
    rng: np.random.Generator, seconds: float, fs: float, channels: int, coupled: bool, alpha_gain: float = 1.2
) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's EEG of one block, each (samples, channels) float32 in microvolts."""
    n = int(round(seconds * fs))
    lag = int(round(COUPLING_LAG_S * fs))
    mixing_a = rng.uniform(0.6, 1.0, channels)[:, None]
    mixing_b = rng.uniform(0.6, 1.0, channels)[:, None]
    shared = _alpha(rng, n + lag, fs)
    alpha_a = shared[lag:] if coupled else _alpha(rng, n, fs)
    alpha_b = shared[:n] if coupled else _alpha(rng, n, fs)
    a = (_noise(rng, n, channels) + alpha_gain * mixing_a * alpha_a) * 10.0
    b = (_noise(rng, n, channels) + alpha_gain * mixing_b * alpha_b) * 10.0
    return a.T.astype(np.float32), b.T.astype(np.float32)


def write_foreign_dyad(
    path: str | Path,
    *,
    block_seconds: float = 60.0,
    n_blocks: int = 4,
    fs: float = 250.0,
    channels: int = 8,
    seed: int = 0,
) -> Path:
    """Write the recording; blocks alternate rest (first) and cooperation. Returns ``path``."""
    rng = np.random.default_rng(seed)
    labels = [f"E{i + 1}" for i in range(channels)]
    a_parts, b_parts, markers = [], [], []
    gap = 2.0
    for block in range(n_blocks):
        name = "coop" if block % 2 else "rest"
        a, b = dyad_signals(rng, block_seconds + gap, fs, channels, coupled=name == "coop")
        start = T0 + block * (block_seconds + gap)
        markers += [(start + gap / 2, f"{name}_on"), (start + gap / 2 + block_seconds, f"{name}_off")]
        a_parts.append(a)
        b_parts.append(b)
    a_values, b_values = np.concatenate(a_parts), np.concatenate(b_parts)
    del a_parts, b_parts
    n = a_values.shape[0]
    period = 1.0 / fs
    true = T0 + np.arange(n) * period
    # A's amplifier app stamps on a regular grid with occasional jitter: LabRecorder keeps only
    # the stamps off the grid, the rest are deduced by the reader.
    a_stamps = np.empty(n)
    a_stamps[0] = true[0]
    jitter = np.where(rng.random(n) < 0.02, rng.normal(0, 2e-4, n), 0.0)
    for start in range(1, n, 100_000):  # cumulative, like a sender adding the period
        stop = min(n, start + 100_000)
        steps = np.full(stop - start, period) + jitter[start:stop]
        a_stamps[start:stop] = a_stamps[start - 1] + np.cumsum(steps)
    b_stamps = (true + rng.normal(0, 1e-4, n)) * (1.0 + B_DRIFT) - B_OFFSET_S

    def offsets(stamps: np.ndarray, offset: float, drift: float) -> list[tuple[float, float]]:
        times = np.arange(stamps[0], stamps[-1], 5.0)
        return [(float(t), float((t + offset) / (1.0 + drift) - t + rng.normal(0, 30e-6))) for t in times]

    chunk_sizes = rng.integers(int(0.4 * fs), int(0.6 * fs), n // int(0.4 * fs) + 2)
    sizes = np.cumsum(chunk_sizes)
    chunks = np.diff(np.concatenate([[0], sizes[sizes < n], [n]])).tolist()
    # A's app stores LabRecorder-compressed timestamps; B's clock is off and drifts.
    eeg = [(1, a_values, a_stamps, True, 0.0, 0.0), (2, b_values, b_stamps, False, B_OFFSET_S, B_DRIFT)]
    streams = [
        Stream(
            stream_id=number,
            name=f"Amp{number}-EEG",
            type="EEG",
            channel_format="float32",
            nominal_srate=fs,
            values=values,
            stamps=stamps,
            chunks=chunks,
            channels=[(lab, "EEG", "microvolts") for lab in labels],
            source_id=f"amp-serial-000{number}",
            compress=compress,
            offsets=offsets(stamps, offset, drift),
        )
        for number, values, stamps, compress, offset, drift in eeg
    ] + [
        Stream(
            stream_id=3,
            name="Events",
            type="Markers",
            channel_format="string",
            nominal_srate=0.0,
            values=[[text] for _, text in markers],
            stamps=np.array([t for t, _ in markers]),
            chunks=[1] * len(markers),
            offsets=offsets(np.array([T0, true[-1]]), 0.0, 0.0),
        ),
    ]
    return Writer(boundary_every=40).write(path, streams, {"datetime": "2026-12-04T10:00:00+0100"})


CONDITIONS = ["rest=rest_on:rest_off", "coop=coop_on:coop_off"]
