"""``dyadlab monitor``: serve the live dyad monitor until Ctrl-C."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import signal
import socket
import webbrowser
from pathlib import Path

import click

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def needs_token(host: str) -> bool:
    """Whether ``host`` can be reached from other machines (then the page needs a token)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to a network interface
        return True


def page_url(host: str, port: int, token: str | None) -> str:
    """The address to open: a wildcard host is shown as this machine's name."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def _serve(app: object, host: str, port: int, token: str | None, open_browser: bool) -> None:
    from aiohttp import web

    assert isinstance(app, web.Application)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise click.ClickException(
            f"Cannot listen on {host}:{port} ({error.strerror or error}): another program uses the port; "
            "choose another with --port (--port 0 takes any free one)."
        ) from error
    bound_port = int(runner.addresses[0][1])
    url = page_url(host, bound_port, token)
    click.echo("The dyad monitor is at:")
    click.echo(url)
    click.echo("Ctrl-C stops it (the recording goes on).", err=True)
    if open_browser:
        webbrowser.open(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port (0: any free one)."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback (e.g. 0.0.0.0 for the lab network) needs the printed token.",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the address.")
@click.option(
    "--session-id", default=None, help="LSL SessionID of the session to watch (default: this machine's lsl_api.cfg)."
)
@click.option("--source-id", "source_ids", multiple=True, help="Watch the stream with this source_id (repeatable).")
@click.option("--name", "names", multiple=True, help="Watch the stream with this name (repeatable).")
@click.option(
    "--recording",
    type=click.Path(path_type=Path),
    default=None,
    help="The session's XDF file or folder: the recorder panel shows its size and the free disk.",
)
@click.option("--mains", type=click.Choice(["50", "60"]), default=None, help="Mains frequency (default: detected).")
def monitor(
    port: int,
    host: str,
    no_browser: bool,
    session_id: str | None,
    source_ids: tuple[str, ...],
    names: tuple[str, ...],
    recording: Path | None,
    mains: str | None,
) -> None:
    """Watch a session's streams live in the browser: both participants' traces and channel quality,
    markers and block, recorder, live synchrony.

    A pure LSL reader in its own process: stopping it, or closing the page, never touches the
    recording. With no --source-id / --name it watches every EEG, AUX, marker and synchrony
    stream of the LSL SessionID.
    """
    if session_id is not None:
        from dyadlab.acquisition.lslconfig import LslConfig, LslConfigError, apply_lsl_config

        try:
            apply_lsl_config(LslConfig(session_id=session_id))
        except LslConfigError as error:
            raise click.BadParameter(str(error), param_hint="--session-id") from error
    # Imported after the LSL configuration: liblsl reads it at the first LSL call.
    from dyadlab.protocols.monitor.lslwatch import LslWatcher, StreamSelection
    from dyadlab.protocols.monitor.server import build_app

    token = secrets.token_urlsafe(16) if needs_token(host) else None
    watcher = LslWatcher(
        StreamSelection(source_ids=source_ids, names=names),
        line_freq=None if mains is None else float(mains),
        recording=recording,
    )
    with watcher:
        asyncio.run(_serve(build_app(watcher, token), host, port, token, not no_browser))
