"""An amplifier's LSL stream that goes quiet and resumes: the bridge keeps the inlet, loses nothing.

When the network link to an amplifier PC drops for a few seconds, the inlet receives nothing,
then, once TCP resumes, everything the outlet sent meanwhile, with the samples' own stamps. The
stand-in here is a real pylsl outlet on the loopback that withholds its samples for
``SILENCE_S`` and then pushes them at once, stamped when they were taken (a real link drop
across hosts is in ``tests/integration/test_network_hosts.py``). Everything else is real:
:class:`LslStreamSource`, :class:`BoardBridge`, and an inlet on the republished stream.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from dyadlab.acquisition.bridge import BoardBridge, BridgeState
from dyadlab.acquisition.lsl_source import LslStreamSource, LslStreamSpec
from dyadlab.acquisition.streams import ParticipantInfo
from tests.acquisition.lsl_helpers import open_inlet, pull_for

pytestmark = pytest.mark.integration

RATE = 100.0
#: Longer than the bridge's stall timeout (1.5 s) plus its first reconnection back-off (0.5 s)
#: and a resolution, so that a bridge that releases the inlet would be visibly reconnecting.
SILENCE_S = 4.0


class QuietingOutlet:
    """A vendor app's stream whose samples are held back while :attr:`held` is set (a link drop).

    Sample ``k`` carries the values ``(k, -k)`` (unique, exact in float32) and the stamp
    ``start + k / RATE``.
    """

    def __init__(self, source_id: str) -> None:
        info = pylsl.StreamInfo(f"amp-{source_id}", "EEG", 2, RATE, "float32", source_id)
        channels = info.desc().append_child("channels")
        for label in ("C3", "C4"):
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("unit", "microvolts")
            channel.append_child_value("type", "EEG")
        self.outlet = pylsl.StreamOutlet(info)
        self.held = threading.Event()
        self.stop = threading.Event()
        self.start = pylsl.local_clock()
        self.sent = 0
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        while not self.stop.wait(0.01):
            due = int((pylsl.local_clock() - self.start) * RATE)
            if due <= self.sent or self.held.is_set():
                continue
            index = np.arange(self.sent, due)
            values = np.stack([index, -index], axis=1).astype(np.float32)
            self.outlet.push_chunk(values, (self.start + index / RATE).tolist())
            self.sent = due

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        del self.outlet


def test_a_silence_longer_than_the_reconnect_threshold_resolves_the_stream_anew(unique_id: str) -> None:
    """The other side of ``reconnect_after_silence_s`` (60 s by default; 3 s here, below the
    4-s silence): the bridge releases the inlet, resolves the stream again and streams on."""
    amp = QuietingOutlet(f"quiet-{unique_id}")
    try:
        source = LslStreamSource(
            LslStreamSpec(source_id=f"quiet-{unique_id}"), participant="A", reconnect_after_silence_s=3.0
        )
        participant = ParticipantInfo("A", "sub-01")
        with BoardBridge(source, study=f"stall{unique_id}", dyad="d01", participant=participant) as bridge:
            inlet_before = source._inlet
            time.sleep(1.0)
            amp.held.set()
            time.sleep(SILENCE_S)
            amp.held.clear()
            deadline = time.monotonic() + 10.0
            while bridge.status.reconnects == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            samples_then = bridge.status.samples
            time.sleep(1.0)
            status = bridge.status
            inlet_after = source._inlet
    finally:
        amp.close()
    assert status.reconnects == 1 and status.state is BridgeState.STREAMING, status
    assert inlet_after is not inlet_before, "the inlet was kept past the threshold"
    assert status.samples - samples_then >= 0.5 * RATE, "the reconnected stream does not deliver"
    with pytest.raises(ValueError, match="reconnect_after_silence_s"):
        LslStreamSource(LslStreamSpec(source_id=f"quiet-{unique_id}"), participant="A", reconnect_after_silence_s=0)


def test_a_silent_lsl_stream_is_reported_and_read_on_without_losing_samples(unique_id: str) -> None:
    amp = QuietingOutlet(f"quiet-{unique_id}")
    try:
        source = LslStreamSource(LslStreamSpec(source_id=f"quiet-{unique_id}"), participant="A")
        assert source.reconnect_after_silence_s > SILENCE_S  # the default: the inlet's 60-s buffer
        participant = ParticipantInfo("A", "sub-01")
        with BoardBridge(source, study=f"stall{unique_id}", dyad="d01", participant=participant) as bridge:
            inlet_before = source._inlet
            recorder = open_inlet(bridge.source_id)
            time.sleep(1.0)
            amp.held.set()
            began = pylsl.local_clock()
            time.sleep(SILENCE_S)
            status_during = bridge.status
            amp.held.clear()
            ended = pylsl.local_clock()
            values, stamps = pull_for(recorder, 2.0)
            status_after = bridge.status
            inlet_after = source._inlet
    finally:
        amp.close()

    # Reported: one stall, 1.5 s (the bridge's stall timeout) after the last sample arrived, which
    # is up to one send period plus one poll (0.03 s) before the hold began; + 0.1 s for a busy
    # machine's scheduling. Then the stream delivers again.
    assert status_during.stalls == 1 and status_during.state is BridgeState.STALLED, status_during
    assert 1.5 - 0.03 < bridge.stall_detected_at[0] - began < 1.5 + 0.1, bridge.stall_detected_at
    assert status_after.state is BridgeState.STREAMING and status_after.reconnects == 0, status_after
    assert inlet_after is inlet_before, "the inlet was released: what it buffered would be lost"
    # Nothing lost: from the first sample the recorder saw to the last, every sample once, in order,
    # with the amp's stamps (liblsl's clock correction between two inlets of one machine is ~0).
    index = values[:, 0].astype(np.int64)
    np.testing.assert_array_equal(index, np.arange(index[0], index[-1] + 1))
    np.testing.assert_array_equal(values[:, 1], -values[:, 0])
    np.testing.assert_allclose(stamps, amp.start + index / RATE, atol=1e-3)
    held = (stamps >= began) & (stamps < ended)
    assert held.sum() >= int((SILENCE_S - 0.1) * RATE), "the samples taken during the silence are there"
