"""Audio capture cost: two 16 kHz microphones as LSL streams with their FLAC files.

Two :class:`~dyadlab.acquisition.audio.MicrophoneCapture` run on the virtual microphones of the
tests (a private PulseAudio server, ``tests/acquisition/virtual_audio.py``), each publishing to
LSL and writing its FLAC file, while a separate process plays speech-like sound into both (so
the files compress real content, and the player's CPU is not counted). After the captures have
settled, the CPU time (user + system, every thread: PortAudio's callbacks, the pump threads,
liblsl's outlet threads, libsndfile) of this process, which does nothing else, is measured over
``--seconds`` and divided by that wall time: the share of one core. The acceptance bound is 5 %
(issue #16). PulseAudio's own work is the virtual device's, not the capture's, and is not counted.

Run: ``python -m benchmarks.bench_audio_capture [--quick] [--seconds S]``; writes
``benchmarks/results/audio_capture.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "audio_capture.json"
RATE = 16000
BOUND = 0.05  # share of one core (issue #16)

_PLAYER = """
import sys, time
from tests.acquisition.virtual_audio import talking
with talking({"A": "dyadlab_speaker_A", "B": "dyadlab_speaker_B"}, 16000):
    sys.stdin.read()  # until the benchmark closes the pipe
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None, help="measured span (default 60, --quick 10)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config

    apply_lsl_config(LslConfig.local_only(f"dyadlab-bench-audio-{uuid.uuid4().hex[:8]}"))
    import psutil

    from dyadlab.acquisition.audio import MicrophoneSpec, list_input_devices, open_microphones
    from dyadlab.acquisition.streams import ParticipantInfo
    from tests.acquisition.virtual_audio import virtual_microphones

    people = [ParticipantInfo("A", "sub-01"), ParticipantInfo("B", "sub-02")]
    with tempfile.TemporaryDirectory() as folder, virtual_microphones(Path(folder) / "pulse") as devices:
        list_input_devices(rescan=True)
        player = subprocess.Popen(
            [sys.executable, "-c", _PLAYER],
            stdin=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            env=dict(os.environ),
        )
        specs = {p.label: MicrophoneSpec(devices.microphone(p.label), sample_rate=RATE) for p in people}
        captures = open_microphones(specs, people, study="bench", dyad="d1", flac_stem=Path(folder) / "bench")
        try:
            for capture in captures:
                capture.start()
            deadline = time.monotonic() + 20
            while any(c.status.samples < RATE for c in captures) and time.monotonic() < deadline:
                time.sleep(0.1)
            process = psutil.Process()
            before_cpu = process.cpu_times()
            before_samples = [c.status.samples for c in captures]
            started = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - started
            after_cpu = process.cpu_times()
            after_samples = [c.status.samples for c in captures]
            statuses = [c.status for c in captures]
        finally:
            for capture in captures:
                capture.release()
            player.communicate(b"", timeout=10)
        flac_bytes = sum((Path(folder) / f"bench_audio-{p.label}.flac").stat().st_size for p in people)
    cpu = (after_cpu.user - before_cpu.user) + (after_cpu.system - before_cpu.system)
    share = cpu / wall
    result = {
        "seconds": wall,
        "microphones": len(captures),
        "sample_rate": RATE,
        "cpu_seconds": cpu,
        "share_of_one_core": share,
        "bound": BOUND,
        "within_bound": share < BOUND,
        "samples_per_second": [(a - b) / wall for a, b in zip(after_samples, before_samples)],
        "overflows": [s.overflows for s in statuses],
        "flac_megabytes_per_minute": flac_bytes / 1e6 / ((after_samples[0]) / RATE / 60),
        "cpu_count": psutil.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"two {RATE} Hz microphones over {wall:.0f} s: {cpu:.2f} CPU s = {100 * share:.2f} % of one core "
        f"(bound {100 * BOUND:.0f} %); samples/s {[round(x) for x in result['samples_per_second']]}; "
        f"overflows {result['overflows']}; load average {result['load_average_1min']:.1f}"
    )
    return 0 if share < BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
