"""Parameter models, key and display settings, registry, autopilot determinism (no display)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from dyadlab.tasks.autopilot import Autopilot, AutopilotSettings, SimulatedParticipant
from dyadlab.tasks.display import DisplaySettings
from dyadlab.tasks.input import KeySettings, ParticipantKeys
from dyadlab.tasks.paradigms import PARADIGMS, ParadigmParamsError, get_paradigm, validate_params


def test_registry_names_match_protocol_task_names():
    assert set(PARADIGMS) == {"rest", "joint-press", "tapping", "conversation", "probe"}
    for name, paradigm in PARADIGMS.items():
        assert paradigm.name == name
        assert paradigm.Params()  # defaults are valid


@pytest.mark.parametrize(
    "task,params,field",
    [
        ("joint-press", {"n_trials": 0}, "n_trials"),
        ("joint-press", {"fixation_s": [2.0, 1.0]}, "fixation_s"),
        ("joint-press", {"threshold_s": 0.9}, "threshold_s"),
        ("joint-press", {"mode": "collaboration"}, "mode"),
        ("rest", {"duration": 60}, "duration"),
        ("rest", {"variant": "eyes-half-open"}, "variant"),
        ("rest", {"condition": "rest eyes"}, "condition"),
        ("tapping", {"period_s": 0.05}, "period_s"),
        ("conversation", {"turn_s": 90, "topic_s": 60}, "turn_s"),
        ("conversation", {"topics": []}, "topics"),
        ("probe", {"tapping": {"partner": "robot"}}, "tapping.partner"),
    ],
)
def test_bad_params_are_rejected_naming_block_and_field(task, params, field):
    with pytest.raises(ParadigmParamsError) as caught:
        validate_params(task, params, block_id="b-7")
    message = str(caught.value)
    assert "b-7" in message and task in message and field.split(".")[0] in message


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="joint-press"):
        get_paradigm("mirror-game")


def test_conditions_per_paradigm():
    assert get_paradigm("rest").conditions(validate_params("rest", {"variant": "separated"})) == ["rest-separated"]
    assert get_paradigm("joint-press").conditions(validate_params("joint-press", {"mode": "competition"})) == [
        "competition"
    ]
    assert get_paradigm("tapping").conditions(validate_params("tapping", {"partner": "computer"})) == [
        "tapping-computer"
    ]
    assert get_paradigm("rest").conditions(validate_params("rest", {})) == ["rest"]
    assert get_paradigm("rest").conditions(validate_params("rest", {"condition": "rest-back-to-back"})) == [
        "rest-back-to-back"
    ]
    assert get_paradigm("probe").conditions(validate_params("probe", {})) == ["rest", "tapping", "conversation"]


def test_key_conflicts_are_explained():
    with pytest.raises(ValidationError, match="operator abort"):
        KeySettings(participants={"A": ParticipantKeys(respond="escape"), "B": ParticipantKeys(respond="l")})
    with pytest.raises(ValidationError, match="participant A"):
        KeySettings(participants={"A": ParticipantKeys(respond="a"), "B": ParticipantKeys(respond="a")})
    assert KeySettings().participant_of("l") == "B"


def test_display_screens_must_match_the_layout():
    with pytest.raises(ValidationError, match="per-participant"):
        DisplaySettings(layout="per-participant", screens=[0])
    assert DisplaySettings(layout="per-participant").screen_indices() == [0, 1]


def test_importing_tasks_opens_no_window_and_loads_no_psychopy():
    code = "import sys, dyadlab.tasks, dyadlab.tasks.kit, dyadlab.tasks.paradigms; assert 'psychopy' not in sys.modules, 'psychopy imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _plans(seed: int) -> list[float | None]:
    pilot = Autopilot(AutopilotSettings(seed=seed, injector="make-response"), {"A": "a", "B": "l"})
    return [pilot.respond_to_go(label, 0.0) for _ in range(50) for label in ("A", "B")]


def test_autopilot_is_deterministic_with_a_seed():
    assert _plans(3) == _plans(3)
    assert _plans(3) != _plans(4)


def test_autopilot_rt_distribution_and_error_rate():
    behaviour = SimulatedParticipant(rt_mu=0.3, rt_sigma=0.03, rt_tau=0.1, error_rate=0.25)
    pilot = Autopilot(AutopilotSettings(seed=5, participants={"A": behaviour}, injector="make-response"), {"A": "a"})
    plans = [pilot.respond_to_go("A", 0.0) for _ in range(4000)]
    rts = np.array([p for p in plans if p is not None])
    assert 1 - len(rts) / len(plans) == pytest.approx(0.25, abs=0.03)
    assert rts.mean() == pytest.approx(0.3 + 0.1, abs=0.01)  # ex-Gaussian mean = mu + tau
    assert np.median(rts) < rts.mean()  # right-skewed like human RTs


def test_autopilot_refuses_an_unknown_participant():
    with pytest.raises(ValueError, match="'C'"):
        Autopilot(AutopilotSettings(), {"A": "a", "C": "c"})
