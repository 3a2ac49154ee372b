"""``dyadlab inspect FILE.xdf``: validate an XDF file and summarise its streams.

Exit codes: 0 the file is valid (possibly incomplete, see the warnings), 1 a defect was found,
2 the file cannot be read (missing, no permission, or not a regular file: a folder, a FIFO or a
device is refused at once, never waited on).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dyadlab.acquisition.xdfinspect import StreamSummary, XdfInspection, inspect_xdf

EXIT_VALID = 0
EXIT_DEFECT = 1
EXIT_UNREADABLE = 2


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _offsets(stream: StreamSummary) -> str:
    if not stream.clock_offset_count:
        return "0"
    low, high = stream.clock_offset_min or 0.0, stream.clock_offset_max or 0.0
    return f"{stream.clock_offset_count} (min {low * 1e6:+.1f} µs, max {high * 1e6:+.1f} µs)"


def _gaps(stream: StreamSummary) -> str:
    if stream.nominal_srate <= 0:
        return "n/a"
    if not stream.gap_count:
        return "0"
    return f"{stream.gap_count} (max {_number(stream.largest_gap)} s)"


def _stream_table(stream: StreamSummary) -> Table:
    table = Table(title=f"stream {stream.stream_id}: {stream.name}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rate = "irregular" if stream.nominal_srate == 0 else f"{stream.nominal_srate:g} Hz"
    rows = [
        ("type", stream.type),
        ("source_id", stream.source_id or "[yellow](none)[/yellow]"),
        ("format", f"{stream.channel_format} x {stream.channel_count} channels"),
        ("nominal rate", rate),
        ("samples", f"{stream.sample_count:,}"),
        ("first / last timestamp", f"{_number(stream.first_timestamp)} / {_number(stream.last_timestamp)} s"),
        ("duration", f"{_number(stream.duration)} s"),
        ("effective rate", f"{_number(stream.effective_srate)} Hz"),
        ("clock offsets", _offsets(stream)),
        ("gaps", _gaps(stream)),
        ("footer", "yes" if stream.has_footer else "[yellow]no[/yellow]"),
    ]
    if stream.deduced_timestamp_count:
        rows.insert(5, ("deduced timestamps", f"{stream.deduced_timestamp_count:,}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _render(result: XdfInspection, console: Console) -> None:
    header = ", ".join(f"{key}={value}" for key, value in result.file_header.items())
    console.print(f"[bold]{result.path}[/bold]  {result.file_size:,} bytes, {result.chunk_count} chunks")
    if header:
        console.print(f"file header: {header}", highlight=False)
    if not result.streams:
        console.print("no streams")
    for stream in result.streams:
        console.print(_stream_table(stream))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if result.defect is not None:
        console.print(f"[bold red]INVALID:[/bold red] {result.defect}", highlight=False)
    elif result.complete:
        console.print("[bold green]valid[/bold green]: every chunk is intact and every stream has its footer")
    else:
        console.print(
            "[bold yellow]valid but incomplete[/bold yellow]: every chunk is intact, "
            "but some streams have no footer (recording not finalized)"
        )


@click.command("inspect")
@click.argument("xdf_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full inspection as JSON.")
@click.pass_context
def inspect(ctx: click.Context, xdf_file: Path, as_json: bool) -> None:
    """Validate XDF_FILE chunk by chunk and summarise its streams.

    Exit code 0 when the file is valid, 1 when a defect is found (its byte offset is printed),
    2 when the file cannot be read.
    """
    try:
        result = inspect_xdf(xdf_file)
    except OSError as exc:
        click.echo(f"cannot read {xdf_file}: {exc.strerror or exc}", err=True)
        ctx.exit(EXIT_UNREADABLE)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _render(result, Console())
    ctx.exit(EXIT_VALID if result.valid else EXIT_DEFECT)
