"""Measurements shared by the benchmarks: peak memory of a fresh process, and running a
benchmark's own module as such a process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process. Linux's ru_maxrss survives fork+exec (a child
    inherits the parent's peak), so VmHWM of the new address space is read where it exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss_mb() -> float:
    """Resident memory of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024.0
    raise OSError("no /proc/self/status")


def run_child(module: str, *args: str) -> dict:
    """``python -m MODULE --child ARGS`` in a fresh interpreter; its last stdout line, as JSON."""
    command = [sys.executable, "-m", module, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
