"""A network hub in user space that delays frames by a set time per host and direction.

The test network's hosts are joined by this hub instead of a kernel bridge because ``tc netem``
(the kernel's delay emulator) is not available on every machine (it needs the ``sch_netem``
module; containers often cannot load it). The hub is a real layer-2 hub: raw ``AF_PACKET``
sockets on the switch-side end of every host's veth pair, each Ethernet frame received from one
host is sent to every other host, after ``send_delay`` of the sender plus ``receive_delay`` of the
receiver. A host whose link is "down" neither sends nor receives anything (every frame to or from
it is dropped, as by an unplugged cable).

Run in the switch namespace: ``python -m tests.integration.delay_hub PORT...``. Commands on stdin,
one per line, each answered with ``ok`` on stdout once in force:

* ``delay PORT SEND_MS RECEIVE_MS``: delays for frames from / to the host on PORT;
* ``link PORT up|down``.

Frames are forwarded in order per pair of hosts (a pair's delay is constant between commands).
``python -m tests.integration.delay_hub --plain-checksums eth0`` (run on a host) makes the host
compute its checksums itself and send no frames longer than its MTU (transmit checksum and
segmentation offloads off), so that the frames the hub copies are complete Ethernet frames.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import itertools
import os
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SIOCETHTOOL = 0x8946
#: ``struct ethtool_value`` commands: transmit checksum, scatter-gather, TSO, GSO.
ETHTOOL_SET_OFFLOADS = (0x17, 0x19, 0x1F, 0x24)
MAX_FRAME = 65536


def plain_checksums(device: str) -> None:
    """Turn off ``device``'s transmit checksum and segmentation offloads (as ``ethtool -K``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        for command in ETHTOOL_SET_OFFLOADS:
            value = struct.pack("II", command, 0)
            buffer = bytearray(value)
            request = struct.pack("16sP", device.encode(), _address_of(buffer))
            fcntl.ioctl(control.fileno(), SIOCETHTOOL, request)


def _address_of(buffer: bytearray) -> int:
    import ctypes

    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class Hub:
    """Forward frames between ``ports`` with per-port delays (see the module docstring)."""

    def __init__(self, ports: list[str]) -> None:
        self.sockets: dict[str, socket.socket] = {}
        for port in ports:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((port, 0))
            sock.setblocking(False)
            self.sockets[port] = sock
        self.by_fd = {sock.fileno(): port for port, sock in self.sockets.items()}
        self.send_delay = dict.fromkeys(ports, 0.0)
        self.receive_delay = dict.fromkeys(ports, 0.0)
        self.up = dict.fromkeys(ports, True)
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.order = itertools.count()

    def command(self, line: str) -> None:
        words = line.split()
        if words[0] == "delay":
            port, send_ms, receive_ms = words[1], float(words[2]), float(words[3])
            self.send_delay[port] = send_ms / 1e3
            self.receive_delay[port] = receive_ms / 1e3
        elif words[0] == "link":
            self.up[words[1]] = words[2] == "up"
        else:
            raise ValueError(f"unknown command {line!r}")

    def receive(self, port: str) -> None:
        sock = self.sockets[port]
        while True:
            try:
                frame, address = sock.recvfrom(MAX_FRAME)
            except BlockingIOError:
                return
            except OSError:  # the port went down (cable unplugged): nothing to read now
                return
            if address[2] == PACKET_OUTGOING or not self.up[port]:
                continue  # our own copy of a frame we sent, or an unplugged host
            now = time.monotonic()
            for other in self.sockets:
                if other != port and self.up[other]:
                    due = now + self.send_delay[port] + self.receive_delay[other]
                    heapq.heappush(self.queue, (due, next(self.order), other, frame))

    def send_due(self) -> float | None:
        """Send every frame that is due; return seconds until the next one (None: nothing queued)."""
        while self.queue:
            due, _, port, frame = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                return wait
            heapq.heappop(self.queue)
            if self.up[port]:
                try:
                    self.sockets[port].send(frame)
                except OSError:
                    pass  # the port went down meanwhile: the frame is lost, as on a cable
        return None

    def serve(self, control: int) -> None:
        poller = select.poll()
        for fd in self.by_fd:
            poller.register(fd, select.POLLIN)
        poller.register(control, select.POLLIN)
        pending = b""
        while True:
            wait = self.send_due()
            events = poller.poll(None if wait is None else max(0.0, wait * 1e3))
            for fd, _ in events:
                if fd == control:
                    data = os.read(control, 4096)
                    if not data:
                        return
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        self.command(line.decode())
                        sys.stdout.write("ok\n")
                        sys.stdout.flush()
                else:
                    self.receive(self.by_fd[fd])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="+")
    parser.add_argument("--plain-checksums", action="store_true", help="configure these devices instead of hubbing")
    args = parser.parse_args(argv)
    if args.plain_checksums:
        for device in args.ports:
            plain_checksums(device)
        return 0
    Hub(args.ports).serve(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
