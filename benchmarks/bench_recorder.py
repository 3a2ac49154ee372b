"""Recording benchmark: dyadlab's LslRecorder next to LabRecorder, same streams, same run.

Two 64-channel float32 streams at 1000 Hz plus a 4 Hz string marker stream are pushed by an
outlet process; two recorder processes (``LslRecorder`` and LabRecorder's own recording code
from the ``labrecorder`` package) record them at the same time. Every sample carries its index
in channel 0, so the files can be checked sample by sample.

Sequence: outlets ready -> both recorders started and subscribed -> outlets start numbering ->
record for ``--seconds`` -> the outlet process reports how many samples it had pushed (all of
them before the stop request) -> both recorders are asked to stop while the outlets keep pushing
-> files are read with pyxdf.

Reported per recorder: samples expected (pushed before the stop request), samples of those in
the file, lost (must be 0 for dyadlab), CPU seconds per second of recording (user+system of the
recorder process, from subscription to closed file), peak RSS, file size and time to stop.

Run: ``python -m benchmarks.bench_recorder [--quick] [--seconds S]``; writes
``benchmarks/results/recorder.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "recorder.json"
EEG_CHANNELS = 64
EEG_RATE = 1000.0
MARKER_RATE = 4.0
PUSH_BLOCK = 10  # samples per push_chunk: one every 10 ms


def _configure_lsl(session_id: str) -> None:
    """Confine LSL to this machine under a SessionID of this run only (before pylsl is used)."""
    from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config

    apply_lsl_config(LslConfig.local_only(session_id))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# -- child roles ---------------------------------------------------------------------------------


def _role_outlets(ids: list[str]) -> None:
    """Create the outlets; number samples from 0 once told "go"; report counts on "count"."""
    import numpy as np
    import pylsl

    eeg_ids, marker_id = ids[:2], ids[2]
    outlets = []
    for source_id in eeg_ids:
        info = pylsl.StreamInfo(source_id, "EEG", EEG_CHANNELS, EEG_RATE, "float32", source_id)
        info.set_channel_labels([f"ch{i}" for i in range(EEG_CHANNELS)])
        outlets.append(pylsl.StreamOutlet(info, chunk_size=PUSH_BLOCK))
    markers = pylsl.StreamOutlet(pylsl.StreamInfo(marker_id, "Markers", 1, 0, "string", marker_id))
    counts = [0, 0, 0]  # eeg 1, eeg 2, markers: samples pushed so far
    lock = threading.Lock()
    go, quit_ = threading.Event(), threading.Event()
    rng = np.random.default_rng(1)
    block = rng.standard_normal((PUSH_BLOCK, EEG_CHANNELS)).astype(np.float32) * 50.0

    def push() -> None:
        go.wait()
        start = time.monotonic()
        n_blocks = 0
        next_marker = start
        while not quit_.is_set():
            stamp = pylsl.local_clock()
            with lock:
                first = counts[0]
                block[:, 0] = np.arange(first, first + PUSH_BLOCK)
                for index, outlet in enumerate(outlets):
                    outlet.push_chunk(block, stamp)
                    counts[index] += PUSH_BLOCK
                if time.monotonic() >= next_marker:
                    markers.push_sample([json_marker(counts[2])], stamp)
                    counts[2] += 1
                    next_marker += 1.0 / MARKER_RATE
            n_blocks += 1
            delay = start + n_blocks * PUSH_BLOCK / EEG_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def json_marker(index: int) -> str:
        return json.dumps({"event": "tick", "code": index})

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            go.set()
        elif command == "count":
            with lock:
                print("counts", *counts, flush=True)
        elif command == "quit":
            break
    quit_.set()
    thread.join(5)
    time.sleep(0.5)  # let queued samples leave before the outlets are destroyed


def _role_recorder(kind: str, out: str, ids: list[str]) -> None:
    """Record ``ids`` into ``out`` with dyadlab or LabRecorder until "stop" on stdin."""
    import pylsl

    infos = [pylsl.resolve_bypred(f"source_id='{i}'", 1, 30.0)[0] for i in ids]
    if kind == "dyadlab":
        from dyadlab.acquisition.recorder import LslRecorder, StreamSelector

        recorder = LslRecorder(out, [StreamSelector(source_id=i) for i in ids])
        recorder.start()
    else:
        import labrecorder

        recorder = labrecorder.Recording(out, infos)
        time.sleep(1.0)  # its inlets open in its own threads
    cpu_start, wall_start = _cpu_seconds(), time.monotonic()
    print("ready", flush=True)
    sys.stdin.readline()
    stop_begin = time.monotonic()
    if kind == "dyadlab":
        recorder.stop()
    else:
        recorder.stop()  # a stop request: the file is finalized when the object is destroyed
        del recorder
        gc.collect()
    wall_end = time.monotonic()
    result = {
        "cpu_seconds": _cpu_seconds() - cpu_start,
        "wall_seconds": wall_end - wall_start,
        "stop_seconds": wall_end - stop_begin,
        "peak_rss_mb": _peak_rss_mb(),
    }
    print("result " + json.dumps(result), flush=True)


# -- orchestration -------------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_recorder", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=Path(__file__).resolve().parents[1],
    )


def _expect(process: subprocess.Popen, prefix: str, timeout: float = 60.0) -> str:
    box: list[str] = []

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith(prefix):
                box.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise RuntimeError(f"child {process.args} did not print {prefix!r} within {timeout} s")
    return box[0]


def _send(process: subprocess.Popen, line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def _count_in_file(path: Path, ids: list[str], expected: list[int]) -> dict[str, dict[str, int]]:
    import numpy as np
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    by_id = {s["info"]["source_id"][0]: s for s in streams}
    out = {}
    for source_id, n_expected in zip(ids, expected):
        stream = by_id.get(source_id)
        if stream is None:
            indices = np.array([], dtype=np.int64)
        elif isinstance(stream["time_series"], list):
            indices = np.array([json.loads(s[0])["code"] for s in stream["time_series"]], dtype=np.int64)
        else:
            indices = np.asarray(stream["time_series"])[:, 0].astype(np.int64)
        present = np.unique(indices[(indices >= 0) & (indices < n_expected)])
        missing = np.setdiff1d(np.arange(n_expected), present)
        out[source_id] = {
            "expected": n_expected,
            "in_file": int(present.size),
            "lost": int(missing.size),
            "total_in_file": int(indices.size),
            # where the losses are: at the start, at the stop, or in between
            "lost_index_range": [int(missing[0]), int(missing[-1])] if missing.size else None,
        }
    return out


def run(seconds: float) -> dict:
    session = f"dyadlab-bench-{uuid.uuid4().hex[:10]}"
    _configure_lsl(session)
    token = uuid.uuid4().hex[:6]
    ids = [f"bench-eeg-A-{token}", f"bench-eeg-B-{token}", f"bench-markers-{token}"]
    folder = Path(tempfile.mkdtemp(prefix="dyadlab-bench-recorder-"))
    files = {"dyadlab": folder / "dyadlab.xdf", "labrecorder": folder / "labrecorder.xdf"}
    import psutil

    outlets = _spawn(["--role", "outlets", "--ids", *ids])
    recorders: dict[str, subprocess.Popen] = {}
    try:
        _expect(outlets, "ready")
        for kind, path in files.items():
            recorders[kind] = _spawn(["--role", kind, "--out", str(path), "--ids", *ids])
        for process in recorders.values():
            _expect(process, "ready")
        _send(outlets, "go")
        time.sleep(seconds)
        _send(outlets, "count")
        expected = [int(v) for v in _expect(outlets, "counts").split()[1:]]
        for process in recorders.values():  # stop requests, both at once; outlets keep pushing
            _send(process, "stop")
        measured = {
            kind: json.loads(_expect(p, "result", timeout=120).split(" ", 1)[1]) for kind, p in recorders.items()
        }
        for process in recorders.values():
            process.wait(30)
    finally:
        if outlets.poll() is None:
            _send(outlets, "quit")
            try:
                outlets.wait(10)
            except subprocess.TimeoutExpired:
                outlets.kill()
        for process in recorders.values():
            if process.poll() is None:
                process.kill()
    results: dict = {
        "seconds": seconds,
        "streams": {
            "eeg": f"2 x {EEG_CHANNELS} ch float32 @ {EEG_RATE:g} Hz",
            "markers": f"1 x string @ {MARKER_RATE:g} Hz",
        },
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "recorders": {},
    }
    for kind, path in files.items():
        counts = _count_in_file(path, ids, expected)
        stats = measured[kind]
        results["recorders"][kind] = {
            "samples_expected": sum(c["expected"] for c in counts.values()),
            "samples_in_file_of_expected": sum(c["in_file"] for c in counts.values()),
            "samples_lost": sum(c["lost"] for c in counts.values()),
            "per_stream": counts,
            "cpu_seconds_per_second": stats["cpu_seconds"] / stats["wall_seconds"],
            "peak_rss_mb": stats["peak_rss_mb"],
            "file_size_mb": path.stat().st_size / 1e6,
            "stop_seconds": stats["stop_seconds"],
        }
        path.unlink()
    folder.rmdir()
    return results


def _print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Recording {results['seconds']:g} s of {results['streams']['eeg']} + {results['streams']['markers']}"
    )
    for column in ("recorder", "expected", "in file", "lost", "CPU s/s", "peak RSS (MB)", "file (MB)", "stop (s)"):
        table.add_column(column, justify="right")
    for kind, r in results["recorders"].items():
        table.add_row(
            kind,
            f"{r['samples_expected']:,}",
            f"{r['samples_in_file_of_expected']:,}",
            f"{r['samples_lost']:,}",
            f"{r['cpu_seconds_per_second']:.3f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['file_size_mb']:.1f}",
            f"{r['stop_seconds']:.2f}",
        )
    Console(width=120).print(table)
    ours, theirs = results["recorders"]["dyadlab"], results["recorders"]["labrecorder"]
    if theirs["cpu_seconds_per_second"] > 0:
        print(
            f"CPU ratio dyadlab / LabRecorder: {ours['cpu_seconds_per_second'] / theirs['cpu_seconds_per_second']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_recorder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="record 10 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None, help="recording length (default 60, quick 10)")
    parser.add_argument("--role", choices=("outlets", "dyadlab", "labrecorder"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "outlets":
        _role_outlets(args.ids)
        return 0
    if args.role in ("dyadlab", "labrecorder"):
        _role_recorder(args.role, args.out, args.ids)
        return 0
    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 60.0)
    results = run(seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"written: {RESULTS}")
    lost = results["recorders"]["dyadlab"]["samples_lost"]
    if lost:
        print(f"dyadlab LOST {lost} samples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
