"""``dyadlab group``: group and longitudinal analysis of several sessions, with terminal tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dyadlab.cli_support import user_errors
from dyadlab.synchrony import cli_options


def _print_summary(result: dict[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metrics = result["inputs"]["metrics"]
    headline = "plv" if "plv" in metrics else metrics[0]
    bands = list(result["inputs"]["bands"])
    for skipped in result["skipped"]:
        console.print(f"[bold red]Skipped[/] {skipped['path']}: {skipped['error']}", highlight=False)

    sessions = Table(title=f"Sessions ({len(result['sessions'])}, in session order)")
    for column in ("#", "file", "session", "dyad", "A (role)", "B (role)", "input"):
        sessions.add_column(column)
    for s in result["sessions"]:
        who = [f"{s['participants'][lab]['id'] or '?'} ({s['participants'][lab]['role'] or '?'})" for lab in ("A", "B")]
        sessions.add_row(str(s["order"]), s["file"], s["session"] or "–", s["dyad"] or "–", *who, s["kind"])
    console.print(sessions)

    for key, title in (
        ("real_vs_pseudo", "Real dyads vs pseudo-dyads between dyads"),
        ("carry_over", "Carry-over control: same dyad, A and B from different sessions"),
    ):
        _print_null(console, result, result[key], title)

    people = result["longitudinal"]["participants"]
    if people:
        table = Table(
            title=f"Longitudinal trends ({headline}, {result['longitudinal']['value']}; Theil-Sen slope per session, descriptive)"
        )
        for column in ("participant", "partner type", "condition", "band", "n", "slope", "95% CI"):
            table.add_column(column, justify="right" if column in ("n", "slope", "95% CI") else "left")
        for person, entry in people.items():
            for partner_type, g in entry["by_partner_type"].items():
                for condition, per_band in g["series"].items():
                    for band in bands:
                        fit = per_band.get(band, {}).get(headline, {}).get("trend")
                        if fit is None:
                            continue
                        slope = "–" if fit["slope"] is None else f"{fit['slope']:+.4f}"
                        ci = "–" if fit["slope"] is None else f"[{fit['ci_low']:+.4f}, {fit['ci_high']:+.4f}]"
                        table.add_row(person, partner_type, condition, band, str(fit["n"]), slope, ci)
        console.print(table)
    else:
        console.print("No participant id appears in two or more sessions: no longitudinal view.")
    if result["warnings"]:
        console.print(f"[yellow]{len(result['warnings'])} warning(s)[/yellow] (all in the JSON/HTML); first ones:")
        for warning in result["warnings"][:8]:
            console.print(f"  • {warning}", highlight=False)
    cli_options.print_output_paths(console, json_out, html_out)


def _print_null(console: Any, result: dict[str, Any], group: dict[str, Any], title: str) -> None:
    """One real-vs-pseudo section as a table (or why it was not computed)."""
    from rich.table import Table

    if not group.get("available"):
        console.print(f"[yellow]{title}: not computed.[/] {group['reason']}", highlight=False)
        return
    table = Table(title=f"{title} (mean over inter-brain pairs; permutation p, FDR across cells)")
    for column in ("condition", "band", "metric", "real", "pseudo", "real mean", "pseudo mean", "diff", "p", "p FDR"):
        table.add_column(column, justify="left" if column in ("condition", "band", "metric") else "right")
    for condition, entry in group["conditions"].items():
        for band in result["inputs"]["bands"]:
            for metric in result["inputs"]["metrics"]:
                cell = entry[band][metric]
                p, p_fdr = cell.get("p"), cell.get("p_fdr")
                table.add_row(
                    condition,
                    band,
                    metric,
                    str(entry["n_real"]),
                    str(entry["n_pseudo"]),
                    f"{cell['real_mean']:.3f}",
                    f"{cell['pseudo_mean']:.3f}",
                    f"{cell['difference']:+.3f}",
                    "–" if p is None else f"{p:.4f}",
                    "–" if p_fdr is None else f"{p_fdr:.4f}",
                    style="bold green" if cell.get("significant") else None,
                )
    console.print(table)
    for note in group.get("notes", []):
        console.print(f"[yellow]•[/] {note}", highlight=False)


@click.command("group")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@cli_options.outputs()
@cli_options.bands
@click.option(
    "--metrics",
    default=None,
    metavar="NAME,...",
    help="Synchrony metrics, e.g. 'plv,wpli' (default: the quick-check's set).",
)
@cli_options.epoch_length
@cli_options.surrogates("Surrogates per session and condition (per-session z; 0: none).")
@click.option(
    "--pseudo-max",
    default=None,
    type=click.IntRange(min=1),
    help="At most this many pseudo-dyads per condition (random subset).",
)
@click.option(
    "--trend-value",
    type=click.Choice(["corrected", "z"]),
    default="corrected",
    show_default=True,
    help="Longitudinal value: surrogate-corrected mean or surrogate z.",
)
@cli_options.seed("Seed of every random draw.")
@click.option(
    "--sessions-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write each recording's quick-check JSON into this directory (reusable as input).",
)
@click.option(
    "--strict", is_flag=True, help="Stop at the first file that cannot be used (default: skip it with a warning)."
)
@cli_options.no_progress
def group(
    files: tuple[Path, ...],
    json_out: Path | None,
    html_out: Path | None,
    bands: str | None,
    metrics: str | None,
    epoch_length: float,
    n_surrogates: int,
    pseudo_max: int | None,
    trend_value: str,
    seed: int,
    sessions_dir: Path | None,
    strict: bool,
    no_progress: bool,
) -> None:
    """Group level across sessions: real dyads vs pseudo-dyads, and per-person trends over sessions.

    FILES are dyadlab XDF recordings (at least two for pseudo-dyads) and/or quick-check JSONs
    (`dyadlab check --json`), which give per-session summaries and trends only.
    """
    from dyadlab.synchrony.group import run_group

    metric_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    with user_errors(ValueError):
        result = run_group(
            files,
            bands=bands,
            metrics=metric_list,
            epoch_length=epoch_length,
            n_surrogates=n_surrogates,
            pseudo_max=pseudo_max,
            trend_value=trend_value,
            seed=seed,
            strict=strict,
            json_out=json_out,
            html_out=html_out,
            sessions_dir=sessions_dir,
            progress=not no_progress,
        )
    _print_summary(result, json_out, html_out)
