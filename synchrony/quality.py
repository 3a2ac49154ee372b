"""Data quality of each participant's recording and of the pair.

Every threshold is a field of :class:`QualityThresholds`, documented there and in
``docs/quickcheck-schema.md``; the JSON report carries the values used. The channel checks
(flat, railed, noisy, line noise) are :func:`dyadlab.channel_quality.classify_channels`, the
same definitions and thresholds (:class:`dyadlab.channel_quality.ChannelThresholds`) as
preflight's.

Channel standard deviations are taken above 1 Hz, from each channel's Welch spectrum (2-s
segments, a straight line removed per segment), so electrode offsets and slow drifts do not
count as signal. The spectrum of a long recording is estimated from at most 90 two-second
windows spread evenly over it (``SPECTRUM_MAX_WINDOWS``; the report's ``channels.spectrum``
says how many were used).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from dyadlab.channel_quality import (
    MOSTLY_NAN_FRACTION,
    SPECTRUM_MAX_WINDOWS,
    ChannelThresholds,
    classify_channels,
)
from dyadlab.synchrony.io import EventMarker, ParticipantEeg

POSTERIOR_PREFIXES = ("O", "PO", "P")
#: Keys of ``inputs.thresholds`` in the JSON report, in their order (``rail_uv`` and
#: ``min_rail_uv`` of :class:`ChannelThresholds` are not among them).
THRESHOLD_KEYS = (
    "gap_samples",
    "rate_tolerance",
    "flat_std_uv",
    "flat_repeat_fraction",
    "railed_fraction",
    "noisy_robust_z",
    "noisy_ratio",
    "noisy_std_uv",
    "line_noise_db",
    "residual_warn_ms",
    "overlap_warn_fraction",
)


@dataclass(frozen=True)
class QualityThresholds(ChannelThresholds):
    """Thresholds of the quality checks: the channel thresholds shared with preflight
    (:class:`dyadlab.channel_quality.ChannelThresholds`: ``flat_std_uv``,
    ``flat_repeat_fraction``, ``railed_fraction``, ``noisy_robust_z``, ``noisy_ratio``,
    ``noisy_std_uv``, ``line_noise_db``, ``rail_uv``, ``min_rail_uv``), and these.

    Attributes
    ----------
    gap_samples : float
        A step between consecutive timestamps larger than ``gap_samples / nominal rate`` is a
        gap (samples lost, or a clock jump).
    rate_tolerance : float
        Relative difference between effective and nominal rate above which the rate is flagged.
    residual_warn_ms : float
        Board-marker vs LSL-marker residuals beyond this (absolute, ms) are flagged.
    overlap_warn_fraction : float
        A/B overlap below this fraction of the union of both recordings is flagged.
    """

    gap_samples: float = 25.0
    rate_tolerance: float = 0.01
    residual_warn_ms: float = 20.0
    overlap_warn_fraction: float = 0.9


def _nan_spans(finite_rows: np.ndarray, timestamps: np.ndarray, limit: int = 10) -> list[list[float]]:
    """[start, end] (seconds from the recording's start) of runs of samples holding NaN."""
    bad = ~finite_rows
    if not bad.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], bad.astype(np.int8), [0]))))
    starts, stops = edges[0::2], edges[1::2] - 1
    t0 = timestamps[0]
    return [
        [round(float(timestamps[s] - t0), 3), round(float(timestamps[e] - t0), 3)]
        for s, e in zip(starts[:limit], stops[:limit])
    ]


def _timing(p: ParticipantEeg, th: QualityThresholds) -> dict[str, Any]:
    t = p.timestamps
    n = t.size
    duration = float(t[-1] - t[0]) if n > 1 else 0.0
    effective = (n - 1) / duration if duration > 0 else float("nan")
    dt = np.diff(t)
    gap_limit = th.gap_samples / p.nominal_rate if p.nominal_rate > 0 else np.inf
    gaps = dt[dt > gap_limit]
    backwards = dt[dt < 0]
    expected = duration * p.nominal_rate + 1 if p.nominal_rate > 0 else float("nan")
    timing: dict[str, Any] = {
        "samples": int(n),
        "start": float(t[0]),
        "end": float(t[-1]),
        "duration_s": duration,
        "nominal_rate_hz": p.nominal_rate,
        "effective_rate_hz": effective,
        "rate_deviation": (effective / p.nominal_rate - 1.0) if p.nominal_rate > 0 else None,
        "missing_samples": int(round(expected - n)) if np.isfinite(expected) else None,
        "gap_threshold_s": gap_limit,
        "gaps": int(gaps.size),
        "largest_gap_s": float(gaps.max()) if gaps.size else 0.0,
        "total_gap_s": float(gaps.sum()),
        "backward_jumps": int(backwards.size),
        "largest_backward_jump_s": float(-backwards.min()) if backwards.size else 0.0,
        "clock_offsets": int(p.clock_times.size),
        "clock_offset_range_ms": float(np.ptp(p.clock_values) * 1e3) if p.clock_values.size else None,
        "footer_sample_count": p.footer_sample_count,
    }
    if p.package_numbers is not None:
        counter = p.package_numbers[np.isfinite(p.package_numbers)].astype(np.int64)
        wrap = 256 if counter.size and counter.max() <= 255 else int(counter.max()) + 1 if counter.size else 1
        steps = np.diff(counter) % wrap
        timing["dropped_packets"] = int(((steps - 1) % wrap)[steps != 1].sum())
    else:
        timing["dropped_packets"] = None
    return timing


def _channels(
    p: ParticipantEeg, th: QualityThresholds, line_freq: float | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Per-channel checks (:func:`dyadlab.channel_quality.classify_channels`; the mains frequency
    detected unless given); also returns the Welch PSD (n_channels, n_freqs) and its frequencies.

    Flat, railed and NaN counts look at every sample. The spectrum (standard deviation above
    1 Hz, line noise, alpha peak) is Welch's estimate over at most
    :data:`SPECTRUM_MAX_WINDOWS` 2-s Hann windows from Welch's usual grid of half-overlapping
    windows (one every second), spread evenly over the whole recording; windows holding NaN
    are skipped, a channel NaN in more than half its samples (:data:`MOSTLY_NAN_FRACTION`)
    having its spectrum from its own NaN-free windows
    (:func:`dyadlab.channel_quality.welch_spectrum`).
    """
    quality = classify_channels(p.data, p.nominal_rate, line_freq, unit=p.unit, thresholds=th)
    spectrum = quality.spectrum
    labels = p.channel_labels
    microvolts = p.unit.lower() in ("microvolts", "uv", "µv")

    def named(mask: np.ndarray) -> list[str]:
        return [labels[i] for i in np.flatnonzero(mask)]

    channels = {
        "labels": labels,
        "std_uv" if microvolts else "std": [None if not np.isfinite(v) else round(float(v), 4) for v in quality.std],
        "nan_samples": quality.nan_samples.tolist(),
        "flat": named(quality.flat),
        "railed": named(quality.railed),
        "noisy": named(quality.noisy),
        "line_frequency_hz": quality.line_frequency,
        "line_noise_db": [None if not np.isfinite(v) else round(float(v), 2) for v in quality.line_noise_db],
        "line_noise_channels": named(quality.line_noise),
        "spectrum": {
            "window_s": spectrum.window_s,
            "windows": spectrum.windows,
            "available_windows": spectrum.available_windows,
            "max_windows": SPECTRUM_MAX_WINDOWS,
        },
    }
    return channels, spectrum.freqs, spectrum.psd


def alpha_peak_frequency(freqs: np.ndarray, psd: np.ndarray, labels: list[str]) -> float | None:
    """Individual alpha peak frequency (Hz) or ``None`` without a clear peak.

    The log spectrum averaged over posterior channels (O*, PO*, P*; all channels when none has
    such a label) minus a straight 1/f fit in log-log coordinates over 2-40 Hz (7-14 Hz
    excluded from the fit); the peak of that residual within 7-14 Hz counts when it stands at
    least 1 dB above the fit.
    """
    if freqs.size < 4 or not np.isfinite(psd).any():
        return None
    posterior = [i for i, lab in enumerate(labels) if lab.upper().startswith(POSTERIOR_PREFIXES)]
    rows = psd[posterior] if posterior else psd
    with np.errstate(divide="ignore", invalid="ignore"):
        log_power = np.nanmean(np.log10(rows), axis=0)
    fit_band = (freqs >= 2) & (freqs <= 40) & ~((freqs >= 7) & (freqs <= 14)) & np.isfinite(log_power)
    alpha = (freqs >= 7) & (freqs <= 14)
    if fit_band.sum() < 3 or not alpha.any():
        return None
    slope, intercept = np.polyfit(np.log10(freqs[fit_band]), log_power[fit_band], 1)
    residual = log_power[alpha] - (intercept + slope * np.log10(freqs[alpha]))
    best = int(np.nanargmax(residual))
    return round(float(freqs[alpha][best]), 2) if residual[best] >= 0.1 else None


def marker_residuals(
    p: ParticipantEeg, markers: list[EventMarker], window: tuple[float, float] = (-0.5, 1.0)
) -> dict[str, Any] | None:
    """Board marker channel time minus LSL marker time, per event with a ``code``.

    Each LSL marker is matched to the board marker sample of the same code nearest in time
    within ``window`` (seconds, relative to the LSL marker). ``None`` when the stream has no
    marker channel or the markers carry no codes.
    """
    # (time, event code) of the dyadlab markers that carry a board code
    coded = [
        (m.time, m.fields["code"])
        for m in markers
        if m.fields is not None and isinstance(m.fields.get("code"), (int, float))
    ]
    if p.board_markers is None or not coded:
        return None
    board_index = np.flatnonzero(np.nan_to_num(p.board_markers) != 0)
    board_times = p.timestamps[board_index]
    board_codes = p.board_markers[board_index]
    residuals = []
    for marker_time, code in coded:
        same = board_codes == code
        delta = board_times[same] - marker_time
        delta = delta[(delta >= window[0]) & (delta <= window[1])]
        if delta.size:
            residuals.append(float(delta[np.argmin(np.abs(delta))]))
    result: dict[str, Any] = {
        "lsl_markers": len(coded),
        "board_markers": int(board_index.size),
        "matched": len(residuals),
    }
    if residuals:
        values = np.array(residuals) * 1e3
        result.update(
            median_ms=round(float(np.median(values)), 3),
            max_abs_ms=round(float(np.abs(values).max()), 3),
            iqr_ms=round(float(np.subtract(*np.percentile(values, [75, 25]))), 3),
        )
    return result


def participant_quality(
    p: ParticipantEeg,
    markers: list[EventMarker],
    thresholds: QualityThresholds = QualityThresholds(),
    line_freq: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The quality section of one participant, and the problems found as warning sentences.

    Parameters
    ----------
    p : ParticipantEeg
    markers : list of EventMarker
    thresholds : QualityThresholds
    line_freq : float or None
        The lab's mains frequency (50 or 60 Hz); ``None`` (default) detects it from the spectrum.

    Returns
    -------
    quality : dict
        JSON-ready; keys documented in ``docs/quickcheck-schema.md`` (``quality.<A|B>``).
    problems : list of str
    """
    who = f"Participant {p.label}"
    timing = _timing(p, thresholds)
    channels, freqs, psd = _channels(p, thresholds, line_freq)
    finite_rows = np.isfinite(p.data).all(axis=0)
    residuals = marker_residuals(p, markers)
    problems = []
    if timing["rate_deviation"] is not None and abs(timing["rate_deviation"]) > thresholds.rate_tolerance:
        problems.append(
            f"{who}: effective rate {timing['effective_rate_hz']:.2f} Hz differs from the nominal "
            f"{p.nominal_rate:g} Hz by {100 * timing['rate_deviation']:+.1f}% (samples lost or a clock problem)."
        )
    if timing["gaps"]:
        problems.append(
            f"{who}: {timing['gaps']} timestamp gap(s) longer than {thresholds.gap_samples:g} samples "
            f"(largest {timing['largest_gap_s']:.3f} s, {timing['total_gap_s']:.2f} s in total); epochs across them are rejected."
        )
    if timing["backward_jumps"]:
        problems.append(
            f"{who}: timestamps go backwards {timing['backward_jumps']} time(s) (largest "
            f"{timing['largest_backward_jump_s']:.3f} s): a clock reset or a broken stream."
        )
    if timing["dropped_packets"]:
        problems.append(f"{who}: {timing['dropped_packets']} packet(s) dropped by the amplifier (package counter).")
    if timing["clock_offsets"] == 0:
        problems.append(
            f"{who}: the stream has no clock-offset measurements, so its clock could not be synchronised with the other streams."
        )
    for kind in ("flat", "railed", "noisy"):
        if channels[kind]:
            problems.append(f"{who}: {kind} channel(s) {', '.join(channels[kind])}; left out of the synchrony metrics.")
    if channels["line_noise_channels"]:
        problems.append(
            f"{who}: strong {channels['line_frequency_hz'] or 'mains'} Hz line noise (> {thresholds.line_noise_db:g} dB) on "
            f"{', '.join(channels['line_noise_channels'])}: check electrode contact and cables."
        )
    nan_spans = _nan_spans(finite_rows, p.timestamps)
    if nan_spans:
        with_nan = [lab for lab, count in zip(p.channel_labels, channels["nan_samples"]) if count]
        spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in nan_spans[:5])
        problems.append(
            f"{who}: {int((~finite_rows).sum())} sample(s) hold NaN on channel(s) {', '.join(with_nan)} at {spans} "
            "(from the start of the recording); epochs overlapping them are rejected."
        )
    if residuals is not None:
        if residuals["matched"] < residuals["lsl_markers"]:
            problems.append(
                f"{who}: only {residuals['matched']} of {residuals['lsl_markers']} LSL markers were found in the "
                "board's marker channel (board markers lost, or the board stream stopped)."
            )
        if residuals.get("max_abs_ms", 0.0) > thresholds.residual_warn_ms:
            problems.append(
                f"{who}: board vs LSL marker times differ by up to {residuals['max_abs_ms']:.1f} ms "
                f"(median {residuals['median_ms']:.1f} ms): EEG and markers may be misaligned."
            )
    quality = {
        "stream": p.stream_name,
        "source_id": p.source_id,
        "participant": p.participant,
        "unit": p.unit,
        "channels_used": len(p.channel_labels),
        "excluded_channels": p.excluded_channels,
        **timing,
        "nan_samples": int((~finite_rows).sum()),
        "nan_spans_s": nan_spans,
        "channels": channels,
        "alpha_peak_hz": alpha_peak_frequency(freqs, psd, p.channel_labels),
        "marker_residuals": residuals,
        "problems": problems,
        "verdict": "ok" if not problems else "check",
    }
    return quality, problems


def recording_overlap(
    a: ParticipantEeg, b: ParticipantEeg, thresholds: QualityThresholds = QualityThresholds()
) -> tuple[dict[str, Any], list[str]]:
    """Start/end difference and overlap of the two recordings (LSL time)."""
    a0, a1 = float(a.timestamps[0]), float(a.timestamps[-1])
    b0, b1 = float(b.timestamps[0]), float(b.timestamps[-1])
    overlap = min(a1, b1) - max(a0, b0)
    union = max(a1, b1) - min(a0, b0)
    result = {
        "start_difference_s": b0 - a0,
        "end_difference_s": b1 - a1,
        "overlap_s": max(overlap, 0.0),
        "overlap_fraction": max(overlap, 0.0) / union if union > 0 else 0.0,
    }
    problems = []
    if 0 < overlap and result["overlap_fraction"] < thresholds.overlap_warn_fraction:
        problems.append(
            f"The two recordings overlap for only {overlap:.1f} s ({100 * result['overlap_fraction']:.0f}% of the session): "
            f"B starts {b0 - a0:+.1f} s and ends {b1 - a1:+.1f} s relative to A; only the overlap is analysed."
        )
    return result, problems


def thresholds_dict(thresholds: QualityThresholds) -> dict[str, float]:
    """The thresholds as recorded in the JSON report (:data:`THRESHOLD_KEYS`)."""
    values = {f.name: getattr(thresholds, f.name) for f in fields(thresholds)}
    return {key: float(values[key]) for key in THRESHOLD_KEYS}


__all__ = [
    "MOSTLY_NAN_FRACTION",
    "SPECTRUM_MAX_WINDOWS",
    "THRESHOLD_KEYS",
    "QualityThresholds",
    "alpha_peak_frequency",
    "marker_residuals",
    "participant_quality",
    "recording_overlap",
    "thresholds_dict",
]
