"""The quick-check report's figures: session timeline, synchrony over time, labelled inter-brain
matrices, topographic maps and spectra.

Each function returns a matplotlib :class:`~matplotlib.figure.Figure` (laid out by hand: no
``tight_layout``, whose text-extent searches cost seconds on many-panel figures) or ``None`` when
there is nothing to draw; :mod:`dyadlab.synchrony.report` inlines them as PNG. The data the JSON
does not hold (spectra, epoch times, markers) come in :class:`SpectrumFigure` and
:class:`TimelineEvents`, filled by :func:`dyadlab.synchrony.check.run_check`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dyadlab.synchrony.results import QuickCheckResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from dyadlab.synchrony.speech import ConversationSpeech

__all__ = [
    "SpectrumFigure",
    "TimelineEvents",
    "conversation_figure",
    "matrices_figure",
    "spectra_figure",
    "synchrony_over_time_figure",
    "timeline_figure",
    "topomap_figure",
]

logger = logging.getLogger(__name__)

#: Fewest channels with standard 10-05 positions for a topographic map (a triangulation needs
#: some; with fewer a map would interpolate from almost nothing).
MIN_TOPOMAP_CHANNELS = 4
#: Highest frequency of the spectra (Hz): above it EEG is mostly noise, and 50/60 Hz stay visible.
SPECTRUM_MAX_HZ = 80.0
#: Marker events drawn as their own rows of the timeline (the rest share one row).
RESPONSE_EVENTS = ("response", "tap", "pacer")
STATUS_COLOURS = {"used": "#2e7d32", "artifact": "#e65100", "invalid": "#757575"}


@dataclass
class SpectrumFigure:
    """One participant's Welch spectrum: ``freqs`` (n_freqs,), ``psd`` (n_channels, n_freqs) in
    ``unit``²/Hz, and the channel labels."""

    freqs: np.ndarray
    psd: np.ndarray
    labels: list[str]
    unit: str


@dataclass
class TimelineEvents:
    """The session on the analysis grid, in seconds from its start.

    Attributes
    ----------
    markers : list of (float, str)
        Every marker's time and event name.
    invalid_spans : list of (float, float)
        Stretches where either participant has no valid data (gaps, NaN, lost samples).
    epoch_starts : np.ndarray
        Start of every planned epoch.
    epoch_status : np.ndarray of str
        ``used``, ``artifact`` (rejected) or ``invalid`` for each planned epoch.
    kept_epoch_starts : dict of condition -> np.ndarray
        Start of each used epoch, in the order of the per-epoch synchrony values.
    """

    markers: list[tuple[float, str]] = field(default_factory=list)
    invalid_spans: list[tuple[float, float]] = field(default_factory=list)
    epoch_starts: np.ndarray = field(default_factory=lambda: np.empty(0))
    epoch_status: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))
    kept_epoch_starts: dict[str, np.ndarray] = field(default_factory=dict)


def _condition_colours(conditions: list[str]) -> dict[str, tuple[float, ...]]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {c: palette(i % 10) for i, c in enumerate(conditions)}


def timeline_figure(result: QuickCheckResult, events: TimelineEvents) -> Figure:
    """Blocks by condition, markers, responses, the fate of every epoch and the invalid stretches."""
    from matplotlib.figure import Figure

    blocks = result.segmentation.blocks
    colours = _condition_colours(list(dict.fromkeys(b.condition for b in blocks)))
    rows = ["blocks", "markers", *RESPONSE_EVENTS, "epochs", "invalid data"]
    fig = Figure(figsize=(12, 0.42 * len(rows) + 1.2))
    ax = fig.add_axes((0.1, 0.75 / fig.get_figheight(), 0.88, 1 - 1.15 / fig.get_figheight()))
    y = {name: -i for i, name in enumerate(rows)}
    for block in blocks:
        ax.barh(
            y["blocks"], block.end_s - block.start_s, left=block.start_s, height=0.7, color=colours[block.condition]
        )
        ax.text((block.start_s + block.end_s) / 2, y["blocks"], block.condition, ha="center", va="center", fontsize=8)
    for name in ("markers", *RESPONSE_EVENTS):
        times = [
            t
            for t, event in events.markers
            if (event == name if name in RESPONSE_EVENTS else event not in RESPONSE_EVENTS)
        ]
        ax.vlines(times, y[name] - 0.3, y[name] + 0.3, color="k", lw=0.6)
    for status, colour in STATUS_COLOURS.items():
        starts = events.epoch_starts[events.epoch_status == status]
        ax.vlines(starts, y["epochs"] - 0.3, y["epochs"] + 0.3, color=colour, lw=1.2, label=f"epoch {status}")
    for first, last in events.invalid_spans:
        ax.barh(y["invalid data"], max(last - first, 0.2), left=first, height=0.6, color="tab:red")
    ax.set_yticks(list(y.values()), rows, fontsize=9)
    ax.set_xlim(0, result.alignment.duration_s)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_xlabel("time from the start of the common recording (s)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(
        loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.5 / fig.get_figheight()), ncol=3, fontsize=8, frameon=False
    )
    return fig


def conversation_figure(speech: ConversationSpeech, origin: float, duration_s: float) -> Figure:
    """Who speaks when: each participant's speech and turns, and the speaking state over time
    (seconds from ``origin``, the start of the common recording, as in :func:`timeline_figure`)."""
    from matplotlib.figure import Figure

    rows = [f"{label} {what}" for label in speech.labels for what in ("speech", "turns")] + ["state"]
    fig = Figure(figsize=(12, 0.42 * len(rows) + 1.2))
    ax = fig.add_axes((0.1, 0.75 / fig.get_figheight(), 0.88, 1 - 1.15 / fig.get_figheight()))
    y = {name: -i for i, name in enumerate(rows)}
    colours = _condition_colours(speech.state_names)
    for label in speech.labels:
        spans = [(on - origin, off - on) for on, off in speech.segments(label)]
        ax.broken_barh(spans, (y[f"{label} speech"] - 0.3, 0.6), color=colours[f"{label}-speaks"])
        turns = [(on - origin, off - on) for who, on, off in speech.turns if who == label]
        ax.broken_barh(turns, (y[f"{label} turns"] - 0.3, 0.6), color=colours[f"{label}-speaks"], alpha=0.5)
    times = speech.frame_times() - origin
    change = np.flatnonzero(speech.states[1:] != speech.states[:-1]) + 1
    bounds = np.concatenate([[0], change, [speech.n_frames]])
    for state in speech.state_names:
        spans = [
            (times[lo], (hi - lo) * speech.frame_s)
            for lo, hi in zip(bounds[:-1], bounds[1:])
            if speech.states[lo] == state
        ]
        ax.broken_barh(spans, (y["state"] - 0.3, 0.6), color=colours[state], label=state)
    ax.set_yticks(list(y.values()), rows, fontsize=9)
    ax.set_xlim(0, duration_s)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_xlabel("time from the start of the common recording (s)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(
        loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.5 / fig.get_figheight()), ncol=4, fontsize=8, frameon=False
    )
    return fig


def synchrony_over_time_figure(
    result: QuickCheckResult,
    events: TimelineEvents,
    epoch_means: dict[tuple[str, str, str], np.ndarray],
    nulls: dict[tuple[str, str, str], np.ndarray],
    metric: str,
) -> Figure | None:
    """Per band: the per-epoch mean over pairs (dots) and each block's mean (bar) along the session,
    with each condition's surrogate band of the condition mean (2.5-97.5 %)."""
    from matplotlib.figure import Figure

    bands = list(result.inputs.bands)
    if not any(key[2] == metric for key in epoch_means):
        return None
    conditions = list(result.conditions)
    colours = _condition_colours(conditions)
    epoch_s = result.inputs.epoch_length_s
    fig = Figure(figsize=(12, 2.1 * len(bands) + 0.9))
    axes = fig.subplots(len(bands), 1, squeeze=False, sharex=True)[:, 0]
    fig.subplots_adjust(left=0.08, right=0.86, top=1 - 0.35 / fig.get_figheight(), bottom=0.6 / fig.get_figheight())
    for ax, band in zip(axes, bands):
        for condition in conditions:
            values = epoch_means.get((condition, band, metric))
            starts = events.kept_epoch_starts.get(condition)
            if values is None or starts is None or values.size != starts.size:
                continue
            centres = starts + epoch_s / 2
            ax.plot(centres, values, ".", color=colours[condition], ms=3, alpha=0.6)
            for block in (b for b in result.segmentation.blocks if b.condition == condition):
                inside = (centres >= block.start_s) & (centres <= block.end_s)
                if inside.any():
                    ax.hlines(np.mean(values[inside]), block.start_s, block.end_s, color=colours[condition], lw=2.5)
                null = nulls.get((condition, band, metric))
                if null is not None and null.size:
                    low, high = np.percentile(null, [2.5, 97.5])
                    ax.fill_between([block.start_s, block.end_s], low, high, color="0.6", alpha=0.35, lw=0)
        ax.set_ylabel(f"{band}\n{metric}", fontsize=9)
        ax.tick_params(labelsize=8)
    handles = [axes[0].plot([], [], "-", color=colours[c], lw=2.5, label=c)[0] for c in conditions if c in colours] + [
        axes[0].fill_between([], [], [], color="0.6", alpha=0.35, label="null 2.5-97.5 %")
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    axes[-1].set_xlabel("time from the start of the common recording (s)", fontsize=9)
    return fig


def _label_size(n_labels: int) -> float:
    """Tick label font size (points) that keeps ``n_labels`` labels apart on a ~3-inch axis."""
    return float(np.clip(170.0 / max(n_labels, 1), 4.0, 8.0))


def matrices_figure(result: QuickCheckResult, metric: str) -> Figure | None:
    """Per condition (rows) and band (columns) the inter-brain matrix, A's channels (rows) by B's
    (columns), labelled; pairs significant after FDR dotted red; one colour scale."""
    from matplotlib.figure import Figure

    from dyadlab.synchrony.verdict import P_DETECT

    conditions = list(result.conditions)
    bands = list(result.inputs.bands)
    if not conditions or metric not in result.inputs.metrics:
        return None
    labels_a = result.participants["A"].channels
    labels_b = result.participants["B"].channels
    cells = {(c, b): result.conditions[c].bands[b][metric] for c in conditions for b in bands}
    values = [np.array(cell.matrix, dtype=float) for cell in cells.values() if cell.matrix is not None]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    panel = 3.3 if max(len(labels_a), len(labels_b)) > 12 else 2.6
    width, height = panel * len(bands) + 1.6, (panel + 0.35) * len(conditions) + 0.5
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.75 / width, right=1 - 1.1 / width, top=1 - 0.45 / height, bottom=0.65 / height, wspace=0.35, hspace=0.45
    )
    axes = fig.subplots(len(conditions), len(bands), squeeze=False)
    image = None
    size_a, size_b = _label_size(len(labels_a)), _label_size(len(labels_b))
    for (i, condition), (j, band) in ((ic, jb) for ic in enumerate(conditions) for jb in enumerate(bands)):
        ax: Axes = axes[i, j]
        cell = cells[(condition, band)]
        ax.set_xticks(range(len(labels_b)), labels_b, rotation=90, fontsize=size_b)
        ax.set_yticks(range(len(labels_a)), labels_a, fontsize=size_a)
        z = f", z {cell.z:.1f}" if cell.z is not None else ""
        ax.set_title(
            f"{condition} · {band}\nmean {cell.mean if cell.mean is None else round(cell.mean, 3)}{z}", fontsize=9
        )
        if cell.matrix is None:
            ax.text(0.5, 0.5, "no epochs", transform=ax.transAxes, ha="center", va="center", fontsize=9)
            continue
        image = ax.imshow(np.array(cell.matrix, dtype=float), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        if cell.pair_p_fdr is not None:
            rows, cols = np.nonzero(np.nan_to_num(np.array(cell.pair_p_fdr, dtype=float), nan=1.0) <= P_DETECT)
            ax.plot(cols, rows, "r.", ms=2.5)
        if j == 0:
            ax.set_ylabel("A's channels", fontsize=8)
        if i == len(conditions) - 1:
            ax.set_xlabel("B's channels", fontsize=8)
    if image is not None:
        cax = fig.add_axes((1 - 0.8 / width, 0.3, 0.15 / width, 0.4))
        fig.colorbar(image, cax=cax, label=metric)
    return fig


def _standard_positions(labels: list[str]) -> tuple[list[int], object | None]:
    """Indices of ``labels`` that are 10-05 system names, and an MNE Info holding their positions."""
    import mne

    # MNE 1.13 deprecated standard_1005 for colin27_1005 (the same 10-05 template head, in head coordinates).
    builtin = mne.channels.get_builtin_montages()
    montage = mne.channels.make_standard_montage("colin27_1005" if "colin27_1005" in builtin else "standard_1005")
    known = {name.lower(): name for name in montage.ch_names}
    first: dict[str, int] = {}  # a label given twice is placed once
    for i, label in enumerate(labels):
        if label.strip().lower() in known:
            first.setdefault(label.strip().lower(), i)
    index = sorted(first.values())
    if len(index) < MIN_TOPOMAP_CHANNELS:
        return index, None
    names = [known[labels[i].strip().lower()] for i in index]
    info = mne.create_info(names, sfreq=100.0, ch_types="eeg")
    info.set_montage(montage)
    return index, info


def topomap_figure(result: QuickCheckResult, metric: str) -> tuple[Figure | None, str]:
    """Per condition and participant (rows) and band (columns): each channel's mean ``metric``
    with all the partner's channels, on the scalp (MNE's standard 10-05 positions).

    Returns the figure, or ``None`` with the sentence that says why there is none.
    """
    import mne
    from matplotlib.figure import Figure

    conditions = list(result.conditions)
    bands = list(result.inputs.bands)
    if metric not in result.inputs.metrics or not conditions:
        return None, f"No {metric} computed: no topographic maps."
    layouts = {}
    for label in ("A", "B"):
        channels = result.participants[label].channels
        index, info = _standard_positions(channels)
        if info is None:
            return None, (
                f"No topographic maps: only {len(index)} of participant {label}'s {len(channels)} channel labels are "
                f"10-20/10-10 names (e.g. {', '.join(channels[:4])}); at least {MIN_TOPOMAP_CHANNELS} are needed to "
                "place them with MNE's standard_1005 montage."
            )
        layouts[label] = (index, info)
    columns = [(band, label) for band in bands for label in ("A", "B")]
    width, height = 1.55 * len(columns) + 2.4, 1.75 * len(conditions) + 0.7
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=1.4 / width, right=1 - 1.0 / width, top=1 - 0.55 / height, bottom=0.1 / height, wspace=0.08
    )
    axes = fig.subplots(len(conditions), len(columns), squeeze=False)
    strengths: dict[tuple[str, str, str], np.ndarray] = {}
    for condition in conditions:
        for band, label in columns:
            matrix = result.conditions[condition].bands[band][metric].matrix
            if matrix is None:
                continue
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a channel left out is NaN throughout
                per_channel = np.nanmean(np.array(matrix, dtype=float), axis=1 if label == "A" else 0)
            strengths[(condition, label, band)] = per_channel[layouts[label][0]]
    finite = np.concatenate([v[np.isfinite(v)] for v in strengths.values()] or [np.empty(0)])
    vlim = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = None
    for i, condition in enumerate(conditions):
        # Text, not a y label: MNE switches the map's axes off, labels included.
        axes[i, 0].text(-0.12, 0.5, condition, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=10)
        for j, (band, label) in enumerate(columns):
            ax = axes[i, j]
            if i == 0:
                ax.set_title(f"{band}\n{label}", fontsize=10)
            values = strengths.get((condition, label, band))
            if values is None or not np.isfinite(values).any():
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            # A channel left out of the analysis (flat, noisy) takes the mean so the map stays whole.
            image, _ = mne.viz.plot_topomap(
                np.nan_to_num(values, nan=float(np.nanmean(values))),
                layouts[label][1],
                axes=ax,
                show=False,
                vlim=vlim,
                cmap="viridis",
                sensors=True,
                contours=0,
            )
    if image is not None:
        cax = fig.add_axes((1 - 0.9 / width, 0.3, 0.12 / width, 0.4))
        fig.colorbar(image, cax=cax, label=f"mean {metric} with the partner")
    return fig, ""


def spectra_figure(result: QuickCheckResult, spectra: dict[str, SpectrumFigure]) -> Figure | None:
    """Each participant's power spectrum per channel (thin) and median over channels (thick), log
    scale, with the mains frequency found by the quality check marked."""
    from matplotlib.figure import Figure

    if not spectra:
        return None
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, len(spectra), squeeze=False, sharey=True)[0]
    fig.subplots_adjust(left=0.07, right=0.99, top=0.84, bottom=0.15, wspace=0.06)
    for ax, (label, spectrum) in zip(axes, sorted(spectra.items())):
        shown = (spectrum.freqs > 0) & (spectrum.freqs <= SPECTRUM_MAX_HZ)
        freqs = spectrum.freqs[shown]
        with np.errstate(divide="ignore", invalid="ignore"):
            decibels = 10 * np.log10(spectrum.psd[:, shown])
        ax.plot(freqs, decibels.T, color="tab:blue", lw=0.4, alpha=0.5)
        ax.plot(freqs, np.nanmedian(decibels, axis=0), color="k", lw=1.5, label="median over channels")
        channels = result.quality.A.channels if label == "A" else result.quality.B.channels
        mains = channels.line_frequency_hz
        if mains:
            ax.axvline(mains, color="tab:red", ls="--", lw=1, label=f"mains {mains:g} Hz")
        else:
            for candidate in (50.0, 60.0):
                ax.axvline(candidate, color="tab:red", ls=":", lw=0.8)
            ax.plot([], [], color="tab:red", ls=":", label="50/60 Hz (no mains peak found)")
        for name, (low, high) in result.inputs.bands.items():
            ax.axvspan(low, high, color="0.85", alpha=0.5, lw=0)
            ax.text(low, 1.0, name, transform=ax.get_xaxis_transform(), ha="left", va="bottom", fontsize=7, rotation=30)
        ax.set_title(f"Participant {label} ({len(spectrum.labels)} channels)", fontsize=10, pad=20)
        ax.set_xlabel("frequency (Hz)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", frameon=False)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel(f"power (dB re 1 {spectra[sorted(spectra)[0]].unit}²/Hz)", fontsize=9)
    return fig
