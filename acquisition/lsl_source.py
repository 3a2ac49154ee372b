"""A participant's EEG from an amplifier that streams LSL itself (BrainAmp, LiveAmp, eego, g.tec...).

Many amplifiers stream through their vendor's LSL app rather than BrainFlow. In a protocol such a
participant's device is ``{board: lsl, source_id: ...}`` (or ``name:`` with ``hostname:``):
:class:`LslStreamSpec`. :class:`LslStreamSource` resolves that stream (exactly one must match),
reads it through an inlet whose timestamps liblsl moves onto this computer's ``local_clock()``
(``proc_clocksync``: the vendor's sample stamps plus the measured clock offset, nothing smoothed),
and serves it as an :class:`~dyadlab.acquisition.sources.EegSource`. The session's
:class:`~dyadlab.acquisition.bridge.BoardBridge` republishes it as the participant's
``{dyad}-{label}-EEG`` stream with the participant's identity in its metadata, so preflight
(presence, rate, timestamps on the LSL clock, plausible channels), the recorder and the
quick-check treat it exactly as a BrainFlow board's stream. The vendor stream's identity (name,
source_id, hostname, uid) is kept in the republished stream's ``<device>`` metadata.

Channels: those whose declared ``type`` is EEG (or undeclared) are the EEG, unless ``channels``
lists them; the others (AUX, photodiode, trigger...) go to the participant's AUX stream, where
the quick-check's timing verification looks for a photodiode or TTL. Values are converted to
microvolts from the declared unit (``unit`` in the protocol overrides it).

Such a stream has no board marker channel (:attr:`LslStreamSource.has_marker_channel` is
False): EEG and markers are aligned by their LSL timestamps alone, which the quick-check states;
a photodiode or TTL on an AUX input measures the real latency (``docs/protocols.md``).

The vendor app and this computer must share the LSL SessionID (the protocol's
``lsl.session_id``): a stream of another SessionID is invisible.

Network faults. The inlet is opened with liblsl's ``recover``: when the vendor's PC or the link
to it goes quiet, the inlet stays subscribed and liblsl resumes the transfer (or re-resolves the
stream by its source_id after a restart of the app), delivering what the outlet buffered with its
original stamps. So the bridge reports a stall but keeps reading
(:attr:`LslStreamSource.reconnect_after_silence_s`); it resolves the stream anew only when the
inlet says the stream is lost (a stream without source_id cannot be recovered) or after a silence
longer than the inlet's buffer.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dyadlab.acquisition.lslconfig import session_id_in_force
from dyadlab.acquisition.sources import SourceChunk, SourceConfigError, SourceDisconnectedError
from dyadlab.acquisition.streams import declared_channels
from dyadlab.channel_quality import microvolts_per_unit

logger = logging.getLogger(__name__)

#: The device value of a participant whose EEG is an existing LSL stream.
LSL_BOARD = "lsl"
#: After the first match, how long answers are still collected (a second match is ambiguity).
_SETTLE_S = 0.5
#: Seconds of samples the inlet holds unread (liblsl's ``max_buflen``); a silence longer than
#: this is no link hiccup that liblsl bridges, so the stream is then resolved anew.
INLET_BUFFER_S = 60
_NUMERIC_FORMATS = frozenset({"float32", "double64", "int8", "int16", "int32", "int64"})


class LslStreamSpec(BaseModel):
    """A protocol's ``device`` for an existing LSL stream.

    Attributes
    ----------
    board : "lsl"
    source_id : str | None
        The stream's exact ``source_id`` (the most reliable choice: it survives restarts).
    name, hostname : str | None
        The stream's name, and the computer it comes from (recommended with ``name``).
    unit : str | None
        The unit of the values (``microvolts``, ``millivolts``, ``volts``, ``nanovolts``) when the
        stream does not declare one, or declares it wrongly.
    channels : list of str | None
        The EEG channels by label (the rest goes to the AUX stream); default: the channels
        declared EEG, or all when none is declared.
    resolve_timeout_s : float
        How long to look for the stream.
    """

    model_config = ConfigDict(extra="forbid")

    board: Literal["lsl"] = "lsl"
    source_id: str | None = None
    name: str | None = None
    hostname: str | None = None
    unit: str | None = None
    channels: list[str] | None = Field(default=None, min_length=1)
    resolve_timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("source_id", "name", "hostname")
    @classmethod
    def _quotable(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "'" in value or any(ord(c) < 32 for c in value)):
            raise ValueError(f"{value!r} cannot be used in an LSL query: give the exact text, without quotes")
        return value

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str | None) -> str | None:
        if value is not None and microvolts_per_unit(value) is None:
            raise ValueError(f"unknown unit {value!r}: use microvolts, millivolts, volts or nanovolts")
        return value

    @model_validator(mode="after")
    def _selects_a_stream(self) -> LslStreamSpec:
        if self.source_id is None and self.name is None:
            raise ValueError(
                "an LSL device needs source_id (or name, with hostname when several computers stream); "
                "the vendor app shows them, and a run that finds no stream lists those it sees"
            )
        return self

    @property
    def query(self) -> str:
        """The LSL predicate selecting the stream."""
        fields = {"source_id": self.source_id, "name": self.name, "hostname": self.hostname}
        return " and ".join(f"{key}='{value}'" for key, value in fields.items() if value is not None)


class LslStreamSource:
    """One participant's EEG from an existing LSL stream (see the module docstring).

    The stream is resolved when the source is created (its channels and rate make the
    participant's stream description); :meth:`prepare` resolves it again after a disconnection.

    Parameters
    ----------
    spec : LslStreamSpec
    participant : str
        The participant label, for messages.
    reconnect_after_silence_s : float
        The bridge keeps the inlet through a silence up to this long (default: the inlet's buffer,
        :data:`INLET_BUFFER_S`): liblsl resumes the subscription itself and delivers what the
        outlet buffered; releasing the inlet earlier would throw that away. After a longer
        silence the stream is resolved anew.

    Raises
    ------
    SourceConfigError
        No stream, or several streams, match; the stream is not numeric EEG at a regular rate;
        a channel or the unit cannot be found.
    """

    has_marker_channel = False

    def __init__(
        self, spec: LslStreamSpec, *, participant: str, reconnect_after_silence_s: float = float(INLET_BUFFER_S)
    ) -> None:
        if not reconnect_after_silence_s > 0:
            raise ValueError(f"reconnect_after_silence_s must be > 0 s, got {reconnect_after_silence_s!r}.")
        self.spec = spec
        self.participant = participant
        self.reconnect_after_silence_s = float(reconnect_after_silence_s)
        self._inlet: Any = None
        info = self._resolve()
        self._layout = self._read_layout(info)
        self.sampling_rate: float = self._layout["rate"]
        self.eeg_channel_names: list[str] = self._layout["eeg_names"]
        self.aux_channel_names: list[str] = self._layout["aux_names"]
        self.description: dict[str, str] = {
            "board": LSL_BOARD,
            "lsl_name": info.name(),
            "lsl_type": info.type(),
            "lsl_source_id": info.source_id(),
            "lsl_hostname": info.hostname(),
            "lsl_uid": info.uid(),
            "unit": self._layout["unit"],
            "marker_channel": "none: EEG and markers are aligned by LSL timestamps",
        }

    # -- resolving ---------------------------------------------------------------------------
    def _resolve(self) -> Any:
        """The one stream matching the spec (its full info, desc included)."""
        import pylsl

        resolver = pylsl.ContinuousResolver(pred=self.spec.query, forget_after=max(5.0, self.spec.resolve_timeout_s))
        found: dict[str, Any] = {}
        began = time.monotonic()
        first_at: float | None = None
        try:
            while True:
                for info in resolver.results():
                    found.setdefault(info.uid(), info)
                now = time.monotonic()
                if found and first_at is None:
                    first_at = now
                if now - began >= self.spec.resolve_timeout_s or (first_at is not None and now - first_at >= _SETTLE_S):
                    break
                time.sleep(0.05)
        finally:
            del resolver
        where = f"participant {self.participant}'s LSL stream ({self.spec.query})"
        if not found:
            visible = pylsl.resolve_streams(wait_time=1.0)
            listing = "\n".join(
                f"    {i.name()!r} type={i.type()!r} source_id={i.source_id()!r} host={i.hostname()}"
                for i in visible[:20]
            )
            raise SourceConfigError(
                f"No {where} found within {self.spec.resolve_timeout_s:g} s. LSL SessionID in force: "
                f"{session_id_in_force()!r}; streams visible under it:\n{listing or '    (none)'}\n"
                "Check that the amplifier's LSL app is streaming, that the protocol's source_id/name/hostname "
                "match it exactly, and that the app uses the same LSL SessionID (the protocol's lsl.session_id)."
            )
        if len(found) > 1:
            listing = "; ".join(f"{i.name()!r} on {i.hostname()} (source_id {i.source_id()!r})" for i in found.values())
            raise SourceConfigError(
                f"{len(found)} streams match {where}: {listing}. Add hostname (or use source_id) in the "
                "participant's device so that exactly one matches."
            )
        info = next(iter(found.values()))
        inlet = pylsl.StreamInlet(info, max_buflen=INLET_BUFFER_S, processing_flags=pylsl.proc_clocksync, recover=True)
        try:
            full = inlet.info(timeout=max(2.0, self.spec.resolve_timeout_s))
        except pylsl.TimeoutError:
            raise SourceConfigError(
                f"{where} was found but does not answer (its computer or network is down?)"
            ) from None
        self._inlet = inlet
        return full

    def _read_layout(self, info: Any) -> dict[str, Any]:
        """Rate, EEG and AUX channel indices and names, and microvolts per unit, from the info."""
        where = f"participant {self.participant}'s LSL stream {info.name()!r}"
        rate = float(info.nominal_srate())
        if not rate > 0:
            raise SourceConfigError(f"{where} has an irregular rate: it is not an EEG stream (select the amplifier's)")
        channel_format = _format_name(info.channel_format())
        if channel_format not in _NUMERIC_FORMATS:
            raise SourceConfigError(f"{where} carries {channel_format} values, not numbers: select the EEG stream")
        count = int(info.channel_count())
        labels, types, units = _declared_channels(info, count)
        if self.spec.channels is not None:
            unknown = [name for name in self.spec.channels if name not in labels]
            if unknown:
                raise SourceConfigError(
                    f"{where} has no channel {', '.join(map(repr, unknown))}; its channels are {', '.join(labels)}"
                )
            eeg = [labels.index(name) for name in self.spec.channels]
        else:
            eeg = [i for i, kind in enumerate(types) if kind in ("", "eeg")]
        if not eeg:
            raise SourceConfigError(f"{where} declares no EEG channel; list them under the device's channels")
        aux = [i for i in range(count) if i not in eeg]
        unit = self.spec.unit or next((units[i] for i in eeg if units[i]), "")
        scale = microvolts_per_unit(unit)
        if scale is None:
            raise SourceConfigError(
                f"{where} does not declare a unit dyadlab knows ({unit!r}); set unit: microvolts (or millivolts, "
                "volts) in the participant's device"
            )
        return {
            "rate": rate,
            "count": count,
            "eeg": eeg,
            "aux": aux,
            "eeg_names": [labels[i] for i in eeg],
            "aux_names": [labels[i] for i in aux],
            "scale": scale,
            "unit": unit,
        }

    # -- EegSource ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Open the inlet (again after a disconnection: the stream is resolved anew)."""
        if self._inlet is None:
            info = self._resolve()
            layout = self._read_layout(info)
            if (layout["eeg_names"], layout["aux_names"], layout["rate"]) != (
                self.eeg_channel_names,
                self.aux_channel_names,
                self.sampling_rate,
            ):
                self.release()
                raise SourceConfigError(
                    f"participant {self.participant}'s LSL stream came back with other channels or rate; "
                    "restart the session"
                )
            self._layout = layout

    def start(self) -> None:
        """Subscribe: samples from now on are buffered until read."""
        import pylsl

        try:
            self._inlet.open_stream(timeout=max(2.0, self.spec.resolve_timeout_s))
        except pylsl.TimeoutError:
            raise SourceDisconnectedError(f"participant {self.participant}'s LSL stream does not answer") from None

    def read(self) -> SourceChunk:
        """Everything that arrived since the last read, EEG in microvolts, stamps on ``local_clock()``."""
        import pylsl

        layout = self._layout
        try:
            samples, stamps = self._inlet.pull_chunk(timeout=0.0)
        except pylsl.LostError:
            raise SourceDisconnectedError(f"participant {self.participant}'s LSL stream was lost") from None
        if not stamps:
            return SourceChunk.empty(len(layout["eeg"]), len(layout["aux"]))
        values = np.asarray(samples, dtype=np.float64).reshape(len(stamps), layout["count"]).T
        return SourceChunk(
            eeg=values[layout["eeg"]] * layout["scale"],
            aux=values[layout["aux"]],
            timestamps=np.asarray(stamps, dtype=np.float64),
            markers=np.zeros(len(stamps)),
        )

    def insert_marker(self, code: float) -> None:
        """Nothing to do: the stream has no board marker channel (markers are in the LSL marker stream)."""

    def stop(self) -> None:
        """Unsubscribe."""
        if self._inlet is not None:
            self._inlet.close_stream()

    def release(self) -> None:
        """Drop the inlet; idempotent."""
        inlet, self._inlet = self._inlet, None
        del inlet


def _format_name(code: int) -> str:
    import pylsl

    names = {
        getattr(pylsl, f"cf_{name}"): name
        for name in ("float32", "double64", "string", "int8", "int16", "int32", "int64")
    }
    return names.get(code, f"format {code}")


def _declared_channels(info: Any, count: int) -> tuple[list[str], list[str], list[str]]:
    """Labels (``Ch1``... when undeclared), lower-case types and units from ``desc/channels``."""
    declared = declared_channels(info)[:count]
    labels = [channel.label.strip() for channel in declared]
    types = [channel.type.strip().lower() for channel in declared]
    units = [channel.unit.strip() for channel in declared]
    if len(labels) != count or len(set(labels)) != count or not all(labels):
        return [f"Ch{i + 1}" for i in range(count)], [""] * count, (units + [""] * count)[:count]
    return labels, types, units
