"""Virtual microphones for the audio tests: a private PulseAudio server with one null sink per
participant, whose monitor is that participant's microphone.

Each test process starts its own server (own runtime folder and socket), so parallel workers
never share a device. PortAudio reaches PulseAudio through ALSA's ``pulse`` plugin
(``libasound2-plugins``): an extra ALSA configuration file, named by ``ALSA_CONFIG_PATH`` while
the server runs, defines ``dyadlab_mic_<label>`` (capture from the sink's monitor) and
``dyadlab_speaker_<label>`` (playback into the sink) on that socket. Needs ``pulseaudio``,
``pulseaudio-utils`` and ``libasound2-plugins`` (``.ci/system-deps.sh``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: The system's main ALSA configuration, read before ours (ALSA_CONFIG_PATH replaces the list).
ALSA_MAIN_CONFIG = Path("/usr/share/alsa/alsa.conf")
#: The null sinks' rate, the capture rate: PulseAudio then does not resample. Through a 48 kHz
#: sink (resampled on the way in and out) clicks landed 8 ms early, consistently: the plugin's
#: latency reports do not cover PulseAudio's resamplers, a property of the virtual device.
SINK_RATE = 16000


class VirtualAudioUnavailable(RuntimeError):
    """PulseAudio or the ALSA pulse plugin is not installed or does not start here."""


@dataclass(frozen=True)
class VirtualAudio:
    """A running private PulseAudio server and its ALSA device names."""

    server: str
    labels: tuple[str, ...]

    @staticmethod
    def microphone(label: str) -> str:
        """The PortAudio input name of participant ``label``'s microphone."""
        return f"dyadlab_mic_{label}"

    @staticmethod
    def speaker(label: str) -> str:
        """The PortAudio output that plays into participant ``label``'s microphone."""
        return f"dyadlab_speaker_{label}"


def _alsa_config(socket: Path, labels: tuple[str, ...]) -> str:
    parts = []
    for label in labels:
        parts.append(
            f"""pcm.dyadlab_mic_{label} {{
    type pulse
    server "unix:{socket}"
    device "dyadlab_voice_{label}.monitor"
    hint {{ show on description "dyadlab virtual microphone {label}" }}
}}
pcm.dyadlab_speaker_{label} {{
    type pulse
    server "unix:{socket}"
    device "dyadlab_voice_{label}"
    hint {{ show on description "dyadlab virtual speaker into microphone {label}" }}
}}
"""
        )
    return "".join(parts)


@contextlib.contextmanager
def virtual_microphones(folder: Path, labels: tuple[str, ...] = ("A", "B")) -> Iterator[VirtualAudio]:
    """Run a private PulseAudio server with a null sink per label while the context lasts.

    Raises
    ------
    VirtualAudioUnavailable
        ``pulseaudio`` is missing or the server does not answer within 10 s.
    """
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        raise VirtualAudioUnavailable("pulseaudio / pactl are not installed (see .ci/system-deps.sh)")
    if not any(Path(p).exists() for p in ("/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so",)) and (
        not list(Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_pulse.so"))
    ):
        raise VirtualAudioUnavailable("ALSA's pulse plugin is not installed (libasound2-plugins)")
    folder.mkdir(parents=True, exist_ok=True)
    runtime = folder / "run"
    runtime.mkdir(exist_ok=True)
    runtime.chmod(0o700)
    socket = runtime / "native"
    script = folder / "server.pa"
    script.write_text(
        f"load-module module-native-protocol-unix socket={socket} auth-anonymous=1\n"
        + "".join(
            f"load-module module-null-sink sink_name=dyadlab_voice_{label} rate={SINK_RATE} channels=1 "
            f"sink_properties=device.description=dyadlab_voice_{label}\n"
            for label in labels
        )
    )
    env = dict(os.environ, HOME=str(folder), XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(folder / "config"))
    log = (folder / "pulseaudio.log").open("w")
    server = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"unix:{socket}"
    alsa_config = folder / "asound.conf"
    alsa_config.write_text(_alsa_config(socket, labels))
    previous = os.environ.get("ALSA_CONFIG_PATH")
    try:
        _wait_for_server(address, server, folder / "pulseaudio.log")
        os.environ["ALSA_CONFIG_PATH"] = f"{ALSA_MAIN_CONFIG}:{alsa_config}"
        yield VirtualAudio(server=address, labels=labels)
    finally:
        if previous is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = previous
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_for_server(address: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise VirtualAudioUnavailable(f"pulseaudio exited ({server.returncode}): {log.read_text()[-2000:]}")
        answer = subprocess.run(
            ["pactl", "--server", address, "list", "short", "sinks"], capture_output=True, text=True, check=False
        )
        if answer.returncode == 0 and "dyadlab_voice_" in answer.stdout:
            return
        time.sleep(0.1)
    raise VirtualAudioUnavailable(f"pulseaudio did not answer within {timeout:g} s: {log.read_text()[-2000:]}")


def play(speaker: str, signal: np.ndarray, sample_rate: float, marks: Sequence[int] = (0,)) -> list[float]:
    """Play ``signal`` into a virtual speaker; return when each sample of ``marks`` sounds, on
    ``local_clock()``.

    The times come from PortAudio's ``outputBufferDacTime`` of every block, reduced as the
    capture's clock is (the sample count is the truth): sample ``n`` sounds at
    ``median(dac_i - n_i / rate) + n / rate`` over the blocks of the signal's second half, where
    the output's delay estimate has settled (PulseAudio's ALSA plugin misreports it by tens of
    ms for about the first two seconds of a stream). Then the stream clock is moved onto
    ``local_clock()``. A mark is what a task pushes when it writes a click to its sound device.
    Blocks until the whole signal has been played.

    Raises
    ------
    RuntimeError
        The output underflowed (a late callback on a loaded machine): the sample count no longer
        tells when a sample sounded, so no time is returned.
    """
    import threading

    import sounddevice as sd

    from dyadlab.acquisition.audio import measure_clock_offset

    position = 0
    blocks: list[tuple[int, float]] = []
    underflows = 0
    done = threading.Event()

    def callback(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        nonlocal position, underflows
        chunk = signal[position : position + frames]
        outdata[: chunk.size, 0] = chunk
        outdata[chunk.size :, 0] = 0
        blocks.append((position, float(time_info.outputBufferDacTime)))
        underflows += bool(status.output_underflow)
        position += frames
        if position >= signal.size + round(0.2 * sample_rate):  # 200 ms of silence after the signal
            raise sd.CallbackStop

    stream = sd.OutputStream(
        device=speaker,
        channels=1,
        samplerate=sample_rate,
        dtype="float32",
        latency=0.2,  # a deep buffer: no underflow when the test machine is busy
        callback=callback,
        finished_callback=done.set,
    )
    with stream:
        offset, _ = measure_clock_offset(lambda: stream.time)
        done.wait(timeout=signal.size / sample_rate + 10.0)
    if underflows:
        raise RuntimeError(f"the virtual speaker {speaker} underflowed {underflows} time(s) (machine too busy)")
    settled = np.array([dac - start / sample_rate for start, dac in blocks if start >= signal.size // 2])
    return [float(np.median(settled)) + mark / sample_rate + offset for mark in marks]


@contextlib.contextmanager
def talking(speakers: dict[str, str], sample_rate: float, level: float = 0.1, seed: int = 0) -> Iterator[None]:
    """Keep playing speech-like sound (noise switched on and off at a syllable rate, each voice
    with its own rhythm) into each virtual speaker while the context lasts: live microphones for a
    whole session."""
    import sounddevice as sd

    rng = np.random.default_rng(seed)
    streams = []
    for index, speaker in enumerate(speakers.values()):
        phase = [0.0]
        rate_hz = 3.0 + index  # a different rhythm per voice: the microphones do not hear alike
        voice_rng = np.random.default_rng(rng.integers(1 << 31))

        def callback(
            outdata: np.ndarray,
            frames: int,
            time_info: Any,
            status: Any,
            phase: list = phase,
            rate_hz: float = rate_hz,
            voice_rng: np.random.Generator = voice_rng,
        ) -> None:
            t = phase[0] + np.arange(frames) / sample_rate
            envelope = np.sin(2 * np.pi * rate_hz * t) > 0
            outdata[:, 0] = level * envelope * voice_rng.standard_normal(frames)
            phase[0] += frames / sample_rate

        stream = sd.OutputStream(
            device=speaker, channels=1, samplerate=sample_rate, dtype="float32", latency=0.2, callback=callback
        )
        streams.append(stream)
    try:
        for stream in streams:
            stream.start()
        yield
    finally:
        for stream in streams:
            stream.close()
