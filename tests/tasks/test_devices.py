"""Each participant's own response device: keyboards told apart, a serial button box, the device check.

Keyboards: under Xvfb there are two real X input devices, the "Virtual core XTEST keyboard" (which
receives the XTEST key events the autopilot sends) and the "Xvfb keyboard" (which nobody types
on). Psychtoolbox opens one HID queue on each; a press must count for the participant whose
keyboard it came from, whatever key it is, and never for the other. Serial button box: the most
real stand-in here is a pseudo-terminal pair (``os.openpty``): pyserial opens the pty's device
file as it would a USB-serial box's ``/dev/ttyACM0``, and the test writes a byte into the other
end at a known LSL time. No uinput device exists on this machine (``/dev/uinput`` is absent), so
gamepads (python-evdev) are documented as hardware-only (docs/tasks.md).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from dyadlab.tasks.autopilot import Autopilot, AutopilotSettings
from dyadlab.tasks.input import (
    KeyboardInfo,
    KeyboardMatch,
    KeySettings,
    ParticipantKeys,
    ResponseDeviceError,
    SerialButtonBox,
    list_keyboards,
    match_keyboard,
)
from tests.tasks.helpers import needs_display

XTEST = "Virtual core XTEST keyboard"
XVFB = "Xvfb keyboard"

# A press's stamp lies between the local_clock() reads that bracket the XTEST call, within the time
# X takes to deliver the event to the HID queue and PTB's own stamping; 5 ms covers a loaded
# two-core machine (measured: under 1 ms when idle).
STAMP_TOLERANCE_S = 0.005


def _settings(devices: dict[str, KeyboardMatch | SerialButtonBox | None], key: str = "space") -> KeySettings:
    return KeySettings(
        participants={label: ParticipantKeys(respond=key, device=device) for label, device in devices.items()}
    )


def test_a_device_must_be_identified_and_found_once() -> None:
    keyboards = [
        KeyboardInfo(3, "Dell USB Keyboard", "A1"),
        KeyboardInfo(5, "Dell USB Keyboard", "B2"),
        KeyboardInfo(7, "Logitech K120", None),
    ]
    assert match_keyboard(KeyboardMatch(product="logitech"), keyboards).index == 7
    assert match_keyboard(KeyboardMatch(product="Dell", serial="B2"), keyboards).index == 5
    with pytest.raises(ResponseDeviceError, match="2 keyboards match 'Dell'.*serial number"):
        match_keyboard(KeyboardMatch(product="Dell"), keyboards)
    with pytest.raises(ResponseDeviceError, match="No keyboard matches 'Cherry'. Keyboards here: Dell USB Keyboard"):
        match_keyboard(KeyboardMatch(product="Cherry"), keyboards)
    with pytest.raises(ValueError, match="product name and/or serial number"):
        KeyboardMatch()
    # two participants may use the same key when each has their own device
    assert _settings({"A": KeyboardMatch(product="Dell"), "B": KeyboardMatch(product="Logitech")}).uses_devices
    with pytest.raises(ValueError, match="already the participant A key"):
        _settings({"A": None, "B": None}, "a")


def test_a_protocol_names_each_participants_device(tmp_path) -> None:
    import yaml

    from dyadlab.protocols.schema import ProtocolError, load_protocol

    data = yaml.safe_load((Path(__file__).parents[2] / "protocols" / "bundled" / "demo.yaml").read_text())
    data["keys"] = {
        "participants": {
            "A": {"respond": "space", "device": {"kind": "keyboard", "product": "Dell USB Keyboard", "serial": "A1"}},
            "B": {"respond": "button", "device": {"kind": "serial", "usb_serial": "85739313"}},
        }
    }
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(data))
    keys = load_protocol(path).protocol.keys
    assert keys.participants["B"].device == SerialButtonBox(kind="serial", usb_serial="85739313")
    data["keys"]["participants"]["A"]["device"] = {"kind": "keyboard"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    assert [issue.field for issue in caught.value.issues] == ["keys.participants.A.device.keyboard"]


def test_windows_says_keyboards_cannot_be_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")  # the platform itself cannot exist here
    with pytest.raises(ResponseDeviceError, match="Windows cannot tell keyboards apart.*serial button box"):
        list_keyboards()


def _press_and_read(ctx, autopilot: Autopilot, key: str, times: int) -> list:
    """Press ``key`` ``times`` times through XTEST and flip until the presses are read back."""
    start = ctx.now() + 0.1
    for k in range(times):
        autopilot.press(key, start + 0.15 * k)
    responses, operator_keys = [], []
    deadline = time.monotonic() + 0.15 * times + 2.0
    while time.monotonic() < deadline and len(responses) + len(operator_keys) < times:
        frame = ctx.flip()
        responses += frame.responses
        operator_keys += frame.operator_keys
    for _ in range(10):  # anything late or duplicated would show up here
        frame = ctx.flip()
        responses += frame.responses
        operator_keys += frame.operator_keys
    return responses + operator_keys


@needs_display
@pytest.mark.display
@pytest.mark.integration
@pytest.mark.parametrize(("xtest_owner", "other"), [("B", "A"), ("A", "B")])
def test_two_keyboards_are_told_apart_with_real_windows(make_context, streams, xtest_owner, other) -> None:
    keyboards = {keyboard.product for keyboard in list_keyboards()}
    if not {XTEST, XVFB} <= keyboards:
        pytest.skip(f"needs Xvfb's two keyboards, found {sorted(keyboards)}")
    devices = {xtest_owner: KeyboardMatch(product=XTEST), other: KeyboardMatch(product=XVFB)}
    ctx = make_context(autopilot=None, keys=_settings(dict(sorted(devices.items()))))
    assert ctx._reader.backend == "ptb-per-device"
    with Autopilot(AutopilotSettings(injector="xtest"), {"A": "space", "B": "space"}) as xtest:
        read = _press_and_read(ctx, xtest, "space", 4)
        assert [(r.participant, r.device) for r in read] == [(xtest_owner, XTEST)] * 4, read
        # each stamp is on the LSL clock, inside the bracket of the XTEST call that pressed it
        downs = [(before, after) for key, down, before, after in xtest.sent if down]
        for response, (before, after) in zip(read, downs):
            assert before - STAMP_TOLERANCE_S <= response.lsl_time <= after + STAMP_TOLERANCE_S
        # another key on the participant's own keyboard is not theirs, and never an operator key
        assert _press_and_read(ctx, xtest, "escape", 1) == []
    events = [marker for marker, _ in streams.response_events()]
    assert [(m.participant, m.value["device"]) for m in events] == [(xtest_owner, XTEST)] * 4


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_the_shared_keyboard_reads_again_after_per_participant_keyboards(make_context) -> None:
    """PsychHID keeps one queue per keyboard, so the per-participant reader's queues are also the
    queues of PsychoPy's process-wide keyboard: a shared-keyboard context opened after a
    per-participant one (a pilot after a session, a second test in a process) must still read."""
    keyboards = {keyboard.product for keyboard in list_keyboards()}
    if not {XTEST, XVFB} <= keyboards:
        pytest.skip(f"needs Xvfb's two keyboards, found {sorted(keyboards)}")
    shared_keys = KeySettings(participants={"A": ParticipantKeys(respond="a"), "B": ParticipantKeys(respond="l")})
    make_context(autopilot=None, keys=shared_keys).close()  # PsychoPy's keyboard opens its queues
    own = _settings({"A": KeyboardMatch(product=XTEST), "B": KeyboardMatch(product=XVFB)})
    make_context(autopilot=None, keys=own).close()
    ctx = make_context(autopilot=None, keys=shared_keys)
    assert ctx._reader.backend != "ptb-per-device"
    with Autopilot(AutopilotSettings(injector="xtest"), {"A": "a", "B": "l"}) as xtest:
        read = _press_and_read(ctx, xtest, "a", 3)
    assert [r.participant for r in read] == ["A"] * 3, read


@pytest.fixture
def serial_box():
    """A pseudo-terminal pair: the box end (for pyserial) and the end the test writes presses into."""
    import termios
    import tty

    writer, box = os.openpty()
    tty.setraw(box, termios.TCSANOW)
    yield os.ttyname(box), writer
    os.close(writer)
    os.close(box)


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_a_serial_button_box_answers_for_its_participant(make_context, streams, serial_box) -> None:
    """A on the XTEST keyboard, B on a serial box: the device check sees both, each from their device."""
    import pylsl

    port, writer = serial_box
    keys = _settings({"A": KeyboardMatch(product=XTEST), "B": SerialButtonBox(kind="serial", port=port)})
    ctx = make_context(autopilot=None, keys=keys)
    with Autopilot(AutopilotSettings(injector="xtest"), {"A": "space", "B": "space"}) as xtest:
        xtest.press("space", ctx.now() + 0.3)
        written: list[float] = []

        def press_box() -> None:
            time.sleep(0.5)
            before = pylsl.local_clock()
            os.write(writer, b"1")
            written.append(before)

        import threading

        pressing = threading.Thread(target=press_box)
        pressing.start()
        answered = ctx.check_response_devices(timeout_s=10.0)
        pressing.join()
    assert answered == {"A": XTEST, "B": port}
    events = [(marker, stamp) for marker, stamp in streams.response_events()]
    box_press = next((marker, stamp) for marker, stamp in events if marker.participant == "B")
    assert box_press[0].value["device"] == port
    # stamped on arrival: after the write, within the serial thread's 50 ms read timeout
    assert written[0] <= box_press[1] <= written[0] + 0.06


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_a_missing_device_is_named_before_anything_runs(make_context) -> None:
    with pytest.raises(ResponseDeviceError, match="No keyboard matches 'Cedrus RB-740'. Keyboards here:"):
        make_context(autopilot=None, keys=_settings({"A": KeyboardMatch(product="Cedrus RB-740"), "B": None}, "a"))


@needs_display
@pytest.mark.display
@pytest.mark.integration
def test_a_session_with_a_missing_device_records_nothing_and_keeps_its_run_number(tmp_path) -> None:
    """The windows open and the devices are found before the recorder starts: a missing button box
    stops the run with its name, leaves no XDF and lets the next attempt take run-01."""
    import yaml

    from dyadlab.acquisition.lslconfig import LslConfig
    from dyadlab.protocols.runner import SessionError, SessionRunner
    from dyadlab.protocols.schema import load_protocol

    data = yaml.safe_load((Path(__file__).parents[2] / "protocols" / "bundled" / "demo.yaml").read_text())
    data.update(
        blocks=[{"id": "rest", "task": "rest", "params": {"duration_s": 1.0, "show_instructions": False}}],
        microphones=None,
        preflight={"enabled": False},
        quickcheck={"enabled": False},
        keys={
            "participants": {
                "A": {"respond": "a", "device": {"kind": "keyboard", "product": "Cedrus RB-740"}},
                "B": {"respond": "l"},
            }
        },
    )
    data["screens"].update(size=[640, 480])
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(data))
    runner = SessionRunner(load_protocol(path), out_dir=tmp_path / "out", simulate=True, lsl_config=LslConfig())
    with pytest.raises(SessionError, match="during windows: ResponseDeviceError: No keyboard matches 'Cedrus RB-740'"):
        runner.run()
    folder = tmp_path / "out" / "sub-D01" / "ses-01"
    assert not list(folder.glob("*.xdf"))
    assert not (folder / "sub-D01_ses-01_task-demo_run-01_session.json").exists()
    assert list(folder.glob("sub-D01_ses-01_task-demo_run-01_not-recorded_*.json"))
