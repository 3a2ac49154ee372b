"""The session protocol: a validated description of one dyad session (YAML file, pydantic model).

A protocol says who takes part (two participants with ids, roles and devices), how the screens
are laid out, which blocks run (paradigm + parameters + duration), how block order and
participant seats are counterbalanced, where the files go, and how LSL and the quick-check are
configured. :func:`load_protocol` reads a file and rejects anything broken with the file, the
field and a fix *before* any device or LSL outlet exists. The reference is ``docs/protocols.md``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import string
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from dyadlab import DyadlabError
from dyadlab.acquisition.lslconfig import LslConfig, LslConfigError
from dyadlab.protocols.safeyaml import MAX_BYTES, YamlRefused, load_yaml
from dyadlab.tasks.autopilot import AutopilotSettings
from dyadlab.tasks.display import DisplaySettings
from dyadlab.tasks.input import KeySettings

if typing.TYPE_CHECKING:
    from dyadlab.tasks.paradigms.registry import ParadigmRegistry

BUNDLED_DIR = Path(__file__).parent / "bundled"
SIMULATOR_BOARD = "simulator"
#: The device ``board`` of an amplifier that streams LSL itself (dyadlab.acquisition.lsl_source).
LSL_BOARD = "lsl"
SCHEMA_VERSION: Final = 1

_TOKEN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_TOKEN = re.compile(_TOKEN_PATTERN)

# Roles a participant can have in a dyad. `partner type` in a longitudinal design is the role of
# the patient's partner (therapist, stranger, significant-other...). Add others with `extra_roles`.
KNOWN_ROLES: tuple[str, ...] = (
    "participant",
    "patient",
    "client",
    "therapist",
    "counsellor",
    "stranger",
    "confederate",
    "significant-other",
    "partner",
    "friend",
    "parent",
    "child",
    "teacher",
    "student",
    "leader",
    "follower",
)

# Placeholders of the output pattern, with a sample value used to check format specs.
OUTPUT_PLACEHOLDERS: dict[str, Any] = {
    "study": "study",
    "dyad": "D01",
    "session": 1,
    "protocol": "demo",
    "run": 1,
    "partner": "therapist",
    "id_A": "sub-01",
    "id_B": "sub-02",
}
#: What the runner appends to the output stem; the longest one bounds the file-name length.
OUTPUT_SUFFIXES: tuple[str, ...] = (
    ".xdf",
    "_beh.csv",
    "_session.json",
    "_session.json.tmp",
    "_quickcheck.json",
    "_quickcheck.html",
)
#: Highest run number: a session's files are numbered run-1 ... run-MAX_RUNS.
MAX_RUNS: Final = 999
#: Longest file or folder name most file systems accept (bytes).
NAME_MAX: Final = 255
#: Longest path Linux accepts (bytes).
PATH_MAX: Final = 4096
#: Widest field a format spec of the output pattern may ask for ({run:03d}...).
MAX_FORMAT_WIDTH: Final = 64
#: One folder or file name of a resolved output path: letters, digits and ``_ . + = -``, not
#: starting with a dot or a dash (no hidden files, nothing a shell reads as an option).
_SAFE_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=\-]*$")


class FieldProblem(ValueError):
    """A field value that is wrong, with how to fix it (raised inside validators)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass(frozen=True)
class ProtocolIssue:
    """One thing wrong with a protocol file.

    Attributes
    ----------
    file : str
        The protocol file (or ``<overrides>`` for command-line values).
    field : str
        Path of the field, e.g. ``blocks[2].params.n_trials``; empty for the whole file.
    message : str
        What is wrong.
    fix : str
        How to fix it.
    line : int | None
        1-based line of the field in the file, when known.
    column : int | None
        1-based column, when known.
    """

    file: str
    field: str
    message: str
    fix: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}\n    fix: {self.fix}"


class ProtocolError(DyadlabError, ValueError):
    """A protocol that cannot run; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ProtocolIssue]) -> None:
        self.issues = issues
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__(f"Protocol rejected ({count}):\n" + "\n".join(f"  {issue}" for issue in issues))


class OutputPathError(DyadlabError, ValueError):
    """The output pattern, filled in with a session's values, gives a path that cannot be used
    (outside the output folder, unsafe characters, names too long...)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message} (fix: {fix})")
        self.message = message
        self.fix = fix


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _token(what: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise FieldProblem(
            f"{what} {value!r} cannot be used in stream ids and file names",
            "use 1-64 letters, digits, '_' or '-', starting with a letter or digit",
        )
    return value


class Participant(_Strict):
    """One member of the dyad."""

    label: str = Field(description="Label within the session, 'A' or 'B' (streams are named by it).")
    id: str = Field(description="The study's id for this person (e.g. sub-017); never a name.")
    role: str = Field(default="participant", description="Role in the dyad; see KNOWN_ROLES.")
    device: dict[str, Any] = Field(
        default_factory=lambda: {"board": "synthetic"},
        description="`board: simulator`; `board: lsl` with the source_id (or name and hostname) of a stream the "
        "amplifier's own LSL app sends (dyadlab.acquisition.lsl_source.LslStreamSpec); or a BrainFlow board name "
        "with its connection parameters (dyadlab.acquisition.brainflow_source.BoardSpec fields: serial_port, "
        "mac_address, serial_number...).",
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return _token("Participant label", value)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _token("Participant id", value)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        return _token("Participant role", value)

    @property
    def uses_simulator(self) -> bool:
        """Whether this participant's device is the coupled-dyad simulator."""
        return str(self.device.get("board", "")).strip().lower() == SIMULATOR_BOARD

    @property
    def uses_lsl_stream(self) -> bool:
        """Whether this participant's EEG is an existing LSL stream (an amplifier's own LSL app)."""
        return str(self.device.get("board", "")).strip().lower() == LSL_BOARD

    def lsl_spec(self) -> Any:
        """The ``LslStreamSpec`` of this participant's LSL stream (``None`` for other devices)."""
        if not self.uses_lsl_stream:
            return None
        from dyadlab.acquisition.lsl_source import LslStreamSpec

        return LslStreamSpec.model_validate(self.device)

    def board_spec(self) -> Any:
        """The BrainFlow ``BoardSpec`` of this participant's device (``None`` for the simulator
        and for an LSL stream)."""
        if self.uses_simulator or self.uses_lsl_stream:
            return None
        from dyadlab.acquisition.brainflow_source import BoardSpec

        return BoardSpec.model_validate(self.device)


class Block(_Strict):
    """One block of the session: a paradigm run with its parameters."""

    task: str = Field(
        description="Paradigm name (see `dyadlab validate --list-tasks`), or the lab's own "
        "'path/to/file.py:ClassName' / 'package.module:ClassName' (docs/paradigms.md)."
    )
    id: str | None = Field(default=None, description="Block id in markers; default '<task>-<n>'.")
    duration: float | None = Field(
        default=None, description="Seconds; sets the paradigm's duration parameter when it has one."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Paradigm parameters (its Params model).")
    fixed: bool = Field(default=False, description="Keep this block in place when the order is counterbalanced.")
    cue_at_end: str | None = Field(
        default=None,
        description="What the session console tells the experimenter (shown and spoken) when the block ends; "
        "default the paradigm's own cue (eyes-closed rest: ask the participants to open their eyes); '' for none.",
    )

    @field_validator("duration")
    @classmethod
    def _positive_duration(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise FieldProblem(
                f"duration must be a positive number of seconds, got {value}",
                "give the block's length in seconds, e.g. 60",
            )
        return value

    @field_validator("id")
    @classmethod
    def _block_id(cls, value: str | None) -> str | None:
        return None if value is None else _token("Block id", value)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            paradigms()[value]  # a name, or the lab's own 'file.py:Class' / 'module:Class'
        except KeyError as error:  # ParadigmLoadError: unknown, or not loadable (it says why)
            raise FieldProblem(getattr(error, "message", str(error)), getattr(error, "fix", "")) from None
        return value


BlockOrder = Literal[
    "none", "latin-square", "reverse-on-even-sessions", "reverse-on-odd-sessions", "reverse-on-even-dyads"
]
RoleOrder = Literal["none", "swap-on-even-dyads", "swap-on-even-sessions"]


class Counterbalance(_Strict):
    """Deterministic counterbalancing from the dyad and session numbers."""

    blocks: BlockOrder = Field(default="none", description="Order of the blocks that are not `fixed`.")
    latin_square_by: Literal["dyad", "session", "dyad+session"] = Field(
        default="dyad", description="Which number selects the Latin-square row."
    )
    roles: RoleOrder = Field(
        default="none", description="When the two participants exchange labels A and B (seat, screen, task roles)."
    )


class Output(_Strict):
    """Where the session's files go, relative to the output folder."""

    pattern: str = Field(
        default="sub-{dyad}/ses-{session:02d}/sub-{dyad}_ses-{session:02d}_task-{protocol}_run-{run:02d}",
        description="Path of every file without its suffix; placeholders: " + ", ".join(OUTPUT_PLACEHOLDERS),
    )

    @field_validator("pattern")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        if any(ord(character) < 32 or ord(character) == 127 for character in value):
            raise FieldProblem(
                "the pattern holds a control character (NUL, newline, tab...)",
                "use letters, digits, '_', '-', '.' and '/' between the placeholders",
            )
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as error:
            raise FieldProblem(
                f"the pattern is not a valid format string ({error})", "balance every '{' with '}'"
            ) from None
        fields = [name for _, name, _, _ in parsed if name is not None]
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if conversion is not None:
                raise FieldProblem(
                    f"{{{name}!{conversion}}}: conversions are not allowed in the pattern", f"write {{{name}}}"
                )
            if spec and "{" in spec:
                raise FieldProblem(
                    f"{{{name}:{spec}}}: placeholders inside a format spec are not allowed", "use e.g. {session:02d}"
                )
            widths = [int(digits) for digits in re.findall(r"\d+", spec or "")]
            if widths and max(widths) > MAX_FORMAT_WIDTH:
                raise FieldProblem(
                    f"{{{name}:{spec}}} asks for {max(widths)} characters", f"use a width of at most {MAX_FORMAT_WIDTH}"
                )
        unknown = sorted({name for name in fields if name not in OUTPUT_PLACEHOLDERS})
        if unknown:
            raise FieldProblem(
                f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}",
                f"use only {', '.join('{' + n + '}' for n in OUTPUT_PLACEHOLDERS)}",
            )
        if "run" not in fields:
            raise FieldProblem(
                "the pattern has no {run}, so a second run would have nowhere to go",
                "add _run-{run:02d} to the file name",
            )
        try:
            value.format(**OUTPUT_PLACEHOLDERS)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise FieldProblem(
                f"the pattern cannot be filled in ({error})", "check the format specs, e.g. {session:02d}"
            ) from None
        # Whether the path stays inside the output folder depends on the real values (partner
        # role, dyad...): see resolve_output_stem, which validation and the runner both call.
        return value


class LslSettings(_Strict):
    """LSL configuration applied before the first LSL call of the session."""

    session_id: str | None = Field(
        default="auto",
        description="LSL SessionID; 'auto' = dyadlab-<study>-<dyad>-ses<NN>; null = the machine's lsl_api.cfg.",
    )
    resolve_scope: Literal["machine", "link", "site", "organization", "global"] | None = None
    known_peers: list[str] = Field(default_factory=list)
    local_only: bool = Field(default=False, description="Keep every stream on this machine (demo, pilots).")

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str | None) -> str | None:
        if value is not None and value != "auto":
            try:
                LslConfig(session_id=value)
            except LslConfigError as error:
                raise FieldProblem(str(error), "use 1-64 letters, digits, '.', '_' or '-' (or auto)") from None
        return value

    @field_validator("known_peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        try:
            LslConfig(known_peers=tuple(value))
        except LslConfigError as error:
            raise FieldProblem(str(error), "give host names or IP addresses, e.g. [192.168.1.20, lab-pc-2]") from None
        return value


class Microphone(_Strict):
    """One participant's microphone: a device by name, one of its input channels."""

    device: str = Field(
        min_length=1,
        description="Part of the input device's name as the audio system lists it (a missing name lists them) "
        "(case-insensitive), e.g. 'Scarlett 2i2'; add the host API ('Scarlett 2i2, ALSA') if it appears twice. "
        "'simulator': the simulated participants' scripted voices (eSpeak NG), as board: simulator is for EEG.",
    )
    channel: int = Field(default=1, ge=1, le=64, description="1-based input channel of that device.")

    @property
    def simulated(self) -> bool:
        """Whether this is a simulated microphone (``device: simulator``: scripted voices, docs/audio.md)."""
        return self.device.strip().casefold() == SIMULATOR_BOARD


class MicrophoneSettings(_Strict):
    """Each participant's voice as an LSL stream and a FLAC file (docs/audio.md)."""

    record_audio: bool = Field(
        description="Whether voices are captured and stored: audio is personal data, so the protocol says so "
        "explicitly (false keeps the device list but records no audio)."
    )
    sample_rate: int = Field(default=16000, ge=8000, le=192000, description="Audio rate in Hz.")
    devices: dict[str, Microphone] = Field(
        description="Participant label as written under participants -> their microphone (it follows the person "
        "when counterbalancing swaps labels, as their EEG device does)."
    )
    live_speech: bool = Field(
        default=False,
        description="Also detect each participant's speech live, in a process of its own (dyadlab live-speech, "
        "docs/speech.md), and record its speech on/off events with the session; needs record_audio: true and a "
        "sample_rate of 8000, 16000, 32000 or 48000.",
    )


class PreflightSettings(_Strict):
    """Checks of both participants' signals before recording starts."""

    enabled: bool = True
    seconds: float = Field(default=3.0, gt=0, description="How long to measure each stream.")
    line_frequency: Literal[50, 60] = 50
    noisy_std_uv: float = Field(
        default=100.0,
        gt=0,
        description="A channel whose standard deviation exceeds this (µV, 1 Hz high-passed) is noisy.",
    )
    max_bad_channels: int = Field(
        default=0, ge=0, description="Bad channels tolerated per participant (then warnings)."
    )


class QuickCheckSettings(_Strict):
    """The synchrony quick-check run on the XDF at the end of the session."""

    enabled: bool = True
    surrogates: int = Field(default=200, ge=0, description="Surrogate count per condition and band.")
    epoch_seconds: float = Field(default=2.0, gt=0)
    mains: Literal["auto", "off", 50, 60] = Field(
        default="auto",
        description=(
            "Mains removed before band filtering (dyadlab check --mains): 50 or 60 Hz, 'auto' (the frequency "
            "whose peak the data show), or 'off' (none removed)."
        ),
    )


class LiveSynchronySettings(_Strict):
    """Live inter-brain synchrony published as an LSL stream and recorded with the session
    (``dyadlab live-synchrony``, ``docs/live-synchrony.md``), in a process of its own."""

    enabled: bool = False
    window_seconds: float = Field(default=2.0, gt=0, le=60, description="Sliding window length.")
    step_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Seconds between windows (1 / the stream's rate)."
    )


class MonitorSettings(_Strict):
    """The dyad monitor (``dyadlab monitor``) started with the session, in a process of its own."""

    enabled: bool = False
    port: int = Field(default=0, ge=0, le=65535, description="TCP port of the page (0: any free one).")
    browser: bool = Field(default=False, description="Open the page in this machine's browser.")


class Protocol(_Strict):
    """A whole session; see ``docs/protocols.md``."""

    version: Literal[1] = SCHEMA_VERSION
    name: str = Field(description="Protocol name; its letters and digits become the {protocol} of file names.")
    description: str = ""
    study: str
    dyad: str = Field(description="Dyad id (e.g. D07); its trailing number drives counterbalancing.")
    session: int = Field(default=1, ge=1, le=9999, description="Session number within the dyad (1, 2, ...).")
    participants: list[Participant] = Field(min_length=2, max_length=2)
    extra_roles: list[str] = Field(default_factory=list, max_length=100, description="Roles beyond the known ones.")
    screens: DisplaySettings = Field(
        default_factory=DisplaySettings, description="Window layout (dyadlab.tasks.display)."
    )
    keys: KeySettings = Field(
        default_factory=KeySettings, description="Response and operator keys (dyadlab.tasks.input)."
    )
    autopilot: AutopilotSettings = Field(
        default_factory=AutopilotSettings,
        description="Simulated participants used with --autopilot (dyadlab.tasks.autopilot).",
    )
    blocks: list[Block] = Field(min_length=1, max_length=500)
    counterbalance: Counterbalance = Field(default_factory=Counterbalance)
    output: Output = Field(default_factory=Output)
    lsl: LslSettings = Field(default_factory=LslSettings)
    preflight: PreflightSettings = Field(default_factory=PreflightSettings)
    quickcheck: QuickCheckSettings = Field(default_factory=QuickCheckSettings)
    microphones: MicrophoneSettings | None = Field(
        default=None, description="Each participant's microphone (docs/audio.md); none: no audio."
    )
    live_synchrony: LiveSynchronySettings = Field(default_factory=LiveSynchronySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    @field_validator("name", "study", "dyad")
    @classmethod
    def _tokens(cls, value: str, info: Any) -> str:
        return _token(info.field_name.capitalize(), value)

    @field_validator("extra_roles")
    @classmethod
    def _role_tokens(cls, value: list[str]) -> list[str]:
        return [_token("Role", role) for role in value]

    @property
    def protocol_label(self) -> str:
        """The protocol name reduced to letters and digits (a BIDS task label)."""
        return re.sub(r"[^A-Za-z0-9]", "", self.name)

    @property
    def dyad_number(self) -> int | None:
        """The trailing number of the dyad id (``D07`` -> 7), or ``None``."""
        match = re.search(r"(\d+)$", self.dyad)
        return int(match.group(1)) if match else None

    def participant(self, label: str) -> Participant:
        """The participant with ``label``."""
        return next(p for p in self.participants if p.label == label)

    def block_ids(self) -> list[str]:
        """Every block's id, defaults filled in (``<task>-<n>``, n counted per task; a lab's
        ``file.py:Class`` block counts under its paradigm's name)."""
        counts: dict[str, int] = {}
        ids = []
        registry = paradigms()
        for block in self.blocks:
            task = registry[block.task].name
            counts[task] = counts.get(task, 0) + 1
            ids.append(block.id or f"{task}-{counts[task]}")
        return ids


# --------------------------------------------------------------------------------------------
# Registries of the layers below (tasks, boards), looked up lazily
# --------------------------------------------------------------------------------------------


class ParadigmImportError(DyadlabError, ImportError):
    """The paradigm registry failed to import: a broken installation, not a bad protocol."""


def paradigms() -> ParadigmRegistry:
    """The paradigm registry ``dyadlab.tasks.paradigms.PARADIGMS`` (task -> class with ``.Params``).

    Raises
    ------
    ParadigmImportError
        Importing the registry failed; the message names the underlying error. (The registry
        needs no PsychoPy; were the error read as "no paradigm", every block would be rejected
        as an unknown task.)
    """
    try:
        from dyadlab.tasks.paradigms import PARADIGMS
    except ImportError as error:
        raise ParadigmImportError(
            f"the task paradigms (dyadlab.tasks.paradigms) cannot be imported: {type(error).__name__}: {error}. "
            "The installation is broken, not the protocol; `python -c 'import dyadlab.tasks.paradigms'` shows "
            "the whole traceback."
        ) from error
    return PARADIGMS


def _board_spec_model() -> type[BaseModel]:
    from dyadlab.acquisition.brainflow_source import BoardSpec

    return BoardSpec


def _lsl_spec_model() -> type[BaseModel]:
    from dyadlab.acquisition.lsl_source import LslStreamSpec

    return LslStreamSpec


def paradigm_names() -> list[str]:
    """Names of the installed paradigms."""
    return sorted(paradigms())


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def resolve_protocol_path(name_or_path: str | Path) -> Path:
    """A protocol file path, or the bundled protocol of that name (``demo`` -> bundled/demo.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    choices = ", ".join(bundled_protocols())
    raise ProtocolError(
        [
            ProtocolIssue(
                str(name_or_path),
                "",
                "no such protocol file, and no bundled protocol of that name",
                f"give the path of a .yaml file or a bundled protocol name: {choices}",
            )
        ]
    )


def bundled_protocols() -> list[str]:
    """Names of the bundled protocols."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class LoadedProtocol:
    """A validated protocol with where it came from.

    Attributes
    ----------
    protocol : Protocol
        The validated model (command-line overrides applied).
    path : Path
        The file.
    sha256 : str
        SHA-256 of the file's bytes, recorded in ``session.json``.
    text : str
        The file's text.
    """

    protocol: Protocol
    path: Path
    sha256: str
    text: str


def load_protocol(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedProtocol:
    """Read, validate and return a protocol; raise :class:`ProtocolError` listing every problem.

    Parameters
    ----------
    name_or_path : str | Path
        A YAML file, or a bundled protocol name (``demo``, ``cooperation``...).
    overrides : mapping, optional
        Values from the command line that replace the file's: top-level fields (``dyad``,
        ``session``), ``people`` (participant label -> ``{"id": ..., "role": ...}``) and
        ``partner_role`` / ``partner_id`` (participant B's role and id).

    Returns
    -------
    LoadedProtocol
    """
    path = resolve_protocol_path(name_or_path)
    try:
        with open(path, "rb") as handle:
            raw_bytes = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ProtocolError(
            [ProtocolIssue(str(path), "", f"cannot read the file ({error.strerror or error})", "check the path")]
        ) from None
    if len(raw_bytes) > MAX_BYTES:
        raise ProtocolError(
            [
                ProtocolIssue(
                    str(path),
                    "",
                    f"the file is larger than {MAX_BYTES:,} bytes; a protocol is a few kilobytes",
                    "check that this is a protocol file",
                )
            ]
        )
    text = raw_bytes.decode("utf-8", errors="replace")
    with paradigms().files_relative_to(path.parent):  # the lab's 'file.py:Class' sits beside its protocol
        protocol = validate_protocol_text(text, file=str(path), overrides=overrides)
    return LoadedProtocol(protocol=protocol, path=path, sha256=hashlib.sha256(raw_bytes).hexdigest(), text=text)


def validate_protocol_text(
    text: str, *, file: str = "<protocol>", overrides: Mapping[str, Any] | None = None
) -> Protocol:
    """Validate protocol YAML ``text``; raise :class:`ProtocolError` with file/field/fix for each problem."""
    try:
        node, data = load_yaml(text)
    except YamlRefused as refused:
        raise ProtocolError(
            [ProtocolIssue(file, "", refused.message, refused.fix, line=refused.line, column=refused.column)]
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise ProtocolError(
            [
                ProtocolIssue(
                    file,
                    "",
                    f"YAML syntax error: {error.problem or error.context}",
                    "fix the YAML at this line (indentation, a missing ':' or an unclosed quote/bracket)",
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from None
    except yaml.YAMLError as error:
        raise ProtocolError([ProtocolIssue(file, "", f"YAML error: {error}", "fix the YAML syntax")]) from None
    if not isinstance(data, dict):
        raise ProtocolError(
            [
                ProtocolIssue(
                    file,
                    "",
                    "the file is not a mapping of protocol fields",
                    "start from a bundled protocol, e.g. `name: ...`, `study: ...`",
                )
            ]
        )
    positions = _node_positions(node)
    issues: list[ProtocolIssue] = _apply_overrides(data, overrides or {}, file)
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as error:
        issues.extend(_issues_from_validation(error, file, positions, Protocol))
        protocol = None
    issues.extend(_block_param_issues(data.get("blocks"), file, positions))
    issues.extend(_strict_number_issues(data, file, positions))
    if protocol is not None:
        issues.extend(_semantic_issues(protocol, file, positions))
    if issues or protocol is None:  # a protocol that did not validate always has issues
        raise ProtocolError(issues)
    return protocol


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], file: str) -> list[ProtocolIssue]:
    """Command-line values: top-level fields, and the participants' ids and roles.

    ``people`` maps a participant label of the protocol file (``A``, ``B``) to the ``id`` and/or
    ``role`` this session uses (``--participant A=sub-07:therapist``, a roster row);
    ``partner_role`` / ``partner_id`` are the same for participant B. Returns a problem for a
    label the protocol does not have.
    """
    people_overrides: dict[str, dict[str, Any]] = {
        str(label): {key: value for key, value in dict(person).items() if value is not None}
        for label, person in (overrides.get("people") or {}).items()
    }
    partner = {"role": overrides.get("partner_role"), "id": overrides.get("partner_id")}
    if any(value is not None for value in partner.values()):
        people_overrides.setdefault("B", {}).update({key: value for key, value in partner.items() if value is not None})
    for key, value in overrides.items():
        if value is not None and key not in ("partner_role", "partner_id", "people"):
            data[key] = value
    people = data.get("participants")
    by_label = {p.get("label"): p for p in people if isinstance(p, dict)} if isinstance(people, list) else {}
    issues: list[ProtocolIssue] = []
    for label, values in people_overrides.items():
        target = by_label.get(label)
        if target is None:
            issues.append(
                ProtocolIssue(
                    "<command line>",
                    "participant",
                    f"the protocol {file} has no participant labelled {label!r}",
                    f"use one of its labels: {', '.join(sorted(str(k) for k in by_label)) or 'A, B'}",
                )
            )
        elif values:
            target.update(values)
    return issues


def _semantic_issues(protocol: Protocol, file: str, positions: dict[tuple, tuple[int, int]]) -> list[ProtocolIssue]:
    """Checks across fields: participants, roles, task parameters, durations, counterbalancing."""
    issues: list[ProtocolIssue] = []

    def issue(loc: tuple, message: str, fix: str) -> None:
        line, column = _position(positions, loc)
        issues.append(ProtocolIssue(file, _loc_to_path(loc), message, fix, line, column))

    for attribute in ("label", "id"):
        seen: dict[str, int] = {}
        for index, person in enumerate(protocol.participants):
            value = getattr(person, attribute)
            if value in seen:
                issue(
                    ("participants", index, attribute),
                    f"participant {attribute} {value!r} is used twice (also participants[{seen[value]}])",
                    "give each participant a unique label (A and B) and id"
                    if attribute == "label"
                    else "give each participant their own id",
                )
            seen[value] = index
    roles = set(KNOWN_ROLES) | set(protocol.extra_roles)
    for index, person in enumerate(protocol.participants):
        if person.role not in roles:
            issue(
                ("participants", index, "role"),
                f"unknown role {person.role!r}",
                f"use one of {', '.join(sorted(roles))}, or declare it under extra_roles",
            )
    if protocol.microphones is not None:
        labels = {person.label for person in protocol.participants}
        for label in sorted(set(protocol.microphones.devices) - labels):
            issue(
                ("microphones", "devices", label),
                f"no participant has the label {label!r}",
                f"key each microphone by a participant's label: {', '.join(sorted(labels))}",
            )
        for label in sorted(labels - set(protocol.microphones.devices)):
            issue(
                ("microphones", "devices"),
                f"participant {label} has no microphone",
                f"add {label}: {{device: <part of its name>, channel: <n>}} (every participant's voice is recorded)",
            )
        assigned: dict[tuple[str, int], str] = {}
        for label, microphone in protocol.microphones.devices.items():
            key = (microphone.device.strip().casefold(), microphone.channel)
            if microphone.simulated:
                continue
            if key in assigned:
                issue(
                    ("microphones", "devices", label),
                    f"participants {assigned[key]} and {label} are given the same microphone channel",
                    "give each participant their own microphone, or their own channel of one interface",
                )
            assigned[key] = label
        if protocol.microphones.live_speech:
            from dyadlab.synchrony.speech import VAD_RATES

            if not protocol.microphones.record_audio:
                issue(
                    ("microphones", "live_speech"),
                    "live speech detection needs the audio, but record_audio is false",
                    "set record_audio: true, or live_speech: false",
                )
            if protocol.microphones.sample_rate not in VAD_RATES:
                issue(
                    ("microphones", "sample_rate"),
                    f"live speech detection cannot use {protocol.microphones.sample_rate} Hz audio",
                    f"use a sample_rate of {', '.join(str(rate) for rate in VAD_RATES)} (16000 is the default)",
                )
    specs: dict[int, Any] = {}
    lsl_specs: dict[int, Any] = {}
    for index, person in enumerate(protocol.participants):
        if person.uses_simulator:
            extra = sorted(set(person.device) - {"board"})
            if extra:
                issue(
                    ("participants", index, "device", extra[0]),
                    "the simulator takes no connection parameters",
                    f"remove {', '.join(extra)}",
                )
            continue
        if person.uses_lsl_stream:
            try:
                lsl_specs[index] = person.lsl_spec()
            except ValidationError as error:
                issues.extend(
                    _issues_from_validation(
                        error, file, positions, _lsl_spec_model(), prefix=("participants", index, "device")
                    )
                )
            continue
        try:
            specs[index] = person.board_spec()
        except ValidationError as error:
            issues.extend(
                _issues_from_validation(
                    error, file, positions, _board_spec_model(), prefix=("participants", index, "device")
                )
            )
    if len(specs) == 2:
        first, second = specs.values()
        if first == second and first.board != "synthetic":
            issue(
                ("participants", 1, "device"),
                "both participants use the same board with the same connection parameters; BrainFlow cannot open it twice",
                "give each board its own serial_port / mac_address / serial_number",
            )
    if len(lsl_specs) == 2 and len({spec.query for spec in lsl_specs.values()}) == 1:
        issue(
            ("participants", 1, "device"),
            "both participants select the same LSL stream",
            "give each participant their amplifier's own source_id (or name and hostname)",
        )
    ids = protocol.block_ids()
    seen_ids: dict[str, int] = {}
    for index, block_id in enumerate(ids):
        if block_id in seen_ids:
            issue(
                ("blocks", index, "id"),
                f"block id {block_id!r} is used twice (also blocks[{seen_ids[block_id]}])",
                "give every block a unique id",
            )
        seen_ids[block_id] = index
    _check_label_references(protocol, issue)
    issues.extend(_counterbalance_issues(protocol, file, positions))
    if not issues:  # the output path and the LSL settings need a consistent protocol
        for run in (1, MAX_RUNS):
            try:
                resolve_output_stem(protocol, run)
            except OutputPathError as error:
                issue(("output", "pattern"), error.message, error.fix)
                break
        try:
            protocol_lsl_config(protocol)
        except LslConfigError as error:
            issue(
                ("lsl", "session_id"), str(error), "set lsl.session_id to at most 64 letters, digits, '.', '_' or '-'"
            )
    return issues


def _label_references(params: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """``(location, label)`` of every participant label a block's parameters name."""
    if not isinstance(params, dict):
        return
    for key, value in params.items():
        if key == "first_speaker" and isinstance(value, str):
            yield (*path, key), value
        elif key == "roles" and isinstance(value, dict):
            for label in value:
                yield (*path, key, label), str(label)
        elif isinstance(value, dict):
            yield from _label_references(value, (*path, key))


def _check_label_references(protocol: Protocol, issue: Callable[[tuple, str, str], None]) -> None:
    """Every participant has keys and an autopilot; blocks name only the session's labels."""
    labels = [person.label for person in protocol.participants]
    listed = ", ".join(labels)
    for label in labels:
        if label not in protocol.keys.participants:
            issue(
                ("keys", "participants"),
                f"participant {label!r} has no response key",
                f"add it, e.g. keys: {{participants: {{{label}: {{respond: <key>}}}}}}",
            )
        if label not in protocol.autopilot.participants:
            issue(
                ("autopilot", "participants"),
                f"participant {label!r} has no simulated participant for --autopilot",
                f"add it, e.g. autopilot: {{participants: {{{label}: {{}}}}}}",
            )
    for index, block in enumerate(protocol.blocks):
        for location, label in _label_references(block.params):
            if label not in labels:
                issue(
                    ("blocks", index, "params", *location),
                    f"{label!r} is not a participant of this session",
                    f"use one of {listed}",
                )


def _block_param_issues(raw_blocks: Any, file: str, positions: dict[tuple, tuple[int, int]]) -> list[ProtocolIssue]:
    """Each block's parameters against its paradigm's ``Params`` model (blocks valid otherwise)."""
    if not isinstance(raw_blocks, list):
        return []
    issues: list[ProtocolIssue] = []
    registry = paradigms()
    for index, raw in enumerate(raw_blocks):
        try:
            block = Block.model_validate(raw)
        except ValidationError:
            continue  # reported by the protocol model already
        paradigm = registry[block.task]
        try:
            resolved = resolve_block_params(block, paradigm)
        except FieldProblem as problem:
            line, column = _position(positions, ("blocks", index, "duration"))
            issues.append(ProtocolIssue(file, f"blocks[{index}].duration", problem.message, problem.fix, line, column))
            continue
        try:
            paradigm.Params.model_validate(resolved)
        except ValidationError as error:
            issues.extend(
                _issues_from_validation(error, file, positions, paradigm.Params, prefix=("blocks", index, "params"))
            )
    return issues


def _counterbalance_issues(
    protocol: Protocol, file: str, positions: dict[tuple, tuple[int, int]]
) -> list[ProtocolIssue]:
    issues = []
    plan = protocol.counterbalance
    movable = [b for b in protocol.blocks if not b.fixed]
    needs_dyad_number = (
        plan.roles.endswith("dyads")
        or plan.blocks.endswith("dyads")
        or (plan.blocks == "latin-square" and "dyad" in plan.latin_square_by)
    )
    if needs_dyad_number and protocol.dyad_number is None:
        line, column = _position(positions, ("dyad",))
        issues.append(
            ProtocolIssue(
                file,
                "dyad",
                f"counterbalancing by dyad needs a number at the end of the dyad id, and {protocol.dyad!r} has none",
                "name dyads with a trailing number (D01, D02, ...), or set counterbalance to none",
                line,
                column,
            )
        )
    if plan.blocks != "none" and len(movable) < 2:
        line, column = _position(positions, ("counterbalance", "blocks"))
        issues.append(
            ProtocolIssue(
                file,
                "counterbalance.blocks",
                f"block order {plan.blocks!r} needs at least two blocks that are not fixed, found {len(movable)}",
                "set counterbalance.blocks: none, or un-fix some blocks",
                line,
                column,
            )
        )
    return issues


def duration_field(paradigm: Any) -> str | None:
    """Name of the paradigm's duration parameter (seconds), if it has one."""
    fields = getattr(paradigm.Params, "model_fields", {})
    for name in ("duration", "duration_s", "duration_seconds"):
        if name in fields:
            return name
    return None


def resolve_block_params(block: Block, paradigm: Any) -> dict[str, Any]:
    """The block's paradigm parameters with ``duration`` applied to the paradigm's duration field."""
    params = dict(block.params)
    if block.duration is None:
        return params
    field = duration_field(paradigm)
    if field is None:
        length_fields = [name for name in paradigm.Params.model_fields if name.startswith("n_") or name.endswith("_s")]
        raise FieldProblem(
            f"task {block.task!r} has no duration parameter (its length follows from its own parameters)",
            f"remove duration and set the block's length in params ({', '.join(length_fields)})",
        )
    if field in params and params[field] != block.duration:
        raise FieldProblem(
            f"duration is given twice ({block.duration} and params.{field}={params[field]})",
            f"keep only one of duration and params.{field}",
        )
    params[field] = block.duration
    return params


# --------------------------------------------------------------------------------------------
# Where the files go, and the LSL settings: one function each, for validation and the runner
# --------------------------------------------------------------------------------------------


def partner_role(protocol: Protocol) -> str:
    """The role of the participant labelled B in this session (after counterbalancing)."""
    labels = plan_session(protocol).labels
    return next((p.role for p in protocol.participants if labels.get(p.id) == "B"), "")


def output_values(protocol: Protocol, run: int) -> dict[str, Any]:
    """The values of the output pattern's placeholders for one run of this session."""
    return {
        "study": protocol.study,
        "dyad": protocol.dyad,
        "session": protocol.session,
        "protocol": protocol.protocol_label,
        "run": run,
        "partner": partner_role(protocol),
        **{f"id_{label}": person_id for person_id, label in plan_session(protocol).labels.items()},
    }


def resolve_output_stem(protocol: Protocol, run: int, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of one run's files without suffix: the output pattern filled in with the real values.

    The same check serves ``dyadlab validate`` (``out_dir=None``: the relative path only) and the
    runner (the path under ``out_dir``). Every folder and file name must be made of letters,
    digits and ``_ . + = -`` (not starting with ``.`` or ``-``), at most :data:`NAME_MAX` bytes with
    the longest suffix; with ``out_dir``, the path (symbolic links followed) must stay inside it
    and be shorter than :data:`PATH_MAX`.

    Raises
    ------
    OutputPathError
        The path cannot be used; nothing has been created.
    """
    pattern = protocol.output.pattern
    try:
        relative = pattern.format(**output_values(protocol, run))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise OutputPathError(
            f"the output pattern cannot be filled in with this session's values ({error})",
            "check the format specs, e.g. {session:02d}",
        ) from None
    if relative.startswith("/") or "\\" in relative:
        raise OutputPathError(
            f"the output pattern gives {relative!r}, which leaves the output folder",
            "use a relative path with '/' between folders, without '..'",
        )
    parts = relative.split("/")
    longest_suffix = max(len(suffix) for suffix in OUTPUT_SUFFIXES)
    if len(relative.encode()) + longest_suffix >= PATH_MAX:
        raise OutputPathError(
            f"the output pattern gives a path of {len(relative.encode())} bytes; Linux accepts {PATH_MAX}",
            "shorten the pattern",
        )
    for position, part in enumerate(parts):
        if part in ("", ".", "..") or not _SAFE_PATH_PART.match(part):
            raise OutputPathError(
                f"the output pattern gives {relative!r}, and {part!r} cannot be a folder or file name there",
                "use letters, digits, '_', '-', '.' and '+' in names (not starting with '.' or '-'), "
                "'/' between folders, no '..' and no empty folder names",
            )
        limit = NAME_MAX - (longest_suffix if position == len(parts) - 1 else 0)
        if len(part.encode()) > limit:
            raise OutputPathError(
                f"the output pattern gives a name of {len(part.encode())} bytes ({part[:40]}...); file systems "
                f"accept {NAME_MAX} bytes, suffix ({longest_suffix}) included",
                "shorten the pattern or the ids in it",
            )
    stem = Path(*parts)
    if out_dir is None:
        return stem
    root = Path(out_dir)
    full = root / stem
    if len(os.fsencode(os.path.abspath(full))) + longest_suffix >= PATH_MAX:
        raise OutputPathError(
            f"the output path under {root} is longer than {PATH_MAX} bytes", "use a shorter --out or pattern"
        )
    real_root = root.resolve()
    real = full.resolve()
    if real != real_root and real_root not in real.parents:
        raise OutputPathError(
            f"{full} is outside the output folder {real_root} (it resolves to {real}, through a symbolic link)",
            "remove the link or choose another --out",
        )
    return full


def lsl_session_id(protocol: Protocol) -> str | None:
    """The LSL SessionID of this session (``auto``: ``dyadlab-<study>-<dyad>-ses<NN>``)."""
    session_id = protocol.lsl.session_id
    if session_id == "auto":
        return f"dyadlab-{protocol.study}-{protocol.dyad}-ses{protocol.session:02d}"
    return session_id


def protocol_lsl_config(protocol: Protocol, *, local_only: bool = False) -> LslConfig:
    """The LSL configuration a run of this protocol applies (validation builds the same).

    Raises
    ------
    dyadlab.acquisition.lslconfig.LslConfigError
        A value liblsl would not accept (e.g. an automatic SessionID over 64 characters).
    """
    settings = protocol.lsl
    session_id = lsl_session_id(protocol)
    if settings.local_only or local_only:
        return LslConfig.local_only(session_id or "dyadlab-local")
    return LslConfig(
        session_id=session_id, resolve_scope=settings.resolve_scope, known_peers=tuple(settings.known_peers)
    )


# --------------------------------------------------------------------------------------------
# Numbers: no true/false, no NaN or infinity where a number is expected
# --------------------------------------------------------------------------------------------


def _number_kinds(annotation: Any) -> tuple[bool, bool]:
    """(whether ``annotation`` accepts a number, whether it accepts a boolean)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _number_kinds(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        kinds = [_number_kinds(argument) for argument in typing.get_args(annotation)]
        return any(k[0] for k in kinds), any(k[1] for k in kinds)
    if annotation is bool or annotation is Any:
        return False, True
    if annotation in (int, float):
        return True, False
    return False, False


def _unwrap(annotation: Any) -> Any:
    """``X`` for ``Annotated[X, ...]`` and ``X | None``; anything else unchanged."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union or origin is types.UnionType:
            others = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(others) != 1:
                return annotation
            annotation = others[0]
        else:
            return annotation


def _number_problems(value: Any, annotation: Any, loc: tuple) -> Iterator[tuple[tuple, str, str]]:
    """``(location, message, fix)`` for every boolean or non-finite number given for a number."""
    plain = _unwrap(annotation)
    origin = typing.get_origin(plain)
    if isinstance(plain, type) and issubclass(plain, BaseModel):
        if isinstance(value, dict):
            for key, item in value.items():
                field = plain.model_fields.get(key) if isinstance(key, str) else None
                if field is not None:
                    yield from _number_problems(item, field.annotation, (*loc, key))
        return
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        arguments = typing.get_args(plain)
        for index, item in enumerate(value):
            if origin is tuple and arguments and arguments[-1] is not Ellipsis:
                item_type = arguments[index] if index < len(arguments) else Any
            else:
                item_type = arguments[0] if arguments else Any
            yield from _number_problems(item, item_type, (*loc, index))
        return
    if origin in (dict, Mapping) and isinstance(value, dict):
        arguments = typing.get_args(plain)
        for key, item in value.items():
            yield from _number_problems(item, arguments[1] if len(arguments) == 2 else Any, (*loc, key))
        return
    numeric, takes_bool = _number_kinds(annotation)
    if not numeric:
        return
    if isinstance(value, bool) and not takes_bool:
        yield (
            loc,
            f"expected a number, got {str(value).lower()}",
            "write a number; YAML reads true/false, yes/no and on/off as booleans, which are not numbers",
        )
    elif isinstance(value, float) and not math.isfinite(value):
        yield loc, f"expected a finite number, got {value}", "write a finite number"


def _strict_number_issues(
    data: dict[str, Any], file: str, positions: dict[tuple, tuple[int, int]]
) -> list[ProtocolIssue]:
    """Booleans or NaN/infinity where the protocol, a device or a paradigm expects a number
    (pydantic would read ``duration: true`` as 1 second)."""
    found = list(_number_problems(data, Protocol, ()))
    people = data.get("participants")
    if isinstance(people, list):
        for index, person in enumerate(people):
            device = person.get("device") if isinstance(person, dict) else None
            board = str(device.get("board", "")).strip().lower() if isinstance(device, dict) else SIMULATOR_BOARD
            if board != SIMULATOR_BOARD:
                model = _lsl_spec_model() if board == LSL_BOARD else _board_spec_model()
                found.extend(_number_problems(device, model, ("participants", index, "device")))
    blocks = data.get("blocks")
    if isinstance(blocks, list):
        registry = paradigms()
        for index, block in enumerate(blocks):
            task = block.get("task") if isinstance(block, dict) else None
            paradigm = registry.get(task) if isinstance(task, str) else None
            if paradigm is not None and isinstance(block.get("params"), dict):
                found.extend(_number_problems(block["params"], paradigm.Params, ("blocks", index, "params")))
    issues = []
    for loc, message, fix in found:
        line, column = _position(positions, loc)
        issues.append(ProtocolIssue(file, _loc_to_path(loc), message, fix, line, column))
    return issues


# --------------------------------------------------------------------------------------------
# Error translation: pydantic errors -> file / field / fix (with YAML line numbers)
# --------------------------------------------------------------------------------------------


def _node_positions(node: yaml.Node | None, loc: tuple = ()) -> dict[tuple, tuple[int, int]]:
    """Map every field path in the YAML tree to its (line, column), 1-based."""
    positions: dict[tuple, tuple[int, int]] = {}
    if node is None:
        return positions
    positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = loc + (key_node.value,)
            positions.update(_node_positions(value_node, key))
            positions[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            positions.update(_node_positions(item, loc + (index,)))
    return positions


def _position(positions: dict[tuple, tuple[int, int]], loc: tuple) -> tuple[int | None, int | None]:
    """The line/column of ``loc`` or of its nearest parent present in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return None, None


def _loc_to_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for listing valid keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        current = _inner_model(annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


_TYPE_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "string": "text",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "tuple": "a list",
}


def _issues_from_validation(
    error: ValidationError,
    file: str,
    positions: dict[tuple, tuple[int, int]],
    model: type[BaseModel],
    prefix: tuple = (),
) -> list[ProtocolIssue]:
    issues = []
    for detail in error.errors(include_url=False):
        loc = tuple(detail["loc"])
        full = prefix + loc
        line, column = _position(positions, full)
        message, fix = _explain(detail, model, loc)
        issues.append(ProtocolIssue(file, _loc_to_path(full), message, fix, line, column))
    return issues


def _explain(detail: ErrorDetails, model: type[BaseModel], loc: tuple) -> tuple[str, str]:
    """A message and a fix for one pydantic error."""
    kind = detail["type"]
    context = detail.get("ctx") or {}
    problem = context.get("error")
    if isinstance(problem, FieldProblem):
        return problem.message, problem.fix
    name = loc[-1] if loc else ""
    if name == "board" and kind == "value_error":
        from dyadlab.acquisition.brainflow_source import board_names

        return (
            f"unknown board {detail.get('input')!r}",
            f"use 'simulator', 'lsl' (an amplifier's own LSL stream) or a BrainFlow board name: "
            f"{', '.join(board_names())}",
        )
    if kind == "extra_forbidden":
        owner = _model_at(model, loc)
        valid = ", ".join(owner.model_fields) if owner else ""
        return (
            f"unknown key {name!r}",
            f"remove it or correct its spelling; valid keys here: {valid}" if valid else "remove it",
        )
    if kind == "missing":
        owner = _model_at(model, loc)
        description = ""
        if owner is not None and name in owner.model_fields:
            description = owner.model_fields[name].description or ""
        return f"required field {name!r} is missing", f"add `{name}: ...`" + (
            f" ({description})" if description else ""
        )
    if kind == "literal_error":
        return (
            f"{detail['msg']}, got {detail.get('input')!r}",
            f"use {context.get('expected', 'one of the listed values')}",
        )
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        symbol, key = bounds[kind]
        return f"{detail['msg'].lower()}, got {detail.get('input')!r}", f"use a value {symbol} {context.get(key)}"
    if kind in ("too_short", "too_long"):
        return detail[
            "msg"
        ], "a dyad has exactly two participants" if name == "participants" else "change the number of items"
    for type_name, human in _TYPE_NAMES.items():
        if kind.startswith(type_name):
            return f"expected {human}, got {detail.get('input')!r}", f"write {human} here"
    if kind in ("value_error", "assertion_error") and problem is not None:
        text = str(problem)
        head, separator, tail = text.partition("; ")
        if separator and tail.split(" ", 1)[0].lower() in ("use", "give", "choose", "add", "remove", "set"):
            return head, tail
        return text, "correct the value as the message says"
    return detail["msg"], "correct the value"


# --------------------------------------------------------------------------------------------
# Counterbalancing
# --------------------------------------------------------------------------------------------


def balanced_latin_square(n: int) -> list[list[int]]:
    """Rows of a balanced (Williams) Latin square over ``n`` items.

    Every item appears once in every position and follows every other item equally often:
    ``n`` rows when ``n`` is even, ``2 n`` rows (each row also reversed) when it is odd.
    """
    # First row 0, 1, n-1, 2, n-2, ...; every further row shifts it by one.
    first = [0] + [((k + 1) // 2 if k % 2 else n - k // 2) % n for k in range(1, n)]
    rows = [[(item + shift) % n for item in first] for shift in range(n)]
    if n % 2:
        rows += [list(reversed(row)) for row in rows]
    return rows


@dataclass(frozen=True)
class SessionPlan:
    """What counterbalancing decided for one dyad and session.

    Attributes
    ----------
    block_order : list of int
        Indices into ``protocol.blocks`` in the order they run.
    labels : dict of str to str
        Participant id -> the label (A/B) they get in this session.
    roles_swapped : bool
        Whether the participants exchanged labels relative to the file.
    latin_square_row : int | None
        The Latin-square row used, when the order came from one.
    rule : dict
        The counterbalancing settings and the numbers they were applied to.
    """

    block_order: list[int]
    labels: dict[str, str]
    roles_swapped: bool
    latin_square_row: int | None
    rule: dict[str, Any]


def plan_session(protocol: Protocol) -> SessionPlan:
    """Apply the protocol's counterbalancing to its dyad and session numbers (deterministic)."""
    plan = protocol.counterbalance
    dyad_number = protocol.dyad_number
    session = protocol.session
    movable = [index for index, block in enumerate(protocol.blocks) if not block.fixed]
    ordered = list(movable)
    row_used = None
    if plan.blocks == "latin-square":
        key = {"dyad": dyad_number or 1, "session": session, "dyad+session": (dyad_number or 1) + session - 1}[
            plan.latin_square_by
        ]
        rows = balanced_latin_square(len(movable))
        row_used = (key - 1) % len(rows)
        ordered = [movable[i] for i in rows[row_used]]
    elif plan.blocks == "reverse-on-even-sessions" and session % 2 == 0:
        ordered.reverse()
    elif plan.blocks == "reverse-on-odd-sessions" and session % 2 == 1:
        ordered.reverse()
    elif plan.blocks == "reverse-on-even-dyads" and (dyad_number or 1) % 2 == 0:
        ordered.reverse()
    slots = iter(ordered)
    order = [index if protocol.blocks[index].fixed else next(slots) for index in range(len(protocol.blocks))]
    swap = (plan.roles == "swap-on-even-dyads" and (dyad_number or 1) % 2 == 0) or (
        plan.roles == "swap-on-even-sessions" and session % 2 == 0
    )
    first, second = protocol.participants
    labels = {first.id: first.label, second.id: second.label}
    if swap:
        labels = {first.id: second.label, second.id: first.label}
    return SessionPlan(
        block_order=order,
        labels=labels,
        roles_swapped=swap,
        latin_square_row=row_used,
        rule={
            "blocks": plan.blocks,
            "latin_square_by": plan.latin_square_by,
            "roles": plan.roles,
            "dyad_number": dyad_number,
            "session": session,
        },
    )
