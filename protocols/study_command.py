"""``dyadlab study``: a longitudinal study's status, a simulated study, and the study analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dyadlab.cli_support import user_errors
from dyadlab.synchrony import cli_options

_STATUS_STYLE = {"recorded": "green", "missing": "yellow", "incomplete": "red", "quick-check failed": "red"}


@click.group("study")
def study() -> None:
    """A longitudinal study: its status, a simulated study of known answer, and its analysis.

    STUDY is a study folder with a study.yaml (people, dyads, planned sessions), an
    outcomes.tsv and the recordings (see docs/study.md).
    """


@study.command("status")
@click.argument("folder", metavar="STUDY", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="List every planned session (default: those not recorded).")
def status(folder: Path, show_all: bool) -> None:
    """Which planned sessions are recorded, missing, incomplete or failed their quick-check."""
    from rich.console import Console
    from rich.table import Table

    from dyadlab.synchrony.study import load_study, session_status

    with user_errors():
        plan = load_study(folder)
        statuses, unplanned = session_status(folder, plan)
    console = Console()
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    console.print(
        f"Study [bold]{plan.name}[/]: {len(statuses)} planned sessions: "
        + ", ".join(f"[{_STATUS_STYLE[k]}]{n} {k}[/]" for k, n in sorted(counts.items())),
        highlight=False,
    )
    shown = [s for s in statuses if show_all or s.status != "recorded"]
    if shown:
        table = Table()
        for column in ("dyad", "session", plan.focal_role, "partner", "status", "detail"):
            table.add_column(column)
        for s in shown:
            table.add_row(
                s.dyad,
                str(s.session),
                s.focal,
                f"{s.partner} ({s.partner_type})",
                s.status,
                s.detail,
                style=_STATUS_STYLE[s.status] if s.status != "recorded" else None,
            )
        console.print(table)
    for recording in unplanned:
        console.print(
            f"[yellow]Not planned:[/] {recording.xdf or '?'} (dyad {recording.dyad}, session {recording.session})",
            highlight=False,
        )


@study.command("simulate")
@click.argument("folder", metavar="STUDY", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patients", default=12, show_default=True, type=click.IntRange(min=1), help="Patients.")
@click.option("--sessions", default=8, show_default=True, type=click.IntRange(min=1), help="Sessions per patient.")
@click.option(
    "--stranger-sessions",
    default="1,4,8",
    show_default=True,
    metavar="K,K,...",
    help="Sessions at which each patient also meets a new stranger ('' for none).",
)
@click.option("--therapists", default=3, show_default=True, type=click.IntRange(min=1), help="Therapists.")
@click.option("--null", "null", is_flag=True, help="No planted effect: coupling constant, symptoms unrelated.")
@click.option(
    "--block-seconds", default=20.0, show_default=True, type=click.FloatRange(min=4), help="Probe block length."
)
@cli_options.seed("Seed of every random draw.")
def simulate(
    folder: Path,
    patients: int,
    sessions: int,
    stranger_sessions: str,
    therapists: int,
    null: bool,
    block_seconds: float,
    seed: int,
) -> None:
    """Write a simulated inter-brain plasticity study (XDF per session, outcomes, truth.json) to STUDY."""
    from rich.progress import Progress

    from dyadlab.protocols.study_simulation import StudyDesign, simulate_study

    try:
        strangers = tuple(int(k) for k in stranger_sessions.split(",") if k.strip())
    except ValueError:
        raise click.BadParameter(f"{stranger_sessions!r} is not a comma-separated list of session numbers") from None
    if (folder / "recordings").exists() and any((folder / "recordings").rglob("*.xdf")):
        raise click.UsageError(f"{folder} already holds recordings; simulate into a new folder")
    with user_errors():
        design = StudyDesign(
            n_patients=patients,
            n_sessions=sessions,
            stranger_sessions=strangers,
            n_therapists=therapists,
            null=null,
            block_seconds=block_seconds,
            seed=seed,
        )
        with Progress(transient=True) as bar:
            task = bar.add_task("Simulating sessions", total=None)
            truth = simulate_study(
                folder, design, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    click.echo(
        f"{len(truth['planted'])} sessions written to {folder} ({'null study' if null else 'planted trajectories'}); "
        f"the planted answer is in {folder / 'truth.json'}. Next: dyadlab study analyze {folder}"
    )


@study.command("analyze")
@click.argument("folder", metavar="STUDY", type=click.Path(exists=True, file_okay=False, path_type=Path))
@cli_options.outputs(
    json_help="JSON result (default STUDY/analysis/study.json).",
    report_help="HTML report (default STUDY/analysis/study.html).",
)
@click.option("--condition", default=None, help="Probe condition followed (default: study.yaml's analysis.condition).")
@click.option("--band", default=None, help="Band followed, one of the quick-check bands.")
@click.option(
    "--value", type=click.Choice(["corrected", "z"]), default=None, help="Surrogate-corrected mean or surrogate z."
)
@click.option("--surrogates", type=click.IntRange(min=10), default=None, help="Surrogates per session.")
@click.option("--outcome", default=None, help="Outcome column of outcomes.tsv (default: the first).")
@click.option(
    "--scheduler",
    default="local",
    show_default=True,
    help="Where sessions are checked: 'local' (a local Dask cluster), 'serial' (this process) or a Dask scheduler address.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes of the local cluster.")
@click.option("--no-pseudo", is_flag=True, help="Skip real-vs-pseudo dyads (they read every recording again).")
@cli_options.no_progress
def analyze(
    folder: Path,
    json_out: Path | None,
    html_out: Path | None,
    condition: str | None,
    band: str | None,
    value: str | None,
    surrogates: int | None,
    outcome: str | None,
    scheduler: str,
    workers: int | None,
    no_pseudo: bool,
    no_progress: bool,
) -> None:
    """Mixed models of synchrony over sessions and partner types, generalisation, outcomes, report."""
    from dyadlab.synchrony.study import ANALYSIS_DIR, AnalysisSettings, load_study
    from dyadlab.synchrony.study_analysis import analyze_study

    with user_errors():
        plan = load_study(folder)
        overrides = {
            k: v
            for k, v in {
                "condition": condition,
                "band": band,
                "value": value,
                "surrogates": surrogates,
                "outcome": outcome,
            }.items()
            if v is not None
        }
        settings = AnalysisSettings.model_validate({**plan.analysis.model_dump(), **overrides})
        out = folder / ANALYSIS_DIR
        result = analyze_study(
            folder,
            settings=settings,
            scheduler=None if scheduler == "local" else scheduler,
            n_workers=workers,
            pseudo=not no_pseudo,
            json_out=json_out or out / "study.json",
            html_out=html_out or out / "study.html",
            figures_dir=out / "figures",
            progress=not no_progress,
        )
    _print_result(result, json_out or out / "study.json", html_out or out / "study.html")


def _print_result(result: dict[str, Any], json_out: Path, html_out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    cache = result["cache"]
    console.print(
        f"{len(result['sessions'])} sessions ({cache['hits']} from the cache, {cache['computed']} checked); "
        f"value: {result['value_meaning']}",
        highlight=False,
    )
    table = Table(title="Headline effects (95% CI; bold: the CI excludes 0)")
    for column in ("effect", "estimate", "95% CI", "p"):
        table.add_column(column, justify="left" if column == "effect" else "right")
    for name, effect in result["effects"].items():
        estimate = effect.get("estimate", effect.get("r"))
        table.add_row(
            escape(name),
            "–" if estimate is None else f"{estimate:+.4g}",
            "–" if effect.get("ci_low") is None else f"[{effect['ci_low']:+.4g}, {effect['ci_high']:+.4g}]",
            "–" if effect.get("p") is None else f"{effect['p']:.3g}",
            style="bold" if effect.get("excludes_zero") else None,
        )
    console.print(table)
    for warning in result["warnings"][:8]:
        console.print(f"[yellow]•[/] {warning}", highlight=False)
    console.print(f"JSON: {json_out}\nHTML report: {html_out}")
