"""Self-contained HTML report of a quick-check: verdict first, then quality, timing, synchrony.

Figures are matplotlib PNGs embedded as base64 data URIs; the page loads nothing from outside
(no scripts, fonts or style sheets), so it can be mailed or archived with the recording.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dyadlab.synchrony.htmlpage import format_number, html_escape, page, png_data_uri
from dyadlab.synchrony.results import ParticipantQuality, QuickCheckResult
from dyadlab.synchrony.verdict import P_DETECT, detects

__all__ = ["ReportFigures", "render_html", "write_html"]

HEADLINE_METRICS = ("plv", "accorr", "envcorr", "wpli")
MAX_TRACE_PANELS = 6  # first block start of the first six conditions
#: Contrasts with a Benjamini-Hochberg adjusted p at or below this are highlighted.
CONTRAST_FDR_ALPHA = 0.05


#: The style sheet of the quick-check and group reports (inlined: the pages load nothing).
@dataclass
class ReportFigures:
    """Data for the HTML figures that does not belong in the JSON.

    Attributes
    ----------
    traces : list of dict
        Per condition: ``condition``, ``time`` (s, relative to the block start), ``a`` and ``b``
        (n_channels_shown, n) broadband µV, channel labels and board marker times of A and B.
    nulls : dict of (condition, band, metric) -> np.ndarray, shape (n_surrogates,)
        Surrogate distributions of the mean over pairs.
    """

    traces: list[dict[str, Any]] = field(default_factory=list)
    nulls: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)


def _badge(state: str) -> str:
    return f'<span class="badge b-{html_escape(state)}">{html_escape(state.upper())}</span>'


def _markers_line(d: ParticipantQuality) -> str:
    r = d.marker_residuals
    if not r:
        return "no board markers"
    return f"{r.matched}/{r.lsl_markers} matched; {format_number(r.median_ms)} / {format_number(r.max_abs_ms)}"


def _line_noise_line(d: ParticipantQuality) -> str:
    channels = d.channels
    if not channels.line_frequency_hz:
        return "no mains peak"
    return f"{channels.line_frequency_hz:g} Hz; > threshold: " + (", ".join(channels.line_noise_channels) or "none")


def _quality_table(result: QuickCheckResult) -> str:
    q = result.quality
    rows: list[tuple[str, Callable[[ParticipantQuality], Any]]] = [
        ("Stream", lambda d: d.stream),
        ("Participant id / role", lambda d: f"{d.participant.get('id', '–')} / {d.participant.get('role', '–')}"),
        ("Samples", lambda d: d.samples),
        ("Duration (s)", lambda d: format_number(d.duration_s, 5)),
        ("Nominal / effective rate (Hz)", lambda d: f"{d.nominal_rate_hz:g} / {d.effective_rate_hz:.3f}"),
        ("Missing samples (from duration)", lambda d: d.missing_samples),
        ("Gaps (largest, s)", lambda d: f"{d.gaps} ({d.largest_gap_s:.3f})"),
        ("Backward timestamp jumps", lambda d: d.backward_jumps),
        ("Dropped packets", lambda d: format_number(d.dropped_packets)),
        ("Clock offsets (range, ms)", lambda d: f"{d.clock_offsets} ({format_number(d.clock_offset_range_ms)})"),
        ("NaN samples", lambda d: d.nan_samples),
        ("Channels used / excluded streams", lambda d: f"{d.channels_used} / {', '.join(d.excluded_channels) or '–'}"),
        ("Flat channels", lambda d: ", ".join(d.channels.flat) or "–"),
        ("Railed channels", lambda d: ", ".join(d.channels.railed) or "–"),
        ("Noisy channels", lambda d: ", ".join(d.channels.noisy) or "–"),
        ("Line noise", _line_noise_line),
        ("Board vs LSL markers (median / max |.| ms)", _markers_line),
        ("Alpha peak (Hz)", lambda d: format_number(d.alpha_peak_hz)),
        ("Verdict", lambda d: _badge(d.verdict)),
    ]
    body = "".join(
        f'<tr><th class="l">{html_escape(name)}</th>'
        + "".join(f"<td>{cell if name == 'Verdict' else html_escape(cell)}</td>" for cell in (get(q.A), get(q.B)))
        + "</tr>"
        for name, get in rows
    )
    o = q.overlap
    return (
        '<table><tr><th class="l"></th><th>A</th><th>B</th></tr>' + body + "</table>"
        f"<p>Overlap {o.overlap_s:.1f} s ({100 * o.overlap_fraction:.0f}%); B starts {o.start_difference_s:+.3f} s "
        f"and ends {o.end_difference_s:+.3f} s relative to A.</p>"
    )


def _synchrony_table(result: QuickCheckResult) -> str:
    bands = list(result.inputs.bands)
    metrics = [m for m in HEADLINE_METRICS if m in result.inputs.metrics] or result.inputs.metrics[:4]
    head = (
        "<tr><th class='l'>condition</th><th>epochs</th><th class='l'>band</th>"
        + "".join(f"<th>{html_escape(m)} mean</th><th>{html_escape(m)} z</th>" for m in metrics)
        + "</tr>"
    )
    rows = []
    for condition, entry in result.conditions.items():
        for i, band in enumerate(bands):
            cells = ""
            for metric in metrics:
                cell = entry.bands[band][metric]
                cls = " class='sig'" if detects(cell.z, cell.p) else ""
                cells += f"<td>{format_number(cell.mean)}</td><td{cls}>{format_number(cell.z, 2)}</td>"
            first = (
                f"<td class='l' rowspan='{len(bands)}'>{html_escape(condition)}</td><td rowspan='{len(bands)}'>{entry.n_epochs}</td>"
                if i == 0
                else ""
            )
            rows.append(f"<tr>{first}<td class='l'>{html_escape(band)}</td>{cells}</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _epochs_table(result: QuickCheckResult) -> str:
    rows = "".join(
        f"<tr><td class='l'>{html_escape(c)}</td><td>{e.planned}</td><td>{e.invalid_data}</td><td>{e.rejected_artifacts}</td><td>{e.used}</td></tr>"
        for c, e in result.segmentation.epochs.items()
    )
    return (
        "<table><tr><th class='l'>condition</th><th>planned</th><th>invalid data</th><th>artifacts</th><th>used</th></tr>"
        + rows
        + "</table>"
        + f"<p class='small'>Rejection: {html_escape(result.segmentation.rejection.rule)}.</p>"
    )


def _contrast_table(result: QuickCheckResult) -> str:
    info = result.contrasts
    contrasts = info.by_name
    if not contrasts:
        return "<p>No rest/baseline condition: no contrasts.</p>"
    note = (
        "<p class='small'>Δ: difference of the per-epoch means over pairs against "
        f"{html_escape(info.baseline)} (each minus its own surrogate mean when available). p: two-sided "
        f"permutation p (runs of {info.run_length_epochs} consecutive epochs exchanged between the two "
        f"conditions: every exchange when there are at most {info.n_permutations}, else {info.n_permutations} "
        "random ones), uncorrected. p FDR: Benjamini–Hochberg adjusted over all contrasts "
        f"and bands of the metric. Highlighted: p FDR ≤ {CONTRAST_FDR_ALPHA:g}.</p>"
    )
    bands = list(result.inputs.bands)
    metrics = [m for m in HEADLINE_METRICS if m in result.inputs.metrics]
    head = (
        "<tr><th class='l'>contrast</th><th class='l'>band</th>"
        + "".join(
            f"<th>Δ {html_escape(m)}</th><th>p {html_escape(m)} (uncorr.)</th><th>p FDR {html_escape(m)}</th>"
            for m in metrics
        )
        + "</tr>"
    )
    rows = []
    for name, per_band in contrasts.items():
        for band in bands:
            cells = ""
            for m in metrics:
                cell = per_band[band][m]
                p_fdr = cell.p_fdr
                significant = p_fdr is not None and p_fdr <= CONTRAST_FDR_ALPHA
                cells += (
                    f"<td>{format_number(cell.difference)}</td><td>{format_number(cell.p, 2)}</td>"
                    f"<td{' class=sig' if significant else ''}>{format_number(p_fdr, 2)}</td>"
                )
            rows.append(f"<tr><td class='l'>{html_escape(name)}</td><td class='l'>{html_escape(band)}</td>{cells}</tr>")
    return note + "<table>" + head + "".join(rows) + "</table>"


def _traces_figure(figures: ReportFigures) -> str:
    from matplotlib.figure import Figure

    if not figures.traces:
        return "<p>No block start inside the recording to show.</p>"
    traces = figures.traces[:MAX_TRACE_PANELS]
    n = len(traces)
    fig = Figure(figsize=(11, 2.4 * n))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, trace in zip(axes, traces):
        t = trace["time"]
        spread = max(float(np.nanstd(np.concatenate([trace["a"].ravel(), trace["b"].ravel()]))) * 5, 1e-6)
        offset = 0.0
        ticks, labels = [], []
        for side, colour in (("a", "tab:blue"), ("b", "tab:orange")):
            for row, label in zip(trace[side], trace[f"{side}_labels"]):
                ax.plot(t, row + offset, color=colour, lw=0.6)
                ticks.append(offset)
                labels.append(f"{side.upper()} {label}")
                offset -= spread
            for board_time in trace[f"{side}_board_markers"]:
                ax.plot([board_time], [offset + spread * 0.5], marker="v", color=colour, ms=6)
        for marker_time in trace["lsl_markers"]:
            ax.axvline(marker_time, color="k", lw=0.8, ls="--")
        ax.set_yticks(ticks, labels, fontsize=7)
        ax.set_title(
            f"{trace['condition']}: block start at 0 s (dashed: LSL markers, triangles: board markers)", fontsize=9
        )
        ax.set_xlim(t[0], t[-1])
    axes[-1].set_xlabel("time from block start (s); 1-40 Hz")
    fig.subplots_adjust(
        left=0.08, right=0.99, bottom=0.6 / fig.get_figheight(), top=1 - 0.3 / fig.get_figheight(), hspace=0.45
    )
    return png_data_uri(fig)


def _matrices_figure(result: QuickCheckResult, metric: str) -> str:
    """All conditions (rows) x bands (columns) as one mosaic image: one axes, fast to draw."""
    from matplotlib.figure import Figure

    conditions = list(result.conditions)
    bands = list(result.inputs.bands)
    if not conditions or metric not in result.inputs.metrics:
        return ""
    n_a = len(result.participants["A"].channels)
    n_b = len(result.participants["B"].channels)
    gap = max(2, n_a // 8)
    mosaic = np.full((len(conditions) * (n_a + gap), len(bands) * (n_b + gap)), np.nan)
    fig = Figure(figsize=(1.6 * len(bands) + 2.6, 1.3 * len(conditions) + 0.9))
    ax = fig.add_axes((0.2, 0.06, 0.62, 0.9))
    dots_x: list[int] = []
    dots_y: list[int] = []
    for i, condition in enumerate(conditions):
        for j, band in enumerate(bands):
            cell = result.conditions[condition].bands[band][metric]
            top, left = i * (n_a + gap), j * (n_b + gap)
            if cell.matrix is None:
                ax.text(left + n_b / 2, top + n_a / 2, "no epochs", ha="center", va="center", fontsize=6)
                continue
            mosaic[top : top + n_a, left : left + n_b] = np.array(cell.matrix, dtype=float)
            if cell.pair_p_fdr is not None:
                rows, cols = np.nonzero(np.nan_to_num(np.array(cell.pair_p_fdr, dtype=float), nan=1.0) <= P_DETECT)
                dots_y.extend(top + rows)
                dots_x.extend(left + cols)
            z = cell.z
            ax.text(
                left + n_b / 2,
                top - 0.3,
                f"{cell.mean:.3f}" + (f" z {z:.1f}" if z is not None else ""),
                ha="center",
                va="bottom",
                fontsize=6,
            )
    image = ax.imshow(mosaic[:-gap, :-gap], cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_ylim(mosaic.shape[0] - gap - 0.5, -gap)  # room above the first row for its labels
    if dots_x:
        ax.plot(dots_x, dots_y, "r.", ms=1.5)
    ax.set_xticks([j * (n_b + gap) + n_b / 2 for j in range(len(bands))], bands, fontsize=8)
    ax.set_yticks([i * (n_a + gap) + n_a / 2 for i in range(len(conditions))], conditions, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cax = fig.add_axes((0.86, 0.3, 0.02, 0.4))
    fig.colorbar(image, cax=cax, label=metric)
    return png_data_uri(fig)


def _nulls_figure(result: QuickCheckResult, figures: ReportFigures, metric: str) -> str:
    """Per band: each condition's surrogate distribution (box: 2.5-97.5 %) and observed mean (red)."""
    from matplotlib.figure import Figure

    conditions = list(result.conditions)
    bands = list(result.inputs.bands)
    if not any(key[2] == metric for key in figures.nulls):
        return "<p>No surrogate distributions (surrogates disabled or too few epochs).</p>"
    width, height = 3.0 * len(bands) + 1.5, 0.35 * len(conditions) + 1.2
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=1.4 / width, right=0.98, bottom=0.55 / height, top=1 - 0.45 / height, wspace=0.08)
    axes = fig.subplots(1, len(bands), squeeze=False, sharey=True)[0]
    for ax, band in zip(axes, bands):
        rows = [
            (i, figures.nulls[(c, band, metric)], result.conditions[c].bands[band][metric])
            for i, c in enumerate(conditions)
            if (c, band, metric) in figures.nulls
        ]
        if rows:
            # matplotlib >= 3.10 says orientation=, older versions vert=False.
            horizontal = (
                {"orientation": "horizontal"}
                if "orientation" in inspect.signature(ax.boxplot).parameters
                else {"vert": False}
            )
            ax.boxplot(
                [null for _, null, _ in rows],
                positions=[i for i, _, _ in rows],
                whis=(2.5, 97.5),
                showfliers=False,
                widths=0.6,
                **horizontal,
            )
            ax.plot([cell.mean for _, _, cell in rows], [i for i, _, _ in rows], "o", color="tab:red", ms=5)
        ax.set_title(band, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks(range(len(conditions)), conditions)
        ax.set_ylim(len(conditions) - 0.5, -0.5)
    fig.suptitle(
        f"{metric}: surrogate null of the mean over pairs (box 25-75 %, whiskers 2.5-97.5 %) and observed mean (red)",
        fontsize=9,
    )
    return png_data_uri(fig)


def render_html(result: QuickCheckResult, figures: ReportFigures) -> str:
    """The report as one HTML string (no external resources)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    verdict = result.verdict
    overall = "ok" if verdict.data_quality == "ok" and verdict.timing != "check" else "check"
    detected = verdict.synchrony_above_chance
    sync_line = (
        "Synchrony above chance in: <b>"
        + ", ".join(f"{html_escape(d.condition)} / {html_escape(d.band)} (z {d.z:.1f})" for d in detected)
        + "</b>"
        if detected
        else "No condition and band with synchrony above chance."
    )
    warnings = "".join(f"<li>{html_escape(w)}</li>" for w in result.warnings) or "<li>none</li>"
    participants = result.participants
    title = f"Quick-check: {result.file.name}"
    appendix = {
        "inputs": result.inputs.model_dump(),
        "versions": result.versions,
        "alignment": result.alignment.model_dump(),
        "timing_s": result.timing_s,
    }
    parts = [
        f"<p class='small'>{html_escape(result.generated_utc)} · schema {html_escape(result.schema_version)} · "
        f"A = {html_escape(participants['A'].stream)}, B = {html_escape(participants['B'].stream)}</p>",
        f"<div class='verdict {overall}'><p>Data quality {_badge(verdict.data_quality)} &nbsp; Timing {_badge(verdict.timing)}"
        f" &nbsp; {len(result.warnings)} warning(s)</p><p>{sync_line}</p><ul>"
        + "".join(f"<li>{html_escape(line)}</li>" for line in verdict.summary)
        + "</ul>"
        f"<p class='small'>Rule: {html_escape(verdict.rule)}.</p></div>",
        "<h2>Warnings</h2><ul class='warn'>" + warnings + "</ul>",
        "<h2>Synchrony per condition and band</h2>",
        f"<p class='small'>Surrogates: {result.inputs.n_surrogates} × {html_escape(result.inputs.surrogate)}; "
        "z of the mean over inter-brain pairs against the surrogate distribution of that mean. Highlighted: "
        f"{html_escape(verdict.rule)}.</p>",
        _synchrony_table(result),
        "<h2>Condition contrasts</h2>",
        _contrast_table(result),
        "<h2>Data quality per participant</h2>",
        _quality_table(result),
        "<h2>Epochs</h2>",
        _epochs_table(result),
        "<h2>Aligned traces around block starts</h2>",
        _traces_figure(figures),
        "<h2>Inter-brain PLV matrices</h2><p class='small'>Each block: A's channels (rows) by B's channels "
        "(columns); above it the mean over pairs and its surrogate z; red dots: pairs significant after FDR.</p>",
        _matrices_figure(result, "plv"),
        "<h2>Inter-brain wPLI matrices</h2>",
        _matrices_figure(result, "wpli"),
        "<h2>Surrogate distributions</h2>",
        _nulls_figure(result, figures, "plv"),
        "<h2>Inputs and versions</h2>",
        f"<pre>{html_escape(_pretty(appendix))}</pre>",
    ]
    return page(title, parts)


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=1)


def write_html(path: str | Path, result: QuickCheckResult, figures: ReportFigures) -> Path:
    """Write :func:`render_html` to ``path``."""
    path = Path(path)
    path.write_text(render_html(result, figures), encoding="utf-8")
    return path
