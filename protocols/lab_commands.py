"""``dyadlab preview`` and ``dyadlab new-paradigm``: what a lab uses to write and review its paradigms.

``dyadlab preview PROTOCOL --out DIR`` walks every block of the protocol (in the counterbalanced
order of its dyad and session) in review mode: each screen is drawn for one frame and saved, for
each participant (``<block folder>/<task>_<screen>_A.png`` and ``_B.png``). No EEG device, no
recording, no key presses are needed; a virtual display is started when there is no screen.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import click

from dyadlab.protocols.schema import LoadedProtocol, load_protocol, paradigms, plan_session, resolve_block_params

logger = logging.getLogger(__name__)


def preview_protocol(loaded: LoadedProtocol, out_dir: Path) -> list[Path]:
    """Save every screen of every block of ``loaded`` for both participants; returns the PNGs.

    The protocol's screen layout is kept (a shared screen is saved once per participant, as
    each sees it); windows are not full screen and both open on screen 0.

    Parameters
    ----------
    loaded : LoadedProtocol
    out_dir : Path
        One folder per block, ``<position>-<block id>``, is written here.
    """
    from dyadlab.tasks.sandbox import sandbox_context

    protocol = loaded.protocol
    plan = plan_session(protocol)
    people = sorted(protocol.participants, key=lambda person: plan.labels[person.id])
    roles = {plan.labels[person.id]: person.role for person in people}
    screens = protocol.screens
    display = screens.model_copy(
        update={
            "fullscreen": False,
            "check_timing": False,
            "screens": [0] if screens.layout == "shared" else [0, 0],
            "max_frame_rate": 60.0,
        }
    )
    registry = paradigms()
    ids = protocol.block_ids()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="dyadlab-preview-") as scratch:  # the CSV of nobody's responses
        with sandbox_context(
            Path(scratch), participants=roles, display=display, keys=protocol.keys, preview=True
        ) as ctx:
            for position, index in enumerate(plan.block_order, start=1):
                block = protocol.blocks[index]
                paradigm = registry[block.task]
                params = paradigm.Params.model_validate(resolve_block_params(block, paradigm))
                ctx.screenshots_into(out_dir / f"{position:02d}-{ids[index]}")
                paradigm().run(ctx, params, ids[index])
    written = sorted(out_dir.rglob("*.png"))
    logger.info("Preview of %s: %d screenshots in %s", loaded.path, len(written), out_dir)
    return written


@click.command()
@click.argument("protocol")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the PNGs (one sub-folder per block).",
)
def preview(protocol: str, out: Path) -> None:
    """Save every screen of every block of PROTOCOL, as participant A and B see it, to PNG files."""
    from dyadlab.protocols.display import ensure_display

    loaded = load_protocol(protocol)
    with ensure_display(loaded.protocol.screens.size, keep_until_exit=True):
        written = preview_protocol(loaded, out)
    click.echo(f"{len(written)} screenshots of {len(loaded.protocol.blocks)} block(s) in {out}")


@click.command("new-paradigm")
@click.argument("name")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder of the lab's paradigms (not inside dyadlab).",
)
def new_paradigm(name: str, out: Path) -> None:
    """Write the example paradigm NAME, its test and a pilot protocol (see docs/paradigms.md)."""
    from dyadlab.protocols.new_paradigm import write_paradigm_scaffold

    written = write_paradigm_scaffold(name, out)
    for path in written:
        click.echo(f"wrote {path}")
    module = written[0].stem
    click.echo(
        f"Next: `xvfb-run -a python -m pytest {written[1].name}` in {out} (drop xvfb-run -a on a machine with a "
        f"screen), then `dyadlab run {written[2].name} --simulate --autopilot --speed 5` and "
        f"`dyadlab preview {written[2].name} --out preview-{module}`."
    )
