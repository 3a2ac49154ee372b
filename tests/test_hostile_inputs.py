"""Hostile inputs (issue #11): protocols, XDF files and command-line values built to break dyadlab.

Every case must end in a clear message and exit code 2 (``dyadlab inspect`` keeps its documented
verdict codes: 0 valid, 1 defect found, 2 unreadable), never in a traceback, a bug report
(exit 70) or a hang, and must write nothing outside the output folder. The file system is
watched: each case runs with its working directory and ``TMPDIR`` inside a temporary root that is
listed before and after.

The generated cases are followed by one regression test (or more) per numbered defect of the
issue, named ``test_defect_<n>_...``.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from dyadlab.acquisition.lslconfig import (
    LSL_BASE_PORT,
    LslConfig,
    apply_lsl_config,
    discard_lsl_config,
    local_only_ports,
)
from dyadlab.protocols.cli import main

REPO = Path(__file__).resolve().parent.parent
DEMO: dict[str, Any] = yaml.safe_load((REPO / "protocols" / "bundled" / "demo.yaml").read_text())

pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------------------------------
# The sandbox: cwd and TMPDIR inside a temporary root that is listed before and after
# ------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    root: Path  # everything a case may touch is below it
    work: Path  # the working directory
    tmp: Path  # TMPDIR
    out: Path  # the output folder given to `run`

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        entries: dict[str, tuple[int, int, int]] = {}
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = Path(folder) / name
                info = path.lstat()
                kind = stat.S_IFMT(info.st_mode)
                # A folder counts by its existence: temporary files made and removed inside it
                # leave nothing behind.
                entries[str(path.relative_to(self.root))] = (
                    (kind, 0, 0) if stat.S_ISDIR(info.st_mode) else (kind, info.st_size, info.st_mtime_ns)
                )
        return entries

    def changes_outside_out(self, before: dict[str, Any]) -> list[str]:
        after = self.snapshot()
        out = str(self.out.relative_to(self.root))
        changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
        return sorted(key for key in changed if key != out and not key.startswith(out + os.sep))


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    root = tmp_path / "root"
    work, tmp = root / "work", root / "tmp"
    work.mkdir(parents=True)
    tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return Sandbox(root=root, work=work, tmp=tmp, out=work / "out")


def invoke(args: list[str]) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(main, args)
    return result, time.monotonic() - started


def assert_clean_exit(result: Result, codes: tuple[int, ...] = (2,), seconds: float = 0.0, limit: float = 30.0) -> None:
    """A clear message, an expected exit code, no traceback, no bug report, no hang."""
    output = result.output
    assert result.exit_code in codes, f"exit {result.exit_code}, expected {codes}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output and "stopped on a bug" not in output, output
    assert output.strip(), "no message at all"
    assert seconds < limit, f"took {seconds:.1f} s"


# ------------------------------------------------------------------------------------------
# Hostile protocols
# ------------------------------------------------------------------------------------------


def _protocol(change: Callable[[dict[str, Any]], None]) -> Callable[[], bytes]:
    def build() -> bytes:
        data = copy.deepcopy(DEMO)
        change(data)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()

    return build


def _text(text: str | bytes) -> Callable[[], bytes]:
    return lambda: text.encode() if isinstance(text, str) else text


def _pattern(pattern: str) -> Callable[[], bytes]:
    return _protocol(lambda d: d.update(output={"pattern": pattern}))


def _partner_role(role: str, pattern: str = "{partner}/sub-{dyad}_run-{run:02d}") -> Callable[[], bytes]:
    def change(data: dict[str, Any]) -> None:
        data["participants"][1]["role"] = role
        data["extra_roles"] = [role]
        data["output"] = {"pattern": pattern}

    return _protocol(change)


def _set(path: str, value: Any) -> Callable[[], bytes]:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return _protocol(change)


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _demo_text() -> str:
    return (REPO / "protocols" / "bundled" / "demo.yaml").read_text()


def _nested_mappings(depth: int) -> str:
    return "".join(f"{'  ' * level}k{level}:\n" for level in range(depth)) + "  " * depth + "v: 1\n"


_RANDOM = random.Random(11)

HOSTILE_PROTOCOLS: dict[str, Callable[[], bytes]] = {
    # 1. files outside --out: real values, format specs, roles
    "partner-role-traversal": _partner_role("../../../../tmp/x"),
    "partner-role-slash-fill": _partner_role("stranger", "{partner:/>9}/sub-{dyad}_run-{run:02d}"),
    "partner-fill-to-absolute": _pattern("{partner:/>40}/x_run-{run}"),
    "protocol-label-dotdot": _protocol(
        lambda d: d.update(name="__", output={"pattern": "{protocol:.>2}/{protocol:.>2}/x_run-{run}"})
    ),
    "absolute-pattern": _pattern("/tmp/dyadlab-escape_run-{run}"),
    "dotdot-pattern": _pattern("../../escape_run-{run}"),
    "backslash-pattern": _pattern("..\\escape_run-{run}"),
    "empty-folder-name": _pattern("a//b_run-{run}"),
    "hidden-name": _pattern(".hidden/x_run-{run}"),
    "conversion": _pattern("{study!r}_run-{run}"),
    "attribute-access": _pattern("{study.__class__}_run-{run}"),
    "index-access": _pattern("{study[0]}_run-{run}"),
    "nested-format-spec": _pattern("x_run-{run:{session}}"),
    "gigabyte-width": _pattern("x_run-{run:0999999999d}"),
    "no-run-placeholder": _pattern("sub-{dyad}/x"),
    "unknown-placeholder": _pattern("{nope}_run-{run}"),
    "unbalanced-brace": _pattern("{run"),
    "participant-id-traversal": _set("participants.1.id", "../x"),
    "dyad-traversal": _set("dyad", "../../x"),
    "extra-role-injection": _protocol(lambda d: d.update(extra_roles=["a\nb"])),
    # 4. window sizes, screens
    "window-negative": _set("screens.size", [-1, 0]),
    "window-zero": _set("screens.size", [0, 0]),
    "window-huge": _set("screens.size", [100000, 100000]),
    "window-size-bool": _set("screens.size", [True, True]),
    "screen-index-negative": _set("screens.screens", [-1]),
    # 5. numbers: booleans, NaN, infinity, huge
    "duration-true": _set("blocks.0.duration", True),
    "duration-nan": _set("blocks.0.duration", float("nan")),
    "duration-inf": _set("blocks.0.duration", float("inf")),
    "n-trials-yes": _set("blocks.1.params.n_trials", True),
    "period-nan": _set("blocks.2.params.period_s", float("nan")),
    "session-bool": _set("session", True),
    "session-huge": _set("session", 10**30),
    "preflight-seconds-inf": _set("preflight.seconds", float("inf")),
    "blocks-600": _protocol(lambda d: d.update(blocks=[{"task": "rest", "duration": 1} for _ in range(600)])),
    # 8. what run refused but validate accepted
    "session-id-spaces": _set("lsl.session_id", "a b;c"),
    "session-id-auto-too-long": _protocol(lambda d: d.update(study="s" * 40, dyad="D" + "1" * 30)),
    "known-peer-injection": _set("lsl.known_peers", ["x}\n[lab]\nSessionID=other"]),
    "nul-in-pattern": _pattern("sub-{dyad}/a\x00b_run-{run}"),
    "newline-in-pattern": _pattern("sub-{dyad}/a\nb_run-{run}"),
    "name-over-255": _pattern("x" * 300 + "_run-{run}"),
    "name-255-with-suffix": _pattern("x" * 240 + "_run-{run:03d}"),
    "path-over-4096": _pattern("/".join(["d" * 200] * 25) + "/x_run-{run}"),
    # 5. YAML itself
    "alias-bomb": _text(_alias_bomb()),
    "single-alias": _text(_demo_text() + "extra: &x 1\nmore: *x\n"),
    "merge-key": _text(_demo_text() + "counterbalance:\n  <<: {blocks: none}\n"),
    "deep-flow-nesting": _text("name: x\nlist: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    "deep-block-nesting": _text(_nested_mappings(400)),
    "duplicate-key": _text(_demo_text() + "session: 2\n"),
    "duplicate-nested-key": _text(
        _demo_text().replace("  fullscreen: false\n", "  fullscreen: false\n  fullscreen: true\n")
    ),
    "python-tag": _text("!!python/object/apply:os.system ['touch pwned']\n"),
    "binary-garbage": _text(bytes(_RANDOM.randrange(256) for _ in range(4096))),
    "invalid-utf8": _text(b"name: \xff\xfe\xfd\n"),
    "nul-byte-in-yaml": _text("name: a\x00b\n"),
    "two-documents": _text(_demo_text() + "---\nname: other\n"),
    "not-a-mapping": _text("[1, 2, 3]\n"),
    "empty-file": _text(""),
    "huge-file": _text("# " + "x" * (2 * 1024 * 1024) + "\n"),
    "many-values": _text("name: x\nvalues: [" + ", ".join(["0"] * 150_000) + "]\n"),
    "tab-indentation": _text("name: x\nscreens:\n\tsize: [1, 1]\n"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PROTOCOLS))
def test_hostile_protocol_is_rejected_by_validate_and_run_writing_nothing(case: str, sandbox: Sandbox) -> None:
    path = sandbox.work / "protocol.yaml"
    path.write_bytes(HOSTILE_PROTOCOLS[case]())
    before = sandbox.snapshot()
    result, seconds = invoke(["validate", str(path)])
    assert_clean_exit(result, seconds=seconds, limit=10.0)
    assert "Protocol rejected" in result.output or "rejected" in result.output.lower()
    result, seconds = invoke(["run", str(path), "--simulate", "--autopilot", "--out", str(sandbox.out)])
    assert_clean_exit(result, seconds=seconds, limit=10.0)
    assert sandbox.changes_outside_out(before) == []
    assert not sandbox.out.exists(), "a rejected protocol created the output folder"


# ------------------------------------------------------------------------------------------
# Hostile XDF files
# ------------------------------------------------------------------------------------------


def _xdf_chunk(tag: int, content: bytes, stream_id: int | None = None, width: int = 8) -> bytes:
    body = struct.pack("<H", tag) + (b"" if stream_id is None else struct.pack("<I", stream_id)) + content
    length = {1: "<B", 4: "<I", 8: "<Q"}[width]
    return bytes([width]) + struct.pack(length, len(body)) + body


def _stream_header(channels: int | str = 2, rate: str = "100", fmt: str = "float32") -> bytes:
    return (
        "<?xml version='1.0'?><info><name>hostile</name><type>EEG</type>"
        f"<channel_count>{channels}</channel_count><nominal_srate>{rate}</nominal_srate>"
        f"<channel_format>{fmt}</channel_format><source_id>hostile</source_id></info>"
    ).encode()


_FILE_HEADER = _xdf_chunk(1, b"<?xml version='1.0'?><info><version>1.0</version></info>")


def _one_sample(channels: int = 2) -> bytes:
    return bytes([1, 1]) + bytes([8]) + struct.pack("<d", 1.0) + b"\0" * (4 * channels)


def _recorder_like_xdf(path: Path, seconds: float = 3.0) -> Path:
    """A small dyad file laid out as the recorder writes it: every header first, then samples."""
    from dyadlab.acquisition.markers import Marker
    from dyadlab.acquisition.streams import ParticipantInfo, SourceLayout, eeg_stream_info, event_stream_info
    from dyadlab.acquisition.xdf import XdfWriter
    from tests.synchrony.xdf_fixtures import FIXTURE_DEVICE

    rate = 100.0
    n = int(seconds * rate)
    rng = np.random.default_rng(0)
    with XdfWriter(path, file_metadata={"study": "test", "dyad": "d01"}) as writer:
        for stream_id, label in ((1, "A"), (2, "B")):
            source = SourceLayout(rate, ["Fz", "Cz"], description=FIXTURE_DEVICE)
            info = eeg_stream_info("test", "d01", ParticipantInfo(label, f"sub-{label}"), source)
            writer.add_stream(stream_id, info.as_xml())
        writer.add_stream(3, event_stream_info("test", "d01", "markers").as_xml())
        for stream_id in (1, 2):
            writer.write_clock_offset(stream_id, 1000.0, 0.0)
        for first in range(0, n, int(rate)):
            stamps = 1000.0 + np.arange(first, min(n, first + int(rate))) / rate
            for stream_id in (1, 2):
                values = rng.standard_normal((stamps.size, 3)).astype(np.float32)
                writer.write_samples(stream_id, stamps, values)
        events = [
            Marker("session_start").to_json(),
            Marker("block_start", task="rest", block="rest-1", condition="rest").to_json(),
            Marker("block_end", task="rest", block="rest-1", condition="rest", value="complete").to_json(),
            Marker("session_end", value="complete").to_json(),
        ]
        writer.write_samples(3, 1000.0 + np.linspace(0.1, seconds - 0.1, len(events)), [[e] for e in events])
        for stream_id in (1, 2, 3):
            writer.write_clock_offset(stream_id, 1000.0 + seconds, 0.0)
            writer.write_footer(stream_id)
    return path


def _first_samples_chunk(data: bytes) -> tuple[int, int]:
    """(start, end) of the first Samples chunk of a file."""
    position = 4
    while position < len(data):
        width = data[position]
        length = int.from_bytes(data[position + 1 : position + 1 + width], "little")
        tag = int.from_bytes(data[position + 1 + width : position + 3 + width], "little")
        end = position + 1 + width + length
        if tag == 3:
            return position, end
        position = end
    raise AssertionError("no Samples chunk")


def _hostile_xdf_cases() -> dict[str, Callable[[bytes], bytes]]:
    cases: dict[str, Callable[[bytes], bytes]] = {
        "empty": lambda valid: b"",
        "magic-only": lambda valid: b"XDF:",
        "gzip": lambda valid: b"\x1f\x8b\x08\x00" + valid[:100],
        "huge-channel-count": lambda valid: (
            b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(10**12), 1) + _xdf_chunk(3, _one_sample(), 1)
        ),
        "channel-count-2^31": lambda valid: (
            b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(2**31), 1) + _xdf_chunk(3, _one_sample(), 1)
        ),
        "channel-count-10^40": lambda valid: b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(10**40), 1),
        "channel-count-2^31-1-doubles": lambda valid: (
            b"XDF:"
            + _FILE_HEADER
            + _xdf_chunk(2, _stream_header(2**31 - 1, fmt="double64"), 1)
            + _xdf_chunk(3, _one_sample(), 1)
        ),
        "huge-sample-count": lambda valid: (
            b"XDF:"
            + _FILE_HEADER
            + _xdf_chunk(2, _stream_header(2), 1)
            + _xdf_chunk(3, bytes([8]) + struct.pack("<Q", 2**62) + b"\0" * 64, 1)
        ),
        "huge-chunk-length": lambda valid: b"XDF:" + _FILE_HEADER + bytes([8]) + struct.pack("<Q", 2**63) + b"\x02\x00",
        "huge-string-length": lambda valid: (
            b"XDF:"
            + _FILE_HEADER
            + _xdf_chunk(2, _stream_header(1, rate="0", fmt="string"), 1)
            + _xdf_chunk(3, bytes([1, 1, 8]) + struct.pack("<d", 1.0) + bytes([8]) + struct.pack("<Q", 2**60), 1)
        ),
        "nominal-rate-nan": lambda valid: b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(2, rate="nan"), 1),
        "nominal-rate-1e308": lambda valid: (
            b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(2, rate="1e308"), 1) + _xdf_chunk(3, _one_sample(), 1)
        ),
        "xml-entity-bomb": lambda valid: (
            b"XDF:"
            + _xdf_chunk(
                1,
                b"<?xml version='1.0'?><!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
                b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>"
                b"<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'>]><info><version>&e;</version></info>",
            )
        ),
        "deep-xml": lambda valid: (
            b"XDF:" + _xdf_chunk(1, b"<info>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</info>")
        ),
        "bad-width": lambda valid: valid + bytes([7]) + b"garbage",
        "cut-inside-first-samples-chunk": lambda valid: valid[: sum(_first_samples_chunk(valid)) // 2],
    }
    for fraction in (0.0001, 0.01, 0.25, 0.5, 0.75, 0.999):
        cases[f"truncated-{fraction}"] = lambda valid, f=fraction: valid[: max(1, int(len(valid) * f))]
    for seed in range(4):
        cases[f"garbage-{seed}"] = lambda valid, s=seed: bytes(random.Random(s).randrange(256) for _ in range(2048))
        cases[f"garbage-after-magic-{seed}"] = lambda valid, s=seed: (
            b"XDF:" + bytes(random.Random(s).randrange(256) for _ in range(2048))
        )

        def flipped(valid: bytes, s: int = seed) -> bytes:
            rng = random.Random(100 + s)
            data = bytearray(valid)
            for _ in range(25):
                data[rng.randrange(4, len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)

        cases[f"bit-flips-{seed}"] = flipped
    return cases


HOSTILE_XDF = _hostile_xdf_cases()


@pytest.fixture(scope="module")
def valid_xdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _recorder_like_xdf(tmp_path_factory.mktemp("valid") / "valid.xdf").read_bytes()


@pytest.mark.parametrize("case", sorted(HOSTILE_XDF))
def test_hostile_xdf_file_is_inspected_and_repaired_without_traceback(
    case: str, valid_xdf: bytes, sandbox: Sandbox
) -> None:
    xdf = sandbox.out / "run_session.xdf"
    sandbox.out.mkdir()
    xdf.write_bytes(HOSTILE_XDF[case](valid_xdf))
    record = {
        "dyadlab_session_schema": 1,
        "study": "test",
        "dyad": "d01",
        "status": "running",
        "complete": False,
        "blocks": [{"id": "rest-1", "status": "running"}],
        "files": {"xdf": str(xdf)},
    }
    (sandbox.out / "run_session.json").write_text(json.dumps(record))
    before = sandbox.snapshot()
    result, seconds = invoke(["inspect", str(xdf)])
    # inspect's verdict: 0 valid (a bit flip inside sample values), 1 defect found, 2 unreadable
    assert_clean_exit(result, codes=(0, 1, 2), seconds=seconds)
    if result.exit_code == 1:
        assert "INVALID" in result.output
    result, seconds = invoke(["repair", str(sandbox.out)])
    # a damaged file that still holds the markers is what repair is for (0); anything else is 2
    assert_clean_exit(result, codes=(0, 2), seconds=seconds)
    assert sandbox.changes_outside_out(before) == []


# ------------------------------------------------------------------------------------------
# Hostile command-line values
# ------------------------------------------------------------------------------------------


def _fifo(sandbox: Sandbox) -> str:
    path = sandbox.work / "fifo.xdf"
    os.mkfifo(path)
    return str(path)


def _garbage(sandbox: Sandbox, name: str = "garbage.xdf") -> str:
    path = sandbox.work / name
    path.write_bytes(b"XDF:" + bytes(random.Random(name).randrange(256) for _ in range(4096)))
    return str(path)


def _file(sandbox: Sandbox) -> str:
    path = sandbox.work / "a-file"
    path.write_text("not a folder")
    return str(path)


_RUN = ["run", "demo", "--simulate", "--autopilot", "--no-quickcheck"]

HOSTILE_ARGUMENTS: dict[str, Callable[[Sandbox], list[str]]] = {
    "validate-dyad-traversal": lambda s: ["validate", "demo", "--dyad", "../../x"],
    "validate-session-zero": lambda s: ["validate", "demo", "--session", "0"],
    "validate-session-huge": lambda s: ["validate", "demo", "--session", "9" * 30],
    "validate-fifo": lambda s: ["validate", _fifo(s)],
    "validate-folder": lambda s: ["validate", str(s.work)],
    "validate-device": lambda s: ["validate", "/dev/zero"],
    "validate-out-is-file": lambda s: ["validate", "demo", "--out", _file(s)],
    "run-partner-traversal": lambda s: [*_RUN, "--partner", "../../../../tmp/x", "--out", str(s.out)],
    "run-partner-id-semicolon": lambda s: [*_RUN, "--partner-id", "a;rm -rf", "--out", str(s.out)],
    "run-dyad-nul": lambda s: [*_RUN, "--dyad", "a\x01b", "--out", str(s.out)],
    "run-session-negative": lambda s: [*_RUN, "--session", "-1", "--out", str(s.out)],
    "run-speed-nan": lambda s: [*_RUN, "--speed", "nan", "--out", str(s.out)],
    "run-speed-inf": lambda s: [*_RUN, "--speed", "inf", "--out", str(s.out)],
    "run-speed-huge": lambda s: [*_RUN, "--speed", "1e308", "--out", str(s.out)],
    "run-out-is-file": lambda s: [*_RUN, "--out", _file(s)],
    "run-out-below-a-file": lambda s: [*_RUN, "--out", str(Path(_file(s)) / "out")],
    "run-missing-protocol": lambda s: ["run", "no-such-protocol", "--autopilot", "--out", str(s.out)],
    "record-predicate-escape": lambda s: ["record", "--predicate", "name='x') or (name='y'", "--out", "r.xdf"],
    "record-predicate-dangling-or": lambda s: ["record", "--predicate", "name='x' or", "--out", "r.xdf"],
    "record-predicate-unclosed-quote": lambda s: ["record", "--predicate", "name='x", "--out", "r.xdf"],
    "record-predicate-variable": lambda s: ["record", "--predicate", "$x=1", "--out", "r.xdf"],
    "record-predicate-control-char": lambda s: ["record", "--predicate", "name='a\x07'", "--out", "r.xdf"],
    "record-predicate-empty": lambda s: ["record", "--predicate", "  ", "--out", "r.xdf"],
    "record-predicate-huge": lambda s: ["record", "--predicate", "name='" + "x" * 5000 + "'", "--out", "r.xdf"],
    "record-source-id-quote": lambda s: ["record", "--source-id", "it's", "--out", "r.xdf"],
    "record-duration-nan": lambda s: ["record", "--source-id", "x", "--out", "r.xdf", "--duration", "nan"],
    "record-duration-1e308": lambda s: ["record", "--source-id", "x", "--out", "r.xdf", "--duration", "1e308"],
    "record-wait-inf": lambda s: ["record", "--source-id", "x", "--out", "r.xdf", "--wait", "inf"],
    "record-out-missing-folder": lambda s: ["record", "--source-id", "x", "--out", "no/such/dir/r.xdf", "--wait", "0"],
    "record-out-fifo": lambda s: ["record", "--source-id", "x", "--out", _fifo(s), "--wait", "0"],
    "record-meta-injection": lambda s: ["record", "--source-id", "x", "--out", "r.xdf", "--meta", "a><b=1"],
    "stream-session-id": lambda s: ["stream", "--session-id", "a b;c"],
    "stream-local-session-id": lambda s: ["stream", "--local-only", "--session-id", "x" * 100],
    "stream-study-traversal": lambda s: ["stream", "--study", "../x"],
    "stream-participant-id": lambda s: ["stream", "--participant-id", "A=<x/>"],
    "stream-role": lambda s: ["stream", "--role", "A=../x"],
    "stream-duration-nan": lambda s: ["stream", "--duration", "nan"],
    "inspect-fifo": lambda s: ["inspect", _fifo(s)],
    "inspect-folder": lambda s: ["inspect", str(s.work)],
    "inspect-missing": lambda s: ["inspect", "missing.xdf"],
    "inspect-device": lambda s: ["inspect", "/dev/zero"],
    "repair-fifo": lambda s: ["repair", _fifo(s)],
    "repair-missing": lambda s: ["repair", "missing_session.json"],
    "repair-folder-without-records": lambda s: ["repair", str(s.work)],
    "repair-garbage-json": lambda s: ["repair", _garbage(s, "x_session.json")],
    "group-garbage": lambda s: ["group", _garbage(s, "a.xdf"), _garbage(s, "b.xdf"), "--no-progress"],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARGUMENTS))
def test_hostile_command_line_value_is_a_clear_error(case: str, sandbox: Sandbox) -> None:
    arguments = HOSTILE_ARGUMENTS[case](sandbox)
    before = sandbox.snapshot()
    result, seconds = invoke(arguments)
    codes = (1, 2) if case.startswith("inspect-") and case != "inspect-fifo" else (2,)
    assert_clean_exit(result, codes=codes, seconds=seconds, limit=60.0)
    assert sandbox.changes_outside_out(before) == []
    assert not (sandbox.work / "r.xdf").exists()


# ------------------------------------------------------------------------------------------
# 1. One output-path resolver, real values, inside --out
# ------------------------------------------------------------------------------------------


def _write_protocol(folder: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    path = folder / "protocol.yaml"
    path.write_bytes(_protocol(change)())
    return path


def test_defect_1_output_path_uses_real_values_and_stays_inside_out(sandbox: Sandbox) -> None:
    from dyadlab.protocols.runner import SessionRunner
    from dyadlab.protocols.schema import OutputPathError, load_protocol, resolve_output_stem

    # The issue's reproduction: a fill character that turns the partner's role into an absolute path.
    path = _write_protocol(
        sandbox.work,
        lambda d: (
            d["participants"][1].update(role="stranger"),
            d.update(output={"pattern": "{partner:/>9}/x_run-{run}"}),
        ),
    )
    result, _ = invoke(["validate", str(path)])
    assert result.exit_code == 2 and "leaves the output folder" in result.output, result.output

    # A valid pattern, but --out/sub-D01 is a symbolic link to a folder outside --out.
    victim = sandbox.root / "victim"
    victim.mkdir()
    sandbox.out.mkdir()
    (sandbox.out / "sub-D01").symlink_to(victim)
    loaded = load_protocol("demo")
    with pytest.raises(OutputPathError, match="outside the output folder"):
        resolve_output_stem(loaded.protocol, 1, sandbox.out)
    with pytest.raises(OutputPathError):
        SessionRunner(loaded, out_dir=sandbox.out, simulate=True, autopilot=True)
    before = sandbox.snapshot()
    result, _ = invoke([*_RUN, "--out", str(sandbox.out)])
    assert result.exit_code == 2 and "outside the output folder" in result.output, result.output
    result, _ = invoke(["validate", "demo", "--out", str(sandbox.out)])
    assert result.exit_code == 2 and "outside the output folder" in result.output, result.output
    assert sandbox.changes_outside_out(before) == [] and list(victim.iterdir()) == []

    # The resolver fills in the counterbalanced partner's role, as the runner does.
    stem = resolve_output_stem(loaded.protocol, 7, sandbox.work / "elsewhere")
    assert stem == sandbox.work / "elsewhere" / "sub-D01" / "ses-01" / "sub-D01_ses-01_task-demo_run-07"


# ------------------------------------------------------------------------------------------
# 2. Predicates are bracketed and checked
# ------------------------------------------------------------------------------------------


_OTHER_ROOM_OUTLET = """
import sys, time, pylsl
info = pylsl.StreamInfo(sys.argv[1], "Markers", 1, 0, "string", sys.argv[1])
outlet = pylsl.StreamOutlet(info)
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_defect_2_predicate_cannot_escape_the_session_id(tmp_path: Path, unique_id: str) -> None:
    import pylsl

    from dyadlab.acquisition.lslquery import PredicateError
    from dyadlab.acquisition.recorder import StreamSelector

    name = f"OTHER-{unique_id}"
    predicate = f"name='{name}' or name='{name}'"
    assert StreamSelector(predicate=predicate).query == f"({predicate})"
    with pytest.raises(PredicateError, match="unbalanced closing bracket"):
        StreamSelector(predicate=f"name='{name}') or (name='{name}'")

    # Another room: the same machine, another LSL SessionID.
    config = tmp_path / "other_room.cfg"
    config.write_text(LslConfig.local_only(f"other-room-{unique_id}").to_cfg_text())
    room = subprocess.Popen(
        [sys.executable, "-c", _OTHER_ROOM_OUTLET, name, "30"],
        env={**os.environ, "LSLAPICFG": str(config)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert room.stdout is not None and room.stdout.readline().strip() == "ready"
        # liblsl's own behaviour: the unbracketed predicate matches the other room's stream.
        found = pylsl.resolve_bypred(predicate, 1, 5.0)
        assert [info.name() for info in found] == [name], "the other room's outlet is not visible"
        out = tmp_path / "escaped.xdf"
        result = CliRunner().invoke(main, ["record", "--predicate", predicate, "--out", str(out), "--wait", "2"])
        assert result.exit_code == 3, result.output  # not found in this process's SessionID
        assert not out.exists()
    finally:
        room.kill()
        room.wait(10)


# ------------------------------------------------------------------------------------------
# 3. Local only: what is exposed, said at start; 10. no /tmp/dyadlab-lsl-* left behind
# ------------------------------------------------------------------------------------------


def _listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP / bound UDP socket of ``pid`` (ss)."""
    sockets = []
    for protocol, flags in (("tcp", "-ltnpH"), ("udp", "-lunpH")):
        output = subprocess.run(["ss", flags], capture_output=True, text=True, check=True).stdout
        for line in output.splitlines():
            if f"pid={pid}," not in line:
                continue
            local = line.split()[3]
            address, _, port = local.rpartition(":")
            sockets.append((protocol, address.strip("[]"), int(port)))
    return sockets


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_defect_3_local_only_says_what_it_exposes_and_10_leaves_no_config(tmp_path: Path) -> None:
    """`dyadlab stream --local-only`: liblsl (1.16-1.18) has no setting that binds an outlet's TCP
    data server or UDP time server to loopback (they bind 0.0.0.0); dyadlab binds what it can
    (the multicast responder, [multicast] ListenAddress) to 127.0.0.1 and says what stays exposed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "dyadlab", "stream", "--local-only", "--simulate", "--duration", "30"],
        env={**os.environ, "TMPDIR": str(tmp)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Streaming" in line:
                break
        time.sleep(0.5)
        sockets = _listening_sockets(process.pid)
        leftovers = list(tmp.glob("dyadlab-lsl-*"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    stderr = "".join(lines) + rest
    assert process.returncode == 0, stderr
    assert "local only" in stderr and "0.0.0.0" in stderr and "docs/protocols.md" in stderr
    assert sockets, "ss shows no socket of the stream process"
    loopback = {"127.0.0.1", "::1"}
    responder = [s for s in sockets if s[0] == "udp" and s[2] == 16571]
    assert all(address in loopback for _, address, _ in responder), responder
    exposed = [s for s in sockets if s[1] not in loopback]
    # What the warning says is exposed, and nothing else: outlet data (TCP) and time (UDP) ports
    # in the range the documented firewall rule covers.
    first, last = local_only_ports()
    assert f"{first}-{last}" in stderr
    assert all(LSL_BASE_PORT <= port <= last for _, _, port in exposed), exposed
    assert leftovers == [], "the private lsl_api.cfg was not removed once liblsl had read it"
    assert list(tmp.glob("dyadlab-lsl-*")) == []


def test_defect_10_private_lsl_config_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if "LSLAPICFG" in os.environ:  # restored after the test, whatever happens
        monkeypatch.setenv("LSLAPICFG", os.environ["LSLAPICFG"])
    previous = os.environ.get("LSLAPICFG")
    path = apply_lsl_config(LslConfig(session_id="cleanup-test"))
    assert path is not None and path.parent.parent == tmp_path and os.environ["LSLAPICFG"] == str(path)
    discard_lsl_config(path)
    assert not path.parent.exists() and os.environ.get("LSLAPICFG") == previous
    # ... and at exit, for a process that never discards it
    code = "from dyadlab.acquisition.lslconfig import LslConfig, apply_lsl_config; apply_lsl_config(LslConfig(session_id='x'))"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)}, check=True)
    assert list(tmp_path.glob("dyadlab-lsl-*")) == []


# ------------------------------------------------------------------------------------------
# 4. Window sizes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [[-1, 0], [0, 600], [800, 100_000]])
def test_defect_4_window_size_is_validated(size: list[int], sandbox: Sandbox) -> None:
    from dyadlab.protocols.schema import ProtocolError, load_protocol
    from dyadlab.tasks.display import DisplaySettings

    path = _write_protocol(sandbox.work, lambda d: d["screens"].update(size=size))
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    assert [issue.field for issue in caught.value.issues][0].startswith("screens.size[")
    with pytest.raises(ValueError):
        DisplaySettings(size=tuple(size))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# 5. Safe YAML
# ------------------------------------------------------------------------------------------


def _issues(text: str) -> list[Any]:
    from dyadlab.protocols.schema import ProtocolError, validate_protocol_text

    with pytest.raises(ProtocolError) as caught:
        validate_protocol_text(text, file="p.yaml")
    return caught.value.issues


def test_defect_5_yaml_aliases_nesting_duplicates_and_booleans() -> None:
    started = time.monotonic()
    (bomb,) = _issues(_alias_bomb(12))
    assert time.monotonic() - started < 2.0
    assert "aliases" in bomb.message and bomb.line == 2
    (deep,) = _issues("a: " + "[" * 50_000 + "]" * 50_000)
    assert "nested" in deep.message
    demo = _demo_text()
    (duplicate,) = _issues(demo.replace("session: 1\n", "session: 1\nsession: 2\n"))
    first = demo.splitlines().index("session: 1") + 1
    assert duplicate.line == first + 1 and f"first given at line {first}" in duplicate.message
    (flag,) = _issues(demo.replace("duration: 30", "duration: true"))
    assert flag.field == "blocks[0].duration" and "true" in flag.message and flag.line is not None
    (yes,) = _issues(demo.replace("n_trials: 10", "n_trials: yes"))
    assert yes.field == "blocks[1].params.n_trials"
    assert any(i.field == "blocks[0].duration" for i in _issues(demo.replace("duration: 30", "duration: .nan")))


# ------------------------------------------------------------------------------------------
# 6. SIGTERM ends a run like Escape; session.json progressive; repair after kill -9
# ------------------------------------------------------------------------------------------

_SHORT_PROTOCOL = {
    "version": 1,
    "name": "hostile",
    "study": "hostile",
    "dyad": "D01",
    "participants": [
        {"label": "A", "id": "sim-01", "device": {"board": "simulator"}},
        {"label": "B", "id": "sim-02", "device": {"board": "simulator"}},
    ],
    "screens": {"layout": "shared", "fullscreen": False, "size": [400, 300], "check_timing": False},
    "blocks": [
        {"id": "first", "task": "rest", "params": {"duration_s": 2.0, "show_instructions": False}},
        {"id": "long", "task": "rest", "params": {"duration_s": 300.0, "show_instructions": False}},
        {"id": "never", "task": "rest", "params": {"duration_s": 2.0, "show_instructions": False}},
    ],
    "lsl": {"session_id": None, "local_only": True},
    "preflight": {"enabled": False},
    "quickcheck": {"enabled": False},
}


@pytest.mark.integration
@pytest.mark.display
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (run under xvfb-run)")
def test_defect_6_sigterm_ends_a_run_like_escape_and_10_no_lsl_leftovers(tmp_path: Path, unique_id: str) -> None:
    protocol = dict(_SHORT_PROTOCOL, lsl={"session_id": f"hostile-{unique_id}", "local_only": True})
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "dyadlab", "run", str(path), "--simulate", "--autopilot", "--out", str(out)],
        env={**os.environ, "TMPDIR": str(tmp), "COLUMNS": "300"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    killed = tmp_path / "killed"
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "2/3 long" in line:
                break
        folder = out / "sub-D01" / "ses-01"
        stem = "sub-D01_ses-01_task-hostile_run-01"
        time.sleep(1.5)
        # What a kill -9 now would leave: the record (at most one block behind) and the XDF as on disk.
        killed.mkdir()
        for suffix in ("_session.json", ".xdf"):
            shutil.copy(folder / (stem + suffix), killed / (stem + suffix))
        mid_run = json.loads((killed / f"{stem}_session.json").read_text())
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output) + rest
    assert mid_run["status"] == "running"
    assert [b["status"] for b in mid_run["blocks"]] == ["completed", "running", "not-run"]

    assert process.returncode == 3, text  # incomplete, like Escape (not 143)
    assert "SIGTERM" in text and "Traceback" not in text
    session = json.loads((folder / f"{stem}_session.json").read_text())
    assert session["status"] == "aborted" and session["complete"] is False
    assert "SIGTERM" in session["abort_reason"]
    assert [b["status"] for b in session["blocks"]] == ["completed", "aborted", "not-run"]
    assert session["recorder"]["closed"] is True
    from dyadlab.acquisition.xdfinspect import inspect_xdf

    inspection = inspect_xdf(folder / f"{stem}.xdf")
    assert inspection.complete, inspection.defect  # finalised: every footer written
    from dyadlab.synchrony.xdfreader import load_xdf

    streams, _ = load_xdf(folder / f"{stem}.xdf", synchronize_clocks=False)
    markers = [json.loads(row[0]) for s in streams if s["info"]["name"][0] == "D01-Markers" for row in s["time_series"]]
    events = [(m["event"], m.get("block"), m.get("value")) for m in markers]
    assert ("block_end", "long", "aborted") in events and events[-1] == ("session_end", None, "aborted")
    assert any(event == "abort" and "SIGTERM" in str(value) for event, _, value in events)
    assert list(tmp.glob("dyadlab-lsl-*")) == []

    # kill -9: `dyadlab repair` brings the left-behind record in line with the XDF.
    result = CliRunner().invoke(main, ["repair", str(killed)])
    assert result.exit_code == 0, result.output
    repaired = json.loads((killed / f"{stem}_session.json").read_text())
    assert repaired["status"] == "interrupted" and repaired["complete"] is False
    assert [b["status"] for b in repaired["blocks"]] == ["completed", "interrupted", "not-run"]
    assert repaired["blocks"][0]["end_lsl"] is not None and repaired["repaired"]["status_before"] == "running"
    assert (killed / f"{stem}_session.json.before-repair").is_file()


def test_defect_6_repair_of_a_finished_file(tmp_path: Path) -> None:
    """repair reads the markers: session_end complete -> complete, blocks completed."""
    from dyadlab.protocols.repair import repair_session

    xdf = _recorder_like_xdf(tmp_path / "run-01.xdf")
    record = tmp_path / "run-01_session.json"
    blocks = [{"id": "rest-1", "status": "running"}, {"id": "rest-2", "status": "not-run"}]
    record.write_text(
        json.dumps(
            {
                "dyadlab_session_schema": 1,
                "study": "test",
                "dyad": "d01",
                "status": "running",
                "blocks": blocks,
                "files": {"xdf": str(xdf)},
            }
        )
    )
    report = repair_session(record)
    assert report.changed and report.status_after == "complete"
    assert [after for _, _, after in report.blocks] == ["completed", "not-run"]
    assert json.loads(record.read_text())["complete"] is True


# ------------------------------------------------------------------------------------------
# 7. inspect: FIFO, huge channel counts; no pyxdf traceback on the console
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_defect_7_inspect_refuses_a_fifo_at_once_and_reports_huge_counts(sandbox: Sandbox) -> None:
    result, seconds = invoke(["inspect", _fifo(sandbox)])
    assert result.exit_code == 2 and "not a regular file" in result.output and seconds < 5, result.output
    for channels in (10**12, 2**31, 10**40):
        path = sandbox.work / f"huge-{channels}.xdf"
        path.write_bytes(
            b"XDF:" + _FILE_HEADER + _xdf_chunk(2, _stream_header(channels), 1) + _xdf_chunk(3, _one_sample(), 1)
        )
        result, _ = invoke(["inspect", str(path)])
        assert_clean_exit(result, codes=(1,))
        assert "INVALID" in result.output and "channel_count" in result.output


def test_defect_7_pyxdf_tracebacks_do_not_reach_the_console(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from dyadlab.synchrony.io import load_dyad
    from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

    path = write_dyad_xdf(tmp_path / "damaged.xdf", DyadSpec(blocks=[("rest", 4.0)]))
    with open(path, "ab") as handle:
        handle.write(bytes([7]) + b"not a chunk")  # the index gives up; pyxdf reads it, logging a traceback
    with caplog.at_level("DEBUG"):
        recording = load_dyad(path)
    assert not [r for r in caplog.records if r.name.startswith("pyxdf") and r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
    assert any("Error reading chunk length" in problem for problem in recording.file_problems)


# ------------------------------------------------------------------------------------------
# 8. validate makes run's checks; run creates nothing before they pass
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["session-id-spaces", "session-id-auto-too-long", "nul-in-pattern", "name-255-with-suffix"]
)
def test_defect_8_validate_refuses_what_run_refuses_and_run_creates_nothing(case: str, sandbox: Sandbox) -> None:
    path = sandbox.work / "protocol.yaml"
    path.write_bytes(HOSTILE_PROTOCOLS[case]())
    result, _ = invoke(["validate", str(path)])
    assert result.exit_code == 2, result.output
    result, _ = invoke(["run", str(path), "--simulate", "--autopilot", "--out", str(sandbox.out)])
    assert result.exit_code == 2, result.output
    assert not sandbox.out.exists()


# ------------------------------------------------------------------------------------------
# 9. Diagnoses: truncated file, a source that died, one bad file in a group
# ------------------------------------------------------------------------------------------


def test_defect_9_file_cut_in_the_first_samples_chunk_is_called_truncated(tmp_path: Path) -> None:
    from dyadlab.synchrony.io import XdfLoadError, load_dyad

    path = _recorder_like_xdf(tmp_path / "cut.xdf")
    data = path.read_bytes()
    start, end = _first_samples_chunk(data)
    path.write_bytes(data[: (start + end) // 2])
    with pytest.raises(XdfLoadError, match="truncated") as caught:
        load_dyad(path)
    assert "did not deliver" not in str(caught.value)


@pytest.mark.integration
def test_defect_9_record_reports_a_source_that_died_halfway(tmp_path: Path, unique_id: str) -> None:
    from tests.acquisition.recorder_helpers import NumberedPusher, make_outlet

    outlet = make_outlet(f"dies-{unique_id}", f"dies-{unique_id}", channels=2, rate=200.0)
    pusher = NumberedPusher(outlet, 200.0, block=4).start()

    def die() -> None:
        pusher.stop()  # the source stops delivering and never comes back

    timer = threading.Timer(1.5, die)
    timer.start()
    out = tmp_path / "died.xdf"
    try:
        result = CliRunner().invoke(
            main, ["record", "--source-id", f"dies-{unique_id}", "--out", str(out), "--duration", "4.5"]
        )
    finally:
        timer.cancel()
        pusher.stop()
    assert result.exit_code == 1, result.output
    assert "INCOMPLETE" in result.output and "no data for the last" in result.output
    assert out.is_file()
    del outlet


def test_defect_9_group_skips_a_file_that_fails_unexpectedly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dyadlab.synchrony.check as check
    from dyadlab.synchrony.group import GroupError, run_group
    from tests.synchrony.xdf_fixtures import DyadSpec, write_dyad_xdf

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    good = [
        write_dyad_xdf(tmp_path / f"good{i}.xdf", DyadSpec(blocks=[("rest", 12.0), ("cooperation", 12.0)], seed=i))
        for i in range(2)
    ]
    bad = tmp_path / "bad.xdf"
    shutil.copy(good[0], bad)
    garbage = tmp_path / "garbage.xdf"
    garbage.write_bytes(b"XDF:" + b"\x07" * 100)
    real = check.run_check

    def run_check(path: Any, **options: Any) -> Any:
        if Path(path) == bad:
            raise ZeroDivisionError("float division by zero")  # stands in for any bug on one file
        return real(path, **options)

    monkeypatch.setattr(check, "run_check", run_check)
    result = run_group([good[0], bad, garbage, good[1]], n_surrogates=0, progress=False)
    skipped = {Path(entry["path"]).name: entry["error"] for entry in result["skipped"]}
    assert set(skipped) == {"bad.xdf", "garbage.xdf"} and len(result["sessions"]) == 2
    assert "ZeroDivisionError" in skipped["bad.xdf"] and "traceback is in" in skipped["bad.xdf"]
    with pytest.raises(ZeroDivisionError):  # --strict: the first bad file stops the run
        run_group([good[0], bad, good[1]], n_surrogates=0, progress=False, strict=True)
    with pytest.raises(GroupError, match="garbage.xdf"):
        run_group([good[0], garbage], n_surrogates=0, progress=False, strict=True)


# ------------------------------------------------------------------------------------------
# 10. Run numbers are claimed exclusively
# ------------------------------------------------------------------------------------------


def test_defect_10_runs_started_at_once_get_different_run_numbers(tmp_path: Path) -> None:
    from dyadlab.acquisition.lslconfig import LslConfig as Config
    from dyadlab.protocols.runner import SessionRunner
    from dyadlab.protocols.schema import load_protocol

    loaded = load_protocol("demo")
    runners = [
        SessionRunner(loaded, out_dir=tmp_path / "out", simulate=True, autopilot=True, lsl_config=Config())
        for _ in range(8)
    ]
    barrier = threading.Barrier(len(runners))
    stems: list[Path] = []

    def claim(runner: SessionRunner) -> None:
        barrier.wait()
        stems.append(runner._claim_run())

    threads = [threading.Thread(target=claim, args=(runner,)) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(stems) == 8 and len(set(stems)) == 8
    assert sorted(stem.name[-2:] for stem in stems) == [f"{run:02d}" for run in range(1, 9)]
    assert runners[0].output_stem().name.endswith("run-09")
