"""Preflight: is the dyad ready to record? Streams, clocks and every EEG channel, before the session.

:func:`run_preflight` looks for the configured dyad's streams by their ``source_id`` (see
:mod:`dyadlab.acquisition.streams`): participant EEG streams and the session marker stream. Streams of
other sessions or rooms are ignored twice: LSL only shows streams of this PC's SessionID, and only
the expected source ids are considered. For a few seconds it then reads every EEG stream and
checks

* presence and uniqueness (two streams claiming one ``source_id`` is an error),
* effective sampling rate (from the sample timestamps) against the nominal/expected rate,
* timestamps: strictly increasing, without gaps, on ``local_clock()`` (a stream stamped with
  Unix time is ~1.8e9 s off, the muse-lsl/BlueMuse failure) and keeping pace with it,
* that the clock offset to each stream's host can be measured (``time_correction``),
* per EEG channel (the trailing ``Marker`` channel excluded): flat, railed, noisy (absolute and
  relative to the other channels) and line noise (50/60 Hz).

The channel checks are :func:`dyadlab.channel_quality.classify_channels`, with the definitions and
thresholds (:class:`ChannelThresholds`, that is :class:`dyadlab.channel_quality.ChannelThresholds`)
the quick-check uses on the whole recording, so a channel that passes here is judged by the same
rules in the report. Standard deviations are taken above 1 Hz (offsets and drifts of DC-coupled
amplifiers are not noise); with the default thresholds:

=============  ==============================================================================
railed         >= 1 % of the samples at the rail: beyond 98 % of ``rail_uv`` when the amplifier's
               range is known, else at the channel's own extreme held for >= 3 samples in a row
               (a channel stuck at one value >= 1000 µV in magnitude is railed); takes precedence
flat           (not railed) std < 0.5 µV, or the same value in > 50 % of consecutive samples
noisy          (neither) std > 100 µV, or robust z of log(std) across the participant's live
               channels > 3.5 *and* std >= 3.5 x their median (a blink is not enough); a
               channel noisy in only a few half-second parts of the window (a large blink, a
               movement: :func:`dyadlab.channel_quality.noisy_throughout`) is a warning
               (``noisy_transient``) and does not count as bad
line noise     (neither) mains peak (±1 Hz) > 20 dB above the spectrum 2-5 Hz away
rate           |effective / expected - 1| <= 2 %
local_clock    median (receipt time - (stamp + clock offset)) within ±1 s
drift          robust (Theil-Sen) slope of that difference over the reading <= 2 % (20 ms/s): a
               device delivering fewer samples than its stamps claim falls behind
=============  ==============================================================================

A participant is ready when its EEG stream passes every stream check and has at most
``max_bad_channels`` (default 0) bad channels; the dyad is ready when every participant is, and
the marker stream is present when ``require_markers`` is set.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.stats

from dyadlab.acquisition.lslconfig import session_id_in_force
from dyadlab.acquisition.streams import MARKER_CHANNEL_LABEL, declared_channels, source_id
from dyadlab.channel_quality import ChannelQuality, ChannelThresholds, classify_channels, noisy_throughout

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
_UNIX_EPOCH_OFFSET_S = 1e8  # a Unix timestamp is ~1.8e9 s; local_clock() is seconds since boot
#: Boards whose "EEG" is a generated test signal (BrainFlow's synthetic board: a sine per channel,
#: one of them near the line frequency), so flagged channels cannot mean a bad electrode. Their
#: channel findings are warnings; presence, rate and clock checks still block.
TEST_SIGNAL_BOARDS = frozenset({"synthetic"})


@dataclass(frozen=True)
class PreflightConfig:
    """What to check and how strictly.

    Parameters
    ----------
    study, dyad : str
        Identify the streams (``dyadlab.acquisition.streams.source_id``).
    participants : sequence of str
        Participant labels whose EEG must be ready.
    duration_s : float
        Seconds of data read from every EEG stream.
    expected_rate : float | None
        Required sampling rate in Hz; ``None`` takes each stream's declared (nominal) rate.
    rate_tolerance : float
        Allowed relative difference between effective and expected rate.
    line_freq : float
        Mains frequency, 50 or 60 Hz.
    require_markers : bool
        The session marker stream must be present (an error otherwise, else a warning).
    resolve_timeout_s : float
        How long to wait for streams to answer (longer on a busy network).
    clock_timeout_s : float
        Timeout of each clock-offset measurement.
    max_clock_mismatch_s : float
        Largest allowed distance between sample stamps and ``local_clock()`` at receipt.
    max_bad_channels : int
        Bad channels tolerated per participant (reported as warnings).
    thresholds : ChannelThresholds
        Per-channel limits (:class:`dyadlab.channel_quality.ChannelThresholds`, shared with the
        quick-check).
    """

    study: str
    dyad: str
    participants: tuple[str, ...] = ("A", "B")
    duration_s: float = 3.0
    expected_rate: float | None = None
    rate_tolerance: float = 0.02
    line_freq: float = 50.0
    require_markers: bool = True
    resolve_timeout_s: float = 2.0
    clock_timeout_s: float = 2.0
    max_clock_mismatch_s: float = 1.0
    max_bad_channels: int = 0
    thresholds: ChannelThresholds = field(default_factory=ChannelThresholds)

    def __post_init__(self) -> None:
        object.__setattr__(self, "participants", tuple(self.participants))
        for label in self.participants:
            source_id(self.study, self.dyad, "eeg", label)  # validates study, dyad and label
        if not self.participants or len(set(self.participants)) != len(self.participants):
            raise ValueError(f"Preflight participants must be distinct labels, got {self.participants}.")
        if not self.duration_s > 0:
            raise ValueError(f"Preflight duration must be > 0 s, got {self.duration_s!r}.")
        if self.expected_rate is not None and not self.expected_rate > 0:
            raise ValueError(f"Expected sampling rate must be > 0 Hz, got {self.expected_rate!r}.")
        if not self.line_freq > 0:
            raise ValueError(f"Line frequency must be 50 or 60 Hz, got {self.line_freq!r}.")
        if self.max_bad_channels < 0:
            raise ValueError("max_bad_channels must be >= 0.")


@dataclass(frozen=True)
class Problem:
    """One finding: what is wrong, where, and how to fix it."""

    severity: Severity
    check: str
    message: str
    fix: str
    participant: str | None = None
    stream: str | None = None
    channel: str | None = None

    def __str__(self) -> str:
        where = " / ".join(
            part
            for part in (
                self.participant and f"participant {self.participant}",
                self.channel and f"channel {self.channel}",
            )
            if part
        )
        prefix = f"[{self.severity}] " + (f"{where}: " if where else "")
        return f"{prefix}{self.message} Fix: {self.fix}"


@dataclass
class ChannelResult:
    """Signal quality of one EEG channel (the measures of
    :class:`dyadlab.channel_quality.ChannelQuality`; std in µV above 1 Hz).

    ``flags`` holds ``railed``, ``flat``, ``noisy`` and/or ``line_noise``; railed excludes the
    others, flat excludes noisy and line noise.
    """

    label: str
    std_uv: float
    robust_z: float
    ratio_to_median: float
    railed_fraction: float
    repeat_fraction: float
    line_noise_db: float | None
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def line_noise_ratio(self) -> float | None:
        """The mains peak over its neighbours as a power ratio (``10 ** (line_noise_db / 10)``)."""
        return None if self.line_noise_db is None else float(10 ** (self.line_noise_db / 10))


@dataclass
class StreamResult:
    """What preflight found for one expected stream."""

    source_id: str
    kind: str
    found: int = 0
    name: str | None = None
    hostname: str | None = None
    channel_count: int | None = None
    nominal_rate: float | None = None
    expected_rate: float | None = None
    effective_rate: float | None = None
    samples: int = 0
    monotonic: bool | None = None
    largest_gap_s: float | None = None
    clock_offset_s: float | None = None
    stamp_to_local_clock_s: float | None = None
    stamp_drift: float | None = None

    @property
    def present(self) -> bool:
        return self.found == 1


@dataclass
class ParticipantResult:
    """One participant: their EEG stream, channels and readiness."""

    label: str
    eeg: StreamResult
    channels: list[ChannelResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.eeg.present and not any(p.severity == "error" for p in self.problems)


@dataclass
class PreflightReport:
    """The outcome of :func:`run_preflight`."""

    config: PreflightConfig
    session_id: str
    participants: dict[str, ParticipantResult]
    markers: StreamResult
    marker_problems: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Every problem: participants first (in order), then the marker stream."""
        found = [p for result in self.participants.values() for p in result.problems]
        return found + list(self.marker_problems)

    @property
    def ready(self) -> bool:
        """Every participant ready and no error on the marker stream."""
        return all(result.ready for result in self.participants.values()) and not any(
            p.severity == "error" for p in self.marker_problems
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable report."""
        return {
            "ready": self.ready,
            "study": self.config.study,
            "dyad": self.config.dyad,
            "lsl_session_id": self.session_id,
            "config": asdict(self.config),
            "participants": {
                label: {
                    "ready": result.ready,
                    "eeg": asdict(result.eeg),
                    "channels": [_json_channel(channel) for channel in result.channels],
                }
                for label, result in self.participants.items()
            },
            "markers": asdict(self.markers),
            "problems": [asdict(problem) for problem in self.problems],
        }


def _json_channel(channel: ChannelResult) -> dict[str, Any]:
    """A channel's result for JSON: a measure that could not be taken (NaN: the robust z of a
    channel without variance, say) is ``null``."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in asdict(channel).items()
    }


# --------------------------------------------------------------------------- LSL configuration


# --------------------------------------------------------------------------- reading streams


def _resolve_all(window_s: float) -> list[Any]:
    """Every stream that answers during ``window_s`` seconds (union over repeated query waves).

    One query wave can miss a stream when a UDP packet is lost; collecting over the whole window
    (as LabRecorder's continuous resolver does) also reveals every stream claiming a source_id.
    """
    import pylsl

    resolver = pylsl.ContinuousResolver(forget_after=max(5.0, 2 * window_s))
    found: dict[str, Any] = {}
    deadline = time.monotonic() + window_s
    try:
        while True:
            for info in resolver.results():
                found[info.uid()] = info
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        del resolver
    return list(found.values())


@dataclass
class _Probe:
    """Raw material gathered from one stream."""

    info: Any
    values: np.ndarray | None = None  # (n_samples, n_channels)
    stamps: np.ndarray | None = None  # (n_samples,)
    receipts: list[tuple[float, float]] = field(default_factory=list)  # (receipt time, newest stamp)
    clock_offset: float | None = None
    full_info: Any = None
    error: str | None = None


def _probe(probe: _Probe, read_s: float | None, clock_timeout_s: float, open_timeout_s: float) -> None:
    import pylsl
    from pylsl.util import TimeoutError as LslTimeoutError

    inlet = pylsl.StreamInlet(probe.info, max_buflen=max(30, int(2 * (read_s or 0) + 10)), processing_flags=0)
    try:
        inlet.open_stream(timeout=open_timeout_s)
        probe.full_info = inlet.info(timeout=open_timeout_s)
        try:
            probe.clock_offset = float(inlet.time_correction(timeout=clock_timeout_s))
        except LslTimeoutError:
            probe.clock_offset = None
        if read_s is None:
            return
        while inlet.pull_chunk(timeout=0.0, max_samples=4096)[1]:
            pass  # what arrived while the clock was measured: its receipt times are meaningless
        values: list[Any] = []
        stamps: list[float] = []
        deadline = pylsl.local_clock() + read_s
        while pylsl.local_clock() < deadline:
            chunk, chunk_stamps = inlet.pull_chunk(timeout=0.05, max_samples=4096)
            if chunk_stamps:
                probe.receipts.append((pylsl.local_clock(), float(chunk_stamps[-1])))
                values.extend(chunk)
                stamps.extend(chunk_stamps)
        probe.values = np.asarray(values, dtype=float).reshape(len(stamps), -1)
        probe.stamps = np.asarray(stamps, dtype=float)
    except Exception as error:
        logger.exception("Preflight could not read %s", probe.info.source_id())
        probe.error = f"{type(error).__name__}: {error}"
    finally:
        inlet.close_stream()


def _channel_labels(full_info: Any, count: int) -> list[str]:
    labels = [channel.label for channel in declared_channels(full_info)[:count]] if full_info is not None else []
    if len(labels) != count or not all(labels):
        return [f"ch{i + 1}" for i in range(count)]
    return labels


# --------------------------------------------------------------------------- checks


def _problem(severity: Severity, check: str, message: str, fix: str, **where: Any) -> Problem:
    return Problem(severity=severity, check=check, message=message, fix=fix, **where)


def _missing_problem(
    config: PreflightConfig,
    expected: str,
    expected_name: str,
    what: str,
    session: str,
    visible: Sequence[Any],
    **where: Any,
) -> Problem:
    suffix = "." + ".".join(expected.split(".")[3:])  # ".A.eeg" or ".markers"
    lookalikes = [
        f"'{info.name()}' ({info.source_id()})"
        for info in visible
        if info.source_id() != expected and (info.name() == expected_name or info.source_id().endswith(suffix))
    ]
    message = (
        f"No {what} stream with source_id '{expected}' is visible from this PC (LSL SessionID "
        f"'{session}', waited {config.resolve_timeout_s:g} s)."
    )
    if lookalikes:
        message += f" Visible instead: {', '.join(lookalikes[:5])} - is the study or dyad id different?"
    if what == "marker":
        fix = (
            "Start the session's marker outlet before preflight (the session runner does this; a task run "
            "alone must create it), with the same study and dyad ids."
        )
    else:
        fix = (
            f"Start participant {where.get('participant')}'s bridge (`dyadlab stream`) with study '{config.study}' "
            f"and dyad '{config.dyad}'. If it runs on another PC, that PC must use the same LSL SessionID "
            f"('{session}' here: `--session-id` or lsl_api.cfg [lab] SessionID) and the firewall must allow LSL "
            "(UDP 16571-16604, TCP 16572-16604); a stream of another SessionID is invisible by design."
        )
    return _problem("error", "presence", message, fix, stream=expected, **where)


def _duplicate_problem(expected: str, infos: Sequence[Any], **where: Any) -> Problem:
    hosts = ", ".join(sorted(f"{info.hostname()} (uid {info.uid()[:8]})" for info in infos))
    return _problem(
        "error",
        "uniqueness",
        f"{len(infos)} streams claim source_id '{expected}': {hosts}. The recorder could pick the wrong one.",
        "Stop the extra bridge or simulator (a second `dyadlab stream` or a forgotten demo, possibly on "
        "another PC of this SessionID), or give the other session a different dyad id.",
        stream=expected,
        **where,
    )


def _check_timing(result: StreamResult, probe: _Probe, config: PreflightConfig, label: str) -> list[Problem]:
    problems: list[Problem] = []
    where = {"participant": label, "stream": result.source_id}
    if probe.clock_offset is None:
        problems.append(
            _problem(
                "error",
                "clock_offset",
                f"The clock offset to {result.hostname} could not be measured within {config.clock_timeout_s:g} s, "
                "so the recording could not be synchronized.",
                "Allow LSL's UDP time probes through the firewall on both PCs (UDP 16571-16604) and check the "
                "network link; on Wi-Fi prefer a cable.",
                **where,
            )
        )
    stamps = probe.stamps if probe.stamps is not None else np.empty(0)
    result.samples = int(stamps.size)
    expected_rate = result.expected_rate or 0.0
    if stamps.size < 2:
        problems.append(
            _problem(
                "error",
                "data",
                f"The EEG stream exists but delivered {stamps.size} samples in {config.duration_s:g} s.",
                "The board or bridge has stopped: check the amplifier is on and in range, its cable or dongle, "
                "and the bridge's status line; then restart the bridge.",
                **where,
            )
        )
        return problems
    steps = np.diff(stamps)
    result.monotonic = bool(np.all(steps > 0))
    result.largest_gap_s = float(steps.max())
    if not result.monotonic:
        problems.append(
            _problem(
                "error",
                "monotonic",
                f"Timestamps go backwards or repeat {int(np.sum(steps <= 0))} times in {stamps.size} samples.",
                "The source stamps samples inconsistently (clock reset, or chunks stamped with one time): stamp "
                "each sample from one monotonic clock, pylsl.local_clock(); restart the bridge.",
                **where,
            )
        )
    span = stamps[-1] - stamps[0]
    result.effective_rate = float((stamps.size - 1) / span) if span > 0 else None
    if expected_rate > 0 and result.effective_rate is not None:
        deviation = result.effective_rate / expected_rate - 1.0
        if abs(deviation) > config.rate_tolerance:
            problems.append(
                _problem(
                    "error",
                    "rate",
                    f"Effective sampling rate {result.effective_rate:.1f} Hz differs from the expected "
                    f"{expected_rate:g} Hz by {deviation * 100:+.1f} % (tolerance ±{config.rate_tolerance * 100:g} %).",
                    "Check the board's sampling-rate setting and that the right board type was chosen; a wireless "
                    "board losing packets (distance, interference, low battery) also lowers the rate.",
                    **where,
                )
            )
        gap_limit = max(0.1, 10.0 / expected_rate)
        if result.largest_gap_s > gap_limit and result.monotonic:
            problems.append(
                _problem(
                    "warning",
                    "gaps",
                    f"Timestamps jump by up to {result.largest_gap_s * 1000:.0f} ms (samples missing).",
                    "Move the wireless board closer to its dongle, remove interference (USB 3 hubs, Wi-Fi), "
                    "and check CPU load on the acquisition PC.",
                    **where,
                )
            )
        received_share = stamps.size / (config.duration_s * expected_rate)
        if received_share < 0.5:
            problems.append(
                _problem(
                    "error",
                    "data",
                    f"Only {stamps.size} samples arrived in {config.duration_s:g} s ({received_share:.0%} of "
                    f"{expected_rate:g} Hz).",
                    "The stream is stalling: check the board's connection and the bridge's status line.",
                    **where,
                )
            )
    if probe.receipts:
        offset = probe.clock_offset or 0.0
        mismatch = float(np.median([receipt - (stamp + offset) for receipt, stamp in probe.receipts]))
        result.stamp_to_local_clock_s = mismatch
        if abs(mismatch) > _UNIX_EPOCH_OFFSET_S:
            problems.append(
                _problem(
                    "error",
                    "local_clock",
                    f"Timestamps are {-mismatch:.3g} s away from LSL's local_clock(): the source stamps samples "
                    "with Unix wall-clock time (time.time()), as muse-lsl and BlueMuse once did. XDF "
                    "synchronization assumes local_clock() and would misalign this stream with the markers.",
                    "Stamp samples on pylsl.local_clock(): convert device timestamps (dyadlab's bridge does this "
                    "with dyadlab.acquisition.clock.UnixToLslClock) or let LSL stamp them at push time.",
                    **where,
                )
            )
        elif abs(mismatch) > config.max_clock_mismatch_s:
            problems.append(
                _problem(
                    "error",
                    "local_clock",
                    f"Sample timestamps are {mismatch:+.2f} s off local_clock() at receipt (after the clock "
                    "offset): the source uses another clock or a large, unconverted delay.",
                    "Stamp samples on pylsl.local_clock() of the acquisition PC (convert the device clock "
                    "per chunk), then restart the bridge.",
                    **where,
                )
            )
        if abs(mismatch) <= _UNIX_EPOCH_OFFSET_S:
            problems.extend(_check_drift(result, probe, config, where))
    return problems


def _check_drift(result: StreamResult, probe: _Probe, config: PreflightConfig, where: dict[str, str]) -> list[Problem]:
    """Do the stamps keep pace with local_clock()? A device that delivers fewer samples than its
    stamps claim (or whose sample clock runs off) falls behind by a growing amount."""
    receipts = np.array(probe.receipts)
    if receipts.shape[0] < 10 or receipts[-1, 0] - receipts[0, 0] < 0.5 or not result.expected_rate:
        return []
    lag = receipts[:, 0] - receipts[:, 1]
    result.stamp_drift = float(scipy.stats.theilslopes(lag, receipts[:, 0])[0])  # robust to stalls
    if abs(result.stamp_drift) <= config.rate_tolerance:
        return []
    true_rate = result.expected_rate * (1.0 - result.stamp_drift)
    return [
        _problem(
            "error",
            "drift",
            f"Sample timestamps fall {'behind' if result.stamp_drift > 0 else 'ahead of'} local_clock() by "
            f"{abs(result.stamp_drift) * 1000:.0f} ms per second: samples arrive at about {true_rate:.0f} Hz while "
            f"their stamps claim {result.expected_rate:g} Hz.",
            "The device's real rate differs from its nominal one, or samples are lost and stamped as if they were "
            "not: check the board's rate setting and connection; stamp samples from the device clock converted to "
            "local_clock() instead of counting at the nominal rate.",
            **where,
        )
    ]


def _test_signal_board(full_info: Any) -> str | None:
    """The board's name when its "EEG" is a generated test signal, else ``None``."""
    if full_info is None:
        return None
    board = full_info.desc().child("device").child_value("board")
    return board if board in TEST_SIGNAL_BOARDS else None


def _check_channels(
    probe: _Probe, result: StreamResult, config: PreflightConfig, label: str
) -> tuple[list[ChannelResult], list[Problem]]:
    if probe.values is None or probe.values.shape[0] < 16:
        return [], []
    labels = _channel_labels(probe.full_info, probe.values.shape[1])
    keep = [i for i, name in enumerate(labels) if name != MARKER_CHANNEL_LABEL]
    values = probe.values[:, keep]
    names = [labels[i] for i in keep]
    fs = result.effective_rate or result.nominal_rate or 0.0
    if not fs > 0:
        return [], []
    quality = classify_channels(
        np.ascontiguousarray(values.T), fs, config.line_freq, unit="microvolts", thresholds=config.thresholds
    )
    channels = [_channel_result(quality, i, name) for i, name in enumerate(names)]
    # A blink or a movement in a few seconds of data is not a bad electrode: a channel noisy in
    # only a few half-second segments is reported, but it does not stop the session.
    lasting = noisy_throughout(np.ascontiguousarray(values.T), fs, quality)
    passing = {i for i in np.flatnonzero(quality.noisy & ~lasting) if channels[i].flags == ["noisy"]}
    bad = [channel for i, channel in enumerate(channels) if channel.flags and i not in passing]
    severity: Severity = "error" if len(bad) > config.max_bad_channels else "warning"
    problems = [
        _channel_problem(severity, flag, channel, config, label, result.source_id)
        for channel in bad
        for flag in channel.flags
    ]
    problems += [_transient_noise_problem(channels[i], label, result.source_id) for i in sorted(passing)]
    test_board = _test_signal_board(probe.full_info)
    if test_board is not None and problems:
        counts = Counter(problem.check for problem in problems)
        summary = ", ".join(f"{check} x{n}" for check, n in sorted(counts.items()))
        problems = [
            _problem(
                "warning",
                "test_signal",
                f"The {test_board} board streams test signals, not EEG: {len(bad)} channel(s) flagged "
                f"({summary}); signal checks are informational.",
                "Nothing to fix for a pilot; connect a real amplifier (or use --simulate) to check EEG quality.",
                participant=label,
                stream=result.source_id,
            )
        ]
    return channels, problems


def _transient_noise_problem(channel: ChannelResult, label: str, stream: str) -> Problem:
    return _problem(
        "warning",
        "noisy_transient",
        f"Noisy for a moment only: std {channel.std_uv:.1f} µV over the window, {channel.ratio_to_median:.1f} x "
        "the median of the other channels, but not in most half-second parts of it (a blink or a movement).",
        "Nothing if the participant blinked or moved; if it recurs, check this electrode's contact.",
        participant=label,
        stream=stream,
        channel=channel.label,
    )


def _optional(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _channel_result(quality: ChannelQuality, index: int, label: str) -> ChannelResult:
    return ChannelResult(
        label=label,
        std_uv=float(quality.std[index]),
        robust_z=float(quality.robust_z[index]),
        ratio_to_median=float(quality.ratio_to_median[index]),
        railed_fraction=float(quality.railed_fraction[index]),
        repeat_fraction=float(quality.repeat_fraction[index]),
        line_noise_db=_optional(quality.line_noise_db[index]),
        flags=quality.flags(index),
    )


def _channel_problem(
    severity: Severity, flag: str, channel: ChannelResult, config: PreflightConfig, label: str, stream: str
) -> Problem:
    thresholds = config.thresholds
    if flag == "flat":
        reasons = []
        if not channel.std_uv >= thresholds.flat_std_uv:
            reasons.append(f"std {channel.std_uv:.2f} µV < {thresholds.flat_std_uv:g} µV")
        if not channel.repeat_fraction <= thresholds.flat_repeat_fraction:
            reasons.append(
                f"the same value in {channel.repeat_fraction:.0%} of consecutive samples "
                f"(limit {thresholds.flat_repeat_fraction:.0%})"
            )
        message = f"No signal ({'; '.join(reasons) or 'no data'})."
        fix = (
            "Re-seat the electrode and check its lead and the amplifier connector; check the channel is "
            "switched on in the board settings."
        )
    elif flag == "railed":
        message = (
            f"Railed: {channel.railed_fraction:.0%} of the samples sit at the amplifier's limit "
            f"(limit {thresholds.railed_fraction:.0%})."
        )
        fix = (
            "The input saturates: re-seat the electrode (it may be off the scalp), check the reference and "
            "ground electrodes, and lower the gain if the board allows it."
        )
    elif flag == "noisy":
        message = (
            f"Noisy: std {channel.std_uv:.1f} µV (limit {thresholds.noisy_std_uv:g} µV), "
            f"{channel.ratio_to_median:.1f} x the median of the other channels with robust z "
            f"{channel.robust_z:.1f} (limits {thresholds.noisy_ratio:g} x and z {thresholds.noisy_robust_z:g} together)."
        )
        fix = (
            "Improve the contact (more gel, part the hair, re-seat the electrode), secure the cable against "
            "movement, and ask the participant to relax jaw and shoulders."
        )
    else:
        message = (
            f"Strong {config.line_freq:g} Hz line noise: the mains peak stands {channel.line_noise_db:.0f} dB "
            f"above the neighbouring spectrum (limit {thresholds.line_noise_db:g} dB)."
        )
        fix = (
            "Lower the electrode impedance (this one and the ground/reference), keep mains cables and power "
            "supplies away from the cap and amplifier, run the laptop on battery."
        )
    return _problem(severity, flag, message, fix, participant=label, stream=stream, channel=channel.label)


# --------------------------------------------------------------------------- entry point


def run_preflight(config: PreflightConfig) -> PreflightReport:
    """Check that the configured dyad is ready to record.

    Takes about ``resolve_timeout_s + clock_timeout_s (at most) + duration_s`` seconds: every stream
    is read at the same time.

    Parameters
    ----------
    config : PreflightConfig

    Returns
    -------
    PreflightReport
        ``.ready``, ``.problems`` (each with a fix), per-participant stream and channel results,
        ``.to_dict()`` for JSON.
    """
    session = session_id_in_force()
    visible = _resolve_all(config.resolve_timeout_s)
    logger.info("Preflight: %d LSL streams visible (SessionID %s)", len(visible), session)

    def matching(expected: str) -> list[Any]:
        return [info for info in visible if info.source_id() == expected]

    participants: dict[str, ParticipantResult] = {}
    probes: dict[str, _Probe] = {}
    for label in config.participants:
        expected = source_id(config.study, config.dyad, "eeg", label)
        result = ParticipantResult(label=label, eeg=StreamResult(source_id=expected, kind="eeg"))
        participants[label] = result
        infos = matching(expected)
        result.eeg.found = len(infos)
        if not infos:
            result.problems.append(
                _missing_problem(
                    config,
                    expected,
                    f"{config.dyad}-{label}-EEG",
                    f"participant {label} EEG",
                    session,
                    visible,
                    participant=label,
                )
            )
        elif len(infos) > 1:
            result.problems.append(_duplicate_problem(expected, infos, participant=label))
        else:
            info = infos[0]
            result.eeg.name, result.eeg.hostname = info.name(), info.hostname()
            result.eeg.channel_count = info.channel_count()
            result.eeg.nominal_rate = info.nominal_srate()
            result.eeg.expected_rate = config.expected_rate or info.nominal_srate()
            probes[label] = _Probe(info)

    marker_id = source_id(config.study, config.dyad, "markers")
    markers = StreamResult(source_id=marker_id, kind="markers")
    marker_problems: list[Problem] = []
    marker_infos = matching(marker_id)
    markers.found = len(marker_infos)
    marker_probe: _Probe | None = None
    if not marker_infos:
        problem = _missing_problem(config, marker_id, f"{config.dyad}-Markers", "marker", session, visible)
        if not config.require_markers:
            problem = Problem(**{**asdict(problem), "severity": "warning"})
        marker_problems.append(problem)
    elif len(marker_infos) > 1:
        marker_problems.append(_duplicate_problem(marker_id, marker_infos))
    else:
        markers.name, markers.hostname = marker_infos[0].name(), marker_infos[0].hostname()
        marker_probe = _Probe(marker_infos[0])

    open_timeout = max(2.0, config.resolve_timeout_s)
    threads = [
        threading.Thread(
            target=_probe,
            args=(probe, config.duration_s, config.clock_timeout_s, open_timeout),
            name=f"preflight-{label}",
            daemon=True,
        )
        for label, probe in probes.items()
    ]
    if marker_probe is not None:
        threads.append(
            threading.Thread(
                target=_probe,
                args=(marker_probe, None, config.clock_timeout_s, open_timeout),
                name="preflight-markers",
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(open_timeout + config.clock_timeout_s + config.duration_s + 10.0)

    for label, probe in probes.items():
        result = participants[label]
        if probe.error is not None:
            result.problems.append(
                _problem(
                    "error",
                    "read",
                    f"Reading the EEG stream failed: {probe.error}.",
                    "Restart the participant's bridge; if it persists, check the network between the PCs.",
                    participant=label,
                    stream=result.eeg.source_id,
                )
            )
            continue
        declared = result.eeg.nominal_rate  # set for every probed stream
        if config.expected_rate is not None and declared is not None and abs(declared - config.expected_rate) > 1e-6:
            result.problems.append(
                _problem(
                    "error",
                    "rate",
                    f"The stream declares {declared:g} Hz but the session expects {config.expected_rate:g} Hz.",
                    "Set the board's sampling rate to the protocol's, or correct the protocol's expected rate.",
                    participant=label,
                    stream=result.eeg.source_id,
                )
            )
        result.problems.extend(_check_timing(result.eeg, probe, config, label))
        result.eeg.clock_offset_s = probe.clock_offset
        result.channels, channel_problems = _check_channels(probe, result.eeg, config, label)
        result.problems.extend(channel_problems)
    if marker_probe is not None:
        markers.clock_offset_s = marker_probe.clock_offset
        if marker_probe.error is not None or marker_probe.clock_offset is None:
            marker_problems.append(
                _problem(
                    "error",
                    "clock_offset",
                    f"The marker stream's clock offset could not be measured ({marker_probe.error or 'timeout'}).",
                    "Allow LSL's UDP time probes through the firewall (UDP 16571-16604) on the stimulus PC.",
                    stream=marker_id,
                )
            )
    report = PreflightReport(config, session, participants, markers, marker_problems)
    logger.info(
        "Preflight of %s/%s: %s, %d problem(s)",
        config.study,
        config.dyad,
        "ready" if report.ready else "NOT ready",
        len(report.problems),
    )
    for problem in report.problems:
        logger.info("Preflight: %s", problem)
    return report


__all__ = [
    "ChannelResult",
    "ChannelThresholds",
    "ParticipantResult",
    "PreflightConfig",
    "PreflightReport",
    "Problem",
    "StreamResult",
    "run_preflight",
]
