"""``dyadlab export``: hyperscanning XDF recordings to EEG-BIDS (one recording per participant)."""

from __future__ import annotations

from pathlib import Path

import click

from dyadlab.cli_support import user_errors


@click.command("export")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--bids-root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The BIDS dataset's root folder (created if needed; may hold other sessions already).",
)
@click.option("--session", default=None, help="Session label (ses-); default: the file header's session.")
@click.option("--task", default=None, help="Task label (task-); default: the file's protocol, else 'hyperscanning'.")
@click.option("--subject-a", default=None, help="Subject label of participant A (default: the id in the file).")
@click.option("--subject-b", default=None, help="Subject label of participant B (default: the id in the file).")
@click.option(
    "--eeg",
    multiple=True,
    metavar="NAME_OR_SOURCE_ID",
    help="Participant A's, then B's EEG stream, when the file does not say (give it twice).",
)
@click.option("--overwrite", is_flag=True, help="Replace recordings already in the dataset.")
def export(
    files: tuple[Path, ...],
    bids_root: Path,
    session: str | None,
    task: str | None,
    subject_a: str | None,
    subject_b: str | None,
    eeg: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write XDF FILES as EEG-BIDS under --bids-root (BrainVision, events.tsv from the markers).

    Each participant becomes a BIDS subject with their own recording; participants.tsv and
    scans.tsv say who was recorded with whom (dyad, role, partner). See docs/export.md.
    """
    from dyadlab.synchrony.export import write_bids

    if (subject_a or subject_b) and len(files) > 1:
        raise click.UsageError("--subject-a/--subject-b name the people of one file; export one file at a time.")
    subjects = {label: name for label, name in (("A", subject_a), ("B", subject_b)) if name}
    for path in files:
        with user_errors(FileExistsError):
            written = write_bids(
                path,
                bids_root,
                session=session,
                task=task,
                subjects=subjects,
                eeg=eeg or None,
                overwrite=overwrite,
            )
        for recording in written:
            click.echo(
                f"{path.name}: participant {recording.label} -> {recording.path.fpath} "
                f"({recording.n_events} events; partner sub-{recording.partner})"
            )
