"""Data quality of each participant's recording and of the pair.

Every threshold is a field of :class:`QualityThresholds`, documented there and in
``docs/quickcheck-schema.md``; the JSON report carries the values used.

Channel standard deviations are taken above 1 Hz, from each channel's Welch spectrum (2-s
segments, mean removed per segment), so electrode offsets and slow drifts do not count as signal.
The spectrum of a long recording is estimated from at most 90 two-second windows spread evenly over it
(``SPECTRUM_MAX_WINDOWS``; the report's ``channels.spectrum`` says how many were used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import signal

from dyadlab.synchrony.io import EventMarker, ParticipantEeg

POSTERIOR_PREFIXES = ("O", "PO", "P")
#: At most this many 2-s Welch windows (no more than 180 s of data), spread over the recording,
#: make the spectrum of a channel (see ``_channels``).
SPECTRUM_MAX_WINDOWS = 90
#: A channel holding NaN in more than this fraction of its samples takes its spectrum windows
#: from its own NaN-free stretches and does not choose the other channels' (see ``_channels``).
MOSTLY_NAN_FRACTION = 0.5


@dataclass(frozen=True)
class QualityThresholds:
    """Thresholds of the quality checks.

    Attributes
    ----------
    gap_samples : float
        A step between consecutive timestamps larger than ``gap_samples / nominal rate`` is a
        gap (samples lost, or a clock jump).
    rate_tolerance : float
        Relative difference between effective and nominal rate above which the rate is flagged.
    flat_std_uv : float
        A channel whose high-passed standard deviation is below this (µV) is flat.
    flat_repeat_fraction : float
        A channel repeating its previous value in more than this fraction of samples is flat
        (whatever the unit).
    railed_fraction : float
        A channel sitting exactly at its own minimum or maximum value in at least this fraction
        of samples is railed (a clipped amplifier repeats its limit).
    noisy_robust_z : float
        A channel whose log standard deviation lies more than this many robust standard
        deviations (1.4826 x MAD) above the median of the participant's channels, *and* whose
        standard deviation is at least ``noisy_ratio`` times that median, is noisy (the ratio
        keeps a tight montage, whose MAD is tiny, from flagging ordinary differences).
    noisy_ratio : float
    noisy_std_uv : float
        A channel with a high-passed standard deviation above this (µV) is noisy.
    line_noise_db : float
        A channel whose mains peak stands this many dB above the neighbouring spectrum has
        line noise.
    residual_warn_ms : float
        Board-marker vs LSL-marker residuals beyond this (absolute, ms) are flagged.
    overlap_warn_fraction : float
        A/B overlap below this fraction of the union of both recordings is flagged.
    """

    gap_samples: float = 25.0
    rate_tolerance: float = 0.01
    flat_std_uv: float = 0.5
    flat_repeat_fraction: float = 0.5
    railed_fraction: float = 0.01
    noisy_robust_z: float = 3.5
    noisy_ratio: float = 2.0
    noisy_std_uv: float = 100.0
    line_noise_db: float = 20.0
    residual_warn_ms: float = 20.0
    overlap_warn_fraction: float = 0.9


def _robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD), with a floor on the MAD so equal values give z = 0."""
    median = np.nanmedian(values)
    mad = 1.4826 * np.nanmedian(np.abs(values - median))
    return (values - median) / max(mad, 1e-12 + 1e-3 * abs(median))


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


def _spectrum_windows(clean: np.ndarray, nperseg: int) -> tuple[np.ndarray, int]:
    """Start samples of the Welch windows, and how many windows the recording offers.

    Welch's own grid (windows of ``nperseg`` samples, half overlapping), keeping the windows in
    which ``clean`` holds throughout (every window when none does), thinned to
    :data:`SPECTRUM_MAX_WINDOWS` spread evenly over the kept ones.
    """
    starts = np.arange(0, clean.size - nperseg + 1, nperseg - nperseg // 2)
    dirty_before = np.concatenate(([0], np.cumsum(~clean)))
    whole = dirty_before[starts + nperseg] == dirty_before[starts]
    if whole.any():
        starts = starts[whole]
    available = int(starts.size)
    if available > SPECTRUM_MAX_WINDOWS:
        starts = starts[np.linspace(0, available - 1, SPECTRUM_MAX_WINDOWS).round().astype(np.int64)]
    return starts, available


def _window_spectrum(
    data: np.ndarray, starts: np.ndarray, nperseg: int, fs: float, fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's PSD of each row of ``data`` averaged over the windows of ``nperseg`` samples
    beginning at ``starts`` (NaN replaced by the row's ``fill``): frequencies, PSD
    (n_rows, n_freqs) and the standard deviation above 1 Hz it gives."""
    windows = data[:, starts[:, None] + np.arange(nperseg)].astype(np.float64)  # (rows, windows, nperseg)
    windows = np.where(np.isfinite(windows), windows, fill[:, None, None])
    freqs, psd = signal.welch(windows, fs=fs, nperseg=nperseg, noverlap=0, detrend="constant", axis=-1)
    psd = psd.mean(axis=1)
    # Standard deviation above 1 Hz, from the spectrum (no filtering pass over the data).
    std = (
        np.sqrt(np.sum(psd[:, freqs >= 1.0], axis=1) * (freqs[1] - freqs[0]))
        if freqs.size > 1
        else windows.std(axis=(1, 2))
    )
    return freqs, psd, std


def _channels(p: ParticipantEeg, th: QualityThresholds) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Per-channel checks; also returns the Welch PSD (n_channels, n_freqs) and its frequencies.

    Flat, railed and NaN counts look at every sample. The spectrum (standard deviation above
    1 Hz, line noise, alpha peak) is Welch's estimate over at most
    :data:`SPECTRUM_MAX_WINDOWS` 2-s Hann windows from Welch's usual grid of half-overlapping
    windows (one every second), spread evenly over the whole recording. Windows in which a
    channel holds NaN are skipped, counting only the channels with NaN in at most half their
    samples (:data:`MOSTLY_NAN_FRACTION`): a channel mostly NaN (a lead lost for most of
    the session) would leave the others few windows or none. Such a channel's spectrum comes
    from its own NaN-free windows, chosen the same way; a dead channel (all NaN) has none, and
    when no window is free of NaN the channel's median stands in for it. A recording of up to
    about 91 s (90 windows) thus gets plain Welch over every sample; an hour is estimated from
    windows every ~40 s, which keeps the check to seconds while still seeing a problem that
    lasts a fair part of it.
    """
    fs = p.nominal_rate
    n_channels, n_samples = p.data.shape
    nperseg = int(min(n_samples, round(2 * fs)))
    repeat = np.zeros(n_channels)
    railed = np.zeros(n_channels)
    nan_count = np.zeros(n_channels, dtype=np.int64)
    fill = np.zeros(n_channels, dtype=np.float32)  # stands in for NaN: the channel's median (0 if dead)
    mostly_nan = MOSTLY_NAN_FRACTION * n_samples  # more NaN samples: a channel's own spectrum windows
    clean = np.ones(n_samples, dtype=bool)  # no NaN in any other channel with data
    # One channel at a time on the float32 rows: no float64 copy of the recording.
    for c in range(n_channels):
        row = p.data[c]
        finite = np.isfinite(row)
        nan_count[c] = n_samples - np.count_nonzero(finite)
        if nan_count[c] == n_samples:
            continue
        if nan_count[c]:
            if nan_count[c] <= mostly_nan:
                clean &= finite
            fill[c] = np.median(row[finite])
            row = np.where(finite, row, fill[c])
        repeat[c] = np.count_nonzero(row[1:] == row[:-1]) / (n_samples - 1) if n_samples > 1 else 1.0
        lo, hi = row.min(), row.max()
        railed[c] = np.count_nonzero((row == lo) | (row == hi)) / n_samples if hi > lo else 0.0
    dead = nan_count == n_samples
    starts, available = _spectrum_windows(clean, nperseg)
    freqs, psd, std = _window_spectrum(p.data, starts, nperseg, fs, fill)
    for c in np.flatnonzero(~dead & (nan_count > mostly_nan)):
        own, _ = _spectrum_windows(np.isfinite(p.data[c]), nperseg)
        _, own_psd, own_std = _window_spectrum(p.data[c : c + 1], own, nperseg, fs, fill[c : c + 1])
        psd[c], std[c] = own_psd[0], own_std[0]
    std[dead] = np.nan
    microvolts = p.unit.lower() in ("microvolts", "uv", "µv")
    log_std = np.log(np.where(std > 0, std, np.nan))
    z = _robust_z(log_std)
    flat = (repeat > th.flat_repeat_fraction) | (microvolts & (std < th.flat_std_uv)) | ~np.isfinite(std)
    is_railed = railed >= th.railed_fraction
    ratio = std / np.nanmedian(std[~flat]) if (~flat).any() else np.ones_like(std)
    noisy = ~flat & (((z > th.noisy_robust_z) & (ratio >= th.noisy_ratio)) | (microvolts & (std > th.noisy_std_uv)))
    labels = p.channel_labels
    line = _line_noise(freqs, psd, fs)
    line_bad = [labels[i] for i in np.flatnonzero(np.nan_to_num(line["ratio_db"], nan=0.0) > th.line_noise_db)]
    channels = {
        "labels": labels,
        "std_uv" if microvolts else "std": [None if not np.isfinite(v) else round(float(v), 4) for v in std],
        "nan_samples": nan_count.tolist(),
        "flat": [labels[i] for i in np.flatnonzero(flat)],
        "railed": [labels[i] for i in np.flatnonzero(is_railed)],
        "noisy": [labels[i] for i in np.flatnonzero(noisy)],
        "line_frequency_hz": line["frequency"],
        "line_noise_db": [None if not np.isfinite(v) else round(float(v), 2) for v in line["ratio_db"]],
        "line_noise_channels": line_bad,
        "spectrum": {
            "window_s": nperseg / fs,
            "windows": int(starts.size),
            "available_windows": available,
            "max_windows": SPECTRUM_MAX_WINDOWS,
        },
    }
    return channels, freqs, psd


def _line_noise(freqs: np.ndarray, psd: np.ndarray, fs: float) -> dict[str, Any]:
    """Mains peak (dB above neighbouring 2-5 Hz) per channel at 50 or 60 Hz, whichever is larger.

    ``frequency`` is ``None`` when neither stands more than 3 dB out on any channel.
    """
    best: dict[str, Any] = {"frequency": None, "ratio_db": np.full(psd.shape[0], np.nan)}
    for mains in (50.0, 60.0):
        if fs / 2 <= mains + 5:
            continue
        peak = (freqs >= mains - 1) & (freqs <= mains + 1)
        around = ((freqs >= mains - 5) & (freqs <= mains - 2)) | ((freqs >= mains + 2) & (freqs <= mains + 5))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 10 * np.log10(psd[:, peak].mean(axis=1) / np.median(psd[:, around], axis=1))
        strongest = np.nanmax(ratio) if np.isfinite(ratio).any() else -np.inf
        if strongest > 3.0 and (best["frequency"] is None or strongest > np.nanmax(best["ratio_db"])):
            best = {"frequency": mains, "ratio_db": ratio}
        elif best["frequency"] is None and not np.isfinite(best["ratio_db"]).any():
            best = {"frequency": None, "ratio_db": ratio}
    return best


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
    coded = [m for m in markers if m.fields is not None and isinstance(m.fields.get("code"), (int, float))]
    if p.board_markers is None or not coded:
        return None
    board_index = np.flatnonzero(np.nan_to_num(p.board_markers) != 0)
    board_times = p.timestamps[board_index]
    board_codes = p.board_markers[board_index]
    residuals = []
    for marker in coded:
        same = board_codes == marker.fields["code"]
        delta = board_times[same] - marker.time
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
    p: ParticipantEeg, markers: list[EventMarker], thresholds: QualityThresholds = QualityThresholds()
) -> tuple[dict[str, Any], list[str]]:
    """The quality section of one participant, and the problems found as warning sentences.

    Returns
    -------
    quality : dict
        JSON-ready; keys documented in ``docs/quickcheck-schema.md`` (``quality.<A|B>``).
    problems : list of str
    """
    who = f"Participant {p.label}"
    timing = _timing(p, thresholds)
    channels, freqs, psd = _channels(p, thresholds)
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
    """The thresholds as recorded in the JSON report."""
    return asdict(thresholds)
