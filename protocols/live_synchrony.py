"""Live inter-brain synchrony as an LSL stream, and the helper processes of ``dyadlab run``.

``dyadlab live-synchrony`` reads participant A's and B's EEG streams (by ``source_id``), puts
them on one time grid (:class:`dyadlab.synchrony.live.StreamAligner`), computes sliding-window
PLV and envelope correlation per band with their chance levels
(:class:`dyadlab.synchrony.live.SlidingSynchrony`) and publishes them as one LSL stream, which
the session's recorder records and the dyad monitor draws. The stream (``docs/live-synchrony.md``):

* name ``dyadlab-live-synchrony``, type ``Synchrony``, ``source_id``
  ``dyadlab.<study>.<dyad>.synchrony``, float32, nominal rate ``1 / step_s`` (2 Hz);
* channels ``<metric>_<band>`` and ``<metric>_<band>_chance`` (:func:`dyadlab.synchrony.live.channel_labels`);
* each sample stamped with the LSL time of its window's end (the grid time of the window's last
  sample plus one sample period), pushed ``settle_s`` seconds (plus up to one chunk) later;
* ``desc/synchrony``: ``window_s``, ``step_s``, ``settle_s``, ``chance_quantile``, ``chance_method``,
  ``bands/<name>/{low_hz,high_hz}``, ``band_filter``, ``session_id``, ``source_id_a``, ``source_id_b``,
  ``eeg_rate_hz``.

:class:`SessionHelpers` starts the publisher, the live speech detector (``dyadlab live-speech``,
:mod:`dyadlab.protocols.live_speech`) and the monitor (``dyadlab monitor``) for ``dyadlab run`` as
separate processes (``python -m dyadlab ...``), so that a crash, a stall or a ``kill -9`` of any
never touches the recording; the run records what ran (command, pid,
address, exit code) in ``session.json`` and treats any failure of theirs as a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from dyadlab import DyadlabError
from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config, discard_lsl_config, session_id_in_force
from dyadlab.acquisition.streams import declared_channels, source_id
from dyadlab.synchrony.live import (
    CHANCE_QUANTILE,
    LIVE_METRICS,
    LiveSettings,
    SlidingSynchrony,
    StreamAligner,
)

if TYPE_CHECKING:
    import pylsl

logger = logging.getLogger(__name__)

STREAM_NAME = "dyadlab-live-synchrony"
STREAM_TYPE = "Synchrony"
#: How the chance channels are made (written into the stream's description).
CHANCE_METHOD = (
    "95th percentile of the mean-over-pairs value of earlier, non-overlapping windows of one participant "
    "paired with the current window of the other (time-shifted pairings, pooled over recent windows)"
)
#: Seconds between two reads of the EEG inlets.
_POLL_S = 0.05
#: How long the publisher looks for each EEG stream before giving up.
RESOLVE_TIMEOUT_S = 30.0
#: How long ``dyadlab run`` waits for a helper's first sign of life (the stream, the address).
HELPER_START_TIMEOUT_S = 20.0
#: How long a helper may take to end after SIGTERM before it is killed.
HELPER_STOP_TIMEOUT_S = 5.0
_URL = re.compile(r"^\s*(https?://\S+)\s*$")


class HelperStreamError(DyadlabError, RuntimeError):
    """A live helper (synchrony, speech) cannot run: a stream it reads is missing or unfit."""


class LiveSynchronyError(HelperStreamError):
    """The live synchrony publisher cannot run (a stream missing, rates that differ...)."""


@dataclass(frozen=True)
class EegInput:
    """One participant's EEG inlet, its rate and which of its channels are EEG."""

    inlet: pylsl.StreamInlet
    rate: float
    eeg: np.ndarray  # channel indices
    labels: list[str]


def resolve_source(wanted: str, what: str, stop: threading.Event, timeout: float) -> pylsl.StreamInfo | None:
    """The stream with ``source_id`` ``wanted`` (``what`` names its kind in the error), ``None`` if
    ``stop`` is set first.

    Raises
    ------
    HelperStreamError
        No such stream within ``timeout`` seconds.
    """
    import pylsl

    resolver = pylsl.ContinuousResolver(prop="source_id", value=wanted)
    began = time.monotonic()
    try:
        while True:
            found = resolver.results()
            if found:
                return found[0]
            if stop.wait(0.1):
                return None
            if time.monotonic() - began >= timeout:
                raise HelperStreamError(
                    f"no {what} stream with source_id {wanted!r} within {timeout:g} s (LSL SessionID in force: "
                    f"{session_id_in_force()!r}); start the session's streams first, or pass the right --source-id-a/-b"
                )
    finally:
        del resolver


def _open_eeg(wanted: str, stop: threading.Event, timeout: float) -> EegInput | None:
    """Resolve the stream with ``source_id`` ``wanted`` and open a clock-synchronised inlet on it
    (``None`` if ``stop`` is set first)."""
    import pylsl

    found = resolve_source(wanted, "EEG", stop, timeout)
    if found is None:
        return None
    inlet = pylsl.StreamInlet(
        found, max_buflen=30, processing_flags=pylsl.proc_clocksync | pylsl.proc_dejitter, recover=True
    )
    info = inlet.info(timeout=5.0)
    rate = float(info.nominal_srate())
    if not rate > 0:
        raise LiveSynchronyError(f"stream {wanted!r} has no regular sampling rate: it is not an EEG stream")
    # EEG channels: those declared EEG, or every channel of a stream that declares no types (the
    # board's marker channel of a dyadlab stream is declared "Marker").
    declared = declared_channels(info)
    labels = [channel.label for channel in declared]
    types = [channel.type.strip().lower() for channel in declared]
    count = int(info.channel_count())
    if len(types) != count:
        labels, types = [f"ch{i + 1}" for i in range(count)], [""] * count
    eeg = np.array([i for i, kind in enumerate(types) if kind in ("", "eeg")], dtype=int)
    if eeg.size < 1:
        raise LiveSynchronyError(f"stream {wanted!r} declares no EEG channel")
    inlet.open_stream(timeout=5.0)
    return EegInput(inlet, rate, eeg, [labels[i] for i in eeg])


def synchrony_stream_info(
    study: str,
    dyad: str,
    estimator: SlidingSynchrony,
    *,
    source_id_a: str,
    source_id_b: str,
) -> pylsl.StreamInfo:
    """LSL info of the live synchrony stream (the contract of the module docstring)."""
    import pylsl

    info = pylsl.StreamInfo(
        name=STREAM_NAME,
        type=STREAM_TYPE,
        channel_count=len(estimator.labels),
        nominal_srate=1.0 / estimator.step_s,
        channel_format="float32",
        source_id=source_id(study, dyad, "synchrony"),
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label in estimator.labels:
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("type", STREAM_TYPE)
        channel.append_child_value("metric", label.split("_")[0])
        channel.append_child_value("band", label.split("_")[1])
        channel.append_child_value("unit", "PLV" if label.startswith("plv") else "r")
    about = desc.append_child("synchrony")
    for key, value in (
        ("window_s", estimator.window_s),
        ("step_s", estimator.step_s),
        ("settle_s", round(estimator.settle_s, 4)),
        ("metrics", ",".join(LIVE_METRICS)),
        ("chance_quantile", CHANCE_QUANTILE),
        ("chance_method", CHANCE_METHOD),
        ("band_filter", "butterworth"),
        ("timestamp", "LSL time of the window's end"),
        ("session_id", session_id_in_force()),
        ("source_id_a", source_id_a),
        ("source_id_b", source_id_b),
        ("eeg_rate_hz", estimator.rate),
    ):
        about.append_child_value(key, str(value))
    bands = about.append_child("bands")
    for name, (low, high) in estimator.bands.items():
        band = bands.append_child(name)
        band.append_child_value("low_hz", f"{low:g}")
        band.append_child_value("high_hz", f"{high:g}")
    tags = desc.append_child("dyadlab")
    for key, value in (("kind", "synchrony"), ("study", study), ("dyad", dyad)):
        tags.append_child_value(key, value)
    return info


def publish_live_synchrony(
    study: str,
    dyad: str,
    source_id_a: str,
    source_id_b: str,
    settings: LiveSettings,
    stop: threading.Event,
    *,
    resolve_timeout: float = RESOLVE_TIMEOUT_S,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Publish live synchrony of two EEG streams until ``stop`` is set; return the windows published.

    Raises
    ------
    LiveSynchronyError
        When a stream is not found, is not EEG, or the two rates differ.
    """
    import pylsl

    inputs = []
    for wanted in (source_id_a, source_id_b):
        opened = _open_eeg(wanted, stop, resolve_timeout)
        if opened is None:
            return 0
        inputs.append(opened)
    rate_a, rate_b = inputs[0].rate, inputs[1].rate
    if not math.isclose(rate_a, rate_b):
        raise LiveSynchronyError(
            f"A's EEG runs at {rate_a:g} Hz and B's at {rate_b:g} Hz; live synchrony needs one rate "
            "(the quick-check resamples offline)"
        )
    estimator = SlidingSynchrony(rate_a, settings)
    outlet = pylsl.StreamOutlet(
        synchrony_stream_info(study, dyad, estimator, source_id_a=source_id_a, source_id_b=source_id_b)
    )
    logger.info(
        "live synchrony: %s x %s channels at %g Hz, %g-s windows every %g s, values %.2f s after each window",
        inputs[0].eeg.size,
        inputs[1].eeg.size,
        rate_a,
        estimator.window_s,
        estimator.step_s,
        estimator.settle_s,
    )
    if on_ready is not None:
        on_ready(source_id(study, dyad, "synchrony"))
    aligner = StreamAligner(rate_a)
    origin: float | None = None
    published = 0
    while not stop.wait(_POLL_S):
        for participant, source in enumerate(inputs):
            samples, stamps = source.inlet.pull_chunk(timeout=0.0, max_samples=4096)
            if not stamps:
                continue
            chunk = aligner.push(participant, np.asarray(samples, dtype=np.float64).T[source.eeg], np.asarray(stamps))
            if chunk is None:
                continue
            if origin is None:
                origin = chunk.start
            for window in estimator.push(chunk.a, chunk.b):
                outlet.push_sample(window.values.tolist(), origin + window.end / rate_a)
                published += 1
    return published


@click.command("live-synchrony")
@click.option("--study", required=True, help="Study id of the session (names the stream's source_id).")
@click.option("--dyad", required=True, help="Dyad id of the session.")
@click.option("--source-id-a", default=None, help="source_id of A's EEG (default dyadlab.<study>.<dyad>.A.eeg).")
@click.option("--source-id-b", default=None, help="source_id of B's EEG (default dyadlab.<study>.<dyad>.B.eeg).")
@click.option("--session-id", default=None, help="LSL SessionID of the session (default: this machine's lsl_api.cfg).")
@click.option("--window-s", type=float, default=2.0, show_default=True, help="Window length (seconds).")
@click.option("--step-s", type=float, default=0.5, show_default=True, help="Seconds between windows.")
@click.option("--until-stdin-closes", is_flag=True, hidden=True, help="Also stop when standard input closes.")
def live_synchrony(
    study: str,
    dyad: str,
    source_id_a: str | None,
    source_id_b: str | None,
    session_id: str | None,
    window_s: float,
    step_s: float,
    until_stdin_closes: bool,
) -> None:
    """Publish live inter-brain synchrony (PLV, envelope correlation per band, with chance levels) as an LSL stream."""
    try:
        if session_id is not None:
            apply_lsl_config(LslConfig(session_id=session_id))
        settings = LiveSettings(window_s=window_s, step_s=step_s)
        wanted_a = source_id_a or source_id(study, dyad, "eeg", "A")
        wanted_b = source_id_b or source_id(study, dyad, "eeg", "B")
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    stop = helper_stop_event(until_stdin_closes)
    try:
        published = publish_live_synchrony(
            study,
            dyad,
            wanted_a,
            wanted_b,
            settings,
            stop,
            on_ready=lambda sid: click.echo(f"publishing live synchrony as {sid}"),
        )
    except HelperStreamError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"live synchrony stopped after {published} windows")


def helper_stop_event(until_stdin_closes: bool) -> threading.Event:
    """An event a helper command stops on: set by SIGTERM, SIGINT or SIGHUP, and with
    ``until_stdin_closes`` when standard input closes (``dyadlab run`` holds the other end: killed
    outright, it takes the helper with it)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    if until_stdin_closes:

        def stop_at_end_of_input() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=stop_at_end_of_input, name="stdin-watch", daemon=True).start()
    return stop


# -- helper processes of `dyadlab run` ------------------------------------------------------------------


@dataclass
class HelperProcess:
    """A helper (``dyadlab live-synchrony``, ``dyadlab monitor``) started by ``dyadlab run``.

    Its standard output and error go to ``log`` (lines are copied by a thread); the first line
    that is an address (``http://...``) is kept as :attr:`url`.
    """

    name: str
    command: list[str]
    log: Path
    #: Give it a pipe as standard input, closed only when this process ends (however it ends).
    stdin_pipe: bool = False
    process: subprocess.Popen[str] | None = None
    url: str | None = None
    exit_code: int | None = None
    ended_before_stop: bool = False
    error: str | None = None
    _seen_url: threading.Event = field(default_factory=threading.Event, repr=False)
    _seen_line: threading.Event = field(default_factory=threading.Event, repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        """Start the process (its output to :attr:`log`)."""
        try:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,  # a Ctrl-C in the operator's terminal reaches the run only
            )
        except OSError as error:
            self.error = f"could not start: {error}"
            return
        self._reader = threading.Thread(target=self._copy_output, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log.open("a", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                self._seen_line.set()
                match = _URL.match(line)
                if match and self.url is None:
                    self.url = match.group(1)
                    self._seen_url.set()
        self._seen_line.set()
        self._seen_url.set()

    def wait_for_url(self, timeout: float) -> str | None:
        """The address the helper printed, waiting up to ``timeout`` seconds."""
        self._seen_url.wait(timeout)
        return self.url

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = HELPER_STOP_TIMEOUT_S) -> None:
        """Terminate (SIGTERM), wait, kill if needed; note how it ended."""
        if self.process is None:
            return
        code = self.process.poll()
        if code is not None:
            self.ended_before_stop = True
        else:
            self.process.terminate()
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not end within %g s of SIGTERM; killing it", self.name, timeout)
                self.process.kill()
                code = self.process.wait()
        self.exit_code = code
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self._reader is not None:
            self._reader.join(2.0)

    def describe_end(self) -> str | None:
        """A warning if it ended on its own, or not cleanly; ``None`` when all went well."""
        if self.error is not None:
            return f"{self.name} {self.error}"
        if self.exit_code is None:
            return None
        how = f"signal {-self.exit_code}" if self.exit_code < 0 else f"exit code {self.exit_code}"
        if self.ended_before_stop:
            return f"{self.name} ended during the session ({how}); the recording went on without it (log: {self.log})"
        if self.exit_code not in (0, -signal.SIGTERM):
            return f"{self.name} ended with {how} when stopped (log: {self.log})"
        return None

    def record(self) -> dict[str, Any]:
        """What ``session.json`` keeps about it."""
        return {
            "command": self.command,
            "pid": None if self.process is None else self.process.pid,
            "url": self.url,
            "log": str(self.log),
            "exit_code": self.exit_code,
            "ended_during_session": self.ended_before_stop,
            "problem": self.describe_end(),
        }


@dataclass
class SessionHelpers:
    """The helper processes of one ``dyadlab run``: live synchrony publisher, live speech detector
    and dyad monitor.

    Parameters
    ----------
    study, dyad : str
        The session's ids (the streams' source_ids).
    lsl_config : LslConfig
        The run's LSL settings; the helpers get them through their own ``lsl_api.cfg``.
    log_stem : Path
        Logs go to ``<stem>_<helper>.log``.
    status : callable(stage, message)
        The run's status output (the monitor's address goes there).
    warn : callable(message)
        Where a helper's failure goes (the session's problems): a warning, never a failed session.
    """

    study: str
    dyad: str
    lsl_config: LslConfig
    log_stem: Path
    status: Callable[[str, str], None]
    warn: Callable[[str], None]
    helpers: dict[str, HelperProcess] = field(default_factory=dict)
    _config_path: Path | None = None

    def _environment(self) -> dict[str, str]:
        """The helpers' environment: this one, with the run's LSL configuration in a file of their own
        (this process's liblsl has read its configuration already; the file stays until they end)."""
        previous = os.environ.get("LSLAPICFG")
        self._config_path = apply_lsl_config(self.lsl_config)
        env = dict(os.environ)
        if previous is None:
            os.environ.pop("LSLAPICFG", None)
        else:
            os.environ["LSLAPICFG"] = previous
        return env

    def _start(
        self, name: str, arguments: Sequence[str], env: dict[str, str], *, stdin_pipe: bool = False
    ) -> HelperProcess:
        helper = HelperProcess(
            name=name,
            command=[sys.executable, "-m", "dyadlab", *arguments],
            log=self.log_stem.with_name(f"{self.log_stem.name}_{name}.log"),
            stdin_pipe=stdin_pipe,
        )
        helper.start(env)
        self.helpers[name] = helper
        if helper.error is not None:
            self.warn(f"{name} {helper.error}; the session goes on without it")
        return helper

    def start(
        self, *, live_synchrony: Any | None, monitor: Any | None, live_speech: Sequence[str] | None = None
    ) -> None:
        """Start the publisher (``live_synchrony``: the protocol's settings, or None), the live speech
        detector (``live_speech``: the two microphones' participant labels, or None) and the monitor
        (``monitor``: its settings, or None) side by side, then wait for the publishers' streams and the
        monitor's address (a warning, not an error, when they do not come)."""
        if live_synchrony is None and monitor is None and live_speech is None:
            return
        env = self._environment()
        publishers: list[tuple[HelperProcess, str, str]] = []  # helper, its stream's source_id, what it is
        monitor_process = None
        if live_synchrony is not None:
            arguments = ["live-synchrony", "--study", self.study, "--dyad", self.dyad]
            arguments += ["--window-s", f"{live_synchrony.window_seconds:g}"]
            arguments += ["--step-s", f"{live_synchrony.step_seconds:g}", "--until-stdin-closes"]
            publisher = self._start("live-synchrony", arguments, env, stdin_pipe=True)
            publishers.append((publisher, source_id(self.study, self.dyad, "synchrony"), "live synchrony"))
        if live_speech is not None:
            arguments = ["live-speech", "--study", self.study, "--dyad", self.dyad]
            arguments += ["--label-a", live_speech[0], "--label-b", live_speech[1], "--until-stdin-closes"]
            detector = self._start("live-speech", arguments, env, stdin_pipe=True)
            publishers.append((detector, source_id(self.study, self.dyad, "speech"), "live speech"))
        if monitor is not None:
            # The recorder's file (written once the recorder starts) fills the monitor's recorder panel.
            recording = self.log_stem.with_name(self.log_stem.name + ".xdf")
            arguments = ["monitor", "--port", str(monitor.port), "--recording", str(recording)]
            monitor_process = self._start("monitor", arguments + ([] if monitor.browser else ["--no-browser"]), env)
        for publisher, wanted, what in publishers:
            if publisher.process is not None and not _wait_for_stream(wanted, HELPER_START_TIMEOUT_S, publisher):
                self.warn(
                    f"the {what} stream did not appear within {HELPER_START_TIMEOUT_S:g} s (log: "
                    f"{publisher.log}); it is recorded if it appears later"
                )
        if monitor_process is not None and monitor_process.process is not None:
            url = monitor_process.wait_for_url(HELPER_START_TIMEOUT_S)
            if url is None:
                self.warn(
                    f"the dyad monitor printed no address within {HELPER_START_TIMEOUT_S:g} s "
                    f"(log: {monitor_process.log})"
                )
            else:
                self.status("monitor", url)

    def stop(self) -> None:
        """Stop every helper (each at most :data:`HELPER_STOP_TIMEOUT_S` + kill) and note failures."""
        for helper in self.helpers.values():
            try:
                helper.stop()
            except OSError as error:  # the process table refusing us must not fail the session
                helper.error = f"could not be stopped: {error}"
            problem = helper.describe_end()
            if problem is not None:
                self.warn(problem)
        discard_lsl_config(self._config_path)
        self._config_path = None

    def record(self) -> dict[str, Any]:
        """``session.json``'s ``helpers`` section."""
        return {name: helper.record() for name, helper in self.helpers.items()}


def _wait_for_stream(wanted: str, timeout: float, helper: HelperProcess) -> bool:
    """Whether a stream with ``source_id`` ``wanted`` appears within ``timeout`` s while ``helper`` runs."""
    import pylsl

    resolver = pylsl.ContinuousResolver(prop="source_id", value=wanted)
    began = time.monotonic()
    try:
        while time.monotonic() - began < timeout:
            if resolver.results():
                return True
            if not helper.running:
                return False
            time.sleep(0.1)
        return False
    finally:
        del resolver


def start_session_helpers(
    protocol: Any,
    lsl_config: LslConfig,
    log_stem: Path,
    status: Callable[[str, str], None],
    warn: Callable[[str], None],
    resources: contextlib.ExitStack,
) -> SessionHelpers:
    """Start the helpers ``protocol`` (a :class:`dyadlab.protocols.schema.Protocol`) enables, stopped
    when ``resources`` unwinds (registered first: stopped after whatever starts later, the recorder)."""
    helpers = SessionHelpers(protocol.study, protocol.dyad, lsl_config, log_stem, status, warn)
    resources.callback(helpers.stop)
    try:
        microphones = protocol.microphones
        helpers.start(
            live_synchrony=protocol.live_synchrony if protocol.live_synchrony.enabled else None,
            monitor=protocol.monitor if protocol.monitor.enabled else None,
            live_speech=[person.label for person in protocol.participants]
            if microphones is not None and microphones.record_audio and microphones.live_speech
            else None,
        )
    except Exception as error:  # whatever goes wrong with a helper, the session goes on without it
        logger.exception("starting the session's helper processes failed")
        warn(f"starting the helper processes failed ({type(error).__name__}: {error}); the session goes on")
    return helpers
