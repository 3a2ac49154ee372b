"""Measure liblsl's clock offset and round-trip time to one stream's host (run on another host).

``python -m tests.integration.clock_probe SOURCE_ID --seconds S`` resolves the stream (with the
``lsl_api.cfg`` of ``$LSLAPICFG``: SessionID, KnownPeers), opens an inlet and asks liblsl for its
time correction every 0.5 s, printing one JSON object per line on stdout:
``{"offset": s, "rtt": s, "address": "10.x.y.z"}``.

liblsl's estimate is NTP-like: a probe sent at ``t0`` (local clock) is answered with the remote
clock's receive and send times ``t1``, ``t2`` and arrives back at ``t3``; liblsl keeps the probe
with the smallest round trip ``rtt = (t3 - t0) - (t2 - t1)`` and reports
``offset = ((t0 - t1) + (t3 - t2)) / 2`` (local minus remote). ``lsl_time_correction_ex`` returns
that offset and, as its "uncertainty", that ``rtt``; pylsl only wraps the offset, so the C function
is called here directly.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
import time

import pylsl
from pylsl.lib import lib


def measure(inlet: pylsl.StreamInlet) -> tuple[float, float]:
    """``(offset, rtt)`` of liblsl's latest estimate for ``inlet``."""
    remote_time = ctypes.c_double()
    uncertainty = ctypes.c_double()
    error = ctypes.c_int32()
    lib.lsl_time_correction_ex.restype = ctypes.c_double
    lib.lsl_time_correction_ex.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_double),
        ctypes.POINTER(ctypes.c_double),
        ctypes.c_double,
        ctypes.POINTER(ctypes.c_int32),
    ]
    offset = lib.lsl_time_correction_ex(
        inlet.obj, ctypes.byref(remote_time), ctypes.byref(uncertainty), 5.0, ctypes.byref(error)
    )
    if error.value:
        raise RuntimeError(f"lsl_time_correction_ex failed with code {error.value}")
    return float(offset), float(uncertainty.value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_id")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    found = pylsl.resolve_byprop("source_id", args.source_id, minimum=1, timeout=10.0)
    if not found:
        print(json.dumps({"error": f"no stream {args.source_id}"}), flush=True)
        return 1
    address = re.search(r"<v4address>([^<]*)</v4address>", found[0].as_xml())
    inlet = pylsl.StreamInlet(found[0])
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        offset, rtt = measure(inlet)
        print(json.dumps({"offset": offset, "rtt": rtt, "address": address.group(1) if address else None}), flush=True)
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
