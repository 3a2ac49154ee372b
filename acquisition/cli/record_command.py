"""``dyadlab record``: record selected LSL streams into one crash-safe XDF file.

Records until ``--duration`` ends or the process gets SIGINT (Ctrl+C) / SIGTERM, then drains every
stream up to that moment, finalizes the file and prints what it wrote.

With ``--duration``, the disk must have room for the estimated recording (x 2, plus a reserve)
before the file is created. If the disk fills up anyway, the recording stops at once: the file
keeps every sample written before (valid XDF without footers) and the command exits with 1.

Exit codes: 0 a complete recording; 1 the recording has problems (listed, e.g. a stream whose
source stopped delivering and never came back); 2 bad input (the output file exists or its
folder does not, an invalid --predicate, a duration that is not a finite number...); 3 a required stream was not found (nothing recorded, no file created);
4 not enough free space for --duration (nothing recorded, no file created); 130 interrupted before
recording started.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from dyadlab.acquisition.cli.signals import StopOnSignal
from dyadlab.cli_support import FiniteFloatRange

if TYPE_CHECKING:
    from dyadlab.acquisition.recorder import RecordingSummary

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_STREAM = 3
EXIT_NO_SPACE = 4
EXIT_INTERRUPTED = 130
#: Longest --duration / --wait accepted (a week): longer waits overflow the timers.
MAX_SECONDS = 7 * 24 * 3600.0


def _parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value (e.g. --meta dyad=d01)", param_hint="--meta")
        metadata[key.strip()] = value
    return metadata


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@click.command("record")
@click.option(
    "--source-id",
    "source_ids",
    multiple=True,
    metavar="ID",
    help="Record the stream with this exact LSL source_id (repeatable).",
)
@click.option(
    "--predicate",
    "predicates",
    multiple=True,
    metavar="XPATH",
    help="Record the one stream matching this LSL predicate (XPath 1.0), e.g. \"name='X' and hostname='pc2'\" "
    "(repeatable). It applies within this machine's LSL SessionID only (dyadlab brackets it).",
)
@click.option(
    "--optional-source-id",
    "optional_ids",
    multiple=True,
    metavar="ID",
    help="Record this stream if and when it appears (repeatable); its absence is no error.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The XDF file to create; an existing file is never overwritten.",
)
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0, min_open=True, max=MAX_SECONDS),
    default=None,
    help="Stop after this many seconds (default: until Ctrl+C / SIGTERM).",
)
@click.option(
    "--wait",
    "wait",
    type=FiniteFloatRange(min=0, max=MAX_SECONDS),
    default=10.0,
    show_default=True,
    help="Seconds to wait for every required stream to appear.",
)
@click.option(
    "--meta",
    "meta",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra file-header field, e.g. --meta study=pilot --meta dyad=d01 (repeatable).",
)
def record(
    source_ids: tuple[str, ...],
    predicates: tuple[str, ...],
    optional_ids: tuple[str, ...],
    out: Path,
    duration: float | None,
    wait: float,
    meta: tuple[str, ...],
) -> None:
    """Record the selected LSL streams into one XDF file.

    Select every stream explicitly (nothing is recorded "because it is on the network").
    Stops after --duration, or on Ctrl+C / SIGTERM, after draining every stream up to that moment.
    LSL settings (SessionID, resolve scope, KnownPeers) come from lsl_api.cfg or $LSLAPICFG.

    \b
    Example:
      dyadlab record --source-id dyadlab.pilot.d01.A.eeg \\
        --source-id dyadlab.pilot.d01.B.eeg --source-id dyadlab.pilot.d01.markers \\
        --out d01.xdf --meta study=pilot --meta dyad=d01
    """
    # soft_wrap: long paths, ids and messages stay on one line (readable, and greppable in logs)
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    if not source_ids and not predicates:
        raise click.UsageError("select at least one stream with --source-id or --predicate")
    metadata = _parse_meta(meta)
    if not out.parent.is_dir():
        err.print(
            f"[red]{out.parent} is not an existing folder[/red]; create it first or choose another --out.",
            highlight=False,
        )
        raise SystemExit(EXIT_BAD_INPUT)
    if out.exists() or out.is_symlink():
        err.print(
            f"[red]{out} already exists[/red]; a recording is never overwritten. "
            "Choose a new --out name or move the existing file away.",
            highlight=False,
        )
        raise SystemExit(EXIT_BAD_INPUT)
    # Imported here, so that `dyadlab record --help` and input errors need no LSL at all. The LSL
    # configuration (SessionID, scope, peers) is the machine's lsl_api.cfg or $LSLAPICFG.
    from dyadlab.acquisition.recorder import (
        LslRecorder,
        MissingStreamError,
        RecorderError,
        StreamSelector,
    )
    from dyadlab.acquisition.storage import InsufficientSpaceError

    stopper = StopOnSignal(
        armed=False,
        on_repeat=lambda: click.echo("dyadlab record: already stopping; finishing the file, please wait.", err=True),
    )
    try:
        selectors = [StreamSelector(source_id=s) for s in source_ids]
        selectors += [StreamSelector(predicate=p) for p in predicates]
        selectors += [StreamSelector(source_id=s, required=False) for s in optional_ids]
        # A failed write (disk full) ends the wait at once; the recorder has already logged it.
        recorder = LslRecorder(
            out,
            selectors,
            file_metadata=metadata,
            wait_for_streams=wait,
            planned_duration=duration,
            on_failure=lambda message: stopper.event.set(),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    with stopper:
        try:
            err.print(f"Looking for {len(selectors)} stream(s) (up to {wait:g} s)...", highlight=False)
            recorder.start()
        except KeyboardInterrupt:
            err.print("Interrupted before recording started; no file was written.")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except FileExistsError as exc:
            err.print(f"[red]{exc}[/red]", highlight=False)
            raise SystemExit(EXIT_BAD_INPUT) from None
        except MissingStreamError as exc:
            err.print(f"[red]Missing stream.[/red] {exc}", highlight=False)
            raise SystemExit(EXIT_MISSING_STREAM) from None
        except InsufficientSpaceError as exc:
            err.print(f"[red]Not enough disk space.[/red] {exc}", highlight=False)
            raise SystemExit(EXIT_NO_SPACE) from None
        except (RecorderError, OSError) as exc:
            err.print(f"[red]Cannot record:[/red] {exc}", highlight=False)
            raise SystemExit(EXIT_PROBLEMS) from None
        stopper.armed = True
        try:
            names = ", ".join(s.name for s in recorder.summary().streams)
            until = f"for {duration:g} s" if duration else "until Ctrl+C"
            err.print(f"Recording {names} to {out} {until}.", highlight=False)
            stopper.event.wait(duration)
        finally:
            if recorder.failure is not None:
                err.print("[red]The recording failed[/red]; finishing the file...", highlight=False)
            else:
                err.print("Stopping: draining every stream up to this moment...")
            summary = recorder.stop()

    _print_summary(summary, console)
    if not summary.ok:
        for problem in summary.problems:
            err.print(f"[red]problem:[/red] {problem}", highlight=False)
        raise SystemExit(EXIT_PROBLEMS)


def _print_summary(summary: RecordingSummary, console: Console) -> None:
    state = "[green]complete[/green]" if summary.ok else "[red]INCOMPLETE[/red]"
    console.print(
        f"Wrote [bold]{summary.path}[/bold] ({summary.file_size:,} bytes, {summary.duration:.1f} s recorded, {state}):",
        highlight=False,
    )
    for stream in summary.streams:
        rate = "irregular" if stream.nominal_srate == 0 else f"{stream.nominal_srate:g} Hz"
        footer = "footer written" if stream.footer_written else "[red]NO footer[/red]"
        console.print(
            f"  stream {stream.stream_id}: [bold]{stream.name}[/bold] (source_id {stream.source_id}, "
            f"{stream.channel_count} x {stream.channel_format}, {rate}): {stream.sample_count:,} samples, "
            f"{_number(stream.duration, 2)} s, {stream.clock_offsets} clock offsets, {footer}",
            highlight=False,
        )
    for label in summary.not_found:
        console.print(f"  never appeared: {label}", highlight=False)
