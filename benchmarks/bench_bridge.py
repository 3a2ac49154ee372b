"""Bridge benchmark: BrainFlow board -> LSL inlet latency and CPU per bridge, next to a minimal peer.

Each bridge runs in its own process with its own board: two dyadlab :class:`BoardBridge`\\ s
(participants A and B) and, in the same run, two *minimal* bridges as the peer: the loop most
BrainFlow-to-LSL scripts use (``get_board_data`` every 20 ms, timestamps converted with an
offset measured once, ``push_chunk``; no re-measured clock, no packet or stall watch, no aux
stream). The parent process opens one inlet per EEG stream and pulls sample by sample.

Reported per bridge:

* end-to-end latency of every sample: ``local_clock()`` when the inlet returned it minus its
  timestamp (the board's host stamp converted to ``local_clock()``), i.e. BrainFlow buffering
  + bridge polling + LSL transport + the inlet thread's own scheduling; median, p95, max;
* the share of samples "stamped in the future" (negative latency): impossible unless the
  Unix-to-LSL conversion is wrong, e.g. an offset read once while the thread was preempted;
* samples received and the effective rate;
* CPU: the bridge process (board thread, pump, LSL threads) and the pump thread alone, in CPU
  seconds per second (1.0 = one core busy), from psutil.

Boards: the BrainFlow synthetic board (250 Hz, 16 EEG + 13 aux rows); with ``--fast`` also a
2000 Hz board: BrainFlow's playback board replaying a generated file in the layout of the
ANT Neuro eego 64-channel amplifier (``ant_neuro_ee_211``), the fastest "synthetic-like" board
BrainFlow offers (the synthetic board itself is fixed at 250 Hz).

Run: ``python -m benchmarks.bench_bridge [--quick] [--seconds S] [--fast]``; writes
``benchmarks/results/bridge.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "bridge.json"
POLL_INTERVAL = 0.02
WARMUP = 1.0  # seconds of samples ignored at the start (connection set-up)


def _configure_lsl(session_id: str) -> None:
    """Confine LSL to this machine, with a port range wide enough for a busy machine.

    With ``local_only``, discovery sweeps the outlets' UDP ports ``BasePort .. BasePort +
    PortRange``; liblsl's default range of 32 ports is exhausted when other LSL programs (or test
    runs) hold more than 32 outlets, and later outlets become undiscoverable.
    """
    from dyadlab.acquisition.lslconfig import LslConfig

    text = LslConfig.local_only(session_id).to_cfg_text().replace("[ports]\n", "[ports]\nPortRange = 1024\n", 1)
    path = Path(tempfile.mkdtemp(prefix="dyadlab-bench-lsl-")) / "lsl_api.cfg"
    path.write_text(text, encoding="utf-8")
    os.environ["LSLAPICFG"] = str(path)


def _thread_cpu(native_id: int) -> float:
    import psutil

    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return float("nan")


def _process_cpu() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


# -- child: one bridge ---------------------------------------------------------------------------


def _board_spec(board: str, label: str, playback_file: str | None):
    from dyadlab.acquisition.brainflow_source import BoardSpec

    if board == "synthetic":
        return BoardSpec(serial_number=f"bench-{label}")
    return BoardSpec(
        board="playback_file", file=playback_file, master_board="ant_neuro_ee_211", other_info=f"bench-{label}"
    )


def _role_dyadlab(label: str, dyad: str, spec_args: tuple) -> None:
    from dyadlab.acquisition.brainflow_source import BrainFlowSource
    from dyadlab.acquisition.bridge import BoardBridge
    from dyadlab.acquisition.streams import ParticipantInfo

    bridge = BoardBridge(
        BrainFlowSource(_board_spec(*spec_args)),
        study="bench",
        dyad=dyad,
        participant=ParticipantInfo(label, f"sub-{label}"),
        poll_interval=POLL_INTERVAL,
    )
    with bridge:
        assert bridge._thread is not None
        pump_id = bridge._thread.native_id
        _serve(
            bridge.source_id,
            pump_id,
            lambda: {"dropped": bridge.status.dropped_packets, "samples_pushed": bridge.status.samples},
        )


def _role_minimal(label: str, dyad: str, spec_args: tuple) -> None:
    """The peer: the usual minimal BrainFlow -> LSL loop (offset measured once)."""
    import numpy as np
    import pylsl

    from dyadlab.acquisition.brainflow_source import BoardShim

    spec = _board_spec(*spec_args)
    board = BoardShim(spec.board_id, spec.input_params())
    layout = BoardShim.get_board_descr(spec.descriptor_board_id)
    eeg_rows, ts_row = layout["eeg_channels"], layout["timestamp_channel"]
    source_id = f"bench.minimal.{dyad}.{label}"
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{dyad}-{label}-minimal", "EEG", len(eeg_rows), layout["sampling_rate"], "float32", source_id)
    )
    stop = threading.Event()
    pushed = [0]

    def pump() -> None:
        offset = time.time() - pylsl.local_clock()
        while not stop.wait(POLL_INTERVAL):
            data = board.get_board_data()
            if data.shape[1]:
                outlet.push_chunk(data[eeg_rows].T.astype(np.float32), (data[ts_row] - offset).tolist())
                pushed[0] += data.shape[1]

    board.prepare_session()
    try:
        board.start_stream(450000)
        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        _serve(source_id, thread.native_id, lambda: {"samples_pushed": pushed[0]})
        stop.set()
        thread.join(5)
    finally:
        board.release_session()


def _serve(source_id: str, pump_id: int, extra) -> None:
    """Report readiness, measure CPU between "go" and "stop" on stdin, print the result."""
    print(f"ready {source_id}", flush=True)
    assert sys.stdin.readline().strip() == "go"
    cpu0, pump0, wall0 = _process_cpu(), _thread_cpu(pump_id), time.monotonic()
    assert sys.stdin.readline().strip() == "stop"
    wall = time.monotonic() - wall0
    result = {
        "process_cpu_per_s": (_process_cpu() - cpu0) / wall,
        "pump_cpu_per_s": (_thread_cpu(pump_id) - pump0) / wall,
        "wall_seconds": wall,
        **extra(),
    }
    print("result " + json.dumps(result), flush=True)


# -- parent --------------------------------------------------------------------------------------


def _write_playback_file(path: Path, seconds: float) -> None:
    """A file in the ant_neuro_ee_211 layout (2000 Hz, 64 EEG): noise in µV, counter, timestamps."""
    import numpy as np

    from dyadlab.acquisition.brainflow_source import BoardIds, BoardShim

    layout = BoardShim.get_board_descr(BoardIds.ANT_NEURO_EE_211_BOARD.value)
    fs, rows = layout["sampling_rate"], layout["num_rows"]
    n = int(fs * seconds)
    data = np.zeros((n, rows))
    data[:, layout["timestamp_channel"]] = time.time() + np.arange(n) / fs
    data[:, layout["package_num_channel"]] = np.arange(n) % 256
    data[:, layout["eeg_channels"]] = np.random.default_rng(0).standard_normal((n, len(layout["eeg_channels"]))) * 20
    np.savetxt(path, data, delimiter="\t", fmt="%.6f")


def _open_inlet(source_id: str, timeout: float = 30.0):
    import pylsl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pylsl.resolve_byprop("source_id", source_id, timeout=2.0)
        if found:
            inlet = pylsl.StreamInlet(found[0], max_buflen=30)
            inlet.open_stream(timeout=10.0)
            return inlet
    raise RuntimeError(f"stream {source_id} not found within {timeout:g} s")


def _collect_latencies(inlet, stop: threading.Event, out: dict) -> None:
    """Pull sample by sample; after the warm-up keep each sample's latency and timestamp."""
    import numpy as np
    import pylsl

    latencies, stamps, first_arrival = [], [], None
    while not stop.is_set():
        _, stamp = inlet.pull_sample(timeout=0.2)
        if stamp is None:
            continue
        now = pylsl.local_clock()
        first_arrival = now if first_arrival is None else first_arrival
        if now - first_arrival >= WARMUP:
            latencies.append(now - stamp)
            stamps.append(stamp)
    out["latency"] = np.asarray(latencies)
    out["stamps"] = np.asarray(stamps)


def run_scenario(board: str, seconds: float, session_id: str, playback_file: str | None) -> list[dict]:
    import numpy as np

    dyad = f"b{uuid.uuid4().hex[:6]}"
    children = {}
    for impl in ("dyadlab", "minimal"):
        for label in ("A", "B"):
            command = [
                sys.executable,
                "-m",
                "benchmarks.bench_bridge",
                "--role",
                impl,
                "--label",
                label,
                "--dyad",
                dyad,
                "--board",
                board,
                "--session-id",
                session_id,
            ]
            if playback_file:
                command += ["--playback-file", playback_file]
            children[(impl, label)] = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
    try:
        source_ids = {}
        for key, child in children.items():
            line = child.stdout.readline().strip()
            if not line.startswith("ready "):
                raise RuntimeError(f"bridge {key} did not start (got {line!r})")
            source_ids[key] = line.split(" ", 1)[1]
        stop = threading.Event()
        collected = {key: {} for key in children}
        inlets = {key: _open_inlet(source_ids[key]) for key in children}
        threads = [
            threading.Thread(target=_collect_latencies, args=(inlets[key], stop, collected[key]), daemon=True)
            for key in children
        ]
        for thread in threads:
            thread.start()
        for child in children.values():
            child.stdin.write("go\n")
            child.stdin.flush()
        time.sleep(seconds)
        for child in children.values():
            child.stdin.write("stop\n")
            child.stdin.flush()
        stop.set()
        for thread in threads:
            thread.join(10)
        rows = []
        for key, child in children.items():
            line = child.stdout.readline().strip()
            if not line.startswith("result "):
                raise RuntimeError(f"bridge {key} gave no result (got {line!r})")
            measured = json.loads(line.split(" ", 1)[1])
            latency, stamps = collected[key]["latency"] * 1e3, collected[key]["stamps"]
            rows.append(
                {
                    "board": board,
                    "implementation": key[0],
                    "participant": key[1],
                    "latency_ms_median": float(np.median(latency)),
                    "latency_ms_p95": float(np.percentile(latency, 95)),
                    "latency_ms_max": float(np.max(latency)),
                    # A sample cannot arrive before it was taken: negative latencies are clock errors.
                    "samples_stamped_in_future": float(np.mean(latency < 0)),
                    "samples_received": int(latency.size),
                    "effective_rate_hz": (stamps.size - 1) / (stamps[-1] - stamps[0]),
                    **measured,
                }
            )
        return rows
    finally:
        for child in children.values():
            if child.poll() is None:
                try:
                    child.stdin.close()
                except OSError:
                    pass
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()


def _print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BrainFlow -> LSL inlet, {results['seconds']:g} s, 4 bridges per run (2 dyadlab + 2 minimal)")
    for column in (
        "board",
        "bridge",
        "who",
        "latency median (ms)",
        "p95 (ms)",
        "max (ms)",
        "stamped in future",
        "rate (Hz)",
        "process CPU (s/s)",
        "pump CPU (s/s)",
    ):
        table.add_column(column, justify="right")
    for r in results["rows"]:
        table.add_row(
            r["board"],
            r["implementation"],
            r["participant"],
            f"{r['latency_ms_median']:.1f}",
            f"{r['latency_ms_p95']:.1f}",
            f"{r['latency_ms_max']:.1f}",
            f"{r['samples_stamped_in_future']:.1%}",
            f"{r['effective_rate_hz']:.1f}",
            f"{r['process_cpu_per_s']:.3f}",
            f"{r['pump_cpu_per_s']:.4f}",
        )
    Console(width=160).print(table)
    for board, ratio in results["ratios_dyadlab_over_minimal"].items():
        print(
            f"{board}: dyadlab / minimal  latency median x{ratio['latency_median']:.2f}, "
            f"pump CPU x{ratio['pump_cpu']:.2f}, process CPU x{ratio['process_cpu']:.2f}"
        )


def _ratios(rows: list[dict]) -> dict:
    import numpy as np

    ratios = {}
    for board in sorted({r["board"] for r in rows}):

        def mean(impl: str, key: str, board: str = board) -> float:
            return float(np.mean([r[key] for r in rows if r["board"] == board and r["implementation"] == impl]))

        ratios[board] = {
            name: mean("dyadlab", key) / mean("minimal", key)
            for name, key in (
                ("latency_median", "latency_ms_median"),
                ("pump_cpu", "pump_cpu_per_s"),
                ("process_cpu", "process_cpu_per_s"),
            )
        }
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_bridge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10 s per board instead of 30 s")
    parser.add_argument("--seconds", type=float, default=None, help="measurement length per board")
    parser.add_argument("--fast", action="store_true", help="also run a 2000 Hz (playback) board")
    parser.add_argument("--role", choices=("dyadlab", "minimal"), help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--dyad", help=argparse.SUPPRESS)
    parser.add_argument("--board", default="synthetic", help=argparse.SUPPRESS)
    parser.add_argument("--session-id", help=argparse.SUPPRESS)
    parser.add_argument("--playback-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        _configure_lsl(args.session_id)
        from brainflow.board_shim import LogLevels

        from dyadlab.acquisition.brainflow_source import BoardShim

        BoardShim.set_log_level(int(LogLevels.LEVEL_WARN.value))
        role = _role_dyadlab if args.role == "dyadlab" else _role_minimal
        role(args.label, args.dyad, (args.board, args.label, args.playback_file))
        return 0

    seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 30.0)
    session_id = f"dyadlab-bench-{uuid.uuid4().hex[:8]}"
    _configure_lsl(session_id)
    rows = run_scenario("synthetic", seconds, session_id, None)
    if args.fast:
        with tempfile.TemporaryDirectory() as folder:
            playback = Path(folder) / "ant_neuro_ee_211.tsv"
            _write_playback_file(playback, seconds + 15.0)
            rows += run_scenario("playback_2000hz", seconds, session_id, str(playback))
    results = {
        "seconds": seconds,
        "poll_interval": POLL_INTERVAL,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0],
        },
        "rows": rows,
        "ratios_dyadlab_over_minimal": _ratios(rows),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    _print_table(results)
    print(f"written: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
