"""Which of the LSL ``KnownPeers`` answer: a preflight check for sessions across several PCs.

liblsl queries each known peer by unicast but never says which peers answered: a peer that is
switched off, has another address, or blocks LSL's ports simply contributes no streams, and the
session then fails later with "no stream found" (or, worse, runs without a PC it needed).
:func:`query_peers` asks every peer directly with LSL's own discovery query (the
``LSL:shortinfo`` request that liblsl's resolver sends) on the multicast port and every port of
the port range, for streams of any SessionID, and records which SessionIDs answered from each
peer's address; :func:`peer_problems` turns that into errors (no answer at all) and warnings
(streams of other SessionIDs only).

A peer answers only while it publishes at least one stream (liblsl's responders are the
outlets): a PC in ``known_peers`` that only records (a LabRecorder PC) never answers and does not
belong in a session's ``known_peers``.
"""

from __future__ import annotations

import configparser
import logging
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from dyadlab.acquisition.lslconfig import LSL_BASE_PORT, LSL_MULTICAST_PORT, config_in_force

logger = logging.getLogger(__name__)

#: liblsl's default ``[ports] PortRange``.
DEFAULT_PORT_RANGE = 32
#: How often the queries are sent within the timeout (UDP may lose one).
_QUERY_ROUNDS = 3
_SESSION_ID = re.compile(rb"<session_id>([^<]*)</session_id>")


@dataclass(frozen=True)
class PeerAnswer:
    """What one known peer answered to LSL's discovery query.

    Attributes
    ----------
    peer : str
        As listed in ``known_peers``.
    address : str | None
        Its IPv4 address (``None``: the name does not resolve on this PC).
    session_ids : frozenset of str
        The SessionIDs of the streams it answered with (empty: it did not answer).
    """

    peer: str
    address: str | None
    session_ids: frozenset[str]

    @property
    def shown(self) -> str:
        """The peer as listed, with its address when that is a name."""
        return self.peer if self.address in (None, self.peer) else f"{self.peer} ({self.address})"


def lsl_ports() -> tuple[int, int, int]:
    """``(multicast port, base port, port range)`` of the ``lsl_api.cfg`` in force (liblsl's
    defaults where it sets none)."""
    values = {"MulticastPort": LSL_MULTICAST_PORT, "BasePort": LSL_BASE_PORT, "PortRange": DEFAULT_PORT_RANGE}
    path = config_in_force()
    if path is not None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # liblsl's keys are case-sensitive
        try:
            parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
            for key in values:
                text = parser.get("ports", key, fallback="").strip()
                if text.isdigit():
                    values[key] = int(text)
        except (configparser.Error, OSError) as error:
            logger.warning("LSL: cannot read the ports of %s (%s); using liblsl's defaults", path, error)
    return values["MulticastPort"], values["BasePort"], values["PortRange"]


def query_peers(
    peers: Sequence[str],
    session_id: str,
    *,
    timeout: float = 3.0,
    ports: tuple[int, int, int] | None = None,
) -> list[PeerAnswer]:
    """Ask every peer for its LSL streams (of any SessionID) and say which SessionIDs answered.

    Returns as soon as every peer has answered with a stream of ``session_id``, otherwise after
    ``timeout`` seconds.

    Parameters
    ----------
    peers : sequence of str
        Host names or IPv4 addresses (the protocol's ``lsl: known_peers``).
    session_id : str
        The session's LSL SessionID.
    timeout : float
        Seconds to wait for the answers.
    ports : (multicast port, base port, port range), optional
        Where liblsl's responders listen; default: :func:`lsl_ports`.

    Returns
    -------
    list of PeerAnswer
        In the order of ``peers``.
    """
    multicast_port, base_port, port_range = ports or lsl_ports()
    targets = [multicast_port, *range(base_port, base_port + port_range)]
    addresses: dict[str, str | None] = {}
    for peer in peers:
        try:
            addresses[peer] = str(socket.getaddrinfo(peer, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0])
        except (socket.gaierror, UnicodeError) as error:
            logger.warning("LSL peer %s does not resolve on this PC: %s", peer, error)
            addresses[peer] = None
    heard: dict[str, set[str]] = {address: set() for address in addresses.values() if address is not None}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        query_id = str(uuid.uuid4().int % 10**9).encode()
        # "session_id" (the element exists) matches every stream: a peer streaming under another
        # SessionID answers too, and the answer says which.
        query = b"LSL:shortinfo\r\nsession_id\r\n%d %s\r\n" % (sock.getsockname()[1], query_id)
        deadline = time.monotonic() + timeout
        next_round = time.monotonic()
        while time.monotonic() < deadline and any(session_id not in ids for ids in heard.values()):
            if time.monotonic() >= next_round:
                for address, ids in heard.items():
                    if session_id in ids:
                        continue
                    for port in targets:
                        try:
                            sock.sendto(query, (address, port))
                        except OSError as error:  # no route to it: it cannot answer either
                            logger.debug("LSL query to %s:%d failed: %s", address, port, error)
                next_round = time.monotonic() + timeout / _QUERY_ROUNDS
            sock.settimeout(max(0.01, min(next_round, deadline) - time.monotonic()))
            try:
                data, (sender, _port) = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as error:  # an ICMP error from an earlier query: no answer from that one
                logger.debug("LSL query: %s", error)
                continue
            head, _, info = data.partition(b"\r\n")
            found = _SESSION_ID.search(info)
            if head.strip() == query_id and sender in heard and found:
                heard[sender].add(found.group(1).decode(errors="replace").strip())
    return [
        PeerAnswer(peer, address, frozenset(heard[address]) if address is not None else frozenset())
        for peer, address in addresses.items()
    ]


def peer_problems(answers: Sequence[PeerAnswer], session_id: str, timeout: float = 3.0) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` about the answers of :func:`query_peers`, one sentence each.

    An error: a peer that did not answer at all (switched off, wrong address, LSL's ports blocked)
    or whose name does not resolve. A warning: a peer that answered with streams of other
    SessionIDs only (another lab's PC on a shared list, or a PC set to the wrong SessionID).
    """
    multicast_port, base_port, port_range = lsl_ports()
    last = base_port + port_range - 1
    errors: list[str] = []
    warnings: list[str] = []
    for answer in answers:
        where = f"LSL peer {answer.shown} (lsl: known_peers)"
        if answer.address is None:
            errors.append(f"{where} is not a host name this PC knows: fix the name or give its IP address")
        elif not answer.session_ids:
            errors.append(
                f"{where} did not answer within {timeout:g} s. Check that it is switched on and streaming "
                "(dyadlab stream or the amplifier's LSL app), that the address is right, and that its firewall "
                f"lets UDP ports {multicast_port}-{last} and TCP ports {base_port}-{last} through; a PC that "
                "publishes no stream (a recording PC) does not belong in known_peers"
            )
        elif session_id not in answer.session_ids:
            others = ", ".join(sorted(answer.session_ids))
            warnings.append(
                f"{where} streams only under other LSL SessionIDs ({others}), none under this session's "
                f"{session_id!r}: if it should stream for this session, set its SessionID to {session_id!r}"
            )
    return errors, warnings
