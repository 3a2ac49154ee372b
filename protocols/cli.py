"""The ``dyadlab`` command line.

Sub-commands are imported only when called, so that ``dyadlab inspect`` starts in a fraction of
a second and never imports PsychoPy or BrainFlow.
"""

from __future__ import annotations

import importlib
import logging

import click

from dyadlab import DyadlabError
from dyadlab.cli_support import EXIT_BUG, UserError, report_bug

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "record": "dyadlab.acquisition.cli.record_command:record",
    "inspect": "dyadlab.acquisition.cli.inspect_command:inspect",
    "stream": "dyadlab.acquisition.cli.stream_command:stream",
    "preflight": "dyadlab.acquisition.cli.preflight_command:preflight",
    "check": "dyadlab.synchrony.cli:check",
    "group": "dyadlab.synchrony.group_command:group",
    "study": "dyadlab.protocols.study_command:study",
    "export": "dyadlab.synchrony.export_command:export",
    "run": "dyadlab.protocols.commands:run",
    "demo": "dyadlab.protocols.commands:demo",
    "validate": "dyadlab.protocols.commands:validate",
    "repair": "dyadlab.protocols.commands:repair",
    "preview": "dyadlab.protocols.lab_commands:preview",
    "new-paradigm": "dyadlab.protocols.lab_commands:new_paradigm",
    "monitor": "dyadlab.protocols.monitor.command:monitor",
    "live-synchrony": "dyadlab.protocols.live_synchrony:live_synchrony",
    "live-speech": "dyadlab.protocols.live_speech:live_speech",
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

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DyadlabError as error:  # a command that did not say it itself
            raise UserError(str(error)) from error
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as error:  # any other exception is a bug: say so and keep the traceback
            log = report_bug(error)
            click.echo(
                f"dyadlab stopped on a bug ({type(error).__name__}: {error}). The traceback is in {log}; "
                "please report it with that file.",
                err=True,
            )
            ctx.exit(EXIT_BUG)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="dyadlab")
def main(verbose: int) -> None:
    """dyadlab: run, record and check EEG hyperscanning sessions."""
    from rich.logging import RichHandler

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True)
