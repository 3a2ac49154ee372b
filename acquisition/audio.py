"""Microphones as LSL streams on the LSL clock, with a lossless file per participant.

One :class:`MicrophoneCapture` per participant opens one PortAudio input stream (through
``sounddevice``) on the device the protocol names, publishes its channel as the LSL stream
``dyadlab-audio-<label>`` (see ``docs/audio.md`` for the contract) and writes the same samples to
``<stem>_audio-<label>.flac``.

Timing. PortAudio hands every callback the capture time of the block's first sample
(``inputBufferAdcTime``) on the stream's own clock (``stream.time``: CLOCK_REALTIME on ALSA, the
performance counter elsewhere). The offset from that clock to LSL's ``local_clock()`` is measured
when the stream starts and every :data:`OFFSET_REFRESH_S` seconds after (tightest of several
bracketed readings), so each block yields one observation "sample ``n`` was captured at LSL time
``t``". Those observations jitter (the host API's delay estimate, scheduling), while the sample
count does not: samples come from the converter at its own steady rate. :class:`CaptureClock`
therefore stamps sample ``n`` with ``c + (1 + d) * n / rate``: the offset ``c`` and the drift
``d`` (audio clock against LSL clock) are fitted over the whole recording, on one-second medians
of the observations, so the stamps are as steady as the sample clock and follow its drift. Drift
is fitted once :data:`DRIFT_FIT_AFTER_S` seconds are observed (before that ``d`` = 0: a sound
card's crystal is off by tens of ppm, under 1 ms over that span). An input overflow (samples the
device lost) starts a new fit from there, since the sample count then skips.

Threads. The PortAudio callback only copies the block and queues it (it never blocks nor takes a
lock held elsewhere); a pump thread stamps the blocks, pushes them to LSL and writes the FLAC file.

Lifecycle: ``prepare`` (find the device, open the stream and the outlet; nothing is captured) ->
``start`` -> ``stop`` (drains every captured sample into LSL and the file) -> ``release``; the
context manager does all four. :func:`resolve_microphones` finds every device of a session
before any stream opens, so a missing device stops the session before anything starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from dyadlab.acquisition.preflight import Problem
from dyadlab.acquisition.sources import SourceConfigError, SourceError
from dyadlab.acquisition.streams import ParticipantInfo, audio_stream_info, audio_stream_name, source_id

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16000.0
#: Samples per PortAudio callback, in seconds: 20 ms keeps the callback rate (50/s) and its CPU
#: cost low; timing does not depend on it (stamps come from the sample count).
BLOCK_SECONDS = 0.02
#: The pump thread delivers what gathered in this long (adds that much to the live delay).
PUMP_INTERVAL_S = 0.05
#: Observations are reduced to one median per this many seconds before fitting the clock.
CLOCK_BIN_S = 1.0
#: A step of the capture times: this many consecutive bins off the fit by more than CLOCK_STEP_S.
CLOCK_STEP_BINS = 3
CLOCK_STEP_S = 0.005
#: Drift is fitted once the observations span this long (before, the nominal rate is used).
DRIFT_FIT_AFTER_S = 20.0
#: How often the stream-clock -> local_clock() offset is measured again (follows NTP slews of
#: a wall-clock stream clock).
OFFSET_REFRESH_S = 10.0
#: Settling at start (see MicrophoneCapture._settle): a run this long of steady capture times,
#: agreeing with the sample count within SETTLE_JITTER_S and arriving within the input latency
#: plus SETTLE_LAG_SLACK_S; after SETTLE_TIMEOUT_S of audio the capture publishes regardless.
SETTLE_S = 0.5
SETTLE_JITTER_S = 0.005
SETTLE_LAG_SLACK_S = 0.1
SETTLE_TIMEOUT_S = 5.0
#: FLAC sample format: 24-bit keeps 16- and 24-bit converters' samples exactly.
FLAC_SUBTYPE = "PCM_24"
#: A sample this close to full scale counts as clipped.
CLIP_LEVEL = 0.999
#: RMS below this (dB full scale) is no signal at all: a muted or unplugged microphone, or the
#: wrong channel (a live microphone's own noise in a quiet room is typically -80 to -60 dBFS).
SILENCE_DBFS = -90.0
#: RMS below this is too quiet for speech detection (speech at a headset is -40 to -10 dBFS):
#: nobody spoke during the check, or the gain is too low.
QUIET_DBFS = -60.0
#: More than this fraction of clipped samples is a gain set too high.
MAX_CLIPPED_FRACTION = 0.001
#: Two microphones hear the same sound alike (not each mainly their own speaker) when, over the
#: 20 ms frames with sound, their level difference stays within SAME_SOUND_SPREAD_DB (standard
#: deviation) of a median under SAME_LEVEL_DB. Headsets on two people differ by 10-25 dB, one way
#: while one speaks and the other way while the other does; one room microphone split to both
#: channels differs by a constant.
SAME_SOUND_SPREAD_DB = 3.0
SAME_LEVEL_DB = 6.0
#: Frames within this many dB of the loudest frame count as having sound.
SOUND_FRAME_RANGE_DB = 30.0

_open_streams = 0  # PortAudio streams open in this process (no device rescan while any is)
_open_lock = threading.Lock()


class AudioDeviceError(SourceConfigError):
    """A microphone the protocol names cannot be used (missing, ambiguous, too few channels)."""


class AudioCaptureError(SourceError):
    """Capturing failed while running (device gone, file not writable)."""


@dataclass(frozen=True)
class MicrophoneSpec:
    """Which input belongs to a participant.

    Parameters
    ----------
    device : str
        Part of the device's name as the audio system lists it (case-insensitive), e.g.
        ``"Scarlett 2i2"``; may include the host API (``"Scarlett 2i2, ALSA"``) when a name appears
        under several.
    channel : int
        1-based input channel of that device (``2`` is the second input of an interface).
    sample_rate : float
        Rate of the stream and file in Hz.
    """

    device: str
    channel: int = 1
    sample_rate: float = DEFAULT_SAMPLE_RATE

    def __post_init__(self) -> None:
        if not self.device.strip():
            raise AudioDeviceError("A microphone needs a device name (part of the name the audio system lists).")
        if self.channel < 1:
            raise AudioDeviceError(f"Microphone channels count from 1, got {self.channel} for {self.device!r}.")
        if not self.sample_rate > 0:
            raise AudioDeviceError(f"The audio sample rate must be positive, got {self.sample_rate!r}.")


@dataclass(frozen=True)
class InputDevice:
    """An audio input as PortAudio lists it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_sample_rate: float

    @property
    def full_name(self) -> str:
        """``"<name>, <host API>"``, unique on a machine in practice."""
        return f"{self.name}, {self.host_api}"


@dataclass(frozen=True)
class VirtualInput:
    """An input that PortAudio does not list (a simulated microphone): its name and how it opens.

    ``open_stream`` is called with the keyword arguments of ``sounddevice.InputStream``
    (``channels``, ``samplerate``, ``blocksize``, ``callback``) and returns an object with the members
    :class:`MicrophoneCapture` uses (``start``, ``stop``, ``abort``, ``close``, ``active``,
    ``latency``, ``time``).
    """

    device: InputDevice
    open_stream: Callable[..., Any]


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as error:  # the PortAudio library itself is missing
        raise AudioDeviceError(
            f"cannot load the PortAudio library ({error}); install it (Debian/Ubuntu: libportaudio2, "
            "see .ci/system-deps.sh)"
        ) from None
    return sounddevice


def list_input_devices(*, rescan: bool = False) -> list[InputDevice]:
    """Every audio input PortAudio sees, in its order.

    PortAudio lists the devices once, when ``sounddevice`` is first imported. ``rescan`` re-reads
    them (a device plugged in since) by restarting PortAudio, which ends every PortAudio stream of
    the process, this module's or another library's: use it only when no sound plays or records.
    """
    sd = _sounddevice()
    with _open_lock:
        if rescan and _open_streams == 0:
            sd._terminate()  # sounddevice has no public rescan; re-initialising PortAudio is it
            sd._initialize()
        host_apis = sd.query_hostapis()
        return [
            InputDevice(
                index=index,
                name=str(info["name"]),
                host_api=str(host_apis[info["hostapi"]]["name"]),
                max_input_channels=int(info["max_input_channels"]),
                default_sample_rate=float(info["default_samplerate"]),
            )
            for index, info in enumerate(sd.query_devices())
            if info["max_input_channels"] > 0
        ]


def find_input_device(spec: MicrophoneSpec, devices: Sequence[InputDevice]) -> InputDevice:
    """The one input whose name contains ``spec.device`` and has ``spec.channel``.

    Raises
    ------
    AudioDeviceError
        No input matches, several do (and none is named exactly so), or the device has fewer
        input channels than ``spec.channel``; the message lists the inputs there are.
    """
    wanted = spec.device.strip().casefold()
    matches = [d for d in devices if wanted in d.full_name.casefold()]
    exact = [d for d in matches if wanted in (d.name.casefold(), d.full_name.casefold())]
    if len(matches) > 1 and len(exact) == 1:
        matches = exact
    if not matches:
        raise AudioDeviceError(
            f"no audio input named like {spec.device!r}. Plug the microphone in (or start its audio "
            f"server) and start dyadlab again (it lists devices when it starts), or correct the name in the "
            f"protocol's microphones section. {_listing(devices)}"
        )
    if len(matches) > 1:
        raise AudioDeviceError(
            f"{spec.device!r} matches {len(matches)} audio inputs: "
            + "; ".join(repr(d.full_name) for d in matches)
            + ". Give more of the name in the protocol (the host API too, e.g. 'Scarlett 2i2, ALSA')."
        )
    device = matches[0]
    if spec.channel > device.max_input_channels:
        raise AudioDeviceError(
            f"{device.full_name!r} has {device.max_input_channels} input channel(s), the protocol asks "
            f"for channel {spec.channel}; use a channel from 1 to {device.max_input_channels}."
        )
    return device


def _listing(devices: Sequence[InputDevice]) -> str:
    if not devices:
        return "This computer lists no audio input at all."
    return "Audio inputs on this computer: " + "; ".join(
        f"{d.full_name!r} ({d.max_input_channels} ch)" for d in devices
    )


def resolve_microphones(specs: dict[str, MicrophoneSpec]) -> dict[str, InputDevice]:
    """Find every participant's input before any stream opens.

    Parameters
    ----------
    specs : dict of str to MicrophoneSpec
        Participant label -> microphone.

    Raises
    ------
    AudioDeviceError
        One message naming every participant whose microphone cannot be used, or two participants
        given the same channel of the same device.
    """
    devices = list_input_devices()
    found: dict[str, InputDevice] = {}
    errors = []
    for label, spec in specs.items():
        try:
            found[label] = find_input_device(spec, devices)
        except AudioDeviceError as error:
            errors.append(f"participant {label}'s microphone: {error}")
    taken: dict[tuple[int, int], str] = {}
    for label, device in found.items():
        key = (device.index, specs[label].channel)
        if key in taken:
            errors.append(
                f"participants {taken[key]} and {label} are both given channel {key[1]} of "
                f"{device.full_name!r}; each participant needs their own microphone or channel."
            )
        taken[key] = label
    if errors:
        raise AudioDeviceError("\n".join(errors))
    return found


class CaptureClock:
    """Maps a sample's index to its capture time on ``local_clock()``.

    Parameters
    ----------
    nominal_rate : float
        The stream's nominal sample rate in Hz.

    Notes
    -----
    Each observation says "sample ``n`` was captured at ``t``". The residual ``t - n / rate`` is
    reduced to one median per :data:`CLOCK_BIN_S` (robust to a late or early estimate), and
    ``residual = c + d * n / rate`` is fitted by least squares over the bins, once more without
    bins more than 5 median absolute deviations off. Stamps are ``c + (1 + d) * n / rate``.

    A step (the last :data:`CLOCK_STEP_BINS` bins all off the fit by more than
    :data:`CLOCK_STEP_S` in the same direction, and agreeing with each other: a host API that
    corrected its delay estimate, or a capture published before it settled) drops the bins before
    it: the fit follows the new level instead of averaging across the step.
    """

    def __init__(self, nominal_rate: float) -> None:
        self.nominal_rate = float(nominal_rate)
        self._bin_samples = max(1, round(CLOCK_BIN_S * self.nominal_rate))
        self._segment_start = 0
        self._bins: list[tuple[float, float]] = []  # (seconds since segment start, median residual)
        self._pending: list[tuple[int, float]] = []
        self.offset: float | None = None  # c, seconds
        self.drift = 0.0  # d, dimensionless
        self.segments = 0
        self.steps: list[float] = []  # size (s) of each step the fit followed

    def restart(self, first_sample: int) -> None:
        """Samples were lost before ``first_sample``: fit anew from there."""
        self._segment_start = first_sample
        self._bins.clear()
        self._pending.clear()
        self.offset = None
        self.drift = 0.0
        self.segments += 1

    def observe(self, first_sample: int, capture_time: float) -> None:
        """Sample ``first_sample`` was captured at ``capture_time`` (``local_clock()`` seconds)."""
        self._pending.append((first_sample, capture_time - first_sample / self.nominal_rate))
        if self.offset is None:  # the first stamps: as good as the first observation
            self.offset = self._pending[0][1]
        if first_sample - self._pending[0][0] >= self._bin_samples:
            samples, residuals = zip(*self._pending)
            seconds = (float(np.mean(samples)) - self._segment_start) / self.nominal_rate
            self._bins.append((seconds, float(np.median(residuals))))
            self._pending.clear()
            self._follow_step()
            self._fit()

    def _follow_step(self) -> None:
        if len(self._bins) <= CLOCK_STEP_BINS or self.offset is None:
            return
        recent = self._bins[-CLOCK_STEP_BINS:]
        deviations = np.array(
            [
                residual - (self.offset + self.drift * (seconds + self._segment_start / self.nominal_rate))
                for seconds, residual in recent
            ]
        )
        same_side = bool(np.all(deviations > CLOCK_STEP_S) or np.all(deviations < -CLOCK_STEP_S))
        if same_side and np.ptp(deviations) < CLOCK_STEP_S / 2:
            step = float(np.median(deviations))
            logger.warning("audio capture times stepped by %+.1f ms; the clock fit follows", step * 1e3)
            self.steps.append(step)
            self._bins = list(recent)

    def _fit(self) -> None:
        seconds, residuals = (np.asarray(values) for values in zip(*self._bins))
        if seconds[-1] - seconds[0] < DRIFT_FIT_AFTER_S:
            self.offset, self.drift = float(np.median(residuals)), 0.0
            return
        slope, intercept = np.polyfit(seconds, residuals, 1)
        deviation = residuals - (intercept + slope * seconds)
        spread = float(np.median(np.abs(deviation - np.median(deviation))))
        keep = np.abs(deviation) <= 5 * max(spread, 1e-6)
        if 2 <= keep.sum() < keep.size:
            slope, intercept = np.polyfit(seconds[keep], residuals[keep], 1)
        # residual = intercept + slope * (n - start) / rate  ->  in terms of n / rate:
        self.drift = float(slope)
        self.offset = float(intercept - slope * self._segment_start / self.nominal_rate)

    def stamps(self, first_sample: int, count: int) -> np.ndarray:
        """``local_clock()`` times of samples ``first_sample ... first_sample + count - 1``."""
        if self.offset is None:
            raise RuntimeError("CaptureClock.stamps before any observation")
        index = first_sample + np.arange(count, dtype=np.float64)
        return self.offset + (1.0 + self.drift) * index / self.nominal_rate

    def to_dict(self) -> dict[str, Any]:
        """The fit, for the session record."""
        return {
            "offset_s": self.offset,
            "drift_ppm": self.drift * 1e6,
            "fitted_seconds": self._bins[-1][0] - self._bins[0][0] if self._bins else 0.0,
            "restarts_after_overflow": self.segments,
            "steps_followed_s": list(self.steps),
        }


def measure_clock_offset(stream_time: Any, tries: int = 20) -> tuple[float, float]:
    """Offset from a stream clock to ``local_clock()``: ``local = stream + offset``.

    Reads ``local_clock()``, ``stream_time()``, ``local_clock()`` ``tries`` times and keeps the
    tightest bracket (the one a thread switch did not widen).

    Returns
    -------
    offset, uncertainty : float
        Seconds; the uncertainty is half the tightest bracket.
    """
    from pylsl import local_clock

    best = (math.inf, 0.0)
    for _ in range(tries):
        before = local_clock()
        stream_now = float(stream_time())
        after = local_clock()
        width = after - before
        if width < best[0]:
            best = (width, (before + after) / 2 - stream_now)
    return best[1], best[0] / 2


@dataclass
class _Block:
    samples: np.ndarray
    adc_time: float  # stream clock; 0 when the host API gives none
    arrival_lsl: float
    overflow: bool


@dataclass
class CaptureStatus:
    """How a capture went (for the session record and the operator)."""

    participant: str
    stream_name: str
    source_id: str
    device: str
    channel: int
    sample_rate: float
    samples: int = 0
    overflows: int = 0
    dropped_at_start: int = 0
    flac: str | None = None
    clock: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class MicrophoneCapture:
    """One participant's microphone: PortAudio input -> LSL outlet (+ FLAC file).

    Parameters
    ----------
    spec : MicrophoneSpec
        Device, channel and rate.
    study, dyad : str
        Form the stream's ``source_id``.
    participant : ParticipantInfo
        Whose voice this is.
    flac_path : Path | None
        Where to write the lossless file; ``None`` streams only.
    device : InputDevice | None
        The input already found by :func:`resolve_microphones`; found by name otherwise.
    level_window_s : float
        Seconds of the latest audio kept for :meth:`recent_audio` (preflight).
    stream_factory : callable or None
        Opens the input instead of PortAudio: called with the keyword arguments of
        ``sounddevice.InputStream`` (``channels``, ``samplerate``, ``blocksize``, ``callback``) and
        returning an object with its members; used for simulated microphones
        (:class:`dyadlab.acquisition.simulated_microphones.SimulatedInputStream`).
    """

    def __init__(
        self,
        spec: MicrophoneSpec,
        *,
        study: str,
        dyad: str,
        participant: ParticipantInfo,
        flac_path: Path | None = None,
        device: InputDevice | None = None,
        level_window_s: float = 10.0,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.spec = spec
        self._stream_factory = stream_factory
        self.study = study
        self.dyad = dyad
        self.participant = participant
        self.flac_path = None if flac_path is None else Path(flac_path)
        self.device = device
        self.stream_name = audio_stream_name(participant.label)
        self.source_id = source_id(study, dyad, "audio", participant.label)
        self.clock = CaptureClock(spec.sample_rate)
        self._queue: queue.SimpleQueue[_Block | None] = queue.SimpleQueue()
        self._recent: deque[np.ndarray] = deque(maxlen=max(1, math.ceil(level_window_s / BLOCK_SECONDS)))
        self._stream: Any = None
        self._outlet: Any = None
        self._file: Any = None
        self._pump: threading.Thread | None = None
        self._samples = 0
        self._overflows = 0
        self._offset = 0.0
        self._offset_measured_at = -math.inf
        self._error: str | None = None
        self._counted_open = False
        self._settled = False
        self._settle_window: deque[tuple[_Block, float]] = deque()
        self._dropped_at_start = 0
        self._times: Any = None
        self._last_fit: tuple[float | None, float] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Find the device, open the input stream (not started), the LSL outlet and the file.

        Raises
        ------
        AudioDeviceError
            The device is missing or refuses the channel count or rate.
        """
        if self._stream is not None:
            return
        rate = self.spec.sample_rate
        if self._stream_factory is not None:
            self._stream = self._stream_factory(
                channels=self.spec.channel,
                samplerate=rate,
                blocksize=max(1, round(BLOCK_SECONDS * rate)),
                callback=self._callback,
            )
        else:
            self._open_portaudio_stream()
        import pylsl

        self._outlet = pylsl.StreamOutlet(
            audio_stream_info(
                self.study,
                self.dyad,
                self.participant,
                sample_rate=rate,
                device=self.device_description(),
            ),
            chunk_size=max(1, round(BLOCK_SECONDS * rate)),
        )
        if self.flac_path is not None:
            import soundfile

            try:
                self._file = soundfile.SoundFile(
                    self.flac_path,
                    mode="w",
                    samplerate=round(rate),
                    channels=1,
                    format="FLAC",
                    subtype=FLAC_SUBTYPE,
                )
                self._times = times_path(self.flac_path).open("w", encoding="utf-8")
                self._times.write("sample\tlocal_clock\tdrift_ppm\n")
            except (OSError, RuntimeError) as error:  # soundfile reports unwritable paths as RuntimeError
                self.release()
                raise AudioCaptureError(f"cannot create the audio file {self.flac_path}: {error}") from None

    def _open_portaudio_stream(self) -> None:
        global _open_streams
        sd = _sounddevice()
        if self.device is None:
            self.device = find_input_device(self.spec, list_input_devices())
        rate = self.spec.sample_rate
        try:
            with _open_lock:
                self._stream = sd.InputStream(
                    device=self.device.index,
                    channels=self.spec.channel,  # the wanted channel is the last one opened
                    samplerate=rate,
                    dtype="float32",
                    blocksize=max(1, round(BLOCK_SECONDS * rate)),
                    latency="high",  # fewer overflows on a busy PC; stamps do not depend on it
                    callback=self._callback,
                )
                _open_streams += 1
                self._counted_open = True
        except sd.PortAudioError as error:
            raise AudioDeviceError(
                f"cannot open {self.device.full_name!r} for participant {self.participant.label} "
                f"(channel {self.spec.channel}, {rate:g} Hz): {error}. Check that no other program holds "
                f"it exclusively and that it supports {rate:g} Hz (its default is "
                f"{self.device.default_sample_rate:g} Hz)."
            ) from None

    def device_description(self) -> dict[str, object]:
        """What the stream's ``desc/device`` and the session record say about the input."""
        device = self.device
        return {
            "name": device.name if device else None,
            "host_api": device.host_api if device else None,
            "match": self.spec.device,
            "channel": self.spec.channel,
            "sample_rate": self.spec.sample_rate,
        }

    def start(self) -> None:
        """Start capturing and the pump thread."""
        if self._stream is None:
            self.prepare()
        if self._pump is not None:
            return
        self._refresh_offset(force=True)
        self._pump = threading.Thread(target=self._run_pump, name=f"audio-{self.participant.label}", daemon=True)
        self._pump.start()
        self._stream.start()
        logger.info(
            "capturing %s (%s, channel %d) at %g Hz as %s",
            self.participant.label,
            self.device.full_name if self.device else "?",
            self.spec.channel,
            self.spec.sample_rate,
            self.stream_name,
        )

    def stop(self) -> None:
        """Stop capturing; every sample captured so far reaches LSL and the file."""
        if self._stream is not None and self._stream.active:
            self._stream.stop()  # returns once the last callback has run
        if self._pump is not None:
            self._queue.put(None)
            self._pump.join()
            self._pump = None

    def release(self) -> None:
        """Close the stream, the file and the outlet; idempotent, safe after any failure."""
        global _open_streams
        try:
            self.stop()
        finally:
            if self._stream is not None:
                try:
                    self._stream.close()
                except Exception:
                    logger.exception("closing the audio input of %s failed", self.participant.label)
                self._stream = None
            with _open_lock:
                if self._counted_open:
                    _open_streams -= 1
                    self._counted_open = False
            for handle in (self._file, self._times):
                if handle is not None:
                    handle.close()
            self._file = self._times = None
            self._outlet = None

    def __enter__(self) -> MicrophoneCapture:
        self.prepare()
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- capture -----------------------------------------------------------------------------
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: copy and queue only (SimpleQueue.put never blocks).
        from pylsl import local_clock

        self._queue.put(
            _Block(
                samples=indata[:, self.spec.channel - 1].copy(),
                adc_time=float(time_info.inputBufferAdcTime),
                arrival_lsl=local_clock(),
                overflow=bool(status.input_overflow),
            )
        )

    def _refresh_offset(self, *, force: bool = False) -> None:
        from pylsl import local_clock

        if force or local_clock() - self._offset_measured_at >= OFFSET_REFRESH_S:
            stream = self._stream
            self._offset, uncertainty = measure_clock_offset(lambda: stream.time)
            self._offset_measured_at = local_clock()
            if uncertainty > 1e-3:
                logger.warning(
                    "audio clock offset of %s uncertain by %.1f ms", self.participant.label, uncertainty * 1e3
                )

    def _capture_time(self, block: _Block) -> float:
        """The block's first sample on ``local_clock()``."""
        if block.adc_time > 0:
            return block.adc_time + self._offset
        # No capture time from this host API: arrival minus the block and the input latency
        # (jittery; the clock fit's medians smooth it).
        return block.arrival_lsl - block.samples.size / self.spec.sample_rate - float(self._stream.latency)

    def _run_pump(self) -> None:
        try:
            while True:
                block = self._queue.get()
                batch = [block]
                while not self._queue.empty():  # one push for whatever has queued up
                    batch.append(self._queue.get())
                ended = batch[-1] is None
                blocks = [b for b in batch if b is not None]
                if blocks:
                    self._deliver(blocks)
                if ended:
                    return
                time.sleep(PUMP_INTERVAL_S)  # let blocks gather: fewer, larger pushes
        except Exception as error:  # a full disk, a closed outlet: stop capturing, say why
            self._error = f"{type(error).__name__}: {error}"
            logger.exception("audio capture of %s failed", self.participant.label)
            with contextlib.suppress(Exception):
                self._stream.abort()  # nothing would take its blocks any more

    def _deliver(self, blocks: Iterable[_Block]) -> None:
        self._refresh_offset()
        publish: list[tuple[_Block, float]] = []
        for block in blocks:
            capture = self._capture_time(block)
            if self._settled:
                publish.append((block, capture))
            else:
                publish.extend(self._settle(block, capture))
        if not publish:
            return
        first = self._samples
        chunks = []
        for block, capture in publish:
            if block.overflow:
                self._overflows += 1
                logger.warning(
                    "audio input of %s overflowed (samples lost): the clock fit restarts", self.participant.label
                )
                self.clock.restart(self._samples)
            self.clock.observe(self._samples, capture)
            self._samples += block.samples.size
            chunks.append(block.samples)
        samples = np.concatenate(chunks)
        self._recent.extend(chunks)
        stamps = self.clock.stamps(first, samples.size)
        # liblsl stamps a chunk's earlier samples back from its last at the nominal rate; the fit's
        # drift changes that by under a microsecond over one chunk.
        self._outlet.push_chunk(samples.reshape(-1, 1), float(stamps[-1]))
        if self._file is not None:
            self._file.write(samples)
        fit = (self.clock.offset, self.clock.drift)
        if self._times is not None and fit != self._last_fit:  # stamps are linear in n between rows
            self._times.write(f"{first}\t{float(stamps[0])!r}\t{self.clock.drift * 1e6!r}\n")
            self._times.flush()
            self._last_fit = fit

    def _settle(self, block: _Block, capture: float) -> list[tuple[_Block, float]]:
        """Hold blocks until the capture times are steady; return them once they are.

        Right after a stream starts, a host API may deliver a backlog in a burst with capture
        times it corrects later (PulseAudio's ALSA plugin jumps by half a second): blocks are
        published only from a :data:`SETTLE_S` run whose capture times agree with the sample
        count within :data:`SETTLE_JITTER_S` and that arrived within the input latency plus
        :data:`SETTLE_LAG_SLACK_S`; earlier blocks are dropped (counted in the status).
        """
        window = self._settle_window
        window.append((block, capture))
        rate = self.spec.sample_rate
        count = sum(b.samples.size for b, _ in window)
        while window and count - window[0][0].samples.size >= SETTLE_S * rate:
            dropped, _ = window.popleft()
            count -= dropped.samples.size
            self._dropped_at_start += dropped.samples.size
        max_lag = float(self._stream.latency) + BLOCK_SECONDS + SETTLE_LAG_SLACK_S
        position, residuals, lags = 0, [], []
        for held, held_capture in window:
            residuals.append(held_capture - position / rate)
            lags.append(held.arrival_lsl - held_capture)
            position += held.samples.size
        steady = count >= SETTLE_S * rate and np.ptp(residuals) <= SETTLE_JITTER_S and max(lags) <= max_lag
        waited = self._dropped_at_start / rate
        if not steady and waited < SETTLE_TIMEOUT_S:
            return []
        if not steady:
            logger.warning(
                "the capture times of %s's microphone did not settle within %g s (spread %.1f ms, "
                "arrival up to %.0f ms after capture); publishing anyway",
                self.participant.label,
                SETTLE_TIMEOUT_S,
                np.ptp(residuals) * 1e3,
                max(lags) * 1e3,
            )
        self._settled = True
        held_blocks = list(window)
        window.clear()
        return held_blocks

    # -- status ------------------------------------------------------------------------------
    def recent_audio(self, seconds: float) -> np.ndarray:
        """The latest ``seconds`` of captured samples (at most ``level_window_s``)."""
        recent = list(self._recent)
        if not recent:
            return np.empty(0, dtype=np.float32)
        samples = np.concatenate(recent)
        return samples[-max(1, round(seconds * self.spec.sample_rate)) :]

    @property
    def status(self) -> CaptureStatus:
        """Samples delivered, overflows, clock fit, errors."""
        return CaptureStatus(
            participant=self.participant.label,
            stream_name=self.stream_name,
            source_id=self.source_id,
            device=self.device.full_name if self.device else self.spec.device,
            channel=self.spec.channel,
            sample_rate=self.spec.sample_rate,
            samples=self._samples,
            overflows=self._overflows,
            dropped_at_start=self._dropped_at_start,
            flac=None if self.flac_path is None else str(self.flac_path),
            clock=self.clock.to_dict(),
            error=self._error,
        )


def open_microphones(
    specs: dict[str, MicrophoneSpec],
    participants: Sequence[ParticipantInfo],
    *,
    study: str,
    dyad: str,
    flac_stem: Path | None,
    virtual: Mapping[str, VirtualInput] | None = None,
) -> list[MicrophoneCapture]:
    """Find every microphone, then prepare one capture per participant (none started).

    Parameters
    ----------
    specs : dict of str to MicrophoneSpec
        Participant label -> microphone.
    participants : sequence of ParticipantInfo
        The session's participants (those without a spec get no capture).
    flac_stem : Path | None
        Files go to ``<flac_stem>_audio-<label>.flac``; ``None`` writes none.
    virtual : mapping of str to VirtualInput, optional
        Participant label -> a simulated microphone used instead of the device ``specs`` names.

    Raises
    ------
    AudioDeviceError
        Before any device opens, if any microphone is missing or ambiguous.
    """
    virtual = dict(virtual or {})
    devices = resolve_microphones({label: spec for label, spec in specs.items() if label not in virtual})
    captures: list[MicrophoneCapture] = []
    try:
        for person in participants:
            if person.label not in specs:
                continue
            capture = MicrophoneCapture(
                specs[person.label],
                study=study,
                dyad=dyad,
                participant=person,
                flac_path=None if flac_stem is None else flac_path(flac_stem, person.label),
                device=virtual[person.label].device if person.label in virtual else devices[person.label],
                stream_factory=virtual[person.label].open_stream if person.label in virtual else None,
            )
            capture.prepare()
            captures.append(capture)
    except BaseException:
        for capture in captures:
            capture.release()
        raise
    return captures


def flac_path(stem: Path, participant_label: str) -> Path:
    """``<stem>_audio-<label>.flac``: the participant's audio beside the session's XDF."""
    return stem.with_name(f"{stem.name}_audio-{participant_label}.flac")


def times_path(flac: Path) -> Path:
    """``<...>_audio-<label>_times.tsv`` beside a FLAC file: where its samples are on ``local_clock()``.

    One row whenever the clock fit changed: ``sample`` (0-based index in the FLAC file),
    ``local_clock`` (that sample's stamp, as published on LSL) and ``drift_ppm``; sample ``n`` from
    that row on is at ``local_clock + (n - sample) * (1 + drift_ppm * 1e-6) / rate``.
    """
    return flac.with_name(flac.stem + "_times.tsv")


# --------------------------------------------------------------------------------------------
# Preflight: does each microphone hear its participant?
# --------------------------------------------------------------------------------------------


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def microphone_problems(recordings: dict[str, np.ndarray], sample_rate: float) -> list[Problem]:
    """Level, clipping and silence of each microphone, and whether two hear the same sound alike.

    Parameters
    ----------
    recordings : dict of str to ndarray
        Participant label -> the same seconds of each microphone (full scale ±1).
    sample_rate : float
        Their rate in Hz.

    Returns
    -------
    list of Problem
        Silence (no signal at all: muted, unplugged, wrong channel) and clipping are errors; a very
        quiet microphone is a warning, and so are two microphones hearing one sound at the same level (a swapped or shared channel, or both far
        from their speakers) is a warning.
    """
    problems: list[Problem] = []
    for label, samples in recordings.items():
        stream = audio_stream_name(label)
        level = level_dbfs(samples)
        if samples.size == 0:
            problems.append(
                Problem(
                    "error",
                    "microphone",
                    "the microphone delivered no audio.",
                    "check that the device is connected and not used by another program",
                    participant=label,
                    stream=stream,
                )
            )
            continue
        if level < SILENCE_DBFS:
            problems.append(
                Problem(
                    "error",
                    "microphone",
                    f"the microphone is silent ({level:.0f} dBFS, below {SILENCE_DBFS:.0f}).",
                    "unmute it, check its cable, phantom power and input gain, and that the protocol names "
                    "the channel it is plugged into",
                    participant=label,
                    stream=stream,
                )
            )
        elif level < QUIET_DBFS:
            problems.append(
                Problem(
                    "warning",
                    "microphone",
                    f"the microphone is very quiet ({level:.0f} dBFS, below {QUIET_DBFS:.0f}).",
                    "ask the participant to speak during the check; if they did, raise its input gain",
                    participant=label,
                    stream=stream,
                )
            )
        clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
        if clipped > MAX_CLIPPED_FRACTION:
            problems.append(
                Problem(
                    "error",
                    "microphone",
                    f"the microphone clips ({100 * clipped:.2f}% of samples at full scale).",
                    "turn its input gain down until speech peaks stay below full scale",
                    participant=label,
                    stream=stream,
                )
            )
    labels = [label for label, samples in recordings.items() if level_dbfs(samples) >= SILENCE_DBFS]
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            difference, spread = _level_difference(recordings[first], recordings[second], sample_rate)
            if spread < SAME_SOUND_SPREAD_DB and abs(difference) < SAME_LEVEL_DB:
                problems.append(
                    Problem(
                        "warning",
                        "microphone",
                        f"microphones {first} and {second} hear the same sound alike (level difference "
                        f"{difference:+.1f} ± {spread:.1f} dB throughout): each should mainly hear its own speaker.",
                        "place each microphone close to its own participant (a headset is best) and check that "
                        "the protocol gives each their own channel",
                        participant=f"{first},{second}",
                    )
                )
    return problems


def _level_difference(first: np.ndarray, second: np.ndarray, sample_rate: float) -> tuple[float, float]:
    """Median and standard deviation (dB) of the level difference of two recordings over the 20 ms
    frames with sound; ``(0, inf)`` when there are too few frames to tell."""
    frame = max(1, round(0.02 * sample_rate))
    count = min(first.size, second.size) // frame
    levels = [
        10 * np.log10(np.mean(np.square(x[: count * frame].reshape(count, frame), dtype=np.float64), axis=1) + 1e-20)
        for x in (first, second)
    ]
    if count == 0:
        return 0.0, math.inf
    loudest = np.maximum(levels[0], levels[1])
    sound = loudest >= loudest.max() - SOUND_FRAME_RANGE_DB
    if sound.sum() < 10:
        return 0.0, math.inf
    difference = levels[0][sound] - levels[1][sound]
    return float(np.median(difference)), float(np.std(difference))
