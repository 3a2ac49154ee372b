"""Separate network hosts on one machine: Linux network namespaces joined by a hub.

:class:`TestNetwork` builds a private IPv4 subnet (``10.<x>.<y>.0/24``): a "switch" namespace
running :mod:`tests.integration.delay_hub` (a layer-2 hub in user space that can delay each
host's traffic), and one namespace per host, each joined to the hub by a veth pair whose host
end is called ``eth0``. Nothing touches the machine's own network namespace, so the test cannot
disturb the machine's network, and the machine's LSL streams cannot reach the hosts.

Each host gets its own UTS namespace too (``unshare --uts`` + ``hostname``), so a stream's
``hostname`` in its LSL info says which host published it. Processes are started with
``ip netns exec``; the X server of the session is reachable from every namespace through its Unix
socket (``/tmp/.X11-unix``), a file, not a network address.

A host's link gets a delay per direction from the hub (:meth:`TestNetwork.delay`; ``tc netem``
would do the same in the kernel, but its module is missing on many machines and containers), and
is unplugged by setting the switch side of its veth pair down (:meth:`TestNetwork.set_link`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: The repository root, from which ``python -m tests.integration...`` finds this package.
REPOSITORY = Path(__file__).resolve().parents[2]


def namespaces_unavailable() -> str | None:
    """Why this machine cannot build the test network, or ``None`` when it can."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "building network namespaces needs root (run the suite as root, e.g. in CI's container)"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (iproute2 / util-linux)"
    probe = f"dlprobe{uuid.uuid4().hex[:6]}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"'ip netns add' fails here ({added.stderr.strip() or 'no network namespace support'})"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


@dataclass(frozen=True)
class Host:
    """One host of the test network."""

    name: str
    namespace: str
    address: str
    #: The switch-side end of the host's veth pair (its egress is what the host receives).
    switch_port: str


class TestNetwork:
    """A private subnet of hosts, removed on :meth:`close` (also after a failure).

    Parameters
    ----------
    host_names : sequence of str
        Short names ("amp", "stim"...); each becomes a namespace and a hostname.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, host_names: Sequence[str]) -> None:
        token = uuid.uuid4().hex[:6]
        self.token = token
        self.switch = f"dl{token}sw"
        octets = int(token[:4], 16)
        self.subnet = f"10.{200 + octets % 50}.{(octets >> 6) % 250}"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._hub: subprocess.Popen[bytes] | None = None
        try:
            self._add_namespace(self.switch)
            self._ip(self.switch, "link", "set", "lo", "up")
            for number, name in enumerate(host_names, start=1):
                self._add_host(name, number)
            ports = [host.switch_port for host in self.hosts.values()]
            self._hub = subprocess.Popen(
                ["ip", "netns", "exec", self.switch, sys.executable, "-m", "tests.integration.delay_hub", *ports],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPOSITORY,
            )
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, namespace: str) -> None:
        _run(["ip", "netns", "add", namespace])
        self._namespaces.append(namespace)

    def _ip(self, namespace: str, *args: str) -> None:
        _run(["ip", "-n", namespace, *args])

    def _add_host(self, name: str, number: int) -> None:
        namespace = f"dl{self.token}{name.replace('-', '')[:6]}"
        port = f"v{self.token}{number}"
        self._add_namespace(namespace)
        # Created in the switch namespace, so no interface ever appears in the machine's own.
        self._ip(self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._ip(self.switch, "link", "set", port, "up")
        address = f"{self.subnet}.{number}"
        self._ip(namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        self._ip(namespace, "link", "set", "eth0", "up")
        self._ip(namespace, "link", "set", "lo", "up")
        # The hub copies frames as they are: the host must send them complete (checksums filled
        # in, no segmentation left to the network card).
        _run(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                sys.executable,
                "-m",
                "tests.integration.delay_hub",
                "--plain-checksums",
                "eth0",
            ],
            cwd=REPOSITORY,
        )
        self.hosts[name] = Host(name=name, namespace=namespace, address=address, switch_port=port)

    # -- processes ---------------------------------------------------------------------------
    def hostname(self, name: str) -> str:
        """The host's hostname (what LSL writes into its streams' ``hostname``)."""
        return f"{name}-{self.token}"

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on host ``name``: its network namespace, its own hostname."""
        host = self.hosts[name]
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "sh", "-c", script, self.hostname(name)] + [
            *argv
        ]

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on host ``name`` with ``env``; stdout and stderr go to ``log``."""
        handle = log.open("wb")
        try:
            return subprocess.Popen(
                self.command(name, argv), env=dict(env), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd
            )
        finally:
            handle.close()  # the child has its own copy of the descriptor

    # -- links ---------------------------------------------------------------------------------
    def delay(self, name: str, *, send_ms: float = 0.0, receive_ms: float = 0.0) -> None:
        """Delay what host ``name`` sends by ``send_ms`` and what it receives by ``receive_ms``."""
        self._hub_command(f"delay {self.hosts[name].switch_port} {send_ms:g} {receive_ms:g}")

    def _hub_command(self, line: str) -> None:
        hub = self._hub
        assert hub is not None and hub.stdin is not None and hub.stdout is not None
        hub.stdin.write(line.encode() + b"\n")
        hub.stdin.flush()
        answer = hub.stdout.readline()
        if answer.strip() != b"ok":
            raise RuntimeError(f"the test network's hub did not accept {line!r} (exit code {hub.poll()})")

    def set_link(self, name: str, up: bool) -> None:
        """Unplug (``up=False``) or plug back in host ``name``'s cable (the switch side of its pair)."""
        self._ip(self.switch, "link", "set", self.hosts[name].switch_port, "up" if up else "down")

    def close(self) -> None:
        """Stop the hub, delete every namespace (their interfaces go with them); idempotent."""
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.kill()
            hub.wait(5)
        while self._namespaces:
            namespace = self._namespaces.pop()
            result = subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, text=True)
            if result.returncode != 0:
                logger.warning("could not delete network namespace %s: %s", namespace, result.stderr.strip())

    def __enter__(self) -> TestNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(argv: Sequence[str], cwd: Path | None = None) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
