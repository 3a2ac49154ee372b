"""``dyadlab check``: the synchrony quick-check of one XDF file, with a terminal summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dyadlab.cli_support import user_errors


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
    for condition, entry in result["conditions"].items():
        for i, band in enumerate(bands):
            cells = []
            for metric in metrics:
                cell = entry[band][metric]
                if cell["mean"] is None:
                    cells.append("–")
                    continue
                text = f"{cell['mean']:.3f}" + (f" ({cell['z']:+.1f})" if cell["z"] is not None else "")
                cells.append(f"[bold green]{text}[/]" if above_chance(cell) else text)
            table.add_row(condition if i == 0 else "", str(entry["n_epochs"]) if i == 0 else "", band, *cells)
    console.print(table)
    if result["warnings"]:
        console.print(f"[yellow]{len(result['warnings'])} warning(s):[/yellow]")
        for warning in result["warnings"]:
            console.print(f"  • {warning}", highlight=False)
    for kind, path in (("JSON", json_out), ("HTML report", html_out)):
        if path is not None:
            console.print(f"{kind}: {path}")


@click.command("check")
@click.argument("xdf_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here.")
@click.option(
    "--report",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the self-contained HTML report here.",
)
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
@click.option(
    "--bands",
    default=None,
    metavar="NAME=LOW-HIGH,...",
    help="Frequency bands, e.g. 'theta=4-7,alpha=8-12' (default theta, alpha, beta, gamma).",
)
@click.option(
    "--epoch-length", default=2.0, show_default=True, type=click.FloatRange(min=0.25), help="Epoch length in seconds."
)
@click.option(
    "--surrogates",
    "n_surrogates",
    default=200,
    show_default=True,
    type=click.IntRange(min=0),
    help="Surrogates per condition (0: no statistics).",
)
@click.option(
    "--surrogate-method",
    type=click.Choice(["epoch-shuffle", "circular-shift"]),
    default="epoch-shuffle",
    show_default=True,
    help="Null model: shuffle B's epochs within the condition, or shift B circularly in time.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the surrogate generator.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
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
    no_progress: bool,
) -> None:
    """Check one hyperscanning XDF recording: data quality, timing, inter-brain synchrony."""
    from dyadlab.synchrony.check import run_check

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
            progress=not no_progress,
        )
    _print_summary(result, json_out, html_out)
