"""``dyadlab check``: the synchrony quick-check of one XDF file, with a terminal summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dyadlab.cli_support import user_errors
from dyadlab.synchrony import cli_options


def _print_summary(result: dict[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from dyadlab.synchrony.verdict import above_chance

    console = Console()
    verdict = result["verdict"]
    overall_ok = verdict["data_quality"] == "ok" and verdict["timing"] != "check"
    console.print(
        Panel(
            "\n".join(verdict["summary"]),
            title=f"[bold]Quick-check: {result['file']['name']}[/bold]",
            subtitle=f"data quality: {verdict['data_quality'].upper()} · timing: {verdict['timing'].upper()}",
            border_style="green" if overall_ok else "yellow",
        )
    )
    bands = list(result["inputs"]["bands"])
    metrics = [m for m in ("plv", "accorr", "envcorr", "wpli") if m in result["inputs"]["metrics"]]
    table = Table(title="Synchrony: mean over inter-brain pairs (surrogate z)", show_lines=False)
    table.add_column("condition")
    table.add_column("epochs", justify="right")
    table.add_column("band")
    for metric in metrics:
        table.add_column(metric, justify="right")
    # Above chance but following shared line noise: not shown as synchrony.
    withheld = {(d["condition"], d["band"]) for d in verdict.get("withheld") or []}
    for condition, entry in result["conditions"].items():
        for i, band in enumerate(bands):
            cells = []
            for metric in metrics:
                cell = entry[band][metric]
                if cell["mean"] is None:
                    cells.append("–")
                    continue
                text = f"{cell['mean']:.3f}" + (f" ({cell['z']:+.1f})" if cell["z"] is not None else "")
                if (condition, band) in withheld and above_chance(cell):
                    cells.append(f"[yellow]{text} line noise[/]")
                else:
                    cells.append(f"[bold green]{text}[/]" if above_chance(cell) else text)
            table.add_row(condition if i == 0 else "", str(entry["n_epochs"]) if i == 0 else "", band, *cells)
    definitions = result.get("band_definitions") or {}
    if definitions:  # the values depend on the band filters: say which (-6 dB points, measured)
        design = next(iter(definitions.values()))["design"]
        edges = ", ".join(f"{b} {d['minus_6db_hz'][0]:.2f}-{d['minus_6db_hz'][1]:.2f}" for b, d in definitions.items())
        table.caption = f"band filters: {design}, -6 dB at {edges} Hz"
    console.print(table)
    if result["warnings"]:
        console.print(f"[yellow]{len(result['warnings'])} warning(s):[/yellow]")
        for warning in result["warnings"]:
            console.print(f"  • {warning}", highlight=False)
    cli_options.print_output_paths(console, json_out, html_out)


@click.command("check")
@click.argument("xdf_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@cli_options.outputs()
@click.option(
    "--eeg",
    "eeg",
    multiple=True,
    metavar="STREAM",
    help="Participant A's, then B's EEG stream by name or source_id (give twice) when the file's metadata does not say.",
)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    metavar="NAME=START:END",
    help="Define a condition from marker strings or regular expressions (repeatable), for files without dyadlab block markers.",
)
@cli_options.bands
@cli_options.epoch_length
@cli_options.surrogates("Surrogates per condition (0: no statistics).")
@click.option(
    "--surrogate-method",
    type=click.Choice(["epoch-shuffle", "circular-shift"]),
    default="epoch-shuffle",
    show_default=True,
    help="Null model: shuffle B's epochs within the condition, or shift B circularly in time.",
)
@cli_options.seed("Seed of the surrogate generator.")
@click.option(
    "--mains",
    type=click.Choice(["auto", "50", "60", "off"]),
    default=None,
    help="Mains frequency removed (with its harmonics) before band filtering: auto detects it from the spectra "
    "(both 50 and 60 Hz when neither stands out); off removes nothing. Default: auto, or off with "
    "--band-filter hypyp-epochs (HyPyP removes none).",
)
@click.option(
    "--band-filter",
    type=click.Choice(["butterworth", "hypyp", "hypyp-epochs"]),
    default="butterworth",
    show_default=True,
    help="Band filter design: butterworth puts -6 dB at the band edges; hypyp applies HyPyP's default FIR "
    "(MNE's, -6 dB half a transition band outside the edges), for values comparable with HyPyP analyses (needs MNE); "
    "hypyp-epochs reproduces HyPyP's default pipeline exactly (that FIR on each epoch separately; inflates envelope "
    "correlation, for comparability only; epoch-shuffle null only).",
)
@click.option(
    "--timing-channel",
    "timing_channels",
    multiple=True,
    metavar="LABEL",
    help="A photodiode or TTL channel's label (repeatable; a label with 'ttl', 'trigger' or 'stim' is a TTL). "
    "Default: channels labelled photo, diode, light, ttl, trigger, stim are found automatically.",
)
@click.option(
    "--ttl-mask",
    type=click.IntRange(min=1),
    default=None,
    help="Only these bits of a TTL value are the pulse (e.g. 4).",
)
@click.option(
    "--timing-polarity",
    type=click.Choice(["auto", "rising", "falling"]),
    default="auto",
    show_default=True,
    help="Which edge is the flash: falling for an inverted sensor or an active-low TTL; auto pairs best with the markers.",
)
@click.option(
    "--speech/--no-speech",
    default=True,
    show_default=True,
    help="With both participants' microphone streams in the file: find speech and turns and split the conversation "
    "blocks into speaking states (A-speaks, B-speaks, overlap, silence) as conditions (docs/speech.md).",
)
@click.option(
    "--speech-condition",
    "speech_conditions",
    multiple=True,
    metavar="CONDITION",
    help="A condition whose blocks are split by speaking state (repeatable). Default: conversation.",
)
@click.option(
    "--speech-lags",
    is_flag=True,
    help="Also measure speaker-to-listener coupling (PLV, envelope correlation) at lags 0-1 s, per speaking state.",
)
@click.option(
    "--speech-tsv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the speech events (speech, turns, overlaps, pauses, gaps) here as TSV.",
)
@cli_options.no_progress
def check(
    xdf_file: Path,
    json_out: Path | None,
    html_out: Path | None,
    eeg: tuple[str, ...],
    conditions: tuple[str, ...],
    bands: str | None,
    epoch_length: float,
    n_surrogates: int,
    surrogate_method: str,
    seed: int,
    mains: str | None,
    band_filter: str,
    timing_channels: tuple[str, ...],
    ttl_mask: int | None,
    timing_polarity: str,
    speech: bool,
    speech_conditions: tuple[str, ...],
    speech_lags: bool,
    speech_tsv: Path | None,
    no_progress: bool,
) -> None:
    """Check one hyperscanning XDF recording: data quality, timing, inter-brain synchrony."""
    from dyadlab.synchrony.check import run_check
    from dyadlab.synchrony.speech_roles import DEFAULT_SPEECH_CONDITIONS, SpeechOptions
    from dyadlab.synchrony.timing_verification import TimingOptions

    if eeg and len(eeg) != 2:
        raise click.UsageError(f"--eeg must be given exactly twice (A, then B), got {len(eeg)}.")
    with user_errors():
        result = run_check(
            xdf_file,
            eeg=eeg or None,
            conditions=conditions or None,
            bands=bands,
            epoch_length=epoch_length,
            n_surrogates=n_surrogates,
            surrogate=surrogate_method,
            json_out=json_out,
            html_out=html_out,
            seed=seed,
            mains=mains,  # None when not given: "auto", or "off" with --band-filter hypyp-epochs
            band_filter=band_filter,
            timing=TimingOptions(channels=timing_channels, ttl_mask=ttl_mask, polarity=timing_polarity)  # type: ignore[arg-type]
            if timing_channels or ttl_mask is not None or timing_polarity != "auto"
            else None,
            speech=SpeechOptions(conditions=speech_conditions or DEFAULT_SPEECH_CONDITIONS, lags=speech_lags)
            if speech
            else False,
            speech_tsv=speech_tsv,
            progress=not no_progress,
        )
    _print_summary(result, json_out, html_out)
