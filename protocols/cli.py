"""The ``dyadlab`` command line.

Sub-commands are imported only when called, so that ``dyadlab inspect`` starts in a fraction of
a second and never imports PsychoPy or BrainFlow.
"""

from __future__ import annotations

import importlib
import logging

import click

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "record": "acquisition.cli.record_command:record",
    "inspect": "acquisition.cli.inspect_command:inspect",
    "stream": "acquisition.cli.stream_command:stream",
    "preflight": "acquisition.cli.preflight_command:preflight",
    "check": "synchrony.cli:check",
    "group": "synchrony.group_command:group",
    "run": "protocols.commands:run",
    "demo": "protocols.commands:demo",
    "validate": "protocols.commands:validate",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="dyadlab")
def main(verbose: int) -> None:
    """dyadlab: run, record and check EEG hyperscanning sessions."""
    from rich.logging import RichHandler

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True
    )
