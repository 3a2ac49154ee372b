"""Protocol validation: every kind of error is rejected with the file, the field and a fix."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from dyadlab.protocols.cli import main
from dyadlab.protocols.schema import (
    ProtocolError,
    balanced_latin_square,
    bundled_protocols,
    load_protocol,
    plan_session,
    validate_protocol_text,
)

BASE: dict[str, Any] = {
    "version": 1,
    "name": "unit",
    "study": "unit",
    "dyad": "D01",
    "session": 1,
    "participants": [
        {"label": "A", "id": "sub-01", "role": "patient", "device": {"board": "simulator"}},
        {"label": "B", "id": "sub-02", "role": "therapist", "device": {"board": "simulator"}},
    ],
    "blocks": [
        {"id": "rest", "task": "rest", "duration": 10, "params": {"variant": "eyes-open"}},
        {"id": "coop", "task": "joint-press", "params": {"mode": "cooperation", "n_trials": 5}},
        {"id": "tap", "task": "tapping", "params": {"n_pacer_ticks": 5}},
    ],
}


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


# (case, change of BASE or raw YAML text, expected field path, words expected in message + fix)
ERROR_CASES: list[tuple[str, Any, str, tuple[str, ...]]] = [
    ("yaml-syntax", "name: unit\nstudy: [unclosed\ndyad: D01\n", "", ("YAML syntax",)),
    ("not-a-mapping", "- just\n- a list\n", "", ("mapping",)),
    ("unknown-top-level-key", _set("studdy", "x"), "studdy", ("unknown key", "study")),
    ("unknown-param", _set("blocks.1.params.n_trails", 3), "blocks[1].params.n_trails", ("unknown key", "n_trials")),
    ("wrong-type", _set("session", "three"), "session", ("whole number",)),
    ("unknown-task", _set("blocks.1.task", "coop"), "blocks[1].task", ("unknown task", "joint-press")),
    ("param-out-of-range", _set("blocks.1.params.n_trials", 0), "blocks[1].params.n_trials", (">= 1",)),
    ("param-bad-choice", _set("blocks.1.params.mode", "cooperate"), "blocks[1].params.mode", ("cooperation",)),
    (
        "unknown-board",
        _set("participants.0.device", {"board": "cyton_dasy"}),
        "participants[0].device.board",
        ("unknown board", "cyton_daisy"),
    ),
    (
        "unknown-board-param",
        _set("participants.0.device", {"board": "cyton", "serial": "/dev/ttyUSB0"}),
        "participants[0].device.serial",
        ("unknown key", "serial_port"),
    ),
    (
        "simulator-with-params",
        _set("participants.0.device", {"board": "simulator", "serial_port": "x"}),
        "participants[0].device.serial_port",
        ("simulator",),
    ),
    (
        "same-board-twice",
        lambda d: [p.update(device={"board": "cyton", "serial_port": "/dev/ttyUSB0"}) for p in d["participants"]],
        "participants[1].device",
        ("same board", "serial_port"),
    ),
    ("duplicate-participant-id", _set("participants.1.id", "sub-01"), "participants[1].id", ("used twice",)),
    ("duplicate-participant-label", _set("participants.1.label", "A"), "participants[1].label", ("used twice",)),
    ("bad-label", _set("participants.1.label", "B side"), "participants[1].label", ("letters, digits",)),
    (
        "unknown-role",
        _set("participants.1.role", "theraptist"),
        "participants[1].role",
        ("unknown role", "therapist", "extra_roles"),
    ),
    (
        "three-participants",
        lambda d: d["participants"].append({"label": "C", "id": "sub-03"}),
        "participants",
        ("two participants",),
    ),
    ("negative-duration", _set("blocks.0.duration", -5), "blocks[0].duration", ("positive",)),
    (
        "duration-on-trial-task",
        _set("blocks.1.duration", 30),
        "blocks[1].duration",
        ("no duration parameter", "n_trials"),
    ),
    ("duration-given-twice", _set("blocks.0.params", {"duration_s": 20}), "blocks[0].duration", ("twice",)),
    ("duplicate-block-id", _set("blocks.2.id", "rest"), "blocks[2].id", ("used twice",)),
    ("missing-required", _delete("study"), "study", ("missing", "add `study:")),
    ("missing-blocks", _set("blocks", []), "blocks", ("at least 1",)),
    (
        "counterbalance-unknown-rule",
        _set("counterbalance", {"blocks": "random"}),
        "counterbalance.blocks",
        ("latin-square",),
    ),
    (
        "counterbalance-no-dyad-number",
        lambda d: d.update(dyad="pilot", counterbalance={"roles": "swap-on-even-dyads"}),
        "dyad",
        ("trailing number",),
    ),
    (
        "counterbalance-too-few-blocks",
        lambda d: d.update(
            counterbalance={"blocks": "latin-square"}, blocks=[dict(BASE["blocks"][0], fixed=True), BASE["blocks"][1]]
        ),
        "counterbalance.blocks",
        ("at least two blocks",),
    ),
    (
        "output-unknown-placeholder",
        _set("output", {"pattern": "sub-{dyad}/{subject}_run-{run}"}),
        "output.pattern",
        ("{subject}", "{dyad}"),
    ),
    ("output-without-run", _set("output", {"pattern": "sub-{dyad}/ses-{session}"}), "output.pattern", ("{run}",)),
    ("output-bad-format", _set("output", {"pattern": "sub-{dyad:02d}_run-{run}"}), "output.pattern", ("format",)),
    ("lsl-bad-scope", _set("lsl", {"resolve_scope": "planet"}), "lsl.resolve_scope", ("machine",)),
    ("screens-mismatch", _set("screens", {"layout": "per-participant", "screens": [0]}), "screens", ("screen",)),
    ("keys-clash", _set("keys", {"abort": "a"}), "keys", ("participant A",)),
    ("label-without-key", _set("participants.1.label", "C"), "keys.participants", ("'C' has no response key",)),
    (
        "label-without-autopilot",
        lambda d: d.update(
            participants=[dict(d["participants"][0]), dict(d["participants"][1], label="C")],
            keys={"participants": {"A": {"respond": "a"}, "C": {"respond": "l"}}},
        ),
        "autopilot.participants",
        ("'C' has no simulated participant",),
    ),
    (
        "unknown-first-speaker",
        lambda d: d["blocks"].append({"id": "talk", "task": "conversation", "params": {"first_speaker": "Z"}}),
        "blocks[3].params.first_speaker",
        ("'Z' is not a participant", "A, B"),
    ),
]


@pytest.mark.parametrize("case, change, field, words", ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_each_error_is_rejected_with_file_field_and_fix(
    tmp_path: Path, case: str, change: Any, field: str, words: tuple[str, ...]
) -> None:
    path = _write(tmp_path, change if isinstance(change, str) else _mutated(change))
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    issues = caught.value.issues
    matching = [issue for issue in issues if issue.field == field]
    assert matching, f"no issue for field {field!r}; got {[(i.field, i.message) for i in issues]}"
    issue = matching[0]
    assert issue.file == str(path)
    assert issue.fix, "every issue says how to fix it"
    text = f"{issue.message} {issue.fix}".lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {text!r}"
    if case != "not-a-mapping":
        assert issue.line is not None, "the line of the problem is reported"


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: unit\nstudy: [unclosed\ndyad: D01\n")
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    issue = caught.value.issues[0]
    assert (issue.line, issue.column) >= (3, 1)
    assert str(path) in str(caught.value)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["blocks"][1]["params"]["n_trials"] = -1
        data["blocks"][0]["task"] = "nope"
        data["session"] = 0

    with pytest.raises(ProtocolError) as caught:
        load_protocol(_write(tmp_path, _mutated(change)))
    fields = {issue.field for issue in caught.value.issues}
    assert {"blocks[1].params.n_trials", "blocks[0].task", "session"} <= fields


@pytest.mark.parametrize("name", bundled_protocols())
def test_every_bundled_protocol_validates(name: str) -> None:
    loaded = load_protocol(name)
    assert loaded.protocol.name == name
    assert len(loaded.sha256) == 64


def test_bundled_protocols_are_the_documented_ones() -> None:
    assert set(bundled_protocols()) >= {"demo", "cooperation", "conversation", "plasticity-probe"}


def test_command_line_overrides_apply_and_are_validated() -> None:
    loaded = load_protocol(
        "plasticity-probe", overrides={"dyad": "P07", "session": 3, "partner_role": "stranger", "partner_id": "sub-s12"}
    )
    protocol = loaded.protocol
    assert (protocol.dyad, protocol.session) == ("P07", 3)
    assert protocol.participant("B").role == "stranger" and protocol.participant("B").id == "sub-s12"
    with pytest.raises(ProtocolError) as caught:
        load_protocol("plasticity-probe", overrides={"partner_role": "strangr"})
    assert caught.value.issues[0].field == "participants[1].role"


def test_unknown_protocol_name_lists_bundled_ones() -> None:
    with pytest.raises(ProtocolError) as caught:
        load_protocol("no-such-protocol")
    assert "demo" in caught.value.issues[0].fix


# ---- counterbalancing ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_balanced_latin_square_properties(n: int) -> None:
    rows = balanced_latin_square(n)
    assert len(rows) == (n if n % 2 == 0 else 2 * n)
    for row in rows:
        assert sorted(row) == list(range(n))
    for position in range(n):  # every item in every position equally often
        counts = [sum(row[position] == item for row in rows) for item in range(n)]
        assert len(set(counts)) == 1
    successions = {}
    for row in rows:  # every ordered pair follows equally often (carry-over balance)
        for first, second in zip(row, row[1:]):
            successions[(first, second)] = successions.get((first, second), 0) + 1
    assert len(successions) == n * (n - 1) and len(set(successions.values())) == 1


def _cooperation(dyad: str, session: int = 1) -> Any:
    return load_protocol("cooperation", overrides={"dyad": dyad, "session": session}).protocol


def test_counterbalancing_is_deterministic_and_keeps_fixed_blocks() -> None:
    plans = {dyad: plan_session(_cooperation(dyad)) for dyad in ("D01", "D02", "D03", "D04")}
    assert plan_session(_cooperation("D03")) == plans["D03"]
    protocol = _cooperation("D01")
    ids = protocol.block_ids()
    orders = {dyad: [ids[i] for i in plan.block_order] for dyad, plan in plans.items()}
    for order in orders.values():
        assert order[0] == "rest-pre" and order[-1] == "rest-post"
    assert orders["D01"][1:3] == ["cooperation", "competition"]
    assert orders["D02"][1:3] == ["competition", "cooperation"]
    assert orders["D03"] == orders["D01"]
    assert [plans[d].roles_swapped for d in ("D01", "D02", "D03", "D04")] == [False, True, False, True]
    assert plans["D02"].labels == {"sub-001": "B", "sub-002": "A"}


def test_reverse_on_even_sessions() -> None:
    text = yaml.safe_dump(_mutated(lambda d: d.update(counterbalance={"blocks": "reverse-on-even-sessions"})))
    first = validate_protocol_text(text)
    second = validate_protocol_text(text, overrides={"session": 2})
    assert plan_session(first).block_order == [0, 1, 2]
    assert plan_session(second).block_order == [2, 1, 0]


# ---- the validate command -----------------------------------------------------------------


def test_validate_command_ok_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["validate", "demo"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    bad = _write(tmp_path, _mutated(_set("blocks.1.params.n_trials", 0)))
    result = runner.invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output.replace("\n", "") or "protocol.yaml" in result.output
    assert "blocks[1].params.n_trials" in result.output and "fix:" in result.output
