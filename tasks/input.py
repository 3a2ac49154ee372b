"""Participant and operator keys: one shared keyboard, or each participant's own response device.

Shared keyboard (piloting, or a lab without response devices): one keyboard, one key set per participant (defaults: A presses ``a``, B presses ``l``: the two
ends of the home row, far enough apart for two people sharing a keyboard). The operator owns
``escape`` (abort the session), ``f9`` (pause / resume) and ``space`` (skip an instruction
screen). No participant key may equal an operator key.

Every press is reported once, at key-down: the reader takes presses that are still held
(``getKeys(waitRelease=False)``) *and* presses already released between two frames
(``getKeys(waitRelease=True)``), and remembers which press it has already reported, because
PsychoPy's PTB backend hides a released press from the first call and a held one from the second.
``t_down`` is the PsychoPy-clock time the key went down (PTB's HID queue time), not the poll time.

Own devices (``device`` of a participant's keys): PsychoPy's keyboard merges every keyboard, so
:class:`DeviceKeyReader` reads the layer beneath it, one Psychtoolbox HID queue per keyboard
(``psychtoolbox.hid``: Linux and macOS), each press stamped by the queue with its device; a
participant's presses count only from their own device, identified by product name and/or serial
number (indices change between boots). Operator keys count from any keyboard that is no
participant's. A serial button box (an Arduino or any box that sends one byte per press, via
pyserial) is read by a thread per port that stamps each byte when it arrives. Windows cannot
enumerate keyboards separately: there a participant's device must be a serial box, or the
keyboard is shared. Every press keeps the device it came from (response stream, CSV).
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dyadlab import DyadlabError

logger = logging.getLogger(__name__)

# Reported presses whose release may still come; more than this many keys are never held at once.
_MAX_HELD = 32


class ResponseDeviceError(DyadlabError, RuntimeError):
    """A participant's response device is missing, ambiguous, shared, or unsupported here (the message says which)."""


class KeyboardMatch(BaseModel):
    """A participant's own keyboard (or keypad, foot pedal... anything the system lists as a keyboard).

    Attributes
    ----------
    product : str or None
        Part of the product name, case-insensitive (``dyadlab-devices`` lists them, see docs/tasks.md).
    serial : str or None
        The USB serial number, for two keyboards of the same model.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["keyboard"] = "keyboard"
    product: str | None = Field(None, min_length=1)
    serial: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _identified(self) -> KeyboardMatch:
        if self.product is None and self.serial is None:
            raise ValueError("a keyboard device needs its product name and/or serial number")
        return self

    def describe(self) -> str:
        """How the protocol names it."""
        return " ".join(
            part for part in (self.product and repr(self.product), self.serial and f"serial {self.serial}") if part
        )


class SerialButtonBox(BaseModel):
    """A button box on a serial port (USB-serial: an Arduino, a commercial box) sending one byte per press.

    Attributes
    ----------
    port : str or None
        ``/dev/ttyACM0``, ``COM3``...; or identify the box by ``usb_serial`` / ``product`` instead
        (ports are renumbered between boots).
    usb_serial : str or None
        The USB serial number of the box's USB-serial chip.
    product : str or None
        Part of the USB product name.
    baudrate : int
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["serial"]
    port: str | None = Field(None, min_length=1)
    usb_serial: str | None = Field(None, min_length=1)
    product: str | None = Field(None, min_length=1)
    baudrate: int = Field(115200, ge=300, le=4_000_000)

    @model_validator(mode="after")
    def _identified(self) -> SerialButtonBox:
        if self.port is None and self.usb_serial is None and self.product is None:
            raise ValueError("a serial button box needs its port, usb_serial or product")
        return self

    def describe(self) -> str:
        """How the protocol names it."""
        parts = (self.port, self.usb_serial and f"serial {self.usb_serial}", self.product and repr(self.product))
        return "serial box " + " ".join(part for part in parts if part)


ResponseDevice = Annotated[KeyboardMatch | SerialButtonBox, Field(discriminator="kind")]


class ParticipantKeys(BaseModel):
    """The key a participant responds (and taps, and says "ready") with, and on which device.

    Attributes
    ----------
    respond : str
        PsychoPy key name (for a serial box: the name its presses are recorded under).
    device : KeyboardMatch or SerialButtonBox or None
        The participant's own device; ``None``: the shared keyboard.
    """

    model_config = ConfigDict(extra="forbid")

    respond: str = Field(min_length=1)
    device: ResponseDevice | None = None


class KeySettings(BaseModel):
    """Key assignment for the session (PsychoPy key names, lower case)."""

    model_config = ConfigDict(extra="forbid")

    participants: dict[str, ParticipantKeys] = Field(
        default_factory=lambda: {"A": ParticipantKeys(respond="a"), "B": ParticipantKeys(respond="l")}
    )
    abort: str = "escape"
    pause: str = "f9"
    proceed: str = "space"

    @model_validator(mode="after")
    def _keys_are_distinct(self) -> KeySettings:
        owners: dict[str, str] = {}
        for role, key in [
            ("operator abort", self.abort),
            ("operator pause", self.pause),
            ("operator proceed", self.proceed),
        ]:
            if key in owners:
                raise ValueError(f"Key {key!r} is assigned to both {owners[key]} and {role}; give each its own key.")
            owners[key] = role
        for label, keys in self.participants.items():
            if keys.device is not None:
                continue  # a key on one's own device is nobody else's, nor the operator's
            key = keys.respond
            if key in owners:
                raise ValueError(
                    f"Participant {label}'s key {key!r} is already the {owners[key]} key; choose another key."
                )
            owners[key] = f"participant {label}"
        return self

    def participant_of(self, key: str) -> str | None:
        """The participant whose key this is on the shared keyboard, or ``None``."""
        for label, keys in self.participants.items():
            if keys.respond == key and keys.device is None:
                return label
        return None

    @property
    def uses_devices(self) -> bool:
        """Whether any participant has a device of their own."""
        return any(keys.device is not None for keys in self.participants.values())

    def shared_keyboard(self) -> KeySettings:
        """These settings with every device dropped (piloting: the autopilot types on one keyboard)."""
        participants = {label: ParticipantKeys(respond=keys.respond) for label, keys in self.participants.items()}
        return self.model_copy(update={"participants": participants})


@dataclass(frozen=True)
class KeyPress:
    """One key going down.

    Attributes
    ----------
    key : str
        PsychoPy key name.
    t_down : float
        Key-down time on PsychoPy's clock (same clock as ``win.flip()`` returns).
    participant : str | None
        Owner of the key, ``None`` for operator keys and unassigned keys.
    """

    key: str
    t_down: float
    participant: str | None
    device: str | None = None


class KeyReader(Protocol):
    """What the task kit reads keys with."""

    backend: str

    def read(self) -> list[KeyPress]:
        """Presses since the last call, in key-down order."""

    def clear(self) -> None:
        """Forget presses that happened before now."""

    def close(self) -> None:
        """Release the devices."""


def open_key_reader(settings: KeySettings) -> KeyReader:
    """The reader these settings need: the shared keyboard, or each participant's own device."""
    return DeviceKeyReader(settings) if settings.uses_devices else SharedKeyReader(settings)


class SharedKeyReader:
    """Reports each key press once, as soon as PsychoPy's keyboard has it (one shared keyboard).

    Parameters
    ----------
    settings : KeySettings
    """

    def __init__(self, settings: KeySettings) -> None:
        from psychopy.hardware import keyboard

        self.settings = settings
        self._keyboard = keyboard.Keyboard()
        self.backend: str = str(keyboard.KeyboardDevice.getBackend())
        if self.backend != "ptb":
            logger.warning(
                "PsychoPy uses the %r keyboard backend, not 'ptb': key-down times are poll times "
                "(frame-accurate only). Install psychtoolbox (and libjack on Linux) for HID key times.",
                self.backend,
            )
        self._held: list[Any] = []  # presses already reported and not yet released
        self._forget_held_keys()

    def _forget_held_keys(self) -> None:
        # PsychoPy's keyboard device (a process-wide singleton) pairs each key-up with the oldest
        # still-down press of that key. clearEvents() discards queued key-ups but not that
        # still-down list, so a press whose key-up was discarded (or came from an earlier
        # context) would later take a new press's key-up and come back as a bogus, old press.
        # Forgetting both lists makes keys held now produce nothing when released.
        self._keyboard.clearEvents()
        still_down = getattr(self._keyboard.device, "_keysStillDown", None)
        if still_down is not None:
            still_down.clear()
        self._held.clear()

    def clear(self) -> None:
        """Forget presses that happened before now; keys held now produce nothing when released."""
        self._forget_held_keys()

    def close(self) -> None:
        """Nothing to release: PsychoPy's keyboard is process-wide."""

    def read(self) -> list[KeyPress]:
        """Presses since the last call, in key-down order."""
        new = []
        for press in self._keyboard.getKeys(waitRelease=False, clear=True):
            if any(press is seen for seen in self._held):
                continue
            self._held.append(press)
            new.append(press)
        del self._held[:-_MAX_HELD]
        for press in self._keyboard.getKeys(waitRelease=True, clear=True):
            reported = next((seen for seen in self._held if seen is press), None)
            if reported is None:
                new.append(press)
            else:
                self._held.remove(reported)
        presses = []
        for press in new:
            name = press.name[0] if isinstance(press.name, (list, tuple)) else press.name
            name = str(name)
            presses.append(
                KeyPress(key=name, t_down=float(press.tDown), participant=self.settings.participant_of(name))
            )
        presses.sort(key=lambda p: p.t_down)
        return presses


# ------------------------------------------------------------------------------------------------
# Each participant's own device
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyboardInfo:
    """A keyboard the system lists (Psychtoolbox HID index, product name, USB serial number)."""

    index: int
    product: str
    serial: str | None

    def describe(self) -> str:
        """Product name and serial, for messages and the response record."""
        return self.product + (f" (serial {self.serial})" if self.serial else "")


def list_keyboards() -> list[KeyboardInfo]:
    """The keyboards Psychtoolbox can open one queue each for.

    Raises
    ------
    ResponseDeviceError
        On Windows (no per-keyboard queues), or without psychtoolbox.
    """
    if sys.platform == "win32":
        raise ResponseDeviceError(
            "Windows cannot tell keyboards apart: every keyboard reaches PsychoPy as one. Give each participant "
            "a serial button box (device: {kind: serial, ...}), or use the shared keyboard (no device)."
        )
    try:
        from psychtoolbox import hid  # type: ignore[import-untyped]
    except ImportError as error:
        raise ResponseDeviceError(
            f"Per-participant keyboards need psychtoolbox ({error}); pip install psychtoolbox (on Linux also libjack)."
        ) from error
    indices, _, infos = hid.get_keyboard_indices()
    return [
        KeyboardInfo(index=int(index), product=str(info.get("product") or ""), serial=info.get("serialNumber") or None)
        for index, info in zip(indices, infos)
    ]


def match_keyboard(wanted: KeyboardMatch, keyboards: list[KeyboardInfo]) -> KeyboardInfo:
    """The one keyboard ``wanted`` names; :class:`ResponseDeviceError` if none or several do."""
    found = [
        keyboard
        for keyboard in keyboards
        if (wanted.product is None or wanted.product.lower() in keyboard.product.lower())
        and (wanted.serial is None or wanted.serial == keyboard.serial)
    ]
    listed = "; ".join(keyboard.describe() for keyboard in keyboards) or "none"
    if not found:
        raise ResponseDeviceError(f"No keyboard matches {wanted.describe()}. Keyboards here: {listed}.")
    if len(found) > 1:
        raise ResponseDeviceError(
            f"{len(found)} keyboards match {wanted.describe()} ({'; '.join(k.describe() for k in found)}): "
            "give a longer part of the product name, or the serial number."
        )
    return found[0]


def find_serial_port(box: SerialButtonBox) -> str:
    """The port of ``box`` (its ``port``, or the one whose USB serial / product matches)."""
    if box.port is not None and box.usb_serial is None and box.product is None:
        return box.port
    from serial.tools import list_ports  # type: ignore[import-untyped]

    ports = list(list_ports.comports())
    found = [
        port
        for port in ports
        if (box.port is None or port.device == box.port)
        and (box.usb_serial is None or port.serial_number == box.usb_serial)
        and (box.product is None or box.product.lower() in (port.product or "").lower())
    ]
    if len(found) != 1:
        listed = "; ".join(f"{p.device} ({p.product or '?'}, serial {p.serial_number or '?'})" for p in ports) or "none"
        raise ResponseDeviceError(
            f"{'No' if not found else len(found)} serial port(s) match {box.describe()}. Ports here: {listed}."
        )
    return str(found[0].device)


class _SerialBoxReader:
    """One thread per serial button box: every byte that arrives is a press, stamped on arrival."""

    def __init__(self, participant: str, key: str, box: SerialButtonBox) -> None:
        try:
            import serial  # type: ignore[import-untyped]
        except ImportError as error:
            raise ResponseDeviceError(f"A serial button box needs pyserial ({error}): pip install pyserial.") from error
        from psychopy import core

        self.port = find_serial_port(box)
        try:
            self._serial = serial.Serial(self.port, box.baudrate, timeout=0.05)
        except (serial.SerialException, OSError) as error:
            raise ResponseDeviceError(f"Cannot open the serial button box {box.describe()}: {error}") from error
        self._participant, self._key, self._clock = participant, key, core.getTime
        self._presses: list[KeyPress] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"dyadlab-serial-{participant}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._running:
            try:
                received = self._serial.read(1)
            except Exception:
                logger.exception("Reading the serial button box on %s failed", self.port)
                return
            if not received:
                continue
            stamp = self._clock()  # the byte's arrival: USB-serial latency (about 1 ms) is not corrected
            received += self._serial.read(self._serial.in_waiting)  # bytes of presses that arrived together
            with self._lock:
                self._presses.extend(
                    KeyPress(key=self._key, t_down=stamp, participant=self._participant, device=self.port)
                    for _ in received
                )

    def read(self) -> list[KeyPress]:
        with self._lock:
            presses, self._presses = self._presses, []
        return presses

    def close(self) -> None:
        self._running = False
        self._thread.join(1.0)
        self._serial.close()


def _restore_psychopy_queues(indices: list[int]) -> None:
    """Give PsychoPy's keyboard back its queues on ``indices``.

    PsychHID keeps one queue per keyboard, so creating and releasing ours re-created and released
    the queue that PsychoPy's process-wide keyboard reads on the same device: without this, the
    next :class:`SharedKeyReader` in the process fails with "No queue for that device yet!".
    """
    import sys

    keyboard_module = sys.modules.get("psychopy.hardware.keyboard")
    buffers = getattr(keyboard_module, "_keyBuffers", None) or {}
    for index in indices:
        buffer = buffers.get(index)
        if buffer is None:
            continue
        try:
            buffer.dev._create_queue(buffer.bufferSize, win_handle=None)
            buffer.start()
        except Exception:
            logger.exception("Could not give PsychoPy's keyboard its queue on device %d back", index)


class DeviceKeyReader:
    """Each participant's presses from their own device; operator keys from any other keyboard.

    Parameters
    ----------
    settings : KeySettings
        Participants with a ``device`` read only from it; participants without one (mixing is
        allowed) from the keyboards that are no participant's.

    Raises
    ------
    ResponseDeviceError
        A device is missing, ambiguous or named for two participants, or the platform cannot
        separate keyboards.
    """

    backend = "ptb-per-device"

    def __init__(self, settings: KeySettings) -> None:
        from psychopy import logging as psychopy_logging
        from psychopy.hardware.keyboard import keyNames
        from psychtoolbox import hid

        self.settings = settings
        self._names: dict[int, str] = dict(keyNames)
        # PTB queue times are GetSecs(); PsychoPy's clock is GetSecs() minus its reset time
        self._reset_time = psychopy_logging.defaultClock.getLastResetTime
        wanted = {label: keys.device for label, keys in settings.participants.items() if keys.device is not None}
        keyboard_wanted = {label: d for label, d in wanted.items() if isinstance(d, KeyboardMatch)}
        keyboards = list_keyboards() if keyboard_wanted else []
        # Without per-participant keyboards (serial boxes only, e.g. on Windows) PsychoPy's merged
        # keyboard serves the operator and any participant on the shared keyboard.
        self._shared: SharedKeyReader | None = None
        self.owner: dict[int, str] = {}  # keyboard index -> participant
        self.devices: dict[str, str] = {}  # participant -> the device that answers for them
        for label, match in keyboard_wanted.items():
            keyboard = match_keyboard(match, keyboards)
            if keyboard.index in self.owner:
                raise ResponseDeviceError(
                    f"Participants {self.owner[keyboard.index]} and {label} name the same keyboard "
                    f"({keyboard.describe()}); each needs their own."
                )
            self.owner[keyboard.index] = label
            self.devices[label] = keyboard.describe()
        self._product = {keyboard.index: keyboard.describe() for keyboard in keyboards}
        self._queues: dict[int, Any] = {}
        self._serial: list[_SerialBoxReader] = []
        try:
            for keyboard in keyboards:
                queue = hid.Keyboard(keyboard.index)
                queue.queue_start()
                self._queues[keyboard.index] = queue
            if not keyboards:
                self._shared = SharedKeyReader(settings)
            for label, device in wanted.items():
                if isinstance(device, SerialButtonBox):
                    reader = _SerialBoxReader(label, settings.participants[label].respond, device)
                    self._serial.append(reader)
                    self.devices[label] = f"serial {reader.port}"
        except BaseException:
            self.close()
            raise
        for label, answering in self.devices.items():
            logger.info("Participant %s responds on %s", label, answering)

    def read(self) -> list[KeyPress]:
        """Presses since the last call, in key-down order."""
        presses: list[KeyPress] = []
        offset = self._reset_time()
        for index, queue in self._queues.items():
            owner = self.owner.get(index)
            while queue.flush(flush_type=1):
                event, _ = queue.queue_get_event()
                if not bool(event["Pressed"]):
                    continue
                name = self._names.get(int(event["Keycode"]))
                if name is None:
                    continue
                if owner is not None:  # a participant's own keyboard: only their key, never an operator key
                    if name != self.settings.participants[owner].respond:
                        continue
                    participant: str | None = owner
                else:
                    participant = self.settings.participant_of(name)
                t_down = float(event["Time"]) - offset
                presses.append(KeyPress(key=name, t_down=t_down, participant=participant, device=self._product[index]))
        for reader in self._serial:
            presses.extend(reader.read())
        if self._shared is not None:
            presses.extend(self._shared.read())
        presses.sort(key=lambda press: press.t_down)
        return presses

    def clear(self) -> None:
        """Forget presses that happened before now."""
        self.read()
        if self._shared is not None:
            self._shared.clear()

    def close(self) -> None:
        """Stop the queues and serial threads; idempotent."""
        for queue in self._queues.values():
            try:
                queue.queue_stop()
                queue._release_queue()
            except Exception:
                logger.exception("Could not release a keyboard queue")
        _restore_psychopy_queues(list(self._queues))
        self._queues = {}
        for reader in self._serial:
            reader.close()
        self._serial = []
