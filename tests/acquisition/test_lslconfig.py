"""LSL configuration: the cfg text, validation, and real SessionID isolation between processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pylsl
import pytest

from dyadlab.acquisition.lslconfig import LslConfig, LslConfigError, apply_lsl_config, session_id_in_force

OUTLET_SCRIPT = textwrap.dedent(
    """
    import sys, pylsl
    info = pylsl.StreamInfo("isolation-probe", "EEG", 1, 100.0, "float32", sys.argv[1])
    outlet = pylsl.StreamOutlet(info)
    print("ready", flush=True)
    sys.stdin.read()  # keep the outlet until the test closes our stdin
    """
)


def test_local_only_config_text():
    text = LslConfig.local_only("study-1_dyad.3").to_cfg_text()
    assert "[multicast]\nResolveScope = machine" in text
    assert "AddressesOverride = {127.0.0.1}" in text
    assert "KnownPeers = {127.0.0.1}" in text
    assert "SessionID = study-1_dyad.3" in text
    assert "IPv6 = disable" in text
    assert "PortRange = 1024" in text


def test_default_config_overrides_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("LSLAPICFG", raising=False)
    assert apply_lsl_config(LslConfig(), directory=tmp_path) is None
    assert "LSLAPICFG" not in os.environ
    assert not any(tmp_path.iterdir())


def test_apply_writes_file_and_sets_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LSLAPICFG", "unchanged")  # monkeypatch restores the test run's value
    path = apply_lsl_config(LslConfig(session_id="lab-room-2", resolve_scope="link"), directory=tmp_path)
    assert path == tmp_path / "lsl_api.cfg"
    assert os.environ["LSLAPICFG"] == str(path)
    assert "SessionID = lab-room-2" in path.read_text()
    assert "ResolveScope = link" in path.read_text()


def test_apply_keeps_the_labs_own_settings(tmp_path, monkeypatch):
    """Only the settings dyadlab was given change; KnownPeers etc. of the lab's cfg survive."""
    lab_cfg = tmp_path / "lab" / "lsl_api.cfg"
    lab_cfg.parent.mkdir()
    lab_cfg.write_text(
        "[lab]\nKnownPeers = {10.1.2.3, 10.1.2.4}\nSessionID = room-1\n\n[tuning]\nTimeProbeCount = 10\n"
    )
    monkeypatch.setenv("LSLAPICFG", str(lab_cfg))
    assert session_id_in_force() == "room-1"
    path = apply_lsl_config(LslConfig(session_id="study-7"), directory=tmp_path / "ours")
    text = path.read_text()
    assert "KnownPeers = {10.1.2.3, 10.1.2.4}" in text and "TimeProbeCount = 10" in text
    assert "SessionID = study-7" in text and "room-1" not in text
    assert session_id_in_force() == "study-7"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"session_id": "has space"}, "SessionID"),
        ({"session_id": ""}, "SessionID"),
        ({"resolve_scope": "planet"}, "resolve scope"),
        ({"ipv6": "maybe"}, "IPv6"),
    ],
)
def test_invalid_values_are_explained(kwargs, message):
    with pytest.raises(LslConfigError, match=message):
        LslConfig(**kwargs)


def _start_outlet(source_id: str, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", OUTLET_SCRIPT, source_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.mark.integration
def test_session_id_isolates_streams(tmp_path, unique_id):
    """A stream of another SessionID is invisible; the same stream in our SessionID is found."""
    ours = os.environ.copy()  # conftest's configuration: this process's SessionID
    other_cfg = tmp_path / "lsl_api.cfg"
    other_cfg.write_text(LslConfig.local_only(f"other-{unique_id}").to_cfg_text())
    foreign = dict(ours, LSLAPICFG=str(other_cfg))

    hidden_id = f"isolation-hidden-{unique_id}"
    visible_id = f"isolation-visible-{unique_id}"
    hidden = _start_outlet(hidden_id, foreign)
    visible = _start_outlet(visible_id, ours)
    try:
        assert pylsl.resolve_byprop("source_id", visible_id, minimum=1, timeout=5.0)
        assert pylsl.resolve_byprop("source_id", hidden_id, minimum=1, timeout=1.5) == []
    finally:
        for process in (hidden, visible):
            process.stdin.close()
            process.wait(timeout=10)
