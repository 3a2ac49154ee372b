"""The command-line options of the quick-check that ``dyadlab check``, ``dyadlab group`` and
``dyadlab study analyze`` share, defined once so that they mean and default the same everywhere.

Each is a click decorator (``@cli_options.bands``); those whose help depends on the command take
it as an argument (``@cli_options.seed("Seed of every random draw.")``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

CommandT = TypeVar("CommandT", bound=Callable[..., Any])

bands = click.option(
    "--bands",
    default=None,
    metavar="NAME=LOW-HIGH,...",
    help="Frequency bands, e.g. 'theta=4-7,alpha=8-12' (default theta, alpha, beta, gamma).",
)

epoch_length = click.option(
    "--epoch-length", default=2.0, show_default=True, type=click.FloatRange(min=0.25), help="Epoch length in seconds."
)

no_progress = click.option("--no-progress", is_flag=True, help="No progress bar.")


def outputs(
    json_help: str = "Write the JSON report here.", report_help: str = "Write the self-contained HTML report here."
) -> Callable[[CommandT], CommandT]:
    """``--json`` (``json_out``) and ``--report`` (``html_out``): where the JSON and HTML reports go."""

    def decorate(command: CommandT) -> CommandT:
        # click lists options in the reverse order of application: --report first gives --json, --report.
        command = click.option(
            "--report", "html_out", type=click.Path(dir_okay=False, path_type=Path), help=report_help
        )(command)
        return click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help=json_help)(
            command
        )

    return decorate


def surrogates(help_text: str) -> Callable[[CommandT], CommandT]:
    """``--surrogates`` (``n_surrogates``): surrogates per condition, 200 by default, 0 for none."""
    return click.option(
        "--surrogates",
        "n_surrogates",
        default=200,
        show_default=True,
        type=click.IntRange(min=0),
        help=help_text,
    )


def seed(help_text: str) -> Callable[[CommandT], CommandT]:
    """``--seed``: the seed of the command's random draws, 0 by default."""
    return click.option("--seed", default=0, show_default=True, type=int, help=help_text)


def print_output_paths(console: Any, json_out: Path | None, html_out: Path | None) -> None:
    """Say on ``console`` (a rich Console) where the JSON and HTML reports were written."""
    for kind, path in (("JSON", json_out), ("HTML report", html_out)):
        if path is not None:
            console.print(f"{kind}: {path}")
