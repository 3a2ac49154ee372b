"""Speech segmentation benchmark: a 60-minute two-person recording through ``detect_speech``.

The recording is the simulated conversation of ``dyadlab.acquisition.voices`` (80 s of eSpeak NG
speech, cross-talk -12 dB / 2 ms, room noise) tiled to the asked length, as two float32
microphones at 16 kHz (synthesis and tiling not timed). Timed, in a fresh process after one small
warm-up call: :func:`dyadlab.synchrony.speech.detect_speech` (frames on the LSL grid, WebRTC's
detector on both microphones, the cross-talk rule, segments, turns and states) and the events
table (:meth:`~dyadlab.synchrony.speech.ConversationSpeech.events`). Also reported: peak RSS and
the detected turns' median onset error against the script, as a check that the timed run worked.

Target (issue #16): a 60-minute recording segmented in under 30 s.

Run: ``python -m benchmarks.bench_speech [--quick] [--minutes M]``; writes
``benchmarks/results/speech.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import peak_rss_mb

RESULTS = Path(__file__).parent / "results" / "speech.json"
TARGET_S = 30.0


def measure(minutes: float) -> dict:
    """Segment ``minutes`` of the tiled conversation; wall times and the onset check."""
    from dyadlab.acquisition.voices import simulate_conversation
    from dyadlab.synchrony.speech import Microphone, detect_speech

    conversation = simulate_conversation()
    repeats = max(1, int(np.ceil(minutes * 60 / conversation.duration_s)))
    long = conversation.tiled(repeats)
    long.voices.clear()  # the clean voices are not an input: their memory is not the detector's
    start = 1000.0
    microphones = [
        Microphone.from_arrays(label, long.microphones[label], long.timestamps(start)) for label in long.labels
    ]
    detect_speech(
        [
            Microphone.from_arrays(label, m.samples[:160000], m.timestamps[:160000])
            for label, m in zip(long.labels, microphones)
        ]
    )  # warm-up: imports, first calls
    started = time.perf_counter()
    found = detect_speech(microphones)
    detect_s = time.perf_counter() - started
    started = time.perf_counter()
    events = found.events()
    events_s = time.perf_counter() - started
    errors = []
    for speaker in long.labels:
        onsets = np.array([onset for onset, _ in found.segments(speaker)]) - start
        for turn in (t for t in long.turns if t.speaker == speaker):
            errors.append(np.min(np.abs(onsets - turn.onset_s)))
    return {
        "recording_minutes": round(long.duration_s / 60, 2),
        "microphones": 2,
        "rate_hz": long.rate,
        "detect_s": round(detect_s, 3),
        "events_s": round(events_s, 3),
        "total_s": round(detect_s + events_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "n_events": len(events),
        "n_turns": len(found.turns),
        "median_onset_error_ms": round(1000 * float(np.median(errors)), 1),
        "target_s": TARGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_speech", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="recording length (default 60)")
    parser.add_argument("--quick", action="store_true", help="5 minutes, for a smoke test")
    args = parser.parse_args(argv)
    figures = measure(5.0 if args.quick else args.minutes)
    print(
        f"{figures['recording_minutes']:.1f} min x 2 microphones at {figures['rate_hz']:g} Hz: speech and turns in "
        f"{figures['detect_s']:.2f} s, events table {figures['events_s']:.2f} s (target < {TARGET_S:g} s); peak RSS "
        f"{figures['peak_rss_mb']:.0f} MB; {figures['n_turns']} turns, median onset error "
        f"{figures['median_onset_error_ms']:.1f} ms"
    )
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    **figures,
                    "machine": {
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                    },
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0 if figures["total_s"] < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
