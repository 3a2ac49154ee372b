"""Reading a real LSL stream in tests: open its inlet by source_id, pull for a while."""

from __future__ import annotations

import time

import numpy as np
import pylsl


def open_inlet(source_id: str) -> pylsl.StreamInlet:
    """An open inlet on the one stream with ``source_id`` (fails if there is not exactly one)."""
    found = pylsl.resolve_byprop("source_id", source_id, timeout=10.0)
    assert len(found) == 1, f"expected one stream {source_id}, found {len(found)}"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60)
    inlet.open_stream(timeout=10.0)
    return inlet


def pull_for(inlet: pylsl.StreamInlet, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Everything ``inlet`` delivers within ``seconds``: data (n, channels) and stamps (n,)."""
    data, stamps = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk, ts = inlet.pull_chunk(timeout=0.2, max_samples=8192)
        if ts:
            data.append(np.asarray(chunk))
            stamps.extend(ts)
    assert stamps, "no samples arrived"
    return np.concatenate(data), np.asarray(stamps)
