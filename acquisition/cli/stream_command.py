"""``dyadlab stream``: stream one or both participants' boards into LSL until Ctrl+C.

For labs where each amplifier has its own PC, run ``dyadlab stream --participant A`` on one and
``--participant B`` on the other; LSL carries both to the recording PC (use the same
``--session-id`` everywhere, or the same ``lsl_api.cfg``). With no arguments it streams two
synthetic boards, participants A and B, on this machine's LSL configuration.

Exit codes: 0 stopped normally; 2 bad board configuration or option (nothing was published).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dyadlab.acquisition.cli.signals import StopOnSignal
from dyadlab.cli_support import FiniteFloatRange

if TYPE_CHECKING:
    from dyadlab.acquisition.bridge import BoardBridge, BridgeStatus

EXIT_OK = 0
EXIT_BAD_CONFIG = 2
PARTICIPANTS = ("A", "B")
_STATE_STYLE = {"streaming": "green", "stalled": "red", "reconnecting": "yellow", "stopped": "dim", "idle": "dim"}


def split_board_params(items: Sequence[str], labels: Sequence[str]) -> dict[str, list[str]]:
    """Sort ``--board-param`` values by participant.

    ``key=value`` applies to every participant, ``A:key=value`` to participant A only.
    """
    per_label: dict[str, list[str]] = {label: [] for label in labels}
    for item in items:
        prefix, colon, rest = item.partition(":")
        if colon and "=" not in prefix and prefix.upper() in PARTICIPANTS:
            label = prefix.upper()
            if label not in per_label:
                raise click.BadParameter(
                    f"{item!r} is for participant {label}, who is not streamed here (--participant).",
                    param_hint="--board-param",
                )
            per_label[label].append(rest)
        else:
            for values in per_label.values():
                values.append(item)
    return per_label


def _parse_labelled(items: Sequence[str], option: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or label.strip().upper() not in PARTICIPANTS or not value.strip():
            raise click.BadParameter(f"{item!r} is not LABEL=VALUE with LABEL A or B.", param_hint=option)
        values[label.strip().upper()] = value.strip()
    return values


def status_table(statuses: Sequence[BridgeStatus]) -> Table:
    """One line per stream: state, effective/nominal rate, samples, drops, reconnects, age."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("stream", "state", "rate (Hz)", "samples", "dropped", "reconnects", "last sample", "note"):
        table.add_column(column, no_wrap=column != "note")
    for status in statuses:
        style = _STATE_STYLE.get(status.state.value, "")
        age = "-" if status.last_sample_age is None else f"{status.last_sample_age * 1e3:.0f} ms ago"
        table.add_row(
            status.stream_name,
            f"[{style}]{status.state.value}[/{style}]",
            f"{status.rate:6.1f} / {status.nominal_rate:g}",
            str(status.samples),
            str(status.dropped_packets),
            str(status.reconnects),
            age,
            status.message if status.state.value != "streaming" else "",
        )
    return table


def _quiet_brainflow(verbose: bool) -> None:
    """BrainFlow logs every session's JSON at info level to stderr; keep warnings unless -vv."""
    from brainflow.board_shim import BoardShim, LogLevels

    BoardShim.set_log_level(int((LogLevels.LEVEL_INFO if verbose else LogLevels.LEVEL_WARN).value))


@click.command("stream")
@click.option(
    "--participant",
    "participants",
    multiple=True,
    type=click.Choice(PARTICIPANTS, case_sensitive=False),
    help="Stream this participant's board (repeatable; default: A and B).",
)
@click.option(
    "--board",
    default="synthetic",
    show_default=True,
    help="BrainFlow board name (synthetic, cyton, cyton_daisy, unicorn, ganglion, muse_s, ...).",
)
@click.option(
    "--board-param",
    "board_params",
    multiple=True,
    metavar="[A:|B:]KEY=VALUE",
    help="BrainFlow connection parameter, e.g. serial_port=/dev/ttyUSB0; prefix A: or B: for one "
    "participant only (repeatable). Keys: serial_port, mac_address, ip_address, ip_port, "
    "ip_protocol, serial_number, other_info, timeout, file, master_board, preset.",
)
@click.option("--study", default="pilot", show_default=True, help="Study id (part of every stream's source_id).")
@click.option("--dyad", default="d01", show_default=True, help="Dyad id (part of every stream's source_id).")
@click.option(
    "--participant-id",
    "participant_ids",
    multiple=True,
    metavar="LABEL=ID",
    help="The study's id of a participant, e.g. A=sub-017 (default: the label).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="LABEL=ROLE",
    help="A participant's role, e.g. A=therapist (default: participant).",
)
@click.option(
    "--session-id",
    default=None,
    help="LSL SessionID (default: this machine's lsl_api.cfg). Every PC of the session needs the same.",
)
@click.option("--local-only", is_flag=True, help="Keep the streams on this machine (loopback only).")
@click.option(
    "--simulate",
    is_flag=True,
    help="Stream the coupled-dyad simulator instead of boards; its coupling follows the session's marker stream.",
)
@click.option("--seed", type=int, default=None, help="Simulator seed (with --simulate).")
@click.option(
    "--duration",
    type=FiniteFloatRange(min=0, min_open=True, max=7 * 24 * 3600.0),
    default=None,
    help="Stop after this many seconds (default: until Ctrl+C).",
)
def stream(
    participants: tuple[str, ...],
    board: str,
    board_params: tuple[str, ...],
    study: str,
    dyad: str,
    participant_ids: tuple[str, ...],
    roles: tuple[str, ...],
    session_id: str | None,
    local_only: bool,
    simulate: bool,
    seed: int | None,
    duration: float | None,
) -> None:
    """Stream participants' EEG boards into LSL with a live status line per stream.

    With no options: two synthetic boards, participants A and B. Ctrl+C stops the streams and
    releases the boards.

    \b
    Example, one amplifier per PC (run the same with --participant B on the other PC):
      dyadlab stream --participant A --board cyton_daisy \\
        --board-param serial_port=/dev/ttyUSB0 --study pilot --dyad d07 --session-id lab2
    """
    err = Console(stderr=True, soft_wrap=True)
    labels = list(dict.fromkeys(p.upper() for p in participants)) or list(PARTICIPANTS)
    ids = _parse_labelled(participant_ids, "--participant-id")
    role_of = _parse_labelled(roles, "--role")
    if simulate and (board != "synthetic" or board_params):
        raise click.UsageError("--simulate streams the simulator; it takes no --board or --board-param.")
    if seed is not None and not simulate:
        raise click.UsageError("--seed only applies with --simulate.")

    config_path = None
    if session_id is not None or local_only:
        from dyadlab.acquisition.lslconfig import (
            LslConfig,
            LslConfigError,
            apply_lsl_config,
            local_only_exposure,
        )

        try:
            config = LslConfig.local_only(session_id or "default") if local_only else LslConfig(session_id=session_id)
        except LslConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--session-id") from exc
        if local_only:
            err.print(f"[yellow]warning:[/yellow] {local_only_exposure()}", highlight=False)
        # The private lsl_api.cfg is removed once liblsl has read it (below), or at exit.
        config_path = apply_lsl_config(config)
    # Imported after the LSL configuration: liblsl reads it at the first LSL call.
    import pydantic
    import pylsl

    from dyadlab.acquisition.bridge import BoardBridge
    from dyadlab.acquisition.lslconfig import discard_lsl_config
    from dyadlab.acquisition.sources import SourceConfigError, SourceError
    from dyadlab.acquisition.streams import ParticipantInfo, source_id

    pylsl.protocol_version()  # makes liblsl read its configuration (once per process)
    discard_lsl_config(config_path)
    _quiet_brainflow(logging.getLogger().getEffectiveLevel() <= logging.DEBUG)
    try:
        people = [ParticipantInfo(label, ids.get(label, label), role_of.get(label, "participant")) for label in labels]
        source_id(study, dyad, "markers")  # validates the study and dyad ids
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    with ExitStack() as stack:
        try:
            sources = _make_sources(stack, labels, board, board_params, simulate, seed, study, dyad)
            bridges: list[BoardBridge] = []
            for person, source in zip(people, sources):
                bridge = BoardBridge(source, study=study, dyad=dyad, participant=person)
                err.print(
                    f"Opening {source.description.get('board', 'source')} for participant {person.label}...",
                    highlight=False,
                )
                stack.enter_context(bridge)
                bridges.append(bridge)
        except (SourceConfigError, pydantic.ValidationError, ValueError) as exc:
            err.print(f"[red]Bad board configuration:[/red] {_plain(exc)}", highlight=False)
            raise SystemExit(EXIT_BAD_CONFIG) from None
        except SourceError as exc:  # opened, but it would not stream (off, out of range, busy)
            err.print(f"[red]The board did not start:[/red] {exc}", highlight=False)
            raise SystemExit(EXIT_BAD_CONFIG) from None
        for bridge in bridges:
            err.print(f"{bridge.stream_name}: source_id {bridge.source_id}", highlight=False)
        until = f"for {duration:g} s" if duration else "until Ctrl+C"
        err.print(f"Streaming {until}.", highlight=False)
        _show_status_until_stopped(bridges, duration, err)
    for bridge in bridges:
        status = bridge.status
        click.echo(
            f"{status.stream_name}: {status.samples} samples, {status.dropped_packets} dropped packets, "
            f"{status.reconnects} reconnects, {status.lost_markers} lost markers; board released."
        )


def _make_sources(
    stack: ExitStack,
    labels: Sequence[str],
    board: str,
    board_params: Sequence[str],
    simulate: bool,
    seed: int | None,
    study: str,
    dyad: str,
) -> list[Any]:
    if simulate:
        from dyadlab.acquisition.simulator import CoupledDyadSimulator
        from dyadlab.acquisition.streams import source_id

        simulator = CoupledDyadSimulator(seed=seed)
        stack.callback(simulator.close)
        simulator.follow_markers(source_id(study, dyad, "markers"))
        by_label = dict(zip(PARTICIPANTS, simulator.sources))
        return [by_label[label] for label in labels]
    from dyadlab.acquisition.brainflow_source import BoardSpec, BrainFlowSource

    params = split_board_params(board_params, labels)
    return [BrainFlowSource(BoardSpec.from_cli(board, params[label]), participant=label) for label in labels]


def _plain(exc: Exception) -> str:
    """An exception's message without pydantic's URL footer."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in errors())
    return str(exc)


def _show_status_until_stopped(bridges: Sequence[BoardBridge], duration: float | None, console: Console) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    with (
        StopOnSignal() as stop,
        Live(status_table([b.status for b in bridges]), console=console, refresh_per_second=4, transient=False) as live,
    ):
        while not stop.event.wait(0.5):
            live.update(status_table([b.status for b in bridges]))
            if deadline is not None and time.monotonic() >= deadline:
                break
        live.update(status_table([b.status for b in bridges]))
