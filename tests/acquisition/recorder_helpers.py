"""Real LSL outlets for the recorder tests and benchmark: numbered samples, in a thread or a process.

Every sample carries its index as value (all channels) and is stamped with ``local_clock()`` at
push time, so a test can tell exactly which samples were pushed before a given moment and check
that the file holds them all.

Run as a process (``python -m tests.acquisition.recorder_helpers --source-id ID ...``) the outlet
prints ``ready`` once it exists and, every 0.1 s, ``pushed <count> <local_clock>``; it pushes until
killed or until a line arrives on stdin, then prints ``final <count>`` and exits.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
import pylsl

NUMPY_DTYPES = {
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "double64": np.float64,
}


def make_outlet(
    name: str,
    source_id: str,
    *,
    channel_format: str = "float32",
    channels: int = 1,
    rate: float = 0.0,
    stream_type: str = "EEG",
    chunk_size: int = 0,
) -> pylsl.StreamOutlet:
    """A real LSL outlet with one labelled channel description."""
    info = pylsl.StreamInfo(name, stream_type, channels, rate, channel_format, source_id)
    info.set_channel_labels([f"ch{i}" for i in range(channels)])
    return pylsl.StreamOutlet(info, chunk_size=chunk_size)


class NumberedPusher:
    """Push numbered samples from a thread: sample ``i`` holds value ``i`` (mod the dtype's range
    for small integer formats) on every channel and is stamped with ``local_clock()``.

    Parameters
    ----------
    outlet : pylsl.StreamOutlet
    rate : float
        Samples per second to aim at.
    block : int
        Samples per ``push_chunk`` (1 = ``push_sample``).
    """

    def __init__(self, outlet: pylsl.StreamOutlet, rate: float, block: int = 1, start: int = 0) -> None:
        self.outlet = outlet
        self.rate = rate
        self.block = block
        self.count = start  # index of the next sample; every sample below it has been pushed
        self.start_index = start
        self.channels = outlet.get_info().channel_count()
        fmt = outlet.get_info().channel_format()
        self.is_string = fmt == pylsl.cf_string
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="numbered-pusher", daemon=True)

    def start(self) -> NumberedPusher:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop pushing; return how many samples were pushed in total."""
        self._stop.set()
        self._thread.join(5.0)
        return self.count - self.start_index

    def _run(self) -> None:
        period = self.block / self.rate
        next_push = time.monotonic()
        while not self._stop.is_set():
            indices = np.arange(self.count, self.count + self.block)
            stamp = pylsl.local_clock()
            if self.is_string:
                for index in indices:
                    self.outlet.push_sample([str(index)] * self.channels, stamp)
            elif self.block == 1:
                self.outlet.push_sample([int(indices[0])] * self.channels, stamp)
            else:
                values = np.repeat(indices[:, None], self.channels, axis=1).astype(np.float32)
                self.outlet.push_chunk(values, stamp)  # the stamp belongs to the last sample
            self.count += self.block
            next_push += period
            delay = next_push - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-id", required=True)
    parser.add_argument("--name", default="numbered")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--block", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--marker-source-id", help="also push a string marker stream (4 Hz)")
    args = parser.parse_args(argv)
    outlet = make_outlet(args.name, args.source_id, channels=args.channels, rate=args.rate)
    pushers = [NumberedPusher(outlet, args.rate, args.block, args.start)]
    if args.marker_source_id:
        markers = make_outlet(
            f"{args.name}-markers", args.marker_source_id, channel_format="string", stream_type="Markers"
        )
        pushers.append(NumberedPusher(markers, 4.0))
    for pusher in pushers:
        pusher.start()
    print("ready", flush=True)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stdin_closed.set()), daemon=True).start()
    while not stdin_closed.wait(0.1):
        print("pushed", *[p.count for p in pushers], repr(pylsl.local_clock()), flush=True)
    totals = [p.stop() for p in pushers]
    print("final", *totals, flush=True)
    time.sleep(0.5)  # let the last samples leave the outlet before it is destroyed


if __name__ == "__main__":
    _main()
