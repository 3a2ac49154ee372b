"""LSL configuration for one experiment: SessionID, resolve scope and peers.

liblsl reads its configuration once per process, at the first LSL call, from the first source
it finds (``$LSLAPICFG``, ``./lsl_api.cfg``, ``~/lsl_api/lsl_api.cfg``,
``/etc/lsl_api/lsl_api.cfg``; files are never merged). :func:`apply_lsl_config` therefore copies
the configuration in force, overrides only the settings dyadlab was given, writes the result to
a private ``lsl_api.cfg`` and points ``LSLAPICFG`` at it, so the setting also reaches every
subprocess started afterwards while the lab's other settings (KnownPeers, multicast, ports...)
stay as they were.

By default dyadlab changes nothing: the machine's own ``lsl_api.cfg`` stays in force, so that
LabRecorder and every other LSL application on the lab's machines see the same streams. A lab
sets ``session_id`` (and, where multicast is blocked, ``known_peers``) per experiment; tests and
the demo use :meth:`LslConfig.local_only`, which keeps every stream on this machine.

What "local only" can and cannot do (liblsl 1.16-1.18): it confines *discovery* to this machine
(machine scope, queries to 127.0.0.1 only, the multicast responder bound to 127.0.0.1 through
``[multicast] ListenAddress``), so no other machine finds the streams by resolving. liblsl has no
setting that binds an outlet's own sockets: each outlet's TCP data server and UDP time server
listen on every interface (``0.0.0.0``, ports from 16572 up), so a machine that can reach this
one and guesses the port can still connect. :func:`local_only_exposure` says so at the start of
``dyadlab stream --local-only`` and of a local-only ``dyadlab run``; ``docs/protocols.md`` shows
how a lab keeps EEG off the network (a firewall rule, or an isolated interface).

The private configuration file is removed when the process exits (:func:`discard_lsl_config`
removes it earlier), so runs leave no ``dyadlab-lsl-*`` folders behind (except after
``kill -9``).
"""

from __future__ import annotations

import atexit
import configparser
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from dyadlab import DyadlabError

logger = logging.getLogger(__name__)

RESOLVE_SCOPES = ("machine", "link", "site", "organization", "global")
LOOPBACK_PORT_RANGE = 1024
#: liblsl's first data/time port ([ports] BasePort) and multicast port ([ports] MulticastPort).
LSL_BASE_PORT = 16572
LSL_MULTICAST_PORT = 16571
_SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: A KnownPeers entry: a host name or an IPv4/IPv6 address (nothing that could end the
#: ``{...}`` list or the line in lsl_api.cfg).
_PEER_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-%\[\]]{1,253}$")


class LslConfigError(DyadlabError, ValueError):
    """An LSL configuration value that liblsl would not accept or that cannot be applied."""


@dataclass(frozen=True)
class LslConfig:
    """The LSL settings dyadlab may override for one experiment.

    Parameters
    ----------
    session_id : str | None
        LSL ``[lab] SessionID``. Streams of a different SessionID are invisible to each other, so
        two rooms on one network do not record each other. Both PCs of a dyad need the same one.
    resolve_scope : str | None
        ``[multicast] ResolveScope``: one of ``machine``, ``link``, ``site``, ``organization``,
        ``global``.
    known_peers : tuple of str
        ``[lab] KnownPeers``: addresses queried by unicast where multicast is blocked.
    ipv6 : str | None
        ``[ports] IPv6``: ``allow``, ``disable`` or ``force``.
    loopback_only : bool
        Restrict discovery to 127.0.0.1 (used with ``resolve_scope="machine"``). Discovery then
        goes by unicast to each port of the port range, so the range is widened to
        ``LOOPBACK_PORT_RANGE``: with liblsl's default 32 ports, the 33rd outlet on the machine
        takes a random port and cannot be found.
    """

    session_id: str | None = None
    resolve_scope: str | None = None
    known_peers: tuple[str, ...] = field(default_factory=tuple)
    ipv6: str | None = None
    loopback_only: bool = False

    def __post_init__(self) -> None:
        if self.session_id is not None and not _SESSION_ID_PATTERN.match(self.session_id):
            raise LslConfigError(
                f"LSL SessionID {self.session_id!r} is invalid: use 1-64 letters, digits, '.', '_' or '-'."
            )
        if self.resolve_scope is not None and self.resolve_scope not in RESOLVE_SCOPES:
            raise LslConfigError(
                f"LSL resolve scope {self.resolve_scope!r} is invalid: choose one of {', '.join(RESOLVE_SCOPES)}."
            )
        for peer in self.known_peers:
            if not isinstance(peer, str) or not _PEER_PATTERN.match(peer):
                raise LslConfigError(f"LSL KnownPeers entry {peer!r} is not a host name or IP address.")
        if self.ipv6 is not None and self.ipv6 not in ("allow", "disable", "force"):
            raise LslConfigError(f"LSL IPv6 setting {self.ipv6!r} is invalid: allow, disable or force.")

    @classmethod
    def local_only(cls, session_id: str) -> LslConfig:
        """Everything on this machine only: for tests, demos and single-PC pilots."""
        return cls(
            session_id=session_id,
            resolve_scope="machine",
            known_peers=("127.0.0.1",),
            ipv6="disable",
            loopback_only=True,
        )

    @property
    def overrides_anything(self) -> bool:
        """Whether this configuration changes anything from the machine's own ``lsl_api.cfg``."""
        return any((self.session_id, self.resolve_scope, self.known_peers, self.ipv6, self.loopback_only))

    def overrides(self) -> dict[str, dict[str, str]]:
        """The ``lsl_api.cfg`` settings this configuration sets, by section."""
        sections: dict[str, dict[str, str]] = {"ports": {}, "multicast": {}, "lab": {}}
        if self.ipv6:
            sections["ports"]["IPv6"] = self.ipv6
        if self.loopback_only:
            sections["ports"]["PortRange"] = str(LOOPBACK_PORT_RANGE)
            # Never a random port outside the range: the firewall rule of docs/protocols.md
            # ("Local only") then covers every port an outlet opens.
            sections["ports"]["AllowRandomPorts"] = "0"
        if self.resolve_scope:
            sections["multicast"]["ResolveScope"] = self.resolve_scope
        if self.loopback_only:
            sections["multicast"]["AddressesOverride"] = "{127.0.0.1}"
            sections["multicast"]["Interfaces"] = "{127.0.0.1}"
            # The multicast responder (UDP 16571) on loopback; liblsl binds nothing else by it.
            sections["multicast"]["ListenAddress"] = "127.0.0.1"
        if self.known_peers:
            sections["lab"]["KnownPeers"] = "{" + ", ".join(self.known_peers) + "}"
        if self.session_id:
            sections["lab"]["SessionID"] = self.session_id
        return {name: values for name, values in sections.items() if values}

    def to_cfg_text(self, base: str = "") -> str:
        """The ``lsl_api.cfg`` text: ``base`` (a configuration's text) with these settings applied."""
        parser = _cfg_parser()
        if base:
            parser.read_string(base)
        for section, values in self.overrides().items():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, value)
        blocks = []
        for section in parser.sections():
            lines = [f"{key} = {value}" for key, value in parser.items(section)]
            blocks.append(f"[{section}]\n" + "\n".join(lines))
        return "\n\n".join(blocks) + "\n"


class _CaseSensitiveParser(configparser.ConfigParser):
    """Keeps keys as written: liblsl's keys are case-sensitive (ConfigParser lowercases them)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _cfg_parser() -> configparser.ConfigParser:
    return _CaseSensitiveParser(strict=False, interpolation=None)


def config_in_force() -> Path | None:
    """The ``lsl_api.cfg`` liblsl loads in this process (the first readable one), or ``None``."""
    candidates = [os.environ.get("LSLAPICFG"), "lsl_api.cfg", "~/lsl_api/lsl_api.cfg", "/etc/lsl_api/lsl_api.cfg"]
    for candidate in candidates:
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_file() and os.access(path, os.R_OK):
                return path
    return None


def session_id_in_force() -> str:
    """The LSL ``SessionID`` of this process (``default`` without one), read as liblsl reads it."""
    path = config_in_force()
    if path is None:
        return "default"
    parser = _cfg_parser()
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except (configparser.Error, OSError):
        return "default"
    return parser.get("lab", "SessionID", fallback="default").strip() or "default"


#: Folders :func:`apply_lsl_config` created (removed at exit or by :func:`discard_lsl_config`).
_CREATED: dict[Path, str | None] = {}  # config file -> LSLAPICFG before it
_CREATED_LOCK = threading.Lock()


def _remove_created() -> None:
    with _CREATED_LOCK:
        paths = list(_CREATED)
        _CREATED.clear()
    for path in paths:
        shutil.rmtree(path.parent, ignore_errors=True)


atexit.register(_remove_created)


def discard_lsl_config(path: Path | None) -> None:
    """Remove a configuration :func:`apply_lsl_config` wrote in a temporary folder, and point
    ``LSLAPICFG`` back where it pointed before (liblsl in this process keeps what it read).

    A no-op for ``None``, for a file it did not create, or for one already removed.
    """
    if path is None:
        return
    with _CREATED_LOCK:
        if path not in _CREATED:
            return
        previous = _CREATED.pop(path)
    if os.environ.get("LSLAPICFG") == str(path):
        if previous is None:
            os.environ.pop("LSLAPICFG", None)
        else:
            os.environ["LSLAPICFG"] = previous
    shutil.rmtree(path.parent, ignore_errors=True)


def local_only_ports() -> tuple[int, int]:
    """The first and last port a local-only configuration lets liblsl open."""
    return LSL_MULTICAST_PORT, LSL_BASE_PORT + LOOPBACK_PORT_RANGE - 1


def local_only_exposure() -> str:
    """What a local-only LSL configuration still exposes to the network (a warning for operators)."""
    first, last = local_only_ports()
    return (
        "local only: LSL discovery stays on this machine, but liblsl still opens each outlet's TCP data port "
        f"and UDP time port on every network interface (0.0.0.0, ports {LSL_BASE_PORT}-{last}); a machine that "
        "can reach this one can connect to them and read the EEG. To keep EEG off the network, block TCP and "
        f"UDP ports {first}-{last} for other hosts (docs/protocols.md, 'Local only') or disconnect this PC "
        "from other networks."
    )


def apply_lsl_config(config: LslConfig, directory: Path | None = None) -> Path | None:
    """Make ``config`` the LSL configuration of this process and of its future subprocesses.

    The configuration in force (see :func:`config_in_force`) is kept and only the settings
    ``config`` gives are overridden. It takes effect only if this process has made no LSL call
    yet (liblsl reads its configuration once); subprocesses started afterwards always get it.

    Parameters
    ----------
    config : LslConfig
        The settings. One that overrides nothing leaves the machine's configuration in force.
    directory : Path | None
        Where to write ``lsl_api.cfg``; a private temporary folder by default.

    Returns
    -------
    Path | None
        The configuration file written, or ``None`` when nothing was overridden. A file in a
        temporary folder (no ``directory``) is removed when the process exits, or earlier by
        :func:`discard_lsl_config`.
    """
    if not config.overrides_anything:
        logger.info("LSL: using this machine's own lsl_api.cfg")
        return None
    base_path = config_in_force()
    try:
        base = base_path.read_text(encoding="utf-8", errors="replace") if base_path else ""
        text = config.to_cfg_text(base)
    except (OSError, configparser.Error) as error:
        logger.warning("LSL: %s cannot be read (%s); dyadlab's settings replace it", base_path, error)
        text = config.to_cfg_text()
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="dyadlab-lsl-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lsl_api.cfg"
    path.write_text(text, encoding="utf-8")
    if directory is None:
        with _CREATED_LOCK:
            _CREATED[path] = os.environ.get("LSLAPICFG")
    os.environ["LSLAPICFG"] = str(path)
    logger.info(
        "LSL: configuration %s (SessionID=%s, scope=%s, based on %s)",
        path,
        config.session_id,
        config.resolve_scope,
        base_path or "liblsl defaults",
    )
    return path
