"""Markers and participants' EEG built in memory for the segmentation tests (no file, no LSL)."""

from __future__ import annotations

import json

import numpy as np

from dyadlab.synchrony.io import EventMarker, ParticipantEeg


def json_marker(t: float, event: str, **fields: object) -> EventMarker:
    """A session marker (JSON) named ``event`` at time ``t``."""
    payload = {"event": event, **fields}
    return EventMarker(time=t, text=json.dumps(payload), fields=payload, stream="m")


def plain_marker(t: float, text: str) -> EventMarker:
    """A marker that is a plain string (another program's)."""
    return EventMarker(time=t, text=text, fields=None, stream="m")


def participant_eeg(
    label: str, data: np.ndarray, rate: float, t0: float = 0.0, timestamps: np.ndarray | None = None
) -> ParticipantEeg:
    """``data`` (channels x samples) as a participant's stream, stamped ``t0 + n / rate`` unless
    ``timestamps`` are given."""
    n = data.shape[1]
    return ParticipantEeg(
        label=label,
        stream_name=label,
        source_id=label,
        participant={},
        nominal_rate=rate,
        channel_labels=[f"c{i}" for i in range(data.shape[0])],
        data=data.astype(np.float32),
        timestamps=t0 + np.arange(n) / rate if timestamps is None else timestamps,
        unit="microvolts",
        board_markers=None,
        package_numbers=None,
        clock_times=np.zeros(1),
        clock_values=np.zeros(1),
        footer_sample_count=n,
    )
