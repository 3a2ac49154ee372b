"""``dyadlab preflight``: are both participants' streams and signals ready to record?

Prints one table per participant (stream checks, then every channel), the problems with how to
fix them, and optionally writes the full report as JSON.

Exit codes: 0 ready; 1 not ready (the message says what to fix); 2 bad option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from dyadlab.acquisition.preflight import ParticipantResult, PreflightReport

EXIT_READY = 0
EXIT_NOT_READY = 1


def _fmt(value: float | None, pattern: str, missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def _stream_table(report: PreflightReport) -> Table:
    table = Table(title="Streams", box=None, header_style="bold", pad_edge=False)
    for column in ("stream", "found", "rate (Hz)", "samples", "timestamps", "clock offset", "stamp vs local_clock"):
        table.add_column(column)
    rows = [(f"{label} EEG", result.eeg) for label, result in report.participants.items()]
    rows.append(("markers", report.markers))
    for title, stream in rows:
        found = {0: "[red]missing[/red]", 1: "[green]yes[/green]"}.get(
            stream.found, f"[red]{stream.found} (duplicate)[/red]"
        )
        rate = "-"
        if stream.effective_rate is not None:
            rate = f"{stream.effective_rate:.1f} / {stream.expected_rate:g}"
        timestamps = (
            "-" if stream.monotonic is None else ("monotonic" if stream.monotonic else "[red]NOT monotonic[/red]")
        )
        table.add_row(
            title,
            found,
            rate,
            str(stream.samples) if stream.kind == "eeg" and stream.found == 1 else "-",
            timestamps,
            _fmt(stream.clock_offset_s, "{:+.4f} s", "-" if stream.found != 1 else "[red]not measured[/red]"),
            _fmt(stream.stamp_to_local_clock_s, "{:+.3f} s"),
        )
    return table


def _channel_table(label: str, result: ParticipantResult) -> Table:
    status = "[green]READY[/green]" if result.ready else "[red]NOT READY[/red]"
    table = Table(title=f"Participant {label}: {status}", box=None, header_style="bold", pad_edge=False)
    for column in ("channel", "std (µV)", "robust z", "railed", "line noise", "status"):
        table.add_column(column, justify="left" if column in ("channel", "status") else "right")
    for channel in result.channels:
        flags = ", ".join(channel.flags) if channel.flags else "ok"
        style = "green" if channel.ok else "red"
        table.add_row(
            channel.label,
            f"{channel.std_uv:.1f}",
            f"{channel.robust_z:+.1f}",
            f"{channel.railed_fraction:.0%}",
            _fmt(channel.line_noise_ratio, "{:.2f}"),
            f"[{style}]{flags}[/{style}]",
        )
    return table


@click.command("preflight")
@click.option("--study", required=True, help="Study id (as used by the bridges).")
@click.option("--dyad", required=True, help="Dyad id (as used by the bridges).")
@click.option("--participants", nargs=2, default=("A", "B"), show_default=True, help="The two participant labels.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.5),
    default=3.0,
    show_default=True,
    help="Seconds of EEG read from each stream.",
)
@click.option(
    "--line-freq", type=click.Choice(["50", "60"]), default="50", show_default=True, help="Mains frequency of this lab."
)
@click.option(
    "--rate",
    "expected_rate",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Required sampling rate in Hz (default: each stream's declared rate).",
)
@click.option(
    "--max-bad-channels",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Bad channels tolerated per participant (reported as warnings).",
)
@click.option("--no-markers", is_flag=True, help="Do not require the session marker stream.")
@click.option(
    "--resolve-timeout",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds to wait for streams to answer.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full report to this JSON file.",
)
@click.option("--session-id", default=None, help="LSL SessionID to use (must match the bridges').")
@click.option("--local-only", is_flag=True, help="Look for streams on this machine only (loopback).")
def preflight(
    study: str,
    dyad: str,
    participants: tuple[str, str],
    duration: float,
    line_freq: str,
    expected_rate: float | None,
    max_bad_channels: int,
    no_markers: bool,
    resolve_timeout: float,
    json_path: Path | None,
    session_id: str | None,
    local_only: bool,
) -> None:
    """Check a dyad's EEG and marker streams before recording; exit 1 if a participant is not ready."""
    from dyadlab.acquisition.lslconfig import (
        LslConfig,
        LslConfigError,
        apply_lsl_config,
    )

    try:
        if local_only:
            apply_lsl_config(LslConfig.local_only(session_id or "default"))
        elif session_id:
            apply_lsl_config(LslConfig(session_id=session_id))
    except LslConfigError as error:
        raise click.BadParameter(str(error), param_hint="--session-id") from error

    from dyadlab.acquisition.preflight import PreflightConfig, run_preflight

    try:
        config = PreflightConfig(
            study=study,
            dyad=dyad,
            participants=tuple(participants),
            duration_s=duration,
            expected_rate=expected_rate,
            line_freq=float(line_freq),
            require_markers=not no_markers,
            resolve_timeout_s=resolve_timeout,
            max_bad_channels=max_bad_channels,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error

    console = Console()
    with console.status(f"Preflight of {study}/{dyad}: reading {duration:g} s from every stream..."):
        report = run_preflight(config)
    console.print(f"LSL SessionID: [bold]{report.session_id}[/bold]")
    console.print(_stream_table(report))
    for label, result in report.participants.items():
        console.print()
        if result.channels:
            console.print(_channel_table(label, result))
        else:
            console.print(f"Participant {label}: [red]NOT READY[/red] (no EEG data to check)")
    if report.problems:
        console.print()
        for problem in report.problems:
            style = "red" if problem.severity == "error" else "yellow"
            console.print(f"[{style}]{escape(str(problem))}[/{style}]", highlight=False)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        console.print(f"Report written to {json_path}")
    console.print()
    if report.ready:
        console.print("[bold green]Ready to record.[/bold green]")
        return
    not_ready = [label for label, result in report.participants.items() if not result.ready]
    reasons = []
    if not_ready:
        reasons.append(f"participant(s) {', '.join(not_ready)} not ready")
    if any(problem.severity == "error" for problem in report.marker_problems):
        reasons.append("marker stream not ready")
    console.print(
        f"[bold red]Not ready: {'; '.join(reasons)}.[/bold red] Fix the errors above and run preflight again."
    )
    raise SystemExit(EXIT_NOT_READY)
