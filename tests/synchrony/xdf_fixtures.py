"""Write small hyperscanning XDF files with a known answer, for the quick-check tests.

Files are written with dyadlab's own XDF writer and stream metadata (``dyadlab.acquisition.xdf``,
``dyadlab.acquisition.streams``, ``dyadlab.acquisition.markers``), so they look exactly like a recorded session:
two EEG streams (EEG channels plus the board ``Marker`` channel), a JSON marker stream with
``block_start``/``block_end`` events, clock offsets and footers.

The EEG of each participant is independent background activity (1/f-like noise plus each
person's own alpha rhythm). In the blocks named in ``coupled`` a shared narrow-band source (the
"coupling") is added to every channel of both participants, with participant B lagging by
``coupling_lag`` seconds, so phase-locking metrics (PLV, wPLI, ...) rise in that band and
condition only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal

from dyadlab.acquisition.markers import Marker
from dyadlab.acquisition.streams import ParticipantInfo, SourceLayout, eeg_stream_info, event_stream_info
from dyadlab.acquisition.xdf import XdfWriter

T0 = 5000.0  # LSL time of the first sample (any positive value)
BLOCK_GAP_S = 2.0  # baseline before, between and after condition blocks
CHANNELS = ("Fz", "Cz", "Pz", "Oz", "C3", "C4", "P3", "P4")
FIXTURE_DEVICE = {"board": "test-fixture"}  # the streams' desc/device


@dataclass
class DyadSpec:
    """What to write; defaults give a 2-condition session coupled in alpha during ``cooperation``.

    Attributes
    ----------
    blocks : list of (condition, seconds)
        Condition blocks in order, each framed by block_start/block_end markers, with a 2-s gap
        between blocks.
    coupled : dict of condition -> (low Hz, high Hz, amplitude µV)
        The shared source added to both participants in those conditions.
    coupling_lag : float
        B's lag behind A for the shared source (seconds); non-zero so wPLI sees it too.
    rate_a, rate_b : float
        Nominal (and actual) sampling rates.
    n_channels : int
    offset_b : float
        B's recording starts this many seconds after A's (and ends as much later).
    nan_b : (start s, stop s) or None
        Seconds (from B's start) where B's data are NaN on the first two channels.
    eeg_streams : int
        0, 1 or 2 EEG streams written (bad-input tests).
    markers : bool
        Write the marker stream.
    labels : bool
        Write participant metadata and dyadlab source ids (False: a file "from another tool").
    board_marker_delay : float
        Board marker channel time minus LSL marker time (seconds).
    truncate_bytes : int
        Cut this many bytes off the end of the finished file.
    seed : int
    """

    blocks: list[tuple[str, float]] = field(default_factory=lambda: [("rest", 60.0), ("cooperation", 60.0)])
    coupled: dict[str, tuple[float, float, float]] = field(default_factory=lambda: {"cooperation": (9.0, 11.0, 6.0)})
    coupling_lag: float = 0.02
    rate_a: float = 250.0
    rate_b: float = 250.0
    n_channels: int = 4
    offset_b: float = 0.0
    nan_b: tuple[float, float] | None = None
    dead_a: dict[int, float] = field(default_factory=dict)  # channel index -> constant (0.0, nan...)
    eeg_streams: int = 2
    markers: bool = True
    labels: bool = True
    board_marker_delay: float = 0.004
    truncate_bytes: int = 0
    seed: int = 0
    study: str = "test"
    dyad: str = "d01"


def _background(rng: np.random.Generator, n_channels: int, n: int, fs: float) -> np.ndarray:
    """Independent 1/f-like noise plus a person's own alpha rhythm, (n_channels, n) in µV."""
    white = rng.standard_normal((n_channels, n))
    pink = signal.lfilter([1.0], [1.0, -0.95], white, axis=1) * 3.0
    sos = signal.butter(2, [8.5, 11.5], btype="bandpass", fs=fs, output="sos")
    own_alpha = signal.sosfilt(sos, rng.standard_normal((n_channels, n)), axis=1) * 15.0
    return pink + own_alpha + rng.standard_normal((n_channels, n)) * 2.0


def _session_timeline(blocks: list[tuple[str, float]]) -> tuple[float, list[tuple[float, str]]]:
    """Duration of the session and its (time from start, marker JSON) events."""
    events = [(0.5, Marker("session_start").to_json())]
    t = BLOCK_GAP_S
    for index, (condition, seconds) in enumerate(blocks):
        block = f"{condition}-{index + 1}"
        events.append((t, Marker("block_start", task=condition, block=block, condition=condition).to_json()))
        for trial in range(int(seconds // 5)):
            events.append(
                (t + 5.0 * trial + 1.0, Marker("trial_start", block=block, condition=condition, trial=trial).to_json())
            )
        events.append((t + seconds, Marker("block_end", task=condition, block=block, condition=condition).to_json()))
        t += seconds + BLOCK_GAP_S
    events.append((t, Marker("session_end", value="complete").to_json()))
    return t + 1.0, events


def write_dyad_xdf(path: str | Path, spec: DyadSpec | None = None) -> Path:
    """Write one test session to ``path`` (see :class:`DyadSpec`) and return the path."""
    spec = spec or DyadSpec()
    rng = np.random.default_rng(spec.seed)
    duration, events = _session_timeline(spec.blocks)
    labels = (
        list(CHANNELS[: spec.n_channels])
        if spec.n_channels <= len(CHANNELS)
        else [f"E{i + 1}" for i in range(spec.n_channels)]
    )

    # The shared source on a fine common time base (1 kHz), sampled by each participant's clock.
    fine_fs = 1000.0
    fine_t = np.arange(-1.0, duration + abs(spec.offset_b) + 1.0, 1.0 / fine_fs)
    shared = np.zeros_like(fine_t)
    block_t = BLOCK_GAP_S
    for condition, seconds in spec.blocks:
        if condition in spec.coupled:
            low, high, amplitude = spec.coupled[condition]
            sos = signal.butter(4, [low, high], btype="bandpass", fs=fine_fs, output="sos")
            narrow = signal.sosfiltfilt(sos, rng.standard_normal(fine_t.size))
            narrow *= amplitude / narrow.std()
            inside = (fine_t >= block_t) & (fine_t < block_t + seconds)
            shared[inside] += narrow[inside]
        block_t += seconds + BLOCK_GAP_S
    weights = 0.6 + 0.4 * rng.random((2, spec.n_channels))
    eeg = []
    for index, (label, rate, start) in enumerate((("A", spec.rate_a, 0.0), ("B", spec.rate_b, spec.offset_b))):
        n = int(duration * rate)
        t_rel = start + np.arange(n) / rate  # session time of each sample
        lag = spec.coupling_lag if label == "B" else 0.0
        common = np.interp(t_rel - lag, fine_t, shared)
        data = _background(rng, spec.n_channels, n, rate) + weights[index][:, None] * common[None, :]
        if label == "A":
            for channel, value in spec.dead_a.items():
                data[channel] = value
        if label == "B" and spec.nan_b is not None:
            data[:2, int(spec.nan_b[0] * rate) : int(spec.nan_b[1] * rate)] = np.nan
        eeg.append(data)
    return write_session_xdf(path, eeg[0], eeg[1], labels, events, spec)


def write_session_xdf(
    path: str | Path,
    eeg_a: np.ndarray,
    eeg_b: np.ndarray,
    channel_labels: list[str],
    events: list[tuple[float, str]],
    spec: DyadSpec,
    extra_streams: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
) -> Path:
    """Write both participants' EEG, the board marker channel and the marker stream as a session.

    Parameters
    ----------
    eeg_a, eeg_b : np.ndarray, shape (n_channels, n_samples)
        µV at ``spec.rate_a`` / ``spec.rate_b``; sample 0 of B is at session time ``spec.offset_b``.
    events : list of (session seconds, marker JSON)
    spec : DyadSpec
        Rates, offset, which streams to write, metadata, board-marker delay, truncation.
    extra_streams : sequence of (stream info XML, session seconds of each sample, values (n_samples, n_channels))
        More numeric streams (e.g. the participants' microphones), written in one-second chunks.
    """
    path = Path(path)
    file_metadata = {"study": spec.study, "dyad": spec.dyad, "recorder": "tests.synchrony.xdf_fixtures"}
    with XdfWriter(path, file_metadata=file_metadata) as writer:
        stream_id = 0
        for index, (label, eeg, rate, start) in enumerate(
            (("A", eeg_a, spec.rate_a, 0.0), ("B", eeg_b, spec.rate_b, spec.offset_b))
        ):
            if index >= spec.eeg_streams:
                break
            stream_id += 1
            source = SourceLayout(rate, list(channel_labels), description=FIXTURE_DEVICE)
            info = eeg_stream_info(spec.study, spec.dyad, ParticipantInfo(label, f"sub-{label}", "partner"), source)
            xml = info.as_xml() if spec.labels else _strip_identity(info.as_xml(), label)
            writer.add_stream(stream_id, xml)
            n = eeg.shape[1]
            board = np.zeros(n)
            for t_event, text in events:
                sample = int(np.ceil((t_event + spec.board_marker_delay - start) * rate))
                if 0 <= sample < n:
                    board[sample] = Marker.from_json(text).code
            timestamps = T0 + start + np.arange(n) / rate
            chunk = int(rate)  # one chunk per second, like a bridge pushing 1-s chunks
            for first in range(0, n, chunk):
                values = np.vstack([eeg[:, first : first + chunk], board[None, first : first + chunk]]).T
                writer.write_samples(stream_id, timestamps[first : first + chunk], values.astype(np.float32))
                if first % (chunk * 5) == 0:
                    writer.write_clock_offset(stream_id, timestamps[first], 0.0)
            writer.write_footer(stream_id)
        if spec.markers:
            stream_id += 1
            info = event_stream_info(spec.study, spec.dyad, "markers")
            xml = info.as_xml() if spec.labels else _strip_identity(info.as_xml(), None)
            writer.add_stream(stream_id, xml)
            # Another tool's files carry plain strings such as start_cooperation / end_cooperation.
            texts = [text if spec.labels else _plain_marker(text) for _, text in events]
            writer.write_samples(stream_id, T0 + np.array([t for t, _ in events]), [[text] for text in texts])
            writer.write_clock_offset(stream_id, T0, 0.0)
            writer.write_footer(stream_id)
        for xml, times, values in extra_streams:
            stream_id += 1
            writer.add_stream(stream_id, xml)
            chunk = max(1, int(round(1.0 / np.median(np.diff(times))))) if times.size > 1 else 1
            for first in range(0, times.size, chunk):
                writer.write_samples(stream_id, T0 + times[first : first + chunk], values[first : first + chunk])
            writer.write_clock_offset(stream_id, T0, 0.0)
            writer.write_footer(stream_id)
    if spec.truncate_bytes:
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(size - spec.truncate_bytes)
    return path


def write_simulated_xdf(
    path: str | Path,
    blocks: list[tuple[str, float]],
    *,
    rate: float = 250.0,
    channel_names: tuple[str, ...] | None = None,
    seed: int = 0,
    **simulator_options: object,
) -> Path:
    """A session of ``dyadlab.acquisition.simulator``'s coupled dyad, with dyadlab markers, as XDF.

    ``blocks`` are condition blocks framed by block_start/block_end with 2-s baseline gaps,
    as in :func:`write_dyad_xdf`; ``simulator_options`` go to ``CoupledDyadSimulator``.
    """
    from dyadlab.acquisition.simulator import DEFAULT_CHANNEL_NAMES, simulate_dyad

    duration, events = _session_timeline(blocks)
    schedule = []
    for condition, seconds in blocks:
        schedule += [("rest", BLOCK_GAP_S), (condition, seconds)]
    names = tuple(channel_names or DEFAULT_CHANNEL_NAMES)
    dyad = simulate_dyad(duration, schedule, sampling_rate=rate, channel_names=names, seed=seed, **simulator_options)
    return write_session_xdf(path, dyad.a, dyad.b, list(names), events, DyadSpec(rate_a=rate, rate_b=rate))


def _plain_marker(text: str) -> str:
    """A LabRecorder-style marker string, e.g. ``start_cooperation`` / ``end_cooperation``."""
    marker = Marker.from_json(text)
    if marker.event == "block_start":
        return f"start_{marker.condition}"
    if marker.event == "block_end":
        return f"end_{marker.condition}"
    return marker.event


def _strip_identity(xml: str, label: str | None) -> str:
    """Remove the dyadlab desc and source id, as in a recording from another tool."""
    import re

    xml = re.sub(r"<participant>.*?</participant>", "", xml, flags=re.S)
    xml = re.sub(r"<dyadlab>.*?</dyadlab>", "", xml, flags=re.S)
    return re.sub(r"<source_id>.*?</source_id>", f"<source_id>amp-{label or 'events'}</source_id>", xml)
