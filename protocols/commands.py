"""``dyadlab run``, ``dyadlab demo``, ``dyadlab validate`` and ``dyadlab repair``: sessions from
protocol files.

``run`` exit codes: 0 complete; 1 the session failed (the files kept are listed); 2 bad input,
nothing created (protocol, output folder, LSL settings, no display); 3 incomplete (aborted with
Escape or stopped by SIGTERM/SIGINT/SIGHUP; finalised like a complete one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dyadlab import DyadlabError
from dyadlab.cli_support import FiniteFloatRange
from dyadlab.protocols.schema import (
    LoadedProtocol,
    ProtocolError,
    bundled_protocols,
    load_protocol,
    paradigm_names,
    plan_session,
)

# soft_wrap: rich leaves long lines to the terminal instead of breaking them, so a path in a
# message is never split across lines (it stays one string to copy or to search for).
console = Console(stderr=False, highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_protocol_error(error: ProtocolError) -> None:
    error_console.print(
        f"[bold red]Protocol rejected[/] ({len(error.issues)} problem{'s' if len(error.issues) != 1 else ''}):"
    )
    for issue in error.issues:
        where = (
            issue.file
            + (f":{issue.line}" if issue.line else "")
            + (f":{issue.column}" if issue.line and issue.column else "")
        )
        field = f" [bold]{issue.field}[/]:" if issue.field else ""
        error_console.print(f"  [cyan]{where}[/]:{field} {issue.message}", markup=True)
        error_console.print(f"      [green]fix:[/] {issue.fix}")


def _load(
    protocol: str,
    dyad: str | None = None,
    session: int | None = None,
    partner: str | None = None,
    partner_id: str | None = None,
    participants: tuple[str, ...] = (),
    roster: Path | None = None,
    study: Path | None = None,
) -> LoadedProtocol:
    from dyadlab.protocols.identities import IdentityError, identity_overrides
    from dyadlab.synchrony.study import StudyError, planned_run

    study_name = None
    try:
        people = identity_overrides(participants, roster, dyad)
        if study is not None:  # the study's people, unless --participant/--roster say otherwise
            study_name, study_people, _recordings = planned_run(study, dyad, session)
            people = {
                label: {**study_people.get(label, {}), **people.get(label, {})} for label in {*study_people, *people}
            }
    except (IdentityError, StudyError) as error:
        error_console.print(f"[bold red]Cannot run:[/] {error}", highlight=False)
        raise SystemExit(2) from None
    overrides = {
        "study": study_name,
        "dyad": dyad,
        "session": session,
        "partner_role": partner,
        "partner_id": partner_id,
        "people": people,
    }
    try:
        return load_protocol(protocol, overrides=overrides)
    except ProtocolError as error:
        _print_protocol_error(error)
        raise SystemExit(2) from None


def _describe(loaded: LoadedProtocol) -> None:
    protocol = loaded.protocol
    plan = plan_session(protocol)
    table = Table(
        title=f"{protocol.name}: study {protocol.study}, dyad {protocol.dyad}, session {protocol.session}",
        title_justify="left",
    )
    for column in ("#", "block", "task", "duration / params"):
        table.add_column(column)
    ids = protocol.block_ids()
    for position, index in enumerate(plan.block_order, start=1):
        block = protocol.blocks[index]
        detail = f"{block.duration:g} s" if block.duration is not None else ""
        if block.params:
            detail += (" " if detail else "") + ", ".join(f"{k}={v}" for k, v in block.params.items())
        table.add_row(str(position), ids[index], block.task, detail)
    console.print(table)
    people = ", ".join(
        f"{plan.labels[p.id]} = {p.id} ({p.role}, {p.device.get('board', 'synthetic')})" for p in protocol.participants
    )
    console.print(f"participants: {people}" + (" [roles swapped by counterbalancing]" if plan.roles_swapped else ""))


@click.command()
@click.argument("protocols", nargs=-1)
@click.option("--list-tasks", is_flag=True, help="List the installed paradigms and bundled protocols.")
@click.option("--dyad", default=None, help="Validate as for this dyad id (counterbalancing).")
@click.option("--session", type=click.IntRange(min=1), default=None, help="Validate as for this session number.")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also check where the files would go under this output folder (as `dyadlab run --out` does).",
)
def validate(
    protocols: tuple[str, ...], list_tasks: bool, dyad: str | None, session: int | None, out: Path | None
) -> None:
    """Check PROTOCOL files (or bundled protocol names) and print OK or every problem with its fix.

    The checks are those `dyadlab run` makes before it creates anything, including the output
    path filled in with the session's real values (and, with --out, its place under that folder).
    """
    if list_tasks:
        console.print("paradigms: " + ", ".join(paradigm_names()))
        console.print("bundled protocols: " + ", ".join(bundled_protocols()))
        if not protocols:
            return
    if not protocols:
        raise click.UsageError("give at least one protocol file or bundled name (see --list-tasks)")
    failed = False
    for name in protocols:
        try:
            loaded = load_protocol(name, overrides={"dyad": dyad, "session": session})
        except ProtocolError as error:
            _print_protocol_error(error)
            failed = True
            continue
        if out is not None:
            from dyadlab.protocols.schema import OutputPathError, resolve_output_stem

            try:
                resolve_output_stem(loaded.protocol, 1, out)
            except OutputPathError as error:
                error_console.print(f"[bold red]Cannot run into {out}:[/] {error}", highlight=False)
                failed = True
                continue
        console.print(f"[bold green]OK[/] {loaded.path} (sha256 {loaded.sha256[:12]})")
        _describe(loaded)
    if failed:
        raise SystemExit(2)


def _run_session(
    loaded: LoadedProtocol,
    *,
    out: Path,
    simulate: bool,
    autopilot: bool,
    speed: float,
    quickcheck: bool,
    virtual_display: bool,
    lsl_local: bool,
) -> int:
    # Imported here so that `dyadlab validate` never loads PsychoPy, pylsl or BrainFlow.
    from dyadlab.protocols.console import SessionConsole, print_session_end
    from dyadlab.protocols.display import DisplayError, ensure_display
    from dyadlab.protocols.runner import SessionRefused, SessionRunner

    session_console = SessionConsole(console)
    status = session_console.status
    if not os.environ.get("DISPLAY") and not virtual_display:
        error_console.print(
            "[red]No display[/] (DISPLAY is unset). Real sessions need a screen; to pilot headless, add --autopilot "
            "(a virtual display starts automatically)."
        )
        return 2
    try:
        # Checks the output path under --out and the LSL settings: nothing is created before.
        runner = SessionRunner(
            loaded,
            out_dir=out,
            simulate=simulate,
            autopilot=autopilot,
            speed=speed,
            quickcheck=quickcheck,
            lsl_local_only=lsl_local,
            status=status,
            session_log=session_console.session_log,
        )
    except DyadlabError as error:
        error_console.print(f"[bold red]Cannot run:[/] {error}", highlight=False)
        return 2
    _describe(loaded)
    try:
        with ensure_display(size := loaded.protocol.screens.size, keep_until_exit=True) as started:
            if started:
                status(
                    "display",
                    f"virtual display {started} (Xvfb, 2 screens of {size[0]}x{size[1]}); timing is not meaningful",
                )
            with session_console.live(runner):
                result = runner.run()
            print_session_end(console, result)
    except DisplayError as error:
        error_console.print(f"[red]{error}[/]")
        return 2
    except SessionRefused as error:
        error_console.print(f"[bold red]Cannot run:[/] {error}", highlight=False)
        return 2
    except Exception as error:
        error_console.print(f"[bold red]Session failed:[/] {error}")
        return 1
    return 0 if result.complete else 3


def _identity_options(command: Any) -> Any:
    """``--participant`` and ``--roster``: who takes part in this run (see dyadlab.protocols.identities)."""
    command = click.option(
        "--roster",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="CSV of the lab's dyads and people (columns dyad,label,id[,role]); the rows of --dyad are used.",
    )(command)
    return click.option(
        "--participant",
        "participants",
        multiple=True,
        metavar="LABEL=ID[:ROLE]",
        help="Who sits as LABEL this run, e.g. A=sub-07 or B=ther-01:therapist (once per participant).",
    )(command)


@click.command()
@click.argument("protocol")
@click.option(
    "--simulate",
    is_flag=True,
    help="Use the simulators instead of every board and microphone (scripted voices for microphones).",
)
@click.option("--autopilot", is_flag=True, help="Simulated participants respond (no one at the keyboard).")
@click.option(
    "--speed",
    type=FiniteFloatRange(min=0.01, max=100.0),
    default=1.0,
    show_default=True,
    help="Run durations this many times faster (autopilot pilots only).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder; files go where the protocol's output pattern says (default: data, or STUDY/recordings).",
)
@click.option(
    "--study",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Study folder (docs/study.md): people from its study.yaml for --dyad/--session, files into its recordings.",
)
@click.option("--dyad", default=None, help="Dyad id (overrides the protocol's).")
@click.option("--session", type=click.IntRange(min=1), default=None, help="Session number (overrides the protocol's).")
@click.option(
    "--partner", default=None, help="Role of participant B this run (therapist, stranger, significant-other...)."
)
@click.option("--partner-id", default=None, help="Id of participant B this run.")
@_identity_options
@click.option("--no-quickcheck", is_flag=True, help="Skip the synchrony quick-check at the end.")
def run(
    protocol: str,
    simulate: bool,
    autopilot: bool,
    speed: float,
    out: Path | None,
    dyad: str | None,
    session: int | None,
    partner: str | None,
    partner_id: str | None,
    participants: tuple[str, ...],
    roster: Path | None,
    no_quickcheck: bool,
    study: Path | None,
) -> None:
    """Run a session from PROTOCOL (a .yaml file or a bundled name: demo, cooperation, ...)."""
    if speed != 1.0 and not autopilot:
        raise click.UsageError(
            "--speed changes durations; it is only allowed with --autopilot (pilots, never participants)"
        )
    loaded = _load(protocol, dyad, session, partner, partner_id, participants, roster, study)
    if out is None:
        from dyadlab.synchrony.study import RECORDINGS_DIR

        out = study / RECORDINGS_DIR if study is not None else Path("data")
    sys.exit(
        _run_session(
            loaded,
            out=out,
            simulate=simulate,
            autopilot=autopilot,
            speed=speed,
            quickcheck=not no_quickcheck,
            virtual_display=autopilot,
            lsl_local=False,
        )
    )


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--speed",
    type=FiniteFloatRange(min=0.01, max=100.0),
    default=1.0,
    show_default=True,
    help="Run faster than real time.",
)
@click.option("--dyad", default=None, help="Dyad id (default D01).")
@click.option("--session", type=click.IntRange(min=1), default=None, help="Session number (default 1).")
@_identity_options
def demo(
    out: Path,
    speed: float,
    dyad: str | None,
    session: int | None,
    participants: tuple[str, ...],
    roster: Path | None,
) -> None:
    """The bundled demo: a ~3-minute simulated dyad session with autopilot, recorded and checked.

    Several demos with different --dyad and --participant values make a small study for
    `dyadlab group` (pseudo-dyads, longitudinal view).
    """
    loaded = _load("demo", dyad, session, participants=participants, roster=roster)
    # The demo shows the experimenter's view too: live synchrony and live speech detection recorded,
    # the monitor's address printed.
    from dataclasses import replace

    from dyadlab.protocols.schema import LiveSynchronySettings, MonitorSettings

    shown: dict[str, object] = {
        "live_synchrony": LiveSynchronySettings(enabled=True),
        "monitor": MonitorSettings(enabled=True),
    }
    if loaded.protocol.microphones is not None:
        shown["microphones"] = loaded.protocol.microphones.model_copy(update={"live_speech": True})
    loaded = replace(loaded, protocol=loaded.protocol.model_copy(update=shown))
    sys.exit(
        _run_session(
            loaded,
            out=out,
            simulate=True,
            autopilot=True,
            speed=speed,
            quickcheck=True,
            virtual_display=True,
            lsl_local=True,
        )
    )


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
def repair(target: Path, dry_run: bool) -> None:
    """Bring a run's session.json in line with what its XDF holds.

    TARGET is a run's *_session.json or a folder (every *_session.json below it). After a run was
    killed (kill -9, power loss) its record still says "running"; the markers in the XDF say which
    blocks started and ended. The previous record is kept as *_session.json.before-repair.
    """
    from dyadlab.protocols.repair import RepairError, find_session_records, repair_session

    try:
        records = find_session_records(target)
    except RepairError as error:
        error_console.print(f"[bold red]Cannot repair:[/] {error}", highlight=False)
        raise SystemExit(2) from None
    failed = False
    for path in records:
        try:
            report = repair_session(path, write=not dry_run)
        except RepairError as error:
            error_console.print(f"[bold red]Cannot repair[/] {path}: {error}", highlight=False)
            failed = True
            continue
        verb = "would change" if dry_run else "repaired"
        if not report.changed:
            console.print(f"{path}: already in line with {report.xdf.name} (status {report.status_after})")
            continue
        console.print(f"{path}: {verb} from {report.xdf.name}: status {report.status_before} -> {report.status_after}")
        for block_id, before, after in report.blocks:
            mark = "" if before == after else f" (was {before})"
            console.print(f"  block {block_id}: {after}{mark}", highlight=False)
        for note in report.notes:
            console.print(f"  [yellow]note:[/] {note}", highlight=False)
    if failed:
        raise SystemExit(2)
