"""Self-contained HTML report of a quick-check that tells the session's story.

Verdict and warnings first; then the session timeline (blocks, markers, responses, epochs and
data-quality events), what the participants did (:mod:`dyadlab.synchrony.behaviour`), synchrony
per condition and band and over time, every contrast the design implies, labelled inter-brain
matrices, topographic maps, spectra, and the quality tables. The figures are drawn by
:mod:`dyadlab.synchrony.figures`; the JSON is linked, not shown (:data:`SECTIONS` lists the
sections in order).

Figures are matplotlib PNGs embedded as base64 data URIs; the page loads nothing from outside
(no scripts, fonts or style sheets), so it can be mailed or archived with the recording.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dyadlab.synchrony.figures import SpectrumFigure, TimelineEvents
from dyadlab.synchrony.htmlpage import format_number, html_escape, page, png_data_uri
from dyadlab.synchrony.results import ParticipantQuality, QuickCheckResult
from dyadlab.synchrony.timing_verification import timing_section_html
from dyadlab.synchrony.verdict import detects

if TYPE_CHECKING:
    from dyadlab.synchrony.speech import ConversationSpeech

__all__ = ["SECTIONS", "ReportFigures", "render_html", "write_html"]

HEADLINE_METRICS = ("plv", "accorr", "envcorr", "wpli")
MAX_TRACE_PANELS = 6  # first block start of the first six conditions
#: Contrasts with a Benjamini-Hochberg adjusted p at or below this are highlighted.
CONTRAST_FDR_ALPHA = 0.05


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
    spectra : dict of participant label -> SpectrumFigure
        Each participant's Welch spectrum.
    timeline : TimelineEvents or None
        Markers, invalid stretches and epochs on the analysis grid.
    epoch_means : dict of (condition, band, metric) -> np.ndarray
        The mean over pairs of each used epoch, in the order of ``timeline.kept_epoch_starts``.
    conversation : ConversationSpeech or None
        Speech, turns and speaking states from the microphones (:mod:`dyadlab.synchrony.speech`).
    """

    traces: list[dict[str, Any]] = field(default_factory=list)
    nulls: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    spectra: dict[str, SpectrumFigure] = field(default_factory=dict)
    timeline: TimelineEvents | None = None
    epoch_means: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    conversation: ConversationSpeech | None = None


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
        return "<p>Only one condition: nothing to contrast.</p>"
    against = (
        f"each task condition against {html_escape(info.baseline)} and every two task conditions against each other"
        if info.baseline
        else "every two conditions against each other (no rest/baseline condition)"
    )
    note = (
        f"<p class='small'>Contrasts: {against}. Δ: first minus second condition, of the per-epoch means over "
        "pairs (each minus its own surrogate mean when available). p: two-sided "
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
            first, second = info.conditions_of(name)
            label = f"{html_escape(first)} − {html_escape(second)}"
            rows.append(f"<tr><td class='l'>{label}</td><td class='l'>{html_escape(band)}</td>{cells}</tr>")
    return note + "<table>" + head + "".join(rows) + "</table>"


def _traces_figure(figures: ReportFigures) -> str:
    from matplotlib.figure import Figure

    if not figures.traces:
        return "<p>No block start inside the recording to show.</p>"
    traces = figures.traces[:MAX_TRACE_PANELS]
    n = len(traces)
    rows = max(len(trace["a_labels"]) + len(trace["b_labels"]) for trace in traces)
    fig = Figure(figsize=(12, (0.9 + 0.16 * rows) * n))
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


#: The report's sections in order: (anchor id, heading). Tests look for each heading.
SECTIONS = (
    ("verdict", "Verdict"),
    ("warnings", "Warnings"),
    ("timeline", "Session timeline"),
    ("conversation", "Conversation: speech and turns"),
    ("behaviour", "Behaviour"),
    ("synchrony", "Synchrony per condition and band"),
    ("over-time", "Synchrony over time"),
    ("contrasts", "Condition contrasts"),
    ("matrices", "Inter-brain matrices"),
    ("topographies", "Topographic maps"),
    ("spectra", "Spectra"),
    ("quality", "Data quality per participant"),
    ("timing", "Timing verification (photodiode / TTL)"),
    ("epochs", "Epochs"),
    ("traces", "Aligned traces around block starts"),
    ("nulls", "Surrogate distributions"),
    ("inputs", "Inputs and versions"),
)


def _figure(figure: Any, why_none: str) -> str:
    """An inlined figure, or the sentence that says why there is none."""
    return png_data_uri(figure) if figure is not None else f"<p>{html_escape(why_none)}</p>"


def _behaviour_table(result: QuickCheckResult) -> str:
    summaries = result.behaviour
    if summaries is None:
        return "<p>This result was made before behavioural summaries were added.</p>"
    if not summaries:
        return "<p>No block of a paradigm that records behaviour (joint press, tapping, conversation).</p>"
    out = []
    for summary in summaries:
        rows = "".join(
            f"<tr><th class='l'>{html_escape(_measure_name(name))}</th><td>{format_number(value)}</td></tr>"
            for name, value in summary.measures.items()
        )
        out.append(
            f"<div class='beh'><p><b>{html_escape(summary.block)}</b> · {html_escape(summary.paradigm)} · condition "
            f"{html_escape(summary.condition or '–')} · starts at {summary.start_s:.0f} s</p><table>{rows}</table></div>"
        )
    return (
        "<p class='small'>From the file's markers and response stream: joint press per trial outcome (success when "
        "both pressed within the adaptive threshold), tapping from key-down times (asynchrony: tap minus the nearest "
        "pacer flash in the synchronisation phase; CV: coefficient of variation of the inter-tap intervals in the "
        "continuation phase).</p><div class='behs'>" + "".join(out) + "</div>"
    )


def _measure_name(name: str) -> str:
    """``median_rt_A_ms`` -> ``median rt A (ms)``."""
    unit = " (ms)" if name.endswith("_ms") else ""
    return name.removesuffix("_ms").replace("_", " ") + unit


def _inputs_table(result: QuickCheckResult) -> str:
    inputs = result.inputs
    rows = [
        ("bands (Hz)", ", ".join(f"{name} {low:g}-{high:g}" for name, (low, high) in inputs.bands.items())),
        ("metrics", ", ".join(inputs.metrics)),
        ("epoch length (s)", f"{inputs.epoch_length_s:g}"),
        ("surrogates", f"{inputs.n_surrogates} × {inputs.surrogate}, seed {inputs.seed}"),
        ("artifact threshold (robust z)", f"{inputs.reject_z:g}"),
        ("analysis rate", f"{result.alignment.rate_hz:g} Hz, decimation {'on' if inputs.decimate else 'off'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in result.versions.items())),
        ("run time (s)", ", ".join(f"{k} {v:g}" for k, v in result.timing_s.items())),
    ]
    return (
        "<table>"
        + "".join(f"<tr><th class='l'>{html_escape(k)}</th><td class='l'>{html_escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _conversation_section(result: QuickCheckResult, figures: ReportFigures) -> str:
    """Who spoke when, and the speaking-state conditions' epochs (with the microphones only)."""
    from dyadlab.synchrony import figures as figs

    speech = result.speech
    if speech is None:
        return "<p>No speech analysis: the file does not hold both participants' microphones (docs/audio.md).</p>"
    people = "; ".join(
        f"{html_escape(label)}: {p.speech_s:.0f} s of speech, {p.n_turns} turns (median {p.median_turn_s or 0:.1f} s), "
        f"partner's voice at {p.crosstalk_db if p.crosstalk_db is not None else '?'} dB in this microphone"
        for label, p in speech.participants.items()
    )
    states = "".join(
        f"<tr><td>{html_escape(s.condition or '(mixed)')}</td><td>{s.held_s:.1f}</td><td>{s.n_epochs}</td></tr>"
        for s in speech.states
    )
    figure = (
        figs.conversation_figure(figures.conversation, result.alignment.start, result.alignment.duration_s)
        if figures.conversation is not None
        else None
    )
    return (
        f"<p class='small'>{people}. {speech.n_transfers} floor transfers, {speech.n_gaps} gaps (median "
        f"{speech.median_gap_s or 0:.2f} s), {speech.n_overlaps} overlaps. An epoch belongs to a speaking state "
        f"that holds for at least {100 * speech.min_state_fraction:.0f} % of it.</p>"
        + _figure(figure, "Not available: this report was made from the JSON alone.")
        + "<table><tr><th>condition</th><th>seconds in state</th><th>epochs</th></tr>"
        + states
        + "</table>"
    )


def render_html(result: QuickCheckResult, figures: ReportFigures, json_name: str | None = None) -> str:
    """The report as one HTML string (no external resources).

    Parameters
    ----------
    result : QuickCheckResult
    figures : ReportFigures
        What the figures need beyond the JSON (an empty one for a result read back from JSON:
        those figures then say they are not available).
    json_name : str, optional
        File name of the JSON written beside the page: the page links to it instead of showing it.
    """
    import matplotlib

    from dyadlab.synchrony import figures as figs

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
    json_link = f" · <a href='{html_escape(json_name)}'>all numbers (JSON)</a>" if json_name else ""
    missing = "Not available: this report was made from the JSON alone."
    topomap, no_topomap = figs.topomap_figure(result, "plv")
    headings = dict(SECTIONS)
    contents = {
        "verdict": (
            f"<div class='verdict {overall}'><p>Data quality {_badge(verdict.data_quality)} &nbsp; Timing {_badge(verdict.timing)}"
            f" &nbsp; {len(result.warnings)} warning(s)</p><p>{sync_line}</p><ul>"
            + "".join(f"<li>{html_escape(line)}</li>" for line in verdict.summary)
            + "</ul>"
            f"<p class='small'>Rule: {html_escape(verdict.rule)}.</p></div>"
        ),
        "warnings": "<ul class='warn'>" + warnings + "</ul>",
        "timeline": "<p class='small'>Blocks by condition; marker events; responses, taps and pacer flashes; "
        "every planned epoch (green used, orange rejected as artifact, grey invalid data); stretches without valid "
        "data of both participants (red).</p>"
        + _figure(figs.timeline_figure(result, figures.timeline) if figures.timeline else None, missing),
        "conversation": _conversation_section(result, figures),
        "behaviour": _behaviour_table(result),
        "synchrony": f"<p class='small'>Surrogates: {result.inputs.n_surrogates} × {html_escape(result.inputs.surrogate)}; "
        "z of the mean over inter-brain pairs against the surrogate distribution of that mean. Highlighted: "
        f"{html_escape(verdict.rule)}.</p>" + _synchrony_table(result),
        "over-time": "<p class='small'>PLV mean over inter-brain pairs of each used epoch (dots) and of each block "
        "(bars), at the epoch's time in the session; grey: the condition's surrogate null of the condition mean "
        "(2.5-97.5 %), against which the bars are read (single epochs scatter more than the mean).</p>"
        + _figure(
            figs.synchrony_over_time_figure(result, figures.timeline, figures.epoch_means, figures.nulls, "plv")
            if figures.epoch_means and figures.timeline
            else None,
            missing,
        ),
        "contrasts": _contrast_table(result),
        "matrices": "<p class='small'>Each panel: A's channels (rows) by B's channels (columns); its title gives the "
        "mean over pairs and its surrogate z; red dots: pairs significant after FDR. One colour scale per metric.</p>"
        + "".join(
            f"<h3>{html_escape(metric.upper())}</h3>" + _figure(figs.matrices_figure(result, metric), f"No {metric}.")
            for metric in ("plv", "wpli")
            if metric in result.inputs.metrics
        ),
        "topographies": "<p class='small'>Each channel's mean PLV with all of the partner's channels, per condition, "
        "participant and band (positions: MNE's standard 10-05 montage, from the channel labels).</p>"
        + _figure(topomap, no_topomap),
        "spectra": "<p class='small'>Welch spectrum of each channel (thin) and the median over channels (thick), as "
        "the quality check estimates it; grey: the analysis bands; red: the mains frequency.</p>"
        + _figure(figs.spectra_figure(result, figures.spectra) if figures.spectra else None, missing),
        "quality": _quality_table(result),
        "timing": timing_section_html(result),
        "epochs": _epochs_table(result),
        "traces": _traces_figure(figures),
        "nulls": _nulls_figure(result, figures, "plv"),
        "inputs": _inputs_table(result)
        + (
            f"<p>Every number of this check: <a href='{html_escape(json_name)}'>{html_escape(json_name)}</a>.</p>"
            if json_name
            else ""
        ),
    }
    parts = [
        f"<p class='small'>{html_escape(result.generated_utc)} · schema {html_escape(result.schema_version)} · "
        f"A = {html_escape(participants['A'].stream)}, B = {html_escape(participants['B'].stream)}{json_link}</p>",
        "<nav class='small'>"
        + " · ".join(f"<a href='#{key}'>{html_escape(name)}</a>" for key, name in SECTIONS)
        + "</nav>",
    ]
    for key, content in contents.items():
        parts.append(f"<h2 id='{key}'>{html_escape(headings[key])}</h2>")
        parts.append(content)
    return page(title, parts)


def write_html(
    path: str | Path, result: QuickCheckResult, figures: ReportFigures, json_path: str | Path | None = None
) -> Path:
    """Write :func:`render_html` to ``path``; ``json_path``: the JSON written beside it, linked."""
    path = Path(path)
    json_name = None
    if json_path is not None:
        json_path = Path(json_path)
        # Relative when beside the page (the pair can be moved together), else absolute.
        json_name = (
            json_path.name if json_path.resolve().parent == path.resolve().parent else json_path.resolve().as_uri()
        )
    path.write_text(render_html(result, figures, json_name), encoding="utf-8")
    return path
